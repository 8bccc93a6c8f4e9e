/* remora-load: HTTP/2 client (struct rml_proto) on nghttp2.  Bytes in go through
 * nghttp2_session_mem_recv as they are read; bytes out are drained with
 * nghttp2_session_mem_send once per loop iteration (fill), so one write carries every frame
 * queued in that iteration.  Requests use the template's precomputed no-copy header block;
 * each stream's user data is its request slot. */
#include <string.h>

#include "bench/load/conn.h"
#include "bench/load/worker.h"

#define WINDOW ((1u << 30) - 1) /* as h2load's default -w 30 -W 30 */
#define FILL_LIMIT 65536

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    (void)flags;
    (void)ud;
    if (f->hd.type != NGHTTP2_HEADERS) return 0;
    struct rml_req *r = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (!r) return 0;
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        int v = 0;
        for (size_t i = 0; i < valuelen && i < 4; i++)
            v = v * 10 + (value[i] - '0');
        if (valuelen != 3 || v < 100) return 0; /* leave status 0: counted as invalid */
        if (v >= 200) r->status = v;
    } else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
        int v = 0;
        for (size_t i = 0; i < valuelen && i < 9; i++) {
            if (value[i] < '0' || value[i] > '9') return 0;
            v = v * 10 + (value[i] - '0');
        }
        r->grpc_status = v;
    }
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t id, uint32_t error_code, void *ud)
{
    struct rml_conn *c = ud;
    if (c->state != RML_CS_READY) return 0;
    struct rml_req *r = nghttp2_session_get_stream_user_data(s, id);
    if (!r || !r->active || r->stream_id != id) return 0;
    if (error_code == NGHTTP2_NO_ERROR && r->status != 0)
        rml_conn_req_done(c, r);
    else if (error_code == NGHTTP2_REFUSED_STREAM && r->status == 0)
        rml_conn_req_retry(c, r); /* not processed (e.g. above a GOAWAY's last stream) */
    else
        rml_conn_req_fail(c, r,
                          error_code == NGHTTP2_PROTOCOL_ERROR ? RML_E_PROTOCOL : RML_E_RESET);
    return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    (void)s;
    struct rml_conn *c = ud;
    if (f->hd.type == NGHTTP2_GOAWAY && c->state == RML_CS_READY) {
        c->no_more = 1; /* finish what the server accepted, then reconnect */
        rml_worker_ready_update(c->w, c);
    }
    return 0;
}

/* A request that could not even be sent (GOAWAY came first): its stream never opened, so no
 * stream-close callback will come; send it again elsewhere. */
static int on_frame_not_send(nghttp2_session *s, const nghttp2_frame *f, int lib_error, void *ud)
{
    (void)s;
    (void)lib_error;
    struct rml_conn *c = ud;
    if (f->hd.type != NGHTTP2_HEADERS || c->state != RML_CS_READY) return 0;
    for (unsigned i = 0; i < c->capacity; i++) {
        struct rml_req *r = &c->slots[i];
        if (r->active && r->stream_id == f->hd.stream_id) {
            rml_conn_req_retry(c, r);
            break;
        }
    }
    return 0;
}

static ssize_t read_body(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *ud)
{
    (void)s;
    struct rml_conn *c = ud;
    struct rml_req *r = src->ptr;
    if (!r->active || r->stream_id != id)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* slot reused: reset that stream */
    const struct rml_config *cfg = c->w->cfg;
    size_t n = cfg->body_len - r->body_off;
    if (n > len) n = len;
    memcpy(buf, cfg->body + r->body_off, n);
    r->body_off += n;
    if (r->body_off == cfg->body_len) *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static int h2_init(struct rml_conn *c)
{
    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs)) return -1;
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(cbs, on_frame_not_send);
    int rv = nghttp2_session_client_new3(&c->ng, cbs, c, NULL, &c->w->pool.mem);
    nghttp2_session_callbacks_del(cbs);
    if (rv) return -1;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, WINDOW},
    };
    if (nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, 2) ||
        nghttp2_session_set_local_window_size(c->ng, NGHTTP2_FLAG_NONE, 0, WINDOW))
        return -1;
    return 0;
}

static void h2_dispose(struct rml_conn *c)
{
    nghttp2_session_del(c->ng); /* fires no stream-close callback */
    c->ng = NULL;
}

static int h2_submit(struct rml_conn *c, struct rml_req *r)
{
    const struct rml_config *cfg = c->w->cfg;
    const struct rml_reqtmpl *t = &cfg->reqs[r->tmpl];
    nghttp2_data_provider dp = {.source.ptr = r, .read_callback = read_body};
    int32_t id =
        nghttp2_submit_request(c->ng, NULL, t->nv, t->nvlen, cfg->body_len ? &dp : NULL, r);
    if (id < 0) {
        c->no_more = 1; /* stream ids exhausted or session broken: reconnect */
        return -1;
    }
    r->stream_id = id;
    return 0;
}

static int h2_on_read(struct rml_conn *c, const uint8_t *data, size_t len)
{
    if (len == 0) return 0;
    ssize_t rv = nghttp2_session_mem_recv(c->ng, data, len);
    return rv < 0 ? -1 : 0;
}

static int h2_fill(struct rml_conn *c)
{
    while (c->out.len - c->out.off < FILL_LIMIT) {
        const uint8_t *p;
        ssize_t n = nghttp2_session_mem_send(c->ng, &p);
        if (n < 0) return -1;
        if (n == 0) break;
        if (rml_conn_out_append(c, p, (size_t)n) < 0) return -1;
    }
    if (!nghttp2_session_want_read(c->ng) && !nghttp2_session_want_write(c->ng) && !c->no_more) {
        c->no_more = 1;
        rml_worker_ready_update(c->w, c);
    }
    return 0;
}

static int h2_cancel(struct rml_conn *c, struct rml_req *r)
{
    if (nghttp2_session_set_stream_user_data(c->ng, r->stream_id, NULL) != 0) return 1;
    nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, r->stream_id, NGHTTP2_CANCEL);
    return 0;
}

const struct rml_proto rml_proto_h2 = {
    .init = h2_init,
    .dispose = h2_dispose,
    .submit = h2_submit,
    .on_read = h2_on_read,
    .fill = h2_fill,
    .cancel = h2_cancel,
};
