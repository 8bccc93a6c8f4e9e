/* The secrets taken over SDS (xds/sds_store.c): the set of names follows the config's references
 * (names added and dropped), what arrived makes the table TLS contexts resolve in, readiness and
 * initial_fetch_timeout per secret, Envoy's sds.<name>.* stats. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "proxy/admin/stats.h"
#include "proxy/config/pbutil.h"
#include "xds/sds_store.h"

typedef Envoy__Extensions__TransportSockets__Tls__V3__Secret Secret;

static void fini(void)
{
    rm_stats_free_all();
}

TestSuite(sds_store, .fini = fini);

/* sds.<name>.<stat> (the store's block: same prefix, same definitions). */
static int64_t sds_stat(const char *name, unsigned idx)
{
    static const struct rm_stat_def defs[] = {
        {"update_attempt", RM_COUNTER},  {"update_success", RM_COUNTER},
        {"update_rejected", RM_COUNTER}, {"init_fetch_timeout", RM_COUNTER},
        {"version", RM_GAUGE},
    };
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "sds.%s.", name);
    struct rm_stats *s = rm_stats_get(prefix, defs, 5);
    int64_t v = rm_stat_value(s, idx);
    rm_stats_release(s);
    return v;
}
enum { ATTEMPT, SUCCESS, REJECTED, TIMEOUT };

/* A boxed validation_context Secret <name> (its trusted_ca inline: <ca>). */
static struct rm_pb_box *secret(const char *name, const char *ca)
{
    Secret *s = calloc(1, sizeof(*s));
    envoy__extensions__transport_sockets__tls__v3__secret__init(s);
    s->name = strdup(name);
    Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext *vc =
        calloc(1, sizeof(*vc));
    envoy__extensions__transport_sockets__tls__v3__certificate_validation_context__init(vc);
    Envoy__Config__Core__V3__DataSource *ds = calloc(1, sizeof(*ds));
    envoy__config__core__v3__data_source__init(ds);
    ds->specifier_case = ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_STRING;
    ds->inline_string = strdup(ca);
    vc->trusted_ca = ds;
    s->type_case = ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_VALIDATION_CONTEXT;
    s->validation_context = vc;
    /* a message free_unpacked can free: pack / unpack */
    size_t len = protobuf_c_message_get_packed_size(&s->base);
    uint8_t *b = malloc(len + 1);
    protobuf_c_message_pack(&s->base, b);
    ProtobufCMessage *m = protobuf_c_message_unpack(
        &envoy__extensions__transport_sockets__tls__v3__secret__descriptor, NULL, len, b);
    free(b);
    free(ds->inline_string);
    free(ds);
    free(vc);
    free(s->name);
    free(s);
    cr_assert_not_null(m);
    return rm_pb_box_new(m);
}

static const char *trusted_ca(const struct rm_secrets *t, const char *name)
{
    const Secret *s = rm_secrets_find(t, name);
    return s ? s->validation_context->trusted_ca->inline_string : NULL;
}

Test(sds_store, the_set_follows_the_references)
{
    struct rm_sds_store *s = rm_sds_store_new();
    struct rm_config_source ads = {.ads = true, .init_timeout_ms = 1000};
    struct rm_sds_refs r = {0};
    rm_sds_refs_add(&r, "a", &ads);
    rm_sds_refs_add(&r, "b", &ads);
    size_t added, removed;
    rm_sds_store_sync(s, &r, &added, &removed);
    cr_assert_eq(added, 2);
    cr_assert_eq(removed, 0);
    cr_assert(rm_sds_store_has(s, "a") && rm_sds_store_has(s, "b"));
    cr_assert_not(rm_sds_store_arrived(s, "a"));
    cr_assert_not(rm_sds_store_ready(s, &r));
    cr_assert(rm_sds_store_ready(s, NULL), "nothing to wait for");
    cr_assert_null(rm_sds_store_table(s));
    /* the same set again: nothing changes */
    rm_sds_store_sync(s, &r, &added, &removed);
    cr_assert_eq(added + removed, 0);
    /* "a" arrives: accepted into the store, then the table */
    struct rm_pb_box *a1 = secret("a", "ca-1");
    struct rm_secrets *cand = rm_sds_store_candidate(s, &a1, 1);
    cr_assert_str_eq(trusted_ca(cand, "a"), "ca-1");
    cr_assert_null(rm_sds_store_table(s), "a candidate is not the table");
    rm_sds_store_accept(s, "a", a1, "v1");
    rm_sds_store_set_table(s, cand);
    cr_assert(rm_sds_store_arrived(s, "a"));
    cr_assert_str_eq(trusted_ca(rm_sds_store_table(s), "a"), "ca-1");
    cr_assert_str_eq(rm_secrets_path(rm_sds_store_table(s), "a"), "Secret a");
    cr_assert_eq(sds_stat("a", SUCCESS), 1);
    cr_assert_eq(sds_stat("a", ATTEMPT), 1);
    cr_assert_not(rm_sds_store_ready(s, &r), "b is still missing");
    /* a new version of "a" and a first "b": the candidate has both, the new "a" */
    struct rm_pb_box *nb[2] = {secret("a", "ca-2"), secret("b", "ca-b")};
    cand = rm_sds_store_candidate(s, nb, 2);
    cr_assert_str_eq(trusted_ca(cand, "a"), "ca-2");
    cr_assert_str_eq(trusted_ca(cand, "b"), "ca-b");
    cr_assert_str_eq(trusted_ca(rm_sds_store_table(s), "a"), "ca-1", "the table is unchanged");
    rm_sds_store_accept(s, "a", nb[0], "v2");
    rm_sds_store_accept(s, "b", nb[1], "v2");
    rm_sds_store_set_table(s, cand);
    cr_assert(rm_sds_store_ready(s, &r));
    struct rm_dyn_res dump[2];
    cr_assert_eq(rm_sds_store_count_names(s), 2);
    cr_assert_eq(rm_sds_store_dump(s, dump), 2);
    cr_assert_str_eq(dump[0].name, "a");
    cr_assert_str_eq(dump[0].version_info, "v2");
    cr_assert_str_eq(dump[1].name, "b");
    /* a rejected update counts against the names it carried, or all */
    rm_sds_store_count(s, "b", RM_SDS_UPDATE_REJECTED);
    rm_sds_store_count(s, "nope", RM_SDS_UPDATE_REJECTED);
    rm_sds_store_count(s, NULL, RM_SDS_UPDATE_REJECTED);
    cr_assert_eq(sds_stat("b", REJECTED), 2);
    cr_assert_eq(sds_stat("a", REJECTED), 1);
    /* "a" is no longer referenced: dropped, with its secret (the table follows) */
    struct rm_sds_refs only_b = {0};
    rm_sds_refs_add(&only_b, "b", &ads);
    rm_sds_store_sync(s, &only_b, &added, &removed);
    cr_assert_eq(added, 0);
    cr_assert_eq(removed, 1);
    cr_assert_not(rm_sds_store_has(s, "a"));
    cr_assert_null(rm_secrets_find(rm_sds_store_table(s), "a"));
    cr_assert_str_eq(trusted_ca(rm_sds_store_table(s), "b"), "ca-b");
    /* nothing referenced any more */
    rm_sds_store_sync(s, NULL, &added, &removed);
    cr_assert_eq(removed, 1);
    cr_assert_null(rm_sds_store_table(s));
    cr_assert_eq(rm_sds_store_count_names(s), 0);
    rm_sds_refs_dispose(&r);
    rm_sds_refs_dispose(&only_b);
    rm_sds_store_free(s);
}

/* initial_fetch_timeout: per secret not arrived, 0 never; init_fetch_timeout counted once. */
Test(sds_store, initial_fetch_timeouts)
{
    struct rm_sds_store *s = rm_sds_store_new();
    struct rm_config_source one = {.ads = true, .init_timeout_ms = 1000};
    struct rm_config_source three = {.ads = true, .init_timeout_ms = 3000};
    struct rm_config_source never = {.ads = true, .init_timeout_ms = 0};
    struct rm_sds_refs r = {0}, n = {0};
    rm_sds_refs_add(&r, "x", &one);
    rm_sds_refs_add(&r, "y", &three);
    rm_sds_refs_add(&n, "z", &never);
    struct rm_sds_refs all = {0};
    rm_sds_refs_merge(&all, &r);
    rm_sds_refs_merge(&all, &n);
    rm_sds_store_sync(s, &all, NULL, NULL);
    cr_assert_not(rm_sds_store_waited_out(s, &r, 999));
    cr_assert_not(rm_sds_store_waited_out(s, &r, 2000), "y waits 3 s");
    cr_assert(rm_sds_store_waited_out(s, &r, 3000));
    cr_assert_not(rm_sds_store_waited_out(s, &n, 1000000), "0: no bound");
    struct rm_pb_box *y = secret("y", "ca");
    rm_sds_store_accept(s, "y", y, "1");
    rm_sds_store_set_table(s, rm_sds_store_candidate(s, NULL, 0));
    cr_assert(rm_sds_store_waited_out(s, &r, 1000), "y arrived: only x's bound counts");
    rm_sds_store_count_timeouts(s, &n); /* z's waiter gave up: z only */
    cr_assert_eq(sds_stat("z", TIMEOUT), 1);
    cr_assert_eq(sds_stat("x", TIMEOUT), 0);
    rm_sds_store_count_timeouts(s, NULL);
    rm_sds_store_count_timeouts(s, NULL);
    cr_assert_eq(sds_stat("x", TIMEOUT), 1, "once");
    cr_assert_eq(sds_stat("z", TIMEOUT), 1);
    cr_assert_eq(sds_stat("y", TIMEOUT), 0, "it arrived");
    rm_sds_refs_dispose(&r);
    rm_sds_refs_dispose(&n);
    rm_sds_refs_dispose(&all);
    rm_sds_store_free(s);
}
