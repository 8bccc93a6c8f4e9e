/* The admin server: listener, connections (HTTP/1.1 server codec), request dispatch through the
 * endpoint table, response framing, and the small endpoints (/ready, /server_info, /help, the
 * POST commands).  The bigger endpoints live in admin_stats.c, admin_clusters.c and
 * admin_config.c (see admin_int.h). */
#include "proxy/admin/admin.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "proxy/admin/admin_int.h"
#include "proxy/config/snapshot.h"
#include "proxy/core/log.h"
#include "proxy/http/codec.h"
#include "proxy/http/headers.h"
#include "proxy/net/conn.h"

#define RM_ADMIN_MAX_CONNS 64 /* admin clients are few: refuse more rather than grow */

/** One admin connection: the codec owns the rm_conn; we own this. */
struct rm_admin_conn {
    struct rm_admin *a;
    struct rm_codec *codec;
    struct rm_admin_conn *prev, *next;
};

/** One request, in its stream's arena (gone once the stream is released). */
struct admin_req {
    struct rm_admin_conn *ac;
    struct rm_stream *s;
    char *method; /* NUL-terminated copies, in the arena */
    char *path;
    bool head;
    bool answered; /* response submitted and stream released: no more use of s */
};

/* ---- small helpers ------------------------------------------------------------------------ */

void rm_admin_json_str(struct rm_strbuf *sb, const char *s)
{
    rm_strbuf_putc(sb, '"');
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        switch (*p) {
        case '"':
            rm_strbuf_puts(sb, "\\\"");
            break;
        case '\\':
            rm_strbuf_puts(sb, "\\\\");
            break;
        case '\n':
            rm_strbuf_puts(sb, "\\n");
            break;
        case '\r':
            rm_strbuf_puts(sb, "\\r");
            break;
        case '\t':
            rm_strbuf_puts(sb, "\\t");
            break;
        default:
            if (*p < 0x20)
                rm_strbuf_printf(sb, "\\u%04x", *p);
            else
                rm_strbuf_putc(sb, (char)*p);
        }
    }
    rm_strbuf_putc(sb, '"');
}

void rm_admin_resp_text(struct rm_admin_resp *r, int status, const char *text)
{
    r->status = status;
    r->content_type = RM_ADMIN_CT_TEXT;
    rm_strbuf_truncate(&r->body, 0);
    rm_strbuf_puts(&r->body, text);
}

const char *rm_admin_query_get(const struct rm_admin_query *q, const char *key)
{
    for (unsigned i = 0; i < q->n; i++)
        if (strcmp(q->v[i].key, key) == 0) return q->v[i].value;
    return NULL;
}

struct rm_snapshot *rm_admin_snapshot(struct rm_admin *a)
{
    return a->hooks.snapshot ? a->hooks.snapshot(a->ctx) : NULL;
}

const char *rm_admin_state(struct rm_admin *a)
{
    const char *s = a->hooks.state ? a->hooks.state(a->ctx) : NULL;
    if (!s) s = "LIVE";
    /* As Envoy: a failed health check turns an initialised server's state into DRAINING. */
    if (a->hc_failed && strcmp(s, "LIVE") == 0) return "DRAINING";
    return s;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decode [p, p+n) into the arena ('+' stays '+', as in Envoy's query decoding). */
static const char *url_decode(struct rm_arena *ar, const char *p, size_t n)
{
    char *out = rm_arena_alloc(ar, n + 1), *o = out;
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (p[i] == '%' && i + 2 < n && (hi = hexval(p[i + 1])) >= 0 &&
            (lo = hexval(p[i + 2])) >= 0) {
            *o++ = (char)(hi << 4 | lo);
            i += 2;
        } else {
            *o++ = p[i];
        }
    }
    *o = 0;
    return out;
}

/* Split "a=1&b&c=%2F" into <q>. */
static void parse_query(struct rm_arena *ar, const char *qs, struct rm_admin_query *q)
{
    q->n = 0;
    while (qs && *qs && q->n < RM_ADMIN_MAX_PARAMS) {
        const char *amp = strchr(qs, '&');
        size_t len = amp ? (size_t)(amp - qs) : strlen(qs);
        const char *eq = memchr(qs, '=', len);
        if (len) {
            size_t klen = eq ? (size_t)(eq - qs) : len;
            q->v[q->n].key = url_decode(ar, qs, klen);
            q->v[q->n].value = eq ? url_decode(ar, eq + 1, len - klen - 1) : "";
            q->n++;
        }
        qs = amp ? amp + 1 : NULL;
    }
}

/* ---- small endpoints ---------------------------------------------------------------------- */

static void handle_ready(struct rm_admin *a, const char *method, const struct rm_admin_query *q,
                         struct rm_admin_resp *r)
{
    const char *state = rm_admin_state(a);
    r->status = strcmp(state, "LIVE") == 0 ? 200 : 503;
    rm_strbuf_printf(&r->body, "%s\n", state);
}

static void append_node(struct rm_admin *a, struct rm_strbuf *sb)
{
    struct rm_snapshot *snap = rm_admin_snapshot(a);
    bool first = true;
    rm_strbuf_putc(sb, '{');
    if (snap && snap->node_id && *snap->node_id) {
        rm_strbuf_puts(sb, "\"id\":");
        rm_admin_json_str(sb, snap->node_id);
        first = false;
    }
    if (snap && snap->node_cluster && *snap->node_cluster) {
        rm_strbuf_puts(sb, first ? "\"cluster\":" : ",\"cluster\":");
        rm_admin_json_str(sb, snap->node_cluster);
        first = false;
    }
    rm_strbuf_puts(sb,
                   first ? "\"user_agent_name\":\"remora\"}" : ",\"user_agent_name\":\"remora\"}");
    if (snap) rm_snapshot_unref(snap);
}

/* admin.v3.ServerInfo in the proto3 JSON mapping (snake_case names, as Envoy prints it). */
static void handle_server_info(struct rm_admin *a, const char *method,
                               const struct rm_admin_query *q, struct rm_admin_resp *r)
{
    time_t now = time(NULL);
    long long up =
        (uint64_t)now > a->start_time_s ? (long long)((uint64_t)now - a->start_time_s) : 0;
    struct rm_strbuf *sb = &r->body;
    r->content_type = RM_ADMIN_CT_JSON;
    rm_strbuf_puts(sb, "{\"version\":");
    rm_admin_json_str(sb, a->version ? a->version : "unknown");
    rm_strbuf_puts(sb, ",\"state\":");
    rm_admin_json_str(sb, rm_admin_state(a));
    rm_strbuf_puts(sb, ",\"hot_restart_version\":\"disabled\",\"command_line_options\":");
    rm_strbuf_puts(sb, a->command_line && *a->command_line ? a->command_line : "{}");
    rm_strbuf_puts(sb, ",\"node\":");
    append_node(a, sb);
    rm_strbuf_printf(sb, ",\"uptime_current_epoch\":\"%llds\",\"uptime_all_epochs\":\"%llds\"}\n",
                     up, up);
}

static void handle_hot_restart_version(struct rm_admin *a, const char *method,
                                       const struct rm_admin_query *q, struct rm_admin_resp *r)
{
    rm_strbuf_puts(&r->body, "disabled");
}

static void on_quit_timer(struct rm_timer *t)
{
    struct rm_admin *a = rm_container_of(t, struct rm_admin, quit_timer);
    if (a->hooks.quit)
        a->hooks.quit(a->ctx); /* may stop the loop and free us later: touch nothing after */
}

static void handle_quit(struct rm_admin *a, const char *method, const struct rm_admin_query *q,
                        struct rm_admin_resp *r)
{
    rm_strbuf_puts(&r->body, "OK\n");
    /* The reply is flushed before this loop iteration sleeps; a 0 ms timer fires in the next
     * iteration, so hooks.quit runs after "OK" went out. */
    if (!a->quit_requested) {
        a->quit_requested = true;
        rm_timer_start(a->loop, &a->quit_timer, 0, on_quit_timer);
    }
}

static void handle_hc_fail(struct rm_admin *a, const char *method, const struct rm_admin_query *q,
                           struct rm_admin_resp *r)
{
    a->hc_failed = true;
    if (a->hooks.healthcheck) a->hooks.healthcheck(a->ctx, false);
    rm_strbuf_puts(&r->body, "OK\n");
}

static void handle_hc_ok(struct rm_admin *a, const char *method, const struct rm_admin_query *q,
                         struct rm_admin_resp *r)
{
    a->hc_failed = false;
    if (a->hooks.healthcheck) a->hooks.healthcheck(a->ctx, true);
    rm_strbuf_puts(&r->body, "OK\n");
}

static void handle_drain(struct rm_admin *a, const char *method, const struct rm_admin_query *q,
                         struct rm_admin_resp *r)
{
    if (a->hooks.drain_listeners) a->hooks.drain_listeners(a->ctx);
    rm_strbuf_puts(&r->body, "OK\n");
}

static void handle_help(struct rm_admin *a, const char *method, const struct rm_admin_query *q,
                        struct rm_admin_resp *r);

/* ---- the endpoint table ------------------------------------------------------------------- */

struct admin_endpoint {
    const char *path; /* matched exactly against the path without its query */
    const char *help;
    rm_admin_handler_fn fn;
    bool mutates;       /* POST only (other methods: 405, as Envoy) */
    const char *params; /* help lines for the query parameters, or NULL */
};

/* Sorted by path: /help prints it in this order. */
static const struct admin_endpoint endpoints[] = {
    {"/", "Admin home page (this list)", handle_help, false, NULL},
    {"/clusters", "upstream cluster status", rm_admin_handle_clusters, false,
     "      format: File format to use; One of (text, json)\n"},
    {"/config_dump", "dump current Envoy configs (experimental)", rm_admin_handle_config_dump,
     false, NULL},
    {"/drain_listeners", "drain listeners", handle_drain, true, NULL},
    {"/healthcheck/fail", "cause the server to fail health checks", handle_hc_fail, true, NULL},
    {"/healthcheck/ok", "cause the server to pass health checks", handle_hc_ok, true, NULL},
    {"/help", "print out list of admin commands", handle_help, false, NULL},
    {"/hot_restart_version", "print the hot restart compatibility version",
     handle_hot_restart_version, false, NULL},
    {"/listeners", "print listener info", rm_admin_handle_listeners, false,
     "      format: File format to use; One of (text, json)\n"},
    {"/quitquitquit", "exit the server", handle_quit, true, NULL},
    {"/ready", "print server state, return 200 if LIVE, otherwise return 503", handle_ready, false,
     NULL},
    {"/server_info", "print server version/status information", handle_server_info, false, NULL},
    {"/stats", "print server stats", rm_admin_handle_stats, false,
     "      usedonly: Only include stats that have been written by system since restart\n"
     "      filter: Regular expression (PCRE2, partial match) for filtering stats\n"
     "      format: Format to use; One of (text, json, prometheus)\n"},
    {"/stats/prometheus", "print server stats in prometheus format", rm_admin_handle_prometheus,
     false,
     "      usedonly: Only include stats that have been written by system since restart\n"
     "      filter: Regular expression (PCRE2, partial match) for filtering stats\n"},
};

#define N_ENDPOINTS (sizeof(endpoints) / sizeof(endpoints[0]))

static void append_help(struct rm_strbuf *sb)
{
    rm_strbuf_puts(sb, "admin commands are:\n");
    for (size_t i = 0; i < N_ENDPOINTS; i++) {
        const struct admin_endpoint *e = &endpoints[i];
        rm_strbuf_printf(sb, "  %s%s: %s\n", e->path, e->mutates ? " (POST)" : "", e->help);
        if (e->params) rm_strbuf_puts(sb, e->params);
    }
}

static void handle_help(struct rm_admin *a, const char *method, const struct rm_admin_query *q,
                        struct rm_admin_resp *r)
{
    append_help(&r->body);
}

static const struct admin_endpoint *find_endpoint(const char *path, size_t len)
{
    for (size_t i = 0; i < N_ENDPOINTS; i++)
        if (strlen(endpoints[i].path) == len && memcmp(endpoints[i].path, path, len) == 0)
            return &endpoints[i];
    return NULL;
}

/* ---- requests ----------------------------------------------------------------------------- */

static void add_hdr(struct rm_headers *h, const char *name, const char *value)
{
    rm_headers_add_ref(h, name, strlen(name), value, strlen(value));
}

static void send_response(struct admin_req *rq, const struct rm_admin_resp *r)
{
    struct rm_stream *s = rq->s;
    struct rm_headers *h = rm_arena_alloc(s->arena, sizeof(*h));
    char status[16], len[32];
    snprintf(status, sizeof(status), "%d", r->status);
    snprintf(len, sizeof(len), "%zu", r->body.len);
    rm_headers_init(h, s->arena);
    rm_headers_add(h, ":status", 7, status, strlen(status));
    add_hdr(h, "content-type", r->content_type);
    rm_headers_add(h, "content-length", 14, len, strlen(len));
    add_hdr(h, "cache-control", "no-cache, max-age=0");
    add_hdr(h, "x-content-type-options", "nosniff");
    bool body = r->body.len > 0 && !rq->head;
    if (s->ops->submit_headers(s, h, !body) == 0 && body)
        s->ops->submit_data(s, (const uint8_t *)r->body.p, r->body.len, true);
}

/* The request is complete: run the endpoint, answer, release the stream. */
static void dispatch(struct admin_req *rq)
{
    struct rm_admin *a = rq->ac->a;
    struct rm_stream *s = rq->s;
    struct rm_admin_resp r = {.status = 200, .content_type = RM_ADMIN_CT_TEXT};
    const char *path = rq->path ? rq->path : "";
    const char *qmark = strchr(path, '?');
    size_t plen = qmark ? (size_t)(qmark - path) : strlen(path);
    const struct admin_endpoint *e = find_endpoint(path, plen);
    const char *method = rq->method ? rq->method : "";

    rq->answered = true;
    if (!e) {
        r.status = 404;
        rm_strbuf_puts(&r.body, "invalid path. ");
        append_help(&r.body);
    } else if (e->mutates && strcmp(method, "POST") != 0) {
        rm_log_warn("admin path \"%s\" mutates state, method=%s rather than POST", e->path, method);
        r.status = 405;
        rm_strbuf_printf(&r.body, "Method %s not allowed, POST required.", method);
    } else {
        struct rm_admin_query q;
        parse_query(s->arena, qmark ? qmark + 1 : NULL, &q);
        e->fn(a, method, &q, &r);
    }
    send_response(rq, &r);
    rm_strbuf_dispose(&r.body);
    s->ops->release(s); /* rq lives in the stream's arena: not used past this point */
}

static char *arena_str(struct rm_arena *ar, struct rm_str v)
{
    return v.p ? rm_arena_strndup(ar, v.p, v.len) : NULL;
}

static void req_on_headers(struct rm_stream *s, struct rm_headers *h, bool end_stream)
{
    struct admin_req *rq = s->user;
    if (rq->answered) return;
    rq->method = arena_str(s->arena, RM_HDR_GET(h, ":method"));
    rq->path = arena_str(s->arena, RM_HDR_GET(h, ":path"));
    rq->head = rq->method && strcmp(rq->method, "HEAD") == 0;
    if (end_stream) dispatch(rq);
}

/* Request bodies are not used by any endpoint: dropped as they come (nothing is buffered). */
static void req_on_data(struct rm_stream *s, const uint8_t *p, size_t n, bool end_stream)
{
    struct admin_req *rq = s->user;
    if (end_stream && !rq->answered) dispatch(rq);
}

static void req_on_trailers(struct rm_stream *s, struct rm_headers *h)
{
    struct admin_req *rq = s->user;
    if (!rq->answered) dispatch(rq);
}

static void req_on_reset(struct rm_stream *s, enum rm_reset_reason reason)
{
    struct admin_req *rq = s->user;
    if (!rq->answered) {
        rq->answered = true;
        s->ops->release(s);
    }
}

static void req_on_writable(struct rm_stream *s) {}

static const struct rm_stream_events req_events = {
    .on_headers = req_on_headers,
    .on_data = req_on_data,
    .on_trailers = req_on_trailers,
    .on_reset = req_on_reset,
    .on_writable = req_on_writable,
};

/* ---- connections -------------------------------------------------------------------------- */

static void conn_unlink(struct rm_admin_conn *ac)
{
    struct rm_admin *a = ac->a;
    if (ac->prev)
        ac->prev->next = ac->next;
    else
        a->conns = ac->next;
    if (ac->next) ac->next->prev = ac->prev;
    a->n_conns--;
}

static void on_stream(void *user, struct rm_stream *s)
{
    struct admin_req *rq = rm_arena_alloc(s->arena, sizeof(*rq));
    memset(rq, 0, sizeof(*rq));
    rq->ac = user;
    rq->s = s;
    s->user = rq;
    s->ev = &req_events;
}

/* The codec reports the end of the connection (every stream got on_reset before); it frees
 * itself afterwards. */
static void on_codec_close(void *user, int err)
{
    struct rm_admin_conn *ac = user;
    conn_unlink(ac);
    free(ac);
}

static const struct rm_codec_callbacks codec_cb = {
    .on_stream = on_stream,
    .on_close = on_codec_close,
};

/* Placeholder between rm_conn_accepted() and rm_h1_server_new() (which replaces it at once). */
static size_t idle_on_data(struct rm_conn *c, const uint8_t *p, size_t n)
{
    return 0;
}
static void idle_on_close(struct rm_conn *c, int err) {}
static const struct rm_conn_handler idle_handler = {
    .on_data = idle_on_data,
    .on_close = idle_on_close,
};

static const struct rm_codec_settings admin_codec_settings = {
    .max_request_headers_kb = 60,
    .max_headers_count = 100,
    .buffer_limit = 1024 * 1024,
    .accept_http_10 = true,
};

/* Callbacks of a codec we closed ourselves: whatever it still reports (a close it had already
 * scheduled before we closed it, for instance) must not reach the freed rm_admin_conn. */
static void detached_on_stream(void *user, struct rm_stream *s)
{
    s->ops->reset(s, RM_RESET_LOCAL);
    s->ops->release(s);
}
static void detached_on_close(void *user, int err) {}
static const struct rm_codec_callbacks detached_cb = {
    .on_stream = detached_on_stream,
    .on_close = detached_on_close,
};

/* Close <ac> now and free it: open streams get on_reset (their requests live in the streams'
 * arenas and do not point back at <ac> after that). */
static void conn_close_now(struct rm_admin_conn *ac)
{
    struct rm_codec *codec = ac->codec;
    conn_unlink(ac);
    free(ac);
    codec->cb = &detached_cb;
    codec->user = NULL;
    codec->ops->close(codec);
}

/* At the connection limit: close the oldest connection with no request in flight (new
 * connections go to the head of the list, so the oldest is at the tail).  False if none. */
static bool evict_idle(struct rm_admin *a)
{
    struct rm_admin_conn *ac = a->conns, *victim = NULL;
    for (; ac; ac = ac->next)
        if (ac->codec->ops->active_streams(ac->codec) == 0) victim = ac;
    if (!victim) return false;
    conn_close_now(victim);
    return true;
}

static void on_accept(struct rm_listener *l, int fd, const struct sockaddr *peer, socklen_t plen)
{
    struct rm_admin *a = l->user;
    if (a->n_conns >= RM_ADMIN_MAX_CONNS && !evict_idle(a)) {
        rm_log_debug("admin: %u busy connections open, refusing another", a->n_conns);
        close(fd);
        return;
    }
    struct rm_admin_conn *ac = calloc(1, sizeof(*ac));
    if (!ac) {
        close(fd);
        return;
    }
    ac->a = a;
    struct rm_conn *c = rm_conn_accepted(a->loop, fd, peer, plen, &idle_handler, ac);
    if (!c) {
        free(ac);
        return;
    }
    ac->codec = rm_h1_server_new(c, &admin_codec_settings, &codec_cb, ac);
    if (!ac->codec) {
        rm_conn_close(c);
        free(ac);
        return;
    }
    ac->next = a->conns;
    if (a->conns) a->conns->prev = ac;
    a->conns = ac;
    a->n_conns++;
}

/* ---- lifetime ----------------------------------------------------------------------------- */

struct rm_admin *rm_admin_new(struct rm_loop *loop, const struct sockaddr *addr, socklen_t len,
                              const struct rm_admin_hooks *hooks, void *ctx,
                              const struct rm_admin_info *info, struct rm_error *err)
{
    struct rm_admin *a = calloc(1, sizeof(*a));
    if (!a) {
        rm_error_set(err, "admin: out of memory");
        return NULL;
    }
    a->loop = loop;
    if (hooks) a->hooks = *hooks;
    a->ctx = ctx;
    if (info) {
        a->version = info->version ? strdup(info->version) : NULL;
        a->command_line = info->command_line ? strdup(info->command_line) : NULL;
        a->start_time_s = info->start_time_s;
        a->concurrency = info->concurrency;
    }
    if (!a->start_time_s) a->start_time_s = (uint64_t)time(NULL);
    int fd = rm_listen_socket_mode(addr, len, false, 128, info ? info->pipe_mode : 0);
    if (fd < 0) {
        char where[RM_SOCKADDR_STRLEN] = "?";
        if (addr->sa_family == AF_INET || addr->sa_family == AF_INET6 || addr->sa_family == AF_UNIX)
            rm_sockaddr_str(addr, where, sizeof(where));
        rm_error_set(err, "cannot listen on %s: %s", where, strerror(-fd));
        goto fail;
    }
    int rc = rm_listener_start(&a->listener, loop, fd, on_accept, a);
    if (rc < 0) {
        rm_error_set(err, "cannot watch the listening socket: %s", strerror(-rc));
        goto fail;
    }
    a->listening = true;
    return a;
fail:
    free(a->version);
    free(a->command_line);
    free(a);
    return NULL;
}

void rm_admin_free(struct rm_admin *a)
{
    if (!a) return;
    if (a->listening) rm_listener_stop(&a->listener);
    rm_timer_stop(a->loop, &a->quit_timer);
    while (a->conns)
        conn_close_now(a->conns);
    free(a->version);
    free(a->command_line);
    free(a);
}
