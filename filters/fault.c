/* envoy.filters.http.fault (see fault.h). */
#include "filters/fault.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/extensions/filters/http/fault/v3/fault.pb-c.h"
#include "filters/filter.h"
#include "google/protobuf/any.pb-c.h"
#include "proxy/admin/stats.h"
#include "proxy/config/pbtypes.h"
#include "proxy/http/hcm.h"
#include "proxy/server/worker.h"

typedef Envoy__Extensions__Filters__Http__Fault__V3__HTTPFault HTTPFault;
typedef Envoy__Extensions__Filters__Http__Fault__V3__FaultAbort FaultAbort;
typedef Envoy__Extensions__Filters__Common__Fault__V3__FaultDelay FaultDelay;
#define FAULT_DESC (&envoy__extensions__filters__http__fault__v3__httpfault__descriptor)

#define PATH_LEN 600

enum {
    FS_DELAYS_INJECTED,
    FS_ABORTS_INJECTED,
    FS_FAULTS_OVERFLOW,
    FS_RESPONSE_RL_INJECTED,
    FS_ACTIVE_FAULTS,
    FS__COUNT
};
static const struct rm_stat_def fault_stat_defs[FS__COUNT] = {
    [FS_DELAYS_INJECTED] = {"delays_injected", RM_COUNTER},
    [FS_ABORTS_INJECTED] = {"aborts_injected", RM_COUNTER},
    [FS_FAULTS_OVERFLOW] = {"faults_overflow", RM_COUNTER},
    [FS_RESPONSE_RL_INJECTED] = {"response_rl_injected", RM_COUNTER},
    [FS_ACTIVE_FAULTS] = {"active_faults", RM_GAUGE},
};

/* ---- settings ----------------------------------------------------------------------------- */

static int delay_settings(struct rm_fault_settings *s, const FaultDelay *d, const char *path,
                          struct rm_error *err)
{
    char p[PATH_LEN];
    switch (d->fault_delay_secifier_case) {
    case ENVOY__EXTENSIONS__FILTERS__COMMON__FAULT__V3__FAULT_DELAY__FAULT_DELAY_SECIFIER_FIXED_DELAY: {
        const Google__Protobuf__Duration *fd = d->fixed_delay;
        if (fd->seconds < 0 || fd->nanos < 0 || (fd->seconds == 0 && fd->nanos == 0))
            return rm_error_set(err, "%s.fixed_delay: must be greater than 0", path);
        if (fd->seconds > 100LL * 365 * 24 * 3600)
            return rm_error_set(err, "%s.fixed_delay: too large", path);
        s->delay_ms = (uint64_t)fd->seconds * 1000 + (uint64_t)fd->nanos / 1000000;
        break;
    }
    case ENVOY__EXTENSIONS__FILTERS__COMMON__FAULT__V3__FAULT_DELAY__FAULT_DELAY_SECIFIER_HEADER_DELAY:
        s->delay_from_header = true;
        break;
    default:
        return rm_error_set(err, "%s: one of fixed_delay or header_delay is required", path);
    }
    s->has_delay = true;
    snprintf(p, sizeof(p), "%s.percentage", path);
    return rm_fraction_from_pb(d->percentage, p, &s->delay_percent, err);
}

static int abort_settings(struct rm_fault_settings *s, const FaultAbort *a, const char *path,
                          struct rm_error *err)
{
    char p[PATH_LEN];
    switch (a->error_type_case) {
    case ENVOY__EXTENSIONS__FILTERS__HTTP__FAULT__V3__FAULT_ABORT__ERROR_TYPE_HTTP_STATUS:
        if (a->http_status < 200 || a->http_status >= 600)
            return rm_error_set(err, "%s.http_status: %u is not in [200, 600)", path,
                                a->http_status);
        s->abort = RM_FAULT_ABORT_HTTP;
        s->abort_http = a->http_status;
        break;
    case ENVOY__EXTENSIONS__FILTERS__HTTP__FAULT__V3__FAULT_ABORT__ERROR_TYPE_GRPC_STATUS:
        if (a->grpc_status > INT32_MAX)
            return rm_error_set(err, "%s.grpc_status: %u is too large", path, a->grpc_status);
        s->abort = RM_FAULT_ABORT_GRPC;
        s->abort_grpc = a->grpc_status;
        break;
    case ENVOY__EXTENSIONS__FILTERS__HTTP__FAULT__V3__FAULT_ABORT__ERROR_TYPE_HEADER_ABORT:
        s->abort = RM_FAULT_ABORT_HEADER;
        break;
    default:
        return rm_error_set(err, "%s: one of http_status, grpc_status or header_abort is required",
                            path);
    }
    snprintf(p, sizeof(p), "%s.percentage", path);
    return rm_fraction_from_pb(a->percentage, p, &s->abort_percent, err);
}

static int header_matchers(struct rm_fault_settings *s, const HTTPFault *pb, const char *path,
                           struct rm_error *err)
{
    char p[PATH_LEN];
    s->n_headers = pb->n_headers;
    s->headers = pb->n_headers ? calloc(pb->n_headers, sizeof(*s->headers)) : NULL;
    if (pb->n_headers && !s->headers) abort();
    for (size_t i = 0; i < pb->n_headers; i++) {
        snprintf(p, sizeof(p), "%s.headers[%zu]", path, i);
        if (rm_route_parts_header_matcher(s->parts, pb->headers[i], p, &s->headers[i], err))
            return RM_ERR;
    }
    return RM_OK;
}

int rm_fault_settings_init(struct rm_fault_settings *s, const HTTPFault *pb, const char *path,
                           struct rm_error *err)
{
    char p[PATH_LEN];
    memset(s, 0, sizeof(*s));
    s->parts = rm_route_parts_new();
    for (size_t i = 0; i < pb->base.n_unknown_fields; i++) {
        if (pb->base.unknown_fields[i].tag == 7) /* absent from remora's HTTPFault */
            return rm_error_set(err, "%s.response_rate_limit: not supported by remora", path);
    }
    if (rm_pb_check_no_unknown(&pb->base, path, err)) return RM_ERR;
    if (pb->n_downstream_nodes)
        return rm_error_set(err,
                            "%s.downstream_nodes: not supported by remora "
                            "(x-envoy-downstream-service-node is not implemented)",
                            path);
    snprintf(p, sizeof(p), "%s.delay", path);
    if (pb->delay && delay_settings(s, pb->delay, p, err)) return RM_ERR;
    snprintf(p, sizeof(p), "%s.abort", path);
    if (pb->abort && abort_settings(s, pb->abort, p, err)) return RM_ERR;
    if (pb->upstream_cluster && *pb->upstream_cluster) {
        s->upstream_cluster = strdup(pb->upstream_cluster);
        if (!s->upstream_cluster) abort();
    }
    if (pb->max_active_faults) {
        s->has_max_active = true;
        s->max_active = pb->max_active_faults->value;
    }
    /* the *_runtime keys are accepted: without a runtime, Envoy uses these values too */
    return header_matchers(s, pb, path, err);
}

void rm_fault_settings_dispose(struct rm_fault_settings *s)
{
    free(s->upstream_cluster);
    free(s->headers);
    rm_route_parts_free(s->parts);
    memset(s, 0, sizeof(*s));
}

/* ---- decisions (pure) --------------------------------------------------------------------- */

bool rm_fault_headers_match(const struct rm_fault_settings *s, const struct rm_headers *req)
{
    for (size_t i = 0; i < s->n_headers; i++) {
        if (!rm_header_match_eval(&s->headers[i], req)) return false;
    }
    return true;
}

bool rm_fault_delay(const struct rm_fault_settings *s, const struct rm_headers *req, uint64_t rnd,
                    uint64_t *ms)
{
    if (!s->has_delay) return false;
    struct rm_fraction pct = s->delay_percent;
    if (s->delay_from_header)
        pct =
            rm_fraction_from_header(pct, RM_HDR_GET(req, "x-envoy-fault-delay-request-percentage"));
    if (!rm_fraction_hit(pct, rnd)) return false;
    uint64_t v = s->delay_ms;
    if (s->delay_from_header &&
        !rm_parse_simple_u64(RM_HDR_GET(req, "x-envoy-fault-delay-request"), &v))
        return false;
    *ms = v;
    return v > 0; /* Envoy delays only when the duration is > 0 ms */
}

/* header_abort: the HTTP status header (in [200, 600)) first, then the gRPC one. */
static bool header_abort(const struct rm_headers *req, unsigned *http_status, int *grpc_status)
{
    uint64_t v;
    if (rm_parse_simple_u64(RM_HDR_GET(req, "x-envoy-fault-abort-request"), &v) && v >= 200 &&
        v < 600) {
        *http_status = (unsigned)v;
        *grpc_status = -1;
        return true;
    }
    if (rm_parse_simple_u64(RM_HDR_GET(req, "x-envoy-fault-abort-grpc-request"), &v) &&
        v <= INT32_MAX) {
        *http_status = 200;
        *grpc_status = (int)v;
        return true;
    }
    return false;
}

bool rm_fault_abort(const struct rm_fault_settings *s, const struct rm_headers *req, uint64_t rnd,
                    unsigned *http_status, int *grpc_status)
{
    if (s->abort == RM_FAULT_ABORT_NONE) return false;
    struct rm_fraction pct = s->abort_percent;
    if (s->abort == RM_FAULT_ABORT_HEADER)
        pct =
            rm_fraction_from_header(pct, RM_HDR_GET(req, "x-envoy-fault-abort-request-percentage"));
    if (!rm_fraction_hit(pct, rnd)) return false;
    switch (s->abort) {
    case RM_FAULT_ABORT_HTTP:
        *http_status = s->abort_http;
        *grpc_status = -1;
        return true;
    case RM_FAULT_ABORT_GRPC:
        *http_status = 200;
        *grpc_status = (int)s->abort_grpc;
        return true;
    default:
        return header_abort(req, http_status, grpc_status);
    }
}

/* ---- config ------------------------------------------------------------------------------- */

/* The filter-level config: settings plus what all requests of the filter share. */
struct fault_config {
    struct rm_fault_settings s;
    struct rm_stats *stats;  /* http.<stat_prefix>.fault.: a reference (fault_config_free) */
    _Atomic uint64_t active; /* requests of this filter carrying a fault, all workers */
};

static void *settings_build(const Google__Protobuf__Any *any, struct rm_fault_settings *s,
                            const char *path, struct rm_error *err)
{
    ProtobufCMessage *m;
    if (rm_pb_any_unpack(any, FAULT_DESC, &m, err)) {
        rm_error_prefix(err, "%s: ", path);
        return NULL;
    }
    int rc = rm_fault_settings_init(s, (const HTTPFault *)m, path, err);
    protobuf_c_message_free_unpacked(m, NULL);
    return rc == RM_OK ? s : NULL;
}

static void fault_config_free(void *p)
{
    struct fault_config *c = p;
    if (!c) return;
    rm_fault_settings_dispose(&c->s);
    rm_stats_release(c->stats); /* streams hold the snapshot that holds this config */
    free(c);
}

static void *fault_config_new_in(const struct rm_filter_chain_info *chain,
                                 const Google__Protobuf__Any *any, const char *path,
                                 struct rm_error *err)
{
    struct fault_config *c = calloc(1, sizeof(*c));
    if (!c) abort();
    char p[PATH_LEN];
    snprintf(p, sizeof(p), "%s.typed_config", path);
    if (any && !settings_build(any, &c->s, p, err)) {
        fault_config_free(c);
        return NULL;
    }
    char prefix[PATH_LEN];
    snprintf(prefix, sizeof(prefix), "%sfault.", chain->stats_prefix);
    c->stats = rm_stats_get(prefix, fault_stat_defs, FS__COUNT);
    return c;
}

static void route_settings_free(void *p)
{
    struct rm_fault_settings *s = p;
    if (!s) return;
    rm_fault_settings_dispose(s);
    free(s);
}

static void *fault_route_config_new(const Google__Protobuf__Any *any, const char *path,
                                    struct rm_error *err)
{
    struct rm_fault_settings *s = calloc(1, sizeof(*s));
    if (!s) abort();
    if (!settings_build(any, s, path, err)) {
        route_settings_free(s);
        return NULL;
    }
    return s;
}

/* ---- request path ------------------------------------------------------------------------- */

struct fault {
    struct rm_filter base;
    const struct rm_fault_settings *s;
    struct rm_timer delay;
    bool active;  /* counted in active_faults */
    bool delayed; /* a delay was injected */
};

static inline const struct fault_config *CFG(const struct fault *fa)
{
    return fa->base.config;
}

static uint64_t rnd(const struct fault *fa)
{
    return rm_worker_random(rm_hcm_worker(fa->base.stream));
}

/* Envoy's tryIncActiveFaults: one active fault per request, at most max_active_faults. */
static bool try_inc_active(struct fault *fa)
{
    if (fa->active) return true;
    struct fault_config *c = (struct fault_config *)CFG(fa); /* the counter is shared */
    uint64_t max = fa->s->has_max_active ? fa->s->max_active : UINT64_MAX;
    uint64_t cur = atomic_load_explicit(&c->active, memory_order_relaxed);
    do {
        if (cur >= max) {
            rm_stat_inc(c->stats, FS_FAULTS_OVERFLOW);
            return false;
        }
    } while (!atomic_compare_exchange_weak_explicit(&c->active, &cur, cur + 1, memory_order_relaxed,
                                                    memory_order_relaxed));
    rm_stat_inc(c->stats, FS_ACTIVE_FAULTS);
    fa->active = true;
    return true;
}

/* Does the request go to upstream_cluster?  (Envoy: the route entry's cluster name.) */
static bool cluster_matches(const struct fault *fa)
{
    const char *want = fa->s->upstream_cluster;
    if (!want) return true;
    const struct rm_hcm_stream *hs = fa->base.stream;
    const struct rm_route *rt = hs->route;
    if (!rt || rt->action != RM_ROUTE_FORWARD) return false;
    if (hs->wcluster) return strcmp(hs->wcluster->name, want) == 0;
    if (rt->cluster_name) return strcmp(rt->cluster_name, want) == 0;
    if (rt->cluster_header) {
        struct rm_str v = rm_headers_get(hs->req, rt->cluster_header, strlen(rt->cluster_header));
        return v.p && rm_str_eq(v, want, strlen(want));
    }
    return false;
}

/* Abort now if the settings say so; true when the request was answered. */
static bool maybe_abort(struct fault *fa)
{
    unsigned http;
    int grpc;
    if (!rm_fault_abort(fa->s, fa->base.stream->req, rnd(fa), &http, &grpc) || !try_inc_active(fa))
        return false;
    rm_stat_inc(CFG(fa)->stats, FS_ABORTS_INJECTED);
    struct rm_local_reply r = {
        .status = http,
        .grpc_status = grpc,
        .flags = fa->delayed ? "DI,FI" : "FI",
        .details = "fault_filter_abort",
        .body = "fault filter abort",
    };
    rm_filter_reply_ex(&fa->base, &r);
    return true;
}

static void on_delay_done(struct rm_timer *t)
{
    struct fault *fa = rm_container_of(t, struct fault, delay);
    if (fa->base.stream->flags & (RM_HS_RESET | RM_HS_FINISHING))
        return; /* reset while delayed: on_destroy follows */
    if (!maybe_abort(fa)) rm_filter_continue(&fa->base);
}

static enum rm_filter_status fault_on_request_headers(struct rm_filter *f, struct rm_headers *h,
                                                      bool end)
{
    struct fault *fa = (struct fault *)f;
    const struct rm_fault_settings *rs = rm_filter_route_config(f);
    fa->s = rs ? rs : &CFG(fa)->s;
    if (!cluster_matches(fa) || !rm_fault_headers_match(fa->s, h)) return RM_FILTER_CONTINUE;
    uint64_t ms;
    if (rm_fault_delay(fa->s, h, rnd(fa), &ms) && try_inc_active(fa)) {
        rm_stat_inc(CFG(fa)->stats, FS_DELAYS_INJECTED);
        fa->delayed = true;
        f->stream->resp_flags = "DI";
        rm_timer_start(rm_hcm_worker(f->stream)->loop, &fa->delay, ms, on_delay_done);
        return RM_FILTER_STOP;
    }
    return maybe_abort(fa) ? RM_FILTER_STOP : RM_FILTER_CONTINUE;
}

static void fault_on_destroy(struct rm_filter *f)
{
    struct fault *fa = (struct fault *)f;
    rm_timer_stop(rm_hcm_worker(f->stream)->loop, &fa->delay);
    if (fa->active) {
        struct fault_config *c = (struct fault_config *)CFG(fa);
        atomic_fetch_sub_explicit(&c->active, 1, memory_order_relaxed);
        rm_stat_dec(c->stats, FS_ACTIVE_FAULTS);
        fa->active = false;
    }
}

const struct rm_filter_ops rm_filter_fault = {
    .name = "envoy.filters.http.fault",
    .type_url = "envoy.extensions.filters.http.fault.v3.HTTPFault",
    .config_new_in = fault_config_new_in,
    .config_free = fault_config_free,
    .route_config_new = fault_route_config_new,
    .route_config_free = route_settings_free,
    .instance_size = sizeof(struct fault),
    .on_request_headers = fault_on_request_headers,
    .on_destroy = fault_on_destroy,
};
