#include "proxy/config/strbuf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *rm_strbuf_grow(struct rm_strbuf *sb, size_t n)
{
    size_t need = sb->len + n + 1;
    if (need > sb->cap) {
        size_t cap = sb->cap ? sb->cap : 64;
        while (cap < need)
            cap *= 2;
        char *p = realloc(sb->p, cap);
        if (!p) abort();
        sb->p = p;
        sb->cap = cap;
    }
    return sb->p + sb->len;
}

void rm_strbuf_dispose(struct rm_strbuf *sb)
{
    free(sb->p);
    rm_strbuf_init(sb);
}

char *rm_strbuf_steal(struct rm_strbuf *sb)
{
    rm_strbuf_grow(sb, 0);
    char *p = sb->p;
    p[sb->len] = '\0';
    rm_strbuf_init(sb);
    return p;
}

void rm_strbuf_printf(struct rm_strbuf *sb, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    rm_strbuf_grow(sb, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(sb->p + sb->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb->len += (size_t)n;
}

/* "00" "01" … "99" */
static const char digit_pairs[201] = "00010203040506070809101112131415161718192021222324"
                                     "25262728293031323334353637383940414243444546474849"
                                     "50515253545556575859606162636465666768697071727374"
                                     "75767778798081828384858687888990919293949596979899";

/* Digits of <v> (one compare per digit, one division per four). */
static size_t dec_len(uint64_t v)
{
    for (size_t n = 1;; n += 4, v /= 10000) {
        if (v < 10) return n;
        if (v < 100) return n + 1;
        if (v < 1000) return n + 2;
        if (v < 10000) return n + 3;
    }
}

size_t rm_strbuf_fmt_u64(char *dst, uint64_t v)
{
    size_t n = dec_len(v);
    char *q = dst + n;
    while (v >= 100) {
        q -= 2;
        memcpy(q, digit_pairs + 2 * (v % 100), 2);
        v /= 100;
    }
    if (v >= 10)
        memcpy(q - 2, digit_pairs + 2 * v, 2);
    else
        q[-1] = (char)('0' + v);
    return n;
}

void rm_strbuf_truncate(struct rm_strbuf *sb, size_t len)
{
    if (sb->p && len < sb->len) {
        sb->len = len;
        sb->p[len] = '\0';
    }
}
