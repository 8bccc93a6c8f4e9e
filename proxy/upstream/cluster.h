/* Clusters and hosts: the immutable, shared part built from Envoy's Cluster message.
 *
 * A struct rm_cluster belongs to one config snapshot and is read-only after it is built,
 * except for statistics and per-host counters (atomics).  Per-worker state (load-balancer
 * cursors, connection pools) lives in struct rm_worker_cluster (proxy/upstream/pool.h). */
#ifndef RM_UPSTREAM_CLUSTER_H
#define RM_UPSTREAM_CLUSTER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "proxy/admin/stats.h"
#include "proxy/core/error.h"
#include "proxy/http/codec.h"
#include "proxy/upstream/circuit_breaker.h"
#include "proxy/upstream/outlier.h"

struct Envoy__Config__Cluster__V3__Cluster;

enum rm_health {
    RM_HEALTH_UNKNOWN = 0, /* routable */
    RM_HEALTH_HEALTHY = 1,
    RM_HEALTH_UNHEALTHY = 2,
    RM_HEALTH_DRAINING = 3,
    RM_HEALTH_TIMEOUT = 4,
    RM_HEALTH_DEGRADED = 5,
};

struct rm_host {
    struct sockaddr_storage addr;
    socklen_t addr_len;
    char addr_str[64]; /* "127.0.0.1:8080" / "[::1]:8080" */
    char *hostname;
    uint32_t weight; /* ≥ 1 */
    enum rm_health health;
    /* shared counters, shown by /clusters */
    _Atomic int64_t rq_active, rq_total, rq_error, rq_success, rq_timeout;
    _Atomic int64_t cx_active, cx_total, cx_connect_fail;
    struct rm_outlier_host outlier; /* det is NULL without outlier_detection */
};

/** Whether the load balancers may pick <h> outside panic mode: its EDS/static health allows it
 *  and outlier detection has not ejected it (Envoy: FAILED_OUTLIER_CHECK is unhealthy). */
static inline bool rm_host_routable(const struct rm_host *h)
{
    return (h->health == RM_HEALTH_UNKNOWN || h->health == RM_HEALTH_HEALTHY ||
            h->health == RM_HEALTH_DEGRADED) &&
           !rm_outlier_ejected(&h->outlier);
}

enum rm_lb_policy {
    RM_LB_ROUND_ROBIN = 0,
    RM_LB_LEAST_REQUEST = 1,
    RM_LB_RANDOM = 3,
};

enum rm_upstream_proto {
    RM_UPSTREAM_HTTP1,
    RM_UPSTREAM_HTTP2,
    RM_UPSTREAM_USE_DOWNSTREAM,
};

struct rm_cluster {
    char *name;
    char *stat_name; /* alt_stat_name or name */
    unsigned idx;    /* position in the snapshot */
    enum rm_lb_policy lb_policy;
    uint32_t lr_choice_count; /* LEAST_REQUEST: choices (default 2) */
    uint32_t connect_timeout_ms;
    uint32_t idle_timeout_ms; /* upstream connection idle timeout (default 1 h; 0 = none) */
    uint32_t max_requests_per_connection; /* 0 = unlimited */
    enum rm_upstream_proto proto;
    struct rm_codec_settings codec; /* h2 settings, buffer limit */
    struct rm_host **hosts;
    size_t n_hosts;
    uint32_t healthy_panic_threshold; /* percent, default 50 */
    struct rm_outlier *outlier;       /* NULL without outlier_detection */
    struct rm_cb *cb[RM_CB_PRIORITIES]; /* circuit breakers by routing priority (DEFAULT, HIGH) */
    struct rm_stats *stats;
    const struct Envoy__Config__Cluster__V3__Cluster *pb; /* owned by the snapshot */
};

/** Build a cluster from <pb> (kept by pointer: it must outlive the cluster).  Unsupported
 *  features are errors naming the field under <path> (e.g. "static_resources.clusters[1]").
 *  Returns NULL with <err> filled on failure. */
struct rm_cluster *rm_cluster_new(const struct Envoy__Config__Cluster__V3__Cluster *pb,
                                  const char *path, struct rm_error *err);
void rm_cluster_free(struct rm_cluster *c);

/** Count the cluster's membership gauges (total, healthy). */
void rm_cluster_update_membership(struct rm_cluster *c);

/** Format "ip:port" for a sockaddr. */
void rm_sockaddr_str(const struct sockaddr *sa, char *buf, size_t len);

#endif
