/* Error results and messages shared by every layer.
 *
 * Flow results are small ints: RM_OK (0), RM_AGAIN (would block / queued), RM_DONE, and
 * negative values for failure (-errno from syscall wrappers, RM_ERR otherwise).  A failure
 * that a user sees carries its text in a struct rm_error filled by the callee. */
#ifndef RM_CORE_ERROR_H
#define RM_CORE_ERROR_H

#include <stdarg.h>
#include <stddef.h>

enum {
    RM_OK = 0,
    RM_AGAIN = 1,
    RM_DONE = 2,
    RM_ERR = -1,
};

/** A user-facing error message: "where: what" (e.g. a config field path and the problem). */
struct rm_error {
    char msg[1024];
};

/** Fill <err> (may be NULL) printf-style; returns RM_ERR so callers can `return rm_error_set(…)`.
 */
int rm_error_set(struct rm_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int rm_error_vset(struct rm_error *err, const char *fmt, va_list ap);

/** Prepend "prefix" to the message already in <err>: used to add context while unwinding. */
int rm_error_prefix(struct rm_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
