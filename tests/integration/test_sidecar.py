"""Sidecar mode (transparent interception, as Istio sets Envoy up), each test inside a network
namespace it creates: iptables nat OUTPUT REDIRECT sends connections from 127.0.0.5 (curl
--interface 127.0.0.5) to remora's capturing listener (original_dst + use_original_dst, Istio's
virtualOutbound); remora restores the original destination (SO_ORIGINAL_DST), hands the
connection to the bind_to_port: false listener of that port (Istio's 0.0.0.0_PORT), whose
route goes to an ORIGINAL_DST cluster (Istio's PassthroughCluster) that connects to the original
destination.  remora's own upstream connections leave from 127.0.0.1 and are not redirected.

in_netns() forks a child that unshares its network namespace (ctypes: Python 3.11 has no
os.unshare), brings lo up, installs the rules and runs the test body there; every process the
body starts inherits the namespace.  The parent waits with a bound and turns the child's outcome
into the runner's pass/fail; processes are killed by PID (the child records them)."""
import ctypes
import os
import re
import signal
import subprocess
import time
import traceback

from harness import TestFailure, free_port, wait_port
from remora_cfg import ROUTER

CLONE_NEWNET = 0x40000000
CLIENT_IP = "127.0.0.5"  # connections from here are redirected
CLIENT_IP6 = "::5"  # the same for IPv6 (in_netns(v6=True))
NETNS_TIMEOUT = 90


# ---- the namespace ---------------------------------------------------------------------------

def _child(ctx, body, capture_port, w, v6):
    """In the forked child: a new network namespace, then body(ctx).  Never returns."""
    code = 1
    msg = b""
    try:
        signal.alarm(max(1, NETNS_TIMEOUT - 10))  # the runner's SIGALRM handler raises
        pidfile = os.path.join(ctx.tmp, "netns.pids")
        spawn = ctx.spawn

        def spawn_recorded(*a, **k):
            pr = spawn(*a, **k)
            with open(pidfile, "a") as f:
                f.write(f"{pr.p.pid}\n")
            return pr
        ctx.spawn = spawn_recorded
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
        ctx.run(["ip", "link", "set", "lo", "up"], check=True)
        ctx.run(["iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-s", CLIENT_IP,
                 "-j", "REDIRECT", "--to-ports", str(capture_port)], check=True)
        if v6:  # IPv6 loopback is ::1 alone: the client and upstream addresses are added
            for a in (CLIENT_IP6, "::2"):
                ctx.run(["ip", "-6", "addr", "add", f"{a}/128", "dev", "lo", "nodad"], check=True)
            ctx.run(["ip6tables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-s", CLIENT_IP6,
                     "-j", "REDIRECT", "--to-ports", str(capture_port)], check=True)
        try:
            body(ctx)
        finally:
            signal.alarm(0)
            ctx.cleanup()
        bad = ctx.sanitizer_reports()
        if bad:
            raise TestFailure("sanitizer report:\n" + "\n".join(f"{p}:\n{o}" for p, o in bad))
        code = 0
    except BaseException:  # noqa: BLE001 - everything goes back to the parent
        msg = traceback.format_exc().encode()
        for pr in ctx.procs:
            msg += (f"\n--- {os.path.basename(pr.p.args[0])} log (last 3000 chars) ---\n"
                    f"{pr.output()[-3000:]}").encode()
        ctx.cleanup()
    finally:
        try:
            os.write(w, msg[-60000:])
        finally:
            os._exit(code)


def in_netns(ctx, body, capture_port, v6=False):
    """Run body(ctx) in a child process inside a fresh network namespace whose OUTPUT REDIRECT
    sends TCP from CLIENT_IP to capture_port; raise the child's failure here."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        _child(ctx, body, capture_port, w, v6)
    os.close(w)
    os.set_blocking(r, False)
    out = b""
    deadline = time.monotonic() + NETNS_TIMEOUT
    status = None
    while time.monotonic() < deadline:
        try:
            chunk = os.read(r, 65536)
            out += chunk
        except BlockingIOError:
            pass
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        _kill_recorded(ctx)
        os.close(r)
        raise TestFailure(f"the namespaced test did not finish within {NETNS_TIMEOUT}s")
    try:
        while True:
            chunk = os.read(r, 65536)
            if not chunk:
                break
            out += chunk
    except BlockingIOError:
        pass
    os.close(r)
    _kill_recorded(ctx)
    if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
        raise TestFailure("in the network namespace:\n" + out.decode("utf-8", "replace"))


def _kill_recorded(ctx):
    pidfile = os.path.join(ctx.tmp, "netns.pids")
    if not os.path.exists(pidfile):
        return
    with open(pidfile) as f:
        for line in f:
            try:
                os.killpg(int(line), signal.SIGKILL)  # each was started in its own session
            except (ProcessLookupError, ValueError, PermissionError):
                pass


# ---- config ----------------------------------------------------------------------------------

def hcm(stat_prefix, route, log_path):
    return """
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: %s
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: %s
              log_format:
                text_format_source:
                  inline_string: "%%DOWNSTREAM_LOCAL_ADDRESS%% %%UPSTREAM_HOST%% %%RESPONSE_CODE%% %%RESPONSE_FLAGS%% %%REQ(:PATH)%%\\n"
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                %s""" % (stat_prefix, log_path, route) + ROUTER


PASSTHROUGH = """
  - name: PassthroughCluster
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    connect_timeout: 1s
    cleanup_interval: %s
    original_dst_lb_config: { use_http_header: true }"""


def sidecar_config(ctx, uport, cleanup="5s"):
    """Capturing listener {port0} (127.0.0.1, where REDIRECT sends), a bind_to_port: false
    listener on 0.0.0.0:<uport> routing to the ORIGINAL_DST cluster, and a plain listener {port1}
    routing to it too (direct connections: no original destination)."""
    logs = {k: os.path.join(ctx.tmp, f"{k}.log") for k in ("capture", "port", "direct")}
    text = """
admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: {admin} }
static_resources:
  listeners:
  - name: virtualOutbound
    address:
      socket_address: { address: 127.0.0.1, port_value: {port0} }
    use_original_dst: true
    listener_filters:
    - name: envoy.filters.listener.original_dst
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst
""" + hcm("capture", 'direct_response: { status: 200, body: { inline_string: "captured" } }',
          logs["capture"]) + """
  - name: 0.0.0.0_%d
    address:
      socket_address: { address: 0.0.0.0, port_value: %d }
    bind_to_port: false""" % (uport, uport) + hcm("outbound_%d" % uport,
                                                  "route: { cluster: PassthroughCluster }",
                                                  logs["port"]) + """
  - name: direct
    address:
      socket_address: { address: 127.0.0.1, port_value: {port1} }""" + hcm(
        "direct", "route: { cluster: PassthroughCluster }", logs["direct"]) + """
  clusters:""" + PASSTHROUGH % cleanup + "\n"
    return text, logs


def upstream_at(ctx, ip, port, name):
    pr = ctx.spawn([ctx.bin("remora-upstream"), "--listen", f"{ip}:{port}", "--name", name],
                   f"upstream-{name}")
    wait_port(port, host=ip, proc=pr.p)
    return pr


def captured(ctx, url, headers=None):
    """A request from CLIENT_IP: redirected to the capturing listener."""
    return ctx.curl(url, "--interface", CLIENT_IP, headers=headers, timeout=10)


def stats(ctx, px):
    r = ctx.curl(f"http://127.0.0.1:{px.admin}/stats")
    out = {}
    for line in r.body.decode().splitlines():
        k, _, v = line.partition(": ")
        if v.lstrip("-").isdigit():
            out[k] = int(v)
    return out


def clusters_text(ctx, px):
    return ctx.curl(f"http://127.0.0.1:{px.admin}/clusters").body.decode()


def log_lines(path, n, timeout=10):
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path) as f:
                lines = f.read().splitlines()
            if len(lines) >= n:
                return lines
        time.sleep(0.05)
    raise TestFailure(f"{path}: {len(lines)} lines, {n} expected: {lines}")


def ports(n):
    """Distinct free ports (the namespace starts empty; free_port binds 127.0.0.1)."""
    out = []
    while len(out) < n:
        p = free_port()
        if p not in out:
            out.append(p)
    return out


# ---- tests -----------------------------------------------------------------------------------

def test_sidecar_outbound_capture(ctx):
    """Redirected connections reach the upstream they were meant for through the hand-off and
    the ORIGINAL_DST cluster; no listener for the port: the capturing listener answers; a direct
    connection to the capturing listener works; DOWNSTREAM_LOCAL_ADDRESS is the original
    destination."""
    capture, direct, uport, other = ports(4)

    def body(ctx):
        upstream_at(ctx, "127.0.0.2", uport, "a")
        upstream_at(ctx, "127.0.0.3", uport, "b")
        text, logs = sidecar_config(ctx, uport)
        px = ctx.remora(text, ports=[capture, direct])
        r = captured(ctx, f"http://127.0.0.2:{uport}/one")
        assert r.status == 200 and r.headers.get("x-upstream-name") == "a", r
        r = captured(ctx, f"http://127.0.0.3:{uport}/two")
        assert r.status == 200 and r.headers.get("x-upstream-name") == "b", r
        lines = log_lines(logs["port"], 2)
        assert lines[0] == f"127.0.0.2:{uport} 127.0.0.2:{uport} 200 - /one", lines
        assert lines[1] == f"127.0.0.3:{uport} 127.0.0.3:{uport} 200 - /two", lines
        # a port without a listener of its own stays with the capturing listener
        r = captured(ctx, f"http://127.0.0.2:{other}/none")
        assert r.status == 200 and r.body == b"captured", r
        # a direct (not redirected) connection to the capturing listener: its real address
        r = ctx.curl(f"http://127.0.0.1:{capture}/direct")
        assert r.status == 200 and r.body == b"captured", r
        lines = log_lines(logs["capture"], 2)
        assert lines[0].startswith(f"127.0.0.2:{other} - 200 - /none"), lines
        assert lines[1].startswith(f"127.0.0.1:{capture} - 200 - /direct"), lines
        s = stats(ctx, px)
        assert s.get(f"listener.0.0.0.0_{uport}.downstream_cx_total") == 2, s
        assert s.get(f"http.outbound_{uport}.downstream_rq_total") == 2, s
        assert s.get("http.capture.downstream_rq_total") == 2, s
        assert s.get("cluster.PassthroughCluster.upstream_rq_total") == 2, s
        assert s.get("cluster.PassthroughCluster.membership_total") == 2, s
        cl = clusters_text(ctx, px)
        assert f"PassthroughCluster::127.0.0.2:{uport}::rq_total::1" in cl, cl
        assert f"PassthroughCluster::127.0.0.3:{uport}::rq_total::1" in cl, cl

    in_netns(ctx, body, capture)


def test_sidecar_original_dst_header_and_no_destination(ctx):
    """use_http_header: a valid x-envoy-original-dst-host wins over the restored address, an
    invalid one is counted and ignored; a direct connection gives the ORIGINAL_DST cluster no
    destination: 503 UH."""
    capture, direct, uport = ports(3)

    def body(ctx):
        upstream_at(ctx, "127.0.0.2", uport, "a")
        upstream_at(ctx, "127.0.0.3", uport, "b")
        text, logs = sidecar_config(ctx, uport)
        px = ctx.remora(text, ports=[capture, direct])
        r = captured(ctx, f"http://127.0.0.2:{uport}/h",
                     headers={"x-envoy-original-dst-host": f"127.0.0.3:{uport}"})
        assert r.status == 200 and r.headers.get("x-upstream-name") == "b", r
        r = captured(ctx, f"http://127.0.0.2:{uport}/bad",
                     headers={"x-envoy-original-dst-host": "not-an-address"})
        assert r.status == 200 and r.headers.get("x-upstream-name") == "a", r
        assert stats(ctx, px).get("cluster.PassthroughCluster.original_dst_host_invalid") == 1
        r = ctx.curl(f"http://127.0.0.1:{direct}/nodst")
        assert r.status == 503 and r.body == b"no healthy upstream", r
        lines = log_lines(logs["direct"], 1)
        assert lines[0] == f"127.0.0.1:{direct} - 503 UH /nodst", lines
        # the header alone is enough on a direct connection
        r = ctx.curl(f"http://127.0.0.1:{direct}/hdr",
                     headers={"x-envoy-original-dst-host": f"127.0.0.2:{uport}"})
        assert r.status == 200 and r.headers.get("x-upstream-name") == "a", r
        assert stats(ctx, px).get("cluster.PassthroughCluster.upstream_cx_none_healthy") == 1

    in_netns(ctx, body, capture)


def test_sidecar_cleanup_interval_removes_unused_hosts(ctx):
    """An original destination host not used for a cleanup_interval leaves /clusters and the
    membership; one still in use stays."""
    capture, direct, uport = ports(3)

    def body(ctx):
        upstream_at(ctx, "127.0.0.2", uport, "a")
        upstream_at(ctx, "127.0.0.3", uport, "b")
        text, _ = sidecar_config(ctx, uport, cleanup="0.5s")
        px = ctx.remora(text, ports=[capture, direct])
        for ip in ("127.0.0.2", "127.0.0.3"):
            r = captured(ctx, f"http://{ip}:{uport}/")
            assert r.status == 200, r
        cl = clusters_text(ctx, px)
        assert f"PassthroughCluster::127.0.0.2:{uport}::cx_total::1" in cl, cl
        # keep 127.0.0.3 in use; 127.0.0.2 is idle: gone within two sweeps
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = captured(ctx, f"http://127.0.0.3:{uport}/")
            assert r.status == 200, r
            cl = clusters_text(ctx, px)
            if f"127.0.0.2:{uport}" not in cl:
                break
            time.sleep(0.1)
        else:
            raise TestFailure("127.0.0.2 still listed: " + cl)
        assert f"PassthroughCluster::127.0.0.3:{uport}::" in cl, cl
        s = stats(ctx, px)
        assert s.get("cluster.PassthroughCluster.membership_total") == 1, s
        # its pool drained: the idle keep-alive connection to 127.0.0.2 was closed
        assert s.get("cluster.PassthroughCluster.upstream_cx_destroy", 0) >= 1, s
        # a new request makes it again
        r = captured(ctx, f"http://127.0.0.2:{uport}/again")
        assert r.status == 200 and r.headers.get("x-upstream-name") == "a", r
        assert f"PassthroughCluster::127.0.0.2:{uport}::" in clusters_text(ctx, px)

    in_netns(ctx, body, capture)


test_sidecar_outbound_capture.timeout = NETNS_TIMEOUT + 20
test_sidecar_original_dst_header_and_no_destination.timeout = NETNS_TIMEOUT + 20
test_sidecar_cleanup_interval_removes_unused_hosts.timeout = NETNS_TIMEOUT + 20


# ---- over xDS --------------------------------------------------------------------------------

def xds_listener(name, addr, port, extra, route):
    from test_xds_lds_cds import HCM, T
    return f"""
- "@type": {T}envoy.config.listener.v3.Listener
  name: {name}
  address: {{ socket_address: {{ address: {addr}, port_value: {port} }} }}{extra}
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": {HCM}
        stat_prefix: {name}
        route_config:
          virtual_hosts:
          - name: all
            domains: ["*"]
            routes:
            - match: {{ prefix: / }}
              {route}
        http_filters:
        - name: envoy.filters.http.router
          typed_config: {{ "@type": {T}envoy.extensions.filters.http.router.v3.Router }}"""


def test_sidecar_lds_unbound_listener_lifecycle(ctx):
    """Over LDS and CDS: the capturing listener and the ORIGINAL_DST cluster arrive over xDS; a
    bind_to_port: false listener added later takes the redirected connections of its port (no
    socket: the upstream already has that port on 127.0.0.2), an update changes what it does,
    and once removed the capturing listener gets them again."""
    from test_xds_lds_cds import T, bootstrap, put, wait_for
    from test_xds_server import Xds
    capture, uport = ports(2)

    def body(ctx):
        upstream_at(ctx, "127.0.0.2", uport, "a")
        d = os.path.join(ctx.tmp, "xds")
        os.makedirs(d)
        cap = xds_listener("virtualOutbound", "127.0.0.1", capture, """
  use_original_dst: true
  listener_filters:
  - name: envoy.filters.listener.original_dst
    typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst }""",  # noqa: E501
                           'direct_response: { status: 200, body: { inline_string: "captured" } }')

        def port_listener(route):
            return xds_listener(f"0.0.0.0_{uport}", "0.0.0.0", uport,
                                "\n  bind_to_port: false", route)
        put(d, "c.yaml", f"""
- "@type": {T}envoy.config.cluster.v3.Cluster
  name: PassthroughCluster
  type: ORIGINAL_DST
  lb_policy: CLUSTER_PROVIDED
  connect_timeout: 1s""")
        put(d, "l.yaml", cap)
        xds = Xds(ctx, d)
        px = ctx.remora(bootstrap(xds.port), wait=False)
        wait_port(px.admin, proc=px.p)
        wait_for("/ready", lambda: ctx.curl(f"http://127.0.0.1:{px.admin}/ready").status == 200)

        def body_of():
            r = captured(ctx, f"http://127.0.0.2:{uport}/")
            return r.body if r.status == 200 else r.status

        assert body_of() == b"captured"
        put(d, "l.yaml", cap, port_listener("route: { cluster: PassthroughCluster }"))
        wait_for("the hand-off to the new listener",
                 lambda: captured(ctx, f"http://127.0.0.2:{uport}/").headers.get(
                     "x-upstream-name") == "a")
        r = captured(ctx, f"http://127.0.0.2:{uport}/")
        assert r.status == 200 and r.headers.get("x-upstream-name") == "a", r
        put(d, "l.yaml", cap, port_listener(
            'direct_response: { status: 200, body: { inline_string: "updated" } }'))
        wait_for("the updated listener", lambda: body_of() == b"updated")
        put(d, "l.yaml", cap)
        wait_for("the removed listener", lambda: body_of() == b"captured")
        s = stats(ctx, px)
        assert s.get("listener_manager.lds.update_rejected", 0) == 0, s
        assert px.p.poll() is None

    in_netns(ctx, body, capture)


test_sidecar_lds_unbound_listener_lifecycle.timeout = NETNS_TIMEOUT + 20


def test_sidecar_ipv6_capture(ctx):
    """IPv6 (IP6T_SO_ORIGINAL_DST): a connection from ::5 to [::2]:PORT redirected to the
    capturing listener on [::1] goes to the [::]:PORT listener and to [::2]:PORT upstream.  The
    capturing listener names no listener filter: use_original_dst adds it (as Envoy)."""
    capture, uport = ports(2)

    def body(ctx):
        pr = ctx.spawn([ctx.bin("remora-upstream"), "--listen", f"[::2]:{uport}", "--name", "v6"],
                       "upstream-v6")
        wait_port(uport, host="::2", proc=pr.p)
        log = os.path.join(ctx.tmp, "port.log")
        text = """
admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: {admin} }
static_resources:
  listeners:
  - name: virtualOutbound
    address:
      socket_address: { address: "::1", port_value: {port0} }
    use_original_dst: true
""" + hcm("capture", 'direct_response: { status: 200, body: { inline_string: "captured" } }',
          os.path.join(ctx.tmp, "capture.log")) + """
  - name: "[::]_%d"
    address:
      socket_address: { address: "::", port_value: %d }
    bind_to_port: false""" % (uport, uport) + hcm("outbound_v6", "route: { cluster: PassthroughCluster }",
                                                  log) + """
  clusters:""" + PASSTHROUGH % "5s" + "\n"
        px = ctx.remora(text, ports=[capture], wait=False)
        wait_port(px.admin, proc=px.p)
        wait_port(capture, host="::1", proc=px.p)
        r = ctx.curl(f"http://[::2]:{uport}/six", "--interface", CLIENT_IP6, timeout=10)
        assert r.status == 200 and r.headers.get("x-upstream-name") == "v6", r
        lines = log_lines(log, 1)
        assert lines[0] == f"[::2]:{uport} [::2]:{uport} 200 - /six", lines

    in_netns(ctx, body, capture, v6=True)


test_sidecar_ipv6_capture.timeout = NETNS_TIMEOUT + 20
