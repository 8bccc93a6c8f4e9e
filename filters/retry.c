#include "filters/retry.h"

#include <stddef.h>
#include <string.h>

#include "proxy/admin/stats.h"
#include "proxy/http/route.h"
#include "proxy/upstream/circuit_breaker.h"

/* ---- request headers ---------------------------------------------------------------------- */

#define XE "x-envoy-"
#define XE_LEN (sizeof(XE) - 1)

bool rm_retry_parse_u64(struct rm_str v, uint64_t *out)
{
    if (!v.len || v.len > 19) return false;
    uint64_t n = 0;
    for (size_t i = 0; i < v.len; i++) {
        if (v.p[i] < '0' || v.p[i] > '9') return false;
        n = n * 10 + (uint64_t)(v.p[i] - '0');
    }
    *out = n;
    return true;
}

uint64_t rm_grpc_timeout_ms(struct rm_str v)
{
    uint64_t n;
    if (!v.p || v.len < 2 || v.len > 9 || !rm_retry_parse_u64((struct rm_str){v.p, v.len - 1}, &n))
        return 0;
    switch (v.p[v.len - 1]) {
    case 'H':
        return n * 3600000;
    case 'M':
        return n * 60000;
    case 'S':
        return n * 1000;
    case 'm':
        return n;
    case 'u':
        return (n + 999) / 1000;
    case 'n':
        return (n + 999999) / 1000000;
    default:
        return 0;
    }
}

/* The slot of rm_retry_headers named <name> (after "x-envoy-"), or NULL. */
static struct rm_str *header_slot(struct rm_retry_headers *o, const char *name, size_t n)
{
    static const struct {
        const char *name;
        size_t off;
    } names[] = {
        {"retry-on", offsetof(struct rm_retry_headers, retry_on)},
        {"retry-grpc-on", offsetof(struct rm_retry_headers, grpc_retry_on)},
        {"max-retries", offsetof(struct rm_retry_headers, max_retries)},
        {"retriable-status-codes", offsetof(struct rm_retry_headers, status_codes)},
        {"retriable-header-names", offsetof(struct rm_retry_headers, header_names)},
        {"upstream-rq-timeout-ms", offsetof(struct rm_retry_headers, rq_timeout)},
        {"upstream-rq-per-try-timeout-ms", offsetof(struct rm_retry_headers, per_try)},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strlen(names[i].name) == n && memcmp(names[i].name, name, n) == 0)
            return (struct rm_str *)(void *)((char *)o + names[i].off);
    }
    return NULL;
}

void rm_retry_headers_take(struct rm_headers *h, struct rm_retry_headers *out)
{
    memset(out, 0, sizeof(*out));
    for (uint32_t i = 0; i < h->n; i++) {
        const struct rm_header *e = &h->v[i];
        if (e->name_len <= XE_LEN || memcmp(e->name, XE, XE_LEN) != 0) continue;
        struct rm_str *slot =
            header_slot(out, (const char *)e->name + XE_LEN, e->name_len - XE_LEN);
        if (slot && !slot->p) { /* the first occurrence counts */
            *slot = (struct rm_str){(const char *)e->value, e->value_len};
            out->any = true;
        }
    }
    if (!out->any) return;
    /* the values stay in the arena after removal (removal only drops the entries) */
    static const char *const names[] = {
        XE "retry-on",
        XE "retry-grpc-on",
        XE "max-retries",
        XE "retriable-status-codes",
        XE "retriable-header-names",
        XE "upstream-rq-timeout-ms",
        XE "upstream-rq-per-try-timeout-ms",
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        rm_headers_remove(h, names[i], strlen(names[i]));
}

/* Call <fn> for each comma-separated item of <v>, trimmed of blanks, empty ones skipped. */
static void each_item(struct rm_str v, void (*fn)(void *ctx, struct rm_str item), void *ctx)
{
    size_t i = 0;
    while (i < v.len) {
        size_t b = i;
        while (i < v.len && v.p[i] != ',')
            i++;
        size_t e = i++;
        while (b < e && (v.p[b] == ' ' || v.p[b] == '\t'))
            b++;
        while (e > b && (v.p[e - 1] == ' ' || v.p[e - 1] == '\t'))
            e--;
        if (e > b) fn(ctx, (struct rm_str){v.p + b, e - b});
    }
}

static void add_code(void *ctx, struct rm_str item)
{
    struct rm_retry_state *st = ctx;
    uint64_t code;
    if (st->n_hdr_codes < RM_RETRY_MAX_HDR_CODES && rm_retry_parse_u64(item, &code) &&
        code <= UINT16_MAX)
        st->hdr_codes[st->n_hdr_codes++] = (uint16_t)code;
}

static void add_name(void *ctx, struct rm_str item)
{
    struct rm_retry_state *st = ctx;
    if (st->n_hdr_names < RM_RETRY_MAX_HDR_NAMES) st->hdr_names[st->n_hdr_names++] = item;
}

/* ---- header matching ---------------------------------------------------------------------- */

static bool name_eq_ci(const struct rm_header *e, struct rm_str name)
{
    if (e->name_len != name.len) return false;
    for (size_t i = 0; i < name.len; i++) {
        char c = name.p[i];
        if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
        if ((char)e->name[i] != c) return false;
    }
    return true;
}

/* Envoy's HeaderUtility::matchHeaders for one matcher (repeated values joined by ','). */
static bool header_match(const struct rm_header_match *hm, const struct rm_headers *h)
{
    struct rm_str v = {"", 0};
    size_t count = 0, total = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        if (h->v[i].name_len == hm->name_len && memcmp(h->v[i].name, hm->name, hm->name_len) == 0) {
            if (count++ == 0) v = (struct rm_str){(const char *)h->v[i].value, h->v[i].value_len};
            total += h->v[i].value_len + 1;
        }
    }
    if (count > 1 && h->arena) {
        char *p = rm_arena_alloc(h->arena, total);
        size_t k = 0;
        for (uint32_t i = 0; i < h->n; i++) {
            if (h->v[i].name_len == hm->name_len &&
                memcmp(h->v[i].name, hm->name, hm->name_len) == 0) {
                if (k) p[k++] = ',';
                memcpy(p + k, h->v[i].value, h->v[i].value_len);
                k += h->v[i].value_len;
            }
        }
        v = (struct rm_str){p, k};
    }
    bool present_kind = hm->m.kind == RM_STR_PRESENT;
    if (!count && !hm->treat_missing_as_empty)
        return present_kind && (hm->invert ? hm->present_match_value : !hm->present_match_value);
    bool m = present_kind ? hm->present_match_value : rm_str_match_eval(&hm->m, v.p, v.len);
    return m != hm->invert;
}

/* ---- state -------------------------------------------------------------------------------- */

static bool request_allowed(const struct rm_retry_policy *pol, const struct rm_headers *req)
{
    if (!pol->n_request_headers) return true;
    for (size_t i = 0; i < pol->n_request_headers; i++) {
        if (header_match(&pol->request_headers[i], req)) return true;
    }
    return false;
}

struct rm_retry_state *rm_retry_state_new(struct rm_arena *arena, const struct rm_retry_policy *pol,
                                          const struct rm_retry_headers *hdr,
                                          const struct rm_headers *req)
{
    uint32_t on = pol ? pol->retry_on : 0;
    if (hdr && hdr->retry_on.p)
        rm_retry_on_parse(hdr->retry_on.p, hdr->retry_on.len, RM_RETRY_ON_SET_HTTP, &on, NULL);
    if (hdr && hdr->grpc_retry_on.p)
        rm_retry_on_parse(hdr->grpc_retry_on.p, hdr->grpc_retry_on.len, RM_RETRY_ON_SET_GRPC, &on,
                          NULL);
    if (!on) return NULL;
    if (!pol) pol = &rm_retry_policy_default;
    if (!request_allowed(pol, req)) return NULL;
    struct rm_retry_state *st = rm_arena_alloc(arena, sizeof(*st));
    memset(st, 0, sizeof(*st));
    st->pol = pol;
    st->retry_on = on;
    st->retries_left = pol->num_retries;
    uint64_t n;
    if (hdr && hdr->max_retries.p && rm_retry_parse_u64(hdr->max_retries, &n))
        st->retries_left = n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
    if (hdr && hdr->status_codes.p) each_item(hdr->status_codes, add_code, st);
    if (hdr && hdr->header_names.p) each_item(hdr->header_names, add_name, st);
    return st;
}

/* ---- decisions ---------------------------------------------------------------------------- */

static bool has_header(const struct rm_headers *h, const char *name, size_t n)
{
    return rm_headers_find(h, name, n) >= 0;
}

static bool status_listed(const struct rm_retry_state *st, unsigned status)
{
    for (size_t i = 0; i < st->pol->n_status_codes; i++) {
        if (st->pol->status_codes[i] == status) return true;
    }
    for (unsigned i = 0; i < st->n_hdr_codes; i++) {
        if (st->hdr_codes[i] == status) return true;
    }
    return false;
}

static bool headers_listed(const struct rm_retry_state *st, const struct rm_headers *h)
{
    for (size_t i = 0; i < st->pol->n_retriable_headers; i++) {
        if (header_match(&st->pol->retriable_headers[i], h)) return true;
    }
    for (unsigned i = 0; i < st->n_hdr_names; i++) {
        for (uint32_t k = 0; k < h->n; k++) {
            if (name_eq_ci(&h->v[k], st->hdr_names[i])) return true;
        }
    }
    return false;
}

/* grpc-status (in the response headers: a trailers-only response) against the conditions. */
static bool grpc_retriable(uint32_t on, const struct rm_headers *h)
{
    struct rm_str gs = RM_HDR_GET(h, "grpc-status");
    uint64_t code;
    if (!gs.p || !rm_retry_parse_u64(gs, &code)) return false;
    switch (code) {
    case 1:
        return on & RM_RETRY_ON_GRPC_CANCELLED;
    case 4:
        return on & RM_RETRY_ON_GRPC_DEADLINE_EXCEEDED;
    case 8:
        return on & RM_RETRY_ON_GRPC_RESOURCE_EXHAUSTED;
    case 13:
        return on & RM_RETRY_ON_GRPC_INTERNAL;
    case 14:
        return on & RM_RETRY_ON_GRPC_UNAVAILABLE;
    default:
        return false;
    }
}

bool rm_retry_check_headers(const struct rm_retry_state *st, unsigned status,
                            const struct rm_headers *h)
{
    uint32_t on = st->retry_on;
    if (has_header(h, "x-envoy-overloaded", 18)) return false;
    if ((on & RM_RETRY_ON_ENVOY_RATELIMITED) && has_header(h, "x-envoy-ratelimited", 19))
        return true;
    if ((on & RM_RETRY_ON_5XX) && status >= 500 && status <= 599) return true;
    if ((on & RM_RETRY_ON_GATEWAY_ERROR) && status >= 502 && status <= 504) return true;
    if ((on & RM_RETRY_ON_RETRIABLE_4XX) && status == 409) return true;
    if ((on & RM_RETRY_ON_RETRIABLE_STATUS_CODES) && status_listed(st, status)) return true;
    if ((on & RM_RETRY_ON_RETRIABLE_HEADERS) && headers_listed(st, h)) return true;
    return (on & RM_RETRY_ON_GRPC_ANY) && grpc_retriable(on, h);
}

bool rm_retry_check_failure(const struct rm_retry_state *st, enum rm_retry_failure f,
                            bool request_sent)
{
    uint32_t on = st->retry_on;
    if (f == RM_RETRY_FAIL_OVERFLOW) return false;
    if (f == RM_RETRY_FAIL_CONNECT && (on & RM_RETRY_ON_CONNECT_FAILURE)) return true;
    if ((on & RM_RETRY_ON_RESET_BEFORE_REQUEST) && !request_sent) return true;
    /* an upstream that did not answer counts as a 5xx */
    if (on & (RM_RETRY_ON_5XX | RM_RETRY_ON_GATEWAY_ERROR | RM_RETRY_ON_RESET)) return true;
    return f == RM_RETRY_FAIL_REFUSED && (on & RM_RETRY_ON_REFUSED_STREAM);
}

static void count(struct rm_stats *stats, unsigned idx)
{
    if (stats) rm_stat_inc(stats, idx);
}

enum rm_retry_status rm_retry_should(struct rm_retry_state *st, bool would_retry, struct rm_cb *cb,
                                     struct rm_stats *stats)
{
    if (st->holds_retry) { /* the retried attempt has its outcome */
        st->holds_retry = false;
        rm_cb_release(cb, RM_CB_RETRY);
        if (!would_retry) count(stats, RM_CS_UPSTREAM_RQ_RETRY_SUCCESS);
    }
    if (!would_retry) return RM_RETRY_STATUS_NO;
    if (st->retries_left == 0) {
        count(stats, RM_CS_UPSTREAM_RQ_RETRY_LIMIT_EXCEEDED);
        return RM_RETRY_STATUS_LIMIT;
    }
    st->retries_left--;
    if (!rm_cb_try_acquire(cb, RM_CB_RETRY)) {
        count(stats, RM_CS_UPSTREAM_RQ_RETRY_OVERFLOW);
        return RM_RETRY_STATUS_OVERFLOW;
    }
    st->holds_retry = true;
    st->retries_done++;
    count(stats, RM_CS_UPSTREAM_RQ_RETRY);
    count(stats, RM_CS_UPSTREAM_RQ_RETRY_BACKOFF_EXPONENTIAL);
    return RM_RETRY_STATUS_YES;
}

void rm_retry_finish(struct rm_retry_state *st, struct rm_cb *cb)
{
    if (st && st->holds_retry) {
        st->holds_retry = false;
        rm_cb_release(cb, RM_CB_RETRY);
    }
}

uint64_t rm_retry_backoff_ms(uint32_t base_ms, uint32_t max_ms, uint32_t n,
                             uint64_t (*rnd)(void *ctx), void *ctx)
{
    if (!base_ms) return 0;
    uint64_t range = base_ms; /* (2^k - 1) * base for retry k */
    for (uint32_t k = 1; k < n && range <= max_ms; k++)
        range = range * 2 + base_ms;
    uint64_t v = rnd(ctx) % range;
    return v < max_ms ? v : max_ms;
}

/* ---- previous hosts ----------------------------------------------------------------------- */

void rm_retry_note_host(struct rm_retry_state *st, struct rm_arena *arena, struct rm_host *h)
{
    if (!st->pol->previous_hosts || !h) return;
    if (st->n_tried == st->cap_tried) {
        uint32_t cap = st->cap_tried ? st->cap_tried * 2 : 4;
        struct rm_host **v = rm_arena_alloc(arena, cap * sizeof(*v));
        if (st->n_tried) memcpy(v, st->tried, st->n_tried * sizeof(*v));
        st->tried = v;
        st->cap_tried = cap;
    }
    st->tried[st->n_tried++] = h;
}

bool rm_retry_reject_host(const struct rm_retry_state *st, const struct rm_host *h)
{
    for (uint32_t i = 0; i < st->n_tried; i++) {
        if (st->tried[i] == h) return true;
    }
    return false;
}
