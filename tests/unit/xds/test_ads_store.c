/* The control plane's resource store (sets, versions, diffs) and resource files (one resource,
 * a list, errors with file:line:path, names, duplicates, directory scanning). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "xds/ads_files.h"
#include "xds/ads_store.h"

#define TC "type.googleapis.com/envoy.config.cluster.v3.Cluster"
#define TE "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
#define TL "type.googleapis.com/envoy.config.listener.v3.Listener"

static void add(struct rm_ads_set *s, const char *type, const char *name, const char *bytes)
{
    struct rm_error err;
    cr_assert_eq(rm_ads_set_add(s, type, name, (const uint8_t *)bytes, strlen(bytes), "t", &err),
                 RM_OK, "%s", err.msg);
}

static const struct rm_ads_change *change(const struct rm_ads_diff *d, const char *name)
{
    for (size_t i = 0; i < d->n; i++)
        if (strcmp(d->v[i].name, name) == 0) return &d->v[i];
    return NULL;
}

/* ---- sets and versions -------------------------------------------------------------------- */

Test(ads_store, set_sorted_find_and_duplicates)
{
    struct rm_ads_set s;
    struct rm_error err;
    rm_ads_set_init(&s);
    add(&s, TL, "l1", "L");
    add(&s, TC, "b", "B");
    add(&s, TC, "a", "A");
    add(&s, TE, "a", "EA");
    cr_assert_eq(s.n, 4);
    cr_assert_str_eq(s.v[0].name, "a"); /* Cluster < ClusterLoadAssignment < Listener */
    cr_assert_str_eq(s.v[0].type_url, TC);
    cr_assert_str_eq(s.v[1].name, "b");
    cr_assert_str_eq(s.v[2].type_url, TE);
    size_t first;
    cr_assert_eq(rm_ads_set_type_range(&s, TC, &first), 2);
    cr_assert_eq(first, 0);
    cr_assert_eq(rm_ads_set_type_range(&s, "type.googleapis.com/x.Y", &first), 0);
    cr_assert_not_null(rm_ads_set_find(&s, TE, "a"));
    cr_assert_null(rm_ads_set_find(&s, TE, "b"));
    cr_assert_eq(rm_ads_set_add(&s, TC, "a", (const uint8_t *)"Z", 1, "other.yaml", &err), RM_ERR);
    cr_assert_str_eq(err.msg, "other.yaml: Cluster \"a\" is defined twice (also in t)");
    rm_ads_set_dispose(&s);
}

Test(ads_store, resource_version_is_a_stable_hash_of_the_bytes)
{
    char a[RM_ADS_VERSION_LEN + 1], b[RM_ADS_VERSION_LEN + 1], c[RM_ADS_VERSION_LEN + 1];
    rm_ads_version_of((const uint8_t *)"abc", 3, a);
    rm_ads_version_of((const uint8_t *)"abc", 3, b);
    rm_ads_version_of((const uint8_t *)"abd", 3, c);
    cr_assert_str_eq(a, b);
    cr_assert_str_neq(a, c);
    cr_assert_eq(strlen(a), 16);
    rm_ads_version_of(NULL, 0, a);
    cr_assert_str_eq(a, "cbf29ce484222325"); /* FNV-1a 64 offset basis */
}

Test(ads_store, replace_diffs_and_bumps_only_changed_types)
{
    struct rm_ads_store st;
    struct rm_ads_set s;
    struct rm_ads_diff d = {0};
    char buf[64];
    rm_ads_store_init(&st, "v");
    cr_assert_eq(st.version, 0);
    rm_ads_set_init(&s);
    add(&s, TC, "a", "A");
    add(&s, TC, "b", "B");
    add(&s, TE, "a", "EA");
    cr_assert_eq(rm_ads_store_replace(&st, &s, &d), 3);
    cr_assert_eq(s.n, 0, "the set is moved into the store");
    cr_assert_eq(st.version, 1);
    cr_assert_eq(d.n, 3);
    cr_assert_eq(change(&d, "b")->kind, RM_ADS_ADDED);
    rm_ads_diff_dispose(&d);
    cr_assert_eq(rm_ads_store_type_version(&st, TC), 1);
    cr_assert_eq(rm_ads_store_type_version(&st, TE), 1);
    cr_assert_eq(rm_ads_store_type_version(&st, TL), 0, "never present: the initial state");
    cr_assert_str_eq(rm_ads_store_version_str(&st, 1, buf, sizeof(buf)), "v1");

    /* the same bytes: nothing changes */
    rm_ads_set_init(&s);
    add(&s, TE, "a", "EA");
    add(&s, TC, "b", "B");
    add(&s, TC, "a", "A");
    cr_assert_eq(rm_ads_store_replace(&st, &s, &d), 0);
    cr_assert_eq(d.n, 0);
    cr_assert_eq(st.version, 1);
    cr_assert_eq(s.n, 0, "discarded");

    /* an endpoint edit: only the CLA type moves on */
    rm_ads_set_init(&s);
    add(&s, TC, "a", "A");
    add(&s, TC, "b", "B");
    add(&s, TE, "a", "EA2");
    cr_assert_eq(rm_ads_store_replace(&st, &s, &d), 1);
    cr_assert_eq(d.n, 1);
    cr_assert_eq(d.v[0].kind, RM_ADS_MODIFIED);
    cr_assert_str_eq(d.v[0].type_url, TE);
    rm_ads_diff_dispose(&d);
    cr_assert_eq(st.version, 2);
    cr_assert_eq(rm_ads_store_type_version(&st, TC), 1);
    cr_assert_eq(rm_ads_store_type_version(&st, TE), 2);

    /* a removal and an addition in one go */
    rm_ads_set_init(&s);
    add(&s, TC, "a", "A");
    add(&s, TE, "a", "EA2");
    add(&s, TL, "l", "L");
    cr_assert_eq(rm_ads_store_replace(&st, &s, &d), 2);
    cr_assert_eq(change(&d, "b")->kind, RM_ADS_REMOVED);
    cr_assert_eq(change(&d, "l")->kind, RM_ADS_ADDED);
    rm_ads_diff_dispose(&d);
    cr_assert_eq(rm_ads_store_type_version(&st, TC), 3);
    cr_assert_eq(rm_ads_store_type_version(&st, TE), 2);
    cr_assert_eq(rm_ads_store_type_version(&st, TL), 3);

    /* everything of a type removed: the type changes */
    rm_ads_set_init(&s);
    add(&s, TC, "a", "A");
    add(&s, TE, "a", "EA2");
    cr_assert_eq(rm_ads_store_replace(&st, &s, NULL), 1);
    cr_assert_eq(rm_ads_store_type_version(&st, TL), 4);
    cr_assert_eq(st.cur.n, 2);
    rm_ads_store_dispose(&st);
}

Test(ads_store, type_short_names)
{
    cr_assert_str_eq(rm_ads_type_short(TC), "Cluster");
    cr_assert_str_eq(rm_ads_type_short(TE), "ClusterLoadAssignment");
    cr_assert_str_eq(rm_ads_type_short("Plain"), "Plain");
}

/* ---- files -------------------------------------------------------------------------------- */

static int load(const char *text, struct rm_ads_set *s, struct rm_error *err)
{
    rm_ads_set_init(s);
    return rm_ads_load_text(text, strlen(text), "f.yaml", s, err);
}

static void cluster_of(const struct rm_ads_resource *r, Envoy__Config__Cluster__V3__Cluster **out)
{
    *out = envoy__config__cluster__v3__cluster__unpack(NULL, r->len, r->value);
    cr_assert_not_null(*out);
}

Test(ads_files, one_resource)
{
    struct rm_ads_set s;
    struct rm_error err;
    cr_assert_eq(load("\"@type\": " TC "\n"
                      "name: backend\n"
                      "type: EDS\n"
                      "lb_policy: RANDOM\n"
                      "connect_timeout: 0.25s\n",
                      &s, &err),
                 RM_OK, "%s", err.msg);
    cr_assert_eq(s.n, 1);
    cr_assert_str_eq(s.v[0].type_url, TC);
    cr_assert_str_eq(s.v[0].name, "backend");
    cr_assert_str_eq(s.v[0].origin, "f.yaml");
    Envoy__Config__Cluster__V3__Cluster *c;
    cluster_of(&s.v[0], &c);
    cr_assert_eq(c->lb_policy, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__RANDOM);
    cr_assert_eq(c->connect_timeout->nanos, 250000000);
    envoy__config__cluster__v3__cluster__free_unpacked(c, NULL);
    rm_ads_set_dispose(&s);
}

Test(ads_files, list_json_and_cla_names)
{
    struct rm_ads_set s;
    struct rm_error err;
    cr_assert_eq(load("{\"version_info\": \"ignored\", \"resources\": [\n"
                      " {\"@type\": \"" TE "\", \"cluster_name\": \"backend\"},\n"
                      " {\"@type\": \"" TC "\", \"name\": \"backend\"}]}\n",
                      &s, &err),
                 RM_OK, "%s", err.msg);
    cr_assert_eq(s.n, 2);
    cr_assert_not_null(rm_ads_set_find(&s, TE, "backend"));
    cr_assert_not_null(rm_ads_set_find(&s, TC, "backend"));
    rm_ads_set_dispose(&s);
}

Test(ads_files, empty_files_hold_nothing)
{
    struct rm_ads_set s;
    struct rm_error err;
    cr_assert_eq(load("", &s, &err), RM_OK, "%s", err.msg);
    cr_assert_eq(s.n, 0);
    cr_assert_eq(load("# only a comment\n", &s, &err), RM_OK, "%s", err.msg);
    cr_assert_eq(s.n, 0);
    cr_assert_eq(load("resources: []\n", &s, &err), RM_OK, "%s", err.msg);
    cr_assert_eq(s.n, 0);
}

static void expect_error(const char *text, const char *msg)
{
    struct rm_ads_set s;
    struct rm_error err;
    cr_assert_eq(load(text, &s, &err), RM_ERR, "accepted: %s", text);
    cr_assert_str_eq(err.msg, msg);
    rm_ads_set_dispose(&s);
}

Test(ads_files, errors_name_file_line_and_path)
{
    expect_error("\"@type\": " TC "\nname: a\nlb_policy: FASTEST\n",
                 "f.yaml:3: lb_policy: unknown enum value \"FASTEST\" (expected one of: "
                 "ROUND_ROBIN, LEAST_REQUEST, RING_HASH, RANDOM, MAGLEV, CLUSTER_PROVIDED, "
                 "LOAD_BALANCING_POLICY_CONFIG)");
    expect_error("resources:\n"
                 "- \"@type\": " TC "\n"
                 "  name: a\n"
                 "- \"@type\": " TC "\n"
                 "  name: b\n"
                 "  connect_timeout: soon\n",
                 "f.yaml:6: resources[1].connect_timeout: expected a duration such as \"1.5s\", "
                 "got \"soon\"");
    expect_error("resources:\n"
                 "- \"@type\": " TC "\n"
                 "  name: a\n"
                 "- \"@type\": " TC "\n"
                 "  type: STATIC\n",
                 "f.yaml:4: resources[1]: Cluster has no name (field name)");
    expect_error("\"@type\": " TE "\nendpoints: []\n",
                 "f.yaml:1: ClusterLoadAssignment has no name (field cluster_name)");
    expect_error("resources:\n- \"@type\": " TC "\n  name: a\n- \"@type\": " TC "\n  name: a\n",
                 "f.yaml: Cluster \"a\" is defined twice (also in f.yaml)");
    expect_error("type_url: " TL "\nresources:\n- \"@type\": " TC "\n  name: a\n",
                 "f.yaml:3: resources[0]: type " TC ", but the file's type_url is " TL);
    expect_error("nonce: x\nresources: []\n",
                 "f.yaml:1: nonce: not allowed in a resource file (only resources, version_info "
                 "and type_url)");
    expect_error("name: a\n", "f.yaml:1: missing \"@type\" (an Any needs its type URL)");
    expect_error("\"@type\": type.googleapis.com/google.protobuf.Duration\nvalue: 1s\n",
                 "f.yaml:1: google.protobuf.Duration is not a resource type with a name");
    expect_error("a: [\n", "f.yaml:2: invalid YAML: did not find expected node content while "
                           "parsing a flow node");
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

Test(ads_files, directory_scan)
{
    char dir[] = "/tmp/remora-ads-files-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    write_file(dir, "b.yaml", "\"@type\": " TC "\nname: b\n");
    write_file(dir, "a.json", "{\"@type\": \"" TC "\", \"name\": \"a\"}");
    write_file(dir, "c.yml", "resources:\n- {\"@type\": \"" TL "\", name: l}\n");
    write_file(dir, ".hidden.yaml", "broken: [");
    write_file(dir, "notes.txt", "broken: [");
    write_file(dir, "x.yaml~", "broken: [");
    char sub[600];
    snprintf(sub, sizeof(sub), "%s/sub.yaml", dir);
    mkdir(sub, 0700); /* a directory, even with a resource-like name, is skipped */
    struct rm_ads_set s;
    struct rm_error err;
    size_t nfiles;
    cr_assert_eq(rm_ads_load_dir(dir, &s, &nfiles, &err), RM_OK, "%s", err.msg);
    cr_assert_eq(nfiles, 3);
    cr_assert_eq(s.n, 3);
    char origin[600];
    snprintf(origin, sizeof(origin), "%s/a.json", dir);
    cr_assert_str_eq(rm_ads_set_find(&s, TC, "a")->origin, origin);
    rm_ads_set_dispose(&s);
    /* one bad file fails the whole directory, leaving the set empty */
    write_file(dir, "d.yaml", "\"@type\": " TC "\nname: a\n");
    cr_assert_eq(rm_ads_load_dir(dir, &s, NULL, &err), RM_ERR);
    cr_assert(strstr(err.msg, "d.yaml: Cluster \"a\" is defined twice (also in "), "%s", err.msg);
    cr_assert_eq(s.n, 0);
    cr_assert_eq(rm_ads_load_dir("/nonexistent-remora", &s, NULL, &err), RM_ERR);
    cr_assert_str_eq(err.msg,
                     "/nonexistent-remora: cannot open the directory: No such file or directory");
    char cmd[700];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}
