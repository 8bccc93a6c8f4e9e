#include "proxy/config/config_source.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/config/core/v3/config_source.pb-c.h"
#include "proxy/config/pbutil.h"

typedef Envoy__Config__Core__V3__ApiConfigSource ApiConfigSource;

static int parse_api(const ApiConfigSource *a, const char *path, struct rm_config_source *out,
                     struct rm_error *err)
{
    if (a->api_type != ENVOY__CONFIG__CORE__V3__API_CONFIG_SOURCE__API_TYPE__GRPC &&
        a->api_type != ENVOY__CONFIG__CORE__V3__API_CONFIG_SOURCE__API_TYPE__DELTA_GRPC)
        return rm_error_set(err,
                            "%s.api_config_source.api_type: only GRPC and DELTA_GRPC are "
                            "supported by remora (or ads: {})",
                            path);
    if (a->transport_api_version != ENVOY__CONFIG__CORE__V3__API_VERSION__V3 &&
        a->transport_api_version != ENVOY__CONFIG__CORE__V3__API_VERSION__AUTO)
        return rm_error_set(err, "%s.api_config_source.transport_api_version: only V3", path);
    if (a->n_cluster_names)
        return rm_error_set(err,
                            "%s.api_config_source.cluster_names: only for REST; use "
                            "grpc_services",
                            path);
    if (a->n_grpc_services != 1 ||
        a->grpc_services[0]->target_specifier_case !=
            ENVOY__CONFIG__CORE__V3__GRPC_SERVICE__TARGET_SPECIFIER_ENVOY_GRPC ||
        !a->grpc_services[0]->envoy_grpc->cluster_name ||
        !a->grpc_services[0]->envoy_grpc->cluster_name[0])
        return rm_error_set(err,
                            "%s.api_config_source.grpc_services: exactly one envoy_grpc "
                            "service with a cluster_name is required",
                            path);
    out->delta = a->api_type == ENVOY__CONFIG__CORE__V3__API_CONFIG_SOURCE__API_TYPE__DELTA_GRPC;
    out->max_msg = rm_pb_u32(a->grpc_services[0]->envoy_grpc->max_receive_message_length, 0);
    out->cluster = strdup(a->grpc_services[0]->envoy_grpc->cluster_name);
    return out->cluster ? RM_OK : rm_error_set(err, "out of memory");
}

int rm_config_source_parse(const struct Envoy__Config__Core__V3__ConfigSource *cs, const char *path,
                           struct rm_config_source *out, struct rm_error *err)
{
    *out = (struct rm_config_source){0};
    if (!cs) return rm_error_set(err, "%s: required", path);
    if (cs->resource_api_version != ENVOY__CONFIG__CORE__V3__API_VERSION__V3 &&
        cs->resource_api_version != ENVOY__CONFIG__CORE__V3__API_VERSION__AUTO)
        return rm_error_set(err, "%s.resource_api_version: only V3", path);
    out->init_timeout_ms = rm_pb_duration_ms(cs->initial_fetch_timeout, 15000);
    switch (cs->config_source_specifier_case) {
    case ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS:
        out->ads = true;
        return RM_OK;
    case ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_API_CONFIG_SOURCE:
        if (parse_api(cs->api_config_source, path, out, err) == RM_OK) return RM_OK;
        rm_config_source_dispose(out);
        return RM_ERR;
    default:
        return rm_error_set(err,
                            "%s: only ads: {} or api_config_source (GRPC, DELTA_GRPC) are "
                            "supported by remora",
                            path);
    }
}

void rm_config_source_dispose(struct rm_config_source *s)
{
    free(s->cluster);
    *s = (struct rm_config_source){0};
}

void rm_config_source_copy(struct rm_config_source *dst, const struct rm_config_source *src)
{
    *dst = *src;
    if (src->cluster && !(dst->cluster = strdup(src->cluster))) abort();
}

bool rm_config_source_same(const struct rm_config_source *a, const struct rm_config_source *b)
{
    if (a->ads || b->ads) return a->ads == b->ads;
    return a->delta == b->delta && strcmp(a->cluster, b->cluster) == 0;
}

const char *rm_config_source_str(const struct rm_config_source *s, char *buf, unsigned len)
{
    if (s->ads)
        snprintf(buf, len, "ads");
    else
        snprintf(buf, len, "api_config_source (%s, %s)", s->cluster,
                 s->delta ? "DELTA_GRPC" : "GRPC");
    return buf;
}
