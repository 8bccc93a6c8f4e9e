#include "proxy/core/buf.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Per-thread caches of blocks by size class (16 KiB << k): a busy HTTP/2 connection whose
 * output grows past one block reuses a large block instead of malloc/free per drain. */
#define N_CLASSES 5
static const unsigned class_max[N_CLASSES] = {64, 16, 8, 4, 2};

struct free_block {
    struct free_block *next;
};

static __thread struct free_block *cache[N_CLASSES];
static __thread unsigned cache_len[N_CLASSES];
static __thread size_t spill; /* bytes returned to malloc or cached since the last trim */
static __thread void (*trim_hook)(void *);
static __thread void *trim_ctx;
static __thread bool trim_asked; /* the hook ran and no trim followed yet */

/* A burst left memory behind: ask, once, for a trim. */
static void note_spill(size_t n)
{
    spill += n;
    if (spill >= RM_BUF_TRIM_SPILL && trim_hook && !trim_asked) {
        trim_asked = true;
        trim_hook(trim_ctx);
    }
}

static int class_of(size_t cap)
{
    for (int k = 0; k < N_CLASSES; k++) {
        if (cap == (size_t)RM_BUF_BLOCK << k) return k;
    }
    return -1;
}

static uint8_t *block_get(size_t cap)
{
    int k = class_of(cap);
    if (k >= 0 && cache[k]) {
        struct free_block *b = cache[k];
        cache[k] = b->next;
        cache_len[k]--;
        return (uint8_t *)b;
    }
    uint8_t *p = malloc(cap);
    if (!p) abort();
    return p;
}

static void block_put(uint8_t *p, size_t cap)
{
    int k = class_of(cap);
    if (k < 0 || cache_len[k] >= class_max[k]) {
        free(p);
        note_spill(cap);
        return;
    }
    struct free_block *b = (struct free_block *)(void *)p;
    b->next = cache[k];
    cache[k] = b;
    if (++cache_len[k] == class_max[k]) note_spill(RM_BUF_TRIM_SPILL); /* a full cache: a burst */
}

void rm_buf_set_trim_hook(void (*hook)(void *ctx), void *ctx)
{
    trim_hook = hook;
    trim_ctx = ctx;
    trim_asked = false;
}

size_t rm_buf_trim(unsigned keep)
{
    size_t freed = 0;
    for (int k = 0; k < N_CLASSES; k++) {
        while (cache_len[k] > keep) {
            struct free_block *b = cache[k];
            cache[k] = b->next;
            cache_len[k]--;
            free(b);
            freed += (size_t)RM_BUF_BLOCK << k;
        }
    }
    spill = 0;
    trim_asked = false;
    return freed;
}

void rm_buf_thread_cleanup(void)
{
    for (int k = 0; k < N_CLASSES; k++) {
        while (cache[k]) {
            struct free_block *b = cache[k];
            cache[k] = b->next;
            free(b);
        }
        cache_len[k] = 0;
    }
}

uint8_t *rm_buf_reserve(struct rm_buf *b, size_t n)
{
    if (!b->base) {
        size_t cap = RM_BUF_BLOCK;
        while (cap < n)
            cap *= 2;
        b->base = block_get(cap);
        b->cap = cap;
        b->off = b->len = 0;
        return b->base;
    }
    if (rm_buf_room(b) >= n) return b->base + b->off + b->len;
    if (b->off && b->cap - b->len >= n) { /* compact */
        memmove(b->base, b->base + b->off, b->len);
        b->off = 0;
        return b->base + b->len;
    }
    size_t cap = b->cap * 2;
    while (cap - b->len < n)
        cap *= 2;
    uint8_t *p = block_get(cap);
    memcpy(p, b->base + b->off, b->len);
    block_put(b->base, b->cap);
    b->base = p;
    b->cap = cap;
    b->off = 0;
    return p + b->len;
}

void rm_buf_append(struct rm_buf *b, const void *p, size_t n)
{
    if (!n) return;
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
    if (b->base) block_put(b->base, b->cap);
    b->base = NULL;
    b->off = b->len = b->cap = 0;
}
