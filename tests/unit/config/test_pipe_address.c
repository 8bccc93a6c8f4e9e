/* Unix domain socket addresses (Envoy's Address.pipe): the sockaddr a path or an abstract
 * "@name" gives, the rejections (empty, too long, mode out of range, mode on an abstract
 * socket, a pipe endpoint in a DNS cluster) with their field paths, and pipes where a snapshot
 * takes them: a listener (its mode kept), the admin address, a STATIC cluster's host. */
#include <criterion/criterion.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"
#include "envoy/config/core/v3/address.pb-c.h"
#include "proxy/admin/stats.h"
#include "proxy/config/pbjson.h"
#include "proxy/config/pbutil.h"
#include "proxy/config/snapshot.h"
#include "proxy/core/error.h"

static void fini(void)
{
    rm_stats_free_all();
}

TestSuite(pipe_address, .fini = fini);

/* rm_pb_address on the Address <yaml>: its result, the sockaddr in <ss> and <len>. */
static int address(const char *yaml, struct sockaddr_storage *ss, socklen_t *len,
                   struct rm_error *err, uint32_t *mode)
{
    ProtobufCMessage *m = NULL;
    int rc = rm_pbjson_parse_string(yaml, strlen(yaml), "a.yaml",
                                    &envoy__config__core__v3__address__descriptor, &m, err);
    cr_assert_eq(rc, RM_OK, "parse: %s", err->msg);
    const Envoy__Config__Core__V3__Address *a = (const Envoy__Config__Core__V3__Address *)m;
    rc = rm_pb_address(a, "x.address", ss, len, err);
    if (mode) *mode = rm_pb_pipe_mode(a);
    protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}

static void expect_error(const char *yaml, const char *want)
{
    struct sockaddr_storage ss;
    socklen_t len;
    struct rm_error err = {{0}};
    cr_assert_eq(address(yaml, &ss, &len, &err, NULL), RM_ERR, "expected: %s", want);
    cr_assert(strstr(err.msg, want), "got \"%s\", expected \"%s\"", err.msg, want);
}

Test(pipe_address, path_is_a_whole_sockaddr_un)
{
    struct sockaddr_storage ss;
    socklen_t len;
    struct rm_error err = {{0}};
    uint32_t mode = 1;
    cr_assert_eq(address("pipe: {path: /run/x.sock, mode: 420}", &ss, &len, &err, &mode), RM_OK,
                 "%s", err.msg);
    const struct sockaddr_un *un = (const struct sockaddr_un *)&ss;
    cr_assert_eq(un->sun_family, AF_UNIX);
    cr_assert_str_eq(un->sun_path, "/run/x.sock");
    cr_assert_eq(len, sizeof(struct sockaddr_un));
    cr_assert_eq(mode, 0644);
    char s[RM_SOCKADDR_STRLEN];
    rm_sockaddr_str((const struct sockaddr *)&ss, s, sizeof(s));
    cr_assert_str_eq(s, "/run/x.sock");
    /* a socket_address has no mode */
    cr_assert_eq(
        address("socket_address: {address: 127.0.0.1, port_value: 1}", &ss, &len, &err, &mode),
        RM_OK);
    cr_assert_eq(mode, 0);
}

Test(pipe_address, at_is_the_abstract_namespace)
{
    struct sockaddr_storage ss;
    socklen_t len;
    struct rm_error err = {{0}};
    cr_assert_eq(address("pipe: {path: \"@istio/xds\"}", &ss, &len, &err, NULL), RM_OK, "%s",
                 err.msg);
    const struct sockaddr_un *un = (const struct sockaddr_un *)&ss;
    cr_assert_eq(un->sun_path[0], 0);
    cr_assert_eq(memcmp(un->sun_path + 1, "istio/xds", 9), 0);
    /* the address ends with the name (no NUL): what curl --abstract-unix-socket and
     * Python's "\0name" connect to */
    cr_assert_eq(len, offsetof(struct sockaddr_un, sun_path) + 10);
    char s[RM_SOCKADDR_STRLEN];
    rm_sockaddr_str((const struct sockaddr *)&ss, s, sizeof(s));
    cr_assert_str_eq(s, "@istio/xds");
}

Test(pipe_address, rejections_name_the_field)
{
    expect_error("pipe: {path: \"\"}", "x.address.pipe.path: required");
    expect_error("pipe: {mode: 420}", "x.address.pipe.path: required");
    char yaml[300], path[120];
    memset(path, 'a', sizeof(path));
    path[0] = '/';
    path[108] = 0; /* 108 bytes: no room for the NUL in sun_path */
    snprintf(yaml, sizeof(yaml), "pipe: {path: %s}", path);
    expect_error(yaml, "x.address.pipe.path: \"/aaa");
    expect_error(yaml, "exceeds maximum UNIX domain socket path size of 108");
    path[107] = 0; /* 107 fits */
    snprintf(yaml, sizeof(yaml), "pipe: {path: %s}", path);
    struct sockaddr_storage ss;
    socklen_t len;
    struct rm_error err = {{0}};
    cr_assert_eq(address(yaml, &ss, &len, &err, NULL), RM_OK, "%s", err.msg);
    expect_error("pipe: {path: /x, mode: 512}", "x.address.pipe.mode: 512 (01000) is not a file");
    expect_error("pipe: {path: \"@x\", mode: 384}",
                 "x.address.pipe.mode: cannot set mode for abstract AF_UNIX sockets (\"@x\")");
    expect_error("{}", "x.address: socket_address or pipe is required");
}

/* A bootstrap with <listener_addr>, <admin_addr> and one cluster of <type> with an endpoint at
 * <endpoint_addr> (flow YAML), built into a snapshot: the snapshot, or NULL with <err>. */
static struct rm_snapshot *build(const char *listener_addr, const char *admin_addr,
                                 const char *type, const char *endpoint_addr, struct rm_error *err)
{
    char yaml[4096];
    snprintf(yaml, sizeof(yaml),
             "admin: {address: %s}\n"
             "static_resources:\n"
             "  listeners:\n"
             "  - name: l\n"
             "    address: %s\n"
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
             "envoy.extensions.filters.http.router.v3.Router}\n"
             "  clusters:\n"
             "  - name: c\n"
             "    type: %s\n"
             "    load_assignment:\n"
             "      cluster_name: c\n"
             "      endpoints: [{lb_endpoints: [{endpoint: {address: %s}}]}]\n",
             admin_addr, listener_addr, type, endpoint_addr);
    ProtobufCMessage *m = NULL;
    int rc = rm_pbjson_parse_string(yaml, strlen(yaml), "t.yaml",
                                    &envoy__config__bootstrap__v3__bootstrap__descriptor, &m, err);
    cr_assert_eq(rc, RM_OK, "parse: %s", err->msg);
    return rm_snapshot_from_bootstrap((Envoy__Config__Bootstrap__V3__Bootstrap *)m, err);
}

Test(pipe_address, snapshot_takes_pipes)
{
    struct rm_error err = {{0}};
    struct rm_snapshot *s =
        build("{pipe: {path: /tmp/l.sock, mode: 384}}", "{pipe: {path: \"@adm\"}}", "STATIC",
              "{pipe: {path: /tmp/up.sock}}", &err);
    cr_assert_not_null(s, "%s", err.msg);
    cr_assert_eq(s->n_listeners, 1);
    cr_assert_str_eq(s->listeners[0]->addr_str, "/tmp/l.sock");
    cr_assert_eq(s->listeners[0]->pipe_mode, 0600);
    cr_assert_eq(s->listeners[0]->addr.ss_family, AF_UNIX);
    cr_assert_str_eq(s->admin_addr_str, "@adm");
    cr_assert_eq(s->admin_pipe_mode, 0);
    const struct rm_cluster *c = rm_snapshot_cluster(s, "c");
    cr_assert_not_null(c);
    cr_assert_eq(c->hs->n, 1);
    const struct rm_host *h = c->hs->hosts[0];
    cr_assert_str_eq(h->addr_str, "/tmp/up.sock");
    socklen_t len;
    const struct sockaddr_un *un = (const void *)rm_host_set_connect_addr(c->hs, h, &len);
    cr_assert_eq(un->sun_family, AF_UNIX);
    cr_assert_eq(len, sizeof(*un));
    cr_assert_str_eq(un->sun_path, "/tmp/up.sock");
    rm_snapshot_unref(s);
}

Test(pipe_address, snapshot_rejections_name_the_field)
{
    struct rm_error err = {{0}};
    const char *ip = "{socket_address: {address: 127.0.0.1, port_value: 10000}}";
    struct rm_snapshot *s = build("{pipe: {path: \"@l\", mode: 420}}", ip, "STATIC", ip, &err);
    cr_assert_null(s);
    cr_assert(strstr(err.msg, "static_resources.listeners[0].address.pipe.mode: cannot set mode"),
              "%s", err.msg);
    s = build(ip, "{pipe: {path: \"\"}}", "STATIC", ip, &err);
    cr_assert_null(s);
    cr_assert(strstr(err.msg, "admin.address.pipe.path: required"), "%s", err.msg);
    s = build(ip, ip, "STATIC", "{pipe: {path: /x, mode: 1000}}", &err);
    cr_assert_null(s);
    cr_assert(strstr(err.msg, "static_resources.clusters[0].load_assignment.endpoints[0]."
                              "lb_endpoints[0].endpoint.address.pipe.mode: 1000"),
              "%s", err.msg);
    const char *dns_types[] = {"STRICT_DNS", "LOGICAL_DNS"};
    for (size_t i = 0; i < 2; i++) {
        s = build(ip, ip, dns_types[i], "{pipe: {path: /tmp/up.sock}}", &err);
        cr_assert_null(s, "%s", dns_types[i]);
        cr_assert(strstr(err.msg, "static_resources.clusters[0].load_assignment.endpoints[0]."
                                  "lb_endpoints[0].endpoint.address.pipe: a DNS cluster's "
                                  "endpoints are DNS names and ports"),
                  "%s: %s", dns_types[i], err.msg);
    }
    /* two listeners on one path */
}
