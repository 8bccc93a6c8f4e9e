/* ORIGINAL_DST clusters: what Envoy accepts and rejects (with the field path), and host
 * selection: restored local address, override header (valid / invalid), port override, one
 * shared host per address across workers, /clusters' view of the live hosts. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "proxy/admin/stats.h"
#include "proxy/config/pbjson.h"
#include "proxy/core/arena.h"
#include "proxy/core/error.h"
#include "proxy/core/loop.h"
#include "proxy/http/headers.h"
#include "proxy/upstream/original_dst.h"
#include "proxy/upstream/pool.h"

typedef Envoy__Config__Cluster__V3__Cluster Cluster;

static void fini(void)
{
    rm_stats_free_all();
}

TestSuite(original_dst, .fini = fini);

/* Cluster "o" from YAML <body> (after the name), built: the cluster, or NULL with <err>.  The
 * message is kept alive by the cluster's box. */
static struct rm_cluster *build(const char *body, struct rm_error *err)
{
    char yaml[2048];
    snprintf(yaml, sizeof(yaml), "name: o\n%s", body);
    ProtobufCMessage *m = NULL;
    int rc = rm_pbjson_parse_string(yaml, strlen(yaml), "t.yaml",
                                    &envoy__config__cluster__v3__cluster__descriptor, &m, err);
    cr_assert_eq(rc, RM_OK, "parse: %s", err->msg);
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

#define ODST "type: ORIGINAL_DST\nlb_policy: CLUSTER_PROVIDED\n"

Test(original_dst, accepted_with_defaults)
{
    struct rm_error err = {{0}};
    struct rm_cluster *c = build(ODST, &err);
    cr_assert_not_null(c, "%s", err.msg);
    cr_assert_not_null(c->odst);
    cr_assert_eq(c->odst->cleanup_ms, 5000);
    cr_assert_null(c->odst->header, "no header without use_http_header");
    cr_assert_not(c->odst->has_port_override);
    cr_assert_eq(c->hs->n, 0);
    rm_cluster_unref(c);
}

Test(original_dst, accepted_with_lb_config)
{
    struct rm_error err = {{0}};
    struct rm_cluster *c = build(ODST "cleanup_interval: 0.25s\n"
                                      "original_dst_lb_config: {use_http_header: true, "
                                      "upstream_port_override: 9000}\n",
                                 &err);
    cr_assert_not_null(c, "%s", err.msg);
    cr_assert_eq(c->odst->cleanup_ms, 250);
    cr_assert_str_eq(c->odst->header, "x-envoy-original-dst-host");
    cr_assert(c->odst->has_port_override);
    cr_assert_eq(c->odst->port_override, 9000);
    rm_cluster_unref(c);
    c = build(ODST "original_dst_lb_config: {use_http_header: true, http_header_name: X-Dst}\n",
              &err);
    cr_assert_not_null(c, "%s", err.msg);
    cr_assert_str_eq(c->odst->header, "x-dst");
    rm_cluster_unref(c);
}

Test(original_dst, rejected_with_their_path)
{
    expect_error("type: ORIGINAL_DST\n",
                 "clusters[0].lb_policy: ROUND_ROBIN is not valid for an ORIGINAL_DST cluster");
    expect_error("type: ORIGINAL_DST\nlb_policy: RANDOM\n",
                 "clusters[0].lb_policy: RANDOM is not valid for an ORIGINAL_DST cluster");
    expect_error(ODST "load_assignment:\n  cluster_name: o\n  endpoints:\n  - lb_endpoints:\n"
                      "    - endpoint: {address: {socket_address: {address: 127.0.0.1, "
                      "port_value: 80}}}\n",
                 "clusters[0].load_assignment: ORIGINAL_DST clusters must have no load "
                 "assignment configured");
    expect_error(ODST "original_dst_lb_config: {http_header_name: x-dst}\n",
                 "clusters[0].original_dst_lb_config.http_header_name: set, but use_http_header "
                 "is false");
    expect_error(ODST "original_dst_lb_config: {upstream_port_override: 70000}\n",
                 "clusters[0].original_dst_lb_config.upstream_port_override: must be at most "
                 "65535");
    expect_error(ODST "outlier_detection: {consecutive_5xx: 3}\n",
                 "clusters[0].outlier_detection: not supported by remora for ORIGINAL_DST");
    expect_error(ODST "cleanup_interval: 0s\n",
                 "clusters[0].cleanup_interval: must be greater than 0");
    expect_error("original_dst_lb_config: {use_http_header: true}\n",
                 "clusters[0].original_dst_lb_config: only for clusters of type ORIGINAL_DST");
    expect_error("lb_policy: CLUSTER_PROVIDED\n",
                 "clusters[0].lb_policy: CLUSTER_PROVIDED is not supported by remora");
    /* (any cluster) endpoint fields that would change where checks or connections go */
    expect_error("load_assignment:\n  cluster_name: s\n  endpoints:\n  - lb_endpoints:\n"
                 "    - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 80}},"
                 " health_check_config: {port_value: 81}}\n",
                 "lb_endpoints[0].endpoint.health_check_config: not supported by remora yet");
    expect_error("load_assignment:\n  cluster_name: s\n  endpoints:\n  - lb_endpoints:\n"
                 "    - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 80}},"
                 " additional_addresses: [{address: {socket_address: {address: '::1', port_value:"
                 " 80}}}]}\n",
                 "lb_endpoints[0].endpoint.additional_addresses: not supported by remora yet");
    /* (any cluster) a common_lb_config switch remora does not implement */
    expect_error("common_lb_config: {close_connections_on_host_set_change: true}\n",
                 "clusters[0].common_lb_config.close_connections_on_host_set_change: not "
                 "supported by remora yet");
}

/* ---- host selection ------------------------------------------------------------------------ */

static struct sockaddr_in v4(const char *ip, uint16_t port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, ip, &a.sin_addr);
    return a;
}

static struct rm_headers *headers(struct rm_arena *ar, const char *name, const char *value)
{
    struct rm_headers *h = rm_arena_alloc(ar, sizeof(*h));
    rm_headers_init(h, ar);
    if (name) rm_headers_add(h, name, strlen(name), value, strlen(value));
    return h;
}

static size_t live_hosts(struct rm_cluster *c)
{
    struct rm_host_set *hs = rm_odst_hosts(c);
    cr_assert_not_null(hs);
    size_t n = hs->n;
    rm_host_set_unref(hs);
    return n;
}

Test(original_dst, picks_the_restored_address_and_shares_hosts)
{
    struct rm_error err = {{0}};
    struct rm_cluster *c = build(ODST, &err);
    cr_assert_not_null(c, "%s", err.msg);
    struct rm_loop *l1 = rm_loop_new(), *l2 = rm_loop_new();
    struct rm_worker_cluster *w1 = rm_worker_cluster_new(c, l1), *w2 = rm_worker_cluster_new(c, l2);
    struct sockaddr_in a = v4("127.0.0.2", 8080), b = v4("127.0.0.3", 8080);
    cr_assert_null(rm_odst_pick(w1, NULL, NULL), "no original destination: no host");
    struct rm_host *h1 = rm_odst_pick(w1, (struct sockaddr *)&a, NULL);
    cr_assert_not_null(h1);
    cr_assert_str_eq(h1->addr_str, "127.0.0.2:8080");
    cr_assert_eq(rm_odst_pick(w1, (struct sockaddr *)&a, NULL), h1,
                 "the same address: the same host");
    cr_assert_eq(rm_odst_pick(w2, (struct sockaddr *)&a, NULL), h1, "one host across workers");
    struct rm_host *h2 = rm_odst_pick(w1, (struct sockaddr *)&b, NULL);
    cr_assert_str_eq(h2->addr_str, "127.0.0.3:8080");
    cr_assert_eq(live_hosts(c), 2);
    cr_assert_eq(rm_stat_value(c->stats, RM_CS_MEMBERSHIP_TOTAL), 2);
    /* the pools live in the worker's map */
    cr_assert_not_null(rm_worker_cluster_pool(w1, h1, RM_HTTP11, 0));
    cr_assert_eq(rm_worker_cluster_pool(w1, h1, RM_HTTP11, 0),
                 rm_worker_cluster_pool(w1, h1, RM_HTTP11, 0));
    rm_worker_cluster_free(w1);
    cr_assert_eq(live_hosts(c), 1, "w2 still has 127.0.0.2:8080");
    rm_worker_cluster_free(w2);
    cr_assert_eq(live_hosts(c), 0);
    cr_assert_eq(rm_stat_value(c->stats, RM_CS_MEMBERSHIP_TOTAL), 0);
    rm_loop_run_pending(l1);
    rm_loop_run_pending(l2);
    rm_loop_free(l1);
    rm_loop_free(l2);
    rm_cluster_unref(c);
}

Test(original_dst, header_override_and_port_override)
{
    struct rm_error err = {{0}};
    struct rm_cluster *c = build(ODST "original_dst_lb_config: {use_http_header: true}\n", &err);
    cr_assert_not_null(c, "%s", err.msg);
    struct rm_loop *l = rm_loop_new();
    struct rm_worker_cluster *wc = rm_worker_cluster_new(c, l);
    struct rm_arena ar;
    rm_arena_init(&ar);
    struct sockaddr_in a = v4("127.0.0.2", 8080);
    struct rm_host *h = rm_odst_pick(wc, (struct sockaddr *)&a,
                                     headers(&ar, "x-envoy-original-dst-host", "127.0.0.9:81"));
    cr_assert_str_eq(h->addr_str, "127.0.0.9:81", "a valid header wins");
    h = rm_odst_pick(wc, NULL, headers(&ar, "x-envoy-original-dst-host", "[::1]:82"));
    cr_assert_str_eq(h->addr_str, "[::1]:82");
    cr_assert_eq(rm_stat_value(c->stats, RM_CS_ORIGINAL_DST_HOST_INVALID), 0);
    h = rm_odst_pick(wc, (struct sockaddr *)&a,
                     headers(&ar, "x-envoy-original-dst-host", "a.b.c.d"));
    cr_assert_str_eq(h->addr_str, "127.0.0.2:8080", "an invalid header is ignored");
    cr_assert_eq(rm_stat_value(c->stats, RM_CS_ORIGINAL_DST_HOST_INVALID), 1);
    cr_assert_null(rm_odst_pick(wc, NULL, headers(&ar, "x-envoy-original-dst-host", "1.2.3.4")),
                   "no port: invalid, and nothing else");
    cr_assert_eq(rm_stat_value(c->stats, RM_CS_ORIGINAL_DST_HOST_INVALID), 2);
    cr_assert_null(rm_odst_pick(wc, NULL, headers(&ar, NULL, NULL)));
    rm_worker_cluster_free(wc);
    rm_cluster_unref(c);

    c = build(ODST "original_dst_lb_config: {upstream_port_override: 9000}\n", &err);
    cr_assert_not_null(c, "%s", err.msg);
    wc = rm_worker_cluster_new(c, l);
    h = rm_odst_pick(wc, (struct sockaddr *)&a,
                     headers(&ar, "x-envoy-original-dst-host", "127.0.0.9:81"));
    cr_assert_str_eq(h->addr_str, "127.0.0.2:9000",
                     "without use_http_header the header is no input");
    rm_worker_cluster_free(wc);
    rm_cluster_unref(c);
    rm_arena_dispose(&ar);
    rm_loop_run_pending(l);
    rm_loop_free(l);
}
