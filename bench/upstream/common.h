/* remora-upstream: small shared types (strings, byte buffers, configuration).
 *
 * remora-upstream is a standalone test server: it links no proxy code.  Every symbol it exports
 * between its own files starts with rmu_. */
#ifndef RMU_COMMON_H
#define RMU_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define RMU_CONTAINER_OF(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))
#define RMU_MIN(a, b) ((a) < (b) ? (a) : (b))

enum {
    RMU_AGAIN = -2,                     /* transport: would block */
    RMU_READ_BUF = 64 * 1024,           /* one read() per call, loop-wide buffer */
    RMU_OUT_HIGH = 256 * 1024,          /* produce response bytes until this much is queued */
    RMU_MAX_HEADER_BYTES = 64 * 1024,   /* request line + headers; more gets 431 */
    RMU_ECHO_CAP = 64 * 1024 * 1024,    /* h1 echo: stop reading past this much unsent body */
    RMU_H1_MAX_PIPELINE = 64,           /* h1: stop reading past this many queued requests */
    RMU_H2_STREAM_WINDOW = 1024 * 1024, /* h2: our SETTINGS_INITIAL_WINDOW_SIZE */
    RMU_H2_CONN_WINDOW = 16 * 1024 * 1024,
};

/* A borrowed byte string (not NUL-terminated). */
struct rmu_str {
    const char *p;
    size_t n;
};

/* A growable byte buffer holding data[off, off+len); capacity is kept when emptied. */
struct rmu_buf {
    uint8_t *data;
    size_t off, len, cap;
};

/* Make room for `extra` more bytes after the content (may move the content).  0, or -1 when
 * out of memory (the buffer is unchanged). */
int rmu_buf_reserve(struct rmu_buf *b, size_t extra);
/* Append n bytes; 0 or -1 (out of memory). */
int rmu_buf_append(struct rmu_buf *b, const void *p, size_t n);
/* Drop n (<= len) bytes from the front. */
void rmu_buf_consume(struct rmu_buf *b, size_t n);
/* Free the storage; the buffer is empty and reusable afterwards. */
void rmu_buf_dispose(struct rmu_buf *b);
static inline uint8_t *rmu_buf_head(const struct rmu_buf *b)
{
    return b->data + b->off;
}
static inline uint8_t *rmu_buf_tail(const struct rmu_buf *b)
{
    return b->data + b->off + b->len;
}

/* Decimal digits of v at dst (no NUL); returns the length (<= 20). */
size_t rmu_fmt_u64(char *dst, uint64_t v);
/* Parse a whole string as an unsigned decimal <= max; 0 or -1. */
int rmu_parse_u64(const char *p, size_t n, uint64_t max, uint64_t *out);
/* Case-insensitive comparison of a borrowed string with a NUL-terminated literal. */
bool rmu_str_ieq(struct rmu_str s, const char *lit);

/* One --listen address. */
struct rmu_listen_addr {
    struct sockaddr_storage ss;
    socklen_t len;
    char text[128];
};

/* Process-wide settings, written by main before the loops start, read-only afterwards. */
struct rmu_config {
    const char *name;
    size_t name_len;
    uint64_t body_size;
    uint32_t h2_max_streams;
    int threads;
    bool quiet;
    const char *tls_cert, *tls_key;
    struct rmu_listen_addr *listen;
    size_t nlisten;
};
extern struct rmu_config rmu_cfg;

#endif
