/* The SotW ACK/NACK bookkeeping of one resource type on an ADS stream (no I/O; unit-tested):
 * what version_info, response_nonce and error_detail the next DiscoveryRequest carries. */
#ifndef RM_XDS_ADS_ACK_H
#define RM_XDS_ADS_ACK_H

#include "envoy/service/discovery/v3/discovery.pb-c.h"

/** The SotW state of one type on an ADS stream.  <version>: the last accepted version_info
 *  (kept across streams, sent on reconnect); <nonce>: the last response's nonce on the current
 *  stream; <error>: set while the last response was NACKed.  Strings are owned (NULL = ""). */
struct rm_ads_sotw {
    char *version;
    char *nonce;
    char *error;
};

/** A response was accepted: version = its version_info, nonce = its nonce, no error. */
void rm_ads_sotw_ack(struct rm_ads_sotw *st, const char *version, const char *nonce);
/** A response was rejected: the version stays the last accepted one, nonce = its nonce, error =
 *  <why> (for error_detail). */
void rm_ads_sotw_nack(struct rm_ads_sotw *st, const char *nonce, const char *why);
/** A new stream: no nonce, no error (the accepted version is kept). */
void rm_ads_sotw_new_stream(struct rm_ads_sotw *st);
/** Fill <req> (initialised) from the state: version_info, response_nonce and, after a NACK,
 *  error_detail = <status> (caller storage) with code 13 (INTERNAL) and the message.  Pointers
 *  into <st> and <status>: valid until the state changes. */
void rm_ads_sotw_fill(const struct rm_ads_sotw *st,
                      Envoy__Service__Discovery__V3__DiscoveryRequest *req,
                      struct Google__Rpc__Status *status);
/** Free the strings. */
void rm_ads_sotw_free(struct rm_ads_sotw *st);

#endif
