/* Route tables and filters: typed_per_filter_config entries (recorded at compile time, bound to
 * the connection manager's filter chain afterwards, looked up per request) and the standalone
 * matcher / header-mutation pieces filters compile for their own configs. */
#include <stdlib.h>
#include <string.h>

#include "proxy/http/route_int.h"

/* ---- recording ---------------------------------------------------------------------------- */

/* A map entry message: field 1 is the key (string), field 2 the value (Any).  Every
 * XxxTypedPerFilterConfigEntry protoc-c generates has that shape; read through the descriptor. */
static void map_entry(const ProtobufCMessage *e, const char **key,
                      const Google__Protobuf__Any **value)
{
    const ProtobufCFieldDescriptor *kf = protobuf_c_message_descriptor_get_field(e->descriptor, 1);
    const ProtobufCFieldDescriptor *vf = protobuf_c_message_descriptor_get_field(e->descriptor, 2);
    *key = kf ? *(const char *const *)(const void *)((const char *)e + kf->offset) : NULL;
    *value =
        vf ? *(const Google__Protobuf__Any *const *)(const void *)((const char *)e + vf->offset)
           : NULL;
}

int rm_rt_filter_cfgs(struct rm_route_ctx *c, size_t n, ProtobufCMessage *const *entries,
                      const char *path, struct rm_filter_route_cfgs *out)
{
    char p[RM_RT_PATH];
    out->v = n ? rm_rt_alloc(c, n * sizeof(*out->v)) : NULL;
    out->n = 0;
    for (size_t i = 0; i < n; i++) {
        const char *key;
        const Google__Protobuf__Any *any;
        map_entry(entries[i], &key, &any);
        if (!key || !*key) {
            RT_PATH(p, path, "typed_per_filter_config");
            return rm_error_set(c->err, "%s: a filter name (map key) is required", p);
        }
        RT_PATH(p, path, "typed_per_filter_config[\"%s\"]", key);
        if (!any || !any->type_url || !*any->type_url)
            return rm_error_set(c->err, "%s: a typed config (\"@type\") is required", p);
        struct rm_filter_route_cfg *e = &out->v[out->n++];
        e->name = rm_rt_strdup(c, key, strlen(key), false);
        e->any = any;
        e->path = rm_rt_strdup(c, p, strlen(p), false);
        e->filter_idx = -1;
    }
    return RM_OK;
}

/* ---- binding and freeing ------------------------------------------------------------------ */

static int bind_list(struct rm_filter_route_cfgs *l, rm_route_filter_bind_fn fn, void *ctx,
                     struct rm_error *err)
{
    for (size_t i = 0; i < l->n; i++) {
        if (fn(ctx, &l->v[i], err) != RM_OK) return RM_ERR;
    }
    return RM_OK;
}

static int bind_route(struct rm_route *r, rm_route_filter_bind_fn fn, void *ctx,
                      struct rm_error *err)
{
    if (bind_list(&r->filter_cfgs, fn, ctx, err) != RM_OK) return RM_ERR;
    for (size_t i = 0; i < r->n_weighted; i++) {
        if (bind_list(&r->weighted[i].filter_cfgs, fn, ctx, err) != RM_OK) return RM_ERR;
    }
    return RM_OK;
}

int rm_route_table_bind_filters(struct rm_route_table *t, rm_route_filter_bind_fn fn, void *ctx,
                                struct rm_error *err)
{
    if (!t) return RM_OK;
    if (bind_list(&t->filter_cfgs, fn, ctx, err) != RM_OK) return RM_ERR;
    for (size_t v = 0; v < t->n_vhosts; v++) {
        struct rm_vhost *vh = &t->vhosts[v];
        if (bind_list(&vh->filter_cfgs, fn, ctx, err) != RM_OK) return RM_ERR;
        for (size_t i = 0; i < vh->n_routes; i++) {
            if (bind_route(&vh->routes[i], fn, ctx, err) != RM_OK) return RM_ERR;
        }
    }
    return RM_OK;
}

static void free_list(struct rm_filter_route_cfgs *l)
{
    for (size_t i = 0; i < l->n; i++) {
        struct rm_filter_route_cfg *e = &l->v[i];
        if (e->config && e->config_free) e->config_free(e->config);
        e->config = NULL;
    }
}

/* Safe on a table whose compilation stopped half-way: counts are only set for what exists. */
void rm_rt_filter_cfgs_free(struct rm_route_table *t)
{
    free_list(&t->filter_cfgs);
    for (size_t v = 0; t->vhosts && v < t->n_vhosts; v++) {
        struct rm_vhost *vh = &t->vhosts[v];
        free_list(&vh->filter_cfgs);
        for (size_t i = 0; vh->routes && i < vh->n_routes; i++) {
            struct rm_route *r = &vh->routes[i];
            free_list(&r->filter_cfgs);
            for (size_t w = 0; r->weighted && w < r->n_weighted; w++)
                free_list(&r->weighted[w].filter_cfgs);
        }
    }
}

/* ---- lookup (request path) ---------------------------------------------------------------- */

static const struct rm_filter_route_cfg *find(const struct rm_filter_route_cfgs *l, unsigned idx)
{
    for (size_t i = 0; i < l->n; i++) {
        if (l->v[i].filter_idx == (int)idx) return &l->v[i];
    }
    return NULL;
}

unsigned rm_route_filter_cfgs_all(const struct rm_route_table *t, const struct rm_vhost *vh,
                                  const struct rm_route *r, const struct rm_weighted_cluster *wc,
                                  unsigned filter_idx, const struct rm_filter_route_cfg *out[4])
{
    const struct rm_filter_route_cfgs *levels[4] = {
        wc ? &wc->filter_cfgs : NULL, r ? &r->filter_cfgs : NULL, vh ? &vh->filter_cfgs : NULL,
        t ? &t->filter_cfgs : NULL};
    unsigned n = 0;
    for (unsigned i = 0; i < 4; i++) {
        const struct rm_filter_route_cfg *e = levels[i] ? find(levels[i], filter_idx) : NULL;
        if (e) out[n++] = e;
    }
    return n;
}

const struct rm_filter_route_cfg *rm_route_filter_cfg(const struct rm_route_table *t,
                                                      const struct rm_vhost *vh,
                                                      const struct rm_route *r,
                                                      const struct rm_weighted_cluster *wc,
                                                      unsigned filter_idx)
{
    const struct rm_filter_route_cfg *e = NULL;
    if (wc) e = find(&wc->filter_cfgs, filter_idx);
    if (!e && r) e = find(&r->filter_cfgs, filter_idx);
    if (!e && vh) e = find(&vh->filter_cfgs, filter_idx);
    if (!e && t) e = find(&t->filter_cfgs, filter_idx);
    return e;
}

/* ---- standalone pieces for filters -------------------------------------------------------- */

/* A route table's private storage (arena + regex codes) without a table. */
struct rm_route_parts {
    struct rm_route_priv priv;
};

struct rm_route_parts *rm_route_parts_new(void)
{
    struct rm_route_parts *p = calloc(1, sizeof(*p));
    if (!p) abort();
    rm_arena_init(&p->priv.arena);
    return p;
}

void rm_route_parts_free(struct rm_route_parts *p)
{
    if (!p) return;
    rm_route_table_free(&p->priv.pub); /* frees codes and arena; the empty table has nothing */
}

static struct rm_route_ctx parts_ctx(struct rm_route_parts *p, struct rm_error *err)
{
    return (struct rm_route_ctx){.t = &p->priv, .err = err};
}

int rm_route_parts_header_matcher(struct rm_route_parts *p,
                                  const Envoy__Config__Route__V3__HeaderMatcher *hm,
                                  const char *path, struct rm_header_match *out,
                                  struct rm_error *err)
{
    struct rm_route_ctx c = parts_ctx(p, err);
    return rm_rt_header_matcher(&c, hm, path, out);
}

int rm_route_parts_str_matcher(struct rm_route_parts *p,
                               const Envoy__Type__Matcher__V3__StringMatcher *sm, const char *path,
                               struct rm_str_match *out, struct rm_error *err)
{
    struct rm_route_ctx c = parts_ctx(p, err);
    return rm_rt_str_matcher(&c, sm, path, out);
}

void *rm_route_parts_alloc(struct rm_route_parts *p, size_t n)
{
    struct rm_route_ctx c = parts_ctx(p, NULL);
    return rm_rt_alloc(&c, n);
}

char *rm_route_parts_strdup(struct rm_route_parts *p, const char *s)
{
    struct rm_route_ctx c = parts_ctx(p, NULL);
    return rm_rt_strdup(&c, s, strlen(s), false);
}

int rm_route_parts_header_adds(struct rm_route_parts *p,
                               Envoy__Config__Core__V3__HeaderValueOption *const *v, size_t n,
                               const char *path, const char *field, bool request,
                               struct rm_header_ops *out, struct rm_error *err)
{
    struct rm_route_ctx c = parts_ctx(p, err);
    if (request) return rm_rt_header_adds(&c, v, n, path, field, &out->req_add, &out->n_req_add);
    return rm_rt_header_adds(&c, v, n, path, field, &out->resp_add, &out->n_resp_add);
}
