/* Outlier detection, as Envoy's source/common/upstream/outlier_detection_impl.cc behaves; see
 * outlier.h for the threading design. */
#include "proxy/upstream/outlier.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "envoy/config/cluster/v3/outlier_detection.pb-c.h"
#include "proxy/config/pbutil.h"
#include "proxy/core/log.h"

typedef Envoy__Config__Cluster__V3__OutlierDetection OutlierDetection;

/* clang-format off */
#define C(n) {n, RM_COUNTER}
#define G(n) {n, RM_GAUGE}
/* clang-format on */

/* Envoy's ALL_OUTLIER_DETECTION_STATS, sorted by name as /stats prints them. */
const struct rm_stat_def rm_outlier_stat_defs[RM_OD__COUNT] = {
    [RM_OD_EJECTIONS_ACTIVE] = G("ejections_active"),
    [RM_OD_EJECTIONS_CONSECUTIVE_5XX] = C("ejections_consecutive_5xx"),
    [RM_OD_EJECTIONS_DETECTED_CONSECUTIVE_5XX] = C("ejections_detected_consecutive_5xx"),
    [RM_OD_EJECTIONS_DETECTED_CONSECUTIVE_GATEWAY_FAILURE] =
        C("ejections_detected_consecutive_gateway_failure"),
    [RM_OD_EJECTIONS_DETECTED_CONSECUTIVE_LOCAL_ORIGIN_FAILURE] =
        C("ejections_detected_consecutive_local_origin_failure"),
    [RM_OD_EJECTIONS_DETECTED_FAILURE_PERCENTAGE] = C("ejections_detected_failure_percentage"),
    [RM_OD_EJECTIONS_DETECTED_LOCAL_ORIGIN_FAILURE_PERCENTAGE] =
        C("ejections_detected_local_origin_failure_percentage"),
    [RM_OD_EJECTIONS_DETECTED_LOCAL_ORIGIN_SUCCESS_RATE] =
        C("ejections_detected_local_origin_success_rate"),
    [RM_OD_EJECTIONS_DETECTED_SUCCESS_RATE] = C("ejections_detected_success_rate"),
    [RM_OD_EJECTIONS_ENFORCED_CONSECUTIVE_5XX] = C("ejections_enforced_consecutive_5xx"),
    [RM_OD_EJECTIONS_ENFORCED_CONSECUTIVE_GATEWAY_FAILURE] =
        C("ejections_enforced_consecutive_gateway_failure"),
    [RM_OD_EJECTIONS_ENFORCED_CONSECUTIVE_LOCAL_ORIGIN_FAILURE] =
        C("ejections_enforced_consecutive_local_origin_failure"),
    [RM_OD_EJECTIONS_ENFORCED_FAILURE_PERCENTAGE] = C("ejections_enforced_failure_percentage"),
    [RM_OD_EJECTIONS_ENFORCED_LOCAL_ORIGIN_FAILURE_PERCENTAGE] =
        C("ejections_enforced_local_origin_failure_percentage"),
    [RM_OD_EJECTIONS_ENFORCED_LOCAL_ORIGIN_SUCCESS_RATE] =
        C("ejections_enforced_local_origin_success_rate"),
    [RM_OD_EJECTIONS_ENFORCED_SUCCESS_RATE] = C("ejections_enforced_success_rate"),
    [RM_OD_EJECTIONS_ENFORCED_TOTAL] = C("ejections_enforced_total"),
    [RM_OD_EJECTIONS_OVERFLOW] = C("ejections_overflow"),
    [RM_OD_EJECTIONS_SUCCESS_RATE] = C("ejections_success_rate"),
    [RM_OD_EJECTIONS_TOTAL] = C("ejections_total"),
};

/* Per ejection type: detected counter, enforced counter, name for logs. */
static const struct {
    unsigned detected, enforced;
    const char *name;
} type_info[RM_OUTLIER__TYPES] = {
    [RM_OUTLIER_CONSECUTIVE_5XX] = {RM_OD_EJECTIONS_DETECTED_CONSECUTIVE_5XX,
                                    RM_OD_EJECTIONS_ENFORCED_CONSECUTIVE_5XX, "consecutive_5xx"},
    [RM_OUTLIER_CONSECUTIVE_GATEWAY_FAILURE] =
        {RM_OD_EJECTIONS_DETECTED_CONSECUTIVE_GATEWAY_FAILURE,
         RM_OD_EJECTIONS_ENFORCED_CONSECUTIVE_GATEWAY_FAILURE, "consecutive_gateway_failure"},
    [RM_OUTLIER_SUCCESS_RATE] = {RM_OD_EJECTIONS_DETECTED_SUCCESS_RATE,
                                 RM_OD_EJECTIONS_ENFORCED_SUCCESS_RATE, "success_rate"},
    [RM_OUTLIER_CONSECUTIVE_LOCAL_ORIGIN_FAILURE] =
        {RM_OD_EJECTIONS_DETECTED_CONSECUTIVE_LOCAL_ORIGIN_FAILURE,
         RM_OD_EJECTIONS_ENFORCED_CONSECUTIVE_LOCAL_ORIGIN_FAILURE,
         "consecutive_local_origin_failure"},
    [RM_OUTLIER_SUCCESS_RATE_LOCAL_ORIGIN] = {RM_OD_EJECTIONS_DETECTED_LOCAL_ORIGIN_SUCCESS_RATE,
                                              RM_OD_EJECTIONS_ENFORCED_LOCAL_ORIGIN_SUCCESS_RATE,
                                              "local_origin_success_rate"},
    [RM_OUTLIER_FAILURE_PERCENTAGE] = {RM_OD_EJECTIONS_DETECTED_FAILURE_PERCENTAGE,
                                       RM_OD_EJECTIONS_ENFORCED_FAILURE_PERCENTAGE,
                                       "failure_percentage"},
    [RM_OUTLIER_FAILURE_PERCENTAGE_LOCAL_ORIGIN] =
        {RM_OD_EJECTIONS_DETECTED_LOCAL_ORIGIN_FAILURE_PERCENTAGE,
         RM_OD_EJECTIONS_ENFORCED_LOCAL_ORIGIN_FAILURE_PERCENTAGE,
         "local_origin_failure_percentage"},
};

/* ---- clock and random source -------------------------------------------------------------- */

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static __thread uint64_t rng_state;

/* xorshift64*, one state per thread, seeded on first use. */
static uint64_t thread_random(void)
{
    uint64_t x = rng_state;
    if (!x) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        x = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)(uintptr_t)&rng_state ^ (uint64_t)ts.tv_sec;
        x |= 1;
    }
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* ---- configuration ------------------------------------------------------------------------ */

void rm_outlier_config_defaults(struct rm_outlier_config *cfg)
{
    *cfg = (struct rm_outlier_config){
        .consecutive_5xx = 5,
        .consecutive_gateway_failure = 5,
        .consecutive_local_origin_failure = 5,
        .interval_ms = 10000,
        .base_ejection_time_ms = 30000,
        .max_ejection_time_ms = 300000,
        .max_ejection_time_jitter_ms = 0,
        .max_ejection_percent = 10,
        .enforcing_consecutive_5xx = 100,
        .enforcing_consecutive_gateway_failure = 0,
        .enforcing_consecutive_local_origin_failure = 100,
        .enforcing_success_rate = 100,
        .enforcing_local_origin_success_rate = 100,
        .success_rate_minimum_hosts = 5,
        .success_rate_request_volume = 100,
        .success_rate_stdev_factor = 1900,
        .failure_percentage_threshold = 85,
        .enforcing_failure_percentage = 0,
        .enforcing_failure_percentage_local_origin = 0,
        .failure_percentage_minimum_hosts = 5,
        .failure_percentage_request_volume = 50,
    };
}

/* Percentages Envoy validates as ≤ 100. */
static int check_percentages(const struct rm_outlier_config *cfg, const char *path,
                             struct rm_error *err)
{
    const struct {
        uint32_t v;
        const char *name;
    } pct[] = {
        {cfg->max_ejection_percent, "max_ejection_percent"},
        {cfg->enforcing_consecutive_5xx, "enforcing_consecutive_5xx"},
        {cfg->enforcing_success_rate, "enforcing_success_rate"},
        {cfg->enforcing_consecutive_gateway_failure, "enforcing_consecutive_gateway_failure"},
        {cfg->enforcing_consecutive_local_origin_failure,
         "enforcing_consecutive_local_origin_failure"},
        {cfg->enforcing_local_origin_success_rate, "enforcing_local_origin_success_rate"},
        {cfg->failure_percentage_threshold, "failure_percentage_threshold"},
        {cfg->enforcing_failure_percentage, "enforcing_failure_percentage"},
        {cfg->enforcing_failure_percentage_local_origin,
         "enforcing_failure_percentage_local_origin"},
    };
    for (size_t i = 0; i < sizeof(pct) / sizeof(pct[0]); i++) {
        if (pct[i].v > 100)
            return rm_error_set(err, "%s.%s: must be at most 100, got %u", path, pct[i].name,
                                pct[i].v);
    }
    return RM_OK;
}

/* Durations Envoy validates as > 0 when set. */
static int check_durations(const OutlierDetection *pb, const char *path, struct rm_error *err)
{
    const struct {
        const Google__Protobuf__Duration *d;
        const char *name;
    } dur[] = {
        {pb->interval, "interval"},
        {pb->base_ejection_time, "base_ejection_time"},
        {pb->max_ejection_time, "max_ejection_time"},
    };
    for (size_t i = 0; i < sizeof(dur) / sizeof(dur[0]); i++) {
        if (dur[i].d && rm_pb_duration_ms(dur[i].d, 0) == 0)
            return rm_error_set(err, "%s.%s: must be greater than 0", path, dur[i].name);
    }
    return RM_OK;
}

int rm_outlier_config_parse(const OutlierDetection *pb, const char *path,
                            struct rm_outlier_config *cfg, struct rm_error *err)
{
    rm_outlier_config_defaults(cfg);
    if (pb->n_monitors) return rm_error_set(err, "%s.monitors: not supported by remora", path);
    if (check_durations(pb, path, err)) return RM_ERR;
    cfg->consecutive_5xx = rm_pb_u32(pb->consecutive_5xx, cfg->consecutive_5xx);
    cfg->consecutive_gateway_failure =
        rm_pb_u32(pb->consecutive_gateway_failure, cfg->consecutive_gateway_failure);
    cfg->consecutive_local_origin_failure =
        rm_pb_u32(pb->consecutive_local_origin_failure, cfg->consecutive_local_origin_failure);
    cfg->interval_ms = rm_pb_duration_ms(pb->interval, cfg->interval_ms);
    cfg->base_ejection_time_ms =
        rm_pb_duration_ms(pb->base_ejection_time, cfg->base_ejection_time_ms);
    uint32_t dflt_max = cfg->base_ejection_time_ms > 300000 ? cfg->base_ejection_time_ms : 300000;
    cfg->max_ejection_time_ms = rm_pb_duration_ms(pb->max_ejection_time, dflt_max);
    cfg->max_ejection_time_jitter_ms = rm_pb_duration_ms(pb->max_ejection_time_jitter, 0);
    cfg->max_ejection_percent = rm_pb_u32(pb->max_ejection_percent, cfg->max_ejection_percent);
    cfg->enforcing_consecutive_5xx =
        rm_pb_u32(pb->enforcing_consecutive_5xx, cfg->enforcing_consecutive_5xx);
    cfg->enforcing_consecutive_gateway_failure = rm_pb_u32(
        pb->enforcing_consecutive_gateway_failure, cfg->enforcing_consecutive_gateway_failure);
    cfg->enforcing_consecutive_local_origin_failure =
        rm_pb_u32(pb->enforcing_consecutive_local_origin_failure,
                  cfg->enforcing_consecutive_local_origin_failure);
    cfg->enforcing_success_rate =
        rm_pb_u32(pb->enforcing_success_rate, cfg->enforcing_success_rate);
    cfg->enforcing_local_origin_success_rate = rm_pb_u32(pb->enforcing_local_origin_success_rate,
                                                         cfg->enforcing_local_origin_success_rate);
    cfg->success_rate_minimum_hosts =
        rm_pb_u32(pb->success_rate_minimum_hosts, cfg->success_rate_minimum_hosts);
    cfg->success_rate_request_volume =
        rm_pb_u32(pb->success_rate_request_volume, cfg->success_rate_request_volume);
    cfg->success_rate_stdev_factor =
        rm_pb_u32(pb->success_rate_stdev_factor, cfg->success_rate_stdev_factor);
    cfg->failure_percentage_threshold =
        rm_pb_u32(pb->failure_percentage_threshold, cfg->failure_percentage_threshold);
    cfg->enforcing_failure_percentage =
        rm_pb_u32(pb->enforcing_failure_percentage, cfg->enforcing_failure_percentage);
    cfg->enforcing_failure_percentage_local_origin =
        rm_pb_u32(pb->enforcing_failure_percentage_local_origin,
                  cfg->enforcing_failure_percentage_local_origin);
    cfg->failure_percentage_minimum_hosts =
        rm_pb_u32(pb->failure_percentage_minimum_hosts, cfg->failure_percentage_minimum_hosts);
    cfg->failure_percentage_request_volume =
        rm_pb_u32(pb->failure_percentage_request_volume, cfg->failure_percentage_request_volume);
    cfg->split_external_local_origin_errors = pb->split_external_local_origin_errors;
    cfg->always_eject_one_host = rm_pb_bool(pb->always_eject_one_host, false);
    /* successful_active_health_check_uneject_host: remora has no active health checking, so
     * the flag has nothing to act on (as in Envoy for a cluster without health_checks). */
    if (cfg->max_ejection_time_ms < cfg->base_ejection_time_ms)
        return rm_error_set(err,
                            "%s.max_ejection_time: cannot be smaller than "
                            "base_ejection_time",
                            path);
    return check_percentages(cfg, path, err);
}

/* ---- pure arithmetic ---------------------------------------------------------------------- */

uint64_t rm_outlier_ejection_ms(const struct rm_outlier_config *cfg, uint64_t backoff,
                                uint64_t jitter_ms)
{
    uint64_t t = (uint64_t)cfg->base_ejection_time_ms * backoff;
    if (t > cfg->max_ejection_time_ms) t = cfg->max_ejection_time_ms;
    return t + jitter_ms;
}

uint64_t rm_outlier_backoff_next(const struct rm_outlier_config *cfg, uint64_t backoff)
{
    uint64_t base = cfg->base_ejection_time_ms;
    if (backoff * base < (uint64_t)cfg->max_ejection_time_ms + base &&
        backoff < RM_OUTLIER_BACKOFF_MAX)
        return backoff + 1;
    return backoff;
}

bool rm_outlier_may_eject(const struct rm_outlier_config *cfg, uint32_t n_ejected, size_t n_hosts)
{
    if (cfg->always_eject_one_host && n_ejected == 0) return true;
    if (!n_hosts) return false;
    uint32_t max_pct = cfg->max_ejection_percent < 100 ? cfg->max_ejection_percent : 100;
    double pct = 100.0 * ((double)n_ejected + 1) / (double)n_hosts;
    return pct <= (double)max_pct;
}

void rm_outlier_sr_threshold(const double *rates, size_t n, uint32_t stdev_factor, double *mean,
                             double *threshold)
{
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += rates[i];
    double m = sum / (double)n, var = 0;
    for (size_t i = 0; i < n; i++)
        var += (rates[i] - m) * (rates[i] - m);
    var /= (double)n;
    *mean = m;
    *threshold = m - (double)stdev_factor / 1000.0 * sqrt(var);
}

/* ---- ejection ----------------------------------------------------------------------------- */

static bool enforced(struct rm_outlier *d, enum rm_outlier_type type)
{
    const struct rm_outlier_config *c = &d->cfg;
    uint32_t pct = 0;
    switch (type) {
    case RM_OUTLIER_CONSECUTIVE_5XX:
        pct = c->enforcing_consecutive_5xx;
        break;
    case RM_OUTLIER_CONSECUTIVE_GATEWAY_FAILURE:
        pct = c->enforcing_consecutive_gateway_failure;
        break;
    case RM_OUTLIER_SUCCESS_RATE:
        pct = c->enforcing_success_rate;
        break;
    case RM_OUTLIER_CONSECUTIVE_LOCAL_ORIGIN_FAILURE:
        pct = c->enforcing_consecutive_local_origin_failure;
        break;
    case RM_OUTLIER_SUCCESS_RATE_LOCAL_ORIGIN:
        pct = c->enforcing_local_origin_success_rate;
        break;
    case RM_OUTLIER_FAILURE_PERCENTAGE:
        pct = c->enforcing_failure_percentage;
        break;
    case RM_OUTLIER_FAILURE_PERCENTAGE_LOCAL_ORIGIN:
        pct = c->enforcing_failure_percentage_local_origin;
        break;
    case RM_OUTLIER__TYPES:
        break;
    }
    /* Envoy's runtime featureEnabled(): random % 100 < percent */
    return d->random() % 100 < pct;
}

static const char *host_name(const struct rm_outlier *d, const struct rm_outlier_host *h)
{
    const char *n = d->host_name ? d->host_name(h) : NULL;
    return n ? n : "host";
}

/* Take one slot of the cluster's ejection budget; false (ejections_overflow) when none. */
static bool reserve_slot(struct rm_outlier *d)
{
    uint32_t cur = atomic_load_explicit(&d->n_ejected, memory_order_relaxed);
    do {
        if (!rm_outlier_may_eject(&d->cfg, cur,
                                  atomic_load_explicit(&d->n_hosts_live, memory_order_relaxed))) {
            rm_stat_inc(d->stats, RM_OD_EJECTIONS_OVERFLOW);
            return false;
        }
    } while (!atomic_compare_exchange_weak_explicit(&d->n_ejected, &cur, cur + 1,
                                                    memory_order_acq_rel, memory_order_relaxed));
    return true;
}

static void release_slot(struct rm_outlier *d)
{
    atomic_fetch_sub_explicit(&d->n_ejected, 1, memory_order_acq_rel);
}

/* Flip <h> to ejected with its multiplier bumped; false if another thread ejected it first. */
static bool set_ejected(struct rm_outlier *d, struct rm_outlier_host *h, uint64_t now,
                        uint64_t jitter, uint64_t *duration)
{
    uint64_t s = atomic_load_explicit(&h->state, memory_order_relaxed), ns;
    do {
        if (s & (RM_OUTLIER_EJECTED | RM_OUTLIER_REMOVED)) return false;
        uint64_t backoff = rm_outlier_backoff_next(&d->cfg, s >> RM_OUTLIER_BACKOFF_SHIFT);
        *duration = rm_outlier_ejection_ms(&d->cfg, backoff, jitter);
        uint64_t deadline = (now + *duration) & RM_OUTLIER_DEADLINE_MASK;
        ns = RM_OUTLIER_EJECTED | backoff << RM_OUTLIER_BACKOFF_SHIFT | deadline;
    } while (!atomic_compare_exchange_weak_explicit(&h->state, &s, ns, memory_order_acq_rel,
                                                    memory_order_relaxed));
    return true;
}

/* Envoy's DetectorImpl::ejectHost, for a host found an outlier. */
static bool eject(struct rm_outlier *d, struct rm_outlier_host *h, enum rm_outlier_type type,
                  uint64_t now)
{
    if (!reserve_slot(d)) return false;
    if (type == RM_OUTLIER_CONSECUTIVE_5XX || type == RM_OUTLIER_SUCCESS_RATE)
        rm_stat_inc(d->stats, RM_OD_EJECTIONS_TOTAL); /* deprecated, as Envoy still counts it */
    uint64_t duration = 0;
    if (!enforced(d, type) ||
        !set_ejected(d, h, now, d->random() % ((uint64_t)d->cfg.max_ejection_time_jitter_ms + 1),
                     &duration)) {
        release_slot(d);
        return false;
    }
    rm_stat_inc(d->stats, RM_OD_EJECTIONS_ACTIVE);
    rm_stat_inc(d->stats, RM_OD_EJECTIONS_ENFORCED_TOTAL);
    rm_stat_inc(d->stats, type_info[type].enforced);
    rm_log_info("outlier detection: ejected %s (%s) for %llu ms", host_name(d, h),
                type_info[type].name, (unsigned long long)duration);
    if (d->on_change) d->on_change(d->on_change_ctx, h, true);
    return true;
}

bool rm_outlier_detected(struct rm_outlier *d, struct rm_outlier_host *h, enum rm_outlier_type type,
                         uint64_t now)
{
    if (atomic_load_explicit(&h->state, memory_order_relaxed) &
        (RM_OUTLIER_EJECTED | RM_OUTLIER_REMOVED))
        return false;
    rm_stat_inc(d->stats, type_info[type].detected);
    return eject(d, h, type, now);
}

/* ---- reporting ---------------------------------------------------------------------------- */

static inline void zero(_Atomic uint32_t *p)
{
    if (atomic_load_explicit(p, memory_order_relaxed))
        atomic_store_explicit(p, 0, memory_order_relaxed);
}

/* ++counter == threshold, as Envoy counts: fires once per run of errors. */
static inline bool bump(_Atomic uint32_t *p, uint32_t threshold)
{
    return atomic_fetch_add_explicit(p, 1, memory_order_relaxed) + 1 == threshold;
}

/* A consecutive-error detector fired (Envoy: onConsecutiveErrorWorker). */
static void on_consecutive(struct rm_outlier_host *h, enum rm_outlier_type type,
                           _Atomic uint32_t *counter)
{
    struct rm_outlier *d = h->x->det;
    if (rm_outlier_ejected(h)) return; /* counter left alone: un-ejection resets it */
    rm_outlier_detected(d, h, type, d->now_ms());
    if (type == RM_OUTLIER_CONSECUTIVE_5XX)
        rm_stat_inc(d->stats, RM_OD_EJECTIONS_CONSECUTIVE_5XX); /* deprecated */
    atomic_store_explicit(counter, 0, memory_order_relaxed);
}

void rm_outlier_put_http(struct rm_outlier_host *h, unsigned status)
{
    const struct rm_outlier_config *c = &h->x->det->cfg;
    struct rm_outlier_host_data *x = h->x;
    if (status < 500 || status > 599) {
        atomic_fetch_add_explicit(&x->interval_counts[RM_OUTLIER_EXTERNAL],
                                  RM_OUTLIER_TOTAL_ONE | 1, memory_order_relaxed);
        zero(&x->consecutive_5xx);
        zero(&x->consecutive_gateway_failure);
        return;
    }
    atomic_fetch_add_explicit(&x->interval_counts[RM_OUTLIER_EXTERNAL], RM_OUTLIER_TOTAL_ONE,
                              memory_order_relaxed);
    if (status >= 502 && status <= 504) {
        if (bump(&x->consecutive_gateway_failure, c->consecutive_gateway_failure))
            on_consecutive(h, RM_OUTLIER_CONSECUTIVE_GATEWAY_FAILURE,
                           &x->consecutive_gateway_failure);
    } else {
        zero(&x->consecutive_gateway_failure);
    }
    if (bump(&x->consecutive_5xx, c->consecutive_5xx))
        on_consecutive(h, RM_OUTLIER_CONSECUTIVE_5XX, &x->consecutive_5xx);
}

void rm_outlier_put_local(struct rm_outlier_host *h, enum rm_outlier_local result)
{
    const struct rm_outlier_config *c = &h->x->det->cfg;
    if (!c->split_external_local_origin_errors) {
        /* not split: local results are HTTP codes (a successful connect says nothing) */
        if (result == RM_OUTLIER_CONNECT_FAILURE)
            rm_outlier_put_http(h, 503);
        else if (result == RM_OUTLIER_TIMEOUT)
            rm_outlier_put_http(h, 504);
        return;
    }
    struct rm_outlier_host_data *x = h->x;
    _Atomic uint64_t *counts = &x->interval_counts[RM_OUTLIER_LOCAL];
    if (result == RM_OUTLIER_CONNECT_SUCCESS) {
        atomic_fetch_add_explicit(counts, RM_OUTLIER_TOTAL_ONE | 1, memory_order_relaxed);
        zero(&x->consecutive_local_failure);
        return;
    }
    atomic_fetch_add_explicit(counts, RM_OUTLIER_TOTAL_ONE, memory_order_relaxed);
    if (bump(&x->consecutive_local_failure, c->consecutive_local_origin_failure))
        on_consecutive(h, RM_OUTLIER_CONSECUTIVE_LOCAL_ORIGIN_FAILURE,
                       &x->consecutive_local_failure);
}

/* ---- the interval ------------------------------------------------------------------------- */

/* Envoy's checkHostForUneject: back in service once the ejection time is over. */
static void maybe_uneject(struct rm_outlier *d, struct rm_outlier_host *h, uint64_t now)
{
    uint64_t s = atomic_load_explicit(&h->state, memory_order_acquire);
    if (!(s & RM_OUTLIER_EJECTED) ||
        (now & RM_OUTLIER_DEADLINE_MASK) < (s & RM_OUTLIER_DEADLINE_MASK))
        return;
    uint64_t ns = s & ~(RM_OUTLIER_EJECTED | RM_OUTLIER_DEADLINE_MASK); /* keeps the multiplier */
    if (!atomic_compare_exchange_strong_explicit(&h->state, &s, ns, memory_order_acq_rel,
                                                 memory_order_relaxed))
        return;
    release_slot(d);
    rm_stat_dec(d->stats, RM_OD_EJECTIONS_ACTIVE);
    atomic_store_explicit(&h->x->consecutive_5xx, 0, memory_order_relaxed);
    atomic_store_explicit(&h->x->consecutive_gateway_failure, 0, memory_order_relaxed);
    atomic_store_explicit(&h->x->consecutive_local_failure, 0, memory_order_relaxed);
    h->x->last_uneject_ms = now;
    h->x->unejected_once = true;
    rm_log_info("outlier detection: %s back in service", host_name(d, h));
    if (d->on_change) d->on_change(d->on_change_ctx, h, false);
}

/* The multiplier of a host in service for a whole interval since its last un-ejection decays. */
static void decay_backoff(struct rm_outlier *d, struct rm_outlier_host *h, uint64_t now)
{
    if (!h->x->unejected_once || now - h->x->last_uneject_ms < d->cfg.interval_ms) return;
    uint64_t s = atomic_load_explicit(&h->state, memory_order_relaxed);
    do {
        if ((s & RM_OUTLIER_EJECTED) || !(s >> RM_OUTLIER_BACKOFF_SHIFT)) return;
    } while (!atomic_compare_exchange_weak_explicit(&h->state, &s,
                                                    s - (UINT64_C(1) << RM_OUTLIER_BACKOFF_SHIFT),
                                                    memory_order_acq_rel, memory_order_relaxed));
}

static void eject_outliers(struct rm_outlier *d, const size_t *idx, size_t n, const double *rates,
                           enum rm_outlier_type type, double threshold, bool failure_pct,
                           uint64_t now)
{
    for (size_t k = 0; k < n; k++) {
        double rate = rates[idx[k]];
        bool outlier = failure_pct ? 100.0 - rate >= threshold : rate < threshold;
        if (!outlier) continue;
        if (!failure_pct) rm_stat_inc(d->stats, RM_OD_EJECTIONS_SUCCESS_RATE); /* deprecated */
        rm_outlier_detected(d, d->hosts[idx[k]], type, now);
    }
}

/* Envoy's processSuccessRateEjections for one origin, over the counters swapped this tick. */
static void success_rate_pass(struct rm_outlier *d, enum rm_outlier_origin o, uint64_t now)
{
    const struct rm_outlier_config *c = &d->cfg;
    d->sr_average[o] = d->sr_threshold[o] = -1;
    if (d->n_hosts < c->success_rate_minimum_hosts &&
        d->n_hosts < c->failure_percentage_minimum_hosts)
        return;
    uint32_t min_volume = c->success_rate_request_volume < c->failure_percentage_request_volume
                              ? c->success_rate_request_volume
                              : c->failure_percentage_request_volume;
    size_t n_sr = 0, n_fp = 0;
    for (size_t i = 0; i < d->n_hosts; i++) {
        struct rm_outlier_host *h = d->hosts[i];
        uint64_t v = d->counts[o * d->n_hosts + i];
        uint64_t total = v >> 32, ok = v & 0xffffffffu;
        if (rm_outlier_ejected(h) || !total) continue;
        double rate = (double)ok * 100.0 / (double)total;
        d->rates[i] = rate;
        if (total >= min_volume) h->x->success_rate[o] = rate;
        if (total >= c->success_rate_request_volume) {
            d->sr_rates[n_sr] = rate;
            d->valid_sr[n_sr++] = i;
        }
        if (total >= c->failure_percentage_request_volume) d->valid_fp[n_fp++] = i;
    }
    if (n_sr && n_sr >= c->success_rate_minimum_hosts) {
        rm_outlier_sr_threshold(d->sr_rates, n_sr, c->success_rate_stdev_factor, &d->sr_average[o],
                                &d->sr_threshold[o]);
        eject_outliers(d, d->valid_sr, n_sr, d->rates,
                       o == RM_OUTLIER_EXTERNAL ? RM_OUTLIER_SUCCESS_RATE
                                                : RM_OUTLIER_SUCCESS_RATE_LOCAL_ORIGIN,
                       d->sr_threshold[o], false, now);
    }
    if (n_fp && n_fp >= c->failure_percentage_minimum_hosts)
        eject_outliers(d, d->valid_fp, n_fp, d->rates,
                       o == RM_OUTLIER_EXTERNAL ? RM_OUTLIER_FAILURE_PERCENTAGE
                                                : RM_OUTLIER_FAILURE_PERCENTAGE_LOCAL_ORIGIN,
                       (double)c->failure_percentage_threshold, true, now);
}

void rm_outlier_tick(struct rm_outlier *d, uint64_t now)
{
    for (size_t i = 0; i < d->n_hosts; i++) {
        struct rm_outlier_host *h = d->hosts[i];
        maybe_uneject(d, h, now);
        for (int o = 0; o < 2; o++) {
            d->counts[o * d->n_hosts + i] =
                atomic_exchange_explicit(&h->x->interval_counts[o], 0, memory_order_relaxed);
            h->x->success_rate[o] = -1;
        }
    }
    success_rate_pass(d, RM_OUTLIER_EXTERNAL, now);
    success_rate_pass(d, RM_OUTLIER_LOCAL, now);
    for (size_t i = 0; i < d->n_hosts; i++)
        decay_backoff(d, d->hosts[i], now);
}

/* ---- lifetime ----------------------------------------------------------------------------- */

/* <h> joins <d>: fresh state, its data allocated the first time.  False when out of memory
 * (<h> is left alone). */
static bool adopt_host(struct rm_outlier *d, struct rm_outlier_host *h)
{
    if (!h->x && !(h->x = malloc(sizeof(*h->x)))) return false;
    memset(h->x, 0, sizeof(*h->x));
    h->x->success_rate[0] = h->x->success_rate[1] = -1;
    atomic_store_explicit(&h->state, 0, memory_order_relaxed);
    h->x->det = d;
    return true;
}

void rm_outlier_host_dispose(struct rm_outlier_host *h)
{
    free(h->x);
    h->x = NULL;
}

struct rm_outlier *rm_outlier_new(const struct rm_outlier_config *cfg, const char *stat_prefix,
                                  struct rm_outlier_host **hosts, size_t n_hosts)
{
    struct rm_outlier *d = calloc(1, sizeof(*d));
    size_t n = n_hosts ? n_hosts : 1;
    if (!d) return NULL;
    d->counts = calloc(2 * n, sizeof(*d->counts));
    d->rates = calloc(n, sizeof(*d->rates));
    d->sr_rates = calloc(n, sizeof(*d->sr_rates));
    d->hosts = calloc(n, sizeof(*d->hosts));
    d->valid_sr = calloc(n, sizeof(*d->valid_sr));
    d->valid_fp = calloc(n, sizeof(*d->valid_fp));
    if (!d->counts || !d->rates || !d->sr_rates || !d->hosts || !d->valid_sr || !d->valid_fp) {
        rm_outlier_free(d);
        return NULL;
    }
    d->cfg = *cfg;
    if (n_hosts) memcpy(d->hosts, hosts, n_hosts * sizeof(*hosts));
    d->n_hosts = n_hosts;
    atomic_init(&d->n_hosts_live, n_hosts);
    d->now_ms = mono_ms;
    d->random = thread_random;
    char prefix[320];
    snprintf(prefix, sizeof(prefix), "%soutlier_detection.", stat_prefix);
    d->stats = rm_stats_get(prefix, rm_outlier_stat_defs, RM_OD__COUNT);
    for (int o = 0; o < 2; o++)
        d->sr_average[o] = d->sr_threshold[o] = -1;
    for (size_t i = 0; i < n_hosts; i++) {
        if (!adopt_host(d, hosts[i])) {
            rm_outlier_free(d); /* the data adopted so far stays with its hosts */
            return NULL;
        }
    }
    return d;
}

/* The detector's arrays sized for <n> hosts (contents zeroed; d->hosts too); false when out
 * of memory (the old ones are kept). */
static bool resize_arrays(struct rm_outlier *d, size_t n)
{
    struct rm_outlier t = {0};
    n = n ? n : 1;
    t.counts = calloc(2 * n, sizeof(*t.counts));
    t.rates = calloc(n, sizeof(*t.rates));
    t.sr_rates = calloc(n, sizeof(*t.sr_rates));
    t.hosts = calloc(n, sizeof(*t.hosts));
    t.valid_sr = calloc(n, sizeof(*t.valid_sr));
    t.valid_fp = calloc(n, sizeof(*t.valid_fp));
    bool ok = t.counts && t.rates && t.sr_rates && t.hosts && t.valid_sr && t.valid_fp;
    struct rm_outlier *drop = ok ? d : &t;
    free(drop->counts);
    free(drop->rates);
    free(drop->sr_rates);
    free(drop->hosts);
    free(drop->valid_sr);
    free(drop->valid_fp);
    if (ok) {
        d->counts = t.counts;
        d->rates = t.rates;
        d->sr_rates = t.sr_rates;
        d->hosts = t.hosts;
        d->valid_sr = t.valid_sr;
        d->valid_fp = t.valid_fp;
    }
    return ok;
}

/* A host that left the cluster: no ejection from now on; its ejection, if any, is over. */
static void retire_host(struct rm_outlier *d, struct rm_outlier_host *h)
{
    uint64_t s = atomic_fetch_or_explicit(&h->state, RM_OUTLIER_REMOVED, memory_order_acq_rel);
    if ((s & RM_OUTLIER_EJECTED) && !(s & RM_OUTLIER_REMOVED)) {
        release_slot(d);
        rm_stat_dec(d->stats, RM_OD_EJECTIONS_ACTIVE);
    }
}

void rm_outlier_set_hosts(struct rm_outlier *d, struct rm_outlier_host **hosts, size_t n_hosts)
{
    for (size_t i = 0; i < n_hosts; i++) {
        if (!rm_outlier_det(hosts[i]) && !adopt_host(d, hosts[i])) abort();
        hosts[i]->x->mark = true;
    }
    for (size_t i = 0; i < d->n_hosts; i++) {
        if (!d->hosts[i]->x->mark) retire_host(d, d->hosts[i]);
    }
    for (size_t i = 0; i < n_hosts; i++)
        hosts[i]->x->mark = false;
    if (!resize_arrays(d, n_hosts)) abort();
    if (n_hosts) memcpy(d->hosts, hosts, n_hosts * sizeof(*hosts));
    d->n_hosts = n_hosts;
    atomic_store_explicit(&d->n_hosts_live, n_hosts, memory_order_relaxed);
}

void rm_outlier_free(struct rm_outlier *d)
{
    if (!d) return;
    for (size_t i = 0; d->stats && i < d->n_hosts; i++) {
        if (rm_outlier_ejected(d->hosts[i])) rm_stat_dec(d->stats, RM_OD_EJECTIONS_ACTIVE);
    }
    free(d->counts);
    free(d->rates);
    free(d->sr_rates);
    free(d->hosts);
    free(d->valid_sr);
    free(d->valid_fp);
    rm_stats_release(d->stats);
    free(d);
}

static void on_interval(struct rm_timer *t)
{
    struct rm_outlier *d = rm_container_of(t, struct rm_outlier, timer);
    rm_outlier_tick(d, d->now_ms());
    rm_timer_start(d->loop, &d->timer, d->cfg.interval_ms, on_interval);
}

void rm_outlier_start(struct rm_outlier *d, struct rm_loop *loop)
{
    d->loop = loop;
    rm_timer_start(loop, &d->timer, d->cfg.interval_ms, on_interval);
}

void rm_outlier_stop(struct rm_outlier *d)
{
    if (d && d->loop) rm_timer_stop(d->loop, &d->timer);
}
