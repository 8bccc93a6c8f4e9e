/* nghttp2's allocator: per-thread free lists by size class, so the library's per-request
 * allocations (stream objects, outbound frames, copied header arrays, HPACK entries) stop
 * paying for malloc/free once a worker is warm.
 *
 * Blocks carry a 16-byte header (class, and the size of large blocks), which keeps nghttp2's
 * 16-byte alignment.  Classes are powers of two from 32 to 4096 bytes; larger blocks go to
 * malloc.  Each thread keeps at most CLASS_CACHE_BYTES per class; a pthread key destructor
 * frees a thread's cache when it exits (nothing to call from the worker).
 *
 * Session regions (rm_h2_mem_region_begin/_end, around nghttp2_session_*_new): what nghttp2
 * allocates for a session (nghttp2 1.52: the session 2,928 bytes, two HPACK ring buffers of
 * 1 KiB, the stream map's 4 KiB table, the 16 KiB outbound frame buffer) comes from one fresh
 * mapping of its own instead, laid out so that an idle session touches one page of it: the
 * blocks written at once (the session, small blocks) and then the frame buffer (written from
 * its start, a few dozen bytes per control frame) from the bottom up, the blocks that stay
 * untouched until streams and headers come (1 KiB up to the frame buffer's size: ring buffers,
 * stream map; calloc needs no memset, the mapping is zero) from the top down.  From the heap
 * these cost ~14 KiB of resident memory per idle connection, since a block of freed heap is
 * dirty (a TLS handshake frees ~40 KiB of buffers just before the session is made); from the
 * region 4 KiB.  A region block's header is left zero, which tells region blocks from pool
 * blocks (class 0 is never stored for those) without writing to the block's page; its region
 * is found by alignment.  When its last block is freed (the session is deleted) the region
 * goes to the thread's cache of REGION_CACHE regions for its next sessions (unmapped when the
 * cache is full, by rm_h2_mem_trim, or at thread exit): a fresh region costs its session ~4
 * page faults once it carries requests, and an munmap, ~8 us per connection, which a cached
 * one does not (it keeps the pages its last session wrote; calloc then zeroes, and each
 * block's header slot is cleared).  A region block is freed on the thread that made the
 * session, as every block of a session is. */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "proxy/http/h2_internal.h"

#define HDR 16
#define MIN_SHIFT 5 /* 32 bytes */
#define NCLASS 8    /* 32 … 4096 */
#define LARGE 0xff
#define REGION 0 /* the header of a region block: never written */
#define CLASS_CACHE_BYTES (256 * 1024)

#define REGION_BYTES RM_H2_MEM_REGION_BYTES /* also its alignment; nghttp2 1.52 takes 25.6 KiB */
#define REGION_TOP_MIN 1024                 /* from here up to REGION_TOP_MAX: from the top down */
#define REGION_TOP_MAX (16 * 1024)
#define RESERVE_REGIONS 32 /* address space taken from the kernel at a time */
#define REGION_CACHE 64    /* freed regions a thread keeps for its next sessions */

/* A pool block's header: cls is its class + 1, or LARGE. */
struct block_hdr {
    uint8_t cls;
    uint8_t pad[7];
    size_t size; /* requested size of a LARGE block */
};

/* The start of a region (REGION_BYTES aligned). */
struct region {
    unsigned refs; /* blocks not freed yet, + 1 while the region is open */
    uint32_t lo;   /* the free space, offsets from the region: [lo, hi) */
    uint32_t hi;
    bool first;  /* no block yet: the next one goes to the bottom whatever its size */
    bool reused; /* from the cache: its pages hold what its last session left */
};
_Static_assert(sizeof(struct block_hdr) == HDR, "header keeps 16-byte alignment");
_Static_assert(sizeof(struct region) <= HDR, "a region's first block starts at HDR");

struct free_block {
    struct free_block *next;
};

struct cache {
    struct free_block *head[NCLASS];
    uint32_t n[NCLASS];
    bool registered;
};

static __thread struct cache tc;
static __thread struct region *open_region; /* between region_begin and region_end */
static __thread uint8_t *reserve_next;      /* fresh aligned address space for regions */
static __thread uint8_t *reserve_end;
static __thread struct region *cached[REGION_CACHE]; /* freed regions, most recent last */
static __thread unsigned n_cached;
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

/* Unmap the cached regions beyond the <keep> most recent; the bytes of address space freed. */
static size_t regions_trim(unsigned keep)
{
    size_t freed = 0;
    while (n_cached > keep) {
        munmap(cached[--n_cached], REGION_BYTES);
        freed += REGION_BYTES;
    }
    return freed;
}

static void cache_free_all(void *unused)
{
    regions_trim(0);
    if (reserve_next != reserve_end) munmap(reserve_next, (size_t)(reserve_end - reserve_next));
    reserve_next = reserve_end = NULL;
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
    size_t freed = regions_trim(0);
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

/* REGION_BYTES of fresh, REGION_BYTES-aligned address space (untouched, so zero and not
 * resident), or NULL.  Taken from the thread's reserve, which is refilled RESERVE_REGIONS at a
 * time: one mmap (and the trimming of its misaligned ends) per 32 sessions. */
static uint8_t *region_map(void)
{
    if (reserve_next == reserve_end) {
        size_t len = (RESERVE_REGIONS + 1) * (size_t)REGION_BYTES;
        uint8_t *m = mmap(NULL, len, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) return NULL;
        uintptr_t a = ((uintptr_t)m + REGION_BYTES - 1) & ~(uintptr_t)(REGION_BYTES - 1);
        uint8_t *start = (uint8_t *)a, *end = start + RESERVE_REGIONS * (size_t)REGION_BYTES;
        if (start > m) munmap(m, (size_t)(start - m));
        if (m + len > end) munmap(end, (size_t)(m + len - end));
        reserve_next = start;
        reserve_end = end;
        if (!tc.registered) register_thread(); /* the rest of the reserve goes at thread exit */
    }
    uint8_t *r = reserve_next;
    reserve_next += REGION_BYTES;
    return r;
}

/* One reference less to region <r>; the last puts it in the cache, or unmaps it when the cache
 * is full (or, should the kernel refuse to split the mapping for want of map entries, at least
 * gives its pages back). */
static void region_unref(struct region *r)
{
    if (--r->refs) return;
    if (n_cached < REGION_CACHE) {
        if (!tc.registered) register_thread(); /* the cache goes at thread exit */
        cached[n_cached++] = r;
    } else if (munmap(r, REGION_BYTES) != 0) {
        madvise(r, REGION_BYTES, MADV_DONTNEED);
    }
}

void rm_h2_mem_region_begin(void)
{
    if (open_region) return;
    bool reused = n_cached > 0;
    struct region *r = reused ? cached[--n_cached] : (struct region *)(void *)region_map();
    if (!r) return; /* the session's blocks come from the pool */
    *r = (struct region){.refs = 1, .lo = HDR, .hi = REGION_BYTES, .first = true, .reused = reused};
    open_region = r;
}

void rm_h2_mem_region_end(void)
{
    struct region *r = open_region;
    if (!r) return;
    open_region = NULL;
    region_unref(r);
}

/* Zero the 16 bytes at <p> unless they are (a reused region's slot may hold its last
 * session's bytes; reading an untouched page makes it no more resident than it was). */
static void slot_clear(uint8_t *p)
{
    uint64_t w[2];
    memcpy(w, p, sizeof(w));
    if (w[0] | w[1]) memset(p, 0, HDR);
}

/* <n> bytes from the open region <r> (zero unless r->reused), after a header slot that is zero;
 * NULL when they do not fit.  Offsets stay multiples of 16. */
static void *region_alloc(struct region *r, size_t n)
{
    size_t need = HDR + ((n + 15) & ~(size_t)15);
    if (n > REGION_BYTES || need > r->hi - r->lo) return NULL;
    size_t off;
    if (!r->first && n >= REGION_TOP_MIN && n < REGION_TOP_MAX) {
        r->hi -= (uint32_t)need;
        off = r->hi;
    } else {
        off = r->lo;
        r->lo += (uint32_t)need;
    }
    r->first = false;
    r->refs++;
    if (r->reused) slot_clear((uint8_t *)r + off);
    return (uint8_t *)r + off + HDR;
}

static struct region *region_of(void *p)
{
    return (struct region *)((uintptr_t)p & ~(uintptr_t)(REGION_BYTES - 1));
}

/* A block of <n> bytes; *zero tells whether it is known to be zero (a region block). */
static void *block_alloc(size_t n, bool *zero)
{
    *zero = false;
    if (open_region) {
        void *p = region_alloc(open_region, n);
        if (p) {
            *zero = !open_region->reused;
            return p;
        }
    }
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
    b->cls = (uint8_t)(c == LARGE ? LARGE : c + 1);
    b->size = n;
    return (uint8_t *)b + HDR;
}

static void *pool_malloc(size_t n, void *ud)
{
    bool zero;
    return block_alloc(n, &zero);
}

static void pool_free(void *p, void *ud)
{
    if (!p) return;
    struct block_hdr *b = (struct block_hdr *)(void *)((uint8_t *)p - HDR);
    if (b->cls == REGION) {
        region_unref(region_of(p));
        return;
    }
    if (b->cls == LARGE) {
        free(b);
        return;
    }
    unsigned c = b->cls - 1u;
    if ((size_t)tc.n[c] * class_size(c) >= CLASS_CACHE_BYTES) {
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
    bool zero;
    void *p = block_alloc(nmemb * size, &zero);
    if (p && !zero) memset(p, 0, nmemb * size);
    return p;
}

/* The bytes a block may hold: its class's, a LARGE block's size, or (region blocks record no
 * size) up to the end of its region: copying more than the block held is harmless. */
static size_t block_room(void *p)
{
    struct block_hdr *b = (struct block_hdr *)(void *)((uint8_t *)p - HDR);
    if (b->cls == REGION) return (size_t)((uint8_t *)region_of(p) + REGION_BYTES - (uint8_t *)p);
    return b->cls == LARGE ? b->size : class_size(b->cls - 1u);
}

static void *pool_realloc(void *p, size_t n, void *ud)
{
    if (!p) return pool_malloc(n, ud);
    struct block_hdr *b = (struct block_hdr *)(void *)((uint8_t *)p - HDR);
    size_t have = block_room(p);
    if (b->cls != LARGE && b->cls != REGION && n <= have) return p;
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
