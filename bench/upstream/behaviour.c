/* remora-upstream: behaviour headers, fail-first counters, shared response pieces. */
#include "bench/upstream/behaviour.h"

#include "bench/upstream/conn.h"
#include "bench/upstream/req.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum {
    MAX_STATUS = 999,
    MAX_DELAY_MS = 3600 * 1000,
    MAX_GRPC_STATUS = 99,
    FF_BUCKETS = 256,
};
static const uint64_t MAX_BODY = 1ULL << 40;

/* ---- pattern body ---------------------------------------------------------------------------- */

static const char ALPHABET[64] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static uint8_t pattern[RMU_PATTERN_CHUNK + sizeof(ALPHABET)];

void rmu_pattern_copy(uint8_t *dst, uint64_t off, size_t n)
{
    memcpy(dst, pattern + off % sizeof(ALPHABET), n);
}

/* ---- fail-first counters: process-wide, one per key ------------------------------------------ */

struct ff_entry {
    struct ff_entry *next;
    uint64_t count;
    size_t klen;
    char key[];
};
static struct ff_entry *ff_table[FF_BUCKETS];
static pthread_mutex_t ff_mu = PTHREAD_MUTEX_INITIALIZER;

/* Count one more request for key; returns the new count (1 for the first), or UINT64_MAX when
 * out of memory (the request then succeeds). */
static uint64_t ff_hit(struct rmu_str key)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < key.n; i++)
        h = (h ^ (uint8_t)key.p[i]) * 16777619u;
    uint64_t count = UINT64_MAX;
    pthread_mutex_lock(&ff_mu);
    struct ff_entry **slot = &ff_table[h % FF_BUCKETS], *e = *slot;
    while (e && !(e->klen == key.n && memcmp(e->key, key.p, key.n) == 0))
        e = e->next;
    if (!e && (e = malloc(sizeof(*e) + key.n + 1)) != NULL) {
        memcpy(e->key, key.p, key.n);
        e->key[key.n] = 0;
        e->klen = key.n;
        e->count = 0;
        e->next = *slot;
        *slot = e;
    }
    if (e) count = ++e->count;
    pthread_mutex_unlock(&ff_mu);
    return count;
}

void rmu_behaviour_init(void)
{
    for (size_t i = 0; i < sizeof(pattern); i++)
        pattern[i] = (uint8_t)ALPHABET[i % sizeof(ALPHABET)];
}

void rmu_behaviour_cleanup(void)
{
    for (size_t i = 0; i < FF_BUCKETS; i++) {
        while (ff_table[i]) {
            struct ff_entry *e = ff_table[i];
            ff_table[i] = e->next;
            free(e);
        }
    }
}

/* ---- parsing the x-upstream-* headers -------------------------------------------------------- */

struct fail_first {
    bool on, grpc_on;
    uint64_t n;
    unsigned status, grpc_status;
    struct rmu_str key;
};

static bool is_tchar(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static struct rmu_str trim(const char *p, size_t n)
{
    while (n > 0 && (*p == ' ' || *p == '\t'))
        p++, n--;
    while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    return (struct rmu_str){p, n};
}

/* Iterate "k=v,k=v": fills *k and *v with the next item after *pos; false at the end. */
static bool next_item(struct rmu_str list, size_t *pos, struct rmu_str *k, struct rmu_str *v)
{
    while (*pos < list.n) {
        const char *s = list.p + *pos;
        const char *comma = memchr(s, ',', list.n - *pos);
        size_t len = comma ? (size_t)(comma - s) : list.n - *pos;
        *pos += len + 1;
        const char *eq = memchr(s, '=', len);
        struct rmu_str item = trim(s, len);
        if (item.n == 0) continue;
        if (!eq) {
            *k = item;
            *v = (struct rmu_str){NULL, 0}; /* no '=': invalid */
        } else {
            *k = trim(s, (size_t)(eq - s));
            *v = trim(eq + 1, len - (size_t)(eq - s) - 1);
        }
        return true;
    }
    return false;
}

static bool valid_list(struct rmu_str list)
{
    size_t pos = 0;
    struct rmu_str k, v;
    while (next_item(list, &pos, &k, &v)) {
        if (k.n == 0 || v.p == NULL) return false;
        for (size_t i = 0; i < k.n; i++)
            if (!is_tchar(k.p[i])) return false;
    }
    return true;
}

static int parse_bool(struct rmu_str v, bool *out)
{
    v = trim(v.p, v.n);
    if (rmu_str_ieq(v, "1") || rmu_str_ieq(v, "true") || rmu_str_ieq(v, "yes"))
        *out = true;
    else if (rmu_str_ieq(v, "0") || rmu_str_ieq(v, "false") || rmu_str_ieq(v, "no"))
        *out = false;
    else
        return -1;
    return 0;
}

static int parse_uint(struct rmu_str v, uint64_t lo, uint64_t hi, uint64_t *out)
{
    return rmu_parse_u64(v.p, v.n, hi, out) == 0 && *out >= lo ? 0 : -1;
}

static const char *parse_reset(struct rmu_behaviour *bh, struct rmu_str v)
{
    static const char pre[] = "after-body-bytes=";
    v = trim(v.p, v.n);
    if (rmu_str_ieq(v, "before-headers")) {
        bh->reset = RMU_RESET_BEFORE_HEADERS;
    } else if (rmu_str_ieq(v, "after-headers")) {
        bh->reset = RMU_RESET_AFTER;
        bh->reset_after = 0;
    } else if (v.n > sizeof(pre) - 1 && strncasecmp(v.p, pre, sizeof(pre) - 1) == 0 &&
               rmu_parse_u64(v.p + sizeof(pre) - 1, v.n - (sizeof(pre) - 1), MAX_BODY,
                             &bh->reset_after) == 0) {
        bh->reset = RMU_RESET_AFTER;
    } else {
        return "x-upstream-reset: want before-headers, after-headers or after-body-bytes=N";
    }
    return NULL;
}

/* Apply one x-upstream-<key> header; returns an error text or NULL. */
static const char *apply(struct rmu_behaviour *bh, struct fail_first *ff, struct rmu_str key,
                         struct rmu_str v)
{
    uint64_t u;
#define KEY(lit) (key.n == sizeof(lit) - 1 && memcmp(key.p, lit, key.n) == 0)
    if (KEY("status")) {
        if (parse_uint(v, 200, MAX_STATUS, &u) < 0)
            return "x-upstream-status: want an integer 200..999";
        bh->status = (unsigned)u;
    } else if (KEY("body-size")) {
        if (parse_uint(v, 0, MAX_BODY, &bh->body_size) < 0)
            return "x-upstream-body-size: want an integer 0..2^40";
    } else if (KEY("delay-ms")) {
        if (parse_uint(v, 0, MAX_DELAY_MS, &bh->delay_ms) < 0)
            return "x-upstream-delay-ms: want an integer 0..3600000";
    } else if (KEY("echo")) {
        if (parse_bool(v, &bh->echo) < 0) return "x-upstream-echo: want 1 or 0";
    } else if (KEY("echo-headers")) {
        if (parse_bool(v, &bh->echo_headers) < 0) return "x-upstream-echo-headers: want 1 or 0";
    } else if (KEY("echo-request")) {
        if (parse_bool(v, &bh->echo_request) < 0) return "x-upstream-echo-request: want 1 or 0";
    } else if (KEY("close")) {
        if (parse_bool(v, &bh->close) < 0) return "x-upstream-close: want 1 or 0";
    } else if (KEY("reset")) {
        return parse_reset(bh, v);
    } else if (KEY("fail-first")) {
        if (parse_uint(v, 0, UINT64_MAX / 2, &ff->n) < 0)
            return "x-upstream-fail-first: want an integer";
        ff->on = true;
    } else if (KEY("key")) {
        ff->key = trim(v.p, v.n);
    } else if (KEY("fail-status")) {
        if (parse_uint(v, 200, MAX_STATUS, &u) < 0)
            return "x-upstream-fail-status: want an integer 200..999";
        ff->status = (unsigned)u;
    } else if (KEY("fail-grpc-status")) {
        if (parse_uint(v, 0, MAX_GRPC_STATUS, &u) < 0)
            return "x-upstream-fail-grpc-status: want an integer 0..99";
        ff->grpc_status = (unsigned)u;
        ff->grpc_on = true;
    } else if (KEY("grpc-status")) {
        if (parse_uint(v, 0, MAX_GRPC_STATUS, &u) < 0)
            return "x-upstream-grpc-status: want an integer 0..99";
        bh->grpc_status = (unsigned)u;
        bh->grpc = true;
    } else if (KEY("grpc-message")) {
        bh->grpc_message = trim(v.p, v.n);
    } else if (KEY("response-headers")) {
        if (!valid_list(v)) return "x-upstream-response-headers: want name=value,name=value";
        bh->resp_headers = v;
    } else if (KEY("trailers")) {
        if (!valid_list(v)) return "x-upstream-trailers: want name=value,name=value";
        bh->trailers = v;
    } else {
        return "unknown behaviour header (see remora-upstream --help)";
    }
#undef KEY
    return NULL;
}

static bool has_prefix(struct rmu_str s, const char *lit)
{
    size_t n = strlen(lit);
    return s.n >= n && strncasecmp(s.p, lit, n) == 0;
}

void rmu_behaviour_parse(struct rmu_req *r)
{
    struct rmu_behaviour *bh = &r->bh;
    *bh = (struct rmu_behaviour){.status = 200, .body_size = rmu_cfg.body_size};
    if (r->too_large) {
        *bh = (struct rmu_behaviour){.status = 431, .error = "request headers too large"};
        return;
    }
    struct fail_first ff = {.status = 503, .key = {"", 0}};
    bool grpc_explicit = false, grpc_ct = false;
    const char *err = NULL;
    struct rmu_str err_hdr = {NULL, 0};
    for (uint32_t i = 0; i < r->nhdrs && !err; i++) {
        struct rmu_str k = rmu_req_name(r, i), v = rmu_req_value(r, i);
        if (k.n == 12 && memcmp(k.p, "content-type", 12) == 0)
            grpc_ct = grpc_ct || has_prefix(trim(v.p, v.n), "application/grpc");
        if (k.n <= 11 || memcmp(k.p, "x-upstream-", 11) != 0) continue;
        struct rmu_str key = {k.p + 11, k.n - 11};
        err = apply(bh, &ff, key, v);
        err_hdr = k;
        grpc_explicit = grpc_explicit || bh->grpc;
    }
    if (err) {
        *bh = (struct rmu_behaviour){.status = 400, .error = err, .error_arg = err_hdr};
        return;
    }
    if (has_prefix(r->path, "/echo-request")) bh->echo_request = true;
    bh->grpc = grpc_explicit || (grpc_ct && !bh->echo_request);
    if (ff.on && ff_hit(ff.key) <= ff.n) {
        if (ff.grpc_on) {
            bh->grpc = true;
            bh->grpc_status = ff.grpc_status;
        } else {
            bh->status = ff.status;
        }
    }
}

/* ---- response headers and trailers ----------------------------------------------------------- */

/* Add each "k=v" of list with its name lower-cased (hl storage must be reserved). */
static int add_list(struct rmu_hlist *hl, struct rmu_str list)
{
    size_t pos = 0;
    struct rmu_str k, v;
    while (next_item(list, &pos, &k, &v)) {
        char *name = rmu_hlist_alloc(hl, k.n);
        if (!name) return -1;
        for (size_t i = 0; i < k.n; i++)
            name[i] = (k.p[i] >= 'A' && k.p[i] <= 'Z') ? (char)(k.p[i] + 32) : k.p[i];
        if (rmu_hlist_add(hl, name, k.n, v.p, v.n) < 0) return -1;
    }
    return 0;
}

static int add_echo(struct rmu_hlist *hl, const char *name, size_t nn, struct rmu_str v)
{
    char *p = rmu_hlist_alloc(hl, 7 + nn);
    if (!p) return -1;
    memcpy(p, "x-echo-", 7);
    memcpy(p + 7, name, nn);
    return rmu_hlist_add(hl, p, 7 + nn, v.p, v.n);
}

static int add_echo_headers(const struct rmu_req *r, struct rmu_hlist *hl)
{
    if (add_echo(hl, "method", 6, r->method) < 0 || add_echo(hl, "path", 4, r->path) < 0 ||
        add_echo(hl, "authority", 9, r->authority) < 0 || add_echo(hl, "scheme", 6, r->scheme) < 0)
        return -1;
    for (uint32_t i = 0; i < r->nhdrs; i++) {
        struct rmu_str k = rmu_req_name(r, i);
        if (k.n > 0 && k.p[0] != ':' && add_echo(hl, k.p, k.n, rmu_req_value(r, i)) < 0) return -1;
    }
    return 0;
}

static struct rmu_str content_type(const struct rmu_req *r)
{
    if (r->bh.error) return (struct rmu_str){"text/plain", 10};
    if (r->bh.echo_request) return (struct rmu_str){"application/json", 16};
    if (r->bh.grpc) return (struct rmu_str){"application/grpc", 16};
    if (r->src == RMU_SRC_ECHO) {
        struct rmu_str ct = rmu_req_header(r, "content-type");
        return ct.p ? ct : (struct rmu_str){"application/octet-stream", 24};
    }
    return r->bh.body_size > 0 ? (struct rmu_str){"application/octet-stream", 24}
                               : (struct rmu_str){NULL, 0};
}

int rmu_behaviour_headers(const struct rmu_req *r, struct rmu_hlist *hl)
{
    const struct rmu_behaviour *bh = &r->bh;
    size_t need =
        bh->resp_headers.n + (bh->echo_headers ? (r->nhdrs + 4) * 7 + r->arena.len + 32 : 0);
    if (rmu_hlist_reserve(hl, need + 1) < 0) return -1;
    if (rmu_hlist_add(hl, "x-upstream-name", 15, rmu_cfg.name, rmu_cfg.name_len) < 0) return -1;
    struct rmu_str ct = content_type(r);
    if (ct.p && rmu_hlist_add(hl, "content-type", 12, ct.p, ct.n) < 0) return -1;
    if (bh->resp_headers.n && add_list(hl, bh->resp_headers) < 0) return -1;
    if (bh->echo_headers && add_echo_headers(r, hl) < 0) return -1;
    return 0;
}

bool rmu_behaviour_has_trailers(const struct rmu_req *r)
{
    return r->bh.grpc || r->bh.trailers.n > 0;
}

int rmu_behaviour_trailers(const struct rmu_req *r, struct rmu_hlist *hl)
{
    const struct rmu_behaviour *bh = &r->bh;
    if (rmu_hlist_reserve(hl, bh->trailers.n + 24) < 0) return -1;
    if (bh->grpc) {
        char *d = rmu_hlist_alloc(hl, 20);
        size_t dn = rmu_fmt_u64(d, bh->grpc_status);
        if (rmu_hlist_add(hl, "grpc-status", 11, d, dn) < 0) return -1;
        if (bh->grpc_message.n &&
            rmu_hlist_add(hl, "grpc-message", 12, bh->grpc_message.p, bh->grpc_message.n) < 0)
            return -1;
    }
    return bh->trailers.n ? add_list(hl, bh->trailers) : 0;
}

/* ---- JSON description of the request --------------------------------------------------------- */

static int json_str(struct rmu_buf *b, struct rmu_str s)
{
    static const char hex[] = "0123456789abcdef";
    if (rmu_buf_reserve(b, s.n * 6 + 2) < 0) return -1;
    char *d = (char *)rmu_buf_tail(b), *start = d;
    *d++ = '"';
    for (size_t i = 0; i < s.n; i++) {
        uint8_t ch = (uint8_t)s.p[i];
        if (ch == '"' || ch == '\\') {
            *d++ = '\\';
            *d++ = (char)ch;
        } else if (ch < 0x20 || ch >= 0x7f) {
            memcpy(d, "\\u00", 4);
            d[4] = hex[ch >> 4];
            d[5] = hex[ch & 15];
            d += 6;
        } else {
            *d++ = (char)ch;
        }
    }
    *d++ = '"';
    b->len += (size_t)(d - start);
    return 0;
}

#define LIT(s)                                                                                     \
    (struct rmu_str)                                                                               \
    {                                                                                              \
        s, sizeof(s) - 1                                                                           \
    }
static int json_raw(struct rmu_buf *b, struct rmu_str s)
{
    return rmu_buf_append(b, s.p, s.n);
}

static int json_field(struct rmu_buf *b, const char *key, struct rmu_str v)
{
    return json_raw(b, (struct rmu_str){key, strlen(key)}) < 0 || json_str(b, v) < 0 ? -1 : 0;
}

static bool same_name(const struct rmu_req *r, uint32_t a, uint32_t b)
{
    struct rmu_str x = rmu_req_name(r, a), y = rmu_req_name(r, b);
    return x.n == y.n && memcmp(x.p, y.p, x.n) == 0;
}

/* "name":"value" or "name":["v1","v2"] for the first header of each name. */
static int json_headers(const struct rmu_req *r, struct rmu_buf *b)
{
    bool first = true;
    for (uint32_t i = 0; i < r->nhdrs; i++) {
        struct rmu_str k = rmu_req_name(r, i);
        bool seen = k.n == 0 || k.p[0] == ':';
        for (uint32_t j = 0; j < i && !seen; j++)
            seen = same_name(r, i, j);
        if (seen) continue;
        uint32_t count = 0;
        for (uint32_t j = i; j < r->nhdrs; j++)
            count += same_name(r, i, j);
        if ((!first && json_raw(b, LIT(",")) < 0) || json_str(b, k) < 0 ||
            json_raw(b, LIT(":")) < 0)
            return -1;
        first = false;
        if (count > 1 && json_raw(b, LIT("[")) < 0) return -1;
        for (uint32_t j = i, n = 0; j < r->nhdrs; j++) {
            if (!same_name(r, i, j)) continue;
            if ((n++ > 0 && json_raw(b, LIT(",")) < 0) || json_str(b, rmu_req_value(r, j)) < 0)
                return -1;
        }
        if (count > 1 && json_raw(b, LIT("]")) < 0) return -1;
    }
    return 0;
}

int rmu_behaviour_echo_json(const struct rmu_req *r, struct rmu_buf *out)
{
    struct rmu_str proto = r->h2                ? LIT("HTTP/2")
                           : r->http_minor == 0 ? LIT("HTTP/1.0")
                                                : LIT("HTTP/1.1");
    char num[24];
    size_t nn = rmu_fmt_u64(num, r->body_len);
    if (json_field(out, "{\"method\":", r->method) < 0 ||
        json_field(out, ",\"path\":", r->path) < 0 ||
        json_field(out, ",\"authority\":", r->authority) < 0 ||
        json_field(out, ",\"scheme\":", r->scheme) < 0 ||
        json_field(out, ",\"protocol\":", proto) < 0 ||
        json_field(out, ",\"upstream\":", (struct rmu_str){rmu_cfg.name, rmu_cfg.name_len}) < 0 ||
        json_raw(out, LIT(",\"headers\":{")) < 0 || json_headers(r, out) < 0 ||
        json_raw(out, LIT("},\"body_len\":")) < 0 || json_raw(out, (struct rmu_str){num, nn}) < 0 ||
        json_raw(out, LIT("}\n")) < 0)
        return -1;
    return 0;
}

/* ---- reason phrases -------------------------------------------------------------------------- */

const char *rmu_reason(unsigned status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 413:
        return "Content Too Large";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Unknown";
    }
}
