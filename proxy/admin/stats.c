#include "proxy/admin/stats.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__thread unsigned rm_stats_shard;

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct rm_stats *registry_head, **registry_tail = &registry_head;

#define C(n)                                                                                       \
    {                                                                                              \
        n, RM_COUNTER                                                                              \
    }
#define G(n)                                                                                       \
    {                                                                                              \
        n, RM_GAUGE                                                                                \
    }

const struct rm_stat_def rm_cluster_stat_defs[RM_CS__COUNT] = {
    [RM_CS_UPSTREAM_RQ_TOTAL] = C("upstream_rq_total"),
    [RM_CS_UPSTREAM_RQ_ACTIVE] = G("upstream_rq_active"),
    [RM_CS_UPSTREAM_RQ_1XX] = C("upstream_rq_1xx"),
    [RM_CS_UPSTREAM_RQ_2XX] = C("upstream_rq_2xx"),
    [RM_CS_UPSTREAM_RQ_3XX] = C("upstream_rq_3xx"),
    [RM_CS_UPSTREAM_RQ_4XX] = C("upstream_rq_4xx"),
    [RM_CS_UPSTREAM_RQ_5XX] = C("upstream_rq_5xx"),
    [RM_CS_UPSTREAM_RQ_COMPLETED] = C("upstream_rq_completed"),
    [RM_CS_UPSTREAM_RQ_PENDING_TOTAL] = C("upstream_rq_pending_total"),
    [RM_CS_UPSTREAM_RQ_PENDING_ACTIVE] = G("upstream_rq_pending_active"),
    [RM_CS_UPSTREAM_RQ_PENDING_OVERFLOW] = C("upstream_rq_pending_overflow"),
    [RM_CS_UPSTREAM_RQ_PENDING_FAILURE_EJECT] = C("upstream_rq_pending_failure_eject"),
    [RM_CS_UPSTREAM_RQ_TIMEOUT] = C("upstream_rq_timeout"),
    [RM_CS_UPSTREAM_RQ_PER_TRY_TIMEOUT] = C("upstream_rq_per_try_timeout"),
    [RM_CS_UPSTREAM_RQ_RX_RESET] = C("upstream_rq_rx_reset"),
    [RM_CS_UPSTREAM_RQ_TX_RESET] = C("upstream_rq_tx_reset"),
    [RM_CS_UPSTREAM_RQ_RETRY] = C("upstream_rq_retry"),
    [RM_CS_UPSTREAM_RQ_RETRY_SUCCESS] = C("upstream_rq_retry_success"),
    [RM_CS_UPSTREAM_RQ_RETRY_OVERFLOW] = C("upstream_rq_retry_overflow"),
    [RM_CS_UPSTREAM_RQ_RETRY_LIMIT_EXCEEDED] = C("upstream_rq_retry_limit_exceeded"),
    [RM_CS_UPSTREAM_CX_TOTAL] = C("upstream_cx_total"),
    [RM_CS_UPSTREAM_CX_ACTIVE] = G("upstream_cx_active"),
    [RM_CS_UPSTREAM_CX_HTTP1_TOTAL] = C("upstream_cx_http1_total"),
    [RM_CS_UPSTREAM_CX_HTTP2_TOTAL] = C("upstream_cx_http2_total"),
    [RM_CS_UPSTREAM_CX_CONNECT_FAIL] = C("upstream_cx_connect_fail"),
    [RM_CS_UPSTREAM_CX_CONNECT_TIMEOUT] = C("upstream_cx_connect_timeout"),
    [RM_CS_UPSTREAM_CX_OVERFLOW] = C("upstream_cx_overflow"),
    [RM_CS_UPSTREAM_CX_DESTROY] = C("upstream_cx_destroy"),
    [RM_CS_UPSTREAM_CX_DESTROY_REMOTE] = C("upstream_cx_destroy_remote"),
    [RM_CS_UPSTREAM_CX_DESTROY_LOCAL] = C("upstream_cx_destroy_local"),
    [RM_CS_UPSTREAM_CX_PROTOCOL_ERROR] = C("upstream_cx_protocol_error"),
    [RM_CS_UPSTREAM_CX_RX_BYTES_TOTAL] = C("upstream_cx_rx_bytes_total"),
    [RM_CS_UPSTREAM_CX_TX_BYTES_TOTAL] = C("upstream_cx_tx_bytes_total"),
    [RM_CS_UPSTREAM_CX_NONE_HEALTHY] = C("upstream_cx_none_healthy"),
    [RM_CS_MEMBERSHIP_TOTAL] = G("membership_total"),
    [RM_CS_MEMBERSHIP_HEALTHY] = G("membership_healthy"),
    [RM_CS_LB_HEALTHY_PANIC] = C("lb_healthy_panic"),
    [RM_CS_UPSTREAM_CX_POOL_OVERFLOW] = C("upstream_cx_pool_overflow"),
    [RM_CS_UPSTREAM_RQ_RETRY_BACKOFF_EXPONENTIAL] = C("upstream_rq_retry_backoff_exponential"),
    [RM_CS_RETRY_OR_SHADOW_ABANDONED] = C("retry_or_shadow_abandoned"),
    [RM_CS_UPSTREAM_RQ_PER_TRY_IDLE_TIMEOUT] = C("upstream_rq_per_try_idle_timeout"),
    [RM_CS_UPDATE_ATTEMPT] = C("update_attempt"),
    [RM_CS_UPDATE_SUCCESS] = C("update_success"),
    [RM_CS_UPDATE_FAILURE] = C("update_failure"),
    [RM_CS_UPDATE_NO_REBUILD] = C("update_no_rebuild"),
    [RM_CS_UPDATE_REJECTED] = C("update_rejected"),
    [RM_CS_HTTP2_RX_RESET] = C("http2.rx_reset"),
    [RM_CS_HTTP2_TX_RESET] = C("http2.tx_reset"),
    [RM_CS_HTTP2_RX_MESSAGING_ERROR] = C("http2.rx_messaging_error"),
    [RM_CS_ORIGINAL_DST_HOST_INVALID] = C("original_dst_host_invalid"),
};

const struct rm_stat_def rm_http_stat_defs[RM_HS__COUNT] = {
    [RM_HS_DOWNSTREAM_CX_TOTAL] = C("downstream_cx_total"),
    [RM_HS_DOWNSTREAM_CX_ACTIVE] = G("downstream_cx_active"),
    [RM_HS_DOWNSTREAM_CX_HTTP1_TOTAL] = C("downstream_cx_http1_total"),
    [RM_HS_DOWNSTREAM_CX_HTTP1_ACTIVE] = G("downstream_cx_http1_active"),
    [RM_HS_DOWNSTREAM_CX_HTTP2_TOTAL] = C("downstream_cx_http2_total"),
    [RM_HS_DOWNSTREAM_CX_HTTP2_ACTIVE] = G("downstream_cx_http2_active"),
    [RM_HS_DOWNSTREAM_CX_PROTOCOL_ERROR] = C("downstream_cx_protocol_error"),
    [RM_HS_DOWNSTREAM_CX_DESTROY] = C("downstream_cx_destroy"),
    [RM_HS_DOWNSTREAM_CX_RX_BYTES_TOTAL] = C("downstream_cx_rx_bytes_total"),
    [RM_HS_DOWNSTREAM_CX_TX_BYTES_TOTAL] = C("downstream_cx_tx_bytes_total"),
    [RM_HS_DOWNSTREAM_RQ_TOTAL] = C("downstream_rq_total"),
    [RM_HS_DOWNSTREAM_RQ_ACTIVE] = G("downstream_rq_active"),
    [RM_HS_DOWNSTREAM_RQ_HTTP1_TOTAL] = C("downstream_rq_http1_total"),
    [RM_HS_DOWNSTREAM_RQ_HTTP2_TOTAL] = C("downstream_rq_http2_total"),
    [RM_HS_DOWNSTREAM_RQ_1XX] = C("downstream_rq_1xx"),
    [RM_HS_DOWNSTREAM_RQ_2XX] = C("downstream_rq_2xx"),
    [RM_HS_DOWNSTREAM_RQ_3XX] = C("downstream_rq_3xx"),
    [RM_HS_DOWNSTREAM_RQ_4XX] = C("downstream_rq_4xx"),
    [RM_HS_DOWNSTREAM_RQ_5XX] = C("downstream_rq_5xx"),
    [RM_HS_DOWNSTREAM_RQ_COMPLETED] = C("downstream_rq_completed"),
    [RM_HS_DOWNSTREAM_RQ_RX_RESET] = C("downstream_rq_rx_reset"),
    [RM_HS_DOWNSTREAM_RQ_TX_RESET] = C("downstream_rq_tx_reset"),
    [RM_HS_DOWNSTREAM_RQ_TIMEOUT] = C("downstream_rq_timeout"),
    [RM_HS_NO_ROUTE] = C("no_route"),
    [RM_HS_NO_CLUSTER] = C("no_cluster"),
    [RM_HS_RQ_DIRECT_RESPONSE] = C("rq_direct_response"),
    [RM_HS_RQ_REDIRECT] = C("rq_redirect"),
    [RM_HS_DOWNSTREAM_RQ_IDLE_TIMEOUT] = C("downstream_rq_idle_timeout"),
    [RM_HS_DOWNSTREAM_RQ_MAX_DURATION_REACHED] = C("downstream_rq_max_duration_reached"),
    [RM_HS_DOWNSTREAM_CX_IDLE_TIMEOUT] = C("downstream_cx_idle_timeout"),
    [RM_HS_DOWNSTREAM_CX_MAX_DURATION_REACHED] = C("downstream_cx_max_duration_reached"),
    [RM_HS_DOWNSTREAM_CX_MAX_REQUESTS_REACHED] = C("downstream_cx_max_requests_reached"),
    [RM_HS_HTTP1_DROPPED_HEADERS_WITH_UNDERSCORES] = C("http1.dropped_headers_with_underscores"),
    [RM_HS_HTTP1_REQUESTS_REJECTED_WITH_UNDERSCORES] =
        C("http1.requests_rejected_with_underscores_in_headers"),
    [RM_HS_HTTP2_DROPPED_HEADERS_WITH_UNDERSCORES] = C("http2.dropped_headers_with_underscores"),
    [RM_HS_HTTP2_REQUESTS_REJECTED_WITH_UNDERSCORES] =
        C("http2.requests_rejected_with_underscores_in_headers"),
    [RM_HS_HTTP2_RX_RESET] = C("http2.rx_reset"),
    [RM_HS_HTTP2_TX_RESET] = C("http2.tx_reset"),
    [RM_HS_HTTP2_RX_MESSAGING_ERROR] = C("http2.rx_messaging_error"),
    [RM_HS_HTTP2_TRAILERS] = C("http2.trailers"),
};

const struct rm_stat_def rm_listener_stat_defs[RM_LS__COUNT] = {
    [RM_LS_DOWNSTREAM_CX_TOTAL] = C("downstream_cx_total"),
    [RM_LS_DOWNSTREAM_CX_ACTIVE] = G("downstream_cx_active"),
    [RM_LS_DOWNSTREAM_CX_DESTROY] = C("downstream_cx_destroy"),
    [RM_LS_NO_FILTER_CHAIN_MATCH] = C("no_filter_chain_match"),
    [RM_LS_DOWNSTREAM_PRE_CX_ACTIVE] = G("downstream_pre_cx_active"),
    [RM_LS_DOWNSTREAM_PRE_CX_TIMEOUT] = C("downstream_pre_cx_timeout"),
    [RM_LS_DOWNSTREAM_LISTENER_FILTER_REMOTE_CLOSE] = C("downstream_listener_filter_remote_close"),
    [RM_LS_DOWNSTREAM_LISTENER_FILTER_ERROR] = C("downstream_listener_filter_error"),
};

const struct rm_stat_def rm_tcp_stat_defs[RM_TCP__COUNT] = {
    [RM_TCP_DOWNSTREAM_CX_TOTAL] = C("downstream_cx_total"),
    [RM_TCP_DOWNSTREAM_CX_NO_ROUTE] = C("downstream_cx_no_route"),
    [RM_TCP_DOWNSTREAM_CX_TX_BYTES_TOTAL] = C("downstream_cx_tx_bytes_total"),
    [RM_TCP_DOWNSTREAM_CX_RX_BYTES_TOTAL] = C("downstream_cx_rx_bytes_total"),
    [RM_TCP_DOWNSTREAM_FLOW_CONTROL_PAUSED_READING_TOTAL] =
        C("downstream_flow_control_paused_reading_total"),
    [RM_TCP_DOWNSTREAM_FLOW_CONTROL_RESUMED_READING_TOTAL] =
        C("downstream_flow_control_resumed_reading_total"),
    [RM_TCP_IDLE_TIMEOUT] = C("idle_timeout"),
    [RM_TCP_MAX_DOWNSTREAM_CONNECTION_DURATION] = C("max_downstream_connection_duration"),
};

const struct rm_stat_def rm_rds_stat_defs[RM_RDS__COUNT] = {
    [RM_RDS_UPDATE_ATTEMPT] = C("update_attempt"),
    [RM_RDS_UPDATE_SUCCESS] = C("update_success"),
    [RM_RDS_UPDATE_REJECTED] = C("update_rejected"),
};

const struct rm_stat_def rm_listener_manager_stat_defs[RM_LM__COUNT] = {
    [RM_LM_LDS_UPDATE_ATTEMPT] = C("lds.update_attempt"),
    [RM_LM_LDS_UPDATE_SUCCESS] = C("lds.update_success"),
    [RM_LM_LDS_UPDATE_REJECTED] = C("lds.update_rejected"),
    [RM_LM_LDS_VERSION] = G("lds.version"),
    [RM_LM_TOTAL_LISTENERS_ACTIVE] = G("total_listeners_active"),
    [RM_LM_TOTAL_LISTENERS_WARMING] = G("total_listeners_warming"),
    [RM_LM_TOTAL_LISTENERS_DRAINING] = G("total_listeners_draining"),
    [RM_LM_LISTENER_ADDED] = C("listener_added"),
    [RM_LM_LISTENER_MODIFIED] = C("listener_modified"),
    [RM_LM_LISTENER_REMOVED] = C("listener_removed"),
};

const struct rm_stat_def rm_server_stat_defs[RM_SS__COUNT] = {
    [RM_SS_UPTIME] = G("uptime"),
    [RM_SS_LIVE] = G("live"),
    [RM_SS_CONCURRENCY] = G("concurrency"),
    [RM_SS_MEMORY_ALLOCATED] = G("memory_allocated"),
    [RM_SS_TOTAL_CONNECTIONS] = G("total_connections"),
    [RM_SS_DAYS_UNTIL_FIRST_CERT_EXPIRING] = G("days_until_first_cert_expiring"),
};

/* ---- registry ----------------------------------------------------------------------------- */

/* The blocks, in creation order (rm_stats_foreach) and in a chained hash table by prefix
 * (rm_stats_get is called once per cluster, listener and filter: a list scan made a 10,000
 * cluster config quadratic); the interned suffixes.  All under registry_lock. */
static struct rm_stats **buckets;
static size_t n_buckets, n_blocks;
static unsigned new_block_shards = RM_STATS_MAX_SHARDS;

struct interned {
    struct interned *next;
    uint32_t hash;
    char s[];
};
static struct interned **strs;
static size_t n_strs_buckets, n_strs;

void rm_stats_set_shards(unsigned n)
{
    pthread_mutex_lock(&registry_lock);
    new_block_shards = n < 1 ? 1 : n > RM_STATS_MAX_SHARDS ? RM_STATS_MAX_SHARDS : n;
    pthread_mutex_unlock(&registry_lock);
}

static uint32_t hash_mem(const char *p, size_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)p[i]) * 16777619u;
    return h;
}

/* Whether <str>[*off..len) starts with the whole prefix of <s>; *off moves past it. */
static bool match_at(const struct rm_stats *s, const char *str, size_t len, size_t *off)
{
    if (s->parent && !match_at(s->parent, str, len, off)) return false;
    size_t n = strlen(s->name);
    if (n > len - *off || memcmp(str + *off, s->name, n) != 0) return false;
    *off += n;
    return true;
}

size_t rm_stats_prefix(const struct rm_stats *s, char *buf, size_t len)
{
    size_t off = s->parent ? rm_stats_prefix(s->parent, buf, len) : 0;
    if (off < len) snprintf(buf + off, len - off, "%s", s->name);
    return off + strlen(s->name);
}

/* The block whose prefix is <str>[0..len), or NULL (released blocks kept for their children
 * included: rm_stats_get revives them). */
static struct rm_stats *lookup(const char *str, size_t len, uint32_t h)
{
    for (struct rm_stats *s = n_buckets ? buckets[h & (n_buckets - 1)] : NULL; s;
         s = s->hash_next) {
        size_t off = 0;
        if (s->hash == h && match_at(s, str, len, &off) && off == len) return s;
    }
    return NULL;
}

/* Twice the buckets of a table once it holds more entries than buckets. */
#define GROW(type, table, n_table, next_field)                                                     \
    do {                                                                                           \
        size_t n_ = n_table ? n_table * 2 : 256;                                                   \
        type **b_ = calloc(n_, sizeof(*b_));                                                       \
        if (!b_) abort();                                                                          \
        for (size_t i_ = 0; i_ < n_table; i_++) {                                                  \
            for (type *e_ = table[i_], *nx_; e_; e_ = nx_) {                                       \
                nx_ = e_->next_field;                                                              \
                e_->next_field = b_[e_->hash & (n_ - 1)];                                          \
                b_[e_->hash & (n_ - 1)] = e_;                                                      \
            }                                                                                      \
        }                                                                                          \
        free(table);                                                                               \
        table = b_;                                                                                \
        n_table = n_;                                                                              \
    } while (0)

/* The one copy of <s> (a suffix: a few distinct ones, each shared by many blocks). */
static const char *intern(const char *s)
{
    uint32_t h = hash_mem(s, strlen(s));
    for (struct interned *e = n_strs_buckets ? strs[h & (n_strs_buckets - 1)] : NULL; e;
         e = e->next) {
        if (e->hash == h && strcmp(e->s, s) == 0) return e->s;
    }
    if (n_strs >= n_strs_buckets) GROW(struct interned, strs, n_strs_buckets, next);
    size_t len = strlen(s) + 1;
    struct interned *e = malloc(sizeof(*e) + len);
    if (!e) abort();
    e->hash = h;
    memcpy(e->s, s, len);
    e->next = strs[h & (n_strs_buckets - 1)];
    strs[h & (n_strs_buckets - 1)] = e;
    n_strs++;
    return e->s;
}

/* The registered block whose prefix is the longest proper prefix of <prefix> ending at a '.'
 * (e.g. "cluster.backend." for "cluster.backend.circuit_breakers.default."), or NULL. */
static struct rm_stats *find_parent(const char *prefix, size_t len)
{
    for (size_t i = len > 1 ? len - 1 : 0; i-- > 0;) {
        if (prefix[i] != '.') continue;
        struct rm_stats *p = lookup(prefix, i + 1, hash_mem(prefix, i + 1));
        if (p) return p;
    }
    return NULL;
}

/* One allocation: the block, its row pointers, then (without a parent) the prefix. */
static struct rm_stats *block_new(const char *prefix, size_t len, uint32_t h,
                                  const struct rm_stat_def *defs, unsigned n)
{
    if (n > UINT16_MAX) abort();
    unsigned shards = new_block_shards;
    struct rm_stats *parent = find_parent(prefix, len);
    size_t head = sizeof(struct rm_stats) + shards * sizeof(_Atomic(_Atomic int64_t *));
    struct rm_stats *s = calloc(1, head + (parent ? 0 : len + 1));
    if (!s) abort();
    if (parent) {
        s->parent = parent;
        parent->children++;
        s->name = intern(prefix + rm_stats_prefix(parent, NULL, 0));
    } else {
        memcpy((char *)s + head, prefix, len + 1);
        s->name = (char *)s + head;
    }
    s->defs = defs;
    s->n = (uint16_t)n;
    s->n_shards = (uint16_t)shards;
    s->hash = h;
    atomic_init(&s->users, 0);
    for (unsigned i = 0; i < shards; i++)
        atomic_init(&s->rows[i], NULL);
    return s;
}

struct rm_stats *rm_stats_get(const char *prefix, const struct rm_stat_def *defs, unsigned n)
{
    size_t len = strlen(prefix);
    uint32_t h = hash_mem(prefix, len);
    pthread_mutex_lock(&registry_lock);
    struct rm_stats *s = lookup(prefix, len, h);
    if (!s) {
        s = block_new(prefix, len, h, defs, n);
        if (n_blocks >= n_buckets) GROW(struct rm_stats, buckets, n_buckets, hash_next);
        s->hash_next = buckets[h & (n_buckets - 1)];
        buckets[h & (n_buckets - 1)] = s;
        n_blocks++;
        s->pprev = registry_tail;
        *registry_tail = s;
        registry_tail = &s->next;
    }
    /* from 0: a released block its children kept revives, its rows gone (zero) */
    atomic_fetch_add_explicit(&s->users, 1, memory_order_relaxed);
    pthread_mutex_unlock(&registry_lock);
    return s;
}

/* Take <s> out of the registry and free it, then its parent if that was its last child and
 * it is released too.  Under registry_lock. */
static void block_free(struct rm_stats *s)
{
    while (s && atomic_load_explicit(&s->users, memory_order_relaxed) == 0 && s->children == 0) {
        struct rm_stats *parent = s->parent;
        struct rm_stats **pp = &buckets[s->hash & (n_buckets - 1)];
        while (*pp != s)
            pp = &(*pp)->hash_next;
        *pp = s->hash_next;
        *s->pprev = s->next;
        if (s->next)
            s->next->pprev = s->pprev;
        else
            registry_tail = s->pprev;
        n_blocks--;
        free(s); /* rows went with the last reference */
        if (parent) parent->children--;
        s = parent;
    }
}

struct rm_stats *rm_stats_ref(struct rm_stats *s)
{
    /* the caller's reference keeps users >= 1: no release can reach 0 meanwhile */
    if (s) atomic_fetch_add_explicit(&s->users, 1, memory_order_relaxed);
    return s;
}

/* Drop a reference that is not the last one, without the mutex: false when users is 1 (the
 * caller's may be the last: only the mutex holder may take 1 to 0, so that rm_stats_get, which
 * revives released blocks under the mutex, never sees a block being freed). */
static bool release_not_last(struct rm_stats *s)
{
    size_t v = atomic_load_explicit(&s->users, memory_order_relaxed);
    while (v > 1) {
        if (atomic_compare_exchange_weak_explicit(&s->users, &v, v - 1, memory_order_release,
                                                  memory_order_relaxed))
            return true;
    }
    return false;
}

void rm_stats_release(struct rm_stats *s)
{
    if (!s || release_not_last(s)) return;
    pthread_mutex_lock(&registry_lock);
    size_t was = atomic_fetch_sub_explicit(&s->users, 1, memory_order_acq_rel);
    if (was == 0) abort(); /* more releases than references: a use after free follows */
    if (was == 1) {
        for (unsigned i = 0; i < s->n_shards; i++)
            free(atomic_exchange_explicit(&s->rows[i], NULL, memory_order_acq_rel));
        block_free(s);
    }
    pthread_mutex_unlock(&registry_lock);
}

size_t rm_stats_users(const struct rm_stats *s)
{
    return atomic_load_explicit(&s->users, memory_order_relaxed);
}

size_t rm_stats_blocks(void)
{
    pthread_mutex_lock(&registry_lock);
    size_t n = n_blocks;
    pthread_mutex_unlock(&registry_lock);
    return n;
}

/* ---- rows --------------------------------------------------------------------------------- */

_Atomic int64_t *rm_stats_row_new(struct rm_stats *s, unsigned shard)
{
    if (shard >= s->n_shards) abort(); /* rm_stats_set_shards was given too few */
    size_t size = ((size_t)(s->n ? s->n : 1) * sizeof(int64_t) + 63) & ~(size_t)63;
    _Atomic int64_t *row = aligned_alloc(64, size); /* its own cache lines */
    if (!row) abort();
    for (size_t i = 0; i < size / sizeof(int64_t); i++)
        atomic_init(&row[i], 0);
    _Atomic int64_t *expected = NULL;
    if (atomic_compare_exchange_strong_explicit(&s->rows[shard], &expected, row,
                                                memory_order_acq_rel, memory_order_acquire))
        return row;
    free(row); /* another thread published this shard's row first (shard 0 of breaker gauges) */
    return expected;
}

static int64_t sum_except(const struct rm_stats *s, unsigned idx, unsigned skip)
{
    int64_t sum = 0;
    for (unsigned i = 0; i < s->n_shards; i++) {
        _Atomic int64_t *row = atomic_load_explicit(&s->rows[i], memory_order_acquire);
        if (row && i != skip) sum += atomic_load_explicit(&row[idx], memory_order_relaxed);
    }
    return sum;
}

void rm_stat_set(struct rm_stats *s, unsigned idx, int64_t v)
{
    unsigned me = rm_stats_shard;
    int64_t others = sum_except(s, idx, me);
    _Atomic int64_t *row = atomic_load_explicit(&s->rows[me], memory_order_acquire);
    if (!row && v == others) return; /* the shard would hold 0: no row needed */
    if (!row) row = rm_stats_row_new(s, me);
    atomic_store_explicit(&row[idx], v - others, memory_order_relaxed);
}

int64_t rm_stat_value(const struct rm_stats *s, unsigned idx)
{
    return sum_except(s, idx, UINT32_MAX);
}

unsigned rm_stats_rows(const struct rm_stats *s)
{
    unsigned n = 0;
    for (unsigned i = 0; i < s->n_shards; i++)
        n += atomic_load_explicit(&s->rows[i], memory_order_acquire) != NULL;
    return n;
}

void rm_stats_foreach(void (*fn)(void *ctx, const char *full_name, enum rm_stat_type t,
                                 int64_t value),
                      void *ctx)
{
    char prefix[512], name[600];
    pthread_mutex_lock(&registry_lock);
    for (struct rm_stats *s = registry_head; s; s = s->next) {
        if (!atomic_load_explicit(&s->users, memory_order_relaxed))
            continue; /* released: only its children use its name */
        if (s->n) rm_stats_prefix(s, prefix, sizeof(prefix));
        for (unsigned i = 0; i < s->n; i++) {
            snprintf(name, sizeof(name), "%s%s", prefix, s->defs[i].name);
            fn(ctx, name, s->defs[i].type, rm_stat_value(s, i));
        }
    }
    pthread_mutex_unlock(&registry_lock);
}

void rm_stats_free_all(void)
{
    pthread_mutex_lock(&registry_lock);
    struct rm_stats *s = registry_head;
    while (s) {
        struct rm_stats *next = s->next;
        for (unsigned i = 0; i < s->n_shards; i++)
            free(atomic_load_explicit(&s->rows[i], memory_order_relaxed));
        free(s);
        s = next;
    }
    registry_head = NULL;
    registry_tail = &registry_head;
    free(buckets);
    buckets = NULL;
    n_buckets = n_blocks = 0;
    for (size_t i = 0; i < n_strs_buckets; i++) {
        for (struct interned *e = strs[i], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    }
    free(strs);
    strs = NULL;
    n_strs_buckets = n_strs = 0;
    new_block_shards = RM_STATS_MAX_SHARDS;
    pthread_mutex_unlock(&registry_lock);
}
