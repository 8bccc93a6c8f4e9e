/* Choosing an accepted connection's filter chain (rm_listener_cfg.chains): at once from its
 * addresses, or — when a chain matches on server_names, transport_protocol or
 * application_protocols — after peeking at its first bytes (proxy/net/peek.h) without
 * consuming them.  Then the chain's TLS (if any) starts and its network filter takes over. */
#ifndef RM_SERVER_CHAIN_ACCEPT_H
#define RM_SERVER_CHAIN_ACCEPT_H

struct rm_worker_listener;
struct rm_conn;

/** Hand <c>, just accepted by <wl> (its original destination restored if the listener does
 *  that), to its filter chain; closes it (counted) when none takes it.  A connection being
 *  peeked at is one of the worker's connections (closed with its listener or at the end). */
void rm_chain_accept(struct rm_worker_listener *wl, struct rm_conn *c);

#endif
