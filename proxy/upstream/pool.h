/* Per-worker upstream state: load balancing and connection pools.
 *
 * struct rm_worker_cluster is one worker's view of one cluster: its own reference to the
 * cluster's membership (a struct rm_host_set, swapped by rm_worker_cluster_set_hosts), its LB
 * cursors and one pool per (host, protocol), plus the pools of hosts that left, draining.
 * A pool lends client codecs: HTTP/1.1 pools keep idle keep-alive connections and open one
 * connection per concurrent request; HTTP/2 pools multiplex streams over as few connections as
 * the peer's max_concurrent_streams allows.
 *
 * Lifetimes: a pool holds a reference on its host, and is freed only from a deferred task once
 * it has neither connection nor waiting request, so a host and its pool outlive every upstream
 * stream and pending request that uses them, whatever membership update happens meanwhile. */
#ifndef RM_UPSTREAM_POOL_H
#define RM_UPSTREAM_POOL_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include "proxy/core/loop.h"
#include "proxy/http/codec.h"
#include "proxy/upstream/cluster.h"

struct rm_pool;
struct rm_pool_request;
struct rm_tls_info;

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
    struct rm_pool *pool; /* set while queued (pending) */
    struct rm_pool_request *next, *prev;
    unsigned priority; /* routing priority: which circuit breakers count it */
};

/* One worker's view of one cluster.  Worker thread only (created and freed on the thread that
 * owns <loop>, or before that thread runs). */
struct rm_worker_cluster {
    struct rm_cluster *cluster; /* a reference */
    unsigned refs;              /* the worker's map + requests using it (worker thread) */
    struct rm_loop *loop;
    struct rm_host_set *hs; /* this worker's reference to the membership it balances over */
    uint32_t rr;            /* round-robin cursor */
    uint32_t last_pick;     /* index in hs of rm_lb_pick's last answer (rm_worker_cluster_pool) */
    int64_t *wrr_current;   /* [hs->n] smooth weighted round robin state, parallel to hs->hosts;
                               NULL until the first weighted pick over hs */
    struct rm_pool **pools; /* [hs->n * 2], parallel to hs->hosts: HTTP/1.1 then HTTP/2; NULL
                               until the first pool over hs (rm_worker_cluster_pool) */
    /* pools of hosts that left hs, until their connections are gone (pool.c); NULL until the
     * first such pool */
    struct rm_wc_drain *drain;
    /* ORIGINAL_DST clusters: this worker's hosts and their pools (original_dst.h); NULL until
     * the first request (hs stays empty) */
    struct rm_odst_worker *odst;
};

/** The worker view of <c> (takes a cluster reference), balancing over c->hs as it is now (a
 *  new reference): on the main thread, which hands it to the worker (before the worker runs, or
 *  in a posted job).  One reference (the worker's map).  NULL when out of memory. */
struct rm_worker_cluster *rm_worker_cluster_new(struct rm_cluster *c, struct rm_loop *loop);
/** Close every pooled connection, draining ones included (requests in flight get on_reset) and
 *  free, whatever the references.  On the worker's thread (or after it ended); NULL is a
 *  no-op. */
void rm_worker_cluster_free(struct rm_worker_cluster *wc);
/** A request starts using <wc> (worker thread): it stays valid until the matching release,
 *  even if the cluster leaves the config meanwhile. */
static inline struct rm_worker_cluster *rm_worker_cluster_hold(struct rm_worker_cluster *wc)
{
    wc->refs++;
    return wc;
}
/** Drop a reference (worker thread); the last one frees (rm_worker_cluster_free).  NULL is a
 *  no-op.  Never call it from inside one of <wc>'s pool callbacks with the last reference. */
void rm_worker_cluster_release(struct rm_worker_cluster *wc);

/** Balance over <hs> from now on (takes over the caller's reference; the old set is dropped).
 *  Hosts that stay keep their pools and their smooth-WRR state; pools of hosts that left
 *  drain: they take no new request, their idle connections close now, busy ones when their
 *  last stream ends, requests waiting in them still get a connection; each is freed (and its
 *  host reference dropped) once it has neither connection nor waiting request.  Worker thread.
 *  Aborts when out of memory. */
void rm_worker_cluster_set_hosts(struct rm_worker_cluster *wc, struct rm_host_set *hs);

/** A pseudo-random number from the calling thread's generator (xorshift64*, seeded on first
 *  use): RANDOM and LEAST_REQUEST draws, round-robin starting points. */
uint64_t rm_lb_random(void);

/** Pick a host by the cluster's policy, skipping unroutable ones (panic mode as Envoy: if the
 *  routable share is below healthy_panic_threshold, pick among all).  <avoid> is a host to avoid
 *  when another is available (retries).  NULL when the cluster has no host. */
struct rm_host *rm_lb_pick(struct rm_worker_cluster *wc, const struct rm_host *avoid);

/** Close everything of <p> now and free it (its worker cluster goes): waiting requests fail,
 *  streams get on_reset.  NULL is a no-op.  (original_dst.c, for the pools it keeps.) */
void rm_pool_free(struct rm_pool *p);
/** <p>'s host left (original_dst.c's sweep): no new request, its connections close once idle,
 *  it is freed once it has neither connection nor waiting request.  NULL is a no-op. */
void rm_pool_start_drain(struct rm_worker_cluster *wc, struct rm_pool *p);

/** The pool for (host, protocol); <h> is a host of wc->hs (rm_lb_pick's answer), or, for an
 *  ORIGINAL_DST cluster, rm_odst_pick's answer.  Created on
 *  first use (it holds a reference on <h>), counted against max_connection_pools of
 *  <priority>: NULL (and upstream_cx_pool_overflow) when a new pool would pass it. */
struct rm_pool *rm_worker_cluster_pool(struct rm_worker_cluster *wc, struct rm_host *h,
                                       enum rm_http_proto proto, unsigned priority);

/** Ask for a codec for a request of routing <priority>.  Returns
 *  - RM_OK: *codec has a free stream now (no callback);
 *  - RM_AGAIN: <r> is queued as pending (r->cb fires later; cancel with rm_pool_cancel);
 *  - RM_DONE: it failed synchronously and cb->on_failure already ran: RM_POOL_OVERFLOW when
 *    max_pending_requests is reached (upstream_rq_pending_overflow counted), or a connect
 *    failure.
 *  Circuit breaking, as Envoy: a pending request holds a max_pending_requests slot; a new
 *  connection needs a max_connections slot (cluster) and per-host room, else the request waits
 *  for a connection of the pool to free up (upstream_cx_overflow) — unless the pool has no
 *  connection at all, which always gets one. */
int rm_pool_acquire(struct rm_pool *p, struct rm_pool_request *r,
                    const struct rm_pool_request_cb *cb, unsigned priority,
                    struct rm_codec **codec);
/** rm_pool_cancel's work for a queued request. */
void rm_pool_dequeue(struct rm_pool_request *r);
/** Withdraw a queued request (no callback afterwards).  No-op if not queued (inline: the usual
 *  case, a request that got its stream at once). */
static inline void rm_pool_cancel(struct rm_pool_request *r)
{
    if (r->pool) rm_pool_dequeue(r);
}
/** Count a response of <status> from host <h> (NULL: none): the cluster's upstream_rq_<N>xx in
 *  <cs>, the host's rq_success / rq_error (5xx). */
void rm_upstream_count_status(struct rm_stats *cs, struct rm_host *h, unsigned status);
/** A stream taken from <p> ended: serve pending requests that wait for a stream slot (HTTP/2
 *  at max_concurrent_streams or at max_connections).  Cheap when nothing is pending. */
void rm_pool_stream_done(struct rm_pool *p);

/** The local address (AF_INET or AF_INET6) of the connection under <codec>, a client codec a
 *  pool lent (pool_ready): into *out, true; false when unknown.  One getsockname per
 *  connection, cached (UPSTREAM_LOCAL_ADDRESS of access logs). */
bool rm_pool_codec_local_addr(struct rm_codec *codec, struct sockaddr_in6 *out);
/** The TLS session of the connection under <codec> (as rm_pool_codec_local_addr), or NULL
 *  (plaintext): taken once per connection, owned by the pool, valid until the connection is
 *  freed — copy what must outlive the stream (UPSTREAM_PEER_URI_SAN of access logs). */
const struct rm_tls_info *rm_pool_codec_tls_info(struct rm_codec *codec);

#endif
