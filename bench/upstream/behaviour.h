/* remora-upstream: what a request asks for (x-upstream-* headers), and the shared pieces of
 * every response (headers, trailers, pattern body, the JSON request description).
 *
 * The header reference is in bench/upstream/README.md and `remora-upstream --help`. */
#ifndef RMU_BEHAVIOUR_H
#define RMU_BEHAVIOUR_H

#include "bench/upstream/common.h"
#include "bench/upstream/loop.h"

enum rmu_reset {
    RMU_RESET_NONE,
    RMU_RESET_BEFORE_HEADERS,
    RMU_RESET_AFTER, /* after the headers and `reset_after` body bytes */
};

struct rmu_behaviour {
    unsigned status;
    uint64_t body_size;
    uint64_t delay_ms;
    bool echo;         /* response body = request body, streamed */
    bool echo_headers; /* x-echo-<name> response headers */
    bool echo_request; /* JSON description of the request as the body */
    bool close;        /* h1 Connection: close / h2 GOAWAY after the response */
    bool grpc;         /* gRPC framing: application/grpc, echo, grpc-status trailers */
    enum rmu_reset reset;
    uint64_t reset_after;
    unsigned grpc_status;
    struct rmu_str grpc_message;
    struct rmu_str resp_headers; /* "k=v,k=v" */
    struct rmu_str trailers;     /* "k=v,k=v" */
    const char *error;           /* malformed behaviour header: 400 with this text */
    struct rmu_str error_arg;    /* appended to the error text (the offending header) */
};

struct rmu_req;

/* Process-wide set-up and tear-down (pattern bytes; fail-first counters). */
void rmu_behaviour_init(void);
void rmu_behaviour_cleanup(void);

/* Fill r->bh from r's request headers (called once, when they are complete).  Counts the
 * request against x-upstream-fail-first.  A malformed header sets bh.error, never fails. */
void rmu_behaviour_parse(struct rmu_req *r);

/* Append the response headers common to both protocols (x-upstream-name, content-type, extra
 * headers, x-echo-*) to hl, which the caller reset.  No :status nor framing headers.  Names are
 * lower case.  0 or -1 (out of memory). */
int rmu_behaviour_headers(const struct rmu_req *r, struct rmu_hlist *hl);
/* Append the response trailers (grpc-status/-message, x-upstream-trailers) to a reset hl. */
int rmu_behaviour_trailers(const struct rmu_req *r, struct rmu_hlist *hl);
/* Whether the response carries trailers. */
bool rmu_behaviour_has_trailers(const struct rmu_req *r);

/* Append the JSON description of r (method, path, headers, body length...) to out; 0 or -1. */
int rmu_behaviour_echo_json(const struct rmu_req *r, struct rmu_buf *out);

/* Pattern body bytes [off, off+n) to dst; n <= RMU_PATTERN_CHUNK. */
enum { RMU_PATTERN_CHUNK = 64 * 1024 };
void rmu_pattern_copy(uint8_t *dst, uint64_t off, size_t n);

/* Reason phrase for an HTTP status code ("Unknown" for codes without one). */
const char *rmu_reason(unsigned status);

#endif
