/* remora-load: one worker thread: an epoll loop driving its share of the connections.
 *
 * Start-up: main creates `threads` workers (rml_worker_new) and starts them; each worker
 * tries its first connections, counts itself in `shared->ready` and waits for `shared->go`;
 * main, once every started worker is ready, writes `shared->t0` (the common start of the
 * schedule) and sets go.  During the run only the live_* counters are read by another thread
 * (main's progress line); stats are read after the thread is joined.
 */
#ifndef REMORA_BENCH_LOAD_WORKER_H
#define REMORA_BENCH_LOAD_WORKER_H

#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "bench/load/config.h"
#include "bench/load/conn.h"
#include "bench/load/mempool.h"
#include "bench/load/report.h"
#include "bench/load/sched.h"

struct rml_shared {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned ready; /* workers done with their connect phase (under mu) */
    int go;         /* set by main with t0 (under mu) */
    uint64_t t0;
    atomic_int stop; /* SIGINT/SIGTERM, or start-up failure: stop sending, drain briefly */
};

/* A request the server refused without processing it, to be sent again. */
struct rml_retry {
    uint64_t t_sched;
    uint32_t tmpl;
    uint8_t measured;
};

struct rml_worker {
    unsigned id;
    pthread_t thread;
    const struct rml_config *cfg;
    struct rml_shared *shared;
    SSL_CTX *ssl_ctx; /* shared, owned by main */
    int epfd;
    struct rml_conn *conns;
    unsigned nconns;
    struct rml_conn *ready_head, *ready_tail;
    struct rml_conn *dirty_head;
    uint64_t now;
    uint64_t t_measure;   /* warm-up end */
    uint64_t t_end;       /* -d: end of sending; UINT64_MAX with -n */
    uint64_t t_stop;      /* when sending stopped */
    uint64_t drain_until; /* after sending stopped: give up on in-flight requests then */
    uint64_t next_maint;
    uint64_t quota; /* closed loop, -n: measured requests left to send */
    int open_loop;
    struct rml_sched sched;
    int stopping;
    int gave_up;        /* no connection could be made for GIVE_UP: the run was cut short */
    uint64_t t_last_up; /* last maintenance pass that saw a connection ready */
    uint64_t t_last_ev; /* last epoll wait that returned events (--spin after responses) */
    unsigned inflight;
    uint32_t rr;             /* round-robin over request templates */
    struct rml_retry *retry; /* ring of requests refused unprocessed (HTTP/2 GOAWAY) */
    unsigned retry_cap, retry_head, retry_len;
    uint8_t *rbuf;
    size_t rbuf_cap;
    struct rml_stats *stats;
    struct rml_mempool pool;          /* nghttp2's allocations for this thread's sessions */
    atomic_uint_fast64_t live_done;   /* completed + failed, for progress */
    atomic_uint_fast64_t live_errors; /* failed */
    atomic_uint_fast64_t live_inflight;
    atomic_int finished;
};

/* Allocate worker `id` of cfg->threads with its share of connections (`nconns`) and of -n.
 * Returns NULL on allocation failure. */
struct rml_worker *rml_worker_new(const struct rml_config *cfg, struct rml_shared *shared,
                                  SSL_CTX *ssl_ctx, unsigned id, unsigned nconns, uint64_t quota);
void rml_worker_free(struct rml_worker *w);

/* Thread entry (arg: the worker).  Returns when the run is over for this worker. */
void *rml_worker_main(void *arg);

/* For connections: a connection gained or lost room for requests. */
void rml_worker_ready_update(struct rml_worker *w, struct rml_conn *c);
/* For connections: account one finished request (err < 0: a response, else an rml_err). */
void rml_worker_account(struct rml_worker *w, struct rml_req *r, int err);
/* For connections: `r` was refused unprocessed; queue it to be sent again on any connection
 * (its latency still counts from its first scheduled time). */
void rml_worker_retry(struct rml_worker *w, const struct rml_req *r);

/* Monotonic clock in ns. */
uint64_t rml_now_ns(void);

#endif
