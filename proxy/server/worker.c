#include "proxy/server/worker.h"

#include <arpa/inet.h>
#include <malloc.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "filters/shadow.h"
#include "proxy/admin/stats.h"
#include "proxy/config/snapshot.h"
#include "proxy/core/arena.h"
#include "proxy/core/buf.h"
#include "proxy/core/log.h"
#include "proxy/http/access_log.h"
#include "proxy/http/route.h"
#include "proxy/net/tls.h"
#include "proxy/server/chain_accept.h"
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

/* ---- accepting and hand-off ---------------------------------------------------------------- */

/* Whether <lc> listens on exactly <a> (address and port). */
static bool listens_on(const struct rm_listener_cfg *lc, const struct sockaddr *a)
{
    return rm_sockaddr_cmp((const struct sockaddr *)&lc->addr, a) == 0;
}

/* Whether <lc> listens on the wildcard address of <a>'s family (0.0.0.0 / [::]) and its port. */
static bool listens_on_any(const struct rm_listener_cfg *lc, const struct sockaddr *a)
{
    const struct sockaddr *l = (const struct sockaddr *)&lc->addr;
    if (l->sa_family != a->sa_family) return false;
    if (a->sa_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)l, *y = (const void *)a;
        return x->sin_addr.s_addr == htonl(INADDR_ANY) && x->sin_port == y->sin_port;
    }
    const struct sockaddr_in6 *x = (const void *)l, *y = (const void *)a;
    return IN6_IS_ADDR_UNSPECIFIED(&x->sin6_addr) && x->sin6_port == y->sin6_port;
}

/* use_original_dst (Envoy's getBalancedHandlerByAddress): the worker listener whose address is
 * the connection's restored local address, else the one on the wildcard address of that port,
 * else <wl> itself (the connection stays with the listener that accepted it).  A linear scan of
 * the worker's listeners, once per redirected connection. */
static struct rm_worker_listener *handoff_target(struct rm_worker_listener *wl,
                                                 const struct sockaddr *dst)
{
    struct rm_worker *w = wl->w;
    struct rm_worker_listener *any = NULL;
    for (size_t i = 0; i < w->n_listeners; i++) {
        struct rm_worker_listener *o = w->listeners[i];
        if (listens_on(o->cfg, dst)) return o;
        if (!any && listens_on_any(o->cfg, dst)) any = o;
    }
    return any ? any : wl;
}

static void on_accept(struct rm_listener *l, int fd, const struct sockaddr *peer, socklen_t len)
{
    struct rm_worker_listener *wl = rm_container_of(l, struct rm_worker_listener, l);
    struct rm_conn *c = rm_conn_accepted(wl->w->loop, fd, peer, len, &placeholder, NULL);
    if (!c) return;
    /* listener filters: the original destination (the inspectors have nothing to do) */
    if (wl->cfg->original_dst && rm_conn_restore_original_dst(c) && wl->cfg->use_original_dst) {
        /* the target's own listener filters would find the same address: not run again */
        wl = handoff_target(wl, (const struct sockaddr *)&c->local);
    }
    rm_chain_accept(wl, c); /* its filter chain, its TLS, its network filter */
}

void rm_worker_conn_link(struct rm_worker *w, struct rm_worker_conn *wc)
{
    wc->prev = NULL;
    wc->next = w->conns;
    if (w->conns) w->conns->prev = wc;
    w->conns = wc;
    w->n_conns++;
}

void rm_worker_conn_unlink(struct rm_worker *w, struct rm_worker_conn *wc)
{
    if (wc->closed) return;
    wc->closed = true;
    if (wc->prev)
        wc->prev->next = wc->next;
    else
        w->conns = wc->next;
    if (wc->next) wc->next->prev = wc->prev;
    w->n_conns--;
}

static void stop_listeners(struct rm_worker *w)
{
    for (size_t i = 0; i < w->n_listeners; i++)
        rm_listener_stop(&w->listeners[i]->l);
}

void rm_worker_snap_release(struct rm_worker_snap *ws)
{
    if (!ws || --ws->refs) return;
    rm_snapshot_unref(ws->snap);
    free(ws);
}

static struct rm_worker_snap *wsnap_new(struct rm_snapshot *s)
{
    struct rm_worker_snap *ws = malloc(sizeof(*ws));
    if (!ws) return NULL;
    ws->snap = rm_snapshot_ref(s);
    ws->refs = 1;
    return ws;
}

struct rm_worker_listener *rm_worker_listener_by_tag(struct rm_worker *w, uint64_t tag)
{
    for (size_t i = 0; i < w->n_listeners; i++) {
        if (w->listeners[i]->tag == tag) return w->listeners[i];
    }
    return NULL;
}

static struct rm_worker_listener *listener_new(struct rm_worker *w, struct rm_listener_cfg *cfg)
{
    struct rm_worker_listener *wl = calloc(1, sizeof(*wl));
    if (!wl) return NULL;
    wl->w = w;
    wl->cfg = cfg;
    wl->tag = ++w->next_tag;
    wl->l.io.fd = -1;
    return wl;
}

/* Watch <fd> (taken over) for <wl>; logs a failure. */
static void listener_start(struct rm_worker_listener *wl, int fd)
{
    if (fd < 0) return; /* bind_to_port: false (no socket: it only gets hand-offs) */
    if (rm_listener_start(&wl->l, wl->w->loop, fd, on_accept, wl->w) < 0)
        rm_log_error("worker %u: cannot watch listener %s", wl->w->idx, wl->cfg->addr_str);
}

static void listener_free_task(struct rm_task *t)
{
    free(rm_container_of(t, struct rm_worker_listener, free_task));
}

/* Stop <wl>, drain the connections it accepted (<now>: close them), free it (deferred: this
 * loop iteration may still hold an event for its socket). */
static void listener_remove(struct rm_worker_listener *wl, bool now)
{
    struct rm_worker *w = wl->w;
    rm_listener_stop(&wl->l);
    for (struct rm_worker_conn *wc = w->conns, *next; wc; wc = next) {
        next = wc->next;
        if (wc->listener_tag != wl->tag) continue;
        if (now)
            wc->ops->close(wc);
        else
            wc->ops->drain(wc);
    }
    rm_log_info("worker %u: listener %s (%s) removed", w->idx, wl->cfg->name, wl->cfg->addr_str);
    rm_loop_defer(w->loop, &wl->free_task, listener_free_task);
}

/* ---- removed listeners -------------------------------------------------------------------- */

struct rm_listener_drain {
    _Atomic unsigned refs;
    unsigned n;             /* listeners counted in the gauge */
    struct rm_stats *stats; /* listener_manager. (a registry reference) */
};

struct rm_listener_drain *rm_listener_drain_new(unsigned n)
{
    struct rm_listener_drain *ld = malloc(sizeof(*ld));
    if (!ld) return NULL;
    atomic_init(&ld->refs, 1);
    ld->n = n;
    ld->stats = rm_stats_get("listener_manager.", rm_listener_manager_stat_defs, RM_LM__COUNT);
    rm_stat_add(ld->stats, RM_LM_TOTAL_LISTENERS_DRAINING, n);
    return ld;
}

struct rm_listener_drain *rm_listener_drain_ref(struct rm_listener_drain *ld)
{
    if (ld) atomic_fetch_add_explicit(&ld->refs, 1, memory_order_relaxed);
    return ld;
}

void rm_listener_drain_unref(struct rm_listener_drain *ld)
{
    if (!ld || atomic_fetch_sub_explicit(&ld->refs, 1, memory_order_acq_rel) != 1) return;
    rm_stat_add(ld->stats, RM_LM_TOTAL_LISTENERS_DRAINING, -(int64_t)ld->n);
    rm_stats_release(ld->stats);
    free(ld);
}

/* The listeners one snapshot removed from a worker (stopped and freed at once; their tags are
 * kept): the connections they accepted drain, and those still open when the drain time is over
 * are closed.  On w->gone until then; freed by a deferred task (or at the worker's end). */
struct rm_worker_gone {
    struct rm_worker *w;
    struct rm_worker_gone *next; /* w->gone */
    struct rm_timer timer;
    struct rm_task free_task;
    struct rm_listener_drain *ld; /* a reference, or NULL (not counted) */
    size_t n;
    uint64_t tags[]; /* of the removed worker listeners */
};

static void gone_free(struct rm_worker_gone *g)
{
    rm_timer_stop(g->w->loop, &g->timer);
    rm_listener_drain_unref(g->ld);
    free(g);
}

static void gone_free_task(struct rm_task *t)
{
    gone_free(rm_container_of(t, struct rm_worker_gone, free_task));
}

static bool gone_has(const struct rm_worker_gone *g, uint64_t tag)
{
    for (size_t i = 0; i < g->n; i++) {
        if (g->tags[i] == tag) return true;
    }
    return false;
}

/* The drain time is over: close what is left (in-flight streams are reset). */
static void on_gone_deadline(struct rm_timer *t)
{
    struct rm_worker_gone *g = rm_container_of(t, struct rm_worker_gone, timer);
    struct rm_worker *w = g->w;
    unsigned closed = 0;
    for (struct rm_worker_conn *wc = w->conns, *next; wc; wc = next) {
        next = wc->next; /* closing frees from a deferred task: <next> stays readable */
        if (wc->closed || !gone_has(g, wc->listener_tag)) continue;
        wc->ops->close(wc);
        closed++;
    }
    if (closed)
        rm_log_info("worker %u: drain time of removed listeners over: %u connection(s) closed",
                    w->idx, closed);
    for (struct rm_worker_gone **pp = &w->gone; *pp; pp = &(*pp)->next) {
        if (*pp == g) {
            *pp = g->next;
            break;
        }
    }
    rm_loop_defer(w->loop, &g->free_task, gone_free_task);
}

/* The worker listeners left in old[0..n) (NULL: kept) leave; <ld> (may be NULL) counts them. */
static void remove_listeners(struct rm_worker *w, struct rm_worker_listener **old, size_t n,
                             struct rm_listener_drain *ld)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += old[i] != NULL;
    if (!k) return;
    struct rm_worker_gone *g = malloc(sizeof(*g) + k * sizeof(g->tags[0]));
    if (g) {
        *g = (struct rm_worker_gone){.w = w, .ld = rm_listener_drain_ref(ld)};
        g->next = w->gone;
        w->gone = g;
        rm_timer_start(w->loop, &g->timer, w->listener_drain_ms, on_gone_deadline);
    } else {
        rm_log_error("worker %u: out of memory: connections of removed listeners close now",
                     w->idx);
    }
    for (size_t i = 0; i < n; i++) {
        if (!old[i]) continue;
        if (g) g->tags[g->n++] = old[i]->tag;
        listener_remove(old[i], !g);
        old[i] = NULL;
    }
}

/* At the worker's end: every connection is closed already. */
static void free_gone(struct rm_worker *w)
{
    while (w->gone) {
        struct rm_worker_gone *g = w->gone;
        w->gone = g->next;
        gone_free(g);
    }
}

/* Make room for slot <slot> in w->clusters.  Returns 0 or -1. */
static int grow_slots(struct rm_worker *w, size_t slot)
{
    if (slot < w->n_slots) return 0;
    size_t n = w->n_slots ? w->n_slots : 16;
    while (n <= slot)
        n *= 2;
    struct rm_worker_cluster **v = realloc(w->clusters, n * sizeof(*v));
    if (!v) return -1;
    memset(v + w->n_slots, 0, (n - w->n_slots) * sizeof(*v));
    w->clusters = v;
    w->n_slots = n;
    return 0;
}

static void free_clusters(struct rm_worker *w)
{
    for (size_t i = 0; w->clusters && i < w->n_slots; i++) {
        rm_worker_cluster_release(w->clusters[i]);
        w->clusters[i] = NULL;
    }
}

static void close_all(struct rm_worker *w)
{
    while (w->conns)
        w->conns->ops->close(w->conns);
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
    struct rm_worker_cluster *wc = w ? rm_worker_cluster_for(w, j->c) : NULL;
    if (wc) {
        rm_worker_cluster_set_hosts(wc, j->hs);
        j->hs = NULL;
    }
    rm_host_set_unref(j->hs);
    rm_cluster_unref(j->c);
    free(j);
}

int rm_worker_publish_hosts(struct rm_worker *w, struct rm_cluster *c, struct rm_host_set *hs)
{
    struct hosts_job *j = malloc(sizeof(*j));
    if (!j) return -1;
    *j = (struct hosts_job){rm_cluster_ref(c), rm_host_set_ref(hs)};
    if (rm_worker_post(w, apply_hosts, j) == 0) return 0;
    rm_host_set_unref(j->hs);
    rm_cluster_unref(j->c);
    free(j);
    return -1;
}

/* ---- snapshots ---------------------------------------------------------------------------- */

struct snapshot_job {
    struct rm_snapshot *snap; /* a reference */
    struct rm_worker_cluster **added;
    size_t n_added;
    struct rm_cluster **removed; /* references */
    size_t n_removed;
    int *fds;                     /* [snap->n_listeners] */
    struct rm_listener_drain *ld; /* a reference, or NULL */
};

static void snapshot_job_free(struct snapshot_job *j)
{
    for (size_t i = 0; i < j->n_added; i++)
        rm_worker_cluster_free(j->added[i]);
    for (size_t i = 0; i < j->n_removed; i++)
        rm_cluster_unref(j->removed[i]);
    for (size_t i = 0; j->fds && i < j->snap->n_listeners; i++) {
        if (j->fds[i] >= 0) close(j->fds[i]);
    }
    rm_listener_drain_unref(j->ld);
    rm_snapshot_unref(j->snap);
    free(j->added);
    free(j->removed);
    free(j->fds);
    free(j);
}

static void swap_clusters(struct rm_worker *w, struct snapshot_job *j)
{
    for (size_t i = 0; i < j->n_removed; i++) {
        struct rm_worker_cluster *wc = rm_worker_cluster_for(w, j->removed[i]);
        if (!wc) continue;
        w->clusters[j->removed[i]->slot] = NULL;
        rm_worker_cluster_release(wc); /* requests still using it keep it */
    }
    for (size_t i = 0; i < j->n_added; i++) {
        struct rm_worker_cluster *wc = j->added[i];
        if (grow_slots(w, wc->cluster->slot)) abort();
        rm_worker_cluster_release(w->clusters[wc->cluster->slot]);
        w->clusters[wc->cluster->slot] = wc;
        j->added[i] = NULL;
    }
    j->n_added = 0;
}

/* The worker listener of the old set with <lc>'s socket, taken out of <old>, or NULL. */
static struct rm_worker_listener *take_listener(struct rm_worker_listener **old, size_t n,
                                                const struct rm_listener_cfg *lc)
{
    for (size_t i = 0; i < n; i++) {
        if (old[i] && rm_listener_cfg_same_socket(old[i]->cfg, lc)) {
            struct rm_worker_listener *wl = old[i];
            old[i] = NULL;
            return wl;
        }
    }
    return NULL;
}

static void swap_listeners(struct rm_worker *w, struct snapshot_job *j,
                           struct rm_worker_listener **next)
{
    struct rm_snapshot *s = j->snap;
    for (size_t i = 0; i < s->n_listeners; i++) {
        struct rm_worker_listener *wl =
            j->fds[i] < 0 ? take_listener(w->listeners, w->n_listeners, s->listeners[i]) : NULL;
        if (wl) {
            wl->cfg = s->listeners[i];
        } else {
            wl = next[i]; /* made for a new socket; an unbound listener is made here */
            if (!wl && !(wl = listener_new(w, s->listeners[i]))) abort();
            next[i] = NULL;
            listener_start(wl, j->fds[i]);
            j->fds[i] = -1;
        }
        next[i] = wl;
    }
    remove_listeners(w, w->listeners, w->n_listeners, j->ld);
    free(w->listeners);
    w->listeners = next;
    w->n_listeners = s->n_listeners;
}

static void apply_snapshot(struct rm_worker *w, void *arg)
{
    struct snapshot_job *j = arg;
    if (!w || w->draining) {
        snapshot_job_free(j);
        return;
    }
    size_t nl = j->snap->n_listeners;
    struct rm_worker_listener **next = calloc(nl + 1, sizeof(*next));
    for (size_t i = 0; next && i < nl; i++) {
        if (j->fds[i] >= 0 && !(next[i] = listener_new(w, j->snap->listeners[i]))) abort();
    }
    if (!next) abort(); /* a worker that cannot follow its config must not serve a stale one */
    struct rm_worker_snap *ws = wsnap_new(j->snap);
    if (!ws) abort();
    swap_clusters(w, j);
    swap_listeners(w, j, next);
    rm_worker_snap_release(w->wsnap);
    w->wsnap = ws;
    w->snap = ws->snap;
    /* connections let go of the snapshot they held at once, not at their next request: an idle
     * keep-alive connection must not keep removed clusters (their pools, their stats) alive */
    for (struct rm_worker_conn *wc = w->conns; wc; wc = wc->next)
        wc->ops->follow_config(wc);
    snapshot_job_free(j);
}

static bool has_cluster(const struct rm_snapshot *s, const struct rm_cluster *c)
{
    return rm_snapshot_cluster(s, c->name) == c;
}

int rm_worker_publish_snapshot(struct rm_worker *w, struct rm_snapshot *prev,
                               struct rm_snapshot *next, int *fds, struct rm_listener_drain *ld)
{
    struct snapshot_job *j = calloc(1, sizeof(*j));
    if (!j) goto fail_fds;
    j->snap = rm_snapshot_ref(next);
    j->fds = fds;
    j->ld = rm_listener_drain_ref(ld);
    j->added = calloc(next->n_clusters + 1, sizeof(*j->added));
    j->removed = calloc(prev->n_clusters + 1, sizeof(*j->removed));
    if (!j->added || !j->removed) goto fail;
    for (size_t i = 0; i < next->n_clusters; i++) {
        struct rm_cluster *c = next->clusters[i];
        if (has_cluster(prev, c)) continue;
        if (!(j->added[j->n_added] = rm_worker_cluster_new(c, w->loop))) goto fail;
        j->n_added++;
    }
    for (size_t i = 0; i < prev->n_clusters; i++) {
        struct rm_cluster *c = prev->clusters[i];
        if (!has_cluster(next, c)) j->removed[j->n_removed++] = rm_cluster_ref(c);
    }
    if (rm_worker_post(w, apply_snapshot, j) == 0) return 0;
fail:
    snapshot_job_free(j);
    return -1;
fail_fds:
    for (size_t i = 0; i < next->n_listeners; i++) {
        if (fds[i] >= 0) close(fds[i]);
    }
    free(fds);
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
        for (struct rm_worker_conn *wc = w->conns, *next; wc; wc = next) {
            next = wc->next;
            wc->ops->drain(wc);
        }
        w->drain_deadline = rm_loop_now(w->loop) + atomic_load(&w->drain_timeout_ms);
        rm_timer_start(w->loop, &w->drain_timer, 0, on_drain_poll);
    }
}

/* ---- returning memory after bursts --------------------------------------------------------- */

/* A burst (e.g. a thousand connections opening at once) leaves its I/O buffers, arena chunks and
 * nghttp2 blocks in the thread's caches and malloc's free lists, resident for good.  Once the
 * buffers spill (rm_buf's trim hook), the worker waits for a quiet period and gives them back:
 * the caches down to a few blocks each, then malloc_trim.  "Quiet": fewer than TRIM_QUIET_ITERS
 * loop wake-ups in TRIM_MS. */
#define TRIM_MS 250
#define TRIM_QUIET_ITERS 25
#define TRIM_KEEP 4

static void on_trim(struct rm_timer *t)
{
    struct rm_worker *w = rm_container_of(t, struct rm_worker, trim_timer);
    uint64_t it = rm_loop_iterations(w->loop);
    if (it - w->trim_iter > TRIM_QUIET_ITERS) { /* still busy: its buffers are in use anyway */
        w->trim_iter = it;
        rm_timer_start(w->loop, &w->trim_timer, TRIM_MS, on_trim);
        return;
    }
    size_t freed = rm_buf_trim(TRIM_KEEP) + rm_arena_trim(TRIM_KEEP * 4) +
                   rm_h2_mem_trim(TRIM_KEEP * RM_BUF_BLOCK);
    malloc_trim(0);
    rm_log_debug("worker %u: quiet after a burst: %zu KiB of cached blocks freed, heap trimmed",
                 w->idx, freed / 1024);
}

static void trim_hook(void *ctx)
{
    struct rm_worker *w = ctx;
    if (rm_timer_armed(&w->trim_timer)) return;
    w->trim_iter = rm_loop_iterations(w->loop);
    rm_timer_start(w->loop, &w->trim_timer, TRIM_MS, on_trim);
}

static void *worker_main(void *arg)
{
    struct rm_worker *w = arg;
    rm_stats_shard = w->idx + 1;
    rm_buf_set_trim_hook(trim_hook, w);
    for (size_t i = 0; i < w->n_listeners; i++) {
        listener_start(w->listeners[i], w->listen_fds[i]);
        w->listen_fds[i] = -1;
    }
    rm_loop_run(w->loop);
    stop_listeners(w);
    close_all(w);
    rm_shadow_cancel_all(w);
    rm_timer_stop(w->loop, &w->drain_timer);
    rm_timer_stop(w->loop, &w->trim_timer);
    rm_buf_set_trim_hook(NULL, NULL);
    free_gone(w);
    rm_loop_run_pending(w->loop);
    free_clusters(w);
    rm_loop_run_pending(w->loop);
    rm_access_log_thread_cleanup(w->loop); /* hands the last streams' lines to the flush thread */
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
    w->wsnap = wsnap_new(snap);
    w->snap = snap;
    w->listeners = calloc(snap->n_listeners + 1, sizeof(*w->listeners));
    w->listen_fds = calloc(snap->n_listeners + 1, sizeof(int));
    if (!w->loop || !w->wsnap || !w->listeners || !w->listen_fds) goto fail;
    w->n_listen_fds = snap->n_listeners;
    for (size_t i = 0; i < w->n_listen_fds; i++)
        w->listen_fds[i] = -1;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    w->rng = ((uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ULL) ^ ((uint64_t)idx << 32) ^ 0xabcdefULL;
    if (!w->rng) w->rng = 1;
    for (size_t i = 0; i < snap->n_clusters; i++) {
        struct rm_cluster *c = snap->clusters[i];
        if (grow_slots(w, c->slot) || !(w->clusters[c->slot] = rm_worker_cluster_new(c, w->loop)))
            goto fail;
    }
    for (size_t i = 0; i < snap->n_listeners; i++) {
        if (!(w->listeners[i] = listener_new(w, snap->listeners[i]))) goto fail;
        w->n_listeners++;
    }
    for (size_t i = 0; i < snap->n_listeners; i++) {
        w->listen_fds[i] = fds[i];
        fds[i] = -1;
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
        for (size_t i = 0; i < w->n_listen_fds; i++) {
            if (w->listen_fds[i] >= 0) close(w->listen_fds[i]);
        }
    }
    if (w->loop && w->async.io.fd >= 0 && w->async.cb) rm_async_dispose(w->loop, &w->async);
    free_gone(w);
    free_clusters(w);
    free(w->clusters);
    for (size_t i = 0; w->listeners && i < w->n_listeners; i++)
        free(w->listeners[i]);
    free(w->listeners);
    free(w->listen_fds);
    rm_worker_snap_release(w->wsnap);
    rm_loop_free(w->loop);
    pthread_mutex_destroy(&w->jobs_lock);
    free(w);
}
