/* Hosts and host sets: a cluster's membership, shared by reference between the main thread
 * (which builds it: from the config, or from DNS answers) and the workers (which balance over
 * it and keep one connection pool per host).
 *
 * struct rm_host is immutable after rm_host_new except its counters and outlier state (atomics).
 * It is refcounted: every host set that lists it and every worker pool of it holds a reference;
 * the last rm_host_unref frees it, on whichever thread.
 *
 * struct rm_host_set is an immutable, refcounted array of hosts.  The cluster (main thread)
 * holds its current set; each worker holds its own reference to the set it balances over.  A
 * membership update builds a new set on the main thread with rm_host_set_diff, reusing the
 * rm_host objects of addresses that stay (so their stats, outlier state and pools carry over),
 * and hands it to the workers (proxy/server/worker.h: rm_worker_publish_hosts). */
#ifndef RM_UPSTREAM_HOST_H
#define RM_UPSTREAM_HOST_H

#include <netinet/in.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "proxy/upstream/outlier.h"

enum rm_health {
    RM_HEALTH_UNKNOWN = 0, /* routable */
    RM_HEALTH_HEALTHY = 1,
    RM_HEALTH_UNHEALTHY = 2,
    RM_HEALTH_DRAINING = 3,
    RM_HEALTH_TIMEOUT = 4,
    RM_HEALTH_DEGRADED = 5,
};

/** An upstream host's socket address: IPv4 or IPv6 in place (28 bytes, where a
 *  sockaddr_storage takes 128); a unix socket (a load assignment's pipe) only says AF_UNIX and
 *  where its sockaddr_un is kept, out of line, in the host's allocation: read a host's address
 *  with rm_host_sockaddr. */
union rm_host_addr {
    struct sockaddr sa;
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
    struct {
        sa_family_t family; /* AF_UNIX */
        uint16_t off;       /* of the struct sockaddr_un from the start of the host */
    } un;
};

/* A mesh has hosts by the hundred thousand: the layout is kept tight (136 bytes and the
 * strings, in one allocation, which malloc rounds to 160 for an IPv4 or IPv6 address; the outlier
 * detector's and the health checker's data out of line).  Hosts are made by
 * rm_host_new only: addr_str is a flexible array member. */
struct rm_host {
    _Atomic unsigned refs;
    uint32_t weight; /* ≥ 1 */
    union rm_host_addr addr;
    uint8_t addr_len;     /* of the full sockaddr (rm_host_sockaddr) */
    uint8_t health;       /* enum rm_health */
    _Atomic uint8_t hc;   /* RM_HOST_*_ACTIVE_HC: written by the cluster's health checker (main
                             thread), read by the load balancers */
    int16_t locality_idx; /* index in the cluster's load_assignment.endpoints; -1 if unknown
                             (or past INT16_MAX) */
    const char *hostname; /* Endpoint.hostname, or the DNS name of a DNS cluster's host; or NULL
                             (stored after addr_str) */
    /* shared counters, shown by /clusters */
    _Atomic int64_t rq_active, rq_total, rq_error, rq_success, rq_timeout;
    _Atomic int64_t cx_active, cx_total, cx_connect_fail;
    struct rm_outlier_host outlier; /* no detector data without outlier_detection */
    char addr_str[]; /* "127.0.0.1:8080" / "[::1]:8080" / "/path" or "@name" (a pipe) */
};

/** <h>'s socket address, *len its length (NULL: not wanted). */
static inline const struct sockaddr *rm_host_sockaddr(const struct rm_host *h, socklen_t *len)
{
    if (len) *len = h->addr_len;
    if (h->addr.sa.sa_family == AF_UNIX)
        return (const struct sockaddr *)(const void *)((const char *)h + h->addr.un.off);
    return &h->addr.sa;
}

/** The locality index a host keeps for <idx> (-1 past what it can hold). */
static inline int16_t rm_host_locality(int idx)
{
    return idx >= 0 && idx <= INT16_MAX ? (int16_t)idx : -1;
}

/* Active health checking's flags (Envoy's Host::HealthFlag), in struct rm_host.hc. */
enum {
    RM_HOST_FAILED_ACTIVE_HC = 1u << 0,  /* failed its checks, or not checked yet: unhealthy */
    RM_HOST_PENDING_ACTIVE_HC = 1u << 1, /* ignore_new_hosts_until_first_hc: excluded */
    RM_HOST_ACTIVE_HC_TIMEOUT = 1u << 2, /* failed, and its last check timed out */
};

static inline unsigned rm_host_hc_flags(const struct rm_host *h)
{
    return atomic_load_explicit(&h->hc, memory_order_relaxed);
}

/** Whether <h>'s health allows load balancing, outlier detection aside: its EDS/static health
 *  and its active health checks (FAILED_ACTIVE_HC is unhealthy). */
static inline bool rm_host_health_ok(const struct rm_host *h)
{
    return (h->health == RM_HEALTH_UNKNOWN || h->health == RM_HEALTH_HEALTHY ||
            h->health == RM_HEALTH_DEGRADED) &&
           !(rm_host_hc_flags(h) & RM_HOST_FAILED_ACTIVE_HC);
}

/** Whether the load balancers may pick <h> outside panic mode: its health allows it
 *  (rm_host_health_ok) and outlier detection has not ejected it (Envoy: FAILED_OUTLIER_CHECK is
 *  unhealthy). */
static inline bool rm_host_routable(const struct rm_host *h)
{
    return rm_host_health_ok(h) && !rm_outlier_ejected(&h->outlier);
}

/** Whether <h> is left out of load balancing altogether, panic mode included, and out of the
 *  panic computation (Envoy's excluded hosts: PENDING_ACTIVE_HC). */
static inline bool rm_host_excluded(const struct rm_host *h)
{
    return rm_host_hc_flags(h) & RM_HOST_PENDING_ACTIVE_HC;
}

/** What a host is made of (a plain value; rm_host_new copies it). */
struct rm_host_spec {
    struct sockaddr_storage addr; /* with the port; AF_INET or AF_INET6; or AF_UNIX */
    socklen_t addr_len;
    const char *hostname; /* NULL or "" = none */
    uint32_t weight;      /* ≥ 1 */
    enum rm_health health;
    int locality_idx; /* -1: unknown */
};

/** A new host with one reference (the caller's): <s>'s address (IPv4, IPv6 or a unix socket;
 *  anything else is a caller bug and gives NULL), its strings copied.  NULL when out of
 *  memory. */
struct rm_host *rm_host_new(const struct rm_host_spec *s);
/** Take a reference (any thread).  Returns <h>. */
struct rm_host *rm_host_ref(struct rm_host *h);
/** Drop a reference (any thread); the last one frees the host.  NULL is a no-op. */
void rm_host_unref(struct rm_host *h);

/** Room for any rm_sockaddr_str (a pipe's path takes up to 108 bytes). */
#define RM_SOCKADDR_STRLEN 112

/** Format "ip:port" for a sockaddr; a unix socket as Envoy names a pipe: its path, or "@name"
 *  for an abstract one (names with a NUL inside are not made by remora). */
void rm_sockaddr_str(const struct sockaddr *sa, char *buf, size_t len);
/** Order of socket addresses (family, address, port): 0 when they are the same endpoint.  Only
 *  the family's own fields are read (an IP host's union rm_host_addr is as good as a
 *  sockaddr_storage; a pipe's is not: use rm_host_sockaddr).  Unix sockets compare by the
 *  whole sun_path (remora zero-fills it). */
int rm_sockaddr_cmp(const struct sockaddr *a, const struct sockaddr *b);

/* ---- host sets --------------------------------------------------------------------------- */

struct rm_host_set {
    _Atomic unsigned refs;
    size_t n;
    uint64_t total_weight;
    bool weighted; /* the weights differ: smooth weighted round robin */
    /* LOGICAL_DNS: the one host is the cluster's logical host, and new connections go to the
     * first address of the latest answer, not to hosts[0]->addr (Envoy's LogicalHost).  The
     * address is stored after hosts[] (only such sets pay for it). */
    bool has_logical;
    struct rm_host_logical *logical; /* set with has_logical, else NULL */
    struct rm_host *hosts[];
};

/** Where a LOGICAL_DNS set's new connections go. */
struct rm_host_logical {
    union rm_host_addr addr;
    uint8_t len;
    char str[64]; /* "ip:port" */
};

/** A set of <n> hosts in this order, each taking a new reference.  One reference (the
 *  caller's).  NULL when out of memory. */
struct rm_host_set *rm_host_set_new(struct rm_host *const *hosts, size_t n);
/** Take a reference (any thread).  Returns <hs>. */
struct rm_host_set *rm_host_set_ref(struct rm_host_set *hs);
/** Drop a reference (any thread); the last one frees the set and drops its host references.
 *  NULL is a no-op. */
void rm_host_set_unref(struct rm_host_set *hs);

/** Where a new connection to <h>, a host of <hs>, goes (the logical address for LOGICAL_DNS). */
static inline const struct sockaddr *
rm_host_set_connect_addr(const struct rm_host_set *hs, const struct rm_host *h, socklen_t *len)
{
    if (hs && hs->has_logical && hs->n == 1 && hs->hosts[0] == h) {
        *len = hs->logical->len;
        return &hs->logical->addr.sa;
    }
    return rm_host_sockaddr(h, len);
}

enum rm_host_set_diff_result {
    RM_HOST_SET_SAME = 0,    /* the same membership (maybe in another order): nothing to do */
    RM_HOST_SET_CHANGED = 1, /* *out is a new set */
};

/** The set for the wanted membership <want>[0..n) against the current set <cur> (NULL = empty).
 *  Duplicate addresses in <want> are dropped (the first one wins).  A host of <cur> with the
 *  same address, weight, hostname, health and locality is reused (same object: its stats,
 *  outlier state and pools carry over); the others are new.  Returns RM_HOST_SET_SAME when the
 *  membership equals <cur>'s whatever the order (*out = NULL), RM_HOST_SET_CHANGED with *out a
 *  new set in <want>'s order (one reference, the caller's), or RM_ERR when out of memory.
 *  O((n + cur->n) log n).  Any thread (in remora, the main thread). */
int rm_host_set_diff(const struct rm_host_set *cur, const struct rm_host_spec *want, size_t n,
                     struct rm_host_set **out);

/** What <hs>'s hosts are made of, in order: a malloc'd array of hs->n specs (free() it;
 *  hostnames point into the hosts, valid while <hs> lives).  <hs> NULL or empty: an empty
 *  array.  Aborts when out of memory.  How a new version of an EDS cluster gets the hosts of
 *  the assignment its service last had without keeping the assignment. */
struct rm_host_spec *rm_host_set_specs(const struct rm_host_set *hs);

/** LOGICAL_DNS: the set whose one logical host connects to <want>'s address.  The logical host
 *  of <cur> is kept when there is one (its pools keep their connections; only new connections
 *  go to the new address); the first answer creates it from <want>.  Returns RM_HOST_SET_SAME
 *  when <cur> already connects to that address, RM_HOST_SET_CHANGED with *out, or RM_ERR. */
int rm_host_set_logical(const struct rm_host_set *cur, const struct rm_host_spec *want,
                        struct rm_host_set **out);

#endif
