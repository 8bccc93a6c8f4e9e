/* Secrets by name: the table a TLS context resolves its SdsSecretConfig references in
 * (tls_certificate_sds_secret_configs, validation_context_sds_secret_config).
 *
 * Today the table holds the bootstrap's static_resources.secrets (Envoy's static SDS: a
 * reference without sds_config names one of them).  It is immutable once built and refcounted:
 * the bootstrap snapshot owns one reference and every snapshot derived from it another, so
 * listeners and clusters arriving over xDS resolve bootstrap secrets exactly like static ones.
 * Dynamic SDS (Secret resources over ADS) is meant to plug in behind rm_secrets_find: the TLS
 * code sees only a name -> Secret lookup. */
#ifndef RM_NET_SECRETS_H
#define RM_NET_SECRETS_H

#include <stddef.h>

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

#endif
