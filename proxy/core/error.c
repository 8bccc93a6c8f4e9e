#include "proxy/core/error.h"

#include <stdio.h>
#include <string.h>

int rm_error_vset(struct rm_error *err, const char *fmt, va_list ap)
{
    if (err) vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    return RM_ERR;
}

int rm_error_set(struct rm_error *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    rm_error_vset(err, fmt, ap);
    va_end(ap);
    return RM_ERR;
}

int rm_error_prefix(struct rm_error *err, const char *fmt, ...)
{
    if (!err) return RM_ERR;
    char prefix[512], old[sizeof(err->msg)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof(old));
    size_t n = strnlen(prefix, sizeof(prefix));
    if (n >= sizeof(err->msg)) n = sizeof(err->msg) - 1;
    memcpy(err->msg, prefix, n);
    size_t m = strnlen(old, sizeof(old));
    if (m > sizeof(err->msg) - 1 - n) m = sizeof(err->msg) - 1 - n;
    memcpy(err->msg + n, old, m);
    err->msg[n + m] = 0;
    return RM_ERR;
}
