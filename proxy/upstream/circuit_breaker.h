/* Circuit breakers: Envoy's per-cluster, per-priority resource manager.
 *
 * A cluster has one struct rm_cb per routing priority (DEFAULT, HIGH) built from
 * Cluster.circuit_breakers.thresholds.  Each tracks five resources — connections, pending
 * requests, requests, retries and connection pools — with counters shared by every worker
 * (atomics; the only cross-worker writes on the request path).  rm_cb_try_acquire() is exact:
 * a compare-and-swap never lets a count pass its limit, whatever the number of workers.
 *
 * Gauges, named as Envoy names them, under "cluster.<name>.circuit_breakers.<default|high>.":
 * cx_open, cx_pool_open, rq_pending_open, rq_open, rq_retry_open (1 while the resource is at
 * its limit) and, with track_remaining, remaining_cx, remaining_pending, remaining_rq,
 * remaining_retries, remaining_cx_pools.  Like Envoy's, they are set from the counts after each
 * change (last writer wins; exact once traffic stops). */
#ifndef RM_UPSTREAM_CIRCUIT_BREAKER_H
#define RM_UPSTREAM_CIRCUIT_BREAKER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "proxy/core/error.h"

struct Envoy__Config__Cluster__V3__CircuitBreakers;
struct rm_stats;

enum rm_cb_resource {
    RM_CB_CX,      /* max_connections */
    RM_CB_PENDING, /* max_pending_requests */
    RM_CB_RQ,      /* max_requests */
    RM_CB_RETRY,   /* max_retries, or the retry budget */
    RM_CB_CX_POOL, /* max_connection_pools */
    RM_CB__COUNT
};

#define RM_CB_PRIORITIES 2 /* core.v3.RoutingPriority: DEFAULT = 0, HIGH = 1 */
#define RM_CB_UNLIMITED UINT32_MAX

/** The limits of one priority, Envoy's defaults filled in. */
struct rm_cb_thresholds {
    uint32_t max[RM_CB__COUNT]; /* 1024, 1024, 1024, 3, unlimited */
    bool track_remaining;
    bool has_budget;                /* retry_budget set: it replaces max[RM_CB_RETRY] */
    double budget_percent;          /* default 20 */
    uint32_t min_retry_concurrency; /* default 3 */
    uint32_t per_host_max_cx;       /* per_host_thresholds max_connections; unlimited if unset */
};

/** One priority's resource manager.  Counters first, on their own cache line. */
struct rm_cb {
    _Alignas(64) _Atomic int64_t count[RM_CB__COUNT];
    _Alignas(64) struct rm_cb_thresholds lim;
    struct rm_stats *gauges;    /* circuit_breakers.<priority>. */
    struct rm_stats *remaining; /* circuit_breakers.<priority>.remaining_ (track_remaining) */
};

/** Check and read Cluster.circuit_breakers (<pb> may be NULL: defaults) into <out>[priority].
 *  Errors name the field under <path> (e.g. "static_resources.clusters[0].circuit_breakers"):
 *  a priority given twice, per-host fields other than max_connections, bad percentages. */
int rm_cb_parse(const struct Envoy__Config__Cluster__V3__CircuitBreakers *pb, const char *path,
                struct rm_cb_thresholds out[RM_CB_PRIORITIES], struct rm_error *err);

/** A resource manager with limits <lim>, its gauges registered under <stat_prefix>
 *  ("cluster.<name>.") for <priority>.  Main thread.  Aborts on out-of-memory. */
struct rm_cb *rm_cb_new(const struct rm_cb_thresholds *lim, const char *stat_prefix, int priority);
void rm_cb_free(struct rm_cb *cb);

/** The current limit of <r> (the retry budget depends on the requests in flight). */
uint64_t rm_cb_max(const struct rm_cb *cb, enum rm_cb_resource r);
static inline int64_t rm_cb_count(const struct rm_cb *cb, enum rm_cb_resource r)
{
    return atomic_load_explicit(&cb->count[r], memory_order_relaxed);
}

/** Take one unit of <r> if that keeps it within its limit.  Any thread.  <cb> NULL: always
 *  true (no circuit breaking).  Pair every success with rm_cb_release(). */
bool rm_cb_try_acquire(struct rm_cb *cb, enum rm_cb_resource r);
/** Take one unit even over the limit (Envoy's "each host gets one connection"). */
void rm_cb_acquire_force(struct rm_cb *cb, enum rm_cb_resource r);
/** Give back one unit of <r> (taken by rm_cb_try_acquire or rm_cb_acquire_force). */
void rm_cb_release(struct rm_cb *cb, enum rm_cb_resource r);

#endif
