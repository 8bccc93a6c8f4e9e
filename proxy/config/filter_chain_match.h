/* A listener's filter_chain_match messages, compiled: which filter chain takes a connection.
 *
 * Envoy's rules (FilterChainManagerImpl): the criteria are looked at in this order, and at each
 * one only the chains with the most specific value that matches the connection stay in the
 * running (an empty criterion matches anything but loses to a specific match at that step;
 * there is no falling back to a less specific value when a later criterion fails):
 *   destination_port (exact, else none), prefix_ranges (the destination IP: longest prefix),
 *   server_names (exact, then the longest "*.suffix" wildcard), transport_protocol (exact),
 *   application_protocols (the first of the connection's protocols some chain names),
 *   direct_source_prefix_ranges (longest prefix), source_type (SAME_IP_OR_LOOPBACK / EXTERNAL
 *   before ANY), source_prefix_ranges (longest prefix), source_ports (exact, else none).
 * Two chains whose matches overlap on every criterion are a config error ("multiple filter
 * chains with the same matching rules").  Immutable once built: shared by the workers. */
#ifndef RM_CONFIG_FILTER_CHAIN_MATCH_H
#define RM_CONFIG_FILTER_CHAIN_MATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "envoy/config/listener/v3/listener_components.pb-c.h"
#include "proxy/core/error.h"

struct rm_fcm;

/** What is known of a connection when its chain is chosen.  <local>: its local address (the
 *  restored original destination when original_dst ran); <peer>: the address it comes from (both
 *  direct source and source: remora has no PROXY protocol).  The rest is NULL / 0 until the
 *  first bytes were looked at (rm_fcm_needs_data). */
struct rm_fcm_facts {
    const struct sockaddr *local, *peer;
    const char *server_name;          /* the TLS SNI, or NULL / "" */
    const char *transport_protocol;   /* "tls" or "raw_buffer", or NULL */
    const char *const *app_protocols; /* ALPN, or the HTTP inspector's "h2c" / "http/1.1"… */
    size_t n_app_protocols;
};

/** Compile the filter_chain_match of chains[0..n) (a NULL chain or match: matches anything).
 *  <paths>[i] names chain i in errors ("…filter_chains[3]").  Returns the matcher, or NULL with
 *  <err> (unsupported or malformed fields, duplicate matches). */
struct rm_fcm *rm_fcm_new(const Envoy__Config__Listener__V3__FilterChain *const *chains,
                          const char *const *paths, size_t n, struct rm_error *err);
void rm_fcm_free(struct rm_fcm *m);

/** The index of the chain that takes a connection of <f>, or -1 (none matches). */
long rm_fcm_select(const struct rm_fcm *m, const struct rm_fcm_facts *f);

/** Whether some chain matches on server_names, transport_protocol or application_protocols
 *  (the connection's first bytes must be looked at before choosing). */
bool rm_fcm_needs_data(const struct rm_fcm *m);

/** Whether some chain matches on the destination (port, IP) or the source type: without, the
 *  facts' <local> may be NULL (no getsockname). */
bool rm_fcm_needs_local(const struct rm_fcm *m);

#endif
