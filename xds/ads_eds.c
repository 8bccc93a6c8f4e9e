/* EDS response validation and SotW ACK/NACK bookkeeping (see ads_eds.h). */
#include "xds/ads_eds.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/rpc/status.pb-c.h"
#include "proxy/config/pbtypes.h"
#include "proxy/upstream/cluster.h"

typedef Envoy__Config__Endpoint__V3__ClusterLoadAssignment LoadAssignment;

/* Resource <i>: unpack, check, and turn into host specs in *a. */
static int parse_one(const Google__Protobuf__Any *any, size_t i, struct rm_eds_assignment *a,
                     struct rm_error *err)
{
    char p[64];
    snprintf(p, sizeof(p), "resources[%zu]", i);
    ProtobufCMessage *m = NULL;
    if (rm_pb_any_unpack(any, &envoy__config__endpoint__v3__cluster_load_assignment__descriptor, &m,
                         err))
        return rm_error_prefix(err, "%s: ", p);
    a->la = (LoadAssignment *)m;
    if (!a->la->cluster_name || !a->la->cluster_name[0])
        return rm_error_set(err, "%s.cluster_name: required", p);
    a->name = a->la->cluster_name;
    if (rm_pb_check_no_unknown(m, p, err) ||
        rm_load_assignment_specs(a->la, p, &a->specs, &a->n, err))
        return rm_error_prefix(err, "ClusterLoadAssignment %s: ", a->name);
    return RM_OK;
}

int rm_eds_response_parse(const Envoy__Service__Discovery__V3__DiscoveryResponse *r,
                          struct rm_eds_response *out, struct rm_error *err)
{
    *out = (struct rm_eds_response){0};
    if (!r->type_url || strcmp(r->type_url, RM_EDS_TYPE_URL) != 0)
        return rm_error_set(err, "type_url: expected " RM_EDS_TYPE_URL ", got \"%s\"",
                            r->type_url ? r->type_url : "");
    out->a = calloc(r->n_resources ? r->n_resources : 1, sizeof(*out->a));
    if (!out->a) return rm_error_set(err, "out of memory");
    for (size_t i = 0; i < r->n_resources; i++) {
        struct rm_eds_assignment *a = &out->a[out->n++];
        if (parse_one(r->resources[i], i, a, err)) goto fail;
        for (size_t k = 0; k + 1 < out->n; k++) {
            if (strcmp(out->a[k].name, a->name) == 0) {
                rm_error_set(err,
                             "ClusterLoadAssignment %s: resources[%zu]: duplicate of "
                             "resources[%zu]",
                             a->name, i, k);
                goto fail;
            }
        }
    }
    return RM_OK;
fail:
    rm_eds_response_clear(out);
    return RM_ERR;
}

void rm_eds_response_clear(struct rm_eds_response *out)
{
    for (size_t i = 0; i < out->n; i++) {
        free(out->a[i].specs);
        if (out->a[i].la) protobuf_c_message_free_unpacked(&out->a[i].la->base, NULL);
    }
    free(out->a);
    *out = (struct rm_eds_response){0};
}

const struct rm_eds_assignment *rm_eds_response_find(const struct rm_eds_response *resp,
                                                     const char *name)
{
    for (size_t i = 0; i < resp->n; i++) {
        if (strcmp(resp->a[i].name, name) == 0) return &resp->a[i];
    }
    return NULL;
}

/* ---- ACK / NACK ---------------------------------------------------------------------------- */

static void set_str(char **dst, const char *v)
{
    char *n = v && v[0] ? strdup(v) : NULL;
    if (v && v[0] && !n) abort();
    free(*dst);
    *dst = n;
}

void rm_ads_sotw_ack(struct rm_ads_sotw *st, const char *version, const char *nonce)
{
    set_str(&st->version, version);
    set_str(&st->nonce, nonce);
    set_str(&st->error, NULL);
}

void rm_ads_sotw_nack(struct rm_ads_sotw *st, const char *nonce, const char *why)
{
    set_str(&st->nonce, nonce);
    set_str(&st->error, why && why[0] ? why : "rejected");
}

void rm_ads_sotw_new_stream(struct rm_ads_sotw *st)
{
    set_str(&st->nonce, NULL);
    set_str(&st->error, NULL);
}

void rm_ads_sotw_fill(const struct rm_ads_sotw *st,
                      Envoy__Service__Discovery__V3__DiscoveryRequest *req,
                      struct Google__Rpc__Status *status)
{
    req->version_info = st->version ? st->version : (char *)"";
    req->response_nonce = st->nonce ? st->nonce : (char *)"";
    req->error_detail = NULL;
    if (!st->error) return;
    google__rpc__status__init(status);
    status->code = 13; /* INTERNAL, as Envoy */
    status->message = st->error;
    req->error_detail = status;
}

void rm_ads_sotw_free(struct rm_ads_sotw *st)
{
    free(st->version);
    free(st->nonce);
    free(st->error);
    *st = (struct rm_ads_sotw){0};
}
