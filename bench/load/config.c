/* remora-load: command line, target and request templates; see config.h for the contract. */
#include "bench/load/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define USER_AGENT "remora-load/1.0"

static const char usage_text[] =
    "Usage: remora-load [OPTIONS] URL [URL...]\n"
    "HTTP load generator: HTTP/2 over cleartext (h2c, prior knowledge) or TLS (ALPN h2),\n"
    "or HTTP/1.1 with --h1.  Closed loop by default (each stream sends its next request when\n"
    "the previous one ends); open loop at a constant rate with --rate.\n"
    "\n"
    "URL: http://HOST[:PORT]/PATH or https://HOST[:PORT]/PATH; HOST is a name (resolved once\n"
    "  at start-up), an IPv4 literal or [IPv6].  Several URLs (same scheme, host and port) are\n"
    "  requested round-robin.\n"
    "\n"
    "Load:\n"
    "  -n, --requests=N        measured requests in total (after the warm-up)\n"
    "  -d, -D, --duration=T    run for T (e.g. 10s, 500ms, 2m); default 10s when no -n\n"
    "  -c, --clients=N         connections in total (default 1)\n"
    "  -m, --max-concurrent-streams=N\n"
    "                          concurrent requests per connection (default 1); with --h1,\n"
    "                          N > 1 pipelines N requests per connection\n"
    "  -t, --threads=N         worker threads, one epoll loop each (default 1, <= -c)\n"
    "      --rate=R            open loop: R requests/s in total, sent at exact intervals;\n"
    "                          latency counts from each request's scheduled time, so a\n"
    "                          request that waited for a free stream shows that wait\n"
    "      --warmup=T          run T before measuring; nothing sent then is counted\n"
    "      --timeout=T         per-request timeout (default none); a request still in flight\n"
    "                          when the run ends gets min(T, 10s) to finish\n"
    "      --connect-timeout=T (default 5s)\n"
    "      --spin=T            busy-poll (no sleep) during the last T before each open-loop\n"
    "                          slot (sends within a few us of schedule where timer wake-ups\n"
    "                          are late: VMs), and for up to T after each event while\n"
    "                          requests are in flight (the target then never has to wake\n"
    "                          this thread: more load from one core); costs CPU (default 0)\n"
    "      --new-conn          one request per connection: each connection sends one\n"
    "                          request, closes once its response came (TLS: close_notify,\n"
    "                          then FIN) and is replaced at once by a new one, with a full\n"
    "                          TLS handshake (no session resumption); measures connection\n"
    "                          setup (TCP + TLS handshakes/s); -m must be 1\n"
    "\n"
    "Request:\n"
    "      --h1                HTTP/1.1 instead of HTTP/2\n"
    "      --method=M          request method (default GET, POST with --data or --grpc)\n"
    "  -H, --header='N: V'     add a request header (repeatable); 'host:' sets :authority\n"
    "      --data=FILE         request body from FILE\n"
    "      --grpc              gRPC unary: POST, content-type application/grpc, te: trailers,\n"
    "                          the --data file (or nothing) framed as one gRPC message;\n"
    "                          success is :status 200 with grpc-status 0 (HTTP/2 only)\n"
    "  -k, --insecure          do not verify the TLS certificate (the default)\n"
    "      --verify            verify the TLS certificate and host name\n"
    "\n"
    "Output:\n"
    "      --json              final report as one JSON object on stdout (keys: see\n"
    "                          bench/load/README.md): config, duration_s, requests{sent,\n"
    "                          completed,succeeded,failed,unsent}, errors{connect,reset,\n"
    "                          timeout,protocol}, status{2xx..5xx,codes}, grpc_status, rate,\n"
    "                          throughput, latency_us, connect_us, sched_lag_us, connections\n"
    "      --progress, --no-progress\n"
    "                          one line per second on stderr (default on)\n"
    "  -h, --help              this text\n"
    "      --version\n"
    "\n"
    "Report: requests sent/completed/succeeded (2xx)/failed, errors by kind, status codes,\n"
    "achieved rate (and target rate and send lag in open loop), bytes, and latency min, mean,\n"
    "stdev, p50, p90, p99, p99.9, p99.99, max in microseconds (log-linear histogram, <= 1%\n"
    "error), and connect times.\n"
    "Exit status: 0 run done; 1 run done but no request succeeded, or cut short because no\n"
    "connection could be made for --connect-timeout + 1s; 2 bad usage or start-up error (bad\n"
    "URL, unresolvable or unreachable target, TLS/ALPN failure), as one line on stderr.\n";

static int fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("remora-load: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return -1;
}

int rml_parse_duration(const char *s, uint64_t *ns)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !(v >= 0) || isinf(v)) return -1;
    double mult;
    if (*end == 0 || strcmp(end, "s") == 0)
        mult = 1e9;
    else if (strcmp(end, "ms") == 0)
        mult = 1e6;
    else if (strcmp(end, "us") == 0)
        mult = 1e3;
    else if (strcmp(end, "ns") == 0)
        mult = 1;
    else if (strcmp(end, "m") == 0)
        mult = 60e9;
    else if (strcmp(end, "h") == 0)
        mult = 3600e9;
    else
        return -1;
    if (v * mult > 1e18) return -1;
    *ns = (uint64_t)(v * mult + 0.5);
    return 0;
}

static int parse_count(const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || *end || errno || v > max || s[0] == '-') return -1;
    *out = v;
    return 0;
}

struct url {
    int tls;
    char *host;
    uint16_t port;
    char *authority;
    char *path;
};

static void url_free(struct url *u)
{
    free(u->host);
    free(u->authority);
    free(u->path);
}

/* Split scheme://host[:port][/path]; -1 after printing why. */
static int url_parse(const char *s, struct url *u)
{
    memset(u, 0, sizeof(*u));
    const char *p;
    if (strncasecmp(s, "http://", 7) == 0) {
        p = s + 7;
    } else if (strncasecmp(s, "https://", 8) == 0) {
        p = s + 8;
        u->tls = 1;
    } else {
        return fail("bad URL '%s': the scheme must be http:// or https://", s);
    }
    size_t alen = strcspn(p, "/?#");
    const char *auth = p, *rest = p + alen;
    if (alen == 0) return fail("bad URL '%s': no host", s);
    if (memchr(auth, '@', alen)) return fail("bad URL '%s': user information is not supported", s);
    const char *host = auth, *port = NULL;
    size_t hlen;
    if (auth[0] == '[') {
        const char *close = memchr(auth, ']', alen);
        if (!close) return fail("bad URL '%s': unterminated [IPv6] literal", s);
        host = auth + 1;
        hlen = (size_t)(close - host);
        if (close + 1 < auth + alen) {
            if (close[1] != ':') return fail("bad URL '%s': junk after ']'", s);
            port = close + 2;
        }
    } else {
        const char *colon = memchr(auth, ':', alen);
        hlen = colon ? (size_t)(colon - auth) : alen;
        if (colon) port = colon + 1;
    }
    if (hlen == 0) return fail("bad URL '%s': no host", s);
    unsigned long pv = u->tls ? 443 : 80;
    if (port) {
        size_t plen = (size_t)(auth + alen - port);
        char pbuf[8];
        if (plen == 0 || plen > 5) return fail("bad URL '%s': bad port", s);
        memcpy(pbuf, port, plen);
        pbuf[plen] = 0;
        char *end;
        pv = strtoul(pbuf, &end, 10);
        if (*end || pv == 0 || pv > 65535) return fail("bad URL '%s': port must be 1..65535", s);
    }
    u->port = (uint16_t)pv;
    u->host = strndup(host, hlen);
    u->authority = strndup(auth, alen);
    size_t rlen = strcspn(rest, "#");
    if (rlen == 0)
        u->path = strdup("/");
    else if (rest[0] == '?') {
        u->path = malloc(rlen + 2);
        if (u->path) {
            u->path[0] = '/';
            memcpy(u->path + 1, rest, rlen);
            u->path[rlen + 1] = 0;
        }
    } else
        u->path = strndup(rest, rlen);
    if (!u->host || !u->authority || !u->path) return fail("out of memory");
    for (const char *c = u->path; *c; c++)
        if ((unsigned char)*c <= ' ' || *c == 0x7f)
            return fail("bad URL '%s': the path must not contain spaces or control bytes", s);
    return 0;
}

static int resolve(struct rml_config *cfg)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    char port[8];
    snprintf(port, sizeof(port), "%u", cfg->port);
    int rv = getaddrinfo(cfg->host, port, &hints, &res);
    if (rv != 0) return fail("cannot resolve '%s': %s", cfg->host, gai_strerror(rv));
    memcpy(&cfg->addr, res->ai_addr, res->ai_addrlen);
    cfg->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    char ip[INET6_ADDRSTRLEN];
    if (cfg->addr.ss_family == AF_INET6) {
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&cfg->addr)->sin6_addr, ip, sizeof(ip));
        snprintf(cfg->addr_str, sizeof(cfg->addr_str), "[%s]:%u", ip, cfg->port);
    } else {
        inet_ntop(AF_INET, &((struct sockaddr_in *)&cfg->addr)->sin_addr, ip, sizeof(ip));
        snprintf(cfg->addr_str, sizeof(cfg->addr_str), "%s:%u", ip, cfg->port);
    }
    return 0;
}

static int add_header(struct rml_config *cfg, const char *arg)
{
    const char *colon = strchr(arg + (arg[0] == ':'), ':');
    if (!colon || colon == arg) return fail("bad header '%s': expected 'name: value'", arg);
    const char *v = colon + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    size_t nlen = (size_t)(colon - arg);
    while (nlen > 0 && (arg[nlen - 1] == ' ' || arg[nlen - 1] == '\t'))
        nlen--;
    if (nlen == 0) return fail("bad header '%s': empty name", arg);
    for (const char *c = arg; c < arg + nlen; c++)
        if ((unsigned char)*c <= ' ' || (*c == ':' && c != arg))
            return fail("bad header '%s': bad character in the name", arg);
    for (const char *c = v; *c; c++)
        if (*c == '\r' || *c == '\n') return fail("bad header '%s': line break in the value", arg);
    struct rml_header *nh = realloc(cfg->headers, (cfg->nheaders + 1) * sizeof(*nh));
    if (!nh) return fail("out of memory");
    cfg->headers = nh;
    char *name = strndup(arg, nlen), *value = strdup(v);
    if (!name || !value) {
        free(name);
        free(value);
        return fail("out of memory");
    }
    for (char *c = name; *c; c++)
        *c = (char)tolower((unsigned char)*c);
    if (name[0] == ':' && strcmp(name, ":authority") != 0) {
        free(name);
        free(value);
        return fail("bad header '%s': only :authority may be set (use --method, the URL)", arg);
    }
    nh[cfg->nheaders].name = name;
    nh[cfg->nheaders].value = value;
    cfg->nheaders++;
    return 0;
}

static int read_file(const char *path, char **data, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return fail("cannot read --data file '%s': %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) {
            fclose(f);
            return fail("out of memory reading '%s'", path);
        }
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        char *nb = realloc(buf, cap * 2);
        if (!nb) free(buf);
        buf = nb;
        cap *= 2;
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        return fail("cannot read --data file '%s'", path);
    }
    *data = buf;
    *len = n;
    return 0;
}

/* Skip user headers that the templates set themselves. */
static int header_is_ours(const char *name)
{
    return strcmp(name, "host") == 0 || strcmp(name, ":authority") == 0 ||
           strcmp(name, "content-length") == 0 || strcmp(name, "user-agent") == 0 ||
           strcmp(name, "te") == 0 || strcmp(name, "content-type") == 0;
}

static const char *find_header(const struct rml_config *cfg, const char *name)
{
    const char *v = NULL;
    for (size_t i = 0; i < cfg->nheaders; i++)
        if (strcmp(cfg->headers[i].name, name) == 0) v = cfg->headers[i].value;
    return v;
}

static void nv_set(nghttp2_nv *nv, const char *name, const char *value)
{
    nv->name = (uint8_t *)name;
    nv->namelen = strlen(name);
    nv->value = (uint8_t *)value;
    nv->valuelen = strlen(value);
    nv->flags = NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE;
}

/* Build both templates for `path`.  Header strings point into cfg, which outlives them. */
static int build_template(struct rml_config *cfg, struct rml_reqtmpl *t, char *path, int with_clen)
{
    const char *clen = with_clen ? cfg->content_length : NULL;
    const char *ua = find_header(cfg, "user-agent");
    const char *ctype = find_header(cfg, "content-type");
    if (!ua) ua = USER_AGENT;
    if (!ctype && cfg->grpc) ctype = "application/grpc";
    t->path = path;
    t->nv = calloc(cfg->nheaders + 8, sizeof(*t->nv));
    if (!t->nv) return fail("out of memory");
    nghttp2_nv *nv = t->nv;
    size_t k = 0;
    nv_set(&nv[k++], ":method", cfg->method);
    nv_set(&nv[k++], ":scheme", cfg->scheme);
    nv_set(&nv[k++], ":authority", cfg->authority);
    nv_set(&nv[k++], ":path", path);
    nv_set(&nv[k++], "user-agent", ua);
    if (ctype) nv_set(&nv[k++], "content-type", ctype);
    if (cfg->grpc)
        nv_set(&nv[k++], "te", "trailers");
    else if (clen)
        nv_set(&nv[k++], "content-length", clen);
    for (size_t i = 0; i < cfg->nheaders; i++)
        if (!header_is_ours(cfg->headers[i].name))
            nv_set(&nv[k++], cfg->headers[i].name, cfg->headers[i].value);
    t->nvlen = k;

    /* HTTP/1.1: the whole request in one buffer */
    size_t cap = strlen(cfg->method) + strlen(path) + strlen(cfg->authority) + strlen(ua) + 128 +
                 (ctype ? strlen(ctype) : 0) + cfg->body_len;
    for (size_t i = 0; i < cfg->nheaders; i++)
        cap += strlen(cfg->headers[i].name) + strlen(cfg->headers[i].value) + 4;
    char *b = malloc(cap);
    if (!b) return fail("out of memory");
    int n = snprintf(b, cap, "%s %s HTTP/1.1\r\nhost: %s\r\nuser-agent: %s\r\n", cfg->method, path,
                     cfg->authority, ua);
    if (ctype) n += snprintf(b + n, cap - (size_t)n, "content-type: %s\r\n", ctype);
    if (clen) n += snprintf(b + n, cap - (size_t)n, "content-length: %s\r\n", clen);
    for (size_t i = 0; i < cfg->nheaders; i++)
        if (!header_is_ours(cfg->headers[i].name))
            n += snprintf(b + n, cap - (size_t)n, "%s: %s\r\n", cfg->headers[i].name,
                          cfg->headers[i].value);
    n += snprintf(b + n, cap - (size_t)n, "\r\n");
    if (cfg->body_len) memcpy(b + n, cfg->body, cfg->body_len);
    t->h1 = b;
    t->h1_len = (size_t)n + cfg->body_len;
    return 0;
}

enum {
    OPT_H1 = 256,
    OPT_RATE,
    OPT_WARMUP,
    OPT_METHOD,
    OPT_DATA,
    OPT_GRPC,
    OPT_TIMEOUT,
    OPT_CTIMEOUT,
    OPT_SPIN,
    OPT_NEW_CONN,
    OPT_JSON,
    OPT_PROGRESS,
    OPT_NO_PROGRESS,
    OPT_VERIFY,
    OPT_VERSION,
};

static const struct option long_opts[] = {
    {"requests", required_argument, NULL, 'n'},
    {"duration", required_argument, NULL, 'd'},
    {"clients", required_argument, NULL, 'c'},
    {"max-concurrent-streams", required_argument, NULL, 'm'},
    {"threads", required_argument, NULL, 't'},
    {"header", required_argument, NULL, 'H'},
    {"insecure", no_argument, NULL, 'k'},
    {"help", no_argument, NULL, 'h'},
    {"h1", no_argument, NULL, OPT_H1},
    {"rate", required_argument, NULL, OPT_RATE},
    {"warmup", required_argument, NULL, OPT_WARMUP},
    {"warm-up-time", required_argument, NULL, OPT_WARMUP},
    {"method", required_argument, NULL, OPT_METHOD},
    {"data", required_argument, NULL, OPT_DATA},
    {"grpc", no_argument, NULL, OPT_GRPC},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"connect-timeout", required_argument, NULL, OPT_CTIMEOUT},
    {"spin", required_argument, NULL, OPT_SPIN},
    {"new-conn", no_argument, NULL, OPT_NEW_CONN},
    {"json", no_argument, NULL, OPT_JSON},
    {"progress", no_argument, NULL, OPT_PROGRESS},
    {"no-progress", no_argument, NULL, OPT_NO_PROGRESS},
    {"verify", no_argument, NULL, OPT_VERIFY},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0},
};

static int parse_options(struct rml_config *cfg, int argc, char **argv, const char **data_path)
{
    uint64_t v;
    int opt;
    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, ":n:d:D:c:m:t:H:kh", long_opts, NULL)) != -1) {
        switch (opt) {
        case 'n':
            if (parse_count(optarg, UINT64_MAX / 2, &cfg->n) || cfg->n == 0)
                return fail("bad -n '%s': expected a positive count", optarg);
            break;
        case 'd':
        case 'D':
            if (rml_parse_duration(optarg, &cfg->duration_ns) || cfg->duration_ns == 0)
                return fail("bad -d '%s': expected a duration such as 10s or 500ms", optarg);
            break;
        case 'c':
        case 'm':
        case 't':
            if (parse_count(optarg, 100000, &v) || v == 0)
                return fail("bad -%c '%s': expected a count from 1 to 100000", opt, optarg);
            *(opt == 'c' ? &cfg->conns : opt == 'm' ? &cfg->streams : &cfg->threads) = (unsigned)v;
            break;
        case 'H':
            if (add_header(cfg, optarg)) return -1;
            break;
        case 'k':
            cfg->insecure = 1;
            break;
        case OPT_VERIFY:
            cfg->insecure = 0;
            break;
        case 'h':
            fputs(usage_text, stdout);
            return 1;
        case OPT_VERSION:
            puts("remora-load 1.0 (nghttp2 " NGHTTP2_VERSION ")");
            return 1;
        case OPT_H1:
            cfg->h1 = 1;
            break;
        case OPT_RATE: {
            char *end;
            errno = 0;
            cfg->rate = strtod(optarg, &end);
            if (end == optarg || *end || errno || !(cfg->rate > 0) || cfg->rate > 1e8)
                return fail("bad --rate '%s': expected requests per second > 0", optarg);
            break;
        }
        case OPT_WARMUP:
        case OPT_TIMEOUT:
        case OPT_CTIMEOUT:
        case OPT_SPIN: {
            uint64_t *dst = opt == OPT_WARMUP    ? &cfg->warmup_ns
                            : opt == OPT_TIMEOUT ? &cfg->timeout_ns
                            : opt == OPT_SPIN    ? &cfg->spin_ns
                                                 : &cfg->connect_timeout_ns;
            const char *name = opt == OPT_WARMUP    ? "--warmup"
                               : opt == OPT_TIMEOUT ? "--timeout"
                               : opt == OPT_SPIN    ? "--spin"
                                                    : "--connect-timeout";
            if (rml_parse_duration(optarg, dst) || (opt == OPT_CTIMEOUT && *dst == 0))
                return fail("bad duration '%s' for %s (e.g. 500ms, 2s)", optarg, name);
            break;
        }
        case OPT_METHOD:
            free(cfg->method);
            cfg->method = strdup(optarg);
            for (const char *c = optarg; *c; c++)
                if (!isupper((unsigned char)*c) && *c != '-' && *c != '_')
                    return fail("bad --method '%s': expected a token such as GET", optarg);
            if (!optarg[0]) return fail("bad --method: empty");
            break;
        case OPT_DATA:
            *data_path = optarg;
            break;
        case OPT_GRPC:
            cfg->grpc = 1;
            break;
        case OPT_NEW_CONN:
            cfg->new_conn = 1;
            break;
        case OPT_JSON:
            cfg->json = 1;
            break;
        case OPT_PROGRESS:
            cfg->progress = 1;
            break;
        case OPT_NO_PROGRESS:
            cfg->progress = 0;
            break;
        case ':':
            return fail("option '%s' needs a value (see --help)", argv[optind - 1]);
        default:
            return fail("unknown option '%s' (see --help)", argv[optind - 1]);
        }
    }
    return 0;
}

int rml_config_parse(struct rml_config *cfg, int argc, char **argv)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->conns = cfg->streams = cfg->threads = 1;
    cfg->connect_timeout_ns = 5 * RML_NS_PER_S;
    cfg->progress = 1;
    cfg->insecure = 1;
    const char *data_path = NULL;
    int rv = parse_options(cfg, argc, argv, &data_path);
    if (rv) return rv;
    if (optind >= argc) return fail("no URL given (usage: remora-load [OPTIONS] URL; see --help)");
    if (cfg->threads > cfg->conns)
        return fail("-t %u is more than -c %u: each thread needs a connection", cfg->threads,
                    cfg->conns);
    if (cfg->grpc && cfg->h1) return fail("--grpc needs HTTP/2: drop --h1");
    if (cfg->new_conn && cfg->streams > 1)
        return fail("--new-conn sends one request per connection: -m must be 1 (use more -c)");
    if (!cfg->n && !cfg->duration_ns) cfg->duration_ns = 10 * RML_NS_PER_S;
    if (cfg->n && cfg->duration_ns) return fail("give -n or -d, not both");
    if (!cfg->method) cfg->method = strdup(data_path || cfg->grpc ? "POST" : "GET");

    /* URLs */
    cfg->nreqs = (size_t)(argc - optind);
    cfg->reqs = calloc(cfg->nreqs, sizeof(*cfg->reqs));
    if (!cfg->reqs || !cfg->method) return fail("out of memory");
    char **paths = calloc(cfg->nreqs, sizeof(*paths));
    if (!paths) return fail("out of memory");
    for (size_t i = 0; i < cfg->nreqs; i++) {
        struct url u;
        if (url_parse(argv[optind + (int)i], &u)) {
            url_free(&u);
            goto fail_paths;
        }
        if (i == 0) {
            cfg->tls = u.tls;
            cfg->host = u.host;
            cfg->port = u.port;
            cfg->authority = u.authority;
            cfg->url = strdup(argv[optind]);
            u.host = u.authority = NULL;
        } else if (u.tls != cfg->tls || u.port != cfg->port || strcmp(u.host, cfg->host)) {
            fail("URL '%s': every URL must have the same scheme, host and port as '%s'",
                 argv[optind + (int)i], cfg->url);
            url_free(&u);
            goto fail_paths;
        }
        paths[i] = u.path;
        u.path = NULL;
        url_free(&u);
    }
    cfg->scheme = cfg->tls ? "https" : "http";
    const char *host_hdr = find_header(cfg, "host");
    if (!host_hdr) host_hdr = find_header(cfg, ":authority");
    if (host_hdr) {
        free(cfg->authority);
        cfg->authority = strdup(host_hdr);
    }

    /* body */
    if (data_path && read_file(data_path, &cfg->body, &cfg->body_len)) goto fail_paths;
    if (cfg->grpc) {
        char *framed = malloc(cfg->body_len + 5);
        if (!framed) goto fail_paths;
        framed[0] = 0; /* not compressed */
        uint32_t l = (uint32_t)cfg->body_len;
        framed[1] = (char)(l >> 24);
        framed[2] = (char)(l >> 16);
        framed[3] = (char)(l >> 8);
        framed[4] = (char)l;
        if (cfg->body_len) memcpy(framed + 5, cfg->body, cfg->body_len);
        free(cfg->body);
        cfg->body = framed;
        cfg->body_len += 5;
    }
    snprintf(cfg->content_length, sizeof(cfg->content_length), "%zu", cfg->body_len);
    int want_clen =
        cfg->body_len > 0 || (strcmp(cfg->method, "POST") == 0 || strcmp(cfg->method, "PUT") == 0);
    for (size_t i = 0; i < cfg->nreqs; i++) {
        if (build_template(cfg, &cfg->reqs[i], paths[i], want_clen)) {
            for (size_t j = i + 1; j < cfg->nreqs; j++)
                free(paths[j]);
            free(paths);
            return -1;
        }
    }
    free(paths);
    return resolve(cfg);

fail_paths:
    for (size_t i = 0; i < cfg->nreqs; i++)
        free(paths[i]);
    free(paths);
    return -1;
}

void rml_config_dispose(struct rml_config *cfg)
{
    for (size_t i = 0; cfg->reqs && i < cfg->nreqs; i++) {
        struct rml_reqtmpl *t = &cfg->reqs[i];
        free(t->path);
        free(t->h1);
        free(t->nv);
    }
    free(cfg->reqs);
    for (size_t i = 0; i < cfg->nheaders; i++) {
        free(cfg->headers[i].name);
        free(cfg->headers[i].value);
    }
    free(cfg->headers);
    free(cfg->host);
    free(cfg->authority);
    free(cfg->url);
    free(cfg->method);
    free(cfg->body);
    memset(cfg, 0, sizeof(*cfg));
}
