"""The dnsmasq helper (dns_util.py) that DNS cluster tests build on: multi-address names,
both families, NXDOMAIN / NODATA, the TTL, TCP, and record updates through SIGHUP."""
import os

import harness
from dns_util import (RCODE_NOERROR, RCODE_NXDOMAIN, RCODE_REFUSED, dns_query, resolve_set,
                      start_dnsmasq)

HOSTS = {
    "multi.test": ["10.0.0.1", "10.0.0.2", "10.0.0.3"],
    "v6.test": ["fd00::1", "fd00::2"],
    "both.test": ["10.0.1.1", "fd00::11"],
}


def test_dnsmasq_serves_multi_address_names(ctx):
    port, _ = start_dnsmasq(ctx, HOSTS)
    rcode, ans = dns_query(port, "multi.test", "A")
    assert rcode == RCODE_NOERROR
    assert [ip for ip, _ in ans] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"], ans  # file order
    assert all(ttl == 1 for _, ttl in ans), ans
    rcode, ans = dns_query(port, "v6.test", "AAAA")
    assert (rcode, [ip for ip, _ in ans]) == (RCODE_NOERROR, ["fd00::1", "fd00::2"]), ans
    assert resolve_set(port, "both.test") == {"10.0.1.1", "fd00::11"}
    # a name with only AAAA records: NOERROR, no A record (NODATA)
    assert dns_query(port, "v6.test", "A") == (RCODE_NOERROR, [])
    # unknown names in the local domain: NXDOMAIN; outside it: refused (nothing is forwarded)
    assert dns_query(port, "nope.test", "A") == (RCODE_NXDOMAIN, [])
    assert dns_query(port, "example.com", "A")[0] == RCODE_REFUSED
    # the same over TCP (c-ares with use_tcp_for_dns_lookups, or after a truncated answer)
    rcode, ans = dns_query(port, "multi.test", "A", tcp=True)
    assert [ip for ip, _ in ans] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"], ans


def test_dnsmasq_ttl(ctx):
    port, _ = start_dnsmasq(ctx, {"ttl.test": ["10.9.0.1"]}, ttl=37)
    assert dns_query(port, "ttl.test", "A") == (RCODE_NOERROR, [("10.9.0.1", 37)])


def test_dnsmasq_set_hosts_reloads_on_sighup(ctx):
    port, set_hosts = start_dnsmasq(ctx, HOSTS)
    pid = set_hosts.proc.p.pid
    set_hosts({"multi.test": ["10.0.0.9", "10.0.0.1"], "new.test": ["10.0.2.1", "fd00::21"],
               "v6.test": ["fd00::1", "fd00::2"]})
    assert set_hosts.proc.alive() and set_hosts.proc.p.pid == pid, "same dnsmasq process"
    rcode, ans = dns_query(port, "multi.test", "A")
    assert [ip for ip, _ in ans] == ["10.0.0.9", "10.0.0.1"], ans
    assert resolve_set(port, "new.test") == {"10.0.2.1", "fd00::21"}
    assert dns_query(port, "both.test", "A") == (RCODE_NXDOMAIN, [])  # removed
    # to zero addresses and back
    set_hosts({})
    assert dns_query(port, "multi.test", "A") == (RCODE_NXDOMAIN, [])
    set_hosts({"multi.test": ["10.0.0.4"]})
    assert dns_query(port, "multi.test", "A") == (RCODE_NOERROR, [("10.0.0.4", 1)])
    log = set_hosts.proc.output()
    assert "read " + set_hosts.path in log, log[-1000:]


def test_dnsmasq_two_servers_and_cleanup_by_pid(ctx):
    port_a, set_a = start_dnsmasq(ctx, {"a.test": ["10.1.1.1"]})
    port_b, set_b = start_dnsmasq(ctx, {"a.test": ["10.2.2.2"]}, ttl=5)
    assert port_a != port_b
    assert dns_query(port_a, "a.test", "A") == (RCODE_NOERROR, [("10.1.1.1", 1)])
    assert dns_query(port_b, "a.test", "A") == (RCODE_NOERROR, [("10.2.2.2", 5)])
    # a stopped server: nothing answers (what "DNS server down" tests rely on)
    ctx.stop(set_a.proc)
    try:
        dns_query(port_a, "a.test", "A", timeout=0.3)
        raise harness.TestFailure("a stopped dnsmasq still answered")
    except OSError:
        pass
    assert dns_query(port_b, "a.test", "A")[1] == [("10.2.2.2", 5)]
    assert os.path.exists(set_b.path)
