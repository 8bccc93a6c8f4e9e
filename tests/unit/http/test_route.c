/* Unit tests for proxy/http/route*.c: RouteConfiguration compilation (from YAML through
 * pbjson), virtual host precedence, route matching, string/header/query matchers, weighted
 * picks, header mutations, direct responses and the rejection messages. */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "envoy/config/route/v3/route.pb-c.h"
#include "proxy/config/pbjson.h"
#include "proxy/http/route.h"

#define RC_DESC (&envoy__config__route__v3__route_configuration__descriptor)
typedef Envoy__Config__Route__V3__RouteConfiguration RouteConfiguration;

/* ---- fixtures ----------------------------------------------------------------------------- */

static struct rm_arena arena;
static char clusters[3]; /* identities handed out by the resolver */

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

TestSuite(route, .init = setup, .fini = teardown);

/* Clusters "a", "b", "c" exist; any other name is unknown. */
static void *resolve(void *ctx, const char *name)
{
    (void)ctx;
    if (strlen(name) == 1 && name[0] >= 'a' && name[0] <= 'c') return &clusters[name[0] - 'a'];
    return NULL;
}

static RouteConfiguration *parse(const char *yaml)
{
    struct rm_error err = {{0}};
    ProtobufCMessage *m = NULL;
    int rc = rm_pbjson_parse_string(yaml, strlen(yaml), "t.yaml", RC_DESC, &m, &err);
    cr_assert_eq(rc, RM_OK, "YAML: %s", err.msg);
    return (RouteConfiguration *)m;
}

static struct rm_route_table *build(const char *yaml)
{
    RouteConfiguration *rc = parse(yaml);
    struct rm_error err = {{0}};
    struct rm_route_table *t = rm_route_table_new(rc, "route_config", resolve, NULL, &err);
    protobuf_c_message_free_unpacked(&rc->base, NULL);
    cr_assert_not_null(t, "compile: %s", err.msg);
    return t;
}

/* Compile <rc> expecting failure with exactly <want>; frees <rc>. */
static void expect_rc_error(RouteConfiguration *rc, const char *want)
{
    struct rm_error err = {{0}};
    struct rm_route_table *t = rm_route_table_new(rc, "route_config", resolve, NULL, &err);
    protobuf_c_message_free_unpacked(&rc->base, NULL);
    rm_route_table_free(t);
    cr_assert_null(t, "expected failure: %s", want);
    cr_assert_str_eq(err.msg, want);
}

static void expect_error(const char *yaml, const char *want)
{
    expect_rc_error(parse(yaml), want);
}

/* One virtual host "*" holding <routes> (a YAML block indented by 4). */
#define VH(routes)                                                                                 \
    "virtual_hosts:\n"                                                                             \
    "- name: vh\n"                                                                                 \
    "  domains: ['*']\n"                                                                           \
    "  routes:\n" routes

/* Request headers: pairs of name, value, NULL-terminated. */
static struct rm_headers *req(const char *first, ...)
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

/* Name of the route <path> (plus extra headers) selects in the only virtual host; "-" if none. */
static const char *route_for(const struct rm_route_table *t, struct rm_headers *h)
{
    const struct rm_route *r = rm_route_match(&t->vhosts[0], h);
    return r ? (r->name ? r->name : "(unnamed)") : "-";
}

static const char *path_route(const struct rm_route_table *t, const char *path)
{
    return route_for(t, req(":path", path, NULL));
}

static const char *vhost_for(const struct rm_route_table *t, const char *authority)
{
    const struct rm_vhost *v = rm_route_find_vhost(t, authority, strlen(authority));
    return v ? v->name : "-";
}

/* ---- virtual hosts ------------------------------------------------------------------------ */

static const char *domains_yaml = "virtual_hosts:\n"
                                  "- {name: exact, domains: [foo.com, 'Bar.com:8080']}\n"
                                  "- {name: suffix, domains: ['*.foo.com']}\n"
                                  "- {name: longsuffix, domains: ['*.bar.foo.com']}\n"
                                  "- {name: dashsuffix, domains: ['*-bar.foo.com']}\n"
                                  "- {name: prefix, domains: ['foo.*']}\n"
                                  "- {name: longprefix, domains: ['foo.bar.*']}\n"
                                  "- {name: any, domains: ['*']}\n";

Test(route, domain_precedence)
{
    struct rm_route_table *t = build(domains_yaml);
    cr_expect_str_eq(vhost_for(t, "foo.com"), "exact");
    cr_expect_str_eq(vhost_for(t, "FOO.Com"), "exact");
    cr_expect_str_eq(vhost_for(t, "bar.com:8080"), "exact");
    cr_expect_str_eq(vhost_for(t, "a.foo.com"), "suffix");
    cr_expect_str_eq(vhost_for(t, "a.bar.foo.com"), "longsuffix");
    cr_expect_str_eq(vhost_for(t, "x-bar.foo.com"), "dashsuffix");
    cr_expect_str_eq(vhost_for(t, ".foo.com"), "any", "the '*' stands for at least one char");
    cr_expect_str_eq(vhost_for(t, "foo.org"), "prefix");
    cr_expect_str_eq(vhost_for(t, "foo.bar.org"), "longprefix");
    cr_expect_str_eq(vhost_for(t, "foo.bar.foo.com"), "longsuffix", "suffix beats prefix");
    cr_expect_str_eq(vhost_for(t, "example.org"), "any");
    /* Envoy keeps the port: "foo.com:80" is not exact "foo.com" but does match "foo.*" */
    cr_expect_str_eq(vhost_for(t, "foo.com:80"), "prefix");
    cr_expect_str_eq(vhost_for(t, "a.foo.com:80"), "any");
    cr_expect_null(rm_route_find_vhost(t, NULL, 0));
    rm_route_table_free(t);
}

Test(route, domain_port_stripping)
{
    struct rm_route_table *t = build("virtual_hosts:\n"
                                     "- {name: foo, domains: [foo.com]}\n"
                                     "- {name: v6, domains: ['[::1]']}\n");
    cr_expect_str_eq(vhost_for(t, "foo.com:8080"), "foo", "retried without the port");
    cr_expect_str_eq(vhost_for(t, "[::1]:443"), "v6");
    cr_expect_str_eq(vhost_for(t, "[::1]"), "v6");
    cr_expect_str_eq(vhost_for(t, "bar.com:80"), "-");
    rm_route_table_free(t);

    t = build("ignore_port_in_host_matching: true\n"
              "virtual_hosts:\n"
              "- {name: foo, domains: [foo.com]}\n"
              "- {name: any, domains: ['*']}\n");
    cr_expect_str_eq(vhost_for(t, "foo.com:9"), "foo");
    cr_expect_str_eq(vhost_for(t, "bar.com:9"), "any");
    rm_route_table_free(t);

    t = build("virtual_hosts:\n- {name: only, domains: ['*']}\n");
    cr_expect_str_eq(vhost_for(t, "anything:1"), "only");
    cr_expect_str_eq(vhost_for(t, ""), "only");
    cr_expect_str_eq(vhost_for(t, "[::1]:80"), "only");
    cr_expect_str_eq(vhost_for(t, "Mixed.Case.example"), "only");
    cr_expect_not_null(rm_route_find_vhost(t, NULL, 0), "sole '*' host serves no authority");
    rm_route_table_free(t);
}

Test(route, domain_duplicates)
{
    expect_error("virtual_hosts:\n"
                 "- {name: a, domains: [x.com, foo.com]}\n"
                 "- {name: b, domains: [FOO.com]}\n",
                 "route_config.virtual_hosts[1].domains[0]: Only unique values for domains are "
                 "permitted. Duplicate entry of domain FOO.com (also in "
                 "virtual_hosts[0].domains[1])");
    expect_error("virtual_hosts:\n- {name: a, domains: ['*.x', '*.x']}\n",
                 "route_config.virtual_hosts[0].domains[1]: Only unique values for domains are "
                 "permitted. Duplicate entry of domain *.x (also in virtual_hosts[0].domains[0])");
    expect_error("virtual_hosts:\n- {name: a, domains: ['*']}\n- {name: b, domains: ['*']}\n",
                 "route_config.virtual_hosts[1].domains[0]: Only a single wildcard domain is "
                 "permitted (also in virtual_hosts[0].domains[0])");
    expect_error("virtual_hosts:\n- {name: a}\n",
                 "route_config.virtual_hosts[0].domains: at least one domain is required");
    /* the same text as suffix and prefix wildcard is not a duplicate */
    rm_route_table_free(build("virtual_hosts:\n- {name: a, domains: ['*.x', '.x*', '.x']}\n"));
}

/* ---- path matching ------------------------------------------------------------------------ */

Test(route, order_and_path_kinds)
{
    struct rm_route_table *t = build(
        VH("  - {name: exact, match: {path: /exact}, route: {cluster: a}}\n"
           "  - {name: api, match: {prefix: /api}, route: {cluster: a}}\n"
           "  - {name: sep, match: {path_separated_prefix: /sep}, route: {cluster: a}}\n"
           "  - {name: re, match: {safe_regex: {regex: '/v[0-9]+/.*'}}, route: {cluster: a}}\n"
           "  - {name: ci, match: {prefix: /CI, case_sensitive: false}, route: {cluster: a}}\n"
           "  - {name: root, match: {prefix: /}, route: {cluster: b}}\n"));
    cr_expect_str_eq(path_route(t, "/exact"), "exact");
    cr_expect_str_eq(path_route(t, "/exact?x=1"), "exact");
    cr_expect_str_eq(path_route(t, "/exact#frag"), "exact");
    cr_expect_str_eq(path_route(t, "/exact/"), "root");
    cr_expect_str_eq(path_route(t, "/EXACT"), "root", "case-sensitive by default");
    cr_expect_str_eq(path_route(t, "/api"), "api");
    cr_expect_str_eq(path_route(t, "/api/v1?q"), "api");
    cr_expect_str_eq(path_route(t, "/apix"), "api", "a plain prefix ignores separators");
    cr_expect_str_eq(path_route(t, "/ap?i"), "root", "prefix ignores the query string");
    cr_expect_str_eq(path_route(t, "/sep"), "sep");
    cr_expect_str_eq(path_route(t, "/sep/x"), "sep");
    cr_expect_str_eq(path_route(t, "/sep?x"), "sep");
    cr_expect_str_eq(path_route(t, "/sepx"), "root");
    cr_expect_str_eq(path_route(t, "/v1/x"), "re");
    cr_expect_str_eq(path_route(t, "/v12/x?y=/z"), "re");
    cr_expect_str_eq(path_route(t, "/v1"), "root", "regex is a full match");
    cr_expect_str_eq(path_route(t, "/x/v1/x"), "root", "regex is anchored at the start");
    cr_expect_str_eq(path_route(t, "/ci/x"), "ci");
    cr_expect_str_eq(path_route(t, "/Ci"), "ci");
    cr_expect_str_eq(route_for(t, req(":method", "GET", NULL)), "-", "no :path matches ''");
    rm_route_table_free(t);
}

/* A prefix without '?' or '#' is matched on the whole path, one with them on the path up to
 * the query string or fragment: both as Envoy's match on the path without them. */
Test(route, prefix_and_query_string)
{
    struct rm_route_table *t = build(
        VH("  - {name: qp, match: {prefix: '/q?a'}, route: {cluster: a}}\n"
           "  - {name: hp, match: {prefix: '/h#'}, route: {cluster: a}}\n"
           "  - {name: api, match: {prefix: /api}, route: {cluster: a}}\n"
           "  - {name: ci, match: {prefix: /CI, case_sensitive: false}, route: {cluster: a}}\n"
           "  - {name: root, match: {prefix: /}, route: {cluster: b}}\n"));
    cr_expect_str_eq(path_route(t, "/q?a"), "root", "the prefix reaches into the query");
    cr_expect_str_eq(path_route(t, "/q?ab"), "root");
    cr_expect_str_eq(path_route(t, "/h#"), "root");
    cr_expect_str_eq(path_route(t, "/api?x"), "api");
    cr_expect_str_eq(path_route(t, "/api#x"), "api");
    cr_expect_str_eq(path_route(t, "/a?pi"), "root");
    cr_expect_str_eq(path_route(t, "/ap#i"), "root");
    cr_expect_str_eq(path_route(t, "/ci?q"), "ci");
    cr_expect_str_eq(path_route(t, "/c?i"), "root");
    cr_expect_str_eq(path_route(t, "?"), "-", "not even the root prefix");
    rm_route_table_free(t);
}

Test(route, regex_anchoring_and_alternation)
{
    struct rm_route_table *t =
        build(VH("  - {name: alt, match: {safe_regex: {regex: '/a|/ab'}}, route: {cluster: a}}\n"
                 "  - {name: dollar, match: {safe_regex: {regex: '/d$'}}, route: {cluster: a}}\n"));
    cr_expect_str_eq(path_route(t, "/ab"), "alt", "full match backtracks into the alternative");
    cr_expect_str_eq(path_route(t, "/a"), "alt");
    cr_expect_str_eq(path_route(t, "/abc"), "-");
    cr_expect_str_eq(path_route(t, "/d"), "dollar");
    cr_expect_str_eq(path_route(t, "/d\n"), "-", "$ matches only at the very end, as RE2");
    rm_route_table_free(t);
}

/* ---- header, query and gRPC matchers ------------------------------------------------------ */

#define HM(name, spec)                                                                             \
    "  - {name: " name ", match: {prefix: /, headers: [" spec "]}, route: {cluster: a}}\n"

Test(route, header_matchers)
{
    struct rm_route_table *t = build(VH(
        HM("exact", "{name: X-Exact, string_match: {exact: v1}}") HM(
            "legacy", "{name: x-legacy, exact_match: v2}") HM("any",
                                                              "{name: x-any, exact_match: ''}")
            HM("prefix", "{name: x-pre, string_match: {prefix: ab}}")
                HM("suffix", "{name: x-suf, suffix_match: yz}") HM(
                    "contains", "{name: x-con, string_match: {contains: mid, ignore_case: true}}")
                    HM("regex", "{name: x-re, string_match: {safe_regex: {regex: '[0-9]{3}'}}}")
                        HM("lregex", "{name: x-lre, safe_regex_match: {regex: 'a+'}}")
                            HM("range", "{name: x-num, range_match: {start: -10, end: 0}}")
                                HM("present", "{name: x-p, present_match: true}")
                                    HM("method", "{name: ':method', string_match: {exact: PUT}}")));
    struct {
        const char *n, *v, *want;
    } cases[] = {
        {"x-exact", "v1", "exact"},
        {"x-exact", "v1x", "-"},
        {"x-legacy", "v2", "legacy"},
        {"x-any", "", "any"},
        {"x-any", "whatever", "any"},
        {"x-pre", "abc", "prefix"},
        {"x-pre", "xab", "-"},
        {"x-suf", "xyz", "suffix"},
        {"x-con", "a-MiD-b", "contains"},
        {"x-con", "mi-d", "-"},
        {"x-re", "123", "regex"},
        {"x-re", "1234", "-"},
        {"x-lre", "aaa", "lregex"},
        {"x-num", "-1", "range"},
        {"x-num", "-10", "range"},
        {"x-num", "0", "-"},
        {"x-num", " -5 ", "range"},
        {"x-num", "1.5", "-"},
        {"x-num", "-99999999999999999999", "-"},
        {"x-p", "", "present"},
        {":method", "PUT", "method"},
        {"x-unrelated", "1", "-"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        cr_expect_str_eq(route_for(t, req(":path", "/", cases[i].n, cases[i].v, NULL)),
                         cases[i].want, "%s: %s", cases[i].n, cases[i].v);
    /* several values are matched joined by ',' */
    cr_expect_str_eq(route_for(t, req(":path", "/", "x-exact", "v", "x-exact", "1", NULL)), "-");
    cr_expect_str_eq(route_for(t, req(":path", "/", "x-pre", "a", "x-pre", "b", NULL)), "-");
    cr_expect_str_eq(route_for(t, req(":path", "/", "x-suf", "y", "x-suf", "z,yz", NULL)),
                     "suffix");
    rm_route_table_free(t);
}

Test(route, header_invert_and_missing)
{
    struct rm_route_table *t = build(
        VH(HM("notv", "{name: x-a, string_match: {exact: v}, invert_match: true}")
               HM("absent", "{name: x-b, present_match: false}")
                   HM("notpresent", "{name: x-c, present_match: true, invert_match: true}")
                       HM("empty",
                          "{name: x-d, string_match: {exact: ''}, treat_missing_header_as_empty: "
                          "true}") "  - {name: last, match: {prefix: /}, route: {cluster: a}}\n"));
    /* a missing header fails a value matcher even when inverted */
    cr_expect_str_eq(
        route_for(t, req(":path", "/", "x-a", "w", "x-b", "", "x-c", "", "x-d", "z", NULL)),
        "notv");
    cr_expect_str_eq(route_for(t, req(":path", "/", "x-a", "v", "x-c", "", "x-d", "z", NULL)),
                     "absent", "present_match false = header absent");
    cr_expect_str_eq(route_for(t, req(":path", "/", "x-a", "v", "x-b", "", "x-d", "z", NULL)),
                     "notpresent", "inverted presence matches a missing header");
    cr_expect_str_eq(route_for(t, req(":path", "/", "x-a", "v", "x-b", "", "x-c", "", NULL)),
                     "empty", "treat_missing_header_as_empty");
    cr_expect_str_eq(
        route_for(t, req(":path", "/", "x-a", "v", "x-b", "", "x-c", "", "x-d", "z", NULL)),
        "last");
    rm_route_table_free(t);
}

#define QM(name, spec)                                                                             \
    "  - {name: " name ", match: {prefix: /, query_parameters: [" spec "]}, route: {cluster: "     \
    "a}}\n"

Test(route, query_matchers)
{
    struct rm_route_table *t =
        build(VH(QM("exact", "{name: a, string_match: {exact: '1'}}")
                     QM("ci", "{name: b, string_match: {prefix: X, ignore_case: true}}")
                         QM("present", "{name: c, present_match: true}") QM("bare", "{name: d}")
                             QM("absent", "{name: e, present_match: false}")));
    cr_expect_str_eq(path_route(t, "/p?a=1"), "exact");
    cr_expect_str_eq(path_route(t, "/p?z=0&a=1&e"), "exact");
    cr_expect_str_eq(path_route(t, "/p?a=2&a=1"), "absent", "only the first value counts");
    cr_expect_str_eq(path_route(t, "/p?b=xyz&e=1"), "ci");
    cr_expect_str_eq(path_route(t, "/p?c&e"), "present", "no '=' is an empty value");
    cr_expect_str_eq(path_route(t, "/p?d=&e"), "bare");
    cr_expect_str_eq(path_route(t, "/p?ab=1"), "absent");
    cr_expect_str_eq(path_route(t, "/p?e=1"), "-");
    cr_expect_str_eq(path_route(t, "/p"), "absent");
    rm_route_table_free(t);
}

Test(route, grpc_match)
{
    struct rm_route_table *t =
        build(VH("  - {name: grpc, match: {prefix: /, grpc: {}}, route: {cluster: a}}\n"
                 "  - {name: other, match: {prefix: /}, route: {cluster: b}}\n"));
    cr_expect_str_eq(route_for(t, req(":path", "/s/M", "content-type", "application/grpc", NULL)),
                     "grpc");
    cr_expect_str_eq(
        route_for(t, req(":path", "/s/M", "content-type", "application/grpc+proto", NULL)), "grpc");
    cr_expect_str_eq(
        route_for(t, req(":path", "/s/M", "content-type", "application/grpc-web", NULL)), "other");
    cr_expect_str_eq(route_for(t, req(":path", "/s/M", NULL)), "other");
    rm_route_table_free(t);
}

Test(route, str_match_eval_direct)
{
    struct rm_str_match m = {.kind = RM_STR_SUFFIX, .ignore_case = true, .s = "abc", .len = 3};
    cr_expect(rm_str_match_eval(&m, "xxABC", 5));
    cr_expect_not(rm_str_match_eval(&m, "bc", 2));
    m = (struct rm_str_match){.kind = RM_STR_CONTAINS, .s = "", .len = 0};
    cr_expect(rm_str_match_eval(&m, NULL, 0));
    m = (struct rm_str_match){
        .kind = RM_STR_RANGE, .range_start = INT64_MIN, .range_end = INT64_MAX};
    cr_expect(rm_str_match_eval(&m, "-9223372036854775808", 20));
    cr_expect_not(rm_str_match_eval(&m, "9223372036854775808", 19), "overflow");
    cr_expect_not(rm_str_match_eval(&m, "+", 1));
    m = (struct rm_str_match){.kind = RM_STR_PRESENT};
    cr_expect(rm_str_match_eval(&m, "", 0));
}

/* ---- actions ------------------------------------------------------------------------------ */

Test(route, weighted_pick)
{
    struct rm_route_table *t =
        build(VH("  - match: {prefix: /}\n"
                 "    route:\n"
                 "      weighted_clusters:\n"
                 "        total_weight: 100\n" /* deprecated and ignored, as in Envoy */
                 "        clusters:\n"
                 "        - {name: a, weight: 1}\n"
                 "        - {name: b, weight: 2, host_rewrite_literal: b.internal,\n"
                 "           request_headers_to_add: [{header: {key: x-w, value: b}}]}\n"
                 "        - {name: zero, weight: 0}\n"
                 "        - {name: c, weight: 3}\n"));
    const struct rm_route *r = rm_route_match(&t->vhosts[0], req(":path", "/", NULL));
    cr_assert_not_null(r);
    cr_assert_eq(r->n_weighted, 4);
    cr_expect_eq(r->total_weight, 6);
    const char *want[] = {"a", "b", "b", "c", "c", "c", "a"};
    for (uint64_t i = 0; i < 7; i++)
        cr_expect_str_eq(rm_route_pick_weighted(r, i)->name, want[i], "rnd %lu", (unsigned long)i);
    cr_expect_str_eq(rm_route_pick_weighted(r, UINT64_MAX)->name, "c"); /* 2^64-1 % 6 = 3 */
    cr_expect_eq(r->weighted[0].cluster, &clusters[0]);
    cr_expect_null(r->weighted[2].cluster, "unknown cluster: kept by name only");
    cr_expect_str_eq(r->weighted[1].host_rewrite_literal, "b.internal");
    cr_expect_eq(r->weighted[1].headers.n_req_add, 1);
    unsigned count[4] = {0};
    for (uint64_t i = 0; i < 6000; i++)
        count[rm_route_pick_weighted(r, i) - r->weighted]++;
    cr_expect(count[0] == 1000 && count[1] == 2000 && count[2] == 0 && count[3] == 3000);
    rm_route_table_free(t);

    expect_error(VH("  - match: {prefix: /}\n"
                    "    route: {weighted_clusters: {clusters: [{name: a, weight: 0}]}}\n"),
                 "route_config.virtual_hosts[0].routes[0].route.weighted_clusters: the sum of the "
                 "weights must be greater than 0");
    expect_error(VH("  - match: {prefix: /}\n"
                    "    route: {weighted_clusters: {clusters: [{name: a, weight: 4294967295},\n"
                    "                                           {name: b, weight: 1}]}}\n"),
                 "route_config.virtual_hosts[0].routes[0].route.weighted_clusters: the sum of the "
                 "weights exceeds 4294967295");
}

Test(route, forward_action_fields)
{
    struct rm_route_table *t =
        build("name: rc\n"
              "virtual_hosts:\n"
              "- name: vh\n"
              "  domains: ['*']\n"
              "  retry_policy: {retry_on: 5xx}\n"
              "  routes:\n"
              "  - name: r0\n"
              "    match: {prefix: /}\n"
              "    route:\n"
              "      cluster: a\n"
              "      prefix_rewrite: /new\n"
              "      host_rewrite_literal: up.local\n"
              "      timeout: 1.5s\n"
              "      idle_timeout: 0s\n"
              "      priority: HIGH\n"
              "      cluster_not_found_response_code: NOT_FOUND\n"
              "      retry_policy: {retry_on: reset, num_retries: 3}\n"
              "      max_stream_duration: {max_stream_duration: 0s, grpc_timeout_header_max: 2s}\n"
              "  - name: r1\n"
              "    match: {prefix: /}\n"
              "    route: {cluster_header: X-Cluster, auto_host_rewrite: true, timeout: 0s,\n"
              "            max_grpc_timeout: 0.0001s}\n"
              "  - name: r2\n"
              "    match: {prefix: /}\n"
              "    route: {cluster: nope, host_rewrite_header: X-Host}\n");
    cr_expect_str_eq(t->name, "rc");
    const struct rm_vhost *vh = &t->vhosts[0];
    cr_expect_not_null(vh->retry_policy);
    const struct rm_route *r = &vh->routes[0];
    cr_expect_eq(r->action, RM_ROUTE_FORWARD);
    cr_expect_str_eq(r->cluster_name, "a");
    cr_expect_eq(r->cluster, &clusters[0]);
    cr_expect_str_eq(r->prefix_rewrite, "/new");
    cr_expect_eq(r->prefix_rewrite_len, 4);
    cr_expect_str_eq(r->host_rewrite_literal, "up.local");
    cr_expect_eq(r->timeout_ms, 1500);
    cr_expect(r->has_idle_timeout && r->idle_timeout_ms == 0);
    cr_expect_eq(r->priority, 1);
    cr_expect_eq(r->cluster_not_found_code, 404);
    cr_expect_not_null(r->retry_policy);
    cr_expect(r->has_max_grpc_timeout && r->max_grpc_timeout_ms == 2000);
    r = &vh->routes[1];
    cr_expect_str_eq(r->cluster_header, "x-cluster");
    cr_expect(r->auto_host_rewrite);
    cr_expect_eq(r->timeout_ms, 0, "0s disables the route timeout");
    cr_expect_not(r->has_idle_timeout);
    cr_expect(r->has_max_grpc_timeout && r->max_grpc_timeout_ms == 1, "tiny rounds up to 1 ms");
    cr_expect_eq(r->cluster_not_found_code, 503);
    cr_expect_null(r->retry_policy);
    r = &vh->routes[2];
    cr_expect_str_eq(r->cluster_name, "nope");
    cr_expect_null(r->cluster);
    cr_expect_str_eq(r->host_rewrite_header, "x-host");
    cr_expect_eq(r->timeout_ms, 15000, "Envoy's default route timeout");
    cr_expect_not(r->has_max_grpc_timeout);
    rm_route_table_free(t);

    expect_error("validate_clusters: true\n" VH("  - {match: {prefix: /}, route: {cluster: x}}\n"),
                 "route_config.virtual_hosts[0].routes[0].route.cluster: unknown cluster 'x'");
}

Test(route, direct_response_and_redirect)
{
    char file[] = "/tmp/rm_route_body_XXXXXX";
    int fd = mkstemp(file);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, "from file\n", 10), 10);
    close(fd);
    setenv("RM_ROUTE_TEST_BODY", "from env", 1);
    char yaml[2048];
    snprintf(
        yaml, sizeof(yaml),
        VH("  - {match: {path: /s}, direct_response: {status: 200, body: {inline_string: hi}}}\n"
           "  - {match: {path: /f}, direct_response: {status: 503, body: {filename: %s}}}\n"
           "  - {match: {path: /e}, direct_response: {status: 204, body: "
           "{environment_variable: RM_ROUTE_TEST_BODY}}}\n"
           "  - {match: {path: /b}, direct_response: {status: 404, body: {inline_bytes: "
           "AAEC}}}\n"
           "  - {match: {path: /n}, direct_response: {status: 500}}\n"
           "  - match: {path: /r}\n"
           "    redirect: {https_redirect: true, host_redirect: h.com, port_redirect: 8443,\n"
           "               prefix_rewrite: /p, strip_query: true, response_code: "
           "PERMANENT_REDIRECT}\n"
           "  - {match: {path: /r2}, redirect: {scheme_redirect: ftp, path_redirect: /x}}\n"),
        file);
    struct rm_route_table *t = build(yaml);
    unlink(file);
    const struct rm_route *r = t->vhosts[0].routes;
    cr_expect(r[0].action == RM_ROUTE_DIRECT && r[0].direct_status == 200);
    cr_expect(r[0].direct_body_len == 2 && memcmp(r[0].direct_body, "hi", 2) == 0);
    cr_expect(r[1].direct_status == 503 && r[1].direct_body_len == 10);
    cr_expect_str_eq(r[1].direct_body, "from file\n");
    cr_expect_str_eq(r[2].direct_body, "from env");
    cr_expect(r[3].direct_body_len == 3 && memcmp(r[3].direct_body, "\0\1\2", 3) == 0);
    cr_expect(r[4].direct_status == 500 && r[4].direct_body == NULL);
    cr_expect_eq(r[5].action, RM_ROUTE_REDIRECT);
    cr_expect_eq(r[5].redirect_status, 308);
    cr_expect_str_eq(r[5].redirect_scheme, "https");
    cr_expect_str_eq(r[5].redirect_host, "h.com");
    cr_expect_eq(r[5].redirect_port, 8443);
    cr_expect_str_eq(r[5].redirect_prefix, "/p");
    cr_expect_null(r[5].redirect_path);
    cr_expect(r[5].strip_query);
    cr_expect_eq(r[6].redirect_status, 301);
    cr_expect_str_eq(r[6].redirect_scheme, "ftp");
    cr_expect_str_eq(r[6].redirect_path, "/x");
    cr_expect_null(r[6].redirect_host);
    rm_route_table_free(t);

    expect_error(VH("  - {match: {prefix: /}, direct_response: {status: 600}}\n"),
                 "route_config.virtual_hosts[0].routes[0].direct_response.status: 600 is not in "
                 "[200, 600)");
    expect_error("max_direct_response_body_size_bytes: 3\n" VH(
                     "  - {match: {prefix: /}, direct_response: {status: 200, body: "
                     "{inline_string: four}}}\n"),
                 "route_config.virtual_hosts[0].routes[0].direct_response.body: response body "
                 "size is 4 bytes; maximum is 3 (max_direct_response_body_size_bytes)");
    expect_error(VH("  - {match: {prefix: /}, direct_response: {status: 200, body: "
                    "{environment_variable: RM_ROUTE_TEST_UNSET_VAR}}}\n"),
                 "route_config.virtual_hosts[0].routes[0].direct_response.body."
                 "environment_variable: environment variable \"RM_ROUTE_TEST_UNSET_VAR\" is not "
                 "set");
    expect_error(VH("  - {match: {prefix: /}, direct_response: {status: 200, body: "
                    "{filename: /nonexistent/rm}}}\n"),
                 "route_config.virtual_hosts[0].routes[0].direct_response.body.filename: cannot "
                 "open \"/nonexistent/rm\": No such file or directory");
}

/* ---- header mutations --------------------------------------------------------------------- */

static const char *all_values(struct rm_headers *h, const char *name)
{
    static char buf[256];
    size_t k = 0;
    buf[0] = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        if (strlen(name) == h->v[i].name_len && memcmp(h->v[i].name, name, h->v[i].name_len) == 0)
            k += (size_t)snprintf(buf + k, sizeof(buf) - k, "%s%.*s", k ? "|" : "",
                                  (int)h->v[i].value_len, (const char *)h->v[i].value);
    }
    return buf;
}

Test(route, header_ops_append_actions)
{
    struct rm_route_table *t =
        build("request_headers_to_add:\n"
              "- {header: {key: X-Append, value: new}}\n"
              "- {header: {key: x-absent-new, value: v}, append_action: ADD_IF_ABSENT}\n"
              "- {header: {key: x-absent-old, value: v}, append_action: ADD_IF_ABSENT}\n"
              "- {header: {key: x-over, value: v}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}\n"
              "- {header: {key: x-over-new, value: v}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}\n"
              "- {header: {key: x-if-new, value: v}, append_action: OVERWRITE_IF_EXISTS}\n"
              "- {header: {key: x-if-old, value: v}, append_action: OVERWRITE_IF_EXISTS}\n"
              "- {header: {key: x-legacy-true, value: v}, append: true}\n"
              "- {header: {key: x-legacy-false, value: v}, append: false}\n"
              "- {header: {key: x-mix, value: '1'}}\n"
              "- {header: {key: x-mix, value: '2'}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}\n"
              "- {header: {key: x-empty, value: ''}}\n"
              "- {header: {key: x-keep, value: ''}, keep_empty_value: true}\n"
              "- {header: {key: x-pct, value: '100%% sure'}}\n"
              "- {header: {key: x-raw, raw_value: cmF3}}\n"
              "request_headers_to_remove: [X-Gone, x-append]\n"
              "response_headers_to_add: [{header: {key: server, value: remora}, append: false}]\n"
              "response_headers_to_remove: [x-internal]\n"
              "virtual_hosts: [{name: vh, domains: ['*']}]\n");
    struct rm_headers *h = req(":path", "/", "x-append", "old", "x-absent-old", "old", "x-over",
                               "old1", "x-over", "old2", "x-if-old", "old", "x-legacy-true", "old",
                               "x-legacy-false", "old", "x-mix", "0", "x-gone", "1", NULL);
    rm_header_ops_apply_request(&t->headers_ops, h);
    cr_expect_str_eq(all_values(h, "x-append"), "new", "removed first, then added");
    cr_expect_str_eq(all_values(h, "x-gone"), "");
    cr_expect_str_eq(all_values(h, "x-absent-new"), "v");
    cr_expect_str_eq(all_values(h, "x-absent-old"), "old");
    cr_expect_str_eq(all_values(h, "x-over"), "v");
    cr_expect_str_eq(all_values(h, "x-over-new"), "v");
    cr_expect_str_eq(all_values(h, "x-if-new"), "");
    cr_expect_str_eq(all_values(h, "x-if-old"), "v");
    cr_expect_str_eq(all_values(h, "x-legacy-true"), "old|v");
    cr_expect_str_eq(all_values(h, "x-legacy-false"), "v");
    cr_expect_str_eq(all_values(h, "x-mix"), "2|1", "Envoy: overwrites first, then appends");
    cr_expect_eq(rm_headers_find(h, "x-empty", 7), -1, "empty values are dropped by default");
    cr_expect_neq(rm_headers_find(h, "x-keep", 6), -1);
    cr_expect_str_eq(all_values(h, "x-pct"), "100% sure");
    cr_expect_str_eq(all_values(h, "x-raw"), "raw");
    struct rm_headers *resp = req(":status", "200", "server", "up", "x-internal", "s", NULL);
    rm_header_ops_apply_response(&t->headers_ops, resp);
    cr_expect_str_eq(all_values(resp, "server"), "remora");
    cr_expect_str_eq(all_values(resp, "x-internal"), "");
    rm_header_ops_apply_request(NULL, h); /* no-op */
    rm_route_table_free(t);
}

Test(route, header_ops_many)
{
    /* more than 64 mutations take the arena path for the decisions */
    char yaml[16384];
    size_t k = (size_t)snprintf(yaml, sizeof(yaml), "request_headers_to_add:\n");
    for (int i = 0; i < 70; i++)
        k += (size_t)snprintf(yaml + k, sizeof(yaml) - k,
                              "- {header: {key: x-h%d, value: v}, append_action: ADD_IF_ABSENT}\n",
                              i);
    snprintf(yaml + k, sizeof(yaml) - k, "virtual_hosts: [{name: vh, domains: ['*']}]\n");
    struct rm_route_table *t = build(yaml);
    struct rm_headers *h = req("x-h69", "old", NULL);
    rm_header_ops_apply_request(&t->headers_ops, h);
    cr_expect_eq(h->n, 70);
    cr_expect_str_eq(all_values(h, "x-h69"), "old");
    cr_expect_str_eq(all_values(h, "x-h68"), "v");
    rm_route_table_free(t);
}

Test(route, header_ops_errors)
{
    expect_error("request_headers_to_add: [{header: {key: ':path', value: /x}}]\n",
                 "route_config.request_headers_to_add[0].header.key: ':'-prefixed or host headers "
                 "may not be modified (\":path\")");
    expect_error(VH("  - match: {prefix: /}\n"
                    "    route: {cluster: a}\n"
                    "    request_headers_to_remove: [Host]\n"),
                 "route_config.virtual_hosts[0].routes[0].request_headers_to_remove[0]: "
                 "':'-prefixed or host headers may not be removed (\"Host\")");
    expect_error(
        "response_headers_to_add: [{header: {key: x, value: '%DOWNSTREAM_REMOTE_ADDRESS%'}}]\n",
        "route_config.response_headers_to_add[0].header.value: format specifiers (%...%) "
        "are not supported by remora (write %% for a literal %)");
    expect_error("request_headers_to_add: [{header: {key: x, value: v}, append: true,\n"
                 "                          append_action: ADD_IF_ABSENT}]\n",
                 "route_config.request_headers_to_add[0].append: both append and append_action "
                 "are set");
    expect_error("request_headers_to_add: [{header: {key: x, value: v, raw_value: dg==}}]\n",
                 "route_config.request_headers_to_add[0].header: only one of value and raw_value "
                 "may be set");
    expect_error("request_headers_to_add: [{append_action: ADD_IF_ABSENT}]\n",
                 "route_config.request_headers_to_add[0].header: required");
}

/* ---- rejections --------------------------------------------------------------------------- */

Test(route, unsupported_fields)
{
    expect_error(
        VH("  - {match: {prefix: /}, route: {cluster: a}}\n"
           "  - {match: {prefix: /}, route: {cluster: a}}\n"
           "  - match: {prefix: /}\n"
           "    route: {cluster: a, regex_rewrite: {pattern: {regex: x}, substitution: y}}\n"),
        "route_config.virtual_hosts[0].routes[2].route.regex_rewrite: not supported by "
        "remora");
    expect_error(VH("  - match: {prefix: /}\n"
                    "    route: {cluster: a, host_rewrite_path_regex: {pattern: {regex: x}}}\n"),
                 "route_config.virtual_hosts[0].routes[0].route.host_rewrite_path_regex: not "
                 "supported by remora");
    expect_error(VH("  - match: {prefix: /, runtime_fraction: {default_value: {numerator: 1}}}\n"
                    "    route: {cluster: a}\n"),
                 "route_config.virtual_hosts[0].routes[0].match.runtime_fraction: not supported "
                 "by remora");
    expect_error(VH("  - {match: {}, route: {cluster: a}}\n"),
                 "route_config.virtual_hosts[0].routes[0].match: one of prefix, path, safe_regex "
                 "or path_separated_prefix is required (remora has no connect_matcher or "
                 "path_match_policy)");
    expect_error(VH("  - {route: {cluster: a}}\n"),
                 "route_config.virtual_hosts[0].routes[0].match: required");
    expect_error(VH("  - {match: {prefix: /}}\n"),
                 "route_config.virtual_hosts[0].routes[0]: one of route, redirect or "
                 "direct_response is required (remora has no filter_action or "
                 "non_forwarding_action)");
    expect_error(VH("  - {match: {prefix: /}, route: {}}\n"),
                 "route_config.virtual_hosts[0].routes[0].route: one of cluster, cluster_header "
                 "or weighted_clusters is required (remora has no cluster_specifier_plugin)");
    expect_error("virtual_hosts: [{name: v, domains: [x], require_tls: ALL}]\n",
                 "route_config.virtual_hosts[0].require_tls: not supported by remora");
    expect_error("internal_only_headers: [x-internal]\n",
                 "route_config.internal_only_headers: not supported by remora");
    expect_error(VH("  - {match: {prefix: /}, route: {cluster: a}, stat_prefix: s}\n"),
                 "route_config.virtual_hosts[0].routes[0].stat_prefix: not supported by remora");
    expect_error(VH("  - match: {prefix: /}\n"
                    "    route: {cluster: a, max_stream_duration: {max_stream_duration: 1s}}\n"),
                 "route_config.virtual_hosts[0].routes[0].route.max_stream_duration."
                 "max_stream_duration: not supported by remora");
    expect_error(VH("  - match: {prefix: /}\n"
                    "    route: {weighted_clusters: {runtime_key_prefix: rt, clusters: [{name: a, "
                    "weight: 1}]}}\n"),
                 "route_config.virtual_hosts[0].routes[0].route.weighted_clusters."
                 "runtime_key_prefix: not supported by remora");
    expect_error(VH("  - {match: {prefix: /}, redirect: {regex_rewrite: {pattern: {regex: x}}}}\n"),
                 "route_config.virtual_hosts[0].routes[0].redirect.regex_rewrite: not supported "
                 "by remora");
    expect_error(VH("  - {match: {path_separated_prefix: /a/}, route: {cluster: a}}\n"),
                 "route_config.virtual_hosts[0].routes[0].match.path_separated_prefix: \"/a/\" "
                 "must have no '?' or '#' and must not end with '/'");
}

/* Re-encode *slot with an extra empty length-delimited field <num> (what a control plane
 * sends for an Envoy field missing from remora's .proto), so it lands in unknown_fields. */
static void add_unknown(ProtobufCMessage **slot, uint32_t num)
{
    size_t n = protobuf_c_message_get_packed_size(*slot);
    uint8_t *buf = malloc(n + 8);
    protobuf_c_message_pack(*slot, buf);
    size_t k = n;
    uint32_t tag = (num << 3) | 2;
    do {
        buf[k++] = (uint8_t)((tag & 0x7f) | (tag > 0x7f ? 0x80 : 0));
        tag >>= 7;
    } while (tag);
    buf[k++] = 0; /* length 0 */
    ProtobufCMessage *m = protobuf_c_message_unpack((*slot)->descriptor, NULL, k, buf);
    free(buf);
    cr_assert_not_null(m);
    cr_assert_eq(m->n_unknown_fields, 1);
    protobuf_c_message_free_unpacked(*slot, NULL);
    *slot = m;
}

Test(route, unknown_fields_named)
{
    RouteConfiguration *rc = parse("virtual_hosts: [{name: v, domains: [x]}]\n");
    add_unknown((ProtobufCMessage **)&rc->virtual_hosts[0], 6);
    expect_rc_error(rc, "route_config.virtual_hosts[0].rate_limits: not supported by remora");

    rc = parse("virtual_hosts: [{name: v, domains: [x]}]\n");
    add_unknown((ProtobufCMessage **)&rc->virtual_hosts[0], 5);
    expect_rc_error(rc, "route_config.virtual_hosts[0].virtual_clusters: not supported by remora");

    rc = parse("virtual_hosts: [{name: v, domains: [x]}]\n");
    add_unknown((ProtobufCMessage **)&rc->virtual_hosts[0], 17);
    expect_rc_error(rc, "route_config.virtual_hosts[0].hedge_policy: not supported by remora");

    rc = parse("virtual_hosts: [{name: v, domains: [x]}]\n");
    ProtobufCMessage *top = &rc->base;
    add_unknown(&top, 9);
    expect_rc_error((RouteConfiguration *)top, "route_config.vhds: not supported by remora");

    rc = parse(VH("  - {match: {prefix: /}, route: {cluster: a}}\n"));
    add_unknown((ProtobufCMessage **)&rc->virtual_hosts[0]->routes[0]->route, 27);
    expect_rc_error(rc, "route_config.virtual_hosts[0].routes[0].route.hedge_policy: "
                        "not supported by remora");

    rc = parse(VH("  - {match: {prefix: /}, route: {cluster: a}}\n"));
    add_unknown((ProtobufCMessage **)&rc->virtual_hosts[0]->routes[0]->match, 99);
    expect_rc_error(rc, "route_config.virtual_hosts[0].routes[0].match: unsupported field #99 of "
                        "envoy.config.route.v3.RouteMatch (not supported by remora)");
}

/* ---- request mirroring ------------------------------------------------------------------ */

static const struct rm_mirror_policy *mirror_of(const struct rm_route *r, size_t i)
{
    cr_assert_lt(i, r->mirrors.n);
    return &r->mirrors.v[i];
}

Test(route, mirror_policies_most_specific_wins)
{
    struct rm_route_table *t =
        build("request_mirror_policies: [{cluster: a}]\n"
              "virtual_hosts:\n"
              "- name: v1\n"
              "  domains: [one]\n"
              "  request_mirror_policies:\n"
              "  - {cluster: b}\n"
              "  - cluster_header: X-Mirror\n"
              "    runtime_fraction: {default_value: {numerator: 25, denominator: TEN_THOUSAND},"
              " runtime_key: k}\n"
              "    trace_sampled: false\n"
              "    disable_shadow_host_suffix_append: true\n"
              "  routes:\n"
              "  - {name: own, match: {prefix: /own}, route: {cluster: a,"
              " request_mirror_policies: [{cluster: c}, {cluster: zz}]}}\n"
              "  - {name: inherit, match: {prefix: /}, route: {cluster: a}}\n"
              "- name: v2\n"
              "  domains: [two]\n"
              "  routes:\n"
              "  - {name: top, match: {prefix: /}, route: {cluster: a}}\n"
              "  - {name: direct, match: {prefix: /d}, direct_response: {status: 200}}\n");
    const struct rm_route *own = &t->vhosts[0].routes[0];
    cr_assert_eq(own->mirrors.n, 2, "the route's own list, not merged with its host's");
    cr_assert_str_eq(mirror_of(own, 0)->cluster_name, "c");
    cr_assert_eq(mirror_of(own, 0)->cluster, &clusters[2]);
    cr_assert(mirror_of(own, 0)->host_suffix);
    cr_assert_eq(mirror_of(own, 0)->numerator, 100, "unset runtime_fraction: every request");
    cr_assert_eq(mirror_of(own, 0)->denominator, 100);
    cr_assert_null(mirror_of(own, 1)->cluster, "unknown cluster: resolved at request time");
    const struct rm_route *inh = &t->vhosts[0].routes[1];
    cr_assert_eq(inh->mirrors.n, 2, "the virtual host's list");
    cr_assert_eq(mirror_of(inh, 0)->cluster, &clusters[1]);
    const struct rm_mirror_policy *hm = mirror_of(inh, 1);
    cr_assert_str_eq(hm->cluster_header, "x-mirror", "header names are lower-cased");
    cr_assert_null(hm->cluster_name);
    cr_assert_eq(hm->numerator, 25);
    cr_assert_eq(hm->denominator, 10000);
    cr_assert_not(hm->host_suffix);
    const struct rm_route *top = &t->vhosts[1].routes[0];
    cr_assert_eq(top->mirrors.n, 1, "the route configuration's list");
    cr_assert_eq(mirror_of(top, 0)->cluster, &clusters[0]);
    cr_assert_eq(t->vhosts[1].routes[1].mirrors.n, 0, "a direct response mirrors nothing");
    rm_route_table_free(t);
}

Test(route, mirror_policy_errors)
{
    expect_error(VH("  - {match: {prefix: /}, route: {cluster: a, request_mirror_policies:"
                    " [{cluster: b, cluster_header: x}]}}\n"),
                 "route_config.virtual_hosts[0].routes[0].route.request_mirror_policies[0]: only "
                 "one of cluster and cluster_header may be set");
    expect_error(VH("  - {match: {prefix: /}, route: {cluster: a, request_mirror_policies:"
                    " [{cluster: b}, {trace_sampled: true}]}}\n"),
                 "route_config.virtual_hosts[0].routes[0].route.request_mirror_policies[1]: one of "
                 "cluster or cluster_header is required");
    expect_error("request_mirror_policies: [{cluster_header: \"a\\rb\"}]\n"
                 "virtual_hosts: [{name: v, domains: [x]}]\n",
                 "route_config.request_mirror_policies[0].cluster_header: a valid header name is "
                 "required");
    expect_error("validate_clusters: true\n"
                 "virtual_hosts: [{name: v, domains: [x], request_mirror_policies: [{cluster:"
                 " zz}]}]\n",
                 "route_config.virtual_hosts[0].request_mirror_policies[0].cluster: unknown "
                 "cluster 'zz'");
}

Test(route, invalid_regex)
{
    expect_error(VH("  - {match: {safe_regex: {regex: '/(a'}}, route: {cluster: a}}\n"),
                 "route_config.virtual_hosts[0].routes[0].match.safe_regex.regex: invalid regex "
                 "\"/(a\": missing closing parenthesis (at offset 3)");
    expect_error(VH("  - match: {prefix: /, headers: [{name: x, string_match: {safe_regex: "
                    "{regex: '[z-a]'}}}]}\n"
                    "    route: {cluster: a}\n"),
                 "route_config.virtual_hosts[0].routes[0].match.headers[0].string_match."
                 "safe_regex.regex: invalid regex \"[z-a]\": range out of order in character "
                 "class (at offset 3)");
    expect_error(VH("  - match: {prefix: /, headers: [{name: x, string_match: {safe_regex: "
                    "{regex: 'a'}, ignore_case: true}}]}\n"
                    "    route: {cluster: a}\n"),
                 "route_config.virtual_hosts[0].routes[0].match.headers[0].string_match."
                 "ignore_case: ignore_case has no effect for safe_regex");
    expect_error(VH("  - match: {prefix: /, headers: [{name: x, string_match: {prefix: ''}}]}\n"
                    "    route: {cluster: a}\n"),
                 "route_config.virtual_hosts[0].routes[0].match.headers[0].string_match.prefix: "
                 "must not be empty");
}

Test(route, empty_and_null)
{
    rm_route_table_free(NULL);
    struct rm_route_table *t = build("name: empty\n");
    cr_expect_eq(t->n_vhosts, 0);
    cr_expect_null(rm_route_find_vhost(t, "x", 1));
    cr_expect_null(rm_route_match(NULL, req(":path", "/", NULL)));
    rm_route_table_free(t);
    struct rm_error err = {{0}};
    cr_expect_null(rm_route_table_new(NULL, "rc", resolve, NULL, &err));
    cr_expect_str_eq(err.msg, "rc: a RouteConfiguration is required");
}

/* Istio puts a decorator (tracing span name) on every route: accepted, no effect on routing;
 * Envoy's validation (a non-empty operation) kept. */
Test(route, decorator_accepted_without_effect)
{
    struct rm_route_table *t =
        build(VH("  - match: {prefix: /}\n"
                 "    route: {cluster: a}\n"
                 "    decorator: {operation: \"reviews.default.svc.cluster.local:9080/*\", "
                 "propagate: false}\n"));
    rm_route_table_free(t);
    expect_error(
        VH("  - {match: {prefix: /}, route: {cluster: a}, decorator: {operation: \"\"}}\n"),
        "route_config.virtual_hosts[0].routes[0].decorator.operation: must not be empty");
}
