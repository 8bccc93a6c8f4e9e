#include "proxy/server/server.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"
#include "filters/health_check.h"
#include "proxy/admin/admin.h"
#include "proxy/admin/stats.h"
#include "proxy/config/pbjson.h"
#include "proxy/http/access_log.h"
#include "proxy/config/snapshot.h"
#include "proxy/core/arena.h"
#include "proxy/core/buf.h"
#include "proxy/http/route.h"
#include "proxy/net/listener.h"
#include "proxy/server/worker.h"
#include "proxy/upstream/dns.h"
#include "proxy/upstream/dns_cluster.h"
#include "proxy/upstream/health_check.h"
#include "xds/xds_manager.h"

/* How long /ready may say INITIALIZING while DNS clusters wait for their first answer (Envoy:
 * cluster warming; its initial_fetch_timeout default is 15 s). */
#define RM_INIT_TIMEOUT_MS 15000
#define RM_TRIM_DELAY_MS 1000 /* after a membership update: the burst it belongs to is over */

struct rm_server {
    const struct rm_options *opt;
    struct rm_loop *loop;
    struct rm_snapshot *snap;
    struct rm_worker **workers;
    unsigned n_workers;
    struct rm_admin *admin;
    struct rm_io sig_io;
    struct rm_task quit_task;
    const char *state;
    struct rm_stats *stats;
    struct rm_timer uptime_timer;
    uint64_t start_s;
    struct rm_dns_clusters *dns; /* STRICT_DNS / LOGICAL_DNS clusters */
    struct rm_xds_manager *xds;  /* dynamic_resources.ads_config, or NULL */
    struct rm_timer init_timer;  /* bound on INITIALIZING */
    struct rm_timer warm_poll;   /* INITIALIZING: looks for the end of the first health checks */
    struct rm_timer trim_timer;  /* gives back the heap pages a burst of updates left free */
};

/* ---- command line ------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f, "usage: remora -c FILE [options]\n"
               "  -c, --config-path FILE     bootstrap (Envoy v3 Bootstrap as YAML or JSON)\n"
               "      --concurrency N        worker threads (default: number of CPUs)\n"
               "  -l, --log-level LEVEL      trace|debug|info|warning|error|critical|off (info)\n"
               "      --mode serve|validate  validate: check the config and exit (0 = valid)\n"
               "      --service-node ID      node.id (overrides the bootstrap)\n"
               "      --service-cluster NAME node.cluster (overrides the bootstrap)\n"
               "      --drain-time-s N       seconds to drain connections on shutdown and of\n"
               "                             listeners removed over LDS (5)\n"
               "      --help, --version\n");
}

int rm_options_parse(struct rm_options *o, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config-path", required_argument, NULL, 'c'},
        {"concurrency", required_argument, NULL, 'C'},
        {"log-level", required_argument, NULL, 'l'},
        {"mode", required_argument, NULL, 'm'},
        {"service-node", required_argument, NULL, 'n'},
        {"service-cluster", required_argument, NULL, 's'},
        {"drain-time-s", required_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'v'},
        {0, 0, 0, 0},
    };
    memset(o, 0, sizeof(*o));
    o->log_level = RM_LOG_INFO;
    o->drain_time_s = 5;
    int ch;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "c:l:", longopts, NULL)) != -1) {
        char *end;
        switch (ch) {
        case 'c':
            o->config_path = optarg;
            break;
        case 'C':
            o->concurrency = (unsigned)strtoul(optarg, &end, 10);
            if (*end || o->concurrency > 64) {
                fprintf(stderr, "remora: --concurrency: expected 1..64, got \"%s\"\n", optarg);
                return -1;
            }
            break;
        case 'l':
            if (rm_log_level_parse(optarg, &o->log_level) < 0) {
                fprintf(stderr, "remora: --log-level: unknown level \"%s\"\n", optarg);
                return -1;
            }
            break;
        case 'm':
            if (strcmp(optarg, "validate") == 0)
                o->validate_only = true;
            else if (strcmp(optarg, "serve") != 0) {
                fprintf(stderr, "remora: --mode: expected serve or validate, got \"%s\"\n", optarg);
                return -1;
            }
            break;
        case 'n':
            o->service_node = optarg;
            break;
        case 's':
            o->service_cluster = optarg;
            break;
        case 'd':
            o->drain_time_s = (unsigned)strtoul(optarg, &end, 10);
            if (*end) {
                fprintf(stderr, "remora: --drain-time-s: expected seconds, got \"%s\"\n", optarg);
                return -1;
            }
            break;
        case 'h':
            usage(stdout);
            return 1;
        case 'v':
            printf("remora version %s\n", RM_VERSION);
            return 1;
        default:
            fprintf(stderr, "remora: unknown or incomplete option \"%s\"\n", argv[optind - 1]);
            usage(stderr);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "remora: unexpected argument \"%s\"\n", argv[optind]);
        return -1;
    }
    if (!o->config_path) {
        fprintf(stderr, "remora: a bootstrap is required: -c FILE\n");
        usage(stderr);
        return -1;
    }
    snprintf(o->command_line, sizeof(o->command_line),
             "{\"config_path\":\"%s\",\"concurrency\":%u,\"mode\":\"%s\",\"drain_time\":\"%us\"}",
             o->config_path, o->concurrency, o->validate_only ? "Validate" : "Serve",
             o->drain_time_s);
    return 0;
}

/* ---- config ------------------------------------------------------------------------------- */

static struct rm_snapshot *load_config(const struct rm_options *o, struct rm_error *err)
{
    ProtobufCMessage *m;
    if (rm_pbjson_parse_file(o->config_path, &envoy__config__bootstrap__v3__bootstrap__descriptor,
                             &m, err))
        return NULL;
    struct rm_snapshot *s =
        rm_snapshot_from_bootstrap((Envoy__Config__Bootstrap__V3__Bootstrap *)m, err);
    if (!s) {
        rm_error_prefix(err, "%s: ", o->config_path);
        return NULL;
    }
    if (o->service_node) {
        free(s->node_id);
        s->node_id = strdup(o->service_node);
    }
    if (o->service_cluster) {
        free(s->node_cluster);
        s->node_cluster = strdup(o->service_cluster);
    }
    return s;
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

static void begin_shutdown(struct rm_server *sv)
{
    if (strcmp(sv->state, "DRAINING") == 0) return;
    sv->state = "DRAINING";
    rm_log_info("shutting down: draining connections (up to %us)", sv->opt->drain_time_s);
    for (unsigned i = 0; i < sv->n_workers; i++)
        rm_worker_drain(sv->workers[i], sv->opt->drain_time_s * 1000u + 1);
    rm_loop_stop(sv->loop);
}

static void on_signal(struct rm_io *io, uint32_t events)
{
    struct rm_server *sv = rm_container_of(io, struct rm_server, sig_io);
    struct signalfd_siginfo si;
    while (read(io->fd, &si, sizeof(si)) == sizeof(si)) {
        if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) begin_shutdown(sv);
        if (si.ssi_signo == SIGUSR1) rm_access_log_reopen_all();
    }
}

static void quit_task_run(struct rm_task *t)
{
    begin_shutdown(rm_container_of(t, struct rm_server, quit_task));
}

static struct rm_snapshot *hook_snapshot(void *ctx)
{
    struct rm_server *sv = ctx;
    return rm_snapshot_ref(sv->snap);
}

static const char *hook_state(void *ctx)
{
    return ((struct rm_server *)ctx)->state;
}

static void hook_quit(void *ctx)
{
    struct rm_server *sv = ctx;
    rm_loop_defer(sv->loop, &sv->quit_task, quit_task_run);
}

/* /healthcheck/fail and /ok: what envoy.filters.http.health_check answers */
static void hook_healthcheck(void *ctx, bool ok)
{
    rm_health_check_set_failing(!ok);
}

static const struct rm_admin_hooks admin_hooks = {
    .snapshot = hook_snapshot,
    .state = hook_state,
    .quit = hook_quit,
    .healthcheck = hook_healthcheck,
};

static void on_uptime(struct rm_timer *t)
{
    struct rm_server *sv = rm_container_of(t, struct rm_server, uptime_timer);
    rm_stat_set(sv->stats, RM_SS_UPTIME, (int64_t)((uint64_t)time(NULL) - sv->start_s));
    rm_timer_start(sv->loop, &sv->uptime_timer, 1000, on_uptime);
}

/* Worker <w>'s socket for <lc>: its own, or for a unix socket after the first (worker 0's
 * <first>) a dup of that one.  Returns the fd or -errno. */
static int listen_fd(const struct rm_server *sv, const struct rm_listener_cfg *lc, unsigned w,
                     int first)
{
    if (lc->addr.ss_family == AF_UNIX && w > 0) {
        int fd = fcntl(first, F_DUPFD_CLOEXEC, 0);
        return fd < 0 ? -errno : fd;
    }
    return rm_listen_socket_mode((const struct sockaddr *)&lc->addr, lc->addr_len,
                                 lc->reuse_port || sv->n_workers > 1, (int)lc->backlog,
                                 lc->pipe_mode);
}

/* Bind listener <lc> once per worker (SO_REUSEPORT) into fds[w * stride + i].  A unix socket
 * has no SO_REUSEPORT: it is bound once and every worker gets a dup of it (as Envoy duplicates
 * a pipe listener's socket for its workers), each watching it from its own loop; the workers
 * race for each connection, the losers' accept says EAGAIN. */
static int bind_one(struct rm_server *sv, const struct rm_listener_cfg *lc, int *fds, size_t stride,
                    size_t i, struct rm_error *err)
{
    for (unsigned w = 0; lc->bind_to_port && w < sv->n_workers; w++) {
        int fd = listen_fd(sv, lc, w, fds[i]);
        if (fd < 0)
            return rm_error_set(err, "%s%s%s: cannot listen on %s: %s",
                                lc->dynamic ? "Listener " : "listener ", lc->name,
                                lc->dynamic ? ".address" : "", lc->addr_str, strerror(-fd));
        fds[w * stride + i] = fd;
    }
    return RM_OK;
}

static void close_fds(int *fds, size_t n)
{
    for (size_t k = 0; fds && k < n; k++)
        if (fds[k] >= 0) close(fds[k]);
    free(fds);
}

/* Sockets for the listeners of <next> that <prev> (NULL: none) does not have, one per worker:
 * *fds_out[w * n + i], -1 where the worker keeps its socket. */
static int bind_listeners(struct rm_server *sv, const struct rm_snapshot *prev,
                          const struct rm_snapshot *next, int **fds_out, struct rm_error *err)
{
    size_t nl = next->n_listeners;
    int *fds = calloc(sv->n_workers * nl + 1, sizeof(int));
    if (!fds) return rm_error_set(err, "out of memory");
    for (size_t k = 0; k < sv->n_workers * nl; k++)
        fds[k] = -1;
    for (size_t i = 0; i < nl; i++) {
        bool kept = false;
        for (size_t j = 0; prev && j < prev->n_listeners && !kept; j++)
            kept = rm_listener_cfg_same_socket(prev->listeners[j], next->listeners[i]);
        if (kept) continue;
        if (bind_one(sv, next->listeners[i], fds, nl, i, err)) {
            if (!prev) rm_error_prefix(err, "static_resources.listeners[%zu]: ", i);
            close_fds(fds, sv->n_workers * nl);
            return RM_ERR;
        }
    }
    *fds_out = fds;
    return RM_OK;
}

static int setup_signals(struct rm_server *sv)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGUSR1);               /* reopen access log files (log rotation, as Envoy) */
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* inherited by the workers */
    signal(SIGPIPE, SIG_IGN);
    int fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0) return -errno;
    return rm_io_start(sv->loop, &sv->sig_io, fd, EPOLLIN, on_signal);
}

static int start(struct rm_server *sv, struct rm_error *err)
{
    int *fds = NULL;
    if (bind_listeners(sv, NULL, sv->snap, &fds, err)) return RM_ERR;
    sv->workers = calloc(sv->n_workers, sizeof(*sv->workers));
    size_t nl = sv->snap->n_listeners;
    for (unsigned i = 0; i < sv->n_workers; i++) {
        sv->workers[i] = rm_worker_new(i, sv->snap, fds + i * nl);
        if (sv->workers[i]) sv->workers[i]->listener_drain_ms = sv->opt->drain_time_s * 1000u;
        if (!sv->workers[i] || rm_worker_start(sv->workers[i])) {
            free(fds);
            return rm_error_set(err, "cannot start worker %u", i);
        }
    }
    free(fds);
    if (sv->snap->admin_addr_len) {
        struct rm_admin_info info = {
            .version = RM_VERSION,
            .command_line = sv->opt->command_line,
            .start_time_s = sv->start_s,
            .concurrency = sv->n_workers,
            .pipe_mode = sv->snap->admin_pipe_mode,
        };
        sv->admin = rm_admin_new(sv->loop, (struct sockaddr *)&sv->snap->admin_addr,
                                 sv->snap->admin_addr_len, &admin_hooks, sv, &info, err);
        if (!sv->admin) return rm_error_prefix(err, "admin.address: ");
    }
    return RM_OK;
}

/* Outlier detection's interval timers and the active health checkers run on the main loop
 * (Envoy: DetectorImpl's timer, the health checkers of the main thread's cluster manager). */
static void cluster_timers(struct rm_server *sv, struct rm_cluster *c, bool run)
{
    if (c->outlier && run)
        rm_outlier_start(c->outlier, sv->loop);
    else if (c->outlier)
        rm_outlier_stop(c->outlier);
    if (c->hc && run)
        rm_health_checker_start(c->hc, sv->loop);
    else if (c->hc)
        rm_health_checker_stop(c->hc);
}

static void outlier_timers(struct rm_server *sv, bool run)
{
    for (size_t i = 0; sv->snap && i < sv->snap->n_clusters; i++)
        cluster_timers(sv, sv->snap->clusters[i], run);
}

static bool in_snapshot(const struct rm_snapshot *s, const struct rm_cluster *c)
{
    return rm_snapshot_cluster(s, c->name) == c;
}

/* The listeners of <prev> whose socket <next> does not keep: they drain (Envoy's listener
 * drain), counted in listener_manager.total_listeners_draining.  NULL when there is none. */
static struct rm_listener_drain *removed_listeners(const struct rm_snapshot *prev,
                                                   const struct rm_snapshot *next)
{
    unsigned n = 0;
    for (size_t i = 0; i < prev->n_listeners; i++) {
        bool kept = false;
        for (size_t j = 0; j < next->n_listeners && !kept; j++)
            kept = rm_listener_cfg_same_socket(prev->listeners[i], next->listeners[j]);
        n += !kept;
    }
    return n ? rm_listener_drain_new(n) : NULL;
}

/* xDS: <next> becomes the active config: its new listeners are bound (a failure changes
 * nothing), each worker gets it (connections of removed listeners drain, and are closed after
 * --drain-time-s), outlier detection and health checking follow the clusters added and removed. */
static int publish_snapshot(void *ctx, struct rm_snapshot *next, struct rm_error *err)
{
    struct rm_server *sv = ctx;
    struct rm_snapshot *prev = sv->snap;
    int *fds = NULL;
    if (bind_listeners(sv, prev, next, &fds, err)) return RM_ERR;
    struct rm_listener_drain *ld = removed_listeners(prev, next);
    size_t nl = next->n_listeners;
    for (unsigned i = 0; i < sv->n_workers; i++) {
        int *wfds = malloc((nl + 1) * sizeof(int));
        if (wfds) memcpy(wfds, fds + i * nl, nl * sizeof(int));
        for (size_t k = 0; k < nl; k++)
            fds[i * nl + k] = -1; /* handed over (or closed below on failure) */
        if (!wfds || rm_worker_publish_snapshot(sv->workers[i], prev, next, wfds, ld))
            rm_log_error("worker %u: out of memory: it keeps serving the previous config", i);
    }
    rm_listener_drain_unref(ld); /* the workers hold theirs until their drain is over */
    close_fds(fds, sv->n_workers * nl);
    for (size_t i = 0; i < prev->n_clusters; i++) {
        if (!in_snapshot(next, prev->clusters[i])) cluster_timers(sv, prev->clusters[i], false);
    }
    for (size_t i = 0; i < next->n_clusters; i++) {
        if (!in_snapshot(prev, next->clusters[i])) cluster_timers(sv, next->clusters[i], true);
    }
    rm_log_info("config: %zu listener(s), %zu cluster(s), %zu route configuration(s)",
                next->n_listeners, next->n_clusters, next->n_routes);
    sv->snap = rm_snapshot_ref(next);
    rm_snapshot_unref(prev);
    return RM_OK;
}

/* ---- initialization (DNS, EDS and health-checked cluster warming)
 * --------------------------------------------------- */

/* Parsing a config or a big xDS response leaves many freed pages that glibc keeps (they are
 * not at the top of the heap, or the trim threshold grew after a large buffer was freed):
 * return them once the update is over (the timer fires after the current loop iteration at
 * the earliest), so RSS follows what the config keeps, not the size of the last update. */
static void on_trim(struct rm_timer *t)
{
    malloc_trim(0);
}

static void schedule_trim(struct rm_server *sv, uint64_t delay_ms)
{
    if (!rm_timer_armed(&sv->trim_timer))
        rm_timer_start(sv->loop, &sv->trim_timer, delay_ms, on_trim);
}

static void go_live(struct rm_server *sv)
{
    if (strcmp(sv->state, "INITIALIZING") != 0) return;
    rm_timer_stop(sv->loop, &sv->init_timer);
    rm_timer_stop(sv->loop, &sv->warm_poll);
    sv->state = "LIVE";
    rm_stat_set(sv->stats, RM_SS_LIVE, 1);
    schedule_trim(sv, 0); /* the first DNS answers and EDS responses were parsed */
}

/* Every health-checked cluster has a first result for each of its hosts (Envoy: a cluster with
 * a health checker initializes after its first round of checks). */
static bool health_checks_done(const struct rm_server *sv)
{
    for (size_t i = 0; i < sv->snap->n_clusters; i++) {
        const struct rm_health_checker *hc = sv->snap->clusters[i]->hc;
        if (hc && !rm_health_checker_initialized(hc)) return false;
    }
    return true;
}

/* Every warming cluster (DNS: first answer; EDS: first assignment; health checks: first
 * round) is ready. */
static bool clusters_warm(const struct rm_server *sv)
{
    return (!sv->dns || rm_dns_clusters_initialized(sv->dns)) &&
           (!sv->xds || rm_xds_manager_initialized(sv->xds)) && health_checks_done(sv);
}

/* DNS and xDS say when they are done; health checks are looked at every 20 ms. */
static void on_warm_poll(struct rm_timer *t)
{
    struct rm_server *sv = rm_container_of(t, struct rm_server, warm_poll);
    if (clusters_warm(sv))
        go_live(sv);
    else
        rm_timer_start(sv->loop, &sv->warm_poll, 20, on_warm_poll);
}

static void on_dns_init(void *ctx)
{
    if (clusters_warm(ctx)) go_live(ctx);
}

static void on_init_timeout(struct rm_timer *t)
{
    struct rm_server *sv = rm_container_of(t, struct rm_server, init_timer);
    char names[512], eds[512] = "";
    rm_dns_clusters_waiting(sv->dns, names, sizeof(names));
    if (sv->xds) rm_xds_manager_waiting(sv->xds, eds, sizeof(eds));
    const char *hc = health_checks_done(sv) ? "" : "first health checks";
    rm_log_warn("clusters still warming after %u ms: %s%s%s%s%s; live anyway", RM_INIT_TIMEOUT_MS,
                names, names[0] && eds[0] ? ", " : "", eds, (names[0] || eds[0]) && *hc ? ", " : "",
                hc);
    go_live(sv);
}

/* A DNS cluster's new membership goes to every worker. */
static void publish_hosts(void *ctx, struct rm_cluster *c, struct rm_host_set *hs)
{
    struct rm_server *sv = ctx;
    schedule_trim(sv, RM_TRIM_DELAY_MS);
    for (unsigned i = 0; i < sv->n_workers; i++) {
        if (rm_worker_publish_hosts(sv->workers[i], c, hs))
            rm_log_error("cluster %s: out of memory: worker %u keeps its old hosts", c->name, i);
    }
}

/* Start the DNS clusters (non-blocking: listeners serve meanwhile, DNS clusters answer 503 UH
 * until their first answer); INITIALIZING until each has answered or failed once (and every
 * health-checked host has had its first check), or RM_INIT_TIMEOUT_MS. */
static int start_dns(struct rm_server *sv, struct rm_error *err)
{
    struct rm_dns_config rc;
    rm_dns_config_init(&rc);
    const Envoy__Config__Bootstrap__V3__Bootstrap *bs = sv->snap->bootstrap;
    if (bs && bs->typed_dns_resolver_config &&
        rm_dns_config_from_typed(bs->typed_dns_resolver_config, "typed_dns_resolver_config", &rc,
                                 err))
        return RM_ERR;
    sv->dns = rm_dns_clusters_new(sv->loop, sv->snap->clusters, sv->snap->n_clusters, &rc,
                                  publish_hosts, on_dns_init, sv, err);
    if (!sv->dns) return RM_ERR;
    if (rm_snapshot_uses_xds(sv->snap)) {
        static const struct rm_xds_hooks hooks = {
            .publish = publish_snapshot,
            .publish_hosts = publish_hosts,
            .on_init = on_dns_init,
        };
        sv->xds = rm_xds_manager_new(sv->loop, sv->snap, &hooks, sv, err);
        if (!sv->xds) return RM_ERR;
    }
    sv->state = "INITIALIZING";
    if (clusters_warm(sv)) {
        go_live(sv);
    } else {
        rm_timer_start(sv->loop, &sv->init_timer, RM_INIT_TIMEOUT_MS, on_init_timeout);
        rm_timer_start(sv->loop, &sv->warm_poll, 20, on_warm_poll);
    }
    return RM_OK;
}

static void teardown(struct rm_server *sv)
{
    rm_timer_stop(sv->loop, &sv->init_timer);
    rm_timer_stop(sv->loop, &sv->warm_poll);
    rm_timer_stop(sv->loop, &sv->trim_timer);
    rm_xds_manager_free(sv->xds); /* no more publishing: the workers may go */
    sv->xds = NULL;
    rm_dns_clusters_free(sv->dns);
    sv->dns = NULL;
    outlier_timers(sv, false);
    for (unsigned i = 0; sv->workers && i < sv->n_workers; i++) {
        if (sv->workers[i] && strcmp(sv->state, "DRAINING") != 0)
            rm_worker_drain(sv->workers[i], 0);
        rm_worker_join_free(sv->workers[i]);
    }
    rm_access_log_shutdown(); /* writes what the workers' last streams logged */
    free(sv->workers);
    rm_admin_free(sv->admin);
    rm_timer_stop(sv->loop, &sv->uptime_timer);
    if (sv->sig_io.fd >= 0) {
        int fd = sv->sig_io.fd;
        rm_io_stop(sv->loop, &sv->sig_io);
        close(fd);
    }
    rm_loop_run_pending(sv->loop);
    rm_snapshot_unref(sv->snap);
    rm_loop_free(sv->loop);
    rm_stats_free_all();
    rm_buf_thread_cleanup();
    rm_arena_thread_cleanup();
    rm_route_thread_cleanup();
}

int rm_server_run(const struct rm_options *o)
{
    rm_log_level = o->log_level;
    struct rm_error err = {{0}};
    struct rm_server sv = {.opt = o, .state = "PRE_INITIALIZING", .start_s = (uint64_t)time(NULL)};
    sv.sig_io.fd = -1;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    sv.n_workers = o->concurrency ? o->concurrency : (unsigned)(ncpu > 0 ? ncpu : 1);
    if (sv.n_workers > RM_STATS_MAX_SHARDS - 1) sv.n_workers = RM_STATS_MAX_SHARDS - 1;
    rm_stats_set_shards(sv.n_workers + 1); /* main + workers: no row pointers for the others */
    sv.snap = load_config(o, &err);
    if (!sv.snap) {
        fprintf(stderr, "remora: error: %s\n", err.msg);
        rm_stats_free_all();
        return 1;
    }
    malloc_trim(0); /* the YAML tree and the parse are gone: RSS is what the config keeps */
    if (o->validate_only) {
        printf("configuration '%s' OK\n", o->config_path);
        rm_snapshot_unref(sv.snap);
        rm_stats_free_all();
        return 0;
    }
    sv.loop = rm_loop_new();
    sv.stats = rm_stats_get("server.", rm_server_stat_defs, RM_SS__COUNT);
    rm_stat_set(sv.stats, RM_SS_CONCURRENCY, sv.n_workers);
    int rc = 0;
    if (!sv.loop || setup_signals(&sv) < 0) {
        fprintf(stderr, "remora: error: cannot set up the main loop: %s\n", strerror(errno));
        rc = 1;
        goto out;
    }
    if (start(&sv, &err) || start_dns(&sv, &err)) {
        fprintf(stderr, "remora: error: %s\n", err.msg);
        rc = 1;
        goto out;
    }
    on_uptime(&sv.uptime_timer);
    outlier_timers(&sv, true);
    rm_log_info("remora %s started: %zu listener(s), %zu cluster(s), %u worker(s)%s%s", RM_VERSION,
                sv.snap->n_listeners, sv.snap->n_clusters, sv.n_workers,
                sv.snap->admin_addr_str ? ", admin on " : "",
                sv.snap->admin_addr_str ? sv.snap->admin_addr_str : "");
    rm_loop_run(sv.loop);
    rm_log_info("exiting");
out:
    teardown(&sv);
    return rc;
}
