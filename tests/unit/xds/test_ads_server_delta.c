/* Delta subscriptions (xds/ads_sub.h): subscribe / unsubscribe bookkeeping, what the client
 * has (initial_resource_versions, then what was sent), upserts of changed resources only,
 * removed_resources for deletions and unknown names, wildcard rules, nonces. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/rpc/status.pb-c.h"
#include "xds/ads_sub.h"

#define TC "type.googleapis.com/envoy.config.cluster.v3.Cluster"

typedef Envoy__Service__Discovery__V3__DeltaDiscoveryRequest__InitialResourceVersionsEntry IrvEntry;

struct fx {
    struct rm_ads_store st;
    struct rm_ads_delta sub;
    unsigned nonce;
    char last_nonce[32];
    /* the last response, as "name@version" and removed names */
    char upserts[8][64];
    size_t nup;
    char removed[8][64];
    size_t nrem;
};

static void store_set(struct rm_ads_store *st, const char *const *items)
{
    struct rm_ads_set s;
    rm_ads_set_init(&s);
    for (; *items; items++) {
        char name[64], bytes[64];
        cr_assert_eq(sscanf(*items, "%63[^=]=%63s", name, bytes), 2);
        rm_ads_set_add(&s, TC, name, (const uint8_t *)bytes, strlen(bytes), NULL, NULL);
    }
    rm_ads_store_replace(st, &s, NULL);
}

static const char *version_of(const struct fx *f, const char *name)
{
    return rm_ads_set_find(&f->st.cur, TC, name)->version;
}

static void fx_init(struct fx *f)
{
    memset(f, 0, sizeof(*f));
    rm_ads_store_init(&f->st, NULL);
    static const char *const items[] = {"a=A1", "b=B1", "c=C1", NULL};
    store_set(&f->st, items);
    rm_ads_delta_init(&f->sub, TC);
}

static void fx_fini(struct fx *f)
{
    rm_ads_delta_dispose(&f->sub);
    rm_ads_store_dispose(&f->st);
}

static size_t count(const char *const *v)
{
    size_t n = 0;
    while (v && v[n])
        n++;
    return n;
}

/* A request; <irv> is "name=version" pairs (NULL-terminated) or NULL. */
static enum rm_ads_req_kind request(struct fx *f, const char *nonce, const char *const *sub,
                                    const char *const *unsub, const char *const *irv, bool nack)
{
    RmDeltaDiscoveryRequest r = ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INIT;
    Google__Rpc__Status err = GOOGLE__RPC__STATUS__INIT;
    IrvEntry e[8], *ep[8];
    char keys[8][64], vals[8][64];
    r.type_url = TC;
    r.response_nonce = (char *)(nonce ? nonce : "");
    r.n_resource_names_subscribe = count(sub);
    r.resource_names_subscribe = (char **)sub;
    r.n_resource_names_unsubscribe = count(unsub);
    r.resource_names_unsubscribe = (char **)unsub;
    for (size_t i = 0; irv && irv[i]; i++) {
        envoy__service__discovery__v3__delta_discovery_request__initial_resource_versions_entry__init(
            &e[i]);
        cr_assert_eq(sscanf(irv[i], "%63[^=]=%63s", keys[i], vals[i]), 2);
        e[i].key = keys[i];
        e[i].value = vals[i];
        ep[i] = &e[i];
        r.n_initial_resource_versions = i + 1;
    }
    r.initial_resource_versions = ep;
    if (nack) {
        err.code = 13;
        err.message = "no";
        r.error_detail = &err;
    }
    return rm_ads_delta_request(&f->sub, &r);
}

/* Build and commit a response if due (recorded in f); returns whether one was due. */
static bool respond(struct fx *f)
{
    RmDeltaDiscoveryResponse resp;
    f->nup = f->nrem = 0;
    if (!rm_ads_delta_build(&f->sub, &f->st, &resp)) return false;
    snprintf(f->last_nonce, sizeof(f->last_nonce), "%u", ++f->nonce);
    resp.nonce = f->last_nonce;
    size_t len = protobuf_c_message_get_packed_size(&resp.base);
    uint8_t *buf = malloc(len + 1);
    protobuf_c_message_pack(&resp.base, buf);
    free(buf);
    for (size_t i = 0; i < resp.n_resources; i++) {
        cr_assert_str_eq(resp.resources[i]->resource->type_url, TC);
        snprintf(f->upserts[f->nup++], 64, "%s@%s", resp.resources[i]->name,
                 resp.resources[i]->version);
    }
    for (size_t i = 0; i < resp.n_removed_resources; i++)
        snprintf(f->removed[f->nrem++], 64, "%s", resp.removed_resources[i]);
    rm_ads_delta_commit(&f->sub, &resp);
    rm_ads_delta_response_dispose(&resp);
    return true;
}

static void expect_upserts(const struct fx *f, const char *const *names)
{
    cr_assert_eq(f->nup, count(names), "%zu upserts", f->nup);
    for (size_t i = 0; i < f->nup; i++) {
        char want[64];
        snprintf(want, sizeof(want), "%s@%s", names[i], version_of(f, names[i]));
        cr_assert_str_eq(f->upserts[i], want);
    }
}

static void expect_removed(const struct fx *f, const char *const *names)
{
    cr_assert_eq(f->nrem, count(names), "%zu removed", f->nrem);
    for (size_t i = 0; i < f->nrem; i++)
        cr_assert_str_eq(f->removed[i], names[i]);
}

static void ack(struct fx *f)
{
    cr_assert_eq(request(f, f->last_nonce, NULL, NULL, NULL, false), RM_ADS_REQ_ACK);
}

static const char *const STAR[] = {"*", NULL};
static const char *const NONE[] = {NULL};

Test(ads_delta, wildcard_then_only_changes_and_removals)
{
    struct fx f;
    fx_init(&f);
    cr_assert_eq(request(&f, NULL, STAR, NULL, NULL, false), RM_ADS_REQ_FIRST);
    cr_assert(respond(&f));
    static const char *const abc[] = {"a", "b", "c", NULL};
    expect_upserts(&f, abc);
    expect_removed(&f, NONE);
    cr_assert(!respond(&f), "one response at a time");
    ack(&f);
    cr_assert(!respond(&f), "nothing new");
    static const char *const v2[] = {"a=A1", "b=B2", "d=D1", NULL};
    store_set(&f.st, v2);
    cr_assert(respond(&f));
    static const char *const bd[] = {"b", "d", NULL};
    static const char *const c[] = {"c", NULL};
    expect_upserts(&f, bd);
    expect_removed(&f, c);
    ack(&f);
    cr_assert(!respond(&f));
    fx_fini(&f);
}

Test(ads_delta, legacy_wildcard_and_empty_first_answer)
{
    struct fx f;
    fx_init(&f);
    static const char *const empty[] = {NULL};
    store_set(&f.st, empty);
    cr_assert_eq(request(&f, NULL, NULL, NULL, NULL, false), RM_ADS_REQ_FIRST);
    cr_assert(f.sub.wildcard, "both lists empty on the first request: wildcard");
    cr_assert(respond(&f), "the first wildcard request is answered even with nothing");
    expect_upserts(&f, NONE);
    ack(&f);
    cr_assert(!respond(&f));
    fx_fini(&f);
}

Test(ads_delta, initial_resource_versions_suppress_what_the_client_has)
{
    struct fx f;
    fx_init(&f);
    char a[64], b[64], gone[64];
    snprintf(a, sizeof(a), "a=%s", version_of(&f, "a"));
    snprintf(b, sizeof(b), "b=%s", "0000000000000000"); /* an old version of b */
    snprintf(gone, sizeof(gone), "z=%s", "1111111111111111");
    const char *const irv[] = {a, b, gone, NULL};
    cr_assert_eq(request(&f, NULL, STAR, NULL, irv, false), RM_ADS_REQ_FIRST);
    cr_assert(respond(&f));
    static const char *const bc[] = {"b", "c", NULL};
    static const char *const z[] = {"z", NULL};
    expect_upserts(&f, bc);
    expect_removed(&f, z);
    ack(&f);
    /* all up to date on a reconnect: an empty answer to the wildcard */
    struct rm_ads_delta fresh;
    rm_ads_delta_init(&fresh, TC);
    struct rm_ads_delta keep = f.sub;
    f.sub = fresh;
    char c[64];
    snprintf(a, sizeof(a), "a=%s", version_of(&f, "a"));
    snprintf(b, sizeof(b), "b=%s", version_of(&f, "b"));
    snprintf(c, sizeof(c), "c=%s", version_of(&f, "c"));
    const char *const all[] = {a, b, c, NULL};
    request(&f, NULL, STAR, NULL, all, false);
    cr_assert(respond(&f));
    expect_upserts(&f, NONE);
    expect_removed(&f, NONE);
    rm_ads_delta_dispose(&f.sub);
    f.sub = keep;
    fx_fini(&f);
}

Test(ads_delta, named_subscriptions_and_unknown_names)
{
    struct fx f;
    fx_init(&f);
    static const char *const a_ghost[] = {"a", "ghost", NULL};
    static const char *const a[] = {"a", NULL};
    static const char *const ghost[] = {"ghost", NULL};
    cr_assert_eq(request(&f, NULL, a_ghost, NULL, NULL, false), RM_ADS_REQ_FIRST);
    cr_assert(!f.sub.wildcard);
    cr_assert(respond(&f));
    expect_upserts(&f, a);
    expect_removed(&f, ghost); /* said once: it does not exist */
    ack(&f);
    cr_assert(!respond(&f), "ghost is not reported again");
    /* a change to an unsubscribed resource: nothing */
    static const char *const v2[] = {"a=A1", "b=B2", "c=C1", NULL};
    store_set(&f.st, v2);
    cr_assert(!respond(&f));
    /* ghost appears: sent */
    static const char *const v3[] = {"a=A1", "b=B2", "c=C1", "ghost=G1", NULL};
    store_set(&f.st, v3);
    cr_assert(respond(&f));
    expect_upserts(&f, ghost);
    ack(&f);
    /* subscribing again to what the client has: sent again */
    cr_assert_eq(request(&f, NULL, a, NULL, NULL, false), RM_ADS_REQ_UPDATE);
    cr_assert(respond(&f));
    expect_upserts(&f, a);
    ack(&f);
    /* unsubscribed: forgotten, its changes and removal not sent */
    request(&f, NULL, NULL, a, NULL, false);
    cr_assert(!respond(&f));
    static const char *const v4[] = {"b=B2", "ghost=G1", NULL};
    store_set(&f.st, v4);
    cr_assert(!respond(&f));
    fx_fini(&f);
}

Test(ads_delta, wildcard_plus_name_and_unsubscribes)
{
    struct fx f;
    fx_init(&f);
    static const char *const star_a[] = {"*", "a", NULL};
    static const char *const a[] = {"a", NULL};
    request(&f, NULL, star_a, NULL, NULL, false);
    cr_assert(respond(&f));
    ack(&f);
    /* unsubscribing a name still covered by "*": it is sent again (xDS protocol) */
    request(&f, NULL, NULL, a, NULL, false);
    cr_assert(respond(&f));
    expect_upserts(&f, a);
    ack(&f);
    /* dropping "*": what only it brought is forgotten, nothing is sent */
    static const char *const b[] = {"b", NULL};
    request(&f, NULL, b, STAR, NULL, false);
    cr_assert(!f.sub.wildcard);
    cr_assert(respond(&f), "b subscribed again: resent");
    expect_upserts(&f, b);
    ack(&f);
    cr_assert_eq(f.sub.known.n, 1);
    static const char *const v2[] = {"a=A2", "b=B1", "c=C2", NULL};
    store_set(&f.st, v2);
    cr_assert(!respond(&f));
    fx_fini(&f);
}

Test(ads_delta, stale_nonce_still_updates_the_subscription)
{
    struct fx f;
    fx_init(&f);
    static const char *const a[] = {"a", NULL};
    static const char *const b[] = {"b", NULL};
    request(&f, NULL, a, NULL, NULL, false);
    cr_assert(respond(&f));
    char n1[32];
    strcpy(n1, f.last_nonce);
    ack(&f);
    static const char *const v2[] = {"a=A2", "b=B1", "c=C1", NULL};
    store_set(&f.st, v2);
    cr_assert(respond(&f)); /* n2 out */
    cr_assert_eq(request(&f, n1, b, NULL, NULL, false), RM_ADS_REQ_STALE);
    cr_assert_not_null(rm_ads_kv_get(&f.sub.names, "b"));
    cr_assert_eq(f.sub.state, RM_ADS_SUB_SENT, "a stale nonce acknowledges nothing");
    ack(&f);
    cr_assert(respond(&f));
    expect_upserts(&f, b);
    fx_fini(&f);
}

Test(ads_delta, nack_does_not_resend)
{
    struct fx f;
    fx_init(&f);
    request(&f, NULL, STAR, NULL, NULL, false);
    respond(&f);
    ack(&f);
    static const char *const v2[] = {"a=A2", "b=B1", "c=C1", NULL};
    store_set(&f.st, v2);
    cr_assert(respond(&f));
    cr_assert_eq(request(&f, f.last_nonce, NULL, NULL, NULL, true), RM_ADS_REQ_NACK);
    cr_assert_eq(f.sub.state, RM_ADS_SUB_NACKED);
    cr_assert(!respond(&f), "the rejected version is not pushed again");
    static const char *const v3[] = {"a=A3", "b=B1", "c=C1", NULL};
    store_set(&f.st, v3);
    cr_assert(respond(&f));
    static const char *const a[] = {"a", NULL};
    expect_upserts(&f, a);
    fx_fini(&f);
}
