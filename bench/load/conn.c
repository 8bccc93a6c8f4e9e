/* remora-load: one client connection; see conn.h for the contract. */
#include "bench/load/conn.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench/load/tls.h"
#include "bench/load/worker.h"

#define OUT_INITIAL 16384
#define BACKOFF_MIN (10 * RML_NS_PER_MS)
#define BACKOFF_MAX (1000 * RML_NS_PER_MS)

static int measuring(const struct rml_worker *w)
{
    return w->now >= w->t_measure;
}

static void set_events(struct rml_conn *c, uint32_t ev)
{
    if (c->events == ev) return;
    struct epoll_event e = {.events = ev, .data.ptr = c};
    if (epoll_ctl(c->w->epfd, EPOLL_CTL_MOD, c->fd, &e) == 0) c->events = ev;
}

int rml_conn_init(struct rml_conn *c, struct rml_worker *w, unsigned idx)
{
    memset(c, 0, sizeof(*c));
    c->w = w;
    c->idx = idx;
    c->fd = -1;
    c->state = RML_CS_IDLE;
    c->capacity = w->cfg->streams;
    c->proto = w->cfg->h1 ? &rml_proto_h1 : &rml_proto_h2;
    c->slots = calloc(c->capacity, sizeof(*c->slots));
    c->out.data = malloc(OUT_INITIAL);
    if (!c->slots || !c->out.data) {
        free(c->slots);
        free(c->out.data);
        c->slots = NULL;
        c->out.data = NULL;
        return -1;
    }
    c->out.cap = OUT_INITIAL;
    for (unsigned i = c->capacity; i-- > 0;) {
        c->slots[i].conn = c;
        c->slots[i].next = c->free_slots;
        c->free_slots = &c->slots[i];
    }
    return 0;
}

void rml_conn_dispose(struct rml_conn *c, enum rml_err kind)
{
    rml_conn_close(c, kind, 1);
    free(c->slots);
    free(c->out.data);
    c->slots = NULL;
    c->out.data = NULL;
}

int rml_conn_out_append(struct rml_conn *c, const void *p, size_t n)
{
    struct rml_outbuf *o = &c->out;
    if (o->len + n > o->cap && o->off > 0) {
        memmove(o->data, o->data + o->off, o->len - o->off);
        o->len -= o->off;
        o->off = 0;
    }
    if (o->len + n > o->cap) {
        size_t cap = o->cap * 2;
        while (cap < o->len + n)
            cap *= 2;
        uint8_t *d = realloc(o->data, cap);
        if (!d) return -1;
        o->data = d;
        o->cap = cap;
    }
    memcpy(o->data + o->len, p, n);
    o->len += n;
    return 0;
}

void rml_conn_mark_dirty(struct rml_conn *c)
{
    if (c->dirty) return;
    c->dirty = 1;
    c->dirty_next = c->w->dirty_head;
    c->w->dirty_head = c;
}

/* Drop the socket and TLS state (no accounting). */
static void teardown(struct rml_conn *c)
{
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0) {
        close(c->fd); /* also leaves the epoll set */
        c->fd = -1;
    }
    c->events = 0;
    c->out.len = c->out.off = 0;
}

static void schedule_reconnect(struct rml_conn *c, int now_ok)
{
    struct rml_worker *w = c->w;
    if (now_ok) {
        c->backoff_ns = 0;
        c->reconnect_at = w->now;
        w->next_maint = 0; /* run the reconnect in this loop iteration's maintenance */
    } else {
        c->backoff_ns = c->backoff_ns ? c->backoff_ns * 2 : BACKOFF_MIN;
        if (c->backoff_ns > BACKOFF_MAX) c->backoff_ns = BACKOFF_MAX;
        c->reconnect_at = w->now + c->backoff_ns;
    }
}

static void connect_failed(struct rml_conn *c)
{
    teardown(c);
    c->state = RML_CS_IDLE;
    c->w->stats->connect_errors++;
    schedule_reconnect(c, 0);
}

static void transport_ready(struct rml_conn *c)
{
    struct rml_worker *w = c->w;
    uint64_t now = rml_now_ns();
    rml_hist_record(&w->stats->connect, now - c->t_connect);
    w->stats->conns_opened++;
    c->state = RML_CS_READY;
    c->no_more = 0;
    c->done_here = 0;
    set_events(c, EPOLLIN);
    if (c->proto->init(c) < 0) {
        rml_conn_close(c, RML_E_PROTOCOL, 0);
        return;
    }
    rml_conn_mark_dirty(c);
    rml_worker_ready_update(w, c);
}

static void tls_step(struct rml_conn *c)
{
    uint32_t want = 0;
    int rv = rml_tls_handshake(c->ssl, &want);
    if (rv == 0) {
        set_events(c, want);
    } else if (rv < 0 || !rml_tls_alpn_ok(c->ssl, c->w->cfg)) {
        connect_failed(c);
    } else {
        transport_ready(c);
    }
}

static void connected(struct rml_conn *c)
{
    if (!c->w->cfg->tls) {
        transport_ready(c);
        return;
    }
    c->ssl = rml_tls_new(c->w->ssl_ctx, c->w->cfg, c->fd);
    if (!c->ssl) {
        connect_failed(c);
        return;
    }
    c->state = RML_CS_TLS;
    tls_step(c);
}

void rml_conn_start(struct rml_conn *c)
{
    const struct rml_config *cfg = c->w->cfg;
    c->t_connect = rml_now_ns();
    c->fd = socket(cfg->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        connect_failed(c);
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct epoll_event e = {.events = EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(c->w->epfd, EPOLL_CTL_ADD, c->fd, &e) < 0) {
        connect_failed(c);
        return;
    }
    c->events = EPOLLOUT;
    c->state = RML_CS_CONNECTING;
    if (connect(c->fd, (const struct sockaddr *)&cfg->addr, cfg->addrlen) == 0)
        connected(c);
    else if (errno != EINPROGRESS)
        connect_failed(c);
}

void rml_conn_close(struct rml_conn *c, enum rml_err kind, int clean)
{
    if (c->state == RML_CS_IDLE) return;
    int was_ready = c->state == RML_CS_READY;
    c->state = RML_CS_IDLE; /* first: callbacks and ready_update see a closed connection */
    rml_worker_ready_update(c->w, c);
    for (unsigned i = 0; i < c->capacity && c->active > 0; i++)
        if (c->slots[i].active) rml_conn_req_fail(c, &c->slots[i], kind);
    c->h1_head = c->h1_tail = NULL;
    if (was_ready) c->proto->dispose(c);
    teardown(c);
    schedule_reconnect(c, clean || c->done_here > 0);
}

/* Read what the socket has and feed the protocol. */
static void do_read(struct rml_conn *c)
{
    struct rml_worker *w = c->w;
    for (int i = 0; i < 16; i++) {
        ssize_t n;
        if (c->ssl) {
            n = rml_tls_read(c->ssl, w->rbuf, w->rbuf_cap);
        } else {
            n = read(c->fd, w->rbuf, w->rbuf_cap);
            if (n < 0) n = (errno == EAGAIN || errno == EINTR) ? RML_IO_AGAIN : RML_IO_ERROR;
        }
        if (n > 0) {
            if (measuring(w)) w->stats->bytes_rx += (uint64_t)n;
            if (c->proto->on_read(c, w->rbuf, (size_t)n) < 0) {
                rml_conn_close(c, RML_E_PROTOCOL, 0);
                return;
            }
            if (c->state != RML_CS_READY) return;
            if (!c->ssl && (size_t)n < w->rbuf_cap) break;
        } else if (n == 0) {
            c->proto->on_read(c, NULL, 0);
            rml_conn_close(c, RML_E_RESET, c->active == 0);
            return;
        } else if (n == RML_IO_AGAIN) {
            break;
        } else {
            rml_conn_close(c, RML_E_RESET, 0);
            return;
        }
    }
    rml_conn_mark_dirty(c);
}

void rml_conn_on_event(struct rml_conn *c, uint32_t events)
{
    switch (c->state) {
    case RML_CS_CONNECTING: {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0)
            connect_failed(c);
        else if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            connected(c);
        break;
    }
    case RML_CS_TLS:
        tls_step(c);
        break;
    case RML_CS_READY:
        if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) do_read(c);
        if (c->state == RML_CS_READY && (events & EPOLLOUT)) rml_conn_mark_dirty(c);
        break;
    case RML_CS_IDLE:
        break; /* a stale event from before a close in this batch */
    }
}

void rml_conn_flush(struct rml_conn *c)
{
    struct rml_worker *w = c->w;
    if (c->state != RML_CS_READY) return;
    if (c->proto->fill(c) < 0) {
        rml_conn_close(c, RML_E_PROTOCOL, 0);
        return;
    }
    struct rml_outbuf *o = &c->out;
    while (o->off < o->len) {
        ssize_t n;
        if (c->ssl) {
            n = rml_tls_write(c->ssl, o->data + o->off, o->len - o->off);
        } else {
            n = write(c->fd, o->data + o->off, o->len - o->off);
            if (n < 0) n = (errno == EAGAIN || errno == EINTR) ? RML_IO_AGAIN : RML_IO_ERROR;
        }
        if (n > 0) {
            o->off += (size_t)n;
            if (measuring(w)) w->stats->bytes_tx += (uint64_t)n;
        } else if (n == RML_IO_AGAIN) {
            set_events(c, EPOLLIN | EPOLLOUT);
            return;
        } else {
            rml_conn_close(c, RML_E_RESET, 0);
            return;
        }
    }
    o->off = o->len = 0;
    if (c->events & EPOLLOUT) set_events(c, EPOLLIN);
    if (c->no_more && c->active == 0) {
        /* --new-conn: end the TLS session properly (one close_notify record, no wait for the
         * peer's); the socket's close then sends FIN */
        if (c->ssl && w->cfg->new_conn) {
            SSL_shutdown(c->ssl);
            ERR_clear_error();
        }
        rml_conn_close(c, RML_E_RESET, 1);
    }
}

void rml_conn_send(struct rml_conn *c, uint64_t t_sched, int measured, uint32_t tmpl)
{
    struct rml_worker *w = c->w;
    struct rml_req *r = c->free_slots;
    c->free_slots = r->next;
    r->next = NULL;
    r->t_sched = t_sched;
    r->t_sent = w->now;
    r->stream_id = -1;
    r->tmpl = tmpl;
    r->body_off = 0;
    r->status = 0;
    r->grpc_status = -1;
    r->active = 1;
    r->measured = (uint8_t)measured;
    c->active++;
    w->inflight++;
    if (w->cfg->new_conn) c->no_more = 1; /* one request, then close and reconnect */
    rml_conn_mark_dirty(c);
    if (c->proto->submit(c, r) < 0)
        rml_conn_req_fail(c, r, RML_E_PROTOCOL);
    else
        rml_worker_ready_update(w, c);
}

static void release(struct rml_conn *c, struct rml_req *r)
{
    r->active = 0;
    r->next = c->free_slots;
    c->free_slots = r;
    c->active--;
    c->w->inflight--;
    rml_worker_ready_update(c->w, c);
}

void rml_conn_req_done(struct rml_conn *c, struct rml_req *r)
{
    c->done_here++;
    c->backoff_ns = 0;
    rml_worker_account(c->w, r, -1);
    release(c, r);
}

void rml_conn_req_fail(struct rml_conn *c, struct rml_req *r, enum rml_err kind)
{
    rml_worker_account(c->w, r, (int)kind);
    release(c, r);
}

void rml_conn_req_retry(struct rml_conn *c, struct rml_req *r)
{
    rml_worker_retry(c->w, r);
    release(c, r);
}

void rml_conn_check_timeouts(struct rml_conn *c, uint64_t now)
{
    const struct rml_config *cfg = c->w->cfg;
    if (c->state == RML_CS_CONNECTING || c->state == RML_CS_TLS) {
        if (now - c->t_connect >= cfg->connect_timeout_ns) connect_failed(c);
        return;
    }
    if (c->state != RML_CS_READY || cfg->timeout_ns == 0 || c->active == 0) return;
    for (unsigned i = 0; i < c->capacity; i++) {
        struct rml_req *r = &c->slots[i];
        if (!r->active || now - r->t_sent < cfg->timeout_ns) continue;
        if (c->proto->cancel(c, r)) { /* a timeout is no reason to back off */
            rml_conn_close(c, RML_E_TIMEOUT, 1);
            return;
        }
        rml_conn_req_fail(c, r, RML_E_TIMEOUT);
        rml_conn_mark_dirty(c);
    }
}
