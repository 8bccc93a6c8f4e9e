/* Internals of the HTTP/1.1 codec, shared by its server half (h1_server.c), its client half
 * (h1_client.c) and their common code (h1_codec.c).  Not an API: include codec.h instead.
 *
 * Model.  A codec owns one rm_conn and at most one exchange in flight (c->cur): the server
 * parses one request at a time and stops reading while that request's response is incomplete
 * (pipelining in order); the client opens one stream at a time.  Each exchange is an rm_h1_stream
 * with two halves, rx (what we parse) and tx (what we write); the exchange is done when both
 * reach RM_H1_HALF_END.  Streams outlive the exchange until the user releases them, and outlive the
 * codec too (they are detached: s->c = NULL) so a late release() is always safe.
 *
 * Lifetimes.  Nothing is freed synchronously: a released stream is recycled by its free_task,
 * the codec by its close_task (which also reports cb->on_close when the codec, not the user,
 * ended the connection).  Every path that ends the connection goes through rm_h1_close().
 */
#ifndef RM_HTTP_H1_CODEC_INTERNAL_H
#define RM_HTTP_H1_CODEC_INTERNAL_H

#include <llhttp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/core/loop.h"
#include "proxy/http/codec.h"

#define RM_H1_DEFAULT_HEADERS_KB 60
#define RM_H1_DEFAULT_HEADERS_COUNT 100
#define RM_H1_DEFAULT_BUFFER_LIMIT (1024u * 1024u)
#define RM_H1_SPARE_MAX 16    /* recycled stream objects kept per codec (pipelining) */
#define RM_H1_REQ_PSEUDO 4    /* :method :scheme :authority :path slots reserved in a request */
#define RM_H1_HEAD_STACK 4096 /* heads up to this size are serialised on the stack */

/* Connection state.  Only rm_h1_set_state() changes it (it asserts the transition):
 *   IDLE -> ACTIVE -> IDLE     an exchange starts / ends with keep-alive
 *   ACTIVE -> DRAINING         the exchange in flight is the last one
 *   any -> CLOSED              the conn is gone or closing; close_task will free the codec */
enum rm_h1_state {
    RM_H1_IDLE,
    RM_H1_ACTIVE,
    RM_H1_DRAINING,
    RM_H1_CLOSED,
};

/* Stream state, changed only by rm_h1_stream_set_state():
 *   FREE -> OPEN -> DONE | RESET -> FREE (after release, from free_task) */
enum rm_h1_sstate {
    RM_H1S_FREE,
    RM_H1S_OPEN,  /* exchange in progress: events flow */
    RM_H1S_DONE,  /* both halves ended normally: no more events */
    RM_H1S_RESET, /* reset by either side: no more events */
};

/* One direction of an exchange; only moves forward (rm_h1_set_half asserts it). */
enum rm_h1_half {
    RM_H1_HALF_HEADERS,
    RM_H1_HALF_BODY,
    RM_H1_HALF_END,
};

/* How the outgoing body is delimited. */
enum rm_h1_framing {
    RM_H1_FRAME_NONE,    /* no body bytes may follow (HEAD, 204, 304, end at headers) */
    RM_H1_FRAME_LENGTH,  /* content-length: out_left bytes */
    RM_H1_FRAME_CHUNKED, /* transfer-encoding: chunked */
    RM_H1_FRAME_EOF,     /* close-delimited (HTTP/1.0 response without length) */
};

/* What a header name means to HTTP/1 framing: a function of the entry's key (rm_h1_hclass()). */
enum rm_h1_hclass {
    RM_H1_HC_OTHER = 0,
    RM_H1_HC_HOP,        /* keep-alive, proxy-connection, transfer-encoding, upgrade, te */
    RM_H1_HC_CONNECTION, /* connection (hop-by-hop too, and names more of them) */
    RM_H1_HC_HOST,
    RM_H1_HC_EXPECT,
    RM_H1_HC_CONTENT_LENGTH,
};
#define RM_H1_HC_BIT(k) (1u << (k))

extern const uint8_t rm_h1_hclass_of_key[RM_HK_COUNT];
/** The framing class of entry <e>. */
static inline enum rm_h1_hclass rm_h1_hclass(const struct rm_header *e)
{
    return (enum rm_h1_hclass)rm_h1_hclass_of_key[rm_header_key(e)];
}

struct rm_h1_codec;

struct rm_h1_stream {
    struct rm_stream s;    /* first: &hs->s <-> hs */
    struct rm_h1_codec *c; /* NULL once the codec is gone */
    struct rm_loop *loop;
    struct rm_h1_stream *next; /* live list (doubly linked) or spare list */
    struct rm_h1_stream *prev;
    struct rm_task free_task;
    struct rm_arena own_arena;  /* server streams: the request's arena */
    struct rm_headers head;     /* incoming header block */
    struct rm_headers trailers; /* incoming trailers */
    uint64_t out_left;          /* RM_H1_FRAME_LENGTH: body bytes still owed */
    enum rm_h1_sstate state;
    enum rm_h1_half rx, tx;
    enum rm_h1_framing framing;
    bool announced;   /* server: cb->on_stream was called */
    bool released;    /* the user called release() */
    bool user_paused; /* ops->pause_reading(s, true) */
    bool head_method; /* the request is HEAD: its response has no body */
    bool sent_100;    /* server: "100 Continue" already written for this request */
};

/* Header block accumulation across parser callbacks (names and values may arrive split). */
struct rm_h1_acc {
    struct rm_headers *h; /* block being filled */
    const char *url;      /* server: request-target (arena) */
    size_t url_len;
    size_t bytes;        /* url + names + values of this message (head and trailers) */
    uint32_t count;      /* headers in this message */
    uint32_t seen;       /* RM_H1_HC_BIT() of the classes seen in the current block */
    uint16_t err_status; /* server reply for a rejected message: 400, 426, 431 */
    bool started;        /* an entry is open in h */
    bool in_value;       /* the open entry's name is complete: bytes now go to its value */
    bool have_value;     /* the open entry's value lives in the arena (writable) */
};

struct rm_h1_codec {
    struct rm_codec base; /* first */
    llhttp_t parser;
    struct rm_codec_settings st; /* with defaults applied */
    struct rm_loop *loop;
    struct rm_h1_stream *cur;   /* the exchange in flight */
    struct rm_h1_stream *live;  /* streams allocated by this codec and not yet recycled */
    struct rm_h1_stream *spare; /* recycled stream objects */
    unsigned nspare;
    struct rm_h1_acc acc;
    struct rm_task close_task, idle_task;
    struct rm_timer headers_timer; /* server: request_headers_timeout for the request begun */
    size_t max_bytes;              /* header bytes per message */
    uint32_t max_count;            /* headers per message */
    enum rm_h1_state state;
    int close_err;
    int32_t next_id;
    bool server;
    bool in_parse;     /* inside llhttp_execute: the read loop re-checks state itself */
    bool notify_close; /* close_task reports cb->on_close */
    bool goaway_sent;  /* client: cb->on_goaway already called */
};

/* ---- h1_codec.c: common ---------------------------------------------------------------------- */

extern const struct rm_codec_ops rm_h1_stream_ops_server;
extern const struct rm_codec_ops rm_h1_stream_ops_client;

/** Shared constructor part: allocate, copy settings with defaults, init the parser with <ps>
 *  (static: llhttp keeps the pointer). */
struct rm_h1_codec *rm_h1_codec_alloc(struct rm_conn *conn, const struct rm_codec_settings *st,
                                      const struct rm_codec_callbacks *cb, void *user, bool server,
                                      const llhttp_settings_t *ps);

void rm_h1_set_state(struct rm_h1_codec *c, enum rm_h1_state to);
void rm_h1_stream_set_state(struct rm_h1_stream *hs, enum rm_h1_sstate to);
void rm_h1_set_half(enum rm_h1_half *half, enum rm_h1_half to);

/** A stream object (recycled or new), OPEN, linked live, with ops/id set; s.arena is its own
 *  arena (the client replaces it with the caller's). */
struct rm_h1_stream *rm_h1_stream_new(struct rm_h1_codec *c);
/** Queue the stream's recycling if it is released and no longer open. */
void rm_h1_stream_maybe_free(struct rm_h1_stream *hs);
/** May events still be delivered to this stream's user? */
static inline bool rm_h1_stream_live(const struct rm_h1_stream *hs)
{
    return hs->state == RM_H1S_OPEN && !hs->released;
}

enum rm_h1_close_how { RM_H1_CLOSE_NOW, RM_H1_CLOSE_FLUSH };
/** End the connection: close the conn (<how>), reset the exchange in flight (its user gets
 *  on_reset(<why>) unless it reset/released it itself), and queue close_task, which calls
 *  cb->on_close(user, <err>) when <notify> and then frees the codec.  Idempotent. */
void rm_h1_close(struct rm_h1_codec *c, enum rm_h1_close_how how, bool notify, int err,
                 enum rm_reset_reason why);
/** Both halves of c->cur ended: finish the exchange (keep-alive or close). */
void rm_h1_maybe_exchange_done(struct rm_h1_codec *c);
/** Pause or resume the conn's reading to match the codec state (server and client rules). */
void rm_h1_update_reading(struct rm_h1_codec *c);
/** Should the parser go on (called between callbacks and reads)? */
bool rm_h1_can_parse(const struct rm_h1_codec *c);
/** After a user callback from inside the parser: what the parser callback returns, 0 to go on or
 *  HPE_PAUSED when parsing must stop (llhttp pauses only on a callback's return value). */
int rm_h1_check_parse(const struct rm_h1_codec *c);
/** Run the parser over data[0..n) and pass on its pauses: returns the bytes consumed and sets
 *  *err to HPE_OK, or to the error that stopped it (never HPE_PAUSED: those are resumed; the
 *  caller's loop decides, with rm_h1_can_parse(), whether to parse more). */
size_t rm_h1_execute(struct rm_h1_codec *c, const uint8_t *data, size_t n, llhttp_errno_t *err);

/* conn handler parts shared by both sides */
void rm_h1_conn_on_drained(struct rm_conn *conn);
void rm_h1_conn_on_connected(struct rm_conn *conn, int err);

/* header accumulation: parser callbacks and helpers */
int rm_h1_on_header_field(llhttp_t *p, const char *at, size_t n);
int rm_h1_on_header_field_complete(llhttp_t *p);
int rm_h1_on_header_value(llhttp_t *p, const char *at, size_t n);
/** Start filling <h> (already initialised) for a new block.  <new_message> resets the limits. */
void rm_h1_acc_begin(struct rm_h1_codec *c, struct rm_headers *h, bool new_message);
/** Close the entry being filled (trim, set its key). */
void rm_h1_acc_end(struct rm_h1_codec *c);
/** Record a limit/validation failure; returns nonzero (the parser callback error). */
int rm_h1_acc_fail(struct rm_h1_codec *c, uint16_t status);

/* What rm_h1_clean_block extracted from a request block. */
struct rm_h1_clean {
    struct rm_str host;
    uint32_t nhost;
    bool expect_continue;
};
/** Remove hop-by-hop headers, the headers Connection names, and the classes in <drop> from
 *  h->v[first..].  Host and Expect are removed too and reported in <out> when <out> is not
 *  NULL.  <h> must be the block just accumulated (c->acc.seen tells which classes it holds). */
void rm_h1_clean_block(struct rm_h1_codec *c, struct rm_headers *h, uint32_t first, uint32_t drop,
                       struct rm_h1_clean *out);

/* serialisation */
char *rm_h1_put_dec(char *dst, uint64_t v);
/** Size of the "name: value\r\n" lines of <h> minus pseudo-headers, the classes in <skip> and
 *  content-length repeats (only the first is written); *cl receives the content-length value
 *  (-1 absent, -2 invalid or conflicting) when cl is not NULL. */
size_t rm_h1_lines_size(const struct rm_headers *h, uint32_t skip, int64_t *cl);
char *rm_h1_lines_put(char *dst, const struct rm_headers *h, uint32_t skip);
/** rm_h1_lines_size and rm_h1_lines_put in one pass, for a head that most likely fits a stack
 *  buffer: writes the lines at <dst> and returns their end, or NULL (and *cl incomplete) as soon
 *  as one would go past <end>. */
char *rm_h1_lines_try_put(char *dst, const char *end, const struct rm_headers *h, uint32_t skip,
                          int64_t *cl);
/** A head buffer of <n> bytes: <stack> when it fits, else the stream's arena. */
char *rm_h1_head_buf(struct rm_h1_stream *hs, char *stack, size_t n);
void rm_h1_write(struct rm_h1_codec *c, const void *p, size_t n);

/* common stream ops */
int rm_h1_submit_data(struct rm_stream *s, const uint8_t *p, size_t n, bool end_stream);
int rm_h1_submit_trailers(struct rm_stream *s, struct rm_headers *h);
void rm_h1_reset(struct rm_stream *s, enum rm_reset_reason reason);
void rm_h1_pause_reading(struct rm_stream *s, bool paused);
bool rm_h1_write_blocked(const struct rm_stream *s);
void rm_h1_release(struct rm_stream *s);
/** May the user still submit on this stream? */
bool rm_h1_can_submit(const struct rm_h1_stream *hs);

/* common codec ops */
uint32_t rm_h1_active_streams(const struct rm_codec *base);
void rm_h1_codec_close(struct rm_codec *base);

/** Deliver the end of the incoming message: trailers (cleaned) or an empty end_stream DATA. */
void rm_h1_deliver_end(struct rm_h1_codec *c, struct rm_h1_stream *hs);

#endif
