/* The ADS client (see ads_client.h). */
#include "xds/ads_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "envoy/config/core/v3/base.pb-c.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "proxy/admin/stats.h"
#include "proxy/config/pbutil.h"
#include "proxy/core/bulk.h"
#include "proxy/core/log.h"
#include "proxy/core/strmap.h"
#include "proxy/server/server.h"
#include "xds/ads_ack.h"
#include "xds/ads_store.h"
#include "xds/grpc.h"

#define ADS_SVC "/envoy.service.discovery.v3.AggregatedDiscoveryService/"
#define ADS_SOTW_PATH ADS_SVC "StreamAggregatedResources"
#define ADS_DELTA_PATH ADS_SVC "DeltaAggregatedResources"
#define RESOURCE_WRAPPER RM_ADS_TYPE_PREFIX "envoy.service.discovery.v3.Resource"
#define BACKOFF_BASE_MS 500
#define BACKOFF_MAX_MS 30000

typedef Envoy__Service__Discovery__V3__DiscoveryRequest Request;
typedef Envoy__Service__Discovery__V3__DiscoveryResponse Response;
typedef Envoy__Service__Discovery__V3__DeltaDiscoveryRequest DeltaRequest;
typedef Envoy__Service__Discovery__V3__DeltaDiscoveryResponse DeltaResponse;
typedef Envoy__Service__Discovery__V3__Resource Resource;

enum { CP_CONNECTED_STATE, CP__COUNT };
static const struct rm_stat_def cp_stat_defs[CP__COUNT] = {
    [CP_CONNECTED_STATE] = {"connected_state", RM_GAUGE},
};

/* ---- held resources: name -> hash (+ Delta version) ---------------------------------------- */

struct held {
    uint64_t hash;
    uint64_t seen; /* the epoch of the last response that named it */
    char *version; /* Delta: the resource's version (NULL: none) */
};

static const struct held *held_find(const struct rm_strmap *m, const char *name)
{
    return rm_strmap_get(m, name);
}

static void held_put(struct rm_strmap *m, const char *name, uint64_t hash, const char *version)
{
    struct held *h = rm_strmap_get(m, name);
    if (!h) {
        if (!(h = calloc(1, sizeof(*h)))) abort();
        rm_strmap_put(m, name, h);
    }
    h->hash = hash;
    free(h->version);
    h->version = version && version[0] ? strdup(version) : NULL;
}

static void held_del(struct rm_strmap *m, const char *name)
{
    struct held *h = rm_strmap_del(m, name);
    if (!h) return;
    free(h->version);
    free(h);
}

static void held_clear(struct rm_strmap *m)
{
    size_t it;
    for (struct rm_strmap_ent *e = rm_strmap_first(m, &it); e; e = rm_strmap_next(m, e, &it)) {
        struct held *h = e->value;
        free(h->version);
        free(h);
    }
    rm_strmap_clear(m);
}

/* ---- state -------------------------------------------------------------------------------- */

struct names {
    char **v;
    size_t n; /* sorted, no duplicates (names_copy) */
};

struct type_state {
    const struct rm_ads_type *t;
    struct rm_strmap held; /* name -> struct held */
    struct names want;     /* named types: the subscription */
    struct names told;     /* Delta: what this stream's server was told we subscribe to */
    struct rm_ads_sotw st;
    bool wildcard_on; /* a wildcard type was subscribed to */
    bool started;     /* the type's first request went out on this stream */
    bool in_update;
    bool dirty;     /* the subscription changed during on_update: send after the reply */
    uint64_t epoch; /* responses handled (marks held resources a response names) */
};

struct rm_ads_client {
    struct rm_loop *loop;
    struct rm_grpc_channel *ch;
    struct rm_grpc_call *call; /* the stream, or NULL */
    bool delta;
    const char *path;    /* the method */
    uint64_t arrival_us; /* when the response being handled arrived (for the applied-in log) */
    struct rm_bulk bulk; /* the response being handled is decoded here */
    ProtobufCAllocator bulk_al;
    bool sent_node; /* on this stream */
    struct type_state *types;
    size_t n_types;
    char *node_id, *node_cluster;
    void *ctx;
    struct rm_timer retry_timer;
    uint32_t backoff_ms; /* the next delay's upper bound */
    uint64_t rng;
    struct rm_stats *stats;
};

static void connect_stream(struct rm_ads_client *a);

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
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000u;
}

/* A 64-bit hash of a resource's bytes, 8 bytes per step (a resent 10,000-resource response
 * hashes in about a millisecond); not cryptographic: it only decides "same bytes as held". */
static uint64_t bytes_hash(const uint8_t *p, size_t n)
{
    const uint64_t k = 0x9E3779B97F4A7C15ULL;
    uint64_t h = 0xcbf29ce484222325ULL ^ (n * k);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * k;
        h ^= h >> 29;
    }
    uint64_t w = 0;
    memcpy(&w, p + i, n - i);
    h = (h ^ w) * k;
    h ^= h >> 32;
    return h * 0xff51afd7ed558ccdULL ^ (h >> 29);
}

static void names_free(struct names *ns)
{
    for (size_t i = 0; i < ns->n; i++)
        free(ns->v[i]);
    free(ns->v);
    *ns = (struct names){0};
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Whether sorted <ns> has <name> (binary search). */
static bool names_has(const struct names *ns, const char *name)
{
    return ns->n && bsearch(&name, ns->v, ns->n, sizeof(*ns->v), cmp_str) != NULL;
}

/* A sorted, duplicate-free copy of <v>[0..n). */
static struct names names_copy(const char *const *v, size_t n)
{
    struct names ns = {calloc(n + 1, sizeof(char *)), 0};
    if (!ns.v) abort();
    for (size_t i = 0; i < n; i++) {
        if (!(ns.v[ns.n++] = strdup(v[i]))) abort();
    }
    qsort(ns.v, ns.n, sizeof(*ns.v), cmp_str);
    size_t k = 0;
    for (size_t i = 0; i < ns.n; i++) {
        if (k && strcmp(ns.v[k - 1], ns.v[i]) == 0)
            free(ns.v[i]);
        else
            ns.v[k++] = ns.v[i];
    }
    ns.n = k;
    return ns;
}

static const char *type_short(const struct type_state *ts)
{
    return rm_ads_type_short(ts->t->type_url);
}

/* ---- requests ----------------------------------------------------------------------------- */

static Envoy__Config__Core__V3__Node *fill_node(struct rm_ads_client *a,
                                                Envoy__Config__Core__V3__Node *node)
{
    static char *features[] = {(char *)"envoy.lb.does_not_support_overprovisioning"};
    if (a->sent_node) return NULL;
    envoy__config__core__v3__node__init(node);
    node->id = a->node_id;
    node->cluster = a->node_cluster;
    node->user_agent_name = (char *)"remora";
    node->user_agent_version_type_case =
        ENVOY__CONFIG__CORE__V3__NODE__USER_AGENT_VERSION_TYPE_USER_AGENT_VERSION;
    node->user_agent_version = (char *)RM_VERSION;
    node->n_client_features = 1;
    node->client_features = features;
    a->sent_node = true;
    return node;
}

static void send_sotw(struct rm_ads_client *a, struct type_state *ts)
{
    Request req = ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_REQUEST__INIT;
    Envoy__Config__Core__V3__Node node;
    Google__Rpc__Status status;
    req.node = fill_node(a, &node);
    req.type_url = (char *)ts->t->type_url;
    if (!ts->t->wildcard) {
        req.n_resource_names = ts->want.n;
        req.resource_names = ts->want.v;
    }
    rm_ads_sotw_fill(&ts->st, &req, &status);
    rm_grpc_call_send_pb(a->call, &req.base);
}

typedef Envoy__Service__Discovery__V3__DeltaDiscoveryRequest__InitialResourceVersionsEntry IrvEntry;

/* initial_resource_versions: every held resource with a version. */
static IrvEntry **initial_versions(const struct type_state *ts, IrvEntry **store, size_t *n)
{
    IrvEntry **v = calloc(ts->held.n + 1, sizeof(*v));
    IrvEntry *e = calloc(ts->held.n + 1, sizeof(*e));
    if (!v || !e) abort();
    *n = 0;
    size_t it;
    for (struct rm_strmap_ent *me = rm_strmap_first(&ts->held, &it); me;
         me = rm_strmap_next(&ts->held, me, &it)) {
        const struct held *h = me->value;
        if (!h->version) continue;
        envoy__service__discovery__v3__delta_discovery_request__initial_resource_versions_entry__init(
            &e[*n]);
        e[*n].key = me->key;
        e[*n].value = h->version;
        v[*n] = &e[*n];
        (*n)++;
    }
    *store = e;
    return v;
}

/* Delta: the names of <a> not in <b>. */
static char **names_minus(const struct names *a, const struct names *b, size_t *n)
{
    char **v = calloc(a->n + 1, sizeof(*v));
    if (!v) abort();
    *n = 0;
    for (size_t i = 0; i < a->n; i++) {
        if (!names_has(b, a->v[i])) v[(*n)++] = a->v[i];
    }
    return v;
}

static void send_delta(struct rm_ads_client *a, struct type_state *ts)
{
    DeltaRequest req = ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INIT;
    Envoy__Config__Core__V3__Node node;
    Google__Rpc__Status status;
    IrvEntry *irv_store = NULL;
    req.node = fill_node(a, &node);
    req.type_url = (char *)ts->t->type_url;
    bool first = !ts->started;
    if (first)
        req.initial_resource_versions =
            initial_versions(ts, &irv_store, &req.n_initial_resource_versions);
    if (!ts->t->wildcard) {
        req.resource_names_subscribe =
            names_minus(&ts->want, &ts->told, &req.n_resource_names_subscribe);
        req.resource_names_unsubscribe =
            names_minus(&ts->told, &ts->want, &req.n_resource_names_unsubscribe);
    }
    req.response_nonce = ts->st.nonce ? ts->st.nonce : (char *)"";
    if (ts->st.error) {
        google__rpc__status__init(&status);
        status.code = 13; /* INTERNAL, as Envoy */
        status.message = ts->st.error;
        req.error_detail = &status;
    }
    rm_grpc_call_send_pb(a->call, &req.base);
    free(req.resource_names_subscribe);
    free(req.resource_names_unsubscribe);
    free(req.initial_resource_versions);
    free(irv_store);
    if (!ts->t->wildcard) {
        names_free(&ts->told);
        ts->told = names_copy((const char *const *)ts->want.v, ts->want.n);
    }
}

/* Send <ts>'s current request (subscription, ACK/NACK state) if it has anything to ask. */
static void send_request(struct rm_ads_client *a, struct type_state *ts)
{
    if (!a->call) return;
    if (ts->t->wildcard && !ts->wildcard_on) return;
    if (!ts->t->wildcard && !ts->started && ts->want.n == 0) return; /* nothing to ask yet */
    if (a->delta)
        send_delta(a, ts);
    else
        send_sotw(a, ts);
    ts->started = true;
}

void rm_ads_client_subscribe(struct rm_ads_client *a, size_t type_idx, const char *const *names,
                             size_t n)
{
    struct type_state *ts = &a->types[type_idx];
    if (ts->t->wildcard) {
        if (ts->wildcard_on) return;
        ts->wildcard_on = true;
        send_request(a, ts);
        return;
    }
    struct names next = names_copy(names, n);
    bool same = next.n == ts->want.n;
    for (size_t i = 0; same && i < next.n; i++)
        same = strcmp(next.v[i], ts->want.v[i]) == 0;
    if (same) {
        names_free(&next);
        return;
    }
    for (size_t i = 0; i < ts->want.n; i++) { /* forget what is no longer wanted */
        if (!names_has(&next, ts->want.v[i])) held_del(&ts->held, ts->want.v[i]);
    }
    names_free(&ts->want);
    ts->want = next;
    if (ts->in_update)
        ts->dirty = true;
    else
        send_request(a, ts);
}

/* ---- responses ---------------------------------------------------------------------------- */

struct batch {
    struct rm_ads_res *res; /* changed */
    size_t n;
    const char **removed;
    size_t n_removed;
    size_t n_unchanged;
    uint64_t epoch;         /* marks the held resources this response names */
    struct rm_strmap fresh; /* names of this response the client does not hold */
    const char *dup;        /* a name seen twice, or NULL */
    ProtobufCAllocator al;  /* the response's bulk: wrappers, names copied out of the wire */
};

static void batch_free(struct batch *b)
{
    rm_strmap_clear(&b->fresh);
    free(b->res);
    free(b->removed);
}

static int batch_alloc(struct batch *b, struct type_state *ts, size_t n, size_t removed)
{
    b->epoch = ++ts->epoch;
    b->res = calloc(n + 1, sizeof(*b->res));
    b->removed = calloc(removed + 1, sizeof(*b->removed));
    return b->res && b->removed ? RM_OK : RM_ERR;
}

/* One resource: keep it if its bytes differ from the held copy; note a name seen twice (a
 * held one by its epoch mark, a new one in <fresh>: no sorting, O(1) each). */
static void batch_add(struct batch *b, struct type_state *ts, size_t index, const char *name,
                      const uint8_t *value, size_t len, const char *version)
{
    struct held *old = rm_strmap_get(&ts->held, name);
    if (old ? old->seen == b->epoch : rm_strmap_get(&b->fresh, name) != NULL) {
        if (!b->dup) b->dup = name;
        return;
    }
    if (old)
        old->seen = b->epoch;
    else
        rm_strmap_put(&b->fresh, name, (void *)name);
    uint64_t h = bytes_hash(value, len);
    if (old && old->hash == h) {
        b->n_unchanged++;
        return;
    }
    b->res[b->n++] = (struct rm_ads_res){name, value, len, version, h, index};
}

/* Two resources of one name in a response are an error. */
static int check_duplicates(const struct batch *b, const char *type, struct rm_error *err)
{
    if (!b->dup) return RM_OK;
    return rm_error_set(err, "%s %s: duplicate resource name in one response", type, b->dup);
}

/* SotW resource <i>: its name (field 1 of every xDS resource) without unpacking it, or the
 * name of its Resource wrapper. */
static int sotw_resource(struct batch *b, struct type_state *ts, const Response *r, size_t i,
                         const char *version, struct rm_error *err)
{
    const Google__Protobuf__Any *any = r->resources[i];
    const char *type = type_short(ts);
    if (any->type_url && strcmp(any->type_url, RESOURCE_WRAPPER) == 0) {
        Resource *w = envoy__service__discovery__v3__resource__unpack(&b->al, any->value.len,
                                                                      any->value.data);
        if (!w) return rm_error_set(err, "resources[%zu]: undecodable Resource wrapper", i);
        if (!w->name || !w->name[0] || !w->resource)
            return rm_error_set(
                err, "resources[%zu]: a Resource wrapper needs a name and a resource", i);
        any = w->resource;
        if (!any->type_url || strcmp(any->type_url, ts->t->type_url) != 0)
            return rm_error_set(
                err, "%s %s: resources[%zu].resource.type_url: expected %s, got \"%s\"", type,
                w->name, i, ts->t->type_url, any->type_url ? any->type_url : "");
        batch_add(b, ts, i, w->name, any->value.data, any->value.len, version);
        return RM_OK;
    }
    if (!any->type_url || strcmp(any->type_url, ts->t->type_url) != 0)
        return rm_error_set(err, "resources[%zu].type_url: expected %s, got \"%s\"", i,
                            ts->t->type_url, any->type_url ? any->type_url : "");
    const uint8_t *s;
    size_t len;
    int found = rm_pb_wire_bytes_field(any->value.data, any->value.len, 1, &s, &len);
    if (found < 0) return rm_error_set(err, "resources[%zu]: undecodable %s", i, type);
    if (found == 0 || len == 0)
        return rm_error_set(err, "resources[%zu]: %s without a name", i, type);
    if (memchr(s, 0, len)) return rm_error_set(err, "resources[%zu]: name with a NUL byte", i);
    char *name = b->al.alloc(b->al.allocator_data, len + 1);
    memcpy(name, s, len);
    name[len] = 0;
    batch_add(b, ts, i, name, any->value.data, any->value.len, version);
    return RM_OK;
}

/* SotW wildcard types: every held name the response lacks is removed. */
static void sotw_removed(struct batch *b, const struct type_state *ts)
{
    if (!ts->t->wildcard) return;
    size_t it;
    for (struct rm_strmap_ent *e = rm_strmap_first(&ts->held, &it); e;
         e = rm_strmap_next(&ts->held, e, &it)) {
        if (((const struct held *)e->value)->seen != b->epoch) b->removed[b->n_removed++] = e->key;
    }
}

static int sotw_batch(struct batch *b, struct type_state *ts, const Response *r,
                      struct rm_error *err)
{
    if (batch_alloc(b, ts, r->n_resources, ts->held.n)) return rm_error_set(err, "out of memory");
    for (size_t i = 0; i < r->n_resources; i++) {
        if (sotw_resource(b, ts, r, i, r->version_info, err)) return RM_ERR;
    }
    if (check_duplicates(b, type_short(ts), err)) return RM_ERR;
    sotw_removed(b, ts);
    return RM_OK;
}

static int delta_batch(struct batch *b, struct type_state *ts, const DeltaResponse *r,
                       struct rm_error *err)
{
    const char *type = type_short(ts);
    if (batch_alloc(b, ts, r->n_resources, r->n_removed_resources))
        return rm_error_set(err, "out of memory");
    for (size_t i = 0; i < r->n_resources; i++) {
        const Resource *res = r->resources[i];
        if (!res->name || !res->name[0])
            return rm_error_set(err, "resources[%zu].name: required", i);
        if (!res->resource)
            return rm_error_set(err, "%s %s: resources[%zu].resource: required", type, res->name,
                                i);
        const char *url = res->resource->type_url;
        if (!url || strcmp(url, ts->t->type_url) != 0)
            return rm_error_set(err,
                                "%s %s: resources[%zu].resource.type_url: expected %s, got \"%s\"",
                                type, res->name, i, ts->t->type_url, url ? url : "");
        batch_add(b, ts, i, res->name, res->resource->value.data, res->resource->value.len,
                  res->version);
    }
    if (check_duplicates(b, type, err)) return RM_ERR;
    for (size_t i = 0; i < r->n_removed_resources; i++) {
        if (held_find(&ts->held, r->removed_resources[i]))
            b->removed[b->n_removed++] = r->removed_resources[i];
    }
    return RM_OK;
}

static struct type_state *find_type(struct rm_ads_client *a, const char *url)
{
    for (size_t i = 0; url && i < a->n_types; i++) {
        if (strcmp(a->types[i].t->type_url, url) == 0) return &a->types[i];
    }
    return NULL;
}

/* Hand the batch to the type; then hold what it accepted. */
static int deliver(struct rm_ads_client *a, struct type_state *ts, const struct batch *b,
                   const char *version_info, struct rm_error *err)
{
    struct rm_ads_update u = {
        .res = b->res,
        .n = b->n,
        .removed = b->removed,
        .n_removed = b->n_removed,
        .version_info = version_info ? version_info : "",
        .n_unchanged = b->n_unchanged,
    };
    ts->in_update = true;
    int rc = ts->t->on_update(a->ctx, &u, err);
    ts->in_update = false;
    if (rc != RM_OK) return rc;
    for (size_t i = 0; i < b->n; i++)
        held_put(&ts->held, b->res[i].name, b->res[i].hash, a->delta ? b->res[i].version : NULL);
    for (size_t i = 0; i < b->n_removed; i++)
        held_del(&ts->held, b->removed[i]);
    rm_log_info("ads: %s version %s applied in %llu us: %zu changed, %zu removed, %zu unchanged",
                type_short(ts), u.version_info, (unsigned long long)(now_us() - a->arrival_us),
                b->n, b->n_removed, b->n_unchanged);
    return RM_OK;
}

static void reply(struct rm_ads_client *a, struct type_state *ts, int rc, const char *version,
                  const char *nonce, const char *why)
{
    if (rc == RM_OK) {
        rm_ads_sotw_ack(&ts->st, a->delta ? NULL : version, nonce);
    } else {
        rm_log_warn("ads: rejected %s version %s (nonce %s), keeping version %s: %s",
                    type_short(ts), version ? version : "", nonce ? nonce : "",
                    ts->st.version ? ts->st.version : "(none)", why);
        rm_ads_sotw_nack(&ts->st, nonce, why);
    }
    ts->dirty = false;
    send_request(a, ts);
}

static void on_sotw(struct rm_ads_client *a, const uint8_t *msg, size_t len)
{
    Response *r = envoy__service__discovery__v3__discovery_response__unpack(&a->bulk_al, len, msg);
    if (!r) {
        rm_log_warn("ads: undecodable DiscoveryResponse (%zu bytes) ignored", len);
        return;
    }
    struct type_state *ts = find_type(a, r->type_url);
    if (!ts) {
        rm_log_warn("ads: response for unsubscribed type \"%s\" ignored", r->type_url);
    } else {
        struct batch b = {.al = a->bulk_al};
        struct rm_error err = {{0}};
        int rc = sotw_batch(&b, ts, r, &err);
        if (rc != RM_OK && ts->t->on_rejected) ts->t->on_rejected(a->ctx);
        if (rc == RM_OK) rc = deliver(a, ts, &b, r->version_info, &err);
        reply(a, ts, rc, r->version_info, r->nonce, err.msg);
        batch_free(&b);
    }
}

static void on_delta(struct rm_ads_client *a, const uint8_t *msg, size_t len)
{
    DeltaResponse *r =
        envoy__service__discovery__v3__delta_discovery_response__unpack(&a->bulk_al, len, msg);
    if (!r) {
        rm_log_warn("ads: undecodable DeltaDiscoveryResponse (%zu bytes) ignored", len);
        return;
    }
    struct type_state *ts = find_type(a, r->type_url);
    if (!ts) {
        rm_log_warn("ads: delta response for unsubscribed type \"%s\" ignored", r->type_url);
    } else {
        struct batch b = {.al = a->bulk_al};
        struct rm_error err = {{0}};
        int rc = delta_batch(&b, ts, r, &err);
        if (rc != RM_OK && ts->t->on_rejected) ts->t->on_rejected(a->ctx);
        if (rc == RM_OK) rc = deliver(a, ts, &b, r->system_version_info, &err);
        reply(a, ts, rc, r->system_version_info, r->nonce, err.msg);
        batch_free(&b);
    }
}

static void on_message(void *ctx, const uint8_t *msg, size_t len)
{
    struct rm_ads_client *a = ctx;
    a->arrival_us = now_us();
    a->backoff_ms = BACKOFF_BASE_MS;
    rm_stat_set(a->stats, CP_CONNECTED_STATE, 1);
    a->bulk_al = rm_pb_bulk_allocator(&a->bulk);
    if (a->delta)
        on_delta(a, msg, len);
    else
        on_sotw(a, msg, len);
    rm_bulk_dispose(&a->bulk); /* the decoded response, at once */
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
    a->sent_node = false;
    for (size_t i = 0; i < a->n_types; i++) {
        struct type_state *ts = &a->types[i];
        rm_ads_sotw_new_stream(&ts->st);
        ts->started = false;
        names_free(&ts->told);
    }
    a->call = rm_grpc_call_start(a->ch, a->path, NULL, 0, 0, &call_cb, a);
    if (!a->call) {
        rm_log_error("ads: cannot start a stream: out of memory");
        rm_timer_start(a->loop, &a->retry_timer, BACKOFF_MAX_MS, on_retry);
        return;
    }
    for (size_t i = 0; i < a->n_types; i++)
        send_request(a, &a->types[i]);
}

/* ---- lifetime ----------------------------------------------------------------------------- */

struct rm_ads_client *rm_ads_client_new(struct rm_loop *loop, const struct rm_ads_client_cfg *cfg,
                                        struct rm_error *err)
{
    if (!cfg->cluster || cfg->cluster->hs->n == 0) {
        rm_error_set(err, "dynamic_resources.ads_config: the ADS cluster has no host");
        return NULL;
    }
    struct rm_ads_client *a = calloc(1, sizeof(*a));
    if (!a) goto oom;
    a->loop = loop;
    a->delta = cfg->delta;
    a->path = cfg->path ? cfg->path : cfg->delta ? ADS_DELTA_PATH : ADS_SOTW_PATH;
    a->ctx = cfg->ctx;
    a->backoff_ms = BACKOFF_BASE_MS;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    a->rng = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)(uintptr_t)a ^ 0x9E3779B97F4A7C15ULL;
    a->node_id = strdup(cfg->node_id ? cfg->node_id : "");
    a->node_cluster = strdup(cfg->node_cluster ? cfg->node_cluster : "");
    a->types = calloc(cfg->n_types + 1, sizeof(*a->types));
    if (!a->node_id || !a->node_cluster || !a->types) goto oom;
    a->n_types = cfg->n_types;
    for (size_t i = 0; i < cfg->n_types; i++)
        a->types[i].t = &cfg->types[i];
    a->stats = rm_stats_get("control_plane.", cp_stat_defs, CP__COUNT);
    const struct rm_host *h = cfg->cluster->hs->hosts[0];
    struct rm_grpc_channel_opts o = {
        .connect_timeout_ms = cfg->cluster->connect_timeout_ms,
        .max_recv_msg = cfg->max_msg ? cfg->max_msg : RM_ADS_MAX_MSG,
        .tls = cfg->cluster->tls, /* the xds cluster's transport_socket (UpstreamTlsContext) */
    };
    socklen_t len;
    const struct sockaddr *sa = rm_host_sockaddr(h, &len);
    /* a unix socket's path is no authority: the cluster's name is (Envoy's default for an
     * envoy_grpc service) */
    const char *authority = sa->sa_family == AF_UNIX ? cfg->cluster->name : NULL;
    a->ch = rm_grpc_channel_new(loop, sa, len, authority, &o, err);
    if (!a->ch) {
        rm_ads_client_free(a);
        return NULL;
    }
    rm_timer_start(loop, &a->retry_timer, 0, on_retry);
    rm_log_info("ads: %s %s to %s", a->delta ? "delta" : "state of the world", a->path,
                rm_grpc_channel_target(a->ch));
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
    rm_grpc_call_cancel(a->call);
    a->call = NULL;
    rm_grpc_channel_free(a->ch);
    for (size_t i = 0; a->types && i < a->n_types; i++) {
        held_clear(&a->types[i].held);
        names_free(&a->types[i].want);
        names_free(&a->types[i].told);
        rm_ads_sotw_free(&a->types[i].st);
    }
    free(a->types);
    free(a->node_id);
    free(a->node_cluster);
    free(a);
}
