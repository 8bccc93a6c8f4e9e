/* The bootstrap's static_resources.secrets: a name -> Secret table the snapshot owns (shared by
 * the snapshots derived from it), every bad secret rejected with its path, and the table handed
 * to the TLS contexts of static clusters and listeners and of listeners arriving over LDS. */
#include <criterion/criterion.h>
#include <string.h>

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "proxy/admin/stats.h"
#include "proxy/config/pbjson.h"
#include "proxy/config/snapshot.h"
#include "proxy/core/error.h"
#include "proxy/net/secrets.h"
#include "proxy/net/tls.h"

static void fini(void)
{
    rm_stats_free_all();
}

TestSuite(secrets, .fini = fini);

/* rm_snapshot_from_bootstrap of <yaml>: the snapshot, or NULL with <err>. */
static struct rm_snapshot *from_yaml(const char *yaml, struct rm_error *err)
{
    ProtobufCMessage *m = NULL;
    int rc = rm_pbjson_parse_string(yaml, strlen(yaml), "t.yaml",
                                    &envoy__config__bootstrap__v3__bootstrap__descriptor, &m, err);
    cr_assert_eq(rc, RM_OK, "parse: %s", err->msg);
    return rm_snapshot_from_bootstrap((Envoy__Config__Bootstrap__V3__Bootstrap *)m, err);
}

static void expect_error(const char *yaml, const char *want)
{
    struct rm_error err = {{0}};
    struct rm_snapshot *s = from_yaml(yaml, &err);
    cr_assert_null(s, "expected: %s", want);
    cr_assert(strstr(err.msg, want), "got \"%s\", expected \"%s\"", err.msg, want);
}

#define SECRETS                                                                                    \
    "static_resources:\n"                                                                          \
    "  secrets:\n"                                                                                 \
    "  - name: cert\n"                                                                             \
    "    tls_certificate: { certificate_chain: { inline_string: x } }\n"                           \
    "  - name: ca\n"                                                                               \
    "    validation_context: { trusted_ca: { inline_string: y } }\n"

Test(secrets, the_snapshot_owns_a_table_by_name)
{
    struct rm_error err = {{0}};
    struct rm_snapshot *s = from_yaml(SECRETS, &err);
    cr_assert_not_null(s, "%s", err.msg);
    const Envoy__Extensions__TransportSockets__Tls__V3__Secret *ca =
        rm_secrets_find(s->secrets, "ca");
    cr_assert_not_null(ca);
    cr_assert_str_eq(ca->name, "ca");
    cr_assert_not_null(ca->validation_context);
    cr_assert_not_null(rm_secrets_find(s->secrets, "cert"));
    cr_assert_null(rm_secrets_find(s->secrets, "nope"));
    cr_assert_str_eq(rm_secrets_path(s->secrets, "ca"), "static_resources.secrets[1]");
    /* the next snapshot (xDS updates) shares the bootstrap's table */
    struct rm_snapshot_dyn dyn = {0};
    struct rm_snapshot *n = rm_snapshot_next(s, &dyn, &err);
    cr_assert_not_null(n, "%s", err.msg);
    cr_assert_eq(n->secrets, s->secrets);
    rm_snapshot_unref(s);
    cr_assert_not_null(rm_secrets_find(n->secrets, "cert"), "the table outlives the base");
    rm_snapshot_unref(n);
    /* no secrets: no table */
    s = from_yaml("static_resources: {}\n", &err);
    cr_assert_not_null(s, "%s", err.msg);
    cr_assert_null(s->secrets);
    cr_assert_null(rm_secrets_find(s->secrets, "ca"));
    rm_snapshot_unref(s);
}

Test(secrets, bad_secrets_are_rejected_with_their_path)
{
    expect_error(SECRETS "  - name: ca\n"
                         "    validation_context: { trusted_ca: { inline_string: z } }\n",
                 "static_resources.secrets[2].name: duplicate \"ca\"");
    expect_error(SECRETS "  - validation_context: { trusted_ca: { inline_string: z } }\n",
                 "static_resources.secrets[2].name: a secret needs a name");
    expect_error(SECRETS "  - name: \"\"\n"
                         "    validation_context: { trusted_ca: { inline_string: z } }\n",
                 "static_resources.secrets[2].name: a secret needs a name");
    expect_error(SECRETS "  - name: empty\n",
                 "static_resources.secrets[2]: a secret needs tls_certificate or "
                 "validation_context (\"empty\")");
    expect_error(SECRETS "  - name: stk\n"
                         "    session_ticket_keys: { keys: [{ inline_string: k }] }\n",
                 "static_resources.secrets[2].session_ticket_keys: not supported by remora yet");
    expect_error(SECRETS "  - name: g\n"
                         "    generic_secret: { secret: { inline_string: g } }\n",
                 "static_resources.secrets[2].generic_secret: not supported by remora");
}

#define UP_CA_BY_NAME(name)                                                                        \
    "    transport_socket:\n"                                                                      \
    "      name: envoy.transport_sockets.tls\n"                                                    \
    "      typed_config:\n"                                                                        \
    "        \"@type\": type.googleapis.com/"                                                      \
    "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n"                               \
    "        common_tls_context:\n"                                                                \
    "          validation_context_sds_secret_config: { name: " name " }\n"

/* The table reaches the contexts: a reference of the wrong kind is reported with the
 * reference's path and the secret's (the table was there to look in). */
Test(secrets, static_clusters_and_listeners_resolve_in_the_table)
{
    expect_error(SECRETS "  clusters:\n"
                         "  - name: b\n"
                         "    load_assignment: { cluster_name: b }\n" UP_CA_BY_NAME("cert"),
                 "static_resources.clusters[0].transport_socket.typed_config.common_tls_context."
                 "validation_context_sds_secret_config.name: secret \"cert\" "
                 "(static_resources.secrets[0]) is not a validation_context secret");
    expect_error(SECRETS "  clusters:\n"
                         "  - name: b\n"
                         "    load_assignment: { cluster_name: b }\n" UP_CA_BY_NAME("other"),
                 "validation_context_sds_secret_config.name: no secret \"other\"");
}

static const char listener_yaml[] =
    "name: l1\n"
    "address: {socket_address: {address: 127.0.0.1, port_value: 10000}}\n"
    "filter_chains:\n"
    "- filters:\n"
    "  - name: envoy.filters.network.http_connection_manager\n"
    "    typed_config:\n"
    "      \"@type\": type.googleapis.com/"
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n"
    "      stat_prefix: ing\n"
    "      route_config: { virtual_hosts: [{ name: a, domains: [\"*\"] }] }\n"
    "      http_filters:\n"
    "      - name: envoy.filters.http.router\n"
    "        typed_config:\n"
    "          \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n"
    "  transport_socket:\n"
    "    name: envoy.transport_sockets.tls\n"
    "    typed_config:\n"
    "      \"@type\": type.googleapis.com/"
    "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n"
    "      common_tls_context:\n"
    "        tls_certificate_sds_secret_configs: [{ name: ca }]\n";

static void *resolve_none(void *ctx, const char *name)
{
    (void)ctx;
    (void)name;
    return NULL;
}

/* A listener over LDS resolves in the bootstrap's table (rm_snapshot_check_listener). */
Test(secrets, lds_listeners_resolve_in_the_bootstrap_table)
{
    struct rm_error err = {{0}};
    struct rm_snapshot *s = from_yaml(SECRETS, &err);
    cr_assert_not_null(s, "%s", err.msg);
    ProtobufCMessage *m = NULL;
    cr_assert_eq(rm_pbjson_parse_string(listener_yaml, strlen(listener_yaml), "l.yaml",
                                        &envoy__config__listener__v3__listener__descriptor, &m,
                                        &err),
                 RM_OK, "%s", err.msg);
    int rc =
        rm_snapshot_check_listener((const Envoy__Config__Listener__V3__Listener *)m, "Listener l1",
                                   s->secrets, NULL, resolve_none, NULL, NULL, NULL, NULL, &err);
    cr_assert_eq(rc, RM_ERR);
    cr_assert(strstr(err.msg, "Listener l1.filter_chains[0].transport_socket.typed_config."
                              "common_tls_context.tls_certificate_sds_secret_configs[0].name: "
                              "secret \"ca\" (static_resources.secrets[1]) is not a "
                              "tls_certificate secret"),
              "%s", err.msg);
    rc = rm_snapshot_check_listener((const Envoy__Config__Listener__V3__Listener *)m, "Listener l1",
                                    NULL, NULL, resolve_none, NULL, NULL, NULL, NULL, &err);
    cr_assert_eq(rc, RM_ERR);
    cr_assert(strstr(err.msg, "name: no secret \"ca\""), "%s", err.msg);
    protobuf_c_message_free_unpacked(m, NULL);
    rm_snapshot_unref(s);
}

/* ---- dynamic SDS references ----------------------------------------------------------------- */

/* A set of references: distinct names, the first source kept; merge and copy keep it a set. */
Test(secrets, sds_refs_are_a_set_of_names)
{
    struct rm_config_source ads = {.ads = true, .init_timeout_ms = 1000};
    struct rm_config_source grpc = {.cluster = (char *)"sds-grpc", .init_timeout_ms = 2000};
    struct rm_sds_refs a = {0}, b = {0}, c;
    rm_sds_refs_add(&a, "cert", &ads);
    rm_sds_refs_add(&a, "ROOTCA", &grpc);
    rm_sds_refs_add(&a, "cert", &grpc); /* already there: the first source stays */
    cr_assert_eq(a.n, 2);
    cr_assert_str_eq(a.v[0].name, "cert");
    cr_assert(a.v[0].src.ads);
    cr_assert_str_eq(a.v[1].src.cluster, "sds-grpc");
    cr_assert_neq(a.v[1].src.cluster, grpc.cluster, "the source is copied");
    cr_assert(rm_sds_refs_has(&a, "ROOTCA"));
    cr_assert_not(rm_sds_refs_has(&a, "nope"));
    cr_assert_not(rm_sds_refs_has(NULL, "cert"));
    rm_sds_refs_add(&b, "other", &ads);
    rm_sds_refs_add(&b, "ROOTCA", &ads);
    rm_sds_refs_merge(&b, &a); /* the union: other, ROOTCA (b's source), cert */
    cr_assert_eq(b.n, 3);
    cr_assert_str_eq(b.v[2].name, "cert");
    cr_assert(b.v[1].src.ads, "a name b had keeps b's source");
    rm_sds_refs_merge(&b, NULL);
    cr_assert_eq(b.n, 3);
    rm_sds_refs_copy(&c, &b);
    cr_assert_eq(c.n, 3);
    cr_assert_neq(c.v[0].name, b.v[0].name);
    rm_sds_refs_dispose(&a);
    rm_sds_refs_dispose(&b);
    rm_sds_refs_dispose(&c);
    cr_assert_eq(c.n, 0);
    cr_assert_null(c.v);
    rm_sds_refs_dispose(&c); /* empty again: a no-op */
}

#define DOWN_DYN(refs)                                                                             \
    "    - transport_socket:\n"                                                                    \
    "        name: envoy.transport_sockets.tls\n"                                                  \
    "        typed_config:\n"                                                                      \
    "          \"@type\": type.googleapis.com/"                                                    \
    "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n"                             \
    "          common_tls_context:\n" refs

#define LISTENER_WITH(fc)                                                                          \
    "  listeners:\n"                                                                               \
    "  - name: l\n"                                                                                \
    "    address: {socket_address: {address: 127.0.0.1, port_value: 10000}}\n"                     \
    "    filter_chains:\n" fc "      filters:\n"                                                   \
    "      - name: envoy.filters.network.http_connection_manager\n"                                \
    "        typed_config:\n"                                                                      \
    "          \"@type\": type.googleapis.com/"                                                    \
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n"          \
    "          stat_prefix: ing\n"                                                                 \
    "          route_config: { virtual_hosts: [{ name: a, domains: [\"*\"] }] }\n"                 \
    "          http_filters:\n"                                                                    \
    "          - name: envoy.filters.http.router\n"                                                \
    "            typed_config:\n"                                                                  \
    "              \"@type\": "                                                                    \
    "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n"

#define GRPC_CLUSTER(name)                                                                         \
    "  - name: " name "\n"                                                                         \
    "    load_assignment:\n"                                                                       \
    "      cluster_name: " name "\n"                                                               \
    "      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address:"                  \
    " { address: 127.0.0.1, port_value: 1 } } } }] }]\n"

/* A bootstrap listener whose certificate and client CA come over SDS: its context records both
 * references (names and sources: the reference parsing xDS subscribes from), is not ready
 * without them, and the snapshot needs xDS for them. */
Test(secrets, dynamic_references_of_a_bootstrap_listener)
{
    struct rm_error err = {{0}};
    struct rm_snapshot *s = from_yaml(
        "dynamic_resources:\n"
        "  ads_config:\n"
        "    api_type: GRPC\n"
        "    grpc_services: [{ envoy_grpc: { cluster_name: xds } }]\n"
        "static_resources:\n"
        "  clusters:\n" GRPC_CLUSTER("xds") GRPC_CLUSTER("sds-grpc") LISTENER_WITH(DOWN_DYN(
            "            tls_certificate_sds_secret_configs:\n"
            "            - name: server_cert\n"
            "              sds_config: { ads: {}, initial_fetch_timeout: 3s }\n"
            "            combined_validation_context:\n"
            "              default_validation_context: {}\n"
            "              validation_context_sds_secret_config:\n"
            "                name: ROOTCA\n"
            "                sds_config:\n"
            "                  api_config_source:\n"
            "                    api_type: DELTA_GRPC\n"
            "                    grpc_services: [{ envoy_grpc: { cluster_name: sds-grpc } }]\n")),
        &err);
    cr_assert_not_null(s, "%s", err.msg);
    cr_assert_eq(s->n_listeners, 1);
    const struct rm_sds_refs *r = rm_tls_ctx_sds_refs(s->listeners[0]->tls);
    cr_assert_not_null(r);
    cr_assert_eq(r->n, 2);
    cr_assert_str_eq(r->v[0].name, "server_cert");
    cr_assert(r->v[0].src.ads);
    cr_assert_eq(r->v[0].src.init_timeout_ms, 3000);
    cr_assert_str_eq(r->v[1].name, "ROOTCA");
    cr_assert_str_eq(r->v[1].src.cluster, "sds-grpc");
    cr_assert(r->v[1].src.delta);
    cr_assert_eq(r->v[1].src.init_timeout_ms, 15000, "Envoy's default");
    cr_assert_not(rm_tls_ctx_ready(s->listeners[0]->tls));
    cr_assert(rm_snapshot_uses_xds(s), "SDS is xDS");
    rm_snapshot_unref(s);
    s = from_yaml(SECRETS, &err);
    cr_assert_not_null(s, "%s", err.msg);
    cr_assert_not(rm_snapshot_uses_xds(s), "static secrets only: no xDS");
    rm_snapshot_unref(s);
}

/* An LDS listener's check reports the secrets it takes over SDS. */
Test(secrets, lds_listener_check_reports_its_sds_references)
{
    static const char yaml[] =
        "name: l1\n"
        "address: {socket_address: {address: 127.0.0.1, port_value: 10000}}\n"
        "filter_chains:\n"
        "- filters:\n"
        "  - name: envoy.filters.network.http_connection_manager\n"
        "    typed_config:\n"
        "      \"@type\": type.googleapis.com/"
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n"
        "      stat_prefix: ing\n"
        "      route_config: { virtual_hosts: [{ name: a, domains: [\"*\"] }] }\n"
        "      http_filters:\n"
        "      - name: envoy.filters.http.router\n"
        "        typed_config:\n"
        "          \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n"
        "  transport_socket:\n"
        "    name: envoy.transport_sockets.tls\n"
        "    typed_config:\n"
        "      \"@type\": type.googleapis.com/"
        "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n"
        "      common_tls_context:\n"
        "        tls_certificate_sds_secret_configs:\n"
        "        - { name: default, sds_config: { ads: {} } }\n";
    struct rm_error err = {{0}};
    ProtobufCMessage *m = NULL;
    cr_assert_eq(rm_pbjson_parse_string(yaml, strlen(yaml), "l.yaml",
                                        &envoy__config__listener__v3__listener__descriptor, &m,
                                        &err),
                 RM_OK, "%s", err.msg);
    struct rm_sds_refs refs = {0};
    int rc =
        rm_snapshot_check_listener((const Envoy__Config__Listener__V3__Listener *)m, "Listener l1",
                                   NULL, NULL, resolve_none, NULL, NULL, NULL, &refs, &err);
    cr_assert_eq(rc, RM_OK, "%s", err.msg);
    cr_assert_eq(refs.n, 1);
    cr_assert_str_eq(refs.v[0].name, "default");
    cr_assert(refs.v[0].src.ads);
    rm_sds_refs_dispose(&refs);
    protobuf_c_message_free_unpacked(m, NULL);
}
