/* HTTP/1.1 codec: the parts shared by the server (h1_server.c) and client (h1_client.c) halves —
 * state machines, stream objects and their recycling, closing, header-block accumulation and
 * cleaning, serialisation of header lines, body framing and the common stream ops.
 * See h1_codec_internal.h for the model. */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/core/log.h"
#include "proxy/http/h1_codec_internal.h"

/* ---- state machines ------------------------------------------------------------------------ */

void rm_h1_set_state(struct rm_h1_codec *c, enum rm_h1_state to)
{
    enum rm_h1_state from = c->state;
    bool ok = false;
    switch (to) {
    case RM_H1_IDLE:
        ok = from == RM_H1_ACTIVE;
        break;
    case RM_H1_ACTIVE:
        ok = from == RM_H1_IDLE;
        break;
    case RM_H1_DRAINING:
        ok = from == RM_H1_ACTIVE;
        break;
    case RM_H1_CLOSED:
        ok = from != RM_H1_CLOSED;
        break;
    }
    assert(ok && "h1: illegal connection state transition");
    (void)ok;
    c->state = to;
}

void rm_h1_stream_set_state(struct rm_h1_stream *hs, enum rm_h1_sstate to)
{
    enum rm_h1_sstate from = hs->state;
    bool ok = false;
    switch (to) {
    case RM_H1S_FREE:
        ok = from == RM_H1S_DONE || from == RM_H1S_RESET;
        break;
    case RM_H1S_OPEN:
        ok = from == RM_H1S_FREE;
        break;
    case RM_H1S_DONE:
    case RM_H1S_RESET:
        ok = from == RM_H1S_OPEN;
        break;
    }
    assert(ok && "h1: illegal stream state transition");
    (void)ok;
    hs->state = to;
}

void rm_h1_set_half(enum rm_h1_half *half, enum rm_h1_half to)
{
    assert(to > *half && "h1: a message half only moves forward");
    *half = to;
}

/* ---- streams ------------------------------------------------------------------------------- */

static void stream_unlink(struct rm_h1_codec *c, struct rm_h1_stream *hs)
{
    if (hs->prev)
        hs->prev->next = hs->next;
    else
        c->live = hs->next;
    if (hs->next) hs->next->prev = hs->prev;
    hs->next = hs->prev = NULL;
}

struct rm_h1_stream *rm_h1_stream_new(struct rm_h1_codec *c)
{
    struct rm_h1_stream *hs = c->spare;
    if (hs) {
        c->spare = hs->next;
        c->nspare--;
    } else {
        hs = malloc(sizeof(*hs));
        if (!hs) abort(); /* out of memory on the data path: as rm_arena/rm_buf do */
    }
    memset(hs, 0, sizeof(*hs));
    hs->c = c;
    hs->loop = c->loop;
    rm_arena_init(&hs->own_arena);
    hs->s.ops = c->server ? &rm_h1_stream_ops_server : &rm_h1_stream_ops_client;
    hs->s.arena = &hs->own_arena;
    hs->s.proto = RM_HTTP11;
    hs->s.id = ++c->next_id;
    hs->next = c->live;
    if (c->live) c->live->prev = hs;
    c->live = hs;
    rm_h1_stream_set_state(hs, RM_H1S_OPEN);
    return hs;
}

static void stream_free_task(struct rm_task *t)
{
    struct rm_h1_stream *hs = rm_container_of(t, struct rm_h1_stream, free_task);
    struct rm_h1_codec *c = hs->c;
    rm_arena_dispose(&hs->own_arena);
    rm_h1_stream_set_state(hs, RM_H1S_FREE);
    if (!c) {
        free(hs);
        return;
    }
    stream_unlink(c, hs);
    if (c->nspare >= RM_H1_SPARE_MAX) {
        free(hs);
        return;
    }
    hs->next = c->spare;
    c->spare = hs;
    c->nspare++;
}

void rm_h1_stream_maybe_free(struct rm_h1_stream *hs)
{
    if (hs->released && hs->state != RM_H1S_OPEN && hs->state != RM_H1S_FREE)
        rm_loop_defer(hs->loop, &hs->free_task, stream_free_task);
}

/* ---- codec lifetime ------------------------------------------------------------------------ */

static void codec_free(struct rm_h1_codec *c)
{
    for (struct rm_h1_stream *hs = c->live; hs; hs = hs->next)
        hs->c = NULL; /* outlives us: release() or its queued free_task frees it */
    while (c->spare) {
        struct rm_h1_stream *hs = c->spare;
        c->spare = hs->next;
        free(hs);
    }
    free(c);
}

static void close_task_run(struct rm_task *t)
{
    struct rm_h1_codec *c = rm_container_of(t, struct rm_h1_codec, close_task);
    if (c->notify_close && c->base.cb->on_close) c->base.cb->on_close(c->base.user, c->close_err);
    codec_free(c);
}

struct rm_h1_codec *rm_h1_codec_alloc(struct rm_conn *conn, const struct rm_codec_settings *st,
                                      const struct rm_codec_callbacks *cb, void *user, bool server,
                                      const llhttp_settings_t *ps)
{
    struct rm_h1_codec *c = calloc(1, sizeof(*c));
    if (!c) return NULL;
    c->base.conn = conn;
    c->base.cb = cb;
    c->base.user = user;
    c->base.proto = RM_HTTP11;
    c->loop = conn->loop;
    c->server = server;
    if (st) c->st = *st;
    if (!c->st.max_request_headers_kb) c->st.max_request_headers_kb = RM_H1_DEFAULT_HEADERS_KB;
    if (!c->st.max_headers_count) c->st.max_headers_count = RM_H1_DEFAULT_HEADERS_COUNT;
    if (!c->st.buffer_limit) c->st.buffer_limit = RM_H1_DEFAULT_BUFFER_LIMIT;
    c->max_bytes = (size_t)c->st.max_request_headers_kb * 1024u;
    c->max_count = c->st.max_headers_count;
    /* llhttp's strict defaults (no lenient flags): a proxy must not read a message differently
     * from the next hop (request smuggling); header limits are ours (count_bytes). */
    llhttp_init(&c->parser, server ? HTTP_REQUEST : HTTP_RESPONSE, ps);
    c->parser.data = c;
    c->state = RM_H1_IDLE;
    /* on_drained fires when output falls below half of this: match write_blocked()'s limit */
    conn->high_watermark = c->st.buffer_limit;
    return c;
}

/* Reset the exchange in flight as part of closing the connection. */
static void abort_cur(struct rm_h1_codec *c, enum rm_reset_reason why)
{
    struct rm_h1_stream *hs = c->cur;
    if (!hs) return;
    c->cur = NULL;
    if (hs->state == RM_H1S_OPEN) {
        bool tell = rm_h1_stream_live(hs) && hs->announced;
        rm_h1_stream_set_state(hs, RM_H1S_RESET);
        if (!hs->announced) hs->released = true; /* never handed out: ours to recycle */
        if (tell && hs->s.ev->on_reset) hs->s.ev->on_reset(&hs->s, why);
    }
    rm_h1_stream_maybe_free(hs);
}

void rm_h1_close(struct rm_h1_codec *c, enum rm_h1_close_how how, bool notify, int err,
                 enum rm_reset_reason why)
{
    if (c->state == RM_H1_CLOSED) return;
    struct rm_conn *conn = c->base.conn;
    c->base.conn = NULL;
    rm_timer_stop(c->loop, &c->headers_timer);
    rm_h1_set_state(c, RM_H1_CLOSED);
    c->notify_close = notify;
    c->close_err = err;
    if (conn) {
        if (how == RM_H1_CLOSE_FLUSH)
            rm_conn_close_after_flush(conn);
        else
            rm_conn_close(conn);
    }
    rm_loop_defer(c->loop, &c->close_task, close_task_run);
    abort_cur(c, why);
}

static void idle_task_run(struct rm_task *t)
{
    struct rm_h1_codec *c = rm_container_of(t, struct rm_h1_codec, idle_task);
    if (c->state == RM_H1_IDLE && !c->cur && c->base.cb->on_idle) c->base.cb->on_idle(c->base.user);
}

/* c->cur has finished (both halves, or released after its response): keep-alive or close. */
static void exchange_done(struct rm_h1_codec *c)
{
    struct rm_h1_stream *hs = c->cur;
    c->cur = NULL;
    rm_h1_stream_set_state(hs, RM_H1S_DONE);
    bool reusable = hs->rx == RM_H1_HALF_END && hs->tx == RM_H1_HALF_END;
    rm_h1_stream_maybe_free(hs);
    if (c->state == RM_H1_DRAINING || !reusable) {
        rm_h1_close(c, RM_H1_CLOSE_FLUSH, true, 0, RM_RESET_CONNECTION_TERMINATION);
        return;
    }
    rm_h1_set_state(c, RM_H1_IDLE);
    if (!c->in_parse) rm_h1_update_reading(c);
    if (!c->server) rm_loop_defer(c->loop, &c->idle_task, idle_task_run);
}

void rm_h1_maybe_exchange_done(struct rm_h1_codec *c)
{
    struct rm_h1_stream *hs = c->cur;
    if (hs && hs->rx == RM_H1_HALF_END && hs->tx == RM_H1_HALF_END) exchange_done(c);
}

bool rm_h1_can_parse(const struct rm_h1_codec *c)
{
    if (c->state == RM_H1_CLOSED) return false;
    const struct rm_h1_stream *hs = c->cur;
    if (!hs) return true; /* server: next request; client: notice EOF / stray bytes while idle */
    return hs->rx != RM_H1_HALF_END && !hs->user_paused;
}

void rm_h1_update_reading(struct rm_h1_codec *c)
{
    if (c->base.conn) rm_conn_pause_reading(c->base.conn, !rm_h1_can_parse(c));
}

int rm_h1_check_parse(const struct rm_h1_codec *c)
{
    return rm_h1_can_parse(c) ? 0 : HPE_PAUSED;
}

size_t rm_h1_execute(struct rm_h1_codec *c, const uint8_t *data, size_t n, llhttp_errno_t *err)
{
    const char *start = (const char *)data;
    llhttp_errno_t e = llhttp_execute(&c->parser, start, n);
    *err = HPE_OK;
    if (e == HPE_OK) return n;
    const char *pos = llhttp_get_error_pos(&c->parser);
    size_t k = pos && pos >= start && pos <= start + n ? (size_t)(pos - start) : 0;
    if (e == HPE_PAUSED)
        llhttp_resume(&c->parser);
    else if (e == HPE_PAUSED_UPGRADE) /* Upgrade is hop-by-hop and dropped: parse on as HTTP */
        llhttp_resume_after_upgrade(&c->parser);
    else
        *err = e;
    return k;
}

void rm_h1_conn_on_drained(struct rm_conn *conn)
{
    struct rm_h1_codec *c = conn->owner;
    struct rm_h1_stream *hs = c->cur;
    if (hs && rm_h1_stream_live(hs) && hs->tx != RM_H1_HALF_END && hs->s.ev->on_writable)
        hs->s.ev->on_writable(&hs->s);
}

void rm_h1_conn_on_connected(struct rm_conn *conn, int err)
{
    (void)conn; /* codecs take connected conns: never called */
    (void)err;
}

/* ---- header accumulation ------------------------------------------------------------------- */

const uint8_t rm_h1_hclass_of_key[RM_HK_COUNT] = {
    [RM_HK_TE] = RM_H1_HC_HOP,
    [RM_HK_UPGRADE] = RM_H1_HC_HOP,
    [RM_HK_KEEP_ALIVE] = RM_H1_HC_HOP,
    [RM_HK_PROXY_CONNECTION] = RM_H1_HC_HOP,
    [RM_HK_TRANSFER_ENCODING] = RM_H1_HC_HOP,
    [RM_HK_CONNECTION] = RM_H1_HC_CONNECTION,
    [RM_HK_HOST] = RM_H1_HC_HOST,
    [RM_HK_EXPECT] = RM_H1_HC_EXPECT,
    [RM_HK_CONTENT_LENGTH] = RM_H1_HC_CONTENT_LENGTH,
};

int rm_h1_acc_fail(struct rm_h1_codec *c, uint16_t status)
{
    if (!c->acc.err_status) c->acc.err_status = status;
    return 1;
}

void rm_h1_acc_begin(struct rm_h1_codec *c, struct rm_headers *h, bool new_message)
{
    struct rm_h1_acc *a = &c->acc;
    a->h = h;
    a->seen = 0;
    a->started = a->in_value = a->have_value = false;
    if (new_message) {
        a->url = NULL;
        a->url_len = 0;
        a->bytes = 0;
        a->count = 0;
        a->err_status = 0;
    }
}

void rm_h1_acc_end(struct rm_h1_codec *c)
{
    struct rm_h1_acc *a = &c->acc;
    if (!a->started) return;
    a->started = false;
    struct rm_header *e = &a->h->v[a->h->n - 1];
    if (a->have_value) {
        while (e->value_len &&
               (e->value[e->value_len - 1] == ' ' || e->value[e->value_len - 1] == '\t'))
            e->value_len--;
        e->value[e->value_len] = 0;
    }
    enum rm_hkey k = rm_hkey_of(e->name, e->name_len); /* rm_headers_set_key, inline */
    e->key = (uint8_t)k;
    a->h->have |= RM_HK_BIT(k);
    a->seen |= RM_H1_HC_BIT(rm_h1_hclass_of_key[k]);
}

/* Grow <*p> (arena bytes, *len long, NUL-terminated) by <n> bytes from <src>. */
static uint8_t *extend(struct rm_arena *arena, const uint8_t *old, size_t len, size_t n)
{
    uint8_t *p = rm_arena_alloc(arena, len + n + 1);
    memcpy(p, old, len);
    return p;
}

static int count_bytes(struct rm_h1_codec *c, size_t n)
{
    c->acc.bytes += n;
    return c->acc.bytes > c->max_bytes ? rm_h1_acc_fail(c, 431) : 0;
}

int rm_h1_on_header_field(llhttp_t *p, const char *at, size_t n)
{
    struct rm_h1_codec *c = p->data;
    struct rm_h1_acc *a = &c->acc;
    if (count_bytes(c, n)) return 1;
    struct rm_arena *arena = a->h->arena;
    if (a->started && !a->in_value) { /* the name continues in this read */
        struct rm_header *e = &a->h->v[a->h->n - 1];
        uint8_t *name = extend(arena, e->name, e->name_len, n);
        if (!rm_header_name_lower(name + e->name_len, at, n)) return rm_h1_acc_fail(c, 400);
        e->name = name;
        e->name_len += n;
        name[e->name_len] = 0;
        return 0;
    }
    rm_h1_acc_end(c);
    if (++a->count > c->max_count) return rm_h1_acc_fail(c, 431);
    uint8_t *name = rm_arena_alloc(arena, n + 1);
    if (!rm_header_name_lower(name, at, n)) return rm_h1_acc_fail(c, 400);
    name[n] = 0;
    rm_headers_add_ref_key(a->h, RM_HK_OTHER, (const char *)name, n, "", 0); /* see acc_end */
    a->started = true;
    a->in_value = a->have_value = false;
    return 0;
}

int rm_h1_on_header_field_complete(llhttp_t *p)
{
    struct rm_h1_codec *c = p->data;
    struct rm_h1_acc *a = &c->acc;
    /* no on_header_field since the last value: an empty name (": v") */
    if (!a->started || a->in_value || !a->h->v[a->h->n - 1].name_len) return rm_h1_acc_fail(c, 400);
    a->in_value = true; /* even if no value bytes follow (an empty value) */
    return 0;
}

int rm_h1_on_header_value(llhttp_t *p, const char *at, size_t n)
{
    struct rm_h1_codec *c = p->data;
    struct rm_h1_acc *a = &c->acc;
    if (count_bytes(c, n)) return 1;
    if (!a->started) return rm_h1_acc_fail(c, 400);
    struct rm_header *e = &a->h->v[a->h->n - 1];
    a->in_value = true;
    if (!n) return 0;
    uint8_t *v;
    if (a->have_value) { /* split value, or an obs-fold continuation */
        v = extend(a->h->arena, e->value, e->value_len, n);
    } else {
        v = rm_arena_alloc(a->h->arena, n + 1);
        e->value_len = 0;
    }
    memcpy(v + e->value_len, at, n);
    e->value = v;
    e->value_len += n;
    v[e->value_len] = 0;
    a->have_value = true;
    return 0;
}

/* ---- cleaning a parsed block --------------------------------------------------------------- */

#define MAX_CONN_TOKENS 16

/* Split the Connection header values into tokens (pointers into the values). */
static unsigned connection_tokens(const struct rm_headers *h, uint32_t first, struct rm_str *tok)
{
    unsigned n = 0;
    for (uint32_t i = first; i < h->n; i++) {
        if (rm_header_key(&h->v[i]) != RM_HK_CONNECTION) continue;
        const char *p = (const char *)h->v[i].value, *end = p + h->v[i].value_len;
        while (p < end && n < MAX_CONN_TOKENS) {
            while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
                p++;
            const char *s = p;
            while (p < end && *p != ',' && *p != ' ' && *p != '\t')
                p++;
            if (p > s) tok[n++] = (struct rm_str){s, (size_t)(p - s)};
        }
    }
    return n;
}

static bool named_by_connection(const struct rm_header *e, const struct rm_str *tok, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        if (tok[i].len == e->name_len &&
            strncasecmp(tok[i].p, (const char *)e->name, e->name_len) == 0)
            return true;
    }
    return false;
}

static bool is_100_continue(const struct rm_header *e)
{
    return e->value_len == 12 && strncasecmp((const char *)e->value, "100-continue", 12) == 0;
}

void rm_h1_clean_block(struct rm_h1_codec *c, struct rm_headers *h, uint32_t first, uint32_t drop,
                       struct rm_h1_clean *out)
{
    struct rm_str tok[MAX_CONN_TOKENS];
    unsigned ntok = 0;
    if (c->acc.seen & RM_H1_HC_BIT(RM_H1_HC_CONNECTION)) ntok = connection_tokens(h, first, tok);
    drop |= RM_H1_HC_BIT(RM_H1_HC_HOP) | RM_H1_HC_BIT(RM_H1_HC_CONNECTION);
    if (out) drop |= RM_H1_HC_BIT(RM_H1_HC_HOST) | RM_H1_HC_BIT(RM_H1_HC_EXPECT);
    /* no class to drop or report in the block (the usual response): nothing to do; Connection
     * is in <drop>, so no header is named by one either */
    if (!(c->acc.seen & drop)) return;
    uint32_t j = first;
    for (uint32_t i = first; i < h->n; i++) {
        struct rm_header *e = &h->v[i];
        enum rm_h1_hclass k = rm_h1_hclass(e);
        if (out && k == RM_H1_HC_HOST) {
            if (out->nhost++ == 0)
                out->host = (struct rm_str){(const char *)e->value, e->value_len};
        } else if (out && k == RM_H1_HC_EXPECT) {
            out->expect_continue |= is_100_continue(e);
        }
        if (drop & RM_H1_HC_BIT(k)) continue;
        /* Connection may nominate more hop-by-hop names; never the framing or the target */
        if (ntok && k == RM_H1_HC_OTHER && named_by_connection(e, tok, ntok)) continue;
        if (j != i) h->v[j] = *e;
        j++;
    }
    h->n = j;
}

/* ---- serialisation ------------------------------------------------------------------------- */

char *rm_h1_put_dec(char *dst, uint64_t v)
{
    return dst + rm_fmt_u64(dst, v);
}

static char *put_hex(char *dst, uint64_t v)
{
    static const char hex[] = "0123456789abcdef";
    char tmp[16];
    size_t n = 0;
    do {
        tmp[n++] = hex[v & 15];
        v >>= 4;
    } while (v);
    while (n)
        *dst++ = tmp[--n];
    return dst;
}

/* The next header line to write from index *i on, or NULL at the end: pseudo-headers, empty
 * names, classes in <skip> and repeated content-lengths (written once) are passed over; every
 * content-length value is folded into *cl (may be NULL: -1 none, -2 conflicting). */
static inline __attribute__((always_inline)) const struct rm_header *
next_line(const struct rm_headers *h, uint32_t *i, uint32_t skip, bool *have_cl, int64_t *cl)
{
    for (; *i < h->n; (*i)++) {
        const struct rm_header *e = &h->v[*i];
        if (e->name_len == 0 || e->name[0] == ':') continue;
        enum rm_h1_hclass k = rm_h1_hclass(e);
        if (k == RM_H1_HC_CONTENT_LENGTH) {
            if (cl) {
                int64_t v = rm_parse_u63((const char *)e->value, e->value_len);
                *cl = (*cl == -1 || *cl == v) && v >= 0 ? v : -2;
            }
            if (*have_cl) continue;
            *have_cl = true;
        }
        if (skip & RM_H1_HC_BIT(k)) continue;
        (*i)++;
        return e;
    }
    return NULL;
}

static inline __attribute__((always_inline)) char *put_line(char *dst, const struct rm_header *e)
{
    memcpy(dst, e->name, e->name_len);
    dst += e->name_len;
    *dst++ = ':';
    *dst++ = ' ';
    memcpy(dst, e->value, e->value_len);
    dst += e->value_len;
    *dst++ = '\r';
    *dst++ = '\n';
    return dst;
}

size_t rm_h1_lines_size(const struct rm_headers *h, uint32_t skip, int64_t *cl)
{
    size_t size = 0;
    bool have_cl = false;
    if (cl) *cl = -1;
    const struct rm_header *e;
    for (uint32_t i = 0; (e = next_line(h, &i, skip, &have_cl, cl));)
        size += e->name_len + e->value_len + 4;
    return size;
}

char *rm_h1_lines_put(char *dst, const struct rm_headers *h, uint32_t skip)
{
    bool have_cl = false;
    const struct rm_header *e;
    for (uint32_t i = 0; (e = next_line(h, &i, skip, &have_cl, NULL));)
        dst = put_line(dst, e);
    return dst;
}

char *rm_h1_lines_try_put(char *dst, const char *end, const struct rm_headers *h, uint32_t skip,
                          int64_t *cl)
{
    bool have_cl = false;
    if (cl) *cl = -1;
    const struct rm_header *e;
    for (uint32_t i = 0; (e = next_line(h, &i, skip, &have_cl, cl));) {
        if ((size_t)(end - dst) < e->name_len + e->value_len + 4) return NULL;
        dst = put_line(dst, e);
    }
    return dst;
}

char *rm_h1_head_buf(struct rm_h1_stream *hs, char *stack, size_t n)
{
    return n <= RM_H1_HEAD_STACK ? stack : rm_arena_alloc(hs->s.arena, n);
}

void rm_h1_write(struct rm_h1_codec *c, const void *p, size_t n)
{
    if (c->base.conn && n) rm_conn_write(c->base.conn, p, n);
}

/* ---- common stream ops --------------------------------------------------------------------- */

bool rm_h1_can_submit(const struct rm_h1_stream *hs)
{
    return hs->c && hs->state == RM_H1S_OPEN && !hs->released && hs->c->base.conn;
}

/* The outgoing half ended. */
static void tx_end(struct rm_h1_codec *c, struct rm_h1_stream *hs)
{
    rm_h1_set_half(&hs->tx, RM_H1_HALF_END);
    if (hs->framing == RM_H1_FRAME_LENGTH && hs->out_left && c->state == RM_H1_ACTIVE)
        rm_h1_set_state(c, RM_H1_DRAINING); /* body shorter than announced: can't reuse */
    /* server: the response is complete while the request is still arriving: the rest of it
     * is not read, so this connection can't carry another request */
    if (c->server && hs->rx != RM_H1_HALF_END && c->state == RM_H1_ACTIVE)
        rm_h1_set_state(c, RM_H1_DRAINING);
    rm_h1_maybe_exchange_done(c);
}

int rm_h1_submit_data(struct rm_stream *s, const uint8_t *p, size_t n, bool end_stream)
{
    struct rm_h1_stream *hs = (struct rm_h1_stream *)s;
    if (!rm_h1_can_submit(hs) || hs->tx != RM_H1_HALF_BODY) return -1;
    struct rm_h1_codec *c = hs->c;
    switch (hs->framing) {
    case RM_H1_FRAME_NONE:
        break;
    case RM_H1_FRAME_LENGTH:
        if (n > hs->out_left) {
            rm_log_debug("h1: %zu body bytes beyond content-length dropped", n - hs->out_left);
            n = (size_t)hs->out_left;
        }
        hs->out_left -= n;
        rm_h1_write(c, p, n);
        break;
    case RM_H1_FRAME_CHUNKED:
        if (n) {
            char hdr[24], *e = put_hex(hdr, n);
            *e++ = '\r';
            *e++ = '\n';
            rm_h1_write(c, hdr, (size_t)(e - hdr));
            rm_h1_write(c, p, n);
            if (end_stream) {
                rm_h1_write(c, "\r\n0\r\n\r\n", 7);
            } else {
                rm_h1_write(c, "\r\n", 2);
            }
        } else if (end_stream) {
            rm_h1_write(c, "0\r\n\r\n", 5);
        }
        break;
    case RM_H1_FRAME_EOF:
        rm_h1_write(c, p, n);
        break;
    }
    if (end_stream) tx_end(c, hs);
    return 0;
}

int rm_h1_submit_trailers(struct rm_stream *s, struct rm_headers *h)
{
    struct rm_h1_stream *hs = (struct rm_h1_stream *)s;
    if (!rm_h1_can_submit(hs) || hs->tx != RM_H1_HALF_BODY) return -1;
    struct rm_h1_codec *c = hs->c;
    if (hs->framing == RM_H1_FRAME_CHUNKED) {
        /* framing and routing fields are not allowed in trailers (RFC 9110 6.5.1) */
        uint32_t skip = RM_H1_HC_BIT(RM_H1_HC_HOP) | RM_H1_HC_BIT(RM_H1_HC_CONNECTION) |
                        RM_H1_HC_BIT(RM_H1_HC_CONTENT_LENGTH) | RM_H1_HC_BIT(RM_H1_HC_HOST);
        char stack[RM_H1_HEAD_STACK];
        size_t size = 3 + rm_h1_lines_size(h, skip, NULL) + 2;
        char *buf = rm_h1_head_buf(hs, stack, size), *e = buf;
        memcpy(e, "0\r\n", 3);
        e = rm_h1_lines_put(e + 3, h, skip);
        *e++ = '\r';
        *e++ = '\n';
        rm_h1_write(c, buf, (size_t)(e - buf));
    }
    tx_end(c, hs);
    return 0;
}

void rm_h1_reset(struct rm_stream *s, enum rm_reset_reason reason)
{
    struct rm_h1_stream *hs = (struct rm_h1_stream *)s;
    struct rm_h1_codec *c = hs->c;
    if (!c || hs->state != RM_H1S_OPEN) return;
    rm_log_debug("h1: stream %d reset locally (%s): closing the connection", (int)s->id,
                 rm_reset_reason_str(reason));
    /* HTTP/1.1 has no stream reset: the connection can't be reused mid-exchange */
    rm_h1_stream_set_state(hs, RM_H1S_RESET);
    rm_h1_close(c, RM_H1_CLOSE_NOW, true, 0, reason);
}

void rm_h1_pause_reading(struct rm_stream *s, bool paused)
{
    struct rm_h1_stream *hs = (struct rm_h1_stream *)s;
    hs->user_paused = paused;
    struct rm_h1_codec *c = hs->c;
    if (!c || c->cur != hs) return;
    /* inside the parser, the callback that delivered the event pauses it on return */
    if (!c->in_parse) rm_h1_update_reading(c);
}

bool rm_h1_write_blocked(const struct rm_stream *s)
{
    const struct rm_h1_stream *hs = (const struct rm_h1_stream *)s;
    const struct rm_h1_codec *c = hs->c;
    return c && c->base.conn && rm_conn_pending(c->base.conn) > c->st.buffer_limit;
}

void rm_h1_release(struct rm_stream *s)
{
    struct rm_h1_stream *hs = (struct rm_h1_stream *)s;
    assert(!hs->released && "h1: stream released twice");
    hs->released = true;
    struct rm_h1_codec *c = hs->c;
    if (c && hs->state == RM_H1S_OPEN) {
        assert(c->cur == hs);
        if (hs->rx == RM_H1_HALF_END && hs->tx == RM_H1_HALF_END) {
            /* released from inside the callback that delivered the end of the incoming
             * message: the exchange is complete (exchange_done has not run yet), keep the
             * connection */
            exchange_done(c);
        } else if (c->server && hs->tx == RM_H1_HALF_END) {
            /* response complete, request body no longer wanted: finish, then close (the rest of
             * the request is never read) */
            if (c->state == RM_H1_ACTIVE) rm_h1_set_state(c, RM_H1_DRAINING);
            exchange_done(c);
        } else {
            rm_h1_close(c, RM_H1_CLOSE_NOW, true, 0, RM_RESET_LOCAL);
        }
    }
    rm_h1_stream_maybe_free(hs);
}

void rm_h1_deliver_end(struct rm_h1_codec *c, struct rm_h1_stream *hs)
{
    rm_h1_set_half(&hs->rx, RM_H1_HALF_END);
    if (!rm_h1_stream_live(hs)) return;
    if (hs->trailers.n) {
        uint32_t drop = RM_H1_HC_BIT(RM_H1_HC_CONTENT_LENGTH) | RM_H1_HC_BIT(RM_H1_HC_HOST);
        rm_h1_clean_block(c, &hs->trailers, 0, drop, NULL);
    }
    if (hs->trailers.n && hs->s.ev->on_trailers)
        hs->s.ev->on_trailers(&hs->s, &hs->trailers);
    else
        hs->s.ev->on_data(&hs->s, (const uint8_t *)"", 0, true);
}

/* ---- common codec ops ---------------------------------------------------------------------- */

uint32_t rm_h1_active_streams(const struct rm_codec *base)
{
    const struct rm_h1_codec *c = (const struct rm_h1_codec *)base;
    return c->cur && c->cur->announced ? 1 : 0;
}

void rm_h1_codec_close(struct rm_codec *base)
{
    struct rm_h1_codec *c = (struct rm_h1_codec *)base;
    rm_h1_close(c, RM_H1_CLOSE_NOW, false, 0, RM_RESET_CONNECTION_TERMINATION);
}
