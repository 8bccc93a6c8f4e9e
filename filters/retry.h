/* The router's retry state for one request: Envoy's RetryStateImpl.
 *
 * Decisions are split in two, as Envoy does:
 *  1. "would this outcome be retried?" — rm_retry_check_headers() for a response,
 *     rm_retry_check_failure() for a reset, connect failure or per-try timeout; pure functions
 *     of the policy, the request's x-envoy-* headers and the outcome;
 *  2. "may we?" — rm_retry_should(): the retry count (num_retries / x-envoy-max-retries) and
 *     the cluster's max_retries or retry budget; it keeps the stats
 *     (upstream_rq_retry, _success, _limit_exceeded, _overflow).
 * A scheduled retry holds one max_retries slot until the outcome of the retried attempt is
 * judged (the next rm_retry_should()) or the request ends (rm_retry_finish()).
 *
 * Back-off is Envoy's fully jittered exponential: the n-th retry waits a random time in
 * [0, (2^n - 1) * base), the range growing until it first passes max, the wait capped at max.
 *
 * State lives in the stream's arena; no allocation otherwise. */
#ifndef RM_FILTERS_RETRY_H
#define RM_FILTERS_RETRY_H

#include <stdbool.h>
#include <stdint.h>

#include "filters/retry_policy.h"
#include "proxy/core/arena.h"
#include "proxy/http/headers.h"

struct rm_cb;
struct rm_stats;

#define RM_RETRY_MAX_HDR_CODES 16 /* x-envoy-retriable-status-codes entries kept */
#define RM_RETRY_MAX_HDR_NAMES 8  /* x-envoy-retriable-header-names entries kept */

/** How an attempt failed without a response. */
enum rm_retry_failure {
    RM_RETRY_FAIL_CONNECT,  /* connect failure or connect timeout */
    RM_RETRY_FAIL_RESET,    /* reset, disconnect or protocol error after the stream opened */
    RM_RETRY_FAIL_REFUSED,  /* HTTP/2 REFUSED_STREAM */
    RM_RETRY_FAIL_TIMEOUT,  /* per-try (idle) timeout: a local reset */
    RM_RETRY_FAIL_OVERFLOW, /* circuit breaker or stream limit: never retried */
};

enum rm_retry_status {
    RM_RETRY_STATUS_NO,       /* not retriable: use this outcome */
    RM_RETRY_STATUS_YES,      /* retry after rm_retry_backoff_ms() */
    RM_RETRY_STATUS_LIMIT,    /* retriable, but the retries are used up (flag URX) */
    RM_RETRY_STATUS_OVERFLOW, /* retriable, but max_retries / the budget is reached (flag UO) */
};

/** Request headers that change retries and timeouts (all consumed by the router). */
struct rm_retry_headers {
    struct rm_str retry_on;      /* x-envoy-retry-on */
    struct rm_str grpc_retry_on; /* x-envoy-retry-grpc-on */
    struct rm_str max_retries;   /* x-envoy-max-retries */
    struct rm_str status_codes;  /* x-envoy-retriable-status-codes */
    struct rm_str header_names;  /* x-envoy-retriable-header-names */
    struct rm_str rq_timeout;    /* x-envoy-upstream-rq-timeout-ms */
    struct rm_str per_try;       /* x-envoy-upstream-rq-per-try-timeout-ms */
    bool any;                    /* at least one was present */
};

struct rm_host;

struct rm_retry_state {
    const struct rm_retry_policy *pol;
    uint32_t retry_on;     /* the policy's conditions | the request's */
    uint32_t retries_left; /* num_retries or x-envoy-max-retries, counting down */
    uint32_t retries_done; /* retries scheduled so far (the back-off exponent) */
    bool holds_retry;      /* a max_retries slot is held for the retry in flight */
    uint8_t n_hdr_codes, n_hdr_names;
    uint16_t hdr_codes[RM_RETRY_MAX_HDR_CODES];
    struct rm_str hdr_names[RM_RETRY_MAX_HDR_NAMES];
    struct rm_host **tried; /* hosts of earlier attempts (previous_hosts), NULL otherwise */
    uint32_t n_tried, cap_tried;
};

/** Find, record and remove the x-envoy-* request headers of rm_retry_headers in <h> (one scan;
 *  nothing is removed when none is present).  Values stay valid in h's arena. */
void rm_retry_headers_take(struct rm_headers *h, struct rm_retry_headers *out);

/** Set up the retry state of a request, or return NULL when it cannot be retried: no policy
 *  (<pol> NULL) and no retry header, no condition at all, or retriable_request_headers not
 *  matching <req>.  Allocates from <arena>. */
struct rm_retry_state *rm_retry_state_new(struct rm_arena *arena, const struct rm_retry_policy *pol,
                                          const struct rm_retry_headers *hdr,
                                          const struct rm_headers *req);

/** Would a response with <status> and headers <h> be retried?  (5xx, gateway-error,
 *  retriable-4xx (409), retriable-status-codes, retriable-headers, envoy-ratelimited, and the
 *  gRPC conditions judged on grpc-status in <h>; never when x-envoy-overloaded is set.) */
bool rm_retry_check_headers(const struct rm_retry_state *st, unsigned status,
                            const struct rm_headers *h);
/** Would a failure of kind <f> be retried?  <request_sent>: the attempt had a stream (for
 *  reset-before-request). */
bool rm_retry_check_failure(const struct rm_retry_state *st, enum rm_retry_failure f,
                            bool request_sent);

/** Judge an outcome (<would_retry> from a check above) against the retry count and <cb>'s
 *  max_retries (<cb> may be NULL), counting into <stats> (a cluster block, may be NULL).
 *  Releases the slot of the previous retry first; on RM_RETRY_STATUS_YES holds a new one. */
enum rm_retry_status rm_retry_should(struct rm_retry_state *st, bool would_retry, struct rm_cb *cb,
                                     struct rm_stats *stats);
/** The request is over: release a held max_retries slot (no stats).  <st> may be NULL. */
void rm_retry_finish(struct rm_retry_state *st, struct rm_cb *cb);

/** The wait before retry number <n> (1 for the first retry), from <rnd>(<ctx>). */
uint64_t rm_retry_backoff_ms(uint32_t base_ms, uint32_t max_ms, uint32_t n,
                             uint64_t (*rnd)(void *ctx), void *ctx);

/** previous_hosts: remember <h> as tried (no-op without the predicate). */
void rm_retry_note_host(struct rm_retry_state *st, struct rm_arena *arena, struct rm_host *h);
/** Should host selection pick another host than <h>? */
bool rm_retry_reject_host(const struct rm_retry_state *st, const struct rm_host *h);

/** A gRPC request's grpc-timeout value (1 to 8 digits and a unit H M S m u n) in
 *  milliseconds, sub-millisecond values rounded up; 0 when absent or malformed. */
uint64_t rm_grpc_timeout_ms(struct rm_str v);

/** Parse a non-negative decimal in <v> (no sign, no blanks); false when it is not one. */
bool rm_retry_parse_u64(struct rm_str v, uint64_t *out);

#endif
