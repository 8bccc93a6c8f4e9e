/* remora-upstream: one accepted connection: socket I/O (plain or TLS), protocol detection,
 * output batching and the close sequence.
 *
 * The loop reports readiness (edge-triggered) with rmu_conn_on_events; the connection is then
 * processed once per loop iteration (rmu_conn_process): read what is there, let the protocol
 * consume it, let the protocol produce output up to RMU_OUT_HIGH queued bytes, write it in one
 * call.  A connection is never freed while in use: rmu_conn_kill queues it for the end of the
 * iteration. */
#ifndef RMU_CONN_H
#define RMU_CONN_H

#include "bench/upstream/common.h"
#include "bench/upstream/loop.h"

#include <llhttp.h>
#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>

enum rmu_proto { RMU_PROTO_SNIFF, RMU_PROTO_H1, RMU_PROTO_H2 };

enum rmu_conn_state {
    RMU_CONN_OPEN,
    RMU_CONN_FLUSH_CLOSE, /* write what is queued, then shut down gracefully */
    RMU_CONN_FLUSH_ABORT, /* write what is queued, then reset (SO_LINGER 0) */
    RMU_CONN_DRAINING,    /* write side shut; discarding input until EOF or a timeout */
    RMU_CONN_DEAD,        /* queued for freeing */
};

struct rmu_h1 {
    llhttp_t parser;
    struct rmu_req *cur; /* request being parsed */
    bool in_value;       /* last header callback was a value */
    bool stopped;        /* no more requests are parsed on this connection */
};

struct rmu_h2 {
    nghttp2_session *s;
    bool goaway_submitted, goaway_sent;
};

struct rmu_conn {
    struct rmu_handle h; /* first: epoll user data */
    struct rmu_loop *loop;
    struct rmu_conn *prev, *next; /* loop->conns */
    struct rmu_conn *pending_next, *dead_next;
    enum rmu_conn_state state;
    enum rmu_proto proto;
    bool readable, writable, in_pending, peer_eof;
    bool hup;         /* epoll saw RDHUP/HUP/ERR: read until EOF, no short-read shortcut */
    bool tls_checked; /* first byte looked at for a TLS ClientHello */
    bool tls_done;    /* TLS handshake complete */
    SSL *ssl;
    uint8_t sniff[24];
    size_t nsniff;
    struct rmu_buf out;
    struct rmu_req *reqs_head, *reqs_tail;
    unsigned nreqs;
    struct rmu_timer drain_timer;
    union {
        struct rmu_h1 h1;
        struct rmu_h2 h2;
    } p;
};

/* Take an accepted nonblocking socket (closed on failure). */
void rmu_conn_accept(struct rmu_loop *l, int fd);
/* epoll readiness for c. */
void rmu_conn_on_events(struct rmu_conn *c, uint32_t events);
/* Read, parse, produce and write as far as possible now (loop only). */
void rmu_conn_process(struct rmu_conn *c);
/* Have c processed in this or the next loop iteration. */
void rmu_conn_wake(struct rmu_conn *c);
/* Stop reading new requests, flush queued output, then shut down gracefully. */
void rmu_conn_close(struct rmu_conn *c);
/* Reset the connection (RST via SO_LINGER 0), after flushing queued output if `flush`. */
void rmu_conn_abort(struct rmu_conn *c, bool flush);
/* Drop the connection now; it is freed at the end of the loop iteration. */
void rmu_conn_kill(struct rmu_conn *c);
/* Free a killed connection (loop only). */
void rmu_conn_free(struct rmu_conn *c);

/* Protocol entry points (h1.c, h2.c).  input: consume n bytes, 0 or -1 (kill).  produce: queue
 * output in c->out up to RMU_OUT_HIGH, 0 or -1.  paused: whether reading should wait.  eof: the
 * peer closed its side.  dispose: free protocol state (requests are freed by the conn). */
int rmu_h1_init(struct rmu_conn *c);
int rmu_h1_input(struct rmu_conn *c, const uint8_t *p, size_t n);
int rmu_h1_produce(struct rmu_conn *c);
bool rmu_h1_paused(const struct rmu_conn *c);
void rmu_h1_eof(struct rmu_conn *c);

int rmu_h2_global_init(void);
void rmu_h2_global_cleanup(void);
int rmu_h2_init(struct rmu_conn *c);
int rmu_h2_input(struct rmu_conn *c, const uint8_t *p, size_t n);
int rmu_h2_produce(struct rmu_conn *c);
void rmu_h2_dispose(struct rmu_conn *c);
/* h2: the response of r may start (r is ready); submit it.  0 or -1. */
int rmu_h2_start(struct rmu_req *r);
/* h2: more body is available for r's deferred response. */
void rmu_h2_resume(struct rmu_req *r);

/* TLS (tls.c).  The context exists only with --tls-cert/--tls-key. */
int rmu_tls_global_init(void);
void rmu_tls_global_cleanup(void);
bool rmu_tls_enabled(void);
/* Start TLS on c (its first byte is a ClientHello); 0 or -1. */
int rmu_tls_attach(struct rmu_conn *c);
/* Drive the handshake: 1 done (protocol chosen from ALPN), 0 in progress, -1 failed. */
int rmu_tls_handshake(struct rmu_conn *c);
/* Like read/write: bytes, 0 (read: EOF), RMU_AGAIN, or -1. */
ssize_t rmu_tls_read(struct rmu_conn *c, uint8_t *buf, size_t n);
ssize_t rmu_tls_write(struct rmu_conn *c, const uint8_t *buf, size_t n);

#endif
