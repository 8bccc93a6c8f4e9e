/* remora-upstream: one event loop per thread (epoll, edge-triggered; a binary-heap timer queue).
 *
 * A loop owns its listening sockets (SO_REUSEPORT copies when there are several threads), its
 * connections, a free list of request objects and scratch space shared by everything running on
 * it.  Nothing in a loop is touched by another thread except `stop` and the stats counters. */
#ifndef RMU_LOOP_H
#define RMU_LOOP_H

#include "bench/upstream/common.h"

#include <pthread.h>
#include <stdatomic.h>

/* A one-shot timer embedded in its owner; `cb` runs on the loop thread and may free the owner
 * (the timer is disarmed before the call). */
struct rmu_timer {
    uint64_t at_ms;
    size_t idx; /* heap position + 1; 0 when not armed */
    void (*cb)(struct rmu_timer *t);
};

/* epoll user data: the first member of every registered object. */
enum rmu_handle_kind { RMU_H_LISTEN, RMU_H_WAKE, RMU_H_CONN };
struct rmu_handle {
    enum rmu_handle_kind kind;
    int fd;
};

struct rmu_stats {
    _Atomic uint64_t conns, tls_conns, h1_reqs, h2_reqs;
};

/* Response header list built per response (scratch, reused): pointers stay valid until the
 * next rmu_hlist_reset. */
struct rmu_nv {
    struct rmu_str name, value;
};
struct rmu_hlist {
    struct rmu_nv *v;
    size_t n, cap;
    char *bytes; /* storage for generated names/values: see rmu_hlist_alloc */
    size_t blen, bcap;
};

struct rmu_conn;
struct rmu_req;

struct rmu_loop {
    int id;
    int epfd;
    struct rmu_handle wake;
    struct rmu_handle *listeners;
    size_t nlisteners;
    pthread_t thread;
    atomic_bool stop;
    uint64_t now_ms;
    struct rmu_conn *conns;   /* every live connection (doubly linked) */
    struct rmu_conn *pending; /* to process in this iteration */
    struct rmu_conn *dead;    /* to free at the end of this iteration (dead_next) */
    struct rmu_timer **heap;
    size_t nheap, capheap;
    struct rmu_req *free_reqs;
    size_t nfree_reqs;
    uint8_t *rbuf; /* RMU_READ_BUF bytes: every read lands here first */
    struct rmu_hlist hl;
    void *h2_nva; /* h2.c: nghttp2_nv scratch array */
    size_t h2_nva_cap;
    struct rmu_stats stats;
};

/* A loop serving the given listening sockets (nonblocking, already listening).  Takes the
 * fds (closed by rmu_loop_free, also on failure).  NULL on failure, with a message on stderr. */
struct rmu_loop *rmu_loop_new(int id, const int *lfds, size_t nlfds);
/* Run the loop on a new thread; 0 or -1. */
int rmu_loop_start(struct rmu_loop *l);
/* Ask the loop to stop (any thread, async-signal-unsafe but thread-safe), then wait for it. */
void rmu_loop_stop_join(struct rmu_loop *l);
/* Close everything the loop owns and free it (after rmu_loop_stop_join or before start);
 * NULL is a no-op. */
void rmu_loop_free(struct rmu_loop *l);

/* (Re)arm t to fire no earlier than delay_ms from now; cancelling an unarmed timer is a no-op.
 * Aborts when out of memory for the timer queue. */
void rmu_timer_arm(struct rmu_loop *l, struct rmu_timer *t, uint64_t delay_ms);
void rmu_timer_cancel(struct rmu_loop *l, struct rmu_timer *t);

void rmu_hlist_reset(struct rmu_hlist *hl);
/* Append a header (borrowed strings); 0 or -1 (out of memory). */
int rmu_hlist_add(struct rmu_hlist *hl, const char *name, size_t nn, const char *value, size_t vn);
/* Make sure `total` more bytes can be handed out by rmu_hlist_alloc without moving the storage;
 * call once before the allocations of one list.  0 or -1. */
int rmu_hlist_reserve(struct rmu_hlist *hl, size_t total);
/* n bytes of storage that live until the next reset (within the reservation). */
char *rmu_hlist_alloc(struct rmu_hlist *hl, size_t n);

#endif
