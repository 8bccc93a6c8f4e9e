/* Load balancers: ROUND_ROBIN (smooth weighted), LEAST_REQUEST (power of N choices), RANDOM
 * (weighted).  Per-worker state, no locks: each worker balances on its own, as Envoy does. */
#include <stdlib.h>
#include <time.h>

#include "proxy/upstream/pool.h"

static __thread uint64_t rng_state;

uint64_t rm_lb_random(void)
{
    uint64_t x = rng_state;
    if (!x) { /* first use on this thread */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        x = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)(uintptr_t)&rng_state ^ 0x9E3779B97F4A7C15ULL;
    }
    x ^= x >> 12; /* xorshift64* */
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static bool eligible(const struct rm_host *h, bool panic, const struct rm_host *avoid)
{
    return (panic ? !rm_host_excluded(h) : rm_host_routable(h)) && h != avoid;
}

static struct rm_host *pick_rr(struct rm_worker_cluster *wc, bool panic,
                               const struct rm_host *avoid)
{
    struct rm_host_set *hs = wc->hs;
    if (!hs->weighted) {
        for (size_t tries = 0; tries < hs->n; tries++) {
            size_t i = wc->rr++ % hs->n;
            if (eligible(hs->hosts[i], panic, avoid)) {
                wc->last_pick = (uint32_t)i;
                return hs->hosts[i];
            }
        }
        return NULL;
    }
    /* smooth weighted round robin (nginx): each pick adds weights, takes the max, subtracts total
     */
    if (!wc->wrr_current && !(wc->wrr_current = calloc(hs->n, sizeof(*wc->wrr_current))))
        abort(); /* the state of a set comes with its first weighted pick */
    int64_t total = 0;
    struct rm_host *best = NULL;
    size_t best_i = 0;
    for (size_t i = 0; i < hs->n; i++) {
        struct rm_host *h = hs->hosts[i];
        if (!eligible(h, panic, avoid)) continue;
        wc->wrr_current[i] += h->weight;
        total += h->weight;
        if (!best || wc->wrr_current[i] > wc->wrr_current[best_i]) {
            best = h;
            best_i = i;
        }
    }
    if (best) {
        wc->wrr_current[best_i] -= total;
        wc->last_pick = (uint32_t)best_i;
    }
    return best;
}

static struct rm_host *pick_random(struct rm_worker_cluster *wc, bool panic,
                                   const struct rm_host *avoid)
{
    struct rm_host_set *hs = wc->hs;
    uint64_t total = 0;
    for (size_t i = 0; i < hs->n; i++)
        total += eligible(hs->hosts[i], panic, avoid) ? hs->hosts[i]->weight : 0;
    if (!total) return NULL;
    uint64_t r = rm_lb_random() % total;
    for (size_t i = 0; i < hs->n; i++) {
        if (!eligible(hs->hosts[i], panic, avoid)) continue;
        if (r < hs->hosts[i]->weight) {
            wc->last_pick = (uint32_t)i;
            return hs->hosts[i];
        }
        r -= hs->hosts[i]->weight;
    }
    return NULL;
}

static struct rm_host *pick_least(struct rm_worker_cluster *wc, bool panic,
                                  const struct rm_host *avoid)
{
    struct rm_host *best = NULL;
    size_t best_i = 0;
    int64_t best_active = 0;
    uint32_t choices = wc->cluster->lr_choice_count ? wc->cluster->lr_choice_count : 2;
    for (uint32_t i = 0; i < choices; i++) {
        struct rm_host *h = pick_random(wc, panic, avoid);
        if (!h) return NULL;
        int64_t active = atomic_load_explicit(&h->rq_active, memory_order_relaxed);
        if (!best || active < best_active) {
            best = h;
            best_i = wc->last_pick;
            best_active = active;
        }
    }
    wc->last_pick = (uint32_t)best_i;
    return best;
}

struct rm_host *rm_lb_pick(struct rm_worker_cluster *wc, const struct rm_host *avoid)
{
    struct rm_cluster *c = wc->cluster;
    const struct rm_host_set *hs = wc->hs;
    if (!hs->n) return NULL;
    size_t routable = 0, excluded = 0;
    for (size_t i = 0; i < hs->n; i++) {
        routable += rm_host_routable(hs->hosts[i]);
        excluded += rm_host_excluded(hs->hosts[i]);
    }
    bool panic = routable * 100 < (hs->n - excluded) * (size_t)c->healthy_panic_threshold;
    if (panic) rm_stat_inc(c->stats, RM_CS_LB_HEALTHY_PANIC);
    if (avoid && hs->n == 1) avoid = NULL;
    for (int pass = 0; pass < 2; pass++) {
        struct rm_host *h;
        switch (c->lb_policy) {
        case RM_LB_LEAST_REQUEST:
            h = pick_least(wc, panic, avoid);
            break;
        case RM_LB_RANDOM:
            h = pick_random(wc, panic, avoid);
            break;
        default:
            h = pick_rr(wc, panic, avoid);
            break;
        }
        if (h || !avoid) return h;
        avoid = NULL; /* the only eligible host is the one to avoid: use it anyway */
    }
    return NULL;
}
