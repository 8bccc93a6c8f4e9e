/* Test harness for the HTTP/1.1 codec: a real rm_loop, a socketpair whose one end is an rm_conn
 * owned by the codec under test and whose other end ("peer") the test reads and writes raw, and
 * a recorder that logs every stream event.  Every wait is bounded (H1T_TIMEOUT_MS).
 *
 * Server harness: the peer is the downstream client.  Client harness: the peer is the upstream
 * server; h1t_open() opens a request stream. */
#ifndef RM_TESTS_H1_TEST_UTIL_H
#define RM_TESTS_H1_TEST_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/core/arena.h"
#include "proxy/http/codec.h"

#define H1T_MAX_STREAMS 256
#define H1T_TIMEOUT_MS 3000

struct h1t;

/* What one stream saw. */
struct h1t_stream {
    struct h1t *t;
    struct rm_stream *s;
    struct rm_arena arena; /* client streams: the caller's arena */
    int nheaders;          /* on_headers calls (informational ones included) */
    char head[4096];       /* the last block: "name: value\n" per entry */
    char info[256];        /* informational :status values, space separated */
    bool head_end;
    uint8_t *body;
    size_t body_len, body_cap;
    int ndata;
    bool end; /* end_stream seen (headers, data or trailers) */
    char trailers[1024];
    int ntrailers;
    int reset; /* -1, or the rm_reset_reason */
    int writable;
    bool released;
    int order; /* position among ended streams (1-based), 0 while open */
};

struct h1t {
    struct rm_loop *loop;
    int peer;
    struct rm_conn *conn;
    struct rm_codec *codec;
    bool server;
    struct h1t_stream *streams; /* [H1T_MAX_STREAMS] */
    int nstreams;
    int nended;
    char *rx;    /* bytes the peer read */
    char *taken; /* h1t_take's last result */
    size_t rx_len, rx_cap;
    bool peer_eof;
    bool peer_read; /* the tick reads the peer (default true) */
    int closed;     /* cb->on_close calls */
    int close_err;
    int idle, goaway;
    bool codec_closed; /* the test called ops->close */
    /* hooks (optional) */
    void (*on_head)(struct h1t_stream *r);
    void (*on_end)(struct h1t_stream *r);
    void (*on_writable)(struct h1t_stream *r);
    void *ctx;
    /* the wait loop */
    struct rm_timer tick;
    bool (*pred)(struct h1t *t, const void *arg);
    const void *pred_arg;
    uint64_t deadline;
    bool timed_out;
};

/** A server codec (settings may be NULL) on a fresh loop and socketpair. */
struct h1t *h1t_server(const struct rm_codec_settings *st);
/** A client codec (settings may be NULL). */
struct h1t *h1t_client(const struct rm_codec_settings *st);
/** Release open streams, close the codec if it's alive, drain the loop, free everything. */
void h1t_free(struct h1t *t);

/** Write raw bytes from the peer (runs the loop while the socket is full). */
void h1t_send(struct h1t *t, const void *p, size_t n);
void h1t_sends(struct h1t *t, const char *s);
/** Shut the peer's writing side (the codec sees EOF). */
void h1t_peer_shutdown(struct h1t *t);
/** Close the peer entirely. */
void h1t_peer_close(struct h1t *t);

/** Run the loop until pred(t, arg) or the timeout; returns pred's final value. */
bool h1t_run_until(struct h1t *t, bool (*pred)(struct h1t *t, const void *arg), const void *arg);
/** Run a few loop iterations (lets queued I/O and deferred tasks happen). */
void h1t_spin(struct h1t *t, int iterations);
/** Run until the peer has read <s> (somewhere in rx); true if so. */
bool h1t_read_until(struct h1t *t, const char *s);
/** Run until the peer sees EOF. */
bool h1t_wait_eof(struct h1t *t);
/** Run until stream #i (0-based, in arrival order) exists / has ended. */
bool h1t_wait_stream(struct h1t *t, int i);
bool h1t_wait_end(struct h1t *t, int i);
/** Run until cb->on_close was called. */
bool h1t_wait_closed(struct h1t *t);
/** Take (and clear) what the peer read, NUL-terminated; valid until the next call. */
const char *h1t_take(struct h1t *t);

/** Client: open a request stream recorded as the next slot; NULL if the codec refuses. */
struct h1t_stream *h1t_open(struct h1t *t);
void h1t_release(struct h1t_stream *r);

/** Build a header block in <arena> from "name", "value" pairs ending with NULL. */
struct rm_headers *h1t_headers(struct rm_arena *arena, ...);
/** Submit a response/request head built from pairs (NULL-terminated). */
int h1t_submit(struct h1t_stream *r, bool end_stream, ...);

/* Criterion-asserting shortcuts */
/** Server: respond <status> with <body> (content-length) and end the stream. */
void h1t_respond(struct h1t_stream *r, const char *status, const char *body);
/** Assert the body received so far. */
void h1t_body_is(const struct h1t_stream *r, const char *want);
/** Client: open a stream and submit "GET <path>" to up.example (end_stream). */
struct h1t_stream *h1t_get(struct h1t *t, const char *path);
/** Predicate: cb->on_idle was called. */
bool h1t_idle_seen(struct h1t *t, const void *arg);
/** <rounds> connections fed fragments of valid messages glued with random bytes (fixed seed),
 *  each then maybe closed by the peer: nothing may crash or leak. */
void h1t_fuzz(bool server, int rounds);

#endif
