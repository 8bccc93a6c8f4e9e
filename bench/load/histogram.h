/* remora-load: log-linear latency histogram (HdrHistogram-style).
 *
 * Values are unsigned 64-bit integers (remora-load records nanoseconds).  Values below 256 are
 * counted exactly; above, each power-of-two range [2^k, 2^(k+1)) is split into 128 linear
 * sub-buckets, so a bucket's width is at most 1/128 of its lower bound: a reported quantile is
 * within 0.4% of the true one (the bucket midpoint is reported) and never outside [min, max].
 * Values up to RML_HIST_MAX (2^40 - 1, about 18 minutes in ns) are tracked; larger values are
 * counted in the last bucket (min/max/mean stay exact).
 *
 * Recording is O(1) and allocation-free; a histogram is a plain struct (about 35 KiB) owned
 * by the caller, used by one thread at a time; per-thread histograms are combined with
 * rml_hist_merge().  Self-contained: only libc (the unit test #includes histogram.c).
 */
#ifndef REMORA_BENCH_LOAD_HISTOGRAM_H
#define REMORA_BENCH_LOAD_HISTOGRAM_H

#include <stdint.h>

#define RML_HIST_SUB_BITS 7 /* 128 linear sub-buckets per power of two */
#define RML_HIST_MAX_BITS 40
#define RML_HIST_MAX ((UINT64_C(1) << RML_HIST_MAX_BITS) - 1)
#define RML_HIST_BUCKETS                                                                           \
    (((RML_HIST_MAX_BITS - RML_HIST_SUB_BITS) << RML_HIST_SUB_BITS) + (1 << RML_HIST_SUB_BITS))

struct rml_hist {
    uint64_t count;
    uint64_t min; /* UINT64_MAX while empty */
    uint64_t max;
    double sum;   /* of the recorded values, exact up to 2^53 */
    double sumsq; /* for the standard deviation */
    uint64_t counts[RML_HIST_BUCKETS];
};

/* Empty the histogram (caller's storage; nothing to dispose). */
void rml_hist_init(struct rml_hist *h);

/* Count one value (or `n` equal values).  O(1), never fails. */
void rml_hist_record(struct rml_hist *h, uint64_t v);
void rml_hist_record_n(struct rml_hist *h, uint64_t v, uint64_t n);

/* Add every count of `src` into `dst` (src is not changed). */
void rml_hist_merge(struct rml_hist *dst, const struct rml_hist *src);

/* The value at percentile `p` (0..100): the smallest bucket holding at least
 * ceil(p/100 * count) values, reported as its midpoint clamped to [min, max].
 * p <= 0 gives min, p >= 100 gives max; an empty histogram gives 0. */
uint64_t rml_hist_percentile(const struct rml_hist *h, double p);

/* Exact mean and (population) standard deviation of the recorded values; 0 when empty. */
double rml_hist_mean(const struct rml_hist *h);
double rml_hist_stdev(const struct rml_hist *h);

/* Bucket geometry, exposed for tests: the bucket index of `v`, and the lowest and highest
 * values that share bucket `idx`. */
unsigned rml_hist_index(uint64_t v);
uint64_t rml_hist_bucket_low(unsigned idx);
uint64_t rml_hist_bucket_high(unsigned idx);

#endif
