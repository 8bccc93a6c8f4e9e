/* Unit tests for filters/retry*.c: retry_on parsing, Envoy's jittered back-off with an injected
 * random source, the "would this be retried?" decisions for responses and failures, the retry
 * count and max_retries judgement with its stats, request headers, and RetryPolicy compilation
 * and rejection (through the route table builder). */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "envoy/config/route/v3/route.pb-c.h"
#include "filters/retry.h"
#include "proxy/admin/stats.h"
#include "proxy/config/pbjson.h"
#include "proxy/http/route.h"
#include "proxy/upstream/circuit_breaker.h"
#include "proxy/upstream/cluster.h"

static struct rm_arena arena;

static void setup(void)
{
    rm_arena_init(&arena);
}

static void teardown(void)
{
    rm_arena_dispose(&arena);
    rm_route_thread_cleanup();
    rm_arena_thread_cleanup();
}

TestSuite(retry_on, .init = setup, .fini = teardown);
TestSuite(retry_backoff, .init = setup, .fini = teardown);
TestSuite(retry_decide, .init = setup, .fini = teardown);
TestSuite(retry_state, .init = setup, .fini = teardown);
TestSuite(retry_policy, .init = setup, .fini = teardown);

static struct rm_headers *hdrs(const char *first, ...)
{
    struct rm_headers *h = rm_arena_alloc(&arena, sizeof(*h));
    rm_headers_init(h, &arena);
    va_list ap;
    va_start(ap, first);
    for (const char *n = first; n; n = va_arg(ap, const char *)) {
        const char *v = va_arg(ap, const char *);
        rm_headers_add(h, n, strlen(n), v, strlen(v));
    }
    va_end(ap);
    return h;
}

static uint32_t parse_on(const char *s, enum rm_retry_on_set set, bool *ok, char *bad)
{
    uint32_t bits = 0;
    struct rm_str b = {NULL, 0};
    *ok = rm_retry_on_parse(s, strlen(s), set, &bits, &b);
    if (bad) snprintf(bad, 64, "%.*s", (int)b.len, b.p ? b.p : "");
    return bits;
}

/* ---- retry_on ----------------------------------------------------------------------------- */

Test(retry_on, every_condition_and_blanks)
{
    bool ok;
    uint32_t b = parse_on(" 5xx, gateway-error ,reset,reset-before-request,connect-failure,"
                          "envoy-ratelimited,retriable-4xx,refused-stream,retriable-status-codes,"
                          "retriable-headers,http3-post-connect-failure,cancelled,"
                          "deadline-exceeded,internal,resource-exhausted,unavailable,,",
                          RM_RETRY_ON_SET_ALL, &ok, NULL);
    cr_expect(ok);
    cr_expect_eq(b, RM_RETRY_ON_5XX | RM_RETRY_ON_GATEWAY_ERROR | RM_RETRY_ON_RESET |
                        RM_RETRY_ON_RESET_BEFORE_REQUEST | RM_RETRY_ON_CONNECT_FAILURE |
                        RM_RETRY_ON_ENVOY_RATELIMITED | RM_RETRY_ON_RETRIABLE_4XX |
                        RM_RETRY_ON_REFUSED_STREAM | RM_RETRY_ON_RETRIABLE_STATUS_CODES |
                        RM_RETRY_ON_RETRIABLE_HEADERS | RM_RETRY_ON_HTTP3_POST_CONNECT_FAILURE |
                        RM_RETRY_ON_GRPC_ANY);
}

Test(retry_on, unknown_names_reported_known_kept)
{
    bool ok;
    char bad[64];
    uint32_t b = parse_on("5xx, 5XX ,reset", RM_RETRY_ON_SET_ALL, &ok, bad);
    cr_expect_not(ok);
    cr_expect_str_eq(bad, "5XX", "names are case-sensitive, as in Envoy");
    cr_expect_eq(b, RM_RETRY_ON_5XX | RM_RETRY_ON_RESET);
    b = parse_on("", RM_RETRY_ON_SET_ALL, &ok, bad);
    cr_expect(ok && b == 0);
}

Test(retry_on, header_vocabularies)
{
    bool ok;
    char bad[64];
    /* x-envoy-retry-on knows no gRPC names; x-envoy-retry-grpc-on no HTTP ones */
    uint32_t b = parse_on("5xx,unavailable", RM_RETRY_ON_SET_HTTP, &ok, bad);
    cr_expect(!ok && b == RM_RETRY_ON_5XX);
    cr_expect_str_eq(bad, "unavailable");
    b = parse_on("unavailable,5xx", RM_RETRY_ON_SET_GRPC, &ok, bad);
    cr_expect(!ok && b == RM_RETRY_ON_GRPC_UNAVAILABLE);
    cr_expect_str_eq(bad, "5xx");
}

/* ---- back-off ----------------------------------------------------------------------------- */

static uint64_t fixed(void *ctx)
{
    return *(uint64_t *)ctx;
}

static uint64_t lcg(void *ctx)
{
    uint64_t *s = ctx;
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s >> 11;
}

Test(retry_backoff, ranges_grow_as_2n_minus_1_times_base)
{
    /* base 25, max 250: [0,25) then [0,75) then [0,175), then [0,375) capped at 250 */
    uint64_t v = 24;
    cr_expect_eq(rm_retry_backoff_ms(25, 250, 1, fixed, &v), 24);
    v = 25;
    cr_expect_eq(rm_retry_backoff_ms(25, 250, 1, fixed, &v), 0);
    v = 74;
    cr_expect_eq(rm_retry_backoff_ms(25, 250, 2, fixed, &v), 74);
    v = 75;
    cr_expect_eq(rm_retry_backoff_ms(25, 250, 2, fixed, &v), 0);
    v = 174;
    cr_expect_eq(rm_retry_backoff_ms(25, 250, 3, fixed, &v), 174);
    v = 374;
    cr_expect_eq(rm_retry_backoff_ms(25, 250, 4, fixed, &v), 250, "capped at max_interval");
    v = 374;
    cr_expect_eq(rm_retry_backoff_ms(25, 250, 50, fixed, &v), 250, "the range stops growing");
    v = 375;
    cr_expect_eq(rm_retry_backoff_ms(25, 250, 50, fixed, &v), 0);
}

Test(retry_backoff, random_values_stay_in_range)
{
    uint64_t s = 42;
    static const uint64_t range[] = {0, 10, 30, 70, 150, 310, 630, 1270, 1270};
    uint64_t seen_max[9] = {0};
    for (int i = 0; i < 20000; i++) {
        for (uint32_t n = 1; n <= 8; n++) {
            uint64_t ms = rm_retry_backoff_ms(10, 1000, n, lcg, &s);
            cr_assert(ms < range[n] && ms <= 1000, "retry %u waited %llu", n,
                      (unsigned long long)ms);
            if (ms > seen_max[n]) seen_max[n] = ms;
        }
    }
    for (uint32_t n = 1; n <= 7; n++) /* fully jittered: the whole range is used */
        cr_expect_geq(seen_max[n], (range[n] < 1000 ? range[n] : 1001) * 9 / 10 - 1, "n=%u", n);
    cr_expect_eq(seen_max[8], 1000);
    uint64_t z = 0;
    cr_expect_eq(rm_retry_backoff_ms(0, 0, 3, fixed, &z), 0, "no base: no wait");
}

/* ---- decisions ---------------------------------------------------------------------------- */

static struct rm_retry_state *state(const struct rm_retry_policy *pol, uint32_t on)
{
    struct rm_retry_policy *p = rm_arena_alloc(&arena, sizeof(*p));
    *p = pol ? *pol : rm_retry_policy_default;
    p->retry_on = on;
    struct rm_retry_state *st = rm_retry_state_new(&arena, p, NULL, hdrs(":method", "GET", NULL));
    cr_assert_not_null(st);
    return st;
}

Test(retry_decide, status_conditions)
{
    struct rm_headers *h = hdrs(":status", "503", NULL);
    struct rm_retry_state *st = state(NULL, RM_RETRY_ON_5XX);
    cr_expect(rm_retry_check_headers(st, 500, h));
    cr_expect(rm_retry_check_headers(st, 599, h));
    cr_expect_not(rm_retry_check_headers(st, 404, h));
    cr_expect_not(rm_retry_check_headers(st, 200, h));
    st = state(NULL, RM_RETRY_ON_GATEWAY_ERROR);
    cr_expect_not(rm_retry_check_headers(st, 500, h));
    cr_expect(rm_retry_check_headers(st, 502, h) && rm_retry_check_headers(st, 503, h) &&
              rm_retry_check_headers(st, 504, h));
    st = state(NULL, RM_RETRY_ON_RETRIABLE_4XX);
    cr_expect(rm_retry_check_headers(st, 409, h));
    cr_expect_not(rm_retry_check_headers(st, 429, h));
    /* never when the upstream says it is overloaded */
    st = state(NULL, RM_RETRY_ON_5XX);
    cr_expect_not(rm_retry_check_headers(
        st, 503, hdrs(":status", "503", "x-envoy-overloaded", "true", NULL)));
    st = state(NULL, RM_RETRY_ON_ENVOY_RATELIMITED);
    cr_expect(rm_retry_check_headers(st, 429, hdrs("x-envoy-ratelimited", "true", NULL)));
    cr_expect_not(rm_retry_check_headers(st, 429, h));
}

Test(retry_decide, retriable_status_codes_from_policy_and_header)
{
    static const uint32_t codes[] = {418, 451};
    struct rm_retry_policy pol = rm_retry_policy_default;
    pol.status_codes = codes;
    pol.n_status_codes = 2;
    struct rm_headers *h = hdrs(":status", "418", NULL);
    struct rm_retry_state *st = state(&pol, RM_RETRY_ON_RETRIABLE_STATUS_CODES);
    cr_expect(rm_retry_check_headers(st, 418, h) && rm_retry_check_headers(st, 451, h));
    cr_expect_not(rm_retry_check_headers(st, 503, h), "only the listed codes");
    struct rm_retry_headers xh = {.retry_on = RM_STR("retriable-status-codes"),
                                  .status_codes = RM_STR("409, x,  425,,999999"),
                                  .any = true};
    st = rm_retry_state_new(&arena, NULL, &xh, h);
    cr_assert_not_null(st);
    cr_expect(rm_retry_check_headers(st, 409, h) && rm_retry_check_headers(st, 425, h));
    cr_expect_not(rm_retry_check_headers(st, 418, h));
    cr_expect_eq(st->n_hdr_codes, 2, "malformed entries are skipped");
    st = state(&pol, RM_RETRY_ON_5XX); /* listed codes need retriable-status-codes */
    cr_expect_not(rm_retry_check_headers(st, 418, h));
}

Test(retry_decide, retriable_headers)
{
    struct rm_header_match m = {
        .name = "x-retry-me", .name_len = 10, .m = {.kind = RM_STR_EXACT, .s = "yes", .len = 3}};
    struct rm_retry_policy pol = rm_retry_policy_default;
    pol.retriable_headers = &m;
    pol.n_retriable_headers = 1;
    struct rm_retry_state *st = state(&pol, RM_RETRY_ON_RETRIABLE_HEADERS);
    cr_expect(rm_retry_check_headers(st, 200, hdrs("x-retry-me", "yes", NULL)));
    cr_expect_not(rm_retry_check_headers(st, 200, hdrs("x-retry-me", "no", NULL)));
    cr_expect_not(rm_retry_check_headers(st, 503, hdrs(":status", "503", NULL)));
    struct rm_retry_headers xh = {.retry_on = RM_STR("retriable-headers"),
                                  .header_names = RM_STR("X-Upstream-Busy , x-other"),
                                  .any = true};
    st = rm_retry_state_new(&arena, NULL, &xh, hdrs(":method", "GET", NULL));
    cr_assert_not_null(st);
    cr_expect(rm_retry_check_headers(st, 200, hdrs("x-upstream-busy", "1", NULL)));
    cr_expect(rm_retry_check_headers(st, 200, hdrs("x-other", "", NULL)));
    cr_expect_not(rm_retry_check_headers(st, 200, hdrs("x-upstream", "1", NULL)));
}

Test(retry_decide, grpc_status_in_headers)
{
    struct rm_retry_state *st =
        state(NULL, RM_RETRY_ON_GRPC_UNAVAILABLE | RM_RETRY_ON_GRPC_CANCELLED);
    cr_expect(rm_retry_check_headers(st, 200, hdrs(":status", "200", "grpc-status", "14", NULL)));
    cr_expect(rm_retry_check_headers(st, 200, hdrs("grpc-status", "1", NULL)));
    cr_expect_not(rm_retry_check_headers(st, 200, hdrs("grpc-status", "13", NULL)));
    cr_expect_not(rm_retry_check_headers(st, 200, hdrs("grpc-status", "0", NULL)));
    cr_expect_not(rm_retry_check_headers(st, 200, hdrs("grpc-status", "x14", NULL)));
    cr_expect_not(rm_retry_check_headers(st, 200, hdrs(":status", "200", NULL)));
    st = state(NULL, RM_RETRY_ON_GRPC_ANY);
    static const char *const codes[] = {"1", "4", "8", "13", "14"};
    for (size_t i = 0; i < 5; i++)
        cr_expect(rm_retry_check_headers(st, 200, hdrs("grpc-status", codes[i], NULL)), "%s",
                  codes[i]);
    cr_expect_not(rm_retry_check_headers(st, 200, hdrs("grpc-status", "2", NULL)));
}

Test(retry_decide, failures)
{
    struct rm_retry_state *st = state(NULL, RM_RETRY_ON_CONNECT_FAILURE);
    cr_expect(rm_retry_check_failure(st, RM_RETRY_FAIL_CONNECT, false));
    cr_expect_not(rm_retry_check_failure(st, RM_RETRY_FAIL_RESET, true));
    cr_expect_not(rm_retry_check_failure(st, RM_RETRY_FAIL_TIMEOUT, true));
    static const uint32_t any_reset[] = {RM_RETRY_ON_5XX, RM_RETRY_ON_GATEWAY_ERROR,
                                         RM_RETRY_ON_RESET};
    for (size_t i = 0; i < 3; i++) {
        st = state(NULL, any_reset[i]);
        cr_expect(rm_retry_check_failure(st, RM_RETRY_FAIL_CONNECT, false));
        cr_expect(rm_retry_check_failure(st, RM_RETRY_FAIL_RESET, true));
        cr_expect(rm_retry_check_failure(st, RM_RETRY_FAIL_REFUSED, true));
        cr_expect(rm_retry_check_failure(st, RM_RETRY_FAIL_TIMEOUT, true), "per-try timeout");
        cr_expect_not(rm_retry_check_failure(st, RM_RETRY_FAIL_OVERFLOW, false), "never");
    }
    st = state(NULL, RM_RETRY_ON_REFUSED_STREAM);
    cr_expect(rm_retry_check_failure(st, RM_RETRY_FAIL_REFUSED, true));
    cr_expect_not(rm_retry_check_failure(st, RM_RETRY_FAIL_RESET, true));
    st = state(NULL, RM_RETRY_ON_RESET_BEFORE_REQUEST);
    cr_expect(rm_retry_check_failure(st, RM_RETRY_FAIL_CONNECT, false));
    cr_expect_not(rm_retry_check_failure(st, RM_RETRY_FAIL_RESET, true));
    st = state(NULL, RM_RETRY_ON_GRPC_UNAVAILABLE);
    cr_expect_not(rm_retry_check_failure(st, RM_RETRY_FAIL_RESET, true));
}

/* ---- the retry count, max_retries and stats ---------------------------------------------- */

static struct rm_cb *breakers(uint32_t max_retries, bool budget)
{
    struct rm_cb_thresholds lim[RM_CB_PRIORITIES];
    cr_assert_eq(rm_cb_parse(NULL, "cb", lim, NULL), RM_OK);
    lim[0].max[RM_CB_RETRY] = max_retries;
    lim[0].has_budget = budget;
    lim[0].budget_percent = 50;
    lim[0].min_retry_concurrency = 1;
    return rm_cb_new(&lim[0], "cluster.retrytest.", 0);
}

static int64_t stat(struct rm_stats *s, unsigned idx)
{
    return rm_stat_value(s, idx);
}

Test(retry_state, count_limit_success)
{
    struct rm_stats *s = rm_stats_get("cluster.retrytest.", rm_cluster_stat_defs, RM_CS__COUNT);
    struct rm_cb *cb = breakers(3, false);
    struct rm_retry_policy pol = rm_retry_policy_default;
    pol.num_retries = 2;
    struct rm_retry_state *st = state(&pol, RM_RETRY_ON_5XX);
    cr_expect_eq(rm_retry_should(st, true, cb, s), RM_RETRY_STATUS_YES);
    cr_expect(st->holds_retry && rm_cb_count(cb, RM_CB_RETRY) == 1);
    cr_expect_eq(rm_retry_should(st, true, cb, s), RM_RETRY_STATUS_YES);
    cr_expect_eq(rm_cb_count(cb, RM_CB_RETRY), 1, "the previous retry's slot is given back");
    cr_expect_eq(st->retries_done, 2);
    cr_expect_eq(rm_retry_should(st, true, cb, s), RM_RETRY_STATUS_LIMIT);
    cr_expect_eq(rm_cb_count(cb, RM_CB_RETRY), 0);
    cr_expect_eq(stat(s, RM_CS_UPSTREAM_RQ_RETRY), 2);
    cr_expect_eq(stat(s, RM_CS_UPSTREAM_RQ_RETRY_LIMIT_EXCEEDED), 1);
    cr_expect_eq(stat(s, RM_CS_UPSTREAM_RQ_RETRY_SUCCESS), 0);
    /* a retried attempt whose outcome is not retriable is a retry success */
    st = state(&pol, RM_RETRY_ON_5XX);
    cr_expect_eq(rm_retry_should(st, true, cb, s), RM_RETRY_STATUS_YES);
    cr_expect_eq(rm_retry_should(st, false, cb, s), RM_RETRY_STATUS_NO);
    cr_expect_eq(stat(s, RM_CS_UPSTREAM_RQ_RETRY_SUCCESS), 1);
    cr_expect_eq(rm_retry_should(st, false, cb, s), RM_RETRY_STATUS_NO);
    cr_expect_eq(stat(s, RM_CS_UPSTREAM_RQ_RETRY_SUCCESS), 1, "counted once");
    cr_expect_eq(rm_cb_count(cb, RM_CB_RETRY), 0);
    rm_cb_free(cb);
}

Test(retry_state, max_retries_overflow_and_finish)
{
    struct rm_stats *s = rm_stats_get("cluster.retrytest.", rm_cluster_stat_defs, RM_CS__COUNT);
    struct rm_cb *cb = breakers(1, false);
    struct rm_retry_state *a = state(NULL, RM_RETRY_ON_5XX), *b = state(NULL, RM_RETRY_ON_5XX);
    cr_expect_eq(rm_retry_should(a, true, cb, s), RM_RETRY_STATUS_YES);
    cr_expect_eq(rm_retry_should(b, true, cb, s), RM_RETRY_STATUS_OVERFLOW);
    cr_expect_eq(stat(s, RM_CS_UPSTREAM_RQ_RETRY_OVERFLOW), 1);
    cr_expect_eq(stat(s, RM_CS_UPSTREAM_RQ_RETRY), 1);
    cr_expect_eq(rm_stat_value(cb->gauges, RM_CB_RETRY), 1, "rq_retry_open");
    rm_retry_finish(a, cb); /* the request ended during its retry */
    cr_expect_eq(rm_cb_count(cb, RM_CB_RETRY), 0);
    cr_expect_eq(rm_stat_value(cb->gauges, RM_CB_RETRY), 0);
    rm_retry_finish(a, cb);
    rm_retry_finish(NULL, cb);
    cr_expect_eq(rm_cb_count(cb, RM_CB_RETRY), 0, "finish is idempotent");
    rm_cb_free(cb);
}

Test(retry_state, budget_limits_concurrent_retries)
{
    struct rm_cb *cb = breakers(100, true); /* 50% of active, at least 1 */
    struct rm_retry_state *st[4];
    for (int i = 0; i < 4; i++)
        st[i] = state(NULL, RM_RETRY_ON_5XX);
    cr_expect_eq(rm_retry_should(st[0], true, cb, NULL), RM_RETRY_STATUS_YES);
    cr_expect_eq(rm_retry_should(st[1], true, cb, NULL), RM_RETRY_STATUS_OVERFLOW,
                 "min_retry_concurrency 1 with nothing active");
    for (int i = 0; i < 4; i++)
        cr_assert(rm_cb_try_acquire(cb, RM_CB_RQ));
    cr_expect_eq(rm_cb_max(cb, RM_CB_RETRY), 2);
    cr_expect_eq(rm_retry_should(st[2], true, cb, NULL), RM_RETRY_STATUS_YES);
    cr_expect_eq(rm_retry_should(st[3], true, cb, NULL), RM_RETRY_STATUS_OVERFLOW);
    for (int i = 0; i < 4; i++)
        rm_cb_release(cb, RM_CB_RQ);
    rm_retry_finish(st[0], cb);
    rm_retry_finish(st[2], cb);
    cr_expect_eq(rm_cb_count(cb, RM_CB_RETRY), 0);
    rm_cb_free(cb);
}

Test(retry_state, created_only_when_retries_are_possible)
{
    struct rm_headers *req = hdrs(":method", "GET", NULL);
    cr_expect_null(rm_retry_state_new(&arena, NULL, NULL, req), "no policy, no header");
    struct rm_retry_policy empty = rm_retry_policy_default; /* a policy without conditions */
    cr_expect_null(rm_retry_state_new(&arena, &empty, NULL, req));
    struct rm_retry_headers xh = {
        .retry_on = RM_STR("5xx"), .max_retries = RM_STR("4"), .any = true};
    struct rm_retry_state *st = rm_retry_state_new(&arena, NULL, &xh, req);
    cr_assert_not_null(st);
    cr_expect_eq(st->pol, &rm_retry_policy_default);
    cr_expect_eq(st->retries_left, 4, "x-envoy-max-retries");
    xh.max_retries = RM_STR("lots");
    st = rm_retry_state_new(&arena, NULL, &xh, req);
    cr_expect_eq(st->retries_left, 1, "malformed: the policy's num_retries");
    struct rm_retry_headers bogus = {.retry_on = RM_STR("nonsense"), .any = true};
    cr_expect_null(rm_retry_state_new(&arena, NULL, &bogus, req));
    struct rm_retry_headers grpc = {.grpc_retry_on = RM_STR("unavailable"), .any = true};
    st = rm_retry_state_new(&arena, NULL, &grpc, req);
    cr_assert_not_null(st);
    cr_expect_eq(st->retry_on, RM_RETRY_ON_GRPC_UNAVAILABLE);
    /* retriable_request_headers: some must match the request */
    struct rm_header_match m = {.name = "x-idempotent",
                                .name_len = 12,
                                .m = {.kind = RM_STR_PRESENT},
                                .present_match_value = true};
    struct rm_retry_policy pol = rm_retry_policy_default;
    pol.retry_on = RM_RETRY_ON_5XX;
    pol.request_headers = &m;
    pol.n_request_headers = 1;
    cr_expect_null(rm_retry_state_new(&arena, &pol, NULL, req));
    cr_expect_not_null(rm_retry_state_new(&arena, &pol, NULL, hdrs("x-idempotent", "1", NULL)));
}

Test(retry_state, request_headers_taken)
{
    struct rm_headers *h =
        hdrs(":method", "GET", "x-envoy-retry-on", "5xx", "x-keep", "1", "x-envoy-max-retries", "2",
             "x-envoy-retry-on", "reset", "x-envoy-upstream-rq-timeout-ms", "100",
             "x-envoy-upstream-rq-per-try-timeout-ms", "50", "x-envoy-retry-grpc-on", "cancelled",
             "x-envoy-retriable-status-codes", "418", "x-envoy-retriable-header-names", "x-a",
             "x-envoy-original-path", "/o", NULL);
    struct rm_retry_headers xh;
    rm_retry_headers_take(h, &xh);
    cr_expect(xh.any);
    cr_expect(rm_str_eq(xh.retry_on, "5xx", 3), "the first occurrence");
    cr_expect(rm_str_eq(xh.max_retries, "2", 1));
    cr_expect(rm_str_eq(xh.rq_timeout, "100", 3));
    cr_expect(rm_str_eq(xh.per_try, "50", 2));
    cr_expect(rm_str_eq(xh.grpc_retry_on, "cancelled", 9));
    cr_expect(rm_str_eq(xh.status_codes, "418", 3));
    cr_expect(rm_str_eq(xh.header_names, "x-a", 3));
    cr_expect_eq(h->n, 3, "consumed; others kept");
    cr_expect(RM_HDR_GET(h, "x-keep").p && RM_HDR_GET(h, "x-envoy-original-path").p);
    struct rm_headers *plain = hdrs(":method", "GET", "x-envoy-foo", "1", NULL);
    rm_retry_headers_take(plain, &xh);
    cr_expect_not(xh.any);
    cr_expect_eq(plain->n, 2);
}

Test(retry_state, previous_hosts)
{
    struct rm_retry_policy pol = rm_retry_policy_default;
    pol.previous_hosts = true;
    struct rm_retry_state *st = state(&pol, RM_RETRY_ON_5XX);
    struct rm_host *h[6]; /* only their identities matter */
    for (int i = 0; i < 6; i++)
        cr_assert_not_null(h[i] = calloc(1, sizeof(struct rm_host) + 1));
    for (int i = 0; i < 5; i++)
        rm_retry_note_host(st, &arena, h[i]);
    for (int i = 0; i < 5; i++)
        cr_expect(rm_retry_reject_host(st, h[i]));
    cr_expect_not(rm_retry_reject_host(st, h[5]));
    st = state(NULL, RM_RETRY_ON_5XX); /* without the predicate nothing is remembered */
    rm_retry_note_host(st, &arena, h[0]);
    cr_expect_not(rm_retry_reject_host(st, h[0]));
    for (int i = 0; i < 6; i++)
        free(h[i]);
}

Test(retry_state, grpc_timeout_values)
{
    cr_expect_eq(rm_grpc_timeout_ms(RM_STR("1S")), 1000);
    cr_expect_eq(rm_grpc_timeout_ms(RM_STR("250m")), 250);
    cr_expect_eq(rm_grpc_timeout_ms(RM_STR("2M")), 120000);
    cr_expect_eq(rm_grpc_timeout_ms(RM_STR("1H")), 3600000);
    cr_expect_eq(rm_grpc_timeout_ms(RM_STR("1500u")), 2, "rounded up");
    cr_expect_eq(rm_grpc_timeout_ms(RM_STR("1n")), 1);
    cr_expect_eq(rm_grpc_timeout_ms(RM_STR("99999999m")), 99999999);
    cr_expect_eq(rm_grpc_timeout_ms(RM_STR("123456789m")), 0, "at most 8 digits");
    cr_expect_eq(rm_grpc_timeout_ms(RM_STR("10")), 0);
    cr_expect_eq(rm_grpc_timeout_ms(RM_STR("m")), 0);
    cr_expect_eq(rm_grpc_timeout_ms(RM_STR("1x")), 0);
    cr_expect_eq(rm_grpc_timeout_ms((struct rm_str){NULL, 0}), 0);
}

/* ---- RetryPolicy compilation -------------------------------------------------------------- */

static void *resolve(void *ctx, const char *name)
{
    return (void *)"c";
}

static const struct rm_route *compile(const char *policy_yaml, const char *vh_policy,
                                      struct rm_route_table **out, char *err_out)
{
    char yaml[4096], vh[512] = "";
    if (vh_policy) snprintf(vh, sizeof(vh), "  retry_policy: %s\n", vh_policy);
    snprintf(yaml, sizeof(yaml),
             "virtual_hosts:\n"
             "- name: vh\n"
             "  domains: ['*']\n"
             "%s"
             "  routes:\n"
             "  - match: {prefix: /}\n"
             "    route:\n"
             "      cluster: c\n"
             "      retry_policy: %s\n",
             vh, policy_yaml);
    struct rm_error err = {{0}};
    ProtobufCMessage *m = NULL;
    int rc = rm_pbjson_parse_string(yaml, strlen(yaml), "t.yaml",
                                    &envoy__config__route__v3__route_configuration__descriptor, &m,
                                    &err);
    cr_assert_eq(rc, RM_OK, "YAML: %s\n%s", err.msg, yaml);
    *out = rm_route_table_new((void *)m, "rc", resolve, NULL, &err);
    protobuf_c_message_free_unpacked(m, NULL);
    if (err_out) snprintf(err_out, 512, "%s", err.msg);
    return *out ? &(*out)->vhosts[0].routes[0] : NULL;
}

Test(retry_policy, compiled_fields_and_defaults)
{
    struct rm_route_table *t;
    const struct rm_route *r =
        compile("{retry_on: '5xx,unavailable', per_try_timeout: 0.25s}", NULL, &t, NULL);
    cr_assert_not_null(r);
    const struct rm_retry_policy *p = r->retry;
    cr_assert_not_null(p);
    cr_expect_eq(p->retry_on, RM_RETRY_ON_5XX | RM_RETRY_ON_GRPC_UNAVAILABLE);
    cr_expect_eq(p->num_retries, 1, "Envoy's default");
    cr_expect_eq(p->per_try_timeout_ms, 250);
    cr_expect_eq(p->backoff_base_ms, 25);
    cr_expect_eq(p->backoff_max_ms, 250);
    cr_expect_eq(p->host_selection_attempts, 1);
    cr_expect_not(p->previous_hosts);
    rm_route_table_free(t);
    r = compile("{retry_on: retriable-status-codes, num_retries: 0, retriable_status_codes: [409, "
                "503], retry_back_off: {base_interval: 0.1s, max_interval: 2s}, "
                "host_selection_retry_max_attempts: 3, per_try_idle_timeout: 1s, "
                "retry_host_predicate: [{name: envoy.retry_host_predicates.previous_hosts}], "
                "retriable_headers: [{name: x-r, present_match: true}], "
                "retriable_request_headers: [{name: ':method', string_match: {exact: GET}}]}",
                NULL, &t, NULL);
    cr_assert_not_null(r);
    p = r->retry;
    cr_expect_eq(p->num_retries, 0);
    cr_expect(p->n_status_codes == 2 && p->status_codes[0] == 409 && p->status_codes[1] == 503);
    cr_expect(p->backoff_base_ms == 100 && p->backoff_max_ms == 2000);
    cr_expect_eq(p->host_selection_attempts, 3);
    cr_expect_eq(p->per_try_idle_timeout_ms, 1000);
    cr_expect(p->previous_hosts);
    cr_expect_eq(p->n_retriable_headers, 1);
    cr_expect_str_eq(p->retriable_headers[0].name, "x-r");
    cr_expect_eq(p->n_request_headers, 1);
    rm_route_table_free(t);
    /* the virtual host's policy is compiled too */
    r = compile("{retry_on: reset}", "{retry_on: connect-failure, num_retries: 5}", &t, NULL);
    cr_assert_not_null(r);
    cr_expect_eq(t->vhosts[0].retry->retry_on, RM_RETRY_ON_CONNECT_FAILURE);
    cr_expect_eq(t->vhosts[0].retry->num_retries, 5);
    rm_route_table_free(t);
}

static void expect_rejected(const char *policy, const char *want)
{
    struct rm_route_table *t;
    char err[512];
    const struct rm_route *r = compile(policy, NULL, &t, err);
    cr_expect_null(r, "%s accepted", policy);
    if (r)
        rm_route_table_free(t);
    else
        cr_expect(strstr(err, want) != NULL, "%s: got \"%s\", want \"%s\"", policy, err, want);
}

Test(retry_policy, rejections_name_the_field)
{
    expect_rejected("{retry_on: '5xx,sometimes'}",
                    "rc.virtual_hosts[0].routes[0].route.retry_policy.retry_on: unknown retry "
                    "condition \"sometimes\"");
    expect_rejected(
        "{retry_host_predicate: [{name: envoy.retry_host_predicates.omit_canary_hosts}]}",
        "route.retry_policy.retry_host_predicate[0]: retry host predicate "
        "\"envoy.retry_host_predicates.omit_canary_hosts\" is not supported");
    expect_rejected("{retry_priority: {name: envoy.retry_priorities.previous_priorities}}",
                    "route.retry_policy.retry_priority:");
    expect_rejected("{rate_limited_retry_back_off: {reset_headers: [{name: retry-after}]}}",
                    "route.retry_policy.rate_limited_retry_back_off:");
    expect_rejected("{retry_options_predicates: [{name: x}]}",
                    "route.retry_policy.retry_options_predicates:");
    expect_rejected("{retry_back_off: {max_interval: 1s}}",
                    "route.retry_policy.retry_back_off.base_interval: required");
    expect_rejected("{retry_back_off: {base_interval: 0s}}",
                    "route.retry_policy.retry_back_off.base_interval: must be greater than zero");
    expect_rejected("{retry_back_off: {base_interval: 1s, max_interval: 0.5s}}",
                    "route.retry_policy.retry_back_off.max_interval: must be greater than or "
                    "equal to the base_interval");
    expect_rejected("{per_try_timeout: -1s}", "route.retry_policy.per_try_timeout");
    expect_rejected("{retriable_headers: [{name: ''}]}", "route.retry_policy.retriable_headers[0]");
}
