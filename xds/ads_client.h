/* The ADS client: EDS for the snapshot's EDS clusters over one SotW StreamAggregatedResources
 * call (dynamic_resources.ads_config), on the main loop.
 *
 *  - One gRPC channel (xds/grpc.h) to the first host of the ADS cluster.  The stream subscribes
 *    to type ClusterLoadAssignment with resource_names = every EDS cluster's service name; the
 *    first request carries the node (id, cluster, user_agent_name "remora",
 *    user_agent_version, client_features) and, on a reconnect, the last accepted version_info.
 *  - Each DiscoveryResponse is validated whole (xds/ads_eds.h).  Accepted: each named
 *    assignment becomes the membership of every EDS cluster subscribed to it (rm_host_set_diff,
 *    rm_cluster_set_hosts, then <publish> to the workers); clusters not named keep their hosts;
 *    ACK; every EDS cluster counts update_success.  Rejected: NACK (last accepted version, the
 *    nonce, error_detail code 13 + the message), every EDS cluster keeps its hosts and counts
 *    update_rejected; logged as a warning.
 *  - A stream that ends (or never connects) is retried after a jittered exponential backoff,
 *    500 ms doubling to 30 s (the delay is uniform in [b/2, b]); a response resets it.
 *  - control_plane.connected_state: 1 while a stream has had a response, else 0.
 *  - Warming: until an EDS cluster's first accepted assignment it has no host (503 UH); the
 *    client is "initialized" once every EDS cluster got one, or the largest
 *    initial_fetch_timeout passed (0 everywhere: no bound here); <on_init> runs once then. */
#ifndef RM_XDS_ADS_CLIENT_H
#define RM_XDS_ADS_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include "proxy/core/error.h"
#include "proxy/core/loop.h"
#include "proxy/upstream/cluster.h"
#include "proxy/upstream/dns_cluster.h"

struct rm_ads_client;

/** Start the client for the EDS clusters among <clusters>[0..n) (they and <ads_cluster> must
 *  outlive it) on <loop> (the main one).  <node_id>/<node_cluster> are copied.  The first
 *  connection starts from the loop, never inside this call.  With no EDS cluster nothing
 *  connects and rm_ads_client_initialized() is true at once.  NULL with <err> when out of
 *  memory or the ADS cluster has no host. */
struct rm_ads_client *rm_ads_client_new(struct rm_loop *loop, struct rm_cluster *ads_cluster,
                                        struct rm_cluster *const *clusters, size_t n,
                                        const char *node_id, const char *node_cluster,
                                        rm_dns_publish_fn publish, void (*on_init)(void *ctx),
                                        void *ctx, struct rm_error *err);
/** Close the stream and the channel, stop the timers.  NULL is a no-op.  Main thread, not
 *  from a callback; run the loop's pending tasks before freeing the loop. */
void rm_ads_client_free(struct rm_ads_client *a);
/** Whether every EDS cluster has had its first assignment (or the fetch timeout passed). */
bool rm_ads_client_initialized(const struct rm_ads_client *a);
/** The EDS clusters still waiting for their first assignment, ", "-separated, into <buf>. */
void rm_ads_client_waiting(const struct rm_ads_client *a, char *buf, size_t len);

#endif
