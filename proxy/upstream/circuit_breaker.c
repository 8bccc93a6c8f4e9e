#include "proxy/upstream/circuit_breaker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/config/cluster/v3/circuit_breaker.pb-c.h"
#include "proxy/admin/stats.h"
#include "proxy/config/pbutil.h"

typedef Envoy__Config__Cluster__V3__CircuitBreakers__Thresholds Thresholds;

/* Gauge names, by resource; "remaining_" ones live in their own block (track_remaining only). */
static const struct rm_stat_def open_defs[RM_CB__COUNT] = {
    [RM_CB_CX] = {"cx_open", RM_GAUGE},           [RM_CB_PENDING] = {"rq_pending_open", RM_GAUGE},
    [RM_CB_RQ] = {"rq_open", RM_GAUGE},           [RM_CB_RETRY] = {"rq_retry_open", RM_GAUGE},
    [RM_CB_CX_POOL] = {"cx_pool_open", RM_GAUGE},
};
static const struct rm_stat_def remaining_defs[RM_CB__COUNT] = {
    [RM_CB_CX] = {"cx", RM_GAUGE},
    [RM_CB_PENDING] = {"pending", RM_GAUGE},
    [RM_CB_RQ] = {"rq", RM_GAUGE},
    [RM_CB_RETRY] = {"retries", RM_GAUGE},
    [RM_CB_CX_POOL] = {"cx_pools", RM_GAUGE},
};

static const char *const priority_names[RM_CB_PRIORITIES] = {"default", "high"};

/* ---- config ------------------------------------------------------------------------------- */

static void defaults(struct rm_cb_thresholds *t)
{
    memset(t, 0, sizeof(*t));
    t->max[RM_CB_CX] = 1024;
    t->max[RM_CB_PENDING] = 1024;
    t->max[RM_CB_RQ] = 1024;
    t->max[RM_CB_RETRY] = 3;
    t->max[RM_CB_CX_POOL] = RM_CB_UNLIMITED;
    t->budget_percent = 20.0;
    t->min_retry_concurrency = 3;
    t->per_host_max_cx = RM_CB_UNLIMITED;
}

static int check_priority(const Thresholds *t, const char *path, bool seen[RM_CB_PRIORITIES],
                          struct rm_error *err)
{
    if ((int)t->priority < 0 || (int)t->priority >= RM_CB_PRIORITIES)
        return rm_error_set(err, "%s.priority: unknown routing priority %d", path,
                            (int)t->priority);
    if (seen[t->priority])
        return rm_error_set(err, "%s.priority: %s is given thresholds twice", path,
                            t->priority ? "HIGH" : "DEFAULT");
    seen[t->priority] = true;
    return RM_OK;
}

static int read_thresholds(const Thresholds *t, const char *path, struct rm_cb_thresholds *out,
                           struct rm_error *err)
{
    out->max[RM_CB_CX] = rm_pb_u32(t->max_connections, out->max[RM_CB_CX]);
    out->max[RM_CB_PENDING] = rm_pb_u32(t->max_pending_requests, out->max[RM_CB_PENDING]);
    out->max[RM_CB_RQ] = rm_pb_u32(t->max_requests, out->max[RM_CB_RQ]);
    out->max[RM_CB_RETRY] = rm_pb_u32(t->max_retries, out->max[RM_CB_RETRY]);
    out->max[RM_CB_CX_POOL] = rm_pb_u32(t->max_connection_pools, out->max[RM_CB_CX_POOL]);
    out->track_remaining = t->track_remaining;
    if (!t->retry_budget) return RM_OK;
    out->has_budget = true;
    if (t->retry_budget->budget_percent) {
        double v = t->retry_budget->budget_percent->value;
        if (!(v >= 0.0 && v <= 100.0))
            return rm_error_set(err,
                                "%s.retry_budget.budget_percent.value: must be within "
                                "[0, 100], got %g",
                                path, v);
        out->budget_percent = v;
    }
    out->min_retry_concurrency =
        rm_pb_u32(t->retry_budget->min_retry_concurrency, out->min_retry_concurrency);
    return RM_OK;
}

/* Envoy honours only max_connections per host: anything else would be silently ignored. */
static int read_per_host(const Thresholds *t, const char *path, struct rm_cb_thresholds *out,
                         struct rm_error *err)
{
    static const struct {
        size_t off;
        const char *name;
    } ignored[] = {
        {offsetof(Thresholds, max_pending_requests), "max_pending_requests"},
        {offsetof(Thresholds, max_requests), "max_requests"},
        {offsetof(Thresholds, max_retries), "max_retries"},
        {offsetof(Thresholds, retry_budget), "retry_budget"},
        {offsetof(Thresholds, max_connection_pools), "max_connection_pools"},
    };
    for (size_t i = 0; i < sizeof(ignored) / sizeof(ignored[0]); i++) {
        if (*(void *const *)((const char *)t + ignored[i].off))
            return rm_error_set(err,
                                "%s.%s: only max_connections is supported per host (as in "
                                "Envoy)",
                                path, ignored[i].name);
    }
    if (t->track_remaining)
        return rm_error_set(err,
                            "%s.track_remaining: only max_connections is supported per "
                            "host (as in Envoy)",
                            path);
    out->per_host_max_cx = rm_pb_u32(t->max_connections, RM_CB_UNLIMITED);
    return RM_OK;
}

int rm_cb_parse(const Envoy__Config__Cluster__V3__CircuitBreakers *pb, const char *path,
                struct rm_cb_thresholds out[RM_CB_PRIORITIES], struct rm_error *err)
{
    for (int i = 0; i < RM_CB_PRIORITIES; i++)
        defaults(&out[i]);
    if (!pb) return RM_OK;
    char p[512];
    bool seen[RM_CB_PRIORITIES] = {false, false};
    for (size_t i = 0; i < pb->n_thresholds; i++) {
        const Thresholds *t = pb->thresholds[i];
        snprintf(p, sizeof(p), "%s.thresholds[%zu]", path, i);
        if (check_priority(t, p, seen, err) || read_thresholds(t, p, &out[t->priority], err))
            return RM_ERR;
    }
    bool seen_host[RM_CB_PRIORITIES] = {false, false};
    for (size_t i = 0; i < pb->n_per_host_thresholds; i++) {
        const Thresholds *t = pb->per_host_thresholds[i];
        snprintf(p, sizeof(p), "%s.per_host_thresholds[%zu]", path, i);
        if (check_priority(t, p, seen_host, err) || read_per_host(t, p, &out[t->priority], err))
            return RM_ERR;
    }
    return RM_OK;
}

/* ---- gauges ------------------------------------------------------------------------------- */

/* The breaker gauges are written by any worker with a plain store into shard 0 (nobody else
 * writes these blocks), so they read as the last value set, as Envoy's gauges do.  The row is
 * made by the first non-zero value: a breaker that never reached a limit costs no row. */
static void gauge_store(struct rm_stats *s, unsigned idx, int64_t v)
{
    _Atomic int64_t *row = atomic_load_explicit(&s->rows[0], memory_order_acquire);
    if (!row && v == 0) return;
    _Atomic int64_t *slot = &(row ? row : rm_stats_row(s, 0))[idx];
    if (atomic_load_explicit(slot, memory_order_relaxed) != v)
        atomic_store_explicit(slot, v, memory_order_relaxed);
}

static void update_gauges(struct rm_cb *cb, enum rm_cb_resource r, int64_t count)
{
    uint64_t max = rm_cb_max(cb, r);
    gauge_store(cb->gauges, r, (uint64_t)count >= max);
    if (cb->remaining)
        gauge_store(cb->remaining, r, (uint64_t)count < max ? (int64_t)(max - (uint64_t)count) : 0);
}

struct rm_cb *rm_cb_new(const struct rm_cb_thresholds *lim, const char *stat_prefix, int priority)
{
    struct rm_cb *cb = aligned_alloc(64, (sizeof(*cb) + 63) & ~(size_t)63);
    if (!cb) abort();
    memset(cb, 0, sizeof(*cb));
    cb->lim = *lim;
    char prefix[400];
    snprintf(prefix, sizeof(prefix), "%scircuit_breakers.%s.", stat_prefix,
             priority_names[priority ? 1 : 0]);
    cb->gauges = rm_stats_get(prefix, open_defs, RM_CB__COUNT);
    if (lim->track_remaining) {
        snprintf(prefix, sizeof(prefix), "%scircuit_breakers.%s.remaining_", stat_prefix,
                 priority_names[priority ? 1 : 0]);
        cb->remaining = rm_stats_get(prefix, remaining_defs, RM_CB__COUNT);
    }
    for (int r = 0; r < RM_CB__COUNT; r++)
        update_gauges(cb, (enum rm_cb_resource)r, 0);
    return cb;
}

void rm_cb_free(struct rm_cb *cb)
{
    if (!cb) return;
    rm_stats_release(cb->gauges);
    rm_stats_release(cb->remaining);
    free(cb);
}

/* ---- counting ----------------------------------------------------------------------------- */

uint64_t rm_cb_max(const struct rm_cb *cb, enum rm_cb_resource r)
{
    if (r != RM_CB_RETRY || !cb->lim.has_budget) return cb->lim.max[r];
    /* Envoy: max(budget_percent of the requests active and pending, min_retry_concurrency) */
    int64_t active = rm_cb_count(cb, RM_CB_RQ) + rm_cb_count(cb, RM_CB_PENDING);
    uint64_t budget =
        (uint64_t)(cb->lim.budget_percent / 100.0 * (double)(active > 0 ? active : 0));
    return budget > cb->lim.min_retry_concurrency ? budget : cb->lim.min_retry_concurrency;
}

bool rm_cb_try_acquire(struct rm_cb *cb, enum rm_cb_resource r)
{
    if (!cb) return true;
    uint64_t max = rm_cb_max(cb, r);
    int64_t cur = atomic_load_explicit(&cb->count[r], memory_order_relaxed);
    do {
        if ((uint64_t)cur >= max) return false;
    } while (!atomic_compare_exchange_weak_explicit(&cb->count[r], &cur, cur + 1,
                                                    memory_order_relaxed, memory_order_relaxed));
    update_gauges(cb, r, cur + 1);
    return true;
}

void rm_cb_acquire_force(struct rm_cb *cb, enum rm_cb_resource r)
{
    if (!cb) return;
    int64_t now = atomic_fetch_add_explicit(&cb->count[r], 1, memory_order_relaxed) + 1;
    update_gauges(cb, r, now);
}

void rm_cb_release(struct rm_cb *cb, enum rm_cb_resource r)
{
    if (!cb) return;
    int64_t now = atomic_fetch_sub_explicit(&cb->count[r], 1, memory_order_relaxed) - 1;
    update_gauges(cb, r, now);
}
