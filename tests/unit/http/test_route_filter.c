/* Unit tests for proxy/http/route_filter.c: typed_per_filter_config entries recorded by the
 * route compiler at every level, binding, most-specific lookup, freeing, and the standalone
 * matcher / header-mutation pieces filters use. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/config/route/v3/route.pb-c.h"
#include "proxy/config/pbjson.h"
#include "proxy/http/route.h"

#define RC_DESC (&envoy__config__route__v3__route_configuration__descriptor)
typedef Envoy__Config__Route__V3__RouteConfiguration RouteConfiguration;

static void teardown(void)
{
    rm_route_thread_cleanup();
    rm_arena_thread_cleanup();
}

TestSuite(route_filter, .fini = teardown);

static RouteConfiguration *parse(const char *yaml)
{
    struct rm_error err = {{0}};
    ProtobufCMessage *m = NULL;
    int rc = rm_pbjson_parse_string(yaml, strlen(yaml), "t.yaml", RC_DESC, &m, &err);
    cr_assert_eq(rc, RM_OK, "YAML: %s", err.msg);
    return (RouteConfiguration *)m;
}

#define ANY(v) "{'@type': type.googleapis.com/google.protobuf.UInt32Value, value: " #v "}"

static const char cfg_yaml[] = "typed_per_filter_config: {f1: " ANY(1) ", f2: " ANY(
    2) "}\n"
       "virtual_hosts:\n"
       "- name: v\n"
       "  domains: ['*']\n"
       "  typed_per_filter_config: {f1: " ANY(
           11) "}\n"
               "  routes:\n"
               "  - match: {prefix: /r}\n"
               "    route: {cluster: c}\n"
               "    typed_per_filter_config: {f1: " ANY(21) ", f3: " ANY(
                   23) "}\n"
                       "  - match: {prefix: /w}\n"
                       "    route:\n"
                       "      weighted_clusters:\n"
                       "        clusters:\n"
                       "        - name: a\n"
                       "          weight: 1\n"
                       "          typed_per_filter_config: {f2: " ANY(32) "}\n";

/* Binder: "fN" -> filter N-1, config = a malloc'd copy of the UInt32Value's bytes' length tag
 * (the value itself is checked by counting frees); "f3" is left unbound. */
static int frees;
static void cfg_free(void *p)
{
    frees++;
    free(p);
}

static int bind_fn(void *ctx, struct rm_filter_route_cfg *e, struct rm_error *err)
{
    int *calls = ctx;
    (*calls)++;
    if (strcmp(e->name, "f3") == 0) return RM_OK; /* ignored: stays -1 */
    if (strcmp(e->name, "bad") == 0) return rm_error_set(err, "%s: bad", e->path);
    e->filter_idx = e->name[1] - '1';
    /* value byte 1 is the varint of UInt32Value.value (all < 128 here) */
    int *v = malloc(sizeof(*v));
    *v = e->any->value.len >= 2 ? e->any->value.data[1] : -1;
    e->config = v;
    e->config_free = cfg_free;
    return RM_OK;
}

static int val(const struct rm_filter_route_cfg *e)
{
    return e && e->config ? *(const int *)e->config : -1;
}

Test(route_filter, record_bind_lookup_free)
{
    RouteConfiguration *rc = parse(cfg_yaml);
    struct rm_error err = {{0}};
    struct rm_route_table *t = rm_route_table_new(rc, "rc", NULL, NULL, &err);
    cr_assert_not_null(t, "%s", err.msg);
    cr_assert_eq(t->filter_cfgs.n, 2);
    cr_assert_str_eq(t->filter_cfgs.v[0].path, "rc.typed_per_filter_config[\"f1\"]");
    const struct rm_vhost *vh = &t->vhosts[0];
    const struct rm_route *r = &vh->routes[0], *w = &vh->routes[1];
    cr_assert_str_eq(r->filter_cfgs.v[1].path,
                     "rc.virtual_hosts[0].routes[0].typed_per_filter_config[\"f3\"]");
    /* nothing is found before binding */
    cr_assert_null(rm_route_filter_cfg(t, vh, r, NULL, 0));

    int calls = 0;
    cr_assert_eq(rm_route_table_bind_filters(t, bind_fn, &calls, &err), RM_OK);
    cr_assert_eq(calls, 6);
    /* f1: route > vhost > table */
    cr_assert_eq(val(rm_route_filter_cfg(t, vh, r, NULL, 0)), 21);
    cr_assert_eq(val(rm_route_filter_cfg(t, vh, w, NULL, 0)), 11);
    cr_assert_eq(val(rm_route_filter_cfg(t, NULL, NULL, NULL, 0)), 1);
    /* f2: weighted cluster > table */
    cr_assert_eq(val(rm_route_filter_cfg(t, vh, w, &w->weighted[0], 1)), 32);
    cr_assert_eq(val(rm_route_filter_cfg(t, vh, w, NULL, 1)), 2);
    /* f3 was not bound: never found */
    cr_assert_null(rm_route_filter_cfg(t, vh, r, NULL, 2));
    protobuf_c_message_free_unpacked(&rc->base, NULL);
    frees = 0;
    rm_route_table_free(t);
    cr_assert_eq(frees, 5);
}

Test(route_filter, bind_error_frees_what_was_bound)
{
    RouteConfiguration *rc = parse("typed_per_filter_config: {f1: " ANY(1) ", bad: " ANY(
        2) "}\n"
           "virtual_hosts: [{name: v, domains: ['*']}]\n");
    struct rm_error err = {{0}};
    struct rm_route_table *t = rm_route_table_new(rc, "rc", NULL, NULL, &err);
    cr_assert_not_null(t, "%s", err.msg);
    int calls = 0;
    cr_assert_eq(rm_route_table_bind_filters(t, bind_fn, &calls, &err), RM_ERR);
    cr_assert_str_eq(err.msg, "rc.typed_per_filter_config[\"bad\"]: bad");
    protobuf_c_message_free_unpacked(&rc->base, NULL);
    frees = 0;
    rm_route_table_free(t);
    cr_assert_eq(frees, 1);
}

Test(route_filter, entry_without_type_rejected)
{
    RouteConfiguration *rc = parse("virtual_hosts: [{name: v, domains: ['*']}]\n");
    /* a map entry whose Any has no type URL (possible over xDS) */
    rc->virtual_hosts[0]->n_typed_per_filter_config = 1;
    rc->virtual_hosts[0]->typed_per_filter_config =
        calloc(1, sizeof(*rc->virtual_hosts[0]->typed_per_filter_config));
    Envoy__Config__Route__V3__VirtualHost__TypedPerFilterConfigEntry *e = calloc(1, sizeof(*e));
    envoy__config__route__v3__virtual_host__typed_per_filter_config_entry__init(e);
    e->key = strdup("f1");
    e->value = calloc(1, sizeof(*e->value));
    google__protobuf__any__init(e->value);
    e->value->type_url = strdup("");
    rc->virtual_hosts[0]->typed_per_filter_config[0] = e;
    struct rm_error err = {{0}};
    struct rm_route_table *t = rm_route_table_new(rc, "rc", NULL, NULL, &err);
    cr_assert_null(t);
    cr_assert_str_eq(err.msg, "rc.virtual_hosts[0].typed_per_filter_config[\"f1\"]: a typed "
                              "config (\"@type\") is required");
    protobuf_c_message_free_unpacked(&rc->base, NULL);
}

Test(route_filter, parts_header_matcher_and_adds)
{
    RouteConfiguration *rc =
        parse("virtual_hosts:\n"
              "- name: v\n"
              "  domains: ['*']\n"
              "  routes:\n"
              "  - match:\n"
              "      prefix: /\n"
              "      headers:\n"
              "      - {name: x-a, string_match: {safe_regex: {regex: 'v[0-9]+'}}}\n"
              "      - {name: x-b, present_match: true, invert_match: true}\n"
              "    route: {cluster: c}\n"
              "    response_headers_to_add:\n"
              "    - header: {key: x-r, value: '1'}\n");
    const Envoy__Config__Route__V3__Route *pr = rc->virtual_hosts[0]->routes[0];
    struct rm_route_parts *p = rm_route_parts_new();
    struct rm_header_match hm[2];
    struct rm_error err = {{0}};
    for (int i = 0; i < 2; i++)
        cr_assert_eq(rm_route_parts_header_matcher(p, pr->match->headers[i], "h", &hm[i], &err),
                     RM_OK, "%s", err.msg);
    struct rm_header_ops ops = {0};
    cr_assert_eq(rm_route_parts_header_adds(p, pr->response_headers_to_add,
                                            pr->n_response_headers_to_add, "x", "resp", false, &ops,
                                            &err),
                 RM_OK);
    cr_assert_eq(ops.n_resp_add, 1);
    cr_assert_eq(ops.n_req_add, 0);
    protobuf_c_message_free_unpacked(&rc->base, NULL);

    struct rm_arena a;
    rm_arena_init(&a);
    struct rm_headers h;
    rm_headers_init(&h, &a);
    rm_headers_add(&h, "x-a", 3, "v12", 3);
    cr_assert(rm_header_match_eval(&hm[0], &h));
    cr_assert(rm_header_match_eval(&hm[1], &h)); /* x-b absent, inverted presence */
    rm_headers_add(&h, "x-b", 3, "", 0);
    cr_assert_not(rm_header_match_eval(&hm[1], &h));
    rm_header_ops_apply_response(&ops, &h);
    cr_assert_eq(RM_HDR_GET(&h, "x-r").len, 1);
    rm_arena_dispose(&a);
    rm_route_parts_free(p);
}
