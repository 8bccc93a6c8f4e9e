/* The secrets remora takes over SDS (xds/xds_manager.c): the set of names its TLS contexts
 * reference with an sds_config, and for each what was accepted (the Secret, its version, when)
 * and its stats, Envoy's sds.<name>.{update_attempt, update_success, update_rejected,
 * init_fetch_timeout, version}; plus the table TLS contexts resolve those references in
 * (proxy/net/secrets.h), rebuilt whenever an accepted secret changes.
 *
 * The subscription is kept equal to the references of the config (rm_sds_store_sync): a name
 * no longer referenced is dropped with its secret and its stats.  Main thread. */
#ifndef RM_XDS_SDS_STORE_H
#define RM_XDS_SDS_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/config/snapshot.h"
#include "proxy/net/secrets.h"

struct rm_pb_box;
struct rm_sds_store;

enum rm_sds_stat {
    RM_SDS_UPDATE_SUCCESS,
    RM_SDS_UPDATE_REJECTED,
};

/** An empty store.  Aborts when out of memory. */
struct rm_sds_store *rm_sds_store_new(void);
/** Free it (its table reference too).  NULL is a no-op. */
void rm_sds_store_free(struct rm_sds_store *s);

/** Make the set of names the names of <refs> (NULL: none): new ones are added, not arrived
 *  (their stats from 0), those <refs> lacks are dropped with their secret and stats.  Returns
 *  the number of names added and removed into *added / *removed (either may be NULL); the table
 *  is rebuilt when a secret that had arrived was dropped. */
void rm_sds_store_sync(struct rm_sds_store *s, const struct rm_sds_refs *refs, size_t *added,
                       size_t *removed);
/** Whether <name> is in the set. */
bool rm_sds_store_has(const struct rm_sds_store *s, const char *name);
/** Whether the secret <name> has arrived. */
bool rm_sds_store_arrived(const struct rm_sds_store *s, const char *name);
/** Whether every secret of <r> (NULL: none) has arrived. */
bool rm_sds_store_ready(const struct rm_sds_store *s, const struct rm_sds_refs *r);
/** Whether <waited> ms are past the initial_fetch_timeout of each secret of <r> that has not
 *  arrived (one with 0 never is). */
bool rm_sds_store_waited_out(const struct rm_sds_store *s, const struct rm_sds_refs *r,
                             uint64_t waited);

/** The table of the secrets that arrived (borrowed: valid until the next change; NULL when
 *  none): what TLS contexts resolve their SDS references in. */
struct rm_secrets *rm_sds_store_table(const struct rm_sds_store *s);
/** A table as it would be with <boxes>[<n>] (Secrets of names in the set, distinct) replacing
 *  or adding to the secrets that arrived.  One reference (NULL when empty). */
struct rm_secrets *rm_sds_store_candidate(const struct rm_sds_store *s,
                                          struct rm_pb_box *const *boxes, size_t n);
/** Accept the secret of <name> (in the set): <box> (the reference is taken) of <version>, now;
 *  counts update_attempt, update_success and the version gauge.  The table is not rebuilt:
 *  give it the candidate with rm_sds_store_set_table. */
void rm_sds_store_accept(struct rm_sds_store *s, const char *name, struct rm_pb_box *box,
                         const char *version);
/** Make <table> (the reference is taken) the table. */
void rm_sds_store_set_table(struct rm_sds_store *s, struct rm_secrets *table);

/** Count update_attempt and <stat> for <name> (NULL: every name in the set); names not in the
 *  set are ignored. */
void rm_sds_store_count(struct rm_sds_store *s, const char *name, enum rm_sds_stat stat);
/** Count init_fetch_timeout, once per name, for each secret of <r> (NULL: of the set) that has
 *  not arrived. */
void rm_sds_store_count_timeouts(struct rm_sds_store *s, const struct rm_sds_refs *r);

/** The secrets that arrived as /config_dump shows them, sorted by name, into <out> (room for
 *  every name in the set; the entries borrow the store's strings and boxes).  Returns how
 *  many. */
size_t rm_sds_store_dump(const struct rm_sds_store *s, struct rm_dyn_res *out);
/** How many names the set has. */
size_t rm_sds_store_count_names(const struct rm_sds_store *s);

#endif
