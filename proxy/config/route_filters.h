/* typed_per_filter_config, bound to a connection manager's filter chain (config time).
 *
 * A route table records its typed_per_filter_config entries without knowing the filters; the
 * snapshot builder then binds them here: each entry's key must name a filter of the chain (or be
 * wrapped in an optional envoy.config.route.v3.FilterConfig), and that filter compiles the value
 * with its route_config_new op. */
#ifndef RM_CONFIG_ROUTE_FILTERS_H
#define RM_CONFIG_ROUTE_FILTERS_H

#include "proxy/config/snapshot.h"

/** Bind every entry of <h>->routes to <h>->filters (names, ops): compile them, honour
 *  FilterConfig's is_optional and disabled, and set h->filter_toggles.  RM_OK, or RM_ERR with
 *  <err> naming the entry's field path.  Bound configs are freed with the route table. */
int rm_route_filters_bind(struct rm_hcm_cfg *h, struct rm_error *err);

#endif
