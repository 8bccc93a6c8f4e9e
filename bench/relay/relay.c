/* remora-relay: the byte-relay floor for bench/compare.sh.
 *
 *   remora-relay --listen 127.0.0.1:P --upstream 127.0.0.1:Q
 *
 * One thread, one epoll loop (level-triggered).  Each accepted client connection gets its own
 * TCP connection to the upstream; bytes are copied read -> write both ways with no parsing, so
 * the relay's CPU time per request is the syscall and TCP cost a proxy cannot avoid.  Per
 * direction one 16 KiB buffer: while it holds unsent bytes the source is not read (EPOLLIN off)
 * and the destination waits for EPOLLOUT.  EOF is passed on as shutdown(SHUT_WR) once the
 * buffer is flushed; the pair is closed when both directions have ended, or on any error.
 * SIGTERM/SIGINT exit 0.  Nothing is printed except errors (stderr).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define RMR_BUF 16384

struct rmr_pair;

struct rmr_end {
    int fd;
    int idx; /* 0: client side, 1: upstream side */
    uint32_t events;
    struct rmr_pair *pair;
};

struct rmr_dir { /* bytes read from end[i], waiting to be written to end[1 - i] */
    size_t off, len;
    bool eof;
    char buf[RMR_BUF];
};

struct rmr_pair {
    struct rmr_end end[2];
    struct rmr_dir dir[2];
    bool dead;
    struct rmr_pair *next_dead;
};

static int rmr_ep;
static int rmr_lfd;
static volatile sig_atomic_t rmr_stop;
static struct rmr_pair *rmr_dead; /* closed this batch; freed after it */

static void rmr_on_signal(int sig)
{
    rmr_stop = sig;
}

static int rmr_parse_addr(const char *s, struct sockaddr_in *sa)
{
    const char *colon = strrchr(s, ':');
    char host[64];
    if (!colon || (size_t)(colon - s) >= sizeof host) return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    if (*end || port <= 0 || port > 65535 || inet_pton(AF_INET, host, &sa->sin_addr) != 1)
        return -1;
    return 0;
}

/* Both ends of a pair can be in one epoll batch: a closed pair is freed after the batch. */
static void rmr_close(struct rmr_pair *p)
{
    for (int i = 0; i < 2; i++)
        close(p->end[i].fd); /* also removes it from the epoll set */
    p->dead = true;
    p->next_dead = rmr_dead;
    rmr_dead = p;
}

/* Interest of one end: readable while its outgoing buffer is empty, writable while the
 * buffer towards it holds bytes. */
static int rmr_update(struct rmr_pair *p, int i)
{
    struct rmr_end *e = &p->end[i];
    uint32_t want = 0;
    if (p->dir[i].len == 0 && !p->dir[i].eof) want |= EPOLLIN;
    if (p->dir[1 - i].len > 0) want |= EPOLLOUT;
    if (want == e->events) return 0;
    struct epoll_event ev = {.events = want, .data.ptr = e};
    e->events = want;
    return epoll_ctl(rmr_ep, EPOLL_CTL_MOD, e->fd, &ev);
}

/* Write dir[i]'s bytes to end[1 - i]: 0 done or EAGAIN, -1 error. */
static int rmr_flush(struct rmr_pair *p, int i)
{
    struct rmr_dir *d = &p->dir[i];
    int dst = p->end[1 - i].fd;
    while (d->len > 0) {
        ssize_t w = send(dst, d->buf + d->off, d->len, MSG_NOSIGNAL);
        if (w < 0) return errno == EAGAIN || errno == EINTR ? 0 : -1;
        d->off += (size_t)w;
        d->len -= (size_t)w;
    }
    d->off = 0;
    if (d->eof) shutdown(dst, SHUT_WR);
    return 0;
}

static void rmr_on_event(struct rmr_end *e, uint32_t events)
{
    struct rmr_pair *p = e->pair;
    int i = e->idx;
    if (p->dead) return;
    if (events & EPOLLERR) goto fail;
    if ((events & EPOLLOUT) && rmr_flush(p, 1 - i) < 0) goto fail;
    if ((events & (EPOLLIN | EPOLLHUP)) && p->dir[i].len == 0 && !p->dir[i].eof) {
        ssize_t n = read(e->fd, p->dir[i].buf, RMR_BUF);
        if (n == 0)
            p->dir[i].eof = true;
        else if (n < 0 && errno != EAGAIN && errno != EINTR)
            goto fail;
        if (n >= 0) {
            p->dir[i].len = (size_t)n;
            if (rmr_flush(p, i) < 0) goto fail;
        }
    }
    if (p->dir[0].eof && p->dir[1].eof && p->dir[0].len == 0 && p->dir[1].len == 0)
        goto fail; /* both directions ended and flushed */
    if (rmr_update(p, 0) < 0 || rmr_update(p, 1) < 0) goto fail;
    return;
fail:
    rmr_close(p);
}

static void rmr_accept(const struct sockaddr_in *up)
{
    for (;;) {
        int cfd = accept4(rmr_lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                perror("remora-relay: accept");
            return;
        }
        int ufd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        struct rmr_pair *p = calloc(1, sizeof *p);
        if (ufd < 0 || !p ||
            (connect(ufd, (const struct sockaddr *)up, sizeof *up) < 0 && errno != EINPROGRESS)) {
            perror("remora-relay: upstream");
            close(cfd);
            if (ufd >= 0) close(ufd);
            free(p);
            continue;
        }
        int one = 1;
        setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(ufd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        int fds[2] = {cfd, ufd};
        for (int i = 0; i < 2; i++) {
            p->end[i] = (struct rmr_end){.fd = fds[i], .idx = i, .events = EPOLLIN, .pair = p};
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &p->end[i]};
            epoll_ctl(rmr_ep, EPOLL_CTL_ADD, fds[i], &ev);
        }
    }
}

int main(int argc, char **argv)
{
    struct sockaddr_in la, ua;
    const char *listen_s = NULL, *up_s = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--listen"))
            listen_s = argv[i + 1];
        else if (!strcmp(argv[i], "--upstream"))
            up_s = argv[i + 1];
    }
    if (argc != 5 || !listen_s || !up_s || rmr_parse_addr(listen_s, &la) < 0 ||
        rmr_parse_addr(up_s, &ua) < 0) {
        fprintf(stderr, "usage: remora-relay --listen IPV4:PORT --upstream IPV4:PORT\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = rmr_on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    int one = 1;
    rmr_lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    rmr_ep = epoll_create1(EPOLL_CLOEXEC);
    if (rmr_lfd < 0 || rmr_ep < 0 ||
        setsockopt(rmr_lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(rmr_lfd, (struct sockaddr *)&la, sizeof la) < 0 || listen(rmr_lfd, 4096) < 0) {
        fprintf(stderr, "remora-relay: listen %s: %s\n", listen_s, strerror(errno));
        return 1;
    }
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(rmr_ep, EPOLL_CTL_ADD, rmr_lfd, &lev);

    struct epoll_event evs[256];
    while (!rmr_stop) {
        int n = epoll_wait(rmr_ep, evs, 256, -1);
        if (n < 0 && errno != EINTR) {
            perror("remora-relay: epoll_wait");
            return 1;
        }
        for (int k = 0; k < n; k++) {
            if (!evs[k].data.ptr)
                rmr_accept(&ua);
            else
                rmr_on_event(evs[k].data.ptr, evs[k].events);
        }
        while (rmr_dead) {
            struct rmr_pair *p = rmr_dead;
            rmr_dead = p->next_dead;
            free(p);
        }
    }
    return 0;
}
