#include "proxy/upstream/cluster.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/core/v3/protocol.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/extensions/upstreams/http/v3/http_protocol_options.pb-c.h"
#include "proxy/config/pbutil.h"

#define HTTP_OPTS_TYPE "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

typedef Envoy__Config__Cluster__V3__Cluster Cluster;

void rm_sockaddr_str(const struct sockaddr *sa, char *buf, size_t len)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)sa;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
        snprintf(buf, len, "%s:%u", ip, ntohs(a->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)sa;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
        snprintf(buf, len, "[%s]:%u", ip, ntohs(a->sin6_port));
    } else {
        snprintf(buf, len, "unknown");
    }
}

void rm_cluster_free(struct rm_cluster *c)
{
    if (!c)
        return;
    rm_outlier_free(c->outlier);
    for (int i = 0; i < RM_CB_PRIORITIES; i++)
        rm_cb_free(c->cb[i]);
    for (size_t i = 0; i < c->n_hosts; i++) {
        if (c->hosts[i])
            free(c->hosts[i]->hostname);
        free(c->hosts[i]);
    }
    free(c->hosts);
    free(c->name);
    free(c->stat_name);
    free(c);
}

static void apply_h2_options(struct rm_cluster *c, const Envoy__Config__Core__V3__Http2ProtocolOptions *o)
{
    c->proto = RM_UPSTREAM_HTTP2;
    if (!o)
        return;
    c->codec.h2_initial_stream_window = rm_pb_u32(o->initial_stream_window_size, 0);
    c->codec.h2_initial_conn_window = rm_pb_u32(o->initial_connection_window_size, 0);
    c->codec.h2_max_concurrent_streams = rm_pb_u32(o->max_concurrent_streams, 0);
}

static void apply_common_options(struct rm_cluster *c, const Envoy__Config__Core__V3__HttpProtocolOptions *o)
{
    if (!o)
        return;
    c->idle_timeout_ms = rm_pb_duration_ms(o->idle_timeout, c->idle_timeout_ms);
    c->max_requests_per_connection = rm_pb_u32(o->max_requests_per_connection,
                                               c->max_requests_per_connection);
    if (o->max_headers_count)
        c->codec.max_headers_count = o->max_headers_count->value;
}

typedef Envoy__Extensions__Upstreams__Http__V3__HttpProtocolOptions HttpOpts;

static int apply_http_options(struct rm_cluster *c, const HttpOpts *o, const char *path,
                              struct rm_error *err)
{
    apply_common_options(c, o->common_http_protocol_options);
    switch (o->upstream_protocol_options_case) {
    case ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__UPSTREAM_PROTOCOL_OPTIONS_EXPLICIT_HTTP_CONFIG:
        if (o->explicit_http_config->protocol_config_case ==
            ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__EXPLICIT_HTTP_CONFIG__PROTOCOL_CONFIG_HTTP2_PROTOCOL_OPTIONS)
            apply_h2_options(c, o->explicit_http_config->http2_protocol_options);
        else
            c->proto = RM_UPSTREAM_HTTP1;
        return RM_OK;
    case ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__UPSTREAM_PROTOCOL_OPTIONS_USE_DOWNSTREAM_PROTOCOL_CONFIG:
        c->proto = RM_UPSTREAM_USE_DOWNSTREAM;
        if (o->use_downstream_protocol_config->http2_protocol_options) {
            apply_h2_options(c, o->use_downstream_protocol_config->http2_protocol_options);
            c->proto = RM_UPSTREAM_USE_DOWNSTREAM;
        }
        return RM_OK;
    case ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__UPSTREAM_PROTOCOL_OPTIONS_AUTO_CONFIG:
        return rm_error_set(err, "%s.auto_config: ALPN protocol selection needs TLS, which remora "
                            "does not support yet; use explicit_http_config", path);
    default:
        return RM_OK;
    }
}

static int parse_protocol_options(struct rm_cluster *c, const Cluster *pb, const char *path,
                                  struct rm_error *err)
{
    if (pb->http2_protocol_options)
        apply_h2_options(c, pb->http2_protocol_options);
    apply_common_options(c, pb->common_http_protocol_options);
    if (pb->protocol_selection == ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_PROTOCOL_SELECTION__USE_DOWNSTREAM_PROTOCOL)
        c->proto = RM_UPSTREAM_USE_DOWNSTREAM;
    for (size_t i = 0; i < pb->n_typed_extension_protocol_options; i++) {
        const Envoy__Config__Cluster__V3__Cluster__TypedExtensionProtocolOptionsEntry *e =
            pb->typed_extension_protocol_options[i];
        char p[512];
        snprintf(p, sizeof(p), "%s.typed_extension_protocol_options[\"%s\"]", path, e->key);
        if (strcmp(e->key, "envoy.extensions.upstreams.http.v3.HttpProtocolOptions") != 0)
            return rm_error_set(err, "%s: unknown protocol options extension", p);
        const char *url = e->value ? e->value->type_url : "";
        const char *slash = strrchr(url, '/');
        if (!slash || strcmp(slash + 1, HTTP_OPTS_TYPE) != 0)
            return rm_error_set(err, "%s.@type: expected type.googleapis.com/" HTTP_OPTS_TYPE
                                ", got \"%s\"", p, url);
        HttpOpts *o = envoy__extensions__upstreams__http__v3__http_protocol_options__unpack(
            NULL, e->value->value.len, e->value->value.data);
        if (!o)
            return rm_error_set(err, "%s: malformed HttpProtocolOptions", p);
        int rc = apply_http_options(c, o, p, err);
        envoy__extensions__upstreams__http__v3__http_protocol_options__free_unpacked(o, NULL);
        if (rc)
            return rc;
    }
    return RM_OK;
}

static int add_host(struct rm_cluster *c, const Envoy__Config__Endpoint__V3__LbEndpoint *le,
                    const char *path, struct rm_error *err)
{
    if (le->host_identifier_case != ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__HOST_IDENTIFIER_ENDPOINT)
        return rm_error_set(err, "%s.endpoint: required (endpoint_name is not supported)", path);
    struct rm_host *h = calloc(1, sizeof(*h));
    if (!h)
        return rm_error_set(err, "%s: out of memory", path);
    c->hosts[c->n_hosts++] = h;
    char p[512];
    snprintf(p, sizeof(p), "%s.endpoint.address", path);
    if (rm_pb_address(le->endpoint->address, p, &h->addr, &h->addr_len, err))
        return RM_ERR;
    rm_sockaddr_str((struct sockaddr *)&h->addr, h->addr_str, sizeof(h->addr_str));
    if (le->endpoint->hostname && le->endpoint->hostname[0])
        h->hostname = strdup(le->endpoint->hostname);
    h->weight = rm_pb_u32(le->load_balancing_weight, 1);
    if (h->weight == 0)
        return rm_error_set(err, "%s.load_balancing_weight: must be at least 1", path);
    h->health = (enum rm_health)le->health_status;
    return RM_OK;
}

static int parse_hosts(struct rm_cluster *c, const Cluster *pb, const char *path,
                       struct rm_error *err)
{
    const Envoy__Config__Endpoint__V3__ClusterLoadAssignment *la = pb->load_assignment;
    if (!la)
        return RM_OK; /* a cluster with no hosts: every request gets 503 UH */
    if (la->policy)
        return rm_error_set(err, "%s.load_assignment.policy: not supported by remora yet", path);
    if (la->n_named_endpoints)
        return rm_error_set(err, "%s.load_assignment.named_endpoints: not supported", path);
    size_t total = 0;
    for (size_t i = 0; i < la->n_endpoints; i++)
        total += la->endpoints[i]->n_lb_endpoints;
    c->hosts = calloc(total ? total : 1, sizeof(*c->hosts));
    if (!c->hosts)
        return rm_error_set(err, "%s: out of memory", path);
    for (size_t i = 0; i < la->n_endpoints; i++) {
        const Envoy__Config__Endpoint__V3__LocalityLbEndpoints *lle = la->endpoints[i];
        if (lle->priority != 0)
            return rm_error_set(err, "%s.load_assignment.endpoints[%zu].priority: only priority 0 "
                                "is supported by remora yet", path, i);
        for (size_t j = 0; j < lle->n_lb_endpoints; j++) {
            char p[512];
            snprintf(p, sizeof(p), "%s.load_assignment.endpoints[%zu].lb_endpoints[%zu]", path, i,
                     j);
            if (add_host(c, lle->lb_endpoints[j], p, err))
                return RM_ERR;
        }
    }
    return RM_OK;
}

static int check_supported(const Cluster *pb, const char *path, struct rm_error *err)
{
    if (pb->cluster_discovery_type_case ==
        ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_CLUSTER_TYPE)
        return rm_error_set(err, "%s.cluster_type: \"%s\" is not supported by remora yet", path,
                            pb->cluster_type->name);
    if (pb->cluster_discovery_type_case ==
            ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_TYPE &&
        pb->type != ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__STATIC) {
        const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
            &envoy__config__cluster__v3__cluster__discovery_type__descriptor, (int)pb->type);
        return rm_error_set(err, "%s.type: %s clusters are not supported by remora yet", path,
                            v ? v->name : "this");
    }
    switch (pb->lb_policy) {
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__ROUND_ROBIN:
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__LEAST_REQUEST:
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__RANDOM:
        break;
    default: {
        const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
            &envoy__config__cluster__v3__cluster__lb_policy__descriptor, (int)pb->lb_policy);
        return rm_error_set(err, "%s.lb_policy: %s is not supported by remora yet", path,
                            v ? v->name : "this policy");
    }
    }
    static const struct {
        size_t off;
        const char *name;
    } unsupported[] = {
        {offsetof(Cluster, eds_cluster_config), "eds_cluster_config"},
        {offsetof(Cluster, transport_socket), "transport_socket"},
        {offsetof(Cluster, upstream_http_protocol_options), "upstream_http_protocol_options"},
        {offsetof(Cluster, typed_dns_resolver_config), "typed_dns_resolver_config"},
    };
    for (size_t i = 0; i < sizeof(unsupported) / sizeof(unsupported[0]); i++) {
        if (*(void *const *)((const char *)pb + unsupported[i].off))
            return rm_error_set(err, "%s.%s: not supported by remora yet", path,
                                unsupported[i].name);
    }
    return RM_OK;
}

/* Ejections change membership_healthy (counted on the calling thread's shard) for hosts that
 * are healthy otherwise. */
static void outlier_changed(void *ctx, struct rm_outlier_host *oh, bool ejected)
{
    struct rm_cluster *c = ctx;
    const struct rm_host *h = rm_container_of(oh, struct rm_host, outlier);
    if (h->health == RM_HEALTH_UNKNOWN || h->health == RM_HEALTH_HEALTHY ||
        h->health == RM_HEALTH_DEGRADED)
        rm_stat_add(c->stats, RM_CS_MEMBERSHIP_HEALTHY, ejected ? -1 : 1);
}

static int setup_outlier(struct rm_cluster *c, const Cluster *pb, const char *path,
                         const char *stat_prefix, struct rm_error *err)
{
    char p[512];
    snprintf(p, sizeof(p), "%s.outlier_detection", path);
    struct rm_outlier_config cfg;
    if (rm_outlier_config_parse(pb->outlier_detection, p, &cfg, err))
        return RM_ERR;
    struct rm_outlier_host **oh = calloc(c->n_hosts ? c->n_hosts : 1, sizeof(*oh));
    if (!oh)
        return rm_error_set(err, "%s: out of memory", path);
    for (size_t i = 0; i < c->n_hosts; i++) {
        oh[i] = &c->hosts[i]->outlier;
        oh[i]->name = c->hosts[i]->addr_str;
    }
    c->outlier = rm_outlier_new(&cfg, stat_prefix, oh, c->n_hosts);
    free(oh);
    if (!c->outlier)
        return rm_error_set(err, "%s: out of memory", path);
    c->outlier->on_change = outlier_changed;
    c->outlier->on_change_ctx = c;
    return RM_OK;
}

/* Cluster.circuit_breakers (Envoy's defaults when absent): one resource manager per priority. */
static int setup_circuit_breakers(struct rm_cluster *c, const Cluster *pb, const char *path,
                                  const char *stat_prefix, struct rm_error *err)
{
    char p[512];
    snprintf(p, sizeof(p), "%s.circuit_breakers", path);
    struct rm_cb_thresholds lim[RM_CB_PRIORITIES];
    if (rm_cb_parse(pb->circuit_breakers, p, lim, err))
        return RM_ERR;
    for (int i = 0; i < RM_CB_PRIORITIES; i++)
        c->cb[i] = rm_cb_new(&lim[i], stat_prefix, i);
    return RM_OK;
}

struct rm_cluster *rm_cluster_new(const Cluster *pb, const char *path, struct rm_error *err)
{
    if (!pb->name || !pb->name[0]) {
        rm_error_set(err, "%s.name: a cluster needs a name", path);
        return NULL;
    }
    if (check_supported(pb, path, err))
        return NULL;
    struct rm_cluster *c = calloc(1, sizeof(*c));
    if (!c)
        goto fail_oom;
    c->pb = pb;
    c->name = strdup(pb->name);
    c->stat_name = strdup(pb->alt_stat_name && pb->alt_stat_name[0] ? pb->alt_stat_name : pb->name);
    if (!c->name || !c->stat_name)
        goto fail_oom;
    c->lb_policy = (enum rm_lb_policy)pb->lb_policy;
    c->lr_choice_count = 2;
    if (pb->lb_config_case == ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_CONFIG_LEAST_REQUEST_LB_CONFIG)
        c->lr_choice_count = rm_pb_u32(pb->least_request_lb_config->choice_count, 2);
    c->connect_timeout_ms = rm_pb_duration_ms(pb->connect_timeout, 5000);
    c->idle_timeout_ms = 3600 * 1000;
    c->codec.buffer_limit = rm_pb_u32(pb->per_connection_buffer_limit_bytes, 1024 * 1024);
    c->max_requests_per_connection = rm_pb_u32(pb->max_requests_per_connection, 0);
    c->proto = RM_UPSTREAM_HTTP1;
    c->healthy_panic_threshold = 50;
    if (pb->common_lb_config && pb->common_lb_config->healthy_panic_threshold)
        c->healthy_panic_threshold = (uint32_t)pb->common_lb_config->healthy_panic_threshold->value;
    if (parse_protocol_options(c, pb, path, err) || parse_hosts(c, pb, path, err))
        goto fail;
    char prefix[300];
    snprintf(prefix, sizeof(prefix), "cluster.%s.", c->stat_name);
    c->stats = rm_stats_get(prefix, rm_cluster_stat_defs, RM_CS__COUNT);
    if (pb->outlier_detection && setup_outlier(c, pb, path, prefix, err))
        goto fail;
    if (setup_circuit_breakers(c, pb, path, prefix, err))
        goto fail;
    return c;
fail_oom:
    rm_error_set(err, "%s: out of memory", path);
fail:
    rm_cluster_free(c);
    return NULL;
}

void rm_cluster_update_membership(struct rm_cluster *c)
{
    int64_t healthy = 0;
    for (size_t i = 0; i < c->n_hosts; i++)
        healthy += rm_host_routable(c->hosts[i]);
    rm_stat_set(c->stats, RM_CS_MEMBERSHIP_TOTAL, (int64_t)c->n_hosts);
    rm_stat_set(c->stats, RM_CS_MEMBERSHIP_HEALTHY, healthy);
}
