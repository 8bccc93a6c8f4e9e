#include "proxy/server/worker.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "proxy/admin/stats.h"
#include "proxy/config/snapshot.h"
#include "proxy/core/arena.h"
#include "proxy/core/buf.h"
#include "proxy/core/log.h"
#include "proxy/http/hcm.h"
#include "proxy/http/route.h"
#include "proxy/upstream/pool.h"

#define DRAIN_POLL_MS 20

uint64_t rm_worker_random(struct rm_worker *w)
{
    uint64_t x = w->rng; /* xorshift64* */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    w->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static size_t placeholder_on_data(struct rm_conn *c, const uint8_t *p, size_t n)
{
    return 0;
}
static void placeholder_on_close(struct rm_conn *c, int err) {}
static const struct rm_conn_handler placeholder = {
    .on_data = placeholder_on_data,
    .on_close = placeholder_on_close,
};

static void on_accept(struct rm_listener *l, int fd, const struct sockaddr *peer, socklen_t len)
{
    struct rm_worker_listener *wl = rm_container_of(l, struct rm_worker_listener, l);
    struct rm_conn *c = rm_conn_accepted(wl->w->loop, fd, peer, len, &placeholder, NULL);
    if (c) rm_hcm_conn_new(wl->w, wl->cfg, c);
}

static void stop_listeners(struct rm_worker *w)
{
    for (size_t i = 0; i < w->n_listeners; i++)
        rm_listener_stop(&w->listeners[i].l);
}

static void close_all(struct rm_worker *w)
{
    while (w->conns)
        rm_hcm_conn_close(w->conns);
}

static void on_drain_poll(struct rm_timer *t)
{
    struct rm_worker *w = rm_container_of(t, struct rm_worker, drain_timer);
    uint64_t now = rm_loop_now(w->loop);
    if (w->n_conns == 0 || now >= w->drain_deadline) {
        close_all(w);
        rm_loop_stop(w->loop);
        return;
    }
    rm_timer_start(w->loop, &w->drain_timer, DRAIN_POLL_MS, on_drain_poll);
}

/* ---- posted functions --------------------------------------------------------------------- */

struct rm_worker_job {
    rm_worker_fn fn;
    void *arg;
    struct rm_worker_job *next;
};

int rm_worker_post(struct rm_worker *w, rm_worker_fn fn, void *arg)
{
    struct rm_worker_job *j = malloc(sizeof(*j));
    if (!j) return -1;
    *j = (struct rm_worker_job){fn, arg, NULL};
    pthread_mutex_lock(&w->jobs_lock);
    *w->jobs_tail = j;
    w->jobs_tail = &j->next;
    pthread_mutex_unlock(&w->jobs_lock);
    rm_async_send(&w->async);
    return 0;
}

/* Run the posted functions (outside the lock) with <w>, or NULL to discard them. */
static void run_jobs(struct rm_worker *w, struct rm_worker *arg_w)
{
    pthread_mutex_lock(&w->jobs_lock);
    struct rm_worker_job *j = w->jobs;
    w->jobs = NULL;
    w->jobs_tail = &w->jobs;
    pthread_mutex_unlock(&w->jobs_lock);
    while (j) {
        struct rm_worker_job *next = j->next;
        j->fn(arg_w, j->arg);
        free(j);
        j = next;
    }
}

struct hosts_job {
    struct rm_cluster *c;
    struct rm_host_set *hs; /* a reference */
};

static void apply_hosts(struct rm_worker *w, void *arg)
{
    struct hosts_job *j = arg;
    unsigned idx = j->c->idx;
    if (w && w->snap && idx < w->snap->n_clusters && w->snap->clusters[idx] == j->c &&
        w->clusters[idx]) {
        rm_worker_cluster_set_hosts(w->clusters[idx], j->hs);
        j->hs = NULL;
    }
    rm_host_set_unref(j->hs);
    free(j);
}

int rm_worker_publish_hosts(struct rm_worker *w, struct rm_cluster *c, struct rm_host_set *hs)
{
    struct hosts_job *j = malloc(sizeof(*j));
    if (!j) return -1;
    *j = (struct hosts_job){c, rm_host_set_ref(hs)};
    if (rm_worker_post(w, apply_hosts, j) == 0) return 0;
    rm_host_set_unref(j->hs);
    free(j);
    return -1;
}

/* ---- commands ----------------------------------------------------------------------------- */

static void on_command(struct rm_async *a)
{
    struct rm_worker *w = rm_container_of(a, struct rm_worker, async);
    run_jobs(w, w);
    int cmd = atomic_load(&w->command);
    if (cmd == RM_WORKER_STOP) {
        stop_listeners(w);
        close_all(w);
        rm_loop_stop(w->loop);
        return;
    }
    if (cmd == RM_WORKER_DRAIN && !w->draining) {
        w->draining = true;
        stop_listeners(w);
        for (struct rm_hcm_conn *hc = w->conns, *next; hc; hc = next) {
            next = hc->next;
            rm_hcm_conn_drain(hc);
        }
        w->drain_deadline = rm_loop_now(w->loop) + atomic_load(&w->drain_timeout_ms);
        rm_timer_start(w->loop, &w->drain_timer, 0, on_drain_poll);
    }
}

static void *worker_main(void *arg)
{
    struct rm_worker *w = arg;
    rm_stats_shard = w->idx + 1;
    for (size_t i = 0; i < w->n_listeners; i++) {
        if (rm_listener_start(&w->listeners[i].l, w->loop, w->listen_fds[i], on_accept, w) < 0)
            rm_log_error("worker %u: cannot watch listener %s", w->idx,
                         w->listeners[i].cfg->addr_str);
        w->listen_fds[i] = -1;
    }
    rm_loop_run(w->loop);
    stop_listeners(w);
    close_all(w);
    rm_timer_stop(w->loop, &w->drain_timer);
    rm_loop_run_pending(w->loop);
    for (size_t i = 0; i < w->snap->n_clusters; i++) {
        rm_worker_cluster_free(w->clusters[i]);
        w->clusters[i] = NULL;
    }
    rm_loop_run_pending(w->loop);
    rm_buf_thread_cleanup();
    rm_arena_thread_cleanup();
    rm_route_thread_cleanup();
    return NULL;
}

struct rm_worker *rm_worker_new(unsigned idx, struct rm_snapshot *snap, int *fds)
{
    struct rm_worker *w = calloc(1, sizeof(*w));
    if (!w) return NULL;
    w->idx = idx;
    pthread_mutex_init(&w->jobs_lock, NULL);
    w->jobs_tail = &w->jobs;
    w->loop = rm_loop_new();
    w->snap = rm_snapshot_ref(snap);
    w->clusters = calloc(snap->n_clusters + 1, sizeof(*w->clusters));
    w->listeners = calloc(snap->n_listeners + 1, sizeof(*w->listeners));
    w->listen_fds = calloc(snap->n_listeners + 1, sizeof(int));
    if (!w->loop || !w->clusters || !w->listeners || !w->listen_fds) goto fail;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    w->rng = ((uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ULL) ^ ((uint64_t)idx << 32) ^ 0xabcdefULL;
    if (!w->rng) w->rng = 1;
    for (size_t i = 0; i < snap->n_clusters; i++) {
        w->clusters[i] = rm_worker_cluster_new(snap->clusters[i], w->loop);
        if (!w->clusters[i]) goto fail;
    }
    w->n_listeners = snap->n_listeners;
    for (size_t i = 0; i < snap->n_listeners; i++) {
        w->listeners[i].w = w;
        w->listeners[i].cfg = snap->listeners[i];
        w->listeners[i].l.io.fd = -1;
        w->listen_fds[i] = fds[i];
    }
    if (rm_async_init(w->loop, &w->async, on_command) < 0) goto fail;
    return w;
fail:
    rm_worker_join_free(w);
    return NULL;
}

int rm_worker_start(struct rm_worker *w)
{
    return pthread_create(&w->thread, NULL, worker_main, w) == 0 ? 0 : -1;
}

void rm_worker_drain(struct rm_worker *w, uint32_t timeout_ms)
{
    w->drain_timeout_ms = timeout_ms;
    atomic_store(&w->command, timeout_ms ? RM_WORKER_DRAIN : RM_WORKER_STOP);
    rm_async_send(&w->async);
}

void rm_worker_join_free(struct rm_worker *w)
{
    if (!w) return;
    if (w->thread) pthread_join(w->thread, NULL);
    run_jobs(w, NULL);
    if (w->listen_fds) {
        for (size_t i = 0; i < w->n_listeners; i++) {
            if (w->listen_fds[i] >= 0) close(w->listen_fds[i]);
        }
    }
    if (w->loop && w->async.io.fd >= 0 && w->async.cb) rm_async_dispose(w->loop, &w->async);
    if (w->clusters && w->snap) {
        for (size_t i = 0; i < w->snap->n_clusters; i++)
            rm_worker_cluster_free(w->clusters[i]);
    }
    free(w->clusters);
    free(w->listeners);
    free(w->listen_fds);
    rm_snapshot_unref(w->snap);
    rm_loop_free(w->loop);
    pthread_mutex_destroy(&w->jobs_lock);
    free(w);
}
