/* The stats blocks a config snapshot holds (listener.<addr>., http.<stat_prefix>., its HTTP
 * filters' blocks, per-route filter configs' blocks) are references of the snapshot: a rebuild of
 * the same config shares them (counters keep counting), the last snapshot's release unlists
 * them and the registry is back where it started. */
#include <criterion/criterion.h>
#include <string.h>

#include "proxy/admin/stats.h"
#include "proxy/config/pbjson.h"
#include "proxy/config/snapshot.h"
#include "proxy/core/error.h"

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"

static const char yaml[] =
    "static_resources:\n"
    "  listeners:\n"
    "  - name: l1\n"
    "    address: {socket_address: {address: 127.0.0.1, port_value: 10000}}\n"
    "    filter_chains:\n"
    "    - filters:\n"
    "      - name: envoy.filters.network.http_connection_manager\n"
    "        typed_config:\n"
    "          \"@type\": type.googleapis.com/"
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n"
    "          stat_prefix: ing\n"
    "          route_config:\n"
    "            virtual_hosts:\n"
    "            - name: all\n"
    "              domains: [\"*\"]\n"
    "              routes:\n"
    "              - match: {prefix: /}\n"
    "                direct_response: {status: 200}\n"
    "                typed_per_filter_config:\n"
    "                  envoy.filters.http.local_ratelimit:\n"
    "                    \"@type\": type.googleapis.com/"
    "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit\n"
    "                    stat_prefix: rt\n"
    "                    token_bucket: {max_tokens: 1, fill_interval: 1s}\n"
    "          http_filters:\n"
    "          - name: envoy.filters.http.fault\n"
    "            typed_config:\n"
    "              \"@type\": "
    "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault\n"
    "          - name: envoy.filters.http.local_ratelimit\n"
    "            typed_config:\n"
    "              \"@type\": type.googleapis.com/"
    "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit\n"
    "              stat_prefix: lrl\n"
    "          - name: envoy.filters.http.router\n"
    "            typed_config:\n"
    "              \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n";

static void fini(void)
{
    rm_stats_free_all();
}

TestSuite(snapshot_stats, .fini = fini);

static struct rm_snapshot *build(void)
{
    struct rm_error err = {{0}};
    ProtobufCMessage *m = NULL;
    int rc = rm_pbjson_parse_string(yaml, strlen(yaml), "t.yaml",
                                    &envoy__config__bootstrap__v3__bootstrap__descriptor, &m, &err);
    cr_assert_eq(rc, RM_OK, "%s", err.msg);
    struct rm_snapshot *s =
        rm_snapshot_from_bootstrap((Envoy__Config__Bootstrap__V3__Bootstrap *)m, &err);
    cr_assert_not_null(s, "%s", err.msg);
    return s;
}

struct find {
    const char *name;
    bool found;
    int64_t value;
};

static void find_one(void *ctx, const char *name, enum rm_stat_type t, int64_t value)
{
    struct find *f = ctx;
    if (strcmp(name, f->name) == 0) {
        f->found = true;
        f->value = value;
    }
}

/* Whether /stats would list <name>; its value in *value. */
static bool listed(const char *name, int64_t *value)
{
    struct find f = {.name = name};
    rm_stats_foreach(find_one, &f);
    if (value) *value = f.value;
    return f.found;
}

static const char *const blocks[] = {
    "listener.127.0.0.1_10000.downstream_cx_total",
    "http.ing.downstream_cx_total",
    "http.ing.fault.aborts_injected",
    "lrl.http_local_rate_limit.enabled",
    "rt.http_local_rate_limit.enabled",
};
#define N_BLOCKS (sizeof(blocks) / sizeof(blocks[0]))

Test(snapshot_stats, the_last_snapshot_releases_its_blocks)
{
    size_t before = rm_stats_blocks();
    struct rm_snapshot *a = build();
    for (size_t i = 0; i < N_BLOCKS; i++)
        cr_assert(listed(blocks[i], NULL), "%s", blocks[i]);
    size_t with_one = rm_stats_blocks();
    cr_assert_geq(with_one, before + N_BLOCKS);
    struct rm_listener_cfg *lc = a->listeners[0];
    cr_assert_eq(rm_stats_users(lc->stats), 1);
    cr_assert_eq(rm_stats_users(lc->hcm.stats), 1);
    rm_stat_inc(lc->stats, RM_LS_DOWNSTREAM_CX_TOTAL);

    struct rm_snapshot *b = build(); /* a rebuild: the same blocks, one more reference each */
    cr_assert_eq(rm_stats_blocks(), with_one);
    cr_assert_eq(b->listeners[0]->stats, lc->stats);
    cr_assert_eq(b->listeners[0]->hcm.stats, lc->hcm.stats);
    cr_assert_eq(rm_stats_users(lc->stats), 2);
    cr_assert_eq(rm_stats_users(lc->hcm.stats), 2);

    /* a connection accepted on <a> counts itself with references of its own */
    struct rm_stats *cx = rm_stats_ref(lc->hcm.stats), *ls = rm_stats_ref(lc->stats);
    rm_snapshot_unref(a);
    cr_assert_eq(rm_stats_users(ls), 2, "b's and the connection's");
    rm_snapshot_unref(b);
    cr_assert_eq(rm_stats_users(ls), 1);
    cr_assert_eq(rm_stats_users(cx), 1);
    int64_t v = 0;
    cr_assert(listed("listener.127.0.0.1_10000.downstream_cx_total", &v), "the connection's");
    cr_assert_eq(v, 1, "counted across rebuilds");
    cr_assert_not(listed("lrl.http_local_rate_limit.enabled", NULL), "filter blocks are gone");
    cr_assert_not(listed("rt.http_local_rate_limit.enabled", NULL), "per-route ones too");
    cr_assert_not(listed("http.ing.fault.aborts_injected", NULL));
    rm_stats_release(ls); /* the connection closes */
    rm_stats_release(cx);
    for (size_t i = 0; i < N_BLOCKS; i++)
        cr_assert_not(listed(blocks[i], NULL), "%s", blocks[i]);
    cr_assert_eq(rm_stats_blocks(), before, "the registry is back where it started");
}

Test(snapshot_stats, rebuilds_do_not_pile_up_references)
{
    size_t before = rm_stats_blocks();
    struct rm_snapshot *cur = build();
    for (int i = 0; i < 20; i++) {
        struct rm_snapshot *next = build();
        rm_snapshot_unref(cur);
        cur = next;
    }
    cr_assert_eq(rm_stats_users(cur->listeners[0]->stats), 1);
    cr_assert_eq(rm_stats_users(cur->listeners[0]->hcm.stats), 1);
    rm_snapshot_unref(cur);
    cr_assert_eq(rm_stats_blocks(), before);
}
