#include "proxy/upstream/original_dst.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "proxy/config/pbutil.h"
#include "proxy/core/log.h"
#include "proxy/http/headers.h"
#include "proxy/upstream/pool.h"

typedef Envoy__Config__Cluster__V3__Cluster Cluster;

/* A live host of the cluster and how many worker maps have it. */
struct rm_odst_reg {
    struct rm_host *host; /* a reference */
    unsigned workers;
};

/* One address in a worker's map. */
struct odst_entry {
    struct rm_host *host;     /* a reference (the registry's host for the address) */
    struct rm_pool *pools[2]; /* HTTP/1.1, HTTP/2; NULL until the first request */
    bool used;                /* picked since the last sweep */
};

/* A worker's map: sorted by address (rm_sockaddr_cmp), searched by bisection. */
struct rm_odst_worker {
    struct rm_worker_cluster *wc;
    struct rm_timer sweep; /* armed while the map has an entry */
    struct odst_entry *v;
    size_t n, cap;
};

/* ---- config ------------------------------------------------------------------------------ */

bool rm_odst_is(const Cluster *pb)
{
    return pb->cluster_discovery_type_case ==
               ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_TYPE &&
           pb->type == ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__ORIGINAL_DST;
}

static int check_odst(const Cluster *pb, const char *path, struct rm_error *err)
{
    if (pb->lb_policy != ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__CLUSTER_PROVIDED) {
        const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
            &envoy__config__cluster__v3__cluster__lb_policy__descriptor, (int)pb->lb_policy);
        return rm_error_set(err,
                            "%s.lb_policy: %s is not valid for an ORIGINAL_DST cluster (only "
                            "CLUSTER_PROVIDED is allowed, as Envoy)",
                            path, v ? v->name : "this policy");
    }
    if (pb->load_assignment)
        return rm_error_set(err,
                            "%s.load_assignment: ORIGINAL_DST clusters must have no load "
                            "assignment configured",
                            path);
    if (pb->outlier_detection)
        return rm_error_set(err,
                            "%s.outlier_detection: not supported by remora for ORIGINAL_DST "
                            "clusters yet",
                            path);
    if (pb->cleanup_interval && rm_pb_duration_ms(pb->cleanup_interval, 0) == 0)
        return rm_error_set(err, "%s.cleanup_interval: must be greater than 0", path);
    const Envoy__Config__Cluster__V3__Cluster__OriginalDstLbConfig *lb =
        pb->lb_config_case == ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_CONFIG_ORIGINAL_DST_LB_CONFIG
            ? pb->original_dst_lb_config
            : NULL;
    if (lb && !lb->use_http_header && lb->http_header_name && lb->http_header_name[0])
        return rm_error_set(err,
                            "%s.original_dst_lb_config.http_header_name: set, but use_http_header "
                            "is false (set use_http_header to true to use it)",
                            path);
    if (lb && lb->upstream_port_override && lb->upstream_port_override->value > 65535)
        return rm_error_set(err,
                            "%s.original_dst_lb_config.upstream_port_override: must be at most "
                            "65535",
                            path);
    return RM_OK;
}

int rm_odst_parse(const Cluster *pb, const char *path, struct rm_odst **out, struct rm_error *err)
{
    *out = NULL;
    if (!rm_odst_is(pb)) {
        if (pb->lb_config_case ==
            ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_CONFIG_ORIGINAL_DST_LB_CONFIG)
            return rm_error_set(err,
                                "%s.original_dst_lb_config: only for clusters of type "
                                "ORIGINAL_DST",
                                path);
        return RM_OK;
    }
    if (check_odst(pb, path, err)) return RM_ERR;
    struct rm_odst *o = calloc(1, sizeof(*o));
    if (!o) return rm_error_set(err, "%s: out of memory", path);
    pthread_mutex_init(&o->lock, NULL);
    o->cleanup_ms = rm_pb_duration_ms(pb->cleanup_interval, 5000);
    const Envoy__Config__Cluster__V3__Cluster__OriginalDstLbConfig *lb =
        pb->lb_config_case == ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_CONFIG_ORIGINAL_DST_LB_CONFIG
            ? pb->original_dst_lb_config
            : NULL;
    if (lb && lb->use_http_header) {
        const char *name = lb->http_header_name && lb->http_header_name[0] ? lb->http_header_name
                                                                           : RM_ODST_DEFAULT_HEADER;
        if (!(o->header = strdup(name))) {
            rm_odst_free(o);
            return rm_error_set(err, "%s: out of memory", path);
        }
        for (char *c = o->header; *c; c++)
            *c = (char)tolower((unsigned char)*c);
    }
    if (lb && lb->upstream_port_override) {
        o->has_port_override = true;
        o->port_override = (uint16_t)lb->upstream_port_override->value;
    }
    *out = o;
    return RM_OK;
}

void rm_odst_free(struct rm_odst *o)
{
    if (!o) return;
    for (size_t i = 0; i < o->n_reg; i++) /* none left: every worker map is gone first */
        rm_host_unref(o->reg[i].host);
    free(o->reg);
    free(o->header);
    pthread_mutex_destroy(&o->lock);
    free(o);
}

/* ---- the registry (cluster-wide, under o->lock) ------------------------------------------ */

/* The registry's host for <a> (made when new: one more member), with a reference for the
 * caller's worker map.  NULL when out of memory. */
static struct rm_host *reg_get(struct rm_cluster *c, const struct sockaddr *a, socklen_t len)
{
    struct rm_odst *o = c->odst;
    struct rm_host *h = NULL;
    pthread_mutex_lock(&o->lock);
    for (size_t i = 0; i < o->n_reg; i++) {
        if (rm_sockaddr_cmp(&o->reg[i].host->addr.sa, a) == 0) {
            o->reg[i].workers++;
            h = rm_host_ref(o->reg[i].host);
            goto out;
        }
    }
    if (o->n_reg == o->cap_reg) {
        size_t cap = o->cap_reg ? o->cap_reg * 2 : 8;
        struct rm_odst_reg *v = realloc(o->reg, cap * sizeof(*v));
        if (!v) goto out;
        o->reg = v;
        o->cap_reg = cap;
    }
    struct rm_host_spec spec = {.addr_len = len, .weight = 1, .locality_idx = -1};
    memcpy(&spec.addr, a, len);
    if (!(h = rm_host_new(&spec))) goto out;
    o->reg[o->n_reg++] = (struct rm_odst_reg){rm_host_ref(h), 1};
    rm_stat_add(c->stats, RM_CS_MEMBERSHIP_TOTAL, 1);
    rm_stat_add(c->stats, RM_CS_MEMBERSHIP_HEALTHY, 1);
    rm_log_debug("cluster %s: original destination host %s created", c->name, h->addr_str);
out:
    pthread_mutex_unlock(&o->lock);
    return h;
}

/* A worker map let go of <h> (its reference is dropped here); the last one removes it. */
static void reg_put(struct rm_cluster *c, struct rm_host *h)
{
    struct rm_odst *o = c->odst;
    pthread_mutex_lock(&o->lock);
    for (size_t i = 0; i < o->n_reg; i++) {
        if (o->reg[i].host != h || --o->reg[i].workers) continue;
        rm_log_debug("cluster %s: original destination host %s removed", c->name, h->addr_str);
        rm_host_unref(o->reg[i].host);
        o->reg[i] = o->reg[--o->n_reg];
        rm_stat_add(c->stats, RM_CS_MEMBERSHIP_TOTAL, -1);
        rm_stat_add(c->stats, RM_CS_MEMBERSHIP_HEALTHY, -1);
        break;
    }
    pthread_mutex_unlock(&o->lock);
    rm_host_unref(h);
}

struct rm_host_set *rm_odst_hosts(const struct rm_cluster *c)
{
    struct rm_odst *o = c->odst;
    pthread_mutex_lock(&o->lock);
    struct rm_host **v = calloc(o->n_reg + 1, sizeof(*v));
    for (size_t i = 0; v && i < o->n_reg; i++)
        v[i] = o->reg[i].host;
    struct rm_host_set *hs = v ? rm_host_set_new(v, o->n_reg) : NULL;
    pthread_mutex_unlock(&o->lock);
    free(v);
    return hs;
}

/* ---- the worker's map -------------------------------------------------------------------- */

/* Position of <a> in <m> (or where it would go); *found says whether it is there. */
static size_t map_find(const struct rm_odst_worker *m, const struct sockaddr *a, bool *found)
{
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = rm_sockaddr_cmp(&m->v[mid].host->addr.sa, a);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

static void entry_drop(struct rm_worker_cluster *wc, struct odst_entry *e, bool now)
{
    for (int k = 0; k < 2; k++) {
        if (now)
            rm_pool_free(e->pools[k]);
        else
            rm_pool_start_drain(wc, e->pools[k]);
        e->pools[k] = NULL;
    }
    reg_put(wc->cluster, e->host);
    e->host = NULL;
}

/* cleanup_interval: addresses not picked since the last sweep leave (their pools drain). */
static void on_sweep(struct rm_timer *t)
{
    struct rm_odst_worker *m = rm_container_of(t, struct rm_odst_worker, sweep);
    size_t k = 0;
    for (size_t i = 0; i < m->n; i++) {
        struct odst_entry *e = &m->v[i];
        if (!e->used) {
            entry_drop(m->wc, e, false);
            continue;
        }
        e->used = false;
        m->v[k++] = *e;
    }
    m->n = k;
    if (m->n) rm_timer_start(m->wc->loop, &m->sweep, m->wc->cluster->odst->cleanup_ms, on_sweep);
}

/* The entry of <a> in <wc>'s map, made (with the registry's host) when new.  NULL when out of
 * memory. */
static struct odst_entry *map_get(struct rm_worker_cluster *wc, const struct sockaddr *a,
                                  socklen_t len)
{
    struct rm_odst_worker *m = wc->odst;
    if (!m) {
        if (!(m = calloc(1, sizeof(*m)))) return NULL;
        m->wc = wc;
        wc->odst = m;
    }
    bool found;
    size_t i = map_find(m, a, &found);
    if (found) return &m->v[i];
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 8;
        struct odst_entry *v = realloc(m->v, cap * sizeof(*v));
        if (!v) return NULL;
        m->v = v;
        m->cap = cap;
    }
    struct rm_host *h = reg_get(wc->cluster, a, len);
    if (!h) return NULL;
    memmove(&m->v[i + 1], &m->v[i], (m->n - i) * sizeof(*m->v));
    m->v[i] = (struct odst_entry){.host = h};
    m->n++;
    if (!rm_timer_armed(&m->sweep))
        rm_timer_start(wc->loop, &m->sweep, wc->cluster->odst->cleanup_ms, on_sweep);
    return &m->v[i];
}

/* "a.b.c.d:port" or "[v6]:port" (Envoy's parseInternetAddressAndPort) into *out.  Returns the
 * address length, 0 when it is not one. */
static socklen_t parse_ip_port(struct rm_str v, struct sockaddr_in6 *out)
{
    char buf[INET6_ADDRSTRLEN + 16];
    if (!v.p || v.len == 0 || v.len >= sizeof(buf)) return 0;
    memcpy(buf, v.p, v.len);
    buf[v.len] = 0;
    char *colon = strrchr(buf, ':');
    if (!colon || !colon[1] || strlen(colon + 1) > 5) return 0;
    unsigned long port = 0;
    for (const char *p = colon + 1; *p; p++) {
        if (!isdigit((unsigned char)*p)) return 0;
        port = port * 10 + (unsigned long)(*p - '0');
    }
    if (port > 65535) return 0;
    *colon = 0;
    memset(out, 0, sizeof(*out));
    if (buf[0] == '[') {
        size_t n = strlen(buf);
        if (n < 3 || buf[n - 1] != ']') return 0;
        buf[n - 1] = 0;
        if (inet_pton(AF_INET6, buf + 1, &out->sin6_addr) != 1) return 0;
        out->sin6_family = AF_INET6;
        out->sin6_port = htons((uint16_t)port);
        return sizeof(struct sockaddr_in6);
    }
    struct sockaddr_in *in = (struct sockaddr_in *)out;
    if (inet_pton(AF_INET, buf, &in->sin_addr) != 1) return 0;
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t)port);
    return sizeof(struct sockaddr_in);
}

struct rm_host *rm_odst_pick(struct rm_worker_cluster *wc, const struct sockaddr *restored,
                             const struct rm_headers *req)
{
    const struct rm_odst *o = wc->cluster->odst;
    struct sockaddr_in6 a;
    socklen_t len = 0;
    if (o->header && req) { /* only the first value counts, as Envoy */
        struct rm_str v = rm_headers_get(req, o->header, strlen(o->header));
        if (v.p && !(len = parse_ip_port(v, &a)))
            rm_stat_inc(wc->cluster->stats, RM_CS_ORIGINAL_DST_HOST_INVALID);
    }
    if (!len && restored) {
        len = restored->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                              : sizeof(struct sockaddr_in);
        memcpy(&a, restored, len);
    }
    if (!len) return NULL; /* no original destination: 503 UH */
    if (o->has_port_override) {
        if (a.sin6_family == AF_INET)
            ((struct sockaddr_in *)&a)->sin_port = htons(o->port_override);
        else
            a.sin6_port = htons(o->port_override);
    }
    struct odst_entry *e = map_get(wc, (const struct sockaddr *)&a, len);
    if (!e) return NULL;
    e->used = true;
    return e->host;
}

struct rm_pool **rm_odst_pool_slot(struct rm_worker_cluster *wc, const struct rm_host *h,
                                   enum rm_http_proto proto)
{
    struct rm_odst_worker *m = wc->odst;
    bool found = false;
    size_t i = m ? map_find(m, &h->addr.sa, &found) : 0;
    if (!found || m->v[i].host != h) return NULL;
    return &m->v[i].pools[proto == RM_HTTP2];
}

void rm_odst_worker_free(struct rm_worker_cluster *wc)
{
    struct rm_odst_worker *m = wc->odst;
    if (!m) return;
    rm_timer_stop(wc->loop, &m->sweep);
    for (size_t i = 0; i < m->n; i++)
        entry_drop(wc, &m->v[i], true);
    free(m->v);
    free(m);
    wc->odst = NULL;
}
