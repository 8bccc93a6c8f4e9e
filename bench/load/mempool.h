/* remora-load: a per-thread size-class allocator for nghttp2 (nghttp2_mem).
 *
 * nghttp2 allocates a handful of small blocks per stream (stream, outbound item, header
 * buffers); with hundreds of streams in flight glibc's per-thread cache overflows and every
 * request pays for _int_malloc/_int_free.  This pool keeps freed blocks on per-class free
 * lists (16 B .. 16 KiB, powers of two) and never returns them until rml_mempool_dispose, so
 * in steady state a request costs no malloc.  Larger blocks go to libc.
 *
 * Not thread-safe: one pool per worker thread, used only by sessions of that thread.  Every
 * block must be freed (by nghttp2) before rml_mempool_dispose.
 */
#ifndef REMORA_BENCH_LOAD_MEMPOOL_H
#define REMORA_BENCH_LOAD_MEMPOOL_H

#include <nghttp2/nghttp2.h>
#include <stddef.h>

#define RML_POOL_CLASSES 11 /* 16 << 0 .. 16 << 10 */

struct rml_mempool {
    void *free[RML_POOL_CLASSES];
    nghttp2_mem mem; /* hand &pool->mem to nghttp2_session_client_new3 */
};

/* Empty pool (caller's storage) with `mem` wired to it. */
void rml_mempool_init(struct rml_mempool *p);
/* Return every free block to libc. */
void rml_mempool_dispose(struct rml_mempool *p);

#endif
