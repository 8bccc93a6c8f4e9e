/* Access log sinks: the hand-off from writing threads to the one flush thread.  Each test makes
 * a file logger (a regular file or a FIFO) whose line is "%UPSTREAM_HOST% %ROUTE_NAME%": the
 * writer puts its thread and sequence number in upstream_host and padding in route_name, so
 * a line read back tells who wrote it, in what order, and whether it is whole. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "envoy/config/accesslog/v3/accesslog.pb-c.h"
#include "envoy/extensions/access_loggers/file/v3/file.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "proxy/admin/stats.h"
#include "proxy/config/strbuf.h"
#include "proxy/http/access_log.h"

#define FILE_URL "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"

static struct rm_access_log *file_logger(const char *path)
{
    Envoy__Extensions__AccessLoggers__File__V3__FileAccessLog f =
        ENVOY__EXTENSIONS__ACCESS_LOGGERS__FILE__V3__FILE_ACCESS_LOG__INIT;
    f.path = (char *)path;
    f.access_log_format_case =
        ENVOY__EXTENSIONS__ACCESS_LOGGERS__FILE__V3__FILE_ACCESS_LOG__ACCESS_LOG_FORMAT_FORMAT;
    f.format = "%UPSTREAM_HOST% %ROUTE_NAME%\n";
    uint8_t packed[512];
    size_t n = envoy__extensions__access_loggers__file__v3__file_access_log__get_packed_size(&f);
    cr_assert_leq(n, sizeof(packed));
    envoy__extensions__access_loggers__file__v3__file_access_log__pack(&f, packed);
    Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
    any.type_url = FILE_URL;
    any.value.data = packed;
    any.value.len = n;
    Envoy__Config__Accesslog__V3__AccessLog pb = ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG__INIT;
    pb.config_type_case = ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG__CONFIG_TYPE_TYPED_CONFIG;
    pb.typed_config = &any;
    struct rm_error err = {{0}};
    struct rm_access_log *l = rm_access_log_new(&pb, "access_log[0]", &err);
    cr_assert_not_null(l, "%s", err.msg);
    return l;
}

static void log_line(struct rm_access_log *l, const char *who, const char *pad)
{
    struct rm_alog_info in = {.upstream_host = who, .route_name = pad};
    rm_access_log_write(l, NULL, &in);
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    struct rm_strbuf b = RM_STRBUF_INIT;
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        rm_strbuf_append(&b, chunk, n);
    fclose(f);
    *len = b.len;
    return b.p ? rm_strbuf_steal(&b) : strdup("");
}

/* ---- many threads, one file: nothing lost or torn below the cap --------------------------- */

#define THREADS 8
#define LINES 3000 /* x ~130 bytes: ~390 KiB a thread, past FLUSH_AT (64 KiB) six times */

static const char pad100[] = "pppppppppppppppppppppppppppppppppppppppppppppppppp"
                             "pppppppppppppppppppppppppppppppppppppppppppppppppp";

struct writer {
    struct rm_access_log *l;
    unsigned idx;
    pthread_t th;
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    rm_stats_shard = w->idx + 1; /* its own slot, as a worker */
    char who[32];
    for (unsigned i = 0; i < LINES; i++) {
        snprintf(who, sizeof(who), "t%u-n%u", w->idx, i);
        log_line(w->l, who, pad100);
    }
    rm_access_log_thread_cleanup(NULL); /* hands off the rest, does not wait */
    return NULL;
}

Test(access_log_sink, many_threads_one_flush)
{
    char path[] = "/tmp/remora-alog-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    struct rm_access_log *l = file_logger(path);
    struct writer w[THREADS];
    for (unsigned i = 0; i < THREADS; i++) {
        w[i] = (struct writer){.l = l, .idx = i};
        cr_assert_eq(pthread_create(&w[i].th, NULL, writer_main, &w[i]), 0);
    }
    for (unsigned i = 0; i < THREADS; i++)
        pthread_join(w[i].th, NULL);
    rm_access_log_shutdown(); /* everything handed off is written before it returns */
    rm_access_log_free(l);

    size_t len;
    char *text = slurp(path, &len);
    unlink(path);
    unsigned next[THREADS] = {0};
    size_t lines = 0;
    for (char *save = NULL, *s = strtok_r(text, "\n", &save); s; s = strtok_r(NULL, "\n", &save)) {
        unsigned t, n;
        int end = 0;
        cr_assert_eq(sscanf(s, "t%u-n%u %n", &t, &n, &end), 2, "torn line: %.60s", s);
        cr_assert_lt(t, THREADS);
        cr_assert_str_eq(s + end, pad100, "torn line: %.60s", s);
        cr_assert_eq(n, next[t], "thread %u: line %u after %u", t, n, next[t]);
        next[t]++;
        lines++;
    }
    cr_expect_eq(lines, (size_t)THREADS * LINES);
    free(text);
}

/* ---- a destination that does not drain: drops at the cap, never blocks, resumes ----------- */

static void *drain(void *arg)
{
    int fd = *(int *)arg;
    struct rm_strbuf *b = calloc(1, sizeof(*b));
    char chunk[65536];
    ssize_t n;
    while ((n = read(fd, chunk, sizeof(chunk))) > 0)
        rm_strbuf_append(b, chunk, (size_t)n);
    return b;
}

Test(access_log_sink, stalled_fifo_drops_then_resumes)
{
    alarm(60); /* a writer that blocked would hang here: fail instead */
    char dir[] = "/tmp/remora-alog-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof(path), "%s/fifo", dir);
    cr_assert_eq(mkfifo(path, 0600), 0);
    int rfd = open(path, O_RDONLY | O_NONBLOCK); /* so that the logger's open does not wait */
    cr_assert_geq(rfd, 0);
    fcntl(rfd, F_SETFL, 0);
    struct rm_access_log *l = file_logger(path);

    /* 3,000 lines of ~1 KiB, nothing reading: the FIFO takes 64 KiB, the flush thread blocks
     * in write(2), the writer keeps going and drops what would pass 1 MiB. */
    char pad[1001];
    memset(pad, 'q', 1000);
    pad[1000] = 0;
    char who[32];
    for (unsigned i = 0; i < 3000; i++) {
        snprintf(who, sizeof(who), "n%u", i);
        log_line(l, who, pad);
    }
    rm_access_log_thread_cleanup(NULL);

    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, drain, &rfd), 0);
    rm_access_log_flush_thread(); /* returns once the backlog is written: the FIFO drains */
    for (unsigned i = 0; i < 10; i++) {
        snprintf(who, sizeof(who), "after%u", i);
        log_line(l, who, pad);
    }
    rm_access_log_thread_cleanup(NULL);
    rm_access_log_shutdown();
    rm_access_log_free(l); /* the last reference: the fd closes, the reader sees EOF */
    struct rm_strbuf *b;
    pthread_join(th, (void **)&b);
    close(rfd);
    unlink(path);
    rmdir(dir);

    /* n0..n(k-1) in order (the first drop is for good: the writes never progressed), then the
     * ten later lines; k lines of 1,006-1,010 bytes fit in 1 MiB */
    unsigned k = 0, after = 0;
    for (char *save = NULL, *s = strtok_r(b->p, "\n", &save); s; s = strtok_r(NULL, "\n", &save)) {
        char *sp = strchr(s, ' ');
        cr_assert_not_null(sp);
        cr_assert_str_eq(sp + 1, pad, "torn line: %.40s", s);
        unsigned n;
        if (sscanf(s, "after%u ", &n) == 1) {
            cr_assert_eq(n, after++);
            continue;
        }
        cr_assert_eq(after, 0u, "a line before the cap came after the later ones");
        cr_assert_eq(sscanf(s, "n%u ", &n), 1, "%.40s", s);
        cr_assert_eq(n, k++);
    }
    cr_expect_eq(after, 10u);
    cr_expect_gt(k, 1000u); /* about 1 MiB was kept */
    cr_expect_lt(k, 1044u); /* and not more: 1 MiB / 1,006 bytes = 1,042 lines */
    rm_strbuf_dispose(b);
    free(b);
    alarm(0);
}

/* ---- the logger goes while the flush thread is still writing its sink --------------------- */

Test(access_log_sink, logger_freed_during_write)
{
    alarm(60);
    char dir[] = "/tmp/remora-alog-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof(path), "%s/fifo", dir);
    cr_assert_eq(mkfifo(path, 0600), 0);
    int rfd = open(path, O_RDONLY | O_NONBLOCK);
    cr_assert_geq(rfd, 0);
    fcntl(rfd, F_SETFL, 0);
    struct rm_access_log *l = file_logger(path);
    char who[32];
    for (unsigned i = 0; i < 3000; i++) { /* ~330 KiB: the flush thread blocks on the FIFO */
        snprintf(who, sizeof(who), "n%u", i);
        log_line(l, who, pad100);
    }
    rm_access_log_thread_cleanup(NULL);
    /* The config goes (an xDS update): the sink must stay until the flush thread is done with
     * it, and close then (the reader's EOF). */
    rm_access_log_free(l);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, drain, &rfd), 0);
    struct rm_strbuf *b;
    pthread_join(th, (void **)&b); /* EOF: the flush thread dropped the last reference */
    unsigned lines = 0;
    for (size_t i = 0; i < b->len; i++)
        lines += b->p[i] == '\n';
    cr_expect_eq(lines, 3000u);
    rm_access_log_shutdown();
    close(rfd);
    unlink(path);
    rmdir(dir);
    rm_strbuf_dispose(b);
    free(b);
    alarm(0);
}
