#include "proxy/core/loop.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define RM_LOOP_MAX_EVENTS 256

struct rm_loop {
    int epfd;
    bool stop;
    bool in_timers; /* running expired timers: re-arms land in the next iteration */
    uint64_t now_ms;
    struct rm_timer **heap; /* 1-based min-heap on expire_ms */
    uint32_t heap_len, heap_cap;
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
    loop->now_ms = mono_ms();
    return loop;
}

void rm_loop_free(struct rm_loop *loop)
{
    if (!loop) return;
    close(loop->epfd);
    free(loop->heap);
    free(loop);
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

/* ---- timers: binary min-heap, entries know their index ------------------------------------ */

static void heap_set(struct rm_loop *loop, uint32_t i, struct rm_timer *t)
{
    loop->heap[i] = t;
    t->heap_idx = i;
}

static void heap_up(struct rm_loop *loop, uint32_t i)
{
    struct rm_timer *t = loop->heap[i];
    while (i > 1 && loop->heap[i / 2]->expire_ms > t->expire_ms) {
        heap_set(loop, i, loop->heap[i / 2]);
        i /= 2;
    }
    heap_set(loop, i, t);
}

static void heap_down(struct rm_loop *loop, uint32_t i)
{
    struct rm_timer *t = loop->heap[i];
    for (;;) {
        uint32_t c = i * 2;
        if (c > loop->heap_len) break;
        if (c < loop->heap_len && loop->heap[c + 1]->expire_ms < loop->heap[c]->expire_ms) c++;
        if (loop->heap[c]->expire_ms >= t->expire_ms) break;
        heap_set(loop, i, loop->heap[c]);
        i = c;
    }
    heap_set(loop, i, t);
}

void rm_timer_stop(struct rm_loop *loop, struct rm_timer *t)
{
    uint32_t i = t->heap_idx;
    if (i == 0) return;
    t->heap_idx = 0;
    struct rm_timer *last = loop->heap[loop->heap_len--];
    if (i > loop->heap_len) return;
    heap_set(loop, i, last);
    heap_up(loop, i);
    heap_down(loop, last->heap_idx);
}

void rm_timer_start(struct rm_loop *loop, struct rm_timer *t, uint64_t ms, rm_timer_cb cb)
{
    rm_timer_stop(loop, t);
    if (loop->heap_len + 1 >= loop->heap_cap) {
        uint32_t cap = loop->heap_cap ? loop->heap_cap * 2 : 64;
        struct rm_timer **h = realloc(loop->heap, cap * sizeof(*h));
        if (!h) abort(); /* out of memory: nothing sensible to do on the data path */
        loop->heap = h;
        loop->heap_cap = cap;
    }
    t->on_fire = cb;
    /* a 0 ms timer armed from a timer callback fires next iteration, not in this loop (which
     * would never get back to epoll_wait) */
    t->expire_ms = loop->now_ms + ms + (loop->in_timers && ms == 0);
    loop->heap[++loop->heap_len] = t;
    heap_up(loop, loop->heap_len);
}

static void run_timers(struct rm_loop *loop)
{
    loop->in_timers = true;
    while (loop->heap_len && loop->heap[1]->expire_ms <= loop->now_ms) {
        struct rm_timer *t = loop->heap[1];
        rm_timer_stop(loop, t);
        t->on_fire(t);
    }
    loop->in_timers = false;
}

static int next_timeout(const struct rm_loop *loop)
{
    if (loop->defer_head || loop->flush_head) return 0;
    if (!loop->heap_len) return -1;
    uint64_t at = loop->heap[1]->expire_ms;
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
