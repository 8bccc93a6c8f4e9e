/* Unit tests for the HTTP/1.1 codec (proxy/http/h1_*.c), driven over a real socketpair with a
 * real rm_loop (tests/unit/http/h1_test_util.c).  Suites: h1_server (downstream), h1_client
 * (upstream). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/http/h1_test_util.h"

/* ---- helpers ------------------------------------------------------------------------------- */

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
    h1t_respond(r, "200", "hello");
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
    h1t_body_is(r, "hello world");
    cr_assert_eq(r->ndata, 2, "the last piece carries end_stream (got %d on_data)", r->ndata);
    h1t_respond(r, "201", "");
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
    h1t_body_is(r, "hello world");
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
        cr_assert_str_eq(r->head,
                         ":method: POST\n:scheme: http\n:authority: split.example\n"
                         ":path: /split\nx-long-header-name: some value\n",
                         "split at %zu", cut);
        h1t_body_is(r, "abcd0123456789");
        cr_assert_str_eq(r->trailers, "x-trailer: yes\n", "split at %zu", cut);
        h1t_respond(r, "200", "ok");
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
    h1t_body_is(&t->streams[0], "xyz");
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
    h1t_body_is(&t->streams[1], "abc");
    cr_assert_eq(t->streams[1].s->id, 2);
    h1t_respond(&t->streams[1], "200", "two");
    cr_assert(h1t_wait_end(t, 2));
    cr_assert(strstr(t->streams[2].head, ":path: /3\n"));
    h1t_respond(&t->streams[2], "200", "three");
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
    h1t_respond(r, "200", "x");
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
    h1t_respond(&t->streams[0], "200", "bye");
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
    cr_assert_str_eq(r->head, ":method: GET\n:scheme: http\n:path: /old\n",
                     "no Host: no :authority");
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
    h1t_respond(&t->streams[0], "200", "a");
    cr_assert(h1t_read_until(t, "\r\n\r\na"));
    cr_assert_str_eq(h1t_take(t),
                     "HTTP/1.1 200 OK\r\ncontent-length: 1\r\nconnection: keep-alive\r\n\r\na");
    h1t_sends(t, "GET /2 HTTP/1.0\r\nHost: h\r\n\r\n");
    cr_assert(h1t_wait_end(t, 1));
    h1t_respond(&t->streams[1], "200", "b");
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
    h1t_body_is(r, "data");
    /* a 100 from upstream is not repeated */
    cr_assert_eq(h1t_submit(r, false, ":status", "100", NULL), 0);
    h1t_respond(r, "200", "");
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
    h1t_respond(r, "200", "ok");
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
    h1t_respond(&t->streams[0], "200", "");
    cr_assert(h1t_wait_end(t, 1));
    cr_assert_str_eq(t->streams[1].head, ":method: GET\n:scheme: http\n"
                                         ":authority: example.org\n:path: /\n");
    h1t_respond(&t->streams[1], "200", "");
    cr_assert(h1t_wait_end(t, 2));
    cr_assert_str_eq(t->streams[2].head, ":method: OPTIONS\n:scheme: http\n"
                                         ":authority: o\n:path: *\n");
    h1t_free(t);
}

/* Upgrade is hop-by-hop and not supported: the request is served as plain HTTP and the next one
 * on the connection is parsed as HTTP too (the parser does not switch protocols). */
Test(h1_server, upgrade_request_served_as_http)
{
    struct h1t *t = h1t_server(NULL);
    h1t_sends(t, "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
                 "GET /2 HTTP/1.1\r\nHost: h\r\n\r\n");
    cr_assert(h1t_wait_end(t, 0));
    cr_assert_str_eq(t->streams[0].head,
                     ":method: GET\n:scheme: http\n:authority: h\n:path: /ws\n");
    h1t_respond(&t->streams[0], "200", "a");
    cr_assert(h1t_wait_end(t, 1));
    cr_assert(strstr(t->streams[1].head, ":path: /2\n"));
    h1t_respond(&t->streams[1], "200", "b");
    cr_assert(h1t_read_until(t, "\r\n\r\nb"));
    h1t_free(t);
}

/* An empty value keeps its entry; the next name starts a new one. */
Test(h1_server, empty_header_values)
{
    struct h1t *t = h1t_server(NULL);
    h1t_sends(t, "GET / HTTP/1.1\r\nHost: h\r\nX-Empty:\r\nX-Sp:   \r\nX-Next: n\r\n\r\n");
    cr_assert(h1t_wait_end(t, 0));
    cr_assert_str_eq(t->streams[0].head, ":method: GET\n:scheme: http\n:authority: h\n:path: /\n"
                                         "x-empty: \nx-sp: \nx-next: n\n");
    h1t_free(t);
}

/* Status codes without a registered reason phrase get "Unknown"; registered ones theirs. */
Test(h1_server, reason_phrases)
{
    struct h1t *t = h1t_server(NULL);
    h1t_sends(t, "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n");
    cr_assert(h1t_wait_end(t, 0));
    h1t_respond(&t->streams[0], "299", "a");
    cr_assert(h1t_wait_end(t, 1));
    h1t_respond(&t->streams[1], "511", "b");
    cr_assert(h1t_read_until(t, "\r\n\r\nb"));
    cr_assert_str_eq(h1t_take(t), "HTTP/1.1 299 Unknown\r\ncontent-length: 1\r\n\r\na"
                                  "HTTP/1.1 511 Network Authentication Required\r\n"
                                  "content-length: 1\r\n\r\nb");
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
    cr_assert_eq(h1t_submit(r, true, ":status", "200", "connection", "keep-alive", "keep-alive",
                            "timeout=1", "transfer-encoding", "chunked", "upgrade", "h2c", "x-ok",
                            "1", NULL),
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
    h1t_respond(&t->streams[1], "200", "n");
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
    h1t_respond(&t->streams[2], "200", "end");
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
    h1t_body_is(r, "req");
    cr_assert_eq(r->ntrailers, 1);
    cr_assert_str_eq(r->trailers, "grpc-timeout: 1S\n", "framing fields are not trailers");
    cr_assert_eq(h1t_submit(r, false, ":status", "200", "content-type", "text/plain", NULL), 0);
    r->s->ops->submit_data(r->s, (const uint8_t *)"hello", 5, false);
    r->s->ops->submit_data(r->s, (const uint8_t *)"", 0, false);
    r->s->ops->submit_data(r->s, (const uint8_t *)" world", 6, false);
    struct rm_headers *tr =
        h1t_headers(r->s->arena, "grpc-status", "0", "grpc-message", "ok", NULL);
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

static bool peer_got(struct h1t *t, const void *arg)
{
    return t->rx_len >= *(const size_t *)arg;
}
static bool got_writable(struct h1t *t, const void *arg)
{
    return t->streams[0].writable > 0;
}

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

Test(h1_server, bad_absolute_form)
{
    expect_rejected("GET ftp://example.com/ HTTP/1.1\r\nHost: h\r\n\r\n", R400, 0);
    expect_rejected("GET http://:80/ HTTP/1.1\r\nHost: h\r\n\r\n", R400, 0); /* no host */
    expect_rejected("GET http:///p HTTP/1.1\r\nHost: h\r\n\r\n", R400, 0);
    expect_rejected("GET http://user@/p HTTP/1.1\r\nHost: h\r\n\r\n", R400, 0);
    expect_rejected("GET http://a\"b/ HTTP/1.1\r\nHost: h\r\n\r\n", R400, 0);
}

/* strict parsing (no lenient flags): bare LF line ends are refused */
Test(h1_server, strict_line_ends)
{
    expect_rejected("GET / HTTP/1.1\nHost: h\n\n", R400, 0);
    expect_rejected("GET / HTTP/1.1\r\nHost: h\nX: 1\r\n\r\n", R400, 0);
}

/* obs-fold (RFC 9112 5.2): the continuation joins the value, the CRLF replaced by its space */
Test(h1_server, obs_fold_joined)
{
    struct h1t *t = h1t_server(NULL);
    h1t_sends(t, "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\nY: c\r\n\r\n");
    cr_assert(h1t_wait_end(t, 0));
    cr_assert_str_eq(t->streams[0].head,
                     ":method: GET\n:scheme: http\n:authority: h\n:path: /\nx: a b\ny: c\n");
    h1t_free(t);
}

/* A head that arrives whole and one that arrives in two pieces (names and values split across
 * reads) give the same block: names of 1 to 17 bytes (the 8-byte steps of the lower-casing),
 * mixed case, OWS of spaces and tabs, empty values, ':' and obs-text in values. */
Test(h1_server, whole_head_same_as_split)
{
    static const char req[] =
        "GET /f HTTP/1.1\r\nHost: h\r\nA: 1\r\nAbCdEfG:x\r\n"
        "ABCDEFGH: \t y z \t\r\nAbcdefghI:\t\r\nX-0123456789-ABCD: a:b\r\n"
        "x-0123456789-abcde:  \xe9t\xe9 \r\nE:\r\n!#$%&'*+-.^_`|~09:v\r\n\r\n";
    static const char want[] = ":method: GET\n:scheme: http\n:authority: h\n:path: /f\na: 1\n"
                               "abcdefg: x\nabcdefgh: y z\nabcdefghi: \n"
                               "x-0123456789-abcd: a:b\nx-0123456789-abcde: \xe9t\xe9\ne: \n"
                               "!#$%&'*+-.^_`|~09: v\n";
    size_t len = sizeof(req) - 1;
    struct h1t *t = h1t_server(NULL);
    h1t_sends(t, req); /* whole */
    cr_assert(h1t_wait_end(t, 0));
    cr_assert_str_eq(t->streams[0].head, want);
    h1t_respond(&t->streams[0], "200", "ok");
    cr_assert(h1t_read_until(t, "\r\n\r\nok"));
    h1t_take(t);
    h1t_release(&t->streams[0]);
    for (size_t cut = 17; cut < len; cut += 7) { /* in two pieces, cut inside the head */
        int i = t->nstreams;
        h1t_send(t, req, cut);
        h1t_spin(t, 1);
        h1t_send(t, req + cut, len - cut);
        cr_assert(h1t_wait_end(t, i), "split at %zu", cut);
        cr_assert_str_eq(t->streams[i].head, want, "split at %zu", cut);
        h1t_respond(&t->streams[i], "200", "ok");
        cr_assert(h1t_read_until(t, "\r\n\r\nok"), "split at %zu", cut);
        h1t_take(t);
        h1t_release(&t->streams[i]);
    }
    cr_assert_eq(t->closed, 0);
    h1t_free(t);
}

/* The header-count limit decides before a later error, whole head or not: 431, not 400. */
Test(h1_server, header_count_limit_before_bad_value)
{
    static const struct rm_codec_settings st = {.max_headers_count = 2};
    struct h1t *t = h1t_server(&st);
    h1t_sends(t, "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: \x01\r\n\r\n");
    cr_assert(h1t_wait_eof(t));
    cr_assert(strncmp(h1t_take(t), R431, strlen(R431)) == 0);
    h1t_free(t);
    /* at the limit, and at 33 headers under a higher one: served */
    static const struct rm_codec_settings st33 = {.max_headers_count = 33};
    for (int n = 2; n <= 33; n += 31) {
        char req[1024] = "GET / HTTP/1.1\r\nHost: h\r\n";
        for (int i = 1; i < n; i++)
            sprintf(req + strlen(req), "X-%d: v\r\n", i);
        strcat(req, "\r\n");
        t = h1t_server(n == 2 ? &st : &st33);
        h1t_sends(t, req);
        cr_assert(h1t_wait_end(t, 0), "%d headers", n);
        cr_assert(strstr(t->streams[0].head, n == 2 ? "x-1: v\n" : "x-32: v\n"));
        h1t_free(t);
    }
}

Test(h1_server, bad_header)
{
    expect_rejected("GET / HTTP/1.1\r\nHost: h\r\nBad Name: v\r\n\r\n", R400, 0);
    expect_rejected("GET / HTTP/1.1\r\nHost: h\r\nBad@Name: v\r\n\r\n", R400, 0);
    expect_rejected("GET / HTTP/1.1\r\nHost: h\r\nX-Long-Header Name: v\r\n\r\n", R400, 0);
    expect_rejected("GET / HTTP/1.1\r\nHost: h\r\nAbcdefg\x7f: v\r\n\r\n", R400, 0);
    expect_rejected("GET / HTTP/1.1\r\nHost: h\r\nAbcdefgh\xe9: v\r\n\r\n", R400, 0);
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
    h1t_body_is(&t->streams[0], "abc");
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
    h1t_respond(&t->streams[0], "200", "x");
    cr_assert(h1t_read_until(t, "\r\n\r\nx"));
    h1t_peer_close(t);
    cr_assert(h1t_wait_closed(t));
    cr_assert_eq(t->closed, 1);
    cr_assert_eq(t->streams[0].reset, -1, "a finished stream is not reset");
    h1t_free(t);
}

/* A client that half-closes right after its request still gets the answer. */
Test(h1_server, peer_half_close_after_request)
{
    struct h1t *t = h1t_server(NULL);
    t->on_end = answer_now;
    h1t_sends(t, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    h1t_peer_shutdown(t);
    cr_assert(h1t_wait_eof(t));
    cr_assert_str_eq(h1t_take(t), "HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nx");
    cr_assert(h1t_wait_closed(t));
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
    h1t_respond(&t->streams[0], "200", "last");
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
    h1t_respond(r, "413", "");
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

/* ---- more: flow control, splits, robustness ------------------------------------------------ */

static void pause_on_head(struct h1t_stream *r)
{
    r->s->ops->pause_reading(r->s, true);
}

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
    h1t_body_is(r, "abcdef");
    h1t_free(t);
}

Test(h1_server, response_content_length_written_once)
{
    struct h1t *t = h1t_server(NULL);
    h1t_sends(t, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    cr_assert(h1t_wait_end(t, 0));
    struct h1t_stream *r = &t->streams[0];
    cr_assert_eq(
        h1t_submit(r, false, ":status", "200", "content-length", "2", "content-length", "2", NULL),
        0);
    r->s->ops->submit_data(r->s, (const uint8_t *)"okEXTRA", 7, true);
    cr_assert(h1t_read_until(t, "ok"));
    h1t_spin(t, 2);
    cr_assert_str_eq(h1t_take(t), "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
                     "one content-length line, body cut at its value");
    h1t_free(t);
}

/* A response completed before the request body, the stream released from the callback that
 * ends the request: the exchange finishes (the connection closes: early response). */
static void release_on_end(struct h1t_stream *r)
{
    h1t_release(r);
}

Test(h1_server, release_inside_end_callback)
{
    struct h1t *t = h1t_server(NULL);
    h1t_sends(t, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n");
    cr_assert(h1t_wait_stream(t, 0));
    h1t_respond(&t->streams[0], "200", "early");
    t->on_end = release_on_end;
    h1t_sends(t, "ab");
    cr_assert(h1t_wait_eof(t));
    cr_assert_str_eq(h1t_take(t), "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n"
                                  "connection: close\r\n\r\nearly");
    cr_assert(t->streams[0].released);
    cr_assert_eq(t->streams[0].reset, -1);
    h1t_free(t);
}

Test(h1_server, garbage_input)
{
    h1t_fuzz(true, 150);
}

/* Response heads are written in one pass into a stack buffer; one that does not fit takes the
 * two-pass path into the arena: the bytes are the same either way. */
static void respond_with_value_of(struct h1t *t, size_t vlen, const char *want_framing)
{
    char *v = malloc(vlen + 1);
    memset(v, 'v', vlen);
    v[vlen] = 0;
    h1t_sends(t, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    cr_assert(h1t_wait_end(t, t->nstreams ? t->nstreams - 1 : 0));
    struct h1t_stream *r = &t->streams[t->nstreams - 1];
    cr_assert_eq(h1t_submit(r, false, ":status", "200", "x-big", v, NULL), 0);
    r->s->ops->submit_data(r->s, (const uint8_t *)"ok", 2, true);
    cr_assert(h1t_read_until(t, "\r\n0\r\n\r\n"));
    size_t n = 17 + 7 + vlen + 2 + strlen(want_framing) + 4 + 7 + 5;
    char *want = malloc(n + 1);
    snprintf(want, n + 1, "HTTP/1.1 200 OK\r\nx-big: %s\r\n%s\r\n\r\n2\r\nok\r\n0\r\n\r\n", v,
             want_framing);
    cr_assert_str_eq(h1t_take(t), want, "value of %zu bytes", vlen);
    free(want);
    free(v);
}

Test(h1_server, response_heads_around_the_stack_buffer)
{
    struct h1t *t = h1t_server(NULL);
    const size_t sizes[] = {10, 4000, 4030, 4040, 4050, 4100, 9000};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        respond_with_value_of(t, sizes[i], "transfer-encoding: chunked");
    h1t_free(t);
}

Test(h1_server, invalid_response_content_length_dropped)
{
    struct h1t *t = h1t_server(NULL);
    h1t_sends(t, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    cr_assert(h1t_wait_end(t, 0));
    struct h1t_stream *r = &t->streams[0];
    cr_assert_eq(h1t_submit(r, false, ":status", "200", "content-length", "2", "x-a", "1",
                            "content-length", "3", NULL),
                 0);
    r->s->ops->submit_data(r->s, (const uint8_t *)"ok", 2, true);
    cr_assert(h1t_read_until(t, "\r\n0\r\n\r\n"));
    cr_assert_str_eq(h1t_take(t),
                     "HTTP/1.1 200 OK\r\nx-a: 1\r\ntransfer-encoding: chunked\r\n"
                     "\r\n2\r\nok\r\n0\r\n\r\n",
                     "conflicting lengths: none written, the body is chunked");
    h1t_free(t);
}
