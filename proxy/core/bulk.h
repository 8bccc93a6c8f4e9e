/* Bulk allocation for short-lived, large decodes (an xDS response of thousands of resources):
 * bump allocation in chunks mapped straight from the kernel and unmapped by rm_bulk_dispose,
 * so a temporary parse neither interleaves with long-lived heap objects nor leaves the heap
 * fragmented (RSS follows what the config keeps, not the size of the last response). */
#ifndef RM_CORE_BULK_H
#define RM_CORE_BULK_H

#include <stddef.h>

#define RM_BULK_CHUNK (1u << 20)

struct rm_bulk_chunk;

struct rm_bulk {
    struct rm_bulk_chunk *chunks; /* newest first */
    char *cur, *end;
};

#define RM_BULK_INIT                                                                               \
    {                                                                                              \
        NULL, NULL, NULL                                                                           \
    }

/** <n> bytes aligned to 16 (aborts when out of memory); larger than a chunk: a chunk of its
 *  own. */
void *rm_bulk_alloc(struct rm_bulk *b, size_t n);
/** Unmap everything; <b> is empty and reusable. */
void rm_bulk_dispose(struct rm_bulk *b);

#endif
