/* gRPC wire helpers: see grpc_frame.h. */
#include "xds/grpc_frame.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static const char *const code_names[] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};

const char *rm_grpc_code_name(int code)
{
    if (code < 0 || (size_t)code >= sizeof(code_names) / sizeof(code_names[0]))
        return "UNKNOWN_CODE";
    return code_names[code];
}

/* ---- framing ------------------------------------------------------------------------------ */

void rm_grpc_prefix_write(uint8_t out[RM_GRPC_PREFIX_LEN], uint32_t len)
{
    out[0] = 0;
    out[1] = (uint8_t)(len >> 24);
    out[2] = (uint8_t)(len >> 16);
    out[3] = (uint8_t)(len >> 8);
    out[4] = (uint8_t)len;
}

static uint32_t prefix_len(const uint8_t *p)
{
    return (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
}

void rm_grpc_deframer_init(struct rm_grpc_deframer *d, uint32_t max)
{
    memset(d, 0, sizeof(*d));
    d->max = max ? max : RM_GRPC_DEFAULT_MAX_RECV;
}

void rm_grpc_deframer_dispose(struct rm_grpc_deframer *d)
{
    rm_buf_reset(&d->buf);
    d->need = 0;
    d->consume_pending = false;
}

/* Check a complete prefix; returns 0 or a negative RM_GRPC_DEFRAME_*. */
static int check_prefix(struct rm_grpc_deframer *d, const uint8_t *pfx)
{
    uint32_t len = prefix_len(pfx);
    if (pfx[0] != 0) {
        d->bad_flag = pfx[0];
        return pfx[0] == 1 ? RM_GRPC_DEFRAME_COMPRESSED : RM_GRPC_DEFRAME_BAD_FLAG;
    }
    if (len > d->max) {
        d->bad_len = len;
        return RM_GRPC_DEFRAME_TOO_LARGE;
    }
    return 0;
}

/* Fast path: nothing buffered and a whole message in the input. */
static int try_contiguous(struct rm_grpc_deframer *d, const uint8_t **p, size_t *n,
                          const uint8_t **msg, size_t *len)
{
    int rv = check_prefix(d, *p);
    if (rv < 0) return rv;
    size_t total = RM_GRPC_PREFIX_LEN + (size_t)prefix_len(*p);
    if (*n < total) return RM_GRPC_DEFRAME_MORE;
    *msg = *p + RM_GRPC_PREFIX_LEN;
    *len = total - RM_GRPC_PREFIX_LEN;
    *p += total;
    *n -= total;
    return RM_GRPC_DEFRAME_MSG;
}

/* Move up to <want> bytes of input into .buf. */
static void take(struct rm_grpc_deframer *d, const uint8_t **p, size_t *n, size_t want)
{
    size_t k = *n < want ? *n : want;
    if (!k) return;
    rm_buf_append(&d->buf, *p, k);
    *p += k;
    *n -= k;
}

int rm_grpc_deframe(struct rm_grpc_deframer *d, const uint8_t **p, size_t *n, const uint8_t **msg,
                    size_t *len)
{
    if (d->consume_pending) {
        d->consume_pending = false;
        rm_buf_consume(&d->buf, d->need);
        d->need = 0;
    }
    if (d->buf.len == 0 && *n >= RM_GRPC_PREFIX_LEN) {
        int rv = try_contiguous(d, p, n, msg, len);
        if (rv != RM_GRPC_DEFRAME_MORE) return rv;
    }
    if (d->need == 0) { /* gather the prefix */
        take(d, p, n, RM_GRPC_PREFIX_LEN - d->buf.len);
        if (d->buf.len < RM_GRPC_PREFIX_LEN) return RM_GRPC_DEFRAME_MORE;
        int rv = check_prefix(d, rm_buf_data(&d->buf));
        if (rv < 0) return rv;
        d->need = RM_GRPC_PREFIX_LEN + (size_t)prefix_len(rm_buf_data(&d->buf));
        rm_buf_reserve(&d->buf, d->need - d->buf.len); /* one allocation for the message */
    }
    take(d, p, n, d->need - d->buf.len);
    if (d->buf.len < d->need) return RM_GRPC_DEFRAME_MORE;
    *msg = rm_buf_data(&d->buf) + RM_GRPC_PREFIX_LEN;
    *len = d->need - RM_GRPC_PREFIX_LEN;
    d->consume_pending = true;
    return RM_GRPC_DEFRAME_MSG;
}

size_t rm_grpc_deframer_partial(const struct rm_grpc_deframer *d)
{
    return d->consume_pending ? d->buf.len - d->need : d->buf.len;
}

/* ---- grpc-timeout ------------------------------------------------------------------------- */

#define TIMEOUT_MAX_VALUE 99999999u /* at most 8 digits */

size_t rm_grpc_timeout_format(uint64_t ms, char out[RM_GRPC_TIMEOUT_MAX])
{
    static const struct {
        char unit;
        uint64_t ms;
    } units[] = {{'m', 1}, {'S', 1000}, {'M', 60000}, {'H', 3600000}};
    uint64_t v = ms;
    char unit = 'H';
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        v = ms / units[i].ms + (ms % units[i].ms != 0); /* round up: never a shorter deadline */
        unit = units[i].unit;
        if (v <= TIMEOUT_MAX_VALUE) break;
    }
    if (v > TIMEOUT_MAX_VALUE) v = TIMEOUT_MAX_VALUE;
    int k = snprintf(out, RM_GRPC_TIMEOUT_MAX, "%llu%c", (unsigned long long)v, unit);
    return (size_t)k;
}

int rm_grpc_timeout_parse(const char *p, size_t n, uint64_t *ms)
{
    if (n < 2 || n > 9) return -1;
    uint64_t v = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        if (p[i] < '0' || p[i] > '9') return -1;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    switch (p[n - 1]) {
    case 'H':
        *ms = v * 3600000;
        return 0;
    case 'M':
        *ms = v * 60000;
        return 0;
    case 'S':
        *ms = v * 1000;
        return 0;
    case 'm':
        *ms = v;
        return 0;
    case 'u':
        *ms = v / 1000 + (v % 1000 != 0);
        return 0;
    case 'n':
        *ms = v / 1000000 + (v % 1000000 != 0);
        return 0;
    default:
        return -1;
    }
}

/* ---- status ------------------------------------------------------------------------------- */

int rm_grpc_status_parse(const char *p, size_t n)
{
    if (n == 0 || n > 9) return -1;
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return -1;
        v = v * 10 + (p[i] - '0');
    }
    return v;
}

int rm_grpc_status_from_http(int http_status)
{
    switch (http_status) {
    case 400:
        return RM_GRPC_INTERNAL;
    case 401:
        return RM_GRPC_UNAUTHENTICATED;
    case 403:
        return RM_GRPC_PERMISSION_DENIED;
    case 404:
        return RM_GRPC_UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
        return RM_GRPC_UNAVAILABLE;
    default:
        return RM_GRPC_UNKNOWN;
    }
}

int rm_grpc_status_from_reset(enum rm_reset_reason r)
{
    switch (r) {
    case RM_RESET_CONNECTION_FAILURE:
    case RM_RESET_CONNECTION_TERMINATION:
    case RM_RESET_REFUSED:
        return RM_GRPC_UNAVAILABLE;
    case RM_RESET_PROTOCOL:
        return RM_GRPC_INTERNAL;
    case RM_RESET_OVERFLOW:
        return RM_GRPC_RESOURCE_EXHAUSTED;
    case RM_RESET_TIMEOUT:
        return RM_GRPC_DEADLINE_EXCEEDED;
    case RM_RESET_REMOTE:
    case RM_RESET_LOCAL:
    default:
        return RM_GRPC_CANCELLED;
    }
}

bool rm_grpc_content_type_ok(const char *p, size_t n)
{
    static const char ct[] = "application/grpc";
    size_t k = sizeof(ct) - 1;
    if (n < k || strncasecmp(p, ct, k) != 0) return false;
    return n == k || p[k] == '+' || p[k] == ';';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

size_t rm_grpc_message_encode(const char *in, size_t n, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t b = (uint8_t)in[i];
        if (b >= 0x20 && b <= 0x7e && b != '%') {
            out[k++] = (char)b;
        } else {
            out[k++] = '%';
            out[k++] = hex[b >> 4];
            out[k++] = hex[b & 15];
        }
    }
    out[k] = '\0';
    return k;
}

size_t rm_grpc_message_decode(const char *in, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (in[i] == '%' && i + 2 < n) {
            int hi = hexval(in[i + 1]), lo = hexval(in[i + 2]);
            if (hi >= 0 && lo >= 0 && (hi | lo) != 0) {
                out[o++] = (char)(hi << 4 | lo);
                i += 2;
                continue;
            }
        }
        out[o++] = in[i];
    }
    out[o] = '\0';
    return o;
}
