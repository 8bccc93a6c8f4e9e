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
    const uint64_t v[] = {0, 7, 9, 10, 99, 12345, 4294967296ULL, UINT64_MAX};
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
    cr_assert(rm_header_is_hop_by_hop("te", 2) && rm_header_is_hop_by_hop("upgrade", 7));
    cr_assert(rm_header_is_hop_by_hop("keep-alive", 10));
    cr_assert(rm_header_is_hop_by_hop("proxy-connection", 16));
    cr_assert(!rm_header_is_hop_by_hop("host", 4) && !rm_header_is_hop_by_hop("tee", 3));
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

Test(headers, set_ref_key_as_set_ref)
{
    struct rm_arena a;
    rm_arena_init(&a);
    struct rm_headers h;
    rm_headers_init(&h, &a);
    static const char lit[] = "remora";
    rm_headers_add(&h, "x-a", 3, "1", 1);
    rm_headers_set_ref_key(&h, RM_HK_SERVER, lit, 6); /* key bits rule it out: appended */
    cr_assert_eq(h.n, 2);
    cr_assert_eq((const char *)h.v[1].value, lit);
    cr_assert_eq(h.v[1].key, RM_HK_SERVER);
    cr_assert(rm_str_eq(RM_HDR_GET(&h, "server"), "remora", 6));
    rm_headers_add(&h, "server", 6, "other", 5);
    rm_headers_add(&h, "x-b", 3, "2", 1);
    rm_headers_add(&h, "server", 6, "third", 5);
    rm_headers_set_ref_key(&h, RM_HK_SERVER, "s", 1); /* present: first replaced, rest dropped */
    cr_assert_eq(h.n, 3);
    cr_assert(rm_str_eq(RM_HDR_GET(&h, "server"), "s", 1));
    cr_assert(rm_str_eq(RM_HDR_GET(&h, "x-b"), "2", 1));
    /* an entry a parser has not classified yet (key RM_HK_UNKNOWN) is found by its name */
    struct rm_headers u;
    rm_headers_init(&u, &a);
    rm_headers_add_ref_key(&u, RM_HK_UNKNOWN, "x-forwarded-proto", 17, "http", 4);
    rm_headers_set_ref_key(&u, RM_HK_X_FORWARDED_PROTO, "https", 5);
    cr_assert_eq(u.n, 1);
    cr_assert(rm_str_eq(RM_HDR_GET(&u, "x-forwarded-proto"), "https", 5));
    /* a block without key bits (have == 0) is scanned */
    struct rm_headers z;
    rm_headers_init(&z, &a);
    rm_headers_add(&z, "server", 6, "old", 3);
    z.have = 0;
    rm_headers_set_ref_key(&z, RM_HK_SERVER, lit, 6);
    cr_assert_eq(z.n, 1);
    cr_assert_eq((const char *)z.v[0].value, lit);
    rm_arena_dispose(&a);
    rm_arena_thread_cleanup();
}

/* ---- well-known keys ---------------------------------------------------------------------- */

Test(headers, hkey_of_round_trips_every_well_known_name)
{
    for (int k = RM_HK_OTHER + 1; k < RM_HK_COUNT; k++) {
        struct rm_str n = rm_hkey_names[k];
        cr_assert_not_null(n.p, "key %d has a name", k);
        cr_assert_eq(rm_hkey_of(n.p, n.len), (enum rm_hkey)k, "%s", n.p);
    }
    cr_assert_eq(rm_hkey_of("Content-Type", 12), RM_HK_OTHER, "names are lower-case");
    cr_assert_eq(rm_hkey_of("content-typ", 11), RM_HK_OTHER);
    cr_assert_eq(rm_hkey_of(":pat", 4), RM_HK_OTHER);
    cr_assert_eq(rm_hkey_of("", 0), RM_HK_OTHER);
    cr_assert_eq(rm_hkey_of("x-forwarded-prot0", 17), RM_HK_OTHER);
}

static void init_block(struct rm_headers *h, struct rm_arena *a)
{
    rm_arena_init(a);
    rm_headers_init(h, a);
    rm_headers_add(h, ":status", 7, "200", 3);
    rm_headers_add(h, "content-type", 12, "text/plain", 10);
    rm_headers_add(h, "x-custom", 8, "1", 1);
    rm_headers_add(h, "content-length", 14, "5", 1);
}

Test(headers, entries_carry_their_key_and_lookups_use_it)
{
    struct rm_arena a;
    struct rm_headers h;
    init_block(&h, &a);
    cr_assert_eq(h.v[0].key, RM_HK_STATUS);
    cr_assert_eq(h.v[2].key, RM_HK_OTHER);
    cr_assert_eq(rm_headers_find_key(&h, RM_HK_CONTENT_LENGTH), 3);
    cr_assert(rm_str_eq(rm_headers_get_key(&h, RM_HK_CONTENT_TYPE), "text/plain", 10));
    cr_assert(rm_str_eq(RM_HDR_GET(&h, "x-custom"), "1", 1));
    cr_assert_null(rm_headers_get_key(&h, RM_HK_SERVER).p);
    cr_assert(!rm_headers_may_have(&h, RM_HK_SERVER), "absent keys end at the key bits");
    cr_assert(rm_headers_may_have(&h, RM_HK_CONTENT_TYPE));
    /* removal leaves the bit set (a superset): the lookup scans and still finds nothing */
    cr_assert_eq(rm_headers_remove(&h, "content-type", 12), 1);
    cr_assert_null(rm_headers_get_key(&h, RM_HK_CONTENT_TYPE).p);
    cr_assert_eq(rm_headers_find(&h, "content-length", 14), 2);
    rm_arena_dispose(&a);
    rm_arena_thread_cleanup();
}

Test(headers, unclassified_entries_are_found_by_name)
{
    /* a block written field by field (no key, no key bits) */
    struct rm_header v[3] = {
        {.name = (uint8_t *)":path", .value = (uint8_t *)"/x", .name_len = 5, .value_len = 2},
        {.name = (uint8_t *)"x-a", .value = (uint8_t *)"1", .name_len = 3, .value_len = 1},
        {.name = (uint8_t *)"host", .value = (uint8_t *)"h", .name_len = 4, .value_len = 1},
    };
    struct rm_headers h = {.v = v, .n = 3, .cap = 3};
    cr_assert_eq(rm_header_key(&v[0]), RM_HK_PATH);
    cr_assert_eq(rm_headers_find_key(&h, RM_HK_HOST), 2);
    cr_assert(rm_str_eq(rm_headers_get_key(&h, RM_HK_PATH), "/x", 2));
    cr_assert(rm_str_eq(RM_HDR_GET(&h, "x-a"), "1", 1));
    cr_assert_null(RM_HDR_GET(&h, "x-b").p);
    /* an API-built block that gets an unclassified entry keeps finding it */
    struct rm_arena a;
    rm_arena_init(&a);
    struct rm_headers g;
    rm_headers_init(&g, &a);
    rm_headers_add(&g, "x-a", 3, "1", 1);
    rm_headers_add_ref_key(&g, RM_HK_UNKNOWN, "server", 6, "s", 1);
    cr_assert(rm_str_eq(rm_headers_get_key(&g, RM_HK_SERVER), "s", 1));
    cr_assert_eq(rm_headers_remove(&g, "server", 6), 1);
    cr_assert_eq(g.n, 1);
    rm_arena_dispose(&a);
    rm_arena_thread_cleanup();
}

Test(headers, parser_slots_get_their_key)
{
    struct rm_arena a;
    rm_arena_init(&a);
    struct rm_headers h;
    rm_headers_init(&h, &a);
    rm_headers_add_ref_key(&h, RM_HK_OTHER, "", 0, "", 0);                 /* a slot */
    rm_headers_add_ref_key(&h, RM_HK_OTHER, "x-forwarded-for", 15, "", 0); /* provisional */
    rm_headers_set_key(&h, 1);
    cr_assert_eq(h.v[1].key, RM_HK_X_FORWARDED_FOR);
    cr_assert_eq(rm_headers_find_key(&h, RM_HK_X_FORWARDED_FOR), 1);
    cr_assert_null(rm_headers_get_key(&h, RM_HK_METHOD).p);
    rm_headers_put_known(&h, 0, RM_HK_METHOD, "GET", 3);
    cr_assert(rm_str_eq(rm_headers_get_key(&h, RM_HK_METHOD), "GET", 3));
    cr_assert(rm_str_eq(RM_HDR_GET(&h, ":method"), "GET", 3));
    rm_arena_dispose(&a);
    rm_arena_thread_cleanup();
}

Test(headers, set_and_copy_keep_keys)
{
    struct rm_arena a;
    struct rm_headers h;
    init_block(&h, &a);
    rm_headers_add(&h, "x-custom", 8, "2", 1);
    rm_headers_add(&h, "content-type", 12, "a/b", 3);
    rm_headers_set_ref(&h, "content-type", 12, "c/d", 3);
    cr_assert_eq(h.n, 5, "set_ref drops the repeat of a well-known name");
    rm_headers_set(&h, "x-custom", 8, "3", 1);
    cr_assert_eq(h.n, 4, "and of any other name");
    struct rm_headers c;
    rm_headers_init(&c, &a);
    rm_headers_copy(&c, &h);
    cr_assert_eq(c.n, h.n);
    for (uint32_t i = 0; i < c.n; i++)
        cr_assert_eq(c.v[i].key, h.v[i].key);
    cr_assert(rm_str_eq(rm_headers_get_key(&c, RM_HK_CONTENT_TYPE), "c/d", 3));
    cr_assert(rm_str_eq(RM_HDR_GET(&c, "x-custom"), "3", 1));
    rm_arena_dispose(&a);
    rm_arena_thread_cleanup();
}

/* ---- field names ---------------------------------------------------------------------------- */

static bool ref_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* What rm_header_name_lower must do, byte by byte. */
static bool ref_lower(uint8_t *dst, const char *src, size_t n)
{
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)src[i];
        ok &= ref_tchar(c);
        dst[i] = !ref_tchar(c) ? 0 : (c >= 'A' && c <= 'Z') ? (uint8_t)(c + 32) : c;
    }
    return ok;
}

static void check_name(const char *src, size_t n)
{
    uint8_t a[64], b[64];
    memset(a, 0xee, sizeof(a));
    memset(b, 0xee, sizeof(b));
    bool ra = rm_header_name_lower(a, src, n), rb = ref_lower(b, src, n);
    cr_assert_eq(ra, rb, "validity of a %zu-byte name", n);
    cr_assert_eq(memcmp(a, b, sizeof(a)), 0, "bytes of a %zu-byte name", n);
}

Test(headers, name_lower_matches_the_rfc_byte_by_byte)
{
    char s[40];
    /* every byte value at every position of names of every length up to 33 */
    for (size_t n = 1; n <= 33; n++) {
        for (size_t pos = 0; pos < n; pos++) {
            for (int c = 0; c < 256; c++) {
                for (size_t i = 0; i < n; i++)
                    s[i] = "Content-Type-0123456789-abcdefghij"[i];
                s[pos] = (char)c;
                check_name(s, n);
            }
        }
    }
    check_name("", 0);
    /* in place */
    char in[] = "X-Forwarded-For-Something";
    cr_assert(rm_header_name_lower((uint8_t *)in, in, strlen(in)));
    cr_assert_str_eq(in, "x-forwarded-for-something");
    /* random strings of allowed and forbidden bytes */
    uint64_t st = 42;
    for (int k = 0; k < 20000; k++) {
        size_t n = 1 + (size_t)((st = st * 6364136223846793005ULL + 1) >> 59);
        for (size_t i = 0; i < n; i++) {
            st = st * 6364136223846793005ULL + 1442695040888963407ULL;
            const char *pool = (st >> 62) ? "abcXYZ09-_~" : "\x01 :\x7f\x80\xff\"(),/";
            s[i] = pool[(st >> 32) % strlen(pool)];
        }
        check_name(s, n);
    }
}
