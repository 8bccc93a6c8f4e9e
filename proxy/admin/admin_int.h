/* Internal to the admin server: what admin.c (server, connections, dispatch, small endpoints)
 * shares with the endpoint files admin_stats.c, admin_clusters.c and admin_config.c.
 *
 * An endpoint is a function that fills a struct rm_admin_resp from the parsed query; it runs on
 * the main thread, synchronously, and never sees the HTTP stream.  admin.c turns the response
 * into headers (status, content-type, content-length, cache-control, nosniff) and a body. */
#ifndef RM_ADMIN_ADMIN_INT_H
#define RM_ADMIN_ADMIN_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "proxy/admin/admin.h"
#include "proxy/config/strbuf.h"
#include "proxy/core/arena.h"
#include "proxy/core/loop.h"
#include "proxy/net/listener.h"

struct rm_admin_conn;

struct rm_admin {
    struct rm_loop *loop;
    struct rm_listener listener;
    bool listening;
    struct rm_admin_hooks hooks;
    void *ctx;
    char *version;      /* owned copies of rm_admin_info */
    char *command_line; /* JSON object text, or NULL */
    uint64_t start_time_s;
    unsigned concurrency;
    struct rm_admin_conn *conns; /* open connections (doubly linked) */
    unsigned n_conns;
    bool hc_failed; /* POST /healthcheck/fail seen (and no /healthcheck/ok since) */
    /* POST /quitquitquit: hooks.quit runs from this timer once the reply is written */
    struct rm_timer quit_timer;
    struct rm_admin_conn *quit_conn; /* the connection that asked; NULL once it is gone */
    unsigned quit_polls;
    bool quit_requested;
};

/* ---- requests and responses ------------------------------------------------------------- */

#define RM_ADMIN_MAX_PARAMS 16

/** The decoded query string: "?a=1&b" gives {a: "1"}, {b: ""}.  Strings live in the request's
 *  arena.  Parameters after the first RM_ADMIN_MAX_PARAMS are ignored. */
struct rm_admin_query {
    struct {
        const char *key, *value;
    } v[RM_ADMIN_MAX_PARAMS];
    unsigned n;
};

/** The value of parameter <key> ("" when given without '='), or NULL when absent. */
const char *rm_admin_query_get(const struct rm_admin_query *q, const char *key);

#define RM_ADMIN_CT_TEXT "text/plain; charset=UTF-8"
#define RM_ADMIN_CT_JSON "application/json"
#define RM_ADMIN_CT_PROMETHEUS "text/plain; version=0.0.4"

/** What an endpoint produces.  Starts as 200, text/plain, empty body. */
struct rm_admin_resp {
    int status;
    const char *content_type; /* a static string */
    struct rm_strbuf body;
};

/** An endpoint handler.  <method> is the request method ("GET", "POST", ...). */
typedef void (*rm_admin_handler_fn)(struct rm_admin *a, const char *method,
                                    const struct rm_admin_query *q, struct rm_admin_resp *r);

/* ---- helpers shared by the endpoint files -------------------------------------------------- */

/** Append <s> as a JSON string literal (quoted; '"', '\\' and control characters escaped). */
void rm_admin_json_str(struct rm_strbuf *sb, const char *s);
/** Fill <r> with status <status> and the text body (a plain-text error or note). */
void rm_admin_resp_text(struct rm_admin_resp *r, int status, const char *text);
/** The active snapshot with a reference (drop it with rm_snapshot_unref), or NULL. */
struct rm_snapshot *rm_admin_snapshot(struct rm_admin *a);
/** The server state as /ready and /server_info report it ("LIVE", "DRAINING", ...). */
const char *rm_admin_state(struct rm_admin *a);

/* ---- endpoints living in their own files --------------------------------------------------- */

/* admin_stats.c: GET /stats (text, ?format=json|prometheus, ?filter=, ?usedonly) */
void rm_admin_handle_stats(struct rm_admin *a, const char *method, const struct rm_admin_query *q,
                           struct rm_admin_resp *r);
/* admin_stats.c: GET /stats/prometheus */
void rm_admin_handle_prometheus(struct rm_admin *a, const char *method,
                                const struct rm_admin_query *q, struct rm_admin_resp *r);
/* admin_clusters.c: GET /clusters (text, ?format=json) */
void rm_admin_handle_clusters(struct rm_admin *a, const char *method,
                              const struct rm_admin_query *q, struct rm_admin_resp *r);
/* admin_clusters.c: GET /listeners (text, ?format=json) */
void rm_admin_handle_listeners(struct rm_admin *a, const char *method,
                               const struct rm_admin_query *q, struct rm_admin_resp *r);
/* admin_config.c: GET /config_dump */
void rm_admin_handle_config_dump(struct rm_admin *a, const char *method,
                                 const struct rm_admin_query *q, struct rm_admin_resp *r);

#endif
