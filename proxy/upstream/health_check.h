/* Active health checking: Envoy's Cluster.health_checks (one HealthCheck per cluster, as Envoy).
 *
 * One struct rm_health_checker per cluster that has health_checks, owned by the cluster and run
 * on the main thread's loop (rm_health_checker_start / _stop, as the outlier detector's timer).
 * Per host of the cluster's membership it keeps a session: a timer for the next check, a timeout
 * and at most one connection (kept between checks with reuse_connection, Envoy's default).
 *
 *  - Checkers: HTTP (GET <path> over HTTP/1.1, or HTTP/2 with codec_client_type HTTP2; Host
 *    / :authority <host> or the cluster name, user-agent Envoy/HC, request_headers_to_add /
 *    _remove; the status must fall in expected_statuses, default [200, 201); a status in
 *    retriable_statuses counts towards unhealthy_threshold, any other marks the host unhealthy
 *    at once), TCP (connect, write <send>, find each <receive> block in order; connect-only
 *    without send), gRPC (grpc.health.v1.Health/Check over HTTP/2 with service_name: healthy
 *    when the answer is grpc-status 0 and SERVING, else unhealthy at once), over the cluster's
 *    transport_socket (TLS, ALPN h2 or http/1.1) when it has one.
 *  - Results (Envoy's HealthCheckerImplBase): consecutive successes and failures against the
 *    thresholds; the first result of a host decides alone (one success makes it healthy); a
 *    connect failure, a reset or a timeout is a network failure (counted against the threshold).
 *  - Host state: RM_HOST_FAILED_ACTIVE_HC in the host's hc byte (host.h) takes it out of load
 *    balancing (panic mode still uses it); hosts start with it (Envoy: a cluster with a health
 *    checker marks its hosts FAILED_ACTIVE_HC until their first successful check), with
 *    RM_HOST_PENDING_ACTIVE_HC too under common_lb_config.ignore_new_hosts_until_first_hc
 *    (excluded from load balancing and from the panic computation until the first result).
 *  - Intervals (Envoy's HealthCheckerImplBase::interval): no_traffic_interval (60 s) while no
 *    connection of the cluster was ever made (no_traffic_healthy_interval for healthy hosts
 *    when set); else interval, unhealthy_interval for unhealthy results, and the edge intervals
 *    while a transition is pending; plus interval_jitter_percent and interval_jitter.  The
 *    first check of a host runs after a random part of initial_jitter (at once without).
 *  - Stats, cluster.<name>.health_check.: attempt, success, failure, network_failure,
 *    passive_failure (0), verify_cluster (0), healthy (gauge: hosts passing), degraded (0).
 *
 * The state machine (rm_hc_apply, rm_hc_interval) is pure: tests/unit/upstream/
 * test_health_check.c drives it without sockets. */
#ifndef RM_UPSTREAM_HEALTH_CHECK_H
#define RM_UPSTREAM_HEALTH_CHECK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/admin/stats.h"
#include "proxy/core/error.h"
#include "proxy/core/loop.h"

struct Envoy__Config__Core__V3__HealthCheck;
struct rm_health_checker;
struct rm_host;
struct rm_tls_ctx;

enum rm_hc_stat {
    RM_HC_ATTEMPT,
    RM_HC_DEGRADED,
    RM_HC_FAILURE,
    RM_HC_HEALTHY,
    RM_HC_NETWORK_FAILURE,
    RM_HC_PASSIVE_FAILURE,
    RM_HC_SUCCESS,
    RM_HC_VERIFY_CLUSTER,
    RM_HC__COUNT
};
extern const struct rm_stat_def rm_hc_stat_defs[RM_HC__COUNT];

enum rm_hc_kind { RM_HC_HTTP, RM_HC_TCP, RM_HC_GRPC };

struct rm_hc_range {
    int64_t start, end; /* [start, end) */
};

struct rm_hc_header {
    char *name, *value;
    bool append; /* false: replaces a header of that name */
};

struct rm_hc_bytes {
    uint8_t *p;
    size_t n;
};

/** A HealthCheck with Envoy's defaults applied (times in ms).  Owns its strings and arrays
 *  (rm_hc_config_dispose). */
struct rm_hc_config {
    enum rm_hc_kind kind;
    uint32_t timeout_ms, interval_ms;
    uint32_t initial_jitter_ms, interval_jitter_ms, interval_jitter_percent;
    uint32_t unhealthy_threshold, healthy_threshold;
    uint32_t no_traffic_interval_ms;         /* 60 s */
    uint32_t no_traffic_healthy_interval_ms; /* 0: no_traffic_interval */
    uint32_t unhealthy_interval_ms;          /* interval */
    uint32_t unhealthy_edge_interval_ms;     /* unhealthy_interval */
    uint32_t healthy_edge_interval_ms;       /* interval */
    uint32_t connect_timeout_ms;             /* the cluster's */
    bool reuse_connection;                   /* true */
    bool always_log_failures;
    bool warm_hosts; /* common_lb_config.ignore_new_hosts_until_first_hc */
    bool tls;        /* the cluster has a transport_socket: :scheme https */
    /* HTTP and gRPC */
    bool http2;         /* codec_client_type HTTP2; gRPC always */
    char *host;         /* Host / :authority: http_health_check.host or grpc_health_check.authority,
                           else the cluster name */
    char *path;         /* gRPC: /grpc.health.v1.Health/Check */
    char *service_name; /* gRPC: HealthCheckRequest.service */
    struct rm_hc_header *add;
    size_t n_add;
    char **remove;
    size_t n_remove;
    struct rm_hc_range *expected; /* default [200, 201) */
    size_t n_expected;
    struct rm_hc_range *retriable;
    size_t n_retriable;
    /* TCP */
    struct rm_hc_bytes send; /* n 0: connect only */
    struct rm_hc_bytes *receive;
    size_t n_receive;
};

/** Parse <pb> (a cluster's health_checks[0], named <path>) for the cluster <cluster_name>.
 *  Unsupported or invalid settings are errors naming the field.  RM_OK with *cfg filled (the
 *  caller disposes it), or RM_ERR with <err> (nothing to dispose). */
int rm_hc_config_parse(const struct Envoy__Config__Core__V3__HealthCheck *pb,
                       const char *cluster_name, const char *path, struct rm_hc_config *cfg,
                       struct rm_error *err);
void rm_hc_config_dispose(struct rm_hc_config *cfg);

/* ---- the state machine (pure) ------------------------------------------------------------- */

/** How a check ended. */
enum rm_hc_result {
    RM_HC_RESULT_SUCCESS,
    RM_HC_RESULT_FAILED,    /* an active failure: unhealthy at once (HTTP: unexpected status) */
    RM_HC_RESULT_RETRIABLE, /* an active failure that counts towards unhealthy_threshold */
    RM_HC_RESULT_NETWORK,   /* connect failure, reset: counts towards the threshold */
    RM_HC_RESULT_TIMEOUT,   /* no answer within the timeout: a network failure too */
};

/** What a result did to the host (Envoy's HealthTransition). */
enum rm_hc_transition {
    RM_HC_UNCHANGED,
    RM_HC_CHANGED,        /* the host became healthy or unhealthy */
    RM_HC_CHANGE_PENDING, /* a threshold is being counted towards */
};

/** A host's counters. */
struct rm_hc_state {
    uint32_t n_healthy, n_unhealthy;
    bool first_check; /* no result yet */
};

/** Apply <r> to a host: its counters <st> and its flags <*hc> (RM_HOST_*_ACTIVE_HC; a timeout
 *  sets ACTIVE_HC_TIMEOUT on a failed host, any other result clears it).  Counts success /
 *  failure / network_failure in <stats> (NULL: none).  Returns the transition (CHANGED when the
 *  result cleared RM_HOST_PENDING_ACTIVE_HC, as Envoy); *<pending_cleared> (may be NULL) says
 *  whether it did. */
enum rm_hc_transition rm_hc_apply(const struct rm_hc_config *cfg, struct rm_hc_state *st,
                                  _Atomic uint8_t *hc, enum rm_hc_result r, struct rm_stats *stats,
                                  bool *pending_cleared);

/** The wait before the next check of a host whose last result was <success> (with transition
 *  <t>; <healthy> the host's state after it), <traffic> whether the cluster ever made a
 *  connection; <rnd> a random number for the jitter. */
uint64_t rm_hc_interval(const struct rm_hc_config *cfg, bool traffic, bool success,
                        enum rm_hc_transition t, bool healthy, uint64_t rnd);

/** Whether <status> is in one of <r>[0..n). */
bool rm_hc_in_ranges(const struct rm_hc_range *r, size_t n, int64_t status);

/** TCP: whether each block of <blocks>[0..n) is found in <p>[0..len), in order (Envoy's fuzzy
 *  matching: not necessarily contiguous). */
bool rm_hc_tcp_match(const struct rm_hc_bytes *blocks, size_t n, const uint8_t *p, size_t len);

/* ---- the checker -------------------------------------------------------------------------- */

/** Called (main thread) after a host's health changed. */
typedef void (*rm_hc_change_fn)(void *ctx);

/** A checker for <hosts>[0..n) (its own references), taking over <cfg>; the hosts are marked
 *  RM_HOST_FAILED_ACTIVE_HC (and PENDING with cfg->warm_hosts).  <tls>: the cluster's transport
 *  (a reference is taken; NULL: plain TCP).  <cluster_stats> (borrowed, outlives the checker):
 *  its upstream_cx_total says whether the cluster has carried traffic.  Stats under
 *  "<stat_prefix>health_check.".  No check runs before rm_health_checker_start.  NULL when out
 *  of memory (<cfg> is disposed). */
struct rm_health_checker *rm_health_checker_new(struct rm_hc_config *cfg, const char *stat_prefix,
                                                struct rm_tls_ctx *tls,
                                                struct rm_stats *cluster_stats,
                                                struct rm_host *const *hosts, size_t n,
                                                rm_hc_change_fn on_change, void *ctx);
/** Follow a membership change (main thread, not from a checker callback): hosts new to the
 *  checker start failed (a host with the address of a host that leaves takes over its state,
 *  as Envoy keeps a host object whose address stays), hosts that left are no longer checked
 *  (their connections close).  Returns RM_OK or RM_ERR when out of memory (nothing changed). */
int rm_health_checker_set_hosts(struct rm_health_checker *hc, struct rm_host *const *hosts,
                                size_t n);
/** Start checking on <loop> (the main thread's). */
void rm_health_checker_start(struct rm_health_checker *hc, struct rm_loop *loop);
/** Stop: timers stopped, connections closed (no-op if not started); on the thread that started
 *  it. */
void rm_health_checker_stop(struct rm_health_checker *hc);
/** Whether every host has had its first result (main thread). */
bool rm_health_checker_initialized(const struct rm_health_checker *hc);
/** Free <hc> (NULL is a no-op; any thread once stopped). */
void rm_health_checker_free(struct rm_health_checker *hc);

#endif
