/* The HTTP connection manager's timeouts, as Envoy's:
 *  - connection: common_http_protocol_options.idle_timeout (default 1 h: no active stream for
 *    that long, the connection is drained and closed) and max_connection_duration (drained);
 *  - stream: stream_idle_timeout (default 5 min; a route's idle_timeout overrides it), the
 *    request_timeout (the whole request must arrive in time) and max_stream_duration.
 *
 * Each connection and each stream has one timer for all of its timeouts, armed for the earliest
 * deadline and re-armed lazily when it fires early: events only record the time
 * (rm_hcm_stream_activity), so a request costs one timer start and stop, not one per event. */
#include <limits.h>

#include "proxy/admin/stats.h"
#include "proxy/config/snapshot.h"
#include "proxy/http/hcm.h"
#include "proxy/server/worker.h"

#define GRPC_DEADLINE_EXCEEDED 4

static inline struct rm_loop *conn_loop(const struct rm_hcm_conn *hc)
{
    return hc->w->loop;
}
static inline struct rm_loop *stream_loop(const struct rm_hcm_stream *hs)
{
    return hs->hc->w->loop;
}

/* ---- connection --------------------------------------------------------------------------- */

static void on_conn_timer(struct rm_timer *t);

/* The next deadline of <hc> (0: none); *<duration> tells whether it is max_connection_duration. */
static uint64_t conn_deadline(const struct rm_hcm_conn *hc, uint64_t now, bool *duration)
{
    const struct rm_hcm_cfg *cfg = hc->cfg;
    uint64_t best = 0;
    *duration = false;
    if (cfg->idle_timeout_ms) /* busy: look again one idle period from now */
        best = (hc->active_streams ? now : hc->idle_since_ms) + cfg->idle_timeout_ms;
    if (cfg->max_connection_duration_ms) {
        uint64_t d = hc->start_ms + cfg->max_connection_duration_ms;
        if (!best || d <= best) {
            best = d;
            *duration = true;
        }
    }
    return best;
}

static void arm_conn(struct rm_hcm_conn *hc, uint64_t now)
{
    bool duration;
    uint64_t d = conn_deadline(hc, now, &duration);
    if (d) rm_timer_start(conn_loop(hc), &hc->timer, d > now ? d - now : 0, on_conn_timer);
}

static void on_conn_timer(struct rm_timer *t)
{
    struct rm_hcm_conn *hc = rm_container_of(t, struct rm_hcm_conn, timer);
    if (hc->base.closed) return;
    uint64_t now = rm_loop_now(conn_loop(hc));
    bool duration;
    uint64_t d = conn_deadline(hc, now, &duration);
    if (!d) return;
    if (d > now) {
        rm_timer_start(conn_loop(hc), &hc->timer, d - now, on_conn_timer);
        return;
    }
    /* drained: an idle connection closes now, a busy one after its streams (no re-arm) */
    rm_stat_inc(hc->cfg->stats, duration ? RM_HS_DOWNSTREAM_CX_MAX_DURATION_REACHED
                                         : RM_HS_DOWNSTREAM_CX_IDLE_TIMEOUT);
    rm_hcm_conn_drain(hc);
}

void rm_hcm_conn_timers_start(struct rm_hcm_conn *hc)
{
    uint64_t now = rm_loop_now(conn_loop(hc));
    hc->start_ms = hc->idle_since_ms = now;
    arm_conn(hc, now);
}

void rm_hcm_conn_timers_stop(struct rm_hcm_conn *hc)
{
    rm_timer_stop(conn_loop(hc), &hc->timer);
}

void rm_hcm_conn_idle(struct rm_hcm_conn *hc)
{
    hc->idle_since_ms = rm_loop_now(conn_loop(hc));
}

/* ---- stream ------------------------------------------------------------------------------- */

enum stream_timeout { T_NONE, T_IDLE, T_REQUEST, T_DURATION };

static void on_stream_timer(struct rm_timer *t);

static void consider(uint64_t d, enum stream_timeout which, uint64_t *best, enum stream_timeout *w)
{
    if (*w == T_NONE || d < *best) {
        *best = d;
        *w = which;
    }
}

/* The earliest deadline of <hs> and which timeout it is (T_NONE: none). */
static enum stream_timeout stream_deadline(const struct rm_hcm_stream *hs, uint64_t *deadline)
{
    const struct rm_hcm_cfg *cfg = hs->cfg;
    enum stream_timeout w = T_NONE;
    if (hs->idle_ms) consider(hs->activity_ms + hs->idle_ms, T_IDLE, deadline, &w);
    if (cfg->request_timeout_ms && !(hs->flags & (RM_HS_REQ_END | RM_HS_RESP_HEADERS)))
        consider(hs->start_ms + cfg->request_timeout_ms, T_REQUEST, deadline, &w);
    if (cfg->max_stream_duration_ms)
        consider(hs->start_ms + cfg->max_stream_duration_ms, T_DURATION, deadline, &w);
    return w;
}

static void arm_stream(struct rm_hcm_stream *hs)
{
    uint64_t d, now = rm_loop_now(stream_loop(hs));
    if (stream_deadline(hs, &d) == T_NONE)
        rm_timer_stop(stream_loop(hs), &hs->timer);
    else
        rm_timer_start(stream_loop(hs), &hs->timer, d > now ? d - now : 0, on_stream_timer);
}

/* Answer the timed-out stream with <status> (reset it if its response has started); <details>
 * is Envoy's response code details (static). */
static void timeout_reply(struct rm_hcm_stream *hs, unsigned status, const char *body,
                          const char *flags, const char *details, int grpc_status)
{
    if (hs->flags & RM_HS_RESP_HEADERS) {
        hs->resp_flags = flags;
        hs->details = details;
        rm_hcm_reset(hs);
        return;
    }
    struct rm_local_reply r = {.status = status,
                               .grpc_status = grpc_status,
                               .flags = flags,
                               .details = details,
                               .body = body};
    rm_hcm_local_reply_ex(hs, hs->n_filters, &r);
}

static void on_stream_timer(struct rm_timer *t)
{
    struct rm_hcm_stream *hs = rm_container_of(t, struct rm_hcm_stream, timer);
    if (hs->flags & (RM_HS_RESET | RM_HS_FINISHING)) return;
    uint64_t d, now = rm_loop_now(stream_loop(hs));
    enum stream_timeout w = stream_deadline(hs, &d);
    if (w == T_NONE) return;
    if (d > now) { /* there was activity, or the request completed: wait for the rest */
        rm_timer_start(stream_loop(hs), &hs->timer, d - now, on_stream_timer);
        return;
    }
    switch (w) {
    case T_IDLE:
        rm_stat_inc(hs->cfg->stats, RM_HS_DOWNSTREAM_RQ_IDLE_TIMEOUT);
        timeout_reply(hs, 408, "stream timeout", "SI", "stream_idle_timeout", -1);
        break;
    case T_REQUEST:
        rm_stat_inc(hs->cfg->stats, RM_HS_DOWNSTREAM_RQ_TIMEOUT);
        timeout_reply(hs, 408, "request timeout", NULL, "request_overall_timeout", -1);
        break;
    default:
        rm_stat_inc(hs->cfg->stats, RM_HS_DOWNSTREAM_RQ_MAX_DURATION_REACHED);
        timeout_reply(hs, 408, "downstream duration timeout", NULL, "max_duration_timeout",
                      GRPC_DEADLINE_EXCEEDED);
        break;
    }
}

void rm_hcm_stream_timers_start(struct rm_hcm_stream *hs)
{
    hs->activity_ms = hs->start_ms;
    hs->idle_ms = hs->cfg->stream_idle_timeout_ms;
    arm_stream(hs);
}

void rm_hcm_stream_routed(struct rm_hcm_stream *hs)
{
    const struct rm_route *rt = hs->route;
    if (!rt || !rt->has_idle_timeout || rt->idle_timeout_ms == hs->idle_ms) return;
    hs->idle_ms = rt->idle_timeout_ms; /* 0 disables it for this stream */
    arm_stream(hs);
}

void rm_hcm_stream_timers_stop(struct rm_hcm_stream *hs)
{
    rm_timer_stop(stream_loop(hs), &hs->timer);
}

void rm_hcm_stream_activity(struct rm_hcm_stream *hs)
{
    hs->activity_ms = rm_loop_now(stream_loop(hs));
}
