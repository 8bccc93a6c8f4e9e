/* EDS response validation and SotW ACK/NACK bookkeeping (see ads_eds.h). */
#include "xds/ads_eds.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/rpc/status.pb-c.h"
#include "proxy/config/pbtypes.h"
#include "proxy/upstream/cluster.h"

typedef Envoy__Config__Endpoint__V3__ClusterLoadAssignment LoadAssignment;

/* Resource <i>: unpack, check, and turn into host specs in *a. */
/* The decoded assignments of a response: bump allocation in blocks, all freed at once (not
 * field by field, and not kept in a cache after a big response). */
#define BLOCK_SIZE 65536

struct rm_eds_block {
    struct rm_eds_block *next;
    size_t used, cap;
    _Alignas(16) char data[];
};

static void *block_alloc(void *ctx, size_t n)
{
    struct rm_eds_block **head = ctx;
    n = (n + 15) & ~(size_t)15;
    struct rm_eds_block *b = *head;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > BLOCK_SIZE / 4 ? n : BLOCK_SIZE;
        struct rm_eds_block *nb = malloc(sizeof(*nb) + cap);
        if (!nb) return NULL; /* protobuf-c reports it */
        nb->used = 0;
        nb->cap = cap;
        if (b && cap != BLOCK_SIZE) { /* a big one-off: the current block keeps serving */
            nb->next = b->next;
            b->next = nb;
            nb->used = n;
            return nb->data;
        }
        nb->next = b;
        *head = b = nb;
    }
    void *p = b->data + b->used;
    b->used += n;
    return p;
}

static void block_free(void *ctx, void *p)
{
    (void)ctx; /* everything goes at once (rm_eds_response_clear) */
    (void)p;
}

/* Decoded into the response's blocks <head>. */
static int parse_one(const Google__Protobuf__Any *any, size_t i, struct rm_eds_assignment *a,
                     struct rm_eds_block **head, struct rm_error *err)
{
    char p[64];
    snprintf(p, sizeof(p), "resources[%zu]", i);
    ProtobufCMessage *m = NULL;
    ProtobufCAllocator al = {.alloc = block_alloc, .free = block_free, .allocator_data = head};
    if (rm_pb_any_unpack_with(
            any, &envoy__config__endpoint__v3__cluster_load_assignment__descriptor, &al, &m, err))
        return rm_error_prefix(err, "%s: ", p);
    a->la = (LoadAssignment *)m;
    if (!a->la->cluster_name || !a->la->cluster_name[0])
        return rm_error_set(err, "%s.cluster_name: required", p);
    a->name = a->la->cluster_name;
    if (rm_pb_check_no_unknown(m, p, err) ||
        rm_load_assignment_specs(a->la, p, &a->specs, &a->n, err))
        return rm_error_prefix(err, "ClusterLoadAssignment %s: ", a->name);
    return RM_OK;
}

/* ---- unchanged resources ---------------------------------------------------------------- */

/* MurmurHash64A (Austin Appleby, public domain): the digest of a resource's bytes. */
static uint64_t digest64(const uint8_t *p, size_t len)
{
    const uint64_t m = 0xc6a4a7935bd1e995ULL;
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ ((uint64_t)len * m);
    size_t n8 = len / 8;
    for (size_t i = 0; i < n8; i++) {
        uint64_t k;
        memcpy(&k, p + i * 8, 8);
        k *= m;
        k ^= k >> 47;
        k *= m;
        h ^= k;
        h *= m;
    }
    size_t tail = len & 7;
    if (tail) {
        for (size_t i = tail; i > 0; i--)
            h ^= (uint64_t)p[n8 * 8 + i - 1] << (8 * (i - 1));
        h *= m;
    }
    h ^= h >> 47;
    h *= m;
    h ^= h >> 47;
    return h;
}

static bool read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    uint64_t x = 0;
    for (unsigned shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return true;
        }
    }
    return false;
}

/* The last top-level field 1 (cluster_name) of a serialized ClusterLoadAssignment, read off the
 * wire; false when there is none or the bytes do not scan (the decoder will say why). */
static bool wire_name(const uint8_t *p, size_t len, const uint8_t **name, size_t *name_len)
{
    const uint8_t *end = p + len;
    bool found = false;
    while (p < end) {
        uint64_t key, v;
        if (!read_varint(&p, end, &key)) return false;
        switch (key & 7) {
        case 0:
            if (!read_varint(&p, end, &v)) return false;
            break;
        case 1:
            if (end - p < 8) return false;
            p += 8;
            break;
        case 5:
            if (end - p < 4) return false;
            p += 4;
            break;
        case 2:
            if (!read_varint(&p, end, &v) || v > (uint64_t)(end - p)) return false;
            if (key >> 3 == 1) {
                *name = p;
                *name_len = (size_t)v;
                found = true;
            }
            p += v;
            break;
        default: /* groups: not in this message */
            return false;
        }
    }
    return found;
}

/* strcmp order between the bytes <a>/<alen> and the entry's name. */
static int cmp_wire_name(const uint8_t *a, size_t alen, const struct rm_eds_seen_entry *e)
{
    int c = memcmp(a, e->name, alen < e->name_len ? alen : e->name_len);
    if (c) return c;
    return alen == e->name_len ? 0 : (alen < e->name_len ? -1 : 1);
}

static const struct rm_eds_seen_entry *seen_find(const struct rm_eds_seen *seen,
                                                 const uint8_t *name, size_t len)
{
    size_t lo = 0, hi = seen->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = cmp_wire_name(name, len, &seen->v[mid]);
        if (c == 0) return &seen->v[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

/* The type URL names a ClusterLoadAssignment, as rm_pb_any_unpack would accept it. */
static bool is_cla_url(const char *url)
{
    if (strcmp(url, RM_EDS_TYPE_URL) == 0) return true; /* what control planes send */
    const char *slash = strrchr(url, '/');
    return strcmp(slash ? slash + 1 : url,
                  envoy__config__endpoint__v3__cluster_load_assignment__descriptor.name) == 0;
}

/* Resource <any> is, byte for byte, the one <seen> holds under its name: *a says so. */
static bool try_unchanged(const Google__Protobuf__Any *any, const struct rm_eds_seen *seen,
                          struct rm_eds_assignment *a)
{
    const uint8_t *name;
    size_t name_len;
    if (!seen || !seen->n || !any->type_url || !is_cla_url(any->type_url) ||
        !wire_name(any->value.data, any->value.len, &name, &name_len))
        return false;
    const struct rm_eds_seen_entry *e = seen_find(seen, name, name_len);
    if (!e || e->len != any->value.len) return false;
    uint64_t d = digest64(any->value.data, any->value.len);
    if (d != e->digest) return false;
    *a = (struct rm_eds_assignment){
        .name = e->name, .unchanged = true, .digest = d, .len = any->value.len};
    return true;
}

/* ---- the response ------------------------------------------------------------------------- */

static int cmp_by_name(const void *x, const void *y, void *ctx)
{
    const struct rm_eds_assignment *a = ctx;
    size_t i = *(const size_t *)x, j = *(const size_t *)y;
    int c = strcmp(a[i].name, a[j].name);
    return c ? c : (i < j ? -1 : i > j);
}

/* out->by_name over the first <n> assignments; the duplicate rm_eds_response_parse reports
 * first (the earliest resource whose name an earlier one has), if any. */
static int index_names(struct rm_eds_response *out, size_t n, struct rm_error *err)
{
    bool sorted = true; /* control planes usually send resources in name order */
    for (size_t i = 0; i < n; i++) {
        out->by_name[i] = i;
        if (i && strcmp(out->a[i - 1].name, out->a[i].name) >= 0) sorted = false;
    }
    if (sorted) return RM_OK;
    qsort_r(out->by_name, n, sizeof(*out->by_name), cmp_by_name, out->a);
    size_t dup = SIZE_MAX, of = 0;
    for (size_t j = 1; j < n; j++) {
        size_t prev = out->by_name[j - 1], cur = out->by_name[j];
        bool second = strcmp(out->a[prev].name, out->a[cur].name) == 0 &&
                      (j < 2 || strcmp(out->a[out->by_name[j - 2]].name, out->a[cur].name) != 0);
        if (second && cur < dup) {
            dup = cur;
            of = prev;
        }
    }
    if (dup == SIZE_MAX) return RM_OK;
    return rm_error_set(err,
                        "ClusterLoadAssignment %s: resources[%zu]: duplicate of resources[%zu]",
                        out->a[dup].name, dup, of);
}

int rm_eds_response_parse_seen(const Envoy__Service__Discovery__V3__DiscoveryResponse *r,
                               const struct rm_eds_seen *seen, struct rm_eds_response *out,
                               struct rm_error *err)
{
    *out = (struct rm_eds_response){0};
    if (!r->type_url || strcmp(r->type_url, RM_EDS_TYPE_URL) != 0)
        return rm_error_set(err, "type_url: expected " RM_EDS_TYPE_URL ", got \"%s\"",
                            r->type_url ? r->type_url : "");
    size_t n = r->n_resources;
    out->a = calloc(n ? n : 1, sizeof(*out->a));
    out->by_name = calloc(n + 1, sizeof(*out->by_name));
    if (!out->a || !out->by_name) {
        rm_eds_response_clear(out);
        return rm_error_set(err, "out of memory");
    }
    struct rm_error perr = {{0}};
    size_t bad = n; /* the first resource that did not parse */
    for (size_t i = 0; i < n && bad == n; i++) {
        const Google__Protobuf__Any *any = r->resources[i];
        struct rm_eds_assignment *a = &out->a[out->n++];
        if (try_unchanged(any, seen, a)) continue;
        if (parse_one(any, i, a, &out->blocks, &perr)) {
            bad = i;
            continue;
        }
        a->digest = digest64(any->value.data, any->value.len);
        a->len = any->value.len;
    }
    /* as if checked one by one: a duplicate before the bad resource is reported first */
    int rc = index_names(out, bad, err);
    if (rc == RM_OK && bad == n) return RM_OK;
    if (rc == RM_OK && err) *err = perr;
    rm_eds_response_clear(out);
    return RM_ERR;
}

int rm_eds_response_parse(const Envoy__Service__Discovery__V3__DiscoveryResponse *r,
                          struct rm_eds_response *out, struct rm_error *err)
{
    return rm_eds_response_parse_seen(r, NULL, out, err);
}

void rm_eds_response_clear(struct rm_eds_response *out)
{
    for (size_t i = 0; i < out->n; i++)
        free(out->a[i].specs);
    for (struct rm_eds_block *b = out->blocks, *next; b; b = next) { /* every la */
        next = b->next;
        free(b);
    }
    free(out->a);
    free(out->by_name);
    *out = (struct rm_eds_response){0};
}

const struct rm_eds_assignment *rm_eds_response_find(const struct rm_eds_response *resp,
                                                     const char *name)
{
    if (!resp->n) return NULL;
    size_t *hint = &resp->by_name[resp->n];
    for (size_t k = *hint; k < *hint + 2 && k < resp->n; k++) { /* the last answer, its next */
        const struct rm_eds_assignment *a = &resp->a[resp->by_name[k]];
        if (strcmp(name, a->name) == 0) {
            *hint = k;
            return a;
        }
    }
    size_t lo = 0, hi = resp->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct rm_eds_assignment *a = &resp->a[resp->by_name[mid]];
        int c = strcmp(name, a->name);
        if (c == 0) {
            *hint = mid;
            return a;
        }
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

void rm_eds_seen_commit(struct rm_eds_seen *seen, const struct rm_eds_response *resp)
{
    size_t total = 0;
    for (size_t i = 0; i < resp->n; i++)
        total += strlen(resp->a[i].name) + 1;
    struct rm_eds_seen next = {
        .v = calloc(resp->n ? resp->n : 1, sizeof(*next.v)),
        .n = resp->n,
        .names = malloc(total ? total : 1),
    };
    if (!next.v || !next.names) abort();
    char *p = next.names;
    for (size_t j = 0; j < resp->n; j++) { /* by name: the table stays sorted */
        const struct rm_eds_assignment *a = &resp->a[resp->by_name[j]];
        size_t len = strlen(a->name);
        memcpy(p, a->name, len + 1); /* before the old block goes: unchanged names live there */
        next.v[j] = (struct rm_eds_seen_entry){p, len, a->digest, a->len};
        p += len + 1;
    }
    rm_eds_seen_free(seen);
    *seen = next;
}

void rm_eds_seen_free(struct rm_eds_seen *seen)
{
    free(seen->v);
    free(seen->names);
    *seen = (struct rm_eds_seen){0};
}

static int cmp_names(const void *x, const void *y, void *ctx)
{
    char *const *names = ctx;
    size_t i = *(const size_t *)x, j = *(const size_t *)y;
    int c = strcmp(names[i], names[j]);
    return c ? c : (i < j ? -1 : i > j);
}

size_t rm_eds_unique_names(char **names, size_t n)
{
    size_t *idx = calloc(n ? n : 1, sizeof(*idx));
    if (!idx) abort();
    for (size_t i = 0; i < n; i++)
        idx[i] = i;
    qsort_r(idx, n, sizeof(*idx), cmp_names, names);
    for (size_t j = 1, first = 0; j < n; j++) { /* by name, then position: first copy first */
        if (strcmp(names[idx[first]], names[idx[j]]) != 0) {
            first = j;
            continue;
        }
        free(names[idx[j]]);
        names[idx[j]] = NULL;
    }
    free(idx);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (names[i]) names[k++] = names[i];
    }
    return k;
}

/* ---- ACK / NACK ---------------------------------------------------------------------------- */

static void set_str(char **dst, const char *v)
{
    char *n = v && v[0] ? strdup(v) : NULL;
    if (v && v[0] && !n) abort();
    free(*dst);
    *dst = n;
}

void rm_ads_sotw_ack(struct rm_ads_sotw *st, const char *version, const char *nonce)
{
    set_str(&st->version, version);
    set_str(&st->nonce, nonce);
    set_str(&st->error, NULL);
}

void rm_ads_sotw_nack(struct rm_ads_sotw *st, const char *nonce, const char *why)
{
    set_str(&st->nonce, nonce);
    set_str(&st->error, why && why[0] ? why : "rejected");
}

void rm_ads_sotw_new_stream(struct rm_ads_sotw *st)
{
    set_str(&st->nonce, NULL);
    set_str(&st->error, NULL);
}

void rm_ads_sotw_fill(const struct rm_ads_sotw *st,
                      Envoy__Service__Discovery__V3__DiscoveryRequest *req,
                      struct Google__Rpc__Status *status)
{
    req->version_info = st->version ? st->version : (char *)"";
    req->response_nonce = st->nonce ? st->nonce : (char *)"";
    req->error_detail = NULL;
    if (!st->error) return;
    google__rpc__status__init(status);
    status->code = 13; /* INTERNAL, as Envoy */
    status->message = st->error;
    req->error_detail = status;
}

void rm_ads_sotw_free(struct rm_ads_sotw *st)
{
    free(st->version);
    free(st->nonce);
    free(st->error);
    *st = (struct rm_ads_sotw){0};
}
