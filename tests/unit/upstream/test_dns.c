/* proxy/upstream/dns: config parsing (errors name the field), the refresh / backoff arithmetic,
 * and real resolutions through c-ares against the canned server of dns_responder.h, driven by
 * an rm_loop with bounded waits. */
#include <ares.h>
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "proxy/config/pbjson.h"
#include "proxy/core/loop.h"
#include "proxy/upstream/dns.h"
#include "tests/unit/upstream/dns_responder.h"

typedef Envoy__Config__Cluster__V3__Cluster Cluster;
#define CLUSTER (&envoy__config__cluster__v3__cluster__descriptor)

/* ---- config -------------------------------------------------------------------------------- */

static Cluster *parse_cluster(const char *yaml)
{
    struct rm_error err = {{0}};
    ProtobufCMessage *m = NULL;
    int rc = rm_pbjson_parse_string(yaml, strlen(yaml), "t.yaml", CLUSTER, &m, &err);
    cr_assert_eq(rc, RM_OK, "parse: %s", err.msg);
    return (Cluster *)m;
}

static void cfg_ok(const char *yaml, struct rm_dns_cluster_cfg *out)
{
    Cluster *c = parse_cluster(yaml);
    struct rm_error err = {{0}};
    cr_assert(rm_dns_cluster_is_dns(c));
    int rc = rm_dns_cluster_cfg_from_cluster(c, "clusters[0]", out, &err);
    protobuf_c_message_free_unpacked(&c->base, NULL);
    cr_assert_eq(rc, RM_OK, "%s", err.msg);
}

static void cfg_err(const char *yaml, const char *want)
{
    Cluster *c = parse_cluster(yaml);
    struct rm_error err = {{0}};
    struct rm_dns_cluster_cfg out;
    int rc = rm_dns_cluster_cfg_from_cluster(c, "clusters[0]", &out, &err);
    protobuf_c_message_free_unpacked(&c->base, NULL);
    cr_assert_eq(rc, RM_ERR, "expected: %s", want);
    cr_assert(strstr(err.msg, want), "got \"%s\", want \"%s\"", err.msg, want);
}

static const char *ip_of(const struct sockaddr_storage *ss, char *buf, size_t len)
{
    const void *a = ss->ss_family == AF_INET
                        ? (const void *)&((const struct sockaddr_in *)ss)->sin_addr
                        : (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr;
    return inet_ntop(ss->ss_family, a, buf, (socklen_t)len);
}

static int port_of(const struct sockaddr_storage *ss)
{
    return ss->ss_family == AF_INET ? ntohs(((const struct sockaddr_in *)ss)->sin_port)
                                    : ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
}

#define CARES_TYPE                                                                                 \
    "type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig"

Test(dns_config, legacy_cluster_fields)
{
    struct rm_dns_cluster_cfg c;
    cfg_ok("name: c\n"
           "type: STRICT_DNS\n"
           "dns_refresh_rate: 2s\n"
           "dns_failure_refresh_rate: {base_interval: 1s, max_interval: 8s}\n"
           "respect_dns_ttl: true\n"
           "dns_jitter: 0.5s\n"
           "dns_lookup_family: V4_PREFERRED\n"
           "typed_dns_resolver_config:\n"
           "  name: envoy.network.dns_resolver.cares\n"
           "  typed_config:\n"
           "    '@type': " CARES_TYPE "\n"
           "    resolvers:\n"
           "    - socket_address: {address: 127.0.0.1, port_value: 5353}\n"
           "    - socket_address: {address: '::1', port_value: 53, protocol: UDP}\n"
           "    use_resolvers_as_fallback: true\n"
           "    filter_unroutable_families: true\n"
           "    dns_resolver_options: {use_tcp_for_dns_lookups: true, no_default_search_domain: "
           "true}\n"
           "    query_timeout_seconds: 2\n"
           "    query_tries: 3\n"
           "    rotate_nameservers: true\n"
           "    edns0_max_payload_size: 1232\n",
           &c);
    cr_assert_eq(c.refresh_rate_ms, 2000);
    cr_assert_eq(c.failure_base_ms, 1000);
    cr_assert_eq(c.failure_max_ms, 8000);
    cr_assert(c.respect_dns_ttl);
    cr_assert_eq(c.jitter_ms, 500);
    cr_assert_eq(c.family, RM_DNS_V4_PREFERRED);
    cr_assert(!c.logical);
    cr_assert(c.has_resolver);
    const struct rm_dns_config *r = &c.resolver;
    char ip[64];
    cr_assert_eq(r->n_resolvers, 2);
    cr_assert_str_eq(ip_of(&r->resolvers[0], ip, sizeof(ip)), "127.0.0.1");
    cr_assert_eq(port_of(&r->resolvers[0]), 5353);
    cr_assert_str_eq(ip_of(&r->resolvers[1], ip, sizeof(ip)), "::1");
    cr_assert_eq(port_of(&r->resolvers[1]), 53);
    cr_assert(r->use_resolvers_as_fallback && r->filter_unroutable_families);
    cr_assert(r->use_tcp && r->no_default_search_domain && r->rotate_nameservers);
    cr_assert_eq(r->query_timeout_ms, 2000);
    cr_assert_eq(r->query_tries, 3);
    cr_assert_eq(r->edns0_max_payload, 1232);
}

Test(dns_config, defaults_and_logical)
{
    struct rm_dns_cluster_cfg c;
    cfg_ok("name: c\ntype: LOGICAL_DNS\n", &c);
    cr_assert_eq(c.refresh_rate_ms, 5000);
    cr_assert_eq(c.failure_base_ms, 0);
    cr_assert(!c.respect_dns_ttl);
    cr_assert_eq(c.jitter_ms, 0);
    cr_assert_eq(c.family, RM_DNS_AUTO);
    cr_assert(c.logical);
    cr_assert(!c.has_resolver);
    cr_assert_eq(c.resolver.n_resolvers, 0);
    cr_assert_eq(c.resolver.query_timeout_ms, 5000);
    cr_assert_eq(c.resolver.query_tries, 4);
    /* failure max defaults to 10 x base */
    cfg_ok("name: c\ntype: STRICT_DNS\ndns_failure_refresh_rate: {base_interval: 0.25s}\n", &c);
    cr_assert_eq(c.failure_base_ms, 250);
    cr_assert_eq(c.failure_max_ms, 2500);
}

Test(dns_config, dns_cluster_extension)
{
    struct rm_dns_cluster_cfg c;
    cfg_ok("name: c\n"
           "dns_refresh_rate: 9s\n" /* ignored with the extension, as in Envoy */
           "cluster_type:\n"
           "  name: envoy.clusters.dns\n"
           "  typed_config:\n"
           "    '@type': type.googleapis.com/envoy.extensions.clusters.dns.v3.DnsCluster\n"
           "    dns_refresh_rate: 3s\n"
           "    dns_failure_refresh_rate: {base_interval: 2s}\n"
           "    respect_dns_ttl: true\n"
           "    dns_jitter: 1s\n"
           "    dns_lookup_family: V6_ONLY\n"
           "    all_addresses_in_single_endpoint: true\n"
           "    typed_dns_resolver_config:\n"
           "      name: envoy.network.dns_resolver.cares\n"
           "      typed_config:\n"
           "        '@type': " CARES_TYPE "\n"
           "        resolvers: [{socket_address: {address: 10.0.0.53, port_value: 1053}}]\n",
           &c);
    cr_assert_eq(c.refresh_rate_ms, 3000);
    cr_assert_eq(c.failure_base_ms, 2000);
    cr_assert_eq(c.failure_max_ms, 20000);
    cr_assert(c.respect_dns_ttl);
    cr_assert_eq(c.jitter_ms, 1000);
    cr_assert_eq(c.family, RM_DNS_V6_ONLY);
    cr_assert(c.logical);
    cr_assert(c.has_resolver);
    cr_assert_eq(c.resolver.n_resolvers, 1);
    cr_assert_eq(port_of(&c.resolver.resolvers[0]), 1053);
    /* UNSPECIFIED (the default) is AUTO; STRICT by default */
    cfg_ok("name: c\ncluster_type:\n  name: envoy.clusters.dns\n  typed_config:\n"
           "    '@type': type.googleapis.com/envoy.extensions.clusters.dns.v3.DnsCluster\n"
           "    dns_lookup_family: ALL\n",
           &c);
    cr_assert_eq(c.family, RM_DNS_ALL);
    cr_assert(!c.logical);
    cfg_ok("name: c\ncluster_type:\n  name: envoy.clusters.dns\n  typed_config:\n"
           "    '@type': type.googleapis.com/envoy.extensions.clusters.dns.v3.DnsCluster\n",
           &c);
    cr_assert_eq(c.family, RM_DNS_AUTO);
    cr_assert_eq(c.refresh_rate_ms, 5000);
}

Test(dns_config, legacy_resolver_precedence)
{
    struct rm_dns_cluster_cfg c;
    char ip[64];
    cfg_ok("name: c\ntype: STRICT_DNS\n"
           "dns_resolvers: [{socket_address: {address: 10.0.0.1, port_value: 53}}]\n"
           "use_tcp_for_dns_lookups: true\n",
           &c);
    cr_assert(c.has_resolver && c.resolver.use_tcp);
    cr_assert_str_eq(ip_of(&c.resolver.resolvers[0], ip, sizeof(ip)), "10.0.0.1");
    cfg_ok("name: c\ntype: STRICT_DNS\n"
           "dns_resolvers: [{socket_address: {address: 10.0.0.1, port_value: 53}}]\n"
           "dns_resolution_config:\n"
           "  resolvers: [{socket_address: {address: 10.0.0.2, port_value: 54}}]\n"
           "  dns_resolver_options: {no_default_search_domain: true}\n",
           &c);
    cr_assert_eq(c.resolver.n_resolvers, 1);
    cr_assert_str_eq(ip_of(&c.resolver.resolvers[0], ip, sizeof(ip)), "10.0.0.2");
    cr_assert(c.resolver.no_default_search_domain && !c.resolver.use_tcp);
    cfg_ok("name: c\ntype: STRICT_DNS\n"
           "dns_resolution_config:\n"
           "  resolvers: [{socket_address: {address: 10.0.0.2, port_value: 54}}]\n"
           "typed_dns_resolver_config:\n"
           "  typed_config: {'@type': " CARES_TYPE ", resolvers: [{socket_address: {address: "
           "10.0.0.3}}]}\n",
           &c);
    cr_assert_str_eq(ip_of(&c.resolver.resolvers[0], ip, sizeof(ip)), "10.0.0.3");
}

Test(dns_config, errors_name_the_field)
{
    const char *pre = "name: c\ntype: STRICT_DNS\ntyped_dns_resolver_config:\n  typed_config:\n"
                      "    '@type': " CARES_TYPE "\n";
    char y[2048];
#define CARES_ERR(extra, want)                                                                     \
    do {                                                                                           \
        snprintf(y, sizeof(y), "%s%s", pre, extra);                                                \
        cfg_err(y, want);                                                                          \
    } while (0)
    CARES_ERR("    resolvers: [{socket_address: {address: dns.example.com, port_value: 53}}]\n",
              "clusters[0].typed_dns_resolver_config.typed_config.resolvers[0].socket_address."
              "address: \"dns.example.com\" is not an IP address");
    CARES_ERR("    resolvers: [{socket_address: {address: 10.0.0.1}}, {socket_address: "
              "{address: 10.0.0.2, named_port: dns}}]\n",
              "typed_config.resolvers[1].socket_address.named_port: not supported");
    CARES_ERR("    resolvers: [{pipe: {path: /tmp/x}}]\n",
              "typed_config.resolvers[0]: a DNS resolver must be a socket_address");
    CARES_ERR("    resolvers: [{socket_address: {address: 10.0.0.1, resolver_name: x}}]\n",
              "resolvers[0].socket_address.resolver_name: not supported");
    CARES_ERR("    udp_max_queries: 100\n", "typed_config.udp_max_queries: not supported");
    CARES_ERR("    query_tries: 0\n", "typed_config.query_tries: must be at least 1");
    CARES_ERR("    query_timeout_seconds: 0\n", "typed_config.query_timeout_seconds: 0 is out");
    CARES_ERR("    edns0_max_payload_size: 100\n",
              "typed_config.edns0_max_payload_size: 100 is out of range (512..4096)");
    CARES_ERR("    resolvers: [{socket_address: {address: 1.1.1.1}}, {socket_address: {address: "
              "1.1.1.2}}, {socket_address: {address: 1.1.1.3}}, {socket_address: {address: "
              "1.1.1.4}}, {socket_address: {address: 1.1.1.5}}, {socket_address: {address: "
              "1.1.1.6}}, {socket_address: {address: 1.1.1.7}}, {socket_address: {address: "
              "1.1.1.8}}, {socket_address: {address: 1.1.1.9}}]\n",
              "typed_config.resolvers: at most 8 resolvers are supported (got 9)");
#undef CARES_ERR
    cfg_err("name: c\ntype: STRICT_DNS\ntyped_dns_resolver_config:\n  typed_config:\n"
            "    '@type': type.googleapis.com/envoy.config.core.v3.Address\n",
            "clusters[0].typed_dns_resolver_config.typed_config: DNS resolver "
            "\"type.googleapis.com/envoy.config.core.v3.Address\" is not supported");
    cfg_err("name: c\ntype: STRICT_DNS\ntyped_dns_resolver_config: {name: x}\n",
            "clusters[0].typed_dns_resolver_config.typed_config: required");
    cfg_err("name: c\ntype: STRICT_DNS\ndns_refresh_rate: 0.001s\n",
            "clusters[0].dns_refresh_rate: must be greater than 1ms");
    cfg_err("name: c\ntype: STRICT_DNS\ndns_failure_refresh_rate: {max_interval: 1s}\n",
            "clusters[0].dns_failure_refresh_rate.base_interval: required");
    cfg_err("name: c\ntype: STRICT_DNS\ndns_failure_refresh_rate: {base_interval: 5s, "
            "max_interval: 1s}\n",
            "clusters[0].dns_failure_refresh_rate: max_interval must be greater than or equal");
    cfg_err("name: c\ntype: STRICT_DNS\ndns_jitter: -1s\n",
            "clusters[0].dns_jitter: must not be negative");
    cfg_err("name: c\ntype: STRICT_DNS\n"
            "dns_resolvers: [{socket_address: {address: not-an-ip, port_value: 53}}]\n",
            "clusters[0].dns_resolvers[0].socket_address.address: \"not-an-ip\" is not an IP");
    cfg_err("name: c\ntype: STRICT_DNS\ndns_resolution_config:\n"
            "  resolvers: [{socket_address: {address: 10.0.0.1, port_value: 99999}}]\n",
            "clusters[0].dns_resolution_config.resolvers[0].socket_address.port_value: 99999");
    cfg_err("name: c\ncluster_type:\n  name: envoy.clusters.dns\n",
            "clusters[0].cluster_type.typed_config: required");
    cfg_err("name: c\ncluster_type:\n  name: envoy.clusters.dns\n  typed_config:\n"
            "    '@type': type.googleapis.com/envoy.extensions.clusters.dns.v3.DnsCluster\n"
            "    dns_refresh_rate: 0s\n",
            "clusters[0].cluster_type.typed_config.dns_refresh_rate: must be greater than 1ms");
    cfg_err("name: c\ncluster_type:\n  name: envoy.clusters.dns\n  typed_config:\n"
            "    '@type': type.googleapis.com/envoy.extensions.clusters.dns.v3.DnsCluster\n"
            "    typed_dns_resolver_config:\n      typed_config:\n"
            "        '@type': " CARES_TYPE "\n        resolvers: [{socket_address: {address: "
            "x}}]\n",
            "clusters[0].cluster_type.typed_config.typed_dns_resolver_config.typed_config."
            "resolvers[0].socket_address.address: \"x\" is not an IP address");
}

Test(dns_config, is_dns)
{
    Cluster *c = parse_cluster("name: s\ntype: STATIC\n");
    cr_assert(!rm_dns_cluster_is_dns(c));
    struct rm_error err = {{0}};
    struct rm_dns_cluster_cfg out;
    cr_assert_eq(rm_dns_cluster_cfg_from_cluster(c, "clusters[0]", &out, &err), RM_ERR);
    protobuf_c_message_free_unpacked(&c->base, NULL);
    c = parse_cluster("name: s\ntype: EDS\n");
    cr_assert(!rm_dns_cluster_is_dns(c));
    protobuf_c_message_free_unpacked(&c->base, NULL);
    c = parse_cluster("name: s\ncluster_type: {name: envoy.clusters.aggregate}\n");
    cr_assert(!rm_dns_cluster_is_dns(c));
    protobuf_c_message_free_unpacked(&c->base, NULL);
    cr_assert_str_eq(rm_dns_family_name(RM_DNS_V4_PREFERRED), "V4_PREFERRED");
}

/* ---- refresh arithmetic -------------------------------------------------------------------- */

Test(dns_refresh, success_ttl_and_jitter)
{
    struct rm_dns_cluster_cfg c = {.refresh_rate_ms = 5000};
    cr_assert_eq(rm_dns_next_refresh_ms(&c, 0, 30, 12345), 5000); /* TTL not respected */
    c.respect_dns_ttl = true;
    cr_assert_eq(rm_dns_next_refresh_ms(&c, 0, 30, 12345), 30000);
    cr_assert_eq(rm_dns_next_refresh_ms(&c, 0, 0, 12345), 5000); /* TTL 0: refresh rate */
    cr_assert_eq(rm_dns_next_refresh_ms(&c, 0, UINT32_MAX, 0), (uint64_t)UINT32_MAX * 1000u);
    c.jitter_ms = 1000;
    cr_assert_eq(rm_dns_next_refresh_ms(&c, 0, 30, 0), 30000);
    cr_assert_eq(rm_dns_next_refresh_ms(&c, 0, 30, 999), 30999);
    cr_assert_eq(rm_dns_next_refresh_ms(&c, 0, 30, 1000), 30000);
    for (uint64_t rnd = 1; rnd < (1ull << 63); rnd = rnd * 7 + 3) {
        uint64_t ms = rm_dns_next_refresh_ms(&c, 0, 0, rnd);
        cr_assert(ms >= 5000 && ms < 6000, "%llu", (unsigned long long)ms);
    }
    cr_assert_lt(rm_dns_next_refresh_ms(&c, 0, 0, UINT64_MAX), 6000);
}

Test(dns_refresh, failure_backoff)
{
    struct rm_dns_cluster_cfg c = {.refresh_rate_ms = 5000, .jitter_ms = 777};
    /* no dns_failure_refresh_rate: the refresh rate, no jitter */
    cr_assert_eq(rm_dns_next_refresh_ms(&c, 1, 0, 123), 5000);
    cr_assert_eq(rm_dns_next_refresh_ms(&c, 9, 0, 123), 5000);
    c.failure_base_ms = 1000;
    c.failure_max_ms = 10000;
    /* intervals 1000, 2000, 4000, 8000, 10000, 10000...; result = rnd % interval */
    const uint64_t iv[] = {1000, 2000, 4000, 8000, 10000, 10000, 10000};
    for (uint32_t n = 1; n <= 7; n++) {
        cr_assert_eq(rm_dns_next_refresh_ms(&c, n, 0, iv[n - 1] - 1), iv[n - 1] - 1, "n=%u", n);
        cr_assert_eq(rm_dns_next_refresh_ms(&c, n, 0, iv[n - 1]), 0, "n=%u", n);
        cr_assert_eq(rm_dns_next_refresh_ms(&c, n, 0, iv[n - 1] + 5), 5, "n=%u", n);
    }
    cr_assert_lt(rm_dns_next_refresh_ms(&c, UINT32_MAX, 0, UINT64_MAX), 10000);
    for (uint64_t rnd = 1; rnd < (1ull << 63); rnd = rnd * 5 + 1)
        cr_assert_lt(rm_dns_next_refresh_ms(&c, 3, 30, rnd), 4000);
    c.failure_base_ms = 3000; /* 3000, 6000, 10000 (doubling would pass max) */
    cr_assert_eq(rm_dns_next_refresh_ms(&c, 2, 0, 5999), 5999);
    cr_assert_eq(rm_dns_next_refresh_ms(&c, 3, 0, 9999), 9999);
    cr_assert_eq(rm_dns_next_refresh_ms(&c, 3, 0, 10000), 0);
    c.failure_base_ms = c.failure_max_ms = 4000; /* base == max */
    cr_assert_eq(rm_dns_next_refresh_ms(&c, 5, 0, 3999), 3999);
}

/* ---- resolution against the canned server --------------------------------------------------- */

#define MAX_ADDRS 512

struct result {
    int calls;
    enum rm_dns_status status;
    int ares_status;
    char error[128];
    size_t n;
    char ip[MAX_ADDRS][48];
    uint32_t ttl[MAX_ADDRS];
    uint32_t min_ttl;
};

static struct {
    struct rm_loop *loop;
    struct rm_tdns dns;
    struct rm_dns_resolver *r;
    struct rm_timer guard;
    int answers, want;
    bool timed_out;
    char resolv_conf[64];
} T;

static void setup(void)
{
    memset(&T, 0, sizeof(T));
    T.loop = rm_loop_new();
    cr_assert_not_null(T.loop);
    rm_tdns_start(&T.dns, T.loop, 0);
    /* an empty resolv.conf: no search domains or options from the host */
    snprintf(T.resolv_conf, sizeof(T.resolv_conf), "/tmp/rm_dns_resolv_XXXXXX");
    int fd = mkstemp(T.resolv_conf);
    cr_assert_geq(fd, 0);
    close(fd);
}

static void teardown(void)
{
    rm_dns_resolver_free(T.r);
    rm_tdns_stop(&T.dns);
    rm_timer_stop(T.loop, &T.guard);
    rm_loop_run_pending(T.loop);
    rm_loop_free(T.loop);
    unlink(T.resolv_conf);
}

TestSuite(dns_resolver, .init = setup, .fini = teardown, .timeout = 30);

static struct rm_dns_config test_cfg(void)
{
    struct rm_dns_config c;
    rm_dns_config_init(&c);
    struct sockaddr_in *sa = (struct sockaddr_in *)&c.resolvers[0];
    sa->sin_family = AF_INET;
    sa->sin_port = htons(T.dns.port);
    sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c.n_resolvers = 1;
    c.query_timeout_ms = 300;
    c.query_tries = 2;
    snprintf(c.resolv_conf, sizeof(c.resolv_conf), "%s", T.resolv_conf);
    return c;
}

static void start_resolver(const struct rm_dns_config *c)
{
    struct rm_error err = {{0}};
    T.r = rm_dns_resolver_new(T.loop, c, &err);
    cr_assert_not_null(T.r, "%s", err.msg);
}

static void on_answer(void *ctx, const struct rm_dns_answer *a)
{
    struct result *res = ctx;
    res->calls++;
    res->status = a->status;
    res->ares_status = a->ares_status;
    snprintf(res->error, sizeof(res->error), "%s", a->error ? a->error : "");
    res->n = a->n;
    res->min_ttl = a->min_ttl_s;
    for (size_t i = 0; i < a->n && i < MAX_ADDRS; i++) {
        ip_of(&a->addrs[i].sa, res->ip[i], sizeof(res->ip[i]));
        res->ttl[i] = a->addrs[i].ttl_s;
        cr_assert_eq(port_of(&a->addrs[i].sa), 0);
    }
    if (++T.answers >= T.want) rm_loop_stop(T.loop);
}

static void on_guard(struct rm_timer *t)
{
    T.timed_out = true;
    rm_loop_stop(T.loop);
}

/* Run the loop until <n> answers in all (since the test began) or <ms> pass. */
static void wait_answers(int n, uint64_t ms)
{
    T.want = n;
    T.timed_out = false;
    if (T.answers < n) {
        rm_timer_start(T.loop, &T.guard, ms, on_guard);
        rm_loop_run(T.loop);
        rm_timer_stop(T.loop, &T.guard);
    }
    cr_assert_geq(T.answers, n, "only %d of %d answers after %llu ms", T.answers, n,
                  (unsigned long long)ms);
}

/* Run the loop for <ms> whatever happens. */
static void run_for(uint64_t ms)
{
    T.want = 1 << 30;
    rm_timer_start(T.loop, &T.guard, ms, on_guard);
    rm_loop_run(T.loop);
}

static void resolve(const char *name, enum rm_dns_family fam, struct result *res)
{
    cr_assert_not_null(rm_dns_resolve(T.r, name, fam, on_answer, res));
}

Test(dns_resolver, multiple_a_records_with_ttls_in_server_order)
{
    struct rm_dns_config c = test_cfg();
    start_resolver(&c);
    struct result res = {0};
    resolve("multi.test", RM_DNS_V4_ONLY, &res);
    wait_answers(1, 5000);
    cr_assert_eq(res.calls, 1);
    cr_assert_eq(res.status, RM_DNS_OK);
    cr_assert_eq(res.ares_status, ARES_SUCCESS);
    cr_assert_str_eq(res.error, "");
    cr_assert_eq(res.n, 3);
    cr_assert_str_eq(res.ip[0], "10.0.0.1");
    cr_assert_str_eq(res.ip[1], "10.0.0.2");
    cr_assert_str_eq(res.ip[2], "10.0.0.3");
    cr_assert_eq(res.ttl[0], 30);
    cr_assert_eq(res.ttl[1], 60);
    cr_assert_eq(res.ttl[2], 45);
    cr_assert_eq(res.min_ttl, 30);
    cr_assert_eq(rm_tdns_count(&T.dns, "multi.test", 1), 1);
    cr_assert_eq(rm_tdns_count(&T.dns, "multi.test", 28), 0);
}

Test(dns_resolver, aaaa_and_families)
{
    struct rm_dns_config c = test_cfg();
    start_resolver(&c);
    struct result v6 = {0}, autov4 = {0}, pref = {0}, all = {0}, v6none = {0};
    resolve("v6.test", RM_DNS_V6_ONLY, &v6);
    resolve("multi.test", RM_DNS_AUTO, &autov4);      /* AAAA: no data, then A */
    resolve("both.test", RM_DNS_V4_PREFERRED, &pref); /* A found: no AAAA asked */
    resolve("both.test", RM_DNS_ALL, &all);
    resolve("multi.test", RM_DNS_V6_ONLY, &v6none);
    wait_answers(5, 5000);
    cr_assert_eq(v6.n, 2);
    cr_assert_str_eq(v6.ip[0], "fd00::1");
    cr_assert_str_eq(v6.ip[1], "fd00::2");
    cr_assert_eq(v6.min_ttl, 20);
    cr_assert_eq(autov4.status, RM_DNS_OK);
    cr_assert_eq(autov4.n, 3);
    cr_assert_eq(rm_tdns_count(&T.dns, "multi.test", 28), 2); /* AUTO's and V6_ONLY's */
    cr_assert_eq(pref.n, 1);
    cr_assert_str_eq(pref.ip[0], "10.0.1.1");
    cr_assert_eq(all.n, 2);
    cr_assert_eq(all.min_ttl, 50);
    bool v4 = !strcmp(all.ip[0], "10.0.1.1") || !strcmp(all.ip[1], "10.0.1.1");
    bool v6b = !strcmp(all.ip[0], "fd00::11") || !strcmp(all.ip[1], "fd00::11");
    cr_assert(v4 && v6b, "%s %s", all.ip[0], all.ip[1]);
    cr_assert_eq(rm_tdns_count(&T.dns, "both.test", 28), 1); /* only ALL asked AAAA */
    /* no record of the family: success with no address */
    cr_assert_eq(v6none.status, RM_DNS_OK);
    cr_assert_eq(v6none.n, 0);
    cr_assert_eq(v6none.ares_status, ARES_ENODATA);
    cr_assert_eq(v6none.min_ttl, 0);
}

Test(dns_resolver, auto_prefers_v6)
{
    struct rm_dns_config c = test_cfg();
    start_resolver(&c);
    struct result res = {0};
    resolve("both.test", RM_DNS_AUTO, &res);
    wait_answers(1, 5000);
    cr_assert_eq(res.n, 1);
    cr_assert_str_eq(res.ip[0], "fd00::11");
    cr_assert_eq(rm_tdns_count(&T.dns, "both.test", 1), 0);
}

Test(dns_resolver, cname_ttl_caps_address_ttl)
{
    struct rm_dns_config c = test_cfg();
    start_resolver(&c);
    struct result res = {0};
    resolve("cname.test", RM_DNS_V4_ONLY, &res);
    wait_answers(1, 5000);
    cr_assert_eq(res.status, RM_DNS_OK);
    cr_assert_eq(res.n, 1);
    cr_assert_str_eq(res.ip[0], "10.2.2.2");
    cr_assert_eq(res.ttl[0], 5);
}

Test(dns_resolver, nxdomain_and_servfail)
{
    struct rm_dns_config c = test_cfg();
    start_resolver(&c);
    struct result nx = {0}, sf = {0};
    resolve("nx.test", RM_DNS_AUTO, &nx);
    resolve("servfail.test", RM_DNS_V4_ONLY, &sf);
    wait_answers(2, 5000);
    cr_assert_eq(nx.status, RM_DNS_OK, "NXDOMAIN is an answer with no address (as Envoy)");
    cr_assert_eq(nx.n, 0);
    cr_assert_eq(nx.ares_status, ARES_ENOTFOUND);
    cr_assert_str_eq(nx.error, "Domain name not found");
    cr_assert_eq(sf.status, RM_DNS_FAILED);
    cr_assert_eq(sf.n, 0);
    cr_assert_neq(sf.ares_status, ARES_SUCCESS);
    cr_assert_neq(sf.error[0], '\0');
}

Test(dns_resolver, malformed_answers_fail_cleanly)
{
    struct rm_dns_config c = test_cfg();
    c.query_timeout_ms = 200;
    c.query_tries = 1;
    start_resolver(&c);
    struct result bad = {0}, shrt = {0}, big = {0}, large = {0};
    resolve("bad.test", RM_DNS_V4_ONLY, &bad);
    resolve("short.test", RM_DNS_V4_ONLY, &shrt);
    resolve("big.test", RM_DNS_V4_ONLY, &big);
    resolve("large.test", RM_DNS_V4_ONLY, &large);
    wait_answers(4, 5000);
    cr_assert_eq(bad.status, RM_DNS_FAILED, "%s", bad.error);
    cr_assert_eq(bad.n, 0);
    cr_assert_eq(shrt.status, RM_DNS_FAILED); /* ignored: the query times out */
    cr_assert_eq(shrt.ares_status, ARES_ETIMEOUT);
    cr_assert_eq(big.status, RM_DNS_FAILED, "65535 answers announced, 400 present: %s (%zu)",
                 big.error, big.n);
    cr_assert_eq(big.n, 0);
    /* a well-formed 6 kB UDP answer (no EDNS0 asked) is taken whole */
    cr_assert_eq(large.status, RM_DNS_OK, "%s", large.error);
    cr_assert_eq(large.n, 400);
    /* the resolver still works afterwards */
    struct result ok = {0};
    resolve("multi.test", RM_DNS_V4_ONLY, &ok);
    wait_answers(5, 5000);
    cr_assert_eq(ok.n, 3);
}

Test(dns_resolver, truncated_udp_answer_retries_over_tcp)
{
    struct rm_dns_config c = test_cfg();
    start_resolver(&c);
    struct result res = {0};
    resolve("tc.test", RM_DNS_V4_ONLY, &res);
    wait_answers(1, 5000);
    cr_assert_eq(res.status, RM_DNS_OK, "%s", res.error);
    cr_assert_eq(res.n, 100);
    cr_assert_str_eq(res.ip[0], "10.1.0.1");
    cr_assert_str_eq(res.ip[99], "10.1.0.100");
    cr_assert_eq(res.min_ttl, 7);
    cr_assert_geq(T.dns.n_udp, 1);
    cr_assert_geq(T.dns.n_tcp, 1);
}

Test(dns_resolver, use_tcp_for_dns_lookups)
{
    struct rm_dns_config c = test_cfg();
    c.use_tcp = true;
    start_resolver(&c);
    struct result a = {0}, b = {0};
    resolve("multi.test", RM_DNS_V4_ONLY, &a);
    resolve("both.test", RM_DNS_ALL, &b);
    wait_answers(2, 5000);
    cr_assert_eq(a.n, 3);
    cr_assert_eq(b.n, 2);
    cr_assert_eq(T.dns.n_udp, 0);
    cr_assert_eq(T.dns.n_tcp, 3);
}

Test(dns_resolver, wrong_id_and_empty_datagram_are_ignored)
{
    struct rm_dns_config c = test_cfg();
    start_resolver(&c);
    struct result sp = {0}, z = {0};
    resolve("spoof.test", RM_DNS_V4_ONLY, &sp);
    resolve("zero.test", RM_DNS_V4_ONLY, &z);
    wait_answers(2, 5000);
    cr_assert_eq(sp.n, 1);
    cr_assert_str_eq(sp.ip[0], "10.9.9.9");
    cr_assert_eq(z.status, RM_DNS_OK, "%s", z.error);
    cr_assert_eq(z.n, 1);
    cr_assert_str_eq(z.ip[0], "10.8.8.8");
}

Test(dns_resolver, silent_server_times_out)
{
    struct rm_dns_config c = test_cfg();
    c.query_timeout_ms = 100;
    c.query_tries = 2; /* 100 ms, then 200 ms */
    start_resolver(&c);
    struct result res = {0};
    uint64_t t0 = rm_loop_update_time(T.loop);
    resolve("silent.test", RM_DNS_V4_ONLY, &res);
    wait_answers(1, 5000);
    uint64_t took = rm_loop_update_time(T.loop) - t0;
    cr_assert_eq(res.status, RM_DNS_FAILED);
    cr_assert_eq(res.ares_status, ARES_ETIMEOUT);
    cr_assert_str_eq(res.error, "Timeout while contacting DNS servers");
    cr_assert_geq(took, 250, "took %llu ms", (unsigned long long)took);
    cr_assert_lt(took, 2000, "took %llu ms", (unsigned long long)took);
    cr_assert_eq(rm_tdns_count(&T.dns, "silent.test", 1), 2);
}

Test(dns_resolver, server_down_is_an_error_and_recovers)
{
    /* a port nobody listens on: ICMP port unreachable -> ECONNREFUSED */
    struct rm_dns_config c = test_cfg();
    uint16_t live = T.dns.port;
    rm_tdns_stop(&T.dns);
    c.query_timeout_ms = 200;
    c.query_tries = 2;
    start_resolver(&c);
    struct result res = {0};
    resolve("multi.test", RM_DNS_V4_ONLY, &res);
    wait_answers(1, 5000);
    cr_assert_eq(res.status, RM_DNS_FAILED);
    cr_assert_eq(res.n, 0);
    cr_assert(res.ares_status == ARES_ECONNREFUSED || res.ares_status == ARES_ETIMEOUT, "%s",
              res.error);
    /* the server comes back on the same port: the next query (on a re-created channel after
     * ECONNREFUSED) succeeds */
    rm_tdns_start(&T.dns, T.loop, live);
    struct result again = {0};
    resolve("multi.test", RM_DNS_V4_ONLY, &again);
    wait_answers(2, 5000);
    cr_assert_eq(again.status, RM_DNS_OK, "%s", again.error);
    cr_assert_eq(again.n, 3);
}

Test(dns_resolver, callbacks_never_run_inside_resolve)
{
    struct rm_dns_config c = test_cfg();
    start_resolver(&c);
    struct result lit = {0}, lit6 = {0}, bad = {0}, empty = {0};
    resolve("10.1.2.3", RM_DNS_AUTO, &lit);
    resolve("::1", RM_DNS_V4_ONLY, &lit6);
    char longname[300];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    resolve(longname, RM_DNS_V4_ONLY, &bad);
    resolve("", RM_DNS_V4_ONLY, &empty);
    cr_assert_eq(T.answers, 0);
    wait_answers(4, 2000);
    cr_assert_eq(lit.status, RM_DNS_OK);
    cr_assert_eq(lit.n, 1);
    cr_assert_str_eq(lit.ip[0], "10.1.2.3");
    cr_assert_eq(lit.ttl[0], 0);
    cr_assert_eq(lit6.status, RM_DNS_FAILED);
    cr_assert_eq(lit6.ares_status, ARES_EBADFAMILY);
    cr_assert_eq(bad.status, RM_DNS_FAILED);
    cr_assert_eq(bad.ares_status, ARES_EBADNAME);
    cr_assert_eq(empty.status, RM_DNS_FAILED);
    cr_assert_eq(T.dns.n_udp, 0, "no query for literals or bad names");
}

Test(dns_resolver, cancel_before_answer)
{
    struct rm_dns_config c = test_cfg();
    c.query_timeout_ms = 100;
    c.query_tries = 1;
    start_resolver(&c);
    struct result slow = {0}, silent = {0}, lit = {0}, other = {0};
    rm_dns_cancel(rm_dns_resolve(T.r, "slow.test", RM_DNS_V4_ONLY, on_answer, &slow));
    rm_dns_cancel(rm_dns_resolve(T.r, "silent.test", RM_DNS_V4_ONLY, on_answer, &silent));
    rm_dns_cancel(rm_dns_resolve(T.r, "10.0.0.9", RM_DNS_V4_ONLY, on_answer, &lit));
    rm_dns_cancel(NULL);
    resolve("multi.test", RM_DNS_V4_ONLY, &other);
    run_for(400); /* the slow answer (80 ms) and the timeout (100 ms) both happen */
    cr_assert_eq(slow.calls + silent.calls + lit.calls, 0);
    cr_assert_eq(other.calls, 1);
    cr_assert_eq(rm_tdns_count(&T.dns, "slow.test", 1), 1);
}

static struct rm_dns_query *victim;
static struct result victim_res, killer_res;

static void on_killer(void *ctx, const struct rm_dns_answer *a)
{
    rm_dns_cancel(victim); /* cancel another query from inside a callback */
    struct result *again = ctx;
    again->calls++;
    /* and start a new one from inside the callback */
    cr_assert_not_null(rm_dns_resolve(T.r, "both.test", RM_DNS_V4_ONLY, on_answer, &killer_res));
}

Test(dns_resolver, cancel_and_resolve_from_a_callback)
{
    struct rm_dns_config c = test_cfg();
    start_resolver(&c);
    struct result k = {0};
    memset(&victim_res, 0, sizeof(victim_res));
    memset(&killer_res, 0, sizeof(killer_res));
    victim = rm_dns_resolve(T.r, "slow.test", RM_DNS_V4_ONLY, on_answer, &victim_res);
    cr_assert_not_null(rm_dns_resolve(T.r, "multi.test", RM_DNS_V4_ONLY, on_killer, &k));
    wait_answers(1, 5000); /* killer_res */
    run_for(200);
    cr_assert_eq(k.calls, 1);
    cr_assert_eq(killer_res.calls, 1);
    cr_assert_eq(killer_res.n, 1);
    cr_assert_eq(victim_res.calls, 0);
}

Test(dns_resolver, free_with_pending_queries_never_calls_back)
{
    struct rm_dns_config c = test_cfg();
    start_resolver(&c);
    struct result a = {0}, b = {0}, d = {0};
    resolve("slow.test", RM_DNS_V4_ONLY, &a); /* answered in 80 ms */
    resolve("both.test", RM_DNS_ALL, &b);
    run_for(20);
    resolve("10.0.0.1", RM_DNS_AUTO, &d); /* its delivery is queued on the loop */
    rm_dns_resolver_free(T.r);
    T.r = NULL;
    run_for(200);
    cr_assert_eq(a.calls + d.calls, 0);
    cr_assert_leq(b.calls, 1);
}

Test(dns_resolver, many_concurrent_queries)
{
    struct rm_dns_config c = test_cfg();
    start_resolver(&c);
    static struct result res[60];
    memset(res, 0, sizeof(res));
    const char *names[] = {"multi.test", "v6.test", "both.test", "nx.test", "cname.test"};
    for (int i = 0; i < 60; i++)
        resolve(names[i % 5], RM_DNS_AUTO, &res[i]);
    wait_answers(60, 10000);
    for (int i = 0; i < 60; i++) {
        cr_assert_eq(res[i].calls, 1);
        cr_assert_eq(res[i].status, RM_DNS_OK, "%s: %s", names[i % 5], res[i].error);
    }
    cr_assert_eq(res[0].n, 3);
    cr_assert_eq(res[1].n, 2);
    cr_assert_eq(res[3].n, 0);
}

Test(dns_resolver, servers_and_fallback)
{
    char buf[256];
    struct rm_dns_config c = test_cfg();
    start_resolver(&c);
    rm_dns_resolver_servers(T.r, buf, sizeof(buf));
    char want[64];
    snprintf(want, sizeof(want), "127.0.0.1:%u", T.dns.port);
    cr_assert_str_eq(buf, want);
    rm_dns_resolver_free(T.r);
    /* fallback with a resolv.conf that has no nameserver: ours are used */
    c.use_resolvers_as_fallback = true;
    start_resolver(&c);
    rm_dns_resolver_servers(T.r, buf, sizeof(buf));
    cr_assert_str_eq(buf, want);
    rm_dns_resolver_free(T.r);
    /* fallback when the system has a nameserver: the system's */
    FILE *f = fopen(T.resolv_conf, "w");
    fputs("nameserver 192.0.2.53\nnameserver 2001:db8::53\n", f);
    fclose(f);
    start_resolver(&c);
    rm_dns_resolver_servers(T.r, buf, sizeof(buf));
    cr_assert_str_eq(buf, "192.0.2.53:53,[2001:db8::53]:53");
    rm_dns_resolver_free(T.r);
    /* no resolvers configured: the system's */
    c.n_resolvers = 0;
    c.use_resolvers_as_fallback = false;
    start_resolver(&c);
    cr_assert_eq(rm_dns_resolver_servers(T.r, buf, 8), strlen("192.0.2.53:53,[2001:db8::53]:53"));
    cr_assert_str_eq(buf, "192.0.2");
}

Test(dns_resolver, default_config_starts_without_blocking)
{
    start_resolver(NULL); /* /etc/resolv.conf, nothing asked yet */
    char buf[256];
    rm_dns_resolver_servers(T.r, buf, sizeof(buf));
    cr_assert_neq(buf[0], '\0');
}

Test(dns_resolver, options_edns_rotate_filter)
{
    struct rm_dns_config c = test_cfg();
    c.edns0_max_payload = 1232;
    c.rotate_nameservers = true;
    c.no_default_search_domain = true;
    c.filter_unroutable_families = true; /* loopback-only families would be dropped */
    start_resolver(&c);
    struct result res = {0}, nx = {0};
    resolve("multi.test", RM_DNS_V4_ONLY, &res);
    resolve("nx.test", RM_DNS_V4_ONLY, &nx);
    wait_answers(2, 5000);
    /* the answer is kept or filtered depending on this host's interfaces, never an error */
    cr_assert(res.status == RM_DNS_OK || res.ares_status == ARES_EBADFAMILY, "%s", res.error);
    cr_assert_eq(nx.n, 0);
}
