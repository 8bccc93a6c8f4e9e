/* Delta xDS subscription state: see ads_sub.h. */
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/any.pb-c.h"
#include "xds/ads_sub.h"

typedef Envoy__Service__Discovery__V3__Resource RmResource;

void rm_ads_delta_init(struct rm_ads_delta *d, const char *type_url)
{
    memset(d, 0, sizeof(*d));
    d->type_url = strdup(type_url);
    if (!d->type_url) abort();
    d->state = RM_ADS_SUB_NEW; /* initial */
}

void rm_ads_delta_dispose(struct rm_ads_delta *d)
{
    free(d->type_url);
    rm_ads_kv_dispose(&d->names);
    rm_ads_kv_dispose(&d->known);
    memset(d, 0, sizeof(*d));
}

static enum rm_ads_req_kind delta_classify(struct rm_ads_delta *d,
                                           const RmDeltaDiscoveryRequest *req)
{
    const char *nonce = req->response_nonce ? req->response_nonce : "";
    if (!*nonce) return d->nreq == 0 ? RM_ADS_REQ_FIRST : RM_ADS_REQ_UPDATE;
    if (strcmp(nonce, d->nonce) != 0) return RM_ADS_REQ_STALE;
    if (d->state != RM_ADS_SUB_SENT) return RM_ADS_REQ_UPDATE;
    rm_ads_sub_set_state(&d->state, req->error_detail ? RM_ADS_SUB_NACKED : RM_ADS_SUB_ACKED);
    return req->error_detail ? RM_ADS_REQ_NACK : RM_ADS_REQ_ACK;
}

/* "*" unsubscribed: forget what only the wildcard brought. */
static void drop_wildcard(struct rm_ads_delta *d)
{
    d->wildcard = false;
    for (size_t i = d->known.n; i-- > 0;)
        if (!rm_ads_kv_get(&d->names, d->known.v[i].key))
            rm_ads_kv_del(&d->known, d->known.v[i].key);
}

static void delta_subscribe(struct rm_ads_delta *d, const char *name, bool first)
{
    if (strcmp(name, "*") == 0) {
        d->wildcard = true;
        return;
    }
    rm_ads_kv_put(&d->names, name, NULL);
    if (!first) rm_ads_kv_del(&d->known, name); /* answer it again, even if unchanged */
}

static void delta_unsubscribe(struct rm_ads_delta *d, const char *name)
{
    if (strcmp(name, "*") == 0) {
        drop_wildcard(d);
        return;
    }
    rm_ads_kv_del(&d->names, name);
    rm_ads_kv_del(&d->known, name); /* under "*" still: it is sent again (xDS protocol) */
}

enum rm_ads_req_kind rm_ads_delta_request(struct rm_ads_delta *d,
                                          const RmDeltaDiscoveryRequest *req)
{
    enum rm_ads_req_kind k = delta_classify(d, req);
    bool first = d->nreq++ == 0;
    if (first) {
        for (size_t i = 0; i < req->n_initial_resource_versions; i++)
            rm_ads_kv_put(&d->known, req->initial_resource_versions[i]->key,
                          req->initial_resource_versions[i]->value);
        if (req->n_resource_names_subscribe == 0 && req->n_resource_names_unsubscribe == 0)
            d->wildcard = true; /* legacy wildcard */
    }
    for (size_t i = 0; i < req->n_resource_names_subscribe; i++)
        delta_subscribe(d, req->resource_names_subscribe[i], first);
    for (size_t i = 0; i < req->n_resource_names_unsubscribe; i++)
        delta_unsubscribe(d, req->resource_names_unsubscribe[i]);
    return k;
}

static bool delta_wants(const struct rm_ads_delta *d, const char *name)
{
    return d->wildcard || rm_ads_kv_get(&d->names, name) != NULL;
}

static void add_removed(RmDeltaDiscoveryResponse *resp, const char *name)
{
    char **v = realloc(resp->removed_resources,
                       (resp->n_removed_resources + 1) * sizeof(*resp->removed_resources));
    if (!v) abort();
    resp->removed_resources = v;
    v[resp->n_removed_resources] = strdup(name);
    if (!v[resp->n_removed_resources]) abort();
    resp->n_removed_resources++;
}

/* Upserts: subscribed resources the client does not have at this version.  The Resource and
 * Any structs live in one block with the pointer array. */
static void build_upserts(const struct rm_ads_delta *d, const struct rm_ads_store *st,
                          RmDeltaDiscoveryResponse *resp)
{
    size_t first, n = rm_ads_set_type_range(&st->cur, d->type_url, &first);
    size_t k = n ? n : 1;
    char *blk =
        calloc(1, k * (sizeof(RmResource *) + sizeof(RmResource) + sizeof(Google__Protobuf__Any)));
    if (!blk) abort();
    resp->resources = (RmResource **)(void *)blk;
    RmResource *res = (RmResource *)(void *)(blk + k * sizeof(RmResource *));
    Google__Protobuf__Any *anys = (Google__Protobuf__Any *)(void *)(res + k);
    for (size_t i = first; i < first + n; i++) {
        const struct rm_ads_resource *r = &st->cur.v[i];
        const struct rm_ads_kv_entry *e = rm_ads_kv_get(&d->known, r->name);
        if (!delta_wants(d, r->name) || (e && e->val && strcmp(e->val, r->version) == 0)) continue;
        size_t j = resp->n_resources++;
        envoy__service__discovery__v3__resource__init(&res[j]);
        google__protobuf__any__init(&anys[j]);
        anys[j].type_url = r->type_url;
        anys[j].value.data = r->value;
        anys[j].value.len = r->len;
        res[j].name = r->name;
        res[j].version = (char *)r->version;
        res[j].resource = &anys[j];
        resp->resources[j] = &res[j];
    }
}

/* Removals: what the client has that is gone, and explicit names never seen to exist. */
static void build_removals(const struct rm_ads_delta *d, const struct rm_ads_store *st,
                           RmDeltaDiscoveryResponse *resp)
{
    for (size_t i = 0; i < d->known.n; i++) {
        const struct rm_ads_kv_entry *e = &d->known.v[i];
        if (e->val && *e->val && !rm_ads_set_find(&st->cur, d->type_url, e->key))
            add_removed(resp, e->key);
    }
    for (size_t i = 0; i < d->names.n; i++) {
        const char *name = d->names.v[i].key;
        if (!rm_ads_kv_get(&d->known, name) && !rm_ads_set_find(&st->cur, d->type_url, name))
            add_removed(resp, name);
    }
}

bool rm_ads_delta_build(const struct rm_ads_delta *d, const struct rm_ads_store *st,
                        RmDeltaDiscoveryResponse *resp)
{
    if (d->state == RM_ADS_SUB_SENT) return false;
    envoy__service__discovery__v3__delta_discovery_response__init(resp);
    resp->type_url = d->type_url;
    build_upserts(d, st, resp);
    build_removals(d, st, resp);
    if (resp->n_resources || resp->n_removed_resources) return true;
    if (d->state == RM_ADS_SUB_NEW && d->wildcard) return true; /* "nothing" is an answer */
    rm_ads_delta_response_dispose(resp);
    return false;
}

void rm_ads_delta_commit(struct rm_ads_delta *d, const RmDeltaDiscoveryResponse *resp)
{
    for (size_t i = 0; i < resp->n_resources; i++)
        rm_ads_kv_put(&d->known, resp->resources[i]->name, resp->resources[i]->version);
    for (size_t i = 0; i < resp->n_removed_resources; i++) {
        const char *name = resp->removed_resources[i];
        if (rm_ads_kv_get(&d->names, name))
            rm_ads_kv_put(&d->known, name, ""); /* told: it does not exist */
        else
            rm_ads_kv_del(&d->known, name);
    }
    size_t n = resp->nonce ? strlen(resp->nonce) : 0;
    if (n >= sizeof(d->nonce)) n = sizeof(d->nonce) - 1;
    memcpy(d->nonce, resp->nonce ? resp->nonce : "", n);
    d->nonce[n] = '\0';
    rm_ads_sub_set_state(&d->state, RM_ADS_SUB_SENT);
}

void rm_ads_delta_response_dispose(RmDeltaDiscoveryResponse *resp)
{
    free(resp->resources); /* pointers, Resource and Any structs: one block */
    resp->resources = NULL;
    resp->n_resources = 0;
    for (size_t i = 0; i < resp->n_removed_resources; i++)
        free(resp->removed_resources[i]);
    free(resp->removed_resources);
    resp->removed_resources = NULL;
    resp->n_removed_resources = 0;
}
