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

/* Well-known header names: those the codecs, the connection manager and the router look up or
 * treat specially.  Every entry of a block carries the key of its name (struct rm_header.key),
 * set when the entry is made (rm_headers_add*, the codecs' parsers), so that these headers are
 * found and classified by comparing one byte instead of strings.  RM_HK_UNKNOWN (0) marks an
 * entry written field by field and never classified (e.g. a struct literal): every lookup falls
 * back to comparing its name, so such an entry is found all the same, only more slowly. */
enum rm_hkey {
    RM_HK_UNKNOWN = 0, /* not classified: compare the name */
    RM_HK_OTHER,       /* classified: none of the names below */
    RM_HK_METHOD,      /* :method */
    RM_HK_SCHEME,      /* :scheme */
    RM_HK_AUTHORITY,   /* :authority */
    RM_HK_PATH,        /* :path */
    RM_HK_STATUS,      /* :status */
    RM_HK_HOST,
    RM_HK_CONTENT_LENGTH,
    RM_HK_CONTENT_TYPE,
    RM_HK_TRANSFER_ENCODING,
    RM_HK_CONNECTION,
    RM_HK_KEEP_ALIVE,
    RM_HK_PROXY_CONNECTION,
    RM_HK_UPGRADE,
    RM_HK_TE,
    RM_HK_EXPECT,
    RM_HK_SERVER,
    RM_HK_VIA,
    RM_HK_X_REQUEST_ID,
    RM_HK_X_FORWARDED_FOR,
    RM_HK_X_FORWARDED_PROTO,
    RM_HK_GRPC_TIMEOUT,
    RM_HK_USER_AGENT,                    /* access logs (Envoy's and Istio's formats) */
    RM_HK_X_ENVOY_ORIGINAL_PATH,         /* set by prefix rewrites; access logs */
    RM_HK_X_ENVOY_UPSTREAM_SERVICE_TIME, /* set by the router; access logs */
    RM_HK_COUNT
};
_Static_assert(RM_HK_COUNT <= 32, "RM_HK_BIT: one bit per key in a uint32_t");

struct rm_header {
    uint8_t *name;
    uint8_t *value;
    size_t name_len;
    size_t value_len;
    uint8_t flags; /* nghttp2 NV flags (NO_INDEX …) */
    uint8_t key;   /* enum rm_hkey of name (in nghttp2_nv's padding: nghttp2 ignores it) */
};

struct rm_headers {
    struct rm_header *v;
    uint32_t n, cap;
    struct rm_arena *arena; /* where names, values and v live */
    /* RM_HK_BIT(k) for every key k an entry may have (a superset: removals leave the bits set):
     * a lookup of a well-known name whose bit is clear ends at once.  Kept by the functions
     * below; 0 (a block built without them) means "unknown": lookups scan. */
    uint32_t have;
};

#define RM_HK_BIT(k) (1u << (k))

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

/** The name of well-known key <k> (RM_HK_METHOD .. RM_HK_COUNT - 1). */
extern const struct rm_str rm_hkey_names[RM_HK_COUNT];
/** The key of the lower-case name <name> (<len> bytes): RM_HK_OTHER when it is not one of the
 *  well-known names.  A switch on the length and at most two compares. */
enum rm_hkey rm_hkey_of(const void *name, size_t len);
/** The key of entry <e>, classifying its name when the entry was never classified. */
static inline enum rm_hkey rm_header_key(const struct rm_header *e)
{
    return e->key != RM_HK_UNKNOWN ? (enum rm_hkey)e->key : rm_hkey_of(e->name, e->name_len);
}

void rm_headers_init(struct rm_headers *h, struct rm_arena *arena);
/** Append a header, copying name and value into the arena. */
void rm_headers_add(struct rm_headers *h, const char *name, size_t nlen, const char *value,
                    size_t vlen);
/** Append a header whose name and value already live long enough (literals, arena data). */
void rm_headers_add_ref(struct rm_headers *h, const char *name, size_t nlen, const char *value,
                        size_t vlen);
/** Room for one more entry (h->n < h->cap afterwards): grows v in the arena. */
void rm_headers_grow(struct rm_headers *h);
/** rm_headers_add_ref for a caller that knows the key of <name> already: <key> must be
 *  rm_hkey_of(name, nlen), or provisional while a parser is still filling the name in (then
 *  rm_headers_set_key() must follow before the block is looked up). */
static inline void rm_headers_add_ref_key(struct rm_headers *h, enum rm_hkey key, const char *name,
                                          size_t nlen, const char *value, size_t vlen)
{
    if (h->n == h->cap) rm_headers_grow(h);
    h->v[h->n++] = (struct rm_header){.name = (uint8_t *)name,
                                      .value = (uint8_t *)value,
                                      .name_len = nlen,
                                      .value_len = vlen,
                                      .key = (uint8_t)key};
    h->have |= RM_HK_BIT(key);
}
/** Entry <i>'s name is final (a parser filled it in): classify it and record its key. */
void rm_headers_set_key(struct rm_headers *h, uint32_t i);
/** Make entry <i> the well-known header <k> (> RM_HK_OTHER) with <value> (not copied: it must
 *  live as long as the block), as a parser fills in slots it reserved. */
void rm_headers_put_known(struct rm_headers *h, uint32_t i, enum rm_hkey k, const char *value,
                          size_t vlen);
/** Index of the first header named <name>, or -1. */
int rm_headers_find(const struct rm_headers *h, const char *name, size_t nlen);
/** Can <h> hold an entry with key <k>?  False only when its key bits say it can't. */
static inline bool rm_headers_may_have(const struct rm_headers *h, enum rm_hkey k)
{
    return !h->have || (h->have & (RM_HK_BIT(k) | RM_HK_BIT(RM_HK_UNKNOWN)));
}
/** rm_headers_find_key's scan (the caller checked rm_headers_may_have). */
int rm_headers_scan_key(const struct rm_headers *h, enum rm_hkey k);
/** Index of the first header with well-known key <k> (> RM_HK_OTHER), or -1.  The first entry
 *  is looked at inline: :method and :status lead their blocks. */
static inline int rm_headers_find_key(const struct rm_headers *h, enum rm_hkey k)
{
    if (h->n && h->v[0].key == k) return 0;
    return rm_headers_may_have(h, k) ? rm_headers_scan_key(h, k) : -1;
}
/** Value of the first header named <name>; .p is NULL when absent. */
struct rm_str rm_headers_get(const struct rm_headers *h, const char *name, size_t nlen);
/** Value of the first header with well-known key <k> (> RM_HK_OTHER); .p is NULL when absent. */
static inline struct rm_str rm_headers_get_key(const struct rm_headers *h, enum rm_hkey k)
{
    int i = rm_headers_find_key(h, k);
    if (i < 0) return (struct rm_str){NULL, 0};
    return (struct rm_str){(const char *)h->v[i].value, h->v[i].value_len};
}
/** Replace the value of the first <name> (removing other occurrences), or append it. */
void rm_headers_set(struct rm_headers *h, const char *name, size_t nlen, const char *value,
                    size_t vlen);
/** rm_headers_set without copying: <name> and <value> must live as long as the block (literals,
 *  the block's arena, the config snapshot the stream holds). */
void rm_headers_set_ref(struct rm_headers *h, const char *name, size_t nlen, const char *value,
                        size_t vlen);
/** rm_headers_set_ref's work once the key <k> of <name> is known (rm_hkey_of(name, nlen)). */
void rm_headers_set_ref_k(struct rm_headers *h, enum rm_hkey k, const char *name, size_t nlen,
                          const char *value, size_t vlen);
/** rm_headers_set_ref for the well-known header <k> (> RM_HK_OTHER), named rm_hkey_names[k]:
 *  no classification of the name; appended inline when the block's key bits rule <k> out. */
static inline void rm_headers_set_ref_key(struct rm_headers *h, enum rm_hkey k, const char *value,
                                          size_t vlen)
{
    const struct rm_str name = rm_hkey_names[k];
    if (!rm_headers_may_have(h, k))
        rm_headers_add_ref_key(h, k, name.p, name.len, value, vlen);
    else
        rm_headers_set_ref_k(h, k, name.p, name.len, value, vlen);
}
/** Remove every header named <name>; returns how many were removed. */
unsigned rm_headers_remove(struct rm_headers *h, const char *name, size_t nlen);
/** Copy <src> into <dst> (dst's arena). */
void rm_headers_copy(struct rm_headers *dst, const struct rm_headers *src);

#define RM_HDR_GET(h, lit) rm_headers_get((h), (lit), sizeof(lit) - 1)

/** rm_fmt_u64's loop (any <v>). */
size_t rm_fmt_u64_slow(char *buf, uint64_t v);
/** Write <v> in decimal into <buf> (room for 20 digits; no NUL); returns the length.  For the
 *  hot path, where snprintf costs more than the rest of a header edit; one digit (a service
 *  time in ms, an attempt count) inline. */
static inline size_t rm_fmt_u64(char *buf, uint64_t v)
{
    if (v < 10) {
        buf[0] = (char)('0' + v);
        return 1;
    }
    return rm_fmt_u64_slow(buf, v);
}

/** Parse a decimal status or length; returns -1 if not all digits or too large. */
int64_t rm_parse_u63(const char *p, size_t n);

/** Copy the field name <src> (<n> bytes) lower-cased into <dst> (n bytes of room; may be
 *  <src>); false if a byte is not a tchar (RFC 9110 5.6.2: the name is invalid; <dst> then
 *  holds 0 in its place). */
bool rm_header_name_lower(uint8_t *dst, const char *src, size_t n);

/** Is this a hop-by-hop (connection-specific) header that must not be forwarded? */
bool rm_header_is_hop_by_hop(const char *name, size_t nlen);

#endif
