/* The xDS config manager (see xds_manager.h). */
#include "xds/xds_manager.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"
#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "proxy/admin/stats.h"
#include "proxy/config/pbtypes.h"
#include "proxy/core/bulk.h"
#include "proxy/core/log.h"
#include "proxy/core/strmap.h"
#include "proxy/net/listener.h"
#include "proxy/net/secrets.h"
#include "proxy/net/tls.h"
#include "proxy/upstream/dns.h"
#include "proxy/upstream/dns_cluster.h"
#include "xds/ads_client.h"
#include "xds/ads_store.h"
#include "xds/sds_store.h"

#define WARM_POLL_MS 100
#define DEFAULT_FETCH_TIMEOUT_MS 15000

typedef Envoy__Config__Cluster__V3__Cluster Cluster;
typedef Envoy__Config__Endpoint__V3__ClusterLoadAssignment LoadAssignment;
typedef Envoy__Config__Listener__V3__Listener Listener;
typedef Envoy__Config__Route__V3__RouteConfiguration RouteConfiguration;
typedef Envoy__Extensions__TransportSockets__Tls__V3__Secret Secret;

enum {
    CM_CDS_UPDATE_ATTEMPT,
    CM_CDS_UPDATE_SUCCESS,
    CM_CDS_UPDATE_REJECTED,
    CM_CDS_VERSION,
    CM_ACTIVE_CLUSTERS,
    CM_WARMING_CLUSTERS,
    CM_CLUSTER_ADDED,
    CM_CLUSTER_MODIFIED,
    CM_CLUSTER_REMOVED,
    CM__COUNT
};
static const struct rm_stat_def cm_defs[CM__COUNT] = {
    [CM_CDS_UPDATE_ATTEMPT] = {"cds.update_attempt", RM_COUNTER},
    [CM_CDS_UPDATE_SUCCESS] = {"cds.update_success", RM_COUNTER},
    [CM_CDS_UPDATE_REJECTED] = {"cds.update_rejected", RM_COUNTER},
    [CM_CDS_VERSION] = {"cds.version", RM_GAUGE},
    [CM_ACTIVE_CLUSTERS] = {"active_clusters", RM_GAUGE},
    [CM_WARMING_CLUSTERS] = {"warming_clusters", RM_GAUGE},
    [CM_CLUSTER_ADDED] = {"cluster_added", RM_COUNTER},
    [CM_CLUSTER_MODIFIED] = {"cluster_modified", RM_COUNTER},
    [CM_CLUSTER_REMOVED] = {"cluster_removed", RM_COUNTER},
};

/** An EDS service name: what its accepted assignment made and the clusters that use it.  The
 *  assignment itself is not kept: <hs> is a reference on the membership it gave the first user
 *  (the same object: no memory of its own), enough to give a new version of a cluster its
 *  hosts. */
struct svc {
    bool known;                /* an assignment was accepted */
    struct rm_host_set *hs;    /* NULL until then */
    struct rm_cluster **users; /* static EDS clusters, CDS ones active or warming */
    size_t n_users, cap;
};

/** A CDS cluster: the version serving and the newer one warming (either may be NULL). */
struct dcluster {
    struct rm_cluster *active, *warming;
    bool hosts_ready;          /* the warming version has its hosts; it waits for SDS secrets */
    uint64_t warm_start;       /* loop ms when the warming version came */
    uint32_t hosts_timeout_ms; /* how long it waits for its hosts (0: no bound) */
    struct dns_watch *active_dns, *warming_dns; /* STRICT_DNS / LOGICAL_DNS versions */
};

/** The resolutions of one CDS cluster of a DNS type (a proxy/upstream/dns_cluster.h manager
 *  of its own); it warms until its first answer or failure. */
struct dns_watch {
    struct rm_xds_manager *m;
    struct rm_cluster *c;
    struct rm_dns_clusters *dns;
};

/** One version of an LDS listener. */
struct lversion {
    struct rm_pb_box *pb; /* NULL: none */
    char *version;
    char *rds;              /* the route configuration it needs, or NULL */
    struct rm_sds_refs sds; /* the secrets its TLS context takes over SDS */
    uint64_t updated_ms;
};

struct dlistener {
    struct lversion active, warming;
    uint64_t warm_start;     /* loop ms when the warming version came */
    uint32_t rds_timeout_ms; /* how long it waits for its routes (0: no bound) */
};

struct droute {
    struct rm_pb_box *pb;
    char *version;
    uint64_t updated_ms;
};

enum { T_CDS, T_EDS, T_LDS, T_RDS, T_SDS, T__COUNT };

/** Where one type comes from: the ADS stream or a stream of its own (api_config_source).
 *  Bound by the first cluster or listener that needs the type; remora takes each type from one
 *  source. */
struct tsrc {
    bool bound;
    struct rm_config_source src;
    struct rm_ads_client *client; /* m->ads, or its own (freed with the manager) */
    size_t idx;                   /* the type's index in <client> */
};

/* Each type's own discovery service (non-aggregated streams), SotW and Delta. */
static const char *const type_paths[T__COUNT][2] = {
    [T_CDS] = {"/envoy.service.cluster.v3.ClusterDiscoveryService/StreamClusters",
               "/envoy.service.cluster.v3.ClusterDiscoveryService/DeltaClusters"},
    [T_EDS] = {"/envoy.service.endpoint.v3.EndpointDiscoveryService/StreamEndpoints",
               "/envoy.service.endpoint.v3.EndpointDiscoveryService/DeltaEndpoints"},
    [T_LDS] = {"/envoy.service.listener.v3.ListenerDiscoveryService/StreamListeners",
               "/envoy.service.listener.v3.ListenerDiscoveryService/DeltaListeners"},
    [T_RDS] = {"/envoy.service.route.v3.RouteDiscoveryService/StreamRoutes",
               "/envoy.service.route.v3.RouteDiscoveryService/DeltaRoutes"},
    [T_SDS] = {"/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets",
               "/envoy.service.secret.v3.SecretDiscoveryService/DeltaSecrets"},
};

struct rm_xds_manager {
    struct rm_loop *loop;
    struct rm_snapshot *base; /* the bootstrap's */
    struct rm_snapshot *cur;  /* the last one published */
    struct rm_xds_hooks hooks;
    void *ctx;
    struct rm_ads_client *ads;          /* the ADS stream, or NULL */
    struct rm_ads_type types[T__COUNT]; /* by T_*: every type remora may subscribe to */
    bool wanted[T__COUNT];              /* the bootstrap configures CDS / LDS */
    struct tsrc src[T__COUNT];          /* where each type comes from */
    struct rm_strmap svcs;              /* service name -> struct svc */
    struct rm_strmap clusters;          /* name -> struct dcluster */
    struct rm_strmap listeners;         /* name -> struct dlistener */
    struct rm_strmap routes;            /* name -> struct droute */
    struct rm_sds_store *sds;           /* the secrets referenced over SDS */
    bool cds_done, lds_done;            /* first response accepted */
    bool init_done;
    struct rm_timer init_timer, warm_timer;
    struct rm_stats *cm, *lm;
    struct rm_dns_config dns_cfg; /* the bootstrap's resolver, for CDS DNS clusters */
};

static void publish_next(struct rm_xds_manager *m);
static void check_init(struct rm_xds_manager *m);
static void on_warm_poll(struct rm_timer *t);
static bool secrets_ready(const struct rm_xds_manager *m, const struct rm_sds_refs *r);
static uint32_t sds_timeout(uint32_t t, const struct rm_sds_refs *r);
static int sds_sources_ok(struct rm_xds_manager *m, const struct rm_sds_refs *r, const char *label,
                          struct rm_error *err);
static void sds_resubscribe(struct rm_xds_manager *m);
static void warm_poll(struct rm_xds_manager *m);
static bool waited_out(const struct rm_xds_manager *m, uint64_t start, uint32_t own,
                       const struct rm_sds_refs *r);

static uint64_t wall_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

static uint64_t version_hash(const char *v)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; v && *v; v++)
        h = (h ^ (uint8_t)*v) * 0x100000001b3ULL;
    return h >> 1; /* a gauge is signed */
}

static char *xstrdup(const char *s)
{
    char *d = strdup(s ? s : "");
    if (!d) abort();
    return d;
}

/* Unpack a resource's bytes as <d>, refusing fields remora does not know; errors are prefixed
 * with "<label>: ". */
static ProtobufCMessage *unpack(const ProtobufCMessageDescriptor *d, const struct rm_ads_res *r,
                                ProtobufCAllocator *al, const char *label, struct rm_error *err)
{
    ProtobufCMessage *msg = protobuf_c_message_unpack(d, al, r->len, r->value);
    if (!msg) {
        rm_error_set(err, "%s: undecodable %s", label, d->short_name);
        return NULL;
    }
    if (rm_pb_check_no_unknown(msg, label, err)) {
        protobuf_c_message_free_unpacked(msg, al);
        return NULL;
    }
    return msg;
}

/* ---- sources ------------------------------------------------------------------------------ */

/* Whether type <t> may come from <src>: it is the source the type is bound to (or none yet),
 * and an api_config_source names a STATIC cluster with a host. */
static int source_ok(const struct rm_xds_manager *m, int t, const struct rm_config_source *src,
                     const char *path, struct rm_error *err)
{
    char a[200], b[200];
    const struct tsrc *ts = &m->src[t];
    if (ts->bound && !rm_config_source_same(&ts->src, src))
        return rm_error_set(err, "%s: remora takes every %s from one source: %s, not %s", path,
                            rm_ads_type_short(m->types[t].type_url),
                            rm_config_source_str(&ts->src, a, sizeof(a)),
                            rm_config_source_str(src, b, sizeof(b)));
    if (src->ads && !m->ads)
        return rm_error_set(err, "%s: ads: {} needs dynamic_resources.ads_config", path);
    if (!src->ads) {
        const struct rm_cluster *c = rm_snapshot_cluster(m->base, src->cluster);
        if (!c || rm_cluster_is_eds(c) || rm_cluster_is_dns(c) || c->hs->n == 0)
            return rm_error_set(err,
                                "%s: \"%s\" is not a STATIC cluster with an endpoint in "
                                "static_resources",
                                path, src->cluster);
    }
    return RM_OK;
}

/* Bind type <t> to <src> (checked with source_ok): the ADS stream, or a new stream of its own. */
static int bind_source(struct rm_xds_manager *m, int t, const struct rm_config_source *src,
                       const char *path, struct rm_error *err)
{
    if (source_ok(m, t, src, path, err)) return RM_ERR;
    struct tsrc *ts = &m->src[t];
    if (ts->bound) return RM_OK;
    if (src->ads) {
        ts->client = m->ads;
        ts->idx = (size_t)t;
    } else {
        struct rm_ads_client_cfg cfg = {
            .cluster = rm_snapshot_cluster(m->base, src->cluster),
            .delta = src->delta,
            .path = type_paths[t][src->delta],
            .max_msg = src->max_msg,
            .node_id = m->base->node_id,
            .node_cluster = m->base->node_cluster,
            .types = &m->types[t],
            .n_types = 1,
            .ctx = m,
        };
        if (!(ts->client = rm_ads_client_new(m->loop, &cfg, err))) return RM_ERR;
        ts->idx = 0;
    }
    rm_config_source_copy(&ts->src, src);
    ts->bound = true;
    if (m->types[t].wildcard) rm_ads_client_subscribe(ts->client, ts->idx, NULL, 0);
    return RM_OK;
}

static void subscribe(struct rm_xds_manager *m, int t, const char *const *names, size_t n)
{
    if (m->src[t].bound) rm_ads_client_subscribe(m->src[t].client, m->src[t].idx, names, n);
}

/* ---- EDS services ------------------------------------------------------------------------ */

static struct svc *svc_get(struct rm_xds_manager *m, const char *name)
{
    struct svc *s = rm_strmap_get(&m->svcs, name);
    if (s) return s;
    if (!(s = calloc(1, sizeof(*s)))) abort();
    rm_strmap_put(&m->svcs, name, s);
    return s;
}

static void svc_free(struct svc *s)
{
    rm_host_set_unref(s->hs);
    free(s->users);
    free(s);
}

static void track(struct rm_xds_manager *m, struct rm_cluster *c)
{
    if (!rm_cluster_is_eds(c)) return;
    struct svc *s = svc_get(m, c->eds_service);
    if (s->n_users == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 2;
        if (!(s->users = realloc(s->users, s->cap * sizeof(*s->users)))) abort();
    }
    s->users[s->n_users++] = c;
}

static void untrack(struct rm_xds_manager *m, struct rm_cluster *c)
{
    if (!c || !rm_cluster_is_eds(c)) return;
    struct svc *s = rm_strmap_get(&m->svcs, c->eds_service);
    for (size_t i = 0; s && i < s->n_users; i++) {
        if (s->users[i] == c) {
            s->users[i] = s->users[--s->n_users];
            break;
        }
    }
}

/* Subscribe to the services some cluster uses; forget the others. */
static void eds_resubscribe(struct rm_xds_manager *m)
{
    const char **names = malloc((m->svcs.n + 1) * sizeof(*names));
    char **unused = malloc((m->svcs.n + 1) * sizeof(*unused));
    if (!names || !unused) abort();
    size_t n = 0, nu = 0, it;
    for (struct rm_strmap_ent *e = rm_strmap_first(&m->svcs, &it); e;
         e = rm_strmap_next(&m->svcs, e, &it)) {
        if (((struct svc *)e->value)->n_users)
            names[n++] = e->key;
        else
            unused[nu++] = e->key;
    }
    for (size_t i = 0; i < nu; i++)
        svc_free(rm_strmap_del(&m->svcs, unused[i]));
    subscribe(m, T_EDS, names, n);
    free(names);
    free(unused);
}

/* Give <c> the hosts <specs>; publish them when <c> is active. */
static void set_hosts(struct rm_xds_manager *m, struct rm_cluster *c,
                      const struct rm_host_spec *specs, size_t n, bool publish)
{
    struct rm_host_set *hs = NULL;
    int rc = rm_host_set_diff(c->hs, specs, n, &hs);
    if (!rm_cluster_take_diff(c, rc, hs)) return;
    rm_log_debug("cluster %s: EDS: %zu host(s)", c->name, c->hs->n);
    if (publish) m->hooks.publish_hosts(m->ctx, c, c->hs);
}

static bool cluster_active(const struct rm_xds_manager *m, const struct rm_cluster *c)
{
    return rm_snapshot_cluster(m->cur ? m->cur : m->base, c->name) == c;
}

static void dns_watch_free(struct dns_watch *w)
{
    if (!w) return;
    rm_dns_clusters_free(w->dns);
    free(w);
}

/* A warming cluster becomes the active one. */
static void promote_cluster(struct rm_xds_manager *m, struct dcluster *d)
{
    untrack(m, d->active);
    rm_cluster_unref(d->active);
    dns_watch_free(d->active_dns); /* never the one calling back: that one is warming_dns */
    d->active = d->warming;
    d->active_dns = d->warming_dns;
    d->warming = NULL;
    d->warming_dns = NULL;
    d->hosts_ready = false;
}

/* Service <s> has a new assignment (<specs>; none when it was removed): every cluster using it
 * follows, warming ones become active.  Returns whether a new snapshot is needed. */
static bool eds_apply(struct rm_xds_manager *m, struct svc *s, const struct rm_host_spec *specs,
                      size_t n)
{
    bool rebuild = false;
    s->known = true;
    for (size_t i = 0; i < s->n_users; i++) {
        struct rm_cluster *c = s->users[i];
        bool active = cluster_active(m, c);
        set_hosts(m, c, specs, n, active);
        if (active) continue;
        struct dcluster *d = rm_strmap_get(&m->clusters, c->name);
        if (d && d->warming == c) {
            if (!secrets_ready(m, rm_tls_ctx_sds_refs(c->tls))) {
                d->hosts_ready = true; /* its secrets are still to come */
                continue;
            }
            promote_cluster(m, d);
            rebuild = true;
        }
    }
    rm_host_set_unref(s->hs);
    s->hs = s->n_users ? rm_host_set_ref(s->users[0]->hs) : NULL;
    return rebuild;
}

/* cluster.<name>.update_*: every cluster of a service the response carried counts a success;
 * a rejected response counts against every EDS cluster. */
static void count_success(const struct svc *s)
{
    for (size_t i = 0; i < s->n_users; i++) {
        rm_stat_inc(s->users[i]->stats, RM_CS_UPDATE_ATTEMPT);
        rm_stat_inc(s->users[i]->stats, RM_CS_UPDATE_SUCCESS);
    }
}

static void count_rejected(struct rm_xds_manager *m)
{
    size_t it;
    for (struct rm_strmap_ent *e = rm_strmap_first(&m->svcs, &it); e;
         e = rm_strmap_next(&m->svcs, e, &it)) {
        const struct svc *s = e->value;
        for (size_t i = 0; i < s->n_users; i++) {
            rm_stat_inc(s->users[i]->stats, RM_CS_UPDATE_ATTEMPT);
            rm_stat_inc(s->users[i]->stats, RM_CS_UPDATE_REJECTED);
        }
    }
}

struct eds_new {
    const char *name;
    LoadAssignment *la;
    struct rm_host_spec *specs;
    size_t n;
};

static int eds_on_update(void *ctx, const struct rm_ads_update *u, struct rm_error *err)
{
    struct rm_xds_manager *m = ctx;
    struct eds_new *v = calloc(u->n + 1, sizeof(*v));
    if (!v) return rm_error_set(err, "out of memory");
    struct rm_bulk bulk = RM_BULK_INIT; /* assignments are read, then dropped */
    ProtobufCAllocator al = rm_pb_bulk_allocator(&bulk);
    int rc = RM_OK;
    size_t n = 0;
    for (size_t i = 0; i < u->n && rc == RM_OK; i++, n++) {
        char label[300];
        snprintf(label, sizeof(label), "ClusterLoadAssignment %s: resources[%zu]", u->res[i].name,
                 u->res[i].index);
        v[i].name = u->res[i].name;
        v[i].la = (LoadAssignment *)unpack(
            &envoy__config__endpoint__v3__cluster_load_assignment__descriptor, &u->res[i], &al,
            label, err);
        if (!v[i].la ||
            rm_load_assignment_specs(v[i].la, label, &v[i].specs, &v[i].n, err) != RM_OK)
            rc = RM_ERR;
    }
    if (rc != RM_OK) count_rejected(m);
    bool rebuild = false;
    for (size_t i = 0; i < n; i++) {
        struct svc *s = rc == RM_OK ? rm_strmap_get(&m->svcs, v[i].name) : NULL;
        if (s) { /* else rejected, or a service no cluster uses any more */
            count_success(s);
            rebuild |= eds_apply(m, s, v[i].specs, v[i].n);
        }
        free(v[i].specs); /* the hosts copied what they need */
    }
    free(v);
    rm_bulk_dispose(&bulk); /* the decoded assignments */
    for (size_t i = 0; rc == RM_OK && i < u->n_removed; i++) {
        struct svc *s = rm_strmap_get(&m->svcs, u->removed[i]);
        if (!s) continue;
        count_success(s);
        rebuild |= eds_apply(m, s, NULL, 0); /* Envoy: the cluster has no host then */
    }
    if (rebuild) publish_next(m);
    check_init(m);
    return rc;
}

/* ---- CDS ---------------------------------------------------------------------------------- */

struct cds_new {
    const struct rm_ads_res *res;
    struct rm_cluster *c;
};

static int cds_check_one(struct rm_xds_manager *m, const struct rm_ads_res *r, struct cds_new *out,
                         struct rm_error *err)
{
    char label[300];
    snprintf(label, sizeof(label), "Cluster %s: resources[%zu]", r->name, r->index);
    ProtobufCMessage *msg =
        unpack(&envoy__config__cluster__v3__cluster__descriptor, r, NULL, label, err);
    if (!msg) return RM_ERR;
    struct rm_pb_box *box = rm_pb_box_new(msg);
    if (!box) return rm_error_set(err, "out of memory");
    const Cluster *pb = (const Cluster *)msg;
    int rc = RM_ERR;
    if (rm_snapshot_cluster(m->base, r->name))
        rm_error_set(err, "%s.name: a static cluster has that name", label);
    else if ((out->c = rm_cluster_new(pb, box, m->base->secrets, label, err)) != NULL)
        rc = RM_OK;
    char p[340];
    snprintf(p, sizeof(p), "%s.eds_cluster_config.eds_config", label);
    if (rc == RM_OK && rm_cluster_is_eds(out->c) && source_ok(m, T_EDS, &out->c->eds_src, p, err))
        rc = RM_ERR;
    const struct rm_sds_refs *refs = rc == RM_OK ? rm_tls_ctx_sds_refs(out->c->tls) : NULL;
    if (refs && sds_sources_ok(m, refs, label, err)) rc = RM_ERR;
    struct rm_tls_ctx *t = NULL; /* with the secrets already received */
    if (refs && rc == RM_OK && rm_sds_store_table(m->sds)) {
        if (rm_tls_ctx_rebuild(out->c->tls, rm_sds_store_table(m->sds), false, &t, err))
            rc = RM_ERR;
        else
            rm_cluster_set_tls(out->c, t);
    }
    rm_pb_box_unref(box);
    if (rc == RM_OK) { /* the cluster copied what it needs: keep the bytes, for /config_dump */
        rm_pb_box_unref(out->c->pb_box);
        out->c->pb = NULL;
        out->c->pb_box =
            rm_pb_box_new_bytes(&envoy__config__cluster__v3__cluster__descriptor, r->value, r->len);
        if (!out->c->pb_box) abort();
        out->c->version_info = xstrdup(r->version);
        out->c->last_updated_ms = wall_ms();
        rm_cluster_update_membership(out->c);
    }
    return rc;
}

/* ---- CDS clusters of DNS types ----------------------------------------------------------- */

static void dns_publish(void *ctx, struct rm_cluster *c, struct rm_host_set *hs)
{
    struct dns_watch *w = ctx;
    if (cluster_active(w->m, c)) w->m->hooks.publish_hosts(w->m->ctx, c, hs);
    /* a warming cluster's first hosts go to the workers with the snapshot that activates it */
}

/* The first answer (or failure): the warming version it resolves for becomes active. */
static void dns_warm(void *ctx)
{
    struct dns_watch *w = ctx;
    struct rm_xds_manager *m = w->m;
    struct dcluster *d = rm_strmap_get(&m->clusters, w->c->name);
    if (!d || d->warming_dns != w) return;
    if (!secrets_ready(m, rm_tls_ctx_sds_refs(w->c->tls))) {
        d->hosts_ready = true; /* its secrets are still to come */
        return;
    }
    promote_cluster(m, d);
    publish_next(m);
    check_init(m);
}

/* Start resolving for warming DNS cluster <c> of <d>.  Returns whether it is warm already
 * (no endpoint to wait for).  A resolver that cannot start is logged: the cluster stays
 * without hosts (503 UH) until its initial_fetch_timeout, as an EDS one without assignment. */
static bool dns_start(struct rm_xds_manager *m, struct dcluster *d, struct rm_cluster *c)
{
    struct dns_watch *w = calloc(1, sizeof(*w));
    if (!w) abort();
    *w = (struct dns_watch){.m = m, .c = c};
    struct rm_error err = {{0}};
    w->dns = rm_dns_clusters_new(m->loop, &c, 1, &m->dns_cfg, dns_publish, dns_warm, w, &err);
    if (!w->dns) {
        rm_log_error("cluster %s: %s", c->name, err.msg);
        free(w);
        return false;
    }
    d->warming_dns = w;
    return rm_dns_clusters_initialized(w->dns);
}

/* A new version <c> of cluster <name> (takes the reference). */
static void cds_put(struct rm_xds_manager *m, const char *name, struct rm_cluster *c)
{
    struct dcluster *d = rm_strmap_get(&m->clusters, name);
    if (!d) {
        if (!(d = calloc(1, sizeof(*d)))) abort();
        rm_strmap_put(&m->clusters, name, d);
        rm_stat_inc(m->cm, CM_CLUSTER_ADDED);
    } else {
        rm_stat_inc(m->cm, CM_CLUSTER_MODIFIED);
    }
    if (d->warming) {
        untrack(m, d->warming);
        rm_cluster_unref(d->warming);
    }
    dns_watch_free(d->warming_dns);
    d->warming_dns = NULL;
    d->warming = c;
    d->hosts_ready = false;
    track(m, c);
    const struct rm_sds_refs *refs = rm_tls_ctx_sds_refs(c->tls);
    bool secrets = secrets_ready(m, refs);
    if (rm_cluster_is_dns(c) && dns_start(m, d, c)) {
        d->hosts_ready = true;
        if (secrets) {
            promote_cluster(m, d);
            return;
        }
    }
    struct rm_error err = {{0}};
    if (rm_cluster_is_eds(c) && bind_source(m, T_EDS, &c->eds_src, name, &err))
        rm_log_error("cluster %s: %s", name, err.msg); /* checked before: out of memory */
    const struct svc *s = rm_cluster_is_eds(c) ? rm_strmap_get(&m->svcs, c->eds_service) : NULL;
    if ((!rm_cluster_is_eds(c) && !rm_cluster_is_dns(c)) || (s && s->known)) {
        if (s) { /* a new version of a cluster (or a new cluster) of a known service */
            struct rm_host_spec *specs = rm_host_set_specs(s->hs);
            set_hosts(m, c, specs, s->hs ? s->hs->n : 0, false);
            free(specs);
        }
        d->hosts_ready = true;
        if (secrets) {
            promote_cluster(m, d);
            return;
        }
    }
    /* what it waits for bounds the warming: its assignment or DNS answer, its secrets */
    d->warm_start = rm_loop_now(m->loop);
    d->hosts_timeout_ms = rm_cluster_is_eds(c) ? c->eds_init_timeout_ms : DEFAULT_FETCH_TIMEOUT_MS;
    warm_poll(m);
}

/* Watch warming versions for their initial fetch timeouts. */
static void warm_poll(struct rm_xds_manager *m)
{
    if (!rm_timer_armed(&m->warm_timer))
        rm_timer_start(m->loop, &m->warm_timer, WARM_POLL_MS, on_warm_poll);
}

/* Whether a version warming since <start> has waited out the initial_fetch_timeout of each
 * dependency still missing (Envoy: each init target times out on its own): <own> ms for its
 * routes or hosts (UINT32_MAX: not missing) and each secret of <r> not arrived (0: no bound). */
static bool waited_out(const struct rm_xds_manager *m, uint64_t start, uint32_t own,
                       const struct rm_sds_refs *r)
{
    uint64_t waited = rm_loop_now(m->loop) - start;
    if (own != UINT32_MAX && (own == 0 || waited < own)) return false;
    return rm_sds_store_waited_out(m->sds, r, waited);
}

static void cds_del(struct rm_xds_manager *m, const char *name)
{
    struct dcluster *d = rm_strmap_del(&m->clusters, name);
    if (!d) return;
    untrack(m, d->active);
    untrack(m, d->warming);
    dns_watch_free(d->active_dns);
    dns_watch_free(d->warming_dns);
    rm_cluster_unref(d->active);
    rm_cluster_unref(d->warming);
    free(d);
    rm_stat_inc(m->cm, CM_CLUSTER_REMOVED);
}

static int cds_on_update(void *ctx, const struct rm_ads_update *u, struct rm_error *err)
{
    struct rm_xds_manager *m = ctx;
    rm_stat_inc(m->cm, CM_CDS_UPDATE_ATTEMPT);
    struct cds_new *v = calloc(u->n + 1, sizeof(*v));
    if (!v) return rm_error_set(err, "out of memory");
    int rc = RM_OK;
    for (size_t i = 0; i < u->n && rc == RM_OK; i++) {
        v[i].res = &u->res[i];
        rc = cds_check_one(m, &u->res[i], &v[i], err);
    }
    if (rc != RM_OK) {
        for (size_t i = 0; i < u->n; i++)
            rm_cluster_unref(v[i].c);
        free(v);
        rm_stat_inc(m->cm, CM_CDS_UPDATE_REJECTED);
        return RM_ERR;
    }
    for (size_t i = 0; i < u->n_removed; i++)
        cds_del(m, u->removed[i]);
    for (size_t i = 0; i < u->n; i++)
        cds_put(m, u->res[i].name, v[i].c);
    free(v);
    m->cds_done = true;
    rm_stat_inc(m->cm, CM_CDS_UPDATE_SUCCESS);
    rm_stat_set(m->cm, CM_CDS_VERSION, (int64_t)version_hash(u->version_info));
    eds_resubscribe(m);
    sds_resubscribe(m);
    if (u->n || u->n_removed) publish_next(m);
    check_init(m);
    return RM_OK;
}

/* ---- clusters known to checks (static, active, warming) ------------------------------------ */

static void *resolve_known(void *ctx, const char *name)
{
    struct rm_xds_manager *m = ctx;
    struct rm_cluster *c = rm_snapshot_cluster(m->base, name);
    if (c) return c;
    struct dcluster *d = rm_strmap_get(&m->clusters, name);
    return d ? (d->active ? d->active : d->warming) : NULL;
}

/* ---- RDS ---------------------------------------------------------------------------------- */

static void rds_resubscribe(struct rm_xds_manager *m)
{
    size_t cap = 2 * m->listeners.n + m->base->n_listeners + 1, n = 0, it;
    const char **names = malloc(cap * sizeof(*names));
    if (!names) abort();
    for (size_t i = 0; i < m->base->n_listeners; i++) {
        if (m->base->listeners[i]->rds_name) names[n++] = m->base->listeners[i]->rds_name;
    }
    for (struct rm_strmap_ent *e = rm_strmap_first(&m->listeners, &it); e;
         e = rm_strmap_next(&m->listeners, e, &it)) {
        struct dlistener *d = e->value;
        if (d->active.rds) names[n++] = d->active.rds;
        if (d->warming.rds) names[n++] = d->warming.rds;
    }
    subscribe(m, T_RDS, names, n);
    /* route configurations no listener names any more are forgotten */
    const char **gone = malloc((m->routes.n + 1) * sizeof(*gone));
    if (!gone) abort();
    size_t ng = 0;
    for (struct rm_strmap_ent *e = rm_strmap_first(&m->routes, &it); e;
         e = rm_strmap_next(&m->routes, e, &it)) {
        bool used = false;
        for (size_t i = 0; i < n && !used; i++)
            used = strcmp(names[i], e->key) == 0;
        if (!used) gone[ng++] = e->key;
    }
    for (size_t i = 0; i < ng; i++) {
        struct droute *r = rm_strmap_del(&m->routes, gone[i]);
        rm_pb_box_unref(r->pb);
        free(r->version);
        free(r);
    }
    free(gone);
    free(names);
}

static void lversion_clear(struct lversion *v)
{
    rm_pb_box_unref(v->pb);
    free(v->version);
    free(v->rds);
    rm_sds_refs_dispose(&v->sds);
    *v = (struct lversion){0};
}

/* Listeners warming for a route configuration that is now there become active. */
static bool promote_listeners(struct rm_xds_manager *m, bool expired_only)
{
    bool any = false;
    size_t it;
    for (struct rm_strmap_ent *e = rm_strmap_first(&m->listeners, &it); e;
         e = rm_strmap_next(&m->listeners, e, &it)) {
        struct dlistener *d = e->value;
        if (!d->warming.pb) continue;
        bool routes = !d->warming.rds || rm_strmap_get(&m->routes, d->warming.rds);
        bool secrets = secrets_ready(m, &d->warming.sds);
        bool ready = !expired_only && routes && secrets;
        bool expired =
            waited_out(m, d->warm_start, routes ? UINT32_MAX : d->rds_timeout_ms, &d->warming.sds);
        if (!ready && !expired) continue;
        if (expired && !routes)
            rm_log_warn("listener %s: no RouteConfiguration %s after the initial fetch timeout; "
                        "active with an empty route table",
                        e->key, d->warming.rds);
        if (expired && !secrets) {
            rm_log_warn("listener %s: a secret it takes over SDS did not arrive before the "
                        "initial fetch timeout; active without it (TLS handshakes fail)",
                        e->key);
            rm_sds_store_count_timeouts(m->sds, &d->warming.sds);
        }
        lversion_clear(&d->active);
        d->active = d->warming;
        d->warming = (struct lversion){0};
        any = true;
    }
    return any;
}

/* http.<stat_prefix>.rds.<name>.<stat> of every active listener whose routes are <name> (NULL:
 * every listener with rds), as Envoy counts per route configuration subscription.  The block is
 * the listener config's (lc->rds_stats, held by the snapshot m keeps): it goes with the last
 * listener of that stat_prefix and route name. */
static void count_rds(struct rm_xds_manager *m, const char *name, unsigned stat)
{
    const struct rm_snapshot *s = m->cur ? m->cur : m->base;
    for (size_t i = 0; i < s->n_listeners; i++) {
        for (size_t k = 0; k < s->listeners[i]->n_chains; k++) {
            const struct rm_listener_cfg *lc = s->listeners[i]->chains[k];
            if (!lc->rds_stats || (name && strcmp(lc->rds_name, name) != 0)) continue;
            rm_stat_inc(lc->rds_stats, RM_RDS_UPDATE_ATTEMPT);
            rm_stat_inc(lc->rds_stats, stat);
        }
    }
}

static void rds_rejected(void *ctx)
{
    count_rds(ctx, NULL, RM_RDS_UPDATE_REJECTED);
}

static void cds_rejected(void *ctx)
{
    struct rm_xds_manager *m = ctx;
    rm_stat_inc(m->cm, CM_CDS_UPDATE_ATTEMPT);
    rm_stat_inc(m->cm, CM_CDS_UPDATE_REJECTED);
}

static void lds_rejected(void *ctx)
{
    struct rm_xds_manager *m = ctx;
    rm_stat_inc(m->lm, RM_LM_LDS_UPDATE_ATTEMPT);
    rm_stat_inc(m->lm, RM_LM_LDS_UPDATE_REJECTED);
}

static void eds_rejected(void *ctx)
{
    count_rejected(ctx);
}

static int rds_on_update(void *ctx, const struct rm_ads_update *u, struct rm_error *err)
{
    struct rm_xds_manager *m = ctx;
    ProtobufCMessage **v = calloc(u->n + 1, sizeof(*v));
    if (!v) return rm_error_set(err, "out of memory");
    int rc = RM_OK;
    for (size_t i = 0; i < u->n && rc == RM_OK; i++) {
        char label[300];
        snprintf(label, sizeof(label), "RouteConfiguration %s: resources[%zu]", u->res[i].name,
                 u->res[i].index);
        v[i] = unpack(&envoy__config__route__v3__route_configuration__descriptor, &u->res[i], NULL,
                      label, err);
        if (!v[i] || rm_snapshot_check_route((const RouteConfiguration *)v[i], label, resolve_known,
                                             m, err) != RM_OK)
            rc = RM_ERR;
    }
    for (size_t i = 0; i < u->n; i++) {
        if (rc != RM_OK) {
            if (v[i]) protobuf_c_message_free_unpacked(v[i], NULL);
            continue;
        }
        struct droute *r = rm_strmap_get(&m->routes, u->res[i].name);
        if (!r) {
            if (!(r = calloc(1, sizeof(*r)))) abort();
            rm_strmap_put(&m->routes, u->res[i].name, r);
        }
        rm_pb_box_unref(r->pb);
        free(r->version);
        if (!(r->pb = rm_pb_box_new(v[i]))) abort();
        r->version = xstrdup(u->res[i].version);
        r->updated_ms = wall_ms();
    }
    free(v);
    if (rc != RM_OK) {
        for (size_t i = 0; i < u->n; i++)
            count_rds(m, u->res[i].name, RM_RDS_UPDATE_REJECTED);
        return RM_ERR;
    }
    for (size_t i = 0; i < u->n_removed; i++) {
        struct droute *r = rm_strmap_del(&m->routes, u->removed[i]);
        if (!r) continue;
        rm_pb_box_unref(r->pb);
        free(r->version);
        free(r);
    }
    promote_listeners(m, false);
    publish_next(m);
    for (size_t i = 0; i < u->n; i++) /* after publishing: listeners it warmed count too */
        count_rds(m, u->res[i].name, RM_RDS_UPDATE_SUCCESS);
    check_init(m);
    return RM_OK;
}

/* ---- LDS ---------------------------------------------------------------------------------- */

struct lds_new {
    ProtobufCMessage *pb;
    char *rds;
    struct rm_config_source rds_src;
    struct rm_sds_refs sds;
    struct rm_listener_cfg probe; /* name and address, for the conflict checks */
};

/* The address of an active listener other than <skip_name> (or a static one) equal to <a>. */
static const char *address_user(const struct rm_xds_manager *m, const struct sockaddr_storage *a,
                                socklen_t len, const char *skip_name)
{
    const struct rm_snapshot *s = m->cur ? m->cur : m->base;
    for (size_t i = 0; i < s->n_listeners; i++) {
        const struct rm_listener_cfg *lc = s->listeners[i];
        if (lc->dynamic &&
            (strcmp(lc->name, skip_name) == 0 || !rm_strmap_get(&m->listeners, lc->name)))
            continue;
        if (lc->addr_len == len && memcmp(&lc->addr, a, len) == 0) return lc->name;
    }
    return NULL;
}

static bool bound_now(const struct rm_xds_manager *m, const struct rm_listener_cfg *p)
{
    const struct rm_snapshot *s = m->cur ? m->cur : m->base;
    for (size_t i = 0; i < s->n_listeners; i++) {
        if (rm_listener_cfg_same_socket(s->listeners[i], p)) return true;
    }
    return false;
}

static int lds_check_one(struct rm_xds_manager *m, const struct rm_ads_res *r, struct lds_new *out,
                         struct rm_error *err)
{
    char label[300];
    snprintf(label, sizeof(label), "Listener %s: resources[%zu]", r->name, r->index);
    out->pb = unpack(&envoy__config__listener__v3__listener__descriptor, r, NULL, label, err);
    if (!out->pb) return RM_ERR;
    const Listener *pb = (const Listener *)out->pb;
    for (size_t i = 0; i < m->base->n_listeners; i++) {
        if (strcmp(m->base->listeners[i]->name, r->name) == 0)
            return rm_error_set(err, "%s.name: a static listener has that name", label);
    }
    if (rm_snapshot_check_listener(pb, label, m->base->secrets, rm_sds_store_table(m->sds),
                                   resolve_known, m, &out->rds, &out->rds_src, &out->sds, err) ||
        sds_sources_ok(m, &out->sds, label, err))
        return RM_ERR;
    char rp[340];
    snprintf(rp, sizeof(rp), "%s: rds.config_source", label);
    if (out->rds && source_ok(m, T_RDS, &out->rds_src, rp, err)) return RM_ERR;
    char p[320];
    snprintf(p, sizeof(p), "%s.address", label);
    out->probe.name = (char *)r->name;
    if (rm_pb_address(pb->address, p, &out->probe.addr, &out->probe.addr_len, err)) return RM_ERR;
    const char *other = address_user(m, &out->probe.addr, out->probe.addr_len, r->name);
    char a[RM_SOCKADDR_STRLEN];
    rm_sockaddr_str((struct sockaddr *)&out->probe.addr, a, sizeof(a));
    if (other) return rm_error_set(err, "%s: %s is already used by listener %s", p, a, other);
    out->probe.bind_to_port = rm_pb_bool(pb->bind_to_port, true);
    if (out->probe.bind_to_port && !bound_now(m, &out->probe)) { /* can it be bound? */
        int fd =
            rm_listen_socket((struct sockaddr *)&out->probe.addr, out->probe.addr_len, true, 1);
        if (fd < 0) return rm_error_set(err, "%s: cannot listen on %s: %s", p, a, strerror(-fd));
        close(fd);
        if (out->probe.addr.ss_family == AF_UNIX && a[0] != '@')
            unlink(a); /* the probe's own socket file */
    }
    return RM_OK;
}

/* Two listeners of one response on one address. */
static int lds_check_batch(const struct rm_ads_update *u, const struct lds_new *v,
                           struct rm_error *err)
{
    for (size_t i = 0; i < u->n; i++) {
        for (size_t j = 0; j < i; j++) {
            if (v[i].probe.addr_len == v[j].probe.addr_len &&
                memcmp(&v[i].probe.addr, &v[j].probe.addr, v[i].probe.addr_len) == 0)
                return rm_error_set(err, "Listener %s.address: the address of listener %s too",
                                    u->res[i].name, u->res[j].name);
        }
    }
    return RM_OK;
}

static void lds_put(struct rm_xds_manager *m, const struct rm_ads_res *r, struct lds_new *n)
{
    struct dlistener *d = rm_strmap_get(&m->listeners, r->name);
    if (!d) {
        if (!(d = calloc(1, sizeof(*d)))) abort();
        rm_strmap_put(&m->listeners, r->name, d);
        rm_stat_inc(m->lm, RM_LM_LISTENER_ADDED);
    } else {
        rm_stat_inc(m->lm, RM_LM_LISTENER_MODIFIED);
    }
    lversion_clear(&d->warming);
    if (!(d->warming.pb = rm_pb_box_new(n->pb))) abort();
    n->pb = NULL;
    d->warming.version = xstrdup(r->version);
    d->warming.rds = n->rds;
    n->rds = NULL;
    struct rm_error err = {{0}};
    if (d->warming.rds && bind_source(m, T_RDS, &n->rds_src, r->name, &err))
        rm_log_error("listener %s: %s", r->name, err.msg); /* checked before: out of memory */
    d->warming.sds = n->sds;
    n->sds = (struct rm_sds_refs){0};
    d->warming.updated_ms = wall_ms();
    /* rds.config_source.initial_fetch_timeout and its secrets' bound the warming (0: none) */
    d->warm_start = rm_loop_now(m->loop);
    d->rds_timeout_ms = d->warming.rds ? n->rds_src.init_timeout_ms : DEFAULT_FETCH_TIMEOUT_MS;
    warm_poll(m);
}

static void lds_del(struct rm_xds_manager *m, const char *name)
{
    struct dlistener *d = rm_strmap_del(&m->listeners, name);
    if (!d) return;
    lversion_clear(&d->active);
    lversion_clear(&d->warming);
    free(d);
    rm_stat_inc(m->lm, RM_LM_LISTENER_REMOVED);
}

static int lds_on_update(void *ctx, const struct rm_ads_update *u, struct rm_error *err)
{
    struct rm_xds_manager *m = ctx;
    rm_stat_inc(m->lm, RM_LM_LDS_UPDATE_ATTEMPT);
    struct lds_new *v = calloc(u->n + 1, sizeof(*v));
    if (!v) return rm_error_set(err, "out of memory");
    int rc = RM_OK;
    for (size_t i = 0; i < u->n && rc == RM_OK; i++)
        rc = lds_check_one(m, &u->res[i], &v[i], err);
    if (rc == RM_OK) rc = lds_check_batch(u, v, err);
    if (rc == RM_OK) {
        for (size_t i = 0; i < u->n_removed; i++)
            lds_del(m, u->removed[i]);
        for (size_t i = 0; i < u->n; i++)
            lds_put(m, &u->res[i], &v[i]);
    }
    for (size_t i = 0; i < u->n; i++) {
        if (v[i].pb) protobuf_c_message_free_unpacked(v[i].pb, NULL);
        free(v[i].rds);
        rm_config_source_dispose(&v[i].rds_src);
        rm_sds_refs_dispose(&v[i].sds);
    }
    free(v);
    if (rc != RM_OK) {
        rm_stat_inc(m->lm, RM_LM_LDS_UPDATE_REJECTED);
        return RM_ERR;
    }
    m->lds_done = true;
    rm_stat_inc(m->lm, RM_LM_LDS_UPDATE_SUCCESS);
    rm_stat_set(m->lm, RM_LM_LDS_VERSION, (int64_t)version_hash(u->version_info));
    rds_resubscribe(m);
    promote_listeners(m, false);
    sds_resubscribe(m); /* after the promotions: the versions replaced no longer count */
    if (u->n || u->n_removed) publish_next(m);
    check_init(m);
    return RM_OK;
}

/* ---- SDS ---------------------------------------------------------------------------------- */

/* Whether every secret of <r> (NULL: none) has arrived. */
static bool secrets_ready(const struct rm_xds_manager *m, const struct rm_sds_refs *r)
{
    return rm_sds_store_ready(m->sds, r);
}

/* The warming bound <t> (ms; 0: none; UINT32_MAX: not set yet) once the initial_fetch_timeouts
 * of <r>'s sources are in: the largest, none when one is 0 (each waits on its own, as Envoy's
 * init targets). */
static uint32_t sds_timeout(uint32_t t, const struct rm_sds_refs *r)
{
    for (size_t i = 0; r && i < r->n; i++) {
        uint32_t x = r->v[i].src.init_timeout_ms;
        if (t == 0 || x == 0) return 0;
        if (t == UINT32_MAX || x > t) t = x;
    }
    return t;
}

/* Every source of <r> may carry SDS (one source for the type; errors under <label>). */
static int sds_sources_ok(struct rm_xds_manager *m, const struct rm_sds_refs *r, const char *label,
                          struct rm_error *err)
{
    char p[400];
    for (size_t i = 0; r && i < r->n; i++) {
        snprintf(p, sizeof(p), "%s: secret %s: sds_config", label, r->v[i].name);
        if (source_ok(m, T_SDS, &r->v[i].src, p, err)) return RM_ERR;
    }
    return RM_OK;
}

/* Every SDS reference of the config: static listeners and clusters, CDS clusters and LDS
 * listeners (active and warming), into <all>. */
static void sds_all_refs(const struct rm_xds_manager *m, struct rm_sds_refs *all)
{
    size_t it;
    for (size_t i = 0; i < m->base->n_listeners; i++)
        rm_listener_cfg_sds_refs(m->base->listeners[i], all);
    for (size_t i = 0; i < m->base->n_clusters; i++)
        rm_sds_refs_merge(all, rm_tls_ctx_sds_refs(m->base->clusters[i]->tls));
    for (struct rm_strmap_ent *e = rm_strmap_first(&m->clusters, &it); e;
         e = rm_strmap_next(&m->clusters, e, &it)) {
        const struct dcluster *d = e->value;
        if (d->active) rm_sds_refs_merge(all, rm_tls_ctx_sds_refs(d->active->tls));
        if (d->warming) rm_sds_refs_merge(all, rm_tls_ctx_sds_refs(d->warming->tls));
    }
    for (struct rm_strmap_ent *e = rm_strmap_first(&m->listeners, &it); e;
         e = rm_strmap_next(&m->listeners, e, &it)) {
        const struct dlistener *d = e->value;
        rm_sds_refs_merge(all, &d->active.sds);
        rm_sds_refs_merge(all, &d->warming.sds);
    }
}

/* Subscribe to the secrets the config references (by name, from their source); forget the
 * others. */
static void sds_resubscribe(struct rm_xds_manager *m)
{
    struct rm_sds_refs all = {0};
    sds_all_refs(m, &all);
    const char **names = calloc(all.n + 1, sizeof(*names));
    if (!names) abort();
    for (size_t i = 0; i < all.n; i++) {
        struct rm_error err = {{0}};
        if (bind_source(m, T_SDS, &all.v[i].src, all.v[i].name, &err))
            rm_log_error("secret %s: %s", all.v[i].name, err.msg); /* checked before */
        names[i] = all.v[i].name;
    }
    rm_sds_store_sync(m->sds, &all, NULL, NULL);
    subscribe(m, T_SDS, names, all.n);
    free(names);
    rm_sds_refs_dispose(&all);
}

/* Whether <r> names one of <names>[<n>]. */
static bool refs_touch(const struct rm_sds_refs *r, const char *const *names, size_t n)
{
    for (size_t i = 0; r && i < n; i++) {
        if (rm_sds_refs_has(r, names[i])) return true;
    }
    return false;
}

/* A cluster whose TLS context gets rebuilt on new secrets, and its new context. */
struct tls_swap {
    struct rm_cluster *c;
    struct rm_tls_ctx *t;
};

static int swap_add(struct tls_swap **v, size_t *n, struct rm_cluster *c, const char *const *names,
                    size_t nn, const struct rm_secrets *table, struct rm_error *err)
{
    if (!c || !refs_touch(rm_tls_ctx_sds_refs(c->tls), names, nn)) return RM_OK;
    struct tls_swap *w = realloc(*v, (*n + 1) * sizeof(**v));
    if (!w) abort();
    *v = w;
    w[*n] = (struct tls_swap){c, NULL};
    if (rm_tls_ctx_rebuild(c->tls, table, true, &w[*n].t, err)) return RM_ERR;
    (*n)++;
    return RM_OK;
}

/* The clusters using <names> with their contexts rebuilt on <table> into *v; the listeners
 * using them checked (built and dropped) on it.  RM_ERR with <err> (the first failure). */
static int sds_rebuild_users(struct rm_xds_manager *m, const char *const *names, size_t nn,
                             const struct rm_secrets *table, struct tls_swap **v, size_t *n,
                             struct rm_error *err)
{
    size_t it;
    for (size_t i = 0; i < m->base->n_clusters; i++) {
        if (swap_add(v, n, m->base->clusters[i], names, nn, table, err)) return RM_ERR;
    }
    for (struct rm_strmap_ent *e = rm_strmap_first(&m->clusters, &it); e;
         e = rm_strmap_next(&m->clusters, e, &it)) {
        struct dcluster *d = e->value;
        if (swap_add(v, n, d->active, names, nn, table, err) ||
            swap_add(v, n, d->warming, names, nn, table, err))
            return RM_ERR;
    }
    for (size_t i = 0; i < m->base->n_listeners; i++) {
        for (size_t k = 0; k < m->base->listeners[i]->n_chains; k++) {
            const struct rm_tls_ctx *lt = m->base->listeners[i]->chains[k]->tls;
            struct rm_tls_ctx *t = NULL;
            if (!refs_touch(rm_tls_ctx_sds_refs(lt), names, nn)) continue;
            if (rm_tls_ctx_rebuild(lt, table, false, &t, err)) return RM_ERR;
            rm_tls_ctx_unref(t);
        }
    }
    for (struct rm_strmap_ent *e = rm_strmap_first(&m->listeners, &it); e;
         e = rm_strmap_next(&m->listeners, e, &it)) {
        const struct dlistener *d = e->value;
        const struct lversion *lv[2] = {&d->active, &d->warming};
        for (int k = 0; k < 2; k++) {
            if (!lv[k]->pb || !refs_touch(&lv[k]->sds, names, nn)) continue;
            char label[300];
            snprintf(label, sizeof(label), "Listener %s", e->key);
            const ProtobufCMessage *pb = rm_pb_box_open(lv[k]->pb);
            int rc = pb ? rm_snapshot_check_listener((const Listener *)pb, label, m->base->secrets,
                                                     table, resolve_known, m, NULL, NULL, NULL, err)
                        : rm_error_set(err, "%s: out of memory", label);
            if (pb) rm_pb_box_close(lv[k]->pb, pb);
            if (rc) return RM_ERR;
        }
    }
    return RM_OK;
}

/* Warming clusters that had their hosts and now have their secrets become active. */
static bool promote_clusters_sds(struct rm_xds_manager *m)
{
    bool any = false;
    size_t it;
    for (struct rm_strmap_ent *e = rm_strmap_first(&m->clusters, &it); e;
         e = rm_strmap_next(&m->clusters, e, &it)) {
        struct dcluster *d = e->value;
        if (!d->warming || !d->hosts_ready ||
            !secrets_ready(m, rm_tls_ctx_sds_refs(d->warming->tls)))
            continue;
        promote_cluster(m, d);
        any = true;
    }
    return any;
}

static void sds_rejected(void *ctx)
{
    struct rm_xds_manager *m = ctx;
    rm_sds_store_count(m->sds, NULL, RM_SDS_UPDATE_REJECTED);
}

/* Check the Secrets of <u> (unpacked into <v>) and what uses them.  The subscribed ones boxed in
 * <nb_out> (by resource index; references for the caller) and named in <names>, the candidate
 * table (the held secrets with the new ones over them) in *table, the clusters' new contexts
 * in *sw. */
static int sds_check(struct rm_xds_manager *m, const struct rm_ads_update *u, ProtobufCMessage **v,
                     struct rm_pb_box **nb_out, const char **names, size_t *nn,
                     struct rm_secrets **table, struct tls_swap **sw, size_t *nsw,
                     struct rm_error *err)
{
    for (size_t i = 0; i < u->n; i++) {
        char label[300];
        snprintf(label, sizeof(label), "Secret %s: resources[%zu]", u->res[i].name,
                 u->res[i].index);
        v[i] = unpack(&envoy__extensions__transport_sockets__tls__v3__secret__descriptor,
                      &u->res[i], NULL, label, err);
        if (!v[i] || rm_tls_check_secret((const Secret *)v[i], label, err)) return RM_ERR;
        if (rm_sds_store_has(m->sds, u->res[i].name)) names[(*nn)++] = u->res[i].name;
    }
    /* the table as it would be: the new secrets over those that arrived */
    struct rm_pb_box **boxes = calloc(u->n + 1, sizeof(*boxes));
    if (!boxes) abort();
    size_t nb = 0;
    for (size_t i = 0; i < u->n; i++) {
        if (!rm_sds_store_has(m->sds, u->res[i].name)) continue; /* not subscribed: ignored */
        if (!(nb_out[i] = rm_pb_box_new(v[i]))) abort();
        v[i] = NULL; /* in the box */
        boxes[nb++] = nb_out[i];
    }
    *table = rm_sds_store_candidate(m->sds, boxes, nb);
    free(boxes);
    return sds_rebuild_users(m, names, *nn, *table, sw, nsw, err);
}

static int sds_on_update(void *ctx, const struct rm_ads_update *u, struct rm_error *err)
{
    struct rm_xds_manager *m = ctx;
    ProtobufCMessage **v = calloc(u->n + 1, sizeof(*v));
    struct rm_pb_box **nb = calloc(u->n + 1, sizeof(*nb));
    const char **names = calloc(u->n + 1, sizeof(*names));
    if (!v || !nb || !names) abort();
    struct rm_secrets *table = NULL;
    struct tls_swap *sw = NULL;
    size_t nn = 0, nsw = 0;
    int rc = sds_check(m, u, v, nb, names, &nn, &table, &sw, &nsw, err);
    for (size_t i = 0; i < u->n; i++) {
        if (v[i]) protobuf_c_message_free_unpacked(v[i], NULL);
    }
    if (rc != RM_OK) {
        for (size_t i = 0; i < u->n; i++)
            rm_sds_store_count(m->sds, u->res[i].name, RM_SDS_UPDATE_REJECTED);
        for (size_t i = 0; i < nsw; i++)
            rm_tls_ctx_unref(sw[i].t);
        rm_secrets_unref(table);
    } else {
        for (size_t i = 0; i < u->n; i++) { /* the accepted secret is the table's entry */
            if (!nb[i]) continue;
            rm_sds_store_accept(m->sds, u->res[i].name, nb[i], u->res[i].version);
            nb[i] = NULL;
        }
        rm_sds_store_set_table(m->sds, table);
        for (size_t i = 0; i < nsw; i++)
            rm_cluster_set_tls(sw[i].c, sw[i].t);
        bool promoted = promote_clusters_sds(m);
        promoted |= promote_listeners(m, false);
        if (promoted) sds_resubscribe(m); /* the versions replaced may have used others */
        if (nn) {
            rm_log_info("sds: %zu secret(s) updated", nn);
            publish_next(m);
        }
        check_init(m);
    }
    for (size_t i = 0; i < u->n; i++)
        rm_pb_box_unref(nb[i]);
    free(nb);
    free(sw);
    free(names);
    free(v);
    return rc;
}

/* ---- snapshots ---------------------------------------------------------------------------- */

static int cmp_route(const void *a, const void *b)
{
    return strcmp(((const struct rm_dyn_res *)a)->name, ((const struct rm_dyn_res *)b)->name);
}

static void count_warming(struct rm_xds_manager *m, size_t n_active_clusters, size_t n_listeners)
{
    size_t wc = 0, wl = 0, it;
    for (struct rm_strmap_ent *e = rm_strmap_first(&m->clusters, &it); e;
         e = rm_strmap_next(&m->clusters, e, &it))
        wc += ((struct dcluster *)e->value)->warming != NULL;
    for (struct rm_strmap_ent *e = rm_strmap_first(&m->listeners, &it); e;
         e = rm_strmap_next(&m->listeners, e, &it))
        wl += ((struct dlistener *)e->value)->warming.pb != NULL;
    rm_stat_set(m->cm, CM_ACTIVE_CLUSTERS, (int64_t)n_active_clusters);
    rm_stat_set(m->cm, CM_WARMING_CLUSTERS, (int64_t)wc);
    rm_stat_set(m->lm, RM_LM_TOTAL_LISTENERS_ACTIVE, (int64_t)n_listeners);
    rm_stat_set(m->lm, RM_LM_TOTAL_LISTENERS_WARMING, (int64_t)wl);
}

/* Build the next snapshot from the active resources and publish it. */
static void publish_next(struct rm_xds_manager *m)
{
    size_t nc = 0, nl = 0, nr = 0, nwc = 0, nwl = 0, it;
    struct rm_cluster **cs = calloc(m->clusters.n + 1, sizeof(*cs));
    struct rm_dyn_listener *ls = calloc(m->listeners.n + 1, sizeof(*ls));
    struct rm_dyn_res *rs = calloc(m->routes.n + 1, sizeof(*rs));
    struct rm_dyn_res *wcs = calloc(m->clusters.n + 1, sizeof(*wcs));
    struct rm_dyn_res *wls = calloc(m->listeners.n + 1, sizeof(*wls));
    if (!cs || !ls || !rs || !wcs || !wls) abort();
    for (struct rm_strmap_ent *e = rm_strmap_first(&m->clusters, &it); e;
         e = rm_strmap_next(&m->clusters, e, &it)) {
        struct dcluster *d = e->value;
        if (d->active) cs[nc++] = d->active;
        const struct rm_cluster *w = d->warming;
        if (w)
            wcs[nwc++] =
                (struct rm_dyn_res){e->key, w->pb_box, w->version_info, w->last_updated_ms};
    }
    for (struct rm_strmap_ent *e = rm_strmap_first(&m->listeners, &it); e;
         e = rm_strmap_next(&m->listeners, e, &it)) {
        struct dlistener *d = e->value;
        const struct lversion *w = &d->warming;
        if (w->pb) wls[nwl++] = (struct rm_dyn_res){e->key, w->pb, w->version, w->updated_ms};
        if (!d->active.pb) continue;
        ls[nl++] =
            (struct rm_dyn_listener){e->key, d->active.pb, d->active.version, d->active.updated_ms};
    }
    for (struct rm_strmap_ent *e = rm_strmap_first(&m->routes, &it); e;
         e = rm_strmap_next(&m->routes, e, &it)) {
        struct droute *r = e->value;
        rs[nr++] = (struct rm_dyn_res){e->key, r->pb, r->version, r->updated_ms};
    }
    qsort(rs, nr, sizeof(*rs), cmp_route);
    struct rm_dyn_res *ss = calloc(rm_sds_store_count_names(m->sds) + 1, sizeof(*ss));
    if (!ss) abort();
    size_t ns = rm_sds_store_dump(m->sds, ss);
    struct rm_snapshot_dyn dyn = {
        cs, nc, ls, nl, rs, nr, wcs, wls, nwc, nwl, rm_sds_store_table(m->sds), ss, ns};
    struct rm_error err = {{0}};
    struct rm_snapshot *next = rm_snapshot_next(m->base, &dyn, &err);
    if (next) next->version = (m->cur ? m->cur : m->base)->version + 1;
    free(cs);
    free(ls);
    free(rs);
    free(wcs);
    free(wls);
    free(ss);
    if (next) count_warming(m, next->n_clusters, next->n_listeners);
    if (!next || m->hooks.publish(m->ctx, next, &err) != RM_OK) {
        rm_log_error("xds: cannot apply the new configuration: %s", err.msg);
        rm_snapshot_unref(next);
        return;
    }
    rm_snapshot_unref(m->cur);
    m->cur = next;
}

/* ---- warming and initialization ---------------------------------------------------------- */

static bool static_eds_waiting(const struct rm_xds_manager *m, char *buf, size_t len, size_t *off)
{
    bool any = false;
    for (size_t i = 0; i < m->base->n_clusters; i++) {
        const struct rm_cluster *c = m->base->clusters[i];
        if (!rm_cluster_is_eds(c)) continue;
        const struct svc *s = rm_strmap_get(&m->svcs, c->eds_service);
        if (s && s->known) continue;
        any = true;
        if (buf && *off < len) {
            int w = snprintf(buf + *off, len - *off, "%scluster %s", *off ? ", " : "", c->name);
            *off += w > 0 ? (size_t)w : 0;
        }
    }
    return any;
}

static bool waiting(const struct rm_xds_manager *m, char *buf, size_t len)
{
    size_t off = 0, it;
    if (buf && len) buf[0] = 0;
    bool any = static_eds_waiting(m, buf, len, &off);
#define NOTE(...)                                                                                  \
    do {                                                                                           \
        any = true;                                                                                \
        if (buf && off < len) {                                                                    \
            int w_ = snprintf(buf + off, len - off, __VA_ARGS__);                                  \
            off += w_ > 0 ? (size_t)w_ : 0;                                                        \
        }                                                                                          \
    } while (0)
    if (m->wanted[T_CDS] && !m->cds_done) NOTE("%sCDS", off ? ", " : "");
    if (m->wanted[T_LDS] && !m->lds_done) NOTE("%sLDS", off ? ", " : "");
    for (struct rm_strmap_ent *e = rm_strmap_first(&m->clusters, &it); e;
         e = rm_strmap_next(&m->clusters, e, &it)) {
        if (((struct dcluster *)e->value)->warming && !((struct dcluster *)e->value)->active)
            NOTE("%scluster %s", off ? ", " : "", e->key);
    }
    for (struct rm_strmap_ent *e = rm_strmap_first(&m->listeners, &it); e;
         e = rm_strmap_next(&m->listeners, e, &it)) {
        if (((struct dlistener *)e->value)->warming.pb &&
            !((struct dlistener *)e->value)->active.pb)
            NOTE("%slistener %s", off ? ", " : "", e->key);
    }
    for (size_t i = 0; i < m->base->n_listeners; i++) {
        const char *rds = m->base->listeners[i]->rds_name;
        if (rds && !rm_strmap_get(&m->routes, rds))
            NOTE("%sRouteConfiguration %s", off ? ", " : "", rds);
    }
    struct rm_sds_refs st = {0}; /* the static listeners' and clusters' secrets */
    for (size_t i = 0; i < m->base->n_listeners; i++)
        rm_listener_cfg_sds_refs(m->base->listeners[i], &st);
    for (size_t i = 0; i < m->base->n_clusters; i++)
        rm_sds_refs_merge(&st, rm_tls_ctx_sds_refs(m->base->clusters[i]->tls));
    for (size_t i = 0; i < st.n; i++) {
        if (!rm_sds_store_arrived(m->sds, st.v[i].name))
            NOTE("%sSecret %s", off ? ", " : "", st.v[i].name);
    }
    rm_sds_refs_dispose(&st);
#undef NOTE
    return any;
}

static void check_init(struct rm_xds_manager *m)
{
    if (m->init_done || waiting(m, NULL, 0)) return;
    m->init_done = true;
    rm_timer_stop(m->loop, &m->init_timer);
    if (m->hooks.on_init) m->hooks.on_init(m->ctx);
}

static void on_init_timeout(struct rm_timer *t)
{
    struct rm_xds_manager *m = rm_container_of(t, struct rm_xds_manager, init_timer);
    if (m->init_done) return;
    char buf[512];
    waiting(m, buf, sizeof(buf));
    rm_log_warn("xds: initial fetch timeout: still waiting for %s; live anyway", buf);
    rm_sds_store_count_timeouts(m->sds, NULL);
    m->init_done = true;
    if (m->hooks.on_init) m->hooks.on_init(m->ctx);
}

/* Clusters and listeners whose fetch timeout passed become active as they are. */
static void on_warm_poll(struct rm_timer *t)
{
    struct rm_xds_manager *m = rm_container_of(t, struct rm_xds_manager, warm_timer);
    bool rebuild = false, more = false;
    size_t it;
    for (struct rm_strmap_ent *e = rm_strmap_first(&m->clusters, &it); e;
         e = rm_strmap_next(&m->clusters, e, &it)) {
        struct dcluster *d = e->value;
        if (!d->warming) continue;
        if (!waited_out(m, d->warm_start, d->hosts_ready ? UINT32_MAX : d->hosts_timeout_ms,
                        rm_tls_ctx_sds_refs(d->warming->tls))) {
            more = true;
            continue;
        }
        if (!d->hosts_ready)
            rm_log_warn("cluster %s: no endpoints after its initial_fetch_timeout; active "
                        "without hosts",
                        e->key);
        if (!secrets_ready(m, rm_tls_ctx_sds_refs(d->warming->tls))) {
            rm_log_warn("cluster %s: a secret it takes over SDS did not arrive before the "
                        "initial fetch timeout; active without it (connections fail)",
                        e->key);
            rm_sds_store_count_timeouts(m->sds, rm_tls_ctx_sds_refs(d->warming->tls));
        }
        promote_cluster(m, d);
        rebuild = true;
    }
    rebuild |= promote_listeners(m, true);
    for (struct rm_strmap_ent *e = rm_strmap_first(&m->listeners, &it); e && !more;
         e = rm_strmap_next(&m->listeners, e, &it))
        more = ((struct dlistener *)e->value)->warming.pb != NULL;
    if (rebuild) {
        publish_next(m);
        sds_resubscribe(m); /* versions replaced: their secrets may be unused now */
    }
    if (more) rm_timer_start(m->loop, &m->warm_timer, WARM_POLL_MS, on_warm_poll);
    check_init(m);
}

/* ---- lifetime ----------------------------------------------------------------------------- */

/* Bind the sources the bootstrap names: CDS, LDS, static EDS clusters, static RDS listeners. */
static int bind_static_sources(struct rm_xds_manager *m, struct rm_error *err)
{
    const struct rm_snapshot *b = m->base;
    if (b->cds && bind_source(m, T_CDS, &b->cds_src, "dynamic_resources.cds_config", err))
        return RM_ERR;
    for (size_t i = 0; i < b->n_clusters; i++) {
        const struct rm_cluster *c = b->clusters[i];
        if (rm_cluster_is_eds(c) && bind_source(m, T_EDS, &c->eds_src, c->name, err))
            return rm_error_prefix(err, "cluster ");
    }
    if (b->lds && bind_source(m, T_LDS, &b->lds_src, "dynamic_resources.lds_config", err))
        return RM_ERR;
    for (size_t i = 0; i < b->n_listeners; i++) {
        const struct rm_listener_cfg *lc = b->listeners[i];
        if (lc->rds_name && bind_source(m, T_RDS, &lc->rds_src, lc->name, err))
            return rm_error_prefix(err, "listener ");
    }
    char label[300];
    for (size_t i = 0; i < b->n_listeners; i++) {
        snprintf(label, sizeof(label), "listener %s", b->listeners[i]->name);
        struct rm_sds_refs refs = {0};
        rm_listener_cfg_sds_refs(b->listeners[i], &refs);
        int rc = sds_sources_ok(m, &refs, label, err);
        rm_sds_refs_dispose(&refs);
        if (rc) return RM_ERR;
    }
    for (size_t i = 0; i < b->n_clusters; i++) {
        snprintf(label, sizeof(label), "cluster %s", b->clusters[i]->name);
        if (sds_sources_ok(m, rm_tls_ctx_sds_refs(b->clusters[i]->tls), label, err)) return RM_ERR;
    }
    return RM_OK;
}

/* The ADS stream carries every type (Envoy's order: CDS, EDS, LDS, RDS, then SDS); types bound
 * to other sources just never subscribe on it. */
static int start_ads(struct rm_xds_manager *m, struct rm_error *err)
{
    if (!m->base->ads_cluster) return RM_OK;
    struct rm_ads_client_cfg cfg = {
        .cluster = m->base->ads_cluster,
        .delta = m->base->ads_delta,
        .max_msg = m->base->ads_max_msg,
        .node_id = m->base->node_id,
        .node_cluster = m->base->node_cluster,
        .types = m->types,
        .n_types = T__COUNT,
        .ctx = m,
    };
    m->ads = rm_ads_client_new(m->loop, &cfg, err);
    return m->ads ? RM_OK : RM_ERR;
}

struct rm_xds_manager *rm_xds_manager_new(struct rm_loop *loop, struct rm_snapshot *base,
                                          const struct rm_xds_hooks *hooks, void *ctx,
                                          struct rm_error *err)
{
    struct rm_xds_manager *m = calloc(1, sizeof(*m));
    if (!m) {
        rm_error_set(err, "out of memory");
        return NULL;
    }
    m->loop = loop;
    m->sds = rm_sds_store_new();
    m->base = rm_snapshot_ref(base);
    m->hooks = *hooks;
    m->ctx = ctx;
    m->cm = rm_stats_get("cluster_manager.", cm_defs, CM__COUNT);
    m->lm = rm_stats_get("listener_manager.", rm_listener_manager_stat_defs, RM_LM__COUNT);
    m->types[T_CDS] = (struct rm_ads_type){RM_ADS_CDS, true, cds_on_update, cds_rejected};
    m->types[T_EDS] = (struct rm_ads_type){RM_ADS_EDS, false, eds_on_update, eds_rejected};
    m->types[T_LDS] = (struct rm_ads_type){RM_ADS_LDS, true, lds_on_update, lds_rejected};
    m->types[T_RDS] = (struct rm_ads_type){RM_ADS_RDS, false, rds_on_update, rds_rejected};
    m->types[T_SDS] = (struct rm_ads_type){RM_ADS_SDS, false, sds_on_update, sds_rejected};
    rm_dns_config_init(&m->dns_cfg);
    const Envoy__Config__Bootstrap__V3__Bootstrap *bs = base->bootstrap;
    if (bs && bs->typed_dns_resolver_config &&
        rm_dns_config_from_typed(bs->typed_dns_resolver_config, "typed_dns_resolver_config",
                                 &m->dns_cfg, err)) {
        rm_xds_manager_free(m);
        return NULL;
    }
    m->wanted[T_CDS] = base->cds;
    m->wanted[T_LDS] = base->lds;
    if (start_ads(m, err) || bind_static_sources(m, err)) {
        rm_xds_manager_free(m);
        return NULL;
    }
    uint32_t fetch_ms = 0;
    if (base->cds) fetch_ms = base->cds_src.init_timeout_ms;
    if (base->lds && base->lds_src.init_timeout_ms > fetch_ms)
        fetch_ms = base->lds_src.init_timeout_ms;
    for (size_t i = 0; i < base->n_clusters; i++) {
        track(m, base->clusters[i]);
        if (rm_cluster_is_eds(base->clusters[i]) &&
            base->clusters[i]->eds_init_timeout_ms > fetch_ms)
            fetch_ms = base->clusters[i]->eds_init_timeout_ms;
    }
    struct rm_sds_refs st = {0}; /* the static listeners' and clusters' secrets */
    for (size_t i = 0; i < base->n_listeners; i++)
        rm_listener_cfg_sds_refs(base->listeners[i], &st);
    for (size_t i = 0; i < base->n_clusters; i++)
        rm_sds_refs_merge(&st, rm_tls_ctx_sds_refs(base->clusters[i]->tls));
    uint32_t st_ms = sds_timeout(fetch_ms ? fetch_ms : UINT32_MAX, &st);
    if (st.n) fetch_ms = st_ms == UINT32_MAX ? fetch_ms : st_ms;
    rm_sds_refs_dispose(&st);
    eds_resubscribe(m);
    rds_resubscribe(m);
    sds_resubscribe(m);
    if (fetch_ms) rm_timer_start(loop, &m->init_timer, fetch_ms, on_init_timeout);
    check_init(m);
    return m;
}

void rm_xds_manager_free(struct rm_xds_manager *m)
{
    if (!m) return;
    rm_timer_stop(m->loop, &m->init_timer);
    rm_timer_stop(m->loop, &m->warm_timer);
    for (int t = 0; t < T__COUNT; t++) {
        if (m->src[t].client != m->ads) rm_ads_client_free(m->src[t].client);
        rm_config_source_dispose(&m->src[t].src);
    }
    rm_ads_client_free(m->ads);
    size_t it;
    const char **keys = malloc((m->clusters.n + m->listeners.n + 1) * sizeof(*keys));
    if (!keys) abort();
    size_t nk = 0;
    for (struct rm_strmap_ent *e = rm_strmap_first(&m->clusters, &it); e;
         e = rm_strmap_next(&m->clusters, e, &it))
        keys[nk++] = e->key;
    for (size_t i = 0; i < nk; i++)
        cds_del(m, keys[i]);
    nk = 0;
    for (struct rm_strmap_ent *e = rm_strmap_first(&m->listeners, &it); e;
         e = rm_strmap_next(&m->listeners, e, &it))
        keys[nk++] = e->key;
    for (size_t i = 0; i < nk; i++)
        lds_del(m, keys[i]);
    free(keys);
    for (struct rm_strmap_ent *e = rm_strmap_first(&m->routes, &it); e;
         e = rm_strmap_next(&m->routes, e, &it)) {
        struct droute *r = e->value;
        rm_pb_box_unref(r->pb);
        free(r->version);
        free(r);
    }
    for (struct rm_strmap_ent *e = rm_strmap_first(&m->svcs, &it); e;
         e = rm_strmap_next(&m->svcs, e, &it))
        svc_free(e->value);
    rm_sds_store_free(m->sds);
    rm_strmap_clear(&m->clusters);
    rm_strmap_clear(&m->listeners);
    rm_strmap_clear(&m->routes);
    rm_strmap_clear(&m->svcs);
    rm_snapshot_unref(m->cur);
    rm_snapshot_unref(m->base);
    free(m);
}

bool rm_xds_manager_initialized(const struct rm_xds_manager *m)
{
    return m->init_done;
}

void rm_xds_manager_waiting(const struct rm_xds_manager *m, char *buf, size_t len)
{
    waiting(m, buf, len);
}
