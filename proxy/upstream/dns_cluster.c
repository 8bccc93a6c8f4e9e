/* DNS clusters on the main thread (see dns_cluster.h). */
#include "proxy/upstream/dns_cluster.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proxy/core/log.h"
#include "proxy/core/loop.h"

struct dns_cluster;

/* One endpoint of a DNS cluster: its name's resolutions and last good answer. */
struct dns_target {
    struct dns_cluster *dc;
    const struct rm_dns_target *cfg;
    struct rm_dns_query *q;         /* in flight, or NULL */
    struct rm_timer timer;          /* next resolution */
    struct sockaddr_storage *addrs; /* last good answer, with the port; owned */
    socklen_t *lens;
    size_t n_addrs;
    uint32_t failures; /* consecutive */
    bool answered;     /* first answer or failure seen */
    bool failing;      /* the last resolution failed (logged once) */
};

struct dns_cluster {
    struct rm_dns_clusters *m;
    struct rm_cluster *c;
    struct rm_dns_resolver *resolver; /* the shared one, or own_resolver */
    struct rm_dns_resolver *own_resolver;
    struct dns_target *targets;
    size_t n_targets, n_answered;
};

struct rm_dns_clusters {
    struct rm_loop *loop;
    struct rm_dns_config shared_cfg;
    struct rm_dns_resolver *shared; /* created on first use */
    struct dns_cluster *clusters;
    size_t n_clusters, n_waiting; /* clusters not initialized yet */
    rm_dns_publish_fn publish;
    void (*on_init)(void *ctx);
    void *ctx;
    uint64_t rng;
};

static void resolve(struct dns_target *t);

/* ---- helpers ------------------------------------------------------------------------------ */

static uint64_t next_random(struct rm_dns_clusters *m)
{
    uint64_t x = m->rng; /* xorshift64* */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    m->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static void set_port(struct sockaddr_storage *ss, uint16_t port)
{
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons(port);
    else if (ss->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
}

/* ---- membership --------------------------------------------------------------------------- */

static struct rm_host_spec target_spec(const struct dns_target *t, size_t i)
{
    return (struct rm_host_spec){
        .addr = t->addrs[i],
        .addr_len = t->lens[i],
        .hostname = t->cfg->hostname,
        .weight = t->cfg->weight,
        .health = t->cfg->health,
        .locality_idx = t->cfg->locality_idx,
    };
}

/* The membership every target's last good answer gives, diffed against the current set. */
static int wanted_set(struct dns_cluster *dc, struct rm_host_set **out)
{
    struct rm_cluster *c = dc->c;
    if (c->dns->logical) {
        const struct dns_target *t = &dc->targets[0];
        struct rm_host_spec s = target_spec(t, 0);
        return rm_host_set_logical(c->hs, &s, out);
    }
    size_t total = 0;
    for (size_t i = 0; i < dc->n_targets; i++)
        total += dc->targets[i].n_addrs;
    struct rm_host_spec *want = calloc(total ? total : 1, sizeof(*want));
    if (!want) return RM_ERR;
    size_t n = 0;
    for (size_t i = 0; i < dc->n_targets; i++) {
        for (size_t k = 0; k < dc->targets[i].n_addrs; k++)
            want[n++] = target_spec(&dc->targets[i], k);
    }
    int rc = rm_host_set_diff(c->hs, want, n, out);
    free(want);
    return rc;
}

/* A target has a new good answer: rebuild the cluster's membership and publish it if it
 * changed. */
static void update_membership(struct dns_cluster *dc)
{
    struct rm_cluster *c = dc->c;
    struct rm_host_set *hs = NULL;
    int rc = wanted_set(dc, &hs);
    if (!rm_cluster_take_diff(c, rc, hs)) return;
    if (c->hs->has_logical)
        rm_log_info("cluster %s: new connections go to %s", c->name, c->hs->logical->str);
    else
        rm_log_info("cluster %s: %zu host(s)", c->name, c->hs->n);
    dc->m->publish(dc->m->ctx, c, c->hs);
}

/* ---- resolutions -------------------------------------------------------------------------- */

/* Keep the addresses of a good answer (STRICT_DNS: all, LOGICAL_DNS: the first), with the
 * target's port.  False when out of memory. */
static bool keep_answer(struct dns_target *t, const struct rm_dns_answer *a)
{
    size_t n = t->dc->c->dns->logical ? 1 : a->n;
    struct sockaddr_storage *addrs = calloc(n, sizeof(*addrs));
    socklen_t *lens = calloc(n, sizeof(*lens));
    if (!addrs || !lens) {
        free(addrs);
        free(lens);
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        addrs[i] = a->addrs[i].sa;
        lens[i] = a->addrs[i].len;
        set_port(&addrs[i], t->cfg->port);
    }
    free(t->addrs);
    free(t->lens);
    t->addrs = addrs;
    t->lens = lens;
    t->n_addrs = n;
    return true;
}

static void log_failure(struct dns_target *t, const struct rm_dns_answer *a)
{
    const char *why = a->status != RM_DNS_OK ? (a->error ? a->error : "failed")
                      : a->error             ? a->error
                                             : "no address";
    if (!t->failing)
        rm_log_warn("cluster %s: DNS resolution of %s failed: %s%s", t->dc->c->name, t->cfg->name,
                    why, t->n_addrs ? " (keeping the last good addresses)" : "");
    t->failing = true;
}

static void on_refresh(struct rm_timer *tm)
{
    resolve(rm_container_of(tm, struct dns_target, timer));
}

static void schedule(struct dns_target *t, uint32_t ttl_s)
{
    struct rm_dns_clusters *m = t->dc->m;
    uint64_t ms = rm_dns_next_refresh_ms(t->dc->c->dns, t->failures, ttl_s, next_random(m));
    rm_timer_start(m->loop, &t->timer, ms, on_refresh);
}

/* First answer or failure of <t>: maybe the cluster, and then every cluster, is initialized. */
static void target_answered(struct dns_target *t)
{
    if (t->answered) return;
    t->answered = true;
    struct dns_cluster *dc = t->dc;
    if (++dc->n_answered == dc->n_targets && --dc->m->n_waiting == 0 && dc->m->on_init)
        dc->m->on_init(dc->m->ctx);
}

static void on_answer(void *ctx, const struct rm_dns_answer *a)
{
    struct dns_target *t = ctx;
    struct rm_cluster *c = t->dc->c;
    t->q = NULL;
    bool good = a->status == RM_DNS_OK && a->n > 0;
    if (good && !keep_answer(t, a)) good = false;
    if (!good) {
        rm_stat_inc(c->stats, RM_CS_UPDATE_FAILURE);
        t->failures++;
        log_failure(t, a);
        schedule(t, 0);
        target_answered(t);
        return;
    }
    rm_stat_inc(c->stats, RM_CS_UPDATE_SUCCESS);
    if (t->failing)
        rm_log_info("cluster %s: DNS resolution of %s works again (%zu address(es))", c->name,
                    t->cfg->name, a->n);
    t->failing = false;
    t->failures = 0;
    update_membership(t->dc);
    /* the TTL: STRICT_DNS the smallest, LOGICAL_DNS the first address's */
    schedule(t, c->dns->logical ? a->addrs[0].ttl_s : a->min_ttl_s);
    target_answered(t);
}

static void resolve(struct dns_target *t)
{
    struct dns_cluster *dc = t->dc;
    rm_stat_inc(dc->c->stats, RM_CS_UPDATE_ATTEMPT);
    t->q = rm_dns_resolve(dc->resolver, t->cfg->name, dc->c->dns->family, on_answer, t);
    if (t->q) return;
    rm_log_error("cluster %s: cannot start a DNS resolution of %s: out of memory", dc->c->name,
                 t->cfg->name);
    rm_stat_inc(dc->c->stats, RM_CS_UPDATE_FAILURE);
    t->failures++;
    schedule(t, 0);
}

/* ---- lifetime ----------------------------------------------------------------------------- */

static struct rm_dns_resolver *shared_resolver(struct rm_dns_clusters *m, struct rm_error *err)
{
    if (!m->shared) m->shared = rm_dns_resolver_new(m->loop, &m->shared_cfg, err);
    return m->shared;
}

struct rm_dns_resolver *rm_dns_clusters_resolver(struct rm_dns_clusters *m)
{
    struct rm_error err = {{0}};
    struct rm_dns_resolver *r = shared_resolver(m, &err);
    if (!r) rm_log_error("DNS: cannot start the resolver: %s", err.msg);
    return r;
}

static int start_cluster(struct rm_dns_clusters *m, struct dns_cluster *dc, struct rm_cluster *c,
                         struct rm_error *err)
{
    dc->m = m;
    dc->c = c;
    if (c->dns->has_resolver) {
        dc->own_resolver = rm_dns_resolver_new(m->loop, &c->dns->resolver, err);
        dc->resolver = dc->own_resolver;
    } else {
        dc->resolver = shared_resolver(m, err);
    }
    if (!dc->resolver)
        return rm_error_prefix(err, "cluster %s: cannot start its DNS resolver: ", c->name);
    dc->targets = calloc(c->n_dns_targets ? c->n_dns_targets : 1, sizeof(*dc->targets));
    if (!dc->targets) return rm_error_set(err, "cluster %s: out of memory", c->name);
    dc->n_targets = c->n_dns_targets;
    if (dc->n_targets) m->n_waiting++;
    for (size_t i = 0; i < dc->n_targets; i++) {
        dc->targets[i].dc = dc;
        dc->targets[i].cfg = &c->dns_targets[i];
        resolve(&dc->targets[i]);
    }
    return RM_OK;
}

struct rm_dns_clusters *rm_dns_clusters_new(struct rm_loop *loop,
                                            struct rm_cluster *const *clusters, size_t n,
                                            const struct rm_dns_config *resolver_cfg,
                                            rm_dns_publish_fn publish, void (*on_init)(void *ctx),
                                            void *ctx, struct rm_error *err)
{
    struct rm_dns_clusters *m = calloc(1, sizeof(*m));
    if (!m) {
        rm_error_set(err, "out of memory");
        return NULL;
    }
    m->loop = loop;
    m->publish = publish;
    m->on_init = on_init;
    m->ctx = ctx;
    if (resolver_cfg)
        m->shared_cfg = *resolver_cfg;
    else
        rm_dns_config_init(&m->shared_cfg);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    m->rng = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)(uintptr_t)m ^ 0x9E3779B97F4A7C15ULL;
    m->clusters = calloc(n ? n : 1, sizeof(*m->clusters));
    if (!m->clusters) {
        rm_error_set(err, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        if (!rm_cluster_is_dns(clusters[i])) continue;
        if (start_cluster(m, &m->clusters[m->n_clusters++], clusters[i], err)) goto fail;
    }
    return m;
fail:
    rm_dns_clusters_free(m);
    return NULL;
}

void rm_dns_clusters_free(struct rm_dns_clusters *m)
{
    if (!m) return;
    for (size_t i = 0; i < m->n_clusters; i++) {
        struct dns_cluster *dc = &m->clusters[i];
        for (size_t k = 0; dc->targets && k < dc->n_targets; k++) {
            struct dns_target *t = &dc->targets[k];
            rm_dns_cancel(t->q);
            rm_timer_stop(m->loop, &t->timer);
            free(t->addrs);
            free(t->lens);
        }
        free(dc->targets);
        rm_dns_resolver_free(dc->own_resolver);
    }
    free(m->clusters);
    rm_dns_resolver_free(m->shared);
    free(m);
}

bool rm_dns_clusters_initialized(const struct rm_dns_clusters *m)
{
    return m->n_waiting == 0;
}

void rm_dns_clusters_waiting(const struct rm_dns_clusters *m, char *buf, size_t len)
{
    size_t off = 0;
    if (len) buf[0] = 0;
    for (size_t i = 0; i < m->n_clusters && off < len; i++) {
        const struct dns_cluster *dc = &m->clusters[i];
        if (dc->n_answered == dc->n_targets) continue;
        int w = snprintf(buf + off, len - off, "%s%s", off ? ", " : "", dc->c->name);
        off += w > 0 ? (size_t)w : 0;
    }
}
