/* EDS over ADS, the pure part (no I/O; unit-tested): validating a SotW DiscoveryResponse of
 * ClusterLoadAssignments into host specs, and the per-type ACK/NACK bookkeeping of a SotW
 * subscription.  The stream itself is xds/ads_client.c. */
#ifndef RM_XDS_ADS_EDS_H
#define RM_XDS_ADS_EDS_H

#include <stdbool.h>
#include <stddef.h>

#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "proxy/core/error.h"
#include "proxy/upstream/host.h"

#define RM_EDS_TYPE_URL "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"

/** One validated ClusterLoadAssignment: its name (cluster_name) and hosts (hostnames point
 *  into <la>, which the response owns). */
struct rm_eds_assignment {
    const char *name;
    Envoy__Config__Endpoint__V3__ClusterLoadAssignment *la;
    struct rm_host_spec *specs;
    size_t n;
};

/** A whole validated response (free with rm_eds_response_clear). */
struct rm_eds_response {
    struct rm_eds_assignment *a;
    size_t n;
};

/** Validate every resource of <r> (Envoy's SotW rule: one bad resource rejects the response):
 *  the response's and each Any's type URL must be ClusterLoadAssignment, each must unpack with
 *  no field unknown to remora (rm_pb_check_no_unknown), have a non-empty cluster_name that no
 *  other resource of the response has, and endpoints rm_load_assignment_specs accepts (IP
 *  literals with ports, priority 0, no policy).  RM_OK with <out> filled, or RM_ERR with <out>
 *  empty and <err> = "ClusterLoadAssignment NAME: resources[i].FIELD.PATH: why" (or
 *  "resources[i]: why" before the name is known). */
int rm_eds_response_parse(const Envoy__Service__Discovery__V3__DiscoveryResponse *r,
                          struct rm_eds_response *out, struct rm_error *err);
/** Free what rm_eds_response_parse made; <out> becomes empty.  Idempotent. */
void rm_eds_response_clear(struct rm_eds_response *out);
/** The assignment named <name> in <resp>, or NULL. */
const struct rm_eds_assignment *rm_eds_response_find(const struct rm_eds_response *resp,
                                                     const char *name);

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
