/* Secrets by name: the table a TLS context resolves its SdsSecretConfig references in
 * (tls_certificate_sds_secret_configs, validation_context_sds_secret_config).
 *
 * Two tables exist: the bootstrap's static_resources.secrets (Envoy's static SDS: a reference
 * without sds_config names one of them), and the Secrets received over SDS (a reference with
 * an sds_config: xds/sds_store.c builds a new table for each accepted update).  A table is
 * immutable once built and refcounted: every snapshot holds a reference on the ones its TLS
 * contexts resolved in.  The TLS code sees only a name -> Secret lookup.
 *
 * struct rm_sds_refs is the set of dynamic references of a config (one TLS context, or the
 * union over many): the names xDS subscribes to and where each comes from. */
#ifndef RM_NET_SECRETS_H
#define RM_NET_SECRETS_H

#include <stdbool.h>
#include <stddef.h>

#include "proxy/config/config_source.h"
#include "proxy/core/error.h"

struct Envoy__Extensions__TransportSockets__Tls__V3__Secret;
struct rm_pb_box;
struct rm_secrets;

/** A table of <n> secrets <v> (borrowed from the message in <box>, which the table keeps a
 *  reference on; <box> may be NULL when the caller keeps <v> alive longer than the table).
 *  Errors name the secret under <path> ("static_resources.secrets"): an empty or duplicate
 *  name, no kind, or a kind remora does not support (session_ticket_keys, generic_secret).
 *  Returns RM_OK with *out (one reference; NULL when <n> is 0) or RM_ERR with <err>. */
int rm_secrets_new(struct Envoy__Extensions__TransportSockets__Tls__V3__Secret *const *v, size_t n,
                   struct rm_pb_box *box, const char *path, struct rm_secrets **out,
                   struct rm_error *err);
/** A table of the Secrets boxed in <boxes>[<n>] (each box holds one Secret message, already
 *  checked with rm_secret_check; names distinct): the table takes a reference on each box.
 *  Their paths (rm_secrets_path) are "Secret <name>".  Returns the table (one reference;
 *  NULL when <n> is 0).  Aborts when out of memory. */
struct rm_secrets *rm_secrets_new_boxed(struct rm_pb_box *const *boxes, size_t n);
/** Check secret <s> at <path>: a name and a kind remora supports (tls_certificate,
 *  validation_context).  RM_OK, or RM_ERR with <err> naming the field. */
int rm_secret_check(const struct Envoy__Extensions__TransportSockets__Tls__V3__Secret *s,
                    const char *path, struct rm_error *err);
/** The secret named <name> (borrowed: valid while <s> lives), or NULL (none; <s> NULL). */
const struct Envoy__Extensions__TransportSockets__Tls__V3__Secret *
rm_secrets_find(const struct rm_secrets *s, const char *name);
/** Where secret <name> was defined ("static_resources.secrets[1]"), for error messages; ""
 *  when unknown. */
const char *rm_secrets_path(const struct rm_secrets *s, const char *name);
/** Another reference; NULL gives NULL. */
struct rm_secrets *rm_secrets_ref(struct rm_secrets *s);
/** Drop a reference; the last frees the table.  NULL is a no-op. */
void rm_secrets_unref(struct rm_secrets *s);

/** One SdsSecretConfig with an sds_config (dynamic SDS): the secret's name and its source. */
struct rm_sds_ref {
    char *name;
    struct rm_config_source src;
};

/** A set of dynamic references, distinct by name (the first source seen is kept). */
struct rm_sds_refs {
    struct rm_sds_ref *v;
    size_t n;
};

/** Add <name> from <src> to <r> unless it has that name already (copies both; aborts when out
 *  of memory). */
void rm_sds_refs_add(struct rm_sds_refs *r, const char *name, const struct rm_config_source *src);
/** Add every reference of <from> (NULL: none) to <r>. */
void rm_sds_refs_merge(struct rm_sds_refs *r, const struct rm_sds_refs *from);
/** Whether <r> (NULL: empty) names <name>. */
bool rm_sds_refs_has(const struct rm_sds_refs *r, const char *name);
/** Deep copy of <from> (NULL: empty) into <r> (empty before). */
void rm_sds_refs_copy(struct rm_sds_refs *r, const struct rm_sds_refs *from);
/** Free what <r> holds and empty it. */
void rm_sds_refs_dispose(struct rm_sds_refs *r);

#endif
