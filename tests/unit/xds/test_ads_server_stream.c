/* The ADS server end to end in one process: gRPC server + ADS server + store, driven by
 * remora's own gRPC client with real DiscoveryRequest messages.  SotW and Delta exchanges,
 * pushes after a store change, ACK/NACK counting, node and type checks, undecodable requests,
 * pushes held back by backpressure, half-close and shutdown. */
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "proxy/core/log.h"
#include "proxy/http/h2_internal.h"
#include "xds/ads_server.h"
#include "xds/ads_sub.h"
#include "xds/grpc.h"

#define TC "type.googleapis.com/envoy.config.cluster.v3.Cluster"
#define TE "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
#define ADS "/envoy.service.discovery.v3.AggregatedDiscoveryService/"

typedef Envoy__Config__Cluster__V3__Cluster Cluster;

/* ---- the client --------------------------------------------------------------------------- */

#define MAX_RESP 16

struct client {
    struct rm_grpc_call *call;
    bool delta;
    RmDiscoveryResponse *sotw[MAX_RESP];
    RmDeltaDiscoveryResponse *dresp[MAX_RESP];
    int n, closes, status;
    char msg[256];
};

static void c_message(void *ctx, const uint8_t *m, size_t len)
{
    struct client *c = ctx;
    cr_assert_lt(c->n, MAX_RESP);
    if (c->delta)
        c->dresp[c->n] =
            envoy__service__discovery__v3__delta_discovery_response__unpack(NULL, len, m);
    else
        c->sotw[c->n] = envoy__service__discovery__v3__discovery_response__unpack(NULL, len, m);
    cr_assert(c->delta ? c->dresp[c->n] != NULL : c->sotw[c->n] != NULL);
    c->n++;
}

static void c_close(void *ctx, int status, const char *msg)
{
    struct client *c = ctx;
    c->closes++;
    c->status = status;
    snprintf(c->msg, sizeof(c->msg), "%s", msg);
    c->call = NULL;
}

static const struct rm_grpc_call_cb client_cb = {.on_message = c_message, .on_close = c_close};

static void client_dispose(struct client *c)
{
    for (int i = 0; i < c->n; i++) {
        if (c->delta)
            envoy__service__discovery__v3__delta_discovery_response__free_unpacked(c->dresp[i],
                                                                                   NULL);
        else
            envoy__service__discovery__v3__discovery_response__free_unpacked(c->sotw[i], NULL);
    }
}

/* ---- fixture ------------------------------------------------------------------------------ */

struct fx {
    struct rm_loop *loop;
    struct rm_ads_store store;
    struct rm_grpc_server *gs;
    struct rm_ads_server *as;
    struct rm_grpc_channel *ch;
    struct rm_timer slice;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void slice_end(struct rm_timer *t)
{
    rm_loop_stop(rm_container_of(t, struct fx, slice)->loop);
}

static void spin(struct fx *f)
{
    rm_timer_start(f->loop, &f->slice, 1, slice_end);
    rm_loop_run(f->loop);
    rm_timer_stop(f->loop, &f->slice);
}

#define WAIT(f, cond, ms)                                                                          \
    do {                                                                                           \
        uint64_t wait_deadline_ = now_ms() + (ms);                                                 \
        while (!(cond) && now_ms() < wait_deadline_)                                               \
            spin(f);                                                                               \
    } while (0)

static void settle(struct fx *f, int ms)
{
    uint64_t end = now_ms() + (uint64_t)ms;
    while (now_ms() < end)
        spin(f);
}

/* Clusters named by <names> ("a", "b"...), each with connect_timeout <secs> and <pad> bytes of
 * alt_stat_name padding; CLAs for the first one. */
static void store_clusters(struct fx *f, const char *const *names, int secs, size_t pad)
{
    struct rm_ads_set s;
    rm_ads_set_init(&s);
    char *padding = calloc(1, pad + 1);
    memset(padding, 'p', pad);
    for (; *names; names++) {
        Cluster c = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__INIT;
        Google__Protobuf__Duration d = GOOGLE__PROTOBUF__DURATION__INIT;
        d.seconds = secs;
        c.name = (char *)*names;
        c.connect_timeout = &d;
        c.alt_stat_name = padding;
        size_t n = protobuf_c_message_get_packed_size(&c.base);
        uint8_t *buf = malloc(n);
        protobuf_c_message_pack(&c.base, buf);
        rm_ads_set_add(&s, TC, *names, buf, n, NULL, NULL);
        rm_ads_set_add(&s, TE, *names, (const uint8_t *)"", 0, NULL, NULL);
        free(buf);
    }
    free(padding);
    rm_ads_store_replace(&f->store, &s, NULL);
}

static void fx_init(struct fx *f, uint32_t call_buffer)
{
    struct rm_error err;
    memset(f, 0, sizeof(*f));
    rm_log_level = RM_LOG_WARN;
    f->loop = rm_loop_new();
    rm_ads_store_init(&f->store, "v");
    static const char *const ab[] = {"a", "b", NULL};
    store_clusters(f, ab, 1, 0);
    struct rm_grpc_server_opts o = {.quiet = true, .call_buffer = call_buffer};
    f->gs = rm_grpc_server_new(f->loop, &o);
    f->as = rm_ads_server_new(f->gs, &f->store, NULL, &err);
    cr_assert_not_null(f->as, "%s", err.msg);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(rm_grpc_server_listen(f->gs, (struct sockaddr *)&a, sizeof(a), &err), RM_OK);
    a.sin_port = htons((uint16_t)rm_grpc_server_port(f->gs));
    f->ch = rm_grpc_channel_new(f->loop, (struct sockaddr *)&a, sizeof(a), NULL, NULL, &err);
    cr_assert_not_null(f->ch);
}

static void fx_fini(struct fx *f)
{
    rm_grpc_channel_free(f->ch);
    settle(f, 3);
    rm_grpc_server_free(f->gs);
    rm_ads_server_free(f->as);
    settle(f, 3);
    rm_loop_free(f->loop);
    rm_ads_store_dispose(&f->store);
    rm_buf_thread_cleanup();
    rm_arena_thread_cleanup();
    rm_h2_mem_thread_cleanup();
}

static void open_stream(struct fx *f, struct client *c, const char *path, bool delta)
{
    memset(c, 0, sizeof(*c));
    c->delta = delta;
    c->call = rm_grpc_call_start(f->ch, path, NULL, 0, 0, &client_cb, c);
    cr_assert_not_null(c->call);
}

static void sotw_send(struct client *c, const char *type, const char *version, const char *nonce,
                      const char *const *names, bool nack, bool with_node)
{
    RmDiscoveryRequest r = ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_REQUEST__INIT;
    Envoy__Config__Core__V3__Node node = ENVOY__CONFIG__CORE__V3__NODE__INIT;
    Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
    node.id = "unit-node";
    if (with_node) r.node = &node;
    r.type_url = (char *)type;
    r.version_info = (char *)(version ? version : "");
    r.response_nonce = (char *)(nonce ? nonce : "");
    while (names && names[r.n_resource_names])
        r.n_resource_names++;
    r.resource_names = (char **)names;
    if (nack) {
        st.code = 13;
        st.message = "rejected";
        r.error_detail = &st;
    }
    cr_assert_eq(rm_grpc_call_send_pb(c->call, &r.base), 0);
}

static int resp_names(const RmDiscoveryResponse *r, char out[][16])
{
    for (size_t i = 0; i < r->n_resources; i++) {
        Cluster *c = envoy__config__cluster__v3__cluster__unpack(NULL, r->resources[i]->value.len,
                                                                 r->resources[i]->value.data);
        cr_assert_not_null(c);
        snprintf(out[i], 16, "%s", c->name);
        envoy__config__cluster__v3__cluster__free_unpacked(c, NULL);
    }
    return (int)r->n_resources;
}

/* ---- tests -------------------------------------------------------------------------------- */

Test(ads_stream, sotw_wildcard_ack_push_nack_half_close)
{
    struct fx f;
    struct client c;
    char names[8][16];
    fx_init(&f, 0);
    open_stream(&f, &c, ADS "StreamAggregatedResources", false);
    sotw_send(&c, TC, NULL, NULL, NULL, false, true);
    WAIT(&f, c.n == 1, 2000);
    RmDiscoveryResponse *r = c.sotw[0];
    cr_assert_str_eq(r->type_url, TC);
    cr_assert_str_eq(r->version_info, "v1");
    cr_assert_str_eq(r->nonce, "1");
    cr_assert_str_eq(r->control_plane->identifier, "remora-xds");
    cr_assert_eq(resp_names(r, names), 2);
    cr_assert_str_eq(names[0], "a");
    sotw_send(&c, TC, "v1", "1", NULL, false, false);
    WAIT(&f, rm_ads_server_stats(f.as)->acks == 1, 2000);
    /* a store change is pushed: the full state, the new version */
    static const char *const abc[] = {"a", "b", "c", NULL};
    store_clusters(&f, abc, 1, 0);
    rm_ads_server_notify(f.as);
    WAIT(&f, c.n == 2, 2000);
    cr_assert_str_eq(c.sotw[1]->version_info, "v2");
    cr_assert_eq(resp_names(c.sotw[1], names), 3);
    sotw_send(&c, TC, "v1", c.sotw[1]->nonce, NULL, true, false);
    WAIT(&f, rm_ads_server_stats(f.as)->nacks == 1, 2000);
    settle(&f, 20);
    cr_assert_eq(c.n, 2, "no resend after a NACK");
    rm_grpc_call_half_close(c.call);
    WAIT(&f, c.closes, 2000);
    cr_assert_eq(c.status, RM_GRPC_OK, "%s", c.msg);
    const struct rm_ads_server_stats *st = rm_ads_server_stats(f.as);
    cr_assert_eq(st->streams, 1);
    cr_assert_eq(st->streams_open, 0);
    cr_assert_eq(st->responses, 2);
    cr_assert_eq(st->resources_sent, 5);
    client_dispose(&c);
    fx_fini(&f);
}

Test(ads_stream, delta_changes_only)
{
    struct fx f;
    struct client c;
    fx_init(&f, 0);
    open_stream(&f, &c, ADS "DeltaAggregatedResources", true);
    RmDeltaDiscoveryRequest r = ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INIT;
    char *star[] = {"*"};
    r.type_url = TC;
    r.n_resource_names_subscribe = 1;
    r.resource_names_subscribe = star;
    cr_assert_eq(rm_grpc_call_send_pb(c.call, &r.base), 0);
    WAIT(&f, c.n == 1, 2000);
    cr_assert_eq(c.dresp[0]->n_resources, 2);
    cr_assert_str_eq(c.dresp[0]->resources[0]->name, "a");
    cr_assert_str_eq(c.dresp[0]->resources[0]->version,
                     rm_ads_set_find(&f.store.cur, TC, "a")->version);
    cr_assert_str_eq(c.dresp[0]->system_version_info, "v1");
    r.n_resource_names_subscribe = 0;
    r.response_nonce = c.dresp[0]->nonce;
    cr_assert_eq(rm_grpc_call_send_pb(c.call, &r.base), 0);
    WAIT(&f, rm_ads_server_stats(f.as)->acks == 1, 2000);
    static const char *const ac[] = {"a", "c", NULL};
    store_clusters(&f, ac, 1, 0);
    rm_ads_server_notify(f.as);
    WAIT(&f, c.n == 2, 2000);
    cr_assert_eq(c.dresp[1]->n_resources, 1);
    cr_assert_str_eq(c.dresp[1]->resources[0]->name, "c");
    cr_assert_eq(c.dresp[1]->n_removed_resources, 1);
    cr_assert_str_eq(c.dresp[1]->removed_resources[0], "b");
    client_dispose(&c);
    fx_fini(&f);
}

Test(ads_stream, bad_requests_end_the_stream)
{
    struct fx f;
    struct client a, b, t;
    fx_init(&f, 0);
    open_stream(&f, &a, ADS "StreamAggregatedResources", false);
    cr_assert_eq(rm_grpc_call_send(a.call, (const uint8_t *)"\xff\xff\xff", 3), 0);
    open_stream(&f, &b, ADS "StreamAggregatedResources", false);
    sotw_send(&b, "", NULL, NULL, NULL, false, true);
    open_stream(&f, &t, "/envoy.service.cluster.v3.ClusterDiscoveryService/StreamClusters", false);
    sotw_send(&t, TE, NULL, NULL, NULL, false, true);
    WAIT(&f, a.closes && b.closes && t.closes, 2000);
    cr_assert_eq(a.status, RM_GRPC_INVALID_ARGUMENT);
    cr_assert_str_eq(a.msg, "cannot decode envoy.service.discovery.v3.DiscoveryRequest (3 bytes)");
    cr_assert_eq(b.status, RM_GRPC_INVALID_ARGUMENT);
    cr_assert_str_eq(b.msg, "type_url is required on an aggregated stream");
    cr_assert_eq(t.status, RM_GRPC_INVALID_ARGUMENT);
    cr_assert_str_eq(t.msg, "StreamClusters serves " TC " only, not " TE);
    cr_assert_eq(rm_ads_server_stats(f.as)->streams_open, 0);
    fx_fini(&f);
}

Test(ads_stream, per_type_service_defaults_its_type)
{
    struct fx f;
    struct client c;
    fx_init(&f, 0);
    open_stream(&f, &c, "/envoy.service.cluster.v3.ClusterDiscoveryService/StreamClusters", false);
    sotw_send(&c, "", NULL, NULL, NULL, false, true);
    WAIT(&f, c.n == 1, 2000);
    cr_assert_str_eq(c.sotw[0]->type_url, TC);
    client_dispose(&c);
    fx_fini(&f);
}

Test(ads_stream, backpressure_holds_pushes_until_writable)
{
    struct fx f;
    struct client c;
    fx_init(&f, 8 * 1024);
    static const char *const many[] = {"a", "b", "c", "d", "e", "f", "g", "h", NULL};
    store_clusters(&f, many, 1, 16 * 1024); /* ~128 KiB per CDS response */
    open_stream(&f, &c, ADS "StreamAggregatedResources", false);
    static const char *const all[] = {"a", "b", "c", "d", "e", "f", "g", "h", NULL};
    /* CDS and EDS asked at once: the EDS answer waits until CDS drained */
    sotw_send(&c, TC, NULL, NULL, NULL, false, true);
    sotw_send(&c, TE, NULL, NULL, all, false, false);
    WAIT(&f, c.n == 2, 5000);
    cr_assert_str_eq(c.sotw[0]->type_url, TC);
    cr_assert_eq(c.sotw[0]->n_resources, 8);
    cr_assert_str_eq(c.sotw[1]->type_url, TE);
    cr_assert_eq(c.sotw[1]->n_resources, 8);
    client_dispose(&c);
    fx_fini(&f);
}

Test(ads_stream, server_shutdown_ends_streams)
{
    struct fx f;
    struct client c;
    fx_init(&f, 0);
    open_stream(&f, &c, ADS "StreamAggregatedResources", false);
    sotw_send(&c, TC, NULL, NULL, NULL, false, true);
    WAIT(&f, c.n == 1, 2000);
    rm_ads_server_close_streams(f.as, RM_GRPC_UNAVAILABLE, "bye");
    WAIT(&f, c.closes, 2000);
    cr_assert_eq(c.status, RM_GRPC_UNAVAILABLE);
    cr_assert_str_eq(c.msg, "bye");
    client_dispose(&c);
    fx_fini(&f);
}
