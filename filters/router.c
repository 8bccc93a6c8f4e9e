/* envoy.filters.http.router: the last filter.  Picks the cluster and host for the matched
 * route, takes a stream from the host's connection pool and relays the request and response,
 * with backpressure both ways and Envoy's local replies (404 NR, 503 UH/UF/NC, 504 UT…). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/extensions/filters/http/router/v3/router.pb-c.h"
#include "filters/filter.h"
#include "google/protobuf/any.pb-c.h"
#include "proxy/config/snapshot.h"
#include "proxy/core/log.h"
#include "proxy/http/hcm.h"
#include "proxy/server/worker.h"
#include "proxy/upstream/pool.h"

struct router {
    struct rm_filter base;
    struct rm_hcm_stream *hs;
    struct rm_worker_cluster *wc;
    struct rm_host *host;
    struct rm_pool_request preq;
    struct rm_stream *up;
    struct rm_headers *req;
    struct rm_buf body;     /* request body waiting for the upstream stream */
    struct rm_headers *req_trailers;
    struct rm_timer timeout;
    uint64_t up_start_ms;
    bool req_end;           /* downstream request complete (seen by us) */
    bool up_req_end;        /* request fully submitted upstream */
    bool up_resp_end;       /* upstream response complete */
    bool resp_started;
    bool up_paused;         /* we paused the upstream response */
    bool down_paused;       /* we paused the downstream request */
    bool counted_active;
};

static const struct rm_stream_events up_events;
static const struct rm_pool_request_cb pool_cb;

static inline struct router *R(struct rm_filter *f) { return (struct router *)f; }
static inline struct rm_stats *cstats(struct router *r) { return r->wc->cluster->stats; }

/* ---- config ------------------------------------------------------------------------------- */

static int router_sentinel;

static void *router_config_new(const Google__Protobuf__Any *any, const char *path,
                               struct rm_error *err)
{
    if (!any || !any->value.len)
        return &router_sentinel;
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

static void reply(struct router *r, unsigned status, const char *flags, const char *body)
{
    rm_hcm_local_reply(r->hs, r->base.idx, status, flags, body);
}

static void count_upstream_status(struct router *r, unsigned status)
{
    static const unsigned idx[] = {0, RM_CS_UPSTREAM_RQ_1XX, RM_CS_UPSTREAM_RQ_2XX,
                                   RM_CS_UPSTREAM_RQ_3XX, RM_CS_UPSTREAM_RQ_4XX,
                                   RM_CS_UPSTREAM_RQ_5XX};
    unsigned c = status / 100;
    if (c >= 1 && c <= 5)
        rm_stat_inc(cstats(r), idx[c]);
    if (r->host) {
        if (status >= 500)
            atomic_fetch_add_explicit(&r->host->rq_error, 1, memory_order_relaxed);
        else
            atomic_fetch_add_explicit(&r->host->rq_success, 1, memory_order_relaxed);
    }
}

static void active_done(struct router *r)
{
    if (!r->counted_active)
        return;
    r->counted_active = false;
    rm_stat_dec(cstats(r), RM_CS_UPSTREAM_RQ_ACTIVE);
    atomic_fetch_sub_explicit(&r->host->rq_active, 1, memory_order_relaxed);
}

/* Drop the upstream stream: reset it unless both directions finished. */
static void up_release(struct router *r, bool reset)
{
    struct rm_stream *up = r->up;
    if (!up)
        return;
    r->up = NULL;
    if (reset)
        up->ops->reset(up, RM_RESET_LOCAL);
    up->ops->release(up);
    active_done(r);
}

static void maybe_up_done(struct router *r)
{
    if (r->up && r->up_req_end && r->up_resp_end) {
        rm_timer_stop(rm_hcm_worker(r->hs)->loop, &r->timeout);
        up_release(r, false);
    }
}

/* ---- request path ------------------------------------------------------------------------- */

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
        rm_headers_add(h, "x-envoy-original-path", 21, path.p, path.len);
        rm_headers_set(h, ":path", 5, np, n);
    }
    const char *host = wcl && wcl->host_rewrite_literal ? wcl->host_rewrite_literal
                                                         : rt->host_rewrite_literal;
    if (host)
        rm_headers_set(h, ":authority", 10, host, strlen(host));
    else if (rt->host_rewrite_header) {
        struct rm_str v = rm_headers_get(h, rt->host_rewrite_header, strlen(rt->host_rewrite_header));
        if (v.p)
            rm_headers_set(h, ":authority", 10, v.p, v.len);
    } else if (rt->auto_host_rewrite && r->host) {
        const char *hn = r->host->hostname ? r->host->hostname : r->host->addr_str;
        rm_headers_set(h, ":authority", 10, hn, strlen(hn));
    }
    if (wcl)
        rm_header_ops_apply_request(&wcl->headers, h);
    rm_header_ops_apply_request(&rt->headers_ops, h);
    rm_header_ops_apply_request(&hs->vhost->headers_ops, h);
    rm_header_ops_apply_request(&hs->cfg->routes->headers_ops, h);
}

static void on_timeout(struct rm_timer *t)
{
    struct router *r = rm_container_of(t, struct router, timeout);
    rm_stat_inc(cstats(r), RM_CS_UPSTREAM_RQ_TIMEOUT);
    if (r->host)
        atomic_fetch_add_explicit(&r->host->rq_timeout, 1, memory_order_relaxed);
    if (r->up && !r->resp_started)
        rm_outlier_report_local(&r->host->outlier, RM_OUTLIER_TIMEOUT);
    rm_pool_cancel(&r->preq);
    up_release(r, true);
    if (r->resp_started)
        rm_hcm_reset(r->hs);
    else
        reply(r, 504, "UT", "upstream request timeout");
}

/* Push buffered body (and the end) to the upstream stream. */
static void flush_body(struct router *r)
{
    struct rm_stream *up = r->up;
    if (r->body.len || (r->req_end && !r->req_trailers)) {
        bool end = r->req_end && !r->req_trailers;
        up->ops->submit_data(up, rm_buf_data(&r->body), r->body.len, end);
        rm_buf_reset(&r->body);
        r->up_req_end = end;
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

static void start_upstream(struct router *r, struct rm_codec *codec)
{
    struct rm_stream *up;
    if (rm_codec_new_stream(codec, &up_events, r, r->hs->arena, &up) != 0) {
        reply(r, 503, "UO", "upstream overflow");
        return;
    }
    r->up = up;
    rm_outlier_report_local(&r->host->outlier, RM_OUTLIER_CONNECT_SUCCESS);
    r->counted_active = true;
    rm_stat_inc(cstats(r), RM_CS_UPSTREAM_RQ_TOTAL);
    rm_stat_inc(cstats(r), RM_CS_UPSTREAM_RQ_ACTIVE);
    atomic_fetch_add_explicit(&r->host->rq_total, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->host->rq_active, 1, memory_order_relaxed);
    r->up_start_ms = rm_loop_now(rm_hcm_worker(r->hs)->loop);
    bool headers_only = r->req_end && !r->body.len && !r->req_trailers;
    up->ops->submit_headers(up, r->req, headers_only);
    if (headers_only)
        r->up_req_end = true;
    else if (r->up)
        flush_body(r);
}

static void pool_ready(struct rm_pool_request *pr, struct rm_codec *codec, struct rm_host *host)
{
    struct router *r = rm_container_of(pr, struct router, preq);
    start_upstream(r, codec);
}

static void pool_failure(struct rm_pool_request *pr, enum rm_pool_failure why, int err)
{
    struct router *r = rm_container_of(pr, struct router, preq);
    if (why == RM_POOL_OVERFLOW) {
        reply(r, 503, "UO", "upstream connect error or disconnect/reset before headers. reset "
                            "reason: overflow");
        return;
    }
    atomic_fetch_add_explicit(&r->host->rq_error, 1, memory_order_relaxed);
    rm_outlier_report_local(&r->host->outlier, RM_OUTLIER_CONNECT_FAILURE);
    reply(r, 503, "UF", "upstream connect error or disconnect/reset before headers. reset reason: "
                        "connection failure");
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
        struct rm_str v = rm_headers_get(r->req, rt->cluster_header, strlen(rt->cluster_header));
        c = NULL;
        if (v.p) {
            char name[256];
            snprintf(name, sizeof(name), "%.*s", (int)v.len, v.p);
            c = rm_snapshot_cluster(rm_hcm_snapshot(hs), name);
        }
    }
    if (!c) {
        rm_stat_inc(hs->cfg->stats, RM_HS_NO_CLUSTER);
        reply(r, rt->cluster_not_found_code, "NC", NULL);
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
    rm_hcm_encode_headers(hs, r->base.idx, h, true);
    return RM_FILTER_STOP;
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
        reply(r, 404, "NR", NULL);
        return RM_FILTER_STOP;
    }
    if (rt->action != RM_ROUTE_FORWARD)
        return route_direct(r, rt);
    const struct rm_weighted_cluster *wcl;
    struct rm_cluster *c = select_cluster(r, rt, &wcl);
    if (!c)
        return RM_FILTER_STOP;
    struct rm_worker *w = rm_hcm_worker(hs);
    r->wc = rm_worker_cluster(w, c->idx);
    r->host = rm_lb_pick(r->wc, NULL);
    if (!r->host) {
        rm_stat_inc(c->stats, RM_CS_UPSTREAM_CX_NONE_HEALTHY);
        reply(r, 503, "UH", "no healthy upstream");
        return RM_FILTER_STOP;
    }
    rewrite_request(r, rt, wcl);
    if (rt->timeout_ms)
        rm_timer_start(w->loop, &r->timeout, rt->timeout_ms, on_timeout);
    struct rm_pool *pool = rm_worker_cluster_pool(r->wc, r->host, upstream_proto(r), 0);
    struct rm_codec *codec;
    int rc = rm_pool_acquire(pool, &r->preq, &pool_cb, 0, &codec);
    if (rc == RM_OK)
        start_upstream(r, codec);
    return RM_FILTER_STOP;
}

static enum rm_filter_status router_on_request_data(struct rm_filter *f, const uint8_t *p,
                                                    size_t n, bool end)
{
    struct router *r = R(f);
    r->req_end = end;
    if (!r->up) { /* still connecting: buffer, bounded */
        rm_buf_append(&r->body, p, n);
        if (r->body.len > r->hs->hc->lc->buffer_limit && !r->down_paused) {
            r->down_paused = true;
            rm_hcm_pause_request(r->hs, true);
        }
        return RM_FILTER_STOP;
    }
    r->up->ops->submit_data(r->up, p, n, end);
    if (end)
        r->up_req_end = true;
    if (!end && !r->down_paused && r->up->ops->write_blocked(r->up)) {
        r->down_paused = true;
        rm_hcm_pause_request(r->hs, true);
    }
    maybe_up_done(r);
    return RM_FILTER_STOP;
}

static enum rm_filter_status router_on_request_trailers(struct rm_filter *f, struct rm_headers *h)
{
    struct router *r = R(f);
    r->req_end = true;
    r->req_trailers = h;
    if (r->up) {
        flush_body(r);
        maybe_up_done(r);
    }
    return RM_FILTER_STOP;
}

static void router_on_destroy(struct rm_filter *f)
{
    struct router *r = R(f);
    if (r->hs)
        rm_timer_stop(rm_hcm_worker(r->hs)->loop, &r->timeout);
    rm_pool_cancel(&r->preq);
    up_release(r, true);
    rm_buf_reset(&r->body);
}

/* ---- response path ------------------------------------------------------------------------ */

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

static void up_on_headers(struct rm_stream *s, struct rm_headers *h, bool end)
{
    struct router *r = s->user;
    struct rm_str st = RM_HDR_GET(h, ":status");
    int64_t code = st.p ? rm_parse_u63(st.p, st.len) : -1;
    if (code >= 100 && code < 200)
        return; /* informational: 100-continue was answered downstream already */
    struct rm_hcm_stream *hs = r->hs;
    r->resp_started = true;
    if (end)
        r->up_resp_end = true;
    count_upstream_status(r, code > 0 ? (unsigned)code : 502);
    rm_outlier_report_http(&r->host->outlier, code > 0 ? (unsigned)code : 502);
    char num[24];
    int n = snprintf(num, sizeof(num), "%llu",
                     (unsigned long long)(rm_loop_now(rm_hcm_worker(hs)->loop) - r->up_start_ms));
    rm_headers_add(h, "x-envoy-upstream-service-time", 29, num, (size_t)n);
    const struct rm_route *rt = hs->route;
    rm_header_ops_apply_response(&rt->headers_ops, h);
    rm_header_ops_apply_response(&hs->vhost->headers_ops, h);
    rm_header_ops_apply_response(&hs->cfg->routes->headers_ops, h);
    if (end) {
        rm_stat_inc(cstats(r), RM_CS_UPSTREAM_RQ_COMPLETED);
        maybe_up_done(r);
    }
    rm_hcm_encode_headers(hs, r->base.idx, h, end);
    backpressure_response(r);
}

static void up_on_data(struct rm_stream *s, const uint8_t *p, size_t n, bool end)
{
    struct router *r = s->user;
    if (end) {
        r->up_resp_end = true;
        rm_stat_inc(cstats(r), RM_CS_UPSTREAM_RQ_COMPLETED);
        maybe_up_done(r);
    }
    rm_hcm_encode_data(r->hs, r->base.idx, p, n, end);
    backpressure_response(r);
}

static void up_on_trailers(struct rm_stream *s, struct rm_headers *h)
{
    struct router *r = s->user;
    r->up_resp_end = true;
    rm_stat_inc(cstats(r), RM_CS_UPSTREAM_RQ_COMPLETED);
    maybe_up_done(r);
    rm_hcm_encode_trailers(r->hs, r->base.idx, h);
}

static void up_on_reset(struct rm_stream *s, enum rm_reset_reason why)
{
    struct router *r = s->user;
    rm_stat_inc(cstats(r), RM_CS_UPSTREAM_RQ_RX_RESET);
    if (why != RM_RESET_OVERFLOW) /* Envoy: any reset but overflow is a local-origin failure */
        rm_outlier_report_local(&r->host->outlier, RM_OUTLIER_CONNECT_FAILURE);
    rm_timer_stop(rm_hcm_worker(r->hs)->loop, &r->timeout);
    struct rm_stream *up = r->up;
    r->up = NULL;
    up->ops->release(up);
    active_done(r);
    if (r->resp_started) {
        rm_hcm_reset(r->hs);
        return;
    }
    atomic_fetch_add_explicit(&r->host->rq_error, 1, memory_order_relaxed);
    char body[160];
    snprintf(body, sizeof(body),
             "upstream connect error or disconnect/reset before headers. reset reason: %s",
             rm_reset_reason_str(why));
    switch (why) {
    case RM_RESET_PROTOCOL:
        rm_stat_inc(cstats(r), RM_CS_UPSTREAM_CX_PROTOCOL_ERROR);
        reply(r, 502, "UPE", body);
        break;
    case RM_RESET_CONNECTION_FAILURE:
        reply(r, 503, "UF", body);
        break;
    case RM_RESET_CONNECTION_TERMINATION:
        reply(r, 503, "UC", body);
        break;
    case RM_RESET_OVERFLOW:
        reply(r, 503, "UO", body);
        break;
    default:
        reply(r, 503, "UR", body);
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
