/* Per-stream arena: bump allocation, everything freed at once when the stream ends.
 * Chunks come from a per-thread free list, so a steady request rate mallocs nothing. */
#ifndef RM_CORE_ARENA_H
#define RM_CORE_ARENA_H

#include <stddef.h>

#define RM_ARENA_CHUNK 4096

struct rm_arena_chunk;

struct rm_arena {
    struct rm_arena_chunk *chunks; /* newest first */
    char *cur, *end;
};

static inline void rm_arena_init(struct rm_arena *a)
{
    a->chunks = NULL;
    a->cur = a->end = NULL;
}
/** rm_arena_alloc's slow path: a new chunk (or a big one-off) for <n> (rounded) bytes. */
void *rm_arena_alloc_chunk(struct rm_arena *a, size_t n);
/** Allocate <n> bytes aligned to 16 (never NULL: aborts on out-of-memory). */
static inline void *rm_arena_alloc(struct rm_arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if ((size_t)(a->end - a->cur) < n) return rm_arena_alloc_chunk(a, n);
    void *p = a->cur;
    a->cur += n;
    return p;
}
/** Copy <n> bytes (plus a NUL) into the arena. */
char *rm_arena_strndup(struct rm_arena *a, const char *s, size_t n);
/** Free everything; the arena is empty and reusable afterwards. */
void rm_arena_dispose(struct rm_arena *a);
/** Free this thread's cached chunks (at thread exit). */
void rm_arena_thread_cleanup(void);
/** Free this thread's cached chunks beyond <keep> (after a burst); returns the bytes freed. */
size_t rm_arena_trim(unsigned keep);

#endif
