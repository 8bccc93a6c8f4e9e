/* HTTP/2 messaging checks (RFC 9113 8.1-8.3): a raw peer sends header blocks and DATA that
 * nghttp2 1.52 rejects (or silently drops) with its HTTP messaging on, and each table row says
 * what must happen to it.  remora used to rely on nghttp2 for this and now checks it itself
 * (h2_validate.c); these tables pin the behaviour down so that neither may let anything through
 * that the other stopped.  Every row runs on a fresh connection:
 *   RESET  RST_STREAM(PROTOCOL_ERROR) for the stream, the connection stays up (no GOAWAY), and
 *          the codec's user never sees the message: a request never reaches the server user
 *          (or, for bad bodies, never its end), a response reaches the client user as
 *          on_reset(RM_RESET_PROTOCOL) without its end;
 *   OK     the message goes through, every field delivered (requests), without the field
 *          named in .gone, with the one in .kept.
 * Two rows failed before remora did the checks: a body shorter than its content-length
 * (body_shorter, both directions) reached the user as complete (end_stream) before nghttp2
 * reset the stream; now the end is refused. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/http/h2_internal.h"
#include "tests/unit/http/h2_test_util.h"

#define WAIT_MS 3000

enum expect { OK, RESET };

struct field {
    const char *n, *v;
    size_t nl, vl;
};
/* sizeof: values may hold NUL */
#define F(n, v)                                                                                    \
    {                                                                                              \
        n, v, sizeof(n) - 1, sizeof(v) - 1                                                         \
    }
#define REQ F(":method", "GET"), F(":scheme", "http"), F(":authority", "a"), F(":path", "/")
#define MAXF 12

struct vcase {
    const char *name;
    const char *method; /* response rows: the request's method (NULL: GET) */
    struct field h[MAXF];
    const char *data[3];   /* DATA frames after the headers (NULL-terminated), last has END */
    struct field tr[MAXF]; /* trailers, if .tr[0].n */
    bool tr_no_end;        /* trailers without END_STREAM */
    bool no_end;           /* nothing ends the stream (e.g. a 1xx alone) */
    struct field h2[MAXF]; /* response rows: a second (final) block after a 1xx */
    enum expect want;
    const char *gone, *kept;
    int max_body; /* RESET rows with DATA: the user got at most this many bytes (0: any) */
};

/* ---- a raw peer's frames ------------------------------------------------------------------ */

/* HPACK "literal header field without indexing, new name" (RFC 7541 6.2.2), no Huffman. */
static size_t hpack_str(uint8_t *out, const char *s, size_t n)
{
    size_t k = 0;
    if (n < 127) {
        out[k++] = (uint8_t)n;
    } else {
        out[k++] = 127;
        size_t r = n - 127;
        while (r >= 128) {
            out[k++] = (uint8_t)(r % 128 + 128);
            r /= 128;
        }
        out[k++] = (uint8_t)r;
    }
    memcpy(out + k, s, n);
    return k + n;
}

static size_t hpack_block(uint8_t *out, const struct field *f)
{
    size_t k = 0;
    for (; f->n; f++) {
        out[k++] = 0x00;
        k += hpack_str(out + k, f->n, f->nl);
        k += hpack_str(out + k, f->v, f->vl);
    }
    return k;
}

/* HEADERS (END_HEADERS, and END_STREAM when <end>) on <sid>. */
static size_t headers_frame(uint8_t *out, uint32_t sid, const struct field *f, bool end)
{
    uint8_t block[4096];
    size_t n = hpack_block(block, f);
    return h2t_frame(out, 1, (uint8_t)(0x4 | (end ? 0x1 : 0)), sid, block, n);
}

/* The case's frames on stream 1 after its first block (h already written). */
static size_t case_frames(uint8_t *out, const struct vcase *vc)
{
    bool body = vc->data[0] != NULL, trailers = vc->tr[0].n != NULL;
    size_t n = 0;
    if (vc->h2[0].n) n += headers_frame(out + n, 1, vc->h2, !body && !trailers);
    for (int i = 0; i < 3 && vc->data[i]; i++) {
        bool last = i == 2 || !vc->data[i + 1];
        n += h2t_frame(out + n, 0, last && !trailers && !vc->no_end ? 0x1 : 0, 1, vc->data[i],
                       strlen(vc->data[i]));
    }
    if (trailers) n += headers_frame(out + n, 1, vc->tr, !vc->tr_no_end);
    return n;
}

static bool first_ends(const struct vcase *vc)
{
    return !vc->data[0] && !vc->tr[0].n && !vc->h2[0].n && !vc->no_end;
}

/* The error code of the first RST_STREAM on <sid> in what the raw peer received, or -1. */
static int64_t raw_rst_code(struct h2t *t, size_t skip, uint32_t sid)
{
    const uint8_t *p = t->raw_in.base ? rm_buf_data(&t->raw_in) : NULL;
    size_t n = t->raw_in.len, off = skip;
    while (p && off + 9 <= n) {
        size_t len = (size_t)p[off] << 16 | (size_t)p[off + 1] << 8 | p[off + 2];
        uint32_t id = ((uint32_t)p[off + 5] << 24 | (uint32_t)p[off + 6] << 16 |
                       (uint32_t)p[off + 7] << 8 | p[off + 8]) &
                      0x7fffffffu;
        if (p[off + 3] == 3 && id == sid && len == 4 && off + 13 <= n)
            return (int64_t)((uint32_t)p[off + 9] << 24 | (uint32_t)p[off + 10] << 16 |
                             (uint32_t)p[off + 11] << 8 | p[off + 12]);
        off += 9 + len;
    }
    return -1;
}

static bool has(const struct rm_headers *h, const char *name)
{
    return h && name && rm_headers_find(h, name, strlen(name)) >= 0;
}

/* ---- requests: a raw client against the server codec -------------------------------------- */

static const uint8_t preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

static void hold_request(struct h2t_stream *st)
{
    st->hold = true; /* never answered: the stream's fate is the peer's frames alone */
}

static void run_request(const struct vcase *vc)
{
    struct h2t t;
    h2t_init(&t);
    t.on_request = hold_request;
    h2t_start_raw_client(&t);
    static uint8_t out[16384];
    size_t n = 0;
    memcpy(out, preface, 24);
    n = 24;
    n += h2t_frame(out + n, 4, 0, 0, NULL, 0);
    n += headers_frame(out + n, 1, vc->h, first_ends(vc));
    n += case_frames(out + n, vc);
    h2t_raw_write(&t, out, n);
    if (vc->want == RESET) {
        H2T_WAIT(&t, raw_rst_code(&t, 0, 1) >= 0, WAIT_MS);
        for (int i = 0; i < 20; i++)
            h2t_spin(&t);
        cr_expect_eq(raw_rst_code(&t, 0, 1), 1, "%s: no RST_STREAM(PROTOCOL_ERROR)", vc->name);
        cr_expect(!h2t_raw_has_frame(&t, 0, 7, 0), "%s: GOAWAY: not a stream error", vc->name);
        if (!vc->data[0] && !vc->tr[0].n)
            cr_expect_eq(t.nsrv, 0, "%s: the server user saw the request", vc->name);
        else
            cr_expect(t.nsrv == 0 || !t.srv[0]->ended, "%s: the request ended", vc->name);
        if (vc->max_body && t.nsrv)
            cr_expect_leq(t.srv[0]->body_len, (size_t)vc->max_body, "%s: %zu body bytes", vc->name,
                          t.srv[0]->body_len);
    } else {
        H2T_WAIT(&t, t.nsrv == 1 && t.srv[0]->ended, WAIT_MS);
        cr_expect(t.nsrv == 1 && t.srv[0]->ended, "%s: request not delivered (rst %lld)", vc->name,
                  (long long)raw_rst_code(&t, 0, 1));
        if (t.nsrv != 1 || !t.srv[0]->ended) {
            h2t_finish(&t);
            return;
        }
        cr_expect_eq(raw_rst_code(&t, 0, 1), -1, "%s: reset", vc->name);
        const struct rm_headers *h = t.srv[0]->headers;
        uint32_t nf = 0;
        while (vc->h[nf].n)
            nf++;
        cr_expect_eq(h->n, nf, "%s: %u fields delivered", vc->name, h->n);
        if (vc->gone) cr_expect(!has(h, vc->gone), "%s: %s delivered", vc->name, vc->gone);
        if (vc->kept) cr_expect(has(h, vc->kept), "%s: %s missing", vc->name, vc->kept);
    }
    h2t_finish(&t);
}

static const struct vcase req_cases[] = {
    /* baselines: what must go through */
    {"valid", .h = {REQ, F("x-ok", "1")}, .want = OK, .kept = "x-ok"},
    {"host_instead_of_authority",
     .h = {F(":method", "GET"), F(":scheme", "http"), F(":path", "/"), F("host", "a")}, .want = OK,
     .kept = "host"},
    {"tab_inside_value", .h = {REQ, F("x-ok", "a\tb")}, .want = OK, .kept = "x-ok"},
    {"obs_text_value", .h = {REQ, F("x-ok", "\x80\xff")}, .want = OK, .kept = "x-ok"},
    {"te_trailers", .h = {REQ, F("te", "trailers")}, .want = OK, .kept = "te"},
    {"te_trailers_any_case", .h = {REQ, F("te", "TrAiLeRs")}, .want = OK, .kept = "te"},
    {"options_asterisk",
     .h = {F(":method", "OPTIONS"), F(":scheme", "http"), F(":authority", "a"), F(":path", "*")},
     .want = OK},
    {"path_without_slash_other_scheme",
     .h = {F(":method", "GET"), F(":scheme", "foo"), F(":authority", "a"), F(":path", "x")},
     .want = OK},
    {"connect", .h = {F(":method", "CONNECT"), F(":authority", "a:443")}, .want = OK},
    {"body_matches_length", .h = {REQ, F("content-length", "5")}, .data = {"ab", "cde"},
     .want = OK},
    {"length_with_leading_zeros", .h = {REQ, F("content-length", "0000000000000000000003")},
     .data = {"abc"}, .want = OK},
    {"zero_length_no_body", .h = {REQ, F("content-length", "0")}, .want = OK},
    {"trailers", .h = {REQ}, .data = {"x"}, .tr = {F("x-t", "1")}, .want = OK},
    {"length_in_trailers_matches", .h = {REQ}, .data = {"abc"}, .tr = {F("content-length", "3")},
     .want = OK},
    /* invalid regular fields: nghttp2 1.52 "ignores" them only for an application with an
     * on_invalid_header callback; without one (remora) they reset the stream like the rest */
    {"name_with_space", .h = {REQ, F("x y", "1"), F("x-ok", "1")}, .want = RESET},
    {"name_with_paren", .h = {REQ, F("x(y", "1")}, .want = RESET},
    {"name_with_colon_inside", .h = {REQ, F("x:y", "1")}, .want = RESET},
    {"name_with_nul", .h = {REQ, F("x\0y", "1")}, .want = RESET},
    {"name_high_byte", .h = {REQ, F("x\x80", "1")}, .want = RESET},
    {"empty_name", .h = {REQ, F("", "1"), F("x-ok", "1")}, .want = RESET},
    {"value_cr", .h = {REQ, F("x-bad", "a\rb")}, .want = RESET},
    {"value_lf", .h = {REQ, F("x-bad", "a\nb")}, .want = RESET},
    {"value_crlf_smuggle", .h = {REQ, F("x-bad", "a\r\ntransfer-encoding: chunked")},
     .want = RESET},
    {"value_nul", .h = {REQ, F("x-bad", "a\0b")}, .want = RESET},
    {"value_del", .h = {REQ, F("x-bad", "a\x7f")}, .want = RESET},
    {"value_ctl", .h = {REQ, F("x-bad", "a\x01")}, .want = RESET},
    {"value_long_ctl", .h = {REQ, F("x-bad", "abcdefghijklmnopqrstuvwxyz\x1f")}, .want = RESET},
    {"value_leading_space", .h = {REQ, F("x-bad", " a")}, .want = RESET},
    {"value_trailing_tab", .h = {REQ, F("x-bad", "a\t")}, .want = RESET},
    {"value_only_space", .h = {REQ, F("x-bad", " ")}, .want = RESET},
    {"host_value_cr", .h = {REQ, F("host", "a\rb")}, .want = RESET},
    {"host_with_space", .h = {REQ, F("host", "a b")}, .want = RESET},
    /* names */
    {"upper_case_name", .h = {REQ, F("X-Up", "1")}, .want = RESET},
    {"upper_case_long_name", .h = {REQ, F("x-abcdefghijklmnopQ", "1")}, .want = RESET},
    {"upper_case_name_with_bad_char", .h = {REQ, F("X y", "1")}, .want = RESET},
    {"upper_case_content_length", .h = {REQ, F("Content-Length", "1")}, .want = RESET},
    {"upper_case_pseudo", .h = {F(":Method", "GET"), F(":scheme", "http"), F(":path", "/")},
     .want = RESET},
    {"colon_alone", .h = {REQ, F(":", "x")}, .want = RESET},
    {"pseudo_bad_char", .h = {REQ, F(":pa th", "x")}, .want = RESET},
    /* pseudo-header fields */
    {"unknown_pseudo", .h = {REQ, F(":foo", "x")}, .want = RESET},
    {"protocol_pseudo", .h = {REQ, F(":protocol", "websocket")}, .want = RESET},
    {"status_in_request", .h = {F(":status", "200"), REQ}, .want = RESET},
    {"duplicate_path", .h = {REQ, F(":path", "/b")}, .want = RESET},
    {"duplicate_method", .h = {F(":method", "GET"), REQ}, .want = RESET},
    {"duplicate_scheme", .h = {F(":scheme", "http"), REQ}, .want = RESET},
    {"duplicate_authority", .h = {F(":authority", "b"), REQ}, .want = RESET},
    {"pseudo_after_regular",
     .h = {F(":method", "GET"), F(":scheme", "http"), F("x-a", "1"), F(":path", "/"),
           F(":authority", "a")},
     .want = RESET},
    {"pseudo_after_dropped_regular",
     .h = {F(":method", "GET"), F(":scheme", "http"), F(":authority", "a"), F("x y", "1"),
           F(":path", "/")},
     .want = RESET},
    {"missing_method", .h = {F(":scheme", "http"), F(":authority", "a"), F(":path", "/")},
     .want = RESET},
    {"missing_scheme", .h = {F(":method", "GET"), F(":authority", "a"), F(":path", "/")},
     .want = RESET},
    {"missing_path", .h = {F(":method", "GET"), F(":scheme", "http"), F(":authority", "a")},
     .want = RESET},
    {"missing_authority_and_host",
     .h = {F(":method", "GET"), F(":scheme", "http"), F(":path", "/")}, .want = RESET},
    {"empty_path",
     .h = {F(":method", "GET"), F(":scheme", "http"), F(":authority", "a"), F(":path", "")},
     .want = RESET},
    {"empty_method",
     .h = {F(":method", ""), F(":scheme", "http"), F(":authority", "a"), F(":path", "/")},
     .want = RESET},
    {"empty_authority",
     .h = {F(":method", "GET"), F(":scheme", "http"), F(":authority", ""), F(":path", "/")},
     .want = RESET},
    {"path_without_slash",
     .h = {F(":method", "GET"), F(":scheme", "http"), F(":authority", "a"), F(":path", "x")},
     .want = RESET},
    {"path_without_slash_https",
     .h = {F(":method", "GET"), F(":scheme", "HTTPS"), F(":authority", "a"), F(":path", "a/")},
     .want = RESET},
    {"asterisk_not_options",
     .h = {F(":method", "GET"), F(":scheme", "http"), F(":authority", "a"), F(":path", "*")},
     .want = RESET},
    {"path_with_space",
     .h = {F(":method", "GET"), F(":scheme", "http"), F(":authority", "a"), F(":path", "/a b")},
     .want = RESET},
    {"path_with_crlf",
     .h = {F(":method", "GET"), F(":scheme", "http"), F(":authority", "a"),
           F(":path", "/a\r\nx: y")},
     .want = RESET},
    {"path_with_del",
     .h = {F(":method", "GET"), F(":scheme", "http"), F(":authority", "a"),
           F(":path", "/abcdefghijklmnop\x7f")},
     .want = RESET},
    {"method_with_space",
     .h = {F(":method", "GET /x"), F(":scheme", "http"), F(":authority", "a"), F(":path", "/")},
     .want = RESET},
    {"method_with_slash",
     .h = {F(":method", "G/T"), F(":scheme", "http"), F(":authority", "a"), F(":path", "/")},
     .want = RESET},
    {"scheme_digit_first",
     .h = {F(":method", "GET"), F(":scheme", "1http"), F(":authority", "a"), F(":path", "/")},
     .want = RESET},
    {"scheme_with_colon",
     .h = {F(":method", "GET"), F(":scheme", "http:"), F(":authority", "a"), F(":path", "/")},
     .want = RESET},
    {"authority_with_space",
     .h = {F(":method", "GET"), F(":scheme", "http"), F(":authority", "a b"), F(":path", "/")},
     .want = RESET},
    {"authority_with_slash",
     .h = {F(":method", "GET"), F(":scheme", "http"), F(":authority", "a/b"), F(":path", "/")},
     .want = RESET},
    {"authority_with_quote",
     .h = {F(":method", "GET"), F(":scheme", "http"), F(":authority", "a\"b"), F(":path", "/")},
     .want = RESET},
    {"host_empty", .h = {REQ, F("host", "")}, .want = RESET},
    {"host_twice", .h = {REQ, F("host", "a"), F("host", "a")}, .want = RESET},
    {"connect_with_path", .h = {F(":method", "CONNECT"), F(":authority", "a:443"), F(":path", "/")},
     .want = RESET},
    {"connect_with_scheme",
     .h = {F(":method", "CONNECT"), F(":scheme", "http"), F(":authority", "a:443")}, .want = RESET},
    {"connect_without_authority", .h = {F(":method", "CONNECT"), F("host", "a:443")},
     .want = RESET},
    /* connection-specific fields (RFC 9113 8.2.2) */
    {"connection", .h = {REQ, F("connection", "close")}, .want = RESET},
    {"keep_alive", .h = {REQ, F("keep-alive", "1")}, .want = RESET},
    {"proxy_connection", .h = {REQ, F("proxy-connection", "x")}, .want = RESET},
    {"transfer_encoding", .h = {REQ, F("transfer-encoding", "chunked")}, .want = RESET},
    {"upgrade", .h = {REQ, F("upgrade", "websocket")}, .want = RESET},
    {"te_gzip", .h = {REQ, F("te", "gzip")}, .want = RESET},
    {"te_trailers_and_more", .h = {REQ, F("te", "trailers, gzip")}, .want = RESET},
    /* content-length */
    {"length_not_digits", .h = {REQ, F("content-length", "abc")}, .want = RESET},
    {"length_empty", .h = {REQ, F("content-length", "")}, .want = RESET},
    {"length_negative", .h = {REQ, F("content-length", "-1")}, .want = RESET},
    {"length_plus", .h = {REQ, F("content-length", "+1")}, .want = RESET},
    {"length_two_values", .h = {REQ, F("content-length", "1, 1")}, .want = RESET},
    {"length_overflow", .h = {REQ, F("content-length", "9223372036854775808")}, .want = RESET},
    {"length_twice_same", .h = {REQ, F("content-length", "1"), F("content-length", "1")},
     .data = {"a"}, .want = RESET},
    {"body_longer", .h = {REQ, F("content-length", "5")}, .data = {"abcdef"}, .want = RESET},
    {"body_longer_in_second_frame", .h = {REQ, F("content-length", "5")}, .data = {"abc", "def"},
     .want = RESET},
    {"body_shorter", .h = {REQ, F("content-length", "5")}, .data = {"abc"}, .want = RESET},
    {"body_longer_before_end", .h = {REQ, F("content-length", "5")}, .data = {"abc", "def"},
     .no_end = true, .want = RESET, .max_body = 3},
    {"length_without_body", .h = {REQ, F("content-length", "5")}, .want = RESET},
    {"body_shorter_then_trailers", .h = {REQ, F("content-length", "5")}, .data = {"abc"},
     .tr = {F("x-t", "1")}, .want = RESET},
    /* trailers */
    {"trailers_without_end_stream", .h = {REQ}, .data = {"x"}, .tr = {F("x-t", "1")},
     .tr_no_end = true, .want = RESET},
    {"pseudo_in_trailers", .h = {REQ}, .data = {"x"}, .tr = {F(":path", "/")}, .want = RESET},
    {"connection_in_trailers", .h = {REQ}, .data = {"x"}, .tr = {F("connection", "x")},
     .want = RESET},
    {"upper_case_in_trailers", .h = {REQ}, .data = {"x"}, .tr = {F("X-T", "1")}, .want = RESET},
    {"length_in_trailers_mismatch", .h = {REQ}, .data = {"abc"}, .tr = {F("content-length", "5")},
     .want = RESET},
    {"length_twice_via_trailers", .h = {REQ, F("content-length", "3")}, .data = {"abc"},
     .tr = {F("content-length", "3")}, .want = RESET},
    {"host_twice_via_trailers", .h = {REQ, F("host", "a")}, .data = {"abc"}, .tr = {F("host", "a")},
     .want = RESET},
};

Test(h2_validate, requests)
{
    for (size_t i = 0; i < sizeof(req_cases) / sizeof(req_cases[0]); i++)
        run_request(&req_cases[i]);
}

/* ---- responses: the client codec against a raw server ------------------------------------- */

static void run_response(const struct vcase *vc)
{
    struct h2t t;
    h2t_init(&t);
    h2t_start_raw_server(&t);
    struct h2t_stream *c = h2t_request(&t, vc->method ? vc->method : "GET", "/", NULL, 0);
    cr_assert_not_null(c);
    H2T_WAIT(&t, h2t_raw_has_frame(&t, 24, 1, 1), WAIT_MS);
    cr_assert(h2t_raw_has_frame(&t, 24, 1, 1), "%s: no request", vc->name);
    size_t skip = t.raw_in.len; /* our RST_STREAM must come after the request */
    static uint8_t out[16384];
    size_t n = 0;
    n += h2t_frame(out + n, 4, 0, 0, NULL, 0);
    n += h2t_frame(out + n, 4, 1, 0, NULL, 0);
    n += headers_frame(out + n, 1, vc->h, first_ends(vc));
    n += case_frames(out + n, vc);
    h2t_raw_write(&t, out, n);
    if (vc->want == RESET) {
        H2T_WAIT(&t, c->reset && raw_rst_code(&t, skip, 1) >= 0, WAIT_MS);
        cr_expect(c->reset, "%s: not reset", vc->name);
        cr_expect_eq(c->reason, RM_RESET_PROTOCOL, "%s: reset reason %d", vc->name, c->reason);
        cr_expect(!c->ended, "%s: the response ended", vc->name);
        cr_expect_eq(raw_rst_code(&t, skip, 1), 1, "%s: no RST_STREAM(PROTOCOL_ERROR)", vc->name);
        if (!vc->data[0] && !vc->tr[0].n && !vc->h2[0].n)
            cr_expect_eq(c->headers_calls, 0, "%s: the client user saw the response", vc->name);
        cr_expect(!h2t_raw_has_frame(&t, skip, 7, 0), "%s: GOAWAY", vc->name);
        if (vc->max_body)
            cr_expect_leq(c->body_len, (size_t)vc->max_body, "%s: %zu body bytes", vc->name,
                          c->body_len);
    } else {
        H2T_WAIT(&t, c->ended || c->reset, WAIT_MS);
        cr_expect(c->ended && !c->reset, "%s: response not delivered (reset %d, reason %d)",
                  vc->name, c->reset, c->reason);
        const struct rm_headers *h = c->headers; /* the last (final) response block */
        if (vc->gone) cr_expect(!has(h, vc->gone), "%s: %s delivered", vc->name, vc->gone);
        if (vc->kept) cr_expect(has(h, vc->kept), "%s: %s missing", vc->name, vc->kept);
    }
    h2t_finish(&t);
}

#define ST(s) F(":status", s)

static const struct vcase resp_cases[] = {
    {"valid", .h = {ST("200"), F("content-length", "3")}, .data = {"abc"}, .want = OK,
     .kept = "content-length"},
    {"no_length", .h = {ST("200")}, .data = {"abc", "def"}, .want = OK},
    {"host_value_not_authority_checked", .h = {ST("200"), F("host", "a b")}, .want = OK,
     .kept = "host"},
    {"head_length_without_body", .method = "HEAD", .h = {ST("200"), F("content-length", "10")},
     .want = OK, .kept = "content-length"},
    {"no_content_length_zero_removed", .h = {ST("204"), F("content-length", "0")}, .want = OK,
     .gone = "content-length"},
    {"continue_then_final", .h = {ST("100")}, .h2 = {ST("200"), F("x-ok", "1")}, .want = OK},
    {"connect_2xx_length_removed", .method = "CONNECT", .h = {ST("200"), F("content-length", "5")},
     .data = {"abcdefgh"}, .want = OK, .gone = "content-length"},
    {"value_cr", .h = {ST("200"), F("x-bad", "a\rb")}, .want = RESET},
    {"connect_2xx_length_bad_value", .method = "CONNECT",
     .h = {ST("200"), F("content-length", "5\r")}, .want = RESET},
    {"connect_4xx_length_checked", .method = "CONNECT", .h = {ST("404"), F("content-length", "x")},
     .want = RESET},
    {"value_leading_space", .h = {ST("200"), F("x-bad", " a")}, .want = RESET},
    {"name_with_space", .h = {ST("200"), F("x y", "1")}, .want = RESET},
    {"missing_status", .h = {F("x-a", "1")}, .want = RESET},
    {"status_two_digits", .h = {ST("20")}, .want = RESET},
    {"status_four_digits", .h = {ST("2000")}, .want = RESET},
    {"status_not_digits", .h = {ST("2x0")}, .want = RESET},
    {"status_empty", .h = {ST("")}, .want = RESET},
    {"status_101", .h = {ST("101")}, .want = RESET},
    {"status_twice", .h = {ST("200"), ST("200")}, .want = RESET},
    {"status_after_regular", .h = {F("x-a", "1"), ST("200")}, .want = RESET},
    {"request_pseudo_in_response", .h = {ST("200"), F(":path", "/")}, .want = RESET},
    {"unknown_pseudo", .h = {ST("200"), F(":foo", "x")}, .want = RESET},
    {"upper_case_name", .h = {ST("200"), F("X-A", "1")}, .want = RESET},
    {"connection", .h = {ST("200"), F("connection", "close")}, .want = RESET},
    {"transfer_encoding", .h = {ST("200"), F("transfer-encoding", "chunked")}, .want = RESET},
    {"keep_alive", .h = {ST("200"), F("keep-alive", "1")}, .want = RESET},
    {"upgrade", .h = {ST("200"), F("upgrade", "h2c")}, .want = RESET},
    {"proxy_connection", .h = {ST("200"), F("proxy-connection", "x")}, .want = RESET},
    {"te_gzip", .h = {ST("200"), F("te", "gzip")}, .want = RESET},
    {"length_invalid", .h = {ST("200"), F("content-length", "x")}, .want = RESET},
    {"length_twice", .h = {ST("200"), F("content-length", "3"), F("content-length", "3")},
     .data = {"abc"}, .want = RESET},
    {"body_shorter", .h = {ST("200"), F("content-length", "5")}, .data = {"abc"}, .want = RESET},
    {"body_longer", .h = {ST("200"), F("content-length", "2")}, .data = {"abc"}, .want = RESET},
    {"body_longer_before_end", .h = {ST("200"), F("content-length", "4")}, .data = {"ab", "cde"},
     .no_end = true, .want = RESET, .max_body = 2},
    {"info_then_data_before_end", .h = {ST("100")}, .data = {"abc"}, .no_end = true, .want = RESET,
     .max_body = 0},
    {"length_without_body", .h = {ST("200"), F("content-length", "2")}, .want = RESET},
    {"head_with_body", .method = "HEAD", .h = {ST("200")}, .data = {"abc"}, .want = RESET},
    {"no_content_with_body", .h = {ST("204")}, .data = {"abc"}, .want = RESET},
    {"no_content_with_length", .h = {ST("204"), F("content-length", "3")}, .want = RESET},
    {"not_modified_with_body", .h = {ST("304")}, .data = {"abc"}, .want = RESET},
    {"info_with_length", .h = {ST("100"), F("content-length", "0")}, .no_end = true, .want = RESET},
    {"info_then_data", .h = {ST("103")}, .data = {"abc"}, .want = RESET},
    {"info_with_end_stream", .h = {ST("100")}, .want = RESET},
    {"final_missing_status_after_info", .h = {ST("100")}, .h2 = {F("x-a", "1")}, .want = RESET},
    {"pseudo_in_trailers", .h = {ST("200")}, .data = {"a"}, .tr = {ST("200")}, .want = RESET},
    {"trailers_without_end_stream", .h = {ST("200")}, .data = {"a"}, .tr = {F("x-t", "1")},
     .tr_no_end = true, .want = RESET},
    {"length_in_trailers_of_head", .method = "HEAD", .h = {ST("200")},
     .tr = {F("content-length", "0")}, .want = RESET},
};

Test(h2_validate, responses)
{
    for (size_t i = 0; i < sizeof(resp_cases) / sizeof(resp_cases[0]); i++)
        run_response(&resp_cases[i]);
}

/* ---- the byte checks against nghttp2's own (exported) ones -------------------------------- */

/* rm_h2v_field on a fresh request stream (server side), one field after the usual pseudo-header
 * fields unless <name> is one of them. */
static bool field_ok(const char *name, size_t nlen, const uint8_t *v, size_t vlen)
{
    struct rm_h2_stream hs;
    memset(&hs, 0, sizeof(hs));
    rm_h2v_init(&hs);
    enum rm_hkey k;
    return rm_h2v_field(&hs, true, false, &k, (const uint8_t *)name, nlen, v, vlen) == RM_H2V_OK;
}

/* Every byte at every position of values 1..19 bytes long (word-aligned, overlapping tails,
 * first and last bytes) is judged as nghttp2 1.52 judges it. */
Test(h2_validate, byte_checks_match_nghttp2)
{
    uint8_t buf[24];
    int bad = 0;
    for (size_t len = 1; len < 20; len++) {
        for (size_t pos = 0; pos < len; pos++) {
            for (int c = 0; c < 256; c++) {
                memset(buf, 'a', sizeof(buf));
                buf[0] = '/';
                buf[pos] = (uint8_t)c;
                bool want, got;
                want = nghttp2_check_header_value_rfc9113(buf, len) != 0;
                got = field_ok("x-v", 3, buf, len);
                bad += want != got;
                cr_expect_eq(got, want, "value len %zu byte %02x at %zu", len, c, pos);
                want = nghttp2_check_header_name(buf, len) && buf[0] != ':';
                got = field_ok((const char *)buf, len, (const uint8_t *)"v", 1);
                if (len == 2 && buf[0] == 't' && buf[1] == 'e') want = false; /* te: v */
                bad += want != got;
                cr_expect_eq(got, want, "name len %zu byte %02x at %zu", len, c, pos);
                want = nghttp2_check_path(buf, len) != 0;
                got = field_ok(":path", 5, buf, len);
                bad += want != got;
                cr_expect_eq(got, want, "path len %zu byte %02x at %zu", len, c, pos);
                want = nghttp2_check_method(buf, len) != 0;
                got = field_ok(":method", 7, buf, len);
                bad += want != got;
                cr_expect_eq(got, want, "method len %zu byte %02x at %zu", len, c, pos);
                want = nghttp2_check_authority(buf, len) != 0;
                got = field_ok(":authority", 10, buf, len);
                bad += want != got;
                cr_expect_eq(got, want, "authority len %zu byte %02x at %zu", len, c, pos);
                cr_assert(bad <= 20, "too many differences");
            }
        }
    }
}
