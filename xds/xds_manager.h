/* The xDS config manager: what remora does with the resources its ADS client (xds/ads_client.h)
 * receives — Envoy's cluster manager and listener manager, on the main loop.
 *
 *  - CDS (dynamic_resources.cds_config): every Cluster is checked as the bootstrap's are
 *    (rm_cluster_new) plus: its name is not a static cluster's, its EDS source is the one EDS
 *    comes from.  STRICT_DNS / LOGICAL_DNS clusters resolve with a proxy/upstream/dns_cluster.h
 *    manager of their own (the bootstrap's resolver settings) and warm until their first
 *    answer.
 *    A new or changed cluster is a new object (one whose bytes did not change is never seen
 *    again: the client drops it by hash, so the object, its pools, outlier state and stats
 *    carry over).  An EDS cluster warms until its ClusterLoadAssignment is known (at once when
 *    its service's assignment already is) or its initial_fetch_timeout passes; while it warms
 *    the version it replaces keeps serving.
 *  - EDS: the service names of every EDS cluster (static, active, warming) are subscribed; an
 *    assignment becomes the membership of each cluster of that service (rm_host_set_diff, then
 *    the hosts are published to the workers without a new snapshot: one endpoint change costs
 *    the same in a mesh of any size).
 *  - LDS (lds_config: ads): every Listener is checked as the bootstrap's are
 *    (rm_snapshot_check_listener: routes of an inline route_config must name known clusters),
 *    its name is not a static listener's, its address is not another listener's and can be
 *    bound.  A listener with rds warms until its RouteConfiguration arrives (or 15 s); the
 *    version it replaces keeps serving meanwhile.
 *  - RDS: the route_config_names of every listener are subscribed; a RouteConfiguration whose
 *    routes name an unknown cluster is rejected (unless it says validate_clusters: false).
 *  - SDS: the secrets TLS contexts reference with an sds_config (bootstrap and xDS listeners and
 *    clusters, active and warming) are subscribed by name (xds/sds_store.h keeps them).  A
 *    Secret is checked (proxy/net/tls.h rm_tls_check_secret) and so is every context using it,
 *    rebuilt on it: clusters get the new context in place (rm_cluster_set_tls), listeners in
 *    the next snapshot.  LDS listeners and CDS clusters warm until their secrets arrive, each
 *    secret bounded by its own initial_fetch_timeout (then active without it: handshakes
 *    fail); bootstrap ones hold /ready.
 *  - One bad resource rejects its whole response (NACK; the type keeps its last good config).
 *  - Any accepted change to the active clusters, listeners or routes builds the next snapshot
 *    (rm_snapshot_next) and hands it to <publish>.
 *  - Stats: cluster_manager.{cds.update_attempt,cds.update_success,cds.update_rejected,
 *    cds.version,active_clusters,warming_clusters,cluster_added,cluster_modified,
 *    cluster_removed}, listener_manager.{lds.*, total_listeners_active,
 *    total_listeners_warming, listener_added, listener_modified, listener_removed} (the
 *    server counts total_listeners_draining: proxy/server/worker.h), and per EDS cluster
 *    cluster.<name>.update_{attempt,success,rejected,no_rebuild}.
 *  - Initialized (for /ready) once the first CDS and LDS responses were accepted (when
 *    configured), no cluster or listener warms and every static EDS cluster has had an
 *    assignment — or the largest initial_fetch_timeout (default 15 s) has passed. */
#ifndef RM_XDS_XDS_MANAGER_H
#define RM_XDS_XDS_MANAGER_H

#include <stdbool.h>
#include <stddef.h>

#include "proxy/config/snapshot.h"
#include "proxy/core/error.h"
#include "proxy/core/loop.h"

struct rm_xds_manager;

struct rm_xds_hooks {
    /** Make <next> the active config (bind its new listeners, hand it to the workers).  RM_OK,
     *  or RM_ERR with <err> when nothing changed. */
    int (*publish)(void *ctx, struct rm_snapshot *next, struct rm_error *err);
    /** Cluster <c>'s new membership <hs> to the workers (c is in the active snapshot). */
    void (*publish_hosts)(void *ctx, struct rm_cluster *c, struct rm_host_set *hs);
    /** The initial config is warm (called once). */
    void (*on_init)(void *ctx);
};

/** Start xDS for bootstrap snapshot <base> (which must have an ADS cluster; the manager keeps a
 *  reference and builds every later snapshot on it).  NULL with <err>. */
struct rm_xds_manager *rm_xds_manager_new(struct rm_loop *loop, struct rm_snapshot *base,
                                          const struct rm_xds_hooks *hooks, void *ctx,
                                          struct rm_error *err);
/** Stop (closes the stream).  NULL is a no-op.  Main thread, not from a callback. */
void rm_xds_manager_free(struct rm_xds_manager *m);
bool rm_xds_manager_initialized(const struct rm_xds_manager *m);
/** What the initial config still waits for, ", "-separated, into <buf>. */
void rm_xds_manager_waiting(const struct rm_xds_manager *m, char *buf, size_t len);

#endif
