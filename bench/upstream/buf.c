/* remora-upstream: byte buffers and small string helpers. */
#include "bench/upstream/common.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

int rmu_buf_reserve(struct rmu_buf *b, size_t extra)
{
    if (b->cap - b->off - b->len >= extra) return 0;
    if (b->off > 0) {
        memmove(b->data, b->data + b->off, b->len);
        b->off = 0;
        if (b->cap - b->len >= extra) return 0;
    }
    if (extra > SIZE_MAX / 2 - b->len) return -1;
    size_t need = b->len + extra, cap = b->cap ? b->cap : 4096;
    while (cap < need)
        cap *= 2;
    uint8_t *d = realloc(b->data, cap);
    if (!d) return -1;
    b->data = d;
    b->cap = cap;
    return 0;
}

int rmu_buf_append(struct rmu_buf *b, const void *p, size_t n)
{
    if (n == 0) return 0;
    if (rmu_buf_reserve(b, n) < 0) return -1;
    memcpy(rmu_buf_tail(b), p, n);
    b->len += n;
    return 0;
}

void rmu_buf_consume(struct rmu_buf *b, size_t n)
{
    b->off += n;
    b->len -= n;
    if (b->len == 0) b->off = 0;
}

void rmu_buf_dispose(struct rmu_buf *b)
{
    free(b->data);
    *b = (struct rmu_buf){0};
}

size_t rmu_fmt_u64(char *dst, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        dst[i] = tmp[n - 1 - i];
    return n;
}

int rmu_parse_u64(const char *p, size_t n, uint64_t max, uint64_t *out)
{
    while (n > 0 && (*p == ' ' || *p == '\t'))
        p++, n--;
    while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    if (n == 0 || n > 19) return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return -1;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    if (v > max) return -1;
    *out = v;
    return 0;
}

bool rmu_str_ieq(struct rmu_str s, const char *lit)
{
    size_t n = strlen(lit);
    return s.n == n && strncasecmp(s.p, lit, n) == 0;
}
