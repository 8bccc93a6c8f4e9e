#include "proxy/core/bulk.h"

#include <stdlib.h>
#include <sys/mman.h>

struct rm_bulk_chunk {
    struct rm_bulk_chunk *next;
    size_t size; /* mapped bytes, header included */
    _Alignas(16) char data[];
};

static struct rm_bulk_chunk *chunk_map(size_t need)
{
    size_t size = sizeof(struct rm_bulk_chunk) + need;
    size = size < RM_BULK_CHUNK ? RM_BULK_CHUNK : (size + 4095) & ~(size_t)4095;
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) abort();
    struct rm_bulk_chunk *c = p;
    c->size = size;
    return c;
}

void *rm_bulk_alloc(struct rm_bulk *b, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if ((size_t)(b->end - b->cur) < n) {
        struct rm_bulk_chunk *c = chunk_map(n);
        c->next = b->chunks;
        b->chunks = c;
        b->cur = c->data;
        b->end = (char *)c + c->size;
    }
    void *p = b->cur;
    b->cur += n;
    return p;
}

void rm_bulk_dispose(struct rm_bulk *b)
{
    while (b->chunks) {
        struct rm_bulk_chunk *c = b->chunks;
        b->chunks = c->next;
        munmap(c, c->size);
    }
    b->cur = b->end = NULL;
}
