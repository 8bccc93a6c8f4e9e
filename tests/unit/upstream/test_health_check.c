/* Active health checking: Cluster.health_checks accepted with Envoy's defaults and rejected with
 * the field path; the threshold state machine (first result, thresholds, immediate failures,
 * pending flag), the interval choice and jitter, TCP payload matching; hosts of a cluster start
 * failed and the load balancers' view (rm_host_routable) follows. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "proxy/admin/stats.h"
#include "proxy/config/pbjson.h"
#include "proxy/core/error.h"
#include "proxy/upstream/cluster.h"
#include "proxy/upstream/health_check.h"

typedef Envoy__Config__Cluster__V3__Cluster Cluster;

static void fini(void)
{
    rm_stats_free_all();
}

TestSuite(health_check, .fini = fini);

#define HOSTS                                                                                      \
    "load_assignment:\n"                                                                           \
    "  cluster_name: h\n"                                                                          \
    "  endpoints:\n"                                                                               \
    "  - lb_endpoints:\n"                                                                          \
    "    - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 1}}}\n"           \
    "    - endpoint: {address: {socket_address: {address: 127.0.0.2, port_value: 1}}}\n"

#define HC                                                                                         \
    "health_checks:\n- timeout: 1s\n  interval: 2s\n  unhealthy_threshold: 3\n"                    \
    "  healthy_threshold: 2\n"
#define HTTP_HC HC "  http_health_check: {path: /healthz}\n"

/* Cluster "h" from YAML <body> (after the name), built: the cluster, or NULL with <err>. */
static struct rm_cluster *build(const char *body, struct rm_error *err)
{
    char yaml[4096];
    snprintf(yaml, sizeof(yaml), "name: h\n%s", body);
    ProtobufCMessage *m = NULL;
    int rc = rm_pbjson_parse_string(yaml, strlen(yaml), "t.yaml",
                                    &envoy__config__cluster__v3__cluster__descriptor, &m, err);
    if (rc != RM_OK) return NULL;
    struct rm_pb_box *box = rm_pb_box_new(m);
    cr_assert_not_null(box);
    struct rm_cluster *c = rm_cluster_new((const Cluster *)m, box, NULL, "clusters[0]", err);
    rm_pb_box_unref(box);
    return c;
}

static void expect_error(const char *body, const char *want)
{
    struct rm_error err = {{0}};
    struct rm_cluster *c = build(body, &err);
    cr_assert_null(c, "expected: %s", want);
    cr_assert(strstr(err.msg, want), "got \"%s\", expected \"%s\"", err.msg, want);
}

Test(health_check, http_defaults_and_hosts_start_failed)
{
    struct rm_error err = {{0}};
    struct rm_cluster *c = build(HOSTS HTTP_HC, &err);
    cr_assert_not_null(c, "%s", err.msg);
    cr_assert_not_null(c->hc);
    cr_assert_eq(c->hs->n, 2);
    for (size_t i = 0; i < 2; i++) {
        cr_assert_eq(rm_host_hc_flags(c->hs->hosts[i]), RM_HOST_FAILED_ACTIVE_HC);
        cr_assert_not(rm_host_routable(c->hs->hosts[i]), "unchecked hosts are unhealthy");
        cr_assert_not(rm_host_excluded(c->hs->hosts[i]));
    }
    rm_cluster_unref(c);
}

Test(health_check, config_defaults)
{
    struct rm_error err = {{0}};
    const char *y = "name: h\n" HTTP_HC;
    ProtobufCMessage *m = NULL;
    cr_assert_eq(rm_pbjson_parse_string(y, strlen(y), "t.yaml",
                                        &envoy__config__cluster__v3__cluster__descriptor, &m, &err),
                 RM_OK, "%s", err.msg);
    const Cluster *pb = (const Cluster *)m;
    struct rm_hc_config cfg;
    cr_assert_eq(rm_hc_config_parse(pb->health_checks[0], "h", "x", &cfg, &err), RM_OK, "%s",
                 err.msg);
    cr_assert_eq(cfg.kind, RM_HC_HTTP);
    cr_assert_eq(cfg.timeout_ms, 1000);
    cr_assert_eq(cfg.interval_ms, 2000);
    cr_assert_eq(cfg.no_traffic_interval_ms, 60000);
    cr_assert_eq(cfg.unhealthy_interval_ms, 2000);
    cr_assert_eq(cfg.unhealthy_edge_interval_ms, 2000);
    cr_assert_eq(cfg.healthy_edge_interval_ms, 2000);
    cr_assert(cfg.reuse_connection);
    cr_assert_str_eq(cfg.host, "h", "the Host defaults to the cluster name");
    cr_assert_str_eq(cfg.path, "/healthz");
    cr_assert_eq(cfg.n_expected, 1);
    cr_assert(rm_hc_in_ranges(cfg.expected, cfg.n_expected, 200));
    cr_assert_not(rm_hc_in_ranges(cfg.expected, cfg.n_expected, 201), "Envoy: 200 only");
    rm_hc_config_dispose(&cfg);
    protobuf_c_message_free_unpacked(m, NULL);
}

Test(health_check, tcp_payloads)
{
    struct rm_error err = {{0}};
    struct rm_cluster *c = build(HOSTS HC "  tcp_health_check:\n    send: {text: 50494e47}\n"
                                          "    receive: [{text: 504f}, {binary: TkcK}]\n",
                                 &err);
    cr_assert_not_null(c, "%s", err.msg);
    rm_cluster_unref(c);
    expect_error(HOSTS HC "  tcp_health_check: {send: {text: 5G}}\n",
                 "clusters[0].health_checks[0].tcp_health_check.send.text: \"5G\" is not "
                 "hex-encoded");
    expect_error(HOSTS HC "  tcp_health_check: {receive: [{text: ABC}]}\n",
                 "clusters[0].health_checks[0].tcp_health_check.receive[0].text: an even number");
}

Test(health_check, grpc_config)
{
    struct rm_error err = {{0}};
    expect_error(HOSTS HC "  grpc_health_check: {service_name: s}\n",
                 "clusters[0].health_checks[0].grpc_health_check: the cluster must speak HTTP/2");
    struct rm_cluster *c =
        build(HOSTS HC "  grpc_health_check: {service_name: s}\n"
                       "typed_extension_protocol_options:\n"
                       "  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n"
                       "    \"@type\": type.googleapis.com/"
                       "envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n"
                       "    explicit_http_config: {http2_protocol_options: {}}\n",
              &err);
    cr_assert_not_null(c, "%s", err.msg);
    rm_cluster_unref(c);
}

Test(health_check, rejected_with_their_path)
{
    expect_error(HOSTS "health_checks:\n- {interval: 1s, unhealthy_threshold: 1, "
                       "healthy_threshold: 1, http_health_check: {path: /}}\n",
                 "clusters[0].health_checks[0].timeout: required");
    expect_error(HOSTS "health_checks:\n- {timeout: 1s, unhealthy_threshold: 1, "
                       "healthy_threshold: 1, http_health_check: {path: /}}\n",
                 "clusters[0].health_checks[0].interval: required");
    expect_error(HOSTS "health_checks:\n- {timeout: 1s, interval: 1s, healthy_threshold: 1, "
                       "http_health_check: {path: /}}\n",
                 "clusters[0].health_checks[0].unhealthy_threshold: required");
    expect_error(HOSTS HC, "clusters[0].health_checks[0]: a health checker is required");
    expect_error(HOSTS HC "  http_health_check: {host: x}\n",
                 "clusters[0].health_checks[0].http_health_check.path: a request path");
    expect_error(HOSTS HC "  http_health_check: {path: /, codec_client_type: HTTP3}\n",
                 "clusters[0].health_checks[0].http_health_check.codec_client_type");
    expect_error(HOSTS HC "  http_health_check: {path: /, expected_statuses: [{start: 200, "
                          "end: 700}]}\n",
                 "clusters[0].health_checks[0].http_health_check.expected_statuses[0]");
    expect_error(HOSTS HC "  http_health_check:\n    path: /\n    request_headers_to_add:\n"
                          "    - header: {key: ':path', value: x}\n",
                 "clusters[0].health_checks[0].http_health_check.request_headers_to_add[0]");
    expect_error(HOSTS "health_checks:\n- {timeout: 0s, interval: 1s, unhealthy_threshold: 1, "
                       "healthy_threshold: 1, http_health_check: {path: /}}\n",
                 "clusters[0].health_checks[0].timeout: must be at least 1ms");
    expect_error(HOSTS HTTP_HC "- {timeout: 1s, interval: 1s, unhealthy_threshold: 1, "
                               "healthy_threshold: 1, tcp_health_check: {}}\n",
                 "clusters[0].health_checks[1]: only one health check per cluster");
    /* fields remora does not implement are not declared: the parser names them */
    expect_error(HOSTS HC "  custom_health_check: {name: x}\n", "custom_health_check");
    expect_error(HOSTS HC "  http_health_check: {path: /}\n  event_log_path: /tmp/x\n",
                 "event_log_path");
    expect_error(HOSTS HC "  http_health_check: {path: /}\n  transport_socket_match_criteria: {}\n",
                 "transport_socket_match_criteria");
    expect_error(HOSTS HC "  http_health_check: {path: /, method: HEAD}\n", "method");
    expect_error("type: ORIGINAL_DST\nlb_policy: CLUSTER_PROVIDED\n" HTTP_HC,
                 "clusters[0].health_checks[0]: health checks of ORIGINAL_DST clusters");
}

/* ---- the state machine ----------------------------------------------------------------- */

static struct rm_hc_config cfg3(void)
{
    return (struct rm_hc_config){.unhealthy_threshold = 3, .healthy_threshold = 2};
}

Test(health_check, first_result_decides_alone)
{
    struct rm_hc_config cfg = cfg3();
    struct rm_hc_state st = {.first_check = true};
    _Atomic uint8_t f = RM_HOST_FAILED_ACTIVE_HC | RM_HOST_PENDING_ACTIVE_HC;
    bool pc;
    cr_assert_eq(rm_hc_apply(&cfg, &st, &f, RM_HC_RESULT_SUCCESS, NULL, &pc), RM_HC_CHANGED);
    cr_assert_eq(f, 0, "one success is enough at first, and the pending flag goes");
    cr_assert(pc);
    /* a first failure keeps the host failed and clears the pending flag */
    st = (struct rm_hc_state){.first_check = true};
    f = RM_HOST_FAILED_ACTIVE_HC | RM_HOST_PENDING_ACTIVE_HC;
    cr_assert_eq(rm_hc_apply(&cfg, &st, &f, RM_HC_RESULT_NETWORK, NULL, &pc), RM_HC_CHANGED,
                 "clearing the pending flag is a change (Envoy's clearPendingFlag)");
    cr_assert_eq(f, RM_HOST_FAILED_ACTIVE_HC);
    cr_assert(pc);
    cr_assert_eq(rm_hc_apply(&cfg, &st, &f, RM_HC_RESULT_NETWORK, NULL, &pc), RM_HC_UNCHANGED);
    cr_assert_not(pc);
}

Test(health_check, timeout_flag)
{
    struct rm_hc_config cfg = cfg3();
    struct rm_hc_state st = {0};
    _Atomic uint8_t f = 0;
    rm_hc_apply(&cfg, &st, &f, RM_HC_RESULT_TIMEOUT, NULL, NULL);
    cr_assert_eq(f, 0, "set only on a failed host");
    f = RM_HOST_FAILED_ACTIVE_HC;
    rm_hc_apply(&cfg, &st, &f, RM_HC_RESULT_TIMEOUT, NULL, NULL);
    cr_assert_eq(f, RM_HOST_FAILED_ACTIVE_HC | RM_HOST_ACTIVE_HC_TIMEOUT);
    rm_hc_apply(&cfg, &st, &f, RM_HC_RESULT_FAILED, NULL, NULL);
    cr_assert_eq(f, RM_HOST_FAILED_ACTIVE_HC, "another failure clears it");
    rm_hc_apply(&cfg, &st, &f, RM_HC_RESULT_TIMEOUT, NULL, NULL);
    rm_hc_apply(&cfg, &st, &f, RM_HC_RESULT_SUCCESS, NULL, NULL);
    rm_hc_apply(&cfg, &st, &f, RM_HC_RESULT_SUCCESS, NULL, NULL);
    cr_assert_eq(f, 0, "healthy again: cleared");
}

Test(health_check, thresholds)
{
    struct rm_hc_config cfg = cfg3();
    struct rm_hc_state st = {0};
    _Atomic uint8_t f = 0;
    /* healthy: 3 consecutive network or retriable failures, a success in between resets */
    cr_assert_eq(rm_hc_apply(&cfg, &st, &f, RM_HC_RESULT_NETWORK, NULL, NULL),
                 RM_HC_CHANGE_PENDING);
    cr_assert_eq(rm_hc_apply(&cfg, &st, &f, RM_HC_RESULT_RETRIABLE, NULL, NULL),
                 RM_HC_CHANGE_PENDING);
    cr_assert_eq(rm_hc_apply(&cfg, &st, &f, RM_HC_RESULT_SUCCESS, NULL, NULL), RM_HC_UNCHANGED);
    cr_assert_eq(rm_hc_apply(&cfg, &st, &f, RM_HC_RESULT_NETWORK, NULL, NULL),
                 RM_HC_CHANGE_PENDING);
    cr_assert_eq(rm_hc_apply(&cfg, &st, &f, RM_HC_RESULT_NETWORK, NULL, NULL),
                 RM_HC_CHANGE_PENDING);
    cr_assert_eq(f, 0);
    cr_assert_eq(rm_hc_apply(&cfg, &st, &f, RM_HC_RESULT_NETWORK, NULL, NULL), RM_HC_CHANGED);
    cr_assert_eq(f, RM_HOST_FAILED_ACTIVE_HC);
    /* unhealthy: 2 consecutive successes, a failure in between resets */
    cr_assert_eq(rm_hc_apply(&cfg, &st, &f, RM_HC_RESULT_SUCCESS, NULL, NULL),
                 RM_HC_CHANGE_PENDING);
    cr_assert_eq(rm_hc_apply(&cfg, &st, &f, RM_HC_RESULT_FAILED, NULL, NULL), RM_HC_UNCHANGED);
    cr_assert_eq(rm_hc_apply(&cfg, &st, &f, RM_HC_RESULT_SUCCESS, NULL, NULL),
                 RM_HC_CHANGE_PENDING);
    cr_assert_eq(f, RM_HOST_FAILED_ACTIVE_HC);
    cr_assert_eq(rm_hc_apply(&cfg, &st, &f, RM_HC_RESULT_SUCCESS, NULL, NULL), RM_HC_CHANGED);
    cr_assert_eq(f, 0);
    /* an active (non-retriable) failure marks a healthy host unhealthy at once */
    cr_assert_eq(rm_hc_apply(&cfg, &st, &f, RM_HC_RESULT_FAILED, NULL, NULL), RM_HC_CHANGED);
    cr_assert_eq(f, RM_HOST_FAILED_ACTIVE_HC);
}

Test(health_check, stats_counted)
{
    struct rm_stats *s = rm_stats_get("cluster.t.health_check.", rm_hc_stat_defs, RM_HC__COUNT);
    struct rm_hc_config cfg = cfg3();
    struct rm_hc_state st = {0};
    _Atomic uint8_t f = 0;
    rm_hc_apply(&cfg, &st, &f, RM_HC_RESULT_SUCCESS, s, NULL);
    rm_hc_apply(&cfg, &st, &f, RM_HC_RESULT_NETWORK, s, NULL);
    rm_hc_apply(&cfg, &st, &f, RM_HC_RESULT_FAILED, s, NULL);
    rm_hc_apply(&cfg, &st, &f, RM_HC_RESULT_TIMEOUT, s, NULL);
    cr_assert_eq(rm_stat_value(s, RM_HC_SUCCESS), 1);
    cr_assert_eq(rm_stat_value(s, RM_HC_FAILURE), 3);
    cr_assert_eq(rm_stat_value(s, RM_HC_NETWORK_FAILURE), 2);
    cr_assert_eq(rm_stat_value(s, RM_HC_PASSIVE_FAILURE), 0);
    rm_stats_release(s);
}

Test(health_check, intervals)
{
    struct rm_hc_config cfg = {.interval_ms = 1000,
                               .no_traffic_interval_ms = 60000,
                               .no_traffic_healthy_interval_ms = 0,
                               .unhealthy_interval_ms = 3000,
                               .unhealthy_edge_interval_ms = 4000,
                               .healthy_edge_interval_ms = 500};
    cr_assert_eq(rm_hc_interval(&cfg, false, true, RM_HC_UNCHANGED, true, 7), 60000);
    cfg.no_traffic_healthy_interval_ms = 90000;
    cr_assert_eq(rm_hc_interval(&cfg, false, true, RM_HC_UNCHANGED, true, 7), 90000);
    cr_assert_eq(rm_hc_interval(&cfg, false, false, RM_HC_UNCHANGED, false, 7), 60000);
    cr_assert_eq(rm_hc_interval(&cfg, true, true, RM_HC_UNCHANGED, true, 7), 1000);
    cr_assert_eq(rm_hc_interval(&cfg, true, true, RM_HC_CHANGE_PENDING, false, 7), 500);
    cr_assert_eq(rm_hc_interval(&cfg, true, false, RM_HC_UNCHANGED, false, 7), 3000);
    cr_assert_eq(rm_hc_interval(&cfg, true, false, RM_HC_CHANGE_PENDING, true, 7), 4000);
    /* jitter: percent of the base plus interval_jitter, each below its bound */
    cfg.interval_jitter_percent = 10;
    cfg.interval_jitter_ms = 50;
    for (uint64_t r = 0; r < 5000; r += 37) {
        uint64_t ms = rm_hc_interval(&cfg, true, true, RM_HC_UNCHANGED, true, r * 0x9E3779B9ULL);
        cr_assert(ms >= 1000 && ms < 1000 + 100 + 50, "%llu", (unsigned long long)ms);
    }
}

Test(health_check, tcp_fuzzy_match)
{
    struct rm_hc_bytes b[2] = {{(uint8_t *)"PO", 2}, {(uint8_t *)"NG", 2}};
    cr_assert(rm_hc_tcp_match(b, 2, (const uint8_t *)"xxPOyyNG", 8));
    cr_assert(rm_hc_tcp_match(b, 2, (const uint8_t *)"PONG", 4));
    cr_assert_not(rm_hc_tcp_match(b, 2, (const uint8_t *)"NGPO", 4), "order matters");
    cr_assert_not(rm_hc_tcp_match(b, 2, (const uint8_t *)"PON", 3));
    cr_assert(rm_hc_tcp_match(b, 0, (const uint8_t *)"", 0));
}

/* Membership changes: new hosts start failed (and pending with ignore_new_hosts_until_first_hc),
 * a host that stays keeps its state, a new host object with the address of one that leaves
 * takes its state over. */
Test(health_check, set_hosts_follows_membership)
{
    struct rm_error err = {{0}};
    struct rm_cluster *c =
        build(HOSTS "common_lb_config: {ignore_new_hosts_until_first_hc: true}\n" HTTP_HC, &err);
    cr_assert_not_null(c, "%s", err.msg);
    struct rm_host *h0 = c->hs->hosts[0], *h1 = c->hs->hosts[1];
    cr_assert_eq(rm_host_hc_flags(h0), RM_HOST_FAILED_ACTIVE_HC | RM_HOST_PENDING_ACTIVE_HC);
    cr_assert(rm_host_excluded(h0));
    atomic_store(&h0->hc, 0); /* as if h0 passed its checks */
    struct rm_host_spec sp[3] = {0};
    for (int i = 0; i < 3; i++) {
        struct sockaddr_in *a = (struct sockaddr_in *)&sp[i].addr;
        a->sin_family = AF_INET;
        a->sin_port = htons(1);
        a->sin_addr.s_addr = htonl(0x7f000001 + (uint32_t)i);
        sp[i].addr_len = sizeof(*a);
        sp[i].weight = i == 0 ? 5 : 1; /* h0's address with another weight: a new object */
        sp[i].locality_idx = 0;
    }
    struct rm_host_set *hs = NULL;
    cr_assert_eq(rm_host_set_diff(c->hs, &sp[0], 1, &hs), RM_HOST_SET_CHANGED);
    cr_assert_neq(hs->hosts[0], h0);
    rm_cluster_set_hosts(c, hs);
    cr_assert_eq(rm_host_hc_flags(c->hs->hosts[0]), 0, "the state follows the address");
    (void)h1;
    cr_assert_eq(rm_host_set_diff(c->hs, sp, 3, &hs), RM_HOST_SET_CHANGED);
    rm_cluster_set_hosts(c, hs);
    cr_assert_eq(rm_host_hc_flags(c->hs->hosts[0]), 0, "a host that stays keeps its state");
    cr_assert_eq(rm_host_hc_flags(c->hs->hosts[2]),
                 RM_HOST_FAILED_ACTIVE_HC | RM_HOST_PENDING_ACTIVE_HC);
    cr_assert_eq(rm_stat_value(c->stats, RM_CS_MEMBERSHIP_HEALTHY), 1);
    rm_cluster_unref(c);
}
