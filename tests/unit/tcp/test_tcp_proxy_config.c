/* The TCP proxy network filter's config (proxy/tcp/tcp_proxy_config.c) through the snapshot
 * builder: a listener whose filter is a TcpProxy gets rm_tcp_proxy_netfilter and its compiled
 * config; what remora does not implement is rejected with its field path; weighted_clusters
 * picks by weight. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"
#include "proxy/admin/stats.h"
#include "proxy/config/pbjson.h"
#include "proxy/config/snapshot.h"
#include "proxy/core/error.h"
#include "proxy/http/hcm.h"
#include "proxy/tcp/tcp_proxy.h"

static void fini(void)
{
    rm_stats_free_all();
}

TestSuite(tcp_proxy_config, .fini = fini);

#define PATH "static_resources.listeners[0].filter_chains[0].filters[0].typed_config"

/* A bootstrap with clusters a and b and one listener whose TcpProxy has the YAML fields
 * <fields> (indented by 10), built into a snapshot: the snapshot, or NULL with <err>. */
static struct rm_snapshot *build(const char *fields, struct rm_error *err)
{
    char yaml[4096];
    snprintf(yaml, sizeof(yaml),
             "static_resources:\n"
             "  clusters:\n"
             "  - name: a\n"
             "    connect_timeout: 1s\n"
             "    load_assignment: {cluster_name: a, endpoints: [{lb_endpoints: [{endpoint: "
             "{address: {socket_address: {address: 127.0.0.1, port_value: 1}}}}]}]}\n"
             "  - name: b\n"
             "    connect_timeout: 1s\n"
             "    load_assignment: {cluster_name: b, endpoints: [{lb_endpoints: [{endpoint: "
             "{address: {socket_address: {address: 127.0.0.1, port_value: 2}}}}]}]}\n"
             "  listeners:\n"
             "  - name: l\n"
             "    address: {socket_address: {address: 127.0.0.1, port_value: 10000}}\n"
             "    filter_chains:\n"
             "    - filters:\n"
             "      - name: envoy.filters.network.tcp_proxy\n"
             "        typed_config:\n"
             "          \"@type\": type.googleapis.com/"
             "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n"
             "%s",
             fields);
    ProtobufCMessage *m = NULL;
    int rc = rm_pbjson_parse_string(yaml, strlen(yaml), "t.yaml",
                                    &envoy__config__bootstrap__v3__bootstrap__descriptor, &m, err);
    if (rc != RM_OK) return NULL;
    return rm_snapshot_from_bootstrap((Envoy__Config__Bootstrap__V3__Bootstrap *)m, err);
}

static void expect_error(const char *fields, const char *want)
{
    struct rm_error err = {{0}};
    struct rm_snapshot *s = build(fields, &err);
    cr_assert_null(s, "expected: %s", want);
    cr_assert(strstr(err.msg, want), "got \"%s\", expected \"%s\"", err.msg, want);
}

Test(tcp_proxy_config, defaults)
{
    struct rm_error err = {{0}};
    struct rm_snapshot *s = build("          stat_prefix: db\n"
                                  "          cluster: a\n",
                                  &err);
    cr_assert_not_null(s, "%s", err.msg);
    const struct rm_listener_cfg *lc = s->listeners[0];
    cr_assert_eq(lc->netfilter, &rm_tcp_proxy_netfilter);
    const struct rm_tcp_proxy_cfg *t = lc->tcp;
    cr_assert_not_null(t);
    cr_assert_str_eq(t->stat_prefix, "db");
    cr_assert_eq(t->n_clusters, 1);
    cr_assert_str_eq(t->clusters[0].name, "a");
    cr_assert_eq(t->clusters[0].cluster, rm_snapshot_cluster(s, "a"));
    cr_assert_eq(t->idle_timeout_ms, 3600 * 1000); /* Envoy's default: 1 h */
    cr_assert_eq(t->max_connect_attempts, 1);
    cr_assert_eq(t->max_duration_ms, 0);
    char p[64];
    rm_stats_prefix(t->stats, p, sizeof(p));
    cr_assert_str_eq(p, "tcp.db.");
    rm_snapshot_unref(s);
}

Test(tcp_proxy_config, fields)
{
    struct rm_error err = {{0}};
    struct rm_snapshot *s = build("          stat_prefix: db\n"
                                  "          cluster: nowhere\n"
                                  "          idle_timeout: 0s\n"
                                  "          max_connect_attempts: 3\n"
                                  "          max_downstream_connection_duration: 2.5s\n",
                                  &err);
    cr_assert_not_null(s, "%s", err.msg);
    const struct rm_tcp_proxy_cfg *t = s->listeners[0]->tcp;
    cr_assert_null(t->clusters[0].cluster); /* unknown: no route per connection, as Envoy */
    cr_assert_eq(t->idle_timeout_ms, 0);
    cr_assert_eq(t->max_connect_attempts, 3);
    cr_assert_eq(t->max_duration_ms, 2500);
    rm_snapshot_unref(s);
}

Test(tcp_proxy_config, hcm_listener_keeps_its_filter)
{
    struct rm_error err = {{0}};
    const char *yaml =
        "static_resources:\n"
        "  listeners:\n"
        "  - address: {socket_address: {address: 127.0.0.1, port_value: 10000}}\n"
        "    filter_chains:\n"
        "    - filters:\n"
        "      - name: envoy.filters.network.http_connection_manager\n"
        "        typed_config:\n"
        "          \"@type\": type.googleapis.com/"
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n"
        "          stat_prefix: l\n"
        "          route_config: {virtual_hosts: [{name: v, domains: [\"*\"]}]}\n"
        "          http_filters:\n"
        "          - name: envoy.filters.http.router\n"
        "            typed_config: {\"@type\": type.googleapis.com/"
        "envoy.extensions.filters.http.router.v3.Router}\n";
    ProtobufCMessage *m = NULL;
    cr_assert_eq(rm_pbjson_parse_string(yaml, strlen(yaml), "t.yaml",
                                        &envoy__config__bootstrap__v3__bootstrap__descriptor, &m,
                                        &err),
                 RM_OK, "%s", err.msg);
    struct rm_snapshot *s =
        rm_snapshot_from_bootstrap((Envoy__Config__Bootstrap__V3__Bootstrap *)m, &err);
    cr_assert_not_null(s, "%s", err.msg);
    cr_assert_eq(s->listeners[0]->netfilter, &rm_hcm_netfilter);
    cr_assert_null(s->listeners[0]->tcp);
    rm_snapshot_unref(s);
}

Test(tcp_proxy_config, rejected_with_their_path)
{
    expect_error("          cluster: a\n", PATH ".stat_prefix: required");
    expect_error("          stat_prefix: db\n", PATH ": cluster or weighted_clusters is required");
    expect_error("          stat_prefix: db\n"
                 "          cluster: a\n"
                 "          tunneling_config: {hostname: h}\n",
                 PATH ".tunneling_config: not supported");
    expect_error("          stat_prefix: db\n"
                 "          cluster: a\n"
                 "          on_demand: {}\n",
                 PATH ".on_demand: not supported");
    expect_error("          stat_prefix: db\n"
                 "          cluster: a\n"
                 "          metadata_match: {}\n",
                 PATH ".metadata_match: not supported");
    expect_error("          stat_prefix: db\n"
                 "          cluster: a\n"
                 "          upstream_idle_timeout: 1s\n",
                 PATH ".upstream_idle_timeout: not supported");
    expect_error("          stat_prefix: db\n"
                 "          cluster: a\n"
                 "          access_log: [{name: x}]\n",
                 PATH ".access_log[0]");
    expect_error("          stat_prefix: db\n"
                 "          cluster: a\n"
                 "          max_connect_attempts: 0\n",
                 PATH ".max_connect_attempts: must be at least 1");
    expect_error("          stat_prefix: db\n"
                 "          weighted_clusters: {clusters: [{name: a, weight: 1}, {name: b}]}\n",
                 PATH ".weighted_clusters.clusters[1].weight: must be at least 1");
    expect_error("          stat_prefix: db\n"
                 "          weighted_clusters: {clusters: [{name: a, weight: 1, "
                 "metadata_match: {}}]}\n",
                 PATH ".weighted_clusters.clusters[0].metadata_match: not supported");
    /* not in remora's subset of the message: the converter names it */
    expect_error("          stat_prefix: db\n"
                 "          cluster: a\n"
                 "          hash_policy: [{}]\n",
                 "hash_policy");
}

Test(tcp_proxy_config, weighted_pick)
{
    struct rm_error err = {{0}};
    struct rm_snapshot *s = build("          stat_prefix: db\n"
                                  "          weighted_clusters:\n"
                                  "            clusters: [{name: a, weight: 1}, "
                                  "{name: b, weight: 3}]\n",
                                  &err);
    cr_assert_not_null(s, "%s", err.msg);
    const struct rm_tcp_proxy_cfg *t = s->listeners[0]->tcp;
    cr_assert_eq(t->n_clusters, 2);
    cr_assert_eq(t->total_weight, 4);
    cr_assert_eq(t->clusters[1].cluster, rm_snapshot_cluster(s, "b"));
    /* draws 0 → a; 1, 2, 3 → b; by the draw modulo the total */
    cr_assert_str_eq(rm_tcp_proxy_pick(t, 0)->name, "a");
    cr_assert_str_eq(rm_tcp_proxy_pick(t, 1)->name, "b");
    cr_assert_str_eq(rm_tcp_proxy_pick(t, 3)->name, "b");
    cr_assert_str_eq(rm_tcp_proxy_pick(t, 4)->name, "a");
    unsigned n_a = 0;
    for (uint64_t r = 0; r < 4000; r++)
        n_a += strcmp(rm_tcp_proxy_pick(t, r * 2654435761u)->name, "a") == 0;
    cr_assert(n_a > 800 && n_a < 1200, "a picked %u times of 4000 (weight 1 of 4)", n_a);
    rm_snapshot_unref(s);
}
