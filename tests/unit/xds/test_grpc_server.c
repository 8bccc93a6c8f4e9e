/* The gRPC server (xds/grpc_server.h) against remora's own gRPC client (xds/grpc.h), both on
 * one loop over loopback: bidi echo, half-close, statuses with percent-encoded messages
 * (trailers and trailers-only), unknown methods, client cancellation, deadlines, message size
 * limits, backpressure with on_writable, request metadata, and shutdown with calls open.
 * Every wait is bounded; every test tears down through fx_fini() so that ASan sees no leak.
 *
 * Methods ("/t.S/<Name>"):
 *   Echo      each request message back; OK when the client half-closes
 *   Fail      refused in on_start: INVALID_ARGUMENT with a message that needs encoding
 *   FailLate  one message "partial", then ABORTED
 *   Flood     the first request "N": N messages of 1 KiB (4-byte index first), sent while
 *             not write-blocked and resumed by on_writable; then OK
 *   Hang      nothing: waits for the client (or a deadline) */
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tests/unit/loop_wait.h"
#include "proxy/http/h2_internal.h"
#include "xds/grpc.h"
#include "xds/grpc_server.h"

/* ---- the server side ---------------------------------------------------------------------- */

struct srec {
    int starts, msgs, half_closes, cancels, writables, blocked;
    int cancel_status;
    char cancel_why[128];
    char ua[64];
    struct rm_grpc_scall *call;
    unsigned flood_total, flood_sent;
};

static struct srec S;

static void flood_more(struct rm_grpc_scall *c)
{
    uint8_t m[1024];
    memset(m, 'f', sizeof(m));
    while (S.flood_sent < S.flood_total) {
        if (rm_grpc_scall_write_blocked(c)) {
            S.blocked++;
            return;
        }
        memcpy(m, &S.flood_sent, 4);
        cr_assert_eq(rm_grpc_scall_send(c, m, sizeof(m)), 0);
        S.flood_sent++;
    }
    rm_grpc_scall_finish(c, RM_GRPC_OK, NULL);
}

static void *s_start(void *ctx, struct rm_grpc_scall *c)
{
    const char *m = ctx;
    S.starts++;
    S.call = c;
    struct rm_str ua = rm_grpc_scall_header(c, "user-agent");
    snprintf(S.ua, sizeof(S.ua), "%.*s", (int)ua.len, ua.p ? ua.p : "");
    if (strcmp(m, "Fail") == 0)
        rm_grpc_scall_finish(c, RM_GRPC_INVALID_ARGUMENT,
                             "bad: 100%% \xc3\xbcnic\xc3\xb6"
                             "de\n");
    if (strcmp(m, "FailLate") == 0) {
        rm_grpc_scall_send(c, (const uint8_t *)"partial", 7);
        rm_grpc_scall_finish(c, RM_GRPC_ABORTED, "gave up");
    }
    return (void *)m;
}

static void s_message(struct rm_grpc_scall *c, const uint8_t *msg, size_t len)
{
    const char *m = rm_grpc_scall_user(c);
    S.msgs++;
    if (strcmp(m, "Echo") == 0) {
        cr_assert_eq(rm_grpc_scall_send(c, msg, len), 0);
    } else if (strcmp(m, "Flood") == 0 && !S.flood_total) {
        S.flood_total = (unsigned)atoi((const char *)msg);
        flood_more(c);
    }
}

static void s_half_close(struct rm_grpc_scall *c)
{
    S.half_closes++;
    if (strcmp(rm_grpc_scall_user(c), "Echo") == 0) rm_grpc_scall_finish(c, RM_GRPC_OK, NULL);
}

static void s_cancel(struct rm_grpc_scall *c, int status, const char *why)
{
    S.cancels++;
    S.cancel_status = status;
    snprintf(S.cancel_why, sizeof(S.cancel_why), "%s", why);
    S.call = NULL;
    cr_assert(!rm_grpc_scall_open(c));
    cr_assert_lt(rm_grpc_scall_send(c, (const uint8_t *)"x", 1), 0, "no sending after the end");
}

static void s_writable(struct rm_grpc_scall *c)
{
    S.writables++;
    if (strcmp(rm_grpc_scall_user(c), "Flood") == 0) flood_more(c);
}

static const struct rm_grpc_handler handler = {
    .on_start = s_start,
    .on_message = s_message,
    .on_half_close = s_half_close,
    .on_cancel = s_cancel,
    .on_writable = s_writable,
};

/* ---- the client side ---------------------------------------------------------------------- */

struct rec {
    struct rm_grpc_call *call;
    int closes, status, msgs;
    char msg[512];
    char first[64];
    unsigned next_index;
    bool out_of_order;
};

static void r_message(void *ctx, const uint8_t *m, size_t n)
{
    struct rec *r = ctx;
    if (r->msgs++ == 0) snprintf(r->first, sizeof(r->first), "%.*s", (int)n, (const char *)m);
    if (n == 1024) {
        unsigned idx;
        memcpy(&idx, m, 4);
        if (idx != r->next_index) r->out_of_order = true;
        r->next_index++;
    }
}

static void r_close(void *ctx, int status, const char *msg)
{
    struct rec *r = ctx;
    r->closes++;
    r->status = status;
    snprintf(r->msg, sizeof(r->msg), "%s", msg);
    r->call = NULL;
}

static const struct rm_grpc_call_cb rec_cb = {.on_message = r_message, .on_close = r_close};

/* ---- fixture ------------------------------------------------------------------------------ */

struct fx {
    struct rm_loop *loop;
    struct rm_grpc_server *gs;
    struct rm_grpc_channel *ch;
};

#define now_ms rm_test_now_ms
#define WAIT(f, cond, ms) RM_TEST_WAIT((f)->loop, cond, ms)

static void settle(struct fx *f, int ms)
{
    rm_test_settle(f->loop, ms);
}

static void fx_init(struct fx *f, const struct rm_grpc_server_opts *o)
{
    static const char *const methods[] = {"Echo", "Fail", "FailLate", "Flood", "Hang"};
    struct rm_error err;
    memset(f, 0, sizeof(*f));
    memset(&S, 0, sizeof(S));
    f->loop = rm_loop_new();
    struct rm_grpc_server_opts quiet = {.quiet = true};
    if (o) quiet = *o, quiet.quiet = true;
    f->gs = rm_grpc_server_new(f->loop, &quiet);
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        char path[64];
        snprintf(path, sizeof(path), "/t.S/%s", methods[i]);
        cr_assert_eq(rm_grpc_server_add_method(f->gs, path, &handler, (void *)methods[i], &err),
                     RM_OK, "%s", err.msg);
    }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(rm_grpc_server_listen(f->gs, (struct sockaddr *)&a, sizeof(a), &err), RM_OK, "%s",
                 err.msg);
    a.sin_port = htons((uint16_t)rm_grpc_server_port(f->gs));
    cr_assert_neq(a.sin_port, 0);
    f->ch = rm_grpc_channel_new(f->loop, (struct sockaddr *)&a, sizeof(a), NULL, NULL, &err);
    cr_assert_not_null(f->ch, "%s", err.msg);
}

static void fx_fini(struct fx *f)
{
    rm_grpc_channel_free(f->ch);
    settle(f, 3);
    rm_grpc_server_free(f->gs);
    settle(f, 3);
    rm_loop_free(f->loop);
    rm_buf_thread_cleanup();
    rm_arena_thread_cleanup();
    rm_h2_mem_thread_cleanup();
}

static void call(struct fx *f, const char *method, struct rec *r, uint32_t deadline_ms)
{
    char path[64];
    snprintf(path, sizeof(path), "/t.S/%s", method);
    memset(r, 0, sizeof(*r));
    r->call = rm_grpc_call_start(f->ch, path, NULL, 0, deadline_ms, &rec_cb, r);
    cr_assert_not_null(r->call);
}

static void send_str(struct rec *r, const char *s)
{
    cr_assert_eq(rm_grpc_call_send(r->call, (const uint8_t *)s, strlen(s)), 0);
}

/* ---- a raw HTTP/2 client (headers of our choice, no local deadline) ---------------------- */

struct raw {
    struct rm_codec *codec;
    struct rm_stream *s;
    struct rm_arena arena;
    const char *method, *ct, *path, *timeout;
    int http_status, grpc_status;
    char grpc_message[128];
    bool ended, closed;
};

static void raw_block(struct raw *w, const struct rm_headers *h)
{
    struct rm_str st = RM_HDR_GET(h, ":status");
    struct rm_str gs = RM_HDR_GET(h, "grpc-status");
    struct rm_str gm = RM_HDR_GET(h, "grpc-message");
    if (st.p) w->http_status = (int)rm_parse_u63(st.p, st.len);
    if (gs.p) w->grpc_status = rm_grpc_status_parse(gs.p, gs.len);
    if (gm.p) rm_grpc_message_decode(gm.p, gm.len < 100 ? gm.len : 100, w->grpc_message);
}

static void raw_end(struct raw *w)
{
    w->ended = true;
    if (w->s) w->s->ops->release(w->s);
    w->s = NULL;
}

static void raw_headers(struct rm_stream *s, struct rm_headers *h, bool end)
{
    raw_block(s->user, h);
    if (end) raw_end(s->user);
}

static void raw_data(struct rm_stream *s, const uint8_t *p, size_t n, bool end)
{
    if (end) raw_end(s->user);
}

static void raw_trailers(struct rm_stream *s, struct rm_headers *h)
{
    raw_block(s->user, h);
    raw_end(s->user);
}

static void raw_reset(struct rm_stream *s, enum rm_reset_reason r)
{
    raw_end(s->user);
}

static const struct rm_stream_events raw_ev = {
    .on_headers = raw_headers,
    .on_data = raw_data,
    .on_trailers = raw_trailers,
    .on_reset = raw_reset,
};

static void raw_closed(void *user, int err)
{
    struct raw *w = user;
    w->closed = true;
    w->codec = NULL;
}

static const struct rm_codec_callbacks raw_cb = {.on_close = raw_closed};

static void raw_connected(struct rm_conn *conn, int err)
{
    struct raw *w = conn->owner;
    static const struct rm_codec_settings st;
    cr_assert_eq(err, 0);
    w->codec = rm_h2_client_new(conn, &st, &raw_cb, w);
    cr_assert_eq(rm_codec_new_stream(w->codec, &raw_ev, w, &w->arena, &w->s), 0);
    struct rm_headers h;
    rm_headers_init(&h, &w->arena);
    rm_headers_add(&h, ":method", 7, w->method, strlen(w->method));
    rm_headers_add(&h, ":path", 5, w->path, strlen(w->path));
    rm_headers_add(&h, ":authority", 10, "t", 1);
    rm_headers_add(&h, "content-type", 12, w->ct, strlen(w->ct));
    if (w->timeout) rm_headers_add(&h, "grpc-timeout", 12, w->timeout, strlen(w->timeout));
    cr_assert_eq(w->s->ops->submit_headers(w->s, &h, false), 0);
}

static size_t raw_tcp_data(struct rm_conn *c, const uint8_t *p, size_t n)
{
    return 0;
}

static void raw_tcp_closed(struct rm_conn *c, int err) {}

static const struct rm_conn_handler raw_tcp = {
    .on_connected = raw_connected,
    .on_data = raw_tcp_data,
    .on_close = raw_tcp_closed,
};

/* Open a stream with these request headers (no body, not ended). */
static void raw_request(struct fx *f, struct raw *w, const char *method, const char *ct,
                        const char *path, const char *timeout)
{
    memset(w, 0, sizeof(*w));
    rm_arena_init(&w->arena);
    w->method = method;
    w->ct = ct;
    w->path = path;
    w->timeout = timeout;
    w->grpc_status = -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    a.sin_port = htons((uint16_t)rm_grpc_server_port(f->gs));
    int err;
    cr_assert_not_null(
        rm_conn_connect(f->loop, (struct sockaddr *)&a, sizeof(a), 2000, &raw_tcp, w, &err));
}

static void raw_fini(struct fx *f, struct raw *w)
{
    if (w->s) raw_end(w);
    if (w->codec) w->codec->ops->close(w->codec);
    settle(f, 3);
    rm_arena_dispose(&w->arena);
}

/* ---- tests -------------------------------------------------------------------------------- */

Test(grpc_server, bidi_echo_and_half_close)
{
    struct fx f;
    struct rec r;
    fx_init(&f, NULL);
    call(&f, "Echo", &r, 0);
    send_str(&r, "one");
    send_str(&r, "two");
    WAIT(&f, r.msgs == 2, 2000);
    cr_assert_str_eq(r.first, "one");
    cr_assert_eq(S.starts, 1);
    cr_assert(strncmp(S.ua, "remora/", 7) == 0, "metadata: %s", S.ua);
    rm_grpc_call_send(r.call, NULL, 0); /* an empty message is a message */
    rm_grpc_call_half_close(r.call);
    WAIT(&f, r.closes, 2000);
    cr_assert_eq(r.status, RM_GRPC_OK, "%d %s", r.status, r.msg);
    cr_assert_eq(r.msgs, 3);
    cr_assert_eq(S.half_closes, 1);
    cr_assert_eq(S.cancels, 0);
    const struct rm_grpc_server_stats *st = rm_grpc_server_stats(f.gs);
    cr_assert_eq(st->calls, 1);
    cr_assert_eq(st->calls_finished, 1);
    cr_assert_eq(st->connections_open, 1);
    fx_fini(&f);
}

Test(grpc_server, statuses_trailers_only_and_after_messages)
{
    struct fx f;
    struct rec a, b;
    fx_init(&f, NULL);
    call(&f, "Fail", &a, 0);
    call(&f, "FailLate", &b, 0);
    WAIT(&f, a.closes && b.closes, 2000);
    cr_assert_eq(a.status, RM_GRPC_INVALID_ARGUMENT);
    cr_assert_str_eq(a.msg,
                     "bad: 100% \xc3\xbcnic\xc3\xb6"
                     "de\n",
                     "percent-encoded round trip");
    cr_assert_eq(a.msgs, 0);
    cr_assert_eq(b.status, RM_GRPC_ABORTED);
    cr_assert_str_eq(b.msg, "gave up");
    cr_assert_eq(b.msgs, 1);
    cr_assert_str_eq(b.first, "partial");
    fx_fini(&f);
}

Test(grpc_server, unknown_method_is_unimplemented)
{
    struct fx f;
    struct rec r;
    fx_init(&f, NULL);
    call(&f, "Nope", &r, 0);
    send_str(&r, "x");
    WAIT(&f, r.closes, 2000);
    cr_assert_eq(r.status, RM_GRPC_UNIMPLEMENTED);
    cr_assert_str_eq(r.msg, "unknown method /t.S/Nope");
    cr_assert_eq(S.starts, 0);
    cr_assert_eq(rm_grpc_server_stats(f.gs)->unimplemented, 1);
    fx_fini(&f);
}

Test(grpc_server, client_cancel_reaches_the_handler)
{
    struct fx f;
    struct rec r;
    fx_init(&f, NULL);
    call(&f, "Hang", &r, 0);
    send_str(&r, "wait");
    WAIT(&f, S.msgs == 1, 2000);
    rm_grpc_call_cancel(r.call);
    WAIT(&f, S.cancels, 2000);
    cr_assert_eq(S.cancel_status, RM_GRPC_CANCELLED);
    cr_assert_eq(rm_grpc_server_stats(f.gs)->calls_cancelled, 1);
    fx_fini(&f);
}

Test(grpc_server, client_deadline_ends_the_call)
{
    struct fx f;
    struct rec r;
    fx_init(&f, NULL);
    call(&f, "Hang", &r, 150);
    send_str(&r, "wait");
    WAIT(&f, r.closes && S.cancels, 3000);
    cr_assert_eq(r.status, RM_GRPC_DEADLINE_EXCEEDED);
    /* whichever timer fires first: the server's (grpc-timeout) or the client's reset */
    cr_assert(S.cancel_status == RM_GRPC_DEADLINE_EXCEEDED || S.cancel_status == RM_GRPC_CANCELLED,
              "%d %s", S.cancel_status, S.cancel_why);
    fx_fini(&f);
}

Test(grpc_server, grpc_timeout_is_enforced_by_the_server)
{
    struct fx f;
    struct raw w;
    fx_init(&f, NULL);
    raw_request(&f, &w, "POST", "application/grpc", "/t.S/Hang", "100m");
    WAIT(&f, w.ended && S.cancels, 3000);
    cr_assert_eq(S.cancel_status, RM_GRPC_DEADLINE_EXCEEDED, "%s", S.cancel_why);
    cr_assert_eq(w.http_status, 200);
    cr_assert_eq(w.grpc_status, RM_GRPC_DEADLINE_EXCEEDED);
    raw_fini(&f, &w);
    fx_fini(&f);
}

Test(grpc_server, non_grpc_requests_are_refused)
{
    struct fx f;
    struct raw a, b;
    fx_init(&f, NULL);
    raw_request(&f, &a, "GET", "application/grpc", "/t.S/Echo", NULL);
    raw_request(&f, &b, "POST", "application/json", "/t.S/Echo", NULL);
    WAIT(&f, a.ended && b.ended, 3000);
    cr_assert_eq(a.http_status, 405);
    cr_assert_eq(a.grpc_status, RM_GRPC_INTERNAL);
    cr_assert_eq(b.http_status, 415);
    cr_assert_str_eq(b.grpc_message, "invalid gRPC request content-type \"application/json\"");
    cr_assert_eq(S.starts, 0);
    cr_assert_eq(rm_grpc_server_stats(f.gs)->rejected, 2);
    raw_fini(&f, &a);
    raw_fini(&f, &b);
    fx_fini(&f);
}

Test(grpc_server, oversized_request_message)
{
    struct fx f;
    struct rec r;
    struct rm_grpc_server_opts o = {.max_recv_msg = 1024};
    fx_init(&f, &o);
    call(&f, "Echo", &r, 0);
    static uint8_t big[2000];
    cr_assert_eq(rm_grpc_call_send(r.call, big, sizeof(big)), 0);
    WAIT(&f, r.closes && S.cancels, 2000);
    cr_assert_eq(S.cancel_status, RM_GRPC_RESOURCE_EXHAUSTED);
    cr_assert_eq(r.status, RM_GRPC_RESOURCE_EXHAUSTED);
    cr_assert_str_eq(r.msg, "received message larger than max (2000 vs. 1024)");
    fx_fini(&f);
}

Test(grpc_server, backpressure_flood_in_order)
{
    struct fx f;
    struct rec r;
    struct rm_grpc_server_opts o = {.call_buffer = 64 * 1024};
    fx_init(&f, &o);
    call(&f, "Flood", &r, 0);
    send_str(&r, "3000");
    rm_grpc_call_half_close(r.call);
    WAIT(&f, r.closes, 10000);
    cr_assert_eq(r.status, RM_GRPC_OK, "%d %s", r.status, r.msg);
    cr_assert_eq(r.msgs, 3000);
    cr_assert(!r.out_of_order);
    cr_assert_gt(S.blocked, 0, "the 3 MB did not fit the 64 KiB buffer");
    cr_assert_gt(S.writables, 0);
    fx_fini(&f);
}

Test(grpc_server, free_with_calls_open)
{
    struct fx f;
    struct rec r;
    fx_init(&f, NULL);
    call(&f, "Hang", &r, 0);
    send_str(&r, "wait");
    WAIT(&f, S.msgs == 1, 2000);
    rm_grpc_server_free(f.gs);
    f.gs = NULL;
    cr_assert_eq(S.cancels, 1);
    cr_assert_eq(S.cancel_status, RM_GRPC_UNAVAILABLE);
    WAIT(&f, r.closes, 2000);
    cr_assert_eq(r.status, RM_GRPC_UNAVAILABLE, "%d %s", r.status, r.msg);
    fx_fini(&f);
}

Test(grpc_server, graceful_shutdown_lets_calls_finish)
{
    struct fx f;
    struct rec r;
    fx_init(&f, NULL);
    call(&f, "Echo", &r, 0);
    send_str(&r, "a");
    WAIT(&f, r.msgs == 1, 2000);
    rm_grpc_server_shutdown(f.gs);
    send_str(&r, "b");
    WAIT(&f, r.msgs == 2, 2000);
    rm_grpc_call_half_close(r.call);
    WAIT(&f, r.closes && rm_grpc_server_stats(f.gs)->connections_open == 0, 3000);
    cr_assert_eq(r.status, RM_GRPC_OK);
    fx_fini(&f);
}

Test(grpc_server, method_table_errors)
{
    struct rm_loop *loop = rm_loop_new();
    struct rm_grpc_server *gs = rm_grpc_server_new(loop, NULL);
    struct rm_error err;
    cr_assert_eq(rm_grpc_server_add_method(gs, "/a.B/C", &handler, NULL, &err), RM_OK);
    cr_assert_eq(rm_grpc_server_add_method(gs, "/a.B/C", &handler, NULL, &err), RM_ERR);
    cr_assert_str_eq(err.msg, "/a.B/C: method registered twice");
    cr_assert_eq(rm_grpc_server_add_method(gs, "a.B/C", &handler, NULL, &err), RM_ERR);
    cr_assert_eq(rm_grpc_server_add_method(gs, "/nomethod", &handler, NULL, &err), RM_ERR);
    rm_grpc_server_free(gs);
    rm_loop_free(loop);
}

Test(grpc_server, message_encoding)
{
    char out[64];
    cr_assert_eq(rm_grpc_message_encode("a b%c\n\xff", 7, out), 13);
    cr_assert_str_eq(out, "a b%25c%0A%FF");
}
