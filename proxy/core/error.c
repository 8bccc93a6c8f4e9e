#include "proxy/core/error.h"

#include <stdio.h>
#include <string.h>

int rm_error_vset(struct rm_error *err, const char *fmt, va_list ap)
{
    if (err)
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
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
    if (!err)
        return RM_ERR;
    char prefix[512], old[sizeof(err->msg)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof(old));
    snprintf(err->msg, sizeof(err->msg), "%s%s", prefix, old);
    return RM_ERR;
}
