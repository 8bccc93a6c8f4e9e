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
    unsigned idx;                 /* position in the chain */
};

struct rm_filter_ops {
    const char *name;     /* "envoy.filters.http.router" */
    const char *type_url; /* full message name of its typed_config */
    /** Build the filter's config from its typed_config (<any> may be NULL when omitted).
     *  Errors name the field under <path>.  Returns NULL with <err> on failure; a filter with
     *  no config may return a non-NULL static sentinel. */
    void *(*config_new)(const struct Google__Protobuf__Any *any, const char *path,
                        struct rm_error *err);
    void (*config_free)(void *config);
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

/** Resume a request held by <f> (RM_FILTER_STOP): the next filters see the held events. */
void rm_filter_continue(struct rm_filter *f);
/** Answer locally: <status> with <flags> (Envoy response flags, e.g. "UH") and <body>
 *  (may be NULL).  gRPC requests get a trailers-only reply with the mapped grpc-status. */
void rm_filter_reply(struct rm_filter *f, unsigned status, const char *flags, const char *body);

/* Built-in filters. */
extern const struct rm_filter_ops rm_filter_router;

#endif
