/* HTTP/2 connection: the nghttp2 session and its callbacks, the conn handler (bytes in, one
 * drain per loop iteration out), and the connection's lifetime.  See h2_internal.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/core/log.h"
#include "proxy/http/h2_internal.h"

static void codec_task(struct rm_task *t);

void rm_h2_schedule(struct rm_h2_codec *c)
{
    rm_loop_defer(c->loop, &c->task, codec_task);
}

void rm_h2_want_flush(struct rm_h2_codec *c)
{
    if (!c->finished && c->base.conn) rm_conn_schedule_flush(c->base.conn);
}

void rm_h2_out_append(struct rm_h2_codec *c, const uint8_t *a, size_t an, const uint8_t *b,
                      size_t bn)
{
    struct rm_conn *conn = c->base.conn;
    uint8_t *p = rm_buf_reserve(&conn->out, an + bn);
    memcpy(p, a, an);
    if (bn) memcpy(p + an, b, bn);
    rm_buf_commit(&conn->out, an + bn);
    if (conn->out.len >= conn->high_watermark)
        conn->flags |= RM_CONN_OVER_HIGH; /* the drain stops; on_drained resumes it */
}

/* nghttp2's user data for stream <id>.  Answers are kept in a small table by id: while a
 * stream is open in nghttp2 (ng_open) its id still maps to it, and ids are never reused in a
 * session, so the streams in flight (consecutive ids) are found without asking nghttp2. */
static struct rm_h2_stream *stream_ask(struct rm_h2_codec *c, int32_t id)
{
    struct rm_h2_stream *hs = nghttp2_session_get_stream_user_data(c->ng, id);
    if (hs) *rm_h2_id_slot(c, id) = hs;
    return hs;
}

static inline __attribute__((always_inline)) struct rm_h2_stream *
stream_by_id(struct rm_h2_codec *c, int32_t id)
{
    struct rm_h2_stream *hs = *rm_h2_id_slot(c, id);
    if (hs && hs->base.id == id && hs->ng_open) return hs;
    return stream_ask(c, id);
}

/* Streams nghttp2 has not opened yet (queued request HEADERS) have no user data there. */
static struct rm_h2_stream *stream_search(struct rm_h2_codec *c, int32_t id)
{
    struct rm_h2_stream *hs = stream_by_id(c, id);
    for (struct rm_h2_stream *it = c->streams; !hs && it; it = it->next) {
        if (it->base.id == id && it->ng_open) hs = it;
    }
    return hs;
}

/* ---- receiving: header blocks ------------------------------------------------------------- */

/* request_headers_timeout: a request's header block (HEADERS + CONTINUATIONs) took too long. */
static void on_headers_timeout(struct rm_timer *t)
{
    struct rm_h2_stream *hs = rm_container_of(t, struct rm_h2_stream, headers_timer);
    struct rm_h2_codec *c = hs->codec;
    if (c->finished || !hs->ng_open) return;
    nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, hs->base.id, NGHTTP2_CANCEL);
    rm_h2_event(c, RM_CODEC_EV_TX_RESET);
    rm_h2_want_flush(c);
}

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    struct rm_h2_codec *c = ud;
    struct rm_h2_stream *hs;
    if (c->finished) return NGHTTP2_ERR_CALLBACK_FAILURE;
    c->rx_hs = NULL;
    if (f->hd.type != NGHTTP2_HEADERS) return 0;
    if (c->server && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
        hs = rm_h2_stream_alloc(c);
        if (!hs) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        hs->base.id = f->hd.stream_id;
        hs->ng_open = true;
        nghttp2_session_set_stream_user_data(ng, hs->base.id, hs);
        *rm_h2_id_slot(c, hs->base.id) = hs;
        if (c->st.request_headers_timeout_ms)
            rm_timer_start(c->loop, &hs->headers_timer, c->st.request_headers_timeout_ms,
                           on_headers_timeout);
    } else {
        hs = stream_by_id(c, f->hd.stream_id);
        if (!hs) return 0;
        hs->in = NULL;
        if (!rm_h2_deliverable(hs)) /* released: the caller's arena may be gone */
            return 0;
    }
    hs->in = rm_arena_alloc(hs->base.arena, sizeof(*hs->in));
    rm_headers_init(hs->in, hs->base.arena);
    hs->in_bytes = 0;
    c->rx_hs = hs;
    c->rx_trailer = rm_h2v_trailer(hs, c->server, f->headers.cat); /* fixed until the block ends */
    return 0;
}

/* A malformed message (h2_validate.c): RST_STREAM(PROTOCOL_ERROR), as nghttp2's own HTTP
 * messaging did; the user hears RM_RESET_PROTOCOL if it has the stream.  Not for streams
 * already reset (nghttp2 ignores what still arrives on them). */
static void malformed(struct rm_h2_stream *hs, const char *what)
{
    rm_log_debug("h2: stream %d: malformed %s: reset", hs->base.id, what);
    rm_h2_event(hs->codec, RM_CODEC_EV_MESSAGING_ERROR);
    rm_h2_stream_abort(hs, RM_RESET_PROTOCOL, NGHTTP2_PROTOCOL_ERROR, true);
}

/* Append a checked field (its key known) to <h>, copying it into the block's arena. */
static void add_field(struct rm_headers *h, enum rm_hkey k, const uint8_t *name, size_t nlen,
                      const uint8_t *value, size_t vlen, uint8_t flags)
{
    char *p = rm_arena_alloc(h->arena, nlen + vlen + 2);
    rm_h2_copy(p, name, nlen);
    p[nlen] = 0;
    rm_h2_copy(p + nlen + 1, value, vlen);
    p[nlen + 1 + vlen] = 0;
    rm_headers_add_ref_key(h, k, p, nlen, p + nlen + 1, vlen);
    h->v[h->n - 1].flags = flags & NGHTTP2_NV_FLAG_NO_INDEX;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *ud)
{
    struct rm_h2_codec *c = ud;
    if (c->finished) return NGHTTP2_ERR_CALLBACK_FAILURE;
    struct rm_h2_stream *hs = c->rx_hs; /* on_header follows its block's on_begin_headers */
    if (!hs || !hs->in) return 0;
    enum rm_hkey k = RM_HK_OTHER;
    enum rm_h2v v = rm_h2v_field(hs, c->server, c->rx_trailer, &k, name, nlen, value, vlen);
    if (v == RM_H2V_REMOVE) return 0;
    if (v != RM_H2V_OK) {
        /* nghttp2 skips the rest of the block; the RST_STREAM queued first is the one sent
         * (what its own check did: PROTOCOL_ERROR, then nothing more for this block) */
        rm_log_debug("h2: stream %d: malformed header field: reset", f->hd.stream_id);
        hs->in = NULL;
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_PROTOCOL_ERROR);
        rm_h2_event(c, RM_CODEC_EV_MESSAGING_ERROR);
        rm_h2_event(c, RM_CODEC_EV_TX_RESET);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    hs->in_bytes += nlen + vlen;
    if (hs->in_bytes > (size_t)c->st.max_request_headers_kb * 1024 ||
        hs->in->n >= c->st.max_headers_count) {
        /* nghttp2 resets the stream (INTERNAL_ERROR) and keeps decoding the block for HPACK */
        rm_log_debug("h2: stream %d: header block over %u KiB or %u fields: reset", f->hd.stream_id,
                     c->st.max_request_headers_kb, c->st.max_headers_count);
        hs->overflow = true;
        hs->in = NULL;
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    add_field(hs->in, k, name, nlen, value, vlen, flags);
    return 0;
}

/* A request on the server: hand the stream to the user, then its headers. */
static void server_request(struct rm_h2_codec *c, struct rm_h2_stream *hs, struct rm_headers *h,
                           bool end)
{
    hs->attached = true;
    c->base.cb->on_stream(c->base.user, &hs->base);
    if (c->finished || hs->state != RM_H2_IDLE) /* closed or reset from on_stream */
        return;
    if (end) {
        hs->remote_end_seen = true;
        rm_h2_remote_end(hs);
    } else {
        rm_h2_set_state(hs, RM_H2_OPEN);
    }
    hs->base.ev->on_headers(&hs->base, h, end);
}

static int status_of(const struct rm_headers *h)
{
    if (!h->n || rm_header_key(&h->v[0]) != RM_HK_STATUS) return -1;
    return (int)rm_parse_u63((const char *)h->v[0].value, h->v[0].value_len);
}

/* A response block on the client: 1xx, the final headers, or trailers. */
static void client_headers(struct rm_h2_stream *hs, struct rm_headers *h, bool end)
{
    if (hs->final_seen) {
        rm_h2_deliver_trailers(hs, h);
        return;
    }
    if (!rm_h2_deliverable(hs)) return;
    int status = status_of(h);
    bool info = status >= 100 && status < 200;
    if (!info) {
        hs->final_seen = true;
        if (end) {
            hs->remote_end_seen = true;
            rm_h2_remote_end(hs);
        }
    }
    hs->base.ev->on_headers(&hs->base, h, end && !info);
}

static void headers_received(struct rm_h2_codec *c, const nghttp2_frame *f)
{
    struct rm_h2_stream *hs = stream_by_id(c, f->hd.stream_id);
    if (hs) rm_timer_stop(c->loop, &hs->headers_timer);
    if (!hs || !hs->in) return;
    struct rm_headers *h = hs->in;
    bool end = f->hd.flags & NGHTTP2_FLAG_END_STREAM;
    hs->in = NULL;
    c->rx_hs = NULL;
    if (!rm_h2v_block(hs, c->server, f->headers.cat, end)) {
        malformed(hs, "header block");
        return;
    }
    if (!c->server)
        client_headers(hs, h, end);
    else if (f->headers.cat == NGHTTP2_HCAT_REQUEST)
        server_request(c, hs, h, end);
    else
        rm_h2_deliver_trailers(hs, h);
}

/* ---- receiving: DATA, resets, connection frames ------------------------------------------- */

static int on_begin_frame(nghttp2_session *ng, const nghttp2_frame_hd *hd, void *ud)
{
    struct rm_h2_codec *c = ud;
    if (hd->type == NGHTTP2_DATA) {
        c->rx_sid = hd->stream_id;
        c->rx_left = hd->length;
        c->rx_end = (hd->flags & NGHTTP2_FLAG_END_STREAM) && !(hd->flags & NGHTTP2_FLAG_PADDED);
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    struct rm_h2_codec *c = ud;
    if (c->finished) return NGHTTP2_ERR_CALLBACK_FAILURE;
    bool end = false;
    if (id == c->rx_sid) { /* unpadded frame: its last chunk carries END_STREAM */
        c->rx_left = c->rx_left > len ? c->rx_left - len : 0;
        end = c->rx_end && c->rx_left == 0;
    }
    struct rm_h2_stream *hs = stream_by_id(c, id);
    if (!hs) {
        nghttp2_session_consume(ng, id, len);
        return 0;
    }
    if (!rm_h2_terminal(hs) && (!rm_h2v_data(hs, len) || (end && !rm_h2v_end(hs)))) {
        malformed(hs, "body"); /* more than content-length, a short end, or DATA after 1xx */
        end = false;           /* the chunk is dropped (and its window returned) below */
    }
    rm_h2_deliver_data(hs, data, len, end);
    return c->finished ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
}

static void goaway_received(struct rm_h2_codec *c, const nghttp2_frame *f)
{
    if (f->goaway.error_code != NGHTTP2_NO_ERROR) {
        rm_log_debug("h2: GOAWAY from the peer, error %u", f->goaway.error_code);
        c->close_err = -ECONNRESET;
    }
    if (c->server || c->goaway_recv) return;
    c->goaway_recv = true; /* streams above last_stream_id: on_stream_close(REFUSED_STREAM) */
    if (c->base.cb->on_goaway) c->base.cb->on_goaway(c->base.user);
}

/* The ACK of the PING rm_h2_ping() sent (matched by its opaque data). */
static void ping_ack_received(struct rm_h2_codec *c, const uint8_t *opaque)
{
    if (!c->ping_cb || memcmp(opaque, &c->ping_seq, sizeof(c->ping_seq)) != 0) return;
    void (*cb)(void *) = c->ping_cb;
    c->ping_cb = NULL;
    cb(c->ping_ctx);
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    struct rm_h2_codec *c = ud;
    struct rm_h2_stream *hs;
    if (c->finished) return NGHTTP2_ERR_CALLBACK_FAILURE;
    switch (f->hd.type) {
    case NGHTTP2_HEADERS:
        headers_received(c, f);
        break;
    case NGHTTP2_DATA: /* END_STREAM not yet delivered on a chunk (empty or padded frame) */
        hs = stream_by_id(c, f->hd.stream_id);
        if (!hs || !(f->hd.flags & NGHTTP2_FLAG_END_STREAM) || hs->remote_end_seen) break;
        if (!rm_h2_terminal(hs) && !rm_h2v_end(hs))
            malformed(hs, "body end"); /* shorter than content-length, or no final response */
        else
            rm_h2_deliver_data(hs, NULL, 0, true);
        break;
    case NGHTTP2_RST_STREAM:
        rm_h2_event(c, RM_CODEC_EV_RX_RESET);
        hs = stream_by_id(c, f->hd.stream_id);
        if (hs)
            rm_h2_stream_abort(hs,
                               f->rst_stream.error_code == NGHTTP2_REFUSED_STREAM ? RM_RESET_REFUSED
                                                                                  : RM_RESET_REMOTE,
                               -1, true);
        break;
    case NGHTTP2_GOAWAY:
        goaway_received(c, f);
        break;
    case NGHTTP2_PING:
        if ((f->hd.flags & NGHTTP2_FLAG_ACK) && c->shutting) c->ping_acked = true;
        if (f->hd.flags & NGHTTP2_FLAG_ACK) ping_ack_received(c, f->ping.opaque_data);
        break;
    default:
        break;
    }
    return c->finished ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error_code, void *ud)
{
    struct rm_h2_codec *c = ud;
    if (c->finished) return NGHTTP2_ERR_CALLBACK_FAILURE;
    struct rm_h2_stream *hs = stream_by_id(c, id);
    if (hs) rm_h2_stream_closed(hs, error_code);
    return c->finished ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
}

/* ---- sending ------------------------------------------------------------------------------ */

static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    struct rm_h2_codec *c = ud;
    if (c->finished) return NGHTTP2_ERR_CALLBACK_FAILURE;
    if (f->hd.type == NGHTTP2_GOAWAY && f->goaway.error_code != NGHTTP2_NO_ERROR) {
        c->close_err = -EPROTO;
        return 0;
    }
    if ((f->hd.type != NGHTTP2_DATA && f->hd.type != NGHTTP2_HEADERS) ||
        !(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    struct rm_h2_stream *hs = stream_by_id(c, f->hd.stream_id);
    if (!hs) return 0;
    hs->end_sent = true;
    if (hs->rst_after_end) {
        hs->rst_after_end = false;
        if (nghttp2_session_get_stream_remote_close(ng, f->hd.stream_id) == 0) {
            nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_NO_ERROR);
            rm_h2_event(c, RM_CODEC_EV_TX_RESET);
        }
    }
    return 0;
}

static int on_frame_not_send(nghttp2_session *ng, const nghttp2_frame *f, int lib_err, void *ud)
{
    struct rm_h2_codec *c = ud;
    if (c->finished) return NGHTTP2_ERR_CALLBACK_FAILURE;
    if (f->hd.type != NGHTTP2_HEADERS) return 0;
    struct rm_h2_stream *hs = stream_search(c, f->hd.stream_id);
    if (!hs) return 0;
    rm_log_debug("h2: stream %d: HEADERS not sent: %s", f->hd.stream_id, nghttp2_strerror(lib_err));
    if (!c->server && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
        /* GOAWAY or our own reset got there first: never sent, so safe to retry */
        rm_h2_stream_closed(hs, NGHTTP2_REFUSED_STREAM);
    } else if (!rm_h2_terminal(hs)) {
        rm_h2_stream_abort(hs, RM_RESET_LOCAL, NGHTTP2_INTERNAL_ERROR, true);
    }
    return c->finished ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
}

static int on_error(nghttp2_session *ng, int lib_err, const char *msg, size_t len, void *ud)
{
    rm_log_debug("h2: nghttp2: %.*s", (int)len, msg);
    return 0;
}

/* One drain: frames into the conn's output until nghttp2 has nothing more or the output
 * reached the high watermark (then on_drained brings us back). */
static void drain(struct rm_h2_codec *c)
{
    while (!c->finished && c->base.conn->out.len < c->base.conn->high_watermark) {
        const uint8_t *p;
        ssize_t n = nghttp2_session_mem_send(c->ng, &p);
        if (c->finished || n == 0) return;
        if (n < 0) {
            rm_log_warn("h2: nghttp2_session_mem_send: %s", nghttp2_strerror((int)n));
            rm_h2_finish(c, -EPROTO, true, false);
            return;
        }
        rm_h2_out_append(c, p, (size_t)n, NULL, 0);
    }
}

/* ---- the conn handler --------------------------------------------------------------------- */

/* Input nghttp2 could not take (bad preface, flood, …): GOAWAY(PROTOCOL_ERROR), then close. */
static void input_failed(struct rm_h2_codec *c, int lib_err)
{
    char peer[64];
    rm_log_debug("h2 %s: closing: %s", rm_conn_peer_str(c->base.conn, peer, sizeof(peer)),
                 nghttp2_strerror(lib_err));
    c->recv_dead = true;
    c->close_err = -EPROTO;
    if (nghttp2_session_terminate_session(c->ng, NGHTTP2_PROTOCOL_ERROR) != 0) {
        rm_h2_finish(c, -EPROTO, true, false);
        return;
    }
    rm_h2_want_flush(c);
}

void rm_h2_after_io(struct rm_h2_codec *c)
{
    if (c->finished) return;
    if (c->server && c->shutting && !c->final_goaway && (c->active == 0 || c->ping_acked)) {
        c->final_goaway = true; /* one round trip after the notice, or idle */
        nghttp2_submit_goaway(c->ng, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(c->ng), NGHTTP2_NO_ERROR,
                              NULL, 0);
        rm_h2_want_flush(c);
    }
    /* nghttp2 is done (GOAWAY both ways settled, or a connection error sent); a stream it
     * closed may still hold input for a paused user: wait for it unless this is an error */
    if (!nghttp2_session_want_read(c->ng) && !nghttp2_session_want_write(c->ng) &&
        (c->active == 0 || c->close_err != 0))
        rm_h2_finish(c, c->close_err, true, true);
}

static size_t conn_on_data(struct rm_conn *conn, const uint8_t *p, size_t n)
{
    struct rm_h2_codec *c = conn->owner;
    if (c->finished || c->recv_dead) return n;
    ssize_t rv = nghttp2_session_mem_recv(c->ng, p, n);
    if (c->finished) return n;
    if (rv < 0) {
        input_failed(c, (int)rv);
        return n;
    }
    if (nghttp2_session_want_write(c->ng)) rm_h2_want_flush(c);
    rm_h2_after_io(c);
    return n;
}

static void conn_on_flush(struct rm_conn *conn)
{
    struct rm_h2_codec *c = conn->owner;
    if (c->finished) return;
    drain(c);
    rm_h2_fire_writable(c);
    rm_h2_after_io(c);
}

static void conn_on_drained(struct rm_conn *conn)
{
    struct rm_h2_codec *c = conn->owner;
    if (!c->finished && nghttp2_session_want_write(c->ng)) rm_conn_schedule_flush(conn);
}

static void conn_on_close(struct rm_conn *conn, int err)
{
    struct rm_h2_codec *c = conn->owner;
    c->base.conn = NULL;
    rm_h2_finish(c, err ? err : c->close_err, true, false);
}

static void conn_on_connected(struct rm_conn *conn, int err) {}

const struct rm_conn_handler rm_h2_conn_handler = {
    .on_connected = conn_on_connected,
    .on_data = conn_on_data,
    .on_flush = conn_on_flush,
    .on_drained = conn_on_drained,
    .on_close = conn_on_close,
};

/* ---- lifetime ----------------------------------------------------------------------------- */

/* nghttp2 closed the stream cleanly (both END_STREAMs) but a paused user has not had the end
 * of the response yet. */
static bool complete_but_held(const struct rm_h2_stream *hs)
{
    return !hs->ng_open && hs->remote_end_seen && rm_h2_deliverable(hs);
}

void rm_h2_finish(struct rm_h2_codec *c, int err, bool notify, bool graceful)
{
    if (c->finished) return;
    c->finished = true;
    struct rm_conn *conn = c->base.conn;
    c->base.conn = NULL;
    if (conn && graceful)
        rm_conn_close_after_flush(conn);
    else if (conn)
        rm_conn_close(conn);
    for (struct rm_h2_stream *hs = c->writable; hs; hs = hs->writable_next)
        hs->in_writable = false;
    c->writable = NULL;
    for (struct rm_h2_stream *hs = c->streams; hs; hs = hs->next) {
        if (notify && complete_but_held(hs))
            continue; /* its exchange is over: resume() still delivers it */
        rm_h2_stream_abort(hs, RM_RESET_CONNECTION_TERMINATION, -1, true);
    }
    if (notify && c->base.cb && c->base.cb->on_close) c->base.cb->on_close(c->base.user, err);
    rm_h2_schedule(c);
}

static void run_resumed(struct rm_h2_codec *c)
{
    struct rm_h2_stream *hs;
    while ((hs = c->resumed)) {
        c->resumed = hs->resume_next;
        hs->in_resume = false;
        rm_h2_deliver_held(hs);
    }
}

static void delete_session(struct rm_h2_codec *c)
{
    nghttp2_session_del(c->ng);
    c->ng = NULL;
    for (struct rm_h2_stream *hs = c->streams; hs; hs = hs->next) {
        hs->ng_open = false;
        rm_h2_maybe_retire(hs);
        rm_h2_maybe_reap(hs);
    }
}

static void codec_free(struct rm_h2_codec *c)
{
    struct rm_h2_stream *hs;
    while ((hs = c->free_list)) {
        c->free_list = hs->next;
        free(hs);
    }
    free(c->scratch);
    free(c);
}

/* Deferred work, outside every nghttp2 and conn callback: held input for resumed streams,
 * on_idle, recycling, and once finished the session's deletion and the codec's free. */
static void codec_task(struct rm_task *t)
{
    struct rm_h2_codec *c = rm_container_of(t, struct rm_h2_codec, task);
    run_resumed(c);
    if (!c->finished && c->idle_pending) {
        c->idle_pending = false;
        if (c->active == 0 && !c->shutting && !c->goaway_recv && c->base.cb->on_idle)
            c->base.cb->on_idle(c->base.user);
    }
    rm_h2_after_io(c); /* e.g. the last stream went away: finish a drained connection */
    if (c->finished && c->ng) delete_session(c);
    rm_h2_reap(c);
    if (c->finished && c->nalloc == 0 && !c->task.queued) codec_free(c);
}

/* ---- construction ------------------------------------------------------------------------- */

static void fill_settings(struct rm_h2_codec *c, const struct rm_codec_settings *st)
{
    if (st) c->st = *st;
    if (!c->st.max_request_headers_kb) c->st.max_request_headers_kb = RM_H2_DEFAULT_HEADERS_KB;
    if (!c->st.max_headers_count) c->st.max_headers_count = RM_H2_DEFAULT_HEADERS_COUNT;
    if (!c->st.h2_max_concurrent_streams)
        c->st.h2_max_concurrent_streams = RM_H2_DEFAULT_MAX_STREAMS;
    if (!c->st.h2_initial_stream_window)
        c->st.h2_initial_stream_window = RM_H2_DEFAULT_STREAM_WINDOW;
    if (c->st.h2_initial_stream_window > NGHTTP2_MAX_WINDOW_SIZE)
        c->st.h2_initial_stream_window = NGHTTP2_MAX_WINDOW_SIZE;
    if (!c->st.h2_initial_conn_window) c->st.h2_initial_conn_window = RM_H2_DEFAULT_CONN_WINDOW;
    if (c->st.h2_initial_conn_window > NGHTTP2_MAX_WINDOW_SIZE)
        c->st.h2_initial_conn_window = NGHTTP2_MAX_WINDOW_SIZE;
    c->stream_buffer = c->st.buffer_limit ? c->st.buffer_limit : RM_H2_DEFAULT_STREAM_BUFFER;
}

static void set_callbacks(nghttp2_session_callbacks *cbs)
{
    nghttp2_session_callbacks_set_on_begin_frame_callback(cbs, on_begin_frame);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(cbs, on_frame_not_send);
    nghttp2_session_callbacks_set_send_data_callback(cbs, rm_h2_send_data);
    nghttp2_session_callbacks_set_error_callback2(cbs, on_error);
}

/* Under AddressSanitizer nghttp2 keeps plain malloc, so that ASan sees every block it frees
 * (the pool itself is unit-tested). */
static nghttp2_mem *session_mem(void)
{
#if defined(__SANITIZE_ADDRESS__)
    return NULL;
#else
    return &rm_h2_mem;
#endif
}

static int session_new(struct rm_h2_codec *c)
{
    nghttp2_session_callbacks *cbs;
    nghttp2_option *opt;
    int rv = -1;
    if (nghttp2_session_callbacks_new(&cbs) != 0) return -1;
    if (nghttp2_option_new(&opt) != 0) goto fail_cbs;
    set_callbacks(cbs);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_no_closed_streams(opt, 1);
    nghttp2_option_set_peer_max_concurrent_streams(opt, RM_H2_PEER_STREAMS_BEFORE_SETTINGS);
    nghttp2_option_set_no_http_messaging(opt, 1); /* h2_validate.c does these checks */
    nghttp2_mem *mem = session_mem();
    /* the session's long-lived blocks on pages of their own: an idle session keeps one page of
     * them resident instead of ~14 KiB of (often dirty) heap */
    if (mem) rm_h2_mem_region_begin();
    if (c->server)
        rv = nghttp2_session_server_new3(&c->ng, cbs, c, opt, mem);
    else
        rv = nghttp2_session_client_new3(&c->ng, cbs, c, opt, mem);
    if (mem) rm_h2_mem_region_end();
    nghttp2_option_del(opt);
fail_cbs:
    nghttp2_session_callbacks_del(cbs);
    return rv == 0 ? 0 : -1;
}

static int submit_settings(struct rm_h2_codec *c)
{
    nghttp2_settings_entry iv[3];
    size_t n = 0;
    if (c->server)
        iv[n++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS,
                                           c->st.h2_max_concurrent_streams};
    else
        iv[n++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_ENABLE_PUSH, 0};
    iv[n++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE,
                                       c->st.h2_initial_stream_window};
    iv[n++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE,
                                       c->st.max_request_headers_kb * 1024};
    if (nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, n) != 0) return -1;
    if (c->st.h2_initial_conn_window > NGHTTP2_INITIAL_CONNECTION_WINDOW_SIZE &&
        nghttp2_session_set_local_window_size(c->ng, NGHTTP2_FLAG_NONE, 0,
                                              (int32_t)c->st.h2_initial_conn_window) != 0)
        return -1;
    return 0;
}

struct rm_h2_codec *rm_h2_codec_new(struct rm_conn *conn, const struct rm_codec_settings *st,
                                    const struct rm_codec_callbacks *cb, void *user, bool server)
{
    struct rm_h2_codec *c = calloc(1, sizeof(*c));
    if (!c) return NULL;
    c->base.conn = conn;
    c->base.cb = cb;
    c->base.user = user;
    c->base.proto = RM_HTTP2;
    c->loop = conn->loop;
    c->server = server;
    fill_settings(c, st);
    if (session_new(c) != 0) goto fail_codec;
    if (submit_settings(c) != 0) goto fail_session;
    return c;
fail_session:
    nghttp2_session_del(c->ng);
fail_codec:
    free(c);
    return NULL;
}
