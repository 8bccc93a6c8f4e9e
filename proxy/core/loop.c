#include "proxy/core/loop.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define RM_LOOP_MAX_EVENTS 256

/* Timer wheel: WHEEL_LEVELS levels of 64 slots; a slot of level l spans 64^l ms, so the levels
 * cover every uint64_t deadline (11 * 6 bits >= 64).  See "timers" below. */
#define WHEEL_BITS 6
#define WHEEL_SLOTS (1u << WHEEL_BITS)
#define WHEEL_LEVELS 11

struct rm_loop {
    int epfd;
    bool stop;
    bool in_timers; /* running expired timers: re-arms land in the next iteration */
    uint64_t now_ms;
    uint64_t iterations;                               /* epoll_wait returns (rm_loop_iterations) */
    uint64_t wheel_ms;                                 /* time the wheel has run up to */
    uint32_t levels;                                   /* bit l: level l has a timer */
    uint64_t occupied[WHEEL_LEVELS];                   /* bit s: slot s is not empty */
    struct rm_timer *slots[WHEEL_LEVELS][WHEEL_SLOTS]; /* slot lists */
    struct rm_task *defer_head, **defer_tail;
    struct rm_task *flush_head, **flush_tail;
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

struct rm_loop *rm_loop_new(void)
{
    struct rm_loop *loop = calloc(1, sizeof(*loop));
    if (!loop) return NULL;
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0) {
        free(loop);
        return NULL;
    }
    loop->defer_tail = &loop->defer_head;
    loop->flush_tail = &loop->flush_head;
    loop->now_ms = loop->wheel_ms = mono_ms();
    return loop;
}

void rm_loop_free(struct rm_loop *loop)
{
    if (!loop) return;
    close(loop->epfd);
    free(loop);
}

uint64_t rm_loop_iterations(const struct rm_loop *loop)
{
    return loop->iterations;
}

uint64_t rm_loop_now(const struct rm_loop *loop)
{
    return loop->now_ms;
}

uint64_t rm_loop_update_time(struct rm_loop *loop)
{
    return loop->now_ms = mono_ms();
}

void rm_loop_stop(struct rm_loop *loop)
{
    loop->stop = true;
}

/* ---- I/O ---------------------------------------------------------------------------------- */

int rm_io_start(struct rm_loop *loop, struct rm_io *io, int fd, uint32_t events, rm_io_cb cb)
{
    struct epoll_event ev = {.events = events | EPOLLET, .data.ptr = io};
    io->fd = fd;
    io->events = events;
    io->on_ready = cb;
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) return -errno;
    return 0;
}

int rm_io_modify(struct rm_loop *loop, struct rm_io *io, uint32_t events)
{
    if (io->events == events) return 0;
    struct epoll_event ev = {.events = events | EPOLLET, .data.ptr = io};
    io->events = events;
    if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, io->fd, &ev) < 0) return -errno;
    return 0;
}

void rm_io_stop(struct rm_loop *loop, struct rm_io *io)
{
    if (io->fd >= 0) epoll_ctl(loop->epfd, EPOLL_CTL_DEL, io->fd, NULL);
    io->fd = -1;
}

/* ---- timers: a hierarchical wheel without per-tick work -----------------------------------
 *
 * A deadline is a number of ms in base 64: digit l selects the slot of level l.  An armed timer
 * sits at the level of the highest digit in which its deadline differs from wheel_ms, in the
 * slot of its own digit there: it shares every higher digit with wheel_ms, and its digit is
 * greater (level 0: greater or equal).  So every deadline at level l is earlier than every
 * deadline at level l + 1, and the next thing the wheel must do is at the start of the first
 * non-empty slot of the lowest non-empty level: fire it (level 0: one millisecond, every timer
 * in it is due then) or, above level 0, spread its timers over the lower levels ("cascade").
 * run_timers() does those steps in time order up to now, then moves wheel_ms to now (no slot
 * starts in between, so every timer keeps its place).  Start and stop are O(1) list operations;
 * a timer cascades at most once per level it starts above. */

static inline unsigned low_bit(uint64_t v)
{
    return (unsigned)__builtin_ctzll(v);
}

/* Start time of slot <s> of level <l> in the window of wheel_ms. */
static uint64_t slot_start(const struct rm_loop *loop, unsigned l, unsigned s)
{
    unsigned shift = WHEEL_BITS * l;
    uint64_t base = shift + WHEEL_BITS >= 64
                        ? 0
                        : loop->wheel_ms >> (shift + WHEEL_BITS) << (shift + WHEEL_BITS);
    return base + ((uint64_t)s << shift);
}

static void wheel_insert(struct rm_loop *loop, struct rm_timer *t)
{
    uint64_t at = t->expire_ms > loop->wheel_ms ? t->expire_ms : loop->wheel_ms;
    uint64_t diff = at ^ loop->wheel_ms;
    unsigned l = diff ? (unsigned)(63 - __builtin_clzll(diff)) / WHEEL_BITS : 0;
    unsigned s = (unsigned)(at >> (WHEEL_BITS * l)) & (WHEEL_SLOTS - 1);
    struct rm_timer **head = &loop->slots[l][s];
    t->next = *head;
    if (t->next) t->next->pprev = &t->next;
    t->pprev = head;
    *head = t;
    t->slot = (uint16_t)(1 + l * WHEEL_SLOTS + s);
    loop->occupied[l] |= 1ull << s;
    loop->levels |= 1u << l;
}

void rm_timer_unlink(struct rm_loop *loop, struct rm_timer *t)
{
    unsigned l = (t->slot - 1u) / WHEEL_SLOTS, s = (t->slot - 1u) % WHEEL_SLOTS;
    t->slot = 0;
    *t->pprev = t->next;
    if (t->next) t->next->pprev = t->pprev;
    if (loop->slots[l][s]) return;
    loop->occupied[l] &= ~(1ull << s);
    if (!loop->occupied[l]) loop->levels &= ~(1u << l);
}

void rm_timer_start(struct rm_loop *loop, struct rm_timer *t, uint64_t ms, rm_timer_cb cb)
{
    rm_timer_stop(loop, t);
    t->on_fire = cb;
    /* a 0 ms timer armed from a timer callback fires next iteration, not in this loop (which
     * would never get back to epoll_wait) */
    t->expire_ms = loop->now_ms + ms + (loop->in_timers && ms == 0);
    wheel_insert(loop, t);
}

/* The start of the next slot the wheel must process (see above); UINT64_MAX when empty. */
static uint64_t wheel_next(const struct rm_loop *loop, unsigned *level, unsigned *slot)
{
    if (!loop->levels) return UINT64_MAX;
    *level = low_bit(loop->levels);
    *slot = low_bit(loop->occupied[*level]);
    return slot_start(loop, *level, *slot);
}

static void run_timers(struct rm_loop *loop)
{
    unsigned l = 0, s = 0;
    loop->in_timers = true;
    for (uint64_t at; (at = wheel_next(loop, &l, &s)) <= loop->now_ms;) {
        loop->wheel_ms = at;
        struct rm_timer *t;
        while ((t = loop->slots[l][s])) { /* re-read: a callback may stop the others */
            rm_timer_stop(loop, t);
            if (l == 0)
                t->on_fire(t);
            else
                wheel_insert(loop, t); /* cascade: lower now that wheel_ms moved */
        }
    }
    if (loop->wheel_ms < loop->now_ms) loop->wheel_ms = loop->now_ms;
    loop->in_timers = false;
}

static int next_timeout(const struct rm_loop *loop)
{
    unsigned l = 0, s = 0;
    if (loop->defer_head || loop->flush_head) return 0;
    uint64_t at = wheel_next(loop, &l, &s); /* a cascade point wakes us early: it is bounded */
    if (at == UINT64_MAX) return -1;
    return at <= loop->now_ms ? 0 : (int)(at - loop->now_ms > 60000 ? 60000 : at - loop->now_ms);
}

/* ---- deferred tasks ----------------------------------------------------------------------- */

static void enqueue(struct rm_task ***tail, struct rm_task *t, rm_task_cb run)
{
    if (t->queued) return;
    t->queued = true;
    t->run = run;
    t->next = NULL;
    **tail = t;
    *tail = &t->next;
}

void rm_loop_defer(struct rm_loop *loop, struct rm_task *t, rm_task_cb run)
{
    enqueue(&loop->defer_tail, t, run);
}

void rm_loop_defer_flush(struct rm_loop *loop, struct rm_task *t, rm_task_cb run)
{
    enqueue(&loop->flush_tail, t, run);
}

/* Run the tasks queued now; tasks queued while running wait for the next round. */
static bool run_queue(struct rm_task **head, struct rm_task ***tail)
{
    struct rm_task *t = *head;
    if (!t) return false;
    *head = NULL;
    *tail = head;
    while (t) {
        struct rm_task *next = t->next;
        t->queued = false;
        t->next = NULL;
        t->run(t);
        t = next;
    }
    return true;
}

static void run_deferred(struct rm_loop *loop)
{
    for (int round = 0; round < 64; round++) {
        bool any = run_queue(&loop->defer_head, &loop->defer_tail);
        any |= run_queue(&loop->flush_head, &loop->flush_tail);
        if (!any) return;
    }
}

void rm_loop_run_pending(struct rm_loop *loop)
{
    rm_loop_update_time(loop);
    run_deferred(loop);
}

int rm_loop_run(struct rm_loop *loop)
{
    struct epoll_event evs[RM_LOOP_MAX_EVENTS];
    loop->stop = false;
    while (!loop->stop) {
        int n = epoll_wait(loop->epfd, evs, RM_LOOP_MAX_EVENTS, next_timeout(loop));
        loop->now_ms = mono_ms();
        loop->iterations++;
        for (int i = 0; i < n; i++) {
            struct rm_io *io = evs[i].data.ptr;
            if (io->fd >= 0) io->on_ready(io, evs[i].events);
        }
        run_timers(loop);
        run_deferred(loop);
    }
    return 0;
}

/* ---- async wake-up ------------------------------------------------------------------------ */

static void on_async(struct rm_io *io, uint32_t events)
{
    struct rm_async *a = rm_container_of(io, struct rm_async, io);
    uint64_t v;
    while (read(io->fd, &v, sizeof(v)) == sizeof(v))
        ;
    /* Cleared after the drain: a send that finds it set relies on a write(2) that is still
     * unread or on this callback; either way its data is seen (acquire) by the cb below. */
    atomic_exchange_explicit(&a->pending, false, memory_order_acq_rel);
    a->cb(a);
}

int rm_async_init(struct rm_loop *loop, struct rm_async *a, void (*cb)(struct rm_async *))
{
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0) return -errno;
    a->cb = cb;
    atomic_init(&a->pending, false);
    int rc = rm_io_start(loop, &a->io, fd, EPOLLIN, on_async);
    if (rc < 0) close(fd);
    return rc;
}

void rm_async_dispose(struct rm_loop *loop, struct rm_async *a)
{
    int fd = a->io.fd;
    rm_io_stop(loop, &a->io);
    if (fd >= 0) close(fd);
}

void rm_async_send(struct rm_async *a)
{
    if (atomic_exchange_explicit(&a->pending, true, memory_order_acq_rel)) return;
    uint64_t one = 1;
    ssize_t w = write(a->io.fd, &one, sizeof(one));
    (void)w;
}
