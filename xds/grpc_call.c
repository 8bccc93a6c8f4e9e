/* gRPC calls: the state machine, request headers, sending, and the response side (stream
 * events -> messages and a final status).  See grpc.h for the contract, grpc_internal.h for
 * the design. */
#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/core/log.h"
#include "proxy/server/server.h" /* RM_VERSION */
#include "xds/grpc_internal.h"

#define USER_AGENT "remora/" RM_VERSION " grpc-c"

/* ---- state machine ------------------------------------------------------------------------ */

#define BIT(s) (1u << (s))
static const uint8_t legal_next[] = {
    [RM_GRPC_CALL_WAITING] =
        BIT(RM_GRPC_CALL_ACTIVE) | BIT(RM_GRPC_CALL_FINISHED) | BIT(RM_GRPC_CALL_CANCELLED),
    [RM_GRPC_CALL_ACTIVE] = BIT(RM_GRPC_CALL_FINISHED) | BIT(RM_GRPC_CALL_CANCELLED),
    [RM_GRPC_CALL_FINISHED] = BIT(RM_GRPC_CALL_CLOSED) | BIT(RM_GRPC_CALL_CANCELLED),
    [RM_GRPC_CALL_CLOSED] = 0,
    [RM_GRPC_CALL_CANCELLED] = 0,
};

void rm_grpc_call_set_state(struct rm_grpc_call *c, enum rm_grpc_call_state to)
{
    assert(legal_next[c->state] & BIT(to));
    c->state = to;
}

static bool open_state(const struct rm_grpc_call *c)
{
    return c->state == RM_GRPC_CALL_WAITING || c->state == RM_GRPC_CALL_ACTIVE;
}

static bool terminal(const struct rm_grpc_call *c)
{
    return c->state == RM_GRPC_CALL_CLOSED || c->state == RM_GRPC_CALL_CANCELLED;
}

/* ---- lifetime ----------------------------------------------------------------------------- */

static void call_free(struct rm_grpc_call *c)
{
    struct rm_grpc_channel *ch = c->ch;
    if (ch) {
        if (c->prev)
            c->prev->next = c->next;
        else
            ch->calls = c->next;
        if (c->next)
            c->next->prev = c->prev;
        else
            ch->calls_tail = c->prev;
    }
    assert(!c->s && !c->gc && !rm_timer_armed(&c->deadline));
    rm_grpc_deframer_dispose(&c->rx);
    rm_buf_reset(&c->early);
    rm_arena_dispose(&c->arena);
    free(c);
}

/* Let go of the stream, the connection slot and the deadline. */
static void detach(struct rm_grpc_call *c)
{
    rm_timer_stop(c->loop, &c->deadline);
    rm_buf_reset(&c->early);
    if (c->s) {
        struct rm_stream *s = c->s;
        c->s = NULL;
        s->ops->release(s); /* not ended on the wire yet: RST_STREAM(CANCEL) */
    }
    if (c->gc) {
        struct rm_grpc_conn *gc = c->gc;
        c->gc = NULL;
        gc->ncalls--;
        rm_grpc_conn_call_left(gc);
    }
}

static void deliver_writable(struct rm_grpc_call *c)
{
    c->blocked = false;
    if (!c->cb->on_writable) return;
    c->in_cb++;
    c->cb->on_writable(c->ctx);
    c->in_cb--;
}

void rm_grpc_call_deliver_close(struct rm_grpc_call *c)
{
    rm_grpc_call_set_state(c, RM_GRPC_CALL_CLOSED);
    c->in_cb++;
    c->cb->on_close(c->ctx, c->status, c->message);
    c->in_cb--;
}

static void call_task(struct rm_task *t)
{
    struct rm_grpc_call *c = rm_container_of(t, struct rm_grpc_call, task);
    if (c->state == RM_GRPC_CALL_ACTIVE && c->conn_lost) /* on_close did not follow: unusual */
        rm_grpc_call_finish(c, RM_GRPC_UNAVAILABLE, "connection to %s lost",
                            c->ch ? c->ch->target : "?");
    if (c->state == RM_GRPC_CALL_FINISHED)
        rm_grpc_call_deliver_close(c);
    else if (open_state(c) && c->blocked && !rm_grpc_call_write_blocked(c))
        deliver_writable(c);
    if (terminal(c) && !c->task.queued && !c->in_cb) call_free(c);
}

void rm_grpc_call_schedule(struct rm_grpc_call *c)
{
    rm_loop_defer(c->loop, &c->task, call_task);
}

/* End the call with <status> and <msg> (copied, any length). */
static void finish_str(struct rm_grpc_call *c, int status, const char *msg)
{
    if (!open_state(c)) return;
    c->status = status;
    c->message = rm_arena_strndup(&c->arena, msg, strlen(msg));
    detach(c);
    rm_grpc_call_set_state(c, RM_GRPC_CALL_FINISHED);
    if (c->ch) {
        if (status == RM_GRPC_OK)
            c->ch->stats.calls_ok++;
        else
            c->ch->stats.calls_failed++;
    }
    if (status != RM_GRPC_OK)
        rm_log_debug("grpc %s %s: %s (%d): %s", c->ch ? c->ch->target : "?", c->path,
                     rm_grpc_code_name(status), status, c->message);
    rm_grpc_call_schedule(c);
}

void rm_grpc_call_finish(struct rm_grpc_call *c, int status, const char *fmt, ...)
{
    if (!open_state(c)) return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    finish_str(c, status, msg);
}

/* ---- the response ------------------------------------------------------------------------- */

static struct rm_grpc_call *call_of(struct rm_stream *s)
{
    struct rm_grpc_call *c = s->user;
    return c->state == RM_GRPC_CALL_ACTIVE && c->s == s ? c : NULL;
}

static const char *str_dup(struct rm_grpc_call *c, struct rm_str v)
{
    return v.p ? rm_arena_strndup(&c->arena, v.p, v.len) : "";
}

/* No grpc-status anywhere: what the HTTP layer says. */
static void finish_without_status(struct rm_grpc_call *c, const char *what)
{
    const char *t = c->ch ? c->ch->target : "?";
    if (c->http_status <= 0)
        rm_grpc_call_finish(c, RM_GRPC_INTERNAL, "response from %s without a valid :status", t);
    else if (c->http_status != 200)
        rm_grpc_call_finish(c, rm_grpc_status_from_http(c->http_status),
                            "unexpected HTTP status %d from %s", c->http_status, t);
    else if (!c->grpc_ct)
        rm_grpc_call_finish(c, RM_GRPC_UNKNOWN, "response from %s is not gRPC (content-type)", t);
    else
        rm_grpc_call_finish(c, RM_GRPC_INTERNAL, "%s from %s without grpc-status", what, t);
}

/* The block that ends the call: trailers, or the headers of a trailers-only response. */
static void finish_with_block(struct rm_grpc_call *c, const struct rm_headers *h, const char *what)
{
    struct rm_str gs = RM_HDR_GET(h, "grpc-status");
    if (!gs.p) {
        finish_without_status(c, what);
        return;
    }
    int status = rm_grpc_status_parse(gs.p, gs.len);
    if (status < 0) {
        rm_grpc_call_finish(c, RM_GRPC_INTERNAL, "invalid grpc-status \"%s\"", str_dup(c, gs));
        return;
    }
    size_t partial = rm_grpc_deframer_partial(&c->rx);
    if (status == RM_GRPC_OK && partial) {
        rm_grpc_call_finish(c, RM_GRPC_INTERNAL, "stream ended inside a message (%zu bytes)",
                            partial);
        return;
    }
    struct rm_str gm = RM_HDR_GET(h, "grpc-message");
    char *m = rm_arena_alloc(&c->arena, gm.len + 1);
    rm_grpc_message_decode(gm.p ? gm.p : "", gm.len, m);
    finish_str(c, status, m);
}

static void on_stream_headers(struct rm_stream *s, struct rm_headers *h, bool end)
{
    struct rm_grpc_call *c = call_of(s);
    if (!c) return;
    struct rm_str st = RM_HDR_GET(h, ":status");
    int status = st.p ? (int)rm_parse_u63(st.p, st.len) : -1;
    if (status >= 100 && status < 200) return; /* informational */
    struct rm_str ct = RM_HDR_GET(h, "content-type");
    c->headers_seen = true;
    c->http_status = status;
    c->grpc_ct = ct.p && rm_grpc_content_type_ok(ct.p, ct.len);
    if (end) {
        finish_with_block(c, h, "trailers-only response");
        return;
    }
    if (status != 200 || !c->grpc_ct) finish_without_status(c, "response"); /* as grpc-go */
}

static void deframe_failed(struct rm_grpc_call *c, int r)
{
    if (r == RM_GRPC_DEFRAME_TOO_LARGE)
        rm_grpc_call_finish(c, RM_GRPC_RESOURCE_EXHAUSTED,
                            "received message larger than max (%u vs. %u)", c->rx.bad_len,
                            c->rx.max);
    else if (r == RM_GRPC_DEFRAME_COMPRESSED)
        rm_grpc_call_finish(c, RM_GRPC_INTERNAL,
                            "compressed message received, but no grpc-encoding was negotiated");
    else
        rm_grpc_call_finish(c, RM_GRPC_INTERNAL, "invalid message flags 0x%02x", c->rx.bad_flag);
}

static void on_stream_data(struct rm_stream *s, const uint8_t *p, size_t n, bool end)
{
    struct rm_grpc_call *c = call_of(s);
    if (!c) return;
    if (!c->headers_seen) {
        rm_grpc_call_finish(c, RM_GRPC_INTERNAL, "DATA before response headers");
        return;
    }
    const uint8_t *msg;
    size_t len;
    int r;
    while ((r = rm_grpc_deframe(&c->rx, &p, &n, &msg, &len)) == RM_GRPC_DEFRAME_MSG) {
        c->in_cb++;
        c->cb->on_message(c->ctx, msg, len);
        c->in_cb--;
        if (c->state != RM_GRPC_CALL_ACTIVE) return; /* cancelled or channel freed meanwhile */
    }
    if (r < 0) {
        deframe_failed(c, r);
        return;
    }
    if (end)
        rm_grpc_call_finish(c, RM_GRPC_INTERNAL, "stream from %s ended without trailers",
                            c->ch ? c->ch->target : "?");
}

static void on_stream_trailers(struct rm_stream *s, struct rm_headers *h)
{
    struct rm_grpc_call *c = call_of(s);
    if (c) finish_with_block(c, h, "trailers");
}

static void on_stream_reset(struct rm_stream *s, enum rm_reset_reason reason)
{
    struct rm_grpc_call *c = call_of(s);
    if (!c) return;
    if (reason == RM_RESET_CONNECTION_TERMINATION) {
        /* the connection's on_close comes right after and names the cause */
        c->conn_lost = true;
        c->s = NULL;
        s->ops->release(s);
        rm_grpc_call_schedule(c);
        return;
    }
    rm_grpc_call_finish(c, rm_grpc_status_from_reset(reason), "stream %s by %s",
                        reason == RM_RESET_REFUSED ? "refused" : "reset",
                        c->ch ? c->ch->target : "?");
}

static void on_stream_writable(struct rm_stream *s)
{
    struct rm_grpc_call *c = call_of(s);
    if (c && c->blocked) deliver_writable(c);
}

static const struct rm_stream_events stream_events = {
    .on_headers = on_stream_headers,
    .on_data = on_stream_data,
    .on_trailers = on_stream_trailers,
    .on_reset = on_stream_reset,
    .on_writable = on_stream_writable,
};

/* ---- the request -------------------------------------------------------------------------- */

#define ADD_LIT(h, name, value)                                                                    \
    rm_headers_add_ref((h), name, sizeof(name) - 1, value, strlen(value))

/* The request block in the call's arena.  Strings are referenced, not copied: the HTTP/2
 * codec copies a client block at submit. */
static void build_headers(struct rm_grpc_call *c, struct rm_headers *h)
{
    struct rm_grpc_channel *ch = c->ch;
    rm_headers_init(h, &c->arena);
    ADD_LIT(h, ":method", "POST");
    /* :scheme comes from the transport (http for h2c, https for TLS): the codec adds it */
    ADD_LIT(h, ":path", c->path);
    ADD_LIT(h, ":authority", ch->authority);
    ADD_LIT(h, "content-type", "application/grpc");
    ADD_LIT(h, "te", "trailers");
    ADD_LIT(h, "user-agent", USER_AGENT);
    if (c->deadline_at) {
        uint64_t now = rm_loop_now(c->loop);
        uint64_t left = c->deadline_at > now ? c->deadline_at - now : 1;
        char *v = rm_arena_alloc(&c->arena, RM_GRPC_TIMEOUT_MAX);
        size_t n = rm_grpc_timeout_format(left, v);
        rm_headers_add_ref(h, "grpc-timeout", 12, v, n);
    }
    for (uint32_t i = 0; i < c->md.n; i++) {
        const struct rm_header *e = &c->md.v[i];
        rm_headers_add_ref(h, (const char *)e->name, e->name_len, (const char *)e->value,
                           e->value_len);
    }
}

int rm_grpc_call_activate(struct rm_grpc_call *c, struct rm_grpc_conn *gc)
{
    struct rm_stream *s;
    assert(c->state == RM_GRPC_CALL_WAITING && gc->state == RM_GRPC_CONN_READY);
    if (rm_codec_new_stream(gc->codec, &stream_events, c, &c->arena, &s) != 0) return -1;
    c->s = s;
    c->gc = gc;
    gc->ncalls++;
    rm_grpc_call_set_state(c, RM_GRPC_CALL_ACTIVE);
    struct rm_headers h;
    build_headers(c, &h);
    bool end = c->half_closed && c->early.len == 0;
    int rv = s->ops->submit_headers(s, &h, end);
    if (rv == 0 && !end && (c->early.len || c->half_closed))
        rv = s->ops->submit_data(s, c->early.len ? rm_buf_data(&c->early) : NULL, c->early.len,
                                 c->half_closed);
    rm_buf_reset(&c->early);
    if (rv != 0) {
        rm_grpc_call_finish(c, RM_GRPC_UNAVAILABLE, "could not send the request to %s",
                            c->ch->target);
        return 0;
    }
    rm_grpc_conn_call_joined(gc);
    if (c->blocked && !s->ops->write_blocked(s)) rm_grpc_call_schedule(c); /* on_writable */
    return 0;
}

static void deadline_fired(struct rm_timer *t)
{
    struct rm_grpc_call *c = rm_container_of(t, struct rm_grpc_call, deadline);
    rm_grpc_call_finish(c, RM_GRPC_DEADLINE_EXCEEDED, "Deadline Exceeded");
}

/* Metadata the caller may not set: the protocol's own fields. */
static bool reserved(const struct rm_header *e)
{
    static const char *const names[] = {
        "content-type", "te",         "user-agent",    "grpc-timeout",
        "host",         "connection", "grpc-encoding", "grpc-accept-encoding"};
    if (e->name_len == 0 || e->name[0] == ':') return true;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (e->name_len == strlen(names[i]) && memcmp(e->name, names[i], e->name_len) == 0)
            return true;
    return false;
}

struct rm_grpc_call *rm_grpc_call_start(struct rm_grpc_channel *ch, const char *path,
                                        const struct rm_header *md, size_t n_md,
                                        uint32_t deadline_ms, const struct rm_grpc_call_cb *cb,
                                        void *ctx)
{
    if (!ch || ch->freeing || !path || !cb || !cb->on_close || !cb->on_message) return NULL;
    struct rm_grpc_call *c = calloc(1, sizeof(*c));
    if (!c) return NULL;
    c->ch = ch;
    c->loop = ch->loop;
    c->cb = cb;
    c->ctx = ctx;
    rm_arena_init(&c->arena);
    c->path = rm_arena_strndup(&c->arena, path, strlen(path));
    rm_headers_init(&c->md, &c->arena);
    for (size_t i = 0; i < n_md; i++) {
        if (reserved(&md[i])) continue;
        rm_headers_add(&c->md, (const char *)md[i].name, md[i].name_len, (const char *)md[i].value,
                       md[i].value_len);
    }
    rm_grpc_deframer_init(&c->rx, ch->o.max_recv_msg);
    c->prev = ch->calls_tail;
    if (ch->calls_tail)
        ch->calls_tail->next = c;
    else
        ch->calls = c;
    ch->calls_tail = c;
    ch->stats.calls_started++;
    c->state = RM_GRPC_CALL_WAITING; /* initial */
    if (deadline_ms) {
        c->deadline_at = rm_loop_now(c->loop) + deadline_ms;
        rm_timer_start(c->loop, &c->deadline, deadline_ms, deadline_fired);
    }
    rm_grpc_channel_dispatch(ch);
    return c;
}

/* ---- sending ------------------------------------------------------------------------------ */

static uint32_t buffer_limit(const struct rm_grpc_call *c)
{
    return c->ch ? c->ch->o.call_buffer : RM_GRPC_DEFAULT_CALL_BUFFER;
}

int rm_grpc_call_send(struct rm_grpc_call *c, const uint8_t *msg, size_t len)
{
    if (!c || !open_state(c) || c->half_closed || len > UINT32_MAX) return -1;
    uint8_t pfx[RM_GRPC_PREFIX_LEN];
    rm_grpc_prefix_write(pfx, (uint32_t)len);
    if (c->state == RM_GRPC_CALL_WAITING) {
        rm_buf_append(&c->early, pfx, sizeof(pfx));
        if (len) rm_buf_append(&c->early, msg, len);
        if (c->early.len > buffer_limit(c)) c->blocked = true;
        return 0;
    }
    struct rm_stream *s = c->s;
    if (!s || s->ops->submit_data(s, pfx, sizeof(pfx), false) != 0) return -1;
    if (len && s->ops->submit_data(s, msg, len, false) != 0) return -1;
    if (s->ops->write_blocked(s)) c->blocked = true;
    return 0;
}

int rm_grpc_call_send_pb(struct rm_grpc_call *c, const ProtobufCMessage *m)
{
    if (!c || !open_state(c) || c->half_closed || !c->ch) return -1;
    struct rm_grpc_channel *ch = c->ch;
    size_t n = protobuf_c_message_get_packed_size(m);
    if (n > UINT32_MAX) return -1;
    if (n > ch->scratch_cap) {
        size_t cap = n < 4096 ? 4096 : n;
        uint8_t *p = realloc(ch->scratch, cap);
        if (!p) return -1;
        ch->scratch = p;
        ch->scratch_cap = cap;
    }
    size_t packed = n ? protobuf_c_message_pack(m, ch->scratch) : 0;
    if (packed != n) return -1;
    return rm_grpc_call_send(c, ch->scratch, n);
}

bool rm_grpc_call_write_blocked(const struct rm_grpc_call *c)
{
    if (c->state == RM_GRPC_CALL_WAITING) return c->early.len > buffer_limit(c);
    if (c->state == RM_GRPC_CALL_ACTIVE && c->s) return c->s->ops->write_blocked(c->s);
    return false;
}

void rm_grpc_call_half_close(struct rm_grpc_call *c)
{
    if (!c || !open_state(c) || c->half_closed) return;
    c->half_closed = true;
    if (c->state == RM_GRPC_CALL_ACTIVE && c->s) c->s->ops->submit_data(c->s, NULL, 0, true);
}

void rm_grpc_call_cancel(struct rm_grpc_call *c)
{
    if (!c || terminal(c)) return;
    bool was_open = open_state(c);
    detach(c);
    rm_grpc_call_set_state(c, RM_GRPC_CALL_CANCELLED);
    if (was_open && c->ch) c->ch->stats.calls_failed++;
    rm_grpc_call_schedule(c);
}
