/* Worker threads: one event loop each, owning its listeners' accept sockets (SO_REUSEPORT),
 * downstream connections, upstream pools and a stats shard. */
#ifndef RM_SERVER_WORKER_H
#define RM_SERVER_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "proxy/core/loop.h"
#include "proxy/net/listener.h"
#include "proxy/server/netfilter.h"

struct rm_snapshot;
struct rm_worker_cluster;
struct rm_worker_conn;
struct rm_cluster;
struct rm_host_set;
struct rm_worker_job;
struct rm_worker;
struct rm_worker_gone;
struct rm_shadow;
struct rm_listener_drain;

/** A function posted to a worker: runs on the worker's thread with <w>, or, if the worker
 *  ended before running it, with w == NULL in rm_worker_join_free (then it must only release
 *  what <arg> holds). */
typedef void (*rm_worker_fn)(struct rm_worker *w, void *arg);

/** A worker's hold on a snapshot, counted without atomics (worker thread only): the worker holds
 *  its current one; connections and streams hold the one they use, so per-request references
 *  never touch a cache line another thread writes. */
struct rm_worker_snap {
    struct rm_snapshot *snap; /* one (atomic) reference */
    unsigned refs;
};

static inline struct rm_worker_snap *rm_worker_snap_hold(struct rm_worker_snap *ws)
{
    ws->refs++;
    return ws;
}
/** Drop a hold; the last one drops the snapshot reference.  NULL is a no-op. */
void rm_worker_snap_release(struct rm_worker_snap *ws);

struct rm_worker_listener {
    struct rm_listener l;
    struct rm_worker *w;
    struct rm_listener_cfg *cfg; /* in w->snap */
    uint64_t tag;                /* unique in the worker: connections remember it */
    struct rm_task free_task;    /* removed: freed after the loop iteration (events pending) */
};

struct rm_worker {
    unsigned idx; /* 0-based; stats shard idx + 1 */
    struct rm_loop *loop;
    pthread_t thread;
    struct rm_worker_snap *wsnap;        /* the config new connections and streams get */
    struct rm_snapshot *snap;            /* wsnap->snap */
    struct rm_worker_cluster **clusters; /* by cluster slot (NULL: not in snap) */
    size_t n_slots;
    struct rm_worker_listener **listeners; /* parallel to snap->listeners */
    size_t n_listeners;
    /* handed over by the main thread, one per listener of the first snapshot (-1 once taken),
     * until the start; n_listen_fds: their number (n_listeners follows later snapshots) */
    int *listen_fds;
    size_t n_listen_fds;
    uint64_t next_tag;
    struct rm_async async;
    _Atomic int command;                     /* RM_WORKER_* */
    pthread_mutex_t jobs_lock;               /* guards jobs / jobs_tail (any thread) */
    struct rm_worker_job *jobs, **jobs_tail; /* posted functions, FIFO */
    struct rm_worker_conn *conns;            /* downstream connections (netfilter.h) */
    struct rm_shadow *shadows; /* running request mirrors (filters/shadow.c owns the list) */
    unsigned n_conns;
    struct rm_timer drain_timer;
    struct rm_timer trim_timer; /* returns a burst's buffers to the OS once quiet (worker.c) */
    uint64_t trim_iter;         /* loop iterations when trim_timer was (re)armed */
    /* Listeners removed by config updates whose connections drain: each set's remaining
     * connections are closed <listener_drain_ms> after its removal (worker.c). */
    struct rm_worker_gone *gone;
    uint32_t listener_drain_ms; /* --drain-time-s; set before rm_worker_start, then read-only */
    uint64_t rng;
    bool draining;
    _Atomic uint32_t drain_timeout_ms; /* set by the main thread with RM_WORKER_DRAIN */
    uint64_t drain_deadline;           /* loop clock (ms) when draining must end */
};

enum { RM_WORKER_RUN, RM_WORKER_DRAIN, RM_WORKER_STOP };

/** Create a worker for <snap> with pre-bound listening sockets (<fds>, one per snapshot
 *  listener; ownership passes to the worker).  Returns NULL on failure. */
struct rm_worker *rm_worker_new(unsigned idx, struct rm_snapshot *snap, int *fds);
int rm_worker_start(struct rm_worker *w);
/** Ask the worker (from the main thread) to drain: stop accepting, finish in-flight requests,
 *  close connections, then exit its loop within <timeout_ms>. */
void rm_worker_drain(struct rm_worker *w, uint32_t timeout_ms);
/** Join and free.  Functions still posted run with w == NULL (see rm_worker_fn). */
void rm_worker_join_free(struct rm_worker *w);

/** Run fn(w, arg) on <w>'s thread, after the functions posted before it (FIFO), at its next
 *  loop iteration.  Any thread; a mutex-protected queue and the worker's rm_async, nothing on
 *  the request path.  Returns 0, or -1 when out of memory (fn is not called). */
int rm_worker_post(struct rm_worker *w, rm_worker_fn fn, void *arg);

/** Hand cluster <c>'s new membership <hs> to <w> (takes a reference of its own): the worker
 *  swaps its view (rm_worker_cluster_set_hosts) when it runs the job.  Main thread.  Returns 0
 *  or -1 (out of memory: the worker keeps its old view). */
int rm_worker_publish_hosts(struct rm_worker *w, struct rm_cluster *c, struct rm_host_set *hs);

/** The listeners one config update removed (or replaced by a listener on another socket), as
 *  counted in listener_manager.total_listeners_draining: the gauge goes up by <n> here (main
 *  thread) and down when the last reference is dropped — by the last worker whose connections
 *  of those listeners were closed (the drain time after the update) or that ended.  One
 *  reference (the caller's).  NULL when out of memory. */
struct rm_listener_drain *rm_listener_drain_new(unsigned n);
struct rm_listener_drain *rm_listener_drain_ref(struct rm_listener_drain *ld);
/** Drop a reference (any thread); NULL is a no-op. */
void rm_listener_drain_unref(struct rm_listener_drain *ld);

/** Hand <next> to <w> (main thread; <prev> is the snapshot published to it before): the
 *  worker's clusters follow (views of clusters new in <next> are made here, with their current
 *  membership; views of clusters gone are dropped once no request uses them), its listeners
 *  follow (<fds>[i], one per listener of <next>: a bound socket for a listener that <prev>
 *  does not have (rm_listener_cfg_same_socket), -1 to keep the worker's socket; ownership of
 *  the sockets passes), and new connections get <next>.  Connections keep the snapshot they
 *  started on.  Connections of removed listeners drain at once (HTTP/2 GOAWAY, HTTP/1.1
 *  connection: close) and those still open w->listener_drain_ms later are closed (their
 *  streams reset); <ld> (NULL: not counted) is those listeners' drain count: the worker holds
 *  a reference of its own until then.  Returns 0, or -1 when out of memory (nothing changes;
 *  the sockets are closed). */
int rm_worker_publish_snapshot(struct rm_worker *w, struct rm_snapshot *prev,
                               struct rm_snapshot *next, int *fds, struct rm_listener_drain *ld);

/** The worker listener with <tag>, or NULL (removed since). */
struct rm_worker_listener *rm_worker_listener_by_tag(struct rm_worker *w, uint64_t tag);

/** The worker's view of cluster <c> of its current snapshot, or NULL when <c> is not in it any
 *  more (a request on an older snapshot: 503 NC, as Envoy when the cluster is gone). */
static inline struct rm_worker_cluster *rm_worker_cluster_for(struct rm_worker *w,
                                                              const struct rm_cluster *c);
uint64_t rm_worker_random(struct rm_worker *w);

#include "proxy/upstream/pool.h"

static inline struct rm_worker_cluster *rm_worker_cluster_for(struct rm_worker *w,
                                                              const struct rm_cluster *c)
{
    struct rm_worker_cluster *wc = c->slot < w->n_slots ? w->clusters[c->slot] : NULL;
    return wc && wc->cluster == c ? wc : NULL;
}

#endif
