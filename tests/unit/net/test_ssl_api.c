/* Unit tests for proxy/net/ssl_api.c: OpenSSL loaded at run time into a process that already
 * has it (this binary links libssl for its own use): dlopen must hand back those copies. */
#define RM_SSL_API_IMPL /* OpenSSL's names stay OpenSSL's here: compare with the table */
#include "proxy/net/ssl_api.h"

#include <criterion/criterion.h>
#include <stddef.h>
#include <string.h>

Test(ssl_api, loads_every_function_from_the_process_copy)
{
    struct rm_error err = {{0}};
    cr_assert_eq(rm_ssl_api_load(&err), RM_OK, "%s", err.msg);
    void *const *p = (void *const *)&rm_ssl;
    for (size_t i = 0; i < sizeof(rm_ssl) / sizeof(void *); i++)
        cr_assert_not_null(p[i], "member %zu not filled", i);
    /* the same library: its static method tables are the very objects linked here */
    cr_assert_eq(rm_ssl.TLS_server_method(), TLS_server_method());
    cr_assert_eq(rm_ssl.TLS_client_method(), TLS_client_method());
    /* once per process: a second call neither reloads nor fails */
    struct rm_ssl_api copy;
    memcpy(&copy, &rm_ssl, sizeof(copy));
    cr_assert_eq(rm_ssl_api_load(&err), RM_OK, "%s", err.msg);
    cr_assert_eq(memcmp(&copy, &rm_ssl, sizeof(copy)), 0);
    /* and the table works: an SSL_CTX made through it is an ordinary one */
    SSL_CTX *ctx = rm_ssl.SSL_CTX_new(rm_ssl.TLS_client_method());
    cr_assert_not_null(ctx);
    cr_assert_eq(SSL_CTX_get_verify_mode(ctx), SSL_VERIFY_NONE);
    rm_ssl.SSL_CTX_free(ctx);
}
