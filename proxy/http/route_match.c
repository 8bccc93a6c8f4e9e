/* The request-time half of route tables: route matching, string matchers, weighted picks and
 * header mutations.  Hot path: no malloc, no protobuf (see route.h for the one arena use). */
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "proxy/http/route_int.h"

/* Backtracking bounds for the PCRE2 interpreter and JIT (RE2 is linear; PCRE2 is not, so a
 * pathological pattern fails to match instead of burning a worker). */
#define RE_MATCH_LIMIT 100000
#define RE_DEPTH_LIMIT 10000
#define RE_HEAP_LIMIT_KIB 4096

static __thread pcre2_match_data *tls_md;
static __thread pcre2_match_context *tls_mctx;

void rm_route_thread_cleanup(void)
{
    pcre2_match_data_free(tls_md);
    pcre2_match_context_free(tls_mctx);
    tls_md = NULL;
    tls_mctx = NULL;
}

/* Anchored full match (the code was compiled ANCHORED|ENDANCHORED); false on any error. */
static bool re_full_match(const pcre2_code *re, const char *s, size_t n)
{
    if (!tls_md) {
        tls_md = pcre2_match_data_create(1, NULL);
        tls_mctx = pcre2_match_context_create(NULL);
        if (!tls_md || !tls_mctx) {
            rm_route_thread_cleanup();
            return false;
        }
        pcre2_set_match_limit(tls_mctx, RE_MATCH_LIMIT);
        pcre2_set_depth_limit(tls_mctx, RE_DEPTH_LIMIT);
        pcre2_set_heap_limit(tls_mctx, RE_HEAP_LIMIT_KIB);
    }
    return pcre2_match(re, (PCRE2_SPTR)(s ? s : ""), n, 0, 0, tls_md, tls_mctx) >= 0;
}

/* ---- string matchers ---------------------------------------------------------------------- */

static unsigned char lower_u(char ch)
{
    return (unsigned char)((ch >= 'A' && ch <= 'Z') ? ch - 'A' + 'a' : ch);
}

/* <v> equals <pat> over <n> bytes; <pat> is lower-case when <ic>. */
static bool eq(const char *v, const char *pat, size_t n, bool ic)
{
    if (!ic) return memcmp(v, pat, n) == 0;
    for (size_t i = 0; i < n; i++) {
        if (lower_u(v[i]) != (unsigned char)pat[i]) return false;
    }
    return true;
}

static bool contains(const char *v, size_t len, const char *pat, size_t n, bool ic)
{
    if (n == 0) return true;
    if (!ic) return len >= n && memmem(v, len, pat, n) != NULL;
    for (size_t i = 0; i + n <= len; i++) {
        if (eq(v + i, pat, n, true)) return true;
    }
    return false;
}

/* absl::SimpleAtoi for int64: optional ASCII whitespace around, optional sign, decimal digits. */
static bool parse_i64(const char *v, size_t len, int64_t *out)
{
    size_t i = 0, end = len;
    while (i < end && (v[i] == ' ' || (v[i] >= '\t' && v[i] <= '\r')))
        i++;
    while (end > i && (v[end - 1] == ' ' || (v[end - 1] >= '\t' && v[end - 1] <= '\r')))
        end--;
    bool neg = false;
    if (i < end && (v[i] == '+' || v[i] == '-')) neg = v[i++] == '-';
    if (i == end) return false;
    uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX, x = 0;
    for (; i < end; i++) {
        if (v[i] < '0' || v[i] > '9') return false;
        unsigned d = (unsigned)(v[i] - '0');
        if (x > (limit - d) / 10) return false;
        x = x * 10 + d;
    }
    *out = neg ? (int64_t)(0 - x) : (int64_t)x;
    return true;
}

bool rm_str_match_eval(const struct rm_str_match *m, const char *v, size_t len)
{
    int64_t x;
    if (!v) v = "";
    switch (m->kind) {
    case RM_STR_EXACT:
        return len == m->len && eq(v, m->s, len, m->ignore_case);
    case RM_STR_PREFIX:
        return len >= m->len && eq(v, m->s, m->len, m->ignore_case);
    case RM_STR_SUFFIX:
        return len >= m->len && eq(v + len - m->len, m->s, m->len, m->ignore_case);
    case RM_STR_CONTAINS:
        return contains(v, len, m->s, m->len, m->ignore_case);
    case RM_STR_REGEX:
        return re_full_match(m->re, v, len);
    case RM_STR_PRESENT:
        return true;
    case RM_STR_RANGE:
        return parse_i64(v, len, &x) && x >= m->range_start && x < m->range_end;
    }
    return false;
}

/* ---- request predicates ------------------------------------------------------------------- */

/* All values of <name> joined by ',' (Envoy's getAllOfHeaderAsString); false if absent. */
static bool header_value(const struct rm_headers *h, const char *name, size_t nlen,
                         struct rm_str *out)
{
    size_t count = 0, total = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        if (h->v[i].name_len == nlen && memcmp(h->v[i].name, name, nlen) == 0) {
            if (count++ == 0)
                *out = (struct rm_str){(const char *)h->v[i].value, h->v[i].value_len};
            total += h->v[i].value_len + 1;
        }
    }
    if (count <= 1 || !h->arena) return count > 0;
    char *p = rm_arena_alloc(h->arena, total);
    size_t k = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        if (h->v[i].name_len == nlen && memcmp(h->v[i].name, name, nlen) == 0) {
            if (k) p[k++] = ',';
            memcpy(p + k, h->v[i].value, h->v[i].value_len);
            k += h->v[i].value_len;
        }
    }
    *out = (struct rm_str){p, k};
    return true;
}

bool rm_header_match_eval(const struct rm_header_match *hm, const struct rm_headers *req)
{
    struct rm_str v = {"", 0};
    bool present;
    if (hm->pseudo) { /* :method, :path…: one value, found by key */
        v = rm_headers_get_key(req, (enum rm_hkey)hm->key);
        present = v.p != NULL;
    } else {
        present = header_value(req, hm->name, hm->name_len, &v);
    }
    bool is_present_kind = hm->m.kind == RM_STR_PRESENT;
    if (!present && !hm->treat_missing_as_empty)
        return is_present_kind && (hm->invert ? hm->present_match_value : !hm->present_match_value);
    if (!present) v = (struct rm_str){"", 0};
    bool m = is_present_kind ? hm->present_match_value : rm_str_match_eval(&hm->m, v.p, v.len);
    return m != hm->invert;
}

/* First value of query parameter <name> in <path> (raw, not decoded; "" without '='). */
static bool query_value(struct rm_str path, const char *name, size_t nlen, struct rm_str *out)
{
    const char *q = memchr(path.p, '?', path.len);
    if (!q) return false;
    const char *p = q + 1, *end = path.p + path.len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *seg_end = amp ? amp : end;
        const char *eqs = memchr(p, '=', (size_t)(seg_end - p));
        const char *key_end = eqs ? eqs : seg_end;
        if ((size_t)(key_end - p) == nlen && memcmp(p, name, nlen) == 0) {
            *out = eqs ? (struct rm_str){eqs + 1, (size_t)(seg_end - eqs - 1)}
                       : (struct rm_str){"", 0};
            return true;
        }
        p = seg_end + 1;
    }
    return false;
}

/* Envoy's ConfigUtility::QueryParameterMatcher::matches. */
static bool query_matches(const struct rm_query_match *qm, struct rm_str path)
{
    struct rm_str v;
    bool has = query_value(path, qm->name, qm->name_len, &v);
    if (qm->m.kind == RM_STR_PRESENT) return has == qm->present;
    return has && rm_str_match_eval(&qm->m, v.p, v.len);
}

/* Exactly "application/grpc" or "application/grpc+..." (Envoy's hasGrpcContentType). */
static bool is_grpc(const struct rm_headers *req)
{
    static const char ct[] = "application/grpc";
    const size_t n = sizeof(ct) - 1;
    struct rm_str v = rm_headers_get_key(req, RM_HK_CONTENT_TYPE);
    return v.p && v.len >= n && memcmp(v.p, ct, n) == 0 && (v.len == n || v.p[n] == '+');
}

static bool path_matches(const struct rm_route *r, const char *p, size_t n)
{
    bool ic = !r->case_sensitive;
    switch (r->path_kind) {
    case RM_PATH_PREFIX:
        return n >= r->path_len && (ic ? strncasecmp(p, r->path, r->path_len) == 0
                                       : memcmp(p, r->path, r->path_len) == 0);
    case RM_PATH_EXACT:
        return n == r->path_len &&
               (ic ? strncasecmp(p, r->path, n) == 0 : memcmp(p, r->path, n) == 0);
    case RM_PATH_SEPARATED_PREFIX:
        return n >= r->path_len &&
               (ic ? strncasecmp(p, r->path, r->path_len) == 0
                   : memcmp(p, r->path, r->path_len) == 0) &&
               (n == r->path_len || p[r->path_len] == '/');
    case RM_PATH_REGEX:
        return re_full_match(r->path_re, p, n);
    }
    return false;
}

/* Length of <path> up to its query string or fragment. */
static size_t path_only_len(struct rm_str path)
{
    for (size_t i = 0; i < path.len; i++) {
        if (path.p[i] == '?' || path.p[i] == '#') return i;
    }
    return path.len;
}

/* Does <r> match?  <*path_only> is path_only_len(path), or SIZE_MAX until a route needs it
 * (then set here): a plain prefix matches on the whole path (see struct rm_route). */
static bool route_matches(const struct rm_route *r, const struct rm_headers *req,
                          struct rm_str path, size_t *path_only)
{
    size_t n = path.len;
    if (!r->prefix_plain) {
        if (*path_only == SIZE_MAX) *path_only = path_only_len(path);
        n = *path_only;
    }
    if (!path_matches(r, path.p, n)) return false;
    if (r->grpc_only && !is_grpc(req)) return false;
    for (size_t i = 0; i < r->n_headers; i++) {
        if (!rm_header_match_eval(&r->headers[i], req)) return false;
    }
    for (size_t i = 0; i < r->n_query; i++) {
        if (!query_matches(&r->query[i], path)) return false;
    }
    return true;
}

const struct rm_route *rm_route_match(const struct rm_vhost *vh, const struct rm_headers *req)
{
    if (!vh) return NULL;
    struct rm_str path = rm_headers_get_key(req, RM_HK_PATH);
    if (!path.p) path = (struct rm_str){"", 0}; /* as Envoy's getPathValue() */
    size_t path_only = SIZE_MAX;                /* not scanned yet: see route_matches */
    for (size_t i = 0; i < vh->n_routes; i++) {
        if (route_matches(&vh->routes[i], req, path, &path_only)) return &vh->routes[i];
    }
    return NULL;
}

const struct rm_weighted_cluster *rm_route_pick_weighted(const struct rm_route *r, uint64_t rnd)
{
    if (!r || r->n_weighted == 0 || r->total_weight == 0) return NULL;
    uint64_t x = rnd % r->total_weight, end = 0;
    for (size_t i = 0; i < r->n_weighted; i++) {
        end += r->weighted[i].weight;
        if (x < end) return &r->weighted[i];
    }
    return &r->weighted[r->n_weighted - 1]; /* unreachable: the weights sum to total_weight */
}

/* ---- header mutations --------------------------------------------------------------------- */

/* Envoy's HeaderParser::evaluateHeaders: removals; then every add decides against the headers
 * as they are now; then all overwrites (in order), then all appends (in order). */
static void apply(struct rm_headers *h, char *const *rm, size_t n_rm,
                  const struct rm_header_add *add, size_t n_add)
{
    for (size_t i = 0; i < n_rm; i++)
        rm_headers_remove(h, rm[i], strlen(rm[i]));
    if (n_add == 0) return;
    uint64_t small = 0;
    uint8_t *on = n_add > 64 ? rm_arena_alloc(h->arena, n_add) : NULL;
    for (size_t i = 0; i < n_add; i++) {
        bool exists = rm_headers_find(h, add[i].name, add[i].name_len) >= 0;
        bool yes = add[i].action != RM_OVERWRITE_IF_EXISTS || exists;
        if (add[i].action == RM_ADD_IF_ABSENT) yes = !exists;
        if (on)
            on[i] = yes;
        else if (yes)
            small |= UINT64_C(1) << i;
    }
#define ON(i) (on ? on[i] != 0 : ((small >> (i)) & 1) != 0)
    for (size_t i = 0; i < n_add; i++) {
        if (ON(i) && (add[i].action == RM_OVERWRITE_IF_EXISTS ||
                      add[i].action == RM_OVERWRITE_IF_EXISTS_OR_ADD))
            rm_headers_set(h, add[i].name, add[i].name_len, add[i].value, add[i].value_len);
    }
    for (size_t i = 0; i < n_add; i++) {
        if (ON(i) &&
            (add[i].action == RM_APPEND_IF_EXISTS_OR_ADD || add[i].action == RM_ADD_IF_ABSENT))
            rm_headers_add(h, add[i].name, add[i].name_len, add[i].value, add[i].value_len);
    }
#undef ON
}

void rm_header_ops_run_request(const struct rm_header_ops *ops, struct rm_headers *h)
{
    apply(h, ops->req_remove, ops->n_req_remove, ops->req_add, ops->n_req_add);
}

void rm_header_ops_run_response(const struct rm_header_ops *ops, struct rm_headers *h)
{
    apply(h, ops->resp_remove, ops->n_resp_remove, ops->resp_add, ops->n_resp_add);
}
