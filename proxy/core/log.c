#include "proxy/core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum rm_log_level rm_log_level = RM_LOG_INFO;

static const char *const level_names[] = {
    [RM_LOG_TRACE] = "trace",  [RM_LOG_DEBUG] = "debug", [RM_LOG_INFO] = "info",
    [RM_LOG_WARN] = "warning", [RM_LOG_ERROR] = "error", [RM_LOG_CRITICAL] = "critical",
    [RM_LOG_OFF] = "off",
};

int rm_log_level_parse(const char *name, enum rm_log_level *out)
{
    if (strcmp(name, "warn") == 0) {
        *out = RM_LOG_WARN;
        return 0;
    }
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *out = (enum rm_log_level)i;
            return 0;
        }
    }
    return -1;
}

void rm_log_write(enum rm_log_level lvl, const char *fmt, ...)
{
    char line[2048];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "[%04d-%02d-%02d %02d:%02d:%02d.%03ld][%s] ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (long)tv.tv_usec / 1000, level_names[lvl]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(line) - 2) len = sizeof(line) - 2;
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
