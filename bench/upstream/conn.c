/* remora-upstream: connections: I/O, protocol detection, output batching, close sequence. */
#include "bench/upstream/conn.h"

#include "bench/upstream/req.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

enum { READ_BUDGET = 16, WRITE_BUDGET = 16, DRAIN_TIMEOUT_MS = 1000 };

static const char H2_PREFACE[24] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

static void on_drain_timeout(struct rmu_timer *t)
{
    rmu_conn_kill(RMU_CONTAINER_OF(t, struct rmu_conn, drain_timer));
}

void rmu_conn_accept(struct rmu_loop *l, int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct rmu_conn *c = calloc(1, sizeof(*c));
    if (!c) goto fail_fd;
    c->h = (struct rmu_handle){RMU_H_CONN, fd};
    c->loop = l;
    c->writable = true;
    c->tls_checked = !rmu_tls_enabled();
    c->drain_timer.cb = on_drain_timeout;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) goto fail_conn;
    c->next = l->conns;
    if (l->conns) l->conns->prev = c;
    l->conns = c;
    atomic_fetch_add_explicit(&l->stats.conns, 1, memory_order_relaxed);
    return;

fail_conn:
    free(c);
fail_fd:
    fprintf(stderr, "remora-upstream: cannot take a connection: %s\n", strerror(errno));
    close(fd);
}

void rmu_conn_wake(struct rmu_conn *c)
{
    if (c->in_pending || c->state == RMU_CONN_DEAD) return;
    c->in_pending = true;
    c->pending_next = c->loop->pending;
    c->loop->pending = c;
}

void rmu_conn_on_events(struct rmu_conn *c, uint32_t events)
{
    if (c->state == RMU_CONN_DEAD) return;
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) c->readable = true;
    if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) c->hup = true;
    if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) c->writable = true;
    rmu_conn_wake(c);
}

void rmu_conn_kill(struct rmu_conn *c)
{
    if (c->state == RMU_CONN_DEAD) return;
    struct rmu_loop *l = c->loop;
    c->state = RMU_CONN_DEAD;
    rmu_timer_cancel(l, &c->drain_timer);
    if (c->prev)
        c->prev->next = c->next;
    else
        l->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = c->next = NULL;
    c->dead_next = l->dead;
    l->dead = c;
}

void rmu_conn_free(struct rmu_conn *c)
{
    if (c->proto == RMU_PROTO_H2) rmu_h2_dispose(c);
    while (c->reqs_head)
        rmu_req_free(c->reqs_head);
    if (c->ssl) SSL_free(c->ssl);
    close(c->h.fd);
    rmu_buf_dispose(&c->out);
    free(c);
}

static void reset_now(struct rmu_conn *c)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(c->h.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    rmu_conn_kill(c); /* the close() in rmu_conn_free sends the RST */
}

void rmu_conn_abort(struct rmu_conn *c, bool flush)
{
    if (c->state == RMU_CONN_DEAD) return;
    if (!flush || c->out.len == 0) {
        reset_now(c);
        return;
    }
    c->state = RMU_CONN_FLUSH_ABORT;
    rmu_conn_wake(c);
}

void rmu_conn_close(struct rmu_conn *c)
{
    if (c->state != RMU_CONN_OPEN) return;
    c->state = RMU_CONN_FLUSH_CLOSE;
    rmu_conn_wake(c);
}

/* Output flushed after a graceful close: send our FIN (and TLS close_notify), then read and
 * discard until the peer closes too, so that unread input does not turn our FIN into an RST
 * that could destroy the response in flight. */
static void start_drain(struct rmu_conn *c)
{
    if (c->ssl && c->tls_done) SSL_shutdown(c->ssl);
    shutdown(c->h.fd, SHUT_WR);
    if (c->peer_eof) {
        rmu_conn_kill(c);
        return;
    }
    c->state = RMU_CONN_DRAINING;
    rmu_timer_arm(c->loop, &c->drain_timer, DRAIN_TIMEOUT_MS);
    rmu_conn_wake(c);
}

/* ---- transport ------------------------------------------------------------------------------- */

static ssize_t t_read(struct rmu_conn *c, uint8_t *buf, size_t n)
{
    if (c->ssl && c->state != RMU_CONN_DRAINING) return rmu_tls_read(c, buf, n);
    for (;;) {
        ssize_t r = recv(c->h.fd, buf, n, 0);
        if (r >= 0) return r;
        if (errno == EINTR) continue;
        return errno == EAGAIN || errno == EWOULDBLOCK ? RMU_AGAIN : -1;
    }
}

static ssize_t t_write(struct rmu_conn *c, const uint8_t *buf, size_t n)
{
    if (c->ssl) return rmu_tls_write(c, buf, n);
    for (;;) {
        ssize_t r = send(c->h.fd, buf, n, MSG_NOSIGNAL);
        if (r >= 0) return r;
        if (errno == EINTR) continue;
        return errno == EAGAIN || errno == EWOULDBLOCK ? RMU_AGAIN : -1;
    }
}

/* ---- protocol dispatch ----------------------------------------------------------------------- */

static int feed(struct rmu_conn *c, const uint8_t *p, size_t n)
{
    switch (c->proto) {
    case RMU_PROTO_H1:
        return rmu_h1_input(c, p, n);
    case RMU_PROTO_H2:
        return rmu_h2_input(c, p, n);
    case RMU_PROTO_SNIFF:
        break;
    }
    /* Sniffing: HTTP/2 with prior knowledge starts with the 24-byte client preface. */
    size_t k = RMU_MIN(n, sizeof(H2_PREFACE) - c->nsniff);
    memcpy(c->sniff + c->nsniff, p, k);
    c->nsniff += k;
    bool prefix = memcmp(c->sniff, H2_PREFACE, c->nsniff) == 0;
    if (prefix && c->nsniff < sizeof(H2_PREFACE)) return 0;
    if ((prefix ? rmu_h2_init(c) : rmu_h1_init(c)) < 0) return -1;
    if (feed(c, c->sniff, c->nsniff) < 0) return -1;
    return k < n && c->state == RMU_CONN_OPEN ? feed(c, p + k, n - k) : 0;
}

static int produce(struct rmu_conn *c)
{
    switch (c->proto) {
    case RMU_PROTO_H1:
        return rmu_h1_produce(c);
    case RMU_PROTO_H2:
        return rmu_h2_produce(c);
    case RMU_PROTO_SNIFF:
        break;
    }
    return 0;
}

static bool read_paused(const struct rmu_conn *c)
{
    switch (c->state) {
    case RMU_CONN_OPEN:
        if (c->proto == RMU_PROTO_H1) return rmu_h1_paused(c);
        return c->out.len >= RMU_OUT_HIGH; /* the peer is not reading its responses */
    case RMU_CONN_DRAINING:
        return false;
    default:
        return true;
    }
}

static void on_eof(struct rmu_conn *c)
{
    c->peer_eof = true;
    if (c->state == RMU_CONN_OPEN && c->proto == RMU_PROTO_H1)
        rmu_h1_eof(c); /* answers what is complete, then closes */
    else
        rmu_conn_kill(c);
}

/* ---- processing ------------------------------------------------------------------------------ */

static int check_tls(struct rmu_conn *c)
{
    uint8_t b;
    ssize_t n = recv(c->h.fd, &b, 1, MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        c->readable = false;
        return 0;
    }
    if (n <= 0) {
        rmu_conn_kill(c);
        return -1;
    }
    c->tls_checked = true;
    if (b == 0x16 && rmu_tls_attach(c) < 0) {
        rmu_conn_kill(c);
        return -1;
    }
    return 0;
}

static void conn_read(struct rmu_conn *c)
{
    uint8_t *buf = c->loop->rbuf;
    for (int i = 0; i < READ_BUDGET; i++) {
        if (!c->readable || read_paused(c)) return;
        ssize_t n = t_read(c, buf, RMU_READ_BUF);
        if (n == RMU_AGAIN) {
            c->readable = false;
            return;
        }
        if (n < 0) {
            rmu_conn_kill(c);
            return;
        }
        if (n == 0) {
            c->readable = false;
            on_eof(c);
            return;
        }
        if (c->state == RMU_CONN_DRAINING) continue;
        if (feed(c, buf, (size_t)n) < 0) {
            rmu_conn_kill(c);
            return;
        }
        if (!c->ssl && !c->hup && (size_t)n < RMU_READ_BUF)
            c->readable = false; /* short read: the socket is empty, epoll reports new data */
    }
    if (c->readable) rmu_conn_wake(c); /* budget spent: continue next iteration, after the others */
}

static void conn_flush(struct rmu_conn *c)
{
    for (int i = 0;; i++) {
        if (c->state == RMU_CONN_OPEN && produce(c) < 0) {
            rmu_conn_kill(c);
            return;
        }
        if (c->state == RMU_CONN_DEAD || c->out.len == 0 || !c->writable) break;
        if (i == WRITE_BUDGET) {
            rmu_conn_wake(c);
            return;
        }
        ssize_t n = t_write(c, rmu_buf_head(&c->out), c->out.len);
        if (n == RMU_AGAIN) {
            c->writable = false;
            break;
        }
        if (n < 0) {
            rmu_conn_kill(c);
            return;
        }
        rmu_buf_consume(&c->out, (size_t)n);
        if (c->out.len > 0 && !c->ssl) {
            c->writable = false; /* short write: the socket is full, epoll reports space */
            break;
        }
    }
    if (c->out.len == 0 && c->state == RMU_CONN_FLUSH_CLOSE)
        start_drain(c);
    else if (c->out.len == 0 && c->state == RMU_CONN_FLUSH_ABORT)
        reset_now(c);
    else if (c->readable && !read_paused(c))
        rmu_conn_wake(c); /* producing may have unpaused reading */
}

void rmu_conn_process(struct rmu_conn *c)
{
    if (c->state == RMU_CONN_DEAD) return;
    if (!c->tls_checked) {
        if (!c->readable || check_tls(c) < 0) return;
        if (!c->tls_checked) return;
    }
    if (c->ssl && !c->tls_done) {
        int rc = rmu_tls_handshake(c);
        if (rc < 0) {
            rmu_conn_kill(c);
            return;
        }
        if (rc == 0) return;
    }
    conn_read(c);
    if (c->state != RMU_CONN_DEAD) conn_flush(c);
}
