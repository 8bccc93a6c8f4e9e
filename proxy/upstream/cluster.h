/* Clusters and hosts: the immutable, shared part built from Envoy's Cluster message.
 *
 * A struct rm_cluster is refcounted and shared by every config snapshot that has it (a cluster
 * whose definition did not change is the same object in the next snapshot, so pools, outlier
 * state and stats carry over).  It is read-only after it is built, except for statistics and
 * per-host counters (atomics) and its current membership c->hs, which only the main thread
 * reads and replaces (DNS clusters: proxy/upstream/dns_cluster.h; EDS: xds/).
 * Per-worker state (load-balancer cursors, connection pools, the worker's own reference to the
 * membership) lives in struct rm_worker_cluster (proxy/upstream/pool.h). */
#ifndef RM_UPSTREAM_CLUSTER_H
#define RM_UPSTREAM_CLUSTER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "proxy/admin/stats.h"
#include "proxy/core/error.h"
#include "proxy/config/config_source.h"
#include "proxy/config/pbutil.h"
#include "proxy/http/codec.h"
#include "proxy/upstream/circuit_breaker.h"
#include "proxy/upstream/host.h"
#include "proxy/upstream/outlier.h"

struct Envoy__Config__Cluster__V3__Cluster;
struct rm_dns_cluster_cfg;
struct rm_health_checker;
struct rm_odst;
struct rm_secrets;
struct rm_tls_ctx;

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

/** One endpoint of a DNS cluster: the name to resolve and what its hosts get. */
struct rm_dns_target {
    char *name;     /* socket_address.address */
    uint16_t port;  /* socket_address.port_value */
    char *hostname; /* the hosts' hostname: Endpoint.hostname, else <name> */
    uint32_t weight;
    enum rm_health health;
    int locality_idx;
    char *path; /* "...load_assignment.endpoints[i].lb_endpoints[j]", for messages */
};

struct rm_cluster {
    _Atomic unsigned refs;
    char *name;
    char *stat_name; /* alt_stat_name or name */
    /* Stable id while the cluster lives, unique among live clusters (reused after the last
     * unref): workers index their per-cluster state by it (rm_worker_cluster_for). */
    unsigned slot;
    enum rm_lb_policy lb_policy;
    uint32_t lr_choice_count; /* LEAST_REQUEST: choices (default 2) */
    uint32_t connect_timeout_ms;
    uint32_t idle_timeout_ms; /* upstream connection idle timeout (default 1 h; 0 = none) */
    uint32_t max_requests_per_connection; /* 0 = unlimited */
    enum rm_upstream_proto proto;
    struct rm_codec_settings codec; /* h2 settings, buffer limit */
    /* Current membership (host.h).  Main thread only: workers balance over their own reference
     * (struct rm_worker_cluster.hs), updated through rm_worker_publish_hosts. */
    struct rm_host_set *hs;
    /* STRICT_DNS / LOGICAL_DNS: how to resolve and what (NULL / 0 for STATIC clusters) */
    struct rm_dns_cluster_cfg *dns;
    struct rm_dns_target *dns_targets;
    size_t n_dns_targets;
    /* EDS: the resource name (service_name, else the cluster name), initial_fetch_timeout
     * (default 15 s; 0 = none) and the config source; NULL for other clusters */
    char *eds_service;
    uint32_t eds_init_timeout_ms;
    struct rm_config_source eds_src; /* where the assignments come from */
    /* ORIGINAL_DST: its config and live hosts (proxy/upstream/original_dst.h); c->hs stays
     * empty.  NULL for other clusters. */
    struct rm_odst *odst;
    uint32_t healthy_panic_threshold;   /* percent, default 50 */
    struct rm_outlier *outlier;         /* NULL without outlier_detection */
    struct rm_health_checker *hc;       /* NULL without health_checks (health_check.h) */
    struct rm_cb *cb[RM_CB_PRIORITIES]; /* circuit breakers by routing priority (DEFAULT, HIGH) */
    struct rm_stats *stats;
    /* transport_socket: TLS origination (a reference; SSL_CTX shared by the workers), or NULL.
     * Replaced when a secret it takes over SDS changes (rm_cluster_set_tls): workers read it
     * with rm_cluster_tls, under <tls_lock>; the main thread may read it directly. */
    struct rm_tls_ctx *tls;
    pthread_mutex_t tls_lock;
    /* The message it was built from: static clusters keep it (inside *pb_box, the bootstrap's);
     * CDS clusters keep only its bytes (pb NULL, pb_box holding them) for /config_dump. */
    const struct Envoy__Config__Cluster__V3__Cluster *pb;
    struct rm_pb_box *pb_box; /* a reference (NULL: the caller keeps *pb alive) */
    /* Dynamic (CDS) clusters: the version_info it came with and when (ms since the epoch), for
     * /config_dump; NULL / 0 for static ones. */
    char *version_info;
    uint64_t last_updated_ms;
};

/** Build a cluster from <pb>, which lives in <box> (the cluster takes a reference; NULL when
 *  the caller guarantees <pb> outlives the cluster).  Its transport_socket's SDS references
 *  resolve in <secrets> (borrowed for the call; NULL: none).  Unsupported features are errors
 * naming the field under <path> (e.g. "static_resources.clusters[1]").  Returns a cluster with one
 *  reference, or NULL with <err> filled. */
struct rm_cluster *rm_cluster_new(const struct Envoy__Config__Cluster__V3__Cluster *pb,
                                  struct rm_pb_box *box, const struct rm_secrets *secrets,
                                  const char *path, struct rm_error *err);
struct rm_cluster *rm_cluster_ref(struct rm_cluster *c);
/** The cluster's TLS context: a new reference (drop it with rm_tls_ctx_unref), or NULL for
 *  plaintext.  Any thread (a new upstream connection takes it; connections keep theirs). */
struct rm_tls_ctx *rm_cluster_tls(struct rm_cluster *c);
/** Make <t> the cluster's TLS context (takes the reference; the old one is dropped, live
 *  connections keep their own).  Main thread. */
void rm_cluster_set_tls(struct rm_cluster *c, struct rm_tls_ctx *t);
/** Drop a reference; the last one frees the cluster (any thread: the outlier detector's timer
 *  and the health checker must have been stopped on the main thread before).  NULL is a no-op. */
void rm_cluster_unref(struct rm_cluster *c);

/** Count the cluster's membership gauges (total, healthy) over c->hs.  Main thread. */
void rm_cluster_update_membership(struct rm_cluster *c);

/** Make <hs> the cluster's current membership (takes over the caller's reference): the outlier
 *  detector follows it (hosts that left can no longer be ejected and give back their ejection
 *  slot), so does the health checker (new hosts start failed, hosts that left are no longer
 *  checked) and the membership gauges are recounted.  Main thread.  Publishing the set to the
 *  workers is the caller's business (rm_worker_publish_hosts). */
void rm_cluster_set_hosts(struct rm_cluster *c, struct rm_host_set *hs);

/** Apply the outcome of a membership diff (rm_host_set_diff / rm_host_set_logical): <rc>
 *  RM_HOST_SET_CHANGED makes <hs> the membership (rm_cluster_set_hosts takes the reference)
 *  and returns true; RM_HOST_SET_SAME counts update_no_rebuild; an error is logged (the cluster
 *  keeps its hosts).  Main thread.  Publishing is the caller's business. */
bool rm_cluster_take_diff(struct rm_cluster *c, int rc, struct rm_host_set *hs);

struct Envoy__Config__Endpoint__V3__ClusterLoadAssignment;

/** The hosts a load assignment lists (STATIC clusters' load_assignment, EDS resources): every
 *  lb_endpoint needs an IP-literal socket address with a port and a weight >= 1; priorities
 *  other than 0, policy and named_endpoints are errors.  <path> names <la> in messages (e.g.
 *  "static_resources.clusters[0].load_assignment").  On RM_OK *specs (malloc'd, *n entries;
 *  free() it) lists them in order, duplicates kept; hostnames point into <la>.  RM_ERR with
 *  <err> naming the field otherwise.  <la> NULL: no host. */
int rm_load_assignment_specs(const struct Envoy__Config__Endpoint__V3__ClusterLoadAssignment *la,
                             const char *path, struct rm_host_spec **specs, size_t *n,
                             struct rm_error *err);

/** Whether the cluster gets its hosts from EDS. */
static inline bool rm_cluster_is_eds(const struct rm_cluster *c)
{
    return c->eds_service != NULL;
}

/** Whether the cluster finds its hosts through DNS (STRICT_DNS / LOGICAL_DNS). */
static inline bool rm_cluster_is_dns(const struct rm_cluster *c)
{
    return c->dns != NULL;
}

#endif
