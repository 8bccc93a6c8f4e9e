/* The TCP proxy network filter (envoy.filters.network.tcp_proxy): each downstream connection
 * gets one upstream connection to a host of its cluster, and bytes are relayed both ways
 * unchanged.
 *
 * Config (rm_tcp_proxy_cfg, built from TcpProxy by rm_tcp_proxy_cfg_new, owned by a listener
 * config): stat_prefix, cluster or weighted_clusters (picked per connection by weight),
 * idle_timeout (default 1 h, 0 = none), max_connect_attempts (default 1),
 * max_downstream_connection_duration.  Other fields are rejected with their path.
 *
 * Behaviour, as Envoy's: the downstream is not read until the upstream is connected (cluster
 * connect_timeout, max_connections circuit breaker, outlier detection's local-origin connect
 * results, the cluster's TLS origination); a failed connect is retried on another host up to
 * max_connect_attempts; no cluster (NR), no host (UH), overflow (UO) or connect failure (UF)
 * closes the downstream.  Relay: bounded by per_connection_buffer_limit_bytes per direction
 * (reading one side stops while the other's output is above it); half-close: a FIN from one
 * side becomes a shutdown(SHUT_WR) of the other once its output is written, and the pair ends
 * when both directions are done; a reset or error on either side closes both; idle_timeout
 * (no byte either way) and max_downstream_connection_duration close both.  Graceful drain
 * leaves connections alone: the worker closes them when the drain time is over. */
#ifndef RM_TCP_TCP_PROXY_H
#define RM_TCP_TCP_PROXY_H

#include <stddef.h>
#include <stdint.h>

#include "proxy/core/error.h"
#include "proxy/http/route.h"
#include "proxy/server/netfilter.h"

struct Envoy__Extensions__Filters__Network__TcpProxy__V3__TcpProxy;
struct rm_cluster;
struct rm_access_log;
struct rm_stats;

struct rm_tcp_cluster {
    char *name;
    struct rm_cluster *cluster; /* resolved by the snapshot builder; NULL = unknown (NR) */
    uint32_t weight;            /* weighted_clusters; 1 for a single cluster */
};

struct rm_tcp_proxy_cfg {
    char *stat_prefix;
    struct rm_tcp_cluster *clusters;
    size_t n_clusters;
    uint64_t total_weight;
    uint32_t idle_timeout_ms;           /* default 1 h; 0 = none */
    uint32_t max_connect_attempts;      /* >= 1 */
    uint32_t max_duration_ms;           /* max_downstream_connection_duration; 0 = none */
    struct rm_stats *stats;             /* tcp.<stat_prefix>. (a reference) */
    struct rm_access_log **access_logs; /* access_log, in order (proxy/http/access_log.h) */
    size_t n_access_logs;
};

/** Build from <pb> (errors name fields under <path>); cluster names resolve through <resolve>
 *  (an unknown one is not an error: connections to it are closed as no route, as Envoy).
 *  NULL with <err>. */
struct rm_tcp_proxy_cfg *
rm_tcp_proxy_cfg_new(const struct Envoy__Extensions__Filters__Network__TcpProxy__V3__TcpProxy *pb,
                     const char *path, rm_route_resolve_fn resolve, void *resolve_ctx,
                     struct rm_error *err);
/** NULL is a no-op. */
void rm_tcp_proxy_cfg_free(struct rm_tcp_proxy_cfg *cfg);
/** The cluster for a new connection: by weight with <rnd> a random draw. */
const struct rm_tcp_cluster *rm_tcp_proxy_pick(const struct rm_tcp_proxy_cfg *cfg, uint64_t rnd);

/** The TCP proxy as a network filter (proxy/server/netfilter.h). */
extern const struct rm_netfilter_ops rm_tcp_proxy_netfilter;

#endif
