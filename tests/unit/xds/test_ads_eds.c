/* EDS over ADS, the pure part (xds/ads_eds.h): response validation (good assignments, a
 * hostname, a duplicate, a wrong type, unknown fields) and SotW ACK/NACK bookkeeping. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/rpc/status.pb-c.h"
#include "proxy/config/pbtypes.h"
#include "xds/ads_eds.h"

typedef Envoy__Config__Endpoint__V3__ClusterLoadAssignment Cla;
typedef Envoy__Service__Discovery__V3__DiscoveryResponse Response;

/* A one-endpoint assignment packed into <any>. */
static void pack_cla(Google__Protobuf__Any *any, const char *name, const char *addr, uint32_t port)
{
    Envoy__Config__Core__V3__SocketAddress sa = ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__INIT;
    sa.address = (char *)addr;
    sa.port_specifier_case = ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE;
    sa.port_value = port;
    Envoy__Config__Core__V3__Address a = ENVOY__CONFIG__CORE__V3__ADDRESS__INIT;
    a.address_case = ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS;
    a.socket_address = &sa;
    Envoy__Config__Endpoint__V3__Endpoint ep = ENVOY__CONFIG__ENDPOINT__V3__ENDPOINT__INIT;
    ep.address = &a;
    Envoy__Config__Endpoint__V3__LbEndpoint le = ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__INIT;
    le.host_identifier_case = ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__HOST_IDENTIFIER_ENDPOINT;
    le.endpoint = &ep;
    Envoy__Config__Endpoint__V3__LbEndpoint *les[] = {&le};
    Envoy__Config__Endpoint__V3__LocalityLbEndpoints lle =
        ENVOY__CONFIG__ENDPOINT__V3__LOCALITY_LB_ENDPOINTS__INIT;
    lle.n_lb_endpoints = 1;
    lle.lb_endpoints = les;
    Envoy__Config__Endpoint__V3__LocalityLbEndpoints *lles[] = {&lle};
    Cla cla = ENVOY__CONFIG__ENDPOINT__V3__CLUSTER_LOAD_ASSIGNMENT__INIT;
    cla.cluster_name = (char *)name;
    cla.n_endpoints = 1;
    cla.endpoints = lles;
    google__protobuf__any__init(any);
    rm_pb_any_pack(&cla.base, any);
}

struct fx {
    Google__Protobuf__Any any[2];
    Google__Protobuf__Any *ptrs[2];
    Response r;
};

static void fx_init(struct fx *f, size_t n)
{
    envoy__service__discovery__v3__discovery_response__init(&f->r);
    f->r.type_url = (char *)RM_EDS_TYPE_URL;
    f->r.n_resources = n;
    f->r.resources = f->ptrs;
    for (size_t i = 0; i < 2; i++)
        f->ptrs[i] = &f->any[i];
}

static void fx_free(struct fx *f, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(f->any[i].type_url);
        free(f->any[i].value.data);
    }
}

Test(ads_eds, good_response)
{
    struct fx f;
    fx_init(&f, 2);
    pack_cla(&f.any[0], "a", "127.0.0.1", 8080);
    pack_cla(&f.any[1], "b", "::1", 9090);
    struct rm_eds_response out;
    struct rm_error err = {{0}};
    cr_assert_eq(rm_eds_response_parse(&f.r, &out, &err), RM_OK, "%s", err.msg);
    cr_assert_eq(out.n, 2);
    const struct rm_eds_assignment *b = rm_eds_response_find(&out, "b");
    cr_assert(b && b->n == 1 && b->specs[0].addr.ss_family == AF_INET6 && b->specs[0].weight == 1);
    cr_assert_null(rm_eds_response_find(&out, "c"));
    rm_eds_response_clear(&out);
    rm_eds_response_clear(&out); /* idempotent */
    fx_free(&f, 2);
}

Test(ads_eds, hostname_is_rejected_with_its_path)
{
    struct fx f;
    fx_init(&f, 2);
    pack_cla(&f.any[0], "a", "127.0.0.1", 8080);
    pack_cla(&f.any[1], "b", "backend.example", 80);
    struct rm_eds_response out;
    struct rm_error err = {{0}};
    cr_assert_eq(rm_eds_response_parse(&f.r, &out, &err), RM_ERR);
    cr_assert_eq(out.n, 0);
    cr_assert(strstr(err.msg, "ClusterLoadAssignment b: resources[1].endpoints[0].lb_endpoints[0]"
                              ".endpoint.address"),
              "%s", err.msg);
    fx_free(&f, 2);
}

Test(ads_eds, duplicate_and_wrong_type)
{
    struct fx f;
    fx_init(&f, 2);
    pack_cla(&f.any[0], "a", "127.0.0.1", 1);
    pack_cla(&f.any[1], "a", "127.0.0.1", 2);
    struct rm_eds_response out;
    struct rm_error err = {{0}};
    cr_assert_eq(rm_eds_response_parse(&f.r, &out, &err), RM_ERR);
    cr_assert(strstr(err.msg, "duplicate of resources[0]"), "%s", err.msg);
    f.r.type_url = (char *)"type.googleapis.com/envoy.config.cluster.v3.Cluster";
    cr_assert_eq(rm_eds_response_parse(&f.r, &out, &err), RM_ERR);
    cr_assert(strstr(err.msg, "type_url"), "%s", err.msg);
    fx_free(&f, 2);
}

Test(ads_eds, unknown_field_is_rejected)
{
    struct fx f;
    fx_init(&f, 1);
    pack_cla(&f.any[0], "a", "127.0.0.1", 1);
    /* append field #99 (varint 1) to the payload */
    size_t n = f.any[0].value.len;
    f.any[0].value.data = realloc(f.any[0].value.data, n + 3);
    memcpy(f.any[0].value.data + n, "\x98\x06\x01", 3);
    f.any[0].value.len = n + 3;
    struct rm_eds_response out;
    struct rm_error err = {{0}};
    cr_assert_eq(rm_eds_response_parse(&f.r, &out, &err), RM_ERR);
    cr_assert(strstr(err.msg, "unsupported field #99"), "%s", err.msg);
    fx_free(&f, 1);
}

Test(ads_eds, ack_nack_bookkeeping)
{
    struct rm_ads_sotw st = {0};
    Envoy__Service__Discovery__V3__DiscoveryRequest req =
        ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_REQUEST__INIT;
    Google__Rpc__Status status;
    rm_ads_sotw_fill(&st, &req, &status); /* first request: nothing accepted yet */
    cr_assert_str_eq(req.version_info, "");
    cr_assert_str_eq(req.response_nonce, "");
    cr_assert_null(req.error_detail);
    rm_ads_sotw_ack(&st, "v1", "n1");
    rm_ads_sotw_fill(&st, &req, &status);
    cr_assert_str_eq(req.version_info, "v1");
    cr_assert_str_eq(req.response_nonce, "n1");
    cr_assert_null(req.error_detail);
    rm_ads_sotw_nack(&st, "n2", "bad address");
    rm_ads_sotw_fill(&st, &req, &status);
    cr_assert_str_eq(req.version_info, "v1"); /* the last accepted one */
    cr_assert_str_eq(req.response_nonce, "n2");
    cr_assert(req.error_detail && req.error_detail->code == 13);
    cr_assert_str_eq(req.error_detail->message, "bad address");
    rm_ads_sotw_new_stream(&st); /* reconnect: version kept, no nonce, no error */
    rm_ads_sotw_fill(&st, &req, &status);
    cr_assert_str_eq(req.version_info, "v1");
    cr_assert_str_eq(req.response_nonce, "");
    cr_assert_null(req.error_detail);
    rm_ads_sotw_free(&st);
}

/* ---- many resources, unchanged ones, the order of errors ---------------------------------- */

#define MAXR 8

struct fxn {
    Google__Protobuf__Any any[MAXR];
    Google__Protobuf__Any *ptrs[MAXR];
    size_t n;
    Response r;
};

/* A response of assignments "name:port" ("name:host" for an address that is no IP). */
static void fxn_init(struct fxn *f, const char *const *specs, size_t n)
{
    cr_assert_leq(n, MAXR);
    envoy__service__discovery__v3__discovery_response__init(&f->r);
    f->r.type_url = (char *)RM_EDS_TYPE_URL;
    f->r.n_resources = n;
    f->r.resources = f->ptrs;
    f->n = n;
    for (size_t i = 0; i < n; i++) {
        char name[32];
        const char *colon = strchr(specs[i], ':');
        snprintf(name, sizeof(name), "%.*s", (int)(colon - specs[i]), specs[i]);
        const char *v = colon + 1;
        bool ip = v[0] >= '0' && v[0] <= '9';
        pack_cla(&f->any[i], name, ip ? "127.0.0.1" : v, ip ? (uint32_t)atoi(v) : 80);
        f->ptrs[i] = &f->any[i];
    }
}

static void fxn_free(struct fxn *f)
{
    for (size_t i = 0; i < f->n; i++) {
        free(f->any[i].type_url);
        free(f->any[i].value.data);
    }
}

/* Parse <specs> against <seen>: RM_OK or RM_ERR; the message in <msg>. */
static int parse_specs(const char *const *specs, size_t n, const struct rm_eds_seen *seen,
                       struct rm_eds_response *out, char *msg)
{
    struct fxn f;
    fxn_init(&f, specs, n);
    struct rm_error err = {{0}};
    int rc = rm_eds_response_parse_seen(&f.r, seen, out, &err);
    strcpy(msg, err.msg);
    fxn_free(&f);
    return rc;
}

static uint16_t port_of(const struct rm_eds_assignment *a)
{
    return ntohs(((const struct sockaddr_in *)&a->specs[0].addr)->sin_port);
}

Test(ads_eds, unchanged_resources_are_not_decoded_again)
{
    struct rm_eds_seen seen = {0};
    struct rm_eds_response out;
    char msg[1024];
    const char *v1[] = {"a:8080", "b:9090"};
    cr_assert_eq(parse_specs(v1, 2, &seen, &out, msg), RM_OK, "%s", msg);
    cr_assert(!out.a[0].unchanged && !out.a[1].unchanged, "nothing seen yet");
    rm_eds_seen_commit(&seen, &out);
    rm_eds_response_clear(&out);
    cr_assert_eq(seen.n, 2);

    cr_assert_eq(parse_specs(v1, 2, &seen, &out, msg), RM_OK, "%s", msg);
    const struct rm_eds_assignment *a = rm_eds_response_find(&out, "a");
    cr_assert(a && a->unchanged && !a->la && !a->specs && a->n == 0);
    cr_assert_str_eq(a->name, "a");
    cr_assert(rm_eds_response_find(&out, "b")->unchanged);
    rm_eds_seen_commit(&seen, &out); /* names move from the old table to the new one */
    rm_eds_response_clear(&out);

    const char *v2[] = {"a:8080", "b:9091"};
    cr_assert_eq(parse_specs(v2, 2, &seen, &out, msg), RM_OK, "%s", msg);
    cr_assert(rm_eds_response_find(&out, "a")->unchanged);
    const struct rm_eds_assignment *b = rm_eds_response_find(&out, "b");
    cr_assert(!b->unchanged && b->n == 1 && port_of(b) == 9091, "new bytes: decoded");
    rm_eds_seen_commit(&seen, &out);
    rm_eds_response_clear(&out);

    const char *v3[] = {"b:9091"}; /* SotW EDS may send some resources only */
    cr_assert_eq(parse_specs(v3, 1, &seen, &out, msg), RM_OK, "%s", msg);
    cr_assert(out.a[0].unchanged);
    rm_eds_seen_commit(&seen, &out);
    rm_eds_response_clear(&out);
    cr_assert_eq(seen.n, 1, "the table follows the last accepted response");

    const char *v4[] = {"a:8080"};
    cr_assert_eq(parse_specs(v4, 1, &seen, &out, msg), RM_OK, "%s", msg);
    cr_assert(!out.a[0].unchanged && port_of(&out.a[0]) == 8080);
    rm_eds_response_clear(&out);
    rm_eds_seen_free(&seen);
    rm_eds_seen_free(&seen); /* idempotent */
}

Test(ads_eds, unchanged_needs_the_assignment_type)
{
    struct rm_eds_seen seen = {0};
    struct rm_eds_response out;
    char msg[1024];
    const char *v1[] = {"a:8080"};
    cr_assert_eq(parse_specs(v1, 1, &seen, &out, msg), RM_OK, "%s", msg);
    rm_eds_seen_commit(&seen, &out);
    rm_eds_response_clear(&out);
    struct fxn f;
    fxn_init(&f, v1, 1);
    free(f.any[0].type_url);
    f.any[0].type_url = strdup("type.googleapis.com/envoy.config.cluster.v3.Cluster");
    struct rm_error err = {{0}};
    cr_assert_eq(rm_eds_response_parse_seen(&f.r, &seen, &out, &err), RM_ERR);
    cr_assert(strstr(err.msg, "resources[0]: expected type"), "%s", err.msg);
    fxn_free(&f);
    rm_eds_seen_free(&seen);
}

/* Both parsers, with and without a table that knows every good resource, say <want>. */
static void expect_error(const char *const *specs, size_t n, const char *want)
{
    struct rm_eds_seen seen = {0};
    struct rm_eds_response out;
    char msg[1024];
    const char *good[MAXR];
    size_t n_good = 0;
    for (size_t i = 0; i < n; i++) { /* the good ones, unique, as an earlier response */
        bool dup = false;
        for (size_t k = 0; k < n_good; k++)
            dup |= strncmp(good[k], specs[i], strchr(specs[i], ':') - specs[i] + 1) == 0;
        if (!dup && strchr(specs[i], ':')[1] >= '0' && strchr(specs[i], ':')[1] <= '9')
            good[n_good++] = specs[i];
    }
    cr_assert_eq(parse_specs(good, n_good, NULL, &out, msg), RM_OK, "%s", msg);
    rm_eds_seen_commit(&seen, &out);
    rm_eds_response_clear(&out);
    cr_assert_eq(parse_specs(specs, n, NULL, &out, msg), RM_ERR);
    cr_assert(strstr(msg, want), "without the table: %s", msg);
    cr_assert_eq(out.n, 0);
    cr_assert_eq(parse_specs(specs, n, &seen, &out, msg), RM_ERR);
    cr_assert(strstr(msg, want), "with the table: %s", msg);
    cr_assert_eq(out.n, 0);
    rm_eds_seen_free(&seen);
}

Test(ads_eds, errors_come_in_resource_order)
{
    const char *dup_first[] = {"a:1", "b:2", "a:3", "c:bad.example"};
    expect_error(dup_first, 4, "ClusterLoadAssignment a: resources[2]: duplicate of resources[0]");
    const char *bad_first[] = {"a:1", "c:bad.example", "a:3"};
    expect_error(bad_first, 3, "ClusterLoadAssignment c: resources[1].endpoints[0]");
    const char *two_dups[] = {"a:1", "b:2", "b:3", "a:4", "b:5"};
    expect_error(two_dups, 5, "ClusterLoadAssignment b: resources[2]: duplicate of resources[1]");
}

Test(ads_eds, unsorted_responses_are_found_by_name)
{
    const char *v[] = {"c:3", "a:1", "d:4", "b:2"};
    struct rm_eds_response out;
    char msg[1024];
    cr_assert_eq(parse_specs(v, 4, NULL, &out, msg), RM_OK, "%s", msg);
    for (int i = 0; i < 4; i++) {
        char name[2] = {(char)('a' + i), 0};
        const struct rm_eds_assignment *a = rm_eds_response_find(&out, name);
        cr_assert(a && port_of(a) == i + 1, "%s", name);
    }
    for (int i = 3; i >= 0; i--) { /* backwards, and each twice: the hint misses, then hits */
        char name[2] = {(char)('a' + i), 0};
        cr_assert_eq(port_of(rm_eds_response_find(&out, name)), i + 1, "%s", name);
        cr_assert_eq(port_of(rm_eds_response_find(&out, name)), i + 1, "%s again", name);
    }
    cr_assert_null(rm_eds_response_find(&out, "e"));
    cr_assert_null(rm_eds_response_find(&out, ""));
    cr_assert_eq(port_of(rm_eds_response_find(&out, "c")), 3, "after misses");
    rm_eds_response_clear(&out);
    struct rm_eds_response empty = {0};
    cr_assert_null(rm_eds_response_find(&empty, "a"));
}

Test(ads_eds, unique_names_keep_the_first_of_each)
{
    const char *in[] = {"b", "a", "b", "c", "a", "b", "d"};
    char *names[7];
    for (int i = 0; i < 7; i++)
        names[i] = strdup(in[i]);
    size_t n = rm_eds_unique_names(names, 7);
    cr_assert_eq(n, 4);
    cr_assert_str_eq(names[0], "b");
    cr_assert_str_eq(names[1], "a");
    cr_assert_str_eq(names[2], "c");
    cr_assert_str_eq(names[3], "d");
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    cr_assert_eq(rm_eds_unique_names(NULL, 0), 0);
}
