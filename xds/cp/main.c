/* remora-xds: the reference xDS control plane.
 *
 *   remora-xds --dir DIR [--listen 127.0.0.1:18000] [-l LEVEL] [--version-prefix STR]
 *              [--identifier NAME]
 *
 * Serves the resources of DIR (xds/ads_files.h) over ADS, SotW and Delta (xds/ads_server.h).
 * When a file of DIR changes (inotify: written, moved in or out, created, deleted; events are
 * gathered for 50 ms) or on SIGHUP, it reads the directory again: if every file is valid and
 * something differs, the store takes the new set (new version) and the streams get what they
 * are due; a file with an error is logged (FILE:LINE: PATH: problem) and the previous set is
 * kept.  SIGTERM / SIGINT: streams end with UNAVAILABLE, exit 0.  A directory that is invalid
 * at start-up is an error (exit 1).  Logs go to stderr. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/un.h>
#include <unistd.h>

#include "proxy/config/strbuf.h"
#include "proxy/core/arena.h"
#include "proxy/core/buf.h"
#include "proxy/core/log.h"
#include "proxy/core/loop.h"
#include "proxy/server/server.h" /* RM_VERSION */
#include "xds/ads_files.h"
#include "xds/ads_server.h"
#include "xds/grpc_server.h"

#define RELOAD_DELAY_MS 50
#define DRAIN_MS 1000 /* at exit: time for the final statuses to reach the clients */
#define DIFF_LOG_MAX 50

struct rmx_opts {
    const char *listen;
    const char *dir;
    const char *prefix;
    const char *identifier;
};

struct rmx_cp {
    struct rmx_opts o;
    struct rm_loop *loop;
    struct rm_ads_store store;
    struct rm_grpc_server *gs;
    struct rm_ads_server *as;
    struct rm_io sig_io;
    struct rm_io ino_io;
    struct rm_timer reload_timer;
    struct rm_timer drain_timer;
    uint64_t drain_until;
};

/* ---- command line ------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f, "usage: remora-xds --dir DIR [--listen HOST:PORT] [-l LEVEL] "
               "[--version-prefix STR] [--identifier NAME]\n"
               "  --dir DIR             resource files (*.yaml, *.yml, *.json) to serve\n"
               "  --listen HOST:PORT    gRPC listen address (default 127.0.0.1:18000; port 0: "
               "any;\n"
               "                        unix:PATH or unix:@NAME: a unix socket)\n"
               "  -l, --log-level LVL   trace, debug, info (default), warning, error, off\n"
               "  --version-prefix STR  version_info is STR followed by a counter\n"
               "  --identifier NAME     control_plane.identifier (default remora-xds)\n");
}

/* Returns 0 to run, 1 to exit 0 (--help), -1 to exit 1. */
static int parse_args(int argc, char **argv, struct rmx_opts *o)
{
    static const struct option longs[] = {
        {"listen", required_argument, NULL, 'L'},
        {"dir", required_argument, NULL, 'd'},
        {"log-level", required_argument, NULL, 'l'},
        {"version-prefix", required_argument, NULL, 'p'},
        {"identifier", required_argument, NULL, 'i'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    o->listen = "127.0.0.1:18000";
    int c;
    while ((c = getopt_long(argc, argv, "l:h", longs, NULL)) != -1) {
        switch (c) {
        case 'L':
            o->listen = optarg;
            break;
        case 'd':
            o->dir = optarg;
            break;
        case 'p':
            o->prefix = optarg;
            break;
        case 'i':
            o->identifier = optarg;
            break;
        case 'l':
            if (rm_log_level_parse(optarg, &rm_log_level) != 0) {
                fprintf(stderr, "remora-xds: error: unknown log level \"%s\"\n", optarg);
                return -1;
            }
            break;
        case 'h':
            usage(stdout);
            return 1;
        case 'V':
            printf("remora-xds %s\n", RM_VERSION);
            return 1;
        default:
            usage(stderr);
            return -1;
        }
    }
    if (!o->dir || optind != argc) {
        usage(stderr);
        return -1;
    }
    return 0;
}

/* "unix:PATH" or "unix:@NAME" (abstract): a unix socket. */
static int parse_unix(const char *path, struct sockaddr_storage *ss, socklen_t *len)
{
    struct sockaddr_un *un = (struct sockaddr_un *)ss;
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof(un->sun_path)) return -1;
    memset(ss, 0, sizeof(*ss));
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, path, n);
    if (path[0] == '@') un->sun_path[0] = 0;
    *len = path[0] == '@' ? (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)
                          : (socklen_t)sizeof(*un);
    return 0;
}

/* "1.2.3.4:80", "[::1]:80" or "unix:PATH". */
static int parse_addr(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
    if (strncmp(s, "unix:", 5) == 0) return parse_unix(s + 5, ss, len);
    char host[128];
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || (size_t)(colon - s) >= sizeof(host)) return -1;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || end == colon + 1 || port < 0 || port > 65535) return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    size_t hl = strlen(host);
    if (host[0] == '[' && host[hl - 1] == ']') {
        host[hl - 1] = '\0';
        if (inet_pton(AF_INET6, host + 1, &a6->sin6_addr) != 1) return -1;
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*a6);
        return 0;
    }
    if (inet_pton(AF_INET, host, &a4->sin_addr) != 1) return -1;
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    *len = sizeof(*a4);
    return 0;
}

/* ---- loading ------------------------------------------------------------------------------ */

static const char *kind_mark(enum rm_ads_change_kind k)
{
    return k == RM_ADS_ADDED ? "+" : k == RM_ADS_MODIFIED ? "~" : "-";
}

/* "Cluster +a ~b; Listener -c" */
static void diff_str(const struct rm_ads_diff *d, struct rm_strbuf *out)
{
    const char *type = NULL;
    for (size_t i = 0; i < d->n && i < DIFF_LOG_MAX; i++) {
        const struct rm_ads_change *c = &d->v[i];
        if (!type || strcmp(type, c->type_url) != 0) {
            rm_strbuf_printf(out, "%s%s", type ? "; " : "", rm_ads_type_short(c->type_url));
            type = c->type_url;
        }
        rm_strbuf_printf(out, " %s%s", kind_mark(c->kind), c->name);
    }
    if (d->n > DIFF_LOG_MAX) rm_strbuf_printf(out, "; ... (+%zu)", d->n - DIFF_LOG_MAX);
}

/* Read the directory into the store.  <why> names the trigger for the log. */
static int reload(struct rmx_cp *cp, const char *why)
{
    struct rm_ads_set next;
    struct rm_error err;
    size_t nfiles;
    char vb[96];
    if (rm_ads_load_dir(cp->o.dir, &next, &nfiles, &err) != RM_OK) {
        rm_log_error("reload (%s) failed, keeping version %s: %s", why,
                     rm_ads_store_version_str(&cp->store, cp->store.version, vb, sizeof(vb)),
                     err.msg);
        return RM_ERR;
    }
    size_t nres = next.n;
    struct rm_ads_diff diff = {0};
    size_t changes = rm_ads_store_replace(&cp->store, &next, &diff);
    rm_ads_store_version_str(&cp->store, cp->store.version, vb, sizeof(vb));
    if (!changes) {
        rm_log_info("reload (%s): no change (version %s, %zu resources)", why, vb, nres);
    } else {
        struct rm_strbuf sb = RM_STRBUF_INIT;
        diff_str(&diff, &sb);
        rm_log_info("reload (%s): version %s, %zu resources from %zu files: %s", why, vb, nres,
                    nfiles, rm_strbuf_str(&sb));
        rm_strbuf_dispose(&sb);
        if (cp->as) rm_ads_server_notify(cp->as);
    }
    rm_ads_diff_dispose(&diff);
    return RM_OK;
}

static void reload_fired(struct rm_timer *t)
{
    struct rmx_cp *cp = rm_container_of(t, struct rmx_cp, reload_timer);
    reload(cp, "files changed");
}

/* ---- events ------------------------------------------------------------------------------- */

static void on_inotify(struct rm_io *io, uint32_t events)
{
    struct rmx_cp *cp = rm_container_of(io, struct rmx_cp, ino_io);
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    bool any = false;
    ssize_t n;
    while ((n = read(io->fd, buf, sizeof(buf))) > 0) {
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *e = (const struct inotify_event *)(void *)p;
            if (e->mask & (IN_DELETE_SELF | IN_MOVE_SELF))
                rm_log_warn("%s was removed or moved: no more change notifications (SIGHUP "
                            "still reloads)",
                            cp->o.dir);
            rm_log_debug("inotify: 0x%x %s", (unsigned)e->mask, e->len ? e->name : "");
            any = true;
            p += sizeof(*e) + e->len;
        }
    }
    if (any) rm_timer_start(cp->loop, &cp->reload_timer, RELOAD_DELAY_MS, reload_fired);
}

static void on_signal(struct rm_io *io, uint32_t events)
{
    struct rmx_cp *cp = rm_container_of(io, struct rmx_cp, sig_io);
    struct signalfd_siginfo si;
    while (read(io->fd, &si, sizeof(si)) == sizeof(si)) {
        if (si.ssi_signo == SIGHUP) {
            reload(cp, "SIGHUP");
        } else {
            rm_log_info("signal %u: shutting down", si.ssi_signo);
            rm_loop_stop(cp->loop);
        }
    }
}

static int watch_signals(struct rmx_cp *cp)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigprocmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    int fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0) return -errno;
    return rm_io_start(cp->loop, &cp->sig_io, fd, EPOLLIN, on_signal);
}

static int watch_dir(struct rmx_cp *cp)
{
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0) return -errno;
    uint32_t mask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_CREATE |
                    IN_DELETE_SELF | IN_MOVE_SELF;
    if (inotify_add_watch(fd, cp->o.dir, mask) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    return rm_io_start(cp->loop, &cp->ino_io, fd, EPOLLIN, on_inotify);
}

static void unwatch(struct rmx_cp *cp, struct rm_io *io)
{
    int fd = io->fd;
    if (fd < 0) return;
    rm_io_stop(cp->loop, io);
    close(fd);
}

/* ---- main --------------------------------------------------------------------------------- */

static int start(struct rmx_cp *cp, struct rm_error *err)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (parse_addr(cp->o.listen, &ss, &len) != 0)
        return rm_error_set(err, "--listen %s: expected IP:PORT, [IPv6]:PORT or unix:PATH",
                            cp->o.listen);
    if (reload(cp, "start") != RM_OK)
        return rm_error_set(err, "%s: cannot serve an invalid directory (see above)", cp->o.dir);
    int rc = watch_signals(cp);
    if (rc < 0) return rm_error_set(err, "signalfd: %s", strerror(-rc));
    if ((rc = watch_dir(cp)) < 0)
        return rm_error_set(err, "%s: cannot watch: %s", cp->o.dir, strerror(-rc));
    struct rm_ads_server_opts ao = {.identifier = cp->o.identifier};
    cp->gs = rm_grpc_server_new(cp->loop, NULL);
    if (!cp->gs) return rm_error_set(err, "out of memory");
    cp->as = rm_ads_server_new(cp->gs, &cp->store, &ao, err);
    if (!cp->as) return RM_ERR;
    if (rm_grpc_server_listen(cp->gs, (struct sockaddr *)&ss, len, err) != RM_OK) return RM_ERR;
    char vb[96];
    char where[160];
    if (ss.ss_family == AF_UNIX)
        snprintf(where, sizeof(where), "%s", cp->o.listen);
    else
        snprintf(where, sizeof(where), "%.*s:%d", (int)(strrchr(cp->o.listen, ':') - cp->o.listen),
                 cp->o.listen, rm_grpc_server_port(cp->gs));
    rm_log_info("remora-xds %s: serving %zu resources from %s (version %s) on %s", RM_VERSION,
                cp->store.cur.n, cp->o.dir,
                rm_ads_store_version_str(&cp->store, cp->store.version, vb, sizeof(vb)), where);
    return RM_OK;
}

static void drain_check(struct rm_timer *t)
{
    struct rmx_cp *cp = rm_container_of(t, struct rmx_cp, drain_timer);
    if (rm_grpc_server_stats(cp->gs)->connections_open == 0 ||
        rm_loop_now(cp->loop) >= cp->drain_until) {
        rm_loop_stop(cp->loop);
        return;
    }
    rm_timer_start(cp->loop, &cp->drain_timer, 10, drain_check);
}

/* End the streams with UNAVAILABLE and let the statuses and GOAWAYs go out (bounded). */
static void drain(struct rmx_cp *cp)
{
    rm_ads_server_close_streams(cp->as, RM_GRPC_UNAVAILABLE, "control plane shutting down");
    rm_grpc_server_shutdown(cp->gs);
    cp->drain_until = rm_loop_update_time(cp->loop) + DRAIN_MS;
    rm_timer_start(cp->loop, &cp->drain_timer, 0, drain_check);
    rm_loop_run(cp->loop);
    rm_timer_stop(cp->loop, &cp->drain_timer);
}

static void stop(struct rmx_cp *cp)
{
    rm_timer_stop(cp->loop, &cp->reload_timer);
    unwatch(cp, &cp->ino_io);
    unwatch(cp, &cp->sig_io);
    if (cp->as && cp->gs) drain(cp);
    rm_grpc_server_free(cp->gs);
    rm_ads_server_free(cp->as);
    rm_loop_run_pending(cp->loop);
    rm_loop_free(cp->loop);
    rm_ads_store_dispose(&cp->store);
    rm_buf_thread_cleanup();
    rm_arena_thread_cleanup();
}

int main(int argc, char **argv)
{
    struct rmx_cp cp;
    memset(&cp, 0, sizeof(cp));
    cp.sig_io.fd = cp.ino_io.fd = -1;
    int pr = parse_args(argc, argv, &cp.o);
    if (pr) return pr > 0 ? 0 : 1;
    rm_ads_store_init(&cp.store, cp.o.prefix);
    cp.loop = rm_loop_new();
    if (!cp.loop) {
        fprintf(stderr, "remora-xds: error: cannot create the event loop: %s\n", strerror(errno));
        return 1;
    }
    struct rm_error err;
    int rc = start(&cp, &err);
    if (rc != RM_OK)
        fprintf(stderr, "remora-xds: error: %s\n", err.msg);
    else
        rm_loop_run(cp.loop);
    stop(&cp);
    return rc == RM_OK ? 0 : 1;
}
