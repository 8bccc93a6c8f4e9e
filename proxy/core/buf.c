#include "proxy/core/buf.h"

#include <stdlib.h>
#include <string.h>

#define RM_BUF_CACHE_MAX 64

struct free_block {
    struct free_block *next;
};

static __thread struct free_block *cache;
static __thread unsigned cache_len;

static uint8_t *block_get(void)
{
    struct free_block *b = cache;
    if (b) {
        cache = b->next;
        cache_len--;
        return (uint8_t *)b;
    }
    uint8_t *p = malloc(RM_BUF_BLOCK);
    if (!p)
        abort();
    return p;
}

static void block_put(uint8_t *p, size_t cap)
{
    if (cap != RM_BUF_BLOCK || cache_len >= RM_BUF_CACHE_MAX) {
        free(p);
        return;
    }
    struct free_block *b = (struct free_block *)(void *)p;
    b->next = cache;
    cache = b;
    cache_len++;
}

void rm_buf_thread_cleanup(void)
{
    while (cache) {
        struct free_block *b = cache;
        cache = b->next;
        free(b);
    }
    cache_len = 0;
}

uint8_t *rm_buf_reserve(struct rm_buf *b, size_t n)
{
    if (!b->base) {
        size_t cap = n <= RM_BUF_BLOCK ? RM_BUF_BLOCK : n;
        b->base = cap == RM_BUF_BLOCK ? block_get() : malloc(cap);
        if (!b->base)
            abort();
        b->cap = cap;
        b->off = b->len = 0;
        return b->base;
    }
    if (rm_buf_room(b) >= n)
        return b->base + b->off + b->len;
    if (b->off && b->cap - b->len >= n) { /* compact */
        memmove(b->base, b->base + b->off, b->len);
        b->off = 0;
        return b->base + b->len;
    }
    size_t cap = b->cap * 2;
    while (cap - b->len < n)
        cap *= 2;
    uint8_t *p = malloc(cap);
    if (!p)
        abort();
    memcpy(p, b->base + b->off, b->len);
    block_put(b->base, b->cap);
    b->base = p;
    b->cap = cap;
    b->off = 0;
    return p + b->len;
}

void rm_buf_append(struct rm_buf *b, const void *p, size_t n)
{
    if (!n)
        return;
    memcpy(rm_buf_reserve(b, n), p, n);
    b->len += n;
}

void rm_buf_consume(struct rm_buf *b, size_t n)
{
    if (n >= b->len) {
        rm_buf_reset(b);
        return;
    }
    b->off += n;
    b->len -= n;
}

void rm_buf_reset(struct rm_buf *b)
{
    if (b->base)
        block_put(b->base, b->cap);
    b->base = NULL;
    b->off = b->len = b->cap = 0;
}
