/* remora-upstream: command line, listeners, threads, signals.
 *
 * The main thread only waits for signals: SIGTERM/SIGINT stop the loops (listeners closed,
 * everything freed) and exit 0; SIGUSR1 prints request counters on stderr. */
#include "bench/upstream/behaviour.h"
#include "bench/upstream/common.h"
#include "bench/upstream/conn.h"
#include "bench/upstream/loop.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

struct rmu_config rmu_cfg;

enum { MAX_THREADS = 256, LISTEN_BACKLOG = 4096, DEFAULT_H2_STREAMS = 1024 };

static const char USAGE[] =
    "usage: remora-upstream [options]\n"
    "A test upstream for remora: HTTP/1.1, h2c (prior knowledge) and TLS (ALPN h2,\n"
    "http/1.1) on every listener; responses shaped by request headers.\n"
    "\n"
    "options:\n"
    "  --listen HOST:PORT        listen there (repeatable; [::1]:PORT for IPv6;\n"
    "                            unix:PATH for a unix socket (a file there is replaced),\n"
    "                            unix:@NAME for an abstract one; default 127.0.0.1:8080)\n"
    "  --name NAME               sent in every response as x-upstream-name (default: upstream)\n"
    "  -t, --threads N           event-loop threads, SO_REUSEPORT (default 1)\n"
    "  --body-size N             default response body size in bytes (default 0)\n"
    "  --h2-max-concurrent-streams N   HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS (default 1024)\n"
    "  --tls-cert FILE --tls-key FILE  also accept TLS on the listeners (PEM)\n"
    "  --quiet                   no start-up/shutdown lines on stderr (errors still printed)\n"
    "  --help                    this text\n"
    "\n"
    "request headers (all optional; unknown x-upstream-* headers get a 400):\n"
    "  x-upstream-status: N            response status, 200..999 (default 200)\n"
    "  x-upstream-body-size: N         N pattern bytes, generated as sent (default --body-size)\n"
    "  x-upstream-delay-ms: N          wait N ms (timer) before responding\n"
    "  x-upstream-echo: 1              body = request body, streamed back as it arrives\n"
    "  x-upstream-echo-headers: 1      request headers reflected as x-echo-<name>, plus\n"
    "                                  x-echo-method, -path, -authority, -scheme\n"
    "  x-upstream-echo-request: 1      JSON body describing the request (also any path\n"
    "                                  starting with /echo-request): method, path, authority,\n"
    "                                  scheme, protocol, upstream, headers, body_len\n"
    "  x-upstream-reset: before-headers | after-headers | after-body-bytes=N\n"
    "                                  h2: RST_STREAM(INTERNAL_ERROR); h1: TCP reset\n"
    "  x-upstream-close: 1             h1: connection: close; h2: GOAWAY after the response\n"
    "  x-upstream-fail-first: N        the first N requests with the same x-upstream-key\n"
    "  x-upstream-key: K               (default key: empty) get x-upstream-fail-status\n"
    "  x-upstream-fail-status: N       (default 503), or grpc-status\n"
    "  x-upstream-fail-grpc-status: N  N instead; counters are per process\n"
    "  x-upstream-grpc-status: N       gRPC response: application/grpc, request messages\n"
    "  x-upstream-grpc-message: TEXT   echoed, trailers grpc-status N [grpc-message TEXT]\n"
    "  content-type: application/grpc* gRPC echo service, grpc-status 0\n"
    "  x-upstream-response-headers: k=v,k=v   extra response headers\n"
    "  x-upstream-trailers: k=v,k=v           response trailers (h1: chunked trailers)\n"
    "\n"
    "signals: TERM/INT exit 0; USR1 prints counters on stderr.\n";

/* unix:PATH, unix:@NAME (abstract: the address ends with the name). */
static int parse_unix(const char *arg, struct rmu_listen_addr *out)
{
    const char *path = arg + 5;
    struct sockaddr_un *un = (struct sockaddr_un *)&out->ss;
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof(un->sun_path) || n >= sizeof(out->text) - 5) {
        fprintf(stderr, "remora-upstream: --listen %s: want unix:PATH (1 to %zu bytes)\n", arg,
                sizeof(un->sun_path) - 1);
        return -1;
    }
    memset(&out->ss, 0, sizeof(out->ss));
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, path, n);
    if (path[0] == '@') un->sun_path[0] = 0;
    out->len = path[0] == '@' ? (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)
                              : (socklen_t)sizeof(*un);
    snprintf(out->text, sizeof(out->text), "%s", arg);
    return 0;
}

static int parse_listen(const char *arg, struct rmu_listen_addr *out)
{
    if (strncmp(arg, "unix:", 5) == 0) return parse_unix(arg, out);
    char host[64], port[16];
    const char *colon;
    size_t hn;
    if (arg[0] == '[') {
        const char *end = strchr(arg, ']');
        if (!end || end[1] != ':') goto fail;
        hn = (size_t)(end - arg - 1);
        memcpy(host, arg + 1, RMU_MIN(hn, sizeof(host) - 1));
        colon = end + 1;
    } else {
        colon = strrchr(arg, ':');
        if (!colon) goto fail;
        hn = (size_t)(colon - arg);
        memcpy(host, arg, RMU_MIN(hn, sizeof(host) - 1));
    }
    if (hn >= sizeof(host) || strlen(colon + 1) == 0 || strlen(colon + 1) >= sizeof(port))
        goto fail;
    host[hn] = 0;
    strcpy(port, colon + 1);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    int rc = getaddrinfo(hn ? host : NULL, port, &hints, &ai);
    if (rc != 0) {
        fprintf(stderr, "remora-upstream: --listen %s: %s\n", arg, gai_strerror(rc));
        return -1;
    }
    memcpy(&out->ss, ai->ai_addr, ai->ai_addrlen);
    out->len = ai->ai_addrlen;
    snprintf(out->text, sizeof(out->text), "%s", arg);
    freeaddrinfo(ai);
    return 0;
fail:
    fprintf(stderr, "remora-upstream: --listen %s: want HOST:PORT or [IPV6]:PORT\n", arg);
    return -1;
}

/* A listening socket for <a>; a unix socket file left at its path is replaced. */
static int open_listener(const struct rmu_listen_addr *a, bool reuseport)
{
    int one = 1;
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) goto fail;
    if (a->ss.ss_family == AF_UNIX) {
        const struct sockaddr_un *un = (const struct sockaddr_un *)&a->ss;
        if (un->sun_path[0]) unlink(un->sun_path);
        if (bind(fd, (const struct sockaddr *)&a->ss, a->len) < 0 || listen(fd, LISTEN_BACKLOG) < 0)
            goto fail_fd;
        return fd;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) goto fail_fd;
    if (a->ss.ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&a->ss, a->len) < 0 || listen(fd, LISTEN_BACKLOG) < 0)
        goto fail_fd;
    return fd;

fail_fd:
    close(fd);
fail:
    fprintf(stderr, "remora-upstream: cannot listen on %s: %s\n", a->text, strerror(errno));
    return -1;
}

static int parse_num(const char *opt, const char *v, uint64_t lo, uint64_t hi, uint64_t *out)
{
    if (rmu_parse_u64(v, strlen(v), hi, out) == 0 && *out >= lo) return 0;
    fprintf(stderr, "remora-upstream: %s %s: want an integer %llu..%llu\n", opt, v,
            (unsigned long long)lo, (unsigned long long)hi);
    return -1;
}

/* Fill rmu_cfg from argv; 0, 1 (--help printed) or -1. */
static int parse_args(int argc, char **argv)
{
    enum { O_LISTEN = 256, O_NAME, O_BODY, O_STREAMS, O_CERT, O_KEY, O_QUIET, O_HELP };
    static const struct option opts[] = {
        {"listen", required_argument, NULL, O_LISTEN},
        {"name", required_argument, NULL, O_NAME},
        {"threads", required_argument, NULL, 't'},
        {"body-size", required_argument, NULL, O_BODY},
        {"h2-max-concurrent-streams", required_argument, NULL, O_STREAMS},
        {"tls-cert", required_argument, NULL, O_CERT},
        {"tls-key", required_argument, NULL, O_KEY},
        {"quiet", no_argument, NULL, O_QUIET},
        {"help", no_argument, NULL, O_HELP},
        {0},
    };
    rmu_cfg =
        (struct rmu_config){.name = "upstream", .threads = 1, .h2_max_streams = DEFAULT_H2_STREAMS};
    uint64_t v;
    int o;
    while ((o = getopt_long(argc, argv, "t:h", opts, NULL)) != -1) {
        switch (o) {
        case O_LISTEN: {
            struct rmu_listen_addr *a = realloc(rmu_cfg.listen, (rmu_cfg.nlisten + 1) * sizeof(*a));
            if (!a) return -1;
            rmu_cfg.listen = a;
            if (parse_listen(optarg, &a[rmu_cfg.nlisten]) < 0) return -1;
            rmu_cfg.nlisten++;
            break;
        }
        case O_NAME:
            rmu_cfg.name = optarg;
            break;
        case 't':
            if (parse_num("--threads", optarg, 1, MAX_THREADS, &v) < 0) return -1;
            rmu_cfg.threads = (int)v;
            break;
        case O_BODY:
            if (parse_num("--body-size", optarg, 0, 1ULL << 40, &rmu_cfg.body_size) < 0) return -1;
            break;
        case O_STREAMS:
            if (parse_num("--h2-max-concurrent-streams", optarg, 1, INT32_MAX, &v) < 0) return -1;
            rmu_cfg.h2_max_streams = (uint32_t)v;
            break;
        case O_CERT:
            rmu_cfg.tls_cert = optarg;
            break;
        case O_KEY:
            rmu_cfg.tls_key = optarg;
            break;
        case O_QUIET:
            rmu_cfg.quiet = true;
            break;
        case 'h':
        case O_HELP:
            fputs(USAGE, stdout);
            return 1;
        default:
            fputs(USAGE, stderr);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "remora-upstream: unexpected argument %s (see --help)\n", argv[optind]);
        return -1;
    }
    rmu_cfg.name_len = strlen(rmu_cfg.name);
    if (rmu_cfg.nlisten == 0) {
        rmu_cfg.listen = calloc(1, sizeof(*rmu_cfg.listen));
        if (!rmu_cfg.listen || parse_listen("127.0.0.1:8080", rmu_cfg.listen) < 0) return -1;
        rmu_cfg.nlisten = 1;
    }
    return 0;
}

static void print_stats(struct rmu_loop **loops, int n)
{
    unsigned long long c = 0, t = 0, h1 = 0, h2 = 0;
    for (int i = 0; i < n; i++) {
        c += atomic_load(&loops[i]->stats.conns);
        t += atomic_load(&loops[i]->stats.tls_conns);
        h1 += atomic_load(&loops[i]->stats.h1_reqs);
        h2 += atomic_load(&loops[i]->stats.h2_reqs);
    }
    fprintf(stderr,
            "remora-upstream %s: connections=%llu tls=%llu http1_requests=%llu "
            "http2_requests=%llu\n",
            rmu_cfg.name, c, t, h1, h2);
}

/* Thread <t>'s socket for listener <i>: its own (SO_REUSEPORT), or for a unix socket (bound
 * once) a dup of the first thread's <first>. */
static int thread_listener(int t, size_t i, int first)
{
    if (t == 0 || rmu_cfg.listen[i].ss.ss_family != AF_UNIX)
        return open_listener(&rmu_cfg.listen[i], rmu_cfg.threads > 1);
    int fd = fcntl(first, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) fprintf(stderr, "remora-upstream: dup: %s\n", strerror(errno));
    return fd;
}

/* One loop per thread, each with its own copy of every listener. */
static struct rmu_loop **make_loops(void)
{
    int n = rmu_cfg.threads;
    struct rmu_loop **loops = calloc((size_t)n, sizeof(*loops));
    int *fds = calloc(rmu_cfg.nlisten, sizeof(int));
    int *first = calloc(rmu_cfg.nlisten, sizeof(int));
    if (!loops || !fds || !first) goto fail;
    for (int t = 0; t < n; t++) {
        for (size_t i = 0; i < rmu_cfg.nlisten; i++) {
            fds[i] = thread_listener(t, i, first[i]);
            if (t == 0) first[i] = fds[i];
            if (fds[i] < 0) {
                while (i > 0)
                    close(fds[--i]);
                goto fail;
            }
        }
        loops[t] = rmu_loop_new(t, fds, rmu_cfg.nlisten);
        if (!loops[t]) goto fail;
    }
    free(fds);
    free(first);
    return loops;

fail:
    for (int t = 0; loops && t < n; t++)
        rmu_loop_free(loops[t]);
    free(loops);
    free(fds);
    free(first);
    return NULL;
}

static int serve(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* loop threads inherit the mask */
    struct rmu_loop **loops = make_loops();
    if (!loops) return 1;
    int started = 0, rc = 0;
    for (; started < rmu_cfg.threads; started++)
        if (rmu_loop_start(loops[started]) < 0) {
            rc = 1;
            break;
        }
    if (rc == 0 && !rmu_cfg.quiet) {
        fprintf(stderr, "remora-upstream %s: listening on", rmu_cfg.name);
        for (size_t i = 0; i < rmu_cfg.nlisten; i++)
            fprintf(stderr, " %s", rmu_cfg.listen[i].text);
        fprintf(stderr, " (%d thread%s%s)\n", rmu_cfg.threads, rmu_cfg.threads > 1 ? "s" : "",
                rmu_tls_enabled() ? ", TLS" : "");
    }
    while (rc == 0) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0) break;
        if (sig == SIGUSR1)
            print_stats(loops, rmu_cfg.threads);
        else
            break;
    }
    for (int t = 0; t < started; t++)
        rmu_loop_stop_join(loops[t]);
    if (rc == 0 && !rmu_cfg.quiet) print_stats(loops, rmu_cfg.threads);
    for (int t = 0; t < rmu_cfg.threads; t++)
        rmu_loop_free(loops[t]);
    free(loops);
    return rc;
}

int main(int argc, char **argv)
{
    int rc = parse_args(argc, argv);
    if (rc != 0) {
        free(rmu_cfg.listen);
        return rc > 0 ? 0 : 2;
    }
    signal(SIGPIPE, SIG_IGN);
    rmu_behaviour_init();
    rc = 1;
    if (rmu_h2_global_init() < 0) goto out_h2;
    if (rmu_tls_global_init() < 0) goto out_tls;
    rc = serve();
    rmu_tls_global_cleanup();
out_tls:
    rmu_h2_global_cleanup();
out_h2:
    rmu_behaviour_cleanup();
    free(rmu_cfg.listen);
    return rc;
}
