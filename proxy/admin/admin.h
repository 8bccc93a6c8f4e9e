/* The admin server: Envoy's admin endpoints on the bootstrap's admin address, served by the
 * main thread's loop over HTTP/1.1 (the same h1 codec as the data plane). */
#ifndef RM_ADMIN_ADMIN_H
#define RM_ADMIN_ADMIN_H

#include <stdint.h>
#include <sys/socket.h>

#include "proxy/core/error.h"
#include "proxy/core/loop.h"

struct rm_snapshot;
struct rm_admin;

/** What the admin server needs from the server (all called on the main thread). */
struct rm_admin_hooks {
    /** The active snapshot, with a reference the admin drops with rm_snapshot_unref(). */
    struct rm_snapshot *(*snapshot)(void *ctx);
    /** "LIVE", "DRAINING", "PRE_INITIALIZING", "INITIALIZING". */
    const char *(*state)(void *ctx);
    /** POST /quitquitquit: begin a clean shutdown (after the reply is written). */
    void (*quit)(void *ctx);
    /** POST /drain_listeners: stop accepting and drain (optional, may be NULL). */
    void (*drain_listeners)(void *ctx);
    /** POST /healthcheck/fail and /healthcheck/ok (may be NULL). */
    void (*healthcheck)(void *ctx, bool ok);
};

/** Server facts for /server_info. */
struct rm_admin_info {
    const char *version;
    const char *command_line; /* JSON object text of command_line_options */
    uint64_t start_time_s;    /* wall clock at start */
    unsigned concurrency;
    uint32_t pipe_mode; /* a unix socket address: its file's mode (0: as bind made it) */
};

/** Listen on <addr> and serve.  Returns NULL with <err> naming the address on failure. */
struct rm_admin *rm_admin_new(struct rm_loop *loop, const struct sockaddr *addr, socklen_t len,
                              const struct rm_admin_hooks *hooks, void *ctx,
                              const struct rm_admin_info *info, struct rm_error *err);
/** Stop listening, close admin connections, free.  NULL is a no-op. */
void rm_admin_free(struct rm_admin *a);

#endif
