/* The text buffer: inline appends (growth, NUL termination) and the decimal writer. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "proxy/config/strbuf.h"

static void expect_u64(uint64_t v)
{
    char want[32], got[RM_STRBUF_U64_MAX + 1];
    snprintf(want, sizeof(want), "%" PRIu64, v);
    size_t n = rm_strbuf_fmt_u64(got, v);
    got[n] = 0;
    cr_assert_str_eq(got, want, "%" PRIu64, v);
}

Test(strbuf, u64_edges)
{
    expect_u64(0);
    expect_u64(UINT64_MAX);
    expect_u64(UINT64_MAX - 1);
    expect_u64((uint64_t)INT64_MAX);
    expect_u64((uint64_t)INT64_MAX + 1);
    for (uint64_t p = 1; p <= UINT64_MAX / 10; p *= 10) { /* every length, both ends */
        expect_u64(p - 1);
        expect_u64(p);
        expect_u64(p + 1);
        expect_u64(p * 10 - 1);
    }
    expect_u64(10000000000000000000ull); /* 20 digits */
}

Test(strbuf, u64_sweep)
{
    for (uint64_t v = 0; v < 200000; v++)
        expect_u64(v);
    uint64_t x = 88172645463325252ull; /* xorshift64: values of every size */
    for (int i = 0; i < 100000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        expect_u64(x >> (i % 64));
    }
}

Test(strbuf, put_u64_appends)
{
    struct rm_strbuf sb = RM_STRBUF_INIT;
    rm_strbuf_put_u64(&sb, 0);
    cr_expect_str_eq(rm_strbuf_str(&sb), "0");
    rm_strbuf_putc(&sb, ' ');
    rm_strbuf_put_u64(&sb, UINT64_MAX);
    cr_expect_str_eq(rm_strbuf_str(&sb), "0 18446744073709551615");
    cr_expect_eq(sb.len, 22);
    rm_strbuf_dispose(&sb);
}

Test(strbuf, appends_grow_and_terminate)
{
    struct rm_strbuf sb = RM_STRBUF_INIT;
    cr_expect_str_eq(rm_strbuf_str(&sb), "");
    rm_strbuf_append(&sb, "x", 0); /* an empty append on an empty buffer: "" */
    cr_expect_not_null(sb.p);
    cr_expect_str_eq(rm_strbuf_str(&sb), "");
    char want[5000];
    size_t n = 0;
    for (int i = 0; n + 40 < sizeof(want); i++) { /* crosses every capacity up to 8 KiB */
        char piece[40];
        int k = snprintf(piece, sizeof(piece), "%d:", i);
        if (i % 3 == 0) {
            rm_strbuf_puts(&sb, piece);
        } else if (i % 3 == 1) {
            rm_strbuf_append(&sb, piece, (size_t)k);
        } else {
            for (int j = 0; j < k; j++)
                rm_strbuf_putc(&sb, piece[j]);
        }
        memcpy(want + n, piece, (size_t)k);
        n += (size_t)k;
        want[n] = 0;
        cr_assert_eq(sb.len, n);
        cr_assert_lt(sb.len, sb.cap);
        cr_assert_eq(sb.p[sb.len], 0);
    }
    cr_expect_str_eq(rm_strbuf_str(&sb), want);
    rm_strbuf_dispose(&sb);
}

Test(strbuf, reserve_then_added)
{
    struct rm_strbuf sb = RM_STRBUF_INIT;
    rm_strbuf_puts(&sb, "ab");
    char *d = rm_strbuf_reserve(&sb, 100); /* more than the first 64-byte block */
    cr_assert_gt(sb.cap - sb.len, 100);
    memset(d, 'z', 100);
    rm_strbuf_added(&sb, 3); /* fewer than reserved: the rest is not text */
    cr_expect_str_eq(rm_strbuf_str(&sb), "abzzz");
    char *p = rm_strbuf_reserve(&sb, 0);
    cr_expect_eq(p, sb.p + sb.len);
    rm_strbuf_added(&sb, 0);
    cr_expect_str_eq(rm_strbuf_str(&sb), "abzzz");
    char *s = rm_strbuf_steal(&sb);
    cr_expect_str_eq(s, "abzzz");
    cr_expect_null(sb.p);
    free(s);
}
