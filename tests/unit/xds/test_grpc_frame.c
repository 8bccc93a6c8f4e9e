/* gRPC wire helpers: framing and deframing across arbitrary splits, size limits and flags,
 * grpc-timeout, status mappings, content-type, grpc-message decoding. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "xds/grpc_frame.h"

/* ---- helpers ------------------------------------------------------------------------------ */

/* Message i: a byte pattern of length len that depends on i. */
static void fill_msg(uint8_t *p, size_t len, unsigned i)
{
    for (size_t k = 0; k < len; k++)
        p[k] = (uint8_t)(k * 31 + i * 7 + 1);
}

/* A wire image of messages with the given lengths; returns its size. */
static size_t build_wire(uint8_t **out, const size_t *lens, unsigned n)
{
    size_t total = 0;
    for (unsigned i = 0; i < n; i++)
        total += RM_GRPC_PREFIX_LEN + lens[i];
    uint8_t *w = malloc(total ? total : 1), *p = w;
    for (unsigned i = 0; i < n; i++) {
        rm_grpc_prefix_write(p, (uint32_t)lens[i]);
        fill_msg(p + RM_GRPC_PREFIX_LEN, lens[i], i);
        p += RM_GRPC_PREFIX_LEN + lens[i];
    }
    *out = w;
    return total;
}

struct got {
    unsigned n;
    bool bad;
    unsigned zero_copy;
};

/* Feed <wire> in pieces whose sizes come from <cut> (cycled), check every message. */
static void feed(const uint8_t *wire, size_t total, const size_t *lens, unsigned nmsg,
                 const size_t *cut, unsigned ncut, struct got *g)
{
    struct rm_grpc_deframer d;
    rm_grpc_deframer_init(&d, 0);
    memset(g, 0, sizeof(*g));
    size_t off = 0;
    for (unsigned ci = 0; off < total; ci++) {
        size_t k = cut[ci % ncut];
        if (k == 0) k = 1;
        if (k > total - off) k = total - off;
        const uint8_t *p = wire + off, *msg;
        size_t n = k, len;
        int r;
        while ((r = rm_grpc_deframe(&d, &p, &n, &msg, &len)) == RM_GRPC_DEFRAME_MSG) {
            cr_assert_lt(g->n, nmsg);
            if (len != lens[g->n]) g->bad = true;
            uint8_t *want = malloc(len + 1);
            fill_msg(want, len, g->n);
            if (len && memcmp(msg, want, len) != 0) g->bad = true;
            free(want);
            if (msg >= wire + off && msg < wire + off + k) g->zero_copy++;
            g->n++;
        }
        cr_assert_eq(r, RM_GRPC_DEFRAME_MORE);
        cr_assert_eq(n, 0, "input left over");
        off += k;
    }
    cr_assert_eq(rm_grpc_deframer_partial(&d), 0);
    rm_grpc_deframer_dispose(&d);
}

/* ---- framing ------------------------------------------------------------------------------ */

Test(grpc_frame, prefix_is_flag_then_big_endian_length)
{
    uint8_t p[5];
    rm_grpc_prefix_write(p, 0x01020304);
    const uint8_t want[5] = {0, 1, 2, 3, 4};
    cr_assert_arr_eq(p, want, 5);
}

Test(grpc_frame, every_split_point_of_a_small_stream)
{
    const size_t lens[] = {0, 1, 5, 17, 0, 3, 40};
    const unsigned n = sizeof(lens) / sizeof(lens[0]);
    uint8_t *wire;
    size_t total = build_wire(&wire, lens, n);
    for (size_t a = 1; a <= total; a++) {
        for (size_t b = 1; b <= 7; b++) {
            size_t cut[] = {a, b};
            struct got g;
            feed(wire, total, lens, n, cut, 2, &g);
            cr_assert_eq(g.n, n, "split %zu/%zu: %u messages", a, b, g.n);
            cr_assert(!g.bad, "split %zu/%zu: content differs", a, b);
        }
    }
    free(wire);
}

Test(grpc_frame, large_messages_in_random_pieces)
{
    const size_t lens[] = {70000, 16384, 1, 1048576, 16379, 0, 300000};
    const unsigned n = sizeof(lens) / sizeof(lens[0]);
    uint8_t *wire;
    size_t total = build_wire(&wire, lens, n);
    uint32_t rng = 12345;
    size_t cut[64];
    for (unsigned round = 0; round < 20; round++) {
        for (unsigned i = 0; i < 64; i++) {
            rng = rng * 1103515245u + 12345u;
            cut[i] = 1 + (rng >> 8) % (round < 10 ? 20000 : 300);
        }
        struct got g;
        feed(wire, total, lens, n, cut, 64, &g);
        cr_assert_eq(g.n, n);
        cr_assert(!g.bad, "round %u", round);
    }
    free(wire);
}

Test(grpc_frame, whole_messages_in_one_piece_are_not_copied)
{
    const size_t lens[] = {10, 0, 20000, 3};
    uint8_t *wire;
    size_t total = build_wire(&wire, lens, 4);
    size_t cut[] = {total};
    struct got g;
    feed(wire, total, lens, 4, cut, 1, &g);
    cr_assert_eq(g.n, 4);
    cr_assert_eq(g.zero_copy, 4);
    free(wire);
}

Test(grpc_frame, size_limit_is_checked_at_the_prefix)
{
    struct rm_grpc_deframer d;
    rm_grpc_deframer_init(&d, 10);
    uint8_t w[5 + 10 + 5];
    rm_grpc_prefix_write(w, 10);
    memset(w + 5, 'x', 10);
    rm_grpc_prefix_write(w + 15, 11); /* over the limit; its body never arrives */
    const uint8_t *p = w, *msg;
    size_t n = 17, len; /* the second prefix split after 2 bytes */
    cr_assert_eq(rm_grpc_deframe(&d, &p, &n, &msg, &len), RM_GRPC_DEFRAME_MSG);
    cr_assert_eq(len, 10);
    cr_assert_eq(rm_grpc_deframe(&d, &p, &n, &msg, &len), RM_GRPC_DEFRAME_MORE);
    cr_assert_gt(rm_grpc_deframer_partial(&d), 0);
    n = 3;
    cr_assert_eq(rm_grpc_deframe(&d, &p, &n, &msg, &len), RM_GRPC_DEFRAME_TOO_LARGE);
    cr_assert_eq(d.bad_len, 11);
    rm_grpc_deframer_dispose(&d);

    rm_grpc_deframer_init(&d, 0);
    cr_assert_eq(d.max, RM_GRPC_DEFAULT_MAX_RECV);
    rm_grpc_prefix_write(w, RM_GRPC_DEFAULT_MAX_RECV + 1);
    p = w;
    n = 5;
    cr_assert_eq(rm_grpc_deframe(&d, &p, &n, &msg, &len), RM_GRPC_DEFRAME_TOO_LARGE);
    cr_assert_eq(d.bad_len, RM_GRPC_DEFAULT_MAX_RECV + 1);
    rm_grpc_deframer_dispose(&d);
}

Test(grpc_frame, compressed_and_bad_flags_are_errors)
{
    struct rm_grpc_deframer d;
    uint8_t w[6] = {1, 0, 0, 0, 1, 'a'};
    const uint8_t *p = w, *msg;
    size_t n = 6, len;
    rm_grpc_deframer_init(&d, 0);
    cr_assert_eq(rm_grpc_deframe(&d, &p, &n, &msg, &len), RM_GRPC_DEFRAME_COMPRESSED);
    rm_grpc_deframer_dispose(&d);

    w[0] = 2;
    p = w;
    n = 2; /* flag checked once the prefix is whole, split or not */
    rm_grpc_deframer_init(&d, 0);
    cr_assert_eq(rm_grpc_deframe(&d, &p, &n, &msg, &len), RM_GRPC_DEFRAME_MORE);
    n = 4;
    cr_assert_eq(rm_grpc_deframe(&d, &p, &n, &msg, &len), RM_GRPC_DEFRAME_BAD_FLAG);
    cr_assert_eq(d.bad_flag, 2);
    rm_grpc_deframer_dispose(&d);
}

Test(grpc_frame, partial_counts_an_incomplete_message_only)
{
    struct rm_grpc_deframer d;
    rm_grpc_deframer_init(&d, 0);
    uint8_t w[5 + 4 + 5 + 4];
    rm_grpc_prefix_write(w, 4);
    memcpy(w + 5, "abcd", 4);
    rm_grpc_prefix_write(w + 9, 4);
    memcpy(w + 14, "efgh", 4);
    const uint8_t *p = w, *msg;
    size_t n = 3, len;
    cr_assert_eq(rm_grpc_deframe(&d, &p, &n, &msg, &len), RM_GRPC_DEFRAME_MORE);
    cr_assert_eq(rm_grpc_deframer_partial(&d), 3);
    n = 12; /* the rest of message 1 and 6 bytes of message 2 */
    cr_assert_eq(rm_grpc_deframe(&d, &p, &n, &msg, &len), RM_GRPC_DEFRAME_MSG);
    cr_assert_eq(len, 4);
    cr_assert_eq(memcmp(msg, "abcd", 4), 0);
    cr_assert_eq(rm_grpc_deframer_partial(&d), 0);
    cr_assert_eq(rm_grpc_deframe(&d, &p, &n, &msg, &len), RM_GRPC_DEFRAME_MORE);
    cr_assert_eq(rm_grpc_deframer_partial(&d), 6);
    n = 3;
    cr_assert_eq(rm_grpc_deframe(&d, &p, &n, &msg, &len), RM_GRPC_DEFRAME_MSG);
    cr_assert_eq(memcmp(msg, "efgh", 4), 0);
    cr_assert_eq(rm_grpc_deframer_partial(&d), 0);
    rm_grpc_deframer_dispose(&d);
}

/* ---- grpc-timeout ------------------------------------------------------------------------- */

static void check_timeout(uint64_t ms, const char *want)
{
    char buf[RM_GRPC_TIMEOUT_MAX];
    size_t n = rm_grpc_timeout_format(ms, buf);
    cr_assert_str_eq(buf, want, "%llu ms", (unsigned long long)ms);
    cr_assert_eq(n, strlen(want));
}

Test(grpc_frame, timeout_format_uses_at_most_8_digits_rounding_up)
{
    check_timeout(1, "1m");
    check_timeout(1500, "1500m");
    check_timeout(99999999, "99999999m");
    check_timeout(100000000, "100000S");
    check_timeout(100000001, "100001S"); /* never shorter than asked */
    check_timeout(99999999000ull, "99999999S");
    check_timeout(99999999001ull, "1666667M");
    check_timeout(5999999940000ull, "99999999M");
    check_timeout(6000000060000ull, "1666667H");
    check_timeout(UINT64_MAX, "99999999H");
}

Test(grpc_frame, timeout_parse)
{
    uint64_t ms;
    struct {
        const char *s;
        uint64_t ms;
    } ok[] = {{"1500m", 1500}, {"2S", 2000}, {"3M", 180000}, {"1H", 3600000},
              {"1500u", 2},    {"1n", 1},    {"0m", 0},      {"99999999m", 99999999}};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        cr_assert_eq(rm_grpc_timeout_parse(ok[i].s, strlen(ok[i].s), &ms), 0, "%s", ok[i].s);
        cr_assert_eq(ms, ok[i].ms, "%s: %llu", ok[i].s, (unsigned long long)ms);
    }
    const char *bad[] = {"", "m", "123456789m", "12x", "1.5S", "-1m", "S1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(rm_grpc_timeout_parse(bad[i], strlen(bad[i]), &ms), -1, "%s", bad[i]);
    char buf[RM_GRPC_TIMEOUT_MAX];
    for (uint64_t v = 1; v < 1000000000000ull; v = v * 7 + 3) { /* format -> parse >= value */
        size_t n = rm_grpc_timeout_format(v, buf);
        cr_assert_eq(rm_grpc_timeout_parse(buf, n, &ms), 0, "%s", buf);
        cr_assert_geq(ms, v, "%s", buf);
    }
}

/* ---- status ------------------------------------------------------------------------------- */

Test(grpc_frame, status_parse)
{
    cr_assert_eq(rm_grpc_status_parse("0", 1), 0);
    cr_assert_eq(rm_grpc_status_parse("14", 2), 14);
    cr_assert_eq(rm_grpc_status_parse("123", 3), 123); /* unknown codes pass through */
    cr_assert_eq(rm_grpc_status_parse("", 0), -1);
    cr_assert_eq(rm_grpc_status_parse("1a", 2), -1);
    cr_assert_eq(rm_grpc_status_parse("-1", 2), -1);
    cr_assert_eq(rm_grpc_status_parse(" 1", 2), -1);
    cr_assert_eq(rm_grpc_status_parse("1234567890", 10), -1);
}

Test(grpc_frame, http_status_mapping_follows_the_spec_table)
{
    const int table[][2] = {
        {400, RM_GRPC_INTERNAL},          {401, RM_GRPC_UNAUTHENTICATED},
        {403, RM_GRPC_PERMISSION_DENIED}, {404, RM_GRPC_UNIMPLEMENTED},
        {429, RM_GRPC_UNAVAILABLE},       {502, RM_GRPC_UNAVAILABLE},
        {503, RM_GRPC_UNAVAILABLE},       {504, RM_GRPC_UNAVAILABLE},
        {500, RM_GRPC_UNKNOWN},           {200, RM_GRPC_UNKNOWN},
        {302, RM_GRPC_UNKNOWN},           {418, RM_GRPC_UNKNOWN},
    };
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
        cr_assert_eq(rm_grpc_status_from_http(table[i][0]), table[i][1], "%d", table[i][0]);
}

Test(grpc_frame, reset_mapping)
{
    cr_assert_eq(rm_grpc_status_from_reset(RM_RESET_CONNECTION_FAILURE), RM_GRPC_UNAVAILABLE);
    cr_assert_eq(rm_grpc_status_from_reset(RM_RESET_CONNECTION_TERMINATION), RM_GRPC_UNAVAILABLE);
    cr_assert_eq(rm_grpc_status_from_reset(RM_RESET_REFUSED), RM_GRPC_UNAVAILABLE);
    cr_assert_eq(rm_grpc_status_from_reset(RM_RESET_REMOTE), RM_GRPC_CANCELLED);
    cr_assert_eq(rm_grpc_status_from_reset(RM_RESET_LOCAL), RM_GRPC_CANCELLED);
    cr_assert_eq(rm_grpc_status_from_reset(RM_RESET_PROTOCOL), RM_GRPC_INTERNAL);
    cr_assert_eq(rm_grpc_status_from_reset(RM_RESET_OVERFLOW), RM_GRPC_RESOURCE_EXHAUSTED);
    cr_assert_eq(rm_grpc_status_from_reset(RM_RESET_TIMEOUT), RM_GRPC_DEADLINE_EXCEEDED);
}

Test(grpc_frame, code_names)
{
    cr_assert_str_eq(rm_grpc_code_name(0), "OK");
    cr_assert_str_eq(rm_grpc_code_name(4), "DEADLINE_EXCEEDED");
    cr_assert_str_eq(rm_grpc_code_name(14), "UNAVAILABLE");
    cr_assert_str_eq(rm_grpc_code_name(16), "UNAUTHENTICATED");
    cr_assert_str_eq(rm_grpc_code_name(17), "UNKNOWN_CODE");
    cr_assert_str_eq(rm_grpc_code_name(-1), "UNKNOWN_CODE");
}

Test(grpc_frame, content_type)
{
    const char *ok[] = {"application/grpc", "application/grpc+proto", "application/grpc;x=y",
                        "Application/GRPC"};
    const char *bad[] = {"",
                         "application/grp",
                         "application/grpcx",
                         "application/json",
                         "text/html; charset=utf-8",
                         "application/grpc-web"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        cr_assert(rm_grpc_content_type_ok(ok[i], strlen(ok[i])), "%s", ok[i]);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert(!rm_grpc_content_type_ok(bad[i], strlen(bad[i])), "%s", bad[i]);
}

/* ---- grpc-message ------------------------------------------------------------------------- */

static void check_decode(const char *in, const char *want)
{
    char out[128];
    size_t n = rm_grpc_message_decode(in, strlen(in), out);
    cr_assert_str_eq(out, want, "decode(%s)", in);
    cr_assert_eq(n, strlen(want));
}

Test(grpc_frame, message_percent_decoding_keeps_malformed_escapes)
{
    check_decode("", "");
    check_decode("hello world", "hello world");
    check_decode("100%25%20done", "100% done");
    check_decode("%E2%82%AC%e2%82%ac", "\xe2\x82\xac\xe2\x82\xac");
    check_decode("50%", "50%");
    check_decode("%4", "%4");
    check_decode("%zz%4g", "%zz%4g");
    check_decode("a%00b", "a%00b");
    check_decode("%%41", "%A");
    /* not NUL-terminated input: only n bytes are read */
    char out[8];
    cr_assert_eq(rm_grpc_message_decode("ab%41zz", 5, out), 3);
    cr_assert_str_eq(out, "abA");
}
