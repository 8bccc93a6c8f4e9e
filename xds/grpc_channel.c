/* gRPC channel: connections (lazy connect, GOAWAY draining, loss), keepalive PINGs, handing
 * waiting calls their streams, and the channel's lifetime.  See grpc.h and grpc_internal.h. */
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/core/log.h"
#include "proxy/net/tls.h"
#include "xds/grpc_internal.h"

/* The single connection state setter (see grpc_internal.h for the transitions). */
static void conn_set_state(struct rm_grpc_conn *gc, enum rm_grpc_conn_state to)
{
    static const uint8_t legal_next[] = {
        [RM_GRPC_CONN_CONNECTING] = 1u << RM_GRPC_CONN_READY | 1u << RM_GRPC_CONN_DEAD,
        [RM_GRPC_CONN_READY] = 1u << RM_GRPC_CONN_DRAINING | 1u << RM_GRPC_CONN_DEAD,
        [RM_GRPC_CONN_DRAINING] = 1u << RM_GRPC_CONN_DEAD,
        [RM_GRPC_CONN_DEAD] = 0,
    };
    assert(legal_next[gc->state] & (1u << to));
    gc->state = to;
}

static void conn_free_task(struct rm_task *t)
{
    struct rm_grpc_conn *gc = rm_container_of(t, struct rm_grpc_conn, free_task);
    rm_timer_stop(gc->loop, &gc->ka);
    rm_timer_stop(gc->loop, &gc->retry);
    free(gc);
}

static void unlink_conn(struct rm_grpc_conn *gc)
{
    struct rm_grpc_channel *ch = gc->ch;
    if (!ch) return;
    if (ch->cur == gc) ch->cur = NULL;
    for (struct rm_grpc_conn **pp = &ch->conns; *pp; pp = &(*pp)->next) {
        if (*pp == gc) {
            *pp = gc->next;
            break;
        }
    }
    gc->next = NULL;
}

/* Close the transport now, without callbacks (calls were ended or released first). */
static void close_transport(struct rm_grpc_conn *gc)
{
    if (gc->codec) {
        struct rm_codec *codec = gc->codec;
        gc->codec = NULL;
        rm_h2_ping(codec, NULL, NULL);
        codec->ops->close(codec);
    }
    if (gc->tcp) {
        rm_conn_close(gc->tcp);
        gc->tcp = NULL;
    }
}

/* Stop the connection's timer and transport; it leaves the channel and is freed from its
 * task.  The state is already DEAD. */
static void conn_bury(struct rm_grpc_conn *gc)
{
    rm_timer_stop(gc->loop, &gc->ka);
    rm_timer_stop(gc->loop, &gc->retry);
    gc->ka_wait_ack = false;
    close_transport(gc);
    unlink_conn(gc);
    rm_loop_defer(gc->loop, &gc->free_task, conn_free_task);
}

/* The connection is over and has no call left that needs telling. */
static void conn_dead(struct rm_grpc_conn *gc)
{
    if (gc->state == RM_GRPC_CONN_DEAD) return;
    conn_set_state(gc, RM_GRPC_CONN_DEAD);
    conn_bury(gc);
}

/* End <gc>, its calls with UNAVAILABLE and <fmt>, and the waiting calls too if new calls were
 * going to it (no connection is left for them).  The calls end (streams released) before the
 * transport closes, so the codec reports nothing more. */
static void conn_fail(struct rm_grpc_conn *gc, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void conn_fail(struct rm_grpc_conn *gc, const char *fmt, ...)
{
    struct rm_grpc_channel *ch = gc->ch;
    if (gc->state == RM_GRPC_CONN_DEAD) return;
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    rm_log_debug("grpc %s: %s", ch ? ch->target : "?", why);
    bool was_cur = ch && ch->cur == gc;
    conn_set_state(gc, RM_GRPC_CONN_DEAD); /* calls leaving it now dispatch nothing to it */
    unlink_conn(gc);
    for (struct rm_grpc_call *c = ch ? ch->calls : NULL; c; c = c->next) {
        if (c->gc == gc || (was_cur && c->state == RM_GRPC_CALL_WAITING))
            rm_grpc_call_finish(c, RM_GRPC_UNAVAILABLE, "%s", why);
    }
    conn_bury(gc);
}

/* ---- keepalive ---------------------------------------------------------------------------- */

static void ka_update(struct rm_grpc_conn *gc);

static void ka_acked(void *ctx)
{
    struct rm_grpc_conn *gc = ctx;
    if (!gc->ka_wait_ack) return;
    gc->ka_wait_ack = false;
    if (gc->ch) gc->ch->stats.pings_acked++;
    rm_timer_stop(gc->loop, &gc->ka);
    ka_update(gc);
}

static void ka_fired(struct rm_timer *t)
{
    struct rm_grpc_conn *gc = rm_container_of(t, struct rm_grpc_conn, ka);
    struct rm_grpc_channel *ch = gc->ch;
    if (!ch || !gc->codec) return;
    if (gc->ka_wait_ack) {
        ch->stats.keepalive_timeouts++;
        conn_fail(gc, "keepalive: no PING ACK from %s within %u ms", ch->target,
                  ch->o.keepalive_timeout_ms);
        return;
    }
    if (rm_h2_ping(gc->codec, ka_acked, gc) != 0) return; /* connection ending: on_close */
    ch->stats.pings_sent++;
    gc->ka_wait_ack = true;
    rm_timer_start(gc->loop, &gc->ka, ch->o.keepalive_timeout_ms, ka_fired);
}

/* PING every interval while calls are open (or always, with keepalive_without_calls). */
static void ka_update(struct rm_grpc_conn *gc)
{
    struct rm_grpc_channel *ch = gc->ch;
    bool want = ch && ch->o.keepalive_interval_ms && gc->codec && gc->state != RM_GRPC_CONN_DEAD &&
                (gc->ncalls || ch->o.keepalive_without_calls);
    if (!want) {
        if (gc->ka_wait_ack && gc->codec) rm_h2_ping(gc->codec, NULL, NULL);
        gc->ka_wait_ack = false;
        rm_timer_stop(gc->loop, &gc->ka);
        return;
    }
    if (!rm_timer_armed(&gc->ka))
        rm_timer_start(gc->loop, &gc->ka, ch->o.keepalive_interval_ms, ka_fired);
}

/* ---- connection events -------------------------------------------------------------------- */

static void codec_goaway(void *user)
{
    struct rm_grpc_conn *gc = user;
    struct rm_grpc_channel *ch = gc->ch;
    if (!ch || gc->state != RM_GRPC_CONN_READY) return;
    ch->stats.goaways++;
    rm_log_debug("grpc %s: GOAWAY: %u calls finish on this connection, new calls reconnect",
                 ch->target, gc->ncalls);
    conn_set_state(gc, RM_GRPC_CONN_DRAINING);
    if (ch->cur == gc) ch->cur = NULL;
    if (gc->ncalls == 0) conn_dead(gc);
    rm_grpc_channel_dispatch(ch); /* calls waiting for a slot: a new connection */
}

static void codec_closed(void *user, int err)
{
    struct rm_grpc_conn *gc = user;
    struct rm_grpc_channel *ch = gc->ch;
    gc->codec = NULL; /* it frees itself */
    if (!ch || gc->state == RM_GRPC_CONN_DEAD) return;
    if (gc->state == RM_GRPC_CONN_READY) ch->stats.disconnects++;
    if (err)
        conn_fail(gc, "connection to %s closed: %s", ch->target, strerror(-err));
    else
        conn_fail(gc, "connection to %s closed by the peer", ch->target);
}

static void codec_idle(void *user)
{
    struct rm_grpc_conn *gc = user;
    if (gc->ch && gc->state == RM_GRPC_CONN_READY) rm_grpc_channel_dispatch(gc->ch);
}

static const struct rm_codec_callbacks codec_cb = {
    .on_idle = codec_idle,
    .on_goaway = codec_goaway,
    .on_close = codec_closed,
};

static void tcp_connected(struct rm_conn *conn, int err)
{
    struct rm_grpc_conn *gc = conn->owner;
    struct rm_grpc_channel *ch = gc->ch;
    gc->tcp = NULL;
    if (err) { /* the conn closed and frees itself */
        ch->stats.connect_failures++;
        conn_fail(gc, "failed to connect to %s: %s", ch->target, strerror(-err));
        return;
    }
    gc->codec = rm_h2_client_new(conn, &ch->st, &codec_cb, gc);
    if (!gc->codec) {
        rm_conn_close(conn);
        ch->stats.connect_failures++;
        conn_fail(gc, "connection to %s: cannot start HTTP/2", ch->target);
        return;
    }
    rm_log_debug("grpc %s: connected", ch->target);
    conn_set_state(gc, RM_GRPC_CONN_READY);
    rm_grpc_channel_dispatch(ch);
    ka_update(gc);
}

static size_t tcp_data(struct rm_conn *c, const uint8_t *p, size_t n)
{
    return 0; /* not before connected */
}

static void tcp_closed(struct rm_conn *c, int err) {}

static const struct rm_conn_handler connecting_handler = {
    .on_connected = tcp_connected,
    .on_data = tcp_data,
    .on_close = tcp_closed,
};

/* Start a connection; it becomes ch->cur.  Returns NULL when no socket could be made (the
 * waiting calls have been failed then). */
static struct rm_grpc_conn *conn_start(struct rm_grpc_channel *ch)
{
    struct rm_grpc_conn *gc = calloc(1, sizeof(*gc));
    if (!gc) abort();
    gc->ch = ch;
    gc->loop = ch->loop;
    gc->state = RM_GRPC_CONN_CONNECTING; /* initial */
    gc->next = ch->conns;
    ch->conns = gc;
    ch->cur = gc;
    ch->stats.connects++;
    int err = 0;
    gc->tcp = rm_conn_connect(ch->loop, (const struct sockaddr *)&ch->addr, ch->addr_len,
                              ch->o.connect_timeout_ms, &connecting_handler, gc, &err);
    if (gc->tcp && ch->o.tls &&
        (err = rm_conn_start_tls(gc->tcp, ch->o.tls, RM_TLS_ALPN_H2, strlen(RM_TLS_ALPN_H2), 0))) {
        rm_conn_close(gc->tcp); /* the handshake is bounded by the connect timeout */
        gc->tcp = NULL;
    }
    if (!gc->tcp) {
        ch->stats.connect_failures++;
        conn_fail(gc, "failed to connect to %s: %s", ch->target, strerror(-err));
        return NULL;
    }
    rm_log_debug("grpc %s: connecting%s", ch->target, ch->o.tls ? " (TLS)" : "");
    return gc;
}

/* ---- dispatch ----------------------------------------------------------------------------- */

static void retry_fired(struct rm_timer *t)
{
    struct rm_grpc_conn *gc = rm_container_of(t, struct rm_grpc_conn, retry);
    if (gc->ch && gc->state == RM_GRPC_CONN_READY) rm_grpc_channel_dispatch(gc->ch);
}

/* <gc> has no stream slot for a waiting call.  If some slots are held by streams our calls
 * already released (closing on the wire: the codec frees the slot once nghttp2 closes them,
 * and only says so when all are gone), look again shortly; otherwise a call leaving or the
 * codec going idle comes back here. */
static void no_slot(struct rm_grpc_conn *gc)
{
    if (gc->codec->ops->active_streams(gc->codec) > gc->ncalls && !rm_timer_armed(&gc->retry))
        rm_timer_start(gc->loop, &gc->retry, 1, retry_fired);
}

static void dispatch_once(struct rm_grpc_channel *ch)
{
    for (struct rm_grpc_call *c = ch->calls; c; c = c->next) {
        if (c->state != RM_GRPC_CALL_WAITING) continue;
        if (!ch->cur && !conn_start(ch)) return;
        struct rm_grpc_conn *gc = ch->cur;
        if (gc->state != RM_GRPC_CONN_READY) return; /* connecting: tcp_connected() comes back */
        if (rm_grpc_call_activate(c, gc) != 0) {
            no_slot(gc);
            return;
        }
    }
}

void rm_grpc_channel_dispatch(struct rm_grpc_channel *ch)
{
    if (ch->freeing) return;
    if (ch->dispatching) { /* re-entered (a call ended while activating): loop again */
        ch->redispatch = true;
        return;
    }
    ch->dispatching = true;
    do {
        ch->redispatch = false;
        dispatch_once(ch);
    } while (ch->redispatch);
    ch->dispatching = false;
}

void rm_grpc_conn_call_joined(struct rm_grpc_conn *gc)
{
    ka_update(gc);
}

void rm_grpc_conn_call_left(struct rm_grpc_conn *gc)
{
    if (gc->state == RM_GRPC_CONN_DEAD) return;
    if (gc->state == RM_GRPC_CONN_DRAINING && gc->ncalls == 0) {
        conn_dead(gc);
        return;
    }
    ka_update(gc);
    if (gc->state == RM_GRPC_CONN_READY && gc->ch) rm_grpc_channel_dispatch(gc->ch);
}

/* ---- the channel -------------------------------------------------------------------------- */

static void format_target(const struct sockaddr *a, char *buf, size_t len)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (a->sa_family == AF_UNIX) {
        rm_sockaddr_str(a, buf, len); /* the pipe's path, or @name */
    } else if (a->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)a;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
        snprintf(buf, len, "%s:%u", ip, ntohs(in->sin_port));
    } else if (a->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)a;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
        snprintf(buf, len, "[%s]:%u", ip, ntohs(in6->sin6_port));
    } else {
        snprintf(buf, len, "unknown");
    }
}

static void fill_opts(struct rm_grpc_channel *ch, const struct rm_grpc_channel_opts *o)
{
    if (o) ch->o = *o;
    if (!ch->o.connect_timeout_ms) ch->o.connect_timeout_ms = RM_GRPC_DEFAULT_CONNECT_TIMEOUT_MS;
    if (!ch->o.keepalive_timeout_ms)
        ch->o.keepalive_timeout_ms = RM_GRPC_DEFAULT_KEEPALIVE_TIMEOUT_MS;
    if (!ch->o.max_recv_msg) ch->o.max_recv_msg = RM_GRPC_DEFAULT_MAX_RECV;
    if (!ch->o.call_buffer) ch->o.call_buffer = RM_GRPC_DEFAULT_CALL_BUFFER;
    ch->st.buffer_limit = ch->o.call_buffer;
}

struct rm_grpc_channel *rm_grpc_channel_new(struct rm_loop *loop, const struct sockaddr *addr,
                                            socklen_t addr_len, const char *authority,
                                            const struct rm_grpc_channel_opts *o,
                                            struct rm_error *err)
{
    if (!loop || !addr || addr_len == 0 || addr_len > sizeof(struct sockaddr_storage) ||
        (addr->sa_family != AF_INET && addr->sa_family != AF_INET6 && addr->sa_family != AF_UNIX)) {
        rm_error_set(err, "grpc channel: an IPv4, IPv6 or unix socket address is required");
        return NULL;
    }
    struct rm_grpc_channel *ch = calloc(1, sizeof(*ch));
    if (!ch) goto fail_oom;
    ch->loop = loop;
    memcpy(&ch->addr, addr, addr_len);
    ch->addr_len = addr_len;
    format_target(addr, ch->target, sizeof(ch->target));
    ch->authority = strdup(authority ? authority : ch->target);
    if (!ch->authority) goto fail_ch;
    fill_opts(ch, o);
    if (ch->o.tls) rm_tls_ctx_ref(ch->o.tls);
    return ch;
fail_ch:
    free(ch);
fail_oom:
    rm_error_set(err, "grpc channel: out of memory");
    return NULL;
}

void rm_grpc_channel_free(struct rm_grpc_channel *ch)
{
    if (!ch || ch->freeing) return;
    ch->freeing = true;
    /* every call ends first, synchronously (callbacks may still use the channel) */
    for (struct rm_grpc_call *c = ch->calls; c; c = c->next) {
        rm_grpc_call_finish(c, RM_GRPC_CANCELLED, "channel closed");
        if (c->state == RM_GRPC_CALL_FINISHED) rm_grpc_call_deliver_close(c);
    }
    struct rm_grpc_call *c;
    while ((c = ch->calls)) { /* orphans: their tasks free them */
        ch->calls = c->next;
        c->prev = c->next = NULL;
        c->ch = NULL;
        rm_grpc_call_schedule(c);
    }
    ch->calls_tail = NULL;
    struct rm_grpc_conn *gc;
    while ((gc = ch->conns)) {
        conn_dead(gc); /* unlinks it */
        gc->ch = NULL;
    }
    free(ch->scratch);
    free(ch->authority);
    rm_tls_ctx_unref(ch->o.tls);
    free(ch);
}

const struct rm_grpc_channel_stats *rm_grpc_channel_stats(const struct rm_grpc_channel *ch)
{
    return &ch->stats;
}

const char *rm_grpc_channel_target(const struct rm_grpc_channel *ch)
{
    return ch->target;
}
