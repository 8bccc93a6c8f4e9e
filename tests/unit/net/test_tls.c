/* Unit tests for proxy/net/tls.c's config side: TransportSocket messages (from YAML) into TLS
 * contexts, every error naming its field path, with a self-signed certificate made here. */
#include <criterion/criterion.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"
#include "envoy/config/core/v3/base.pb-c.h"
#include "proxy/config/pbjson.h"
#include "proxy/config/pbutil.h"
#include "proxy/net/secrets.h"
#include "proxy/net/tls.h"

static char dir[64], crt[128], key[128], crt2[128], key2[128];
static const char *stat_prefix = "test."; /* build()'s owner */
static const struct rm_secrets *secrets;  /* build()'s secrets (NULL: none) */
static const struct rm_secrets *sds;      /* build()'s secrets received over SDS (NULL: none) */

/* A self-signed P-256 certificate and its key into <crt_path>, <key_path>. */
static void write_cert(const char *crt_path, const char *key_path)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    cr_assert(k && x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, k);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"t", -1, -1, 0);
    X509_set_issuer_name(x, n);
    cr_assert(X509_sign(x, k, EVP_sha256()) > 0);
    FILE *f = fopen(crt_path, "w");
    PEM_write_X509(f, x);
    fclose(f);
    f = fopen(key_path, "w");
    PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(k);
}

/* Two self-signed certificates (two CAs) in a temp dir. */
static void make_cert(void)
{
    snprintf(dir, sizeof(dir), "/tmp/remora-tls-unit-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(crt, sizeof(crt), "%s/c.crt", dir);
    snprintf(key, sizeof(key), "%s/c.key", dir);
    snprintf(crt2, sizeof(crt2), "%s/c2.crt", dir);
    snprintf(key2, sizeof(key2), "%s/c2.key", dir);
    write_cert(crt, key);
    write_cert(crt2, key2);
}

static void drop_cert(void)
{
    unlink(crt);
    unlink(key);
    unlink(crt2);
    unlink(key2);
    rmdir(dir);
}

TestSuite(tls, .init = make_cert, .fini = drop_cert);

/* <yaml> into <text> (4096 bytes) with "%C" and "%K" standing for the certificate and key
 * paths, "%D" for the second certificate, "%L" for its key; returns the length. */
static size_t expand(const char *yaml, char *text)
{
    size_t k = 0;
    for (const char *p = yaml; *p && k < 4096 - 200; p++) {
        if (p[0] == '%' && (p[1] == 'C' || p[1] == 'K' || p[1] == 'D' || p[1] == 'L')) {
            k += (size_t)snprintf(text + k, 4096 - k, "%s",
                                  p[1] == 'C'   ? crt
                                  : p[1] == 'K' ? key
                                  : p[1] == 'D' ? crt2
                                                : key2);
            p++;
        } else {
            text[k++] = *p;
        }
    }
    text[k] = 0;
    return k;
}

/* Build a context from <yaml> (a TransportSocket, expand()ed) with <secrets>; returns the
 * rm_tls_ctx_new result with the message in <err>. */
static int build(const char *yaml, enum rm_tls_side side, const char *alpn, struct rm_error *err,
                 struct rm_tls_ctx **out)
{
    char text[4096];
    size_t k = expand(yaml, text);
    ProtobufCMessage *m = NULL;
    int rc = rm_pbjson_parse_string(
        text, k, "t.yaml", &envoy__config__core__v3__transport_socket__descriptor, &m, err);
    cr_assert_eq(rc, RM_OK, "parse: %s", err->msg);
    struct rm_tls_opts o = {.side = side,
                            .stat_prefix = stat_prefix,
                            .default_alpn = alpn,
                            .secrets = secrets,
                            .sds = sds};
    rc = rm_tls_ctx_new((const Envoy__Config__Core__V3__TransportSocket *)m, &o, "ts", out, err);
    protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}

static void expect_error(const char *yaml, enum rm_tls_side side, const char *want)
{
    struct rm_error err = {{0}};
    struct rm_tls_ctx *t = (struct rm_tls_ctx *)1;
    cr_assert_eq(build(yaml, side, NULL, &err, &t), RM_ERR, "expected: %s", want);
    cr_assert_null(t);
    cr_assert(strstr(err.msg, want), "got \"%s\", expected \"%s\"", err.msg, want);
}

#define DOWN                                                                                       \
    "name: envoy.transport_sockets.tls\n"                                                          \
    "typed_config:\n"                                                                              \
    "  \"@type\": "                                                                                \
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n"
#define UP                                                                                         \
    "name: envoy.transport_sockets.tls\n"                                                          \
    "typed_config:\n"                                                                              \
    "  \"@type\": "                                                                                \
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n"
#define CERT                                                                                       \
    "    tls_certificates:\n"                                                                      \
    "    - certificate_chain: { filename: \"%C\" }\n"                                              \
    "      private_key: { filename: \"%K\" }\n"

Test(tls, server_and_client_contexts_build)
{
    struct rm_error err = {{0}};
    struct rm_tls_ctx *t = NULL;
    cr_assert_eq(build(DOWN "  common_tls_context:\n" CERT
                            "    validation_context: { trusted_ca: { filename: \"%C\" } }\n"
                            "  require_client_certificate: true\n",
                       RM_TLS_SERVER, "h2,http/1.1", &err, &t),
                 RM_OK, "%s", err.msg);
    cr_assert_not_null(t);
    rm_tls_ctx_unref(rm_tls_ctx_ref(t));
    rm_tls_ctx_unref(t);
    t = NULL;
    cr_assert_eq(build(UP "  sni: a.example\n"
                          "  common_tls_context:\n"
                          "    tls_params: { tls_minimum_protocol_version: TLSv1_3 }\n"
                          "    alpn_protocols: [h2]\n"
                          "    validation_context:\n"
                          "      trusted_ca: { filename: \"%C\" }\n"
                          "      match_typed_subject_alt_names:\n"
                          "      - { san_type: URI, matcher: { prefix: \"spiffe://a/\" } }\n"
                          "      match_subject_alt_names: [{ exact: a.example }]\n",
                       RM_TLS_CLIENT, NULL, &err, &t),
                 RM_OK, "%s", err.msg);
    rm_tls_ctx_unref(t);
    rm_tls_ctx_unref(NULL);
    /* raw_buffer spelled out: plaintext, no context */
    t = (struct rm_tls_ctx *)1;
    cr_assert_eq(build("name: envoy.transport_sockets.raw_buffer\n", RM_TLS_CLIENT, NULL, &err, &t),
                 RM_OK);
    cr_assert_null(t);
}

Test(tls, errors_name_the_field)
{
    expect_error(DOWN "  common_tls_context:\n"
                      "    tls_certificates:\n"
                      "    - certificate_chain: { filename: /nonexistent/c.pem }\n"
                      "      private_key: { filename: \"%K\" }\n",
                 RM_TLS_SERVER,
                 "ts.typed_config.common_tls_context.tls_certificates[0].certificate_chain."
                 "filename: cannot read /nonexistent/c.pem: No such file or directory");
    expect_error(DOWN "  common_tls_context:\n"
                      "    tls_certificates:\n"
                      "    - certificate_chain: { filename: \"%C\" }\n"
                      "      private_key: { inline_string: \"not a key\" }\n",
                 RM_TLS_SERVER,
                 "ts.typed_config.common_tls_context.tls_certificates[0].private_key."
                 "inline_string: no PEM private key");
    expect_error(DOWN "  common_tls_context:\n"
                      "    tls_certificates:\n"
                      "    - certificate_chain: { inline_string: \"junk\" }\n"
                      "      private_key: { filename: \"%K\" }\n",
                 RM_TLS_SERVER,
                 "tls_certificates[0].certificate_chain.inline_string: no PEM certificate");
    expect_error(DOWN "  common_tls_context: {}\n", RM_TLS_SERVER,
                 "ts.typed_config.common_tls_context.tls_certificates: a listener needs a "
                 "certificate");
    expect_error(DOWN "  common_tls_context:\n" CERT "  require_client_certificate: true\n",
                 RM_TLS_SERVER,
                 "ts.typed_config.require_client_certificate: needs "
                 "common_tls_context.validation_context.trusted_ca");
    expect_error(DOWN "  common_tls_context:\n" CERT "  ocsp_staple_policy: MUST_STAPLE\n",
                 RM_TLS_SERVER, "ts.typed_config.ocsp_staple_policy: OCSP stapling");
    expect_error(DOWN "  common_tls_context:\n" CERT
                      "    tls_params: { tls_minimum_protocol_version: TLSv1_3,"
                      " tls_maximum_protocol_version: TLSv1_2 }\n",
                 RM_TLS_SERVER, "tls_params: tls_minimum_protocol_version is above");
    expect_error(
        DOWN "  common_tls_context:\n" CERT "    tls_params: { cipher_suites: [NOT-A-CIPHER] }\n",
        RM_TLS_SERVER, "ts.typed_config.common_tls_context.tls_params.cipher_suites: not accepted");
    expect_error(UP "  common_tls_context:\n"
                    "    tls_certificate_sds_secret_configs: [{ name: default }]\n",
                 RM_TLS_CLIENT,
                 "ts.typed_config.common_tls_context.tls_certificate_sds_secret_configs[0].name: "
                 "no secret \"default\" in static_resources.secrets");
    expect_error(UP "  common_tls_context:\n"
                    "    validation_context_sds_secret_config: { name: ca }\n",
                 RM_TLS_CLIENT,
                 "ts.typed_config.common_tls_context.validation_context_sds_secret_config.name: "
                 "no secret \"ca\"");
    expect_error(UP "  common_tls_context:\n"
                    "    validation_context:\n"
                    "      match_typed_subject_alt_names: [{ san_type: DNS, matcher: { exact: a "
                    "} }]\n",
                 RM_TLS_CLIENT,
                 "ts.typed_config.common_tls_context.validation_context.trusted_ca: required");
    expect_error(UP "  common_tls_context:\n"
                    "    validation_context:\n"
                    "      trusted_ca: { filename: \"%C\" }\n"
                    "      match_typed_subject_alt_names:\n"
                    "      - { san_type: DNS, matcher: { safe_regex: { regex: \"a.*\" } } }\n",
                 RM_TLS_CLIENT,
                 "validation_context.match_typed_subject_alt_names[0].matcher.safe_regex: not "
                 "supported");
    expect_error(UP "  common_tls_context:\n"
                    "    validation_context:\n"
                    "      trusted_ca: { filename: \"%C\" }\n"
                    "      match_typed_subject_alt_names: [{ san_type: OTHER_NAME, matcher: { "
                    "exact: a } }]\n",
                 RM_TLS_CLIENT, "match_typed_subject_alt_names[0].san_type: must be");
    expect_error(UP "  common_tls_context:\n"
                    "    validation_context: { trusted_ca: { filename: \"%C\" }, crl: { "
                    "filename: x } }\n",
                 RM_TLS_CLIENT, "validation_context.crl: CRLs are not supported");
    expect_error(UP "  max_session_keys: 5000\n", RM_TLS_CLIENT,
                 "ts.typed_config.max_session_keys: 5000 is more than remora keeps (1024)");
    expect_error(UP "  common_tls_context:\n"
                    "    validation_context: { trusted_ca: { environment_variable: "
                    "REMORA_NO_SUCH_VAR } }\n",
                 RM_TLS_CLIENT, "trusted_ca.environment_variable: REMORA_NO_SUCH_VAR is not set");
    expect_error("name: envoy.transport_sockets.alts\n", RM_TLS_CLIENT,
                 "ts.name: \"envoy.transport_sockets.alts\" is not supported");
    expect_error(UP, RM_TLS_SERVER, "ts.typed_config:");
}

/* A client context with certificate, CA <ca> ("%C" or "%D"), sni <sni> and SAN <san>. */
static struct rm_tls_ctx *client(const char *ca, const char *sni, const char *san)
{
    char yaml[2048];
    snprintf(yaml, sizeof(yaml),
             "%s  sni: %s\n  common_tls_context:\n%s    validation_context:\n"
             "      trusted_ca: { filename: \"%s\" }\n"
             "      match_typed_subject_alt_names:\n"
             "      - { san_type: URI, matcher: { exact: \"%s\" } }\n",
             UP, sni, CERT, ca, san);
    struct rm_error err = {{0}};
    struct rm_tls_ctx *t = NULL;
    cr_assert_eq(build(yaml, RM_TLS_CLIENT, NULL, &err, &t), RM_OK, "%s", err.msg);
    cr_assert_not_null(t);
    return t;
}

Test(tls, clients_share_the_ssl_ctx_of_the_same_heavy_config)
{
    struct rm_tls_ctx *a = client("%C", "a.test", "spiffe://a");
    struct rm_tls_ctx *b = client("%C", "b.test", "spiffe://b");
    cr_assert_eq(rm_tls_ctx_ssl_ctx(a), rm_tls_ctx_ssl_ctx(b), "sni/SAN only: one SSL_CTX");
    struct rm_tls_ctx *c = client("%D", "a.test", "spiffe://a");
    cr_assert_neq(rm_tls_ctx_ssl_ctx(a), rm_tls_ctx_ssl_ctx(c), "another CA: another SSL_CTX");
    /* a light field that is wrong is still an error on the shared path, with its path */
    expect_error(UP "  common_tls_context:\n" CERT "    validation_context:\n"
                    "      trusted_ca: { filename: \"%C\" }\n"
                    "      match_typed_subject_alt_names:\n"
                    "      - { san_type: URI, matcher: { safe_regex: { regex: \"a.*\" } } }\n",
                 RM_TLS_CLIENT,
                 "ts.typed_config.common_tls_context.validation_context."
                 "match_typed_subject_alt_names[0].matcher.safe_regex: not supported");
    /* the shared SSL_CTX outlives the context that built it */
    const struct ssl_ctx_st *shared = rm_tls_ctx_ssl_ctx(a);
    rm_tls_ctx_unref(a);
    struct rm_tls_ctx *d = client("%C", "d.test", "spiffe://d");
    cr_assert_eq(rm_tls_ctx_ssl_ctx(d), shared);
    cr_assert_eq(rm_tls_ctx_ssl_ctx(b), shared);
    /* a certificate rewritten on disk: the next build reads it again */
    struct timespec later[2] = {{.tv_sec = 2000000000}, {.tv_sec = 2000000000}};
    cr_assert_eq(utimensat(AT_FDCWD, crt, later, 0), 0);
    struct rm_tls_ctx *e = client("%C", "a.test", "spiffe://a");
    cr_assert_neq(rm_tls_ctx_ssl_ctx(e), shared, "a rotated file: a new SSL_CTX");
    rm_tls_ctx_unref(b);
    rm_tls_ctx_unref(c);
    rm_tls_ctx_unref(d);
    rm_tls_ctx_unref(e);
}

/* A server context from <yaml> for listener <prefix> with default ALPN <alpn>. */
static struct rm_tls_ctx *server(const char *yaml, const char *prefix, const char *alpn)
{
    struct rm_error err = {{0}};
    struct rm_tls_ctx *t = NULL;
    stat_prefix = prefix;
    int rc = build(yaml, RM_TLS_SERVER, alpn, &err, &t);
    stat_prefix = "test.";
    cr_assert_eq(rc, RM_OK, "%s", err.msg);
    cr_assert_not_null(t);
    return t;
}

#define MTLS                                                                                       \
    DOWN "  common_tls_context:\n" CERT                                                            \
         "    validation_context: { trusted_ca: { filename: \"%D\" } }\n"

Test(tls, a_listener_keeps_its_server_ssl_ctx_while_its_config_is_the_same)
{
    const char *l1 = "listener.127.0.0.1_1.", *l2 = "listener.127.0.0.1_2.";
    struct rm_tls_ctx *a = server(MTLS, l1, "h2,http/1.1");
    struct rm_tls_ctx *b = server(MTLS, l1, "h2,http/1.1");
    const struct ssl_ctx_st *shared = rm_tls_ctx_ssl_ctx(a);
    cr_assert_eq(rm_tls_ctx_ssl_ctx(b), shared, "the same listener and config: one SSL_CTX");
    /* every field counts on the server side, and the codec's default ALPN */
    struct rm_tls_ctx *other[] = {
        server(MTLS "  require_client_certificate: true\n", l1, "h2,http/1.1"),
        server(DOWN "  common_tls_context:\n" CERT "    alpn_protocols: [h2]\n"
                    "    validation_context: { trusted_ca: { filename: \"%D\" } }\n",
               l1, "h2,http/1.1"),
        server(MTLS "  session_timeout: 60s\n", l1, "h2,http/1.1"),
        server(DOWN "  common_tls_context:\n" CERT
                    "    validation_context: { trusted_ca: { filename: \"%C\" } }\n",
               l1, "h2,http/1.1"),
        server(MTLS, l1, "http/1.1"),
        /* another listener, the same config: never shared (its own sessions and ticket keys) */
        server(MTLS, l2, "h2,http/1.1"),
    };
    size_t n = sizeof(other) / sizeof(other[0]);
    for (size_t i = 0; i < n; i++) {
        cr_assert_neq(rm_tls_ctx_ssl_ctx(other[i]), shared, "variant %zu shares", i);
        for (size_t j = 0; j < i; j++)
            cr_assert_neq(rm_tls_ctx_ssl_ctx(other[i]), rm_tls_ctx_ssl_ctx(other[j]));
    }
    /* server and client contexts of equal-looking configs never mix */
    struct rm_tls_ctx *c = client("%D", "a.test", "spiffe://a");
    cr_assert_neq(rm_tls_ctx_ssl_ctx(c), shared);
    /* the shared SSL_CTX outlives the context that built it (the old snapshot's) */
    rm_tls_ctx_unref(a);
    struct rm_tls_ctx *d = server(MTLS, l1, "h2,http/1.1");
    cr_assert_eq(rm_tls_ctx_ssl_ctx(d), shared);
    /* the certificate touched on disk: the next build reads it again */
    struct timespec later[2] = {{.tv_sec = 2000000000}, {.tv_sec = 2000000000}};
    cr_assert_eq(utimensat(AT_FDCWD, crt, later, 0), 0);
    struct rm_tls_ctx *e = server(MTLS, l1, "h2,http/1.1");
    cr_assert_neq(rm_tls_ctx_ssl_ctx(e), shared, "a touched file: a new SSL_CTX");
    struct rm_tls_ctx *f = server(MTLS, l1, "h2,http/1.1");
    cr_assert_eq(rm_tls_ctx_ssl_ctx(f), rm_tls_ctx_ssl_ctx(e), "and that one is kept");
    /* the key replaced by rename (a new inode), as certificate rotation tools do */
    char tmp[160];
    snprintf(tmp, sizeof(tmp), "%s.new", key);
    struct stat st;
    cr_assert_eq(stat(key, &st), 0);
    FILE *in = fopen(key, "rb"), *out = fopen(tmp, "wb");
    cr_assert(in && out);
    char buf[4096];
    size_t got = fread(buf, 1, sizeof(buf), in);
    cr_assert_eq(fwrite(buf, 1, got, out), got);
    fclose(in);
    fclose(out);
    struct timespec same[2] = {st.st_atim, st.st_mtim};
    cr_assert_eq(utimensat(AT_FDCWD, tmp, same, 0), 0);
    cr_assert_eq(rename(tmp, key), 0);
    struct rm_tls_ctx *g = server(MTLS, l1, "h2,http/1.1");
    cr_assert_neq(rm_tls_ctx_ssl_ctx(g), rm_tls_ctx_ssl_ctx(e), "a renamed file: a new SSL_CTX");
    for (size_t i = 0; i < n; i++)
        rm_tls_ctx_unref(other[i]);
    rm_tls_ctx_unref(b);
    rm_tls_ctx_unref(c);
    rm_tls_ctx_unref(d);
    rm_tls_ctx_unref(e);
    rm_tls_ctx_unref(f);
    rm_tls_ctx_unref(g);
}

/* ---- secrets by name (static_resources.secrets) --------------------------------------------- */

/* A table from <yaml> (a Bootstrap's static_resources, expand()ed). */
static struct rm_secrets *make_secrets(const char *yaml)
{
    char text[4096];
    size_t k = expand(yaml, text);
    struct rm_error err = {{0}};
    ProtobufCMessage *m = NULL;
    cr_assert_eq(rm_pbjson_parse_string(
                     text, k, "s.yaml",
                     &envoy__config__bootstrap__v3__bootstrap__static_resources__descriptor, &m,
                     &err),
                 RM_OK, "parse: %s", err.msg);
    struct rm_pb_box *box = rm_pb_box_new(m);
    const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr = (const void *)m;
    struct rm_secrets *s = NULL;
    cr_assert_eq(
        rm_secrets_new(sr->secrets, sr->n_secrets, box, "static_resources.secrets", &s, &err),
        RM_OK, "%s", err.msg);
    rm_pb_box_unref(box); /* the table keeps its own reference */
    return s;
}

#define SECRETS                                                                                    \
    "secrets:\n"                                                                                   \
    "- name: cert\n"                                                                               \
    "  tls_certificate:\n"                                                                         \
    "    certificate_chain: { filename: \"%C\" }\n"                                                \
    "    private_key: { filename: \"%K\" }\n"                                                      \
    "- name: ca\n"                                                                                 \
    "  validation_context: { trusted_ca: { filename: \"%C\" } }\n"                                 \
    "- name: ca_depth5\n"                                                                          \
    "  validation_context: { trusted_ca: { filename: \"%C\" }, max_verify_depth: 5 }\n"            \
    "- name: bad_key\n"                                                                            \
    "  tls_certificate:\n"                                                                         \
    "    certificate_chain: { filename: \"%C\" }\n"                                                \
    "    private_key: { inline_string: \"not a key\" }\n"

/* A context of <yaml> that must build; the caller unrefs it. */
static struct rm_tls_ctx *must_build(const char *yaml, enum rm_tls_side side)
{
    struct rm_error err = {{0}};
    struct rm_tls_ctx *t = NULL;
    cr_assert_eq(build(yaml, side, NULL, &err, &t), RM_OK, "%s", err.msg);
    cr_assert_not_null(t);
    return t;
}

Test(tls, sds_references_resolve_in_the_static_secrets)
{
    struct rm_secrets *tab = make_secrets(SECRETS);
    secrets = tab;
    stat_prefix = "listener.sds.";
    /* a listener's certificate by name: the same SSL_CTX as the same certificate inline (the
     * resolved configuration is what counts) */
    struct rm_tls_ctx *inl = must_build(DOWN "  common_tls_context:\n" CERT, RM_TLS_SERVER);
    struct rm_tls_ctx *ref =
        must_build(DOWN "  common_tls_context:\n"
                        "    tls_certificate_sds_secret_configs: [{name: cert}]\n",
                   RM_TLS_SERVER);
    cr_assert_eq(rm_tls_ctx_ssl_ctx(ref), rm_tls_ctx_ssl_ctx(inl));
    /* validation by name, alone */
    struct rm_tls_ctx *v_inl = must_build(
        UP "  common_tls_context:\n    validation_context: { trusted_ca: { filename: \"%C\" } }\n",
        RM_TLS_CLIENT);
    struct rm_tls_ctx *v_ref = must_build(
        UP "  common_tls_context:\n    validation_context_sds_secret_config: { name: ca }\n",
        RM_TLS_CLIENT);
    cr_assert_eq(rm_tls_ctx_ssl_ctx(v_ref), rm_tls_ctx_ssl_ctx(v_inl));
    /* combined: the secret's fields over the default's (a singular field of the secret wins,
     * the trusted_ca DataSource is the secret's, the default's SAN matchers stay) */
    struct rm_tls_ctx *d5 = must_build(UP "  common_tls_context:\n"
                                          "    validation_context:\n"
                                          "      trusted_ca: { filename: \"%C\" }\n"
                                          "      max_verify_depth: 5\n",
                                       RM_TLS_CLIENT);
    cr_assert_neq(rm_tls_ctx_ssl_ctx(d5), rm_tls_ctx_ssl_ctx(v_inl));
    struct rm_tls_ctx *comb =
        must_build(UP "  common_tls_context:\n"
                      "    combined_validation_context:\n"
                      "      default_validation_context:\n"
                      "        trusted_ca: { filename: \"%D\" }\n"
                      "        max_verify_depth: 1\n"
                      "        match_typed_subject_alt_names:\n"
                      "        - { san_type: DNS, matcher: { exact: a.test } }\n"
                      "      validation_context_sds_secret_config: { name: ca_depth5 }\n",
                   RM_TLS_CLIENT);
    cr_assert_eq(rm_tls_ctx_ssl_ctx(comb), rm_tls_ctx_ssl_ctx(d5), "the secret's fields win");
    /* a field only the default sets is kept */
    struct rm_tls_ctx *keep = must_build(UP "  common_tls_context:\n"
                                            "    combined_validation_context:\n"
                                            "      default_validation_context:\n"
                                            "        max_verify_depth: 5\n"
                                            "      validation_context_sds_secret_config:\n"
                                            "        name: ca\n",
                                         RM_TLS_CLIENT);
    cr_assert_eq(rm_tls_ctx_ssl_ctx(keep), rm_tls_ctx_ssl_ctx(d5), "the default's field is kept");
    /* without the secret, the default alone has SAN matchers and no CA: an error */
    expect_error(UP "  common_tls_context:\n"
                    "    combined_validation_context:\n"
                    "      default_validation_context:\n"
                    "        match_typed_subject_alt_names:\n"
                    "        - { san_type: DNS, matcher: { exact: a.test } }\n",
                 RM_TLS_CLIENT, "default_validation_context.trusted_ca: required");
    struct rm_tls_ctx *v[] = {inl, ref, v_inl, v_ref, d5, comb, keep};
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
        rm_tls_ctx_unref(v[i]);
    secrets = NULL;
    stat_prefix = "test.";
    rm_secrets_unref(tab);
}

Test(tls, sds_reference_errors_name_the_reference)
{
    struct rm_secrets *tab = make_secrets(SECRETS);
    secrets = tab;
    /* a dynamic reference's sds_config must be a source remora speaks */
    expect_error(DOWN "  common_tls_context:\n"
                      "    tls_certificate_sds_secret_configs:\n"
                      "    - name: cert\n"
                      "      sds_config: {}\n",
                 RM_TLS_SERVER,
                 "ts.typed_config.common_tls_context.tls_certificate_sds_secret_configs[0]."
                 "sds_config: only ads: {} or api_config_source");
    expect_error(
        UP "  common_tls_context:\n"
           "    validation_context_sds_secret_config:\n"
           "      name: ca\n"
           "      sds_config: { api_config_source: { api_type: REST } }\n",
        RM_TLS_CLIENT,
        "ts.typed_config.common_tls_context.validation_context_sds_secret_config.sds_config."
        "api_config_source");
    expect_error(DOWN "  common_tls_context:\n"
                      "    tls_certificate_sds_secret_configs:\n"
                      "    - sds_config: { ads: {} }\n",
                 RM_TLS_SERVER, "tls_certificate_sds_secret_configs[0].name: required");
    expect_error(DOWN "  common_tls_context:\n"
                      "    tls_certificate_sds_secret_configs: [{ name: nope }]\n",
                 RM_TLS_SERVER,
                 "ts.typed_config.common_tls_context.tls_certificate_sds_secret_configs[0].name: "
                 "no secret \"nope\" in static_resources.secrets");
    expect_error(UP "  common_tls_context:\n"
                    "    combined_validation_context:\n"
                    "      validation_context_sds_secret_config: { name: nope }\n",
                 RM_TLS_CLIENT,
                 "combined_validation_context.validation_context_sds_secret_config.name: no "
                 "secret \"nope\"");
    expect_error(DOWN "  common_tls_context:\n"
                      "    tls_certificate_sds_secret_configs: [{ name: ca }]\n",
                 RM_TLS_SERVER,
                 "tls_certificate_sds_secret_configs[0].name: secret \"ca\" "
                 "(static_resources.secrets[1]) is not a tls_certificate secret");
    expect_error(UP "  common_tls_context:\n"
                    "    validation_context_sds_secret_config: { name: cert }\n",
                 RM_TLS_CLIENT,
                 "validation_context_sds_secret_config.name: secret \"cert\" "
                 "(static_resources.secrets[0]) is not a validation_context secret");
    expect_error(DOWN "  common_tls_context:\n"
                      "    tls_certificate_sds_secret_configs: [{}]\n",
                 RM_TLS_SERVER, "tls_certificate_sds_secret_configs[0].name: required");
    /* an error in a secret's contents names the reference and the secret */
    expect_error(DOWN "  common_tls_context:\n"
                      "    tls_certificate_sds_secret_configs: [{ name: bad_key }]\n",
                 RM_TLS_SERVER,
                 "ts.typed_config.common_tls_context.tls_certificate_sds_secret_configs[0] -> "
                 "static_resources.secrets[3].tls_certificate.private_key.inline_string: no PEM "
                 "private key");
    expect_error(DOWN "  common_tls_context:\n" CERT
                      "    tls_certificate_sds_secret_configs: [{ name: cert }]\n",
                 RM_TLS_SERVER, "tls_certificates: one certificate is supported");
    secrets = NULL;
    expect_error(DOWN "  common_tls_context:\n"
                      "    tls_certificate_sds_secret_configs: [{ name: cert }]\n",
                 RM_TLS_SERVER, "no secret \"cert\"");
    rm_secrets_unref(tab);
}

/* A table of secrets received over SDS, from <yaml> (a StaticResources' secrets list). */
static struct rm_secrets *make_sds(const char *yaml)
{
    char text[4096];
    size_t k = expand(yaml, text);
    struct rm_error err = {{0}};
    ProtobufCMessage *m = NULL;
    cr_assert_eq(rm_pbjson_parse_string(
                     text, k, "s.yaml",
                     &envoy__config__bootstrap__v3__bootstrap__static_resources__descriptor, &m,
                     &err),
                 RM_OK, "parse: %s", err.msg);
    Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr = (void *)m;
    struct rm_pb_box *boxes[8];
    cr_assert_leq(sr->n_secrets, 8);
    for (size_t i = 0; i < sr->n_secrets; i++) {
        boxes[i] = rm_pb_box_new(&sr->secrets[i]->base);
        sr->secrets[i] = NULL; /* in the box */
    }
    size_t n = sr->n_secrets;
    sr->n_secrets = 0;
    protobuf_c_message_free_unpacked(m, NULL);
    struct rm_secrets *t = rm_secrets_new_boxed(boxes, n);
    for (size_t i = 0; i < n; i++)
        rm_pb_box_unref(boxes[i]); /* the table keeps its own */
    return t;
}

#define DYN_CERT                                                                                   \
    "    tls_certificate_sds_secret_configs:\n"                                                    \
    "    - name: cert\n"                                                                           \
    "      sds_config: { ads: {}, initial_fetch_timeout: 2s }\n"

/* A reference with an sds_config: recorded with its source; without the secret the context is
 * not ready; rebuilt once it arrives, it is the context the same certificate inline gives; a
 * new version of the secret gives a new SSL_CTX. */
Test(tls, dynamic_sds_references_are_recorded_and_rebuilt)
{
    stat_prefix = "listener.dyn.";
    struct rm_tls_ctx *t = must_build(DOWN "  common_tls_context:\n" DYN_CERT, RM_TLS_SERVER);
    cr_assert_not(rm_tls_ctx_ready(t));
    cr_assert_null(rm_tls_ctx_ssl_ctx(t));
    const struct rm_sds_refs *r = rm_tls_ctx_sds_refs(t);
    cr_assert_not_null(r);
    cr_assert_eq(r->n, 1);
    cr_assert_str_eq(r->v[0].name, "cert");
    cr_assert(r->v[0].src.ads);
    cr_assert_eq(r->v[0].src.init_timeout_ms, 2000);
    struct rm_secrets *v1 = make_sds("secrets:\n"
                                     "- name: cert\n"
                                     "  tls_certificate:\n"
                                     "    certificate_chain: { filename: \"%C\" }\n"
                                     "    private_key: { filename: \"%K\" }\n");
    struct rm_secrets *v2 = make_sds("secrets:\n"
                                     "- name: cert\n"
                                     "  tls_certificate:\n"
                                     "    certificate_chain: { filename: \"%D\" }\n"
                                     "    private_key: { filename: \"%L\" }\n");
    struct rm_error err = {{0}};
    struct rm_tls_ctx *t1 = NULL, *t2 = NULL;
    cr_assert_eq(rm_tls_ctx_rebuild(t, v1, true, &t1, &err), RM_OK, "%s", err.msg);
    cr_assert(rm_tls_ctx_ready(t1));
    cr_assert_eq(rm_tls_ctx_sds_refs(t1)->n, 1);
    struct rm_tls_ctx *inl = must_build(DOWN "  common_tls_context:\n" CERT, RM_TLS_SERVER);
    cr_assert_eq(rm_tls_ctx_ssl_ctx(t1), rm_tls_ctx_ssl_ctx(inl), "the resolved config counts");
    cr_assert_null(rm_tls_ctx_sds_refs(inl));
    cr_assert_eq(rm_tls_ctx_rebuild(t1, v2, true, &t2, &err), RM_OK, "%s", err.msg);
    cr_assert_neq(rm_tls_ctx_ssl_ctx(t2), rm_tls_ctx_ssl_ctx(t1), "a new certificate");
    /* built with the table at hand, the same as rebuilt */
    sds = v1;
    struct rm_tls_ctx *direct = must_build(DOWN "  common_tls_context:\n" DYN_CERT, RM_TLS_SERVER);
    cr_assert_eq(rm_tls_ctx_ssl_ctx(direct), rm_tls_ctx_ssl_ctx(t1));
    /* a secret of the wrong kind is an error naming the reference and the secret */
    expect_error(UP "  common_tls_context:\n"
                    "    validation_context_sds_secret_config: { name: cert, sds_config: { ads: {} "
                    "} }\n",
                 RM_TLS_CLIENT,
                 "validation_context_sds_secret_config.name: secret \"cert\" (Secret cert) is "
                 "not a validation_context secret");
    sds = NULL;
    struct rm_tls_ctx *v[] = {t, t1, t2, inl, direct};
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
        rm_tls_ctx_unref(v[i]);
    rm_secrets_unref(v1);
    rm_secrets_unref(v2);
    stat_prefix = "test.";
}

/* A Secret arriving over SDS is checked on its own: a kind remora supports, PEM that parses, a
 * key that matches its certificate. */
Test(tls, sds_secrets_are_checked)
{
    struct rm_secrets *ok = make_sds("secrets:\n"
                                     "- name: cert\n"
                                     "  tls_certificate:\n"
                                     "    certificate_chain: { filename: \"%C\" }\n"
                                     "    private_key: { filename: \"%K\" }\n"
                                     "- name: ca\n"
                                     "  validation_context: { trusted_ca: { filename: \"%C\" } }\n"
                                     "- name: mismatch\n"
                                     "  tls_certificate:\n"
                                     "    certificate_chain: { filename: \"%C\" }\n"
                                     "    private_key: { filename: \"%L\" }\n"
                                     "- name: garbage_ca\n"
                                     "  validation_context: { trusted_ca: { inline_string: x } }\n"
                                     "- name: ticket\n"
                                     "  session_ticket_keys: {}\n");
    struct rm_error err = {{0}};
    cr_assert_eq(rm_tls_check_secret(rm_secrets_find(ok, "cert"), "Secret cert", &err), RM_OK, "%s",
                 err.msg);
    cr_assert_eq(rm_tls_check_secret(rm_secrets_find(ok, "ca"), "Secret ca", &err), RM_OK, "%s",
                 err.msg);
    cr_assert_eq(rm_tls_check_secret(rm_secrets_find(ok, "mismatch"), "Secret m", &err), RM_ERR);
    cr_assert(strstr(err.msg, "Secret m.tls_certificate.private_key.filename: the key does not "
                              "match the certificate"),
              "%s", err.msg);
    cr_assert_eq(rm_tls_check_secret(rm_secrets_find(ok, "garbage_ca"), "Secret g", &err), RM_ERR);
    cr_assert(strstr(err.msg, "Secret g.validation_context.trusted_ca.inline_string: no PEM "
                              "certificate"),
              "%s", err.msg);
    cr_assert_eq(rm_tls_check_secret(rm_secrets_find(ok, "ticket"), "Secret t", &err), RM_ERR);
    cr_assert(strstr(err.msg, "Secret t.session_ticket_keys: not supported"), "%s", err.msg);
    rm_secrets_unref(ok);
}

/* Contexts are shared by their resolved configuration: one name, two contents (two snapshots'
 * tables), two SSL_CTXs; the same contents in another table, one. */
Test(tls, the_sharing_key_is_made_of_the_secrets_contents)
{
    struct rm_secrets *a = make_secrets("secrets:\n"
                                        "- name: cert\n"
                                        "  tls_certificate:\n"
                                        "    certificate_chain: { filename: \"%C\" }\n"
                                        "    private_key: { filename: \"%K\" }\n");
    struct rm_secrets *a2 = make_secrets("secrets:\n"
                                         "- name: cert\n"
                                         "  tls_certificate:\n"
                                         "    certificate_chain: { filename: \"%C\" }\n"
                                         "    private_key: { filename: \"%K\" }\n");
    struct rm_secrets *b =
        make_secrets("secrets:\n"
                     "- name: cert\n"
                     "  tls_certificate:\n"
                     "    certificate_chain: { filename: \"%D\" }\n"
                     "    private_key: { filename: \"%L\" }\n"
                     "- name: ca\n"
                     "  validation_context: { trusted_ca: { filename: \"%D\" } }\n");
    struct rm_secrets *c =
        make_secrets("secrets:\n"
                     "- name: ca\n"
                     "  validation_context: { trusted_ca: { filename: \"%C\" } }\n");
    static const char srv[] = DOWN "  common_tls_context:\n"
                                   "    tls_certificate_sds_secret_configs: [{name: cert}]\n";
    static const char cli[] = UP "  common_tls_context:\n"
                                 "    validation_context_sds_secret_config: { name: ca }\n";
    stat_prefix = "listener.key.";
    secrets = a;
    struct rm_tls_ctx *sa = must_build(srv, RM_TLS_SERVER);
    secrets = a2;
    struct rm_tls_ctx *sa2 = must_build(srv, RM_TLS_SERVER);
    secrets = b;
    struct rm_tls_ctx *sb = must_build(srv, RM_TLS_SERVER);
    struct rm_tls_ctx *cb = must_build(cli, RM_TLS_CLIENT);
    secrets = c;
    struct rm_tls_ctx *cc = must_build(cli, RM_TLS_CLIENT);
    cr_assert_eq(rm_tls_ctx_ssl_ctx(sa2), rm_tls_ctx_ssl_ctx(sa), "same contents: shared");
    cr_assert_neq(rm_tls_ctx_ssl_ctx(sb), rm_tls_ctx_ssl_ctx(sa), "same name, other certificate");
    cr_assert_neq(rm_tls_ctx_ssl_ctx(cb), rm_tls_ctx_ssl_ctx(cc), "same name, other CA");
    /* a file a secret names, touched on disk: a new SSL_CTX at the next build */
    struct timespec later[2] = {{.tv_sec = 2100000000}, {.tv_sec = 2100000000}};
    cr_assert_eq(utimensat(AT_FDCWD, key, later, 0), 0);
    secrets = a;
    struct rm_tls_ctx *sa3 = must_build(srv, RM_TLS_SERVER);
    cr_assert_neq(rm_tls_ctx_ssl_ctx(sa3), rm_tls_ctx_ssl_ctx(sa), "a touched file");
    struct rm_tls_ctx *v[] = {sa, sa2, sb, cb, cc, sa3};
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
        rm_tls_ctx_unref(v[i]);
    secrets = NULL;
    stat_prefix = "test.";
    rm_secrets_unref(a);
    rm_secrets_unref(a2);
    rm_secrets_unref(b);
    rm_secrets_unref(c);
}
