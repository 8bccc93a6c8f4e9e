/* Listening sockets: bind + listen + accept loop on an rm_loop. */
#ifndef RM_NET_LISTENER_H
#define RM_NET_LISTENER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "proxy/core/loop.h"

struct rm_listener;

/** Called for each accepted connection (non-blocking, CLOEXEC fd; the callee owns it). */
typedef void (*rm_accept_cb)(struct rm_listener *l, int fd, const struct sockaddr *peer,
                             socklen_t peer_len);

struct rm_listener {
    struct rm_io io;
    struct rm_loop *loop;
    rm_accept_cb on_accept;
    void *user;
    bool paused;
};

/** Create a listening socket.  Returns the fd or -errno. */
int rm_listen_socket(const struct sockaddr *addr, socklen_t len, bool reuse_port, int backlog);
/** The same, and for a unix socket (AF_UNIX; <reuse_port> does not apply): a socket file
 *  already at the path is replaced (Envoy unlinks it before bind) and <mode> (0: as bind made
 *  it) is applied to the new one.  The file stays when the socket is closed (as Envoy: nothing
 *  unlinks it).  Returns the fd or -errno. */
int rm_listen_socket_mode(const struct sockaddr *addr, socklen_t len, bool reuse_port, int backlog,
                          uint32_t mode);
/** Start accepting on <fd> (takes ownership of the fd).  Returns 0 or -errno. */
int rm_listener_start(struct rm_listener *l, struct rm_loop *loop, int fd, rm_accept_cb cb,
                      void *user);
/** Stop accepting and close the socket. */
void rm_listener_stop(struct rm_listener *l);

#endif
