/* Outlier detection core: ejection arithmetic, consecutive-error detectors, max_ejection_percent,
 * success-rate and failure-percentage detectors, enforcement rolls, un-ejection timing and the
 * multiplier decay, all driven with explicit times and a scripted random source. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "envoy/config/cluster/v3/outlier_detection.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "proxy/core/log.h"
#include "proxy/upstream/outlier.h"

#define MAX_HOSTS 16

/* ---- a fake clock and a scripted random source -------------------------------------------- */

static uint64_t fake_now;
static uint64_t fake_clock(void)
{
    return fake_now;
}

static uint64_t script[64];
static size_t script_len, script_pos;
static uint64_t scripted_random(void)
{
    return script_len ? script[script_pos++ % script_len] : 0;
}

static void set_random(const uint64_t *v, size_t n)
{
    memcpy(script, v, n * sizeof(*v));
    script_len = n;
    script_pos = 0;
}

/* ---- fixture ------------------------------------------------------------------------------ */

struct fx {
    struct rm_outlier_host hosts[MAX_HOSTS];
    struct rm_outlier_host *ptrs[MAX_HOSTS];
    struct rm_outlier *d;
    _Atomic int changes;
};

static void count_change(void *ctx, struct rm_outlier_host *h, bool ejected)
{
    struct fx *f = ctx;
    f->changes += ejected ? 1 : -1;
}

static void fx_init(struct fx *f, const struct rm_outlier_config *cfg, size_t n)
{
    static unsigned seq;
    rm_log_level = RM_LOG_WARN; /* no ejection log lines in the test output */
    memset(f, 0, sizeof(*f));
    for (size_t i = 0; i < n; i++)
        f->ptrs[i] = &f->hosts[i];
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "cluster.odtest%u.", seq++);
    f->d = rm_outlier_new(cfg, prefix, f->ptrs, n);
    cr_assert_not_null(f->d);
    f->d->now_ms = fake_clock;
    f->d->random = scripted_random;
    f->d->on_change = count_change;
    f->d->on_change_ctx = f;
    fake_now = 1000000;
    set_random((const uint64_t[]){0}, 1); /* every roll passes, no jitter */
}

static void fx_free(struct fx *f)
{
    rm_outlier_free(f->d);
    for (size_t i = 0; i < MAX_HOSTS; i++)
        rm_outlier_host_dispose(&f->hosts[i]);
}

static int64_t stat(struct fx *f, enum rm_outlier_stat s)
{
    return rm_stat_value(f->d->stats, s);
}

static uint64_t backoff_of(const struct rm_outlier_host *h)
{
    return (atomic_load(&h->state) & ~RM_OUTLIER_EJECTED) >> RM_OUTLIER_BACKOFF_SHIFT;
}

static uint64_t deadline_of(const struct rm_outlier_host *h)
{
    return atomic_load(&h->state) & RM_OUTLIER_DEADLINE_MASK;
}

static void put_n(struct rm_outlier_host *h, unsigned status, int n)
{
    for (int i = 0; i < n; i++)
        rm_outlier_report_http(h, status);
}

static struct rm_outlier_config cfg_with(void (*tweak)(struct rm_outlier_config *))
{
    struct rm_outlier_config c;
    rm_outlier_config_defaults(&c);
    c.max_ejection_percent = 100;
    if (tweak) tweak(&c);
    return c;
}

/* ---- arithmetic --------------------------------------------------------------------------- */

Test(outlier, ejection_time_grows_with_ejections_and_is_capped)
{
    struct rm_outlier_config c;
    rm_outlier_config_defaults(&c); /* base 30 s, max 300 s */
    uint64_t b = 0;
    for (uint64_t k = 1; k <= 10; k++) {
        b = rm_outlier_backoff_next(&c, b);
        cr_assert_eq(b, k);
        cr_assert_eq(rm_outlier_ejection_ms(&c, b, 0), 30000 * k);
    }
    /* Envoy keeps counting while backoff × base < max + base, so one step past the cap */
    b = rm_outlier_backoff_next(&c, b);
    cr_assert_eq(b, 11);
    cr_assert_eq(rm_outlier_ejection_ms(&c, b, 0), 300000, "capped at max_ejection_time");
    cr_assert_eq(rm_outlier_backoff_next(&c, b), 11, "the multiplier stops growing");
    cr_assert_eq(rm_outlier_ejection_ms(&c, b, 1234), 301234, "jitter comes on top of the cap");
}

Test(outlier, max_ejection_time_defaults_to_at_least_base)
{
    Envoy__Config__Cluster__V3__OutlierDetection pb =
        ENVOY__CONFIG__CLUSTER__V3__OUTLIER_DETECTION__INIT;
    Google__Protobuf__Duration base = GOOGLE__PROTOBUF__DURATION__INIT;
    base.seconds = 400;
    pb.base_ejection_time = &base;
    struct rm_outlier_config c;
    struct rm_error err = {{0}};
    cr_assert_eq(rm_outlier_config_parse(&pb, "od", &c, &err), RM_OK, "%s", err.msg);
    cr_assert_eq(c.max_ejection_time_ms, 400000);
    pb.base_ejection_time = NULL;
    cr_assert_eq(rm_outlier_config_parse(&pb, "od", &c, &err), RM_OK);
    cr_assert_eq(c.max_ejection_time_ms, 300000);
    cr_assert_eq(c.interval_ms, 10000);
    cr_assert_eq(c.consecutive_5xx, 5);
    cr_assert_eq(c.enforcing_consecutive_gateway_failure, 0);
    cr_assert_eq(c.enforcing_failure_percentage, 0);
    cr_assert_eq(c.success_rate_stdev_factor, 1900);
    cr_assert_eq(c.max_ejection_percent, 10);
}

Test(outlier, config_errors_name_the_field)
{
    Envoy__Config__Cluster__V3__OutlierDetection pb =
        ENVOY__CONFIG__CLUSTER__V3__OUTLIER_DETECTION__INIT;
    struct rm_outlier_config c;
    struct rm_error err = {{0}};
    Google__Protobuf__Duration base = GOOGLE__PROTOBUF__DURATION__INIT, max = base;
    base.seconds = 10;
    max.seconds = 5;
    pb.base_ejection_time = &base;
    pb.max_ejection_time = &max;
    cr_assert_eq(rm_outlier_config_parse(&pb, "c[0].outlier_detection", &c, &err), RM_ERR);
    cr_assert(strstr(err.msg, "c[0].outlier_detection.max_ejection_time:"), "%s", err.msg);
    pb.max_ejection_time = NULL;
    Google__Protobuf__UInt32Value pct = GOOGLE__PROTOBUF__UINT32_VALUE__INIT;
    pct.value = 101;
    pb.enforcing_consecutive_5xx = &pct;
    cr_assert_eq(rm_outlier_config_parse(&pb, "od", &c, &err), RM_ERR);
    cr_assert(strstr(err.msg, "od.enforcing_consecutive_5xx: must be at most 100"), "%s", err.msg);
    pb.enforcing_consecutive_5xx = NULL;
    Envoy__Config__Core__V3__TypedExtensionConfig mon =
        ENVOY__CONFIG__CORE__V3__TYPED_EXTENSION_CONFIG__INIT;
    Envoy__Config__Core__V3__TypedExtensionConfig *mons[] = {&mon};
    pb.n_monitors = 1;
    pb.monitors = mons;
    cr_assert_eq(rm_outlier_config_parse(&pb, "od", &c, &err), RM_ERR);
    cr_assert_str_eq(err.msg, "od.monitors: not supported by remora");
}

Test(outlier, jitter_stays_within_max_ejection_time_jitter)
{
    struct fx f;
    struct rm_outlier_config c = cfg_with(NULL);
    c.base_ejection_time_ms = 1000;
    c.max_ejection_time_jitter_ms = 500;
    fx_init(&f, &c, MAX_HOSTS);
    /* each ejection rolls enforcement (0 passes), then the jitter */
    const uint64_t rolls[] = {0, UINT64_MAX, 0, 500, 0, 501, 0, 250};
    set_random(rolls, 8);
    for (int i = 0; i < 4; i++) {
        cr_assert(rm_outlier_detected(f.d, &f.hosts[i], RM_OUTLIER_CONSECUTIVE_5XX, fake_now));
        uint64_t len = deadline_of(&f.hosts[i]) - fake_now;
        cr_assert(len >= 1000 && len <= 1500, "ejection of %llu ms", (unsigned long long)len);
    }
    cr_assert_eq(deadline_of(&f.hosts[1]) - fake_now, 1500, "jitter 500 % 501");
    cr_assert_eq(deadline_of(&f.hosts[2]) - fake_now, 1000, "jitter 501 % 501");
    cr_assert_eq(deadline_of(&f.hosts[3]) - fake_now, 1250);
    fx_free(&f);
}

/* ---- consecutive errors ------------------------------------------------------------------- */

Test(outlier, consecutive_5xx_resets_on_success)
{
    struct fx f;
    struct rm_outlier_config c = cfg_with(NULL);
    fx_init(&f, &c, 2);
    put_n(&f.hosts[0], 500, 4);
    rm_outlier_report_http(&f.hosts[0], 200);
    put_n(&f.hosts[0], 500, 4);
    rm_outlier_report_http(&f.hosts[0], 404); /* not a 5xx: a success for outlier detection */
    put_n(&f.hosts[0], 500, 4);
    cr_assert_not(rm_outlier_ejected(&f.hosts[0]));
    cr_assert_eq(stat(&f, RM_OD_EJECTIONS_DETECTED_CONSECUTIVE_5XX), 0);
    rm_outlier_report_http(&f.hosts[0], 500);
    cr_assert(rm_outlier_ejected(&f.hosts[0]), "5th consecutive 5xx ejects");
    cr_assert_eq(stat(&f, RM_OD_EJECTIONS_DETECTED_CONSECUTIVE_5XX), 1);
    cr_assert_eq(stat(&f, RM_OD_EJECTIONS_ENFORCED_CONSECUTIVE_5XX), 1);
    cr_assert_eq(stat(&f, RM_OD_EJECTIONS_ENFORCED_TOTAL), 1);
    cr_assert_eq(stat(&f, RM_OD_EJECTIONS_ACTIVE), 1);
    cr_assert_eq(atomic_load(&f.d->n_ejected), 1);
    cr_assert_eq(f.changes, 1);
    /* more errors on an ejected host change nothing */
    put_n(&f.hosts[0], 500, 20);
    cr_assert_eq(stat(&f, RM_OD_EJECTIONS_DETECTED_CONSECUTIVE_5XX), 1);
    cr_assert_not(rm_outlier_ejected(&f.hosts[1]));
    fx_free(&f);
}

static void gateway_enforced(struct rm_outlier_config *c)
{
    c->consecutive_gateway_failure = 3;
    c->enforcing_consecutive_gateway_failure = 100;
    c->consecutive_5xx = 100;
}

Test(outlier, consecutive_gateway_failure_counts_502_503_504_only)
{
    struct fx f;
    struct rm_outlier_config c = cfg_with(gateway_enforced);
    fx_init(&f, &c, 2);
    rm_outlier_report_http(&f.hosts[0], 502);
    rm_outlier_report_http(&f.hosts[0], 504);
    rm_outlier_report_http(&f.hosts[0], 500); /* a 5xx but not a gateway error: resets */
    rm_outlier_report_http(&f.hosts[0], 503);
    rm_outlier_report_http(&f.hosts[0], 502);
    cr_assert_not(rm_outlier_ejected(&f.hosts[0]));
    rm_outlier_report_http(&f.hosts[0], 504);
    cr_assert(rm_outlier_ejected(&f.hosts[0]));
    cr_assert_eq(stat(&f, RM_OD_EJECTIONS_ENFORCED_CONSECUTIVE_GATEWAY_FAILURE), 1);
    cr_assert_eq(stat(&f, RM_OD_EJECTIONS_DETECTED_CONSECUTIVE_5XX), 0);
    fx_free(&f);
}

Test(outlier, gateway_failure_detected_but_not_enforced_by_default)
{
    struct fx f;
    struct rm_outlier_config c = cfg_with(NULL); /* consecutive 5 both, gateway enforcing 0 */
    c.consecutive_5xx = 6;
    fx_init(&f, &c, 2);
    put_n(&f.hosts[0], 503, 5);
    cr_assert_not(rm_outlier_ejected(&f.hosts[0]));
    cr_assert_eq(stat(&f, RM_OD_EJECTIONS_DETECTED_CONSECUTIVE_GATEWAY_FAILURE), 1);
    cr_assert_eq(stat(&f, RM_OD_EJECTIONS_ENFORCED_TOTAL), 0);
    cr_assert_eq(atomic_load(&f.d->n_ejected), 0, "an unenforced detection takes no slot");
    rm_outlier_report_http(&f.hosts[0], 503);
    cr_assert(rm_outlier_ejected(&f.hosts[0]), "consecutive_5xx (6) still counts");
    fx_free(&f);
}

Test(outlier, local_origin_not_split_counts_as_5xx)
{
    struct fx f;
    struct rm_outlier_config c = cfg_with(NULL);
    c.consecutive_5xx = 3;
    fx_init(&f, &c, 2);
    rm_outlier_report_local(&f.hosts[0], RM_OUTLIER_CONNECT_FAILURE);
    rm_outlier_report_local(&f.hosts[0], RM_OUTLIER_CONNECT_SUCCESS); /* says nothing */
    rm_outlier_report_local(&f.hosts[0], RM_OUTLIER_TIMEOUT);
    cr_assert_not(rm_outlier_ejected(&f.hosts[0]));
    rm_outlier_report_local(&f.hosts[0], RM_OUTLIER_CONNECT_FAILURE);
    cr_assert(rm_outlier_ejected(&f.hosts[0]));
    cr_assert_eq(stat(&f, RM_OD_EJECTIONS_ENFORCED_CONSECUTIVE_5XX), 1);
    fx_free(&f);
}

static void split(struct rm_outlier_config *c)
{
    c->split_external_local_origin_errors = true;
    c->consecutive_local_origin_failure = 3;
    c->consecutive_5xx = 3;
}

Test(outlier, local_origin_split_has_its_own_counter)
{
    struct fx f;
    struct rm_outlier_config c = cfg_with(split);
    fx_init(&f, &c, 2);
    rm_outlier_report_local(&f.hosts[0], RM_OUTLIER_CONNECT_FAILURE);
    rm_outlier_report_local(&f.hosts[0], RM_OUTLIER_TIMEOUT);
    rm_outlier_report_local(&f.hosts[0], RM_OUTLIER_CONNECT_SUCCESS); /* resets */
    rm_outlier_report_local(&f.hosts[0], RM_OUTLIER_CONNECT_FAILURE);
    put_n(&f.hosts[0], 503, 2); /* external errors do not touch the local counter */
    rm_outlier_report_local(&f.hosts[0], RM_OUTLIER_TIMEOUT);
    cr_assert_not(rm_outlier_ejected(&f.hosts[0]));
    rm_outlier_report_local(&f.hosts[0], RM_OUTLIER_CONNECT_FAILURE);
    cr_assert(rm_outlier_ejected(&f.hosts[0]));
    cr_assert_eq(stat(&f, RM_OD_EJECTIONS_ENFORCED_CONSECUTIVE_LOCAL_ORIGIN_FAILURE), 1);
    cr_assert_eq(stat(&f, RM_OD_EJECTIONS_DETECTED_CONSECUTIVE_5XX), 0);
    /* and external 5xx still eject on their own */
    put_n(&f.hosts[1], 503, 3);
    cr_assert(rm_outlier_ejected(&f.hosts[1]));
    fx_free(&f);
}

/* ---- max_ejection_percent ----------------------------------------------------------------- */

Test(outlier, max_ejection_percent_arithmetic)
{
    struct rm_outlier_config c;
    rm_outlier_config_defaults(&c); /* 10% */
    cr_assert_not(rm_outlier_may_eject(&c, 0, 2), "1 of 2 is 50% > 10%");
    cr_assert(rm_outlier_may_eject(&c, 0, 10), "1 of 10 is 10% ≤ 10%");
    cr_assert_not(rm_outlier_may_eject(&c, 1, 10));
    c.always_eject_one_host = true;
    cr_assert(rm_outlier_may_eject(&c, 0, 2), "always_eject_one_host: the first one goes");
    cr_assert_not(rm_outlier_may_eject(&c, 1, 2));
    c.always_eject_one_host = false;
    c.max_ejection_percent = 50;
    cr_assert(rm_outlier_may_eject(&c, 0, 2));
    cr_assert_not(rm_outlier_may_eject(&c, 1, 2));
    c.max_ejection_percent = 34;
    cr_assert(rm_outlier_may_eject(&c, 0, 3));
    cr_assert_not(rm_outlier_may_eject(&c, 1, 3), "2 of 3 is 66%%");
}

Test(outlier, max_ejection_percent_overflow)
{
    struct fx f;
    struct rm_outlier_config c = cfg_with(NULL);
    c.max_ejection_percent = 50;
    fx_init(&f, &c, 4);
    for (int i = 0; i < 4; i++)
        put_n(&f.hosts[i], 500, 5);
    cr_assert(rm_outlier_ejected(&f.hosts[0]));
    cr_assert(rm_outlier_ejected(&f.hosts[1]));
    cr_assert_not(rm_outlier_ejected(&f.hosts[2]));
    cr_assert_not(rm_outlier_ejected(&f.hosts[3]));
    cr_assert_eq(stat(&f, RM_OD_EJECTIONS_OVERFLOW), 2);
    cr_assert_eq(stat(&f, RM_OD_EJECTIONS_DETECTED_CONSECUTIVE_5XX), 4);
    cr_assert_eq(stat(&f, RM_OD_EJECTIONS_ACTIVE), 2);
    /* the counter was reset after the overflow: 5 more errors are needed to try again */
    put_n(&f.hosts[2], 500, 4);
    cr_assert_eq(stat(&f, RM_OD_EJECTIONS_OVERFLOW), 2);
    fx_free(&f);
}

/* ---- enforcement rolls -------------------------------------------------------------------- */

Test(outlier, enforcing_percentage_uses_the_random_source)
{
    struct fx f;
    struct rm_outlier_config c = cfg_with(NULL);
    c.enforcing_consecutive_5xx = 30;
    c.consecutive_5xx = 1;
    fx_init(&f, &c, 4);
    set_random((const uint64_t[]){130}, 1); /* 130 % 100 = 30: not < 30 */
    rm_outlier_report_http(&f.hosts[0], 500);
    cr_assert_not(rm_outlier_ejected(&f.hosts[0]));
    cr_assert_eq(stat(&f, RM_OD_EJECTIONS_DETECTED_CONSECUTIVE_5XX), 1);
    cr_assert_eq(stat(&f, RM_OD_EJECTIONS_ENFORCED_CONSECUTIVE_5XX), 0);
    cr_assert_eq(stat(&f, RM_OD_EJECTIONS_TOTAL), 1, "deprecated ejections_total counts it");
    set_random((const uint64_t[]){229, 0}, 2); /* 29 < 30 */
    rm_outlier_report_http(&f.hosts[0], 500);
    cr_assert(rm_outlier_ejected(&f.hosts[0]));
    cr_assert_eq(stat(&f, RM_OD_EJECTIONS_ENFORCED_CONSECUTIVE_5XX), 1);
    fx_free(&f);
}

/* ---- un-ejection and the multiplier ------------------------------------------------------- */

static void fast(struct rm_outlier_config *c)
{
    c->interval_ms = 500;
    c->base_ejection_time_ms = 1000;
    c->max_ejection_time_ms = 2500;
    c->consecutive_5xx = 2;
}

Test(outlier, uneject_after_ejection_time_and_multiplier_decay)
{
    struct fx f;
    struct rm_outlier_config c = cfg_with(fast);
    fx_init(&f, &c, 2);
    struct rm_outlier_host *h = &f.hosts[0];
    uint64_t t0 = fake_now;
    put_n(h, 500, 2);
    cr_assert(rm_outlier_ejected(h));
    cr_assert_eq(backoff_of(h), 1);
    rm_outlier_tick(f.d, t0 + 999);
    cr_assert(rm_outlier_ejected(h), "still ejected 1 ms before base_ejection_time");
    rm_outlier_tick(f.d, t0 + 1000);
    cr_assert_not(rm_outlier_ejected(h));
    cr_assert_eq(stat(&f, RM_OD_EJECTIONS_ACTIVE), 0);
    cr_assert_eq(atomic_load(&f.d->n_ejected), 0);
    cr_assert_eq(f.changes, 0);
    cr_assert_eq(backoff_of(h), 1, "no decay in the tick that un-ejects");
    /* counters were reset on un-ejection: one error is not enough */
    rm_outlier_report_http(h, 500);
    cr_assert_not(rm_outlier_ejected(h));
    /* second ejection right away: twice as long */
    fake_now = t0 + 1200;
    rm_outlier_report_http(h, 500);
    cr_assert(rm_outlier_ejected(h));
    cr_assert_eq(backoff_of(h), 2);
    rm_outlier_tick(f.d, t0 + 1200 + 1999);
    cr_assert(rm_outlier_ejected(h));
    rm_outlier_tick(f.d, t0 + 1200 + 2000);
    cr_assert_not(rm_outlier_ejected(h));
    /* third and fourth: capped at max_ejection_time (2.5 s) */
    uint64_t t1 = t0 + 3200;
    fake_now = t1;
    put_n(h, 500, 2);
    cr_assert_eq(backoff_of(h), 3);
    cr_assert_eq(deadline_of(h), t1 + 2500);
    rm_outlier_tick(f.d, t1 + 2500);
    cr_assert_not(rm_outlier_ejected(h));
    /* healthy intervals: the multiplier decays by one per tick a full interval after the
     * un-ejection */
    uint64_t t2 = t1 + 2500;
    rm_outlier_tick(f.d, t2 + 499);
    cr_assert_eq(backoff_of(h), 3);
    rm_outlier_tick(f.d, t2 + 500);
    cr_assert_eq(backoff_of(h), 2);
    rm_outlier_tick(f.d, t2 + 1000);
    rm_outlier_tick(f.d, t2 + 1500);
    rm_outlier_tick(f.d, t2 + 2000);
    cr_assert_eq(backoff_of(h), 0);
    fake_now = t2 + 2100;
    put_n(h, 500, 2);
    cr_assert_eq(deadline_of(h), t2 + 2100 + 1000, "back to base_ejection_time");
    fx_free(&f);
}

/* ---- success rate ------------------------------------------------------------------------- */

Test(outlier, success_rate_threshold_math)
{
    const double rates[] = {50, 100, 100, 100, 100};
    double mean, thr;
    rm_outlier_sr_threshold(rates, 5, 1900, &mean, &thr);
    cr_assert_float_eq(mean, 90.0, 1e-9);
    cr_assert_float_eq(thr, 52.0, 1e-9, "mean − 1.9 × stdev(20)");
    rm_outlier_sr_threshold(rates, 5, 1000, &mean, &thr);
    cr_assert_float_eq(thr, 70.0, 1e-9);
    const double same[] = {80, 80, 80};
    rm_outlier_sr_threshold(same, 3, 1900, &mean, &thr);
    cr_assert_float_eq(thr, 80.0, 1e-9, "no spread: threshold is the mean");
}

static void sr(struct rm_outlier_config *c)
{
    c->consecutive_5xx = 1000000;
    c->consecutive_gateway_failure = 1000000;
}

/* <ok> successes and <bad> 500s on host <i>. */
static void traffic(struct fx *f, size_t i, int ok, int bad)
{
    put_n(&f->hosts[i], 200, ok);
    put_n(&f->hosts[i], 500, bad);
}

Test(outlier, success_rate_ejects_below_threshold)
{
    struct fx f;
    struct rm_outlier_config c = cfg_with(sr);
    fx_init(&f, &c, 6);
    traffic(&f, 0, 50, 50); /* 50% */
    for (size_t i = 1; i < 5; i++)
        traffic(&f, i, 100, 0);
    traffic(&f, 5, 10, 89); /* 99 requests: under success_rate_request_volume (100) */
    rm_outlier_tick(f.d, fake_now);
    cr_assert(rm_outlier_ejected(&f.hosts[0]));
    cr_assert_not(rm_outlier_ejected(&f.hosts[5]), "too few requests to be judged");
    for (size_t i = 1; i < 5; i++)
        cr_assert_not(rm_outlier_ejected(&f.hosts[i]));
    cr_assert_float_eq(f.d->sr_average[RM_OUTLIER_EXTERNAL], 90.0, 1e-9);
    cr_assert_float_eq(f.d->sr_threshold[RM_OUTLIER_EXTERNAL], 52.0, 1e-9);
    cr_assert_float_eq(f.hosts[0].x->success_rate[RM_OUTLIER_EXTERNAL], 50.0, 1e-9);
    cr_assert_float_eq(f.hosts[5].x->success_rate[RM_OUTLIER_EXTERNAL], 10.0 * 100 / 99, 1e-9,
                       "shown: at least failure_percentage_request_volume (50)");
    cr_assert_eq(stat(&f, RM_OD_EJECTIONS_ENFORCED_SUCCESS_RATE), 1);
    cr_assert_eq(stat(&f, RM_OD_EJECTIONS_DETECTED_SUCCESS_RATE), 1);
    /* next interval without traffic: counters were swapped to zero, nothing is computed */
    rm_outlier_tick(f.d, fake_now + 1);
    cr_assert_float_eq(f.d->sr_average[RM_OUTLIER_EXTERNAL], -1, 1e-9);
    cr_assert_float_eq(f.hosts[1].x->success_rate[RM_OUTLIER_EXTERNAL], -1, 1e-9);
    fx_free(&f);
}

Test(outlier, success_rate_needs_minimum_hosts)
{
    struct fx f;
    struct rm_outlier_config c = cfg_with(sr);
    fx_init(&f, &c, 5);
    traffic(&f, 0, 0, 100);
    for (size_t i = 1; i < 4; i++)
        traffic(&f, i, 100, 0);
    /* host 4 has no traffic: only 4 valid hosts < success_rate_minimum_hosts (5) */
    rm_outlier_tick(f.d, fake_now);
    cr_assert_not(rm_outlier_ejected(&f.hosts[0]));
    cr_assert_float_eq(f.d->sr_threshold[RM_OUTLIER_EXTERNAL], -1, 1e-9);
    fx_free(&f);
}

/* ---- failure percentage ------------------------------------------------------------------- */

static void fp(struct rm_outlier_config *c)
{
    sr(c);
    c->enforcing_success_rate = 0;
    c->enforcing_failure_percentage = 100;
    c->failure_percentage_minimum_hosts = 3;
}

Test(outlier, failure_percentage_ejects_at_threshold)
{
    struct fx f;
    struct rm_outlier_config c = cfg_with(fp); /* threshold 85%, volume 50 */
    fx_init(&f, &c, 4);
    traffic(&f, 0, 15, 85); /* exactly 85% failures: ejected (≥) */
    traffic(&f, 1, 16, 84);
    traffic(&f, 2, 50, 0);
    traffic(&f, 3, 5, 44); /* 49 requests: under the volume */
    rm_outlier_tick(f.d, fake_now);
    cr_assert(rm_outlier_ejected(&f.hosts[0]));
    cr_assert_not(rm_outlier_ejected(&f.hosts[1]));
    cr_assert_not(rm_outlier_ejected(&f.hosts[3]));
    cr_assert_eq(stat(&f, RM_OD_EJECTIONS_ENFORCED_FAILURE_PERCENTAGE), 1);
    cr_assert_eq(stat(&f, RM_OD_EJECTIONS_DETECTED_FAILURE_PERCENTAGE), 1);
    cr_assert_eq(stat(&f, RM_OD_EJECTIONS_DETECTED_SUCCESS_RATE), 0,
                 "4 hosts < success_rate_minimum_hosts");
    fx_free(&f);
}

Test(outlier, failure_percentage_local_origin_when_split)
{
    struct fx f;
    struct rm_outlier_config c = cfg_with(fp);
    c.split_external_local_origin_errors = true;
    c.consecutive_local_origin_failure = 1000000;
    c.enforcing_failure_percentage_local_origin = 100;
    fx_init(&f, &c, 3);
    for (int i = 0; i < 60; i++) {
        rm_outlier_report_local(&f.hosts[0], RM_OUTLIER_CONNECT_FAILURE);
        rm_outlier_report_local(&f.hosts[1], RM_OUTLIER_CONNECT_SUCCESS);
        rm_outlier_report_local(&f.hosts[2], RM_OUTLIER_CONNECT_SUCCESS);
    }
    rm_outlier_tick(f.d, fake_now);
    cr_assert(rm_outlier_ejected(&f.hosts[0]));
    cr_assert_eq(stat(&f, RM_OD_EJECTIONS_ENFORCED_LOCAL_ORIGIN_FAILURE_PERCENTAGE), 1);
    cr_assert_eq(stat(&f, RM_OD_EJECTIONS_ENFORCED_FAILURE_PERCENTAGE), 0);
    cr_assert_float_eq(f.hosts[1].x->success_rate[RM_OUTLIER_LOCAL], 100.0, 1e-9);
    cr_assert_float_eq(f.hosts[1].x->success_rate[RM_OUTLIER_EXTERNAL], -1, 1e-9);
    fx_free(&f);
}

Test(outlier, interval_detectors_respect_max_ejection_percent)
{
    struct fx f;
    struct rm_outlier_config c = cfg_with(fp);
    c.max_ejection_percent = 40;
    fx_init(&f, &c, 5);
    for (size_t i = 0; i < 3; i++)
        traffic(&f, i, 0, 100);
    traffic(&f, 3, 100, 0);
    traffic(&f, 4, 100, 0);
    rm_outlier_tick(f.d, fake_now);
    cr_assert_eq(atomic_load(&f.d->n_ejected), 2);
    cr_assert_eq(stat(&f, RM_OD_EJECTIONS_OVERFLOW), 1);
    fx_free(&f);
}

/* ---- threads ------------------------------------------------------------------------------ */

static uint64_t zero_random(void)
{
    return 0;
}

struct worker_arg {
    struct fx *f;
    unsigned shard;
};

static void *hammer(void *p)
{
    struct worker_arg *a = p;
    rm_stats_shard = a->shard;
    for (int round = 0; round < 2000; round++)
        for (size_t i = 0; i < 8; i++)
            rm_outlier_report_http(&a->f->hosts[i], round % 7 == 6 ? 200 : 503);
    return NULL;
}

Test(outlier, concurrent_reports_never_overshoot_the_limit)
{
    struct fx f;
    struct rm_outlier_config c = cfg_with(NULL);
    c.max_ejection_percent = 50;
    c.consecutive_5xx = 3;
    fx_init(&f, &c, 8);
    f.d->random = zero_random; /* shared by the threads */
    pthread_t t[4];
    struct worker_arg args[4];
    for (unsigned i = 0; i < 4; i++) {
        args[i] = (struct worker_arg){&f, i + 1};
        pthread_create(&t[i], NULL, hammer, &args[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    size_t ejected = 0;
    for (size_t i = 0; i < 8; i++)
        ejected += rm_outlier_ejected(&f.hosts[i]);
    cr_assert_eq(ejected, 4, "exactly max_ejection_percent of the hosts");
    cr_assert_eq(atomic_load(&f.d->n_ejected), 4);
    cr_assert_eq(stat(&f, RM_OD_EJECTIONS_ACTIVE), 4);
    cr_assert_eq(stat(&f, RM_OD_EJECTIONS_ENFORCED_TOTAL), 4);
    cr_assert_eq(f.changes, 4);
    /* interval counters: every report counted once (the ejected hosts' too) */
    uint64_t v = atomic_load(&f.hosts[0].x->interval_counts[RM_OUTLIER_EXTERNAL]);
    cr_assert_eq(v >> 32, 4 * 2000);
    cr_assert_eq(v & 0xffffffff, 4 * (2000 / 7));
    fx_free(&f);
}
