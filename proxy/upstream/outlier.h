/* Outlier detection: Envoy's Cluster.outlier_detection, passive health checking that ejects
 * misbehaving hosts from load balancing for a while.
 *
 * Threads and cost:
 *  - Workers report how each upstream attempt ended (rm_outlier_report_http/_local): a few
 *    relaxed atomic operations on the host, no lock, no allocation, and nothing at all when the
 *    cluster has no outlier_detection (the host's detector pointer is NULL).
 *  - A consecutive-error detector (consecutive_5xx, consecutive_gateway_failure,
 *    consecutive_local_origin_failure) that reaches its threshold ejects the host right away,
 *    on the reporting worker.  The decision is a CAS on the cluster's ejected-host count (so
 *    max_ejection_percent is never overshot) and a CAS on the host's state word (so a host is
 *    ejected once, whichever threads race).
 *  - The main thread runs rm_outlier_tick() every `interval` (rm_outlier_start): it un-ejects
 *    hosts whose ejection time is over, swaps each host's interval counters to zero and runs the
 *    success-rate and failure-percentage detectors on them, then lets the ejection-time
 *    multiplier of hosts that stayed healthy decay, as Envoy's DetectorImpl::onIntervalTimer.
 *
 * The core is pure over struct rm_outlier / struct rm_outlier_host, with an injectable clock
 * and random source: tests/unit/upstream/test_outlier.c drives it without sockets. */
#ifndef RM_UPSTREAM_OUTLIER_H
#define RM_UPSTREAM_OUTLIER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/admin/stats.h"
#include "proxy/core/error.h"
#include "proxy/core/loop.h"

struct Envoy__Config__Cluster__V3__OutlierDetection;
struct rm_outlier;

/** Ejection causes, in the order of envoy.data.cluster.v3.OutlierEjectionType. */
enum rm_outlier_type {
    RM_OUTLIER_CONSECUTIVE_5XX,
    RM_OUTLIER_CONSECUTIVE_GATEWAY_FAILURE,
    RM_OUTLIER_SUCCESS_RATE,
    RM_OUTLIER_CONSECUTIVE_LOCAL_ORIGIN_FAILURE,
    RM_OUTLIER_SUCCESS_RATE_LOCAL_ORIGIN,
    RM_OUTLIER_FAILURE_PERCENTAGE,
    RM_OUTLIER_FAILURE_PERCENTAGE_LOCAL_ORIGIN,
    RM_OUTLIER__TYPES
};

/** Locally originated results (Envoy's Outlier::Result for HTTP). */
enum rm_outlier_local {
    RM_OUTLIER_CONNECT_SUCCESS, /* a stream on a connected upstream: the request went out */
    RM_OUTLIER_CONNECT_FAILURE, /* connect failure, or the stream reset (not overflow) */
    RM_OUTLIER_TIMEOUT,         /* no response headers before the timeout */
};

/** Success-rate monitors: external origin (HTTP codes, and local failures when not split) and
 *  local origin (with split_external_local_origin_errors). */
enum rm_outlier_origin { RM_OUTLIER_EXTERNAL = 0, RM_OUTLIER_LOCAL = 1 };

/** OutlierDetection with Envoy's defaults applied (times in ms, percentages 0..100). */
struct rm_outlier_config {
    uint32_t consecutive_5xx;                            /* 5 */
    uint32_t consecutive_gateway_failure;                /* 5 */
    uint32_t consecutive_local_origin_failure;           /* 5 */
    uint32_t interval_ms;                                /* 10 s */
    uint32_t base_ejection_time_ms;                      /* 30 s */
    uint32_t max_ejection_time_ms;                       /* max(300 s, base) */
    uint32_t max_ejection_time_jitter_ms;                /* 0 */
    uint32_t max_ejection_percent;                       /* 10 */
    uint32_t enforcing_consecutive_5xx;                  /* 100 */
    uint32_t enforcing_consecutive_gateway_failure;      /* 0 */
    uint32_t enforcing_consecutive_local_origin_failure; /* 100 */
    uint32_t enforcing_success_rate;                     /* 100 */
    uint32_t enforcing_local_origin_success_rate;        /* 100 */
    uint32_t success_rate_minimum_hosts;                 /* 5 */
    uint32_t success_rate_request_volume;                /* 100 */
    uint32_t success_rate_stdev_factor;                  /* 1900 = 1.9 */
    uint32_t failure_percentage_threshold;               /* 85 */
    uint32_t enforcing_failure_percentage;               /* 0 */
    uint32_t enforcing_failure_percentage_local_origin;  /* 0 */
    uint32_t failure_percentage_minimum_hosts;           /* 5 */
    uint32_t failure_percentage_request_volume;          /* 50 */
    bool split_external_local_origin_errors;             /* false */
    bool always_eject_one_host;                          /* false */
};

/* Host state word: ejected bit, ejection-time multiplier ("backoff"), un-ejection deadline. */
#define RM_OUTLIER_EJECTED (UINT64_C(1) << 63)
#define RM_OUTLIER_REMOVED (UINT64_C(1) << 62) /* left the cluster: never ejected again */
#define RM_OUTLIER_BACKOFF_SHIFT 43
#define RM_OUTLIER_BACKOFF_MAX ((UINT64_C(1) << 19) - 1)
#define RM_OUTLIER_DEADLINE_MASK ((UINT64_C(1) << RM_OUTLIER_BACKOFF_SHIFT) - 1)
/* Interval counters: total requests in the high half, successes in the low half. */
#define RM_OUTLIER_TOTAL_ONE (UINT64_C(1) << 32)

/** What a detector keeps per host beyond the state word: allocated when a detector first
 *  adopts the host (hosts of clusters without outlier_detection never pay for it). */
struct rm_outlier_host_data {
    struct rm_outlier *det; /* the detector that adopted the host */
    _Atomic uint32_t consecutive_5xx, consecutive_gateway_failure, consecutive_local_failure;
    _Atomic uint64_t interval_counts[2]; /* [origin]: total << 32 | successes, this interval */
    /* main thread only */
    uint64_t last_uneject_ms;
    bool unejected_once;
    bool mark;              /* scratch of rm_outlier_set_hosts */
    double success_rate[2]; /* [origin]: last interval's, -1 when not enough requests */
};

/** Per-host outlier state, embedded in struct rm_host (zeroed = no detection): the state word
 *  the load balancers read, and the detector's data out of line.  Release with
 *  rm_outlier_host_dispose. */
struct rm_outlier_host {
    _Atomic uint64_t state; /* RM_OUTLIER_EJECTED | _REMOVED | backoff << SHIFT | deadline ms */
    struct rm_outlier_host_data *x; /* NULL: no detector ever adopted the host (no detection);
                                       kept after the host leaves its detector */
};

/** Free what a detector attached to <h> (with the host; NULL data is fine). */
void rm_outlier_host_dispose(struct rm_outlier_host *h);

/** The detector of <h>, or NULL when its cluster has no outlier_detection. */
static inline struct rm_outlier *rm_outlier_det(const struct rm_outlier_host *h)
{
    return h->x ? h->x->det : NULL;
}

/** One cluster's detector. */
struct rm_outlier {
    struct rm_outlier_config cfg;
    struct rm_outlier_host **hosts; /* owned array; the hosts are not */
    size_t n_hosts;                 /* main thread */
    _Atomic size_t n_hosts_live;    /* the same, for max_ejection_percent on any thread */
    _Atomic uint32_t n_ejected;
    struct rm_stats *stats;   /* cluster.<name>.outlier_detection. */
    uint64_t (*now_ms)(void); /* monotonic ms, for ejections on workers */
    uint64_t (*random)(void); /* thread-safe; enforcement rolls and jitter */
    /** Called after a host is ejected (any thread) or un-ejected (main thread). */
    void (*on_change)(void *ctx, struct rm_outlier_host *h, bool ejected);
    void *on_change_ctx;
    /** The host's name for logs ("ip:port"); NULL: "host". */
    const char *(*host_name)(const struct rm_outlier_host *h);
    /* main thread only */
    double sr_average[2], sr_threshold[2]; /* [origin]; -1 when not computed */
    uint64_t *counts;                      /* [2 * n_hosts]: the swapped interval counters */
    double *rates;                         /* [n_hosts] scratch: success rate by host */
    double *sr_rates;                      /* [n_hosts] scratch: rates of the valid hosts */
    size_t *valid_sr, *valid_fp;           /* [n_hosts] scratch */
    struct rm_loop *loop;
    struct rm_timer timer;
};

enum rm_outlier_stat {
    RM_OD_EJECTIONS_ACTIVE,
    RM_OD_EJECTIONS_CONSECUTIVE_5XX,
    RM_OD_EJECTIONS_DETECTED_CONSECUTIVE_5XX,
    RM_OD_EJECTIONS_DETECTED_CONSECUTIVE_GATEWAY_FAILURE,
    RM_OD_EJECTIONS_DETECTED_CONSECUTIVE_LOCAL_ORIGIN_FAILURE,
    RM_OD_EJECTIONS_DETECTED_FAILURE_PERCENTAGE,
    RM_OD_EJECTIONS_DETECTED_LOCAL_ORIGIN_FAILURE_PERCENTAGE,
    RM_OD_EJECTIONS_DETECTED_LOCAL_ORIGIN_SUCCESS_RATE,
    RM_OD_EJECTIONS_DETECTED_SUCCESS_RATE,
    RM_OD_EJECTIONS_ENFORCED_CONSECUTIVE_5XX,
    RM_OD_EJECTIONS_ENFORCED_CONSECUTIVE_GATEWAY_FAILURE,
    RM_OD_EJECTIONS_ENFORCED_CONSECUTIVE_LOCAL_ORIGIN_FAILURE,
    RM_OD_EJECTIONS_ENFORCED_FAILURE_PERCENTAGE,
    RM_OD_EJECTIONS_ENFORCED_LOCAL_ORIGIN_FAILURE_PERCENTAGE,
    RM_OD_EJECTIONS_ENFORCED_LOCAL_ORIGIN_SUCCESS_RATE,
    RM_OD_EJECTIONS_ENFORCED_SUCCESS_RATE,
    RM_OD_EJECTIONS_ENFORCED_TOTAL,
    RM_OD_EJECTIONS_OVERFLOW,
    RM_OD_EJECTIONS_SUCCESS_RATE,
    RM_OD_EJECTIONS_TOTAL,
    RM_OD__COUNT
};
extern const struct rm_stat_def rm_outlier_stat_defs[RM_OD__COUNT];

/* ---- configuration ------------------------------------------------------------------------ */

/** Envoy's defaults (an empty OutlierDetection message). */
void rm_outlier_config_defaults(struct rm_outlier_config *cfg);
/** Read <pb> into <cfg> with Envoy's defaults and validation; errors name the field under
 *  <path> (e.g. "static_resources.clusters[0].outlier_detection").  RM_OK or RM_ERR. */
int rm_outlier_config_parse(const struct Envoy__Config__Cluster__V3__OutlierDetection *pb,
                            const char *path, struct rm_outlier_config *cfg, struct rm_error *err);

/* ---- detector lifetime -------------------------------------------------------------------- */

/** A detector over the <n_hosts> hosts of <hosts> (the array is copied; the hosts must outlive
 *  the detector); sets each host's det and resets its state (allocating its data).  Stats go to the
 * block
 *  "<stat_prefix>outlier_detection." (stat_prefix is "cluster.<name>.").  Clock and random
 *  source are the real ones; tests may replace them.  NULL when out of memory. */
struct rm_outlier *rm_outlier_new(const struct rm_outlier_config *cfg, const char *stat_prefix,
                                  struct rm_outlier_host **hosts, size_t n_hosts);
/** Follow a membership change (main thread): <hosts> (copied array) become the hosts of <d>.
 *  Hosts new to <d> (det == NULL) get their state reset; hosts that stay keep theirs; hosts that
 *  left are marked (so a worker still using them can never eject
 *  them and take a slot no tick would give back: RM_OUTLIER_REMOVED) and, if they were
 *  ejected, give back their slot and leave ejections_active.  Aborts when out of memory. */
void rm_outlier_set_hosts(struct rm_outlier *d, struct rm_outlier_host **hosts, size_t n_hosts);
/** Free <d> (NULL is a no-op).  Its timer must be stopped (rm_outlier_stop).  Hosts still
 *  ejected are taken off the ejections_active gauge, as Envoy's detector destructor does. */
void rm_outlier_free(struct rm_outlier *d);
/** Run rm_outlier_tick every interval on <loop> (the main thread's). */
void rm_outlier_start(struct rm_outlier *d, struct rm_loop *loop);
/** Stop the interval timer (no-op if not started); on the thread that started it. */
void rm_outlier_stop(struct rm_outlier *d);

/* ---- reporting (workers, hot path) -------------------------------------------------------- */

void rm_outlier_put_http(struct rm_outlier_host *h, unsigned status);
void rm_outlier_put_local(struct rm_outlier_host *h, enum rm_outlier_local result);

/** An upstream attempt got response headers with <status> (Envoy: putHttpResponseCode).  Any
 *  thread; no-op without a detector. */
static inline void rm_outlier_report_http(struct rm_outlier_host *h, unsigned status)
{
    if (h->x) rm_outlier_put_http(h, status);
}

/** A locally originated result of an attempt (Envoy: putResult).  Any thread; no-op without a
 *  detector. */
static inline void rm_outlier_report_local(struct rm_outlier_host *h, enum rm_outlier_local r)
{
    if (h->x) rm_outlier_put_local(h, r);
}

/** Whether the host is ejected now (a relaxed load; load balancers skip ejected hosts). */
static inline bool rm_outlier_ejected(const struct rm_outlier_host *h)
{
    return (atomic_load_explicit(&h->state, memory_order_relaxed) & RM_OUTLIER_EJECTED) != 0;
}

/* ---- the core (pure or over explicit state; exposed for tests) ---------------------------- */

/** How long an ejection lasts with multiplier <backoff> and <jitter_ms>:
 *  min(base × backoff, max_ejection_time) + jitter. */
uint64_t rm_outlier_ejection_ms(const struct rm_outlier_config *cfg, uint64_t backoff,
                                uint64_t jitter_ms);
/** The multiplier after one more ejection: +1 while backoff × base < max + base (Envoy). */
uint64_t rm_outlier_backoff_next(const struct rm_outlier_config *cfg, uint64_t backoff);
/** Whether one more host may be ejected when <n_ejected> of <n_hosts> are:
 *  100 × (n_ejected + 1) / n_hosts ≤ max_ejection_percent, or always_eject_one_host and none
 *  is ejected. */
bool rm_outlier_may_eject(const struct rm_outlier_config *cfg, uint32_t n_ejected, size_t n_hosts);
/** Success-rate statistics over <n> ≥ 1 rates (percent): *mean and the ejection threshold
 *  mean − stdev_factor/1000 × stdev (population standard deviation). */
void rm_outlier_sr_threshold(const double *rates, size_t n, uint32_t stdev_factor, double *mean,
                             double *threshold);
/** A detector found <h> an outlier of <type> at <now> (ms): count it as detected, then eject
 *  it unless it is ejected already, max_ejection_percent is reached (ejections_overflow) or the
 *  enforcing roll says no.  Returns true when this call ejected the host.  Any thread. */
bool rm_outlier_detected(struct rm_outlier *d, struct rm_outlier_host *h, enum rm_outlier_type type,
                         uint64_t now);
/** The interval work at <now> (ms): un-eject, swap counters, success rate and failure
 *  percentage for both origins, multiplier decay.  Main thread. */
void rm_outlier_tick(struct rm_outlier *d, uint64_t now);

#endif
