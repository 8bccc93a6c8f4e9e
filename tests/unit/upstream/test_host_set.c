/* Host sets: the membership diff (same, added, removed, reordered, weights, duplicates), the
 * LOGICAL_DNS set, reference counts and lifetimes, a worker cluster swapping sets (LB and
 * pools by host, draining pools freed once empty), and the outlier detector following a
 * membership change. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "proxy/core/loop.h"
#include "proxy/upstream/pool.h"

static struct rm_host_spec spec(const char *ip, uint16_t port, uint32_t weight)
{
    struct rm_host_spec s = {.weight = weight, .locality_idx = 0};
    struct sockaddr_in *v4 = (struct sockaddr_in *)&s.addr;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&s.addr;
    if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        s.addr_len = sizeof(*v4);
    } else {
        cr_assert_eq(inet_pton(AF_INET6, ip, &v6->sin6_addr), 1);
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
        s.addr_len = sizeof(*v6);
    }
    return s;
}

static unsigned refs(struct rm_host *h)
{
    return atomic_load(&h->refs);
}

/* The set's addresses, "a,b,c". */
static const char *addrs(const struct rm_host_set *hs)
{
    static char buf[512];
    buf[0] = 0;
    for (size_t i = 0; i < hs->n; i++) {
        strcat(buf, i ? "," : "");
        strcat(buf, hs->hosts[i]->addr_str);
    }
    return buf;
}

static struct rm_host_set *diff_changed(const struct rm_host_set *cur,
                                        const struct rm_host_spec *want, size_t n)
{
    struct rm_host_set *out = NULL;
    cr_assert_eq(rm_host_set_diff(cur, want, n, &out), RM_HOST_SET_CHANGED);
    cr_assert_not_null(out);
    return out;
}

static void diff_same(const struct rm_host_set *cur, const struct rm_host_spec *want, size_t n)
{
    struct rm_host_set *out = (void *)1;
    cr_assert_eq(rm_host_set_diff(cur, want, n, &out), RM_HOST_SET_SAME);
    cr_assert_null(out);
}

Test(host_set, diff_from_empty_then_same_and_reordered)
{
    struct rm_host_spec w[] = {spec("10.0.0.1", 80, 1), spec("10.0.0.2", 80, 1),
                               spec("::1", 80, 1)};
    struct rm_host_set *a = diff_changed(NULL, w, 3);
    cr_assert_str_eq(addrs(a), "10.0.0.1:80,10.0.0.2:80,[::1]:80");
    cr_assert_eq(a->total_weight, 3);
    cr_assert(!a->weighted);
    diff_same(a, w, 3);
    struct rm_host_spec r[] = {w[2], w[0], w[1]}; /* DNS servers rotate their answers */
    diff_same(a, r, 3);
    struct rm_host_spec dup[] = {w[1], w[0], w[1], w[2], w[0]};
    diff_same(a, dup, 5);
    rm_host_set_unref(a);
}

Test(host_set, diff_added_removed_keeps_the_hosts_that_stay)
{
    struct rm_host_spec w[] = {spec("10.0.0.1", 80, 1), spec("10.0.0.2", 80, 1)};
    struct rm_host_set *a = diff_changed(NULL, w, 2);
    struct rm_host *h1 = a->hosts[0], *h2 = a->hosts[1];
    cr_assert_eq(refs(h1), 1);
    struct rm_host_spec w2[] = {spec("10.0.0.3", 80, 1), spec("10.0.0.2", 80, 1)};
    struct rm_host_set *b = diff_changed(a, w2, 2);
    cr_assert_str_eq(addrs(b), "10.0.0.3:80,10.0.0.2:80");
    cr_assert_eq(b->hosts[1], h2, "a host that stays is the same object");
    cr_assert_eq(refs(h2), 2);
    cr_assert_neq(b->hosts[0], h1);
    /* another port is another host */
    struct rm_host_spec w3[] = {spec("10.0.0.3", 81, 1), spec("10.0.0.2", 80, 1)};
    struct rm_host_set *c = diff_changed(b, w3, 2);
    cr_assert_neq(c->hosts[0], b->hosts[0]);
    cr_assert_eq(c->hosts[1], h2);
    /* to nothing and back */
    struct rm_host_set *e = diff_changed(c, NULL, 0);
    cr_assert_eq(e->n, 0);
    diff_same(e, NULL, 0);
    rm_host_set_unref(a);
    rm_host_set_unref(b);
    rm_host_set_unref(c);
    rm_host_set_unref(e);
}

Test(host_set, diff_weights_and_attributes_make_new_hosts)
{
    struct rm_host_spec w[] = {spec("10.0.0.1", 80, 1), spec("10.0.0.2", 80, 1)};
    struct rm_host_set *a = diff_changed(NULL, w, 2);
    struct rm_host_spec w2[] = {spec("10.0.0.1", 80, 5), spec("10.0.0.2", 80, 1)};
    struct rm_host_set *b = diff_changed(a, w2, 2);
    cr_assert_neq(b->hosts[0], a->hosts[0], "a new weight: a new host");
    cr_assert_eq(b->hosts[1], a->hosts[1]);
    cr_assert(b->weighted);
    cr_assert_eq(b->total_weight, 6);
    w2[1].hostname = "svc.test";
    struct rm_host_set *c = diff_changed(b, w2, 2);
    cr_assert_eq(c->hosts[0], b->hosts[0]);
    cr_assert_neq(c->hosts[1], b->hosts[1]);
    cr_assert_str_eq(c->hosts[1]->hostname, "svc.test");
    diff_same(c, w2, 2);
    rm_host_set_unref(a);
    rm_host_set_unref(b);
    rm_host_set_unref(c);
}

Test(host_set, duplicates_first_one_wins)
{
    struct rm_host_spec w[] = {spec("10.0.0.1", 80, 3), spec("10.0.0.2", 80, 1),
                               spec("10.0.0.1", 80, 7)};
    struct rm_host_set *a = diff_changed(NULL, w, 3);
    cr_assert_eq(a->n, 2);
    cr_assert_str_eq(addrs(a), "10.0.0.1:80,10.0.0.2:80");
    cr_assert_eq(a->hosts[0]->weight, 3);
    rm_host_set_unref(a);
}

/* A unix socket host (a pipe endpoint): "/path" or "@name" (abstract). */
static struct rm_host_spec pipe_spec(const char *path)
{
    struct rm_host_spec s = {.weight = 1, .locality_idx = 0};
    struct sockaddr_un *un = (struct sockaddr_un *)&s.addr;
    un->sun_family = AF_UNIX;
    strcpy(un->sun_path, path);
    if (path[0] == '@') un->sun_path[0] = 0;
    s.addr_len =
        path[0] == '@' ? offsetof(struct sockaddr_un, sun_path) + strlen(path) : sizeof(*un);
    return s;
}

Test(host_set, pipe_hosts_keep_their_whole_address)
{
    struct rm_host_spec w[] = {pipe_spec("/run/b.sock"), spec("10.0.0.1", 80, 1), pipe_spec("@a"),
                               pipe_spec("/run/b.sock")};
    struct rm_host_set *a = diff_changed(NULL, w, 4);
    cr_assert_str_eq(addrs(a), "/run/b.sock,10.0.0.1:80,@a");
    struct rm_host_spec r[] = {w[2], w[1], w[0]};
    diff_same(a, r, 3);
    socklen_t len;
    const struct sockaddr_un *un = (const void *)rm_host_sockaddr(a->hosts[0], &len);
    cr_assert_eq(un->sun_family, AF_UNIX);
    cr_assert_str_eq(un->sun_path, "/run/b.sock");
    cr_assert_eq(len, sizeof(*un));
    un = (const void *)rm_host_set_connect_addr(a, a->hosts[2], &len);
    cr_assert_eq(len, offsetof(struct sockaddr_un, sun_path) + 2);
    cr_assert_eq(memcmp(un->sun_path, "\0a", 2), 0);
    /* the specs read back give the same set (how EDS carries hosts across versions) */
    struct rm_host_spec *back = rm_host_set_specs(a);
    diff_same(a, back, a->n);
    free(back);
    /* a changed path is a new host; the others are kept */
    struct rm_host_spec c[] = {pipe_spec("/run/c.sock"), w[1], w[2]};
    struct rm_host_set *b = diff_changed(a, c, 3);
    cr_assert_str_eq(addrs(b), "/run/c.sock,10.0.0.1:80,@a");
    cr_assert_eq(b->hosts[2], a->hosts[2]);
    cr_assert_neq(b->hosts[0], a->hosts[0]);
    rm_host_set_unref(a);
    rm_host_set_unref(b);
}

Test(host_set, logical_keeps_its_host_and_follows_the_address)
{
    struct rm_host_spec w = spec("10.0.0.1", 80, 1);
    w.hostname = "api.test";
    struct rm_host_set *a = NULL, *b = NULL, *c = NULL;
    cr_assert_eq(rm_host_set_logical(NULL, &w, &a), RM_HOST_SET_CHANGED);
    cr_assert_eq(a->n, 1);
    cr_assert(a->has_logical);
    cr_assert_str_eq(a->logical->str, "10.0.0.1:80");
    cr_assert_eq(rm_host_set_logical(a, &w, &b), RM_HOST_SET_SAME);
    cr_assert_null(b);
    struct rm_host_spec w2 = spec("10.0.0.9", 80, 1);
    cr_assert_eq(rm_host_set_logical(a, &w2, &c), RM_HOST_SET_CHANGED);
    cr_assert_eq(c->hosts[0], a->hosts[0], "one logical host: its pools and stats stay");
    cr_assert_str_eq(c->logical->str, "10.0.0.9:80");
    socklen_t len;
    const struct sockaddr *sa = rm_host_set_connect_addr(c, c->hosts[0], &len);
    cr_assert_eq(sa, &c->logical->addr.sa);
    cr_assert_eq(len, sizeof(struct sockaddr_in));
    sa = rm_host_set_connect_addr(a, a->hosts[0], &len);
    cr_assert_eq(rm_sockaddr_cmp(sa, (const struct sockaddr *)&w.addr), 0);
    /* a STRICT diff against a logical set always rebuilds */
    struct rm_host_set *d = NULL;
    cr_assert_eq(rm_host_set_diff(c, &w2, 1, &d), RM_HOST_SET_CHANGED);
    cr_assert(!d->has_logical);
    rm_host_set_unref(a);
    rm_host_set_unref(c);
    rm_host_set_unref(d);
}

Test(host_set, references_and_lifetimes)
{
    struct rm_host_spec w = spec("10.0.0.1", 80, 1);
    struct rm_host *h = rm_host_new(&w);
    cr_assert_eq(refs(h), 1);
    struct rm_host_set *a = rm_host_set_new(&h, 1);
    cr_assert_eq(refs(h), 2);
    struct rm_host_set *b = rm_host_set_ref(a);
    cr_assert_eq(b, a);
    rm_host_set_unref(a);
    cr_assert_eq(refs(h), 2, "the set is still referenced");
    rm_host_set_unref(b);
    cr_assert_eq(refs(h), 1);
    cr_assert_eq(rm_host_ref(h), h);
    rm_host_unref(h);
    rm_host_unref(h); /* the last reference frees (ASan checks) */
    rm_host_unref(NULL);
    rm_host_set_unref(NULL);
}

Test(host_set, sockaddr_order)
{
    struct rm_host_spec a = spec("10.0.0.1", 80, 1), b = spec("10.0.0.1", 81, 1),
                        c = spec("10.0.0.2", 80, 1), d = spec("::1", 80, 1);
#define SA(s) ((const struct sockaddr *)&(s).addr)
    cr_assert_eq(rm_sockaddr_cmp(SA(a), SA(a)), 0);
    cr_assert_lt(rm_sockaddr_cmp(SA(a), SA(b)), 0);
    cr_assert_lt(rm_sockaddr_cmp(SA(b), SA(c)), 0);
    cr_assert_neq(rm_sockaddr_cmp(SA(a), SA(d)), 0);
    cr_assert_eq(rm_sockaddr_cmp(SA(a), SA(d)), -rm_sockaddr_cmp(SA(d), SA(a)));
#undef SA
}

/* ---- a worker cluster over a swapped set ------------------------------------------------- */

struct wfix {
    struct rm_cluster c;
    struct rm_loop *loop;
    struct rm_worker_cluster *wc;
};

static void wfix_setup(struct wfix *f, enum rm_lb_policy lb, struct rm_host_set *hs)
{
    memset(f, 0, sizeof(*f));
    f->c.name = "swap";
    atomic_init(&f->c.refs, 1); /* the fixture's: never freed by an unref */
    f->c.lb_policy = lb;
    f->c.lr_choice_count = 2;
    f->c.healthy_panic_threshold = 50;
    f->c.stats = rm_stats_get("cluster.swaptest.", rm_cluster_stat_defs, RM_CS__COUNT);
    f->c.hs = hs;
    f->loop = rm_loop_new();
    f->wc = rm_worker_cluster_new(&f->c, f->loop);
    cr_assert_not_null(f->wc);
}

static void wfix_teardown(struct wfix *f)
{
    rm_loop_run_pending(f->loop);
    rm_worker_cluster_free(f->wc);
    rm_loop_run_pending(f->loop);
    rm_host_set_unref(f->c.hs);
    rm_loop_free(f->loop);
}

static bool in_set(const struct rm_host_set *hs, const struct rm_host *h)
{
    for (size_t i = 0; i < hs->n; i++)
        if (hs->hosts[i] == h) return true;
    return false;
}

static void lb_over_swapped_set(enum rm_lb_policy lb, const uint32_t *weights)
{
    struct rm_host_spec w[] = {spec("10.0.0.1", 80, weights[0]), spec("10.0.0.2", 80, weights[1]),
                               spec("10.0.0.3", 80, weights[2])};
    struct rm_host_set *a = diff_changed(NULL, w, 2);
    struct wfix f;
    wfix_setup(&f, lb, a);
    int seen[3] = {0};
    for (int i = 0; i < 200; i++) {
        struct rm_host *h = rm_lb_pick(f.wc, NULL);
        cr_assert(in_set(a, h));
        seen[h == a->hosts[1]]++;
    }
    cr_assert(seen[0] > 0 && seen[1] > 0);
    struct rm_host_set *b = diff_changed(a, w + 1, 2); /* {2, 3} */
    rm_worker_cluster_set_hosts(f.wc, rm_host_set_ref(b));
    cr_assert_eq(f.wc->hs, b);
    int seen_new = 0;
    for (int i = 0; i < 200; i++) {
        struct rm_host *h = rm_lb_pick(f.wc, NULL);
        cr_assert(in_set(b, h), "picked a host of the old set after the swap");
        seen_new += h == b->hosts[1];
    }
    cr_assert_gt(seen_new, 0);
    rm_host_set_unref(b);
    wfix_teardown(&f);
}

Test(host_set, lb_over_a_swapped_set)
{
    const uint32_t equal[] = {1, 1, 1}, weighted[] = {3, 1, 2};
    lb_over_swapped_set(RM_LB_ROUND_ROBIN, equal);
    lb_over_swapped_set(RM_LB_ROUND_ROBIN, weighted);
    lb_over_swapped_set(RM_LB_RANDOM, weighted);
    lb_over_swapped_set(RM_LB_LEAST_REQUEST, equal);
}

Test(host_set, pools_follow_hosts_and_drained_pools_are_freed)
{
    struct rm_host_spec w[] = {spec("10.0.0.1", 80, 1), spec("10.0.0.2", 80, 1),
                               spec("10.0.0.3", 80, 1)};
    struct rm_host_set *a = diff_changed(NULL, w, 2);
    struct rm_host *h1 = rm_host_ref(a->hosts[0]), *h2 = rm_host_ref(a->hosts[1]);
    struct wfix f;
    wfix_setup(&f, RM_LB_ROUND_ROBIN, a);
    struct rm_pool *p1 = rm_worker_cluster_pool(f.wc, h1, RM_HTTP11, 0);
    struct rm_pool *p2 = rm_worker_cluster_pool(f.wc, h2, RM_HTTP11, 0);
    struct rm_pool *p2h2 = rm_worker_cluster_pool(f.wc, h2, RM_HTTP2, 0);
    cr_assert(p1 && p2 && p2h2 && p1 != p2 && p2 != p2h2);
    cr_assert_eq(rm_worker_cluster_pool(f.wc, h2, RM_HTTP11, 0), p2, "one pool per host");
    cr_assert_eq(refs(h1), 3); /* ours, the set's, the pool's */
    /* h1 leaves, h3 joins */
    struct rm_host_set *b = diff_changed(a, w + 1, 2);
    rm_worker_cluster_set_hosts(f.wc, rm_host_set_ref(b));
    f.c.hs = b;
    rm_host_set_unref(a);
    cr_assert_eq(rm_worker_cluster_pool(f.wc, h2, RM_HTTP11, 0), p2,
                 "a host that stays keeps "
                 "its pool");
    cr_assert_eq(rm_worker_cluster_pool(f.wc, h2, RM_HTTP2, 0), p2h2);
    cr_assert_null(rm_worker_cluster_pool(f.wc, h1, RM_HTTP11, 0), "h1 is not in the set");
    cr_assert_eq(refs(h1), 2, "the draining pool still holds h1");
    rm_loop_run_pending(f.loop); /* an empty draining pool is freed by a deferred task */
    cr_assert_eq(refs(h1), 1);
    rm_host_unref(h1);
    rm_host_unref(h2);
    wfix_teardown(&f);
}

Test(host_set, worker_cluster_freed_while_a_reap_is_queued)
{
    struct rm_host_spec w[] = {spec("10.0.0.1", 80, 1), spec("10.0.0.2", 80, 1)};
    struct rm_host_set *a = diff_changed(NULL, w, 2);
    struct wfix f;
    wfix_setup(&f, RM_LB_ROUND_ROBIN, a);
    cr_assert_not_null(rm_worker_cluster_pool(f.wc, a->hosts[0], RM_HTTP11, 0));
    struct rm_host_set *b = diff_changed(a, w + 1, 1);
    rm_worker_cluster_set_hosts(f.wc, b);
    cr_assert_not_null(f.wc->drain, "a draining pool");
    rm_worker_cluster_free(f.wc); /* the queued reap task frees what it needs */
    f.wc = NULL;
    rm_loop_run_pending(f.loop);
    rm_host_set_unref(f.c.hs);
    rm_loop_free(f.loop);
}

/* ---- the outlier detector follows the membership ---------------------------------------- */

Test(host_set, outlier_detector_follows_membership)
{
    struct rm_host_spec w[] = {spec("10.0.0.1", 80, 1), spec("10.0.0.2", 80, 1),
                               spec("10.0.0.3", 80, 1)};
    struct rm_host_set *a = diff_changed(NULL, w, 2);
    struct rm_outlier_config cfg;
    rm_outlier_config_defaults(&cfg);
    cfg.max_ejection_percent = 100;
    struct rm_outlier_host *oh[3] = {&a->hosts[0]->outlier, &a->hosts[1]->outlier};
    struct rm_outlier *d = rm_outlier_new(&cfg, "cluster.odswap.", oh, 2);
    cr_assert_not_null(d);
    cr_assert(rm_outlier_detected(d, oh[0], RM_OUTLIER_CONSECUTIVE_5XX, 1000));
    cr_assert_eq(rm_stat_value(d->stats, RM_OD_EJECTIONS_ACTIVE), 1);
    cr_assert_eq(atomic_load(&d->n_ejected), 1);
    /* host 1 leaves (ejected), host 3 joins */
    struct rm_host_set *b = diff_changed(a, w + 1, 2);
    struct rm_outlier_host *nh[2] = {&b->hosts[0]->outlier, &b->hosts[1]->outlier};
    cr_assert_null(rm_outlier_det(nh[1]), "a new host is not tracked yet");
    rm_outlier_set_hosts(d, nh, 2);
    cr_assert_eq(rm_outlier_det(nh[1]), d);
    cr_assert_eq(nh[0], oh[1], "the host that stays keeps its state");
    cr_assert_eq(rm_stat_value(d->stats, RM_OD_EJECTIONS_ACTIVE), 0);
    cr_assert_eq(atomic_load(&d->n_ejected), 0, "the removed host gave its slot back");
    cr_assert_eq(atomic_load(&d->n_hosts_live), 2);
    /* a worker still using the removed host cannot eject it again */
    atomic_fetch_and(&oh[0]->state, ~RM_OUTLIER_EJECTED);
    cr_assert(!rm_outlier_detected(d, oh[0], RM_OUTLIER_CONSECUTIVE_5XX, 2000));
    cr_assert_eq(atomic_load(&d->n_ejected), 0);
    /* the new host can be ejected, the detector ticks over the new set */
    cr_assert(rm_outlier_detected(d, nh[1], RM_OUTLIER_CONSECUTIVE_5XX, 3000));
    rm_outlier_tick(d, 4000);
    rm_outlier_free(d);
    rm_host_set_unref(a);
    rm_host_set_unref(b);
}
