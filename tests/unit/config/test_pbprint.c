/* Unit tests for proxy/config/pbprint.c: exact proto3 JSON text (names, WKTs, Any, maps,
 * escapes, numbers), round trips of a realistic bootstrap through JSON in every flag
 * combination, redaction of secrets, and the nesting limit. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"
#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/core/v3/base.pb-c.h"
#include "envoy/config/listener/v3/listener_components.pb-c.h"
#include "envoy/config/route/v3/route_components.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "proxy/config/pbjson.h"
#include "proxy/config/pbprint.h"
#include "tests/unit/config/fixture_bootstrap.h"

#define BOOTSTRAP (&envoy__config__bootstrap__v3__bootstrap__descriptor)
#define CLUSTER (&envoy__config__cluster__v3__cluster__descriptor)

static ProtobufCMessage *parse(const char *text, const ProtobufCMessageDescriptor *d)
{
    struct rm_error err = {{0}};
    ProtobufCMessage *m = NULL;
    cr_assert_eq(rm_pbjson_parse_string(text, strlen(text), "t.yaml", d, &m, &err), RM_OK, "%s",
                 err.msg);
    return m;
}

/* Print <m> with <flags>; the caller frees the result. */
static char *print(const ProtobufCMessage *m, unsigned flags)
{
    struct rm_strbuf sb = RM_STRBUF_INIT;
    cr_assert_eq(rm_pbprint_json(m, flags, &sb), RM_OK);
    return rm_strbuf_steal(&sb);
}

/* Parse <yaml> as <d>, print with <flags>, compare with <want>. */
static void expect_json(const char *yaml, const ProtobufCMessageDescriptor *d, unsigned flags,
                        const char *want)
{
    ProtobufCMessage *m = parse(yaml, d);
    char *got = print(m, flags);
    cr_assert_str_eq(got, want);
    free(got);
    protobuf_c_message_free_unpacked(m, NULL);
}

static void assert_same_message(const ProtobufCMessage *a, const ProtobufCMessage *b)
{
    size_t la = protobuf_c_message_get_packed_size(a), lb = protobuf_c_message_get_packed_size(b);
    cr_assert_eq(la, lb, "packed sizes differ: %zu vs %zu", la, lb);
    uint8_t *pa = malloc(la + 1), *pb = malloc(lb + 1);
    protobuf_c_message_pack(a, pa);
    protobuf_c_message_pack(b, pb);
    cr_assert_eq(memcmp(pa, pb, la), 0, "packed bytes differ");
    free(pa);
    free(pb);
}

Test(pbprint, bootstrap_round_trips)
{
    static const unsigned flag_sets[] = {0, RM_PBPRINT_JSON_NAMES, RM_PBPRINT_PRETTY,
                                         RM_PBPRINT_JSON_NAMES | RM_PBPRINT_PRETTY};
    ProtobufCMessage *m = parse(fixture_bootstrap_yaml, BOOTSTRAP);
    for (size_t i = 0; i < sizeof(flag_sets) / sizeof(flag_sets[0]); i++) {
        char *json = print(m, flag_sets[i]);
        ProtobufCMessage *back = parse(json, BOOTSTRAP);
        assert_same_message(m, back);
        char *again = print(back, flag_sets[i]);
        cr_assert_str_eq(again, json, "printing is stable");
        free(again);
        free(json);
        protobuf_c_message_free_unpacked(back, NULL);
    }
    protobuf_c_message_free_unpacked(m, NULL);
}

Test(pbprint, cluster_exact)
{
    const char *yaml = "name: c\n"
                       "type: STATIC\n"
                       "connect_timeout: 1.5s\n"
                       "lb_policy: LEAST_REQUEST\n"
                       "circuit_breakers: {thresholds: [{max_connections: 7, max_retries: 0}]}\n"
                       "dns_refresh_rate: 0.25s\n"
                       "cleanup_interval: 5s\n"
                       "respect_dns_ttl: false\n"
                       "metadata: {filter_metadata: {m: {a: 1, b: [true, null, x], c: 0.1}}}\n";
    expect_json(yaml, CLUSTER, 0,
                "{\"name\":\"c\",\"type\":\"STATIC\",\"connect_timeout\":\"1.500s\","
                "\"lb_policy\":\"LEAST_REQUEST\",\"circuit_breakers\":{\"thresholds\":"
                "[{\"max_connections\":7,\"max_retries\":0}]},\"dns_refresh_rate\":\"0.250s\","
                "\"cleanup_interval\":\"5s\",\"metadata\":{\"filter_metadata\":{\"m\":{\"a\":1,"
                "\"b\":[true,null,\"x\"],\"c\":0.1}}}}");
    expect_json(yaml, CLUSTER, RM_PBPRINT_JSON_NAMES,
                "{\"name\":\"c\",\"type\":\"STATIC\",\"connectTimeout\":\"1.500s\","
                "\"lbPolicy\":\"LEAST_REQUEST\",\"circuitBreakers\":{\"thresholds\":"
                "[{\"maxConnections\":7,\"maxRetries\":0}]},\"dnsRefreshRate\":\"0.250s\","
                "\"cleanupInterval\":\"5s\",\"metadata\":{\"filterMetadata\":{\"m\":{\"a\":1,"
                "\"b\":[true,null,\"x\"],\"c\":0.1}}}}");
}

Test(pbprint, pretty)
{
    expect_json("name: c\ncircuit_breakers: {thresholds: [{}, {max_connections: 1}]}\n"
                "load_assignment: {}\n",
                CLUSTER, RM_PBPRINT_PRETTY,
                "{\n"
                "  \"name\": \"c\",\n"
                "  \"circuit_breakers\": {\n"
                "    \"thresholds\": [\n"
                "      {},\n"
                "      {\n"
                "        \"max_connections\": 1\n"
                "      }\n"
                "    ]\n"
                "  },\n"
                "  \"load_assignment\": {}\n"
                "}");
}

Test(pbprint, any_payloads)
{
    expect_json(
        "name: r\ntyped_config:\n"
        "  \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n"
        "  suppress_envoy_headers: true\n"
        "  strict_check_headers: [x-envoy-max-retries]\n",
        &envoy__config__listener__v3__filter__descriptor, 0,
        "{\"name\":\"r\",\"typed_config\":{\"@type\":\"type.googleapis.com/envoy.extensions."
        "filters.http.router.v3.Router\",\"suppress_envoy_headers\":true,"
        "\"strict_check_headers\":[\"x-envoy-max-retries\"]}}");
    expect_json(
        "typed_filter_metadata:\n"
        "  d: {\"@type\": type.googleapis.com/google.protobuf.Duration, value: -2.5s}\n"
        "  e: {\"@type\": type.googleapis.com/envoy.config.core.v3.Locality}\n",
        &envoy__config__core__v3__metadata__descriptor, 0,
        "{\"typed_filter_metadata\":{\"d\":{\"@type\":\"type.googleapis.com/google.protobuf."
        "Duration\",\"value\":\"-2.500s\"},\"e\":{\"@type\":\"type.googleapis.com/envoy."
        "config.core.v3.Locality\"}}}");

    /* a payload of a type remora does not know: raw bytes in "value" */
    uint8_t raw[] = {1, 2};
    Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
    any.type_url = "type.googleapis.com/x.Y";
    any.value.data = raw;
    any.value.len = 2;
    char *got = print(&any.base, 0);
    cr_assert_str_eq(got, "{\"@type\":\"type.googleapis.com/x.Y\",\"value\":\"AQI=\"}");
    free(got);
}

Test(pbprint, scalars)
{
    Envoy__Config__Core__V3__HeaderValue hv = ENVOY__CONFIG__CORE__V3__HEADER_VALUE__INIT;
    hv.key = "a\"b\\c\n\x01/é";
    hv.raw_value.data = (uint8_t *)"hello?";
    hv.raw_value.len = 6;
    char *got = print(&hv.base, 0);
    cr_assert_str_eq(got, "{\"key\":\"a\\\"b\\\\c\\n\\u0001/é\",\"raw_value\":\"aGVsbG8/\"}");
    free(got);

    Envoy__Config__Cluster__V3__Cluster c = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__INIT;
    c.lb_policy = 42; /* not a defined value: printed as its number */
    got = print(&c.base, 0);
    cr_assert_str_eq(got, "{\"lb_policy\":42}");
    free(got);

    Google__Protobuf__UInt64Value u64 = GOOGLE__PROTOBUF__UINT64_VALUE__INIT;
    u64.value = UINT64_MAX;
    got = print(&u64.base, 0);
    cr_assert_str_eq(got, "\"18446744073709551615\"");
    free(got);

    Google__Protobuf__DoubleValue dv = GOOGLE__PROTOBUF__DOUBLE_VALUE__INIT;
    static const struct {
        double v;
        const char *want;
    } doubles[] = {{0.1, "0.1"},
                   {25.5, "25.5"},
                   {1e21, "1e+21"},
                   {-3, "-3"},
                   {NAN, "\"NaN\""},
                   {-INFINITY, "\"-Infinity\""},
                   {1.0 / 3, "0.3333333333333333"}};
    for (size_t i = 0; i < sizeof(doubles) / sizeof(doubles[0]); i++) {
        dv.value = doubles[i].v;
        got = print(&dv.base, 0);
        cr_assert_str_eq(got, doubles[i].want);
        free(got);
    }

    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    ts.seconds = 1704161045;
    ts.nanos = 250000000;
    got = print(&ts.base, 0);
    cr_assert_str_eq(got, "\"2024-01-02T02:04:05.250Z\"");
    free(got);

    expect_json("max_ejection_time: 0.000000001s\nbase_ejection_time: 0.000001s\ninterval: 0s\n",
                &envoy__config__cluster__v3__outlier_detection__descriptor, 0,
                "{\"interval\":\"0s\",\"base_ejection_time\":\"0.000001s\","
                "\"max_ejection_time\":\"0.000000001s\"}");
    expect_json("host_selection_retry_max_attempts: 5\n",
                &envoy__config__route__v3__retry_policy__descriptor, 0,
                "{\"host_selection_retry_max_attempts\":\"5\"}");
}

Test(pbprint, defaults_are_omitted_but_oneofs_kept)
{
    expect_json("address: \"\"\nport_value: 0\nprotocol: TCP\nipv4_compat: false\n",
                &envoy__config__core__v3__socket_address__descriptor, 0, "{\"port_value\":0}");
}

static const char secret_yaml[] =
    "name: server\n"
    "tls_certificate:\n"
    "  certificate_chain: {filename: /etc/tls/cert.pem}\n"
    "  private_key: {inline_string: \"-----BEGIN PRIVATE KEY-----\"}\n"
    "  password: {inline_bytes: aGk=}\n";

Test(pbprint, redaction)
{
    expect_json(secret_yaml, &envoy__extensions__transport_sockets__tls__v3__secret__descriptor,
                RM_PBPRINT_REDACT,
                "{\"name\":\"server\",\"tls_certificate\":{\"certificate_chain\":{\"filename\":"
                "\"/etc/tls/cert.pem\"},\"private_key\":{\"inline_string\":\"[redacted]\"},"
                "\"password\":{\"inline_bytes\":\"W3JlZGFjdGVkXQ==\"}}}");
    expect_json(secret_yaml, &envoy__extensions__transport_sockets__tls__v3__secret__descriptor, 0,
                "{\"name\":\"server\",\"tls_certificate\":{\"certificate_chain\":{\"filename\":"
                "\"/etc/tls/cert.pem\"},\"private_key\":{\"inline_string\":\"-----BEGIN PRIVATE "
                "KEY-----\"},\"password\":{\"inline_bytes\":\"aGk=\"}}}");
    /* through an Any (a listener's transport socket) */
    expect_json(
        "name: envoy.transport_sockets.tls\n"
        "typed_config:\n"
        "  \"@type\": "
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n"
        "  common_tls_context:\n"
        "    tls_certificates:\n"
        "    - private_key: {filename: /etc/tls/key.pem}\n",
        &envoy__config__core__v3__transport_socket__descriptor,
        RM_PBPRINT_REDACT | RM_PBPRINT_JSON_NAMES,
        "{\"name\":\"envoy.transport_sockets.tls\",\"typedConfig\":{\"@type\":"
        "\"type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
        "DownstreamTlsContext\",\"commonTlsContext\":{\"tlsCertificates\":[{\"privateKey\":"
        "{\"filename\":\"[redacted]\"}}]}}}");
}

Test(pbprint, too_deep)
{
    /* Value -> ListValue -> Value ... 120 messages deep */
    Google__Protobuf__Value *root = malloc(sizeof(*root)), *v = root;
    google__protobuf__value__init(root);
    for (int i = 0; i < 60; i++) {
        Google__Protobuf__ListValue *l = malloc(sizeof(*l));
        google__protobuf__list_value__init(l);
        l->values = malloc(sizeof(*l->values));
        l->values[0] = malloc(sizeof(**l->values));
        google__protobuf__value__init(l->values[0]);
        l->n_values = 1;
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE;
        v->list_value = l;
        v = l->values[0];
    }
    struct rm_strbuf sb = RM_STRBUF_INIT;
    cr_assert_eq(rm_pbprint_json(&root->base, 0, &sb), RM_ERR);
    rm_strbuf_dispose(&sb);
    protobuf_c_message_free_unpacked(&root->base, NULL);
}
