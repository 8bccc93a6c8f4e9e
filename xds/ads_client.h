/* The xDS client: one StreamAggregatedResources (SotW) or DeltaAggregatedResources (Delta) call
 * to the bootstrap's ads_config cluster, carrying every subscribed resource type — or one
 * type's own discovery service (api_config_source) — on the main loop.  It speaks the protocol;
 * what a resource means is its type's business (struct rm_ads_type, implemented by
 * xds/xds_manager.c).
 *
 *  - Types are registered at creation, in the order their first requests go out (Envoy's: CDS,
 *    EDS, LDS, RDS).  Nothing is asked for a type until rm_ads_client_subscribe: a wildcard type
 *    (LDS, CDS) then subscribes to everything; a named type (EDS, RDS) to the names given, and
 *    not at all while that set is empty.
 *  - The first request of a stream carries the node (id, cluster, user_agent_name "remora",
 *    user_agent_version, client_features); a reconnect resubscribes every type with the last
 *    accepted version_info (SotW) or the versions of the resources held (Delta:
 *    initial_resource_versions).
 *  - A response is checked whole: its type_url must be a registered type, every resource must
 *    carry that type (SotW: the Any's type_url, or an envoy.service.discovery.v3.Resource
 *    wrapper around it), have a name, and appear once.  Resources whose bytes hash (64 bits) as
 *    the held copy's are dropped here (an unchanged resource costs a hash, not a rebuild); the
 * rest, with the names that disappeared (SotW wildcard types: absent from the response; Delta:
 *    removed_resources), go to the type's on_update as one batch.  RM_OK: the client now holds
 *    them and ACKs; RM_ERR: it holds what it held, NACKs with error_detail (code 13, the
 *    message: "<Type> <name>: <field path>: why") and, for SotW, the last accepted version.
 *  - A stream that ends (or never connects) is retried after a jittered exponential backoff,
 *    500 ms doubling to 30 s (uniform in [b/2, b]); a response resets it.
 *  - control_plane.connected_state: 1 while a stream has had a response, else 0.
 *  - Every accepted response is logged (info) with the time from its arrival (decoding,
 *    hashing, validation, applying, publishing) and how many resources changed.
 * Single-threaded (main loop). */
#ifndef RM_XDS_ADS_CLIENT_H
#define RM_XDS_ADS_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "google/protobuf/any.pb-c.h"
#include "proxy/core/error.h"
#include "proxy/core/loop.h"
#include "proxy/upstream/cluster.h"

#define RM_ADS_TYPE_PREFIX "type.googleapis.com/"
/* The largest response accepted by default (a 10,000-cluster mesh is a few MiB; envoy_grpc's
 * max_receive_message_length sets another); a larger one closes the stream with
 * RESOURCE_EXHAUSTED and the client reconnects (backoff), the data plane keeps serving. */
#define RM_ADS_MAX_MSG (64u << 20)
#define RM_ADS_CDS RM_ADS_TYPE_PREFIX "envoy.config.cluster.v3.Cluster"
#define RM_ADS_EDS RM_ADS_TYPE_PREFIX "envoy.config.endpoint.v3.ClusterLoadAssignment"
#define RM_ADS_LDS RM_ADS_TYPE_PREFIX "envoy.config.listener.v3.Listener"
#define RM_ADS_RDS RM_ADS_TYPE_PREFIX "envoy.config.route.v3.RouteConfiguration"
#define RM_ADS_SDS RM_ADS_TYPE_PREFIX "envoy.extensions.transport_sockets.tls.v3.Secret"

struct rm_ads_client;

/** A resource of an update: new, or changed since the client last accepted it. */
struct rm_ads_res {
    const char *name;
    const uint8_t *value; /* the serialized message (valid during on_update) */
    size_t len;
    const char *version; /* Delta: the resource's version; SotW: the response's version_info */
    uint64_t hash;       /* a 64-bit hash of value */
    size_t index;        /* its position in the response (for messages: "resources[i]") */
};

/** One response's changes for a type. */
struct rm_ads_update {
    const struct rm_ads_res *res; /* added or changed */
    size_t n;
    const char *const *removed; /* names the client held and the response removed */
    size_t n_removed;
    const char *version_info; /* SotW version_info / Delta system_version_info */
    size_t n_unchanged;       /* resources re-sent with the held bytes (skipped) */
};

/** A resource type's semantics. */
struct rm_ads_type {
    const char *type_url;
    bool wildcard;
    /** Validate and apply the whole batch.  RM_OK: accepted (ACK); RM_ERR with <err> naming
     *  the resource and the field: rejected (NACK), the type's config must be as before. */
    int (*on_update)(void *ctx, const struct rm_ads_update *u, struct rm_error *err);
    /** The client rejected a response of this type before on_update (undecodable, wrong type,
     *  duplicate names): for the type's update_rejected stats.  May be NULL. */
    void (*on_rejected)(void *ctx);
};

struct rm_ads_client_cfg {
    const struct rm_cluster *cluster; /* the ADS cluster (STATIC, HTTP/2, >= 1 host) */
    bool delta;                       /* DeltaAggregatedResources instead of SotW */
    /* A non-aggregated stream (api_config_source) for its one type: the method, e.g.
     * "/envoy.service.cluster.v3.ClusterDiscoveryService/StreamClusters"; NULL: ADS. */
    const char *path;
    uint32_t max_msg; /* the largest response accepted (0: RM_ADS_MAX_MSG) */
    const char *node_id, *node_cluster;
    const struct rm_ads_type *types; /* registered types, in subscription order */
    size_t n_types;
    void *ctx; /* for on_update */
};

/** Create the client (copies what <cfg> points to except types and the cluster, which must
 *  outlive it).  The first connection starts from the loop, never inside this call.  NULL with
 *  <err> when out of memory or the cluster has no host. */
struct rm_ads_client *rm_ads_client_new(struct rm_loop *loop, const struct rm_ads_client_cfg *cfg,
                                        struct rm_error *err);
/** Close the stream and the channel, stop the timers.  NULL is a no-op.  Main thread, not
 *  from a callback; run the loop's pending tasks before freeing the loop. */
void rm_ads_client_free(struct rm_ads_client *a);

/** Subscribe to wildcard type <type_idx> (names are ignored; once is enough) or set the
 *  resource names of named type <type_idx> (copied; duplicates ignored).  Sends the
 *  subscription change now if a stream is open (SotW: the whole list; Delta: what was added and
 *  removed), else with the next stream.  Names dropped are forgotten (their resources no
 *  longer count as held).  Not from inside on_update of the same type (the change is queued
 *  and sent after the ACK then, which is what the protocol wants anyway). */
void rm_ads_client_subscribe(struct rm_ads_client *a, size_t type_idx, const char *const *names,
                             size_t n);

#endif
