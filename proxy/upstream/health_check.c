#include "proxy/upstream/health_check.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "envoy/config/core/v3/health_check.pb-c.h"
#include "proxy/config/pbutil.h"
#include "proxy/core/log.h"
#include "proxy/net/conn.h"
#include "proxy/net/tls.h"
#include "proxy/upstream/host.h"

typedef Envoy__Config__Core__V3__HealthCheck HealthCheck;
typedef Envoy__Config__Core__V3__HealthCheck__HttpHealthCheck HttpHealthCheck;
typedef Envoy__Config__Core__V3__HealthCheck__TcpHealthCheck TcpHealthCheck;
typedef Envoy__Config__Core__V3__HealthCheck__Payload Payload;

#define RM_HC_MAX_RESPONSE 16384 /* bytes read for a check's answer (HTTP headers, TCP data) */

/* clang-format off */
#define C(n) {n, RM_COUNTER}
#define G(n) {n, RM_GAUGE}
/* clang-format on */

/* Envoy's ALL_HEALTH_CHECKER_STATS, sorted by name as /stats prints them. */
const struct rm_stat_def rm_hc_stat_defs[RM_HC__COUNT] = {
    [RM_HC_ATTEMPT] = C("attempt"),
    [RM_HC_DEGRADED] = G("degraded"),
    [RM_HC_FAILURE] = C("failure"),
    [RM_HC_HEALTHY] = G("healthy"),
    [RM_HC_NETWORK_FAILURE] = C("network_failure"),
    [RM_HC_PASSIVE_FAILURE] = C("passive_failure"),
    [RM_HC_SUCCESS] = C("success"),
    [RM_HC_VERIFY_CLUSTER] = C("verify_cluster"),
};

/* ---- config -------------------------------------------------------------------------------- */

void rm_hc_config_dispose(struct rm_hc_config *cfg)
{
    free(cfg->host);
    free(cfg->path);
    free(cfg->service_name);
    for (size_t i = 0; i < cfg->n_add; i++) {
        free(cfg->add[i].name);
        free(cfg->add[i].value);
    }
    free(cfg->add);
    for (size_t i = 0; i < cfg->n_remove; i++)
        free(cfg->remove[i]);
    free(cfg->remove);
    free(cfg->expected);
    free(cfg->retriable);
    free(cfg->send.p);
    for (size_t i = 0; i < cfg->n_receive; i++)
        free(cfg->receive[i].p);
    free(cfg->receive);
    memset(cfg, 0, sizeof(*cfg));
}

/* A header name or value, host or path that can go on the wire as it is. */
static bool wire_safe(const char *s, bool name)
{
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch < 0x20 || ch == 0x7f) return false;
        if (name && (ch == ':' || ch == ' ' || ch >= 0x80)) return false;
    }
    return true;
}

static int parse_ranges(struct rm_hc_range **out, size_t *n_out,
                        Envoy__Type__V3__Int64Range *const *r, size_t n, const char *path,
                        struct rm_error *err)
{
    if (!n) return RM_OK;
    *out = calloc(n, sizeof(**out));
    if (!*out) return rm_error_set(err, "%s: out of memory", path);
    for (size_t i = 0; i < n; i++) {
        if (r[i]->start < 100 || r[i]->end > 600 || r[i]->start >= r[i]->end)
            return rm_error_set(err,
                                "%s[%zu]: a range [start, end) of statuses within [100, 600) "
                                "is required",
                                path, i);
        (*out)[i] = (struct rm_hc_range){r[i]->start, r[i]->end};
        (*n_out)++;
    }
    return RM_OK;
}

static int parse_headers(struct rm_hc_config *cfg, const HttpHealthCheck *h, const char *path,
                         struct rm_error *err)
{
    if (h->n_request_headers_to_add &&
        !(cfg->add = calloc(h->n_request_headers_to_add, sizeof(*cfg->add))))
        return rm_error_set(err, "%s: out of memory", path);
    for (size_t i = 0; i < h->n_request_headers_to_add; i++) {
        const Envoy__Config__Core__V3__HeaderValueOption *o = h->request_headers_to_add[i];
        const char *k = o->header ? o->header->key : "";
        const char *v = o->header ? o->header->value : "";
        if (!k[0] || !wire_safe(k, true) || !wire_safe(v, false))
            return rm_error_set(err,
                                "%s.request_headers_to_add[%zu].header: a header name (not a "
                                "pseudo-header) and a value without control characters are "
                                "required",
                                path, i);
        if (o->header->raw_value.len)
            return rm_error_set(err,
                                "%s.request_headers_to_add[%zu].header.raw_value: not supported "
                                "(use value)",
                                path, i);
        if (o->append_action !=
                ENVOY__CONFIG__CORE__V3__HEADER_VALUE_OPTION__HEADER_APPEND_ACTION__APPEND_IF_EXISTS_OR_ADD &&
            o->append_action !=
                ENVOY__CONFIG__CORE__V3__HEADER_VALUE_OPTION__HEADER_APPEND_ACTION__OVERWRITE_IF_EXISTS_OR_ADD)
            return rm_error_set(err,
                                "%s.request_headers_to_add[%zu].append_action: only "
                                "APPEND_IF_EXISTS_OR_ADD and OVERWRITE_IF_EXISTS_OR_ADD are "
                                "supported for health checks",
                                path, i);
        struct rm_hc_header *a = &cfg->add[cfg->n_add];
        a->name = strdup(k);
        a->value = strdup(v);
        cfg->n_add++;
        if (!a->name || !a->value) return rm_error_set(err, "%s: out of memory", path);
        for (char *p = a->name; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        a->append =
            o->append
                ? o->append->value
                : o->append_action ==
                      ENVOY__CONFIG__CORE__V3__HEADER_VALUE_OPTION__HEADER_APPEND_ACTION__APPEND_IF_EXISTS_OR_ADD;
    }
    if (h->n_request_headers_to_remove &&
        !(cfg->remove = calloc(h->n_request_headers_to_remove, sizeof(*cfg->remove))))
        return rm_error_set(err, "%s: out of memory", path);
    for (size_t i = 0; i < h->n_request_headers_to_remove; i++) {
        const char *k = h->request_headers_to_remove[i];
        if (!k[0] || !wire_safe(k, true))
            return rm_error_set(err, "%s.request_headers_to_remove[%zu]: not a header name", path,
                                i);
        if (!(cfg->remove[cfg->n_remove] = strdup(k)))
            return rm_error_set(err, "%s: out of memory", path);
        for (char *p = cfg->remove[cfg->n_remove]; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        cfg->n_remove++;
    }
    return RM_OK;
}

static int parse_http(struct rm_hc_config *cfg, const HttpHealthCheck *h, const char *cluster,
                      const char *path, struct rm_error *err)
{
    cfg->kind = RM_HC_HTTP;
    if (!h->path || !h->path[0] || !wire_safe(h->path, false) || strchr(h->path, ' '))
        return rm_error_set(err, "%s.path: a request path is required", path);
    const char *host = h->host && h->host[0] ? h->host : cluster;
    if (!wire_safe(host, false))
        return rm_error_set(err, "%s.host: control characters are not allowed", path);
    if (h->codec_client_type == ENVOY__TYPE__V3__CODEC_CLIENT_TYPE__HTTP3)
        return rm_error_set(err,
                            "%s.codec_client_type: HTTP3 is not supported by remora (HTTP1 or "
                            "HTTP2)",
                            path);
    cfg->http2 = h->codec_client_type == ENVOY__TYPE__V3__CODEC_CLIENT_TYPE__HTTP2;
    cfg->host = strdup(host);
    cfg->path = strdup(h->path);
    if (!cfg->host || !cfg->path) return rm_error_set(err, "%s: out of memory", path);
    char p[600];
    snprintf(p, sizeof(p), "%s.expected_statuses", path);
    if (parse_ranges(&cfg->expected, &cfg->n_expected, h->expected_statuses, h->n_expected_statuses,
                     p, err))
        return RM_ERR;
    if (!cfg->n_expected) { /* Envoy: 200 only */
        if (!(cfg->expected = calloc(1, sizeof(*cfg->expected))))
            return rm_error_set(err, "%s: out of memory", path);
        cfg->expected[0] = (struct rm_hc_range){200, 201};
        cfg->n_expected = 1;
    }
    snprintf(p, sizeof(p), "%s.retriable_statuses", path);
    if (parse_ranges(&cfg->retriable, &cfg->n_retriable, h->retriable_statuses,
                     h->n_retriable_statuses, p, err))
        return RM_ERR;
    return parse_headers(cfg, h, path, err);
}

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* A Payload: hex text (Envoy: "000000FF") or binary; empty is an error. */
static int parse_payload(const Payload *pl, struct rm_hc_bytes *out, const char *path,
                         struct rm_error *err)
{
    if (pl->payload_case == ENVOY__CONFIG__CORE__V3__HEALTH_CHECK__PAYLOAD__PAYLOAD_BINARY) {
        if (!pl->binary.len) return rm_error_set(err, "%s.binary: must not be empty", path);
        if (!(out->p = malloc(pl->binary.len))) return rm_error_set(err, "%s: out of memory", path);
        memcpy(out->p, pl->binary.data, pl->binary.len);
        out->n = pl->binary.len;
        return RM_OK;
    }
    const char *t = pl->payload_case == ENVOY__CONFIG__CORE__V3__HEALTH_CHECK__PAYLOAD__PAYLOAD_TEXT
                        ? pl->text
                        : "";
    size_t len = strlen(t);
    if (!len || len % 2)
        return rm_error_set(err, "%s.text: an even number of hex digits is required", path);
    if (!(out->p = malloc(len / 2))) return rm_error_set(err, "%s: out of memory", path);
    for (size_t i = 0; i < len; i += 2) {
        int hi = hexval(t[i]), lo = hexval(t[i + 1]);
        if (hi < 0 || lo < 0)
            return rm_error_set(err, "%s.text: \"%s\" is not hex-encoded", path, t);
        out->p[out->n++] = (uint8_t)(hi << 4 | lo);
    }
    return RM_OK;
}

static int parse_tcp(struct rm_hc_config *cfg, const TcpHealthCheck *t, const char *path,
                     struct rm_error *err)
{
    cfg->kind = RM_HC_TCP;
    char p[600];
    snprintf(p, sizeof(p), "%s.send", path);
    if (t->send && parse_payload(t->send, &cfg->send, p, err)) return RM_ERR;
    if (t->n_receive && !(cfg->receive = calloc(t->n_receive, sizeof(*cfg->receive))))
        return rm_error_set(err, "%s: out of memory", path);
    for (size_t i = 0; i < t->n_receive; i++) {
        snprintf(p, sizeof(p), "%s.receive[%zu]", path, i);
        cfg->n_receive++;
        if (parse_payload(t->receive[i], &cfg->receive[i], p, err)) return RM_ERR;
    }
    return RM_OK;
}

static int parse_grpc(struct rm_hc_config *cfg,
                      const Envoy__Config__Core__V3__HealthCheck__GrpcHealthCheck *g,
                      const char *cluster, const char *path, struct rm_error *err)
{
    cfg->kind = RM_HC_GRPC;
    cfg->http2 = true;
    const char *host = g->authority && g->authority[0] ? g->authority : cluster;
    if (!wire_safe(host, false))
        return rm_error_set(err, "%s.authority: control characters are not allowed", path);
    if (strlen(g->service_name) > 127) /* one length byte in the request */
        return rm_error_set(err, "%s.service_name: at most 127 bytes", path);
    cfg->host = strdup(host);
    cfg->path = strdup("/grpc.health.v1.Health/Check");
    cfg->service_name = strdup(g->service_name);
    if (!cfg->host || !cfg->path || !cfg->service_name)
        return rm_error_set(err, "%s: out of memory", path);
    return RM_OK;
}

/* A Duration that Envoy requires greater than 0 when set; *ms keeps its default when unset. */
static int positive_ms(const Google__Protobuf__Duration *d, const char *path, const char *name,
                       uint32_t *ms, struct rm_error *err)
{
    if (!d) return RM_OK;
    if (d->seconds < 0 || d->nanos < 0 || (d->seconds == 0 && d->nanos < 1000000))
        return rm_error_set(err, "%s.%s: must be at least 1ms", path, name);
    *ms = rm_pb_duration_ms(d, *ms);
    return RM_OK;
}

static int parse_times(struct rm_hc_config *cfg, const HealthCheck *pb, const char *path,
                       struct rm_error *err)
{
    if (!pb->timeout) return rm_error_set(err, "%s.timeout: required", path);
    if (!pb->interval) return rm_error_set(err, "%s.interval: required", path);
    cfg->no_traffic_interval_ms = 60000;
    if (positive_ms(pb->timeout, path, "timeout", &cfg->timeout_ms, err) ||
        positive_ms(pb->interval, path, "interval", &cfg->interval_ms, err) ||
        positive_ms(pb->no_traffic_interval, path, "no_traffic_interval",
                    &cfg->no_traffic_interval_ms, err) ||
        positive_ms(pb->no_traffic_healthy_interval, path, "no_traffic_healthy_interval",
                    &cfg->no_traffic_healthy_interval_ms, err))
        return RM_ERR;
    cfg->unhealthy_interval_ms = cfg->interval_ms;
    if (positive_ms(pb->unhealthy_interval, path, "unhealthy_interval", &cfg->unhealthy_interval_ms,
                    err))
        return RM_ERR;
    cfg->unhealthy_edge_interval_ms = cfg->unhealthy_interval_ms;
    cfg->healthy_edge_interval_ms = cfg->interval_ms;
    if (positive_ms(pb->unhealthy_edge_interval, path, "unhealthy_edge_interval",
                    &cfg->unhealthy_edge_interval_ms, err) ||
        positive_ms(pb->healthy_edge_interval, path, "healthy_edge_interval",
                    &cfg->healthy_edge_interval_ms, err))
        return RM_ERR;
    cfg->initial_jitter_ms = rm_pb_duration_ms(pb->initial_jitter, 0);
    cfg->interval_jitter_ms = rm_pb_duration_ms(pb->interval_jitter, 0);
    cfg->interval_jitter_percent = pb->interval_jitter_percent;
    return RM_OK;
}

int rm_hc_config_parse(const HealthCheck *pb, const char *cluster_name, const char *path,
                       struct rm_hc_config *cfg, struct rm_error *err)
{
    memset(cfg, 0, sizeof(*cfg));
    if (parse_times(cfg, pb, path, err)) goto fail;
    if (!pb->unhealthy_threshold) {
        rm_error_set(err, "%s.unhealthy_threshold: required", path);
        goto fail;
    }
    if (!pb->healthy_threshold) {
        rm_error_set(err, "%s.healthy_threshold: required", path);
        goto fail;
    }
    /* Envoy takes 0 as 1 (the first result or failure decides) */
    cfg->unhealthy_threshold = pb->unhealthy_threshold->value ? pb->unhealthy_threshold->value : 1;
    cfg->healthy_threshold = pb->healthy_threshold->value ? pb->healthy_threshold->value : 1;
    cfg->reuse_connection = rm_pb_bool(pb->reuse_connection, true);
    cfg->always_log_failures = pb->always_log_health_check_failures;
    char p[600];
    int rc;
    switch (pb->health_checker_case) {
    case ENVOY__CONFIG__CORE__V3__HEALTH_CHECK__HEALTH_CHECKER_HTTP_HEALTH_CHECK:
        snprintf(p, sizeof(p), "%s.http_health_check", path);
        rc = parse_http(cfg, pb->http_health_check, cluster_name, p, err);
        break;
    case ENVOY__CONFIG__CORE__V3__HEALTH_CHECK__HEALTH_CHECKER_TCP_HEALTH_CHECK:
        snprintf(p, sizeof(p), "%s.tcp_health_check", path);
        rc = parse_tcp(cfg, pb->tcp_health_check, p, err);
        break;
    case ENVOY__CONFIG__CORE__V3__HEALTH_CHECK__HEALTH_CHECKER_GRPC_HEALTH_CHECK:
        snprintf(p, sizeof(p), "%s.grpc_health_check", path);
        rc = parse_grpc(cfg, pb->grpc_health_check, cluster_name, p, err);
        break;
    default:
        rc = rm_error_set(err,
                          "%s: a health checker is required (http_health_check, "
                          "tcp_health_check or grpc_health_check)",
                          path);
        break;
    }
    if (rc == RM_OK) return RM_OK;
fail:
    rm_hc_config_dispose(cfg);
    return RM_ERR;
}

/* ---- the state machine --------------------------------------------------------------------- */

bool rm_hc_in_ranges(const struct rm_hc_range *r, size_t n, int64_t status)
{
    for (size_t i = 0; i < n; i++) {
        if (status >= r[i].start && status < r[i].end) return true;
    }
    return false;
}

bool rm_hc_tcp_match(const struct rm_hc_bytes *blocks, size_t n, const uint8_t *p, size_t len)
{
    for (size_t i = 0; i < n; i++) {
        const uint8_t *at = memmem(p, len, blocks[i].p, blocks[i].n);
        if (!at) return false;
        size_t skip = (size_t)(at - p) + blocks[i].n;
        p += skip;
        len -= skip;
    }
    return true;
}

static void flags_clear(_Atomic uint8_t *hc, unsigned f)
{
    atomic_fetch_and_explicit(hc, (uint8_t)~f, memory_order_relaxed);
}

static void flags_set(_Atomic uint8_t *hc, unsigned f)
{
    atomic_fetch_or_explicit(hc, (uint8_t)f, memory_order_relaxed);
}

static void count(struct rm_stats *stats, unsigned idx)
{
    if (stats) rm_stat_inc(stats, idx);
}

/* Envoy's handleSuccess / setUnhealthy: the first result decides alone; then the thresholds;
 * an active failure that is not retriable marks the host unhealthy at once. */
enum rm_hc_transition rm_hc_apply(const struct rm_hc_config *cfg, struct rm_hc_state *st,
                                  _Atomic uint8_t *hc, enum rm_hc_result r, struct rm_stats *stats,
                                  bool *pending_cleared)
{
    enum rm_hc_transition t = RM_HC_UNCHANGED;
    bool failed = atomic_load_explicit(hc, memory_order_relaxed) & RM_HOST_FAILED_ACTIVE_HC;
    if (r == RM_HC_RESULT_SUCCESS) {
        st->n_unhealthy = 0;
        if (failed) {
            if (st->first_check || ++st->n_healthy >= cfg->healthy_threshold) {
                flags_clear(hc, RM_HOST_FAILED_ACTIVE_HC | RM_HOST_ACTIVE_HC_TIMEOUT);
                st->n_healthy = 0;
                t = RM_HC_CHANGED;
            } else {
                t = RM_HC_CHANGE_PENDING;
            }
        }
        count(stats, RM_HC_SUCCESS);
    } else {
        st->n_healthy = 0;
        if (!failed) {
            if (r == RM_HC_RESULT_FAILED || ++st->n_unhealthy >= cfg->unhealthy_threshold) {
                flags_set(hc, RM_HOST_FAILED_ACTIVE_HC);
                st->n_unhealthy = 0;
                t = RM_HC_CHANGED;
            } else {
                t = RM_HC_CHANGE_PENDING;
            }
        }
        unsigned now = atomic_load_explicit(hc, memory_order_relaxed);
        if (r == RM_HC_RESULT_TIMEOUT && (now & RM_HOST_FAILED_ACTIVE_HC))
            flags_set(hc, RM_HOST_ACTIVE_HC_TIMEOUT);
        else
            flags_clear(hc, RM_HOST_ACTIVE_HC_TIMEOUT);
        count(stats, RM_HC_FAILURE);
        if (r == RM_HC_RESULT_NETWORK || r == RM_HC_RESULT_TIMEOUT)
            count(stats, RM_HC_NETWORK_FAILURE);
    }
    bool pending = atomic_load_explicit(hc, memory_order_relaxed) & RM_HOST_PENDING_ACTIVE_HC;
    if (pending) {
        flags_clear(hc, RM_HOST_PENDING_ACTIVE_HC);
        t = RM_HC_CHANGED; /* the excluded hosts change */
    }
    if (pending_cleared) *pending_cleared = pending;
    st->first_check = false;
    return t;
}

uint64_t rm_hc_interval(const struct rm_hc_config *cfg, bool traffic, bool success,
                        enum rm_hc_transition t, bool healthy, uint64_t rnd)
{
    uint64_t base;
    if (!traffic)
        base = healthy && cfg->no_traffic_healthy_interval_ms ? cfg->no_traffic_healthy_interval_ms
                                                              : cfg->no_traffic_interval_ms;
    else if (!success)
        base = t == RM_HC_CHANGE_PENDING ? cfg->unhealthy_edge_interval_ms
                                         : cfg->unhealthy_interval_ms;
    else
        base = t == RM_HC_CHANGE_PENDING ? cfg->healthy_edge_interval_ms : cfg->interval_ms;
    uint64_t ms = base;
    uint64_t pct = (uint64_t)cfg->interval_jitter_percent * base / 100;
    if (pct) ms += rnd % pct;
    if (cfg->interval_jitter_ms) ms += (rnd >> 20) % cfg->interval_jitter_ms;
    return ms;
}

/* ---- the checker ---------------------------------------------------------------------------- */

struct rm_hc_session {
    struct rm_health_checker *hc;
    struct rm_host *host; /* a reference */
    struct rm_hc_state st;
    struct rm_timer interval_timer, timeout_timer;
    struct rm_conn *conn; /* NULL between checks unless kept (reuse_connection) */
    bool in_check;        /* a check runs: its result is not in yet */
    bool connected;       /* conn finished its connect and handshake */
    bool expect_close;    /* the next close of conn is ours */
    bool mark;            /* scratch of rm_health_checker_set_hosts */
    size_t body_left;     /* HTTP: body bytes of the answer still to read */
    bool close_after;     /* HTTP: the answer ends with the connection */
    /* HTTP/2 and gRPC: the session over conn (NULL without), the check's stream and answer */
    nghttp2_session *h2;
    bool in_h2;      /* inside nghttp2_session_mem_recv: the session is freed after it */
    int32_t stream;  /* 0: none */
    int status;      /* :status (0: none yet) */
    int grpc_status; /* -1: none yet */
    size_t msg_len;  /* gRPC: bytes of the answer's first message kept in msg */
    uint8_t msg[32];
};

struct rm_health_checker {
    struct rm_hc_config cfg;
    struct rm_loop *loop; /* NULL while stopped */
    struct rm_stats *stats;
    struct rm_stats *cluster_stats; /* borrowed */
    struct rm_tls_ctx *tls;         /* a reference, or NULL */
    struct rm_hc_session **s;       /* one per host, in no particular order */
    size_t n;
    rm_hc_change_fn on_change;
    void *ctx;
    uint64_t rng;
    char *request; /* HTTP: the request, built once */
    size_t request_len;
};

static uint64_t hc_random(struct rm_health_checker *hc)
{
    uint64_t x = hc->rng; /* xorshift64* */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    hc->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static bool host_healthy(const struct rm_host *h)
{
    return !(rm_host_hc_flags(h) & RM_HOST_FAILED_ACTIVE_HC);
}

static void recount(struct rm_health_checker *hc)
{
    int64_t healthy = 0;
    for (size_t i = 0; i < hc->n; i++)
        healthy += host_healthy(hc->s[i]->host);
    rm_stat_set(hc->stats, RM_HC_HEALTHY, healthy);
}

static void h2_free(struct rm_hc_session *s)
{
    if (!s->h2 || s->in_h2) return; /* after mem_recv returns */
    nghttp2_session_del(s->h2);
    s->h2 = NULL;
    s->stream = 0;
}

static void close_conn(struct rm_hc_session *s)
{
    h2_free(s);
    if (!s->conn) return;
    rm_conn_close(s->conn);
    s->conn = NULL;
    s->connected = false;
}

static void on_interval(struct rm_timer *t);

static void finish(struct rm_hc_session *s, enum rm_hc_result r)
{
    struct rm_health_checker *hc = s->hc;
    if (!s->in_check) return;
    s->in_check = false;
    rm_timer_stop(hc->loop, &s->timeout_timer);
    bool was_healthy = host_healthy(s->host), pending_cleared;
    enum rm_hc_transition t =
        rm_hc_apply(&hc->cfg, &s->st, &s->host->hc, r, hc->stats, &pending_cleared);
    bool healthy = host_healthy(s->host);
    if (r != RM_HC_RESULT_SUCCESS && (hc->cfg.always_log_failures || was_healthy))
        rm_log_info("health check of %s failed (%s)", s->host->addr_str,
                    r == RM_HC_RESULT_NETWORK   ? "network"
                    : r == RM_HC_RESULT_TIMEOUT ? "timeout"
                                                : "unexpected answer");
    if (healthy != was_healthy)
        rm_log_info("health check: host %s is now %s", s->host->addr_str,
                    healthy ? "healthy" : "unhealthy");
    if (t == RM_HC_CHANGED || pending_cleared) {
        recount(hc);
        if (hc->on_change) hc->on_change(hc->ctx);
    }
    if (r == RM_HC_RESULT_NETWORK || r == RM_HC_RESULT_TIMEOUT || !hc->cfg.reuse_connection ||
        s->close_after)
        close_conn(s);
    bool traffic = rm_stat_value(hc->cluster_stats, RM_CS_UPSTREAM_CX_TOTAL) > 0;
    uint64_t ms =
        rm_hc_interval(&hc->cfg, traffic, r == RM_HC_RESULT_SUCCESS, t, healthy, hc_random(hc));
    rm_timer_start(hc->loop, &s->interval_timer, ms, on_interval);
}

static void on_timeout(struct rm_timer *t)
{
    struct rm_hc_session *s = rm_container_of(t, struct rm_hc_session, timeout_timer);
    close_conn(s);
    finish(s, RM_HC_RESULT_TIMEOUT);
}

/* HTTP/1.1: the status and what says where the answer ends, once the headers are in.  Returns
 * the header block's length, 0 when incomplete, -1 when malformed. */
static long parse_h1_head(struct rm_hc_session *s, const uint8_t *p, size_t n, int *status)
{
    const uint8_t *end = memmem(p, n, "\r\n\r\n", 4);
    if (!end) return 0;
    size_t hlen = (size_t)(end - p) + 4;
    if (hlen < 12 || memcmp(p, "HTTP/1.", 7) != 0 || p[8] != ' ' || !isdigit(p[9]) ||
        !isdigit(p[10]) || !isdigit(p[11]))
        return -1;
    *status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    bool has_length = false;
    s->body_left = 0;
    s->close_after = p[7] == '0'; /* HTTP/1.0 */
    const uint8_t *line = memchr(p, '\n', hlen) + 1;
    while (line < p + hlen - 2) {
        const uint8_t *eol = memchr(line, '\n', (size_t)(p + hlen - line));
        size_t len = (size_t)(eol - line);
        if (len >= 15 && strncasecmp((const char *)line, "content-length:", 15) == 0) {
            s->body_left = strtoul((const char *)line + 15, NULL, 10);
            has_length = true;
        } else if (len >= 18 && strncasecmp((const char *)line, "transfer-encoding:", 18) == 0) {
            s->close_after = true; /* chunked: not read, the connection goes */
        } else if (len >= 11 && strncasecmp((const char *)line, "connection:", 11) == 0 &&
                   memmem(line, len, "close", 5)) {
            s->close_after = true;
        }
        line = eol + 1;
    }
    if (!has_length && *status != 204 && *status != 304) s->close_after = true;
    return (long)hlen;
}

static size_t on_http_data(struct rm_hc_session *s, const uint8_t *p, size_t n)
{
    if (!s->in_check) { /* the rest of the last answer's body, else unsolicited bytes */
        size_t take = n < s->body_left ? n : s->body_left;
        s->body_left -= take;
        if (take < n) close_conn(s);
        return n;
    }
    int status = 0;
    long hlen = parse_h1_head(s, p, n, &status);
    if (hlen == 0) {
        if (n < RM_HC_MAX_RESPONSE) return 0;
        hlen = -1;
    }
    if (hlen < 0 || status < 200) { /* 1xx answers are not expected from a GET */
        close_conn(s);
        finish(s, RM_HC_RESULT_NETWORK);
        return n;
    }
    const struct rm_hc_config *cfg = &s->hc->cfg;
    enum rm_hc_result r = RM_HC_RESULT_SUCCESS;
    if (!rm_hc_in_ranges(cfg->expected, cfg->n_expected, status))
        r = rm_hc_in_ranges(cfg->retriable, cfg->n_retriable, status) ? RM_HC_RESULT_RETRIABLE
                                                                      : RM_HC_RESULT_FAILED;
    size_t body = n - (size_t)hlen; /* the rest of the body is read between checks */
    s->body_left = body < s->body_left ? s->body_left - body : 0;
    finish(s, r);
    return n;
}

static size_t on_tcp_data(struct rm_hc_session *s, const uint8_t *p, size_t n)
{
    const struct rm_hc_config *cfg = &s->hc->cfg;
    if (!s->in_check || !cfg->n_receive) return n; /* Envoy drains what it does not wait for */
    if (rm_hc_tcp_match(cfg->receive, cfg->n_receive, p, n)) {
        finish(s, RM_HC_RESULT_SUCCESS);
        return n;
    }
    if (n < RM_HC_MAX_RESPONSE) return 0; /* wait for more */
    close_conn(s);
    finish(s, RM_HC_RESULT_FAILED);
    return n;
}

/* ---- HTTP/2 and gRPC ---- */

static bool removed(const struct rm_hc_config *cfg, const char *name);
static bool replaced(const struct rm_hc_config *cfg, const char *name);

static int h2_on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name,
                        size_t nlen, const uint8_t *value, size_t vlen, uint8_t flags, void *ud)
{
    struct rm_hc_session *s = ud;
    if (f->hd.stream_id != s->stream) return 0;
    char v[16];
    size_t k = vlen < sizeof(v) - 1 ? vlen : sizeof(v) - 1;
    memcpy(v, value, k);
    v[k] = 0;
    if (nlen == 7 && memcmp(name, ":status", 7) == 0) s->status = atoi(v);
    if (nlen == 11 && memcmp(name, "grpc-status", 11) == 0) s->grpc_status = atoi(v);
    return 0;
}

static int h2_on_data(nghttp2_session *ng, uint8_t flags, int32_t stream, const uint8_t *p,
                      size_t n, void *ud)
{
    struct rm_hc_session *s = ud;
    if (stream != s->stream) return 0;
    size_t room = sizeof(s->msg) - s->msg_len, k = n < room ? n : room;
    memcpy(s->msg + s->msg_len, p, k);
    s->msg_len += k;
    return 0;
}

/* grpc.health.v1.HealthCheckResponse in the first message of the answer: status (field 1) is
 * SERVING (1).  Larger or compressed messages do not pass. */
static bool grpc_serving(const struct rm_hc_session *s)
{
    if (s->msg_len < 5 || s->msg[0] != 0) return false;
    uint32_t len = (uint32_t)s->msg[1] << 24 | (uint32_t)s->msg[2] << 16 |
                   (uint32_t)s->msg[3] << 8 | s->msg[4];
    if (len > s->msg_len - 5) return false;
    int64_t status = 0; /* UNKNOWN */
    for (size_t i = 5; i < 5 + len;) {
        uint8_t tag = s->msg[i++];
        uint64_t v = 0;
        for (int shift = 0; i < 5 + len && shift < 64; shift += 7) {
            uint8_t b = s->msg[i++];
            v |= (uint64_t)(b & 0x7f) << shift;
            if (!(b & 0x80)) break;
        }
        if ((tag & 7) != 0) return false; /* only varints in this message */
        if (tag >> 3 == 1) status = (int64_t)v;
    }
    return status == 1;
}

static enum rm_hc_result h2_result(const struct rm_hc_session *s, uint32_t error_code)
{
    const struct rm_hc_config *cfg = &s->hc->cfg;
    if (error_code || !s->status) return RM_HC_RESULT_NETWORK; /* reset */
    if (cfg->kind == RM_HC_GRPC)
        return s->status == 200 && s->grpc_status == 0 && grpc_serving(s) ? RM_HC_RESULT_SUCCESS
                                                                          : RM_HC_RESULT_FAILED;
    if (rm_hc_in_ranges(cfg->expected, cfg->n_expected, s->status)) return RM_HC_RESULT_SUCCESS;
    return rm_hc_in_ranges(cfg->retriable, cfg->n_retriable, s->status) ? RM_HC_RESULT_RETRIABLE
                                                                        : RM_HC_RESULT_FAILED;
}

static int h2_on_close(nghttp2_session *ng, int32_t stream, uint32_t error_code, void *ud)
{
    struct rm_hc_session *s = ud;
    if (stream != s->stream) return 0;
    s->stream = 0;
    finish(s, h2_result(s, error_code));
    return 0;
}

static void h2_flush(struct rm_hc_session *s)
{
    const uint8_t *p;
    ssize_t n;
    while (s->conn && s->h2 && (n = nghttp2_session_mem_send(s->h2, &p)) > 0)
        rm_conn_write(s->conn, p, (size_t)n);
}

static size_t on_h2_data(struct rm_hc_session *s, const uint8_t *p, size_t n)
{
    if (!s->h2) return n;
    s->in_h2 = true;
    ssize_t rv = nghttp2_session_mem_recv(s->h2, p, n);
    s->in_h2 = false;
    if (rv < 0 || !s->conn) { /* a protocol error, or finish() closed the connection */
        close_conn(s);
        finish(s, RM_HC_RESULT_NETWORK); /* no-op when the check is over */
        return n;
    }
    h2_flush(s);
    return n;
}

static int h2_start(struct rm_hc_session *s)
{
    nghttp2_session_callbacks *cb;
    if (nghttp2_session_callbacks_new(&cb)) return RM_ERR;
    nghttp2_session_callbacks_set_on_header_callback(cb, h2_on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, h2_on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, h2_on_close);
    int rc = nghttp2_session_client_new(&s->h2, cb, s);
    nghttp2_session_callbacks_del(cb);
    if (rc) return RM_ERR;
    nghttp2_submit_settings(s->h2, NGHTTP2_FLAG_NONE, NULL, 0);
    return RM_OK;
}

/* The gRPC request body: one uncompressed HealthCheckRequest{service}. */
static ssize_t grpc_body(nghttp2_session *ng, int32_t stream, uint8_t *buf, size_t len,
                         uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    struct rm_hc_session *s = ud;
    const char *svc = s->hc->cfg.service_name;
    size_t sl = strlen(svc), ml = sl ? 2 + sl : 0;
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (len < 5 + ml) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    uint8_t *p = buf;
    *p++ = 0;
    *p++ = 0;
    *p++ = 0;
    *p++ = 0;
    *p++ = (uint8_t)ml;
    if (sl) {
        *p++ = 0x0a; /* field 1, length-delimited */
        *p++ = (uint8_t)sl;
        memcpy(p, svc, sl);
    }
    return (ssize_t)(5 + ml);
}

#define NV(n, v)                                                                                   \
    (nghttp2_nv)                                                                                   \
    {                                                                                              \
        (uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE                 \
    }

static void h2_send_check(struct rm_hc_session *s)
{
    const struct rm_hc_config *cfg = &s->hc->cfg;
    bool grpc = cfg->kind == RM_HC_GRPC;
    nghttp2_nv *nv = malloc((8 + cfg->n_add) * sizeof(*nv));
    size_t n = 0;
    if (!nv) {
        close_conn(s);
        finish(s, RM_HC_RESULT_NETWORK);
        return;
    }
    nv[n++] = NV(":method", grpc ? "POST" : "GET");
    nv[n++] = NV(":scheme", cfg->tls ? "https" : "http");
    nv[n++] = NV(":authority", cfg->host);
    nv[n++] = NV(":path", cfg->path);
    if (grpc) {
        nv[n++] = NV("content-type", "application/grpc");
        nv[n++] = NV("te", "trailers");
    } else if (!removed(cfg, "user-agent") && !replaced(cfg, "user-agent")) {
        nv[n++] = NV("user-agent", "Envoy/HC");
    }
    for (size_t i = 0; !grpc && i < cfg->n_add; i++) {
        if (!removed(cfg, cfg->add[i].name) && strcmp(cfg->add[i].name, "host") != 0)
            nv[n++] = NV(cfg->add[i].name, cfg->add[i].value);
    }
    nghttp2_data_provider body = {.read_callback = grpc_body};
    s->status = 0;
    s->grpc_status = -1;
    s->msg_len = 0;
    s->stream = nghttp2_submit_request(s->h2, NULL, nv, n, grpc ? &body : NULL, NULL);
    free(nv);
    if (s->stream < 0) {
        s->stream = 0;
        close_conn(s);
        finish(s, RM_HC_RESULT_NETWORK);
        return;
    }
    h2_flush(s);
}

static size_t on_conn_data(struct rm_conn *c, const uint8_t *p, size_t n)
{
    struct rm_hc_session *s = c->owner;
    if (s->hc->cfg.http2) return on_h2_data(s, p, n);
    return s->hc->cfg.kind == RM_HC_HTTP ? on_http_data(s, p, n) : on_tcp_data(s, p, n);
}

static void send_check(struct rm_hc_session *s)
{
    struct rm_health_checker *hc = s->hc;
    if (hc->cfg.http2) {
        if (!s->h2 && h2_start(s)) {
            close_conn(s);
            finish(s, RM_HC_RESULT_NETWORK);
            return;
        }
        h2_send_check(s);
        return;
    }
    if (hc->cfg.kind == RM_HC_HTTP) {
        rm_conn_write(s->conn, hc->request, hc->request_len);
        return;
    }
    if (hc->cfg.send.n) rm_conn_write(s->conn, hc->cfg.send.p, hc->cfg.send.n);
    if (!hc->cfg.n_receive) finish(s, RM_HC_RESULT_SUCCESS); /* connect-only, or send-only */
}

static void on_conn_connected(struct rm_conn *c, int err)
{
    struct rm_hc_session *s = c->owner;
    if (err) { /* the conn closed itself */
        s->conn = NULL;
        finish(s, RM_HC_RESULT_NETWORK);
        return;
    }
    s->connected = true;
    send_check(s);
}

static void on_conn_close(struct rm_conn *c, int err)
{
    struct rm_hc_session *s = c->owner;
    (void)err;
    s->conn = NULL;
    s->connected = false;
    finish(s, RM_HC_RESULT_NETWORK); /* no-op between checks */
}

static const struct rm_conn_handler hc_conn_handler = {
    .on_connected = on_conn_connected,
    .on_data = on_conn_data,
    .on_close = on_conn_close,
};

static void start_check(struct rm_hc_session *s)
{
    struct rm_health_checker *hc = s->hc;
    rm_stat_inc(hc->stats, RM_HC_ATTEMPT);
    s->in_check = true;
    s->close_after = false;
    rm_timer_start(hc->loop, &s->timeout_timer, hc->cfg.timeout_ms, on_timeout);
    if (s->conn && s->connected && !s->body_left &&
        (!s->h2 || (nghttp2_session_want_read(s->h2) && !s->stream))) {
        send_check(s);
        return;
    }
    close_conn(s);
    s->body_left = 0;
    socklen_t len;
    const struct sockaddr *sa = rm_host_sockaddr(s->host, &len);
    int err = 0;
    s->conn =
        rm_conn_connect(hc->loop, sa, len, hc->cfg.connect_timeout_ms, &hc_conn_handler, s, &err);
    if (s->conn && hc->tls) {
        const char *alpn = hc->cfg.http2 ? RM_TLS_ALPN_H2 : RM_TLS_ALPN_HTTP11;
        if (rm_conn_start_tls(s->conn, hc->tls, alpn, strlen(alpn), 0) < 0) close_conn(s);
    }
    if (!s->conn) finish(s, RM_HC_RESULT_NETWORK);
}

static void on_interval(struct rm_timer *t)
{
    start_check(rm_container_of(t, struct rm_hc_session, interval_timer));
}

static void session_arm(struct rm_hc_session *s)
{
    struct rm_health_checker *hc = s->hc;
    uint64_t ms = hc->cfg.initial_jitter_ms ? hc_random(hc) % hc->cfg.initial_jitter_ms : 0;
    rm_timer_start(hc->loop, &s->interval_timer, ms, on_interval);
}

static void session_stop(struct rm_hc_session *s)
{
    struct rm_loop *loop = s->hc->loop;
    if (loop) {
        rm_timer_stop(loop, &s->interval_timer);
        rm_timer_stop(loop, &s->timeout_timer);
    }
    s->in_check = false;
    close_conn(s);
}

static void session_free(struct rm_hc_session *s)
{
    if (!s) return;
    session_stop(s);
    rm_host_unref(s->host);
    free(s);
}

static struct rm_hc_session *session_new(struct rm_health_checker *hc, struct rm_host *h)
{
    struct rm_hc_session *s = calloc(1, sizeof(*s));
    if (!s) return NULL;
    s->hc = hc;
    s->host = rm_host_ref(h);
    s->st.first_check = true;
    return s;
}

/* Envoy's request: GET, the path, the host, user-agent Envoy/HC, then request_headers_to_add
 * (an added header replaces a default one unless it appends); request_headers_to_remove takes
 * any of them away. */
static bool removed(const struct rm_hc_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_remove; i++) {
        if (strcasecmp(cfg->remove[i], name) == 0) return true;
    }
    return false;
}

static bool replaced(const struct rm_hc_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_add; i++) {
        if (!cfg->add[i].append && strcasecmp(cfg->add[i].name, name) == 0) return true;
    }
    return false;
}

static int build_request(struct rm_health_checker *hc)
{
    const struct rm_hc_config *cfg = &hc->cfg;
    size_t cap = 64 + strlen(cfg->path) + strlen(cfg->host);
    for (size_t i = 0; i < cfg->n_add; i++)
        cap += strlen(cfg->add[i].name) + strlen(cfg->add[i].value) + 4;
    char *r = malloc(cap);
    if (!r) return RM_ERR;
    size_t n = (size_t)snprintf(r, cap, "GET %s HTTP/1.1\r\n", cfg->path);
    if (!removed(cfg, "host") && !replaced(cfg, "host"))
        n += (size_t)snprintf(r + n, cap - n, "host: %s\r\n", cfg->host);
    if (!removed(cfg, "user-agent") && !replaced(cfg, "user-agent"))
        n += (size_t)snprintf(r + n, cap - n, "user-agent: Envoy/HC\r\n");
    for (size_t i = 0; i < cfg->n_add; i++) {
        if (removed(cfg, cfg->add[i].name)) continue;
        n += (size_t)snprintf(r + n, cap - n, "%s: %s\r\n", cfg->add[i].name, cfg->add[i].value);
    }
    n += (size_t)snprintf(r + n, cap - n, "\r\n");
    hc->request = r;
    hc->request_len = n;
    return RM_OK;
}

struct rm_health_checker *rm_health_checker_new(struct rm_hc_config *cfg, const char *stat_prefix,
                                                struct rm_tls_ctx *tls,
                                                struct rm_stats *cluster_stats,
                                                struct rm_host *const *hosts, size_t n,
                                                rm_hc_change_fn on_change, void *ctx)
{
    struct rm_health_checker *hc = calloc(1, sizeof(*hc));
    if (!hc) {
        rm_hc_config_dispose(cfg);
        return NULL;
    }
    hc->cfg = *cfg;
    memset(cfg, 0, sizeof(*cfg));
    hc->rng = (uint64_t)(uintptr_t)hc ^ 0x9E3779B97F4A7C15ULL;
    hc->cluster_stats = cluster_stats;
    hc->tls = tls ? rm_tls_ctx_ref(tls) : NULL;
    hc->on_change = on_change;
    hc->ctx = ctx;
    char prefix[400];
    snprintf(prefix, sizeof(prefix), "%shealth_check.", stat_prefix);
    hc->stats = rm_stats_get(prefix, rm_hc_stat_defs, RM_HC__COUNT);
    if (!hc->stats || (hc->cfg.kind == RM_HC_HTTP && build_request(hc)) ||
        rm_health_checker_set_hosts(hc, hosts, n)) {
        rm_health_checker_free(hc);
        return NULL;
    }
    return hc;
}

static int cmp_session_host(const void *a, const void *b)
{
    const struct rm_host *x = (*(struct rm_hc_session *const *)a)->host;
    const struct rm_host *y = (*(struct rm_hc_session *const *)b)->host;
    return x < y ? -1 : x > y;
}

static int cmp_session_addr(const void *a, const void *b)
{
    const struct rm_host *x = (*(struct rm_hc_session *const *)a)->host;
    const struct rm_host *y = (*(struct rm_hc_session *const *)b)->host;
    return rm_sockaddr_cmp(rm_host_sockaddr(x, NULL), rm_host_sockaddr(y, NULL));
}

/* The session of <h> among <v>[0..n) sorted by <cmp>, or NULL. */
static struct rm_hc_session *find_session(struct rm_hc_session **v, size_t n, struct rm_host *h,
                                          int (*cmp)(const void *, const void *))
{
    struct rm_hc_session key = {.host = h}, *kp = &key;
    struct rm_hc_session **at = n ? bsearch(&kp, v, n, sizeof(*v), cmp) : NULL;
    return at ? *at : NULL;
}

/* A new session for <h>: the state of <prev> (the session of a host with its address that
 * leaves), else failed (and pending with warm_hosts). */
static void adopt(struct rm_health_checker *hc, struct rm_hc_session *s, struct rm_hc_session *prev)
{
    if (prev) {
        s->st = prev->st;
        atomic_store_explicit(&s->host->hc, rm_host_hc_flags(prev->host), memory_order_relaxed);
        prev->mark = true; /* taken over: not a host of the checker anymore */
        return;
    }
    unsigned f = RM_HOST_FAILED_ACTIVE_HC | (hc->cfg.warm_hosts ? RM_HOST_PENDING_ACTIVE_HC : 0);
    atomic_store_explicit(&s->host->hc, (uint8_t)f, memory_order_relaxed);
}

int rm_health_checker_set_hosts(struct rm_health_checker *hc, struct rm_host *const *hosts,
                                size_t n)
{
    struct rm_hc_session **v = calloc(n ? n : 1, sizeof(*v));
    struct rm_hc_session **by_addr = calloc(hc->n ? hc->n : 1, sizeof(*by_addr));
    if (!v || !by_addr) goto fail;
    if (hc->n) qsort(hc->s, hc->n, sizeof(*hc->s), cmp_session_host);
    for (size_t i = 0; i < hc->n; i++)
        hc->s[i]->mark = false;
    size_t n_new = 0;
    for (size_t i = 0; i < n; i++) {
        struct rm_hc_session *s = find_session(hc->s, hc->n, hosts[i], cmp_session_host);
        if (s && !s->mark) {
            s->mark = true; /* stays */
            v[i] = s;
            continue;
        }
        if (!(v[i] = session_new(hc, hosts[i]))) goto fail;
        n_new++;
    }
    size_t k = 0; /* the sessions that leave, by address, for the new hosts to take over */
    for (size_t i = 0; i < hc->n; i++) {
        if (!hc->s[i]->mark) by_addr[k++] = hc->s[i];
    }
    if (k) qsort(by_addr, k, sizeof(*by_addr), cmp_session_addr);
    for (size_t i = 0; n_new && i < n; i++) {
        if (v[i]->mark) continue; /* an old session that stays */
        struct rm_hc_session *prev = find_session(by_addr, k, hosts[i], cmp_session_addr);
        adopt(hc, v[i], prev && !prev->mark ? prev : NULL);
        if (hc->loop) session_arm(v[i]);
    }
    for (size_t i = 0; i < k; i++)
        session_free(by_addr[i]); /* left, or taken over */
    free(by_addr);
    free(hc->s);
    hc->s = v;
    hc->n = n;
    for (size_t i = 0; i < n; i++)
        v[i]->mark = false;
    recount(hc);
    return RM_OK;
fail:
    for (size_t i = 0; v && i < n; i++) {
        if (v[i] && !v[i]->mark) session_free(v[i]);
    }
    for (size_t i = 0; i < hc->n; i++)
        hc->s[i]->mark = false;
    free(v);
    free(by_addr);
    return RM_ERR;
}

void rm_health_checker_start(struct rm_health_checker *hc, struct rm_loop *loop)
{
    if (hc->loop) return;
    hc->loop = loop;
    for (size_t i = 0; i < hc->n; i++)
        session_arm(hc->s[i]);
}

void rm_health_checker_stop(struct rm_health_checker *hc)
{
    if (!hc || !hc->loop) return;
    for (size_t i = 0; i < hc->n; i++)
        session_stop(hc->s[i]);
    hc->loop = NULL;
}

bool rm_health_checker_initialized(const struct rm_health_checker *hc)
{
    for (size_t i = 0; i < hc->n; i++) {
        if (hc->s[i]->st.first_check) return false;
    }
    return true;
}

void rm_health_checker_free(struct rm_health_checker *hc)
{
    if (!hc) return;
    rm_health_checker_stop(hc);
    for (size_t i = 0; i < hc->n; i++)
        session_free(hc->s[i]);
    free(hc->s);
    rm_stats_release(hc->stats);
    rm_tls_ctx_unref(hc->tls);
    rm_hc_config_dispose(&hc->cfg);
    free(hc->request);
    free(hc);
}
