/* Internal to the route table (route.c, route_build.c, route_compile.c): the private table
 * layout and the compile helpers shared by the builder files.  Not for other layers. */
#ifndef RM_HTTP_ROUTE_INT_H
#define RM_HTTP_ROUTE_INT_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <protobuf-c/protobuf-c.h>

#include "envoy/config/core/v3/base.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/config/route/v3/route_components.pb-c.h"
#include "envoy/type/matcher/v3/regex.pb-c.h"
#include "envoy/type/matcher/v3/string.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "proxy/core/arena.h"
#include "proxy/http/route.h"

/* The table as allocated: the public part first, then what only the builder and free need. */
struct rm_route_priv {
    struct rm_route_table pub;
    struct rm_arena arena; /* every string and array the table points to */
    pcre2_code **codes;    /* every compiled regex, freed with the table */
    size_t n_codes, cap_codes;
};

/* State of one rm_route_table_new() call. */
struct rm_route_ctx {
    struct rm_route_priv *t;
    rm_route_resolve_fn resolve;
    void *resolve_ctx;
    bool validate_clusters;
    uint64_t max_body; /* max_direct_response_body_size_bytes (default 4096) */
    struct rm_error *err;
};

/* Field paths in messages: big enough for a listener prefix plus a deep route path. */
#define RM_RT_PATH 768

/** Write "<base>.<field>" (or "<base>[i]" when <fmt> starts with '[', or just <field> when
 *  <base> is empty) into <out>. */
void rm_rt_path(char *out, size_t n, const char *base, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#define RT_PATH(buf, base, ...) rm_rt_path((buf), sizeof(buf), (base), __VA_ARGS__)

/** Zeroed table memory (never NULL: the arena aborts on out-of-memory). */
void *rm_rt_alloc(struct rm_route_ctx *c, size_t n);
/** Copy <n> bytes plus a NUL into the table; lower-cased (ASCII) when <lower>. */
char *rm_rt_strdup(struct rm_route_ctx *c, const char *s, size_t n, bool lower);
/** rm_rt_strdup of a protobuf string, NULL when it is empty. */
char *rm_rt_strdup_opt(struct rm_route_ctx *c, const char *s);

/** RM_ERR naming <path> if <m> carries fields this build does not know (Envoy fields remora
 *  does not implement arrive as unknown fields); the Envoy field name is used when known. */
int rm_rt_check_unknown(const ProtobufCMessage *m, const char *path, struct rm_error *err);

/** Is <s> a usable header name (non-empty, no NUL/CR/LF)? */
bool rm_rt_header_name_ok(const char *s);

/** Compile a RegexMatcher at <path> for anchored full matching; the code is owned by the
 *  table.  RM_OK or RM_ERR with PCRE2's message. */
int rm_rt_regex(struct rm_route_ctx *c, const Envoy__Type__Matcher__V3__RegexMatcher *rx,
                const char *path, struct pcre2_real_code_8 **out);
/** StringMatcher at <path> -> <out>. */
int rm_rt_str_matcher(struct rm_route_ctx *c, const Envoy__Type__Matcher__V3__StringMatcher *sm,
                      const char *path, struct rm_str_match *out);
/** HeaderMatcher at <path> -> <out>. */
int rm_rt_header_matcher(struct rm_route_ctx *c, const Envoy__Config__Route__V3__HeaderMatcher *hm,
                         const char *path, struct rm_header_match *out);
/** QueryParameterMatcher at <path> -> <out>. */
int rm_rt_query_matcher(struct rm_route_ctx *c,
                        const Envoy__Config__Route__V3__QueryParameterMatcher *qm, const char *path,
                        struct rm_query_match *out);

/** The four header mutation lists of one level (fields named as in the protobuf). */
struct rm_rt_hdr_lists {
    size_t n_req_add;
    Envoy__Config__Core__V3__HeaderValueOption **req_add;
    size_t n_req_rm;
    char **req_rm;
    size_t n_resp_add;
    Envoy__Config__Core__V3__HeaderValueOption **resp_add;
    size_t n_resp_rm;
    char **resp_rm;
};
#define RM_RT_HDR_LISTS(m)                                                                         \
    ((struct rm_rt_hdr_lists){(m)->n_request_headers_to_add, (m)->request_headers_to_add,          \
                              (m)->n_request_headers_to_remove, (m)->request_headers_to_remove,    \
                              (m)->n_response_headers_to_add, (m)->response_headers_to_add,        \
                              (m)->n_response_headers_to_remove, (m)->response_headers_to_remove})
/** Compile one level of header mutations found at <path> into <out>. */
int rm_rt_header_ops(struct rm_route_ctx *c, const struct rm_rt_hdr_lists *l, const char *path,
                     struct rm_header_ops *out);

/** One list of HeaderValueOptions found at <path>.<field>[i] -> <out> (entries Envoy would never
 *  add are dropped). */
int rm_rt_header_adds(struct rm_route_ctx *c, Envoy__Config__Core__V3__HeaderValueOption *const *v,
                      size_t n, const char *path, const char *field, struct rm_header_add **out,
                      size_t *n_out);

/** Record the typed_per_filter_config map of a message (entries[<n>], map entry messages) found
 *  at <path> into <out>, unbound (route_filter.c). */
int rm_rt_filter_cfgs(struct rm_route_ctx *c, size_t n, ProtobufCMessage *const *entries,
                      const char *path, struct rm_filter_route_cfgs *out);
#define RM_RT_FILTER_CFGS(c, msg, path, out)                                                       \
    rm_rt_filter_cfgs((c), (msg)->n_typed_per_filter_config,                                       \
                      (ProtobufCMessage *const *)(msg)->typed_per_filter_config, (path), (out))
/** Free the bound per-route filter configs of <t> (at table free). */
void rm_rt_filter_cfgs_free(struct rm_route_table *t);

/** Duration at <path> in milliseconds: negative is an error, a non-zero value below 1 ms
 *  rounds up to 1 ms, values beyond UINT32_MAX ms saturate. */
int rm_rt_duration_ms(const Google__Protobuf__Duration *d, const char *path, uint32_t *ms,
                      struct rm_error *err);

/** Compile routes[<n>] of a virtual host at <path> (route_build.c). */
/** request_mirror_policies[] under <path> -> <out> (in the table). */
int rm_rt_mirrors(struct rm_route_ctx *c,
                  Envoy__Config__Route__V3__RouteAction__RequestMirrorPolicy *const *v, size_t n,
                  const char *path, struct rm_mirror_policies *out);
int rm_rt_routes(struct rm_route_ctx *c, Envoy__Config__Route__V3__Route *const *routes, size_t n,
                 const char *path, struct rm_route **out);

#endif
