#include "proxy/net/conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "proxy/core/error.h"

/* <linux/netfilter_ipv4.h> and <linux/netfilter_ipv6/ip6_tables.h> clash with the libc
 * headers; their values are part of the kernel ABI. */
#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif

#define READ_BUDGET 8 /* reads per readiness event before yielding to other connections */

/* ---- plain transport ---------------------------------------------------------------------- */

static ssize_t plain_read(struct rm_conn *c, void *buf, size_t len)
{
    ssize_t n = read(c->io.fd, buf, len);
    return n >= 0 ? n : -errno;
}

static ssize_t plain_writev(struct rm_conn *c, const struct iovec *iov, int n)
{
    ssize_t w = writev(c->io.fd, iov, n);
    return w >= 0 ? w : -errno;
}

static int plain_handshake(struct rm_conn *c)
{
    return 0;
}
static void plain_close(struct rm_conn *c) {}

const struct rm_transport_ops rm_transport_plain = {
    .name = "raw_buffer",
    .read = plain_read,
    .writev = plain_writev,
    .handshake = plain_handshake,
    .close = plain_close,
};

/* ---- lifetime ----------------------------------------------------------------------------- */

static void free_task_run(struct rm_task *t)
{
    struct rm_conn *c = rm_container_of(t, struct rm_conn, free_task);
    if (c->flush_task.queued || c->read_task.queued) {
        /* still linked in a loop queue (e.g. closed after a write in the same iteration):
         * free after it has run (it sees RM_CONN_CLOSED and does nothing) */
        rm_loop_defer(c->loop, &c->free_task, free_task_run);
        return;
    }
    rm_buf_reset(&c->in);
    rm_buf_reset(&c->out);
    free(c);
}

static void shut(struct rm_conn *c)
{
    c->flags |= RM_CONN_CLOSED;
    rm_timer_stop(c->loop, &c->connect_timer);
    c->tp->close(c); /* TLS: close_notify while the socket is open */
    int fd = c->io.fd;
    rm_io_stop(c->loop, &c->io);
    if (fd >= 0) close(fd);
    rm_loop_defer(c->loop, &c->free_task, free_task_run);
}

void rm_conn_close(struct rm_conn *c)
{
    if (c->flags & RM_CONN_CLOSED) return;
    c->flags |= RM_CONN_NO_CALLBACKS;
    shut(c);
}

/* Write what is queued now, without blocking; errors are left to the caller's close. */
static void write_now(struct rm_conn *c)
{
    while (c->out.len) {
        struct iovec iov = {rm_buf_data(&c->out), c->out.len};
        ssize_t n = c->tp->writev(c, &iov, 1);
        if (n == -EINTR) continue;
        if (n <= 0) return;
        rm_buf_consume(&c->out, (size_t)n);
    }
}

/* Error or EOF: close, then tell the owner once. */
static void close_with(struct rm_conn *c, int err)
{
    if (c->flags & RM_CONN_CLOSED) return;
    if (err == 0 && c->out.len && !(c->flags & (RM_CONN_CONNECTING | RM_CONN_HANDSHAKING)))
        write_now(c); /* EOF: a half-closed peer still reads what was queued (best effort) */
    shut(c);
    if (!(c->flags & RM_CONN_NO_CALLBACKS)) {
        c->flags |= RM_CONN_NO_CALLBACKS;
        if (c->flags & RM_CONN_CONNECTING) {
            c->flags &= ~(uint32_t)RM_CONN_CONNECTING;
            c->h->on_connected(c, err ? err : -ECONNRESET);
        } else {
            c->h->on_close(c, err);
        }
    }
}

static struct rm_conn *conn_new(struct rm_loop *loop, const struct rm_conn_handler *h, void *owner)
{
    struct rm_conn *c = calloc(1, sizeof(*c));
    if (!c) return NULL;
    c->loop = loop;
    c->tp = &rm_transport_plain;
    c->h = h;
    c->owner = owner;
    c->io.fd = -1;
    c->high_watermark = 1024 * 1024;
    return c;
}

/* ---- reading ------------------------------------------------------------------------------ */

static bool gone(const struct rm_conn *c)
{
    return c->flags & (RM_CONN_CLOSED | RM_CONN_READ_PAUSED | RM_CONN_SHUT_AFTER_FLUSH |
                       RM_CONN_HANDSHAKING | RM_CONN_READ_EOF);
}

/* The peer's EOF: half-close when the owner wants it, else close. */
static void peer_eof(struct rm_conn *c)
{
    if (!c->h->on_eof || (c->flags & RM_CONN_NO_CALLBACKS)) {
        close_with(c, 0);
        return;
    }
    c->flags |= RM_CONN_READ_EOF;
    c->h->on_eof(c);
}

/* Offer the buffered input to the owner. */
static void deliver(struct rm_conn *c)
{
    if (!c->in.len || gone(c)) return;
    size_t used = c->h->on_data(c, rm_buf_data(&c->in), c->in.len);
    if (c->flags & RM_CONN_CLOSED) return;
    rm_buf_consume(&c->in, used);
}

static void read_task_run(struct rm_task *t);
static void want_write(struct rm_conn *c, bool on);
static void on_connect_timeout(struct rm_timer *t);

static void do_read(struct rm_conn *c)
{
    for (int i = 0; i < READ_BUDGET; i++) {
        if (gone(c)) return;
        size_t want = rm_buf_room(&c->in) >= 2048 ? rm_buf_room(&c->in) : 0;
        uint8_t *p = rm_buf_reserve(&c->in, want ? want : 4096);
        size_t room = rm_buf_room(&c->in);
        ssize_t n = c->tp->read(c, p, room);
        if (n > 0) {
            bool empty = (size_t)n < room && !(c->flags & RM_CONN_PEER_SHUT);
            if (empty) c->flags |= RM_CONN_READ_DRAINED;
            rm_buf_commit(&c->in, (size_t)n);
            deliver(c);
            if (empty)
                goto drained; /* edge-triggered: a short read means empty, unless FIN came too */
            continue;
        }
        if (c->in.len == 0) rm_buf_reset(&c->in);
        if (n == -EAGAIN) {
            if (c->flags & RM_CONN_TP_WANT_WRITE)
                want_write(c, true);
            else
                c->flags |= RM_CONN_READ_DRAINED;
            return;
        }
        if (n == -EINTR) continue;
        if (n == 0)
            peer_eof(c);
        else
            close_with(c, (int)n);
        return;
    }
    rm_loop_defer(c->loop, &c->read_task, read_task_run); /* budget spent: let others run */
    return;
drained:
    if (c->in.len == 0) rm_buf_reset(&c->in);
}

static void read_task_run(struct rm_task *t)
{
    struct rm_conn *c = rm_container_of(t, struct rm_conn, read_task);
    deliver(c);
    /* edge-triggered: only read again if the kernel may have more (no EPOLLIN since the socket
     * was seen empty means nothing arrived) — saves a read() returning EAGAIN per resume */
    if (!(c->flags & RM_CONN_READ_DRAINED)) do_read(c);
}

void rm_conn_set_handler(struct rm_conn *c, const struct rm_conn_handler *h, void *owner)
{
    c->h = h;
    c->owner = owner;
    if (!(c->flags & (RM_CONN_CLOSED | RM_CONN_CONNECTING)))
        rm_loop_defer(c->loop, &c->read_task, read_task_run);
}

void rm_conn_pause_reading(struct rm_conn *c, bool paused)
{
    if (c->flags & RM_CONN_CLOSED) return;
    if (paused) {
        c->flags |= RM_CONN_READ_PAUSED;
        return;
    }
    if (!(c->flags & RM_CONN_READ_PAUSED)) return;
    c->flags &= ~(uint32_t)RM_CONN_READ_PAUSED;
    rm_loop_defer(c->loop, &c->read_task, read_task_run);
}

/* ---- writing ------------------------------------------------------------------------------ */

#define RM_CONN_EVENTS (EPOLLIN | EPOLLRDHUP)

/* EPOLLOUT is watched only while output waits for socket space: with it always on, every ACK
 * that frees send buffer space would wake the epoll machinery (edge-triggered or not). */
static void want_write(struct rm_conn *c, bool on)
{
    if (on == !!(c->flags & RM_CONN_WANT_WRITE)) return;
    if (on)
        c->flags |= RM_CONN_WANT_WRITE;
    else
        c->flags &= ~(uint32_t)RM_CONN_WANT_WRITE;
    if (c->io.fd >= 0) rm_io_modify(c->loop, &c->io, RM_CONN_EVENTS | (on ? EPOLLOUT : 0));
}

/* A conn closing after its flush whose peer stops reading is closed RM_CONN_FLUSH_IDLE_MS after
 * its last progress (nginx's send_timeout, between two writes): a finished connection must not
 * keep its buffer forever.  Restarted each time a write fills the socket. */
#define RM_CONN_FLUSH_IDLE_MS 10000

static void on_flush_deadline(struct rm_timer *t)
{
    rm_conn_close(rm_container_of(t, struct rm_conn, connect_timer));
}

static void flush_deadline(struct rm_conn *c)
{
    rm_timer_start(c->loop, &c->connect_timer, RM_CONN_FLUSH_IDLE_MS, on_flush_deadline);
}

static void do_write(struct rm_conn *c)
{
    while (c->out.len) {
        struct iovec iov = {rm_buf_data(&c->out), c->out.len};
        ssize_t n = c->tp->writev(c, &iov, 1);
        if (n > 0) {
            rm_buf_consume(&c->out, (size_t)n);
            continue;
        }
        if (n == -EINTR) continue;
        if (n == -EAGAIN) {
            want_write(c, true);
            if (c->flags & RM_CONN_SHUT_AFTER_FLUSH) flush_deadline(c);
            return;
        }
        close_with(c, (int)n);
        return;
    }
    want_write(c, c->flags & RM_CONN_TP_WANT_WRITE);
    if (c->flags & RM_CONN_SHUT_WR_PENDING) {
        c->flags = (c->flags & ~(uint32_t)RM_CONN_SHUT_WR_PENDING) | RM_CONN_WR_SHUT;
        shutdown(c->io.fd, SHUT_WR);
    }
    if (c->flags & RM_CONN_SHUT_AFTER_FLUSH) {
        shutdown(c->io.fd, SHUT_WR);
        rm_conn_close(c);
    }
}

static void after_write(struct rm_conn *c)
{
    if ((c->flags & RM_CONN_OVER_HIGH) && c->out.len <= c->high_watermark / 2 &&
        !(c->flags & RM_CONN_CLOSED)) {
        c->flags &= ~(uint32_t)RM_CONN_OVER_HIGH;
        if (!(c->flags & RM_CONN_NO_CALLBACKS) && c->h->on_drained) c->h->on_drained(c);
    }
}

static void flush_task_run(struct rm_task *t)
{
    struct rm_conn *c = rm_container_of(t, struct rm_conn, flush_task);
    /* output waits for the connect and the handshake (which flush when they end) */
    if (c->flags & (RM_CONN_CLOSED | RM_CONN_CONNECTING | RM_CONN_HANDSHAKING)) return;
    if (c->h->on_flush && !(c->flags & RM_CONN_NO_CALLBACKS)) c->h->on_flush(c);
    if (c->flags & RM_CONN_CLOSED) return;
    if (!(c->flags & RM_CONN_WANT_WRITE)) do_write(c);
    after_write(c);
}

void rm_conn_schedule_flush(struct rm_conn *c)
{
    if (!(c->flags & RM_CONN_CLOSED)) rm_loop_defer_flush(c->loop, &c->flush_task, flush_task_run);
}

void rm_conn_write(struct rm_conn *c, const void *p, size_t n)
{
    if (c->flags & RM_CONN_CLOSED) return;
    rm_buf_append(&c->out, p, n);
    if (c->out.len > c->high_watermark) c->flags |= RM_CONN_OVER_HIGH;
    rm_conn_schedule_flush(c);
}

void rm_conn_shutdown_write(struct rm_conn *c)
{
    if (c->flags & (RM_CONN_CLOSED | RM_CONN_WR_SHUT)) return;
    c->flags |= RM_CONN_SHUT_WR_PENDING;
    rm_conn_schedule_flush(c);
}

void rm_conn_close_after_flush(struct rm_conn *c)
{
    if (c->flags & RM_CONN_CLOSED) return;
    c->flags |= RM_CONN_SHUT_AFTER_FLUSH | RM_CONN_NO_CALLBACKS;
    /* bounded from now, restarted on progress (a peer that already stopped reading gives no
     * EPOLLOUT: nothing else would ever end it) */
    if (c->out.len && !(c->flags & (RM_CONN_CONNECTING | RM_CONN_HANDSHAKING))) flush_deadline(c);
    rm_conn_schedule_flush(c);
}

/* ---- events ------------------------------------------------------------------------------- */

/* Client: connected (and through the handshake): tell the owner, then send what it queued and
 * read what came (a TLS handshake may leave application data behind it). */
static void connected(struct rm_conn *c)
{
    c->flags &= ~(uint32_t)RM_CONN_CONNECTING;
    rm_timer_stop(c->loop, &c->connect_timer);
    c->h->on_connected(c, 0);
    if (c->flags & RM_CONN_CLOSED) return;
    if (c->tp != &rm_transport_plain) {
        rm_conn_schedule_flush(c);
        rm_loop_defer(c->loop, &c->read_task, read_task_run);
    } else if (c->out.len || (c->flags & RM_CONN_SHUT_WR_PENDING)) {
        rm_conn_schedule_flush(c);
    }
}

/* Drive the transport's handshake one step (after accept or connect, on every event). */
static void do_handshake(struct rm_conn *c)
{
    c->flags &= ~(uint32_t)RM_CONN_TP_WANT_WRITE;
    int rc = c->tp->handshake(c);
    if (rc == RM_AGAIN) {
        want_write(c, c->flags & RM_CONN_TP_WANT_WRITE);
        return;
    }
    if (rc < 0) {
        close_with(c, rc);
        return;
    }
    c->flags &= ~(uint32_t)(RM_CONN_HANDSHAKING | RM_CONN_TP_WANT_WRITE | RM_CONN_READ_DRAINED);
    want_write(c, false);
    if (c->flags & RM_CONN_CONNECTING) {
        connected(c);
        return;
    }
    rm_timer_stop(c->loop, &c->connect_timer);
    /* the handshake consumed the readiness edge: read what followed it now */
    do_read(c);
    if (!(c->flags & RM_CONN_CLOSED)) rm_conn_schedule_flush(c);
}

static void finish_connect(struct rm_conn *c)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(c->io.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
    if (err) {
        close_with(c, -err);
        return;
    }
    rm_io_modify(c->loop, &c->io, RM_CONN_EVENTS); /* EPOLLOUT only served the connect */
    if (c->tp != &rm_transport_plain) {
        c->flags |= RM_CONN_HANDSHAKING; /* the connect timer goes on running */
        do_handshake(c);
        return;
    }
    connected(c);
}

void rm_conn_transport_started(struct rm_conn *c, uint32_t timeout_ms)
{
    if (c->flags & (RM_CONN_CONNECTING | RM_CONN_CLOSED)) return; /* finish_connect starts it */
    c->flags |= RM_CONN_HANDSHAKING;
    if (timeout_ms) rm_timer_start(c->loop, &c->connect_timer, timeout_ms, on_connect_timeout);
}

/* The peer sent FIN while reading is paused (an HTTP/1.1 request in flight): has it gone, with
 * nothing left to read (1; -1: the socket has an error; 0: bytes wait, or not known)?  A 1-byte
 * MSG_PEEK says so without consuming anything (nginx's check of a broken connection).  Plain TCP
 * only (under TLS the socket holds the close_notify record), and only with no input buffered, so
 * nothing read yet is lost by reporting the close now: the owner sees the EOF it would see once it
 * resumed reading (Envoy and nginx end the stream then too). */
static int peer_closed(const struct rm_conn *c)
{
    char b;
    if (c->tp != &rm_transport_plain || c->in.len) return 0;
    ssize_t n = recv(c->io.fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0) return 1;
    return n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR ? -1 : 0;
}

static void on_io(struct rm_io *io, uint32_t events)
{
    struct rm_conn *c = rm_container_of(io, struct rm_conn, io);
    if (c->flags & RM_CONN_HANDSHAKING) {
        do_handshake(c);
        return;
    }
    if (c->flags & RM_CONN_CONNECTING) {
        if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) finish_connect(c);
        return;
    }
    if ((events & EPOLLOUT) && (c->flags & RM_CONN_WANT_WRITE)) {
        do_write(c);
        after_write(c);
    }
    if (c->flags & RM_CONN_CLOSED) return;
    if ((events & EPOLLOUT) && (c->flags & RM_CONN_TP_WANT_WRITE)) {
        c->flags &= ~(uint32_t)RM_CONN_TP_WANT_WRITE; /* a read that waited for socket space */
        events |= EPOLLIN;
    }
    if (c->flags & RM_CONN_READ_EOF) { /* half-closed: a HUP is our own SHUT_WR's echo */
        if (events & EPOLLERR) close_with(c, -ECONNRESET);
        return;
    }
    if (events & (EPOLLHUP | EPOLLRDHUP)) c->flags |= RM_CONN_PEER_SHUT;
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)) {
        c->flags &= ~(uint32_t)RM_CONN_READ_DRAINED;
        if (c->flags & RM_CONN_READ_PAUSED) {
            /* EPOLLHUP alone is no reset: both directions are shut (the peer's FIN and ours),
             * and what the peer sent before its FIN is still unread */
            int closed = events & EPOLLERR                  ? -1
                         : events & (EPOLLRDHUP | EPOLLHUP) ? peer_closed(c)
                                                            : 0;
            if (closed < 0)
                close_with(c, -ECONNRESET);
            else if (closed > 0)
                peer_eof(c);
            return;
        }
        do_read(c);
    }
}

/* TCP only: a unix socket has no Nagle to turn off. */
static void set_sock_opts(int fd, sa_family_t family)
{
    int one = 1;
    if (family == AF_INET || family == AF_INET6)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

struct rm_conn *rm_conn_accepted(struct rm_loop *loop, int fd, const struct sockaddr *peer,
                                 socklen_t peer_len, const struct rm_conn_handler *h, void *owner)
{
    struct rm_conn *c = conn_new(loop, h, owner);
    if (!c) {
        close(fd);
        return NULL;
    }
    set_sock_opts(fd, peer->sa_family);
    if (peer_len > sizeof(c->peer)) peer_len = sizeof(c->peer);
    memcpy(&c->peer, peer, peer_len);
    c->peer_len = peer_len;
    if (peer->sa_family == AF_UNIX) { /* the kernel leaves the peer unnamed: name it by our own
                                         socket, as Envoy's peerAddress does */
        socklen_t len = sizeof(c->peer);
        if (getsockname(fd, (struct sockaddr *)&c->peer, &len) == 0) c->peer_len = len;
    }
    if (rm_io_start(loop, &c->io, fd, RM_CONN_EVENTS, on_io) < 0) {
        close(fd);
        free(c);
        return NULL;
    }
    return c;
}

static void on_connect_timeout(struct rm_timer *t)
{
    struct rm_conn *c = rm_container_of(t, struct rm_conn, connect_timer);
    close_with(c, c->err ? c->err : -ETIMEDOUT);
}

struct rm_conn *rm_conn_connect(struct rm_loop *loop, const struct sockaddr *addr, socklen_t len,
                                uint32_t timeout_ms, const struct rm_conn_handler *h, void *owner,
                                int *err)
{
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *err = -errno;
        return NULL;
    }
    set_sock_opts(fd, addr->sa_family);
    struct rm_conn *c = conn_new(loop, h, owner);
    if (!c) {
        close(fd);
        *err = -ENOMEM;
        return NULL;
    }
    memcpy(&c->peer, addr, len);
    c->peer_len = len;
    c->flags |= RM_CONN_CONNECTING;
    if (connect(fd, addr, len) < 0 && errno != EINPROGRESS) {
        /* report asynchronously, as promised: a 0 ms timer carries the error */
        c->err = -errno;
        close(fd);
        rm_timer_start(loop, &c->connect_timer, 0, on_connect_timeout);
        return c;
    }
    if (rm_io_start(loop, &c->io, fd, EPOLLIN | EPOLLOUT | EPOLLRDHUP, on_io) < 0) {
        *err = -errno;
        close(fd);
        free(c);
        return NULL;
    }
    if (timeout_ms) rm_timer_start(loop, &c->connect_timer, timeout_ms, on_connect_timeout);
    return c;
}

void rm_conn_unwatch(struct rm_conn *c)
{
    int fd = c->io.fd;
    rm_io_stop(c->loop, &c->io);
    c->io.fd = fd; /* still ours: rm_conn_watch or rm_conn_close */
}

int rm_conn_watch(struct rm_conn *c)
{
    return rm_io_start(c->loop, &c->io, c->io.fd, RM_CONN_EVENTS, on_io);
}

bool rm_conn_restore_original_dst(struct rm_conn *c)
{
    struct sockaddr_in6 a = {0};
    socklen_t len = sizeof(a);
    int rc = c->peer.ss_family == AF_INET6
                 ? getsockopt(c->io.fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &a, &len)
                 : getsockopt(c->io.fd, SOL_IP, SO_ORIGINAL_DST, &a, &len);
    if (rc != 0 || len > sizeof(a) || (a.sin6_family != AF_INET && a.sin6_family != AF_INET6))
        return false;
    c->local = a;
    c->flags |= RM_CONN_LOCAL_RESTORED;
    return true;
}

const struct sockaddr *rm_conn_local_addr(struct rm_conn *c)
{
    if (c->local.sin6_family == AF_UNSPEC) {
        socklen_t len = sizeof(c->local);
        if (c->io.fd < 0 || getsockname(c->io.fd, (struct sockaddr *)&c->local, &len) != 0 ||
            len > sizeof(c->local) ||
            (c->local.sin6_family != AF_INET && c->local.sin6_family != AF_INET6)) {
            c->local.sin6_family = AF_UNSPEC;
            return NULL;
        }
    }
    return (const struct sockaddr *)&c->local;
}

const char *rm_conn_peer_str(const struct rm_conn *c, char *buf, size_t len)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (c->peer.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)&c->peer;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
        port = ntohs(a->sin_port);
        snprintf(buf, len, "%s:%u", ip, port);
    } else if (c->peer.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)&c->peer;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
        port = ntohs(a->sin6_port);
        snprintf(buf, len, "[%s]:%u", ip, port);
    } else if (c->peer.ss_family == AF_UNIX) { /* a pipe: its path, or @name (abstract) */
        const struct sockaddr_un *a = (const void *)&c->peer;
        bool abstract = a->sun_path[0] == 0;
        int n = (int)strnlen(a->sun_path + abstract, sizeof(a->sun_path) - abstract);
        snprintf(buf, len, "%s%.*s", abstract ? "@" : "", n, a->sun_path + abstract);
    } else {
        snprintf(buf, len, "unknown");
    }
    return buf;
}
