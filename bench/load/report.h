/* remora-load: run statistics and the reports made of them.
 *
 * Each worker thread owns one struct rml_stats and is its only writer during the run; after
 * the threads are joined, main merges them (rml_stats_merge) and prints the final report as
 * text or JSON.  Only requests whose (scheduled) start falls in the measured window — after
 * the warm-up — are counted.
 */
#ifndef REMORA_BENCH_LOAD_REPORT_H
#define REMORA_BENCH_LOAD_REPORT_H

#include <stdint.h>
#include <stdio.h>

#include "bench/load/config.h"
#include "bench/load/histogram.h"

/* Why a request failed without a (complete) response. */
enum rml_err {
    RML_E_RESET,    /* connection closed or stream reset before the response ended */
    RML_E_TIMEOUT,  /* --timeout expired, or still in flight when the run ended */
    RML_E_PROTOCOL, /* malformed response, HTTP/2 protocol error */
    RML_E__N
};

#define RML_GRPC_CODES 17 /* grpc-status 0..16; others are counted as "other" */

struct rml_stats {
    uint64_t sent;      /* requests written (measured ones) */
    uint64_t completed; /* a whole response came back, any status */
    uint64_t succeeded; /* 2xx (and grpc-status 0 with --grpc) */
    uint64_t failed;    /* completed without success, or errors[] */
    uint64_t unsent;    /* open loop: slots in the window never sent (every stream busy) */
    uint64_t errors[RML_E__N];
    uint64_t connect_errors; /* connection attempts that failed (refused, timeout, TLS) */
    uint64_t conns_opened;   /* connections established */
    uint64_t status[600];    /* by exact code; status[0]: outside 100..599 */
    uint64_t grpc[RML_GRPC_CODES];
    uint64_t grpc_other;   /* grpc-status > 16 */
    uint64_t grpc_missing; /* --grpc response without grpc-status */
    uint64_t bytes_rx;     /* bytes read from sockets (after TLS), measured window */
    uint64_t bytes_tx;
    uint64_t t_last_done;    /* monotonic ns of the last measured completion */
    struct rml_hist latency; /* ns: response end - scheduled (open) or send (closed) time */
    struct rml_hist connect; /* ns: connect start - ready (TCP, and TLS handshake) */
    struct rml_hist lag;     /* ns, open loop: send time - scheduled time */
};

/* Heap-allocate an empty stats (about 110 KiB); NULL on allocation failure. */
struct rml_stats *rml_stats_new(void);
void rml_stats_free(struct rml_stats *s);

/* Add `src` into `dst`. */
void rml_stats_merge(struct rml_stats *dst, const struct rml_stats *src);

/* The figures a final report is made of, beyond the counters. */
struct rml_summary {
    double duration_s;    /* measured window: warm-up end to run end (-d) or last response (-n) */
    double send_window_s; /* open loop: warm-up end to the last slot time */
    int interrupted;      /* SIGINT/SIGTERM */
    int gave_up;          /* cut short: no connection to the target could be made */
};

/* Final report, human-readable. */
void rml_report_text(FILE *out, const struct rml_config *cfg, const struct rml_stats *s,
                     const struct rml_summary *sum);

/* Final report as one JSON object (schema in bench/load/README.md). */
void rml_report_json(FILE *out, const struct rml_config *cfg, const struct rml_stats *s,
                     const struct rml_summary *sum);

/* One progress line: elapsed seconds, and the totals and deltas since the previous line. */
void rml_report_progress(FILE *out, double elapsed_s, uint64_t done, uint64_t done_delta,
                         uint64_t errors, uint64_t inflight, double dt_s);

#endif
