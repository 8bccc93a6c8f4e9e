/* remora-upstream: HTTP/1.x (llhttp): keep-alive, pipelining answered in order, chunked and
 * Content-Length request bodies, Expect: 100-continue, HTTP/1.0.
 *
 * Requests queue on c->reqs in arrival order; only the head of the queue writes its response.
 * Reading pauses while RMU_H1_MAX_PIPELINE requests wait or an echoed body buffers more than
 * RMU_ECHO_CAP bytes. */
#include "bench/upstream/conn.h"
#include "bench/upstream/req.h"

#include <string.h>
#include <strings.h>

static const char CONTINUE_100[] = "HTTP/1.1 100 Continue\r\n\r\n";

static struct rmu_conn *conn_of(llhttp_t *p)
{
    return p->data;
}

/* ---- parser callbacks ------------------------------------------------------------------------ */

static int on_message_begin(llhttp_t *p)
{
    struct rmu_conn *c = conn_of(p);
    struct rmu_req *r = rmu_req_new(c);
    if (!r) return -1;
    c->p.h1.cur = r;
    c->p.h1.in_value = false;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
    return rmu_req_url_append(conn_of(p)->p.h1.cur, at, n);
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    struct rmu_h1 *h = &conn_of(p)->p.h1;
    if (h->cur->hdrs_done) /* chunked trailers: ignored */
        return 0;
    bool fresh = h->in_value || h->cur->nhdrs == 0;
    h->in_value = false;
    return rmu_req_name_append(h->cur, at, n, fresh);
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    struct rmu_h1 *h = &conn_of(p)->p.h1;
    if (h->cur->hdrs_done) return 0;
    bool fresh = !h->in_value;
    h->in_value = true;
    return rmu_req_value_append(h->cur, at, n, fresh);
}

static int on_headers_complete(llhttp_t *p)
{
    struct rmu_req *r = conn_of(p)->p.h1.cur;
    const char *m = llhttp_method_name((llhttp_method_t)p->method);
    r->method = (struct rmu_str){m, strlen(m)};
    r->http_major = (uint8_t)p->http_major;
    r->http_minor = (uint8_t)p->http_minor;
    r->keep_alive = llhttp_should_keep_alive(p) != 0;
    struct rmu_str expect = rmu_req_header(r, "expect");
    r->expect_continue = expect.p && rmu_str_ieq(expect, "100-continue") && p->http_minor >= 1;
    rmu_req_headers_done(r);
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    return rmu_req_body(conn_of(p)->p.h1.cur, (const uint8_t *)at, n);
}

/* Returns HPE_PAUSED (parsing stops for good) after the last request the connection answers. */
static int on_message_complete(llhttp_t *p)
{
    struct rmu_h1 *h = &conn_of(p)->p.h1;
    struct rmu_req *r = h->cur;
    h->cur = NULL;
    rmu_req_body_done(r);
    if (!r->keep_alive || r->bh.close) { /* nothing after this request will be answered */
        h->stopped = true;
        return HPE_PAUSED;
    }
    return 0;
}

static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- input ----------------------------------------------------------------------------------- */

int rmu_h1_init(struct rmu_conn *c)
{
    c->proto = RMU_PROTO_H1;
    llhttp_init(&c->p.h1.parser, HTTP_REQUEST, &settings);
    c->p.h1.parser.data = c;
    return 0;
}

/* The bytes do not parse: answer 400 (431 for oversized headers) in turn, then close.  A body
 * that goes wrong after its headers were answered can only be cut: reset the connection. */
static int on_parse_error(struct rmu_conn *c, llhttp_errno_t e)
{
    struct rmu_h1 *h = &c->p.h1;
    struct rmu_req *r = h->cur;
    h->stopped = true;
    h->cur = NULL;
    if (r && r->hdrs_done) {
        rmu_req_free(r);
        rmu_conn_abort(c, true);
        return 0;
    }
    if (!r && !(r = rmu_req_new(c))) return -1;
    bool big = r->too_large;
    const char *why = llhttp_get_error_reason(&h->parser);
    r->hdrs_done = r->req_done = true;
    r->keep_alive = false;
    r->http_major = r->http_minor = 1;
    r->bh = (struct rmu_behaviour){.status = big ? 431 : 400,
                                   .close = true,
                                   .error = big   ? "request headers too large"
                                            : why ? why
                                                  : llhttp_errno_name(e)};
    r->src = RMU_SRC_BUF;
    rmu_conn_wake(c);
    return 0;
}

int rmu_h1_input(struct rmu_conn *c, const uint8_t *p, size_t n)
{
    struct rmu_h1 *h = &c->p.h1;
    const char *s = (const char *)p, *end = s + n;
    while (s < end && !h->stopped) {
        llhttp_errno_t e = llhttp_execute(&h->parser, s, (size_t)(end - s));
        if (e == HPE_OK || e == HPE_PAUSED) break; /* all parsed, or stopped for good */
        if (e != HPE_PAUSED_UPGRADE) return on_parse_error(c, e);
        /* Upgrade/CONNECT: we do not switch protocols; whatever follows is parsed as HTTP/1. */
        s = llhttp_get_error_pos(&h->parser);
        llhttp_resume_after_upgrade(&h->parser);
    }
    return 0;
}

bool rmu_h1_paused(const struct rmu_conn *c)
{
    const struct rmu_req *cur = c->p.h1.cur;
    return c->nreqs >= RMU_H1_MAX_PIPELINE || (cur && cur->pipe.len >= RMU_ECHO_CAP);
}

void rmu_h1_eof(struct rmu_conn *c)
{
    struct rmu_h1 *h = &c->p.h1;
    struct rmu_req *r = h->cur;
    h->stopped = true;
    h->cur = NULL;
    if (r && r->started) { /* half a request is being echoed: cannot finish it */
        rmu_conn_abort(c, true);
        return;
    }
    if (r) rmu_req_free(r);
    rmu_conn_wake(c); /* produce answers the complete requests, then closes */
}

/* ---- output ---------------------------------------------------------------------------------- */

static void put(struct rmu_buf *b, const void *p, size_t n)
{
    memcpy(rmu_buf_tail(b), p, n);
    b->len += n;
}

static void put_str(struct rmu_buf *b, const char *s)
{
    put(b, s, strlen(s));
}

static void put_u64(struct rmu_buf *b, uint64_t v)
{
    b->len += rmu_fmt_u64((char *)rmu_buf_tail(b), v);
}

static int send_continue(struct rmu_conn *c, struct rmu_req *r)
{
    if (!r->expect_continue || r->continue_sent || r->req_done) return 0;
    r->continue_sent = true;
    return rmu_buf_append(&c->out, CONTINUE_100, sizeof(CONTINUE_100) - 1);
}

static void choose_framing(struct rmu_req *r, uint64_t *len, bool *known)
{
    unsigned st = r->bh.status;
    *known = rmu_req_body_length(r, len);
    if (r->is_head || st == 204 || st == 304)
        r->framing = RMU_FRAME_NONE;
    else if (*known && !rmu_behaviour_has_trailers(r) && r->bh.reset == RMU_RESET_NONE)
        r->framing = RMU_FRAME_LENGTH; /* (a reset response is chunked: it never completes) */
    else if (r->http_major == 1 && r->http_minor >= 1)
        r->framing = RMU_FRAME_CHUNKED;
    else
        r->framing = RMU_FRAME_CLOSE, r->keep_alive = false;
}

/* Status line and headers of r's response into c->out. */
static int write_head(struct rmu_conn *c, struct rmu_req *r)
{
    struct rmu_hlist *hl = &c->loop->hl;
    uint64_t len = 0;
    bool known;
    choose_framing(r, &len, &known);
    rmu_hlist_reset(hl);
    if (rmu_behaviour_headers(r, hl) < 0) return -1;
    size_t need = 160;
    for (size_t i = 0; i < hl->n; i++)
        need += hl->v[i].name.n + hl->v[i].value.n + 4;
    if (rmu_buf_reserve(&c->out, need) < 0) return -1;
    struct rmu_buf *b = &c->out;
    put_str(b, "HTTP/1.1 ");
    put_u64(b, r->bh.status);
    put(b, " ", 1);
    put_str(b, rmu_reason(r->bh.status));
    put(b, "\r\n", 2);
    for (size_t i = 0; i < hl->n; i++) {
        put(b, hl->v[i].name.p, hl->v[i].name.n);
        put(b, ": ", 2);
        put(b, hl->v[i].value.p, hl->v[i].value.n);
        put(b, "\r\n", 2);
    }
    bool cl =
        r->framing == RMU_FRAME_LENGTH || (r->framing == RMU_FRAME_NONE && r->is_head && known);
    if (cl) {
        put_str(b, "content-length: ");
        put_u64(b, len);
        put(b, "\r\n", 2);
    } else if (r->framing == RMU_FRAME_CHUNKED) {
        put_str(b, "transfer-encoding: chunked\r\n");
    }
    if (!r->keep_alive || r->bh.close)
        put_str(b, "connection: close\r\n");
    else if (r->http_minor == 0)
        put_str(b, "connection: keep-alive\r\n");
    put(b, "\r\n", 2);
    return 0;
}

static int write_trailers(struct rmu_conn *c, struct rmu_req *r)
{
    struct rmu_hlist *hl = &c->loop->hl;
    rmu_hlist_reset(hl);
    if (rmu_behaviour_trailers(r, hl) < 0) return -1;
    size_t need = 8;
    for (size_t i = 0; i < hl->n; i++)
        need += hl->v[i].name.n + hl->v[i].value.n + 4;
    if (rmu_buf_reserve(&c->out, need) < 0) return -1;
    put(&c->out, "0\r\n", 3);
    for (size_t i = 0; i < hl->n; i++) {
        put(&c->out, hl->v[i].name.p, hl->v[i].name.n);
        put(&c->out, ": ", 2);
        put(&c->out, hl->v[i].value.p, hl->v[i].value.n);
        put(&c->out, "\r\n", 2);
    }
    put(&c->out, "\r\n", 2);
    return 0;
}

/* Response body of the head request.  1: complete; 0: waiting (echo data, buffer full, or the
 * connection is being reset); -1: out of memory. */
static int write_body(struct rmu_conn *c, struct rmu_req *r)
{
    bool reset = r->bh.reset == RMU_RESET_AFTER, chunked = r->framing == RMU_FRAME_CHUNKED;
    if (r->framing == RMU_FRAME_NONE) {
        if (reset) {
            rmu_conn_abort(c, true);
            return 0;
        }
        r->pipe.len = r->pipe.off = 0; /* echo of a HEAD/204/304: nothing to send */
        return r->req_done;
    }
    while (c->out.len < RMU_OUT_HIGH) {
        uint64_t max = RMU_PATTERN_CHUNK;
        if (reset) {
            if (r->sent >= r->bh.reset_after) {
                rmu_conn_abort(c, true);
                return 0;
            }
            max = RMU_MIN(max, r->bh.reset_after - r->sent);
        }
        size_t n = (size_t)RMU_MIN(max, rmu_req_body_avail(r));
        if (rmu_buf_reserve(&c->out, n + 32) < 0) return -1;
        if (chunked && n > 0) {
            static const char hex[] = "0123456789abcdef";
            char tmp[16];
            size_t k = 0;
            for (size_t v = n; v; v >>= 4)
                tmp[k++] = hex[v & 15];
            while (k)
                put(&c->out, &tmp[--k], 1);
            put(&c->out, "\r\n", 2);
        }
        bool fin = false;
        size_t got = rmu_req_body_take(r, rmu_buf_tail(&c->out), n, &fin);
        c->out.len += got;
        if (chunked && got > 0) put(&c->out, "\r\n", 2);
        if (!fin) {
            if (got == 0) return 0; /* echo: wait for more request body */
            continue;
        }
        if (reset) { /* the body ended before the reset point: reset now */
            rmu_conn_abort(c, true);
            return 0;
        }
        if (chunked && write_trailers(c, r) < 0) return -1;
        return 1;
    }
    return 0;
}

static int start(struct rmu_conn *c, struct rmu_req *r)
{
    if (r->bh.reset == RMU_RESET_BEFORE_HEADERS) {
        r->started = true;
        rmu_conn_abort(c, true);
        return 0;
    }
    if (send_continue(c, r) < 0 || rmu_req_start(r) < 0) return -1;
    return write_head(c, r);
}

int rmu_h1_produce(struct rmu_conn *c)
{
    while (c->out.len < RMU_OUT_HIGH && c->state == RMU_CONN_OPEN) {
        struct rmu_req *r = c->reqs_head;
        if (!r) {
            if (c->peer_eof) rmu_conn_close(c);
            break;
        }
        if (!r->started) {
            if (!rmu_req_ready(r)) return send_continue(c, r);
            if (start(c, r) < 0) return -1;
            if (c->state != RMU_CONN_OPEN) break;
        }
        int rc = write_body(c, r);
        if (rc <= 0) return rc;
        bool close = !r->keep_alive || r->bh.close;
        if (c->p.h1.cur == r) c->p.h1.cur = NULL;
        rmu_req_free(r);
        if (close) {
            c->p.h1.stopped = true;
            c->p.h1.cur = NULL;
            rmu_conn_close(c);
        }
    }
    return 0;
}
