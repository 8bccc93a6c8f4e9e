"""Circuit breaking, retries and timeouts end to end, with Envoy's semantics: real remora, the
bundled upstream, curl, h2load, and a grpcio server/client (Debian's python3-grpcio)."""
import json
import os
import re
import socket
import subprocess
import time
import uuid

import remora_cfg as cfg
from harness import TestFailure, free_port, wait_port

GOOD_VHOST = ("\n              include_request_attempt_count: true"
              "\n              include_attempt_count_in_response: true")


# ---- helpers -----------------------------------------------------------------------------------

def stats(ctx, px):
    """Every stat of /stats as a dict name -> int."""
    r = ctx.curl(f"http://127.0.0.1:{px.admin}/stats")
    assert r.status == 200, r
    out = {}
    for line in r.body.decode().splitlines():
        k, _, v = line.partition(": ")
        if re.fullmatch(r"-?\d+", v):
            out[k] = int(v)
    return out


def cs(ctx, px, name, cluster="backend"):
    s = stats(ctx, px)
    key = f"cluster.{cluster}.{name}"
    if key not in s:
        raise TestFailure(f"stat {key} not found")
    return s[key]


def key():
    return uuid.uuid4().hex


def stop_clean(ctx, px):
    """SIGTERM: remora drains and exits 0 (under ASan: no leak, no error report)."""
    rc = ctx.stop(px)
    assert rc == 0, f"remora exited {rc}:\n{px.output()[-3000:]}"


def h2load_cmd(url, n, c, m=1, headers=None, h1=False):
    args = ["h2load", "-n", str(n), "-c", str(c), "-m", str(m)] + (["--h1"] if h1 else [])
    for k, v in (headers or {}).items():
        args += ["-H", f"{k}: {v}"]
    return args + [url]


def h2load_codes(out):
    """(2xx, 3xx, 4xx, 5xx) and the done count of an h2load report."""
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    d = re.search(r"requests: \d+ total, \d+ started, (\d+) done", out)
    assert m and d, out
    return tuple(int(x) for x in m.groups()), int(d.group(1))


def run_h2load(ctx, url, n, c, m=1, headers=None, h1=False):
    r = ctx.run(h2load_cmd(url, n, c, m, headers, h1), timeout=120)
    return h2load_codes(r.stdout.decode())


class BlackHole:
    """A TCP listener that never accepts: connects succeed (backlog), nothing is ever answered."""

    def __init__(self):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.s.bind(("127.0.0.1", 0))
        self.s.listen(256)
        self.port = self.s.getsockname()[1]

    def close(self):
        self.s.close()


def validate(ctx, yaml_text):
    """remora --mode validate on a bootstrap: (exit code, stderr)."""
    path = os.path.join(ctx.tmp, f"v{uuid.uuid4().hex[:6]}.yaml")
    with open(path, "w") as f:
        f.write(yaml_text.replace("{admin}", "0").replace("{port0}", "0"))
    r = ctx.run([ctx.bin("remora"), "-c", path, "--mode", "validate"])
    return r.returncode, r.stderr.decode()


def route(extra, cluster="backend", prefix="/"):
    """One route to <cluster> with RouteAction lines <extra> (YAML at 18 spaces)."""
    return """
              - match: { prefix: "%s" }
                route:
                  cluster: %s%s""" % (prefix, cluster, extra)


def breakers(thresholds):
    return "\n    circuit_breakers:\n      thresholds:\n" + "".join(
        "      - " + t + "\n" for t in thresholds).rstrip("\n")


# ---- retries -----------------------------------------------------------------------------------

def test_retry_5xx_then_success_with_attempt_count(ctx):
    up = ctx.upstream(name="b1")
    y = cfg.bootstrap(route("""
                  retry_policy: { retry_on: "5xx", num_retries: 2 }""", prefix="/p") +
                      route("", prefix="/"),
                      [cfg.cluster("backend", [up.port])], vhost_extra=GOOD_VHOST)
    px = ctx.remora(y)
    base = f"http://127.0.0.1:{px.port}"
    # fails twice, the third attempt succeeds; the upstream sees the attempt number
    r = ctx.curl(base + "/p/x", headers={"x-upstream-fail-first": "2", "x-upstream-key": key(),
                                         "x-upstream-echo-request": "1"})
    assert r.status == 200, r
    j = json.loads(r.body)
    assert j["headers"].get("x-envoy-attempt-count") == "3", j
    assert r.headers.get("x-envoy-attempt-count") == "3", r
    s = stats(ctx, px)
    assert s["cluster.backend.upstream_rq_retry"] == 2, s
    assert s["cluster.backend.upstream_rq_retry_success"] == 1, s
    assert s["cluster.backend.upstream_rq_total"] == 3, s
    assert s["cluster.backend.upstream_rq_2xx"] == 1 and s["cluster.backend.upstream_rq_5xx"] == 0, s
    assert s["cluster.backend.upstream_rq_retry_backoff_exponential"] == 2, s
    # more failures than retries: the last upstream response is returned (not a local reply)
    r = ctx.curl(base + "/p/x", headers={"x-upstream-fail-first": "5", "x-upstream-key": key()})
    assert r.status == 503 and r.headers.get("x-upstream-name") == "b1", r
    assert r.headers.get("x-envoy-attempt-count") == "3", r
    s = stats(ctx, px)
    assert s["cluster.backend.upstream_rq_retry_limit_exceeded"] == 1, s
    assert s["cluster.backend.upstream_rq_retry"] == 4, s
    # x-envoy-max-retries overrides num_retries; the x-envoy-* retry headers are consumed
    r = ctx.curl(base + "/p/x",
                 headers={"x-upstream-fail-first": "3", "x-upstream-key": key(),
                          "x-upstream-echo-request": "1",
                          "x-envoy-max-retries": "3", "x-envoy-upstream-rq-timeout-ms": "5000"})
    assert r.status == 200, r
    h = json.loads(r.body)["headers"]
    assert h.get("x-envoy-attempt-count") == "4", h
    assert not [k for k in h if k in ("x-envoy-max-retries", "x-envoy-upstream-rq-timeout-ms")], h
    # a route without a policy: no retry, unless the request asks with x-envoy-retry-on
    r = ctx.curl(base + "/x", headers={"x-upstream-fail-first": "1", "x-upstream-key": key()})
    assert r.status == 503 and r.headers.get("x-envoy-attempt-count") == "1", r
    r = ctx.curl(base + "/echo-request", headers={"x-upstream-fail-first": "1",
                                                  "x-upstream-key": key(),
                                                  "x-envoy-retry-on": "gateway-error"})
    assert r.status == 200, r
    h = json.loads(r.body)["headers"]
    assert h.get("x-envoy-attempt-count") == "2" and "x-envoy-retry-on" not in h, h
    # retriable-status-codes from the request header
    r = ctx.curl(base + "/x", headers={"x-upstream-fail-first": "1", "x-upstream-key": key(),
                                       "x-upstream-fail-status": "418",
                                       "x-envoy-retry-on": "retriable-status-codes",
                                       "x-envoy-retriable-status-codes": "409, 418"})
    assert r.status == 200 and r.headers.get("x-envoy-attempt-count") == "2", r
    # a 4xx is not retried under 5xx
    r = ctx.curl(base + "/p/x", headers={"x-upstream-fail-first": "1", "x-upstream-key": key(),
                                         "x-upstream-fail-status": "404"})
    assert r.status == 404 and r.headers.get("x-envoy-attempt-count") == "1", r
    stop_clean(ctx, px)


def test_retry_moves_to_another_host(ctx):
    good = ctx.upstream(name="good")
    dead = free_port()  # refuses connections
    y = cfg.bootstrap(route("""
                  retry_policy:
                    retry_on: connect-failure
                    num_retries: 1
                    host_selection_retry_max_attempts: 25
                    retry_host_predicate:
                    - name: envoy.retry_host_predicates.previous_hosts
                      typed_config:
                        "@type": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"""),
                      [cfg.cluster("backend", [dead, good.port], lb="RANDOM")])
    px = ctx.remora(y)
    for i in range(30):
        r = ctx.curl(f"http://127.0.0.1:{px.port}/r{i}")
        assert r.status == 200 and r.headers.get("x-upstream-name") == "good", (i, r)
    s = stats(ctx, px)
    # every request whose first pick was the dead host was retried once, on the good host
    fails = s["cluster.backend.upstream_cx_connect_fail"]
    assert fails >= 1, s
    assert s["cluster.backend.upstream_rq_retry"] == fails, s
    assert s["cluster.backend.upstream_rq_retry_success"] == fails, s
    assert s["cluster.backend.upstream_rq_2xx"] == 30, s
    stop_clean(ctx, px)


def test_per_try_timeout_then_success_on_another_host(ctx):
    good = ctx.upstream(name="good")
    hole = BlackHole()
    try:
        y = cfg.bootstrap(route("""
                  timeout: 5s
                  retry_policy:
                    retry_on: reset
                    num_retries: 1
                    per_try_timeout: 0.3s
                    retry_host_predicate: [{ name: envoy.retry_host_predicates.previous_hosts }]""") +
                          route("""
                  timeout: 5s
                  retry_policy: { retry_on: "reset", num_retries: 2, per_try_timeout: 0.2s }""",
                                cluster="holes", prefix="/holes"),
                          [cfg.cluster("backend", [hole.port, good.port]),
                           cfg.cluster("holes", [hole.port])])
        y = y.replace('prefix: "/" }', 'prefix: "/b" }', 1)  # /b... -> backend, /holes -> holes
        px = ctx.remora(y)
        base = f"http://127.0.0.1:{px.port}"
        for i in range(6):
            t = time.monotonic()
            r = ctx.curl(base + f"/b{i}")
            assert r.status == 200 and r.headers.get("x-upstream-name") == "good", (i, r)
            assert time.monotonic() - t < 2.0, (i, time.monotonic() - t)
        s = stats(ctx, px)
        pt = s["cluster.backend.upstream_rq_per_try_timeout"]
        assert pt >= 1, s  # round robin: every other first attempt hits the black hole
        assert s["cluster.backend.upstream_rq_retry"] == pt, s
        assert s["cluster.backend.upstream_rq_timeout"] == 0, s
        # every attempt times out: 504 UT after num_retries + 1 per-try timeouts
        t = time.monotonic()
        r = ctx.curl(base + "/holes")
        took = time.monotonic() - t
        assert r.status == 504 and r.body == b"upstream request timeout", r
        assert 0.55 < took < 2.5, took
        s = stats(ctx, px)
        assert s["cluster.holes.upstream_rq_per_try_timeout"] == 3, s
        assert s["cluster.holes.upstream_rq_retry"] == 2, s
        assert s["cluster.holes.upstream_rq_retry_limit_exceeded"] == 1, s
        stop_clean(ctx, px)
    finally:
        hole.close()


def test_route_timeout_504_covers_retries(ctx):
    up = ctx.upstream(name="b1")
    hole = BlackHole()
    try:
        y = cfg.bootstrap(route("\n                  timeout: 0.5s", prefix="/slow") +
                          route("""
                  timeout: 0.7s
                  retry_policy: { retry_on: "5xx", num_retries: 10, per_try_timeout: 0.3s }""",
                                cluster="holes", prefix="/holes") +
                          route("\n                  timeout: 10s", prefix="/"),
                          [cfg.cluster("backend", [up.port]), cfg.cluster("holes", [hole.port])])
        px = ctx.remora(y)
        base = f"http://127.0.0.1:{px.port}"
        t = time.monotonic()
        r = ctx.curl(base + "/slow", headers={"x-upstream-delay-ms": "3000"})
        assert r.status == 504 and r.body == b"upstream request timeout", r
        assert time.monotonic() - t < 2.0
        assert cs(ctx, px, "upstream_rq_timeout") == 1
        # x-envoy-upstream-rq-timeout-ms overrides the route's 10 s
        t = time.monotonic()
        r = ctx.curl(base + "/x", headers={"x-upstream-delay-ms": "3000",
                                           "x-envoy-upstream-rq-timeout-ms": "200"})
        assert r.status == 504 and time.monotonic() - t < 2.0, r
        assert cs(ctx, px, "upstream_rq_timeout") == 2
        # without it the slow response arrives
        r = ctx.curl(base + "/x", headers={"x-upstream-delay-ms": "300"})
        assert r.status == 200, r
        # the route timeout bounds all the attempts: 0.7 s whatever num_retries says
        t = time.monotonic()
        r = ctx.curl(base + "/holes")
        took = time.monotonic() - t
        assert r.status == 504, r
        assert 0.6 < took < 1.6, took
        s = stats(ctx, px)
        assert s["cluster.holes.upstream_rq_timeout"] == 1, s
        assert 1 <= s["cluster.holes.upstream_rq_per_try_timeout"] <= 3, s
        stop_clean(ctx, px)
    finally:
        hole.close()


def _retry_overflow(ctx, thresholds):
    up = ctx.upstream(name="b1")
    y = cfg.bootstrap(route("""
                  retry_policy: { retry_on: "5xx", num_retries: 3 }"""),
                      [cfg.cluster("backend", [up.port], extra=breakers([thresholds]))])
    px = ctx.remora(y)
    # 10 concurrent requests, all first attempts fail together after 600 ms; only 2 retries
    # may be in flight: 2 succeed on retry, 8 get the upstream's 503 back
    codes, done = run_h2load(ctx, f"http://127.0.0.1:{px.port}/", 10, 10, 1,
                             {"x-upstream-fail-first": "10", "x-upstream-key": key(),
                              "x-upstream-delay-ms": "600"})
    assert done == 10 and codes == (2, 0, 0, 8), codes
    s = stats(ctx, px)
    assert s["cluster.backend.upstream_rq_retry"] == 2, s
    assert s["cluster.backend.upstream_rq_retry_overflow"] == 8, s
    assert s["cluster.backend.upstream_rq_retry_success"] == 2, s
    assert s["cluster.backend.circuit_breakers.default.rq_retry_open"] == 0, s
    stop_clean(ctx, px)


def test_max_retries_overflow(ctx):
    _retry_overflow(ctx, "max_retries: 2")


def test_retry_budget_overrides_max_retries(ctx):
    _retry_overflow(ctx, "{ max_retries: 100, retry_budget: { budget_percent: { value: 0 }, "
                         "min_retry_concurrency: 2 } }")


def test_retry_replays_body_and_gives_up_past_the_buffer_limit(ctx):
    up = ctx.upstream(name="b1")
    y = cfg.bootstrap(route("""
                  retry_policy: { retry_on: "5xx", num_retries: 1 }
                per_request_buffer_limit_bytes: 65536"""), [cfg.cluster("backend", [up.port])])
    px = ctx.remora(y)
    base = f"http://127.0.0.1:{px.port}"
    small = os.urandom(40000)
    for h2 in (False, True):
        r = ctx.curl(base + "/up", data=small, http2=h2,
                     headers={"x-upstream-fail-first": "1", "x-upstream-key": key(),
                              "x-upstream-echo": "1", "content-type": "application/octet-stream"})
        assert r.status == 200 and r.body == small, (h2, r.status, len(r.body))
    assert cs(ctx, px, "upstream_rq_retry") == 2
    # a body past the limit is not kept, so the failure is not retried (never a truncated replay)
    big = os.urandom(300000)
    r = ctx.curl(base + "/up", data=big, headers={"x-upstream-fail-first": "1",
                                                  "x-upstream-key": key(),
                                                  "content-type": "application/octet-stream"})
    assert r.status == 503 and r.headers.get("x-upstream-name") == "b1", r
    s = stats(ctx, px)
    assert s["cluster.backend.upstream_rq_retry"] == 2, s
    assert s["cluster.backend.retry_or_shadow_abandoned"] == 1, s
    assert s["cluster.backend.upstream_rq_total"] == 5, s
    # the big body itself still goes through whole when nothing fails
    r = ctx.curl(base + "/up", data=big, headers={"x-upstream-echo": "1",
                                                  "content-type": "application/octet-stream"})
    assert r.status == 200 and r.body == big, (r.status, len(r.body))
    stop_clean(ctx, px)


def test_retry_replays_body_to_http2_upstream(ctx):
    up = ctx.upstream(name="b1")
    y = cfg.bootstrap(route("""
                  retry_policy: { retry_on: "5xx", num_retries: 2 }"""),
                      [cfg.cluster("backend", [up.port], "h2")])
    px = ctx.remora(y)
    body = os.urandom(200000)  # within the listener's 1 MiB buffer limit
    for h2 in (False, True):
        r = ctx.curl(f"http://127.0.0.1:{px.port}/up", data=body, http2=h2,
                     headers={"x-upstream-fail-first": "2", "x-upstream-key": key(),
                              "x-upstream-echo": "1", "content-type": "application/octet-stream"})
        assert r.status == 200 and r.body == body, (h2, r.status, len(r.body))
    s = stats(ctx, px)
    assert s["cluster.backend.upstream_rq_retry"] == 4, s
    assert s["cluster.backend.upstream_cx_http2_total"] == 1, s  # resets kept the connection
    stop_clean(ctx, px)


GRPC_SERVER = r"""
import grpc, sys, threading, time
from concurrent import futures
calls = {}
lock = threading.Lock()
def echo(req, ctx):
    md = dict(ctx.invocation_metadata())
    k, fail = md.get('x-key', ''), int(md.get('x-fail', '0'))
    with lock:
        calls[k] = calls.get(k, 0) + 1
        n = calls[k]
    if n <= fail:  # nothing sent yet: grpcio answers trailers-only
        ctx.abort(getattr(grpc.StatusCode, md.get('x-code', 'UNAVAILABLE')), 'try again')
    return req
h = grpc.method_handlers_generic_handler('echo.Echo', {
    'Unary': grpc.unary_unary_rpc_method_handler(echo, request_deserializer=None,
                                                 response_serializer=None)})
srv = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
srv.add_generic_rpc_handlers((h,))
srv.add_insecure_port('127.0.0.1:' + sys.argv[1])
srv.start()
srv.wait_for_termination()
"""

GRPC_CLIENT = r"""
import grpc, sys
ch = grpc.insecure_channel(sys.argv[1])
u = ch.unary_unary('/echo.Echo/Unary', request_serializer=lambda b: b,
                   response_deserializer=lambda b: b)
out = []
for path, md in [('/retry', (('x-key', 'a'), ('x-fail', '2'))),
                 ('/noretry', (('x-key', 'b'), ('x-fail', '1'))),
                 ('/noretry', (('x-key', 'c'), ('x-fail', '1'), ('x-envoy-retry-grpc-on', 'unavailable'))),
                 ('/retry', (('x-key', 'd'), ('x-fail', '1'), ('x-code', 'INTERNAL'))),
                 ('/retry', (('x-key', 'e'), ('x-fail', '5')))]:
    md = md + (('x-path', path),)
    try:
        u(b'hi', timeout=10, metadata=md)
        out.append('OK')
    except grpc.RpcError as e:
        out.append(e.code().name)
print(' '.join(out))
"""


def test_grpc_retry_on_unavailable(ctx):
    port = free_port()
    srv = ctx.spawn(["/usr/bin/python3", "-c", GRPC_SERVER, str(port)], "grpc-server")
    wait_port(port, proc=srv.p)
    up = ctx.upstream(name="b1")
    y = cfg.bootstrap("""
              - match: { prefix: "/", headers: [{ name: x-path, string_match: { exact: /retry } }] }
                route:
                  cluster: grpc
                  retry_policy: { retry_on: "unavailable,cancelled", num_retries: 2 }
              - match: { prefix: "/", headers: [{ name: x-path, string_match: { exact: /upstream } }] }
                route:
                  cluster: backend
                  retry_policy: { retry_on: "unavailable", num_retries: 2 }
              - match: { prefix: "/" }
                route: { cluster: grpc }""",
                      [cfg.cluster("grpc", [port], "h2"), cfg.cluster("backend", [up.port], "h2")])
    px = ctx.remora(y)
    r = ctx.run(["/usr/bin/python3", "-c", GRPC_CLIENT, f"127.0.0.1:{px.port}"], timeout=60)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    # retried twice -> OK; no policy -> UNAVAILABLE; x-envoy-retry-grpc-on -> OK;
    # INTERNAL is not in retry_on -> INTERNAL; more failures than retries -> UNAVAILABLE
    assert r.stdout.decode().split() == ["OK", "UNAVAILABLE", "OK", "INTERNAL", "UNAVAILABLE"], \
        r.stdout
    s = stats(ctx, px)
    assert s["cluster.grpc.upstream_rq_retry"] == 2 + 1 + 2, s
    assert s["cluster.grpc.upstream_rq_retry_limit_exceeded"] == 1, s
    # grpc-status in trailers (not trailers-only) is not judged, as in Envoy
    script = GRPC_CLIENT.split("out = []")[0] + r"""
try:
    u(b'hi', timeout=10, metadata=(('x-path', '/upstream'), ('x-upstream-fail-first', '1'),
                                   ('x-upstream-key', sys.argv[2]),
                                   ('x-upstream-fail-grpc-status', '14')))
    print('OK')
except grpc.RpcError as e:
    print(e.code().name)
"""
    r = ctx.run(["/usr/bin/python3", "-c", script, f"127.0.0.1:{px.port}", key()], timeout=60)
    assert r.stdout.decode().split() == ["UNAVAILABLE"], (r.stdout, r.stderr[-2000:])
    assert cs(ctx, px, "upstream_rq_retry") == 0
    stop_clean(ctx, px)


# ---- circuit breaking ----------------------------------------------------------------------------

def test_max_requests_overflow_exact(ctx):
    up = ctx.upstream(name="b1")
    y = cfg.bootstrap(route("") + route("", cluster="closed", prefix="/closed"),
                      [cfg.cluster("backend", [up.port], extra=breakers(
                          ["{ max_requests: 10, track_remaining: true }"])),
                       cfg.cluster("closed", [up.port], extra=breakers(["max_requests: 0"]))])
    y = y.replace('prefix: "/" }', 'prefix: "/b" }', 1)
    px = ctx.remora(y)
    base = f"http://127.0.0.1:{px.port}"
    r = ctx.curl(f"http://127.0.0.1:{px.admin}/clusters")
    assert "backend::default_priority::max_requests::10" in r.body.decode(), r
    # 100 slow requests at once: exactly the 90 above the limit are refused, locally
    p = subprocess.Popen(h2load_cmd(base + "/b", 100, 100, 1, {"x-upstream-delay-ms": "2500"}),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(1.0)
        s = stats(ctx, px)
        assert s["cluster.backend.upstream_rq_active"] == 10, s
        assert s["cluster.backend.circuit_breakers.default.rq_open"] == 1, s
        assert s["cluster.backend.circuit_breakers.default.remaining_rq"] == 0, s
        r = ctx.curl(base + "/b/one-more")
        assert r.status == 503 and r.headers.get("x-envoy-overloaded") == "true", r
        assert r.body == (b"upstream connect error or disconnect/reset before headers. "
                          b"reset reason: overflow"), r
        out, _ = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    codes, done = h2load_codes(out.decode())
    assert done == 100 and codes == (10, 0, 0, 90), (codes, out.decode()[-800:])
    s = stats(ctx, px)
    assert s["cluster.backend.upstream_rq_pending_overflow"] == 91, s
    assert s["cluster.backend.upstream_rq_total"] == 10, s
    assert s["cluster.backend.circuit_breakers.default.rq_open"] == 0, s
    assert s["cluster.backend.circuit_breakers.default.remaining_rq"] == 10, s
    assert s["http.ingress_http.downstream_rq_5xx"] == 91, s
    # max_requests 0: every request overflows
    r = ctx.curl(base + "/closed")
    assert r.status == 503 and r.headers.get("x-envoy-overloaded") == "true", r
    assert cs(ctx, px, "upstream_rq_pending_overflow", "closed") == 1
    stop_clean(ctx, px)


def _pending_and_connections(ctx, extra):
    up = ctx.upstream(name="b1")
    y = cfg.bootstrap(route(""), [cfg.cluster("backend", [up.port], extra=extra)])
    px = ctx.remora(y)
    url = f"http://127.0.0.1:{px.port}/"
    assert ctx.curl(url).status == 200  # one idle keep-alive connection in the pool
    # 20 at once over one HTTP/1.1 connection: 1 on it, 5 wait, 14 overflow
    codes, done = run_h2load(ctx, url, 20, 20, 1, {"x-upstream-delay-ms": "400"})
    assert done == 20 and codes == (6, 0, 0, 14), codes
    s = stats(ctx, px)
    assert s["cluster.backend.upstream_rq_pending_overflow"] == 14, s
    assert s["cluster.backend.upstream_cx_total"] == 1, s
    assert s["cluster.backend.upstream_cx_overflow"] >= 1, s
    assert s["cluster.backend.upstream_rq_pending_total"] == 6, s  # warm-up + 5
    assert s["cluster.backend.upstream_rq_pending_active"] == 0, s
    assert s["cluster.backend.circuit_breakers.default.rq_pending_open"] == 0, s
    stop_clean(ctx, px)
    return s


def test_max_pending_and_max_connections_exact(ctx):
    s = _pending_and_connections(ctx, breakers(["{ max_connections: 1, max_pending_requests: 5 }"]))
    assert s["cluster.backend.circuit_breakers.default.cx_open"] == 1, s  # the idle connection


def test_per_host_max_connections(ctx):
    s = _pending_and_connections(ctx, breakers(["max_pending_requests: 5"]) +
                                 "\n      per_host_thresholds:\n      - max_connections: 1")
    assert s["cluster.backend.circuit_breakers.default.cx_open"] == 0, s  # the cluster's is 1024


def test_priority_thresholds_and_connection_pools(ctx):
    a, b = ctx.upstream(name="a"), ctx.upstream(name="b")
    y = cfg.bootstrap(route("\n                  priority: HIGH", prefix="/high") +
                      route("", prefix="/"),
                      [cfg.cluster("backend", [a.port, b.port], extra=breakers(
                          ["{ priority: HIGH, max_requests: 0 }", "max_connection_pools: 1"]))])
    px = ctx.remora(y)
    base = f"http://127.0.0.1:{px.port}"
    # HIGH routes use the HIGH thresholds
    r = ctx.curl(base + "/high")
    assert r.status == 503 and r.headers.get("x-envoy-overloaded") == "true", r
    # DEFAULT: one connection pool only, so the second host cannot be used (503 UH)
    got = [ctx.curl(base + f"/d{i}") for i in range(4)]
    names = {r.headers.get("x-upstream-name") for r in got if r.status == 200}
    assert len(names) == 1 and sum(r.status == 200 for r in got) == 2, got
    assert all(r.body == b"no healthy upstream" for r in got if r.status != 200), got
    s = stats(ctx, px)
    assert s["cluster.backend.upstream_cx_pool_overflow"] == 2, s
    assert s["cluster.backend.upstream_rq_pending_overflow"] == 1, s
    assert s["cluster.backend.circuit_breakers.high.rq_open"] == 1, s
    assert s["cluster.backend.circuit_breakers.default.cx_pool_open"] == 1, s


# ---- config ------------------------------------------------------------------------------------

def test_unsupported_retry_and_breaker_config_rejected(ctx):
    def with_policy(p, extra=""):
        return cfg.bootstrap(route("\n                  retry_policy: " + p),
                             [cfg.cluster("backend", [1234], extra=extra)])
    cases = [
        (with_policy('{ retry_on: "5xx,bogus" }'),
         'route.retry_policy.retry_on: unknown retry condition "bogus"'),
        (with_policy("{ retry_host_predicate: [{ name: envoy.retry_host_predicates.omit_canary_hosts }] }"),
         "retry_policy.retry_host_predicate[0]"),
        (with_policy("{ retry_priority: { name: envoy.retry_priorities.previous_priorities } }"),
         "retry_policy.retry_priority"),
        (with_policy("{ rate_limited_retry_back_off: { reset_headers: [{ name: retry-after }] } }"),
         "retry_policy.rate_limited_retry_back_off"),
        (with_policy("{ retry_back_off: { base_interval: 0.1s, max_interval: 0.05s } }"),
         "retry_policy.retry_back_off.max_interval"),
        (with_policy("{ retry_on: 5xx }", extra="\n    circuit_breakers:\n      thresholds:\n"
                     "      - max_requests: 1\n      - max_retries: 1"),
         "circuit_breakers.thresholds[1].priority"),
        (with_policy("{ retry_on: 5xx }", extra="\n    circuit_breakers:\n      per_host_thresholds:\n"
                     "      - max_requests: 1"),
         "circuit_breakers.per_host_thresholds[0].max_requests"),
    ]
    for y, want in cases:
        rc, err = validate(ctx, y)
        assert rc == 1 and want in err, (want, rc, err)
    ok = with_policy('{ retry_on: "5xx, gateway-error,reset,connect-failure,retriable-4xx,'
                     'refused-stream,retriable-status-codes,retriable-headers,cancelled,'
                     'deadline-exceeded,internal,resource-exhausted,unavailable", '
                     'num_retries: 3, per_try_timeout: 1s, retriable_status_codes: [409], '
                     'retriable_headers: [{ name: x-retry, present_match: true }], '
                     'retry_back_off: { base_interval: 0.01s } }',
                     extra=breakers(["{ priority: HIGH, max_connections: 3 }",
                                     "{ max_pending_requests: 2, track_remaining: true }"]))
    rc, err = validate(ctx, ok)
    assert rc == 0, err


# ---- connection manager timeouts ---------------------------------------------------------------

def _raw_request(port, data, timeout=5.0):
    """Send raw bytes on a new connection; returns (socket, first response bytes)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    return s


def _read_until_closed(s, timeout):
    """Everything the peer sends until it closes (or <timeout>): (bytes, closed)."""
    s.settimeout(timeout)
    out = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                return out, True
            out += b
    except socket.timeout:
        return out, False
    except ConnectionResetError:
        return out, True


def test_stream_idle_timeout_and_route_override(ctx):
    up = ctx.upstream(name="b1")
    y = cfg.bootstrap(route("\n                  timeout: 10s\n                  idle_timeout: 0s",
                            prefix="/long") +
                      route("\n                  timeout: 10s", prefix="/"),
                      [cfg.cluster("backend", [up.port])],
                      hcm_extra="\n          stream_idle_timeout: 0.3s")
    px = ctx.remora(y)
    base = f"http://127.0.0.1:{px.port}"
    t = time.monotonic()
    r = ctx.curl(base + "/x", headers={"x-upstream-delay-ms": "2000"})
    assert r.status == 408 and r.body == b"stream timeout", r
    assert time.monotonic() - t < 1.5
    s = stats(ctx, px)
    assert s["http.ingress_http.downstream_rq_idle_timeout"] == 1, s
    # the route's idle_timeout (0s: none) wins over stream_idle_timeout
    r = ctx.curl(base + "/long", headers={"x-upstream-delay-ms": "800"})
    assert r.status == 200, r
    # a stream making progress is not idle
    r = ctx.curl(base + "/x", headers={"x-upstream-delay-ms": "100"})
    assert r.status == 200, r
    assert stats(ctx, px)["http.ingress_http.downstream_rq_idle_timeout"] == 1
    stop_clean(ctx, px)


def test_request_timeout_and_max_stream_duration(ctx):
    up = ctx.upstream(name="b1")
    y = cfg.bootstrap(route("\n                  timeout: 10s"),
                      [cfg.cluster("backend", [up.port])],
                      hcm_extra="\n          request_timeout: 0.4s"
                                "\n          common_http_protocol_options: { max_stream_duration: 1s }")
    px = ctx.remora(y)
    # the body never completes: 408 "request timeout"
    s = _raw_request(px.port, b"POST /up HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc")
    try:
        t = time.monotonic()
        out = b""
        s.settimeout(3.0)
        while not out.endswith(b"request timeout"):
            b = s.recv(4096)
            assert b, out
            out += b
        assert out.startswith(b"HTTP/1.1 408"), out
        assert 0.3 < time.monotonic() - t < 2.0
    finally:
        s.close()
    st = stats(ctx, px)
    assert st["http.ingress_http.downstream_rq_timeout"] == 1, st
    # complete requests are not affected by request_timeout ...
    r = ctx.curl(f"http://127.0.0.1:{px.port}/", headers={"x-upstream-delay-ms": "600"})
    assert r.status == 200, r
    # ... but max_stream_duration bounds the whole exchange
    t = time.monotonic()
    r = ctx.curl(f"http://127.0.0.1:{px.port}/", headers={"x-upstream-delay-ms": "3000"})
    assert r.status == 408 and r.body == b"downstream duration timeout", r
    assert 0.9 < time.monotonic() - t < 2.5
    st = stats(ctx, px)
    assert st["http.ingress_http.downstream_rq_max_duration_reached"] == 1, st
    assert st["http.ingress_http.downstream_rq_timeout"] == 1, st
    stop_clean(ctx, px)


def test_connection_idle_timeout_and_max_duration(ctx):
    up = ctx.upstream(name="b1")
    y = cfg.bootstrap(route(""), [cfg.cluster("backend", [up.port])],
                      hcm_extra="\n          common_http_protocol_options: { idle_timeout: 0.4s }")
    px = ctx.remora(y)
    req = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"
    t = time.monotonic()
    s = _raw_request(px.port, req)
    try:
        out, closed = _read_until_closed(s, 0.2)
        assert out.startswith(b"HTTP/1.1 200") and not closed, out
        out, closed = _read_until_closed(s, 3.0)
        assert closed and out == b"", out
        assert 0.35 < time.monotonic() - t < 2.0, time.monotonic() - t
    finally:
        s.close()
    assert stats(ctx, px)["http.ingress_http.downstream_cx_idle_timeout"] == 1
    assert ctx.stop(px) == 0, px.output()[-3000:]
    y = cfg.bootstrap(route(""), [cfg.cluster("backend", [up.port])],
                      hcm_extra="\n          common_http_protocol_options: "
                                "{ max_connection_duration: 0.5s }")
    px = ctx.remora(y, name="remora2")
    s = _raw_request(px.port, req)
    try:
        t = time.monotonic()
        answers = 0
        while time.monotonic() - t < 3.0:
            out, closed = _read_until_closed(s, 0.15)
            answers += out.count(b"HTTP/1.1 200")
            if closed:
                break
            s.sendall(req)
        assert closed, "still open after max_connection_duration"
        assert answers >= 2 and 0.4 < time.monotonic() - t < 2.5, (answers, time.monotonic() - t)
    finally:
        s.close()
    assert stats(ctx, px)["http.ingress_http.downstream_cx_max_duration_reached"] == 1
    stop_clean(ctx, px)


def test_request_headers_timeout_slowloris(ctx):
    """A client dribbling its request headers is cut off: HTTP/1.1 gets 408 and a close,
    HTTP/2 gets RST_STREAM; complete requests are unaffected."""
    import remora_cfg as rcfg
    import socket as sk
    import time as tm
    up = ctx.upstream()
    y = rcfg.bootstrap("""
              - match: { prefix: "/" }
                route: { cluster: backend }""", [rcfg.cluster("backend", [up.port])],
                       hcm_extra="\n          request_headers_timeout: 0.3s")
    px = ctx.remora(y)
    t0 = tm.monotonic()
    with sk.create_connection(("127.0.0.1", px.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        got = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
    dt = tm.monotonic() - t0
    assert got.startswith(b"HTTP/1.1 408"), got
    assert 0.25 <= dt < 3, dt
    # HTTP/2: HEADERS without END_HEADERS, CONTINUATION never comes
    with sk.create_connection(("127.0.0.1", px.port), timeout=5) as s:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        block = bytes([0x82, 0x86, 0x84])  # :method GET, :scheme http, :path /
        s.sendall(len(block).to_bytes(3, "big") + b"\x01\x01" + (1).to_bytes(4, "big") + block)
        got, frames = b"", []
        end = tm.monotonic() + 3
        while tm.monotonic() < end and not any(t in (0x3, 0x7) for t, _ in frames):
            try:
                chunk = s.recv(4096)
            except sk.timeout:
                break
            if not chunk:
                break
            got += chunk
            frames, i = [], 0
            while i + 9 <= len(got):
                ln = int.from_bytes(got[i:i + 3], "big")
                frames.append((got[i + 3], got[i + 9:i + 9 + ln]))
                i += 9 + ln
    assert any(t in (0x3, 0x7) for t, _ in frames), frames  # RST_STREAM (or GOAWAY: protocol)
    assert ctx.curl(f"http://127.0.0.1:{px.port}/").status == 200
    assert ctx.stop(px) == 0


def test_refused_stream_is_retried_transparently(ctx):
    """An HTTP/2 upstream that refuses a stream (REFUSED_STREAM: not processed) gets the request
    again without any retry policy; a request with a body is not replayed without one."""
    import remora_cfg as rcfg
    from harness import free_port, wait_port
    port = free_port()
    script = r'''
import socket, sys
import h2.connection, h2.config, h2.events, h2.errors
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1]))); srv.listen(8)
seen = 0
while True:
    c, _ = srv.accept()
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    try:  # the harness's port probe connects and closes: a reset ends only that connection
        conn.initiate_connection(); c.sendall(conn.data_to_send())
        while True:
            data = c.recv(65536)
            if not data:
                break
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.RequestReceived):
                    seen += 1
                    if seen % 2 == 1:  # refuse every first try
                        conn.reset_stream(ev.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
                    else:
                        conn.send_headers(ev.stream_id, [(":status", "200"),
                                                         ("x-seen", str(seen))], end_stream=True)
            c.sendall(conn.data_to_send())
    except OSError:
        pass
    c.close()
'''
    up = ctx.spawn(["/usr/bin/python3", "-c", script, str(port)], "refusing-upstream")
    wait_port(port, proc=up.p)
    px = ctx.remora(rcfg.bootstrap("""
              - match: { prefix: "/" }
                route: { cluster: backend }""", [rcfg.cluster("backend", [port], "h2")]))
    r = ctx.curl(f"http://127.0.0.1:{px.port}/get")
    assert r.status == 200 and r.headers.get("x-seen") == "2", r
    r = ctx.curl(f"http://127.0.0.1:{px.port}/post", data=b"body")  # refused, not replayable
    assert r.status == 503 and b"refused" in r.body, r
    assert ctx.stop(px) == 0


def _h2_session(port):
    """A python-h2 client connection (prior knowledge): (socket, H2Connection)."""
    import h2.config
    import h2.connection
    s = socket.create_connection(("127.0.0.1", port), timeout=5.0)
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    s.sendall(c.data_to_send())
    return s, c


def _h2_exchange(s, c, path, headers=(), timeout=5.0):
    """One GET on an open h2 connection: (status, or None if the stream was reset; the response
    headers as a dict)."""
    import h2.events
    sid = c.get_next_available_stream_id()
    c.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":authority", "x"),
                         (":path", path)] + list(headers), end_stream=True)
    s.sendall(c.data_to_send())
    status, hdrs = None, {}
    deadline = time.monotonic() + timeout
    done = False
    while not done and time.monotonic() < deadline:
        data = s.recv(65536)
        if not data:
            break
        for ev in c.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                hdrs = {k.decode(): v.decode() for k, v in ev.headers}
                status = int(hdrs[":status"])
            elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)) and \
                    ev.stream_id == sid:
                done = True
        out = c.data_to_send()
        if out:
            s.sendall(out)
    assert done, f"no end of stream {sid} within {timeout}s"
    return status, hdrs


def test_upstream_idle_timeout_spares_busy_connections(ctx):
    """The cluster's common_http_protocol_options.idle_timeout closes an upstream connection
    idle that long, never one busy with a request (its timer stays armed while it is busy and
    looks again when it fires)."""
    up = ctx.upstream(name="b1")
    opts = """
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        common_http_protocol_options: { idle_timeout: 0.5s }
        explicit_http_config:
          http_protocol_options: {}"""
    px = ctx.remora(cfg.bootstrap(route(""), [cfg.cluster("backend", [up.port], extra=opts)]))
    url = f"http://127.0.0.1:{px.port}/"
    assert ctx.curl(url).status == 200  # the connection goes idle: its timer is armed
    # busy across the timer's deadline, on the same connection
    r = ctx.curl(url, headers={"x-upstream-delay-ms": "1200"})
    assert r.status == 200, r
    assert cs(ctx, px, "upstream_cx_destroy_local") == 0
    assert cs(ctx, px, "upstream_cx_total") == 1
    time.sleep(0.25)  # idle for less than the timeout: still open
    assert cs(ctx, px, "upstream_cx_destroy_local") == 0
    deadline = time.monotonic() + 3.0
    while cs(ctx, px, "upstream_cx_destroy_local") == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cs(ctx, px, "upstream_cx_destroy_local") == 1
    assert cs(ctx, px, "upstream_cx_active") == 0
    stop_clean(ctx, px)


def test_max_requests_per_connection(ctx):
    """common_http_protocol_options.max_requests_per_connection downstream: the Nth request is
    served, then HTTP/1.1 says connection: close and closes, HTTP/2 sends GOAWAY naming it."""
    up = ctx.upstream(name="b1")
    y = cfg.bootstrap(route(""), [cfg.cluster("backend", [up.port])],
                      hcm_extra="\n          common_http_protocol_options: "
                                "{ max_requests_per_connection: 2 }")
    px = ctx.remora(y)
    req = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"
    s = _raw_request(px.port, req)
    try:
        out, closed = _read_until_closed(s, 0.3)
        assert out.startswith(b"HTTP/1.1 200") and b"connection: close" not in out.lower(), out
        assert not closed
        s.sendall(req)
        out, closed = _read_until_closed(s, 3.0)
        assert out.startswith(b"HTTP/1.1 200") and b"connection: close" in out.lower(), out
        assert closed, "HTTP/1.1 connection still open after its last request"
    finally:
        s.close()
    # HTTP/2: two streams on one connection, then GOAWAY
    out = subprocess.run(["nghttp", "-nv", "-t", "10", f"http://127.0.0.1:{px.port}/1",
                          f"http://127.0.0.1:{px.port}/2"], capture_output=True, text=True,
                         timeout=20).stdout
    served = [int(x) for x in re.findall(r"recv \(stream_id=(\d+)\) :status: 200", out)]
    goaways = [int(x) for x in re.findall(r"recv GOAWAY frame .*\n.*last_stream_id=(\d+)", out)]
    # the graceful GOAWAY pair (2^31-1, then the last stream) may end after nghttp has both
    # answers and quits: the first is enough to show the drain began
    assert len(served) == 2 and goaways and goaways[-1] >= max(served), (served, goaways, out)
    assert stats(ctx, px)["http.ingress_http.downstream_cx_max_requests_reached"] == 2
    # unlimited by default: many requests on one connection
    r = ctx.curl(f"http://127.0.0.1:{px.port}/a", "--next", f"http://127.0.0.1:{px.port}/b")
    assert r.status == 200, r
    stop_clean(ctx, px)


def test_headers_with_underscores_action(ctx):
    """ALLOW (default) forwards x_foo; DROP_HEADER drops it (and counts it per codec);
    REJECT_REQUEST answers HTTP/1.1 with 400 and resets an HTTP/2 stream."""
    up = ctx.upstream(name="b1")
    echo = ["-H", "x-upstream-echo-headers: 1", "-H", "x_foo: 1", "-H", "x-bar: 2"]
    px = ctx.remora(cfg.bootstrap(route(""), [cfg.cluster("backend", [up.port])]))
    r = ctx.curl(f"http://127.0.0.1:{px.port}/", *echo)
    assert r.status == 200 and r.headers.get("x-echo-x_foo") == "1", r
    stop_clean(ctx, px)

    def with_action(action, name):
        return ctx.remora(cfg.bootstrap(
            route(""), [cfg.cluster("backend", [up.port])],
            hcm_extra="\n          common_http_protocol_options: "
                      "{ headers_with_underscores_action: %s }" % action), name=name)

    px = with_action("DROP_HEADER", "remora-drop")
    r = ctx.curl(f"http://127.0.0.1:{px.port}/", *echo)
    assert r.status == 200 and "x-echo-x_foo" not in r.headers, r
    assert r.headers.get("x-echo-x-bar") == "2", r
    s, c = _h2_session(px.port)
    try:
        st, h = _h2_exchange(s, c, "/", [("x-upstream-echo-headers", "1"), ("a_b", "1"),
                                            ("a_b", "2"), ("c-d", "3")])
        assert st == 200 and "x-echo-a_b" not in h and h.get("x-echo-c-d") == "3", (st, h)
    finally:
        s.close()
    st = stats(ctx, px)
    assert st["http.ingress_http.http1.dropped_headers_with_underscores"] == 1, st
    assert st["http.ingress_http.http2.dropped_headers_with_underscores"] == 2, st
    stop_clean(ctx, px)

    px = with_action("REJECT_REQUEST", "remora-reject")
    r = ctx.curl(f"http://127.0.0.1:{px.port}/", *echo)
    assert r.status == 400, r
    assert r.headers.get("connection") == "close", r
    r = ctx.curl(f"http://127.0.0.1:{px.port}/", "-H", "x-ok: 1")
    assert r.status == 200, r
    s, c = _h2_session(px.port)
    try:
        st, _ = _h2_exchange(s, c, "/", [("x_foo", "1")])
        assert st is None, st  # reset, no response
        st, _ = _h2_exchange(s, c, "/", [("x-foo", "1")])
        assert st == 200, st  # the connection stays usable
    finally:
        s.close()
    st = stats(ctx, px)
    assert st["http.ingress_http.http1.requests_rejected_with_underscores_in_headers"] == 1, st
    assert st["http.ingress_http.http2.requests_rejected_with_underscores_in_headers"] == 1, st
    stop_clean(ctx, px)
