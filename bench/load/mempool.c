/* remora-load: per-thread size-class allocator for nghttp2; see mempool.h. */
#include "bench/load/mempool.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define HDR 16 /* keeps 16-byte alignment; holds the class index */
#define LARGE 0xff

static unsigned class_of(size_t n)
{
    if (n <= 16) return 0;
    unsigned c = (unsigned)(64 - __builtin_clzll((unsigned long long)(n - 1))) - 4;
    return c < RML_POOL_CLASSES ? c : LARGE;
}

static void *pool_malloc(size_t n, void *ud)
{
    struct rml_mempool *p = ud;
    unsigned c = class_of(n);
    uint8_t *b;
    if (c != LARGE && p->free[c]) {
        b = p->free[c];
        memcpy(&p->free[c], b + HDR, sizeof(void *));
        return b + HDR;
    }
    b = malloc(HDR + (c == LARGE ? n : (size_t)16 << c));
    if (!b) return NULL;
    b[0] = (uint8_t)c;
    return b + HDR;
}

static void pool_free(void *ptr, void *ud)
{
    struct rml_mempool *p = ud;
    if (!ptr) return;
    uint8_t *b = (uint8_t *)ptr - HDR;
    unsigned c = b[0];
    if (c == LARGE) {
        free(b);
        return;
    }
    memcpy(b + HDR, &p->free[c], sizeof(void *));
    p->free[c] = b;
}

static void *pool_calloc(size_t nmemb, size_t size, void *ud)
{
    if (size && nmemb > SIZE_MAX / size) return NULL;
    void *r = pool_malloc(nmemb * size, ud);
    if (r) memset(r, 0, nmemb * size);
    return r;
}

static void *pool_realloc(void *ptr, size_t n, void *ud)
{
    if (!ptr) return pool_malloc(n, ud);
    uint8_t *b = (uint8_t *)ptr - HDR;
    unsigned c = b[0];
    if (c == LARGE) {
        if (class_of(n) == LARGE) {
            uint8_t *nb = realloc(b, HDR + n);
            return nb ? nb + HDR : NULL;
        }
    } else if (n <= (size_t)16 << c) {
        return ptr;
    }
    void *r = pool_malloc(n, ud);
    if (!r) return NULL;
    /* old usable size: the class size, or at least n for a large block shrinking */
    size_t old = c == LARGE ? n : (size_t)16 << c;
    memcpy(r, ptr, old < n ? old : n);
    pool_free(ptr, ud);
    return r;
}

void rml_mempool_init(struct rml_mempool *p)
{
    memset(p, 0, sizeof(*p));
    p->mem.mem_user_data = p;
    p->mem.malloc = pool_malloc;
    p->mem.free = pool_free;
    p->mem.calloc = pool_calloc;
    p->mem.realloc = pool_realloc;
}

void rml_mempool_dispose(struct rml_mempool *p)
{
    for (unsigned c = 0; c < RML_POOL_CLASSES; c++) {
        uint8_t *b = p->free[c];
        while (b) {
            uint8_t *next;
            memcpy(&next, b + HDR, sizeof(next));
            free(b);
            b = next;
        }
        p->free[c] = NULL;
    }
}
