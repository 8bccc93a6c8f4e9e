/* A listener's listener_filters: the TLS and HTTP inspectors are accepted (they change nothing
 * with remora's one filter chain); every other listener filter, and what the inspectors cannot
 * do here, is rejected with its field path. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"
#include "proxy/admin/stats.h"
#include "proxy/config/pbjson.h"
#include "proxy/config/snapshot.h"
#include "proxy/core/error.h"

static void fini(void)
{
    rm_stats_free_all();
}

TestSuite(listener_filters, .fini = fini);

/* A bootstrap with one listener whose listener_filters are <filters> (a YAML block indented by
 * 4), built into a snapshot: the snapshot, or NULL with <err>. */
static struct rm_snapshot *build(const char *filters, struct rm_error *err)
{
    char yaml[4096];
    snprintf(yaml, sizeof(yaml),
             "static_resources:\n"
             "  listeners:\n"
             "  - name: l\n"
             "    address: {socket_address: {address: 127.0.0.1, port_value: 10000}}\n"
             "    listener_filters:\n"
             "%s"
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
             "envoy.extensions.filters.http.router.v3.Router}\n",
             filters);
    ProtobufCMessage *m = NULL;
    int rc = rm_pbjson_parse_string(yaml, strlen(yaml), "t.yaml",
                                    &envoy__config__bootstrap__v3__bootstrap__descriptor, &m, err);
    cr_assert_eq(rc, RM_OK, "parse: %s", err->msg);
    return rm_snapshot_from_bootstrap((Envoy__Config__Bootstrap__V3__Bootstrap *)m, err);
}

static void expect_error(const char *filters, const char *want)
{
    struct rm_error err = {{0}};
    struct rm_snapshot *s = build(filters, &err);
    cr_assert_null(s, "expected: %s", want);
    cr_assert(strstr(err.msg, want), "got \"%s\", expected \"%s\"", err.msg, want);
}

#define TLS_INSPECTOR                                                                              \
    "    - name: envoy.filters.listener.tls_inspector\n"                                           \
    "      typed_config: {\"@type\": type.googleapis.com/"                                         \
    "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"

Test(listener_filters, inspectors_are_accepted)
{
    struct rm_error err = {{0}};
    struct rm_snapshot *s =
        build(TLS_INSPECTOR ", initial_read_buffer_size: 16384}\n"
                            "    - name: envoy.filters.listener.http_inspector\n"
                            "      typed_config: {\"@type\": type.googleapis.com/"
                            "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector}\n"
                            "    - name: envoy.filters.listener.tls_inspector\n",
              &err);
    cr_assert_not_null(s, "%s", err.msg);
    rm_snapshot_unref(s);
}

Test(listener_filters, others_are_rejected_with_their_path)
{
    expect_error("    - name: envoy.filters.listener.original_dst\n",
                 "static_resources.listeners[0].listener_filters[0]: listener filter "
                 "\"envoy.filters.listener.original_dst\" is not supported by remora");
    expect_error(TLS_INSPECTOR "}\n"
                               "    - name: pp\n"
                               "      typed_config: {\"@type\": type.googleapis.com/"
                               "envoy.extensions.filters.http.router.v3.Router}\n",
                 "static_resources.listeners[0].listener_filters[1]: listener filter \"pp\"");
    expect_error(TLS_INSPECTOR ", enable_ja3_fingerprinting: true}\n",
                 "static_resources.listeners[0].listener_filters[0].typed_config."
                 "enable_ja3_fingerprinting: not supported by remora");
}
