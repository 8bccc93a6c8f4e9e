/* Hosts and host sets (see host.h). */
#include "proxy/upstream/host.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "proxy/core/error.h"

/* ---- addresses ---------------------------------------------------------------------------- */

void rm_sockaddr_str(const struct sockaddr *sa, char *buf, size_t len)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)sa;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
        snprintf(buf, len, "%s:%u", ip, ntohs(a->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)sa;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
        snprintf(buf, len, "[%s]:%u", ip, ntohs(a->sin6_port));
    } else if (sa->sa_family == AF_UNIX) {
        const struct sockaddr_un *a = (const void *)sa;
        bool abstract = a->sun_path[0] == 0;
        int n = (int)strnlen(a->sun_path + abstract, sizeof(a->sun_path) - abstract);
        snprintf(buf, len, "%s%.*s", abstract ? "@" : "", n, a->sun_path + abstract);
    } else {
        snprintf(buf, len, "unknown");
    }
}

int rm_sockaddr_cmp(const struct sockaddr *a, const struct sockaddr *b)
{
    if (a->sa_family != b->sa_family) return a->sa_family < b->sa_family ? -1 : 1;
    int c = 0;
    unsigned pa = 0, pb = 0;
    if (a->sa_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        c = memcmp(&x->sin_addr, &y->sin_addr, sizeof(x->sin_addr));
        pa = ntohs(x->sin_port);
        pb = ntohs(y->sin_port);
    } else if (a->sa_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        c = memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr));
        if (!c && x->sin6_scope_id != y->sin6_scope_id)
            c = x->sin6_scope_id < y->sin6_scope_id ? -1 : 1;
        pa = ntohs(x->sin6_port);
        pb = ntohs(y->sin6_port);
    } else if (a->sa_family == AF_UNIX) {
        const struct sockaddr_un *x = (const void *)a, *y = (const void *)b;
        c = memcmp(x->sun_path, y->sun_path, sizeof(x->sun_path));
    }
    if (c) return c;
    return pa == pb ? 0 : (pa < pb ? -1 : 1);
}

/* Copy an IPv4/IPv6 address into the compact form; false for any other family (a pipe's is
 * placed by rm_host_new). */
static bool addr_copy(union rm_host_addr *dst, uint8_t *dst_len, const struct sockaddr_storage *src,
                      socklen_t len)
{
    size_t want = src->ss_family == AF_INET    ? sizeof(struct sockaddr_in)
                  : src->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                               : 0;
    if (!want || len < want) return false;
    memset(dst, 0, sizeof(*dst));
    memcpy(dst, src, want);
    *dst_len = (uint8_t)want;
    return true;
}

/* ---- hosts -------------------------------------------------------------------------------- */

/* One allocation: the host, its address string, then its hostname (then, for a pipe, its
 * sockaddr_un). */
struct rm_host *rm_host_new(const struct rm_host_spec *s)
{
    union rm_host_addr addr;
    uint8_t addr_len;
    bool pipe = s->addr.ss_family == AF_UNIX;
    if (pipe) {
        if (s->addr_len > sizeof(struct sockaddr_un) ||
            s->addr_len <= offsetof(struct sockaddr_un, sun_path))
            return NULL;
        addr_len = (uint8_t)s->addr_len;
    } else if (!addr_copy(&addr, &addr_len, &s->addr, s->addr_len)) {
        return NULL;
    }
    char as[RM_SOCKADDR_STRLEN];
    rm_sockaddr_str((const struct sockaddr *)&s->addr, as, sizeof(as));
    size_t as_len = strlen(as) + 1;
    size_t hn_len = s->hostname && s->hostname[0] ? strlen(s->hostname) + 1 : 0;
    size_t un_off = (sizeof(struct rm_host) + as_len + hn_len + 7) & ~(size_t)7;
    struct rm_host *h =
        calloc(1, pipe ? un_off + sizeof(struct sockaddr_un) : sizeof(*h) + as_len + hn_len);
    if (!h) return NULL;
    atomic_init(&h->refs, 1);
    if (pipe) {
        memcpy((char *)h + un_off, &s->addr, sizeof(struct sockaddr_un));
        h->addr.un.family = AF_UNIX;
        h->addr.un.off = (uint16_t)un_off;
    } else {
        h->addr = addr;
    }
    h->addr_len = addr_len;
    memcpy(h->addr_str, as, as_len);
    if (hn_len) {
        memcpy(h->addr_str + as_len, s->hostname, hn_len);
        h->hostname = h->addr_str + as_len;
    }
    h->weight = s->weight ? s->weight : 1;
    h->health = (uint8_t)s->health;
    h->locality_idx = rm_host_locality(s->locality_idx);
    return h;
}

struct rm_host *rm_host_ref(struct rm_host *h)
{
    atomic_fetch_add_explicit(&h->refs, 1, memory_order_relaxed);
    return h;
}

void rm_host_unref(struct rm_host *h)
{
    if (!h || atomic_fetch_sub_explicit(&h->refs, 1, memory_order_acq_rel) != 1) return;
    rm_outlier_host_dispose(&h->outlier);
    free(h); /* its strings with it */
}

/* Whether host <h> is what <s> describes (same address and attributes). */
static bool host_matches(const struct rm_host *h, const struct rm_host_spec *s)
{
    const char *hn = s->hostname && s->hostname[0] ? s->hostname : NULL;
    if (rm_sockaddr_cmp(rm_host_sockaddr(h, NULL), (const struct sockaddr *)&s->addr) != 0 ||
        h->weight != (s->weight ? s->weight : 1) || h->health != s->health ||
        h->locality_idx != rm_host_locality(s->locality_idx))
        return false;
    if (!hn || !h->hostname) return !hn && !h->hostname;
    return strcmp(hn, h->hostname) == 0;
}

/* ---- sets --------------------------------------------------------------------------------- */

static struct rm_host_set *set_alloc(size_t n)
{
    struct rm_host_set *hs = calloc(1, sizeof(*hs) + n * sizeof(hs->hosts[0]));
    if (hs) atomic_init(&hs->refs, 1);
    return hs;
}

/* Weights: the total and whether they differ.  After hosts[] is filled. */
static void set_weights(struct rm_host_set *hs)
{
    hs->total_weight = 0;
    hs->weighted = false;
    for (size_t i = 0; i < hs->n; i++) {
        hs->total_weight += hs->hosts[i]->weight;
        hs->weighted |= hs->hosts[i]->weight != hs->hosts[0]->weight;
    }
}

struct rm_host_set *rm_host_set_new(struct rm_host *const *hosts, size_t n)
{
    struct rm_host_set *hs = set_alloc(n);
    if (!hs) return NULL;
    for (size_t i = 0; i < n; i++)
        hs->hosts[i] = rm_host_ref(hosts[i]);
    hs->n = n;
    set_weights(hs);
    return hs;
}

struct rm_host_set *rm_host_set_ref(struct rm_host_set *hs)
{
    atomic_fetch_add_explicit(&hs->refs, 1, memory_order_relaxed);
    return hs;
}

void rm_host_set_unref(struct rm_host_set *hs)
{
    if (!hs || atomic_fetch_sub_explicit(&hs->refs, 1, memory_order_acq_rel) != 1) return;
    for (size_t i = 0; i < hs->n; i++)
        rm_host_unref(hs->hosts[i]);
    free(hs);
}

/* ---- diff --------------------------------------------------------------------------------- */

static int cmp_host_addr(const void *a, const void *b)
{
    const struct rm_host *x = *(struct rm_host *const *)a, *y = *(struct rm_host *const *)b;
    return rm_sockaddr_cmp(rm_host_sockaddr(x, NULL), rm_host_sockaddr(y, NULL));
}

/* Wanted entries sorted by address, ties by position (so the first of duplicates comes first). */
struct want_ref {
    const struct rm_host_spec *s;
    size_t pos;
};

static int cmp_want(const void *a, const void *b)
{
    const struct want_ref *x = a, *y = b;
    int c =
        rm_sockaddr_cmp((const struct sockaddr *)&x->s->addr, (const struct sockaddr *)&y->s->addr);
    if (c) return c;
    return x->pos == y->pos ? 0 : (x->pos < y->pos ? -1 : 1);
}

/* The host of <sorted> (cur's hosts by address) at <addr>, or NULL. */
static struct rm_host *find_host(struct rm_host **sorted, size_t n,
                                 const struct sockaddr_storage *addr)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = rm_sockaddr_cmp((const struct sockaddr *)addr, rm_host_sockaddr(sorted[mid], NULL));
        if (c == 0) return sorted[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

/* keep[i]: want[i] is the first of its address.  Returns the number of unique entries. */
static size_t mark_unique(const struct rm_host_spec *want, size_t n, struct want_ref *tmp,
                          bool *keep)
{
    for (size_t i = 0; i < n; i++)
        tmp[i] = (struct want_ref){&want[i], i};
    qsort(tmp, n, sizeof(*tmp), cmp_want);
    size_t unique = 0;
    for (size_t i = 0; i < n; i++) {
        bool first = i == 0 || rm_sockaddr_cmp((const struct sockaddr *)&tmp[i].s->addr,
                                               (const struct sockaddr *)&tmp[i - 1].s->addr) != 0;
        keep[tmp[i].pos] = first;
        unique += first;
    }
    return unique;
}

/* Fill <out> (allocated for <unique> hosts) from the kept wants, reusing hosts of <sorted>.
 * Returns how many were reused, or -1 when out of memory. */
static long fill_set(struct rm_host_set *out, const struct rm_host_spec *want, size_t n,
                     const bool *keep, struct rm_host **sorted, size_t n_cur)
{
    long reused = 0;
    for (size_t i = 0; i < n; i++) {
        if (!keep[i]) continue;
        struct rm_host *h = find_host(sorted, n_cur, &want[i].addr);
        if (h && host_matches(h, &want[i])) {
            out->hosts[out->n++] = rm_host_ref(h);
            reused++;
            continue;
        }
        h = rm_host_new(&want[i]);
        if (!h) return -1;
        out->hosts[out->n++] = h;
    }
    return reused;
}

int rm_host_set_diff(const struct rm_host_set *cur, const struct rm_host_spec *want, size_t n,
                     struct rm_host_set **out)
{
    *out = NULL;
    size_t n_cur = cur ? cur->n : 0;
    struct want_ref *tmp = calloc(n ? n : 1, sizeof(*tmp));
    bool *keep = calloc(n ? n : 1, sizeof(*keep));
    struct rm_host **sorted = calloc(n_cur ? n_cur : 1, sizeof(*sorted));
    struct rm_host_set *hs = NULL;
    int rc = RM_ERR;
    if (!tmp || !keep || !sorted) goto done;
    if (n_cur) memcpy(sorted, cur->hosts, n_cur * sizeof(*sorted));
    qsort(sorted, n_cur, sizeof(*sorted), cmp_host_addr);
    size_t unique = mark_unique(want, n, tmp, keep);
    hs = set_alloc(unique);
    if (!hs) goto done;
    long reused = fill_set(hs, want, n, keep, sorted, n_cur);
    if (reused < 0) goto done;
    set_weights(hs);
    if ((size_t)reused == unique && unique == n_cur && !(cur && cur->has_logical)) {
        rc = RM_HOST_SET_SAME; /* every current host is wanted, nothing else */
        goto done;
    }
    *out = hs;
    hs = NULL;
    rc = RM_HOST_SET_CHANGED;
done:
    rm_host_set_unref(hs);
    free(tmp);
    free(keep);
    free(sorted);
    return rc;
}

int rm_host_set_logical(const struct rm_host_set *cur, const struct rm_host_spec *want,
                        struct rm_host_set **out)
{
    *out = NULL;
    bool have = cur && cur->n == 1 && cur->has_logical;
    if (have && rm_sockaddr_cmp(&cur->logical->addr.sa, (const struct sockaddr *)&want->addr) == 0)
        return RM_HOST_SET_SAME;
    struct rm_host_logical lg;
    if (!addr_copy(&lg.addr, &lg.len, &want->addr, want->addr_len)) return RM_ERR;
    rm_sockaddr_str(&lg.addr.sa, lg.str, sizeof(lg.str));
    struct rm_host *h = have ? rm_host_ref(cur->hosts[0]) : rm_host_new(want);
    if (!h) return RM_ERR;
    /* the logical address after hosts[1] */
    struct rm_host_set *hs = calloc(1, sizeof(*hs) + sizeof(hs->hosts[0]) + sizeof(lg));
    if (!hs) {
        rm_host_unref(h);
        return RM_ERR;
    }
    atomic_init(&hs->refs, 1);
    hs->hosts[0] = h; /* our reference */
    hs->n = 1;
    set_weights(hs);
    hs->has_logical = true;
    hs->logical = (struct rm_host_logical *)(void *)&hs->hosts[1];
    *hs->logical = lg;
    *out = hs;
    return RM_HOST_SET_CHANGED;
}

struct rm_host_spec *rm_host_set_specs(const struct rm_host_set *hs)
{
    size_t n = hs ? hs->n : 0;
    struct rm_host_spec *v = calloc(n + 1, sizeof(*v));
    if (!v) abort();
    for (size_t i = 0; i < n; i++) {
        const struct rm_host *h = hs->hosts[i];
        memcpy(&v[i].addr, rm_host_sockaddr(h, &v[i].addr_len), h->addr_len);
        v[i].hostname = h->hostname;
        v[i].weight = h->weight;
        v[i].health = (enum rm_health)h->health;
        v[i].locality_idx = h->locality_idx;
    }
    return v;
}
