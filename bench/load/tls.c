/* remora-load: TLS client side; see tls.h for the contract. */
#include "bench/load/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>

static const unsigned char alpn_h2[] = "\x02h2";
static const unsigned char alpn_h1[] = "\x08http/1.1";

SSL_CTX *rml_tls_ctx_new(const struct rml_config *cfg, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        snprintf(err, errlen, "cannot create a TLS context: %s",
                 ERR_reason_error_string(ERR_get_error()));
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    if (cfg->insecure) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        SSL_CTX_set_default_verify_paths(ctx);
    }
    if (cfg->h1)
        SSL_CTX_set_alpn_protos(ctx, alpn_h1, sizeof(alpn_h1) - 1);
    else
        SSL_CTX_set_alpn_protos(ctx, alpn_h2, sizeof(alpn_h2) - 1);
    return ctx;
}

static int is_ip_literal(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

SSL *rml_tls_new(SSL_CTX *ctx, const struct rml_config *cfg, int fd)
{
    SSL *ssl = SSL_new(ctx);
    if (!ssl) return NULL;
    if (SSL_set_fd(ssl, fd) != 1) {
        SSL_free(ssl);
        return NULL;
    }
    if (!is_ip_literal(cfg->host)) {
        SSL_set_tlsext_host_name(ssl, cfg->host);
        if (!cfg->insecure) SSL_set1_host(ssl, cfg->host);
    }
    SSL_set_connect_state(ssl);
    return ssl;
}

int rml_tls_handshake(SSL *ssl, uint32_t *want)
{
    ERR_clear_error();
    int rv = SSL_do_handshake(ssl);
    if (rv == 1) return 1;
    switch (SSL_get_error(ssl, rv)) {
    case SSL_ERROR_WANT_READ:
        *want = EPOLLIN;
        return 0;
    case SSL_ERROR_WANT_WRITE:
        *want = EPOLLOUT;
        return 0;
    default:
        return -1;
    }
}

int rml_tls_alpn_ok(SSL *ssl, const struct rml_config *cfg)
{
    const unsigned char *p = NULL;
    unsigned len = 0;
    SSL_get0_alpn_selected(ssl, &p, &len);
    if (cfg->h1) return len == 0 || (len == 8 && memcmp(p, "http/1.1", 8) == 0);
    return len == 2 && memcmp(p, "h2", 2) == 0;
}

static ssize_t io_result(SSL *ssl, int rv)
{
    switch (SSL_get_error(ssl, rv)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return RML_IO_AGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        return errno == 0 ? 0 : RML_IO_ERROR; /* EOF without close_notify */
    default:
        return RML_IO_ERROR;
    }
}

ssize_t rml_tls_read(SSL *ssl, void *buf, size_t len)
{
    ERR_clear_error();
    errno = 0;
    int rv = SSL_read(ssl, buf, (int)(len > 0x40000000 ? 0x40000000 : len));
    return rv > 0 ? rv : io_result(ssl, rv);
}

ssize_t rml_tls_write(SSL *ssl, const void *buf, size_t len)
{
    ERR_clear_error();
    errno = 0;
    int rv = SSL_write(ssl, buf, (int)(len > 0x40000000 ? 0x40000000 : len));
    if (rv > 0) return rv;
    ssize_t r = io_result(ssl, rv);
    return r == 0 ? RML_IO_ERROR : r;
}

int rml_tls_probe(SSL_CTX *ctx, const struct rml_config *cfg, int fd, char *err, size_t errlen)
{
    SSL *ssl = rml_tls_new(ctx, cfg, fd);
    if (!ssl) {
        snprintf(err, errlen, "cannot create a TLS session");
        return -1;
    }
    ERR_clear_error();
    int rv = SSL_connect(ssl), ret = 0;
    if (rv != 1) {
        unsigned long e = ERR_get_error();
        snprintf(err, errlen, "TLS handshake failed: %s",
                 e ? ERR_reason_error_string(e) : "connection closed by peer");
        ret = -1;
    } else if (!rml_tls_alpn_ok(ssl, cfg)) {
        snprintf(err, errlen, "%s",
                 cfg->h1 ? "server negotiated HTTP/2 via ALPN; drop --h1"
                         : "server did not negotiate h2 via ALPN; use --h1 for HTTP/1.1");
        ret = -1;
    } else {
        SSL_shutdown(ssl);
    }
    SSL_free(ssl);
    return ret;
}
