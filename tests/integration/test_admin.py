"""The admin server (proxy/admin): every endpoint's Envoy-compatible format, checked against a
real remora with traffic sent through it by curl."""
import json
import re
import signal
import socket
import time

from harness import TestFailure

BOOTSTRAP = """
node:
  id: node-admin-test
  cluster: mesh-test
admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: {admin} }
static_resources:
  listeners:
  - name: ingress
    address:
      socket_address: { address: 127.0.0.1, port_value: {port0} }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          route_config:
            name: local_route
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: backend }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: 127.0.0.1, port_value: UPSTREAM_PORT }
  - name: spare
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: spare
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: 127.0.0.1, port_value: 9 }
          load_balancing_weight: 3
        - endpoint:
            address:
              socket_address: { address: 127.0.0.1, port_value: 10 }
          health_status: UNHEALTHY
"""

TEXT_CT = "text/plain; charset=UTF-8"
JSON_CT = "application/json"
PROM_CT = "text/plain; version=0.0.4"


def start(ctx):
    """An upstream and a remora in front of it; returns (upstream, remora)."""
    up = ctx.upstream(name="adm")
    px = ctx.remora(BOOTSTRAP.replace("UPSTREAM_PORT", str(up.port)))
    return up, px


def admin(ctx, px, path, method=None, expect=200):
    r = ctx.curl(f"http://127.0.0.1:{px.admin}{path}", method=method)
    assert r.status == expect, (path, r)
    assert r.headers.get("cache-control") == "no-cache, max-age=0", r
    assert r.headers.get("x-content-type-options") == "nosniff", r
    assert int(r.headers.get("content-length", "-1")) == len(r.body), r
    return r


def send_traffic(ctx, px, n):
    for i in range(n):
        r = ctx.curl(f"http://127.0.0.1:{px.port}/req{i}")
        assert r.status == 200, r


def stop_clean(ctx, px):
    """SIGTERM and expect exit 0 (LeakSanitizer runs at exit under build/san)."""
    rc = ctx.stop(px, signal.SIGTERM, timeout=15)
    assert rc == 0, f"remora exited {rc}:\n{px.output()[-3000:]}"


def stats_text(ctx, px, query=""):
    r = admin(ctx, px, "/stats" + query)
    assert r.headers.get("content-type") == TEXT_CT, r
    out = {}
    for line in r.body.decode().splitlines():
        m = re.fullmatch(r"([^:\s]+(?::\d+)?[^:\s]*): (-?\d+)", line)
        assert m, f"bad stats line {line!r}"
        out[m.group(1)] = int(m.group(2))
    return r, out


# ---- /ready, /server_info, /help ---------------------------------------------------------


def test_admin_ready(ctx):
    _, px = start(ctx)
    r = admin(ctx, px, "/ready")
    assert r.body == b"LIVE\n", r
    assert r.headers.get("content-type") == TEXT_CT, r
    h = ctx.curl(f"http://127.0.0.1:{px.admin}/ready", "-I")  # HEAD: headers only
    assert h.status == 200 and h.body == b"", h
    assert h.headers.get("content-length") == "5", h
    stop_clean(ctx, px)


def test_admin_server_info(ctx):
    _, px = start(ctx)
    time.sleep(1.1)
    r = admin(ctx, px, "/server_info")
    assert r.headers.get("content-type") == JSON_CT, r
    j = json.loads(r.body)
    assert j["state"] == "LIVE", j
    assert j["hot_restart_version"] == "disabled", j
    assert isinstance(j["version"], str) and j["version"], j
    assert j["node"]["id"] == "node-admin-test", j
    assert j["node"]["cluster"] == "mesh-test", j
    assert isinstance(j["command_line_options"], dict), j
    for k in ("uptime_current_epoch", "uptime_all_epochs"):
        m = re.fullmatch(r"(\d+)s", j[k])
        assert m and int(m.group(1)) >= 1, j
    stop_clean(ctx, px)


ENDPOINTS = ["/", "/clusters", "/config_dump", "/drain_listeners (POST)",
             "/healthcheck/fail (POST)", "/healthcheck/ok (POST)", "/help", "/listeners",
             "/quitquitquit (POST)", "/ready", "/server_info", "/stats", "/stats/prometheus"]


def check_help(body):
    lines = body.splitlines()
    assert lines[0] == "admin commands are:", body
    listed = [ln.strip().split(": ")[0] for ln in lines[1:] if ln.startswith("  /")]
    for e in ENDPOINTS:
        assert e in listed, (e, body)
    assert listed == sorted(listed), listed
    for ln in lines[1:]:
        assert re.match(r"^  /\S*( \(POST\))?: \S|^      \w+: \S", ln), ln


def test_admin_help_and_unknown_path(ctx):
    _, px = start(ctx)
    for path in ("/help", "/"):
        r = admin(ctx, px, path)
        assert r.headers.get("content-type") == TEXT_CT, r
        check_help(r.body.decode())
    r = admin(ctx, px, "/no/such/endpoint", expect=404)
    body = r.body.decode()
    assert body.startswith("invalid path. admin commands are:\n"), body
    check_help(body[len("invalid path. "):])
    admin(ctx, px, "/statsx", expect=404)  # exact paths, not prefixes
    stop_clean(ctx, px)


# ---- /stats --------------------------------------------------------------------------------


def test_admin_stats_text(ctx):
    _, px = start(ctx)
    send_traffic(ctx, px, 5)
    r, st = stats_text(ctx, px)
    names = [ln.split(": ")[0] for ln in r.body.decode().splitlines()]
    assert names == sorted(names), "stats not sorted by name"
    assert st["cluster.backend.upstream_rq_total"] == 5, st
    assert st["cluster.backend.upstream_rq_2xx"] == 5, st
    assert st["http.ingress_http.downstream_rq_total"] == 5, st
    assert st["cluster.spare.upstream_rq_total"] == 0, st
    assert st["server.live"] == 1, st
    assert "server.uptime" in st, st
    # ?filter: partial match, PCRE2
    _, f = stats_text(ctx, px, "?filter=upstream_rq_total")
    assert f == {"cluster.backend.upstream_rq_total": 5, "cluster.spare.upstream_rq_total": 0}, f
    _, f = stats_text(ctx, px, "?filter=%5Ecluster%5C.backend%5C.upstream_rq_%28total%7C2xx%29%24")
    assert f == {"cluster.backend.upstream_rq_total": 5, "cluster.backend.upstream_rq_2xx": 5}, f
    # ?usedonly: only non-zero values
    _, u = stats_text(ctx, px, "?usedonly")
    assert u["cluster.backend.upstream_rq_total"] == 5, u
    assert "cluster.spare.upstream_rq_total" not in u, u
    assert all(v != 0 for v in u.values()), u
    _, fu = stats_text(ctx, px, "?usedonly&filter=cluster%5C.spare")
    assert all(k.startswith("cluster.spare.") for k in fu), fu
    # errors
    r = admin(ctx, px, "/stats?filter=(", expect=400)
    assert b"Invalid regex" in r.body, r
    admin(ctx, px, "/stats?format=xml", expect=400)
    stop_clean(ctx, px)


def test_admin_stats_json(ctx):
    _, px = start(ctx)
    send_traffic(ctx, px, 3)
    r = admin(ctx, px, "/stats?format=json")
    assert r.headers.get("content-type") == JSON_CT, r
    j = json.loads(r.body)
    names = [s["name"] for s in j["stats"]]
    assert names == sorted(names), names
    vals = {s["name"]: s["value"] for s in j["stats"]}
    assert vals["cluster.backend.upstream_rq_total"] == 3, vals
    assert all(isinstance(v, int) for v in vals.values()), vals
    j = json.loads(admin(ctx, px, "/stats?format=json&filter=rq_total%24&usedonly").body)
    assert {s["name"] for s in j["stats"]} == {"cluster.backend.upstream_rq_total",
                                               "http.ingress_http.downstream_rq_total"}, j
    stop_clean(ctx, px)


PROM_LINE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\{((?:[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"'
                       r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="[^"]*")*)?)\} (-?\d+)')


def parse_prometheus(text):
    """{family: (type, [(labels dict, value)])}, checking the exposition format as it goes."""
    fams, cur = {}, None
    for ln in text.splitlines():
        if ln == "":
            cur = None
            continue
        m = re.fullmatch(r"# TYPE ([a-zA-Z_][a-zA-Z0-9_]*) (counter|gauge)", ln)
        if m:
            assert m.group(1) not in fams, f"family {m.group(1)} declared twice"
            cur = m.group(1)
            fams[cur] = (m.group(2), [])
            continue
        m = PROM_LINE.fullmatch(ln)
        assert m, f"bad prometheus line {ln!r}"
        assert m.group(1) == cur, f"sample {ln!r} outside its family's group ({cur})"
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"', m.group(2)))
        fams[cur][1].append((labels, int(m.group(3))))
    return fams


def sample(fams, family, **labels):
    assert family in fams, (family, sorted(fams))
    for lb, v in fams[family][1]:
        if lb == labels:
            return v
    raise TestFailure(f"{family}{labels} not in {fams[family]}")


def test_admin_stats_prometheus(ctx):
    _, px = start(ctx)
    send_traffic(ctx, px, 4)
    for path in ("/stats/prometheus", "/stats?format=prometheus"):
        r = admin(ctx, px, path)
        assert r.headers.get("content-type") == PROM_CT, r
        text = r.body.decode()
        assert ('# TYPE envoy_cluster_upstream_rq_total counter\n'
                'envoy_cluster_upstream_rq_total{envoy_cluster_name="backend"} 4\n') in text, text
        fams = parse_prometheus(text)
        assert fams["envoy_cluster_upstream_rq_total"][0] == "counter"
        assert sample(fams, "envoy_cluster_upstream_rq_total", envoy_cluster_name="spare") == 0
        assert sample(fams, "envoy_http_downstream_rq_total",
                      envoy_http_conn_manager_prefix="ingress_http") == 4
        assert sample(fams, "envoy_cluster_upstream_rq_xx", envoy_response_code_class="2",
                      envoy_cluster_name="backend") == 4
        assert fams["envoy_cluster_upstream_rq_active"][0] == "gauge"
        assert sample(fams, "envoy_server_live") == 1
        lst = fams["envoy_listener_downstream_cx_total"][1]
        assert len(lst) == 1 and str(px.port) in lst[0][0]["envoy_listener_address"], lst
        assert lst[0][1] >= 1, lst
        # counters first, then gauges
        types = [t for t, _ in fams.values()]
        assert types == sorted(types, key=lambda t: t != "counter"), types
    fams = parse_prometheus(admin(ctx, px, "/stats/prometheus?usedonly").body.decode())
    assert all(v != 0 for _, s in fams.values() for _, v in s), fams
    assert "envoy_cluster_upstream_rq_total" in fams
    fams = parse_prometheus(admin(ctx, px, "/stats/prometheus?filter=%5Ecluster%5C.").body.decode())
    assert fams and all(k.startswith("envoy_cluster_") for k in fams), fams
    stop_clean(ctx, px)


# ---- /clusters, /listeners -----------------------------------------------------------------


def test_admin_clusters_text(ctx):
    up, px = start(ctx)
    send_traffic(ctx, px, 3)
    r = admin(ctx, px, "/clusters")
    assert r.headers.get("content-type") == TEXT_CT, r
    lines = r.body.decode().splitlines()
    for ln in lines:
        assert re.fullmatch(r"[^:]+::[^:]+(:\d+)?::.*", ln), ln
    h = f"backend::127.0.0.1:{up.port}::"
    want = [
        "backend::observability_name::backend",
        "backend::default_priority::max_connections::1024",
        "backend::default_priority::max_pending_requests::1024",
        "backend::default_priority::max_requests::1024",
        "backend::default_priority::max_retries::3",
        "backend::high_priority::max_connections::1024",
        "backend::high_priority::max_pending_requests::1024",
        "backend::high_priority::max_requests::1024",
        "backend::high_priority::max_retries::3",
        "backend::added_via_api::false",
        # three sequential requests share one pooled keep-alive connection, still open
        h + "cx_active::1", h + "cx_total::1", h + "cx_connect_fail::0", h + "rq_active::0",
        h + "rq_error::0",
        h + "rq_success::3", h + "rq_timeout::0", h + "rq_total::3",
        h + "hostname::", h + "health_flags::healthy", h + "weight::1", h + "region::",
        h + "zone::", h + "sub_zone::", h + "canary::false", h + "priority::0",
        h + "success_rate::-1", h + "local_origin_success_rate::-1",
    ]
    for w in want:
        assert w in lines, (w, lines)
    cx = [ln for ln in lines if ln.startswith(h + "cx_total::")]
    assert len(cx) == 1 and int(cx[0].rsplit("::", 1)[1]) >= 1, cx
    # host stat lines come sorted, as Envoy prints them
    stat_names = [ln[len(h):].split("::")[0] for ln in lines if ln.startswith(h)][:8]
    assert stat_names == sorted(stat_names), stat_names
    assert "spare::127.0.0.1:9::weight::3" in lines, lines
    assert "spare::127.0.0.1:9::health_flags::healthy" in lines, lines
    assert "spare::127.0.0.1:10::health_flags::/failed_eds_health" in lines, lines
    admin(ctx, px, "/clusters?format=yaml", expect=400)
    stop_clean(ctx, px)


def test_admin_clusters_json(ctx):
    up, px = start(ctx)
    send_traffic(ctx, px, 2)
    r = admin(ctx, px, "/clusters?format=json")
    assert r.headers.get("content-type") == JSON_CT, r
    j = json.loads(r.body)
    cs = {c["name"]: c for c in j["cluster_statuses"]}
    assert set(cs) == {"backend", "spare"}, cs
    b = cs["backend"]
    assert b["observability_name"] == "backend", b
    th = b["circuit_breakers"]["thresholds"]
    assert th[0]["max_connections"] == 1024 and th[0]["max_retries"] == 3, th
    assert th[1]["priority"] == "HIGH", th
    [hs] = b["host_statuses"]
    assert hs["address"] == {"socket_address": {"address": "127.0.0.1", "port_value": up.port}}
    st = {s["name"]: s for s in hs["stats"]}
    assert int(st["rq_total"]["value"]) == 2 and int(st["rq_success"]["value"]) == 2, st
    assert st["rq_active"].get("type") == "GAUGE" and "type" not in st["rq_total"], st
    assert set(st) == {"cx_active", "cx_connect_fail", "cx_total", "rq_active", "rq_error",
                       "rq_success", "rq_timeout", "rq_total"}, st
    assert hs["health_status"] == {"eds_health_status": "HEALTHY"}, hs
    assert hs["weight"] == 1, hs
    spare = {h["address"]["socket_address"]["port_value"]: h
             for h in cs["spare"]["host_statuses"]}
    assert spare[9]["weight"] == 3, spare
    assert spare[10]["health_status"]["eds_health_status"] == "UNHEALTHY", spare
    stop_clean(ctx, px)


def test_admin_listeners(ctx):
    _, px = start(ctx)
    r = admin(ctx, px, "/listeners")
    assert r.body.decode() == f"ingress::127.0.0.1:{px.port}\n", r
    j = json.loads(admin(ctx, px, "/listeners?format=json").body)
    assert j == {"listener_statuses": [{"name": "ingress", "local_address": {
        "socket_address": {"address": "127.0.0.1", "port_value": px.port}}}]}, j
    stop_clean(ctx, px)


# ---- /config_dump --------------------------------------------------------------------------


def walk(x):
    yield x
    if isinstance(x, dict):
        for v in x.values():
            yield from walk(v)
    elif isinstance(x, list):
        for v in x:
            yield from walk(v)


def test_admin_config_dump(ctx):
    up, px = start(ctx)
    r = admin(ctx, px, "/config_dump")
    assert r.headers.get("content-type") == JSON_CT, r
    j = json.loads(r.body)
    types = [c["@type"] for c in j["configs"]]
    p = "type.googleapis.com/envoy.admin.v3."
    assert types[:4] == [p + "BootstrapConfigDump", p + "ClustersConfigDump",
                         p + "ListenersConfigDump", p + "RoutesConfigDump"], types
    boot, clusters, listeners, routes = j["configs"][:4]
    assert boot["bootstrap"]["node"]["id"] == "node-admin-test", boot
    assert boot["bootstrap"]["admin"]["address"]["socket_address"]["port_value"] == px.admin
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", boot["last_updated"]), boot
    sc = clusters["static_clusters"]
    assert [c["cluster"]["name"] for c in sc] == ["backend", "spare"], sc
    assert all(c["cluster"]["@type"] == "type.googleapis.com/envoy.config.cluster.v3.Cluster"
               for c in sc), sc
    assert sc[0]["cluster"]["connect_timeout"] == "1s", sc
    ep = sc[0]["cluster"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert ep["endpoint"]["address"]["socket_address"]["port_value"] == up.port, ep
    [sl] = listeners["static_listeners"]
    assert sl["listener"]["@type"] == "type.googleapis.com/envoy.config.listener.v3.Listener"
    assert sl["listener"]["name"] == "ingress", sl
    atypes = {d.get("@type") for d in walk(sl["listener"]) if isinstance(d, dict)}
    assert "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" in atypes, atypes
    assert ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
            "HttpConnectionManager") in atypes, atypes
    [rc] = routes["static_route_configs"]
    assert rc["route_config"]["name"] == "local_route", rc
    assert rc["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["cluster"] == "backend"
    admin(ctx, px, "/config_dump?resource=static_clusters", expect=400)
    stop_clean(ctx, px)


# ---- mutations -----------------------------------------------------------------------------


def test_admin_mutations_need_post(ctx):
    _, px = start(ctx)
    for path in ("/quitquitquit", "/healthcheck/fail", "/healthcheck/ok", "/drain_listeners"):
        r = admin(ctx, px, path, expect=405)  # Envoy: 405 Method Not Allowed
        assert r.body == b"Method GET not allowed, POST required.", r
        r = admin(ctx, px, path, method="PUT", expect=405)
        assert r.body == b"Method PUT not allowed, POST required.", r
    assert px.alive()
    assert admin(ctx, px, "/ready").body == b"LIVE\n"
    stop_clean(ctx, px)


def test_admin_healthcheck_fail_ok(ctx):
    _, px = start(ctx)
    assert admin(ctx, px, "/healthcheck/fail", method="POST").body == b"OK\n"
    assert admin(ctx, px, "/ready", expect=503).body == b"DRAINING\n"
    assert json.loads(admin(ctx, px, "/server_info").body)["state"] == "DRAINING"
    assert admin(ctx, px, "/healthcheck/ok", method="POST").body == b"OK\n"
    assert admin(ctx, px, "/ready").body == b"LIVE\n"
    stop_clean(ctx, px)


def test_admin_drain_listeners(ctx):
    _, px = start(ctx)
    assert admin(ctx, px, "/drain_listeners", method="POST").body == b"OK\n"
    assert px.alive()
    r = ctx.curl(f"http://127.0.0.1:{px.admin}/ready")  # the admin keeps serving
    assert r.status in (200, 503), r
    stop_clean(ctx, px)


def test_admin_quitquitquit(ctx):
    _, px = start(ctx)
    r = admin(ctx, px, "/quitquitquit", method="POST")
    assert r.body == b"OK\n", r
    try:
        rc = px.p.wait(10)
    except Exception:
        raise TestFailure("remora still running 10s after POST /quitquitquit")
    assert rc == 0, f"exit {rc}:\n{px.output()[-3000:]}"


# ---- robustness ----------------------------------------------------------------------------


def raw_exchange(port, data, timeout=2.0):
    """Send raw bytes, half-close, read until EOF, reset or timeout.  The server may answer
    and close before it read everything (an error reply): send errors are not failures."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        out = b""
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                out += b
        except (socket.timeout, ConnectionResetError):
            pass
        return out


def test_admin_bad_and_pipelined_requests(ctx):
    _, px = start(ctx)
    assert raw_exchange(px.admin, b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400"), "garbage"
    big = b"GET /ready HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 100000 + b"\r\n\r\n"
    assert raw_exchange(px.admin, big).startswith(b"HTTP/1.1 431"), "oversized headers"
    out = raw_exchange(px.admin, b"GET /ready HTTP/1.1\r\nhost: x\r\n\r\n"
                                 b"GET /stats?filter=server HTTP/1.1\r\nhost: x\r\n\r\n"
                                 b"POST /healthcheck/ok HTTP/1.1\r\nhost: x\r\n"
                                 b"content-length: 5\r\n\r\nhello")
    assert out.count(b"HTTP/1.1 200 OK") == 3, out
    chunked = (b"POST /healthcheck/ok HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n0\r\n\r\n")
    assert raw_exchange(px.admin, chunked).startswith(b"HTTP/1.1 200"), "chunked body"
    # a request cut short, then many idle connections: the server keeps answering
    raw_exchange(px.admin, b"POST /healthcheck/ok HTTP/1.1\r\nhost: x\r\ncontent-length: 99\r\n\r\nab",
                 timeout=0.3)
    idle = [socket.create_connection(("127.0.0.1", px.admin)) for _ in range(80)]
    try:
        time.sleep(0.3)
        assert admin(ctx, px, "/ready").body == b"LIVE\n"
    finally:
        for s in idle:
            s.close()
    assert raw_exchange(px.admin, b"GET /stats HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.1 200")
    assert admin(ctx, px, "/ready").body == b"LIVE\n"
    # shutting down with admin connections open (idle, mid-headers, mid-body) frees them all
    held = [socket.create_connection(("127.0.0.1", px.admin)) for _ in range(3)]
    held[1].sendall(b"GET /stats HTTP/1.1\r\nhost: x\r\n")
    held[2].sendall(b"POST /healthcheck/ok HTTP/1.1\r\nhost: x\r\ncontent-length: 9\r\n\r\nab")
    time.sleep(0.2)
    try:
        stop_clean(ctx, px)
    finally:
        for s in held:
            s.close()
