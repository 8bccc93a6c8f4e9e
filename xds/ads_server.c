/* The reference control plane's xDS server: gRPC calls <-> subscriptions.  See ads_server.h.
 *
 * Stream states; only stream_set_state() changes them (asserting):  OPEN -> CLOSED.
 * A stream is OPEN while its gRPC call is; it becomes CLOSED (and is freed at once: nothing
 * else points to it) when we finish the call or the call is cancelled. */
#include "xds/ads_server.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/config/core/v3/base.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "proxy/config/strbuf.h"
#include "proxy/core/log.h"
#include "xds/ads_sub.h"

#define T_LISTENER "type.googleapis.com/envoy.config.listener.v3.Listener"
#define T_ROUTE "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
#define T_CLUSTER "type.googleapis.com/envoy.config.cluster.v3.Cluster"
#define T_CLA "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"

#define LOG_NAMES_MAX 50 /* resource names per log line */

struct svc {
    const char *path;
    const char *method; /* for logs */
    bool delta;
    const char *type_url; /* NULL: aggregated (any type) */
};

static const struct svc services[] = {
    {"/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources",
     "StreamAggregatedResources", false, NULL},
    {"/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources",
     "DeltaAggregatedResources", true, NULL},
    {"/envoy.service.listener.v3.ListenerDiscoveryService/StreamListeners", "StreamListeners",
     false, T_LISTENER},
    {"/envoy.service.listener.v3.ListenerDiscoveryService/DeltaListeners", "DeltaListeners", true,
     T_LISTENER},
    {"/envoy.service.route.v3.RouteDiscoveryService/StreamRoutes", "StreamRoutes", false, T_ROUTE},
    {"/envoy.service.route.v3.RouteDiscoveryService/DeltaRoutes", "DeltaRoutes", true, T_ROUTE},
    {"/envoy.service.cluster.v3.ClusterDiscoveryService/StreamClusters", "StreamClusters", false,
     T_CLUSTER},
    {"/envoy.service.cluster.v3.ClusterDiscoveryService/DeltaClusters", "DeltaClusters", true,
     T_CLUSTER},
    {"/envoy.service.endpoint.v3.EndpointDiscoveryService/StreamEndpoints", "StreamEndpoints",
     false, T_CLA},
    {"/envoy.service.endpoint.v3.EndpointDiscoveryService/DeltaEndpoints", "DeltaEndpoints", true,
     T_CLA},
};
#define NSERVICES (sizeof(services) / sizeof(services[0]))

enum stream_state {
    STREAM_OPEN = 0,
    STREAM_CLOSED,
};

struct stream {
    struct rm_ads_server *as;
    struct stream *prev, *next;
    struct rm_grpc_scall *call;
    enum stream_state state;
    uint64_t id;
    const struct svc *svc;
    char *node_id, *node_cluster; /* NULL until a request carried a node */
    uint64_t nonce_seq;
    struct rm_ads_sotw *sotw;   /* SotW: one per type URL */
    struct rm_ads_delta *delta; /* Delta: one per type URL */
    size_t nsubs;
};

struct rm_ads_server {
    struct rm_ads_store *store;
    char *identifier;
    struct stream *streams;
    uint64_t next_id;
    struct rm_ads_server_stats stats;
};

/* ---- helpers ------------------------------------------------------------------------------ */

static void stream_set_state(struct stream *s, enum stream_state to)
{
    assert(s->state == STREAM_OPEN && to == STREAM_CLOSED);
    s->state = to;
}

/* <in> with control characters replaced, for one-line logs. */
static const char *clean(const char *in, char *buf, size_t n)
{
    size_t k = 0;
    for (; in && in[k] && k + 1 < n; k++)
        buf[k] = (unsigned char)in[k] < 0x20 || in[k] == 0x7f ? '?' : in[k];
    buf[k] = '\0';
    return buf;
}

static const char *node_of(const struct stream *s)
{
    return s->node_id ? s->node_id : "-";
}

/* Push order: Envoy's make-before-break (CDS, EDS, LDS, RDS), then the rest. */
static int type_rank(const char *type_url)
{
    static const char *const order[] = {T_CLUSTER, T_CLA, T_LISTENER, T_ROUTE};
    for (int i = 0; i < 4; i++)
        if (strcmp(type_url, order[i]) == 0) return i;
    return 4;
}

static const char *sub_type(const struct stream *s, size_t i)
{
    return s->svc->delta ? s->delta[i].type_url : s->sotw[i].type_url;
}

/* ---- stream lifetime ---------------------------------------------------------------------- */

static void stream_free(struct stream *s)
{
    struct rm_ads_server *as = s->as;
    if (s->prev)
        s->prev->next = s->next;
    else
        as->streams = s->next;
    if (s->next) s->next->prev = s->prev;
    as->stats.streams_open--;
    for (size_t i = 0; i < s->nsubs; i++) {
        if (s->svc->delta)
            rm_ads_delta_dispose(&s->delta[i]);
        else
            rm_ads_sotw_dispose(&s->sotw[i]);
    }
    free(s->sotw);
    free(s->delta);
    free(s->node_id);
    free(s->node_cluster);
    free(s);
}

/* The call ended (<how> for the log); free the stream. */
static void stream_closed(struct stream *s, const char *how)
{
    char nb[256];
    stream_set_state(s, STREAM_CLOSED);
    s->call = NULL;
    rm_log_info("xds: stream %" PRIu64 " (node %s) closed: %s", s->id,
                clean(node_of(s), nb, sizeof(nb)), how);
    stream_free(s);
}

/* End the stream with a status of ours. */
static void stream_finish(struct stream *s, int status, const char *msg)
{
    char how[600];
    rm_grpc_scall_finish(s->call, status, "%s", msg);
    snprintf(how, sizeof(how), "%s%s%s", rm_grpc_code_name(status), *msg ? ": " : "", msg);
    stream_closed(s, how);
}

/* ---- pushing ------------------------------------------------------------------------------ */

static void next_nonce(struct stream *s, char buf[RM_ADS_NONCE_MAX])
{
    snprintf(buf, RM_ADS_NONCE_MAX, "%" PRIu64, ++s->nonce_seq);
}

static bool push_sotw(struct stream *s, struct rm_ads_sotw *sub)
{
    struct rm_ads_server *as = s->as;
    RmDiscoveryResponse resp;
    char version[RM_ADS_VERSION_MAX], nonce[RM_ADS_NONCE_MAX];
    if (!rm_ads_sotw_build(sub, as->store, &resp, version)) return false;
    Envoy__Config__Core__V3__ControlPlane cp = ENVOY__CONFIG__CORE__V3__CONTROL_PLANE__INIT;
    cp.identifier = as->identifier;
    resp.control_plane = &cp;
    next_nonce(s, nonce);
    resp.nonce = nonce;
    rm_grpc_scall_send_pb(s->call, &resp.base);
    rm_ads_sotw_commit(sub, as->store, &resp);
    as->stats.responses++;
    as->stats.resources_sent += resp.n_resources;
    struct rm_strbuf names = RM_STRBUF_INIT;
    rm_ads_kv_keys_str(&sub->sent, LOG_NAMES_MAX, &names); /* what it carried */
    char nb[256];
    rm_log_info("xds: stream %" PRIu64 ": push node=%s type=%s version=%s nonce=%s "
                "resources=[%s]",
                s->id, clean(node_of(s), nb, sizeof(nb)), rm_ads_type_short(sub->type_url), version,
                nonce, rm_strbuf_str(&names));
    rm_strbuf_dispose(&names);
    rm_ads_sotw_response_dispose(&resp);
    return true;
}

static void delta_names(const RmDeltaDiscoveryResponse *r, struct rm_strbuf *res,
                        struct rm_strbuf *rem)
{
    for (size_t i = 0; i < r->n_resources && i < LOG_NAMES_MAX; i++)
        rm_strbuf_printf(res, "%s%s", i ? ", " : "", r->resources[i]->name);
    if (r->n_resources > LOG_NAMES_MAX)
        rm_strbuf_printf(res, ", ... (+%zu)", r->n_resources - LOG_NAMES_MAX);
    for (size_t i = 0; i < r->n_removed_resources && i < LOG_NAMES_MAX; i++)
        rm_strbuf_printf(rem, "%s%s", i ? ", " : "", r->removed_resources[i]);
    if (r->n_removed_resources > LOG_NAMES_MAX)
        rm_strbuf_printf(rem, ", ... (+%zu)", r->n_removed_resources - LOG_NAMES_MAX);
}

static bool push_delta(struct stream *s, struct rm_ads_delta *sub)
{
    struct rm_ads_server *as = s->as;
    RmDeltaDiscoveryResponse resp;
    char version[RM_ADS_VERSION_MAX], nonce[RM_ADS_NONCE_MAX];
    if (!rm_ads_delta_build(sub, as->store, &resp)) return false;
    Envoy__Config__Core__V3__ControlPlane cp = ENVOY__CONFIG__CORE__V3__CONTROL_PLANE__INIT;
    cp.identifier = as->identifier;
    resp.control_plane = &cp;
    resp.system_version_info =
        (char *)rm_ads_store_version_str(as->store, as->store->version, version, sizeof(version));
    next_nonce(s, nonce);
    resp.nonce = nonce;
    rm_grpc_scall_send_pb(s->call, &resp.base);
    rm_ads_delta_commit(sub, &resp);
    as->stats.responses++;
    as->stats.resources_sent += resp.n_resources;
    struct rm_strbuf res = RM_STRBUF_INIT, rem = RM_STRBUF_INIT;
    delta_names(&resp, &res, &rem);
    char nb[256];
    rm_log_info("xds: stream %" PRIu64 ": delta push node=%s type=%s version=%s nonce=%s "
                "resources=[%s] removed=[%s]",
                s->id, clean(node_of(s), nb, sizeof(nb)), rm_ads_type_short(sub->type_url), version,
                nonce, rm_strbuf_str(&res), rm_strbuf_str(&rem));
    rm_strbuf_dispose(&res);
    rm_strbuf_dispose(&rem);
    rm_ads_delta_response_dispose(&resp);
    return true;
}

/* Send what the stream is due, type by type in push order, while the call takes it. */
static void stream_pump(struct stream *s)
{
    for (int rank = 0; rank <= 4; rank++) {
        for (size_t i = 0; i < s->nsubs; i++) {
            if (type_rank(sub_type(s, i)) != rank) continue;
            if (rm_grpc_scall_write_blocked(s->call)) return; /* on_writable resumes */
            if (s->svc->delta)
                push_delta(s, &s->delta[i]);
            else
                push_sotw(s, &s->sotw[i]);
        }
    }
}

void rm_ads_server_notify(struct rm_ads_server *as)
{
    for (struct stream *s = as->streams; s; s = s->next)
        stream_pump(s);
}

/* ---- requests ----------------------------------------------------------------------------- */

static void take_node(struct stream *s, const Envoy__Config__Core__V3__Node *node)
{
    if (s->node_id || !node) return;
    s->node_id = strdup(node->id ? node->id : "");
    s->node_cluster = strdup(node->cluster ? node->cluster : "");
    if (!s->node_id || !s->node_cluster) abort();
    char nb[256], cb[256], ub[128];
    rm_log_info("xds: stream %" PRIu64 ": node id=\"%s\" cluster=\"%s\" user_agent=\"%s\"", s->id,
                clean(s->node_id, nb, sizeof(nb)), clean(s->node_cluster, cb, sizeof(cb)),
                clean(node->user_agent_name, ub, sizeof(ub)));
}

/* The subscription index for <type_url>, created if new. */
static size_t sub_index(struct stream *s, const char *type_url)
{
    for (size_t i = 0; i < s->nsubs; i++)
        if (strcmp(sub_type(s, i), type_url) == 0) return i;
    size_t i = s->nsubs++;
    if (s->svc->delta) {
        s->delta = realloc(s->delta, s->nsubs * sizeof(*s->delta));
        if (!s->delta) abort();
        rm_ads_delta_init(&s->delta[i], type_url);
    } else {
        s->sotw = realloc(s->sotw, s->nsubs * sizeof(*s->sotw));
        if (!s->sotw) abort();
        rm_ads_sotw_init(&s->sotw[i], type_url);
    }
    return i;
}

/* The request's type URL, or NULL after ending the stream for a bad one. */
static const char *request_type(struct stream *s, const char *type_url)
{
    char msg[512];
    const char *want = s->svc->type_url;
    if (type_url && *type_url) {
        if (!want || strcmp(want, type_url) == 0) return type_url;
        snprintf(msg, sizeof(msg), "%s serves %s only, not %.300s", s->svc->method, want, type_url);
    } else {
        if (want) return want;
        snprintf(msg, sizeof(msg), "type_url is required on an aggregated stream");
    }
    stream_finish(s, RM_GRPC_INVALID_ARGUMENT, msg);
    return NULL;
}

/* Log what a request was: <version> is version_info (NULL for Delta), <subs> the subscription
 * after it (NULL: unchanged, not logged). */
static void log_request(struct stream *s, enum rm_ads_req_kind k, const char *type_url,
                        const char *version, const char *nonce, const Google__Rpc__Status *err,
                        const char *subs)
{
    struct rm_ads_server *as = s->as;
    char nb[256], mb[1024], vb[128], cb[64];
    const char *node = clean(node_of(s), nb, sizeof(nb));
    const char *type = rm_ads_type_short(type_url);
    clean(version ? version : "", vb, sizeof(vb));
    clean(nonce, cb, sizeof(cb));
    switch (k) {
    case RM_ADS_REQ_ACK:
        as->stats.acks++;
        rm_log_info("xds: stream %" PRIu64 ": ACK node=%s type=%s%s%s nonce=%s", s->id, node, type,
                    version ? " version=" : "", version ? vb : "", cb);
        break;
    case RM_ADS_REQ_NACK:
        as->stats.nacks++;
        rm_log_warn("xds: stream %" PRIu64 ": NACK node=%s type=%s%s%s nonce=%s code=%d "
                    "message=\"%s\"",
                    s->id, node, type, version ? " version=" : "", version ? vb : "", cb,
                    err ? err->code : 0, clean(err ? err->message : "", mb, sizeof(mb)));
        break;
    case RM_ADS_REQ_STALE:
        as->stats.stale++;
        rm_log_debug("xds: stream %" PRIu64 ": stale request node=%s type=%s nonce=%s ignored",
                     s->id, node, type, cb);
        return;
    default:
        break;
    }
    if (subs)
        rm_log_info("xds: stream %" PRIu64 ": %s node=%s type=%s%s%s subscribe=[%s]", s->id,
                    k == RM_ADS_REQ_FIRST ? "subscribe" : "subscription", node, type,
                    version ? " version=" : "", version ? (*vb ? vb : "-") : "", subs);
}

static void subs_str(bool wildcard, const struct rm_ads_kv *names, struct rm_strbuf *out)
{
    if (wildcard) rm_strbuf_puts(out, names->n ? "*, " : "*");
    rm_ads_kv_keys_str(names, LOG_NAMES_MAX, out);
}

/* Returns false when the stream was ended (and freed). */
static bool on_sotw_request(struct stream *s, const RmDiscoveryRequest *req)
{
    const char *type_url = request_type(s, req->type_url);
    if (!type_url) return false;
    size_t idx = sub_index(s, type_url); /* may move s->sotw */
    struct rm_ads_sotw *sub = &s->sotw[idx];
    bool was_wild = sub->wildcard;
    struct rm_ads_kv before = {0};
    for (size_t i = 0; i < sub->names.n; i++)
        rm_ads_kv_put(&before, sub->names.v[i].key, NULL);
    enum rm_ads_req_kind k = rm_ads_sotw_request(sub, req);
    bool changed = was_wild != sub->wildcard || before.n != sub->names.n;
    for (size_t i = 0; !changed && i < before.n; i++)
        changed = strcmp(before.v[i].key, sub->names.v[i].key) != 0;
    rm_ads_kv_dispose(&before);
    struct rm_strbuf subs = RM_STRBUF_INIT;
    subs_str(sub->wildcard, &sub->names, &subs);
    bool show = k == RM_ADS_REQ_FIRST || (k != RM_ADS_REQ_STALE && changed);
    log_request(s, k, type_url, req->version_info, req->response_nonce, req->error_detail,
                show ? rm_strbuf_str(&subs) : NULL);
    rm_strbuf_dispose(&subs);
    return true;
}

/* Returns false when the stream was ended (and freed). */
static bool on_delta_request(struct stream *s, const RmDeltaDiscoveryRequest *req)
{
    const char *type_url = request_type(s, req->type_url);
    if (!type_url) return false;
    size_t idx = sub_index(s, type_url); /* may move s->delta */
    struct rm_ads_delta *sub = &s->delta[idx];
    enum rm_ads_req_kind k = rm_ads_delta_request(sub, req);
    bool changed = k == RM_ADS_REQ_FIRST || req->n_resource_names_subscribe ||
                   req->n_resource_names_unsubscribe;
    struct rm_strbuf subs = RM_STRBUF_INIT;
    subs_str(sub->wildcard, &sub->names, &subs);
    if (k == RM_ADS_REQ_FIRST && req->n_initial_resource_versions)
        rm_strbuf_printf(&subs, "] initial_resource_versions=[%zu",
                         req->n_initial_resource_versions);
    log_request(s, k, type_url, NULL, req->response_nonce, req->error_detail,
                changed ? rm_strbuf_str(&subs) : NULL);
    rm_strbuf_dispose(&subs);
    return true;
}

/* ---- gRPC handler ------------------------------------------------------------------------- */

static void *h_start(void *ctx, struct rm_grpc_scall *c)
{
    struct rm_ads_server *as = ctx;
    const char *path = rm_grpc_scall_path(c);
    const struct svc *svc = NULL;
    for (size_t i = 0; i < NSERVICES && !svc; i++)
        if (strcmp(services[i].path, path) == 0) svc = &services[i];
    assert(svc);
    struct stream *s = calloc(1, sizeof(*s));
    if (!s) abort();
    s->as = as;
    s->call = c;
    s->svc = svc;
    s->id = ++as->next_id;
    s->state = STREAM_OPEN; /* initial */
    s->next = as->streams;
    if (as->streams) as->streams->prev = s;
    as->streams = s;
    as->stats.streams++;
    as->stats.streams_open++;
    rm_log_info("xds: stream %" PRIu64 " from %s: %s", s->id, rm_grpc_scall_peer(c), svc->method);
    return s;
}

static void h_message(struct rm_grpc_scall *c, const uint8_t *msg, size_t len)
{
    struct stream *s = rm_grpc_scall_user(c);
    const ProtobufCMessageDescriptor *d =
        s->svc->delta ? &envoy__service__discovery__v3__delta_discovery_request__descriptor
                      : &envoy__service__discovery__v3__discovery_request__descriptor;
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, len, msg);
    if (!m) {
        char e[128];
        snprintf(e, sizeof(e), "cannot decode %s (%zu bytes)", d->name, len);
        stream_finish(s, RM_GRPC_INVALID_ARGUMENT, e);
        return;
    }
    s->as->stats.requests++;
    take_node(s, s->svc->delta ? ((RmDeltaDiscoveryRequest *)m)->node
                               : ((RmDiscoveryRequest *)m)->node);
    bool alive = s->svc->delta ? on_delta_request(s, (RmDeltaDiscoveryRequest *)m)
                               : on_sotw_request(s, (RmDiscoveryRequest *)m);
    protobuf_c_message_free_unpacked(m, NULL);
    if (alive) stream_pump(s);
}

static void h_half_close(struct rm_grpc_scall *c)
{
    stream_finish(rm_grpc_scall_user(c), RM_GRPC_OK, "");
}

static void h_cancel(struct rm_grpc_scall *c, int status, const char *why)
{
    char how[600];
    snprintf(how, sizeof(how), "%s: %s", rm_grpc_code_name(status), why);
    stream_closed(rm_grpc_scall_user(c), how);
}

static void h_writable(struct rm_grpc_scall *c)
{
    stream_pump(rm_grpc_scall_user(c));
}

static const struct rm_grpc_handler handler = {
    .on_start = h_start,
    .on_message = h_message,
    .on_half_close = h_half_close,
    .on_cancel = h_cancel,
    .on_writable = h_writable,
};

/* ---- the server --------------------------------------------------------------------------- */

struct rm_ads_server *rm_ads_server_new(struct rm_grpc_server *gs, struct rm_ads_store *store,
                                        const struct rm_ads_server_opts *o, struct rm_error *err)
{
    struct rm_ads_server *as = calloc(1, sizeof(*as));
    if (!as) {
        rm_error_set(err, "out of memory");
        return NULL;
    }
    as->store = store;
    as->identifier = strdup(o && o->identifier ? o->identifier : "remora-xds");
    for (size_t i = 0; i < NSERVICES; i++) {
        if (rm_grpc_server_add_method(gs, services[i].path, &handler, as, err) != RM_OK) {
            free(as->identifier);
            free(as);
            return NULL;
        }
    }
    return as;
}

void rm_ads_server_close_streams(struct rm_ads_server *as, int status, const char *msg)
{
    while (as->streams)
        stream_finish(as->streams, status, msg);
}

void rm_ads_server_free(struct rm_ads_server *as)
{
    if (!as) return;
    rm_ads_server_close_streams(as, RM_GRPC_UNAVAILABLE, "control plane shutting down");
    free(as->identifier);
    free(as);
}

const struct rm_ads_server_stats *rm_ads_server_stats(const struct rm_ads_server *as)
{
    return &as->stats;
}
