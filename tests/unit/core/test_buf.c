#include <criterion/criterion.h>
#include <string.h>

#include "proxy/core/arena.h"
#include "proxy/core/buf.h"
#include "proxy/http/codec.h"

static int hook_calls;
static void *hook_seen;

static void hook(void *ctx)
{
    hook_calls++;
    hook_seen = ctx;
}

/* Criterion runs each test in its own process: the per-thread caches start empty. */
Test(buf, trim_hook_after_a_burst_then_trim_frees_the_cache)
{
    int ctx;
    rm_buf_set_trim_hook(hook, &ctx);
    enum { N = 200 }; /* more buffers at once than the cache keeps */
    static struct rm_buf bufs[N];
    for (int i = 0; i < N; i++) {
        memset(rm_buf_reserve(&bufs[i], 100), 'x', 100);
        bufs[i].len = 100;
    }
    cr_assert_eq(hook_calls, 0, "nothing returned yet");
    for (int i = 0; i < N; i++)
        rm_buf_reset(&bufs[i]);
    cr_assert_eq(hook_calls, 1, "a burst asks for a trim, once");
    cr_assert_eq(hook_seen, &ctx);
    size_t freed = rm_buf_trim(4);
    cr_assert(freed >= (64u - 4u) * RM_BUF_BLOCK, "cache cut to 4 blocks: %zu", freed);
    cr_assert_eq(rm_buf_trim(4), 0, "nothing left above the reserve");
    /* the hook is armed again by the trim, and stays quiet for ordinary use */
    for (int round = 0; round < 100; round++) {
        rm_buf_reserve(&bufs[0], 10);
        rm_buf_reset(&bufs[0]);
    }
    cr_assert_eq(hook_calls, 1, "reuse from the cache is no burst");
    for (int i = 0; i < N; i++)
        rm_buf_reserve(&bufs[i], 10);
    for (int i = 0; i < N; i++)
        rm_buf_reset(&bufs[i]);
    cr_assert_eq(hook_calls, 2, "the next burst asks again");
    rm_buf_set_trim_hook(NULL, NULL);
    rm_buf_thread_cleanup();
}

Test(buf, arena_trim_keeps_the_reserve)
{
    enum { N = 50 };
    static struct rm_arena a[N];
    for (int i = 0; i < N; i++) {
        rm_arena_init(&a[i]);
        rm_arena_alloc(&a[i], 64);
    }
    for (int i = 0; i < N; i++)
        rm_arena_dispose(&a[i]);
    cr_assert_gt(rm_arena_trim(8), 0, "chunks beyond 8 freed");
    cr_assert_eq(rm_arena_trim(8), 0);
    cr_assert_gt(rm_arena_trim(0), 0, "the reserve too");
    rm_arena_thread_cleanup();
}

Test(buf, h2_mem_trim_without_blocks_is_a_no_op)
{
    cr_assert_eq(rm_h2_mem_trim(0), 0);
}
