#include "proxy/upstream/pool.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/core/log.h"
#include "proxy/net/tls.h"
#include "proxy/upstream/original_dst.h"

struct pool_conn {
    struct rm_pool *pool;
    struct rm_conn *conn;   /* set while connecting */
    struct rm_codec *codec; /* set once connected */
    struct pool_conn *next, *prev;
    /* idle_timeout: armed when the connection goes idle and left armed while it is busy (a
     * request then costs no timer start and stop); when it fires, it looks at the connection:
     * busy or draining, nothing; idle for less than the timeout, re-armed for the rest. */
    struct rm_timer idle_timer;
    uint64_t idle_since_ms; /* when it last went idle */
    uint32_t requests;
    unsigned priority; /* whose max_connections slot it holds */
    bool draining;
    struct sockaddr_in6 local; /* rm_pool_codec_local_addr's cache; AF_UNSPEC until asked */
    struct rm_tls_info *tls;   /* rm_pool_codec_tls_info's cache (owned) */
    bool tls_asked;
};

struct rm_pool {
    struct rm_worker_cluster *wc;
    struct rm_host *host; /* a reference */
    enum rm_http_proto proto;
    struct pool_conn conns; /* sentinel of a circular list */
    unsigned n_connecting;
    struct rm_pool_request pending; /* sentinel */
    unsigned n_pending;
    unsigned priority; /* whose max_connection_pools slot it holds */
    bool draining;     /* its host left the worker's set: on wc->drain->pools */
    struct rm_pool *next_draining;
};

/* What connect_one() did. */
enum cx_result {
    CX_STARTED,  /* connecting */
    CX_OVERFLOW, /* max_connections reached: the pending requests wait for a connection */
    CX_FAILED,   /* no socket */
};

static inline struct rm_cb *pool_cb(const struct rm_pool *p, unsigned priority)
{
    return p->wc->cluster->cb[priority];
}

static void serve_pending(struct rm_pool *p, struct pool_conn *pc);
static void maybe_connect(struct rm_pool *p);
static void check_drained(struct rm_pool *p);

/* ---- lists -------------------------------------------------------------------------------- */

static void conn_link(struct rm_pool *p, struct pool_conn *pc)
{
    pc->next = p->conns.next;
    pc->prev = &p->conns;
    p->conns.next->prev = pc;
    p->conns.next = pc;
}

static void conn_unlink(struct pool_conn *pc)
{
    pc->prev->next = pc->next;
    pc->next->prev = pc->prev;
    pc->next = pc->prev = pc;
}

static struct rm_pool_request *pending_pop(struct rm_pool *p)
{
    struct rm_pool_request *r = p->pending.next;
    if (r == &p->pending) return NULL;
    rm_pool_cancel(r);
    return r;
}

void rm_pool_dequeue(struct rm_pool_request *r)
{
    struct rm_pool *p = r->pool;
    r->prev->next = r->next;
    r->next->prev = r->prev;
    r->next = r->prev = NULL;
    r->pool = NULL;
    p->n_pending--;
    rm_stat_dec(p->wc->cluster->stats, RM_CS_UPSTREAM_RQ_PENDING_ACTIVE);
    rm_cb_release(pool_cb(p, r->priority), RM_CB_PENDING);
    check_drained(p);
}

/* ---- connection lifecycle ----------------------------------------------------------------- */

static void pool_conn_free(struct pool_conn *pc)
{
    struct rm_pool *p = pc->pool;
    struct rm_cluster *c = p->wc->cluster;
    rm_timer_stop(p->wc->loop, &pc->idle_timer);
    conn_unlink(pc);
    rm_stat_dec(c->stats, RM_CS_UPSTREAM_CX_ACTIVE);
    rm_stat_inc(c->stats, RM_CS_UPSTREAM_CX_DESTROY);
    atomic_fetch_sub_explicit(&p->host->cx_active, 1, memory_order_relaxed);
    rm_cb_release(pool_cb(p, pc->priority), RM_CB_CX);
    free(pc->tls);
    free(pc);
    check_drained(p);
}

/* A connection of a draining pool that has nothing to do closes (gracefully: a stream still
 * on it finishes first; on_codec_close frees it). */
static void drain_conn(struct pool_conn *pc)
{
    if (pc->draining || !pc->codec) return;
    pc->draining = true;
    rm_timer_stop(pc->pool->wc->loop, &pc->idle_timer);
    pc->codec->ops->shutdown(pc->codec);
}

static void on_codec_close(void *user, int err)
{
    struct pool_conn *pc = user;
    struct rm_pool *p = pc->pool;
    rm_stat_inc(p->wc->cluster->stats, RM_CS_UPSTREAM_CX_DESTROY_REMOTE);
    pool_conn_free(pc);
    if (p->n_pending) maybe_connect(p);
}

static void on_idle_timeout(struct rm_timer *t)
{
    struct pool_conn *pc = rm_container_of(t, struct pool_conn, idle_timer);
    struct rm_pool *p = pc->pool;
    uint64_t timeout = p->wc->cluster->idle_timeout_ms, now = rm_loop_now(p->wc->loop);
    /* busy (or draining): on_codec_idle arms it again when the connection goes idle */
    if (pc->draining || !timeout || pc->codec->ops->active_streams(pc->codec) > 0) return;
    if (pc->idle_since_ms + timeout > now) { /* busy in between: wait for the rest */
        rm_timer_start(p->wc->loop, &pc->idle_timer, pc->idle_since_ms + timeout - now,
                       on_idle_timeout);
        return;
    }
    rm_stat_inc(pc->pool->wc->cluster->stats, RM_CS_UPSTREAM_CX_DESTROY_LOCAL);
    pc->codec->ops->close(pc->codec);
    pool_conn_free(pc);
}

static void on_codec_idle(void *user)
{
    struct pool_conn *pc = user;
    struct rm_pool *p = pc->pool;
    struct rm_cluster *c = p->wc->cluster;
    if (pc->draining) return;
    if (c->max_requests_per_connection && pc->requests >= c->max_requests_per_connection) {
        pc->draining = true;
        pc->codec->ops->shutdown(pc->codec);
        return;
    }
    if (p->n_pending) {
        serve_pending(p, pc);
        return;
    }
    if (p->draining) {
        drain_conn(pc);
        return;
    }
    if (c->idle_timeout_ms && pc->codec->ops->active_streams(pc->codec) == 0) {
        pc->idle_since_ms = rm_loop_now(p->wc->loop);
        if (!rm_timer_armed(&pc->idle_timer)) /* else it fires early and re-arms itself */
            rm_timer_start(p->wc->loop, &pc->idle_timer, c->idle_timeout_ms, on_idle_timeout);
    }
}

static void on_codec_goaway(void *user)
{
    struct pool_conn *pc = user;
    pc->draining = true;
    if (pc->pool->n_pending) maybe_connect(pc->pool);
}

/* The codec's counters: Envoy's cluster.<name>.http2.* (only HTTP/2 reports). */
static void on_codec_event(void *user, enum rm_codec_event ev)
{
    struct pool_conn *pc = user;
    static const unsigned stat[] = {
        [RM_CODEC_EV_RX_RESET] = RM_CS_HTTP2_RX_RESET,
        [RM_CODEC_EV_TX_RESET] = RM_CS_HTTP2_TX_RESET,
        [RM_CODEC_EV_MESSAGING_ERROR] = RM_CS_HTTP2_RX_MESSAGING_ERROR,
    };
    rm_stat_inc(pc->pool->wc->cluster->stats, stat[ev]);
}

static const struct rm_codec_callbacks client_cb = {
    .on_idle = on_codec_idle,
    .on_goaway = on_codec_goaway,
    .on_close = on_codec_close,
    .on_event = on_codec_event,
};

static void fail_pending(struct rm_pool *p, unsigned keep, enum rm_pool_failure why, int err)
{
    while (p->n_pending > keep) {
        struct rm_pool_request *r = pending_pop(p);
        r->cb->on_failure(r, why, err);
    }
}

static void on_connected(struct rm_conn *conn, int err)
{
    struct pool_conn *pc = conn->owner;
    struct rm_pool *p = pc->pool;
    struct rm_cluster *c = p->wc->cluster;
    p->n_connecting--;
    pc->conn = NULL;
    if (err) {
        rm_stat_inc(c->stats, RM_CS_UPSTREAM_CX_CONNECT_FAIL);
        atomic_fetch_add_explicit(&p->host->cx_connect_fail, 1, memory_order_relaxed);
        if (err == -ETIMEDOUT) rm_stat_inc(c->stats, RM_CS_UPSTREAM_CX_CONNECT_TIMEOUT);
        rm_log_debug("cluster %s: connect to %s failed: %s", c->name,
                     p->wc->hs->has_logical && !p->draining ? p->wc->hs->logical->str
                                                            : p->host->addr_str,
                     strerror(-err));
        pool_conn_free(pc);
        /* HTTP/1.1: each connection was meant for one request; HTTP/2: all waited on it */
        unsigned keep =
            p->proto == RM_HTTP2 ? (p->n_connecting ? p->n_pending : 0) : p->n_connecting;
        fail_pending(p, keep, err == -ETIMEDOUT ? RM_POOL_CONNECT_TIMEOUT : RM_POOL_CONNECT_FAILURE,
                     err);
        return;
    }
    conn->high_watermark = c->codec.buffer_limit ? c->codec.buffer_limit : 1024 * 1024;
    if (p->proto == RM_HTTP2) {
        pc->codec = rm_h2_client_new(conn, &c->codec, &client_cb, pc);
        rm_stat_inc(c->stats, RM_CS_UPSTREAM_CX_HTTP2_TOTAL);
    } else {
        pc->codec = rm_h1_client_new(conn, &c->codec, &client_cb, pc);
        rm_stat_inc(c->stats, RM_CS_UPSTREAM_CX_HTTP1_TOTAL);
    }
    if (!pc->codec) {
        rm_conn_close(conn);
        pool_conn_free(pc);
        fail_pending(p, p->n_connecting, RM_POOL_CONNECT_FAILURE, -ENOMEM);
        return;
    }
    serve_pending(p, pc);
    if (p->draining) drain_conn(pc); /* after the requests it was opened for */
}

static size_t connecting_on_data(struct rm_conn *c, const uint8_t *data, size_t n)
{
    return 0;
}
static void connecting_on_close(struct rm_conn *c, int err) {}

static const struct rm_conn_handler connecting_handler = {
    .on_connected = on_connected,
    .on_data = connecting_on_data,
    .on_close = connecting_on_close,
};

/* May <p> open one more connection for <priority>?  Envoy: within the cluster's max_connections
 * and the host's per-host max_connections; otherwise upstream_cx_overflow, and a connection
 * anyway when the pool has none at all (pending requests must not wait on nothing).  On true
 * the connection holds a max_connections slot. */
static bool cx_allowed(struct rm_pool *p, unsigned priority)
{
    struct rm_cluster *c = p->wc->cluster;
    struct rm_cb *cb = pool_cb(p, priority);
    bool host_ok = !cb || atomic_load_explicit(&p->host->cx_active, memory_order_relaxed) <
                              (int64_t)cb->lim.per_host_max_cx;
    if (host_ok && rm_cb_try_acquire(cb, RM_CB_CX)) return true;
    rm_stat_inc(c->stats, RM_CS_UPSTREAM_CX_OVERFLOW);
    if (p->conns.next != &p->conns) return false;
    rm_cb_acquire_force(cb, RM_CB_CX);
    return true;
}

static enum cx_result connect_one(struct rm_pool *p)
{
    struct rm_cluster *c = p->wc->cluster;
    unsigned priority = p->n_pending ? p->pending.next->priority : 0;
    if (!cx_allowed(p, priority)) return CX_OVERFLOW;
    struct pool_conn *pc = calloc(1, sizeof(*pc));
    if (!pc) abort();
    pc->pool = p;
    pc->priority = priority;
    conn_link(p, pc);
    rm_stat_inc(c->stats, RM_CS_UPSTREAM_CX_TOTAL);
    rm_stat_inc(c->stats, RM_CS_UPSTREAM_CX_ACTIVE);
    atomic_fetch_add_explicit(&p->host->cx_total, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&p->host->cx_active, 1, memory_order_relaxed);
    int err = 0;
    p->n_connecting++;
    socklen_t len;
    const struct sockaddr *sa = rm_host_set_connect_addr(p->wc->hs, p->host, &len);
    pc->conn =
        rm_conn_connect(p->wc->loop, sa, len, c->connect_timeout_ms, &connecting_handler, pc, &err);
    struct rm_tls_ctx *tls = pc->conn ? rm_cluster_tls(c) : NULL; /* SDS may replace it */
    if (tls) { /* ALPN says what the pool speaks */
        bool h2 = p->proto == RM_HTTP2;
        const char *alpn = h2 ? RM_TLS_ALPN_H2 : RM_TLS_ALPN_HTTP11;
        if (rm_conn_start_tls(pc->conn, tls, alpn, strlen(alpn), 0) < 0) {
            rm_conn_close(pc->conn);
            pc->conn = NULL;
            err = -ENOMEM;
        }
        rm_tls_ctx_unref(tls);
    }
    if (!pc->conn) {
        p->n_connecting--;
        rm_stat_inc(c->stats, RM_CS_UPSTREAM_CX_CONNECT_FAIL);
        char a[RM_SOCKADDR_STRLEN];
        rm_sockaddr_str(sa, a, sizeof(a));
        rm_log_warn("cluster %s: cannot create a socket for %s: %s", c->name, a, strerror(-err));
        pool_conn_free(pc);
        return CX_FAILED;
    }
    return CX_STARTED;
}

static unsigned usable_streams(struct rm_pool *p)
{
    unsigned n = 0;
    for (struct pool_conn *pc = p->conns.next; pc != &p->conns; pc = pc->next) {
        if (pc->codec && !pc->draining) n += pc->codec->ops->available_streams(pc->codec);
    }
    return n;
}

/* Open connections for the pending requests: HTTP/2 one at a time while the streams of the
 * pool cannot take them all, HTTP/1.1 one per pending request not already covered by a
 * connection being opened.  Requests over max_connections stay pending. */
static void maybe_connect(struct rm_pool *p)
{
    if (p->proto == RM_HTTP2) {
        if (p->n_connecting || usable_streams(p) >= p->n_pending) return;
        if (connect_one(p) == CX_FAILED) fail_pending(p, 0, RM_POOL_CONNECT_FAILURE, -EIO);
        return;
    }
    while (p->n_connecting < p->n_pending) {
        switch (connect_one(p)) {
        case CX_STARTED:
            break;
        case CX_OVERFLOW:
            return;
        case CX_FAILED:
            fail_pending(p, p->n_connecting, RM_POOL_CONNECT_FAILURE, -EIO);
            return;
        }
    }
}

static void hand_out(struct pool_conn *pc, struct rm_pool_request *r)
{
    pc->requests++; /* the idle timer stays armed: see struct pool_conn */
    r->cb->on_ready(r, pc->codec, pc->pool->host);
}

static void serve_pending(struct rm_pool *p, struct pool_conn *pc)
{
    while (p->n_pending && !pc->draining && pc->codec->ops->available_streams(pc->codec) > 0) {
        struct rm_pool_request *r = pending_pop(p);
        hand_out(pc, r);
    }
    if (p->n_pending && p->proto == RM_HTTP2) maybe_connect(p);
}

void rm_pool_stream_done(struct rm_pool *p)
{
    /* HTTP/1.1 connections report each free slot through on_idle already */
    if (!p->n_pending || p->proto != RM_HTTP2) return;
    for (struct pool_conn *pc = p->conns.next; pc != &p->conns && p->n_pending; pc = pc->next) {
        if (pc->codec && !pc->draining) serve_pending(p, pc);
    }
}

int rm_pool_acquire(struct rm_pool *p, struct rm_pool_request *r,
                    const struct rm_pool_request_cb *cb, unsigned priority, struct rm_codec **codec)
{
    r->cb = cb;
    r->priority = priority;
    for (struct pool_conn *pc = p->conns.next; pc != &p->conns; pc = pc->next) {
        if (pc->codec && !pc->draining && pc->codec->ops->available_streams(pc->codec) > 0) {
            pc->requests++; /* the idle timer stays armed: see struct pool_conn */
            *codec = pc->codec;
            return RM_OK;
        }
    }
    struct rm_cluster *c = p->wc->cluster;
    if (!rm_cb_try_acquire(pool_cb(p, priority), RM_CB_PENDING)) {
        rm_stat_inc(c->stats, RM_CS_UPSTREAM_RQ_PENDING_OVERFLOW);
        cb->on_failure(r, RM_POOL_OVERFLOW, 0);
        return RM_DONE;
    }
    r->pool = p;
    r->next = &p->pending;
    r->prev = p->pending.prev;
    p->pending.prev->next = r;
    p->pending.prev = r;
    p->n_pending++;
    rm_stat_inc(p->wc->cluster->stats, RM_CS_UPSTREAM_RQ_PENDING_TOTAL);
    rm_stat_inc(p->wc->cluster->stats, RM_CS_UPSTREAM_RQ_PENDING_ACTIVE);
    maybe_connect(p);
    return r->pool ? RM_AGAIN : RM_DONE; /* RM_DONE: failed synchronously, callback ran */
}

/* ---- pools and draining ------------------------------------------------------------------- */

static struct rm_pool *pool_new(struct rm_worker_cluster *wc, struct rm_host *h,
                                enum rm_http_proto proto, unsigned priority)
{
    struct rm_pool *p = calloc(1, sizeof(*p));
    if (!p) abort();
    p->priority = priority;
    p->wc = wc;
    p->host = rm_host_ref(h);
    p->proto = proto == RM_HTTP2 ? RM_HTTP2 : RM_HTTP11;
    p->conns.next = p->conns.prev = &p->conns;
    p->pending.next = p->pending.prev = &p->pending;
    return p;
}

/* Close everything now (cluster teardown): waiting requests fail, streams get on_reset. */
static void pool_free(struct rm_pool *p)
{
    if (!p) return;
    p->draining = false; /* no reaping from inside the teardown */
    fail_pending(p, 0, RM_POOL_CONNECT_FAILURE, -ECANCELED);
    while (p->conns.next != &p->conns) {
        struct pool_conn *pc = p->conns.next;
        if (pc->codec)
            pc->codec->ops->close(pc->codec);
        else if (pc->conn)
            rm_conn_close(pc->conn);
        pool_conn_free(pc);
    }
    rm_cb_release(pool_cb(p, p->priority), RM_CB_CX_POOL);
    rm_host_unref(p->host);
    free(p);
}

static bool pool_drained(const struct rm_pool *p)
{
    return p->draining && p->conns.next == &p->conns && p->n_pending == 0;
}

/* The pools of hosts that left a worker's set, until they have drained: only worker clusters
 * that saw such a pool have one (most never do). */
struct rm_wc_drain {
    struct rm_worker_cluster *wc; /* NULL once the worker cluster is gone: reap frees this */
    struct rm_pool *pools;        /* linked by next_draining */
    struct rm_task reap;          /* frees the drained pools (deferred: never in a callback) */
};

/* Free the drained pools of <wc>; the others keep draining. */
static void reap_run(struct rm_task *t)
{
    struct rm_wc_drain *dr = rm_container_of(t, struct rm_wc_drain, reap);
    if (!dr->wc) { /* rm_worker_cluster_free ran meanwhile and left this to us */
        free(dr);
        return;
    }
    for (struct rm_pool **pp = &dr->pools; *pp;) {
        struct rm_pool *p = *pp;
        if (!pool_drained(p)) {
            pp = &p->next_draining;
            continue;
        }
        *pp = p->next_draining;
        pool_free(p);
    }
}

/* A draining pool with neither connection nor waiting request is freed by a deferred task
 * (this may run inside a callback of one of its connections or of its user). */
static void check_drained(struct rm_pool *p)
{
    if (pool_drained(p)) rm_loop_defer(p->wc->loop, &p->wc->drain->reap, reap_run);
}

/* <p>'s host left the set: no new request; idle connections close now, busy ones once their
 * streams end; requests already waiting still get served.  Aborts when out of memory. */
static void pool_start_drain(struct rm_worker_cluster *wc, struct rm_pool *p)
{
    if (!p) return;
    if (!wc->drain) {
        if (!(wc->drain = calloc(1, sizeof(*wc->drain)))) abort();
        wc->drain->wc = wc;
    }
    p->draining = true;
    p->next_draining = wc->drain->pools;
    wc->drain->pools = p;
    for (struct pool_conn *pc = p->conns.next; pc != &p->conns; pc = pc->next)
        drain_conn(pc); /* connections still connecting drain once their requests are out */
    check_drained(p);
}

void rm_pool_free(struct rm_pool *p)
{
    pool_free(p);
}

void rm_pool_start_drain(struct rm_worker_cluster *wc, struct rm_pool *p)
{
    pool_start_drain(wc, p);
}

/* ---- worker cluster ----------------------------------------------------------------------- */

struct rm_worker_cluster *rm_worker_cluster_new(struct rm_cluster *c, struct rm_loop *loop)
{
    struct rm_worker_cluster *wc = calloc(1, sizeof(*wc));
    if (!wc) return NULL;
    wc->cluster = c;
    wc->refs = 1;
    wc->loop = loop;
    size_t n = c->hs->n ? c->hs->n : 1;
    wc->hs = rm_host_set_ref(c->hs);
    wc->rr = (uint32_t)(rm_lb_random() % n);
    rm_cluster_ref(c);
    return wc; /* pools and WRR state come with the first request (most clusters get none) */
}

void rm_worker_cluster_free(struct rm_worker_cluster *wc)
{
    if (!wc) return;
    rm_odst_worker_free(wc);
    for (size_t i = 0; wc->pools && i < wc->hs->n * 2; i++)
        pool_free(wc->pools[i]);
    while (wc->drain && wc->drain->pools) {
        struct rm_pool *p = wc->drain->pools;
        wc->drain->pools = p->next_draining;
        pool_free(p);
    }
    free(wc->pools);
    free(wc->wrr_current);
    rm_host_set_unref(wc->hs);
    rm_cluster_unref(wc->cluster);
    wc->cluster = NULL;
    if (wc->drain && wc->drain->reap.queued)
        wc->drain->wc = NULL; /* the queued task frees it */
    else
        free(wc->drain);
    free(wc);
}

void rm_worker_cluster_release(struct rm_worker_cluster *wc)
{
    if (wc && --wc->refs == 0) rm_worker_cluster_free(wc);
}

/* Old positions by host, to find where a host of the new set was. */
struct old_pos {
    const struct rm_host *h;
    size_t i;
};

static int cmp_old_pos(const void *a, const void *b)
{
    const struct old_pos *x = a, *y = b;
    return x->h == y->h ? 0 : ((uintptr_t)x->h < (uintptr_t)y->h ? -1 : 1);
}

static const struct old_pos *find_old(const struct old_pos *v, size_t n, const struct rm_host *h)
{
    struct old_pos key = {h, 0};
    return bsearch(&key, v, n, sizeof(*v), cmp_old_pos);
}

/* The pools of <wc> (over <old>) whose hosts are in <hs>, at their new positions; the others
 * are left in wc->pools.  NULL when none stays. */
static struct rm_pool **carry_pools(struct rm_worker_cluster *wc, const struct rm_host_set *old,
                                    const struct rm_host_set *hs)
{
    size_t n = hs->n ? hs->n : 1, moved = 0;
    struct rm_pool **pools = calloc(n * 2, sizeof(*pools));
    struct old_pos *pos = calloc(old->n ? old->n : 1, sizeof(*pos));
    if (!pools || !pos) abort();
    for (size_t j = 0; j < old->n; j++)
        pos[j] = (struct old_pos){old->hosts[j], j};
    qsort(pos, old->n, sizeof(*pos), cmp_old_pos);
    for (size_t i = 0; i < hs->n; i++) { /* hosts that stay keep their pools */
        const struct old_pos *o = find_old(pos, old->n, hs->hosts[i]);
        if (!o) continue;
        for (int k = 0; k < 2; k++) {
            pools[i * 2 + k] = wc->pools[o->i * 2 + k];
            moved += pools[i * 2 + k] != NULL;
            wc->pools[o->i * 2 + k] = NULL;
        }
    }
    free(pos);
    if (moved) return pools;
    free(pools);
    return NULL;
}

void rm_worker_cluster_set_hosts(struct rm_worker_cluster *wc, struct rm_host_set *hs)
{
    struct rm_host_set *old = wc->hs;
    struct rm_pool **pools = wc->pools ? carry_pools(wc, old, hs) : NULL;
    for (size_t j = 0; wc->pools && j < old->n * 2; j++) /* hosts that left: their pools drain */
        pool_start_drain(wc, wc->pools[j]);
    free(wc->pools);
    free(wc->wrr_current); /* smooth WRR restarts: its state is by position */
    wc->pools = pools;
    wc->wrr_current = NULL;
    wc->hs = hs;
    wc->last_pick = 0;
    rm_host_set_unref(old);
}

/* Position of <h> in wc->hs: rm_lb_pick's last answer, else a scan; n when absent. */
static size_t host_index(const struct rm_worker_cluster *wc, const struct rm_host *h)
{
    const struct rm_host_set *hs = wc->hs;
    if (wc->last_pick < hs->n && hs->hosts[wc->last_pick] == h) return wc->last_pick;
    size_t i = 0;
    while (i < hs->n && hs->hosts[i] != h)
        i++;
    return i;
}

struct rm_pool *rm_worker_cluster_pool(struct rm_worker_cluster *wc, struct rm_host *h,
                                       enum rm_http_proto proto, unsigned priority)
{
    struct rm_pool **slot;
    if (wc->cluster->odst) {
        if (!(slot = rm_odst_pool_slot(wc, h, proto))) return NULL; /* a caller bug */
    } else {
        size_t i = host_index(wc, h);
        if (i == wc->hs->n) return NULL; /* not a host of this worker's set (a caller bug) */
        if (!wc->pools && !(wc->pools = calloc(wc->hs->n * 2, sizeof(*wc->pools)))) abort();
        slot = &wc->pools[i * 2 + (proto == RM_HTTP2)];
    }
    if (!*slot) {
        if (!rm_cb_try_acquire(wc->cluster->cb[priority], RM_CB_CX_POOL)) {
            rm_stat_inc(wc->cluster->stats, RM_CS_UPSTREAM_CX_POOL_OVERFLOW);
            return NULL;
        }
        *slot = pool_new(wc, h, proto, priority);
    }
    return *slot;
}

bool rm_pool_codec_local_addr(struct rm_codec *codec, struct sockaddr_in6 *out)
{
    struct pool_conn *pc = codec->user;
    if (pc->local.sin6_family == AF_UNSPEC) {
        socklen_t len = sizeof(pc->local);
        if (!codec->conn || codec->conn->io.fd < 0 ||
            getsockname(codec->conn->io.fd, (struct sockaddr *)&pc->local, &len) != 0 ||
            len > sizeof(pc->local) ||
            (pc->local.sin6_family != AF_INET && pc->local.sin6_family != AF_INET6)) {
            pc->local.sin6_family = AF_UNSPEC;
            return false;
        }
    }
    *out = pc->local;
    return true;
}

const struct rm_tls_info *rm_pool_codec_tls_info(struct rm_codec *codec)
{
    struct pool_conn *pc = codec->user;
    if (!pc->tls_asked && codec->conn) {
        pc->tls_asked = true;
        pc->tls = rm_conn_tls_info(codec->conn);
    }
    return pc->tls;
}
