/* A gRPC client over HTTP/2 (h2c today; TLS when the transport exists): unary and streaming
 * calls on a channel, for xDS (ADS) and any other gRPC call remora makes.
 *
 * Built on the codec-neutral stream API (proxy/http/codec.h) with the HTTP/2 client codec;
 * the wire helpers (framing, grpc-timeout, status mapping) are in xds/grpc_frame.h.
 *
 * ## Channel
 * One HTTP/2 connection at a time to one address, on one rm_loop (single-threaded: every
 * function here is called on the loop's thread).  It connects lazily, when a call needs it;
 * calls started while it connects wait.  A failed connect ends every waiting call with
 * UNAVAILABLE and a message naming the address and the error; the next call tries again (no
 * backoff here: the caller — the xDS client — owns retry policy).  After a GOAWAY, calls in
 * flight finish on the old connection and new calls open a new one.  A lost connection ends
 * its calls (and those waiting for it) with UNAVAILABLE.  Keepalive: while calls are open, a
 * PING every keepalive_interval_ms; no ACK within keepalive_timeout_ms closes the connection
 * (its calls: UNAVAILABLE).
 *
 * ## Calls
 * rm_grpc_call_start() sends the request headers (:method POST, :scheme, :path, :authority,
 * content-type application/grpc, te trailers, user-agent "remora/<version> grpc-c",
 * grpc-timeout when there is a deadline, then the caller's metadata) as soon as there is a
 * connection.  Messages are framed (5-byte prefix, uncompressed) and queued; END_STREAM goes
 * out with rm_grpc_call_half_close().  Incoming messages are reassembled and delivered whole.
 * The call ends exactly once, with on_close(status, message):
 *  - grpc-status / grpc-message (percent-decoded) from the trailers, or from the headers of a
 *    trailers-only response;
 *  - no grpc-status: a non-200 :status maps by the gRPC spec's table, a non-gRPC content-type
 *    is UNKNOWN, a missing :status or grpc-status INTERNAL, a reset by rm_grpc_status_from_reset;
 *  - a message over max_recv_msg: RESOURCE_EXHAUSTED (the stream is cancelled); a compressed
 *    message: INTERNAL (remora negotiates no compression);
 *  - the deadline passed: DEADLINE_EXCEEDED (the stream is cancelled);
 *  - connection failure or loss: UNAVAILABLE; rm_grpc_channel_free(): CANCELLED.
 *
 * ## Callbacks and lifetimes
 *  - on_message and on_writable run from the connection's I/O path; on_close runs from a
 *    deferred task (rm_loop_defer) — except in rm_grpc_channel_free(), which calls it
 *    synchronously.  No function here calls a callback synchronously otherwise: start, send,
 *    half_close and cancel never do.
 *  - Inside any callback the caller may use every function here, including rm_grpc_call_cancel
 *    and rm_grpc_channel_free (but not free the loop).
 *  - After on_close returns, the call is freed (from the same task): drop the pointer.  After
 *    rm_grpc_call_cancel() no callback comes and the call is freed later: drop the pointer.
 *  - Frees are deferred: after rm_grpc_channel_free() run the loop (or rm_loop_run_pending())
 *    before rm_loop_free() so that calls and connections finish freeing.
 */
#ifndef RM_XDS_GRPC_H
#define RM_XDS_GRPC_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "proxy/core/error.h"
#include "proxy/core/loop.h"
#include "proxy/http/headers.h"
#include "xds/grpc_frame.h"

struct rm_grpc_channel;
struct rm_grpc_call;
struct rm_tls_ctx;

/** Channel options; zero fields take the defaults. */
struct rm_grpc_channel_opts {
    uint32_t connect_timeout_ms;    /* 0: 10 s */
    uint32_t keepalive_interval_ms; /* 0: no keepalive PINGs */
    uint32_t keepalive_timeout_ms;  /* 0: 20 s (as gRPC's default) */
    bool keepalive_without_calls;   /* PING even while no call is open */
    uint32_t max_recv_msg;          /* 0: 4 MiB (gRPC's default) */
    uint32_t call_buffer;           /* bytes queued per call above which write_blocked(); 0: 256
                                       KiB */
    struct rm_tls_ctx *tls;         /* NULL: h2c; else TLS (a client context: SNI, CA, SANs,
                                       client certificate) offering ALPN h2.  The channel takes
                                       its own reference. */
};

/** Counters, for stats and tests. */
struct rm_grpc_channel_stats {
    uint64_t connects;         /* connection attempts */
    uint64_t connect_failures; /* attempts that failed (refused, timed out, …) */
    uint64_t goaways;          /* GOAWAYs received */
    uint64_t disconnects;      /* established connections lost (not after a GOAWAY) */
    uint64_t pings_sent, pings_acked, keepalive_timeouts;
    uint64_t calls_started, calls_ok, calls_failed;
};

struct rm_grpc_call_cb {
    /** One complete message; <msg> is valid only during the call. */
    void (*on_message)(void *ctx, const uint8_t *msg, size_t len);
    /** The call ended: exactly once (unless cancelled); <message> is never NULL ("" when
     *  none).  The call is freed when this returns. */
    void (*on_close)(void *ctx, int grpc_status, const char *message);
    /** Optional: write_blocked() was true and the queue drained (below half the limit). */
    void (*on_writable)(void *ctx);
};

/** A channel to <addr> (copied).  <authority> (copied; NULL: "ip:port" of addr) is :authority.
 *  <o> may be NULL.  Nothing connects until the first call.  Returns NULL with <err> filled on
 *  a bad argument or allocation failure. */
struct rm_grpc_channel *rm_grpc_channel_new(struct rm_loop *loop, const struct sockaddr *addr,
                                            socklen_t addr_len, const char *authority,
                                            const struct rm_grpc_channel_opts *o,
                                            struct rm_error *err);
/** Close the connections and end every call not yet ended: each gets on_close (CANCELLED,
 *  "channel closed"; a call whose status was already known gets that) synchronously, here.
 *  Calls may not be started from those callbacks (rm_grpc_call_start returns NULL).  NULL is a
 *  no-op.  Memory is released from deferred tasks (see above). */
void rm_grpc_channel_free(struct rm_grpc_channel *ch);
/** The channel's counters (valid until rm_grpc_channel_free). */
const struct rm_grpc_channel_stats *rm_grpc_channel_stats(const struct rm_grpc_channel *ch);
/** "ip:port" of the channel's address, for messages. */
const char *rm_grpc_channel_target(const struct rm_grpc_channel *ch);

/** Start a call to <path> ("/package.Service/Method", copied).  <md>/<n_md>: extra request
 *  metadata (copied; lower-case names; pseudo-headers and the fields listed above are
 *  skipped; "-bin" values must already be base64).  <deadline_ms> 0: none; otherwise a
 *  grpc-timeout header and a local timer (DEADLINE_EXCEEDED), counted from now.  <cb> (kept by
 *  pointer: static storage) and <ctx> get the events.  Returns the call, or NULL when the
 *  channel is being freed or on allocation failure (no callback then).  A call that fails
 *  right away (no socket) still returns and gets on_close from the loop. */
struct rm_grpc_call *rm_grpc_call_start(struct rm_grpc_channel *ch, const char *path,
                                        const struct rm_header *md, size_t n_md,
                                        uint32_t deadline_ms, const struct rm_grpc_call_cb *cb,
                                        void *ctx);
/** Frame <msg> (copied) and queue it.  Returns 0, or <0 once the call ended, was cancelled or
 *  half-closed (the message is dropped).  Always accepts while open: check
 *  rm_grpc_call_write_blocked() after it and wait for on_writable to keep memory bounded. */
int rm_grpc_call_send(struct rm_grpc_call *c, const uint8_t *msg, size_t len);
/** The same for a protobuf-c message (packed into a buffer the channel reuses, then queued). */
int rm_grpc_call_send_pb(struct rm_grpc_call *c, const ProtobufCMessage *m);
/** More than call_buffer bytes are queued: stop sending until on_writable. */
bool rm_grpc_call_write_blocked(const struct rm_grpc_call *c);
/** No more messages from us (END_STREAM after what is queued).  No-op once ended. */
void rm_grpc_call_half_close(struct rm_grpc_call *c);
/** Abandon the call: RST_STREAM(CANCEL) if it went out; no callback after this, not even
 *  on_close; the call is freed later.  Valid until on_close returned; NULL is a no-op. */
void rm_grpc_call_cancel(struct rm_grpc_call *c);

#endif
