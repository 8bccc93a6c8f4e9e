/* Test harness for the HTTP/2 codec: a server codec and a client codec (or one codec and a raw
 * socket playing the peer) over a socketpair on one rm_loop, with every event recorded.
 *
 * Waiting is bounded: H2T_WAIT(t, cond, ms) runs the loop in 1 ms slices until <cond> holds
 * or <ms> passed; assert on <cond> afterwards.  Records (struct h2t_stream) outlive their
 * streams: blocks a server stream receives are copied into the record's own arena. */
#ifndef RM_TESTS_H2_TEST_UTIL_H
#define RM_TESTS_H2_TEST_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/core/arena.h"
#include "proxy/core/buf.h"
#include "proxy/core/loop.h"
#include "proxy/http/codec.h"

#define H2T_MAX_STREAMS 512

struct h2t;

/* One stream as the test sees it, either side. */
struct h2t_stream {
    struct h2t *t;
    struct rm_stream *s; /* NULL once released */
    bool server;
    struct rm_arena arena; /* client: the caller's arena; server: copies of blocks */
    int headers_calls;
    int status;                 /* :status of the last response block (client) */
    struct rm_headers *headers; /* last header block */
    struct rm_headers *trailers;
    bool ended; /* end_stream seen */
    int end_calls;
    int data_calls;
    size_t body_len;
    bool keep_body; /* append received DATA to .body */
    struct rm_buf body;
    bool pattern_bad; /* received DATA differs from h2t_pattern() */
    bool reset;
    enum rm_reset_reason reason;
    int resets;
    int writable_calls;
    bool released;
    bool hold;                /* don't release automatically */
    bool done_out;            /* our side ended */
    bool after_release_event; /* an event came after release: contract violation */
    /* h2t_pump(): a patterned body of pump_total bytes in 16 KiB chunks, with backpressure */
    size_t pump_total, pump_sent;
    bool saw_blocked;
    size_t max_pending; /* largest h2 stream output buffer seen while pumping */
};

struct h2t {
    struct rm_loop *loop;
    struct rm_conn *sconn, *cconn;
    struct rm_codec *server, *client;
    bool server_gone, client_gone; /* on_close came, or closed by the test */
    int raw_fd;                    /* raw peer end, -1 if none */
    struct rm_buf raw_in;          /* what the raw peer received */
    bool raw_eof;
    struct rm_codec_settings sst, cst;
    struct rm_timer slice;
    int server_close_calls, client_close_calls;
    int server_close_err, client_close_err;
    int goaway_calls, idle_calls;
    struct h2t_stream *srv[H2T_MAX_STREAMS];
    int nsrv;
    struct h2t_stream *cli[H2T_MAX_STREAMS];
    int ncli;
    /* server application hooks (NULL: defaults) */
    void (*on_request)(struct h2t_stream *st);        /* request complete; default: echo */
    void (*on_server_headers)(struct h2t_stream *st); /* after the request headers */
    void (*on_writable)(struct h2t_stream *st);       /* default: h2t_pump() if pumping */
    void (*on_client_headers)(struct h2t_stream *st);
    void (*on_client_data)(struct h2t_stream *st, const uint8_t *p, size_t n);
    void *app;
};

/* Setup: settings may be changed between init and start. */
void h2t_init(struct h2t *t);
void h2t_start(struct h2t *t);            /* server codec <-> client codec */
void h2t_start_raw_client(struct h2t *t); /* server codec <-> raw fd (t->raw_fd) */
void h2t_start_raw_server(struct h2t *t); /* client codec <-> raw fd */
/* Teardown: closes what is open, lets deferred frees run, frees records and the loop. */
void h2t_finish(struct h2t *t);

/* Run the loop for about one millisecond (and read the raw peer, if any). */
void h2t_spin(struct h2t *t);
uint64_t h2t_now_ms(void);
#define H2T_WAIT(t, cond, ms)                                                                      \
    do {                                                                                           \
        uint64_t h2t_deadline_ = h2t_now_ms() + (ms);                                              \
        while (!(cond) && h2t_now_ms() < h2t_deadline_)                                            \
            h2t_spin(t);                                                                           \
    } while (0)

/* Header blocks: NULL-terminated name/value pairs, allocated in <a>. */
struct rm_headers *h2t_hdrs(struct rm_arena *a, ...);

/* Client: a new stream record (NULL if new_stream refused). */
struct h2t_stream *h2t_open(struct h2t *t);
/* Client: open a stream and send a request; <body> NULL = no body (end on headers). */
struct h2t_stream *h2t_request(struct h2t *t, const char *method, const char *path,
                               const void *body, size_t len);
/* Either side: submit DATA (marks done_out when <end>). */
void h2t_send(struct h2t_stream *st, const void *p, size_t n, bool end);
/* Server: respond <status> with <body> (headers built in the stream's own arena). */
void h2t_respond(struct h2t_stream *st, int status, const void *body, size_t n);
/* Either side: send the rest of a patterned body of pump_total bytes until write_blocked. */
void h2t_pump(struct h2t_stream *st);
/* The test body pattern. */
uint8_t h2t_pattern(size_t off);
/* Release now (if not yet). */
void h2t_release(struct h2t_stream *st);

/* Raw peer. */
void h2t_raw_write(struct h2t *t, const void *p, size_t n);
size_t h2t_frame(uint8_t *out, uint8_t type, uint8_t flags, uint32_t sid, const void *payload,
                 size_t len);
/* Does the raw input (after <skip> bytes) hold a frame of <type> on <sid> (sid < 0: any)? */
bool h2t_raw_has_frame(struct h2t *t, size_t skip, uint8_t type, int64_t sid);

#endif
