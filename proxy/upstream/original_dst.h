/* ORIGINAL_DST clusters (Envoy's DiscoveryType ORIGINAL_DST, lb_policy CLUSTER_PROVIDED): the
 * upstream host of a request is its original destination — the restored local address of the
 * downstream connection (envoy.filters.listener.original_dst), or, with
 * original_dst_lb_config.use_http_header, a valid "ip:port" in the request header
 * (x-envoy-original-dst-host by default), which wins; upstream_port_override replaces the port.
 * Hosts are made on demand and removed once unused for a cleanup_interval (default 5 s).
 *
 * Thread model.  Envoy makes a host on the worker that routes the request and posts it to the
 * main thread's host map.  remora keeps one map per worker (struct rm_odst_worker, hung on the
 * worker's rm_worker_cluster): the request path finds its host there without a lock.  Only when
 * a worker meets an address it does not have does it take the cluster's registry lock
 * (struct rm_odst), where every worker finds the same rm_host for an address — so per-host
 * counters (/clusters), circuit-breaker counts and the membership gauges are the cluster's, as
 * in Envoy.  Each worker sweeps its own map every cleanup_interval with its own timer: an
 * address it has not picked since the last sweep leaves its map (its pools drain: streams in
 * flight finish) and leaves the registry once no worker has it.  Outlier detection is not
 * supported on these clusters (rejected at config time). */
#ifndef RM_UPSTREAM_ORIGINAL_DST_H
#define RM_UPSTREAM_ORIGINAL_DST_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "proxy/core/error.h"
#include "proxy/http/codec.h"

struct Envoy__Config__Cluster__V3__Cluster;
struct rm_cluster;
struct rm_headers;
struct rm_host;
struct rm_host_set;
struct rm_pool;
struct rm_worker_cluster;

#define RM_ODST_DEFAULT_HEADER "x-envoy-original-dst-host"

/** The cluster-wide part: the config and the registry of live hosts. */
struct rm_odst {
    char *header;           /* lowercase header name; NULL unless use_http_header */
    bool has_port_override; /* upstream_port_override */
    uint16_t port_override;
    uint32_t cleanup_ms;  /* cleanup_interval */
    pthread_mutex_t lock; /* guards reg / n_reg (any thread; never on the request path) */
    struct rm_odst_reg *reg;
    size_t n_reg, cap_reg;
};

/** Whether <pb> is an ORIGINAL_DST cluster. */
bool rm_odst_is(const struct Envoy__Config__Cluster__V3__Cluster *pb);
/** Check and build the ORIGINAL_DST part of <pb> (errors name the field under <path>):
 *  lb_policy CLUSTER_PROVIDED, no load_assignment, no outlier_detection, http_header_name only
 *  with use_http_header, cleanup_interval > 0.  *out (free with rm_odst_free).  A non-ORIGINAL_DST
 *  cluster with original_dst_lb_config is an error too (*out NULL). */
int rm_odst_parse(const struct Envoy__Config__Cluster__V3__Cluster *pb, const char *path,
                  struct rm_odst **out, struct rm_error *err);
/** Free (every worker map is gone: the registry is empty).  NULL is a no-op. */
void rm_odst_free(struct rm_odst *o);

/** The host for a request on <wc> (a worker view of an ORIGINAL_DST cluster; worker thread):
 *  <req>'s header when use_http_header is set and it holds a valid "ip:port" (an invalid one
 *  counts original_dst_host_invalid and is ignored), else <restored> (the downstream
 *  connection's restored local address; NULL: none).  The worker's host for that address,
 *  made on first use.  NULL when there is no original destination (503 UH). */
struct rm_host *rm_odst_pick(struct rm_worker_cluster *wc, const struct sockaddr *restored,
                             const struct rm_headers *req);
/** Where <wc>'s pool for (<h>, <proto>) is kept: <h> is rm_odst_pick's answer (still in the
 *  worker's map until the next sweep).  NULL when <h> is not in the map (a caller bug). */
struct rm_pool **rm_odst_pool_slot(struct rm_worker_cluster *wc, const struct rm_host *h,
                                   enum rm_http_proto proto);
/** The worker cluster goes: its map's pools are freed (rm_pool_free), its hosts leave the
 *  registry, its sweep timer stops.  Worker thread (or after it ended). */
void rm_odst_worker_free(struct rm_worker_cluster *wc);

/** The cluster's current hosts (the registry), as a new host set (one reference; NULL when out
 *  of memory): what /clusters lists.  Any thread. */
struct rm_host_set *rm_odst_hosts(const struct rm_cluster *c);

#endif
