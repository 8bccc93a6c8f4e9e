/* The canned DNS server of dns_responder.h: packets are built byte by byte. */
#include "tests/unit/upstream/dns_responder.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define T_A 1
#define T_CNAME 5
#define T_AAAA 28

struct pkt {
    uint8_t b[8192];
    size_t n;
};

static void put8(struct pkt *p, uint8_t v)
{
    if (p->n < sizeof(p->b)) p->b[p->n++] = v;
}

static void put16(struct pkt *p, uint16_t v)
{
    put8(p, (uint8_t)(v >> 8));
    put8(p, (uint8_t)v);
}

static void put32(struct pkt *p, uint32_t v)
{
    put16(p, (uint16_t)(v >> 16));
    put16(p, (uint16_t)v);
}

static void put_name(struct pkt *p, const char *name)
{
    while (*name) {
        const char *dot = strchr(name, '.');
        size_t len = dot ? (size_t)(dot - name) : strlen(name);
        put8(p, (uint8_t)len);
        for (size_t i = 0; i < len; i++)
            put8(p, (uint8_t)name[i]);
        name += len + (dot ? 1 : 0);
    }
    put8(p, 0);
}

/* Header and question copied from the query <q> (question bytes 12..qend). */
static void start_reply(struct pkt *p, const uint8_t *q, size_t qend, int rcode, int tc,
                        uint16_t ancount)
{
    p->n = 0;
    put8(p, q[0]);
    put8(p, q[1]);
    put16(p, (uint16_t)(0x8180 | (tc ? 0x0200 : 0) | rcode));
    put16(p, 1);
    put16(p, ancount);
    put16(p, 0);
    put16(p, 0);
    for (size_t i = 12; i < qend; i++)
        put8(p, q[i]);
}

/* An answer record; owner is the question name (pointer 0xC00C) unless <owner_off> != 0. */
static void put_rr_head(struct pkt *p, uint16_t owner_off, uint16_t type, uint32_t ttl)
{
    put16(p, (uint16_t)(0xC000 | (owner_off ? owner_off : 12)));
    put16(p, type);
    put16(p, 1);
    put32(p, ttl);
}

static void add_a(struct pkt *p, uint16_t owner_off, const char *ip, uint32_t ttl)
{
    uint8_t a[4];
    cr_assert_eq(inet_pton(AF_INET, ip, a), 1);
    put_rr_head(p, owner_off, T_A, ttl);
    put16(p, 4);
    for (int i = 0; i < 4; i++)
        put8(p, a[i]);
}

static void add_aaaa(struct pkt *p, const char *ip, uint32_t ttl)
{
    uint8_t a[16];
    cr_assert_eq(inet_pton(AF_INET6, ip, a), 1);
    put_rr_head(p, 0, T_AAAA, ttl);
    put16(p, 16);
    for (int i = 0; i < 16; i++)
        put8(p, a[i]);
}

/* A CNAME record; returns the offset of its target name (for the records that follow). */
static uint16_t add_cname(struct pkt *p, const char *target, uint32_t ttl)
{
    put_rr_head(p, 0, T_CNAME, ttl);
    size_t len_at = p->n;
    put16(p, 0);
    uint16_t off = (uint16_t)p->n;
    put_name(p, target);
    uint16_t rdlen = (uint16_t)(p->n - off);
    p->b[len_at] = (uint8_t)(rdlen >> 8);
    p->b[len_at + 1] = (uint8_t)rdlen;
    return off;
}

/* Parse the question: lower-case dotted name, type; returns the end offset or 0. */
static size_t parse_query(const uint8_t *q, size_t n, char *name, size_t cap, uint16_t *qtype)
{
    size_t off = 12, out = 0;
    if (n < 17) return 0;
    while (off < n && q[off]) {
        size_t len = q[off++];
        if (len > 63 || off + len > n || out + len + 2 > cap) return 0;
        if (out) name[out++] = '.';
        for (size_t i = 0; i < len; i++)
            name[out++] = (char)tolower(q[off + i]);
        off += len;
    }
    name[out] = '\0';
    if (off + 5 > n) return 0;
    *qtype = (uint16_t)(q[off + 1] << 8 | q[off + 2]);
    return off + 5;
}

/* The reply to one query; p->n == 0 means no reply. */
static void build_reply(struct rm_tdns *d, const uint8_t *q, size_t qn, int tcp, struct pkt *p,
                        int *delay)
{
    char name[256];
    uint16_t qt = 0;
    size_t qend = parse_query(q, qn, name, sizeof(name), &qt);
    p->n = 0;
    if (!qend) return;
    if (d->n_log < RM_TDNS_LOG) {
        snprintf(d->log[d->n_log].name, sizeof(d->log[0].name), "%s", name);
        d->log[d->n_log].qtype = qt;
        d->log[d->n_log++].tcp = tcp;
    }
    if (!strcmp(name, "multi.test")) {
        start_reply(p, q, qend, 0, 0, qt == T_A ? 3 : 0);
        if (qt == T_A) {
            add_a(p, 0, "10.0.0.1", 30);
            add_a(p, 0, "10.0.0.2", 60);
            add_a(p, 0, "10.0.0.3", 45);
        }
    } else if (!strcmp(name, "v6.test")) {
        start_reply(p, q, qend, 0, 0, qt == T_AAAA ? 2 : 0);
        if (qt == T_AAAA) {
            add_aaaa(p, "fd00::1", 20);
            add_aaaa(p, "fd00::2", 20);
        }
    } else if (!strcmp(name, "both.test")) {
        start_reply(p, q, qend, 0, 0, 1);
        if (qt == T_A)
            add_a(p, 0, "10.0.1.1", 100);
        else
            add_aaaa(p, "fd00::11", 50);
    } else if (!strcmp(name, "cname.test")) {
        start_reply(p, q, qend, 0, 0, qt == T_A ? 2 : 0);
        if (qt == T_A) {
            uint16_t off = add_cname(p, "target.test", 5);
            add_a(p, off, "10.2.2.2", 300);
        }
    } else if (!strcmp(name, "bad.test")) {
        start_reply(p, q, qend, 0, 0, 1);
        put_rr_head(p, 0, T_A, 30);
        put16(p, 4);
        put8(p, 10); /* 2 of the 4 RDATA bytes */
        put8(p, 0);
    } else if (!strcmp(name, "short.test")) {
        memcpy(p->b, "\x01\x02junk", 5);
        p->n = 5;
    } else if (!strcmp(name, "big.test") || !strcmp(name, "large.test")) {
        start_reply(p, q, qend, 0, 0, name[0] == 'b' ? 65535 : 400);
        for (int i = 0; i < 400; i++)
            add_a(p, 0, "10.3.0.1", 30);
    } else if (!strcmp(name, "tc.test")) {
        start_reply(p, q, qend, 0, !tcp, tcp && qt == T_A ? 100 : 0);
        for (int i = 0; tcp && qt == T_A && i < 100; i++) {
            char ip[32];
            snprintf(ip, sizeof(ip), "10.1.0.%d", i + 1);
            add_a(p, 0, ip, 7);
        }
    } else if (!strcmp(name, "spoof.test") || !strcmp(name, "zero.test")) {
        start_reply(p, q, qend, 0, 0, qt == T_A ? 1 : 0);
        if (qt == T_A) add_a(p, 0, name[0] == 's' ? "10.9.9.9" : "10.8.8.8", 30);
    } else if (!strcmp(name, "slow.test")) {
        start_reply(p, q, qend, 0, 0, qt == T_A ? 1 : 0);
        if (qt == T_A) add_a(p, 0, "10.7.7.7", 30);
        *delay = 80;
    } else if (!strcmp(name, "silent.test")) {
        p->n = 0;
    } else if (!strcmp(name, "servfail.test")) {
        start_reply(p, q, qend, 2, 0, 0);
    } else {
        start_reply(p, q, qend, 3, 0, 0);
    }
}

static void send_to(int fd, const void *b, size_t n, const struct sockaddr_storage *to,
                    socklen_t len)
{
    ssize_t w = sendto(fd, b, n, 0, (const struct sockaddr *)to, len);
    (void)w;
}

static void on_delay(struct rm_timer *t)
{
    struct rm_tdns *d = rm_container_of(t, struct rm_tdns, delay);
    send_to(d->udp.fd, d->delayed, d->delayed_len, &d->delayed_to, d->delayed_to_len);
}

static void udp_special(struct rm_tdns *d, const uint8_t *q, size_t n,
                        const struct sockaddr_storage *from, socklen_t flen)
{
    char name[256];
    uint16_t qt;
    if (!parse_query(q, n, name, sizeof(name), &qt)) return;
    if (!strcmp(name, "spoof.test") && qt == T_A) {
        uint8_t wrong[512];
        struct pkt p;
        build_reply(d, q, n, 0, &p, &(int){0});
        d->n_log--; /* logged once below */
        memcpy(wrong, p.b, p.n);
        wrong[0] ^= 0x5a;
        wrong[p.n - 1] = 6; /* 10.9.9.9 -> 10.9.9.6: must never be seen */
        send_to(d->udp.fd, wrong, p.n, from, flen);
    } else if (!strcmp(name, "zero.test") && !d->zero_sent) {
        d->zero_sent = 1;
        send_to(d->udp.fd, "", 0, from, flen);
    }
}

static void on_udp(struct rm_io *io, uint32_t events)
{
    struct rm_tdns *d = rm_container_of(io, struct rm_tdns, udp);
    for (;;) {
        uint8_t q[1500];
        struct sockaddr_storage from;
        socklen_t flen = sizeof(from);
        ssize_t n = recvfrom(io->fd, q, sizeof(q), 0, (struct sockaddr *)&from, &flen);
        if (n < 0) return;
        d->n_udp++;
        udp_special(d, q, (size_t)n, &from, flen);
        struct pkt p;
        int delay = 0;
        build_reply(d, q, (size_t)n, 0, &p, &delay);
        if (!p.n) continue;
        if (delay) {
            memcpy(d->delayed, p.b, p.n < sizeof(d->delayed) ? p.n : sizeof(d->delayed));
            d->delayed_len = p.n;
            d->delayed_to = from;
            d->delayed_to_len = flen;
            rm_timer_start(d->loop, &d->delay, (uint64_t)delay, on_delay);
            continue;
        }
        send_to(io->fd, p.b, p.n, &from, flen);
    }
}

static void conn_close(struct rm_tdns_conn *c)
{
    int fd = c->io.fd;
    rm_io_stop(c->d->loop, &c->io);
    close(fd);
    c->used = 0;
}

/* Answer every complete length-prefixed query in the buffer. */
static void conn_serve(struct rm_tdns_conn *c)
{
    while (c->len >= 2) {
        size_t qn = (size_t)(c->buf[0] << 8 | c->buf[1]);
        if (c->len < 2 + qn) return;
        c->d->n_tcp++;
        struct pkt p;
        int delay = 0;
        build_reply(c->d, c->buf + 2, qn, 1, &p, &delay);
        if (p.n) {
            uint8_t lenb[2] = {(uint8_t)(p.n >> 8), (uint8_t)p.n};
            ssize_t w = write(c->io.fd, lenb, 2);
            w = write(c->io.fd, p.b, p.n);
            (void)w;
        }
        memmove(c->buf, c->buf + 2 + qn, c->len - 2 - qn);
        c->len -= 2 + qn;
    }
}

static void on_conn(struct rm_io *io, uint32_t events)
{
    struct rm_tdns_conn *c = rm_container_of(io, struct rm_tdns_conn, io);
    for (;;) {
        if (c->len == sizeof(c->buf)) return conn_close(c);
        ssize_t n = read(io->fd, c->buf + c->len, sizeof(c->buf) - c->len);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return conn_close(c);
        if (n < 0) break;
        c->len += (size_t)n;
    }
    conn_serve(c);
}

static void on_accept(struct rm_io *io, uint32_t events)
{
    struct rm_tdns *d = rm_container_of(io, struct rm_tdns, tcp);
    for (;;) {
        int fd = accept4(io->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        struct rm_tdns_conn *c = NULL;
        for (int i = 0; i < RM_TDNS_CONNS && !c; i++)
            if (!d->conns[i].used) c = &d->conns[i];
        if (!c) {
            close(fd);
            continue;
        }
        memset(c, 0, sizeof(*c));
        c->used = 1;
        c->d = d;
        cr_assert_eq(rm_io_start(d->loop, &c->io, fd, EPOLLIN, on_conn), 0);
    }
}

/* UDP and TCP sockets bound to the same 127.0.0.1 port (<port>, or a free one); 0 or -errno. */
static int bind_pair(uint16_t port, int *u, int *t, uint16_t *bound)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    *u = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    *t = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    cr_assert(*u >= 0 && *t >= 0);
    int one = 1, rc = 0;
    setsockopt(*t, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    socklen_t len = sizeof(sa);
    if (bind(*u, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        getsockname(*u, (struct sockaddr *)&sa, &len) != 0 ||
        bind(*t, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(*t, 16) != 0)
        rc = -errno;
    if (rc) {
        close(*u);
        close(*t);
    }
    *bound = ntohs(sa.sin_port);
    return rc;
}

void rm_tdns_start(struct rm_tdns *d, struct rm_loop *loop, uint16_t port)
{
    memset(d, 0, sizeof(*d));
    d->loop = loop;
    int u, t, rc = -1;
    for (int attempt = 0; attempt < 20 && rc; attempt++)
        rc = bind_pair(port, &u, &t, &d->port);
    cr_assert_eq(rc, 0, "bind 127.0.0.1:%u: %s", port, strerror(-rc));
    cr_assert_eq(rm_io_start(loop, &d->udp, u, EPOLLIN, on_udp), 0);
    cr_assert_eq(rm_io_start(loop, &d->tcp, t, EPOLLIN, on_accept), 0);
}

void rm_tdns_stop(struct rm_tdns *d)
{
    for (int i = 0; i < RM_TDNS_CONNS; i++)
        if (d->conns[i].used) conn_close(&d->conns[i]);
    rm_timer_stop(d->loop, &d->delay);
    int u = d->udp.fd, t = d->tcp.fd;
    rm_io_stop(d->loop, &d->udp);
    rm_io_stop(d->loop, &d->tcp);
    if (u >= 0) close(u);
    if (t >= 0) close(t);
}

int rm_tdns_count(const struct rm_tdns *d, const char *name, uint16_t qtype)
{
    int n = 0;
    for (int i = 0; i < d->n_log; i++)
        n += !strcmp(d->log[i].name, name) && d->log[i].qtype == qtype;
    return n;
}
