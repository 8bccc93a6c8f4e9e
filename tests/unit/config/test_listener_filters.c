/* A listener's listener_filters: the TLS and HTTP inspectors are accepted (remora peeks itself
 * when a filter chain needs the first bytes), the original destination filter sets the listener's
 * original_dst; every other listener filter, and what the inspectors cannot do here, is rejected
 * with its field path.  The sidecar listener fields (use_original_dst, bind_to_port) too. */
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
static struct rm_snapshot *build_ex(const char *fields, const char *filters, struct rm_error *err)
{
    char yaml[4096];
    snprintf(yaml, sizeof(yaml),
             "static_resources:\n"
             "  listeners:\n"
             "  - name: l\n"
             "    address: {socket_address: {address: 127.0.0.1, port_value: 10000}}\n"
             "%s"
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
             fields, filters);
    ProtobufCMessage *m = NULL;
    int rc = rm_pbjson_parse_string(yaml, strlen(yaml), "t.yaml",
                                    &envoy__config__bootstrap__v3__bootstrap__descriptor, &m, err);
    cr_assert_eq(rc, RM_OK, "parse: %s", err->msg);
    return rm_snapshot_from_bootstrap((Envoy__Config__Bootstrap__V3__Bootstrap *)m, err);
}

static struct rm_snapshot *build(const char *filters, struct rm_error *err)
{
    return build_ex("", filters, err);
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
    expect_error("    - name: envoy.filters.listener.proxy_protocol\n",
                 "static_resources.listeners[0].listener_filters[0]: listener filter "
                 "\"envoy.filters.listener.proxy_protocol\" is not supported by remora");
    expect_error(TLS_INSPECTOR "}\n"
                               "    - name: pp\n"
                               "      typed_config: {\"@type\": type.googleapis.com/"
                               "envoy.extensions.filters.http.router.v3.Router}\n",
                 "static_resources.listeners[0].listener_filters[1]: listener filter \"pp\"");
    expect_error(TLS_INSPECTOR ", enable_ja3_fingerprinting: true}\n",
                 "static_resources.listeners[0].listener_filters[0].typed_config."
                 "enable_ja3_fingerprinting: not supported by remora");
}

#define ORIGINAL_DST                                                                               \
    "    - name: envoy.filters.listener.original_dst\n"                                            \
    "      typed_config: {\"@type\": type.googleapis.com/"                                         \
    "envoy.extensions.filters.listener.original_dst.v3.OriginalDst}\n"

Test(listener_filters, original_dst_is_accepted_and_sets_the_listener)
{
    struct rm_error err = {{0}};
    struct rm_snapshot *s = build(ORIGINAL_DST, &err);
    cr_assert_not_null(s, "%s", err.msg);
    const struct rm_listener_cfg *lc = s->listeners[0];
    cr_assert(lc->original_dst);
    cr_assert_not(lc->use_original_dst);
    cr_assert(lc->bind_to_port);
    rm_snapshot_unref(s);
    s = build("    - name: envoy.filters.listener.original_dst\n", &err); /* by name */
    cr_assert_not_null(s, "%s", err.msg);
    cr_assert(s->listeners[0]->original_dst);
    rm_snapshot_unref(s);
    s = build(TLS_INSPECTOR "}\n", &err);
    cr_assert_not_null(s, "%s", err.msg);
    cr_assert_not(s->listeners[0]->original_dst);
    rm_snapshot_unref(s);
}

Test(listener_filters, original_dst_fields_are_rejected_with_their_path)
{
    /* Envoy's OriginalDst has no field: anything in it is unknown (binary form: an xDS
     * resource; the YAML converter already refuses unknown names) */
    struct rm_error err = {{0}};
    struct rm_snapshot *s = build(ORIGINAL_DST, &err);
    cr_assert_not_null(s, "%s", err.msg);
    Envoy__Config__Listener__V3__Listener *pb = (void *)s->listeners[0]->pb;
    Google__Protobuf__Any *any = pb->listener_filters[0]->typed_config;
    static uint8_t junk[] = {0x08, 0x01}; /* field 1, varint 1 */
    ProtobufCBinaryData saved = any->value;
    any->value = (ProtobufCBinaryData){sizeof(junk), junk};
    int rc = rm_snapshot_check_listener(pb, "Listener l", NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                                        &err);
    any->value = saved;
    cr_assert_eq(rc, RM_ERR);
    cr_assert(strstr(err.msg, "Listener l.listener_filters[0].typed_config"), "%s", err.msg);
    rm_snapshot_unref(s);
}

Test(listener_filters, sidecar_listener_fields)
{
    struct rm_error err = {{0}};
    struct rm_snapshot *s = build_ex("    use_original_dst: true\n", TLS_INSPECTOR "}\n", &err);
    cr_assert_not_null(s, "%s", err.msg);
    cr_assert(s->listeners[0]->use_original_dst);
    cr_assert(s->listeners[0]->original_dst, "use_original_dst implies the filter (Envoy)");
    rm_snapshot_unref(s);
    s = build_ex("    bind_to_port: false\n", TLS_INSPECTOR "}\n", &err);
    cr_assert_not_null(s, "%s", err.msg);
    cr_assert_not(s->listeners[0]->bind_to_port);
    cr_assert_not(s->listeners[0]->use_original_dst);
    rm_snapshot_unref(s);
}

Test(listener_filters, bind_to_port_is_part_of_the_socket_identity)
{
    struct rm_error err = {{0}};
    struct rm_snapshot *a = build_ex("    bind_to_port: false\n", TLS_INSPECTOR "}\n", &err);
    struct rm_snapshot *b = build_ex("", TLS_INSPECTOR "}\n", &err);
    struct rm_snapshot *c = build_ex("    bind_to_port: false\n", ORIGINAL_DST, &err);
    cr_assert(a && b && c, "%s", err.msg);
    cr_assert_not(rm_listener_cfg_same_socket(a->listeners[0], b->listeners[0]));
    cr_assert(rm_listener_cfg_same_socket(a->listeners[0], c->listeners[0]));
    rm_snapshot_unref(a);
    rm_snapshot_unref(b);
    rm_snapshot_unref(c);
}
