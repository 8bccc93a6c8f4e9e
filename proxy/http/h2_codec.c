/* HTTP/2 codec constructors and connection-level ops (struct rm_codec_conn_ops), server and
 * client side.  The machinery is in h2_session.c and h2_stream.c; see h2_internal.h.
 *
 * Behaviour worth knowing beyond codec.h:
 *  - Server SETTINGS: MAX_CONCURRENT_STREAMS = st->h2_max_concurrent_streams (1024 when 0),
 *    INITIAL_WINDOW_SIZE = st->h2_initial_stream_window (65535*4), connection window
 *    st->h2_initial_conn_window (1 MiB), MAX_HEADER_LIST_SIZE from max_request_headers_kb.
 *    The client sends ENABLE_PUSH=0 and the same windows.
 *  - A received header block over max_request_headers_kb (60 KiB; name+value bytes) or
 *    max_headers_count (100) is answered with RST_STREAM(INTERNAL_ERROR), as codec.h says for
 *    HTTP/2: the server user never sees that stream; a client stream gets
 *    on_reset(RM_RESET_OVERFLOW).  The connection stays usable (HPACK state is kept).
 *  - Submitted blocks lose connection-specific fields (connection, keep-alive,
 *    proxy-connection, transfer-encoding, upgrade, te unless "trailers"); requests get
 *    :authority from host when it is missing (host itself is dropped) and :scheme from the
 *    transport when missing.
 *  - Received messages are checked as RFC 9113 8.1-8.3 says, with nghttp2 1.52's rules
 *    (h2_validate.c; nghttp2's own HTTP messaging is off): a malformed one is reset with
 *    RST_STREAM(PROTOCOL_ERROR) before the user sees it, or sees its end (a server user never
 *    gets such a request; a client stream gets on_reset(RM_RESET_PROTOCOL)).
 *  - Resets sent: RM_RESET_REFUSED -> REFUSED_STREAM, PROTOCOL -> PROTOCOL_ERROR,
 *    OVERFLOW -> ENHANCE_YOUR_CALM, others -> CANCEL.  Received: REFUSED_STREAM ->
 *    RM_RESET_REFUSED, any other RST_STREAM -> RM_RESET_REMOTE; streams nghttp2 closes for a
 *    peer's protocol error -> RM_RESET_PROTOCOL; streams above a GOAWAY's last_stream_id (or
 *    request HEADERS never sent because of it) -> RM_RESET_REFUSED.
 *  - A server stream released after its response ended but before the request did stops the
 *    upload with RST_STREAM(NO_ERROR) once the response is out.  Releasing any other open
 *    stream resets it (CANCEL).
 *  - shutdown(), server: GOAWAY(2^31-1) plus a PING, then the final GOAWAY(last processed
 *    stream) when the PING comes back or no stream is left; the connection closes (on_close
 *    with 0) when nghttp2 has nothing left.  Client: GOAWAY(0), no new streams, close when
 *    the last stream ends.  A GOAWAY received by the client makes available_streams() 0.
 *  - pause_reading(true) holds what arrives (at most one stream window) and returns no window;
 *    a stream whose exchange completed while paused is not reset when the connection ends
 *    afterwards (on_close still comes): resume() delivers the rest, as for a live connection.
 *  - Incoming DATA: the chunk that completes an END_STREAM frame carries end_stream=true; an
 *    empty (or padded) END_STREAM frame gives on_data(NULL, 0, true). */
#include <stdint.h>
#include <string.h>

#include "proxy/http/h2_internal.h"

static uint32_t active_streams(const struct rm_codec *cc)
{
    return rm_h2_codec_of(cc)->active;
}

static void close_now(struct rm_codec *cc)
{
    rm_h2_finish(rm_h2_codec_of(cc), 0, false, false);
}

/* ---- server ------------------------------------------------------------------------------- */

static int server_new_stream(struct rm_codec *cc, const struct rm_stream_events *ev, void *user,
                             struct rm_arena *arena, struct rm_stream **out)
{
    return -1;
}

static uint32_t server_available(const struct rm_codec *cc)
{
    return 0;
}

static void server_shutdown(struct rm_codec *cc)
{
    struct rm_h2_codec *c = rm_h2_codec_of(cc);
    if (c->finished || c->shutting) return;
    c->shutting = true;
    nghttp2_submit_shutdown_notice(c->ng);
    nghttp2_submit_ping(c->ng, NGHTTP2_FLAG_NONE, NULL);
    rm_h2_want_flush(c);
    rm_h2_after_io(c);
}

static const struct rm_codec_conn_ops server_ops = {
    .name = "h2",
    .new_stream = server_new_stream,
    .available_streams = server_available,
    .active_streams = active_streams,
    .shutdown = server_shutdown,
    .close = close_now,
};

struct rm_codec *rm_h2_server_new(struct rm_conn *conn, const struct rm_codec_settings *st,
                                  const struct rm_codec_callbacks *cb, void *user)
{
    struct rm_h2_codec *c = rm_h2_codec_new(conn, st, cb, user, true);
    if (!c) return NULL;
    c->base.ops = &server_ops;
    rm_conn_set_handler(conn, &rm_h2_conn_handler, c);
    rm_conn_schedule_flush(conn);
    return &c->base;
}

/* ---- client ------------------------------------------------------------------------------- */

static uint32_t client_available(const struct rm_codec *cc)
{
    const struct rm_h2_codec *c = rm_h2_codec_of(cc);
    if (c->finished || c->shutting || c->goaway_recv || c->recv_dead ||
        !nghttp2_session_check_request_allowed(c->ng)) /* GOAWAY sent or received, ids spent */
        return 0;
    uint32_t cap =
        nghttp2_session_get_remote_settings(c->ng, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    if (cap > c->st.h2_max_concurrent_streams) cap = c->st.h2_max_concurrent_streams;
    uint32_t next = nghttp2_session_get_next_stream_id(c->ng);
    uint32_t ids_left = next <= INT32_MAX ? (INT32_MAX - next) / 2 + 1 : 0;
    if (cap > ids_left) cap = ids_left;
    return cap > c->active ? cap - c->active : 0;
}

static int client_new_stream(struct rm_codec *cc, const struct rm_stream_events *ev, void *user,
                             struct rm_arena *arena, struct rm_stream **out)
{
    struct rm_h2_codec *c = rm_h2_codec_of(cc);
    if (client_available(cc) == 0) return -1;
    struct rm_h2_stream *hs = rm_h2_stream_alloc(c);
    if (!hs) return -1;
    hs->attached = true;
    hs->base.ev = ev;
    hs->base.user = user;
    hs->base.arena = arena;
    *out = &hs->base;
    return 0;
}

static void client_shutdown(struct rm_codec *cc)
{
    struct rm_h2_codec *c = rm_h2_codec_of(cc);
    if (c->finished || c->shutting) return;
    c->shutting = true;
    nghttp2_submit_goaway(c->ng, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR, NULL, 0);
    rm_h2_want_flush(c);
    rm_h2_after_io(c);
}

static const struct rm_codec_conn_ops client_ops = {
    .name = "h2",
    .new_stream = client_new_stream,
    .available_streams = client_available,
    .active_streams = active_streams,
    .shutdown = client_shutdown,
    .close = close_now,
};

struct rm_codec *rm_h2_client_new(struct rm_conn *conn, const struct rm_codec_settings *st,
                                  const struct rm_codec_callbacks *cb, void *user)
{
    struct rm_h2_codec *c = rm_h2_codec_new(conn, st, cb, user, false);
    if (!c) return NULL;
    c->base.ops = &client_ops;
    rm_conn_set_handler(conn, &rm_h2_conn_handler, c);
    rm_conn_schedule_flush(conn);
    return &c->base;
}

/* ---- PING (keepalive) --------------------------------------------------------------------- */

int rm_h2_ping(struct rm_codec *cc, void (*on_ack)(void *ctx), void *ctx)
{
    if (cc->proto != RM_HTTP2) return -1;
    struct rm_h2_codec *c = rm_h2_codec_of(cc);
    c->ping_cb = NULL;
    c->ping_ctx = NULL;
    if (!on_ack) return 0;
    if (c->finished || !c->ng) return -1;
    c->ping_seq++;
    uint8_t opaque[8];
    memcpy(opaque, &c->ping_seq, sizeof(opaque));
    if (nghttp2_submit_ping(c->ng, NGHTTP2_FLAG_NONE, opaque) != 0) return -1;
    c->ping_cb = on_ack;
    c->ping_ctx = ctx;
    rm_h2_want_flush(c);
    return 0;
}
