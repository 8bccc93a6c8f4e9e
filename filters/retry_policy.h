/* Retry policies: Envoy's route.v3.RetryPolicy compiled once per route (or virtual host) at
 * config time, so the router never reads protobuf on the request path.
 *
 * Everything Envoy would honour that remora cannot is rejected at load with the field path:
 * unknown retry_on conditions, retry host predicates other than previous_hosts, retry_priority,
 * rate_limited_retry_back_off, retry_options_predicates. */
#ifndef RM_FILTERS_RETRY_POLICY_H
#define RM_FILTERS_RETRY_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/http/headers.h"

struct rm_route_ctx;
struct rm_header_match;
struct Envoy__Config__Route__V3__RetryPolicy;

/** retry_on conditions (x-envoy-retry-on / x-envoy-retry-grpc-on use the same names). */
enum rm_retry_on {
    RM_RETRY_ON_5XX = 1u << 0,
    RM_RETRY_ON_GATEWAY_ERROR = 1u << 1,
    RM_RETRY_ON_RESET = 1u << 2,
    RM_RETRY_ON_RESET_BEFORE_REQUEST = 1u << 3,
    RM_RETRY_ON_CONNECT_FAILURE = 1u << 4,
    RM_RETRY_ON_ENVOY_RATELIMITED = 1u << 5,
    RM_RETRY_ON_RETRIABLE_4XX = 1u << 6,
    RM_RETRY_ON_REFUSED_STREAM = 1u << 7,
    RM_RETRY_ON_RETRIABLE_STATUS_CODES = 1u << 8,
    RM_RETRY_ON_RETRIABLE_HEADERS = 1u << 9,
    RM_RETRY_ON_HTTP3_POST_CONNECT_FAILURE = 1u << 10, /* accepted; remora has no HTTP/3 */
    RM_RETRY_ON_GRPC_CANCELLED = 1u << 16,
    RM_RETRY_ON_GRPC_DEADLINE_EXCEEDED = 1u << 17,
    RM_RETRY_ON_GRPC_INTERNAL = 1u << 18,
    RM_RETRY_ON_GRPC_RESOURCE_EXHAUSTED = 1u << 19,
    RM_RETRY_ON_GRPC_UNAVAILABLE = 1u << 20,
};
#define RM_RETRY_ON_GRPC_ANY                                                                       \
    (RM_RETRY_ON_GRPC_CANCELLED | RM_RETRY_ON_GRPC_DEADLINE_EXCEEDED | RM_RETRY_ON_GRPC_INTERNAL | \
     RM_RETRY_ON_GRPC_RESOURCE_EXHAUSTED | RM_RETRY_ON_GRPC_UNAVAILABLE)

/** Which vocabulary a retry_on list may use. */
enum rm_retry_on_set {
    RM_RETRY_ON_SET_HTTP = 1, /* x-envoy-retry-on */
    RM_RETRY_ON_SET_GRPC = 2, /* x-envoy-retry-grpc-on */
    RM_RETRY_ON_SET_ALL = 3,  /* RetryPolicy.retry_on */
};

/** Parse a comma-separated condition list (blanks around names ignored, empty items skipped)
 *  into *<bits> (ORed in).  Returns true when every name was known in <set>; otherwise false
 *  with the first unknown name in *<bad> (if not NULL) — the known ones are still ORed in. */
bool rm_retry_on_parse(const char *s, size_t len, enum rm_retry_on_set set, uint32_t *bits,
                       struct rm_str *bad);

/** A compiled RetryPolicy; immutable, lives with the route table. */
struct rm_retry_policy {
    uint32_t retry_on;                /* RM_RETRY_ON_* */
    uint32_t num_retries;             /* default 1 */
    uint32_t per_try_timeout_ms;      /* 0 = none */
    uint32_t per_try_idle_timeout_ms; /* 0 = none */
    uint32_t backoff_base_ms;         /* retry_back_off.base_interval, default 25 */
    uint32_t backoff_max_ms;          /* retry_back_off.max_interval, default 10 x base */
    uint32_t host_selection_attempts; /* host_selection_retry_max_attempts, at least 1 */
    bool previous_hosts;              /* envoy.retry_host_predicates.previous_hosts */
    const uint32_t *status_codes;     /* retriable_status_codes */
    size_t n_status_codes;
    const struct rm_header_match *retriable_headers; /* matched against response headers */
    size_t n_retriable_headers;
    const struct rm_header_match *request_headers; /* retriable_request_headers */
    size_t n_request_headers;
};

/** The policy of requests that ask for retries by header on a route without one (Envoy's
 *  defaults: one retry, 25 ms base back-off). */
extern const struct rm_retry_policy rm_retry_policy_default;

/** Check and compile <pb> found at <path> (NULL: *<out> = NULL) into the route table being
 *  built by <c> (memory and regexes owned by the table).  RM_OK, or RM_ERR with the table's
 *  error naming the field. */
int rm_retry_policy_compile(struct rm_route_ctx *c,
                            const struct Envoy__Config__Route__V3__RetryPolicy *pb,
                            const char *path, const struct rm_retry_policy **out);

#endif
