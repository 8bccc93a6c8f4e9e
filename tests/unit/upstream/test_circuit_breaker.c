/* Unit tests for proxy/upstream/circuit_breaker.c: Cluster.circuit_breakers parsing (defaults,
 * priorities, rejections), exact limits under concurrent workers, the retry budget, gauges. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <string.h>

#include "envoy/config/cluster/v3/circuit_breaker.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "proxy/admin/stats.h"
#include "proxy/upstream/circuit_breaker.h"

typedef Envoy__Config__Cluster__V3__CircuitBreakers CircuitBreakers;
typedef Envoy__Config__Cluster__V3__CircuitBreakers__Thresholds Thresholds;

static Google__Protobuf__UInt32Value u32(uint32_t v)
{
    Google__Protobuf__UInt32Value w = GOOGLE__PROTOBUF__UINT32_VALUE__INIT;
    w.value = v;
    return w;
}

static Thresholds thresholds(void)
{
    Thresholds t = ENVOY__CONFIG__CLUSTER__V3__CIRCUIT_BREAKERS__THRESHOLDS__INIT;
    return t;
}

Test(circuit_breaker, defaults_are_envoys)
{
    struct rm_cb_thresholds lim[RM_CB_PRIORITIES];
    struct rm_error err = {{0}};
    cr_assert_eq(rm_cb_parse(NULL, "c", lim, &err), RM_OK);
    for (int p = 0; p < RM_CB_PRIORITIES; p++) {
        cr_expect_eq(lim[p].max[RM_CB_CX], 1024);
        cr_expect_eq(lim[p].max[RM_CB_PENDING], 1024);
        cr_expect_eq(lim[p].max[RM_CB_RQ], 1024);
        cr_expect_eq(lim[p].max[RM_CB_RETRY], 3);
        cr_expect_eq(lim[p].max[RM_CB_CX_POOL], RM_CB_UNLIMITED);
        cr_expect_eq(lim[p].per_host_max_cx, RM_CB_UNLIMITED);
        cr_expect_not(lim[p].has_budget || lim[p].track_remaining);
    }
}

Test(circuit_breaker, thresholds_by_priority_and_budget_defaults)
{
    Thresholds hi = thresholds(), def = thresholds(), host = thresholds();
    Google__Protobuf__UInt32Value two = u32(2), seven = u32(7), nine = u32(9);
    hi.priority = ENVOY__CONFIG__CORE__V3__ROUTING_PRIORITY__HIGH;
    hi.max_requests = &two;
    hi.track_remaining = true;
    def.max_connections = &seven;
    def.max_connection_pools = &nine;
    Envoy__Config__Cluster__V3__CircuitBreakers__Thresholds__RetryBudget rb =
        ENVOY__CONFIG__CLUSTER__V3__CIRCUIT_BREAKERS__THRESHOLDS__RETRY_BUDGET__INIT;
    def.retry_budget = &rb;
    host.max_connections = &two;
    Thresholds *th[] = {&hi, &def}, *ph[] = {&host};
    CircuitBreakers cb = ENVOY__CONFIG__CLUSTER__V3__CIRCUIT_BREAKERS__INIT;
    cb.n_thresholds = 2;
    cb.thresholds = th;
    cb.n_per_host_thresholds = 1;
    cb.per_host_thresholds = ph;
    struct rm_cb_thresholds lim[RM_CB_PRIORITIES];
    struct rm_error err = {{0}};
    cr_assert_eq(rm_cb_parse(&cb, "c.circuit_breakers", lim, &err), RM_OK, "%s", err.msg);
    cr_expect_eq(lim[1].max[RM_CB_RQ], 2);
    cr_expect_eq(lim[1].max[RM_CB_CX], 1024);
    cr_expect(lim[1].track_remaining && !lim[0].track_remaining);
    cr_expect_eq(lim[0].max[RM_CB_CX], 7);
    cr_expect_eq(lim[0].max[RM_CB_CX_POOL], 9);
    cr_expect(lim[0].has_budget && lim[0].budget_percent == 20.0 &&
                  lim[0].min_retry_concurrency == 3,
              "Envoy's budget defaults");
    cr_expect_eq(lim[0].per_host_max_cx, 2);
    cr_expect_eq(lim[1].per_host_max_cx, RM_CB_UNLIMITED);
}

static void expect_error(CircuitBreakers *cb, const char *want)
{
    struct rm_cb_thresholds lim[RM_CB_PRIORITIES];
    struct rm_error err = {{0}};
    cr_expect_eq(rm_cb_parse(cb, "c.circuit_breakers", lim, &err), RM_ERR);
    cr_expect(strstr(err.msg, want) != NULL, "got \"%s\", want \"%s\"", err.msg, want);
}

Test(circuit_breaker, rejections_name_the_field)
{
    Thresholds a = thresholds(), b = thresholds();
    Thresholds *th[] = {&a, &b};
    CircuitBreakers cb = ENVOY__CONFIG__CLUSTER__V3__CIRCUIT_BREAKERS__INIT;
    cb.n_thresholds = 2;
    cb.thresholds = th;
    expect_error(&cb,
                 "c.circuit_breakers.thresholds[1].priority: DEFAULT is given thresholds twice");
    cb.n_thresholds = 1;
    Envoy__Config__Cluster__V3__CircuitBreakers__Thresholds__RetryBudget rb =
        ENVOY__CONFIG__CLUSTER__V3__CIRCUIT_BREAKERS__THRESHOLDS__RETRY_BUDGET__INIT;
    Envoy__Type__V3__Percent pct = ENVOY__TYPE__V3__PERCENT__INIT;
    pct.value = 150;
    rb.budget_percent = &pct;
    a.retry_budget = &rb;
    expect_error(&cb, "c.circuit_breakers.thresholds[0].retry_budget.budget_percent.value");
    a.retry_budget = NULL;
    Google__Protobuf__UInt32Value one = u32(1);
    b.max_retries = &one;
    Thresholds *ph[] = {&b};
    cb.n_per_host_thresholds = 1;
    cb.per_host_thresholds = ph;
    expect_error(&cb, "c.circuit_breakers.per_host_thresholds[0].max_retries: only "
                      "max_connections is supported per host");
}

static struct rm_cb *make(uint32_t max_rq, bool track)
{
    struct rm_cb_thresholds lim[RM_CB_PRIORITIES];
    cr_assert_eq(rm_cb_parse(NULL, "c", lim, NULL), RM_OK);
    lim[0].max[RM_CB_RQ] = max_rq;
    lim[0].track_remaining = track;
    return rm_cb_new(&lim[0], "cluster.cbtest.", 0);
}

Test(circuit_breaker, limits_gauges_and_remaining)
{
    struct rm_cb *cb = make(2, true);
    struct rm_stats *open = rm_stats_get("cluster.cbtest.circuit_breakers.default.", NULL, 0);
    struct rm_stats *rem =
        rm_stats_get("cluster.cbtest.circuit_breakers.default.remaining_", NULL, 0);
    cr_assert_eq(open, cb->gauges);
    cr_assert_eq(rem, cb->remaining);
    cr_expect_str_eq(open->defs[RM_CB_RQ].name, "rq_open");
    cr_expect_str_eq(rem->defs[RM_CB_RQ].name, "rq");
    cr_expect_eq(rm_stat_value(rem, RM_CB_RQ), 2);
    cr_expect_eq(rm_stat_value(rem, RM_CB_RETRY), 3);
    cr_expect(rm_cb_try_acquire(cb, RM_CB_RQ));
    cr_expect_eq(rm_stat_value(open, RM_CB_RQ), 0);
    cr_expect(rm_cb_try_acquire(cb, RM_CB_RQ));
    cr_expect_eq(rm_stat_value(open, RM_CB_RQ), 1);
    cr_expect_eq(rm_stat_value(rem, RM_CB_RQ), 0);
    cr_expect_not(rm_cb_try_acquire(cb, RM_CB_RQ));
    cr_expect_eq(rm_cb_count(cb, RM_CB_RQ), 2);
    rm_cb_release(cb, RM_CB_RQ);
    cr_expect_eq(rm_stat_value(open, RM_CB_RQ), 0);
    cr_expect_eq(rm_stat_value(rem, RM_CB_RQ), 1);
    rm_cb_acquire_force(cb, RM_CB_RQ);
    rm_cb_acquire_force(cb, RM_CB_RQ);
    cr_expect_eq(rm_cb_count(cb, RM_CB_RQ), 3, "forced past the limit");
    cr_expect_eq(rm_stat_value(rem, RM_CB_RQ), 0);
    for (int i = 0; i < 3; i++)
        rm_cb_release(cb, RM_CB_RQ);
    cr_expect_eq(rm_stat_value(rem, RM_CB_RQ), 2);
    cr_expect(rm_cb_try_acquire(NULL, RM_CB_RQ), "no breakers: no limit");
    rm_cb_release(NULL, RM_CB_RQ);
    rm_cb_free(cb);
    cb = make(5, false);
    cr_expect_null(cb->remaining, "remaining_* only with track_remaining");
    rm_cb_free(cb);
}

struct hammer {
    struct rm_cb *cb;
    _Atomic int held, peak, granted;
};

static void *hammer_thread(void *arg)
{
    struct hammer *h = arg;
    for (int i = 0; i < 20000; i++) {
        if (!rm_cb_try_acquire(h->cb, RM_CB_RQ)) continue;
        int now = atomic_fetch_add(&h->held, 1) + 1;
        int peak = atomic_load(&h->peak);
        while (now > peak && !atomic_compare_exchange_weak(&h->peak, &peak, now))
            ;
        atomic_fetch_add(&h->granted, 1);
        atomic_fetch_sub(&h->held, 1);
        rm_cb_release(h->cb, RM_CB_RQ);
    }
    return NULL;
}

Test(circuit_breaker, exact_across_threads)
{
    struct hammer h = {.cb = make(3, false)};
    pthread_t t[6];
    for (int i = 0; i < 6; i++)
        pthread_create(&t[i], NULL, hammer_thread, &h);
    for (int i = 0; i < 6; i++)
        pthread_join(t[i], NULL);
    cr_expect_leq(atomic_load(&h.peak), 3, "never more than max_requests at once");
    cr_expect_gt(atomic_load(&h.granted), 0);
    cr_expect_eq(rm_cb_count(h.cb, RM_CB_RQ), 0);
    rm_cb_free(h.cb);
}
