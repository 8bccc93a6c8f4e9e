/* A growable, always NUL-terminated text buffer (JSON output, error text, config dumps).
 *
 * Not for the request path: it mallocs.  Like rm_buf, running out of memory aborts, so the
 * append functions cannot fail. */
#ifndef RM_CONFIG_STRBUF_H
#define RM_CONFIG_STRBUF_H

#include <stdarg.h>
#include <stddef.h>

struct rm_strbuf {
    char *p;    /* NULL until the first append; else NUL-terminated text of len bytes */
    size_t len; /* bytes of text, not counting the NUL */
    size_t cap; /* size of p */
};

#define RM_STRBUF_INIT                                                                             \
    {                                                                                              \
        0                                                                                          \
    }

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

void rm_strbuf_append(struct rm_strbuf *sb, const void *data, size_t n);
void rm_strbuf_puts(struct rm_strbuf *sb, const char *s);
void rm_strbuf_putc(struct rm_strbuf *sb, char c);
void rm_strbuf_printf(struct rm_strbuf *sb, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/** Shorten the text to <len> bytes (len <= sb->len). */
void rm_strbuf_truncate(struct rm_strbuf *sb, size_t len);

#endif
