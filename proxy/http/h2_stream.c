/* HTTP/2 streams: the object, its state machine, the user-facing ops (struct rm_codec_ops) and
 * the DATA path in both directions.  See h2_internal.h for the design. */
#include <assert.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proxy/core/log.h"
#include "proxy/http/h2_internal.h"

/* A header block goes to nghttp2 as it is: struct rm_header must stay nghttp2_nv. */
_Static_assert(sizeof(struct rm_header) == sizeof(nghttp2_nv), "rm_header size != nghttp2_nv");
_Static_assert(offsetof(struct rm_header, name) == offsetof(nghttp2_nv, name), "name");
_Static_assert(offsetof(struct rm_header, value) == offsetof(nghttp2_nv, value), "value");
_Static_assert(offsetof(struct rm_header, name_len) == offsetof(nghttp2_nv, namelen), "namelen");
_Static_assert(offsetof(struct rm_header, value_len) == offsetof(nghttp2_nv, valuelen), "valuelen");
_Static_assert(offsetof(struct rm_header, flags) == offsetof(nghttp2_nv, flags), "flags");

#define NV_NO_COPY (NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE)

/* ---- state machine ------------------------------------------------------------------------ */

#define BIT(s) (1u << (s))
static const uint8_t legal_next[] = {
    [RM_H2_FREE] = BIT(RM_H2_IDLE),
    [RM_H2_IDLE] = BIT(RM_H2_OPEN) | BIT(RM_H2_HALF_CLOSED_LOCAL) | BIT(RM_H2_HALF_CLOSED_REMOTE) |
                   BIT(RM_H2_RESET),
    [RM_H2_OPEN] = BIT(RM_H2_HALF_CLOSED_LOCAL) | BIT(RM_H2_HALF_CLOSED_REMOTE) | BIT(RM_H2_RESET),
    [RM_H2_HALF_CLOSED_LOCAL] = BIT(RM_H2_CLOSED) | BIT(RM_H2_RESET),
    [RM_H2_HALF_CLOSED_REMOTE] = BIT(RM_H2_CLOSED) | BIT(RM_H2_RESET),
    [RM_H2_CLOSED] = BIT(RM_H2_FREE),
    [RM_H2_RESET] = BIT(RM_H2_FREE),
};

void rm_h2_set_state(struct rm_h2_stream *hs, enum rm_h2_state to)
{
    assert(legal_next[hs->state] & BIT(to));
    hs->state = to;
}

/* Terminal now: leave the active count and, if the user is done with it, get recycled. */
static void settle(struct rm_h2_stream *hs)
{
    rm_h2_maybe_retire(hs);
    rm_h2_maybe_reap(hs);
}

/* We submitted END_STREAM (headers, data or trailers). */
static void local_end(struct rm_h2_stream *hs)
{
    if (hs->state == RM_H2_HALF_CLOSED_REMOTE) {
        rm_h2_set_state(hs, RM_H2_CLOSED);
        settle(hs);
    } else {
        rm_h2_set_state(hs, RM_H2_HALF_CLOSED_LOCAL);
    }
}

void rm_h2_remote_end(struct rm_h2_stream *hs)
{
    if (hs->state == RM_H2_HALF_CLOSED_LOCAL) {
        rm_h2_set_state(hs, RM_H2_CLOSED);
        settle(hs);
    } else {
        rm_h2_set_state(hs, RM_H2_HALF_CLOSED_REMOTE);
    }
}

/* ---- allocation and recycling ------------------------------------------------------------- */

struct rm_h2_stream *rm_h2_stream_alloc(struct rm_h2_codec *c)
{
    struct rm_h2_stream *hs = c->free_list;
    if (hs) {
        c->free_list = hs->next;
        c->nfree--;
        memset(hs, 0, sizeof(*hs));
    } else if (!(hs = calloc(1, sizeof(*hs)))) {
        return NULL;
    }
    hs->codec = c;
    rm_h2v_init(hs);
    hs->base.ops = &rm_h2_stream_ops;
    hs->base.proto = RM_HTTP2;
    rm_arena_init(&hs->own);
    hs->base.arena = &hs->own;
    hs->next = c->streams;
    if (c->streams) c->streams->prev = hs;
    c->streams = hs;
    c->nalloc++;
    c->active++;
    hs->counted = true;
    rm_h2_set_state(hs, RM_H2_IDLE);
    return hs;
}

static void recycle(struct rm_h2_codec *c, struct rm_h2_stream *hs)
{
    assert(!hs->in_writable && !hs->in_resume && !hs->ng_open && !hs->counted);
    if (c->rx_hs == hs) c->rx_hs = NULL;
    struct rm_h2_stream **slot = rm_h2_id_slot(c, hs->base.id);
    if (*slot == hs) *slot = NULL;
    rm_timer_stop(c->loop, &hs->headers_timer);
    if (hs->prev)
        hs->prev->next = hs->next;
    else
        c->streams = hs->next;
    if (hs->next) hs->next->prev = hs->prev;
    rm_arena_dispose(&hs->own);
    rm_buf_reset(&hs->out);
    rm_buf_reset(&hs->held);
    rm_h2_set_state(hs, RM_H2_FREE);
    c->nalloc--;
    if (c->finished || c->nfree >= RM_H2_FREE_STREAMS_MAX) {
        free(hs);
        return;
    }
    hs->prev = NULL;
    hs->next = c->free_list;
    c->free_list = hs;
    c->nfree++;
}

void rm_h2_reap(struct rm_h2_codec *c)
{
    struct rm_h2_stream *hs;
    while ((hs = c->reap)) {
        c->reap = hs->reap_next;
        recycle(c, hs);
    }
}

void rm_h2_maybe_retire(struct rm_h2_stream *hs)
{
    struct rm_h2_codec *c = hs->codec;
    if (!hs->counted || hs->ng_open || !rm_h2_terminal(hs)) return;
    hs->counted = false;
    c->active--;
    if (c->active == 0 && !c->finished) { /* on_idle (client), drained-connection check */
        c->idle_pending = !c->server;
        rm_h2_schedule(c);
    }
}

void rm_h2_maybe_reap(struct rm_h2_stream *hs)
{
    struct rm_h2_codec *c = hs->codec;
    if (hs->in_reap || hs->ng_open || !rm_h2_terminal(hs) || (hs->attached && !hs->released))
        return;
    hs->in_reap = true;
    hs->reap_next = c->reap;
    c->reap = hs;
    rm_h2_schedule(c);
}

/* ---- aborting and closing ----------------------------------------------------------------- */

static void drop_output(struct rm_h2_stream *hs)
{
    rm_buf_reset(&hs->out);
    hs->out_end = false;
    hs->trailers = NULL;
    hs->ntrailers = 0;
    hs->blocked = false;
}

/* Forget held input and give its window (and what was delivered while paused) back. */
static void drop_input(struct rm_h2_stream *hs)
{
    size_t n = hs->held.len + hs->unconsumed;
    rm_buf_reset(&hs->held);
    hs->unconsumed = 0;
    hs->held_trailers = NULL;
    hs->held_end = false;
    rm_h2_consume(hs, n);
}

void rm_h2_stream_abort(struct rm_h2_stream *hs, enum rm_reset_reason reason, int code, bool notify)
{
    struct rm_h2_codec *c = hs->codec;
    if (rm_h2_terminal(hs)) return;
    bool tell = notify && rm_h2_deliverable(hs) && hs->base.ev && hs->base.ev->on_reset;
    rm_h2_set_state(hs, RM_H2_RESET);
    drop_output(hs);
    drop_input(hs);
    hs->in = NULL;
    if (code >= 0 && hs->ng_open && c->ng && !c->finished) {
        nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, hs->base.id, (uint32_t)code);
        rm_h2_event(c, RM_CODEC_EV_TX_RESET);
        rm_h2_want_flush(c);
    }
    settle(hs);
    if (tell) hs->base.ev->on_reset(&hs->base, reason);
}

void rm_h2_stream_closed(struct rm_h2_stream *hs, uint32_t error_code)
{
    if (!hs->ng_open) return;
    hs->ng_open = false;
    drop_output(hs);
    if (!rm_h2_terminal(hs)) {
        /* Closed cleanly with the peer's END_STREAM still held for a paused user: keep the
         * stream so that resume() delivers it. */
        if (error_code == NGHTTP2_NO_ERROR && hs->remote_end_seen && rm_h2_deliverable(hs)) return;
        enum rm_reset_reason r = RM_RESET_PROTOCOL;
        if (hs->overflow)
            r = RM_RESET_OVERFLOW;
        else if (error_code == NGHTTP2_REFUSED_STREAM)
            r = RM_RESET_REFUSED;
        else if (error_code == NGHTTP2_NO_ERROR || error_code == NGHTTP2_CANCEL)
            r = RM_RESET_REMOTE;
        rm_h2_stream_abort(hs, r, -1, true);
        return;
    }
    settle(hs);
}

uint32_t rm_h2_error_code(enum rm_reset_reason r)
{
    switch (r) {
    case RM_RESET_REFUSED:
        return NGHTTP2_REFUSED_STREAM;
    case RM_RESET_PROTOCOL:
        return NGHTTP2_PROTOCOL_ERROR;
    case RM_RESET_OVERFLOW:
        return NGHTTP2_ENHANCE_YOUR_CALM;
    default:
        return NGHTTP2_CANCEL;
    }
}

/* ---- incoming DATA ------------------------------------------------------------------------ */

void rm_h2_consume(struct rm_h2_stream *hs, size_t n)
{
    struct rm_h2_codec *c = hs->codec;
    if (!n || !c->ng || c->finished || hs->base.id <= 0) return;
    nghttp2_session_consume(c->ng, hs->base.id, n);
    rm_h2_want_flush(c);
}

/* The user had <n> bytes: return the window now, or later if it paused meanwhile. */
static void after_delivery(struct rm_h2_stream *hs, size_t n)
{
    if (hs->paused && !rm_h2_terminal(hs) && !hs->released)
        hs->unconsumed += n;
    else
        rm_h2_consume(hs, n);
}

static bool holding(const struct rm_h2_stream *hs)
{
    return hs->paused || hs->held.len || hs->held_end;
}

void rm_h2_deliver_data(struct rm_h2_stream *hs, const uint8_t *p, size_t n, bool end)
{
    if (end) hs->remote_end_seen = true;
    if (!rm_h2_deliverable(hs)) {
        rm_h2_consume(hs, n);
        return;
    }
    if (holding(hs)) {
        if (n) rm_buf_append(&hs->held, p, n);
        hs->held_end |= end;
        return;
    }
    if (end) rm_h2_remote_end(hs);
    hs->base.ev->on_data(&hs->base, p, n, end);
    if (n) after_delivery(hs, n);
}

static void trailers_to_user(struct rm_h2_stream *hs, struct rm_headers *h)
{
    rm_h2_remote_end(hs);
    if (hs->base.ev->on_trailers)
        hs->base.ev->on_trailers(&hs->base, h);
    else
        hs->base.ev->on_data(&hs->base, NULL, 0, true);
}

void rm_h2_deliver_trailers(struct rm_h2_stream *hs, struct rm_headers *h)
{
    hs->remote_end_seen = true;
    if (!rm_h2_deliverable(hs)) return;
    if (holding(hs)) {
        hs->held_trailers = h;
        hs->held_end = true;
        return;
    }
    trailers_to_user(hs, h);
}

void rm_h2_deliver_held(struct rm_h2_stream *hs)
{
    if (hs->paused || !rm_h2_deliverable(hs)) return;
    bool end = hs->held_end && !hs->held_trailers;
    if (hs->held.len || end) {
        struct rm_buf b = hs->held; /* the user may reset (and drop .held) from on_data */
        hs->held = (struct rm_buf)RM_BUF_INIT;
        if (end) {
            hs->held_end = false;
            rm_h2_remote_end(hs);
        }
        size_t n = b.len;
        hs->base.ev->on_data(&hs->base, n ? rm_buf_data(&b) : NULL, n, end);
        rm_buf_reset(&b);
        if (n) after_delivery(hs, n);
    }
    if (hs->held_trailers && !hs->paused && rm_h2_deliverable(hs)) {
        struct rm_headers *h = hs->held_trailers;
        hs->held_trailers = NULL;
        hs->held_end = false;
        trailers_to_user(hs, h);
    }
}

/* ---- outgoing DATA: provider with NO_COPY, framed straight into the conn ------------------- */

ssize_t rm_h2_data_read(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                        uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    struct rm_h2_stream *hs = src->ptr;
    size_t n = hs->out.len < length ? hs->out.len : length;
    if (n == 0 && !hs->out_end) {
        hs->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (n == hs->out.len && hs->out_end) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (hs->trailers) {
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            int rv = nghttp2_submit_trailer(ng, id, hs->trailers, hs->ntrailers);
            hs->trailers = NULL;
            hs->ntrailers = 0;
            if (rv != 0) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
    }
    return (ssize_t)n;
}

int rm_h2_send_data(nghttp2_session *ng, nghttp2_frame *frame, const uint8_t *framehd,
                    size_t length, nghttp2_data_source *src, void *ud)
{
    struct rm_h2_codec *c = ud;
    struct rm_h2_stream *hs = src->ptr;
    if (c->finished) return NGHTTP2_ERR_CALLBACK_FAILURE;
    assert(frame->data.padlen == 0 && length <= hs->out.len);
    rm_h2_out_append(c, framehd, 9, length ? rm_buf_data(&hs->out) : NULL, length);
    rm_buf_consume(&hs->out, length);
    if (hs->blocked && !hs->in_writable && hs->out.len <= c->stream_buffer / 2) {
        hs->in_writable = true;
        hs->writable_next = c->writable;
        c->writable = hs;
    }
    return 0;
}

void rm_h2_fire_writable(struct rm_h2_codec *c)
{
    struct rm_h2_stream *hs;
    while (!c->finished && (hs = c->writable)) {
        c->writable = hs->writable_next;
        hs->in_writable = false;
        if (!hs->blocked || hs->out.len > c->stream_buffer / 2) continue;
        hs->blocked = false;
        if (rm_h2_deliverable(hs) && hs->base.ev->on_writable) hs->base.ev->on_writable(&hs->base);
    }
}

/* ---- header blocks out -------------------------------------------------------------------- */

/* Connection-specific fields never go into HTTP/2 (RFC 9113 8.2.2), except "te: trailers";
 * in requests, host is dropped (it becomes :authority when that is missing).  <k> is e's key. */
static bool skip_header(const struct rm_header *e, enum rm_hkey k, bool request)
{
    switch (k) {
    case RM_HK_HOST:
        return request;
    case RM_HK_TE:
        return !(e->value_len == 8 && strncasecmp((const char *)e->value, "trailers", 8) == 0);
    case RM_HK_CONNECTION:
    case RM_HK_KEEP_ALIVE:
    case RM_HK_PROXY_CONNECTION:
    case RM_HK_TRANSFER_ENCODING:
    case RM_HK_UPGRADE:
        return true;
    default:
        return false;
    }
}

static nghttp2_nv *nv_room(struct rm_h2_stream *hs, size_t n, bool persist)
{
    struct rm_h2_codec *c = hs->codec;
    if (persist) return rm_arena_alloc(&hs->own, n * sizeof(nghttp2_nv));
    if (c->scratch_cap < n) {
        size_t cap = n < 32 ? 32 : n * 2;
        nghttp2_nv *p = realloc(c->scratch, cap * sizeof(*p));
        if (!p) abort();
        c->scratch = p;
        c->scratch_cap = cap;
    }
    return c->scratch;
}

struct nv_builder {
    struct rm_h2_stream *hs;
    nghttp2_nv *nv;
    size_t n;
    char *copy;    /* non-NULL: copy strings here (room in the own arena) */
    uint8_t flags; /* NO_COPY when the strings outlive nghttp2's use of them */
};

/* <n> bytes of <src> and a NUL at the builder's copy cursor. */
static inline __attribute__((always_inline)) uint8_t *nv_copy(struct nv_builder *b,
                                                              const uint8_t *src, size_t n)
{
    char *p = b->copy;
    rm_h2_copy(p, src, n);
    p[n] = 0;
    b->copy = p + n + 1;
    return (uint8_t *)p;
}

static inline __attribute__((always_inline)) void nv_put(struct nv_builder *b,
                                                         const struct rm_header *e)
{
    nghttp2_nv *nv = &b->nv[b->n++];
    *nv = *(const nghttp2_nv *)(const void *)e;
    nv->flags = (uint8_t)((e->flags & NGHTTP2_NV_FLAG_NO_INDEX) | b->flags);
    if (b->copy) {
        nv->name = nv_copy(b, e->name, e->name_len);
        nv->value = nv_copy(b, e->value, e->value_len);
    }
}

static void nv_put_lit(struct nv_builder *b, const char *name, const struct rm_header *like,
                       const char *value, size_t vlen)
{
    struct rm_header e = {.name = (uint8_t *)name,
                          .value = (uint8_t *)value,
                          .name_len = strlen(name),
                          .value_len = vlen};
    if (like) {
        e.value = like->value;
        e.value_len = like->value_len;
    }
    nv_put(b, &e);
}

/* build_nv in one pass for the usual block: pseudo-headers first, and for a request nothing to
 * add (:authority there; :scheme too unless CONNECT).  Returns false, the builder emptied, for
 * any other block. */
static bool nv_one_pass(struct nv_builder *b, const struct rm_headers *h, bool request)
{
    bool authority = false, scheme = false, connect = false, regular = false;
    for (uint32_t i = 0; i < h->n; i++) {
        const struct rm_header *e = &h->v[i];
        enum rm_hkey k = rm_header_key(e);
        if (e->name_len && e->name[0] == ':') {
            if (regular) goto general; /* a pseudo-header after a field: reorder */
            authority |= k == RM_HK_AUTHORITY;
            scheme |= k == RM_HK_SCHEME;
            connect |=
                k == RM_HK_METHOD && e->value_len == 7 && memcmp(e->value, "CONNECT", 7) == 0;
            nv_put(b, e);
            continue;
        }
        if (!regular) {
            regular = true;
            if (request && (!authority || (!scheme && !connect))) goto general;
        }
        if (!skip_header(e, k, request)) nv_put(b, e);
    }
    if (!regular && request && (!authority || (!scheme && !connect))) goto general;
    return true;
general:
    b->n = 0;
    return false;
}

/* Bytes for a copy of <h>'s strings (each NUL-terminated), and of what build_nv may add:
 * ":authority" (the host value, counted) and ":scheme" "https". */
static size_t copy_room(const struct rm_headers *h)
{
    size_t n = sizeof(":authority") + sizeof(":scheme") + sizeof("https");
    for (uint32_t i = 0; i < h->n; i++)
        n += h->v[i].name_len + h->v[i].value_len + 2;
    return n;
}

/* Every name goes to nghttp2 NO_COPY, and nghttp2 lower-cases only the names it copies: the
 * names must be lower-case already, as headers.h promises for every block (the HTTP/1.1 parser,
 * h2_validate and config-added headers keep it).  The sanitizer build, which make test runs,
 * checks that promise on every submit; the others trust it. */
static void check_lower_names(const nghttp2_nv *nv, size_t n)
{
#ifdef __SANITIZE_ADDRESS__
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < nv[i].namelen; j++)
            assert(!(nv[i].name[j] >= 'A' && nv[i].name[j] <= 'Z'));
#else
    (void)nv, (void)n;
#endif
}

/* The nghttp2 header list for <h>: pseudo-headers first, connection-specific fields dropped,
 * and for requests :authority from host and :scheme from the transport when missing.
 * Strings not in the stream's own arena are copied there (names as they are: lower-case, see
 * headers.h), so all go to nghttp2 with NO_COPY.  <persist>: the array must outlive the call
 * too (trailers waiting for data).  Returns the array (codec scratch or own arena); *n gets its
 * length. */
static nghttp2_nv *build_nv(struct rm_h2_stream *hs, const struct rm_headers *h, bool request,
                            bool persist, size_t *n)
{
    struct nv_builder b = {
        .hs = hs,
        .nv = nv_room(hs, (size_t)h->n + 2, persist),
        .copy = h->arena == &hs->own ? NULL : rm_arena_alloc(&hs->own, copy_room(h)),
        .flags = NV_NO_COPY,
    };
    char *room = b.copy;
    if (nv_one_pass(&b, h, request)) {
        check_lower_names(b.nv, b.n);
        *n = b.n;
        return b.nv;
    }
    b.copy = room; /* the general pass copies again from the start */
    const struct rm_header *host = NULL;
    bool authority = false, scheme = false, connect = false;
    for (uint32_t i = 0; i < h->n; i++) {
        const struct rm_header *e = &h->v[i];
        enum rm_hkey k = rm_header_key(e);
        if (e->name_len && e->name[0] == ':') {
            authority |= k == RM_HK_AUTHORITY;
            scheme |= k == RM_HK_SCHEME;
            connect |=
                k == RM_HK_METHOD && e->value_len == 7 && memcmp(e->value, "CONNECT", 7) == 0;
            nv_put(&b, e);
        } else if (request && !host && k == RM_HK_HOST) {
            host = e;
        }
    }
    if (request && !authority && host) nv_put_lit(&b, ":authority", host, NULL, 0);
    if (request && !scheme && !connect) {
        bool plain = hs->codec->base.conn->tp == &rm_transport_plain;
        nv_put_lit(&b, ":scheme", NULL, plain ? "http" : "https", plain ? 4 : 5);
    }
    for (uint32_t i = 0; i < h->n; i++) {
        const struct rm_header *e = &h->v[i];
        if ((e->name_len && e->name[0] == ':') || skip_header(e, rm_header_key(e), request))
            continue;
        nv_put(&b, e);
    }
    check_lower_names(b.nv, b.n);
    *n = b.n;
    return b.nv;
}

/* ---- stream ops --------------------------------------------------------------------------- */

/* May the user still send on <hs>?  (Server streams become sendable once delivered.) */
static bool can_send(const struct rm_h2_stream *hs)
{
    if (hs->codec->finished || hs->released) return false;
    if (hs->state == RM_H2_IDLE) return !hs->codec->server;
    return hs->state == RM_H2_OPEN || hs->state == RM_H2_HALF_CLOSED_REMOTE;
}

static bool informational(const struct rm_headers *h)
{
    return h->n && rm_header_key(&h->v[0]) == RM_HK_STATUS && h->v[0].value_len == 3 &&
           h->v[0].value[0] == '1';
}

/* Let a deferred data provider run again and get a flush. */
static void kick(struct rm_h2_stream *hs)
{
    struct rm_h2_codec *c = hs->codec;
    if (hs->deferred && hs->ng_open) {
        hs->deferred = false;
        nghttp2_session_resume_data(c->ng, hs->base.id);
    }
    rm_h2_want_flush(c);
}

static int op_submit_headers(struct rm_stream *s, struct rm_headers *h, bool end_stream)
{
    struct rm_h2_stream *hs = rm_h2_stream_of(s);
    struct rm_h2_codec *c = hs->codec;
    if (!can_send(hs) || hs->has_provider || hs->out_end) return -1;
    size_t n;
    nghttp2_nv *nv = build_nv(hs, h, !c->server, false, &n);
    nghttp2_data_provider prd = {.source.ptr = hs, .read_callback = rm_h2_data_read};
    nghttp2_data_provider *p = end_stream ? NULL : &prd;
    int rv;
    if (c->server && !end_stream && informational(h)) {
        rv = nghttp2_submit_headers(c->ng, NGHTTP2_FLAG_NONE, s->id, NULL, nv, n, NULL);
        goto out;
    }
    if (c->server) {
        rv = nghttp2_submit_response(c->ng, s->id, nv, n, p);
    } else {
        rv = nghttp2_submit_request(c->ng, NULL, nv, n, p, hs);
        if (rv > 0) {
            s->id = rv;
            hs->ng_open = true;
            *rm_h2_id_slot(c, rv) = hs; /* stream_by_id() answers before nghttp2 opens it */
            rm_h2v_request_sent(hs, nv, n);
        }
    }
    if (rv < 0) goto out;
    hs->has_provider = !end_stream;
    if (end_stream) {
        hs->out_end = true;
        local_end(hs);
    } else if (hs->state == RM_H2_IDLE) {
        rm_h2_set_state(hs, RM_H2_OPEN);
    }
out:
    if (rv < 0) {
        rm_log_debug("h2: stream %d: headers not submitted: %s", s->id, nghttp2_strerror(rv));
        return -1;
    }
    rm_h2_want_flush(c);
    return 0;
}

static int op_submit_data(struct rm_stream *s, const uint8_t *p, size_t n, bool end_stream)
{
    struct rm_h2_stream *hs = rm_h2_stream_of(s);
    if (!can_send(hs) || !hs->has_provider || hs->out_end) return -1;
    if (n) rm_buf_append(&hs->out, p, n);
    if (end_stream) {
        hs->out_end = true;
        local_end(hs);
    }
    if (hs->out.len > hs->codec->stream_buffer) hs->blocked = true;
    kick(hs);
    return 0;
}

static int op_submit_trailers(struct rm_stream *s, struct rm_headers *h)
{
    struct rm_h2_stream *hs = rm_h2_stream_of(s);
    if (!can_send(hs) || !hs->has_provider || hs->out_end) return -1;
    size_t n;
    nghttp2_nv *nv = build_nv(hs, h, false, true, &n);
    if (n) {
        hs->trailers = nv;
        hs->ntrailers = n;
    }
    hs->out_end = true;
    local_end(hs);
    kick(hs);
    return 0;
}

static void op_reset(struct rm_stream *s, enum rm_reset_reason reason)
{
    rm_h2_stream_abort(rm_h2_stream_of(s), reason, (int)rm_h2_error_code(reason), false);
}

static void op_pause_reading(struct rm_stream *s, bool paused)
{
    struct rm_h2_stream *hs = rm_h2_stream_of(s);
    struct rm_h2_codec *c = hs->codec;
    if (hs->paused == paused) return;
    hs->paused = paused;
    if (paused || rm_h2_terminal(hs)) /* (held input outlives the connection: see finish) */
        return;
    size_t n = hs->unconsumed;
    hs->unconsumed = 0;
    rm_h2_consume(hs, n);
    if ((hs->held.len || hs->held_end) && !hs->in_resume) {
        hs->in_resume = true;
        hs->resume_next = c->resumed;
        c->resumed = hs;
        rm_h2_schedule(c);
    }
}

static bool op_write_blocked(const struct rm_stream *s)
{
    const struct rm_h2_stream *hs = rm_h2_stream_of(s);
    return hs->out.len > hs->codec->stream_buffer;
}

/* Server, response complete, request still arriving: let the response drain, then stop the
 * upload with RST_STREAM(NO_ERROR) (RFC 9113 8.1). */
static void finish_after_response(struct rm_h2_stream *hs)
{
    struct rm_h2_codec *c = hs->codec;
    bool remote_done = hs->remote_end_seen;
    drop_input(hs);
    if (!hs->ng_open) {
        rm_h2_stream_abort(hs, RM_RESET_LOCAL, -1, false);
        return;
    }
    if (remote_done || nghttp2_session_get_stream_remote_close(c->ng, hs->base.id) == 1)
        return; /* nghttp2 closes the stream once our END_STREAM is out */
    if (hs->end_sent) {
        nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, hs->base.id, NGHTTP2_NO_ERROR);
        rm_h2_event(c, RM_CODEC_EV_TX_RESET);
        rm_h2_want_flush(c);
    } else {
        hs->rst_after_end = true;
    }
}

static void op_release(struct rm_stream *s)
{
    struct rm_h2_stream *hs = rm_h2_stream_of(s);
    struct rm_h2_codec *c = hs->codec;
    assert(hs->attached && !hs->released);
    hs->released = true;
    if (!rm_h2_terminal(hs)) {
        if (c->server && hs->state == RM_H2_HALF_CLOSED_LOCAL && !c->finished)
            finish_after_response(hs);
        else
            rm_h2_stream_abort(hs, RM_RESET_LOCAL, NGHTTP2_CANCEL, false);
    }
    rm_h2_maybe_reap(hs);
}

const struct rm_codec_ops rm_h2_stream_ops = {
    .submit_headers = op_submit_headers,
    .submit_data = op_submit_data,
    .submit_trailers = op_submit_trailers,
    .reset = op_reset,
    .pause_reading = op_pause_reading,
    .write_blocked = op_write_blocked,
    .release = op_release,
};
