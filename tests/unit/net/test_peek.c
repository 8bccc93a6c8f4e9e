/* The first-bytes inspectors (proxy/net/peek.h): real ClientHellos (SNI, ALPN), every truncation
 * of them (RM_PEEK_MORE, never a read past the end: the copies are exactly sized heap blocks
 * ASan guards), malformed lengths, records split in two, and the HTTP inspector. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/net/peek.h"
#include "tests/unit/net/client_hellos.h"

TestSuite(peek);

/* rm_peek_tls over an exactly sized heap copy of p[0..n) */
static enum rm_peek_rc tls_of(const uint8_t *p, size_t n, struct rm_peek_tls_info *info)
{
    uint8_t *c = malloc(n ? n : 1);
    cr_assert(c);
    memcpy(c, p, n);
    enum rm_peek_rc rc = rm_peek_tls(c, n, info);
    free(c);
    return rc;
}

Test(peek, client_hello_sni_and_alpn)
{
    struct rm_peek_tls_info i;
    cr_assert_eq(tls_of(ch_sni_alpn, sizeof(ch_sni_alpn), &i), RM_PEEK_TLS);
    cr_assert_str_eq(i.sni, "api.example.com");
    cr_assert_eq(i.n_alpn, 2);
    cr_assert_str_eq(i.alpn[0], "h2");
    cr_assert_str_eq(i.alpn[1], "http/1.1");
}

Test(peek, client_hello_without_sni)
{
    struct rm_peek_tls_info i;
    cr_assert_eq(tls_of(ch_no_sni, sizeof(ch_no_sni), &i), RM_PEEK_TLS);
    cr_assert_str_eq(i.sni, "");
    cr_assert_eq(i.n_alpn, 0);
}

Test(peek, client_hello_tls12_istio_alpn)
{
    struct rm_peek_tls_info i;
    cr_assert_eq(tls_of(ch_tls12, sizeof(ch_tls12), &i), RM_PEEK_TLS);
    cr_assert_str_eq(i.sni, "www.foo.org");
    cr_assert_eq(i.n_alpn, 2);
    cr_assert_str_eq(i.alpn[0], "istio-peer-exchange");
    cr_assert_str_eq(i.alpn[1], "istio");
}

Test(peek, every_truncation_asks_for_more)
{
    struct rm_peek_tls_info i;
    for (size_t n = 0; n < sizeof(ch_sni_alpn); n++)
        cr_assert_eq(tls_of(ch_sni_alpn, n, &i), RM_PEEK_MORE, "at %zu bytes", n);
}

/* Trailing bytes (the client's next record) change nothing. */
Test(peek, bytes_after_the_hello_are_ignored)
{
    uint8_t b[sizeof(ch_tls12) + 7];
    memcpy(b, ch_tls12, sizeof(ch_tls12));
    memset(b + sizeof(ch_tls12), 0x17, 7);
    struct rm_peek_tls_info i;
    cr_assert_eq(tls_of(b, sizeof(b), &i), RM_PEEK_TLS);
    cr_assert_str_eq(i.sni, "www.foo.org");
}

/* The handshake message spread over two records: reassembled. */
Test(peek, hello_split_over_two_records)
{
    const uint8_t *hs = ch_sni_alpn + 5;
    size_t hs_len = sizeof(ch_sni_alpn) - 5, first = 100;
    uint8_t b[sizeof(ch_sni_alpn) + 5];
    memcpy(b, ch_sni_alpn, 3);
    b[3] = 0, b[4] = (uint8_t)first;
    memcpy(b + 5, hs, first);
    uint8_t *r2 = b + 5 + first;
    memcpy(r2, ch_sni_alpn, 3);
    r2[3] = (uint8_t)((hs_len - first) >> 8), r2[4] = (uint8_t)(hs_len - first);
    memcpy(r2 + 5, hs + first, hs_len - first);
    struct rm_peek_tls_info i;
    for (size_t n = 0; n < sizeof(b); n++)
        cr_assert_eq(tls_of(b, n, &i), RM_PEEK_MORE, "at %zu bytes", n);
    cr_assert_eq(tls_of(b, sizeof(b), &i), RM_PEEK_TLS);
    cr_assert_str_eq(i.sni, "api.example.com");
    cr_assert_eq(i.n_alpn, 2);
}

Test(peek, not_tls)
{
    struct rm_peek_tls_info i;
    cr_assert_eq(tls_of((const uint8_t *)"GET / HTTP/1.1\r\n", 16, &i), RM_PEEK_NOT_TLS);
    const uint8_t bad_version[] = {0x16, 0x07, 0x01, 0x00, 0x10};
    cr_assert_eq(tls_of(bad_version, sizeof(bad_version), &i), RM_PEEK_NOT_TLS);
    const uint8_t zero_len[] = {0x16, 0x03, 0x01, 0x00, 0x00};
    cr_assert_eq(tls_of(zero_len, sizeof(zero_len), &i), RM_PEEK_NOT_TLS);
    const uint8_t server_hello[] = {0x16, 0x03, 0x03, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00};
    cr_assert_eq(tls_of(server_hello, sizeof(server_hello), &i), RM_PEEK_NOT_TLS);
}

Test(peek, hello_too_big)
{
    const uint8_t big[] = {0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x01, 0x00, 0x00};
    struct rm_peek_tls_info i;
    cr_assert_eq(tls_of(big, sizeof(big), &i), RM_PEEK_TOO_BIG);
}

/* Every internal length of a real hello corrupted (to 0xff… and to 0): the parser answers
 * without reading outside the buffer (ASan) and never claims an SNI it did not see whole. */
Test(peek, corrupted_lengths_stay_in_bounds)
{
    struct rm_peek_tls_info i;
    for (size_t k = 5; k < sizeof(ch_sni_alpn); k++) {
        for (int v = 0; v < 2; v++) {
            uint8_t b[sizeof(ch_sni_alpn)];
            memcpy(b, ch_sni_alpn, sizeof(b));
            b[k] = v ? 0xff : 0x00;
            enum rm_peek_rc rc = tls_of(b, sizeof(b), &i);
            cr_assert(rc == RM_PEEK_TLS || rc == RM_PEEK_NOT_TLS || rc == RM_PEEK_MORE ||
                      rc == RM_PEEK_TOO_BIG);
            if (rc == RM_PEEK_TLS) cr_assert(strlen(i.sni) < sizeof(i.sni));
        }
    }
}

static const char *http_of(const char *s, bool *decided)
{
    const char *proto = "unset";
    size_t n = strlen(s);
    uint8_t *c = malloc(n ? n : 1);
    memcpy(c, s, n);
    *decided = rm_peek_http(c, n, &proto);
    free(c);
    return proto;
}

Test(peek, http_inspector)
{
    bool d;
    cr_assert_str_eq(http_of("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", &d), "h2c");
    cr_assert(d);
    http_of("PRI * HTTP/2.0\r\n", &d);
    cr_assert_not(d);
    cr_assert_str_eq(http_of("GET /x HTTP/1.1\r\nHost: a\r\n", &d), "http/1.1");
    cr_assert(d);
    cr_assert_str_eq(http_of("POST / HTTP/1.0\r\n", &d), "http/1.0");
    cr_assert(d);
    http_of("GET /x HTT", &d);
    cr_assert_not(d);
    http_of("GET", &d);
    cr_assert_not(d);
    cr_assert_null(http_of("SSH-2.0-OpenSSH\r\n", &d));
    cr_assert(d);
    cr_assert_null(http_of("GET /x FTP/1.1\r\n", &d));
    cr_assert(d);
    cr_assert_null(http_of("\x01\x02", &d));
    cr_assert(d);
}
