#include "filters/token_bucket.h"

#include <time.h>

#define TOKENS(s) ((uint32_t)((s)&0xffffffffu))
#define EPOCH(s) ((uint32_t)((s) >> 32))
#define STATE(e, t) (((uint64_t)(e) << 32) | (uint64_t)(t))

uint64_t rm_monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void rm_token_bucket_init(struct rm_token_bucket *b, uint32_t max_tokens, uint32_t tokens_per_fill,
                          uint64_t fill_interval_ns, uint64_t now_ns)
{
    b->max_tokens = max_tokens;
    b->tokens_per_fill = tokens_per_fill ? tokens_per_fill : 1;
    b->fill_interval_ns = fill_interval_ns ? fill_interval_ns : 1;
    b->start_ns = now_ns;
    atomic_init(&b->state, STATE(0, max_tokens));
}

/* Refill points passed at <now_ns>, modulo 2^32 (a clock reading before start counts as 0). */
static uint32_t epoch_at(const struct rm_token_bucket *b, uint64_t now_ns)
{
    return now_ns > b->start_ns ? (uint32_t)((now_ns - b->start_ns) / b->fill_interval_ns) : 0;
}

/* <s> brought forward to refill point <e>: tokens added for every point since its own.  A
 * point not after the state's (an older clock reading on another thread) changes nothing. */
static uint64_t refill(const struct rm_token_bucket *b, uint64_t s, uint32_t e)
{
    int32_t d = (int32_t)(e - EPOCH(s)); /* wrapping difference */
    if (d <= 0) return s;
    uint64_t tokens = TOKENS(s) + (uint64_t)(uint32_t)d * b->tokens_per_fill;
    if (tokens > b->max_tokens) tokens = b->max_tokens;
    return STATE(e, tokens);
}

bool rm_token_bucket_consume(struct rm_token_bucket *b, uint64_t now_ns, uint32_t *remaining)
{
    uint32_t e = epoch_at(b, now_ns);
    uint64_t old = atomic_load_explicit(&b->state, memory_order_relaxed);
    for (;;) {
        uint64_t cur = refill(b, old, e);
        if (TOKENS(cur) == 0) {
            /* nothing to take; nothing to store either: the refill point is recomputed by the
             * next caller, and a full bucket never needs storing */
            if (remaining) *remaining = 0;
            return false;
        }
        uint64_t next = cur - 1; /* one token, same refill point */
        if (atomic_compare_exchange_weak_explicit(&b->state, &old, next, memory_order_relaxed,
                                                  memory_order_relaxed)) {
            if (remaining) *remaining = TOKENS(next);
            return true;
        }
    }
}

uint32_t rm_token_bucket_tokens(const struct rm_token_bucket *b, uint64_t now_ns)
{
    uint64_t s = atomic_load_explicit(&b->state, memory_order_relaxed);
    return TOKENS(refill(b, s, epoch_at(b, now_ns)));
}

uint64_t rm_token_bucket_reset_seconds(const struct rm_token_bucket *b, uint64_t now_ns)
{
    uint64_t since_start = now_ns > b->start_ns ? now_ns - b->start_ns : 0;
    uint64_t since_fill = since_start % b->fill_interval_ns;
    uint64_t whole = since_fill / 1000000000u * 1000000000u;
    return (b->fill_interval_ns - whole) / 1000000000u;
}
