#include "proxy/core/arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CACHE_MAX 256

struct rm_arena_chunk {
    struct rm_arena_chunk *next;
    size_t size; /* usable bytes after the header */
    _Alignas(16) char data[];
};

static __thread struct rm_arena_chunk *cache;
static __thread unsigned cache_len;

static struct rm_arena_chunk *chunk_get(size_t need)
{
    if (need <= RM_ARENA_CHUNK && cache) {
        struct rm_arena_chunk *c = cache;
        cache = c->next;
        cache_len--;
        return c;
    }
    size_t size = need <= RM_ARENA_CHUNK ? RM_ARENA_CHUNK : need;
    struct rm_arena_chunk *c = malloc(sizeof(*c) + size);
    if (!c) abort();
    c->size = size;
    return c;
}

static void chunk_put(struct rm_arena_chunk *c)
{
    if (c->size != RM_ARENA_CHUNK || cache_len >= CACHE_MAX) {
        free(c);
        return;
    }
    c->next = cache;
    cache = c;
    cache_len++;
}

void *rm_arena_alloc_chunk(struct rm_arena *a, size_t n)
{
    struct rm_arena_chunk *c = chunk_get(n);
    if (n > RM_ARENA_CHUNK / 4 && a->chunks) {
        /* big one-off: keep the current chunk's free tail for small allocations */
        c->next = a->chunks->next;
        a->chunks->next = c;
        return c->data;
    }
    c->next = a->chunks;
    a->chunks = c;
    a->cur = c->data;
    a->end = c->data + c->size;
    void *p = a->cur;
    a->cur += n;
    return p;
}

char *rm_arena_strndup(struct rm_arena *a, const char *s, size_t n)
{
    char *p = rm_arena_alloc(a, n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

void rm_arena_dispose(struct rm_arena *a)
{
    struct rm_arena_chunk *c = a->chunks;
    while (c) {
        struct rm_arena_chunk *next = c->next;
        chunk_put(c);
        c = next;
    }
    rm_arena_init(a);
}

size_t rm_arena_trim(unsigned keep)
{
    size_t freed = 0;
    while (cache_len > keep) {
        struct rm_arena_chunk *c = cache;
        cache = c->next;
        cache_len--;
        freed += sizeof(*c) + c->size;
        free(c);
    }
    return freed;
}

void rm_arena_thread_cleanup(void)
{
    while (cache) {
        struct rm_arena_chunk *c = cache;
        cache = c->next;
        free(c);
    }
    cache_len = 0;
}
