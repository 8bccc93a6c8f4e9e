/* Network filters: what a listener's filter chain does with an accepted connection.
 *
 * A filter chain config names one network filter (rm_listener_cfg.netfilter): the HTTP
 * connection manager (proxy/http/hcm.h) or the TCP proxy (proxy/tcp/tcp_proxy.h).  The worker
 * calls ops->accept once per connection with the chain chosen for it (proxy/server/
 * chain_accept.c; after the chain's TLS, if any, was started); everything
 * later runs inside the filter.  Each filter's connection object embeds a struct rm_worker_conn
 * so the worker can drain, close and update all of its connections alike (listener removal,
 * SIGTERM, config updates). */
#ifndef RM_SERVER_NETFILTER_H
#define RM_SERVER_NETFILTER_H

#include <stdbool.h>
#include <stdint.h>

struct rm_worker;
struct rm_listener_cfg;
struct rm_conn;
struct rm_worker_conn;

struct rm_netfilter_ops {
    const char *name; /* Envoy's extension name, e.g. "envoy.filters.network.tcp_proxy" */
    /** Take over <conn>, accepted by the worker listener <listener_tag> with its filter chain <lc>
     * (the listener config itself when it has one chain): link a struct rm_worker_conn into the
     * worker (rm_worker_conn_link) and free it when done (out of memory: close <conn> at once). */
    void (*accept)(struct rm_worker *w, const struct rm_listener_cfg *lc, uint64_t listener_tag,
                   struct rm_conn *conn);
    /** The worker has a new config: new work on the connection uses it when its listener is
     *  still there.  May be a no-op. */
    void (*follow_config)(struct rm_worker_conn *wc);
    /** Graceful drain (the listener left, or SIGTERM): finish what is in flight; the worker
     *  closes what is left when the drain time is over. */
    void (*drain)(struct rm_worker_conn *wc);
    /** Close now.  Unlinks the connection (rm_worker_conn_unlink) before returning; frees it
     *  later (deferred), so a caller walking the list may read wc->next first. */
    void (*close)(struct rm_worker_conn *wc);
};

/** The worker's view of a downstream connection: embedded in the filter's connection object. */
struct rm_worker_conn {
    const struct rm_netfilter_ops *ops;
    struct rm_worker_conn *next, *prev; /* the worker's list */
    uint64_t listener_tag;              /* the worker listener that accepted it */
    bool closed;                        /* unlinked: no more ops calls */
};

/** Add <wc> (ops and listener_tag set) to <w>'s connections. */
void rm_worker_conn_link(struct rm_worker *w, struct rm_worker_conn *wc);
/** Take <wc> out of <w>'s connections and mark it closed; a no-op when already closed. */
void rm_worker_conn_unlink(struct rm_worker *w, struct rm_worker_conn *wc);

#endif
