/* The c-ares resolver on an rm_loop (see dns.h for the contract).
 *
 * Event integration.  c-ares tells us which sockets it wants watched (ARES_OPT_SOCK_STATE_CB)
 * and when it next needs to run (ares_timeout).  The loop is edge-triggered while c-ares
 * expects level-triggered readiness (on TCP it reads one segment per call), so after each
 * ares_process_fd the socket is polled (poll(2), timeout 0) and processed again while it is
 * still ready, a bounded number of rounds; if still ready after that, the timer is armed at
 * 0 ms and its callback sweeps every socket the same way.  The one timer also drives c-ares's
 * query timeouts.
 *
 * Lifetimes.  A socket watcher removed by c-ares (sock_state_cb(fd, 0, 0), called just before
 * it closes the fd) is stopped at once and freed by a deferred task, because events for it may
 * still be queued in the loop's current batch.  A query lives in the resolver's list from
 * rm_dns_resolve until delivered, cancelled-and-called-back, or dropped by
 * rm_dns_resolver_free.  Answers completed inside rm_dns_resolve (IP literals, /etc/hosts,
 * immediate c-ares errors) are delivered by a deferred task so that callbacks never run inside
 * rm_dns_resolve. */
#include "proxy/upstream/dns.h"

#include <ares.h>
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/core/log.h"
#include "proxy/core/loop.h"

#define RM_DNS_MAX_ROUNDS 16 /* ares_process_fd calls per readiness event */
#define RM_DNS_SWEEP_MAX 32  /* sockets looked at per timer sweep */
#define RM_DNS_NAME_MAX 254  /* 253 + an optional trailing dot */

struct rm_dns_sock {
    struct rm_io io;
    struct rm_dns_resolver *r;
    struct rm_dns_sock *next;
    struct rm_task reap;
};

struct rm_dns_resolver {
    struct rm_loop *loop;
    ares_channel channel;
    struct rm_dns_config cfg;
    struct rm_timer timer;
    struct rm_dns_sock *socks;    /* watched c-ares sockets */
    struct rm_dns_query *queries; /* every live query (doubly linked) */
    unsigned in_flight;           /* ares_getaddrinfo calls not called back yet */
    unsigned depth;               /* > 0 while inside a c-ares call */
    bool dirty;                   /* ECONNREFUSED seen: re-create the channel when idle */
    bool destroying;
};

struct rm_dns_query {
    struct rm_dns_resolver *r; /* NULL once dropped by rm_dns_resolver_free */
    struct rm_dns_query *prev, *next;
    rm_dns_cb cb;
    void *ctx;
    char *name;
    enum rm_dns_family fam;
    int step;        /* which lookup of the family's sequence (dns.h) */
    int ares_status; /* of the last step */
    bool in_ares;    /* an ares_getaddrinfo is outstanding */
    bool in_resolve; /* inside rm_dns_resolve: completion is deferred */
    bool any_ok;     /* a step succeeded (possibly with no records) */
    bool cancelled;
    struct rm_dns_addr *addrs;
    size_t n, cap;
    struct rm_task deliver;
};

/* ---- library ------------------------------------------------------------------------------- */

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;
static int lib_status = ARES_SUCCESS;

static void lib_init(void)
{
    lib_status = ares_library_init(ARES_LIB_INIT_ALL);
}

/* ---- socket watchers ------------------------------------------------------------------------ */

static void update_timer(struct rm_dns_resolver *r, bool kick);
static void on_timer(struct rm_timer *t);

static struct rm_dns_sock **find_sock(struct rm_dns_resolver *r, int fd)
{
    struct rm_dns_sock **pp = &r->socks;
    while (*pp && (*pp)->io.fd != fd)
        pp = &(*pp)->next;
    return pp;
}

static void reap_sock(struct rm_task *t)
{
    free(rm_container_of(t, struct rm_dns_sock, reap));
}

static void remove_sock(struct rm_dns_resolver *r, struct rm_dns_sock **pp)
{
    struct rm_dns_sock *s = *pp;
    *pp = s->next;
    rm_io_stop(r->loop, &s->io);
    rm_loop_defer(r->loop, &s->reap, reap_sock);
}

/* Readiness now, as epoll bits, for the events in <want>. */
static uint32_t poll_ready(int fd, uint32_t want)
{
    struct pollfd p = {.fd = fd};
    p.events = (short)((want & EPOLLIN ? POLLIN : 0) | (want & EPOLLOUT ? POLLOUT : 0));
    if (poll(&p, 1, 0) <= 0 || (p.revents & POLLNVAL)) return 0;
    uint32_t ev = 0;
    ev |= (p.revents & POLLIN) ? EPOLLIN : 0;
    ev |= (p.revents & POLLOUT) ? EPOLLOUT : 0;
    ev |= (p.revents & POLLERR) ? EPOLLERR : 0;
    ev |= (p.revents & POLLHUP) ? EPOLLHUP : 0;
    return ev;
}

/* Let c-ares handle <ev> on <s>, again while the socket stays ready.  Returns true if it is
 * still ready after RM_DNS_MAX_ROUNDS (the caller schedules a sweep). */
static bool process_ready(struct rm_dns_resolver *r, struct rm_dns_sock *s, uint32_t ev)
{
    const uint32_t err_bits = EPOLLERR | EPOLLHUP;
    for (int round = 0; round < RM_DNS_MAX_ROUNDS; round++) {
        int fd = s->io.fd;
        bool rd = (s->io.events & EPOLLIN) && (ev & (EPOLLIN | err_bits));
        bool wr = (s->io.events & EPOLLOUT) && (ev & (EPOLLOUT | err_bits));
        if (!rd && !wr) return false;
        r->depth++;
        ares_process_fd(r->channel, rd ? fd : ARES_SOCKET_BAD, wr ? fd : ARES_SOCKET_BAD);
        r->depth--;
        if (s->io.fd != fd) /* c-ares closed it */
            return false;
        ev = poll_ready(fd, s->io.events);
        if (!ev) return false;
    }
    return true;
}

static void on_sock_ready(struct rm_io *io, uint32_t events)
{
    struct rm_dns_sock *s = rm_container_of(io, struct rm_dns_sock, io);
    struct rm_dns_resolver *r = s->r;
    bool more = process_ready(r, s, events);
    update_timer(r, more);
}

/* ARES_OPT_SOCK_STATE_CB: watch <fd> for what c-ares wants; (0, 0) means it is closing it. */
static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct rm_dns_resolver *r = data;
    struct rm_dns_sock **pp = find_sock(r, fd);
    uint32_t ev = (readable ? EPOLLIN : 0) | (writable ? EPOLLOUT : 0);
    if (!ev) {
        if (*pp) remove_sock(r, pp);
        return;
    }
    if (*pp) {
        int rc = rm_io_modify(r->loop, &(*pp)->io, ev);
        if (rc < 0) rm_log_warn("dns: cannot watch c-ares socket %d: %s", fd, strerror(-rc));
        return;
    }
    struct rm_dns_sock *s = calloc(1, sizeof(*s));
    if (!s) abort(); /* out of memory on the main thread: nothing sensible to do */
    s->r = r;
    int rc = rm_io_start(r->loop, &s->io, fd, ev, on_sock_ready);
    if (rc < 0) {
        rm_log_warn("dns: cannot watch c-ares socket %d: %s (its queries will time out)", fd,
                    strerror(-rc));
        free(s);
        return;
    }
    s->next = r->socks;
    r->socks = s;
}

/* Process every socket that is ready now (recovers anything an edge left behind). */
static bool sweep(struct rm_dns_resolver *r)
{
    int fds[RM_DNS_SWEEP_MAX];
    size_t n = 0;
    for (struct rm_dns_sock *s = r->socks; s && n < RM_DNS_SWEEP_MAX; s = s->next)
        fds[n++] = s->io.fd;
    bool more = false;
    for (size_t i = 0; i < n; i++) {
        struct rm_dns_sock *s = *find_sock(r, fds[i]);
        uint32_t ev = s ? poll_ready(fds[i], s->io.events) : 0;
        if (ev) more |= process_ready(r, s, ev);
    }
    return more;
}

/* ---- timer ------------------------------------------------------------------------------- */

/* Arm the timer for c-ares's next deadline (rounded up to the ms), now if <kick>, or stop it. */
static void update_timer(struct rm_dns_resolver *r, bool kick)
{
    struct timeval tv;
    if (kick) {
        rm_timer_start(r->loop, &r->timer, 0, on_timer);
        return;
    }
    if (!ares_timeout(r->channel, NULL, &tv)) {
        rm_timer_stop(r->loop, &r->timer);
        return;
    }
    uint64_t ms = (uint64_t)tv.tv_sec * 1000u + ((uint64_t)tv.tv_usec + 999u) / 1000u;
    rm_timer_start(r->loop, &r->timer, ms, on_timer);
}

static void on_timer(struct rm_timer *t)
{
    struct rm_dns_resolver *r = rm_container_of(t, struct rm_dns_resolver, timer);
    bool more = sweep(r);
    r->depth++;
    ares_process_fd(r->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD); /* timeouts */
    r->depth--;
    update_timer(r, more);
}

/* ---- channel ------------------------------------------------------------------------------- */

/* True if c-ares found no nameserver of its own (it then uses 127.0.0.1 with port 0). */
static bool only_default_server(ares_channel ch)
{
    struct ares_addr_port_node *servers = NULL;
    if (ares_get_servers_ports(ch, &servers) != ARES_SUCCESS) return false;
    bool only = !servers || (!servers->next && servers->family == AF_INET &&
                             servers->addr.addr4.s_addr == htonl(INADDR_LOOPBACK) &&
                             servers->udp_port == 0 && servers->tcp_port == 0);
    ares_free_data(servers);
    return only;
}

static int set_servers(ares_channel ch, const struct rm_dns_config *cfg)
{
    struct ares_addr_port_node nodes[RM_DNS_MAX_RESOLVERS];
    memset(nodes, 0, sizeof(nodes));
    for (size_t i = 0; i < cfg->n_resolvers; i++) {
        const struct sockaddr_storage *ss = &cfg->resolvers[i];
        struct ares_addr_port_node *nd = &nodes[i];
        nd->next = i + 1 < cfg->n_resolvers ? &nodes[i + 1] : NULL;
        nd->family = ss->ss_family;
        if (ss->ss_family == AF_INET) {
            const struct sockaddr_in *v4 = (const struct sockaddr_in *)ss;
            nd->addr.addr4 = v4->sin_addr;
            nd->udp_port = nd->tcp_port = ntohs(v4->sin_port);
        } else {
            const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)ss;
            memcpy(&nd->addr.addr6, &v6->sin6_addr, sizeof(v6->sin6_addr));
            nd->udp_port = nd->tcp_port = ntohs(v6->sin6_port);
        }
    }
    return ares_set_servers_ports(ch, nodes);
}

static int channel_init(struct rm_dns_resolver *r, ares_channel *out, struct rm_error *err)
{
    const struct rm_dns_config *cfg = &r->cfg;
    struct ares_options o;
    memset(&o, 0, sizeof(o));
    int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES;
    o.sock_state_cb = on_sock_state;
    o.sock_state_cb_data = r;
    o.timeout = (int)cfg->query_timeout_ms;
    o.tries = (int)cfg->query_tries;
    o.flags = (cfg->use_tcp ? ARES_FLAG_USEVC : 0) |
              (cfg->no_default_search_domain ? ARES_FLAG_NOSEARCH : 0) |
              (cfg->edns0_max_payload ? ARES_FLAG_EDNS : 0);
    if (o.flags) mask |= ARES_OPT_FLAGS;
    if (cfg->edns0_max_payload) {
        mask |= ARES_OPT_EDNSPSZ;
        o.ednspsz = (int)cfg->edns0_max_payload;
    }
    mask |= cfg->rotate_nameservers ? ARES_OPT_ROTATE : ARES_OPT_NOROTATE;
    if (cfg->resolv_conf[0]) {
        mask |= ARES_OPT_RESOLVCONF;
        o.resolvconf_path = (char *)cfg->resolv_conf;
    }
    int rc = ares_init_options(out, &o, mask);
    if (rc != ARES_SUCCESS)
        return rm_error_set(err, "DNS resolver: c-ares cannot start: %s", ares_strerror(rc));
    if (cfg->n_resolvers && (!cfg->use_resolvers_as_fallback || only_default_server(*out))) {
        rc = set_servers(*out, cfg);
        if (rc != ARES_SUCCESS) {
            ares_destroy(*out);
            return rm_error_set(err, "DNS resolver: c-ares rejects the resolvers: %s",
                                ares_strerror(rc));
        }
    }
    return RM_OK;
}

/* After ECONNREFUSED c-ares's channel may stay broken (Envoy re-creates it too: envoy#4543,
 * c-ares#301); do it when no lookup is outstanding and we are not inside c-ares. */
static void channel_refresh(struct rm_dns_resolver *r)
{
    ares_channel ch;
    struct rm_error err;
    if (channel_init(r, &ch, &err) != RM_OK) {
        rm_log_warn("%s (keeping the old channel)", err.msg);
        return;
    }
    r->depth++;
    ares_destroy(r->channel);
    r->depth--;
    r->channel = ch;
    r->dirty = false;
}

struct rm_dns_resolver *rm_dns_resolver_new(struct rm_loop *loop, const struct rm_dns_config *cfg,
                                            struct rm_error *err)
{
    pthread_once(&lib_once, lib_init);
    if (lib_status != ARES_SUCCESS) {
        rm_error_set(err, "DNS resolver: c-ares: %s", ares_strerror(lib_status));
        return NULL;
    }
    struct rm_dns_resolver *r = calloc(1, sizeof(*r));
    if (!r) {
        rm_error_set(err, "DNS resolver: out of memory");
        return NULL;
    }
    r->loop = loop;
    if (cfg)
        r->cfg = *cfg;
    else
        rm_dns_config_init(&r->cfg);
    if (channel_init(r, &r->channel, err) != RM_OK) {
        free(r);
        return NULL;
    }
    return r;
}

/* ---- queries ------------------------------------------------------------------------------- */

static void query_link(struct rm_dns_resolver *r, struct rm_dns_query *q)
{
    q->next = r->queries;
    if (r->queries) r->queries->prev = q;
    r->queries = q;
}

static void query_unlink(struct rm_dns_query *q)
{
    if (q->prev)
        q->prev->next = q->next;
    else
        q->r->queries = q->next;
    if (q->next) q->next->prev = q->prev;
    q->prev = q->next = NULL;
}

static void query_free(struct rm_dns_query *q)
{
    free(q->addrs);
    free(q->name);
    free(q);
}

static void query_add(struct rm_dns_query *q, const struct sockaddr *sa, socklen_t len, int ttl)
{
    if (q->n == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 4;
        struct rm_dns_addr *a = realloc(q->addrs, cap * sizeof(*a));
        if (!a) abort(); /* out of memory on the main thread */
        q->addrs = a;
        q->cap = cap;
    }
    struct rm_dns_addr *a = &q->addrs[q->n++];
    memset(a, 0, sizeof(*a));
    memcpy(&a->sa, sa, len);
    a->len = len;
    a->ttl_s = ttl > 0 ? (uint32_t)ttl : 0;
    if (sa->sa_family == AF_INET)
        ((struct sockaddr_in *)&a->sa)->sin_port = 0;
    else
        ((struct sockaddr_in6 *)&a->sa)->sin6_port = 0;
}

/* The address family of lookup <step> for <fam>, or -1 after the last one. */
static int step_family(enum rm_dns_family fam, int step)
{
    static const int seq[][2] = {
        [RM_DNS_AUTO] = {AF_INET6, AF_INET}, [RM_DNS_V4_ONLY] = {AF_INET, -1},
        [RM_DNS_V6_ONLY] = {AF_INET6, -1},   [RM_DNS_V4_PREFERRED] = {AF_INET, AF_INET6},
        [RM_DNS_ALL] = {AF_UNSPEC, -1},
    };
    return step >= 0 && step < 2 && (unsigned)fam <= RM_DNS_ALL ? seq[fam][step] : -1;
}

/* Does a non-loopback interface have an address of <af>?  (filter_unroutable_families; like
 * Envoy, assume yes when the interfaces cannot be listed.) */
static bool family_routable(int af)
{
    struct ifaddrs *list;
    if (getifaddrs(&list) != 0) return true;
    bool found = false;
    for (struct ifaddrs *i = list; i && !found; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != af) continue;
        if (af == AF_INET)
            found = (ntohl(((struct sockaddr_in *)i->ifa_addr)->sin_addr.s_addr) >> 24) != 127;
        else
            found = !IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr);
    }
    freeifaddrs(list);
    return found;
}

static void query_collect(struct rm_dns_query *q, const struct ares_addrinfo *ai)
{
    int cname_ttl = INT_MAX;
    for (const struct ares_addrinfo_cname *c = ai->cnames; c; c = c->next)
        cname_ttl = c->ttl < cname_ttl ? c->ttl : cname_ttl;
    bool v4 = true, v6 = true;
    if (q->r->cfg.filter_unroutable_families) {
        v4 = family_routable(AF_INET);
        v6 = family_routable(AF_INET6);
    }
    for (const struct ares_addrinfo_node *nd = ai->nodes; nd; nd = nd->ai_next) {
        int ttl = nd->ai_ttl < cname_ttl ? nd->ai_ttl : cname_ttl;
        if (nd->ai_family == AF_INET && v4 && nd->ai_addrlen >= sizeof(struct sockaddr_in))
            query_add(q, nd->ai_addr, sizeof(struct sockaddr_in), ttl);
        else if (nd->ai_family == AF_INET6 && v6 && nd->ai_addrlen >= sizeof(struct sockaddr_in6))
            query_add(q, nd->ai_addr, sizeof(struct sockaddr_in6), ttl);
    }
}

static void query_fill_answer(const struct rm_dns_query *q, struct rm_dns_answer *a)
{
    memset(a, 0, sizeof(*a));
    a->name = q->name;
    a->status = (q->n > 0 || q->any_ok) ? RM_DNS_OK : RM_DNS_FAILED;
    a->ares_status = q->ares_status;
    a->error = q->ares_status == ARES_SUCCESS ? NULL : ares_strerror(q->ares_status);
    a->addrs = q->addrs;
    a->n = q->n;
    for (size_t i = 0; i < q->n; i++)
        if (i == 0 || q->addrs[i].ttl_s < a->min_ttl_s) a->min_ttl_s = q->addrs[i].ttl_s;
}

/* Hand the answer to the user (unless cancelled or dropped) and free the query. */
static void query_deliver(struct rm_dns_query *q)
{
    if (q->r) query_unlink(q);
    if (q->r && !q->cancelled) {
        struct rm_dns_answer a;
        query_fill_answer(q, &a);
        if (a.status != RM_DNS_OK)
            rm_log_debug("dns: %s (%s): %s", q->name, rm_dns_family_name(q->fam), a.error);
        q->cb(q->ctx, &a);
    }
    query_free(q);
}

static void on_deliver(struct rm_task *t)
{
    query_deliver(rm_container_of(t, struct rm_dns_query, deliver));
}

static void query_finish(struct rm_dns_query *q)
{
    if (q->n > 0) q->ares_status = ARES_SUCCESS;
    if (q->in_resolve)
        rm_loop_defer(q->r->loop, &q->deliver, on_deliver);
    else
        query_deliver(q);
}

static void query_start_step(struct rm_dns_query *q);

/* One lookup step ended with <status> (<ai> is freed here): next step, or finish. */
static void query_step_done(struct rm_dns_query *q, int status, struct ares_addrinfo *ai)
{
    if (status == ARES_SUCCESS && ai) query_collect(q, ai);
    if (ai) ares_freeaddrinfo(ai);
    if (status == ARES_SUCCESS || status == ARES_ENODATA || status == ARES_ENOTFOUND)
        q->any_ok = true;
    if (status == ARES_ECONNREFUSED) q->r->dirty = true;
    q->ares_status = status;
    if (q->n == 0 && step_family(q->fam, q->step + 1) != -1) {
        q->step++;
        query_start_step(q); /* may complete, and free q, before returning */
        return;
    }
    query_finish(q);
}

static void on_addrinfo(void *arg, int status, int timeouts, struct ares_addrinfo *ai)
{
    struct rm_dns_query *q = arg;
    struct rm_dns_resolver *r = q->r;
    q->in_ares = false;
    r->in_flight--;
    if (timeouts > 0) rm_log_debug("dns: %s: %d timeout(s)", q->name, timeouts);
    if (r->destroying || q->cancelled) {
        if (ai) ares_freeaddrinfo(ai);
        query_unlink(q);
        query_free(q);
        return;
    }
    query_step_done(q, status, ai);
}

static void query_start_step(struct rm_dns_query *q)
{
    struct rm_dns_resolver *r = q->r;
    int af = step_family(q->fam, q->step);
    if (r->cfg.filter_unroutable_families && af != AF_UNSPEC && !family_routable(af)) {
        query_step_done(q, ARES_EBADFAMILY, NULL);
        return;
    }
    struct ares_addrinfo_hints hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = af;
    hints.ai_flags = ARES_AI_NOSORT;
    q->in_ares = true;
    r->in_flight++;
    r->depth++;
    ares_getaddrinfo(r->channel, q->name, NULL, &hints, on_addrinfo, q);
    r->depth--;
}

/* An IP literal is its own answer (no lookup); true if <q->name> is one. */
static bool query_literal(struct rm_dns_query *q)
{
    struct sockaddr_in v4 = {.sin_family = AF_INET};
    struct sockaddr_in6 v6 = {.sin6_family = AF_INET6};
    bool is4 = inet_pton(AF_INET, q->name, &v4.sin_addr) == 1;
    bool is6 = !is4 && inet_pton(AF_INET6, q->name, &v6.sin6_addr) == 1;
    if (!is4 && !is6) return false;
    if ((is4 && q->fam == RM_DNS_V6_ONLY) || (is6 && q->fam == RM_DNS_V4_ONLY)) {
        q->ares_status = ARES_EBADFAMILY;
        return true;
    }
    if (is4)
        query_add(q, (struct sockaddr *)&v4, sizeof(v4), 0);
    else
        query_add(q, (struct sockaddr *)&v6, sizeof(v6), 0);
    q->any_ok = true;
    q->ares_status = ARES_SUCCESS;
    return true;
}

struct rm_dns_query *rm_dns_resolve(struct rm_dns_resolver *r, const char *name,
                                    enum rm_dns_family fam, rm_dns_cb cb, void *ctx)
{
    if (r->dirty && r->in_flight == 0 && r->depth == 0) channel_refresh(r);
    struct rm_dns_query *q = calloc(1, sizeof(*q));
    if (!q) return NULL;
    q->name = strdup(name ? name : "");
    if (!q->name) {
        free(q);
        return NULL;
    }
    q->r = r;
    q->cb = cb;
    q->ctx = ctx;
    q->fam = (unsigned)fam <= RM_DNS_ALL ? fam : RM_DNS_AUTO;
    query_link(r, q);
    q->in_resolve = true;
    size_t len = strlen(q->name);
    if (query_literal(q)) {
        query_finish(q);
    } else if (len == 0 || len > RM_DNS_NAME_MAX) {
        q->ares_status = ARES_EBADNAME;
        query_finish(q);
    } else {
        query_start_step(q);
    }
    q->in_resolve = false; /* q is alive: completion inside was deferred */
    update_timer(r, false);
    return q;
}

void rm_dns_cancel(struct rm_dns_query *q)
{
    if (q) q->cancelled = true; /* freed by on_addrinfo or on_deliver, whichever comes */
}

void rm_dns_resolver_free(struct rm_dns_resolver *r)
{
    if (!r) return;
    rm_timer_stop(r->loop, &r->timer);
    /* Answers waiting for their deferred delivery: drop them (the task frees them). */
    for (struct rm_dns_query *q = r->queries, *next; q; q = next) {
        next = q->next;
        if (!q->in_ares) {
            query_unlink(q);
            q->r = NULL;
        }
    }
    /* The rest are inside c-ares: ares_destroy calls them back (ARES_EDESTRUCTION) and closes
     * its sockets (on_sock_state(fd, 0, 0)). */
    r->destroying = true;
    r->depth++;
    ares_destroy(r->channel);
    while (r->socks)
        remove_sock(r, &r->socks);
    free(r);
}

size_t rm_dns_resolver_servers(struct rm_dns_resolver *r, char *buf, size_t len)
{
    struct ares_addr_port_node *servers = NULL;
    size_t off = 0;
    if (len) buf[0] = '\0';
    if (ares_get_servers_ports(r->channel, &servers) != ARES_SUCCESS) return 0;
    for (struct ares_addr_port_node *s = servers; s; s = s->next) {
        char ip[INET6_ADDRSTRLEN] = "?";
        inet_ntop(s->family, &s->addr, ip, sizeof(ip));
        int port = s->udp_port ? s->udp_port : 53;
        int n = snprintf(buf + (off < len ? off : len), off < len ? len - off : 0,
                         s->family == AF_INET6 ? "%s[%s]:%d" : "%s%s:%d", off ? "," : "", ip, port);
        off += n > 0 ? (size_t)n : 0;
    }
    ares_free_data(servers);
    return off;
}
