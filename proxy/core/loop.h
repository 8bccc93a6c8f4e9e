/* The event loop: one per thread.  epoll (edge-triggered) + a timer wheel + deferred tasks.
 *
 * One iteration:  epoll_wait -> I/O callbacks -> expired timers -> deferred tasks ->
 * flush tasks (write coalescing: connections queue one flush per iteration) -> repeat the
 * last two until both queues are empty -> epoll_wait.
 *
 * Rules: an object whose callback is running is never freed inside that callback; free it
 * from a deferred task (rm_loop_defer) instead.  An rm_io whose fd is -1 gets no events, so
 * events still queued in the current batch for a closed connection are dropped. */
#ifndef RM_CORE_LOOP_H
#define RM_CORE_LOOP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/epoll.h>

struct rm_loop;
struct rm_io;
struct rm_timer;
struct rm_task;

typedef void (*rm_io_cb)(struct rm_io *io, uint32_t events);
typedef void (*rm_timer_cb)(struct rm_timer *t);
typedef void (*rm_task_cb)(struct rm_task *t);

/** A file descriptor watched by the loop; embed it in its owner (container_of). */
struct rm_io {
    int fd;
    uint32_t events; /* EPOLLIN | EPOLLOUT … as registered (always edge-triggered) */
    rm_io_cb on_ready;
};

/** A one-shot timer; embed it in its owner.  Armed timers sit in a slot list of the loop's
 *  timer wheel (O(1) start and stop); slot is 0 when not armed. */
struct rm_timer {
    struct rm_timer *next, **pprev; /* slot list */
    uint64_t expire_ms;
    rm_timer_cb on_fire;
    uint16_t slot; /* 1 + level * 64 + index while armed */
};

/** A deferred task; embed it in its owner.  Queued at most once at a time. */
struct rm_task {
    struct rm_task *next;
    rm_task_cb run;
    bool queued;
};

/** Thread-safe wake-up: rm_async_send() from any thread makes <cb> run on the loop's thread. */
struct rm_async {
    struct rm_io io;
    void (*cb)(struct rm_async *);
    _Atomic bool pending; /* a wake-up is on its way: later sends need no write(2) */
};

#define rm_container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/** Create a loop; returns NULL on failure (errno set). */
struct rm_loop *rm_loop_new(void);
/** Free a loop (NULL is a no-op).  Armed timers and watched fds must be gone already. */
void rm_loop_free(struct rm_loop *loop);
/** Run until rm_loop_stop().  Returns 0. */
int rm_loop_run(struct rm_loop *loop);
/** Run the deferred and flush queues until empty (at shutdown, after rm_loop_run returned). */
void rm_loop_run_pending(struct rm_loop *loop);
/** Make rm_loop_run return after the current iteration (same thread only; else use rm_async). */
void rm_loop_stop(struct rm_loop *loop);
/** Monotonic milliseconds, cached once per iteration. */
uint64_t rm_loop_now(const struct rm_loop *loop);
/** How many times the loop woke up (a measure of how busy it is). */
uint64_t rm_loop_iterations(const struct rm_loop *loop);
/** Refresh and return the cached time. */
uint64_t rm_loop_update_time(struct rm_loop *loop);

/** Watch <fd> (edge-triggered) for <events>; returns 0 or -errno. */
int rm_io_start(struct rm_loop *loop, struct rm_io *io, int fd, uint32_t events, rm_io_cb cb);
/** Change the watched events; returns 0 or -errno. */
int rm_io_modify(struct rm_loop *loop, struct rm_io *io, uint32_t events);
/** Stop watching; does not close the fd.  Sets io->fd to -1 (later queued events are dropped). */
void rm_io_stop(struct rm_loop *loop, struct rm_io *io);

/** Arm (or re-arm) <t> to fire in <ms> milliseconds.  Timers fire in deadline order (those of
 *  the same millisecond in no particular order), from the iteration whose time reached their
 *  deadline; one armed from a timer callback never fires in the same iteration. */
void rm_timer_start(struct rm_loop *loop, struct rm_timer *t, uint64_t ms, rm_timer_cb cb);
/** rm_timer_stop's work for an armed timer. */
void rm_timer_unlink(struct rm_loop *loop, struct rm_timer *t);
static inline bool rm_timer_armed(const struct rm_timer *t)
{
    return t->slot != 0;
}
/** Disarm <t> (no-op if not armed). */
static inline void rm_timer_stop(struct rm_loop *loop, struct rm_timer *t)
{
    if (rm_timer_armed(t)) rm_timer_unlink(loop, t);
}

/** Run <t> after the I/O callbacks of this iteration (no-op if already queued). */
void rm_loop_defer(struct rm_loop *loop, struct rm_task *t, rm_task_cb run);
/** Run <t> just before the loop sleeps (write coalescing).  No-op if already queued. */
void rm_loop_defer_flush(struct rm_loop *loop, struct rm_task *t, rm_task_cb run);

/** Set up an async wake-up on <loop>; returns 0 or -errno. */
int rm_async_init(struct rm_loop *loop, struct rm_async *a, void (*cb)(struct rm_async *));
void rm_async_dispose(struct rm_loop *loop, struct rm_async *a);
/** Wake <a>'s loop from any thread; several sends may coalesce into one callback (only the
 *  first send after a callback started costs a write(2)).  What the sender stored before the
 *  send is visible to the callback that follows it. */
void rm_async_send(struct rm_async *a);

#endif
