/* SotW ACK/NACK bookkeeping (see ads_ack.h). */
#include "xds/ads_ack.h"

#include <stdlib.h>
#include <string.h>

#include "google/rpc/status.pb-c.h"

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
