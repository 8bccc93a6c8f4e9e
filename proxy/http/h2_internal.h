/* HTTP/2 codec internals (nghttp2), shared by h2_session.c (nghttp2 callbacks, the conn
 * handler, connection lifetime), h2_stream.c (stream objects and their ops), h2_server.c and
 * h2_client.c.  Users go through proxy/http/codec.h only; tests may include this header.
 *
 * ## Data path
 * Incoming bytes go to nghttp2_session_mem_recv() from the conn's on_data.  Outgoing frames are
 * produced in one drain (nghttp2_session_mem_send() until it has nothing, or until the conn's
 * output reaches its high watermark) from the conn's on_flush, i.e. once per loop iteration;
 * anything that makes nghttp2 want to write calls rm_conn_schedule_flush() (coalesced by the
 * conn).  Frame bytes are appended straight to conn->out.  DATA frames use
 * NGHTTP2_DATA_FLAG_NO_COPY: the send_data callback copies the stream's pending bytes
 * (struct rm_h2_stream.out) into conn->out, so a body is copied twice (submit_data into the
 * stream, framing into the conn) and never into nghttp2.
 *
 * ## Header blocks
 * struct rm_header has nghttp2_nv's layout (static assertions in h2_stream.c), so a block is
 * handed to nghttp2 as an array of nghttp2_nv.  Strings that live in the stream's own arena
 * (struct rm_h2_stream.own: server streams' s->arena) are submitted with
 * NGHTTP2_NV_FLAG_NO_COPY_NAME|VALUE: the arena is disposed only when the stream object is
 * recycled, which happens after nghttp2 closed the stream (or the session is gone), so nghttp2
 * never reads them after they are freed.  Blocks elsewhere (client requests, whose block lives
 * in the router's arena; trailers, which wait in the stream until its data has drained) have
 * their strings copied into the own arena first, in one allocation: nghttp2 copies only the
 * array.  Names go as they are (lower-case, see headers.h; nghttp2 lower-cases what it copies).
 *
 * ## Flow control and backpressure
 * NGHTTP2_OPT_NO_AUTO_WINDOW_UPDATE: received DATA is given back to the peer
 * (nghttp2_session_consume) once the user has had it.  A paused stream (pause_reading) keeps
 * what arrives in .held and returns no window, so the peer stops after the stream window;
 * resume delivers .held from the codec's deferred task and returns the window.
 * Outgoing: write_blocked() is true while .out holds more than the stream buffer limit
 * (st->buffer_limit, 256 KiB when 0); on_writable fires from the flush path once it drains
 * below half of that.  The conn's output is bounded by its high watermark: the drain stops
 * there and resumes from on_drained.
 *
 * ## Lifetimes
 * Stream objects come from a per-codec free list.  One is recycled (arena disposed, buffers
 * released) from the codec's deferred task once the user released it (or never had it) and
 * nghttp2 no longer knows the stream.  The codec is freed from the same task once the
 * connection is finished and every stream object is back; nghttp2_session_del() also runs
 * there, never inside an nghttp2 callback or a conn callback. */
#ifndef RM_HTTP_H2_INTERNAL_H
#define RM_HTTP_H2_INTERNAL_H

#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "proxy/core/arena.h"
#include "proxy/core/buf.h"
#include "proxy/core/loop.h"
#include "proxy/http/codec.h"

#define RM_H2_DEFAULT_HEADERS_KB 60
#define RM_H2_DEFAULT_HEADERS_COUNT 100
#define RM_H2_DEFAULT_MAX_STREAMS 1024
#define RM_H2_DEFAULT_STREAM_WINDOW (65535 * 4)
#define RM_H2_DEFAULT_CONN_WINDOW (1024 * 1024)
#define RM_H2_DEFAULT_STREAM_BUFFER (256 * 1024)
#define RM_H2_PEER_STREAMS_BEFORE_SETTINGS 100
#define RM_H2_FREE_STREAMS_MAX 128
/* struct rm_h2_codec.by_id: a power of two.  16, not more: the table lives in every connection,
 * idle ones included (64 slots made an idle h2c connection 16.3 KiB instead of 16.0, over the
 * #3 budget, for no measurable gain in instructions per request). */
#define RM_H2_ID_SLOTS 16

/* Stream states as the user sees them.  Only rm_h2_set_state() changes them:
 *   FREE -> IDLE                      allocated (server: headers arriving; client: not sent)
 *   IDLE -> OPEN | HALF_CLOSED_LOCAL | HALF_CLOSED_REMOTE | RESET
 *   OPEN -> HALF_CLOSED_LOCAL | HALF_CLOSED_REMOTE | RESET
 *   HALF_CLOSED_* -> CLOSED | RESET
 *   CLOSED | RESET -> FREE            recycled
 * "Local end" is the submission of END_STREAM (it may still be queued); "remote end" is its
 * delivery to the user.  CLOSED and RESET are terminal: the user gets no more events. */
enum rm_h2_state {
    RM_H2_FREE = 0,
    RM_H2_IDLE,
    RM_H2_OPEN,
    RM_H2_HALF_CLOSED_LOCAL,
    RM_H2_HALF_CLOSED_REMOTE,
    RM_H2_CLOSED,
    RM_H2_RESET,
};

struct rm_h2_codec;

/* What the messaging checks (h2_validate.c) know of a stream's incoming side. */
struct rm_h2v_state {
    uint32_t flags;         /* h2_validate.c's F_* bits (nghttp2's http_flags) */
    int16_t status;         /* client: :status of the response block being received, or -1 */
    int64_t content_length; /* -1: none (or not enforced) */
    int64_t received;       /* DATA bytes so far */
};

struct rm_h2_stream {
    struct rm_stream base; /* first: a struct rm_stream * is a struct rm_h2_stream * */
    struct rm_h2_codec *codec;
    struct rm_h2_stream *prev, *next; /* codec->streams while allocated; next: free list */
    struct rm_h2_stream *reap_next, *writable_next, *resume_next;
    enum rm_h2_state state;
    struct rm_arena own;   /* codec-owned; server streams: base.arena points here */
    struct rm_headers *in; /* incoming block being collected (NULL: ignored) */
    size_t in_bytes;       /* its name+value bytes so far */
    struct rm_h2v_state v; /* the peer's messages so far (h2_validate.c) */
    struct rm_buf out;     /* DATA submitted, not yet framed */
    nghttp2_nv *trailers;  /* submitted trailers waiting for .out to drain (own arena) */
    size_t ntrailers;
    struct rm_buf held; /* DATA received while paused, not yet delivered */
    struct rm_headers *held_trailers;
    size_t unconsumed;             /* delivered while paused: window not yet returned */
    struct rm_timer headers_timer; /* server: request_headers_timeout until END_HEADERS */
    bool attached : 1;             /* the user has it (server: after on_stream) */
    bool released : 1;             /* the user called release() */
    bool ng_open : 1;              /* nghttp2 knows the stream and has not closed it */
    bool counted : 1;              /* counted in codec->active */
    bool has_provider : 1;         /* headers submitted with a data provider */
    bool out_end : 1;              /* END_STREAM (or trailers) submitted after the data */
    bool deferred : 1;             /* the data provider returned NGHTTP2_ERR_DEFERRED */
    bool paused : 1;               /* pause_reading(true) */
    bool held_end : 1;             /* END_STREAM received while paused */
    bool remote_end_seen : 1;      /* END_STREAM recorded (delivered or held) */
    bool blocked : 1;              /* write_blocked() became true; on_writable owed */
    bool final_seen : 1;           /* client: final (non-1xx) response headers received */
    bool overflow : 1;             /* an incoming header block went over the limits */
    bool end_sent : 1;             /* our END_STREAM went out */
    bool rst_after_end : 1;        /* released with the response complete: RST(NO_ERROR) after it */
    bool in_reap : 1, in_writable : 1, in_resume : 1;
};

struct rm_h2_codec {
    struct rm_codec base; /* first */
    struct rm_loop *loop;
    nghttp2_session *ng;         /* NULL once deleted */
    struct rm_codec_settings st; /* defaults filled in */
    uint32_t stream_buffer;      /* per-stream write_blocked threshold */
    bool server;
    bool finished : 1;     /* connection over: no nghttp2 calls, no codec callbacks */
    bool recv_dead : 1;    /* fatal input error: ignore further bytes */
    bool shutting : 1;     /* shutdown() called */
    bool final_goaway : 1; /* server: final GOAWAY submitted */
    bool ping_acked : 1;   /* server: a PING ACK came back during shutdown */
    bool goaway_recv : 1;  /* client: GOAWAY received */
    bool idle_pending : 1; /* client: on_idle owed */
    int close_err;         /* what on_close reports when nghttp2 ends the session */
    struct rm_task task;   /* reaping, held-data delivery, on_idle, teardown */
    struct rm_h2_stream *streams;
    struct rm_h2_stream *free_list;
    uint32_t nfree;
    uint32_t nalloc; /* stream objects not on the free list */
    uint32_t active; /* streams that occupy (or will occupy) a slot on the wire */
    struct rm_h2_stream *reap, *writable, *resumed;
    struct rm_h2_stream *rx_hs; /* the header block being received (NULL: ignored) */
    bool rx_trailer;            /* that block is a trailer section (rm_h2v_trailer) */
    /* h2_session.c stream_by_id()'s answers, by stream id ((id >> 1) % RM_H2_ID_SLOTS); a slot
     * is valid only while its stream has that id and ng_open; recycle() clears it */
    struct rm_h2_stream *by_id[RM_H2_ID_SLOTS];
    /* the DATA frame being received: lets the last chunk carry end_stream */
    int32_t rx_sid;
    size_t rx_left;
    bool rx_end;
    nghttp2_nv *scratch; /* nghttp2 copies the nv array at submit: reused */
    size_t scratch_cap;
    void (*ping_cb)(void *ctx); /* rm_h2_ping(): called when the outstanding PING is acked */
    void *ping_ctx;
    uint64_t ping_seq; /* opaque data of the outstanding PING */
};

/* Report <ev> to the codec's owner (counters); no-op without an on_event callback. */
static inline void rm_h2_event(const struct rm_h2_codec *c, enum rm_codec_event ev)
{
    if (c->base.cb->on_event) c->base.cb->on_event(c->base.user, ev);
}

extern const struct rm_codec_ops rm_h2_stream_ops;
extern const struct rm_conn_handler rm_h2_conn_handler;

static inline struct rm_h2_stream *rm_h2_stream_of(const struct rm_stream *s)
{
    return (struct rm_h2_stream *)(void *)s;
}
static inline struct rm_h2_codec *rm_h2_codec_of(const struct rm_codec *c)
{
    return (struct rm_h2_codec *)(void *)c;
}
/** <id>'s slot in c->by_id. */
static inline struct rm_h2_stream **rm_h2_id_slot(struct rm_h2_codec *c, int32_t id)
{
    return &c->by_id[((uint32_t)id >> 1) % RM_H2_ID_SLOTS];
}
/* Copy <n> bytes from <src> to <dst> (not overlapping).  Field names and values are mostly
 * under 32 bytes: those are copied with at most four loads and stores, all within the n bytes
 * (overlapping in the middle), without a call into libc. */
static inline __attribute__((always_inline)) void rm_h2_copy(char *dst, const uint8_t *src,
                                                             size_t n)
{
    uint64_t a, b, c, d;
    uint32_t x, y;
    if (n > 32) {
        memcpy(dst, src, n);
    } else if (n > 16) {
        memcpy(&a, src, 8), memcpy(&b, src + 8, 8);
        memcpy(&c, src + n - 16, 8), memcpy(&d, src + n - 8, 8);
        memcpy(dst, &a, 8), memcpy(dst + 8, &b, 8);
        memcpy(dst + n - 16, &c, 8), memcpy(dst + n - 8, &d, 8);
    } else if (n >= 8) {
        memcpy(&a, src, 8), memcpy(&b, src + n - 8, 8);
        memcpy(dst, &a, 8), memcpy(dst + n - 8, &b, 8);
    } else if (n >= 4) {
        memcpy(&x, src, 4), memcpy(&y, src + n - 4, 4);
        memcpy(dst, &x, 4), memcpy(dst + n - 4, &y, 4);
    } else if (n) {
        dst[0] = (char)src[0];
        dst[n / 2] = (char)src[n / 2];
        dst[n - 1] = (char)src[n - 1];
    }
}

static inline bool rm_h2_terminal(const struct rm_h2_stream *hs)
{
    return hs->state == RM_H2_CLOSED || hs->state == RM_H2_RESET;
}
/** May the user still get events on <hs>?  (Callers also check codec->finished where it
 *  matters: rm_h2_finish() itself still reports on_reset.) */
static inline bool rm_h2_deliverable(const struct rm_h2_stream *hs)
{
    return hs->attached && !hs->released && !rm_h2_terminal(hs);
}

/* ---- h2_mem.c ---- */
/** nghttp2's allocator for our sessions: per-thread size-class free lists. */
extern nghttp2_mem rm_h2_mem;
/** Free this thread's cached blocks now (tests; threads that exit are cleaned up anyway). */
void rm_h2_mem_thread_cleanup(void);
/** The size (and alignment) of a session region. */
#define RM_H2_MEM_REGION_BYTES (32 * 1024)
/** Until rm_h2_mem_region_end, this thread's rm_h2_mem blocks come from one fresh mapping of
 *  RM_H2_MEM_REGION_BYTES (those that fit; the rest from the pool), laid out so that an idle
 * session touches one page of it (h2_mem.c): call the two around nghttp2_session_*_new.  The
 * mapping is cached for the thread's next session when its last block is freed (at most 64;
 * rm_h2_mem_trim unmaps them).  Its blocks must be freed on this thread.  Nested calls are
 * no-ops; without address space the blocks simply come from the pool. */
void rm_h2_mem_region_begin(void);
void rm_h2_mem_region_end(void);

/* ---- h2_session.c ---- */
/** Allocate a codec on <conn> with a fresh nghttp2 session and our SETTINGS queued.  Does not
 *  take the conn over (the constructors do, last).  Returns NULL on failure. */
struct rm_h2_codec *rm_h2_codec_new(struct rm_conn *conn, const struct rm_codec_settings *st,
                                    const struct rm_codec_callbacks *cb, void *user, bool server);
/** The connection is over: open streams get on_reset(CONNECTION_TERMINATION), then (if
 *  <notify>) cb->on_close(user, err).  With <notify>, a stream whose exchange completed but
 *  whose paused user has not had all of it yet survives: resume() still delivers it.  The
 *  conn is closed (after a flush when <graceful>) and the session deleted from the deferred
 *  task.  Idempotent.  Safe inside callbacks. */
void rm_h2_finish(struct rm_h2_codec *c, int err, bool notify, bool graceful);
/** After input or output: server drain step, close when nghttp2 is done, schedule a flush. */
void rm_h2_after_io(struct rm_h2_codec *c);
/** Queue the codec's deferred task. */
void rm_h2_schedule(struct rm_h2_codec *c);
/** Ask the conn for a flush (no-op once finished). */
void rm_h2_want_flush(struct rm_h2_codec *c);
/** Append frame bytes to the conn's output (a then b). */
void rm_h2_out_append(struct rm_h2_codec *c, const uint8_t *a, size_t an, const uint8_t *b,
                      size_t bn);

/* ---- h2_validate.c: RFC 9113 8.1-8.3 on what the peer sends (nghttp2's HTTP messaging) ---- */
enum rm_h2v {
    RM_H2V_OK = 0, /* deliver the field */
    RM_H2V_REMOVE, /* valid but not delivered (content-length of a 204 or a 2xx to CONNECT) */
    RM_H2V_ERROR,  /* malformed message: reset the stream (PROTOCOL_ERROR) */
};
/** A new stream: nothing received yet. */
void rm_h2v_init(struct rm_h2_stream *hs);
/** Is a block of category <cat> (nghttp2_headers_category) on <hs> a trailer section? */
bool rm_h2v_trailer(const struct rm_h2_stream *hs, bool server, int cat);
/** Check one received field of a block (server: of a request; client: of a response), in
 *  order, and update <hs>'s state.  On RM_H2V_OK, *key is the key of <name> (rm_hkey_of). */
enum rm_h2v rm_h2v_field(struct rm_h2_stream *hs, bool server, bool trailer, enum rm_hkey *key,
                         const uint8_t *name, size_t nlen, const uint8_t *value, size_t vlen);
/** The whole block (after its last field) of category <cat>; <end>: it carries END_STREAM.
 *  False: the message is malformed. */
bool rm_h2v_block(struct rm_h2_stream *hs, bool server, int cat, bool end);
/** <n> DATA bytes arrive.  False: malformed (more than content-length, or no final response). */
bool rm_h2v_data(struct rm_h2_stream *hs, size_t n);
/** END_STREAM arrives on DATA.  False: malformed (body length, or no final response). */
bool rm_h2v_end(const struct rm_h2_stream *hs);
/** Client: the request <nv> is submitted on <hs> (its method decides what a response may carry). */
void rm_h2v_request_sent(struct rm_h2_stream *hs, const nghttp2_nv *nv, size_t n);

/* ---- h2_stream.c ---- */
/** A stream object in state IDLE, counted as active; base.arena = its own arena. */
struct rm_h2_stream *rm_h2_stream_alloc(struct rm_h2_codec *c);
/** The single state setter: asserts that <to> is a legal transition. */
void rm_h2_set_state(struct rm_h2_stream *hs, enum rm_h2_state to);
/** Peer's END_STREAM is being delivered: OPEN -> HALF_CLOSED_REMOTE, HCL -> CLOSED. */
void rm_h2_remote_end(struct rm_h2_stream *hs);
/** Abort <hs> (no-op if terminal): state RESET, pending output and held input dropped (held
 *  window returned), RST_STREAM <code> sent if nghttp2 has the stream and <code> >= 0, then
 *  on_reset(<reason>) if <notify> and the user may still hear about it. */
void rm_h2_stream_abort(struct rm_h2_stream *hs, enum rm_reset_reason reason, int code,
                        bool notify);
/** nghttp2 closed the stream (on_stream_close, refused request HEADERS, session gone). */
void rm_h2_stream_closed(struct rm_h2_stream *hs, uint32_t error_code);
/** Counted and done on the wire: leave codec->active (on_idle when the client drops to 0). */
void rm_h2_maybe_retire(struct rm_h2_stream *hs);
/** Released and unknown to nghttp2: queue for recycling. */
void rm_h2_maybe_reap(struct rm_h2_stream *hs);
/** Recycle queued streams (deferred task only). */
void rm_h2_reap(struct rm_h2_codec *c);
/** Deliver incoming DATA (or hold it while paused); consumes the window after delivery. */
void rm_h2_deliver_data(struct rm_h2_stream *hs, const uint8_t *p, size_t n, bool end);
/** Deliver trailers (or hold them behind held data). */
void rm_h2_deliver_trailers(struct rm_h2_stream *hs, struct rm_headers *h);
/** Deliver what a resumed stream held (deferred task only). */
void rm_h2_deliver_held(struct rm_h2_stream *hs);
/** Return <n> bytes of receive window for <hs> (connection and stream). */
void rm_h2_consume(struct rm_h2_stream *hs, size_t n);
/** nghttp2 callbacks for the DATA provider (NO_COPY). */
ssize_t rm_h2_data_read(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                        uint32_t *flags, nghttp2_data_source *src, void *ud);
int rm_h2_send_data(nghttp2_session *ng, nghttp2_frame *frame, const uint8_t *framehd,
                    size_t length, nghttp2_data_source *src, void *ud);
/** Fire on_writable for streams that drained below their low mark (flush path only). */
void rm_h2_fire_writable(struct rm_h2_codec *c);
/** Map a reset reason to an HTTP/2 error code. */
uint32_t rm_h2_error_code(enum rm_reset_reason r);

#endif
