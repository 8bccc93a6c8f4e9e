"""A real DNS server for integration tests: dnsmasq (Debian dnsmasq-base) on a 127.0.0.1 port,
answering only from its own hosts file, plus a tiny DNS client (stdlib sockets) to check it.

    from dns_util import start_dnsmasq, dns_query

    port, set_hosts = start_dnsmasq(ctx, {"api.test": ["127.0.0.1", "::1"]}, ttl=1)
    rcode, answers = dns_query(port, "api.test", "A")   # 0, [("127.0.0.1", 1)]
    set_hosts({"api.test": ["127.0.0.2"]})              # rewrite the file, SIGHUP, wait
    set_hosts.proc                                      # the harness Proc (log, PID)

dnsmasq runs in the foreground (--no-daemon: no fork, no pid file, no user change) through
ctx.spawn, so the harness kills it by PID when the test ends.  It reads no /etc/resolv.conf,
/etc/hosts or /etc/dnsmasq.conf and forwards nothing: names under `local_domains` (default
"test") that are not in the hosts file get NXDOMAIN, other names REFUSED; a name present with
only one family answers NOERROR with no record for the other.  Records are returned in file
order (--no-round-robin) with TTL `ttl` (--local-ttl).

Point remora at it with a CaresDnsResolverConfig resolver
`{socket_address: {address: 127.0.0.1, port_value: PORT}}`.
"""
import os
import random
import signal
import socket
import struct
import time

import harness

QTYPES = {"A": 1, "AAAA": 28}
RCODE_NOERROR, RCODE_NXDOMAIN, RCODE_REFUSED = 0, 3, 5


# -- a minimal DNS client --------------------------------------------------------------------

def _encode_query(qid, name, qtype):
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)  # RD, one question
    for label in name.rstrip(".").split("."):
        b = label.encode("ascii")
        q += bytes([len(b)]) + b
    return q + b"\x00" + struct.pack("!HH", QTYPES[qtype], 1)


def _skip_name(msg, off):
    while True:
        n = msg[off]
        if n == 0:
            return off + 1
        if n & 0xC0 == 0xC0:
            return off + 2
        off += 1 + n


def _decode_answer(msg, qid, qtype):
    """(rcode, [(ip, ttl)]) for the records of `qtype` in the answer section."""
    rid, flags, qd, an = struct.unpack("!HHHH", msg[:8])
    if rid != qid or not flags & 0x8000:
        raise ValueError("not the reply to our query")
    off = 12
    for _ in range(qd):
        off = _skip_name(msg, off) + 4
    out = []
    for _ in range(an):
        off = _skip_name(msg, off)
        rtype, _cls, ttl, rdlen = struct.unpack("!HHIH", msg[off:off + 10])
        off += 10
        rdata = msg[off:off + rdlen]
        off += rdlen
        if rtype == QTYPES[qtype]:
            fam = socket.AF_INET if rtype == 1 else socket.AF_INET6
            out.append((socket.inet_ntop(fam, rdata), ttl))
    return flags & 0xF, out


def dns_query(port, name, qtype="A", tcp=False, timeout=2.0, host="127.0.0.1"):
    """Ask host:port for `name` (qtype "A" or "AAAA") over UDP (or TCP); returns
    (rcode, [(ip, ttl), ...]) in answer order.  Raises OSError/socket.timeout if no reply."""
    qid = random.randrange(1, 65536)
    q = _encode_query(qid, name, qtype)
    if tcp:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(struct.pack("!H", len(q)) + q)
            buf = b""
            while len(buf) < 2 or len(buf) < 2 + struct.unpack("!H", buf[:2])[0]:
                chunk = s.recv(65535)
                if not chunk:
                    raise OSError("connection closed before the answer")
                buf += chunk
            return _decode_answer(buf[2:], qid, qtype)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(q, (host, port))
        deadline = time.monotonic() + timeout
        while True:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            msg, _ = s.recvfrom(65535)
            try:
                return _decode_answer(msg, qid, qtype)
            except ValueError:
                continue  # a stale reply to an earlier query


def resolve_set(port, name):
    """The set of A and AAAA addresses dnsmasq gives for `name` (empty if none)."""
    got = set()
    for qt in ("A", "AAAA"):
        _, ans = dns_query(port, name, qt)
        got.update(ip for ip, _ in ans)
    return got


# -- dnsmasq ---------------------------------------------------------------------------------

def _write_hosts(path, hosts):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for name, ips in hosts.items():
            for ip in ips:
                f.write(f"{ip} {name}\n")
    os.replace(tmp, path)


def _free_udp_tcp_port():
    for _ in range(50):
        port = harness.free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            try:
                u.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise harness.TestFailure("no port free for both UDP and TCP on 127.0.0.1")


def _wait_answers(port, proc, timeout):
    """Wait until dnsmasq answers anything on `port` (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            return False
        try:
            dns_query(port, "ready.probe.invalid", "A", timeout=0.2)
            return True
        except OSError:
            time.sleep(0.05)
    raise harness.TestFailure(f"dnsmasq did not answer on 127.0.0.1:{port} within {timeout}s:\n"
                              f"{proc.output()[-2000:]}")


def _wait_hosts(port, hosts, removed, timeout):
    """Wait until dnsmasq serves exactly `hosts` (and nothing for `removed`)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            ok = all(resolve_set(port, n) == set(ips) for n, ips in hosts.items()) and \
                all(not resolve_set(port, n) for n in removed)
        except OSError:
            ok = False
        if ok:
            return
        if time.monotonic() > deadline:
            raise harness.TestFailure(f"dnsmasq on {port} did not pick up the new hosts file "
                                      f"within {timeout}s")
        time.sleep(0.05)


def start_dnsmasq(ctx, hosts, ttl=1, local_domains=("test",), timeout=10.0, extra_args=()):
    """Start dnsmasq on a free 127.0.0.1 port serving `hosts` ({name: [ip, ...]}, IPv4 and
    IPv6 literals) with TTL `ttl`.  Returns (port, set_hosts): set_hosts(new_hosts) replaces
    the whole hosts file, sends SIGHUP (dnsmasq re-reads --addn-hosts) and waits until the new
    records are served.  set_hosts.proc is the harness Proc, set_hosts.path the hosts file."""
    path = os.path.join(ctx.tmp, f"dnsmasq-hosts-{len(ctx.procs)}")
    _write_hosts(path, hosts)
    for _attempt in range(5):
        port = _free_udp_tcp_port()
        args = ["dnsmasq", "--no-daemon", "--conf-file=/dev/null", f"--port={port}",
                "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
                f"--addn-hosts={path}", f"--local-ttl={ttl}", "--no-round-robin",
                "--log-facility=-", "--log-queries"]
        args += [f"--local=/{d}/" for d in local_domains]
        args += list(extra_args)
        proc = ctx.spawn(args, "dnsmasq")
        if _wait_answers(port, proc, timeout):
            break
        if "Address already in use" not in proc.output():
            raise harness.TestFailure(f"dnsmasq exited {proc.p.returncode}:\n"
                                      f"{proc.output()[-2000:]}")
    else:
        raise harness.TestFailure("dnsmasq: no usable port after 5 attempts")
    state = {"hosts": dict(hosts)}

    def set_hosts(new_hosts):
        removed = [n for n in state["hosts"] if n not in new_hosts]
        _write_hosts(path, new_hosts)
        proc.p.send_signal(signal.SIGHUP)
        _wait_hosts(port, new_hosts, removed, timeout)
        state["hosts"] = dict(new_hosts)

    set_hosts.proc = proc
    set_hosts.path = path
    _wait_hosts(port, hosts, [], timeout)
    return port, set_hosts
