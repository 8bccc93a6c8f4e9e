/* The control plane's resource store: see ads_store.h. */
#include "xds/ads_store.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q) abort();
    return q;
}

static char *xstrdup(const char *s)
{
    char *d = strdup(s);
    if (!d) abort();
    return d;
}

/* ---- sets --------------------------------------------------------------------------------- */

void rm_ads_set_init(struct rm_ads_set *s)
{
    memset(s, 0, sizeof(*s));
}

static void resource_dispose(struct rm_ads_resource *r)
{
    free(r->type_url);
    free(r->name);
    free(r->value);
    free(r->origin);
}

void rm_ads_set_dispose(struct rm_ads_set *s)
{
    for (size_t i = 0; i < s->n; i++)
        resource_dispose(&s->v[i]);
    free(s->v);
    rm_ads_set_init(s);
}

static int key_cmp(const char *ta, const char *na, const char *tb, const char *nb)
{
    int c = strcmp(ta, tb);
    return c ? c : strcmp(na, nb);
}

/* Index of the first resource not below (type_url, name). */
static size_t lower_bound(const struct rm_ads_set *s, const char *type_url, const char *name)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (key_cmp(s->v[mid].type_url, s->v[mid].name, type_url, name) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

const struct rm_ads_resource *rm_ads_set_find(const struct rm_ads_set *s, const char *type_url,
                                              const char *name)
{
    size_t i = lower_bound(s, type_url, name);
    if (i < s->n && key_cmp(s->v[i].type_url, s->v[i].name, type_url, name) == 0) return &s->v[i];
    return NULL;
}

size_t rm_ads_set_type_range(const struct rm_ads_set *s, const char *type_url, size_t *first)
{
    size_t i = lower_bound(s, type_url, "");
    size_t j = i;
    while (j < s->n && strcmp(s->v[j].type_url, type_url) == 0)
        j++;
    *first = i;
    return j - i;
}

void rm_ads_version_of(const uint8_t *p, size_t n, char out[RM_ADS_VERSION_LEN + 1])
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    snprintf(out, RM_ADS_VERSION_LEN + 1, "%016" PRIx64, h);
}

int rm_ads_set_add(struct rm_ads_set *s, const char *type_url, const char *name,
                   const uint8_t *value, size_t len, const char *origin, struct rm_error *err)
{
    size_t i = lower_bound(s, type_url, name);
    if (i < s->n && key_cmp(s->v[i].type_url, s->v[i].name, type_url, name) == 0)
        return rm_error_set(err, "%s: %s \"%s\" is defined twice (also in %s)",
                            origin ? origin : "?", rm_ads_type_short(type_url), name,
                            s->v[i].origin ? s->v[i].origin : "?");
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 16;
        s->v = xrealloc(s->v, s->cap * sizeof(*s->v));
    }
    memmove(&s->v[i + 1], &s->v[i], (s->n - i) * sizeof(*s->v));
    s->n++;
    struct rm_ads_resource *r = &s->v[i];
    memset(r, 0, sizeof(*r));
    r->type_url = xstrdup(type_url);
    r->name = xstrdup(name);
    if (len) {
        r->value = xrealloc(NULL, len);
        memcpy(r->value, value, len);
    }
    r->len = len;
    rm_ads_version_of(value, len, r->version);
    r->origin = origin ? xstrdup(origin) : NULL;
    return RM_OK;
}

/* ---- store -------------------------------------------------------------------------------- */

void rm_ads_store_init(struct rm_ads_store *st, const char *prefix)
{
    memset(st, 0, sizeof(*st));
    rm_ads_set_init(&st->cur);
    st->version = 0;
    snprintf(st->prefix, sizeof(st->prefix), "%s", prefix ? prefix : "");
}

void rm_ads_store_dispose(struct rm_ads_store *st)
{
    rm_ads_set_dispose(&st->cur);
    for (size_t i = 0; i < st->ntypes; i++)
        free(st->types[i].type_url);
    free(st->types);
    st->types = NULL;
    st->ntypes = 0;
}

static struct rm_ads_type_version *type_entry(struct rm_ads_store *st, const char *type_url)
{
    for (size_t i = 0; i < st->ntypes; i++)
        if (strcmp(st->types[i].type_url, type_url) == 0) return &st->types[i];
    st->types = xrealloc(st->types, (st->ntypes + 1) * sizeof(*st->types));
    st->types[st->ntypes] = (struct rm_ads_type_version){xstrdup(type_url), st->version};
    return &st->types[st->ntypes++];
}

uint64_t rm_ads_store_type_version(const struct rm_ads_store *st, const char *type_url)
{
    for (size_t i = 0; i < st->ntypes; i++)
        if (strcmp(st->types[i].type_url, type_url) == 0) return st->types[i].version;
    return 0;
}

const char *rm_ads_store_version_str(const struct rm_ads_store *st, uint64_t n, char *buf,
                                     size_t len)
{
    snprintf(buf, len, "%s%" PRIu64, st->prefix, n);
    return buf;
}

static void diff_add(struct rm_ads_store *st, struct rm_ads_diff *d,
                     const struct rm_ads_resource *r, enum rm_ads_change_kind kind)
{
    const char *type_url = type_entry(st, r->type_url)->type_url;
    if (!d) return;
    if (d->n == d->cap) {
        d->cap = d->cap ? 2 * d->cap : 8;
        d->v = xrealloc(d->v, d->cap * sizeof(*d->v));
    }
    d->v[d->n++] = (struct rm_ads_change){type_url, xstrdup(r->name), kind};
}

static bool same_bytes(const struct rm_ads_resource *a, const struct rm_ads_resource *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->value, b->value, a->len) == 0);
}

/* Walk both sorted sets like a merge; record every change (types get entries as a side
 * effect, so that their versions can be bumped).  Returns the number of changes. */
static size_t compare_sets(struct rm_ads_store *st, const struct rm_ads_set *old,
                           const struct rm_ads_set *next, struct rm_ads_diff *d)
{
    size_t i = 0, j = 0, changes = 0;
    while (i < old->n || j < next->n) {
        int c = i == old->n    ? 1
                : j == next->n ? -1
                               : key_cmp(old->v[i].type_url, old->v[i].name, next->v[j].type_url,
                                         next->v[j].name);
        if (c < 0) {
            diff_add(st, d, &old->v[i++], RM_ADS_REMOVED);
        } else if (c > 0) {
            diff_add(st, d, &next->v[j++], RM_ADS_ADDED);
        } else {
            bool same = same_bytes(&old->v[i], &next->v[j]);
            if (!same) diff_add(st, d, &next->v[j], RM_ADS_MODIFIED);
            i++, j++;
            if (same) continue;
        }
        changes++;
    }
    return changes;
}

static void bump_types(struct rm_ads_store *st, const struct rm_ads_set *old,
                       const struct rm_ads_set *next)
{
    for (size_t t = 0; t < st->ntypes; t++) {
        const char *url = st->types[t].type_url;
        size_t fo, fn;
        size_t no = rm_ads_set_type_range(old, url, &fo);
        size_t nn = rm_ads_set_type_range(next, url, &fn);
        bool changed = no != nn;
        for (size_t k = 0; !changed && k < no; k++)
            changed = strcmp(old->v[fo + k].name, next->v[fn + k].name) != 0 ||
                      !same_bytes(&old->v[fo + k], &next->v[fn + k]);
        if (changed) st->types[t].version = st->version;
    }
}

size_t rm_ads_store_replace(struct rm_ads_store *st, struct rm_ads_set *next,
                            struct rm_ads_diff *diff)
{
    struct rm_ads_diff local = {0};
    size_t changes = compare_sets(st, &st->cur, next, diff ? diff : &local);
    rm_ads_diff_dispose(&local);
    if (changes == 0) {
        rm_ads_set_dispose(next);
        return 0;
    }
    st->version++;
    bump_types(st, &st->cur, next);
    rm_ads_set_dispose(&st->cur);
    st->cur = *next;
    rm_ads_set_init(next);
    return changes;
}

void rm_ads_diff_dispose(struct rm_ads_diff *d)
{
    for (size_t i = 0; i < d->n; i++)
        free(d->v[i].name);
    free(d->v);
    memset(d, 0, sizeof(*d));
}

const char *rm_ads_type_short(const char *type_url)
{
    const char *dot = strrchr(type_url, '.');
    const char *slash = strrchr(type_url, '/');
    if (dot && (!slash || dot > slash)) return dot + 1;
    return slash ? slash + 1 : type_url;
}
