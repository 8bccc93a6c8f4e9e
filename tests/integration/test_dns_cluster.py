"""STRICT_DNS and LOGICAL_DNS clusters end to end: remora resolves names through c-ares against
dnsmasq (dns_util.start_dnsmasq: its own hosts file on a loopback port, named by the cluster's
CaresDnsResolverConfig), in front of remora-upstream processes on 127.0.0.x / ::1 addresses that
share one port, so one DNS name with several records maps to several backends (told apart by
their x-upstream-name).

Shown here: every address of a multi-address name gets traffic; records changed during an h2load
run move the traffic with zero failed requests; the TTL drives the refresh with respect_dns_ttl;
a stopped DNS server keeps the last good hosts serving and its return is picked up; LOGICAL_DNS
keeps existing connections while new ones go to the new address; V4_ONLY / V6_ONLY / AUTO;
a name that never resolves gives 503 UH at once and a log line; malformed answers are dropped;
/clusters and the update_* stats; /ready waits for the first answers; config errors."""
import http.client
import os
import re
import socket
import subprocess
import threading
import time

import harness
import remora_cfg as cfg
from dns_util import _write_hosts, dns_query, start_dnsmasq

CARES_TYPE = "type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3." \
             "CaresDnsResolverConfig"


# ---- helpers ---------------------------------------------------------------------------------

def backend(ctx, ip, port, name):
    """remora-upstream listening on ip:port only (ctx.upstream always adds 127.0.0.1)."""
    listen = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
    pr = ctx.spawn([ctx.bin("remora-upstream"), "--listen", listen, "--name", name, "--quiet"],
                   f"upstream-{name}")
    pr.port = port
    harness.wait_port(port, host=ip, proc=pr.p)
    return pr


def resolver(dns_port, indent, tries=None, timeout_s=None):
    """A typed_dns_resolver_config (CaresDnsResolverConfig) naming dnsmasq, at <indent>."""
    p = " " * indent
    extra = ""
    if tries:
        extra += f"\n{p}    query_tries: {tries}"
    if timeout_s:
        extra += f"\n{p}    query_timeout_seconds: {timeout_s}"
    return f"""
{p}typed_dns_resolver_config:
{p}  name: envoy.network.dns_resolver.cares
{p}  typed_config:
{p}    "@type": {CARES_TYPE}
{p}    resolvers:
{p}    - socket_address: {{ address: 127.0.0.1, port_value: {dns_port} }}
{p}    dns_resolver_options: {{ no_default_search_domain: true }}{extra}"""


def endpoints(eps):
    return "".join(f"""
        - endpoint:
            address:
              socket_address: {{ address: "{name}", port_value: {port} }}""" for name, port in eps)


def dns_cluster(name, dns_port, eps, kind="STRICT_DNS", extra="", tries=None, timeout_s=None):
    """A cluster with the deprecated Cluster DNS fields (type: STRICT_DNS / LOGICAL_DNS)."""
    return f"""
  - name: {name}
    type: {kind}
    connect_timeout: 1s
    lb_policy: ROUND_ROBIN{extra}{resolver(dns_port, 4, tries, timeout_s)}
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:{endpoints(eps)}"""


def ext_cluster(name, dns_port, eps, dns_cluster_yaml):
    """A cluster in the newer form: cluster_type envoy.clusters.dns with a DnsCluster."""
    return f"""
  - name: {name}
    connect_timeout: 1s
    cluster_type:
      name: envoy.clusters.dns
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.clusters.dns.v3.DnsCluster{dns_cluster_yaml}{resolver(dns_port, 8)}
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:{endpoints(eps)}"""


def routes(*names):
    """/<name>/... goes to cluster <name>; the first one also takes everything else."""
    out = "".join(f"""
              - match: {{ prefix: "/{n}/" }}
                route: {{ cluster: {n} }}""" for n in names)
    return out + f"""
              - match: {{ prefix: "/" }}
                route: {{ cluster: {names[0]} }}"""


def admin_get(ctx, px, path):
    return ctx.curl(f"http://127.0.0.1:{px.admin}{path}")


def wait_ready(ctx, px, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        r = admin_get(ctx, px, "/ready")
        if r.status == 200:
            return
        if time.monotonic() > deadline:
            raise harness.TestFailure(f"/ready still {r.status} {r.body!r} after {timeout}s")
        time.sleep(0.05)


def stats(ctx, px, cluster):
    prefix = f"cluster.{cluster}."
    out = {}
    for line in admin_get(ctx, px, "/stats").body.decode().splitlines():
        k, _, v = line.partition(": ")
        if k.startswith(prefix) and v.lstrip("-").isdigit():
            out[k[len(prefix):]] = int(v)
    return out


def hosts(ctx, px, cluster):
    """{address: {stat: value}} of <cluster> in /clusters (text)."""
    out = {}
    for line in admin_get(ctx, px, "/clusters").body.decode().splitlines():
        if not line.startswith(cluster + "::"):
            continue
        head, stat, value = line.rsplit("::", 2)  # "[::1]:80" has "::" too
        addr = head[len(cluster) + 2:]
        if re.match(r"^(\[[0-9a-f:]+\]|[0-9.]+):\d+$", addr):
            out.setdefault(addr, {})[stat] = value
    return out


def wait_hosts(ctx, px, cluster, want, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        got = set(hosts(ctx, px, cluster))
        if got == set(want):
            return time.monotonic()
        if time.monotonic() > deadline:
            raise harness.TestFailure(f"{cluster}: hosts {sorted(got)}, want {sorted(want)} "
                                      f"after {timeout}s")
        time.sleep(0.05)


def get(ctx, port, path="/", headers=None):
    r = ctx.curl(f"http://127.0.0.1:{port}{path}", headers=headers, timeout=10)
    return r.status, r.headers.get("x-upstream-name"), r


def names_seen(ctx, port, n, path="/"):
    seen = {}
    for _ in range(n):
        status, name, r = get(ctx, port, path)
        assert status == 200, r
        seen[name] = seen.get(name, 0) + 1
    return seen


def conns_to(ip, port):
    """Established TCP connections to ip:port (IPv4), from /proc/net/tcp."""
    want = "%08X:%04X" % (int.from_bytes(socket.inet_aton(ip), "little"), port)
    n = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            n += fields[2] == want and fields[3] == "01"
    return n


def stop_clean(ctx, px):
    """SIGTERM: a clean exit (0) lets LeakSanitizer check for leaks."""
    assert ctx.stop(px) == 0, px.output()[-3000:]


def restart_dnsmasq(ctx, set_hosts, new_hosts):
    """Start dnsmasq again on the same port (after ctx.stop) serving <new_hosts>."""
    _write_hosts(set_hosts.path, new_hosts)
    args = list(set_hosts.proc.p.args)
    port = int(next(a for a in args if a.startswith("--port=")).split("=")[1])
    for _ in range(50):
        proc = ctx.spawn(args, "dnsmasq-again")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and proc.alive():
            try:
                dns_query(port, "ready.probe.invalid", "A", timeout=0.2)
                return proc
            except OSError:
                time.sleep(0.05)
        time.sleep(0.1)  # the port may not be free yet
    raise harness.TestFailure("dnsmasq did not come back on its port")


# ---- STRICT_DNS ------------------------------------------------------------------------------

def test_strict_dns_every_address_gets_traffic(ctx):
    """One name, three A records, three backends: round robin reaches all of them; /clusters
    lists the three addresses with the name as hostname; the stats count the resolutions."""
    port = harness.free_port()
    for i in (1, 2, 3):
        backend(ctx, f"127.0.0.{i}", port, f"b{i}")
    dns_port, _ = start_dnsmasq(ctx, {"svc.test": ["127.0.0.1", "127.0.0.2", "127.0.0.3"]})
    px = ctx.remora(cfg.bootstrap(routes("svc"), [dns_cluster(
        "svc", dns_port, [("svc.test", port)],
        extra="\n    dns_lookup_family: V4_ONLY\n    dns_refresh_rate: 0.2s")]))
    wait_ready(ctx, px)
    want = {f"127.0.0.{i}:{port}" for i in (1, 2, 3)}
    wait_hosts(ctx, px, "svc", want)
    seen = names_seen(ctx, px.port, 30)
    assert seen == {"b1": 10, "b2": 10, "b3": 10}, seen
    h = hosts(ctx, px, "svc")
    assert all(v["hostname"] == "svc.test" for v in h.values()), h
    assert all(v["rq_total"] == "10" for v in h.values()), h
    time.sleep(0.6)  # a few refreshes with the same answer
    s = stats(ctx, px, "svc")
    assert s["membership_total"] == 3 and s["membership_healthy"] == 3, s
    assert s["update_success"] >= 3 and s["update_no_rebuild"] >= 2, s
    assert s["update_failure"] == 0, s
    assert s["update_attempt"] >= s["update_success"], s
    stop_clean(ctx, px)


def change_under_load(ctx, n, opts=""):
    """h2load (n requests, 10 clients x 10 streams, 400 requests/s per client) runs while the
    name moves from backend a to backend b: not one request fails, the traffic ends up on b,
    and a's pool drains until no connection to a is left."""
    port = harness.free_port()
    backend(ctx, "127.0.0.1", port, "a")
    backend(ctx, "127.0.0.2", port, "b")
    dns_port, set_hosts = start_dnsmasq(ctx, {"svc.test": ["127.0.0.1"]})
    px = ctx.remora(cfg.bootstrap(routes("svc"), [dns_cluster(
        "svc", dns_port, [("svc.test", port)],
        extra="\n    dns_lookup_family: V4_ONLY\n    dns_refresh_rate: 0.1s" + opts)]))
    wait_ready(ctx, px)
    wait_hosts(ctx, px, "svc", {f"127.0.0.1:{port}"})
    load = subprocess.Popen(["h2load", "-n", str(n), "-c", "10", "-m", "10", "--rps", "400",
                             f"http://127.0.0.1:{px.port}/"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(n / 4000 / 2)  # half way
    set_hosts({"svc.test": ["127.0.0.2"]})
    changed_while_running = load.poll() is None
    wait_hosts(ctx, px, "svc", {f"127.0.0.2:{port}"})
    out = load.communicate(timeout=120)[0].decode()
    assert changed_while_running, "h2load finished before the change:\n" + out
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    assert m, out
    total, _, done, ok, failed, errored, timeout = map(int, m.groups())
    assert (total, done, ok, failed, errored, timeout) == (n, n, n, 0, 0, 0), out
    assert f"{n} 2xx" in out, out
    # b took over: later requests go there, and it served part of the run
    assert names_seen(ctx, px.port, 5) == {"b": 5}
    assert int(hosts(ctx, px, "svc")[f"127.0.0.2:{port}"]["rq_total"]) > 5
    # a's pool drained: no connection to a is left
    deadline = time.monotonic() + 5
    while conns_to("127.0.0.1", port):
        assert time.monotonic() < deadline, f"{conns_to('127.0.0.1', port)} connections to a"
        time.sleep(0.1)
    assert conns_to("127.0.0.2", port) > 0
    s = stats(ctx, px, "svc")
    assert s["upstream_rq_5xx"] == 0 and s["upstream_cx_none_healthy"] == 0, s
    assert s["upstream_rq_total"] == n + 5, s
    stop_clean(ctx, px)


def test_strict_dns_records_change_under_load(ctx):
    """20,000 requests over about 5 s, HTTP/1.1 upstream: zero failures across the change."""
    change_under_load(ctx, 20000)


def test_strict_dns_records_change_under_load_h2(ctx):
    """The same with an HTTP/2 upstream (a's connection gets GOAWAY and closes)."""
    change_under_load(ctx, 8000, cfg.H2_OPTS)


def test_dns_ttl_respected(ctx):
    """respect_dns_ttl with a 1 s TTL and a 60 s dns_refresh_rate: a change is seen within about
    a second; the same cluster without respect_dns_ttl still has the old address."""
    port = harness.free_port()
    backend(ctx, "127.0.0.1", port, "a")
    backend(ctx, "127.0.0.2", port, "b")
    dns_port, set_hosts = start_dnsmasq(ctx, {"svc.test": ["127.0.0.1"]}, ttl=1)
    common = "\n    dns_lookup_family: V4_ONLY\n    dns_refresh_rate: 60s"
    px = ctx.remora(cfg.bootstrap(routes("ttl", "fixed"), [
        dns_cluster("ttl", dns_port, [("svc.test", port)],
                    extra=common + "\n    respect_dns_ttl: true"),
        dns_cluster("fixed", dns_port, [("svc.test", port)], extra=common)]))
    wait_ready(ctx, px)
    wait_hosts(ctx, px, "ttl", {f"127.0.0.1:{port}"})
    set_hosts({"svc.test": ["127.0.0.2"]})
    t0 = time.monotonic()
    t1 = wait_hosts(ctx, px, "ttl", {f"127.0.0.2:{port}"}, timeout=5)
    assert t1 - t0 < 2.5, f"TTL refresh took {t1 - t0:.2f}s"
    assert get(ctx, px.port, "/ttl/")[1] == "b"
    assert set(hosts(ctx, px, "fixed")) == {f"127.0.0.1:{port}"}, "refresh rate is 60 s"
    assert get(ctx, px.port, "/fixed/")[1] == "a"
    assert stats(ctx, px, "fixed")["update_attempt"] == 1
    stop_clean(ctx, px)


def test_dns_server_down_keeps_last_good_hosts(ctx):
    """The DNS server stops: resolutions fail (update_failure, one log line), the last good
    hosts keep serving; it comes back with new records: the change is picked up."""
    port = harness.free_port()
    backend(ctx, "127.0.0.1", port, "a")
    backend(ctx, "127.0.0.2", port, "b")
    dns_port, set_hosts = start_dnsmasq(ctx, {"svc.test": ["127.0.0.1"]})
    px = ctx.remora(cfg.bootstrap(routes("svc"), [dns_cluster(
        "svc", dns_port, [("svc.test", port)], tries=1, timeout_s=1,
        extra="\n    dns_lookup_family: V4_ONLY\n    dns_refresh_rate: 0.2s\n"
              "    dns_failure_refresh_rate: { base_interval: 0.1s, max_interval: 0.3s }")]))
    wait_ready(ctx, px)
    wait_hosts(ctx, px, "svc", {f"127.0.0.1:{port}"})
    ctx.stop(set_hosts.proc)
    deadline = time.monotonic() + 10
    while stats(ctx, px, "svc")["update_failure"] < 3:
        assert time.monotonic() < deadline, stats(ctx, px, "svc")
        time.sleep(0.1)
    for _ in range(10):
        status, name, r = get(ctx, px.port)
        assert (status, name) == (200, "a"), r
    assert set(hosts(ctx, px, "svc")) == {f"127.0.0.1:{port}"}
    log = px.output()
    assert log.count("cluster svc: DNS resolution of svc.test failed:") == 1, log[-2000:]
    restart_dnsmasq(ctx, set_hosts, {"svc.test": ["127.0.0.2"]})
    wait_hosts(ctx, px, "svc", {f"127.0.0.2:{port}"}, timeout=10)
    assert get(ctx, px.port)[1] == "b"
    assert "cluster svc: DNS resolution of svc.test works again" in px.output()
    stop_clean(ctx, px)


# ---- LOGICAL_DNS -----------------------------------------------------------------------------

class KeepAlive:
    """One downstream HTTP/1.1 keep-alive connection to remora."""

    def __init__(self, port):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def get(self, path="/", headers=None):
        self.conn.request("GET", path, headers=headers or {})
        r = self.conn.getresponse()
        r.read()
        return r.status, r.getheader("x-upstream-name")


def test_logical_dns_keeps_existing_connections(ctx):
    """LOGICAL_DNS (DnsCluster with all_addresses_in_single_endpoint): one logical host.  After
    the name moves from a to b, the upstream connection already open to a keeps serving (Envoy
    never drains a logical host's connections), and a new connection goes to b."""
    port = harness.free_port()
    backend(ctx, "127.0.0.1", port, "a")
    backend(ctx, "127.0.0.2", port, "b")
    dns_port, set_hosts = start_dnsmasq(ctx, {"api.test": ["127.0.0.1", "127.0.0.3"]})
    px = ctx.remora(cfg.bootstrap(routes("api"), [ext_cluster(
        "api", dns_port, [("api.test", port)], """
        dns_refresh_rate: 0.1s
        dns_lookup_family: V4_ONLY
        all_addresses_in_single_endpoint: true""")]))
    wait_ready(ctx, px)
    wait_hosts(ctx, px, "api", {f"127.0.0.1:{port}"})  # the first address only
    held = KeepAlive(px.port)
    assert held.get() == (200, "a")
    assert stats(ctx, px, "api")["upstream_cx_total"] == 1
    set_hosts({"api.test": ["127.0.0.2"]})
    wait_hosts(ctx, px, "api", {f"127.0.0.2:{port}"})
    # the existing upstream connection (idle, to a) is reused: not drained
    assert held.get() == (200, "a")
    assert KeepAlive(px.port).get() == (200, "a")
    s = stats(ctx, px, "api")
    assert s["upstream_cx_total"] == 1 and s["upstream_cx_destroy"] == 0, s
    # while it is busy, a second request needs a new connection: to the new address
    slow = {}

    def slow_request():
        slow["r"] = KeepAlive(px.port).get(headers={"x-upstream-delay-ms": "1500"})

    t = threading.Thread(target=slow_request)
    t.start()
    time.sleep(0.4)
    assert get(ctx, px.port)[1] == "b"
    t.join(10)
    assert slow["r"] == (200, "a"), slow
    s = stats(ctx, px, "api")
    assert s["upstream_cx_total"] == 2 and s["membership_total"] == 1, s
    h = hosts(ctx, px, "api")
    assert h[f"127.0.0.2:{port}"]["hostname"] == "api.test", h
    assert h[f"127.0.0.2:{port}"]["rq_total"] == "5", h  # one host: its stats carried over
    stop_clean(ctx, px)


# ---- lookup families -------------------------------------------------------------------------

def test_dns_lookup_families(ctx):
    """One name with an A (127.0.0.1) and an AAAA (::1) record, a backend on each: V4_ONLY goes
    to v4, V6_ONLY to v6, AUTO prefers v6, and AUTO falls back to A for a v4-only name; the
    DnsCluster form (ALL) gets both."""
    port = harness.free_port()
    backend(ctx, "127.0.0.1", port, "v4")
    backend(ctx, "::1", port, "v6")
    dns_port, _ = start_dnsmasq(ctx, {"both.test": ["127.0.0.1", "::1"],
                                      "four.test": ["127.0.0.1"]})
    fam = "\n    dns_lookup_family: "
    px = ctx.remora(cfg.bootstrap(routes("v4only", "v6only", "auto", "auto4", "all"), [
        dns_cluster("v4only", dns_port, [("both.test", port)], extra=fam + "V4_ONLY"),
        dns_cluster("v6only", dns_port, [("both.test", port)], extra=fam + "V6_ONLY"),
        dns_cluster("auto", dns_port, [("both.test", port)], extra=fam + "AUTO"),
        dns_cluster("auto4", dns_port, [("four.test", port)]),
        ext_cluster("all", dns_port, [("both.test", port)], """
        dns_lookup_family: ALL""")]))
    wait_ready(ctx, px)
    wait_hosts(ctx, px, "all", {f"127.0.0.1:{port}", f"[::1]:{port}"})
    assert set(hosts(ctx, px, "v4only")) == {f"127.0.0.1:{port}"}
    assert set(hosts(ctx, px, "v6only")) == {f"[::1]:{port}"}
    assert set(hosts(ctx, px, "auto")) == {f"[::1]:{port}"}
    assert set(hosts(ctx, px, "auto4")) == {f"127.0.0.1:{port}"}
    assert names_seen(ctx, px.port, 3, "/v4only/") == {"v4": 3}
    assert names_seen(ctx, px.port, 3, "/v6only/") == {"v6": 3}
    assert names_seen(ctx, px.port, 3, "/auto/") == {"v6": 3}
    assert names_seen(ctx, px.port, 3, "/auto4/") == {"v4": 3}
    assert names_seen(ctx, px.port, 4, "/all/") == {"v4": 2, "v6": 2}
    stop_clean(ctx, px)


# ---- bad names, bad answers, warming ---------------------------------------------------------

def test_never_resolving_name_is_503_uh(ctx):
    """NXDOMAIN (a name of the local domain) and REFUSED (outside it): no host, 503 UH with
    "no healthy upstream" at once, a log line naming the cluster and the c-ares error; the other
    clusters serve."""
    up = ctx.upstream(name="static")
    dns_port, _ = start_dnsmasq(ctx, {"svc.test": ["127.0.0.1"]})
    px = ctx.remora(cfg.bootstrap(routes("ok", "nx", "refused"), [
        cfg.cluster("ok", [up.port]),
        dns_cluster("nx", dns_port, [("nope.test", 80)],
                    extra="\n    dns_failure_refresh_rate: { base_interval: 0.2s }"),
        dns_cluster("refused", dns_port, [("www.example.com", 80)], tries=1)]))
    wait_ready(ctx, px)
    for path in ("/nx/", "/refused/"):
        t0 = time.monotonic()
        status, _, r = get(ctx, px.port, path)
        assert status == 503 and r.body == b"no healthy upstream", r
        assert time.monotonic() - t0 < 2
    assert get(ctx, px.port, "/ok/")[0] == 200
    log = px.output()
    assert "cluster nx: DNS resolution of nope.test failed: Domain name not found" in log, log
    assert "cluster refused: DNS resolution of www.example.com failed: " in log, log
    s = stats(ctx, px, "nx")
    assert s["update_failure"] >= 1 and s["update_success"] == 0, s
    assert s["membership_total"] == 0 and s["upstream_cx_none_healthy"] >= 1, s
    assert hosts(ctx, px, "nx") == {}
    stop_clean(ctx, px)


def bad_dns_server(mode):
    """A UDP 'DNS server' on 127.0.0.1 that answers every query with junk (<mode> "short": 5
    bytes; "lying": a header announcing 65535 answers and none) or, "silent", never answers.
    Returns (port, stop)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(0.1)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                q, peer = s.recvfrom(2048)
            except OSError:
                continue
            if mode == "short":
                s.sendto(b"\x00\x01\x02\x03\x04", peer)
            elif mode == "lying":
                s.sendto(q[:2] + b"\x81\x80\x00\x01\xff\xff\x00\x00\x00\x00" + q[12:], peer)

    t = threading.Thread(target=serve, daemon=True)
    t.start()

    def close():
        stop.set()
        t.join(2)
        s.close()
    return s.getsockname()[1], close


def test_malformed_answers_are_dropped(ctx):
    """Junk and lying answers are failures: the cluster has no host (503 UH), remora keeps
    serving and exits cleanly."""
    up = ctx.upstream(name="static")
    p1, close1 = bad_dns_server("short")
    p2, close2 = bad_dns_server("lying")
    try:
        px = ctx.remora(cfg.bootstrap(routes("ok", "short", "lying"), [
            cfg.cluster("ok", [up.port]),
            dns_cluster("short", p1, [("svc.test", 80)], tries=1, timeout_s=1),
            dns_cluster("lying", p2, [("svc.test", 80)], tries=1, timeout_s=1)]))
        wait_ready(ctx, px, timeout=15)
        for path in ("/short/", "/lying/"):
            assert get(ctx, px.port, path)[0] == 503
        assert get(ctx, px.port, "/ok/")[0] == 200
        assert stats(ctx, px, "short")["update_failure"] >= 1
        assert stats(ctx, px, "lying")["update_failure"] >= 1
        stop_clean(ctx, px)
    finally:
        close1()
        close2()


def test_ready_waits_for_the_first_answers(ctx):
    """A DNS server that never answers: /ready says INITIALIZING (503) while the first
    resolution is pending, yet the listener already serves (503 UH for that cluster, 200 for the
    others); after the failure (query timeout) the server is LIVE."""
    up = ctx.upstream(name="static")
    silent, close = bad_dns_server("silent")
    try:
        px = ctx.remora(cfg.bootstrap(routes("ok", "slow"), [
            cfg.cluster("ok", [up.port]),
            dns_cluster("slow", silent, [("svc.test", 80)], tries=1, timeout_s=3)]))
        r = admin_get(ctx, px, "/ready")
        assert (r.status, r.body) == (503, b"INITIALIZING\n"), r
        assert get(ctx, px.port, "/ok/")[0] == 200
        assert get(ctx, px.port, "/slow/")[0] == 503
        wait_ready(ctx, px, timeout=15)
        assert admin_get(ctx, px, "/ready").body == b"LIVE\n"
        assert "cluster slow: DNS resolution of svc.test failed: " in px.output()
        stop_clean(ctx, px)
    finally:
        close()


# ---- config ----------------------------------------------------------------------------------

def validate(ctx, yaml_text):
    path = os.path.join(ctx.tmp, "v.yaml")
    with open(path, "w") as f:
        f.write(yaml_text.replace("{admin}", "0").replace("{port0}", str(harness.free_port())))
    r = ctx.run([ctx.bin("remora"), "-c", path, "--mode", "validate"])
    return r.returncode, (r.stdout + r.stderr).decode()


def test_dns_config_errors_name_the_field(ctx):
    ok = dns_cluster("svc", 53, [("svc.test", 80)])
    rc, out = validate(ctx, cfg.bootstrap(routes("svc"), [ok]))
    assert rc == 0, out
    cases = [
        (ok.replace("address: 127.0.0.1, port_value: 53", "address: dns.example, port_value: 53"),
         "static_resources.clusters[0].typed_dns_resolver_config.typed_config.resolvers[0]."
         "socket_address.address: \"dns.example\" is not an IP address"),
        (dns_cluster("svc", 53, [("a.test", 80), ("b.test", 80)], kind="LOGICAL_DNS"),
         "static_resources.clusters[0].load_assignment: a LOGICAL_DNS cluster needs exactly one "
         "locality with exactly one lb_endpoint"),
        (cfg.cluster("svc", [80]).replace("127.0.0.1", "svc.test"),
         "static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint."
         "address.socket_address.address: \"svc.test\" is not an IP address"),
        (ok.replace("lb_policy: ROUND_ROBIN", "lb_policy: ROUND_ROBIN\n    dns_refresh_rate: 0s"),
         "static_resources.clusters[0].dns_refresh_rate: must be greater than 1ms"),
    ]
    for clusters, want in cases:
        rc, out = validate(ctx, cfg.bootstrap(routes("svc"), [clusters]))
        assert rc == 1 and want in out, (want, out)
    # the bootstrap's resolver
    bs = cfg.bootstrap(routes("svc"), [ok]) + resolver(53, 0).replace(
        "address: 127.0.0.1", "address: resolver.example")
    rc, out = validate(ctx, bs)
    assert rc == 1 and "typed_dns_resolver_config.typed_config.resolvers[0].socket_address." \
        "address: \"resolver.example\" is not an IP address" in out, out


def test_bootstrap_resolver_is_shared(ctx):
    """A DNS cluster without a resolver of its own uses the bootstrap's
    typed_dns_resolver_config."""
    port = harness.free_port()
    backend(ctx, "127.0.0.2", port, "b")
    dns_port, _ = start_dnsmasq(ctx, {"svc.test": ["127.0.0.2"]})
    c = dns_cluster("svc", dns_port, [("svc.test", port)],
                    extra="\n    dns_lookup_family: V4_ONLY")
    c = c[:c.index("    typed_dns_resolver_config:")] + c[c.index("    load_assignment:"):]
    px = ctx.remora(cfg.bootstrap(routes("svc"), [c]) + resolver(dns_port, 0))
    wait_ready(ctx, px)
    wait_hosts(ctx, px, "svc", {f"127.0.0.2:{port}"})
    assert get(ctx, px.port)[1] == "b"
    stop_clean(ctx, px)
