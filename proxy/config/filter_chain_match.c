#include "proxy/config/filter_chain_match.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proxy/config/pbtypes.h"

typedef Envoy__Config__Listener__V3__FilterChainMatch FilterChainMatch;
typedef Envoy__Config__Core__V3__CidrRange CidrRange;

#define PATH_LEN 600
#define EXACT_NAME 100000 /* the score of an exact server name (over any wildcard's length) */

struct cidr {
    int family;
    unsigned len;
    uint8_t addr[16]; /* masked to <len> bits */
};

struct cidrs {
    struct cidr *v;
    size_t n;
};

struct strs {
    char **v; /* server names: lowercase, "*.x.com" kept as ".x.com" */
    size_t n;
};

/* One chain's match.  Empty sets and 0 / NULL values match anything. */
struct entry {
    unsigned dst_port;
    struct cidrs dst, direct_src, src;
    struct strs names, alpn;
    char *transport;
    int source_type; /* FilterChainMatch.ConnectionSourceType */
    unsigned *src_ports;
    size_t n_src_ports;
};

struct rm_fcm {
    struct entry *v;
    size_t n;
    bool needs_data;
    bool needs_local; /* some chain matches on the destination or the source type */
};

/* ---- building ---------------------------------------------------------------------------- */

static void mask(struct cidr *c)
{
    unsigned bytes = c->family == AF_INET ? 4 : 16;
    for (unsigned i = 0; i < bytes; i++) {
        unsigned keep = c->len > i * 8 ? c->len - i * 8 : 0;
        if (keep < 8) c->addr[i] &= (uint8_t)(0xff00u >> keep);
    }
}

static int cidrs_new(CidrRange *const *v, size_t n, const char *path, struct cidrs *out,
                     struct rm_error *err)
{
    if (!n) return RM_OK;
    out->v = calloc(n, sizeof(*out->v));
    if (!out->v) return rm_error_set(err, "out of memory");
    for (size_t i = 0; i < n; i++) {
        struct cidr *c = &out->v[out->n++];
        char p[PATH_LEN];
        snprintf(p, sizeof(p), "%s[%zu]", path, i);
        if (rm_pb_check_no_unknown(&v[i]->base, p, err)) return RM_ERR;
        const char *a = v[i]->address_prefix ? v[i]->address_prefix : "";
        if (inet_pton(AF_INET, a, c->addr) == 1)
            c->family = AF_INET;
        else if (inet_pton(AF_INET6, a, c->addr) == 1)
            c->family = AF_INET6;
        else
            return rm_error_set(err, "%s.address_prefix: not an IP address: \"%s\"", p, a);
        unsigned max = c->family == AF_INET ? 32 : 128;
        c->len = v[i]->prefix_len ? v[i]->prefix_len->value : 0;
        if (c->len > max) return rm_error_set(err, "%s.prefix_len: %u is over %u", p, c->len, max);
        mask(c);
    }
    return RM_OK;
}

static int strs_new(char *const *v, size_t n, bool names, const char *path, struct strs *out,
                    struct rm_error *err)
{
    if (!n) return RM_OK;
    out->v = calloc(n, sizeof(*out->v));
    if (!out->v) return rm_error_set(err, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const char *s = v[i] ? v[i] : "";
        if (!s[0]) return rm_error_set(err, "%s[%zu]: must not be empty", path, i);
        if (names && strchr(s + (s[0] == '*'), '*'))
            return rm_error_set(err, "%s[%zu]: partial wildcards are not supported: \"%s\"", path,
                                i, s);
        if (names && s[0] == '*' && s[1] != '.')
            return rm_error_set(err, "%s[%zu]: partial wildcards are not supported: \"%s\"", path,
                                i, s);
        char *c = strdup(names && s[0] == '*' ? s + 1 : s);
        if (!c) return rm_error_set(err, "out of memory");
        if (names)
            for (char *p = c; *p; p++)
                if (*p >= 'A' && *p <= 'Z') *p = (char)(*p - 'A' + 'a');
        out->v[out->n++] = c;
    }
    return RM_OK;
}

static int entry_new(const FilterChainMatch *pb, const char *path, struct entry *e,
                     struct rm_error *err)
{
    char p[PATH_LEN];
    if (!pb) return RM_OK;
    if (rm_pb_check_no_unknown(&pb->base, path, err)) return RM_ERR;
    if (pb->address_suffix && pb->address_suffix[0])
        return rm_error_set(err, "%s.address_suffix: not supported by remora (nor by Envoy)", path);
    if (pb->suffix_len)
        return rm_error_set(err, "%s.suffix_len: not supported by remora (nor by Envoy)", path);
    if (pb->destination_port) {
        e->dst_port = pb->destination_port->value;
        if (e->dst_port < 1 || e->dst_port > 65535)
            return rm_error_set(err, "%s.destination_port: %u is not a port", path, e->dst_port);
    }
    if ((int)pb->source_type < 0 || pb->source_type > 2)
        return rm_error_set(err, "%s.source_type: unknown value %d", path, (int)pb->source_type);
    e->source_type = (int)pb->source_type;
    if (pb->n_source_ports) {
        e->src_ports = calloc(pb->n_source_ports, sizeof(*e->src_ports));
        if (!e->src_ports) return rm_error_set(err, "out of memory");
    }
    for (size_t i = 0; i < pb->n_source_ports; i++) {
        if (pb->source_ports[i] < 1 || pb->source_ports[i] > 65535)
            return rm_error_set(err, "%s.source_ports[%zu]: %u is not a port", path, i,
                                pb->source_ports[i]);
        e->src_ports[e->n_src_ports++] = pb->source_ports[i];
    }
    if (pb->transport_protocol && pb->transport_protocol[0]) {
        e->transport = strdup(pb->transport_protocol);
        if (!e->transport) return rm_error_set(err, "out of memory");
    }
    snprintf(p, sizeof(p), "%s.prefix_ranges", path);
    if (cidrs_new(pb->prefix_ranges, pb->n_prefix_ranges, p, &e->dst, err)) return RM_ERR;
    snprintf(p, sizeof(p), "%s.direct_source_prefix_ranges", path);
    if (cidrs_new(pb->direct_source_prefix_ranges, pb->n_direct_source_prefix_ranges, p,
                  &e->direct_src, err))
        return RM_ERR;
    snprintf(p, sizeof(p), "%s.source_prefix_ranges", path);
    if (cidrs_new(pb->source_prefix_ranges, pb->n_source_prefix_ranges, p, &e->src, err))
        return RM_ERR;
    snprintf(p, sizeof(p), "%s.server_names", path);
    if (strs_new(pb->server_names, pb->n_server_names, true, p, &e->names, err)) return RM_ERR;
    snprintf(p, sizeof(p), "%s.application_protocols", path);
    return strs_new(pb->application_protocols, pb->n_application_protocols, false, p, &e->alpn,
                    err);
}

/* ---- overlap (duplicate matches) ------------------------------------------------------------ */

static bool has_zero_len(const struct cidrs *c)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->v[i].len == 0) return true;
    return false;
}

/* No ranges is "any address", which Envoy keys as 0.0.0.0/0 and ::/0: the same as those. */
static bool cidrs_overlap(const struct cidrs *a, const struct cidrs *b)
{
    if (!a->n || !b->n) return (!a->n && !b->n) || has_zero_len(a->n ? a : b);
    for (size_t i = 0; i < a->n; i++)
        for (size_t j = 0; j < b->n; j++)
            if (a->v[i].family == b->v[j].family && a->v[i].len == b->v[j].len &&
                memcmp(a->v[i].addr, b->v[j].addr, sizeof(a->v[i].addr)) == 0)
                return true;
    return false;
}

static bool strs_overlap(const struct strs *a, const struct strs *b)
{
    if (!a->n || !b->n) return !a->n && !b->n;
    for (size_t i = 0; i < a->n; i++)
        for (size_t j = 0; j < b->n; j++)
            if (strcmp(a->v[i], b->v[j]) == 0) return true;
    return false;
}

static bool ports_overlap(const struct entry *a, const struct entry *b)
{
    if (!a->n_src_ports || !b->n_src_ports) return !a->n_src_ports && !b->n_src_ports;
    for (size_t i = 0; i < a->n_src_ports; i++)
        for (size_t j = 0; j < b->n_src_ports; j++)
            if (a->src_ports[i] == b->src_ports[j]) return true;
    return false;
}

/* Whether some connection would find <a> and <b> equally good at every step (Envoy's "same
 * matching rules": both chains land in one leaf of its match tree). */
static bool same_rules(const struct entry *a, const struct entry *b)
{
    bool same_transport = (!a->transport && !b->transport) ||
                          (a->transport && b->transport && strcmp(a->transport, b->transport) == 0);
    return a->dst_port == b->dst_port && cidrs_overlap(&a->dst, &b->dst) &&
           strs_overlap(&a->names, &b->names) && same_transport &&
           strs_overlap(&a->alpn, &b->alpn) && cidrs_overlap(&a->direct_src, &b->direct_src) &&
           a->source_type == b->source_type && cidrs_overlap(&a->src, &b->src) &&
           ports_overlap(a, b);
}

static void entry_dispose(struct entry *e)
{
    free(e->dst.v);
    free(e->direct_src.v);
    free(e->src.v);
    for (size_t i = 0; i < e->names.n; i++)
        free(e->names.v[i]);
    free(e->names.v);
    for (size_t i = 0; i < e->alpn.n; i++)
        free(e->alpn.v[i]);
    free(e->alpn.v);
    free(e->transport);
    free(e->src_ports);
}

void rm_fcm_free(struct rm_fcm *m)
{
    if (!m) return;
    for (size_t i = 0; i < m->n; i++)
        entry_dispose(&m->v[i]);
    free(m->v);
    free(m);
}

struct rm_fcm *rm_fcm_new(const Envoy__Config__Listener__V3__FilterChain *const *chains,
                          const char *const *paths, size_t n, struct rm_error *err)
{
    struct rm_fcm *m = calloc(1, sizeof(*m));
    if (!m || !(m->v = calloc(n + 1, sizeof(*m->v)))) {
        free(m);
        rm_error_set(err, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        char p[PATH_LEN];
        snprintf(p, sizeof(p), "%s.filter_chain_match", paths[i]);
        struct entry *e = &m->v[m->n++];
        if (entry_new(chains[i] ? chains[i]->filter_chain_match : NULL, p, e, err)) goto fail;
        m->needs_data |= e->names.n || e->alpn.n || e->transport;
        m->needs_local |=
            e->dst_port || e->dst.n ||
            e->source_type !=
                ENVOY__CONFIG__LISTENER__V3__FILTER_CHAIN_MATCH__CONNECTION_SOURCE_TYPE__ANY;
        for (size_t j = 0; j < i; j++) {
            if (same_rules(&m->v[j], e)) {
                rm_error_set(err,
                             "%s: multiple filter chains with the same matching rules are "
                             "defined (%s has the same)",
                             p, paths[j]);
                goto fail;
            }
        }
    }
    return m;
fail:
    rm_fcm_free(m);
    return NULL;
}

bool rm_fcm_needs_data(const struct rm_fcm *m)
{
    return m->needs_data;
}

bool rm_fcm_needs_local(const struct rm_fcm *m)
{
    return m->needs_local;
}

/* ---- choosing --------------------------------------------------------------------------------
 * Each step scores the chains still in the running: -1 (no match), 0 (no requirement, or the
 * least specific value), higher is more specific; only the best stay. */

static bool ip_of(const struct sockaddr *a, int *family, const uint8_t **addr, unsigned *port)
{
    if (!a) return false;
    if (a->sa_family == AF_INET) {
        const struct sockaddr_in *v4 = (const void *)a;
        *family = AF_INET;
        *addr = (const uint8_t *)&v4->sin_addr;
        *port = ntohs(v4->sin_port);
        return true;
    }
    if (a->sa_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const void *)a;
        *family = AF_INET6;
        *addr = (const uint8_t *)&v6->sin6_addr;
        *port = ntohs(v6->sin6_port);
        return true;
    }
    return false;
}

static bool in_cidr(const struct cidr *c, int family, const uint8_t *addr)
{
    if (c->family != family) return false;
    unsigned full = c->len / 8, rest = c->len % 8;
    if (memcmp(c->addr, addr, full) != 0) return false;
    return !rest || (c->addr[full] == (addr[full] & (uint8_t)(0xff00u >> rest)));
}

/* the longest of <cs> containing <a> (an empty set: 0) */
static int score_cidrs(const struct cidrs *cs, const struct sockaddr *a)
{
    if (!cs->n) return 0;
    int family, best = -1;
    const uint8_t *addr;
    unsigned port;
    if (!ip_of(a, &family, &addr, &port)) return -1;
    for (size_t i = 0; i < cs->n; i++)
        if ((int)cs->v[i].len > best && in_cidr(&cs->v[i], family, addr)) best = (int)cs->v[i].len;
    return best;
}

static int score_port(unsigned want, const struct sockaddr *a)
{
    int family;
    const uint8_t *addr;
    unsigned port;
    if (!want) return 0;
    return ip_of(a, &family, &addr, &port) && port == want ? 1 : -1;
}

/* exact: EXACT_NAME; "*.x.com" (kept as ".x.com"): its length; none: 0 */
static int score_name(const struct strs *names, const char *sni)
{
    if (!names->n) return 0;
    if (!sni || !sni[0]) return -1;
    size_t len = strlen(sni);
    int best = -1;
    for (size_t i = 0; i < names->n; i++) {
        const char *n = names->v[i];
        size_t nl = strlen(n);
        if (nl == len && strcasecmp(n, sni) == 0) return EXACT_NAME;
        /* a wildcard matches a name with something before its suffix (Envoy looks up every
         * suffix from a dot after the first character, the longest first) */
        if (n[0] == '.' && nl < len && strcasecmp(sni + len - nl, n) == 0 && (int)nl > best)
            best = (int)nl;
    }
    return best;
}

/* the first of the connection's protocols the chain names scores highest */
static int score_alpn(const struct strs *alpn, const struct rm_fcm_facts *f)
{
    if (!alpn->n) return 0;
    for (size_t i = 0; i < f->n_app_protocols; i++)
        for (size_t j = 0; j < alpn->n; j++)
            if (f->app_protocols[i] && strcmp(f->app_protocols[i], alpn->v[j]) == 0)
                return (int)(f->n_app_protocols - i);
    return -1;
}

/* Envoy's isSameIpOrLoopback: a pipe, a loopback peer, or the peer's IP equal to the local one */
static bool is_local(const struct rm_fcm_facts *f)
{
    int pf, lf;
    const uint8_t *pa, *la;
    unsigned pp, lp;
    if (f->peer && f->peer->sa_family == AF_UNIX) return true;
    if (!ip_of(f->peer, &pf, &pa, &pp)) return false;
    if (pf == AF_INET && pa[0] == 127) return true;
    if (pf == AF_INET6 && IN6_IS_ADDR_LOOPBACK((const struct in6_addr *)pa)) return true;
    if (!ip_of(f->local, &lf, &la, &lp) || lf != pf) return false;
    return memcmp(pa, la, pf == AF_INET ? 4 : 16) == 0;
}

static int score_source_type(int type, bool local)
{
    if (type == ENVOY__CONFIG__LISTENER__V3__FILTER_CHAIN_MATCH__CONNECTION_SOURCE_TYPE__ANY)
        return 0;
    bool want_local =
        type ==
        ENVOY__CONFIG__LISTENER__V3__FILTER_CHAIN_MATCH__CONNECTION_SOURCE_TYPE__SAME_IP_OR_LOOPBACK;
    return want_local == local ? 1 : -1;
}

static int score_src_port(const struct entry *e, const struct sockaddr *peer)
{
    if (!e->n_src_ports) return 0;
    int family;
    const uint8_t *addr;
    unsigned port;
    if (!ip_of(peer, &family, &addr, &port)) return -1;
    for (size_t i = 0; i < e->n_src_ports; i++)
        if (e->src_ports[i] == port) return 1;
    return -1;
}

enum step {
    S_DST_PORT,
    S_DST_IP,
    S_SERVER_NAME,
    S_TRANSPORT,
    S_ALPN,
    S_DIRECT_SRC_IP,
    S_SOURCE_TYPE,
    S_SRC_IP,
    S_SRC_PORT,
    S__COUNT
};

static int score(const struct entry *e, enum step s, const struct rm_fcm_facts *f, bool local)
{
    switch (s) {
    case S_DST_PORT:
        return score_port(e->dst_port, f->local);
    case S_DST_IP:
        return score_cidrs(&e->dst, f->local);
    case S_SERVER_NAME:
        return score_name(&e->names, f->server_name);
    case S_TRANSPORT:
        if (!e->transport) return 0;
        return f->transport_protocol && strcmp(e->transport, f->transport_protocol) == 0 ? 1 : -1;
    case S_ALPN:
        return score_alpn(&e->alpn, f);
    case S_DIRECT_SRC_IP:
        return score_cidrs(&e->direct_src, f->peer);
    case S_SOURCE_TYPE:
        return score_source_type(e->source_type, local);
    case S_SRC_IP:
        return score_cidrs(&e->src, f->peer);
    default:
        return score_src_port(e, f->peer);
    }
}

long rm_fcm_select(const struct rm_fcm *m, const struct rm_fcm_facts *f)
{
    /* the chains still in the running: a bitmap on the stack for the common sizes */
    uint8_t small[256], *alive = m->n <= sizeof(small) ? small : malloc(m->n);
    if (!alive) return -1;
    memset(alive, 1, m->n);
    bool local = is_local(f);
    long pick = -1;
    for (enum step s = 0; s < S__COUNT; s++) {
        int best = -1;
        for (size_t i = 0; i < m->n; i++) {
            if (!alive[i]) continue;
            int sc = score(&m->v[i], s, f, local);
            if (sc < best) {
                alive[i] = 0;
                continue;
            }
            if (sc > best)
                for (size_t j = 0; j < i; j++)
                    alive[j] = 0; /* every earlier survivor scored lower */
            alive[i] = sc >= 0;
            best = sc > best ? sc : best;
        }
        if (best < 0) goto out;
    }
    for (size_t i = 0; i < m->n; i++) {
        if (alive[i]) {
            pick = (long)i; /* distinct rules: at most one survives */
            break;
        }
    }
out:
    if (alive != small) free(alive);
    return pick;
}
