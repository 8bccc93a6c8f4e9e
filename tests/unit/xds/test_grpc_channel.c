/* The gRPC client against an in-process HTTP/2 server (remora's own server codec on a loopback
 * listener, same loop): request headers, statuses from trailers, trailers-only and non-gRPC
 * responses, limits, deadlines, cancellation, keepalive, GOAWAY, connection loss, queued
 * calls, backpressure, and channel teardown from callbacks.  Every wait is bounded; every test
 * tears down through fx_finish() so that ASan sees no leak.
 *
 * Server behaviour by :path ("/t.T/<Method>"):
 *   Echo           echo each DATA chunk; OK trailers at the request's end
 *   TrailersOnly   HEADERS(:status 200, grpc-status 7, grpc-message "no%20way%21") END_STREAM
 *   LongMessage    the same with grpc-status 13 and a 2000-byte grpc-message
 *   Http503        :status 503, text/plain, a body
 *   NotGrpc        :status 200, text/html, a body
 *   NoStatus       gRPC headers, trailers without grpc-status
 *   Compressed     one message with the compressed flag
 *   Big            a prefix announcing 5 MiB (and 1 KiB of it)
 *   EndNoTrailers  one message on a DATA frame with END_STREAM
 *   Reset          RST_STREAM(CANCEL) after the headers
 *   Hang           headers, then nothing */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tests/unit/loop_wait.h"
#include "google/protobuf/duration.pb-c.h"
#include "proxy/http/h2_internal.h"
#include "proxy/server/server.h"
#include "xds/grpc_internal.h"

/* ---- server ------------------------------------------------------------------------------- */

#define MAX_REQS 64
#define MAX_CODECS 8

struct srv;

struct sreq {
    struct srv *srv;
    struct rm_stream *s;
    struct rm_arena arena;
    struct rm_headers hdrs; /* request headers, copied */
    char path[64];
    int codec_idx;
    bool req_end, resp_end, reset, released;
    size_t bytes;
};

struct srv {
    struct rm_loop *loop;
    int lfd;
    struct rm_io lio;
    struct sockaddr_in addr;
    struct rm_codec_settings st;
    struct rm_codec *codecs[MAX_CODECS];
    bool gone[MAX_CODECS];
    int ncodecs;
    struct sreq *reqs[MAX_REQS];
    int nreqs;
    int active, max_active;
};

static void sreq_release(struct sreq *r)
{
    if (r->released || !r->s) return;
    r->released = true;
    r->srv->active--;
    r->s->ops->release(r->s);
    r->s = NULL;
}

static void sreq_maybe_done(struct sreq *r)
{
    if (r->resp_end && r->req_end) sreq_release(r);
}

static struct rm_headers *resp_hdrs(struct sreq *r, const char *status, const char *ct)
{
    struct rm_headers *h = rm_arena_alloc(r->s->arena, sizeof(*h));
    rm_headers_init(h, r->s->arena);
    rm_headers_add(h, ":status", 7, status, strlen(status));
    if (ct) rm_headers_add(h, "content-type", 12, ct, strlen(ct));
    return h;
}

static void add(struct rm_headers *h, const char *n, const char *v)
{
    rm_headers_add(h, n, strlen(n), v, strlen(v));
}

static void respond_end(struct sreq *r, struct rm_headers *h)
{
    r->s->ops->submit_headers(r->s, h, true);
    r->resp_end = true;
    sreq_release(r); /* the codec stops the upload with RST_STREAM(NO_ERROR) if needed */
}

static void send_trailers(struct sreq *r, const char *status, const char *msg)
{
    struct rm_headers *t = rm_arena_alloc(r->s->arena, sizeof(*t));
    rm_headers_init(t, r->s->arena);
    if (status) add(t, "grpc-status", status);
    if (msg) add(t, "grpc-message", msg);
    if (!status) add(t, "x-other", "1");
    r->s->ops->submit_trailers(r->s, t);
    r->resp_end = true;
}

static bool is(const struct sreq *r, const char *m)
{
    return strcmp(r->path + 5, m) == 0; /* after "/t.T/" */
}

static void behave(struct sreq *r)
{
    struct rm_stream *s = r->s;
    uint8_t pfx[5];
    if (is(r, "TrailersOnly")) {
        struct rm_headers *h = resp_hdrs(r, "200", "application/grpc");
        add(h, "grpc-status", "7");
        add(h, "grpc-message", "no%20way%21");
        respond_end(r, h);
        return;
    }
    if (is(r, "LongMessage")) {
        struct rm_headers *h = resp_hdrs(r, "200", "application/grpc");
        add(h, "grpc-status", "13");
        char m[2001];
        memset(m, 'm', 2000);
        m[2000] = '\0';
        add(h, "grpc-message", m);
        respond_end(r, h);
        return;
    }
    if (is(r, "Http503") || is(r, "NotGrpc")) {
        bool b = is(r, "Http503");
        s->ops->submit_headers(s, resp_hdrs(r, b ? "503" : "200", b ? "text/plain" : "text/html"),
                               false);
        s->ops->submit_data(s, (const uint8_t *)"<html>", 6, true);
        r->resp_end = true;
        sreq_release(r);
        return;
    }
    s->ops->submit_headers(s, resp_hdrs(r, "200", "application/grpc"), false);
    if (is(r, "NoStatus")) {
        send_trailers(r, NULL, NULL);
        sreq_release(r);
    } else if (is(r, "Compressed")) {
        uint8_t m[6] = {1, 0, 0, 0, 1, 'z'};
        s->ops->submit_data(s, m, 6, false);
        send_trailers(r, "0", NULL);
        sreq_release(r);
    } else if (is(r, "Big")) {
        static uint8_t kib[1024];
        rm_grpc_prefix_write(pfx, 5u << 20);
        s->ops->submit_data(s, pfx, 5, false);
        s->ops->submit_data(s, kib, sizeof(kib), false);
    } else if (is(r, "EndNoTrailers")) {
        rm_grpc_prefix_write(pfx, 2);
        s->ops->submit_data(s, pfx, 5, false);
        s->ops->submit_data(s, (const uint8_t *)"hi", 2, true);
        r->resp_end = true;
        sreq_release(r);
    } else if (is(r, "Reset")) {
        r->reset = true;
        s->ops->reset(s, RM_RESET_LOCAL);
        sreq_release(r);
    }
}

static void s_headers(struct rm_stream *s, struct rm_headers *h, bool end)
{
    struct sreq *r = s->user;
    rm_headers_copy(&r->hdrs, h);
    struct rm_str p = RM_HDR_GET(h, ":path");
    snprintf(r->path, sizeof(r->path), "%.*s", (int)p.len, p.p ? p.p : "");
    r->req_end = end;
    behave(r);
    if (r->s && end && is(r, "Echo")) {
        s->ops->submit_headers(s, resp_hdrs(r, "200", "application/grpc"), false);
        send_trailers(r, "0", NULL);
        sreq_maybe_done(r);
    }
}

static void s_data(struct rm_stream *s, const uint8_t *p, size_t n, bool end)
{
    struct sreq *r = s->user;
    r->bytes += n;
    r->req_end = end;
    if (!r->s) return;
    if (is(r, "Echo")) {
        if (n) s->ops->submit_data(s, p, n, false);
        if (end) send_trailers(r, "0", NULL);
    }
    sreq_maybe_done(r);
}

static void s_trailers(struct rm_stream *s, struct rm_headers *h)
{
    s_data(s, NULL, 0, true);
}

static void s_reset(struct rm_stream *s, enum rm_reset_reason reason)
{
    struct sreq *r = s->user;
    r->reset = true;
    sreq_release(r);
}

static const struct rm_stream_events srv_ev = {
    .on_headers = s_headers,
    .on_data = s_data,
    .on_trailers = s_trailers,
    .on_reset = s_reset,
};

static struct srv *slot_srv[MAX_CODECS]; /* codec users: one slot per server connection */

static void srv_on_stream(void *user, struct rm_stream *s)
{
    struct srv **slot = user;
    struct srv *sv = *slot;
    cr_assert_lt(sv->nreqs, MAX_REQS);
    struct sreq *r = calloc(1, sizeof(*r));
    r->srv = sv;
    r->s = s;
    r->codec_idx = (int)(slot - slot_srv);
    rm_arena_init(&r->arena);
    rm_headers_init(&r->hdrs, &r->arena);
    sv->reqs[sv->nreqs++] = r;
    if (++sv->active > sv->max_active) sv->max_active = sv->active;
    s->ev = &srv_ev;
    s->user = r;
}

static void srv_on_close(void *user, int err)
{
    struct srv **slot = user;
    struct srv *sv = *slot;
    sv->gone[slot - slot_srv] = true;
}

static const struct rm_codec_callbacks srv_cb = {
    .on_stream = srv_on_stream,
    .on_close = srv_on_close,
};

static void srv_accept(struct rm_io *io, uint32_t events)
{
    struct srv *sv = rm_container_of(io, struct srv, lio);
    for (;;) {
        struct sockaddr_storage peer;
        socklen_t plen = sizeof(peer);
        int fd = accept4(sv->lfd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        cr_assert_lt(sv->ncodecs, MAX_CODECS);
        struct rm_conn *c =
            rm_conn_accepted(sv->loop, fd, (struct sockaddr *)&peer, plen, NULL, NULL);
        int i = sv->ncodecs++;
        slot_srv[i] = sv;
        sv->codecs[i] = rm_h2_server_new(c, &sv->st, &srv_cb, &slot_srv[i]);
        cr_assert_not_null(sv->codecs[i]);
    }
}

static int listen_on(struct sockaddr_in *a)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    memset(a, 0, sizeof(*a));
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(fd, (struct sockaddr *)a, sizeof(*a)), 0);
    cr_assert_eq(listen(fd, 16), 0);
    socklen_t len = sizeof(*a);
    getsockname(fd, (struct sockaddr *)a, &len);
    return fd;
}

static void srv_start(struct srv *sv, struct rm_loop *loop)
{
    sv->loop = loop;
    sv->lfd = listen_on(&sv->addr);
    cr_assert_eq(rm_io_start(loop, &sv->lio, sv->lfd, EPOLLIN, srv_accept), 0);
}

/* Close one server connection abruptly (as a crash would). */
static void srv_drop(struct srv *sv, int i)
{
    if (sv->gone[i]) return;
    sv->gone[i] = true;
    for (int k = 0; k < sv->nreqs; k++)
        if (sv->reqs[k]->s) {
            sv->reqs[k]->reset = true;
            sreq_release(sv->reqs[k]);
        }
    sv->codecs[i]->ops->close(sv->codecs[i]);
}

/* ---- client records and the fixture ------------------------------------------------------- */

struct rec {
    struct rm_grpc_call *call;
    int closes;
    int status;
    char msg[512];
    size_t msg_len;
    int msgs;
    size_t bytes;
    char first[64];
    int writables;
    bool cancel_on_msg;
    struct rm_grpc_channel **free_on_msg; /* free this channel from on_message */
    bool events_after_close;
};

static void r_message(void *ctx, const uint8_t *m, size_t n)
{
    struct rec *r = ctx;
    if (r->closes) r->events_after_close = true;
    if (r->msgs++ == 0) snprintf(r->first, sizeof(r->first), "%.*s", (int)n, (const char *)m);
    r->bytes += n;
    if (r->cancel_on_msg) rm_grpc_call_cancel(r->call);
    if (r->free_on_msg && *r->free_on_msg) {
        rm_grpc_channel_free(*r->free_on_msg);
        *r->free_on_msg = NULL;
    }
}

static void r_close(void *ctx, int status, const char *msg)
{
    struct rec *r = ctx;
    r->closes++;
    r->status = status;
    snprintf(r->msg, sizeof(r->msg), "%s", msg);
    r->msg_len = strlen(msg);
    r->call = NULL;
}

static void r_writable(void *ctx)
{
    struct rec *r = ctx;
    r->writables++;
}

static const struct rm_grpc_call_cb rec_cb = {
    .on_message = r_message,
    .on_close = r_close,
    .on_writable = r_writable,
};

struct fx {
    struct rm_loop *loop;
    struct srv sv;
    struct rm_grpc_channel *ch;
};

#define now_ms rm_test_now_ms
#define WAIT(f, cond, ms) RM_TEST_WAIT((f)->loop, cond, ms)

static void settle(struct fx *f, int ms)
{
    rm_test_settle(f->loop, ms);
}

static void fx_channel(struct fx *f, const struct sockaddr_in *a,
                       const struct rm_grpc_channel_opts *o)
{
    struct rm_error err;
    f->ch =
        rm_grpc_channel_new(f->loop, (const struct sockaddr *)a, sizeof(*a), "test.local", o, &err);
    cr_assert_not_null(f->ch, "%s", err.msg);
}

static void fx_init(struct fx *f, const struct rm_grpc_channel_opts *o)
{
    memset(f, 0, sizeof(*f));
    f->loop = rm_loop_new();
    srv_start(&f->sv, f->loop);
    fx_channel(f, &f->sv.addr, o);
}

static void fx_finish(struct fx *f)
{
    rm_grpc_channel_free(f->ch);
    f->ch = NULL;
    settle(f, 3);
    struct srv *sv = &f->sv;
    for (int i = 0; i < sv->ncodecs; i++)
        if (!sv->gone[i]) srv_drop(sv, i);
    for (int k = 0; k < sv->nreqs; k++)
        sreq_release(sv->reqs[k]);
    if (sv->lfd >= 0) {
        rm_io_stop(f->loop, &sv->lio);
        close(sv->lfd);
    }
    settle(f, 3);
    for (int k = 0; k < sv->nreqs; k++) {
        rm_arena_dispose(&sv->reqs[k]->arena);
        free(sv->reqs[k]);
    }
    rm_loop_free(f->loop);
    rm_buf_thread_cleanup();
    rm_arena_thread_cleanup();
    rm_h2_mem_thread_cleanup();
}

static struct rm_grpc_call *start(struct fx *f, const char *method, struct rec *r,
                                  uint32_t deadline_ms)
{
    char path[64];
    snprintf(path, sizeof(path), "/t.T/%s", method);
    memset(r, 0, sizeof(*r));
    r->call = rm_grpc_call_start(f->ch, path, NULL, 0, deadline_ms, &rec_cb, r);
    cr_assert_not_null(r->call);
    return r->call;
}

static void send_str(struct rec *r, const char *s)
{
    cr_assert_eq(rm_grpc_call_send(r->call, (const uint8_t *)s, strlen(s)), 0);
}

static struct sreq *last_req(struct fx *f)
{
    return f->sv.nreqs ? f->sv.reqs[f->sv.nreqs - 1] : NULL;
}

/* ---- tests -------------------------------------------------------------------------------- */

Test(grpc_channel, unary_echo_sends_the_protocol_headers)
{
    struct fx f;
    fx_init(&f, NULL);
    struct rec r;
    memset(&r, 0, sizeof(r));
    struct rm_header md[] = {
        {(uint8_t *)"x-probe", (uint8_t *)"42", 7, 2, 0, 0},
        {(uint8_t *)":path", (uint8_t *)"/evil", 5, 5, 0, 0},
        {(uint8_t *)"te", (uint8_t *)"gzip", 2, 4, 0, 0},
    };
    r.call = rm_grpc_call_start(f.ch, "/t.T/Echo", md, 3, 1500, &rec_cb, &r);
    send_str(&r, "hello"); /* queued while connecting */
    rm_grpc_call_half_close(r.call);
    cr_assert_eq(rm_grpc_call_send(r.call, (const uint8_t *)"x", 1), -1, "send after half-close");
    WAIT(&f, r.closes, 2000);
    cr_assert_eq(r.closes, 1);
    cr_assert_eq(r.status, RM_GRPC_OK, "%d %s", r.status, r.msg);
    cr_assert_eq(r.msgs, 1);
    cr_assert_str_eq(r.first, "hello");
    struct sreq *q = last_req(&f);
    cr_assert_not_null(q);
    const char *want[][2] = {{":method", "POST"},
                             {":scheme", "http"},
                             {":path", "/t.T/Echo"},
                             {":authority", "test.local"},
                             {"content-type", "application/grpc"},
                             {"te", "trailers"},
                             {"user-agent", "remora/" RM_VERSION " grpc-c"},
                             {"x-probe", "42"}};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        struct rm_str v = rm_headers_get(&q->hdrs, want[i][0], strlen(want[i][0]));
        cr_assert_not_null(v.p, "%s missing", want[i][0]);
        cr_assert(rm_str_eq(v, want[i][1], strlen(want[i][1])), "%s: %.*s", want[i][0], (int)v.len,
                  v.p);
    }
    int te = 0;
    for (uint32_t i = 0; i < q->hdrs.n; i++)
        te += q->hdrs.v[i].name_len == 2 && memcmp(q->hdrs.v[i].name, "te", 2) == 0;
    cr_assert_eq(te, 1, "reserved metadata was not skipped");
    struct rm_str gt = RM_HDR_GET(&q->hdrs, "grpc-timeout");
    cr_assert_not_null(gt.p);
    uint64_t ms;
    cr_assert_eq(rm_grpc_timeout_parse(gt.p, gt.len, &ms), 0);
    cr_assert(ms > 1000 && ms <= 1500, "grpc-timeout %.*s", (int)gt.len, gt.p);
    const struct rm_grpc_channel_stats *st = rm_grpc_channel_stats(f.ch);
    cr_assert_eq(st->connects, 1);
    cr_assert_eq(st->calls_ok, 1);
    fx_finish(&f);
}

Test(grpc_channel, trailers_only_status_and_decoded_message)
{
    struct fx f;
    fx_init(&f, NULL);
    struct rec r;
    start(&f, "TrailersOnly", &r, 0);
    rm_grpc_call_half_close(r.call);
    WAIT(&f, r.closes, 2000);
    cr_assert_eq(r.status, RM_GRPC_PERMISSION_DENIED);
    cr_assert_str_eq(r.msg, "no way!");
    cr_assert_eq(r.msgs, 0);
    struct rec l;
    start(&f, "LongMessage", &l, 0);
    WAIT(&f, l.closes, 2000);
    cr_assert_eq(l.status, RM_GRPC_INTERNAL);
    cr_assert_eq(l.msg_len, 2000, "grpc-message kept whole");
    fx_finish(&f);
}

struct expect {
    const char *method;
    int status;
    const char *msg_part;
};

Test(grpc_channel, http_and_protocol_failures_map_to_statuses)
{
    struct fx f;
    fx_init(&f, NULL);
    const struct expect cases[] = {
        {"Http503", RM_GRPC_UNAVAILABLE, "HTTP status 503"},
        {"NotGrpc", RM_GRPC_UNKNOWN, "not gRPC"},
        {"NoStatus", RM_GRPC_INTERNAL, "without grpc-status"},
        {"Compressed", RM_GRPC_INTERNAL, "compressed"},
        {"Big", RM_GRPC_RESOURCE_EXHAUSTED, "larger than max (5242880 vs. 4194304)"},
        {"EndNoTrailers", RM_GRPC_INTERNAL, "without trailers"},
        {"Reset", RM_GRPC_CANCELLED, "reset"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct rec r;
        start(&f, cases[i].method, &r, 0);
        send_str(&r, "x");
        WAIT(&f, r.closes, 2000);
        cr_assert_eq(r.closes, 1, "%s", cases[i].method);
        cr_assert_eq(r.status, cases[i].status, "%s: %d %s", cases[i].method, r.status, r.msg);
        cr_assert(strstr(r.msg, cases[i].msg_part), "%s: %s", cases[i].method, r.msg);
        settle(&f, 2);
        cr_assert(!r.events_after_close);
    }
    /* the Big stream was cancelled by the client */
    WAIT(&f, f.sv.reqs[4]->reset, 1000);
    cr_assert(f.sv.reqs[4]->reset);
    cr_assert_eq(rm_grpc_channel_stats(f.ch)->connects, 1, "one connection for all");
    fx_finish(&f);
}

Test(grpc_channel, small_receive_limit)
{
    struct fx f;
    struct rm_grpc_channel_opts o = {.max_recv_msg = 4};
    fx_init(&f, &o);
    struct rec r;
    start(&f, "Echo", &r, 0);
    send_str(&r, "1234");
    send_str(&r, "12345");
    WAIT(&f, r.closes, 2000);
    cr_assert_eq(r.msgs, 1);
    cr_assert_eq(r.status, RM_GRPC_RESOURCE_EXHAUSTED, "%s", r.msg);
    WAIT(&f, last_req(&f)->reset, 1000);
    cr_assert(last_req(&f)->reset, "the server saw the cancel");
    fx_finish(&f);
}

Test(grpc_channel, deadline_exceeded_cancels_the_stream)
{
    struct fx f;
    fx_init(&f, NULL);
    struct rec r;
    uint64_t t0 = now_ms();
    start(&f, "Hang", &r, 100);
    send_str(&r, "x");
    WAIT(&f, r.closes, 2000);
    uint64_t dt = now_ms() - t0;
    cr_assert_eq(r.status, RM_GRPC_DEADLINE_EXCEEDED);
    cr_assert(dt >= 95 && dt < 1000, "%llu ms", (unsigned long long)dt);
    WAIT(&f, last_req(&f)->reset, 1000);
    cr_assert(last_req(&f)->reset);
    fx_finish(&f);
}

Test(grpc_channel, cancel_mid_stream_stops_callbacks)
{
    struct fx f;
    fx_init(&f, NULL);
    struct rec r;
    start(&f, "Echo", &r, 0);
    r.cancel_on_msg = true;
    send_str(&r, "one");
    send_str(&r, "two");
    send_str(&r, "three");
    WAIT(&f, f.sv.nreqs && last_req(&f)->reset, 2000);
    cr_assert(last_req(&f)->reset, "server saw the reset");
    settle(&f, 20);
    cr_assert_eq(r.msgs, 1);
    cr_assert_eq(r.closes, 0, "no on_close after cancel");
    /* cancel before the connection exists: nothing reaches the server */
    rm_grpc_channel_free(f.ch);
    fx_channel(&f, &f.sv.addr, NULL);
    struct rec r2;
    start(&f, "Echo", &r2, 0);
    send_str(&r2, "never");
    rm_grpc_call_cancel(r2.call);
    cr_assert_eq(rm_grpc_call_send(r2.call, (const uint8_t *)"x", 1), -1);
    int before = f.sv.nreqs;
    settle(&f, 20);
    cr_assert_eq(f.sv.nreqs, before);
    cr_assert_eq(r2.closes, 0);
    fx_finish(&f);
}

Test(grpc_channel, connect_refused_names_the_address)
{
    struct fx f;
    fx_init(&f, NULL);
    struct sockaddr_in dead;
    int fd = listen_on(&dead);
    close(fd); /* nothing listens there now */
    rm_grpc_channel_free(f.ch);
    fx_channel(&f, &dead, NULL);
    struct rec r[3];
    for (int i = 0; i < 3; i++)
        start(&f, "Echo", &r[i], 0);
    cr_assert_eq(r[0].closes, 0, "never synchronously");
    WAIT(&f, r[0].closes && r[1].closes && r[2].closes, 2000);
    char want[96];
    snprintf(want, sizeof(want), "failed to connect to 127.0.0.1:%u: Connection refused",
             ntohs(dead.sin_port));
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(r[i].status, RM_GRPC_UNAVAILABLE);
        cr_assert_str_eq(r[i].msg, want);
    }
    const struct rm_grpc_channel_stats *st = rm_grpc_channel_stats(f.ch);
    cr_assert_eq(st->connects, 1);
    cr_assert_eq(st->connect_failures, 1);
    /* the next call tries again */
    struct rec r4;
    start(&f, "Echo", &r4, 0);
    WAIT(&f, r4.closes, 2000);
    cr_assert_eq(r4.status, RM_GRPC_UNAVAILABLE);
    cr_assert_eq(st->connects, 2);
    fx_finish(&f);
}

Test(grpc_channel, keepalive_pings_are_acked)
{
    struct fx f;
    struct rm_grpc_channel_opts o = {.keepalive_interval_ms = 10, .keepalive_timeout_ms = 500};
    fx_init(&f, &o);
    struct rec r;
    start(&f, "Hang", &r, 0);
    const struct rm_grpc_channel_stats *st = rm_grpc_channel_stats(f.ch);
    WAIT(&f, st->pings_acked >= 3, 2000);
    cr_assert_geq(st->pings_acked, 3);
    cr_assert_eq(r.closes, 0);
    rm_grpc_call_cancel(r.call);
    settle(&f, 5);
    uint64_t sent = st->pings_sent;
    settle(&f, 40);
    cr_assert_leq(st->pings_sent, sent + 1, "no PINGs without calls");
    fx_finish(&f);
}

Test(grpc_channel, keepalive_timeout_closes_the_connection)
{
    struct fx f;
    fx_init(&f, NULL);
    struct sockaddr_in hole;
    int fd = listen_on(&hole); /* the kernel accepts; nobody ever answers */
    rm_grpc_channel_free(f.ch);
    struct rm_grpc_channel_opts o = {.keepalive_interval_ms = 20, .keepalive_timeout_ms = 50};
    fx_channel(&f, &hole, &o);
    struct rec r;
    start(&f, "Hang", &r, 0);
    WAIT(&f, r.closes, 2000);
    cr_assert_eq(r.status, RM_GRPC_UNAVAILABLE);
    cr_assert(strstr(r.msg, "keepalive"), "%s", r.msg);
    cr_assert_eq(rm_grpc_channel_stats(f.ch)->keepalive_timeouts, 1);
    close(fd);
    fx_finish(&f);
}

Test(grpc_channel, connection_loss_is_unavailable_then_reconnects)
{
    struct fx f;
    fx_init(&f, NULL);
    struct rec r;
    start(&f, "Hang", &r, 0);
    WAIT(&f, f.sv.nreqs == 1, 2000);
    srv_drop(&f.sv, 0);
    WAIT(&f, r.closes, 2000);
    cr_assert_eq(r.status, RM_GRPC_UNAVAILABLE);
    cr_assert(strstr(r.msg, "connection to 127.0.0.1:"), "%s", r.msg);
    struct rec r2;
    start(&f, "Echo", &r2, 0);
    send_str(&r2, "again");
    rm_grpc_call_half_close(r2.call);
    WAIT(&f, r2.closes, 2000);
    cr_assert_eq(r2.status, RM_GRPC_OK, "%s", r2.msg);
    cr_assert_str_eq(r2.first, "again");
    cr_assert_eq(rm_grpc_channel_stats(f.ch)->connects, 2);
    cr_assert_eq(rm_grpc_channel_stats(f.ch)->disconnects, 1);
    fx_finish(&f);
}

Test(grpc_channel, goaway_lets_calls_finish_and_new_calls_reconnect)
{
    struct fx f;
    fx_init(&f, NULL);
    struct rec r;
    start(&f, "Echo", &r, 0);
    send_str(&r, "first");
    WAIT(&f, r.msgs == 1, 2000);
    f.sv.codecs[0]->ops->shutdown(f.sv.codecs[0]);
    const struct rm_grpc_channel_stats *st = rm_grpc_channel_stats(f.ch);
    WAIT(&f, st->goaways == 1, 2000);
    cr_assert_eq(st->goaways, 1);
    struct rec r2;
    start(&f, "Echo", &r2, 0);
    send_str(&r2, "new");
    rm_grpc_call_half_close(r2.call);
    WAIT(&f, r2.closes, 2000);
    cr_assert_eq(r2.status, RM_GRPC_OK, "%s", r2.msg);
    cr_assert_eq(st->connects, 2);
    cr_assert_eq(last_req(&f)->codec_idx, 1, "the new call went to a new connection");
    send_str(&r, "second"); /* the old call still works on the old connection */
    rm_grpc_call_half_close(r.call);
    WAIT(&f, r.closes, 2000);
    cr_assert_eq(r.status, RM_GRPC_OK, "%s", r.msg);
    cr_assert_eq(r.msgs, 2);
    WAIT(&f, f.sv.gone[0], 2000);
    cr_assert(f.sv.gone[0], "the drained connection was closed");
    fx_finish(&f);
}

Test(grpc_channel, calls_wait_for_a_stream_slot)
{
    struct fx f;
    memset(&f, 0, sizeof(f));
    f.loop = rm_loop_new();
    f.sv.st.h2_max_concurrent_streams = 2;
    srv_start(&f.sv, f.loop);
    fx_channel(&f, &f.sv.addr, NULL);
    struct rec first, hang;
    start(&f, "Echo", &first, 0); /* one round trip: the server's SETTINGS are in */
    rm_grpc_call_half_close(first.call);
    WAIT(&f, first.closes, 2000);
    start(&f, "Hang", &hang, 0); /* holds one slot: the codec never goes idle */
    struct rec r[6];
    for (int i = 0; i < 6; i++) {
        start(&f, "Echo", &r[i], 0);
        char m[8];
        snprintf(m, sizeof(m), "m%d", i);
        send_str(&r[i], m);
        rm_grpc_call_half_close(r[i].call);
    }
    WAIT(&f, r[0].closes && r[1].closes && r[2].closes && r[3].closes && r[4].closes && r[5].closes,
         3000);
    for (int i = 0; i < 6; i++) {
        char m[8];
        snprintf(m, sizeof(m), "m%d", i);
        cr_assert_eq(r[i].status, RM_GRPC_OK, "%d: %s", i, r[i].msg);
        cr_assert_str_eq(r[i].first, m);
    }
    cr_assert_leq(f.sv.max_active, 2);
    cr_assert_eq(rm_grpc_channel_stats(f.ch)->connects, 1);
    cr_assert_eq(hang.closes, 0);
    rm_grpc_call_cancel(hang.call);
    fx_finish(&f);
}

Test(grpc_channel, backpressure_with_large_messages)
{
    struct fx f;
    struct rm_grpc_channel_opts o = {.call_buffer = 64 * 1024};
    fx_init(&f, &o);
    struct rec r;
    start(&f, "Echo", &r, 0);
    static uint8_t big[256 * 1024];
    memset(big, 'b', sizeof(big));
    int sent = 0, blocked = 0;
    uint64_t end = now_ms() + 5000;
    while (sent < 40 && now_ms() < end) {
        if (rm_grpc_call_write_blocked(r.call)) {
            blocked++;
            int w = r.writables;
            WAIT(&f, r.writables > w, 2000);
            cr_assert_gt(r.writables, w, "on_writable");
            continue;
        }
        cr_assert_eq(rm_grpc_call_send(r.call, big, sizeof(big)), 0);
        sent++;
    }
    rm_grpc_call_half_close(r.call);
    WAIT(&f, r.closes, 5000);
    cr_assert_eq(r.status, RM_GRPC_OK, "%s", r.msg);
    cr_assert_eq(r.msgs, 40);
    cr_assert_eq(r.bytes, 40 * sizeof(big));
    cr_assert_geq(blocked, 10, "blocked %d times", blocked);
    fx_finish(&f);
}

Test(grpc_channel, backpressure_while_connecting)
{
    struct fx f;
    struct rm_grpc_channel_opts o = {.call_buffer = 1000};
    fx_init(&f, &o);
    struct rec r;
    start(&f, "Echo", &r, 0);
    static uint8_t m[600];
    send_str(&r, "a");
    cr_assert(!rm_grpc_call_write_blocked(r.call));
    cr_assert_eq(rm_grpc_call_send(r.call, m, sizeof(m)), 0);
    cr_assert_eq(rm_grpc_call_send(r.call, m, sizeof(m)), 0);
    cr_assert(rm_grpc_call_write_blocked(r.call));
    WAIT(&f, r.writables, 2000);
    cr_assert_eq(r.writables, 1);
    rm_grpc_call_half_close(r.call);
    WAIT(&f, r.closes, 2000);
    cr_assert_eq(r.msgs, 3);
    cr_assert_eq(r.status, RM_GRPC_OK);
    fx_finish(&f);
}

Test(grpc_channel, channel_free_cancels_every_call_synchronously)
{
    struct fx f;
    fx_init(&f, NULL);
    struct rec a, b, c;
    start(&f, "Hang", &a, 0);
    WAIT(&f, f.sv.nreqs == 1, 2000);
    start(&f, "Hang", &b, 0);
    start(&f, "TrailersOnly", &c, 0);
    rm_grpc_call_half_close(c.call);
    WAIT(&f, c.closes, 2000);
    rm_grpc_channel_free(f.ch);
    f.ch = NULL;
    cr_assert_eq(a.closes, 1);
    cr_assert_eq(a.status, RM_GRPC_CANCELLED);
    cr_assert_str_eq(a.msg, "channel closed");
    cr_assert_eq(b.closes, 1);
    cr_assert_eq(c.closes, 1);
    WAIT(&f, f.sv.reqs[0]->reset, 1000);
    cr_assert(f.sv.reqs[0]->reset, "the server saw the connection go");
    fx_finish(&f);
}

Test(grpc_channel, channel_free_from_on_message)
{
    struct fx f;
    fx_init(&f, NULL);
    struct rec r, other;
    start(&f, "Echo", &r, 0);
    start(&f, "Hang", &other, 0);
    r.free_on_msg = &f.ch;
    send_str(&r, "one");
    send_str(&r, "two");
    WAIT(&f, f.ch == NULL, 2000);
    cr_assert_null(f.ch);
    cr_assert_eq(r.msgs, 1);
    cr_assert_eq(r.closes, 1);
    cr_assert_eq(r.status, RM_GRPC_CANCELLED);
    cr_assert_eq(other.closes, 1);
    settle(&f, 10);
    cr_assert_eq(r.msgs, 1);
    fx_finish(&f);
}

Test(grpc_channel, send_pb_frames_a_protobuf_message)
{
    struct fx f;
    fx_init(&f, NULL);
    struct rec r;
    start(&f, "Echo", &r, 0);
    Google__Protobuf__Duration d = GOOGLE__PROTOBUF__DURATION__INIT;
    d.seconds = 3; /* 08 03 10 05 */
    d.nanos = 5;
    cr_assert_eq(rm_grpc_call_send_pb(r.call, &d.base), 0);
    rm_grpc_call_half_close(r.call);
    WAIT(&f, r.closes, 2000);
    cr_assert_eq(r.status, RM_GRPC_OK);
    cr_assert_eq(r.bytes, 4);
    cr_assert_eq(memcmp(r.first, "\x08\x03\x10\x05", 4), 0);
    fx_finish(&f);
}
