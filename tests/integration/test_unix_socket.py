"""Unix domain socket addresses (Envoy's Address.pipe): listeners, upstream endpoints and the
xDS gRPC channel on unix sockets, as Istio's sidecar bootstrap uses them (its xds-grpc cluster
reaches istio-agent at pipe ./etc/istio/proxy/XDS).

Shown here: a listener on a socket file (bound over a stale file, as Envoy unlinks before bind,
its pipe.mode applied, shared by two workers, HTTP/1.1 and h2c through curl --unix-socket), the
admin on a socket file, and
one on an abstract socket (@name) routed to a TCP remora-upstream; the downstream address
operators print the listener's path (Envoy names a pipe peer by the listener's own socket) and
no x-forwarded-for is added for a pipe peer (Envoy's appendXff takes IPs only); the file stays
after exit (Envoy does not unlink it); a TCP listener routed to remora-upstream on a socket
file (HTTP/1.1), an abstract socket (h2c) and a socket file with TLS origination, /clusters
and UPSTREAM_HOST naming the hosts by path, a missing socket counted as a connect failure;
config errors name their field; ADS over a unix socket from the grpcio control plane
delivering a pipe listener and a pipe EDS endpoint that then serve (the listener removed over
LDS stops accepting); per-type api_config_source streams to remora-xds on a unix socket."""
import json
import os
import socket
import stat
import time
import uuid

import harness
import remora_cfg as cfg
from pycp import PyCP, eds_cluster, route_config
from test_tls import certs, upstream_tls
from test_xds_lds_cds import H2_OPTS, HCM, ROUTER, put, route, source, wait_for
from test_xds_lds_cds import cluster as xds_cluster
from test_xds_lds_cds import cla as xds_cla
from test_xds_lds_cds import listener as xds_listener


def connectable(path):
    """Whether something accepts on unix socket <path> ("@name": abstract)."""
    addr = "\0" + path[1:] if path.startswith("@") else path
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            s.connect(addr)
            return True
        except OSError:
            return False


def wait_unix(path, proc=None, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not connectable(path):
        if proc is not None and proc.poll() is not None:
            raise harness.TestFailure(f"{proc.args[0]} exited {proc.returncode} before "
                                      f"listening on {path}")
        if time.monotonic() > deadline:
            raise harness.TestFailure(f"nothing listening on unix socket {path}")
        time.sleep(0.02)


def curl_unix(ctx, path, url_path="/", **kw):
    opt = ["--abstract-unix-socket", path[1:]] if path.startswith("@") else ["--unix-socket",
                                                                              path]
    return ctx.curl(f"http://localhost{url_path}", *opt, **kw)


def listening_sockets(path):
    """How many listening unix sockets are bound to <path> (/proc/net/unix: flags 00010000)."""
    n = 0
    with open("/proc/net/unix") as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            if len(cols) >= 8 and cols[7] == path and cols[3] == "00010000":
                n += 1
    return n


def unix_upstream(ctx, path, name, *extra):
    pr = ctx.spawn([ctx.bin("remora-upstream"), "--listen", f"unix:{path}", "--name", name] +
                   list(extra), f"upstream-{name}")
    wait_unix(path, pr.p)
    return pr


def abstract_name(tag):
    return f"@remora-it-{tag}-{uuid.uuid4().hex[:12]}"


def read_lines(path, n, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        lines = open(path).read().splitlines() if os.path.exists(path) else []
        if len(lines) >= n or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


ALOG_FORMAT = ("%DOWNSTREAM_REMOTE_ADDRESS%|%DOWNSTREAM_LOCAL_ADDRESS%|"
               "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%|%UPSTREAM_HOST%|%REQ(:PATH)%\\n")


def access_log(path):
    """HCM fields (indented for the HCM's typed_config) for a text access log to <path>."""
    return f"""
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {path}
              log_format: {{ text_format_source: {{ inline_string: "{ALOG_FORMAT}" }} }}"""


def pipe_listener(name, pipe, alog):
    return f"""
  - name: {name}
    address: {{ pipe: {pipe} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": {HCM}
          stat_prefix: {name}
          use_remote_address: true{access_log(alog)}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: backend }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{ "@type": {ROUTER} }}"""


def test_pipe_listeners(ctx):
    up = ctx.upstream(name="tcp-up")
    sock = os.path.join(ctx.tmp, "in.sock")
    abstract = abstract_name("l")
    alog = os.path.join(ctx.tmp, "access.log")
    # a previous run's socket file: nothing accepts on it; remora replaces it (Envoy unlinks)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(sock)
    assert stat.S_ISSOCK(os.stat(sock).st_mode) and not connectable(sock)
    admin = os.path.join(ctx.tmp, "admin.sock")
    yaml = f"""
admin: {{ address: {{ pipe: {{ path: {admin}, mode: 384 }} }} }}
static_resources:
  listeners:{pipe_listener("file", f"{{ path: {sock}, mode: 416 }}", alog)}\
{pipe_listener("abstract", f'{{ path: "{abstract}" }}', alog)}
  clusters:{cfg.cluster("backend", [up.port])}
"""
    px = ctx.remora(yaml, "--concurrency", "2", wait=False)
    wait_unix(admin, px.p)
    wait_unix(sock, px.p)
    wait_unix(abstract, px.p)

    # pipe.mode (416 = 0640, 384 = 0600) is the socket file's mode
    st = os.stat(sock)
    assert stat.S_ISSOCK(st.st_mode), oct(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o640, oct(st.st_mode)
    assert stat.S_IMODE(os.stat(admin).st_mode) == 0o600, oct(os.stat(admin).st_mode)

    # one socket, shared by the two workers (not one each: a second bind would have taken the
    # path from the first)
    assert listening_sockets(sock) == 1 and listening_sockets(abstract) == 1

    # HTTP/1.1 and h2c over the socket file; no x-forwarded-for for a pipe peer
    for h2 in (False, True):
        r = curl_unix(ctx, sock, "/h2" if h2 else "/h1", http2=h2,
                      headers={"x-upstream-echo-headers": "1"})
        assert r.status == 200 and r.headers.get("x-upstream-name") == "tcp-up", r
        assert "x-echo-x-forwarded-for" not in r.headers, r
        assert r.headers.get("x-echo-x-forwarded-proto") == "http", r
    # connections spread over both workers' shared socket: all served
    n = 24
    for i in range(n):
        r = curl_unix(ctx, sock, f"/n{i}")
        assert r.status == 200, (i, r)
    r = curl_unix(ctx, abstract, "/abstract")
    assert r.status == 200 and r.headers.get("x-upstream-name") == "tcp-up", r
    assert not os.path.exists(os.path.join(ctx.tmp, abstract[1:])), "abstract: no file"

    # the downstream addresses are the listener's path; UPSTREAM_HOST the TCP upstream
    lines = read_lines(alog, n + 3)
    want_file = f"{sock}|{sock}|{sock}|127.0.0.1:{up.port}|"
    assert f"{want_file}/h1" in lines and f"{want_file}/h2" in lines, lines
    assert f"{abstract}|{abstract}|{abstract}|127.0.0.1:{up.port}|/abstract" in lines, lines
    assert sum(ln.startswith(want_file + "/n") for ln in lines) == n, lines

    # the admin on its pipe: /listeners and the listener's stats name the pipes
    r = curl_unix(ctx, admin, "/listeners?format=json")
    assert r.status == 200, r
    ls = {x["name"]: x["local_address"] for x in json.loads(r.body)["listener_statuses"]}
    assert ls == {"file": {"pipe": {"path": sock}}, "abstract": {"pipe": {"path": abstract}}}, ls
    stats = curl_unix(ctx, admin, "/stats").body.decode()
    # (+1: wait_unix's probe connection)
    assert f"listener.{sock}.downstream_cx_total: {n + 3}" in stats, stats

    # exit: the socket file stays (Envoy does not unlink it), nothing accepts on it
    assert ctx.stop(px) == 0
    assert stat.S_ISSOCK(os.stat(sock).st_mode), "socket file removed at exit"
    assert not connectable(sock) and not connectable(abstract)
    bad = ctx.sanitizer_reports()
    assert not bad, bad


def pipe_cluster(name, pipes, extra=""):
    eps = "".join(f"""
        - endpoint: {{ address: {{ pipe: {{ path: "{p}" }} }} }}""" for p in pipes)
    return f"""
  - name: {name}
    type: STATIC
    connect_timeout: 1s{extra}
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:{eps}"""


def cluster_stat(ctx, px, name, stat_name):
    for line in ctx.curl(f"http://127.0.0.1:{px.admin}/stats").body.decode().splitlines():
        if line.startswith(f"cluster.{name}.{stat_name}: "):
            return int(line.split(": ")[1])
    return None


def test_pipe_upstreams(ctx):
    c = certs(ctx)
    file_sock = os.path.join(ctx.tmp, "up1.sock")
    tls_sock = os.path.join(ctx.tmp, "up-tls.sock")
    abstract = abstract_name("u")
    missing = os.path.join(ctx.tmp, "nobody.sock")
    unix_upstream(ctx, file_sock, "pipe-h1", "-t", "2")
    unix_upstream(ctx, abstract, "pipe-h2")
    unix_upstream(ctx, tls_sock, "pipe-tls", "--tls-cert", c["server_crt"], "--tls-key",
                  c["server_key"])
    alog = os.path.join(ctx.tmp, "access.log")
    routes = "".join(f"""
              - match: {{ prefix: "/{p}" }}
                route: {{ cluster: {p} }}""" for p in ("h1", "h2", "tls", "missing"))
    clusters = [pipe_cluster("h1", [file_sock]),
                pipe_cluster("h2", [abstract], cfg.H2_OPTS),
                pipe_cluster("tls", [tls_sock], upstream_tls(c)),
                pipe_cluster("missing", [missing])]
    px = ctx.remora(cfg.bootstrap(routes, clusters, hcm_extra=access_log(alog)))
    base = f"http://127.0.0.1:{px.port}"

    for path, name, proto in (("/h1", "pipe-h1", "HTTP/1.1"), ("/h2", "pipe-h2", "HTTP/2"),
                              ("/tls", "pipe-tls", "HTTP/1.1")):
        for _ in range(3):
            r = ctx.curl(base + path + "/echo-request", headers={"x-upstream-echo-request": "1"})
            assert r.status == 200 and r.headers.get("x-upstream-name") == name, r
            assert json.loads(r.body)["protocol"] == proto, r
    r = ctx.curl(base + "/missing")
    assert r.status == 503, r
    assert cluster_stat(ctx, px, "missing", "upstream_cx_connect_fail") >= 1
    assert cluster_stat(ctx, px, "h2", "upstream_cx_total") == 1  # one h2 connection
    assert cluster_stat(ctx, px, "tls", "ssl.handshake") >= 1

    # hosts are named by their path (abstract: @name): /clusters, UPSTREAM_HOST
    text = ctx.curl(f"http://127.0.0.1:{px.admin}/clusters").body.decode()
    assert f"h1::{file_sock}::rq_success::3" in text, text
    assert f"h2::{abstract}::rq_success::3" in text, text
    assert f"tls::{tls_sock}::rq_success::3" in text, text
    assert f"missing::{missing}::cx_connect_fail::1" in text, text
    js = json.loads(ctx.curl(f"http://127.0.0.1:{px.admin}/clusters?format=json").body)
    addrs = {cs["name"]: [h["address"] for h in cs.get("host_statuses", [])]
             for cs in js["cluster_statuses"]}
    assert addrs["h1"] == [{"pipe": {"path": file_sock}}], addrs
    assert addrs["h2"] == [{"pipe": {"path": abstract}}], addrs
    lines = read_lines(alog, 10)
    assert any(ln.endswith(f"|{file_sock}|/h1/echo-request") for ln in lines), lines
    assert any(ln.endswith(f"|{abstract}|/h2/echo-request") for ln in lines), lines
    bad = ctx.sanitizer_reports()
    assert not bad, bad


def test_pipe_config_errors(ctx):
    ip = "socket_address: { address: 127.0.0.1, port_value: 1 }"
    long_path = "/" + "a" * 107

    def check(listener_addr, cluster_type, endpoint_addr, want):
        path = os.path.join(ctx.tmp, "bad.yaml")
        with open(path, "w") as f:
            f.write(f"""
static_resources:
  listeners:
  - name: l
    address: {{ {listener_addr} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": {HCM}
          stat_prefix: l
          route_config: {{ virtual_hosts: [ {{ name: v, domains: ["*"] }} ] }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{ "@type": {ROUTER} }}
  clusters:
  - name: c
    type: {cluster_type}
    load_assignment:
      cluster_name: c
      endpoints: [ {{ lb_endpoints: [ {{ endpoint: {{ address: {{ {endpoint_addr} }} }} }} ] }} ]
""")
        r = ctx.run([ctx.bin("remora"), "-c", path, "--mode", "validate"], timeout=30)
        err = r.stderr.decode() + r.stdout.decode()
        assert r.returncode == 1 and want in err, (r.returncode, err, want)

    check('pipe: { path: "@x", mode: 384 }', "STATIC", ip,
          'static_resources.listeners[0].address.pipe.mode: cannot set mode for abstract '
          'AF_UNIX sockets ("@x")')
    check(f"pipe: {{ path: {long_path} }}", "STATIC", ip,
          "static_resources.listeners[0].address.pipe.path: \"/aaa")
    check(ip, "STATIC", "pipe: { path: /x, mode: 512 }",
          "static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint."
          "address.pipe.mode: 512")
    for t in ("STRICT_DNS", "LOGICAL_DNS"):
        check(ip, t, "pipe: { path: /x.sock }",
              "static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0]."
              "endpoint.address.pipe: a DNS cluster's endpoints are DNS names and ports")


def xds_pipe_bootstrap(xds_sock, dynamic, name="xds-grpc"):
    """Istio's shape: the xDS cluster's endpoint is a pipe."""
    return f"""
admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{admin}} }} }} }}
node: {{ id: sidecar-pipe-1, cluster: test }}
static_resources:
  clusters:
  - name: {name}
    type: STATIC
    connect_timeout: 1s{H2_OPTS}
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ pipe: {{ path: {xds_sock} }} }} }}
dynamic_resources:{dynamic}
"""


def test_ads_over_unix_socket(ctx):
    xds_dir = os.path.join(ctx.tmp, "etc", "istio", "proxy")
    os.makedirs(xds_dir)
    xds_sock = os.path.join(xds_dir, "XDS")
    app_sock = os.path.join(ctx.tmp, "app.sock")
    in_sock = os.path.join(ctx.tmp, "inbound.sock")
    unix_upstream(ctx, app_sock, "app")
    lst = {"name": "inbound", "address": {"pipe": {"path": in_sock, "mode": 0o600}},
           "filter_chains": [{"filters": [{
               "name": "envoy.filters.network.http_connection_manager",
               "typed_config": {
                   "@type": HCM, "stat_prefix": "inbound",
                   "rds": {"config_source": {"ads": {}, "resource_api_version": "V3"},
                           "route_config_name": "r"},
                   "http_filters": [{"name": "envoy.filters.http.router",
                                     "typed_config": {"@type": ROUTER}}]}}]}]}
    assignment = {"cluster_name": "backend", "endpoints": [{"lb_endpoints": [
        {"endpoint": {"address": {"pipe": {"path": app_sock}}}}]}]}
    srv = PyCP(unix=xds_sock)
    try:
        versions = {"lds": srv.set("lds", {"inbound": lst}),
                    "rds": srv.set("rds", {"r": route_config("r", [("/", "backend")])}),
                    "cds": srv.set("cds", {"backend": eds_cluster("backend")}),
                    "eds": srv.set("eds", {"backend": assignment})}
        dynamic = """
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    grpc_services: [ { envoy_grpc: { cluster_name: xds-grpc } } ]
  cds_config: { ads: {}, resource_api_version: V3 }
  lds_config: { ads: {}, resource_api_version: V3 }"""
        px = ctx.remora(xds_pipe_bootstrap(xds_sock, dynamic), "--concurrency", "2", wait=False)
        harness.wait_port(px.admin, proc=px.p)
        wait_for("/ready",
                 lambda: ctx.curl(f"http://127.0.0.1:{px.admin}/ready").status == 200)
        for t, v in versions.items():
            srv.wait_ack(t, v)
        wait_unix(in_sock, px.p)
        assert stat.S_IMODE(os.stat(in_sock).st_mode) == 0o600
        for i in range(6):  # the LDS listener's socket, shared by both workers
            r = curl_unix(ctx, in_sock, f"/via-xds/{i}")
            assert r.status == 200 and r.headers.get("x-upstream-name") == "app", r
        text = ctx.curl(f"http://127.0.0.1:{px.admin}/clusters").body.decode()
        assert f"backend::{app_sock}::rq_success::6" in text, text
        assert srv.streams_opened == 1

        # the listener removed over LDS stops accepting
        v = srv.set("lds", {})
        srv.wait_ack("lds", v)
        wait_for("inbound closed", lambda: not connectable(in_sock))
        assert px.alive()
    finally:
        srv.stop()
    bad = ctx.sanitizer_reports()
    assert not bad, bad


def test_per_type_xds_over_unix_socket(ctx):
    """api_config_source streams (CDS, EDS state of the world; LDS, RDS Delta) to remora-xds
    listening on a unix socket."""
    a = ctx.upstream(name="a")
    d = os.path.join(ctx.tmp, "xds")
    os.makedirs(d)
    lport = harness.free_port()
    xds_sock = os.path.join(ctx.tmp, "xds.sock")
    put(d, "l.yaml", xds_listener("l1", lport, "r1", rds_api="DELTA_GRPC"), route("r1", "c1"))
    put(d, "c.yaml", xds_cluster("c1", eds_api="GRPC"), xds_cla("c1", a.port))
    xds = ctx.spawn([ctx.bin("remora-xds"), "--dir", d, "--listen", f"unix:{xds_sock}", "-l",
                     "debug"], "xds")
    wait_unix(xds_sock, xds.p)
    # the resources' own config sources (test_xds_lds_cds.source) name the cluster "xds"
    dynamic = f"""
  cds_config: {source("GRPC")}
  lds_config: {source("DELTA_GRPC")}"""
    xds_cfg = xds_pipe_bootstrap(xds_sock, dynamic, name="xds")
    px = ctx.remora(xds_cfg, wait=False)
    harness.wait_port(px.admin, proc=px.p)
    wait_for("/ready", lambda: ctx.curl(f"http://127.0.0.1:{px.admin}/ready").status == 200)
    r = ctx.curl(f"http://127.0.0.1:{lport}/")
    assert r.status == 200 and r.headers.get("x-upstream-name") == "a", r
    log = xds.output()
    for method in ("StreamClusters", "StreamEndpoints", "DeltaListeners", "DeltaRoutes"):
        assert f": {method}" in log, f"no {method} stream:\n{log[-3000:]}"
    bad = ctx.sanitizer_reports()
    assert not bad, bad
