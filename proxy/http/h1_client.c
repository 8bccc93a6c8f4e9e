/* HTTP/1.1 codec, client side (upstream, used by the connection pool): one request at a time
 * (no pipelining upstream).  See codec.h for the contract and h1_codec_internal.h for the model.
 *
 * Choices worth knowing:
 *  - 1xx responses (not 101) reach the user as informational on_headers(end_stream=false); a
 *    101 is a protocol error (we never ask for an upgrade: Upgrade is hop-by-hop).
 *  - A response that will not let the connection be reused (Connection: close, HTTP/1.0
 *    without keep-alive, close-delimited body) raises cb->on_goaway before its on_headers; the
 *    connection closes when the exchange ends, and cb->on_close reports it.
 *  - When the exchange ends with the connection reusable, cb->on_idle runs from a deferred
 *    task (never inside a submit or an event).
 *  - Bytes from the upstream while no request is in flight are a protocol error: the
 *    connection closes (cb->on_close). */
#include <string.h>

#include "proxy/core/log.h"
#include "proxy/http/h1_codec_internal.h"

/* ---- response parsing ---------------------------------------------------------------------- */

static int on_message_begin(llhttp_t *p)
{
    struct rm_h1_codec *c = p->data;
    struct rm_h1_stream *hs = c->cur;
    if (!hs) return 1; /* a response nobody asked for */
    rm_headers_init(&hs->head, hs->s.arena);
    rm_headers_add_ref_key(&hs->head, RM_HK_OTHER, "", 0, "", 0); /* :status slot */
    rm_h1_acc_begin(c, &hs->head, true);
    return 0;
}

/* The response will not let the connection carry another request. */
static void goaway(struct rm_h1_codec *c)
{
    if (c->state == RM_H1_ACTIVE) rm_h1_set_state(c, RM_H1_DRAINING);
    if (!c->goaway_sent) {
        c->goaway_sent = true;
        if (c->base.cb->on_goaway) c->base.cb->on_goaway(c->base.user);
    }
}

/* Returns 1 for a response without a body whatever its headers say (HEAD, 1xx, 204, 304). */
static int on_headers_complete(llhttp_t *p)
{
    struct rm_h1_codec *c = p->data;
    struct rm_h1_stream *hs = c->cur;
    rm_h1_acc_end(c);
    unsigned status = p->status_code;
    if (p->http_major != 1 || p->http_minor > 1 || status < 100 || status > 999 || status == 101)
        return -1; /* fails the message (HPE_CB_HEADERS_COMPLETE) */
    rm_h1_clean_block(c, &hs->head, 1, 0, NULL);
    char *sv = rm_arena_alloc(hs->s.arena, 4);
    sv[0] = (char)('0' + status / 100);
    sv[1] = (char)('0' + status / 10 % 10);
    sv[2] = (char)('0' + status % 10);
    sv[3] = 0;
    rm_headers_put_known(&hs->head, 0, RM_HK_STATUS, sv, 3);
    if (status < 200) { /* informational: the final response follows (on_message_complete
                         * pauses if the user paused) */
        if (rm_h1_stream_live(hs)) hs->s.ev->on_headers(&hs->s, &hs->head, false);
        return 1;
    }
    hs->s.proto = p->http_minor == 0 ? RM_HTTP10 : RM_HTTP11;
    bool skip = hs->head_method || status == 204 || status == 304;
    bool chunked = p->flags & F_CHUNKED;
    bool has_length = p->flags & F_CONTENT_LENGTH;
    bool eof_body = !skip && !chunked && !has_length;
    bool keep = p->http_minor == 1 ? !(p->flags & F_CONNECTION_CLOSE)
                                   : (p->flags & F_CONNECTION_KEEP_ALIVE) != 0;
    if (!keep || eof_body) goaway(c);
    if (c->cur != hs) return rm_h1_check_parse(c); /* the pool closed us from on_goaway */
    bool end = skip || (!chunked && has_length && p->content_length == 0);
    rm_h1_set_half(&hs->rx, end ? RM_H1_HALF_END : RM_H1_HALF_BODY);
    if (rm_h1_stream_live(hs)) hs->s.ev->on_headers(&hs->s, &hs->head, end);
    if (end && c->cur == hs) rm_h1_maybe_exchange_done(c);
    /* a body-less response ends at once: on_message_complete pauses (1 can't say both) */
    if (skip) return 1;
    return rm_h1_check_parse(c);
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    struct rm_h1_codec *c = p->data;
    struct rm_h1_stream *hs = c->cur;
    if (!hs) return 0;
    /* llhttp has already counted these bytes off content_length; a close-delimited body (no
     * length, not chunked) ends at EOF only */
    bool end =
        (p->flags & (F_CHUNKED | F_CONTENT_LENGTH)) == F_CONTENT_LENGTH && p->content_length == 0;
    if (end) rm_h1_set_half(&hs->rx, RM_H1_HALF_END);
    if (rm_h1_stream_live(hs)) hs->s.ev->on_data(&hs->s, (const uint8_t *)at, n, end);
    if (end && c->cur == hs) rm_h1_maybe_exchange_done(c);
    /* at the end, on_message_complete follows in this same execute and pauses (pausing here
     * would leave it for the next one, with c->cur already gone) */
    return end ? 0 : rm_h1_check_parse(c);
}

static int on_chunk_header(llhttp_t *p)
{
    struct rm_h1_codec *c = p->data;
    struct rm_h1_stream *hs = c->cur;
    if (hs && p->content_length == 0) { /* last chunk: trailers may follow */
        rm_headers_init(&hs->trailers, hs->s.arena);
        rm_h1_acc_begin(c, &hs->trailers, false);
    }
    return 0;
}

/* Returns HPE_PAUSED after a final response (one exchange at a time); after an informational
 * one, HPE_PAUSED only if the user paused reading. */
static int on_message_complete(llhttp_t *p)
{
    struct rm_h1_codec *c = p->data;
    struct rm_h1_stream *hs = c->cur;
    if (hs && p->status_code < 200) return rm_h1_check_parse(c); /* the final response follows */
    if (!hs) return HPE_PAUSED;
    if (hs->rx != RM_H1_HALF_END) {
        rm_h1_acc_end(c);
        rm_h1_deliver_end(c, hs);
    }
    if (c->cur == hs) rm_h1_maybe_exchange_done(c);
    return HPE_PAUSED;
}

static const llhttp_settings_t parser_settings = {
    .on_message_begin = on_message_begin,
    .on_header_field = rm_h1_on_header_field,
    .on_header_field_complete = rm_h1_on_header_field_complete,
    .on_header_value = rm_h1_on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
    .on_chunk_header = on_chunk_header,
};

static size_t conn_on_data(struct rm_conn *conn, const uint8_t *data, size_t n)
{
    struct rm_h1_codec *c = conn->owner;
    size_t off = 0;
    unsigned stalls = 0;
    c->in_parse = true;
    while (off < n && rm_h1_can_parse(c)) {
        llhttp_errno_t e;
        size_t k = rm_h1_execute(c, data + off, n - off, &e);
        off += k;
        if (c->state == RM_H1_CLOSED) break;
        if (e != HPE_OK) {
            const char *why = llhttp_get_error_reason(&c->parser);
            rm_log_debug("h1: bad response from upstream (%s: %s)", llhttp_errno_name(e),
                         why ? why : "");
            rm_h1_close(c, RM_H1_CLOSE_NOW, true, 0, RM_RESET_PROTOCOL);
            break;
        }
        if (k == 0 && ++stalls > 1) break; /* defensive: no progress twice: wait for input */
    }
    c->in_parse = false;
    rm_h1_update_reading(c);
    return off;
}

static void conn_on_close(struct rm_conn *conn, int err)
{
    struct rm_h1_codec *c = conn->owner;
    struct rm_h1_stream *hs = c->cur;
    c->base.conn = NULL; /* the conn frees itself */
    if (hs && err == 0 && hs->rx == RM_H1_HALF_BODY) {
        /* EOF ends a close-delimited body (anything else is an error: reset below) */
        c->in_parse = true;
        llhttp_finish(&c->parser);
        c->in_parse = false;
    }
    rm_h1_close(c, RM_H1_CLOSE_NOW, true, err, RM_RESET_CONNECTION_TERMINATION);
}

static const struct rm_conn_handler conn_handler = {
    .on_connected = rm_h1_conn_on_connected,
    .on_data = conn_on_data,
    .on_drained = rm_h1_conn_on_drained,
    .on_close = conn_on_close,
};

/* ---- requests ------------------------------------------------------------------------------ */

#define LIT(dst, s) (memcpy((dst), (s), sizeof(s) - 1), (dst) + sizeof(s) - 1)

/* Methods whose empty body is announced with content-length: 0 (servers may insist, 411). */
static bool wants_length(struct rm_str m)
{
    return rm_str_eq(m, "POST", 4) || rm_str_eq(m, "PUT", 3) || rm_str_eq(m, "PATCH", 5);
}

/* Room a request head keeps after its header lines: the longest framing line and the blank
 * line. */
#define REQ_TAIL_MAX (sizeof("transfer-encoding: chunked\r\n") - 1 + 2)

/* "METHOD target HTTP/1.1\r\n", then "host: authority\r\n" when there is an :authority. */
static char *put_request_line(char *e, struct rm_str method, struct rm_str target,
                              struct rm_str auth)
{
    memcpy(e, method.p, method.len);
    e += method.len;
    *e++ = ' ';
    memcpy(e, target.p, target.len);
    e += target.len;
    e = LIT(e, " HTTP/1.1\r\n");
    if (auth.p) {
        e = LIT(e, "host: ");
        memcpy(e, auth.p, auth.len);
        e += auth.len;
        e = LIT(e, "\r\n");
    }
    return e;
}

/* The values of the first :method, :path and :authority of <h> (.p NULL when absent), in one
 * pass: rm_headers_get_key() three times over. */
static void request_pseudo(const struct rm_headers *h, struct rm_str *method, struct rm_str *path,
                           struct rm_str *auth)
{
    *method = *path = *auth = (struct rm_str){NULL, 0};
    unsigned missing = 3;
    for (uint32_t i = 0; i < h->n && missing; i++) {
        const struct rm_header *e = &h->v[i];
        struct rm_str *dst;
        switch (rm_header_key(e)) {
        case RM_HK_METHOD:
            dst = method;
            break;
        case RM_HK_PATH:
            dst = path;
            break;
        case RM_HK_AUTHORITY:
            dst = auth;
            break;
        default:
            continue;
        }
        if (!dst->p) {
            *dst = (struct rm_str){(const char *)e->value, e->value_len};
            missing--;
        }
    }
}

static int submit_headers(struct rm_stream *s, struct rm_headers *h, bool end_stream)
{
    struct rm_h1_stream *hs = (struct rm_h1_stream *)s;
    if (!rm_h1_can_submit(hs) || hs->tx != RM_H1_HALF_HEADERS) return -1;
    struct rm_h1_codec *c = hs->c;
    struct rm_str method, path, auth;
    request_pseudo(h, &method, &path, &auth);
    struct rm_str target = path.p ? path : auth; /* CONNECT: authority-form */
    if (!method.len || !target.len) return -1;
    hs->head_method = rm_str_eq(method, "HEAD", 4);
    uint32_t skip = RM_H1_HC_BIT(RM_H1_HC_HOP) | RM_H1_HC_BIT(RM_H1_HC_CONNECTION);
    if (auth.p) skip |= RM_H1_HC_BIT(RM_H1_HC_HOST); /* written from :authority */
    /* one pass into the stack buffer (the request line, host and the header lines; room is kept
     * for the framing line), two into the arena for a head too big for it */
    size_t line = method.len + 1 + target.len + sizeof(" HTTP/1.1\r\n") - 1 +
                  (auth.p ? sizeof("host: \r\n") - 1 + auth.len : 0);
    char stack[RM_H1_HEAD_STACK];
    char *buf = stack, *e = NULL, *lines_end = NULL;
    const char *lim = stack + sizeof(stack) - REQ_TAIL_MAX;
    int64_t cl;
    if (line <= (size_t)(lim - stack)) {
        e = put_request_line(buf, method, target, auth);
        lines_end = rm_h1_lines_try_put(e, lim, h, skip, &cl);
    }
    if (!lines_end) rm_h1_lines_size(h, skip, &cl);
    if (cl == -2) {
        rm_log_debug("h1: invalid content-length in a request: dropped");
        skip |= RM_H1_HC_BIT(RM_H1_HC_CONTENT_LENGTH);
        cl = -1;
        if (lines_end) lines_end = rm_h1_lines_try_put(e, lim, h, skip, NULL);
    }
    if (!lines_end) {
        buf = rm_arena_alloc(hs->s.arena, line + rm_h1_lines_size(h, skip, NULL) + REQ_TAIL_MAX);
        lines_end = rm_h1_lines_put(put_request_line(buf, method, target, auth), h, skip);
    }
    struct rm_str fl = RM_STR("");
    if (cl >= 0) {
        hs->framing = RM_H1_FRAME_LENGTH;
        hs->out_left = (uint64_t)cl;
    } else if (end_stream) {
        hs->framing = RM_H1_FRAME_NONE;
        if (wants_length(method)) fl = RM_STR("content-length: 0\r\n");
    } else {
        hs->framing = RM_H1_FRAME_CHUNKED;
        fl = RM_STR("transfer-encoding: chunked\r\n");
    }
    e = lines_end;
    memcpy(e, fl.p, fl.len);
    e += fl.len;
    e = LIT(e, "\r\n");
    rm_h1_write(c, buf, (size_t)(e - buf));
    rm_h1_set_half(&hs->tx, RM_H1_HALF_BODY);
    if (end_stream) return rm_h1_submit_data(s, NULL, 0, true);
    return 0;
}

/* ---- codec ops ----------------------------------------------------------------------------- */

static int new_stream(struct rm_codec *base, const struct rm_stream_events *ev, void *user,
                      struct rm_arena *arena, struct rm_stream **out)
{
    struct rm_h1_codec *c = (struct rm_h1_codec *)base;
    if (c->state != RM_H1_IDLE || !c->base.conn) return -1;
    struct rm_h1_stream *hs = rm_h1_stream_new(c);
    hs->s.arena = arena;
    hs->s.ev = ev;
    hs->s.user = user;
    hs->announced = true;
    c->cur = hs;
    rm_h1_set_state(c, RM_H1_ACTIVE);
    *out = &hs->s;
    return 0;
}

static uint32_t available_streams(const struct rm_codec *base)
{
    const struct rm_h1_codec *c = (const struct rm_h1_codec *)base;
    return c->state == RM_H1_IDLE && c->base.conn ? 1 : 0;
}

static void shutdown_codec(struct rm_codec *base)
{
    struct rm_h1_codec *c = (struct rm_h1_codec *)base;
    if (c->state == RM_H1_ACTIVE)
        rm_h1_set_state(c, RM_H1_DRAINING); /* closes when the exchange ends */
    else if (c->state == RM_H1_IDLE)
        rm_h1_close(c, RM_H1_CLOSE_FLUSH, true, 0, RM_RESET_CONNECTION_TERMINATION);
}

static const struct rm_codec_conn_ops client_conn_ops = {
    .name = "http/1.1",
    .new_stream = new_stream,
    .available_streams = available_streams,
    .active_streams = rm_h1_active_streams,
    .shutdown = shutdown_codec,
    .close = rm_h1_codec_close,
};

const struct rm_codec_ops rm_h1_stream_ops_client = {
    .submit_headers = submit_headers,
    .submit_data = rm_h1_submit_data,
    .submit_trailers = rm_h1_submit_trailers,
    .reset = rm_h1_reset,
    .pause_reading = rm_h1_pause_reading,
    .write_blocked = rm_h1_write_blocked,
    .release = rm_h1_release,
};

struct rm_codec *rm_h1_client_new(struct rm_conn *conn, const struct rm_codec_settings *st,
                                  const struct rm_codec_callbacks *cb, void *user)
{
    struct rm_h1_codec *c = rm_h1_codec_alloc(conn, st, cb, user, false, &parser_settings);
    if (!c) return NULL;
    c->base.ops = &client_conn_ops;
    rm_conn_set_handler(conn, &conn_handler, c);
    return &c->base;
}
