/* Unit tests for bench/load/histogram.c: bucket geometry, quantile accuracy (<= 1%) on uniform
 * and exponential samples against their exact empirical quantiles, merge, extremes. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>

#include "bench/load/histogram.c"

static uint64_t rng_state;

static uint64_t rng_next(void) /* splitmix64: deterministic, good enough for sampling */
{
    uint64_t z = (rng_state += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static double rng_unit(void) /* (0, 1) */
{
    return ((double)(rng_next() >> 11) + 0.5) / 9007199254740992.0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The exact value of rank ceil(p/100*n) in sorted `v`, same definition as the histogram. */
static uint64_t exact_quantile(const uint64_t *v, size_t n, double p)
{
    size_t rank = (size_t)ceil(p / 100.0 * (double)n);
    if (rank < 1) rank = 1;
    return v[rank - 1];
}

static void check_quantiles(uint64_t *v, size_t n, const char *what)
{
    struct rml_hist *h = malloc(sizeof(*h));
    cr_assert_not_null(h);
    rml_hist_init(h);
    for (size_t i = 0; i < n; i++)
        rml_hist_record(h, v[i]);
    qsort(v, n, sizeof(*v), cmp_u64);
    static const double ps[] = {1, 10, 25, 50, 75, 90, 99, 99.9, 99.99, 100};
    for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) {
        double want = (double)exact_quantile(v, n, ps[i]);
        double got = (double)rml_hist_percentile(h, ps[i]);
        double err = fabs(got - want) / (want > 0 ? want : 1);
        cr_expect(err <= 0.01, "%s p%g: got %.0f want %.0f (error %.4f)", what, ps[i], got, want,
                  err);
    }
    cr_expect_eq(h->count, n);
    cr_expect_eq(rml_hist_percentile(h, 0), v[0]);
    cr_expect_eq(rml_hist_percentile(h, 100), v[n - 1]);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double)v[i];
    cr_expect(fabs(rml_hist_mean(h) - sum / (double)n) <= 1e-6 * (sum / (double)n) + 1e-9);
    free(h);
}

Test(bench_histogram, geometry_contiguous_and_fine)
{
    uint64_t expect_low = 0;
    for (unsigned i = 0; i < RML_HIST_BUCKETS; i++) {
        uint64_t lo = rml_hist_bucket_low(i), hi = rml_hist_bucket_high(i);
        cr_assert_eq(lo, expect_low, "bucket %u starts at %llu, want %llu", i,
                     (unsigned long long)lo, (unsigned long long)expect_low);
        cr_assert(hi >= lo);
        cr_assert_eq(rml_hist_index(lo), i);
        cr_assert_eq(rml_hist_index(hi), i);
        /* relative width <= 1/128 once values are not counted exactly */
        cr_assert((hi - lo + 1) * 128 <= (lo > 0 ? lo : 1) || hi == lo, "bucket %u too wide", i);
        expect_low = hi + 1;
    }
    cr_assert_eq(expect_low - 1, RML_HIST_MAX);
}

Test(bench_histogram, uniform_quantiles_within_1pct)
{
    size_t n = 200000;
    uint64_t *v = malloc(n * sizeof(*v));
    rng_state = 42;
    for (size_t i = 0; i < n; i++) /* uniform 1 us .. 100 ms in ns */
        v[i] = 1000 + (uint64_t)(rng_unit() * 99999000.0);
    check_quantiles(v, n, "uniform");
    /* and against the analytic quantiles of U(1e3, 1e8) */
    struct rml_hist *h = malloc(sizeof(*h));
    rml_hist_init(h);
    for (size_t i = 0; i < n; i++)
        rml_hist_record(h, v[i]);
    double p50 = (double)rml_hist_percentile(h, 50), p90 = (double)rml_hist_percentile(h, 90);
    cr_expect(fabs(p50 - 50000500.0) / 50000500.0 < 0.01, "p50 %.0f", p50);
    cr_expect(fabs(p90 - 90000100.0) / 90000100.0 < 0.01, "p90 %.0f", p90);
    free(h);
    free(v);
}

Test(bench_histogram, exponential_quantiles_within_1pct)
{
    size_t n = 200000;
    double mean = 2e6; /* 2 ms in ns */
    uint64_t *v = malloc(n * sizeof(*v));
    rng_state = 7;
    for (size_t i = 0; i < n; i++)
        v[i] = (uint64_t)(-log(rng_unit()) * mean);
    check_quantiles(v, n, "exponential");
    /* analytic: q(p) = -mean * ln(1 - p) */
    struct rml_hist *h = malloc(sizeof(*h));
    rml_hist_init(h);
    rng_state = 7;
    for (size_t i = 0; i < n; i++)
        rml_hist_record(h, (uint64_t)(-log(rng_unit()) * mean));
    static const double ps[] = {50, 90, 99};
    for (size_t i = 0; i < 3; i++) {
        double want = -mean * log(1 - ps[i] / 100), got = (double)rml_hist_percentile(h, ps[i]);
        cr_expect(fabs(got - want) / want < 0.02, "p%g %.0f vs %.0f", ps[i], got, want);
    }
    cr_expect(fabs(rml_hist_mean(h) - mean) / mean < 0.01);
    cr_expect(fabs(rml_hist_stdev(h) - mean) / mean < 0.02);
    free(h);
    free(v);
}

Test(bench_histogram, wide_log_uniform_within_1pct)
{
    size_t n = 100000;
    uint64_t *v = malloc(n * sizeof(*v));
    rng_state = 99;
    for (size_t i = 0; i < n; i++) /* 10 ns .. 100 s, log-uniform */
        v[i] = (uint64_t)exp(log(10.0) + rng_unit() * (log(1e11) - log(10.0)));
    check_quantiles(v, n, "log-uniform");
    free(v);
}

Test(bench_histogram, merge_equals_single)
{
    struct rml_hist *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b)), *all = malloc(sizeof(*all));
    rml_hist_init(a);
    rml_hist_init(b);
    rml_hist_init(all);
    rng_state = 3;
    for (int i = 0; i < 50000; i++) {
        uint64_t x = rng_next() % 5000000000u;
        rml_hist_record(i % 3 ? a : b, x);
        rml_hist_record(all, x);
    }
    struct rml_hist *m = malloc(sizeof(*m));
    rml_hist_init(m);
    rml_hist_merge(m, a);
    rml_hist_merge(m, b);
    cr_assert_eq(m->count, all->count);
    cr_assert_eq(m->min, all->min);
    cr_assert_eq(m->max, all->max);
    cr_assert_eq(memcmp(m->counts, all->counts, sizeof(m->counts)), 0);
    for (double p = 1; p < 100; p += 7.5)
        cr_assert_eq(rml_hist_percentile(m, p), rml_hist_percentile(all, p));
    /* merging an empty histogram changes nothing */
    struct rml_hist *e = malloc(sizeof(*e));
    rml_hist_init(e);
    rml_hist_merge(m, e);
    cr_assert_eq(m->min, all->min);
    free(a);
    free(b);
    free(all);
    free(m);
    free(e);
}

Test(bench_histogram, extremes)
{
    struct rml_hist *h = malloc(sizeof(*h));
    rml_hist_init(h);
    cr_assert_eq(rml_hist_percentile(h, 50), 0);
    cr_assert_eq(rml_hist_mean(h), 0);
    cr_assert_eq(rml_hist_stdev(h), 0);
    rml_hist_record(h, 0);
    cr_assert_eq(rml_hist_percentile(h, 50), 0);
    cr_assert_eq(rml_hist_percentile(h, 100), 0);
    rml_hist_record(h, UINT64_MAX); /* beyond the range: last bucket, exact max */
    cr_assert_eq(h->max, UINT64_MAX);
    cr_assert_eq(rml_hist_percentile(h, 100), UINT64_MAX);
    cr_assert_eq(rml_hist_index(UINT64_MAX), RML_HIST_BUCKETS - 1);
    cr_assert_eq(rml_hist_index(RML_HIST_MAX), RML_HIST_BUCKETS - 1);
    /* 100 s in ns is tracked with <= 1% error */
    rml_hist_init(h);
    rml_hist_record(h, 100000000000ull);
    rml_hist_record(h, 100000000000ull + 1);
    rml_hist_record(h, 1);
    double got = (double)rml_hist_percentile(h, 50);
    cr_expect(fabs(got - 1e11) / 1e11 < 0.01, "%.0f", got);
    /* small values are exact */
    rml_hist_init(h);
    for (uint64_t x = 0; x < 256; x++)
        rml_hist_record(h, x);
    cr_assert_eq(rml_hist_percentile(h, 50), 127);
    cr_assert_eq(rml_hist_percentile(h, 1), 2);
    /* record_n is n records */
    rml_hist_init(h);
    rml_hist_record_n(h, 1000, 10);
    rml_hist_record_n(h, 5, 0);
    cr_assert_eq(h->count, 10);
    cr_assert_eq(h->min, 1000);
    cr_expect(fabs(rml_hist_mean(h) - 1000) < 1e-9);
    free(h);
}
