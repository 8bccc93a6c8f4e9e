/* OpenSSL, loaded at run time: see ssl_api.h. */
#define RM_SSL_API_IMPL
#include "proxy/net/ssl_api.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

struct rm_ssl_api rm_ssl;

static const struct {
    const char *name;
    size_t off;
} ssl_syms[] = {
#define RM_SSL_API_SYM(name) {#name, offsetof(struct rm_ssl_api, name)},
    RM_SSL_API(RM_SSL_API_SYM)
#undef RM_SSL_API_SYM
};

/* every member is a function pointer filled from a void * (load) */
_Static_assert(sizeof(struct rm_ssl_api) == sizeof(ssl_syms) / sizeof(ssl_syms[0]) * sizeof(void *),
               "struct rm_ssl_api: one pointer per RM_SSL_API name");

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static char load_error[512] = "not loaded"; /* "" once loaded */

/* Open both libraries (never closed: OpenSSL stays loaded for the process's life, as it did
 * when linked) and fill a copy of the table, published only when it is complete. */
static void load(void)
{
    /* libcrypto first, so that a missing libcrypto is named as such (libssl needs it) */
    void *crypto = dlopen(RM_LIBCRYPTO_SONAME, RTLD_NOW | RTLD_LOCAL);
    void *ssl = crypto ? dlopen(RM_LIBSSL_SONAME, RTLD_NOW | RTLD_LOCAL) : NULL;
    if (!ssl) {
        const char *e = dlerror();
        snprintf(load_error, sizeof(load_error), "%s", e ? e : "dlopen failed");
        return;
    }
    struct rm_ssl_api api;
    for (size_t i = 0; i < sizeof(ssl_syms) / sizeof(ssl_syms[0]); i++) {
        /* libssl's handle: dlsym searches its dependencies (libcrypto) too */
        void *f = dlsym(ssl, ssl_syms[i].name);
        if (!f) {
            const char *e = dlerror();
            snprintf(load_error, sizeof(load_error), "%s", e ? e : ssl_syms[i].name);
            return;
        }
        /* POSIX: a function pointer and void * have the same representation */
        memcpy((char *)&api + ssl_syms[i].off, &f, sizeof(f));
    }
    /* what SSL_CTX_new would do implicitly, done here so that a failure has a message */
    if (api.OPENSSL_init_ssl(0, NULL) != 1) {
        snprintf(load_error, sizeof(load_error),
                 "OpenSSL initialisation (OPENSSL_init_ssl) failed");
        return;
    }
    rm_ssl = api;
    load_error[0] = 0;
}

int rm_ssl_api_load(struct rm_error *err)
{
    pthread_once(&load_once, load);
    if (load_error[0]) return rm_error_set(err, "TLS unavailable: %s", load_error);
    return RM_OK;
}
