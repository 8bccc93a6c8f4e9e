#include "proxy/net/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/tls.pb-c.h"
#include "proxy/admin/stats.h"
#include "proxy/config/pbtypes.h"
#include "proxy/config/pbutil.h"
#include "proxy/core/log.h"
#include "proxy/net/conn.h"
#include "proxy/net/secrets.h"
/* last: every OpenSSL call below goes through the table it #defines (OpenSSL is dlopen()ed by
 * the first rm_tls_ctx_new, not linked) */
#include "proxy/net/ssl_api.h"

#define TLS_NAME "envoy.transport_sockets.tls"
#define PATH_LEN 768
#define MAX_DATASOURCE (4u << 20) /* certificates and keys: far below this */

typedef Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext CommonTlsContext;
typedef Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext
    ValidationContext;
typedef Envoy__Extensions__TransportSockets__Tls__V3__TlsCertificate TlsCertificate;
typedef Envoy__Extensions__TransportSockets__Tls__V3__TlsParameters TlsParameters;
typedef Envoy__Extensions__TransportSockets__Tls__V3__SubjectAltNameMatcher SanMatcher;
typedef Envoy__Extensions__TransportSockets__Tls__V3__DownstreamTlsContext DownstreamTlsContext;
typedef Envoy__Extensions__TransportSockets__Tls__V3__UpstreamTlsContext UpstreamTlsContext;
typedef Envoy__Type__Matcher__V3__StringMatcher StringMatcher;
typedef Envoy__Config__Core__V3__DataSource DataSource;
typedef Envoy__Extensions__TransportSockets__Tls__V3__SdsSecretConfig SdsSecretConfig;
typedef Envoy__Extensions__TransportSockets__Tls__V3__Secret Secret;

/* ---- stats -------------------------------------------------------------------------------- */

enum {
    SSL_HANDSHAKE,
    SSL_CONNECTION_ERROR,
    SSL_NO_CERTIFICATE,
    SSL_FAIL_VERIFY_NO_CERT,
    SSL_FAIL_VERIFY_ERROR,
    SSL_FAIL_VERIFY_SAN,
    SSL_SESSION_REUSED,
    SSL__COUNT
};

static const struct rm_stat_def ssl_stat_defs[SSL__COUNT] = {
    [SSL_HANDSHAKE] = {"handshake", RM_COUNTER},
    [SSL_CONNECTION_ERROR] = {"connection_error", RM_COUNTER},
    [SSL_NO_CERTIFICATE] = {"no_certificate", RM_COUNTER},
    [SSL_FAIL_VERIFY_NO_CERT] = {"fail_verify_no_cert", RM_COUNTER},
    [SSL_FAIL_VERIFY_ERROR] = {"fail_verify_error", RM_COUNTER},
    [SSL_FAIL_VERIFY_SAN] = {"fail_verify_san", RM_COUNTER},
    [SSL_SESSION_REUSED] = {"session_reused", RM_COUNTER},
};

/* Envoy's SDS counters of a TLS socket factory, under "<owner prefix>server_ssl_socket_factory."
 * or "<owner prefix>client_ssl_socket_factory." (contexts with SDS references only). */
enum { SF_UPDATE_BY_SDS, SF_NOT_READY, SF__COUNT };
static const struct rm_stat_def server_sf_defs[SF__COUNT] = {
    [SF_UPDATE_BY_SDS] = {"ssl_context_update_by_sds", RM_COUNTER},
    [SF_NOT_READY] = {"downstream_context_secrets_not_ready", RM_COUNTER},
};
static const struct rm_stat_def client_sf_defs[SF__COUNT] = {
    [SF_UPDATE_BY_SDS] = {"ssl_context_update_by_sds", RM_COUNTER},
    [SF_NOT_READY] = {"upstream_context_secrets_not_ready", RM_COUNTER},
};

/* ---- the context -------------------------------------------------------------------------- */

/* A subject alt name matcher: <type> 0 = any type (match_subject_alt_names), else a GEN_* type. */
struct san_match {
    int type;
    int kind; /* MATCH_PATTERN_EXACT / _PREFIX / _SUFFIX / _CONTAINS */
    bool ignore_case;
    char *s;
};

struct ssl_share;

struct rm_tls_ctx {
    _Atomic unsigned refs;
    /* A reference (SSL_CTX_up_ref): the heavy part, possibly shared with other contexts of the
     * same heavy configuration (<share>).  Nothing in it points back to this struct: callbacks
     * find the context through the SSL object's app data (rm_conn_start_tls). */
    SSL_CTX *ssl_ctx;
    struct ssl_share *share; /* the cache entry <ssl_ctx> came from or was put in, or NULL */
    enum rm_tls_side side;
    bool own_alpn;       /* client: alpn_protocols configured (else per connection) */
    unsigned char *alpn; /* server: the protocols to select from, wire format */
    size_t alpn_len;
    char *sni;              /* client: SNI to send, or NULL */
    struct san_match *sans; /* every one is tried; one match accepts the peer */
    size_t n_sans;
    bool accept_untrusted;  /* trust_chain_verification: ACCEPT_UNTRUSTED */
    struct rm_stats *stats; /* "<owner>.ssl." (a reference: connections hold the context) */
    /* client session resumption (max_session_keys; 0: none): the newest sessions the server
     * gave, oldest first, owned; per context (cluster), not per SSL_CTX, which clusters may
     * share: sessions are for this context's SNI.  Workers share them: under sess_lock. */
    pthread_mutex_t sess_lock;
    SSL_SESSION **sessions;
    unsigned n_sessions, max_sessions;
    /* Dynamic SDS: the references (names and sources) of the configuration; with any, what
     * rm_tls_ctx_rebuild needs: the typed_config as configured (references unresolved), the
     * options (<statics> a reference) and the path; <sf_stats> the socket factory's counters.
     * <ssl_ctx> is NULL when a referenced secret has not arrived: the context is not ready and
     * every handshake over it fails (-ENOKEY). */
    struct rm_sds_refs sds;
    ProtobufCMessage *src;
    char *src_path, *src_prefix, *src_alpn;
    struct rm_secrets *src_statics;
    struct rm_stats *sf_stats;
};

/* Per-connection state (conn->tp_ctx). */
struct tls_conn {
    SSL *ssl;
    struct rm_tls_ctx *ctx; /* a reference */
    bool done;              /* handshake finished */
    bool failed;            /* a fatal error: no close_notify */
};

/* ---- sharing the SSL_CTX ------------------------------------------------------------------ */

/* Client contexts whose heavy configuration is the same (certificate chain and key, trust
 * anchors, tls_params, verify depth, configured alpn_protocols: everything the SSL_CTX holds)
 * share one SSL_CTX, found in a process-wide table keyed by that configuration (client_key).
 * What differs between them (sni, SAN matchers, ACCEPT_UNTRUSTED, stats) stays in each
 * rm_tls_ctx, which the callbacks find per connection.
 *
 * Server contexts share the same way, under another key (server_key): the owner's stat_prefix,
 * the default ALPN and the whole DownstreamTlsContext (and its files).  So a listener rebuilt
 * with the same TLS configuration by a config update keeps its SSL_CTX, and with it its session
 * cache and session ticket keys: clients resume across the update.  The stat_prefix keeps two
 * listeners apart even when their configurations are equal, because the session cache, the
 * ticket keys and the session id context are per SSL_CTX: a session of one listener never
 * resumes on another (as in Envoy, where each listener has its own ticket keys).
 *
 * An entry is counted by the contexts using it (<users>) and leaves the table with the last;
 * rm_tls_ctx_unref runs on any thread, so the table is under <share_lock>. */
struct ssl_share {
    struct ssl_share *next;
    uint64_t hash;
    unsigned char *key; /* may hold inline key bytes: cleansed before it is freed (key_free) */
    size_t key_len;
    SSL_CTX *ssl_ctx; /* the table's reference */
    unsigned users;   /* under share_lock */
};

static pthread_mutex_t share_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ssl_share *share_head; /* under share_lock */

/* Free a key (client_key): inline DataSources, private keys included, are in it. */
static void key_free(unsigned char *key, size_t len)
{
    if (key) OPENSSL_cleanse(key, len);
    free(key);
}

static uint64_t share_hash(const unsigned char *k, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ k[i]) * 1099511628211ull;
    return h;
}

/* The entry for <key>, counted once more, with a new reference to its SSL_CTX in *ctx; NULL
 * when there is none. */
static struct ssl_share *share_find(const unsigned char *key, size_t len, SSL_CTX **ctx)
{
    uint64_t h = share_hash(key, len);
    pthread_mutex_lock(&share_lock);
    struct ssl_share *e = share_head;
    while (e && !(e->hash == h && e->key_len == len && memcmp(e->key, key, len) == 0))
        e = e->next;
    if (e && SSL_CTX_up_ref(e->ssl_ctx) == 1) {
        e->users++;
        *ctx = e->ssl_ctx;
    } else {
        e = NULL;
    }
    pthread_mutex_unlock(&share_lock);
    return e;
}

/* A new entry for <key> (taken: freed here on failure) and <ctx> (the table takes its own
 * reference), counted once for the caller; NULL when out of memory (the caller then keeps its
 * SSL_CTX to itself). */
static struct ssl_share *share_add(unsigned char *key, size_t len, SSL_CTX *ctx)
{
    struct ssl_share *e = calloc(1, sizeof(*e));
    if (!e || SSL_CTX_up_ref(ctx) != 1) {
        free(e);
        key_free(key, len);
        return NULL;
    }
    *e = (struct ssl_share){
        .hash = share_hash(key, len), .key = key, .key_len = len, .ssl_ctx = ctx, .users = 1};
    pthread_mutex_lock(&share_lock);
    e->next = share_head;
    share_head = e;
    pthread_mutex_unlock(&share_lock);
    return e;
}

/* One user less (any thread); the last removes the entry and drops the table's reference.
 * NULL is a no-op. */
static void share_release(struct ssl_share *e)
{
    if (!e) return;
    pthread_mutex_lock(&share_lock);
    bool last = --e->users == 0;
    if (last) {
        struct ssl_share **pp = &share_head;
        while (*pp != e)
            pp = &(*pp)->next;
        *pp = e->next;
    }
    pthread_mutex_unlock(&share_lock);
    if (!last) return;
    SSL_CTX_free(e->ssl_ctx);
    key_free(e->key, e->key_len);
    free(e);
}

struct rm_tls_ctx *rm_tls_ctx_ref(struct rm_tls_ctx *t)
{
    atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
    return t;
}

void rm_tls_ctx_unref(struct rm_tls_ctx *t)
{
    if (!t || atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1) return;
    share_release(t->share);
    for (unsigned i = 0; i < t->n_sessions; i++)
        SSL_SESSION_free(t->sessions[i]);
    free(t->sessions);
    pthread_mutex_destroy(&t->sess_lock);
    SSL_CTX_free(t->ssl_ctx);
    rm_stats_release(t->stats); /* the last context of a removed cluster or listener */
    rm_stats_release(t->sf_stats);
    rm_sds_refs_dispose(&t->sds);
    if (t->src) protobuf_c_message_free_unpacked(t->src, NULL);
    free(t->src_path);
    free(t->src_prefix);
    free(t->src_alpn);
    rm_secrets_unref(t->src_statics);
    for (size_t i = 0; i < t->n_sans; i++)
        free(t->sans[i].s);
    free(t->sans);
    free(t->alpn);
    free(t->sni);
    free(t);
}

/* OpenSSL's queued errors as text ("error:…:reason"), the queue cleared. */
static const char *ossl_errors(char *buf, size_t len)
{
    unsigned long e = ERR_get_error();
    if (!e) {
        snprintf(buf, len, "unknown OpenSSL error");
        return buf;
    }
    ERR_error_string_n(e, buf, len);
    ERR_clear_error();
    return buf;
}

/* The bytes of a DataSource (malloc'd, NUL-terminated; *n without the NUL).  Errors name the
 * specifier under <path>. */
static int read_datasource(const DataSource *ds, const char *path, char **out, size_t *n,
                           struct rm_error *err)
{
    *out = NULL;
    const char *src = NULL;
    size_t len = 0;
    switch (ds ? ds->specifier_case : ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER__NOT_SET) {
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_FILENAME: {
        FILE *f = fopen(ds->filename, "rb");
        if (!f)
            return rm_error_set(err, "%s.filename: cannot read %s: %s", path, ds->filename,
                                strerror(errno));
        char *buf = malloc(MAX_DATASOURCE + 1);
        size_t got = buf ? fread(buf, 1, MAX_DATASOURCE + 1, f) : 0;
        bool bad = !buf || ferror(f) || got > MAX_DATASOURCE;
        int e = errno;
        fclose(f);
        if (bad) {
            free(buf);
            return rm_error_set(err, "%s.filename: cannot read %s: %s", path, ds->filename,
                                got > MAX_DATASOURCE ? "larger than 4 MiB" : strerror(e));
        }
        buf[got] = 0;
        *out = buf;
        *n = got;
        return RM_OK;
    }
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_BYTES:
        src = (const char *)ds->inline_bytes.data;
        len = ds->inline_bytes.len;
        break;
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_STRING:
        src = ds->inline_string;
        len = strlen(src);
        break;
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_ENVIRONMENT_VARIABLE:
        src = getenv(ds->environment_variable);
        if (!src)
            return rm_error_set(err, "%s.environment_variable: %s is not set", path,
                                ds->environment_variable);
        len = strlen(src);
        break;
    default:
        return rm_error_set(err,
                            "%s: one of filename, inline_bytes, inline_string or "
                            "environment_variable is required",
                            path);
    }
    char *buf = malloc(len + 1);
    if (!buf) return rm_error_set(err, "%s: out of memory", path);
    if (len) memcpy(buf, src, len);
    buf[len] = 0;
    *out = buf;
    *n = len;
    return RM_OK;
}

/* Where a DataSource's bytes came from, for messages: "<path>.filename" etc. */
static const char *ds_where(const DataSource *ds, const char *path, char *buf, size_t len)
{
    const char *f = "inline";
    if (ds->specifier_case == ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_FILENAME)
        f = "filename";
    else if (ds->specifier_case == ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_BYTES)
        f = "inline_bytes";
    else if (ds->specifier_case == ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_STRING)
        f = "inline_string";
    else if (ds->specifier_case ==
             ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_ENVIRONMENT_VARIABLE)
        f = "environment_variable";
    snprintf(buf, len, "%s.%s", path, f);
    return buf;
}

/* tls_certificates[i]: a PEM chain (leaf first) and its PEM private key. */
static int load_certificate(SSL_CTX *ctx, const TlsCertificate *tc, const char *path,
                            struct rm_error *err)
{
    char p[PATH_LEN], w[PATH_LEN], e[256];
    static const struct {
        size_t off;
        const char *name;
    } unsupported[] = {
        {offsetof(TlsCertificate, pkcs12), "pkcs12"},
        {offsetof(TlsCertificate, password), "password"},
        {offsetof(TlsCertificate, ocsp_staple), "ocsp_staple"},
    };
    for (size_t i = 0; i < sizeof(unsupported) / sizeof(unsupported[0]); i++) {
        if (*(void *const *)((const char *)tc + unsupported[i].off))
            return rm_error_set(err, "%s.%s: not supported by remora yet", path,
                                unsupported[i].name);
    }
    if (tc->n_signed_certificate_timestamp)
        return rm_error_set(err, "%s.signed_certificate_timestamp: not supported by remora yet",
                            path);
    if (!tc->certificate_chain || !tc->private_key)
        return rm_error_set(err, "%s: certificate_chain and private_key are required", path);
    char *pem = NULL;
    size_t n;
    snprintf(p, sizeof(p), "%s.certificate_chain", path);
    if (read_datasource(tc->certificate_chain, p, &pem, &n, err)) return RM_ERR;
    ds_where(tc->certificate_chain, p, w, sizeof(w));
    BIO *bio = BIO_new_mem_buf(pem, (int)n);
    X509 *leaf = bio ? PEM_read_bio_X509_AUX(bio, NULL, NULL, NULL) : NULL;
    if (!leaf || SSL_CTX_use_certificate(ctx, leaf) != 1) {
        rm_error_set(err, "%s: no PEM certificate (%s)", w, ossl_errors(e, sizeof(e)));
        goto fail;
    }
    X509 *ca;
    while ((ca = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        if (SSL_CTX_add0_chain_cert(ctx, ca) != 1) {
            X509_free(ca);
            rm_error_set(err, "%s: bad chain certificate (%s)", w, ossl_errors(e, sizeof(e)));
            goto fail;
        }
    }
    ERR_clear_error(); /* the end of the PEM input */
    X509_free(leaf);
    leaf = NULL;
    BIO_free(bio);
    free(pem);
    pem = NULL;
    snprintf(p, sizeof(p), "%s.private_key", path);
    if (read_datasource(tc->private_key, p, &pem, &n, err)) return RM_ERR;
    ds_where(tc->private_key, p, w, sizeof(w));
    bio = BIO_new_mem_buf(pem, (int)n);
    EVP_PKEY *key = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
    if (!key) {
        rm_error_set(err, "%s: no PEM private key (%s)", w, ossl_errors(e, sizeof(e)));
        goto fail;
    }
    int ok = SSL_CTX_use_PrivateKey(ctx, key) == 1 && SSL_CTX_check_private_key(ctx) == 1;
    EVP_PKEY_free(key);
    if (!ok) {
        rm_error_set(err, "%s: the key does not match the certificate (%s)", w,
                     ossl_errors(e, sizeof(e)));
        goto fail;
    }
    OPENSSL_cleanse(pem, n);
    BIO_free(bio);
    free(pem);
    return RM_OK;
fail:
    X509_free(leaf);
    BIO_free(bio);
    if (pem) OPENSSL_cleanse(pem, n);
    free(pem);
    return RM_ERR;
}

/* trusted_ca: every PEM certificate in it becomes a trust anchor (and, for a server, a CA name
 * sent in its certificate request). */
static int load_trusted_ca(SSL_CTX *ctx, const DataSource *ds, const char *path, bool server,
                           struct rm_error *err)
{
    char *pem;
    size_t n;
    char w[PATH_LEN], e[256];
    if (read_datasource(ds, path, &pem, &n, err)) return RM_ERR;
    ds_where(ds, path, w, sizeof(w));
    BIO *bio = BIO_new_mem_buf(pem, (int)n);
    STACK_OF(X509_INFO) *infos = bio ? PEM_X509_INFO_read_bio(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    free(pem);
    if (!infos) return rm_error_set(err, "%s: no PEM certificate (%s)", w, ossl_errors(e, 256));
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    int count = 0, rc = RM_OK;
    for (int i = 0; i < sk_X509_INFO_num(infos); i++) {
        X509_INFO *xi = sk_X509_INFO_value(infos, i);
        if (!xi->x509) continue;
        if (X509_STORE_add_cert(store, xi->x509) != 1 ||
            (server && SSL_CTX_add_client_CA(ctx, xi->x509) != 1)) {
            rc = rm_error_set(err, "%s: cannot use certificate %d (%s)", w, i,
                              ossl_errors(e, sizeof(e)));
            break;
        }
        count++;
    }
    sk_X509_INFO_pop_free(infos, X509_INFO_free);
    if (rc == RM_OK && count == 0) return rm_error_set(err, "%s: no PEM certificate", w);
    return rc;
}

static int san_type(int t)
{
    switch (t) {
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SUBJECT_ALT_NAME_MATCHER__SAN_TYPE__EMAIL:
        return GEN_EMAIL;
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SUBJECT_ALT_NAME_MATCHER__SAN_TYPE__DNS:
        return GEN_DNS;
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SUBJECT_ALT_NAME_MATCHER__SAN_TYPE__URI:
        return GEN_URI;
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SUBJECT_ALT_NAME_MATCHER__SAN_TYPE__IP_ADDRESS:
        return GEN_IPADD;
    default:
        return -1;
    }
}

/* One matcher (string matcher <sm> at <path>, for SANs of <type>) into t->sans. */
static int add_san(struct rm_tls_ctx *t, int type, const StringMatcher *sm, const char *path,
                   struct rm_error *err)
{
    if (!sm) return rm_error_set(err, "%s: required", path);
    const char *s;
    switch (sm->match_pattern_case) {
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_EXACT:
        s = sm->exact;
        break;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_PREFIX:
        s = sm->prefix;
        break;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SUFFIX:
        s = sm->suffix;
        break;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_CONTAINS:
        s = sm->contains;
        break;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SAFE_REGEX:
        return rm_error_set(err,
                            "%s.safe_regex: not supported by remora yet for subject alt "
                            "names (exact, prefix, suffix or contains)",
                            path);
    default:
        return rm_error_set(err, "%s: one of exact, prefix, suffix or contains is required", path);
    }
    struct san_match *v = realloc(t->sans, (t->n_sans + 1) * sizeof(*v));
    if (!v) return rm_error_set(err, "%s: out of memory", path);
    t->sans = v;
    struct san_match *m = &t->sans[t->n_sans];
    *m = (struct san_match){.type = type,
                            .kind = (int)sm->match_pattern_case,
                            .ignore_case = sm->ignore_case,
                            .s = strdup(s ? s : "")};
    if (!m->s) return rm_error_set(err, "%s: out of memory", path);
    t->n_sans++;
    return RM_OK;
}

static int load_sans(struct rm_tls_ctx *t, const ValidationContext *vc, const char *path,
                     struct rm_error *err);

/* The certificate validation context at <path>: trust anchors, SAN matchers, chain policy.
 * Unsupported checks (pins, CRLs, …) are errors. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
static int load_validation(struct rm_tls_ctx *t, const ValidationContext *vc, const char *path,
                           struct rm_error *err)
{
    char p[PATH_LEN];
    if (vc->n_verify_certificate_spki)
        return rm_error_set(err, "%s.verify_certificate_spki: not supported by remora yet", path);
    if (vc->n_verify_certificate_hash)
        return rm_error_set(err, "%s.verify_certificate_hash: not supported by remora yet", path);
    if (vc->crl) return rm_error_set(err, "%s.crl: CRLs are not supported by remora yet", path);
    if (vc->allow_expired_certificate)
        return rm_error_set(err, "%s.allow_expired_certificate: not supported by remora yet", path);
    if (!vc->trusted_ca)
        return rm_error_set(err,
                            "%s.trusted_ca: required by remora (certificate validation "
                            "without trust anchors is not supported)",
                            path);
    snprintf(p, sizeof(p), "%s.trusted_ca", path);
    if (load_trusted_ca(t->ssl_ctx, vc->trusted_ca, p, t->side == RM_TLS_SERVER, err))
        return RM_ERR;
    if (load_sans(t, vc, path, err)) return RM_ERR;
    if (vc->max_verify_depth)
        SSL_CTX_set_verify_depth(t->ssl_ctx, (int)vc->max_verify_depth->value);
    return RM_OK;
}
#pragma GCC diagnostic pop

/* The light part of the validation context at <path> (into <t>, never its SSL_CTX): the SAN
 * matchers and ACCEPT_UNTRUSTED. */
static int load_sans(struct rm_tls_ctx *t, const ValidationContext *vc, const char *path,
                     struct rm_error *err)
{
    char p[PATH_LEN];
    for (size_t i = 0; i < vc->n_match_typed_subject_alt_names; i++) {
        const SanMatcher *m = vc->match_typed_subject_alt_names[i];
        snprintf(p, sizeof(p), "%s.match_typed_subject_alt_names[%zu]", path, i);
        int type = san_type((int)m->san_type);
        if (type < 0)
            return rm_error_set(err,
                                "%s.san_type: must be EMAIL, DNS, URI or IP_ADDRESS "
                                "(OTHER_NAME is not supported by remora yet)",
                                p);
        char mp[PATH_LEN];
        snprintf(mp, sizeof(mp), "%s.matcher", p);
        if (add_san(t, type, m->matcher, mp, err)) return RM_ERR;
    }
    for (size_t i = 0; i < vc->n_match_subject_alt_names; i++) {
        snprintf(p, sizeof(p), "%s.match_subject_alt_names[%zu]", path, i);
        if (add_san(t, 0, vc->match_subject_alt_names[i], p, err)) return RM_ERR;
    }
    t->accept_untrusted =
        vc->trust_chain_verification ==
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__CERTIFICATE_VALIDATION_CONTEXT__TRUST_CHAIN_VERIFICATION__ACCEPT_UNTRUSTED;
    return RM_OK;
}

/* ---- verification ------------------------------------------------------------------------- */

static bool str_match(const struct san_match *m, const char *v, size_t n)
{
    size_t k = strlen(m->s);
    int (*cmp)(const char *, const char *, size_t) = m->ignore_case ? strncasecmp : strncmp;
    switch (m->kind) {
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_EXACT:
        return n == k && cmp(v, m->s, n) == 0;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_PREFIX:
        return n >= k && cmp(v, m->s, k) == 0;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SUFFIX:
        return n >= k && cmp(v + n - k, m->s, k) == 0;
    default: /* contains */
        for (size_t i = 0; i + k <= n; i++) {
            if (cmp(v + i, m->s, k) == 0) return true;
        }
        return false;
    }
}

/* A DNS SAN "*.example.com" matches exactly one label, as Envoy's exact DNS matching does. */
static bool dns_wildcard_match(const struct san_match *m, const char *v, size_t n)
{
    if (m->kind != ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_EXACT || n < 3 ||
        v[0] != '*' || v[1] != '.')
        return false;
    const char *dot = strchr(m->s, '.');
    if (!dot || dot == m->s) return false;
    return strlen(dot) == n - 1 && strncasecmp(dot, v + 1, n - 1) == 0;
}

static bool san_matches(const struct rm_tls_ctx *t, X509 *cert)
{
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    if (!names) return false;
    bool ok = false;
    for (int i = 0; !ok && i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        char ip[INET6_ADDRSTRLEN];
        const char *v = NULL;
        size_t n = 0;
        if (g->type == GEN_DNS || g->type == GEN_URI || g->type == GEN_EMAIL) {
            v = (const char *)ASN1_STRING_get0_data(g->d.ia5);
            n = (size_t)ASN1_STRING_length(g->d.ia5);
        } else if (g->type == GEN_IPADD) {
            int len = ASN1_STRING_length(g->d.ip);
            int af = len == 4 ? AF_INET : len == 16 ? AF_INET6 : -1;
            if (af < 0 || !inet_ntop(af, ASN1_STRING_get0_data(g->d.ip), ip, sizeof(ip))) continue;
            v = ip;
            n = strlen(ip);
        } else {
            continue;
        }
        if (memchr(v, 0, n)) continue; /* embedded NUL: never a match */
        for (size_t j = 0; !ok && j < t->n_sans; j++) {
            const struct san_match *m = &t->sans[j];
            if (m->type && m->type != g->type) continue;
            ok = str_match(m, v, n) || (g->type == GEN_DNS && dns_wildcard_match(m, v, n));
        }
    }
    GENERAL_NAMES_free(names);
    return ok;
}

/* OpenSSL's per-certificate verification callback (the connection's own rm_tls_ctx: its SSL
 * app data, as the SSL_CTX may be shared): the chain as OpenSSL checks it (unless
 * ACCEPT_UNTRUSTED), then the peer's SANs against the matchers at depth 0.  A SAN mismatch
 * fails the handshake with X509_V_ERR_HOSTNAME_MISMATCH (counted as fail_verify_san). */
static int verify_cb(int ok, X509_STORE_CTX *x)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
    const struct rm_tls_ctx *t = ssl ? SSL_get_app_data(ssl) : NULL; /* rm_conn_start_tls */
    if (!t) return ok;
    if (!ok && t->accept_untrusted) ok = 1;
    if (!ok || X509_STORE_CTX_get_error_depth(x) != 0 || !t->n_sans) return ok;
    if (san_matches(t, X509_STORE_CTX_get_current_cert(x))) return 1;
    X509_STORE_CTX_set_error(x, X509_V_ERR_HOSTNAME_MISMATCH);
    return 0;
}

/* ---- ALPN --------------------------------------------------------------------------------- */

/* Append <name> to the wire-format list *w / *n.  RM_ERR on a bad name. */
static int alpn_add(unsigned char **w, size_t *n, const char *name, size_t len)
{
    if (len == 0 || len > 255) return RM_ERR;
    unsigned char *v = realloc(*w, *n + 1 + len);
    if (!v) return RM_ERR;
    v[*n] = (unsigned char)len;
    memcpy(v + *n + 1, name, len);
    *w = v;
    *n += 1 + len;
    return RM_OK;
}

/* Server ALPN: the first of the connection's context's protocols (its SSL app data) that the
 * client offers. */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)arg;
    const struct rm_tls_ctx *t = SSL_get_app_data(ssl);
    unsigned char *sel = NULL;
    if (!t || !t->alpn_len ||
        SSL_select_next_proto(&sel, outlen, t->alpn, (unsigned)t->alpn_len, in, inlen) !=
            OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK; /* no common protocol: go on without ALPN */
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

/* ---- secrets by name (SdsSecretConfig without sds_config: Envoy's static SDS) ------------ */

/* Where the parts of a context that came from secrets are defined, for error messages: "<the
 * reference's path> -> static_resources.secrets[i].<kind>" ("": not from a secret). */
struct resolved {
    char cert_path[PATH_LEN]; /* tls_certificates[0]'s */
    char vc_path[PATH_LEN];   /* the validation context's */
    struct rm_sds_refs sds;   /* the references with an sds_config */
    bool missing;             /* one of them names a secret that has not arrived */
};

/* One message of descriptor <d>: <src>[<n>] (NULL ones skipped) merged in order, a deep copy
 * (pack / unpack: the caller owns it and frees it with the message it goes into).  NULL: out
 * of memory. */
static ProtobufCMessage *copy_messages(const ProtobufCMessageDescriptor *d,
                                       const ProtobufCMessage *const *src, size_t n)
{
    size_t len = 0;
    for (size_t i = 0; i < n; i++)
        len += src[i] ? protobuf_c_message_get_packed_size(src[i]) : 0;
    uint8_t *b = malloc(len + 1), *w = b;
    if (!b) return NULL;
    for (size_t i = 0; i < n; i++)
        w += src[i] ? protobuf_c_message_pack(src[i], w) : 0;
    /* protobuf's MergeFrom in wire form: later singular fields win, submessages merge,
     * repeated fields concatenate */
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, len, b);
    key_free(b, len);
    return m;
}

/* The secret <ref> at <path> names, which must be of kind <kind> (<what> names it), into *out:
 * a static secret of <o>'s table, or (the reference has an sds_config: dynamic SDS, recorded
 * in <r>) one received over SDS, *out NULL and r->missing set when it has not arrived yet.
 * RM_ERR with <err>: no name, a bad sds_config, no such static secret, another kind. */
static int find_secret(const SdsSecretConfig *ref, const struct rm_tls_opts *o, int kind,
                       const char *what, const char *path, struct resolved *r, const Secret **out,
                       struct rm_error *err)
{
    *out = NULL;
    if (!ref->name || !ref->name[0]) return rm_error_set(err, "%s.name: required", path);
    const struct rm_secrets *table = o->secrets;
    if (ref->sds_config) {
        char p[PATH_LEN];
        struct rm_config_source src;
        snprintf(p, sizeof(p), "%s.sds_config", path);
        if (rm_config_source_parse(ref->sds_config, p, &src, err)) return RM_ERR;
        rm_sds_refs_add(&r->sds, ref->name, &src);
        rm_config_source_dispose(&src);
        table = o->sds;
    }
    const Secret *s = rm_secrets_find(table, ref->name);
    if (!s && ref->sds_config) {
        r->missing = true;
        return RM_OK;
    }
    if (!s)
        return rm_error_set(err, "%s.name: no secret \"%s\" in static_resources.secrets", path,
                            ref->name);
    if ((int)s->type_case != kind)
        return rm_error_set(err, "%s.name: secret \"%s\" (%s) is not a %s secret", path, ref->name,
                            rm_secrets_path(table, ref->name), what);
    *out = s;
    return RM_OK;
}

/* Where secret <s> (from <ref>) was defined, for messages. */
static const char *secret_path(const SdsSecretConfig *ref, const struct rm_tls_opts *o,
                               const Secret *s)
{
    return rm_secrets_path(ref->sds_config ? o->sds : o->secrets, s->name);
}

/* tls_certificate_sds_secret_configs of <cc> (at <path>) become tls_certificates, after the
 * inline ones. */
static int resolve_certificates(CommonTlsContext *cc, const struct rm_tls_opts *o, const char *path,
                                struct resolved *r, struct rm_error *err)
{
    char p[PATH_LEN];
    size_t n = cc->n_tls_certificates + cc->n_tls_certificate_sds_secret_configs;
    for (size_t i = 0; i < cc->n_tls_certificate_sds_secret_configs; i++) {
        snprintf(p, sizeof(p), "%s.tls_certificate_sds_secret_configs[%zu]", path, i);
        const SdsSecretConfig *ref = cc->tls_certificate_sds_secret_configs[i];
        const Secret *s;
        if (find_secret(ref, o,
                        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_TLS_CERTIFICATE,
                        "tls_certificate", p, r, &s, err))
            return RM_ERR;
        if (!s) continue; /* not arrived: the context will not be ready */
        TlsCertificate **v = realloc(cc->tls_certificates, n * sizeof(*v));
        if (!v) return rm_error_set(err, "%s: out of memory", p);
        cc->tls_certificates = v;
        const ProtobufCMessage *src = &s->tls_certificate->base;
        v[cc->n_tls_certificates] = (TlsCertificate *)copy_messages(
            &envoy__extensions__transport_sockets__tls__v3__tls_certificate__descriptor, &src, 1);
        if (!v[cc->n_tls_certificates]) return rm_error_set(err, "%s: out of memory", p);
        if (cc->n_tls_certificates++ == 0)
            snprintf(r->cert_path, sizeof(r->cert_path), "%s -> %s.tls_certificate", p,
                     secret_path(ref, o, s));
    }
    for (size_t i = 0; i < cc->n_tls_certificate_sds_secret_configs; i++)
        protobuf_c_message_free_unpacked(&cc->tls_certificate_sds_secret_configs[i]->base, NULL);
    free(cc->tls_certificate_sds_secret_configs);
    cc->tls_certificate_sds_secret_configs = NULL;
    cc->n_tls_certificate_sds_secret_configs = 0;
    return RM_OK;
}

/* validation_context_sds_secret_config of <cc> (alone, or in combined_validation_context after
 * its default_validation_context: Envoy's merge, default then the secret's fields over it)
 * becomes a plain validation_context. */
static int resolve_validation(CommonTlsContext *cc, const struct rm_tls_opts *o, const char *path,
                              struct resolved *r, struct rm_error *err)
{
    char p[PATH_LEN];
    const SdsSecretConfig *ref = NULL;
    const ProtobufCMessage *src[2] = {NULL, NULL};
    if (cc->validation_context_type_case ==
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_VALIDATION_CONTEXT_SDS_SECRET_CONFIG) {
        ref = cc->validation_context_sds_secret_config;
        snprintf(p, sizeof(p), "%s.validation_context_sds_secret_config", path);
    } else if (
        cc->validation_context_type_case ==
            ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_COMBINED_VALIDATION_CONTEXT &&
        cc->combined_validation_context->validation_context_sds_secret_config) {
        ref = cc->combined_validation_context->validation_context_sds_secret_config;
        src[0] =
            (const ProtobufCMessage *)cc->combined_validation_context->default_validation_context;
        snprintf(p, sizeof(p),
                 "%s.combined_validation_context.validation_context_sds_secret_config", path);
    }
    if (!ref) return RM_OK;
    const Secret *s;
    if (find_secret(ref, o,
                    ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_VALIDATION_CONTEXT,
                    "validation_context", p, r, &s, err))
        return RM_ERR;
    if (!s) return RM_OK; /* not arrived: the context will not be ready */
    src[1] = &s->validation_context->base;
    ValidationContext *vc = (ValidationContext *)copy_messages(
        &envoy__extensions__transport_sockets__tls__v3__certificate_validation_context__descriptor,
        src, 2);
    if (!vc) return rm_error_set(err, "%s: out of memory", p);
    snprintf(r->vc_path, sizeof(r->vc_path), "%s -> %s.validation_context", p,
             secret_path(ref, o, s));
    /* the reference (or combined context) is replaced: one of the oneof's members */
    protobuf_c_message_free_unpacked(src[0] ? &cc->combined_validation_context->base
                                            : &cc->validation_context_sds_secret_config->base,
                                     NULL);
    cc->validation_context_type_case =
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_VALIDATION_CONTEXT;
    cc->validation_context = vc;
    return RM_OK;
}

/* The SDS references of <m> (a DownstreamTlsContext or an UpstreamTlsContext per <o>'s side, at
 * <path>) replaced, in place, by copies of the secrets they name in <o>'s tables (static, or
 * received over SDS for a reference with an sds_config); where those came from, the dynamic
 * references and whether one of them is missing in <r>.  A reference to an unknown static
 * name or to a secret of another kind is an error naming it. */
static int resolve_secrets(ProtobufCMessage *m, const struct rm_tls_opts *o, const char *path,
                           struct resolved *r, struct rm_error *err)
{
    char p[PATH_LEN];
    CommonTlsContext *cc = o->side == RM_TLS_SERVER
                               ? ((DownstreamTlsContext *)m)->common_tls_context
                               : ((UpstreamTlsContext *)m)->common_tls_context;
    if (!cc) return RM_OK;
    snprintf(p, sizeof(p), "%s.common_tls_context", path);
    if (resolve_certificates(cc, o, p, r, err)) return RM_ERR;
    return resolve_validation(cc, o, p, r, err);
}

/* ---- building ----------------------------------------------------------------------------- */

static int tls_version(int v, int dflt)
{
    switch (v) {
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__TLS_PARAMETERS__TLS_PROTOCOL__TLSv1_0:
        return TLS1_VERSION;
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__TLS_PARAMETERS__TLS_PROTOCOL__TLSv1_1:
        return TLS1_1_VERSION;
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__TLS_PARAMETERS__TLS_PROTOCOL__TLSv1_2:
        return TLS1_2_VERSION;
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__TLS_PARAMETERS__TLS_PROTOCOL__TLSv1_3:
        return TLS1_3_VERSION;
    default:
        return dflt;
    }
}

/* Join <v>[<n>] with ':' (OpenSSL's list syntax); NULL when out of memory. */
static char *join(char **v, size_t n)
{
    size_t len = 1;
    for (size_t i = 0; i < n; i++)
        len += strlen(v[i]) + 1;
    char *s = calloc(1, len);
    for (size_t i = 0; s && i < n; i++) {
        if (i) strcat(s, ":");
        strcat(s, v[i]);
    }
    return s;
}

/* A list setter (cipher suites, curves, signature algorithms) over <v>[<n>]. */
static int set_list(SSL_CTX *ctx, int (*set)(SSL_CTX *, const char *), char **v, size_t n,
                    const char *path, struct rm_error *err)
{
    if (!n) return RM_OK;
    char *s = join(v, n), e[256];
    if (!s) return rm_error_set(err, "%s: out of memory", path);
    int ok = set(ctx, s);
    free(s);
    if (ok != 1)
        return rm_error_set(err, "%s: not accepted by OpenSSL (%s)", path,
                            ossl_errors(e, sizeof(e)));
    return RM_OK;
}

static int set_ciphers(SSL_CTX *ctx, const char *s)
{
    return SSL_CTX_set_cipher_list(ctx, s);
}
static int set_groups(SSL_CTX *ctx, const char *s)
{
    return (int)SSL_CTX_set1_groups_list(ctx, s);
}
static int set_sigalgs(SSL_CTX *ctx, const char *s)
{
    return (int)SSL_CTX_set1_sigalgs_list(ctx, s);
}

static int apply_params(SSL_CTX *ctx, const TlsParameters *tp, const char *path,
                        struct rm_error *err)
{
    char p[PATH_LEN];
    int min = TLS1_2_VERSION, max = TLS1_3_VERSION;
    if (tp) {
        min = tls_version((int)tp->tls_minimum_protocol_version, min);
        max = tls_version((int)tp->tls_maximum_protocol_version, max);
    }
    if (min > max)
        return rm_error_set(err,
                            "%s.tls_params: tls_minimum_protocol_version is above "
                            "tls_maximum_protocol_version",
                            path);
    SSL_CTX_set_min_proto_version(ctx, min);
    SSL_CTX_set_max_proto_version(ctx, max);
    if (!tp) return RM_OK;
    snprintf(p, sizeof(p), "%s.tls_params.cipher_suites", path);
    if (set_list(ctx, set_ciphers, tp->cipher_suites, tp->n_cipher_suites, p, err)) return RM_ERR;
    snprintf(p, sizeof(p), "%s.tls_params.ecdh_curves", path);
    if (set_list(ctx, set_groups, tp->ecdh_curves, tp->n_ecdh_curves, p, err)) return RM_ERR;
    snprintf(p, sizeof(p), "%s.tls_params.signature_algorithms", path);
    return set_list(ctx, set_sigalgs, tp->signature_algorithms, tp->n_signature_algorithms, p, err);
}

/* The validation context of <cc> at <path> in *vc (NULL: none) and its path in <p>
 * (PATH_LEN bytes; <r>'s when it came from a secret).  SDS references were resolved before
 * (resolve_secrets): none is left. */
static int find_validation(const CommonTlsContext *cc, const char *path, const struct resolved *r,
                           char *p, const ValidationContext **vc, struct rm_error *err)
{
    *vc = NULL;
    switch (cc->validation_context_type_case) {
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_VALIDATION_CONTEXT:
        *vc = cc->validation_context;
        snprintf(p, PATH_LEN, "%s.validation_context", path);
        break;
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_COMBINED_VALIDATION_CONTEXT:
        *vc = cc->combined_validation_context->default_validation_context;
        snprintf(p, PATH_LEN, "%s.combined_validation_context.default_validation_context", path);
        break;
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_VALIDATION_CONTEXT_SDS_SECRET_CONFIG:
        return rm_error_set(err, "%s.validation_context_sds_secret_config: not resolved", path);
    default:
        break;
    }
    if (r->vc_path[0]) snprintf(p, PATH_LEN, "%s", r->vc_path);
    return RM_OK;
}

/* alpn_protocols of <cc> at <path> (or, for a server without them, <o>'s default) into <t>. */
static int load_alpn(struct rm_tls_ctx *t, const CommonTlsContext *cc, const char *path,
                     const struct rm_tls_opts *o, struct rm_error *err)
{
    char p[PATH_LEN];
    for (size_t i = 0; i < cc->n_alpn_protocols; i++) {
        snprintf(p, sizeof(p), "%s.alpn_protocols[%zu]", path, i);
        const char *a = cc->alpn_protocols[i];
        if (alpn_add(&t->alpn, &t->alpn_len, a, strlen(a)))
            return rm_error_set(err, "%s: must be 1 to 255 bytes", p);
    }
    t->own_alpn = cc->n_alpn_protocols > 0;
    if (t->side == RM_TLS_SERVER && !t->own_alpn && o->default_alpn) {
        for (const char *s = o->default_alpn; *s;) {
            size_t n = strcspn(s, ",");
            if (alpn_add(&t->alpn, &t->alpn_len, s, n))
                return rm_error_set(err, "%s: out of memory", path);
            s += n + (s[n] == ',');
        }
    }
    return RM_OK;
}

/* common_tls_context at <path>: parameters, certificates, validation, ALPN. */
static int apply_common(struct rm_tls_ctx *t, const CommonTlsContext *cc, const char *path,
                        const struct rm_tls_opts *o, const struct resolved *r, struct rm_error *err)
{
    static const CommonTlsContext empty =
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__INIT;
    char p[PATH_LEN];
    if (!cc) cc = &empty;
    if (apply_params(t->ssl_ctx, cc->tls_params, path, err)) return RM_ERR;
    if (cc->n_tls_certificates > 1)
        return rm_error_set(err,
                            "%s.tls_certificates: one certificate is supported by remora "
                            "yet (got %zu)",
                            path, cc->n_tls_certificates);
    if (cc->n_tls_certificates) {
        if (r->cert_path[0])
            snprintf(p, sizeof(p), "%s", r->cert_path);
        else
            snprintf(p, sizeof(p), "%s.tls_certificates[0]", path);
        if (load_certificate(t->ssl_ctx, cc->tls_certificates[0], p, err)) return RM_ERR;
    } else if (t->side == RM_TLS_SERVER) {
        return rm_error_set(err,
                            "%s.tls_certificates: a listener needs a certificate (or "
                            "tls_certificate_sds_secret_configs)",
                            path);
    }
    const ValidationContext *vc = NULL;
    if (find_validation(cc, path, r, p, &vc, err)) return RM_ERR;
    if (vc && load_validation(t, vc, p, err)) return RM_ERR;
    return load_alpn(t, cc, path, o, err);
}

static int apply_server(struct rm_tls_ctx *t, const DownstreamTlsContext *d, const char *path,
                        const struct rm_tls_opts *o, const struct resolved *r, struct rm_error *err)
{
    char p[PATH_LEN];
    snprintf(p, sizeof(p), "%s.common_tls_context", path);
    if (rm_pb_bool(d->require_sni, false))
        return rm_error_set(err, "%s.require_sni: not supported by remora yet", path);
    if (d->ocsp_staple_policy !=
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__DOWNSTREAM_TLS_CONTEXT__OCSP_STAPLE_POLICY__LENIENT_STAPLING)
        return rm_error_set(err,
                            "%s.ocsp_staple_policy: OCSP stapling is not supported by "
                            "remora yet",
                            path);
    switch (d->session_ticket_keys_type_case) {
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__DOWNSTREAM_TLS_CONTEXT__SESSION_TICKET_KEYS_TYPE_SESSION_TICKET_KEYS:
        return rm_error_set(err, "%s.session_ticket_keys: not supported by remora yet", path);
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__DOWNSTREAM_TLS_CONTEXT__SESSION_TICKET_KEYS_TYPE_SESSION_TICKET_KEYS_SDS_SECRET_CONFIG:
        return rm_error_set(err,
                            "%s.session_ticket_keys_sds_secret_config: SDS is not supported "
                            "by remora yet",
                            path);
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__DOWNSTREAM_TLS_CONTEXT__SESSION_TICKET_KEYS_TYPE_DISABLE_STATELESS_SESSION_RESUMPTION:
        if (d->disable_stateless_session_resumption)
            SSL_CTX_set_options(t->ssl_ctx, SSL_OP_NO_TICKET);
        break;
    default:
        break;
    }
    if (d->session_timeout)
        SSL_CTX_set_timeout(t->ssl_ctx,
                            (long)((rm_pb_duration_ms(d->session_timeout, 0) + 999) / 1000));
    if (apply_common(t, d->common_tls_context, p, o, r, err)) return RM_ERR;
    bool has_ca = SSL_CTX_get_client_CA_list(t->ssl_ctx) != NULL &&
                  sk_X509_NAME_num(SSL_CTX_get_client_CA_list(t->ssl_ctx)) > 0;
    bool require = rm_pb_bool(d->require_client_certificate, false);
    if (require && !has_ca)
        return rm_error_set(err,
                            "%s.require_client_certificate: needs "
                            "common_tls_context.validation_context.trusted_ca",
                            path);
    if (has_ca)
        SSL_CTX_set_verify(t->ssl_ctx,
                           SSL_VERIFY_PEER | (require ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
                           verify_cb);
    if (t->alpn_len) SSL_CTX_set_alpn_select_cb(t->ssl_ctx, alpn_select, NULL);
    /* session IDs are per SSL_CTX, which belongs to one listener (server_key): its own id
     * space */
    static const unsigned char sid[] = "remora";
    SSL_CTX_set_session_id_context(t->ssl_ctx, sid, sizeof(sid) - 1);
    return RM_OK;
}

/* ---- client session resumption (UpstreamTlsContext.max_session_keys) ---------------------- */

#define MAX_SESSION_KEYS 1024

/* max_session_keys: Envoy's default 1 when unset, 0 turns resumption off. */
static int set_max_sessions(struct rm_tls_ctx *t, const UpstreamTlsContext *u, const char *path,
                            struct rm_error *err)
{
    unsigned n = u->max_session_keys ? u->max_session_keys->value : 1;
    if (n > MAX_SESSION_KEYS)
        return rm_error_set(err, "%s.max_session_keys: %u is more than remora keeps (%d)", path, n,
                            MAX_SESSION_KEYS);
    if (n && !(t->sessions = calloc(n, sizeof(*t->sessions))))
        return rm_error_set(err, "%s: out of memory", path);
    t->max_sessions = n;
    return RM_OK;
}

/* OpenSSL's new-session callback (client SSL_CTXs; TLS 1.3: a ticket read after the
 * handshake): keep <sess> as the newest of its context's sessions, the oldest dropped.
 * Returns 1 (the session is ours) or 0 (OpenSSL frees it). */
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    struct rm_tls_ctx *t = SSL_get_app_data(ssl);
    if (!t || !t->max_sessions) return 0;
    pthread_mutex_lock(&t->sess_lock);
    if (t->n_sessions == t->max_sessions) {
        SSL_SESSION_free(t->sessions[0]);
        memmove(t->sessions, t->sessions + 1, (t->n_sessions - 1) * sizeof(*t->sessions));
        t->n_sessions--;
    }
    t->sessions[t->n_sessions++] = sess;
    pthread_mutex_unlock(&t->sess_lock);
    return 1;
}

/* Offer the newest session to a new client connection.  A TLS 1.3 ticket is offered once
 * (taken out of the store, as Envoy does: RFC 8446 advises single use); a TLS 1.2 session
 * stays for the next connections.  No session: a full handshake. */
static void offer_session(struct rm_tls_ctx *t, SSL *ssl)
{
    if (!t->max_sessions) return;
    pthread_mutex_lock(&t->sess_lock);
    if (t->n_sessions) {
        SSL_SESSION *s = t->sessions[t->n_sessions - 1];
        SSL_set_session(ssl, s); /* takes its own reference */
        if (SSL_SESSION_get_protocol_version(s) >= TLS1_3_VERSION) {
            t->n_sessions--;
            SSL_SESSION_free(s);
        }
    }
    pthread_mutex_unlock(&t->sess_lock);
}

static int apply_client(struct rm_tls_ctx *t, const UpstreamTlsContext *u, const char *path,
                        const struct rm_tls_opts *o, const struct resolved *r, struct rm_error *err)
{
    char p[PATH_LEN];
    if (u->allow_renegotiation)
        return rm_error_set(err, "%s.allow_renegotiation: not supported by remora", path);
    /* resumption: sessions are kept per context (set_max_sessions), the SSL_CTX only hands
     * them over (OpenSSL's own client cache is not used: it would mix SNIs) */
    SSL_CTX_set_session_cache_mode(t->ssl_ctx,
                                   SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(t->ssl_ctx, on_new_session);
    snprintf(p, sizeof(p), "%s.common_tls_context", path);
    if (apply_common(t, u->common_tls_context, p, o, r, err)) return RM_ERR;
    if (u->sni && u->sni[0] && !(t->sni = strdup(u->sni)))
        return rm_error_set(err, "%s: out of memory", path);
    bool has_ca =
        X509_STORE_get0_objects(SSL_CTX_get_cert_store(t->ssl_ctx)) &&
        sk_X509_OBJECT_num(X509_STORE_get0_objects(SSL_CTX_get_cert_store(t->ssl_ctx))) > 0;
    /* Envoy: no validation context, no verification of the server's certificate */
    SSL_CTX_set_verify(t->ssl_ctx, has_ca ? SSL_VERIFY_PEER : SSL_VERIFY_NONE,
                       has_ca ? verify_cb : NULL);
    if (t->own_alpn && SSL_CTX_set_alpn_protos(t->ssl_ctx, t->alpn, (unsigned)t->alpn_len) != 0)
        return rm_error_set(err, "%s.alpn_protocols: out of memory", p);
    return RM_OK;
}

/* The light part of a context whose SSL_CTX comes from the table, alone: the SAN matchers and
 * ACCEPT_UNTRUSTED of <cc>'s validation context, ALPN, and (client) <sni>, into <t> (the same
 * fields and messages as the full build; the heavy ones were checked when the shared SSL_CTX was
 * built).  <path> is the DownstreamTlsContext's or UpstreamTlsContext's. */
static int apply_light(struct rm_tls_ctx *t, const CommonTlsContext *cc, const char *sni,
                       const char *path, const struct rm_tls_opts *o, const struct resolved *r,
                       struct rm_error *err)
{
    static const CommonTlsContext empty =
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__INIT;
    char p[PATH_LEN], vp[PATH_LEN];
    snprintf(p, sizeof(p), "%s.common_tls_context", path);
    if (!cc) cc = &empty;
    const ValidationContext *vc = NULL;
    if (find_validation(cc, p, r, vp, &vc, err)) return RM_ERR;
    if (vc && load_sans(t, vc, vp, err)) return RM_ERR;
    if (load_alpn(t, cc, p, o, err)) return RM_ERR;
    if (sni && sni[0] && !(t->sni = strdup(sni)))
        return rm_error_set(err, "%s: out of memory", path);
    return RM_OK;
}

/* ---- the sharing key ---------------------------------------------------------------------- */

struct key_buf {
    unsigned char *b;
    size_t n, cap;
    bool bad; /* out of memory, or a source that cannot be identified: no key */
};

static void key_put(struct key_buf *k, const void *v, size_t n)
{
    if (k->bad) return;
    if (k->n + n > k->cap) {
        size_t cap = (k->n + n) * 2;
        unsigned char *b = malloc(cap); /* not realloc: the old copy is cleansed */
        if (!b) {
            k->bad = true;
            return;
        }
        if (k->n) memcpy(b, k->b, k->n);
        key_free(k->b, k->n);
        k->b = b;
        k->cap = cap;
    }
    memcpy(k->b + k->n, v, n);
    k->n += n;
}

/* What the bytes of <ds> depend on beyond the message: a file's identity (device, inode, size,
 * modification and change times: a certificate rotated on disk gives another key, as a config
 * update re-reads it), an environment variable's value.  An unreadable source makes no key (the
 * full build reports it). */
static void key_datasource(struct key_buf *k, const DataSource *ds)
{
    if (!ds) return;
    if (ds->specifier_case == ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_FILENAME) {
        struct stat st;
        if (stat(ds->filename, &st) != 0) {
            k->bad = true;
            return;
        }
        uint64_t v[] = {(uint64_t)st.st_dev,          (uint64_t)st.st_ino,
                        (uint64_t)st.st_size,         (uint64_t)st.st_mtim.tv_sec,
                        (uint64_t)st.st_mtim.tv_nsec, (uint64_t)st.st_ctim.tv_sec,
                        (uint64_t)st.st_ctim.tv_nsec};
        key_put(k, "F", 1);
        key_put(k, v, sizeof(v));
    } else if (ds->specifier_case ==
               ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_ENVIRONMENT_VARIABLE) {
        const char *e = getenv(ds->environment_variable);
        if (!e) {
            k->bad = true;
            return;
        }
        uint64_t n = strlen(e);
        key_put(k, "E", 1);
        key_put(k, &n, sizeof(n));
        key_put(k, e, n);
    }
}

/* The validation context of <cc> (validation_context or combined_validation_context's
 * default), or NULL. */
static ValidationContext *key_validation(CommonTlsContext *cc)
{
    if (!cc) return NULL;
    if (cc->validation_context_type_case ==
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_VALIDATION_CONTEXT)
        return cc->validation_context;
    if (cc->validation_context_type_case ==
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_COMBINED_VALIDATION_CONTEXT)
        return cc->combined_validation_context->default_validation_context;
    return NULL;
}

/* <m> serialized, appended to <k> (the copy is cleansed: inline keys may be in it). */
static void key_message(struct key_buf *k, const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    unsigned char *b = malloc(n + 1);
    if (!b) {
        k->bad = true;
        return;
    }
    n = protobuf_c_message_pack(m, b);
    key_put(k, &n, sizeof(n));
    key_put(k, b, n);
    key_free(b, n);
}

/* A string (NULL as ""), length first, appended to <k>. */
static void key_string(struct key_buf *k, const char *s)
{
    uint64_t n = s ? strlen(s) : 0;
    key_put(k, &n, sizeof(n));
    if (n) key_put(k, s, n);
}

/* What the DataSources of <cc> (certificate chain, private key) and <vc> (trusted_ca) depend on
 * (key_datasource), appended to <k>; then the key is done: returned (its length in *len), or
 * NULL (freed) when it could not be made. */
static unsigned char *key_finish(struct key_buf *k, const CommonTlsContext *cc,
                                 const ValidationContext *vc, size_t *len)
{
    for (size_t i = 0; cc && i < cc->n_tls_certificates; i++) {
        key_datasource(k, cc->tls_certificates[i]->certificate_chain);
        key_datasource(k, cc->tls_certificates[i]->private_key);
    }
    if (vc) key_datasource(k, vc->trusted_ca);
    if (k->bad) {
        key_free(k->b, k->n);
        return NULL;
    }
    *len = k->n;
    return k->b;
}

/* The key of client context <u>'s heavy configuration (malloc'd, its length in *len): "C", <u>
 * serialized with the light fields cleared (sni; the validation context's SAN matchers and
 * trust_chain_verification), then what its DataSources depend on (key_datasource).  Every other
 * field counts as heavy, so a field unknown to this function can only prevent sharing.  NULL:
 * no sharing (out of memory, a source that cannot be identified).  <u> is modified and
 * restored before returning. */
static unsigned char *client_key(UpstreamTlsContext *u, size_t *len)
{
    CommonTlsContext *cc = u->common_tls_context;
    ValidationContext *vc = key_validation(cc);
    char *sni = u->sni;
    size_t n_sans = 0, n_typed = 0;
    int trust = 0;
    u->sni = (char *)"";
    if (vc) {
        n_sans = vc->n_match_subject_alt_names;
        n_typed = vc->n_match_typed_subject_alt_names;
        trust = (int)vc->trust_chain_verification;
        vc->n_match_subject_alt_names = 0;
        vc->n_match_typed_subject_alt_names = 0;
        vc->trust_chain_verification = 0;
    }
    struct key_buf k = {0};
    key_put(&k, "C", 1);
    key_message(&k, &u->base);
    u->sni = sni;
    if (vc) {
        vc->n_match_subject_alt_names = n_sans;
        vc->n_match_typed_subject_alt_names = n_typed;
        vc->trust_chain_verification = trust;
    }
    return key_finish(&k, cc, vc, len);
}

/* The key of server context <d> built with <o> (malloc'd, its length in *len): "S", the owner's
 * stat_prefix (one listener's contexts only: see tls.h), the default ALPN, all of <d>
 * serialized (on the server side every field matters), then what its DataSources depend on.
 * NULL: no sharing, as for client_key. */
static unsigned char *server_key(DownstreamTlsContext *d, const struct rm_tls_opts *o, size_t *len)
{
    struct key_buf k = {0};
    key_put(&k, "S", 1);
    key_string(&k, o->stat_prefix);
    key_string(&k, o->default_alpn);
    key_message(&k, &d->base);
    return key_finish(&k, d->common_tls_context, key_validation(d->common_tls_context), len);
}

static int build_ctx(ProtobufCMessage *m, const struct rm_tls_opts *o, const char *p,
                     struct rm_tls_ctx **out, struct rm_error *err);

int rm_tls_ctx_new(const Envoy__Config__Core__V3__TransportSocket *ts, const struct rm_tls_opts *o,
                   const char *path, struct rm_tls_ctx **out, struct rm_error *err)
{
    char p[PATH_LEN];
    *out = NULL;
    if (!ts->name || strcmp(ts->name, TLS_NAME) != 0) {
        if (ts->name && strcmp(ts->name, "envoy.transport_sockets.raw_buffer") == 0 &&
            ts->config_type_case !=
                ENVOY__CONFIG__CORE__V3__TRANSPORT_SOCKET__CONFIG_TYPE_TYPED_CONFIG)
            return RM_OK; /* plaintext, spelled out */
        if (ts->config_type_case !=
            ENVOY__CONFIG__CORE__V3__TRANSPORT_SOCKET__CONFIG_TYPE_TYPED_CONFIG)
            return rm_error_set(err,
                                "%s.name: \"%s\" is not supported by remora (only " TLS_NAME ")",
                                path, ts->name ? ts->name : "");
    }
    if (ts->config_type_case != ENVOY__CONFIG__CORE__V3__TRANSPORT_SOCKET__CONFIG_TYPE_TYPED_CONFIG)
        return rm_error_set(err, "%s.typed_config: required", path);
    /* OpenSSL is loaded now, by the first TLS context: every other entry point here is reached
     * only through a context (or a connection using one) */
    if (rm_ssl_api_load(err)) return rm_error_prefix(err, "%s: ", path);
    const ProtobufCMessageDescriptor *want =
        o->side == RM_TLS_SERVER
            ? &envoy__extensions__transport_sockets__tls__v3__downstream_tls_context__descriptor
            : &envoy__extensions__transport_sockets__tls__v3__upstream_tls_context__descriptor;
    snprintf(p, sizeof(p), "%s.typed_config", path);
    ProtobufCMessage *m = NULL;
    if (rm_pb_any_unpack(ts->typed_config, want, &m, err)) return rm_error_prefix(err, "%s: ", p);
    if (rm_pb_check_no_unknown(m, p, err)) {
        protobuf_c_message_free_unpacked(m, NULL);
        return RM_ERR;
    }
    return build_ctx(m, o, p, out, err);
}

/* What a context with dynamic SDS references keeps to be rebuilt (rm_tls_ctx_rebuild): <src>
 * (taken), the options and the path; and its factory counters. */
static void keep_source(struct rm_tls_ctx *t, ProtobufCMessage *src, const struct rm_tls_opts *o,
                        const char *p)
{
    t->src = src;
    if (!(t->src_path = strdup(p))) abort();
    if (o->stat_prefix && !(t->src_prefix = strdup(o->stat_prefix))) abort();
    if (o->default_alpn && !(t->src_alpn = strdup(o->default_alpn))) abort();
    t->src_statics = rm_secrets_ref((struct rm_secrets *)o->secrets);
    char prefix[512];
    snprintf(prefix, sizeof(prefix), "%s%s_ssl_socket_factory.",
             o->stat_prefix ? o->stat_prefix : "", o->side == RM_TLS_SERVER ? "server" : "client");
    t->sf_stats =
        rm_stats_get(prefix, o->side == RM_TLS_SERVER ? server_sf_defs : client_sf_defs, SF__COUNT);
}

/* Whether <m> (a DownstreamTlsContext or an UpstreamTlsContext per <side>) has a reference
 * with an sds_config. */
static bool has_sds_config(const ProtobufCMessage *m, enum rm_tls_side side)
{
    const CommonTlsContext *cc = side == RM_TLS_SERVER
                                     ? ((const DownstreamTlsContext *)m)->common_tls_context
                                     : ((const UpstreamTlsContext *)m)->common_tls_context;
    if (!cc) return false;
    for (size_t i = 0; i < cc->n_tls_certificate_sds_secret_configs; i++) {
        if (cc->tls_certificate_sds_secret_configs[i]->sds_config) return true;
    }
    const SdsSecretConfig *v = NULL;
    if (cc->validation_context_type_case ==
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_VALIDATION_CONTEXT_SDS_SECRET_CONFIG)
        v = cc->validation_context_sds_secret_config;
    else if (
        cc->validation_context_type_case ==
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_COMBINED_VALIDATION_CONTEXT)
        v = cc->combined_validation_context->validation_context_sds_secret_config;
    return v && v->sds_config;
}

/* A context from typed_config <m> (taken: freed here) at <p> (its path).  A copy of <m> as
 * configured (references unresolved) stays with a context that has SDS references. */
static int build_ctx(ProtobufCMessage *m, const struct rm_tls_opts *o, const char *p,
                     struct rm_tls_ctx **out, struct rm_error *err)
{
    *out = NULL;
    struct resolved r = {0};
    unsigned char *key = NULL;
    size_t key_len = 0;
    bool dyn = has_sds_config(m, o->side); /* then <m> as configured is kept: <src> */
    ProtobufCMessage *src =
        dyn ? copy_messages(m->descriptor, (const ProtobufCMessage *const *)&m, 1) : NULL;
    struct rm_tls_ctx *t = calloc(1, sizeof(*t));
    if (!t || (dyn && !src)) {
        rm_error_set(err, "%s: out of memory", p);
        free(t);
        t = NULL;
        goto fail_msg;
    }
    atomic_init(&t->refs, 1);
    pthread_mutex_init(&t->sess_lock, NULL);
    t->side = o->side;
    /* SDS references become the secrets' contents, in <m>: everything below (the sharing key
     * included) sees the resolved configuration */
    if (resolve_secrets(m, o, p, &r, err)) goto fail;
    t->sds = r.sds;
    r.sds = (struct rm_sds_refs){0};
    if (t->sds.n) {
        keep_source(t, src, o, p);
        src = NULL;
    }
    if (r.missing) goto stats; /* not ready: no SSL_CTX until the secrets arrive */
    int rc;
    if (o->side == RM_TLS_CLIENT && set_max_sessions(t, (const UpstreamTlsContext *)m, p, err))
        goto fail;
    if (o->side == RM_TLS_CLIENT)
        key = client_key((UpstreamTlsContext *)m, &key_len);
    else
        key = server_key((DownstreamTlsContext *)m, o, &key_len);
    if (key) t->share = share_find(key, key_len, &t->ssl_ctx);
    if (t->share) {
        key_free(key, key_len);
        if (o->side == RM_TLS_CLIENT)
            rc = apply_light(t, ((const UpstreamTlsContext *)m)->common_tls_context,
                             ((const UpstreamTlsContext *)m)->sni, p, o, &r, err);
        else
            rc = apply_light(t, ((const DownstreamTlsContext *)m)->common_tls_context, NULL, p, o,
                             &r, err);
        if (rc) goto fail;
        goto stats;
    }
    t->ssl_ctx = SSL_CTX_new(o->side == RM_TLS_SERVER ? TLS_server_method() : TLS_client_method());
    if (!t->ssl_ctx) {
        rm_error_set(err, "%s: SSL_CTX_new failed", p);
        goto fail_key;
    }
    SSL_CTX_set_options(t->ssl_ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                        SSL_OP_IGNORE_UNEXPECTED_EOF |
                                        SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* partial writes: SSL_write returns per record, so the conn's output buffer is consumed as
     * records go out; a moving buffer: the conn's buffer may be reallocated between retries;
     * released buffers: an idle connection keeps no 34 KB read/write buffers */
    SSL_CTX_set_mode(t->ssl_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                                     SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                     SSL_MODE_RELEASE_BUFFERS);
    if (o->side == RM_TLS_SERVER) {
        rc = apply_server(t, (const DownstreamTlsContext *)m, p, o, &r, err);
    } else {
        rc = apply_client(t, (const UpstreamTlsContext *)m, p, o, &r, err);
    }
    if (rc) goto fail_key;
    /* complete and never modified again: other contexts of the same key may take it */
    if (key) t->share = share_add(key, key_len, t->ssl_ctx);
stats:;
    char prefix[512];
    snprintf(prefix, sizeof(prefix), "%sssl.", o->stat_prefix ? o->stat_prefix : "");
    t->stats = rm_stats_get(prefix, ssl_stat_defs, SSL__COUNT);
    protobuf_c_message_free_unpacked(m, NULL);
    if (src) protobuf_c_message_free_unpacked(src, NULL);
    *out = t;
    return RM_OK;
fail_key:
    key_free(key, key_len);
fail:
    rm_sds_refs_dispose(&r.sds);
    rm_tls_ctx_unref(t);
fail_msg:
    if (src) protobuf_c_message_free_unpacked(src, NULL);
    protobuf_c_message_free_unpacked(m, NULL);
    return RM_ERR;
}

bool rm_tls_ctx_ready(const struct rm_tls_ctx *t)
{
    return !t || t->ssl_ctx;
}

const struct rm_sds_refs *rm_tls_ctx_sds_refs(const struct rm_tls_ctx *t)
{
    return t && t->sds.n ? &t->sds : NULL;
}

int rm_tls_ctx_rebuild(const struct rm_tls_ctx *t, const struct rm_secrets *sds, bool count,
                       struct rm_tls_ctx **out, struct rm_error *err)
{
    *out = NULL;
    if (!t->src) return rm_error_set(err, "tls: a context without SDS references is never rebuilt");
    struct rm_tls_opts o = {.side = t->side,
                            .stat_prefix = t->src_prefix,
                            .default_alpn = t->src_alpn,
                            .secrets = t->src_statics,
                            .sds = sds};
    const ProtobufCMessage *src = t->src;
    ProtobufCMessage *m = copy_messages(src->descriptor, &src, 1);
    if (!m) return rm_error_set(err, "%s: out of memory", t->src_path);
    if (build_ctx(m, &o, t->src_path, out, err)) return RM_ERR;
    if (count) rm_stat_inc((*out)->sf_stats, SF_UPDATE_BY_SDS);
    return RM_OK;
}

int rm_tls_check_secret(const Secret *s, const char *path, struct rm_error *err)
{
    char p[PATH_LEN];
    if (rm_secret_check(s, path, err)) return RM_ERR;
    if (rm_ssl_api_load(err)) return rm_error_prefix(err, "%s: ", path);
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) return rm_error_set(err, "%s: SSL_CTX_new failed", path);
    int rc = RM_OK;
    if (s->type_case ==
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_TLS_CERTIFICATE) {
        snprintf(p, sizeof(p), "%s.tls_certificate", path);
        rc = load_certificate(ctx, s->tls_certificate, p, err);
    } else if (s->validation_context->trusted_ca) {
        snprintf(p, sizeof(p), "%s.validation_context.trusted_ca", path);
        rc = load_trusted_ca(ctx, s->validation_context->trusted_ca, p, false, err);
    }
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return rc;
}

/* ---- the transport ------------------------------------------------------------------------ */

/* A failed SSL call's errno-style result: -EAGAIN for WANT_READ / WANT_WRITE (the latter sets
 * RM_CONN_TP_WANT_WRITE so the conn waits for EPOLLOUT), 0 for the peer's close (close_notify
 * or, with SSL_OP_IGNORE_UNEXPECTED_EOF, a bare FIN), -errno or -EPROTO for errors (counted as
 * ssl.connection_error). */
static ssize_t io_failure(struct rm_conn *c, struct tls_conn *tc, int rc)
{
    int e = SSL_get_error(tc->ssl, rc);
    switch (e) {
    case SSL_ERROR_WANT_READ:
        return -EAGAIN;
    case SSL_ERROR_WANT_WRITE:
        c->flags |= RM_CONN_TP_WANT_WRITE;
        return -EAGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL: {
        int sys = errno;
        ERR_clear_error();
        if (sys == EAGAIN || sys == EINTR) return -sys;
        tc->failed = true;
        return sys ? -sys : 0;
    }
    default: {
        char buf[256];
        tc->failed = true;
        rm_stat_inc(tc->ctx->stats, SSL_CONNECTION_ERROR);
        rm_log_debug("tls: %s", ossl_errors(buf, sizeof(buf)));
        return -EPROTO;
    }
    }
}

/* Read as much as fits: SSL_read returns at most one record, but the conn takes a short read
 * for an empty socket (edge-triggered epoll), so keep reading until OpenSSL wants more bytes
 * from the socket.  What stops the loop after some data (EOF, an error) is met again on the
 * next call; RM_CONN_PEER_SHUT makes the conn come back for it. */
static ssize_t tls_read(struct rm_conn *c, void *buf, size_t len)
{
    struct tls_conn *tc = c->tp_ctx;
    size_t got = 0;
    if (!tc->ssl) return -ENOKEY;
    while (got < len) {
        size_t n = 0;
        ERR_clear_error();
        int rc = SSL_read_ex(tc->ssl, (char *)buf + got, len - got, &n);
        if (rc == 1) {
            got += n;
            continue;
        }
        ssize_t f = io_failure(c, tc, rc);
        if (!got) return f;
        if (f != -EAGAIN) c->flags |= RM_CONN_PEER_SHUT;
        break;
    }
    return (ssize_t)got;
}

/* SSL_write has no iovec: one record at a time (SSL_MODE_ENABLE_PARTIAL_WRITE), so what is
 * reported written is exactly what went out.  After a WANT_WRITE OpenSSL holds the pending
 * record and must be called again with the same bytes: the conn's output buffer starts with
 * them at the next call (it consumes only what this call reports; SSL_MODE_ACCEPT_MOVING_
 * WRITE_BUFFER allows it to have moved). */
static ssize_t tls_writev(struct rm_conn *c, const struct iovec *iov, int iovcnt)
{
    struct tls_conn *tc = c->tp_ctx;
    size_t done = 0;
    if (!tc->ssl) return -ENOKEY;
    for (int i = 0; i < iovcnt; i++) {
        size_t off = 0;
        while (off < iov[i].iov_len) {
            size_t n = 0;
            ERR_clear_error();
            int rc = SSL_write_ex(tc->ssl, (const char *)iov[i].iov_base + off,
                                  iov[i].iov_len - off, &n);
            if (rc == 1) {
                off += n;
                done += n;
                continue;
            }
            ssize_t f = io_failure(c, tc, rc);
            c->flags &= ~(uint32_t)RM_CONN_TP_WANT_WRITE; /* the conn watches EPOLLOUT itself */
            if (done) return (ssize_t)done;
            return f == 0 ? -EPIPE : f;
        }
    }
    return (ssize_t)done;
}

/* Why a handshake failed, counted and told: -EKEYREJECTED when the peer's certificate was
 * refused, -EPROTO otherwise. */
static int handshake_failed(struct rm_conn *c, struct tls_conn *tc)
{
    struct rm_tls_ctx *t = tc->ctx;
    char buf[256], peer[64];
    long v = SSL_get_verify_result(tc->ssl);
    unsigned long e = ERR_peek_error();
    bool no_cert = ERR_GET_REASON(e) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE;
    ossl_errors(buf, sizeof(buf));
    tc->failed = true;
    rm_stat_inc(t->stats, SSL_CONNECTION_ERROR);
    int rc = -EPROTO;
    if (no_cert) {
        rm_stat_inc(t->stats, SSL_FAIL_VERIFY_NO_CERT);
        rm_stat_inc(t->stats, SSL_NO_CERTIFICATE);
        rc = -EKEYREJECTED;
    } else if (v == X509_V_ERR_HOSTNAME_MISMATCH) {
        rm_stat_inc(t->stats, SSL_FAIL_VERIFY_SAN);
        rc = -EKEYREJECTED;
    } else if (v != X509_V_OK) {
        rm_stat_inc(t->stats, SSL_FAIL_VERIFY_ERROR);
        rc = -EKEYREJECTED;
    }
    rm_log_debug("tls: handshake with %s failed: %s%s%s", rm_conn_peer_str(c, peer, sizeof(peer)),
                 v == X509_V_ERR_HOSTNAME_MISMATCH ? "no subject alt name matches"
                 : v != X509_V_OK                  ? X509_verify_cert_error_string(v)
                                                   : buf,
                 v != X509_V_OK ? "; " : "", v != X509_V_OK ? buf : "");
    return rc;
}

static int tls_handshake(struct rm_conn *c)
{
    struct tls_conn *tc = c->tp_ctx;
    if (!tc->ssl) { /* a context whose SDS secrets have not arrived (Envoy's NotReadySslSocket) */
        char peer[64];
        tc->failed = true;
        rm_stat_inc(tc->ctx->sf_stats, SF_NOT_READY);
        rm_log_debug("tls: connection with %s: secrets not ready (SDS)",
                     rm_conn_peer_str(c, peer, sizeof(peer)));
        return -ENOKEY;
    }
    ERR_clear_error();
    int rc = SSL_do_handshake(tc->ssl);
    if (rc == 1) {
        tc->done = true;
        rm_stat_inc(tc->ctx->stats, SSL_HANDSHAKE);
        if (SSL_session_reused(tc->ssl)) rm_stat_inc(tc->ctx->stats, SSL_SESSION_REUSED);
        if (tc->ctx->side == RM_TLS_SERVER && !SSL_get0_peer_certificate(tc->ssl) &&
            SSL_CTX_get_verify_mode(tc->ctx->ssl_ctx) != SSL_VERIFY_NONE)
            rm_stat_inc(tc->ctx->stats, SSL_NO_CERTIFICATE);
        return RM_OK;
    }
    int e = SSL_get_error(tc->ssl, rc);
    switch (e) {
    case SSL_ERROR_WANT_READ:
        return RM_AGAIN;
    case SSL_ERROR_WANT_WRITE:
        c->flags |= RM_CONN_TP_WANT_WRITE;
        return RM_AGAIN;
    case SSL_ERROR_SYSCALL:
    case SSL_ERROR_ZERO_RETURN:
        if (errno == EAGAIN || errno == EINTR) return RM_AGAIN;
        /* the peer went away before a TLS byte (a port probe): a close, not a TLS error */
        if (BIO_number_read(SSL_get_rbio(tc->ssl)) == 0) {
            ERR_clear_error();
            tc->failed = true;
            return e == SSL_ERROR_SYSCALL && errno ? -errno : -ECONNRESET;
        }
        return handshake_failed(c, tc);
    default:
        if (BIO_number_read(SSL_get_rbio(tc->ssl)) == 0 &&
            ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
            ERR_clear_error();
            tc->failed = true;
            return -ECONNRESET;
        }
        return handshake_failed(c, tc);
    }
}

/* Send close_notify when the session is healthy (one try: the socket closes next), free. */
static void tls_close(struct rm_conn *c)
{
    struct tls_conn *tc = c->tp_ctx;
    if (!tc) return;
    if (tc->done && !tc->failed && c->io.fd >= 0) {
        ERR_clear_error();
        SSL_shutdown(tc->ssl);
        ERR_clear_error();
    }
    SSL_free(tc->ssl);
    rm_tls_ctx_unref(tc->ctx);
    free(tc);
    c->tp_ctx = NULL;
}

const struct rm_transport_ops rm_transport_tls = {
    .name = TLS_NAME,
    .read = tls_read,
    .writev = tls_writev,
    .handshake = tls_handshake,
    .close = tls_close,
};

int rm_conn_start_tls(struct rm_conn *c, struct rm_tls_ctx *t, const char *alpn, size_t alpn_len,
                      uint32_t handshake_timeout_ms)
{
    struct tls_conn *tc = calloc(1, sizeof(*tc));
    if (!tc) return -ENOMEM;
    if (!t->ssl_ctx) goto start; /* not ready: the handshake fails (tls_handshake) */
    tc->ssl = SSL_new(t->ssl_ctx);
    if (!tc->ssl) goto fail;
    /* the callbacks' context (verify_cb, alpn_select): the SSL_CTX may be shared; <t> outlives
     * the SSL object (tc->ctx below, dropped after SSL_free in tls_close) */
    SSL_set_app_data(tc->ssl, t);
    if (c->io.fd >= 0 && SSL_set_fd(tc->ssl, c->io.fd) != 1) goto fail;
    if (t->side == RM_TLS_SERVER) {
        SSL_set_accept_state(tc->ssl);
    } else {
        SSL_set_connect_state(tc->ssl);
        if (t->sni && SSL_set_tlsext_host_name(tc->ssl, t->sni) != 1) goto fail;
        offer_session(t, tc->ssl);
        if (!t->own_alpn && alpn_len &&
            SSL_set_alpn_protos(tc->ssl, (const unsigned char *)alpn, (unsigned)alpn_len) != 0)
            goto fail;
    }
start:
    tc->ctx = rm_tls_ctx_ref(t);
    c->tp = &rm_transport_tls;
    c->tp_ctx = tc;
    rm_conn_transport_started(c, handshake_timeout_ms);
    return 0;
fail:
    ERR_clear_error();
    SSL_free(tc->ssl);
    free(tc);
    return -ENOMEM;
}

bool rm_conn_alpn_is(const struct rm_conn *c, const char *proto)
{
    if (c->tp != &rm_transport_tls || !c->tp_ctx) return false;
    const struct tls_conn *tc = c->tp_ctx;
    if (!tc->ssl) return false;
    const unsigned char *a = NULL;
    unsigned n = 0;
    SSL_get0_alpn_selected(tc->ssl, &a, &n);
    return a && n == strlen(proto) && memcmp(a, proto, n) == 0;
}

const struct ssl_ctx_st *rm_tls_ctx_ssl_ctx(const struct rm_tls_ctx *t)
{
    return t->ssl_ctx;
}

/* The first URI SAN of <x> into *uri / *len (NULL when none): it points into the returned
 * names (decoded from <x>, the caller frees them with GENERAL_NAMES_free; NULL: none). */
static GENERAL_NAMES *first_uri_san(X509 *x, const char **uri, size_t *len)
{
    *uri = NULL;
    *len = 0;
    GENERAL_NAMES *names = x ? X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL) : NULL;
    for (int i = 0; names && i < sk_GENERAL_NAME_num(names) && !*uri; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        if (g->type != GEN_URI) continue;
        *uri = (const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier);
        *len = (size_t)ASN1_STRING_length(g->d.uniformResourceIdentifier);
    }
    return names;
}

/* Copy <s>[<n>] to *at (NUL-terminated) and return the copy; NULL for NULL. */
static const char *info_put(char **at, const char *s, size_t n)
{
    if (!s) return NULL;
    char *d = *at;
    memcpy(d, s, n);
    d[n] = 0;
    *at += n + 1;
    return d;
}

/* The URI SANs, then the DNS SANs, of <names> as a list of NUL-terminated strings ended by an
 * empty one, written at *at (NULL: only measure); returns its size.  Names with a NUL inside are
 * left out (they name nothing). */
static size_t san_list(GENERAL_NAMES *names, char **at)
{
    static const int order[] = {GEN_URI, GEN_DNS};
    size_t total = 1;
    for (size_t k = 0; k < 2; k++) {
        for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
            const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
            if (g->type != order[k]) continue;
            const ASN1_STRING *v =
                g->type == GEN_URI ? g->d.uniformResourceIdentifier : g->d.dNSName;
            const char *p = (const char *)ASN1_STRING_get0_data(v);
            size_t n = (size_t)ASN1_STRING_length(v);
            if (!n || memchr(p, 0, n)) continue;
            if (at) info_put(at, p, n);
            total += n + 1;
        }
    }
    if (at) *(*at)++ = 0;
    return total;
}

struct rm_tls_info *rm_conn_tls_info(const struct rm_conn *c)
{
    if (c->tp != &rm_transport_tls || !c->tp_ctx) return NULL;
    const struct tls_conn *tc = c->tp_ctx;
    if (!tc->done) return NULL;
    const char *sni = SSL_get_servername(tc->ssl, TLSEXT_NAMETYPE_host_name), *peer, *local;
    size_t sni_len = sni ? strlen(sni) : 0, peer_len, local_len;
    GENERAL_NAMES *peer_names = first_uri_san(SSL_get0_peer_certificate(tc->ssl), &peer, &peer_len);
    GENERAL_NAMES *local_names = first_uri_san(SSL_get_certificate(tc->ssl), &local, &local_len);
    bool peer_cert = SSL_get0_peer_certificate(tc->ssl) != NULL;
    size_t sans_len = peer_cert ? san_list(peer_names, NULL) : 0;
    struct rm_tls_info *info =
        malloc(sizeof(*info) + sni_len + peer_len + local_len + 3 + sans_len);
    if (info) {
        char *at = (char *)(info + 1);
        info->version = SSL_get_version(tc->ssl);
        info->cipher = SSL_CIPHER_get_name(SSL_get_current_cipher(tc->ssl));
        info->sni = info_put(&at, sni, sni_len);
        info->peer_uri_san = info_put(&at, peer, peer_len);
        info->local_uri_san = info_put(&at, local, local_len);
        info->peer_sans = peer_cert ? at : NULL;
        if (peer_cert) san_list(peer_names, &at);
    }
    GENERAL_NAMES_free(peer_names);
    GENERAL_NAMES_free(local_names);
    ERR_clear_error();
    return info;
}
