/* Choosing a filter chain (proxy/config/filter_chain_match.h): Envoy's order of criteria, the
 * most specific value winning at each step with no fall-back afterwards, and the config errors
 * (duplicate matches, unsupported fields) with their paths.  Also the listener-level checks in
 * the snapshot (default_filter_chain, several RDS names). */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "proxy/admin/stats.h"
#include "proxy/config/filter_chain_match.h"
#include "proxy/config/pbjson.h"
#include "proxy/config/snapshot.h"
#include "proxy/core/error.h"

static void fini(void)
{
    rm_stats_free_all();
}

TestSuite(filter_chain_match, .fini = fini);

typedef Envoy__Config__Listener__V3__Listener Listener;

/* A Listener whose filter_chains are <chains> (YAML flow sequence of filter_chain_match maps:
 * "[{destination_port: 80}, {}]"): the matcher, or NULL with <err>. */
static struct rm_fcm *compile(const char *matches, Listener **out, struct rm_error *err)
{
    char yaml[4096];
    snprintf(yaml, sizeof(yaml), "filter_chains: %s\n", matches);
    ProtobufCMessage *m = NULL;
    int rc = rm_pbjson_parse_string(yaml, strlen(yaml), "t.yaml",
                                    &envoy__config__listener__v3__listener__descriptor, &m, err);
    cr_assert_eq(rc, RM_OK, "parse: %s", err->msg);
    Listener *l = (Listener *)m;
    char p[16][64];
    const char *paths[16];
    cr_assert(l->n_filter_chains <= 16);
    for (size_t i = 0; i < l->n_filter_chains; i++) {
        snprintf(p[i], sizeof(p[i]), "l.filter_chains[%zu]", i);
        paths[i] = p[i];
    }
    struct rm_fcm *f =
        rm_fcm_new((const Envoy__Config__Listener__V3__FilterChain *const *)l->filter_chains, paths,
                   l->n_filter_chains, err);
    *out = l;
    return f;
}

static struct sockaddr_storage addr(const char *ip, unsigned port)
{
    struct sockaddr_storage s = {0};
    if (strchr(ip, ':')) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&s;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        cr_assert_eq(inet_pton(AF_INET6, ip, &a->sin6_addr), 1);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&s;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        cr_assert_eq(inet_pton(AF_INET, ip, &a->sin_addr), 1);
    }
    return s;
}

/* One connection: local and peer addresses, then the first bytes' facts. */
struct conn {
    const char *local;
    unsigned lport;
    const char *peer;
    unsigned pport;
    const char *sni, *transport, *alpn;
    long want;
};

static void check(const char *matches, const struct conn *v, size_t n)
{
    struct rm_error err = {{0}};
    Listener *l;
    struct rm_fcm *f = compile(matches, &l, &err);
    cr_assert(f, "%s: %s", matches, err.msg);
    for (size_t i = 0; i < n; i++) {
        struct sockaddr_storage la = addr(v[i].local, v[i].lport), pa = addr(v[i].peer, v[i].pport);
        const char *alpn[1] = {v[i].alpn};
        struct rm_fcm_facts facts = {.local = (struct sockaddr *)&la,
                                     .peer = (struct sockaddr *)&pa,
                                     .server_name = v[i].sni,
                                     .transport_protocol = v[i].transport,
                                     .app_protocols = alpn,
                                     .n_app_protocols = v[i].alpn ? 1 : 0};
        cr_assert_eq(rm_fcm_select(f, &facts), v[i].want,
                     "%s: connection %zu (%s:%u from %s:%u sni %s): chain %ld, expected %ld",
                     matches, i, v[i].local, v[i].lport, v[i].peer, v[i].pport,
                     v[i].sni ? v[i].sni : "-", rm_fcm_select(f, &facts), v[i].want);
    }
    rm_fcm_free(f);
    protobuf_c_message_free_unpacked(&l->base, NULL);
}

#define CHECK(matches, ...)                                                                        \
    do {                                                                                           \
        const struct conn v_[] = {__VA_ARGS__};                                                    \
        check(matches, v_, sizeof(v_) / sizeof(v_[0]));                                            \
    } while (0)

Test(filter_chain_match, destination_port_then_no_fallback)
{
    /* port 80 exists: a connection to 80 from a source chain 1 does not cover gets nothing,
     * even though chain 2 (no port) would match it: no falling back */
    CHECK("[{filter_chain_match: {destination_port: 80}},"
          " {filter_chain_match: {destination_port: 80, source_prefix_ranges: "
          "[{address_prefix: 10.0.0.0, prefix_len: 8}]}},"
          " {filter_chain_match: {source_prefix_ranges: "
          "[{address_prefix: 192.168.0.0, prefix_len: 16}]}}]",
          {"127.0.0.1", 80, "127.0.0.9", 5000, .want = 0},
          {"127.0.0.1", 80, "10.1.2.3", 5000, .want = 1},
          {"127.0.0.1", 81, "192.168.1.1", 5000, .want = 2},
          {"127.0.0.1", 81, "127.0.0.9", 5000, .want = -1});
    CHECK("[{filter_chain_match: {destination_port: 80, source_prefix_ranges: "
          "[{address_prefix: 10.0.0.0, prefix_len: 8}]}}, {}]",
          {"127.0.0.1", 80, "127.0.0.9", 5000, .want = -1},
          {"127.0.0.1", 80, "10.0.0.1", 5000, .want = 0},
          {"127.0.0.1", 9, "10.0.0.1", 5000, .want = 1});
}

Test(filter_chain_match, destination_ip_longest_prefix)
{
    CHECK("[{filter_chain_match: {prefix_ranges: [{address_prefix: 127.0.0.0, prefix_len: 8}]}},"
          " {filter_chain_match: {prefix_ranges: [{address_prefix: 127.0.0.3, prefix_len: 32},"
          " {address_prefix: \"::1\", prefix_len: 128}]}}, {}]",
          {"127.0.0.1", 80, "127.0.0.1", 1, .want = 0},
          {"127.0.0.3", 80, "127.0.0.1", 1, .want = 1}, {"::1", 80, "::1", 1, .want = 1},
          {"10.0.0.1", 80, "10.0.0.2", 1, .want = 2}, {"::2", 80, "::1", 1, .want = 2});
}

Test(filter_chain_match, istio_passthrough_v4_and_v6)
{
    CHECK("[{name: virtualInbound-blackhole, filter_chain_match: {destination_port: 15006}},"
          " {name: virtualInbound, filter_chain_match: {prefix_ranges: "
          "[{address_prefix: 0.0.0.0, prefix_len: 0}]}},"
          " {name: virtualInbound-ipv6, filter_chain_match: {prefix_ranges: "
          "[{address_prefix: \"::\", prefix_len: 0}]}}]",
          {"10.0.0.1", 15006, "10.0.0.2", 1, .want = 0},
          {"10.0.0.1", 8080, "10.0.0.2", 1, .want = 1}, {"fd00::1", 8080, "fd00::2", 1, .want = 2});
}

Test(filter_chain_match, server_names_exact_then_wildcard)
{
    CHECK("[{filter_chain_match: {server_names: [api.example.com]}},"
          " {filter_chain_match: {server_names: [\"*.example.com\"]}},"
          " {filter_chain_match: {server_names: [\"*.com\"]}},"
          " {filter_chain_match: {transport_protocol: tls}}, {}]",
          {"127.0.0.1", 443, "127.0.0.1", 1, "api.example.com", "tls", .want = 0},
          {"127.0.0.1", 443, "127.0.0.1", 1, "API.Example.com", "tls", .want = 0},
          {"127.0.0.1", 443, "127.0.0.1", 1, "www.example.com", "tls", .want = 1},
          {"127.0.0.1", 443, "127.0.0.1", 1, "a.b.example.com", "tls", .want = 1},
          {"127.0.0.1", 443, "127.0.0.1", 1, "x.com", "tls", .want = 2},
          {"127.0.0.1", 443, "127.0.0.1", 1, "example.org", "tls", .want = 3},
          {"127.0.0.1", 443, "127.0.0.1", 1, NULL, "tls", .want = 3},
          {"127.0.0.1", 443, "127.0.0.1", 1, NULL, "raw_buffer", .want = 4});
}

Test(filter_chain_match, transport_and_application_protocols)
{
    /* Istio's inbound pattern: mTLS with istio ALPN, plaintext HTTP, plaintext TCP */
    CHECK("[{filter_chain_match: {transport_protocol: tls, application_protocols: "
          "[istio-peer-exchange, istio]}},"
          " {filter_chain_match: {transport_protocol: tls}},"
          " {filter_chain_match: {transport_protocol: raw_buffer, application_protocols: "
          "[http/1.1, http/1.0, h2c]}},"
          " {filter_chain_match: {transport_protocol: raw_buffer}}]",
          {"127.0.0.1", 1, "127.0.0.1", 1, NULL, "tls", "istio", .want = 0},
          {"127.0.0.1", 1, "127.0.0.1", 1, NULL, "tls", "h2", .want = 1},
          {"127.0.0.1", 1, "127.0.0.1", 1, NULL, "tls", NULL, .want = 1},
          {"127.0.0.1", 1, "127.0.0.1", 1, NULL, "raw_buffer", "h2c", .want = 2},
          {"127.0.0.1", 1, "127.0.0.1", 1, NULL, "raw_buffer", NULL, .want = 3});
}

Test(filter_chain_match, sources)
{
    CHECK("[{filter_chain_match: {direct_source_prefix_ranges: "
          "[{address_prefix: 10.0.0.0, prefix_len: 8}]}},"
          " {filter_chain_match: {source_type: SAME_IP_OR_LOOPBACK}},"
          " {filter_chain_match: {source_type: EXTERNAL, source_prefix_ranges: "
          "[{address_prefix: 192.168.0.0, prefix_len: 16}]}},"
          " {filter_chain_match: {source_type: EXTERNAL, source_prefix_ranges: "
          "[{address_prefix: 192.168.1.0, prefix_len: 24}], source_ports: [7000]}},"
          " {filter_chain_match: {source_type: EXTERNAL, source_prefix_ranges: "
          "[{address_prefix: 192.168.1.0, prefix_len: 24}]}}]",
          {"10.9.9.9", 1, "10.0.0.1", 1, .want = 0}, {"127.0.0.1", 1, "127.0.0.5", 1, .want = 1},
          {"172.16.0.1", 1, "172.16.0.1", 1, .want = 1}, /* same IP */
          {"172.16.0.1", 1, "192.168.7.7", 1, .want = 2},
          {"172.16.0.1", 1, "192.168.1.7", 7000, .want = 3},
          {"172.16.0.1", 1, "192.168.1.7", 7001, .want = 4},
          {"172.16.0.1", 1, "172.16.0.2", 1, .want = -1});
}

static void expect_error(const char *matches, const char *want)
{
    struct rm_error err = {{0}};
    Listener *l;
    struct rm_fcm *f = compile(matches, &l, &err);
    protobuf_c_message_free_unpacked(&l->base, NULL);
    cr_assert_null(f, "expected: %s", want);
    cr_assert(strstr(err.msg, want), "got \"%s\", expected \"%s\"", err.msg, want);
}

Test(filter_chain_match, config_errors)
{
    expect_error("[{}, {}]", "l.filter_chains[1].filter_chain_match: multiple filter chains with "
                             "the same matching rules are defined (l.filter_chains[0] has the "
                             "same)");
    expect_error("[{filter_chain_match: {server_names: [a.com, b.com]}},"
                 " {filter_chain_match: {server_names: [c.com, b.com]}}]",
                 "l.filter_chains[1].filter_chain_match: multiple filter chains");
    expect_error("[{filter_chain_match: {prefix_ranges: [{address_prefix: 10.1.0.0, "
                 "prefix_len: 8}]}}, {filter_chain_match: {prefix_ranges: [{address_prefix: "
                 "10.0.0.0, prefix_len: 8}]}}]",
                 "l.filter_chains[1].filter_chain_match: multiple filter chains");
    expect_error("[{}, {filter_chain_match: {prefix_ranges: [{address_prefix: \"::\", "
                 "prefix_len: 0}]}}]",
                 "l.filter_chains[1].filter_chain_match: multiple filter chains");
    expect_error("[{filter_chain_match: {address_suffix: x}}]",
                 "l.filter_chains[0].filter_chain_match.address_suffix: not supported");
    expect_error("[{filter_chain_match: {suffix_len: 3}}]",
                 "l.filter_chains[0].filter_chain_match.suffix_len: not supported");
    expect_error("[{filter_chain_match: {server_names: [\"foo*.com\"]}}]",
                 "l.filter_chains[0].filter_chain_match.server_names[0]: partial wildcards");
    expect_error("[{filter_chain_match: {prefix_ranges: [{address_prefix: nope}]}}]",
                 "l.filter_chains[0].filter_chain_match.prefix_ranges[0].address_prefix: not "
                 "an IP address");
    expect_error("[{filter_chain_match: {source_prefix_ranges: [{address_prefix: 10.0.0.0, "
                 "prefix_len: 33}]}}]",
                 "l.filter_chains[0].filter_chain_match.source_prefix_ranges[0].prefix_len: 33 "
                 "is over 32");
}

Test(filter_chain_match, needs_data)
{
    struct rm_error err = {{0}};
    Listener *l;
    struct rm_fcm *f = compile("[{filter_chain_match: {destination_port: 80}}, {}]", &l, &err);
    cr_assert(f);
    cr_assert_not(rm_fcm_needs_data(f));
    cr_assert(rm_fcm_needs_local(f));
    rm_fcm_free(f);
    protobuf_c_message_free_unpacked(&l->base, NULL);
    f = compile("[{filter_chain_match: {source_ports: [1]}}, {}]", &l, &err);
    cr_assert(f);
    cr_assert_not(rm_fcm_needs_local(f));
    rm_fcm_free(f);
    protobuf_c_message_free_unpacked(&l->base, NULL);
    f = compile("[{filter_chain_match: {transport_protocol: tls}}, {}]", &l, &err);
    cr_assert(f);
    cr_assert(rm_fcm_needs_data(f));
    rm_fcm_free(f);
    protobuf_c_message_free_unpacked(&l->base, NULL);
}

/* ---- in the snapshot ----------------------------------------------------------------------- */

#define HCM(prefix, routes)                                                                        \
    "      filters:\n"                                                                             \
    "      - name: envoy.filters.network.http_connection_manager\n"                                \
    "        typed_config:\n"                                                                      \
    "          \"@type\": type.googleapis.com/"                                                    \
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n"          \
    "          stat_prefix: " prefix "\n"                                                          \
    "          " routes "\n"                                                                       \
    "          http_filters:\n"                                                                    \
    "          - name: envoy.filters.http.router\n"                                                \
    "            typed_config: {\"@type\": type.googleapis.com/"                                   \
    "envoy.extensions.filters.http.router.v3.Router}\n"
#define INLINE "route_config: {virtual_hosts: [{name: v, domains: [\"*\"]}]}"

static struct rm_snapshot *build(const char *chains, struct rm_error *err)
{
    char yaml[8192];
    snprintf(yaml, sizeof(yaml),
             "static_resources:\n"
             "  listeners:\n"
             "  - name: l\n"
             "    address: {socket_address: {address: 127.0.0.1, port_value: 10000}}\n"
             "%s",
             chains);
    ProtobufCMessage *m = NULL;
    int rc = rm_pbjson_parse_string(yaml, strlen(yaml), "t.yaml",
                                    &envoy__config__bootstrap__v3__bootstrap__descriptor, &m, err);
    cr_assert_eq(rc, RM_OK, "parse: %s", err->msg);
    return rm_snapshot_from_bootstrap((Envoy__Config__Bootstrap__V3__Bootstrap *)m, err);
}

Test(filter_chain_match, snapshot_chains)
{
    struct rm_error err = {{0}};
    struct rm_snapshot *s =
        build("    filter_chains:\n"
              "    - name: a\n"
              "      filter_chain_match: {destination_port: 10000}\n" HCM(
                  "a", INLINE) "    - name: b\n"
                               "      filter_chain_match: {source_type: "
                               "EXTERNAL}\n" HCM("b", INLINE) "    default_filter_chain:\n" HCM(
                                   "d", INLINE),
              &err);
    cr_assert(s, "%s", err.msg);
    const struct rm_listener_cfg *lc = s->listeners[0];
    cr_assert_eq(lc->n_chains, 3);
    cr_assert(lc->fcm && lc->has_default && !lc->peek && !lc->netfilter);
    cr_assert_str_eq(lc->chains[0]->chain_name, "a");
    cr_assert_str_eq(lc->chains[1]->hcm.stat_prefix, "b");
    cr_assert_str_eq(lc->chains[2]->hcm.stat_prefix, "d");
    cr_assert_eq(lc->chains[1]->stats, lc->stats);
    cr_assert_eq(rm_listener_cfg_follow(lc, lc->chains[1]), lc->chains[1]);
    rm_snapshot_unref(s);
    /* one chain without a match: the listener is its own chain */
    s = build("    filter_chains:\n    - name: one\n" HCM("one", INLINE), &err);
    cr_assert(s, "%s", err.msg);
    lc = s->listeners[0];
    cr_assert(lc->n_chains == 1 && lc->chains[0] == lc && !lc->fcm && lc->netfilter);
    cr_assert_eq(rm_listener_cfg_follow(lc, lc), lc);
    rm_snapshot_unref(s);
}

static void expect_snapshot_error(const char *chains, const char *want)
{
    struct rm_error err = {{0}};
    struct rm_snapshot *s = build(chains, &err);
    cr_assert_null(s, "expected: %s", want);
    cr_assert(strstr(err.msg, want), "got \"%s\", expected \"%s\"", err.msg, want);
}

Test(filter_chain_match, snapshot_errors)
{
    expect_snapshot_error("    filter_chains: []\n",
                          "static_resources.listeners[0].filter_chains: at least one filter "
                          "chain is required");
    expect_snapshot_error(
        "    filter_chains:\n"
        "    - filter_chain_match: {destination_port: 1}\n" HCM(
            "a", "rds: {route_config_name: r1, config_source: {ads: {}}}") "    - "
                                                                           "filter_chain_match: "
                                                                           "{destination_port: "
                                                                           "2}\n" HCM("b",
                                                                                      "rds: "
                                                                                      "{route_"
                                                                                      "config_name:"
                                                                                      " r2, "
                                                                                      "config_"
                                                                                      "source: "
                                                                                      "{ads: {}}}"),
        "static_resources.listeners[0].filter_chains[1].filters[0].typed_"
        "config.rds.route_config_name: a second RDS route configuration");
    expect_snapshot_error(
        "    filter_chains:\n"
        "    - filter_chain_match: {destination_port: 1}\n" HCM(
            "a", INLINE) "    - filter_chain_match: {destination_port: 1}\n" HCM("b", INLINE),
        "static_resources.listeners[0].filter_chains[1].filter_chain_match: "
        "multiple filter chains with the same matching rules");
    expect_snapshot_error(
        "    filter_chains:\n"
        "    - filter_chain_match: {destination_port: 1}\n" HCM(
            "a", INLINE) "    default_filter_chain:\n"
                         "      filter_chain_match: {destination_port: 2}\n" HCM("d", INLINE),
        "static_resources.listeners[0].default_filter_chain.filter_chain_match: "
        "not allowed");
    expect_snapshot_error("    filter_chains:\n"
                          "    - filter_chain_match: {destination_port: 1}\n"
                          "      filters: []\n",
                          "static_resources.listeners[0].filter_chains[0].filters: exactly one "
                          "network filter");
}
