/* EDS over ADS, the pure part (xds/ads_eds.h): response validation (good assignments, a
 * hostname, a duplicate, a wrong type, unknown fields) and SotW ACK/NACK bookkeeping. */
#include <criterion/criterion.h>
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
