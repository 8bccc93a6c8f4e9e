/* Request mirroring: see shadow.h.  One shadow is one request on one attempt (no retries, as
 * Envoy's shadows): pick a host, take a max_requests slot, ask the pool for a stream, send the
 * whole request, read the response and drop it.  Where it stands is s->state, changed only by
 * set_state(). */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "filters/shadow.h"
#include "proxy/admin/stats.h"
#include "proxy/core/arena.h"
#include "proxy/core/loop.h"
#include "proxy/server/worker.h"
#include "proxy/upstream/circuit_breaker.h"
#include "proxy/upstream/pool.h"

enum sh_state {
    SH_NEW,     /* made, not started (owned by the request) */
    SH_PENDING, /* started: waits for a stream from the pool */
    SH_ACTIVE,  /* its stream is open */
    SH_DONE,    /* over: its memory goes at the end of the loop iteration */
};

struct rm_shadow {
    struct rm_shadow *next, *prev; /* the worker's running shadows (from SH_PENDING) */
    struct rm_worker *w;
    struct rm_worker_cluster *wc; /* held */
    enum sh_state state;
    unsigned priority;
    enum rm_http_proto proto; /* upstream protocol */
    uint32_t timeout_ms;
    struct rm_arena arena; /* the request's copy, the response's headers */
    struct rm_headers req;
    const uint8_t *body;
    size_t body_len;
    struct rm_headers *trailers;
    struct rm_host *host;
    struct rm_pool *pool;
    struct rm_pool_request preq;
    struct rm_stream *up;
    bool holds_rq;       /* holds a max_requests slot */
    bool counted_active; /* upstream_rq_active / host rq_active counted */
    struct rm_timer timeout;
    struct rm_task free_task;
};

static const struct rm_stream_events sh_events;
static const struct rm_pool_request_cb sh_pool_cb;

#define ST(s) (1u << (s))
static const uint8_t allowed_next[] = {
    [SH_NEW] = ST(SH_PENDING) | ST(SH_DONE),
    [SH_PENDING] = ST(SH_ACTIVE) | ST(SH_DONE),
    [SH_ACTIVE] = ST(SH_DONE),
    [SH_DONE] = 0,
};

static void set_state(struct rm_shadow *s, enum sh_state st)
{
    assert(allowed_next[s->state] & ST(st));
    s->state = st;
}

static inline struct rm_stats *cstats(const struct rm_shadow *s)
{
    return s->wc->cluster->stats;
}

/* ---- the worker's list -------------------------------------------------------------------- */

static void list_add(struct rm_shadow *s)
{
    struct rm_shadow **head = &s->w->shadows;
    s->prev = NULL;
    s->next = *head;
    if (*head) (*head)->prev = s;
    *head = s;
}

static void list_del(struct rm_shadow *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        s->w->shadows = s->next;
    if (s->next) s->next->prev = s->prev;
    s->next = s->prev = NULL;
}

/* ---- making and freeing ------------------------------------------------------------------- */

/* "host" -> "host-shadow", "host:port" -> "host-shadow:port", "[v6]:port" -> "[v6]-shadow:port"
 * (Envoy's shadowAppendedHost) into the arena. */
static void suffix_host(struct rm_shadow *s)
{
    static const char sfx[] = "-shadow";
    const size_t sl = sizeof(sfx) - 1;
    struct rm_str h = rm_headers_get_key(&s->req, RM_HK_AUTHORITY);
    if (!h.p || !h.len) return;
    size_t cut = h.len; /* where the port starts */
    for (size_t i = h.len; i-- > 0;) {
        if (h.p[i] == ']') break;
        if (h.p[i] == ':') {
            cut = i;
            break;
        }
    }
    char *v = rm_arena_alloc(&s->arena, h.len + sl + 1);
    memcpy(v, h.p, cut);
    memcpy(v + cut, sfx, sl);
    memcpy(v + cut + sl, h.p + cut, h.len - cut);
    v[h.len + sl] = 0;
    rm_headers_set_ref_key(&s->req, RM_HK_AUTHORITY, v, h.len + sl);
}

static enum rm_http_proto upstream_proto(const struct rm_cluster *c, enum rm_http_proto down)
{
    switch (c->proto) {
    case RM_UPSTREAM_HTTP2:
        return RM_HTTP2;
    case RM_UPSTREAM_USE_DOWNSTREAM:
        return down == RM_HTTP2 ? RM_HTTP2 : RM_HTTP11;
    default:
        return RM_HTTP11;
    }
}

struct rm_shadow *rm_shadow_new(struct rm_worker *w, struct rm_worker_cluster *wc,
                                const struct rm_headers *req, bool host_suffix,
                                enum rm_http_proto down_proto, unsigned priority,
                                uint32_t timeout_ms)
{
    struct rm_shadow *s = calloc(1, sizeof(*s));
    if (!s) return NULL;
    s->w = w;
    s->wc = rm_worker_cluster_hold(wc);
    s->state = SH_NEW;
    s->priority = priority;
    s->proto = upstream_proto(wc->cluster, down_proto);
    s->timeout_ms = timeout_ms;
    rm_arena_init(&s->arena);
    rm_headers_init(&s->req, &s->arena);
    rm_headers_copy(&s->req, req);
    if (host_suffix) suffix_host(s);
    return s;
}

static void free_task(struct rm_task *t)
{
    struct rm_shadow *s = rm_container_of(t, struct rm_shadow, free_task);
    rm_arena_dispose(&s->arena);
    rm_worker_cluster_release(s->wc);
    free(s);
}

void rm_shadow_abort(struct rm_shadow *s)
{
    if (!s) return;
    assert(s->state == SH_NEW);
    s->state = SH_DONE;
    free_task(&s->free_task);
}

static void active_done(struct rm_shadow *s)
{
    if (!s->counted_active) return;
    s->counted_active = false;
    rm_stat_dec(cstats(s), RM_CS_UPSTREAM_RQ_ACTIVE);
    atomic_fetch_sub_explicit(&s->host->rq_active, 1, memory_order_relaxed);
}

/* The shadow is over: stop its timer, withdraw it from the pool, drop its stream (reset first
 * when <reset>), give back its slot, leave the worker's list.  Its memory is freed after the
 * loop iteration: this may run inside a callback of the codec that holds its stream. */
static void finish(struct rm_shadow *s, bool reset)
{
    if (s->state == SH_DONE) return;
    set_state(s, SH_DONE);
    rm_timer_stop(s->w->loop, &s->timeout);
    rm_pool_cancel(&s->preq);
    struct rm_stream *up = s->up;
    if (up) {
        s->up = NULL;
        if (reset) {
            rm_stat_inc(cstats(s), RM_CS_UPSTREAM_RQ_TX_RESET);
            up->ops->reset(up, RM_RESET_LOCAL);
        }
        up->ops->release(up);
        active_done(s);
        rm_pool_stream_done(s->pool);
    }
    if (s->holds_rq) {
        s->holds_rq = false;
        rm_cb_release(s->wc->cluster->cb[s->priority ? 1 : 0], RM_CB_RQ);
    }
    list_del(s);
    rm_loop_defer(s->w->loop, &s->free_task, free_task);
}

void rm_shadow_cancel_all(struct rm_worker *w)
{
    while (w->shadows)
        finish(w->shadows, true);
}

/* ---- the request -------------------------------------------------------------------------- */

static void on_timeout(struct rm_timer *t)
{
    struct rm_shadow *s = rm_container_of(t, struct rm_shadow, timeout);
    rm_stat_inc(cstats(s), RM_CS_UPSTREAM_RQ_TIMEOUT);
    if (s->up) {
        atomic_fetch_add_explicit(&s->host->rq_timeout, 1, memory_order_relaxed);
        if (s->state == SH_ACTIVE) rm_outlier_report_local(&s->host->outlier, RM_OUTLIER_TIMEOUT);
    }
    finish(s, true);
}

static void open_stream(struct rm_shadow *s, struct rm_codec *codec)
{
    struct rm_stream *up;
    if (rm_codec_new_stream(codec, &sh_events, s, &s->arena, &up) != 0) {
        finish(s, false);
        return;
    }
    s->up = up;
    set_state(s, SH_ACTIVE);
    rm_outlier_report_local(&s->host->outlier, RM_OUTLIER_CONNECT_SUCCESS);
    s->counted_active = true;
    rm_stat_inc(cstats(s), RM_CS_UPSTREAM_RQ_TOTAL);
    rm_stat_inc(cstats(s), RM_CS_UPSTREAM_RQ_ACTIVE);
    atomic_fetch_add_explicit(&s->host->rq_total, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->host->rq_active, 1, memory_order_relaxed);
    bool body = s->body_len > 0, trailers = s->trailers != NULL;
    up->ops->submit_headers(up, &s->req, !body && !trailers);
    if (body) up->ops->submit_data(up, s->body, s->body_len, !trailers);
    if (trailers) up->ops->submit_trailers(up, s->trailers);
}

static void pool_ready(struct rm_pool_request *pr, struct rm_codec *codec, struct rm_host *host)
{
    open_stream(rm_container_of(pr, struct rm_shadow, preq), codec);
}

static void pool_failure(struct rm_pool_request *pr, enum rm_pool_failure why, int err)
{
    struct rm_shadow *s = rm_container_of(pr, struct rm_shadow, preq);
    if (why != RM_POOL_OVERFLOW && err != -ECANCELED) { /* overflow: counted by the pool */
        atomic_fetch_add_explicit(&s->host->rq_error, 1, memory_order_relaxed);
        rm_outlier_report_local(&s->host->outlier, RM_OUTLIER_CONNECT_FAILURE);
    }
    finish(s, false);
}

static const struct rm_pool_request_cb sh_pool_cb = {
    .on_ready = pool_ready,
    .on_failure = pool_failure,
};

void rm_shadow_start(struct rm_shadow *s, const uint8_t *body, size_t len,
                     const struct rm_headers *trailers)
{
    assert(s->state == SH_NEW);
    struct rm_worker_cluster *wc = s->wc;
    struct rm_stats *st = cstats(s);
    set_state(s, SH_PENDING);
    list_add(s);
    s->host = rm_lb_pick(wc, NULL);
    if (!s->host) {
        rm_stat_inc(st, RM_CS_UPSTREAM_CX_NONE_HEALTHY);
        finish(s, false);
        return;
    }
    if (!rm_cb_try_acquire(wc->cluster->cb[s->priority ? 1 : 0], RM_CB_RQ)) {
        rm_stat_inc(st, RM_CS_UPSTREAM_RQ_PENDING_OVERFLOW); /* as the router counts it */
        finish(s, false);
        return;
    }
    s->holds_rq = true;
    s->pool = rm_worker_cluster_pool(wc, s->host, s->proto, s->priority);
    if (!s->pool) { /* max_connection_pools (counted) */
        finish(s, false);
        return;
    }
    if (len) {
        uint8_t *b = rm_arena_alloc(&s->arena, len);
        memcpy(b, body, len);
        s->body = b;
        s->body_len = len;
    }
    if (trailers) {
        s->trailers = rm_arena_alloc(&s->arena, sizeof(*s->trailers));
        rm_headers_init(s->trailers, &s->arena);
        rm_headers_copy(s->trailers, trailers);
    }
    if (s->timeout_ms) rm_timer_start(s->w->loop, &s->timeout, s->timeout_ms, on_timeout);
    struct rm_codec *codec;
    if (rm_pool_acquire(s->pool, &s->preq, &sh_pool_cb, s->priority, &codec) == RM_OK)
        open_stream(s, codec);
    /* RM_AGAIN: pool_ready / pool_failure later; RM_DONE: pool_failure ran */
}

/* ---- the response: counted, then dropped -------------------------------------------------- */

static void complete(struct rm_shadow *s)
{
    rm_stat_inc(cstats(s), RM_CS_UPSTREAM_RQ_COMPLETED);
    finish(s, false);
}

static void up_on_headers(struct rm_stream *st, struct rm_headers *h, bool end)
{
    struct rm_shadow *s = st->user;
    struct rm_str v = rm_headers_get_key(h, RM_HK_STATUS);
    int64_t code = v.p ? rm_parse_u63(v.p, v.len) : -1;
    if (code >= 100 && code < 200) return; /* informational */
    unsigned status = code > 0 ? (unsigned)code : 502;
    rm_outlier_report_http(&s->host->outlier, status);
    rm_upstream_count_status(cstats(s), s->host, status);
    if (end) complete(s);
}

static void up_on_data(struct rm_stream *st, const uint8_t *p, size_t n, bool end)
{
    if (end) complete(st->user);
}

static void up_on_trailers(struct rm_stream *st, struct rm_headers *h)
{
    complete(st->user);
}

static void up_on_reset(struct rm_stream *st, enum rm_reset_reason why)
{
    struct rm_shadow *s = st->user;
    rm_stat_inc(cstats(s), RM_CS_UPSTREAM_RQ_RX_RESET);
    if (why != RM_RESET_OVERFLOW)
        rm_outlier_report_local(&s->host->outlier, RM_OUTLIER_CONNECT_FAILURE);
    atomic_fetch_add_explicit(&s->host->rq_error, 1, memory_order_relaxed);
    s->up = NULL; /* reset by the peer: released, not reset again */
    st->ops->release(st);
    active_done(s);
    rm_pool_stream_done(s->pool);
    finish(s, false);
}

static void up_on_writable(struct rm_stream *st) {}

static const struct rm_stream_events sh_events = {
    .on_headers = up_on_headers,
    .on_data = up_on_data,
    .on_trailers = up_on_trailers,
    .on_reset = up_on_reset,
    .on_writable = up_on_writable,
};
