/* Unit tests for filters/percent.c and the fault filter's decisions (filters/fault.c) with an
 * injected random value: percentages, header overrides and caps, delays, HTTP / gRPC / header
 * aborts, header matchers, and config validation. */
#include <criterion/criterion.h>
#include <string.h>

#include "envoy/extensions/filters/http/fault/v3/fault.pb-c.h"
#include "filters/fault.h"
#include "filters/filter.h"
#include "filters/percent.h"
#include "proxy/config/pbjson.h"

typedef Envoy__Extensions__Filters__Http__Fault__V3__HTTPFault HTTPFault;

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

TestSuite(percent);
TestSuite(fault, .init = setup, .fini = teardown);

static struct rm_str S(const char *s) {
    return (struct rm_str){s, s ? strlen(s) : 0};
}

/* ---- percentages -------------------------------------------------------------------------- */

Test(percent, hit_is_rnd_mod_denominator_below_numerator)
{
    struct rm_fraction f = {25, 100};
    cr_assert(rm_fraction_hit(f, 0));
    cr_assert(rm_fraction_hit(f, 24));
    cr_assert_not(rm_fraction_hit(f, 25));
    cr_assert_not(rm_fraction_hit(f, 99));
    cr_assert(rm_fraction_hit(f, 124)); /* 124 % 100 = 24 */
    unsigned n = 0;
    for (uint64_t r = 0; r < 1000000; r++)
        n += rm_fraction_hit((struct rm_fraction){1, 10000}, r);
    cr_assert_eq(n, 100);
    cr_assert(rm_fraction_hit((struct rm_fraction){100, 100}, UINT64_MAX));
    cr_assert(rm_fraction_hit((struct rm_fraction){250, 100}, 99)); /* above 100%: always */
    cr_assert_not(rm_fraction_hit((struct rm_fraction){0, 100}, 0));
}

Test(percent, simple_atoi)
{
    uint64_t v = 0;
    cr_assert(rm_parse_simple_u64(S("42"), &v) && v == 42);
    cr_assert(rm_parse_simple_u64(S("  +7\t"), &v) && v == 7);
    cr_assert(rm_parse_simple_u64(S("18446744073709551615"), &v) && v == UINT64_MAX);
    cr_assert_not(rm_parse_simple_u64(S("18446744073709551616"), &v));
    cr_assert_not(rm_parse_simple_u64(S("-1"), &v));
    cr_assert_not(rm_parse_simple_u64(S("1x"), &v));
    cr_assert_not(rm_parse_simple_u64(S(""), &v));
    cr_assert_not(rm_parse_simple_u64(S(" "), &v));
    cr_assert_not(rm_parse_simple_u64((struct rm_str){NULL, 0}, &v));
}

Test(percent, header_lowers_never_raises)
{
    struct rm_fraction cfg = {50, 10000};
    struct rm_fraction f = rm_fraction_from_header(cfg, S("20"));
    cr_assert(f.numerator == 20 && f.denominator == 10000);
    f = rm_fraction_from_header(cfg, S("80")); /* capped at the configured numerator */
    cr_assert(f.numerator == 50 && f.denominator == 10000);
    f = rm_fraction_from_header(cfg, S("junk"));
    cr_assert_eq(f.numerator, 50);
    f = rm_fraction_from_header(cfg, S("4294967296")); /* not a uint32 */
    cr_assert_eq(f.numerator, 50);
    f = rm_fraction_from_header(cfg, (struct rm_str){NULL, 0});
    cr_assert_eq(f.numerator, 50);
}

/* ---- fault settings ----------------------------------------------------------------------- */

static HTTPFault *parse(const char *yaml)
{
    struct rm_error err = {{0}};
    ProtobufCMessage *m = NULL;
    int rc = rm_pbjson_parse_string(
        yaml, strlen(yaml), "t.yaml",
        &envoy__extensions__filters__http__fault__v3__httpfault__descriptor, &m, &err);
    cr_assert_eq(rc, RM_OK, "YAML: %s", err.msg);
    return (HTTPFault *)m;
}

static void settings(struct rm_fault_settings *s, const char *yaml)
{
    HTTPFault *pb = parse(yaml);
    struct rm_error err = {{0}};
    int rc = rm_fault_settings_init(s, pb, "f", &err);
    protobuf_c_message_free_unpacked(&pb->base, NULL);
    cr_assert_eq(rc, RM_OK, "%s", err.msg);
}

static void expect_error(const char *yaml, const char *want)
{
    HTTPFault *pb = parse(yaml);
    struct rm_fault_settings s;
    struct rm_error err = {{0}};
    int rc = rm_fault_settings_init(&s, pb, "f", &err);
    protobuf_c_message_free_unpacked(&pb->base, NULL);
    rm_fault_settings_dispose(&s);
    cr_assert_eq(rc, RM_ERR, "expected: %s", want);
    cr_assert_str_eq(err.msg, want);
}

static struct rm_headers *headers(const char *const *kv)
{
    struct rm_headers *h = rm_arena_alloc(&arena, sizeof(*h));
    rm_headers_init(h, &arena);
    for (; kv && kv[0]; kv += 2)
        rm_headers_add(h, kv[0], strlen(kv[0]), kv[1], strlen(kv[1]));
    return h;
}

Test(fault, fixed_delay_with_percentage)
{
    struct rm_fault_settings s;
    settings(&s, "delay: {fixed_delay: 0.2s, percentage: {numerator: 30}}\n");
    struct rm_headers *h = headers(NULL);
    uint64_t ms = 0;
    cr_assert(rm_fault_delay(&s, h, 29, &ms));
    cr_assert_eq(ms, 200);
    cr_assert_not(rm_fault_delay(&s, h, 30, &ms));
    /* the percentage header only applies to header_delay */
    const char *kv[] = {"x-envoy-fault-delay-request-percentage", "0", NULL};
    cr_assert(rm_fault_delay(&s, headers(kv), 0, &ms));
    unsigned st;
    int g;
    cr_assert_not(rm_fault_abort(&s, h, 0, &st, &g)); /* no abort configured */
    rm_fault_settings_dispose(&s);
}

Test(fault, unset_percentage_is_zero)
{
    struct rm_fault_settings s;
    settings(&s, "delay: {fixed_delay: 1s}\nabort: {http_status: 503}\n");
    uint64_t ms;
    unsigned st;
    int g;
    cr_assert_not(rm_fault_delay(&s, headers(NULL), 0, &ms));
    cr_assert_not(rm_fault_abort(&s, headers(NULL), 0, &st, &g));
    rm_fault_settings_dispose(&s);
}

Test(fault, header_delay)
{
    struct rm_fault_settings s;
    settings(&s, "delay: {header_delay: {}, percentage: {numerator: 100}}\n");
    uint64_t ms = 0;
    cr_assert_not(rm_fault_delay(&s, headers(NULL), 0, &ms)); /* no header: no delay */
    const char *bad[] = {"x-envoy-fault-delay-request", "soon", NULL};
    cr_assert_not(rm_fault_delay(&s, headers(bad), 0, &ms));
    const char *zero[] = {"x-envoy-fault-delay-request", "0", NULL};
    cr_assert_not(rm_fault_delay(&s, headers(zero), 0, &ms)); /* 0 ms is no delay */
    const char *ok[] = {"x-envoy-fault-delay-request", "150", NULL};
    cr_assert(rm_fault_delay(&s, headers(ok), 99, &ms));
    cr_assert_eq(ms, 150);
    const char *pct[] = {"x-envoy-fault-delay-request", "150",
                         "x-envoy-fault-delay-request-percentage", "10", NULL};
    cr_assert(rm_fault_delay(&s, headers(pct), 9, &ms));
    cr_assert_not(rm_fault_delay(&s, headers(pct), 10, &ms));
    rm_fault_settings_dispose(&s);
}

Test(fault, http_and_grpc_aborts)
{
    struct rm_fault_settings s;
    unsigned st = 0;
    int g = 0;
    settings(&s, "abort: {http_status: 418, percentage: {numerator: 1, denominator: MILLION}}\n");
    cr_assert(rm_fault_abort(&s, headers(NULL), 1000000, &st, &g)); /* % 1e6 == 0 < 1 */
    cr_assert(st == 418 && g == -1);
    cr_assert_not(rm_fault_abort(&s, headers(NULL), 1, &st, &g));
    rm_fault_settings_dispose(&s);
    settings(&s, "abort: {grpc_status: 14, percentage: {numerator: 100}}\n");
    cr_assert(rm_fault_abort(&s, headers(NULL), 5, &st, &g));
    cr_assert(st == 200 && g == 14);
    rm_fault_settings_dispose(&s);
}

Test(fault, header_abort)
{
    struct rm_fault_settings s;
    unsigned st = 0;
    int g = 0;
    settings(&s, "abort: {header_abort: {}, percentage: {numerator: 50}}\n");
    cr_assert_not(rm_fault_abort(&s, headers(NULL), 0, &st, &g)); /* no header */
    const char *http[] = {"x-envoy-fault-abort-request", "429", NULL};
    cr_assert(rm_fault_abort(&s, headers(http), 49, &st, &g));
    cr_assert(st == 429 && g == -1);
    cr_assert_not(rm_fault_abort(&s, headers(http), 50, &st, &g));
    const char *out_of_range[] = {"x-envoy-fault-abort-request", "600", NULL};
    cr_assert_not(rm_fault_abort(&s, headers(out_of_range), 0, &st, &g));
    const char *grpc[] = {"x-envoy-fault-abort-grpc-request", "8", NULL};
    cr_assert(rm_fault_abort(&s, headers(grpc), 0, &st, &g));
    cr_assert(st == 200 && g == 8);
    const char *both[] = {"x-envoy-fault-abort-request", "503", "x-envoy-fault-abort-grpc-request",
                          "8", NULL};
    cr_assert(rm_fault_abort(&s, headers(both), 0, &st, &g));
    cr_assert(st == 503 && g == -1); /* the HTTP status wins */
    const char *pct[] = {"x-envoy-fault-abort-request", "503",
                         "x-envoy-fault-abort-request-percentage", "5", NULL};
    cr_assert(rm_fault_abort(&s, headers(pct), 4, &st, &g));
    cr_assert_not(rm_fault_abort(&s, headers(pct), 5, &st, &g));
    rm_fault_settings_dispose(&s);
}

Test(fault, header_matchers_and_fields)
{
    struct rm_fault_settings s;
    settings(&s, "abort: {http_status: 503, percentage: {numerator: 100}}\n"
                 "headers:\n"
                 "- {name: x-fault, string_match: {exact: yes}}\n"
                 "- {name: ':method', string_match: {exact: GET}}\n"
                 "upstream_cluster: backend\n"
                 "max_active_faults: 3\n"
                 "abort_percent_runtime: k\n"
                 "disable_downstream_cluster_stats: true\n");
    const char *yes[] = {":method", "GET", "x-fault", "yes", NULL};
    const char *no[] = {":method", "POST", "x-fault", "yes", NULL};
    cr_assert(rm_fault_headers_match(&s, headers(yes)));
    cr_assert_not(rm_fault_headers_match(&s, headers(no)));
    cr_assert_not(rm_fault_headers_match(&s, headers(NULL)));
    cr_assert_str_eq(s.upstream_cluster, "backend");
    cr_assert(s.has_max_active && s.max_active == 3);
    rm_fault_settings_dispose(&s);
}

Test(fault, config_errors_name_the_field)
{
    expect_error("abort: {percentage: {numerator: 1}}\n",
                 "f.abort: one of http_status, grpc_status or header_abort is required");
    expect_error("abort: {http_status: 199}\n", "f.abort.http_status: 199 is not in [200, 600)");
    expect_error("abort: {http_status: 600}\n", "f.abort.http_status: 600 is not in [200, 600)");
    expect_error("delay: {percentage: {numerator: 1}}\n",
                 "f.delay: one of fixed_delay or header_delay is required");
    expect_error("delay: {fixed_delay: 0s}\n", "f.delay.fixed_delay: must be greater than 0");
    expect_error("downstream_nodes: [n1]\n",
                 "f.downstream_nodes: not supported by remora (x-envoy-downstream-service-node "
                 "is not implemented)");
    expect_error("headers: [{name: ''}]\n", "f.headers[0].name: a valid header name is required");
}

Test(fault, response_rate_limit_rejected_by_name)
{
    HTTPFault *pb = parse("abort: {http_status: 503}\n");
    /* field 7 (response_rate_limit) is absent from remora's HTTPFault: an unknown field */
    ProtobufCMessageUnknownField *u = calloc(1, sizeof(*u));
    u->tag = 7;
    u->wire_type = PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED;
    u->len = 0;
    u->data = NULL;
    pb->base.unknown_fields = u;
    pb->base.n_unknown_fields = 1;
    struct rm_fault_settings s;
    struct rm_error err = {{0}};
    cr_assert_eq(rm_fault_settings_init(&s, pb, "f", &err), RM_ERR);
    cr_assert_str_eq(err.msg, "f.response_rate_limit: not supported by remora");
    rm_fault_settings_dispose(&s);
    protobuf_c_message_free_unpacked(&pb->base, NULL);
}
