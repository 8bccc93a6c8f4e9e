/* The reference control plane's xDS server: Envoy's discovery services on a gRPC server
 * (xds/grpc_server.h), serving the resources of a store (xds/ads_store.h).
 *
 * Methods registered (the request/response messages of envoy.service.discovery.v3):
 *   /envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources  SotW, any
 * type /envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources   Delta, any
 * type /envoy.service.listener.v3.ListenerDiscoveryService/{StreamListeners,DeltaListeners}
 *   /envoy.service.route.v3.RouteDiscoveryService/{StreamRoutes,DeltaRoutes}
 *   /envoy.service.cluster.v3.ClusterDiscoveryService/{StreamClusters,DeltaClusters}
 *   /envoy.service.endpoint.v3.EndpointDiscoveryService/{StreamEndpoints,DeltaEndpoints}
 * The per-type services accept only their type (an empty type_url means it); the aggregated
 * ones need type_url on every request.
 *
 * Per stream: the node (id, cluster) is taken from the first request that carries one; each
 * type URL gets its own subscription (xds/ads_sub.h: what is due, ACK/NACK/stale nonces);
 * nonces count up per stream.  A response goes out when the subscription asks for it, after a
 * request or after rm_ads_server_notify() (the store changed); within one push the types go
 * in Envoy's make-before-break order: Cluster, ClusterLoadAssignment, Listener,
 * RouteConfiguration, then the others.  Every response names the control plane
 * (control_plane.identifier).  A stream whose gRPC call is write-blocked waits for it to drain.
 * When the client half-closes, the stream ends with OK; an undecodable request ends it with
 * INVALID_ARGUMENT.
 *
 * Logs (rm_log, info unless said): one line per stream opened and closed, per node, per push
 * (node, type, version, nonce, resource names; Delta: also removed names), per ACK (node,
 * type, version, nonce), per NACK (warning: node, type, version, nonce, error code and
 * message), per subscription change; stale requests at debug. */
#ifndef RM_XDS_ADS_SERVER_H
#define RM_XDS_ADS_SERVER_H

#include <stdint.h>

#include "proxy/core/error.h"
#include "xds/ads_store.h"
#include "xds/grpc_server.h"

struct rm_ads_server;

struct rm_ads_server_opts {
    const char *identifier; /* control_plane.identifier (copied); NULL: "remora-xds" */
};

struct rm_ads_server_stats {
    uint64_t streams, streams_open;
    uint64_t requests, acks, nacks, stale;
    uint64_t responses, resources_sent;
};

/** Register the discovery methods on <gs> (before it accepts calls) and serve <store> (kept by
 *  pointer: it must outlive the server; change it only through rm_ads_store_replace, then call
 *  rm_ads_server_notify).  <o> may be NULL.  Returns NULL with <err> filled on failure. */
struct rm_ads_server *rm_ads_server_new(struct rm_grpc_server *gs, struct rm_ads_store *store,
                                        const struct rm_ads_server_opts *o, struct rm_error *err);
/** The store changed: send every stream what it is due now. */
void rm_ads_server_notify(struct rm_ads_server *as);
/** End every open stream with <status> and <msg> (e.g. UNAVAILABLE at shutdown). */
void rm_ads_server_close_streams(struct rm_ads_server *as, int status, const char *msg);
/** Close the streams still open (UNAVAILABLE) and free.  NULL is a no-op.  Free the gRPC server
 *  first (its calls end here through on_cancel), or right after this without running the loop
 *  in between (its methods still point here). */
void rm_ads_server_free(struct rm_ads_server *as);
const struct rm_ads_server_stats *rm_ads_server_stats(const struct rm_ads_server *as);

#endif
