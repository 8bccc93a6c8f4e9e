/* Config snapshots: everything a worker needs to serve, immutable and shared by reference.
 *
 * The main thread builds a snapshot from a Bootstrap message (and, later, xDS resources),
 * then publishes it; workers take a reference per connection and per stream, so an update never
 * changes a request in flight.  The last rm_snapshot_unref() frees it, on whichever thread. */
#ifndef RM_CONFIG_SNAPSHOT_H
#define RM_CONFIG_SNAPSHOT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "filters/filter.h"
#include "proxy/admin/stats.h"
#include "proxy/config/config_source.h"
#include "proxy/config/pbutil.h"
#include "proxy/core/error.h"
#include "proxy/http/route.h"
#include "proxy/upstream/cluster.h"

struct Envoy__Config__Bootstrap__V3__Bootstrap;
struct Envoy__Config__Listener__V3__Listener;
struct Envoy__Config__Route__V3__RouteConfiguration;
struct rm_fcm;
struct rm_netfilter_ops;
struct rm_secrets;
struct rm_tcp_proxy_cfg;
struct rm_sds_refs;
struct rm_tls_ctx;

enum rm_codec_type {
    RM_CODEC_AUTO = 0,
    RM_CODEC_HTTP1 = 1,
    RM_CODEC_HTTP2 = 2,
};

struct rm_filter_cfg {
    const struct rm_filter_ops *ops;
    void *config;
    char *name;
    bool
        disabled; /* HttpFilter.disabled: off unless a route's typed_per_filter_config enables it */
};

/** An HttpConnectionManager, compiled. */
struct rm_hcm_cfg {
    char *stat_prefix;
    enum rm_codec_type codec_type;
    struct rm_route_table *routes;
    struct rm_filter_cfg *filters; /* router last */
    size_t n_filters;
    bool filter_toggles; /* some filter is disabled by default or per route: check per request */
    struct rm_codec_settings codec; /* downstream codec limits */
    bool use_remote_address;
    uint32_t xff_num_trusted_hops;
    bool skip_xff_append;
    char *via;
    bool generate_request_id;
    bool preserve_external_request_id;
    bool always_set_request_id_in_response;
    char *server_name;                   /* "server" response header */
    int server_header_transformation;    /* 0 OVERWRITE, 1 APPEND_IF_ABSENT, 2 PASS_THROUGH */
    uint32_t drain_timeout_ms;           /* default 5000 */
    uint32_t stream_idle_timeout_ms;     /* default 300000; 0 = disabled */
    uint32_t request_timeout_ms;         /* 0 = disabled */
    uint32_t idle_timeout_ms;            /* connection idle timeout (common options), default 1 h */
    uint32_t max_connection_duration_ms; /* common options; 0 = none */
    uint32_t max_stream_duration_ms;     /* common options; 0 = none */
    uint32_t max_requests_per_connection; /* common options; 0 = unlimited */
    enum rm_underscores {                 /* common options' headers_with_underscores_action */
                          RM_UNDERSCORES_ALLOW = 0,
                          RM_UNDERSCORES_REJECT_REQUEST = 1,
                          RM_UNDERSCORES_DROP_HEADER = 2,
    } headers_with_underscores;
    struct rm_stats *stats;             /* http.<stat_prefix>.: a reference (listener_free) */
    struct rm_access_log **access_logs; /* access_log, in order (proxy/http/access_log.h) */
    size_t n_access_logs;
};

struct rm_listener_cfg {
    char *name;
    char *rds_name; /* the HCM's rds.route_config_name, or NULL (inline route_config) */
    struct rm_config_source rds_src; /* rds.config_source */
    /* LDS listeners: their message (in pb_box), version_info and when it was accepted (ms since
     * the epoch), for /config_dump; static listeners: dynamic false, the rest NULL / 0 */
    bool dynamic;
    const struct Envoy__Config__Listener__V3__Listener *pb;
    struct rm_pb_box *pb_box;
    char *version_info;
    uint64_t last_updated_ms;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    char addr_str[RM_SOCKADDR_STRLEN];
    uint32_t pipe_mode;    /* address.pipe.mode: the socket file's mode (0: as bind made it) */
    uint32_t buffer_limit; /* per_connection_buffer_limit_bytes, default 1 MiB */
    bool reuse_port;       /* enable_reuse_port (default true) */
    uint32_t backlog;
    /* filter_chains[0].filters[0], the network filter (proxy/server/netfilter.h): the HTTP
     * connection manager (config in <hcm>) or the TCP proxy (config in <tcp>, else NULL) */
    const struct rm_netfilter_ops *netfilter;
    struct rm_hcm_cfg hcm; /* the single HTTP filter chain (zeroed for a TCP proxy) */
    struct rm_tcp_proxy_cfg *tcp;
    /* filter_chains[0].transport_socket: TLS termination (a reference), or NULL (plaintext) */
    struct rm_tls_ctx *tls;
    /* the handshake's bound: transport_socket_connect_timeout, else the HCM's
     * request_headers_timeout, else 0 (the HCM's idle_timeout still closes the connection) */
    uint32_t handshake_timeout_ms;
    /* Stats blocks, each a reference of this config, released when the snapshot's last
     * reference frees it: listener.<addr>.; with rds, http.<stat_prefix>.rds.<rds_name>.
     * (xds/xds_manager.c counts updates there).  Who writes them after that must hold its own
     * (rm_stats_ref: an HCM connection's listener_stats / cx_stats). */
    struct rm_stats *stats;
    struct rm_stats *rds_stats; /* NULL without rds */
    /* Sidecar mode (transparent interception).  original_dst: listener_filters has
     * envoy.filters.listener.original_dst (the original destination of a redirected connection
     * becomes its local address at accept: rm_conn_restore_original_dst); use_original_dst:
     * such connections are handed to the listener of that address (worker.c); bind_to_port
     * false: no socket, the listener only receives hand-offs. */
    bool original_dst, use_original_dst, bind_to_port;
    /* The filter chains (filter_chains, then default_filter_chain): n_chains >= 1.  A listener
     * with one chain, no filter_chain_match and no default_filter_chain is its own chain
     * (chains[0] == this config, fcm NULL: nothing to choose).  Otherwise each chain is an
     * rm_listener_cfg of its own (the listener-level fields above copied, its own network
     * filter, TLS, handshake timeout; chains NULL), owned by this one, and <fcm> chooses among
     * chains[0..n_chains - has_default) at accept (worker.c); none matches: the default chain,
     * else the connection is closed (listener.<addr>.no_filter_chain_match).  Such a listener
     * has no netfilter / tls / hcm of its own; rds_name and rds_src are those of its chains
     * (one RDS route configuration per listener). */
    struct rm_listener_cfg **chains;
    size_t n_chains;
    struct rm_fcm *fcm;
    bool has_default;
    bool peek; /* the chain needs the first bytes (SNI, ALPN, transport / HTTP protocol) */
    uint32_t peek_timeout_ms;   /* listener_filters_timeout (default 15 s; 0: none) */
    bool peek_timeout_continue; /* continue_on_listener_filters_timeout */
    /* a chain: its FilterChain.name ("" when unnamed) and index in its listener's chains */
    char *chain_name;
    size_t chain_idx;
};

/** Merge the SDS references of every filter chain of <lc> into <into>. */
void rm_listener_cfg_sds_refs(const struct rm_listener_cfg *lc, struct rm_sds_refs *into);

/** The chain of listener <lc> (a new config) that a connection accepted on chain <old> of an
 *  earlier config of the same listener follows: the chain of the same name, else (unnamed) of
 *  the same index; NULL when there is none. */
const struct rm_listener_cfg *rm_listener_cfg_follow(const struct rm_listener_cfg *lc,
                                                     const struct rm_listener_cfg *old);

/** A resource received over xDS as the snapshot shows it in /config_dump (an RDS route
 *  configuration; a cluster or listener still warming). */
struct rm_dyn_res {
    char *name;
    struct rm_pb_box *pb; /* RouteConfiguration */
    char *version_info;
    uint64_t last_updated_ms;
};

/** An LDS listener handed to rm_snapshot_next. */
struct rm_dyn_listener {
    const char *name;
    struct rm_pb_box *pb; /* Listener (the snapshot takes a reference) */
    const char *version_info;
    uint64_t last_updated_ms;
};

/** The dynamic part of a snapshot: what xDS has made active.  Borrowed by rm_snapshot_next,
 *  which takes its own references. */
struct rm_snapshot_dyn {
    struct rm_cluster *const *clusters; /* CDS clusters (names distinct from the static ones) */
    size_t n_clusters;
    const struct rm_dyn_listener *listeners; /* LDS listeners */
    size_t n_listeners;
    const struct rm_dyn_res *routes; /* RDS route configurations, sorted by name */
    size_t n_routes;
    const struct rm_dyn_res *warming_clusters, *warming_listeners; /* for /config_dump */
    size_t n_warming_clusters, n_warming_listeners;
    struct rm_secrets *sds;           /* the Secrets received over SDS (NULL: none) */
    const struct rm_dyn_res *secrets; /* the same, for /config_dump, sorted by name */
    size_t n_secrets;
};

struct rm_snapshot {
    _Atomic unsigned refs;
    uint64_t version;
    struct rm_listener_cfg **listeners; /* static ones first, in bootstrap order */
    size_t n_listeners;
    struct rm_cluster **clusters; /* references, sorted by name */
    size_t n_clusters;
    struct rm_dyn_res *routes; /* RDS route configurations in use, sorted by name */
    size_t n_routes;
    struct rm_dyn_res *warming_clusters, *warming_listeners; /* CDS / LDS versions warming */
    size_t n_warming_clusters, n_warming_listeners;
    struct rm_pb_box *bootstrap_box; /* a reference */
    /* static_resources.secrets by name (a reference, shared by every snapshot of the same
     * bootstrap; NULL: none): what TLS contexts of static and xDS listeners and clusters
     * resolve their SDS references in */
    struct rm_secrets *secrets;
    /* the Secrets received over SDS when the snapshot was built (a reference; NULL: none, as in
     * the bootstrap snapshot): what listeners' references with an sds_config resolve in (a
     * listener whose secret is missing has a TLS context that is not ready) */
    struct rm_secrets *sds;
    struct rm_dyn_res *dyn_secrets; /* the same with their versions, for /config_dump */
    size_t n_dyn_secrets;
    struct Envoy__Config__Bootstrap__V3__Bootstrap *bootstrap; /* in bootstrap_box */
    char *admin_addr_str;
    struct sockaddr_storage admin_addr;
    socklen_t admin_addr_len; /* 0 = no admin */
    uint32_t admin_pipe_mode; /* admin.address.pipe.mode */
    char *node_id, *node_cluster;
    struct rm_cluster *ads_cluster; /* dynamic_resources.ads_config's cluster, or NULL */
    bool ads_delta;                 /* ads_config.api_type DELTA_GRPC (else SotW) */
    uint32_t ads_max_msg;           /* its envoy_grpc.max_receive_message_length, or 0 */
    bool lds, cds;                  /* lds_config / cds_config are set: */
    struct rm_config_source lds_src, cds_src;
    struct ProtobufCMessage **owned; /* unpacked typed_configs the compiled config points into */
    size_t n_owned;
};

/** Build a snapshot from a bootstrap (takes ownership of <bs>, also on failure).  Every
 *  unsupported feature is an error naming its field path.  Returns NULL with <err>. */
struct rm_snapshot *rm_snapshot_from_bootstrap(struct Envoy__Config__Bootstrap__V3__Bootstrap *bs,
                                               struct rm_error *err);
/** The next snapshot: <base>'s static part (the bootstrap snapshot: its clusters are shared,
 *  its listeners rebuilt) plus <dyn>.  A listener whose RDS route configuration <dyn> lacks gets
 *  an empty one (404 NR); a route to a cluster that is not there resolves to none (503 NC).
 *  Main thread.  NULL with <err> (naming the resource and field) on failure. */
struct rm_snapshot *rm_snapshot_next(const struct rm_snapshot *base,
                                     const struct rm_snapshot_dyn *dyn, struct rm_error *err);

/** Check a Listener arriving over LDS (errors under <path>, e.g. "Listener l1:"): everything
 *  rm_snapshot_next would build (TLS secrets resolved in <secrets>, the bootstrap's, and <sds>,
 *  those received over SDS), with clusters resolved by <resolve> (unknown ones in an inline
 *  route_config are errors unless validate_clusters is false).  *rds_name (may be NULL) gets the
 *  RDS route_config_name it needs (malloc'd) or NULL, *rds_src (may be NULL; dispose it) where
 *  it comes from, *sds_refs (may be NULL; dispose it) the secrets it takes over SDS. */
int rm_snapshot_check_listener(const struct Envoy__Config__Listener__V3__Listener *pb,
                               const char *path, const struct rm_secrets *secrets,
                               const struct rm_secrets *sds, rm_route_resolve_fn resolve,
                               void *resolve_ctx, char **rds_name, struct rm_config_source *rds_src,
                               struct rm_sds_refs *sds_refs, struct rm_error *err);
/** Check a RouteConfiguration arriving over RDS: a route to a cluster <resolve> does not know is
 *  an error unless validate_clusters is false. */
int rm_snapshot_check_route(const struct Envoy__Config__Route__V3__RouteConfiguration *pb,
                            const char *path, rm_route_resolve_fn resolve, void *resolve_ctx,
                            struct rm_error *err);
/** Whether <s> gets anything over xDS (an ADS stream, LDS, CDS, EDS clusters, RDS listeners,
 *  TLS secrets over SDS). */
bool rm_snapshot_uses_xds(const struct rm_snapshot *s);
/** Whether two listener configs are the same socket: same name, same address and the same
 *  bind_to_port (then an update keeps the bound socket, or the unbound worker listener). */
bool rm_listener_cfg_same_socket(const struct rm_listener_cfg *a, const struct rm_listener_cfg *b);

struct rm_snapshot *rm_snapshot_ref(struct rm_snapshot *s);
void rm_snapshot_unref(struct rm_snapshot *s);
/** Cluster by name (binary search); NULL if none. */
struct rm_cluster *rm_snapshot_cluster(const struct rm_snapshot *s, const char *name);

#endif
