/* OpenSSL, loaded at run time: libssl and libcrypto are opened with dlopen() when the first TLS
 * context is built (rm_tls_ctx_new), so a remora without TLS in its config never maps them
 * (about 1.7 MiB of idle RSS: loading and relocating both libraries).  remora and remora-xds
 * are linked without -lssl -lcrypto; the link fails if anything calls OpenSSL directly.
 *
 * Every OpenSSL function proxy/net/tls.c calls, after macro expansion (SSL_CTX_set_mode is
 * SSL_CTX_ctrl, sk_*_num is OPENSSL_sk_num, SSL_get_app_data is SSL_get_ex_data, …), is a
 * member of struct rm_ssl_api with OpenSSL's own prototype (__typeof__), and this header
 * #defines each name to that member: tls.c's code reads as plain OpenSSL.  Include it after
 * every OpenSSL header (it includes the ones it needs itself), in tls.c only.
 *
 * A new OpenSSL call in tls.c needs its name in both lists below (the struct member and the
 * #define): without the #define remora's link fails with an undefined reference, without the
 * member tls.c does not compile. */
#ifndef RM_NET_SSL_API_H
#define RM_NET_SSL_API_H

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "proxy/core/error.h"

/* The sonames opened (OpenSSL 3's ABI). */
#define RM_LIBCRYPTO_SONAME "libcrypto.so.3"
#define RM_LIBSSL_SONAME "libssl.so.3"

/* X(name): every function called through the table, libcrypto's then libssl's. */
#define RM_SSL_API(X)                                                                              \
    X(ASN1_STRING_get0_data)                                                                       \
    X(ASN1_STRING_length)                                                                          \
    X(BIO_free)                                                                                    \
    X(BIO_new_mem_buf)                                                                             \
    X(BIO_number_read)                                                                             \
    X(ERR_clear_error)                                                                             \
    X(ERR_error_string_n)                                                                          \
    X(ERR_get_error)                                                                               \
    X(ERR_peek_error)                                                                              \
    X(EVP_PKEY_free)                                                                               \
    X(GENERAL_NAMES_free)                                                                          \
    X(OPENSSL_cleanse)                                                                             \
    X(OPENSSL_sk_num)                                                                              \
    X(OPENSSL_sk_pop_free)                                                                         \
    X(OPENSSL_sk_value)                                                                            \
    X(PEM_X509_INFO_read_bio)                                                                      \
    X(PEM_read_bio_PrivateKey)                                                                     \
    X(PEM_read_bio_X509)                                                                           \
    X(PEM_read_bio_X509_AUX)                                                                       \
    X(X509_INFO_free)                                                                              \
    X(X509_STORE_CTX_get_current_cert)                                                             \
    X(X509_STORE_CTX_get_error_depth)                                                              \
    X(X509_STORE_CTX_get_ex_data)                                                                  \
    X(X509_STORE_CTX_set_error)                                                                    \
    X(X509_STORE_add_cert)                                                                         \
    X(X509_STORE_get0_objects)                                                                     \
    X(X509_free)                                                                                   \
    X(X509_get_ext_d2i)                                                                            \
    X(X509_verify_cert_error_string)                                                               \
    X(OPENSSL_init_ssl)                                                                            \
    X(SSL_CIPHER_get_name)                                                                         \
    X(SSL_CTX_add_client_CA)                                                                       \
    X(SSL_CTX_check_private_key)                                                                   \
    X(SSL_CTX_ctrl)                                                                                \
    X(SSL_CTX_free)                                                                                \
    X(SSL_CTX_get_cert_store)                                                                      \
    X(SSL_CTX_get_client_CA_list)                                                                  \
    X(SSL_CTX_get_verify_mode)                                                                     \
    X(SSL_CTX_new)                                                                                 \
    X(SSL_CTX_sess_set_new_cb)                                                                     \
    X(SSL_CTX_set_alpn_protos)                                                                     \
    X(SSL_CTX_set_alpn_select_cb)                                                                  \
    X(SSL_CTX_set_cipher_list)                                                                     \
    X(SSL_CTX_set_options)                                                                         \
    X(SSL_CTX_set_session_id_context)                                                              \
    X(SSL_CTX_set_timeout)                                                                         \
    X(SSL_CTX_set_verify)                                                                          \
    X(SSL_CTX_set_verify_depth)                                                                    \
    X(SSL_CTX_up_ref)                                                                              \
    X(SSL_CTX_use_PrivateKey)                                                                      \
    X(SSL_CTX_use_certificate)                                                                     \
    X(SSL_SESSION_free)                                                                            \
    X(SSL_SESSION_get_protocol_version)                                                            \
    X(SSL_ctrl)                                                                                    \
    X(SSL_do_handshake)                                                                            \
    X(SSL_free)                                                                                    \
    X(SSL_get0_alpn_selected)                                                                      \
    X(SSL_get0_peer_certificate)                                                                   \
    X(SSL_get_certificate)                                                                         \
    X(SSL_get_current_cipher)                                                                      \
    X(SSL_get_error)                                                                               \
    X(SSL_get_ex_data)                                                                             \
    X(SSL_get_ex_data_X509_STORE_CTX_idx)                                                          \
    X(SSL_get_rbio)                                                                                \
    X(SSL_get_servername)                                                                          \
    X(SSL_get_verify_result)                                                                       \
    X(SSL_get_version)                                                                             \
    X(SSL_new)                                                                                     \
    X(SSL_read_ex)                                                                                 \
    X(SSL_select_next_proto)                                                                       \
    X(SSL_session_reused)                                                                          \
    X(SSL_set_accept_state)                                                                        \
    X(SSL_set_alpn_protos)                                                                         \
    X(SSL_set_connect_state)                                                                       \
    X(SSL_set_ex_data)                                                                             \
    X(SSL_set_fd)                                                                                  \
    X(SSL_set_session)                                                                             \
    X(SSL_shutdown)                                                                                \
    X(SSL_write_ex)                                                                                \
    X(TLS_client_method)                                                                           \
    X(TLS_server_method)

struct rm_ssl_api {
#define RM_SSL_API_MEMBER(name) __typeof__(&name) name;
    RM_SSL_API(RM_SSL_API_MEMBER)
#undef RM_SSL_API_MEMBER
};

/** The table: filled by rm_ssl_api_load, read-only afterwards. */
extern struct rm_ssl_api rm_ssl;

/** Open libssl and libcrypto, fill rm_ssl and initialise OpenSSL (OPENSSL_init_ssl), once per
 *  process (any thread; later calls return the first one's result).  RM_OK, or RM_ERR with
 *  <err> = "TLS unavailable: <why>" (dlerror's text, e.g. "libssl.so.3: cannot open shared
 *  object file: No such file or directory").  Every other function here may be called only
 *  after it returned RM_OK.  Works as well when the process already has OpenSSL loaded (the
 *  unit tests link it): dlopen then returns those copies. */
int rm_ssl_api_load(struct rm_error *err);

#ifndef RM_SSL_API_IMPL
/* OpenSSL's names, redirected to the table (RM_SSL_API's list, one for one). */
#define ASN1_STRING_get0_data (rm_ssl.ASN1_STRING_get0_data)
#define ASN1_STRING_length (rm_ssl.ASN1_STRING_length)
#define BIO_free (rm_ssl.BIO_free)
#define BIO_new_mem_buf (rm_ssl.BIO_new_mem_buf)
#define BIO_number_read (rm_ssl.BIO_number_read)
#define ERR_clear_error (rm_ssl.ERR_clear_error)
#define ERR_error_string_n (rm_ssl.ERR_error_string_n)
#define ERR_get_error (rm_ssl.ERR_get_error)
#define ERR_peek_error (rm_ssl.ERR_peek_error)
#define EVP_PKEY_free (rm_ssl.EVP_PKEY_free)
#define GENERAL_NAMES_free (rm_ssl.GENERAL_NAMES_free)
#define OPENSSL_cleanse (rm_ssl.OPENSSL_cleanse)
#define OPENSSL_sk_num (rm_ssl.OPENSSL_sk_num)
#define OPENSSL_sk_pop_free (rm_ssl.OPENSSL_sk_pop_free)
#define OPENSSL_sk_value (rm_ssl.OPENSSL_sk_value)
#define PEM_X509_INFO_read_bio (rm_ssl.PEM_X509_INFO_read_bio)
#define PEM_read_bio_PrivateKey (rm_ssl.PEM_read_bio_PrivateKey)
#define PEM_read_bio_X509 (rm_ssl.PEM_read_bio_X509)
#define PEM_read_bio_X509_AUX (rm_ssl.PEM_read_bio_X509_AUX)
#define X509_INFO_free (rm_ssl.X509_INFO_free)
#define X509_STORE_CTX_get_current_cert (rm_ssl.X509_STORE_CTX_get_current_cert)
#define X509_STORE_CTX_get_error_depth (rm_ssl.X509_STORE_CTX_get_error_depth)
#define X509_STORE_CTX_get_ex_data (rm_ssl.X509_STORE_CTX_get_ex_data)
#define X509_STORE_CTX_set_error (rm_ssl.X509_STORE_CTX_set_error)
#define X509_STORE_add_cert (rm_ssl.X509_STORE_add_cert)
#define X509_STORE_get0_objects (rm_ssl.X509_STORE_get0_objects)
#define X509_free (rm_ssl.X509_free)
#define X509_get_ext_d2i (rm_ssl.X509_get_ext_d2i)
#define X509_verify_cert_error_string (rm_ssl.X509_verify_cert_error_string)
#define OPENSSL_init_ssl (rm_ssl.OPENSSL_init_ssl)
#define SSL_CIPHER_get_name (rm_ssl.SSL_CIPHER_get_name)
#define SSL_CTX_add_client_CA (rm_ssl.SSL_CTX_add_client_CA)
#define SSL_CTX_check_private_key (rm_ssl.SSL_CTX_check_private_key)
#define SSL_CTX_ctrl (rm_ssl.SSL_CTX_ctrl)
#define SSL_CTX_free (rm_ssl.SSL_CTX_free)
#define SSL_CTX_get_cert_store (rm_ssl.SSL_CTX_get_cert_store)
#define SSL_CTX_get_client_CA_list (rm_ssl.SSL_CTX_get_client_CA_list)
#define SSL_CTX_get_verify_mode (rm_ssl.SSL_CTX_get_verify_mode)
#define SSL_CTX_new (rm_ssl.SSL_CTX_new)
#define SSL_CTX_sess_set_new_cb (rm_ssl.SSL_CTX_sess_set_new_cb)
#define SSL_CTX_set_alpn_protos (rm_ssl.SSL_CTX_set_alpn_protos)
#define SSL_CTX_set_alpn_select_cb (rm_ssl.SSL_CTX_set_alpn_select_cb)
#define SSL_CTX_set_cipher_list (rm_ssl.SSL_CTX_set_cipher_list)
#define SSL_CTX_set_options (rm_ssl.SSL_CTX_set_options)
#define SSL_CTX_set_session_id_context (rm_ssl.SSL_CTX_set_session_id_context)
#define SSL_CTX_set_timeout (rm_ssl.SSL_CTX_set_timeout)
#define SSL_CTX_set_verify (rm_ssl.SSL_CTX_set_verify)
#define SSL_CTX_set_verify_depth (rm_ssl.SSL_CTX_set_verify_depth)
#define SSL_CTX_up_ref (rm_ssl.SSL_CTX_up_ref)
#define SSL_CTX_use_PrivateKey (rm_ssl.SSL_CTX_use_PrivateKey)
#define SSL_CTX_use_certificate (rm_ssl.SSL_CTX_use_certificate)
#define SSL_SESSION_free (rm_ssl.SSL_SESSION_free)
#define SSL_SESSION_get_protocol_version (rm_ssl.SSL_SESSION_get_protocol_version)
#define SSL_ctrl (rm_ssl.SSL_ctrl)
#define SSL_do_handshake (rm_ssl.SSL_do_handshake)
#define SSL_free (rm_ssl.SSL_free)
#define SSL_get0_alpn_selected (rm_ssl.SSL_get0_alpn_selected)
#define SSL_get0_peer_certificate (rm_ssl.SSL_get0_peer_certificate)
#define SSL_get_certificate (rm_ssl.SSL_get_certificate)
#define SSL_get_current_cipher (rm_ssl.SSL_get_current_cipher)
#define SSL_get_error (rm_ssl.SSL_get_error)
#define SSL_get_ex_data (rm_ssl.SSL_get_ex_data)
#define SSL_get_ex_data_X509_STORE_CTX_idx (rm_ssl.SSL_get_ex_data_X509_STORE_CTX_idx)
#define SSL_get_rbio (rm_ssl.SSL_get_rbio)
#define SSL_get_servername (rm_ssl.SSL_get_servername)
#define SSL_get_verify_result (rm_ssl.SSL_get_verify_result)
#define SSL_get_version (rm_ssl.SSL_get_version)
#define SSL_new (rm_ssl.SSL_new)
#define SSL_read_ex (rm_ssl.SSL_read_ex)
#define SSL_select_next_proto (rm_ssl.SSL_select_next_proto)
#define SSL_session_reused (rm_ssl.SSL_session_reused)
#define SSL_set_accept_state (rm_ssl.SSL_set_accept_state)
#define SSL_set_alpn_protos (rm_ssl.SSL_set_alpn_protos)
#define SSL_set_connect_state (rm_ssl.SSL_set_connect_state)
#define SSL_set_ex_data (rm_ssl.SSL_set_ex_data)
#define SSL_set_fd (rm_ssl.SSL_set_fd)
#define SSL_set_session (rm_ssl.SSL_set_session)
#define SSL_shutdown (rm_ssl.SSL_shutdown)
#define SSL_write_ex (rm_ssl.SSL_write_ex)
#define TLS_client_method (rm_ssl.TLS_client_method)
#define TLS_server_method (rm_ssl.TLS_server_method)
#endif

#endif
