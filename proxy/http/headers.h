/* The codec-neutral header model.
 *
 * A header block is an array of name/value pairs in an arena.  Names are lower-case.  Request
 * pseudo-headers (:method, :scheme, :authority, :path) and the response's :status are ordinary
 * entries and come first, so an HTTP/1.1 request line and an HTTP/2 HEADERS frame look the
 * same to filters and the router.  struct rm_header has nghttp2_nv's layout (checked by a
 * static assertion in the HTTP/2 codec), so a block is submitted to nghttp2 without copying. */
#ifndef RM_HTTP_HEADERS_H
#define RM_HTTP_HEADERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "proxy/core/arena.h"

struct rm_header {
    uint8_t *name;
    uint8_t *value;
    size_t name_len;
    size_t value_len;
    uint8_t flags; /* nghttp2 NV flags (NO_INDEX …) */
};

struct rm_headers {
    struct rm_header *v;
    uint32_t n, cap;
    struct rm_arena *arena; /* where names, values and v live */
};

/** A borrowed string (not NUL-terminated in general). */
struct rm_str {
    const char *p;
    size_t len;
};

#define RM_STR(lit) ((struct rm_str){(lit), sizeof(lit) - 1})

static inline bool rm_str_eq(struct rm_str a, const char *b, size_t blen)
{
    return a.len == blen && memcmp(a.p, b, blen) == 0;
}

void rm_headers_init(struct rm_headers *h, struct rm_arena *arena);
/** Append a header, copying name and value into the arena. */
void rm_headers_add(struct rm_headers *h, const char *name, size_t nlen, const char *value,
                    size_t vlen);
/** Append a header whose name and value already live long enough (literals, arena data). */
void rm_headers_add_ref(struct rm_headers *h, const char *name, size_t nlen, const char *value,
                        size_t vlen);
/** Index of the first header named <name>, or -1. */
int rm_headers_find(const struct rm_headers *h, const char *name, size_t nlen);
/** Value of the first header named <name>; .p is NULL when absent. */
struct rm_str rm_headers_get(const struct rm_headers *h, const char *name, size_t nlen);
/** Replace the value of the first <name> (removing other occurrences), or append it. */
void rm_headers_set(struct rm_headers *h, const char *name, size_t nlen, const char *value,
                    size_t vlen);
/** rm_headers_set without copying: <name> and <value> must live as long as the block (literals,
 *  the block's arena, the config snapshot the stream holds). */
void rm_headers_set_ref(struct rm_headers *h, const char *name, size_t nlen, const char *value,
                        size_t vlen);
/** Remove every header named <name>; returns how many were removed. */
unsigned rm_headers_remove(struct rm_headers *h, const char *name, size_t nlen);
/** Copy <src> into <dst> (dst's arena). */
void rm_headers_copy(struct rm_headers *dst, const struct rm_headers *src);

#define RM_HDR_GET(h, lit) rm_headers_get((h), (lit), sizeof(lit) - 1)

/** Write <v> in decimal into <buf> (room for 20 digits; no NUL); returns the length.  For the
 *  hot path, where snprintf costs more than the rest of a header edit. */
size_t rm_fmt_u64(char *buf, uint64_t v);

/** Parse a decimal status or length; returns -1 if not all digits or too large. */
int64_t rm_parse_u63(const char *p, size_t n);

/** Is this a hop-by-hop (connection-specific) header that must not be forwarded? */
bool rm_header_is_hop_by_hop(const char *name, size_t nlen);

#endif
