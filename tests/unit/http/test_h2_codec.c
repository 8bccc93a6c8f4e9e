/* HTTP/2 codec: the server codec and the client codec talk to each other over a socketpair on
 * one loop (or one of them talks to a raw socket that plays a scripted peer).  Every wait is
 * bounded (H2T_WAIT); every test tears down through h2t_finish() so ASan sees no leak. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "proxy/http/h2_internal.h"
#include "tests/unit/http/h2_test_util.h"

#define WAIT_MS 3000

static bool has_header(const struct rm_headers *h, const char *name)
{
    return rm_headers_find(h, name, strlen(name)) >= 0;
}

static bool header_is(const struct rm_headers *h, const char *name, const char *value)
{
    struct rm_str v = rm_headers_get(h, name, strlen(name));
    return v.p && rm_str_eq(v, value, strlen(value));
}

static uint32_t available(struct h2t *t)
{
    return t->client->ops->available_streams(t->client);
}

/* ---- basic exchanges ---------------------------------------------------------------------- */

Test(h2_basic, get_without_body)
{
    struct h2t t;
    h2t_init(&t);
    h2t_start(&t);
    struct h2t_stream *c = h2t_request(&t, "GET", "/hello", NULL, 0);
    cr_assert_not_null(c);
    cr_expect_eq(c->s->id, 1);
    H2T_WAIT(&t, c->ended, WAIT_MS);
    cr_assert(c->ended, "no response");
    cr_expect_eq(c->status, 200);
    cr_expect_eq(c->headers_calls, 1);
    cr_expect_eq(c->end_calls, 1);
    cr_expect_eq(c->body_len, 0);
    cr_expect_eq(c->data_calls, 0);
    cr_assert_eq(t.nsrv, 1);
    struct h2t_stream *s = t.srv[0];
    cr_expect(header_is(s->headers, ":method", "GET"));
    cr_expect(header_is(s->headers, ":path", "/hello"));
    cr_expect(header_is(s->headers, ":authority", "test.local"));
    cr_expect_eq(s->headers->v[0].name[0], ':', "pseudo-headers first");
    cr_expect_eq(s->data_calls, 0, "END_STREAM on HEADERS: no on_data");
    H2T_WAIT(&t, t.idle_calls > 0, WAIT_MS);
    cr_expect_eq(t.idle_calls, 1);
    cr_expect_eq(t.client->ops->active_streams(t.client), 0);
    cr_expect_eq(t.server->ops->active_streams(t.server), 0);
    cr_expect(!c->after_release_event && !s->after_release_event);
    h2t_finish(&t);
}

static void respond_10k(struct h2t_stream *st)
{
    static uint8_t body[10000];
    for (size_t i = 0; i < sizeof(body); i++)
        body[i] = h2t_pattern(i);
    h2t_respond(st, 200, body, sizeof(body));
}

Test(h2_basic, get_with_response_body)
{
    struct h2t t;
    h2t_init(&t);
    t.on_request = respond_10k;
    h2t_start(&t);
    struct h2t_stream *c = h2t_request(&t, "GET", "/", NULL, 0);
    c->keep_body = false;
    H2T_WAIT(&t, c->ended, WAIT_MS);
    cr_assert(c->ended);
    cr_expect_eq(c->body_len, 10000);
    cr_expect(!c->pattern_bad);
    cr_expect_eq(c->end_calls, 1);
    h2t_finish(&t);
}

Test(h2_basic, post_body_in_many_frames)
{
    struct h2t t;
    h2t_init(&t);
    h2t_start(&t);
    struct h2t_stream *c = h2t_open(&t);
    struct rm_headers *h = h2t_hdrs(&c->arena, ":method", "POST", ":scheme", "http", ":authority",
                                    "a", ":path", "/upload", NULL);
    cr_assert_eq(c->s->ops->submit_headers(c->s, h, false), 0);
    size_t total = 0;
    uint8_t buf[100000];
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = h2t_pattern(i);
    for (int i = 0; i < 200; i++) { /* small submissions, several per loop iteration */
        h2t_send(c, buf + total, 250, false);
        total += 250;
        if (i % 20 == 0) h2t_spin(&t);
    }
    h2t_send(c, buf + total, sizeof(buf) - total, true); /* one submission, many frames */
    H2T_WAIT(&t, c->ended, WAIT_MS);
    cr_assert(c->ended);
    cr_assert_eq(t.nsrv, 1);
    struct h2t_stream *s = t.srv[0];
    cr_expect_eq(s->body_len, sizeof(buf));
    cr_expect_gt(s->data_calls, 6, "several DATA frames");
    cr_expect_eq(s->end_calls, 1);
    cr_assert_eq(c->body_len, sizeof(buf), "echoed");
    cr_expect_eq(memcmp(rm_buf_data(&c->body), buf, sizeof(buf)), 0);
    h2t_finish(&t);
}

static void respond_when_ended_hold(struct h2t_stream *st)
{
    st->hold = true;
}

Test(h2_basic, end_stream_on_empty_data_frame)
{
    struct h2t t;
    h2t_init(&t);
    t.on_request = respond_when_ended_hold;
    h2t_start(&t);
    struct h2t_stream *c = h2t_open(&t);
    struct rm_headers *h = h2t_hdrs(&c->arena, ":method", "POST", ":scheme", "http", ":authority",
                                    "a", ":path", "/", NULL);
    cr_assert_eq(c->s->ops->submit_headers(c->s, h, false), 0);
    h2t_send(c, "abc", 3, false);
    H2T_WAIT(&t, t.nsrv == 1 && t.srv[0]->body_len == 3, WAIT_MS);
    cr_assert(t.nsrv == 1 && t.srv[0]->body_len == 3);
    cr_expect(!t.srv[0]->ended);
    h2t_send(c, NULL, 0, true);
    H2T_WAIT(&t, t.srv[0]->ended, WAIT_MS);
    cr_assert(t.srv[0]->ended);
    cr_expect_eq(t.srv[0]->data_calls, 2, "abc, then an empty on_data with end_stream");
    cr_expect_eq(t.srv[0]->end_calls, 1);
    h2t_finish(&t);
}

/* gRPC shape both ways: headers, data, trailers. */
static void grpc_reply(struct h2t_stream *st)
{
    struct rm_stream *s = st->s;
    struct rm_headers *h =
        h2t_hdrs(s->arena, ":status", "200", "content-type", "application/grpc", NULL);
    cr_assert_eq(s->ops->submit_headers(s, h, false), 0);
    cr_assert_eq(s->ops->submit_data(s, (const uint8_t *)"\0\0\0\0\2hi", 7, false), 0);
    /* trailers from an arena that is not the stream's: the codec must copy them */
    struct rm_headers *tr = h2t_hdrs(&st->arena, "grpc-status", "0", "grpc-message", "fine", NULL);
    cr_assert_eq(s->ops->submit_trailers(s, tr), 0);
    cr_expect_eq(s->ops->submit_data(s, (const uint8_t *)"x", 1, false), -1, "ended");
    st->done_out = true;
}

Test(h2_basic, trailers_both_directions)
{
    struct h2t t;
    h2t_init(&t);
    t.on_request = grpc_reply;
    h2t_start(&t);
    struct h2t_stream *c = h2t_open(&t);
    struct rm_headers *h =
        h2t_hdrs(&c->arena, ":method", "POST", ":scheme", "http", ":authority", "svc", ":path",
                 "/pkg.Svc/Call", "content-type", "application/grpc", "te", "trailers", NULL);
    cr_assert_eq(c->s->ops->submit_headers(c->s, h, false), 0);
    h2t_send(c, "\0\0\0\0\3abc", 8, false);
    struct rm_headers *tr = h2t_hdrs(&c->arena, "x-request-trailer", "yes", NULL);
    cr_assert_eq(c->s->ops->submit_trailers(c->s, tr), 0);
    c->done_out = true;
    H2T_WAIT(&t, c->ended, WAIT_MS);
    cr_assert(c->ended);
    cr_expect_eq(c->status, 200);
    cr_expect_eq(c->body_len, 7);
    cr_assert_not_null(c->trailers);
    cr_expect(header_is(c->trailers, "grpc-status", "0"));
    cr_expect(header_is(c->trailers, "grpc-message", "fine"));
    cr_expect_eq(c->end_calls, 1);
    cr_assert_eq(t.nsrv, 1);
    struct h2t_stream *s = t.srv[0];
    cr_expect(header_is(s->headers, "te", "trailers"), "te: trailers is kept");
    cr_expect_eq(s->body_len, 8);
    cr_assert_not_null(s->trailers);
    cr_expect(header_is(s->trailers, "x-request-trailer", "yes"));
    h2t_finish(&t);
}

static void trailers_only(struct h2t_stream *st)
{
    struct rm_stream *s = st->s;
    cr_assert_eq(s->ops->submit_headers(s, h2t_hdrs(s->arena, ":status", "200", NULL), false), 0);
    cr_assert_eq(s->ops->submit_trailers(s, h2t_hdrs(s->arena, "grpc-status", "5", NULL)), 0);
    st->done_out = true;
}

Test(h2_basic, trailers_without_data)
{
    struct h2t t;
    h2t_init(&t);
    t.on_request = trailers_only;
    h2t_start(&t);
    struct h2t_stream *c = h2t_request(&t, "POST", "/x", NULL, 0);
    H2T_WAIT(&t, c->ended, WAIT_MS);
    cr_assert(c->ended);
    cr_expect_eq(c->body_len, 0);
    cr_assert_not_null(c->trailers);
    cr_expect(header_is(c->trailers, "grpc-status", "5"));
    h2t_finish(&t);
}

static int first_status;
static void note_first_status(struct h2t_stream *st)
{
    if (!first_status) first_status = st->status;
}

static void send_continue(struct h2t_stream *st)
{
    struct rm_stream *s = st->s;
    if (header_is(st->headers, "expect", "100-continue"))
        cr_assert_eq(s->ops->submit_headers(s, h2t_hdrs(s->arena, ":status", "100", NULL), false),
                     0);
}

Test(h2_basic, informational_response)
{
    struct h2t t;
    h2t_init(&t);
    t.on_server_headers = send_continue;
    t.on_client_headers = note_first_status;
    first_status = 0;
    h2t_start(&t);
    struct h2t_stream *c = h2t_open(&t);
    struct rm_headers *h = h2t_hdrs(&c->arena, ":method", "PUT", ":scheme", "http", ":authority",
                                    "a", ":path", "/", "expect", "100-continue", NULL);
    cr_assert_eq(c->s->ops->submit_headers(c->s, h, false), 0);
    H2T_WAIT(&t, c->headers_calls == 1, WAIT_MS);
    cr_assert_eq(c->headers_calls, 1);
    cr_expect_eq(c->status, 100);
    cr_expect(!c->ended);
    h2t_send(c, "body", 4, true);
    H2T_WAIT(&t, c->ended, WAIT_MS);
    cr_assert(c->ended);
    cr_expect_eq(first_status, 100);
    cr_expect_eq(c->status, 200);
    cr_expect_eq(c->headers_calls, 2);
    cr_expect_eq(c->body_len, 4);
    h2t_finish(&t);
}

Test(h2_basic, hundred_concurrent_streams)
{
    struct h2t t;
    h2t_init(&t);
    h2t_start(&t);
    cr_assert_geq(available(&t), 100);
    struct h2t_stream *c[100];
    char body[200];
    memset(body, 'b', sizeof(body));
    for (int i = 0; i < 100; i++) {
        c[i] = h2t_request(&t, "POST", "/many", body, (size_t)(i + 1));
        cr_assert_not_null(c[i], "stream %d", i);
    }
    cr_expect_eq(t.client->ops->active_streams(t.client), 100);
    H2T_WAIT(&t, t.idle_calls > 0, 5000);
    for (int i = 0; i < 100; i++) {
        cr_expect(c[i]->ended, "stream %d", i);
        cr_expect_eq(c[i]->body_len, (size_t)(i + 1), "stream %d", i);
        cr_expect(!c[i]->reset);
    }
    cr_expect_eq(t.nsrv, 100);
    cr_expect_eq(t.client->ops->active_streams(t.client), 0);
    cr_expect_eq(t.idle_calls, 1);
    h2t_finish(&t);
}

/* Connection-specific fields never reach the wire; host becomes :authority. */
static void reply_hop_by_hop(struct h2t_stream *st)
{
    struct rm_stream *s = st->s;
    struct rm_headers *h = h2t_hdrs(s->arena, ":status", "200", "connection", "close",
                                    "transfer-encoding", "chunked", "x-kept", "1", NULL);
    cr_assert_eq(s->ops->submit_headers(s, h, true), 0);
    st->done_out = true;
}

Test(h2_basic, hop_by_hop_stripped_on_submit)
{
    struct h2t t;
    h2t_init(&t);
    t.on_request = reply_hop_by_hop;
    h2t_start(&t);
    struct h2t_stream *c = h2t_open(&t);
    struct rm_headers *h = h2t_hdrs(
        &c->arena, ":method", "GET", ":path", "/h1", "host", "h.example", "connection",
        "keep-alive, x-foo", "keep-alive", "timeout=5", "proxy-connection", "keep-alive",
        "transfer-encoding", "chunked", "upgrade", "h2c", "te", "gzip", "x-app", "v", NULL);
    cr_assert_eq(c->s->ops->submit_headers(c->s, h, true), 0);
    c->done_out = true;
    H2T_WAIT(&t, c->ended || c->reset, WAIT_MS);
    cr_assert(c->ended && !c->reset, "a peer rejects connection-specific fields");
    cr_assert_eq(t.nsrv, 1);
    const struct rm_headers *got = t.srv[0]->headers;
    const char *gone[] = {
        "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade",
        "te",         "host"};
    for (size_t i = 0; i < sizeof(gone) / sizeof(gone[0]); i++)
        cr_expect(!has_header(got, gone[i]), "%s forwarded", gone[i]);
    cr_expect(header_is(got, ":authority", "h.example"), "host -> :authority");
    cr_expect(header_is(got, ":scheme", "http"), ":scheme added");
    cr_expect(header_is(got, "x-app", "v"));
    cr_expect(!has_header(c->headers, "connection"));
    cr_expect(!has_header(c->headers, "transfer-encoding"));
    cr_expect(header_is(c->headers, "x-kept", "1"));
    h2t_finish(&t);
}

/* Submitted blocks reach the peer with the pseudo-headers first (in their order), then the
 * fields in theirs; :authority (from host) and :scheme are added to a request lacking them. */
static void expect_names(const struct rm_headers *h, const char *const *want, size_t n)
{
    cr_assert_eq(h->n, n, "%u fields, want %zu", h->n, n);
    for (size_t i = 0; i < n; i++)
        cr_expect(rm_str_eq((struct rm_str){(const char *)h->v[i].name, h->v[i].name_len}, want[i],
                            strlen(want[i])),
                  "field %zu: want %s", i, want[i]);
}

Test(h2_basic, submitted_blocks_ordered_and_completed)
{
    struct h2t t;
    h2t_init(&t);
    h2t_start(&t);
    struct h2t_stream *c[3];
    for (int i = 0; i < 3; i++)
        c[i] = h2t_open(&t);
    struct rm_headers *h[3] = {
        h2t_hdrs(&c[0]->arena, "x-first", "1", ":method", "GET", ":scheme", "http", ":authority",
                 "a", "te", "trailers", ":path", "/1", "x-last", "2", NULL),
        h2t_hdrs(&c[1]->arena, ":method", "GET", ":authority", "b", ":path", "/2", "x-b", "2",
                 NULL),
        h2t_hdrs(&c[2]->arena, ":method", "GET", ":scheme", "http", ":path", "/3", "host", "c",
                 "x-c", "3", NULL),
    };
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(c[i]->s->ops->submit_headers(c[i]->s, h[i], true), 0);
        c[i]->done_out = true;
    }
    H2T_WAIT(&t, c[0]->ended && c[1]->ended && c[2]->ended, WAIT_MS);
    cr_assert_eq(t.nsrv, 3);
    const char *w0[] = {":method", ":scheme", ":authority", ":path", "x-first", "te", "x-last"};
    const char *w1[] = {":method", ":authority", ":path", ":scheme", "x-b"};
    const char *w2[] = {":method", ":scheme", ":path", ":authority", "x-c"};
    expect_names(t.srv[0]->headers, w0, sizeof(w0) / sizeof(w0[0]));
    expect_names(t.srv[1]->headers, w1, sizeof(w1) / sizeof(w1[0]));
    expect_names(t.srv[2]->headers, w2, sizeof(w2) / sizeof(w2[0]));
    cr_expect(header_is(t.srv[0]->headers, "te", "trailers"));
    cr_expect(header_is(t.srv[1]->headers, ":scheme", "http"));
    cr_expect(header_is(t.srv[2]->headers, ":authority", "c"));
    h2t_finish(&t);
}

/* Received fields are copied into the stream's arena by size (h2_session.c copy_bytes: one to
 * three bytes, 4-7, 8-16, 17-32, longer): every name and value length from 1 to 40 (and empty
 * values) arrives intact and NUL-terminated. */
Test(h2_basic, received_fields_of_every_length)
{
    struct h2t t;
    h2t_init(&t);
    h2t_start(&t);
    struct h2t_stream *c = h2t_open(&t);
    struct rm_headers *h = h2t_hdrs(&c->arena, ":method", "GET", ":scheme", "http", ":authority",
                                    "a", ":path", "/", NULL);
    char names[41][48], values[41][48];
    for (int n = 1; n <= 40; n++) {
        for (int i = 0; i < n; i++) {
            names[n][i] = (char)('a' + (n + i) % 26);
            values[n][i] = (char)('A' + (n * 7 + i) % 26);
        }
        names[n][0] = 'x'; /* no pseudo-header, no connection-specific name */
        names[n][n] = values[n][n] = 0;
        rm_headers_add(h, names[n], (size_t)n, values[n], (size_t)(n % 5 ? n : 0));
    }
    cr_assert_eq(c->s->ops->submit_headers(c->s, h, true), 0);
    c->done_out = true;
    H2T_WAIT(&t, c->ended, WAIT_MS);
    cr_assert_eq(t.nsrv, 1);
    const struct rm_headers *got = t.srv[0]->headers;
    cr_assert_eq(got->n, 44);
    for (int n = 1; n <= 40; n++) {
        const struct rm_header *e = &got->v[3 + n];
        size_t vlen = (size_t)(n % 5 ? n : 0);
        cr_expect_eq(e->name_len, (size_t)n);
        cr_expect_eq(memcmp(e->name, names[n], (size_t)n + 1), 0, "name of length %d", n);
        cr_expect_eq(e->value_len, vlen);
        cr_expect_eq(memcmp(e->value, values[n], vlen), 0, "value of length %d", n);
        cr_expect_eq(e->value[vlen], 0, "value of length %d: NUL-terminated", n);
    }
    h2t_finish(&t);
}

/* ---- flow control and backpressure -------------------------------------------------------- */

#define BIG (5u * 1024 * 1024)

static void pump_response(struct h2t_stream *st)
{
    struct rm_stream *s = st->s;
    cr_assert_eq(s->ops->submit_headers(s, h2t_hdrs(s->arena, ":status", "200", NULL), false), 0);
    st->pump_total = BIG;
    h2t_pump(st);
}

static void pause_client(struct h2t_stream *st)
{
    st->s->ops->pause_reading(st->s, true);
}

Test(h2_flow, large_response_backpressure)
{
    struct h2t t;
    h2t_init(&t);
    t.on_request = pump_response;
    t.on_client_headers = pause_client;
    h2t_start(&t);
    struct h2t_stream *c = h2t_request(&t, "GET", "/big", NULL, 0);
    c->keep_body = false;
    H2T_WAIT(&t, t.nsrv == 1 && t.srv[0]->saw_blocked, WAIT_MS);
    cr_assert(t.nsrv == 1 && t.srv[0]->saw_blocked, "server never write_blocked");
    struct h2t_stream *s = t.srv[0];
    uint64_t until = h2t_now_ms() + 30;
    H2T_WAIT(&t, h2t_now_ms() > until, 100);
    const struct rm_h2_stream *hc = rm_h2_stream_of(c->s);
    cr_expect_eq(c->data_calls, 0, "paused: no on_data");
    cr_expect_leq(hc->held.len, (size_t)65535 * 4, "client holds at most one stream window");
    cr_expect_gt(hc->held.len, 0);
    cr_expect(s->s->ops->write_blocked(s->s), "still blocked while the client is paused");
    cr_expect_lt(s->pump_sent, BIG);
    int writable_before = s->writable_calls;
    c->s->ops->pause_reading(c->s, false);
    H2T_WAIT(&t, c->ended, 10000);
    cr_assert(c->ended, "got %zu of %u bytes", c->body_len, BIG);
    cr_expect_eq(c->body_len, BIG);
    cr_expect(!c->pattern_bad);
    cr_expect_gt(s->writable_calls, writable_before, "on_writable after resume");
    cr_expect_leq(s->max_pending, (size_t)256 * 1024 + 16 * 1024, "sender buffer bounded");
    h2t_finish(&t);
}

/* The server pauses the upload; the client's pump sees write_blocked, then on_writable. */
static void pause_server(struct h2t_stream *st)
{
    st->keep_body = false;
    st->s->ops->pause_reading(st->s, true);
}

static void reply_ok(struct h2t_stream *st)
{
    h2t_respond(st, 200, "ok", 2);
}

Test(h2_flow, large_upload_backpressure)
{
    struct h2t t;
    h2t_init(&t);
    t.on_server_headers = pause_server;
    t.on_request = reply_ok;
    h2t_start(&t);
    struct h2t_stream *c = h2t_open(&t);
    struct rm_headers *h = h2t_hdrs(&c->arena, ":method", "POST", ":scheme", "http", ":authority",
                                    "a", ":path", "/up", NULL);
    cr_assert_eq(c->s->ops->submit_headers(c->s, h, false), 0);
    c->pump_total = BIG;
    h2t_pump(c);
    H2T_WAIT(&t, c->saw_blocked && t.nsrv == 1, WAIT_MS);
    cr_assert(c->saw_blocked && t.nsrv == 1);
    uint64_t until = h2t_now_ms() + 30;
    H2T_WAIT(&t, h2t_now_ms() > until, 100);
    struct h2t_stream *s = t.srv[0];
    cr_expect_eq(s->data_calls, 0);
    cr_expect_leq(rm_h2_stream_of(s->s)->held.len, (size_t)65535 * 4);
    cr_expect(c->s->ops->write_blocked(c->s));
    int writable_before = c->writable_calls;
    s->s->ops->pause_reading(s->s, false);
    H2T_WAIT(&t, c->ended, 10000);
    cr_assert(c->ended);
    cr_expect_eq(s->body_len, BIG);
    cr_expect(!s->pattern_bad);
    cr_expect_gt(c->writable_calls, writable_before);
    cr_expect_leq(c->max_pending, (size_t)256 * 1024 + 16 * 1024);
    cr_expect_eq(c->body_len, 2);
    h2t_finish(&t);
}

static void hold_request(struct h2t_stream *st)
{
    st->hold = true;
}

Test(h2_flow, peer_max_concurrent_streams)
{
    struct h2t t;
    h2t_init(&t);
    t.sst.h2_max_concurrent_streams = 5;
    t.on_request = hold_request;
    h2t_start(&t);
    H2T_WAIT(&t, available(&t) <= 5, WAIT_MS);
    cr_assert_eq(available(&t), 5, "the server's SETTINGS");
    struct h2t_stream *c[5];
    for (int i = 0; i < 5; i++) {
        c[i] = h2t_request(&t, "GET", "/", NULL, 0);
        cr_assert_not_null(c[i]);
    }
    cr_expect_eq(available(&t), 0);
    cr_expect_null(h2t_open(&t), "no sixth stream");
    H2T_WAIT(&t, t.nsrv == 5, WAIT_MS);
    cr_assert_eq(t.nsrv, 5);
    t.srv[2]->hold = false;
    h2t_respond(t.srv[2], 204, NULL, 0);
    h2t_release(t.srv[2]);
    H2T_WAIT(&t, c[2]->ended && available(&t) == 1, WAIT_MS);
    cr_expect(c[2]->ended);
    cr_expect_eq(available(&t), 1);
    h2t_finish(&t);
}

/* Data and trailers that arrive while the server is paused come out in order on resume. */
Test(h2_flow, held_data_and_trailers_in_order)
{
    struct h2t t;
    h2t_init(&t);
    t.on_server_headers = pause_server;
    h2t_start(&t);
    struct h2t_stream *c = h2t_open(&t);
    struct rm_headers *h = h2t_hdrs(&c->arena, ":method", "POST", ":scheme", "http", ":authority",
                                    "a", ":path", "/", NULL);
    cr_assert_eq(c->s->ops->submit_headers(c->s, h, false), 0);
    uint8_t body[3000];
    for (size_t i = 0; i < sizeof(body); i++)
        body[i] = h2t_pattern(i);
    h2t_send(c, body, 1000, false);
    h2t_spin(&t);
    h2t_send(c, body + 1000, 2000, false);
    cr_assert_eq(c->s->ops->submit_trailers(c->s, h2t_hdrs(&c->arena, "x-t", "1", NULL)), 0);
    c->done_out = true;
    H2T_WAIT(&t, t.nsrv == 1 && rm_h2_stream_of(t.srv[0]->s)->held_trailers, WAIT_MS);
    cr_assert_eq(t.nsrv, 1);
    struct h2t_stream *s = t.srv[0];
    cr_assert_not_null(rm_h2_stream_of(s->s)->held_trailers, "trailers held");
    cr_expect_eq(s->data_calls, 0);
    cr_expect_null(s->trailers);
    s->s->ops->pause_reading(s->s, false);
    H2T_WAIT(&t, c->ended, WAIT_MS);
    cr_assert(c->ended);
    cr_expect_eq(s->data_calls, 1, "held data in one on_data");
    cr_expect_eq(s->body_len, 3000);
    cr_expect(!s->pattern_bad);
    cr_assert_not_null(s->trailers);
    cr_expect(header_is(s->trailers, "x-t", "1"));
    cr_expect_eq(s->end_calls, 1);
    h2t_finish(&t);
}

/* A paused stream that is reset must give its held bytes back to the connection window. */
static void big_or_small(struct h2t_stream *st)
{
    if (header_is(st->headers, ":path", "/first")) {
        pump_response(st);
        return;
    }
    struct rm_stream *s = st->s;
    cr_assert_eq(s->ops->submit_headers(s, h2t_hdrs(s->arena, ":status", "200", NULL), false), 0);
    st->pump_total = 1536 * 1024; /* more than the 1 MiB connection window */
    h2t_pump(st);
}

Test(h2_flow, reset_returns_held_window)
{
    struct h2t t;
    h2t_init(&t);
    t.on_request = big_or_small;
    t.on_client_headers = pause_client;
    h2t_start(&t);
    struct h2t_stream *a = h2t_request(&t, "GET", "/first", NULL, 0);
    a->keep_body = false;
    H2T_WAIT(&t, a->s && rm_h2_stream_of(a->s)->held.len >= 200 * 1024, WAIT_MS);
    cr_assert_geq(rm_h2_stream_of(a->s)->held.len, 200 * 1024);
    a->s->ops->reset(a->s, RM_RESET_LOCAL);
    h2t_release(a);
    t.on_client_headers = NULL;
    struct h2t_stream *b = h2t_request(&t, "GET", "/second", NULL, 0);
    b->keep_body = false;
    H2T_WAIT(&t, b->ended, 10000);
    cr_assert(b->ended, "window leaked: got %zu bytes", b->body_len);
    cr_expect(!b->pattern_bad);
    H2T_WAIT(&t, t.srv[0]->reset, WAIT_MS);
    cr_expect(t.srv[0]->reset);
    cr_expect_eq(t.srv[0]->reason, RM_RESET_REMOTE);
    h2t_finish(&t);
}

/* The response is complete on the wire but the client is paused: the server then shuts down
 * and closes the connection.  The held end of the response must still reach the client. */
static void respond_and_leave(struct h2t_stream *st)
{
    respond_10k(st);
    h2t_release(st);
    st->t->server->ops->shutdown(st->t->server);
}

Test(h2_flow, held_response_survives_connection_close)
{
    struct h2t t;
    h2t_init(&t);
    t.on_request = respond_and_leave;
    t.on_client_headers = pause_client;
    h2t_start(&t);
    struct h2t_stream *c = h2t_request(&t, "GET", "/", NULL, 0);
    c->keep_body = false;
    H2T_WAIT(&t, t.server_close_calls && t.client_close_calls, WAIT_MS);
    cr_assert_eq(t.server_close_calls, 1);
    cr_assert_eq(t.client_close_calls, 1, "the server closed the connection");
    cr_expect_eq(t.goaway_calls, 1);
    cr_assert(!c->reset && !c->ended && c->s, "a complete response is not reset");
    cr_expect_eq(rm_h2_stream_of(c->s)->held.len, 10000);
    c->s->ops->pause_reading(c->s, false);
    H2T_WAIT(&t, c->ended, WAIT_MS);
    cr_assert(c->ended);
    cr_expect_eq(c->body_len, 10000);
    cr_expect(!c->pattern_bad);
    cr_expect(!c->reset);
    h2t_finish(&t);
}

/* ---- resets -------------------------------------------------------------------------------- */

Test(h2_reset, client_reset_reaches_server)
{
    struct h2t t;
    h2t_init(&t);
    h2t_start(&t);
    struct h2t_stream *c = h2t_open(&t);
    struct rm_headers *h = h2t_hdrs(&c->arena, ":method", "POST", ":scheme", "http", ":authority",
                                    "a", ":path", "/", NULL);
    cr_assert_eq(c->s->ops->submit_headers(c->s, h, false), 0);
    H2T_WAIT(&t, t.nsrv == 1, WAIT_MS);
    cr_assert_eq(t.nsrv, 1);
    c->s->ops->reset(c->s, RM_RESET_LOCAL);
    cr_expect_eq(c->s->ops->submit_data(c->s, (const uint8_t *)"x", 1, true), -1);
    H2T_WAIT(&t, t.srv[0]->reset, WAIT_MS);
    cr_assert(t.srv[0]->reset);
    cr_expect_eq(t.srv[0]->reason, RM_RESET_REMOTE);
    cr_expect(!c->reset, "no on_reset after reset()");
    h2t_release(c);
    H2T_WAIT(&t, t.idle_calls == 1, WAIT_MS);
    cr_expect_eq(t.idle_calls, 1);
    h2t_finish(&t);
}

static void reset_it(struct h2t_stream *st)
{
    enum rm_reset_reason r =
        header_is(st->headers, ":path", "/refuse") ? RM_RESET_REFUSED : RM_RESET_LOCAL;
    st->s->ops->reset(st->s, r);
    h2t_release(st);
}

Test(h2_reset, server_reset_reaches_client)
{
    struct h2t t;
    h2t_init(&t);
    t.on_request = reset_it;
    h2t_start(&t);
    struct h2t_stream *c = h2t_request(&t, "GET", "/reset", NULL, 0);
    struct h2t_stream *r = h2t_request(&t, "GET", "/refuse", NULL, 0);
    H2T_WAIT(&t, c->reset && r->reset, WAIT_MS);
    cr_assert(c->reset && r->reset);
    cr_expect_eq(c->reason, RM_RESET_REMOTE);
    cr_expect_eq(r->reason, RM_RESET_REFUSED, "REFUSED_STREAM -> RM_RESET_REFUSED");
    cr_expect_eq(c->resets, 1);
    cr_expect(!c->ended);
    h2t_finish(&t);
}

Test(h2_reset, release_of_open_stream_resets_it)
{
    struct h2t t;
    h2t_init(&t);
    t.on_request = hold_request;
    h2t_start(&t);
    struct h2t_stream *c = h2t_request(&t, "GET", "/", NULL, 0);
    H2T_WAIT(&t, t.nsrv == 1, WAIT_MS);
    cr_assert_eq(t.nsrv, 1);
    h2t_release(c);
    H2T_WAIT(&t, t.srv[0]->reset, WAIT_MS);
    cr_expect(t.srv[0]->reset);
    cr_expect_eq(t.srv[0]->reason, RM_RESET_REMOTE);
    h2t_finish(&t);
}

/* The server answers before the upload is over and releases the stream at once: the response
 * still arrives in full, then RST_STREAM(NO_ERROR) stops the upload. */
static void early_reply(struct h2t_stream *st)
{
    static uint8_t body[300 * 1024];
    for (size_t i = 0; i < sizeof(body); i++)
        body[i] = h2t_pattern(i);
    h2t_respond(st, 413, body, sizeof(body));
    h2t_release(st);
}

Test(h2_reset, early_response_then_release)
{
    struct h2t t;
    h2t_init(&t);
    t.on_server_headers = early_reply;
    h2t_start(&t);
    struct h2t_stream *c = h2t_open(&t);
    c->keep_body = false;
    c->hold = true;
    struct rm_headers *h = h2t_hdrs(&c->arena, ":method", "POST", ":scheme", "http", ":authority",
                                    "a", ":path", "/", NULL);
    cr_assert_eq(c->s->ops->submit_headers(c->s, h, false), 0);
    h2t_send(c, "some", 4, false);
    H2T_WAIT(&t, c->ended && c->reset, WAIT_MS);
    cr_assert(c->ended, "response incomplete: %zu bytes", c->body_len);
    cr_expect_eq(c->status, 413);
    cr_expect_eq(c->body_len, 300 * 1024);
    cr_expect(!c->pattern_bad);
    cr_expect(c->reset, "upload stopped");
    cr_expect_eq(c->reason, RM_RESET_REMOTE);
    h2t_finish(&t);
}

/* Released before its HEADERS left: nghttp2 drops the queued request without reading the
 * block, whose arena is already gone. */
Test(h2_reset, release_before_headers_are_sent)
{
    struct h2t t;
    h2t_init(&t);
    h2t_start(&t);
    struct rm_arena tmp;
    rm_arena_init(&tmp);
    struct rm_stream *s;
    static const struct rm_stream_events none = {0};
    cr_assert_eq(rm_codec_new_stream(t.client, &none, NULL, &tmp, &s), 0);
    struct rm_headers *h =
        h2t_hdrs(&tmp, ":method", "GET", ":scheme", "http", ":authority", "a", ":path", "/", NULL);
    cr_assert_eq(s->ops->submit_headers(s, h, true), 0);
    s->ops->release(s);
    rm_arena_dispose(&tmp);
    H2T_WAIT(&t, t.idle_calls == 1, WAIT_MS);
    cr_expect_eq(t.idle_calls, 1);
    cr_expect_eq(t.client->ops->active_streams(t.client), 0);
    struct h2t_stream *c = h2t_request(&t, "GET", "/after", NULL, 0);
    H2T_WAIT(&t, c->ended, WAIT_MS);
    cr_expect(c->ended && c->status == 200, "the connection is fine");
    cr_expect_eq(t.nsrv, 1, "the cancelled request never left");
    h2t_finish(&t);
}

/* ---- connection events --------------------------------------------------------------------- */

static const uint8_t preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

Test(h2_conn, goaway_refuses_streams_above_last_id)
{
    struct h2t t;
    h2t_init(&t);
    h2t_start_raw_server(&t);
    struct h2t_stream *c[3];
    for (int i = 0; i < 3; i++)
        c[i] = h2t_request(&t, "GET", "/", NULL, 0);
    H2T_WAIT(&t, h2t_raw_has_frame(&t, 24, 1, 5), WAIT_MS);
    cr_assert(h2t_raw_has_frame(&t, 24, 1, 5), "client sent three requests");
    cr_expect_eq(memcmp(rm_buf_data(&t.raw_in), preface, 24), 0);
    uint8_t out[256];
    size_t n = 0;
    n += h2t_frame(out + n, 4, 0, 0, NULL, 0);          /* SETTINGS */
    n += h2t_frame(out + n, 4, 1, 0, NULL, 0);          /* SETTINGS ACK */
    const uint8_t goaway[8] = {0, 0, 0, 1, 0, 0, 0, 0}; /* last_stream_id 1, NO_ERROR */
    n += h2t_frame(out + n, 7, 0, 0, goaway, sizeof(goaway));
    h2t_raw_write(&t, out, n);
    H2T_WAIT(&t, c[1]->reset && c[2]->reset, WAIT_MS);
    cr_expect_eq(t.goaway_calls, 1);
    cr_expect(c[1]->reset && c[2]->reset);
    cr_expect_eq(c[1]->reason, RM_RESET_REFUSED);
    cr_expect_eq(c[2]->reason, RM_RESET_REFUSED);
    cr_expect(!c[0]->reset && !c[0]->ended);
    cr_expect_eq(available(&t), 0);
    cr_expect_null(h2t_open(&t));
    const uint8_t status200 = 0x88;
    n = h2t_frame(out, 1, 0x5, 1, &status200, 1); /* HEADERS, END_STREAM|END_HEADERS */
    h2t_raw_write(&t, out, n);
    H2T_WAIT(&t, c[0]->ended && t.client_close_calls == 1, WAIT_MS);
    cr_expect(c[0]->ended && !c[0]->reset, "stream 1 <= last_stream_id completes");
    cr_expect_eq(c[0]->status, 200);
    cr_expect_eq(t.client_close_calls, 1, "GOAWAY and no stream left: closed");
    cr_expect_eq(t.idle_calls, 0, "draining: on_close, not on_idle");
    h2t_finish(&t);
}

static struct h2t_stream *held_stream;
static void hold_and_note(struct h2t_stream *st)
{
    st->hold = true;
    held_stream = st;
}

Test(h2_conn, server_graceful_shutdown)
{
    struct h2t t;
    h2t_init(&t);
    t.on_request = hold_and_note;
    held_stream = NULL;
    h2t_start(&t);
    struct h2t_stream *c = h2t_request(&t, "GET", "/slow", NULL, 0);
    H2T_WAIT(&t, held_stream != NULL, WAIT_MS);
    cr_assert_not_null(held_stream);
    t.server->ops->shutdown(t.server);
    H2T_WAIT(&t, t.goaway_calls == 1, WAIT_MS);
    cr_assert_eq(t.goaway_calls, 1);
    cr_expect_eq(available(&t), 0);
    H2T_WAIT(&t, t.server_close_calls > 0, 30);
    cr_expect_eq(t.server_close_calls, 0, "a stream is still in flight");
    held_stream->hold = false;
    h2t_respond(held_stream, 200, "late", 4);
    h2t_release(held_stream);
    H2T_WAIT(&t, c->ended && t.server_close_calls && t.client_close_calls, WAIT_MS);
    cr_expect(c->ended && !c->reset);
    cr_expect_eq(c->body_len, 4);
    cr_expect_eq(t.server_close_calls, 1);
    cr_expect_eq(t.server_close_err, 0);
    cr_expect_eq(t.client_close_calls, 1);
    h2t_finish(&t);
}

Test(h2_conn, idle_server_shutdown_closes)
{
    struct h2t t;
    h2t_init(&t);
    h2t_start(&t);
    struct h2t_stream *c = h2t_request(&t, "GET", "/", NULL, 0);
    H2T_WAIT(&t, c->ended, WAIT_MS);
    cr_assert(c->ended);
    t.server->ops->shutdown(t.server);
    H2T_WAIT(&t, t.server_close_calls && t.client_close_calls, WAIT_MS);
    cr_expect_eq(t.goaway_calls, 1);
    cr_expect_eq(t.server_close_calls, 1);
    cr_expect_eq(t.server_close_err, 0);
    cr_expect_eq(t.client_close_calls, 1);
    h2t_finish(&t);
}

Test(h2_conn, client_graceful_shutdown)
{
    struct h2t t;
    h2t_init(&t);
    t.on_request = hold_and_note;
    held_stream = NULL;
    h2t_start(&t);
    struct h2t_stream *c = h2t_request(&t, "GET", "/", NULL, 0);
    H2T_WAIT(&t, held_stream != NULL, WAIT_MS);
    cr_assert_not_null(held_stream);
    t.client->ops->shutdown(t.client);
    cr_expect_eq(available(&t), 0);
    cr_expect_null(h2t_open(&t));
    held_stream->hold = false;
    h2t_respond(held_stream, 200, NULL, 0);
    h2t_release(held_stream);
    H2T_WAIT(&t, t.client_close_calls && t.server_close_calls, WAIT_MS);
    cr_expect(c->ended);
    cr_expect_eq(t.client_close_calls, 1);
    cr_expect_eq(t.server_close_calls, 1);
    h2t_finish(&t);
}

Test(h2_conn, close_resets_streams)
{
    struct h2t t;
    h2t_init(&t);
    t.on_request = hold_and_note;
    held_stream = NULL;
    h2t_start(&t);
    struct h2t_stream *c = h2t_request(&t, "GET", "/", NULL, 0);
    H2T_WAIT(&t, held_stream != NULL, WAIT_MS);
    cr_assert_not_null(held_stream);
    struct h2t_stream *s = held_stream;
    s->hold = false;
    t.server->ops->close(t.server);
    t.server_gone = true;
    cr_expect(s->reset, "close(): on_reset at once");
    cr_expect_eq(s->reason, RM_RESET_CONNECTION_TERMINATION);
    H2T_WAIT(&t, c->reset && t.client_close_calls, WAIT_MS);
    cr_expect(c->reset);
    cr_expect_eq(c->reason, RM_RESET_CONNECTION_TERMINATION);
    cr_expect_eq(t.client_close_calls, 1);
    cr_expect_eq(t.server_close_calls, 0, "close(): no on_close");
    h2t_finish(&t);
}

Test(h2_conn, request_header_block_too_large)
{
    struct h2t t;
    h2t_init(&t);
    t.sst.max_request_headers_kb = 4;
    h2t_start(&t);
    struct h2t_stream *c = h2t_open(&t);
    char big[6000];
    memset(big, 'v', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    struct rm_headers *h = h2t_hdrs(&c->arena, ":method", "GET", ":scheme", "http", ":authority",
                                    "a", ":path", "/", "x-big", big, NULL);
    cr_assert_eq(c->s->ops->submit_headers(c->s, h, true), 0);
    c->done_out = true;
    H2T_WAIT(&t, c->reset, WAIT_MS);
    cr_assert(c->reset, "oversized request not reset");
    cr_expect_eq(c->reason, RM_RESET_REMOTE);
    cr_expect_eq(t.nsrv, 0, "the server user never sees it");
    /* the connection (and its HPACK state) is still fine */
    struct h2t_stream *ok = h2t_request(&t, "GET", "/next", NULL, 0);
    H2T_WAIT(&t, ok->ended, WAIT_MS);
    cr_expect(ok->ended && ok->status == 200);
    cr_expect_eq(t.nsrv, 1);
    h2t_finish(&t);
}

Test(h2_conn, too_many_request_headers)
{
    struct h2t t;
    h2t_init(&t);
    t.sst.max_headers_count = 20;
    h2t_start(&t);
    struct h2t_stream *c = h2t_open(&t);
    struct rm_headers *h = h2t_hdrs(&c->arena, ":method", "GET", ":scheme", "http", ":authority",
                                    "a", ":path", "/", NULL);
    for (int i = 0; i < 30; i++) {
        char name[16];
        snprintf(name, sizeof(name), "x-h%d", i);
        rm_headers_add(h, name, strlen(name), "1", 1);
    }
    cr_assert_eq(c->s->ops->submit_headers(c->s, h, true), 0);
    c->done_out = true;
    H2T_WAIT(&t, c->reset, WAIT_MS);
    cr_assert(c->reset);
    cr_expect_eq(t.nsrv, 0);
    h2t_finish(&t);
}

static void big_response_headers(struct h2t_stream *st)
{
    static char big[4000];
    memset(big, 'r', sizeof(big) - 1);
    struct rm_stream *s = st->s;
    struct rm_headers *h = h2t_hdrs(s->arena, ":status", "200", "x-big", big, NULL);
    cr_assert_eq(s->ops->submit_headers(s, h, true), 0);
    st->done_out = true;
}

Test(h2_conn, response_header_block_too_large)
{
    struct h2t t;
    h2t_init(&t);
    t.cst.max_request_headers_kb = 2;
    t.on_request = big_response_headers;
    h2t_start(&t);
    struct h2t_stream *c = h2t_request(&t, "GET", "/", NULL, 0);
    H2T_WAIT(&t, c->reset, WAIT_MS);
    cr_assert(c->reset);
    cr_expect_eq(c->reason, RM_RESET_OVERFLOW);
    cr_expect_eq(c->headers_calls, 0);
    h2t_finish(&t);
}

Test(h2_conn, garbage_instead_of_preface)
{
    struct h2t t;
    h2t_init(&t);
    h2t_start_raw_client(&t);
    const char junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    h2t_raw_write(&t, junk, sizeof(junk) - 1);
    H2T_WAIT(&t, t.server_close_calls && t.raw_eof, WAIT_MS);
    cr_assert_eq(t.server_close_calls, 1);
    cr_expect_lt(t.server_close_err, 0);
    cr_expect(t.raw_eof, "connection closed");
    cr_expect(h2t_raw_has_frame(&t, 0, 7, 0), "GOAWAY sent");
    cr_expect_eq(t.nsrv, 0);
    h2t_finish(&t);
}

Test(h2_conn, connection_error_resets_streams_then_closes)
{
    struct h2t t;
    h2t_init(&t);
    h2t_start_raw_client(&t);
    uint8_t out[256];
    size_t n = 24;
    memcpy(out, preface, 24);
    n += h2t_frame(out + n, 4, 0, 0, NULL, 0);
    const uint8_t req[] = {0x82, 0x86, 0x84, 0x01, 9, 'l', 'o', 'c', 'a', 'l', 'h', 'o', 's', 't'};
    n += h2t_frame(out + n, 1, 0x4, 1, req, sizeof(req)); /* HEADERS, END_HEADERS */
    h2t_raw_write(&t, out, n);
    H2T_WAIT(&t, t.nsrv == 1, WAIT_MS);
    cr_assert_eq(t.nsrv, 1);
    struct h2t_stream *s = t.srv[0];
    s->hold = true;
    cr_expect(header_is(s->headers, ":authority", "localhost"));
    n = h2t_frame(out, 0, 0, 0, "x", 1); /* DATA on stream 0: connection PROTOCOL_ERROR */
    h2t_raw_write(&t, out, n);
    H2T_WAIT(&t, t.server_close_calls && t.raw_eof, WAIT_MS);
    cr_expect(s->reset);
    cr_expect_eq(s->reason, RM_RESET_CONNECTION_TERMINATION);
    cr_expect_eq(t.server_close_calls, 1);
    cr_expect_lt(t.server_close_err, 0);
    cr_expect(h2t_raw_has_frame(&t, 0, 7, 0), "GOAWAY sent");
    cr_expect(t.raw_eof);
    h2t_finish(&t);
}

Test(h2_conn, peer_close_resets_streams)
{
    struct h2t t;
    h2t_init(&t);
    h2t_start_raw_server(&t);
    struct h2t_stream *c = h2t_request(&t, "GET", "/", NULL, 0);
    H2T_WAIT(&t, h2t_raw_has_frame(&t, 24, 1, 1), WAIT_MS);
    cr_assert(h2t_raw_has_frame(&t, 24, 1, 1));
    close(t.raw_fd);
    t.raw_fd = -1;
    H2T_WAIT(&t, c->reset && t.client_close_calls, WAIT_MS);
    cr_expect(c->reset);
    cr_expect_eq(c->reason, RM_RESET_CONNECTION_TERMINATION);
    cr_expect_eq(t.client_close_calls, 1);
    h2t_finish(&t);
}

/* ---- the nghttp2 allocator ----------------------------------------------------------------- */

Test(h2_mem, size_classes_and_reuse)
{
    nghttp2_mem *m = &rm_h2_mem;
    void *ud = m->mem_user_data;
    uint8_t *a = m->malloc(40, ud); /* 64-byte class */
    cr_assert_not_null(a);
    cr_expect_eq((uintptr_t)a % 16, 0, "16-byte alignment");
    memset(a, 0xab, 40);
    m->free(a, ud);
    uint8_t *b = m->malloc(60, ud);
    cr_expect_eq(b, a, "same class: the cached block comes back");
    uint8_t *z = m->calloc(10, 6, ud);
    for (int i = 0; i < 60; i++)
        cr_expect_eq(z[i], 0);
    memset(b, 7, 60);
    uint8_t *r = m->realloc(b, 64, ud);
    cr_expect_eq(r, b, "fits its class: same block");
    r = m->realloc(r, 5000, ud); /* large */
    for (int i = 0; i < 60; i++)
        cr_expect_eq(r[i], 7);
    memset(r, 9, 5000);
    r = m->realloc(r, 10000, ud);
    for (int i = 0; i < 5000; i++)
        cr_assert_eq(r[i], 9);
    r = m->realloc(r, 16, ud); /* shrink into a small class */
    cr_expect_eq(r[15], 9);
    m->free(r, ud);
    m->free(z, ud);
    m->free(NULL, ud);
    void *many[4096];
    for (int i = 0; i < 4096; i++)
        many[i] = m->malloc(4096, ud);
    for (int i = 0; i < 4096; i++)
        m->free(many[i], ud); /* over the per-class cap: the rest is freed */
    rm_h2_mem_thread_cleanup();
}

/* Pages of [p, p + len) that hold memory of their own (/proc/self/pagemap: present and
 * exclusively mapped; not the shared zero page that a read of an untouched page maps, which
 * RSS does not count either), or -1 when a page is not mapped at all (mincore). */
static int resident_pages(const void *p, size_t len)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE), n = (len + pg - 1) / pg;
    unsigned char vec[64];
    cr_assert_leq(n, sizeof(vec));
    if (mincore((void *)p, len, vec) != 0) return -1;
    FILE *f = fopen("/proc/self/pagemap", "rb");
    cr_assert_not_null(f);
    int r = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t e = 0;
        long off = (long)(((uintptr_t)p / pg + i) * sizeof(e));
        cr_assert_eq(fseek(f, off, SEEK_SET), 0);
        cr_assert_eq(fread(&e, sizeof(e), 1, f), 1);
        r += (e >> 63 & 1) && (e >> 56 & 1);
    }
    fclose(f);
    return r;
}

static const uint8_t *region_base(const void *p)
{
    return (const uint8_t *)((uintptr_t)p & ~(uintptr_t)(RM_H2_MEM_REGION_BYTES - 1));
}

/* What nghttp2 1.52 allocates for a session, in its order: where each block lands. */
Test(h2_mem, region_layout_and_unmap)
{
    nghttp2_mem *m = &rm_h2_mem;
    void *ud = m->mem_user_data;
    rm_h2_mem_region_begin();
    uint8_t *sess = m->calloc(1, 2928, ud), *ring1 = m->malloc(1024, ud);
    uint8_t *ring2 = m->malloc(1024, ud), *map = m->calloc(256, 16, ud);
    uint8_t *chain = m->malloc(48, ud), *frames = m->realloc(NULL, 16394, ud);
    uint8_t *huge = m->malloc(RM_H2_MEM_REGION_BYTES, ud); /* does not fit: from the pool */
    rm_h2_mem_region_end();
    uint8_t *later = m->malloc(40, ud); /* the region is closed: from the pool */
    const uint8_t *r = region_base(sess);
    uint8_t *all[] = {sess, ring1, ring2, map, chain, frames};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        cr_assert_not_null(all[i]);
        cr_expect_eq(region_base(all[i]), r, "block %zu in the session's region", i);
        cr_expect_eq((uintptr_t)all[i] % 16, 0, "16-byte alignment");
    }
    cr_expect_neq(region_base(huge), r);
    cr_expect_neq(region_base(later), r);
    /* bottom up: the session, the small block, the frame buffer; top down: 1 KiB..16 KiB */
    cr_expect_lt(sess, chain);
    cr_expect_lt(chain, frames);
    cr_expect_geq(ring1, frames + 16394);
    cr_expect_gt(ring1, ring2);
    cr_expect_gt(ring2, map);
    cr_expect_geq(map, frames + 16394);
    cr_expect_leq(ring1 + 1024, r + RM_H2_MEM_REGION_BYTES);
    for (int i = 0; i < 2928; i++)
        cr_assert_eq(sess[i], 0, "calloc: zero");
    /* nothing written yet but the session's page: the rest is not resident */
    memset(sess, 1, 2928);
    memset(frames, 2, 100);
    cr_expect_eq(resident_pages(r, RM_H2_MEM_REGION_BYTES), 1);
    for (int i = 0; i < 4096; i++)
        cr_assert_eq(map[i], 0, "calloc: zero");
    /* realloc moves a region block out, with its bytes */
    memset(ring1, 7, 1024);
    uint8_t *grown = m->realloc(ring1, 3000, ud);
    cr_assert_not_null(grown);
    cr_expect_neq(region_base(grown), r);
    for (int i = 0; i < 1024; i++)
        cr_assert_eq(grown[i], 7);
    m->free(grown, ud);
    m->free(sess, ud);
    m->free(ring2, ud);
    m->free(map, ud);
    m->free(chain, ud);
    /* the session's page and the last one (ring1, written above) */
    cr_expect_eq(resident_pages(r, RM_H2_MEM_REGION_BYTES), 2, "mapped until its last block goes");
    uintptr_t frames_at = (uintptr_t)frames;
    m->free(frames, ud);
    cr_expect_eq(resident_pages(r, RM_H2_MEM_REGION_BYTES), 2, "freed: kept for the next session");
    m->free(huge, ud);
    m->free(later, ud);
    /* the next session reuses it: calloc zeroes, and a header slot over its last session's bytes
     * (the frame buffer's, 2s) is cleared, so that freeing the block finds the region */
    rm_h2_mem_region_begin();
    uint8_t *s2 = m->calloc(1, 2928, ud), *a = m->malloc(48, ud), *b = m->malloc(16, ud);
    uint8_t *c = m->malloc(16, ud);
    rm_h2_mem_region_end();
    cr_assert_eq(region_base(s2), r, "the cached region comes back");
    for (int i = 0; i < 2928; i++)
        cr_assert_eq(s2[i], 0, "calloc in a reused region: zero");
    cr_expect_eq((uintptr_t)c - 16, frames_at + 16, "this slot held the old frame buffer's bytes");
    for (int i = 1; i <= 16; i++)
        cr_assert_eq(c[-i], 0, "the slot is cleared");
    m->free(c, ud);
    m->free(b, ud);
    m->free(a, ud);
    m->free(s2, ud);
    cr_expect_eq(resident_pages(r, RM_H2_MEM_REGION_BYTES), 2, "cached again");
    rm_h2_mem_thread_cleanup();
    cr_expect_eq(resident_pages(r, RM_H2_MEM_REGION_BYTES), -1, "the cache is unmapped");
}

/* A thread keeps at most 64 freed regions; the rest are unmapped at once, the kept ones by
 * rm_h2_mem_trim (the worker's quiet-after-a-burst trim) or at thread exit. */
Test(h2_mem, region_cache_is_bounded)
{
    nghttp2_mem *m = &rm_h2_mem;
    void *ud = m->mem_user_data;
    enum { N = 65 };
    uint8_t *p[N];
    for (int i = 0; i < N; i++) {
        rm_h2_mem_region_begin();
        p[i] = m->malloc(16, ud);
        rm_h2_mem_region_end();
        cr_assert_not_null(p[i]);
        for (int j = 0; j < i; j++)
            cr_assert_neq(region_base(p[j]), region_base(p[i]), "one region per session");
    }
    for (int i = 0; i < N; i++)
        m->free(p[i], ud);
    for (int i = 0; i < N - 1; i++)
        cr_assert_eq(resident_pages(region_base(p[i]), RM_H2_MEM_REGION_BYTES), 1, "cached");
    cr_expect_eq(resident_pages(region_base(p[N - 1]), RM_H2_MEM_REGION_BYTES), -1,
                 "over the cap: unmapped");
    cr_expect_geq(rm_h2_mem_trim(0), (size_t)(N - 1) * RM_H2_MEM_REGION_BYTES);
    for (int i = 0; i < N - 1; i++)
        cr_assert_eq(resident_pages(region_base(p[i]), RM_H2_MEM_REGION_BYTES), -1, "trimmed");
    rm_h2_mem_thread_cleanup();
}

static ssize_t sink_send(nghttp2_session *s, const uint8_t *d, size_t len, int flags, void *ud)
{
    return (ssize_t)len;
}

static void sink_drain(nghttp2_session *s)
{
    const uint8_t *d;
    for (int i = 0; i < 16 && nghttp2_session_mem_send(s, &d) > 0; i++)
        ;
}

/* An idle server session (SETTINGS both ways, acknowledged, a connection window update) keeps
 * one page of its region resident: what an idle connection costs nghttp2 (see h2_mem.c), and
 * what would grow back to ~14 KiB if the layout broke (or a new nghttp2 allocated otherwise). */
Test(h2_mem, region_idle_session_keeps_one_page)
{
    nghttp2_session_callbacks *cbs;
    cr_assert_eq(nghttp2_session_callbacks_new(&cbs), 0);
    nghttp2_session_callbacks_set_send_callback(cbs, sink_send);
    nghttp2_session *s = NULL;
    rm_h2_mem_region_begin();
    int rv = nghttp2_session_server_new3(&s, cbs, NULL, NULL, &rm_h2_mem);
    rm_h2_mem_region_end();
    nghttp2_session_callbacks_del(cbs);
    cr_assert_eq(rv, 0);
    const uint8_t *r = region_base(s);
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100},
                                   {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20}};
    cr_assert_eq(nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, iv, 2), 0);
    cr_assert_eq(nghttp2_session_set_local_window_size(s, NGHTTP2_FLAG_NONE, 0, 1 << 24), 0);
    static const uint8_t idle_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
                                          "\0\0\0\4\0\0\0\0\0";
    cr_assert_eq(nghttp2_session_mem_recv(s, idle_preface, sizeof(idle_preface) - 1),
                 (ssize_t)sizeof(idle_preface) - 1);
    sink_drain(s);
    static const uint8_t ack[] = {0, 0, 0, 4, 1, 0, 0, 0, 0};
    cr_assert_eq(nghttp2_session_mem_recv(s, ack, sizeof(ack)), (ssize_t)sizeof(ack));
    sink_drain(s);
    int rp = resident_pages(r, RM_H2_MEM_REGION_BYTES);
    cr_expect_eq(rp, 1, "resident pages: %d", rp);
    nghttp2_session_del(s);
    cr_expect_eq(resident_pages(r, RM_H2_MEM_REGION_BYTES), 1, "deleted: cached");
    rm_h2_mem_thread_cleanup();
    cr_expect_eq(resident_pages(r, RM_H2_MEM_REGION_BYTES), -1, "unmapped with the cache");
    rm_h2_mem_thread_cleanup();
}
