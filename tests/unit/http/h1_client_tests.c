/* Unit tests for the HTTP/1.1 codec's client side (proxy/http/h1_client.c), upstream: driven
 * over a real socketpair with a real rm_loop (tests/unit/http/h1_test_util.c).  Suite h1_client;
 * the server side is in test_h1_codec.c. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/http/h1_test_util.h"

/* ---- requests and responses
 * ----------------------------------------------------------------------------- */

Test(h1_client, request_serialization)
{
    struct h1t *t = h1t_client(NULL);
    cr_assert_eq(t->codec->ops->available_streams(t->codec), 1);
    struct h1t_stream *r = h1t_open(t);
    cr_assert(r);
    cr_assert_eq(t->codec->ops->available_streams(t->codec), 0);
    cr_assert_null(h1t_open(t), "one stream at a time");
    cr_assert_eq(h1t_submit(r, true, ":method", "GET", ":scheme", "http", ":authority",
                            "up.example:8080", ":path", "/x?y", "user-agent", "t/1", "connection",
                            "keep-alive", "te", "trailers", "host", "ignored", "x-multi", "a",
                            "x-multi", "b", NULL),
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
    cr_assert(h1t_run_until(t, h1t_idle_seen, NULL));
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
    cr_assert_str_eq(h1t_take(t), "POST /empty HTTP/1.1\r\nhost: u\r\ncontent-length: 0\r\n\r\n");
    h1t_free(t);
}

Test(h1_client, response_parsing_and_idle)
{
    struct h1t *t = h1t_client(NULL);
    struct h1t_stream *r = h1t_get(t, "/");
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
    h1t_body_is(r, "hello");
    cr_assert(h1t_run_until(t, h1t_idle_seen, NULL));
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
    cr_assert(h1t_run_until(t, h1t_idle_seen, NULL));
    h1t_free(t);
}

Test(h1_client, close_delimited_body)
{
    struct h1t *t = h1t_client(NULL);
    struct h1t_stream *r = h1t_get(t, "/");
    h1t_sends(t, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nabc");
    cr_assert(h1t_wait_stream(t, 0));
    h1t_spin(t, 2);
    cr_assert_eq(t->goaway, 1, "a close-delimited body can't be followed by another request");
    cr_assert_eq(t->codec->ops->available_streams(t->codec), 0);
    h1t_sends(t, "def");
    h1t_peer_shutdown(t);
    cr_assert(h1t_wait_end(t, 0));
    h1t_body_is(r, "abcdef");
    cr_assert_eq(r->reset, -1);
    cr_assert(h1t_wait_closed(t));
    cr_assert_eq(t->close_err, 0);
    cr_assert_eq(t->idle, 0);
    h1t_free(t);
}

Test(h1_client, connection_close_goaway)
{
    struct h1t *t = h1t_client(NULL);
    struct h1t_stream *r = h1t_get(t, "/");
    h1t_sends(t, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok");
    cr_assert(h1t_wait_end(t, 0));
    cr_assert_eq(t->goaway, 1);
    cr_assert_str_eq(r->head, ":status: 200\ncontent-length: 2\n");
    h1t_body_is(r, "ok");
    cr_assert(h1t_wait_closed(t));
    cr_assert(h1t_wait_eof(t), "the codec closed the connection");
    cr_assert_eq(t->idle, 0);
    h1t_free(t);
}

Test(h1_client, http10_response_goaway)
{
    struct h1t *t = h1t_client(NULL);
    struct h1t_stream *r = h1t_get(t, "/");
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
        struct h1t_stream *r = h1t_get(t, "/");
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
    struct h1t_stream *r = h1t_get(t, "/");
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
    struct h1t_stream *r = h1t_get(t, "/");
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
    cr_assert(h1t_run_until(t, h1t_idle_seen, NULL));
    h1t_release(r);
    r = h1t_get(t, "/304");
    h1t_sends(t, "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n");
    cr_assert(h1t_wait_end(t, 1));
    cr_assert(r->head_end);
    h1t_release(r);
    cr_assert(h1t_run_until(t, h1t_idle_seen, NULL));
    h1t_spin(t, 2);
    cr_assert_eq(t->closed, 0);
    h1t_free(t);
}

Test(h1_client, chunked_response_trailers)
{
    struct h1t *t = h1t_client(NULL);
    struct h1t_stream *r = h1t_get(t, "/rpc");
    h1t_sends(t, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "4\r\ndata\r\n0\r\nGrpc-Status: 0\r\nConnection: close\r\n\r\n");
    cr_assert(h1t_wait_end(t, 0));
    cr_assert_str_eq(r->head, ":status: 200\n");
    h1t_body_is(r, "data");
    cr_assert_eq(r->ntrailers, 1);
    cr_assert_str_eq(r->trailers, "grpc-status: 0\n");
    cr_assert(h1t_run_until(t, h1t_idle_seen, NULL));
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
    cr_assert(h1t_run_until(t, h1t_idle_seen, NULL));
    h1t_free(t);
}

Test(h1_client, release_mid_exchange_closes)
{
    struct h1t *t = h1t_client(NULL);
    struct h1t_stream *r = h1t_get(t, "/");
    h1t_spin(t, 1);
    h1t_release(r);
    cr_assert(h1t_wait_closed(t));
    cr_assert_eq(r->reset, -1);
    h1t_free(t);
}

Test(h1_client, shutdown)
{
    struct h1t *t = h1t_client(NULL);
    struct h1t_stream *r = h1t_get(t, "/");
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
    struct h1t_stream *r = h1t_get(t, "/");
    h1t_sends(t, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabc");
    cr_assert(h1t_wait_stream(t, 0));
    h1t_spin(t, 2);
    r->s->ops->pause_reading(r->s, true);
    h1t_sends(t, "def");
    h1t_spin(t, 5);
    cr_assert(!r->end);
    h1t_body_is(r, "abc");
    r->s->ops->pause_reading(r->s, false);
    cr_assert(h1t_wait_end(t, 0));
    h1t_body_is(r, "abcdef");
    h1t_free(t);
}

static bool client_writable(struct h1t *t, const void *arg)
{
    return t->streams[0].writable > 0;
}

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
        struct h1t_stream *r = h1t_get(t, "/s");
        cr_assert(h1t_read_until(t, "\r\n\r\n"));
        h1t_take(t);
        h1t_send(t, resp, cut);
        h1t_spin(t, 1);
        h1t_send(t, resp + cut, len - cut);
        cr_assert(h1t_wait_end(t, i), "split at %zu", cut);
        cr_assert_str_eq(r->head, ":status: 200\nx-split-header: value here\n", "split %zu", cut);
        h1t_body_is(r, "abc0123456789abcdef");
        cr_assert_str_eq(r->trailers, "x-tr: 1\n", "split at %zu", cut);
        h1t_release(r);
        cr_assert(h1t_run_until(t, h1t_idle_seen, NULL));
        h1t_spin(t, 1);
        cr_assert_eq(t->idle, 1, "one on_idle per exchange (split at %zu)", cut);
        t->idle = 0;
    }
    cr_assert_eq(t->closed, 0);
    h1t_free(t);
}

Test(h1_client, garbage_input)
{
    h1t_fuzz(false, 150);
}

/* The router releases its upstream stream from the callback that ends the response: the
 * exchange is complete and the connection goes back to the pool. */
static void release_now(struct h1t_stream *r)
{
    h1t_release(r);
}

Test(h1_client, release_inside_end_callback_keeps_connection)
{
    static const char *resp[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", /* ends in on_data */
        "HTTP/1.1 204 No Content\r\n\r\n",                /* ends in on_headers */
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\r\n\r\n",
    };
    struct h1t *t = h1t_client(NULL);
    t->on_end = release_now;
    for (int i = 0; i < 4; i++) {
        struct h1t_stream *r = h1t_get(t, "/");
        cr_assert(h1t_read_until(t, "\r\n\r\n"));
        h1t_take(t);
        h1t_sends(t, resp[i]);
        cr_assert(h1t_run_until(t, h1t_idle_seen, NULL), "response %d", i);
        cr_assert(r->released && r->end, "response %d", i);
        cr_assert_eq(t->closed, 0, "response %d: the connection is kept", i);
        t->idle = 0;
    }
    h1t_free(t);
}

/* Request heads are written in one pass into a stack buffer; one that does not fit takes the
 * two-pass path into the arena: the bytes are the same either way. */
Test(h1_client, request_heads_around_the_stack_buffer)
{
    const size_t sizes[] = {10, 4000, 4040, 4060, 4100, 9000};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        struct h1t *t = h1t_client(NULL);
        size_t vlen = sizes[i];
        char *v = malloc(vlen + 1);
        memset(v, 'v', vlen);
        v[vlen] = 0;
        struct h1t_stream *r = h1t_open(t);
        cr_assert(r);
        cr_assert_eq(h1t_submit(r, false, ":method", "POST", ":authority", "up", ":path", "/p",
                                "x-big", v, "content-length", "x", NULL),
                     0);
        r->s->ops->submit_data(r->s, (const uint8_t *)"ok", 2, true);
        cr_assert(h1t_read_until(t, "\r\n0\r\n\r\n"));
        size_t n = 100 + vlen;
        char *want = malloc(n);
        snprintf(want, n,
                 "POST /p HTTP/1.1\r\nhost: up\r\nx-big: %s\r\ntransfer-encoding: chunked\r\n"
                 "\r\n2\r\nok\r\n0\r\n\r\n",
                 v);
        cr_assert_str_eq(h1t_take(t), want, "value of %zu bytes, invalid length dropped", vlen);
        free(want);
        free(v);
        h1t_free(t);
    }
}

Test(h1_client, request_target_longer_than_the_stack_buffer)
{
    struct h1t *t = h1t_client(NULL);
    char path[6002];
    path[0] = '/';
    memset(path + 1, 'p', sizeof(path) - 2);
    path[sizeof(path) - 1] = 0;
    struct h1t_stream *r = h1t_open(t);
    cr_assert_eq(h1t_submit(r, true, ":method", "GET", ":authority", "up", ":path", path,
                            "content-length", "0", NULL),
                 0);
    cr_assert(h1t_read_until(t, "\r\n\r\n"));
    char want[6100];
    snprintf(want, sizeof(want), "GET %s HTTP/1.1\r\nhost: up\r\ncontent-length: 0\r\n\r\n", path);
    cr_assert_str_eq(h1t_take(t), want);
    h1t_free(t);
}
