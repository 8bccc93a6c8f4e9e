"""The core data plane end to end: real remora, real bundled upstream, real clients."""
import json
import os
import re
import signal
import socket
import subprocess
import time

import remora_cfg as cfg
from harness import TestFailure, free_port, wait_port


def h2load(ctx, url, n=10000, c=10, m=10, h1=False, extra=()):
    args = ["h2load", "-n", str(n), "-c", str(c), "-m", str(m)] + (["--h1"] if h1 else [])
    args += list(extra) + [url]
    r = ctx.run(args, timeout=120)
    out = r.stdout.decode()
    mreq = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                     r"(\d+) failed, (\d+) errored", out)
    assert mreq, out
    return [int(x) for x in mreq.groups()], out


def stat(ctx, px, name):
    r = ctx.curl(f"http://127.0.0.1:{px.admin}/stats")
    for line in r.body.decode().splitlines():
        k, _, v = line.partition(": ")
        if k == name:
            return int(v)
    raise TestFailure(f"stat {name} not found")


def test_http1_get(ctx):
    up = ctx.upstream(name="b1")
    px = ctx.remora(cfg.simple(up.port))
    r = ctx.curl(f"http://127.0.0.1:{px.port}/hello", headers={"x-upstream-body-size": "1234"})
    assert r.status == 200, r
    assert len(r.body) == 1234, r
    assert r.headers.get("x-upstream-name") == "b1", r
    assert "x-envoy-upstream-service-time" in r.headers, r
    assert r.headers.get("server") == "remora", r


def test_upstream_service_time_replaces_the_upstreams(ctx):
    """An upstream that is itself a sidecar sends x-envoy-upstream-service-time: remora's own
    replaces it (Envoy's setEnvoyUpstreamServiceTime), over HTTP/1.1 and HTTP/2."""
    up = ctx.upstream(name="b1")
    px = ctx.remora(cfg.simple(up.port))
    for h2 in (False, True):
        args = ["curl", "-si", "--max-time", "10", "-H",
                "x-upstream-response-headers: x-envoy-upstream-service-time=987654"]
        args += ["--http2-prior-knowledge"] if h2 else []
        r = ctx.run(args + [f"http://127.0.0.1:{px.port}/t"], check=True)
        head = r.stdout.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower()
        got = [ln.split(":", 1)[1].strip() for ln in head.split("\r\n")
               if ln.startswith("x-envoy-upstream-service-time:")]
        assert len(got) == 1 and got[0] != "987654" and got[0].isdigit(), (h2, head)
    assert ctx.stop(px) == 0


def test_h2c_get(ctx):
    up = ctx.upstream(name="b1")
    px = ctx.remora(cfg.simple(up.port))
    r = ctx.curl(f"http://127.0.0.1:{px.port}/x", http2=True,
                 headers={"x-upstream-status": "201", "x-upstream-body-size": "10"})
    assert r.status == 201 and len(r.body) == 10, r


def test_request_headers_forwarded(ctx):
    up = ctx.upstream()
    px = ctx.remora(cfg.simple(up.port))
    r = ctx.curl(f"http://127.0.0.1:{px.port}/echo-request?q=1", headers={"x-custom": "v1"})
    assert r.status == 200, r
    j = json.loads(r.body)
    assert j["path"] == "/echo-request?q=1", j
    h = j["headers"]
    assert h.get("x-custom") == "v1", j
    assert h.get("x-forwarded-proto") == "http", j
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
                        h.get("x-request-id", "")), j
    assert j["authority"].startswith("127.0.0.1:"), j
    for hop in ("connection", "keep-alive", "proxy-connection", "transfer-encoding"):
        assert hop not in h, (hop, j)


def test_post_bodies_both_protocols(ctx):
    up = ctx.upstream()
    px = ctx.remora(cfg.simple(up.port))
    body = os.urandom(300000)
    for h2 in (False, True):
        r = ctx.curl(f"http://127.0.0.1:{px.port}/up", data=body, http2=h2,
                     headers={"x-upstream-echo": "1", "content-type": "application/octet-stream"})
        assert r.status == 200 and r.body == body, (h2, r.status, len(r.body))
    # chunked request body (no content-length)
    r = ctx.curl(f"http://127.0.0.1:{px.port}/up", data=body,
                 headers={"x-upstream-echo": "1", "transfer-encoding": "chunked"})
    assert r.status == 200 and r.body == body, (r.status, len(r.body))


def _combo(ctx, down_h2, up_proto):
    up = ctx.upstream()
    px = ctx.remora(cfg.simple(up.port, up_proto))
    (total, started, done, ok, failed, errored), out = h2load(
        ctx, f"http://127.0.0.1:{px.port}/", h1=not down_h2)
    assert total == 10000 and ok == 10000 and failed == 0 and errored == 0, out
    assert stat(ctx, px, "cluster.backend.upstream_rq_total") == 10000
    # upstream connections are pooled: HTTP/1.1 needs one per concurrent request (10 x 10),
    # HTTP/2 multiplexes them all on one
    cx = stat(ctx, px, "cluster.backend.upstream_cx_total")
    assert cx <= (100 if up_proto == "h1" else 2), f"{cx} upstream connections for 10000 requests"


def test_h2load_h1_to_h1(ctx):
    _combo(ctx, False, "h1")


def test_h2load_h1_to_h2(ctx):
    _combo(ctx, False, "h2")


def test_h2load_h2_to_h1(ctx):
    _combo(ctx, True, "h1")


def test_h2load_h2_to_h2(ctx):
    _combo(ctx, True, "h2")


def test_local_replies(ctx):
    dead = free_port()
    up = ctx.upstream()
    y = cfg.bootstrap("""
              - match: { prefix: "/direct" }
                direct_response: { status: 418, body: { inline_string: "teapot" } }
              - match: { prefix: "/empty" }
                route: { cluster: empty }
              - match: { prefix: "/dead" }
                route: { cluster: dead }
              - match: { prefix: "/nocluster" }
                route: { cluster_header: x-cluster }
              - match: { prefix: "/ok" }
                route: { cluster: backend }""",
                      [cfg.cluster("empty", []), cfg.cluster("dead", [dead]),
                       cfg.cluster("backend", [up.port])])
    px = ctx.remora(y)
    base = f"http://127.0.0.1:{px.port}"
    r = ctx.curl(base + "/nowhere-at-all-xyz")  # no route matches: 404 NR
    assert r.status == 404, r
    r = ctx.curl(base + "/direct")
    assert r.status == 418 and r.body == b"teapot", r
    r = ctx.curl(base + "/empty")
    assert r.status == 503 and b"no healthy upstream" in r.body, r
    r = ctx.curl(base + "/dead")
    assert r.status == 503 and b"connection failure" in r.body, r
    r = ctx.curl(base + "/nocluster", headers={"x-cluster": "nope"})
    assert r.status == 503, r
    r = ctx.curl(base + "/ok", headers={"x-upstream-reset": "before-headers"})
    assert r.status in (502, 503) and b"reset" in r.body, r
    # gRPC requests get trailers-only local replies with grpc-status
    r = ctx.curl(base + "/empty", http2=True, headers={"content-type": "application/grpc"})
    assert r.status == 200 and r.headers.get("grpc-status") == "14", r
    assert stat(ctx, px, "http.ingress_http.downstream_rq_5xx") >= 3
    assert stat(ctx, px, "cluster.dead.upstream_cx_connect_fail") >= 1


def test_route_rewrites_and_header_mutations(ctx):
    up = ctx.upstream()
    y = cfg.bootstrap("""
              - match: { prefix: "/api/" }
                route: { cluster: backend, prefix_rewrite: "/v2/", host_rewrite_literal: "svc.internal" }
                request_headers_to_add:
                - header: { key: x-added, value: yes }
                request_headers_to_remove: [x-secret]
                response_headers_to_add:
                - header: { key: x-resp, value: added }
                response_headers_to_remove: [x-upstream-name]
              - match: { path: "/exact", headers: [{ name: x-env, string_match: { exact: canary } }] }
                direct_response: { status: 200, body: { inline_string: "canary" } }
              - match: { safe_regex: { regex: "/re/[0-9]+" } }
                direct_response: { status: 200, body: { inline_string: "regex" } }""",
                      [cfg.cluster("backend", [up.port])])
    px = ctx.remora(y)
    base = f"http://127.0.0.1:{px.port}"
    r = ctx.curl(base + "/api/items", headers={"x-secret": "s", "x-upstream-echo-request": "1"})
    assert r.status == 200, r
    j = json.loads(r.body)
    assert j["path"] == "/v2/items", j
    assert j["authority"] == "svc.internal", j
    assert j["headers"].get("x-added") == "yes" and "x-secret" not in j["headers"], j
    assert r.headers.get("x-resp") == "added" and "x-upstream-name" not in r.headers, r
    assert ctx.curl(base + "/exact", headers={"x-env": "canary"}).body == b"canary"
    assert ctx.curl(base + "/exact").status == 404
    assert ctx.curl(base + "/re/123").body == b"regex"
    assert ctx.curl(base + "/re/abc").status == 404


def test_round_robin_and_weights(ctx):
    a, b = ctx.upstream(name="a"), ctx.upstream(name="b")
    px = ctx.remora(cfg.bootstrap("""
              - match: { prefix: "/" }
                route: { cluster: backend }""", [cfg.cluster("backend", [a.port, b.port])]))
    seen = [ctx.curl(f"http://127.0.0.1:{px.port}/").headers.get("x-upstream-name")
            for _ in range(10)]
    assert seen.count("a") == 5 and seen.count("b") == 5, seen


def test_weighted_clusters(ctx):
    a, b = ctx.upstream(name="a"), ctx.upstream(name="b")
    px = ctx.remora(cfg.bootstrap("""
              - match: { prefix: "/" }
                route:
                  weighted_clusters:
                    clusters:
                    - { name: ca, weight: 90 }
                    - { name: cb, weight: 10 }""",
                                  [cfg.cluster("ca", [a.port]), cfg.cluster("cb", [b.port])]))
    seen = [ctx.curl(f"http://127.0.0.1:{px.port}/").headers.get("x-upstream-name")
            for _ in range(100)]
    assert 70 <= seen.count("a") <= 99 and seen.count("b") >= 1, seen


def test_malformed_http1(ctx):
    up = ctx.upstream()
    px = ctx.remora(cfg.simple(up.port))

    def raw(data):
        with socket.create_connection(("127.0.0.1", px.port), timeout=5) as s:
            s.sendall(data)
            out = b""
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    out += chunk
            except socket.timeout:
                pass
            return out

    assert raw(b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400"), "bad request line"
    smuggle = (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert raw(smuggle).startswith(b"HTTP/1.1 400"), "CL+TE"
    big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n"
    assert raw(big).startswith(b"HTTP/1.1 431"), "oversized headers"
    # still serving
    assert ctx.curl(f"http://127.0.0.1:{px.port}/").status == 200


def test_http10_and_keepalive(ctx):
    up = ctx.upstream()
    px = ctx.remora(cfg.simple(up.port))
    r = ctx.curl(f"http://127.0.0.1:{px.port}/", "--http1.0",
                 headers={"x-upstream-body-size": "100"})
    assert r.status == 200 and len(r.body) == 100, r
    # keep-alive: two URLs on one curl invocation reuse the connection
    r = ctx.run(["curl", "-sS", "-v", "-o", "/dev/null", "-o", "/dev/null",
                 f"http://127.0.0.1:{px.port}/a", f"http://127.0.0.1:{px.port}/b"])
    assert b"Re-using existing connection" in r.stderr or b"Reusing existing" in r.stderr, r.stderr


def test_big_download_slow_reader_bounded_rss(ctx):
    up = ctx.upstream()
    px = ctx.remora(cfg.simple(up.port))
    size = 50 * 1024 * 1024
    p = subprocess.Popen(["curl", "-sS", "--limit-rate", "20M", "-o", "/dev/null", "-w",
                          "%{size_download}", "-H", f"x-upstream-body-size: {size}",
                          f"http://127.0.0.1:{px.port}/big"], stdout=subprocess.PIPE)
    peak = 0
    while p.poll() is None:
        with open(f"/proc/{px.p.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    peak = max(peak, int(line.split()[1]))
        time.sleep(0.1)
    out = p.stdout.read().decode()
    assert p.returncode == 0 and int(out) == size, out
    assert peak < 80 * 1024, f"remora RSS peaked at {peak} KiB while relaying 50 MB"


def test_big_upload_bounded_rss(ctx):
    up = ctx.upstream()
    px = ctx.remora(cfg.simple(up.port))
    path = os.path.join(ctx.tmp, "up.bin")
    with open(path, "wb") as f:
        f.write(os.urandom(1 << 20) * 50)
    r = ctx.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_upload}",
                 "--data-binary", "@" + path, f"http://127.0.0.1:{px.port}/up"], timeout=120)
    code, sent = r.stdout.decode().split()
    assert code == "200" and int(sent) == 50 << 20, r


def test_bad_bootstrap_exits_1_naming_field(ctx):
    path = os.path.join(ctx.tmp, "bad.yaml")
    with open(path, "w") as f:
        f.write(cfg.simple(1234).replace("lb_policy: ROUND_ROBIN", "lb_policy: FASTEST")
                .replace("{admin}", "0").replace("{port0}", "0"))
    r = ctx.run([ctx.bin("remora"), "-c", path, "--mode", "validate"])
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert "static_resources.clusters[0].lb_policy" in err and "FASTEST" in err, err
    with open(path, "w") as f:
        f.write(cfg.simple(1234).replace("{admin}", "0").replace("{port0}", "0")
                .replace("stat_prefix: ingress_http", "stat_prefix: ingress_http\n          bogus_field: 1"))
    r = ctx.run([ctx.bin("remora"), "-c", path])
    assert r.returncode == 1 and b"bogus_field" in r.stderr, r.stderr
    good = os.path.join(ctx.tmp, "good.yaml")
    with open(good, "w") as f:
        f.write(cfg.simple(1234).replace("{admin}", "0").replace("{port0}", "0"))
    r = ctx.run([ctx.bin("remora"), "-c", good, "--mode", "validate"])
    assert r.returncode == 0, r.stderr


def test_sigterm_drains_and_exits_0(ctx):
    up = ctx.upstream()
    px = ctx.remora(cfg.simple(up.port))
    # a request in flight during shutdown still completes
    p = subprocess.Popen(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                          "x-upstream-delay-ms: 500", f"http://127.0.0.1:{px.port}/slow"],
                         stdout=subprocess.PIPE)
    time.sleep(0.2)
    rc = ctx.stop(px)
    assert rc == 0, px.output()
    assert p.wait(10) == 0 and p.stdout.read() == b"200"


def test_grpc_unary_and_bidi_through_proxy(ctx):
    up = ctx.upstream()
    px = ctx.remora(cfg.simple(up.port, "h2"))
    script = r"""
import grpc, sys
ch = grpc.insecure_channel(sys.argv[1])
u = ch.unary_unary('/echo.Echo/Unary', request_serializer=lambda b: b, response_deserializer=lambda b: b)
assert u(b'hello', timeout=10) == b'hello'
s = ch.stream_stream('/echo.Echo/Bidi', request_serializer=lambda b: b, response_deserializer=lambda b: b)
msgs = [b'm%d' % i for i in range(50)]
got = list(s(iter(msgs), timeout=10))
assert got == msgs, got
print('ok')
"""
    r = ctx.run(["/usr/bin/python3", "-c", script, f"127.0.0.1:{px.port}"], timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == b"ok", (r.stdout, r.stderr[-2000:])


def test_xff_with_use_remote_address(ctx):
    up = ctx.upstream()
    y = cfg.bootstrap("""
              - match: { prefix: "/" }
                route: { cluster: backend }""", [cfg.cluster("backend", [up.port])],
                      hcm_extra="\n          use_remote_address: true")
    px = ctx.remora(y)
    r = ctx.curl(f"http://127.0.0.1:{px.port}/echo-request",
                 headers={"x-forwarded-for": "10.1.2.3", "x-forwarded-proto": "https",
                          "x-request-id": "external-id"})
    h = json.loads(r.body)["headers"]
    assert h["x-forwarded-for"] == "10.1.2.3, 127.0.0.1", h
    assert h["x-forwarded-proto"] == "http", h  # an edge proxy does not trust the client's
    assert h["x-request-id"] != "external-id", h  # nor its request id
    px2 = ctx.remora(cfg.simple(up.port), name="internal")
    h = json.loads(ctx.curl(f"http://127.0.0.1:{px2.port}/echo-request",
                            headers={"x-forwarded-proto": "https",
                                     "x-request-id": "external-id"}).body)["headers"]
    assert h["x-forwarded-proto"] == "https" and h["x-request-id"] == "external-id", h
    assert "x-forwarded-for" not in h, h


def test_h2_protocol_error_gets_goaway_and_proxy_keeps_serving(ctx):
    up = ctx.upstream()
    px = ctx.remora(cfg.simple(up.port))
    with socket.create_connection(("127.0.0.1", px.port), timeout=5) as s:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        # a DATA frame on stream 0 is a connection error (PROTOCOL_ERROR)
        s.sendall(b"\x00\x00\x04\x00\x00\x00\x00\x00\x00abcd")
        got = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
        except socket.timeout:
            pass
    frames, i = [], 0
    while i + 9 <= len(got):
        ln = int.from_bytes(got[i:i + 3], "big")
        frames.append((got[i + 3], got[i + 9:i + 9 + ln]))
        i += 9 + ln
    goaways = [p for t, p in frames if t == 0x7]
    assert goaways, frames
    assert int.from_bytes(goaways[0][4:8], "big") == 1, goaways  # PROTOCOL_ERROR
    assert ctx.curl(f"http://127.0.0.1:{px.port}/", http2=True).status == 200


def test_streaming_response_is_not_buffered(ctx):
    """The first bytes of a slow, long response reach the client before the response ends."""
    up = ctx.upstream()
    px = ctx.remora(cfg.simple(up.port, "h2"))
    script = r"""
import sys, grpc, time
ch = grpc.insecure_channel(sys.argv[1])
s = ch.stream_stream('/echo.Echo/Bidi', request_serializer=lambda b: b, response_deserializer=lambda b: b)
def gen(q):
    for i in range(5):
        yield b'ping%d' % i
        q.wait()
import threading
ev = threading.Event()
class Q:
    def wait(self):
        ev.wait(5); ev.clear()
it = s(gen(Q()), timeout=20)
for i in range(5):
    m = next(it)
    assert m == b'ping%d' % i, m
    ev.set()
print('ok')
"""
    r = ctx.run(["/usr/bin/python3", "-c", script, f"127.0.0.1:{px.port}"], timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == b"ok", (r.stdout, r.stderr[-2000:])
