/* The ADS client for EDS (see ads_client.h). */
#include "xds/ads_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "envoy/config/core/v3/base.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "proxy/admin/stats.h"
#include "proxy/core/log.h"
#include "proxy/server/server.h"
#include "xds/ads_eds.h"
#include "xds/grpc.h"

#define ADS_PATH "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
#define BACKOFF_BASE_MS 500
#define BACKOFF_MAX_MS 30000

typedef Envoy__Service__Discovery__V3__DiscoveryRequest Request;
typedef Envoy__Service__Discovery__V3__DiscoveryResponse Response;

enum { CP_CONNECTED_STATE, CP__COUNT };
static const struct rm_stat_def cp_stat_defs[CP__COUNT] = {
    [CP_CONNECTED_STATE] = {"connected_state", RM_GAUGE},
};

struct eds_sub {
    struct rm_cluster *c;
    bool initialized; /* first assignment seen (or fetch timeout) */
};

struct rm_ads_client {
    struct rm_loop *loop;
    struct rm_grpc_channel *ch;
    struct rm_grpc_call *call; /* the stream, or NULL */
    bool sent_node;            /* on this stream */
    struct eds_sub *subs;
    size_t n_subs, n_waiting;
    char **names; /* unique service names, the subscription */
    size_t n_names;
    char *node_id, *node_cluster;
    struct rm_ads_sotw st;
    struct rm_eds_seen seen; /* the last accepted response's resources: repeats are skipped */
    rm_dns_publish_fn publish;
    void (*on_init)(void *ctx);
    void *ctx;
    struct rm_timer retry_timer, init_timer;
    uint32_t backoff_ms; /* the next delay's upper bound */
    uint64_t rng;
    struct rm_stats *stats;
};

static void connect_stream(struct rm_ads_client *a);

/* ---- helpers ------------------------------------------------------------------------------ */

static uint64_t next_random(struct rm_ads_client *a)
{
    uint64_t x = a->rng; /* xorshift64* */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    a->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void sub_initialized(struct rm_ads_client *a, struct eds_sub *s)
{
    if (s->initialized) return;
    s->initialized = true;
    if (--a->n_waiting == 0) {
        rm_timer_stop(a->loop, &a->init_timer);
        if (a->on_init) a->on_init(a->ctx);
    }
}

/* ---- requests ----------------------------------------------------------------------------- */

/* The subscription request: node on the first of a stream, then the ACK/NACK state. */
static void send_request(struct rm_ads_client *a)
{
    Request req = ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_REQUEST__INIT;
    Envoy__Config__Core__V3__Node node = ENVOY__CONFIG__CORE__V3__NODE__INIT;
    Google__Rpc__Status status;
    static char *features[] = {(char *)"envoy.lb.does_not_support_overprovisioning"};
    if (!a->sent_node) {
        node.id = a->node_id;
        node.cluster = a->node_cluster;
        node.user_agent_name = (char *)"remora";
        node.user_agent_version_type_case =
            ENVOY__CONFIG__CORE__V3__NODE__USER_AGENT_VERSION_TYPE_USER_AGENT_VERSION;
        node.user_agent_version = (char *)RM_VERSION;
        node.n_client_features = 1;
        node.client_features = features;
        req.node = &node;
        a->sent_node = true;
    }
    req.type_url = (char *)RM_EDS_TYPE_URL;
    req.n_resource_names = a->n_names;
    req.resource_names = a->names;
    rm_ads_sotw_fill(&a->st, &req, &status);
    rm_grpc_call_send_pb(a->call, &req.base);
}

/* ---- responses ---------------------------------------------------------------------------- */

/* An EDS cluster's new membership from an accepted assignment. */
static void apply_assignment(struct rm_ads_client *a, struct rm_cluster *c,
                             const struct rm_eds_assignment *as)
{
    struct rm_host_set *hs = NULL;
    int rc = as->unchanged ? RM_HOST_SET_SAME : rm_host_set_diff(c->hs, as->specs, as->n, &hs);
    if (rc == RM_HOST_SET_SAME) {
        rm_stat_inc(c->stats, RM_CS_UPDATE_NO_REBUILD);
        return;
    }
    if (rc != RM_HOST_SET_CHANGED) {
        rm_log_error("cluster %s: out of memory while updating its hosts", c->name);
        return;
    }
    rm_cluster_set_hosts(c, hs); /* the cluster takes our reference */
    rm_log_info("cluster %s: EDS: %zu host(s)", c->name, c->hs->n);
    a->publish(a->ctx, c, c->hs);
}

static void accept_response(struct rm_ads_client *a, const Response *r,
                            const struct rm_eds_response *eds)
{
    for (size_t i = 0; i < a->n_subs; i++) {
        struct eds_sub *s = &a->subs[i];
        rm_stat_inc(s->c->stats, RM_CS_UPDATE_ATTEMPT);
        rm_stat_inc(s->c->stats, RM_CS_UPDATE_SUCCESS);
        const struct rm_eds_assignment *as = rm_eds_response_find(eds, s->c->eds_service);
        if (!as) continue;
        apply_assignment(a, s->c, as);
        sub_initialized(a, s);
    }
    rm_eds_seen_commit(&a->seen, eds);
    rm_ads_sotw_ack(&a->st, r->version_info, r->nonce);
    rm_log_debug("ads: accepted ClusterLoadAssignment version %s", r->version_info);
}

static void reject_response(struct rm_ads_client *a, const Response *r, const char *why)
{
    for (size_t i = 0; i < a->n_subs; i++) {
        rm_stat_inc(a->subs[i].c->stats, RM_CS_UPDATE_ATTEMPT);
        rm_stat_inc(a->subs[i].c->stats, RM_CS_UPDATE_REJECTED);
    }
    rm_log_warn("ads: rejected ClusterLoadAssignment version %s (nonce %s), keeping version "
                "%s: %s",
                r->version_info, r->nonce, a->st.version ? a->st.version : "(none)", why);
    rm_ads_sotw_nack(&a->st, r->nonce, why);
}

static void on_message(void *ctx, const uint8_t *msg, size_t len)
{
    struct rm_ads_client *a = ctx;
    uint64_t t0 = now_us(); /* the response arrived: "applied in" counts from here */
    Response *r = envoy__service__discovery__v3__discovery_response__unpack(NULL, len, msg);
    if (!r) {
        rm_log_warn("ads: undecodable DiscoveryResponse (%zu bytes) ignored", len);
        return;
    }
    a->backoff_ms = BACKOFF_BASE_MS;
    rm_stat_set(a->stats, CP_CONNECTED_STATE, 1);
    struct rm_eds_response eds;
    struct rm_error err = {{0}};
    if (rm_eds_response_parse_seen(r, &a->seen, &eds, &err) == RM_OK) {
        accept_response(a, r, &eds);
        rm_log_info("ads: ClusterLoadAssignment version %s (%zu resources) applied in %llu us",
                    r->version_info, r->n_resources, (unsigned long long)(now_us() - t0));
    } else
        reject_response(a, r, err.msg);
    rm_eds_response_clear(&eds);
    send_request(a);
    envoy__service__discovery__v3__discovery_response__free_unpacked(r, NULL);
}

/* ---- the stream --------------------------------------------------------------------------- */

static void on_retry(struct rm_timer *t)
{
    connect_stream(rm_container_of(t, struct rm_ads_client, retry_timer));
}

static void on_close(void *ctx, int status, const char *message)
{
    struct rm_ads_client *a = ctx;
    a->call = NULL;
    rm_stat_set(a->stats, CP_CONNECTED_STATE, 0);
    uint32_t b = a->backoff_ms;
    uint32_t delay = b / 2 + (uint32_t)(next_random(a) % (b / 2 + 1));
    a->backoff_ms = b * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : b * 2;
    rm_log_warn("ads: stream to %s closed: %s%s%s; retrying in %u ms",
                rm_grpc_channel_target(a->ch), rm_grpc_code_name(status), message[0] ? ": " : "",
                message, delay);
    rm_timer_start(a->loop, &a->retry_timer, delay, on_retry);
}

static const struct rm_grpc_call_cb call_cb = {
    .on_message = on_message,
    .on_close = on_close,
};

static void connect_stream(struct rm_ads_client *a)
{
    rm_ads_sotw_new_stream(&a->st);
    a->sent_node = false;
    a->call = rm_grpc_call_start(a->ch, ADS_PATH, NULL, 0, 0, &call_cb, a);
    if (!a->call) {
        rm_log_error("ads: cannot start a stream: out of memory");
        rm_timer_start(a->loop, &a->retry_timer, BACKOFF_MAX_MS, on_retry);
        return;
    }
    send_request(a);
}

/* ---- lifetime ----------------------------------------------------------------------------- */

static void on_init_timeout(struct rm_timer *t)
{
    struct rm_ads_client *a = rm_container_of(t, struct rm_ads_client, init_timer);
    char names[512];
    rm_ads_client_waiting(a, names, sizeof(names));
    rm_log_warn("EDS clusters without a first assignment after initial_fetch_timeout: %s", names);
    for (size_t i = 0; i < a->n_subs; i++)
        sub_initialized(a, &a->subs[i]);
}

/* The EDS clusters and their unique service names; the largest initial_fetch_timeout. */
static int collect(struct rm_ads_client *a, struct rm_cluster *const *clusters, size_t n,
                   uint32_t *timeout_ms)
{
    a->subs = calloc(n ? n : 1, sizeof(*a->subs));
    a->names = calloc(n ? n : 1, sizeof(*a->names));
    if (!a->subs || !a->names) return RM_ERR;
    *timeout_ms = 0;
    for (size_t i = 0; i < n; i++) {
        if (!rm_cluster_is_eds(clusters[i])) continue;
        a->subs[a->n_subs++].c = clusters[i];
        if (clusters[i]->eds_init_timeout_ms > *timeout_ms)
            *timeout_ms = clusters[i]->eds_init_timeout_ms;
        a->names[a->n_names] = strdup(clusters[i]->eds_service);
        if (!a->names[a->n_names++]) return RM_ERR;
    }
    a->n_names = rm_eds_unique_names(a->names, a->n_names);
    a->n_waiting = a->n_subs;
    return RM_OK;
}

struct rm_ads_client *rm_ads_client_new(struct rm_loop *loop, struct rm_cluster *ads_cluster,
                                        struct rm_cluster *const *clusters, size_t n,
                                        const char *node_id, const char *node_cluster,
                                        rm_dns_publish_fn publish, void (*on_init)(void *ctx),
                                        void *ctx, struct rm_error *err)
{
    struct rm_ads_client *a = calloc(1, sizeof(*a));
    if (!a) goto oom;
    a->loop = loop;
    a->publish = publish;
    a->on_init = on_init;
    a->ctx = ctx;
    a->backoff_ms = BACKOFF_BASE_MS;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    a->rng = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)(uintptr_t)a ^ 0x9E3779B97F4A7C15ULL;
    a->node_id = strdup(node_id ? node_id : "");
    a->node_cluster = strdup(node_cluster ? node_cluster : "");
    uint32_t timeout_ms;
    if (!a->node_id || !a->node_cluster || collect(a, clusters, n, &timeout_ms)) goto oom;
    a->stats = rm_stats_get("control_plane.", cp_stat_defs, CP__COUNT);
    if (a->n_subs == 0) return a;
    if (!ads_cluster || ads_cluster->hs->n == 0) {
        rm_error_set(err, "dynamic_resources.ads_config: the ADS cluster has no host");
        rm_ads_client_free(a);
        return NULL;
    }
    const struct rm_host *h = ads_cluster->hs->hosts[0];
    struct rm_grpc_channel_opts o = {.connect_timeout_ms = ads_cluster->connect_timeout_ms};
    a->ch =
        rm_grpc_channel_new(loop, (const struct sockaddr *)&h->addr, h->addr_len, NULL, &o, err);
    if (!a->ch) {
        rm_ads_client_free(a);
        return NULL;
    }
    rm_timer_start(loop, &a->retry_timer, 0, on_retry);
    if (timeout_ms) rm_timer_start(loop, &a->init_timer, timeout_ms, on_init_timeout);
    rm_log_info("ads: EDS for %zu cluster(s) from %s", a->n_subs, rm_grpc_channel_target(a->ch));
    return a;
oom:
    rm_error_set(err, "out of memory");
    rm_ads_client_free(a);
    return NULL;
}

void rm_ads_client_free(struct rm_ads_client *a)
{
    if (!a) return;
    rm_timer_stop(a->loop, &a->retry_timer);
    rm_timer_stop(a->loop, &a->init_timer);
    rm_grpc_call_cancel(a->call);
    a->call = NULL;
    rm_grpc_channel_free(a->ch);
    for (size_t i = 0; a->names && i < a->n_names; i++)
        free(a->names[i]);
    free(a->names);
    free(a->subs);
    free(a->node_id);
    free(a->node_cluster);
    rm_ads_sotw_free(&a->st);
    rm_eds_seen_free(&a->seen);
    free(a);
}

bool rm_ads_client_initialized(const struct rm_ads_client *a)
{
    return a->n_waiting == 0;
}

void rm_ads_client_waiting(const struct rm_ads_client *a, char *buf, size_t len)
{
    size_t off = 0;
    if (len) buf[0] = 0;
    for (size_t i = 0; i < a->n_subs && off < len; i++) {
        if (a->subs[i].initialized) continue;
        int w = snprintf(buf + off, len - off, "%s%s", off ? ", " : "", a->subs[i].c->name);
        off += w > 0 ? (size_t)w : 0;
    }
}
