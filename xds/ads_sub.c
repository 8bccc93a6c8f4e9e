/* Subscription state: the string map, the shared state setter, and State of the World.  See
 * ads_sub.h; Delta is in ads_delta.c. */
#include "xds/ads_sub.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/any.pb-c.h"

/* ---- string map --------------------------------------------------------------------------- */

static char *dup_or_null(const char *s)
{
    if (!s) return NULL;
    char *d = strdup(s);
    if (!d) abort();
    return d;
}

void rm_ads_kv_dispose(struct rm_ads_kv *kv)
{
    for (size_t i = 0; i < kv->n; i++) {
        free(kv->v[i].key);
        free(kv->v[i].val);
    }
    free(kv->v);
    memset(kv, 0, sizeof(*kv));
}

static size_t kv_lower_bound(const struct rm_ads_kv *kv, const char *key)
{
    size_t lo = 0, hi = kv->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(kv->v[mid].key, key) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

const struct rm_ads_kv_entry *rm_ads_kv_get(const struct rm_ads_kv *kv, const char *key)
{
    size_t i = kv_lower_bound(kv, key);
    return i < kv->n && strcmp(kv->v[i].key, key) == 0 ? &kv->v[i] : NULL;
}

void rm_ads_kv_put(struct rm_ads_kv *kv, const char *key, const char *val)
{
    size_t i = kv_lower_bound(kv, key);
    if (i < kv->n && strcmp(kv->v[i].key, key) == 0) {
        char *nv = dup_or_null(val);
        free(kv->v[i].val);
        kv->v[i].val = nv;
        return;
    }
    if (kv->n == kv->cap) {
        kv->cap = kv->cap ? 2 * kv->cap : 8;
        kv->v = realloc(kv->v, kv->cap * sizeof(*kv->v));
        if (!kv->v) abort();
    }
    memmove(&kv->v[i + 1], &kv->v[i], (kv->n - i) * sizeof(*kv->v));
    kv->v[i] = (struct rm_ads_kv_entry){dup_or_null(key), dup_or_null(val)};
    kv->n++;
}

bool rm_ads_kv_del(struct rm_ads_kv *kv, const char *key)
{
    size_t i = kv_lower_bound(kv, key);
    if (i >= kv->n || strcmp(kv->v[i].key, key) != 0) return false;
    free(kv->v[i].key);
    free(kv->v[i].val);
    memmove(&kv->v[i], &kv->v[i + 1], (kv->n - i - 1) * sizeof(*kv->v));
    kv->n--;
    return true;
}

void rm_ads_kv_keys_str(const struct rm_ads_kv *kv, size_t max, struct rm_strbuf *out)
{
    for (size_t i = 0; i < kv->n && i < max; i++)
        rm_strbuf_printf(out, "%s%s", i ? ", " : "", kv->v[i].key);
    if (kv->n > max) rm_strbuf_printf(out, ", ... (+%zu)", kv->n - max);
}

/* ---- shared ------------------------------------------------------------------------------- */

#define BIT(s) (1u << (s))
static const uint8_t legal_next[] = {
    [RM_ADS_SUB_NEW] = BIT(RM_ADS_SUB_SENT),
    [RM_ADS_SUB_SENT] = BIT(RM_ADS_SUB_ACKED) | BIT(RM_ADS_SUB_NACKED),
    [RM_ADS_SUB_ACKED] = BIT(RM_ADS_SUB_SENT),
    [RM_ADS_SUB_NACKED] = BIT(RM_ADS_SUB_SENT),
};

void rm_ads_sub_set_state(enum rm_ads_sub_state *st, enum rm_ads_sub_state to)
{
    assert(legal_next[*st] & BIT(to));
    *st = to;
}

const char *rm_ads_req_kind_name(enum rm_ads_req_kind k)
{
    static const char *const names[] = {"FIRST", "UPDATE", "ACK", "NACK", "STALE"};
    return names[k];
}

const char *rm_ads_sub_state_name(enum rm_ads_sub_state s)
{
    static const char *const names[] = {"NEW", "SENT", "ACKED", "NACKED"};
    return names[s];
}

/* ---- State of the World ------------------------------------------------------------------- */

void rm_ads_sotw_init(struct rm_ads_sotw *s, const char *type_url)
{
    memset(s, 0, sizeof(*s));
    s->type_url = dup_or_null(type_url);
    s->state = RM_ADS_SUB_NEW; /* initial */
}

void rm_ads_sotw_dispose(struct rm_ads_sotw *s)
{
    free(s->type_url);
    rm_ads_kv_dispose(&s->names);
    rm_ads_kv_dispose(&s->sent);
    memset(s, 0, sizeof(*s));
}

static void copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = src ? strlen(src) : 0;
    if (n >= cap) n = cap - 1;
    if (n) memcpy(dst, src, n);
    dst[n] = '\0';
}

/* resource_names is the whole subscription. */
static void sotw_apply_names(struct rm_ads_sotw *s, const RmDiscoveryRequest *req)
{
    rm_ads_kv_dispose(&s->names);
    bool star = false;
    for (size_t i = 0; i < req->n_resource_names; i++) {
        if (strcmp(req->resource_names[i], "*") == 0)
            star = true;
        else
            rm_ads_kv_put(&s->names, req->resource_names[i], NULL);
    }
    if (star || s->names.n) {
        s->wildcard = star;
        s->ever_named = true;
    } else {
        s->wildcard = !s->ever_named; /* legacy: [] means "*" until a name was ever set */
    }
}

static enum rm_ads_req_kind sotw_classify(struct rm_ads_sotw *s, const RmDiscoveryRequest *req)
{
    const char *nonce = req->response_nonce ? req->response_nonce : "";
    if (s->nreq == 0) return RM_ADS_REQ_FIRST;
    if (!*nonce) return RM_ADS_REQ_UPDATE;
    if (strcmp(nonce, s->nonce) != 0) return RM_ADS_REQ_STALE;
    if (s->state != RM_ADS_SUB_SENT) return RM_ADS_REQ_UPDATE; /* already answered */
    if (req->error_detail) {
        rm_ads_sub_set_state(&s->state, RM_ADS_SUB_NACKED);
        return RM_ADS_REQ_NACK;
    }
    rm_ads_sub_set_state(&s->state, RM_ADS_SUB_ACKED);
    copy_str(s->acked, sizeof(s->acked), req->version_info);
    return RM_ADS_REQ_ACK;
}

enum rm_ads_req_kind rm_ads_sotw_request(struct rm_ads_sotw *s, const RmDiscoveryRequest *req)
{
    enum rm_ads_req_kind k = sotw_classify(s, req);
    s->nreq++;
    if (k != RM_ADS_REQ_STALE) sotw_apply_names(s, req);
    return k;
}

static bool sotw_wants(const struct rm_ads_sotw *s, const char *name)
{
    return s->wildcard || rm_ads_kv_get(&s->names, name) != NULL;
}

/* Do the subscribed resources of the store differ from those of the last response? */
static bool sotw_view_changed(const struct rm_ads_sotw *s, const struct rm_ads_store *st,
                              size_t first, size_t n)
{
    size_t seen = 0;
    for (size_t i = first; i < first + n; i++) {
        const struct rm_ads_resource *r = &st->cur.v[i];
        if (!sotw_wants(s, r->name)) continue;
        const struct rm_ads_kv_entry *e = rm_ads_kv_get(&s->sent, r->name);
        if (!e || strcmp(e->val, r->version) != 0) return true;
        seen++;
    }
    return seen != s->sent.n;
}

/* One block: n pointers, then the n Any structs they point to (freed as one). */
static Google__Protobuf__Any **any_block(size_t n, Google__Protobuf__Any **anys)
{
    size_t k = n ? n : 1;
    void *blk = calloc(1, k * sizeof(Google__Protobuf__Any *) + k * sizeof(Google__Protobuf__Any));
    if (!blk) abort();
    *anys = (Google__Protobuf__Any *)(void *)((Google__Protobuf__Any **)blk + k);
    return blk;
}

bool rm_ads_sotw_build(const struct rm_ads_sotw *s, const struct rm_ads_store *st,
                       RmDiscoveryResponse *resp, char version_buf[RM_ADS_VERSION_MAX])
{
    size_t first, n = rm_ads_set_type_range(&st->cur, s->type_url, &first);
    if (s->state == RM_ADS_SUB_SENT) return false;
    bool due = sotw_view_changed(s, st, first, n) || (s->state == RM_ADS_SUB_NEW && s->wildcard);
    if (!due) return false;
    envoy__service__discovery__v3__discovery_response__init(resp);
    rm_ads_store_version_str(st, rm_ads_store_type_version(st, s->type_url), version_buf,
                             RM_ADS_VERSION_MAX);
    resp->version_info = version_buf;
    resp->type_url = s->type_url;
    Google__Protobuf__Any *anys;
    resp->resources = any_block(n, &anys);
    for (size_t i = first; i < first + n; i++) {
        const struct rm_ads_resource *r = &st->cur.v[i];
        if (!sotw_wants(s, r->name)) continue;
        Google__Protobuf__Any *a = &anys[resp->n_resources];
        google__protobuf__any__init(a);
        a->type_url = r->type_url;
        a->value.data = r->value;
        a->value.len = r->len;
        resp->resources[resp->n_resources++] = a;
    }
    return true;
}

void rm_ads_sotw_commit(struct rm_ads_sotw *s, const struct rm_ads_store *st,
                        const RmDiscoveryResponse *resp)
{
    size_t first, n = rm_ads_set_type_range(&st->cur, s->type_url, &first);
    rm_ads_kv_dispose(&s->sent);
    for (size_t i = first; i < first + n; i++) {
        const struct rm_ads_resource *r = &st->cur.v[i];
        if (sotw_wants(s, r->name)) rm_ads_kv_put(&s->sent, r->name, r->version);
    }
    copy_str(s->nonce, sizeof(s->nonce), resp->nonce);
    copy_str(s->version, sizeof(s->version), resp->version_info);
    rm_ads_sub_set_state(&s->state, RM_ADS_SUB_SENT);
}

void rm_ads_sotw_response_dispose(RmDiscoveryResponse *resp)
{
    free(resp->resources); /* the pointers and the Any structs: one block */
    resp->resources = NULL;
    resp->n_resources = 0;
}
