/* Envoy's ConfigSource, as remora supports it: `ads: {}` (the bootstrap's ADS stream) or
 * `api_config_source` with api_type GRPC or DELTA_GRPC and one envoy_grpc service (a stream of
 * its own per resource type, to that cluster).  Where a listener's routes, a cluster's
 * endpoints, or the bootstrap's listeners and clusters come from. */
#ifndef RM_CONFIG_CONFIG_SOURCE_H
#define RM_CONFIG_CONFIG_SOURCE_H

#include <stdbool.h>
#include <stdint.h>

#include "proxy/core/error.h"

struct Envoy__Config__Core__V3__ConfigSource;

struct rm_config_source {
    bool ads;      /* ads: {} */
    bool delta;    /* api_config_source.api_type DELTA_GRPC */
    char *cluster; /* api_config_source's envoy_grpc cluster_name (malloc'd), NULL with ads */
    uint32_t init_timeout_ms; /* initial_fetch_timeout (default 15 s; 0 = none) */
    uint32_t max_msg;         /* envoy_grpc.max_receive_message_length (0: the client's default) */
};

/** Read <cs> (errors name the field under <path>).  RM_OK with <out> filled (dispose it), or
 *  RM_ERR with <out> empty. */
int rm_config_source_parse(const struct Envoy__Config__Core__V3__ConfigSource *cs, const char *path,
                           struct rm_config_source *out, struct rm_error *err);
void rm_config_source_dispose(struct rm_config_source *s);
/** Deep copy (aborts when out of memory). */
void rm_config_source_copy(struct rm_config_source *dst, const struct rm_config_source *src);
/** The same stream: both ADS, or the same cluster and protocol variant. */
bool rm_config_source_same(const struct rm_config_source *a, const struct rm_config_source *b);
/** "ads" or "api_config_source (CLUSTER, GRPC|DELTA_GRPC)" into <buf>; returns buf. */
const char *rm_config_source_str(const struct rm_config_source *s, char *buf, unsigned len);

#endif
