/* A growable, always NUL-terminated text buffer (JSON output, error text, config dumps, access
 * log lines).
 *
 * It mallocs when it grows, so the request path (access logs) keeps one per thread and reuses
 * it.  The appends check the room inline and call out only to grow.  Like rm_buf, running out
 * of memory aborts, so the append functions cannot fail. */
#ifndef RM_CONFIG_STRBUF_H
#define RM_CONFIG_STRBUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct rm_strbuf {
    char *p;    /* NULL until the first append; else NUL-terminated text of len bytes */
    size_t len; /* bytes of text, not counting the NUL */
    size_t cap; /* size of p */
};

#define RM_STRBUF_INIT                                                                             \
    {                                                                                              \
        0                                                                                          \
    }

/** Longest text rm_strbuf_put_u64 writes (UINT64_MAX: 20 digits). */
#define RM_STRBUF_U64_MAX 20

/** Caller's storage: start empty. */
static inline void rm_strbuf_init(struct rm_strbuf *sb)
{
    *sb = (struct rm_strbuf)RM_STRBUF_INIT;
}
/** Free the text and leave the buffer empty (reusable). */
void rm_strbuf_dispose(struct rm_strbuf *sb);
/** The text: "" while empty, never NULL; valid until the next append or dispose. */
static inline const char *rm_strbuf_str(const struct rm_strbuf *sb)
{
    return sb->p ? sb->p : "";
}
/** Take the text (malloc'd, caller frees; never NULL) and leave the buffer empty. */
char *rm_strbuf_steal(struct rm_strbuf *sb);

/** rm_strbuf_reserve's growth (the out-of-line part). */
char *rm_strbuf_grow(struct rm_strbuf *sb, size_t n);
/** Room for <n> more bytes and the NUL: returns where they go (sb->p + sb->len), valid until the
 *  next append.  Write at most <n> bytes there, then count them with rm_strbuf_added. */
static inline char *rm_strbuf_reserve(struct rm_strbuf *sb, size_t n)
{
    if (sb->cap - sb->len > n) return sb->p + sb->len; /* cap 0 (p NULL): never */
    return rm_strbuf_grow(sb, n);
}
/** Count <n> bytes written at rm_strbuf_reserve's pointer (no more than it reserved) and
 *  NUL-terminate the text. */
static inline void rm_strbuf_added(struct rm_strbuf *sb, size_t n)
{
    sb->len += n;
    sb->p[sb->len] = '\0';
}

static inline void rm_strbuf_append(struct rm_strbuf *sb, const void *data, size_t n)
{
    char *d = rm_strbuf_reserve(sb, n);
    if (n) memcpy(d, data, n);
    rm_strbuf_added(sb, n);
}
static inline void rm_strbuf_puts(struct rm_strbuf *sb, const char *s)
{
    rm_strbuf_append(sb, s, strlen(s));
}
static inline void rm_strbuf_putc(struct rm_strbuf *sb, char c)
{
    *rm_strbuf_reserve(sb, 1) = c;
    rm_strbuf_added(sb, 1);
}
void rm_strbuf_printf(struct rm_strbuf *sb, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/** Write <v> in decimal at <dst> (RM_STRBUF_U64_MAX bytes of room; no NUL); returns the length.
 *  printf's "%" PRIu64 without printf: two digits per division. */
size_t rm_strbuf_fmt_u64(char *dst, uint64_t v);
/** Append <v> in decimal (as "%" PRIu64). */
static inline void rm_strbuf_put_u64(struct rm_strbuf *sb, uint64_t v)
{
    rm_strbuf_added(sb, rm_strbuf_fmt_u64(rm_strbuf_reserve(sb, RM_STRBUF_U64_MAX), v));
}
/** Shorten the text to <len> bytes (len <= sb->len). */
void rm_strbuf_truncate(struct rm_strbuf *sb, size_t len);

#endif
