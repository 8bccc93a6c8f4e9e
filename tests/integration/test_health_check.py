"""Active health checking (Cluster.health_checks) end to end: small HTTP and TCP servers run in
the test process (threads) so each host's health answer can be flipped; remora checks them every
100-300 ms.  A host failing its checks leaves load balancing after unhealthy_threshold retriable
failures (at once for a non-retriable status) and comes back after healthy_threshold successes;
a refused connection counts network_failure; TCP checks send and match payloads; every host
unhealthy means panic routing; /clusters and /stats show Envoy's flags and counters; a STRICT_DNS
cluster and a CDS/EDS cluster are checked too, and a bad health check over CDS is NACKed with
its path; gRPC and HTTP/2 checks, checks over the cluster's TLS; /ready waits for the first
round; the tcp_proxy filter skips unhealthy hosts too."""
import json
import socket
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import remora_cfg
from harness import TestFailure, free_port
from test_outlier import Client, stats

ROUTE = """
              - match: { prefix: "/" }
                route: { cluster: backend }"""


def wait_until(what, fn, timeout=8.0, step=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(step)
    raise TestFailure(f"timed out after {timeout}s waiting for {what}")


class Backend:
    """An HTTP/1.1 server (keep-alive): /healthz answers self.status (counted per status in
    self.answers), anything else 200 with x-upstream-name."""

    def __init__(self, name):
        self.name, self.status, self.answers, self.hc_headers = name, 200, {}, None
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                code = 200
                if self.path == "/healthz":
                    code = outer.status
                    outer.answers[code] = outer.answers.get(code, 0) + 1
                    outer.hc_headers = {k.lower(): v for k, v in self.headers.items()}
                body = outer.name.encode()
                try:
                    self.send_response(code)
                    self.send_header("x-upstream-name", outer.name)
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # remora closed first (a check that timed out)
                    pass

            def log_message(self, *a):
                pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


class TcpServer:
    """Answers <reply> to each chunk it reads (keeps the connection open)."""

    def __init__(self, reply):
        class H(socketserver.BaseRequestHandler):
            def handle(self):
                self.request.settimeout(5)
                try:
                    while self.request.recv(4096):
                        self.request.sendall(reply)
                except OSError:
                    pass

        class S(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.srv = S(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def hc_yaml(checker, interval="0.1s", unhealthy=3, healthy=2, extra=""):
    return f"""
    health_checks:
    - timeout: 1s
      interval: {interval}
      no_traffic_interval: {interval}
      unhealthy_threshold: {unhealthy}
      healthy_threshold: {healthy}{extra}
      {checker}"""


HTTP_CHECK = """http_health_check:
        path: /healthz
        retriable_statuses: [{start: 503, end: 504}]
        request_headers_to_add:
        - header: {key: x-hc-test, value: yes-please}"""


def flags(ctx, px, port, cluster="backend"):
    text = ctx.curl(f"http://127.0.0.1:{px.admin}/clusters").body.decode()
    prefix = f"{cluster}::127.0.0.1:{port}::health_flags::"
    for line in text.splitlines():
        if line.startswith(prefix):
            return line[len(prefix):]
    return None


def wait_flags(ctx, px, port, want, timeout=8.0, cluster="backend"):
    wait_until(f"{port} health_flags {want}", lambda: flags(ctx, px, port, cluster) == want,
               timeout=timeout)


def test_hc_http_threshold_eject_and_return(ctx):
    a, b = Backend("a"), Backend("b")
    try:
        # unhealthy hosts are checked every second, but the checks counting towards the
        # threshold every 0.2 s (unhealthy_edge_interval)
        ivals = "\n      unhealthy_interval: 1s\n      unhealthy_edge_interval: 0.2s"
        px = ctx.remora(remora_cfg.bootstrap(ROUTE, [remora_cfg.cluster(
            "backend", [a.port, b.port], extra=hc_yaml(HTTP_CHECK, interval="0.2s",
                                                       extra=ivals))]))
        wait_flags(ctx, px, a.port, "healthy")
        wait_flags(ctx, px, b.port, "healthy")
        assert b.hc_headers["user-agent"] == "Envoy/HC", b.hc_headers
        assert b.hc_headers["host"] == "backend", "Host defaults to the cluster name"
        assert b.hc_headers["x-hc-test"] == "yes-please", b.hc_headers
        cl = Client(px.port)
        assert {cl.get()[1] for _ in range(6)} == {"a", "b"}
        st = stats(ctx, px)
        assert st["health_check.healthy"] == 2 and st["membership_healthy"] == 2, st
        # 503 is retriable: b stays healthy for 2 failed checks, goes on the 3rd
        b.status = 503
        seen_pending = False

        def b_flagged():
            nonlocal seen_pending
            f = flags(ctx, px, b.port)
            n = b.answers.get(503, 0)  # read after the flags: counts every check they saw
            if f == "/failed_active_hc":
                assert n >= 3, f"unhealthy after {n} failed checks (threshold 3)"
                return True
            if n in (1, 2):
                seen_pending = True
            return False
        wait_until("b unhealthy", b_flagged, timeout=6)
        assert seen_pending, "never saw b still healthy after a failed check"
        assert [cl.get()[1] for _ in range(10)] == ["a"] * 10
        st = stats(ctx, px)
        assert st["health_check.healthy"] == 1 and st["membership_healthy"] == 1, st
        assert st["health_check.failure"] >= 3 and st["health_check.network_failure"] == 0, st
        assert st["health_check.passive_failure"] == 0 and st["health_check.degraded"] == 0, st
        assert st["health_check.attempt"] >= st["health_check.success"] + 3, st
        js = json.loads(ctx.curl(f"http://127.0.0.1:{px.admin}/clusters?format=json").body)
        hs = {h["address"]["socket_address"]["port_value"]: h["health_status"]
              for h in js["cluster_statuses"][0]["host_statuses"]}
        assert hs[b.port].get("failed_active_health_check") is True, hs
        assert "failed_active_health_check" not in hs[a.port], hs
        # back after 2 successes
        ok_before = b.answers.get(200, 0)
        b.status = 200
        wait_flags(ctx, px, b.port, "healthy")
        assert b.answers.get(200, 0) - ok_before >= 2, "healthy after fewer than 2 successes"
        assert {cl.get()[1] for _ in range(6)} == {"a", "b"}
        # a status that is neither expected nor retriable: unhealthy at the first failure
        b.status = 500
        wait_flags(ctx, px, b.port, "/failed_active_hc")
        t0 = time.monotonic()
        assert b.answers.get(500, 0) == 1, b.answers
        # the next check of an unhealthy host: unhealthy_interval later
        wait_until("b checked again", lambda: b.answers.get(500, 0) >= 2, timeout=4)
        assert time.monotonic() - t0 >= 0.7, "unhealthy_interval not applied"
        cl.close()
        assert ctx.stop(px) == 0, px.output()[-3000:]
    finally:
        a.close()
        b.close()


def test_hc_refused_connection_counts_network_failure(ctx):
    a = Backend("a")
    dead = free_port()
    try:
        px = ctx.remora(remora_cfg.bootstrap(ROUTE, [remora_cfg.cluster(
            "backend", [a.port, dead], extra=hc_yaml(HTTP_CHECK, unhealthy=2))]))
        wait_flags(ctx, px, a.port, "healthy")
        wait_until("network failures", lambda: stats(ctx, px).get(
            "health_check.network_failure", 0) >= 3)
        assert flags(ctx, px, dead) == "/failed_active_hc"
        cl = Client(px.port)
        assert [cl.get()[1] for _ in range(10)] == ["a"] * 10
        cl.close()
        st = stats(ctx, px)
        assert st["health_check.healthy"] == 1, st
        assert st["health_check.failure"] >= st["health_check.network_failure"], st
        # the dead host starts listening: it comes back
        b = Backend("b")
        b.srv.server_close()
        srv = ThreadingHTTPServer(("127.0.0.1", dead), b.srv.RequestHandlerClass)
        srv.daemon_threads = True
        b.srv = srv
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        try:
            wait_flags(ctx, px, dead, "healthy")
        finally:
            b.close()
        assert ctx.stop(px) == 0, px.output()[-3000:]
    finally:
        a.close()


def test_hc_tcp_send_receive_and_connect_only(ctx):
    good, bad = TcpServer(b"xxPONG\n"), TcpServer(b"NOPE\n")
    listening = TcpServer(b"")
    dead = free_port()
    tcp = """tcp_health_check:
        send: {text: 50494E47}
        receive: [{text: 504f}, {binary: Tkc=}]"""
    try:
        px = ctx.remora(remora_cfg.bootstrap(ROUTE, [
            remora_cfg.cluster("backend", [good.port, bad.port],
                               extra=hc_yaml(tcp, unhealthy=1, healthy=1).replace(
                                   "timeout: 1s", "timeout: 0.3s")),
            remora_cfg.cluster("plain", [listening.port, dead],
                               extra=hc_yaml("tcp_health_check: {}", unhealthy=1, healthy=1)),
        ]))
        wait_flags(ctx, px, good.port, "healthy")
        wait_flags(ctx, px, listening.port, "healthy", cluster="plain")
        wait_until("bad host checked", lambda: stats(ctx, px).get("health_check.failure", 0) >= 2)
        # a reply that never matches: the check times out (Envoy's /active_hc_timeout)
        assert flags(ctx, px, bad.port) == "/failed_active_hc/active_hc_timeout"
        assert flags(ctx, px, dead, "plain") == "/failed_active_hc"
        st = stats(ctx, px)
        assert st["health_check.healthy"] == 1, st
        # a reply that never matches fails by timeout: a network failure, as Envoy counts it
        assert st["health_check.network_failure"] >= 2, st
        sp = stats(ctx, px, "cluster.plain.")
        assert sp["health_check.healthy"] == 1 and sp["health_check.success"] >= 1, sp
        assert ctx.stop(px) == 0, px.output()[-3000:]
    finally:
        for s in (good, bad, listening):
            s.close()


def test_hc_all_unhealthy_panic(ctx):
    a, b = Backend("a"), Backend("b")
    a.status = b.status = 500
    routes = """
              - match: { prefix: "/np" }
                route: { cluster: nopanic }""" + ROUTE
    try:
        px = ctx.remora(remora_cfg.bootstrap(routes, [
            remora_cfg.cluster("backend", [a.port, b.port], extra=hc_yaml(HTTP_CHECK)),
            remora_cfg.cluster("nopanic", [a.port, b.port], extra=hc_yaml(HTTP_CHECK) + """
    common_lb_config: {healthy_panic_threshold: {value: 0}}"""),
        ]))
        wait_until("checks", lambda: stats(ctx, px).get("health_check.failure", 0) >= 2)
        assert flags(ctx, px, a.port) == flags(ctx, px, b.port) == "/failed_active_hc"
        # every host unhealthy: below healthy_panic_threshold, all of them take traffic
        cl = Client(px.port)
        got = [cl.get() for _ in range(8)]
        assert {n for _, n in got} == {"a", "b"} and {s for s, _ in got} == {200}, got
        assert stats(ctx, px)["lb_healthy_panic"] >= 8
        # without panic mode: no healthy upstream
        r = ctx.curl(f"http://127.0.0.1:{px.port}/np")
        assert r.status == 503 and b"no healthy upstream" in r.body, r
        cl.close()
        assert ctx.stop(px) == 0, px.output()[-3000:]
    finally:
        a.close()
        b.close()


def test_hc_pending_until_first_check(ctx):
    """ignore_new_hosts_until_first_hc: a host is /pending_active_hc (excluded) until its first
    result; a host that accepts but never answers stays pending until its check times out."""
    a = Backend("a")
    silent = TcpServer(b"")  # accepts, reads, never answers: the HTTP check times out
    try:
        px = ctx.remora(remora_cfg.bootstrap(ROUTE, [remora_cfg.cluster(
            "backend", [a.port, silent.port],
            extra=hc_yaml(HTTP_CHECK).replace("timeout: 1s", "timeout: 1.5s") + """
    common_lb_config: {ignore_new_hosts_until_first_hc: true}""")]))
        wait_flags(ctx, px, a.port, "healthy")
        assert flags(ctx, px, silent.port) == "/failed_active_hc/pending_active_hc"
        cl = Client(px.port)
        assert [cl.get()[1] for _ in range(4)] == ["a"] * 4
        wait_flags(ctx, px, silent.port, "/failed_active_hc/active_hc_timeout", timeout=5)
        cl.close()
        assert ctx.stop(px) == 0, px.output()[-3000:]
    finally:
        a.close()
        silent.close()


def test_hc_strict_dns_cluster(ctx):
    a = Backend("a")
    a.status = 503
    try:
        dns = f"""
  - name: backend
    type: STRICT_DNS
    connect_timeout: 1s
    dns_refresh_rate: 0.2s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: 127.0.0.1, port_value: {a.port} }}""" + hc_yaml(
            HTTP_CHECK, unhealthy=1, healthy=1)
        px = ctx.remora(remora_cfg.bootstrap(ROUTE, [dns]))
        wait_until("checks", lambda: a.answers.get(503, 0) >= 2)
        assert flags(ctx, px, a.port) == "/failed_active_hc"
        a.status = 200
        wait_flags(ctx, px, a.port, "healthy")
        st = stats(ctx, px)
        assert st["health_check.healthy"] == 1 and st["membership_healthy"] == 1, st
        assert ctx.stop(px) == 0, px.output()[-3000:]
    finally:
        a.close()


def test_hc_bad_config_rejected_with_path(ctx):
    bad = remora_cfg.cluster("backend", [free_port()], extra="""
    health_checks:
    - timeout: 1s
      interval: 1s
      unhealthy_threshold: 1
      healthy_threshold: 1
      http_health_check: {path: /, expected_statuses: [{start: 200, end: 700}]}""")
    path = ctx.tmp + "/bad.yaml"
    with open(path, "w") as f:
        f.write(remora_cfg.bootstrap(ROUTE, [bad]).replace("{admin}", str(free_port()))
                .replace("{port0}", str(free_port())))
    r = ctx.run([ctx.bin("remora"), "-c", path, "--mode", "validate"], timeout=30)
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert ("static_resources.clusters[0].health_checks[0].http_health_check."
            "expected_statuses[0]") in err, err


def hc_dict(path="/healthz"):
    return {"timeout": "1s", "interval": "0.1s", "no_traffic_interval": "0.1s",
            "unhealthy_threshold": 1, "healthy_threshold": 1,
            "http_health_check": {"path": path}}


def test_hc_cds_eds_membership_and_nack(ctx):
    from pycp import PyCP, cla, eds_cluster
    a, b, c = Backend("a"), Backend("b"), Backend("c")
    cp = PyCP()
    try:
        cp.set("cds", {"backend": eds_cluster("backend", {"health_checks": [hc_dict()]})})
        cp.set("eds", {"backend": cla("backend", [a.port, b.port])})
        xds = remora_cfg.cluster("xds", [cp.port], proto="h2")
        px = ctx.remora(remora_cfg.bootstrap(ROUTE, [xds]) + """
dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    grpc_services: [ { envoy_grpc: { cluster_name: xds } } ]
  cds_config: { ads: {}, resource_api_version: V3 }
""")
        cp.wait_ack("cds")
        wait_flags(ctx, px, a.port, "healthy")
        wait_flags(ctx, px, b.port, "healthy")
        b.status = 500
        wait_flags(ctx, px, b.port, "/failed_active_hc")
        cl = Client(px.port)
        assert [cl.get()[1] for _ in range(6)] == ["a"] * 6
        # EDS: b leaves (no longer checked), c joins (checked, then takes traffic)
        cp.set("eds", {"backend": cla("backend", [a.port, c.port])})
        wait_flags(ctx, px, c.port, "healthy")
        assert flags(ctx, px, b.port) is None
        n = sum(b.answers.values())
        time.sleep(0.5)
        assert sum(b.answers.values()) <= n + 1, "a removed host is still checked"
        assert {cl.get()[1] for _ in range(6)} == {"a", "c"}
        st = stats(ctx, px)
        assert st["health_check.healthy"] == 2 and st["membership_healthy"] == 2, st
        # a bad health check is NACKed with its path; the cluster keeps its checker
        cp.set("cds", {"backend": eds_cluster("backend", {"health_checks": [hc_dict("")]})})
        nack = cp.wait_nack("cds")
        assert ("Cluster backend: resources[0].health_checks[0].http_health_check.path"
                in nack.error_detail.message), nack.error_detail.message
        n = sum(a.answers.values())
        wait_until("checks go on", lambda: sum(a.answers.values()) > n + 2)
        # the cluster removed: its checker stops
        cp.set("cds", {})
        cp.wait_ack("cds")
        wait_until("cluster gone", lambda: "health_check.attempt" not in stats(ctx, px))
        n = sum(a.answers.values()) + sum(c.answers.values())
        time.sleep(0.5)
        assert sum(a.answers.values()) + sum(c.answers.values()) <= n + 2
        cl.close()
        assert ctx.stop(px) == 0, px.output()[-3000:]
    finally:
        cp.stop()
        for s in (a, b, c):
            s.close()


class GrpcHealth:
    """A grpc.health.v1.Health/Check servicer (grpcio, raw bytes): answers
    HealthCheckResponse{status: self.status} (1 SERVING, 2 NOT_SERVING); requests kept."""

    def __init__(self):
        import grpc
        from concurrent import futures
        self.status, self.requests = 1, []

        def check(req, context):
            self.requests.append(req)
            return bytes([0x08, self.status])

        h = grpc.method_handlers_generic_handler(
            "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(check)})
        self.srv = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        self.srv.add_generic_rpc_handlers((h,))
        self.port = self.srv.add_insecure_port("127.0.0.1:0")
        self.srv.start()

    def close(self):
        self.srv.stop(0)


def test_hc_grpc_and_http2(ctx):
    g1, g2 = GrpcHealth(), GrpcHealth()
    g2.status = 2
    up = ctx.upstream(name="h2up")
    grpc_check = """grpc_health_check: {service_name: svc, authority: hc.example}"""
    h2_check = """http_health_check:
        path: /healthz
        codec_client_type: HTTP2"""
    h2_fail = h2_check + """
        request_headers_to_add: [{header: {key: x-upstream-status, value: "503"}}]"""
    try:
        px = ctx.remora(remora_cfg.bootstrap(ROUTE, [
            remora_cfg.cluster("backend", [g1.port, g2.port], proto="h2",
                               extra=hc_yaml(grpc_check, unhealthy=1, healthy=1)),
            remora_cfg.cluster("h2ok", [up.port], extra=hc_yaml(h2_check)),
            remora_cfg.cluster("h2bad", [up.port], extra=hc_yaml(h2_fail)),
        ]))
        wait_flags(ctx, px, g1.port, "healthy")
        wait_until("g2 checked", lambda: len(g2.requests) >= 2)
        assert flags(ctx, px, g2.port) == "/failed_active_hc"
        assert g1.requests[0] == b"\x0a\x03svc", g1.requests[:1]
        # NOT_SERVING -> SERVING: back at the next check (healthy_threshold 1)
        g2.status = 1
        wait_flags(ctx, px, g2.port, "healthy")
        st = stats(ctx, px)
        assert st["health_check.healthy"] == 2 and st["health_check.network_failure"] == 0, st
        # the service stops: a network failure
        g1.close()
        wait_flags(ctx, px, g1.port, "/failed_active_hc")
        assert stats(ctx, px)["health_check.network_failure"] >= 1
        wait_flags(ctx, px, up.port, "healthy", cluster="h2ok")
        wait_until("h2bad checked", lambda: stats(ctx, px, "cluster.h2bad.").get(
            "health_check.failure", 0) >= 2)
        assert flags(ctx, px, up.port, "h2bad") == "/failed_active_hc"
        sp = stats(ctx, px, "cluster.h2ok.")
        assert sp["health_check.success"] >= 1 and sp["health_check.failure"] == 0, sp
        assert ctx.stop(px) == 0, px.output()[-3000:]
    finally:
        g1.close()
        g2.close()


def test_hc_over_cluster_tls(ctx):
    """Checks use the cluster's transport_socket: a TLS upstream passes; the same upstream
    behind a cluster that trusts another CA fails its handshake (a network failure)."""
    from test_tls import certs, tls_upstream, upstream_tls
    c = certs(ctx)
    up = tls_upstream(ctx)
    check = """http_health_check: {path: /healthz}"""
    px = ctx.remora(remora_cfg.bootstrap(ROUTE, [
        remora_cfg.cluster("backend", [up.port], extra=upstream_tls(c) + hc_yaml(check)),
        remora_cfg.cluster("h2tls", [up.port], proto="h2", extra=upstream_tls(c) + hc_yaml(
            check.replace("}", ", codec_client_type: HTTP2}"))),
        remora_cfg.cluster("wrongca", [up.port],
                           extra=upstream_tls(c, ca_key="other_ca") + hc_yaml(check)),
    ]))
    wait_flags(ctx, px, up.port, "healthy")
    wait_flags(ctx, px, up.port, "healthy", cluster="h2tls")
    wait_until("wrongca checked", lambda: stats(ctx, px, "cluster.wrongca.").get(
        "health_check.network_failure", 0) >= 2)
    assert flags(ctx, px, up.port, "wrongca") == "/failed_active_hc"
    st = stats(ctx, px)
    assert st["health_check.failure"] == 0 and st["health_check.success"] >= 1, st
    assert ctx.stop(px) == 0, px.output()[-3000:]


def test_hc_ready_after_first_round(ctx):
    """/ready says LIVE only once every checked host has had its first result (Envoy's cluster
    warming): here a host whose check times out after 1.5 s holds it back that long."""
    a = Backend("a")
    silent = TcpServer(b"")
    try:
        t0 = time.monotonic()
        px = ctx.remora(remora_cfg.bootstrap(ROUTE, [remora_cfg.cluster(
            "backend", [a.port, silent.port],
            extra=hc_yaml(HTTP_CHECK).replace("timeout: 1s", "timeout: 1.5s"))]))
        r = ctx.curl(f"http://127.0.0.1:{px.admin}/ready")
        assert r.status == 503, r
        wait_until("LIVE", lambda: ctx.curl(f"http://127.0.0.1:{px.admin}/ready").status == 200,
                   timeout=6)
        assert time.monotonic() - t0 >= 1.4, "LIVE before the first check of every host"
        assert flags(ctx, px, silent.port) == "/failed_active_hc/active_hc_timeout"
        assert ctx.stop(px) == 0, px.output()[-3000:]
    finally:
        a.close()
        silent.close()


def test_hc_tcp_proxy_skips_unhealthy_hosts(ctx):
    """The tcp_proxy network filter balances through the same load balancer: a host failing its
    HTTP health check gets no TCP connection."""
    from test_tcp_proxy import bootstrap as tcp_bootstrap
    a, b = Backend("a"), Backend("b")
    b.status = 500
    try:
        px = ctx.remora(tcp_bootstrap([remora_cfg.cluster(
            "backend", [a.port, b.port], extra=hc_yaml(HTTP_CHECK))]))
        wait_flags(ctx, px, a.port, "healthy")
        wait_flags(ctx, px, b.port, "/failed_active_hc")
        names = []
        for _ in range(6):
            with socket.create_connection(("127.0.0.1", px.port), timeout=5) as s:
                s.sendall(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                data = b""
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            names.append(data.rsplit(b"\r\n\r\n", 1)[-1].decode())
        assert names == ["a"] * 6, names
        assert ctx.stop(px) == 0, px.output()[-3000:]
    finally:
        a.close()
        b.close()
