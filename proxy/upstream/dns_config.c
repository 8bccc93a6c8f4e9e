/* DNS configuration: CaresDnsResolverConfig -> struct rm_dns_config, the DNS fields of a
 * Cluster (DnsCluster extension or the deprecated Cluster fields) -> struct rm_dns_cluster_cfg,
 * and the refresh arithmetic.  Pure functions; see dns.h. */
#include "proxy/upstream/dns.h"

#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/core/v3/address.pb-c.h"
#include "envoy/config/core/v3/extension.pb-c.h"
#include "envoy/config/core/v3/resolver.pb-c.h"
#include "envoy/extensions/clusters/common/dns/v3/dns.pb-c.h"
#include "envoy/extensions/clusters/dns/v3/dns_cluster.pb-c.h"
#include "envoy/extensions/network/dns_resolver/cares/v3/cares_dns_resolver.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "proxy/config/pbtypes.h"
#include "proxy/config/pbutil.h"

typedef Envoy__Config__Cluster__V3__Cluster Cluster;
typedef Envoy__Config__Core__V3__Address Address;
typedef Envoy__Config__Core__V3__DnsResolverOptions DnsResolverOptions;
typedef Envoy__Extensions__Clusters__Dns__V3__DnsCluster DnsCluster;
typedef Envoy__Extensions__Network__DnsResolver__Cares__V3__CaresDnsResolverConfig CaresConfig;
typedef Google__Protobuf__Duration Duration;

#define CARES_DESC                                                                                 \
    (&envoy__extensions__network__dns_resolver__cares__v3__cares_dns_resolver_config__descriptor)
#define DNS_CLUSTER_DESC (&envoy__extensions__clusters__dns__v3__dns_cluster__descriptor)
#define RM_DNS_CLUSTER_EXT "envoy.clusters.dns"
#define RM_DNS_PATH_MAX 512

const char *rm_dns_family_name(enum rm_dns_family f)
{
    static const char *const names[] = {"AUTO", "V4_ONLY", "V6_ONLY", "V4_PREFERRED", "ALL"};
    return (unsigned)f < 5 ? names[f] : "?";
}

void rm_dns_config_init(struct rm_dns_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->query_timeout_ms = 5000; /* Envoy's default (query_timeout_seconds unset) */
    cfg->query_tries = 4;         /* Envoy's default (query_tries unset) */
}

/* ---- resolver addresses ------------------------------------------------------------------ */

static int parse_ip(const char *text, uint16_t port, struct sockaddr_storage *out)
{
    struct sockaddr_in *v4 = (struct sockaddr_in *)out;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)out;
    memset(out, 0, sizeof(*out));
    if (inet_pton(AF_INET, text, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        return RM_OK;
    }
    if (inet_pton(AF_INET6, text, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
        return RM_OK;
    }
    return RM_ERR;
}

/* One resolver: an IP literal socket_address.  The protocol is not looked at (Envoy does not:
 * c-ares uses UDP, and TCP for truncated answers or with use_tcp_for_dns_lookups). */
static int parse_resolver(const Address *a, const char *path, struct sockaddr_storage *out,
                          struct rm_error *err)
{
    if (!a || a->address_case != ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS)
        return rm_error_set(err, "%s: a DNS resolver must be a socket_address (IP and port)", path);
    const Envoy__Config__Core__V3__SocketAddress *sa = a->socket_address;
    if (sa->port_specifier_case ==
        ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_NAMED_PORT)
        return rm_error_set(err, "%s.socket_address.named_port: not supported, use port_value",
                            path);
    if (sa->port_value > 65535)
        return rm_error_set(err, "%s.socket_address.port_value: %u is not a valid port", path,
                            sa->port_value);
    if (sa->resolver_name && sa->resolver_name[0])
        return rm_error_set(err,
                            "%s.socket_address.resolver_name: not supported for a DNS "
                            "resolver",
                            path);
    if (!sa->address || parse_ip(sa->address, (uint16_t)sa->port_value, out) != RM_OK)
        return rm_error_set(err,
                            "%s.socket_address.address: \"%s\" is not an IP address (a DNS "
                            "resolver must be an IP literal)",
                            path, sa->address ? sa->address : "");
    return RM_OK;
}

static int parse_resolvers(Address *const *list, size_t n, const char *path, const char *field,
                           struct rm_dns_config *out, struct rm_error *err)
{
    if (n > RM_DNS_MAX_RESOLVERS)
        return rm_error_set(err, "%s.%s: at most %d resolvers are supported (got %zu)", path, field,
                            RM_DNS_MAX_RESOLVERS, n);
    for (size_t i = 0; i < n; i++) {
        char p[RM_DNS_PATH_MAX];
        snprintf(p, sizeof(p), "%s.%s[%zu]", path, field, i);
        if (parse_resolver(list[i], p, &out->resolvers[i], err)) return RM_ERR;
    }
    out->n_resolvers = n;
    return RM_OK;
}

static void apply_options(const DnsResolverOptions *o, struct rm_dns_config *out)
{
    if (!o) return;
    out->use_tcp = o->use_tcp_for_dns_lookups;
    out->no_default_search_domain = o->no_default_search_domain;
}

/* ---- CaresDnsResolverConfig --------------------------------------------------------------- */

static int parse_cares_limits(const CaresConfig *pb, const char *path, struct rm_dns_config *out,
                              struct rm_error *err)
{
    if (pb->udp_max_queries)
        return rm_error_set(err,
                            "%s.udp_max_queries: not supported by remora (c-ares %s cannot cap "
                            "the queries sent on one UDP socket)",
                            path, "1.18");
    if (pb->query_timeout_seconds) {
        uint64_t s = pb->query_timeout_seconds->value;
        if (s < 1 || s > INT_MAX / 1000)
            return rm_error_set(err, "%s.query_timeout_seconds: %llu is out of range (1..%d)", path,
                                (unsigned long long)s, INT_MAX / 1000);
        out->query_timeout_ms = (uint32_t)(s * 1000u);
    }
    if (pb->query_tries) {
        uint32_t t = pb->query_tries->value;
        if (t < 1 || t > INT_MAX)
            return rm_error_set(err, "%s.query_tries: must be at least 1", path);
        out->query_tries = t;
    }
    if (pb->edns0_max_payload_size) {
        uint32_t v = pb->edns0_max_payload_size->value;
        if (v < 512 || v > 4096)
            return rm_error_set(err, "%s.edns0_max_payload_size: %u is out of range (512..4096)",
                                path, v);
        out->edns0_max_payload = v;
    }
    return RM_OK;
}

int rm_dns_config_from_pb(const CaresConfig *pb, const char *path, struct rm_dns_config *out,
                          struct rm_error *err)
{
    rm_dns_config_init(out);
    if (!pb) return RM_OK;
    if (parse_resolvers(pb->resolvers, pb->n_resolvers, path, "resolvers", out, err)) return RM_ERR;
    out->use_resolvers_as_fallback = pb->use_resolvers_as_fallback;
    out->filter_unroutable_families = pb->filter_unroutable_families;
    out->rotate_nameservers = pb->rotate_nameservers;
    apply_options(pb->dns_resolver_options, out);
    return parse_cares_limits(pb, path, out, err);
}

int rm_dns_config_from_typed(const Envoy__Config__Core__V3__TypedExtensionConfig *tc,
                             const char *path, struct rm_dns_config *out, struct rm_error *err)
{
    char p[RM_DNS_PATH_MAX];
    snprintf(p, sizeof(p), "%s.typed_config", path);
    if (!tc || !tc->typed_config)
        return rm_error_set(err, "%s: required (a CaresDnsResolverConfig)", p);
    const char *url = tc->typed_config->type_url ? tc->typed_config->type_url : "";
    if (rm_pb_lookup_type_url(url) != CARES_DESC)
        return rm_error_set(err,
                            "%s: DNS resolver \"%s\" is not supported by remora (only "
                            "envoy.network.dns_resolver.cares with "
                            "envoy.extensions.network.dns_resolver.cares.v3."
                            "CaresDnsResolverConfig)",
                            p, url);
    ProtobufCMessage *m = NULL;
    if (rm_pb_any_unpack(tc->typed_config, CARES_DESC, &m, err))
        return rm_error_prefix(err, "%s: ", p);
    int rc = rm_pb_check_no_unknown(m, p, err);
    if (rc == RM_OK) rc = rm_dns_config_from_pb((const CaresConfig *)m, p, out, err);
    protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}

/* ---- DNS clusters -------------------------------------------------------------------------- */

/* Envoy's validation of refresh durations: gt {nanos: 1000000}. */
static bool duration_gt_1ms(const Duration *d)
{
    return d->seconds > 0 || (d->seconds == 0 && d->nanos > 1000000);
}

static int parse_rate(const Duration *d, const char *path, const char *field, uint32_t dflt,
                      uint32_t *out, struct rm_error *err)
{
    if (!d) {
        *out = dflt;
        return RM_OK;
    }
    if (!duration_gt_1ms(d))
        return rm_error_set(err, "%s.%s: must be greater than 1ms", path, field);
    *out = rm_pb_duration_ms(d, dflt);
    return RM_OK;
}

/* RefreshRate {base_interval, max_interval} (same shape in Cluster and DnsCluster). */
static int parse_failure_rate(const Duration *base, const Duration *max, const char *path,
                              struct rm_dns_cluster_cfg *out, struct rm_error *err)
{
    if (!base) return rm_error_set(err, "%s.base_interval: required", path);
    if (parse_rate(base, path, "base_interval", 0, &out->failure_base_ms, err)) return RM_ERR;
    uint64_t dflt = (uint64_t)out->failure_base_ms * 10u;
    if (parse_rate(max, path, "max_interval", dflt > UINT32_MAX ? UINT32_MAX : (uint32_t)dflt,
                   &out->failure_max_ms, err))
        return RM_ERR;
    if (out->failure_max_ms < out->failure_base_ms)
        return rm_error_set(
            err, "%s: max_interval must be greater than or equal to the base_interval", path);
    return RM_OK;
}

static int parse_jitter(const Duration *d, const char *path, uint32_t *out, struct rm_error *err)
{
    if (d && (d->seconds < 0 || d->nanos < 0))
        return rm_error_set(err, "%s.dns_jitter: must not be negative", path);
    *out = rm_pb_duration_ms(d, 0);
    return RM_OK;
}

static int family_from_common(int v, const char *path, enum rm_dns_family *out,
                              struct rm_error *err)
{
    switch (v) {
    case ENVOY__EXTENSIONS__CLUSTERS__COMMON__DNS__V3__DNS_LOOKUP_FAMILY__UNSPECIFIED:
    case ENVOY__EXTENSIONS__CLUSTERS__COMMON__DNS__V3__DNS_LOOKUP_FAMILY__AUTO:
        *out = RM_DNS_AUTO;
        return RM_OK;
    case ENVOY__EXTENSIONS__CLUSTERS__COMMON__DNS__V3__DNS_LOOKUP_FAMILY__V4_ONLY:
        *out = RM_DNS_V4_ONLY;
        return RM_OK;
    case ENVOY__EXTENSIONS__CLUSTERS__COMMON__DNS__V3__DNS_LOOKUP_FAMILY__V6_ONLY:
        *out = RM_DNS_V6_ONLY;
        return RM_OK;
    case ENVOY__EXTENSIONS__CLUSTERS__COMMON__DNS__V3__DNS_LOOKUP_FAMILY__V4_PREFERRED:
        *out = RM_DNS_V4_PREFERRED;
        return RM_OK;
    case ENVOY__EXTENSIONS__CLUSTERS__COMMON__DNS__V3__DNS_LOOKUP_FAMILY__ALL:
        *out = RM_DNS_ALL;
        return RM_OK;
    }
    return rm_error_set(err, "%s.dns_lookup_family: unknown value %d", path, v);
}

static int family_from_cluster(int v, const char *path, enum rm_dns_family *out,
                               struct rm_error *err)
{
    if (v < RM_DNS_AUTO || v > RM_DNS_ALL)
        return rm_error_set(err, "%s.dns_lookup_family: unknown value %d", path, v);
    *out = (enum rm_dns_family)v;
    return RM_OK;
}

static bool is_dns_cluster_type(const Envoy__Config__Cluster__V3__Cluster__CustomClusterType *ct)
{
    if (ct->name && strcmp(ct->name, RM_DNS_CLUSTER_EXT) == 0) return true;
    return ct->typed_config &&
           rm_pb_lookup_type_url(ct->typed_config->type_url) == DNS_CLUSTER_DESC;
}

bool rm_dns_cluster_is_dns(const Cluster *pb)
{
    switch (pb->cluster_discovery_type_case) {
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_TYPE:
        return pb->type == ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__STRICT_DNS ||
               pb->type == ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__LOGICAL_DNS;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_CLUSTER_TYPE:
        return is_dns_cluster_type(pb->cluster_type);
    default:
        return false;
    }
}

static int from_dns_cluster_msg(const DnsCluster *dc, const char *p, struct rm_dns_cluster_cfg *out,
                                struct rm_error *err)
{
    if (parse_rate(dc->dns_refresh_rate, p, "dns_refresh_rate", 5000, &out->refresh_rate_ms, err))
        return RM_ERR;
    if (dc->dns_failure_refresh_rate) {
        char fp[RM_DNS_PATH_MAX];
        snprintf(fp, sizeof(fp), "%s.dns_failure_refresh_rate", p);
        if (parse_failure_rate(dc->dns_failure_refresh_rate->base_interval,
                               dc->dns_failure_refresh_rate->max_interval, fp, out, err))
            return RM_ERR;
    }
    out->respect_dns_ttl = dc->respect_dns_ttl;
    out->logical = dc->all_addresses_in_single_endpoint;
    if (parse_jitter(dc->dns_jitter, p, &out->jitter_ms, err) ||
        family_from_common((int)dc->dns_lookup_family, p, &out->family, err))
        return RM_ERR;
    if (dc->typed_dns_resolver_config) {
        char rp[RM_DNS_PATH_MAX];
        snprintf(rp, sizeof(rp), "%s.typed_dns_resolver_config", p);
        out->has_resolver = true;
        return rm_dns_config_from_typed(dc->typed_dns_resolver_config, rp, &out->resolver, err);
    }
    return RM_OK;
}

static int from_cluster_type(const Envoy__Config__Cluster__V3__Cluster__CustomClusterType *ct,
                             const char *path, struct rm_dns_cluster_cfg *out, struct rm_error *err)
{
    char p[RM_DNS_PATH_MAX];
    snprintf(p, sizeof(p), "%s.cluster_type.typed_config", path);
    if (!ct->typed_config)
        return rm_error_set(err, "%s: required (an envoy.extensions.clusters.dns.v3.DnsCluster)",
                            p);
    if (rm_pb_lookup_type_url(ct->typed_config->type_url) != DNS_CLUSTER_DESC)
        return rm_error_set(err,
                            "%s: \"%s\" is not supported by remora (DNS clusters take an "
                            "envoy.extensions.clusters.dns.v3.DnsCluster)",
                            p, ct->typed_config->type_url ? ct->typed_config->type_url : "");
    ProtobufCMessage *m = NULL;
    if (rm_pb_any_unpack(ct->typed_config, DNS_CLUSTER_DESC, &m, err))
        return rm_error_prefix(err, "%s: ", p);
    int rc = rm_pb_check_no_unknown(m, p, err);
    if (rc == RM_OK) rc = from_dns_cluster_msg((const DnsCluster *)m, p, out, err);
    protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}

/* The deprecated resolver fields, in Envoy's order of precedence. */
static int legacy_resolver(const Cluster *pb, const char *path, struct rm_dns_cluster_cfg *out,
                           struct rm_error *err)
{
    char p[RM_DNS_PATH_MAX];
    if (pb->typed_dns_resolver_config) {
        snprintf(p, sizeof(p), "%s.typed_dns_resolver_config", path);
        out->has_resolver = true;
        return rm_dns_config_from_typed(pb->typed_dns_resolver_config, p, &out->resolver, err);
    }
    if (pb->dns_resolution_config) {
        snprintf(p, sizeof(p), "%s.dns_resolution_config", path);
        out->has_resolver = true;
        apply_options(pb->dns_resolution_config->dns_resolver_options, &out->resolver);
        return parse_resolvers(pb->dns_resolution_config->resolvers,
                               pb->dns_resolution_config->n_resolvers, p, "resolvers",
                               &out->resolver, err);
    }
    if (pb->n_dns_resolvers || pb->use_tcp_for_dns_lookups) {
        out->has_resolver = true;
        out->resolver.use_tcp = pb->use_tcp_for_dns_lookups;
        return parse_resolvers(pb->dns_resolvers, pb->n_dns_resolvers, path, "dns_resolvers",
                               &out->resolver, err);
    }
    return RM_OK;
}

static int from_legacy(const Cluster *pb, const char *path, struct rm_dns_cluster_cfg *out,
                       struct rm_error *err)
{
    if (parse_rate(pb->dns_refresh_rate, path, "dns_refresh_rate", 5000, &out->refresh_rate_ms,
                   err))
        return RM_ERR;
    if (pb->dns_failure_refresh_rate) {
        char fp[RM_DNS_PATH_MAX];
        snprintf(fp, sizeof(fp), "%s.dns_failure_refresh_rate", path);
        if (parse_failure_rate(pb->dns_failure_refresh_rate->base_interval,
                               pb->dns_failure_refresh_rate->max_interval, fp, out, err))
            return RM_ERR;
    }
    out->respect_dns_ttl = pb->respect_dns_ttl;
    out->logical = pb->type == ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__LOGICAL_DNS;
    if (parse_jitter(pb->dns_jitter, path, &out->jitter_ms, err) ||
        family_from_cluster((int)pb->dns_lookup_family, path, &out->family, err))
        return RM_ERR;
    return legacy_resolver(pb, path, out, err);
}

int rm_dns_cluster_cfg_from_cluster(const Cluster *pb, const char *path,
                                    struct rm_dns_cluster_cfg *out, struct rm_error *err)
{
    memset(out, 0, sizeof(*out));
    out->refresh_rate_ms = 5000;
    out->family = RM_DNS_AUTO;
    rm_dns_config_init(&out->resolver);
    if (!rm_dns_cluster_is_dns(pb))
        return rm_error_set(err, "%s.type: not a STRICT_DNS or LOGICAL_DNS cluster", path);
    if (pb->cluster_discovery_type_case ==
        ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_CLUSTER_TYPE)
        return from_cluster_type(pb->cluster_type, path, out, err);
    return from_legacy(pb, path, out, err);
}

/* ---- refresh arithmetic ------------------------------------------------------------------ */

uint64_t rm_dns_next_refresh_ms(const struct rm_dns_cluster_cfg *cfg, uint32_t failures,
                                uint32_t ttl_s, uint64_t rnd)
{
    if (failures == 0) {
        uint64_t ms = cfg->refresh_rate_ms;
        if (cfg->respect_dns_ttl && ttl_s > 0) ms = (uint64_t)ttl_s * 1000u;
        if (cfg->jitter_ms) ms += rnd % cfg->jitter_ms;
        return ms;
    }
    if (!cfg->failure_base_ms) return cfg->refresh_rate_ms;
    /* Envoy's JitteredExponentialBackOffStrategy: intervals base, 2 base, 4 base ... max, and a
     * uniform draw in [0, interval). */
    uint64_t max =
        cfg->failure_max_ms >= cfg->failure_base_ms ? cfg->failure_max_ms : cfg->failure_base_ms;
    uint64_t iv = cfg->failure_base_ms;
    for (uint32_t i = 1; i < failures && iv < max; i++)
        iv = iv > max / 2 ? max : iv * 2;
    return rnd % iv;
}
