/* A gRPC server over HTTP/2 (h2c): a listener, one HTTP/2 server codec per connection, and a
 * method table keyed by :path.  Built for the reference control plane (xds/ads_server.h) and
 * for tests; the wire helpers (framing, status codes) are xds/grpc_frame.h, shared with the
 * client (xds/grpc.h).
 *
 * ## Calls
 * A request stream whose :path is in the table (and whose :method is POST and content-type
 * application/grpc) becomes a call: the handler's on_start runs once the request headers are
 * in, then on_message for each complete request message (deframed, at most max_recv_msg
 * bytes), on_half_close when the client ended its side.  The handler answers with
 * rm_grpc_scall_send() (response headers go out before the first message) and ends the call
 * with rm_grpc_scall_finish(): trailers with grpc-status and a percent-encoded grpc-message,
 * or a trailers-only response when no message was sent.  Anything else is answered without
 * the handler: an unknown :path gets a trailers-only UNIMPLEMENTED (12), a non-POST :method
 * HTTP 405 and a non-gRPC content-type HTTP 415 (both with grpc-status INTERNAL).
 *
 * The call ends exactly once: by rm_grpc_scall_finish(), or by on_cancel(status, why) when
 * it ended otherwise — the client reset the stream (CANCELLED), the connection was lost or
 * the server freed (UNAVAILABLE), the grpc-timeout passed (DEADLINE_EXCEEDED; that status is
 * sent), a request message was too large (RESOURCE_EXHAUSTED), compressed or truncated
 * (INTERNAL; the status is sent).
 *
 * ## Backpressure
 * rm_grpc_scall_send() always accepts while the call is open; when rm_grpc_scall_write_blocked()
 * is true (more than call_buffer bytes wait for the peer's HTTP/2 flow-control window or the
 * socket), the handler should stop producing until on_writable.  Keepalive PINGs from clients
 * are answered by nghttp2.
 *
 * ## Callbacks and lifetimes (single-threaded: everything on the server's loop)
 *  - Handler callbacks run from connection I/O (stream events), the deadline timer, or
 *    rm_grpc_server_free() (on_cancel).  No rm_grpc_scall_* function calls the handler
 *    synchronously.
 *  - Inside a callback the handler may use every rm_grpc_scall_* function on any call (but not
 *    rm_grpc_server_free).
 *  - After rm_grpc_scall_finish() returns, or on_cancel returns, the call gets no more callbacks
 *    and is freed from a deferred task: drop the pointer.
 *  - rm_grpc_server_free(): every call still open gets on_cancel(UNAVAILABLE) synchronously;
 *    memory is released from deferred tasks, so run the loop (or rm_loop_run_pending()) before
 *    rm_loop_free(). */
#ifndef RM_XDS_GRPC_SERVER_H
#define RM_XDS_GRPC_SERVER_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "proxy/core/error.h"
#include "proxy/core/loop.h"
#include "proxy/http/headers.h"
#include "xds/grpc_frame.h"

struct rm_grpc_server;
struct rm_grpc_scall;

/** Server options; zero fields take the defaults. */
struct rm_grpc_server_opts {
    uint32_t max_recv_msg;           /* largest request message; 0: 4 MiB (gRPC's default) */
    uint32_t call_buffer;            /* queued response bytes per call above which
                                        write_blocked(); 0: 256 KiB */
    uint32_t max_concurrent_streams; /* advertised per connection; 0: 1024 */
    bool quiet;                      /* no info log line per connection */
};

struct rm_grpc_server_stats {
    uint64_t connections, connections_open;
    uint64_t calls, calls_finished, calls_cancelled, unimplemented, rejected;
};

/** What a method does.  Every callback receives the call; rm_grpc_scall_user() is what
 *  on_start returned. */
struct rm_grpc_handler {
    /** A call arrived (request headers checked).  Returns the call's user pointer.  May finish
     *  the call right away (then no other callback comes). */
    void *(*on_start)(void *ctx, struct rm_grpc_scall *c);
    /** One complete request message; <msg> is valid only during the call. */
    void (*on_message)(struct rm_grpc_scall *c, const uint8_t *msg, size_t len);
    /** The client ended its side (no more messages).  Sending is still allowed. */
    void (*on_half_close)(struct rm_grpc_scall *c);
    /** The call ended without rm_grpc_scall_finish(): <status> (a gRPC code) and <why> say how.
     *  The call is freed after this returns. */
    void (*on_cancel)(struct rm_grpc_scall *c, int status, const char *why);
    /** Optional: write_blocked() was true and the queue drained below half the limit. */
    void (*on_writable)(struct rm_grpc_scall *c);
};

/** A server on <loop> with no methods and no socket yet.  <o> may be NULL.  Returns NULL on
 *  allocation failure. */
struct rm_grpc_server *rm_grpc_server_new(struct rm_loop *loop,
                                          const struct rm_grpc_server_opts *o);
/** Register <path> ("/package.Service/Method", copied) with <h> (kept by pointer: static
 *  storage) and <ctx> (passed to on_start).  Returns RM_OK, or RM_ERR with <err> filled when
 *  the path is malformed or already registered. */
int rm_grpc_server_add_method(struct rm_grpc_server *gs, const char *path,
                              const struct rm_grpc_handler *h, void *ctx, struct rm_error *err);
/** Listen on <addr> (port 0: any free port; see rm_grpc_server_port).  Returns RM_OK, or RM_ERR
 *  with <err> naming the address and the error.  At most one listener per server. */
int rm_grpc_server_listen(struct rm_grpc_server *gs, const struct sockaddr *addr, socklen_t len,
                          struct rm_error *err);
/** The port listened on (0 before rm_grpc_server_listen). */
int rm_grpc_server_port(const struct rm_grpc_server *gs);
/** Stop accepting; connections stay. */
void rm_grpc_server_stop_listening(struct rm_grpc_server *gs);
/** Graceful: stop accepting and send every connection a GOAWAY; calls in flight go on, and a
 *  connection closes once its last call ended (stats.connections_open counts those left). */
void rm_grpc_server_shutdown(struct rm_grpc_server *gs);
/** Close every connection and the listener; open calls get on_cancel(UNAVAILABLE) here.  NULL
 *  is a no-op.  Not from inside a handler callback. */
void rm_grpc_server_free(struct rm_grpc_server *gs);
const struct rm_grpc_server_stats *rm_grpc_server_stats(const struct rm_grpc_server *gs);

/* ---- calls -------------------------------------------------------------------------------- */

void *rm_grpc_scall_user(const struct rm_grpc_scall *c);
/** The :path of the call (valid for the call's life). */
const char *rm_grpc_scall_path(const struct rm_grpc_scall *c);
/** "ip:port" of the client. */
const char *rm_grpc_scall_peer(const struct rm_grpc_scall *c);
/** A request header (metadata) by lower-case name; .p is NULL when absent.  Valid for the
 *  call's life. */
struct rm_str rm_grpc_scall_header(const struct rm_grpc_scall *c, const char *name);

/** Frame <msg> (copied) and queue it (response headers first if not sent yet).  Returns 0, or
 *  <0 once the call ended.  Check rm_grpc_scall_write_blocked() after it. */
int rm_grpc_scall_send(struct rm_grpc_scall *c, const uint8_t *msg, size_t len);
/** The same for a protobuf-c message (packed into a buffer the server reuses). */
int rm_grpc_scall_send_pb(struct rm_grpc_scall *c, const ProtobufCMessage *m);
/** More than call_buffer bytes are queued: stop sending until on_writable. */
bool rm_grpc_scall_write_blocked(const struct rm_grpc_scall *c);
/** End the call with <status> and a printf-style message (percent-encoded on the wire; NULL or
 *  "" sends no grpc-message).  What is queued goes out first.  No-op once ended.  No callback
 *  comes after this; the call is freed later. */
void rm_grpc_scall_finish(struct rm_grpc_scall *c, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/** Is the call still open (not finished, not cancelled)? */
bool rm_grpc_scall_open(const struct rm_grpc_scall *c);

#endif
