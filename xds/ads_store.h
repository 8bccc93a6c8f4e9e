/* The control plane's resource store: xDS resources by type URL and name, with versions.
 *
 * A resource is its type URL, its name and its serialized message (the value of the Any that
 * carries it).  Its version is a hash of those bytes (16 hex digits of FNV-1a 64), so it is
 * stable across restarts and usable as a Delta xDS per-resource version and for
 * initial_resource_versions.  A set (struct rm_ads_set) is sorted by (type URL, name) and
 * holds each pair at most once.
 *
 * The store (struct rm_ads_store) holds the current set and a version counter: replacing the
 * set with one that differs in any byte bumps the counter, and every type that changed
 * (resource added, modified or removed) records the new counter value as its version.  A
 * State-of-the-World response for a type carries that type's version as version_info:
 * "<prefix><counter>".  Replacing with an identical set changes nothing.
 *
 * Single-threaded; nothing here does I/O. */
#ifndef RM_XDS_ADS_STORE_H
#define RM_XDS_ADS_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/core/error.h"

#define RM_ADS_VERSION_LEN 16 /* hex digits of a resource version */

struct rm_ads_resource {
    char *type_url; /* "type.googleapis.com/envoy.config.cluster.v3.Cluster" */
    char *name;
    uint8_t *value; /* the serialized message (Any.value); NULL when empty */
    size_t len;
    char version[RM_ADS_VERSION_LEN + 1]; /* hash of value */
    char *origin;                         /* where it came from, for messages ("a.yaml") */
};

struct rm_ads_set {
    struct rm_ads_resource *v; /* sorted by (type_url, name) */
    size_t n, cap;
};

enum rm_ads_change_kind {
    RM_ADS_ADDED,
    RM_ADS_MODIFIED,
    RM_ADS_REMOVED,
};

struct rm_ads_change {
    const char *type_url; /* points into the store's types (valid while the store lives) */
    char *name;
    enum rm_ads_change_kind kind;
};

/** What one rm_ads_store_replace() changed, sorted by (type URL, name). */
struct rm_ads_diff {
    struct rm_ads_change *v;
    size_t n, cap;
};

/** A type that was ever in the store, with the counter value of its last change. */
struct rm_ads_type_version {
    char *type_url;
    uint64_t version;
};

struct rm_ads_store {
    struct rm_ads_set cur;
    uint64_t version; /* bumped by every replace that changed something */
    struct rm_ads_type_version *types;
    size_t ntypes;
    char prefix[64]; /* version strings: prefix + counter */
};

/* ---- sets --------------------------------------------------------------------------------- */

void rm_ads_set_init(struct rm_ads_set *s);
void rm_ads_set_dispose(struct rm_ads_set *s);
/** Add a copy of the resource (<value>/<len> copied; <origin> may be NULL).  Returns RM_OK, or
 *  RM_ERR with <err> naming both origins when (type_url, name) is already in the set. */
int rm_ads_set_add(struct rm_ads_set *s, const char *type_url, const char *name,
                   const uint8_t *value, size_t len, const char *origin, struct rm_error *err);
/** The resource (type_url, name), or NULL. */
const struct rm_ads_resource *rm_ads_set_find(const struct rm_ads_set *s, const char *type_url,
                                              const char *name);
/** The resources of <type_url>: returns how many, *first the index of the first. */
size_t rm_ads_set_type_range(const struct rm_ads_set *s, const char *type_url, size_t *first);

/** FNV-1a 64 of <p>/<n> as 16 lower-case hex digits (NUL-terminated). */
void rm_ads_version_of(const uint8_t *p, size_t n, char out[RM_ADS_VERSION_LEN + 1]);

/* ---- store -------------------------------------------------------------------------------- */

/** An empty store at version 0 (the first set that differs makes it 1).  <prefix> (NULL: "") starts
 * every version string (truncated to 63 bytes). */
void rm_ads_store_init(struct rm_ads_store *st, const char *prefix);
void rm_ads_store_dispose(struct rm_ads_store *st);
/** Make <next> the current set if it differs from it; <next> is left empty either way (its
 *  resources are moved in, or freed).  Returns how many resources changed (0: nothing did, the
 *  version stays).  <diff> (may be NULL; rm_ads_diff_dispose it) gets the changes. */
size_t rm_ads_store_replace(struct rm_ads_store *st, struct rm_ads_set *next,
                            struct rm_ads_diff *diff);
/** The counter value of the last change of <type_url>: 0 (the initial, empty state) for a type
 *  never changed. */
uint64_t rm_ads_store_type_version(const struct rm_ads_store *st, const char *type_url);
/** "<prefix><n>" into <buf>; returns buf. */
const char *rm_ads_store_version_str(const struct rm_ads_store *st, uint64_t n, char *buf,
                                     size_t len);

void rm_ads_diff_dispose(struct rm_ads_diff *d);

/** The short name of a type URL for logs: "Cluster" for ".../envoy.config.cluster.v3.Cluster". */
const char *rm_ads_type_short(const char *type_url);

#endif
