/* The HTTP connection manager: one per downstream connection.  Picks the codec (AUTO sniffs
 * the HTTP/2 preface), creates a stream object per request, applies the connection-manager
 * behaviour (x-forwarded-*, x-request-id, server header, stats) and runs the filter chain.
 *
 * Stream memory (this object, filter instances, headers) lives in the downstream stream's
 * arena and is released once, from a deferred task, when both directions are done or the
 * stream was reset — so no filter callback can see its stream freed under it. */
#ifndef RM_HTTP_HCM_H
#define RM_HTTP_HCM_H

#include <stdbool.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>

#include "filters/filter.h"
#include "proxy/core/buf.h"
#include "proxy/core/loop.h"
#include "proxy/http/codec.h"
#include "proxy/http/route.h"
#include "proxy/server/netfilter.h"

struct rm_worker;
struct rm_listener_cfg;
struct rm_hcm_cfg;
struct rm_snapshot;
struct rm_tls_info;

/** Per-connection state of a filter (rm_hcm_conn_state), freed with the connection. */
struct rm_hcm_conn_state {
    const void *key;
    struct rm_hcm_conn_state *next;
    _Alignas(16) unsigned char data[];
};

struct rm_hcm_conn {
    struct rm_worker_conn base; /* the worker's list; ops = &rm_hcm_netfilter */
    struct rm_worker *w;
    /* The config the next stream gets: the worker's current one when the connection's
     * listener is still there (streams keep the one they started on). */
    struct rm_worker_snap *wsnap; /* a hold */
    struct rm_snapshot *snap;     /* wsnap->snap */
    const struct rm_listener_cfg *lc;
    const struct rm_hcm_cfg *cfg;
    /* Where the connection was counted at accept (http.<prefix>. and listener.<addr>. of the
     * config it was accepted on): its own references (rm_stats_ref), dropped when it is freed —
     * it decrements their gauges at close, possibly after following a newer config (another
     * stat_prefix) or after its listener was removed and that snapshot freed. */
    struct rm_stats *cx_stats, *listener_stats;
    struct rm_conn *conn;
    struct rm_codec *codec; /* NULL until the protocol is known */
    struct rm_task free_task;
    unsigned active_streams;
    uint32_t requests; /* streams begun, counted only under max_requests_per_connection */
    struct rm_hcm_conn_state *filter_state; /* see rm_hcm_conn_state */
    struct rm_timer timer;  /* idle_timeout and max_connection_duration (hcm_timeouts.c) */
    uint64_t start_ms;      /* accepted at */
    uint64_t idle_since_ms; /* when active_streams last became 0 */
    bool have_addrs;        /* peer_addr/local_addr set (rm_hcm_conn_facts: access logs, RBAC) */
    struct sockaddr_in6 peer_addr, local_addr; /* AF_INET or AF_INET6 */
    char peer_ip[64];
    uint64_t id;                  /* CONNECTION_ID (access logs: set with have_addrs) */
    struct rm_tls_info *tls_info; /* TLS session facts for access logs (with have_addrs), or NULL */
};

enum {
    RM_HS_REQ_END = 1u << 0,      /* downstream request fully received */
    RM_HS_RESP_HEADERS = 1u << 1, /* response headers sent downstream */
    RM_HS_RESP_END = 1u << 2,     /* response fully sent */
    RM_HS_RESET = 1u << 3,        /* stream reset (either side) */
    RM_HS_FINISHING = 1u << 4,    /* release scheduled */
    RM_HS_GRPC = 1u << 5,         /* content-type application/grpc* */
    RM_HS_HEAD = 1u << 6,
    RM_HS_REQ_HELD = 1u << 7,    /* a filter stopped the request */
    RM_HS_LOCAL_REPLY = 1u << 8, /* answered locally: later request events are dropped */
    RM_HS_DOWN_PAUSED = 1u << 9,
    RM_HS_HEALTH_CHECK = 1u << 10, /* envoy.filters.http.health_check matched it */
};

struct rm_hcm_stream {
    struct rm_hcm_conn *hc;
    struct rm_worker_snap *wsnap; /* a hold on the config it started on (cfg, route...) */
    struct rm_stream *down;
    struct rm_arena *arena;
    const struct rm_hcm_cfg *cfg;
    struct rm_headers *req;
    const struct rm_vhost *vhost;
    const struct rm_route *route;
    const struct rm_weighted_cluster *wcluster; /* picked with the route (weighted routes) */
    struct rm_filter **filters;
    unsigned n_filters;
    unsigned held_at;   /* filter that stopped the request (RM_HS_REQ_HELD) */
    struct rm_buf held; /* request body received while held */
    bool held_end;
    struct rm_headers *held_trailers;
    uint32_t flags;
    unsigned status;
    const char *resp_flags; /* Envoy response flags ("UH", "UF", …) or NULL */
    /* Envoy's response code details ("via_upstream", "route_not_found"…): a static string set
     * where the response is decided, or NULL (see rm_alog_info.details) */
    const char *details;
    uint64_t start_ms;
    struct rm_timer timer; /* stream idle, request and max stream duration timeouts */
    uint64_t activity_ms;  /* last event either way (stream_idle_timeout) */
    uint32_t idle_ms;      /* stream_idle_timeout, or the route's idle_timeout; 0 = none */
    struct rm_task finish_task;
    /* the router's hook for "downstream can take more response bytes" */
    void (*on_down_writable)(void *ctx);
    void *on_down_writable_ctx;
    /* access logs (only kept when the connection manager has some) */
    struct rm_headers *resp, *resp_trailers; /* as sent downstream (in the stream's arena) */
    uint64_t bytes_rx, bytes_tx;             /* body bytes received / sent downstream */
    uint64_t req_end_ms, resp_start_ms;      /* loop clock; 0 = not yet */
    struct timespec start_wall;
    const char *upstream_host;    /* the last attempt's host ("ip:port", stream's arena) */
    const char *upstream_cluster; /* the cluster the router used (stream's arena) */
    /* the last attempt's connect failure (rm_alog_info.transport_failure / transport_errno) */
    const char *transport_failure; /* static */
    int transport_errno;
    uint32_t attempts;                  /* upstream attempts started */
    struct sockaddr_in6 upstream_local; /* the last attempt's local address; AF_UNSPEC: none */
    const char *upstream_peer_uri_san;  /* its TLS peer's first URI SAN (stream's arena) */
};

/** The connection manager as a network filter (proxy/server/netfilter.h): accept takes over a
 *  connection (rm_hcm_conn_new), follow_config / drain / close are the functions below. */
extern const struct rm_netfilter_ops rm_hcm_netfilter;

/** Envoy's HTTP -> gRPC status mapping (Grpc::Utility::httpToGrpcStatus): the grpc-status of
 *  a local reply to a gRPC request, and of a response without one (access-log filters). */
unsigned rm_hcm_grpc_status_of_http(unsigned http);
/** Take over a connection accepted by the worker listener <listener_tag> with config <lc>.
 *  Frees itself when the connection ends (out of memory: <conn> is closed at once). */
void rm_hcm_conn_new(struct rm_worker *w, const struct rm_listener_cfg *lc, uint64_t listener_tag,
                     struct rm_conn *conn);
/** Move the connection to the worker's current config (w->wsnap) if its listener is still
 *  there with a connection manager: its next streams use it, and the snapshot it held is released
 * (streams in flight keep their own).  A no-op when already current or when the listener is gone.
 */
void rm_hcm_conn_follow_config(struct rm_hcm_conn *hc);
/** Graceful drain: GOAWAY / Connection: close, close when idle. */
void rm_hcm_conn_drain(struct rm_hcm_conn *hc);
/** Close now (streams are reset). */
void rm_hcm_conn_close(struct rm_hcm_conn *hc);
/** Read the connection's addresses and TLS facts into hc (peer_addr, local_addr, tls_info, id)
 *  once; later calls return at once.  While the connection is open (the stream that asks
 *  holds it). */
void rm_hcm_conn_facts(struct rm_hcm_conn *hc);

/* ---- used by filters --------------------------------------------------------------------- */

/** Send response headers/data/trailers downstream from filter <from> (through the response
 *  hooks of the filters before it). */
void rm_hcm_encode_headers(struct rm_hcm_stream *hs, unsigned from, struct rm_headers *h,
                           bool end_stream);
void rm_hcm_encode_data(struct rm_hcm_stream *hs, unsigned from, const uint8_t *p, size_t n,
                        bool end_stream);
void rm_hcm_encode_trailers(struct rm_hcm_stream *hs, unsigned from, struct rm_headers *h);
/** Local reply (see rm_filter_reply); <details> is Envoy's response code details string for
 *  it (static, or NULL). */
void rm_hcm_local_reply(struct rm_hcm_stream *hs, unsigned from, unsigned status, const char *flags,
                        const char *details, const char *body);
/** Local reply with options (see rm_filter_reply_ex). */
void rm_hcm_local_reply_ex(struct rm_hcm_stream *hs, unsigned from, const struct rm_local_reply *r);
/** The state <key> (any unique address, e.g. a filter config) keeps on the connection of <hs>:
 *  <size> zeroed bytes (16-aligned) on first use (*created true, one malloc), the same memory
 *  on later streams of the connection.  Freed with the connection (plain free: no destructor).
 *  Aborts on out-of-memory. */
void *rm_hcm_conn_state(struct rm_hcm_stream *hs, const void *key, size_t size, bool *created);
/** Reset the downstream stream (e.g. upstream reset after the response started). */
void rm_hcm_reset(struct rm_hcm_stream *hs);
/** Pause/resume reading the downstream request body. */
void rm_hcm_pause_request(struct rm_hcm_stream *hs, bool paused);
/** Can the downstream take more response bytes now? */
bool rm_hcm_down_blocked(const struct rm_hcm_stream *hs);
struct rm_worker *rm_hcm_worker(const struct rm_hcm_stream *hs);
struct rm_snapshot *rm_hcm_snapshot(const struct rm_hcm_stream *hs);

/* ---- timeouts (hcm_timeouts.c), called by the connection manager ------------------------- */

/** Connection accepted / gone: common_http_protocol_options idle_timeout (no active stream for
 *  that long: drain and close, downstream_cx_idle_timeout) and max_connection_duration (drain,
 *  downstream_cx_max_duration_reached).  One timer per connection, re-armed lazily. */
void rm_hcm_conn_timers_start(struct rm_hcm_conn *hc);
void rm_hcm_conn_timers_stop(struct rm_hcm_conn *hc);
/** The connection's last active stream ended (starts the idle period; no timer work). */
void rm_hcm_conn_idle(struct rm_hcm_conn *hc);
/** A stream started / its route is known / it ends: stream_idle_timeout (the route's
 *  idle_timeout overrides it; 408 "stream timeout" SI, or a reset once the response started),
 *  request_timeout (408 "request timeout" until the request is complete) and
 *  max_stream_duration (408 "downstream duration timeout").  One timer per stream. */
void rm_hcm_stream_timers_start(struct rm_hcm_stream *hs);
void rm_hcm_stream_routed(struct rm_hcm_stream *hs);
void rm_hcm_stream_timers_stop(struct rm_hcm_stream *hs);
/** Something happened on the stream (an event either way): the idle clock restarts. */
void rm_hcm_stream_activity(struct rm_hcm_stream *hs);

#endif
