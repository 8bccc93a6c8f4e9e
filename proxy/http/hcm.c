#include "proxy/http/hcm.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/admin/stats.h"
#include "proxy/config/snapshot.h"
#include "proxy/core/log.h"
#include "proxy/http/access_log.h"
#include "proxy/net/tls.h"
#include "proxy/server/worker.h"

static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

static void stream_finish(struct rm_hcm_stream *hs);
static void run_request_headers(struct rm_hcm_stream *hs, unsigned from, bool end);
static void run_request_data(struct rm_hcm_stream *hs, unsigned from, const uint8_t *p, size_t n,
                             bool end);
static void run_request_trailers(struct rm_hcm_stream *hs, unsigned from, struct rm_headers *h);
static bool data_through(struct rm_hcm_stream *hs, unsigned from, unsigned end, const uint8_t *p,
                         size_t n, bool end_stream);
static bool trailers_through(struct rm_hcm_stream *hs, unsigned from, unsigned end,
                             struct rm_headers *h);

static inline struct rm_stats *hstats(const struct rm_hcm_stream *hs)
{
    return hs->cfg->stats;
}

struct rm_worker *rm_hcm_worker(const struct rm_hcm_stream *hs)
{
    return hs->hc->w;
}
struct rm_snapshot *rm_hcm_snapshot(const struct rm_hcm_stream *hs)
{
    return hs->wsnap->snap;
}

/* ---- connection --------------------------------------------------------------------------- */

static void conn_free_task(struct rm_task *t)
{
    struct rm_hcm_conn *hc = rm_container_of(t, struct rm_hcm_conn, free_task);
    while (hc->filter_state) {
        struct rm_hcm_conn_state *st = hc->filter_state;
        hc->filter_state = st->next;
        free(st);
    }
    free(hc->tls_info);
    rm_worker_snap_release(hc->wsnap);
    rm_stats_release(hc->cx_stats);
    rm_stats_release(hc->listener_stats);
    free(hc);
}

static void conn_unlink_and_free(struct rm_hcm_conn *hc)
{
    if (hc->base.closed) return;
    rm_hcm_conn_timers_stop(hc);
    struct rm_worker *w = hc->w;
    rm_worker_conn_unlink(w, &hc->base);
    rm_stat_dec(hc->cx_stats, RM_HS_DOWNSTREAM_CX_ACTIVE);
    rm_stat_inc(hc->cx_stats, RM_HS_DOWNSTREAM_CX_DESTROY);
    rm_stat_dec(hc->listener_stats, RM_LS_DOWNSTREAM_CX_ACTIVE);
    rm_stat_inc(hc->listener_stats, RM_LS_DOWNSTREAM_CX_DESTROY);
    if (hc->codec)
        rm_stat_dec(hc->cx_stats, hc->codec->proto == RM_HTTP2 ? RM_HS_DOWNSTREAM_CX_HTTP2_ACTIVE
                                                               : RM_HS_DOWNSTREAM_CX_HTTP1_ACTIVE);
    rm_loop_defer(w->loop, &hc->free_task, conn_free_task);
}

static void on_codec_close(void *user, int err)
{
    conn_unlink_and_free(user);
}

/* The codec's counters: Envoy's http2.* of the connection manager (only HTTP/2 reports). */
static void on_codec_event(void *user, enum rm_codec_event ev)
{
    struct rm_hcm_conn *hc = user;
    static const unsigned stat[] = {
        [RM_CODEC_EV_RX_RESET] = RM_HS_HTTP2_RX_RESET,
        [RM_CODEC_EV_TX_RESET] = RM_HS_HTTP2_TX_RESET,
        [RM_CODEC_EV_MESSAGING_ERROR] = RM_HS_HTTP2_RX_MESSAGING_ERROR,
    };
    rm_stat_inc(hc->cx_stats, stat[ev]);
}

static void on_stream(void *user, struct rm_stream *s);

static const struct rm_codec_callbacks server_cb = {
    .on_stream = on_stream,
    .on_close = on_codec_close,
    .on_event = on_codec_event,
};

static void start_codec(struct rm_hcm_conn *hc, bool h2)
{
    struct rm_codec *c = h2 ? rm_h2_server_new(hc->conn, &hc->cfg->codec, &server_cb, hc)
                            : rm_h1_server_new(hc->conn, &hc->cfg->codec, &server_cb, hc);
    if (!c) {
        rm_conn_close(hc->conn);
        conn_unlink_and_free(hc);
        return;
    }
    hc->codec = c;
    rm_stat_inc(hc->cx_stats,
                h2 ? RM_HS_DOWNSTREAM_CX_HTTP2_TOTAL : RM_HS_DOWNSTREAM_CX_HTTP1_TOTAL);
    rm_stat_inc(hc->cx_stats,
                h2 ? RM_HS_DOWNSTREAM_CX_HTTP2_ACTIVE : RM_HS_DOWNSTREAM_CX_HTTP1_ACTIVE);
    if (hc->w->draining) c->ops->shutdown(c);
}

/* AUTO codec: TLS with ALPN says which; otherwise look at the first bytes (HTTP/2 clients
 * start with the preface). */
static size_t sniff_on_data(struct rm_conn *conn, const uint8_t *p, size_t n)
{
    struct rm_hcm_conn *hc = conn->owner;
    if (rm_conn_alpn_is(conn, "h2") || rm_conn_alpn_is(conn, "http/1.1")) {
        start_codec(hc, rm_conn_alpn_is(conn, "h2"));
        return 0;
    }
    size_t cmp = n < sizeof(h2_preface) - 1 ? n : sizeof(h2_preface) - 1;
    bool h2 = memcmp(p, h2_preface, cmp) == 0;
    if (h2 && cmp < sizeof(h2_preface) - 1) return 0; /* could still be HTTP/2: wait for more */
    start_codec(hc, h2);
    return 0; /* the codec gets the bytes through rm_conn_set_handler */
}

static void sniff_on_close(struct rm_conn *conn, int err)
{
    conn_unlink_and_free(conn->owner);
}

static const struct rm_conn_handler sniff_handler = {
    .on_data = sniff_on_data,
    .on_close = sniff_on_close,
};

void rm_hcm_conn_new(struct rm_worker *w, const struct rm_listener_cfg *lc, uint64_t listener_tag,
                     struct rm_conn *conn)
{
    struct rm_hcm_conn *hc = calloc(1, sizeof(*hc));
    if (!hc) {
        rm_conn_close(conn);
        return;
    }
    hc->base.ops = &rm_hcm_netfilter;
    hc->base.listener_tag = listener_tag;
    hc->w = w;
    hc->wsnap = rm_worker_snap_hold(w->wsnap);
    hc->snap = hc->wsnap->snap;
    hc->lc = lc;
    hc->cfg = &lc->hcm;
    hc->cx_stats = rm_stats_ref(lc->hcm.stats); /* see rm_hcm_conn.cx_stats */
    hc->listener_stats = rm_stats_ref(lc->stats);
    hc->conn = conn;
    conn->owner = hc;
    conn->high_watermark = lc->buffer_limit;
    rm_conn_peer_str(conn, hc->peer_ip, sizeof(hc->peer_ip));
    if (conn->peer.ss_family == AF_UNIX) hc->peer_ip[0] = 0; /* no IP: nothing for XFF */
    char *colon = strrchr(hc->peer_ip, ':');                 /* keep the address only */
    if (colon) *colon = 0;
    if (hc->peer_ip[0] == '[') {
        memmove(hc->peer_ip, hc->peer_ip + 1, strlen(hc->peer_ip));
        hc->peer_ip[strlen(hc->peer_ip) - 1] = 0;
    }
    rm_worker_conn_link(w, &hc->base);
    rm_stat_inc(hc->cx_stats, RM_HS_DOWNSTREAM_CX_TOTAL);
    rm_stat_inc(hc->cx_stats, RM_HS_DOWNSTREAM_CX_ACTIVE);
    rm_stat_inc(hc->listener_stats, RM_LS_DOWNSTREAM_CX_TOTAL);
    rm_stat_inc(hc->listener_stats, RM_LS_DOWNSTREAM_CX_ACTIVE);
    rm_hcm_conn_timers_start(hc);
    switch (hc->cfg->codec_type) {
    case RM_CODEC_HTTP1:
        start_codec(hc, false);
        break;
    case RM_CODEC_HTTP2:
        start_codec(hc, true);
        break;
    default:
        conn->h = &sniff_handler;
        break;
    }
}

void rm_hcm_conn_drain(struct rm_hcm_conn *hc)
{
    if (hc->base.closed) return;
    if (!hc->codec) {
        rm_conn_close(hc->conn);
        conn_unlink_and_free(hc);
        return;
    }
    hc->codec->ops->shutdown(hc->codec);
}

void rm_hcm_conn_close(struct rm_hcm_conn *hc)
{
    if (hc->base.closed) return;
    if (hc->codec)
        hc->codec->ops->close(hc->codec);
    else
        rm_conn_close(hc->conn);
    conn_unlink_and_free(hc);
}

static void netfilter_follow_config(struct rm_worker_conn *wc)
{
    rm_hcm_conn_follow_config(rm_container_of(wc, struct rm_hcm_conn, base));
}

static void netfilter_drain(struct rm_worker_conn *wc)
{
    rm_hcm_conn_drain(rm_container_of(wc, struct rm_hcm_conn, base));
}

static void netfilter_close(struct rm_worker_conn *wc)
{
    rm_hcm_conn_close(rm_container_of(wc, struct rm_hcm_conn, base));
}

const struct rm_netfilter_ops rm_hcm_netfilter = {
    .name = "envoy.filters.network.http_connection_manager",
    .accept = rm_hcm_conn_new,
    .follow_config = netfilter_follow_config,
    .drain = netfilter_drain,
    .close = netfilter_close,
};

/* ---- request-side helpers ----------------------------------------------------------------- */

static void gen_request_id(struct rm_worker *w, char out[37])
{
    static const char hex[] = "0123456789abcdef";
    uint64_t a = rm_worker_random(w), b = rm_worker_random(w);
    a = (a & 0xffffffffffff0fffULL) | 0x4000ULL;             /* version 4 */
    b = (b & 0x3fffffffffffffffULL) | 0x8000000000000000ULL; /* variant 10 */
    uint8_t bytes[16];
    for (int i = 0; i < 8; i++) {
        bytes[i] = (uint8_t)(a >> (56 - 8 * i));
        bytes[8 + i] = (uint8_t)(b >> (56 - 8 * i));
    }
    char *o = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) *o++ = '-';
        *o++ = hex[bytes[i] >> 4];
        *o++ = hex[bytes[i] & 15];
    }
    *o = 0;
}

/* x-forwarded-for / -proto, x-request-id, via: Envoy's edge semantics. */
static void mutate_request(struct rm_hcm_stream *hs, struct rm_headers *h)
{
    const struct rm_hcm_cfg *cfg = hs->cfg;
    /* a unix socket's peer has no IP: Envoy's appendXff adds nothing */
    if (cfg->use_remote_address && !cfg->skip_xff_append && hs->hc->peer_ip[0]) {
        struct rm_str xff = rm_headers_get_key(h, RM_HK_X_FORWARDED_FOR);
        if (xff.p) {
            size_t n = xff.len + 2 + strlen(hs->hc->peer_ip);
            char *v = rm_arena_alloc(hs->arena, n + 1);
            snprintf(v, n + 1, "%.*s, %s", (int)xff.len, xff.p, hs->hc->peer_ip);
            rm_headers_set_ref_key(h, RM_HK_X_FORWARDED_FOR, v, n); /* v is in the arena */
        } else {
            rm_headers_add(h, "x-forwarded-for", 15, hs->hc->peer_ip, strlen(hs->hc->peer_ip));
        }
    }
    if (cfg->use_remote_address || !rm_headers_get_key(h, RM_HK_X_FORWARDED_PROTO).p) {
        bool tls = hs->hc->conn->tp != &rm_transport_plain;
        rm_headers_set_ref_key(h, RM_HK_X_FORWARDED_PROTO, tls ? "https" : "http", tls ? 5 : 4);
    }
    if (cfg->generate_request_id) {
        bool have = rm_headers_get_key(h, RM_HK_X_REQUEST_ID).p != NULL;
        if (!have || (cfg->use_remote_address && !cfg->preserve_external_request_id)) {
            char id[37];
            gen_request_id(hs->hc->w, id);
            rm_headers_set(h, "x-request-id", 12, id, 36);
        }
    }
    if (cfg->via && cfg->via[0]) rm_headers_add_ref(h, "via", 3, cfg->via, strlen(cfg->via));
}

static void pick_route(struct rm_hcm_stream *hs)
{
    const struct rm_route_table *rt = hs->cfg->routes;
    struct rm_str auth = rm_headers_get_key(hs->req, RM_HK_AUTHORITY);
    hs->vhost = rt ? rm_route_find_vhost(rt, auth.p ? auth.p : "", auth.len) : NULL;
    hs->route = hs->vhost ? rm_route_match(hs->vhost, hs->req) : NULL;
    /* weighted clusters are picked with the route (as Envoy): their per-filter configs apply to
     * every filter, and the router forwards to this pick */
    if (hs->route && hs->route->n_weighted)
        hs->wcluster = rm_route_pick_weighted(hs->route, rm_worker_random(hs->hc->w));
}

/* Is http_filters[i] in this request's chain?  Its default (HttpFilter.disabled) unless the
 * most specific typed_per_filter_config entry for it says otherwise (FilterConfig.disabled). */
static bool filter_enabled(const struct rm_hcm_stream *hs, unsigned i)
{
    const struct rm_hcm_cfg *cfg = hs->cfg;
    const struct rm_filter_route_cfg *e =
        rm_route_filter_cfg(cfg->routes, hs->vhost, hs->route, hs->wcluster, i);
    return e ? !e->disabled : !cfg->filters[i].disabled;
}

static void create_filters(struct rm_hcm_stream *hs)
{
    const struct rm_hcm_cfg *cfg = hs->cfg;
    hs->n_filters = 0;
    hs->filters = rm_arena_alloc(hs->arena, sizeof(*hs->filters) * (cfg->n_filters + 1));
    for (unsigned i = 0; i < cfg->n_filters; i++) {
        if (cfg->filter_toggles && !filter_enabled(hs, i)) continue;
        const struct rm_filter_ops *ops = cfg->filters[i].ops;
        struct rm_filter *f = rm_arena_alloc(hs->arena, ops->instance_size);
        memset(f, 0, ops->instance_size);
        f->ops = ops;
        f->config = cfg->filters[i].config;
        f->stream = hs;
        f->idx = hs->n_filters;
        f->cfg_idx = i;
        hs->filters[hs->n_filters++] = f;
        if (ops->on_init) ops->on_init(f);
    }
}

void *rm_hcm_conn_state(struct rm_hcm_stream *hs, const void *key, size_t size, bool *created)
{
    struct rm_hcm_conn *hc = hs->hc;
    *created = false;
    for (struct rm_hcm_conn_state *st = hc->filter_state; st; st = st->next) {
        if (st->key == key) return st->data;
    }
    struct rm_hcm_conn_state *st = calloc(1, sizeof(*st) + size);
    if (!st) abort();
    st->key = key;
    st->next = hc->filter_state;
    hc->filter_state = st;
    *created = true;
    return st->data;
}

/* ---- downstream stream events ------------------------------------------------------------- */

static bool dead(const struct rm_hcm_stream *hs)
{
    return hs->flags & (RM_HS_RESET | RM_HS_FINISHING);
}

static bool has_underscore(const struct rm_header *e)
{
    return e->name_len && e->name[0] != ':' && memchr(e->name, '_', e->name_len);
}

/* headers_with_underscores_action (Envoy's, per codec: http1./http2. stats).  Returns false
 * when the request was rejected: HTTP/1 with a 400 (the connection closes after it), HTTP/2
 * with a stream reset. */
static bool check_underscores(struct rm_hcm_stream *hs, struct rm_headers *h)
{
    enum rm_underscores act = hs->cfg->headers_with_underscores;
    if (act == RM_UNDERSCORES_ALLOW) return true;
    bool h2 = hs->down->proto == RM_HTTP2;
    for (uint32_t i = 0; i < h->n; i++) {
        if (!has_underscore(&h->v[i])) continue;
        if (act == RM_UNDERSCORES_REJECT_REQUEST) {
            rm_stat_inc(hstats(hs), h2 ? RM_HS_HTTP2_REQUESTS_REJECTED_WITH_UNDERSCORES
                                       : RM_HS_HTTP1_REQUESTS_REJECTED_WITH_UNDERSCORES);
            rm_log_debug("%s: request rejected: header \"%.*s\" has an underscore",
                         hs->cfg->stat_prefix, (int)h->v[i].name_len, (const char *)h->v[i].name);
            if (h2) {
                hs->details = "http2.unexpected_underscore";
                rm_hcm_reset(hs);
            } else {
                rm_hcm_conn_drain(hs->hc);
                rm_hcm_local_reply(hs, 0, 400, NULL, "http1.unexpected_underscore", "Bad Request");
            }
            return false;
        }
        unsigned n = rm_headers_remove(h, (const char *)h->v[i].name, h->v[i].name_len);
        rm_stat_add(hstats(hs),
                    h2 ? RM_HS_HTTP2_DROPPED_HEADERS_WITH_UNDERSCORES
                       : RM_HS_HTTP1_DROPPED_HEADERS_WITH_UNDERSCORES,
                    n);
        i--; /* v[i] is the next entry now */
    }
    return true;
}

static void down_on_headers(struct rm_stream *s, struct rm_headers *h, bool end)
{
    struct rm_hcm_stream *hs = s->user;
    if (dead(hs)) return;
    rm_hcm_stream_activity(hs);
    hs->req = h;
    if (end) {
        hs->flags |= RM_HS_REQ_END;
        hs->req_end_ms = rm_loop_now(hs->hc->w->loop);
    }
    if (!check_underscores(hs, h)) return;
    struct rm_str ct = rm_headers_get_key(h, RM_HK_CONTENT_TYPE);
    if (ct.p && ct.len >= 16 && memcmp(ct.p, "application/grpc", 16) == 0) hs->flags |= RM_HS_GRPC;
    struct rm_str m = rm_headers_get_key(h, RM_HK_METHOD);
    if (m.p && rm_str_eq(m, "HEAD", 4)) hs->flags |= RM_HS_HEAD;
    mutate_request(hs, h);
    pick_route(hs);
    rm_hcm_stream_routed(hs);
    create_filters(hs);
    run_request_headers(hs, 0, end);
}

static void down_on_data(struct rm_stream *s, const uint8_t *p, size_t n, bool end)
{
    struct rm_hcm_stream *hs = s->user;
    if (dead(hs)) return;
    rm_hcm_stream_activity(hs);
    hs->bytes_rx += n;
    if (end) {
        hs->flags |= RM_HS_REQ_END;
        hs->req_end_ms = rm_loop_now(hs->hc->w->loop);
    }
    if (hs->flags & RM_HS_LOCAL_REPLY) {
        if (end && (hs->flags & RM_HS_RESP_END)) stream_finish(hs);
        return;
    }
    if (hs->flags & RM_HS_REQ_HELD) {
        /* the filters up to the one holding the headers still see the body; what the holder
         * passes on waits for its rm_filter_continue() */
        if (!data_through(hs, 0, hs->held_at + 1, p, n, end)) return;
        rm_buf_append(&hs->held, p, n);
        hs->held_end = end;
        if (hs->held.len > hs->hc->lc->buffer_limit) rm_hcm_pause_request(hs, true);
        return;
    }
    run_request_data(hs, 0, p, n, end);
}

static void down_on_trailers(struct rm_stream *s, struct rm_headers *h)
{
    struct rm_hcm_stream *hs = s->user;
    if (dead(hs)) return;
    if (s->proto == RM_HTTP2) rm_stat_inc(hstats(hs), RM_HS_HTTP2_TRAILERS);
    rm_hcm_stream_activity(hs);
    hs->flags |= RM_HS_REQ_END;
    hs->req_end_ms = rm_loop_now(hs->hc->w->loop);
    if (hs->flags & RM_HS_LOCAL_REPLY) {
        if (hs->flags & RM_HS_RESP_END) stream_finish(hs);
        return;
    }
    if (hs->flags & RM_HS_REQ_HELD) {
        if (trailers_through(hs, 0, hs->held_at + 1, h)) hs->held_trailers = h;
        return;
    }
    run_request_trailers(hs, 0, h);
}

/* Envoy's codec details for a downstream reset <r> (static), else <was>: the access log says
 * downstream_remote_disconnect when nothing more precise is known. */
static const char *reset_details(bool h2, enum rm_reset_reason r, const char *was)
{
    switch (r) {
    case RM_RESET_PROTOCOL:
        return h2 ? "http2.violation.of.messaging.rule" : "http1.codec_error";
    case RM_RESET_REMOTE:
        return h2 ? "http2.remote_reset" : was;
    case RM_RESET_REFUSED:
        return h2 ? "http2.remote_refuse" : was;
    default:
        return was;
    }
}

static void down_on_reset(struct rm_stream *s, enum rm_reset_reason r)
{
    struct rm_hcm_stream *hs = s->user;
    if (dead(hs)) return;
    rm_stat_inc(hstats(hs), RM_HS_DOWNSTREAM_RQ_RX_RESET);
    hs->flags |= RM_HS_RESET;
    hs->details = reset_details(s->proto == RM_HTTP2, r, hs->details);
    stream_finish(hs);
}

static void down_on_writable(struct rm_stream *s)
{
    struct rm_hcm_stream *hs = s->user;
    if (!dead(hs) && hs->on_down_writable) hs->on_down_writable(hs->on_down_writable_ctx);
}

static const struct rm_stream_events down_events = {
    .on_headers = down_on_headers,
    .on_data = down_on_data,
    .on_trailers = down_on_trailers,
    .on_reset = down_on_reset,
    .on_writable = down_on_writable,
};

/* A new stream takes the worker's current config if the connection's listener is still in it
 * (Envoy: route and filter updates apply to new requests on existing connections). */
void rm_hcm_conn_follow_config(struct rm_hcm_conn *hc)
{
    struct rm_worker *w = hc->w;
    if (hc->wsnap == w->wsnap) return;
    const struct rm_worker_listener *wl = rm_worker_listener_by_tag(w, hc->base.listener_tag);
    /* its filter chain in the new config (rm_listener_cfg_follow) */
    const struct rm_listener_cfg *lc = wl ? rm_listener_cfg_follow(wl->cfg, hc->lc) : NULL;
    /* the listener or chain is gone (or now has another network filter): the connection
     * drains on its config */
    if (!lc || lc->netfilter != &rm_hcm_netfilter) return;
    rm_worker_snap_release(hc->wsnap);
    hc->wsnap = rm_worker_snap_hold(w->wsnap);
    hc->snap = hc->wsnap->snap;
    hc->lc = lc;
    hc->cfg = &lc->hcm;
}

/* CONNECTION_ID: unique in the process; taken only by connections that log */
static _Atomic uint64_t next_conn_id;

void rm_hcm_conn_facts(struct rm_hcm_conn *hc)
{
    if (hc->have_addrs) return;
    hc->have_addrs = true;
    /* restored by envoy.filters.listener.original_dst: the original destination */
    const struct sockaddr *la = rm_conn_local_addr(hc->conn);
    if (la)
        memcpy(&hc->local_addr, la, sizeof(hc->local_addr));
    else
        hc->local_addr.sin6_family = AF_UNSPEC;
    if (hc->conn->peer_len <= sizeof(hc->peer_addr))
        memcpy(&hc->peer_addr, &hc->conn->peer, hc->conn->peer_len);
    hc->tls_info = rm_conn_tls_info(hc->conn);
    hc->id = atomic_fetch_add_explicit(&next_conn_id, 1, memory_order_relaxed) + 1;
}

static void on_stream(void *user, struct rm_stream *s)
{
    struct rm_hcm_conn *hc = user;
    struct rm_hcm_stream *hs = rm_arena_alloc(s->arena, sizeof(*hs));
    memset(hs, 0, sizeof(*hs));
    if (hc->wsnap != hc->w->wsnap) rm_hcm_conn_follow_config(hc); /* its test, inline */
    hs->wsnap = rm_worker_snap_hold(hc->wsnap);
    hs->hc = hc;
    hs->down = s;
    hs->arena = s->arena;
    hs->cfg = hc->cfg;
    hs->start_ms = rm_loop_now(hc->w->loop);
    if (hc->cfg->n_access_logs) {
        clock_gettime(CLOCK_REALTIME, &hs->start_wall);
        rm_hcm_conn_facts(hc); /* the connection may be gone when the stream is logged */
    }
    rm_hcm_stream_timers_start(hs);
    s->ev = &down_events;
    s->user = hs;
    hc->active_streams++;
    rm_stat_inc(hstats(hs), RM_HS_DOWNSTREAM_RQ_TOTAL);
    rm_stat_inc(hstats(hs), RM_HS_DOWNSTREAM_RQ_ACTIVE);
    rm_stat_inc(hstats(hs), s->proto == RM_HTTP2 ? RM_HS_DOWNSTREAM_RQ_HTTP2_TOTAL
                                                 : RM_HS_DOWNSTREAM_RQ_HTTP1_TOTAL);
    /* max_requests_per_connection: this one is served, the connection drains behind it (HTTP/1:
     * its response says connection: close; HTTP/2: GOAWAY naming this stream as the last) */
    uint32_t max = hc->cfg->max_requests_per_connection; /* 0: unlimited (no count to wrap) */
    if (max && ++hc->requests == max) {
        rm_stat_inc(hstats(hs), RM_HS_DOWNSTREAM_CX_MAX_REQUESTS_REACHED);
        rm_hcm_conn_drain(hc);
    }
}

/* ---- filter iteration --------------------------------------------------------------------- */

static void hold(struct rm_hcm_stream *hs, unsigned at)
{
    hs->flags |= RM_HS_REQ_HELD;
    hs->held_at = at;
}

static void run_request_headers(struct rm_hcm_stream *hs, unsigned from, bool end)
{
    for (unsigned i = from; i < hs->n_filters && !dead(hs); i++) {
        struct rm_filter *f = hs->filters[i];
        if (!f->ops->on_request_headers) continue;
        if (f->ops->on_request_headers(f, hs->req, end) == RM_FILTER_STOP) {
            if (!(hs->flags & RM_HS_LOCAL_REPLY)) hold(hs, i);
            return;
        }
        if (hs->flags & RM_HS_LOCAL_REPLY) return;
    }
}

/* Run request data through filters [from, end).  Returns true when every one of them passed
 * it on (CONTINUE), false when one kept it (STOP) or the stream ended. */
static bool data_through(struct rm_hcm_stream *hs, unsigned from, unsigned end, const uint8_t *p,
                         size_t n, bool end_stream)
{
    for (unsigned i = from; i < end; i++) {
        if (dead(hs) || (hs->flags & RM_HS_LOCAL_REPLY)) return false;
        struct rm_filter *f = hs->filters[i];
        if (f->ops->on_request_data &&
            f->ops->on_request_data(f, p, n, end_stream) == RM_FILTER_STOP)
            return false;
    }
    return !dead(hs) && !(hs->flags & RM_HS_LOCAL_REPLY);
}

static bool trailers_through(struct rm_hcm_stream *hs, unsigned from, unsigned end,
                             struct rm_headers *h)
{
    for (unsigned i = from; i < end; i++) {
        if (dead(hs) || (hs->flags & RM_HS_LOCAL_REPLY)) return false;
        struct rm_filter *f = hs->filters[i];
        if (f->ops->on_request_trailers && f->ops->on_request_trailers(f, h) == RM_FILTER_STOP)
            return false;
    }
    return !dead(hs) && !(hs->flags & RM_HS_LOCAL_REPLY);
}

static void run_request_data(struct rm_hcm_stream *hs, unsigned from, const uint8_t *p, size_t n,
                             bool end)
{
    data_through(hs, from, hs->n_filters, p, n, end);
}

static void run_request_trailers(struct rm_hcm_stream *hs, unsigned from, struct rm_headers *h)
{
    trailers_through(hs, from, hs->n_filters, h);
}

/* Deliver the request body and trailers held for filter <from> - 1 to the filters after it:
 * through to the end of the chain, or, when one of them holds the request now, up to and
 * including that holder (as down_on_data does); what the new holder passes on is held again. */
static void pass_held(struct rm_hcm_stream *hs, unsigned from, struct rm_buf *b, bool end_stream,
                      struct rm_headers *trailers)
{
    bool held = hs->flags & RM_HS_REQ_HELD;
    unsigned end = held ? hs->held_at + 1 : hs->n_filters;
    if (b->len || end_stream) {
        if (data_through(hs, from, end, rm_buf_data(b), b->len, end_stream) && held) {
            rm_buf_append(&hs->held, rm_buf_data(b), b->len);
            hs->held_end = end_stream;
        }
    }
    if (trailers && !dead(hs) && !(hs->flags & RM_HS_LOCAL_REPLY)) {
        if (trailers_through(hs, from, end, trailers) && held) hs->held_trailers = trailers;
    }
}

void rm_filter_continue(struct rm_filter *f)
{
    struct rm_hcm_stream *hs = f->stream;
    if (dead(hs) || !(hs->flags & RM_HS_REQ_HELD) || hs->held_at != f->idx) return;
    hs->flags &= ~(uint32_t)RM_HS_REQ_HELD;
    bool end_in_headers =
        (hs->flags & RM_HS_REQ_END) && !hs->held.len && !hs->held_end && !hs->held_trailers;
    /* take what was held: a later filter may hold the request again and get its own */
    struct rm_buf b = hs->held;
    bool held_end = hs->held_end;
    struct rm_headers *trailers = hs->held_trailers;
    hs->held = (struct rm_buf)RM_BUF_INIT;
    hs->held_end = false;
    hs->held_trailers = NULL;
    run_request_headers(hs, f->idx + 1, end_in_headers);
    if (!dead(hs) && !(hs->flags & RM_HS_LOCAL_REPLY))
        pass_held(hs, f->idx + 1, &b, held_end, trailers);
    rm_buf_reset(&b);
    if ((hs->flags & RM_HS_DOWN_PAUSED) && hs->held.len <= hs->hc->lc->buffer_limit)
        rm_hcm_pause_request(hs, false);
}

void rm_filter_reply(struct rm_filter *f, unsigned status, const char *flags, const char *body)
{
    rm_hcm_local_reply(f->stream, f->idx, status, flags, NULL, body);
}

void rm_filter_reply_ex(struct rm_filter *f, const struct rm_local_reply *r)
{
    rm_hcm_local_reply_ex(f->stream, f->idx, r);
}

const void *rm_filter_route_config(const struct rm_filter *f)
{
    const struct rm_hcm_stream *hs = f->stream;
    const struct rm_filter_route_cfg *e =
        rm_route_filter_cfg(hs->cfg->routes, hs->vhost, hs->route, hs->wcluster, f->cfg_idx);
    return e ? e->config : NULL;
}

unsigned rm_filter_route_configs(const struct rm_filter *f, const void *out[4])
{
    const struct rm_hcm_stream *hs = f->stream;
    const struct rm_filter_route_cfg *e[4];
    unsigned n = rm_route_filter_cfgs_all(hs->cfg->routes, hs->vhost, hs->route, hs->wcluster,
                                          f->cfg_idx, e);
    for (unsigned i = 0; i < n; i++)
        out[i] = e[i]->config;
    return n;
}

void rm_hcm_pause_request(struct rm_hcm_stream *hs, bool paused)
{
    if (dead(hs)) return;
    if (paused == !!(hs->flags & RM_HS_DOWN_PAUSED)) return;
    if (paused)
        hs->flags |= RM_HS_DOWN_PAUSED;
    else
        hs->flags &= ~(uint32_t)RM_HS_DOWN_PAUSED;
    hs->down->ops->pause_reading(hs->down, paused);
}

bool rm_hcm_down_blocked(const struct rm_hcm_stream *hs)
{
    return !dead(hs) && hs->down->ops->write_blocked(hs->down);
}

/* ---- response side ------------------------------------------------------------------------ */

static void count_status(struct rm_hcm_stream *hs, unsigned status)
{
    static const unsigned idx[] = {RM_HS_DOWNSTREAM_RQ_1XX, RM_HS_DOWNSTREAM_RQ_1XX,
                                   RM_HS_DOWNSTREAM_RQ_2XX, RM_HS_DOWNSTREAM_RQ_3XX,
                                   RM_HS_DOWNSTREAM_RQ_4XX, RM_HS_DOWNSTREAM_RQ_5XX};
    unsigned c = status / 100;
    if (c >= 1 && c <= 5) rm_stat_inc(hstats(hs), idx[c]);
}

static void maybe_done(struct rm_hcm_stream *hs)
{
    if ((hs->flags & RM_HS_RESP_END) && (hs->flags & RM_HS_REQ_END)) stream_finish(hs);
}

static void server_header(struct rm_hcm_stream *hs, struct rm_headers *h)
{
    const struct rm_hcm_cfg *cfg = hs->cfg;
    if (cfg->server_header_transformation == 2) return;
    if (cfg->server_header_transformation == 1 && rm_headers_get_key(h, RM_HK_SERVER).p) return;
    if (cfg->server_name && cfg->server_name[0]) /* snapshot config */
        rm_headers_set_ref_key(h, RM_HK_SERVER, cfg->server_name, strlen(cfg->server_name));
    else
        rm_headers_set_ref_key(h, RM_HK_SERVER, "remora", 6);
}

void rm_hcm_encode_headers(struct rm_hcm_stream *hs, unsigned from, struct rm_headers *h, bool end)
{
    if (dead(hs) || (hs->flags & RM_HS_RESP_HEADERS)) /* one response (e.g. after a timeout) */
        return;
    rm_hcm_stream_activity(hs);
    for (unsigned i = from; i-- > 0;) {
        struct rm_filter *f = hs->filters[i];
        if (f->ops->on_response_headers) f->ops->on_response_headers(f, h, end);
        if (dead(hs)) return;
    }
    struct rm_str st = rm_headers_get_key(h, RM_HK_STATUS);
    int64_t code = st.p ? rm_parse_u63(st.p, st.len) : -1;
    if (code >= 100 && code < 200) { /* informational: forward only 100 to HTTP/1.1 clients? */
        return;
    }
    hs->status = code > 0 ? (unsigned)code : 502;
    server_header(hs, h);
    if (hs->cfg->always_set_request_id_in_response && hs->req) {
        struct rm_str id = rm_headers_get_key(hs->req, RM_HK_X_REQUEST_ID);
        if (id.p && !rm_headers_get_key(h, RM_HK_X_REQUEST_ID).p)
            rm_headers_add_ref(h, "x-request-id", 12, id.p, id.len);
    }
    hs->flags |= RM_HS_RESP_HEADERS;
    hs->resp = h;
    hs->resp_start_ms = rm_loop_now(hs->hc->w->loop);
    count_status(hs, hs->status);
    if (end) hs->flags |= RM_HS_RESP_END;
    hs->down->ops->submit_headers(hs->down, h, end);
    if (end) maybe_done(hs);
}

void rm_hcm_encode_data(struct rm_hcm_stream *hs, unsigned from, const uint8_t *p, size_t n,
                        bool end)
{
    if (dead(hs) || (hs->flags & RM_HS_RESP_END)) return;
    rm_hcm_stream_activity(hs);
    for (unsigned i = from; i-- > 0;) {
        struct rm_filter *f = hs->filters[i];
        if (f->ops->on_response_data) f->ops->on_response_data(f, p, n, end);
        if (dead(hs)) return;
    }
    if (end) hs->flags |= RM_HS_RESP_END;
    hs->bytes_tx += n;
    hs->down->ops->submit_data(hs->down, p, n, end);
    if (end) maybe_done(hs);
}

void rm_hcm_encode_trailers(struct rm_hcm_stream *hs, unsigned from, struct rm_headers *h)
{
    if (dead(hs) || (hs->flags & RM_HS_RESP_END)) return;
    rm_hcm_stream_activity(hs);
    for (unsigned i = from; i-- > 0;) {
        struct rm_filter *f = hs->filters[i];
        if (f->ops->on_response_trailers) f->ops->on_response_trailers(f, h);
        if (dead(hs)) return;
    }
    hs->flags |= RM_HS_RESP_END;
    hs->resp_trailers = h;
    hs->down->ops->submit_trailers(hs->down, h);
    maybe_done(hs);
}

unsigned rm_hcm_grpc_status_of_http(unsigned http)
{
    switch (http) {
    case 400:
        return 13; /* INTERNAL */
    case 401:
        return 16; /* UNAUTHENTICATED */
    case 403:
        return 7; /* PERMISSION_DENIED */
    case 404:
        return 12; /* UNIMPLEMENTED */
    case 429:
    case 502:
    case 503:
    case 504:
        return 14; /* UNAVAILABLE */
    default:
        return 2; /* UNKNOWN */
    }
}

void rm_hcm_local_reply(struct rm_hcm_stream *hs, unsigned from, unsigned status, const char *flags,
                        const char *details, const char *body)
{
    struct rm_local_reply r = {
        .status = status, .grpc_status = -1, .flags = flags, .details = details, .body = body};
    rm_hcm_local_reply_ex(hs, from, &r);
}

void rm_hcm_local_reply_ex(struct rm_hcm_stream *hs, unsigned from, const struct rm_local_reply *r)
{
    unsigned status = r->status;
    const char *flags = r->flags, *body = r->body;
    if (dead(hs)) return;
    hs->resp_flags = flags;
    hs->details = r->details;
    if (hs->flags & RM_HS_RESP_HEADERS) { /* too late for a reply: reset */
        rm_hcm_reset(hs);
        return;
    }
    hs->flags |= RM_HS_LOCAL_REPLY;
    size_t blen = body ? strlen(body) : 0;
    struct rm_headers *h = rm_arena_alloc(hs->arena, sizeof(*h));
    rm_headers_init(h, hs->arena);
    char num[16];
    if (hs->flags & RM_HS_GRPC) {
        rm_headers_add_ref(h, ":status", 7, "200", 3);
        rm_headers_add_ref(h, "content-type", 12, "application/grpc", 16);
        int n = snprintf(num, sizeof(num), "%u",
                         r->grpc_status >= 0 ? (unsigned)r->grpc_status
                                             : rm_hcm_grpc_status_of_http(status));
        rm_headers_add(h, "grpc-status", 11, num, (size_t)n);
        if (blen) rm_headers_add(h, "grpc-message", 12, body, blen);
        if (flags && strcmp(flags, "UO") == 0)
            rm_headers_add_ref(h, "x-envoy-overloaded", 18, "true", 4);
        if (r->edit_headers) r->edit_headers(r->ctx, h);
        rm_hcm_encode_headers(hs, from, h, true);
        return;
    }
    int n = snprintf(num, sizeof(num), "%u", status);
    rm_headers_add(h, ":status", 7, num, (size_t)n);
    if (blen) {
        rm_headers_add_ref(h, "content-type", 12, "text/plain", 10);
        n = snprintf(num, sizeof(num), "%zu", blen);
        rm_headers_add(h, "content-length", 14, num, (size_t)n);
    }
    if (flags && strcmp(flags, "UO") == 0)
        rm_headers_add_ref(h, "x-envoy-overloaded", 18, "true", 4);
    if (r->edit_headers) r->edit_headers(r->ctx, h);
    bool head = hs->flags & RM_HS_HEAD;
    rm_hcm_encode_headers(hs, from, h, blen == 0 || head);
    if (blen && !head && !dead(hs)) rm_hcm_encode_data(hs, from, (const uint8_t *)body, blen, true);
}

void rm_hcm_reset(struct rm_hcm_stream *hs)
{
    if (dead(hs)) return;
    rm_stat_inc(hstats(hs), RM_HS_DOWNSTREAM_RQ_TX_RESET);
    hs->flags |= RM_HS_RESET;
    hs->down->ops->reset(hs->down, RM_RESET_LOCAL);
    stream_finish(hs);
}

/* ---- end of stream ------------------------------------------------------------------------ */

/* Envoy logs every stream, local replies and resets included. */
static void access_log(struct rm_hcm_stream *hs)
{
    struct rm_hcm_conn *hc = hs->hc;
    uint64_t now = rm_loop_now(hc->w->loop);
    const char *flags = hs->resp_flags, *details = hs->details;
    if (!flags && (hs->flags & RM_HS_RESET) && !(hs->flags & RM_HS_RESP_END)) {
        flags = "DC"; /* downstream connection termination */
        /* Envoy: the disconnect replaces via_upstream; a late upstream reset keeps its own */
        if (!details || strcmp(details, "via_upstream") == 0)
            details = "downstream_remote_disconnect";
    }
    struct rm_alog_info in = {
        .req = hs->req,
        .resp = hs->resp,
        .trailers = hs->resp_trailers,
        .protocol = hs->down->proto == RM_HTTP2    ? "HTTP/2"
                    : hs->down->proto == RM_HTTP10 ? "HTTP/1.0"
                                                   : "HTTP/1.1",
        .status = (hs->flags & RM_HS_RESP_HEADERS) ? hs->status : 0,
        .resp_flags = flags,
        .details = details,
        .transport_failure = hs->transport_failure,
        .transport_errno = hs->transport_errno,
        .bytes_rx = hs->bytes_rx,
        .bytes_tx = hs->bytes_tx,
        .start = hs->start_wall,
        .duration_ms = (int64_t)(now - hs->start_ms),
        .req_duration_ms = hs->req_end_ms ? (int64_t)(hs->req_end_ms - hs->start_ms) : -1,
        .resp_duration_ms = hs->resp_start_ms ? (int64_t)(hs->resp_start_ms - hs->start_ms) : -1,
        .upstream_host = hs->upstream_host,
        .upstream_cluster = hs->upstream_cluster,
        .route_name = hs->route && hs->route->name && hs->route->name[0] ? hs->route->name : NULL,
        .down_remote = (const struct sockaddr *)&hc->peer_addr,
        .down_local = (const struct sockaddr *)&hc->local_addr,
        .down_pipe = hc->lc->addr.ss_family == AF_UNIX ? hc->lc->addr_str : NULL,
        .upstream_local =
            hs->upstream_local.sin6_family ? (const struct sockaddr *)&hs->upstream_local : NULL,
        .down_tls = hc->tls_info,
        .upstream_peer_uri_san = hs->upstream_peer_uri_san,
        .connection_id = hc->id,
        .attempts = hs->attempts,
        .health_check = hs->flags & RM_HS_HEALTH_CHECK,
    };
    for (size_t i = 0; i < hs->cfg->n_access_logs; i++)
        rm_access_log_write(hs->cfg->access_logs[i], hc->w->loop, &in);
}

static void finish_task(struct rm_task *t)
{
    struct rm_hcm_stream *hs = rm_container_of(t, struct rm_hcm_stream, finish_task);
    struct rm_hcm_conn *hc = hs->hc;
    for (unsigned i = 0; i < hs->n_filters; i++) {
        if (hs->filters[i]->ops->on_destroy) hs->filters[i]->ops->on_destroy(hs->filters[i]);
    }
    rm_buf_reset(&hs->held);
    rm_stat_dec(hstats(hs), RM_HS_DOWNSTREAM_RQ_ACTIVE);
    if (hs->flags & RM_HS_RESP_END) rm_stat_inc(hstats(hs), RM_HS_DOWNSTREAM_RQ_COMPLETED);
    if (hs->resp_flags)
        rm_log_debug("%s request finished: %u %s", hc->cfg->stat_prefix, hs->status,
                     hs->resp_flags);
    if (hs->cfg->n_access_logs) access_log(hs);
    if (--hc->active_streams == 0) rm_hcm_conn_idle(hc);
    struct rm_worker_snap *ws = hs->wsnap;
    struct rm_stream *down = hs->down;
    down->ops->release(down); /* frees hs (it lives in the stream's arena) */
    rm_worker_snap_release(ws);
}

static void stream_finish(struct rm_hcm_stream *hs)
{
    if (hs->flags & RM_HS_FINISHING) return;
    hs->flags |= RM_HS_FINISHING;
    rm_hcm_stream_timers_stop(hs);
    rm_loop_defer(hs->hc->w->loop, &hs->finish_task, finish_task);
}
