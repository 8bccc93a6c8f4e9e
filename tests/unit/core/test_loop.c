/* The event loop: timers fire in order, deferred tasks run after I/O, async wake-ups. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <unistd.h>

#include "proxy/core/arena.h"
#include "proxy/core/buf.h"
#include "proxy/core/loop.h"

struct tctx {
    struct rm_loop *loop;
    struct rm_timer t[8];
    int order[8];
    int n;
};

static struct tctx *g;

static void on_fire(struct rm_timer *t)
{
    int idx = (int)(t - g->t);
    g->order[g->n++] = idx;
    if (g->n == 5) rm_loop_stop(g->loop);
}

Test(loop, timers_fire_in_deadline_order_and_stop_cancels)
{
    struct tctx c = {.loop = rm_loop_new()};
    g = &c;
    const unsigned ms[] = {30, 10, 50, 20, 40, 5};
    for (int i = 0; i < 6; i++)
        rm_timer_start(c.loop, &c.t[i], ms[i], on_fire);
    rm_timer_stop(c.loop, &c.t[5]);
    cr_assert(!rm_timer_armed(&c.t[5]));
    rm_loop_run(c.loop);
    const int want[] = {1, 3, 0, 4, 2};
    for (int i = 0; i < 5; i++)
        cr_assert_eq(c.order[i], want[i], "position %d: timer %d", i, c.order[i]);
    rm_loop_free(c.loop);
}

static int task_runs;
static void task_run(struct rm_task *t)
{
    (void)t;
    task_runs++;
}
static void stop_task(struct rm_task *t);
static struct rm_loop *stop_loop;
static void stop_task(struct rm_task *t)
{
    (void)t;
    rm_loop_stop(stop_loop);
}

Test(loop, deferred_task_runs_once_even_if_queued_twice)
{
    struct rm_loop *loop = rm_loop_new();
    struct rm_task t = {0}, s = {0};
    task_runs = 0;
    rm_loop_defer(loop, &t, task_run);
    rm_loop_defer(loop, &t, task_run);
    stop_loop = loop;
    rm_loop_defer_flush(loop, &s, stop_task);
    rm_loop_run(loop);
    cr_assert_eq(task_runs, 1);
    rm_loop_free(loop);
}

static void on_async(struct rm_async *a)
{
    (void)a;
    rm_loop_stop(stop_loop);
}

static void *poke(void *arg)
{
    usleep(20000);
    rm_async_send(arg);
    return NULL;
}

Test(loop, async_wakes_the_loop_from_another_thread)
{
    struct rm_loop *loop = rm_loop_new();
    struct rm_async a;
    stop_loop = loop;
    cr_assert_eq(rm_async_init(loop, &a, on_async), 0);
    pthread_t th;
    pthread_create(&th, NULL, poke, &a);
    rm_loop_run(loop);
    pthread_join(th, NULL);
    rm_async_dispose(loop, &a);
    rm_loop_free(loop);
}

static int async_runs;

static void count_async(struct rm_async *a)
{
    async_runs++;
    rm_loop_stop(stop_loop);
}

static void *poke_many(void *arg)
{
    for (int i = 0; i < 1000; i++)
        rm_async_send(arg);
    return NULL;
}

Test(loop, async_sends_coalesce_until_the_callback)
{
    struct rm_loop *loop = rm_loop_new();
    struct rm_async a;
    stop_loop = loop;
    async_runs = 0;
    cr_assert_eq(rm_async_init(loop, &a, count_async), 0);
    pthread_t th;
    pthread_create(&th, NULL, poke_many, &a);
    pthread_join(th, NULL);
    rm_loop_run(loop);
    cr_assert_eq(async_runs, 1, "1000 sends before the loop ran: one callback");
    rm_async_send(&a); /* after the callback: a new wake-up */
    rm_loop_run(loop);
    cr_assert_eq(async_runs, 2);
    rm_async_dispose(loop, &a);
    rm_loop_free(loop);
}

Test(buf, takes_memory_on_demand_and_returns_it_when_empty)
{
    struct rm_buf b = RM_BUF_INIT;
    cr_assert_null(b.base);
    rm_buf_append(&b, "hello", 5);
    cr_assert_not_null(b.base);
    cr_assert_eq(b.len, 5);
    char big[40000];
    memset(big, 'x', sizeof(big));
    rm_buf_append(&b, big, sizeof(big));
    cr_assert_eq(b.len, 40005);
    cr_assert_eq(memcmp(rm_buf_data(&b), "hellox", 6), 0);
    rm_buf_consume(&b, 40005);
    cr_assert_null(b.base, "an empty buffer holds no memory");
    rm_buf_thread_cleanup();
}

Test(arena, allocations_are_aligned_and_survive_until_dispose)
{
    struct rm_arena a;
    rm_arena_init(&a);
    char *p[100];
    for (int i = 0; i < 100; i++) {
        p[i] = rm_arena_alloc(&a, (size_t)(i * 37 + 1));
        cr_assert_eq((uintptr_t)p[i] % 16, 0);
        memset(p[i], i, (size_t)(i * 37 + 1));
    }
    for (int i = 0; i < 100; i++)
        cr_assert_eq((unsigned char)p[i][i * 37], (unsigned char)i);
    char *s = rm_arena_strndup(&a, "abcdef", 3);
    cr_assert_str_eq(s, "abc");
    rm_arena_dispose(&a);
    rm_arena_thread_cleanup();
}

static int rearms;
static struct rm_loop *rearm_loop;
static struct rm_task rearm_stop_task;
static void rearm_stop(struct rm_task *t)
{
    (void)t;
    rm_loop_stop(rearm_loop);
}
static void on_rearm(struct rm_timer *t)
{
    if (++rearms == 1) rm_loop_defer(rearm_loop, &rearm_stop_task, rearm_stop);
    if (rearms < 1000) /* bounded so a broken loop still ends; the assertion catches it */
        rm_timer_start(rearm_loop, t, 0, on_rearm);
}

Test(loop, zero_ms_timer_rearmed_from_its_callback_does_not_starve_the_loop)
{
    rearm_loop = rm_loop_new();
    struct rm_timer t = {0};
    rearms = 0;
    rm_timer_start(rearm_loop, &t, 0, on_rearm);
    rm_loop_run(rearm_loop);
    /* the deferred stop must run after the first pass of timers, not after 1000 re-arms */
    cr_assert_lt(rearms, 5, "timer re-armed %d times before deferred work ran", rearms);
    rm_timer_stop(rearm_loop, &t);
    rm_loop_free(rearm_loop);
}
