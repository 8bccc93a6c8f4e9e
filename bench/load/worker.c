/* remora-load: worker thread loop; see worker.h for the contract.
 *
 * One iteration: read the clock, check the end of the run, maintenance (reconnects and
 * timeouts, every 5 ms or when a connection asked for it), dispatch (closed loop: fill every
 * connection with room; open loop: one request per due slot, round-robin over connections
 * with room), flush every dirty connection once, then wait in epoll_pwait2 until the next
 * slot, deadline or event (nanosecond timeout), and handle the events.
 *
 * --spin T replaces sleeping by polling (a zero timeout) in two cases: the last T before an
 * open-loop slot, and the first T after an event while requests are in flight.  The second is
 * what lets a closed loop saturate a target on another CPU: a target that answers while this
 * thread sleeps in epoll pays for the cross-CPU wake-up in its send() (sock_def_readable ->
 * try_to_wake_up -> an IPI, a VM exit on a guest without halt-polling), ~5-10 % of a
 * single-threaded upstream's time at -c 10 -m 20; a thread that is still polling costs the
 * sender nothing.
 */
#include "bench/load/worker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#define MAINT_NS (5 * RML_NS_PER_MS)
#define DRAIN_MAX_NS (10 * RML_NS_PER_S)
#define DRAIN_INTERRUPTED_NS (1 * RML_NS_PER_S)
#define GIVE_UP_NS (1 * RML_NS_PER_S) /* plus --connect-timeout */
#define MAX_EVENTS 256
#define RBUF_SIZE (64 * 1024)

uint64_t rml_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * RML_NS_PER_S + (uint64_t)ts.tv_nsec;
}

static void live_add(atomic_uint_fast64_t *v, int64_t d)
{
    /* single writer: a relaxed load + store is enough and costs no locked instruction */
    atomic_store_explicit(v, atomic_load_explicit(v, memory_order_relaxed) + (uint64_t)d,
                          memory_order_relaxed);
}

struct rml_worker *rml_worker_new(const struct rml_config *cfg, struct rml_shared *shared,
                                  SSL_CTX *ssl_ctx, unsigned id, unsigned nconns, uint64_t quota)
{
    struct rml_worker *w = calloc(1, sizeof(*w));
    if (!w) return NULL;
    w->id = id;
    w->cfg = cfg;
    w->shared = shared;
    w->ssl_ctx = ssl_ctx;
    w->quota = quota;
    w->open_loop = cfg->rate > 0;
    rml_mempool_init(&w->pool);
    w->t_measure = UINT64_MAX;
    w->t_end = UINT64_MAX;
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    w->rbuf_cap = RBUF_SIZE;
    w->rbuf = malloc(w->rbuf_cap);
    w->stats = rml_stats_new();
    w->conns = calloc(nconns, sizeof(*w->conns));
    w->retry_cap = nconns * cfg->streams;
    w->retry = calloc(w->retry_cap, sizeof(*w->retry));
    if (w->epfd < 0 || !w->rbuf || !w->stats || !w->conns || !w->retry) goto fail;
    for (unsigned i = 0; i < nconns; i++) {
        if (rml_conn_init(&w->conns[i], w, i) < 0) goto fail;
        w->nconns++;
    }
    return w;
fail:
    rml_worker_free(w);
    return NULL;
}

void rml_worker_free(struct rml_worker *w)
{
    if (!w) return;
    for (unsigned i = 0; i < w->nconns; i++)
        rml_conn_dispose(&w->conns[i], RML_E_TIMEOUT);
    free(w->conns);
    rml_mempool_dispose(&w->pool); /* after every session is gone */
    free(w->retry);
    if (w->epfd >= 0) close(w->epfd);
    free(w->rbuf);
    rml_stats_free(w->stats);
    free(w);
}

void rml_worker_ready_update(struct rml_worker *w, struct rml_conn *c)
{
    int want = c->state == RML_CS_READY && !c->no_more && c->free_slots != NULL;
    if (want == c->on_ready) return;
    if (want) {
        c->ready_next = NULL;
        c->ready_prev = w->ready_tail;
        if (w->ready_tail)
            w->ready_tail->ready_next = c;
        else
            w->ready_head = c;
        w->ready_tail = c;
    } else {
        if (c->ready_prev)
            c->ready_prev->ready_next = c->ready_next;
        else
            w->ready_head = c->ready_next;
        if (c->ready_next)
            c->ready_next->ready_prev = c->ready_prev;
        else
            w->ready_tail = c->ready_prev;
        c->ready_prev = c->ready_next = NULL;
    }
    c->on_ready = want;
}

void rml_worker_account(struct rml_worker *w, struct rml_req *r, int err)
{
    live_add(&w->live_done, 1);
    if (err >= 0) live_add(&w->live_errors, 1);
    if (!r->measured) return;
    struct rml_stats *st = w->stats;
    if (err >= 0) {
        st->errors[err]++;
        st->failed++;
        return;
    }
    st->completed++;
    int s = r->status, ok = s >= 200 && s < 300;
    st->status[s >= 100 && s < 600 ? s : 0]++;
    if (w->cfg->grpc) {
        int g = r->grpc_status;
        if (g < 0)
            st->grpc_missing++;
        else if (g < RML_GRPC_CODES)
            st->grpc[g]++;
        else
            st->grpc_other++;
        ok = ok && g == 0;
    }
    if (ok) {
        st->succeeded++;
    } else {
        st->failed++;
        live_add(&w->live_errors, 1);
    }
    rml_hist_record(&st->latency, w->now > r->t_sched ? w->now - r->t_sched : 0);
    st->t_last_done = w->now;
}

void rml_worker_retry(struct rml_worker *w, const struct rml_req *r)
{
    /* every queued retry came from a released slot, so the ring (one entry per slot) can
     * only overflow if slots were retried twice without a send in between: then fail it */
    if (w->retry_len == w->retry_cap) {
        if (r->measured) { /* still counted as sent: it was */
            w->stats->errors[RML_E_RESET]++;
            w->stats->failed++;
        }
        return;
    }
    struct rml_retry *e = &w->retry[(w->retry_head + w->retry_len++) % w->retry_cap];
    e->t_sched = r->t_sched;
    e->tmpl = r->tmpl;
    e->measured = r->measured;
    if (r->measured) w->stats->sent--; /* counted again when re-sent */
}

/* Send queued retries first, on any connection with room. */
static void dispatch_retries(struct rml_worker *w)
{
    struct rml_conn *c;
    while (w->retry_len > 0 && (c = w->ready_head) != NULL) {
        struct rml_retry e = w->retry[w->retry_head];
        w->retry_head = (w->retry_head + 1) % w->retry_cap;
        w->retry_len--;
        if (e.measured) w->stats->sent++;
        rml_conn_send(c, e.t_sched, e.measured, e.tmpl);
    }
}

static uint32_t next_template(struct rml_worker *w)
{
    if (w->cfg->nreqs == 1) return 0;
    uint32_t t = w->rr++;
    if (w->rr == w->cfg->nreqs) w->rr = 0;
    return t;
}

static void dispatch_closed(struct rml_worker *w)
{
    struct rml_conn *c;
    while ((c = w->ready_head) != NULL) {
        int measured = w->now >= w->t_measure;
        if (measured && w->quota != UINT64_MAX) {
            if (w->quota == 0) return;
            w->quota--;
        }
        if (measured) w->stats->sent++;
        rml_conn_send(c, w->now, measured, next_template(w));
    }
}

static void dispatch_open(struct rml_worker *w)
{
    struct rml_conn *c;
    while (rml_sched_due(&w->sched, w->now) && (c = w->ready_head) != NULL) {
        uint64_t t = rml_sched_take(&w->sched);
        int measured = t >= w->t_measure;
        if (measured) {
            w->stats->sent++;
            rml_hist_record(&w->stats->lag, w->now - t);
        }
        rml_conn_send(c, t, measured, next_template(w));
        if (c->on_ready && c != w->ready_tail) { /* round-robin: to the back */
            w->ready_head = c->ready_next;
            w->ready_head->ready_prev = NULL;
            c->ready_prev = w->ready_tail;
            c->ready_next = NULL;
            w->ready_tail->ready_next = c;
            w->ready_tail = c;
        }
    }
}

static void flush_dirty(struct rml_worker *w)
{
    struct rml_conn *c;
    while ((c = w->dirty_head) != NULL) {
        w->dirty_head = c->dirty_next;
        c->dirty = 0;
        c->dirty_next = NULL;
        rml_conn_flush(c);
    }
}

static void maintenance(struct rml_worker *w)
{
    if (w->now < w->next_maint) return;
    w->next_maint = w->now + MAINT_NS;
    for (unsigned i = 0; i < w->nconns; i++) {
        struct rml_conn *c = &w->conns[i];
        if (c->state == RML_CS_READY) w->t_last_up = w->now;
        if (c->state == RML_CS_IDLE) {
            if ((!w->stopping || w->retry_len > 0) && c->reconnect_at <= w->now) rml_conn_start(c);
        } else {
            rml_conn_check_timeouts(c, w->now);
        }
    }
}

static void check_end(struct rml_worker *w)
{
    if (w->stopping) return;
    int interrupted = atomic_load_explicit(&w->shared->stop, memory_order_relaxed) != 0;
    /* with -n the run would never end against a target that went away: give up when no
     * connection has been up for the connect timeout and a second */
    if (w->now - w->t_last_up > w->cfg->connect_timeout_ns + GIVE_UP_NS) {
        w->gave_up = 1;
        interrupted = 1;
    }
    int done_sending =
        w->now >= w->t_end || (w->open_loop ? rml_sched_exhausted(&w->sched) : w->quota == 0);
    if (!interrupted && !done_sending) return;
    w->stopping = 1;
    /* the window ends at -d's end even when the last slot came a little earlier */
    w->t_stop = interrupted || w->t_end == UINT64_MAX ? w->now : w->t_end;
    if (w->t_stop > w->now && interrupted) w->t_stop = w->now;
    uint64_t grace = DRAIN_MAX_NS;
    if (w->cfg->timeout_ns && w->cfg->timeout_ns < grace) grace = w->cfg->timeout_ns;
    if (interrupted && grace > DRAIN_INTERRUPTED_NS) grace = DRAIN_INTERRUPTED_NS;
    w->drain_until = w->now + grace;
}

static int wait_events(struct rml_worker *w, uint64_t deadline)
{
    static int no_pwait2;
    struct epoll_event ev[MAX_EVENTS];
    uint64_t wait = deadline > w->now ? deadline - w->now : 0;
    int n;
    if (!no_pwait2) {
        struct timespec ts = {.tv_sec = (time_t)(wait / RML_NS_PER_S),
                              .tv_nsec = (long)(wait % RML_NS_PER_S)};
        n = epoll_pwait2(w->epfd, ev, MAX_EVENTS, &ts, NULL);
        if (n < 0 && errno == ENOSYS) no_pwait2 = 1;
    }
    if (no_pwait2) /* old kernel: millisecond timeouts, rounded up */
        n = epoll_wait(w->epfd, ev, MAX_EVENTS, (int)((wait + RML_NS_PER_MS - 1) / RML_NS_PER_MS));
    w->now = rml_now_ns();
    if (n > 0) w->t_last_ev = w->now;
    for (int i = 0; i < n; i++)
        rml_conn_on_event(ev[i].data.ptr, ev[i].events);
    return n;
}

/* One loop iteration; `run`: the measured run (dispatch on), else the connect phase. */
static void iterate(struct rml_worker *w, int run)
{
    w->now = rml_now_ns();
    maintenance(w);
    if (run) dispatch_retries(w);
    if (run && !w->stopping && w->retry_len == 0)
        (w->open_loop ? dispatch_open : dispatch_closed)(w);
    flush_dirty(w);
    uint64_t dl = w->next_maint;
    if (run && w->stopping) {
        if (w->drain_until < dl) dl = w->drain_until;
    } else if (run) {
        if (w->t_end < dl) dl = w->t_end;
        if (w->open_loop && w->ready_head) {
            uint64_t t = rml_sched_next_time(&w->sched);
            uint64_t spin = w->cfg->spin_ns;
            t = t > spin ? t - spin : 0;
            if (t <= w->now)
                dl = w->now; /* within the spin window: poll without sleeping */
            else if (t < dl)
                dl = t;
        }
    }
    /* --spin: a response is likely soon after the last one: poll for it without sleeping */
    if (run && w->inflight > 0 && w->now - w->t_last_ev < w->cfg->spin_ns) dl = w->now;
    wait_events(w, dl);
}

static int connecting(const struct rml_worker *w)
{
    for (unsigned i = 0; i < w->nconns; i++)
        if (w->conns[i].state == RML_CS_CONNECTING || w->conns[i].state == RML_CS_TLS) return 1;
    return 0;
}

void *rml_worker_main(void *arg)
{
    struct rml_worker *w = arg;
    const struct rml_config *cfg = w->cfg;
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0); /* precise open-loop wake-ups */

    /* connect phase: every connection tried once before the clock starts */
    w->now = rml_now_ns();
    uint64_t until = w->now + cfg->connect_timeout_ns + 100 * RML_NS_PER_MS;
    for (unsigned i = 0; i < w->nconns; i++)
        rml_conn_start(&w->conns[i]);
    while (connecting(w) && w->now < until && !atomic_load(&w->shared->stop))
        iterate(w, 0);
    struct rml_shared *sh = w->shared;
    pthread_mutex_lock(&sh->mu);
    sh->ready++;
    pthread_cond_broadcast(&sh->cv);
    while (!sh->go)
        pthread_cond_wait(&sh->cv, &sh->mu);
    uint64_t t0 = sh->t0;
    pthread_mutex_unlock(&sh->mu);

    w->t_measure = t0 + cfg->warmup_ns;
    w->t_end = cfg->n ? UINT64_MAX : w->t_measure + cfg->duration_ns;
    if (w->open_loop) {
        /* thread i's slots are offset by i total-intervals: the merged stream is even */
        double per_thread = cfg->rate / cfg->threads;
        uint64_t phase = (uint64_t)(1e9 / cfg->rate * w->id);
        rml_sched_init(&w->sched, t0 + phase, per_thread, w->t_end, w->t_measure,
                       cfg->n ? w->quota : 0);
        if (cfg->n && w->quota == 0) w->sched.limit = 0;
    }
    w->next_maint = 0;
    w->t_last_up = rml_now_ns();
    for (;;) {
        w->now = rml_now_ns();
        check_end(w);
        if (w->stopping && ((w->inflight == 0 && w->retry_len == 0) || w->now >= w->drain_until))
            break;
        iterate(w, 1);
        live_add(&w->live_inflight,
                 (int64_t)w->inflight -
                     (int64_t)atomic_load_explicit(&w->live_inflight, memory_order_relaxed));
    }
    if (w->open_loop) w->stats->unsent = rml_sched_untaken(&w->sched, w->t_measure, w->t_stop);
    for (; w->retry_len > 0; w->retry_len--, w->retry_head = (w->retry_head + 1) % w->retry_cap)
        if (w->retry[w->retry_head].measured) { /* refused and never sent again */
            w->stats->sent++;
            w->stats->errors[RML_E_RESET]++;
            w->stats->failed++;
        }
    for (unsigned i = 0; i < w->nconns; i++) /* still in flight: timed out */
        rml_conn_close(&w->conns[i], RML_E_TIMEOUT, 1);
    atomic_store(&w->finished, 1);
    return NULL;
}
