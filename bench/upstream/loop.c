/* remora-upstream: the per-thread event loop, its timers and the response-header scratch list. */
#include "bench/upstream/loop.h"

#include "bench/upstream/conn.h"
#include "bench/upstream/req.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

enum { MAX_EVENTS = 256, ACCEPT_BATCH = 64 };

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- timers: a binary min-heap of armed timers ----------------------------------------------- */

static void heap_set(struct rmu_loop *l, size_t i, struct rmu_timer *t)
{
    l->heap[i] = t;
    t->idx = i + 1;
}

static void heap_up(struct rmu_loop *l, size_t i)
{
    struct rmu_timer *t = l->heap[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (l->heap[p]->at_ms <= t->at_ms) break;
        heap_set(l, i, l->heap[p]);
        i = p;
    }
    heap_set(l, i, t);
}

static void heap_down(struct rmu_loop *l, size_t i)
{
    struct rmu_timer *t = l->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= l->nheap) break;
        if (c + 1 < l->nheap && l->heap[c + 1]->at_ms < l->heap[c]->at_ms) c++;
        if (t->at_ms <= l->heap[c]->at_ms) break;
        heap_set(l, i, l->heap[c]);
        i = c;
    }
    heap_set(l, i, t);
}

void rmu_timer_cancel(struct rmu_loop *l, struct rmu_timer *t)
{
    if (t->idx == 0) return;
    size_t i = t->idx - 1;
    t->idx = 0;
    struct rmu_timer *last = l->heap[--l->nheap];
    if (i == l->nheap) return;
    heap_set(l, i, last);
    heap_up(l, i);
    heap_down(l, last->idx - 1);
}

void rmu_timer_arm(struct rmu_loop *l, struct rmu_timer *t, uint64_t delay_ms)
{
    rmu_timer_cancel(l, t);
    if (l->nheap == l->capheap) {
        size_t cap = l->capheap ? l->capheap * 2 : 64;
        struct rmu_timer **h = realloc(l->heap, cap * sizeof(*h));
        if (!h) {
            fprintf(stderr, "remora-upstream: out of memory for a timer\n");
            abort();
        }
        l->heap = h;
        l->capheap = cap;
    }
    /* Fresh time, plus one: now_ms is truncated, and the timer must never fire early. */
    t->at_ms = now_ms() + delay_ms + 1;
    l->heap[l->nheap++] = t;
    heap_up(l, l->nheap - 1);
}

static void run_timers(struct rmu_loop *l)
{
    while (l->nheap > 0 && l->heap[0]->at_ms <= l->now_ms) {
        struct rmu_timer *t = l->heap[0];
        rmu_timer_cancel(l, t);
        t->cb(t);
    }
}

static int next_timeout(const struct rmu_loop *l)
{
    if (l->pending) return 0;
    if (l->nheap == 0) return -1;
    uint64_t at = l->heap[0]->at_ms;
    if (at <= l->now_ms) return 0;
    uint64_t d = at - l->now_ms;
    return d > 60000 ? 60000 : (int)d;
}

/* ---- header scratch list --------------------------------------------------------------------- */

void rmu_hlist_reset(struct rmu_hlist *hl)
{
    hl->n = 0;
    hl->blen = 0;
}

int rmu_hlist_add(struct rmu_hlist *hl, const char *name, size_t nn, const char *value, size_t vn)
{
    if (hl->n == hl->cap) {
        size_t cap = hl->cap ? hl->cap * 2 : 32;
        struct rmu_nv *v = realloc(hl->v, cap * sizeof(*v));
        if (!v) return -1;
        hl->v = v;
        hl->cap = cap;
    }
    hl->v[hl->n++] = (struct rmu_nv){{name, nn}, {value, vn}};
    return 0;
}

int rmu_hlist_reserve(struct rmu_hlist *hl, size_t total)
{
    if (hl->bcap - hl->blen >= total) return 0;
    if (hl->blen != 0) /* would move storage that entries point into */
        return -1;
    char *b = realloc(hl->bytes, total);
    if (!b) return -1;
    hl->bytes = b;
    hl->bcap = total;
    return 0;
}

char *rmu_hlist_alloc(struct rmu_hlist *hl, size_t n)
{
    if (hl->bcap - hl->blen < n) return NULL;
    char *p = hl->bytes + hl->blen;
    hl->blen += n;
    return p;
}

/* ---- the loop -------------------------------------------------------------------------------- */

static void accept_some(struct rmu_loop *l, int lfd)
{
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
                fprintf(stderr, "remora-upstream: accept: %s\n", strerror(errno));
            return;
        }
        rmu_conn_accept(l, fd);
    }
}

static void dispatch(struct rmu_loop *l, const struct epoll_event *ev)
{
    struct rmu_handle *h = ev->data.ptr;
    switch (h->kind) {
    case RMU_H_LISTEN:
        accept_some(l, h->fd);
        break;
    case RMU_H_WAKE: {
        uint64_t v;
        if (read(h->fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
            fprintf(stderr, "remora-upstream: eventfd read: %s\n", strerror(errno));
        break;
    }
    case RMU_H_CONN:
        rmu_conn_on_events(RMU_CONTAINER_OF(h, struct rmu_conn, h), ev->events);
        break;
    }
}

static void process_pending(struct rmu_loop *l)
{
    struct rmu_conn *list = l->pending;
    l->pending = NULL; /* conns re-queued while processing run next iteration */
    while (list) {
        struct rmu_conn *c = list;
        list = c->pending_next;
        c->pending_next = NULL;
        c->in_pending = false;
        rmu_conn_process(c);
    }
}

/* Take killed connections off the pending list (they may have been queued before dying). */
static void unqueue_dead(struct rmu_loop *l)
{
    struct rmu_conn **pp = &l->pending;
    while (*pp) {
        if ((*pp)->state == RMU_CONN_DEAD) {
            (*pp)->in_pending = false;
            *pp = (*pp)->pending_next;
        } else {
            pp = &(*pp)->pending_next;
        }
    }
}

static void free_dead(struct rmu_loop *l)
{
    bool queued = false;
    for (struct rmu_conn *c = l->dead; c; c = c->dead_next)
        queued = queued || c->in_pending;
    if (queued) unqueue_dead(l);
    while (l->dead) {
        struct rmu_conn *c = l->dead;
        l->dead = c->dead_next;
        rmu_conn_free(c);
    }
}

static void *loop_main(void *arg)
{
    struct rmu_loop *l = arg;
    struct epoll_event evs[MAX_EVENTS];
    while (!atomic_load_explicit(&l->stop, memory_order_relaxed)) {
        int n = epoll_wait(l->epfd, evs, MAX_EVENTS, next_timeout(l));
        if (n < 0 && errno != EINTR) {
            fprintf(stderr, "remora-upstream: epoll_wait: %s\n", strerror(errno));
            break;
        }
        l->now_ms = now_ms();
        for (int i = 0; i < n; i++)
            dispatch(l, &evs[i]);
        run_timers(l);
        process_pending(l);
        free_dead(l);
    }
    return NULL;
}

static int add_handle(struct rmu_loop *l, struct rmu_handle *h, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = h};
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, h->fd, &ev) < 0) {
        fprintf(stderr, "remora-upstream: epoll_ctl: %s\n", strerror(errno));
        return -1;
    }
    return 0;
}

struct rmu_loop *rmu_loop_new(int id, const int *lfds, size_t nlfds)
{
    struct rmu_loop *l = calloc(1, sizeof(*l));
    if (!l) goto fail_fds;
    l->id = id;
    l->epfd = -1;
    l->wake.fd = -1;
    l->wake.kind = RMU_H_WAKE;
    l->listeners = calloc(nlfds, sizeof(*l->listeners));
    if (!l->listeners) {
        free(l);
        goto fail_fds;
    }
    for (size_t i = 0; i < nlfds; i++)
        l->listeners[i] = (struct rmu_handle){RMU_H_LISTEN, lfds[i]};
    l->nlisteners = nlfds;
    l->rbuf = malloc(RMU_READ_BUF);
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    l->wake.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (!l->rbuf || l->epfd < 0 || l->wake.fd < 0) goto fail_loop;
    if (add_handle(l, &l->wake, EPOLLIN) < 0) goto fail_loop;
    for (size_t i = 0; i < nlfds; i++)
        if (add_handle(l, &l->listeners[i], EPOLLIN) < 0) goto fail_loop;
    l->now_ms = now_ms();
    return l;

fail_loop:
    fprintf(stderr, "remora-upstream: cannot set up event loop %d\n", id);
    rmu_loop_free(l); /* closes the listeners too */
    return NULL;
fail_fds:
    for (size_t i = 0; i < nlfds; i++)
        close(lfds[i]);
    return NULL;
}

int rmu_loop_start(struct rmu_loop *l)
{
    int rc = pthread_create(&l->thread, NULL, loop_main, l);
    if (rc != 0) {
        fprintf(stderr, "remora-upstream: pthread_create: %s\n", strerror(rc));
        return -1;
    }
    return 0;
}

void rmu_loop_stop_join(struct rmu_loop *l)
{
    uint64_t one = 1;
    atomic_store(&l->stop, true);
    if (write(l->wake.fd, &one, sizeof(one)) < 0)
        fprintf(stderr, "remora-upstream: eventfd write: %s\n", strerror(errno));
    pthread_join(l->thread, NULL);
}

void rmu_loop_free(struct rmu_loop *l)
{
    if (!l) return;
    for (size_t i = 0; i < l->nlisteners; i++)
        close(l->listeners[i].fd);
    free(l->listeners);
    while (l->conns)
        rmu_conn_kill(l->conns); /* unlinks from conns, queues on dead */
    free_dead(l);
    rmu_req_free_cache(l);
    if (l->wake.fd >= 0) close(l->wake.fd);
    if (l->epfd >= 0) close(l->epfd);
    free(l->heap);
    free(l->hl.v);
    free(l->hl.bytes);
    free(l->h2_nva);
    free(l->rbuf);
    free(l);
}
