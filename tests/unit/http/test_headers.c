/* The header model and its small helpers. */
#include <criterion/criterion.h>
#include <stdio.h>

#include "proxy/http/headers.h"

Test(headers, add_get_set_remove)
{
    struct rm_arena a;
    rm_arena_init(&a);
    struct rm_headers h;
    rm_headers_init(&h, &a);
    for (int i = 0; i < 40; i++)
        rm_headers_add(&h, "x-n", 3, "v", 1);
    rm_headers_add(&h, "host", 4, "example", 7);
    cr_assert_eq(h.n, 41);
    struct rm_str v = RM_HDR_GET(&h, "host");
    cr_assert(v.p && rm_str_eq(v, "example", 7));
    rm_headers_set(&h, "x-n", 3, "one", 3);
    cr_assert_eq(h.n, 2, "set collapses duplicates");
    cr_assert_eq(rm_headers_remove(&h, "x-n", 3), 1);
    cr_assert_null(RM_HDR_GET(&h, "x-n").p);
    rm_arena_dispose(&a);
    rm_arena_thread_cleanup();
}

Test(headers, fmt_u64_matches_printf)
{
    const uint64_t v[] = {0, 7, 10, 99, 12345, 4294967296ULL, UINT64_MAX};
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        char a[24], b[24];
        size_t n = rm_fmt_u64(a, v[i]);
        a[n] = 0;
        snprintf(b, sizeof(b), "%llu", (unsigned long long)v[i]);
        cr_assert_str_eq(a, b);
    }
}

Test(headers, parse_u63_and_hop_by_hop)
{
    cr_assert_eq(rm_parse_u63("200", 3), 200);
    cr_assert_eq(rm_parse_u63("2x0", 3), -1);
    cr_assert_eq(rm_parse_u63("", 0), -1);
    cr_assert(rm_header_is_hop_by_hop("connection", 10));
    cr_assert(rm_header_is_hop_by_hop("transfer-encoding", 17));
    cr_assert(!rm_header_is_hop_by_hop("content-length", 14));
}

Test(headers, set_ref_points_at_the_value_and_collapses_duplicates)
{
    struct rm_arena a;
    rm_arena_init(&a);
    struct rm_headers h;
    rm_headers_init(&h, &a);
    static const char lit[] = "remora";
    rm_headers_set_ref(&h, "server", 6, lit, 6);
    cr_assert_eq((const char *)h.v[0].value, lit, "absent: added without a copy");
    rm_headers_add(&h, "server", 6, "other", 5);
    rm_headers_add(&h, "server", 6, "third", 5);
    rm_headers_set_ref(&h, "server", 6, lit, 6);
    cr_assert_eq(h.n, 1);
    cr_assert_eq((const char *)h.v[0].value, lit, "present: replaced without a copy");
    rm_headers_set(&h, "server", 6, lit, 6);
    cr_assert_neq((const char *)h.v[0].value, lit, "rm_headers_set copies");
    cr_assert(rm_str_eq(RM_HDR_GET(&h, "server"), "remora", 6));
    rm_arena_dispose(&a);
    rm_arena_thread_cleanup();
}
