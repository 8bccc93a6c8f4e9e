/* Access log filters (proxy/http/access_log_filter.c): every filter kind on hand-made stream
 * descriptions, and/or nesting, and every configuration error with its field path. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/config/accesslog/v3/accesslog.pb-c.h"
#include "proxy/config/pbjson.h"
#include "proxy/config/pbprint.h"
#include "proxy/config/pbtypes.h"
#include "proxy/config/strbuf.h"
#include "proxy/core/arena.h"
#include "proxy/http/access_log.h"
#include "proxy/http/access_log_filter.h"
#include "proxy/http/headers.h"
#include "proxy/http/route.h"

typedef Envoy__Config__Accesslog__V3__AccessLogFilter FilterPb;

static struct rm_arena arena;
static struct rm_headers req, resp, trailers;

static void setup(void)
{
    rm_arena_init(&arena);
    rm_headers_init(&req, &arena);
    rm_headers_init(&resp, &arena);
    rm_headers_init(&trailers, &arena);
}

static void teardown(void)
{
    rm_arena_dispose(&arena);
    rm_route_thread_cleanup();
    rm_arena_thread_cleanup();
}

TestSuite(alog_filter, .init = setup, .fini = teardown);

static FilterPb *parse(const char *yaml)
{
    struct rm_error err = {{0}};
    ProtobufCMessage *m = NULL;
    int rc = rm_pbjson_parse_string(yaml, strlen(yaml), "t.yaml",
                                    &envoy__config__accesslog__v3__access_log_filter__descriptor,
                                    &m, &err);
    cr_assert_eq(rc, RM_OK, "YAML: %s", err.msg);
    return (FilterPb *)m;
}

static struct rm_alog_filter *compile(const char *yaml)
{
    FilterPb *pb = parse(yaml);
    struct rm_error err = {{0}};
    struct rm_alog_filter *f = rm_alog_filter_new(pb, "al[0].filter", &err);
    protobuf_c_message_free_unpacked(&pb->base, NULL);
    cr_assert_not_null(f, "%s: %s", yaml, err.msg);
    return f;
}

/* A stream: status, flags, duration; headers as set up by the test. */
static struct rm_alog_info info(unsigned status, const char *flags, int64_t duration_ms)
{
    return (struct rm_alog_info){.req = &req,
                                 .resp = &resp,
                                 .trailers = &trailers,
                                 .status = status,
                                 .resp_flags = flags,
                                 .duration_ms = duration_ms,
                                 .req_duration_ms = -1,
                                 .resp_duration_ms = -1};
}

static bool eval(const char *yaml, const struct rm_alog_info *in)
{
    struct rm_alog_filter *f = compile(yaml);
    bool r = rm_alog_filter_eval(f, in);
    rm_alog_filter_free(f);
    return r;
}

static void add(struct rm_headers *h, const char *name, const char *value)
{
    rm_headers_add(h, name, strlen(name), value, strlen(value));
}

/* ---- comparisons -------------------------------------------------------------------------- */

#define STATUS(op, v)                                                                              \
    "{status_code_filter: {comparison: {op: " op ", value: {default_value: " v "}}}}"

Test(alog_filter, status_code_eq_ge_le)
{
    struct rm_alog_info in = info(503, NULL, 1);
    cr_assert(eval(STATUS("GE", "500"), &in));
    cr_assert(eval(STATUS("GE", "503"), &in));
    cr_assert_not(eval(STATUS("GE", "504"), &in));
    cr_assert(eval(STATUS("EQ", "503"), &in));
    cr_assert(eval(STATUS("LE", "503"), &in));
    cr_assert_not(eval(STATUS("LE", "502"), &in));
    cr_assert_not(eval(STATUS("EQ", "500"), &in));
    in.status = 200;
    cr_assert_not(eval(STATUS("GE", "500"), &in));
    cr_assert(eval(STATUS("LE", "299"), &in));
    /* op defaults to EQ (0); no response counts as status 0, as Envoy */
    in.status = 0;
    cr_assert(eval("{status_code_filter: {comparison: {value: {default_value: 0}}}}", &in));
    cr_assert(eval(STATUS("LE", "399"), &in));
    /* runtime_key is accepted and ignored: remora has no runtime */
    in.status = 404;
    cr_assert(eval("{status_code_filter: {comparison: {op: GE, value: {default_value: 400, "
                   "runtime_key: access_log.min_status}}}}",
                   &in));
}

#define DURATION(op, v)                                                                            \
    "{duration_filter: {comparison: {op: " op ", value: {default_value: " v "}}}}"

Test(alog_filter, duration_ms)
{
    struct rm_alog_info in = info(200, NULL, 150);
    cr_assert(eval(DURATION("GE", "100"), &in));
    cr_assert(eval(DURATION("GE", "150"), &in));
    cr_assert_not(eval(DURATION("GE", "151"), &in));
    cr_assert(eval(DURATION("LE", "150"), &in));
    cr_assert(eval(DURATION("EQ", "150"), &in));
    in.duration_ms = 0;
    cr_assert(eval(DURATION("LE", "0"), &in));
    in.duration_ms = -1; /* unknown: false, as Envoy without a duration */
    cr_assert_not(eval(DURATION("LE", "1000"), &in));
    cr_assert_not(eval(DURATION("GE", "0"), &in));
}

/* ---- health checks and constants ---------------------------------------------------------- */

Test(alog_filter, not_health_check_and_traceable_false)
{
    struct rm_alog_info in = info(200, NULL, 1);
    cr_assert(eval("{not_health_check_filter: {}}", &in));
    in.health_check = true; /* envoy.filters.http.health_check matched the request */
    cr_assert_not(eval("{not_health_check_filter: {}}", &in));
    cr_assert_not(eval("{traceable_filter: {}}", &in));
}

Test(alog_filter, log_type_is_downstream_end)
{
    struct rm_alog_info in = info(200, NULL, 1);
    cr_assert(eval("{log_type_filter: {types: [DownstreamEnd]}}", &in));
    cr_assert(eval("{log_type_filter: {types: [DownstreamStart, DownstreamEnd]}}", &in));
    cr_assert_not(eval("{log_type_filter: {types: [DownstreamStart, DownstreamPeriodic]}}", &in));
    cr_assert_not(eval("{log_type_filter: {}}", &in));
    cr_assert_not(eval("{log_type_filter: {types: [DownstreamEnd], exclude: true}}", &in));
    cr_assert(eval("{log_type_filter: {types: [TcpConnectionEnd], exclude: true}}", &in));
    cr_assert(eval("{log_type_filter: {exclude: true}}", &in));
}

/* ---- runtime ------------------------------------------------------------------------------ */

Test(alog_filter, runtime_default_is_zero_percent)
{
    add(&req, "x-request-id", "00000000-0000-4000-8000-000000000000");
    struct rm_alog_info in = info(200, NULL, 1);
    for (int i = 0; i < 50; i++)
        cr_assert_not(eval("{runtime_filter: {runtime_key: k}}", &in));
    cr_assert_not(
        eval("{runtime_filter: {runtime_key: k, use_independent_randomness: true}}", &in));
    cr_assert(eval("{runtime_filter: {runtime_key: k, percent_sampled: {numerator: 100}}}", &in));
}

#define RUNTIME_50 "{runtime_filter: {runtime_key: k, percent_sampled: {numerator: 50}}}"

Test(alog_filter, runtime_pivots_on_request_id_like_envoy)
{
    /* Envoy's UUID request ids: the first 8 hex digits, modulo the denominator */
    add(&req, "x-request-id", "00000031-aaaa-4bbb-8ccc-dddddddddddd"); /* 49 */
    struct rm_alog_info in = info(200, NULL, 1);
    for (int i = 0; i < 20; i++)
        cr_assert(eval(RUNTIME_50, &in));
    req.n = 0;
    add(&req, "x-request-id", "00000032-aaaa-4bbb-8ccc-dddddddddddd"); /* 50 */
    for (int i = 0; i < 20; i++)
        cr_assert_not(eval(RUNTIME_50, &in));
    req.n = 0;
    add(&req, "x-request-id", "0000ffff-aaaa-4bbb-8ccc-dddddddddddd"); /* 65535 % 100 = 35 */
    cr_assert(eval(RUNTIME_50, &in));
    /* other denominators */
    const char *tt = "{runtime_filter: {runtime_key: k, percent_sampled: {numerator: 5000, "
                     "denominator: TEN_THOUSAND}}}";
    req.n = 0;
    add(&req, "x-request-id", "00001387"); /* 4999 */
    cr_assert(eval(tt, &in));
    req.n = 0;
    add(&req, "x-request-id", "00001388"); /* 5000 */
    cr_assert_not(eval(tt, &in));
}

Test(alog_filter, runtime_other_request_ids_are_stable)
{
    add(&req, "x-request-id", "not-a-uuid: some tracing system's id");
    struct rm_alog_info in = info(200, NULL, 1);
    bool first = eval(RUNTIME_50, &in);
    for (int i = 0; i < 50; i++)
        cr_assert_eq(eval(RUNTIME_50, &in), first);
    /* over many ids, about half are sampled */
    unsigned hits = 0;
    char id[32];
    for (int i = 0; i < 1000; i++) {
        req.n = 0;
        snprintf(id, sizeof(id), "req-%d", i);
        add(&req, "x-request-id", id);
        hits += eval(RUNTIME_50, &in);
    }
    cr_assert(hits > 400 && hits < 600, "%u of 1000", hits);
}

Test(alog_filter, runtime_random_without_request_id_or_when_independent)
{
    struct rm_alog_info in = info(200, NULL, 1);
    struct rm_alog_filter *f = compile(RUNTIME_50);
    unsigned hits = 0;
    for (int i = 0; i < 2000; i++)
        hits += rm_alog_filter_eval(f, &in);
    cr_assert(hits > 800 && hits < 1200, "no request id: %u of 2000", hits);
    rm_alog_filter_free(f);
    add(&req, "x-request-id", "00000032"); /* would never be sampled */
    f = compile("{runtime_filter: {runtime_key: k, percent_sampled: {numerator: 50}, "
                "use_independent_randomness: true}}");
    hits = 0;
    for (int i = 0; i < 2000; i++)
        hits += rm_alog_filter_eval(f, &in);
    cr_assert(hits > 800 && hits < 1200, "independent: %u of 2000", hits);
    rm_alog_filter_free(f);
}

/* ---- headers ------------------------------------------------------------------------------ */

Test(alog_filter, header_filter_uses_route_header_matcher)
{
    add(&req, ":method", "POST");
    add(&req, ":path", "/api/v1");
    add(&req, "x-env", "prod");
    struct rm_alog_info in = info(200, NULL, 1);
    cr_assert(eval("{header_filter: {header: {name: x-env, string_match: {exact: prod}}}}", &in));
    cr_assert_not(
        eval("{header_filter: {header: {name: x-env, string_match: {exact: dev}}}}", &in));
    cr_assert(eval("{header_filter: {header: {name: X-Env, present_match: true}}}", &in));
    cr_assert_not(eval("{header_filter: {header: {name: x-debug, present_match: true}}}", &in));
    cr_assert(eval("{header_filter: {header: {name: x-debug, present_match: true, "
                   "invert_match: true}}}",
                   &in));
    cr_assert(
        eval("{header_filter: {header: {name: ':path', string_match: {prefix: /api/}}}}", &in));
    cr_assert(eval("{header_filter: {header: {name: ':method', string_match: {safe_regex: "
                   "{regex: 'P(OS|U)T'}}}}}",
                   &in));
    /* no request headers at all: as an empty block */
    struct rm_alog_info bare = {.status = 200, .duration_ms = 1};
    cr_assert_not(
        eval("{header_filter: {header: {name: x-env, string_match: {exact: prod}}}}", &bare));
    cr_assert(eval("{header_filter: {header: {name: x-env, present_match: false}}}", &bare));
    /* a repeated header is matched on its values joined with ',', as routes do */
    add(&req, "x-tag", "a");
    add(&req, "x-tag", "b");
    cr_assert(eval("{header_filter: {header: {name: x-tag, string_match: {exact: 'a,b'}}}}", &in));
}

/* ---- response flags ----------------------------------------------------------------------- */

Test(alog_filter, response_flags)
{
    struct rm_alog_info in = info(503, "UF", 1);
    cr_assert(eval("{response_flag_filter: {}}", &in)); /* any flag */
    cr_assert(eval("{response_flag_filter: {flags: [UH, UF]}}", &in));
    cr_assert_not(eval("{response_flag_filter: {flags: [UH, NR]}}", &in));
    in.resp_flags = "UF,URX";
    cr_assert(eval("{response_flag_filter: {flags: [URX]}}", &in));
    cr_assert(eval("{response_flag_filter: {flags: [UF]}}", &in));
    cr_assert_not(eval("{response_flag_filter: {flags: [UR, UC, UT]}}", &in));
    in.resp_flags = "DC";
    cr_assert(eval("{response_flag_filter: {flags: [DC]}}", &in));
    in.resp_flags = NULL;
    cr_assert_not(eval("{response_flag_filter: {}}", &in));
    cr_assert_not(eval("{response_flag_filter: {flags: [UF]}}", &in));
    in.resp_flags = "";
    cr_assert_not(eval("{response_flag_filter: {}}", &in));
    /* every Envoy short name is accepted */
    cr_assert_not(eval("{response_flag_filter: {flags: [LH, UH, UT, LR, UR, UF, UC, UO, NR, DI, "
                       "FI, RL, UAEX, RLSE, DC, URX, SI, IH, DPE, UMSDR, RFCF, NFCF, DT, UPE, NC, "
                       "OM, DF, DO, DR, UDO]}}",
                       &in));
    in.resp_flags = "UDO";
    cr_assert(eval("{response_flag_filter: {flags: [LH, UDO]}}", &in));
}

/* ---- gRPC status -------------------------------------------------------------------------- */

Test(alog_filter, grpc_status_from_trailers_then_headers)
{
    add(&resp, "grpc-status", "14");
    add(&trailers, "grpc-status", "0");
    struct rm_alog_info in = info(200, NULL, 1);
    cr_assert(eval("{grpc_status_filter: {statuses: [OK]}}", &in)); /* trailers first */
    cr_assert_not(eval("{grpc_status_filter: {statuses: [UNAVAILABLE]}}", &in));
    cr_assert_not(eval("{grpc_status_filter: {statuses: [OK], exclude: true}}", &in));
    in.trailers = NULL; /* trailers-only response: grpc-status in the headers */
    cr_assert(eval("{grpc_status_filter: {statuses: [UNAVAILABLE]}}", &in));
    cr_assert(eval("{grpc_status_filter: {statuses: [OK], exclude: true}}", &in));
    cr_assert(eval("{grpc_status_filter: {statuses: [INTERNAL, UNAVAILABLE]}}", &in));
}

Test(alog_filter, grpc_status_invalid_matches_nothing)
{
    add(&trailers, "grpc-status", "abc");
    struct rm_alog_info in = info(200, NULL, 1);
    cr_assert_not(eval("{grpc_status_filter: {statuses: [OK, UNKNOWN]}}", &in));
    cr_assert(eval("{grpc_status_filter: {statuses: [OK, UNKNOWN], exclude: true}}", &in));
    trailers.n = 0;
    add(&trailers, "grpc-status", "17"); /* beyond UNAUTHENTICATED: invalid for Envoy too */
    cr_assert_not(eval("{grpc_status_filter: {statuses: [UNKNOWN, UNAUTHENTICATED]}}", &in));
    trailers.n = 0;
    add(&trailers, "grpc-status", " 16 "); /* absl::SimpleAtoi takes spaces */
    cr_assert(eval("{grpc_status_filter: {statuses: [UNAUTHENTICATED]}}", &in));
}

Test(alog_filter, grpc_status_derived_from_http_status)
{
    static const struct {
        unsigned http;
        const char *grpc;
    } map[] = {{400, "INTERNAL"},
               {401, "UNAUTHENTICATED"},
               {403, "PERMISSION_DENIED"},
               {404, "UNIMPLEMENTED"},
               {429, "UNAVAILABLE"},
               {502, "UNAVAILABLE"},
               {503, "UNAVAILABLE"},
               {504, "UNAVAILABLE"},
               {200, "UNKNOWN"},
               {500, "UNKNOWN"},
               {0, "UNKNOWN"}};
    char yaml[128];
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        struct rm_alog_info in = info(map[i].http, NULL, 1);
        snprintf(yaml, sizeof(yaml), "{grpc_status_filter: {statuses: [%s]}}", map[i].grpc);
        cr_assert(eval(yaml, &in), "%u -> %s", map[i].http, map[i].grpc);
        cr_assert_not(eval("{grpc_status_filter: {statuses: [OK]}}", &in), "%u", map[i].http);
    }
    /* no headers at all (a reset before any response) */
    struct rm_alog_info none = {.duration_ms = 1};
    cr_assert(eval("{grpc_status_filter: {statuses: [UNKNOWN]}}", &none));
}

/* ---- and / or ----------------------------------------------------------------------------- */

/* status >= 500, or (header x-debug present and a response flag) */
static const char nested[] =
    "{or_filter: {filters: ["
    "  " STATUS("GE", "500") ","
                             "  {and_filter: {filters: ["
                             "    {header_filter: {header: {name: x-debug, present_match: true}}},"
                             "    {response_flag_filter: {}}]}}]}}";

Test(alog_filter, and_or_nested)
{
    struct rm_alog_filter *f = compile(nested);
    struct rm_alog_info in = info(503, NULL, 1);
    cr_assert(rm_alog_filter_eval(f, &in));
    in.status = 404;
    cr_assert_not(rm_alog_filter_eval(f, &in));
    in.resp_flags = "NR";
    cr_assert_not(rm_alog_filter_eval(f, &in)); /* no x-debug */
    add(&req, "x-debug", "1");
    cr_assert(rm_alog_filter_eval(f, &in));
    in.resp_flags = NULL;
    cr_assert_not(rm_alog_filter_eval(f, &in));
    rm_alog_filter_free(f);

    struct rm_alog_info ok = info(200, NULL, 1);
    cr_assert(eval(
        "{and_filter: {filters: [{not_health_check_filter: {}}, " STATUS("EQ", "200") "]}}", &ok));
    cr_assert_not(
        eval("{and_filter: {filters: [" STATUS("EQ", "200") ", {traceable_filter: {}}, "
                                                            "{not_health_check_filter: {}}]}}",
             &ok));
    cr_assert(eval("{or_filter: {filters: [{traceable_filter: {}}, {traceable_filter: {}}, "
                   "{not_health_check_filter: {}}]}}",
                   &ok));
    cr_assert_not(
        eval("{or_filter: {filters: [{traceable_filter: {}}, " STATUS("GE", "300") "]}}", &ok));
}

/* Short-circuit: the second operand is not evaluated once the first decides.  Observed through
 * a header_filter on a repeated header, which joins the values in the request's arena. */
Test(alog_filter, and_or_short_circuit)
{
    add(&req, "x-tag", "a");
    add(&req, "x-tag", "b");
    struct rm_alog_info in = info(200, NULL, 1);
    const char *hdr = "{header_filter: {header: {name: x-tag, present_match: true}}}";
    char yaml[512];
    snprintf(yaml, sizeof(yaml), "{or_filter: {filters: [{not_health_check_filter: {}}, %s]}}",
             hdr);
    struct rm_alog_filter *f = compile(yaml);
    const char *before = arena.cur;
    cr_assert(rm_alog_filter_eval(f, &in));
    cr_assert_eq(arena.cur, before, "or: the header filter ran");
    rm_alog_filter_free(f);
    snprintf(yaml, sizeof(yaml), "{and_filter: {filters: [{traceable_filter: {}}, %s]}}", hdr);
    f = compile(yaml);
    cr_assert_not(rm_alog_filter_eval(f, &in));
    cr_assert_eq(arena.cur, before, "and: the header filter ran");
    rm_alog_filter_free(f);
    /* and the probe itself works: evaluated, it does allocate */
    f = compile(hdr);
    cr_assert(rm_alog_filter_eval(f, &in));
    cr_assert_neq(arena.cur, before);
    rm_alog_filter_free(f);
}

/* ---- configuration errors ----------------------------------------------------------------- */

static void expect_error_pb(const FilterPb *pb, const char *want)
{
    struct rm_error err = {{0}};
    struct rm_alog_filter *f = rm_alog_filter_new(pb, "al[0].filter", &err);
    cr_assert_null(f, "accepted; wanted \"%s\"", want);
    cr_assert(strstr(err.msg, want), "got \"%s\", wanted \"%s\"", err.msg, want);
}

static void expect_error(const char *yaml, const char *want)
{
    FilterPb *pb = parse(yaml);
    expect_error_pb(pb, want);
    protobuf_c_message_free_unpacked(&pb->base, NULL);
}

Test(alog_filter, error_no_filter_set)
{
    expect_error("{}", "al[0].filter: one of status_code_filter, duration_filter");
    expect_error("{and_filter: {filters: [{}, {traceable_filter: {}}]}}",
                 "al[0].filter.and_filter.filters[0]: one of status_code_filter");
}

Test(alog_filter, error_comparisons)
{
    expect_error("{status_code_filter: {}}",
                 "al[0].filter.status_code_filter.comparison: required");
    expect_error("{duration_filter: {}}", "al[0].filter.duration_filter.comparison: required");
    expect_error("{status_code_filter: {comparison: {op: GE}}}",
                 "al[0].filter.status_code_filter.comparison.value: required");
    expect_error("{duration_filter: {comparison: {op: LE}}}",
                 "al[0].filter.duration_filter.comparison.value: required");
    /* an op number Envoy does not define (xDS binary input keeps it) */
    FilterPb *pb = parse(STATUS("GE", "500"));
    pb->status_code_filter->comparison->op = 7;
    expect_error_pb(pb, "al[0].filter.status_code_filter.comparison.op: unknown operator 7");
    protobuf_c_message_free_unpacked(&pb->base, NULL);
}

Test(alog_filter, error_nested_path)
{
    expect_error("{and_filter: {filters: [{not_health_check_filter: {}}, "
                 "{or_filter: {filters: [{traceable_filter: {}}, "
                 "{status_code_filter: {comparison: {op: GE}}}]}}]}}",
                 "al[0].filter.and_filter.filters[1].or_filter.filters[1].status_code_filter."
                 "comparison.value: required");
    FilterPb *pb =
        parse("{and_filter: {filters: [{traceable_filter: {}}, " STATUS("GE", "500") "]}}");
    pb->and_filter->filters[1]->status_code_filter->comparison->op = 3;
    expect_error_pb(pb, "al[0].filter.and_filter.filters[1].status_code_filter.comparison.op: "
                        "unknown operator 3 (EQ, GE or LE)");
    protobuf_c_message_free_unpacked(&pb->base, NULL);
}

Test(alog_filter, error_and_or_need_two)
{
    expect_error("{and_filter: {filters: [{traceable_filter: {}}]}}",
                 "al[0].filter.and_filter.filters: at least 2 filters are required (1 given)");
    expect_error("{or_filter: {}}",
                 "al[0].filter.or_filter.filters: at least 2 filters are required (0 given)");
}

Test(alog_filter, error_runtime)
{
    expect_error("{runtime_filter: {percent_sampled: {numerator: 5}}}",
                 "al[0].filter.runtime_filter.runtime_key: required");
    FilterPb *pb = parse(RUNTIME_50);
    pb->runtime_filter->percent_sampled->denominator = 9;
    expect_error_pb(pb, "al[0].filter.runtime_filter.percent_sampled.denominator: unknown value 9");
    protobuf_c_message_free_unpacked(&pb->base, NULL);
}

Test(alog_filter, error_header)
{
    expect_error("{header_filter: {}}", "al[0].filter.header_filter.header: required");
    expect_error("{header_filter: {header: {name: x, string_match: {safe_regex: {regex: '(a'}}}}}",
                 "al[0].filter.header_filter.header.string_match.safe_regex");
    expect_error("{header_filter: {header: {string_match: {exact: a}}}}",
                 "al[0].filter.header_filter.header");
}

Test(alog_filter, error_response_flag)
{
    expect_error("{response_flag_filter: {flags: [UF, XX]}}",
                 "al[0].filter.response_flag_filter.flags[1]: unknown response flag \"XX\"");
    expect_error("{response_flag_filter: {flags: [uf]}}",
                 "al[0].filter.response_flag_filter.flags[0]: unknown response flag \"uf\"");
}

Test(alog_filter, error_grpc_status_and_log_type_values)
{
    FilterPb *pb = parse("{grpc_status_filter: {statuses: [OK, INTERNAL]}}");
    pb->grpc_status_filter->statuses[1] = 17;
    expect_error_pb(pb, "al[0].filter.grpc_status_filter.statuses[1]: unknown gRPC status 17");
    protobuf_c_message_free_unpacked(&pb->base, NULL);
    pb = parse("{log_type_filter: {types: [DownstreamEnd]}}");
    pb->log_type_filter->types[0] = 99;
    expect_error_pb(pb, "al[0].filter.log_type_filter.types[0]: unknown access log type 99");
    protobuf_c_message_free_unpacked(&pb->base, NULL);
}

Test(alog_filter, error_metadata_and_extension_rejected)
{
    expect_error(
        "{metadata_filter: {matcher: {filter: envoy.common, path: [{key: access_log_hint}], "
        "value: {bool_match: true}}, match_if_key_not_found: false}}",
        "al[0].filter.metadata_filter: metadata filters are not supported by remora");
    expect_error("{or_filter: {filters: [{traceable_filter: {}}, {extension_filter: {name: "
                 "envoy.access_loggers.extension_filters.cel}}]}}",
                 "al[0].filter.or_filter.filters[1].extension_filter: extension filter "
                 "\"envoy.access_loggers.extension_filters.cel\"");
    /* a typed_config of a type remora does not know (xDS input: the Any stays packed) */
    FilterPb *pb = parse("{extension_filter: {name: cel}}");
    Google__Protobuf__Any *any = malloc(sizeof(*any));
    *any = (Google__Protobuf__Any)GOOGLE__PROTOBUF__ANY__INIT;
    any->type_url = strdup(
        "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter");
    pb->extension_filter->config_type_case =
        ENVOY__CONFIG__ACCESSLOG__V3__EXTENSION_FILTER__CONFIG_TYPE_TYPED_CONFIG;
    pb->extension_filter->typed_config = any;
    expect_error_pb(pb, "(type envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter) "
                        "is not supported by remora");
    protobuf_c_message_free_unpacked(&pb->base, NULL);
}

Test(alog_filter, error_nesting_too_deep)
{
    enum { LEVELS = 40 };
    static FilterPb f[LEVELS + 1], leaf = ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__INIT;
    static Envoy__Config__Accesslog__V3__AndFilter and[LEVELS];
    static Envoy__Config__Accesslog__V3__TraceableFilter tr =
        ENVOY__CONFIG__ACCESSLOG__V3__TRACEABLE_FILTER__INIT;
    static FilterPb *kids[LEVELS][2];
    leaf.filter_specifier_case =
        ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_TRACEABLE_FILTER;
    leaf.traceable_filter = &tr;
    f[LEVELS] = leaf;
    for (int i = LEVELS - 1; i >= 0; i--) {
        f[i] = (FilterPb)ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__INIT;
        and[i] =
            (Envoy__Config__Accesslog__V3__AndFilter)ENVOY__CONFIG__ACCESSLOG__V3__AND_FILTER__INIT;
        kids[i][0] = &f[i + 1];
        kids[i][1] = &leaf;
        and[i].filters = kids[i];
        and[i].n_filters = 2;
        f[i].filter_specifier_case =
            ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_AND_FILTER;
        f[i].and_filter = &and[i];
    }
    expect_error_pb(&f[0], "and_filter/or_filter nested deeper than 32");
    struct rm_error err = {{0}};
    struct rm_alog_filter *ok = rm_alog_filter_new(&f[LEVELS - 30], "p", &err);
    cr_assert_not_null(ok, "30 levels: %s", err.msg);
    cr_assert_not(rm_alog_filter_eval(ok, &(struct rm_alog_info){.duration_ms = 1}));
    rm_alog_filter_free(ok);
}

Test(alog_filter, free_null)
{
    rm_alog_filter_free(NULL);
}

/* ---- wire format (xDS) and printing (/config_dump) ---------------------------------------- */

/* A filter that went through the protobuf wire format, as from a control plane, decodes with
 * no unknown field (Envoy's field numbers), compiles, and prints back in Envoy's JSON names. */
Test(alog_filter, wire_round_trip_and_json)
{
    FilterPb *pb = parse(nested);
    size_t len = protobuf_c_message_get_packed_size(&pb->base);
    uint8_t *buf = malloc(len);
    protobuf_c_message_pack(&pb->base, buf);
    protobuf_c_message_free_unpacked(&pb->base, NULL);
    /* field 7 (or_filter), length-delimited: Envoy's number */
    cr_assert_eq(buf[0], (7 << 3) | 2);
    FilterPb *w = envoy__config__accesslog__v3__access_log_filter__unpack(NULL, len, buf);
    free(buf);
    cr_assert_not_null(w);
    struct rm_error err = {{0}};
    cr_assert_eq(rm_pb_check_no_unknown(&w->base, "f", &err), RM_OK, "%s", err.msg);
    struct rm_alog_filter *f = rm_alog_filter_new(w, "f", &err);
    cr_assert_not_null(f, "%s", err.msg);
    struct rm_alog_info in = info(502, NULL, 1);
    cr_assert(rm_alog_filter_eval(f, &in));
    rm_alog_filter_free(f);
    struct rm_strbuf out = RM_STRBUF_INIT;
    cr_assert_eq(rm_pbprint_json(&w->base, 0, &out), RM_OK);
    const char *js = rm_strbuf_str(&out);
    cr_assert(strstr(js, "\"or_filter\":{\"filters\":[{\"status_code_filter\":{\"comparison\":"
                         "{\"op\":\"GE\""),
              "%s", js);
    cr_assert(strstr(js, "\"present_match\":true"), "%s", js);
    rm_strbuf_dispose(&out);
    protobuf_c_message_free_unpacked(&w->base, NULL);
}
