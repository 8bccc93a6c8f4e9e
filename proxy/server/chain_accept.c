#include "proxy/server/chain_accept.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "proxy/admin/stats.h"
#include "proxy/config/filter_chain_match.h"
#include "proxy/config/snapshot.h"
#include "proxy/core/log.h"
#include "proxy/net/conn.h"
#include "proxy/net/peek.h"
#include "proxy/net/tls.h"
#include "proxy/server/worker.h"

/* Start chain <lc> (a chain of <wl>'s listener) on <c>: its TLS, then its network filter. */
static void start_chain(struct rm_worker_listener *wl, const struct rm_listener_cfg *lc,
                        struct rm_conn *c)
{
    if (lc->tls && rm_conn_start_tls(c, lc->tls, NULL, 0, lc->handshake_timeout_ms) < 0) {
        rm_conn_close(c);
        return;
    }
    lc->netfilter->accept(wl->w, lc, wl->tag, c); /* one indirection per connection */
}

/* The chain of listener <lc> for <f>: the matching one, else the default, else NULL (counted). */
static const struct rm_listener_cfg *choose(const struct rm_listener_cfg *lc,
                                            const struct rm_fcm_facts *f)
{
    long i = rm_fcm_select(lc->fcm, f);
    if (i >= 0) return lc->chains[i];
    if (lc->has_default) return lc->chains[lc->n_chains - 1];
    rm_stat_inc(lc->stats, RM_LS_NO_FILTER_CHAIN_MATCH);
    rm_log_debug("listener %s: no filter chain matches a connection: closed", lc->addr_str);
    return NULL;
}

/* ---- peeking ------------------------------------------------------------------------------ */

/* A connection whose first bytes are being looked at: the conn's socket is watched by <io>
 * here (rm_conn_unwatch) until the chain is chosen. */
struct peek {
    struct rm_worker_conn base;
    struct rm_worker *w;
    struct rm_conn *conn;
    struct rm_io io;
    struct rm_timer timer;
    struct rm_task free_task;
    struct rm_stats *stats; /* listener.<addr>. (a reference) */
    uint8_t buf[RM_PEEK_MAX];
};

static void peek_free_task(struct rm_task *t)
{
    free(rm_container_of(t, struct peek, free_task));
}

/* Stop looking (the socket goes back to the conn, or is closed with it) and unlink. */
static void peek_end(struct peek *pk)
{
    rm_io_stop(pk->w->loop, &pk->io);
    rm_timer_stop(pk->w->loop, &pk->timer);
    rm_worker_conn_unlink(pk->w, &pk->base);
    rm_stat_add(pk->stats, RM_LS_DOWNSTREAM_PRE_CX_ACTIVE, -1);
    rm_stats_release(pk->stats);
    rm_loop_defer(pk->w->loop, &pk->free_task, peek_free_task);
}

static void peek_close(struct peek *pk, unsigned stat)
{
    if (stat < RM_LS__COUNT) rm_stat_inc(pk->stats, stat);
    struct rm_conn *c = pk->conn;
    peek_end(pk);
    rm_conn_close(c);
}

/* The facts are known (<tls> / <http>: what the bytes said, NULL: nothing): choose and go on,
 * with the listener's current config (the one the peek started with may be gone). */
static void peek_done(struct peek *pk, const struct rm_peek_tls_info *tls, const char *http)
{
    struct rm_worker_listener *wl = rm_worker_listener_by_tag(pk->w, pk->base.listener_tag);
    struct rm_conn *c = pk->conn;
    if (!wl) { /* the listener left meanwhile */
        peek_close(pk, RM_LS__COUNT);
        return;
    }
    if (!wl->cfg->fcm) { /* replaced meanwhile by a config of one chain: nothing to choose */
        peek_end(pk);
        if (rm_conn_watch(c) < 0) {
            rm_conn_close(c);
            return;
        }
        start_chain(wl, wl->cfg, c);
        return;
    }
    struct rm_fcm_facts f = {.local = rm_conn_local_addr(c),
                             .peer = (const struct sockaddr *)&c->peer,
                             .transport_protocol = tls ? "tls" : "raw_buffer"};
    if (tls) {
        f.server_name = tls->sni;
        f.app_protocols = tls->alpn;
        f.n_app_protocols = tls->n_alpn;
    } else if (http) {
        f.app_protocols = &http;
        f.n_app_protocols = 1;
    }
    const struct rm_listener_cfg *ch = choose(wl->cfg, &f);
    peek_end(pk);
    if (!ch || rm_conn_watch(c) < 0) {
        rm_conn_close(c);
        return;
    }
    start_chain(wl, ch, c);
}

/* Look at what arrived so far; decide, or wait for more. */
static void peek_look(struct peek *pk, bool timed_out)
{
    ssize_t n = recv(pk->conn->io.fd, pk->buf, sizeof(pk->buf), MSG_PEEK | MSG_DONTWAIT);
    if (n == 0) {
        peek_close(pk, RM_LS_DOWNSTREAM_LISTENER_FILTER_REMOTE_CLOSE);
        return;
    }
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        peek_close(pk, RM_LS_DOWNSTREAM_LISTENER_FILTER_ERROR);
        return;
    }
    size_t len = n < 0 ? 0 : (size_t)n;
    struct rm_peek_tls_info tls;
    enum rm_peek_rc rc = len ? rm_peek_tls(pk->buf, len, &tls) : RM_PEEK_MORE;
    if (rc == RM_PEEK_TLS) {
        peek_done(pk, &tls, NULL);
        return;
    }
    if (rc == RM_PEEK_TOO_BIG || (rc == RM_PEEK_MORE && len == sizeof(pk->buf))) {
        peek_close(pk, RM_LS_DOWNSTREAM_LISTENER_FILTER_ERROR);
        return;
    }
    const char *http = NULL;
    bool decided = rc == RM_PEEK_NOT_TLS && rm_peek_http(pk->buf, len, &http);
    if (decided) {
        peek_done(pk, NULL, http);
        return;
    }
    if (!timed_out) return; /* edge-triggered: the next arrival brings us back */
    const struct rm_worker_listener *wl = rm_worker_listener_by_tag(pk->w, pk->base.listener_tag);
    if (wl && wl->cfg->peek_timeout_continue) {
        peek_done(pk, NULL, NULL); /* Envoy: continue_on_listener_filters_timeout */
        return;
    }
    peek_close(pk, RM_LS_DOWNSTREAM_PRE_CX_TIMEOUT);
}

static void on_peek_io(struct rm_io *io, uint32_t events)
{
    peek_look(rm_container_of(io, struct peek, io), false);
}

static void on_peek_timeout(struct rm_timer *t)
{
    peek_look(rm_container_of(t, struct peek, timer), true);
}

static void peek_wc_close(struct rm_worker_conn *wc)
{
    if (!wc->closed) peek_close(rm_container_of(wc, struct peek, base), RM_LS__COUNT);
}

static void peek_follow_config(struct rm_worker_conn *wc) {}

static const struct rm_netfilter_ops peek_ops = {
    .name = "listener_filters",
    .follow_config = peek_follow_config,
    .drain = peek_wc_close, /* nothing in flight yet */
    .close = peek_wc_close,
};

static void start_peek(struct rm_worker_listener *wl, struct rm_conn *c)
{
    struct peek *pk = calloc(1, sizeof(*pk));
    if (!pk) {
        rm_conn_close(c);
        return;
    }
    pk->base.ops = &peek_ops;
    pk->base.listener_tag = wl->tag;
    pk->w = wl->w;
    pk->conn = c;
    pk->stats = rm_stats_ref(wl->cfg->stats);
    rm_conn_unwatch(c);
    if (rm_io_start(pk->w->loop, &pk->io, c->io.fd, EPOLLIN | EPOLLRDHUP, on_peek_io) < 0) {
        rm_stats_release(pk->stats);
        free(pk);
        rm_conn_close(c);
        return;
    }
    rm_worker_conn_link(pk->w, &pk->base);
    rm_stat_add(pk->stats, RM_LS_DOWNSTREAM_PRE_CX_ACTIVE, 1);
    if (wl->cfg->peek_timeout_ms)
        rm_timer_start(pk->w->loop, &pk->timer, wl->cfg->peek_timeout_ms, on_peek_timeout);
}

void rm_chain_accept(struct rm_worker_listener *wl, struct rm_conn *c)
{
    const struct rm_listener_cfg *lc = wl->cfg;
    if (lc->fcm) {
        if (lc->peek) {
            start_peek(wl, c);
            return;
        }
        const struct rm_fcm_facts f = {.local = rm_fcm_needs_local(lc->fcm) ? rm_conn_local_addr(c)
                                                                            : NULL,
                                       .peer = (const struct sockaddr *)&c->peer};
        if (!(lc = choose(lc, &f))) {
            rm_conn_close(c);
            return;
        }
    }
    start_chain(wl, lc, c);
}
