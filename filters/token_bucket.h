/* A token bucket shared by threads without locks (envoy.type.v3.TokenBucket semantics).
 *
 * The bucket starts full (max_tokens) at <start>; every fill_interval after that, tokens_per_fill
 * tokens are added, never beyond max_tokens, exactly as a refill timer firing at start + k *
 * fill_interval would (Envoy's local rate limiter).  No timer runs: refills are computed from the
 * caller's monotonic clock reading when a token is taken.  The state (refill count since start,
 * tokens) is one 64-bit word updated by compare-and-swap, so every token is handed out exactly
 * once however many threads take them; readers of slightly different clocks never refill twice
 * (the refill count only moves forward). */
#ifndef RM_FILTERS_TOKEN_BUCKET_H
#define RM_FILTERS_TOKEN_BUCKET_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct rm_token_bucket {
    uint32_t max_tokens;       /* > 0 */
    uint32_t tokens_per_fill;  /* > 0 */
    uint64_t fill_interval_ns; /* > 0 */
    uint64_t start_ns;         /* clock reading of the first interval's start */
    _Atomic uint64_t state;    /* refills since start (high 32 bits, wrapping) | tokens (low 32) */
};

/** Fill <b> (max_tokens tokens) as of <now_ns>.  Not thread-safe: before sharing <b>. */
void rm_token_bucket_init(struct rm_token_bucket *b, uint32_t max_tokens, uint32_t tokens_per_fill,
                          uint64_t fill_interval_ns, uint64_t now_ns);

/** Take one token at time <now_ns> (any monotonic clock, the same for every caller).  Returns
 *  true if there was one.  *remaining (may be NULL) gets the tokens left after this call.
 *  Thread-safe, lock-free. */
bool rm_token_bucket_consume(struct rm_token_bucket *b, uint64_t now_ns, uint32_t *remaining);

/** Tokens in the bucket at <now_ns> (refills counted, nothing taken). */
uint32_t rm_token_bucket_tokens(const struct rm_token_bucket *b, uint64_t now_ns);

/** Envoy's x-ratelimit-reset: whole seconds of fill_interval minus the whole seconds elapsed since
 *  the last refill point before <now_ns> (fill_interval < 1 s gives 0). */
uint64_t rm_token_bucket_reset_seconds(const struct rm_token_bucket *b, uint64_t now_ns);

/** CLOCK_MONOTONIC in nanoseconds (the clock the filters pass). */
uint64_t rm_monotonic_ns(void);

#endif
