/* Stats blocks: lazily allocated shard rows (a row exists once its thread wrote the block,
 * values are summed over the rows that exist), gauges set by one thread, the shard count,
 * the registry (same prefix, same block; creation order; many blocks) and releasing blocks
 * (the last reference unlists and frees; a block named by a child stays, unlisted). */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "proxy/admin/stats.h"

static const struct rm_stat_def defs[] = {
    {"a_total", RM_COUNTER}, {"b_total", RM_COUNTER}, {"c_active", RM_GAUGE},
    {"d_total", RM_COUNTER}, {"e_total", RM_COUNTER}, {"f_total", RM_COUNTER},
    {"g_total", RM_COUNTER}, {"h_total", RM_COUNTER}, {"i_total", RM_COUNTER},
};
#define N_DEFS (sizeof(defs) / sizeof(defs[0]))

static void fini(void)
{
    rm_stats_shard = 0;
    rm_stats_free_all();
}

TestSuite(stats, .fini = fini);

static bool has_row(const struct rm_stats *s, unsigned shard)
{
    return atomic_load(&s->rows[shard]) != NULL;
}

Test(stats, a_new_block_has_no_row)
{
    struct rm_stats *s = rm_stats_get("cluster.x.", defs, N_DEFS);
    cr_assert_eq(rm_stats_rows(s), 0);
    for (unsigned i = 0; i < N_DEFS; i++)
        cr_assert_eq(rm_stat_value(s, i), 0);
    cr_assert_eq(rm_stats_rows(s), 0, "reading creates nothing");
}

Test(stats, a_row_comes_with_the_first_write_of_its_shard)
{
    struct rm_stats *s = rm_stats_get("cluster.x.", defs, N_DEFS);
    rm_stats_shard = 3;
    rm_stat_inc(s, 1);
    cr_assert_eq(rm_stats_rows(s), 1);
    cr_assert(has_row(s, 3));
    cr_assert_not(has_row(s, 0));
    _Atomic int64_t *row = atomic_load(&s->rows[3]);
    cr_assert_eq((uintptr_t)row % 64, 0, "a row starts a cache line");
    rm_stat_add(s, 1, 41);
    rm_stat_dec(s, 8);
    cr_assert_eq(rm_stats_rows(s), 1, "later writes reuse the row");
    cr_assert_eq(atomic_load(&s->rows[3]), row);
    cr_assert_eq(rm_stat_value(s, 1), 42);
    cr_assert_eq(rm_stat_value(s, 8), -1);
    cr_assert_eq(rm_stat_value(s, 0), 0);
}

struct worker_arg {
    struct rm_stats *s;
    unsigned shard;
    int64_t n;
};

static void *worker(void *p)
{
    struct worker_arg *a = p;
    rm_stats_shard = a->shard;
    for (int64_t i = 0; i < a->n; i++) {
        rm_stat_inc(a->s, 0);
        rm_stat_add(a->s, 4, 2);
    }
    rm_stat_inc(a->s, 2);
    return NULL;
}

Test(stats, values_are_summed_across_threads)
{
    struct rm_stats *s = rm_stats_get("cluster.x.", defs, N_DEFS);
    enum { THREADS = 4, N = 100000 };
    pthread_t t[THREADS];
    struct worker_arg a[THREADS];
    for (unsigned i = 0; i < THREADS; i++) {
        a[i] = (struct worker_arg){s, i + 1, N};
        cr_assert_eq(pthread_create(&t[i], NULL, worker, &a[i]), 0);
    }
    for (unsigned i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    cr_assert_eq(rm_stat_value(s, 0), THREADS * N);
    cr_assert_eq(rm_stat_value(s, 4), 2 * THREADS * N);
    cr_assert_eq(rm_stat_value(s, 2), THREADS);
    cr_assert_eq(rm_stats_rows(s), THREADS, "one row per writing thread, none for main");
    cr_assert_not(has_row(s, 0));
    for (unsigned i = 1; i <= THREADS; i++)
        cr_assert(has_row(s, i));
}

static void *touch_other(void *p)
{
    rm_stats_shard = 1;
    rm_stat_inc(p, 0);
    return NULL;
}

Test(stats, a_block_no_worker_writes_has_no_worker_row)
{
    struct rm_stats *mine = rm_stats_get("cluster.main_only.", defs, N_DEFS);
    struct rm_stats *other = rm_stats_get("cluster.busy.", defs, N_DEFS);
    rm_stat_set(mine, 2, 10); /* main-thread gauge */
    rm_stat_inc(mine, 3);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, touch_other, other), 0);
    pthread_join(t, NULL);
    cr_assert_eq(rm_stats_rows(mine), 1);
    cr_assert(has_row(mine, 0));
    cr_assert_eq(rm_stats_rows(other), 1);
    cr_assert(has_row(other, 1));
    cr_assert_not(has_row(other, 0));
    cr_assert_eq(rm_stat_value(mine, 2), 10);
    cr_assert_eq(rm_stat_value(other, 0), 1);
}

static void *add_five(void *p)
{
    rm_stats_shard = 2;
    rm_stat_add(p, 2, 5);
    return NULL;
}

Test(stats, set_takes_the_difference_in_its_own_shard)
{
    struct rm_stats *s = rm_stats_get("cluster.g.", defs, N_DEFS);
    rm_stat_set(s, 2, 0);
    cr_assert_eq(rm_stats_rows(s), 0, "setting a gauge to what it reads makes no row");
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, add_five, s), 0);
    pthread_join(t, NULL);
    rm_stat_set(s, 2, 5);
    cr_assert_eq(rm_stats_rows(s), 1, "still the same value: no row for main");
    rm_stat_set(s, 2, 2);
    cr_assert_eq(rm_stat_value(s, 2), 2);
    cr_assert_eq(atomic_load(&atomic_load(&s->rows[0])[2]), -3);
    rm_stat_set(s, 2, 7);
    cr_assert_eq(rm_stat_value(s, 2), 7);
}

struct race_arg {
    struct rm_stats *s;
    pthread_barrier_t *b;
    _Atomic int64_t *got;
};

static void *race_row(void *p)
{
    struct race_arg *a = p;
    pthread_barrier_wait(a->b);
    a->got = rm_stats_row(a->s, 0);
    return NULL;
}

Test(stats, threads_racing_for_one_row_share_it)
{
    struct rm_stats *s = rm_stats_get("cluster.cb.circuit_breakers.default.", defs, N_DEFS);
    enum { THREADS = 8 };
    pthread_barrier_t b;
    pthread_barrier_init(&b, NULL, THREADS);
    pthread_t t[THREADS];
    struct race_arg a[THREADS];
    for (int i = 0; i < THREADS; i++) {
        a[i] = (struct race_arg){s, &b, NULL};
        cr_assert_eq(pthread_create(&t[i], NULL, race_row, &a[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&b);
    for (int i = 0; i < THREADS; i++)
        cr_assert_eq(a[i].got, atomic_load(&s->rows[0]), "one row published, the others freed");
    cr_assert_eq(rm_stats_rows(s), 1);
}

Test(stats, the_shard_count_sizes_new_blocks)
{
    struct rm_stats *before = rm_stats_get("before.", defs, N_DEFS);
    cr_assert_eq(before->n_shards, RM_STATS_MAX_SHARDS);
    rm_stats_set_shards(3);
    struct rm_stats *after = rm_stats_get("after.", defs, N_DEFS);
    cr_assert_eq(after->n_shards, 3);
    cr_assert_eq(rm_stats_get("before.", defs, N_DEFS), before, "existing blocks keep theirs");
    rm_stats_shard = 2;
    rm_stat_inc(after, 0);
    cr_assert_eq(rm_stat_value(after, 0), 1);
    rm_stats_set_shards(0);
    cr_assert_eq(rm_stats_get("clamped.low.", defs, N_DEFS)->n_shards, 1);
    rm_stats_set_shards(1000);
    cr_assert_eq(rm_stats_get("clamped.high.", defs, N_DEFS)->n_shards, RM_STATS_MAX_SHARDS);
}

struct seen {
    char names[64][64];
    int64_t values[64];
    int n;
};

static void collect(void *ctx, const char *name, enum rm_stat_type t, int64_t value)
{
    struct seen *s = ctx;
    cr_assert_lt(s->n, 64);
    snprintf(s->names[s->n], sizeof(s->names[0]), "%s", name);
    s->values[s->n++] = value;
}

Test(stats, registry_finds_blocks_by_prefix_in_creation_order)
{
    static const struct rm_stat_def two[] = {{"x", RM_COUNTER}, {"y", RM_GAUGE}};
    struct rm_stats *b = rm_stats_get("b.", two, 2);
    struct rm_stats *a = rm_stats_get("a.", two, 2);
    cr_assert_eq(rm_stats_get("b.", two, 2), b);
    char p[64];
    cr_assert_eq(rm_stats_prefix(b, p, sizeof(p)), 2);
    cr_assert_str_eq(p, "b.");
    rm_stat_add(a, 1, 7);
    struct seen seen = {0};
    rm_stats_foreach(collect, &seen);
    cr_assert_eq(seen.n, 4);
    cr_assert_str_eq(seen.names[0], "b.x");
    cr_assert_str_eq(seen.names[1], "b.y");
    cr_assert_str_eq(seen.names[2], "a.x");
    cr_assert_str_eq(seen.names[3], "a.y");
    cr_assert_eq(seen.values[3], 7);
}

Test(stats, many_blocks_stay_findable)
{
    enum { N = 5000 };
    static struct rm_stats *made[N];
    char p[64];
    for (int i = 0; i < N; i++) {
        snprintf(p, sizeof(p), "cluster.c%05d.", i);
        made[i] = rm_stats_get(p, defs, N_DEFS);
        rm_stat_add(made[i], 0, i);
    }
    for (int i = 0; i < N; i++) {
        snprintf(p, sizeof(p), "cluster.c%05d.", i);
        cr_assert_eq(rm_stats_get(p, defs, N_DEFS), made[i]);
        cr_assert_eq(rm_stat_value(made[i], 0), i);
        char got[64];
        rm_stats_prefix(made[i], got, sizeof(got));
        cr_assert_str_eq(got, p);
    }
}

Test(stats, blocks_under_a_block_share_their_suffix)
{
    static const struct rm_stat_def two[] = {{"x", RM_COUNTER}, {"y", RM_GAUGE}};
    struct rm_stats *early = rm_stats_get("cluster.a.circuit_breakers.default.", two, 2);
    cr_assert_null(early->parent, "made before its cluster: the whole prefix is its own");
    struct rm_stats *a = rm_stats_get("cluster.a.", defs, N_DEFS);
    struct rm_stats *b = rm_stats_get("cluster.b.", defs, N_DEFS);
    struct rm_stats *acb = rm_stats_get("cluster.a.circuit_breakers.high.", two, 2);
    struct rm_stats *bcb = rm_stats_get("cluster.b.circuit_breakers.high.", two, 2);
    struct rm_stats *deep = rm_stats_get("cluster.b.circuit_breakers.high.remaining_", two, 2);
    cr_assert_eq(acb->parent, a);
    cr_assert_eq(bcb->parent, b);
    cr_assert_eq(acb->name, bcb->name, "one interned \"circuit_breakers.high.\"");
    cr_assert_str_eq(acb->name, "circuit_breakers.high.");
    cr_assert_eq(deep->parent, bcb);
    cr_assert_str_eq(deep->name, "remaining_");
    cr_assert_eq(rm_stats_get("cluster.b.circuit_breakers.high.", two, 2), bcb);
    cr_assert_eq(rm_stats_get("cluster.b.circuit_breakers.high.remaining_", two, 2), deep);
    cr_assert_eq(rm_stats_get("cluster.a.circuit_breakers.default.", two, 2), early);
    char p[128];
    cr_assert_eq(rm_stats_prefix(deep, p, sizeof(p)), strlen(p));
    cr_assert_str_eq(p, "cluster.b.circuit_breakers.high.remaining_");
    cr_assert_eq(rm_stats_prefix(deep, p, 8), 42, "the whole length, truncated copy");
    cr_assert_str_eq(p, "cluster");
    rm_stat_set(deep, 1, 9);
    struct seen seen = {0};
    rm_stats_foreach(collect, &seen);
    cr_assert_str_eq(seen.names[seen.n - 1], "cluster.b.circuit_breakers.high.remaining_y");
    cr_assert_eq(seen.values[seen.n - 1], 9);
    cr_assert_null(rm_stats_get("cluster.", two, 2)->parent, "no parent is made up");
    cr_assert_eq(rm_stats_get("cluster.a.", defs, N_DEFS), a, "a later parent changes nothing");
}

/* ---- release ------------------------------------------------------------------------------ */

static bool listed(const char *name)
{
    struct seen seen = {0};
    rm_stats_foreach(collect, &seen);
    for (int i = 0; i < seen.n; i++) {
        if (strcmp(seen.names[i], name) == 0) return true;
    }
    return false;
}

Test(stats, the_last_release_unlists_a_block_and_a_new_one_starts_from_zero)
{
    size_t base = rm_stats_blocks();
    struct rm_stats *s = rm_stats_get("cluster.gone.", defs, N_DEFS);
    cr_assert_eq(rm_stats_get("cluster.gone.", defs, N_DEFS), s, "a second reference");
    cr_assert_eq(rm_stats_blocks(), base + 1);
    rm_stat_add(s, 0, 5);
    rm_stats_shard = 2;
    rm_stat_add(s, 0, 6);
    rm_stats_shard = 0;
    cr_assert_eq(rm_stats_rows(s), 2);
    rm_stats_release(s);
    cr_assert(listed("cluster.gone.a_total"), "one reference is left");
    cr_assert_eq(rm_stat_value(s, 0), 11);
    rm_stats_release(s); /* the rows and the block are freed (ASan would see a later use) */
    cr_assert_eq(rm_stats_blocks(), base);
    cr_assert_not(listed("cluster.gone.a_total"));
    struct rm_stats *again = rm_stats_get("cluster.gone.", defs, N_DEFS);
    cr_assert_eq(rm_stats_rows(again), 0);
    cr_assert_eq(rm_stat_value(again, 0), 0, "added again: from zero, as Envoy");
    cr_assert(listed("cluster.gone.a_total"));
    rm_stats_release(NULL);
}

Test(stats, a_released_block_stays_for_its_children_unlisted)
{
    static const struct rm_stat_def two[] = {{"x", RM_COUNTER}, {"y", RM_GAUGE}};
    size_t base = rm_stats_blocks();
    struct rm_stats *a = rm_stats_get("cluster.a.", defs, N_DEFS);
    struct rm_stats *cb = rm_stats_get("cluster.a.circuit_breakers.high.", two, 2);
    struct rm_stats *deep = rm_stats_get("cluster.a.circuit_breakers.high.remaining_", two, 2);
    cr_assert_eq(cb->parent, a);
    cr_assert_eq(deep->parent, cb);
    rm_stat_inc(a, 0);
    rm_stat_inc(cb, 0);
    rm_stat_set(deep, 1, 3);
    rm_stats_release(a);
    rm_stats_release(cb);
    cr_assert_eq(rm_stats_blocks(), base + 3, "named by a child: kept");
    cr_assert_not(listed("cluster.a.a_total"));
    cr_assert_not(listed("cluster.a.circuit_breakers.high.x"));
    cr_assert(listed("cluster.a.circuit_breakers.high.remaining_y"), "the child keeps its name");
    cr_assert_eq(rm_stat_value(deep, 1), 3);
    cr_assert_eq(rm_stats_rows(a), 0, "a released block's rows are gone");
    /* asked for again while its child lives: the same block, revived from zero */
    cr_assert_eq(rm_stats_get("cluster.a.", defs, N_DEFS), a);
    cr_assert_eq(rm_stat_value(a, 0), 0);
    cr_assert(listed("cluster.a.a_total"));
    rm_stats_release(a);
    rm_stats_release(deep); /* the last child: its released parents go with it */
    cr_assert_eq(rm_stats_blocks(), base);
    cr_assert_not(listed("cluster.a.circuit_breakers.high.remaining_y"));
}

Test(stats, churn_leaves_the_registry_as_it_was)
{
    static const struct rm_stat_def two[] = {{"x", RM_COUNTER}, {"y", RM_GAUGE}};
    struct rm_stats *keep = rm_stats_get("listener.keep.", two, 2);
    rm_stat_inc(keep, 0);
    size_t base = rm_stats_blocks();
    char p[96];
    for (int i = 0; i < 3000; i++) { /* Istio-like names: dots, bars, reused later */
        snprintf(p, sizeof(p), "cluster.outbound|80||svc%d.ns.svc.cluster.local.", i % 1500);
        struct rm_stats *c = rm_stats_get(p, defs, N_DEFS);
        snprintf(p, sizeof(p), "cluster.outbound|80||svc%d.ns.svc.cluster.local.outlier.",
                 i % 1500);
        struct rm_stats *od = rm_stats_get(p, two, 2);
        rm_stats_shard = 1 + (unsigned)(i % 3);
        rm_stat_inc(c, 0);
        rm_stat_inc(od, 1);
        rm_stats_shard = 0;
        if (i % 2) { /* either order */
            rm_stats_release(c);
            rm_stats_release(od);
        } else {
            rm_stats_release(od);
            rm_stats_release(c);
        }
    }
    cr_assert_eq(rm_stats_blocks(), base);
    struct rm_stats *last = rm_stats_get("listener.last.", two, 2);
    struct seen seen = {0};
    rm_stats_foreach(collect, &seen);
    cr_assert_str_eq(seen.names[seen.n - 1], "listener.last.y", "the list's tail followed");
    cr_assert(listed("listener.keep.x"));
    cr_assert_eq(rm_stats_get("listener.keep.", two, 2), keep, "still found by its hash");
    cr_assert_eq(rm_stat_value(keep, 0), 1);
    cr_assert_eq(rm_stats_blocks(), base + 1);
    (void)last;
}

static void *churn_thread(void *arg)
{
    unsigned me = (unsigned)(uintptr_t)arg;
    rm_stats_shard = me;
    char p[64];
    for (int i = 0; i < 500; i++) {
        snprintf(p, sizeof(p), "cluster.t%u_%d.", me, i % 50);
        struct rm_stats *own = rm_stats_get(p, defs, N_DEFS);
        struct rm_stats *shared = rm_stats_get("cluster.shared.", defs, N_DEFS);
        rm_stat_inc(own, 0);
        rm_stat_inc(shared, 0);
        rm_stats_release(own);
        rm_stats_release(shared);
    }
    return NULL;
}

Test(stats, threads_get_and_release_concurrently)
{
    enum { THREADS = 4 };
    size_t base = rm_stats_blocks();
    struct rm_stats *shared = rm_stats_get("cluster.shared.", defs, N_DEFS);
    pthread_t t[THREADS];
    for (unsigned i = 0; i < THREADS; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, churn_thread, (void *)(uintptr_t)(i + 1)), 0);
    for (unsigned i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    cr_assert_eq(rm_stat_value(shared, 0), THREADS * 500, "kept by the test's reference");
    cr_assert_eq(rm_stats_blocks(), base + 1);
    rm_stats_release(shared);
    cr_assert_eq(rm_stats_blocks(), base);
}

/* ---- rm_stats_ref: references without the registry mutex ---------------------------------- */

Test(stats, ref_and_get_count_references_and_the_last_release_unlists)
{
    size_t before = rm_stats_blocks();
    struct rm_stats *s = rm_stats_get("listener.1.2.3.4_80.", defs, N_DEFS);
    cr_assert_eq(rm_stats_users(s), 1);
    cr_assert_eq(rm_stats_ref(s), s);
    cr_assert_eq(rm_stats_users(s), 2);
    cr_assert_eq(rm_stats_get("listener.1.2.3.4_80.", defs, N_DEFS), s, "same prefix, same block");
    cr_assert_eq(rm_stats_users(s), 3);
    cr_assert_null(rm_stats_ref(NULL));
    rm_stat_inc(s, 0);
    rm_stats_release(s); /* the config's */
    rm_stats_release(s); /* a newer config's */
    cr_assert_eq(rm_stats_users(s), 1);
    cr_assert_eq(rm_stats_blocks(), before + 1, "still listed: a connection holds it");
    cr_assert_eq(rm_stat_value(s, 0), 1, "and it still counts");
    rm_stats_release(s); /* the connection's: the last */
    cr_assert_eq(rm_stats_blocks(), before);
    struct rm_stats *again = rm_stats_get("listener.1.2.3.4_80.", defs, N_DEFS);
    cr_assert_eq(rm_stat_value(again, 0), 0, "a block made again starts from zero");
    rm_stats_release(again);
    cr_assert_eq(rm_stats_blocks(), before);
}

struct churn_arg {
    struct rm_stats *s;
    int n;
    unsigned shard;
};

/* A connection's life: a reference of its own, a write, the release. */
static void *ref_churn(void *p)
{
    struct churn_arg *a = p;
    rm_stats_shard = a->shard; /* each writer its own shard */
    for (int i = 0; i < a->n; i++) {
        struct rm_stats *mine = rm_stats_ref(a->s);
        rm_stat_inc(mine, 0);
        rm_stats_release(mine);
    }
    return NULL;
}

/* Configs coming and going: rm_stats_get / rm_stats_release of the same prefix, where the
 * last release unlists and a later get makes the block again. */
static void *get_churn(void *p)
{
    struct churn_arg *a = p;
    for (int i = 0; i < a->n; i++)
        rm_stats_release(rm_stats_get("http.churn.", defs, N_DEFS));
    return NULL;
}

Test(stats, lock_free_refs_race_with_gets_and_releases)
{
    struct rm_stats *s = rm_stats_get("http.held.", defs, N_DEFS);
    struct churn_arg a1 = {.s = s, .n = 20000, .shard = 1}, a2 = {.s = s, .n = 20000, .shard = 2};
    struct churn_arg g = {.n = 2000};
    pthread_t t[4];
    pthread_create(&t[0], NULL, ref_churn, &a1);
    pthread_create(&t[1], NULL, ref_churn, &a2);
    pthread_create(&t[2], NULL, get_churn, &g);
    pthread_create(&t[3], NULL, get_churn, &g);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    cr_assert_eq(rm_stats_users(s), 1, "every reference taken was dropped");
    cr_assert_eq(rm_stat_value(s, 0), 40000);
    cr_assert_eq(rm_stats_blocks(), 1, "http.churn. went with its last release");
    rm_stats_release(s);
    cr_assert_eq(rm_stats_blocks(), 0);
}
