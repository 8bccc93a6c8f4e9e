#include "proxy/upstream/cluster.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/core/v3/protocol.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/extensions/upstreams/http/v3/http_protocol_options.pb-c.h"
#include "proxy/config/pbutil.h"
#include "proxy/core/log.h"
#include "proxy/net/tls.h"
#include "proxy/upstream/dns.h"
#include "proxy/upstream/health_check.h"
#include "proxy/upstream/original_dst.h"

#define HTTP_OPTS_TYPE "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

typedef Envoy__Config__Cluster__V3__Cluster Cluster;

static void free_dns(struct rm_cluster *c)
{
    for (size_t i = 0; i < c->n_dns_targets; i++) {
        free(c->dns_targets[i].name);
        free(c->dns_targets[i].hostname);
        free(c->dns_targets[i].path);
    }
    free(c->dns_targets);
    free(c->dns);
}

/* ---- slots ------------------------------------------------------------------------------- */

static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned *free_slots; /* stack of released slots */
static size_t n_free_slots, cap_free_slots;
static unsigned next_slot;

static unsigned slot_get(void)
{
    pthread_mutex_lock(&slots_lock);
    unsigned s = n_free_slots ? free_slots[--n_free_slots] : next_slot++;
    pthread_mutex_unlock(&slots_lock);
    return s;
}

static void slot_put(unsigned s)
{
    pthread_mutex_lock(&slots_lock);
    if (n_free_slots == cap_free_slots) {
        size_t cap = cap_free_slots ? cap_free_slots * 2 : 64;
        unsigned *v = realloc(free_slots, cap * sizeof(*v));
        if (!v) { /* the slot is lost, never reused: harmless */
            pthread_mutex_unlock(&slots_lock);
            return;
        }
        free_slots = v;
        cap_free_slots = cap;
    }
    free_slots[n_free_slots++] = s;
    pthread_mutex_unlock(&slots_lock);
}

/* ---- lifetime ------------------------------------------------------------------------------ */

struct rm_cluster *rm_cluster_ref(struct rm_cluster *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    return c;
}

void rm_cluster_unref(struct rm_cluster *c)
{
    if (!c || atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1) return;
    rm_health_checker_free(c->hc);
    rm_outlier_free(c->outlier);
    for (int i = 0; i < RM_CB_PRIORITIES; i++)
        rm_cb_free(c->cb[i]);
    rm_stats_release(c->stats); /* gone from every snapshot, worker and request */
    rm_host_set_unref(c->hs);
    free_dns(c);
    if (c->eds_service != c->name) free(c->eds_service); /* both often are the name */
    if (c->stat_name != c->name) free(c->stat_name);
    free(c->name);
    rm_config_source_dispose(&c->eds_src);
    free(c->version_info);
    rm_pb_box_unref(c->pb_box);
    rm_tls_ctx_unref(c->tls);
    pthread_mutex_destroy(&c->tls_lock);
    rm_odst_free(c->odst);
    slot_put(c->slot);
    free(c);
}

struct rm_tls_ctx *rm_cluster_tls(struct rm_cluster *c)
{
    pthread_mutex_lock(&c->tls_lock);
    struct rm_tls_ctx *t = c->tls ? rm_tls_ctx_ref(c->tls) : NULL;
    pthread_mutex_unlock(&c->tls_lock);
    return t;
}

void rm_cluster_set_tls(struct rm_cluster *c, struct rm_tls_ctx *t)
{
    pthread_mutex_lock(&c->tls_lock);
    struct rm_tls_ctx *old = c->tls;
    c->tls = t;
    pthread_mutex_unlock(&c->tls_lock);
    rm_tls_ctx_unref(old);
}

static void apply_h2_options(struct rm_cluster *c,
                             const Envoy__Config__Core__V3__Http2ProtocolOptions *o)
{
    c->proto = RM_UPSTREAM_HTTP2;
    if (!o) return;
    c->codec.h2_initial_stream_window = rm_pb_u32(o->initial_stream_window_size, 0);
    c->codec.h2_initial_conn_window = rm_pb_u32(o->initial_connection_window_size, 0);
    c->codec.h2_max_concurrent_streams = rm_pb_u32(o->max_concurrent_streams, 0);
}

static void apply_common_options(struct rm_cluster *c,
                                 const Envoy__Config__Core__V3__HttpProtocolOptions *o)
{
    if (!o) return;
    c->idle_timeout_ms = rm_pb_duration_ms(o->idle_timeout, c->idle_timeout_ms);
    c->max_requests_per_connection =
        rm_pb_u32(o->max_requests_per_connection, c->max_requests_per_connection);
    if (o->max_headers_count) c->codec.max_headers_count = o->max_headers_count->value;
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
        return rm_error_set(err,
                            "%s.auto_config: ALPN protocol selection is not supported by "
                            "remora yet; use explicit_http_config",
                            path);
    default:
        return RM_OK;
    }
}

static int parse_protocol_options(struct rm_cluster *c, const Cluster *pb, const char *path,
                                  struct rm_error *err)
{
    if (pb->http2_protocol_options) apply_h2_options(c, pb->http2_protocol_options);
    apply_common_options(c, pb->common_http_protocol_options);
    if (pb->protocol_selection ==
        ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_PROTOCOL_SELECTION__USE_DOWNSTREAM_PROTOCOL)
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
            return rm_error_set(
                err, "%s.@type: expected type.googleapis.com/" HTTP_OPTS_TYPE ", got \"%s\"", p,
                url);
        HttpOpts *o = envoy__extensions__upstreams__http__v3__http_protocol_options__unpack(
            NULL, e->value->value.len, e->value->value.data);
        if (!o) return rm_error_set(err, "%s: malformed HttpProtocolOptions", p);
        int rc = apply_http_options(c, o, p, err);
        envoy__extensions__upstreams__http__v3__http_protocol_options__free_unpacked(o, NULL);
        if (rc) return rc;
    }
    return RM_OK;
}

/* ---- endpoints ------------------------------------------------------------------------------ */

typedef Envoy__Config__Endpoint__V3__LbEndpoint LbEndpoint;
typedef Envoy__Config__Endpoint__V3__ClusterLoadAssignment LoadAssignment;

static int check_lb_endpoint(const LbEndpoint *le, const char *path, uint32_t *weight,
                             struct rm_error *err)
{
    if (le->host_identifier_case !=
        ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__HOST_IDENTIFIER_ENDPOINT)
        return rm_error_set(err, "%s.endpoint: required (endpoint_name is not supported)", path);
    *weight = rm_pb_u32(le->load_balancing_weight, 1);
    if (*weight == 0)
        return rm_error_set(err, "%s.load_balancing_weight: must be at least 1", path);
    /* set, these would change where health checks or connections go: not silently ignored */
    const Envoy__Config__Endpoint__V3__Endpoint *e = le->endpoint;
    const Envoy__Config__Endpoint__V3__Endpoint__HealthCheckConfig *hc = e->health_check_config;
    if (hc && (hc->port_value || *hc->hostname || hc->address || hc->disable_active_health_check))
        return rm_error_set(err, "%s.endpoint.health_check_config: not supported by remora yet",
                            path);
    if (e->n_additional_addresses)
        return rm_error_set(err, "%s.endpoint.additional_addresses: not supported by remora yet",
                            path);
    return RM_OK;
}

/* A host of a load assignment: an IP literal address (a name is an error naming the field).
 * s->hostname points into <le>. */
static int assignment_spec(const LbEndpoint *le, int locality, const char *path,
                           struct rm_host_spec *s, struct rm_error *err)
{
    *s = (struct rm_host_spec){.health = (enum rm_health)le->health_status,
                               .locality_idx = locality};
    if (check_lb_endpoint(le, path, &s->weight, err)) return RM_ERR;
    char p[512] = "";
    if (err) snprintf(p, sizeof(p), "%s.endpoint.address", path);
    if (rm_pb_address(le->endpoint->address, p, &s->addr, &s->addr_len, err)) return RM_ERR;
    s->hostname = le->endpoint->hostname;
    return RM_OK;
}

/* Checks shared by every load assignment (<path> names it); *total = the number of
 * lb_endpoints. */
static int check_load_assignment(const LoadAssignment *la, const char *path, size_t *total,
                                 struct rm_error *err)
{
    *total = 0;
    if (!la) return RM_OK;
    if (la->policy) return rm_error_set(err, "%s.policy: not supported by remora yet", path);
    if (la->n_named_endpoints) return rm_error_set(err, "%s.named_endpoints: not supported", path);
    for (size_t i = 0; i < la->n_endpoints; i++) {
        if (la->endpoints[i]->priority != 0)
            return rm_error_set(err,
                                "%s.endpoints[%zu].priority: only priority 0 is supported by "
                                "remora yet",
                                path, i);
        *total += la->endpoints[i]->n_lb_endpoints;
    }
    return RM_OK;
}

int rm_load_assignment_specs(const LoadAssignment *la, const char *path,
                             struct rm_host_spec **specs, size_t *n, struct rm_error *err)
{
    size_t total;
    *specs = NULL;
    *n = 0;
    if (check_load_assignment(la, path, &total, err)) return RM_ERR;
    struct rm_host_spec *sp = calloc(total ? total : 1, sizeof(*sp));
    if (!sp) return rm_error_set(err, "%s: out of memory", path);
    size_t k = 0;
    for (size_t i = 0; la && i < la->n_endpoints; i++) {
        const Envoy__Config__Endpoint__V3__LocalityLbEndpoints *lle = la->endpoints[i];
        for (size_t j = 0; j < lle->n_lb_endpoints; j++) {
            /* paths are made for the message only: an assignment has thousands of hosts */
            if (assignment_spec(lle->lb_endpoints[j], (int)i, "", &sp[k], NULL) == RM_OK) {
                k++;
                continue;
            }
            char p[512];
            snprintf(p, sizeof(p), "%s.endpoints[%zu].lb_endpoints[%zu]", path, i, j);
            assignment_spec(lle->lb_endpoints[j], (int)i, p, &sp[k], err);
            free(sp);
            return RM_ERR;
        }
    }
    *specs = sp;
    *n = k;
    return RM_OK;
}

/* STATIC: the host set, built once (duplicates kept, in order). */
static int parse_static_hosts(struct rm_cluster *c, const Cluster *pb, const char *path,
                              struct rm_error *err)
{
    char lp[512];
    snprintf(lp, sizeof(lp), "%s.load_assignment", path);
    struct rm_host_spec *specs;
    size_t n;
    if (rm_load_assignment_specs(pb->load_assignment, lp, &specs, &n, err)) return RM_ERR;
    struct rm_host **hosts = calloc(n ? n : 1, sizeof(*hosts));
    int rc = hosts ? RM_OK : rm_error_set(err, "%s: out of memory", path);
    size_t made = 0;
    for (; rc == RM_OK && made < n; made++) {
        hosts[made] = rm_host_new(&specs[made]);
        if (!hosts[made]) rc = rm_error_set(err, "%s: out of memory", path);
    }
    if (rc == RM_OK) {
        c->hs = rm_host_set_new(hosts, n); /* no load_assignment: no host, 503 UH */
        if (!c->hs) rc = rm_error_set(err, "%s: out of memory", path);
    }
    for (size_t i = 0; hosts && i < made; i++)
        rm_host_unref(hosts[i]);
    free(hosts);
    free(specs);
    return rc;
}

/* EDS: eds_config is the bootstrap's ADS stream or a gRPC api_config_source; the cluster starts
 * with no host (its assignments come from xds/xds_manager.c). */
static int parse_eds(struct rm_cluster *c, const Cluster *pb, const char *path,
                     struct rm_error *err)
{
    const Envoy__Config__Cluster__V3__Cluster__EdsClusterConfig *e = pb->eds_cluster_config;
    char p[300];
    snprintf(p, sizeof(p), "%s.eds_cluster_config.eds_config", path);
    if (rm_config_source_parse(e ? e->eds_config : NULL, p, &c->eds_src, err)) return RM_ERR;
    if (pb->load_assignment)
        return rm_error_set(err, "%s.load_assignment: an EDS cluster gets its endpoints from EDS",
                            path);
    const char *svc = e->service_name && e->service_name[0] ? e->service_name : pb->name;
    c->eds_service = strcmp(svc, c->name) == 0 ? c->name : strdup(svc);
    c->eds_init_timeout_ms = c->eds_src.init_timeout_ms;
    c->hs = rm_host_set_new(NULL, 0);
    if (!c->eds_service || !c->hs) return rm_error_set(err, "%s: out of memory", path);
    return RM_OK;
}

/* A DNS cluster endpoint: socket_address {address: NAME (or an IP literal), port_value}. */
static int dns_target(struct rm_dns_target *t, const LbEndpoint *le, int locality, const char *path,
                      struct rm_error *err)
{
    if (check_lb_endpoint(le, path, &t->weight, err)) return RM_ERR;
    const Envoy__Config__Core__V3__Address *a = le->endpoint->address;
    char p[512];
    snprintf(p, sizeof(p), "%s.endpoint.address", path);
    if (a && a->address_case == ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_PIPE)
        return rm_error_set(err,
                            "%s.pipe: a DNS cluster's endpoints are DNS names and ports, not unix "
                            "sockets",
                            p);
    if (!a || a->address_case != ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS)
        return rm_error_set(err, "%s.socket_address: required (a DNS name and a port)", p);
    const Envoy__Config__Core__V3__SocketAddress *sa = a->socket_address;
    if (sa->protocol != ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PROTOCOL__TCP)
        return rm_error_set(err, "%s.socket_address.protocol: only TCP is supported", p);
    if (sa->port_specifier_case !=
            ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE ||
        sa->port_value == 0 || sa->port_value > 65535)
        return rm_error_set(err,
                            "%s.socket_address.port_value: required, 1..65535 (named_port is "
                            "not supported)",
                            p);
    if (sa->resolver_name && sa->resolver_name[0])
        return rm_error_set(err, "%s.socket_address.resolver_name: not supported by remora", p);
    size_t len = sa->address ? strlen(sa->address) : 0;
    if (len == 0 || len > 253)
        return rm_error_set(err,
                            "%s.socket_address.address: a DNS name of 1 to 253 characters is "
                            "required",
                            p);
    const char *hn =
        le->endpoint->hostname && le->endpoint->hostname[0] ? le->endpoint->hostname : sa->address;
    t->name = strdup(sa->address);
    t->hostname = strdup(hn);
    t->path = strdup(path);
    t->port = (uint16_t)sa->port_value;
    t->health = (enum rm_health)le->health_status;
    t->locality_idx = locality;
    if (!t->name || !t->hostname || !t->path) return rm_error_set(err, "%s: out of memory", path);
    return RM_OK;
}

/* STRICT_DNS / LOGICAL_DNS: the resolution settings and the names to resolve.  The cluster
 * starts with no host (proxy/upstream/dns_cluster.c fills it in). */
static int parse_dns(struct rm_cluster *c, const Cluster *pb, const char *path,
                     struct rm_error *err)
{
    c->dns = calloc(1, sizeof(*c->dns));
    c->hs = rm_host_set_new(NULL, 0);
    if (!c->dns || !c->hs) return rm_error_set(err, "%s: out of memory", path);
    if (rm_dns_cluster_cfg_from_cluster(pb, path, c->dns, err)) return RM_ERR;
    const LoadAssignment *la = pb->load_assignment;
    size_t total;
    char lp[512];
    snprintf(lp, sizeof(lp), "%s.load_assignment", path);
    if (check_load_assignment(la, lp, &total, err)) return RM_ERR;
    if (c->dns->logical && (total != 1 || la->n_endpoints != 1))
        return rm_error_set(err,
                            "%s.load_assignment: a LOGICAL_DNS cluster needs exactly one "
                            "locality with exactly one lb_endpoint (got %zu lb_endpoints)",
                            path, total);
    c->dns_targets = calloc(total ? total : 1, sizeof(*c->dns_targets));
    if (!c->dns_targets) return rm_error_set(err, "%s: out of memory", path);
    for (size_t i = 0; la && i < la->n_endpoints; i++) {
        const Envoy__Config__Endpoint__V3__LocalityLbEndpoints *lle = la->endpoints[i];
        for (size_t j = 0; j < lle->n_lb_endpoints; j++) {
            char p[512];
            snprintf(p, sizeof(p), "%s.load_assignment.endpoints[%zu].lb_endpoints[%zu]", path, i,
                     j);
            struct rm_dns_target *t = &c->dns_targets[c->n_dns_targets++];
            if (dns_target(t, lle->lb_endpoints[j], (int)i, p, err)) return RM_ERR;
        }
    }
    return RM_OK;
}

static bool is_eds(const Cluster *pb)
{
    return pb->cluster_discovery_type_case ==
               ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_TYPE &&
           pb->type == ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__EDS;
}

static int parse_hosts(struct rm_cluster *c, const Cluster *pb, const char *path,
                       struct rm_error *err)
{
    if (rm_dns_cluster_is_dns(pb)) return parse_dns(c, pb, path, err);
    if (is_eds(pb)) return parse_eds(c, pb, path, err);
    if (rm_odst_is(pb)) { /* hosts come with requests (original_dst.c) */
        if (!(c->hs = rm_host_set_new(NULL, 0)))
            return rm_error_set(err, "%s: out of memory", path);
        return RM_OK;
    }
    return parse_static_hosts(c, pb, path, err);
}

static int check_supported(const Cluster *pb, const char *path, struct rm_error *err)
{
    bool dns = rm_dns_cluster_is_dns(pb);
    if (pb->cluster_discovery_type_case ==
            ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_CLUSTER_TYPE &&
        !dns)
        return rm_error_set(err,
                            "%s.cluster_type: \"%s\" is not supported by remora yet (only "
                            "envoy.clusters.dns)",
                            path, pb->cluster_type->name);
    if (pb->cluster_discovery_type_case ==
            ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_TYPE &&
        pb->type != ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__STATIC && !dns &&
        !is_eds(pb) && !rm_odst_is(pb)) {
        const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
            &envoy__config__cluster__v3__cluster__discovery_type__descriptor, (int)pb->type);
        return rm_error_set(err, "%s.type: %s clusters are not supported by remora yet", path,
                            v ? v->name : "this");
    }
    if (pb->eds_cluster_config && !is_eds(pb))
        return rm_error_set(err, "%s.eds_cluster_config: only for clusters of type EDS", path);
    if (rm_odst_is(pb)) return RM_OK; /* its lb_policy: rm_odst_parse */
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
        {offsetof(Cluster, upstream_http_protocol_options), "upstream_http_protocol_options"},
    };
    for (size_t i = 0; i < sizeof(unsupported) / sizeof(unsupported[0]); i++) {
        if (*(void *const *)((const char *)pb + unsupported[i].off))
            return rm_error_set(err, "%s.%s: not supported by remora yet", path,
                                unsupported[i].name);
    }
    /* update_merge_window is accepted: remora applies every membership update at once (the
     * window only batches them) */
    if (pb->common_lb_config && pb->common_lb_config->close_connections_on_host_set_change)
        return rm_error_set(err,
                            "%s.common_lb_config.close_connections_on_host_set_change: not "
                            "supported by remora yet",
                            path);
    return RM_OK;
}

/* Ejections change membership_healthy (counted on the calling thread's shard) for hosts that
 * are healthy otherwise. */
static void outlier_changed(void *ctx, struct rm_outlier_host *oh, bool ejected)
{
    struct rm_cluster *c = ctx;
    const struct rm_host *h = rm_container_of(oh, struct rm_host, outlier);
    if (rm_host_health_ok(h)) rm_stat_add(c->stats, RM_CS_MEMBERSHIP_HEALTHY, ejected ? -1 : 1);
}

static const char *outlier_host_name(const struct rm_outlier_host *oh)
{
    return rm_container_of(oh, struct rm_host, outlier)->addr_str;
}

/* The outlier detector's view of a host set (its hosts' embedded outlier state). */
static struct rm_outlier_host **outlier_hosts(const struct rm_host_set *hs)
{
    struct rm_outlier_host **oh = calloc(hs->n ? hs->n : 1, sizeof(*oh));
    for (size_t i = 0; oh && i < hs->n; i++)
        oh[i] = &hs->hosts[i]->outlier;
    return oh;
}

static int setup_outlier(struct rm_cluster *c, const Cluster *pb, const char *path,
                         const char *stat_prefix, struct rm_error *err)
{
    char p[512];
    snprintf(p, sizeof(p), "%s.outlier_detection", path);
    struct rm_outlier_config cfg;
    if (rm_outlier_config_parse(pb->outlier_detection, p, &cfg, err)) return RM_ERR;
    struct rm_outlier_host **oh = outlier_hosts(c->hs);
    if (!oh) return rm_error_set(err, "%s: out of memory", path);
    c->outlier = rm_outlier_new(&cfg, stat_prefix, oh, c->hs->n);
    free(oh);
    if (!c->outlier) return rm_error_set(err, "%s: out of memory", path);
    c->outlier->on_change = outlier_changed;
    c->outlier->on_change_ctx = c;
    c->outlier->host_name = outlier_host_name;
    return RM_OK;
}

static void hc_changed(void *ctx)
{
    rm_cluster_update_membership(ctx);
}

/* Cluster.health_checks: one checker (Envoy supports one), over the cluster's transport. */
static int setup_health_check(struct rm_cluster *c, const Cluster *pb, const char *path,
                              const char *stat_prefix, struct rm_error *err)
{
    char p[512];
    if (pb->n_health_checks > 1)
        return rm_error_set(err,
                            "%s.health_checks[1]: only one health check per cluster is "
                            "supported (as Envoy)",
                            path);
    snprintf(p, sizeof(p), "%s.health_checks[0]", path);
    if (rm_odst_is(pb) || (c->dns && c->dns->logical))
        return rm_error_set(err, "%s: health checks of %s clusters are not supported by remora yet",
                            p, rm_odst_is(pb) ? "ORIGINAL_DST" : "LOGICAL_DNS");
    struct rm_hc_config cfg;
    if (rm_hc_config_parse(pb->health_checks[0], c->name, p, &cfg, err)) return RM_ERR;
    cfg.connect_timeout_ms = c->connect_timeout_ms;
    cfg.tls = c->tls != NULL;
    if (cfg.kind == RM_HC_GRPC && c->proto == RM_UPSTREAM_HTTP1) {
        rm_hc_config_dispose(&cfg);
        return rm_error_set(err,
                            "%s.grpc_health_check: the cluster must speak HTTP/2 for gRPC health "
                            "checking (as Envoy requires)",
                            p);
    }
    cfg.warm_hosts = pb->common_lb_config && pb->common_lb_config->ignore_new_hosts_until_first_hc;
    c->hc = rm_health_checker_new(&cfg, stat_prefix, c->tls, c->stats, c->hs->hosts, c->hs->n,
                                  hc_changed, c);
    if (!c->hc) return rm_error_set(err, "%s: out of memory", p);
    return RM_OK;
}

/* Cluster.circuit_breakers (Envoy's defaults when absent): one resource manager per priority. */
static int setup_circuit_breakers(struct rm_cluster *c, const Cluster *pb, const char *path,
                                  const char *stat_prefix, struct rm_error *err)
{
    char p[512];
    snprintf(p, sizeof(p), "%s.circuit_breakers", path);
    struct rm_cb_thresholds lim[RM_CB_PRIORITIES];
    if (rm_cb_parse(pb->circuit_breakers, p, lim, err)) return RM_ERR;
    for (int i = 0; i < RM_CB_PRIORITIES; i++)
        c->cb[i] = rm_cb_new(&lim[i], stat_prefix, i);
    return RM_OK;
}

struct rm_cluster *rm_cluster_new(const Cluster *pb, struct rm_pb_box *box,
                                  const struct rm_secrets *secrets, const char *path,
                                  struct rm_error *err)
{
    if (!pb->name || !pb->name[0]) {
        rm_error_set(err, "%s.name: a cluster needs a name", path);
        return NULL;
    }
    if (check_supported(pb, path, err)) return NULL;
    struct rm_cluster *c = calloc(1, sizeof(*c));
    if (!c) goto fail_oom;
    atomic_init(&c->refs, 1);
    pthread_mutex_init(&c->tls_lock, NULL);
    c->slot = slot_get();
    c->pb = pb;
    c->pb_box = rm_pb_box_ref(box);
    c->name = strdup(pb->name);
    if (!c->name) goto fail_oom;
    c->stat_name = pb->alt_stat_name && pb->alt_stat_name[0] ? strdup(pb->alt_stat_name) : c->name;
    if (!c->stat_name) goto fail_oom;
    c->lb_policy = (enum rm_lb_policy)pb->lb_policy;
    c->lr_choice_count = 2;
    if (pb->lb_config_case ==
        ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_CONFIG_LEAST_REQUEST_LB_CONFIG)
        c->lr_choice_count = rm_pb_u32(pb->least_request_lb_config->choice_count, 2);
    c->connect_timeout_ms = rm_pb_duration_ms(pb->connect_timeout, 5000);
    c->idle_timeout_ms = 3600 * 1000;
    c->codec.buffer_limit = rm_pb_u32(pb->per_connection_buffer_limit_bytes, 1024 * 1024);
    c->max_requests_per_connection = rm_pb_u32(pb->max_requests_per_connection, 0);
    c->proto = RM_UPSTREAM_HTTP1;
    c->healthy_panic_threshold = 50;
    if (pb->common_lb_config && pb->common_lb_config->healthy_panic_threshold)
        c->healthy_panic_threshold = (uint32_t)pb->common_lb_config->healthy_panic_threshold->value;
    if (rm_odst_parse(pb, path, &c->odst, err) || parse_protocol_options(c, pb, path, err) ||
        parse_hosts(c, pb, path, err))
        goto fail;
    char prefix[300];
    snprintf(prefix, sizeof(prefix), "cluster.%s.", c->stat_name);
    c->stats = rm_stats_get(prefix, rm_cluster_stat_defs, RM_CS__COUNT);
    if (pb->outlier_detection && setup_outlier(c, pb, path, prefix, err)) goto fail;
    if (setup_circuit_breakers(c, pb, path, prefix, err)) goto fail;
    if (pb->transport_socket) {
        char p[512];
        snprintf(p, sizeof(p), "%s.transport_socket", path);
        struct rm_tls_opts o = {.side = RM_TLS_CLIENT, .stat_prefix = prefix, .secrets = secrets};
        if (rm_tls_ctx_new(pb->transport_socket, &o, p, &c->tls, err)) goto fail;
    }
    if (pb->n_health_checks && setup_health_check(c, pb, path, prefix, err)) goto fail;
    return c;
fail_oom:
    rm_error_set(err, "%s: out of memory", path);
fail:
    rm_cluster_unref(c);
    return NULL;
}

void rm_cluster_update_membership(struct rm_cluster *c)
{
    int64_t healthy = 0;
    for (size_t i = 0; i < c->hs->n; i++)
        healthy += rm_host_routable(c->hs->hosts[i]);
    rm_stat_set(c->stats, RM_CS_MEMBERSHIP_TOTAL, (int64_t)c->hs->n);
    rm_stat_set(c->stats, RM_CS_MEMBERSHIP_HEALTHY, healthy);
}

void rm_cluster_set_hosts(struct rm_cluster *c, struct rm_host_set *hs)
{
    if (c->outlier) {
        struct rm_outlier_host **oh = outlier_hosts(hs);
        if (!oh) abort(); /* the detector must never point at hosts it does not track */
        rm_outlier_set_hosts(c->outlier, oh, hs->n);
        free(oh);
    }
    if (c->hc && rm_health_checker_set_hosts(c->hc, hs->hosts, hs->n))
        rm_log_error("cluster %s: out of memory: its health checker keeps its old hosts", c->name);
    struct rm_host_set *old = c->hs;
    c->hs = hs;
    rm_host_set_unref(old);
    rm_cluster_update_membership(c);
}

bool rm_cluster_take_diff(struct rm_cluster *c, int rc, struct rm_host_set *hs)
{
    if (rc == RM_HOST_SET_SAME) {
        rm_stat_inc(c->stats, RM_CS_UPDATE_NO_REBUILD);
        return false;
    }
    if (rc != RM_HOST_SET_CHANGED) {
        rm_log_error("cluster %s: out of memory while updating its hosts", c->name);
        return false;
    }
    rm_cluster_set_hosts(c, hs);
    return true;
}
