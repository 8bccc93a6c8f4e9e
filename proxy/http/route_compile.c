/* Route table compilation, the leaf pieces: field paths, unknown-field checks, regexes, string
 * and header/query matchers, header mutations, durations.  Every error names the field path. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proxy/http/route_int.h"

/* ---- small helpers ------------------------------------------------------------------------ */

void rm_rt_path(char *out, size_t n, const char *base, const char *fmt, ...)
{
    char field[RM_RT_PATH];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(field, sizeof(field), fmt, ap);
    va_end(ap);
    if (!base || !*base)
        snprintf(out, n, "%s", field);
    else if (field[0] == '[')
        snprintf(out, n, "%s%s", base, field);
    else
        snprintf(out, n, "%s.%s", base, field);
}

void *rm_rt_alloc(struct rm_route_ctx *c, size_t n)
{
    void *p = rm_arena_alloc(&c->t->arena, n ? n : 1);
    memset(p, 0, n ? n : 1);
    return p;
}

static char lower(char ch)
{
    return (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : ch;
}

char *rm_rt_strdup(struct rm_route_ctx *c, const char *s, size_t n, bool low)
{
    char *p = rm_arena_strndup(&c->t->arena, s, n);
    if (low) {
        for (size_t i = 0; i < n; i++)
            p[i] = lower(p[i]);
    }
    return p;
}

char *rm_rt_strdup_opt(struct rm_route_ctx *c, const char *s)
{
    return (s && *s) ? rm_rt_strdup(c, s, strlen(s), false) : NULL;
}

bool rm_rt_header_name_ok(const char *s)
{
    if (!s || !*s) return false;
    for (; *s; s++) {
        if (*s == '\r' || *s == '\n') return false;
    }
    return true;
}

static bool header_value_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\0' || s[i] == '\r' || s[i] == '\n') return false;
    }
    return true;
}

/* ---- unknown fields ----------------------------------------------------------------------- */

/* Envoy fields absent from remora's .proto subset (numbers from data-plane-api), so that a
 * rejection names the field the user wrote rather than a bare number. */
struct known_field {
    uint32_t num;
    const char *name;
};

static const struct known_field rc_fields[] = {
    {9, "vhds"},
    {12, "cluster_specifier_plugins"},
    {15, "ignore_path_parameters_in_path_matching"},
    {17, "metadata"},
};
static const struct known_field vh_fields[] = {
    {5, "virtual_clusters"},
    {6, "rate_limits"},
    {8, "cors"},
    {17, "hedge_policy"},
    {20, "retry_policy_typed_config"},
    {21, "matcher"},
    {23, "include_is_timeout_retry_header"},
    {24, "metadata"},
};
static const struct known_field route_fields[] = {
    {15, "tracing"},
    {17, "filter_action"},
    {18, "non_forwarding_action"},
};
static const struct known_field match_fields[] = {
    {11, "tls_context"},       {12, "connect_matcher"}, {13, "dynamic_metadata"},
    {15, "path_match_policy"}, {17, "cookies"},
};
static const struct known_field action_fields[] = {
    {13, "rate_limits"},
    {14, "include_vh_rate_limits"},
    {15, "hash_policy"},
    {17, "cors"},
    {25, "upgrade_configs"},
    {26, "internal_redirect_action"},
    {27, "hedge_policy"},
    {31, "max_internal_redirects"},
    {33, "retry_policy_typed_config"},
    {34, "internal_redirect_policy"},
    {37, "cluster_specifier_plugin"},
    {38, "append_x_forwarded_host"},
    {39, "inline_cluster_specifier_plugin"},
    {40, "early_data_policy"},
    {41, "path_rewrite_policy"},
    {45, "path_rewrite"},
};
static const struct known_field weighted_fields[] = {{5, "use_hash_policy"}};
static const struct known_field string_fields[] = {{8, "custom"}};
static const struct known_field datasource_fields[] = {{5, "watched_directory"}};

#define KNOWN(d, a)                                                                                \
    {                                                                                              \
        &(d), (a), sizeof(a) / sizeof((a)[0])                                                      \
    }
static const struct {
    const ProtobufCMessageDescriptor *d;
    const struct known_field *f;
    size_t n;
} known_tables[] = {
    KNOWN(envoy__config__route__v3__route_configuration__descriptor, rc_fields),
    KNOWN(envoy__config__route__v3__virtual_host__descriptor, vh_fields),
    KNOWN(envoy__config__route__v3__route__descriptor, route_fields),
    KNOWN(envoy__config__route__v3__route_match__descriptor, match_fields),
    KNOWN(envoy__config__route__v3__route_action__descriptor, action_fields),
    KNOWN(envoy__config__route__v3__weighted_cluster__descriptor, weighted_fields),
    KNOWN(envoy__type__matcher__v3__string_matcher__descriptor, string_fields),
    KNOWN(envoy__config__core__v3__data_source__descriptor, datasource_fields),
};

static const char *known_name(const ProtobufCMessageDescriptor *d, uint32_t num)
{
    for (size_t i = 0; i < sizeof(known_tables) / sizeof(known_tables[0]); i++) {
        if (known_tables[i].d != d) continue;
        for (size_t j = 0; j < known_tables[i].n; j++) {
            if (known_tables[i].f[j].num == num) return known_tables[i].f[j].name;
        }
    }
    return NULL;
}

int rm_rt_check_unknown(const ProtobufCMessage *m, const char *path, struct rm_error *err)
{
    if (!m || m->n_unknown_fields == 0) return RM_OK;
    uint32_t num = m->unknown_fields[0].tag;
    const char *name = known_name(m->descriptor, num);
    char p[RM_RT_PATH];
    if (name) {
        RT_PATH(p, path, "%s", name);
        return rm_error_set(err, "%s: not supported by remora", p);
    }
    return rm_error_set(err, "%s: unsupported field #%u of %s (not supported by remora)",
                        (path && *path) ? path : "(top)", num, m->descriptor->name);
}

/* ---- regexes ------------------------------------------------------------------------------ */

static int keep_code(struct rm_route_ctx *c, pcre2_code *re)
{
    struct rm_route_priv *t = c->t;
    if (t->n_codes == t->cap_codes) {
        size_t cap = t->cap_codes ? t->cap_codes * 2 : 8;
        pcre2_code **v = realloc(t->codes, cap * sizeof(*v));
        if (!v) return RM_ERR;
        t->codes = v;
        t->cap_codes = cap;
    }
    t->codes[t->n_codes++] = re;
    return RM_OK;
}

/* RE2 (Envoy's engine) and PCRE2 agree on the common syntax: literals, classes, \d \w \s,
 * repetition, groups, alternation, (?i).  Differences: PCRE2 also accepts backreferences and
 * lookaround (RE2 rejects them); RE2's \C, \pN and \z work differently; matching is bytewise
 * here (no PCRE2_UTF), UTF-8 in RE2.  Anchoring at both ends gives RE2::FullMatch. */
int rm_rt_regex(struct rm_route_ctx *c, const Envoy__Type__Matcher__V3__RegexMatcher *rx,
                const char *path, struct pcre2_real_code_8 **out)
{
    char p[RM_RT_PATH];
    if (rm_rt_check_unknown(&rx->base, path, c->err) != RM_OK) return RM_ERR;
    if (rx->engine_type_case == ENVOY__TYPE__MATCHER__V3__REGEX_MATCHER__ENGINE_TYPE_GOOGLE_RE2) {
        RT_PATH(p, path, "google_re2"); /* deprecated, max_program_size has no PCRE2 meaning */
        if (rm_rt_check_unknown(&rx->google_re2->base, p, c->err) != RM_OK) return RM_ERR;
    }
    RT_PATH(p, path, "regex");
    if (!rx->regex || !*rx->regex) return rm_error_set(c->err, "%s: must not be empty", p);
    int code;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)rx->regex, strlen(rx->regex),
                                   PCRE2_ANCHORED | PCRE2_ENDANCHORED | PCRE2_DOLLAR_ENDONLY |
                                       PCRE2_NEVER_BACKSLASH_C,
                                   &code, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        if (pcre2_get_error_message(code, msg, sizeof(msg)) < 0)
            snprintf((char *)msg, sizeof(msg), "error %d", code);
        return rm_error_set(c->err, "%s: invalid regex \"%s\": %s (at offset %zu)", p, rx->regex,
                            (const char *)msg, (size_t)off);
    }
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* the interpreter is the fallback */
    if (keep_code(c, re) != RM_OK) {
        pcre2_code_free(re);
        return rm_error_set(c->err, "%s: out of memory", p);
    }
    *out = re;
    return RM_OK;
}

/* ---- string matchers ---------------------------------------------------------------------- */

/* A non-empty literal pattern (Envoy's prefix/suffix/contains have min_len 1). */
static int literal(struct rm_route_ctx *c, enum rm_str_match_kind kind, const char *s, bool ic,
                   bool nonempty, const char *path, struct rm_str_match *out)
{
    size_t n = strlen(s);
    if (nonempty && n == 0) return rm_error_set(c->err, "%s: must not be empty", path);
    out->kind = kind;
    out->ignore_case = ic;
    out->s = rm_rt_strdup(c, s, n, ic);
    out->len = n;
    return RM_OK;
}

int rm_rt_str_matcher(struct rm_route_ctx *c, const Envoy__Type__Matcher__V3__StringMatcher *sm,
                      const char *path, struct rm_str_match *out)
{
    char p[RM_RT_PATH];
    if (rm_rt_check_unknown(&sm->base, path, c->err) != RM_OK) return RM_ERR;
    memset(out, 0, sizeof(*out));
    bool ic = sm->ignore_case;
    switch (sm->match_pattern_case) {
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_EXACT:
        RT_PATH(p, path, "exact");
        return literal(c, RM_STR_EXACT, sm->exact, ic, false, p, out);
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_PREFIX:
        RT_PATH(p, path, "prefix");
        return literal(c, RM_STR_PREFIX, sm->prefix, ic, true, p, out);
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SUFFIX:
        RT_PATH(p, path, "suffix");
        return literal(c, RM_STR_SUFFIX, sm->suffix, ic, true, p, out);
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_CONTAINS:
        RT_PATH(p, path, "contains");
        return literal(c, RM_STR_CONTAINS, sm->contains, ic, true, p, out);
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SAFE_REGEX:
        if (ic) {
            RT_PATH(p, path, "ignore_case");
            return rm_error_set(c->err, "%s: ignore_case has no effect for safe_regex", p);
        }
        RT_PATH(p, path, "safe_regex");
        out->kind = RM_STR_REGEX;
        return rm_rt_regex(c, sm->safe_regex, p, &out->re);
    default:
        return rm_error_set(
            c->err, "%s: one of exact, prefix, suffix, contains or safe_regex is required", path);
    }
}

/* ---- header and query matchers ------------------------------------------------------------ */

/* The legacy exact_match/prefix_match/... fields are deprecated in Envoy's API but still sent by
 * control planes: reading them is deliberate. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
int rm_rt_header_matcher(struct rm_route_ctx *c, const Envoy__Config__Route__V3__HeaderMatcher *hm,
                         const char *path, struct rm_header_match *out)
{
    char p[RM_RT_PATH];
    if (rm_rt_check_unknown(&hm->base, path, c->err) != RM_OK) return RM_ERR;
    memset(out, 0, sizeof(*out));
    if (!rm_rt_header_name_ok(hm->name)) {
        RT_PATH(p, path, "name");
        return rm_error_set(c->err, "%s: a valid header name is required", p);
    }
    out->name_len = strlen(hm->name);
    out->name = rm_rt_strdup(c, hm->name, out->name_len, true);
    out->key = (uint8_t)rm_hkey_of(out->name, out->name_len);
    out->pseudo = out->name[0] == ':' && out->key != RM_HK_UNKNOWN;
    out->invert = hm->invert_match;
    out->treat_missing_as_empty = hm->treat_missing_header_as_empty;
    struct rm_str_match *m = &out->m;
    switch (hm->header_match_specifier_case) {
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_EXACT_MATCH:
        RT_PATH(p, path, "exact_match");
        /* Envoy: an empty exact_match accepts any value of a present header */
        return literal(c, *hm->exact_match ? RM_STR_EXACT : RM_STR_PREFIX, hm->exact_match, false,
                       false, p, m);
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_PREFIX_MATCH:
        RT_PATH(p, path, "prefix_match");
        return literal(c, RM_STR_PREFIX, hm->prefix_match, false, true, p, m);
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_SUFFIX_MATCH:
        RT_PATH(p, path, "suffix_match");
        return literal(c, RM_STR_SUFFIX, hm->suffix_match, false, true, p, m);
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_CONTAINS_MATCH:
        RT_PATH(p, path, "contains_match");
        return literal(c, RM_STR_CONTAINS, hm->contains_match, false, true, p, m);
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_SAFE_REGEX_MATCH:
        RT_PATH(p, path, "safe_regex_match");
        m->kind = RM_STR_REGEX;
        return rm_rt_regex(c, hm->safe_regex_match, p, &m->re);
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_RANGE_MATCH:
        RT_PATH(p, path, "range_match");
        if (rm_rt_check_unknown(&hm->range_match->base, p, c->err) != RM_OK) return RM_ERR;
        m->kind = RM_STR_RANGE;
        m->range_start = hm->range_match->start;
        m->range_end = hm->range_match->end;
        return RM_OK;
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_PRESENT_MATCH:
        m->kind = RM_STR_PRESENT;
        out->present_match_value = hm->present_match;
        return RM_OK;
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_STRING_MATCH:
        RT_PATH(p, path, "string_match");
        return rm_rt_str_matcher(c, hm->string_match, p, m);
    default: /* Envoy: no specifier = the header must be present */
        m->kind = RM_STR_PRESENT;
        out->present_match_value = true;
        return RM_OK;
    }
}

#pragma GCC diagnostic pop

int rm_rt_query_matcher(struct rm_route_ctx *c,
                        const Envoy__Config__Route__V3__QueryParameterMatcher *qm, const char *path,
                        struct rm_query_match *out)
{
    char p[RM_RT_PATH];
    if (rm_rt_check_unknown(&qm->base, path, c->err) != RM_OK) return RM_ERR;
    memset(out, 0, sizeof(*out));
    if (!qm->name || !*qm->name) {
        RT_PATH(p, path, "name");
        return rm_error_set(c->err, "%s: must not be empty", p);
    }
    out->name_len = strlen(qm->name);
    out->name = rm_rt_strdup(c, qm->name, out->name_len, false);
    switch (qm->query_parameter_match_specifier_case) {
    case ENVOY__CONFIG__ROUTE__V3__QUERY_PARAMETER_MATCHER__QUERY_PARAMETER_MATCH_SPECIFIER_STRING_MATCH:
        RT_PATH(p, path, "string_match");
        return rm_rt_str_matcher(c, qm->string_match, p, &out->m);
    case ENVOY__CONFIG__ROUTE__V3__QUERY_PARAMETER_MATCHER__QUERY_PARAMETER_MATCH_SPECIFIER_PRESENT_MATCH:
        out->m.kind = RM_STR_PRESENT;
        out->present = qm->present_match;
        return RM_OK;
    default: /* Envoy: no matcher = the parameter must be present, any value */
        out->m.kind = RM_STR_PRESENT;
        out->present = true;
        return RM_OK;
    }
}

/* ---- header mutations --------------------------------------------------------------------- */

/* Envoy refuses to add, overwrite or remove pseudo-headers and Host. */
static bool modifiable(const char *name)
{
    return name[0] != ':' && strcasecmp(name, "host") != 0;
}

/* Copy a header value into the table, turning "%%" into "%".  Any other '%' starts one of
 * Envoy's format specifiers (%REQ(...)%, %DOWNSTREAM_REMOTE_ADDRESS%...), which remora does not
 * implement: an error rather than a literal that would differ from Envoy's output. */
static int header_value(struct rm_route_ctx *c, const char *v, size_t n, const char *path,
                        struct rm_header_add *out)
{
    if (!header_value_ok(v, n))
        return rm_error_set(c->err, "%s: header values may not contain NUL, CR or LF", path);
    char *dst = rm_rt_alloc(c, n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] == '%') {
            if (i + 1 < n && v[i + 1] == '%') {
                dst[k++] = '%';
                i++;
                continue;
            }
            return rm_error_set(c->err,
                                "%s: format specifiers (%%...%%) are not supported by remora "
                                "(write %%%% for a literal %%)",
                                path);
        }
        dst[k++] = v[i];
    }
    dst[k] = 0;
    out->value = dst;
    out->value_len = k;
    return RM_OK;
}

static int append_action(struct rm_route_ctx *c,
                         const Envoy__Config__Core__V3__HeaderValueOption *o, const char *path,
                         enum rm_append_action *out)
{
    char p[RM_RT_PATH];
    if (o->append) {
        RT_PATH(p, path, "append");
        if (rm_rt_check_unknown(&o->append->base, p, c->err) != RM_OK) return RM_ERR;
        if (o->append_action != 0)
            return rm_error_set(c->err, "%s: both append and append_action are set", p);
        /* deprecated BoolValue: true = append, false = overwrite */
        *out = o->append->value ? RM_APPEND_IF_EXISTS_OR_ADD : RM_OVERWRITE_IF_EXISTS_OR_ADD;
        return RM_OK;
    }
    if ((unsigned)o->append_action > RM_OVERWRITE_IF_EXISTS) {
        RT_PATH(p, path, "append_action");
        return rm_error_set(c->err, "%s: unknown value %d", p, (int)o->append_action);
    }
    *out = (enum rm_append_action)o->append_action;
    return RM_OK;
}

/* One HeaderValueOption; *skip when Envoy would never add it (empty, !keep_empty_value). */
static int header_add(struct rm_route_ctx *c, const Envoy__Config__Core__V3__HeaderValueOption *o,
                      const char *path, struct rm_header_add *out, bool *skip)
{
    char p[RM_RT_PATH];
    if (rm_rt_check_unknown(&o->base, path, c->err) != RM_OK) return RM_ERR;
    const Envoy__Config__Core__V3__HeaderValue *hv = o->header;
    RT_PATH(p, path, "header");
    if (!hv) return rm_error_set(c->err, "%s: required", p);
    if (rm_rt_check_unknown(&hv->base, p, c->err) != RM_OK) return RM_ERR;
    char kp[RM_RT_PATH];
    RT_PATH(kp, p, "key");
    if (!rm_rt_header_name_ok(hv->key))
        return rm_error_set(c->err, "%s: a valid header name is required", kp);
    if (!modifiable(hv->key))
        return rm_error_set(c->err, "%s: ':'-prefixed or host headers may not be modified (\"%s\")",
                            kp, hv->key);
    out->name_len = strlen(hv->key);
    out->name = rm_rt_strdup(c, hv->key, out->name_len, true);
    bool raw = hv->raw_value.len > 0;
    if (raw && *hv->value)
        return rm_error_set(c->err, "%s: only one of value and raw_value may be set", p);
    RT_PATH(kp, p, raw ? "raw_value" : "value");
    if (raw &&
        header_value(c, (const char *)hv->raw_value.data, hv->raw_value.len, kp, out) != RM_OK)
        return RM_ERR;
    if (!raw && header_value(c, hv->value, strlen(hv->value), kp, out) != RM_OK) return RM_ERR;
    *skip = out->value_len == 0 && !o->keep_empty_value;
    return append_action(c, o, path, &out->action);
}

int rm_rt_header_adds(struct rm_route_ctx *c, Envoy__Config__Core__V3__HeaderValueOption *const *v,
                      size_t n, const char *path, const char *field, struct rm_header_add **out,
                      size_t *n_out)
{
    char p[RM_RT_PATH];
    *out = n ? rm_rt_alloc(c, n * sizeof(**out)) : NULL;
    *n_out = 0;
    for (size_t i = 0; i < n; i++) {
        RT_PATH(p, path, "%s[%zu]", field, i);
        bool skip = false;
        if (header_add(c, v[i], p, &(*out)[*n_out], &skip) != RM_OK) return RM_ERR;
        if (!skip) (*n_out)++;
    }
    return RM_OK;
}

static int remove_list(struct rm_route_ctx *c, char *const *v, size_t n, const char *path,
                       const char *field, char ***out, size_t *n_out)
{
    char p[RM_RT_PATH];
    *out = n ? rm_rt_alloc(c, n * sizeof(**out)) : NULL;
    *n_out = n;
    for (size_t i = 0; i < n; i++) {
        RT_PATH(p, path, "%s[%zu]", field, i);
        if (!rm_rt_header_name_ok(v[i]))
            return rm_error_set(c->err, "%s: a valid header name is required", p);
        if (!modifiable(v[i]))
            return rm_error_set(
                c->err, "%s: ':'-prefixed or host headers may not be removed (\"%s\")", p, v[i]);
        (*out)[i] = rm_rt_strdup(c, v[i], strlen(v[i]), true);
    }
    return RM_OK;
}

int rm_rt_header_ops(struct rm_route_ctx *c, const struct rm_rt_hdr_lists *l, const char *path,
                     struct rm_header_ops *out)
{
    memset(out, 0, sizeof(*out));
    if (rm_rt_header_adds(c, l->req_add, l->n_req_add, path, "request_headers_to_add",
                          &out->req_add, &out->n_req_add) != RM_OK ||
        remove_list(c, l->req_rm, l->n_req_rm, path, "request_headers_to_remove", &out->req_remove,
                    &out->n_req_remove) != RM_OK ||
        rm_rt_header_adds(c, l->resp_add, l->n_resp_add, path, "response_headers_to_add",
                          &out->resp_add, &out->n_resp_add) != RM_OK ||
        remove_list(c, l->resp_rm, l->n_resp_rm, path, "response_headers_to_remove",
                    &out->resp_remove, &out->n_resp_remove) != RM_OK)
        return RM_ERR;
    return RM_OK;
}

/* ---- durations ---------------------------------------------------------------------------- */

int rm_rt_duration_ms(const Google__Protobuf__Duration *d, const char *path, uint32_t *ms,
                      struct rm_error *err)
{
    if (rm_rt_check_unknown(&d->base, path, err) != RM_OK) return RM_ERR;
    if (d->seconds < 0 || d->nanos < 0 || d->nanos > 999999999)
        return rm_error_set(err, "%s: must be a non-negative duration", path);
    if (d->seconds > (int64_t)(UINT32_MAX / 1000)) {
        *ms = UINT32_MAX;
        return RM_OK;
    }
    uint64_t v = (uint64_t)d->seconds * 1000 + (uint64_t)d->nanos / 1000000;
    if (v == 0 && d->nanos > 0)
        v = 1; /* 0 means "disabled": never let a tiny timeout turn into none */
    *ms = v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
    return RM_OK;
}
