/* remora-upstream: TLS on the same listeners as cleartext (OpenSSL; ALPN h2, http/1.1).
 *
 * A connection whose first byte is 0x16 (a TLS handshake record) gets an SSL object on its
 * socket; the protocol is then chosen by ALPN, or sniffed like cleartext when ALPN is absent. */
#include "bench/upstream/conn.h"

#include <openssl/err.h>
#include <stdio.h>
#include <string.h>

static SSL_CTX *ctx;

static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char ours[] = "\x02h2\x08http/1.1";
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, outlen, ours, sizeof(ours) - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

static void print_errors(const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    fprintf(stderr, "remora-upstream: %s: %s\n", what, e ? buf : "unknown error");
    ERR_clear_error();
}

int rmu_tls_global_init(void)
{
    if (!rmu_cfg.tls_cert && !rmu_cfg.tls_key) return 0;
    if (!rmu_cfg.tls_cert || !rmu_cfg.tls_key) {
        fprintf(stderr, "remora-upstream: --tls-cert and --tls-key go together\n");
        return -1;
    }
    ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        print_errors("SSL_CTX_new");
        return -1;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, rmu_cfg.tls_cert) != 1) {
        print_errors(rmu_cfg.tls_cert);
        goto fail_ctx;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, rmu_cfg.tls_key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        print_errors(rmu_cfg.tls_key);
        goto fail_ctx;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_alpn_select_cb(ctx, select_alpn, NULL);
    return 0;

fail_ctx:
    SSL_CTX_free(ctx);
    ctx = NULL;
    return -1;
}

void rmu_tls_global_cleanup(void)
{
    SSL_CTX_free(ctx);
    ctx = NULL;
}

bool rmu_tls_enabled(void)
{
    return ctx != NULL;
}

int rmu_tls_attach(struct rmu_conn *c)
{
    c->ssl = SSL_new(ctx);
    if (!c->ssl) return -1;
    if (SSL_set_fd(c->ssl, c->h.fd) != 1) return -1; /* c->ssl is freed with the connection */
    SSL_set_accept_state(c->ssl);
    atomic_fetch_add_explicit(&c->loop->stats.tls_conns, 1, memory_order_relaxed);
    return 0;
}

/* Map an SSL_* failure: RMU_AGAIN (clearing the readiness flag it waits for), 0 for a clean
 * close, -1 otherwise. */
static int failure(struct rmu_conn *c, int rc)
{
    switch (SSL_get_error(c->ssl, rc)) {
    case SSL_ERROR_WANT_READ:
        c->readable = false;
        return RMU_AGAIN;
    case SSL_ERROR_WANT_WRITE:
        c->writable = false;
        return RMU_AGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    default:
        ERR_clear_error();
        return -1;
    }
}

int rmu_tls_handshake(struct rmu_conn *c)
{
    ERR_clear_error();
    int rc = SSL_do_handshake(c->ssl);
    if (rc != 1) {
        int f = failure(c, rc);
        return f == RMU_AGAIN ? 0 : -1;
    }
    c->tls_done = true;
    const unsigned char *alpn = NULL;
    unsigned int n = 0;
    SSL_get0_alpn_selected(c->ssl, &alpn, &n);
    if (n == 2 && memcmp(alpn, "h2", 2) == 0) return rmu_h2_init(c) < 0 ? -1 : 1;
    if (n == 8 && memcmp(alpn, "http/1.1", 8) == 0) return rmu_h1_init(c) < 0 ? -1 : 1;
    return 1; /* no ALPN: sniff the preface like cleartext */
}

ssize_t rmu_tls_read(struct rmu_conn *c, uint8_t *buf, size_t n)
{
    ERR_clear_error();
    int rc = SSL_read(c->ssl, buf, (int)RMU_MIN(n, (size_t)1 << 30));
    return rc > 0 ? rc : failure(c, rc);
}

ssize_t rmu_tls_write(struct rmu_conn *c, const uint8_t *buf, size_t n)
{
    ERR_clear_error();
    int rc = SSL_write(c->ssl, buf, (int)RMU_MIN(n, (size_t)1 << 30));
    if (rc > 0) return rc;
    int f = failure(c, rc);
    return f == 0 ? -1 : f;
}
