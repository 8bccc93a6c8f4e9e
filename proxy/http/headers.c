#include "proxy/http/headers.h"

#include <stdlib.h>

void rm_headers_init(struct rm_headers *h, struct rm_arena *arena)
{
    h->v = NULL;
    h->n = h->cap = 0;
    h->arena = arena;
}

static struct rm_header *grow(struct rm_headers *h)
{
    if (h->n == h->cap) {
        uint32_t cap = h->cap ? h->cap * 2 : 16;
        struct rm_header *v = rm_arena_alloc(h->arena, cap * sizeof(*v));
        if (h->n) memcpy(v, h->v, h->n * sizeof(*v));
        h->v = v;
        h->cap = cap;
    }
    return &h->v[h->n++];
}

void rm_headers_add_ref(struct rm_headers *h, const char *name, size_t nlen, const char *value,
                        size_t vlen)
{
    struct rm_header *e = grow(h);
    e->name = (uint8_t *)name;
    e->name_len = nlen;
    e->value = (uint8_t *)value;
    e->value_len = vlen;
    e->flags = 0;
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
    for (uint32_t i = 0; i < h->n; i++) {
        if (h->v[i].name_len == nlen && memcmp(h->v[i].name, name, nlen) == 0) return (int)i;
    }
    return -1;
}

struct rm_str rm_headers_get(const struct rm_headers *h, const char *name, size_t nlen)
{
    int i = rm_headers_find(h, name, nlen);
    if (i < 0) return (struct rm_str){NULL, 0};
    return (struct rm_str){(const char *)h->v[i].value, h->v[i].value_len};
}

unsigned rm_headers_remove(struct rm_headers *h, const char *name, size_t nlen)
{
    uint32_t j = 0;
    unsigned removed = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        if (h->v[i].name_len == nlen && memcmp(h->v[i].name, name, nlen) == 0) {
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
    int i = rm_headers_find(h, name, nlen);
    if (i < 0) {
        rm_headers_add_ref(h, name, nlen, value, vlen);
        return;
    }
    h->v[i].value = (uint8_t *)value;
    h->v[i].value_len = vlen;
    for (uint32_t k = (uint32_t)i + 1; k < h->n;) {
        if (h->v[k].name_len == nlen && memcmp(h->v[k].name, name, nlen) == 0) {
            memmove(&h->v[k], &h->v[k + 1], (h->n - k - 1) * sizeof(h->v[0]));
            h->n--;
        } else {
            k++;
        }
    }
}

void rm_headers_copy(struct rm_headers *dst, const struct rm_headers *src)
{
    for (uint32_t i = 0; i < src->n; i++)
        rm_headers_add(dst, (const char *)src->v[i].name, src->v[i].name_len,
                       (const char *)src->v[i].value, src->v[i].value_len);
}

int64_t rm_parse_u63(const char *p, size_t n)
{
    if (n == 0 || n > 18) return -1;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return -1;
        v = v * 10 + (p[i] - '0');
    }
    return v;
}

bool rm_header_is_hop_by_hop(const char *name, size_t nlen)
{
    static const struct {
        const char *s;
        size_t n;
    } hop[] = {
        {"connection", 10},        {"keep-alive", 10}, {"proxy-connection", 16},
        {"transfer-encoding", 17}, {"upgrade", 7},     {"te", 2},
    };
    for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++) {
        if (nlen == hop[i].n && memcmp(name, hop[i].s, nlen) == 0) return true;
    }
    return false;
}

size_t rm_fmt_u64(char *buf, uint64_t v)
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
