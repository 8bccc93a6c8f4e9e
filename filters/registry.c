/* The table of HTTP filters remora knows, by Envoy extension name and typed_config type. */
#include <string.h>

#include "filters/filter.h"

static const struct rm_filter_ops *const all_filters[] = {
    &rm_filter_router, &rm_filter_local_ratelimit, &rm_filter_fault, &rm_filter_cors,
    &rm_filter_rbac,   &rm_filter_health_check,
};

const struct rm_filter_ops *rm_filter_lookup(const char *name, const char *type_name)
{
    for (size_t i = 0; i < sizeof(all_filters) / sizeof(all_filters[0]); i++) {
        const struct rm_filter_ops *ops = all_filters[i];
        if (type_name && type_name[0]) {
            if (strcmp(ops->type_url, type_name) == 0) return ops;
        } else if (name && strcmp(ops->name, name) == 0) {
            return ops;
        }
    }
    return NULL;
}
