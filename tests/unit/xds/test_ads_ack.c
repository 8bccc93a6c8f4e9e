/* SotW ACK/NACK bookkeeping (xds/ads_ack.h). */
#include <criterion/criterion.h>

#include "google/rpc/status.pb-c.h"
#include "xds/ads_ack.h"

Test(ads_ack, ack_nack_bookkeeping)
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
