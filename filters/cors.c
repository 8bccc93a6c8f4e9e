/* envoy.filters.http.cors: Cross-Origin Resource Sharing, as Envoy's CORS filter does it.
 *
 * The policies are the CorsPolicy entries of typed_per_filter_config (weighted cluster, route,
 * virtual host, route configuration), most specific first; each setting is taken from the first
 * policy that sets it (Envoy merges field by field), filter_enabled / shadow_enabled from the
 * most specific policy alone (unset: enabled, not shadow).  No policy: the filter does nothing.
 * The deprecated `cors` fields of routes and virtual hosts are rejected with their path by the
 * route table (use typed_per_filter_config).
 *
 * Per request with a non-empty Origin: the origin is checked against allow_origin_string_match
 * (a matcher that matches "*" allows every origin) and counted (cors.origin_valid /
 * origin_invalid).  Shadow mode stops there.  A preflight (OPTIONS with
 * Access-Control-Request-Method) is answered here with 200 and the Access-Control-Allow-*
 * headers (details "cors_response") — unless the origin is not allowed and
 * forward_not_matching_preflights (default true) sends it on to the upstream.  Other requests
 * go on, and their response gets Access-Control-Allow-Origin (the request's origin), -Credentials
 * and -Expose-Headers when the origin is allowed.  runtime_fraction keys are accepted and their
 * default values used (remora has no runtime). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/extensions/filters/http/cors/v3/cors.pb-c.h"
#include "filters/filter.h"
#include "filters/percent.h"
#include "google/protobuf/any.pb-c.h"
#include "proxy/admin/stats.h"
#include "proxy/config/pbtypes.h"
#include "proxy/http/hcm.h"
#include "proxy/http/route.h"
#include "proxy/server/worker.h"

typedef Envoy__Extensions__Filters__Http__Cors__V3__CorsPolicy CorsPolicy;

enum { CORS_ORIGIN_VALID, CORS_ORIGIN_INVALID, CORS__COUNT };
static const struct rm_stat_def cors_defs[CORS__COUNT] = {
    [CORS_ORIGIN_VALID] = {"origin_valid", RM_COUNTER},
    [CORS_ORIGIN_INVALID] = {"origin_invalid", RM_COUNTER},
};

enum tri { UNSET = -1, NO = 0, YES = 1 };

/* One CorsPolicy, compiled.  Strings are NULL when empty (unset: a less specific policy's). */
struct cors_policy {
    struct rm_str_match *origins;
    size_t n_origins;
    const char *allow_methods, *allow_headers, *expose_headers, *max_age;
    enum tri credentials, private_network, forward_not_matching;
    bool has_enabled, has_shadow;
    struct rm_fraction enabled, shadow;
    struct rm_route_parts *parts;
};

struct cors_config {
    struct rm_stats *stats; /* http.<stat_prefix>.cors. */
};

struct cors {
    struct rm_filter base;
    const struct cors_policy *pol[4]; /* most specific first */
    unsigned n;
    bool is_cors;
    struct rm_str origin; /* the allowed origin (in the request headers), p NULL if none */
};

/* ---- config ------------------------------------------------------------------------------- */

static void *cors_config_new_in(const struct rm_filter_chain_info *chain,
                                const Google__Protobuf__Any *any, const char *path,
                                struct rm_error *err)
{
    if (any) {
        char p[600];
        snprintf(p, sizeof(p), "%s.typed_config", path);
        ProtobufCMessage *m;
        if (rm_pb_any_unpack(any, &envoy__extensions__filters__http__cors__v3__cors__descriptor, &m,
                             err)) {
            rm_error_prefix(err, "%s: ", p);
            return NULL;
        }
        int rc = rm_pb_check_no_unknown(m, p, err);
        protobuf_c_message_free_unpacked(m, NULL);
        if (rc) return NULL;
    }
    struct cors_config *c = calloc(1, sizeof(*c));
    if (!c) abort();
    char prefix[600];
    snprintf(prefix, sizeof(prefix), "%scors.", chain->stats_prefix);
    c->stats = rm_stats_get(prefix, cors_defs, CORS__COUNT);
    return c;
}

static void cors_config_free(void *p)
{
    struct cors_config *c = p;
    if (!c) return;
    rm_stats_release(c->stats);
    free(c);
}

static void policy_free(void *p)
{
    struct cors_policy *c = p;
    if (!c) return;
    rm_route_parts_free(c->parts);
    free(c);
}

static enum tri tri_of(const Google__Protobuf__BoolValue *b)
{
    return b ? (b->value ? YES : NO) : UNSET;
}

static const char *str_opt(struct cors_policy *c, const char *s)
{
    return *s ? rm_route_parts_strdup(c->parts, s) : NULL;
}

static int fraction(const Envoy__Config__Core__V3__RuntimeFractionalPercent *rf, const char *path,
                    const char *field, bool *has, struct rm_fraction *out, struct rm_error *err)
{
    if (!rf) return RM_OK;
    char p[600];
    snprintf(p, sizeof(p), "%s.%s", path, field);
    if (rm_pb_check_no_unknown(&rf->base, p, err)) return RM_ERR;
    snprintf(p, sizeof(p), "%s.%s.default_value", path, field);
    *has = true;
    return rm_fraction_from_pb(rf->default_value, p, out, err);
}

static int compile(struct cors_policy *c, const CorsPolicy *pb, const char *path,
                   struct rm_error *err)
{
    char p[600];
    if (rm_pb_check_no_unknown(&pb->base, path, err)) return RM_ERR;
    c->n_origins = pb->n_allow_origin_string_match;
    c->origins = rm_route_parts_alloc(c->parts, (c->n_origins + 1) * sizeof(*c->origins));
    for (size_t i = 0; i < c->n_origins; i++) {
        snprintf(p, sizeof(p), "%s.allow_origin_string_match[%zu]", path, i);
        if (rm_route_parts_str_matcher(c->parts, pb->allow_origin_string_match[i], p,
                                       &c->origins[i], err))
            return RM_ERR;
    }
    c->allow_methods = str_opt(c, pb->allow_methods);
    c->allow_headers = str_opt(c, pb->allow_headers);
    c->expose_headers = str_opt(c, pb->expose_headers);
    c->max_age = str_opt(c, pb->max_age);
    c->credentials = tri_of(pb->allow_credentials);
    c->private_network = tri_of(pb->allow_private_network_access);
    c->forward_not_matching = tri_of(pb->forward_not_matching_preflights);
    return fraction(pb->filter_enabled, path, "filter_enabled", &c->has_enabled, &c->enabled,
                    err) ||
           fraction(pb->shadow_enabled, path, "shadow_enabled", &c->has_shadow, &c->shadow, err);
}

static void *cors_route_config_new(const Google__Protobuf__Any *any, const char *path,
                                   struct rm_error *err)
{
    ProtobufCMessage *m;
    if (!any) {
        rm_error_set(err, "%s: a CorsPolicy is required", path);
        return NULL;
    }
    if (rm_pb_any_unpack(any, &envoy__extensions__filters__http__cors__v3__cors_policy__descriptor,
                         &m, err)) {
        rm_error_prefix(err, "%s: ", path);
        return NULL;
    }
    struct cors_policy *c = calloc(1, sizeof(*c));
    if (!c) abort();
    c->parts = rm_route_parts_new();
    int rc = compile(c, (const CorsPolicy *)m, path, err);
    protobuf_c_message_free_unpacked(m, NULL);
    if (rc) {
        policy_free(c);
        return NULL;
    }
    return c;
}

/* ---- the settings of this request (first policy that sets each) --------------------------- */

#define FIRST_STR(f, field)                                                                        \
    do {                                                                                           \
        for (unsigned i_ = 0; i_ < (f)->n; i_++)                                                   \
            if ((f)->pol[i_]->field) return (f)->pol[i_]->field;                                   \
        return NULL;                                                                               \
    } while (0)

static const char *allow_methods(const struct cors *f)
{
    FIRST_STR(f, allow_methods);
}
static const char *allow_headers(const struct cors *f)
{
    FIRST_STR(f, allow_headers);
}
static const char *expose_headers(const struct cors *f)
{
    FIRST_STR(f, expose_headers);
}
static const char *max_age(const struct cors *f)
{
    FIRST_STR(f, max_age);
}

static bool first_tri(const struct cors *f, size_t off, bool dflt)
{
    for (unsigned i = 0; i < f->n; i++) {
        enum tri t = *(const enum tri *)((const char *)f->pol[i] + off);
        if (t != UNSET) return t == YES;
    }
    return dflt;
}
#define FIRST_TRI(f, field, dflt) first_tri((f), offsetof(struct cors_policy, field), (dflt))

static bool origin_allowed(const struct cors *f, struct rm_str origin)
{
    for (unsigned i = 0; i < f->n; i++) {
        const struct cors_policy *p = f->pol[i];
        if (!p->n_origins) continue; /* the first policy that lists origins decides */
        for (size_t j = 0; j < p->n_origins; j++)
            if (rm_str_match_eval(&p->origins[j], "*", 1) ||
                rm_str_match_eval(&p->origins[j], origin.p, origin.len))
                return true;
        return false;
    }
    return false;
}

static bool picked(struct rm_filter *f, struct rm_fraction fr)
{
    return rm_fraction_always(fr) ||
           (!rm_fraction_never(fr) &&
            rm_fraction_hit(fr, rm_worker_random(rm_hcm_worker(f->stream))));
}

/* ---- request and response ----------------------------------------------------------------- */

static void set(struct rm_headers *h, const char *name, const char *v, size_t n)
{
    rm_headers_set(h, name, strlen(name), v, n);
}

static void preflight_headers(void *ctx, struct rm_headers *h)
{
    struct cors *c = ctx;
    const struct rm_headers *req = c->base.stream->req;
    if (c->origin.p) set(h, "access-control-allow-origin", c->origin.p, c->origin.len);
    if (FIRST_TRI(c, credentials, false)) set(h, "access-control-allow-credentials", "true", 4);
    const char *v = allow_methods(c);
    if (v && strcmp(v, "*") == 0) {
        struct rm_str m = RM_HDR_GET(req, "access-control-request-method");
        set(h, "access-control-allow-methods", m.p, m.len);
    } else if (v) {
        set(h, "access-control-allow-methods", v, strlen(v));
    }
    v = allow_headers(c);
    if (v && strcmp(v, "*") == 0) {
        struct rm_str rh = RM_HDR_GET(req, "access-control-request-headers");
        set(h, "access-control-allow-headers", rh.p ? rh.p : "", rh.len);
    } else if (v) {
        set(h, "access-control-allow-headers", v, strlen(v));
    }
    if ((v = max_age(c))) set(h, "access-control-max-age", v, strlen(v));
    struct rm_str pna = RM_HDR_GET(req, "access-control-request-private-network");
    if (FIRST_TRI(c, private_network, false) && rm_str_eq(pna, "true", 4))
        set(h, "access-control-allow-private-network", "true", 4);
}

static enum rm_filter_status cors_on_request_headers(struct rm_filter *f, struct rm_headers *h,
                                                     bool end)
{
    struct cors *c = (struct cors *)f;
    const struct cors_config *cfg = f->config;
    if (!f->stream->route) return RM_FILTER_CONTINUE;
    c->n = rm_filter_route_configs(f, (const void **)c->pol);
    if (!c->n) return RM_FILTER_CONTINUE;
    const struct cors_policy *top = c->pol[0];
    bool enabled = top->has_enabled ? picked(f, top->enabled) : true;
    bool shadow = top->has_shadow ? picked(f, top->shadow) : false;
    if (!enabled && !shadow) return RM_FILTER_CONTINUE;
    struct rm_str origin = RM_HDR_GET(h, "origin");
    if (!origin.p || !origin.len) return RM_FILTER_CONTINUE;
    bool allowed = origin_allowed(c, origin);
    rm_stat_inc(cfg->stats, allowed ? CORS_ORIGIN_VALID : CORS_ORIGIN_INVALID);
    if (allowed) c->origin = origin;
    if (!enabled) return RM_FILTER_CONTINUE; /* shadow: counted only */
    c->is_cors = true;
    struct rm_str method = rm_headers_get_key(h, RM_HK_METHOD);
    if (!rm_str_eq(method, "OPTIONS", 7)) return RM_FILTER_CONTINUE;
    struct rm_str acrm = RM_HDR_GET(h, "access-control-request-method");
    if (!acrm.p || !acrm.len) return RM_FILTER_CONTINUE;
    if (!allowed && FIRST_TRI(c, forward_not_matching, true)) return RM_FILTER_CONTINUE;
    struct rm_local_reply r = {
        .status = 200,
        .grpc_status = -1,
        .details = "cors_response",
        .edit_headers = preflight_headers,
        .ctx = c,
    };
    rm_filter_reply_ex(f, &r);
    return RM_FILTER_STOP;
}

static enum rm_filter_status cors_on_response_headers(struct rm_filter *f, struct rm_headers *h,
                                                      bool end)
{
    struct cors *c = (struct cors *)f;
    if (!c->is_cors || !c->origin.p) return RM_FILTER_CONTINUE;
    set(h, "access-control-allow-origin", c->origin.p, c->origin.len);
    if (FIRST_TRI(c, credentials, false)) set(h, "access-control-allow-credentials", "true", 4);
    const char *v = expose_headers(c);
    if (v) set(h, "access-control-expose-headers", v, strlen(v));
    return RM_FILTER_CONTINUE;
}

const struct rm_filter_ops rm_filter_cors = {
    .name = "envoy.filters.http.cors",
    .type_url = "envoy.extensions.filters.http.cors.v3.Cors",
    .config_new_in = cors_config_new_in,
    .config_free = cors_config_free,
    .route_config_new = cors_route_config_new,
    .route_config_free = policy_free,
    .instance_size = sizeof(struct cors),
    .on_request_headers = cors_on_request_headers,
    .on_response_headers = cors_on_response_headers,
};
