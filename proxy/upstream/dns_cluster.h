/* DNS clusters: STRICT_DNS and LOGICAL_DNS membership from periodic, asynchronous resolutions.
 *
 * One struct rm_dns_clusters per server, on the main thread, drives every DNS cluster of the
 * snapshot: per endpoint ("target") of a cluster, a c-ares resolution (proxy/upstream/dns.h),
 * then a timer for the next one (rm_dns_next_refresh_ms: dns_refresh_rate, or the TTL with
 * respect_dns_ttl, plus dns_jitter; dns_failure_refresh_rate's jittered backoff while it fails).
 *
 *  - STRICT_DNS: every address of every target's latest good answer is a host (with the
 *    target's port, weight, health and locality; duplicates dropped, the first wins).
 *  - LOGICAL_DNS: one target, one logical host; new connections go to the first address of the
 *    latest good answer, existing connections are kept (rm_host_set_logical).
 *  - A failed resolution, or one with no address, keeps the target's last good addresses and
 *    retries on the failure backoff; it is logged once per change of state:
 *    "cluster NAME: DNS resolution of HOST failed: <c-ares error>".
 *  - After each good answer the cluster's membership is recomputed and diffed against the
 *    current set (rm_host_set_diff): the same membership counts update_no_rebuild and goes
 *    nowhere; a new one becomes the cluster's set (rm_cluster_set_hosts) and is handed to the
 *    workers through <publish>.
 *  - Stats (cluster.<name>.): update_attempt (each resolution started), update_success,
 *    update_failure (failed or empty), update_no_rebuild; membership_total / _healthy are
 *    recounted by rm_cluster_set_hosts.
 *
 * Resolvers: the bootstrap's typed_dns_resolver_config (else /etc/resolv.conf) gives the shared
 * resolver; a cluster naming its own (DnsCluster.typed_dns_resolver_config, or the deprecated
 * Cluster fields) gets a resolver of its own.  Nothing blocks: until its first answer a DNS
 * cluster has no host (requests get 503 UH).  "Initialized" is when every DNS cluster has had
 * its first answer or failure (Envoy's cluster warming); <on_init> is called once then. */
#ifndef RM_UPSTREAM_DNS_CLUSTER_H
#define RM_UPSTREAM_DNS_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>

#include "proxy/core/error.h"
#include "proxy/upstream/cluster.h"
#include "proxy/upstream/dns.h"

struct rm_loop;
struct rm_dns_clusters;

/** Publish cluster <c>'s new membership <hs> to the workers (take references as needed; the
 *  caller keeps its own).  Main thread. */
typedef void (*rm_dns_publish_fn)(void *ctx, struct rm_cluster *c, struct rm_host_set *hs);

/** Start resolving the DNS clusters among <clusters>[0..n) (others are ignored) on <loop> (the
 *  main thread's).  <resolver_cfg>: the bootstrap's resolver (NULL = system defaults; copied).
 *  The clusters must outlive the manager.  First resolutions start at once (answers come later,
 *  never inside this call).  <on_init>(ctx) runs once, from a resolution callback, when the
 *  last DNS cluster waiting for its first answer or failure gets it; if none waits (no DNS
 *  cluster, or none with an endpoint) rm_dns_clusters_initialized() is true at once and
 *  <on_init> never runs.  Returns NULL with <err> when a resolver cannot start (names the
 *  cluster). */
struct rm_dns_clusters *rm_dns_clusters_new(struct rm_loop *loop,
                                            struct rm_cluster *const *clusters, size_t n,
                                            const struct rm_dns_config *resolver_cfg,
                                            rm_dns_publish_fn publish, void (*on_init)(void *ctx),
                                            void *ctx, struct rm_error *err);

/** Stop: cancel queries and timers, free the resolvers.  NULL is a no-op.  Main thread, not
 *  from inside one of its callbacks.  Run the loop's pending tasks before freeing the loop. */
void rm_dns_clusters_free(struct rm_dns_clusters *m);

/** Whether every DNS cluster has had its first answer or failure. */
bool rm_dns_clusters_initialized(const struct rm_dns_clusters *m);

/** The names of the DNS clusters still waiting for their first answer, ", "-separated, into
 *  <buf> (for the warming-timeout log line). */
void rm_dns_clusters_waiting(const struct rm_dns_clusters *m, char *buf, size_t len);

/** The shared resolver (the bootstrap's), for any other name remora must resolve. */
struct rm_dns_resolver *rm_dns_clusters_resolver(struct rm_dns_clusters *m);

#endif
