/* EDS over ADS, the pure part (no I/O; unit-tested): validating a SotW DiscoveryResponse of
 * ClusterLoadAssignments into host specs, and the per-type ACK/NACK bookkeeping of a SotW
 * subscription.  The stream itself is xds/ads_client.c. */
#ifndef RM_XDS_ADS_EDS_H
#define RM_XDS_ADS_EDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "proxy/core/error.h"
#include "proxy/upstream/host.h"

#define RM_EDS_TYPE_URL "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"

/** One validated ClusterLoadAssignment: its name (cluster_name) and hosts (hostnames point
 *  into <la>, which the response owns).  <unchanged> (rm_eds_response_parse_seen only): the
 *  resource has the bytes it had in the last accepted response, so it was not decoded again
 *  (la and specs are NULL, n is 0): the clusters it feeds keep their hosts. */
struct rm_eds_assignment {
    const char *name;
    Envoy__Config__Endpoint__V3__ClusterLoadAssignment *la;
    struct rm_host_spec *specs;
    size_t n;
    bool unchanged;
    uint64_t digest; /* of the resource's bytes (rm_eds_seen) */
    size_t len;
};

/** A whole validated response (free with rm_eds_response_clear). */
struct rm_eds_response {
    struct rm_eds_assignment *a;
    size_t n;
    struct rm_eds_block *blocks; /* the decoded assignments (a[i].la), freed at once */
    size_t *by_name;             /* [n + 1]: indexes into a[] sorted by name, then the position of
                                    rm_eds_response_find's last answer (its hint) */
};

/** What the last accepted response held: each resource's name and a 64-bit digest of its
 *  bytes (a few dozen bytes per resource), so a SotW response that repeats every assignment
 *  to change one decodes and validates one (Envoy skips identical resources the same way).
 *  Zero-initialise; free with rm_eds_seen_free. */
struct rm_eds_seen {
    struct rm_eds_seen_entry {
        const char *name; /* into <names> */
        size_t name_len;
        uint64_t digest;
        size_t len; /* of the resource's bytes */
    } * v;          /* sorted by name */
    size_t n;
    char *names; /* one block: every name, NUL-terminated */
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
/** rm_eds_response_parse, except that a resource whose name and bytes are those <seen> holds
 *  (with the ClusterLoadAssignment type URL) is not decoded again: it comes out with
 *  <unchanged> set.  The verdict and the error message are those of rm_eds_response_parse
 *  (an unchanged resource passed the same checks when it was accepted).  <seen> is only read:
 *  after accepting, rm_eds_seen_commit.  O(n log n) in the number of resources, plus decoding
 *  the changed ones. */
int rm_eds_response_parse_seen(const Envoy__Service__Discovery__V3__DiscoveryResponse *r,
                               const struct rm_eds_seen *seen, struct rm_eds_response *out,
                               struct rm_error *err);
/** Free what rm_eds_response_parse made; <out> becomes empty.  Idempotent. */
void rm_eds_response_clear(struct rm_eds_response *out);
/** The assignment named <name> in <resp>, or NULL.  O(log n); O(1) when asked in name order
 *  (it tries the successor of its last answer first).  One thread at a time per response. */
const struct rm_eds_assignment *rm_eds_response_find(const struct rm_eds_response *resp,
                                                     const char *name);

/** <resp> was accepted: <seen> now describes its resources (only those: a resource it does not
 *  repeat is decoded in full next time).  Aborts when out of memory. */
void rm_eds_seen_commit(struct rm_eds_seen *seen, const struct rm_eds_response *resp);
/** Free <seen>'s table; it becomes empty.  Idempotent. */
void rm_eds_seen_free(struct rm_eds_seen *seen);

/** Drop the later copies of repeated strings of <names>[0..n) (freeing them), the others kept
 *  in order; returns how many are left.  O(n log n).  Aborts when out of memory. */
size_t rm_eds_unique_names(char **names, size_t n);

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
