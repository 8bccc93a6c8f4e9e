#include "proxy/tcp/tcp_proxy.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proxy/admin/stats.h"
#include "proxy/config/snapshot.h"
#include "proxy/core/log.h"
#include "proxy/http/access_log.h"
#include "proxy/net/conn.h"
#include "proxy/net/tls.h"
#include "proxy/server/worker.h"
#include "proxy/upstream/original_dst.h"
#include "proxy/upstream/pool.h"

/* What access logs say of a connection (only with access_log). */
struct tcp_log {
    const char *flags; /* Envoy's response flag (static), or NULL */
    uint64_t bytes_rx, bytes_tx;
    struct timespec start_wall;
    struct sockaddr_in6 peer, local, up_local; /* AF_UNSPEC: unknown */
    struct rm_tls_info *tls;                   /* the downstream's TLS session, or NULL */
    bool tls_asked;
};

/* One downstream connection and its upstream.  Owned by the worker's list from accept until
 * finish(); freed by a deferred task.  The conns report to it through their handlers; each
 * pointer is cleared when its conn reports on_close (the conn frees itself) or is closed. */
struct tcp_conn {
    struct rm_worker_conn base; /* ops = &rm_tcp_proxy_netfilter */
    struct rm_worker *w;
    /* the config it was accepted on (cfg is in it), held until connected, or to the end by a
     * connection that logs (its loggers are the config's); both NULL once let go */
    struct rm_worker_snap *wsnap;
    const struct rm_tcp_proxy_cfg *cfg;
    struct rm_stats *stats, *listener_stats; /* own references (tcp.<prefix>., listener.<addr>.) */
    struct rm_conn *down, *up;
    struct rm_worker_cluster *wc; /* held while the connection lives, or NULL (no route) */
    struct rm_host *host;         /* the attempt's host (a reference), or NULL */
    struct rm_host *tried;        /* the previous attempt's host (a reference), or NULL */
    uint32_t buffer_limit;        /* per_connection_buffer_limit_bytes, both directions */
    uint32_t idle_ms, max_duration_ms, max_attempts;
    unsigned attempts;
    bool cx_held;   /* upstream_cx_active counted, a max_connections slot held */
    bool connected; /* the upstream is up: bytes flow */
    bool down_eof, up_eof;
    struct rm_timer timer; /* idle_timeout and max_downstream_connection_duration */
    uint64_t start_ms, activity_ms;
    size_t pending_seen; /* output queued both ways when the timer last looked */
    struct tcp_log *log; /* NULL without access_log */
    struct rm_task free_task;
};

static inline struct rm_loop *loop_of(const struct tcp_conn *tc)
{
    return tc->w->loop;
}

static inline struct rm_stats *cstats(const struct tcp_conn *tc)
{
    return tc->wc->cluster->stats;
}

/* ---- end ---------------------------------------------------------------------------------- */

static void free_task_run(struct rm_task *t)
{
    struct tcp_conn *tc = rm_container_of(t, struct tcp_conn, free_task);
    rm_host_unref(tc->host);
    rm_host_unref(tc->tried);
    rm_worker_cluster_release(tc->wc);
    rm_worker_snap_release(tc->wsnap);
    rm_stats_release(tc->stats);
    rm_stats_release(tc->listener_stats);
    if (tc->log) free(tc->log->tls);
    free(tc->log);
    free(tc);
}

static const struct sockaddr *addr_or_null(const struct sockaddr_in6 *a)
{
    return a->sin6_family == AF_INET || a->sin6_family == AF_INET6 ? (const void *)a : NULL;
}

/* The connection's access log lines (before its conns close: the TLS session is read now). */
static void write_logs(struct tcp_conn *tc)
{
    struct tcp_log *lg = tc->log;
    if (!lg || !tc->cfg) return;
    if (tc->down && !lg->tls_asked) {
        lg->tls_asked = true;
        lg->tls = rm_conn_tls_info(tc->down);
    }
    const struct rm_host *h = tc->host ? tc->host : tc->tried;
    struct rm_alog_info in = {
        .resp_flags = lg->flags,
        .bytes_rx = lg->bytes_rx,
        .bytes_tx = lg->bytes_tx,
        .start = lg->start_wall,
        .duration_ms = (int64_t)(rm_loop_now(loop_of(tc)) - tc->start_ms),
        .req_duration_ms = -1,
        .resp_duration_ms = -1,
        .upstream_host = h ? h->addr_str : NULL,
        .upstream_cluster = tc->wc ? tc->wc->cluster->name : NULL,
        .down_remote = addr_or_null(&lg->peer),
        .down_local = addr_or_null(&lg->local),
        .upstream_local = addr_or_null(&lg->up_local),
        .down_tls = lg->tls,
        .attempts = tc->attempts,
    };
    for (size_t i = 0; i < tc->cfg->n_access_logs; i++)
        rm_access_log_write(tc->cfg->access_logs[i], loop_of(tc), &in);
}

/* A new connection that logs: its start and addresses. */
static struct tcp_log *log_new(struct rm_conn *down)
{
    struct tcp_log *lg = calloc(1, sizeof(*lg));
    if (!lg) return NULL;
    clock_gettime(CLOCK_REALTIME, &lg->start_wall);
    if (down->peer_len <= sizeof(lg->peer)) memcpy(&lg->peer, &down->peer, down->peer_len);
    socklen_t len = sizeof(lg->local);
    if (getsockname(down->io.fd, (struct sockaddr *)&lg->local, &len) != 0)
        lg->local.sin6_family = AF_UNSPEC;
    return lg;
}

/* The upstream connection of this attempt is gone: its counts and its circuit breaker slot. */
static void release_upstream(struct tcp_conn *tc)
{
    if (!tc->cx_held) return;
    tc->cx_held = false;
    struct rm_cluster *c = tc->wc->cluster;
    rm_stat_dec(c->stats, RM_CS_UPSTREAM_CX_ACTIVE);
    rm_stat_inc(c->stats, RM_CS_UPSTREAM_CX_DESTROY);
    atomic_fetch_sub_explicit(&tc->host->cx_active, 1, memory_order_relaxed);
    rm_cb_release(c->cb[0], RM_CB_CX);
}

/* Close both sides now (those still open) and free later.  <why> is for the debug log (Envoy's
 * response flag or the cause). */
static void finish(struct tcp_conn *tc, const char *why)
{
    if (tc->base.closed) return;
    rm_worker_conn_unlink(tc->w, &tc->base);
    rm_log_debug("tcp_proxy %s: connection closed (%s)", tc->cfg ? tc->cfg->stat_prefix : "-", why);
    write_logs(tc);
    rm_timer_stop(loop_of(tc), &tc->timer);
    if (tc->down) rm_conn_close(tc->down);
    if (tc->up) rm_conn_close(tc->up);
    tc->down = tc->up = NULL;
    if (tc->wc) release_upstream(tc);
    rm_stat_dec(tc->listener_stats, RM_LS_DOWNSTREAM_CX_ACTIVE);
    rm_stat_inc(tc->listener_stats, RM_LS_DOWNSTREAM_CX_DESTROY);
    rm_loop_defer(loop_of(tc), &tc->free_task, free_task_run);
}

/* Close on a failure with Envoy's response flag <flag> (access logs). */
static void fail(struct tcp_conn *tc, const char *flag)
{
    if (tc->log) tc->log->flags = flag;
    finish(tc, flag);
}

/* Both directions saw their FIN: write what is left and close each side. */
static void maybe_done(struct tcp_conn *tc)
{
    if (!tc->down_eof || !tc->up_eof) return;
    rm_conn_close_after_flush(tc->down);
    rm_conn_close_after_flush(tc->up);
    tc->down = tc->up = NULL;
    finish(tc, "both directions done");
}

/* ---- timers ------------------------------------------------------------------------------- */

static void on_timer(struct rm_timer *t);

static void arm(struct tcp_conn *tc, uint64_t now)
{
    uint64_t at = UINT64_MAX;
    if (tc->idle_ms) at = tc->activity_ms + tc->idle_ms;
    if (tc->max_duration_ms && tc->start_ms + tc->max_duration_ms < at)
        at = tc->start_ms + tc->max_duration_ms;
    if (at != UINT64_MAX)
        rm_timer_start(loop_of(tc), &tc->timer, at > now ? at - now : 0, on_timer);
}

/* Activity is a store per read (no timer work); the timer, when it fires, looks at it and at
 * whether queued output moved (bytes sent count as activity too, as Envoy's). */
static void on_timer(struct rm_timer *t)
{
    struct tcp_conn *tc = rm_container_of(t, struct tcp_conn, timer);
    uint64_t now = rm_loop_now(loop_of(tc));
    if (tc->max_duration_ms && now >= tc->start_ms + tc->max_duration_ms) {
        rm_stat_inc(tc->stats, RM_TCP_MAX_DOWNSTREAM_CONNECTION_DURATION);
        finish(tc, "max_downstream_connection_duration");
        return;
    }
    size_t pending =
        (tc->down ? rm_conn_pending(tc->down) : 0) + (tc->up ? rm_conn_pending(tc->up) : 0);
    if (pending != tc->pending_seen) {
        tc->pending_seen = pending;
        tc->activity_ms = now;
    }
    if (tc->idle_ms && now >= tc->activity_ms + tc->idle_ms) {
        rm_stat_inc(tc->stats, RM_TCP_IDLE_TIMEOUT);
        finish(tc, "idle_timeout");
        return;
    }
    arm(tc, now);
}

/* ---- relay -------------------------------------------------------------------------------- */

/* Downstream bytes go upstream; reading downstream stops while the upstream's output is above
 * the buffer limit (resumed by up_on_drained). */
static size_t down_on_data(struct rm_conn *c, const uint8_t *p, size_t n)
{
    struct tcp_conn *tc = c->owner;
    if (!tc->connected) return 0; /* kept buffered (reading is paused until connected) */
    tc->activity_ms = rm_loop_now(loop_of(tc));
    rm_stat_add(tc->stats, RM_TCP_DOWNSTREAM_CX_RX_BYTES_TOTAL, (int64_t)n);
    if (tc->log) {
        tc->log->bytes_rx += n;
        if (!tc->log->tls_asked) { /* past the handshake: its facts are known */
            tc->log->tls_asked = true;
            tc->log->tls = rm_conn_tls_info(c);
        }
    }
    rm_stat_add(cstats(tc), RM_CS_UPSTREAM_CX_TX_BYTES_TOTAL, (int64_t)n);
    rm_conn_write(tc->up, p, n);
    if (tc->up->flags & RM_CONN_OVER_HIGH) {
        rm_conn_pause_reading(c, true);
        rm_stat_inc(tc->stats, RM_TCP_DOWNSTREAM_FLOW_CONTROL_PAUSED_READING_TOTAL);
    }
    return n;
}

static size_t up_on_data(struct rm_conn *c, const uint8_t *p, size_t n)
{
    struct tcp_conn *tc = c->owner;
    tc->activity_ms = rm_loop_now(loop_of(tc));
    rm_stat_add(cstats(tc), RM_CS_UPSTREAM_CX_RX_BYTES_TOTAL, (int64_t)n);
    rm_stat_add(tc->stats, RM_TCP_DOWNSTREAM_CX_TX_BYTES_TOTAL, (int64_t)n);
    if (tc->log) tc->log->bytes_tx += n;
    rm_conn_write(tc->down, p, n);
    if (tc->down->flags & RM_CONN_OVER_HIGH) rm_conn_pause_reading(c, true);
    return n;
}

/* The upstream took enough: read downstream again. */
static void up_on_drained(struct rm_conn *c)
{
    struct tcp_conn *tc = c->owner;
    if (!tc->down || tc->down_eof || !(tc->down->flags & RM_CONN_READ_PAUSED)) return;
    rm_conn_pause_reading(tc->down, false);
    rm_stat_inc(tc->stats, RM_TCP_DOWNSTREAM_FLOW_CONTROL_RESUMED_READING_TOTAL);
}

static void down_on_drained(struct rm_conn *c)
{
    struct tcp_conn *tc = c->owner;
    if (tc->up && tc->connected && !tc->up_eof) rm_conn_pause_reading(tc->up, false);
}

/* Half-close: a FIN is passed on as SHUT_WR once what came before it is written. */
static void down_on_eof(struct rm_conn *c)
{
    struct tcp_conn *tc = c->owner;
    tc->down_eof = true;
    if (!tc->connected) return; /* passed on when the upstream is up */
    rm_conn_shutdown_write(tc->up);
    maybe_done(tc);
}

static void up_on_eof(struct rm_conn *c)
{
    struct tcp_conn *tc = c->owner;
    tc->up_eof = true;
    rm_conn_shutdown_write(tc->down);
    maybe_done(tc);
}

/* A reset or an error on one side closes the other, after writing what it had queued for it
 * (Envoy's FlushWrite). */
static void down_on_close(struct rm_conn *c, int err)
{
    struct tcp_conn *tc = c->owner;
    tc->down = NULL;
    if (tc->up && tc->connected && rm_conn_pending(tc->up)) { /* Envoy: FlushWrite */
        rm_conn_close_after_flush(tc->up);
        tc->up = NULL;
    }
    finish(tc, err ? "downstream error" : "downstream closed");
}

static void up_on_close(struct rm_conn *c, int err)
{
    struct tcp_conn *tc = c->owner;
    tc->up = NULL;
    if (tc->down && rm_conn_pending(tc->down)) { /* what the upstream sent first still goes */
        rm_conn_close_after_flush(tc->down);
        tc->down = NULL;
    }
    finish(tc, err ? "upstream error" : "upstream closed");
}

static const struct rm_conn_handler down_handler = {
    .on_data = down_on_data,
    .on_drained = down_on_drained,
    .on_close = down_on_close,
    .on_eof = down_on_eof,
};

/* ---- connecting --------------------------------------------------------------------------- */

static void attempt(struct tcp_conn *tc);

/* The attempt failed (UF): counted as the pool counts it; another host while attempts are
 * left, else the downstream closes. */
static void connect_failed(struct tcp_conn *tc, int err)
{
    struct rm_cluster *c = tc->wc->cluster;
    rm_stat_inc(c->stats, RM_CS_UPSTREAM_CX_CONNECT_FAIL);
    if (err == -ETIMEDOUT) rm_stat_inc(c->stats, RM_CS_UPSTREAM_CX_CONNECT_TIMEOUT);
    atomic_fetch_add_explicit(&tc->host->cx_connect_fail, 1, memory_order_relaxed);
    rm_outlier_report_local(&tc->host->outlier, RM_OUTLIER_CONNECT_FAILURE);
    rm_log_debug("cluster %s: tcp_proxy connect to %s failed: %s", c->name, tc->host->addr_str,
                 strerror(-err));
    release_upstream(tc);
    rm_host_unref(tc->tried);
    tc->tried = tc->host;
    tc->host = NULL;
    if (tc->attempts < tc->max_attempts) {
        attempt(tc);
        return;
    }
    fail(tc, "UF");
}

static void up_on_connected(struct rm_conn *c, int err)
{
    struct tcp_conn *tc = c->owner;
    if (err) {
        tc->up = NULL; /* it frees itself */
        connect_failed(tc, err);
        return;
    }
    rm_outlier_report_local(&tc->host->outlier, RM_OUTLIER_CONNECT_SUCCESS);
    tc->connected = true;
    c->high_watermark = tc->buffer_limit;
    if (tc->log) {
        socklen_t len = sizeof(tc->log->up_local);
        if (getsockname(c->io.fd, (struct sockaddr *)&tc->log->up_local, &len) != 0)
            tc->log->up_local.sin6_family = AF_UNSPEC;
    } else {
        /* nothing of the config is needed any more: an old snapshot is not kept for a
         * long-lived connection (the cluster is held through tc->wc); one that logs keeps it
         * for its loggers */
        rm_worker_snap_release(tc->wsnap);
        tc->wsnap = NULL;
        tc->cfg = NULL;
    }
    if (tc->down_eof)
        rm_conn_shutdown_write(c);
    else
        rm_conn_pause_reading(tc->down, false);
}

static const struct rm_conn_handler up_handler = {
    .on_connected = up_on_connected,
    .on_data = up_on_data,
    .on_drained = up_on_drained,
    .on_close = up_on_close,
    .on_eof = up_on_eof,
};

/* May a connection to <h> open?  The cluster's max_connections and the host's per-host one,
 * as the HTTP pools check them (the slot is held on true). */
static bool cx_allowed(struct rm_cluster *c, struct rm_host *h)
{
    struct rm_cb *cb = c->cb[0];
    bool host_ok = !cb || atomic_load_explicit(&h->cx_active, memory_order_relaxed) <
                              (int64_t)cb->lim.per_host_max_cx;
    return host_ok && rm_cb_try_acquire(cb, RM_CB_CX);
}

/* Pick a host (another than the last attempt's when there is one; ORIGINAL_DST: the original
 * destination) and connect to it. */
static void attempt(struct tcp_conn *tc)
{
    struct rm_cluster *c = tc->wc->cluster;
    tc->attempts++;
    struct rm_host *h;
    if (c->odst) { /* ORIGINAL_DST: the downstream connection's original destination */
        struct rm_conn *d = tc->down;
        h = rm_odst_pick(tc->wc,
                         d && (d->flags & RM_CONN_LOCAL_RESTORED) ? (const void *)&d->local : NULL,
                         NULL);
    } else {
        h = rm_lb_pick(tc->wc, tc->tried); /* another host than the last attempt's */
    }
    if (!h) {
        rm_stat_inc(c->stats, RM_CS_UPSTREAM_CX_NONE_HEALTHY);
        fail(tc, "UH");
        return;
    }
    if (!cx_allowed(c, h)) {
        rm_stat_inc(c->stats, RM_CS_UPSTREAM_CX_OVERFLOW);
        fail(tc, "UO");
        return;
    }
    tc->host = rm_host_ref(h);
    tc->cx_held = true;
    rm_stat_inc(c->stats, RM_CS_UPSTREAM_CX_TOTAL);
    rm_stat_inc(c->stats, RM_CS_UPSTREAM_CX_ACTIVE);
    atomic_fetch_add_explicit(&h->cx_total, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->cx_active, 1, memory_order_relaxed);
    socklen_t len;
    const struct sockaddr *sa = rm_host_set_connect_addr(tc->wc->hs, h, &len);
    int err = 0;
    struct rm_conn *up =
        rm_conn_connect(loop_of(tc), sa, len, c->connect_timeout_ms, &up_handler, tc, &err);
    if (up && c->tls && rm_conn_start_tls(up, c->tls, NULL, 0, 0) < 0) {
        rm_conn_close(up);
        up = NULL;
        err = -ENOMEM;
    }
    if (!up) {
        connect_failed(tc, err);
        return;
    }
    tc->up = up;
}

/* ---- network filter ----------------------------------------------------------------------- */

static void tcp_accept(struct rm_worker *w, const struct rm_listener_cfg *lc, uint64_t listener_tag,
                       struct rm_conn *conn)
{
    struct tcp_conn *tc = calloc(1, sizeof(*tc));
    if (!tc) {
        rm_conn_close(conn);
        return;
    }
    const struct rm_tcp_proxy_cfg *cfg = lc->tcp;
    tc->base.ops = &rm_tcp_proxy_netfilter;
    tc->base.listener_tag = listener_tag;
    tc->w = w;
    tc->wsnap = rm_worker_snap_hold(w->wsnap);
    tc->cfg = cfg;
    tc->stats = rm_stats_ref(cfg->stats);
    tc->listener_stats = rm_stats_ref(lc->stats);
    tc->buffer_limit = lc->buffer_limit ? lc->buffer_limit : 1;
    tc->idle_ms = cfg->idle_timeout_ms;
    tc->max_duration_ms = cfg->max_duration_ms;
    tc->max_attempts = cfg->max_connect_attempts;
    if (cfg->n_access_logs && !(tc->log = log_new(conn))) {
        rm_worker_snap_release(tc->wsnap);
        rm_stats_release(tc->stats);
        rm_stats_release(tc->listener_stats);
        free(tc);
        rm_conn_close(conn);
        return;
    }
    tc->down = conn;
    conn->h = &down_handler;
    conn->owner = tc;
    conn->high_watermark = tc->buffer_limit;
    rm_conn_pause_reading(conn, true); /* until the upstream is connected */
    rm_worker_conn_link(w, &tc->base);
    rm_stat_inc(tc->stats, RM_TCP_DOWNSTREAM_CX_TOTAL);
    rm_stat_inc(tc->listener_stats, RM_LS_DOWNSTREAM_CX_TOTAL);
    rm_stat_inc(tc->listener_stats, RM_LS_DOWNSTREAM_CX_ACTIVE);
    tc->start_ms = tc->activity_ms = rm_loop_now(w->loop);
    arm(tc, tc->start_ms);
    const struct rm_tcp_cluster *tcl = rm_tcp_proxy_pick(cfg, rm_worker_random(w));
    struct rm_worker_cluster *wc = tcl->cluster ? rm_worker_cluster_for(w, tcl->cluster) : NULL;
    if (!wc) {
        rm_stat_inc(tc->stats, RM_TCP_DOWNSTREAM_CX_NO_ROUTE);
        fail(tc, "NC"); /* Envoy: NoClusterFound */
        return;
    }
    tc->wc = rm_worker_cluster_hold(wc);
    attempt(tc);
}

/* TCP connections are left alone by a drain (Envoy has nothing to tell a raw TCP peer): the
 * worker closes those left when the drain time is over. */
static void tcp_drain(struct rm_worker_conn *wc) {}

/* Nothing of the config is used after the connect, and the config a connecting one started
 * with is the one it finishes with. */
static void tcp_follow_config(struct rm_worker_conn *wc) {}

static void tcp_close(struct rm_worker_conn *wc)
{
    finish(rm_container_of(wc, struct tcp_conn, base), "closed by the worker");
}

const struct rm_netfilter_ops rm_tcp_proxy_netfilter = {
    .name = "envoy.filters.network.tcp_proxy",
    .accept = tcp_accept,
    .follow_config = tcp_follow_config,
    .drain = tcp_drain,
    .close = tcp_close,
};
