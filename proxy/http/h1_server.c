/* HTTP/1.1 codec, server side (downstream): parses requests one at a time into codec-neutral
 * streams and serialises their responses.  Pipelined requests are answered in order: once a
 * request is parsed, no more input is consumed (the conn stops reading) until its response is
 * complete.  See codec.h for the contract and h1_codec_internal.h for the model.
 *
 * Choices worth knowing:
 *  - HTTP/1.0 requests get 426 unless settings->accept_http_10 (Envoy's
 *    http_protocol_options.accept_http_10, default false); HTTP/0.9 and versions above 1.1: 400.
 *  - llhttp parses strictly (no lenient flags): a repeated Content-Length (identical values
 *    included), Content-Length with Transfer-Encoding, bare LF line ends, spaces before the
 *    colon are rejected with 400.
 *  - Expect: 100-continue is answered at once and removed (Envoy's default); a 100 the user
 *    submits afterwards for the same request is dropped.
 *  - A response whose head goes out while its request is still arriving says connection:
 *    close, and the connection ends after it (the rest of the request is not read).
 *  - CONNECT gets :method/:authority only (HTTP/2 style) and the connection closes after its
 *    response: tunnels are not supported.  Upgrade is stripped as hop-by-hop. */
#include <assert.h>
#include <string.h>

#include "proxy/core/log.h"
#include "proxy/http/h1_codec_internal.h"

static const struct rm_str methods[] = {
#define XX(num, name, string) [num] = {#string, sizeof(#string) - 1},
    HTTP_METHOD_MAP(XX)
#undef XX
};
#define NMETHODS (sizeof(methods) / sizeof(methods[0]))

/* ---- request parsing ----------------------------------------------------------------------- */

/* request_headers_timeout: the client took too long to send a request's headers (slowloris). */
static void on_headers_timeout(struct rm_timer *t)
{
    struct rm_h1_codec *c = rm_container_of(t, struct rm_h1_codec, headers_timer);
    static const char r408[] = "HTTP/1.1 408 Request Timeout\r\n"
                               "content-length: 0\r\nconnection: close\r\n\r\n";
    rm_log_debug("h1: request headers not complete within %u ms", c->st.request_headers_timeout_ms);
    rm_h1_write(c, r408, sizeof(r408) - 1);
    rm_h1_close(c, RM_H1_CLOSE_FLUSH, true, 0, RM_RESET_TIMEOUT);
}

static int on_message_begin(llhttp_t *p)
{
    struct rm_h1_codec *c = p->data;
    if (c->st.request_headers_timeout_ms)
        rm_timer_start(c->loop, &c->headers_timer, c->st.request_headers_timeout_ms,
                       on_headers_timeout);
    assert(!c->cur && "h1: a request began before the previous exchange ended");
    if (c->state == RM_H1_IDLE) rm_h1_set_state(c, RM_H1_ACTIVE);
    struct rm_h1_stream *hs = rm_h1_stream_new(c);
    c->cur = hs;
    rm_headers_init(&hs->head, hs->s.arena);
    rm_headers_grow(&hs->head); /* room for the pseudo-headers and the usual few more */
    /* slots for the pseudo-headers, filled or dropped by request_pseudo() before the block is
     * looked at (no key bits: they are not headers yet) */
    memset(hs->head.v, 0, RM_H1_REQ_PSEUDO * sizeof(*hs->head.v));
    hs->head.n = RM_H1_REQ_PSEUDO;
    rm_h1_acc_begin(c, &hs->head, true);
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
    struct rm_h1_codec *c = p->data;
    struct rm_h1_acc *a = &c->acc;
    a->bytes += n;
    if (a->bytes > c->max_bytes) return rm_h1_acc_fail(c, 431);
    char *url = rm_arena_alloc(c->cur->s.arena, a->url_len + n + 1);
    if (a->url_len) memcpy(url, a->url, a->url_len);
    memcpy(url + a->url_len, at, n);
    a->url_len += n;
    url[a->url_len] = 0;
    a->url = url;
    return 0;
}

/* RFC 3986 authority characters (userinfo, host incl. IP literals, port). */
static bool authority_char(unsigned char ch)
{
    if ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z') return true;
    if (ch >= '0' && ch <= '9') return true;
    return ch && strchr("-._~%!$&'()*+,;=:@[]", ch) != NULL;
}

/* Split an absolute-form target (http://user@host:port/path?q) into authority and path.  The
 * scheme must be http or https and the host non-empty; userinfo is not forwarded. */
static int absolute_form(struct rm_arena *arena, const char *url, size_t len, struct rm_str *auth,
                         struct rm_str *path)
{
    const char *end = url + len, *s;
    if (len > 7 && strncasecmp(url, "http://", 7) == 0)
        s = url + 7;
    else if (len > 8 && strncasecmp(url, "https://", 8) == 0)
        s = url + 8;
    else
        return -1;
    const char *e = s;
    while (e < end && *e != '/' && *e != '?' && *e != '#') {
        if (!authority_char((unsigned char)*e)) return -1;
        e++;
    }
    const char *at = memrchr(s, '@', (size_t)(e - s));
    if (at) s = at + 1;
    if (s == e || *s == ':') return -1; /* no host */
    *auth = (struct rm_str){s, (size_t)(e - s)};
    const char *frag = memchr(e, '#', (size_t)(end - e));
    size_t plen = (size_t)((frag ? frag : end) - e);
    if (plen && *e == '/') {
        *path = (struct rm_str){e, plen};
    } else { /* "" or "?q": the path is "/" */
        char *p = rm_arena_alloc(arena, plen + 2);
        p[0] = '/';
        memcpy(p + 1, e, plen);
        p[plen + 1] = 0;
        *path = (struct rm_str){p, plen + 1};
    }
    return 0;
}

/* Fill the reserved slots with :method :scheme :authority :path; drop the unused ones. */
static int request_pseudo(struct rm_h1_codec *c, struct rm_h1_stream *hs,
                          const struct rm_h1_clean *cl)
{
    const llhttp_t *p = &c->parser;
    struct rm_str url = {c->acc.url ? c->acc.url : "", c->acc.url_len};
    struct rm_str auth = cl->host, path = url;
    bool have_auth = cl->nhost == 1, have_path = true, have_scheme = true;
    if (cl->nhost > 1) return -1; /* RFC 9112 3.2: more than one Host */
    if (p->method == HTTP_CONNECT) {
        auth = url;
        have_auth = true;
        have_path = have_scheme = false;
    } else if (url.len && url.p[0] == '/') {
        /* origin-form */
    } else if (rm_str_eq(url, "*", 1) && p->method == HTTP_OPTIONS) {
        /* asterisk-form */
    } else if (absolute_form(hs->s.arena, url.p, url.len, &auth, &path) == 0) {
        have_auth = true; /* RFC 9112 3.2.2: the target's authority wins over Host */
    } else {
        return -1;
    }
    if (!have_auth && p->http_minor == 1) return -1; /* HTTP/1.1 requires Host */
    struct rm_headers *h = &hs->head;
    struct rm_header *v = h->v;
    uint32_t k = 0;
    struct rm_str m = methods[p->method];
    rm_headers_put_known(h, k++, RM_HK_METHOD, m.p, m.len);
    if (have_scheme) {
        bool tls = c->base.conn->tp != &rm_transport_plain;
        rm_headers_put_known(h, k++, RM_HK_SCHEME, tls ? "https" : "http", tls ? 5 : 4);
    }
    if (have_auth) rm_headers_put_known(h, k++, RM_HK_AUTHORITY, auth.p, auth.len);
    if (have_path) rm_headers_put_known(h, k++, RM_HK_PATH, path.p, path.len);
    if (k < RM_H1_REQ_PSEUDO) {
        memmove(&v[k], &v[RM_H1_REQ_PSEUDO], (hs->head.n - RM_H1_REQ_PSEUDO) * sizeof(*v));
        hs->head.n -= RM_H1_REQ_PSEUDO - k;
    }
    return 0;
}

/* on_headers_complete's error: -1 makes llhttp fail the message (HPE_CB_HEADERS_COMPLETE). */
static int reject_in_parser(struct rm_h1_codec *c, uint16_t status)
{
    rm_h1_acc_fail(c, status);
    return -1;
}

static int on_headers_complete(llhttp_t *p)
{
    struct rm_h1_codec *c = p->data;
    struct rm_h1_stream *hs = c->cur;
    rm_timer_stop(c->loop, &c->headers_timer);
    rm_h1_acc_end(c);
    if (p->http_major != 1 || p->http_minor > 1) return reject_in_parser(c, 400);
    if (p->method >= NMETHODS || !methods[p->method].len) return reject_in_parser(c, 400);
    if (p->http_minor == 0 && !c->st.accept_http_10) return reject_in_parser(c, 426);
    if ((p->flags & F_TRANSFER_ENCODING) && !(p->flags & F_CHUNKED))
        return reject_in_parser(c, 400); /* RFC 9112 6.3: chunked must be the final coding */
    struct rm_h1_clean cl = {0};
    rm_h1_clean_block(c, &hs->head, RM_H1_REQ_PSEUDO, 0, &cl);
    if (request_pseudo(c, hs, &cl) < 0) return reject_in_parser(c, 400);
    hs->s.proto = p->http_minor == 0 ? RM_HTTP10 : RM_HTTP11;
    hs->head_method = p->method == HTTP_HEAD;
    if ((!llhttp_should_keep_alive(p) || p->method == HTTP_CONNECT) && c->state == RM_H1_ACTIVE)
        rm_h1_set_state(c, RM_H1_DRAINING);
    if (cl.expect_continue && p->http_minor == 1) {
        rm_h1_write(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
        hs->sent_100 = true;
    }
    bool body = (p->flags & F_CHUNKED) || ((p->flags & F_CONTENT_LENGTH) && p->content_length);
    rm_h1_set_half(&hs->rx, body ? RM_H1_HALF_BODY : RM_H1_HALF_END);
    hs->announced = true;
    c->base.cb->on_stream(c->base.user, &hs->s);
    if (rm_h1_stream_live(hs)) hs->s.ev->on_headers(&hs->s, &hs->head, !body);
    /* Without a body the request ends right here: on_message_complete, next in this same
     * execute, pauses the parser (one request at a time).  Pausing now would leave the head's
     * last byte unparsed, for another on_data round once the response is out. */
    return body || c->state == RM_H1_CLOSED ? rm_h1_check_parse(c) : 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    struct rm_h1_codec *c = p->data;
    struct rm_h1_stream *hs = c->cur;
    if (!hs) return 0;
    /* llhttp has already counted these bytes off content_length */
    bool end = !(p->flags & F_CHUNKED) && p->content_length == 0;
    if (end) rm_h1_set_half(&hs->rx, RM_H1_HALF_END);
    if (rm_h1_stream_live(hs)) hs->s.ev->on_data(&hs->s, (const uint8_t *)at, n, end);
    if (end && c->cur == hs) rm_h1_maybe_exchange_done(c);
    /* at the end, on_message_complete follows in this same execute and pauses (pausing here
     * would leave it for the next one, with c->cur already gone) */
    return end ? 0 : rm_h1_check_parse(c);
}

static int on_chunk_header(llhttp_t *p)
{
    struct rm_h1_codec *c = p->data;
    struct rm_h1_stream *hs = c->cur;
    if (hs && p->content_length == 0) { /* last chunk: trailers may follow */
        rm_headers_init(&hs->trailers, hs->s.arena);
        rm_h1_acc_begin(c, &hs->trailers, false);
    }
    return 0;
}

/* Returns HPE_PAUSED: one request at a time, the read loop decides what's next. */
static int on_message_complete(llhttp_t *p)
{
    struct rm_h1_codec *c = p->data;
    struct rm_h1_stream *hs = c->cur;
    if (!hs) return HPE_PAUSED; /* already answered and finished */
    if (hs->rx != RM_H1_HALF_END) {
        rm_h1_acc_end(c);
        rm_h1_deliver_end(c, hs);
    }
    if (c->cur == hs) rm_h1_maybe_exchange_done(c);
    return HPE_PAUSED;
}

static const llhttp_settings_t parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = rm_h1_on_header_field,
    .on_header_field_complete = rm_h1_on_header_field_complete,
    .on_header_value = rm_h1_on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
    .on_chunk_header = on_chunk_header,
};

/* A request we can't parse or won't serve: answer <status> if the response of this exchange
 * has not started, reset the announced stream, close after the flush. */
static void reject(struct rm_h1_codec *c, llhttp_errno_t e)
{
    struct rm_h1_stream *hs = c->cur;
    uint16_t status = c->acc.err_status ? c->acc.err_status : 400;
    const char *why = llhttp_get_error_reason(&c->parser);
    rm_log_debug("h1: bad request (%s: %s): %u", llhttp_errno_name(e), why ? why : "", status);
    if (hs && hs->tx != RM_H1_HALF_HEADERS) {
        rm_h1_close(c, RM_H1_CLOSE_NOW, true, 0, RM_RESET_PROTOCOL);
        return;
    }
    static const char r400[] = "HTTP/1.1 400 Bad Request\r\n"
                               "content-length: 0\r\nconnection: close\r\n\r\n";
    static const char r426[] = "HTTP/1.1 426 Upgrade Required\r\n"
                               "content-length: 0\r\nconnection: close\r\n\r\n";
    static const char r431[] = "HTTP/1.1 431 Request Header Fields Too Large\r\n"
                               "content-length: 0\r\nconnection: close\r\n\r\n";
    if (status == 431)
        rm_h1_write(c, r431, sizeof(r431) - 1);
    else if (status == 426)
        rm_h1_write(c, r426, sizeof(r426) - 1);
    else
        rm_h1_write(c, r400, sizeof(r400) - 1);
    rm_h1_close(c, RM_H1_CLOSE_FLUSH, true, 0, RM_RESET_PROTOCOL);
}

static size_t conn_on_data(struct rm_conn *conn, const uint8_t *data, size_t n)
{
    struct rm_h1_codec *c = conn->owner;
    size_t off = 0;
    unsigned stalls = 0;
    c->in_parse = true;
    while (off < n && rm_h1_can_parse(c)) {
        llhttp_errno_t e;
        size_t k = rm_h1_execute(c, data + off, n - off, &e);
        off += k;
        if (c->state == RM_H1_CLOSED) break;
        if (e != HPE_OK) {
            reject(c, e);
            break;
        }
        if (k == 0 && ++stalls > 1) break; /* defensive: no progress twice: wait for input */
    }
    c->in_parse = false;
    rm_h1_update_reading(c);
    return off;
}

static void conn_on_close(struct rm_conn *conn, int err)
{
    struct rm_h1_codec *c = conn->owner;
    c->base.conn = NULL; /* the conn frees itself */
    rm_h1_close(c, RM_H1_CLOSE_NOW, true, err, RM_RESET_CONNECTION_TERMINATION);
}

static const struct rm_conn_handler conn_handler = {
    .on_connected = rm_h1_conn_on_connected,
    .on_data = conn_on_data,
    .on_drained = rm_h1_conn_on_drained,
    .on_close = conn_on_close,
};

/* ---- responses ----------------------------------------------------------------------------- */

static int status_of(const struct rm_headers *h)
{
    struct rm_str v = h->n && rm_header_key(&h->v[0]) == RM_HK_STATUS
                          ? (struct rm_str){(const char *)h->v[0].value, h->v[0].value_len}
                          : rm_headers_get_key(h, RM_HK_STATUS);
    if (v.len != 3) return -1;
    int64_t s = rm_parse_u63(v.p, v.len);
    return s >= 100 ? (int)s : -1;
}

/* Reason phrases of status lines by [class - 1][code % 100] (RFC 9110 §15, RFC 8297). */
static const struct rm_str reasons[5][64] = {
    [0][0] = RM_STR("Continue"),
    [0][1] = RM_STR("Switching Protocols"),
    [0][2] = RM_STR("Processing"),
    [0][3] = RM_STR("Early Hints"),
    [1][0] = RM_STR("OK"),
    [1][1] = RM_STR("Created"),
    [1][2] = RM_STR("Accepted"),
    [1][3] = RM_STR("Non-Authoritative Information"),
    [1][4] = RM_STR("No Content"),
    [1][5] = RM_STR("Reset Content"),
    [1][6] = RM_STR("Partial Content"),
    [1][7] = RM_STR("Multi-Status"),
    [1][8] = RM_STR("Already Reported"),
    [1][26] = RM_STR("IM Used"),
    [2][0] = RM_STR("Multiple Choices"),
    [2][1] = RM_STR("Moved Permanently"),
    [2][2] = RM_STR("Found"),
    [2][3] = RM_STR("See Other"),
    [2][4] = RM_STR("Not Modified"),
    [2][5] = RM_STR("Use Proxy"),
    [2][7] = RM_STR("Temporary Redirect"),
    [2][8] = RM_STR("Permanent Redirect"),
    [3][0] = RM_STR("Bad Request"),
    [3][1] = RM_STR("Unauthorized"),
    [3][2] = RM_STR("Payment Required"),
    [3][3] = RM_STR("Forbidden"),
    [3][4] = RM_STR("Not Found"),
    [3][5] = RM_STR("Method Not Allowed"),
    [3][6] = RM_STR("Not Acceptable"),
    [3][7] = RM_STR("Proxy Authentication Required"),
    [3][8] = RM_STR("Request Timeout"),
    [3][9] = RM_STR("Conflict"),
    [3][10] = RM_STR("Gone"),
    [3][11] = RM_STR("Length Required"),
    [3][12] = RM_STR("Precondition Failed"),
    [3][13] = RM_STR("Payload Too Large"),
    [3][14] = RM_STR("URI Too Long"),
    [3][15] = RM_STR("Unsupported Media Type"),
    [3][16] = RM_STR("Range Not Satisfiable"),
    [3][17] = RM_STR("Expectation Failed"),
    [3][21] = RM_STR("Misdirected Request"),
    [3][22] = RM_STR("Unprocessable Entity"),
    [3][23] = RM_STR("Locked"),
    [3][24] = RM_STR("Failed Dependency"),
    [3][25] = RM_STR("Too Early"),
    [3][26] = RM_STR("Upgrade Required"),
    [3][28] = RM_STR("Precondition Required"),
    [3][29] = RM_STR("Too Many Requests"),
    [3][31] = RM_STR("Request Header Fields Too Large"),
    [3][51] = RM_STR("Unavailable For Legal Reasons"),
    [4][0] = RM_STR("Internal Server Error"),
    [4][1] = RM_STR("Not Implemented"),
    [4][2] = RM_STR("Bad Gateway"),
    [4][3] = RM_STR("Service Unavailable"),
    [4][4] = RM_STR("Gateway Timeout"),
    [4][5] = RM_STR("HTTP Version Not Supported"),
    [4][6] = RM_STR("Variant Also Negotiates"),
    [4][7] = RM_STR("Insufficient Storage"),
    [4][8] = RM_STR("Loop Detected"),
    [4][10] = RM_STR("Not Extended"),
    [4][11] = RM_STR("Network Authentication Required"),
};

/* The reason phrase for <status> (100..999); "Unknown" for codes without one: clients ignore it. */
static struct rm_str reason_of(int status)
{
    struct rm_str r = status < 600 && status % 100 < 64 ? reasons[status / 100 - 1][status % 100]
                                                        : (struct rm_str){NULL, 0};
    return r.p ? r : RM_STR("Unknown");
}

/* "HTTP/1.1 NNN Reason\r\n" */
static char *put_status_line(char *dst, int status, const char *reason, size_t rlen)
{
    memcpy(dst, "HTTP/1.1 ", 9);
    dst[9] = (char)('0' + status / 100);
    dst[10] = (char)('0' + status / 10 % 10);
    dst[11] = (char)('0' + status % 10);
    dst[12] = ' ';
    memcpy(dst + 13, reason, rlen);
    dst += 13 + rlen;
    *dst++ = '\r';
    *dst++ = '\n';
    return dst;
}

#define LIT(dst, s) (memcpy((dst), (s), sizeof(s) - 1), (dst) + sizeof(s) - 1)

static const uint32_t skip_resp = RM_H1_HC_BIT(RM_H1_HC_HOP) | RM_H1_HC_BIT(RM_H1_HC_CONNECTION);

/* 1xx (not 101): informational, written at once; the final response still follows. */
static int submit_informational(struct rm_h1_codec *c, struct rm_h1_stream *hs,
                                const struct rm_headers *h, int status)
{
    if (hs->s.proto == RM_HTTP10 || (status == 100 && hs->sent_100))
        return 0; /* HTTP/1.0 clients don't know 1xx; one 100 per request */
    if (status == 100) hs->sent_100 = true;
    struct rm_str rs = reason_of(status);
    const char *reason = rs.p;
    size_t rlen = rs.len;
    size_t size = 13 + rlen + 2 + rm_h1_lines_size(h, skip_resp, NULL) + 2;
    char stack[RM_H1_HEAD_STACK];
    char *buf = rm_h1_head_buf(hs, stack, size);
    char *e = put_status_line(buf, status, reason, rlen);
    e = rm_h1_lines_put(e, h, skip_resp);
    e = LIT(e, "\r\n");
    rm_h1_write(c, buf, (size_t)(e - buf));
    return 0;
}

/* Framing header the response head gets from the codec. */
enum framing_line { LINE_NONE, LINE_CL0, LINE_CHUNKED };

/* Decide the response framing (hs->framing) and the framing header it needs. */
static enum framing_line response_framing(struct rm_h1_codec *c, struct rm_h1_stream *hs,
                                          int status, int64_t cl, bool end_stream)
{
    if (hs->head_method || status == 204 || status == 304) {
        hs->framing = RM_H1_FRAME_NONE; /* never a body, whatever the headers say */
        return LINE_NONE;
    }
    if (cl >= 0) {
        hs->framing = RM_H1_FRAME_LENGTH;
        hs->out_left = (uint64_t)cl;
        return LINE_NONE;
    }
    if (end_stream) {
        hs->framing = RM_H1_FRAME_NONE;
        return LINE_CL0;
    }
    if (hs->s.proto == RM_HTTP11) {
        hs->framing = RM_H1_FRAME_CHUNKED;
        return LINE_CHUNKED;
    }
    hs->framing = RM_H1_FRAME_EOF; /* HTTP/1.0: the body ends when we close */
    if (c->state == RM_H1_ACTIVE) rm_h1_set_state(c, RM_H1_DRAINING);
    return LINE_NONE;
}

static const struct rm_str framing_lines[] = {
    [LINE_NONE] = RM_STR(""),
    [LINE_CL0] = RM_STR("content-length: 0\r\n"),
    [LINE_CHUNKED] = RM_STR("transfer-encoding: chunked\r\n"),
};

/* Room a response head keeps after its header lines: the longest framing line, the longest
 * connection line ("connection: keep-alive\r\n") and the blank line. */
#define RESP_TAIL_MAX (sizeof("transfer-encoding: chunked\r\n") - 1 + 24 + 2)

static int submit_headers(struct rm_stream *s, struct rm_headers *h, bool end_stream)
{
    struct rm_h1_stream *hs = (struct rm_h1_stream *)s;
    if (!rm_h1_can_submit(hs) || hs->tx != RM_H1_HALF_HEADERS) return -1;
    struct rm_h1_codec *c = hs->c;
    int status = status_of(h);
    if (status < 0 || status == 101 || (status < 200 && end_stream)) return -1;
    if (status < 200) return submit_informational(c, hs, h, status);
    uint32_t skip = skip_resp;
    if (status == 204)
        skip |= RM_H1_HC_BIT(RM_H1_HC_CONTENT_LENGTH); /* RFC 9110 8.6: never in a 204 */
    struct rm_str rs = reason_of(status);
    const char *reason = rs.p;
    size_t rlen = rs.len;
    /* one pass into the stack buffer (the status line and the header lines; room is kept for
     * the framing and connection lines), two into the arena for a head too big for it */
    char stack[RM_H1_HEAD_STACK];
    char *buf = stack, *e = put_status_line(buf, status, reason, rlen);
    const char *lim = stack + sizeof(stack) - RESP_TAIL_MAX;
    int64_t cl;
    char *lines_end = rm_h1_lines_try_put(e, lim, h, skip, &cl);
    if (!lines_end) rm_h1_lines_size(h, skip, &cl);
    if (cl == -2) {
        rm_log_debug("h1: invalid content-length in a response: dropped");
        skip |= RM_H1_HC_BIT(RM_H1_HC_CONTENT_LENGTH);
        cl = -1;
        if (lines_end) lines_end = rm_h1_lines_try_put(e, lim, h, skip, NULL);
    }
    if (!lines_end) {
        buf = rm_arena_alloc(hs->s.arena,
                             13 + rlen + 2 + rm_h1_lines_size(h, skip, NULL) + RESP_TAIL_MAX);
        lines_end = rm_h1_lines_put(put_status_line(buf, status, reason, rlen), h, skip);
    }
    struct rm_str fl = framing_lines[response_framing(c, hs, status, cl, end_stream)];
    if (hs->rx != RM_H1_HALF_END && c->state == RM_H1_ACTIVE)
        rm_h1_set_state(c, RM_H1_DRAINING); /* early response: the connection won't be reused */
    struct rm_str conn = c->state == RM_H1_DRAINING ? RM_STR("connection: close\r\n")
                         : hs->s.proto == RM_HTTP10 ? RM_STR("connection: keep-alive\r\n")
                                                    : RM_STR("");
    e = lines_end;
    memcpy(e, fl.p, fl.len);
    e += fl.len;
    memcpy(e, conn.p, conn.len);
    e += conn.len;
    e = LIT(e, "\r\n");
    rm_h1_write(c, buf, (size_t)(e - buf));
    rm_h1_set_half(&hs->tx, RM_H1_HALF_BODY);
    if (end_stream) /* no body: ends the half without writing anything */
        return rm_h1_submit_data(s, NULL, 0, true);
    return 0;
}

/* ---- codec ops ----------------------------------------------------------------------------- */

static int new_stream(struct rm_codec *base, const struct rm_stream_events *ev, void *user,
                      struct rm_arena *arena, struct rm_stream **out)
{
    return -1; /* server codecs don't open streams */
}

static uint32_t available_streams(const struct rm_codec *base)
{
    return 0;
}

static void shutdown_codec(struct rm_codec *base)
{
    struct rm_h1_codec *c = (struct rm_h1_codec *)base;
    if (c->state == RM_H1_ACTIVE && c->cur && c->cur->announced) {
        rm_h1_set_state(c, RM_H1_DRAINING); /* the response in flight says connection: close */
        return;
    }
    if (c->state == RM_H1_IDLE || c->state == RM_H1_ACTIVE)
        rm_h1_close(c, RM_H1_CLOSE_FLUSH, true, 0, RM_RESET_CONNECTION_TERMINATION);
}

static const struct rm_codec_conn_ops server_conn_ops = {
    .name = "http/1.1",
    .new_stream = new_stream,
    .available_streams = available_streams,
    .active_streams = rm_h1_active_streams,
    .shutdown = shutdown_codec,
    .close = rm_h1_codec_close,
};

const struct rm_codec_ops rm_h1_stream_ops_server = {
    .submit_headers = submit_headers,
    .submit_data = rm_h1_submit_data,
    .submit_trailers = rm_h1_submit_trailers,
    .reset = rm_h1_reset,
    .pause_reading = rm_h1_pause_reading,
    .write_blocked = rm_h1_write_blocked,
    .release = rm_h1_release,
};

struct rm_codec *rm_h1_server_new(struct rm_conn *conn, const struct rm_codec_settings *st,
                                  const struct rm_codec_callbacks *cb, void *user)
{
    struct rm_h1_codec *c = rm_h1_codec_alloc(conn, st, cb, user, true, &parser_settings);
    if (!c) return NULL;
    c->base.ops = &server_conn_ops;
    rm_conn_set_handler(conn, &conn_handler, c);
    return &c->base;
}
