/* HTTP access logs, as Envoy's (HttpConnectionManager.access_log).
 *
 * A format (SubstitutionFormatString: text with %COMMAND(arg):MAXLEN% operators, or a JSON
 * object whose string values are such texts) is compiled once, when the listener config is
 * built, into a list of literal and operator pieces.  A logger (struct rm_access_log) is a
 * compiled format plus a sink: a file opened with O_APPEND (shared by every logger and snapshot
 * naming the same path), stdout or stderr.  Loggers belong to the snapshot and are shared by
 * the workers.
 *
 * Writing (rm_access_log_write) formats the line into a per-thread buffer of the sink without
 * a lock or a system call.  The thread hands the buffer to the process's one flush thread when
 * it holds 64 KiB or more, from a 1 s timer on the thread's loop (Envoy's
 * file_flush_interval) and in rm_access_log_thread_cleanup; only the flush thread calls
 * write(2) on a log fd (as Envoy's), so a destination that stalls (a full pipe, a slow disk)
 * never blocks a worker.  A thread's bytes for a sink, buffered or handed off and not written
 * yet, never pass 1 MiB: lines that would are dropped and counted (access_log.dropped).
 * Counters (access_log.): written (lines accepted), dropped (refused at the cap, or unwritten
 * at exit), write_failed (failed write(2) calls and reopens), flushed_by_timer (buffers the 1 s
 * timer handed off before they were full). */
#ifndef RM_HTTP_ACCESS_LOG_H
#define RM_HTTP_ACCESS_LOG_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

#include "proxy/core/error.h"

struct rm_headers;
struct rm_loop;
struct rm_strbuf;
struct rm_tls_info;
struct Envoy__Config__Accesslog__V3__AccessLog;
struct Envoy__Config__Core__V3__SubstitutionFormatString;

/** What a finished stream offers to the formatters.  Pointers may be NULL (the operator then
 *  prints "-"); durations are -1 when unknown.  Strings are borrowed for the call. */
struct rm_alog_info {
    const struct rm_headers *req, *resp, *trailers;
    const char *protocol; /* "HTTP/1.1", "HTTP/2"… */
    unsigned status;      /* 0: no response */
    const char *resp_flags;
    /* RESPONSE_CODE_DETAILS: Envoy's details string (a static string: "via_upstream",
     * "route_not_found"…).  One that ends in '}' (upstream_reset_before_response_started{…})
     * gets ",<transport failure reason>" inside its braces, spaces made '_', as Envoy's router
     * composes it. */
    const char *details;
    /* UPSTREAM_TRANSPORT_FAILURE_REASON: a static text ("TLS error: …"), else, when
     * transport_errno > 0, "delayed connect error: <transport_errno>" (Envoy's words) */
    const char *transport_failure;
    int transport_errno;
    uint64_t bytes_rx, bytes_tx; /* body bytes */
    struct timespec start;       /* wall clock */
    int64_t duration_ms, req_duration_ms, resp_duration_ms;
    const char *upstream_host, *upstream_cluster, *route_name;
    const struct sockaddr *upstream_local;           /* NULL or AF_INET/AF_INET6 */
    const struct sockaddr *down_remote, *down_local; /* NULL or AF_INET/AF_INET6 */
    /* a connection of a listener on a unix socket: its path ("@name": abstract), what both
     * downstream addresses print (Envoy names the peer of a pipe connection, which the kernel
     * leaves unnamed, by the listener's own path); else NULL */
    const char *down_pipe;
    const struct rm_tls_info *down_tls; /* NULL: not TLS (proxy/net/tls.h) */
    const char *upstream_peer_uri_san;  /* the upstream certificate's URI SAN */
    uint64_t connection_id;             /* 0: unknown */
    uint32_t attempts;                  /* upstream attempts; 0: none */
    bool health_check; /* a health check request (envoy.filters.http.health_check) */
};

/** A compiled format. */
struct rm_alog_format;

/** Envoy's default text format (with its trailing newline). */
extern const char rm_alog_default_format[];

/** Compile a text format.  <path> names the field for errors (an unknown operator, a missing
 *  ')' or '%').  Returns the format, or NULL with <err> set. */
struct rm_alog_format *rm_alog_format_text(const char *text, bool omit_empty, const char *path,
                                           struct rm_error *err);
/** Compile a SubstitutionFormatString (NULL: the default format).  <path> is the field's. */
struct rm_alog_format *
rm_alog_format_new(const struct Envoy__Config__Core__V3__SubstitutionFormatString *pb,
                   const char *path, struct rm_error *err);
void rm_alog_format_free(struct rm_alog_format *f);
/** Append the formatted line for <in> to <out> (a JSON format appends a '\n'). */
void rm_alog_format_line(const struct rm_alog_format *f, const struct rm_alog_info *in,
                         struct rm_strbuf *out);

/** A logger: a format and a sink. */
struct rm_access_log;

/** Build the logger of an AccessLog at <path> (…access_log[i]): envoy.access_loggers.file,
 *  .stdout or .stderr, with its `filter` compiled (access_log_filter.h).  Opens the file
 *  (O_APPEND|O_CREAT).  NULL with <err> naming the field on error. */
struct rm_access_log *rm_access_log_new(const struct Envoy__Config__Accesslog__V3__AccessLog *pb,
                                        const char *path, struct rm_error *err);
/** NULL is a no-op.  Lines still buffered on a thread or held by the flush thread are written
 *  later (they keep the sink, not the logger). */
void rm_access_log_free(struct rm_access_log *l);
/** Log one stream, from a worker (or any thread; <loop> may be NULL: then nothing hands the
 *  buffer off before 64 KiB but an explicit flush): nothing at all (no formatting) when the
 *  logger's filter rejects it; else formats into this thread's buffer of the sink; the 1 s
 *  hand-off timer runs on <loop>.  Never blocks on I/O: takes the flush thread's mutex (held
 *  for a buffer swap) once per 64 KiB, and starts that thread the first time. */
void rm_access_log_write(const struct rm_access_log *l, struct rm_loop *loop,
                         const struct rm_alog_info *in);
/** Hand this thread's buffers to the flush thread and wait until it has tried to write them
 *  (blocks as long as the destination does: tests and tools, not a worker's loop). */
void rm_access_log_flush_thread(void);
/** Hand off this thread's buffers (not waiting for the write) and free its state (stops its
 *  timer on <loop>): before the loop goes. */
void rm_access_log_thread_cleanup(struct rm_loop *loop);
/** Stop the flush thread once it has written everything handed off and join it; no-op if it
 *  is not running.  A write(2) that blocks more than 5 s (a pipe nobody reads) is interrupted
 *  (SIGRTMIN, sent to the flush thread only):
 *  then, and for failed writes, the lines not written are counted as dropped.  Main thread,
 *  after the workers' rm_access_log_thread_cleanup and before rm_stats_free_all.  A later
 *  hand-off starts a new flush thread. */
void rm_access_log_shutdown(void);
/** Reopen every file sink (SIGUSR1, log rotation); main thread.  Safe while the flush thread
 *  writes: the fd number is kept (dup3), a write in progress ends on the old file. */
void rm_access_log_reopen_all(void);

#endif
