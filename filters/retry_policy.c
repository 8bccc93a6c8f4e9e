/* RetryPolicy compilation (config time).  Compiled into the route table's memory through the
 * route builder's helpers (proxy/http/route_int.h), which also compile the header matchers. */
#include "filters/retry_policy.h"

#include <string.h>

#include "proxy/http/route_int.h"

typedef Envoy__Config__Route__V3__RetryPolicy RetryPolicy;

#define PREVIOUS_HOSTS "envoy.retry_host_predicates.previous_hosts"
#define PREVIOUS_HOSTS_TYPE "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
#define DEFAULT_BASE_MS 25

const struct rm_retry_policy rm_retry_policy_default = {
    .num_retries = 1,
    .backoff_base_ms = DEFAULT_BASE_MS,
    .backoff_max_ms = 10 * DEFAULT_BASE_MS,
    .host_selection_attempts = 1,
};

/* ---- retry_on ----------------------------------------------------------------------------- */

static const struct {
    const char *name;
    uint32_t bit;
    enum rm_retry_on_set set;
} conditions[] = {
    {"5xx", RM_RETRY_ON_5XX, RM_RETRY_ON_SET_HTTP},
    {"gateway-error", RM_RETRY_ON_GATEWAY_ERROR, RM_RETRY_ON_SET_HTTP},
    {"reset", RM_RETRY_ON_RESET, RM_RETRY_ON_SET_HTTP},
    {"reset-before-request", RM_RETRY_ON_RESET_BEFORE_REQUEST, RM_RETRY_ON_SET_HTTP},
    {"connect-failure", RM_RETRY_ON_CONNECT_FAILURE, RM_RETRY_ON_SET_HTTP},
    {"envoy-ratelimited", RM_RETRY_ON_ENVOY_RATELIMITED, RM_RETRY_ON_SET_HTTP},
    {"retriable-4xx", RM_RETRY_ON_RETRIABLE_4XX, RM_RETRY_ON_SET_HTTP},
    {"refused-stream", RM_RETRY_ON_REFUSED_STREAM, RM_RETRY_ON_SET_HTTP},
    {"retriable-status-codes", RM_RETRY_ON_RETRIABLE_STATUS_CODES, RM_RETRY_ON_SET_HTTP},
    {"retriable-headers", RM_RETRY_ON_RETRIABLE_HEADERS, RM_RETRY_ON_SET_HTTP},
    {"http3-post-connect-failure", RM_RETRY_ON_HTTP3_POST_CONNECT_FAILURE, RM_RETRY_ON_SET_HTTP},
    {"cancelled", RM_RETRY_ON_GRPC_CANCELLED, RM_RETRY_ON_SET_GRPC},
    {"deadline-exceeded", RM_RETRY_ON_GRPC_DEADLINE_EXCEEDED, RM_RETRY_ON_SET_GRPC},
    {"internal", RM_RETRY_ON_GRPC_INTERNAL, RM_RETRY_ON_SET_GRPC},
    {"resource-exhausted", RM_RETRY_ON_GRPC_RESOURCE_EXHAUSTED, RM_RETRY_ON_SET_GRPC},
    {"unavailable", RM_RETRY_ON_GRPC_UNAVAILABLE, RM_RETRY_ON_SET_GRPC},
};

static bool blank(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* The bit of condition <name> in <set>, or 0. */
static uint32_t condition(const char *name, size_t n, enum rm_retry_on_set set)
{
    for (size_t i = 0; i < sizeof(conditions) / sizeof(conditions[0]); i++) {
        if ((conditions[i].set & set) && strlen(conditions[i].name) == n &&
            memcmp(conditions[i].name, name, n) == 0)
            return conditions[i].bit;
    }
    return 0;
}

bool rm_retry_on_parse(const char *s, size_t len, enum rm_retry_on_set set, uint32_t *bits,
                       struct rm_str *bad)
{
    bool ok = true;
    size_t i = 0;
    while (i < len) {
        size_t start = i;
        while (i < len && s[i] != ',')
            i++;
        size_t b = start, e = i;
        while (b < e && blank(s[b]))
            b++;
        while (e > b && blank(s[e - 1]))
            e--;
        i++; /* past the comma */
        if (b == e) continue;
        uint32_t bit = condition(s + b, e - b, set);
        if (bit) {
            *bits |= bit;
        } else if (ok) {
            ok = false;
            if (bad) *bad = (struct rm_str){s + b, e - b};
        }
    }
    return ok;
}

/* ---- RetryPolicy -------------------------------------------------------------------------- */

static int unsupported(struct rm_route_ctx *c, const char *path, const char *field, const char *why)
{
    return rm_error_set(c->err, "%s.%s: %s", path, field, why);
}

static int retry_on(struct rm_route_ctx *c, const RetryPolicy *pb, const char *path,
                    struct rm_retry_policy *p)
{
    struct rm_str bad;
    if (!rm_retry_on_parse(pb->retry_on, strlen(pb->retry_on), RM_RETRY_ON_SET_ALL, &p->retry_on,
                           &bad))
        return rm_error_set(c->err, "%s.retry_on: unknown retry condition \"%.*s\"", path,
                            (int)bad.len, bad.p);
    return RM_OK;
}

static int host_predicates(struct rm_route_ctx *c, const RetryPolicy *pb, const char *path,
                           struct rm_retry_policy *p)
{
    char f[RM_RT_PATH];
    for (size_t i = 0; i < pb->n_retry_host_predicate; i++) {
        const Envoy__Config__Route__V3__RetryPolicy__RetryHostPredicate *hp =
            pb->retry_host_predicate[i];
        RT_PATH(f, path, "retry_host_predicate[%zu]", i);
        if (rm_rt_check_unknown(&hp->base, f, c->err) != RM_OK) return RM_ERR;
        const char *type = NULL;
        if (hp->config_type_case ==
            ENVOY__CONFIG__ROUTE__V3__RETRY_POLICY__RETRY_HOST_PREDICATE__CONFIG_TYPE_TYPED_CONFIG) {
            const char *slash = strrchr(hp->typed_config->type_url, '/');
            type = slash ? slash + 1 : hp->typed_config->type_url;
        }
        bool by_name = strcmp(hp->name, PREVIOUS_HOSTS) == 0;
        bool by_type = type && strcmp(type, PREVIOUS_HOSTS_TYPE) == 0;
        if (!(type ? by_type : by_name))
            return rm_error_set(c->err,
                                "%s: retry host predicate \"%s\"%s%s%s is not supported by "
                                "remora (only " PREVIOUS_HOSTS ")",
                                f, hp->name, type ? " (type " : "", type ? type : "",
                                type ? ")" : "");
        p->previous_hosts = true;
    }
    return RM_OK;
}

static int back_off(struct rm_route_ctx *c, const RetryPolicy *pb, const char *path,
                    struct rm_retry_policy *p)
{
    char f[RM_RT_PATH];
    const Envoy__Config__Route__V3__RetryPolicy__RetryBackOff *bo = pb->retry_back_off;
    if (!bo) return RM_OK;
    RT_PATH(f, path, "retry_back_off.base_interval");
    if (!bo->base_interval) return rm_error_set(c->err, "%s: required", f);
    if (rm_rt_duration_ms(bo->base_interval, f, &p->backoff_base_ms, c->err) != RM_OK)
        return RM_ERR;
    if (p->backoff_base_ms == 0) return rm_error_set(c->err, "%s: must be greater than zero", f);
    p->backoff_max_ms = p->backoff_base_ms > UINT32_MAX / 10 ? UINT32_MAX : 10 * p->backoff_base_ms;
    if (bo->max_interval) {
        RT_PATH(f, path, "retry_back_off.max_interval");
        if (rm_rt_duration_ms(bo->max_interval, f, &p->backoff_max_ms, c->err) != RM_OK)
            return RM_ERR;
        if (p->backoff_max_ms < p->backoff_base_ms)
            return rm_error_set(c->err, "%s: must be greater than or equal to the base_interval",
                                f);
    }
    return RM_OK;
}

static int timeouts(struct rm_route_ctx *c, const RetryPolicy *pb, const char *path,
                    struct rm_retry_policy *p)
{
    char f[RM_RT_PATH];
    if (pb->per_try_timeout) {
        RT_PATH(f, path, "per_try_timeout");
        if (rm_rt_duration_ms(pb->per_try_timeout, f, &p->per_try_timeout_ms, c->err) != RM_OK)
            return RM_ERR;
    }
    if (pb->per_try_idle_timeout) {
        RT_PATH(f, path, "per_try_idle_timeout");
        if (rm_rt_duration_ms(pb->per_try_idle_timeout, f, &p->per_try_idle_timeout_ms, c->err) !=
            RM_OK)
            return RM_ERR;
    }
    return RM_OK;
}

/* HeaderMatcher list <v>[<n>] at <path>.<field> into table memory. */
static int matchers(struct rm_route_ctx *c, Envoy__Config__Route__V3__HeaderMatcher *const *v,
                    size_t n, const char *path, const char *field,
                    const struct rm_header_match **out, size_t *n_out)
{
    char f[RM_RT_PATH];
    struct rm_header_match *m = n ? rm_rt_alloc(c, n * sizeof(*m)) : NULL;
    for (size_t i = 0; i < n; i++) {
        RT_PATH(f, path, "%s[%zu]", field, i);
        if (rm_rt_header_matcher(c, v[i], f, &m[i]) != RM_OK) return RM_ERR;
    }
    *out = m;
    *n_out = n;
    return RM_OK;
}

static int not_supported(struct rm_route_ctx *c, const RetryPolicy *pb, const char *path)
{
    if (pb->retry_priority)
        return unsupported(c, path, "retry_priority",
                           "retry priority plugins are not supported "
                           "by remora (clusters have one priority level)");
    if (pb->rate_limited_retry_back_off)
        return unsupported(c, path, "rate_limited_retry_back_off", "not supported by remora yet");
    if (pb->n_retry_options_predicates)
        return unsupported(c, path, "retry_options_predicates", "not supported by remora");
    return RM_OK;
}

int rm_retry_policy_compile(struct rm_route_ctx *c, const RetryPolicy *pb, const char *path,
                            const struct rm_retry_policy **out)
{
    *out = NULL;
    if (!pb) return RM_OK;
    if (rm_rt_check_unknown(&pb->base, path, c->err) != RM_OK || not_supported(c, pb, path))
        return RM_ERR;
    struct rm_retry_policy *p = rm_rt_alloc(c, sizeof(*p));
    *p = rm_retry_policy_default;
    p->num_retries = pb->num_retries ? pb->num_retries->value : 1;
    p->host_selection_attempts = pb->host_selection_retry_max_attempts > 0
                                     ? (uint32_t)(pb->host_selection_retry_max_attempts > 1000
                                                      ? 1000
                                                      : pb->host_selection_retry_max_attempts)
                                     : 1;
    if (retry_on(c, pb, path, p) || host_predicates(c, pb, path, p) || back_off(c, pb, path, p) ||
        timeouts(c, pb, path, p))
        return RM_ERR;
    if (pb->n_retriable_status_codes) {
        uint32_t *codes = rm_rt_alloc(c, pb->n_retriable_status_codes * sizeof(*codes));
        memcpy(codes, pb->retriable_status_codes, pb->n_retriable_status_codes * sizeof(*codes));
        p->status_codes = codes;
        p->n_status_codes = pb->n_retriable_status_codes;
    }
    if (matchers(c, pb->retriable_headers, pb->n_retriable_headers, path, "retriable_headers",
                 &p->retriable_headers, &p->n_retriable_headers) ||
        matchers(c, pb->retriable_request_headers, pb->n_retriable_request_headers, path,
                 "retriable_request_headers", &p->request_headers, &p->n_request_headers))
        return RM_ERR;
    *out = p;
    return RM_OK;
}
