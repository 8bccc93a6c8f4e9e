/* nghttp2's allocator: per-thread free lists by size class, so the library's per-request
 * allocations (stream objects, outbound frames, copied header arrays, HPACK entries) stop
 * paying for malloc/free once a worker is warm.
 *
 * Blocks carry a 16-byte header (class, and the size of large blocks), which keeps nghttp2's
 * 16-byte alignment.  Classes are powers of two from 32 to 4096 bytes; larger blocks go to
 * malloc.  Each thread keeps at most CLASS_CACHE_BYTES per class; a pthread key destructor
 * frees a thread's cache when it exits (nothing to call from the worker). */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/http/h2_internal.h"

#define HDR 16
#define MIN_SHIFT 5 /* 32 bytes */
#define NCLASS 8    /* 32 … 4096 */
#define LARGE 0xff
#define CLASS_CACHE_BYTES (256 * 1024)

struct block_hdr {
    uint8_t cls;
    uint8_t pad[7];
    size_t size; /* requested size of a LARGE block */
};
_Static_assert(sizeof(struct block_hdr) == HDR, "header keeps 16-byte alignment");

struct free_block {
    struct free_block *next;
};

struct cache {
    struct free_block *head[NCLASS];
    uint32_t n[NCLASS];
    bool registered;
};

static __thread struct cache tc;
static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;

static size_t class_size(unsigned c)
{
    return (size_t)1 << (c + MIN_SHIFT);
}

static unsigned class_of(size_t n)
{
    if (n <= class_size(0)) return 0;
    unsigned c = (unsigned)(64 - __builtin_clzll((unsigned long long)(n - 1))) - MIN_SHIFT;
    return c < NCLASS ? c : LARGE;
}

static void cache_free_all(void *unused)
{
    for (unsigned c = 0; c < NCLASS; c++) {
        while (tc.head[c]) {
            struct free_block *b = tc.head[c];
            tc.head[c] = b->next;
            free(b);
        }
        tc.n[c] = 0;
    }
    tc.registered = false;
}

size_t rm_h2_mem_trim(size_t keep)
{
    size_t freed = 0;
    for (unsigned c = 0; c < NCLASS; c++) {
        while (tc.head[c] && (size_t)tc.n[c] * class_size(c) > keep) {
            struct free_block *b = tc.head[c];
            tc.head[c] = b->next;
            tc.n[c]--;
            freed += HDR + class_size(c);
            free(b);
        }
    }
    return freed;
}

static void make_key(void)
{
    pthread_key_create(&cache_key, cache_free_all);
}

/* Make sure this thread's cache is freed when it exits. */
static void register_thread(void)
{
    pthread_once(&cache_once, make_key);
    pthread_setspecific(cache_key, &tc);
    tc.registered = true;
}

static void *pool_malloc(size_t n, void *ud)
{
    unsigned c = class_of(n);
    struct block_hdr *b;
    if (c != LARGE && tc.head[c]) {
        b = (struct block_hdr *)(void *)tc.head[c];
        tc.head[c] = tc.head[c]->next;
        tc.n[c]--;
    } else {
        b = malloc(HDR + (c == LARGE ? n : class_size(c)));
        if (!b) return NULL;
    }
    b->cls = (uint8_t)c;
    b->size = n;
    return (uint8_t *)b + HDR;
}

static void pool_free(void *p, void *ud)
{
    if (!p) return;
    struct block_hdr *b = (struct block_hdr *)(void *)((uint8_t *)p - HDR);
    unsigned c = b->cls;
    if (c == LARGE || (size_t)tc.n[c] * class_size(c) >= CLASS_CACHE_BYTES) {
        free(b);
        return;
    }
    if (!tc.registered) register_thread();
    struct free_block *f = (struct free_block *)(void *)b;
    f->next = tc.head[c];
    tc.head[c] = f;
    tc.n[c]++;
}

static void *pool_calloc(size_t nmemb, size_t size, void *ud)
{
    if (size && nmemb > SIZE_MAX / size) return NULL;
    void *p = pool_malloc(nmemb * size, ud);
    if (p) memset(p, 0, nmemb * size);
    return p;
}

static void *pool_realloc(void *p, size_t n, void *ud)
{
    if (!p) return pool_malloc(n, ud);
    struct block_hdr *b = (struct block_hdr *)(void *)((uint8_t *)p - HDR);
    size_t have = b->cls == LARGE ? b->size : class_size(b->cls);
    if (b->cls != LARGE && n <= have) return p;
    void *q = pool_malloc(n, ud);
    if (!q) return NULL;
    memcpy(q, p, have < n ? have : n);
    pool_free(p, ud);
    return q;
}

nghttp2_mem rm_h2_mem = {
    .mem_user_data = NULL,
    .malloc = pool_malloc,
    .free = pool_free,
    .calloc = pool_calloc,
    .realloc = pool_realloc,
};

void rm_h2_mem_thread_cleanup(void)
{
    cache_free_all(NULL);
}
