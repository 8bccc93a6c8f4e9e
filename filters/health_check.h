/* envoy.filters.http.health_check: the server's health as HTTP (load balancers and kubelets
 * probe it), and the process-wide "failing health checks" state that admin's
 * /healthcheck/fail and /healthcheck/ok set. */
#ifndef RM_FILTERS_HEALTH_CHECK_H
#define RM_FILTERS_HEALTH_CHECK_H

#include <stdbool.h>

/** Make every health check request fail (503) until called with false (any thread). */
void rm_health_check_set_failing(bool failing);
/** Whether the server is failing health checks (any thread). */
bool rm_health_check_failing(void);

#endif
