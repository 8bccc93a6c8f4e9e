/* Unit tests for filters/token_bucket.c (refills over an injected clock, burst, exactness under
 * concurrent takers) and the local rate limit filter's config validation. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filters/filter.h"
#include "filters/token_bucket.h"
#include "google/protobuf/any.pb-c.h"
#include "proxy/config/pbjson.h"
#include "proxy/config/pbtypes.h"
#include "proxy/http/route.h"

#define MS 1000000ull
#define SEC 1000000000ull
#define T0 (1000 * SEC) /* an arbitrary clock origin */

static void teardown(void)
{
    rm_route_thread_cleanup();
    rm_arena_thread_cleanup();
}

TestSuite(token_bucket);
TestSuite(local_ratelimit, .fini = teardown);

static unsigned take(struct rm_token_bucket *b, uint64_t now, unsigned tries)
{
    unsigned ok = 0;
    for (unsigned i = 0; i < tries; i++)
        ok += rm_token_bucket_consume(b, now, NULL);
    return ok;
}

Test(token_bucket, starts_full_burst_then_empty)
{
    struct rm_token_bucket b;
    rm_token_bucket_init(&b, 5, 1, 1 * SEC, T0);
    uint32_t left = 99;
    cr_assert(rm_token_bucket_consume(&b, T0, &left));
    cr_assert_eq(left, 4);
    cr_assert_eq(take(&b, T0 + 999 * MS, 10), 4); /* the rest of the burst, no refill yet */
    cr_assert_not(rm_token_bucket_consume(&b, T0 + 999 * MS, &left));
    cr_assert_eq(left, 0);
    cr_assert_eq(rm_token_bucket_tokens(&b, T0 + 999 * MS), 0);
}

Test(token_bucket, refills_at_interval_boundaries)
{
    struct rm_token_bucket b;
    rm_token_bucket_init(&b, 10, 3, 100 * MS, T0);
    cr_assert_eq(take(&b, T0, 100), 10);
    cr_assert_eq(rm_token_bucket_tokens(&b, T0 + 99 * MS), 0);
    cr_assert_eq(rm_token_bucket_tokens(&b, T0 + 100 * MS), 3); /* first refill point */
    cr_assert_eq(take(&b, T0 + 150 * MS, 100), 3);
    /* two more points (200, 300 ms): 6 tokens; points are aligned to the start, not to takes */
    cr_assert_eq(take(&b, T0 + 399 * MS, 100), 6);
    /* a long idle time fills up to max_tokens only */
    cr_assert_eq(rm_token_bucket_tokens(&b, T0 + 60 * SEC), 10);
    cr_assert_eq(take(&b, T0 + 60 * SEC, 100), 10);
}

Test(token_bucket, older_clock_reading_never_refills_twice)
{
    struct rm_token_bucket b;
    rm_token_bucket_init(&b, 2, 2, 100 * MS, T0);
    cr_assert_eq(take(&b, T0, 2), 2);
    cr_assert_eq(take(&b, T0 + 250 * MS, 1), 1); /* refill point 2 reached: 2 tokens, 1 left */
    /* a thread whose clock reading is older (point 1) sees the stored state unchanged */
    cr_assert_eq(take(&b, T0 + 120 * MS, 5), 1);
    cr_assert_eq(take(&b, T0 + 299 * MS, 5), 0);
    cr_assert_eq(take(&b, T0 + 300 * MS, 5), 2);
    /* a reading before the start counts as the start */
    cr_assert_eq(take(&b, T0 - SEC, 5), 0);
}

Test(token_bucket, reset_seconds_as_envoy)
{
    struct rm_token_bucket b;
    rm_token_bucket_init(&b, 1, 1, 60 * SEC, T0);
    cr_assert_eq(rm_token_bucket_reset_seconds(&b, T0), 60);
    cr_assert_eq(rm_token_bucket_reset_seconds(&b, T0 + 10 * SEC + 500 * MS), 50);
    cr_assert_eq(rm_token_bucket_reset_seconds(&b, T0 + 130 * SEC), 50); /* 10 s into the 3rd */
    rm_token_bucket_init(&b, 1, 1, 500 * MS, T0);
    cr_assert_eq(rm_token_bucket_reset_seconds(&b, T0 + 100 * MS), 0);
}

/* ---- concurrency -------------------------------------------------------------------------- */

struct worker_arg {
    struct rm_token_bucket *b;
    const uint64_t *clock; /* shared fake clock, advanced by the main thread */
    unsigned tries;
    unsigned ok;
};

static void *worker(void *p)
{
    struct worker_arg *a = p;
    for (unsigned i = 0; i < a->tries; i++)
        a->ok += rm_token_bucket_consume(a->b, __atomic_load_n(a->clock, __ATOMIC_RELAXED), NULL);
    return NULL;
}

#define THREADS 8

static unsigned run_threads(struct rm_token_bucket *b, const uint64_t *clock, unsigned tries)
{
    pthread_t t[THREADS];
    struct worker_arg a[THREADS];
    for (int i = 0; i < THREADS; i++) {
        a[i] = (struct worker_arg){b, clock, tries, 0};
        cr_assert_eq(pthread_create(&t[i], NULL, worker, &a[i]), 0);
    }
    unsigned ok = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        ok += a[i].ok;
    }
    return ok;
}

Test(token_bucket, exact_under_concurrent_takers)
{
    struct rm_token_bucket b;
    uint64_t clock = T0;
    rm_token_bucket_init(&b, 1000, 1, SEC, T0);
    /* 8 threads x 10000 tries at a fixed time: exactly the burst gets through */
    cr_assert_eq(run_threads(&b, &clock, 10000), 1000);
    /* after 5 refill points (5 x 1 token)... with tokens_per_fill 1 */
    clock = T0 + 5 * SEC;
    cr_assert_eq(run_threads(&b, &clock, 100), 5);
}

struct ticker_arg {
    uint64_t *clock;
    volatile int *stop;
};

static void *ticker(void *p)
{
    struct ticker_arg *a = p;
    while (!*a->stop) {
        __atomic_fetch_add(a->clock, 7 * MS, __ATOMIC_RELAXED);
        sched_yield();
    }
    return NULL;
}

Test(token_bucket, exact_while_the_clock_moves)
{
    /* takers race a moving clock: successes never exceed max + refills due at the final time */
    struct rm_token_bucket b;
    uint64_t clock = T0;
    volatile int stop = 0;
    rm_token_bucket_init(&b, 50, 3, 100 * MS, T0);
    pthread_t tk;
    struct ticker_arg ta = {&clock, &stop};
    cr_assert_eq(pthread_create(&tk, NULL, ticker, &ta), 0);
    unsigned ok = run_threads(&b, &clock, 20000);
    stop = 1;
    pthread_join(tk, NULL);
    uint64_t end = __atomic_load_n(&clock, __ATOMIC_RELAXED);
    uint64_t points = (end - T0) / (100 * MS);
    uint32_t left = rm_token_bucket_tokens(&b, end);
    cr_assert_leq(ok + left, 50 + points * 3, "ok=%u left=%u points=%llu", ok, left,
                  (unsigned long long)points);
    cr_assert_geq(ok, 50);
}

/* ---- config validation -------------------------------------------------------------------- */

#define LRL_TYPE                                                                                   \
    "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"

/* An Any holding <yaml> (the LocalRateLimit fields, JSON mapping). */
static Google__Protobuf__Any *any_of(const char *yaml)
{
    char doc[4096];
    snprintf(doc, sizeof(doc), "'@type': %s\n%s", LRL_TYPE, yaml);
    struct rm_error err = {{0}};
    ProtobufCMessage *m = NULL;
    int rc = rm_pbjson_parse_string(doc, strlen(doc), "t.yaml", &google__protobuf__any__descriptor,
                                    &m, &err);
    cr_assert_eq(rc, RM_OK, "YAML: %s", err.msg);
    return (Google__Protobuf__Any *)m;
}

static void expect_cfg_error(const char *yaml, bool per_route, const char *want)
{
    Google__Protobuf__Any *any = any_of(yaml);
    struct rm_error err = {{0}};
    const struct rm_filter_ops *ops = &rm_filter_local_ratelimit;
    void *c = per_route ? ops->route_config_new(any, "p", &err) : ops->config_new(any, "p", &err);
    protobuf_c_message_free_unpacked(&any->base, NULL);
    if (c) (per_route ? ops->route_config_free : ops->config_free)(c);
    cr_assert_null(c, "expected: %s", want);
    cr_assert_str_eq(err.msg, want);
}

static void expect_cfg_ok(const char *yaml, bool per_route)
{
    Google__Protobuf__Any *any = any_of(yaml);
    struct rm_error err = {{0}};
    const struct rm_filter_ops *ops = &rm_filter_local_ratelimit;
    void *c = per_route ? ops->route_config_new(any, "p", &err) : ops->config_new(any, "p", &err);
    protobuf_c_message_free_unpacked(&any->base, NULL);
    cr_assert_not_null(c, "%s", err.msg);
    (per_route ? ops->route_config_free : ops->config_free)(c);
}

#define TB "token_bucket: {max_tokens: 5, fill_interval: 1s}\n"

Test(local_ratelimit, config_accepts)
{
    expect_cfg_ok("stat_prefix: s\n", false); /* no bucket: fine at filter level */
    expect_cfg_ok("stat_prefix: s\n" TB
                  "filter_enabled: {default_value: {numerator: 100}, runtime_key: k}\n"
                  "filter_enforced: {default_value: {numerator: 5, denominator: TEN_THOUSAND}}\n"
                  "status: {code: ServiceUnavailable}\n"
                  "response_headers_to_add: [{header: {key: x-rl, value: '1'}}]\n"
                  "request_headers_to_add_when_not_enforced: [{header: {key: x-n, value: '1'}}]\n"
                  "local_rate_limit_per_downstream_connection: true\n"
                  "enable_x_ratelimit_headers: DRAFT_VERSION_03\n"
                  "rate_limited_as_resource_exhausted: true\n"
                  "always_consume_default_token_bucket: false\n"
                  "stage: 3\n",
                  true);
}

Test(local_ratelimit, config_rejects_naming_the_field)
{
    expect_cfg_error("", false, "p.typed_config.stat_prefix: required");
    expect_cfg_error("stat_prefix: s\n", true, "p.token_bucket: required in a per-route config");
    expect_cfg_error("stat_prefix: s\ntoken_bucket: {max_tokens: 0, fill_interval: 1s}\n", false,
                     "p.typed_config.token_bucket.max_tokens: must be greater than 0");
    expect_cfg_error("stat_prefix: s\ntoken_bucket: {max_tokens: 1}\n", true,
                     "p.token_bucket.fill_interval: required");
    expect_cfg_error("stat_prefix: s\ntoken_bucket: {max_tokens: 1, fill_interval: 0.01s}\n", true,
                     "p.token_bucket.fill_interval: must be at least 50ms (as in Envoy)");
    expect_cfg_error("stat_prefix: s\ntoken_bucket: {max_tokens: 1, tokens_per_fill: 0, "
                     "fill_interval: 1s}\n",
                     true, "p.token_bucket.tokens_per_fill: must be greater than 0");
    expect_cfg_error("stat_prefix: s\n" TB "filter_enabled: {runtime_key: k}\n", true,
                     "p.filter_enabled.default_value: required");
    expect_cfg_error("stat_prefix: s\n" TB "status: {}\n", true, "p.status.code: required");
    expect_cfg_error("stat_prefix: s\n" TB "stage: 11\n", true, "p.stage: must be at most 10");
    expect_cfg_error("stat_prefix: s\n" TB
                     "response_headers_to_add: [{header: {key: ':status', value: '1'}}]\n",
                     true,
                     "p.response_headers_to_add[0].header.key: ':'-prefixed or host headers may "
                     "not be modified (\":status\")");
}

/* Fields remora's .proto lacks arrive as unknown fields: build them by hand. */
Test(local_ratelimit, unsupported_fields_named)
{
    static const struct {
        uint32_t tag;
        const char *want;
    } cases[] = {
        {8, "p.descriptors: not supported by remora"},
        {13, "p.vh_rate_limits: not supported by remora"},
        {16, "p.local_cluster_rate_limit: not supported by remora"},
        {17, "p.rate_limits: not supported by remora"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        Google__Protobuf__Any *any = any_of("stat_prefix: s\n" TB);
        /* append a length-delimited field with an empty payload: tag << 3 | 2, length 0 */
        size_t n = any->value.len;
        uint8_t *v = malloc(n + 3);
        memcpy(v, any->value.data, n);
        size_t k = n;
        uint32_t key = cases[i].tag << 3 | 2;
        while (key >= 0x80) {
            v[k++] = (uint8_t)(key | 0x80);
            key >>= 7;
        }
        v[k++] = (uint8_t)key;
        v[k++] = 0;
        free(any->value.data);
        any->value.data = v;
        any->value.len = k;
        struct rm_error err = {{0}};
        void *c = rm_filter_local_ratelimit.route_config_new(any, "p", &err);
        protobuf_c_message_free_unpacked(&any->base, NULL);
        cr_assert_null(c);
        cr_assert_str_eq(err.msg, cases[i].want);
    }
}
