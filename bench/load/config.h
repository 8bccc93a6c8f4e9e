/* remora-load: command line, target and request templates.
 *
 * rml_config_parse() turns argv into a read-only struct rml_config that the worker threads
 * share: the resolved target address, the load shape, and one precomputed request template
 * per URL (HTTP/1.1 bytes and an HTTP/2 name/value array), so that sending a request copies
 * or references bytes and never formats or allocates.
 */
#ifndef REMORA_BENCH_LOAD_CONFIG_H
#define REMORA_BENCH_LOAD_CONFIG_H

#include <nghttp2/nghttp2.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define RML_NS_PER_S UINT64_C(1000000000)
#define RML_NS_PER_MS UINT64_C(1000000)

struct rml_header {
    char *name;
    char *value;
};

/* One request, ready to send: `h1` is the whole HTTP/1.1 request (head and body); `nv` the
 * HTTP/2 header block (pseudo-headers first, lower-case names, flagged no-copy). */
struct rml_reqtmpl {
    char *path;
    char *h1;
    size_t h1_len;
    nghttp2_nv *nv;
    size_t nvlen;
};

struct rml_config {
    /* target: every URL shares scheme, host and port */
    int tls;    /* https:// */
    int h1;     /* --h1: HTTP/1.1 instead of HTTP/2 */
    char *host; /* host as written, IPv6 without brackets */
    uint16_t port;
    char *authority;              /* :authority / Host (host[:port] as written, or -H host:) */
    const char *scheme;           /* "http" or "https" */
    char *url;                    /* the first URL, for messages */
    struct sockaddr_storage addr; /* resolved once at start-up */
    socklen_t addrlen;
    char addr_str[64];        /* "127.0.0.1:8080" / "[::1]:8080" */
    struct rml_reqtmpl *reqs; /* one per URL, used round-robin */
    size_t nreqs;

    /* load shape */
    uint64_t n;           /* -n: measured requests in total; 0 = run for duration_ns */
    uint64_t duration_ns; /* -d */
    unsigned conns;       /* -c, in total */
    unsigned streams;     /* -m, concurrent requests per connection */
    unsigned threads;     /* -t */
    double rate;          /* --rate, requests/s in total; 0 = closed loop */
    uint64_t warmup_ns;
    uint64_t timeout_ns; /* per request; 0 = none */
    uint64_t connect_timeout_ns;
    uint64_t spin_ns; /* --spin: busy-poll before open-loop slots and after events */
    int new_conn;     /* --new-conn: one request per connection, then a new connection */

    /* request */
    char *method;
    struct rml_header *headers; /* -H, in order */
    size_t nheaders;
    char *body; /* --data file contents (gRPC-framed with --grpc); NULL when none */
    size_t body_len;
    int grpc;
    char content_length[24]; /* body length as text, for the templates */

    /* output and TLS */
    int json;
    int progress;
    int insecure; /* no certificate verification (default) */
};

/* Parse argv into `cfg` (which owns every string it points to) and resolve the target.
 * Returns 0 to run; 1 when --help or --version was printed (exit 0); -1 after one error line
 * was printed on stderr (exit 2).  On -1, cfg is still safe to dispose. */
int rml_config_parse(struct rml_config *cfg, int argc, char **argv);

/* Free everything `cfg` owns; the struct itself is the caller's. */
void rml_config_dispose(struct rml_config *cfg);

/* Parse a duration: "10s", "500ms", "250us", "2m", "1.5s"; a bare number is seconds.
 * Returns 0 and sets *ns, or -1. */
int rml_parse_duration(const char *s, uint64_t *ns);

#endif
