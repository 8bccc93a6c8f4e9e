/* DNS: an asynchronous c-ares resolver driven by an rm_loop, with Envoy's c-ares semantics,
 * and the settings of DNS clusters (refresh, failure backoff, TTL, jitter) as pure functions.
 *
 * Nothing here blocks: c-ares sockets are watched by the loop, c-ares timeouts run on one loop
 * timer, and no getaddrinfo(3) is ever called.  (ares_init_options reads /etc/resolv.conf,
 * /etc/nsswitch.conf and, per lookup, /etc/hosts: local file reads, not network calls.)
 *
 * Lookup families, as Envoy's c-ares resolver does them (each step is one ares_getaddrinfo):
 *   AUTO          AAAA; if that gives no address (no records or any error), then A
 *   V4_PREFERRED  A; if that gives no address, then AAAA
 *   V4_ONLY / V6_ONLY   A / AAAA only
 *   ALL           A and AAAA together (AF_UNSPEC)
 * Addresses keep the order c-ares returns them in (ARES_AI_NOSORT: no RFC 6724 sorting).
 * "No records" (NXDOMAIN, or NODATA for the family) is a success with 0 addresses, as in
 * Envoy; the text of what happened is still in rm_dns_answer.error.  An IP literal name is
 * answered without a lookup (TTL 0).
 *
 * Threading: a resolver belongs to its loop's thread (in remora the main thread).
 * Lifetimes: rm_dns_resolver_new/_free; a query handle lives from rm_dns_resolve until its
 * callback starts or rm_dns_cancel. */
#ifndef RM_UPSTREAM_DNS_H
#define RM_UPSTREAM_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "proxy/core/error.h"

struct rm_loop;
struct Envoy__Extensions__Network__DnsResolver__Cares__V3__CaresDnsResolverConfig;
struct Envoy__Config__Core__V3__TypedExtensionConfig;
struct Envoy__Config__Cluster__V3__Cluster;

/* Same numbers as envoy.config.cluster.v3.Cluster.DnsLookupFamily. */
enum rm_dns_family {
    RM_DNS_AUTO = 0,
    RM_DNS_V4_ONLY = 1,
    RM_DNS_V6_ONLY = 2,
    RM_DNS_V4_PREFERRED = 3,
    RM_DNS_ALL = 4,
};

/** The name Envoy gives the family ("AUTO", "V4_ONLY", ...). */
const char *rm_dns_family_name(enum rm_dns_family f);

/* ---- resolver configuration ---------------------------------------------------------------- */

#define RM_DNS_MAX_RESOLVERS 8

/** What CaresDnsResolverConfig says, as c-ares 1.18 can do it.  A plain value: copy freely. */
struct rm_dns_config {
    struct sockaddr_storage resolvers[RM_DNS_MAX_RESOLVERS]; /* IP literal + port (0 = 53) */
    size_t n_resolvers;              /* 0: the system's nameservers (resolv.conf) */
    bool use_resolvers_as_fallback;  /* use <resolvers> only if the system has none */
    bool use_tcp;                    /* dns_resolver_options.use_tcp_for_dns_lookups */
    bool no_default_search_domain;   /* dns_resolver_options.no_default_search_domain */
    bool filter_unroutable_families; /* drop a family no non-loopback interface has */
    bool rotate_nameservers;
    uint32_t query_timeout_ms;  /* first try, per server (c-ares doubles it per round); 5000 */
    uint32_t query_tries;       /* default 4 */
    uint32_t edns0_max_payload; /* 0: no EDNS0 (c-ares default); else 512..4096 */
    char resolv_conf[128];      /* "" = /etc/resolv.conf (tests point it elsewhere) */
};

/** Envoy's defaults: system nameservers, UDP, search domains, 5 s, 4 tries. */
void rm_dns_config_init(struct rm_dns_config *cfg);

/** Fill <out> (defaults first) from a CaresDnsResolverConfig.  Errors name the field under
 *  <path>: a resolver that is not an IP literal socket_address (or has a named port / resolver
 *  name / too many entries), and what c-ares 1.18 cannot honour: udp_max_queries.  RM_OK/RM_ERR. */
int rm_dns_config_from_pb(
    const struct Envoy__Extensions__Network__DnsResolver__Cares__V3__CaresDnsResolverConfig *pb,
    const char *path, struct rm_dns_config *out, struct rm_error *err);

/** Same from a typed_dns_resolver_config (Bootstrap, Cluster or DnsCluster): its typed_config
 *  must be envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig (other
 *  resolvers — apple, getaddrinfo — are rejected naming "<path>.typed_config"). */
int rm_dns_config_from_typed(const struct Envoy__Config__Core__V3__TypedExtensionConfig *tc,
                             const char *path, struct rm_dns_config *out, struct rm_error *err);

/* ---- the resolver -------------------------------------------------------------------------- */

struct rm_dns_resolver;
struct rm_dns_query;

enum rm_dns_status {
    RM_DNS_OK = 0,      /* resolved; n may be 0 (NXDOMAIN / no record of the family) */
    RM_DNS_FAILED = -1, /* timeout, refused, malformed answer, bad name, ... */
};

struct rm_dns_addr {
    struct sockaddr_storage sa; /* AF_INET or AF_INET6, port 0 */
    socklen_t len;
    uint32_t ttl_s; /* the record's TTL, capped by the TTLs of the CNAMEs leading to it */
};

/** What a callback receives; valid only during the callback (copy what you keep). */
struct rm_dns_answer {
    const char *name; /* as asked */
    enum rm_dns_status status;
    int ares_status;   /* ARES_SUCCESS, ARES_ENOTFOUND, ARES_ENODATA, ARES_ETIMEOUT... */
    const char *error; /* NULL if ARES_SUCCESS, else c-ares's text (static storage) */
    const struct rm_dns_addr *addrs;
    size_t n;
    uint32_t min_ttl_s; /* smallest addrs[i].ttl_s; 0 when n == 0 */
};

/** The callback runs on the loop, never inside rm_dns_resolve.  Inside it the caller may start
 *  queries and cancel other queries; it must not free the resolver (defer that). */
typedef void (*rm_dns_cb)(void *ctx, const struct rm_dns_answer *a);

/** A resolver on <loop> with <cfg> (NULL = rm_dns_config_init defaults; copied).  NULL with
 *  <err> filled when c-ares cannot start (out of memory, unreadable resolv.conf). */
struct rm_dns_resolver *rm_dns_resolver_new(struct rm_loop *loop, const struct rm_dns_config *cfg,
                                            struct rm_error *err);

/** Free <r> (NULL is a no-op).  Pending queries are dropped: their callbacks never run and their
 *  handles become invalid.  Not from inside one of <r>'s callbacks.  Socket watchers are
 *  released by deferred tasks: run the loop (or rm_loop_run_pending) before rm_loop_free. */
void rm_dns_resolver_free(struct rm_dns_resolver *r);

/** Resolve <name> (copied) for <fam>; <cb>(<ctx>, answer) runs exactly once, later, unless the
 *  query is cancelled or the resolver freed first.  Returns the handle, or NULL when out of
 *  memory (no callback then). */
struct rm_dns_query *rm_dns_resolve(struct rm_dns_resolver *r, const char *name,
                                    enum rm_dns_family fam, rm_dns_cb cb, void *ctx);

/** Cancel a query whose callback has not started: the callback never runs.  NULL is a no-op.
 *  (c-ares may still finish the lookup in the background; its result is dropped.) */
void rm_dns_cancel(struct rm_dns_query *q);

/** The nameservers in use, "127.0.0.1:5353,[::1]:53" (port 53 when c-ares says 0), into <buf>;
 *  returns the length (truncated like snprintf). */
size_t rm_dns_resolver_servers(struct rm_dns_resolver *r, char *buf, size_t len);

/* ---- DNS clusters -------------------------------------------------------------------------- */

/** How a STRICT_DNS / LOGICAL_DNS cluster resolves and refreshes.  A plain value. */
struct rm_dns_cluster_cfg {
    uint32_t refresh_rate_ms; /* dns_refresh_rate, default 5000 */
    uint32_t failure_base_ms; /* dns_failure_refresh_rate; 0 = failures retry at refresh rate */
    uint32_t failure_max_ms;  /* default 10 x base */
    bool respect_dns_ttl;
    uint32_t jitter_ms; /* dns_jitter: + [0, jitter) after a success; 0 = none */
    enum rm_dns_family family;
    bool logical;      /* LOGICAL_DNS (all_addresses_in_single_endpoint), else STRICT_DNS */
    bool has_resolver; /* the cluster names its own resolver; else use the bootstrap's */
    struct rm_dns_config resolver;
};

/** True if <pb> is a DNS cluster: type STRICT_DNS / LOGICAL_DNS, or cluster_type named
 *  "envoy.clusters.dns" or carrying a DnsCluster. */
bool rm_dns_cluster_is_dns(const struct Envoy__Config__Cluster__V3__Cluster *pb);

/** Read a DNS cluster's settings, in either form Envoy accepts:
 *   - cluster_type {name: envoy.clusters.dns, typed_config: DnsCluster}: everything comes from
 *     the DnsCluster; Envoy then ignores the deprecated DNS fields of Cluster, and so does this;
 *   - type STRICT_DNS / LOGICAL_DNS with the deprecated Cluster fields dns_refresh_rate,
 *     dns_failure_refresh_rate, respect_dns_ttl, dns_jitter, dns_lookup_family, and the resolver
 *     from typed_dns_resolver_config, else dns_resolution_config, else dns_resolvers +
 *     use_tcp_for_dns_lookups (Envoy's precedence).
 *  Validation as Envoy's: refresh rates > 1 ms, failure max >= base.  Errors name the field
 *  under <path> (e.g. "static_resources.clusters[2]").  RM_OK/RM_ERR. */
int rm_dns_cluster_cfg_from_cluster(const struct Envoy__Config__Cluster__V3__Cluster *pb,
                                    const char *path, struct rm_dns_cluster_cfg *out,
                                    struct rm_error *err);

/** Milliseconds until the next resolution of one DNS name (pure; Envoy's arithmetic).
 *  <failures>: consecutive failed resolutions including the one just finished, 0 if it
 *  succeeded (for LOGICAL_DNS an answer with no address counts as a failure).
 *  Success: refresh_rate_ms, or ttl_s * 1000 when respect_dns_ttl and ttl_s > 0 (STRICT_DNS: the
 *  smallest TTL, LOGICAL_DNS: the first address's), then + rnd % jitter_ms.
 *  Failure n: with failure_base_ms, rnd % min(base * 2^(n-1), max) (full jitter, may be 0);
 *  without, refresh_rate_ms.  <rnd>: a uniformly random 64-bit value. */
uint64_t rm_dns_next_refresh_ms(const struct rm_dns_cluster_cfg *cfg, uint32_t failures,
                                uint32_t ttl_s, uint64_t rnd);

#endif
