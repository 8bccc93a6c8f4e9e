#include "proxy/net/listener.h"

#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "proxy/core/log.h"

int rm_listen_socket(const struct sockaddr *addr, socklen_t len, bool reuse_port, int backlog)
{
    return rm_listen_socket_mode(addr, len, reuse_port, backlog, 0);
}

/* A unix socket (Envoy's SocketImpl::bind for a pipe): a file left at the path (a previous
 * run's socket) is unlinked first, errors ignored (bind then says what is wrong); <mode>, when
 * not 0, is applied to the new socket file. */
static int bind_pipe(int fd, const struct sockaddr *addr, socklen_t len, uint32_t mode)
{
    const struct sockaddr_un *un = (const struct sockaddr_un *)addr;
    bool abstract = un->sun_path[0] == 0;
    if (!abstract) unlink(un->sun_path);
    if (bind(fd, addr, len) < 0) return -errno;
    if (mode && !abstract && chmod(un->sun_path, (mode_t)mode) < 0) return -errno;
    return 0;
}

int rm_listen_socket_mode(const struct sockaddr *addr, socklen_t len, bool reuse_port, int backlog,
                          uint32_t mode)
{
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int one = 1, rc = 0;
    if (addr->sa_family == AF_UNIX) {
        rc = bind_pipe(fd, addr, len, mode);
    } else {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (reuse_port) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
        if (addr->sa_family == AF_INET6)
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
        if (bind(fd, addr, len) < 0) rc = -errno;
    }
    if (rc == 0 && listen(fd, backlog > 0 ? backlog : 1024) < 0) rc = -errno;
    if (rc < 0) {
        close(fd);
        return rc;
    }
    return fd;
}

static void on_accept_ready(struct rm_io *io, uint32_t events)
{
    struct rm_listener *l = rm_container_of(io, struct rm_listener, io);
    for (int i = 0; i < 64 && !l->paused && l->io.fd >= 0; i++) {
        struct sockaddr_storage peer;
        socklen_t plen = sizeof(peer);
        int fd = accept4(l->io.fd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            if (errno == EINTR || errno == ECONNABORTED) continue;
            rm_log_warn("accept: %s", strerror(errno));
            return;
        }
        l->on_accept(l, fd, (struct sockaddr *)&peer, plen);
    }
    /* more may be waiting: with edge-triggered epoll, poke ourselves by re-arming */
    if (l->io.fd >= 0) rm_io_modify(l->loop, &l->io, 0), rm_io_modify(l->loop, &l->io, EPOLLIN);
}

int rm_listener_start(struct rm_listener *l, struct rm_loop *loop, int fd, rm_accept_cb cb,
                      void *user)
{
    l->loop = loop;
    l->on_accept = cb;
    l->user = user;
    l->paused = false;
    int rc = rm_io_start(loop, &l->io, fd, EPOLLIN, on_accept_ready);
    if (rc < 0) close(fd);
    return rc;
}

void rm_listener_stop(struct rm_listener *l)
{
    int fd = l->io.fd;
    if (fd < 0) return;
    rm_io_stop(l->loop, &l->io);
    close(fd);
}
