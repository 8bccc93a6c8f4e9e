/* remora-load: TLS client side (OpenSSL) for https:// targets.
 *
 * One SSL_CTX for the run (created by main, shared read-only by the workers), one SSL per
 * connection on its non-blocking socket.  ALPN offers h2, or http/1.1 with --h1.  With
 * --insecure (the default, as for a bench tool) the certificate is not verified.
 */
#ifndef REMORA_BENCH_LOAD_TLS_H
#define REMORA_BENCH_LOAD_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <sys/types.h>

#include "bench/load/config.h"

#define RML_IO_AGAIN (-1) /* would block; see *want for the epoll events to wait for */
#define RML_IO_ERROR (-2)

/* A client context for cfg (ALPN, verification).  NULL after printing an error to `err`. */
SSL_CTX *rml_tls_ctx_new(const struct rml_config *cfg, char *err, size_t errlen);

/* A new SSL on socket `fd` in connect state, with SNI for a host name.  NULL on failure. */
SSL *rml_tls_new(SSL_CTX *ctx, const struct rml_config *cfg, int fd);

/* Advance the handshake: 1 done, 0 again (*want = EPOLLIN or EPOLLOUT), -1 failed. */
int rml_tls_handshake(SSL *ssl, uint32_t *want);

/* 1 when ALPN selected the protocol cfg asks for (h2, or http/1.1 / nothing with --h1). */
int rml_tls_alpn_ok(SSL *ssl, const struct rml_config *cfg);

/* Read/write: bytes moved, 0 for EOF (read only), RML_IO_AGAIN or RML_IO_ERROR. */
ssize_t rml_tls_read(SSL *ssl, void *buf, size_t len);
ssize_t rml_tls_write(SSL *ssl, const void *buf, size_t len);

/* Blocking handshake on a connected blocking socket, for the start-up check: 0, or -1 with
 * a reason in `err`. */
int rml_tls_probe(SSL_CTX *ctx, const struct rml_config *cfg, int fd, char *err, size_t errlen);

#endif
