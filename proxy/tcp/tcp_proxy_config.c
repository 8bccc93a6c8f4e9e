#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.pb-c.h"
#include "proxy/admin/stats.h"
#include "proxy/config/pbutil.h"
#include "proxy/http/access_log.h"
#include "proxy/tcp/tcp_proxy.h"

typedef Envoy__Extensions__Filters__Network__TcpProxy__V3__TcpProxy TcpProxy;
typedef Envoy__Extensions__Filters__Network__TcpProxy__V3__TcpProxy__WeightedCluster__ClusterWeight
    ClusterWeight;

#define DEFAULT_IDLE_MS (3600u * 1000u)

/* Fields remora does not implement: an error naming the first one set. */
static int check_unsupported(const TcpProxy *pb, const char *path, struct rm_error *err)
{
    const char *f = pb->on_demand                 ? "on_demand"
                    : pb->metadata_match          ? "metadata_match"
                    : pb->tunneling_config        ? "tunneling_config"
                    : pb->downstream_idle_timeout ? "downstream_idle_timeout"
                    : pb->upstream_idle_timeout   ? "upstream_idle_timeout"
                                                  : NULL;
    if (f) return rm_error_set(err, "%s.%s: not supported by remora yet", path, f);
    return RM_OK;
}

static int add_cluster(struct rm_tcp_proxy_cfg *cfg, const char *name, uint32_t weight,
                       rm_route_resolve_fn resolve, void *resolve_ctx, struct rm_error *err)
{
    struct rm_tcp_cluster *c = &cfg->clusters[cfg->n_clusters];
    if (!(c->name = strdup(name))) return rm_error_set(err, "out of memory");
    c->cluster = resolve ? resolve(resolve_ctx, name) : NULL;
    c->weight = weight;
    cfg->n_clusters++;
    cfg->total_weight += weight;
    return RM_OK;
}

static int build_clusters(struct rm_tcp_proxy_cfg *cfg, const TcpProxy *pb, const char *path,
                          rm_route_resolve_fn resolve, void *resolve_ctx, struct rm_error *err)
{
    if (pb->cluster_specifier_case ==
        ENVOY__EXTENSIONS__FILTERS__NETWORK__TCP_PROXY__V3__TCP_PROXY__CLUSTER_SPECIFIER_CLUSTER) {
        if (!pb->cluster || !pb->cluster[0])
            return rm_error_set(err, "%s.cluster: must not be empty", path);
        if (!(cfg->clusters = calloc(1, sizeof(*cfg->clusters))))
            return rm_error_set(err, "out of memory");
        return add_cluster(cfg, pb->cluster, 1, resolve, resolve_ctx, err);
    }
    if (pb->cluster_specifier_case !=
        ENVOY__EXTENSIONS__FILTERS__NETWORK__TCP_PROXY__V3__TCP_PROXY__CLUSTER_SPECIFIER_WEIGHTED_CLUSTERS)
        return rm_error_set(err, "%s: cluster or weighted_clusters is required", path);
    size_t n = pb->weighted_clusters->n_clusters;
    if (!n)
        return rm_error_set(err, "%s.weighted_clusters.clusters: at least one is required", path);
    if (!(cfg->clusters = calloc(n, sizeof(*cfg->clusters))))
        return rm_error_set(err, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const ClusterWeight *w = pb->weighted_clusters->clusters[i];
        char p[512];
        snprintf(p, sizeof(p), "%s.weighted_clusters.clusters[%zu]", path, i);
        if (!w->name || !w->name[0]) return rm_error_set(err, "%s.name: must not be empty", p);
        if (w->weight < 1) return rm_error_set(err, "%s.weight: must be at least 1", p);
        if (w->metadata_match)
            return rm_error_set(err, "%s.metadata_match: not supported by remora yet", p);
        if (add_cluster(cfg, w->name, w->weight, resolve, resolve_ctx, err)) return RM_ERR;
    }
    return RM_OK;
}

struct rm_tcp_proxy_cfg *rm_tcp_proxy_cfg_new(const TcpProxy *pb, const char *path,
                                              rm_route_resolve_fn resolve, void *resolve_ctx,
                                              struct rm_error *err)
{
    if (!pb->stat_prefix || !pb->stat_prefix[0]) {
        rm_error_set(err, "%s.stat_prefix: required", path);
        return NULL;
    }
    if (check_unsupported(pb, path, err)) return NULL;
    struct rm_tcp_proxy_cfg *cfg = calloc(1, sizeof(*cfg));
    if (!cfg || !(cfg->stat_prefix = strdup(pb->stat_prefix))) {
        rm_error_set(err, "out of memory");
        goto fail;
    }
    if (build_clusters(cfg, pb, path, resolve, resolve_ctx, err)) goto fail;
    cfg->idle_timeout_ms = rm_pb_duration_ms(pb->idle_timeout, DEFAULT_IDLE_MS);
    cfg->max_connect_attempts = rm_pb_u32(pb->max_connect_attempts, 1);
    if (cfg->max_connect_attempts < 1) {
        rm_error_set(err, "%s.max_connect_attempts: must be at least 1", path);
        goto fail;
    }
    if (pb->max_downstream_connection_duration) {
        cfg->max_duration_ms = rm_pb_duration_ms(pb->max_downstream_connection_duration, 0);
        if (cfg->max_duration_ms < 1) {
            rm_error_set(err, "%s.max_downstream_connection_duration: must be at least 1ms", path);
            goto fail;
        }
    }
    if (pb->n_access_log && !(cfg->access_logs = calloc(pb->n_access_log, sizeof(void *)))) {
        rm_error_set(err, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < pb->n_access_log; i++) {
        char p[512];
        snprintf(p, sizeof(p), "%s.access_log[%zu]", path, i);
        if (!(cfg->access_logs[i] = rm_access_log_new(pb->access_log[i], p, err))) goto fail;
        cfg->n_access_logs++;
    }
    char prefix[300];
    snprintf(prefix, sizeof(prefix), "tcp.%s.", cfg->stat_prefix);
    cfg->stats = rm_stats_get(prefix, rm_tcp_stat_defs, RM_TCP__COUNT);
    return cfg;
fail:
    rm_tcp_proxy_cfg_free(cfg);
    return NULL;
}

void rm_tcp_proxy_cfg_free(struct rm_tcp_proxy_cfg *cfg)
{
    if (!cfg) return;
    for (size_t i = 0; i < cfg->n_clusters; i++)
        free(cfg->clusters[i].name);
    free(cfg->clusters);
    for (size_t i = 0; i < cfg->n_access_logs; i++)
        rm_access_log_free(cfg->access_logs[i]);
    free(cfg->access_logs);
    free(cfg->stat_prefix);
    rm_stats_release(cfg->stats);
    free(cfg);
}

const struct rm_tcp_cluster *rm_tcp_proxy_pick(const struct rm_tcp_proxy_cfg *cfg, uint64_t rnd)
{
    if (cfg->n_clusters == 1) return &cfg->clusters[0];
    uint64_t r = rnd % cfg->total_weight;
    for (size_t i = 0; i < cfg->n_clusters; i++) {
        if (r < cfg->clusters[i].weight) return &cfg->clusters[i];
        r -= cfg->clusters[i].weight;
    }
    return &cfg->clusters[cfg->n_clusters - 1];
}
