#include "tests/unit/http/h2_test_util.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "proxy/http/h2_internal.h"
#include "proxy/net/conn.h"

#define PUMP_CHUNK (16 * 1024)

uint64_t h2t_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint8_t h2t_pattern(size_t off)
{
    return (uint8_t)((off * 31 + 7) ^ (off >> 13));
}

/* ---- records ------------------------------------------------------------------------------ */

static struct h2t_stream *record_new(struct h2t *t, bool server)
{
    struct h2t_stream *st = calloc(1, sizeof(*st));
    cr_assert_not_null(st);
    st->t = t;
    st->server = server;
    st->keep_body = true;
    rm_arena_init(&st->arena);
    if (server) {
        cr_assert_lt(t->nsrv, H2T_MAX_STREAMS);
        t->srv[t->nsrv++] = st;
    } else {
        cr_assert_lt(t->ncli, H2T_MAX_STREAMS);
        t->cli[t->ncli++] = st;
    }
    return st;
}

static void record_free(struct h2t_stream *st)
{
    rm_buf_reset(&st->body);
    rm_arena_dispose(&st->arena);
    free(st);
}

void h2t_release(struct h2t_stream *st)
{
    if (st->released) return;
    st->released = true;
    struct rm_stream *s = st->s;
    st->s = NULL;
    s->ops->release(s);
}

static void maybe_release(struct h2t_stream *st)
{
    if (!st->released && !st->hold && (st->reset || (st->ended && st->done_out))) h2t_release(st);
}

/* Server blocks live in the stream's arena, which goes with the stream: keep a copy. */
static struct rm_headers *keep_block(struct h2t_stream *st, struct rm_headers *h)
{
    if (!st->server) return h;
    struct rm_headers *copy = rm_arena_alloc(&st->arena, sizeof(*copy));
    rm_headers_init(copy, &st->arena);
    rm_headers_copy(copy, h);
    return copy;
}

/* ---- default server application ----------------------------------------------------------- */

static void echo(struct h2t_stream *st)
{
    size_t n = st->body.len;
    h2t_respond(st, 200, n ? rm_buf_data(&st->body) : NULL, n);
}

static void request_done(struct h2t_stream *st)
{
    if (st->t->on_request)
        st->t->on_request(st);
    else
        echo(st);
}

/* ---- stream events ------------------------------------------------------------------------ */

static struct h2t_stream *event_target(struct rm_stream *s)
{
    struct h2t_stream *st = s->user;
    if (st->released || st->reset) st->after_release_event = true;
    return st;
}

static void ev_headers(struct rm_stream *s, struct rm_headers *h, bool end)
{
    struct h2t_stream *st = event_target(s);
    st->headers_calls++;
    st->headers = keep_block(st, h);
    struct rm_str status = RM_HDR_GET(h, ":status");
    if (status.p) st->status = (int)rm_parse_u63(status.p, status.len);
    if (end) {
        st->ended = true;
        st->end_calls++;
    }
    if (st->server && st->t->on_server_headers) st->t->on_server_headers(st);
    if (!st->server && st->t->on_client_headers) st->t->on_client_headers(st);
    if (st->server && end && !st->released && !st->reset) request_done(st);
    maybe_release(st);
}

static void check_pattern(struct h2t_stream *st, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n && !st->pattern_bad; i++)
        st->pattern_bad = p[i] != h2t_pattern(st->body_len + i);
}

static void ev_data(struct rm_stream *s, const uint8_t *p, size_t n, bool end)
{
    struct h2t_stream *st = event_target(s);
    st->data_calls++;
    if (st->keep_body)
        rm_buf_append(&st->body, p, n);
    else
        check_pattern(st, p, n);
    st->body_len += n;
    if (end) {
        st->ended = true;
        st->end_calls++;
    }
    if (!st->server && st->t->on_client_data) st->t->on_client_data(st, p, n);
    if (st->server && end && !st->released && !st->reset) request_done(st);
    maybe_release(st);
}

static void ev_trailers(struct rm_stream *s, struct rm_headers *h)
{
    struct h2t_stream *st = event_target(s);
    st->trailers = keep_block(st, h);
    st->ended = true;
    st->end_calls++;
    if (st->server && !st->released && !st->reset) request_done(st);
    maybe_release(st);
}

static void ev_reset(struct rm_stream *s, enum rm_reset_reason reason)
{
    struct h2t_stream *st = event_target(s);
    st->reset = true;
    st->reason = reason;
    st->resets++;
    maybe_release(st);
}

static void ev_writable(struct rm_stream *s)
{
    struct h2t_stream *st = event_target(s);
    st->writable_calls++;
    if (st->t->on_writable)
        st->t->on_writable(st);
    else if (st->pump_total)
        h2t_pump(st);
    maybe_release(st);
}

static const struct rm_stream_events events = {
    .on_headers = ev_headers,
    .on_data = ev_data,
    .on_trailers = ev_trailers,
    .on_reset = ev_reset,
    .on_writable = ev_writable,
};

/* ---- codec callbacks ---------------------------------------------------------------------- */

static void srv_on_stream(void *user, struct rm_stream *s)
{
    struct h2t *t = user;
    struct h2t_stream *st = record_new(t, true);
    st->s = s;
    s->ev = &events;
    s->user = st;
}

static void srv_on_close(void *user, int err)
{
    struct h2t *t = user;
    t->server_close_calls++;
    t->server_close_err = err;
    t->server_gone = true;
}

static void cli_on_idle(void *user)
{
    ((struct h2t *)user)->idle_calls++;
}
static void cli_on_goaway(void *user)
{
    ((struct h2t *)user)->goaway_calls++;
}

static void cli_on_close(void *user, int err)
{
    struct h2t *t = user;
    t->client_close_calls++;
    t->client_close_err = err;
    t->client_gone = true;
}

static const struct rm_codec_callbacks server_cb = {
    .on_stream = srv_on_stream,
    .on_close = srv_on_close,
};

static const struct rm_codec_callbacks client_cb = {
    .on_idle = cli_on_idle,
    .on_goaway = cli_on_goaway,
    .on_close = cli_on_close,
};

/* ---- setup and teardown ------------------------------------------------------------------- */

void h2t_init(struct h2t *t)
{
    memset(t, 0, sizeof(*t));
    t->raw_fd = -1;
    t->loop = rm_loop_new();
    cr_assert_not_null(t->loop);
}

static struct rm_conn *wrap(struct h2t *t, int fd)
{
    struct sockaddr_storage peer = {.ss_family = AF_UNIX};
    struct rm_conn *c =
        rm_conn_accepted(t->loop, fd, (struct sockaddr *)&peer, sizeof(sa_family_t), NULL, NULL);
    cr_assert_not_null(c);
    return c;
}

static void pair(int fds[2])
{
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
}

static void start_server(struct h2t *t, int fd)
{
    t->sconn = wrap(t, fd);
    t->server = rm_h2_server_new(t->sconn, &t->sst, &server_cb, t);
    cr_assert_not_null(t->server);
}

static void start_client(struct h2t *t, int fd)
{
    t->cconn = wrap(t, fd);
    t->client = rm_h2_client_new(t->cconn, &t->cst, &client_cb, t);
    cr_assert_not_null(t->client);
}

void h2t_start(struct h2t *t)
{
    int fds[2];
    pair(fds);
    start_server(t, fds[0]);
    start_client(t, fds[1]);
}

void h2t_start_raw_client(struct h2t *t)
{
    int fds[2];
    pair(fds);
    start_server(t, fds[0]);
    t->raw_fd = fds[1];
    t->client_gone = true;
}

void h2t_start_raw_server(struct h2t *t)
{
    int fds[2];
    pair(fds);
    start_client(t, fds[1]);
    t->raw_fd = fds[0];
    t->server_gone = true;
}

static void settle(struct h2t *t, int ms)
{
    uint64_t end = h2t_now_ms() + (uint64_t)ms;
    while (h2t_now_ms() < end)
        h2t_spin(t);
}

void h2t_finish(struct h2t *t)
{
    if (!t->client_gone) t->client->ops->close(t->client);
    if (!t->server_gone) t->server->ops->close(t->server);
    t->client_gone = t->server_gone = true;
    if (t->raw_fd >= 0) {
        close(t->raw_fd);
        t->raw_fd = -1;
    }
    settle(t, 5);
    for (int i = 0; i < t->nsrv; i++)
        h2t_release(t->srv[i]);
    for (int i = 0; i < t->ncli; i++)
        h2t_release(t->cli[i]);
    settle(t, 3);
    for (int i = 0; i < t->nsrv; i++)
        record_free(t->srv[i]);
    for (int i = 0; i < t->ncli; i++)
        record_free(t->cli[i]);
    rm_buf_reset(&t->raw_in);
    rm_loop_free(t->loop);
    rm_buf_thread_cleanup();
    rm_arena_thread_cleanup();
    rm_h2_mem_thread_cleanup();
}

/* ---- running ------------------------------------------------------------------------------ */

static void slice_end(struct rm_timer *tm)
{
    struct h2t *t = rm_container_of(tm, struct h2t, slice);
    rm_loop_stop(t->loop);
}

static void raw_read(struct h2t *t)
{
    for (;;) {
        uint8_t *p = rm_buf_reserve(&t->raw_in, 16384);
        ssize_t n = read(t->raw_fd, p, rm_buf_room(&t->raw_in));
        if (n > 0) {
            rm_buf_commit(&t->raw_in, (size_t)n);
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EINTR)) t->raw_eof = true;
        return;
    }
}

void h2t_spin(struct h2t *t)
{
    rm_loop_update_time(t->loop);
    rm_timer_start(t->loop, &t->slice, 1, slice_end);
    rm_loop_run(t->loop);
    rm_timer_stop(t->loop, &t->slice);
    if (t->raw_fd >= 0 && !t->raw_eof) raw_read(t);
}

/* ---- requests and responses --------------------------------------------------------------- */

struct rm_headers *h2t_hdrs(struct rm_arena *a, ...)
{
    struct rm_headers *h = rm_arena_alloc(a, sizeof(*h));
    rm_headers_init(h, a);
    va_list ap;
    va_start(ap, a);
    const char *name;
    while ((name = va_arg(ap, const char *))) {
        const char *value = va_arg(ap, const char *);
        rm_headers_add(h, name, strlen(name), value, strlen(value));
    }
    va_end(ap);
    return h;
}

struct h2t_stream *h2t_open(struct h2t *t)
{
    struct rm_stream *s;
    struct h2t_stream *st = record_new(t, false);
    if (rm_codec_new_stream(t->client, &events, st, &st->arena, &s) != 0) {
        t->ncli--;
        record_free(st);
        return NULL;
    }
    st->s = s;
    return st;
}

struct h2t_stream *h2t_request(struct h2t *t, const char *method, const char *path,
                               const void *body, size_t len)
{
    struct h2t_stream *st = h2t_open(t);
    if (!st) return NULL;
    struct rm_headers *h = h2t_hdrs(&st->arena, ":method", method, ":scheme", "http", ":authority",
                                    "test.local", ":path", path, NULL);
    cr_assert_eq(st->s->ops->submit_headers(st->s, h, body == NULL), 0);
    if (body == NULL)
        st->done_out = true;
    else
        h2t_send(st, body, len, true);
    return st;
}

void h2t_send(struct h2t_stream *st, const void *p, size_t n, bool end)
{
    cr_assert_eq(st->s->ops->submit_data(st->s, p, n, end), 0);
    if (end) st->done_out = true;
}

void h2t_respond(struct h2t_stream *st, int status, const void *body, size_t n)
{
    char code[8];
    snprintf(code, sizeof(code), "%d", status);
    struct rm_headers *h = h2t_hdrs(st->s->arena, ":status", code, NULL);
    cr_assert_eq(st->s->ops->submit_headers(st->s, h, n == 0), 0);
    if (n == 0)
        st->done_out = true;
    else
        h2t_send(st, body, n, true);
}

void h2t_pump(struct h2t_stream *st)
{
    uint8_t chunk[PUMP_CHUNK];
    while (st->s && !st->done_out) {
        const struct rm_h2_stream *hs = rm_h2_stream_of(st->s);
        if (hs->out.len > st->max_pending) st->max_pending = hs->out.len;
        if (st->s->ops->write_blocked(st->s)) {
            st->saw_blocked = true;
            return;
        }
        size_t n = st->pump_total - st->pump_sent;
        if (n > sizeof(chunk)) n = sizeof(chunk);
        for (size_t i = 0; i < n; i++)
            chunk[i] = h2t_pattern(st->pump_sent + i);
        st->pump_sent += n;
        h2t_send(st, chunk, n, st->pump_sent == st->pump_total);
    }
}

/* ---- raw peer ----------------------------------------------------------------------------- */

void h2t_raw_write(struct h2t *t, const void *p, size_t n)
{
    cr_assert_eq(write(t->raw_fd, p, n), (ssize_t)n);
}

size_t h2t_frame(uint8_t *out, uint8_t type, uint8_t flags, uint32_t sid, const void *payload,
                 size_t len)
{
    out[0] = (uint8_t)(len >> 16);
    out[1] = (uint8_t)(len >> 8);
    out[2] = (uint8_t)len;
    out[3] = type;
    out[4] = flags;
    out[5] = (uint8_t)(sid >> 24) & 0x7f;
    out[6] = (uint8_t)(sid >> 16);
    out[7] = (uint8_t)(sid >> 8);
    out[8] = (uint8_t)sid;
    if (len) memcpy(out + 9, payload, len);
    return 9 + len;
}

bool h2t_raw_has_frame(struct h2t *t, size_t skip, uint8_t type, int64_t sid)
{
    const uint8_t *p = t->raw_in.base ? rm_buf_data(&t->raw_in) : NULL;
    size_t n = t->raw_in.len, off = skip;
    while (p && off + 9 <= n) {
        size_t len = (size_t)p[off] << 16 | (size_t)p[off + 1] << 8 | p[off + 2];
        uint32_t id = ((uint32_t)p[off + 5] << 24 | (uint32_t)p[off + 6] << 16 |
                       (uint32_t)p[off + 7] << 8 | p[off + 8]) &
                      0x7fffffffu;
        if (p[off + 3] == type && (sid < 0 || id == (uint32_t)sid)) return true;
        off += 9 + len;
    }
    return false;
}
