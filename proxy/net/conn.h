/* A TCP connection: a socket on a loop, read and written through a transport, with on-demand
 * input/output buffers and write coalescing (one flush per loop iteration).
 *
 * The owner (a codec, or the HTTP connection manager until it picks one) implements
 * struct rm_conn_handler.  Lifetime: rm_conn_close() closes at once and frees the conn from a
 * deferred task; after it the owner receives no callback.  When the peer closes or an error
 * occurs the conn calls handler->on_close() once, then frees itself the same deferred way: the
 * owner must drop its pointer in on_close (and may free itself there). */
#ifndef RM_NET_CONN_H
#define RM_NET_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "proxy/core/buf.h"
#include "proxy/core/loop.h"

struct rm_conn;

/** How bytes move: plain TCP (rm_transport_plain) or TLS (proxy/net/tls.h).  read / writev
 *  return >0 bytes, 0 EOF (read), or -errno (-EAGAIN when it would block).  A transport whose
 *  call would block until the socket is writable (TLS: SSL_ERROR_WANT_WRITE in a handshake or a
 *  read) sets RM_CONN_TP_WANT_WRITE before returning -EAGAIN / RM_AGAIN; the conn then watches
 *  EPOLLOUT and calls again.  read may set RM_CONN_PEER_SHUT to be called again after a short
 *  read (it holds an EOF or an error to report).  close runs once, before the socket closes. */
struct rm_transport_ops {
    const char *name;
    ssize_t (*read)(struct rm_conn *c, void *buf, size_t len);
    ssize_t (*writev)(struct rm_conn *c, const struct iovec *iov, int n);
    /** 0 done, RM_AGAIN in progress, <0 error (-errno; TLS: -EPROTO, or -EKEYREJECTED when
     *  the peer's certificate was refused). */
    int (*handshake)(struct rm_conn *c);
    void (*close)(struct rm_conn *c);
};

extern const struct rm_transport_ops rm_transport_plain;

struct rm_conn_handler {
    /** Client connections: the connect and the transport's handshake finished; err is 0 or
     *  -errno (-ETIMEDOUT when the connect timeout passed first; TLS failures: see
     *  rm_transport_ops.handshake).  Server connections never get it: their first on_data
     *  follows the handshake. */
    void (*on_connected)(struct rm_conn *c, int err);
    /** Bytes arrived; returns how many were consumed (the rest stays buffered and is offered
     *  again with more data).  May call rm_conn_close(). */
    size_t (*on_data)(struct rm_conn *c, const uint8_t *p, size_t n);
    /** Called before a flush: produce pending output now (HTTP/2 drains nghttp2 here). */
    void (*on_flush)(struct rm_conn *c);
    /** Output fell from above the high watermark to below the low one. */
    void (*on_drained)(struct rm_conn *c);
    /** Peer closed (err 0) or I/O error (-errno); the conn is already closed. */
    void (*on_close)(struct rm_conn *c, int err);
    /** Optional (half-close, as Envoy's tcp_proxy): the peer sent its FIN (or TLS close) and
     *  everything before it was offered to on_data; reading stops for good, writing goes on
     *  (rm_conn_shutdown_write ends it).  Without it an EOF closes the conn (on_close, 0). */
    void (*on_eof)(struct rm_conn *c);
};

enum {
    RM_CONN_READ_PAUSED = 1u << 0,
    RM_CONN_CLOSED = 1u << 1,
    RM_CONN_CONNECTING = 1u << 2,
    RM_CONN_WANT_WRITE = 1u << 3,  /* output left, waiting for EPOLLOUT */
    RM_CONN_OVER_HIGH = 1u << 4,   /* output above the high watermark */
    RM_CONN_IN_CALLBACK = 1u << 5, /* inside a handler call: don't free */
    RM_CONN_SHUT_AFTER_FLUSH = 1u << 6,
    RM_CONN_NO_CALLBACKS = 1u << 7,     /* the owner is gone: no more handler calls */
    RM_CONN_PEER_SHUT = 1u << 8,        /* EPOLLRDHUP/HUP seen: read until EOF, not a short read */
    RM_CONN_READ_DRAINED = 1u << 9,     /* the socket had nothing more after the last read */
    RM_CONN_HANDSHAKING = 1u << 10,     /* the transport's handshake runs: no data either way yet */
    RM_CONN_TP_WANT_WRITE = 1u << 11,   /* the transport waits for EPOLLOUT (see above) */
    RM_CONN_LOCAL_RESTORED = 1u << 12,  /* local is the original destination (see below) */
    RM_CONN_READ_EOF = 1u << 13,        /* on_eof reported: nothing more to read */
    RM_CONN_SHUT_WR_PENDING = 1u << 14, /* rm_conn_shutdown_write: SHUT_WR once flushed */
    RM_CONN_WR_SHUT = 1u << 15,         /* SHUT_WR done */
};

struct rm_conn {
    struct rm_io io;
    struct rm_loop *loop;
    const struct rm_transport_ops *tp;
    void *tp_ctx;
    const struct rm_conn_handler *h;
    void *owner;
    struct rm_buf in, out;
    struct rm_task flush_task, read_task, free_task;
    struct rm_timer connect_timer; /* connect + handshake (client), handshake (server) */
    uint32_t flags;
    int err;                 /* connect error waiting to be reported */
    uint32_t high_watermark; /* output bytes above which writers should pause */
    struct sockaddr_storage peer;
    socklen_t peer_len;
    /* The local address (AF_INET or AF_INET6), AF_UNSPEC until rm_conn_local_addr asks the
     * socket.  With RM_CONN_LOCAL_RESTORED: the original destination of a redirected connection
     * (rm_conn_restore_original_dst), as Envoy's restored local address — what access logs show
     * as DOWNSTREAM_LOCAL_ADDRESS, what use_original_dst hands off by and where ORIGINAL_DST
     * clusters connect. */
    struct sockaddr_in6 local;
};

/** Wrap an accepted, non-blocking socket.  Returns NULL on failure (fd closed). */
struct rm_conn *rm_conn_accepted(struct rm_loop *loop, int fd, const struct sockaddr *peer,
                                 socklen_t peer_len, const struct rm_conn_handler *h, void *owner);
/** Listener filters that peek at the first bytes (MSG_PEEK) before anything reads them: stop
 *  watching the socket of <c>, just accepted (no event of it may be pending); the fd stays
 *  <c>'s.  rm_conn_watch watches it again (what is already readable is reported then).
 *  rm_conn_watch returns 0 or -errno (the caller closes <c>). */
void rm_conn_unwatch(struct rm_conn *c);
int rm_conn_watch(struct rm_conn *c);
/** Start a non-blocking connect; handler->on_connected reports the result (never synchronously).
 *  <timeout_ms> 0 = none.  Returns NULL (and fills *err with -errno) if the socket can't be made.
 */
struct rm_conn *rm_conn_connect(struct rm_loop *loop, const struct sockaddr *addr, socklen_t len,
                                uint32_t timeout_ms, const struct rm_conn_handler *h, void *owner,
                                int *err);
/** For transports (rm_conn_start_tls): <c> now has a transport with a handshake.  An accepted
 *  conn starts it with its first event, bounded by <timeout_ms> (0 = no bound of its own); a
 *  connecting one starts it once the TCP connect succeeds, within the connect timeout. */
void rm_conn_transport_started(struct rm_conn *c, uint32_t timeout_ms);
/** Hand the connection to a new handler/owner; input already buffered is offered to it from a
 *  deferred task (so a protocol sniffer may return 0 from on_data and switch handlers). */
void rm_conn_set_handler(struct rm_conn *c, const struct rm_conn_handler *h, void *owner);
/** Queue bytes for writing (copied); the flush happens once, before the loop sleeps. */
void rm_conn_write(struct rm_conn *c, const void *p, size_t n);
/** Schedule a flush without writing (the handler's on_flush produces the bytes). */
void rm_conn_schedule_flush(struct rm_conn *c);
/** Bytes queued and not yet written. */
static inline size_t rm_conn_pending(const struct rm_conn *c)
{
    return c->out.len;
}
/** Stop/resume reading.  Resuming re-reads what the kernel has (edge-triggered). */
void rm_conn_pause_reading(struct rm_conn *c, bool paused);
/** Close now (pending output is dropped); frees later; no more callbacks. */
void rm_conn_close(struct rm_conn *c);
/** Half-close: write what is queued, then shutdown(SHUT_WR) (the peer reads EOF); the conn
 *  stays open for reading and callbacks.  Nothing may be written after it.  (Under TLS no
 *  close_notify is sent first: the peer sees a TCP EOF.) */
void rm_conn_shutdown_write(struct rm_conn *c);
/** Write what is queued, then close (e.g. after a final response).  No more callbacks. */
void rm_conn_close_after_flush(struct rm_conn *c);
/** Accepted connections (envoy.filters.listener.original_dst): the destination the connection
 *  had before an iptables REDIRECT / DNAT (getsockopt SO_ORIGINAL_DST, IP6T_SO_ORIGINAL_DST for
 *  IPv6) becomes c->local, with RM_CONN_LOCAL_RESTORED.  Returns true when restored; false when
 *  the kernel has no such entry (a direct connection: the real local address stays). */
bool rm_conn_restore_original_dst(struct rm_conn *c);
/** The connection's local address: the restored one, else the socket's (one getsockname,
 *  cached in c->local).  NULL when unknown. */
const struct sockaddr *rm_conn_local_addr(struct rm_conn *c);
/** "ip:port" of the peer into <buf> (a unix socket: its path, "@name" if abstract); returns
 *  buf. */
const char *rm_conn_peer_str(const struct rm_conn *c, char *buf, size_t len);

#endif
