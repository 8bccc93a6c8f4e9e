#include "proxy/http/headers.h"

#include <stdlib.h>

void rm_headers_init(struct rm_headers *h, struct rm_arena *arena)
{
    h->v = NULL;
    h->n = h->cap = 0;
    h->arena = arena;
    h->have = 0;
}

void rm_headers_grow(struct rm_headers *h)
{
    uint32_t cap = h->cap ? h->cap * 2 : 16;
    struct rm_header *v = rm_arena_alloc(h->arena, cap * sizeof(*v));
    if (h->n) memcpy(v, h->v, h->n * sizeof(*v));
    h->v = v;
    h->cap = cap;
}

/* ---- well-known names ---------------------------------------------------------------------- */

const struct rm_str rm_hkey_names[RM_HK_COUNT] = {
    [RM_HK_METHOD] = RM_STR(":method"),
    [RM_HK_SCHEME] = RM_STR(":scheme"),
    [RM_HK_AUTHORITY] = RM_STR(":authority"),
    [RM_HK_PATH] = RM_STR(":path"),
    [RM_HK_STATUS] = RM_STR(":status"),
    [RM_HK_HOST] = RM_STR("host"),
    [RM_HK_CONTENT_LENGTH] = RM_STR("content-length"),
    [RM_HK_CONTENT_TYPE] = RM_STR("content-type"),
    [RM_HK_TRANSFER_ENCODING] = RM_STR("transfer-encoding"),
    [RM_HK_CONNECTION] = RM_STR("connection"),
    [RM_HK_KEEP_ALIVE] = RM_STR("keep-alive"),
    [RM_HK_PROXY_CONNECTION] = RM_STR("proxy-connection"),
    [RM_HK_UPGRADE] = RM_STR("upgrade"),
    [RM_HK_TE] = RM_STR("te"),
    [RM_HK_EXPECT] = RM_STR("expect"),
    [RM_HK_SERVER] = RM_STR("server"),
    [RM_HK_VIA] = RM_STR("via"),
    [RM_HK_X_REQUEST_ID] = RM_STR("x-request-id"),
    [RM_HK_X_FORWARDED_FOR] = RM_STR("x-forwarded-for"),
    [RM_HK_X_FORWARDED_PROTO] = RM_STR("x-forwarded-proto"),
    [RM_HK_GRPC_TIMEOUT] = RM_STR("grpc-timeout"),
    [RM_HK_USER_AGENT] = RM_STR("user-agent"),
    [RM_HK_X_ENVOY_ORIGINAL_PATH] = RM_STR("x-envoy-original-path"),
    [RM_HK_X_ENVOY_UPSTREAM_SERVICE_TIME] = RM_STR("x-envoy-upstream-service-time"),
};

#define IS(lit) (memcmp(n, lit, sizeof(lit) - 1) == 0)

enum rm_hkey rm_hkey_of(const void *name, size_t len)
{
    const char *n = name;
    switch (len) {
    case 2:
        return IS("te") ? RM_HK_TE : RM_HK_OTHER;
    case 3:
        return IS("via") ? RM_HK_VIA : RM_HK_OTHER;
    case 4:
        return IS("host") ? RM_HK_HOST : RM_HK_OTHER;
    case 5:
        return IS(":path") ? RM_HK_PATH : RM_HK_OTHER;
    case 6:
        if (IS("server")) return RM_HK_SERVER;
        return IS("expect") ? RM_HK_EXPECT : RM_HK_OTHER;
    case 7:
        if (n[0] == ':') {
            if (IS(":method")) return RM_HK_METHOD;
            if (IS(":status")) return RM_HK_STATUS;
            return IS(":scheme") ? RM_HK_SCHEME : RM_HK_OTHER;
        }
        return IS("upgrade") ? RM_HK_UPGRADE : RM_HK_OTHER;
    case 10:
        if (IS(":authority")) return RM_HK_AUTHORITY;
        if (IS("connection")) return RM_HK_CONNECTION;
        if (IS("user-agent")) return RM_HK_USER_AGENT;
        return IS("keep-alive") ? RM_HK_KEEP_ALIVE : RM_HK_OTHER;
    case 12:
        if (IS("content-type")) return RM_HK_CONTENT_TYPE;
        if (IS("x-request-id")) return RM_HK_X_REQUEST_ID;
        return IS("grpc-timeout") ? RM_HK_GRPC_TIMEOUT : RM_HK_OTHER;
    case 14:
        return IS("content-length") ? RM_HK_CONTENT_LENGTH : RM_HK_OTHER;
    case 15:
        return IS("x-forwarded-for") ? RM_HK_X_FORWARDED_FOR : RM_HK_OTHER;
    case 16:
        return IS("proxy-connection") ? RM_HK_PROXY_CONNECTION : RM_HK_OTHER;
    case 17:
        if (IS("transfer-encoding")) return RM_HK_TRANSFER_ENCODING;
        return IS("x-forwarded-proto") ? RM_HK_X_FORWARDED_PROTO : RM_HK_OTHER;
    case 21:
        return IS("x-envoy-original-path") ? RM_HK_X_ENVOY_ORIGINAL_PATH : RM_HK_OTHER;
    case 29:
        return IS("x-envoy-upstream-service-time") ? RM_HK_X_ENVOY_UPSTREAM_SERVICE_TIME
                                                   : RM_HK_OTHER;
    default:
        return RM_HK_OTHER;
    }
}

#undef IS

/* Is <e> the header named <name>, whose key is <k>?  Compares names only when a key can't
 * decide: <e> never classified, or both are RM_HK_OTHER. */
static bool matches(const struct rm_header *e, enum rm_hkey k, const char *name, size_t nlen)
{
    if (e->key != RM_HK_UNKNOWN && (e->key != k || k != RM_HK_OTHER)) return e->key == k;
    return e->name_len == nlen && memcmp(e->name, name, nlen) == 0;
}

/* First index at or after <from> of the header named <name> (key <k>), or -1. */
static int find_from(const struct rm_headers *h, uint32_t from, enum rm_hkey k, const char *name,
                     size_t nlen)
{
    if (!rm_headers_may_have(h, k)) return -1;
    for (uint32_t i = from; i < h->n; i++) {
        if (matches(&h->v[i], k, name, nlen)) return (int)i;
    }
    return -1;
}

/* ---- blocks ------------------------------------------------------------------------------- */

void rm_headers_set_key(struct rm_headers *h, uint32_t i)
{
    struct rm_header *e = &h->v[i];
    e->key = (uint8_t)rm_hkey_of(e->name, e->name_len);
    h->have |= RM_HK_BIT(e->key);
}

void rm_headers_put_known(struct rm_headers *h, uint32_t i, enum rm_hkey k, const char *value,
                          size_t vlen)
{
    struct rm_header *e = &h->v[i];
    e->name = (uint8_t *)rm_hkey_names[k].p;
    e->name_len = rm_hkey_names[k].len;
    e->value = (uint8_t *)value;
    e->value_len = vlen;
    e->flags = 0;
    e->key = (uint8_t)k;
    h->have |= RM_HK_BIT(k);
}

void rm_headers_add_ref(struct rm_headers *h, const char *name, size_t nlen, const char *value,
                        size_t vlen)
{
    rm_headers_add_ref_key(h, rm_hkey_of(name, nlen), name, nlen, value, vlen);
}

void rm_headers_add(struct rm_headers *h, const char *name, size_t nlen, const char *value,
                    size_t vlen)
{
    char *p = rm_arena_alloc(h->arena, nlen + vlen + 2);
    memcpy(p, name, nlen);
    p[nlen] = 0;
    memcpy(p + nlen + 1, value, vlen);
    p[nlen + 1 + vlen] = 0;
    rm_headers_add_ref(h, p, nlen, p + nlen + 1, vlen);
}

int rm_headers_find(const struct rm_headers *h, const char *name, size_t nlen)
{
    return find_from(h, 0, rm_hkey_of(name, nlen), name, nlen);
}

int rm_headers_scan_key(const struct rm_headers *h, enum rm_hkey k)
{
    for (uint32_t i = 0; i < h->n; i++) {
        const struct rm_header *e = &h->v[i];
        if (e->key == k) return (int)i;
        if (e->key == RM_HK_UNKNOWN && e->name_len == rm_hkey_names[k].len &&
            memcmp(e->name, rm_hkey_names[k].p, e->name_len) == 0)
            return (int)i;
    }
    return -1;
}

static struct rm_str value_at(const struct rm_headers *h, int i)
{
    if (i < 0) return (struct rm_str){NULL, 0};
    return (struct rm_str){(const char *)h->v[i].value, h->v[i].value_len};
}

struct rm_str rm_headers_get(const struct rm_headers *h, const char *name, size_t nlen)
{
    return value_at(h, rm_headers_find(h, name, nlen));
}

unsigned rm_headers_remove(struct rm_headers *h, const char *name, size_t nlen)
{
    enum rm_hkey k = rm_hkey_of(name, nlen);
    int first = find_from(h, 0, k, name, nlen);
    if (first < 0) return 0;
    uint32_t j = (uint32_t)first;
    unsigned removed = 0;
    for (uint32_t i = (uint32_t)first; i < h->n; i++) {
        if (matches(&h->v[i], k, name, nlen)) {
            removed++;
            continue;
        }
        h->v[j++] = h->v[i];
    }
    h->n = j;
    return removed;
}

void rm_headers_set(struct rm_headers *h, const char *name, size_t nlen, const char *value,
                    size_t vlen)
{
    rm_headers_set_ref(h, name, nlen, rm_arena_strndup(h->arena, value, vlen), vlen);
}

void rm_headers_set_ref(struct rm_headers *h, const char *name, size_t nlen, const char *value,
                        size_t vlen)
{
    rm_headers_set_ref_k(h, rm_hkey_of(name, nlen), name, nlen, value, vlen);
}

void rm_headers_set_ref_k(struct rm_headers *h, enum rm_hkey k, const char *name, size_t nlen,
                          const char *value, size_t vlen)
{
    int i = find_from(h, 0, k, name, nlen);
    if (i < 0) {
        rm_headers_add_ref_key(h, k, name, nlen, value, vlen);
        return;
    }
    h->v[i].value = (uint8_t *)value;
    h->v[i].value_len = vlen;
    for (int d = find_from(h, (uint32_t)i + 1, k, name, nlen); d >= 0;
         d = find_from(h, (uint32_t)d, k, name, nlen)) {
        memmove(&h->v[d], &h->v[d + 1], (h->n - (uint32_t)d - 1) * sizeof(h->v[0]));
        h->n--;
    }
}

void rm_headers_copy(struct rm_headers *dst, const struct rm_headers *src)
{
    for (uint32_t i = 0; i < src->n; i++) {
        const struct rm_header *e = &src->v[i];
        char *p = rm_arena_alloc(dst->arena, e->name_len + e->value_len + 2);
        memcpy(p, e->name, e->name_len);
        p[e->name_len] = 0;
        memcpy(p + e->name_len + 1, e->value, e->value_len);
        p[e->name_len + 1 + e->value_len] = 0;
        rm_headers_add_ref_key(dst, (enum rm_hkey)e->key, p, e->name_len, p + e->name_len + 1,
                               e->value_len);
    }
}

int64_t rm_parse_u63(const char *p, size_t n)
{
    if (n - 1 >= 18) return -1; /* n == 0 or n > 18 */
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned)(unsigned char)p[i] - '0';
        if (d > 9) return -1;
        v = v * 10 + d;
    }
    return (int64_t)v;
}

/* tchar (RFC 9110 5.6.2) lower-cased; 0 for every byte a field name may not contain. */
static const uint8_t tchar_lower[256] = {
    ['!'] = '!', ['#'] = '#', ['$'] = '$', ['%'] = '%', ['&'] = '&', ['\''] = '\'', ['*'] = '*',
    ['+'] = '+', ['-'] = '-', ['.'] = '.', ['^'] = '^', ['_'] = '_', ['`'] = '`',   ['|'] = '|',
    ['~'] = '~', ['0'] = '0', ['1'] = '1', ['2'] = '2', ['3'] = '3', ['4'] = '4',   ['5'] = '5',
    ['6'] = '6', ['7'] = '7', ['8'] = '8', ['9'] = '9',
#define L(x) [x] = x, [x - 'a' + 'A'] = x
    L('a'),      L('b'),      L('c'),      L('d'),      L('e'),      L('f'),        L('g'),
    L('h'),      L('i'),      L('j'),      L('k'),      L('l'),      L('m'),        L('n'),
    L('o'),      L('p'),      L('q'),      L('r'),      L('s'),      L('t'),        L('u'),
    L('v'),      L('w'),      L('x'),      L('y'),      L('z'),
#undef L
};

/* Bit 7 of every byte of <x> (all bytes < 0x80) that lies in [lo, hi]. */
static inline uint64_t bytes_in(uint64_t x, uint8_t lo, uint8_t hi)
{
    const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
    uint64_t ge_lo = x + (uint64_t)(0x80 - lo) * ones; /* no carry between bytes: x < 0x80 */
    uint64_t gt_hi = x + (uint64_t)(0x7f - hi) * ones;
    return ge_lo & ~gt_hi & high;
}

/* Eight name bytes lower-cased into *out when every one of them is a letter, a digit or '-'
 * (nearly every real field name); false otherwise (the caller takes the table). */
static inline bool lower8(uint64_t w, uint64_t *out)
{
    const uint64_t high = 0x8080808080808080ull;
    if (w & high) return false;
    uint64_t l = w | 0x2020202020202020ull; /* letters to lower case; digits, '-' unchanged */
    uint64_t ok = bytes_in(l, 'a', 'z') | bytes_in(w, '0', '9') | bytes_in(w, '-', '-');
    *out = l;
    return ok == high;
}

bool rm_header_name_lower(uint8_t *dst, const char *src, size_t n)
{
    size_t i = 0;
    if (n >= 8) {
        uint64_t w, l;
        for (; i + 8 <= n; i += 8) {
            memcpy(&w, src + i, 8);
            if (!lower8(w, &l)) goto table;
            memcpy(dst + i, &l, 8);
        }
        if (i == n) return true;
        memcpy(&w, src + n - 8, 8); /* the tail, overlapping bytes already done */
        if (lower8(w, &l)) {
            memcpy(dst + n - 8, &l, 8);
            return true;
        }
    }
table:;
    uint8_t bad = 0;
    for (; i < n; i++) {
        uint8_t ch = tchar_lower[(uint8_t)src[i]];
        bad |= (uint8_t)(ch == 0);
        dst[i] = ch;
    }
    return !bad;
}

bool rm_header_is_hop_by_hop(const char *name, size_t nlen)
{
    switch (rm_hkey_of(name, nlen)) {
    case RM_HK_CONNECTION:
    case RM_HK_KEEP_ALIVE:
    case RM_HK_PROXY_CONNECTION:
    case RM_HK_TRANSFER_ENCODING:
    case RM_HK_UPGRADE:
    case RM_HK_TE:
        return true;
    default:
        return false;
    }
}

size_t rm_fmt_u64_slow(char *buf, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        buf[i] = tmp[n - 1 - i];
    return n;
}
