/* The TLS transport (OpenSSL): termination on a listener's filter chain, origination to a
 * cluster's hosts, mutual TLS both ways.
 *
 * A struct rm_tls_ctx is built from an Envoy TransportSocket (envoy.transport_sockets.tls with
 * a DownstreamTlsContext or an UpstreamTlsContext) when the config snapshot is built, immutable
 * afterwards and shared by every worker (SSL_new on a shared SSL_CTX is thread-safe).  Its
 * SSL_CTX holds the heavy part (certificate chain and key, trust anchors, tls_params, verify
 * depth and mode, configured client alpn_protocols); the context itself the light part (sni,
 * SAN matchers, ACCEPT_UNTRUSTED, server ALPN list, stats), which the OpenSSL callbacks find
 * through each connection's SSL object.  Client contexts with the same heavy configuration
 * (the same message apart from sni, SAN matchers and trust_chain_verification, and the same
 * files on disk: device, inode, size, mtime, ctime) share one SSL_CTX through a process-wide
 * table (an entry lives as long as a context uses it).  Server contexts share it too, but only
 * within one listener: the key is the owner's stat_prefix, the default ALPN, the whole
 * DownstreamTlsContext (ALPN, require_client_certificate, everything: all of it is in the
 * SSL_CTX or must match for a session to resume) and its files.  A config update that rebuilds
 * a listener with the same TLS configuration (an LDS push, a route change) thus keeps its
 * SSL_CTX, session cache and session ticket keys, and clients resume their sessions across it;
 * a certificate file replaced or touched on disk gives a new SSL_CTX (a full handshake, the new
 * certificate) at the next build.  Listeners with different stat_prefixes never share, even
 * with equal configurations: the session cache, ticket keys and session id context are per
 * SSL_CTX, and a session of one listener must not resume on another (each Envoy listener has
 * its own ticket keys); the per-listener parts (stats, ALPN list, SAN matchers) stay in the
 * rm_tls_ctx, found by the callbacks through the SSL object.  It is refcounted: its owner (the
 * listener config, the cluster) holds one reference and every TLS connection another, so a
 * connection outlives any config change safely.
 *
 * Dynamic SDS: a context whose configuration references secrets with an sds_config records
 * them (rm_tls_ctx_sds_refs) with what it needs to be rebuilt (rm_tls_ctx_rebuild) when they
 * arrive or change; until they arrive it is not ready (rm_tls_ctx_ready) and its handshakes
 * fail, as Envoy's NotReadySslSocket.
 *
 * A connection becomes TLS with rm_conn_start_tls() right after accept / connect; the conn
 * (proxy/net/conn.c) then runs the non-blocking handshake before it delivers a byte or reports
 * on_connected, and a failed or timed-out handshake closes it.  Stats are Envoy's, under
 * "<owner prefix>ssl.": handshake, connection_error, no_certificate, fail_verify_no_cert,
 * fail_verify_error, fail_verify_san. */
#ifndef RM_NET_TLS_H
#define RM_NET_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/core/error.h"

struct Envoy__Config__Core__V3__TransportSocket;
struct Envoy__Extensions__TransportSockets__Tls__V3__Secret;
struct rm_sds_refs;
struct rm_conn;
struct rm_transport_ops;
struct rm_secrets;
struct rm_tls_ctx;
struct ssl_ctx_st;

enum rm_tls_side {
    RM_TLS_SERVER, /* DownstreamTlsContext: a listener terminates TLS */
    RM_TLS_CLIENT, /* UpstreamTlsContext: a cluster originates TLS */
};

/** What the context is for, besides its config message. */
struct rm_tls_opts {
    enum rm_tls_side side;
    /** The owner's stats prefix ("listener.127.0.0.1_10000.", "cluster.backend."): the ssl.*
     *  stats go under "<stat_prefix>ssl.". */
    const char *stat_prefix;
    /** Server: the ALPN protocols offered when common_tls_context.alpn_protocols is empty, as a
     *  comma-separated list ("h2,http/1.1"; NULL or "": no ALPN).  Ignored for clients, whose
     *  ALPN comes from the cluster's protocol (rm_conn_start_tls). */
    const char *default_alpn;
    /** The secrets SdsSecretConfig references without sds_config name (proxy/net/secrets.h),
     *  borrowed for the call only (the context keeps a reference when it has dynamic SDS
     *  references, else copies what it uses); NULL: none. */
    const struct rm_secrets *secrets;
    /** The secrets received over SDS, for references with an sds_config (borrowed for the call;
     *  NULL: none yet).  A reference to a secret it lacks leaves the context not ready. */
    const struct rm_secrets *sds;
};

/** Build a context from <ts> (its typed_config must be a DownstreamTlsContext for a server, an
 *  UpstreamTlsContext for a client).  SDS references are resolved first in <o>'s secrets
 *  (tls_certificate_sds_secret_configs, validation_context_sds_secret_config, alone or in
 *  combined_validation_context, whose default_validation_context the secret's fields are merged
 *  over as protobuf MergeFrom does, like Envoy); the sharing key is made of the resolved
 *  configuration, so it covers the secrets' contents and files.  Certificates, keys and CAs are
 *  read now (DataSource filename, inline_bytes, inline_string or environment_variable), unless
 *  a live context has the same sharing key (above): its SSL_CTX is then shared.  Every
 *  error names the field under <path> (e.g. "static_resources.clusters[0].transport_socket"),
 *  unsupported fields included (OCSP, CRLs, session ticket keys, …).  References with an
 *  sds_config (dynamic SDS) resolve in <o>'s sds table; one that is missing there gives a
 *  context that is not ready (rm_tls_ctx_ready), rebuilt by rm_tls_ctx_rebuild when the secret
 *  arrives.  Returns RM_OK
 * with *out holding one reference, or RM_ERR with <err> (*out NULL).  Main thread. */
int rm_tls_ctx_new(const struct Envoy__Config__Core__V3__TransportSocket *ts,
                   const struct rm_tls_opts *o, const char *path, struct rm_tls_ctx **out,
                   struct rm_error *err);
/** Whether <t> can handshake: false when a secret it references over SDS had not arrived
 *  when it was built (a handshake over it then fails with -ENOKEY, counted as
 *  <prefix>{server,client}_ssl_socket_factory.{down,up}stream_context_secrets_not_ready, as
 *  Envoy's NotReadySslSocket).  NULL (plaintext) is ready. */
bool rm_tls_ctx_ready(const struct rm_tls_ctx *t);
/** The dynamic SDS references of <t> (names and sources; borrowed, as long as <t>), or NULL
 *  when it has none (or <t> is NULL). */
const struct rm_sds_refs *rm_tls_ctx_sds_refs(const struct rm_tls_ctx *t);
/** A new context from <t>'s configuration with the SDS references resolved in <sds> (same
 *  options, static secrets and path as <t>; <t> must have SDS references).  <count>: count
 *  <prefix>*_ssl_socket_factory.ssl_context_update_by_sds on the new one.  RM_OK with *out (one
 *  reference), or RM_ERR with <err> naming the field (e.g. a key that does not match its
 *  certificate).  Main thread. */
int rm_tls_ctx_rebuild(const struct rm_tls_ctx *t, const struct rm_secrets *sds, bool count,
                       struct rm_tls_ctx **out, struct rm_error *err);
/** Check a Secret received over SDS at <path> ("Secret s1: resources[0]"): a supported kind
 *  (rm_secret_check), a certificate chain whose PEM parses and whose private key matches it, a
 *  trusted_ca whose PEM parses.  RM_OK or RM_ERR with <err> naming the field. */
int rm_tls_check_secret(const struct Envoy__Extensions__TransportSockets__Tls__V3__Secret *s,
                        const char *path, struct rm_error *err);
/** The OpenSSL SSL_CTX under <t>, borrowed (for tests and diagnostics: contexts that share
 *  one return the same pointer). */
const struct ssl_ctx_st *rm_tls_ctx_ssl_ctx(const struct rm_tls_ctx *t);
/** Another reference (any thread). */
struct rm_tls_ctx *rm_tls_ctx_ref(struct rm_tls_ctx *t);
/** Drop a reference (any thread); the last frees the context.  NULL is a no-op. */
void rm_tls_ctx_unref(struct rm_tls_ctx *t);

/** The TLS transport ops (rm_conn_start_tls installs them). */
extern const struct rm_transport_ops rm_transport_tls;

/** Upstream ALPN lists for rm_conn_start_tls, in wire format (length-prefixed). */
#define RM_TLS_ALPN_H2 "\x02h2"
#define RM_TLS_ALPN_HTTP11 "\x08http/1.1"

/** Make <c> a TLS connection over <t> (takes its own reference on <t>): just accepted (server;
 *  the handshake starts with the first readable event and is bounded by
 *  <handshake_timeout_ms>, 0 = no bound of its own) or just returned by rm_conn_connect
 *  (client; the handshake follows the TCP connect, both bounded by the connect timeout, and
 *  on_connected reports the end of both).  Client: <alpn>/<alpn_len> (wire format, e.g.
 *  RM_TLS_ALPN_H2) is offered unless the context configures alpn_protocols itself; the SNI is
 *  the context's sni.  Returns 0, or -ENOMEM (the caller closes <c>). */
int rm_conn_start_tls(struct rm_conn *c, struct rm_tls_ctx *t, const char *alpn, size_t alpn_len,
                      uint32_t handshake_timeout_ms);

/** Whether <c> runs TLS and ALPN selected <proto> ("h2", "http/1.1") in its handshake. */
bool rm_conn_alpn_is(const struct rm_conn *c, const char *proto);

/** What access logs tell of a TLS connection (Envoy's REQUESTED_SERVER_NAME, DOWNSTREAM_TLS_*
 *  and *_URI_SAN operators). */
struct rm_tls_info {
    const char *version;       /* "TLSv1.3" (OpenSSL's static names) */
    const char *cipher;        /* "TLS_AES_256_GCM_SHA384" (static) */
    const char *sni;           /* the server name the client sent (server side); NULL: none */
    const char *peer_uri_san;  /* the first URI SAN of the peer's certificate; NULL: none */
    const char *local_uri_san; /* the first URI SAN of our certificate; NULL: none */
    /* the peer certificate's URI SANs, then its DNS SANs (RBAC principals, in Envoy's order),
     * each NUL-terminated, the list ended by an empty string; NULL: no peer certificate */
    const char *peer_sans;
};
/** A snapshot of <c>'s TLS session as one malloc'ed block (free() it: the strings live in it),
 *  or NULL when <c> is not TLS, its handshake has not finished, or memory ran out.  Worker
 *  thread of <c>; reads the session only (no effect on the connection). */
struct rm_tls_info *rm_conn_tls_info(const struct rm_conn *c);

#endif
