/* remora-upstream: requests: header storage, body source, readiness, the per-loop cache. */
#include "bench/upstream/req.h"

#include "bench/upstream/conn.h"

#include <stdlib.h>
#include <string.h>

enum {
    CACHE_MAX = 4096,       /* request objects kept per loop */
    KEEP_ARENA = 64 * 1024, /* buffers larger than this are freed, not cached */
    KEEP_PIPE = 1024 * 1024,
    KEEP_HDRS = 256,
};

static void on_delay(struct rmu_timer *t)
{
    struct rmu_req *r = RMU_CONTAINER_OF(t, struct rmu_req, delay);
    r->delay_pending = false;
    rmu_req_kick(r);
}

static void free_storage(struct rmu_req *r)
{
    rmu_buf_dispose(&r->arena);
    rmu_buf_dispose(&r->pipe);
    free(r->hdrs);
    free(r);
}

struct rmu_req *rmu_req_new(struct rmu_conn *c)
{
    struct rmu_loop *l = c->loop;
    struct rmu_req *r = l->free_reqs;
    if (r) {
        l->free_reqs = r->next;
        l->nfree_reqs--;
    } else {
        r = calloc(1, sizeof(*r));
        if (!r) return NULL;
    }
    struct rmu_buf arena = r->arena, pipe = r->pipe;
    struct rmu_hdr *hdrs = r->hdrs;
    uint32_t caphdrs = r->caphdrs;
    memset(r, 0, sizeof(*r));
    r->arena = (struct rmu_buf){.data = arena.data, .cap = arena.cap};
    r->pipe = (struct rmu_buf){.data = pipe.data, .cap = pipe.cap};
    r->hdrs = hdrs;
    r->caphdrs = caphdrs;
    r->delay.cb = on_delay;
    r->conn = c;
    r->prev = c->reqs_tail;
    if (c->reqs_tail)
        c->reqs_tail->next = r;
    else
        c->reqs_head = r;
    c->reqs_tail = r;
    c->nreqs++;
    return r;
}

void rmu_req_free(struct rmu_req *r)
{
    struct rmu_conn *c = r->conn;
    struct rmu_loop *l = c->loop;
    rmu_timer_cancel(l, &r->delay);
    if (r->prev)
        r->prev->next = r->next;
    else
        c->reqs_head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        c->reqs_tail = r->prev;
    c->nreqs--;
    if (l->nfree_reqs >= CACHE_MAX) {
        free_storage(r);
        return;
    }
    if (r->arena.cap > KEEP_ARENA) rmu_buf_dispose(&r->arena);
    if (r->pipe.cap > KEEP_PIPE) rmu_buf_dispose(&r->pipe);
    if (r->caphdrs > KEEP_HDRS) {
        free(r->hdrs);
        r->hdrs = NULL;
        r->caphdrs = 0;
    }
    r->conn = NULL;
    r->next = l->free_reqs;
    l->free_reqs = r;
    l->nfree_reqs++;
}

void rmu_req_free_cache(struct rmu_loop *l)
{
    while (l->free_reqs) {
        struct rmu_req *r = l->free_reqs;
        l->free_reqs = r->next;
        free_storage(r);
    }
    l->nfree_reqs = 0;
}

/* ---- request headers ------------------------------------------------------------------------- */

static int arena_append(struct rmu_req *r, const char *p, size_t n, bool lower)
{
    if (r->arena.len + n > RMU_MAX_HEADER_BYTES) {
        r->too_large = true;
        return -1;
    }
    if (n == 0) return 0;
    if (rmu_buf_reserve(&r->arena, n) < 0) return -1;
    uint8_t *d = rmu_buf_tail(&r->arena);
    if (lower) {
        for (size_t i = 0; i < n; i++) {
            uint8_t ch = (uint8_t)p[i];
            d[i] = ch >= 'A' && ch <= 'Z' ? (uint8_t)(ch + 32) : ch;
        }
    } else {
        memcpy(d, p, n);
    }
    r->arena.len += n;
    return 0;
}

int rmu_req_url_append(struct rmu_req *r, const char *p, size_t n)
{
    if (r->url_len == 0) r->url_off = (uint32_t)r->arena.len;
    if (arena_append(r, p, n, false) < 0) return -1;
    r->url_len += (uint32_t)n;
    return 0;
}

int rmu_req_name_append(struct rmu_req *r, const char *p, size_t n, bool fresh)
{
    if (fresh || r->nhdrs == 0) {
        if (r->nhdrs == r->caphdrs) {
            uint32_t cap = r->caphdrs ? r->caphdrs * 2 : 32;
            struct rmu_hdr *h = realloc(r->hdrs, cap * sizeof(*h));
            if (!h) return -1;
            r->hdrs = h;
            r->caphdrs = cap;
        }
        uint32_t at = (uint32_t)r->arena.len;
        r->hdrs[r->nhdrs++] = (struct rmu_hdr){at, 0, at, 0};
    }
    if (arena_append(r, p, n, true) < 0) return -1;
    r->hdrs[r->nhdrs - 1].name_len += (uint32_t)n;
    return 0;
}

int rmu_req_value_append(struct rmu_req *r, const char *p, size_t n, bool fresh)
{
    if (r->nhdrs == 0) return -1;
    struct rmu_hdr *h = &r->hdrs[r->nhdrs - 1];
    if (fresh) {
        h->value_off = (uint32_t)r->arena.len;
        h->value_len = 0;
    }
    if (arena_append(r, p, n, false) < 0) return -1;
    r->hdrs[r->nhdrs - 1].value_len += (uint32_t)n;
    return 0;
}

struct rmu_str rmu_req_header(const struct rmu_req *r, const char *name)
{
    size_t n = strlen(name);
    for (uint32_t i = 0; i < r->nhdrs; i++) {
        struct rmu_str k = rmu_req_name(r, i);
        if (k.n == n && memcmp(k.p, name, n) == 0) return rmu_req_value(r, i);
    }
    return (struct rmu_str){NULL, 0};
}

/* ---- lifecycle ------------------------------------------------------------------------------- */

static void fill_request_line(struct rmu_req *r)
{
    if (r->h2) {
        r->method = rmu_req_header(r, ":method");
        r->path = rmu_req_header(r, ":path");
        r->authority = rmu_req_header(r, ":authority");
        r->scheme = rmu_req_header(r, ":scheme");
    } else {
        r->path = (struct rmu_str){(const char *)r->arena.data + r->url_off, r->url_len};
        r->scheme = r->conn->ssl ? (struct rmu_str){"https", 5} : (struct rmu_str){"http", 4};
    }
    if (!r->authority.p) r->authority = rmu_req_header(r, "host");
    if (!r->path.p) r->path = (struct rmu_str){"", 0};
    if (!r->authority.p) r->authority = (struct rmu_str){"", 0};
    if (!r->method.p) r->method = (struct rmu_str){"", 0};
    r->is_head = r->method.n == 4 && memcmp(r->method.p, "HEAD", 4) == 0;
    struct rmu_str cl = rmu_req_header(r, "content-length");
    if (cl.p && rmu_parse_u64(cl.p, cl.n, UINT64_MAX / 2, &r->req_cl) == 0) r->has_req_cl = true;
}

void rmu_req_headers_done(struct rmu_req *r)
{
    struct rmu_loop *l = r->conn->loop;
    r->hdrs_done = true;
    fill_request_line(r);
    rmu_behaviour_parse(r);
    if (r->bh.error || r->bh.echo_request) {
        r->src = RMU_SRC_BUF;
    } else if (r->bh.echo || r->bh.grpc) {
        r->src = RMU_SRC_ECHO;
        r->keeps_body = true;
    } else {
        r->src = RMU_SRC_PATTERN;
        r->pattern_left = r->bh.body_size;
    }
    if (r->bh.delay_ms > 0) {
        r->delay_pending = true;
        rmu_timer_arm(l, &r->delay, r->bh.delay_ms);
    }
    atomic_fetch_add_explicit(r->h2 ? &l->stats.h2_reqs : &l->stats.h1_reqs, 1,
                              memory_order_relaxed);
    rmu_req_kick(r);
}

int rmu_req_body(struct rmu_req *r, const uint8_t *p, size_t n)
{
    r->body_len += n;
    if (!r->keeps_body || n == 0) return 0;
    if (rmu_buf_append(&r->pipe, p, n) < 0) return -1;
    if (r->started) rmu_req_kick(r);
    return 0;
}

void rmu_req_body_done(struct rmu_req *r)
{
    if (r->req_done) return;
    r->req_done = true;
    if (r->hdrs_done) rmu_req_kick(r);
}

bool rmu_req_ready(const struct rmu_req *r)
{
    return r->hdrs_done && !r->delay_pending && (r->req_done || r->src == RMU_SRC_ECHO);
}

void rmu_req_kick(struct rmu_req *r)
{
    struct rmu_conn *c = r->conn;
    if (c->state == RMU_CONN_DEAD) return;
    if (r->h2) {
        if (!r->started && rmu_req_ready(r)) {
            if (rmu_h2_start(r) < 0) {
                rmu_conn_kill(c);
                return;
            }
        } else if (r->started && r->deferred) {
            rmu_h2_resume(r);
        }
    }
    rmu_conn_wake(c);
}

/* ---- response body --------------------------------------------------------------------------- */

int rmu_req_start(struct rmu_req *r)
{
    r->started = true;
    if (r->src != RMU_SRC_BUF) return 0;
    r->pipe.len = r->pipe.off = 0;
    if (r->bh.error) {
        struct rmu_str arg = r->bh.error_arg;
        if (rmu_buf_append(&r->pipe, r->bh.error, strlen(r->bh.error)) < 0 ||
            (arg.n &&
             (rmu_buf_append(&r->pipe, " [", 2) < 0 || rmu_buf_append(&r->pipe, arg.p, arg.n) < 0 ||
              rmu_buf_append(&r->pipe, "]", 1) < 0)) ||
            rmu_buf_append(&r->pipe, "\n", 1) < 0)
            return -1;
        return 0;
    }
    return rmu_behaviour_echo_json(r, &r->pipe);
}

bool rmu_req_body_length(const struct rmu_req *r, uint64_t *len)
{
    switch (r->src) {
    case RMU_SRC_PATTERN:
        *len = r->pattern_left;
        return true;
    case RMU_SRC_BUF:
        *len = r->pipe.len;
        return true;
    case RMU_SRC_ECHO:
        if (r->bh.grpc) return false;
        if (r->req_done && r->sent == 0) {
            *len = r->pipe.len;
            return true;
        }
        if (r->has_req_cl) {
            *len = r->req_cl;
            return true;
        }
        return false;
    }
    return false;
}

uint64_t rmu_req_body_avail(const struct rmu_req *r)
{
    return r->src == RMU_SRC_PATTERN ? r->pattern_left : r->pipe.len;
}

size_t rmu_req_body_take(struct rmu_req *r, uint8_t *dst, size_t max, bool *fin)
{
    size_t n;
    if (r->src == RMU_SRC_PATTERN) {
        n = (size_t)RMU_MIN((uint64_t)RMU_MIN(max, RMU_PATTERN_CHUNK), r->pattern_left);
        rmu_pattern_copy(dst, r->sent, n);
        r->pattern_left -= n;
        *fin = r->pattern_left == 0;
    } else {
        n = RMU_MIN(max, r->pipe.len);
        if (n > 0) {
            memcpy(dst, rmu_buf_head(&r->pipe), n);
            rmu_buf_consume(&r->pipe, n);
        }
        *fin = r->pipe.len == 0 && (r->src == RMU_SRC_BUF || r->req_done);
    }
    r->sent += n;
    return n;
}
