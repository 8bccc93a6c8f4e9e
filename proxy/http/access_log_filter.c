/* Access log filters (see access_log_filter.h). */
#include "proxy/http/access_log_filter.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/config/accesslog/v3/accesslog.pb-c.h"
#include "filters/percent.h"
#include "proxy/http/access_log.h"
#include "proxy/http/hcm.h"
#include "proxy/http/headers.h"
#include "proxy/http/route.h"
#include "proxy/upstream/pool.h"

typedef Envoy__Config__Accesslog__V3__AccessLogFilter FilterPb;
typedef Envoy__Config__Accesslog__V3__ComparisonFilter ComparisonPb;
typedef Envoy__Config__Accesslog__V3__RuntimeFilter RuntimePb;
typedef Envoy__Config__Accesslog__V3__ExtensionFilter ExtensionPb;

/* Field paths: deep and/or nesting makes them long; longer ones are cut (the error still
 * names the leaf field). */
#define FIELD_PATH_LEN 1024
/* and/or nesting limit (pbjson and the unknown-field check bound the input too). */
#define MAX_DEPTH 32

enum kind {
    K_CONST,    /* traceable, log_type: decided at compile time */
    K_NOT_HC,   /* not_health_check */
    K_STATUS,   /* status_code_filter */
    K_DURATION, /* duration_filter */
    K_RUNTIME,
    K_AND,
    K_OR,
    K_HEADER,
    K_FLAGS,
    K_GRPC,
};

struct node {
    enum kind kind;
    bool result;                   /* K_CONST */
    bool exclude;                  /* K_GRPC */
    int op;                        /* K_STATUS, K_DURATION: ComparisonFilter.Op */
    uint64_t value;                /* K_STATUS, K_DURATION */
    struct rm_fraction sample;     /* K_RUNTIME: percent_sampled */
    bool independent;              /* K_RUNTIME: use_independent_randomness */
    uint32_t mask;                 /* K_FLAGS (0: any flag), K_GRPC: one bit per flag/status */
    struct rm_header_match header; /* K_HEADER (memory in the filter's parts) */
    struct node *kids;             /* K_AND, K_OR */
    size_t n_kids;
};

struct rm_alog_filter {
    struct node root;
    struct rm_route_parts *parts; /* header matchers' memory; NULL without header_filter */
};

/* Envoy's response flag short names, as ResponseFlagFilter.flags accepts them (its validation
 * rule, in this order); a flag's bit is its index. */
static const char *const flag_names[] = {
    "LH",   "UH",   "UT",   "LR",   "UR", "UF",  "UC", "UO", "NR",  "DI",
    "FI",   "RL",   "UAEX", "RLSE", "DC", "URX", "SI", "IH", "DPE", "UMSDR",
    "RFCF", "NFCF", "DT",   "UPE",  "NC", "OM",  "DF", "DO", "DR",  "UDO",
};
#define N_FLAGS (sizeof(flag_names) / sizeof(flag_names[0]))
_Static_assert(N_FLAGS <= 32, "one bit per flag in a uint32_t");

#define GRPC_MAX_STATUS 16 /* UNAUTHENTICATED: Envoy's MaximumKnown */

/* ---- compiling ---------------------------------------------------------------------------- */

struct ctx {
    struct rm_alog_filter *f;
    struct rm_error *err;
};

static int compile(struct ctx *c, struct node *n, const FilterPb *pb, const char *path, int depth);

static void node_dispose(struct node *n)
{
    for (size_t i = 0; i < n->n_kids; i++)
        node_dispose(&n->kids[i]);
    free(n->kids);
    n->kids = NULL;
    n->n_kids = 0;
}

void rm_alog_filter_free(struct rm_alog_filter *f)
{
    if (!f) return;
    node_dispose(&f->root);
    rm_route_parts_free(f->parts);
    free(f);
}

/* ComparisonFilter <cmp> at <path> (the comparison field itself). */
static int compile_comparison(struct ctx *c, struct node *n, const ComparisonPb *cmp,
                              const char *path)
{
    if (!cmp) return rm_error_set(c->err, "%s: required", path);
    switch (cmp->op) {
    case ENVOY__CONFIG__ACCESSLOG__V3__COMPARISON_FILTER__OP__EQ:
    case ENVOY__CONFIG__ACCESSLOG__V3__COMPARISON_FILTER__OP__GE:
    case ENVOY__CONFIG__ACCESSLOG__V3__COMPARISON_FILTER__OP__LE:
        break;
    default:
        return rm_error_set(c->err, "%s.op: unknown operator %d (EQ, GE or LE)", path,
                            (int)cmp->op);
    }
    if (!cmp->value) return rm_error_set(c->err, "%s.value: required", path);
    n->op = (int)cmp->op;
    /* value.runtime_key would name a runtime override: remora has no runtime, so the default
     * value is the value (as Envoy's when the key is absent from its runtime). */
    n->value = cmp->value->default_value;
    return RM_OK;
}

static int compile_runtime(struct ctx *c, struct node *n, const RuntimePb *rt, const char *path)
{
    char p[FIELD_PATH_LEN];
    if (!rt->runtime_key || !rt->runtime_key[0])
        return rm_error_set(c->err, "%s.runtime_key: required (a non-empty string)", path);
    n->kind = K_RUNTIME;
    n->independent = rt->use_independent_randomness;
    /* runtime_key would name an override of the numerator: remora has no runtime */
    snprintf(p, sizeof(p), "%s.percent_sampled", path);
    return rm_fraction_from_pb(rt->percent_sampled, p, &n->sample, c->err); /* unset: 0 % */
}

/* and_filter / or_filter: filters[] at <path> (the and_filter / or_filter field). */
static int compile_list(struct ctx *c, struct node *n, FilterPb *const *v, size_t nv,
                        const char *path, int depth)
{
    if (nv < 2)
        return rm_error_set(c->err, "%s.filters: at least 2 filters are required (%zu given)", path,
                            nv);
    n->kids = calloc(nv, sizeof(*n->kids));
    if (!n->kids) abort();
    char p[FIELD_PATH_LEN];
    for (size_t i = 0; i < nv; i++) {
        snprintf(p, sizeof(p), "%s.filters[%zu]", path, i);
        n->n_kids++; /* counted first: a failed kid is disposed with the rest */
        if (compile(c, &n->kids[i], v[i], p, depth + 1)) return RM_ERR;
    }
    return RM_OK;
}

static int compile_header(struct ctx *c, struct node *n,
                          const Envoy__Config__Accesslog__V3__HeaderFilter *h, const char *path)
{
    char p[FIELD_PATH_LEN];
    snprintf(p, sizeof(p), "%s.header", path);
    if (!h->header) return rm_error_set(c->err, "%s: required", p);
    if (!c->f->parts) c->f->parts = rm_route_parts_new();
    n->kind = K_HEADER;
    return rm_route_parts_header_matcher(c->f->parts, h->header, p, &n->header, c->err);
}

static int flag_index(const char *s, size_t len)
{
    for (size_t i = 0; i < N_FLAGS; i++) {
        if (strlen(flag_names[i]) == len && memcmp(flag_names[i], s, len) == 0) return (int)i;
    }
    return -1;
}

static int compile_flags(struct ctx *c, struct node *n,
                         const Envoy__Config__Accesslog__V3__ResponseFlagFilter *rf,
                         const char *path)
{
    n->kind = K_FLAGS;
    for (size_t i = 0; i < rf->n_flags; i++) {
        const char *s = rf->flags[i] ? rf->flags[i] : "";
        int b = flag_index(s, strlen(s));
        if (b < 0)
            return rm_error_set(c->err,
                                "%s.flags[%zu]: unknown response flag \"%.40s\" (Envoy's: LH UH UT "
                                "LR UR UF UC UO NR DI FI RL UAEX RLSE DC URX SI IH DPE UMSDR RFCF "
                                "NFCF DT UPE NC OM DF DO DR UDO)",
                                path, i, s);
        n->mask |= 1u << b;
    }
    return RM_OK;
}

static int compile_grpc(struct ctx *c, struct node *n,
                        const Envoy__Config__Accesslog__V3__GrpcStatusFilter *g, const char *path)
{
    n->kind = K_GRPC;
    n->exclude = g->exclude;
    for (size_t i = 0; i < g->n_statuses; i++) {
        int s = (int)g->statuses[i];
        if (s < 0 || s > GRPC_MAX_STATUS)
            return rm_error_set(c->err, "%s.statuses[%zu]: unknown gRPC status %d (0..16)", path, i,
                                s);
        n->mask |= 1u << s;
    }
    return RM_OK;
}

/* remora writes one log record per stream, when it ends: Envoy's DownstreamEnd.  The result is
 * therefore known now. */
static int compile_log_type(struct ctx *c, struct node *n,
                            const Envoy__Config__Accesslog__V3__LogTypeFilter *lt, const char *path)
{
    bool found = false;
    for (size_t i = 0; i < lt->n_types; i++) {
        int t = (int)lt->types[i];
        if (t < ENVOY__DATA__ACCESSLOG__V3__ACCESS_LOG_TYPE__NotSet ||
            t > ENVOY__DATA__ACCESSLOG__V3__ACCESS_LOG_TYPE__UdpSessionEnd)
            return rm_error_set(c->err, "%s.types[%zu]: unknown access log type %d", path, i, t);
        if (t == ENVOY__DATA__ACCESSLOG__V3__ACCESS_LOG_TYPE__DownstreamEnd) found = true;
    }
    n->kind = K_CONST;
    n->result = lt->exclude ? !found : found;
    return RM_OK;
}

static int reject_extension(struct ctx *c, const ExtensionPb *e, const char *path)
{
    const char *url = e->typed_config && e->typed_config->type_url ? e->typed_config->type_url : "";
    const char *slash = strrchr(url, '/');
    const char *type = slash ? slash + 1 : url;
    return rm_error_set(c->err,
                        "%s: extension filter \"%.100s\"%s%.200s%s is not supported by remora (it "
                        "has no access log extension filters)",
                        path, e->name ? e->name : "", *type ? " (type " : "", type,
                        *type ? ")" : "");
}

static const char one_of_msg[] =
    "one of status_code_filter, duration_filter, not_health_check_filter, traceable_filter, "
    "runtime_filter, and_filter, or_filter, header_filter, response_flag_filter, "
    "grpc_status_filter, log_type_filter is required";

/* One AccessLogFilter at <path> into <n> (zeroed).  On error <n> may hold kids: the caller
 * disposes of it. */
static int compile(struct ctx *c, struct node *n, const FilterPb *pb, const char *path, int depth)
{
    char p[FIELD_PATH_LEN];
    if (!pb) return rm_error_set(c->err, "%s: %s", path, one_of_msg);
    if (depth > MAX_DEPTH)
        return rm_error_set(c->err, "%s: and_filter/or_filter nested deeper than %d", path,
                            MAX_DEPTH);
#define SUB(field) (snprintf(p, sizeof(p), "%s." field, path), p)
    switch (pb->filter_specifier_case) {
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_STATUS_CODE_FILTER:
        n->kind = K_STATUS;
        return compile_comparison(c, n, pb->status_code_filter->comparison,
                                  SUB("status_code_filter.comparison"));
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_DURATION_FILTER:
        n->kind = K_DURATION;
        return compile_comparison(c, n, pb->duration_filter->comparison,
                                  SUB("duration_filter.comparison"));
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_NOT_HEALTH_CHECK_FILTER:
        n->kind = K_NOT_HC; /* envoy.filters.http.health_check marks health checks */
        return RM_OK;
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_TRACEABLE_FILTER:
        n->kind = K_CONST; /* remora does no tracing: no request is traced */
        n->result = false;
        return RM_OK;
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_RUNTIME_FILTER:
        return compile_runtime(c, n, pb->runtime_filter, SUB("runtime_filter"));
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_AND_FILTER:
        n->kind = K_AND;
        return compile_list(c, n, pb->and_filter->filters, pb->and_filter->n_filters,
                            SUB("and_filter"), depth);
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_OR_FILTER:
        n->kind = K_OR;
        return compile_list(c, n, pb->or_filter->filters, pb->or_filter->n_filters,
                            SUB("or_filter"), depth);
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_HEADER_FILTER:
        return compile_header(c, n, pb->header_filter, SUB("header_filter"));
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_RESPONSE_FLAG_FILTER:
        return compile_flags(c, n, pb->response_flag_filter, SUB("response_flag_filter"));
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_GRPC_STATUS_FILTER:
        return compile_grpc(c, n, pb->grpc_status_filter, SUB("grpc_status_filter"));
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_LOG_TYPE_FILTER:
        return compile_log_type(c, n, pb->log_type_filter, SUB("log_type_filter"));
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_METADATA_FILTER:
        return rm_error_set(c->err,
                            "%s: metadata filters are not supported by remora (it has no "
                            "dynamic metadata)",
                            SUB("metadata_filter"));
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_EXTENSION_FILTER:
        return reject_extension(c, pb->extension_filter, SUB("extension_filter"));
    default:
        return rm_error_set(c->err, "%s: %s", path, one_of_msg);
    }
#undef SUB
}

struct rm_alog_filter *rm_alog_filter_new(const FilterPb *pb, const char *path,
                                          struct rm_error *err)
{
    struct rm_alog_filter *f = calloc(1, sizeof(*f));
    if (!f) abort();
    struct ctx c = {.f = f, .err = err};
    if (compile(&c, &f->root, pb, path, 0)) {
        rm_alog_filter_free(f);
        return NULL;
    }
    return f;
}

/* ---- evaluating --------------------------------------------------------------------------- */

static bool compare(const struct node *n, uint64_t v)
{
    switch (n->op) {
    case ENVOY__CONFIG__ACCESSLOG__V3__COMPARISON_FILTER__OP__GE:
        return v >= n->value;
    case ENVOY__CONFIG__ACCESSLOG__V3__COMPARISON_FILTER__OP__LE:
        return v <= n->value;
    default: /* EQ (the compiler admits nothing else) */
        return v == n->value;
    }
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* The sampling pivot of a request id, as a number.  Envoy's UUID request id extension reads
 * the first 8 characters as hex (a UUID's first 32 bits), so a remora and an Envoy sample the
 * same requests; for an id that does not start with 8 hex digits Envoy draws a random number,
 * remora takes a stable hash of the whole id (FNV-1a 64) so that every hop decides alike. */
static uint64_t request_id_pivot(struct rm_str id)
{
    uint64_t v = 0;
    size_t i;
    for (i = 0; i < 8 && i < id.len; i++) {
        int h = hexval(id.p[i]);
        if (h < 0) break;
        v = v << 4 | (uint64_t)h;
    }
    if (i == 8) return v;
    uint64_t hash = 0xcbf29ce484222325ULL;
    for (i = 0; i < id.len; i++) {
        hash ^= (unsigned char)id.p[i];
        hash *= 0x100000001b3ULL;
    }
    return hash;
}

static bool runtime_eval(const struct node *n, const struct rm_alog_info *in)
{
    struct rm_str id = {0};
    if (!n->independent && in->req) id = rm_headers_get_key(in->req, RM_HK_X_REQUEST_ID);
    if (rm_fraction_never(n->sample)) return false;
    if (rm_fraction_always(n->sample)) return true;
    return rm_fraction_hit(n->sample, id.p && id.len ? request_id_pivot(id) : rm_lb_random());
}

/* Does the flag list <s> ("UF,URX", remora's representation: Envoy's short names joined by
 * ',') hold a flag of <mask> (any flag when <mask> is 0)? */
static bool flags_eval(uint32_t mask, const char *s)
{
    if (!s || !*s || strcmp(s, "-") == 0) return false;
    if (!mask) return true;
    while (*s) {
        const char *e = strchr(s, ',');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        int b = flag_index(s, len);
        if (b >= 0 && (mask & (1u << b))) return true;
        if (!e) break;
        s = e + 1;
    }
    return false;
}

/* grpc-status of <h>: 1 with *st set, 0 if absent; an unparsable or unknown value is Envoy's
 * InvalidCode (-1), which no filter lists. */
static int grpc_status_of(const struct rm_headers *h, int *st)
{
    if (!h) return 0;
    struct rm_str v = RM_HDR_GET(h, "grpc-status");
    if (!v.p) return 0;
    uint64_t n;
    *st = rm_parse_simple_u64(v, &n) && n <= GRPC_MAX_STATUS ? (int)n : -1;
    return 1;
}

/* Envoy's GrpcStatusFilter: trailers, then headers, then the HTTP status; UNKNOWN without a
 * response.  Envoy applies it to every request (it does not look at content-type), and so does
 * remora: a plain HTTP 200 counts as UNKNOWN, a 503 as UNAVAILABLE. */
static bool grpc_eval(const struct node *n, const struct rm_alog_info *in)
{
    int st;
    if (!grpc_status_of(in->trailers, &st) && !grpc_status_of(in->resp, &st))
        st = in->status ? (int)rm_hcm_grpc_status_of_http(in->status) : 2;
    bool found = st >= 0 && (n->mask & (1u << st));
    return n->exclude ? !found : found;
}

static bool eval(const struct node *n, const struct rm_alog_info *in)
{
    static const struct rm_headers no_headers = {0};
    switch (n->kind) {
    case K_CONST:
        return n->result;
    case K_NOT_HC:
        return !in->health_check;
    case K_STATUS:
        return compare(n, in->status); /* 0 without a response, as Envoy */
    case K_DURATION:
        return in->duration_ms >= 0 && compare(n, (uint64_t)in->duration_ms);
    case K_RUNTIME:
        return runtime_eval(n, in);
    case K_AND:
        for (size_t i = 0; i < n->n_kids; i++) {
            if (!eval(&n->kids[i], in)) return false;
        }
        return true;
    case K_OR:
        for (size_t i = 0; i < n->n_kids; i++) {
            if (eval(&n->kids[i], in)) return true;
        }
        return false;
    case K_HEADER:
        return rm_header_match_eval(&n->header, in->req ? in->req : &no_headers);
    case K_FLAGS:
        return flags_eval(n->mask, in->resp_flags);
    case K_GRPC:
        return grpc_eval(n, in);
    }
    return false;
}

bool rm_alog_filter_eval(const struct rm_alog_filter *f, const struct rm_alog_info *in)
{
    return eval(&f->root, in);
}
