/* What a connection's first bytes say, looked at before anything reads them (Envoy's
 * tls_inspector and http_inspector listener filters): a TLS ClientHello's SNI and ALPN, or the
 * HTTP version of a plaintext request.  Pure functions over a buffer (the bytes a MSG_PEEK
 * returned): bounds-checked, never reading past <n>; the caller peeks again with more bytes
 * while they answer RM_PEEK_MORE. */
#ifndef RM_NET_PEEK_H
#define RM_NET_PEEK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** The most bytes looked at: a ClientHello larger than this is an error (Envoy's
 *  tls_inspector: 16 KiB) and an HTTP request line longer than this is no HTTP. */
#define RM_PEEK_MAX 16384
#define RM_PEEK_MAX_ALPN 16

enum rm_peek_rc {
    RM_PEEK_MORE,    /* too few bytes to tell: peek again when more arrived */
    RM_PEEK_TLS,     /* a complete ClientHello (rm_peek_tls_info filled) */
    RM_PEEK_NOT_TLS, /* not a TLS handshake (or a malformed one) */
    RM_PEEK_TOO_BIG, /* a TLS handshake whose ClientHello exceeds RM_PEEK_MAX */
};

struct rm_peek_tls_info {
    char sni[256]; /* the host_name of server_name, "" without */
    /* the ALPN protocols offered, in order (NUL-terminated copies in <buf>); those over the
     * count or the room are left out */
    const char *alpn[RM_PEEK_MAX_ALPN];
    size_t n_alpn;
    char buf[512];
};

/** Parse the ClientHello at the start of p[0..n) (TLS records of type handshake, the message
 *  possibly spread over several records). */
enum rm_peek_rc rm_peek_tls(const uint8_t *p, size_t n, struct rm_peek_tls_info *out);

/** The HTTP inspector: "h2c" for the HTTP/2 connection preface, "http/1.1" / "http/1.0" for an
 *  HTTP/1.x request line, NULL for anything else.  Returns false when the bytes so far are a
 *  prefix of one of those and too few to tell (peek again), true with *proto when decided. */
bool rm_peek_http(const uint8_t *p, size_t n, const char **proto);

#endif
