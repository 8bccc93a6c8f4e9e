/* The HTTP filter API: the chain between a downstream stream and the router.
 *
 * A filter is an ops table (struct rm_filter_ops) registered by its Envoy extension name and the
 * type URL of its typed_config.  At config time config_new() turns the typed_config into the
 * filter's immutable config; per request the HTTP connection manager allocates instance_size
 * bytes from the stream's arena (struct rm_filter first) and calls the hooks in order:
 * request hooks from the first filter to the last (the router), response hooks in reverse.
 *
 * A hook returns RM_FILTER_CONTINUE (pass the event on) or RM_FILTER_STOP (hold it: the filter
 * will call rm_filter_continue() later, or answer with rm_filter_reply()).  While a request is
 * held, later request data is buffered by the connection manager (bounded: the downstream is
 * paused past the buffer limit).  A filter never frees the stream; after rm_filter_reply() or a
 * reset the stream stops calling hooks, except on_destroy which always runs once. */
#ifndef RM_FILTERS_FILTER_H
#define RM_FILTERS_FILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/core/error.h"
#include "proxy/http/headers.h"

struct rm_hcm_stream;
struct Google__Protobuf__Any;

enum rm_filter_status {
    RM_FILTER_CONTINUE,
    RM_FILTER_STOP,
};

struct rm_filter {
    const struct rm_filter_ops *ops;
    const void *config;           /* from config_new */
    struct rm_hcm_stream *stream; /* the request this instance serves */
    unsigned idx;                 /* position in this request's chain */
    unsigned cfg_idx;             /* position in the connection manager's http_filters (differs
                                   * from idx when a route disables filters) */
};

/** What a filter's config may need from the connection manager it is configured in. */
struct rm_filter_chain_info {
    const char *stats_prefix; /* "http.<stat_prefix>." */
};

struct rm_filter_ops {
    const char *name;     /* "envoy.filters.http.router" */
    const char *type_url; /* full message name of its typed_config */
    /** Build the filter's config from its typed_config (<any> may be NULL when omitted); one
     *  of config_new and config_new_in is required.
     *  Errors name the field under <path>.  Returns NULL with <err> on failure; a filter with
     *  no config may return a non-NULL static sentinel. */
    void *(*config_new)(const struct Google__Protobuf__Any *any, const char *path,
                        struct rm_error *err);
    void (*config_free)(void *config);
    /** Optional; used instead of config_new when set: the same, plus the chain it is in. */
    void *(*config_new_in)(const struct rm_filter_chain_info *chain,
                           const struct Google__Protobuf__Any *any, const char *path,
                           struct rm_error *err);
    /** Optional: compile a typed_per_filter_config value (route, virtual host, route
     *  configuration or weighted cluster; already unwrapped from FilterConfig) at config time.
     *  Errors name the field under <path>.  NULL with <err> on failure.  A filter without it
     *  rejects per-route config.  The result is what rm_filter_route_config() returns. */
    void *(*route_config_new)(const struct Google__Protobuf__Any *any, const char *path,
                              struct rm_error *err);
    void (*route_config_free)(void *config);
    size_t instance_size; /* ≥ sizeof(struct rm_filter) */
    void (*on_init)(struct rm_filter *f);
    enum rm_filter_status (*on_request_headers)(struct rm_filter *f, struct rm_headers *h,
                                                bool end_stream);
    enum rm_filter_status (*on_request_data)(struct rm_filter *f, const uint8_t *p, size_t n,
                                             bool end_stream);
    enum rm_filter_status (*on_request_trailers)(struct rm_filter *f, struct rm_headers *h);
    enum rm_filter_status (*on_response_headers)(struct rm_filter *f, struct rm_headers *h,
                                                 bool end_stream);
    enum rm_filter_status (*on_response_data)(struct rm_filter *f, const uint8_t *p, size_t n,
                                              bool end_stream);
    enum rm_filter_status (*on_response_trailers)(struct rm_filter *f, struct rm_headers *h);
    /** Downstream reset or stream end: release what the instance holds.  Always called once. */
    void (*on_destroy)(struct rm_filter *f);
};

/** Find a filter by Envoy extension name or by typed_config type (full message name). */
const struct rm_filter_ops *rm_filter_lookup(const char *name, const char *type_name);

/** The per-route config of <f> for its request: the most specific of the picked weighted
 *  cluster, the route, the virtual host and the route configuration that has a
 *  typed_per_filter_config entry for this filter (by its name in http_filters); NULL if none.
 *  Valid from on_request_headers on; no allocation, no protobuf. */
const void *rm_filter_route_config(const struct rm_filter *f);

/** Every per-route config of <f> for its request, most specific first (weighted cluster, route,
 *  virtual host, route configuration: the levels that have one), into <out>; returns how many.
 *  For filters that merge levels field by field (CORS). */
unsigned rm_filter_route_configs(const struct rm_filter *f, const void *out[4]);

/** Resume a request held by <f> (RM_FILTER_STOP): the next filters see the held events. */
void rm_filter_continue(struct rm_filter *f);
/** Answer locally: <status> with <flags> (Envoy response flags, e.g. "UH") and <body>
 *  (may be NULL).  gRPC requests get a trailers-only reply with the mapped grpc-status. */
void rm_filter_reply(struct rm_filter *f, unsigned status, const char *flags, const char *body);

/** A local reply with the options rm_filter_reply() leaves at their defaults. */
struct rm_local_reply {
    unsigned status;   /* HTTP status (gRPC requests: mapped to grpc-status, see grpc_status) */
    int grpc_status;   /* >= 0: the grpc-status of a gRPC request's reply; -1: mapped */
    const char *flags; /* Envoy response flags, or NULL */
    /* Envoy's response code details (RESPONSE_CODE_DETAILS: "fault_filter_abort"…), a string
     * that outlives the stream (a literal), or NULL */
    const char *details;
    const char *body; /* may be NULL */
    /** Called with the reply's headers before they are sent (may be NULL): add or change
     *  headers.  Runs synchronously inside rm_filter_reply_ex(). */
    void (*edit_headers)(void *ctx, struct rm_headers *h);
    void *ctx;
};
/** rm_filter_reply() with the options of <r> (read during the call only). */
void rm_filter_reply_ex(struct rm_filter *f, const struct rm_local_reply *r);

/* Built-in filters. */
extern const struct rm_filter_ops rm_filter_router;
extern const struct rm_filter_ops rm_filter_local_ratelimit;
extern const struct rm_filter_ops rm_filter_fault;
extern const struct rm_filter_ops rm_filter_health_check;
extern const struct rm_filter_ops rm_filter_cors;
extern const struct rm_filter_ops rm_filter_rbac;

#endif
