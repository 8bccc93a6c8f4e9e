/* remora-load: log-linear histogram; see histogram.h for the contract. */
#include "bench/load/histogram.h"

#include <math.h>
#include <string.h>

#define SUB (UINT64_C(1) << RML_HIST_SUB_BITS) /* 128 */

void rml_hist_init(struct rml_hist *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

/* Bucket index: values < 2*SUB map to themselves; a value whose top bit is k (k >= 7) is
 * shifted right by k-7 so that it lands in [SUB, 2*SUB), and each shift adds SUB buckets. */
unsigned rml_hist_index(uint64_t v)
{
    if (v > RML_HIST_MAX) v = RML_HIST_MAX;
    if (v < 2 * SUB) return (unsigned)v;
    unsigned k = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = k - RML_HIST_SUB_BITS;
    return (unsigned)((shift << RML_HIST_SUB_BITS) + (v >> shift));
}

uint64_t rml_hist_bucket_low(unsigned idx)
{
    if (idx < 2 * SUB) return idx;
    unsigned shift = (idx >> RML_HIST_SUB_BITS) - 1;
    uint64_t sub = idx - ((uint64_t)shift << RML_HIST_SUB_BITS);
    return sub << shift;
}

uint64_t rml_hist_bucket_high(unsigned idx)
{
    if (idx < 2 * SUB) return idx;
    unsigned shift = (idx >> RML_HIST_SUB_BITS) - 1;
    return rml_hist_bucket_low(idx) + (UINT64_C(1) << shift) - 1;
}

void rml_hist_record_n(struct rml_hist *h, uint64_t v, uint64_t n)
{
    if (n == 0) return;
    h->counts[rml_hist_index(v)] += n;
    h->count += n;
    if (v < h->min) h->min = v;
    if (v > h->max) h->max = v;
    double d = (double)v;
    h->sum += d * (double)n;
    h->sumsq += d * d * (double)n;
}

void rml_hist_record(struct rml_hist *h, uint64_t v)
{
    h->counts[rml_hist_index(v)]++;
    h->count++;
    if (v < h->min) h->min = v;
    if (v > h->max) h->max = v;
    double d = (double)v;
    h->sum += d;
    h->sumsq += d * d;
}

void rml_hist_merge(struct rml_hist *dst, const struct rml_hist *src)
{
    if (src->count == 0) return;
    for (unsigned i = 0; i < RML_HIST_BUCKETS; i++)
        dst->counts[i] += src->counts[i];
    dst->count += src->count;
    if (src->min < dst->min) dst->min = src->min;
    if (src->max > dst->max) dst->max = src->max;
    dst->sum += src->sum;
    dst->sumsq += src->sumsq;
}

uint64_t rml_hist_percentile(const struct rml_hist *h, double p)
{
    if (h->count == 0) return 0;
    if (p <= 0) return h->min;
    if (p >= 100) return h->max;
    uint64_t rank = (uint64_t)ceil(p / 100.0 * (double)h->count);
    if (rank < 1) rank = 1;
    if (rank > h->count) rank = h->count;
    uint64_t seen = 0;
    for (unsigned i = 0; i < RML_HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t lo = rml_hist_bucket_low(i), hi = rml_hist_bucket_high(i);
            uint64_t mid = lo + (hi - lo) / 2;
            if (mid < h->min) mid = h->min;
            if (mid > h->max) mid = h->max;
            return mid;
        }
    }
    return h->max;
}

double rml_hist_mean(const struct rml_hist *h)
{
    return h->count ? h->sum / (double)h->count : 0.0;
}

double rml_hist_stdev(const struct rml_hist *h)
{
    if (h->count == 0) return 0.0;
    double mean = h->sum / (double)h->count;
    double var = h->sumsq / (double)h->count - mean * mean;
    return var > 0 ? sqrt(var) : 0.0;
}
