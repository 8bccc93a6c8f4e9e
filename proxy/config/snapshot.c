#include "proxy/config/snapshot.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"
#include "envoy/extensions/filters/listener/http_inspector/v3/http_inspector.pb-c.h"
#include "envoy/extensions/filters/listener/original_dst/v3/original_dst.pb-c.h"
#include "envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.pb-c.h"
#include "proxy/config/filter_chain_match.h"
#include "proxy/config/pbtypes.h"
#include "proxy/config/pbutil.h"
#include "proxy/config/route_filters.h"
#include "proxy/http/access_log.h"
#include "proxy/http/hcm.h"
#include "proxy/net/secrets.h"
#include "proxy/net/tls.h"
#include "proxy/tcp/tcp_proxy.h"
#include "proxy/upstream/dns.h"

#define HCM_TYPE "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
#define TCP_PROXY_TYPE "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
#define PATH_MAX_LEN 512

typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager Hcm;
typedef Envoy__Config__Listener__V3__Listener Listener;
typedef Envoy__Config__Route__V3__RouteConfiguration RouteConfiguration;

/* What building listeners needs besides the snapshot under construction. */
struct build_ctx {
    struct rm_snapshot *s;
    const struct rm_snapshot_dyn *dyn; /* RDS route configurations (NULL: none) */
    rm_route_resolve_fn resolve;       /* cluster names */
    void *resolve_ctx;
    bool validate; /* checking an arriving resource: unknown clusters are errors */
    bool check;    /* checking only: an RDS listener gets no route table */
};

static void own(struct rm_snapshot *s, ProtobufCMessage *m)
{
    ProtobufCMessage **v = realloc(s->owned, (s->n_owned + 1) * sizeof(*v));
    if (!v) abort();
    s->owned = v;
    s->owned[s->n_owned++] = m;
}

/* ---- clusters ----------------------------------------------------------------------------- */

static int cmp_cluster(const void *a, const void *b)
{
    return strcmp((*(struct rm_cluster *const *)a)->name, (*(struct rm_cluster *const *)b)->name);
}

struct rm_cluster *rm_snapshot_cluster(const struct rm_snapshot *s, const char *name)
{
    size_t lo = 0, hi = s->n_clusters;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(name, s->clusters[mid]->name);
        if (c == 0) return s->clusters[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

static int build_clusters(struct rm_snapshot *s,
                          const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr,
                          struct rm_error *err)
{
    s->clusters = calloc(sr->n_clusters + 1, sizeof(*s->clusters));
    if (!s->clusters) return rm_error_set(err, "out of memory");
    for (size_t i = 0; i < sr->n_clusters; i++) {
        char path[64];
        snprintf(path, sizeof(path), "static_resources.clusters[%zu]", i);
        struct rm_cluster *c =
            rm_cluster_new(sr->clusters[i], s->bootstrap_box, s->secrets, path, err);
        if (!c) return RM_ERR;
        s->clusters[s->n_clusters++] = c;
    }
    qsort(s->clusters, s->n_clusters, sizeof(*s->clusters), cmp_cluster);
    for (size_t i = 0; i < s->n_clusters; i++) {
        if (i && strcmp(s->clusters[i]->name, s->clusters[i - 1]->name) == 0)
            return rm_error_set(err, "static_resources.clusters: duplicate cluster name \"%s\"",
                                s->clusters[i]->name);
        rm_cluster_update_membership(s->clusters[i]);
    }
    return RM_OK;
}

/* ---- dynamic_resources (ADS for EDS) ---------------------------------------------------- */

typedef Envoy__Config__Core__V3__ApiConfigSource ApiConfigSource;

/* The ADS cluster talks gRPC, so HTTP/2: accepted when it says so or says nothing about its
 * protocol (Envoy would need explicit http2_protocol_options); any other protocol setting is an
 * error naming the cluster. */
static int check_ads_cluster_h2(const struct rm_cluster *c, size_t idx, struct rm_error *err)
{
    const Envoy__Config__Cluster__V3__Cluster *pb = c->pb;
    bool says_nothing = pb->n_typed_extension_protocol_options == 0 && !pb->http_protocol_options &&
                        pb->protocol_selection == 0;
    if (c->proto == RM_UPSTREAM_HTTP2 || says_nothing) return RM_OK;
    return rm_error_set(err,
                        "static_resources.clusters[%zu] (%s): the ADS cluster must use HTTP/2 "
                        "(typed_extension_protocol_options: explicit_http_config: "
                        "http2_protocol_options)",
                        idx, c->name);
}

/* The cluster a gRPC config source names: STATIC, with an endpoint, HTTP/2.  NULL with <err>
 * naming <path>. */
static struct rm_cluster *
grpc_cluster(struct rm_snapshot *s,
             const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr, const char *name,
             const char *path, struct rm_error *err)
{
    struct rm_cluster *c = rm_snapshot_cluster(s, name ? name : "");
    if (!c || rm_cluster_is_dns(c) || rm_cluster_is_eds(c) || c->hs->n == 0) {
        rm_error_set(err, "%s: \"%s\" is not a STATIC cluster with an endpoint in static_resources",
                     path, name ? name : "");
        return NULL;
    }
    size_t idx = 0;
    while (idx < sr->n_clusters && sr->clusters[idx] != c->pb)
        idx++;
    return check_ads_cluster_h2(c, idx, err) ? NULL : c;
}

/* A config source's stream: the ADS one must exist; another one's cluster must be a gRPC one. */
static int check_source(struct rm_snapshot *s,
                        const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr,
                        const struct rm_config_source *src, const char *path, struct rm_error *err)
{
    if (src->ads)
        return s->ads_cluster
                   ? RM_OK
                   : rm_error_set(err, "%s: ads: {} needs dynamic_resources.ads_config", path);
    char p[PATH_MAX_LEN];
    snprintf(p, sizeof(p), "%s.api_config_source.grpc_services[0].envoy_grpc.cluster_name", path);
    return grpc_cluster(s, sr, src->cluster, p, err) ? RM_OK : RM_ERR;
}

/* The sources of the dynamic SDS references <r> of <path>'s TLS context. */
static int check_sds_sources(struct rm_snapshot *s,
                             const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr,
                             const struct rm_sds_refs *r, const char *path, struct rm_error *err)
{
    char p[PATH_MAX_LEN];
    for (size_t i = 0; r && i < r->n; i++) {
        snprintf(p, sizeof(p), "%s: secret %s: sds_config", path, r->v[i].name);
        if (check_source(s, sr, &r->v[i].src, p, err)) return RM_ERR;
    }
    return RM_OK;
}

/* ads_config: gRPC (SotW or Delta) to one STATIC cluster (envoy_grpc). */
static int check_ads_config(struct rm_snapshot *s,
                            const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr,
                            const ApiConfigSource *a, struct rm_error *err)
{
    const char *P = "dynamic_resources.ads_config";
    if (a->api_type != ENVOY__CONFIG__CORE__V3__API_CONFIG_SOURCE__API_TYPE__GRPC &&
        a->api_type != ENVOY__CONFIG__CORE__V3__API_CONFIG_SOURCE__API_TYPE__DELTA_GRPC)
        return rm_error_set(err, "%s.api_type: only GRPC and DELTA_GRPC are supported", P);
    s->ads_delta = a->api_type == ENVOY__CONFIG__CORE__V3__API_CONFIG_SOURCE__API_TYPE__DELTA_GRPC;
    if (a->transport_api_version != ENVOY__CONFIG__CORE__V3__API_VERSION__V3 &&
        a->transport_api_version != ENVOY__CONFIG__CORE__V3__API_VERSION__AUTO)
        return rm_error_set(err, "%s.transport_api_version: only V3", P);
    if (a->n_cluster_names)
        return rm_error_set(err, "%s.cluster_names: only for REST; use grpc_services", P);
    if (a->n_grpc_services != 1 ||
        a->grpc_services[0]->target_specifier_case !=
            ENVOY__CONFIG__CORE__V3__GRPC_SERVICE__TARGET_SPECIFIER_ENVOY_GRPC)
        return rm_error_set(err, "%s.grpc_services: exactly one envoy_grpc service is required", P);
    const char *name = a->grpc_services[0]->envoy_grpc->cluster_name;
    s->ads_max_msg = rm_pb_u32(a->grpc_services[0]->envoy_grpc->max_receive_message_length, 0);
    s->ads_cluster = grpc_cluster(s, sr, name,
                                  "dynamic_resources.ads_config.grpc_services[0]."
                                  "envoy_grpc.cluster_name",
                                  err);
    return s->ads_cluster ? RM_OK : RM_ERR;
}

static int
check_dynamic_resources(struct rm_snapshot *s,
                        const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr,
                        struct rm_error *err)
{
    const Envoy__Config__Bootstrap__V3__Bootstrap__DynamicResources *d =
        s->bootstrap->dynamic_resources;
    if (d && d->ads_config && check_ads_config(s, sr, d->ads_config, err)) return RM_ERR;
    if (d && d->lds_config) {
        const char *p = "dynamic_resources.lds_config";
        if (rm_config_source_parse(d->lds_config, p, &s->lds_src, err) ||
            check_source(s, sr, &s->lds_src, p, err))
            return RM_ERR;
        s->lds = true;
    }
    if (d && d->cds_config) {
        const char *p = "dynamic_resources.cds_config";
        if (rm_config_source_parse(d->cds_config, p, &s->cds_src, err) ||
            check_source(s, sr, &s->cds_src, p, err))
            return RM_ERR;
        s->cds = true;
    }
    for (size_t i = 0; i < s->n_clusters; i++) {
        const struct rm_cluster *c = s->clusters[i];
        char p[PATH_MAX_LEN];
        snprintf(p, sizeof(p), "cluster %s: eds_cluster_config.eds_config", c->name);
        if (rm_cluster_is_eds(c) && check_source(s, sr, &c->eds_src, p, err)) return RM_ERR;
    }
    return RM_OK;
}

/* ---- HTTP connection manager -------------------------------------------------------------- */

static void *resolve_cluster(void *ctx, const char *name)
{
    return rm_snapshot_cluster(ctx, name);
}

static int build_filters(struct rm_hcm_cfg *h, const Hcm *pb, const char *path,
                         struct rm_error *err)
{
    char stats_prefix[300];
    snprintf(stats_prefix, sizeof(stats_prefix), "http.%s.", h->stat_prefix);
    const struct rm_filter_chain_info chain = {.stats_prefix = stats_prefix};
    h->filters = calloc(pb->n_http_filters + 1, sizeof(*h->filters));
    if (!h->filters) return rm_error_set(err, "out of memory");
    for (size_t i = 0; i < pb->n_http_filters; i++) {
        const Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpFilter *f =
            pb->http_filters[i];
        char p[PATH_MAX_LEN];
        snprintf(p, sizeof(p), "%s.http_filters[%zu]", path, i);
        const char *type = NULL;
        if (f->config_type_case ==
            ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_FILTER__CONFIG_TYPE_TYPED_CONFIG) {
            const char *slash = strrchr(f->typed_config->type_url, '/');
            type = slash ? slash + 1 : f->typed_config->type_url;
        }
        const struct rm_filter_ops *ops = rm_filter_lookup(f->name, type);
        if (!ops) {
            if (f->is_optional) continue;
            return rm_error_set(err, "%s: HTTP filter \"%s\"%s%s%s is not supported by remora", p,
                                f->name, type ? " (type " : "", type ? type : "", type ? ")" : "");
        }
        void *cfg = ops->config_new_in ? ops->config_new_in(&chain, f->typed_config, p, err)
                                       : ops->config_new(f->typed_config, p, err);
        if (!cfg) return RM_ERR;
        h->filters[h->n_filters].ops = ops;
        h->filters[h->n_filters].config = cfg;
        h->filters[h->n_filters].name = strdup(f->name);
        h->filters[h->n_filters].disabled = f->disabled; /* routes may enable it */
        h->n_filters++;
        if (f->disabled && ops == &rm_filter_router)
            return rm_error_set(err, "%s.disabled: the router filter cannot be disabled", p);
    }
    if (!h->n_filters || h->filters[h->n_filters - 1].ops != &rm_filter_router)
        return rm_error_set(err,
                            "%s.http_filters: the last filter must be the router "
                            "(envoy.filters.http.router)",
                            path);
    for (size_t i = 0; i + 1 < h->n_filters; i++) {
        if (h->filters[i].ops == &rm_filter_router)
            return rm_error_set(err, "%s.http_filters[%zu]: the router must be the last filter",
                                path, i);
    }
    return RM_OK;
}

static const struct rm_dyn_res *find_route(const struct rm_snapshot_dyn *dyn, const char *name)
{
    size_t lo = 0, hi = dyn ? dyn->n_routes : 0;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(name, dyn->routes[mid].name);
        if (c == 0) return &dyn->routes[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

/* rds: {config_source: {ads: {}}, route_config_name: NAME}: the route table from the RDS
 * configuration of that name (an empty one while there is none). */
static int build_rds(struct build_ctx *b, struct rm_listener_cfg *lc, const Hcm *pb,
                     const char *path, struct rm_error *err)
{
    const Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__Rds *rds = pb->rds;
    char p[PATH_MAX_LEN];
    snprintf(p, sizeof(p), "%s.rds", path);
    if (!rds->route_config_name || !rds->route_config_name[0])
        return rm_error_set(err, "%s.route_config_name: required", p);
    char cp[PATH_MAX_LEN];
    snprintf(cp, sizeof(cp), "%s.config_source", p);
    if (rm_config_source_parse(rds->config_source, cp, &lc->rds_src, err)) return RM_ERR;
    lc->rds_name = strdup(rds->route_config_name);
    if (!lc->rds_name) return rm_error_set(err, "out of memory");
    if (b->check) return RM_OK;
    const struct rm_dyn_res *r = find_route(b->dyn, lc->rds_name);
    static const RouteConfiguration empty = ENVOY__CONFIG__ROUTE__V3__ROUTE_CONFIGURATION__INIT;
    char rp[PATH_MAX_LEN];
    snprintf(rp, sizeof(rp), "RouteConfiguration %s", lc->rds_name);
    lc->hcm.routes = rm_route_table_new(r ? (const RouteConfiguration *)r->pb->m : &empty, rp,
                                        b->resolve, b->resolve_ctx, err);
    return lc->hcm.routes ? RM_OK : RM_ERR;
}

static int build_routes(struct build_ctx *b, struct rm_listener_cfg *lc, const Hcm *pb,
                        const char *path, struct rm_error *err)
{
    if (pb->route_specifier_case ==
        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_RDS)
        return build_rds(b, lc, pb, path, err);
    if (pb->route_specifier_case !=
        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_ROUTE_CONFIG)
        return rm_error_set(err,
                            "%s: route_config or rds is required (scoped routes are not "
                            "supported by remora)",
                            path);
    char p[PATH_MAX_LEN];
    snprintf(p, sizeof(p), "%s.route_config", path);
    lc->hcm.routes =
        rm_route_table_new_ex(pb->route_config, p, b->resolve, b->resolve_ctx, b->validate, err);
    return lc->hcm.routes ? RM_OK : RM_ERR;
}

static int build_hcm(struct build_ctx *b, struct rm_listener_cfg *lc, const Hcm *pb,
                     const char *path, struct rm_error *err)
{
    struct rm_hcm_cfg *h = &lc->hcm;
    if (!pb->stat_prefix || !pb->stat_prefix[0])
        return rm_error_set(err, "%s.stat_prefix: required", path);
    h->stat_prefix = strdup(pb->stat_prefix);
    if (pb->codec_type >
        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__CODEC_TYPE__HTTP2)
        return rm_error_set(err, "%s.codec_type: HTTP3 is not supported by remora", path);
    h->codec_type = (enum rm_codec_type)pb->codec_type;
    if (build_routes(b, lc, pb, path, err) || build_filters(h, pb, path, err)) return RM_ERR;
    if (h->routes && rm_route_filters_bind(h, err)) return RM_ERR;
    h->codec.max_request_headers_kb = rm_pb_u32(pb->max_request_headers_kb, 60);
    h->codec.buffer_limit = lc->buffer_limit;
    h->idle_timeout_ms = 3600 * 1000;
    if (pb->common_http_protocol_options) {
        h->codec.max_headers_count =
            rm_pb_u32(pb->common_http_protocol_options->max_headers_count, 100);
        h->idle_timeout_ms =
            rm_pb_duration_ms(pb->common_http_protocol_options->idle_timeout, h->idle_timeout_ms);
        h->max_connection_duration_ms =
            rm_pb_duration_ms(pb->common_http_protocol_options->max_connection_duration, 0);
        h->max_stream_duration_ms =
            rm_pb_duration_ms(pb->common_http_protocol_options->max_stream_duration, 0);
        h->max_requests_per_connection =
            rm_pb_u32(pb->common_http_protocol_options->max_requests_per_connection, 0);
        int u = (int)pb->common_http_protocol_options->headers_with_underscores_action;
        if (u < RM_UNDERSCORES_ALLOW || u > RM_UNDERSCORES_DROP_HEADER)
            return rm_error_set(err,
                                "%s.common_http_protocol_options.headers_with_underscores_action: "
                                "unknown value %d",
                                path, u);
        h->headers_with_underscores = (enum rm_underscores)u;
    }
    if (pb->http_protocol_options)
        h->codec.accept_http_10 = pb->http_protocol_options->accept_http_10;
    if (pb->http2_protocol_options) {
        const Envoy__Config__Core__V3__Http2ProtocolOptions *o = pb->http2_protocol_options;
        h->codec.h2_max_concurrent_streams = rm_pb_u32(o->max_concurrent_streams, 0);
        h->codec.h2_initial_stream_window = rm_pb_u32(o->initial_stream_window_size, 0);
        h->codec.h2_initial_conn_window = rm_pb_u32(o->initial_connection_window_size, 0);
    }
    h->use_remote_address = rm_pb_bool(pb->use_remote_address, false);
    h->xff_num_trusted_hops = pb->xff_num_trusted_hops;
    h->skip_xff_append = pb->skip_xff_append;
    h->via = pb->via && pb->via[0] ? strdup(pb->via) : NULL;
    h->generate_request_id = rm_pb_bool(pb->generate_request_id, true);
    h->preserve_external_request_id = pb->preserve_external_request_id;
    h->always_set_request_id_in_response = pb->always_set_request_id_in_response;
    h->server_name = pb->server_name && pb->server_name[0] ? strdup(pb->server_name) : NULL;
    h->server_header_transformation = (int)pb->server_header_transformation;
    h->drain_timeout_ms = rm_pb_duration_ms(pb->drain_timeout, 5000);
    h->stream_idle_timeout_ms = rm_pb_duration_ms(pb->stream_idle_timeout, 300000);
    h->request_timeout_ms = rm_pb_duration_ms(pb->request_timeout, 0);
    if (pb->proxy_100_continue)
        return rm_error_set(err,
                            "%s.proxy_100_continue: not supported by remora yet (remora "
                            "answers 100-continue itself, as Envoy does by default)",
                            path);
    h->codec.request_headers_timeout_ms = rm_pb_duration_ms(pb->request_headers_timeout, 0);
    if (pb->n_access_log) {
        h->access_logs = calloc(pb->n_access_log, sizeof(*h->access_logs));
        if (!h->access_logs) return rm_error_set(err, "out of memory");
    }
    for (size_t i = 0; i < pb->n_access_log; i++) {
        char p[PATH_MAX_LEN];
        snprintf(p, sizeof(p), "%s.access_log[%zu]", path, i);
        if (!(h->access_logs[i] = rm_access_log_new(pb->access_log[i], p, err))) return RM_ERR;
        h->n_access_logs++;
    }
    char prefix[300];
    snprintf(prefix, sizeof(prefix), "http.%s.", h->stat_prefix);
    h->stats = rm_stats_get(prefix, rm_http_stat_defs, RM_HS__COUNT);
    if (lc->rds_name) {
        snprintf(prefix, sizeof(prefix), "http.%s.rds.%s.", h->stat_prefix, lc->rds_name);
        lc->rds_stats = rm_stats_get(prefix, rm_rds_stat_defs, RM_RDS__COUNT);
    }
    return RM_OK;
}

/* ---- listeners ---------------------------------------------------------------------------- */

#define TLS_INSPECTOR "envoy.filters.listener.tls_inspector"
#define HTTP_INSPECTOR "envoy.filters.listener.http_inspector"
#define ORIGINAL_DST "envoy.filters.listener.original_dst"
#define LF_SUPPORTED "only " TLS_INSPECTOR ", " HTTP_INSPECTOR " and " ORIGINAL_DST

/* Whether listener filter <f> is the original destination filter (by its typed_config, or by
 * its name when it has none). */
static bool is_original_dst(const Envoy__Config__Listener__V3__ListenerFilter *f)
{
    if (f->config_type_case ==
        ENVOY__CONFIG__LISTENER__V3__LISTENER_FILTER__CONFIG_TYPE_TYPED_CONFIG)
        return rm_pb_lookup_type_url(f->typed_config->type_url) ==
               &envoy__extensions__filters__listener__original_dst__v3__original_dst__descriptor;
    return f->name && strcmp(f->name, ORIGINAL_DST) == 0;
}

/* listener_filters: the TLS and HTTP inspectors are accepted.  In Envoy they find the SNI /
 * ALPN / transport and application protocol a filter_chain_match selects on; remora peeks at
 * the first bytes itself whenever a chain matches on those (rm_listener_cfg.peek,
 * proxy/server/chain_accept.c), so they configure nothing of their own.
 * The original destination filter restores a redirected connection's original destination
 * (rm_listener_cfg.original_dst).  Other listener filters (proxy_protocol, …) are rejected with
 * the path. */
static int check_listener_filter(const Envoy__Config__Listener__V3__ListenerFilter *f,
                                 const char *path, struct rm_error *err)
{
    if (f->config_type_case !=
        ENVOY__CONFIG__LISTENER__V3__LISTENER_FILTER__CONFIG_TYPE_TYPED_CONFIG) {
        if (f->name && (strcmp(f->name, TLS_INSPECTOR) == 0 ||
                        strcmp(f->name, HTTP_INSPECTOR) == 0 || strcmp(f->name, ORIGINAL_DST) == 0))
            return RM_OK;
        return rm_error_set(
            err, "%s: listener filter \"%s\" is not supported by remora (" LF_SUPPORTED ")", path,
            f->name ? f->name : "");
    }
    const ProtobufCMessageDescriptor *d = rm_pb_lookup_type_url(f->typed_config->type_url);
    if (d == &envoy__extensions__filters__listener__http_inspector__v3__http_inspector__descriptor)
        return RM_OK;
    bool odst =
        d == &envoy__extensions__filters__listener__original_dst__v3__original_dst__descriptor;
    if (!odst &&
        d != &envoy__extensions__filters__listener__tls_inspector__v3__tls_inspector__descriptor)
        return rm_error_set(
            err, "%s: listener filter \"%s\" (%s) is not supported by remora (" LF_SUPPORTED ")",
            path, f->name ? f->name : "", f->typed_config->type_url);
    ProtobufCMessage *m;
    if (rm_pb_any_unpack(f->typed_config, d, &m, err))
        return rm_error_prefix(err, "%s.typed_config: ", path);
    char tp[PATH_MAX_LEN];
    snprintf(tp, sizeof(tp), "%s.typed_config", path);
    int rc = rm_pb_check_no_unknown(m, tp, err); /* OriginalDst: every field is unknown */
    bool ja3 = false;
    if (!odst) {
        const Envoy__Extensions__Filters__Listener__TlsInspector__V3__TlsInspector *ti = (void *)m;
        ja3 = rm_pb_bool(ti->enable_ja3_fingerprinting, false);
    }
    protobuf_c_message_free_unpacked(m, NULL);
    if (rc) return RM_ERR;
    if (ja3)
        return rm_error_set(
            err, "%s.typed_config.enable_ja3_fingerprinting: not supported by remora", path);
    return RM_OK; /* initial_read_buffer_size: nothing is read ahead */
}

/* filter chain <fc> (errors under <path>, "…filter_chains[i]" or "…default_filter_chain") */
static int check_chain_supported(const Envoy__Config__Listener__V3__FilterChain *fc,
                                 const char *path, struct rm_error *err)
{
    if (fc->n_filters != 1)
        return rm_error_set(err,
                            "%s.filters: exactly one network filter "
                            "(envoy.filters.network.http_connection_manager or "
                            "envoy.filters.network.tcp_proxy) is supported",
                            path);
    return RM_OK;
}

static int check_listener_supported(const Listener *pb, const char *path, struct rm_error *err)
{
    for (size_t i = 0; i < pb->n_listener_filters; i++) {
        char p[PATH_MAX_LEN];
        snprintf(p, sizeof(p), "%s.listener_filters[%zu]", path, i);
        if (check_listener_filter(pb->listener_filters[i], p, err)) return RM_ERR;
    }
    if (rm_pb_bool(pb->transparent, false))
        return rm_error_set(err, "%s.transparent: not supported by remora yet", path);
    if (!pb->n_filter_chains && !pb->default_filter_chain)
        return rm_error_set(err, "%s.filter_chains: at least one filter chain is required", path);
    return RM_OK;
}

/* <fc>.transport_socket: TLS termination.  ALPN, unless alpn_protocols says otherwise, offers
 * what the codec speaks (AUTO: h2 first, then http/1.1).  <path>: the chain's. */
static int build_listener_tls(struct rm_listener_cfg *lc,
                              const Envoy__Config__Listener__V3__FilterChain *fc, const char *path,
                              const char *stat_prefix, const struct rm_snapshot *s,
                              struct rm_error *err)
{
    char p[PATH_MAX_LEN];
    lc->handshake_timeout_ms = rm_pb_duration_ms(fc->transport_socket_connect_timeout,
                                                 lc->hcm.codec.request_headers_timeout_ms);
    if (!fc->transport_socket) return RM_OK;
    static const char *const alpn[] = {
        [RM_CODEC_AUTO] = "h2,http/1.1", [RM_CODEC_HTTP1] = "http/1.1", [RM_CODEC_HTTP2] = "h2"};
    /* a TCP proxy offers no ALPN of its own (Envoy: only the context's alpn_protocols) */
    const char *dflt = lc->netfilter == &rm_hcm_netfilter ? alpn[lc->hcm.codec_type] : NULL;
    struct rm_tls_opts o = {.side = RM_TLS_SERVER,
                            .stat_prefix = stat_prefix,
                            .default_alpn = dflt,
                            .secrets = s->secrets,
                            .sds = s->sds};
    snprintf(p, sizeof(p), "%s.transport_socket", path);
    return rm_tls_ctx_new(fc->transport_socket, &o, p, &lc->tls, err);
}

static int build_hcm_filter(struct build_ctx *b, struct rm_listener_cfg *lc,
                            const ProtobufCMessage *m, const char *path, struct rm_error *err)
{
    return build_hcm(b, lc, (const Hcm *)m, path, err);
}

static int build_tcp_proxy(struct build_ctx *b, struct rm_listener_cfg *lc,
                           const ProtobufCMessage *m, const char *path, struct rm_error *err)
{
    const Envoy__Extensions__Filters__Network__TcpProxy__V3__TcpProxy *pb = (const void *)m;
    lc->tcp = rm_tcp_proxy_cfg_new(pb, path, b->resolve, b->resolve_ctx, err);
    return lc->tcp ? RM_OK : RM_ERR;
}

/* The network filters a listener may have: its typed_config's type, what runs it and what
 * builds its config (from the unpacked, checked message; errors under the typed_config path). */
static const struct netfilter_kind {
    const ProtobufCMessageDescriptor *type;
    const struct rm_netfilter_ops *ops;
    int (*build)(struct build_ctx *b, struct rm_listener_cfg *lc, const ProtobufCMessage *m,
                 const char *path, struct rm_error *err);
} netfilter_kinds[] = {
    {&envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__descriptor,
     &rm_hcm_netfilter, build_hcm_filter},
    {&envoy__extensions__filters__network__tcp_proxy__v3__tcp_proxy__descriptor,
     &rm_tcp_proxy_netfilter, build_tcp_proxy},
};

/* filters[0] of the filter chain at <path>: lc->netfilter and its config. */
static int build_netfilter(struct build_ctx *b, struct rm_listener_cfg *lc,
                           const Envoy__Config__Listener__V3__Filter *f, const char *path,
                           struct rm_error *err)
{
    char p[PATH_MAX_LEN];
    snprintf(p, sizeof(p), "%s.filters[0]", path);
    if (f->config_type_case != ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE_TYPED_CONFIG)
        return rm_error_set(err, "%s.typed_config: required", p);
    const ProtobufCMessageDescriptor *d = rm_pb_lookup_type_url(f->typed_config->type_url);
    const struct netfilter_kind *k = NULL;
    for (size_t i = 0; i < sizeof(netfilter_kinds) / sizeof(netfilter_kinds[0]); i++) {
        if (netfilter_kinds[i].type == d) k = &netfilter_kinds[i];
    }
    if (!k)
        return rm_error_set(err,
                            "%s: network filter \"%s\" (%s) is not supported by remora; "
                            "only " HCM_TYPE " and " TCP_PROXY_TYPE,
                            p, f->name, f->typed_config->type_url);
    ProtobufCMessage *m;
    if (rm_pb_any_unpack(f->typed_config, d, &m, err))
        return rm_error_prefix(err, "%s.typed_config: ", p);
    own(b->s, m);
    snprintf(p, sizeof(p), "%s.filters[0].typed_config", path);
    if (rm_pb_check_no_unknown(m, p, err)) return RM_ERR;
    lc->netfilter = k->ops;
    return k->build(b, lc, m, p, err);
}

/* Filter chain <fc> (at <path>) into <lc>: its network filter and TLS. */
static int build_chain(struct build_ctx *b, struct rm_listener_cfg *lc,
                       const Envoy__Config__Listener__V3__FilterChain *fc, const char *path,
                       const char *stat_prefix, struct rm_error *err)
{
    if (check_chain_supported(fc, path, err) || build_netfilter(b, lc, fc->filters[0], path, err))
        return RM_ERR;
    lc->chain_name = strdup(fc->name ? fc->name : "");
    if (!lc->chain_name) return rm_error_set(err, "out of memory");
    return build_listener_tls(lc, fc, path, stat_prefix, b->s, err);
}

static void listener_free(struct rm_listener_cfg *lc);

/* A chain config of listener <lc>: its listener-level fields copied (the stats a reference). */
static struct rm_listener_cfg *chain_new(const struct rm_listener_cfg *lc, size_t idx)
{
    struct rm_listener_cfg *ch = calloc(1, sizeof(*ch));
    if (!ch) return NULL;
    ch->name = strdup(lc->name);
    ch->addr = lc->addr;
    ch->addr_len = lc->addr_len;
    memcpy(ch->addr_str, lc->addr_str, sizeof(ch->addr_str));
    ch->pipe_mode = lc->pipe_mode;
    ch->buffer_limit = lc->buffer_limit;
    ch->reuse_port = lc->reuse_port;
    ch->backlog = lc->backlog;
    ch->original_dst = lc->original_dst;
    ch->use_original_dst = lc->use_original_dst;
    ch->bind_to_port = lc->bind_to_port;
    ch->stats = rm_stats_ref(lc->stats);
    ch->chain_idx = idx;
    if (!ch->name) {
        listener_free(ch);
        return NULL;
    }
    return ch;
}

/* The chains' RDS route configuration becomes the listener's (one per listener: xds_manager.c
 * subscribes and warms per listener). */
static int chains_rds(struct rm_listener_cfg *lc, const char *const *paths, struct rm_error *err)
{
    const struct rm_listener_cfg *first = NULL;
    for (size_t i = 0; i < lc->n_chains; i++) {
        const struct rm_listener_cfg *ch = lc->chains[i];
        if (!ch->rds_name) continue;
        if (!first) {
            first = ch;
            continue;
        }
        if (strcmp(first->rds_name, ch->rds_name) != 0)
            return rm_error_set(err,
                                "%s.filters[0].typed_config.rds.route_config_name: a second RDS "
                                "route configuration (\"%s\"; %s uses \"%s\") in one listener "
                                "is not supported by remora yet",
                                paths[i], ch->rds_name, paths[first->chain_idx], first->rds_name);
    }
    if (!first) return RM_OK;
    lc->rds_name = strdup(first->rds_name);
    if (!lc->rds_name) return rm_error_set(err, "out of memory");
    rm_config_source_copy(&lc->rds_src, &first->rds_src);
    return RM_OK;
}

/* Several chains (or matches, or a default chain): each its own config, <fcm> over them. */
static int build_chains(struct build_ctx *b, struct rm_listener_cfg *lc, const Listener *pb,
                        const char *path, const char *stat_prefix, struct rm_error *err)
{
    size_t n = pb->n_filter_chains + (pb->default_filter_chain ? 1 : 0);
    const Envoy__Config__Listener__V3__FilterChain **fcs = calloc(n, sizeof(*fcs));
    char **paths = calloc(n, sizeof(*paths));
    lc->chains = calloc(n, sizeof(*lc->chains));
    int rc = RM_ERR;
    if (!fcs || !paths || !lc->chains) {
        rm_error_set(err, "out of memory");
        goto out;
    }
    lc->has_default = pb->default_filter_chain != NULL;
    for (size_t i = 0; i < n; i++) {
        fcs[i] = i < pb->n_filter_chains ? pb->filter_chains[i] : pb->default_filter_chain;
        char p[PATH_MAX_LEN];
        if (i < pb->n_filter_chains)
            snprintf(p, sizeof(p), "%s.filter_chains[%zu]", path, i);
        else
            snprintf(p, sizeof(p), "%s.default_filter_chain", path);
        if (!(paths[i] = strdup(p))) {
            rm_error_set(err, "out of memory");
            goto out;
        }
    }
    if (lc->has_default && pb->default_filter_chain->filter_chain_match) {
        rm_error_set(err, "%s.filter_chain_match: not allowed in the default filter chain",
                     paths[n - 1]);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        struct rm_listener_cfg *ch = chain_new(lc, i);
        if (!ch) {
            rm_error_set(err, "out of memory");
            goto out;
        }
        lc->chains[lc->n_chains++] = ch;
        if (build_chain(b, ch, fcs[i], paths[i], stat_prefix, err)) goto out;
    }
    lc->fcm = rm_fcm_new(fcs, (const char *const *)paths, pb->n_filter_chains, err);
    if (!lc->fcm || chains_rds(lc, (const char *const *)paths, err)) goto out;
    lc->peek = rm_fcm_needs_data(lc->fcm);
    lc->peek_timeout_ms = rm_pb_duration_ms(pb->listener_filters_timeout, 15000);
    lc->peek_timeout_continue = pb->continue_on_listener_filters_timeout;
    rc = RM_OK;
out:
    for (size_t i = 0; paths && i < n; i++)
        free(paths[i]);
    free(paths);
    free(fcs);
    return rc;
}

/* Build listener <pb> (errors under <path>) into b->s->listeners. */
static int build_listener(struct build_ctx *b, const Listener *pb, const char *path,
                          struct rm_error *err)
{
    struct rm_snapshot *s = b->s;
    if (check_listener_supported(pb, path, err)) return RM_ERR;
    struct rm_listener_cfg *lc = calloc(1, sizeof(*lc));
    if (!lc) return rm_error_set(err, "out of memory");
    s->listeners[s->n_listeners++] = lc;
    lc->pb = pb;
    lc->name = strdup(pb->name && pb->name[0] ? pb->name : "");
    char p[PATH_MAX_LEN];
    snprintf(p, sizeof(p), "%s.address", path);
    if (rm_pb_address(pb->address, p, &lc->addr, &lc->addr_len, err)) return RM_ERR;
    rm_sockaddr_str((struct sockaddr *)&lc->addr, lc->addr_str, sizeof(lc->addr_str));
    lc->pipe_mode = rm_pb_pipe_mode(pb->address);
    lc->buffer_limit = rm_pb_u32(pb->per_connection_buffer_limit_bytes, 1024 * 1024);
    lc->reuse_port = rm_pb_bool(pb->enable_reuse_port, true);
    lc->backlog = rm_pb_u32(pb->tcp_backlog_size, 1024);
    for (size_t i = 0; i < pb->n_listener_filters; i++)
        lc->original_dst |= is_original_dst(pb->listener_filters[i]);
    lc->use_original_dst = rm_pb_bool(pb->use_original_dst, false);
    lc->original_dst |= lc->use_original_dst; /* Envoy adds the filter for it */
    lc->bind_to_port = rm_pb_bool(pb->bind_to_port, true);
    char prefix[300];
    snprintf(prefix, sizeof(prefix), "listener.%s.", lc->addr_str);
    for (char *c = prefix + 9; *c; c++)
        if (*c == ':') *c = '_'; /* Envoy: listener.127.0.0.1_10000. */
    lc->stats = rm_stats_get(prefix, rm_listener_stat_defs, RM_LS__COUNT);
    if (pb->n_filter_chains != 1 || pb->default_filter_chain ||
        pb->filter_chains[0]->filter_chain_match)
        return build_chains(b, lc, pb, path, prefix, err);
    lc->chains = calloc(1, sizeof(*lc->chains));
    if (!lc->chains) return rm_error_set(err, "out of memory");
    lc->chains[lc->n_chains++] = lc; /* its own chain */
    snprintf(p, sizeof(p), "%s.filter_chains[0]", path);
    return build_chain(b, lc, pb->filter_chains[0], p, prefix, err);
}

void rm_listener_cfg_sds_refs(const struct rm_listener_cfg *lc, struct rm_sds_refs *into)
{
    for (size_t i = 0; i < lc->n_chains; i++)
        rm_sds_refs_merge(into, rm_tls_ctx_sds_refs(lc->chains[i]->tls));
}

const struct rm_listener_cfg *rm_listener_cfg_follow(const struct rm_listener_cfg *lc,
                                                     const struct rm_listener_cfg *old)
{
    if (!lc->fcm) return old->chains && old->chains[0] == old ? lc : NULL; /* one chain */
    for (size_t i = 0; i < lc->n_chains; i++) {
        const struct rm_listener_cfg *ch = lc->chains[i];
        if (old->chain_name && old->chain_name[0] ? strcmp(ch->chain_name, old->chain_name) == 0
                                                  : !ch->chain_name[0] && i == old->chain_idx)
            return ch;
    }
    return NULL;
}

static const char *listener_label(const struct rm_listener_cfg *lc, size_t i, char *buf, size_t len)
{
    if (lc->dynamic)
        snprintf(buf, len, "Listener %s", lc->name);
    else
        snprintf(buf, len, "static_resources.listeners[%zu]", i);
    return buf;
}

/* Two listeners on one address (or two LDS listeners of one name) are an error. */
static int check_listener_addresses(const struct rm_snapshot *s, struct rm_error *err)
{
    for (size_t i = 0; i < s->n_listeners; i++) {
        const struct rm_listener_cfg *a = s->listeners[i];
        for (size_t j = 0; j < i; j++) {
            const struct rm_listener_cfg *o = s->listeners[j];
            char la[PATH_MAX_LEN], lo[PATH_MAX_LEN];
            if (a->addr_len == o->addr_len && memcmp(&a->addr, &o->addr, a->addr_len) == 0)
                return rm_error_set(err, "%s.address: %s is already used by %s",
                                    listener_label(a, i, la, sizeof(la)), a->addr_str,
                                    listener_label(o, j, lo, sizeof(lo)));
        }
    }
    return RM_OK;
}

/* The bootstrap's listeners, then <dyn>'s. */
static int build_static_listeners(struct rm_snapshot *s, const struct rm_snapshot_dyn *dyn,
                                  struct rm_error *err)
{
    const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr =
        s->bootstrap->static_resources;
    size_t n_static = sr ? sr->n_listeners : 0, n_dyn = dyn ? dyn->n_listeners : 0;
    s->listeners = calloc(n_static + n_dyn + 1, sizeof(*s->listeners));
    if (!s->listeners) return rm_error_set(err, "out of memory");
    struct build_ctx b = {.s = s, .dyn = dyn, .resolve = resolve_cluster, .resolve_ctx = s};
    for (size_t i = 0; i < n_static; i++) {
        char path[PATH_MAX_LEN];
        snprintf(path, sizeof(path), "static_resources.listeners[%zu]", i);
        if (build_listener(&b, sr->listeners[i], path, err)) return RM_ERR;
    }
    for (size_t i = 0; i < n_dyn; i++) {
        const struct rm_dyn_listener *d = &dyn->listeners[i];
        char path[PATH_MAX_LEN];
        snprintf(path, sizeof(path), "Listener %s", d->name);
        if (build_listener(&b, (const Listener *)d->pb->m, path, err)) return RM_ERR;
        struct rm_listener_cfg *lc = s->listeners[s->n_listeners - 1];
        lc->dynamic = true;
        lc->pb_box = rm_pb_box_ref(d->pb);
        lc->version_info = strdup(d->version_info ? d->version_info : "");
        lc->last_updated_ms = d->last_updated_ms;
        if (!lc->version_info) return rm_error_set(err, "out of memory");
    }
    return check_listener_addresses(s, err);
}

/* ---- snapshot ----------------------------------------------------------------------------- */

static int build(struct rm_snapshot *s, struct rm_error *err)
{
    const Envoy__Config__Bootstrap__V3__Bootstrap *bs = s->bootstrap;
    if (rm_pb_check_no_unknown(&bs->base, "", err)) return RM_ERR;
    if (bs->typed_dns_resolver_config) { /* validated here; used by the DNS clusters */
        struct rm_dns_config dns;
        if (rm_dns_config_from_typed(bs->typed_dns_resolver_config, "typed_dns_resolver_config",
                                     &dns, err))
            return RM_ERR;
    }
    if (bs->node) {
        s->node_id = strdup(bs->node->id ? bs->node->id : "");
        s->node_cluster = strdup(bs->node->cluster ? bs->node->cluster : "");
    }
    if (bs->admin && bs->admin->address) {
        if (rm_pb_address(bs->admin->address, "admin.address", &s->admin_addr, &s->admin_addr_len,
                          err))
            return RM_ERR;
        char a[RM_SOCKADDR_STRLEN];
        rm_sockaddr_str((struct sockaddr *)&s->admin_addr, a, sizeof(a));
        s->admin_addr_str = strdup(a);
        s->admin_pipe_mode = rm_pb_pipe_mode(bs->admin->address);
    }
    const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr = bs->static_resources;
    static const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources empty =
        ENVOY__CONFIG__BOOTSTRAP__V3__BOOTSTRAP__STATIC_RESOURCES__INIT;
    if (!sr) sr = &empty;
    if (rm_secrets_new(sr->secrets, sr->n_secrets, s->bootstrap_box, "static_resources.secrets",
                       &s->secrets, err))
        return RM_ERR;
    if (build_clusters(s, sr, err) || check_dynamic_resources(s, sr, err) ||
        build_static_listeners(s, NULL, err))
        return RM_ERR;
    for (size_t i = 0; i < s->n_listeners; i++) {
        char p[PATH_MAX_LEN];
        snprintf(p, sizeof(p), "static_resources.listeners[%zu] (%s): rds.config_source", i,
                 s->listeners[i]->name);
        if (s->listeners[i]->rds_name && check_source(s, sr, &s->listeners[i]->rds_src, p, err))
            return RM_ERR;
        snprintf(p, sizeof(p), "static_resources.listeners[%zu] (%s)", i, s->listeners[i]->name);
        struct rm_sds_refs refs = {0};
        rm_listener_cfg_sds_refs(s->listeners[i], &refs);
        int rc = check_sds_sources(s, sr, refs.n ? &refs : NULL, p, err);
        rm_sds_refs_dispose(&refs);
        if (rc) return RM_ERR;
    }
    for (size_t i = 0; i < s->n_clusters; i++) {
        char p[PATH_MAX_LEN];
        snprintf(p, sizeof(p), "cluster %s", s->clusters[i]->name);
        if (check_sds_sources(s, sr, rm_tls_ctx_sds_refs(s->clusters[i]->tls), p, err))
            return RM_ERR;
    }
    return RM_OK;
}

struct rm_snapshot *rm_snapshot_from_bootstrap(Envoy__Config__Bootstrap__V3__Bootstrap *bs,
                                               struct rm_error *err)
{
    struct rm_snapshot *s = calloc(1, sizeof(*s));
    if (!s) {
        protobuf_c_message_free_unpacked(&bs->base, NULL);
        rm_error_set(err, "out of memory");
        return NULL;
    }
    atomic_init(&s->refs, 1);
    s->bootstrap_box = rm_pb_box_new(&bs->base);
    if (!s->bootstrap_box) {
        free(s);
        rm_error_set(err, "out of memory");
        return NULL;
    }
    s->bootstrap = bs;
    if (build(s, err)) {
        rm_snapshot_unref(s);
        return NULL;
    }
    return s;
}

/* Copy <n> resources of <from> into *to (references on their messages). */
static int copy_res(struct rm_dyn_res **to, size_t *n_to, const struct rm_dyn_res *from, size_t n,
                    struct rm_error *err)
{
    *to = calloc(n + 1, sizeof(**to));
    if (!*to) return rm_error_set(err, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const struct rm_dyn_res *r = &from[i];
        struct rm_dyn_res *c = &(*to)[(*n_to)++];
        c->name = strdup(r->name);
        c->version_info = strdup(r->version_info ? r->version_info : "");
        c->pb = rm_pb_box_ref(r->pb);
        c->last_updated_ms = r->last_updated_ms;
        if (!c->name || !c->version_info) return rm_error_set(err, "out of memory");
    }
    return RM_OK;
}

static int copy_routes(struct rm_snapshot *s, const struct rm_snapshot_dyn *dyn,
                       struct rm_error *err)
{
    return copy_res(&s->routes, &s->n_routes, dyn->routes, dyn->n_routes, err) ||
                   copy_res(&s->warming_clusters, &s->n_warming_clusters, dyn->warming_clusters,
                            dyn->n_warming_clusters, err) ||
                   copy_res(&s->warming_listeners, &s->n_warming_listeners, dyn->warming_listeners,
                            dyn->n_warming_listeners, err) ||
                   copy_res(&s->dyn_secrets, &s->n_dyn_secrets, dyn->secrets, dyn->n_secrets, err)
               ? RM_ERR
               : RM_OK;
}

static void free_res(struct rm_dyn_res *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].name);
        free(v[i].version_info);
        rm_pb_box_unref(v[i].pb);
    }
    free(v);
}

static int merge_clusters(struct rm_snapshot *s, const struct rm_snapshot *base,
                          const struct rm_snapshot_dyn *dyn, struct rm_error *err)
{
    s->clusters = calloc(base->n_clusters + dyn->n_clusters + 1, sizeof(*s->clusters));
    if (!s->clusters) return rm_error_set(err, "out of memory");
    for (size_t i = 0; i < base->n_clusters; i++)
        s->clusters[s->n_clusters++] = rm_cluster_ref(base->clusters[i]);
    for (size_t i = 0; i < dyn->n_clusters; i++)
        s->clusters[s->n_clusters++] = rm_cluster_ref(dyn->clusters[i]);
    qsort(s->clusters, s->n_clusters, sizeof(*s->clusters), cmp_cluster);
    for (size_t i = 1; i < s->n_clusters; i++) {
        if (strcmp(s->clusters[i]->name, s->clusters[i - 1]->name) == 0)
            return rm_error_set(err, "Cluster %s: a cluster of that name already exists",
                                s->clusters[i]->name);
    }
    return RM_OK;
}

struct rm_snapshot *rm_snapshot_next(const struct rm_snapshot *base,
                                     const struct rm_snapshot_dyn *dyn, struct rm_error *err)
{
    struct rm_snapshot *s = calloc(1, sizeof(*s));
    if (!s) {
        rm_error_set(err, "out of memory");
        return NULL;
    }
    atomic_init(&s->refs, 1);
    s->version = base->version + 1;
    s->bootstrap_box = rm_pb_box_ref(base->bootstrap_box);
    s->bootstrap = base->bootstrap;
    s->secrets = rm_secrets_ref(base->secrets);
    s->sds = rm_secrets_ref(dyn->sds);
    s->admin_addr = base->admin_addr;
    s->admin_addr_len = base->admin_addr_len;
    s->admin_pipe_mode = base->admin_pipe_mode;
    s->admin_addr_str = base->admin_addr_str ? strdup(base->admin_addr_str) : NULL;
    s->node_id = base->node_id ? strdup(base->node_id) : NULL;
    s->node_cluster = base->node_cluster ? strdup(base->node_cluster) : NULL;
    s->ads_cluster = base->ads_cluster;
    s->ads_delta = base->ads_delta;
    s->ads_max_msg = base->ads_max_msg;
    s->lds = base->lds;
    s->cds = base->cds;
    rm_config_source_copy(&s->lds_src, &base->lds_src);
    rm_config_source_copy(&s->cds_src, &base->cds_src);
    if (merge_clusters(s, base, dyn, err) || copy_routes(s, dyn, err) ||
        build_static_listeners(s, dyn, err)) {
        rm_snapshot_unref(s);
        return NULL;
    }
    return s;
}

/* ---- checks of arriving resources ------------------------------------------------------- */

int rm_snapshot_check_listener(const Listener *pb, const char *path,
                               const struct rm_secrets *secrets, const struct rm_secrets *sds,
                               rm_route_resolve_fn resolve, void *resolve_ctx, char **rds_name,
                               struct rm_config_source *rds_src, struct rm_sds_refs *sds_refs,
                               struct rm_error *err)
{
    /* <s> borrows the tables (never unreferenced: not built through rm_snapshot_unref) */
    struct rm_snapshot s = {.secrets = (struct rm_secrets *)secrets,
                            .sds = (struct rm_secrets *)sds};
    struct rm_listener_cfg *one[1] = {NULL};
    s.listeners = one;
    struct build_ctx b = {
        .s = &s, .resolve = resolve, .resolve_ctx = resolve_ctx, .validate = true, .check = true};
    int rc = build_listener(&b, pb, path, err);
    if (rds_name) *rds_name = NULL;
    if (rc == RM_OK && rds_name && one[0]->rds_name) *rds_name = strdup(one[0]->rds_name);
    if (rds_src) *rds_src = (struct rm_config_source){0};
    if (rc == RM_OK && rds_src && one[0]->rds_name)
        rm_config_source_copy(rds_src, &one[0]->rds_src);
    if (sds_refs) {
        *sds_refs = (struct rm_sds_refs){0};
        if (rc == RM_OK) rm_listener_cfg_sds_refs(one[0], sds_refs);
    }
    listener_free(one[0]);
    for (size_t i = 0; i < s.n_owned; i++)
        protobuf_c_message_free_unpacked(s.owned[i], NULL);
    free(s.owned);
    return rc;
}

int rm_snapshot_check_route(const RouteConfiguration *pb, const char *path,
                            rm_route_resolve_fn resolve, void *resolve_ctx, struct rm_error *err)
{
    struct rm_route_table *t = rm_route_table_new_ex(pb, path, resolve, resolve_ctx, true, err);
    rm_route_table_free(t);
    return t ? RM_OK : RM_ERR;
}

bool rm_snapshot_uses_xds(const struct rm_snapshot *s)
{
    if (s->ads_cluster || s->lds || s->cds) return true;
    for (size_t i = 0; i < s->n_clusters; i++) {
        if (rm_cluster_is_eds(s->clusters[i]) || rm_tls_ctx_sds_refs(s->clusters[i]->tls))
            return true;
    }
    for (size_t i = 0; i < s->n_listeners; i++) {
        const struct rm_listener_cfg *lc = s->listeners[i];
        if (lc->rds_name) return true;
        for (size_t k = 0; k < lc->n_chains; k++)
            if (rm_tls_ctx_sds_refs(lc->chains[k]->tls)) return true;
    }
    return false;
}

bool rm_listener_cfg_same_socket(const struct rm_listener_cfg *a, const struct rm_listener_cfg *b)
{
    return strcmp(a->name, b->name) == 0 && a->addr_len == b->addr_len &&
           memcmp(&a->addr, &b->addr, a->addr_len) == 0 && a->bind_to_port == b->bind_to_port;
}

struct rm_snapshot *rm_snapshot_ref(struct rm_snapshot *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

static void listener_free(struct rm_listener_cfg *lc)
{
    if (!lc) return;
    struct rm_hcm_cfg *h = &lc->hcm;
    for (size_t i = 0; i < h->n_filters; i++) {
        h->filters[i].ops->config_free(h->filters[i].config);
        free(h->filters[i].name);
    }
    free(h->filters);
    for (size_t i = 0; i < h->n_access_logs; i++)
        rm_access_log_free(h->access_logs[i]);
    free(h->access_logs);
    rm_route_table_free(h->routes); /* per-route filter configs release their blocks */
    rm_stats_release(h->stats);
    rm_stats_release(lc->rds_stats);
    rm_stats_release(lc->stats); /* connections still counted there hold their own */
    free(h->stat_prefix);
    free(h->via);
    free(h->server_name);
    free(lc->name);
    free(lc->rds_name);
    rm_config_source_dispose(&lc->rds_src);
    free(lc->version_info);
    rm_pb_box_unref(lc->pb_box);
    rm_tls_ctx_unref(lc->tls);
    rm_tcp_proxy_cfg_free(lc->tcp);
    for (size_t i = 0; i < lc->n_chains; i++)
        if (lc->chains[i] != lc) listener_free(lc->chains[i]);
    free(lc->chains);
    rm_fcm_free(lc->fcm);
    free(lc->chain_name);
    free(lc);
}

void rm_snapshot_unref(struct rm_snapshot *s)
{
    if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1) return;
    for (size_t i = 0; i < s->n_listeners; i++)
        listener_free(s->listeners[i]);
    free(s->listeners);
    for (size_t i = 0; i < s->n_clusters; i++)
        rm_cluster_unref(s->clusters[i]);
    free(s->clusters);
    free_res(s->routes, s->n_routes);
    free_res(s->warming_clusters, s->n_warming_clusters);
    free_res(s->warming_listeners, s->n_warming_listeners);
    free_res(s->dyn_secrets, s->n_dyn_secrets);
    for (size_t i = 0; i < s->n_owned; i++)
        protobuf_c_message_free_unpacked(s->owned[i], NULL);
    free(s->owned);
    rm_pb_box_unref(s->bootstrap_box);
    rm_secrets_unref(s->secrets);
    rm_secrets_unref(s->sds);
    rm_config_source_dispose(&s->lds_src);
    rm_config_source_dispose(&s->cds_src);
    free(s->admin_addr_str);
    free(s->node_id);
    free(s->node_cluster);
    free(s);
}
