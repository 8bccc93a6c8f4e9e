/* gRPC server: connections (listener + HTTP/2 server codec), the method table, and calls (the
 * state machine, request deframing, responses and status).  See grpc_server.h for the
 * contract.
 *
 * ## Objects
 * struct rm_grpc_server owns the listener, a list of connections (struct sconn: one server
 * codec each) and a list of every call not yet freed.  A call (struct rm_grpc_scall) exists
 * from the codec's on_stream to its deferred free; it holds the stream until it ends.
 *
 * Call states; only scall_set_state() changes them (it asserts the transition):
 *   IDLE        -> OPEN | FINISHED | CANCELLED   stream announced, request headers not yet in
 *   OPEN        -> HALF_CLOSED | FINISHED | CANCELLED   the handler has it
 *   HALF_CLOSED -> FINISHED | CANCELLED          the client ended its side
 *   FINISHED, CANCELLED: terminal; the stream is released and the call's task frees it.
 * FINISHED: a status went out (the handler's, or ours for a refused request); CANCELLED: the
 * stream was reset or the connection lost (the handler, if it had the call, got on_cancel). */
#include "xds/grpc_server.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/core/arena.h"
#include "proxy/core/log.h"
#include "proxy/http/codec.h"
#include "proxy/net/conn.h"
#include "proxy/net/listener.h"
#include "proxy/upstream/host.h"

#define DEFAULT_CALL_BUFFER (256 * 1024)
#define DEFAULT_MAX_STREAMS 1024

enum scall_state {
    SCALL_IDLE = 0,
    SCALL_OPEN,
    SCALL_HALF_CLOSED,
    SCALL_FINISHED,
    SCALL_CANCELLED,
};

struct method {
    char *path;
    const struct rm_grpc_handler *h;
    void *ctx;
};

struct sconn {
    struct rm_grpc_server *srv;
    struct sconn *prev, *next;
    struct rm_codec *codec;
    char peer[64];
};

struct rm_grpc_server {
    struct rm_loop *loop;
    struct rm_grpc_server_opts o; /* defaults filled in */
    struct rm_codec_settings st;
    struct method *methods;
    size_t nmethods;
    struct rm_listener listener;
    bool listening;
    int port;
    struct sconn *conns;
    struct rm_grpc_scall *calls; /* every call not yet freed */
    struct rm_grpc_server_stats stats;
    uint8_t *scratch; /* rm_grpc_scall_send_pb packing */
    size_t scratch_cap;
};

struct rm_grpc_scall {
    struct rm_grpc_server *srv; /* NULL once orphaned by rm_grpc_server_free */
    struct rm_loop *loop;
    struct rm_grpc_scall *prev, *next; /* srv->calls */
    enum scall_state state;
    struct rm_stream *s; /* until the call ends */
    const struct method *m;
    void *user;
    struct rm_arena arena; /* path, peer, request headers */
    const char *path;
    const char *peer;
    struct rm_headers md;
    struct rm_grpc_deframer rx;
    struct rm_timer deadline;
    struct rm_task task; /* frees the call once terminal */
    unsigned in_cb;
    bool headers_sent : 1;
    bool blocked : 1;
};

/* ---- state machine ------------------------------------------------------------------------ */

#define BIT(s) (1u << (s))
static const uint8_t legal_next[] = {
    [SCALL_IDLE] = BIT(SCALL_OPEN) | BIT(SCALL_FINISHED) | BIT(SCALL_CANCELLED),
    [SCALL_OPEN] = BIT(SCALL_HALF_CLOSED) | BIT(SCALL_FINISHED) | BIT(SCALL_CANCELLED),
    [SCALL_HALF_CLOSED] = BIT(SCALL_FINISHED) | BIT(SCALL_CANCELLED),
    [SCALL_FINISHED] = 0,
    [SCALL_CANCELLED] = 0,
};

static void scall_set_state(struct rm_grpc_scall *c, enum scall_state to)
{
    assert(legal_next[c->state] & BIT(to));
    c->state = to;
}

static bool live(const struct rm_grpc_scall *c)
{
    return c->state == SCALL_OPEN || c->state == SCALL_HALF_CLOSED;
}

static bool terminal(const struct rm_grpc_scall *c)
{
    return c->state == SCALL_FINISHED || c->state == SCALL_CANCELLED;
}

/* ---- call lifetime ------------------------------------------------------------------------ */

static void scall_unlink(struct rm_grpc_scall *c)
{
    struct rm_grpc_server *gs = c->srv;
    if (!gs) return;
    if (c->prev)
        c->prev->next = c->next;
    else
        gs->calls = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void scall_task(struct rm_task *t)
{
    struct rm_grpc_scall *c = rm_container_of(t, struct rm_grpc_scall, task);
    if (!terminal(c)) return;
    if (c->in_cb) { /* not from inside its own callback: later */
        rm_loop_defer(c->loop, &c->task, scall_task);
        return;
    }
    scall_unlink(c);
    assert(!c->s && !rm_timer_armed(&c->deadline));
    rm_grpc_deframer_dispose(&c->rx);
    rm_arena_dispose(&c->arena);
    free(c);
}

/* Let go of the stream (<reset>: abort it first) and the deadline; queue the free. */
static void scall_detach(struct rm_grpc_scall *c, bool reset)
{
    rm_timer_stop(c->loop, &c->deadline);
    if (c->s) {
        struct rm_stream *s = c->s;
        c->s = NULL;
        if (reset) s->ops->reset(s, RM_RESET_LOCAL);
        s->ops->release(s);
    }
    rm_loop_defer(c->loop, &c->task, scall_task);
}

/* The call ended other than by the handler's finish: tell the handler (if it has the call). */
static void scall_cancel(struct rm_grpc_scall *c, int status, const char *why, bool reset)
{
    if (terminal(c)) return;
    bool had = live(c);
    scall_set_state(c, SCALL_CANCELLED);
    scall_detach(c, reset);
    if (c->srv) c->srv->stats.calls_cancelled++;
    rm_log_debug("grpc-server: %s %s: %s (%d): %s", c->peer, c->path ? c->path : "-",
                 rm_grpc_code_name(status), status, why);
    if (!had || !c->m->h->on_cancel) return;
    c->in_cb++;
    c->m->h->on_cancel(c, status, why);
    c->in_cb--;
}

/* ---- sending ------------------------------------------------------------------------------ */

static void add_lit(struct rm_headers *h, const char *name, const char *value)
{
    rm_headers_add(h, name, strlen(name), value, strlen(value));
}

/* Response headers, in the stream's own arena (the codec sends them without copying). */
static void response_headers(struct rm_stream *s, struct rm_headers *h, const char *status)
{
    rm_headers_init(h, s->arena);
    add_lit(h, ":status", status);
    add_lit(h, "content-type", "application/grpc");
}

static void status_fields(struct rm_stream *s, struct rm_headers *h, int status, const char *msg)
{
    char code[16];
    snprintf(code, sizeof(code), "%d", status);
    add_lit(h, "grpc-status", code);
    size_t n = msg ? strlen(msg) : 0;
    if (!n) return;
    char *enc = rm_arena_alloc(s->arena, 3 * n + 1);
    size_t len = rm_grpc_message_encode(msg, n, enc);
    rm_headers_add_ref(h, "grpc-message", 12, enc, len);
}

/* Send the status: trailers after a response, or a trailers-only response (with HTTP
 * <http_status>).  The stream stays with the call. */
static void send_status(struct rm_grpc_scall *c, const char *http_status, int status,
                        const char *msg)
{
    struct rm_stream *s = c->s;
    struct rm_headers h;
    if (!s) return;
    if (c->headers_sent) {
        rm_headers_init(&h, s->arena);
        status_fields(s, &h, status, msg);
        s->ops->submit_trailers(s, &h);
        return;
    }
    response_headers(s, &h, http_status);
    status_fields(s, &h, status, msg);
    c->headers_sent = true;
    s->ops->submit_headers(s, &h, true);
}

/* End the call with a status that goes to the client (our own or the handler's). */
static void finish_with(struct rm_grpc_scall *c, const char *http_status, int status,
                        const char *msg)
{
    send_status(c, http_status, status, msg);
    scall_set_state(c, SCALL_FINISHED);
    scall_detach(c, false);
    if (c->srv) c->srv->stats.calls_finished++;
}

static int send_headers_once(struct rm_grpc_scall *c)
{
    if (c->headers_sent) return 0;
    struct rm_headers h;
    response_headers(c->s, &h, "200");
    c->headers_sent = true;
    return c->s->ops->submit_headers(c->s, &h, false);
}

int rm_grpc_scall_send(struct rm_grpc_scall *c, const uint8_t *msg, size_t len)
{
    if (!c || !live(c) || !c->s || len > UINT32_MAX) return -1;
    struct rm_stream *s = c->s;
    uint8_t pfx[RM_GRPC_PREFIX_LEN];
    rm_grpc_prefix_write(pfx, (uint32_t)len);
    if (send_headers_once(c) != 0 || s->ops->submit_data(s, pfx, sizeof(pfx), false) != 0)
        return -1;
    if (len && s->ops->submit_data(s, msg, len, false) != 0) return -1;
    if (s->ops->write_blocked(s)) c->blocked = true;
    return 0;
}

int rm_grpc_scall_send_pb(struct rm_grpc_scall *c, const ProtobufCMessage *m)
{
    if (!c || !live(c) || !c->srv) return -1;
    struct rm_grpc_server *gs = c->srv;
    size_t n = protobuf_c_message_get_packed_size(m);
    if (n > UINT32_MAX) return -1;
    if (n > gs->scratch_cap) {
        size_t cap = n < 4096 ? 4096 : n;
        uint8_t *p = realloc(gs->scratch, cap);
        if (!p) return -1;
        gs->scratch = p;
        gs->scratch_cap = cap;
    }
    size_t packed = n ? protobuf_c_message_pack(m, gs->scratch) : 0;
    if (packed != n) return -1;
    return rm_grpc_scall_send(c, gs->scratch, n);
}

bool rm_grpc_scall_write_blocked(const struct rm_grpc_scall *c)
{
    return live(c) && c->s && c->s->ops->write_blocked(c->s);
}

void rm_grpc_scall_finish(struct rm_grpc_scall *c, int status, const char *fmt, ...)
{
    if (!c || !live(c)) return;
    char msg[1024] = "";
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
    }
    finish_with(c, "200", status, msg);
}

bool rm_grpc_scall_open(const struct rm_grpc_scall *c)
{
    return c && live(c);
}

void *rm_grpc_scall_user(const struct rm_grpc_scall *c)
{
    return c->user;
}

const char *rm_grpc_scall_path(const struct rm_grpc_scall *c)
{
    return c->path ? c->path : "";
}

const char *rm_grpc_scall_peer(const struct rm_grpc_scall *c)
{
    return c->peer;
}

struct rm_str rm_grpc_scall_header(const struct rm_grpc_scall *c, const char *name)
{
    return rm_headers_get(&c->md, name, strlen(name));
}

/* ---- receiving ---------------------------------------------------------------------------- */

static const struct method *find_method(const struct rm_grpc_server *gs, struct rm_str path)
{
    for (size_t i = 0; gs && i < gs->nmethods; i++)
        if (rm_str_eq(path, gs->methods[i].path, strlen(gs->methods[i].path)))
            return &gs->methods[i];
    return NULL;
}

/* Refuse a request before any handler sees it. */
static void refuse(struct rm_grpc_scall *c, const char *http_status, int status, const char *msg)
{
    if (c->srv) c->srv->stats.rejected++;
    rm_log_debug("grpc-server: %s %s: refused: %s", c->peer, c->path ? c->path : "-", msg);
    finish_with(c, http_status, status, msg);
}

static void deadline_fired(struct rm_timer *t)
{
    struct rm_grpc_scall *c = rm_container_of(t, struct rm_grpc_scall, deadline);
    send_status(c, "200", RM_GRPC_DEADLINE_EXCEEDED, "Deadline Exceeded");
    scall_cancel(c, RM_GRPC_DEADLINE_EXCEEDED, "deadline exceeded", false);
}

/* Checks that need no handler; returns false when the request was refused. */
static bool request_acceptable(struct rm_grpc_scall *c, const struct rm_headers *h)
{
    struct rm_str method = RM_HDR_GET(h, ":method");
    struct rm_str ct = RM_HDR_GET(h, "content-type");
    char msg[256];
    if (!rm_str_eq(method, "POST", 4)) {
        snprintf(msg, sizeof(msg), "method %.*s not allowed: gRPC uses POST", (int)method.len,
                 method.p ? method.p : "");
        refuse(c, "405", RM_GRPC_INTERNAL, msg);
        return false;
    }
    if (!ct.p || !rm_grpc_content_type_ok(ct.p, ct.len)) {
        snprintf(msg, sizeof(msg), "invalid gRPC request content-type \"%.*s\"", (int)ct.len,
                 ct.p ? ct.p : "");
        refuse(c, "415", RM_GRPC_INTERNAL, msg);
        return false;
    }
    c->m = find_method(c->srv, RM_HDR_GET(h, ":path"));
    if (!c->m) {
        if (c->srv) c->srv->stats.unimplemented++;
        snprintf(msg, sizeof(msg), "unknown method %s", c->path);
        refuse(c, "200", RM_GRPC_UNIMPLEMENTED, msg);
        return false;
    }
    return true;
}

static void arm_deadline(struct rm_grpc_scall *c)
{
    struct rm_str to = rm_headers_get(&c->md, "grpc-timeout", 12);
    uint64_t ms;
    if (!to.p || rm_grpc_timeout_parse(to.p, to.len, &ms) != 0) return;
    rm_timer_start(c->loop, &c->deadline, ms ? ms : 1, deadline_fired);
}

static void client_ended(struct rm_grpc_scall *c)
{
    if (c->state != SCALL_OPEN) return;
    size_t partial = rm_grpc_deframer_partial(&c->rx);
    if (partial) {
        char msg[96];
        snprintf(msg, sizeof(msg), "request ended inside a message (%zu bytes)", partial);
        send_status(c, "200", RM_GRPC_INTERNAL, msg);
        scall_cancel(c, RM_GRPC_INTERNAL, msg, false);
        return;
    }
    scall_set_state(c, SCALL_HALF_CLOSED);
    if (!c->m->h->on_half_close) return;
    c->in_cb++;
    c->m->h->on_half_close(c);
    c->in_cb--;
}

static void start_call(struct rm_grpc_scall *c)
{
    if (c->srv) c->srv->stats.calls++;
    arm_deadline(c);
    scall_set_state(c, SCALL_OPEN);
    c->in_cb++;
    c->user = c->m->h->on_start(c->m->ctx, c);
    c->in_cb--;
}

static void on_stream_headers(struct rm_stream *s, struct rm_headers *h, bool end)
{
    struct rm_grpc_scall *c = s->user;
    if (c->state != SCALL_IDLE) return; /* a second block before DATA: ignore */
    rm_headers_copy(&c->md, h);
    struct rm_str path = RM_HDR_GET(h, ":path");
    c->path = rm_arena_strndup(&c->arena, path.p ? path.p : "", path.len);
    if (!request_acceptable(c, h)) return;
    start_call(c);
    if (end && c->s) client_ended(c);
}

static void deframe_failed(struct rm_grpc_scall *c, int r)
{
    char msg[128];
    int status = RM_GRPC_INTERNAL;
    if (r == RM_GRPC_DEFRAME_TOO_LARGE) {
        status = RM_GRPC_RESOURCE_EXHAUSTED;
        snprintf(msg, sizeof(msg), "received message larger than max (%u vs. %u)", c->rx.bad_len,
                 c->rx.max);
    } else if (r == RM_GRPC_DEFRAME_COMPRESSED) {
        snprintf(msg, sizeof(msg),
                 "compressed message received, but no grpc-encoding is "
                 "supported");
    } else {
        snprintf(msg, sizeof(msg), "invalid message flags 0x%02x", c->rx.bad_flag);
    }
    send_status(c, "200", status, msg);
    scall_cancel(c, status, msg, false);
}

static void on_stream_data(struct rm_stream *s, const uint8_t *p, size_t n, bool end)
{
    struct rm_grpc_scall *c = s->user;
    if (c->state != SCALL_OPEN) return;
    const uint8_t *msg;
    size_t len;
    int r;
    while ((r = rm_grpc_deframe(&c->rx, &p, &n, &msg, &len)) == RM_GRPC_DEFRAME_MSG) {
        c->in_cb++;
        c->m->h->on_message(c, msg, len);
        c->in_cb--;
        if (c->state != SCALL_OPEN) return; /* finished meanwhile */
    }
    if (r < 0) {
        deframe_failed(c, r);
        return;
    }
    if (end) client_ended(c);
}

static void on_stream_trailers(struct rm_stream *s, struct rm_headers *h)
{
    struct rm_grpc_scall *c = s->user;
    if (c->state == SCALL_OPEN) client_ended(c);
}

static void on_stream_reset(struct rm_stream *s, enum rm_reset_reason reason)
{
    struct rm_grpc_scall *c = s->user;
    bool lost = reason == RM_RESET_CONNECTION_TERMINATION;
    scall_cancel(c, lost ? RM_GRPC_UNAVAILABLE : RM_GRPC_CANCELLED,
                 lost ? "connection closed" : "cancelled by the client", false);
}

static void on_stream_writable(struct rm_stream *s)
{
    struct rm_grpc_scall *c = s->user;
    if (!live(c) || !c->blocked) return;
    c->blocked = false;
    if (!c->m->h->on_writable) return;
    c->in_cb++;
    c->m->h->on_writable(c);
    c->in_cb--;
}

static const struct rm_stream_events stream_events = {
    .on_headers = on_stream_headers,
    .on_data = on_stream_data,
    .on_trailers = on_stream_trailers,
    .on_reset = on_stream_reset,
    .on_writable = on_stream_writable,
};

/* ---- connections -------------------------------------------------------------------------- */

static void sconn_on_stream(void *user, struct rm_stream *s)
{
    struct sconn *sc = user;
    struct rm_grpc_server *gs = sc->srv;
    struct rm_grpc_scall *c = calloc(1, sizeof(*c));
    if (!c) abort();
    c->srv = gs;
    c->loop = gs->loop;
    c->s = s;
    c->state = SCALL_IDLE; /* initial */
    rm_arena_init(&c->arena);
    rm_headers_init(&c->md, &c->arena);
    c->peer = rm_arena_strndup(&c->arena, sc->peer, strlen(sc->peer));
    rm_grpc_deframer_init(&c->rx, gs->o.max_recv_msg);
    c->next = gs->calls;
    if (gs->calls) gs->calls->prev = c;
    gs->calls = c;
    s->ev = &stream_events;
    s->user = c;
}

static void sconn_unlink(struct sconn *sc)
{
    struct rm_grpc_server *gs = sc->srv;
    if (sc->prev)
        sc->prev->next = sc->next;
    else
        gs->conns = sc->next;
    if (sc->next) sc->next->prev = sc->prev;
    gs->stats.connections_open--;
}

static void sconn_on_close(void *user, int err)
{
    struct sconn *sc = user;
    if (!sc->srv->o.quiet)
        rm_log_info("grpc-server: connection from %s closed%s%s", sc->peer, err ? ": " : "",
                    err ? strerror(-err) : "");
    sconn_unlink(sc);
    free(sc);
}

static const struct rm_codec_callbacks codec_cb = {
    .on_stream = sconn_on_stream,
    .on_close = sconn_on_close,
};

static void on_accept(struct rm_listener *l, int fd, const struct sockaddr *peer, socklen_t plen)
{
    struct rm_grpc_server *gs = l->user;
    struct sconn *sc = calloc(1, sizeof(*sc));
    if (!sc) abort();
    struct rm_conn *conn = rm_conn_accepted(gs->loop, fd, peer, plen, NULL, NULL);
    if (!conn) {
        free(sc);
        return;
    }
    rm_conn_peer_str(conn, sc->peer, sizeof(sc->peer));
    sc->srv = gs;
    sc->codec = rm_h2_server_new(conn, &gs->st, &codec_cb, sc);
    if (!sc->codec) {
        rm_conn_close(conn);
        free(sc);
        return;
    }
    sc->next = gs->conns;
    if (gs->conns) gs->conns->prev = sc;
    gs->conns = sc;
    gs->stats.connections++;
    gs->stats.connections_open++;
    if (!gs->o.quiet) rm_log_info("grpc-server: connection from %s", sc->peer);
}

/* ---- the server --------------------------------------------------------------------------- */

struct rm_grpc_server *rm_grpc_server_new(struct rm_loop *loop, const struct rm_grpc_server_opts *o)
{
    struct rm_grpc_server *gs = calloc(1, sizeof(*gs));
    if (!gs) return NULL;
    gs->loop = loop;
    if (o) gs->o = *o;
    if (!gs->o.max_recv_msg) gs->o.max_recv_msg = RM_GRPC_DEFAULT_MAX_RECV;
    if (!gs->o.call_buffer) gs->o.call_buffer = DEFAULT_CALL_BUFFER;
    if (!gs->o.max_concurrent_streams) gs->o.max_concurrent_streams = DEFAULT_MAX_STREAMS;
    gs->st.buffer_limit = gs->o.call_buffer;
    gs->st.h2_max_concurrent_streams = gs->o.max_concurrent_streams;
    gs->listener.io.fd = -1;
    return gs;
}

int rm_grpc_server_add_method(struct rm_grpc_server *gs, const char *path,
                              const struct rm_grpc_handler *h, void *ctx, struct rm_error *err)
{
    if (!path || path[0] != '/' || !strchr(path + 1, '/'))
        return rm_error_set(err, "gRPC method path \"%s\" is not /package.Service/Method",
                            path ? path : "");
    if (!h || !h->on_start || !h->on_message)
        return rm_error_set(err, "%s: handler needs on_start and on_message", path);
    if (find_method(gs, (struct rm_str){path, strlen(path)}))
        return rm_error_set(err, "%s: method registered twice", path);
    struct method *v = realloc(gs->methods, (gs->nmethods + 1) * sizeof(*v));
    if (!v) return rm_error_set(err, "out of memory");
    gs->methods = v;
    v[gs->nmethods++] = (struct method){.path = strdup(path), .h = h, .ctx = ctx};
    return RM_OK;
}

static int local_port(int fd)
{
    struct sockaddr_storage a;
    socklen_t len = sizeof(a);
    if (getsockname(fd, (struct sockaddr *)&a, &len) != 0) return 0;
    if (a.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&a)->sin_port);
    if (a.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&a)->sin6_port);
    return 0;
}

static const char *addr_str(const struct sockaddr *addr, char *buf, size_t n)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (addr->sa_family == AF_UNIX) return rm_sockaddr_str(addr, buf, n), buf;
    if (addr->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)addr;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
        port = ntohs(a->sin_port);
    } else if (addr->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)addr;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
        port = ntohs(a->sin6_port);
    }
    snprintf(buf, n, addr->sa_family == AF_INET6 ? "[%s]:%d" : "%s:%d", ip, port);
    return buf;
}

int rm_grpc_server_listen(struct rm_grpc_server *gs, const struct sockaddr *addr, socklen_t len,
                          struct rm_error *err)
{
    char where[RM_SOCKADDR_STRLEN];
    if (gs->listening) return rm_error_set(err, "the gRPC server listens already");
    int fd = rm_listen_socket(addr, len, false, 128);
    if (fd < 0)
        return rm_error_set(err, "cannot listen on %s: %s", addr_str(addr, where, sizeof(where)),
                            strerror(-fd));
    gs->port = local_port(fd);
    int rc = rm_listener_start(&gs->listener, gs->loop, fd, on_accept, gs);
    if (rc < 0)
        return rm_error_set(err, "cannot listen on %s: %s", addr_str(addr, where, sizeof(where)),
                            strerror(-rc));
    gs->listening = true;
    return RM_OK;
}

int rm_grpc_server_port(const struct rm_grpc_server *gs)
{
    return gs->port;
}

void rm_grpc_server_stop_listening(struct rm_grpc_server *gs)
{
    if (!gs->listening) return;
    gs->listening = false;
    rm_listener_stop(&gs->listener);
}

void rm_grpc_server_shutdown(struct rm_grpc_server *gs)
{
    rm_grpc_server_stop_listening(gs);
    for (struct sconn *sc = gs->conns; sc; sc = sc->next)
        sc->codec->ops->shutdown(sc->codec);
}

void rm_grpc_server_free(struct rm_grpc_server *gs)
{
    if (!gs) return;
    rm_grpc_server_stop_listening(gs);
    struct sconn *sc;
    while ((sc = gs->conns)) { /* its streams get on_reset (UNAVAILABLE) from close() */
        sconn_unlink(sc);
        sc->codec->ops->close(sc->codec);
        free(sc);
    }
    for (struct rm_grpc_scall *c = gs->calls; c; c = c->next) {
        scall_cancel(c, RM_GRPC_UNAVAILABLE, "server shutting down", true);
        c->srv = NULL; /* its task frees it without us */
    }
    for (size_t i = 0; i < gs->nmethods; i++)
        free(gs->methods[i].path);
    free(gs->methods);
    free(gs->scratch);
    free(gs);
}

const struct rm_grpc_server_stats *rm_grpc_server_stats(const struct rm_grpc_server *gs)
{
    return &gs->stats;
}
