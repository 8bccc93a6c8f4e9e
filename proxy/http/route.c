/* Route tables: RouteConfiguration and VirtualHost compilation, the domain index, virtual host
 * lookup, and freeing.  Routes are compiled in route_build.c, their leaves in route_compile.c,
 * and requests are matched in route_match.c. */
#include <stdlib.h>
#include <string.h>

#include "filters/retry_policy.h"
#include "proxy/http/route_int.h"

#define DEFAULT_MAX_DIRECT_BODY 4096

/* ---- virtual hosts ------------------------------------------------------------------------ */

static int vhost_unsupported(struct rm_route_ctx *c,
                             const Envoy__Config__Route__V3__VirtualHost *vh, const char *path)
{
    const char *field = NULL;
    if (vh->require_tls != ENVOY__CONFIG__ROUTE__V3__VIRTUAL_HOST__TLS_REQUIREMENT_TYPE__NONE)
        field = "require_tls";
    if (!field) return RM_OK;
    return rm_error_set(c->err, "%s.%s: not supported by remora", path, field);
}

static int vhost(struct rm_route_ctx *c, const Envoy__Config__Route__V3__VirtualHost *vh,
                 const char *path, struct rm_vhost *out)
{
    char p[RM_RT_PATH];
    if (rm_rt_check_unknown(&vh->base, path, c->err) != RM_OK ||
        vhost_unsupported(c, vh, path) != RM_OK)
        return RM_ERR;
    RT_PATH(p, path, "name");
    if (!*vh->name) return rm_error_set(c->err, "%s: must not be empty", p);
    out->name = rm_rt_strdup(c, vh->name, strlen(vh->name), false);
    RT_PATH(p, path, "domains");
    if (vh->n_domains == 0) return rm_error_set(c->err, "%s: at least one domain is required", p);
    if (rm_rt_routes(c, vh->routes, vh->n_routes, path, &out->routes) != RM_OK) return RM_ERR;
    out->n_routes = vh->n_routes;
    out->retry_policy = vh->retry_policy;
    RT_PATH(p, path, "retry_policy");
    if (rm_retry_policy_compile(c, vh->retry_policy, p, &out->retry) != RM_OK) return RM_ERR;
    out->include_attempt_count = vh->include_request_attempt_count;
    out->include_attempt_count_in_response = vh->include_attempt_count_in_response;
    if (vh->per_request_buffer_limit_bytes)
        out->per_request_buffer_limit = vh->per_request_buffer_limit_bytes->value;
    if (RM_RT_FILTER_CFGS(c, vh, path, &out->filter_cfgs) != RM_OK) return RM_ERR;
    if (rm_rt_mirrors(c, vh->request_mirror_policies, vh->n_request_mirror_policies, path,
                      &out->mirrors) != RM_OK)
        return RM_ERR;
    struct rm_rt_hdr_lists l = RM_RT_HDR_LISTS(vh);
    return rm_rt_header_ops(c, &l, path, &out->headers_ops);
}

/* ---- the domain index --------------------------------------------------------------------- */

/* A domain with where it came from, for sorting and duplicate messages. */
struct dom_src {
    struct rm_domain d;
    size_t vh, idx;
};

static int dom_cmp(const void *a, const void *b)
{
    const struct dom_src *x = a, *y = b;
    if (x->d.kind != y->d.kind) return x->d.kind < y->d.kind ? -1 : 1;
    if (x->d.len != y->d.len) {
        /* exact: ascending (binary search); wildcards: longest first (longest wins) */
        bool asc = x->d.kind == RM_DOMAIN_EXACT;
        return (x->d.len < y->d.len) == asc ? -1 : 1;
    }
    int r = memcmp(x->d.pattern, y->d.pattern, x->d.len);
    if (r) return r;
    if (x->vh != y->vh) return x->vh < y->vh ? -1 : 1;
    return x->idx < y->idx ? -1 : (x->idx > y->idx);
}

/* Envoy's classification: "*", "*suffix", "prefix*", else exact; lower-cased. */
static void dom_classify(struct rm_route_ctx *c, const char *s, struct rm_domain *d)
{
    size_t n = strlen(s);
    d->kind = RM_DOMAIN_EXACT;
    if (n == 1 && s[0] == '*') {
        d->kind = RM_DOMAIN_ANY;
        s++, n--;
    } else if (n > 0 && s[0] == '*') {
        d->kind = RM_DOMAIN_SUFFIX;
        s++, n--;
    } else if (n > 0 && s[n - 1] == '*') {
        d->kind = RM_DOMAIN_PREFIX;
        n--;
    }
    d->pattern = rm_rt_strdup(c, s, n, true);
    d->len = n;
}

static int dom_duplicate(struct rm_route_ctx *c,
                         const Envoy__Config__Route__V3__RouteConfiguration *rc, const char *path,
                         const struct dom_src *first, const struct dom_src *dup)
{
    char p[RM_RT_PATH];
    RT_PATH(p, path, "virtual_hosts[%zu].domains[%zu]", dup->vh, dup->idx);
    if (dup->d.kind == RM_DOMAIN_ANY)
        return rm_error_set(c->err,
                            "%s: Only a single wildcard domain is permitted (also in "
                            "virtual_hosts[%zu].domains[%zu])",
                            p, first->vh, first->idx);
    return rm_error_set(c->err,
                        "%s: Only unique values for domains are permitted. Duplicate "
                        "entry of domain %s (also in virtual_hosts[%zu].domains[%zu])",
                        p, rc->virtual_hosts[dup->vh]->domains[dup->idx], first->vh, first->idx);
}

static int domains(struct rm_route_ctx *c, const Envoy__Config__Route__V3__RouteConfiguration *rc,
                   const char *path)
{
    struct rm_route_table *t = &c->t->pub;
    size_t n = 0;
    for (size_t i = 0; i < rc->n_virtual_hosts; i++)
        n += rc->virtual_hosts[i]->n_domains;
    struct dom_src *src = rm_rt_alloc(c, n * sizeof(*src));
    size_t k = 0;
    for (size_t i = 0; i < rc->n_virtual_hosts; i++) {
        for (size_t j = 0; j < rc->virtual_hosts[i]->n_domains; j++, k++) {
            dom_classify(c, rc->virtual_hosts[i]->domains[j], &src[k].d);
            src[k].d.vhost = &t->vhosts[i];
            src[k].vh = i;
            src[k].idx = j;
        }
    }
    qsort(src, n, sizeof(*src), dom_cmp);
    t->domains = rm_rt_alloc(c, n * sizeof(*t->domains));
    t->n_domains = n;
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && src[i].d.kind == src[i - 1].d.kind && src[i].d.len == src[i - 1].d.len &&
            memcmp(src[i].d.pattern, src[i - 1].d.pattern, src[i].d.len) == 0)
            return dom_duplicate(c, rc, path, &src[i - 1], &src[i]);
        t->domains[i] = src[i].d;
        t->n_domain_exact += src[i].d.kind == RM_DOMAIN_EXACT;
        t->n_domain_suffix += src[i].d.kind == RM_DOMAIN_SUFFIX;
        t->n_domain_prefix += src[i].d.kind == RM_DOMAIN_PREFIX;
        if (src[i].d.kind == RM_DOMAIN_ANY) t->default_vhost = src[i].d.vhost;
    }
    return RM_OK;
}

/* ---- the table ---------------------------------------------------------------------------- */

/* Each forwarding route's mirror policies: its own, else its virtual host's, else the route
 * configuration's (the most specific non-empty list wins, lists are not merged: Envoy). */
static void inherit_mirrors(struct rm_route_table *t)
{
    for (size_t i = 0; i < t->n_vhosts; i++) {
        struct rm_vhost *vh = &t->vhosts[i];
        const struct rm_mirror_policies *outer = vh->mirrors.n ? &vh->mirrors : &t->mirrors;
        for (size_t j = 0; j < vh->n_routes; j++) {
            struct rm_route *r = &vh->routes[j];
            if (r->action == RM_ROUTE_FORWARD && !r->mirrors.n) r->mirrors = *outer;
        }
    }
}

static int table_options(struct rm_route_ctx *c,
                         const Envoy__Config__Route__V3__RouteConfiguration *rc, const char *path)
{
    char p[RM_RT_PATH];
    if (rc->n_internal_only_headers) {
        RT_PATH(p, path, "internal_only_headers");
        return rm_error_set(c->err, "%s: not supported by remora", p);
    }
    if (RM_RT_FILTER_CFGS(c, rc, path, &c->t->pub.filter_cfgs) != RM_OK) return RM_ERR;
    if (rc->validate_clusters) {
        RT_PATH(p, path, "validate_clusters");
        if (rm_rt_check_unknown(&rc->validate_clusters->base, p, c->err) != RM_OK) return RM_ERR;
        c->validate_clusters = rc->validate_clusters->value;
    }
    c->max_body = DEFAULT_MAX_DIRECT_BODY;
    if (rc->max_direct_response_body_size_bytes) {
        RT_PATH(p, path, "max_direct_response_body_size_bytes");
        if (rm_rt_check_unknown(&rc->max_direct_response_body_size_bytes->base, p, c->err) != RM_OK)
            return RM_ERR;
        c->max_body = rc->max_direct_response_body_size_bytes->value;
    }
    struct rm_route_table *t = &c->t->pub;
    t->name = rm_rt_strdup(c, rc->name, strlen(rc->name), false);
    t->ignore_port_in_host_matching = rc->ignore_port_in_host_matching;
    t->most_specific_header_mutations_wins = rc->most_specific_header_mutations_wins;
    return RM_OK;
}

static int table(struct rm_route_ctx *c, const Envoy__Config__Route__V3__RouteConfiguration *rc,
                 const char *path)
{
    char p[RM_RT_PATH];
    if (rm_rt_check_unknown(&rc->base, path, c->err) != RM_OK ||
        table_options(c, rc, path) != RM_OK)
        return RM_ERR;
    struct rm_route_table *t = &c->t->pub;
    struct rm_rt_hdr_lists l = RM_RT_HDR_LISTS(rc);
    if (rm_rt_header_ops(c, &l, path, &t->headers_ops) != RM_OK ||
        rm_rt_mirrors(c, rc->request_mirror_policies, rc->n_request_mirror_policies, path,
                      &t->mirrors) != RM_OK)
        return RM_ERR;
    t->vhosts = rm_rt_alloc(c, rc->n_virtual_hosts * sizeof(*t->vhosts));
    t->n_vhosts = rc->n_virtual_hosts;
    for (size_t i = 0; i < rc->n_virtual_hosts; i++) {
        RT_PATH(p, path, "virtual_hosts[%zu]", i);
        if (vhost(c, rc->virtual_hosts[i], p, &t->vhosts[i]) != RM_OK) return RM_ERR;
    }
    inherit_mirrors(t);
    return domains(c, rc, path);
}

struct rm_route_table *
rm_route_table_new(const struct Envoy__Config__Route__V3__RouteConfiguration *rc, const char *path,
                   rm_route_resolve_fn resolve, void *resolve_ctx, struct rm_error *err)
{
    return rm_route_table_new_ex(rc, path, resolve, resolve_ctx, false, err);
}

struct rm_route_table *
rm_route_table_new_ex(const struct Envoy__Config__Route__V3__RouteConfiguration *rc,
                      const char *path, rm_route_resolve_fn resolve, void *resolve_ctx,
                      bool validate_default, struct rm_error *err)
{
    if (!path) path = "";
    if (!rc) {
        rm_error_set(err, "%s: a RouteConfiguration is required", *path ? path : "route_config");
        return NULL;
    }
    struct rm_route_priv *t = calloc(1, sizeof(*t));
    if (!t) {
        rm_error_set(err, "%s: out of memory", path);
        return NULL;
    }
    rm_arena_init(&t->arena);
    struct rm_route_ctx c = {
        .t = t,
        .resolve = resolve,
        .resolve_ctx = resolve_ctx,
        .validate_clusters = validate_default,
        .err = err,
    };
    if (table(&c, rc, path) != RM_OK) goto fail_table;
    return &t->pub;

fail_table:
    rm_route_table_free(&t->pub);
    return NULL;
}

void rm_route_table_free(struct rm_route_table *pub)
{
    if (!pub) return;
    struct rm_route_priv *t = (struct rm_route_priv *)pub; /* pub is the first member */
    rm_rt_filter_cfgs_free(pub);
    for (size_t i = 0; i < t->n_codes; i++)
        pcre2_code_free(t->codes[i]);
    free(t->codes);
    rm_arena_dispose(&t->arena);
    free(t);
}

/* ---- virtual host lookup ------------------------------------------------------------------ */

static unsigned char lower_u(char ch)
{
    return (unsigned char)((ch >= 'A' && ch <= 'Z') ? ch - 'A' + 'a' : ch);
}

/* Compare <n> bytes of a host (any case) with a lower-case pattern. */
static int host_cmp(const char *h, const char *pat, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char a = lower_u(h[i]), b = (unsigned char)pat[i];
        if (a != b) return a < b ? -1 : 1;
    }
    return 0;
}

static const struct rm_vhost *find_exact(const struct rm_route_table *t, const char *h, size_t n)
{
    size_t lo = 0, hi = t->n_domain_exact;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct rm_domain *d = &t->domains[mid];
        int r = n != d->len ? (n < d->len ? -1 : 1) : host_cmp(h, d->pattern, n);
        if (r == 0) return d->vhost;
        if (r < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

/* Longest wildcard first; the '*' must stand for at least one character. */
static const struct rm_vhost *find_wild(const struct rm_domain *d, size_t nd, const char *h,
                                        size_t n, bool suffix)
{
    for (size_t i = 0; i < nd; i++) {
        if (d[i].len >= n) continue;
        const char *at = suffix ? h + n - d[i].len : h;
        if (host_cmp(at, d[i].pattern, d[i].len) == 0) return d[i].vhost;
    }
    return NULL;
}

static const struct rm_vhost *lookup(const struct rm_route_table *t, const char *h, size_t n)
{
    const struct rm_vhost *v = find_exact(t, h, n);
    if (!v) v = find_wild(t->domains + t->n_domain_exact, t->n_domain_suffix, h, n, true);
    if (!v)
        v = find_wild(t->domains + t->n_domain_exact + t->n_domain_suffix, t->n_domain_prefix, h, n,
                      false);
    return v ? v : t->default_vhost;
}

/* Where ":port" starts in <h>, or <n> if none (Envoy's getPortStart: IPv6 in brackets). */
static size_t port_start(const char *h, size_t n)
{
    size_t colon = n, bracket = n;
    for (size_t i = n; i-- > 0;) {
        if (h[i] == ':' && colon == n) colon = i;
        if (h[i] == ']' && bracket == n) bracket = i;
    }
    if (colon == n || (bracket != n && bracket > colon)) return n;
    return colon;
}

const struct rm_vhost *rm_route_find_vhost(const struct rm_route_table *t, const char *authority,
                                           size_t len)
{
    if (!t) return NULL;
    if (!authority) /* Envoy: no authority matches only a table whose sole host is "*" */
        return t->n_domains == 1 ? t->default_vhost : NULL;
    if (t->n_domain_exact + t->n_domain_suffix + t->n_domain_prefix == 0)
        return t->default_vhost; /* only "*": whatever the host (lookup() would end there) */
    size_t ps = port_start(authority, len);
    size_t n = t->ignore_port_in_host_matching ? ps : len;
    const struct rm_vhost *v = lookup(t, authority, n);
    if (!v && n != ps) v = lookup(t, authority, ps);
    return v;
}
