/* State-of-the-World subscriptions (xds/ads_sub.h): request classification (first, ACK,
 * NACK, stale nonces, updates), wildcard and named subscriptions, when a response is due and
 * what it carries, versions per type. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/rpc/status.pb-c.h"
#include "xds/ads_sub.h"

#define TC "type.googleapis.com/envoy.config.cluster.v3.Cluster"
#define TE "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"

struct fx {
    struct rm_ads_store st;
    struct rm_ads_sotw sub;
    unsigned nonce;
};

/* Make the store hold exactly these "type/name=bytes" triples. */
static void store_set(struct rm_ads_store *st, const char *const *items)
{
    struct rm_ads_set s;
    rm_ads_set_init(&s);
    for (; *items; items++) {
        char type[128], name[64], bytes[64];
        cr_assert_eq(sscanf(*items, "%127[^ ] %63[^=]=%63s", type, name, bytes), 3);
        rm_ads_set_add(&s, type, name, (const uint8_t *)bytes, strlen(bytes), NULL, NULL);
    }
    rm_ads_store_replace(st, &s, NULL);
}

static void fx_init(struct fx *f, const char *type)
{
    memset(f, 0, sizeof(*f));
    rm_ads_store_init(&f->st, NULL);
    static const char *const items[] = {TC " a=A1", TC " b=B1", TE " a=EA1", TE " b=EB1", NULL};
    store_set(&f->st, items);
    rm_ads_sotw_init(&f->sub, type);
}

static void fx_fini(struct fx *f)
{
    rm_ads_sotw_dispose(&f->sub);
    rm_ads_store_dispose(&f->st);
}

static enum rm_ads_req_kind request(struct fx *f, const char *version, const char *nonce,
                                    const char *const *names, bool nack)
{
    RmDiscoveryRequest r = ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_REQUEST__INIT;
    Google__Rpc__Status err = GOOGLE__RPC__STATUS__INIT;
    r.type_url = f->sub.type_url;
    r.version_info = (char *)(version ? version : "");
    r.response_nonce = (char *)(nonce ? nonce : "");
    size_t n = 0;
    while (names && names[n])
        n++;
    r.n_resource_names = n;
    r.resource_names = (char **)names;
    if (nack) {
        err.code = 13;
        err.message = "rejected";
        r.error_detail = &err;
    }
    return rm_ads_sotw_request(&f->sub, &r);
}

/* Build and commit a response if due; returns its resource count, or -1 when none was due.
 * The nonce and version go to <nonce>/<version> (may be NULL). */
static int respond(struct fx *f, char *nonce, char *version)
{
    RmDiscoveryResponse resp;
    char vb[RM_ADS_VERSION_MAX], nb[RM_ADS_NONCE_MAX];
    if (!rm_ads_sotw_build(&f->sub, &f->st, &resp, vb)) return -1;
    snprintf(nb, sizeof(nb), "%u", ++f->nonce);
    resp.nonce = nb;
    cr_assert_str_eq(resp.type_url, f->sub.type_url);
    for (size_t i = 0; i < resp.n_resources; i++)
        cr_assert_str_eq(resp.resources[i]->type_url, f->sub.type_url);
    /* it packs (what the server sends) */
    size_t len = protobuf_c_message_get_packed_size(&resp.base);
    uint8_t *buf = malloc(len + 1);
    protobuf_c_message_pack(&resp.base, buf);
    free(buf);
    rm_ads_sotw_commit(&f->sub, &f->st, &resp);
    int n = (int)resp.n_resources;
    if (nonce) strcpy(nonce, nb);
    if (version) strcpy(version, vb);
    rm_ads_sotw_response_dispose(&resp);
    return n;
}

static const char *const NONE[] = {NULL};

Test(ads_sotw, wildcard_first_ack_and_quiet)
{
    struct fx f;
    char nonce[32], version[96];
    fx_init(&f, TC);
    cr_assert_eq(request(&f, "", "", NONE, false), RM_ADS_REQ_FIRST);
    cr_assert(f.sub.wildcard, "an empty first list is the (legacy) wildcard");
    cr_assert_eq(respond(&f, nonce, version), 2);
    cr_assert_str_eq(version, "1");
    cr_assert_eq(f.sub.state, RM_ADS_SUB_SENT);
    cr_assert_eq(respond(&f, NULL, NULL), -1, "one response at a time");
    cr_assert_eq(request(&f, version, nonce, NONE, false), RM_ADS_REQ_ACK);
    cr_assert_eq(f.sub.state, RM_ADS_SUB_ACKED);
    cr_assert_str_eq(f.sub.acked, "1");
    cr_assert_eq(respond(&f, NULL, NULL), -1, "ACKed and nothing changed: quiet");
    /* the same request again (e.g. after a subscription-neutral retry): no response */
    cr_assert_eq(request(&f, version, nonce, NONE, false), RM_ADS_REQ_UPDATE);
    cr_assert_eq(respond(&f, NULL, NULL), -1);
    fx_fini(&f);
}

Test(ads_sotw, empty_type_wildcard_gets_an_empty_response)
{
    struct fx f;
    char version[96];
    fx_init(&f, "type.googleapis.com/envoy.config.listener.v3.Listener");
    static const char *const star[] = {"*", NULL};
    cr_assert_eq(request(&f, "", "", star, false), RM_ADS_REQ_FIRST);
    cr_assert_eq(respond(&f, NULL, version), 0);
    cr_assert_str_eq(version, "0", "a type never seen is at the initial version");
    fx_fini(&f);
}

Test(ads_sotw, store_change_pushes_the_full_state_with_the_type_version)
{
    struct fx f;
    char nonce[32], version[96];
    fx_init(&f, TC);
    request(&f, "", "", NONE, false);
    respond(&f, nonce, version);
    request(&f, version, nonce, NONE, false);
    /* an endpoint change does not concern CDS */
    static const char *const v2[] = {TC " a=A1", TC " b=B1", TE " a=EA2", TE " b=EB1", NULL};
    store_set(&f.st, v2);
    cr_assert_eq(respond(&f, NULL, NULL), -1);
    /* a cluster change does: everything subscribed, at the new version */
    static const char *const v3[] = {TC " a=A1", TC " b=B2", TC " c=C1", TE " a=EA2", NULL};
    store_set(&f.st, v3);
    cr_assert_eq(respond(&f, nonce, version), 3);
    cr_assert_str_eq(version, "3");
    request(&f, version, nonce, NONE, false);
    /* a deletion is a change too (the response lacks it) */
    static const char *const v4[] = {TC " a=A1", TC " c=C1", TE " a=EA2", NULL};
    store_set(&f.st, v4);
    cr_assert_eq(respond(&f, nonce, version), 2);
    cr_assert_str_eq(version, "4");
    fx_fini(&f);
}

Test(ads_sotw, named_subscription_grows_and_shrinks)
{
    struct fx f;
    char nonce[32], version[96];
    fx_init(&f, TE);
    static const char *const a[] = {"a", NULL};
    static const char *const ab[] = {"a", "b", NULL};
    static const char *const aghost[] = {"a", "ghost", NULL};
    cr_assert_eq(request(&f, "", "", a, false), RM_ADS_REQ_FIRST);
    cr_assert(!f.sub.wildcard);
    cr_assert_eq(respond(&f, nonce, version), 1);
    /* ACK and ask for more in the same request: the grown set is sent at once */
    cr_assert_eq(request(&f, version, nonce, ab, false), RM_ADS_REQ_ACK);
    cr_assert_eq(respond(&f, nonce, version), 2);
    cr_assert_eq(request(&f, version, nonce, ab, false), RM_ADS_REQ_ACK);
    /* a change to a resource not subscribed: quiet */
    static const char *const v2[] = {TC " a=A9", TE " a=EA1", TE " b=EB1", TE " c=EC1", NULL};
    store_set(&f.st, v2);
    cr_assert_eq(respond(&f, NULL, NULL), -1);
    /* a name that does not exist adds nothing to send; dropping b does (it is a new set) */
    cr_assert_eq(request(&f, version, nonce, aghost, false), RM_ADS_REQ_UPDATE);
    cr_assert_eq(respond(&f, nonce, version), 1);
    request(&f, version, nonce, aghost, false);
    /* once names were set, [] means nothing rather than everything */
    cr_assert_eq(request(&f, version, nonce, NONE, false), RM_ADS_REQ_UPDATE);
    cr_assert(!f.sub.wildcard);
    cr_assert_eq(respond(&f, NULL, NULL), 0);
    fx_fini(&f);
}

Test(ads_sotw, explicit_star_with_names)
{
    struct fx f;
    fx_init(&f, TC);
    static const char *const star_a[] = {"*", "a", NULL};
    request(&f, "", "", star_a, false);
    cr_assert(f.sub.wildcard);
    cr_assert_eq(f.sub.names.n, 1);
    cr_assert_eq(respond(&f, NULL, NULL), 2);
    fx_fini(&f);
}

Test(ads_sotw, nack_keeps_quiet_until_a_change)
{
    struct fx f;
    char nonce[32], version[96];
    fx_init(&f, TC);
    request(&f, "", "", NONE, false);
    respond(&f, nonce, version);
    cr_assert_eq(request(&f, "", nonce, NONE, true), RM_ADS_REQ_NACK);
    cr_assert_eq(f.sub.state, RM_ADS_SUB_NACKED);
    cr_assert_str_eq(f.sub.acked, "", "a NACK is not an ACK");
    cr_assert_eq(respond(&f, NULL, NULL), -1, "the same set would be NACKed again");
    static const char *const v2[] = {TC " a=A2", TC " b=B1", NULL};
    store_set(&f.st, v2);
    cr_assert_eq(respond(&f, nonce, version), 2);
    cr_assert_eq(request(&f, version, nonce, NONE, false), RM_ADS_REQ_ACK);
    cr_assert_str_eq(f.sub.acked, "2");
    fx_fini(&f);
}

Test(ads_sotw, stale_nonce_is_ignored_entirely)
{
    struct fx f;
    char n1[32], n2[32], version[96];
    fx_init(&f, TE);
    static const char *const a[] = {"a", NULL};
    static const char *const ab[] = {"a", "b", NULL};
    request(&f, "", "", a, false);
    respond(&f, n1, version);
    request(&f, version, n1, a, false);
    static const char *const v2[] = {TE " a=EA2", TE " b=EB1", NULL};
    store_set(&f.st, v2);
    respond(&f, n2, version); /* out: n2 */
    /* a request that still names n1 crossed our response: ignored, names included */
    cr_assert_eq(request(&f, "1", n1, ab, false), RM_ADS_REQ_STALE);
    cr_assert_eq(f.sub.names.n, 1);
    cr_assert_eq(f.sub.state, RM_ADS_SUB_SENT);
    /* even a NACK with an old nonce */
    cr_assert_eq(request(&f, "1", n1, a, true), RM_ADS_REQ_STALE);
    cr_assert_eq(f.sub.state, RM_ADS_SUB_SENT);
    cr_assert_eq(request(&f, version, n2, a, false), RM_ADS_REQ_ACK);
    fx_fini(&f);
}

Test(ads_sotw, reconnect_is_answered_even_when_versions_match)
{
    struct fx f;
    fx_init(&f, TC);
    /* a new stream: the client's last accepted version, no nonce */
    cr_assert_eq(request(&f, "1", "", NONE, false), RM_ADS_REQ_FIRST);
    cr_assert_eq(respond(&f, NULL, NULL), 2);
    fx_fini(&f);
}

Test(ads_sotw, state_names)
{
    cr_assert_str_eq(rm_ads_sub_state_name(RM_ADS_SUB_NACKED), "NACKED");
    cr_assert_str_eq(rm_ads_req_kind_name(RM_ADS_REQ_STALE), "STALE");
}
