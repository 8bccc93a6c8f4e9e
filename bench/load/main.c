/* remora-load: HTTP/1.1 and HTTP/2 load generator (see --help and bench/load/README.md).
 *
 * main: parse the command line, check that the target answers (one clear line and exit 2
 * otherwise), start the worker threads, print a progress line each second, then merge the
 * workers' statistics into the final report.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/load/config.h"
#include "bench/load/report.h"
#include "bench/load/tls.h"
#include "bench/load/worker.h"

static struct rml_shared *g_shared;

static void on_signal(int sig)
{
    (void)sig;
    if (g_shared) atomic_store(&g_shared->stop, 1);
}

/* Connect once (and handshake TLS) so that a wrong target fails before the run. */
static int probe(const struct rml_config *cfg, SSL_CTX *ssl_ctx, char *err, size_t errlen)
{
    int fd = socket(cfg->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    int rv = connect(fd, (const struct sockaddr *)&cfg->addr, cfg->addrlen);
    if (rv < 0 && errno == EINPROGRESS) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int ms = (int)(cfg->connect_timeout_ns / RML_NS_PER_MS);
        rv = poll(&p, 1, ms > 0 ? ms : 1);
        if (rv == 0) {
            snprintf(err, errlen, "connect timed out after %d ms", ms);
            close(fd);
            return -1;
        }
        int soerr = 0;
        socklen_t len = sizeof(soerr);
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
        errno = soerr;
        rv = soerr ? -1 : 0;
    }
    if (rv < 0) {
        snprintf(err, errlen, "%s", strerror(errno));
        close(fd);
        return -1;
    }
    if (ssl_ctx) {
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
        struct timeval tv = {.tv_sec = (time_t)(cfg->connect_timeout_ns / RML_NS_PER_S),
                             .tv_usec =
                                 (suseconds_t)(cfg->connect_timeout_ns % RML_NS_PER_S / 1000)};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        rv = rml_tls_probe(ssl_ctx, cfg, fd, err, errlen);
    }
    close(fd);
    return rv;
}

static void sleep_until(uint64_t t)
{
    struct timespec ts = {.tv_sec = (time_t)(t / RML_NS_PER_S),
                          .tv_nsec = (long)(t % RML_NS_PER_S)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static int all_finished(struct rml_worker **ws, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (!atomic_load(&ws[i]->finished)) return 0;
    return 1;
}

/* Main's job during the run: a progress line each second until every worker is done. */
static void watch(const struct rml_config *cfg, struct rml_worker **ws, uint64_t t0)
{
    uint64_t next = t0 + RML_NS_PER_S, prev_done = 0, prev_t = t0;
    while (!all_finished(ws, cfg->threads)) {
        uint64_t now = rml_now_ns();
        uint64_t step = now + 50 * RML_NS_PER_MS;
        sleep_until(step < next ? step : next);
        now = rml_now_ns();
        if (now < next) continue;
        next += RML_NS_PER_S;
        if (!cfg->progress) continue;
        uint64_t done = 0, errors = 0, inflight = 0;
        for (unsigned i = 0; i < cfg->threads; i++) {
            done += atomic_load_explicit(&ws[i]->live_done, memory_order_relaxed);
            errors += atomic_load_explicit(&ws[i]->live_errors, memory_order_relaxed);
            inflight += atomic_load_explicit(&ws[i]->live_inflight, memory_order_relaxed);
        }
        rml_report_progress(stderr, (double)(now - t0) / 1e9, done, done - prev_done, errors,
                            inflight, (double)(now - prev_t) / 1e9);
        prev_done = done;
        prev_t = now;
    }
}

int main(int argc, char **argv)
{
    struct rml_config cfg;
    int rv = rml_config_parse(&cfg, argc, argv);
    if (rv) {
        rml_config_dispose(&cfg);
        return rv > 0 ? 0 : 2;
    }
    signal(SIGPIPE, SIG_IGN);
    int status = 2;
    char err[256];
    SSL_CTX *ssl_ctx = NULL;
    struct rml_worker **ws = NULL;
    struct rml_stats *total = NULL;
    struct rml_shared shared = {0};
    unsigned started = 0;

    if (cfg.tls && !(ssl_ctx = rml_tls_ctx_new(&cfg, err, sizeof(err)))) {
        fprintf(stderr, "remora-load: %s\n", err);
        goto out;
    }
    if (probe(&cfg, ssl_ctx, err, sizeof(err)) < 0) {
        fprintf(stderr, "remora-load: cannot connect to %s (%s): %s\n", cfg.url, cfg.addr_str, err);
        goto out;
    }
    ws = calloc(cfg.threads, sizeof(*ws));
    total = rml_stats_new();
    if (!ws || !total) {
        fprintf(stderr, "remora-load: out of memory\n");
        goto out;
    }
    pthread_mutex_init(&shared.mu, NULL);
    pthread_cond_init(&shared.cv, NULL);
    for (unsigned i = 0; i < cfg.threads; i++) {
        unsigned nc = cfg.conns / cfg.threads + (i < cfg.conns % cfg.threads);
        uint64_t quota = UINT64_MAX;
        if (cfg.n) quota = cfg.n / cfg.threads + (i < cfg.n % cfg.threads);
        ws[i] = rml_worker_new(&cfg, &shared, ssl_ctx, i, nc, quota);
        if (!ws[i]) {
            fprintf(stderr, "remora-load: out of memory or file descriptors for thread %u\n", i);
            goto out_sync;
        }
    }
    g_shared = &shared;
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    for (; started < cfg.threads; started++)
        if (pthread_create(&ws[started]->thread, NULL, rml_worker_main, ws[started])) break;
    if (started < cfg.threads) {
        fprintf(stderr, "remora-load: cannot start thread %u\n", started);
        atomic_store(&shared.stop, 1);
    }
    pthread_mutex_lock(&shared.mu);
    while (shared.ready < started)
        pthread_cond_wait(&shared.cv, &shared.mu);
    shared.t0 = rml_now_ns();
    shared.go = 1;
    pthread_cond_broadcast(&shared.cv);
    pthread_mutex_unlock(&shared.mu);
    if (started == cfg.threads) watch(&cfg, ws, shared.t0);
    for (unsigned i = 0; i < started; i++)
        pthread_join(ws[i]->thread, NULL);
    if (started < cfg.threads) goto out_sync;

    struct rml_summary sum = {.interrupted = atomic_load(&shared.stop) != 0};
    uint64_t t_measure = shared.t0 + cfg.warmup_ns, t_stop = t_measure;
    for (unsigned i = 0; i < cfg.threads; i++) {
        rml_stats_merge(total, ws[i]->stats);
        sum.gave_up |= ws[i]->gave_up;
        if (ws[i]->t_stop > t_stop) t_stop = ws[i]->t_stop;
    }
    uint64_t t_last = t_stop;
    if (cfg.n && total->t_last_done > t_measure) t_last = total->t_last_done;
    sum.duration_s = (double)(t_last - t_measure) / 1e9;
    sum.send_window_s = (double)(t_stop - t_measure) / 1e9;
    if (cfg.n && cfg.rate > 0 && cfg.n > 1) /* n slots span n-1 intervals, plus the last one */
        sum.send_window_s = (double)cfg.n / cfg.rate;
    if (sum.gave_up)
        fprintf(stderr, "remora-load: gave up: no connection to %s (%s) for %.1fs\n", cfg.url,
                cfg.addr_str, (double)(cfg.connect_timeout_ns + RML_NS_PER_S) / 1e9);
    if (cfg.json)
        rml_report_json(stdout, &cfg, total, &sum);
    else
        rml_report_text(stdout, &cfg, total, &sum);
    fflush(stdout);
    status = (total->sent > 0 && total->succeeded == 0) || sum.gave_up ? 1 : 0;

out_sync:
    pthread_cond_destroy(&shared.cv);
    pthread_mutex_destroy(&shared.mu);
out:
    g_shared = NULL;
    for (unsigned i = 0; ws && i < cfg.threads; i++)
        rml_worker_free(ws[i]);
    free(ws);
    rml_stats_free(total);
    SSL_CTX_free(ssl_ctx);
    rml_config_dispose(&cfg);
    return status;
}
