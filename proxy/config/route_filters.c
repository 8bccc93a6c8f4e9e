#include "proxy/config/route_filters.h"

#include <stdio.h>
#include <string.h>

#include "envoy/config/route/v3/filter_config.pb-c.h"
#include "proxy/config/pbtypes.h"

#define FILTER_CONFIG_TYPE "envoy.config.route.v3.FilterConfig"

/* The full message name of an Any's type URL. */
static const char *type_name(const Google__Protobuf__Any *any)
{
    const char *slash = strrchr(any->type_url, '/');
    return slash ? slash + 1 : any->type_url;
}

static int find_filter(const struct rm_hcm_cfg *h, const char *name)
{
    for (size_t i = 0; i < h->n_filters; i++) {
        if (h->filters[i].name && strcmp(h->filters[i].name, name) == 0) return (int)i;
    }
    return -1;
}

/* One entry as a filter sees it: the value unwrapped from FilterConfig. */
struct entry_view {
    const Google__Protobuf__Any *config; /* NULL only when disabled */
    bool is_optional, disabled;
    char path[600]; /* where config sits */
};

/* Unwrap FilterConfig into <v>; *fc is the unpacked message the view points into (or NULL). */
static int unwrap(const struct rm_filter_route_cfg *e, struct entry_view *v,
                  Envoy__Config__Route__V3__FilterConfig **fc, struct rm_error *err)
{
    *fc = NULL;
    snprintf(v->path, sizeof(v->path), "%s", e->path);
    v->config = e->any;
    v->is_optional = v->disabled = false;
    if (strcmp(type_name(e->any), FILTER_CONFIG_TYPE) != 0) return RM_OK;
    ProtobufCMessage *m;
    if (rm_pb_any_unpack(e->any, &envoy__config__route__v3__filter_config__descriptor, &m, err))
        return rm_error_prefix(err, "%s: ", e->path);
    *fc = (Envoy__Config__Route__V3__FilterConfig *)m;
    if (rm_pb_check_no_unknown(m, e->path, err)) return RM_ERR;
    v->is_optional = (*fc)->is_optional;
    v->disabled = (*fc)->disabled;
    v->config = (*fc)->config;
    snprintf(v->path, sizeof(v->path), "%s.config", e->path);
    if (!v->disabled && (!v->config || !v->config->type_url || !*v->config->type_url))
        return rm_error_set(err, "%s: required (unless disabled is true)", v->path);
    return RM_OK;
}

/* Compile the value for http_filters[i]; leaves e unbound when an optional entry cannot apply. */
static int compile(struct rm_hcm_cfg *h, int i, struct rm_filter_route_cfg *e,
                   const struct entry_view *v, struct rm_error *err)
{
    const struct rm_filter_cfg *fc = &h->filters[i];
    if (v->disabled) {
        if (fc->ops == &rm_filter_router)
            return rm_error_set(err, "%s.disabled: the router filter cannot be disabled", e->path);
        e->filter_idx = i;
        e->disabled = true;
        h->filter_toggles = true;
        return RM_OK;
    }
    if (!fc->ops->route_config_new) {
        if (v->is_optional) return RM_OK;
        return rm_error_set(err, "%s: HTTP filter \"%s\" (%s) takes no per-route config in remora",
                            v->path, fc->name, fc->ops->name);
    }
    if (v->is_optional && !rm_pb_lookup_type_url(v->config->type_url))
        return RM_OK; /* a type remora does not know: optional entries may be skipped */
    void *cfg = fc->ops->route_config_new(v->config, v->path, err);
    if (!cfg) return RM_ERR;
    e->filter_idx = i;
    e->config = cfg;
    e->config_free = fc->ops->route_config_free;
    return RM_OK;
}

static int bind_entry(void *ctx, struct rm_filter_route_cfg *e, struct rm_error *err)
{
    struct rm_hcm_cfg *h = ctx;
    struct entry_view v;
    Envoy__Config__Route__V3__FilterConfig *fc;
    int rc = unwrap(e, &v, &fc, err);
    if (rc == RM_OK) {
        int i = find_filter(h, e->name);
        if (i >= 0)
            rc = compile(h, i, e, &v, err);
        else if (!v.is_optional)
            rc = rm_error_set(err,
                              "%s: no HTTP filter named \"%s\" in http_filters (wrap the "
                              "value in an envoy.config.route.v3.FilterConfig with is_optional "
                              "to allow that)",
                              e->path, e->name);
    }
    if (fc) protobuf_c_message_free_unpacked(&fc->base, NULL);
    return rc;
}

int rm_route_filters_bind(struct rm_hcm_cfg *h, struct rm_error *err)
{
    for (size_t i = 0; i < h->n_filters; i++) {
        if (h->filters[i].disabled) h->filter_toggles = true;
    }
    return rm_route_table_bind_filters(h->routes, bind_entry, h, err);
}
