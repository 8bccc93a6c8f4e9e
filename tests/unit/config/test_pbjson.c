/* Unit tests for proxy/config/pbjson.c and pbtypes.c: a realistic Envoy bootstrap from YAML and
 * from JSON (camelCase names), every error class with its exact FILE:LINE: PATH text, the
 * well-known types, oneofs, maps, Any, Struct, YAML anchors/merge keys, the registry and the
 * unknown-field check used for xDS input. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"
#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/extensions/filters/http/router/v3/router.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "envoy/extensions/upstreams/http/v3/http_protocol_options.pb-c.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "proxy/config/pbjson.h"
#include "tests/unit/config/fixture_bootstrap.h"

typedef Envoy__Config__Bootstrap__V3__Bootstrap Bootstrap;
typedef Envoy__Config__Cluster__V3__Cluster Cluster;
typedef Envoy__Config__Route__V3__RouteConfiguration RouteConfiguration;
typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager Hcm;
typedef Envoy__Extensions__Upstreams__Http__V3__HttpProtocolOptions UpstreamHttpOptions;

#define BOOTSTRAP (&envoy__config__bootstrap__v3__bootstrap__descriptor)
#define CLUSTER (&envoy__config__cluster__v3__cluster__descriptor)
#define LISTENER (&envoy__config__listener__v3__listener__descriptor)
#define ROUTE_CONFIG (&envoy__config__route__v3__route_configuration__descriptor)
#define HCM                                                                                        \
    (&envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__descriptor)

static ProtobufCMessage *parse_ok(const char *text, const ProtobufCMessageDescriptor *d)
{
    struct rm_error err = {{0}};
    ProtobufCMessage *m = NULL;
    int rc = rm_pbjson_parse_string(text, strlen(text), "t.yaml", d, &m, &err);
    cr_assert_eq(rc, RM_OK, "parse failed: %s", err.msg);
    cr_assert_not_null(m);
    return m;
}

static void expect_error(const char *text, const ProtobufCMessageDescriptor *d, const char *want)
{
    struct rm_error err = {{0}};
    ProtobufCMessage *m = (ProtobufCMessage *)1;
    int rc = rm_pbjson_parse_string(text, strlen(text), "t.yaml", d, &m, &err);
    cr_assert_eq(rc, RM_ERR, "expected failure: %s", want);
    cr_assert_null(m);
    cr_assert_str_eq(err.msg, want);
}

static void free_msg(void *m)
{
    protobuf_c_message_free_unpacked(m, NULL);
}

/* Unpack an Any of the expected type (fails the test otherwise). */
static void *unpack(const Google__Protobuf__Any *any, const ProtobufCMessageDescriptor *d)
{
    struct rm_error err = {{0}};
    ProtobufCMessage *m = NULL;
    cr_assert_not_null(any);
    cr_assert_eq(rm_pb_any_unpack(any, d, &m, &err), RM_OK, "%s", err.msg);
    return m;
}

/* Pack into a malloc'd buffer for byte-for-byte comparisons. */
static uint8_t *pack(const ProtobufCMessage *m, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(*len ? *len : 1);
    protobuf_c_message_pack(m, buf);
    return buf;
}

static void assert_same_message(const ProtobufCMessage *a, const ProtobufCMessage *b)
{
    size_t la, lb;
    uint8_t *pa = pack(a, &la), *pb = pack(b, &lb);
    cr_assert_eq(la, lb, "packed sizes differ: %zu vs %zu", la, lb);
    cr_assert_eq(memcmp(pa, pb, la), 0, "packed bytes differ");
    free(pa);
    free(pb);
}

/* ---- the realistic bootstrap --------------------------------------------------------------- */

static void check_route_config(const RouteConfiguration *rc)
{
    cr_assert_str_eq(rc->name, "local_route");
    cr_assert_eq(rc->n_virtual_hosts, 1);
    Envoy__Config__Route__V3__VirtualHost *vh = rc->virtual_hosts[0];
    cr_assert_eq(vh->n_domains, 1);
    cr_assert_str_eq(vh->domains[0], "*");
    cr_assert_eq(vh->n_routes, 2);
    Envoy__Config__Route__V3__Route *r = vh->routes[0];
    cr_assert_eq(r->match->path_specifier_case,
                 ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PREFIX);
    cr_assert_str_eq(r->match->prefix, "/api");
    cr_assert_str_eq(r->match->headers[0]->name, ":method");
    cr_assert_eq(r->match->headers[0]->header_match_specifier_case,
                 ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_STRING_MATCH);
    cr_assert_str_eq(r->match->headers[0]->string_match->exact, "GET");
    cr_assert_eq(r->action_case, ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_ROUTE);
    Envoy__Config__Route__V3__RouteAction *ra = r->route;
    cr_assert_eq(ra->cluster_specifier_case,
                 ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_CLUSTER);
    cr_assert_str_eq(ra->cluster, "service_a");
    cr_assert_eq(ra->timeout->seconds, 1);
    cr_assert_eq(ra->timeout->nanos, 500000000);
    cr_assert_str_eq(ra->prefix_rewrite, "/");
    Envoy__Config__Route__V3__RetryPolicy *rp = ra->retry_policy;
    cr_assert_str_eq(rp->retry_on, "5xx,connect-failure");
    cr_assert_eq(rp->num_retries->value, 3);
    cr_assert_eq(rp->per_try_timeout->nanos, 500000000);
    cr_assert_eq(rp->n_retriable_status_codes, 2);
    cr_assert_eq(rp->retriable_status_codes[1], 504);
    cr_assert_eq(rp->retry_back_off->base_interval->nanos, 25000000);
    cr_assert_eq(rp->retry_back_off->max_interval->nanos, 250000000);
    cr_assert_eq(rp->n_retry_host_predicate, 1);
    cr_assert_str_eq(rp->retry_host_predicate[0]->name,
                     "envoy.retry_host_predicates.previous_hosts");
    cr_assert_eq(rp->host_selection_retry_max_attempts, 5);
    r = vh->routes[1];
    cr_assert_str_eq(r->match->path, "/health");
    cr_assert_eq(r->direct_response->status, 200);
    cr_assert_eq(r->direct_response->body->specifier_case,
                 ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_STRING);
    cr_assert_str_eq(r->direct_response->body->inline_string, "ok");
}

static void check_listener(const Envoy__Config__Listener__V3__Listener *l)
{
    cr_assert_str_eq(l->name, "ingress");
    cr_assert_eq(l->address->address_case,
                 ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS);
    cr_assert_str_eq(l->address->socket_address->address, "0.0.0.0");
    cr_assert_eq(l->address->socket_address->port_value, 10000);
    cr_assert_eq(l->per_connection_buffer_limit_bytes->value, 32768);
    cr_assert_eq(l->traffic_direction, ENVOY__CONFIG__CORE__V3__TRAFFIC_DIRECTION__INBOUND);
    cr_assert(l->enable_reuse_port->value);
    cr_assert_null(l->use_original_dst, "unset wrapper stays NULL");
    Envoy__Config__Listener__V3__Filter *f = l->filter_chains[0]->filters[0];
    cr_assert_str_eq(f->name, "envoy.filters.network.http_connection_manager");
    Hcm *hcm = unpack(f->typed_config, HCM);
    cr_assert_str_eq(hcm->stat_prefix, "ingress_http");
    cr_assert_eq(hcm->stream_idle_timeout->seconds, 300);
    cr_assert_eq(hcm->request_timeout->nanos, 250000000);
    cr_assert(hcm->use_remote_address->value);
    cr_assert_eq(hcm->xff_num_trusted_hops, 1);
    cr_assert_eq(hcm->http2_protocol_options->max_concurrent_streams->value, 100);
    cr_assert_eq(hcm->http2_protocol_options->initial_stream_window_size->value, 65536);
    cr_assert_eq(
        hcm->route_specifier_case,
        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_ROUTE_CONFIG);
    check_route_config(hcm->route_config);
    cr_assert_eq(hcm->n_http_filters, 1);
    Envoy__Extensions__Filters__Http__Router__V3__Router *router =
        unpack(hcm->http_filters[0]->typed_config,
               &envoy__extensions__filters__http__router__v3__router__descriptor);
    cr_assert(router->suppress_envoy_headers);
    free_msg(router);
    free_msg(hcm);
}

static void check_cluster(const Cluster *c)
{
    cr_assert_str_eq(c->name, "service_a");
    cr_assert_eq(c->cluster_discovery_type_case,
                 ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_TYPE);
    cr_assert_eq(c->type, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__STRICT_DNS);
    cr_assert_eq(c->connect_timeout->seconds, 0);
    cr_assert_eq(c->connect_timeout->nanos, 250000000);
    cr_assert_eq(c->lb_policy, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__LEAST_REQUEST);
    cr_assert_eq(c->dns_lookup_family,
                 ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DNS_LOOKUP_FAMILY__V4_ONLY);
    Envoy__Config__Cluster__V3__CircuitBreakers__Thresholds *t = c->circuit_breakers->thresholds[0];
    cr_assert_eq(t->max_connections->value, 100);
    cr_assert_eq(t->max_pending_requests->value, 50);
    cr_assert_null(t->max_requests);
    cr_assert_float_eq(t->retry_budget->budget_percent->value, 25.5, 1e-9);
    cr_assert_eq(t->retry_budget->min_retry_concurrency->value, 2);
    cr_assert_not_null(c->outlier_detection, "{} makes the message present");
    cr_assert_eq(c->n_typed_extension_protocol_options, 1);
    cr_assert_str_eq(c->typed_extension_protocol_options[0]->key,
                     "envoy.extensions.upstreams.http.v3.HttpProtocolOptions");
    UpstreamHttpOptions *o =
        unpack(c->typed_extension_protocol_options[0]->value,
               &envoy__extensions__upstreams__http__v3__http_protocol_options__descriptor);
    cr_assert_eq(
        o->upstream_protocol_options_case,
        ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__UPSTREAM_PROTOCOL_OPTIONS_EXPLICIT_HTTP_CONFIG);
    cr_assert_eq(
        o->explicit_http_config->protocol_config_case,
        ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__EXPLICIT_HTTP_CONFIG__PROTOCOL_CONFIG_HTTP2_PROTOCOL_OPTIONS);
    cr_assert_not_null(o->explicit_http_config->http2_protocol_options);
    free_msg(o);
    Envoy__Config__Endpoint__V3__ClusterLoadAssignment *la = c->load_assignment;
    cr_assert_str_eq(la->cluster_name, "service_a");
    cr_assert_str_eq(la->endpoints[0]->locality->zone, "a");
    cr_assert_eq(la->endpoints[0]->n_lb_endpoints, 2);
    Envoy__Config__Endpoint__V3__LbEndpoint *e0 = la->endpoints[0]->lb_endpoints[0];
    cr_assert_str_eq(e0->endpoint->address->socket_address->address, "backend.local");
    cr_assert_eq(e0->load_balancing_weight->value, 2);
    cr_assert_eq(la->endpoints[0]->lb_endpoints[1]->health_status,
                 ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__DRAINING);
}

static void check_bootstrap(const Bootstrap *b)
{
    cr_assert_str_eq(b->node->id, "sidecar~10.0.0.1~web-1.default~default.svc.cluster.local");
    cr_assert_str_eq(b->node->cluster, "web");
    cr_assert_eq(b->node->metadata->n_fields, 5);
    cr_assert_str_eq(b->node->locality->zone, "eu-west-1a");
    cr_assert_eq(b->admin->address->socket_address->port_value, 9901);
    cr_assert_eq(b->stats_flush_interval->seconds, 5);
    cr_assert_eq(b->static_resources->n_listeners, 1);
    check_listener(b->static_resources->listeners[0]);
    cr_assert_eq(b->static_resources->n_clusters, 1);
    check_cluster(b->static_resources->clusters[0]);
    Envoy__Config__Bootstrap__V3__Bootstrap__DynamicResources *dr = b->dynamic_resources;
    cr_assert_eq(dr->ads_config->api_type,
                 ENVOY__CONFIG__CORE__V3__API_CONFIG_SOURCE__API_TYPE__GRPC);
    cr_assert_eq(dr->ads_config->transport_api_version, ENVOY__CONFIG__CORE__V3__API_VERSION__V3);
    cr_assert_str_eq(dr->ads_config->grpc_services[0]->envoy_grpc->cluster_name, "xds_cluster");
    cr_assert_eq(dr->cds_config->config_source_specifier_case,
                 ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS);
    cr_assert_not_null(dr->lds_config->ads);
}

Test(pbjson, bootstrap_yaml)
{
    Bootstrap *b = (Bootstrap *)parse_ok(fixture_bootstrap_yaml, BOOTSTRAP);
    check_bootstrap(b);
    struct rm_error err = {{0}};
    cr_assert_eq(rm_pb_check_no_unknown(&b->base, NULL, &err), RM_OK, "%s", err.msg);
    free_msg(b);
}

Test(pbjson, bootstrap_from_file)
{
    char path[] = "/tmp/rm_pbjson_XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    FILE *f = fdopen(fd, "w");
    fputs(fixture_bootstrap_yaml, f);
    fclose(f);
    ProtobufCMessage *m = NULL;
    struct rm_error err = {{0}};
    int rc = rm_pbjson_parse_file(path, BOOTSTRAP, &m, &err);
    unlink(path);
    cr_assert_eq(rc, RM_OK, "%s", err.msg);
    check_bootstrap((Bootstrap *)m);
    free_msg(m);
}

Test(pbjson, missing_file)
{
    ProtobufCMessage *m = NULL;
    struct rm_error err = {{0}};
    cr_assert_eq(rm_pbjson_parse_file("/nonexistent/remora.yaml", BOOTSTRAP, &m, &err), RM_ERR);
    cr_assert_str_eq(err.msg, "/nonexistent/remora.yaml: cannot open: No such file or directory");
}

/* The same cluster in JSON with json_names, strings for numbers and numbers for enums. */
Test(pbjson, json_input_camel_case)
{
    const char *yaml = "name: c\n"
                       "type: EDS\n"
                       "connect_timeout: 2s\n"
                       "eds_cluster_config: {eds_config: {ads: {}}, service_name: svc}\n"
                       "per_connection_buffer_limit_bytes: 1024\n"
                       "lb_policy: RANDOM\n"
                       "common_lb_config: {healthy_panic_threshold: {value: 40}}\n";
    const char *json =
        "{\n"
        "  \"name\": \"c\",\n"
        "  \"type\": 3,\n"
        "  \"connectTimeout\": \"2s\",\n"
        "  \"edsClusterConfig\": {\"edsConfig\": {\"ads\": {}}, \"serviceName\": \"svc\"},\n"
        "  \"perConnectionBufferLimitBytes\": \"1024\",\n"
        "  \"lbPolicy\": \"RANDOM\",\n"
        "  \"commonLbConfig\": {\"healthyPanicThreshold\": {\"value\": 40.0}}\n"
        "}\n";
    ProtobufCMessage *a = parse_ok(yaml, CLUSTER), *b = parse_ok(json, CLUSTER);
    assert_same_message(a, b);
    free_msg(a);
    free_msg(b);
}

/* ---- errors: exact text, path and line ------------------------------------------------------ */

Test(pbjson, error_unknown_enum)
{
    expect_error("static_resources:\n"
                 "  clusters:\n"
                 "  - name: a\n"
                 "    lb_policy: FASTEST\n",
                 BOOTSTRAP,
                 "t.yaml:4: static_resources.clusters[0].lb_policy: unknown enum value \"FASTEST\" "
                 "(expected one of: ROUND_ROBIN, LEAST_REQUEST, RING_HASH, RANDOM, MAGLEV, "
                 "CLUSTER_PROVIDED, LOAD_BALANCING_POLICY_CONFIG)");
    expect_error("lb_policy: 4\n", CLUSTER,
                 "t.yaml:1: lb_policy: unknown enum value \"4\" (expected one of: ROUND_ROBIN, "
                 "LEAST_REQUEST, RING_HASH, RANDOM, MAGLEV, CLUSTER_PROVIDED, "
                 "LOAD_BALANCING_POLICY_CONFIG)");
}

Test(pbjson, error_unknown_field)
{
    expect_error("node:\n  id: x\n  foo: 1\n", BOOTSTRAP, "t.yaml:3: node: unknown field \"foo\"");
    expect_error("\n\nbogus: true\n", BOOTSTRAP, "t.yaml:3: unknown field \"bogus\"");
    /* inside an Any the path continues through typed_config */
    expect_error(
        "filter_chains:\n"
        "- filters:\n"
        "  - name: hcm\n"
        "    typed_config:\n"
        "      \"@type\": "
        "type.googleapis.com/"
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n"
        "      stat_prefix: x\n"
        "      tracing: {}\n",
        LISTENER, "t.yaml:7: filter_chains[0].filters[0].typed_config: unknown field \"tracing\"");
}

Test(pbjson, error_expected_number)
{
    expect_error(
        "admin:\n  address:\n    socket_address: {address: 1.2.3.4, port_value: abc}\n", BOOTSTRAP,
        "t.yaml:3: admin.address.socket_address.port_value: expected a number, got \"abc\"");
    expect_error("port_value: [1]\n", &envoy__config__core__v3__socket_address__descriptor,
                 "t.yaml:1: port_value: expected a number, got a list");
    expect_error("port_value: 1.5\n", &envoy__config__core__v3__socket_address__descriptor,
                 "t.yaml:1: port_value: expected a number, got \"1.5\"");
}

Test(pbjson, error_out_of_range)
{
    const ProtobufCMessageDescriptor *sa = &envoy__config__core__v3__socket_address__descriptor;
    expect_error("port_value: 99999999999\n", sa,
                 "t.yaml:1: port_value: value 99999999999 out of range for uint32");
    expect_error("port_value: -1\n", sa, "t.yaml:1: port_value: value -1 out of range for uint32");
    expect_error("num_retries: 4294967296\n", &envoy__config__route__v3__retry_policy__descriptor,
                 "t.yaml:1: num_retries: value 4294967296 out of range for uint32");
    expect_error("host_selection_retry_max_attempts: \"9223372036854775808\"\n",
                 &envoy__config__route__v3__retry_policy__descriptor,
                 "t.yaml:1: host_selection_retry_max_attempts: value 9223372036854775808 out of "
                 "range for int64");
}

Test(pbjson, error_oneof_twice)
{
    expect_error("cluster: a\nweighted_clusters: {clusters: [{name: b}]}\n",
                 &envoy__config__route__v3__route_action__descriptor,
                 "t.yaml:2: only one of \"cluster\" and \"weighted_clusters\" may be set");
    expect_error("virtual_hosts:\n"
                 "- name: v\n"
                 "  routes:\n"
                 "  - match: {prefix: /, path: /x}\n",
                 ROUTE_CONFIG,
                 "t.yaml:4: virtual_hosts[0].routes[0].match: only one of \"prefix\" and \"path\" "
                 "may be set");
}

Test(pbjson, error_field_twice)
{
    expect_error("name: a\nname: b\n", CLUSTER, "t.yaml:2: field \"name\" given twice");
    expect_error("connect_timeout: 1s\nconnectTimeout: 2s\n", CLUSTER,
                 "t.yaml:2: field \"connect_timeout\" given twice");
    expect_error("filter_metadata: {a: {}, a: {}}\n",
                 &envoy__config__core__v3__metadata__descriptor,
                 "t.yaml:1: filter_metadata[\"a\"]: key given twice");
}

Test(pbjson, error_any)
{
    expect_error("typed_config: {\"@type\": "
                 "type.googleapis.com/envoy.extensions.filters.http.nope.v3.Nope}\n",
                 &envoy__config__listener__v3__filter__descriptor,
                 "t.yaml:1: typed_config: unknown type "
                 "\"type.googleapis.com/envoy.extensions.filters.http.nope.v3.Nope\" in \"@type\"");
    expect_error("typed_config:\n  suppress_envoy_headers: true\n",
                 &envoy__config__listener__v3__filter__descriptor,
                 "t.yaml:2: typed_config: missing \"@type\" (an Any needs its type URL)");
    expect_error("typed_config: 5\n", &envoy__config__listener__v3__filter__descriptor,
                 "t.yaml:1: typed_config: expected a mapping with \"@type\", got \"5\"");
}

Test(pbjson, error_kinds)
{
    expect_error("connect_timeout: 5\n", CLUSTER,
                 "t.yaml:1: connect_timeout: expected a duration such as \"1.5s\", got \"5\"");
    expect_error("connect_timeout: 1.5ms\n", CLUSTER,
                 "t.yaml:1: connect_timeout: expected a duration such as \"1.5s\", got \"1.5ms\"");
    expect_error("name: [a]\n", CLUSTER, "t.yaml:1: name: expected a string, got a list");
    expect_error("domains: a\n", &envoy__config__route__v3__virtual_host__descriptor,
                 "t.yaml:1: domains: expected a list, got \"a\"");
    expect_error("domains: [a, null]\n", &envoy__config__route__v3__virtual_host__descriptor,
                 "t.yaml:1: domains[1]: null is not allowed in a list");
    expect_error("load_assignment: x\n", CLUSTER,
                 "t.yaml:1: load_assignment: expected a mapping, got \"x\"");
    expect_error("respect_dns_ttl: maybe\n", CLUSTER,
                 "t.yaml:1: respect_dns_ttl: expected true or false, got \"maybe\"");
    expect_error("header: {key: k, raw_value: \"@@@\"}\n",
                 &envoy__config__core__v3__header_value_option__descriptor,
                 "t.yaml:1: header.raw_value: expected base64 bytes, got \"@@@\"");
    expect_error("typed_extension_protocol_options: [1]\n", CLUSTER,
                 "t.yaml:1: typed_extension_protocol_options: expected a mapping, got a list");
    expect_error("? [a]\n: 1\n", CLUSTER, "t.yaml:1: mapping keys must be scalars");
}

Test(pbjson, error_documents)
{
    expect_error("", BOOTSTRAP, "t.yaml: empty document");
    expect_error("node: {id: x}\n---\nnode: {id: y}\n", BOOTSTRAP,
                 "t.yaml:3: only one YAML document is allowed");
    expect_error(
        "node:\n  id: [x\n", BOOTSTRAP,
        "t.yaml:3: invalid YAML: did not find expected ',' or ']' while parsing a flow sequence");
    expect_error("- a\n- b\n", BOOTSTRAP, "t.yaml:1: expected a mapping, got a list");
}

Test(pbjson, error_too_deep)
{
    struct rm_strbuf sb = RM_STRBUF_INIT;
    rm_strbuf_puts(&sb, "metadata: {filter_metadata: {x: {a: ");
    for (int i = 0; i < 200; i++)
        rm_strbuf_putc(&sb, '[');
    for (int i = 0; i < 200; i++)
        rm_strbuf_putc(&sb, ']');
    rm_strbuf_puts(&sb, "}}}\n");
    struct rm_error err = {{0}};
    ProtobufCMessage *m = NULL;
    cr_assert_eq(rm_pbjson_parse_string(sb.p, sb.len, "t.yaml", CLUSTER, &m, &err), RM_ERR);
    cr_assert(strstr(err.msg, "nested too deeply"), "%s", err.msg);
    rm_strbuf_dispose(&sb);
}

/* ---- values -------------------------------------------------------------------------------- */

Test(pbjson, durations)
{
    static const struct {
        const char *text;
        int64_t s;
        int32_t ns;
    } cases[] = {
        {"1.5s", 1, 500000000},    {"0.25s", 0, 250000000}, {"5s", 5, 0},
        {"-2.5s", -2, -500000000}, {"0.000000001s", 0, 1},  {"315576000000s", 315576000000, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char yaml[64];
        snprintf(yaml, sizeof(yaml), "connect_timeout: \"%s\"\n", cases[i].text);
        Cluster *c = (Cluster *)parse_ok(yaml, CLUSTER);
        cr_assert_eq(c->connect_timeout->seconds, cases[i].s, "%s", cases[i].text);
        cr_assert_eq(c->connect_timeout->nanos, cases[i].ns, "%s", cases[i].text);
        free_msg(c);
    }
    const char *bad[] = {"s", ".5s", "1.s", "1.0000000001s", "315576000001s", "1 s", "+1s"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t s;
        int32_t ns;
        cr_assert_eq(rm_pb_duration_parse(bad[i], &s, &ns), RM_ERR, "%s", bad[i]);
    }
}

Test(pbjson, wrappers_and_scalars)
{
    Envoy__Config__Cluster__V3__OutlierDetection *od =
        (void *)parse_ok("consecutive_5xx: \"7\"\nmax_ejection_percent: "
                         "1e2\nsplit_external_local_origin_errors: True\n"
                         "successful_active_health_check_uneject_host: false\ninterval: 10s\n",
                         &envoy__config__cluster__v3__outlier_detection__descriptor);
    cr_assert_eq(od->consecutive_5xx->value, 7);
    cr_assert_eq(od->max_ejection_percent->value, 100);
    cr_assert(od->split_external_local_origin_errors);
    cr_assert_not_null(od->successful_active_health_check_uneject_host, "false is still present");
    cr_assert_not(od->successful_active_health_check_uneject_host->value);
    cr_assert_null(od->base_ejection_time);
    free_msg(od);
    /* consecutive5xx: the json_name of consecutive_5xx */
    od = (void *)parse_ok("{\"consecutive5xx\": 3}",
                          &envoy__config__cluster__v3__outlier_detection__descriptor);
    cr_assert_eq(od->consecutive_5xx->value, 3);
    free_msg(od);
    Envoy__Config__Cluster__V3__CircuitBreakers__Thresholds__RetryBudget *rb = (void *)parse_ok(
        "budget_percent: {value: \"12.5\"}\n",
        &envoy__config__cluster__v3__circuit_breakers__thresholds__retry_budget__descriptor);
    cr_assert_float_eq(rb->budget_percent->value, 12.5, 1e-12);
    free_msg(rb);
    Google__Protobuf__DoubleValue *dv =
        (void *)parse_ok("-Infinity", &google__protobuf__double_value__descriptor);
    cr_assert(isinf(dv->value) && dv->value < 0);
    free_msg(dv);
}

Test(pbjson, null_means_unset)
{
    Cluster *c = (Cluster *)parse_ok(
        "name: x\nconnect_timeout: null\nload_assignment: ~\nlb_policy:\n", CLUSTER);
    cr_assert_null(c->connect_timeout);
    cr_assert_null(c->load_assignment);
    cr_assert_eq(c->lb_policy, 0);
    cr_assert_eq(c->cluster_discovery_type_case, 0);
    free_msg(c);
}

Test(pbjson, enums_by_number_and_bytes)
{
    Cluster *c = (Cluster *)parse_ok("type: 2\nlb_policy: \"1\"\n", CLUSTER);
    cr_assert_eq(c->type, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__LOGICAL_DNS);
    cr_assert_eq(c->lb_policy, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__LEAST_REQUEST);
    free_msg(c);
    Envoy__Config__Core__V3__HeaderValue *hv = (void *)parse_ok(
        "key: k\nraw_value: aGVsbG8_\n", &envoy__config__core__v3__header_value__descriptor);
    cr_assert_eq(hv->raw_value.len, 6);
    cr_assert_eq(memcmp(hv->raw_value.data, "hello?", 6), 0);
    free_msg(hv);
}

Test(pbjson, map_and_struct)
{
    Envoy__Config__Core__V3__Metadata *md =
        (void *)parse_ok("filter_metadata:\n"
                         "  envoy.lb: {canary: true, weight: 1.5, tags: [x, 2, null], nested: "
                         "{deep: \"007\"}, none: null}\n"
                         "  other: {}\n",
                         &envoy__config__core__v3__metadata__descriptor);
    cr_assert_eq(md->n_filter_metadata, 2);
    cr_assert_str_eq(md->filter_metadata[0]->key, "envoy.lb");
    Google__Protobuf__Struct *s = md->filter_metadata[0]->value;
    cr_assert_eq(s->n_fields, 5);
    cr_assert_str_eq(s->fields[0]->key, "canary");
    cr_assert_eq(s->fields[0]->value->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE);
    cr_assert_eq(s->fields[1]->value->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE);
    cr_assert_float_eq(s->fields[1]->value->number_value, 1.5, 1e-12);
    Google__Protobuf__ListValue *l = s->fields[2]->value->list_value;
    cr_assert_eq(l->n_values, 3);
    cr_assert_str_eq(l->values[0]->string_value, "x");
    cr_assert_float_eq(l->values[1]->number_value, 2, 1e-12);
    cr_assert_eq(l->values[2]->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE);
    Google__Protobuf__Struct *nested = s->fields[3]->value->struct_value;
    cr_assert_eq(nested->fields[0]->value->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE,
                 "a quoted number stays a string");
    cr_assert_str_eq(nested->fields[0]->value->string_value, "007");
    cr_assert_eq(s->fields[4]->value->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE);
    cr_assert_eq(md->filter_metadata[1]->value->n_fields, 0);
    free_msg(md);
}

Test(pbjson, any_with_wkt_payload)
{
    Envoy__Config__Core__V3__Metadata *md = (void *)parse_ok(
        "typed_filter_metadata:\n"
        "  a: {\"@type\": type.googleapis.com/google.protobuf.Duration, value: 1.5s}\n"
        "  b: {\"@type\": type.googleapis.com/google.protobuf.Struct, value: {k: v}}\n"
        "  c: {\"@type\": type.googleapis.com/google.protobuf.UInt32Value, value: 9}\n",
        &envoy__config__core__v3__metadata__descriptor);
    cr_assert_eq(md->n_typed_filter_metadata, 3);
    Google__Protobuf__Duration *d =
        unpack(md->typed_filter_metadata[0]->value, &google__protobuf__duration__descriptor);
    cr_assert_eq(d->seconds, 1);
    cr_assert_eq(d->nanos, 500000000);
    free_msg(d);
    Google__Protobuf__Struct *s =
        unpack(md->typed_filter_metadata[1]->value, &google__protobuf__struct__descriptor);
    cr_assert_str_eq(s->fields[0]->value->string_value, "v");
    free_msg(s);
    Google__Protobuf__UInt32Value *u =
        unpack(md->typed_filter_metadata[2]->value, &google__protobuf__uint32_value__descriptor);
    cr_assert_eq(u->value, 9);
    free_msg(u);
    free_msg(md);
    expect_error("typed_filter_metadata: {a: {\"@type\": "
                 "type.googleapis.com/google.protobuf.Duration, seconds: 1}}\n",
                 &envoy__config__core__v3__metadata__descriptor,
                 "t.yaml:1: typed_filter_metadata[\"a\"]: unknown field \"seconds\"");
}

Test(pbjson, timestamp)
{
    Google__Protobuf__Timestamp *t = (void *)parse_ok("\"2024-01-02T03:04:05.25+01:00\"",
                                                      &google__protobuf__timestamp__descriptor);
    cr_assert_eq(t->seconds, 1704161045); /* 2024-01-02T02:04:05.25Z */
    cr_assert_eq(t->nanos, 250000000);
    free_msg(t);
    expect_error("2024-13-01T00:00:00Z", &google__protobuf__timestamp__descriptor,
                 "t.yaml:1: expected an RFC 3339 time such as \"2024-01-02T03:04:05Z\", got "
                 "\"2024-13-01T00:00:00Z\"");
}

Test(pbjson, anchors_aliases_merge_keys)
{
    const char *yaml = "static_resources:\n"
                       "  clusters:\n"
                       "  - &base\n"
                       "    name: a\n"
                       "    connect_timeout: 1s\n"
                       "    lb_policy: RANDOM\n"
                       "  - <<: *base\n"
                       "    name: b\n"
                       "  - <<: [{name: c, type: EDS}, *base]\n";
    Bootstrap *b = (Bootstrap *)parse_ok(yaml, BOOTSTRAP);
    Cluster **c = b->static_resources->clusters;
    cr_assert_eq(b->static_resources->n_clusters, 3);
    cr_assert_str_eq(c[1]->name, "b", "explicit keys win over merged ones");
    cr_assert_eq(c[1]->connect_timeout->seconds, 1);
    cr_assert_eq(c[1]->lb_policy, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__RANDOM);
    cr_assert_str_eq(c[2]->name, "c", "earlier merge sources win");
    cr_assert_eq(c[2]->type, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__EDS);
    cr_assert_eq(c[2]->lb_policy, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__RANDOM);
    free_msg(b);
}

Test(pbjson, alias_bomb_is_bounded)
{
    /* 10^8 nodes once expanded; must fail (budget), not hang or exhaust memory */
    const char *yaml = "metadata:\n"
                       "  filter_metadata:\n"
                       "    x:\n"
                       "      a: &a [1,1,1,1,1,1,1,1,1,1]\n"
                       "      b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
                       "      c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
                       "      d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
                       "      e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
                       "      f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
                       "      g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
                       "      h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g,*g]\n";
    struct rm_error err = {{0}};
    ProtobufCMessage *m = NULL;
    cr_assert_eq(rm_pbjson_parse_string(yaml, strlen(yaml), "t.yaml", CLUSTER, &m, &err), RM_ERR);
    cr_assert(strstr(err.msg, "document too large"), "%s", err.msg);
}

/* ---- registry and unknown fields ---------------------------------------------------------- */

Test(pbjson, registry_lookup)
{
    cr_assert_eq(rm_pb_lookup_type_url("type.googleapis.com/envoy.config.cluster.v3.Cluster"),
                 CLUSTER);
    cr_assert_eq(rm_pb_lookup_type_url("envoy.config.cluster.v3.Cluster"), CLUSTER);
    cr_assert_eq(rm_pb_lookup_type_url("example.com/x/google.protobuf.Duration"),
                 &google__protobuf__duration__descriptor);
    cr_assert_null(rm_pb_lookup_type_url("type.googleapis.com/envoy.config.cluster.v3.Nope"));
    cr_assert_null(rm_pb_lookup_type_url(NULL));
    cr_assert_eq(rm_pb_lookup_type_url("google.rpc.Status"), &google__rpc__status__descriptor);
}

Test(pbjson, any_unpack_errors)
{
    Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
    struct rm_error err = {{0}};
    ProtobufCMessage *m = (ProtobufCMessage *)1;
    any.type_url = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    cr_assert_eq(rm_pb_any_unpack(&any, LISTENER, &m, &err), RM_ERR);
    cr_assert_null(m);
    cr_assert_str_eq(err.msg,
                     "expected type \"type.googleapis.com/envoy.config.listener.v3.Listener\", "
                     "got \"type.googleapis.com/envoy.config.cluster.v3.Cluster\"");
    uint8_t junk[] = {0x0a, 0x05, 'a'}; /* a string field claiming 5 bytes, with 1 */
    any.value.data = junk;
    any.value.len = sizeof(junk);
    cr_assert_eq(rm_pb_any_unpack(&any, CLUSTER, &m, &err), RM_ERR);
    cr_assert_str_eq(err.msg,
                     "cannot decode a \"type.googleapis.com/envoy.config.cluster.v3.Cluster\"");
    any.type_url = "type.googleapis.com/x.Y";
    cr_assert_eq(rm_pb_any_unpack(&any, NULL, &m, &err), RM_ERR);
    cr_assert_str_eq(err.msg, "unknown type \"type.googleapis.com/x.Y\"");
}

/* Pack <m>, append field #<tag> (varint 1), unpack as <d>: a message with an unknown field. */
static ProtobufCMessage *with_unknown(const ProtobufCMessage *m, uint32_t tag)
{
    size_t len;
    uint8_t *buf = pack(m, &len);
    buf = realloc(buf, len + 4);
    buf[len++] = (uint8_t)(0x80 | ((tag << 3) & 0x7f));
    buf[len++] = (uint8_t)(tag >> 4);
    buf[len++] = 1;
    ProtobufCMessage *out = protobuf_c_message_unpack(m->descriptor, NULL, len, buf);
    free(buf);
    cr_assert_not_null(out);
    return out;
}

/* Replace the payload of <any> by <m> with an unknown field #tag. */
static void poison_any(Google__Protobuf__Any *any, const ProtobufCMessageDescriptor *d,
                       uint32_t tag)
{
    ProtobufCMessage *inner = unpack(any, d), *bad = with_unknown(inner, tag);
    free(any->type_url);
    free(any->value.data);
    rm_pb_any_pack(bad, any);
    free_msg(inner);
    free_msg(bad);
}

Test(pbjson, check_no_unknown)
{
    Bootstrap *b = (Bootstrap *)parse_ok(fixture_bootstrap_yaml, BOOTSTRAP);
    struct rm_error err = {{0}};
    /* deep inside an Any inside an Any-free path: the HCM of the first filter */
    Envoy__Config__Listener__V3__Filter *f =
        b->static_resources->listeners[0]->filter_chains[0]->filters[0];
    poison_any(f->typed_config, HCM, 31);
    cr_assert_eq(rm_pb_check_no_unknown(&b->base, "bootstrap", &err), RM_ERR);
    cr_assert_str_eq(err.msg, "bootstrap.static_resources.listeners[0].filter_chains[0].filters[0]"
                              ".typed_config: unsupported field #31 of envoy.extensions.filters."
                              "network.http_connection_manager.v3.HttpConnectionManager");
    free_msg(b);

    /* in a map value, named by its key, and at the root without a path */
    b = (Bootstrap *)parse_ok(fixture_bootstrap_yaml, BOOTSTRAP);
    Cluster *c = b->static_resources->clusters[0];
    poison_any(c->typed_extension_protocol_options[0]->value,
               &envoy__extensions__upstreams__http__v3__http_protocol_options__descriptor, 1000);
    cr_assert_eq(rm_pb_check_no_unknown(&c->base, NULL, &err), RM_ERR);
    cr_assert_str_eq(err.msg,
                     "typed_extension_protocol_options[\"envoy.extensions.upstreams.http.v3."
                     "HttpProtocolOptions\"]: unsupported field #1000 of envoy.extensions."
                     "upstreams.http.v3.HttpProtocolOptions");
    ProtobufCMessage *bad = with_unknown(&c->base, 57);
    cr_assert_eq(rm_pb_check_no_unknown(bad, "", &err), RM_ERR);
    cr_assert_str_eq(err.msg, "unsupported field #57 of envoy.config.cluster.v3.Cluster");
    free_msg(bad);
    free_msg(b);
}

/* An xDS response with Any resources, as a control plane would send it (here from YAML). */
Test(pbjson, discovery_response)
{
    Envoy__Service__Discovery__V3__DiscoveryResponse *r = (void *)parse_ok(
        "version_info: \"7\"\n"
        "type_url: type.googleapis.com/envoy.config.cluster.v3.Cluster\n"
        "nonce: n1\n"
        "resources:\n"
        "- {\"@type\": type.googleapis.com/envoy.config.cluster.v3.Cluster, name: a, type: EDS,\n"
        "   eds_cluster_config: {eds_config: {ads: {}, resource_api_version: V3}}}\n"
        "- {\"@type\": type.googleapis.com/envoy.config.cluster.v3.Cluster, name: b}\n",
        &envoy__service__discovery__v3__discovery_response__descriptor);
    cr_assert_eq(r->n_resources, 2);
    Cluster *c = unpack(r->resources[0], CLUSTER);
    cr_assert_str_eq(c->name, "a");
    cr_assert_eq(c->type, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__EDS);
    free_msg(c);
    struct rm_error err = {{0}};
    cr_assert_eq(rm_pb_check_no_unknown(&r->base, NULL, &err), RM_OK, "%s", err.msg);
    free_msg(r);
}
