/* proxy/upstream/dns_cluster: STRICT_DNS / LOGICAL_DNS clusters resolved through c-ares against
 * the canned server of dns_responder.h: membership, publication, stats, failures keeping the
 * last good hosts, initialization, and the config errors of DNS clusters. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "proxy/config/pbjson.h"
#include "proxy/core/loop.h"
#include "proxy/upstream/dns_cluster.h"
#include "tests/unit/upstream/dns_responder.h"

typedef Envoy__Config__Cluster__V3__Cluster Cluster;

#define MAX_CLUSTERS 4

static struct {
    struct rm_loop *loop;
    struct rm_tdns dns;
    struct rm_timer guard;
    char resolv_conf[64];
    Cluster *pb[MAX_CLUSTERS];
    struct rm_cluster *c[MAX_CLUSTERS];
    int n;
    struct rm_dns_clusters *m;
    int publishes, inits;
    struct rm_cluster *last_published;
    size_t last_n;
} T;

static void setup(void)
{
    memset(&T, 0, sizeof(T));
    T.loop = rm_loop_new();
    rm_tdns_start(&T.dns, T.loop, 0);
    snprintf(T.resolv_conf, sizeof(T.resolv_conf), "/tmp/rm_dnsc_resolv_XXXXXX");
    int fd = mkstemp(T.resolv_conf);
    cr_assert_geq(fd, 0);
    close(fd);
}

static void teardown(void)
{
    rm_dns_clusters_free(T.m);
    rm_tdns_stop(&T.dns);
    rm_timer_stop(T.loop, &T.guard);
    rm_loop_run_pending(T.loop);
    for (int i = 0; i < T.n; i++) {
        rm_cluster_unref(T.c[i]);
        protobuf_c_message_free_unpacked(&T.pb[i]->base, NULL);
    }
    rm_loop_free(T.loop);
    unlink(T.resolv_conf);
}

TestSuite(dns_cluster, .init = setup, .fini = teardown, .timeout = 30);

static Cluster *parse(const char *yaml)
{
    struct rm_error err = {{0}};
    ProtobufCMessage *m = NULL;
    int rc = rm_pbjson_parse_string(yaml, strlen(yaml), "t.yaml",
                                    &envoy__config__cluster__v3__cluster__descriptor, &m, &err);
    cr_assert_eq(rc, RM_OK, "parse: %s", err.msg);
    return (Cluster *)m;
}

/* A DNS cluster on the canned server: <extra> goes after the name, <endpoints> is the
 * list of "name/port[/weight]" lb_endpoints. */
static struct rm_cluster *add_cluster(const char *name, const char *extra, const char *eps)
{
    char yaml[4096];
    int off = snprintf(yaml, sizeof(yaml),
                       "name: %s\n%s\n"
                       "dns_resolvers: [{socket_address: {address: 127.0.0.1, port_value: %u}}]\n"
                       "load_assignment:\n  cluster_name: %s\n  endpoints:\n  - lb_endpoints:\n",
                       name, extra, T.dns.port, name);
    char list[1024];
    snprintf(list, sizeof(list), "%s", eps);
    for (char *save = NULL, *e = strtok_r(list, " ", &save); e; e = strtok_r(NULL, " ", &save)) {
        char host[128];
        unsigned port = 0, weight = 1;
        cr_assert_geq(sscanf(e, "%127[^/]/%u/%u", host, &port, &weight), 2);
        off += snprintf(yaml + off, sizeof(yaml) - off,
                        "    - endpoint: {address: {socket_address: {address: \"%s\", "
                        "port_value: %u}}}\n      load_balancing_weight: %u\n",
                        host, port, weight);
    }
    struct rm_error err = {{0}};
    T.pb[T.n] = parse(yaml);
    struct rm_cluster *c = rm_cluster_new(T.pb[T.n], NULL, NULL, "clusters[0]", &err);
    cr_assert_not_null(c, "%s", err.msg);
    cr_assert(rm_cluster_is_dns(c));
    snprintf(c->dns->resolver.resolv_conf, sizeof(c->dns->resolver.resolv_conf), "%s",
             T.resolv_conf);
    c->dns->resolver.query_timeout_ms = 300;
    c->dns->resolver.query_tries = 1;
    rm_cluster_update_membership(c);
    T.c[T.n++] = c;
    return c;
}

static void cluster_err(const char *yaml, const char *want)
{
    struct rm_error err = {{0}};
    Cluster *pb = parse(yaml);
    struct rm_cluster *c = rm_cluster_new(pb, NULL, NULL, "static_resources.clusters[0]", &err);
    protobuf_c_message_free_unpacked(&pb->base, NULL);
    cr_assert_null(c, "expected: %s", want);
    cr_assert(strstr(err.msg, want), "got \"%s\", want \"%s\"", err.msg, want);
}

static void on_publish(void *ctx, struct rm_cluster *c, struct rm_host_set *hs)
{
    T.publishes++;
    T.last_published = c;
    T.last_n = hs->n;
    cr_assert_eq(hs, c->hs, "the cluster's set is the one published");
}

static void on_init(void *ctx)
{
    T.inits++;
    rm_loop_stop(T.loop);
}

static void start(void)
{
    struct rm_error err = {{0}};
    T.m = rm_dns_clusters_new(T.loop, T.c, (size_t)T.n, NULL, on_publish, on_init, NULL, &err);
    cr_assert_not_null(T.m, "%s", err.msg);
}

static void on_guard(struct rm_timer *t)
{
    rm_loop_stop(T.loop);
}

static void run_for(uint64_t ms)
{
    rm_timer_start(T.loop, &T.guard, ms, on_guard);
    rm_loop_run(T.loop);
    rm_timer_stop(T.loop, &T.guard);
}

static void wait_init(void)
{
    if (!rm_dns_clusters_initialized(T.m)) run_for(5000);
    cr_assert(rm_dns_clusters_initialized(T.m), "not initialized");
}

static int64_t stat(struct rm_cluster *c, unsigned idx)
{
    return rm_stat_value(c->stats, idx);
}

static const char *addrs(const struct rm_cluster *c)
{
    static char buf[512];
    buf[0] = 0;
    for (size_t i = 0; i < c->hs->n; i++) {
        strcat(buf, i ? "," : "");
        strcat(buf, c->hs->hosts[i]->addr_str);
    }
    return buf;
}

Test(dns_cluster, strict_dns_union_of_endpoints_and_no_rebuild)
{
    struct rm_cluster *c = add_cluster("dnsc_strict",
                                       "type: STRICT_DNS\ndns_lookup_family: V4_ONLY\n"
                                       "dns_refresh_rate: 0.05s",
                                       "multi.test/80/2 both.test/81 multi.test/80");
    start();
    cr_assert_eq(c->hs->n, 0, "no host before the first answer (nothing blocks)");
    cr_assert_eq(T.publishes, 0);
    wait_init();
    cr_assert_eq(T.inits, 1);
    cr_assert_str_eq(addrs(c), "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80,10.0.1.1:81");
    cr_assert_eq(c->hs->hosts[0]->weight, 2);
    cr_assert_eq(c->hs->hosts[3]->weight, 1);
    cr_assert_str_eq(c->hs->hosts[0]->hostname, "multi.test");
    cr_assert_str_eq(c->hs->hosts[3]->hostname, "both.test");
    cr_assert_eq(stat(c, RM_CS_MEMBERSHIP_TOTAL), 4);
    cr_assert_eq(stat(c, RM_CS_MEMBERSHIP_HEALTHY), 4);
    int pubs = T.publishes;
    cr_assert_geq(pubs, 1);
    struct rm_host *h0 = c->hs->hosts[0];
    run_for(400); /* refreshes: the same answers */
    cr_assert_eq(T.publishes, pubs, "the same membership is not published again");
    cr_assert_eq(c->hs->hosts[0], h0);
    cr_assert_gt(stat(c, RM_CS_UPDATE_NO_REBUILD), 3);
    cr_assert_gt(stat(c, RM_CS_UPDATE_ATTEMPT), 6);
    cr_assert_eq(stat(c, RM_CS_UPDATE_FAILURE), 0);
    cr_assert_geq(stat(c, RM_CS_UPDATE_ATTEMPT),
                  stat(c, RM_CS_UPDATE_SUCCESS) + stat(c, RM_CS_UPDATE_FAILURE));
    cr_assert_leq(stat(c, RM_CS_UPDATE_ATTEMPT),
                  stat(c, RM_CS_UPDATE_SUCCESS) + stat(c, RM_CS_UPDATE_FAILURE) + 3);
}

Test(dns_cluster, failures_keep_the_last_good_hosts)
{
    struct rm_cluster *c = add_cluster("dnsc_fail",
                                       "type: STRICT_DNS\ndns_lookup_family: V4_ONLY\n"
                                       "dns_refresh_rate: 0.05s\n"
                                       "dns_failure_refresh_rate: {base_interval: 0.02s, "
                                       "max_interval: 0.1s}",
                                       "multi.test/80");
    start();
    wait_init();
    cr_assert_eq(c->hs->n, 3);
    struct rm_host_set *before = c->hs;
    int pubs = T.publishes;
    rm_tdns_stop(&T.dns); /* the DNS server goes away */
    run_for(800);
    cr_assert_gt(stat(c, RM_CS_UPDATE_FAILURE), 0);
    cr_assert_eq(c->hs, before, "failures keep the last good hosts");
    cr_assert_eq(T.publishes, pubs);
    cr_assert_eq(stat(c, RM_CS_MEMBERSHIP_TOTAL), 3);
}

Test(dns_cluster, empty_and_failed_answers_leave_the_cluster_empty_but_initialized)
{
    struct rm_cluster *nx = add_cluster("dnsc_nx", "type: STRICT_DNS", "nx.test/80");
    struct rm_cluster *sf = add_cluster("dnsc_sf", "type: STRICT_DNS", "servfail.test/80");
    struct rm_cluster *bad = add_cluster("dnsc_bad", "type: STRICT_DNS\ndns_lookup_family: V4_ONLY",
                                         "bad.test/80 short.test/80 big.test/80");
    start();
    wait_init();
    cr_assert_eq(T.inits, 1);
    cr_assert_eq(nx->hs->n, 0);
    cr_assert_eq(sf->hs->n, 0);
    cr_assert_eq(bad->hs->n, 0, "malformed answers are dropped");
    cr_assert_eq(stat(nx, RM_CS_UPDATE_FAILURE), 1);
    cr_assert_eq(stat(sf, RM_CS_UPDATE_FAILURE), 1);
    cr_assert_geq(stat(bad, RM_CS_UPDATE_FAILURE), 3);
    cr_assert_eq(T.publishes, 0);
}

Test(dns_cluster, logical_dns_one_host_following_the_first_address)
{
    struct rm_cluster *c = add_cluster(
        "dnsc_logical", "type: LOGICAL_DNS\ndns_lookup_family: V4_ONLY", "multi.test/8080");
    start();
    wait_init();
    cr_assert_eq(c->hs->n, 1);
    cr_assert(c->hs->has_logical);
    cr_assert_str_eq(c->hs->logical->str, "10.0.0.1:8080");
    cr_assert_str_eq(c->hs->hosts[0]->hostname, "multi.test");
    cr_assert_eq(T.publishes, 1);
}

Test(dns_cluster, ip_literals_and_no_endpoint)
{
    struct rm_cluster *lit = add_cluster("dnsc_lit", "type: STRICT_DNS", "127.0.0.1/80 ::1/81");
    struct rm_cluster *none = add_cluster("dnsc_none", "type: STRICT_DNS", "");
    start();
    wait_init();
    cr_assert_str_eq(addrs(lit), "127.0.0.1:80,[::1]:81");
    cr_assert_eq(none->hs->n, 0);
    cr_assert_eq(T.dns.n_udp + T.dns.n_tcp, 0, "IP literals need no query");
}

Test(dns_cluster, nothing_to_wait_for)
{
    add_cluster("dnsc_none2", "type: STRICT_DNS", "");
    start();
    cr_assert(rm_dns_clusters_initialized(T.m));
    run_for(50);
    cr_assert_eq(T.inits, 0, "on_init is for clusters that waited");
}

Test(dns_cluster, config_errors_name_the_field)
{
    cluster_err("name: a\ntype: LOGICAL_DNS\nload_assignment:\n  cluster_name: a\n  endpoints:\n"
                "  - lb_endpoints:\n"
                "    - endpoint: {address: {socket_address: {address: a.test, port_value: 1}}}\n"
                "    - endpoint: {address: {socket_address: {address: b.test, port_value: 1}}}\n",
                "static_resources.clusters[0].load_assignment: a LOGICAL_DNS cluster needs "
                "exactly one locality with exactly one lb_endpoint (got 2");
    cluster_err("name: a\ntype: STRICT_DNS\nload_assignment:\n  cluster_name: a\n  endpoints:\n"
                "  - lb_endpoints:\n"
                "    - endpoint: {address: {socket_address: {address: a.test}}}\n",
                "static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0]."
                "endpoint.address.socket_address.port_value: required");
    cluster_err("name: a\ntype: STATIC\nload_assignment:\n  cluster_name: a\n  endpoints:\n"
                "  - lb_endpoints:\n"
                "    - endpoint: {address: {socket_address: {address: a.test, port_value: 1}}}\n",
                "static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0]."
                "endpoint.address.socket_address.address: \"a.test\" is not an IP address");
    cluster_err("name: a\ntype: STRICT_DNS\n"
                "dns_resolvers: [{socket_address: {address: dns.example, port_value: 53}}]\n",
                "static_resources.clusters[0].dns_resolvers[0].socket_address.address: "
                "\"dns.example\" is not an IP address");
    cluster_err("name: a\ntype: EDS\n",
                "static_resources.clusters[0].eds_cluster_config.eds_config: required");
    cluster_err("name: a\ntype: EDS\neds_cluster_config: {eds_config: {self: {}}}\n",
                "static_resources.clusters[0].eds_cluster_config.eds_config: only ads: {} or "
                "api_config_source");
    cluster_err("name: a\ntype: EDS\neds_cluster_config: {eds_config: {api_config_source: "
                "{api_type: REST}}}\n",
                "static_resources.clusters[0].eds_cluster_config.eds_config.api_config_source."
                "api_type: only GRPC and DELTA_GRPC");
}
