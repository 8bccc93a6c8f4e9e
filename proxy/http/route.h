/* Compiled route tables: Envoy's RouteConfiguration turned into structures that match a request
 * without touching protobuf on the hot path.
 *
 * Built once per config snapshot (main thread), immutable afterwards, shared by every worker.
 * Everything a table points to lives in the table's own allocation(s) and dies with
 * rm_route_table_free(). */
#ifndef RM_HTTP_ROUTE_H
#define RM_HTTP_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/core/error.h"
#include "proxy/http/headers.h"

struct pcre2_real_code_8;
struct rm_retry_policy;
struct Envoy__Config__Route__V3__RouteConfiguration;
struct Envoy__Config__Route__V3__HeaderMatcher;
struct Envoy__Type__Matcher__V3__StringMatcher;
struct Envoy__Config__Core__V3__HeaderValueOption;
struct Google__Protobuf__Any;

/** A string matcher (type.matcher.v3.StringMatcher, or a HeaderMatcher's match part). */
enum rm_str_match_kind {
    RM_STR_EXACT,
    RM_STR_PREFIX,
    RM_STR_SUFFIX,
    RM_STR_CONTAINS,
    RM_STR_REGEX, /* full match, PCRE2 compiled (RE2 syntax subset) */
    RM_STR_PRESENT,
    RM_STR_RANGE, /* [start, end) on the integer value */
};

struct rm_str_match {
    enum rm_str_match_kind kind;
    bool ignore_case;
    char *s;
    size_t len;
    struct pcre2_real_code_8 *re;
    int64_t range_start, range_end;
};

struct rm_header_match {
    char *name; /* lower-case; may be a pseudo-header such as ":method" */
    size_t name_len;
    struct rm_str_match m;
    bool invert;
    bool present_match_value; /* for PRESENT: true = must be present, false = must be absent */
    bool treat_missing_as_empty;
    bool pseudo; /* a pseudo-header remora knows (one value at most): looked up by key */
    uint8_t key; /* enum rm_hkey of name */
};

struct rm_query_match {
    char *name;
    size_t name_len;
    struct rm_str_match m; /* PRESENT when present_match (or no matcher) */
    bool present;          /* for PRESENT: true = must be present, false = must be absent */
};

/** One header to add (HeaderValueOption): value may contain no format specifiers for now. */
enum rm_append_action {
    RM_APPEND_IF_EXISTS_OR_ADD = 0,
    RM_ADD_IF_ABSENT = 1,
    RM_OVERWRITE_IF_EXISTS_OR_ADD = 2,
    RM_OVERWRITE_IF_EXISTS = 3,
};

struct rm_header_add {
    char *name; /* lower-case */
    size_t name_len;
    char *value;
    size_t value_len;
    enum rm_append_action action;
};

/** Header mutations at one level (route, virtual host, route configuration, cluster weight). */
struct rm_header_ops {
    struct rm_header_add *req_add;
    size_t n_req_add;
    char **req_remove; /* lower-case names */
    size_t n_req_remove;
    struct rm_header_add *resp_add;
    size_t n_resp_add;
    char **resp_remove;
    size_t n_resp_remove;
};

/** One typed_per_filter_config entry (route configuration, virtual host, route or weighted
 *  cluster).  rm_route_table_new() records it; rm_route_table_bind_filters() then compiles it
 *  for the filter chain of the connection manager that owns the table. */
struct rm_filter_route_cfg {
    const char *name;                        /* the map key: a name in http_filters */
    const struct Google__Protobuf__Any *any; /* as configured: points into the RouteConfiguration,
                                              * which must live until the binding is done */
    const char *path;                        /* its field path, for errors */
    int filter_idx; /* set by binding: position in http_filters; -1 = not bound (ignored) */
    bool disabled;  /* set by binding: FilterConfig.disabled */
    void *config;   /* set by binding: the filter's compiled per-route config, or NULL */
    void (*config_free)(void *config); /* frees config with the table */
};

struct rm_filter_route_cfgs {
    struct rm_filter_route_cfg *v;
    size_t n;
};

struct rm_weighted_cluster {
    char *name;
    uint32_t weight;
    void *cluster; /* resolved by the snapshot builder (rm_route_resolve_fn); NULL = unknown */
    struct rm_header_ops headers;
    char *host_rewrite_literal;
    struct rm_filter_route_cfgs filter_cfgs;
};

/** One RequestMirrorPolicy (route action, virtual host or route configuration): a copy of each
 *  request goes to <cluster>, fire and forget (filters/shadow.h). */
struct rm_mirror_policy {
    char *cluster_name;   /* NULL with cluster_header */
    void *cluster;        /* resolved pointer for cluster_name (NULL = unknown: no shadow) */
    char *cluster_header; /* lower-case: the cluster is this request header's value */
    /* runtime_fraction's default_value (remora has no runtime); unset = every request */
    uint32_t numerator, denominator;
    bool host_suffix; /* append "-shadow" to the host (!disable_shadow_host_suffix_append) */
};
struct rm_mirror_policies {
    const struct rm_mirror_policy *v;
    size_t n;
};

enum rm_route_action_kind {
    RM_ROUTE_FORWARD,  /* RouteAction */
    RM_ROUTE_DIRECT,   /* DirectResponseAction */
    RM_ROUTE_REDIRECT, /* RedirectAction */
};

enum rm_path_match_kind {
    RM_PATH_PREFIX,
    RM_PATH_EXACT,
    RM_PATH_REGEX,
    RM_PATH_SEPARATED_PREFIX,
};

struct rm_route {
    char *name;
    /* match */
    enum rm_path_match_kind path_kind;
    char *path; /* prefix or exact path */
    size_t path_len;
    /* RM_PATH_PREFIX without '?' or '#': it is a prefix of the path up to the query string or
     * fragment exactly when it is one of the whole path, so matching needs no scan for them */
    bool prefix_plain;
    struct pcre2_real_code_8 *path_re;
    bool case_sensitive; /* default true */
    bool grpc_only;      /* RouteMatch.grpc: content-type application/grpc* */
    struct rm_header_match *headers;
    size_t n_headers;
    struct rm_query_match *query;
    size_t n_query;

    /* action */
    enum rm_route_action_kind action;
    /* FORWARD */
    char *cluster_name;   /* single cluster; NULL with weighted or cluster_header */
    void *cluster;        /* resolved pointer for cluster_name (NULL = unknown) */
    char *cluster_header; /* take the cluster name from this request header */
    struct rm_weighted_cluster *weighted;
    size_t n_weighted;
    uint64_t total_weight;
    uint16_t cluster_not_found_code; /* 503 (default), 404 or 500 */
    char *prefix_rewrite; /* NULL = none.  Replaces the matched part of the path: the prefix
                           * (PREFIX, SEPARATED_PREFIX), the whole path (EXACT, REGEX); the
                           * query string is kept, as Envoy does. */
    size_t prefix_rewrite_len;
    char *host_rewrite_literal;
    bool auto_host_rewrite;
    char *host_rewrite_header;
    uint32_t timeout_ms;          /* 0 = disabled; default 15000 */
    uint32_t idle_timeout_ms;     /* meaningful when has_idle_timeout; 0 = disabled */
    bool has_idle_timeout;        /* unset: the HCM's stream_idle_timeout applies */
    int priority;                 /* 0 DEFAULT, 1 HIGH */
    uint32_t max_grpc_timeout_ms; /* 0 = grpc-timeout not honoured unless has_max_grpc_timeout */
    bool has_max_grpc_timeout;
    /* DIRECT */
    uint16_t direct_status;
    char *direct_body; /* may be NULL */
    size_t direct_body_len;
    /* REDIRECT */
    uint16_t redirect_status; /* 301 default */
    char *redirect_host, *redirect_path, *redirect_scheme, *redirect_prefix;
    uint32_t redirect_port;
    bool strip_query;

    struct rm_header_ops headers_ops;
    const void *retry_policy; /* the RetryPolicy protobuf (owned by the snapshot), NULL if none */
    const struct rm_retry_policy *retry; /* retry_policy compiled (filters/retry_policy.h) */
    uint32_t per_request_buffer_limit;   /* per_request_buffer_limit_bytes; 0 = unset */
    struct rm_filter_route_cfgs filter_cfgs;
    /* the mirror policies that apply: the route action's own, else its virtual host's, else the
     * route configuration's (the most specific non-empty list, not merged: Envoy) */
    struct rm_mirror_policies mirrors;
};

struct rm_vhost {
    char *name;
    struct rm_route *routes;
    size_t n_routes;
    struct rm_header_ops headers_ops;
    const void *retry_policy;            /* vhost-level RetryPolicy protobuf, NULL if none */
    const struct rm_retry_policy *retry; /* retry_policy compiled (filters/retry_policy.h) */
    uint32_t per_request_buffer_limit;   /* per_request_buffer_limit_bytes; 0 = unset */
    bool include_attempt_count;          /* include_request_attempt_count */
    bool include_attempt_count_in_response;
    struct rm_filter_route_cfgs filter_cfgs;
    struct rm_mirror_policies mirrors; /* its own request_mirror_policies */
};

/** How a domain pattern matched: Envoy picks exact, then the longest suffix wildcard
 *  ("*.foo.com"), then the longest prefix wildcard ("foo.*"), then "*". */
struct rm_domain {
    char *pattern; /* without the '*', lower-case */
    size_t len;
    enum { RM_DOMAIN_EXACT, RM_DOMAIN_SUFFIX, RM_DOMAIN_PREFIX, RM_DOMAIN_ANY } kind;
    struct rm_vhost *vhost;
};

struct rm_route_table {
    char *name;
    struct rm_vhost *vhosts;
    size_t n_vhosts;
    struct rm_domain *domains; /* sorted: exact first (by string), then suffix by length desc… */
    size_t n_domains;
    struct rm_header_ops headers_ops; /* RouteConfiguration-level mutations */
    bool ignore_port_in_host_matching;
    /* Order the router applies the three levels in: false (Envoy's default) = route, then
     * virtual host, then route configuration, so the outer level wins on conflicts; true =
     * the reverse (most specific wins). */
    bool most_specific_header_mutations_wins;
    /* domains[] is [exact...][suffix...][prefix...][any?]; the counts delimit the groups */
    size_t n_domain_exact, n_domain_suffix, n_domain_prefix;
    const struct rm_vhost *default_vhost; /* the "*" virtual host, or NULL */
    struct rm_filter_route_cfgs filter_cfgs;
    struct rm_mirror_policies mirrors; /* its own request_mirror_policies */
};

/** Resolve a cluster name to the snapshot's cluster object (or NULL if unknown). */
typedef void *(*rm_route_resolve_fn)(void *ctx, const char *cluster_name);

/** Compile <rc>.  Unknown or unsupported features are an error naming the field path under
 *  <path> (e.g. "static_resources.listeners[0]…route_config").  Returns the table or NULL. */
struct rm_route_table *
rm_route_table_new(const struct Envoy__Config__Route__V3__RouteConfiguration *rc, const char *path,
                   rm_route_resolve_fn resolve, void *resolve_ctx, struct rm_error *err);
/** rm_route_table_new, where <validate_default> is what an unset validate_clusters means: true
 *  makes a route to a cluster <resolve> does not know an error naming the route's field (how
 *  remora checks route configurations arriving over xDS). */
struct rm_route_table *
rm_route_table_new_ex(const struct Envoy__Config__Route__V3__RouteConfiguration *rc,
                      const char *path, rm_route_resolve_fn resolve, void *resolve_ctx,
                      bool validate_default, struct rm_error *err);
void rm_route_table_free(struct rm_route_table *t);

/** Find the virtual host for <authority> (port ignored when the table says so, and always
 *  retried without the port when the exact "host:port" finds nothing). NULL = none.
 *  Case-insensitive; no allocation.  "Finds nothing" means no virtual host at all (not even
 *  "*"), so a table with a "*" host behaves exactly as Envoy's. */
const struct rm_vhost *rm_route_find_vhost(const struct rm_route_table *t, const char *authority,
                                           size_t len);
/** First route of <vh> matching the request headers (pseudo-headers :path/:method included).
 *  NULL = no route.  As Envoy (>= 1.16), every path specifier sees :path without its query
 *  string and fragment (cut at the first '?' or '#'); query_parameters see the raw query (no
 *  percent-decoding, first occurrence of a name).  A header that occurs several times is
 *  matched as its values joined by ',' (joined in req->arena, the only allocation; everything
 *  else allocates nothing).  Regexes run with a per-thread PCRE2 match block created on first
 *  use (see rm_route_thread_cleanup). */
const struct rm_route *rm_route_match(const struct rm_vhost *vh, const struct rm_headers *req);
/** Pick one cluster of a weighted route with <rnd> uniformly in [0, total_weight). */
const struct rm_weighted_cluster *rm_route_pick_weighted(const struct rm_route *r, uint64_t rnd);

/* rm_header_ops_apply_*'s work when there is some. */
void rm_header_ops_run_request(const struct rm_header_ops *ops, struct rm_headers *h);
void rm_header_ops_run_response(const struct rm_header_ops *ops, struct rm_headers *h);
/** Apply one level of request or response mutations to <h> (removals first, then adds).  Most
 *  levels have none: that is decided inline, as each request applies three levels each way. */
static inline void rm_header_ops_apply_request(const struct rm_header_ops *ops,
                                               struct rm_headers *h)
{
    if (ops && (ops->n_req_remove || ops->n_req_add)) rm_header_ops_run_request(ops, h);
}
static inline void rm_header_ops_apply_response(const struct rm_header_ops *ops,
                                                struct rm_headers *h)
{
    if (ops && (ops->n_resp_remove || ops->n_resp_add)) rm_header_ops_run_response(ops, h);
}

/** Does <m> match <v>? (exposed for filters and tests)  PRESENT is always true here. */
bool rm_str_match_eval(const struct rm_str_match *m, const char *v, size_t len);

/* ---- typed_per_filter_config ------------------------------------------------------------ */

/** Bind one entry: set e->filter_idx (or leave -1 to ignore it), e->disabled, e->config and
 *  e->config_free.  RM_OK, or RM_ERR with <err> (naming e->path). */
typedef int (*rm_route_filter_bind_fn)(void *ctx, struct rm_filter_route_cfg *e,
                                       struct rm_error *err);
/** Bind every typed_per_filter_config entry of <t> with <fn> (route configuration, then each
 *  virtual host, its routes and their weighted clusters).  Config time only.  RM_OK or the
 *  first error; what was bound is freed with the table either way. */
int rm_route_table_bind_filters(struct rm_route_table *t, rm_route_filter_bind_fn fn, void *ctx,
                                struct rm_error *err);
/** The most specific bound entry for http_filters[<filter_idx>]: weighted cluster <wc>, then
 *  route <r>, virtual host <vh>, table <t> (each may be NULL).  NULL if none.  No allocation. */
const struct rm_filter_route_cfg *rm_route_filter_cfg(const struct rm_route_table *t,
                                                      const struct rm_vhost *vh,
                                                      const struct rm_route *r,
                                                      const struct rm_weighted_cluster *wc,
                                                      unsigned filter_idx);
/** Every bound entry for http_filters[<filter_idx>], most specific first (the same levels as
 *  rm_route_filter_cfg), into <out>; returns how many (0..4). */
unsigned rm_route_filter_cfgs_all(const struct rm_route_table *t, const struct rm_vhost *vh,
                                  const struct rm_route *r, const struct rm_weighted_cluster *wc,
                                  unsigned filter_idx, const struct rm_filter_route_cfg *out[4]);

/* ---- route pieces for filters ------------------------------------------------------------- */

/** Storage for matchers and header mutations compiled outside a route table (filter configs):
 *  strings, arrays and regexes live until rm_route_parts_free(). */
struct rm_route_parts;
struct rm_route_parts *rm_route_parts_new(void); /* aborts on out-of-memory */
void rm_route_parts_free(struct rm_route_parts *p);
/** Compile HeaderMatcher <hm> found at <path> into <out> (memory in <p>).  RM_OK or RM_ERR. */
int rm_route_parts_header_matcher(struct rm_route_parts *p,
                                  const struct Envoy__Config__Route__V3__HeaderMatcher *hm,
                                  const char *path, struct rm_header_match *out,
                                  struct rm_error *err);
/** Compile StringMatcher <sm> found at <path> into <out> (memory in <p>).  RM_OK or RM_ERR. */
int rm_route_parts_str_matcher(struct rm_route_parts *p,
                               const struct Envoy__Type__Matcher__V3__StringMatcher *sm,
                               const char *path, struct rm_str_match *out, struct rm_error *err);
/** <n> zeroed bytes (never NULL) / a copy of <s>, living until rm_route_parts_free(). */
void *rm_route_parts_alloc(struct rm_route_parts *p, size_t n);
char *rm_route_parts_strdup(struct rm_route_parts *p, const char *s);
/** Compile the HeaderValueOption list <v>[<n>] found at <path>.<field> as request (<request>)
 *  or response additions of <out> (the other half is left alone).  RM_OK or RM_ERR. */
int rm_route_parts_header_adds(struct rm_route_parts *p,
                               struct Envoy__Config__Core__V3__HeaderValueOption *const *v,
                               size_t n, const char *path, const char *field, bool request,
                               struct rm_header_ops *out, struct rm_error *err);
/** Envoy's HeaderUtility::matchHeaders for one matcher (values of a repeated header joined
 *  with ',' in req->arena). */
bool rm_header_match_eval(const struct rm_header_match *hm, const struct rm_headers *req);

/** Free this thread's PCRE2 match block and context (at worker exit; harmless if unused). */
void rm_route_thread_cleanup(void);

#endif
