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
};

const struct rm_stat_def rm_listener_stat_defs[RM_LS__COUNT] = {
    [RM_LS_DOWNSTREAM_CX_TOTAL] = C("downstream_cx_total"),
    [RM_LS_DOWNSTREAM_CX_ACTIVE] = G("downstream_cx_active"),
    [RM_LS_DOWNSTREAM_CX_DESTROY] = C("downstream_cx_destroy"),
};

const struct rm_stat_def rm_server_stat_defs[RM_SS__COUNT] = {
    [RM_SS_UPTIME] = G("uptime"),
    [RM_SS_LIVE] = G("live"),
    [RM_SS_CONCURRENCY] = G("concurrency"),
    [RM_SS_MEMORY_ALLOCATED] = G("memory_allocated"),
    [RM_SS_TOTAL_CONNECTIONS] = G("total_connections"),
    [RM_SS_DAYS_UNTIL_FIRST_CERT_EXPIRING] = G("days_until_first_cert_expiring"),
};

struct rm_stats *rm_stats_get(const char *prefix, const struct rm_stat_def *defs, unsigned n)
{
    pthread_mutex_lock(&registry_lock);
    for (struct rm_stats *s = registry_head; s; s = s->next) {
        if (strcmp(s->prefix, prefix) == 0) {
            pthread_mutex_unlock(&registry_lock);
            return s;
        }
    }
    struct rm_stats *s = calloc(1, sizeof(*s));
    if (!s) abort();
    s->prefix = strdup(prefix);
    s->defs = defs;
    s->n = n;
    s->stride = (n + 7) & ~7u; /* 64-byte lines per shard */
    s->slots = calloc((size_t)RM_STATS_MAX_SHARDS * s->stride, sizeof(*s->slots));
    if (!s->prefix || !s->slots) abort();
    *registry_tail = s;
    registry_tail = &s->next;
    pthread_mutex_unlock(&registry_lock);
    return s;
}

void rm_stat_set(struct rm_stats *s, unsigned idx, int64_t v)
{
    int64_t others =
        rm_stat_value(s, idx) -
        atomic_load_explicit(&s->slots[rm_stats_shard * s->stride + idx], memory_order_relaxed);
    atomic_store_explicit(&s->slots[rm_stats_shard * s->stride + idx], v - others,
                          memory_order_relaxed);
}

int64_t rm_stat_value(const struct rm_stats *s, unsigned idx)
{
    int64_t sum = 0;
    for (unsigned i = 0; i < RM_STATS_MAX_SHARDS; i++)
        sum += atomic_load_explicit(&s->slots[i * s->stride + idx], memory_order_relaxed);
    return sum;
}

void rm_stats_foreach(void (*fn)(void *ctx, const char *full_name, enum rm_stat_type t,
                                 int64_t value),
                      void *ctx)
{
    char name[512];
    pthread_mutex_lock(&registry_lock);
    for (struct rm_stats *s = registry_head; s; s = s->next) {
        for (unsigned i = 0; i < s->n; i++) {
            snprintf(name, sizeof(name), "%s%s", s->prefix, s->defs[i].name);
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
        free(s->prefix);
        free(s->slots);
        free(s);
        s = next;
    }
    registry_head = NULL;
    registry_tail = &registry_head;
    pthread_mutex_unlock(&registry_lock);
}
