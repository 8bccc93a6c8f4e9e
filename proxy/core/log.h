/* Logging: leveled, to stderr, one line per call, thread-safe (one write(2) per line).
 * Levels follow Envoy's -l names: trace, debug, info, warning (warn), error, critical, off. */
#ifndef RM_CORE_LOG_H
#define RM_CORE_LOG_H

enum rm_log_level {
    RM_LOG_TRACE,
    RM_LOG_DEBUG,
    RM_LOG_INFO,
    RM_LOG_WARN,
    RM_LOG_ERROR,
    RM_LOG_CRITICAL,
    RM_LOG_OFF,
};

extern enum rm_log_level rm_log_level;

/** Parse an Envoy level name; returns 0 and sets *out, or -1 for an unknown name. */
int rm_log_level_parse(const char *name, enum rm_log_level *out);
void rm_log_write(enum rm_log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define RM_LOG(lvl, ...)                                                                           \
    do {                                                                                           \
        if ((lvl) >= rm_log_level) rm_log_write((lvl), __VA_ARGS__);                               \
    } while (0)
#define rm_log_trace(...) RM_LOG(RM_LOG_TRACE, __VA_ARGS__)
#define rm_log_debug(...) RM_LOG(RM_LOG_DEBUG, __VA_ARGS__)
#define rm_log_info(...) RM_LOG(RM_LOG_INFO, __VA_ARGS__)
#define rm_log_warn(...) RM_LOG(RM_LOG_WARN, __VA_ARGS__)
#define rm_log_error(...) RM_LOG(RM_LOG_ERROR, __VA_ARGS__)

#endif
