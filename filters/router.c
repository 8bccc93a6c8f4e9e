/* envoy.filters.http.router: the last filter.  Picks the cluster and host for the matched
 * route, takes a stream from the host's connection pool and relays the request and response,
 * with backpressure both ways and Envoy's local replies (404 NR, 503 UH/UF/UC/UO/NC, 502 UPE,
 * 504 UT…).  Around that, as Envoy's router does:
 *  - circuit breaking: each attempt holds a max_requests slot of the cluster's breakers for the
 *    route's priority (503 UO + x-envoy-overloaded when full; pending requests, connections
 *    and pools are counted by the pool);
 *  - retries (filters/retry.h): on a reset, connect failure, per-try timeout or retriable
 *    response headers, while nothing of the response went downstream;
 *  - timeouts: the route timeout (or x-envoy-upstream-rq-timeout-ms, or grpc-timeout capped
 *    by max_grpc_timeout) from the end of the request over all attempts; per_try_timeout and
 *    per_try_idle_timeout per attempt.
 *
 * One attempt at a time; where the request stands is r->state (enum rm_up_state), changed only
 * by set_state(), which checks the transition.  The decision to retry a response is taken on
 * its headers: no response byte is ever buffered.  The request body is kept for replay while
 * a retry is possible, up to the buffer limit (per_request_buffer_limit_bytes of the route or
 * virtual host, else the listener's per_connection_buffer_limit_bytes); past it retries are
 * abandoned (retry_or_shadow_abandoned), never replayed truncated.  A request without retry
 * policy or retry headers allocates nothing and streams its body as before. */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/extensions/filters/http/router/v3/router.pb-c.h"
#include "filters/filter.h"
#include "filters/percent.h"
#include "filters/retry.h"
#include "filters/shadow.h"
#include "google/protobuf/any.pb-c.h"
#include "proxy/config/snapshot.h"
#include "proxy/core/log.h"
#include "proxy/http/hcm.h"
#include "proxy/net/conn.h"
#include "proxy/net/tls.h"
#include "proxy/server/worker.h"
#include "proxy/upstream/circuit_breaker.h"
#include "proxy/upstream/original_dst.h"
#include "proxy/upstream/pool.h"

#define RESET_BODY "upstream connect error or disconnect/reset before headers. reset reason: "
#define OVERFLOW_BODY RESET_BODY "overflow"
/* A TLS connect failure: the 503 body names it, UPSTREAM_TRANSPORT_FAILURE_REASON prints it */
#define TF_BODY(reason) RESET_BODY "connection failure, transport failure reason: " reason
#define TF_VERIFY "TLS error: certificate verify failed"
#define TF_HANDSHAKE "TLS error: handshake failed"
#define TF_NOT_READY "TLS error: Secret is not supplied by SDS"

/* Envoy's response code details (RESPONSE_CODE_DETAILS), static: set where the reply is
 * decided.  An upstream reset's "{reason}" gets the transport failure reason added by the
 * access log formatter (rm_alog_info.details). */
#define EARLY "upstream_reset_before_response_started"
#define LATE "upstream_reset_after_response_started"
#define D_OVERFLOW EARLY "{overflow}"
#define D_CONNECT_FAILURE EARLY "{connection_failure}"
#define D_CONNECT_TIMEOUT EARLY "{connection_timeout}"
#define D_TIMEOUT "response_timeout"
#define D_PER_TRY_TIMEOUT "upstream_per_try_timeout"
#define D_PER_TRY_IDLE_TIMEOUT "upstream_per_try_idle_timeout"
#define D_NO_HEALTHY "no_healthy_upstream"
#define D_CLUSTER_NOT_FOUND "cluster_not_found"

/* The details of an upstream reset, by reason: [0] before the response started, [1] after
 * (Envoy's resetReasonToString with '_' for spaces). */
#define RD(r)                                                                                      \
    {                                                                                              \
        EARLY "{" r "}", LATE "{" r "}"                                                            \
    }
static const char *const reset_details_tab[][2] = {
    [RM_RESET_LOCAL] = RD("local_reset"),
    [RM_RESET_REMOTE] = RD("remote_reset"),
    [RM_RESET_PROTOCOL] = RD("protocol_error"),
    [RM_RESET_CONNECTION_FAILURE] = RD("connection_failure"),
    [RM_RESET_CONNECTION_TERMINATION] = RD("connection_termination"),
    [RM_RESET_REFUSED] = RD("remote_refused_stream_reset"),
    [RM_RESET_OVERFLOW] = RD("overflow"),
    [RM_RESET_TIMEOUT] = RD("connection_timeout"),
};
#undef RD

static const char *reset_details(enum rm_reset_reason why, bool late)
{
    if ((unsigned)why >= sizeof(reset_details_tab) / sizeof(reset_details_tab[0]))
        why = RM_RESET_REMOTE;
    return reset_details_tab[why][late];
}

/* Where a request stands with its upstream. */
enum rm_up_state {
    RM_UP_INIT,      /* no attempt yet */
    RM_UP_PENDING,   /* the attempt waits for a connection from the pool */
    RM_UP_ACTIVE,    /* the attempt's stream is open; nothing forwarded downstream yet */
    RM_UP_STREAMING, /* its response headers went downstream: no more retries */
    RM_UP_BACKOFF,   /* an attempt failed; the retry waits for its back-off timer */
    RM_UP_DONE,      /* over: upstream finished, local reply sent, or stream gone */
};

struct router {
    struct rm_filter base;
    struct rm_hcm_stream *hs;
    struct rm_worker *w;
    struct rm_worker_cluster *wc;
    const struct rm_route *rt;
    struct rm_cb *cb; /* the cluster's circuit breakers for the route's priority */
    enum rm_up_state state;
    /* the current attempt */
    struct rm_host *host;
    struct rm_pool *pool;
    struct rm_pool_request preq;
    struct rm_stream *up;
    uint64_t up_start_ms;
    uint64_t activity_ms; /* last upstream progress (per_try_idle_timeout) */
    bool up_req_end;      /* request fully submitted to this attempt */
    bool up_resp_end;     /* this attempt's response complete */
    bool up_paused;       /* we paused the upstream response */
    bool counted_active;  /* upstream_rq_active / host rq_active counted */
    bool holds_rq;        /* holds a max_requests slot */
    bool try_timers;      /* per-try timers started for this attempt */
    /* the request */
    struct rm_headers *req;
    struct rm_buf body; /* replay: the whole body so far; else what waits for a stream */
    size_t body_sent;   /* bytes of body submitted to the current attempt */
    struct rm_headers *req_trailers;
    bool req_end;             /* downstream request complete (seen by us) */
    bool down_paused;         /* we paused the downstream request */
    bool replay;              /* keep the body for a retry */
    bool auto_host;           /* auto_host_rewrite applies (per attempt: the host may change) */
    bool grpc_timeout_header; /* max_grpc_timeout: tell the upstream its grpc-timeout */
    bool timers_started;      /* the request completed: route timeout armed */
    uint32_t buffer_limit;    /* replay limit */
    /* retries and timeouts */
    struct rm_retry_state *retry; /* NULL: no retries */
    uint32_t attempts;            /* started */
    uint32_t timeout_ms, per_try_ms, per_try_idle_ms;
    uint64_t complete_ms;       /* when the request completed (grpc-timeout of retries) */
    const char *extra_flag;     /* "URX" / "UO" when a wanted retry was refused */
    struct rm_timer timeout;    /* route timeout, over every attempt */
    struct rm_timer try_timer;  /* per_try_timeout */
    struct rm_timer idle_timer; /* per_try_idle_timeout */
    struct rm_timer backoff;
    uint8_t refused_retries; /* transparent retries of streams the upstream refused */
    bool had_body;           /* the request carried body bytes (not replayable without policy) */
    /* request mirrors (the route's RequestMirrorPolicy): made with the headers, sent when the
     * request is complete (the body is kept until then, within buffer_limit); in the arena */
    struct rm_shadow **shadows;
    uint8_t n_shadows;
};

static const struct rm_stream_events up_events;

/* Is the request body kept whole (for a retry's replay or for the mirrors)? */
static inline bool keep_body(const struct router *r)
{
    return r->replay || r->n_shadows;
}
static const struct rm_pool_request_cb pool_cb;
static void start_attempt(struct router *r);

static inline struct router *R(struct rm_filter *f)
{
    return (struct router *)f;
}
static inline struct rm_stats *cstats(struct router *r)
{
    return r->wc->cluster->stats;
}
static inline struct rm_loop *loop_of(struct router *r)
{
    return r->w->loop;
}

/* ---- state -------------------------------------------------------------------------------- */

#define ST(s) (1u << (s))
static const uint8_t allowed_next[] = {
    [RM_UP_INIT] = ST(RM_UP_PENDING) | ST(RM_UP_DONE),
    [RM_UP_PENDING] = ST(RM_UP_ACTIVE) | ST(RM_UP_BACKOFF) | ST(RM_UP_DONE),
    [RM_UP_ACTIVE] = ST(RM_UP_STREAMING) | ST(RM_UP_BACKOFF) | ST(RM_UP_DONE),
    [RM_UP_STREAMING] = ST(RM_UP_DONE),
    [RM_UP_BACKOFF] = ST(RM_UP_PENDING) | ST(RM_UP_DONE),
    [RM_UP_DONE] = 0,
};

/* The only place r->state changes: the transition must be one of allowed_next[]. */
static void set_state(struct router *r, enum rm_up_state s)
{
    assert(allowed_next[r->state] & ST(s));
    r->state = s;
}

/* Has the downstream stream gone (reset, or finishing)?  Timers may still fire before the
 * connection manager destroys the filters. */
static bool stream_dead(const struct router *r)
{
    return r->hs->flags & (RM_HS_RESET | RM_HS_FINISHING);
}

/* ---- config ------------------------------------------------------------------------------- */

static int router_sentinel;

static void *router_config_new(const Google__Protobuf__Any *any, const char *path,
                               struct rm_error *err)
{
    if (!any || !any->value.len) return &router_sentinel;
    Envoy__Extensions__Filters__Http__Router__V3__Router *pb =
        envoy__extensions__filters__http__router__v3__router__unpack(NULL, any->value.len,
                                                                     any->value.data);
    if (!pb) {
        rm_error_set(err, "%s: malformed Router config", path);
        return NULL;
    }
    void *ret = &router_sentinel;
    if (pb->n_strict_check_headers) {
        rm_error_set(err, "%s.strict_check_headers: not supported by remora yet", path);
        ret = NULL;
    }
    envoy__extensions__filters__http__router__v3__router__free_unpacked(pb, NULL);
    return ret;
}

static void router_config_free(void *c) {}

/* ---- helpers ------------------------------------------------------------------------------ */

static void count_upstream_status(struct router *r, unsigned status)
{
    rm_upstream_count_status(cstats(r), r->host, status);
}

static void active_done(struct router *r)
{
    if (!r->counted_active) return;
    r->counted_active = false;
    rm_stat_dec(cstats(r), RM_CS_UPSTREAM_RQ_ACTIVE);
    atomic_fetch_sub_explicit(&r->host->rq_active, 1, memory_order_relaxed);
}

/* End the current attempt: stop its timers, withdraw it from the pool, drop its stream
 * (reset first when <reset>) and give back its max_requests slot.  Idempotent. */
static void attempt_end(struct router *r, bool reset)
{
    rm_timer_stop(loop_of(r), &r->try_timer);
    rm_timer_stop(loop_of(r), &r->idle_timer);
    r->try_timers = false;
    rm_pool_cancel(&r->preq);
    struct rm_stream *up = r->up;
    if (up) {
        r->up = NULL;
        if (reset) {
            rm_stat_inc(cstats(r), RM_CS_UPSTREAM_RQ_TX_RESET);
            up->ops->reset(up, RM_RESET_LOCAL);
        }
        up->ops->release(up);
        active_done(r);
        rm_pool_stream_done(r->pool);
    }
    if (r->holds_rq) {
        r->holds_rq = false;
        rm_cb_release(r->cb, RM_CB_RQ);
    }
    r->up_paused = false;
    r->up_req_end = r->up_resp_end = false;
    r->body_sent = 0;
}

/* The request is over for the router: stop every timer, end the attempt, give back the retry
 * slot.  Idempotent. */
static void finish(struct router *r)
{
    if (r->state == RM_UP_DONE) return;
    set_state(r, RM_UP_DONE);
    rm_timer_stop(loop_of(r), &r->timeout);
    rm_timer_stop(loop_of(r), &r->backoff);
    attempt_end(r, true);
    rm_retry_finish(r->retry, r->cb);
}

/* Response flags with the refused-retry flag appended ("UF,URX"); lives in the arena. */
static const char *flags_with_extra(struct router *r, const char *flags)
{
    if (!r->extra_flag) return flags;
    if (!flags) return r->extra_flag;
    size_t n = strlen(flags) + 1 + strlen(r->extra_flag) + 1;
    char *s = rm_arena_alloc(r->hs->arena, n);
    snprintf(s, n, "%s,%s", flags, r->extra_flag);
    return s;
}

/* Give up on the upstream and answer locally (or reset the downstream if the response has
 * started). */
static void fail_local(struct router *r, unsigned status, const char *flags, const char *details,
                       const char *body)
{
    bool streaming = r->state == RM_UP_STREAMING;
    finish(r);
    if (streaming) {
        r->hs->details = details;
        rm_hcm_reset(r->hs);
    } else {
        rm_hcm_local_reply(r->hs, r->base.idx, status, flags_with_extra(r, flags), details, body);
    }
}

/* A local reply before any upstream work (no route, no cluster, direct response…). */
static void reply(struct router *r, unsigned status, const char *flags, const char *details,
                  const char *body)
{
    if (r->w) finish(r);
    rm_hcm_local_reply(r->hs, r->base.idx, status, flags, details, body);
}

/* ---- timers ------------------------------------------------------------------------------- */

static void on_timeout(struct rm_timer *t)
{
    struct router *r = rm_container_of(t, struct router, timeout);
    if (stream_dead(r)) return;
    rm_stat_inc(cstats(r), RM_CS_UPSTREAM_RQ_TIMEOUT);
    if (r->up) {
        atomic_fetch_add_explicit(&r->host->rq_timeout, 1, memory_order_relaxed);
        if (r->state == RM_UP_ACTIVE)
            rm_outlier_report_local(&r->host->outlier, RM_OUTLIER_TIMEOUT);
    }
    r->extra_flag = NULL; /* Envoy: the route timeout ends the request with UT alone */
    fail_local(r, 504, "UT", D_TIMEOUT, "upstream request timeout");
}

static void attempt_failed(struct router *r, enum rm_retry_failure kind, bool sent, unsigned status,
                           const char *flags, const char *details, const char *body);

static void on_try_timeout(struct rm_timer *t)
{
    struct router *r = rm_container_of(t, struct router, try_timer);
    if (stream_dead(r)) return;
    rm_stat_inc(cstats(r), RM_CS_UPSTREAM_RQ_PER_TRY_TIMEOUT);
    atomic_fetch_add_explicit(&r->host->rq_timeout, 1, memory_order_relaxed);
    rm_outlier_report_local(&r->host->outlier, RM_OUTLIER_TIMEOUT);
    attempt_failed(r, RM_RETRY_FAIL_TIMEOUT, true, 504, "UT", D_PER_TRY_TIMEOUT,
                   "upstream request timeout");
}

static void on_idle_timeout(struct rm_timer *t)
{
    struct router *r = rm_container_of(t, struct router, idle_timer);
    if (stream_dead(r)) return;
    uint64_t idle = rm_loop_now(loop_of(r)) - r->activity_ms;
    if (idle < r->per_try_idle_ms) { /* progress since it was armed: wait for the rest */
        rm_timer_start(loop_of(r), &r->idle_timer, r->per_try_idle_ms - idle, on_idle_timeout);
        return;
    }
    rm_stat_inc(cstats(r), RM_CS_UPSTREAM_RQ_PER_TRY_IDLE_TIMEOUT);
    atomic_fetch_add_explicit(&r->host->rq_timeout, 1, memory_order_relaxed);
    if (r->state == RM_UP_ACTIVE) rm_outlier_report_local(&r->host->outlier, RM_OUTLIER_TIMEOUT);
    attempt_failed(r, RM_RETRY_FAIL_TIMEOUT, true, 504, "UT", D_PER_TRY_IDLE_TIMEOUT,
                   "upstream request timeout");
}

/* ---- mirrors ------------------------------------------------------------------------------ */

/* The cluster named by request header <header> (its first value) in the request's snapshot;
 * NULL when absent or unknown; values of 256 bytes or more are not looked up (NULL). */
static struct rm_cluster *cluster_of_header(struct router *r, const char *header)
{
    struct rm_str v = rm_headers_get(r->req, header, strlen(header));
    char name[256];
    if (!v.p || v.len >= sizeof(name)) return NULL;
    memcpy(name, v.p, v.len);
    name[v.len] = 0;
    return rm_snapshot_cluster(rm_hcm_snapshot(r->hs), name);
}

/* The cluster a mirror policy names for this request (its own, or the request header's value),
 * as this worker sees it; NULL when it does not exist (Envoy then sends no shadow). */
static struct rm_worker_cluster *mirror_cluster(struct router *r, const struct rm_mirror_policy *m)
{
    struct rm_cluster *c = m->cluster_header ? cluster_of_header(r, m->cluster_header) : m->cluster;
    return c ? rm_worker_cluster_for(r->w, c) : NULL;
}

static uint32_t request_buffer_limit(const struct router *r, const struct rm_route *rt,
                                     const struct rm_vhost *vh)
{
    return rt->per_request_buffer_limit   ? rt->per_request_buffer_limit
           : vh->per_request_buffer_limit ? vh->per_request_buffer_limit
                                          : r->hs->hc->lc->buffer_limit;
}

/* Decide the request's mirrors (runtime_fraction, cluster) and copy its headers for each, as
 * they go to the primary cluster (after the route's rewrites). */
static void plan_shadows(struct router *r, const struct rm_route *rt)
{
    const struct rm_mirror_policies *mp = &rt->mirrors;
    size_t n = mp->n < UINT8_MAX ? mp->n : UINT8_MAX;
    for (size_t i = 0; i < n; i++) {
        const struct rm_mirror_policy *m = &mp->v[i];
        struct rm_fraction f = {m->numerator, m->denominator};
        if (!rm_fraction_always(f) && !rm_fraction_hit(f, rm_worker_random(r->w))) continue;
        struct rm_worker_cluster *wc = mirror_cluster(r, m);
        if (!wc) continue;
        struct rm_shadow *s = rm_shadow_new(r->w, wc, r->req, m->host_suffix, r->hs->down->proto,
                                            (unsigned)rt->priority, r->timeout_ms);
        if (!s) continue;
        if (!r->shadows) r->shadows = rm_arena_alloc(r->hs->arena, n * sizeof(*r->shadows));
        r->shadows[r->n_shadows++] = s;
    }
    if (r->n_shadows && !r->replay) r->buffer_limit = request_buffer_limit(r, rt, r->hs->vhost);
}

/* The request is complete: the mirrors go, with the whole body and the trailers. */
static void send_shadows(struct router *r)
{
    for (unsigned i = 0; i < r->n_shadows; i++)
        rm_shadow_start(r->shadows[i], rm_buf_data(&r->body), r->body.len, r->req_trailers);
    r->n_shadows = 0;
}

/* The mirrors will not be sent (the body outgrew the buffer, or the request ended early). */
static void drop_shadows(struct router *r)
{
    for (unsigned i = 0; i < r->n_shadows; i++)
        rm_shadow_abort(r->shadows[i]);
    r->n_shadows = 0;
}

/* Per-try timers run from the moment the attempt has both a stream and the whole request. */
static void start_try_timers(struct router *r)
{
    if (r->try_timers || !r->up || !r->req_end) return;
    r->try_timers = true;
    if (r->per_try_ms && r->state == RM_UP_ACTIVE)
        rm_timer_start(loop_of(r), &r->try_timer, r->per_try_ms, on_try_timeout);
    if (r->per_try_idle_ms) {
        r->activity_ms = rm_loop_now(loop_of(r));
        rm_timer_start(loop_of(r), &r->idle_timer, r->per_try_idle_ms, on_idle_timeout);
    }
}

/* The downstream request is complete: the route timeout starts (as Envoy: it covers the time
 * from the end of the request to the end of the response, over all attempts). */
static void request_complete(struct router *r)
{
    if (r->timers_started || r->state == RM_UP_DONE) return;
    r->timers_started = true;
    if (r->n_shadows) send_shadows(r);
    r->complete_ms = rm_loop_now(loop_of(r));
    if (r->timeout_ms) rm_timer_start(loop_of(r), &r->timeout, r->timeout_ms, on_timeout);
    start_try_timers(r);
}

/* ---- retries ------------------------------------------------------------------------------ */

static uint64_t worker_random(void *ctx)
{
    return rm_worker_random(ctx);
}

static void on_backoff(struct rm_timer *t)
{
    struct router *r = rm_container_of(t, struct router, backoff);
    if (stream_dead(r)) return;
    start_attempt(r);
}

/* Wait for the back-off, then start the next attempt (the current one is ended). */
static void schedule_retry(struct router *r)
{
    const struct rm_retry_policy *p = r->retry->pol;
    uint64_t ms = rm_retry_backoff_ms(p->backoff_base_ms, p->backoff_max_ms, r->retry->retries_done,
                                      worker_random, r->w);
    set_state(r, RM_UP_BACKOFF);
    rm_timer_start(loop_of(r), &r->backoff, ms, on_backoff);
}

/* Judge an outcome of the current attempt (<would_retry>: the policy would retry it) against
 * the retry count and max_retries.  Returns the decision; remembers in r->extra_flag why a
 * wanted retry was refused (URX: retries used up, UO: max_retries / budget overflow). */
static enum rm_retry_status judge(struct router *r, bool would_retry)
{
    enum rm_retry_status st = rm_retry_should(r->retry, would_retry, r->cb, cstats(r));
    if (st == RM_RETRY_STATUS_LIMIT)
        r->extra_flag = "URX";
    else if (st == RM_RETRY_STATUS_OVERFLOW)
        r->extra_flag = "UO";
    return st;
}

/* The current attempt failed without a response: retry it if the policy allows, else answer
 * <status> <flags> <body> (reset the downstream if the response had started). */
static void attempt_failed(struct router *r, enum rm_retry_failure kind, bool sent, unsigned status,
                           const char *flags, const char *details, const char *body)
{
    bool streaming = r->state == RM_UP_STREAMING;
    attempt_end(r, true);
    if (!streaming && r->retry &&
        judge(r, rm_retry_check_failure(r->retry, kind, sent)) == RM_RETRY_STATUS_YES) {
        schedule_retry(r);
        return;
    }
    fail_local(r, status, flags, details, body);
}

/* The body no longer fits the buffer kept for replay and mirrors: no retry and no mirror for
 * this request (Envoy gives both up; between attempts it answers 507). */
static void abandon_replay(struct router *r)
{
    rm_stat_inc(cstats(r), RM_CS_RETRY_OR_SHADOW_ABANDONED);
    drop_shadows(r);
    r->replay = false;
    rm_retry_finish(r->retry, r->cb);
    r->retry = NULL;
    rm_buf_consume(&r->body, r->body_sent);
    r->body_sent = 0;
    if (r->state == RM_UP_BACKOFF)
        fail_local(r, 507, NULL, "request_payload_exceeded_retry_buffer_limit",
                   "exceeded request buffer limit while retrying upstream");
}

/* ---- request path ------------------------------------------------------------------------- */

/* Path, host and header rewrites done once per request (auto_host_rewrite is per attempt). */
static void rewrite_request(struct router *r, const struct rm_route *rt,
                            const struct rm_weighted_cluster *wcl)
{
    struct rm_headers *h = r->req;
    struct rm_hcm_stream *hs = r->hs;
    if (rt->prefix_rewrite && rt->path_kind == RM_PATH_PREFIX) {
        struct rm_str path = RM_HDR_GET(h, ":path");
        size_t plen = rt->path_len <= path.len ? rt->path_len : path.len;
        size_t n = rt->prefix_rewrite_len + path.len - plen;
        char *np = rm_arena_alloc(hs->arena, n + 1);
        memcpy(np, rt->prefix_rewrite, rt->prefix_rewrite_len);
        memcpy(np + rt->prefix_rewrite_len, path.p + plen, path.len - plen);
        np[n] = 0;
        rm_headers_add_ref(h, "x-envoy-original-path", 21, path.p, path.len); /* in the arena */
        rm_headers_set_ref(h, ":path", 5, np, n);
    }
    const char *host =
        wcl && wcl->host_rewrite_literal ? wcl->host_rewrite_literal : rt->host_rewrite_literal;
    if (host) /* the route table lives in the snapshot the stream holds */
        rm_headers_set_ref(h, ":authority", 10, host, strlen(host));
    else if (rt->host_rewrite_header) {
        struct rm_str v =
            rm_headers_get(h, rt->host_rewrite_header, strlen(rt->host_rewrite_header));
        if (v.p) rm_headers_set_ref(h, ":authority", 10, v.p, v.len);
    } else if (rt->auto_host_rewrite) {
        r->auto_host = true;
    }
    if (wcl) rm_header_ops_apply_request(&wcl->headers, h);
    rm_header_ops_apply_request(&rt->headers_ops, h);
    rm_header_ops_apply_request(&hs->vhost->headers_ops, h);
    rm_header_ops_apply_request(&hs->cfg->routes->headers_ops, h);
}

/* Push the body not yet given to this attempt (and the end, trailers) to its stream. */
static void flush_body(struct router *r)
{
    struct rm_stream *up = r->up;
    if (r->up_req_end) return;
    size_t n = r->body.len - r->body_sent;
    bool end = r->req_end && !r->req_trailers;
    if (n || end) {
        up->ops->submit_data(up, rm_buf_data(&r->body) + r->body_sent, n, end);
        r->body_sent = r->body.len;
        r->up_req_end = end;
    }
    if (!keep_body(r)) {
        rm_buf_reset(&r->body);
        r->body_sent = 0;
    }
    if (r->req_end && r->req_trailers) {
        up->ops->submit_trailers(up, r->req_trailers);
        r->up_req_end = true;
    }
    if (r->down_paused && !up->ops->write_blocked(up)) {
        r->down_paused = false;
        rm_hcm_pause_request(r->hs, false);
    }
}

/* grpc-timeout for this attempt when max_grpc_timeout is set (Envoy: the per-try timeout, else
 * what is left of the route timeout). */
static void set_grpc_timeout(struct router *r)
{
    uint64_t ms = r->per_try_ms;
    if (!ms && r->timeout_ms) {
        uint64_t spent = r->timers_started ? rm_loop_now(loop_of(r)) - r->complete_ms : 0;
        ms = spent < r->timeout_ms ? r->timeout_ms - spent : 1;
    }
    if (!ms) return;
    char v[24];
    int n = snprintf(v, sizeof(v), "%llum", (unsigned long long)ms);
    rm_headers_set(r->req, "grpc-timeout", 12, v, (size_t)n);
}

/* Per-attempt request headers: attempt count, auto host rewrite, grpc-timeout. */
static void attempt_headers(struct router *r)
{
    if (r->hs->vhost->include_attempt_count) {
        char v[24];
        size_t n = rm_fmt_u64(v, r->attempts);
        rm_headers_set(r->req, "x-envoy-attempt-count", 21, v, n);
    }
    if (r->auto_host) {
        const char *hn = r->host->hostname ? r->host->hostname : r->host->addr_str;
        rm_headers_set(r->req, ":authority", 10, hn, strlen(hn));
    }
    if (r->grpc_timeout_header) set_grpc_timeout(r);
}

/* What access logs say of the connection an attempt uses (copied: it may close first). */
static void log_upstream_conn(struct rm_hcm_stream *hs, struct rm_codec *codec)
{
    rm_pool_codec_local_addr(codec, &hs->upstream_local);
    const struct rm_tls_info *ti = rm_pool_codec_tls_info(codec);
    const char *san = ti ? ti->peer_uri_san : NULL;
    hs->upstream_peer_uri_san = san ? rm_arena_strndup(hs->arena, san, strlen(san)) : NULL;
}

/* The pool lent <codec>: open the attempt's stream and send what we have of the request. */
static void open_stream(struct router *r, struct rm_codec *codec)
{
    struct rm_stream *up;
    if (rm_codec_new_stream(codec, &up_events, r, r->hs->arena, &up) != 0) {
        attempt_failed(r, RM_RETRY_FAIL_OVERFLOW, false, 503, "UO", D_OVERFLOW,
                       "upstream overflow");
        return;
    }
    r->up = up;
    set_state(r, RM_UP_ACTIVE);
    r->hs->transport_failure = NULL; /* a failed attempt before this one is not reported */
    r->hs->transport_errno = 0;
    if (r->hs->cfg->n_access_logs) /* UPSTREAM_LOCAL_ADDRESS, UPSTREAM_PEER_URI_SAN */
        log_upstream_conn(r->hs, codec);
    rm_outlier_report_local(&r->host->outlier, RM_OUTLIER_CONNECT_SUCCESS);
    r->counted_active = true;
    rm_stat_inc(cstats(r), RM_CS_UPSTREAM_RQ_TOTAL);
    rm_stat_inc(cstats(r), RM_CS_UPSTREAM_RQ_ACTIVE);
    atomic_fetch_add_explicit(&r->host->rq_total, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->host->rq_active, 1, memory_order_relaxed);
    r->up_start_ms = rm_loop_now(loop_of(r));
    attempt_headers(r);
    bool headers_only = r->req_end && !r->body.len && !r->req_trailers;
    up->ops->submit_headers(up, r->req, headers_only);
    if (headers_only)
        r->up_req_end = true;
    else
        flush_body(r);
    start_try_timers(r);
}

static void pool_ready(struct rm_pool_request *pr, struct rm_codec *codec, struct rm_host *host)
{
    struct router *r = rm_container_of(pr, struct router, preq);
    open_stream(r, codec);
}

static void pool_failure(struct rm_pool_request *pr, enum rm_pool_failure why, int err)
{
    struct router *r = rm_container_of(pr, struct router, preq);
    if (why == RM_POOL_OVERFLOW) { /* max_pending_requests: counted by the pool; no retry */
        attempt_end(r, false);
        fail_local(r, 503, "UO", D_OVERFLOW, OVERFLOW_BODY);
        return;
    }
    atomic_fetch_add_explicit(&r->host->rq_error, 1, memory_order_relaxed);
    rm_outlier_report_local(&r->host->outlier, RM_OUTLIER_CONNECT_FAILURE);
    bool timeout = why == RM_POOL_CONNECT_TIMEOUT;
    const char *body = timeout ? RESET_BODY "connection timeout" : RESET_BODY "connection failure";
    const char *details = timeout ? D_CONNECT_TIMEOUT : D_CONNECT_FAILURE;
    struct rm_hcm_stream *hs = r->hs;
    hs->transport_failure = NULL;
    hs->transport_errno = 0;
    if (err == -EKEYREJECTED) {
        body = TF_BODY(TF_VERIFY);
        hs->transport_failure = TF_VERIFY;
    } else if (err == -EPROTO) {
        body = TF_BODY(TF_HANDSHAKE);
        hs->transport_failure = TF_HANDSHAKE;
    } else if (err == -ENOKEY) { /* the cluster's TLS context waits for an SDS secret */
        body = TF_BODY(TF_NOT_READY);
        hs->transport_failure = TF_NOT_READY;
    } else if (!timeout && err < 0 && err != -ECANCELED && err != -ENOMEM && err != -EIO) {
        hs->transport_errno = -err; /* the socket's error: "delayed connect error: 111" */
    }
    if (err == -ECANCELED) { /* the pool is going away with its cluster: no retry */
        attempt_end(r, false);
        fail_local(r, 503, "UF", details, body);
        return;
    }
    attempt_failed(r, RM_RETRY_FAIL_CONNECT, false, 503, "UF", details, body);
}

static const struct rm_pool_request_cb pool_cb = {
    .on_ready = pool_ready,
    .on_failure = pool_failure,
};

static enum rm_http_proto upstream_proto(struct router *r)
{
    switch (r->wc->cluster->proto) {
    case RM_UPSTREAM_HTTP2:
        return RM_HTTP2;
    case RM_UPSTREAM_USE_DOWNSTREAM:
        return r->hs->down->proto == RM_HTTP2 ? RM_HTTP2 : RM_HTTP11;
    default:
        return RM_HTTP11;
    }
}

/* Which cluster this request goes to; NULL after a local reply. */
static struct rm_cluster *select_cluster(struct router *r, const struct rm_route *rt,
                                         const struct rm_weighted_cluster **wcl)
{
    struct rm_hcm_stream *hs = r->hs;
    *wcl = NULL;
    struct rm_cluster *c = rt->cluster;
    if (rt->n_weighted) {
        /* picked with the route by the connection manager (per-filter configs depend on it) */
        *wcl = hs->wcluster ? hs->wcluster
                            : rm_route_pick_weighted(rt, rm_worker_random(rm_hcm_worker(hs)));
        c = *wcl ? (*wcl)->cluster : NULL;
    } else if (rt->cluster_header) {
        c = cluster_of_header(r, rt->cluster_header);
    }
    if (!c) {
        rm_stat_inc(hs->cfg->stats, RM_HS_NO_CLUSTER);
        reply(r, rt->cluster_not_found_code, "NC", D_CLUSTER_NOT_FOUND, NULL);
    }
    return c;
}

static enum rm_filter_status route_direct(struct router *r, const struct rm_route *rt)
{
    if (rt->action == RM_ROUTE_DIRECT) {
        rm_stat_inc(r->hs->cfg->stats, RM_HS_RQ_DIRECT_RESPONSE);
        struct rm_hcm_stream *hs = r->hs;
        struct rm_headers *h = rm_arena_alloc(hs->arena, sizeof(*h));
        rm_headers_init(h, hs->arena);
        char num[24];
        int n = snprintf(num, sizeof(num), "%u", rt->direct_status);
        rm_headers_add(h, ":status", 7, num, (size_t)n);
        if (rt->direct_body_len) {
            rm_headers_add_ref(h, "content-type", 12, "text/plain", 10);
            n = snprintf(num, sizeof(num), "%zu", rt->direct_body_len);
            rm_headers_add(h, "content-length", 14, num, (size_t)n);
        }
        rm_header_ops_apply_response(&rt->headers_ops, h);
        rm_header_ops_apply_response(&hs->vhost->headers_ops, h);
        rm_header_ops_apply_response(&hs->cfg->routes->headers_ops, h);
        hs->flags |= RM_HS_LOCAL_REPLY;
        hs->details = "direct_response";
        bool body = rt->direct_body_len && !(hs->flags & RM_HS_HEAD);
        rm_hcm_encode_headers(hs, r->base.idx, h, !body);
        if (body)
            rm_hcm_encode_data(hs, r->base.idx, (const uint8_t *)rt->direct_body,
                               rt->direct_body_len, true);
        return RM_FILTER_STOP;
    }
    /* redirect */
    rm_stat_inc(r->hs->cfg->stats, RM_HS_RQ_REDIRECT);
    struct rm_hcm_stream *hs = r->hs;
    struct rm_str auth = RM_HDR_GET(r->req, ":authority");
    struct rm_str path = RM_HDR_GET(r->req, ":path");
    const char *scheme = rt->redirect_scheme ? rt->redirect_scheme : "http";
    char loc[2048];
    if (rt->redirect_port)
        snprintf(loc, sizeof(loc), "%s://%s:%u%s", scheme,
                 rt->redirect_host ? rt->redirect_host : "", rt->redirect_port,
                 rt->redirect_path ? rt->redirect_path : "/");
    else
        snprintf(loc, sizeof(loc), "%s://%.*s%.*s", scheme,
                 rt->redirect_host ? (int)strlen(rt->redirect_host) : (int)auth.len,
                 rt->redirect_host ? rt->redirect_host : auth.p,
                 rt->redirect_path ? (int)strlen(rt->redirect_path) : (int)path.len,
                 rt->redirect_path ? rt->redirect_path : path.p);
    struct rm_headers *h = rm_arena_alloc(hs->arena, sizeof(*h));
    rm_headers_init(h, hs->arena);
    char num[8];
    int n = snprintf(num, sizeof(num), "%u", rt->redirect_status ? rt->redirect_status : 301);
    rm_headers_add(h, ":status", 7, num, (size_t)n);
    rm_headers_add(h, "location", 8, loc, strlen(loc));
    hs->flags |= RM_HS_LOCAL_REPLY;
    hs->details = "direct_response"; /* Envoy: a redirect is a direct response entry */
    rm_hcm_encode_headers(hs, r->base.idx, h, true);
    return RM_FILTER_STOP;
}

/* ---- attempts ----------------------------------------------------------------------------- */

/* The host for the next attempt.  With previous_hosts, a retry re-picks a host already tried,
 * up to host_selection_retry_max_attempts times, then takes the last pick (Envoy). */
static struct rm_host *pick_host(struct router *r)
{
    if (r->wc->cluster->odst) { /* ORIGINAL_DST: one host, the original destination */
        struct rm_conn *dc = r->hs->hc->base.closed ? NULL : r->hs->hc->conn; /* closed: freed */
        const struct sockaddr *restored =
            dc && (dc->flags & RM_CONN_LOCAL_RESTORED) ? (const struct sockaddr *)&dc->local : NULL;
        return rm_odst_pick(r->wc, restored, r->req);
    }
    struct rm_host *h = rm_lb_pick(r->wc, NULL);
    if (!r->retry || !r->retry->n_tried) return h;
    for (uint32_t i = 0;
         h && i < r->retry->pol->host_selection_attempts && rm_retry_reject_host(r->retry, h); i++)
        h = rm_lb_pick(r->wc, NULL);
    return h;
}

/* Start an attempt: pick a host, take a max_requests slot, ask the pool for a stream. */
static void start_attempt(struct router *r)
{
    r->attempts++;
    r->hs->attempts = r->attempts;
    r->host = pick_host(r);
    if (!r->host) {
        rm_stat_inc(cstats(r), RM_CS_UPSTREAM_CX_NONE_HEALTHY);
        fail_local(r, 503, "UH", D_NO_HEALTHY, "no healthy upstream");
        return;
    }
    if (r->hs->cfg->n_access_logs) /* UPSTREAM_HOST */
        r->hs->upstream_host =
            rm_arena_strndup(r->hs->arena, r->host->addr_str, strlen(r->host->addr_str));
    if (r->retry) rm_retry_note_host(r->retry, r->hs->arena, r->host);
    if (!rm_cb_try_acquire(r->cb, RM_CB_RQ)) { /* max_requests: Envoy counts it as pending */
        rm_stat_inc(cstats(r), RM_CS_UPSTREAM_RQ_PENDING_OVERFLOW);
        fail_local(r, 503, "UO", D_OVERFLOW, OVERFLOW_BODY);
        return;
    }
    r->holds_rq = true;
    unsigned prio = (unsigned)r->rt->priority;
    r->pool = rm_worker_cluster_pool(r->wc, r->host, upstream_proto(r), prio);
    if (!r->pool) { /* max_connection_pools (upstream_cx_pool_overflow counted) */
        attempt_end(r, false);
        fail_local(r, 503, "UH", D_NO_HEALTHY, "no healthy upstream");
        return;
    }
    set_state(r, RM_UP_PENDING);
    struct rm_codec *codec;
    if (rm_pool_acquire(r->pool, &r->preq, &pool_cb, prio, &codec) == RM_OK) open_stream(r, codec);
    /* RM_AGAIN: pool_ready/pool_failure later; RM_DONE: pool_failure ran */
}

/* x-envoy-* request headers, timeouts and the retry state of this request. */
static void setup_policy(struct router *r, const struct rm_route *rt, const struct rm_vhost *vh)
{
    struct rm_retry_headers xh;
    rm_retry_headers_take(r->req, &xh);
    r->timeout_ms = rt->timeout_ms;
    if ((r->hs->flags & RM_HS_GRPC) && rt->has_max_grpc_timeout) {
        uint64_t g = rm_grpc_timeout_ms(RM_HDR_GET(r->req, "grpc-timeout"));
        if (rt->max_grpc_timeout_ms && (g == 0 || g > rt->max_grpc_timeout_ms))
            g = rt->max_grpc_timeout_ms;
        r->timeout_ms = g > UINT32_MAX ? UINT32_MAX : (uint32_t)g;
        r->grpc_timeout_header = true;
    }
    uint64_t v;
    if (xh.rq_timeout.p && rm_retry_parse_u64(xh.rq_timeout, &v))
        r->timeout_ms = v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
    const struct rm_retry_policy *pol = rt->retry ? rt->retry : vh->retry;
    if (pol) {
        r->per_try_ms = pol->per_try_timeout_ms;
        r->per_try_idle_ms = pol->per_try_idle_timeout_ms;
    }
    if (xh.per_try.p && rm_retry_parse_u64(xh.per_try, &v))
        r->per_try_ms = v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
    if (r->timeout_ms && r->per_try_ms >= r->timeout_ms) /* Envoy ignores it then */
        r->per_try_ms = 0;
    if (!pol && !xh.any) return;
    r->retry = rm_retry_state_new(r->hs->arena, pol, &xh, r->req);
    if (!r->retry) return;
    r->replay = true;
    r->buffer_limit = request_buffer_limit(r, rt, vh);
}

static enum rm_filter_status router_on_request_headers(struct rm_filter *f, struct rm_headers *h,
                                                       bool end)
{
    struct router *r = R(f);
    struct rm_hcm_stream *hs = f->stream;
    r->hs = hs;
    r->req = h;
    r->req_end = end;
    const struct rm_route *rt = hs->route;
    if (!rt) {
        rm_stat_inc(hs->cfg->stats, RM_HS_NO_ROUTE);
        reply(r, 404, "NR", "route_not_found", NULL);
        return RM_FILTER_STOP;
    }
    if (rt->action != RM_ROUTE_FORWARD) return route_direct(r, rt);
    const struct rm_weighted_cluster *wcl;
    struct rm_cluster *c = select_cluster(r, rt, &wcl);
    if (!c) return RM_FILTER_STOP;
    struct rm_worker_cluster *wc = rm_worker_cluster_for(rm_hcm_worker(hs), c);
    if (!wc) { /* the cluster left the config since this connection started */
        rm_stat_inc(hs->cfg->stats, RM_HS_NO_CLUSTER);
        reply(r, rt->cluster_not_found_code, "NC", D_CLUSTER_NOT_FOUND, NULL);
        return RM_FILTER_STOP;
    }
    r->w = rm_hcm_worker(hs);
    r->rt = rt;
    r->wc = rm_worker_cluster_hold(wc);
    if (r->hs->cfg->n_access_logs) /* UPSTREAM_CLUSTER */
        r->hs->upstream_cluster =
            rm_arena_strndup(r->hs->arena, wc->cluster->name, strlen(wc->cluster->name));
    r->cb = c->cb[rt->priority ? 1 : 0];
    setup_policy(r, rt, hs->vhost);
    rewrite_request(r, rt, wcl);
    if (rt->mirrors.n) plan_shadows(r, rt);
    if (end) request_complete(r);
    start_attempt(r);
    return RM_FILTER_STOP;
}

/* Pause the downstream while the upstream cannot take more. */
static void request_backpressure(struct router *r, bool end)
{
    if (!end && !r->down_paused && r->up && r->up->ops->write_blocked(r->up)) {
        r->down_paused = true;
        rm_hcm_pause_request(r->hs, true);
    }
}

static void maybe_up_done(struct router *r);

static enum rm_filter_status router_on_request_data(struct rm_filter *f, const uint8_t *p, size_t n,
                                                    bool end)
{
    struct router *r = R(f);
    if (!r->w || r->state == RM_UP_DONE) return RM_FILTER_STOP;
    r->req_end = end;
    r->had_body |= n > 0;
    if (keep_body(r) && r->body.len + n > r->buffer_limit) {
        abandon_replay(r);
        if (r->state == RM_UP_DONE) return RM_FILTER_STOP;
    }
    bool sending = r->up && !r->up_req_end;
    if (!keep_body(r) && sending && !r->body.len) { /* stream it through */
        r->up->ops->submit_data(r->up, p, n, end);
        r->up_req_end = end;
    } else {
        rm_buf_append(&r->body, p, n);
        if (sending)
            flush_body(r);
        else if (!keep_body(r) && r->body.len > r->hs->hc->lc->buffer_limit && !r->down_paused) {
            r->down_paused = true; /* still connecting: buffer, bounded */
            rm_hcm_pause_request(r->hs, true);
        }
    }
    if (r->up && r->per_try_idle_ms) r->activity_ms = rm_loop_now(loop_of(r));
    request_backpressure(r, end);
    if (end) request_complete(r);
    maybe_up_done(r);
    return RM_FILTER_STOP;
}

static enum rm_filter_status router_on_request_trailers(struct rm_filter *f, struct rm_headers *h)
{
    struct router *r = R(f);
    if (!r->w || r->state == RM_UP_DONE) return RM_FILTER_STOP;
    r->req_end = true;
    r->req_trailers = h;
    if (r->up && !r->up_req_end) flush_body(r);
    request_complete(r);
    maybe_up_done(r);
    return RM_FILTER_STOP;
}

static void router_on_destroy(struct rm_filter *f)
{
    struct router *r = R(f);
    if (r->w) finish(r);
    if (r->n_shadows) drop_shadows(r);
    rm_buf_reset(&r->body);
    rm_worker_cluster_release(r->wc);
    r->wc = NULL;
}

/* ---- response path ------------------------------------------------------------------------ */

/* Both directions of the attempt are complete: release the stream, the request is done. */
static void maybe_up_done(struct router *r)
{
    if (r->up && r->up_req_end && r->up_resp_end) {
        attempt_end(r, false);
        finish(r);
    }
}

/* The response is complete: no timeout applies any more. */
static void response_complete(struct router *r)
{
    r->up_resp_end = true;
    rm_stat_inc(cstats(r), RM_CS_UPSTREAM_RQ_COMPLETED);
    rm_timer_stop(loop_of(r), &r->timeout);
    rm_timer_stop(loop_of(r), &r->try_timer);
    rm_timer_stop(loop_of(r), &r->idle_timer);
    maybe_up_done(r);
}

static void on_down_writable(void *ctx)
{
    struct router *r = ctx;
    if (r->up_paused && r->up) {
        r->up_paused = false;
        r->up->ops->pause_reading(r->up, false);
    }
}

static void backpressure_response(struct router *r)
{
    if (r->up && !r->up_paused && !r->up_resp_end && rm_hcm_down_blocked(r->hs)) {
        r->up_paused = true;
        r->hs->on_down_writable = on_down_writable;
        r->hs->on_down_writable_ctx = r;
        r->up->ops->pause_reading(r->up, true);
    }
}

/* Response headers of an attempt that may still be retried: true when a retry was scheduled
 * (the attempt is ended), false to forward them (Envoy forwards a retriable response it may
 * not retry: the retries are used up, flag URX, or max_retries overflows, flag UO). */
static bool retry_response(struct router *r, unsigned code, struct rm_headers *h, bool end)
{
    if (judge(r, rm_retry_check_headers(r->retry, code, h)) != RM_RETRY_STATUS_YES) return false;
    atomic_fetch_add_explicit(&r->host->rq_error, 1, memory_order_relaxed);
    attempt_end(r, !(end && r->up_req_end)); /* reset unless both directions are done */
    schedule_retry(r);
    return true;
}

static void up_on_headers(struct rm_stream *s, struct rm_headers *h, bool end)
{
    struct router *r = s->user;
    struct rm_str st = rm_headers_get_key(h, RM_HK_STATUS);
    int64_t code = st.p ? rm_parse_u63(st.p, st.len) : -1;
    if (code >= 100 && code < 200)
        return; /* informational: 100-continue was answered downstream already */
    unsigned status = code > 0 ? (unsigned)code : 502;
    rm_outlier_report_http(&r->host->outlier, status);
    r->activity_ms = rm_loop_now(loop_of(r));
    if (r->retry && retry_response(r, status, h, end)) return;
    struct rm_hcm_stream *hs = r->hs;
    set_state(r, RM_UP_STREAMING);
    hs->details = "via_upstream";
    rm_timer_stop(loop_of(r), &r->try_timer); /* the per-try timeout ends with the headers */
    if (r->extra_flag) hs->resp_flags = r->extra_flag;
    count_upstream_status(r, status);
    /* the name is a literal, the value is formatted into the arena: neither is copied */
    char *num = rm_arena_alloc(h->arena, 24);
    size_t n = rm_fmt_u64(num, rm_loop_now(loop_of(r)) - r->up_start_ms);
    num[n] = 0; /* as rm_headers_add's copies */
    /* set, not added: an upstream sidecar's own x-envoy-upstream-service-time is replaced, as
     * Envoy does (a mesh hop would otherwise pass two) */
    rm_headers_set_ref_key(h, RM_HK_X_ENVOY_UPSTREAM_SERVICE_TIME, num, n);
    if (hs->vhost->include_attempt_count_in_response) {
        char cnt[24];
        n = rm_fmt_u64(cnt, r->attempts);
        rm_headers_set(h, "x-envoy-attempt-count", 21, cnt, n);
    }
    const struct rm_route *rt = hs->route;
    rm_header_ops_apply_response(&rt->headers_ops, h);
    rm_header_ops_apply_response(&hs->vhost->headers_ops, h);
    rm_header_ops_apply_response(&hs->cfg->routes->headers_ops, h);
    if (end) response_complete(r);
    rm_hcm_encode_headers(hs, r->base.idx, h, end);
    backpressure_response(r);
}

static void up_on_data(struct rm_stream *s, const uint8_t *p, size_t n, bool end)
{
    struct router *r = s->user;
    r->activity_ms = rm_loop_now(loop_of(r));
    if (end) response_complete(r);
    rm_hcm_encode_data(r->hs, r->base.idx, p, n, end);
    backpressure_response(r);
}

static void up_on_trailers(struct rm_stream *s, struct rm_headers *h)
{
    struct router *r = s->user;
    response_complete(r);
    rm_hcm_encode_trailers(r->hs, r->base.idx, h);
}

/* RFC 9113 8.7: a stream refused (REFUSED_STREAM, or above a GOAWAY's last stream id) was not
 * processed, so a request that has nothing to replay (no body) is sent again at once, without a
 * retry policy — as gRPC clients do.  Returns true when it did so. */
static bool retry_refused(struct router *r)
{
    if (r->retry || r->refused_retries >= 2 || !r->req_end || r->req_trailers || r->had_body)
        return false;
    r->refused_retries++;
    attempt_end(r, false);
    set_state(r, RM_UP_BACKOFF);
    rm_timer_start(loop_of(r), &r->backoff, 0, on_backoff);
    return true;
}

static void up_on_reset(struct rm_stream *s, enum rm_reset_reason why)
{
    struct router *r = s->user;
    rm_stat_inc(cstats(r), RM_CS_UPSTREAM_RQ_RX_RESET);
    if (why != RM_RESET_OVERFLOW) /* Envoy: any reset but overflow is a local-origin failure */
        rm_outlier_report_local(&r->host->outlier, RM_OUTLIER_CONNECT_FAILURE);
    r->up = NULL; /* reset by the peer: released, not reset again */
    s->ops->release(s);
    active_done(r);
    rm_pool_stream_done(r->pool);
    if (r->state == RM_UP_STREAMING) {
        finish(r);
        r->hs->details = reset_details(why, true);
        rm_hcm_reset(r->hs);
        return;
    }
    atomic_fetch_add_explicit(&r->host->rq_error, 1, memory_order_relaxed);
    char body[160];
    snprintf(body, sizeof(body), RESET_BODY "%s", rm_reset_reason_str(why));
    char *b = rm_arena_strndup(r->hs->arena, body, strlen(body));
    const char *d = reset_details(why, false);
    r->hs->transport_failure = NULL; /* this attempt had its connection */
    r->hs->transport_errno = 0;
    switch (why) {
    case RM_RESET_PROTOCOL:
        rm_stat_inc(cstats(r), RM_CS_UPSTREAM_CX_PROTOCOL_ERROR);
        attempt_failed(r, RM_RETRY_FAIL_RESET, true, 502, "UPE", d, b);
        break;
    case RM_RESET_CONNECTION_FAILURE:
        attempt_failed(r, RM_RETRY_FAIL_CONNECT, true, 503, "UF", d, b);
        break;
    case RM_RESET_CONNECTION_TERMINATION:
        attempt_failed(r, RM_RETRY_FAIL_RESET, true, 503, "UC", d, b);
        break;
    case RM_RESET_OVERFLOW:
        attempt_failed(r, RM_RETRY_FAIL_OVERFLOW, true, 503, "UO", d, b);
        break;
    case RM_RESET_REFUSED:
        if (!retry_refused(r)) attempt_failed(r, RM_RETRY_FAIL_REFUSED, true, 503, "UR", d, b);
        break;
    default:
        attempt_failed(r, RM_RETRY_FAIL_RESET, true, 503, "UR", d, b);
        break;
    }
}

static void up_on_writable(struct rm_stream *s)
{
    struct router *r = s->user;
    if (r->down_paused) {
        r->down_paused = false;
        rm_hcm_pause_request(r->hs, false);
    }
}

static const struct rm_stream_events up_events = {
    .on_headers = up_on_headers,
    .on_data = up_on_data,
    .on_trailers = up_on_trailers,
    .on_reset = up_on_reset,
    .on_writable = up_on_writable,
};

const struct rm_filter_ops rm_filter_router = {
    .name = "envoy.filters.http.router",
    .type_url = "envoy.extensions.filters.http.router.v3.Router",
    .config_new = router_config_new,
    .config_free = router_config_free,
    .instance_size = sizeof(struct router),
    .on_request_headers = router_on_request_headers,
    .on_request_data = router_on_request_data,
    .on_request_trailers = router_on_request_trailers,
    .on_destroy = router_on_destroy,
};
