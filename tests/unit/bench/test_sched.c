/* Unit tests for bench/load/sched.c: the open-loop schedule of remora-load. */
#include <criterion/criterion.h>

#include "bench/load/sched.c"

#define MS UINT64_C(1000000)
#define S UINT64_C(1000000000)

Test(bench_sched, slots_at_exact_intervals)
{
    struct rml_sched s;
    rml_sched_init(&s, 1000, 1000.0, UINT64_MAX, 0, 0); /* 1000/s from t=1000 ns */
    cr_assert_eq(rml_sched_next_time(&s), 1000);
    for (uint64_t k = 0; k < 5000; k++) {
        cr_assert(rml_sched_due(&s, 1000 + k * MS));
        cr_assert_eq(rml_sched_take(&s), 1000 + k * MS);
        cr_assert(!rml_sched_due(&s, 1000 + k * MS + MS - 1));
    }
    cr_assert(!rml_sched_exhausted(&s));
}

Test(bench_sched, fractional_interval_does_not_drift)
{
    struct rml_sched s;
    rml_sched_init(&s, 0, 3.0, UINT64_MAX, 0, 0); /* 333333333.3 ns apart */
    uint64_t n = 0;
    while (rml_sched_due(&s, 100 * S)) {
        rml_sched_take(&s);
        n++;
    }
    cr_assert_eq(n, 301, "slots in [0, 100 s]: %llu", (unsigned long long)n);
    cr_assert_eq(rml_sched_slot_time(&s, 300), 100 * S);
}

Test(bench_sched, duration_window_holds_rate_times_duration)
{
    struct rml_sched s;
    uint64_t t0 = 5 * S, end = t0 + 3 * S;
    rml_sched_init(&s, t0, 1000.0, end, t0, 0);
    uint64_t n = 0;
    while (rml_sched_due(&s, end + S)) { /* even when polled late: nothing at or after end */
        rml_sched_take(&s);
        n++;
    }
    cr_assert_eq(n, 3000);
    cr_assert(rml_sched_exhausted(&s));
    cr_assert_eq(rml_sched_next_time(&s), UINT64_MAX);
}

Test(bench_sched, backlog_catches_up_in_order)
{
    struct rml_sched s;
    rml_sched_init(&s, 0, 100.0, UINT64_MAX, 0, 0);
    /* nothing taken for 1 s: 101 slots are due, all with their own times */
    cr_assert_eq(rml_sched_untaken(&s, 0, S + 1), 101);
    uint64_t prev = 0;
    for (int i = 0; i < 101; i++) {
        cr_assert(rml_sched_due(&s, S));
        uint64_t t = rml_sched_take(&s);
        cr_assert(i == 0 || t == prev + 10 * MS);
        prev = t;
    }
    cr_assert(!rml_sched_due(&s, S));
    cr_assert_eq(rml_sched_untaken(&s, 0, S + 1), 0);
}

Test(bench_sched, limit_counts_only_measured_slots)
{
    struct rml_sched s;
    /* 1000/s, warm-up until 500 ms, then 200 measured slots */
    rml_sched_init(&s, 0, 1000.0, UINT64_MAX, 500 * MS, 200);
    uint64_t warm = 0, measured = 0;
    while (!rml_sched_exhausted(&s)) {
        uint64_t t = rml_sched_take(&s);
        if (t < 500 * MS)
            warm++;
        else
            measured++;
    }
    cr_assert_eq(warm, 500);
    cr_assert_eq(measured, 200);
}

Test(bench_sched, untaken_in_window)
{
    struct rml_sched s;
    rml_sched_init(&s, 0, 1000.0, 2 * S, 0, 0);
    for (int i = 0; i < 1500; i++)
        rml_sched_take(&s);
    /* window [0, 2 s): 2000 slots, 1500 taken */
    cr_assert_eq(rml_sched_untaken(&s, 0, 2 * S), 500);
    cr_assert_eq(rml_sched_untaken(&s, 0, UINT64_MAX), 500);
    cr_assert_eq(rml_sched_untaken(&s, 1900 * MS, 2 * S), 100);
}
