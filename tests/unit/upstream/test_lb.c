/* Load balancers: distributions and host selection rules. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/core/loop.h"
#include "proxy/upstream/pool.h"

struct fixture {
    struct rm_cluster c;
    struct rm_host *hosts[4];
    struct rm_loop *loop;
    struct rm_worker_cluster *wc;
};

static void setup_cluster(struct fixture *f, enum rm_lb_policy lb, size_t n, const uint32_t *w)
{
    memset(f, 0, sizeof(*f));
    f->c.name = "test";
    atomic_init(&f->c.refs, 1); /* the fixture's: never freed by an unref */
    f->c.lb_policy = lb;
    f->c.lr_choice_count = 2;
    f->c.healthy_panic_threshold = 50;
    f->c.stats = rm_stats_get("cluster.lbtest.", rm_cluster_stat_defs, RM_CS__COUNT);
    for (size_t i = 0; i < n; i++) {
        f->hosts[i] = calloc(1, sizeof(struct rm_host) + 1); /* an empty addr_str */
        cr_assert_not_null(f->hosts[i]);
        atomic_init(&f->hosts[i]->refs, 1); /* the fixture's */
        f->hosts[i]->weight = w ? w[i] : 1;
        f->hosts[i]->health = RM_HEALTH_HEALTHY;
    }
    f->c.hs = rm_host_set_new(f->hosts, n);
    cr_assert_not_null(f->c.hs);
    f->loop = rm_loop_new();
    f->wc = rm_worker_cluster_new(&f->c, f->loop);
    cr_assert_not_null(f->wc);
}

static void teardown_cluster(struct fixture *f)
{
    rm_loop_run_pending(f->loop);
    rm_worker_cluster_free(f->wc);
    rm_loop_run_pending(f->loop);
    rm_host_set_unref(f->c.hs);
    rm_loop_free(f->loop);
    for (int i = 0; i < 4; i++)
        rm_host_unref(f->hosts[i]); /* the last reference */
}

static int index_of(struct fixture *f, const struct rm_host *h)
{
    for (int i = 0; i < 4; i++)
        if (h == f->hosts[i]) return i;
    return -1;
}

Test(lb, round_robin_equal_weights_alternates)
{
    struct fixture f;
    setup_cluster(&f, RM_LB_ROUND_ROBIN, 3, NULL);
    int counts[3] = {0};
    int prev = -1;
    for (int i = 0; i < 300; i++) {
        int k = index_of(&f, rm_lb_pick(f.wc, NULL));
        cr_assert(k >= 0 && k < 3);
        cr_assert_neq(k, prev, "round robin picked host %d twice in a row", k);
        prev = k;
        counts[k]++;
    }
    for (int i = 0; i < 3; i++)
        cr_assert_eq(counts[i], 100);
    teardown_cluster(&f);
}

Test(lb, round_robin_weighted_is_exact_and_smooth)
{
    struct fixture f;
    const uint32_t w[] = {5, 1, 1};
    setup_cluster(&f, RM_LB_ROUND_ROBIN, 3, w);
    int counts[3] = {0};
    int run = 0, max_run = 0, prev = -1;
    for (int i = 0; i < 700; i++) {
        int k = index_of(&f, rm_lb_pick(f.wc, NULL));
        counts[k]++;
        run = k == prev ? run + 1 : 1;
        max_run = run > max_run ? run : max_run;
        prev = k;
    }
    cr_assert_eq(counts[0], 500);
    cr_assert_eq(counts[1], 100);
    cr_assert_eq(counts[2], 100);
    cr_assert_leq(max_run, 4, "smooth WRR should interleave (longest run %d)", max_run);
    teardown_cluster(&f);
}

Test(lb, random_follows_weights)
{
    struct fixture f;
    const uint32_t w[] = {3, 1};
    setup_cluster(&f, RM_LB_RANDOM, 2, w);
    int counts[2] = {0};
    for (int i = 0; i < 40000; i++)
        counts[index_of(&f, rm_lb_pick(f.wc, NULL))]++;
    cr_assert(counts[0] > 28500 && counts[0] < 31500, "weight 3 of 4 got %d/40000", counts[0]);
    teardown_cluster(&f);
}

Test(lb, least_request_prefers_idle_host)
{
    struct fixture f;
    setup_cluster(&f, RM_LB_LEAST_REQUEST, 2, NULL);
    atomic_store(&f.hosts[0]->rq_active, 50);
    int counts[2] = {0};
    for (int i = 0; i < 1000; i++)
        counts[index_of(&f, rm_lb_pick(f.wc, NULL))]++;
    /* P2C: the busy host wins only when both choices land on it (~25%) */
    cr_assert(counts[1] > 650, "idle host picked %d/1000", counts[1]);
    cr_assert(counts[0] > 100, "busy host still gets some traffic (%d)", counts[0]);
    teardown_cluster(&f);
}

Test(lb, unhealthy_hosts_skipped_and_panic_mode)
{
    struct fixture f;
    setup_cluster(&f, RM_LB_ROUND_ROBIN, 4, NULL);
    f.hosts[0]->health = RM_HEALTH_UNHEALTHY;
    for (int i = 0; i < 100; i++)
        cr_assert_neq(index_of(&f, rm_lb_pick(f.wc, NULL)), 0);
    /* 3 of 4 unhealthy: 25% < 50% panic threshold → all hosts are used */
    f.hosts[1]->health = RM_HEALTH_UNHEALTHY;
    f.hosts[2]->health = RM_HEALTH_DRAINING;
    int seen0 = 0;
    for (int i = 0; i < 100; i++)
        seen0 += index_of(&f, rm_lb_pick(f.wc, NULL)) == 0;
    cr_assert_gt(seen0, 0, "panic mode must route to unhealthy hosts too");
    teardown_cluster(&f);
}

Test(lb, avoid_previous_host_when_possible)
{
    struct fixture f;
    setup_cluster(&f, RM_LB_RANDOM, 2, NULL);
    for (int i = 0; i < 200; i++)
        cr_assert_eq(rm_lb_pick(f.wc, f.hosts[0]), f.hosts[1]);
    teardown_cluster(&f);
    setup_cluster(&f, RM_LB_ROUND_ROBIN, 1, NULL);
    cr_assert_eq(rm_lb_pick(f.wc, f.hosts[0]), f.hosts[0], "single host: avoid is ignored");
    teardown_cluster(&f);
}

Test(lb, empty_cluster_has_no_host)
{
    struct fixture f;
    setup_cluster(&f, RM_LB_ROUND_ROBIN, 0, NULL);
    cr_assert_null(rm_lb_pick(f.wc, NULL));
    teardown_cluster(&f);
}
