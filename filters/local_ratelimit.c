/* envoy.filters.http.local_ratelimit: a token bucket in front of the router.
 *
 * Per request (Envoy's LocalRateLimit filter without descriptors): the config is the most
 * specific typed_per_filter_config (route > virtual host > route configuration; each one its own
 * bucket) or the filter's own.  If filter_enabled picks the request, it takes a token; without one
 * it is rate limited, and if filter_enforced picks it too it gets a local reply (429 by default,
 * flag RL, body "local_rate_limited", response_headers_to_add); otherwise it goes on with
 * request_headers_to_add_when_not_enforced.  The bucket is shared by every worker (lock-free,
 * filters/token_bucket.h) or, with local_rate_limit_per_downstream_connection, one per
 * connection.  Stats: <stat_prefix>.http_local_rate_limit.{enabled,ok,rate_limited,enforced}.
 * Runtime keys are accepted and ignored (remora has no runtime: the default_value applies). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/extensions/filters/http/local_ratelimit/v3/local_rate_limit.pb-c.h"
#include "filters/filter.h"
#include "filters/percent.h"
#include "filters/token_bucket.h"
#include "google/protobuf/any.pb-c.h"
#include "proxy/admin/stats.h"
#include "proxy/config/pbtypes.h"
#include "proxy/http/hcm.h"
#include "proxy/server/worker.h"

typedef Envoy__Extensions__Filters__Http__LocalRatelimit__V3__LocalRateLimit LocalRateLimit;
#define LRL_DESC                                                                                   \
    (&envoy__extensions__filters__http__local_ratelimit__v3__local_rate_limit__descriptor)

#define MIN_FILL_INTERVAL_NS (50ull * 1000000u) /* Envoy: fill_interval >= 50ms */
#define MAX_HEADERS_TO_ADD 10
#define GRPC_RESOURCE_EXHAUSTED 8

enum { LRL_ENABLED, LRL_ENFORCED, LRL_RATE_LIMITED, LRL_OK, LRL__COUNT };
static const struct rm_stat_def lrl_stat_defs[LRL__COUNT] = {
    [LRL_ENABLED] = {"enabled", RM_COUNTER},
    [LRL_ENFORCED] = {"enforced", RM_COUNTER},
    [LRL_RATE_LIMITED] = {"rate_limited", RM_COUNTER},
    [LRL_OK] = {"ok", RM_COUNTER},
};

/* One LocalRateLimit, compiled (listener level or per route).  Immutable after config time
 * except the shared bucket's atomic state. */
struct lrl_config {
    struct rm_stats *stats; /* <stat_prefix>.http_local_rate_limit.: a reference (config_free) */
    bool has_bucket;
    struct rm_token_bucket bucket; /* shared by all workers unless per_connection */
    bool per_connection;
    bool has_enabled, has_enforced; /* unset = 0% (Envoy's default, "for safety") */
    struct rm_fraction enabled, enforced;
    unsigned status;
    int grpc_status; /* -1: mapped from status */
    bool x_ratelimit_headers;
    struct rm_header_ops resp_ops; /* response_headers_to_add (resp_add) */
    struct rm_header_ops req_ops;  /* request_headers_to_add_when_not_enforced (req_add) */
    struct rm_route_parts *parts;  /* memory of the two above */
};

struct lrl {
    struct rm_filter base;
    const struct lrl_config *cfg;   /* the config this request used */
    struct rm_token_bucket *bucket; /* the bucket it took from (NULL: filter not enabled) */
};

/* ---- config ------------------------------------------------------------------------------- */

/* Envoy fields remora does not implement (absent from its .proto subset): named in errors. */
static const struct rm_pb_field_name unsupported_fields[] = {
    {8, "descriptors"},
    {13, "vh_rate_limits"},
    {16, "local_cluster_rate_limit"},
    {17, "rate_limits"},
};

static int check_unsupported(const LocalRateLimit *pb, const char *path, struct rm_error *err)
{
    return rm_pb_check_named(&pb->base, unsupported_fields,
                             sizeof(unsupported_fields) / sizeof(unsupported_fields[0]), path, err);
}

static int token_bucket(struct lrl_config *c, const Envoy__Type__V3__TokenBucket *tb,
                        const char *path, struct rm_error *err)
{
    if (!tb->max_tokens)
        return rm_error_set(err, "%s.token_bucket.max_tokens: must be greater than 0", path);
    uint32_t per_fill = 1;
    if (tb->tokens_per_fill) {
        if (!tb->tokens_per_fill->value)
            return rm_error_set(err, "%s.token_bucket.tokens_per_fill: must be greater than 0",
                                path);
        per_fill = tb->tokens_per_fill->value;
    }
    const Google__Protobuf__Duration *d = tb->fill_interval;
    if (!d) return rm_error_set(err, "%s.token_bucket.fill_interval: required", path);
    if (d->seconds < 0 || d->nanos < 0 || (d->seconds == 0 && d->nanos == 0))
        return rm_error_set(err, "%s.token_bucket.fill_interval: must be greater than 0", path);
    if (d->seconds > 100LL * 365 * 24 * 3600)
        return rm_error_set(err, "%s.token_bucket.fill_interval: too large", path);
    uint64_t ns = (uint64_t)d->seconds * 1000000000u + (uint64_t)d->nanos;
    if (ns < MIN_FILL_INTERVAL_NS)
        return rm_error_set(err,
                            "%s.token_bucket.fill_interval: must be at least 50ms (as in "
                            "Envoy)",
                            path);
    c->has_bucket = true;
    rm_token_bucket_init(&c->bucket, tb->max_tokens, per_fill, ns, rm_monotonic_ns());
    return RM_OK;
}

static int runtime_fraction(const Envoy__Config__Core__V3__RuntimeFractionalPercent *rf,
                            const char *path, const char *field, bool *has, struct rm_fraction *out,
                            struct rm_error *err)
{
    char p[600];
    snprintf(p, sizeof(p), "%s.%s.default_value", path, field);
    if (!rf) return RM_OK;
    if (!rf->default_value) return rm_error_set(err, "%s: required", p);
    *has = true; /* runtime_key: no runtime in remora, the default applies */
    return rm_fraction_from_pb(rf->default_value, p, out, err);
}

static int status_code(struct lrl_config *c, const LocalRateLimit *pb, const char *path,
                       struct rm_error *err)
{
    c->status = 429;
    if (!pb->status) return RM_OK;
    int code = (int)pb->status->code;
    if (code == 0) return rm_error_set(err, "%s.status.code: required", path);
    if (!protobuf_c_enum_descriptor_get_value(&envoy__type__v3__status_code__descriptor, code))
        return rm_error_set(err, "%s.status.code: %d is not one of Envoy's StatusCode values", path,
                            code);
    if (code >= 400) /* Envoy: a code below 400 means 429 */
        c->status = (unsigned)code;
    return RM_OK;
}

static int header_lists(struct lrl_config *c, const LocalRateLimit *pb, const char *path,
                        struct rm_error *err)
{
    if (pb->n_response_headers_to_add > MAX_HEADERS_TO_ADD)
        return rm_error_set(err, "%s.response_headers_to_add: at most %d entries", path,
                            MAX_HEADERS_TO_ADD);
    if (pb->n_request_headers_to_add_when_not_enforced > MAX_HEADERS_TO_ADD)
        return rm_error_set(err,
                            "%s.request_headers_to_add_when_not_enforced: at most %d "
                            "entries",
                            path, MAX_HEADERS_TO_ADD);
    c->parts = rm_route_parts_new();
    if (rm_route_parts_header_adds(c->parts, pb->response_headers_to_add,
                                   pb->n_response_headers_to_add, path, "response_headers_to_add",
                                   false, &c->resp_ops, err))
        return RM_ERR;
    return rm_route_parts_header_adds(c->parts, pb->request_headers_to_add_when_not_enforced,
                                      pb->n_request_headers_to_add_when_not_enforced, path,
                                      "request_headers_to_add_when_not_enforced", true, &c->req_ops,
                                      err);
}

static int compile(struct lrl_config *c, const LocalRateLimit *pb, bool per_route, const char *path,
                   struct rm_error *err)
{
    if (check_unsupported(pb, path, err)) return RM_ERR;
    if (!pb->stat_prefix || !*pb->stat_prefix)
        return rm_error_set(err, "%s.stat_prefix: required", path);
    if (pb->stage > 10) return rm_error_set(err, "%s.stage: must be at most 10", path);
    if ((unsigned)pb->enable_x_ratelimit_headers > 1)
        return rm_error_set(err, "%s.enable_x_ratelimit_headers: unknown value %d", path,
                            (int)pb->enable_x_ratelimit_headers);
    if (pb->token_bucket && token_bucket(c, pb->token_bucket, path, err)) return RM_ERR;
    if (per_route && !c->has_bucket)
        return rm_error_set(err, "%s.token_bucket: required in a per-route config", path);
    if (runtime_fraction(pb->filter_enabled, path, "filter_enabled", &c->has_enabled, &c->enabled,
                         err) ||
        runtime_fraction(pb->filter_enforced, path, "filter_enforced", &c->has_enforced,
                         &c->enforced, err) ||
        status_code(c, pb, path, err) || header_lists(c, pb, path, err))
        return RM_ERR;
    c->per_connection = pb->local_rate_limit_per_downstream_connection;
    c->x_ratelimit_headers =
        pb->enable_x_ratelimit_headers ==
        ENVOY__EXTENSIONS__COMMON__RATELIMIT__V3__XRATE_LIMIT_HEADERS_RFCVERSION__DRAFT_VERSION_03;
    c->grpc_status = pb->rate_limited_as_resource_exhausted ? GRPC_RESOURCE_EXHAUSTED : -1;
    char prefix[600];
    snprintf(prefix, sizeof(prefix), "%s.http_local_rate_limit.", pb->stat_prefix);
    c->stats = rm_stats_get(prefix, lrl_stat_defs, LRL__COUNT);
    return RM_OK;
}

static void lrl_config_free(void *p)
{
    struct lrl_config *c = p;
    if (!c) return;
    rm_route_parts_free(c->parts);
    rm_stats_release(c->stats); /* streams hold the snapshot that holds this config */
    free(c);
}

static void *lrl_config_build(const Google__Protobuf__Any *any, bool per_route, const char *path,
                              struct rm_error *err)
{
    if (!any) {
        rm_error_set(err, "%s.typed_config: required (a LocalRateLimit with stat_prefix)", path);
        return NULL;
    }
    ProtobufCMessage *m;
    if (rm_pb_any_unpack(any, LRL_DESC, &m, err)) {
        rm_error_prefix(err, "%s: ", path);
        return NULL;
    }
    struct lrl_config *c = calloc(1, sizeof(*c));
    if (!c) abort();
    int rc = compile(c, (const LocalRateLimit *)m, per_route, path, err);
    protobuf_c_message_free_unpacked(m, NULL);
    if (rc) {
        lrl_config_free(c);
        return NULL;
    }
    return c;
}

static void *lrl_config_new(const Google__Protobuf__Any *any, const char *path,
                            struct rm_error *err)
{
    char p[600];
    snprintf(p, sizeof(p), "%s.typed_config", path);
    return lrl_config_build(any, false, any ? p : path, err);
}

static void *lrl_route_config_new(const Google__Protobuf__Any *any, const char *path,
                                  struct rm_error *err)
{
    return lrl_config_build(any, true, path, err);
}

/* ---- request path ------------------------------------------------------------------------- */

static bool picked(const struct rm_filter *f, bool has, struct rm_fraction fr)
{
    if (!has || rm_fraction_never(fr)) return false;
    return rm_fraction_always(fr) ||
           rm_fraction_hit(fr, rm_worker_random(rm_hcm_worker(f->stream)));
}

/* The bucket this request takes from: the config's, or this connection's copy of it. */
static struct rm_token_bucket *bucket_for(struct rm_filter *f, const struct lrl_config *c,
                                          uint64_t now)
{
    if (!c->per_connection)
        return (struct rm_token_bucket *)&c->bucket; /* the atomic part is shared and mutable */
    bool created;
    struct rm_token_bucket *b = rm_hcm_conn_state(f->stream, c, sizeof(*b), &created);
    if (created)
        rm_token_bucket_init(b, c->bucket.max_tokens, c->bucket.tokens_per_fill,
                             c->bucket.fill_interval_ns, now);
    return b;
}

/* x-ratelimit-limit / -remaining / -reset (DRAFT_VERSION_03), as Envoy's encodeHeaders. */
static void add_x_ratelimit(const struct lrl *l, struct rm_headers *h)
{
    if (!l->bucket || !l->cfg->x_ratelimit_headers) return;
    uint64_t now = rm_monotonic_ns();
    char num[24];
    int n = snprintf(num, sizeof(num), "%u", l->bucket->max_tokens);
    rm_headers_add(h, "x-ratelimit-limit", 17, num, (size_t)n);
    n = snprintf(num, sizeof(num), "%u", rm_token_bucket_tokens(l->bucket, now));
    rm_headers_add(h, "x-ratelimit-remaining", 21, num, (size_t)n);
    n = snprintf(num, sizeof(num), "%llu",
                 (unsigned long long)rm_token_bucket_reset_seconds(l->bucket, now));
    rm_headers_add(h, "x-ratelimit-reset", 17, num, (size_t)n);
}

static void edit_reply(void *ctx, struct rm_headers *h)
{
    struct lrl *l = ctx;
    rm_header_ops_apply_response(&l->cfg->resp_ops, h);
    add_x_ratelimit(l, h);
}

static enum rm_filter_status lrl_on_request_headers(struct rm_filter *f, struct rm_headers *h,
                                                    bool end)
{
    struct lrl *l = (struct lrl *)f;
    const struct lrl_config *c = rm_filter_route_config(f);
    l->cfg = c = c ? c : f->config;
    if (!c->has_bucket || !picked(f, c->has_enabled, c->enabled)) return RM_FILTER_CONTINUE;
    rm_stat_inc(c->stats, LRL_ENABLED);
    uint64_t now = rm_monotonic_ns();
    l->bucket = bucket_for(f, c, now);
    if (rm_token_bucket_consume(l->bucket, now, NULL)) {
        rm_stat_inc(c->stats, LRL_OK);
        return RM_FILTER_CONTINUE;
    }
    rm_stat_inc(c->stats, LRL_RATE_LIMITED);
    if (!picked(f, c->has_enforced, c->enforced)) {
        rm_header_ops_apply_request(&c->req_ops, h);
        return RM_FILTER_CONTINUE;
    }
    rm_stat_inc(c->stats, LRL_ENFORCED);
    struct rm_local_reply r = {
        .status = c->status,
        .grpc_status = c->grpc_status,
        .flags = "RL",
        .details = "local_rate_limited",
        .body = "local_rate_limited",
        .edit_headers = edit_reply,
        .ctx = l,
    };
    rm_filter_reply_ex(f, &r);
    return RM_FILTER_STOP;
}

static enum rm_filter_status lrl_on_response_headers(struct rm_filter *f, struct rm_headers *h,
                                                     bool end)
{
    add_x_ratelimit((struct lrl *)f, h);
    return RM_FILTER_CONTINUE;
}

const struct rm_filter_ops rm_filter_local_ratelimit = {
    .name = "envoy.filters.http.local_ratelimit",
    .type_url = "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
    .config_new = lrl_config_new,
    .config_free = lrl_config_free,
    .route_config_new = lrl_route_config_new,
    .route_config_free = lrl_config_free,
    .instance_size = sizeof(struct lrl),
    .on_request_headers = lrl_on_request_headers,
    .on_response_headers = lrl_on_response_headers,
};
