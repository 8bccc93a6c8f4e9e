/* The secrets taken over SDS (see sds_store.h). */
#include "xds/sds_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"

#include "proxy/admin/stats.h"
#include "proxy/config/pbutil.h"
#include "proxy/core/strmap.h"

enum {
    SDS_UPDATE_ATTEMPT,
    SDS_UPDATE_SUCCESS,
    SDS_UPDATE_REJECTED,
    SDS_INIT_FETCH_TIMEOUT,
    SDS_VERSION,
    SDS__COUNT
};
static const struct rm_stat_def sds_defs[SDS__COUNT] = {
    [SDS_UPDATE_ATTEMPT] = {"update_attempt", RM_COUNTER},
    [SDS_UPDATE_SUCCESS] = {"update_success", RM_COUNTER},
    [SDS_UPDATE_REJECTED] = {"update_rejected", RM_COUNTER},
    [SDS_INIT_FETCH_TIMEOUT] = {"init_fetch_timeout", RM_COUNTER},
    [SDS_VERSION] = {"version", RM_GAUGE},
};

/** A name of the set and what arrived for it. */
struct entry {
    struct rm_pb_box *pb; /* the Secret, or NULL: not arrived */
    char *version;
    uint64_t updated_ms;    /* ms since the epoch */
    struct rm_stats *stats; /* sds.<name>. (a reference) */
    bool timed_out;         /* init_fetch_timeout was counted */
};

typedef Envoy__Extensions__TransportSockets__Tls__V3__Secret Secret;

struct rm_sds_store {
    struct rm_strmap by_name; /* name -> struct entry */
    struct rm_secrets *table; /* a reference, or NULL */
};

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

struct rm_sds_store *rm_sds_store_new(void)
{
    struct rm_sds_store *s = calloc(1, sizeof(*s));
    if (!s) abort();
    return s;
}

static void entry_free(struct entry *e)
{
    rm_pb_box_unref(e->pb);
    free(e->version);
    rm_stats_release(e->stats);
    free(e);
}

void rm_sds_store_free(struct rm_sds_store *s)
{
    if (!s) return;
    size_t it;
    for (struct rm_strmap_ent *e = rm_strmap_first(&s->by_name, &it); e;
         e = rm_strmap_next(&s->by_name, e, &it))
        entry_free(e->value);
    rm_strmap_clear(&s->by_name);
    rm_secrets_unref(s->table);
    free(s);
}

static const char *box_name(const struct rm_pb_box *b)
{
    return ((const Secret *)b->m)->name;
}

/* The table of what arrived with <extra>[<n>] over it (replacing the arrived ones of their
 * names). */
static struct rm_secrets *make_table(const struct rm_sds_store *s, struct rm_pb_box *const *extra,
                                     size_t n)
{
    struct rm_pb_box **v = calloc(s->by_name.n + n + 1, sizeof(*v));
    if (!v) abort();
    size_t k = 0, it;
    for (struct rm_strmap_ent *e = rm_strmap_first(&s->by_name, &it); e;
         e = rm_strmap_next(&s->by_name, e, &it)) {
        const struct entry *en = e->value;
        bool replaced = false;
        for (size_t i = 0; i < n && !replaced; i++)
            replaced = strcmp(box_name(extra[i]), e->key) == 0;
        if (en->pb && !replaced) v[k++] = en->pb;
    }
    for (size_t i = 0; i < n; i++)
        v[k++] = extra[i];
    struct rm_secrets *t = rm_secrets_new_boxed(v, k);
    free(v);
    return t;
}

void rm_sds_store_sync(struct rm_sds_store *s, const struct rm_sds_refs *refs, size_t *added,
                       size_t *removed)
{
    size_t na = 0, nr = 0, it;
    for (size_t i = 0; refs && i < refs->n; i++) {
        const char *name = refs->v[i].name;
        if (rm_strmap_get(&s->by_name, name)) continue;
        struct entry *e = calloc(1, sizeof(*e));
        if (!e) abort();
        char prefix[300];
        snprintf(prefix, sizeof(prefix), "sds.%s.", name);
        e->stats = rm_stats_get(prefix, sds_defs, SDS__COUNT);
        rm_strmap_put(&s->by_name, name, e);
        na++;
    }
    const char **gone = calloc(s->by_name.n + 1, sizeof(*gone));
    if (!gone) abort();
    for (struct rm_strmap_ent *e = rm_strmap_first(&s->by_name, &it); e;
         e = rm_strmap_next(&s->by_name, e, &it)) {
        if (!rm_sds_refs_has(refs, e->key)) gone[nr++] = e->key;
    }
    bool held = false;
    for (size_t i = 0; i < nr; i++) {
        struct entry *e = rm_strmap_del(&s->by_name, gone[i]);
        held |= e->pb != NULL;
        entry_free(e);
    }
    free(gone);
    if (held) rm_sds_store_set_table(s, make_table(s, NULL, 0));
    if (added) *added = na;
    if (removed) *removed = nr;
}

bool rm_sds_store_has(const struct rm_sds_store *s, const char *name)
{
    return rm_strmap_get(&s->by_name, name) != NULL;
}

bool rm_sds_store_arrived(const struct rm_sds_store *s, const char *name)
{
    const struct entry *e = rm_strmap_get(&s->by_name, name);
    return e && e->pb;
}

bool rm_sds_store_ready(const struct rm_sds_store *s, const struct rm_sds_refs *r)
{
    for (size_t i = 0; r && i < r->n; i++) {
        if (!rm_sds_store_arrived(s, r->v[i].name)) return false;
    }
    return true;
}

bool rm_sds_store_waited_out(const struct rm_sds_store *s, const struct rm_sds_refs *r,
                             uint64_t waited)
{
    for (size_t i = 0; r && i < r->n; i++) {
        uint32_t t = r->v[i].src.init_timeout_ms;
        if (!rm_sds_store_arrived(s, r->v[i].name) && (t == 0 || waited < t)) return false;
    }
    return true;
}

struct rm_secrets *rm_sds_store_table(const struct rm_sds_store *s)
{
    return s->table;
}

struct rm_secrets *rm_sds_store_candidate(const struct rm_sds_store *s,
                                          struct rm_pb_box *const *boxes, size_t n)
{
    return make_table(s, boxes, n);
}

void rm_sds_store_accept(struct rm_sds_store *s, const char *name, struct rm_pb_box *box,
                         const char *version)
{
    struct entry *e = rm_strmap_get(&s->by_name, name);
    if (!e) {
        rm_pb_box_unref(box);
        return;
    }
    rm_pb_box_unref(e->pb);
    e->pb = box;
    free(e->version);
    if (!(e->version = strdup(version ? version : ""))) abort();
    e->updated_ms = wall_ms();
    rm_stat_inc(e->stats, SDS_UPDATE_ATTEMPT);
    rm_stat_inc(e->stats, SDS_UPDATE_SUCCESS);
    rm_stat_set(e->stats, SDS_VERSION, (int64_t)version_hash(version));
}

void rm_sds_store_set_table(struct rm_sds_store *s, struct rm_secrets *table)
{
    rm_secrets_unref(s->table);
    s->table = table;
}

static void count_one(struct entry *e, enum rm_sds_stat stat)
{
    rm_stat_inc(e->stats, SDS_UPDATE_ATTEMPT);
    rm_stat_inc(e->stats, stat == RM_SDS_UPDATE_SUCCESS ? SDS_UPDATE_SUCCESS : SDS_UPDATE_REJECTED);
}

void rm_sds_store_count(struct rm_sds_store *s, const char *name, enum rm_sds_stat stat)
{
    if (name) {
        struct entry *e = rm_strmap_get(&s->by_name, name);
        if (e) count_one(e, stat);
        return;
    }
    size_t it;
    for (struct rm_strmap_ent *e = rm_strmap_first(&s->by_name, &it); e;
         e = rm_strmap_next(&s->by_name, e, &it))
        count_one(e->value, stat);
}

static void count_timeout(struct entry *e)
{
    if (!e || e->pb || e->timed_out) return;
    e->timed_out = true;
    rm_stat_inc(e->stats, SDS_INIT_FETCH_TIMEOUT);
}

void rm_sds_store_count_timeouts(struct rm_sds_store *s, const struct rm_sds_refs *r)
{
    if (r) {
        for (size_t i = 0; i < r->n; i++)
            count_timeout(rm_strmap_get(&s->by_name, r->v[i].name));
        return;
    }
    size_t it;
    for (struct rm_strmap_ent *e = rm_strmap_first(&s->by_name, &it); e;
         e = rm_strmap_next(&s->by_name, e, &it))
        count_timeout(e->value);
}

static int cmp_res(const void *a, const void *b)
{
    return strcmp(((const struct rm_dyn_res *)a)->name, ((const struct rm_dyn_res *)b)->name);
}

size_t rm_sds_store_dump(const struct rm_sds_store *s, struct rm_dyn_res *out)
{
    size_t n = 0, it;
    for (struct rm_strmap_ent *e = rm_strmap_first(&s->by_name, &it); e;
         e = rm_strmap_next(&s->by_name, e, &it)) {
        const struct entry *en = e->value;
        if (en->pb) out[n++] = (struct rm_dyn_res){e->key, en->pb, en->version, en->updated_ms};
    }
    qsort(out, n, sizeof(*out), cmp_res);
    return n;
}

size_t rm_sds_store_count_names(const struct rm_sds_store *s)
{
    return s->by_name.n;
}
