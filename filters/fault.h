/* envoy.filters.http.fault: request delays and aborts (Envoy's HTTPFault), and the pure pieces of
 * its decisions, exposed for tests.
 *
 * Per request the settings are the most specific typed_per_filter_config (an HTTPFault) or the
 * filter's own.  When the request goes to upstream_cluster (if set) and matches every header
 * matcher: a delay picked by its percentage holds the request on a timer of the worker loop, then
 * an abort picked by its percentage answers locally ("fault filter abort", flag FI; DI for
 * delays).  At most max_active_faults requests of this filter (all workers) carry a fault at
 * once.  Stats under http.<stat_prefix>.fault.: delays_injected, aborts_injected,
 * faults_overflow, response_rl_injected, active_faults (gauge).
 *
 * Header control (Envoy's names): with header_delay, x-envoy-fault-delay-request gives the delay
 * in ms; with header_abort, x-envoy-fault-abort-request the HTTP status ([200, 600)) or
 * x-envoy-fault-abort-grpc-request the gRPC status; x-envoy-fault-delay-request-percentage and
 * x-envoy-fault-abort-request-percentage lower the configured numerator for those two kinds. */
#ifndef RM_FILTERS_FAULT_H
#define RM_FILTERS_FAULT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "filters/percent.h"
#include "proxy/core/error.h"
#include "proxy/http/headers.h"
#include "proxy/http/route.h"

struct Envoy__Extensions__Filters__Http__Fault__V3__HTTPFault;

enum rm_fault_abort_kind {
    RM_FAULT_ABORT_NONE,
    RM_FAULT_ABORT_HTTP,   /* http_status */
    RM_FAULT_ABORT_GRPC,   /* grpc_status */
    RM_FAULT_ABORT_HEADER, /* header_abort */
};

/** One HTTPFault, compiled (filter level or per route).  Immutable. */
struct rm_fault_settings {
    bool has_delay;
    bool delay_from_header; /* header_delay; else fixed_delay */
    uint64_t delay_ms;      /* fixed_delay, truncated to ms as Envoy */
    struct rm_fraction delay_percent;
    enum rm_fault_abort_kind abort;
    unsigned abort_http;
    unsigned abort_grpc;
    struct rm_fraction abort_percent;
    char *upstream_cluster; /* NULL: any */
    struct rm_header_match *headers;
    size_t n_headers;
    bool has_max_active;
    uint32_t max_active;
    struct rm_route_parts *parts; /* memory of upstream_cluster and headers */
};

/** Compile <pb> found at <path>.  RM_OK, or RM_ERR with <err> naming the field; <s> is disposable
 *  either way. */
int rm_fault_settings_init(struct rm_fault_settings *s,
                           const struct Envoy__Extensions__Filters__Http__Fault__V3__HTTPFault *pb,
                           const char *path, struct rm_error *err);
void rm_fault_settings_dispose(struct rm_fault_settings *s);

/** Does the request match every header matcher of <s>? */
bool rm_fault_headers_match(const struct rm_fault_settings *s, const struct rm_headers *req);

/** Envoy's delayDuration: true with *ms (> 0) when a delay applies to <req>, <rnd> being the
 *  request's random value for the percentage. */
bool rm_fault_delay(const struct rm_fault_settings *s, const struct rm_headers *req, uint64_t rnd,
                    uint64_t *ms);

/** Envoy's abortStatus: true when an abort applies to <req> (random value <rnd>), with the HTTP
 *  status and the gRPC status: -1 for an HTTP abort; a gRPC abort has HTTP status 200 (what a
 *  non-gRPC request then gets, as in Envoy). */
bool rm_fault_abort(const struct rm_fault_settings *s, const struct rm_headers *req, uint64_t rnd,
                    unsigned *http_status, int *grpc_status);

#endif
