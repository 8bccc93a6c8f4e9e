/* grpc_probe: drives remora's gRPC client (xds/grpc.h) from a script, for the integration
 * tests (tests/integration/test_grpc_client.py).
 *
 *   grpc_probe [--keepalive MS] [--keepalive-timeout MS] [--max-recv BYTES]
 *              [--call-buffer BYTES] [--authority NAME] [--connect-timeout MS] IP:PORT
 *
 * One channel to IP:PORT.  Commands come on stdin, one per line; results go to stdout, one
 * line each (line-buffered):
 *
 *   start TAG PATH [DEADLINE_MS [NAME=VALUE ...]]   start a call (metadata optional)
 *   send TAG TEXT                                    one message (the rest of the line)
 *   bulk TAG COUNT SIZE[,SIZE...]                    COUNT messages, sizes cycled, with
 *                                                    backpressure, then half-close; echoes
 *                                                    are checked (index + pattern)
 *   half TAG | cancel TAG                            half-close / cancel
 *   stats                                            channel counters
 *   quit                                             free the channel and exit (also on EOF)
 *
 *   TAG msg LEN TEXT                 a message (non-bulk calls; TEXT is hex: when not printable)
 *   TAG sent N blocked=B             a bulk call queued its last message
 *   TAG bulk recv=N bad=B bytes=N    at the end of a bulk call
 *   TAG close CODE MESSAGE           the call ended
 *   stats connects=… …
 *   error TEXT                       a bad command
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proxy/core/arena.h"
#include "proxy/core/buf.h"
#include "proxy/core/loop.h"
#include "xds/grpc.h"

#define MAX_CALLS 128
#define MAX_SIZES 16

struct pcall {
    char tag[32];
    struct rm_grpc_call *call; /* NULL once closed or cancelled */
    bool bulk;
    unsigned count, sent, recv, bad, blocked;
    size_t sizes[MAX_SIZES];
    unsigned nsizes;
    uint64_t bytes;
};

static struct rm_loop *loop;
static struct rm_grpc_channel *ch;
static struct pcall calls[MAX_CALLS];
static unsigned ncalls;
static struct rm_io in_io;
static struct rm_buf in_buf;
static bool quitting;
static uint8_t *bulk_buf;
static size_t bulk_cap;

/* ---- bulk messages: 4-byte index, then a pattern of the index ------------------------------ */

static size_t bulk_size(const struct pcall *p, unsigned i)
{
    return p->sizes[i % p->nsizes];
}

static uint8_t pattern(unsigned i, size_t k)
{
    return (uint8_t)(i * 13 + k * 7);
}

static const uint8_t *bulk_msg(unsigned i, size_t len)
{
    if (len > bulk_cap) {
        free(bulk_buf);
        bulk_buf = malloc(len);
        bulk_cap = len;
    }
    for (size_t k = 0; k < len; k++)
        bulk_buf[k] = k < 4 ? (uint8_t)(i >> (8 * k)) : pattern(i, k);
    return bulk_buf;
}

static bool bulk_check(const struct pcall *p, const uint8_t *m, size_t len)
{
    unsigned i = p->recv;
    if (len != bulk_size(p, i)) return false;
    for (size_t k = 0; k < len; k++) {
        uint8_t want = k < 4 ? (uint8_t)(i >> (8 * k)) : pattern(i, k);
        if (m[k] != want) return false;
    }
    return true;
}

static void bulk_pump(struct pcall *p)
{
    while (p->call && p->sent < p->count) {
        if (rm_grpc_call_write_blocked(p->call)) {
            p->blocked++;
            return; /* on_writable resumes */
        }
        size_t len = bulk_size(p, p->sent);
        if (rm_grpc_call_send(p->call, bulk_msg(p->sent, len), len) != 0) return;
        p->sent++;
    }
    if (p->call && p->sent == p->count) {
        p->sent++; /* once */
        printf("%s sent %u blocked=%u\n", p->tag, p->count, p->blocked);
        rm_grpc_call_half_close(p->call);
    }
}

/* ---- call callbacks ----------------------------------------------------------------------- */

static void print_msg(const struct pcall *p, const uint8_t *m, size_t len)
{
    bool text = true;
    for (size_t k = 0; k < len && text; k++)
        text = m[k] >= 0x20 && m[k] < 0x7f;
    printf("%s msg %zu ", p->tag, len);
    if (text) {
        fwrite(m, 1, len, stdout);
    } else {
        fputs("hex:", stdout);
        for (size_t k = 0; k < len && k < 64; k++)
            printf("%02x", m[k]);
    }
    putchar('\n');
}

static void on_message(void *ctx, const uint8_t *m, size_t len)
{
    struct pcall *p = ctx;
    p->bytes += len;
    if (!p->bulk) {
        print_msg(p, m, len);
        p->recv++;
        return;
    }
    if (!bulk_check(p, m, len)) p->bad++;
    p->recv++;
}

static void on_close(void *ctx, int status, const char *msg)
{
    struct pcall *p = ctx;
    p->call = NULL;
    if (p->bulk)
        printf("%s bulk recv=%u bad=%u bytes=%llu\n", p->tag, p->recv, p->bad,
               (unsigned long long)p->bytes);
    printf("%s close %d %s\n", p->tag, status, msg);
}

static void on_writable(void *ctx)
{
    struct pcall *p = ctx;
    if (p->bulk) bulk_pump(p);
}

static const struct rm_grpc_call_cb probe_cb = {
    .on_message = on_message,
    .on_close = on_close,
    .on_writable = on_writable,
};

/* ---- commands ----------------------------------------------------------------------------- */

static struct pcall *find(const char *tag)
{
    for (unsigned i = 0; i < ncalls; i++)
        if (strcmp(calls[i].tag, tag) == 0) return &calls[i];
    return NULL;
}

static struct pcall *live(const char *tag)
{
    struct pcall *p = tag ? find(tag) : NULL;
    if (!p || !p->call) {
        printf("error no open call %s\n", tag ? tag : "(none)");
        return NULL;
    }
    return p;
}

static void cmd_start(char *args)
{
    char *save = NULL;
    char *tag = strtok_r(args, " ", &save), *path = strtok_r(NULL, " ", &save);
    char *dl = strtok_r(NULL, " ", &save);
    if (!tag || !path || find(tag) || ncalls == MAX_CALLS || strlen(tag) >= sizeof(calls[0].tag)) {
        printf("error start: bad or duplicate tag\n");
        return;
    }
    struct rm_header md[16];
    size_t nmd = 0;
    char *kv;
    while (nmd < 16 && (kv = strtok_r(NULL, " ", &save))) {
        char *eq = strchr(kv, '=');
        if (!eq) continue;
        *eq = '\0';
        md[nmd++] =
            (struct rm_header){(uint8_t *)kv, (uint8_t *)eq + 1, strlen(kv), strlen(eq + 1), 0, 0};
    }
    struct pcall *p = &calls[ncalls++];
    memset(p, 0, sizeof(*p));
    snprintf(p->tag, sizeof(p->tag), "%s", tag);
    p->call = rm_grpc_call_start(ch, path, md, nmd, dl ? (uint32_t)strtoul(dl, NULL, 10) : 0,
                                 &probe_cb, p);
    if (!p->call) printf("%s close -1 rm_grpc_call_start failed\n", tag);
}

static void cmd_bulk(char *args)
{
    char *save = NULL;
    char *tag = strtok_r(args, " ", &save), *count = strtok_r(NULL, " ", &save);
    char *sizes = strtok_r(NULL, " ", &save);
    struct pcall *p = live(tag);
    if (!p || !count || !sizes) return;
    p->bulk = true;
    p->count = (unsigned)strtoul(count, NULL, 10);
    for (char *s = strtok_r(sizes, ",", &save); s && p->nsizes < MAX_SIZES;
         s = strtok_r(NULL, ",", &save)) {
        size_t v = strtoul(s, NULL, 10);
        p->sizes[p->nsizes++] = v < 4 ? 4 : v; /* room for the index */
    }
    if (!p->nsizes) p->sizes[p->nsizes++] = 4;
    bulk_pump(p);
}

static void cmd_stats(void)
{
    const struct rm_grpc_channel_stats *s = rm_grpc_channel_stats(ch);
    printf("stats connects=%llu connect_failures=%llu goaways=%llu disconnects=%llu "
           "pings_sent=%llu pings_acked=%llu keepalive_timeouts=%llu calls_started=%llu "
           "calls_ok=%llu calls_failed=%llu\n",
           (unsigned long long)s->connects, (unsigned long long)s->connect_failures,
           (unsigned long long)s->goaways, (unsigned long long)s->disconnects,
           (unsigned long long)s->pings_sent, (unsigned long long)s->pings_acked,
           (unsigned long long)s->keepalive_timeouts, (unsigned long long)s->calls_started,
           (unsigned long long)s->calls_ok, (unsigned long long)s->calls_failed);
}

static void run_command(char *line)
{
    char *sp = strchr(line, ' ');
    char *args = sp ? sp + 1 : line + strlen(line);
    if (sp) *sp = '\0';
    if (strcmp(line, "start") == 0) {
        cmd_start(args);
    } else if (strcmp(line, "send") == 0) {
        char *text = strchr(args, ' ');
        if (text) *text++ = '\0';
        struct pcall *p = live(args);
        if (p && rm_grpc_call_send(p->call, (const uint8_t *)(text ? text : ""),
                                   text ? strlen(text) : 0) != 0)
            printf("error send %s refused\n", args);
    } else if (strcmp(line, "bulk") == 0) {
        cmd_bulk(args);
    } else if (strcmp(line, "half") == 0) {
        struct pcall *p = live(args);
        if (p) rm_grpc_call_half_close(p->call);
    } else if (strcmp(line, "cancel") == 0) {
        struct pcall *p = live(args);
        if (p) {
            rm_grpc_call_cancel(p->call);
            p->call = NULL;
            printf("%s cancelled\n", p->tag);
        }
    } else if (strcmp(line, "stats") == 0) {
        cmd_stats();
    } else if (strcmp(line, "quit") == 0) {
        quitting = true;
        rm_loop_stop(loop);
    } else if (line[0]) {
        printf("error unknown command %s\n", line);
    }
}

static void on_stdin(struct rm_io *io, uint32_t events)
{
    for (;;) {
        uint8_t *p = rm_buf_reserve(&in_buf, 4096);
        ssize_t n = read(io->fd, p, rm_buf_room(&in_buf));
        if (n > 0) {
            rm_buf_commit(&in_buf, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n == 0) { /* EOF: quit after the lines we have */
            rm_io_stop(loop, io);
            quitting = true;
            rm_loop_stop(loop);
        }
        break;
    }
    char *nl;
    while (in_buf.len && (nl = memchr(rm_buf_data(&in_buf), '\n', in_buf.len))) {
        size_t len = (size_t)(nl - (char *)rm_buf_data(&in_buf));
        char *line = strndup((char *)rm_buf_data(&in_buf), len);
        rm_buf_consume(&in_buf, len + 1);
        if (len && line[len - 1] == '\r') line[len - 1] = '\0';
        run_command(line);
        free(line);
        if (quitting) break;
    }
}

/* ---- main --------------------------------------------------------------------------------- */

static int parse_addr(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[128];
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof(host)) return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    unsigned port = (unsigned)strtoul(colon + 1, NULL, 10);
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *in = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    size_t hl = strlen(host);
    if (hl > 2 && host[0] == '[' && host[hl - 1] == ']') {
        host[hl - 1] = '\0';
        if (inet_pton(AF_INET6, host + 1, &in6->sin6_addr) != 1) return -1;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*in6);
        return 0;
    }
    if (inet_pton(AF_INET, host, &in->sin_addr) != 1) return -1;
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t)port);
    *len = sizeof(*in);
    return 0;
}

static int usage(void)
{
    fprintf(stderr, "usage: grpc_probe [--keepalive MS] [--keepalive-timeout MS] "
                    "[--max-recv BYTES] [--call-buffer BYTES] [--authority NAME] "
                    "[--connect-timeout MS] IP:PORT\n");
    return 2;
}

int main(int argc, char **argv)
{
    struct rm_grpc_channel_opts o = {0};
    const char *authority = NULL, *target = NULL;
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        if (strcmp(a, "--keepalive") == 0 && has)
            o.keepalive_interval_ms = (uint32_t)strtoul(argv[++i], NULL, 10);
        else if (strcmp(a, "--keepalive-timeout") == 0 && has)
            o.keepalive_timeout_ms = (uint32_t)strtoul(argv[++i], NULL, 10);
        else if (strcmp(a, "--max-recv") == 0 && has)
            o.max_recv_msg = (uint32_t)strtoul(argv[++i], NULL, 10);
        else if (strcmp(a, "--call-buffer") == 0 && has)
            o.call_buffer = (uint32_t)strtoul(argv[++i], NULL, 10);
        else if (strcmp(a, "--connect-timeout") == 0 && has)
            o.connect_timeout_ms = (uint32_t)strtoul(argv[++i], NULL, 10);
        else if (strcmp(a, "--authority") == 0 && has)
            authority = argv[++i];
        else if (a[0] != '-' && !target)
            target = a;
        else
            return usage();
    }
    struct sockaddr_storage ss;
    socklen_t sl;
    if (!target || parse_addr(target, &ss, &sl) != 0) return usage();
    loop = rm_loop_new();
    struct rm_error err;
    ch = rm_grpc_channel_new(loop, (struct sockaddr *)&ss, sl, authority, &o, &err);
    if (!ch) {
        fprintf(stderr, "grpc_probe: %s\n", err.msg);
        return 1;
    }
    int fl = fcntl(STDIN_FILENO, F_GETFL);
    if (fl < 0 || fcntl(STDIN_FILENO, F_SETFL, fl | O_NONBLOCK) < 0 ||
        rm_io_start(loop, &in_io, STDIN_FILENO, EPOLLIN, on_stdin) != 0) {
        fprintf(stderr, "grpc_probe: stdin must be a pipe\n");
        return 1;
    }
    printf("ready %s\n", rm_grpc_channel_target(ch));
    on_stdin(&in_io, EPOLLIN); /* lines already waiting */
    while (!quitting)
        rm_loop_run(loop);
    if (in_io.fd >= 0) rm_io_stop(loop, &in_io);
    rm_grpc_channel_free(ch);
    rm_loop_run_pending(loop);
    rm_loop_run_pending(loop);
    rm_loop_free(loop);
    rm_buf_reset(&in_buf);
    free(bulk_buf);
    rm_buf_thread_cleanup();
    rm_arena_thread_cleanup();
    printf("bye\n");
    return 0;
}
