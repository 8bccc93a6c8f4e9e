/* Stats: counters and gauges named as Envoy names them, sharded per thread.
 *
 * A stats block is a fixed set of counters/gauges under one prefix ("cluster.backend.",
 * "http.ingress_http.", "listener.0.0.0.0_10000.").  Each thread that updates a block writes
 * only its own shard (rm_stats_shard, set when the thread starts): no locks, no shared cache
 * lines on the request path.  Readers (admin) sum the shards with relaxed loads.
 * Blocks are registered by name in a process-wide registry and survive config changes: asking
 * for an existing prefix returns the same block, so counters keep counting across updates.
 * Each rm_stats_get (or rm_stats_ref) is a reference; its owner drops it with rm_stats_release
 * when it goes away (a removed cluster, a freed listener config), and the last release takes
 * the block out of the registry (/stats no longer lists it) and frees its rows — a later
 * rm_stats_get of that prefix starts from zero, as Envoy does for a cluster or listener that is
 * removed and added again.  A block is kept by everyone who may still write it:
 *   - clusters, outlier detectors, circuit breakers, TLS contexts, listener drains: their own;
 *   - a config snapshot: each listener config holds listener.<addr>., its HCM http.<prefix>.
 *     and (with rds) http.<prefix>.rds.<name>.; each HTTP filter config holds its own block —
 *     all released when the snapshot's last reference frees the listener config;
 *   - an HTTP connection (proxy/http/hcm.c): its own references (rm_stats_ref) on the
 *     listener.* and http.* blocks it counted itself in at accept, since it decrements their
 *     gauges at close, after it may have moved to a newer snapshot; everything else it writes
 *     per stream goes through the snapshot the stream holds.
 *   Process-wide blocks (server., listener_manager., cluster_manager.) stay until
 *   rm_stats_free_all.
 *
 * Memory grows with what is written, not with the number of threads: a shard's row (the block's
 * slots for one thread, cache-line aligned) is allocated, zeroed, the first time that thread
 * writes the block, and published with an atomic pointer store; readers sum the rows that
 * exist.  A block nobody wrote costs its name and one pointer per shard; a cluster that only
 * the main thread touched (membership gauges) has one row.  The writer's fast path is one load
 * of the row pointer, a branch and a relaxed store. */
#ifndef RM_ADMIN_STATS_H
#define RM_ADMIN_STATS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RM_STATS_MAX_SHARDS 65 /* main thread (0) + up to 64 workers */

enum rm_stat_type { RM_COUNTER, RM_GAUGE };

struct rm_stat_def {
    const char *name; /* suffix after the block prefix, e.g. "upstream_rq_total" */
    enum rm_stat_type type;
};

/* The prefix of a block is its parent's (the longest registered prefix that ends at a '.' of
 * its own, if any) followed by <name>: "cluster.backend." + "circuit_breakers.default.".
 * Suffixes under a parent are interned (every cluster shares one "circuit_breakers.default."),
 * a prefix without a parent is stored in the block's own allocation. */
struct rm_stats {
    const struct rm_stat_def *defs;
    struct rm_stats *next;      /* registry list, in creation order */
    struct rm_stats *hash_next; /* registry hash chain */
    struct rm_stats **pprev;    /* registry list: what points at this block */
    struct rm_stats *parent;    /* NULL: <name> is the whole prefix (a child holds a count) */
    const char *name;
    /* references (0: released, kept only for its children).  Taken by rm_stats_get under the
     * registry mutex or by rm_stats_ref without it; dropped by rm_stats_release, without the
     * mutex unless it may be the last one: only 1 -> 0 happens under the mutex. */
    _Atomic size_t users;
    size_t children;   /* blocks whose parent this is */
    uint32_t hash;     /* of the whole prefix */
    uint16_t n;        /* stats in the block (defs[0..n)) */
    uint16_t n_shards; /* length of rows[] */
    /* rows[shard]: that shard's <n> slots, or NULL before the shard's first write.  A row,
     * once published, stays until the last rm_stats_release or rm_stats_free_all. */
    _Atomic(_Atomic int64_t *) rows[];
};

/** The shard of the calling thread: 0 for main, 1..N for workers.  Always below the
 *  rm_stats_set_shards() count. */
extern __thread unsigned rm_stats_shard;

/** Blocks created from now on have rows for shards 0..<n>-1 only (1 <= n <=
 *  RM_STATS_MAX_SHARDS; other values are clamped).  Call once the number of threads is known,
 *  before the blocks are made (remora: main + --concurrency workers); every thread that writes
 *  stats must then keep rm_stats_shard below <n>.  Default: RM_STATS_MAX_SHARDS. */
void rm_stats_set_shards(unsigned n);

/** Get or create the block "<prefix>" with these definitions (the same defs pointer must be
 *  used for a given prefix; at most 65535 stats), and take a reference on it.  Thread-safe;
 *  not for the request path (O(1) expected: hash lookups under a mutex).  A new block has no
 *  row.  Never NULL (aborts when out of memory). */
struct rm_stats *rm_stats_get(const char *prefix, const struct rm_stat_def *defs, unsigned n);
/** Take one more reference on <s>, on which the caller already holds one (a reference it owns
 *  or one whose owner it knows outlives this call: a snapshot it holds).  Lock-free (one
 *  atomic add: fit for the accept path); any thread.  Returns <s>; NULL gives NULL. */
struct rm_stats *rm_stats_ref(struct rm_stats *s);
/** Drop a reference taken by rm_stats_get or rm_stats_ref (any thread; lock-free unless it may
 *  be the last one, which takes the registry mutex).  The last
 *  one unlists the block and frees its rows (and the block, once no child block names it as
 *  its parent): the caller guarantees nobody writes or reads <s> any more — the owner of the
 *  reference must outlive every pointer to the block it handed out.  NULL is a no-op. */
void rm_stats_release(struct rm_stats *s);
/** Blocks in the registry, released ones kept for their children included (tests, memory
 *  accounting). */
size_t rm_stats_blocks(void);
/** References now held on <s> (tests). */
size_t rm_stats_users(const struct rm_stats *s);
/** Write the block's whole prefix into <buf> (snprintf-style: truncated to <len> - 1 and
 *  terminated when len > 0); returns its length. */
size_t rm_stats_prefix(const struct rm_stats *s, char *buf, size_t len);

/** Slow path of rm_stats_row: allocate shard <shard>'s row (zeroed) and publish it, unless
 *  another thread published one first (then that one is returned).  Any thread.  Aborts when
 *  out of memory. */
_Atomic int64_t *rm_stats_row_new(struct rm_stats *s, unsigned shard);

/** Shard <shard>'s row of <s>, created on first use.  Any thread. */
static inline _Atomic int64_t *rm_stats_row(struct rm_stats *s, unsigned shard)
{
    _Atomic int64_t *row = atomic_load_explicit(&s->rows[shard], memory_order_acquire);
    if (__builtin_expect(row == NULL, 0)) row = rm_stats_row_new(s, shard);
    return row;
}

/** Add <delta> to stat <idx> in the calling thread's shard (no other thread writes it, so a
 *  relaxed load and store suffice). */
static inline void rm_stat_add(struct rm_stats *s, unsigned idx, int64_t delta)
{
    _Atomic int64_t *p = &rm_stats_row(s, rm_stats_shard)[idx];
    atomic_store_explicit(p, atomic_load_explicit(p, memory_order_relaxed) + delta,
                          memory_order_relaxed);
}
static inline void rm_stat_inc(struct rm_stats *s, unsigned idx)
{
    rm_stat_add(s, idx, 1);
}
static inline void rm_stat_dec(struct rm_stats *s, unsigned idx)
{
    rm_stat_add(s, idx, -1);
}
/** Set a gauge owned by one thread (main): other shards are left alone, the calling thread's
 *  shard takes the difference (no row is created when it would hold 0). */
void rm_stat_set(struct rm_stats *s, unsigned idx, int64_t v);
/** Sum over the shards that have a row. */
int64_t rm_stat_value(const struct rm_stats *s, unsigned idx);
/** How many shards of <s> have a row (for tests and memory accounting). */
unsigned rm_stats_rows(const struct rm_stats *s);

/** Visit every stat of every block, in registry order; <fn> gets the full name. */
void rm_stats_foreach(void (*fn)(void *ctx, const char *full_name, enum rm_stat_type t,
                                 int64_t value),
                      void *ctx);
/** Free the registry (at exit): every block and row; rm_stats_set_shards goes back to its
 *  default. */
void rm_stats_free_all(void);

/* ---- the blocks remora uses --------------------------------------------------------------- */

enum rm_cluster_stat {
    RM_CS_UPSTREAM_RQ_TOTAL,
    RM_CS_UPSTREAM_RQ_ACTIVE,
    RM_CS_UPSTREAM_RQ_1XX,
    RM_CS_UPSTREAM_RQ_2XX,
    RM_CS_UPSTREAM_RQ_3XX,
    RM_CS_UPSTREAM_RQ_4XX,
    RM_CS_UPSTREAM_RQ_5XX,
    RM_CS_UPSTREAM_RQ_COMPLETED,
    RM_CS_UPSTREAM_RQ_PENDING_TOTAL,
    RM_CS_UPSTREAM_RQ_PENDING_ACTIVE,
    RM_CS_UPSTREAM_RQ_PENDING_OVERFLOW,
    RM_CS_UPSTREAM_RQ_PENDING_FAILURE_EJECT,
    RM_CS_UPSTREAM_RQ_TIMEOUT,
    RM_CS_UPSTREAM_RQ_PER_TRY_TIMEOUT,
    RM_CS_UPSTREAM_RQ_RX_RESET,
    RM_CS_UPSTREAM_RQ_TX_RESET,
    RM_CS_UPSTREAM_RQ_RETRY,
    RM_CS_UPSTREAM_RQ_RETRY_SUCCESS,
    RM_CS_UPSTREAM_RQ_RETRY_OVERFLOW,
    RM_CS_UPSTREAM_RQ_RETRY_LIMIT_EXCEEDED,
    RM_CS_UPSTREAM_CX_TOTAL,
    RM_CS_UPSTREAM_CX_ACTIVE,
    RM_CS_UPSTREAM_CX_HTTP1_TOTAL,
    RM_CS_UPSTREAM_CX_HTTP2_TOTAL,
    RM_CS_UPSTREAM_CX_CONNECT_FAIL,
    RM_CS_UPSTREAM_CX_CONNECT_TIMEOUT,
    RM_CS_UPSTREAM_CX_OVERFLOW,
    RM_CS_UPSTREAM_CX_DESTROY,
    RM_CS_UPSTREAM_CX_DESTROY_REMOTE,
    RM_CS_UPSTREAM_CX_DESTROY_LOCAL,
    RM_CS_UPSTREAM_CX_PROTOCOL_ERROR,
    RM_CS_UPSTREAM_CX_RX_BYTES_TOTAL,
    RM_CS_UPSTREAM_CX_TX_BYTES_TOTAL,
    RM_CS_UPSTREAM_CX_NONE_HEALTHY,
    RM_CS_MEMBERSHIP_TOTAL,
    RM_CS_MEMBERSHIP_HEALTHY,
    RM_CS_LB_HEALTHY_PANIC,
    /* circuit breaking, retries (router, pools) */
    RM_CS_UPSTREAM_CX_POOL_OVERFLOW,
    RM_CS_UPSTREAM_RQ_RETRY_BACKOFF_EXPONENTIAL,
    RM_CS_RETRY_OR_SHADOW_ABANDONED,
    RM_CS_UPSTREAM_RQ_PER_TRY_IDLE_TIMEOUT,
    /* membership updates (DNS clusters: proxy/upstream/dns_cluster.c; EDS: xds/ads_client.c) */
    RM_CS_UPDATE_ATTEMPT,
    RM_CS_UPDATE_SUCCESS,
    RM_CS_UPDATE_FAILURE,
    RM_CS_UPDATE_NO_REBUILD,
    RM_CS_UPDATE_REJECTED,
    RM_CS_HTTP2_RX_RESET,            /* RST_STREAM received from the upstream */
    RM_CS_HTTP2_TX_RESET,            /* RST_STREAM sent to the upstream */
    RM_CS_HTTP2_RX_MESSAGING_ERROR,  /* a response broke RFC 9113 section 8 (reset) */
    RM_CS_ORIGINAL_DST_HOST_INVALID, /* ORIGINAL_DST: an override header that is no ip:port */
    RM_CS__COUNT
};
extern const struct rm_stat_def rm_cluster_stat_defs[RM_CS__COUNT];

enum rm_http_stat {
    RM_HS_DOWNSTREAM_CX_TOTAL,
    RM_HS_DOWNSTREAM_CX_ACTIVE,
    RM_HS_DOWNSTREAM_CX_HTTP1_TOTAL,
    RM_HS_DOWNSTREAM_CX_HTTP1_ACTIVE,
    RM_HS_DOWNSTREAM_CX_HTTP2_TOTAL,
    RM_HS_DOWNSTREAM_CX_HTTP2_ACTIVE,
    RM_HS_DOWNSTREAM_CX_PROTOCOL_ERROR,
    RM_HS_DOWNSTREAM_CX_DESTROY,
    RM_HS_DOWNSTREAM_CX_RX_BYTES_TOTAL,
    RM_HS_DOWNSTREAM_CX_TX_BYTES_TOTAL,
    RM_HS_DOWNSTREAM_RQ_TOTAL,
    RM_HS_DOWNSTREAM_RQ_ACTIVE,
    RM_HS_DOWNSTREAM_RQ_HTTP1_TOTAL,
    RM_HS_DOWNSTREAM_RQ_HTTP2_TOTAL,
    RM_HS_DOWNSTREAM_RQ_1XX,
    RM_HS_DOWNSTREAM_RQ_2XX,
    RM_HS_DOWNSTREAM_RQ_3XX,
    RM_HS_DOWNSTREAM_RQ_4XX,
    RM_HS_DOWNSTREAM_RQ_5XX,
    RM_HS_DOWNSTREAM_RQ_COMPLETED,
    RM_HS_DOWNSTREAM_RQ_RX_RESET,
    RM_HS_DOWNSTREAM_RQ_TX_RESET,
    RM_HS_DOWNSTREAM_RQ_TIMEOUT,
    RM_HS_NO_ROUTE,
    RM_HS_NO_CLUSTER,
    RM_HS_RQ_DIRECT_RESPONSE,
    RM_HS_RQ_REDIRECT,
    /* timeouts (hcm_timeouts.c) */
    RM_HS_DOWNSTREAM_RQ_IDLE_TIMEOUT,
    RM_HS_DOWNSTREAM_RQ_MAX_DURATION_REACHED,
    RM_HS_DOWNSTREAM_CX_IDLE_TIMEOUT,
    RM_HS_DOWNSTREAM_CX_MAX_DURATION_REACHED,
    RM_HS_DOWNSTREAM_CX_MAX_REQUESTS_REACHED,
    RM_HS_HTTP1_DROPPED_HEADERS_WITH_UNDERSCORES,
    RM_HS_HTTP1_REQUESTS_REJECTED_WITH_UNDERSCORES,
    RM_HS_HTTP2_DROPPED_HEADERS_WITH_UNDERSCORES,
    RM_HS_HTTP2_REQUESTS_REJECTED_WITH_UNDERSCORES,
    RM_HS_HTTP2_RX_RESET,           /* RST_STREAM received from downstream */
    RM_HS_HTTP2_TX_RESET,           /* RST_STREAM sent downstream */
    RM_HS_HTTP2_RX_MESSAGING_ERROR, /* a request broke RFC 9113 section 8 (reset) */
    RM_HS_HTTP2_TRAILERS,           /* requests that carried trailers */
    RM_HS__COUNT
};
extern const struct rm_stat_def rm_http_stat_defs[RM_HS__COUNT];

enum rm_listener_stat {
    RM_LS_DOWNSTREAM_CX_TOTAL,
    RM_LS_DOWNSTREAM_CX_ACTIVE,
    RM_LS_DOWNSTREAM_CX_DESTROY,
    RM_LS_NO_FILTER_CHAIN_MATCH,     /* no chain matched and no default chain: closed */
    RM_LS_DOWNSTREAM_PRE_CX_ACTIVE,  /* connections whose first bytes are being looked at */
    RM_LS_DOWNSTREAM_PRE_CX_TIMEOUT, /* ... that sent too little in listener_filters_timeout */
    RM_LS_DOWNSTREAM_LISTENER_FILTER_REMOTE_CLOSE, /* ... closed by the peer meanwhile */
    RM_LS_DOWNSTREAM_LISTENER_FILTER_ERROR,        /* ... failed (a read error) */
    RM_LS__COUNT
};
extern const struct rm_stat_def rm_listener_stat_defs[RM_LS__COUNT];

/* tcp.<stat_prefix>.: a TCP proxy network filter (proxy/tcp/tcp_proxy.c) */
enum rm_tcp_stat {
    RM_TCP_DOWNSTREAM_CX_TOTAL,
    RM_TCP_DOWNSTREAM_CX_NO_ROUTE,
    RM_TCP_DOWNSTREAM_CX_TX_BYTES_TOTAL,
    RM_TCP_DOWNSTREAM_CX_RX_BYTES_TOTAL,
    RM_TCP_DOWNSTREAM_FLOW_CONTROL_PAUSED_READING_TOTAL,
    RM_TCP_DOWNSTREAM_FLOW_CONTROL_RESUMED_READING_TOTAL,
    RM_TCP_IDLE_TIMEOUT,
    RM_TCP_MAX_DOWNSTREAM_CONNECTION_DURATION,
    RM_TCP__COUNT
};
extern const struct rm_stat_def rm_tcp_stat_defs[RM_TCP__COUNT];

/* http.<stat_prefix>.rds.<route_config_name>.: RDS updates of a listener's routes (counted by
 * xds/xds_manager.c, held by the listener config: proxy/config/snapshot.h) */
enum rm_rds_stat {
    RM_RDS_UPDATE_ATTEMPT,
    RM_RDS_UPDATE_SUCCESS,
    RM_RDS_UPDATE_REJECTED,
    RM_RDS__COUNT
};
extern const struct rm_stat_def rm_rds_stat_defs[RM_RDS__COUNT];

/* listener_manager.*: LDS (xds/xds_manager.c) and the drain of removed listeners
 * (proxy/server/worker.c: total_listeners_draining) */
enum rm_listener_manager_stat {
    RM_LM_LDS_UPDATE_ATTEMPT,
    RM_LM_LDS_UPDATE_SUCCESS,
    RM_LM_LDS_UPDATE_REJECTED,
    RM_LM_LDS_VERSION,
    RM_LM_TOTAL_LISTENERS_ACTIVE,
    RM_LM_TOTAL_LISTENERS_WARMING,
    RM_LM_TOTAL_LISTENERS_DRAINING,
    RM_LM_LISTENER_ADDED,
    RM_LM_LISTENER_MODIFIED,
    RM_LM_LISTENER_REMOVED,
    RM_LM__COUNT
};
extern const struct rm_stat_def rm_listener_manager_stat_defs[RM_LM__COUNT];

enum rm_server_stat {
    RM_SS_UPTIME,
    RM_SS_LIVE,
    RM_SS_CONCURRENCY,
    RM_SS_MEMORY_ALLOCATED,
    RM_SS_TOTAL_CONNECTIONS,
    RM_SS_DAYS_UNTIL_FIRST_CERT_EXPIRING,
    RM_SS__COUNT
};
extern const struct rm_stat_def rm_server_stat_defs[RM_SS__COUNT];

#endif
