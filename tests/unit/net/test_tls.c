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

#include "envoy/config/core/v3/base.pb-c.h"
#include "proxy/config/pbjson.h"
#include "proxy/net/tls.h"

static char dir[64], crt[128], key[128], crt2[128], key2[128];
static const char *stat_prefix = "test."; /* build()'s owner */

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

/* Build a context from <yaml> (a TransportSocket; "%C" and "%K" stand for the certificate and
 * key paths, "%D" for the second certificate); returns the rm_tls_ctx_new result with the message
 * in <err>. */
static int build(const char *yaml, enum rm_tls_side side, const char *alpn, struct rm_error *err,
                 struct rm_tls_ctx **out)
{
    char text[4096];
    size_t k = 0;
    for (const char *p = yaml; *p && k < sizeof(text) - 200; p++) {
        if (p[0] == '%' && (p[1] == 'C' || p[1] == 'K' || p[1] == 'D')) {
            k += (size_t)snprintf(text + k, sizeof(text) - k, "%s",
                                  p[1] == 'C'   ? crt
                                  : p[1] == 'K' ? key
                                                : crt2);
            p++;
        } else {
            text[k++] = *p;
        }
    }
    text[k] = 0;
    ProtobufCMessage *m = NULL;
    int rc = rm_pbjson_parse_string(
        text, k, "t.yaml", &envoy__config__core__v3__transport_socket__descriptor, &m, err);
    cr_assert_eq(rc, RM_OK, "parse: %s", err->msg);
    struct rm_tls_opts o = {.side = side, .stat_prefix = stat_prefix, .default_alpn = alpn};
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
                 "ts.typed_config.common_tls_context.tls_certificate_sds_secret_configs: SDS");
    expect_error(UP "  common_tls_context:\n"
                    "    validation_context_sds_secret_config: { name: ca }\n",
                 RM_TLS_CLIENT, "validation_context_sds_secret_config: SDS");
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
