/* The server: main-thread state (config snapshot, workers, admin, signals) and its lifecycle:
 * load → validate → bind → serve → drain on SIGTERM/SIGINT or /quitquitquit → exit. */
#ifndef RM_SERVER_SERVER_H
#define RM_SERVER_SERVER_H

#include <stdbool.h>

#include "proxy/core/log.h"

#define RM_VERSION "0.1.0"

struct rm_options {
    const char *config_path;
    unsigned concurrency; /* 0 = number of CPUs */
    enum rm_log_level log_level;
    bool validate_only;
    const char *service_node;
    const char *service_cluster;
    unsigned drain_time_s;   /* shutdown and removed listeners; default 5 (Envoy: 600; a
                                sidecar wants less) */
    char command_line[1024]; /* JSON object for /server_info */
};

/** Parse argv the way Envoy does.  Returns 0 to continue, 1 when it printed --help/--version
 *  (exit 0), -1 on a usage error (message printed; exit 1). */
int rm_options_parse(struct rm_options *o, int argc, char **argv);
/** Run the server; returns the process exit status. */
int rm_server_run(const struct rm_options *o);

#endif
