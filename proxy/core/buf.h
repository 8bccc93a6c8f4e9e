/* Byte buffers taken on demand and returned when empty.
 *
 * A struct rm_buf holds no memory while empty: the first write takes a block from a per-thread
 * free list (RM_BUF_BLOCK bytes) and the block goes back as soon as the buffer is drained, so an
 * idle connection owns no I/O memory.  Larger needs grow the block with realloc (rare: huge
 * header blocks); such blocks are freed rather than cached. */
#ifndef RM_CORE_BUF_H
#define RM_CORE_BUF_H

#include <stddef.h>
#include <stdint.h>

#define RM_BUF_BLOCK (16 * 1024)

struct rm_buf {
    uint8_t *base; /* NULL while empty and released */
    size_t off;    /* start of unread data */
    size_t len;    /* bytes of data from off */
    size_t cap;    /* size of base */
};

#define RM_BUF_INIT                                                                                \
    {                                                                                              \
        0                                                                                          \
    }

/** Pointer to the unread data. */
static inline uint8_t *rm_buf_data(const struct rm_buf *b)
{
    return b->base + b->off;
}

/** Make room for at least <n> more bytes at the tail; returns the tail pointer.
 *  The room actually available is rm_buf_room().  Aborts on out-of-memory. */
uint8_t *rm_buf_reserve(struct rm_buf *b, size_t n);
/** Bytes writable at the tail without another reserve. */
static inline size_t rm_buf_room(const struct rm_buf *b)
{
    return b->cap - b->off - b->len;
}
/** Mark <n> bytes written at the tail (after rm_buf_reserve). */
static inline void rm_buf_commit(struct rm_buf *b, size_t n)
{
    b->len += n;
}
/** Append <n> bytes. */
void rm_buf_append(struct rm_buf *b, const void *p, size_t n);
/** Drop <n> bytes from the head; releases the block when the buffer becomes empty. */
void rm_buf_consume(struct rm_buf *b, size_t n);
/** Drop everything and release the block. */
void rm_buf_reset(struct rm_buf *b);

/** Free this thread's cached blocks (at thread exit; ASan-clean shutdown). */
void rm_buf_thread_cleanup(void);

/* Returning memory after a burst.  Blocks beyond a thread's cache go back to malloc, which keeps
 * them resident; once RM_BUF_TRIM_SPILL bytes went back (or the cache filled up), the thread's
 * trim hook is called, once, so its owner can call rm_buf_trim() when the thread is quiet. */
#define RM_BUF_TRIM_SPILL (256u * 1024u)
/** Set this thread's trim hook (NULL: none).  The hook runs inside a buffer operation: it must
 *  only schedule the trim (e.g. start a timer). */
void rm_buf_set_trim_hook(void (*hook)(void *ctx), void *ctx);
/** Free this thread's cached blocks beyond <keep> per size class and re-enable the hook;
 *  returns the bytes freed.  The caller follows with malloc_trim(0) to hand them to the OS. */
size_t rm_buf_trim(unsigned keep);

#endif
