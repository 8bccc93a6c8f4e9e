/* remora-load: one client connection and its request slots.
 *
 * A connection belongs to one worker thread and is driven only from that thread's loop.  It
 * owns `streams` preallocated request slots (struct rml_req), a growable output buffer that
 * is written once per loop iteration, and one protocol client (HTTP/1.1 or HTTP/2) behind the
 * struct rml_proto table.  It reconnects by itself after a close (immediately after a clean
 * close, with backoff after a failure) until the run stops.
 *
 * Re-entrancy: protocol callbacks (nghttp2, llhttp) only complete or fail slots; they
 * never close the connection or send a request.  Closes happen after the protocol call
 * returned, sends happen in the worker's dispatch phase.
 */
#ifndef REMORA_BENCH_LOAD_CONN_H
#define REMORA_BENCH_LOAD_CONN_H

#include <llhttp.h>
#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>

#include "bench/load/report.h"

struct rml_worker;
struct rml_conn;

struct rml_req {
    struct rml_conn *conn;
    struct rml_req *next; /* free list, or HTTP/1.1 in-flight FIFO */
    uint64_t t_sched;     /* latency starts here: slot time (open loop) or send time */
    uint64_t t_sent;      /* when handed to the protocol (for --timeout) */
    int32_t stream_id;    /* HTTP/2 */
    uint32_t tmpl;        /* index of the request template */
    size_t body_off;      /* HTTP/2 body bytes already handed to nghttp2 */
    int status;           /* :status, 0 until the response head came */
    int grpc_status;      /* -1 until seen */
    uint8_t active;
    uint8_t measured;
};

enum rml_conn_state {
    RML_CS_IDLE,       /* not connected; reconnect at `reconnect_at` unless stopping */
    RML_CS_CONNECTING, /* TCP connect in progress */
    RML_CS_TLS,        /* TLS handshake in progress */
    RML_CS_READY,      /* protocol running */
};

/* The protocol client interface (client_h1.c, client_h2.c).  Every function returns 0 or a
 * negative value meaning "close the connection, failing in-flight requests as protocol
 * errors"; on_read with len == 0 means the peer closed. */
struct rml_proto {
    int (*init)(struct rml_conn *c);
    void (*dispose)(struct rml_conn *c); /* frees protocol state; fires no callback */
    int (*submit)(struct rml_conn *c, struct rml_req *r);
    int (*on_read)(struct rml_conn *c, const uint8_t *data, size_t len);
    int (*fill)(struct rml_conn *c); /* move queued output into c->out */
    /* Abandon one in-flight request (timeout); returns 1 if the connection must be closed
     * (HTTP/1.1 cannot cancel), 0 if the request's slot may be released now. */
    int (*cancel)(struct rml_conn *c, struct rml_req *r);
};

extern const struct rml_proto rml_proto_h1;
extern const struct rml_proto rml_proto_h2;

struct rml_outbuf {
    uint8_t *data;
    size_t len; /* bytes held */
    size_t off; /* bytes already written */
    size_t cap;
};

struct rml_conn {
    struct rml_worker *w;
    unsigned idx;
    int fd;
    enum rml_conn_state state;
    uint32_t events; /* registered with epoll */
    SSL *ssl;
    const struct rml_proto *proto;
    nghttp2_session *ng;               /* HTTP/2 */
    llhttp_t hp;                       /* HTTP/1.1 */
    struct rml_req *h1_head, *h1_tail; /* HTTP/1.1 in-flight, in request order */
    int no_more; /* peer will close (Connection: close / GOAWAY): send nothing more */
    int dirty;   /* on the worker's flush list */
    struct rml_conn *dirty_next;
    struct rml_conn *ready_prev, *ready_next; /* worker's list of connections with room */
    int on_ready;
    struct rml_req *slots;
    struct rml_req *free_slots;
    unsigned active;    /* in-flight requests */
    unsigned capacity;  /* -m */
    uint64_t done_here; /* responses on this connection since it was opened */
    uint64_t t_connect; /* connect start */
    uint64_t reconnect_at;
    uint64_t backoff_ns;
    struct rml_outbuf out;
};

/* Set up `c` (slots allocated) for worker `w`; not connected.  Returns 0 or -1 (ENOMEM). */
int rml_conn_init(struct rml_conn *c, struct rml_worker *w, unsigned idx);
/* Close and free everything; in-flight requests fail with `kind`. */
void rml_conn_dispose(struct rml_conn *c, enum rml_err kind);

/* Start connecting (state IDLE -> CONNECTING).  A failure counts a connect error and leaves
 * the connection IDLE with a reconnect time. */
void rml_conn_start(struct rml_conn *c);

/* Handle epoll `events` for `c`; may close it (state IDLE afterwards). */
void rml_conn_on_event(struct rml_conn *c, uint32_t events);

/* Send one request on a READY connection with a free slot: latency counts from `t_sched`. */
void rml_conn_send(struct rml_conn *c, uint64_t t_sched, int measured, uint32_t tmpl);

/* Write what the protocol has queued (called once per loop iteration for dirty conns). */
void rml_conn_flush(struct rml_conn *c);

/* Connect timeout and --timeout checks at `now`. */
void rml_conn_check_timeouts(struct rml_conn *c, uint64_t now);

/* Close the connection: in-flight requests fail with `kind`; `clean` (peer finished
 * normally) reconnects at once, otherwise after a backoff. */
void rml_conn_close(struct rml_conn *c, enum rml_err kind, int clean);

/* For protocols: mark for flushing; a response ended (status/grpc_status set in r); a
 * request failed.  Both release r's slot. */
void rml_conn_mark_dirty(struct rml_conn *c);
void rml_conn_req_done(struct rml_conn *c, struct rml_req *r);
void rml_conn_req_fail(struct rml_conn *c, struct rml_req *r, enum rml_err kind);
/* r was refused without being processed (HTTP/2 REFUSED_STREAM, GOAWAY): release its slot
 * and send it again elsewhere. */
void rml_conn_req_retry(struct rml_conn *c, struct rml_req *r);

/* Append bytes to the output buffer; -1 on allocation failure. */
int rml_conn_out_append(struct rml_conn *c, const void *p, size_t n);

#endif
