"""HTTP filters before the router: local rate limit and fault injection, per-route configs
(typed_per_filter_config at every level, FilterConfig), and their order in http_filters."""
import json
import re
import subprocess
import threading
import time

import remora_cfg as cfg
from harness import TestFailure

LRL_TYPE = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"


def with_filters(yaml_text, *filters):
    """Insert HTTP filters (YAML list items, indented 10) before the router."""
    marker = "          http_filters:\n"
    assert marker in yaml_text
    return yaml_text.replace(marker, marker + "".join(filters), 1)


def lrl_filter(body, name="envoy.filters.http.local_ratelimit"):
    return """          - name: %s
            typed_config:
              "@type": %s
%s""" % (name, LRL_TYPE, indent(body, 14))


def fault_filter(body, name="envoy.filters.http.fault"):
    return """          - name: %s
            typed_config:
              "@type": %s
%s""" % (name, FAULT_TYPE, indent(body, 14))


def indent(text, n):
    return "".join(" " * n + line + "\n" for line in text.strip("\n").splitlines())


ALWAYS = """filter_enabled: { default_value: { numerator: 100 } }
filter_enforced: { default_value: { numerator: 100 } }"""


def stats(ctx, px):
    r = ctx.curl(f"http://127.0.0.1:{px.admin}/stats")
    out = {}
    for line in r.body.decode().splitlines():
        k, _, v = line.partition(": ")
        try:
            out[k] = int(v)
        except ValueError:
            pass
    return out


def codes(ctx, urls, headers=None, http2=False, timeout=20):
    """Status codes of <urls> fetched by ONE curl process (one connection, reused)."""
    cmd = ["curl", "-s", "--max-time", str(timeout), "-w", "%{http_code}\n"]
    if http2:
        cmd.append("--http2-prior-knowledge")
    for k, v in (headers or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    for u in urls:
        cmd += ["-o", "/dev/null", u]
    r = subprocess.run(cmd, capture_output=True, timeout=timeout + 5)
    return [int(x) for x in r.stdout.decode().split()]


def h2load(ctx, url, n, c, h1=False, extra=()):
    args = ["h2load", "-n", str(n), "-c", str(c), "-m", "4"] + (["--h1"] if h1 else [])
    r = ctx.run(args + list(extra) + [url], timeout=120)
    out = r.stdout.decode()
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    assert m, out
    return [int(x) for x in m.groups()], out


def simple_routes(routes, up_port, extra_clusters=()):
    return cfg.bootstrap(routes, [cfg.cluster("backend", [up_port])] + list(extra_clusters))


# ---- local rate limit ------------------------------------------------------------------------

def test_local_ratelimit_burst_exact_across_workers(ctx):
    """A shared bucket of 25 tokens (no refill during the test): exactly 25 of 200 requests pass,
    whatever the worker, protocol or connection; the rest get 429 with Envoy's body/headers."""
    up = ctx.upstream()
    y = with_filters(cfg.simple(up.port), lrl_filter("""
stat_prefix: rl
token_bucket: { max_tokens: 25, tokens_per_fill: 25, fill_interval: 3600s }
""" + ALWAYS + """
response_headers_to_add:
- header: { key: x-limited, value: "yes" }
enable_x_ratelimit_headers: DRAFT_VERSION_03"""))
    px = ctx.remora(y, "--concurrency", "4")
    url = f"http://127.0.0.1:{px.port}/"
    (c2, _, c4, c5), out = h2load(ctx, url, 100, 10)
    (d2, _, d4, d5), out2 = h2load(ctx, url, 100, 10, h1=True)
    assert c2 + d2 == 25 and c4 + d4 == 175 and c5 + d5 == 0, (out, out2)
    r = ctx.curl(url)
    assert r.status == 429 and r.body == b"local_rate_limited", r
    assert r.headers.get("x-limited") == "yes", r
    assert r.headers.get("x-ratelimit-limit") == "25", r
    assert r.headers.get("x-ratelimit-remaining") == "0", r
    assert int(r.headers.get("x-ratelimit-reset")) > 3500, r
    s = stats(ctx, px)
    assert s["rl.http_local_rate_limit.enabled"] == 201, s
    assert s["rl.http_local_rate_limit.ok"] == 25, s
    assert s["rl.http_local_rate_limit.rate_limited"] == 176, s
    assert s["rl.http_local_rate_limit.enforced"] == 176, s
    assert s["cluster.backend.upstream_rq_total"] == 25, s
    assert s["http.ingress_http.downstream_rq_4xx"] == 176, s


def test_local_ratelimit_refill(ctx):
    """max 2, 1 token per 2 s: a burst passes 2 (3 if a refill point falls inside it); then the
    next refill lets exactly one more through."""
    up = ctx.upstream()
    y = with_filters(cfg.simple(up.port), lrl_filter("""
stat_prefix: rl
token_bucket: { max_tokens: 2, tokens_per_fill: 1, fill_interval: 2s }
""" + ALWAYS))
    px = ctx.remora(y)
    url = f"http://127.0.0.1:{px.port}/"
    burst = codes(ctx, [url] * 6)
    assert burst.count(200) in (2, 3) and burst.count(429) == 6 - burst.count(200), burst
    t0 = time.monotonic()
    while ctx.curl(url).status != 200:
        assert time.monotonic() - t0 < 2.5, "no refill within the fill interval"
        time.sleep(0.05)
    assert ctx.curl(url).status == 429  # the refill added one token only


def test_local_ratelimit_not_enforced_and_grpc(ctx):
    """enabled but not enforced: limited requests go on with
    request_headers_to_add_when_not_enforced; gRPC requests that are limited get grpc-status."""
    up = ctx.upstream()
    routes = """
              - match: { prefix: "/soft" }
                route: { cluster: backend }
                typed_per_filter_config:
                  envoy.filters.http.local_ratelimit:
                    "@type": %s
                    stat_prefix: soft
                    token_bucket: { max_tokens: 1, fill_interval: 3600s }
                    filter_enabled: { default_value: { numerator: 100 } }
                    request_headers_to_add_when_not_enforced:
                    - header: { key: x-rate-limited, value: "1" }
                    enable_x_ratelimit_headers: DRAFT_VERSION_03
              - match: { prefix: "/grpc" }
                route: { cluster: backend }
                typed_per_filter_config:
                  envoy.filters.http.local_ratelimit:
                    "@type": %s
                    stat_prefix: grpc
                    token_bucket: { max_tokens: 1, fill_interval: 3600s }
                    rate_limited_as_resource_exhausted: true
%s
              - match: { prefix: "/" }
                route: { cluster: backend }""" % (LRL_TYPE, LRL_TYPE, indent(ALWAYS, 20))
    y = with_filters(simple_routes(routes, up.port), lrl_filter("stat_prefix: listener"))
    px = ctx.remora(y)
    base = f"http://127.0.0.1:{px.port}"
    echo = {"x-upstream-echo-request": "1"}
    j = [json.loads(ctx.curl(base + "/soft/x", headers=echo).body) for _ in range(3)]
    assert "x-rate-limited" not in j[0]["headers"], j[0]
    assert j[1]["headers"].get("x-rate-limited") == "1" and j[2]["headers"].get("x-rate-limited"), j
    r = ctx.curl(base + "/soft/x")
    assert r.status == 200 and r.headers.get("x-ratelimit-remaining") == "0", r
    assert r.headers.get("x-ratelimit-limit") == "1", r
    g = {"content-type": "application/grpc", "x-upstream-grpc-status": "0"}
    assert ctx.curl(base + "/grpc/S/M", http2=True, headers=g).status == 200
    r = ctx.curl(base + "/grpc/S/M", http2=True, headers=g)
    assert r.status == 200 and r.headers.get("grpc-status") == "8", r  # RESOURCE_EXHAUSTED
    s = stats(ctx, px)
    assert s["soft.http_local_rate_limit.rate_limited"] == 3, s
    assert s["soft.http_local_rate_limit.enforced"] == 0, s
    assert s["grpc.http_local_rate_limit.enforced"] == 1, s
    # the listener-level config has no bucket and filter_enabled unset: it never limits
    assert codes(ctx, [base + "/other"] * 5) == [200] * 5
    assert "listener.http_local_rate_limit.enabled" not in s or \
        s["listener.http_local_rate_limit.enabled"] == 0, s


def test_local_ratelimit_per_route_levels(ctx):
    """route > virtual host > route configuration; a weighted cluster overrides its route;
    FilterConfig{disabled} turns the filter off for one route."""
    up = ctx.upstream()
    routes = """
              - match: { prefix: "/limited" }
                route: { cluster: backend }
                typed_per_filter_config:
                  envoy.filters.http.local_ratelimit:
                    "@type": %(t)s
                    stat_prefix: rt
                    token_bucket: { max_tokens: 1, fill_interval: 3600s }
%(a)s
              - match: { prefix: "/off" }
                route: { cluster: backend }
                typed_per_filter_config:
                  envoy.filters.http.local_ratelimit:
                    "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig
                    disabled: true
              - match: { prefix: "/weighted" }
                route:
                  weighted_clusters:
                    clusters:
                    - name: backend
                      weight: 1
                      typed_per_filter_config:
                        envoy.filters.http.local_ratelimit:
                          "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig
                          config:
                            "@type": %(t)s
                            stat_prefix: wc
                            token_bucket: { max_tokens: 2, fill_interval: 3600s }
%(a6)s
              - match: { prefix: "/" }
                route: { cluster: backend }""" % {"t": LRL_TYPE, "a": indent(ALWAYS, 20),
                                                  "a6": indent(ALWAYS, 28)}
    vhost_extra = """
              typed_per_filter_config:
                envoy.filters.http.local_ratelimit:
                  "@type": %s
                  stat_prefix: vh
                  token_bucket: { max_tokens: 3, fill_interval: 3600s }
%s""" % (LRL_TYPE, indent(ALWAYS, 18))
    y = cfg.bootstrap(routes, [cfg.cluster("backend", [up.port])], vhost_extra=vhost_extra)
    y = with_filters(y, lrl_filter("stat_prefix: listener"))
    px = ctx.remora(y)
    base = f"http://127.0.0.1:{px.port}"
    assert codes(ctx, [base + "/limited"] * 5) == [200] + [429] * 4
    assert codes(ctx, [base + "/vh"] * 5) == [200] * 3 + [429] * 2
    assert codes(ctx, [base + "/weighted"] * 5) == [200] * 2 + [429] * 3
    assert codes(ctx, [base + "/off"] * 5) == [200] * 5
    s = stats(ctx, px)
    assert (s["rt.http_local_rate_limit.ok"], s["rt.http_local_rate_limit.rate_limited"]) == (1, 4)
    assert (s["vh.http_local_rate_limit.ok"], s["vh.http_local_rate_limit.rate_limited"]) == (3, 2)
    assert (s["wc.http_local_rate_limit.ok"], s["wc.http_local_rate_limit.rate_limited"]) == (2, 3)


def test_local_ratelimit_per_connection(ctx):
    up = ctx.upstream()
    y = with_filters(cfg.simple(up.port), lrl_filter("""
stat_prefix: rl
token_bucket: { max_tokens: 2, fill_interval: 3600s }
local_rate_limit_per_downstream_connection: true
""" + ALWAYS))
    px = ctx.remora(y)
    url = f"http://127.0.0.1:{px.port}/"
    assert codes(ctx, [url] * 3) == [200, 200, 429]
    # a new connection, a new bucket (h2load: curl does not reuse h2c connections reliably)
    (c2, _, c4, _), out = h2load(ctx, url, 3, 1, extra=["-m", "1"])
    assert (c2, c4) == (2, 1), out
    assert codes(ctx, [url] * 3) == [200, 200, 429]


def test_per_filter_config_errors(ctx):
    """Unknown filter names and bad per-route configs are rejected naming the field; an
    optional FilterConfig for a filter that is not in the chain is ignored."""
    up = ctx.upstream()

    def validate(routes, filters=()):
        y = with_filters(simple_routes(routes, up.port), *filters)
        y = y.replace("{admin}", "0").replace("{port0}", "0")
        path = f"{ctx.tmp}/v.yaml"
        with open(path, "w") as f:
            f.write(y)
        return ctx.run([ctx.bin("remora"), "-c", path, "--mode", "validate"])

    base_route = """
              - match: { prefix: "/" }
                route: { cluster: backend }
                typed_per_filter_config:
"""
    r = validate(base_route + """                  envoy.filters.http.nope:
                    "@type": %s
                    stat_prefix: x""" % LRL_TYPE)
    err = r.stderr.decode()
    assert r.returncode == 1 and 'typed_per_filter_config["envoy.filters.http.nope"]: no HTTP ' \
        'filter named "envoy.filters.http.nope"' in err, err
    r = validate(base_route + """                  envoy.filters.http.nope:
                    "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig
                    is_optional: true
                    config: { "@type": %s, stat_prefix: x }""" % LRL_TYPE)
    assert r.returncode == 0, r.stderr.decode()
    r = validate(base_route + """                  envoy.filters.http.local_ratelimit:
                    "@type": %s
                    stat_prefix: x""" % LRL_TYPE, [lrl_filter("stat_prefix: l")])
    err = r.stderr.decode()
    assert r.returncode == 1 and 'typed_per_filter_config["envoy.filters.http.local_ratelimit"]' \
        '.token_bucket: required in a per-route config' in err, err
    r = validate(base_route + """                  envoy.filters.http.local_ratelimit:
                    "@type": %s
                    abort: { http_status: 503 }""" % FAULT_TYPE, [lrl_filter("stat_prefix: l")])
    err = r.stderr.decode()
    assert r.returncode == 1 and "LocalRateLimit" in err and "HTTPFault" in err, err
    r = validate(base_route + """                  envoy.filters.http.router:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router""")
    err = r.stderr.decode()
    assert r.returncode == 1 and "takes no per-route config" in err, err
    r = validate("""
              - match: { prefix: "/" }
                route: { cluster: backend }""",
                 [lrl_filter("stat_prefix: l\ndescriptors: [{ entries: [] }]")])
    err = r.stderr.decode()
    assert r.returncode == 1 and "descriptors" in err, err
    r = validate("""
              - match: { prefix: "/" }
                route: { cluster: backend }""",
                 [fault_filter("downstream_nodes: [a]")])
    err = r.stderr.decode()
    assert r.returncode == 1 and "downstream_nodes: not supported by remora" in err, err


def test_filter_disabled_by_default_enabled_per_route(ctx):
    """HttpFilter.disabled: off everywhere except where a route gives it a config."""
    up = ctx.upstream()
    routes = """
              - match: { prefix: "/on" }
                route: { cluster: backend }
                typed_per_filter_config:
                  faulty:
                    "@type": %s
                    abort: { http_status: 418, percentage: { numerator: 100 } }
              - match: { prefix: "/" }
                route: { cluster: backend }""" % FAULT_TYPE
    f = fault_filter("abort: { http_status: 503, percentage: { numerator: 100 } }",
                     name="faulty")
    f = f.replace("          - name: faulty\n", "          - name: faulty\n            disabled: true\n")
    px = ctx.remora(with_filters(simple_routes(routes, up.port), f))
    base = f"http://127.0.0.1:{px.port}"
    assert ctx.curl(base + "/x").status == 200
    assert ctx.curl(base + "/on").status == 418


# ---- fault injection ---------------------------------------------------------------------------

def test_fault_abort_all(ctx):
    up = ctx.upstream()
    y = with_filters(cfg.simple(up.port),
                     fault_filter("abort: { http_status: 503, percentage: { numerator: 100 } }"))
    px = ctx.remora(y)
    url = f"http://127.0.0.1:{px.port}/"
    for h2 in (False, True):
        r = ctx.curl(url, http2=h2)
        assert r.status == 503 and r.body == b"fault filter abort", r
    r = ctx.curl(url, http2=True, headers={"content-type": "application/grpc"})
    assert r.status == 200 and r.headers.get("grpc-status") == "14", r  # 503 -> UNAVAILABLE
    s = stats(ctx, px)
    assert s["http.ingress_http.fault.aborts_injected"] == 3, s
    assert s["http.ingress_http.fault.active_faults"] == 0, s
    assert s["cluster.backend.upstream_rq_total"] == 0, s


def test_fault_grpc_abort(ctx):
    up = ctx.upstream()
    y = with_filters(cfg.simple(up.port),
                     fault_filter("abort: { grpc_status: 5, percentage: { numerator: 100 } }"))
    px = ctx.remora(y)
    url = f"http://127.0.0.1:{px.port}/pkg.Svc/Method"
    r = ctx.curl(url, http2=True, headers={"content-type": "application/grpc"})
    assert r.status == 200 and r.headers.get("grpc-status") == "5", r
    assert r.headers.get("grpc-message") == "fault filter abort", r
    r = ctx.curl(url)  # not gRPC: HTTP 200 with the body, as Envoy
    assert r.status == 200 and r.body == b"fault filter abort", r


def test_fault_abort_by_header(ctx):
    up = ctx.upstream()
    y = with_filters(cfg.simple(up.port),
                     fault_filter("abort: { header_abort: {}, percentage: { numerator: 100 } }"))
    px = ctx.remora(y)
    url = f"http://127.0.0.1:{px.port}/"
    assert ctx.curl(url).status == 200
    r = ctx.curl(url, headers={"x-envoy-fault-abort-request": "418"})
    assert r.status == 418 and r.body == b"fault filter abort", r
    assert ctx.curl(url, headers={"x-envoy-fault-abort-request": "700"}).status == 200
    r = ctx.curl(url, headers={"x-envoy-fault-abort-request": "503",
                               "x-envoy-fault-abort-request-percentage": "0"})
    assert r.status == 200, r
    r = ctx.curl(url, http2=True, headers={"content-type": "application/grpc",
                                           "x-envoy-fault-abort-grpc-request": "4"})
    assert r.status == 200 and r.headers.get("grpc-status") == "4", r
    assert stats(ctx, px)["http.ingress_http.fault.aborts_injected"] == 2


def test_fault_delay(ctx):
    up = ctx.upstream()
    y = with_filters(cfg.simple(up.port),
                     fault_filter("delay: { fixed_delay: 0.2s, percentage: { numerator: 100 } }"))
    px = ctx.remora(y)
    url = f"http://127.0.0.1:{px.port}/up"
    for h2 in (False, True):
        body = b"x" * 200000  # arrives while the request is held
        t0 = time.monotonic()
        r = ctx.curl(url, http2=h2, data=body, headers={"x-upstream-echo": "1"})
        dt = time.monotonic() - t0
        assert r.status == 200 and r.body == body, (r.status, len(r.body))
        assert dt >= 0.2, dt
        assert dt < 2.0, dt
    s = stats(ctx, px)
    assert s["http.ingress_http.fault.delays_injected"] == 2, s
    assert s["http.ingress_http.fault.active_faults"] == 0, s


def test_fault_delay_by_header_then_client_gives_up(ctx):
    up = ctx.upstream()
    y = with_filters(cfg.simple(up.port),
                     fault_filter("delay: { header_delay: {}, percentage: { numerator: 100 } }"))
    px = ctx.remora(y)
    url = f"http://127.0.0.1:{px.port}/"
    t0 = time.monotonic()
    assert ctx.curl(url, headers={"x-envoy-fault-delay-request": "300"}).status == 200
    assert time.monotonic() - t0 >= 0.3
    # the client leaves during a delay: h2 resets the stream, the timer goes with it
    ctx.curl(url, "--max-time", "0.3", http2=True,
             headers={"x-envoy-fault-delay-request": "5000"}, timeout=1)
    time.sleep(0.2)
    assert stats(ctx, px)["http.ingress_http.fault.active_faults"] == 0
    # HTTP/1.1: remora stops reading once a request is complete, so the close is only seen
    # when the (delayed) request goes on; the fault ends then
    ctx.curl(url, "--max-time", "0.3", headers={"x-envoy-fault-delay-request": "800"}, timeout=1)
    deadline = time.monotonic() + 5
    while stats(ctx, px)["http.ingress_http.fault.active_faults"] != 0:
        assert time.monotonic() < deadline, "the delayed HTTP/1.1 request never ended"
        time.sleep(0.1)
    assert stats(ctx, px)["http.ingress_http.fault.delays_injected"] == 3
    assert px.alive()


def test_fault_percentage_zero_and_matchers(ctx):
    up = ctx.upstream()
    y = with_filters(simple_routes("""
              - match: { prefix: "/" }
                route: { cluster: backend }""", up.port), fault_filter("""
abort: { http_status: 503, percentage: { numerator: 0 } }
delay: { fixed_delay: 3s, percentage: { numerator: 0 } }"""),
        fault_filter("""
abort: { http_status: 429, percentage: { numerator: 100 } }
headers: [{ name: x-chaos, string_match: { exact: "on" } }]
upstream_cluster: backend""", name="chaos"))
    px = ctx.remora(y)
    url = f"http://127.0.0.1:{px.port}/"
    t0 = time.monotonic()
    assert codes(ctx, [url] * 20) == [200] * 20
    assert time.monotonic() - t0 < 2.5  # no 3 s delay (bound wide for a loaded CI machine)
    assert ctx.curl(url, headers={"x-chaos": "on"}).status == 429
    assert ctx.curl(url, headers={"x-chaos": "off"}).status == 200
    s = stats(ctx, px)
    assert s["http.ingress_http.fault.aborts_injected"] == 1, s
    assert s["http.ingress_http.fault.delays_injected"] == 0, s


def test_fault_per_route_and_max_active(ctx):
    """A route-level HTTPFault replaces the filter's; max_active_faults bounds the faults in
    progress (the overflowing request goes through undelayed)."""
    up = ctx.upstream()
    routes = """
              - match: { prefix: "/slow" }
                route: { cluster: backend }
                typed_per_filter_config:
                  envoy.filters.http.fault:
                    "@type": %s
                    delay: { fixed_delay: 2s, percentage: { numerator: 100 } }
                    max_active_faults: 1
              - match: { prefix: "/" }
                route: { cluster: backend }""" % FAULT_TYPE
    y = with_filters(simple_routes(routes, up.port), fault_filter(""))
    px = ctx.remora(y)
    base = f"http://127.0.0.1:{px.port}"
    assert ctx.curl(base + "/fast").status == 200
    times = [None, None]

    def one(i):
        t0 = time.monotonic()
        r = ctx.curl(base + "/slow")
        times[i] = (r.status, time.monotonic() - t0)

    th = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    th[0].start()
    time.sleep(0.2)
    th[1].start()
    for t in th:
        t.join()
    assert times[0][0] == 200 and times[1][0] == 200, times
    assert times[0][1] >= 1.9 and times[1][1] < 1.2, times  # (wide: a loaded CI machine)
    s = stats(ctx, px)
    assert s["http.ingress_http.fault.delays_injected"] == 1, s
    assert s["http.ingress_http.fault.faults_overflow"] == 1, s


# ---- filters together ----------------------------------------------------------------------------

def test_filter_order_fault_then_ratelimit(ctx):
    """http_filters order is the request order: a fault abort before the rate limit spends no
    token; the rate limit before the fault does."""
    up = ctx.upstream()
    f = fault_filter("abort: { header_abort: {}, percentage: { numerator: 100 } }")
    rl = lrl_filter("stat_prefix: rl\ntoken_bucket: { max_tokens: 2, fill_interval: 3600s }\n" +
                    ALWAYS)
    abort = {"x-envoy-fault-abort-request": "503"}

    px = ctx.remora(with_filters(cfg.simple(up.port), f, rl), name="fault_first")
    url = f"http://127.0.0.1:{px.port}/"
    assert codes(ctx, [url] * 3, headers=abort) == [503] * 3
    assert codes(ctx, [url] * 3) == [200, 200, 429]

    px2 = ctx.remora(with_filters(cfg.simple(up.port), rl, f), name="rl_first")
    url = f"http://127.0.0.1:{px2.port}/"
    assert codes(ctx, [url] * 3, headers=abort) == [503, 503, 429]
    assert codes(ctx, [url] * 2) == [429, 429]
    s = stats(ctx, px2)
    assert s["http.ingress_http.fault.aborts_injected"] == 2, s
