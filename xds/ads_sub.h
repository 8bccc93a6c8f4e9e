/* Per-stream, per-type subscription state of the reference control plane: the xDS protocol
 * logic, free of I/O, for State of the World (struct rm_ads_sotw) and Delta (struct
 * rm_ads_delta).  xds/ads_server.c feeds them decoded requests and sends what they build.
 *
 * ## Both variants
 * A subscription answers at most one response at a time: after a response (state SENT) the
 * next one waits for its ACK or NACK (as go-control-plane, whose watches are re-armed by the
 * client's next request).  A request is classified (enum rm_ads_req_kind):
 *   FIRST   the first request for the type on this stream;
 *   ACK     response_nonce = the nonce of the response out, no error_detail;
 *   NACK    the same with error_detail (the client kept its previous config);
 *   STALE   response_nonce names an older response: SotW ignores the request entirely;
 *           Delta still applies its subscribe / unsubscribe lists (xDS protocol);
 *   UPDATE  anything else (a subscription change without a new response in between).
 *
 * ## State of the World
 * resource_names is the whole subscription each time: "*" (or, legacy, an empty list while no
 * name was ever set) means every resource of the type; otherwise the names listed.  A response
 * carries every subscribed resource that exists, with version_info = the store's version of
 * the type.  One is due when none is out and either this is the first request for a wildcard
 * subscription (an empty response is a valid answer: "none"), or the resources it would carry
 * (names and versions) differ from those of the last response — a store change, or a
 * subscription that grew or shrank.  After a NACK nothing is resent until that changes.
 *
 * ## Delta
 * The server tracks what the client has: name -> version (initial_resource_versions of the
 * first request, then what it sent).  A response carries the subscribed resources whose
 * version differs from the client's, and removed_resources for the ones the client has that
 * are gone; a name subscribed explicitly that does not exist is reported once in
 * removed_resources (so the client need not wait for a timeout).  Subscribing to a name again
 * (after the first request) resends it; unsubscribing forgets it; "*" subscribes to every
 * resource (legacy: a first request with both lists empty).  The first request of a wildcard
 * subscription is always answered, even with nothing in it.  What was sent counts as what the
 * client has, NACK or not (a NACKed resource is not resent until it changes). */
#ifndef RM_XDS_ADS_SUB_H
#define RM_XDS_ADS_SUB_H

#include <stdbool.h>
#include <stddef.h>

#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "proxy/config/strbuf.h"
#include "xds/ads_store.h"

typedef Envoy__Service__Discovery__V3__DiscoveryRequest RmDiscoveryRequest;
typedef Envoy__Service__Discovery__V3__DiscoveryResponse RmDiscoveryResponse;
typedef Envoy__Service__Discovery__V3__DeltaDiscoveryRequest RmDeltaDiscoveryRequest;
typedef Envoy__Service__Discovery__V3__DeltaDiscoveryResponse RmDeltaDiscoveryResponse;

#define RM_ADS_NONCE_MAX 32
#define RM_ADS_VERSION_MAX 96

/* ---- a sorted string map (also a set: values NULL) ---------------------------------------- */

struct rm_ads_kv_entry {
    char *key;
    char *val; /* may be NULL */
};

struct rm_ads_kv {
    struct rm_ads_kv_entry *v; /* sorted by key */
    size_t n, cap;
};

void rm_ads_kv_dispose(struct rm_ads_kv *kv);
const struct rm_ads_kv_entry *rm_ads_kv_get(const struct rm_ads_kv *kv, const char *key);
/** Insert or replace (key and val copied; val may be NULL). */
void rm_ads_kv_put(struct rm_ads_kv *kv, const char *key, const char *val);
/** Remove <key>; returns whether it was there. */
bool rm_ads_kv_del(struct rm_ads_kv *kv, const char *key);
/** Append "a, b, c" (at most <max> keys, then "… (+N)") to <out>. */
void rm_ads_kv_keys_str(const struct rm_ads_kv *kv, size_t max, struct rm_strbuf *out);

/* ---- shared ------------------------------------------------------------------------------- */

/* The state of one subscription's responses; only rm_ads_sub_set_state() changes it (it
 * asserts):  NEW -> SENT;  SENT -> ACKED | NACKED;  ACKED -> SENT;  NACKED -> SENT. */
enum rm_ads_sub_state {
    RM_ADS_SUB_NEW = 0, /* requested, nothing sent yet */
    RM_ADS_SUB_SENT,    /* a response is out, waiting for its ACK or NACK */
    RM_ADS_SUB_ACKED,   /* the last response was ACKed */
    RM_ADS_SUB_NACKED,  /* the last response was NACKed */
};

enum rm_ads_req_kind {
    RM_ADS_REQ_FIRST,
    RM_ADS_REQ_UPDATE,
    RM_ADS_REQ_ACK,
    RM_ADS_REQ_NACK,
    RM_ADS_REQ_STALE,
};

void rm_ads_sub_set_state(enum rm_ads_sub_state *st, enum rm_ads_sub_state to);
const char *rm_ads_req_kind_name(enum rm_ads_req_kind k);
const char *rm_ads_sub_state_name(enum rm_ads_sub_state s);

/* ---- State of the World ------------------------------------------------------------------- */

struct rm_ads_sotw {
    char *type_url;
    enum rm_ads_sub_state state;
    unsigned long nreq;               /* requests seen for the type */
    bool wildcard;                    /* "*" or the legacy empty list */
    bool ever_named;                  /* a request named resources: [] is no longer a wildcard */
    struct rm_ads_kv names;           /* names subscribed explicitly */
    struct rm_ads_kv sent;            /* name -> version of the resources in the last response */
    char nonce[RM_ADS_NONCE_MAX];     /* of the last response ("" before one) */
    char version[RM_ADS_VERSION_MAX]; /* version_info of the last response */
    char acked[RM_ADS_VERSION_MAX];   /* version_info of the last ACK ("" none) */
};

void rm_ads_sotw_init(struct rm_ads_sotw *s, const char *type_url);
void rm_ads_sotw_dispose(struct rm_ads_sotw *s);
/** Classify <req> (for this subscription's type) and apply its resource_names unless STALE. */
enum rm_ads_req_kind rm_ads_sotw_request(struct rm_ads_sotw *s, const RmDiscoveryRequest *req);
/** If a response is due, fill <resp> (version_info, type_url, resources pointing into the
 *  store and into <s>: pack it before either changes; nonce left for the caller) and return
 *  true.  Free what it allocated with rm_ads_sotw_response_dispose(). */
bool rm_ads_sotw_build(const struct rm_ads_sotw *s, const struct rm_ads_store *st,
                       RmDiscoveryResponse *resp, char version_buf[RM_ADS_VERSION_MAX]);
/** <resp> (built above from <st>, unchanged since; nonce set) was sent: remember what it
 *  carried; state -> SENT. */
void rm_ads_sotw_commit(struct rm_ads_sotw *s, const struct rm_ads_store *st,
                        const RmDiscoveryResponse *resp);
void rm_ads_sotw_response_dispose(RmDiscoveryResponse *resp);

/* ---- Delta -------------------------------------------------------------------------------- */

struct rm_ads_delta {
    char *type_url;
    enum rm_ads_sub_state state;
    unsigned long nreq;
    bool wildcard;
    struct rm_ads_kv names; /* names subscribed explicitly */
    struct rm_ads_kv known; /* name -> version the client has; "" = told it does not exist */
    char nonce[RM_ADS_NONCE_MAX];
};

void rm_ads_delta_init(struct rm_ads_delta *d, const char *type_url);
void rm_ads_delta_dispose(struct rm_ads_delta *d);
/** Classify <req> and apply initial_resource_versions (first request only) and the subscribe
 *  and unsubscribe lists (even when STALE). */
enum rm_ads_req_kind rm_ads_delta_request(struct rm_ads_delta *d,
                                          const RmDeltaDiscoveryRequest *req);
/** If a response is due, fill <resp> (resources and removed_resources; nonce and
 *  system_version_info left for the caller) and return true.  Free with
 *  rm_ads_delta_response_dispose(). */
bool rm_ads_delta_build(const struct rm_ads_delta *d, const struct rm_ads_store *st,
                        RmDeltaDiscoveryResponse *resp);
/** <resp> was sent: the client has those versions now; state -> SENT. */
void rm_ads_delta_commit(struct rm_ads_delta *d, const RmDeltaDiscoveryResponse *resp);
void rm_ads_delta_response_dispose(RmDeltaDiscoveryResponse *resp);

#endif
