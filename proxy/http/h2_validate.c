/* HTTP/2 messaging checks (RFC 9113 8.1-8.3) on what the peer sends: remora's own version of
 * nghttp2's "HTTP messaging" (lib/nghttp2_http.c, nghttp2_helper.c), which is turned off
 * (nghttp2_option_set_no_http_messaging) because these checks are cheaper here: names are
 * classified once (rm_hkey_of, which the header block needs anyway) and bytes are checked
 * eight at a time.  A proxy that turns HTTP/2 into HTTP/1.1 relies on them against request
 * smuggling, so they follow nghttp2 1.52.0 (Debian 12) exactly, rejection for rejection:
 *
 * nghttp2 (with messaging on)                         here
 * --------------------------------------------------  -------------------------------------------
 * nghttp2_http_on_header:
 *   nghttp2_check_header_name: lower-case tchar,      name_chars_ok(): the same bytes (NAME_OK,
 *     optional leading ':' (":" alone invalid),         or words of [a-z0-9-])
 *     non-empty
 *   :method nghttp2_check_method (tchar, non-empty),  value_ok_for(): method_ok(), path_ok()
 *   :path nghttp2_check_path (0x21-0x7e, 0x80-0xff),    (words), authority_ok() (server side
 *   :authority/host nghttp2_check_authority (server)    only; the client checks host like any
 *   / value check (client), :scheme check_scheme,       value), scheme_ok(), value_ok(): no CTL
 *   others nghttp2_check_header_value_rfc9113 (no       but HT, no DEL (words), no SP/HT at
 *   CTL but HT, no DEL, no leading/trailing SP/HT)      either end (1.52's default: the option
 *                                                       no_rfc9113_... was never set)
 *   a bad pseudo-header, or a bad name with upper     RM_H2V_ERROR for every bad name or value:
 *     case: stream error; other bad regular fields:     nghttp2 1.52 ignores a bad regular field
 *     passed to on_invalid_header_callback, and a       only when that callback says so; remora
 *     stream error when it is not set                   never set it (measured: RST_STREAM
 *                                                       PROTOCOL_ERROR, tests/unit/http/
 *                                                       test_h2_validate.c)
 * http_request_on_header (server):                    request_field()
 *   pseudo in trailers or after a regular field       same (PSEUDO_DISALLOWED, trailer)
 *   :authority/:method/:path/:scheme/host: once and   check_once(): F_* bits, empty value
 *     not empty (check_pseudo_header)
 *   :method HEAD/CONNECT/OPTIONS recorded             F_HEAD/F_CONNECT/F_OPTIONS
 *   :path '/' or '*' recorded; :scheme http(s)        F_PATH_SLASH/F_PATH_STAR/F_SCHEME_HTTP
 *   :protocol: stream error unless the server         no key: an unknown pseudo-header (remora
 *     announced SETTINGS_ENABLE_CONNECT_PROTOCOL        never announces it) -> ERROR
 *   content-length: once, digits, <= INT64_MAX        content_length()
 *   connection, keep-alive, proxy-connection,         connection_specific()
 *     transfer-encoding, upgrade; te != "trailers"
 *     (case-insensitive) -> stream error
 *   priority: parsed only with NO_RFC7540_PRIORITIES  (remora never sets it: nothing to do)
 *   other pseudo-header -> stream error               ERROR
 * http_response_on_header (client):                   response_field()
 *   :status once, 3 digits, not 101                   same
 *   content-length: 204: "0" only, removed; 1xx:      same (REMOVE = not delivered)
 *     error; 2xx to CONNECT: removed; once, digits
 *   connection-specific, te, other pseudo             as for requests
 * nghttp2_http_on_request_headers (end of block):     rm_h2v_block(), request
 *   CONNECT (no :protocol): :authority, no :scheme/   same
 *     :path, length ignored; others: :method,
 *     :scheme, :path, :authority or host; :path
 *     '/' (or '*' for OPTIONS) when http(s)
 * nghttp2_http_on_response_headers:                   rm_h2v_block(), response
 *   :status required; 1xx: expect a final response    F_EXPECT_FINAL, flags/length reset
 *   (flags and length reset); HEAD/1xx/204/304: no     length 0; CONNECT: length ignored
 *   body (length 0); CONNECT: length ignored
 * nghttp2_http_on_trailer_headers: END_STREAM needed  rm_h2v_block(), trailers
 * nghttp2_http_on_remote_end_stream (HEADERS or DATA  rm_h2v_end(): no final response yet, or
 *   with END_STREAM)                                    received != content-length -> error
 * nghttp2_http_on_data_chunk: DATA while a final      rm_h2v_data()
 *   response is expected, or more than content-length
 * nghttp2_http_record_request_method (client, at      rm_h2v_request_sent()
 *   submit): the first :method, HEAD or CONNECT
 *
 * What a failure does is also nghttp2's (the callers in h2_session.c): a bad field resets the
 * stream with RST_STREAM(PROTOCOL_ERROR) and the rest of the block is never delivered; a bad
 * block or DATA (or END_STREAM) does the same before the user gets it; the connection stays.
 * One difference, on purpose: nghttp2 checked the body length at END_STREAM only after
 * remora had delivered the last DATA chunk with end_stream, so a body shorter than its
 * content-length reached the user as complete just before the reset; now it does not. */
#include <stdint.h>
#include <string.h>

#include "proxy/http/h2_internal.h"

enum {
    F_AUTHORITY = 1u << 0,
    F_METHOD = 1u << 1,
    F_PATH = 1u << 2,
    F_SCHEME = 1u << 3,
    F_HOST = 1u << 4,
    F_STATUS = 1u << 5,
    F_PSEUDO_DISALLOWED = 1u << 6, /* a regular field came: no more pseudo-headers */
    F_HEAD = 1u << 7,              /* request method HEAD */
    F_CONNECT = 1u << 8,           /* request method CONNECT */
    F_OPTIONS = 1u << 9,
    F_PATH_SLASH = 1u << 10,  /* :path starts with '/' */
    F_PATH_STAR = 1u << 11,   /* :path is "*" */
    F_SCHEME_HTTP = 1u << 12, /* :scheme http or https */
    F_EXPECT_FINAL = 1u << 13 /* client: a 1xx came, the final response has not */
};
#define F_METHODS (F_HEAD | F_CONNECT | F_OPTIONS)
#define F_REQUIRED (F_METHOD | F_PATH | F_SCHEME)

void rm_h2v_init(struct rm_h2_stream *hs)
{
    hs->v.flags = 0;
    hs->v.status = -1;
    hs->v.content_length = -1;
    hs->v.received = 0;
}

/* ---- bytes -------------------------------------------------------------------------------- */

/* The checks look at eight bytes at a time: whole words, then one last word overlapping the
 * previous one (or, for fewer than eight bytes, a word made of overlapping 4-byte loads or
 * repeated bytes), so every byte is looked at, some twice, and nothing outside the string.
 * A word that is not plainly fine goes to a per-byte table when the word test is only a fast
 * path (names, values with HT, the rarer characters of :authority and :method). */

#define ONES 0x0101010101010101ull
#define HIGH 0x8080808080808080ull

/* Bit 7 of every byte of <x> (all bytes < 0x80) that lies in [lo, hi]. */
static inline uint64_t bytes_in(uint64_t x, uint8_t lo, uint8_t hi)
{
    uint64_t ge_lo = x + (uint64_t)(0x80 - lo) * ONES; /* no carry between bytes: x < 0x80 */
    uint64_t gt_hi = x + (uint64_t)(0x7f - hi) * ONES;
    return ge_lo & ~gt_hi & HIGH;
}

/* Nonzero when some byte of <x> is below <n> (n <= 0x80; exact for "some", any bytes). */
static inline uint64_t any_below(uint64_t x, uint8_t n)
{
    return (x - n * ONES) & ~x & HIGH;
}

/* Nonzero when some byte of <x> is <b>. */
static inline uint64_t any_eq(uint64_t x, uint8_t b)
{
    return any_below(x ^ (b * ONES), 1);
}

static inline uint64_t load8(const uint8_t *p)
{
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

/* A word of bytes of p[0..n), 1 <= n < 8, holding every one of them. */
static inline uint64_t load_small(const uint8_t *p, size_t n)
{
    if (n >= 4) {
        uint32_t lo, hi;
        memcpy(&lo, p, 4);
        memcpy(&hi, p + n - 4, 4);
        return lo | (uint64_t)hi << 32;
    }
    uint64_t x = p[0] | (uint64_t)p[n >> 1] << 8 | (uint64_t)p[n - 1] << 16 | (uint64_t)p[0] << 24;
    return x | x << 32;
}

/* Does <bad> find nothing in the words covering p[0..n) (n >= 1)?  (Inlined with <bad>.) */
static inline bool words_ok(const uint8_t *p, size_t n, uint64_t (*bad)(uint64_t))
{
    if (n < 8) return !bad(load_small(p, n));
    for (size_t i = 0; i + 8 < n; i += 8) {
        if (bad(load8(p + i))) return false;
    }
    return !bad(load8(p + n - 8));
}

static bool table_ok(const uint8_t *table, const uint8_t *p, size_t n)
{
    uint8_t ok = 1;
    for (size_t i = 0; i < n; i++)
        ok &= table[p[i]];
    return ok;
}

/* nghttp2's VALID_HD_NAME_CHARS: tchar (RFC 9110 5.6.2) without upper case. */
static const uint8_t NAME_OK[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
    ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1,  ['~'] = 1,
#define R(a) [a] = 1, [a + 1] = 1, [a + 2] = 1, [a + 3] = 1, [a + 4] = 1
    R('0'),    R('5'),    R('a'),    R('f'),    R('k'),    R('p'),     R('u'),
#undef R
    ['z'] = 1};

/* Some byte is not one of [a-z0-9-] (nearly every real name is made of those). */
static inline uint64_t not_plain_name(uint64_t w)
{
    if (w & HIGH) return 1;
    return (bytes_in(w, 'a', 'z') | bytes_in(w, '0', '9') | bytes_in(w, '-', '-')) ^ HIGH;
}

/* nghttp2_check_header_name, without its leading-':' step (the caller's); n >= 1. */
static bool name_chars_ok(const uint8_t *p, size_t n)
{
    return words_ok(p, n, not_plain_name) || table_ok(NAME_OK, p, n);
}

/* nghttp2_check_header_value's bytes: no CTL but HT, no DEL (0x80-0xff are fine). */
static const uint8_t VALUE_OK[256] = {
#define R8(a)                                                                                      \
    [a] = 1, [a + 1] = 1, [a + 2] = 1, [a + 3] = 1, [a + 4] = 1, [a + 5] = 1, [a + 6] = 1,         \
    [a + 7] = 1
#define R32(a) R8(a), R8(a + 8), R8(a + 16), R8(a + 24)
    ['\t'] = 1, R32(0x20),  R32(0x40),  R8(0x60),   R8(0x68),   R8(0x70),   [0x78] = 1,
    [0x79] = 1, [0x7a] = 1, [0x7b] = 1, [0x7c] = 1, [0x7d] = 1, [0x7e] = 1, /* no DEL */
    R32(0x80),  R32(0xa0),  R32(0xc0),  R32(0xe0),
#undef R32
#undef R8
};

/* Some byte is a CTL (HT too: the table decides) or DEL. */
static inline uint64_t not_plain_value(uint64_t w)
{
    return any_below(w, 0x20) | any_eq(w, 0x7f);
}

/* nghttp2_check_header_value_rfc9113: value bytes, and no SP or HT at either end. */
static bool value_ok(const uint8_t *p, size_t n)
{
    if (n == 0) return true;
    if (p[0] == ' ' || p[0] == '\t' || p[n - 1] == ' ' || p[n - 1] == '\t') return false;
    return words_ok(p, n, not_plain_value) || table_ok(VALUE_OK, p, n);
}

/* Some byte is a CTL, SP or DEL. */
static inline uint64_t not_path(uint64_t w)
{
    return any_below(w, 0x21) | any_eq(w, 0x7f);
}

/* nghttp2_check_path: 0x21-0x7e and 0x80-0xff (empty is fine here: check_once refuses it). */
static bool path_ok(const uint8_t *p, size_t n)
{
    return n == 0 || words_ok(p, n, not_path);
}

static inline uint64_t not_upper(uint64_t w)
{
    if (w & HIGH) return 1;
    return bytes_in(w, 'A', 'Z') ^ HIGH;
}

/* nghttp2_check_method: tchar (upper case too), not empty. */
static bool method_ok(const uint8_t *p, size_t n)
{
    if (n == 0) return false;
    if (words_ok(p, n, not_upper)) return true;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (!NAME_OK[c] && !(c >= 'A' && c <= 'Z')) return false;
    }
    return true;
}

/* nghttp2's VALID_AUTHORITY_CHARS (RFC 3986 authority, with '%'). */
static const uint8_t AUTHORITY_OK[256] = {
    ['!'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['('] = 1, [')'] = 1,
    ['*'] = 1, ['+'] = 1, [','] = 1, ['-'] = 1, ['.'] = 1,  [':'] = 1, [';'] = 1,
    ['='] = 1, ['@'] = 1, ['['] = 1, [']'] = 1, ['_'] = 1,  ['~'] = 1,
#define R(a) [a] = 1, [a + 1] = 1, [a + 2] = 1, [a + 3] = 1, [a + 4] = 1
    R('0'),    R('5'),    R('A'),    R('F'),    R('K'),     R('P'),    R('U'),
    R('a'),    R('f'),    R('k'),    R('p'),    R('u'),
#undef R
    ['Z'] = 1, ['z'] = 1};

/* Some byte is not one of [a-z0-9.:-] (host names, addresses and ports). */
static inline uint64_t not_plain_authority(uint64_t w)
{
    if (w & HIGH) return 1;
    return (bytes_in(w, 'a', 'z') | bytes_in(w, '0', ':') | bytes_in(w, '-', '.')) ^ HIGH;
}

/* nghttp2_check_authority (empty is fine here: check_once refuses it). */
static bool authority_ok(const uint8_t *p, size_t n)
{
    return n == 0 || words_ok(p, n, not_plain_authority) || table_ok(AUTHORITY_OK, p, n);
}

static bool alpha(uint8_t c)
{
    return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
}

/* nghttp2's check_scheme: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ). */
static bool scheme_ok(const uint8_t *p, size_t n)
{
    if (n == 0 || !alpha(p[0])) return false;
    for (size_t i = 1; i < n; i++) {
        uint8_t c = p[i];
        if (!alpha(c) && !(c >= '0' && c <= '9') && c != '+' && c != '-' && c != '.') return false;
    }
    return true;
}

/* nghttp2's parse_uint: digits only, not empty, at most INT64_MAX; -1 otherwise. */
static int64_t parse_uint(const uint8_t *p, size_t n)
{
    if (n == 0) return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned)p[i] - '0';
        if (d > 9) return -1;
        if (i >= 18 && v > (uint64_t)(INT64_MAX - d) / 10) return -1; /* 18 digits fit */
        v = v * 10 + d;
    }
    return (int64_t)v;
}

static bool ieq(const uint8_t *p, size_t n, const char *lit, size_t litn)
{
    if (n != litn) return false;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i] >= 'A' && p[i] <= 'Z' ? (uint8_t)(p[i] | 0x20) : p[i];
        if (c != (uint8_t)lit[i]) return false;
    }
    return true;
}

#define IEQ(p, n, lit) ieq((p), (n), (lit), sizeof(lit) - 1)
#define EQ(p, n, lit) ((n) == sizeof(lit) - 1 && memcmp((p), (lit), (n)) == 0)

/* ---- fields ------------------------------------------------------------------------------- */

/* check_pseudo_header: the field is the first of its kind and not empty. */
static bool check_once(struct rm_h2_stream *hs, uint32_t flag, size_t vlen)
{
    if ((hs->v.flags & flag) || vlen == 0) return false;
    hs->v.flags |= flag;
    return true;
}

/* The content-length field (nghttp2's request case; responses add their rules first). */
static enum rm_h2v content_length(struct rm_h2_stream *hs, const uint8_t *v, size_t vlen)
{
    if (hs->v.content_length != -1) return RM_H2V_ERROR; /* twice */
    hs->v.content_length = parse_uint(v, vlen);
    return hs->v.content_length == -1 ? RM_H2V_ERROR : RM_H2V_OK;
}

/* RFC 9113 8.2.2: connection-specific fields are malformed; te only as "trailers".
 * Returns RM_H2V_OK for every other key. */
static enum rm_h2v connection_specific(enum rm_hkey k, const uint8_t *v, size_t vlen)
{
    switch (k) {
    case RM_HK_CONNECTION:
    case RM_HK_KEEP_ALIVE:
    case RM_HK_PROXY_CONNECTION:
    case RM_HK_TRANSFER_ENCODING:
    case RM_HK_UPGRADE:
        return RM_H2V_ERROR;
    case RM_HK_TE:
        return IEQ(v, vlen, "trailers") ? RM_H2V_OK : RM_H2V_ERROR;
    default:
        return RM_H2V_OK;
    }
}

static enum rm_h2v request_method(struct rm_h2_stream *hs, const uint8_t *v, size_t vlen)
{
    if (!check_once(hs, F_METHOD, vlen)) return RM_H2V_ERROR;
    if (EQ(v, vlen, "HEAD"))
        hs->v.flags |= F_HEAD;
    else if (EQ(v, vlen, "CONNECT"))
        hs->v.flags |= F_CONNECT; /* (nghttp2 also refuses it on even, pushed, streams) */
    else if (EQ(v, vlen, "OPTIONS"))
        hs->v.flags |= F_OPTIONS;
    return RM_H2V_OK;
}

/* http_request_on_header: a field of a request (or its trailers) on the server. */
static enum rm_h2v request_field(struct rm_h2_stream *hs, enum rm_hkey k, bool pseudo, bool trailer,
                                 const uint8_t *v, size_t vlen)
{
    if (pseudo && (trailer || (hs->v.flags & F_PSEUDO_DISALLOWED))) return RM_H2V_ERROR;
    switch (k) {
    case RM_HK_AUTHORITY:
        return check_once(hs, F_AUTHORITY, vlen) ? RM_H2V_OK : RM_H2V_ERROR;
    case RM_HK_METHOD:
        return request_method(hs, v, vlen);
    case RM_HK_PATH:
        if (!check_once(hs, F_PATH, vlen)) return RM_H2V_ERROR;
        if (v[0] == '/')
            hs->v.flags |= F_PATH_SLASH;
        else if (vlen == 1 && v[0] == '*')
            hs->v.flags |= F_PATH_STAR;
        return RM_H2V_OK;
    case RM_HK_SCHEME:
        if (!check_once(hs, F_SCHEME, vlen)) return RM_H2V_ERROR;
        if (EQ(v, vlen, "http") || EQ(v, vlen, "https") || IEQ(v, vlen, "http") ||
            IEQ(v, vlen, "https"))
            hs->v.flags |= F_SCHEME_HTTP;
        return RM_H2V_OK;
    case RM_HK_STATUS:
        return RM_H2V_ERROR; /* a response pseudo-header */
    case RM_HK_HOST:
        if (!check_once(hs, F_HOST, vlen)) return RM_H2V_ERROR;
        break;
    case RM_HK_CONTENT_LENGTH:
        if (content_length(hs, v, vlen) != RM_H2V_OK) return RM_H2V_ERROR;
        break;
    default:
        if (pseudo) return RM_H2V_ERROR; /* unknown, :protocol included */
        if (connection_specific(k, v, vlen) != RM_H2V_OK) return RM_H2V_ERROR;
        break;
    }
    hs->v.flags |= F_PSEUDO_DISALLOWED; /* every pseudo-header returned above */
    return RM_H2V_OK;
}

/* http_response_on_header's content-length rules. */
static enum rm_h2v response_length(struct rm_h2_stream *hs, const uint8_t *v, size_t vlen)
{
    int status = hs->v.status;
    if (status == 204) { /* forbidden, but "0" is common: removed (nghttp2's workaround) */
        if (hs->v.content_length != -1 || !EQ(v, vlen, "0")) return RM_H2V_ERROR;
        hs->v.content_length = 0;
        return RM_H2V_REMOVE;
    }
    if (status / 100 == 1) return RM_H2V_ERROR;
    if (status / 100 == 2 && (hs->v.flags & F_CONNECT)) return RM_H2V_REMOVE;
    return content_length(hs, v, vlen);
}

/* http_response_on_header: a field of a response (or its trailers) on the client. */
static enum rm_h2v response_field(struct rm_h2_stream *hs, enum rm_hkey k, bool pseudo,
                                  bool trailer, const uint8_t *v, size_t vlen)
{
    enum rm_h2v r;
    if (pseudo && (trailer || (hs->v.flags & F_PSEUDO_DISALLOWED))) return RM_H2V_ERROR;
    switch (k) {
    case RM_HK_STATUS:
        if (!check_once(hs, F_STATUS, vlen) || vlen != 3) return RM_H2V_ERROR;
        hs->v.status = (int16_t)parse_uint(v, vlen);
        return hs->v.status == -1 || hs->v.status == 101 ? RM_H2V_ERROR : RM_H2V_OK;
    case RM_HK_CONTENT_LENGTH:
        r = response_length(hs, v, vlen);
        if (r != RM_H2V_OK) return r; /* (a removed field leaves the flags alone) */
        break;
    default:
        if (pseudo) return RM_H2V_ERROR;
        if (connection_specific(k, v, vlen) != RM_H2V_OK) return RM_H2V_ERROR;
        break;
    }
    hs->v.flags |= F_PSEUDO_DISALLOWED;
    return RM_H2V_OK;
}

/* The value check nghttp2_http_on_header picks by name.  It comes before the field's own
 * rules, and a failure of either is the same stream error, so it is skipped where those rules
 * accept only values it accepts: :status and content-length (digits; but a 2xx to CONNECT
 * removes content-length whatever its digits, after this check), te ("trailers"), and the
 * connection-specific fields (always refused). */
static bool value_ok_for(const struct rm_h2_stream *hs, enum rm_hkey k, bool server,
                         const uint8_t *v, size_t vlen)
{
    switch (k) {
    case RM_HK_METHOD:
        return method_ok(v, vlen);
    case RM_HK_PATH:
        return path_ok(v, vlen);
    case RM_HK_AUTHORITY:
    case RM_HK_HOST:
        return server ? authority_ok(v, vlen) : value_ok(v, vlen);
    case RM_HK_SCHEME:
        return EQ(v, vlen, "http") || EQ(v, vlen, "https") || scheme_ok(v, vlen);
    case RM_HK_CONTENT_LENGTH:
        if (!server && (hs->v.flags & F_CONNECT)) return value_ok(v, vlen);
        return true;
    case RM_HK_STATUS:
    case RM_HK_TE:
    case RM_HK_CONNECTION:
    case RM_HK_KEEP_ALIVE:
    case RM_HK_PROXY_CONNECTION:
    case RM_HK_TRANSFER_ENCODING:
    case RM_HK_UPGRADE:
        return true;
    default:
        return value_ok(v, vlen);
    }
}

enum rm_h2v rm_h2v_field(struct rm_h2_stream *hs, bool server, bool trailer, enum rm_hkey *key,
                         const uint8_t *name, size_t nlen, const uint8_t *value, size_t vlen)
{
    bool pseudo = nlen > 0 && name[0] == ':';
    enum rm_hkey k = rm_hkey_of(name, nlen);
    /* a well-known name is a valid one (rm_hkey_of matches exact lower-case names only: the
     * upper_case_content_length row of test_h2_validate.c would catch a change there); only
     * the others need their bytes checked */
    if (k == RM_HK_OTHER &&
        (nlen == 0 || (pseudo && nlen == 1) || !name_chars_ok(name + pseudo, nlen - pseudo)))
        return RM_H2V_ERROR;
    *key = k;
    if (!value_ok_for(hs, k, server, value, vlen)) return RM_H2V_ERROR;
    if (server) return request_field(hs, k, pseudo, trailer, value, vlen);
    return response_field(hs, k, pseudo, trailer, value, vlen);
}

bool rm_h2v_trailer(const struct rm_h2_stream *hs, bool server, int cat)
{
    if (cat != NGHTTP2_HCAT_HEADERS) return false;
    return server || !(hs->v.flags & F_EXPECT_FINAL);
}

/* ---- blocks, DATA, the end ---------------------------------------------------------------- */

/* nghttp2_http_on_request_headers (no :protocol: remora never enables extended CONNECT). */
static bool request_block_ok(struct rm_h2_stream *hs)
{
    uint32_t f = hs->v.flags;
    if (f & F_CONNECT) {
        if ((f & (F_SCHEME | F_PATH)) || !(f & F_AUTHORITY)) return false;
        hs->v.content_length = -1;
        return true;
    }
    if ((f & F_REQUIRED) != F_REQUIRED || !(f & (F_AUTHORITY | F_HOST))) return false;
    /* check_path: with http(s), '/' or (OPTIONS) '*' */
    return !(f & F_SCHEME_HTTP) || (f & F_PATH_SLASH) || ((f & F_OPTIONS) && (f & F_PATH_STAR));
}

/* nghttp2_http_on_response_headers. */
static bool response_block_ok(struct rm_h2_stream *hs)
{
    if (!(hs->v.flags & F_STATUS)) return false;
    int status = hs->v.status;
    if (status / 100 == 1) { /* non-final: the next block starts afresh */
        hs->v.flags = (hs->v.flags & F_METHODS) | F_EXPECT_FINAL;
        hs->v.content_length = -1;
        hs->v.status = -1;
        return true;
    }
    hs->v.flags &= ~(uint32_t)F_EXPECT_FINAL;
    if ((hs->v.flags & F_HEAD) || status == 304 || status == 204) /* no body expected */
        hs->v.content_length = 0;
    else if (hs->v.flags & F_CONNECT)
        hs->v.content_length = -1;
    return true;
}

bool rm_h2v_end(const struct rm_h2_stream *hs)
{
    if (hs->v.flags & F_EXPECT_FINAL) return false;
    return hs->v.content_length == -1 || hs->v.content_length == hs->v.received;
}

bool rm_h2v_block(struct rm_h2_stream *hs, bool server, int cat, bool end)
{
    bool ok;
    if (cat == NGHTTP2_HCAT_REQUEST)
        ok = request_block_ok(hs);
    else if (cat == NGHTTP2_HCAT_RESPONSE || (!server && (hs->v.flags & F_EXPECT_FINAL)))
        ok = response_block_ok(hs);
    else
        ok = end; /* trailers end the stream */
    return ok && (!end || rm_h2v_end(hs));
}

bool rm_h2v_data(struct rm_h2_stream *hs, size_t n)
{
    hs->v.received += (int64_t)n;
    if (hs->v.flags & F_EXPECT_FINAL) return false;
    return hs->v.content_length == -1 || hs->v.received <= hs->v.content_length;
}

void rm_h2v_request_sent(struct rm_h2_stream *hs, const nghttp2_nv *nv, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!EQ(nv[i].name, nv[i].namelen, ":method")) continue;
        if (EQ(nv[i].value, nv[i].valuelen, "CONNECT"))
            hs->v.flags |= F_CONNECT;
        else if (EQ(nv[i].value, nv[i].valuelen, "HEAD"))
            hs->v.flags |= F_HEAD;
        return;
    }
}
