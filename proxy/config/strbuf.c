#include "proxy/config/strbuf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Make room for <n> more bytes plus the NUL. */
static void strbuf_grow(struct rm_strbuf *sb, size_t n)
{
    size_t need = sb->len + n + 1;
    if (need <= sb->cap) return;
    size_t cap = sb->cap ? sb->cap : 64;
    while (cap < need)
        cap *= 2;
    char *p = realloc(sb->p, cap);
    if (!p) abort();
    sb->p = p;
    sb->cap = cap;
}

void rm_strbuf_dispose(struct rm_strbuf *sb)
{
    free(sb->p);
    rm_strbuf_init(sb);
}

char *rm_strbuf_steal(struct rm_strbuf *sb)
{
    strbuf_grow(sb, 0);
    char *p = sb->p;
    p[sb->len] = '\0';
    rm_strbuf_init(sb);
    return p;
}

void rm_strbuf_append(struct rm_strbuf *sb, const void *data, size_t n)
{
    strbuf_grow(sb, n);
    if (n) memcpy(sb->p + sb->len, data, n);
    sb->len += n;
    sb->p[sb->len] = '\0';
}

void rm_strbuf_puts(struct rm_strbuf *sb, const char *s)
{
    rm_strbuf_append(sb, s, strlen(s));
}

void rm_strbuf_putc(struct rm_strbuf *sb, char c)
{
    rm_strbuf_append(sb, &c, 1);
}

void rm_strbuf_printf(struct rm_strbuf *sb, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    strbuf_grow(sb, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(sb->p + sb->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb->len += (size_t)n;
}

void rm_strbuf_truncate(struct rm_strbuf *sb, size_t len)
{
    if (sb->p && len < sb->len) {
        sb->len = len;
        sb->p[len] = '\0';
    }
}
