/* Codecs: HTTP/1.1 and HTTP/2, server and client side, behind one interface.
 *
 * A codec sits on one struct rm_conn (it is the conn's handler) and turns bytes into the same
 * stream events whatever the wire protocol, so filters and the router never see it.
 *
 * ## Streams
 * struct rm_stream is one request/response exchange on a connection.  The codec allocates and
 * owns it; the user (the HTTP connection manager downstream, the router upstream) sets
 * stream->ev and stream->user and talks to it through stream->ops.
 *
 * Contract, both sides:
 *  - Incoming: ev->on_headers (once; :status 1xx informational headers may come first on the
 *    client side, each as on_headers with end_stream=false and a 1xx :status), then on_data*
 *    then optionally on_trailers (which ends the stream), or on_reset at any time.  Data
 *    pointers are valid only during the call.  Header blocks live in stream->arena until the
 *    stream is released.
 *  - Outgoing: ops->submit_headers, submit_data*, submit_trailers; end_stream on the last one.
 *    Submissions always succeed while the stream is open (data is copied) — backpressure is
 *    the caller's job: after a submit, if ops->write_blocked() is true the caller should stop
 *    producing (pause its source) until ev->on_writable.
 *  - ops->pause_reading(s, true) stops delivering on_data for this stream (HTTP/2: stops
 *    returning flow-control window; HTTP/1.1: stops reading the connection).
 *  - ops->reset() aborts the stream (HTTP/2 RST_STREAM, HTTP/1.1: the connection is closed).
 *    After reset() or on_reset, the codec makes no more calls on the stream.
 *  - The user calls ops->release() exactly once when it no longer needs the stream (after its
 *    last event or after a reset); the codec frees the stream (and, server side, its arena)
 *    when it is done writing.  The codec never calls the user after release().
 *  - No callback frees the codec, the connection or the stream synchronously: closes and frees
 *    are deferred to the loop (rm_loop_defer), so a user may call ops from inside callbacks.
 *
 * ## Server side
 * The codec calls cb->on_stream(user, s) for each new request before that stream's first
 * event; the user sets s->ev and s->user there.  cb->on_close(user) reports that the
 * connection ended (after every open stream got on_reset); the codec frees itself after it.
 *
 * ## Client side
 * rm_codec_new_stream() opens a request stream on a connected client codec, with events going
 * to <ev>/<user> and incoming headers allocated in the caller's <arena>.  cb->on_close(user)
 * reports that the connection ended (open streams got on_reset first); cb->on_idle(user) that
 * the last active stream finished (the pool may reuse or close it); cb->on_goaway(user) that no
 * new streams may be opened (HTTP/2 GOAWAY or HTTP/1.1 Connection: close).
 */
#ifndef RM_HTTP_CODEC_H
#define RM_HTTP_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/http/headers.h"
#include "proxy/net/conn.h"

enum rm_http_proto {
    RM_HTTP10 = 0,
    RM_HTTP11 = 1,
    RM_HTTP2 = 2,
};

enum rm_reset_reason {
    RM_RESET_LOCAL,                  /* we reset it (e.g. downstream went away) */
    RM_RESET_REMOTE,                 /* peer reset the stream (RST_STREAM / abrupt close) */
    RM_RESET_PROTOCOL,               /* peer violated the protocol */
    RM_RESET_CONNECTION_FAILURE,     /* upstream connect failed */
    RM_RESET_CONNECTION_TERMINATION, /* connection closed under the stream */
    RM_RESET_REFUSED,                /* HTTP/2 REFUSED_STREAM: safe to retry */
    RM_RESET_OVERFLOW,               /* too many streams / resource limit */
    RM_RESET_TIMEOUT,
};

const char *rm_reset_reason_str(enum rm_reset_reason r);

struct rm_stream;

struct rm_stream_events {
    void (*on_headers)(struct rm_stream *s, struct rm_headers *h, bool end_stream);
    void (*on_data)(struct rm_stream *s, const uint8_t *p, size_t n, bool end_stream);
    void (*on_trailers)(struct rm_stream *s, struct rm_headers *h);
    void (*on_reset)(struct rm_stream *s, enum rm_reset_reason reason);
    void (*on_writable)(struct rm_stream *s);
};

struct rm_codec_ops {
    /** Returns 0, or <0 if the stream can't take it (already reset/closed). */
    int (*submit_headers)(struct rm_stream *s, struct rm_headers *h, bool end_stream);
    int (*submit_data)(struct rm_stream *s, const uint8_t *p, size_t n, bool end_stream);
    int (*submit_trailers)(struct rm_stream *s, struct rm_headers *h);
    void (*reset)(struct rm_stream *s, enum rm_reset_reason reason);
    void (*pause_reading)(struct rm_stream *s, bool paused);
    bool (*write_blocked)(const struct rm_stream *s);
    void (*release)(struct rm_stream *s);
};

struct rm_stream {
    const struct rm_codec_ops *ops;
    const struct rm_stream_events *ev; /* set by the user */
    void *user;                        /* set by the user */
    struct rm_arena *arena;            /* incoming header blocks go here */
    enum rm_http_proto proto;
    int32_t id; /* HTTP/2 stream id; HTTP/1.1: request ordinal */
};

struct rm_codec;

/** What a codec reports for counters (Envoy's http2.* codec stats): RST_STREAM received / sent,
 *  a message that broke HTTP/2's rules (the stream is then reset: a TX_RESET follows). */
enum rm_codec_event {
    RM_CODEC_EV_RX_RESET,
    RM_CODEC_EV_TX_RESET,
    RM_CODEC_EV_MESSAGING_ERROR,
};

struct rm_codec_callbacks {
    /* server side */
    void (*on_stream)(void *user, struct rm_stream *s);
    /* client side */
    void (*on_idle)(void *user);
    void (*on_goaway)(void *user);
    /* both */
    void (*on_close)(void *user, int err);
    /** Optional (NULL: none): counts <ev>.  Called from inside the codec: must not call into
     *  it nor free anything. */
    void (*on_event)(void *user, enum rm_codec_event ev);
};

/** Limits and knobs shared by the codecs (from HttpConnectionManager / the cluster). */
struct rm_codec_settings {
    uint32_t max_request_headers_kb;     /* header block limit; over it: 431 (h1) / reset (h2) */
    uint32_t max_headers_count;          /* 0 = 100 */
    uint32_t h2_max_concurrent_streams;  /* advertised (server) */
    uint32_t h2_initial_stream_window;   /* 0 = 65535*4 */
    uint32_t h2_initial_conn_window;     /* 0 = 1 MiB */
    uint32_t buffer_limit;               /* per-stream/conn output above which write_blocked() */
    bool accept_http_10;                 /* h1 server */
    uint32_t request_headers_timeout_ms; /* server: first byte of a request to the end of its
                                          * headers (0 = none); h1: 408 + close, h2: reset */
};

/** Per-connection operations every codec implements. */
struct rm_codec_conn_ops {
    const char *name;
    /** Client: open a request stream.  Returns 0, or <0 when no new stream fits now. */
    int (*new_stream)(struct rm_codec *c, const struct rm_stream_events *ev, void *user,
                      struct rm_arena *arena, struct rm_stream **out);
    /** Streams that may still be opened now (client) — 0 when busy/draining. */
    uint32_t (*available_streams)(const struct rm_codec *c);
    uint32_t (*active_streams)(const struct rm_codec *c);
    /** Graceful: HTTP/2 GOAWAY; HTTP/1.1 Connection: close on the next response.  Streams in
     *  flight finish; the connection closes when none is left. */
    void (*shutdown)(struct rm_codec *c);
    /** Close now: open streams get on_reset(CONNECTION_TERMINATION); no on_close callback. */
    void (*close)(struct rm_codec *c);
};

struct rm_codec {
    const struct rm_codec_conn_ops *ops;
    struct rm_conn *conn;
    const struct rm_codec_callbacks *cb;
    void *user;
    enum rm_http_proto proto;
};

/** Constructors: each takes over <conn> with rm_conn_set_handler() (bytes the conn already
 *  buffered, e.g. after protocol sniffing, are delivered to the codec next).  Client codecs
 *  take a connected conn (HTTP/2 sends its preface at once).  Return NULL on allocation
 *  failure (conn untouched). */
struct rm_codec *rm_h1_server_new(struct rm_conn *conn, const struct rm_codec_settings *st,
                                  const struct rm_codec_callbacks *cb, void *user);
struct rm_codec *rm_h2_server_new(struct rm_conn *conn, const struct rm_codec_settings *st,
                                  const struct rm_codec_callbacks *cb, void *user);
struct rm_codec *rm_h1_client_new(struct rm_conn *conn, const struct rm_codec_settings *st,
                                  const struct rm_codec_callbacks *cb, void *user);
struct rm_codec *rm_h2_client_new(struct rm_conn *conn, const struct rm_codec_settings *st,
                                  const struct rm_codec_callbacks *cb, void *user);

/** HTTP/2 (either side): send a PING now; <on_ack>(ctx) runs when its ACK arrives (from the
 *  codec's input path, never synchronously).  One PING at a time: a new call replaces the
 *  outstanding one (whose ACK is then ignored); rm_h2_ping(c, NULL, NULL) forgets it.  No call
 *  after the connection ended or after close().  Returns 0, or <0 (not HTTP/2, connection
 *  over, nghttp2 refused).  Keepalive timers are the caller's (gRPC channels use this). */
int rm_h2_ping(struct rm_codec *c, void (*on_ack)(void *ctx), void *ctx);

static inline int rm_codec_new_stream(struct rm_codec *c, const struct rm_stream_events *ev,
                                      void *user, struct rm_arena *arena, struct rm_stream **out)
{
    return c->ops->new_stream(c, ev, user, arena, out);
}

/** Give this thread's cached HTTP/2 library blocks back to malloc, keeping at most <keep>
 *  bytes per size class, and unmap its cached session regions (after a burst); returns the
 *  bytes freed (regions counted whole). */
size_t rm_h2_mem_trim(size_t keep);

#endif
