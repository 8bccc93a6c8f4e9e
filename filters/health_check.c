/* envoy.filters.http.health_check, as Envoy's: a request whose headers match every `headers`
 * matcher is a health check (access logs' not_health_check filter sees it).
 *
 * Answered here (no upstream) unless pass_through_mode: 200, or 503 with flag LH when the
 * server fails health checks (admin /healthcheck/fail), when a cluster of
 * cluster_min_healthy_percentages has fewer routable hosts than its percentage (or does not
 * exist, or is empty with a non-zero percentage), details health_check_ok / _failed /
 * _failed_no_cluster_found / _failed_cluster_empty / _failed_cluster_unhealthy /
 * ok_cluster_healthy.  In pass_through_mode the request goes upstream, except when the server
 * fails health checks (503 LH) or cache_time holds an upstream answer younger than cache_time
 * (health_check_cached).  Health check responses get x-envoy-upstream-healthchecked-cluster
 * (the node's cluster); other responses get x-envoy-immediate-health-check-fail: true while the
 * server fails health checks.  A matching request is answered when its headers arrive, even if
 * a body follows (Envoy waits for the end of the request: health checks have no body). */
#include "filters/health_check.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/extensions/filters/http/health_check/v3/health_check.pb-c.h"
#include "filters/filter.h"
#include "google/protobuf/any.pb-c.h"
#include "proxy/config/pbtypes.h"
#include "proxy/config/snapshot.h"
#include "proxy/core/loop.h"
#include "proxy/http/hcm.h"
#include "proxy/http/route.h"
#include "proxy/server/worker.h"
#include "proxy/upstream/pool.h"

typedef Envoy__Extensions__Filters__Http__HealthCheck__V3__HealthCheck HealthCheckPb;

static _Atomic bool failing;

void rm_health_check_set_failing(bool f)
{
    atomic_store_explicit(&failing, f, memory_order_relaxed);
}

bool rm_health_check_failing(void)
{
    return atomic_load_explicit(&failing, memory_order_relaxed);
}

struct min_healthy {
    char *cluster;
    double percent;
};

struct hc_config {
    bool pass_through;
    uint32_t cache_ms; /* pass_through only; 0: no cache */
    /* the last upstream answer (pass_through with cache_time), shared by every worker */
    _Atomic uint32_t cached_status;
    _Atomic uint64_t cached_until; /* monotonic ms */
    struct rm_header_match *headers;
    size_t n_headers;
    struct min_healthy *min;
    size_t n_min;
    struct rm_route_parts *parts;
};

struct hc {
    struct rm_filter base;
    bool is_check; /* the request is a health check */
};

/* ---- config ------------------------------------------------------------------------------- */

static void hc_config_free(void *p)
{
    struct hc_config *c = p;
    if (!c) return;
    rm_route_parts_free(c->parts);
    free(c);
}

static int min_entry_cmp(const void *a, const void *b)
{
    return strcmp(((const struct min_healthy *)a)->cluster,
                  ((const struct min_healthy *)b)->cluster);
}

static int compile(struct hc_config *c, const HealthCheckPb *pb, const char *path,
                   struct rm_error *err)
{
    char p[600];
    if (rm_pb_check_no_unknown(&pb->base, path, err)) return RM_ERR;
    if (!pb->pass_through_mode) return rm_error_set(err, "%s.pass_through_mode: required", path);
    c->pass_through = pb->pass_through_mode->value;
    if (pb->cache_time) {
        snprintf(p, sizeof(p), "%s.cache_time", path);
        int64_t ms = pb->cache_time->seconds * 1000 + pb->cache_time->nanos / 1000000;
        if (ms < 0 || ms > UINT32_MAX) return rm_error_set(err, "%s: out of range", p);
        if (ms && !c->pass_through)
            return rm_error_set(err, "%s: only with pass_through_mode (as Envoy)", p);
        c->cache_ms = (uint32_t)ms;
    }
    c->n_headers = pb->n_headers;
    c->headers = rm_route_parts_alloc(c->parts, (pb->n_headers + 1) * sizeof(*c->headers));
    for (size_t i = 0; i < pb->n_headers; i++) {
        snprintf(p, sizeof(p), "%s.headers[%zu]", path, i);
        if (rm_route_parts_header_matcher(c->parts, pb->headers[i], p, &c->headers[i], err))
            return RM_ERR;
    }
    c->n_min = pb->n_cluster_min_healthy_percentages;
    c->min = rm_route_parts_alloc(c->parts, (c->n_min + 1) * sizeof(*c->min));
    for (size_t i = 0; i < c->n_min; i++) {
        const Envoy__Extensions__Filters__Http__HealthCheck__V3__HealthCheck__ClusterMinHealthyPercentagesEntry
            *e = pb->cluster_min_healthy_percentages[i];
        snprintf(p, sizeof(p), "%s.cluster_min_healthy_percentages[\"%s\"]", path, e->key);
        double v = e->value ? e->value->value : 0;
        if (!(v >= 0 && v <= 100)) return rm_error_set(err, "%s: must be within 0 and 100", p);
        c->min[i].cluster = rm_route_parts_strdup(c->parts, e->key);
        c->min[i].percent = v;
    }
    qsort(c->min, c->n_min, sizeof(*c->min), min_entry_cmp); /* Envoy walks a sorted map */
    return RM_OK;
}

static void *hc_config_new(const Google__Protobuf__Any *any, const char *path, struct rm_error *err)
{
    char p[600];
    snprintf(p, sizeof(p), "%s.typed_config", path);
    if (!any) {
        rm_error_set(err, "%s: required (a HealthCheck with pass_through_mode)", p);
        return NULL;
    }
    ProtobufCMessage *m;
    if (rm_pb_any_unpack(
            any, &envoy__extensions__filters__http__health_check__v3__health_check__descriptor, &m,
            err)) {
        rm_error_prefix(err, "%s: ", p);
        return NULL;
    }
    struct hc_config *c = calloc(1, sizeof(*c));
    if (!c) abort();
    c->parts = rm_route_parts_new();
    int rc = compile(c, (const HealthCheckPb *)m, p, err);
    protobuf_c_message_free_unpacked(m, NULL);
    if (rc) {
        hc_config_free(c);
        return NULL;
    }
    return c;
}

/* ---- requests ----------------------------------------------------------------------------- */

/* The node's cluster name (--service-cluster / node.cluster), "" without one. */
static const char *node_cluster(struct rm_filter *f)
{
    const struct rm_snapshot *s = rm_hcm_snapshot(f->stream);
    return s && s->node_cluster ? s->node_cluster : "";
}

static void add_checked_cluster(void *ctx, struct rm_headers *h)
{
    const char *v = node_cluster(ctx);
    rm_headers_set(h, "x-envoy-upstream-healthchecked-cluster", 38, v, strlen(v));
}

/* cluster_min_healthy_percentages: 0 when every cluster has enough routable hosts, else the
 * details of the first that has not (in name order). */
static const char *clusters_unhealthy(struct rm_filter *f, const struct hc_config *c)
{
    struct rm_worker *w = rm_hcm_worker(f->stream);
    for (size_t i = 0; i < c->n_min; i++) {
        struct rm_cluster *cl = rm_snapshot_cluster(rm_hcm_snapshot(f->stream), c->min[i].cluster);
        struct rm_worker_cluster *wc = cl ? rm_worker_cluster_for(w, cl) : NULL;
        if (!wc) return "health_check_failed_no_cluster_found";
        const struct rm_host_set *hs = wc->hs;
        size_t total = hs ? hs->n : 0, healthy = 0;
        if (total == 0) {
            if (c->min[i].percent == 0) continue;
            return "health_check_failed_cluster_empty";
        }
        for (size_t j = 0; j < total; j++)
            healthy += rm_host_routable(hs->hosts[j]);
        if (100.0 * (double)healthy < (double)total * floor(c->min[i].percent))
            return "health_check_failed_cluster_unhealthy";
    }
    return NULL;
}

static void answer(struct rm_filter *f, unsigned status, const char *details)
{
    struct rm_local_reply r = {
        .status = status,
        .grpc_status = -1,
        .flags = status / 100 == 2 ? NULL : "LH", /* FailedLocalHealthCheck */
        .details = details,
        .edit_headers = add_checked_cluster,
        .ctx = f,
    };
    rm_filter_reply_ex(f, &r);
}

static bool is_check(const struct hc_config *c, const struct rm_headers *h)
{
    for (size_t i = 0; i < c->n_headers; i++)
        if (!rm_header_match_eval(&c->headers[i], h)) return false;
    return true;
}

static enum rm_filter_status hc_on_request_headers(struct rm_filter *f, struct rm_headers *h,
                                                   bool end)
{
    struct hc *x = (struct hc *)f;
    struct hc_config *c = (struct hc_config *)f->config;
    if (!is_check(c, h)) return RM_FILTER_CONTINUE;
    x->is_check = true;
    f->stream->flags |= RM_HS_HEALTH_CHECK;
    if (rm_health_check_failing()) {
        answer(f, 503, "health_check_failed");
        return RM_FILTER_STOP;
    }
    if (c->pass_through) {
        uint64_t now = rm_loop_now(rm_hcm_worker(f->stream)->loop);
        unsigned st = atomic_load_explicit(&c->cached_status, memory_order_relaxed);
        if (!c->cache_ms || !st ||
            now >= atomic_load_explicit(&c->cached_until, memory_order_relaxed))
            return RM_FILTER_CONTINUE;
        answer(f, st, "health_check_cached");
        return RM_FILTER_STOP;
    }
    const char *bad = c->n_min ? clusters_unhealthy(f, c) : NULL;
    if (bad)
        answer(f, 503, bad);
    else
        answer(f, 200, c->n_min ? "health_check_ok_cluster_healthy" : "health_check_ok");
    return RM_FILTER_STOP;
}

static enum rm_filter_status hc_on_response_headers(struct rm_filter *f, struct rm_headers *h,
                                                    bool end)
{
    struct hc *x = (struct hc *)f;
    struct hc_config *c = (struct hc_config *)f->config;
    if (x->is_check) {
        if (c->cache_ms && !(f->stream->flags & RM_HS_LOCAL_REPLY)) { /* an upstream answer */
            struct rm_str st = rm_headers_get_key(h, RM_HK_STATUS);
            int64_t code = st.p ? rm_parse_u63(st.p, st.len) : -1;
            uint64_t now = rm_loop_now(rm_hcm_worker(f->stream)->loop);
            if (code >= 100 && code <= 999) {
                atomic_store_explicit(&c->cached_status, (uint32_t)code, memory_order_relaxed);
                atomic_store_explicit(&c->cached_until, now + c->cache_ms, memory_order_relaxed);
            }
        }
        add_checked_cluster(f, h);
    } else if (rm_health_check_failing()) {
        rm_headers_set(h, "x-envoy-immediate-health-check-fail", 35, "true", 4);
    }
    return RM_FILTER_CONTINUE;
}

const struct rm_filter_ops rm_filter_health_check = {
    .name = "envoy.filters.http.health_check",
    .type_url = "envoy.extensions.filters.http.health_check.v3.HealthCheck",
    .config_new = hc_config_new,
    .config_free = hc_config_free,
    .instance_size = sizeof(struct hc),
    .on_request_headers = hc_on_request_headers,
    .on_response_headers = hc_on_response_headers,
};
