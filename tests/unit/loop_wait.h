/* Test helpers: run a loop in 1 ms slices until a condition holds or a deadline passes.
 * Header-only (every helper is static inline) so any unit test can include it. */
#ifndef RM_TESTS_LOOP_WAIT_H
#define RM_TESTS_LOOP_WAIT_H

#include <stdint.h>
#include <time.h>

#include "proxy/core/loop.h"

static inline uint64_t rm_test_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct rm_test_slice {
    struct rm_timer t;
    struct rm_loop *loop;
};

static inline void rm_test_slice_end(struct rm_timer *t)
{
    rm_loop_stop(rm_container_of(t, struct rm_test_slice, t)->loop);
}

/** Run <loop> for about one millisecond. */
static inline void rm_test_spin(struct rm_loop *loop)
{
    struct rm_test_slice s = {.loop = loop};
    rm_timer_start(loop, &s.t, 1, rm_test_slice_end);
    rm_loop_run(loop);
    rm_timer_stop(loop, &s.t);
}

/** Run <loop> until <cond> holds, at most <ms> milliseconds. */
#define RM_TEST_WAIT(loop, cond, ms)                                                               \
    do {                                                                                           \
        uint64_t wait_deadline_ = rm_test_now_ms() + (ms);                                         \
        while (!(cond) && rm_test_now_ms() < wait_deadline_)                                       \
            rm_test_spin(loop);                                                                    \
    } while (0)

/** Run <loop> for <ms> milliseconds. */
static inline void rm_test_settle(struct rm_loop *loop, int ms)
{
    uint64_t end = rm_test_now_ms() + (uint64_t)ms;
    while (rm_test_now_ms() < end)
        rm_test_spin(loop);
}

#endif
