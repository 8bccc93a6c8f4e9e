/* Unit tests for the HTTP/1.1 codec (proxy/http/h1_*.c), driven over a real socketpair with a
 * real rm_loop (tests/unit/http/h1_test_util.c).  Suites: h1_server (downstream), h1_client
 * (upstream). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/http/h1_test_util.h"

/* ---- helpers ------------------------------------------------------------------------------- */

static void respond(struct h1t_stream *r, const char *status, const char *body)
{
    char len[32];
    snprintf(len, sizeof(len), "%zu", strlen(body));
    cr_assert_eq(h1t_submit(r, false, ":status", status, "content-length", len, NULL), 0);
    cr_assert_eq(r->s->ops->submit_data(r->s, (const uint8_t *)body, strlen(body), true), 0);
}

static void body_is(const struct h1t_stream *r, const char *want)
{
    cr_assert_eq(r->body_len, strlen(want), "body length %zu, want %zu", r->body_len,
                 strlen(want));
    cr_assert(memcmp(r->body, want, r->body_len) == 0);
}

static const struct rm_codec_settings http10_ok = {.accept_http_10 = true};

/* ---- server: requests ---------------------------------------------------------------------- */

Test(h1_server, simple_get)
{
    struct h1t *t = h1t_server(NULL);
    h1t_sends(t, "GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: UA/1\r\n"
                 "Accept: */*\r\n\r\n");
    cr_assert(h1t_wait_end(t, 0));
    struct h1t_stream *r = &t->streams[0];
    cr_assert_str_eq(r->head, ":method: GET\n:scheme: http\n:authority: example.com\n"
                              ":path: /a?b=1\nuser-agent: UA/1\naccept: */*\n");
    cr_assert(r->head_end);
    cr_assert_eq(r->ndata, 0);
    cr_assert_eq(r->s->proto, RM_HTTP11);
    cr_assert_eq(t->codec->ops->active_streams(t->codec), 1);
    respond(r, "200", "hello");
    cr_assert(h1t_read_until(t, "hello"));
    cr_assert_str_eq(h1t_take(t), "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello");
    h1t_spin(t, 2);
    cr_assert_eq(t->codec->ops->active_streams(t->codec), 0);
    cr_assert(!t->peer_eof);
    cr_assert_eq(t->closed, 0);
    h1t_free(t);
}

Test(h1_server, post_content_length)
{
    struct h1t *t = h1t_server(NULL);
    h1t_sends(t, "POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello");
    cr_assert(h1t_wait_stream(t, 0));
    struct h1t_stream *r = &t->streams[0];
    cr_assert(!r->head_end);
    cr_assert(strstr(r->head, "content-length: 11\n"));
    h1t_spin(t, 2);
    cr_assert(!r->end);
    h1t_sends(t, " world");
    cr_assert(h1t_wait_end(t, 0));
    body_is(r, "hello world");
    cr_assert_eq(r->ndata, 2, "the last piece carries end_stream (got %d on_data)", r->ndata);
    respond(r, "201", "");
    cr_assert(h1t_read_until(t, "\r\n\r\n"));
    cr_assert_str_eq(h1t_take(t), "HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n");
    h1t_free(t);
}

Test(h1_server, post_chunked)
{
    struct h1t *t = h1t_server(NULL);
    h1t_sends(t, "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n");
    cr_assert(h1t_wait_end(t, 0));
    struct h1t_stream *r = &t->streams[0];
    cr_assert_str_eq(r->head, ":method: POST\n:scheme: http\n:authority: h\n:path: /\n");
    body_is(r, "hello world");
    cr_assert_eq(r->ntrailers, 0);
    h1t_free(t);
}

/* Every split point of a chunked request with trailers, on one keep-alive connection. */
Test(h1_server, chunked_split_every_byte)
{
    static const char req[] = "POST /split HTTP/1.1\r\nHost: split.example\r\n"
                              "X-Long-Header-Name: some value\r\nTransfer-Encoding: chunked\r\n"
                              "\r\n4\r\nabcd\r\n0a\r\n0123456789\r\n0\r\nX-Trailer: yes\r\n\r\n";
    size_t len = sizeof(req) - 1;
    struct h1t *t = h1t_server(NULL);
    for (size_t cut = 1; cut < len; cut++) {
        int i = t->nstreams;
        h1t_send(t, req, cut);
        h1t_spin(t, 1);
        h1t_send(t, req + cut, len - cut);
        cr_assert(h1t_wait_end(t, i), "split at %zu", cut);
        struct h1t_stream *r = &t->streams[i];
        cr_assert_str_eq(r->head, ":method: POST\n:scheme: http\n:authority: split.example\n"
                                  ":path: /split\nx-long-header-name: some value\n",
                         "split at %zu", cut);
        body_is(r, "abcd0123456789");
        cr_assert_str_eq(r->trailers, "x-trailer: yes\n", "split at %zu", cut);
        respond(r, "200", "ok");
        cr_assert(h1t_read_until(t, "\r\n\r\nok"), "split at %zu", cut);
        h1t_take(t);
        h1t_release(r);
    }
    cr_assert_eq(t->closed, 0);
    h1t_free(t);
}

Test(h1_server, byte_at_a_time)
{
    static const char req[] = "PUT /b HTTP/1.1\r\nHost: b\r\nContent-Length: 3\r\n\r\nxyz";
    struct h1t *t = h1t_server(NULL);
    for (size_t i = 0; i < sizeof(req) - 1; i++) {
        h1t_send(t, req + i, 1);
        h1t_spin(t, 1);
    }
    cr_assert(h1t_wait_end(t, 0));
    body_is(&t->streams[0], "xyz");
    cr_assert(strstr(t->streams[0].head, ":path: /b\n"));
    h1t_free(t);
}

Test(h1_server, pipelined_in_order)
{
    struct h1t *t = h1t_server(NULL);
    h1t_sends(t, "GET /1 HTTP/1.1\r\nHost: h\r\n\r\n"
                 "POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
                 "GET /3 HTTP/1.1\r\nHost: h\r\n\r\n");
    cr_assert(h1t_wait_end(t, 0));
    /* the next request is not parsed while the first response is incomplete */
    h1t_spin(t, 5);
    cr_assert_eq(t->nstreams, 1);
    cr_assert(strstr(t->streams[0].head, ":path: /1\n"));
    cr_assert_eq(h1t_submit(&t->streams[0], false, ":status", "200", NULL), 0);
    h1t_spin(t, 3);
    cr_assert_eq(t->nstreams, 1, "still answering /1");
    t->streams[0].s->ops->submit_data(t->streams[0].s, (const uint8_t *)"one", 3, true);
    cr_assert(h1t_wait_end(t, 1));
    cr_assert(strstr(t->streams[1].head, ":path: /2\n"));
    body_is(&t->streams[1], "abc");
    cr_assert_eq(t->streams[1].s->id, 2);
    respond(&t->streams[1], "200", "two");
    cr_assert(h1t_wait_end(t, 2));
    cr_assert(strstr(t->streams[2].head, ":path: /3\n"));
    respond(&t->streams[2], "200", "three");
    cr_assert(h1t_read_until(t, "three"));
    cr_assert_str_eq(h1t_take(t), "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                                  "3\r\none\r\n0\r\n\r\n"
                                  "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\ntwo"
                                  "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nthree");
    h1t_free(t);
}

/* Answer each request as soon as it ends, from inside the codec's callback. */
static void answer_now(struct h1t_stream *r)
{
    respond(r, "200", "x");
    h1t_release(r);
}

Test(h1_server, pipelined_answered_synchronously)
{
    struct h1t *t = h1t_server(NULL);
    t->on_end = answer_now;
    char buf[4096] = "";
    for (int i = 0; i < 20; i++)
        strcat(buf, "GET /p HTTP/1.1\r\nHost: h\r\n\r\n");
    h1t_sends(t, buf);
    cr_assert(h1t_wait_end(t, 19));
    h1t_spin(t, 3);
    const char *out = h1t_take(t);
    int n = 0;
    for (const char *p = out; (p = strstr(p, "HTTP/1.1 200 OK")); p++)
        n++;
    cr_assert_eq(n, 20);
    cr_assert_eq(t->closed, 0);
    h1t_free(t);
}

Test(h1_server, http11_connection_close)
{
    struct h1t *t = h1t_server(NULL);
    h1t_sends(t, "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    cr_assert(h1t_wait_end(t, 0));
    respond(&t->streams[0], "200", "bye");
    cr_assert(h1t_wait_eof(t));
    cr_assert_str_eq(h1t_take(t),
                     "HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nbye");
    cr_assert(h1t_wait_closed(t));
    h1t_free(t);
}

Test(h1_server, http10_closes_by_default)
{
    struct h1t *t = h1t_server(&http10_ok);
    h1t_sends(t, "GET /old HTTP/1.0\r\n\r\n");
    cr_assert(h1t_wait_end(t, 0));
    struct h1t_stream *r = &t->streams[0];
    cr_assert_eq(r->s->proto, RM_HTTP10);
    cr_assert_str_eq(r->head, ":method: GET\n:scheme: http\n:path: /old\n", "no Host: no :authority");
    cr_assert_eq(h1t_submit(r, false, ":status", "200", NULL), 0);
    r->s->ops->submit_data(r->s, (const uint8_t *)"body", 4, true);
    cr_assert(h1t_wait_eof(t));
    cr_assert_str_eq(h1t_take(t), "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nbody",
                     "close-delimited body for HTTP/1.0");
    h1t_free(t);
}

Test(h1_server, http10_keep_alive)
{
    struct h1t *t = h1t_server(&http10_ok);
    h1t_sends(t, "GET /1 HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n");
    cr_assert(h1t_wait_end(t, 0));
    respond(&t->streams[0], "200", "a");
    cr_assert(h1t_read_until(t, "\r\n\r\na"));
    cr_assert_str_eq(h1t_take(t),
                     "HTTP/1.1 200 OK\r\ncontent-length: 1\r\nconnection: keep-alive\r\n\r\na");
    h1t_sends(t, "GET /2 HTTP/1.0\r\nHost: h\r\n\r\n");
    cr_assert(h1t_wait_end(t, 1));
    respond(&t->streams[1], "200", "b");
    cr_assert(h1t_wait_eof(t));
    cr_assert_str_eq(h1t_take(t),
                     "HTTP/1.1 200 OK\r\ncontent-length: 1\r\nconnection: close\r\n\r\nb");
    h1t_free(t);
}

Test(h1_server, http10_rejected_unless_accepted)
{
    struct h1t *t = h1t_server(NULL);
    h1t_sends(t, "GET / HTTP/1.0\r\n\r\n");
    cr_assert(h1t_wait_eof(t));
    cr_assert_str_eq(h1t_take(t), "HTTP/1.1 426 Upgrade Required\r\ncontent-length: 0\r\n"
                                  "connection: close\r\n\r\n");
    cr_assert_eq(t->nstreams, 0);
    cr_assert(h1t_wait_closed(t));
    h1t_free(t);
}

Test(h1_server, expect_100_continue)
{
    struct h1t *t = h1t_server(NULL);
    h1t_sends(t, "POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 4\r\n\r\n");
    cr_assert(h1t_read_until(t, "\r\n\r\n"));
    cr_assert_str_eq(h1t_take(t), "HTTP/1.1 100 Continue\r\n\r\n");
    cr_assert(h1t_wait_stream(t, 0));
    struct h1t_stream *r = &t->streams[0];
    cr_assert(!strstr(r->head, "expect"), "Expect is consumed: %s", r->head);
    h1t_sends(t, "data");
    cr_assert(h1t_wait_end(t, 0));
    body_is(r, "data");
    /* a 100 from upstream is not repeated */
    cr_assert_eq(h1t_submit(r, false, ":status", "100", NULL), 0);
    respond(r, "200", "");
    cr_assert(h1t_read_until(t, "\r\n\r\n"));
    cr_assert_str_eq(h1t_take(t), "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
    h1t_free(t);
}

Test(h1_server, informational_103)
{
    struct h1t *t = h1t_server(NULL);
    h1t_sends(t, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    cr_assert(h1t_wait_end(t, 0));
    struct h1t_stream *r = &t->streams[0];
    cr_assert_eq(h1t_submit(r, false, ":status", "103", "link", "</s.css>", NULL), 0);
    cr_assert_neq(h1t_submit(r, true, ":status", "103", NULL), 0, "1xx can't end a stream");
    respond(r, "200", "ok");
    cr_assert(h1t_read_until(t, "\r\n\r\nok"));
    cr_assert_str_eq(h1t_take(t), "HTTP/1.1 103 Early Hints\r\nlink: </s.css>\r\n\r\n"
                                  "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    h1t_free(t);
}

Test(h1_server, absolute_form)
{
    struct h1t *t = h1t_server(NULL);
    h1t_sends(t, "GET http://user@example.com:8080/p?q=1 HTTP/1.1\r\nHost: other\r\n\r\n"
                 "GET http://example.org HTTP/1.1\r\nHost: other\r\n\r\n"
                 "OPTIONS * HTTP/1.1\r\nHost: o\r\n\r\n");
    cr_assert(h1t_wait_end(t, 0));
    cr_assert_str_eq(t->streams[0].head, ":method: GET\n:scheme: http\n"
                                         ":authority: example.com:8080\n:path: /p?q=1\n");
    respond(&t->streams[0], "200", "");
    cr_assert(h1t_wait_end(t, 1));
    cr_assert_str_eq(t->streams[1].head, ":method: GET\n:scheme: http\n"
                                         ":authority: example.org\n:path: /\n");
    respond(&t->streams[1], "200", "");
    cr_assert(h1t_wait_end(t, 2));
    cr_assert_str_eq(t->streams[2].head, ":method: OPTIONS\n:scheme: http\n"
                                         ":authority: o\n:path: *\n");
    h1t_free(t);
}

Test(h1_server, hop_by_hop_stripped)
{
    struct h1t *t = h1t_server(NULL);
    h1t_sends(t, "GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Foo\r\n"
                 "Keep-Alive: timeout=5\r\nX-Foo: 1\r\nX-Bar: 2\r\nTE: trailers\r\n"
                 "Proxy-Connection: keep-alive\r\nUpgrade: websocket\r\nConnection: x-baz\r\n"
                 "X-Baz: 3\r\nContent-Length: 0\r\n\r\n");
    cr_assert(h1t_wait_end(t, 0));
    struct h1t_stream *r = &t->streams[0];
    cr_assert_str_eq(r->head, ":method: GET\n:scheme: http\n:authority: h\n:path: /\n"
                              "x-bar: 2\ncontent-length: 0\n");
    cr_assert_eq(h1t_submit(r, true, ":status", "200", "connection", "keep-alive",
                            "keep-alive", "timeout=1", "transfer-encoding", "chunked",
                            "upgrade", "h2c", "x-ok", "1", NULL),
                 0);
    cr_assert(h1t_read_until(t, "\r\n\r\n"));
    cr_assert_str_eq(h1t_take(t), "HTTP/1.1 200 OK\r\nx-ok: 1\r\ncontent-length: 0\r\n\r\n");
    h1t_free(t);
}

Test(h1_server, head_has_no_body)
{
    struct h1t *t = h1t_server(NULL);
    h1t_sends(t, "HEAD /h HTTP/1.1\r\nHost: h\r\n\r\n");
    cr_assert(h1t_wait_end(t, 0));
    struct h1t_stream *r = &t->streams[0];
    cr_assert_eq(h1t_submit(r, false, ":status", "200", "content-length", "100", NULL), 0);
    cr_assert_eq(r->s->ops->submit_data(r->s, (const uint8_t *)"ignored", 7, true), 0);
    h1t_sends(t, "GET /next HTTP/1.1\r\nHost: h\r\n\r\n");
    cr_assert(h1t_wait_end(t, 1));
    respond(&t->streams[1], "200", "n");
    cr_assert(h1t_read_until(t, "\r\n\r\nn"));
    cr_assert_str_eq(h1t_take(t), "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n"
                                  "HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nn");
    h1t_free(t);
}

Test(h1_server, no_body_statuses)
{
    struct h1t *t = h1t_server(NULL);
    h1t_sends(t, "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n"
                 "GET /3 HTTP/1.1\r\nHost: h\r\n\r\n");
    cr_assert(h1t_wait_end(t, 0));
    cr_assert_eq(h1t_submit(&t->streams[0], true, ":status", "204", "content-length", "0", NULL),
                 0);
    cr_assert(h1t_wait_end(t, 1));
    struct h1t_stream *r = &t->streams[1];
    cr_assert_eq(h1t_submit(r, false, ":status", "304", "etag", "\"x\"", NULL), 0);
    r->s->ops->submit_data(r->s, (const uint8_t *)"dropped", 7, true);
    cr_assert(h1t_wait_end(t, 2));
    respond(&t->streams[2], "200", "end");
    cr_assert(h1t_read_until(t, "end"));
    cr_assert_str_eq(h1t_take(t), "HTTP/1.1 204 No Content\r\n\r\n"
                                  "HTTP/1.1 304 Not Modified\r\netag: \"x\"\r\n\r\n"
                                  "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nend");
    h1t_free(t);
}

Test(h1_server, chunked_response_and_trailers)
{
    struct h1t *t = h1t_server(NULL);
    h1t_sends(t, "POST /rpc HTTP/1.1\r\nHost: h\r\nTE: trailers\r\nTransfer-Encoding: chunked\r\n"
                 "\r\n3\r\nreq\r\n0\r\nGrpc-Timeout: 1S\r\nContent-Length: 9\r\n\r\n");
    cr_assert(h1t_wait_end(t, 0));
    struct h1t_stream *r = &t->streams[0];
    body_is(r, "req");
    cr_assert_eq(r->ntrailers, 1);
    cr_assert_str_eq(r->trailers, "grpc-timeout: 1S\n", "framing fields are not trailers");
    cr_assert_eq(h1t_submit(r, false, ":status", "200", "content-type", "text/plain", NULL), 0);
    r->s->ops->submit_data(r->s, (const uint8_t *)"hello", 5, false);
    r->s->ops->submit_data(r->s, (const uint8_t *)"", 0, false);
    r->s->ops->submit_data(r->s, (const uint8_t *)" world", 6, false);
    struct rm_headers *tr = h1t_headers(r->s->arena, "grpc-status", "0", "grpc-message", "ok",
                                        NULL);
    cr_assert_eq(r->s->ops->submit_trailers(r->s, tr), 0);
    cr_assert(h1t_read_until(t, "ok\r\n\r\n"));
    cr_assert_str_eq(h1t_take(t), "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
                                  "transfer-encoding: chunked\r\n\r\n"
                                  "5\r\nhello\r\n6\r\n world\r\n"
                                  "0\r\ngrpc-status: 0\r\ngrpc-message: ok\r\n\r\n");
    h1t_free(t);
}

Test(h1_server, trailers_dropped_without_chunking)
{
    struct h1t *t = h1t_server(NULL);
    h1t_sends(t, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    cr_assert(h1t_wait_end(t, 0));
    struct h1t_stream *r = &t->streams[0];
    cr_assert_eq(h1t_submit(r, false, ":status", "200", "content-length", "2", NULL), 0);
    r->s->ops->submit_data(r->s, (const uint8_t *)"ok", 2, false);
    r->s->ops->submit_trailers(r->s, h1t_headers(r->s->arena, "x-t", "1", NULL));
    cr_assert(h1t_read_until(t, "ok"));
    h1t_spin(t, 2);
    cr_assert_str_eq(h1t_take(t), "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    h1t_free(t);
}

/* ---- server: backpressure ------------------------------------------------------------------ */

static bool peer_got(struct h1t *t, const void *arg) { return t->rx_len >= *(const size_t *)arg; }
static bool got_writable(struct h1t *t, const void *arg) { return t->streams[0].writable > 0; }

Test(h1_server, backpressure)
{
    static const struct rm_codec_settings st = {.buffer_limit = 64 * 1024};
    static uint8_t chunk[32 * 1024];
    memset(chunk, 'z', sizeof(chunk));
    struct h1t *t = h1t_server(&st);
    h1t_sends(t, "GET /big HTTP/1.1\r\nHost: h\r\n\r\n");
    cr_assert(h1t_wait_end(t, 0));
    struct h1t_stream *r = &t->streams[0];
    t->peer_read = false;
    size_t total = 0;
    cr_assert_eq(h1t_submit(r, false, ":status", "200", NULL), 0);
    cr_assert(!r->s->ops->write_blocked(r->s));
    int rounds = 0;
    while (!r->s->ops->write_blocked(r->s)) {
        r->s->ops->submit_data(r->s, chunk, sizeof(chunk), false);
        total += sizeof(chunk);
        h1t_spin(t, 1); /* flushes into the socket until it is full */
        cr_assert(++rounds < 1000, "never blocked");
    }
    cr_assert_gt(total, st.buffer_limit);
    cr_assert_eq(r->writable, 0);
    t->peer_read = true;
    cr_assert(h1t_run_until(t, got_writable, NULL), "on_writable after the peer read");
    cr_assert(!r->s->ops->write_blocked(r->s));
    r->s->ops->submit_data(r->s, (const uint8_t *)"", 0, true);
    size_t want = total; /* at least the body bytes */
    cr_assert(h1t_run_until(t, peer_got, &want));
    cr_assert(h1t_read_until(t, "0\r\n\r\n"));
    h1t_free(t);
}

/* ---- server: bad input --------------------------------------------------------------------- */

static void expect_rejected(const char *req, const char *status_line, int streams)
{
    struct h1t *t = h1t_server(NULL);
    h1t_sends(t, req);
    cr_assert(h1t_wait_eof(t), "request: %s", req);
    const char *out = h1t_take(t);
    char want[256];
    snprintf(want, sizeof(want), "%s\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
             status_line);
    cr_assert_str_eq(out, want, "request: %s", req);
    cr_assert_eq(t->nstreams, streams, "request: %s", req);
    cr_assert(h1t_wait_closed(t));
    h1t_free(t);
}

#define R400 "HTTP/1.1 400 Bad Request"
#define R431 "HTTP/1.1 431 Request Header Fields Too Large"

Test(h1_server, bad_request_line)
{
    expect_rejected("GET / HTTP/1.1 junk\r\nHost: h\r\n\r\n", R400, 0);
    expect_rejected("GET /a b HTTP/1.1\r\nHost: h\r\n\r\n", R400, 0);
    expect_rejected("get / HTTP/1.1\r\nHost: h\r\n\r\n", R400, 0);
    expect_rejected("GET / HTTP/2.0\r\nHost: h\r\n\r\n", R400, 0);
    expect_rejected("GET /\r\n\r\n", R400, 0);
    expect_rejected("GET example.com HTTP/1.1\r\nHost: h\r\n\r\n", R400, 0);
    expect_rejected("GET / HTTP/1.1\r\n\r\n", R400, 0); /* no Host */
    expect_rejected("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", R400, 0);
}

Test(h1_server, bad_header)
{
    expect_rejected("GET / HTTP/1.1\r\nHost: h\r\nBad Name: v\r\n\r\n", R400, 0);
    expect_rejected("GET / HTTP/1.1\r\nHost: h\r\nBad@Name: v\r\n\r\n", R400, 0);
    expect_rejected("GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n", R400, 0);
    expect_rejected("GET / HTTP/1.1\r\nHost: h\r\n: v\r\n\r\n", R400, 0);
    expect_rejected("GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n", R400, 0);
}

Test(h1_server, smuggling)
{
    expect_rejected("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                    R400, 0);
    expect_rejected("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n"
                    "\r\nabcd",
                    R400, 0);
    expect_rejected("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", R400, 0);
    expect_rejected("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\nabc", R400, 0);
}

Test(h1_server, bad_chunk_size)
{
    struct h1t *t = h1t_server(NULL);
    h1t_sends(t, "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "3\r\nabc\r\nzz\r\n");
    cr_assert(h1t_wait_eof(t));
    cr_assert_str_eq(h1t_take(t), R400 "\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    cr_assert_eq(t->nstreams, 1);
    cr_assert_eq(t->streams[0].reset, RM_RESET_PROTOCOL, "the announced stream is reset");
    body_is(&t->streams[0], "abc");
    cr_assert(h1t_wait_closed(t));
    h1t_free(t);
}

Test(h1_server, oversized_headers)
{
    size_t n = 61 * 1024;
    char *req = malloc(n + 128);
    strcpy(req, "GET / HTTP/1.1\r\nHost: h\r\nX-Big: ");
    size_t l = strlen(req);
    memset(req + l, 'a', n);
    strcpy(req + l + n, "\r\n\r\n");
    expect_rejected(req, R431, 0);
    free(req);
}

Test(h1_server, header_limit_from_settings)
{
    static const struct rm_codec_settings st = {.max_request_headers_kb = 1};
    struct h1t *t = h1t_server(&st);
    char req[2048] = "GET / HTTP/1.1\r\nHost: h\r\nX: ";
    memset(req + strlen(req), 'b', 1100);
    strcat(req, "\r\n\r\n");
    h1t_sends(t, req);
    cr_assert(h1t_wait_eof(t));
    cr_assert(strncmp(h1t_take(t), R431, strlen(R431)) == 0);
    h1t_free(t);
}

Test(h1_server, too_many_headers)
{
    char *req = malloc(8192);
    strcpy(req, "GET / HTTP/1.1\r\nHost: h\r\n");
    for (int i = 0; i < 100; i++)
        sprintf(req + strlen(req), "X-%d: v\r\n", i);
    strcat(req, "\r\n");
    expect_rejected(req, R431, 0); /* 101 headers */
    static const struct rm_codec_settings st = {.max_headers_count = 200};
    struct h1t *t = h1t_server(&st);
    h1t_sends(t, req);
    cr_assert(h1t_wait_end(t, 0), "accepted under a higher limit");
    h1t_free(t);
    free(req);
}

/* ---- server: lifecycle --------------------------------------------------------------------- */

Test(h1_server, peer_close_mid_request)
{
    struct h1t *t = h1t_server(NULL);
    h1t_sends(t, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc");
    cr_assert(h1t_wait_stream(t, 0));
    h1t_peer_close(t);
    cr_assert(h1t_wait_closed(t));
    cr_assert_eq(t->streams[0].reset, RM_RESET_CONNECTION_TERMINATION);
    h1t_free(t);
}

Test(h1_server, peer_close_waiting_for_response)
{
    struct h1t *t = h1t_server(NULL);
    h1t_sends(t, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    cr_assert(h1t_wait_end(t, 0));
    h1t_peer_close(t);
    cr_assert(h1t_wait_closed(t));
    cr_assert_eq(t->streams[0].reset, RM_RESET_CONNECTION_TERMINATION);
    h1t_free(t);
}

Test(h1_server, peer_close_idle)
{
    struct h1t *t = h1t_server(NULL);
    h1t_sends(t, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    cr_assert(h1t_wait_end(t, 0));
    respond(&t->streams[0], "200", "x");
    cr_assert(h1t_read_until(t, "\r\n\r\nx"));
    h1t_peer_close(t);
    cr_assert(h1t_wait_closed(t));
    cr_assert_eq(t->closed, 1);
    cr_assert_eq(t->streams[0].reset, -1, "a finished stream is not reset");
    h1t_free(t);
}

Test(h1_server, partial_request_then_close)
{
    struct h1t *t = h1t_server(NULL);
    h1t_sends(t, "GET / HTTP/1.1\r\nHo");
    h1t_spin(t, 2);
    h1t_peer_close(t);
    cr_assert(h1t_wait_closed(t));
    cr_assert_eq(t->nstreams, 0);
    h1t_free(t);
}

Test(h1_server, shutdown_active_then_idle)
{
    struct h1t *t = h1t_server(NULL);
    h1t_sends(t, "GET / HTTP/1.1\r\nHost: h\r\n\r\nGET /never HTTP/1.1\r\nHost: h\r\n\r\n");
    cr_assert(h1t_wait_end(t, 0));
    t->codec->ops->shutdown(t->codec);
    respond(&t->streams[0], "200", "last");
    cr_assert(h1t_wait_eof(t));
    cr_assert_str_eq(h1t_take(t),
                     "HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\nlast");
    cr_assert(h1t_wait_closed(t));
    cr_assert_eq(t->nstreams, 1);
    h1t_free(t);

    t = h1t_server(NULL);
    h1t_spin(t, 1);
    t->codec->ops->shutdown(t->codec);
    cr_assert(h1t_wait_eof(t));
    cr_assert(h1t_wait_closed(t));
    h1t_free(t);
}

Test(h1_server, reset_closes_connection)
{
    struct h1t *t = h1t_server(NULL);
    h1t_sends(t, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    cr_assert(h1t_wait_end(t, 0));
    struct h1t_stream *r = &t->streams[0];
    cr_assert_eq(h1t_submit(r, false, ":status", "200", NULL), 0);
    r->s->ops->reset(r->s, RM_RESET_LOCAL);
    cr_assert_neq(r->s->ops->submit_data(r->s, (const uint8_t *)"x", 1, true), 0);
    cr_assert(h1t_wait_eof(t));
    cr_assert(h1t_wait_closed(t));
    cr_assert_eq(r->reset, -1, "no on_reset for the user's own reset");
    h1t_free(t);
}

Test(h1_server, release_before_request_end)
{
    struct h1t *t = h1t_server(NULL);
    h1t_sends(t, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nabc");
    cr_assert(h1t_wait_stream(t, 0));
    struct h1t_stream *r = &t->streams[0];
    respond(r, "413", "");
    h1t_release(r);
    cr_assert(h1t_wait_eof(t));
    cr_assert_str_eq(h1t_take(t), "HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n"
                                  "connection: close\r\n\r\n");
    cr_assert(h1t_wait_closed(t));
    h1t_free(t);
}

Test(h1_server, codec_close_resets_streams)
{
    struct h1t *t = h1t_server(NULL);
    h1t_sends(t, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    cr_assert(h1t_wait_end(t, 0));
    t->codec_closed = true;
    t->codec->ops->close(t->codec);
    cr_assert_eq(t->streams[0].reset, RM_RESET_CONNECTION_TERMINATION);
    cr_assert(h1t_wait_eof(t));
    h1t_spin(t, 2);
    cr_assert_eq(t->closed, 0, "close() reports no on_close");
    h1t_free(t);
}

/* Stream objects are recycled: many sequential requests on one connection stay ASan-clean. */
Test(h1_server, many_requests_recycle)
{
    struct h1t *t = h1t_server(NULL);
    t->on_end = answer_now;
    for (int i = 0; i < 200; i++) {
        h1t_sends(t, "GET /r HTTP/1.1\r\nHost: h\r\n\r\n");
        cr_assert(h1t_wait_end(t, i));
    }
    cr_assert(h1t_read_until(t, "x"));
    h1t_free(t);
}

/* ---- client -------------------------------------------------------------------------------- */

static struct h1t_stream *get(struct h1t *t, const char *path)
{
    struct h1t_stream *r = h1t_open(t);
    cr_assert(r);
    cr_assert_eq(h1t_submit(r, true, ":method", "GET", ":scheme", "http", ":authority",
                            "up.example", ":path", path, NULL),
                 0);
    return r;
}

static bool idle_seen(struct h1t *t, const void *arg) { return t->idle > 0; }

Test(h1_client, request_serialization)
{
    struct h1t *t = h1t_client(NULL);
    cr_assert_eq(t->codec->ops->available_streams(t->codec), 1);
    struct h1t_stream *r = h1t_open(t);
    cr_assert(r);
    cr_assert_eq(t->codec->ops->available_streams(t->codec), 0);
    cr_assert_null(h1t_open(t), "one stream at a time");
    cr_assert_eq(h1t_submit(r, true, ":method", "GET", ":scheme", "http", ":authority",
                            "up.example:8080", ":path", "/x?y", "user-agent", "t/1",
                            "connection", "keep-alive", "te", "trailers", "host", "ignored",
                            "x-multi", "a", "x-multi", "b", NULL),
                 0);
    cr_assert(h1t_read_until(t, "\r\n\r\n"));
    cr_assert_str_eq(h1t_take(t), "GET /x?y HTTP/1.1\r\nhost: up.example:8080\r\n"
                                  "user-agent: t/1\r\nx-multi: a\r\nx-multi: b\r\n\r\n");
    h1t_free(t);
}

Test(h1_client, post_bodies)
{
    struct h1t *t = h1t_client(NULL);
    struct h1t_stream *r = h1t_open(t);
    cr_assert_eq(h1t_submit(r, false, ":method", "POST", ":scheme", "http", ":authority", "u",
                            ":path", "/p", "content-length", "5", NULL),
                 0);
    r->s->ops->submit_data(r->s, (const uint8_t *)"hel", 3, false);
    r->s->ops->submit_data(r->s, (const uint8_t *)"lo", 2, true);
    cr_assert(h1t_read_until(t, "hello"));
    cr_assert_str_eq(h1t_take(t), "POST /p HTTP/1.1\r\nhost: u\r\ncontent-length: 5\r\n\r\nhello");
    h1t_sends(t, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    cr_assert(h1t_wait_end(t, 0));
    cr_assert(h1t_run_until(t, idle_seen, NULL));
    h1t_release(r);

    r = h1t_open(t);
    cr_assert(r, "the connection is reused");
    cr_assert_eq(h1t_submit(r, false, ":method", "PUT", ":scheme", "http", ":authority", "u",
                            ":path", "/c", NULL),
                 0);
    r->s->ops->submit_data(r->s, (const uint8_t *)"abc", 3, false);
    r->s->ops->submit_trailers(r->s, h1t_headers(&r->arena, "x-sum", "42", NULL));
    cr_assert(h1t_read_until(t, "x-sum: 42\r\n\r\n"));
    cr_assert_str_eq(h1t_take(t), "PUT /c HTTP/1.1\r\nhost: u\r\ntransfer-encoding: chunked\r\n"
                                  "\r\n3\r\nabc\r\n0\r\nx-sum: 42\r\n\r\n");
    h1t_sends(t, "HTTP/1.1 204 No Content\r\n\r\n");
    cr_assert(h1t_wait_end(t, 1));
    h1t_release(r);

    r = h1t_open(t);
    cr_assert(r);
    cr_assert_eq(h1t_submit(r, true, ":method", "POST", ":scheme", "http", ":authority", "u",
                            ":path", "/empty", NULL),
                 0);
    cr_assert(h1t_read_until(t, "\r\n\r\n"));
    cr_assert_str_eq(h1t_take(t),
                     "POST /empty HTTP/1.1\r\nhost: u\r\ncontent-length: 0\r\n\r\n");
    h1t_free(t);
}

Test(h1_client, response_parsing_and_idle)
{
    struct h1t *t = h1t_client(NULL);
    struct h1t_stream *r = get(t, "/");
    h1t_sends(t, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n"
                 "Keep-Alive: timeout=5\r\nX-A:  b \r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
                 "\r\nhel");
    cr_assert(h1t_wait_stream(t, 0));
    h1t_spin(t, 2);
    cr_assert_eq(r->nheaders, 1);
    cr_assert_str_eq(r->head, ":status: 200\ncontent-length: 5\nx-a: b\n"
                              "set-cookie: a=1\nset-cookie: b=2\n");
    cr_assert(!r->end);
    cr_assert_eq(t->idle, 0);
    h1t_sends(t, "lo");
    cr_assert(h1t_wait_end(t, 0));
    body_is(r, "hello");
    cr_assert(h1t_run_until(t, idle_seen, NULL));
    cr_assert_eq(t->idle, 1);
    cr_assert_eq(t->goaway, 0);
    cr_assert_eq(t->codec->ops->available_streams(t->codec), 1);
    h1t_release(r);
    h1t_free(t);
}

Test(h1_client, informational_100)
{
    struct h1t *t = h1t_client(NULL);
    struct h1t_stream *r = h1t_open(t);
    cr_assert_eq(h1t_submit(r, false, ":method", "POST", ":scheme", "http", ":authority", "u",
                            ":path", "/", "content-length", "2", "expect", "100-continue", NULL),
                 0);
    h1t_sends(t, "HTTP/1.1 100 Continue\r\n\r\n");
    cr_assert(h1t_wait_stream(t, 0));
    h1t_spin(t, 2);
    cr_assert_str_eq(r->info, "100 ");
    cr_assert(!r->end);
    r->s->ops->submit_data(r->s, (const uint8_t *)"ok", 2, true);
    h1t_sends(t, "HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    cr_assert(h1t_wait_end(t, 0));
    cr_assert_str_eq(r->info, "100 102 ");
    cr_assert_eq(r->nheaders, 3);
    cr_assert_str_eq(r->head, ":status: 200\ncontent-length: 0\n");
    cr_assert(r->head_end);
    cr_assert(h1t_run_until(t, idle_seen, NULL));
    h1t_free(t);
}

Test(h1_client, close_delimited_body)
{
    struct h1t *t = h1t_client(NULL);
    struct h1t_stream *r = get(t, "/");
    h1t_sends(t, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nabc");
    cr_assert(h1t_wait_stream(t, 0));
    h1t_spin(t, 2);
    cr_assert_eq(t->goaway, 1, "a close-delimited body can't be followed by another request");
    cr_assert_eq(t->codec->ops->available_streams(t->codec), 0);
    h1t_sends(t, "def");
    h1t_peer_shutdown(t);
    cr_assert(h1t_wait_end(t, 0));
    body_is(r, "abcdef");
    cr_assert_eq(r->reset, -1);
    cr_assert(h1t_wait_closed(t));
    cr_assert_eq(t->close_err, 0);
    cr_assert_eq(t->idle, 0);
    h1t_free(t);
}

Test(h1_client, connection_close_goaway)
{
    struct h1t *t = h1t_client(NULL);
    struct h1t_stream *r = get(t, "/");
    h1t_sends(t, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok");
    cr_assert(h1t_wait_end(t, 0));
    cr_assert_eq(t->goaway, 1);
    cr_assert_str_eq(r->head, ":status: 200\ncontent-length: 2\n");
    body_is(r, "ok");
    cr_assert(h1t_wait_closed(t));
    cr_assert(h1t_wait_eof(t), "the codec closed the connection");
    cr_assert_eq(t->idle, 0);
    h1t_free(t);
}

Test(h1_client, http10_response_goaway)
{
    struct h1t *t = h1t_client(NULL);
    struct h1t_stream *r = get(t, "/");
    h1t_sends(t, "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nz");
    cr_assert(h1t_wait_end(t, 0));
    cr_assert_eq(r->s->proto, RM_HTTP10);
    cr_assert_eq(t->goaway, 1);
    cr_assert(h1t_wait_closed(t));
    h1t_free(t);
}

Test(h1_client, malformed_response_resets)
{
    static const char *bad[] = {
        "HTTP/1.1 2000 OK\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n",
        "SSH-2.0-OpenSSH\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct h1t *t = h1t_client(NULL);
        struct h1t_stream *r = get(t, "/");
        h1t_sends(t, bad[i]);
        cr_assert(h1t_wait_closed(t), "response: %s", bad[i]);
        cr_assert_eq(r->reset, RM_RESET_PROTOCOL, "response: %s", bad[i]);
        cr_assert(h1t_wait_eof(t));
        h1t_free(t);
    }
}

Test(h1_client, peer_close_mid_response)
{
    struct h1t *t = h1t_client(NULL);
    struct h1t_stream *r = get(t, "/");
    h1t_sends(t, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
    cr_assert(h1t_wait_stream(t, 0));
    h1t_spin(t, 2);
    h1t_peer_close(t);
    cr_assert(h1t_wait_closed(t));
    cr_assert_eq(r->reset, RM_RESET_CONNECTION_TERMINATION);
    h1t_free(t);
}

Test(h1_client, peer_close_before_response)
{
    struct h1t *t = h1t_client(NULL);
    struct h1t_stream *r = get(t, "/");
    cr_assert(h1t_read_until(t, "\r\n\r\n"));
    h1t_peer_shutdown(t);
    cr_assert(h1t_wait_closed(t));
    cr_assert_eq(r->reset, RM_RESET_CONNECTION_TERMINATION);
    h1t_free(t);
}

Test(h1_client, peer_close_idle)
{
    struct h1t *t = h1t_client(NULL);
    h1t_spin(t, 1);
    h1t_peer_close(t);
    cr_assert(h1t_wait_closed(t));
    cr_assert_eq(t->nstreams, 0);
    h1t_free(t);
}

Test(h1_client, stray_bytes_while_idle)
{
    struct h1t *t = h1t_client(NULL);
    h1t_sends(t, "HTTP/1.1 200 OK\r\n\r\n");
    cr_assert(h1t_wait_closed(t));
    cr_assert(h1t_wait_eof(t));
    h1t_free(t);
}

Test(h1_client, head_and_no_body_statuses)
{
    struct h1t *t = h1t_client(NULL);
    struct h1t_stream *r = h1t_open(t);
    cr_assert_eq(h1t_submit(r, true, ":method", "HEAD", ":scheme", "http", ":authority", "u",
                            ":path", "/", NULL),
                 0);
    h1t_sends(t, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n");
    cr_assert(h1t_wait_end(t, 0));
    cr_assert(r->head_end, "HEAD: end at headers");
    cr_assert(h1t_run_until(t, idle_seen, NULL));
    h1t_release(r);
    r = get(t, "/304");
    h1t_sends(t, "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n");
    cr_assert(h1t_wait_end(t, 1));
    cr_assert(r->head_end);
    h1t_release(r);
    cr_assert(h1t_run_until(t, idle_seen, NULL));
    h1t_spin(t, 2);
    cr_assert_eq(t->closed, 0);
    h1t_free(t);
}

Test(h1_client, chunked_response_trailers)
{
    struct h1t *t = h1t_client(NULL);
    struct h1t_stream *r = get(t, "/rpc");
    h1t_sends(t, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "4\r\ndata\r\n0\r\nGrpc-Status: 0\r\nConnection: close\r\n\r\n");
    cr_assert(h1t_wait_end(t, 0));
    cr_assert_str_eq(r->head, ":status: 200\n");
    body_is(r, "data");
    cr_assert_eq(r->ntrailers, 1);
    cr_assert_str_eq(r->trailers, "grpc-status: 0\n");
    cr_assert(h1t_run_until(t, idle_seen, NULL));
    h1t_free(t);
}

Test(h1_client, early_response_then_request_end)
{
    struct h1t *t = h1t_client(NULL);
    struct h1t_stream *r = h1t_open(t);
    cr_assert_eq(h1t_submit(r, false, ":method", "POST", ":scheme", "http", ":authority", "u",
                            ":path", "/", NULL),
                 0);
    h1t_sends(t, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    cr_assert(h1t_wait_end(t, 0));
    h1t_spin(t, 2);
    cr_assert_eq(t->idle, 0, "the request is not finished");
    r->s->ops->submit_data(r->s, (const uint8_t *)"tail", 4, true);
    cr_assert(h1t_run_until(t, idle_seen, NULL));
    h1t_free(t);
}

Test(h1_client, release_mid_exchange_closes)
{
    struct h1t *t = h1t_client(NULL);
    struct h1t_stream *r = get(t, "/");
    h1t_spin(t, 1);
    h1t_release(r);
    cr_assert(h1t_wait_closed(t));
    cr_assert_eq(r->reset, -1);
    h1t_free(t);
}

Test(h1_client, shutdown)
{
    struct h1t *t = h1t_client(NULL);
    struct h1t_stream *r = get(t, "/");
    t->codec->ops->shutdown(t->codec);
    cr_assert_eq(t->codec->ops->available_streams(t->codec), 0);
    h1t_sends(t, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    cr_assert(h1t_wait_end(t, 0));
    cr_assert(h1t_wait_closed(t));
    cr_assert_eq(t->idle, 0);
    h1t_release(r);
    h1t_free(t);

    t = h1t_client(NULL);
    t->codec->ops->shutdown(t->codec);
    cr_assert(h1t_wait_closed(t));
    h1t_free(t);
}

Test(h1_client, pause_reading)
{
    struct h1t *t = h1t_client(NULL);
    struct h1t_stream *r = get(t, "/");
    h1t_sends(t, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabc");
    cr_assert(h1t_wait_stream(t, 0));
    h1t_spin(t, 2);
    r->s->ops->pause_reading(r->s, true);
    h1t_sends(t, "def");
    h1t_spin(t, 5);
    cr_assert(!r->end);
    body_is(r, "abc");
    r->s->ops->pause_reading(r->s, false);
    cr_assert(h1t_wait_end(t, 0));
    body_is(r, "abcdef");
    h1t_free(t);
}

/* ---- more: flow control, splits, robustness ------------------------------------------------ */

static void pause_on_head(struct h1t_stream *r) { r->s->ops->pause_reading(r->s, true); }

Test(h1_server, pause_reading_request_body)
{
    struct h1t *t = h1t_server(NULL);
    t->on_head = pause_on_head;
    h1t_sends(t, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n\r\nabc");
    cr_assert(h1t_wait_stream(t, 0));
    h1t_sends(t, "def");
    h1t_spin(t, 5);
    struct h1t_stream *r = &t->streams[0];
    cr_assert_eq(r->ndata, 0, "paused: no body yet");
    r->s->ops->pause_reading(r->s, false);
    cr_assert(h1t_wait_end(t, 0));
    body_is(r, "abcdef");
    h1t_free(t);
}

Test(h1_server, response_content_length_written_once)
{
    struct h1t *t = h1t_server(NULL);
    h1t_sends(t, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    cr_assert(h1t_wait_end(t, 0));
    struct h1t_stream *r = &t->streams[0];
    cr_assert_eq(h1t_submit(r, false, ":status", "200", "content-length", "2", "content-length",
                            "2", NULL),
                 0);
    r->s->ops->submit_data(r->s, (const uint8_t *)"okEXTRA", 7, true);
    cr_assert(h1t_read_until(t, "ok"));
    h1t_spin(t, 2);
    cr_assert_str_eq(h1t_take(t), "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
                     "one content-length line, body cut at its value");
    h1t_free(t);
}

static bool client_writable(struct h1t *t, const void *arg) { return t->streams[0].writable > 0; }

Test(h1_client, backpressure)
{
    static const struct rm_codec_settings st = {.buffer_limit = 64 * 1024};
    static uint8_t chunk[32 * 1024];
    struct h1t *t = h1t_client(&st);
    t->peer_read = false;
    struct h1t_stream *r = h1t_open(t);
    cr_assert_eq(h1t_submit(r, false, ":method", "POST", ":scheme", "http", ":authority", "u",
                            ":path", "/", NULL),
                 0);
    int rounds = 0;
    while (!r->s->ops->write_blocked(r->s)) {
        r->s->ops->submit_data(r->s, chunk, sizeof(chunk), false);
        h1t_spin(t, 1);
        cr_assert(++rounds < 1000, "never blocked");
    }
    t->peer_read = true;
    cr_assert(h1t_run_until(t, client_writable, NULL));
    cr_assert(!r->s->ops->write_blocked(r->s));
    h1t_free(t);
}

/* Every split point of a chunked response with trailers, on one reused connection. */
Test(h1_client, response_split_every_byte)
{
    static const char resp[] = "HTTP/1.1 200 OK\r\nX-Split-Header: value here\r\n"
                               "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
                               "10\r\n0123456789abcdef\r\n0\r\nX-Tr: 1\r\n\r\n";
    size_t len = sizeof(resp) - 1;
    struct h1t *t = h1t_client(NULL);
    for (size_t cut = 1; cut < len; cut++) {
        int i = t->nstreams;
        struct h1t_stream *r = get(t, "/s");
        cr_assert(h1t_read_until(t, "\r\n\r\n"));
        h1t_take(t);
        h1t_send(t, resp, cut);
        h1t_spin(t, 1);
        h1t_send(t, resp + cut, len - cut);
        cr_assert(h1t_wait_end(t, i), "split at %zu", cut);
        cr_assert_str_eq(r->head, ":status: 200\nx-split-header: value here\n", "split %zu", cut);
        body_is(r, "abc0123456789abcdef");
        cr_assert_str_eq(r->trailers, "x-tr: 1\n", "split at %zu", cut);
        h1t_release(r);
        cr_assert(h1t_run_until(t, idle_seen, NULL));
        h1t_spin(t, 1);
        cr_assert_eq(t->idle, 1, "one on_idle per exchange (split at %zu)", cut);
        t->idle = 0;
    }
    cr_assert_eq(t->closed, 0);
    h1t_free(t);
}

static uint64_t rng = 0x243f6a8885a308d3u;
static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)rng;
}

/* Fragments of valid messages glued with random bytes: whatever comes, no crash, no leak, and
 * the connection ends up answered or closed. */
static void garbage(bool server, int rounds)
{
    static const char *frag[] = {
        "GET / HTTP/1.1\r\n", "Host: h\r\n", "\r\n", "Content-Length: 3\r\n",
        "Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n", "0\r\n\r\n", "HTTP/1.1 200 OK\r\n",
        "Connection: close\r\n", "X: y\r\n", "POST /p HTTP/1.0\r\n", "HTTP/1.1 100 Continue\r\n",
    };
    for (int i = 0; i < rounds; i++) {
        struct h1t *t = server ? h1t_server(&http10_ok) : h1t_client(NULL);
        if (!server)
            get(t, "/");
        t->on_end = server ? answer_now : NULL;
        char buf[512];
        size_t n = 0;
        while (n < sizeof(buf) - 64) {
            if (rnd() % 3) {
                const char *f = frag[rnd() % (sizeof(frag) / sizeof(frag[0]))];
                memcpy(buf + n, f, strlen(f));
                n += strlen(f);
            } else {
                buf[n++] = (char)rnd();
            }
        }
        h1t_send(t, buf, n);
        h1t_spin(t, 3);
        if (rnd() % 2)
            h1t_peer_close(t);
        h1t_spin(t, 2);
        h1t_free(t);
    }
}

Test(h1_server, garbage_input) { garbage(true, 150); }
Test(h1_client, garbage_input) { garbage(false, 150); }
