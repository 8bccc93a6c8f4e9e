/* Request mirroring (Envoy's RequestMirrorPolicy, "shadowing"): a copy of a request sent to
 * another cluster, fire and forget.  Its response is read and dropped; it counts in the mirror
 * cluster's stats, host counters and outlier detection like any request, and never changes what
 * the client gets.
 *
 * A shadow is made when the router has the request headers (rm_shadow_new: the headers are
 * copied then, as the primary will send them) and started once the request is complete
 * (rm_shadow_start: the body and trailers are copied then).  From the start it belongs to its
 * worker, not to the request: it lives until its response ends, it is reset, its timeout fires,
 * or the worker stops (rm_shadow_cancel_all).  Everything it holds is its own (an arena, a hold
 * on the cluster view, a max_requests slot of the cluster's circuit breakers), so the request
 * that made it may end first.  Bounded: a shadow that finds the breakers' max_requests full, or
 * no host, is not sent (upstream_rq_pending_overflow / upstream_cx_none_healthy counted). */
#ifndef RM_FILTERS_SHADOW_H
#define RM_FILTERS_SHADOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/http/codec.h"

struct rm_shadow;
struct rm_worker;
struct rm_worker_cluster;

/** A shadow of the request <req> for cluster view <wc> (held by the shadow) on worker <w>:
 *  <req> is copied, with "-shadow" appended to its host (before any port) when <host_suffix>;
 *  <down_proto> is the downstream protocol (for clusters with use_downstream_protocol);
 *  <priority> the route's (0 default, 1 high); <timeout_ms> bounds it from its start (0 =
 *  none: Envoy uses the route's timeout).  Not sent yet: rm_shadow_start or rm_shadow_abort
 *  must follow.  NULL when out of memory. */
struct rm_shadow *rm_shadow_new(struct rm_worker *w, struct rm_worker_cluster *wc,
                                const struct rm_headers *req, bool host_suffix,
                                enum rm_http_proto down_proto, unsigned priority,
                                uint32_t timeout_ms);
/** Send it with <body> (<len> bytes, copied) and <trailers> (NULL: none; copied).  The shadow
 *  belongs to its worker from here on: the caller must not touch it again. */
void rm_shadow_start(struct rm_shadow *s, const uint8_t *body, size_t len,
                     const struct rm_headers *trailers);
/** Drop a shadow that was never started (the request was abandoned).  NULL is a no-op. */
void rm_shadow_abort(struct rm_shadow *s);
/** Reset every shadow <w> still runs (the worker is stopping).  Worker thread; their memory
 *  goes with the loop's pending tasks (rm_loop_run_pending). */
void rm_shadow_cancel_all(struct rm_worker *w);

#endif
