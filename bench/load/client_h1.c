/* remora-load: HTTP/1.1 client (struct rml_proto).  Requests are the precomputed template
 * bytes appended to the output buffer; responses are parsed with llhttp and matched to
 * requests in order (pipelining when -m > 1).  A response that says the connection will close
 * stops new requests on it; the connection is closed once it is idle and reopened. */
#include <string.h>

#include "bench/load/conn.h"
#include "bench/load/worker.h"

static int is_head(const struct rml_conn *c)
{
    const char *m = c->w->cfg->method;
    return m[0] == 'H' && strcmp(m, "HEAD") == 0;
}

static int on_headers_complete(llhttp_t *p)
{
    struct rml_conn *c = p->data;
    struct rml_req *r = c->h1_head;
    if (!r) return -1; /* a response nobody asked for */
    r->status = (int)p->status_code;
    return is_head(c) ? 1 : 0; /* 1: no body follows */
}

static int on_message_complete(llhttp_t *p)
{
    struct rml_conn *c = p->data;
    struct rml_req *r = c->h1_head;
    if (!r) return -1;
    if (p->status_code >= 100 && p->status_code < 200) {
        r->status = 0; /* interim response: the real one follows */
        return 0;
    }
    c->h1_head = r->next;
    if (!c->h1_head) c->h1_tail = NULL;
    r->next = NULL;
    int closing = !llhttp_should_keep_alive(p);
    if (closing) c->no_more = 1;
    rml_conn_req_done(c, r);
    if (closing) { /* pipelined requests behind a "close" were not processed: send again */
        while ((r = c->h1_head) != NULL) {
            c->h1_head = r->next;
            r->next = NULL;
            rml_conn_req_retry(c, r);
        }
        c->h1_tail = NULL;
    }
    return 0;
}

static const llhttp_settings_t parser_settings = {
    .on_headers_complete = on_headers_complete,
    .on_message_complete = on_message_complete,
};

static int h1_init(struct rml_conn *c)
{
    llhttp_init(&c->hp, HTTP_RESPONSE, &parser_settings);
    c->hp.data = c;
    c->h1_head = c->h1_tail = NULL;
    return 0;
}

static void h1_dispose(struct rml_conn *c)
{
    c->h1_head = c->h1_tail = NULL;
}

static int h1_submit(struct rml_conn *c, struct rml_req *r)
{
    const struct rml_reqtmpl *t = &c->w->cfg->reqs[r->tmpl];
    if (rml_conn_out_append(c, t->h1, t->h1_len) < 0) return -1;
    if (c->h1_tail)
        c->h1_tail->next = r;
    else
        c->h1_head = r;
    c->h1_tail = r;
    return 0;
}

static int h1_on_read(struct rml_conn *c, const uint8_t *data, size_t len)
{
    llhttp_errno_t e =
        len ? llhttp_execute(&c->hp, (const char *)data, len) : llhttp_finish(&c->hp);
    return e == HPE_OK ? 0 : -1;
}

static int h1_fill(struct rml_conn *c)
{
    (void)c;
    return 0;
}

static int h1_cancel(struct rml_conn *c, struct rml_req *r)
{
    (void)c;
    (void)r;
    return 1; /* HTTP/1.1 cannot abandon one request: close the connection */
}

const struct rml_proto rml_proto_h1 = {
    .init = h1_init,
    .dispose = h1_dispose,
    .submit = h1_submit,
    .on_read = h1_on_read,
    .fill = h1_fill,
    .cancel = h1_cancel,
};
