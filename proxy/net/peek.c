#include "proxy/net/peek.h"

#include <string.h>

#define REC_HEADER 5
#define HS_HANDSHAKE 0x16
#define HS_CLIENT_HELLO 1
#define EXT_SERVER_NAME 0
#define EXT_ALPN 16

/* A bounds-checked reader over a byte range: every take past the end sets <bad>. */
struct rd {
    const uint8_t *p;
    size_t n, off;
    bool bad;
};

static const uint8_t *take(struct rd *r, size_t k)
{
    if (r->bad || r->n - r->off < k) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *q = r->p + r->off;
    r->off += k;
    return q;
}

static unsigned u8(struct rd *r)
{
    const uint8_t *q = take(r, 1);
    return q ? q[0] : 0;
}

static unsigned u16(struct rd *r)
{
    const uint8_t *q = take(r, 2);
    return q ? (unsigned)q[0] << 8 | q[1] : 0;
}

/* A sub-reader over the next <k> bytes of <r> (consumed from <r>). */
static struct rd sub(struct rd *r, size_t k)
{
    const uint8_t *q = take(r, k);
    return (struct rd){.p = q, .n = q ? k : 0, .bad = !q};
}

static void parse_sni(struct rd e, struct rm_peek_tls_info *out)
{
    struct rd list = sub(&e, u16(&e));
    while (!list.bad && list.off < list.n) {
        unsigned type = u8(&list);
        struct rd name = sub(&list, u16(&list));
        if (name.bad) return;
        if (type == 0 && name.n && name.n < sizeof(out->sni) && !out->sni[0]) {
            if (memchr(name.p, 0, name.n)) return; /* no NUL inside a host name */
            memcpy(out->sni, name.p, name.n);
            out->sni[name.n] = 0;
        }
    }
}

static void parse_alpn(struct rd e, struct rm_peek_tls_info *out)
{
    struct rd list = sub(&e, u16(&e));
    size_t used = 0;
    while (!list.bad && list.off < list.n) {
        struct rd proto = sub(&list, u8(&list));
        if (proto.bad || !proto.n || out->n_alpn == RM_PEEK_MAX_ALPN) return;
        if (used + proto.n + 1 > sizeof(out->buf) || memchr(proto.p, 0, proto.n)) continue;
        memcpy(out->buf + used, proto.p, proto.n);
        out->buf[used + proto.n] = 0;
        out->alpn[out->n_alpn++] = out->buf + used;
        used += proto.n + 1;
    }
}

/* The ClientHello body (after the 4-byte handshake header): legacy_version, random,
 * session_id, cipher_suites, compression_methods, then (optional) extensions. */
static enum rm_peek_rc parse_hello(struct rd r, struct rm_peek_tls_info *out)
{
    take(&r, 2 + 32);
    take(&r, u8(&r));  /* session_id */
    take(&r, u16(&r)); /* cipher_suites */
    take(&r, u8(&r));  /* compression_methods */
    if (r.bad) return RM_PEEK_NOT_TLS;
    if (r.off == r.n) return RM_PEEK_TLS; /* no extensions */
    struct rd exts = sub(&r, u16(&r));
    while (!exts.bad && exts.off < exts.n) {
        unsigned type = u16(&exts);
        struct rd e = sub(&exts, u16(&exts));
        if (e.bad) break;
        if (type == EXT_SERVER_NAME) parse_sni(e, out);
        if (type == EXT_ALPN) parse_alpn(e, out);
    }
    return exts.bad ? RM_PEEK_NOT_TLS : RM_PEEK_TLS;
}

/* The ClientHello in hs[0..len) (handshake messages, record headers taken out), if complete. */
static enum rm_peek_rc hello(const uint8_t *hs, size_t len, struct rm_peek_tls_info *out)
{
    if (len < 4) return RM_PEEK_MORE;
    if (hs[0] != HS_CLIENT_HELLO) return RM_PEEK_NOT_TLS;
    size_t need = 4 + ((size_t)hs[1] << 16 | (size_t)hs[2] << 8 | hs[3]);
    if (need > RM_PEEK_MAX) return RM_PEEK_TOO_BIG;
    if (len < need) return RM_PEEK_MORE;
    return parse_hello((struct rd){.p = hs + 4, .n = need - 4}, out);
}

enum rm_peek_rc rm_peek_tls(const uint8_t *p, size_t n, struct rm_peek_tls_info *out)
{
    memset(out, 0, sizeof(*out));
    uint8_t hs[RM_PEEK_MAX]; /* the handshake bytes, records' headers taken out */
    size_t hs_len = 0, off = 0;
    for (;;) {
        enum rm_peek_rc rc = hello(hs, hs_len, out);
        if (rc != RM_PEEK_MORE) return rc;
        /* the next record header, as far as it arrived: handshake, version 3.x, a length */
        const uint8_t *h = p + off;
        size_t have = n - off;
        if ((have >= 1 && h[0] != HS_HANDSHAKE) || (have >= 2 && h[1] != 3)) return RM_PEEK_NOT_TLS;
        if (have < REC_HEADER) return RM_PEEK_MORE;
        size_t len = (size_t)h[3] << 8 | h[4];
        if (len == 0 || len > 16384) return RM_PEEK_NOT_TLS;
        off += REC_HEADER;
        size_t avail = n - off < len ? n - off : len;
        if (avail > sizeof(hs) - hs_len) return RM_PEEK_TOO_BIG;
        memcpy(hs + hs_len, p + off, avail);
        hs_len += avail;
        off += avail;
        if (avail < len) { /* the record's rest has not arrived */
            rc = hello(hs, hs_len, out);
            return rc;
        }
    }
}

/* ---- HTTP inspector ------------------------------------------------------------------------ */

static const char H2_PREFACE[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

static bool tchar(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

bool rm_peek_http(const uint8_t *p, size_t n, const char **proto)
{
    *proto = NULL;
    size_t pl = sizeof(H2_PREFACE) - 1;
    if (memcmp(p, H2_PREFACE, n < pl ? n : pl) == 0) {
        if (n < pl) return false;
        *proto = "h2c";
        return true;
    }
    /* METHOD SP request-target SP HTTP/1.x CRLF */
    size_t i = 0;
    while (i < n && tchar(p[i]))
        i++;
    if (i == n) return n >= RM_PEEK_MAX;
    if (i == 0 || p[i] != ' ') return true;
    size_t t = ++i;
    while (i < n && p[i] > ' ' && p[i] != 0x7f)
        i++;
    if (i == n) return n >= RM_PEEK_MAX;
    if (i == t || p[i] != ' ') return true;
    i++;
    static const char v[] = "HTTP/1.";
    for (size_t k = 0; k < sizeof(v) - 1; k++, i++) {
        if (i == n) return false;
        if (p[i] != (uint8_t)v[k]) return true;
    }
    if (i == n) return false;
    uint8_t minor = p[i++];
    if (i == n) return false;
    if (p[i] != '\r') return true;
    if (minor == '1')
        *proto = "http/1.1";
    else if (minor == '0')
        *proto = "http/1.0";
    return true;
}
