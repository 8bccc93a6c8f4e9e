#include "tests/unit/http/h1_test_util.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/core/buf.h"
#include "proxy/core/loop.h"
#include "proxy/net/conn.h"

/* ---- recorder ------------------------------------------------------------------------------ */

static void append(char *dst, size_t cap, const char *src, size_t n)
{
    size_t len = strlen(dst);
    if (len + n + 1 > cap) n = cap - len - 1;
    memcpy(dst + len, src, n);
    dst[len + n] = 0;
}

static void dump_block(char *dst, size_t cap, const struct rm_headers *h)
{
    dst[0] = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        append(dst, cap, (const char *)h->v[i].name, h->v[i].name_len);
        append(dst, cap, ": ", 2);
        append(dst, cap, (const char *)h->v[i].value, h->v[i].value_len);
        append(dst, cap, "\n", 1);
    }
}

static void mark_end(struct h1t_stream *r)
{
    r->end = true;
    r->order = ++r->t->nended;
    if (r->t->on_end) r->t->on_end(r);
}

static void ev_headers(struct rm_stream *s, struct rm_headers *h, bool end)
{
    struct h1t_stream *r = s->user;
    r->nheaders++;
    struct rm_str st = RM_HDR_GET(h, ":status");
    if (st.p && st.len == 3 && st.p[0] == '1') { /* informational */
        append(r->info, sizeof(r->info), st.p, st.len);
        append(r->info, sizeof(r->info), " ", 1);
        return;
    }
    dump_block(r->head, sizeof(r->head), h);
    r->head_end = end;
    if (r->t->on_head) r->t->on_head(r);
    if (end) mark_end(r);
}

static void ev_data(struct rm_stream *s, const uint8_t *p, size_t n, bool end)
{
    struct h1t_stream *r = s->user;
    r->ndata++;
    if (r->body_len + n > r->body_cap) {
        r->body_cap = (r->body_len + n) * 2 + 64;
        r->body = realloc(r->body, r->body_cap);
    }
    if (n) memcpy(r->body + r->body_len, p, n);
    r->body_len += n;
    if (end) mark_end(r);
}

static void ev_trailers(struct rm_stream *s, struct rm_headers *h)
{
    struct h1t_stream *r = s->user;
    r->ntrailers++;
    dump_block(r->trailers, sizeof(r->trailers), h);
    mark_end(r);
}

static void ev_reset(struct rm_stream *s, enum rm_reset_reason why)
{
    struct h1t_stream *r = s->user;
    r->reset = (int)why;
}

static void ev_writable(struct rm_stream *s)
{
    struct h1t_stream *r = s->user;
    r->writable++;
    if (r->t->on_writable) r->t->on_writable(r);
}

static const struct rm_stream_events rec_events = {
    .on_headers = ev_headers,
    .on_data = ev_data,
    .on_trailers = ev_trailers,
    .on_reset = ev_reset,
    .on_writable = ev_writable,
};

static struct h1t_stream *slot(struct h1t *t)
{
    if (t->nstreams >= H1T_MAX_STREAMS) abort();
    struct h1t_stream *r = &t->streams[t->nstreams++];
    r->t = t;
    r->reset = -1;
    rm_arena_init(&r->arena);
    return r;
}

static void cb_stream(void *user, struct rm_stream *s)
{
    struct h1t *t = user;
    struct h1t_stream *r = slot(t);
    r->s = s;
    s->ev = &rec_events;
    s->user = r;
}

static void cb_idle(void *user)
{
    ((struct h1t *)user)->idle++;
}
static void cb_goaway(void *user)
{
    ((struct h1t *)user)->goaway++;
}
static void cb_close(void *user, int err)
{
    struct h1t *t = user;
    t->closed++;
    t->close_err = err;
}

static const struct rm_codec_callbacks callbacks = {
    .on_stream = cb_stream,
    .on_idle = cb_idle,
    .on_goaway = cb_goaway,
    .on_close = cb_close,
};

/* ---- harness ------------------------------------------------------------------------------- */

static size_t dummy_data(struct rm_conn *c, const uint8_t *p, size_t n)
{
    return 0;
}
static void dummy_close(struct rm_conn *c, int err) {}
static const struct rm_conn_handler dummy_handler = {.on_data = dummy_data,
                                                     .on_close = dummy_close};

static struct h1t *harness(const struct rm_codec_settings *st, bool server)
{
    signal(SIGPIPE, SIG_IGN); /* as the proxy does: writes to a closed peer get EPIPE */
    struct h1t *t = calloc(1, sizeof(*t));
    t->streams = calloc(H1T_MAX_STREAMS, sizeof(*t->streams));
    t->loop = rm_loop_new();
    t->server = server;
    t->peer_read = true;
    int sv[2];
    if (!t->loop || socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    t->peer = sv[1];
    struct sockaddr_storage ss = {.ss_family = AF_UNIX};
    t->conn = rm_conn_accepted(t->loop, sv[0], (struct sockaddr *)&ss, sizeof(sa_family_t),
                               &dummy_handler, NULL);
    if (!t->conn) abort();
    t->codec = server ? rm_h1_server_new(t->conn, st, &callbacks, t)
                      : rm_h1_client_new(t->conn, st, &callbacks, t);
    if (!t->codec) abort();
    return t;
}

struct h1t *h1t_server(const struct rm_codec_settings *st)
{
    return harness(st, true);
}
struct h1t *h1t_client(const struct rm_codec_settings *st)
{
    return harness(st, false);
}

static void peer_read(struct h1t *t)
{
    if (t->peer < 0 || t->peer_eof) return;
    for (;;) {
        if (t->rx_cap - t->rx_len < 65536) {
            t->rx_cap = t->rx_cap * 2 + 65536;
            t->rx = realloc(t->rx, t->rx_cap + 1);
        }
        ssize_t n = read(t->peer, t->rx + t->rx_len, t->rx_cap - t->rx_len);
        if (n > 0) {
            t->rx_len += (size_t)n;
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EINTR)) t->peer_eof = true;
        if (n < 0 && errno == EINTR) continue;
        break;
    }
    t->rx[t->rx_len] = 0;
}

static void on_tick(struct rm_timer *tm)
{
    struct h1t *t = rm_container_of(tm, struct h1t, tick);
    if (t->peer_read) peer_read(t);
    if (t->pred && t->pred(t, t->pred_arg)) {
        rm_loop_stop(t->loop);
        return;
    }
    if (rm_loop_update_time(t->loop) >= t->deadline) {
        t->timed_out = true;
        rm_loop_stop(t->loop);
        return;
    }
    rm_timer_start(t->loop, &t->tick, 1, on_tick);
}

bool h1t_run_until(struct h1t *t, bool (*pred)(struct h1t *t, const void *arg), const void *arg)
{
    t->pred = pred;
    t->pred_arg = arg;
    t->timed_out = false;
    t->deadline = rm_loop_update_time(t->loop) + H1T_TIMEOUT_MS;
    rm_timer_start(t->loop, &t->tick, 0, on_tick);
    rm_loop_run(t->loop);
    rm_timer_stop(t->loop, &t->tick);
    if (t->peer_read) peer_read(t);
    t->pred = NULL;
    return pred ? pred(t, arg) : true;
}

static bool count_down(struct h1t *t, const void *arg)
{
    int *left = (int *)arg;
    return --*left <= 0;
}

void h1t_spin(struct h1t *t, int iterations)
{
    int left = iterations;
    h1t_run_until(t, count_down, &left);
}

void h1t_send(struct h1t *t, const void *p, size_t n)
{
    const char *s = p;
    int tries = 0;
    while (n) {
        ssize_t w = write(t->peer, s, n);
        if (w > 0) {
            s += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EINTR) return; /* the codec side is gone */
        if (++tries > 1000) abort();
        h1t_spin(t, 1);
    }
}

void h1t_sends(struct h1t *t, const char *s)
{
    h1t_send(t, s, strlen(s));
}

void h1t_peer_shutdown(struct h1t *t)
{
    shutdown(t->peer, SHUT_WR);
}

void h1t_peer_close(struct h1t *t)
{
    if (t->peer >= 0) close(t->peer);
    t->peer = -1;
}

static bool has_rx(struct h1t *t, const void *arg)
{
    return t->rx && strstr(t->rx, (const char *)arg) != NULL;
}

bool h1t_read_until(struct h1t *t, const char *s)
{
    return h1t_run_until(t, has_rx, s);
}

static bool is_eof(struct h1t *t, const void *arg)
{
    return t->peer_eof;
}
bool h1t_wait_eof(struct h1t *t)
{
    return h1t_run_until(t, is_eof, NULL);
}

static bool has_stream(struct h1t *t, const void *arg)
{
    return t->nstreams > *(const int *)arg;
}
bool h1t_wait_stream(struct h1t *t, int i)
{
    return h1t_run_until(t, has_stream, &i);
}

static bool stream_ended(struct h1t *t, const void *arg)
{
    int i = *(const int *)arg;
    return t->nstreams > i && (t->streams[i].end || t->streams[i].reset >= 0);
}
bool h1t_wait_end(struct h1t *t, int i)
{
    return h1t_run_until(t, stream_ended, &i);
}

static bool is_closed(struct h1t *t, const void *arg)
{
    return t->closed > 0;
}
bool h1t_wait_closed(struct h1t *t)
{
    return h1t_run_until(t, is_closed, NULL);
}

const char *h1t_take(struct h1t *t)
{
    free(t->taken);
    t->taken = malloc(t->rx_len + 1);
    memcpy(t->taken, t->rx ? t->rx : "", t->rx_len);
    t->taken[t->rx_len] = 0;
    t->rx_len = 0;
    if (t->rx) t->rx[0] = 0;
    return t->taken;
}

struct h1t_stream *h1t_open(struct h1t *t)
{
    struct h1t_stream *r = slot(t);
    if (rm_codec_new_stream(t->codec, &rec_events, r, &r->arena, &r->s) < 0) {
        t->nstreams--;
        return NULL;
    }
    return r;
}

void h1t_release(struct h1t_stream *r)
{
    if (r->released || !r->s) return;
    r->released = true;
    r->s->ops->release(r->s);
}

void h1t_free(struct h1t *t)
{
    for (int i = 0; i < t->nstreams; i++)
        h1t_release(&t->streams[i]);
    if (!t->closed && !t->codec_closed) t->codec->ops->close(t->codec);
    h1t_spin(t, 3);
    h1t_peer_close(t);
    h1t_spin(t, 2);
    for (int i = 0; i < t->nstreams; i++) {
        free(t->streams[i].body);
        rm_arena_dispose(&t->streams[i].arena);
    }
    rm_loop_free(t->loop);
    free(t->streams);
    free(t->rx);
    free(t->taken);
    free(t);
    rm_buf_thread_cleanup();
    rm_arena_thread_cleanup();
}

/* ---- header blocks ------------------------------------------------------------------------- */

static struct rm_headers *vheaders(struct rm_arena *arena, va_list ap)
{
    struct rm_headers *h = rm_arena_alloc(arena, sizeof(*h));
    rm_headers_init(h, arena);
    for (;;) {
        const char *n = va_arg(ap, const char *);
        if (!n) break;
        const char *v = va_arg(ap, const char *);
        rm_headers_add(h, n, strlen(n), v, strlen(v));
    }
    return h;
}

struct rm_headers *h1t_headers(struct rm_arena *arena, ...)
{
    va_list ap;
    va_start(ap, arena);
    struct rm_headers *h = vheaders(arena, ap);
    va_end(ap);
    return h;
}

int h1t_submit(struct h1t_stream *r, bool end_stream, ...)
{
    va_list ap;
    va_start(ap, end_stream);
    struct rm_headers *h = vheaders(r->s->arena, ap);
    va_end(ap);
    return r->s->ops->submit_headers(r->s, h, end_stream);
}

/* ---- assertions and scenarios -------------------------------------------------------------- */

void h1t_respond(struct h1t_stream *r, const char *status, const char *body)
{
    char len[32];
    snprintf(len, sizeof(len), "%zu", strlen(body));
    cr_assert_eq(h1t_submit(r, false, ":status", status, "content-length", len, NULL), 0);
    cr_assert_eq(r->s->ops->submit_data(r->s, (const uint8_t *)body, strlen(body), true), 0);
}

void h1t_body_is(const struct h1t_stream *r, const char *want)
{
    cr_assert_eq(r->body_len, strlen(want), "body length %zu, want %zu", r->body_len, strlen(want));
    cr_assert(r->body_len == 0 || memcmp(r->body, want, r->body_len) == 0);
}

struct h1t_stream *h1t_get(struct h1t *t, const char *path)
{
    struct h1t_stream *r = h1t_open(t);
    cr_assert(r);
    cr_assert_eq(h1t_submit(r, true, ":method", "GET", ":scheme", "http", ":authority",
                            "up.example", ":path", path, NULL),
                 0);
    return r;
}

bool h1t_idle_seen(struct h1t *t, const void *arg)
{
    return t->idle > 0;
}

static uint64_t rng = 0x243f6a8885a308d3u;

static uint32_t rnd(void) /* xorshift64 */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)rng;
}

static void answer_and_release(struct h1t_stream *r)
{
    h1t_respond(r, "200", "x");
    h1t_release(r);
}

void h1t_fuzz(bool server, int rounds)
{
    static const char *frag[] = {
        "GET / HTTP/1.1\r\n",
        "Host: h\r\n",
        "\r\n",
        "Content-Length: 3\r\n",
        "Transfer-Encoding: chunked\r\n",
        "5\r\nhello\r\n",
        "0\r\n\r\n",
        "HTTP/1.1 200 OK\r\n",
        "Connection: close\r\n",
        "X: y\r\n",
        "POST /p HTTP/1.0\r\n",
        "HTTP/1.1 100 Continue\r\n",
    };
    static const struct rm_codec_settings st = {.accept_http_10 = true};
    for (int i = 0; i < rounds; i++) {
        struct h1t *t = server ? h1t_server(&st) : h1t_client(NULL);
        if (!server) h1t_get(t, "/");
        t->on_end = server ? answer_and_release : NULL;
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
        if (rnd() % 2) h1t_peer_close(t);
        h1t_spin(t, 2);
        h1t_free(t);
    }
}
