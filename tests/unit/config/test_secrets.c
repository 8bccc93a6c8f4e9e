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
