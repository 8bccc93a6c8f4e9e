/* The loop's timer wheel, driven with a fake clock: this file includes loop.c (h2o style) to set
 * now_ms and call run_timers()/next_timeout() directly, so deadlines hours or years away are
 * checked without waiting.  (The unit test binary then takes every rm_loop_* symbol from here:
 * the same code as the library's loop.o.) */
#include <criterion/criterion.h>

#include "proxy/core/loop.c"

#define NT 600

struct wt {
    struct rm_timer t[NT];
    uint64_t fired_at[NT]; /* now_ms of the run that fired it; 0: not fired */
    unsigned fired;
    uint64_t last_deadline;
    bool order_ok;
    struct rm_loop *loop;
};

static struct wt *W;

static void on_fire(struct rm_timer *t)
{
    size_t i = (size_t)(t - W->t);
    cr_assert_eq(W->fired_at[i], 0, "timer %zu fired twice", i);
    W->fired_at[i] = W->loop->now_ms;
    W->fired++;
    if (t->expire_ms < W->last_deadline) W->order_ok = false;
    W->last_deadline = t->expire_ms;
}

static uint64_t lcg(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s >> 17;
}

/* Advance the fake clock to <now> and run the timers, as one loop iteration would. */
static void run_at(struct rm_loop *loop, uint64_t now)
{
    loop->now_ms = now;
    W->last_deadline = 0;
    run_timers(loop);
}

/* Every timer fires once, at the first run whose time reached its deadline, in deadline order
 * within a run; next_timeout never sleeps past the earliest deadline. */
static void check_random(uint64_t seed, uint64_t start, const uint64_t *ranges, size_t nranges)
{
    struct wt w = {.order_ok = true};
    W = &w;
    struct rm_loop *loop = rm_loop_new();
    w.loop = loop;
    loop->now_ms = loop->wheel_ms = start;
    uint64_t s = seed;
    for (int i = 0; i < NT; i++) {
        uint64_t range = ranges[(size_t)i % nranges];
        rm_timer_start(loop, &w.t[i], lcg(&s) % range, on_fire);
    }
    for (int i = 0; i < NT; i += 7) /* a few cancelled, a few moved */
        rm_timer_stop(loop, &w.t[i]);
    for (int i = 3; i < NT; i += 11)
        rm_timer_start(loop, &w.t[i], lcg(&s) % 5000, on_fire);
    uint64_t now = start;
    unsigned steps = 0;
    while (loop->levels) {
        uint64_t earliest = UINT64_MAX;
        for (int i = 0; i < NT; i++)
            if (rm_timer_armed(&w.t[i]) && w.t[i].expire_ms < earliest) earliest = w.t[i].expire_ms;
        int to = next_timeout(loop);
        cr_assert(to >= 0);
        cr_assert_leq(now + (uint64_t)to, earliest > now ? earliest : now,
                      "next_timeout %d sleeps past the deadline %llu (now %llu)", to,
                      (unsigned long long)earliest, (unsigned long long)now);
        /* mostly sleep as told; sometimes oversleep a lot (a busy loop, a stopped process) */
        uint64_t step = to > 0 ? (uint64_t)to : 1;
        if (lcg(&s) % 5 == 0) step += lcg(&s) % (1ull << (lcg(&s) % 40));
        now += step;
        run_at(loop, now);
        cr_assert(w.order_ok, "deadline order within a run");
        cr_assert_leq(++steps, 200000u);
    }
    for (int i = 0; i < NT; i++) {
        bool cancelled = i % 7 == 0 && (i - 3) % 11 != 0;
        if (cancelled) {
            cr_assert_eq(w.fired_at[i], 0, "cancelled timer %d fired", i);
            continue;
        }
        cr_assert_neq(w.fired_at[i], 0, "timer %d never fired", i);
        cr_assert_geq(w.fired_at[i], w.t[i].expire_ms, "timer %d fired early", i);
    }
    rm_loop_free(loop);
}

Test(timer_wheel, random_deadlines_over_every_level)
{
    const uint64_t short_ranges[] = {1, 2, 63, 64, 65, 100, 4095, 4097, 300000};
    const uint64_t long_ranges[] = {1000, 3600000, 86400000ull * 30, 1ull << 40, 1ull << 55};
    check_random(1, 1000, short_ranges, sizeof(short_ranges) / sizeof(short_ranges[0]));
    check_random(2, (1ull << 24) - 3, short_ranges, sizeof(short_ranges) / sizeof(short_ranges[0]));
    check_random(3, 123456789, long_ranges, sizeof(long_ranges) / sizeof(long_ranges[0]));
}

Test(timer_wheel, fires_at_the_first_run_that_reaches_the_deadline)
{
    struct wt w = {.order_ok = true};
    W = &w;
    struct rm_loop *loop = rm_loop_new();
    w.loop = loop;
    loop->now_ms = loop->wheel_ms = 5000;
    const uint64_t ms[] = {0, 1, 63, 64, 200, 4096, 70000};
    for (int i = 0; i < 7; i++)
        rm_timer_start(loop, &w.t[i], ms[i], on_fire);
    for (int i = 0; i < 7; i++) {
        uint64_t due = 5000 + ms[i];
        if (due > 5000) {
            run_at(loop, due - 1);
            cr_assert_eq(w.fired_at[i], 0, "timer %d fired 1 ms early", i);
        }
        run_at(loop, due);
        cr_assert_eq(w.fired_at[i], due, "timer %d", i);
    }
    cr_assert_eq(next_timeout(loop), -1, "no timer left");
    rm_loop_free(loop);
}

static bool stop_other;
static void stop_victim(struct rm_timer *t)
{
    on_fire(t);
    if (stop_other) rm_timer_stop(W->loop, t == &W->t[0] ? &W->t[1] : &W->t[0]);
}
static void rearm_zero(struct rm_timer *t)
{
    on_fire(t);
    rm_timer_start(W->loop, &W->t[9], 0, on_fire);
}

Test(timer_wheel, callbacks_may_stop_and_arm_timers)
{
    struct wt w = {.order_ok = true};
    W = &w;
    struct rm_loop *loop = rm_loop_new();
    w.loop = loop;
    loop->now_ms = loop->wheel_ms = 100;
    /* two timers due in the same ms: whichever fires first stops the other */
    rm_timer_start(loop, &w.t[0], 10, stop_victim);
    rm_timer_start(loop, &w.t[1], 10, stop_victim);
    run_at(loop, 109);
    cr_assert_eq(w.fired, 0);
    stop_other = true;
    run_at(loop, 110);
    cr_assert_eq(w.fired, 1, "the stopped one does not fire");
    rm_timer_stop(loop, &w.t[0]);
    rm_timer_stop(loop, &w.t[1]);
    /* a 0 ms timer armed from a callback waits for the next iteration (1 ms later) */
    w.fired = 0;
    memset(w.fired_at, 0, sizeof(w.fired_at));
    rm_timer_start(loop, &w.t[2], 5, rearm_zero);
    run_at(loop, 115);
    cr_assert_eq(w.fired, 1);
    cr_assert(rm_timer_armed(&w.t[9]));
    cr_assert_eq(next_timeout(loop), 1);
    run_at(loop, 115);
    cr_assert_eq(w.fired, 1, "not in the same iteration's time");
    run_at(loop, 116);
    cr_assert_eq(w.fired, 2);
    cr_assert(!rm_timer_armed(&w.t[9]));
    rm_loop_free(loop);
}

Test(timer_wheel, next_timeout_and_rearm)
{
    struct wt w = {.order_ok = true};
    W = &w;
    struct rm_loop *loop = rm_loop_new();
    w.loop = loop;
    loop->now_ms = loop->wheel_ms = 7;
    cr_assert_eq(next_timeout(loop), -1);
    rm_timer_start(loop, &w.t[0], 30, on_fire);
    cr_assert_eq(next_timeout(loop), 30, "a level-0 deadline is exact");
    rm_timer_start(loop, &w.t[0], 10, on_fire); /* re-arm earlier */
    cr_assert_eq(next_timeout(loop), 10);
    rm_timer_start(loop, &w.t[0], 3600000, on_fire); /* re-arm much later */
    int to = next_timeout(loop);
    cr_assert(to > 0 && to <= 60000, "capped, possibly early (a cascade point): %d", to);
    rm_timer_stop(loop, &w.t[0]);
    cr_assert(!rm_timer_armed(&w.t[0]));
    cr_assert_eq(next_timeout(loop), -1);
    cr_assert_eq(loop->levels, 0u, "an empty wheel has no level bits");
    rm_timer_start(loop, &w.t[1], 0, on_fire);
    cr_assert_eq(next_timeout(loop), 0, "due now");
    run_at(loop, 7);
    cr_assert_eq(w.fired, 1);
    rm_loop_free(loop);
}
