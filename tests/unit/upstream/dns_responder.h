/* A tiny DNS server for unit tests: UDP and TCP on one 127.0.0.1 port, driven by the test's
 * rm_loop, answering canned packets built by hand.  Names and what they answer:
 *
 *   multi.test    A: 10.0.0.1 (TTL 30), 10.0.0.2 (60), 10.0.0.3 (45); AAAA: no data
 *   v6.test       AAAA: fd00::1, fd00::2 (TTL 20); A: no data
 *   both.test     A: 10.0.1.1 (TTL 100); AAAA: fd00::11 (TTL 50)
 *   cname.test    CNAME target.test (TTL 5) + A target.test 10.2.2.2 (TTL 300); AAAA: no data
 *   nx.test       NXDOMAIN (and any name not listed here)
 *   bad.test      A: an answer whose RDATA runs past the end of the packet
 *   short.test    A: 5 bytes of junk (shorter than a DNS header)
 *   large.test    A: a well-formed 6 kB UDP datagram, 400 answers 10.3.0.1
 *   big.test      A: the same 6 kB but announcing 65535 answers
 *   tc.test       over UDP: truncated (TC) with no answer; over TCP: 100 A records 10.1.0.x
 *   spoof.test    first a reply with the wrong ID (6.6.6.6), then the right one (10.9.9.9)
 *   zero.test     first query: a 0-byte datagram, then the right answer (10.8.8.8)
 *   slow.test     A: 10.7.7.7, sent 80 ms later
 *   silent.test   never answered
 *   servfail.test SERVFAIL */
#ifndef RM_TESTS_DNS_RESPONDER_H
#define RM_TESTS_DNS_RESPONDER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "proxy/core/loop.h"

#define RM_TDNS_LOG 128
#define RM_TDNS_CONNS 8

struct rm_tdns_conn {
    struct rm_io io;
    struct rm_tdns *d;
    uint8_t buf[2048];
    size_t len;
    int used;
};

struct rm_tdns {
    struct rm_loop *loop;
    struct rm_io udp, tcp;
    uint16_t port;
    int n_udp, n_tcp; /* queries received */
    struct {
        char name[64];
        uint16_t qtype;
        int tcp;
    } log[RM_TDNS_LOG];
    int n_log;
    int zero_sent;
    struct rm_tdns_conn conns[RM_TDNS_CONNS];
    struct rm_timer delay; /* slow.test */
    uint8_t delayed[512];
    size_t delayed_len;
    struct sockaddr_storage delayed_to;
    socklen_t delayed_to_len;
};

/** Start on a free port (port 0) or <port>; aborts the test on failure. */
void rm_tdns_start(struct rm_tdns *d, struct rm_loop *loop, uint16_t port);
/** Close the sockets and stop the watchers (the struct can then go). */
void rm_tdns_stop(struct rm_tdns *d);
/** How many queries of <qtype> (1 = A, 28 = AAAA) for <name> were received. */
int rm_tdns_count(const struct rm_tdns *d, const char *name, uint16_t qtype);

#endif
