/* Per-worker upstream state: load balancing and connection pools.
 *
 * struct rm_worker_cluster is one worker's view of one cluster: its LB cursor and one pool per
 * (host, protocol).  A pool lends client codecs: HTTP/1.1 pools keep idle keep-alive
 * connections and open one connection per concurrent request; HTTP/2 pools multiplex streams
 * over as few connections as the peer's max_concurrent_streams allows. */
#ifndef RM_UPSTREAM_POOL_H
#define RM_UPSTREAM_POOL_H

#include <stdint.h>

#include "proxy/core/loop.h"
#include "proxy/http/codec.h"
#include "proxy/upstream/cluster.h"

struct rm_pool;
struct rm_pool_request;

enum rm_pool_failure {
    RM_POOL_CONNECT_FAILURE, /* UF */
    RM_POOL_CONNECT_TIMEOUT, /* UF (+ upstream_cx_connect_timeout) */
    RM_POOL_OVERFLOW,        /* UO */
};

struct rm_pool_request_cb {
    /** A codec with a free stream slot: open the stream now (rm_codec_new_stream). */
    void (*on_ready)(struct rm_pool_request *r, struct rm_codec *codec, struct rm_host *host);
    void (*on_failure)(struct rm_pool_request *r, enum rm_pool_failure why, int err);
};

/** A waiting request; embed it in the caller's object. */
struct rm_pool_request {
    const struct rm_pool_request_cb *cb;
    struct rm_pool *pool;
    struct rm_pool_request *next, *prev;
};

struct rm_worker_cluster {
    struct rm_cluster *cluster;
    struct rm_loop *loop;
    uint64_t rr; /* round-robin cursor */
    int64_t *wrr_current; /* smooth weighted round robin state per host (NULL if equal weights) */
    bool weighted;
    uint64_t rng;
    struct rm_pool **pools; /* [n_hosts * 2]: h1 then h2 */
};

struct rm_worker_cluster *rm_worker_cluster_new(struct rm_cluster *c, struct rm_loop *loop);
/** Close every pooled connection and free (requests in flight get on_reset). */
void rm_worker_cluster_free(struct rm_worker_cluster *wc);

/** Pick a host by the cluster's policy, skipping unroutable ones (panic mode as Envoy: if the
 *  routable share is below healthy_panic_threshold, pick among all).  <avoid> is a host to avoid
 *  when another is available (retries).  NULL when the cluster has no host. */
struct rm_host *rm_lb_pick(struct rm_worker_cluster *wc, const struct rm_host *avoid);

/** The pool for (host, protocol); created on first use. */
struct rm_pool *rm_worker_cluster_pool(struct rm_worker_cluster *wc, struct rm_host *h,
                                       enum rm_http_proto proto);

/** Ask for a codec.  Returns RM_OK and sets *codec when one is available now (no callback),
 *  or RM_AGAIN when <r> is queued (r->cb fires later; cancel with rm_pool_cancel). */
int rm_pool_acquire(struct rm_pool *p, struct rm_pool_request *r,
                    const struct rm_pool_request_cb *cb, struct rm_codec **codec);
/** Withdraw a queued request (no callback afterwards).  No-op if not queued. */
void rm_pool_cancel(struct rm_pool_request *r);

#endif
