/* remora-upstream: HTTP/2 (nghttp2, memory I/O): prior knowledge (cleartext) or ALPN h2 (TLS).
 *
 * Flow control is manual: connection-level credit is returned as soon as DATA arrives; stream
 * credit of an echoed stream only when its bytes have been sent back, so a slow reader stalls
 * its own stream (at most RMU_H2_STREAM_WINDOW buffered) and nothing else. */
#include "bench/upstream/conn.h"
#include "bench/upstream/req.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static nghttp2_session_callbacks *callbacks;
static nghttp2_option *options;

static struct rmu_req *stream_req(nghttp2_session *s, int32_t id)
{
    return id > 0 ? nghttp2_session_get_stream_user_data(s, id) : NULL;
}

static bool no_body(const struct rmu_req *r)
{
    return r->is_head || r->bh.status == 204 || r->bh.status == 304;
}

/* ---- session callbacks ----------------------------------------------------------------------- */

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    struct rmu_req *r = rmu_req_new(ud);
    if (!r) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    r->h2 = true;
    r->http_major = 2;
    r->stream_id = f->hd.stream_id;
    nghttp2_session_set_stream_user_data(s, f->hd.stream_id, r);
    return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nn,
                     const uint8_t *value, size_t vn, uint8_t flags, void *ud)
{
    struct rmu_req *r = stream_req(s, f->hd.stream_id);
    if (!r || r->hdrs_done || r->too_large) return 0;
    if (rmu_req_name_append(r, (const char *)name, nn, true) < 0 ||
        rmu_req_value_append(r, (const char *)value, vn, true) < 0)
        return r->too_large ? 0 : NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) return 0;
    struct rmu_req *r = stream_req(s, f->hd.stream_id);
    if (!r) return 0;
    if (f->hd.type == NGHTTP2_HEADERS && !r->hdrs_done) rmu_req_headers_done(r);
    if (f->hd.flags & NGHTTP2_FLAG_END_STREAM) rmu_req_body_done(r);
    return 0;
}

static int on_data_chunk_recv(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
                              size_t len, void *ud)
{
    nghttp2_session_consume_connection(s, len);
    struct rmu_req *r = stream_req(s, id);
    if (r && rmu_req_body(r, data, len) < 0) return NGHTTP2_ERR_CALLBACK_FAILURE;
    if (!r || !r->keeps_body) nghttp2_session_consume_stream(s, id, len);
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t id, uint32_t error_code, void *ud)
{
    struct rmu_req *r = stream_req(s, id);
    if (r) {
        nghttp2_session_set_stream_user_data(s, id, NULL);
        rmu_req_free(r);
    }
    return 0;
}

static int on_frame_send(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    struct rmu_conn *c = ud;
    if (f->hd.type == NGHTTP2_GOAWAY) {
        c->p.h2.goaway_sent = true;
        return 0;
    }
    struct rmu_req *r = stream_req(s, f->hd.stream_id);
    if (!r) return 0;
    if (f->hd.type == NGHTTP2_DATA && r->to_consume > 0) {
        nghttp2_session_consume_stream(s, r->stream_id, (size_t)r->to_consume);
        r->to_consume = 0;
    }
    if ((f->hd.flags & NGHTTP2_FLAG_END_STREAM) && r->bh.close && !c->p.h2.goaway_submitted) {
        c->p.h2.goaway_submitted = true;
        nghttp2_submit_goaway(s, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(s),
                              NGHTTP2_NO_ERROR, NULL, 0);
    }
    return 0;
}

/* ---- response -------------------------------------------------------------------------------- */

/* hl as nghttp2_nv in the loop's scratch array; NULL when out of memory. */
static nghttp2_nv *to_nva(struct rmu_loop *l, const struct rmu_hlist *hl)
{
    if (l->h2_nva_cap < hl->n) {
        size_t cap = hl->n < 32 ? 32 : hl->n * 2;
        nghttp2_nv *v = realloc(l->h2_nva, cap * sizeof(*v));
        if (!v) return NULL;
        l->h2_nva = v;
        l->h2_nva_cap = cap;
    }
    nghttp2_nv *nva = l->h2_nva;
    for (size_t i = 0; i < hl->n; i++)
        nva[i] = (nghttp2_nv){(uint8_t *)(uintptr_t)hl->v[i].name.p,
                              (uint8_t *)(uintptr_t)hl->v[i].value.p, hl->v[i].name.n,
                              hl->v[i].value.n, NGHTTP2_NV_FLAG_NONE};
    return nva;
}

static int submit_trailers(nghttp2_session *s, struct rmu_req *r)
{
    struct rmu_loop *l = r->conn->loop;
    rmu_hlist_reset(&l->hl);
    if (rmu_behaviour_trailers(r, &l->hl) < 0) return -1;
    nghttp2_nv *nva = to_nva(l, &l->hl);
    return nva && nghttp2_submit_trailer(s, r->stream_id, nva, l->hl.n) == 0 ? 0 : -1;
}

/* The data provider: pattern, buffered or echoed bytes; resets the stream at the chosen byte. */
static ssize_t read_body(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    struct rmu_req *r = src->ptr;
    bool reset = r->bh.reset == RMU_RESET_AFTER;
    if (reset) {
        if (r->sent >= r->bh.reset_after || no_body(r))
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* RST_STREAM INTERNAL_ERROR */
        length = (size_t)RMU_MIN((uint64_t)length, r->bh.reset_after - r->sent);
    }
    bool fin = false;
    size_t n = 0;
    if (no_body(r)) { /* echo under HEAD/204/304: drop the request body as it comes */
        if (r->pipe.len > 0) nghttp2_session_consume_stream(s, id, r->pipe.len);
        r->pipe.len = r->pipe.off = 0;
        fin = r->req_done || !r->keeps_body;
    } else {
        n = rmu_req_body_take(r, buf, length, &fin);
        if (r->keeps_body)
            r->to_consume += n; /* credit returned once the frame is out: on_frame_send */
    }
    if (!fin) {
        if (n > 0) return (ssize_t)n;
        r->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    if (reset) return n > 0 ? (ssize_t)n : NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (!no_body(r) && rmu_behaviour_has_trailers(r)) {
        if (submit_trailers(s, r) < 0) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
    }
    return (ssize_t)n;
}

int rmu_h2_start(struct rmu_req *r)
{
    struct rmu_conn *c = r->conn;
    struct rmu_loop *l = c->loop;
    nghttp2_session *s = c->p.h2.s;
    if (r->bh.reset == RMU_RESET_BEFORE_HEADERS) {
        r->started = true;
        nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, r->stream_id, NGHTTP2_INTERNAL_ERROR);
        return 0;
    }
    if (rmu_req_start(r) < 0) return -1;
    char status[8], clen[24];
    size_t sn = rmu_fmt_u64(status, r->bh.status), cn = 0;
    uint64_t len = 0;
    bool known = rmu_req_body_length(r, &len);
    rmu_hlist_reset(&l->hl);
    if (rmu_hlist_add(&l->hl, ":status", 7, status, sn) < 0) return -1;
    if (known && r->bh.reset == RMU_RESET_NONE && r->bh.status != 204 && r->bh.status != 304) {
        cn = rmu_fmt_u64(clen, len);
        if (rmu_hlist_add(&l->hl, "content-length", 14, clen, cn) < 0) return -1;
    }
    if (rmu_behaviour_headers(r, &l->hl) < 0) return -1;
    nghttp2_nv *nva = to_nva(l, &l->hl);
    if (!nva) return -1;
    bool has_body = r->bh.reset == RMU_RESET_AFTER ||
                    (!no_body(r) && (!known || len > 0 || rmu_behaviour_has_trailers(r))) ||
                    (r->keeps_body && !r->req_done);
    nghttp2_data_provider prd = {.source.ptr = r, .read_callback = read_body};
    int rv = nghttp2_submit_response(s, r->stream_id, nva, l->hl.n, has_body ? &prd : NULL);
    if (rv != 0) {
        fprintf(stderr, "remora-upstream: nghttp2_submit_response: %s\n", nghttp2_strerror(rv));
        return -1;
    }
    return 0;
}

void rmu_h2_resume(struct rmu_req *r)
{
    r->deferred = false;
    nghttp2_session_resume_data(r->conn->p.h2.s, r->stream_id);
}

/* ---- connection ------------------------------------------------------------------------------ */

int rmu_h2_global_init(void)
{
    if (nghttp2_session_callbacks_new(&callbacks) != 0 || nghttp2_option_new(&options) != 0) {
        fprintf(stderr, "remora-upstream: out of memory\n");
        return -1;
    }
    nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(callbacks, on_frame_send);
    nghttp2_option_set_no_auto_window_update(options, 1);
    return 0;
}

void rmu_h2_global_cleanup(void)
{
    nghttp2_session_callbacks_del(callbacks);
    nghttp2_option_del(options);
    callbacks = NULL;
    options = NULL;
}

int rmu_h2_init(struct rmu_conn *c)
{
    struct rmu_h2 *h = &c->p.h2;
    *h = (struct rmu_h2){0};
    if (nghttp2_session_server_new2(&h->s, callbacks, c, options) != 0) return -1;
    c->proto = RMU_PROTO_H2;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, rmu_cfg.h2_max_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, RMU_H2_STREAM_WINDOW},
    };
    if (nghttp2_submit_settings(h->s, NGHTTP2_FLAG_NONE, iv, 2) != 0 ||
        nghttp2_session_set_local_window_size(h->s, NGHTTP2_FLAG_NONE, 0, RMU_H2_CONN_WINDOW) != 0)
        return -1;
    return 0;
}

void rmu_h2_dispose(struct rmu_conn *c)
{
    nghttp2_session_del(c->p.h2.s);
    c->p.h2.s = NULL;
}

int rmu_h2_input(struct rmu_conn *c, const uint8_t *p, size_t n)
{
    ssize_t rv = nghttp2_session_mem_recv(c->p.h2.s, p, n);
    return rv < 0 ? -1 : 0;
}

int rmu_h2_produce(struct rmu_conn *c)
{
    nghttp2_session *s = c->p.h2.s;
    while (c->out.len < RMU_OUT_HIGH) {
        const uint8_t *d;
        ssize_t n = nghttp2_session_mem_send(s, &d);
        if (n < 0) return -1;
        if (n == 0) break;
        if (rmu_buf_append(&c->out, d, (size_t)n) < 0) return -1;
    }
    if ((c->p.h2.goaway_sent && c->nreqs == 0) ||
        (!nghttp2_session_want_read(s) && !nghttp2_session_want_write(s)))
        rmu_conn_close(c);
    return 0;
}
