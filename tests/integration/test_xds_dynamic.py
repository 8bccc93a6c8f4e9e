"""LDS, RDS, CDS and EDS over ADS: remora configured through dynamic_resources only (the
bootstrap holds the ADS cluster, node and admin; Envoy's shape), each test run against two
control planes -- pycp.PyCP (python3-grpcio, in-process) and build/remora-xds (a directory of
resource files) -- and over both protocols, SotW (api_type GRPC) and Delta (DELTA_GRPC).

A test body takes a control-plane adapter (PyAdapter / XdsAdapter, same interface: set(),
wait_ack(), wait_nack(), push_bad(), restore(), stop(), restart(), ...) and is instantiated as
test_<body>_<pycp|remora_xds>_<sotw|delta>.

Shown here, as Envoy behaves:
- lifecycle: CDS, EDS and LDS are ACKed while the listener warms for its RouteConfiguration
  (/ready 503); RDS makes it LIVE and curl through the dynamic listener reaches the EDS
  upstream; /config_dump shows every dynamic cluster, listener and route configuration with
  the version it last changed in (Delta: its per-resource version); cds/lds update_success
  equal the ACKs the control plane saw; an endpoint change under h2load loses nothing and moves
  the traffic; a second cluster with a route to it, a second listener that starts accepting,
  then removed (connection refused, the first keeps serving); a removed cluster makes its
  route 503 without contacting its old upstream, and its EDS subscription ends.
- nack: each bad input is NACKed (code 13, a message naming the resource and the field path,
  the bad response's nonce, SotW version_info = the last accepted) while the last good config
  keeps serving, and update_rejected counts it: an undecodable Any, a resource whose type_url
  is not the response's, duplicate names, an undefined lb_policy (pycp only: remora-xds cannot
  serve these), an unknown cluster extension, an unknown listener filter, a route to an
  unknown cluster with validate_clusters (both control planes).
- cp_restart: the control plane stops under h2load (control_plane.connected_state drops to
  0, traffic keeps flowing), comes back on the same port; the new stream carries the node and
  the last accepted versions (SotW) or initial_resource_versions (Delta: nothing is resent),
  later changes apply, no request fails.
- adapters: the two adapters themselves, driven by a scripted Python xDS client (FakeEnvoy),
  so that what the tests above rely on from the control planes is checked independently of
  remora.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import remora_cfg as cfg  # noqa: E402
from pycp import (SHORT, T_CLA, T_CLUSTER, T_LISTENER, T_ROUTE, PyCP, any_of, cla,  # noqa: E402
                  classes, eds_cluster, listener, message, name_of, route_config, to_bytes,
                  to_dict, type_url)
from test_dns_cluster import admin_get, wait_ready  # noqa: E402
from test_xds_server import Stream, _name, node, write  # noqa: E402

NODE = "sidecar-dyn-1"
RC = "local_routes"
ALL = ("cds", "eds", "lds", "rds")
REJECTED = {"cds": "cluster_manager.cds.update_rejected",
            "lds": "listener_manager.lds.update_rejected",
            "rds": f"http.ingress_http.rds.{RC}.update_rejected"}
LOG_TYPE = {t: type_url(t).rsplit(".", 1)[1] for t in ALL}   # remora-xds: "Cluster", ...


# ---- remora ------------------------------------------------------------------------------------

def bootstrap(api, xds_port, xds_extra=""):
    """Envoy's bootstrap for ADS: LDS and CDS over ADS, the ADS cluster static (HTTP/2;
    <xds_extra>: more of its YAML, e.g. a transport_socket)."""
    api_type = {"sotw": "GRPC", "delta": "DELTA_GRPC"}[api]
    return f"""
node: {{ id: {NODE}, cluster: test }}
admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: {{admin}} }}
dynamic_resources:
  ads_config:
    api_type: {api_type}
    transport_api_version: V3
    grpc_services:
    - envoy_grpc: {{ cluster_name: xds_cluster }}
  cds_config: {{ ads: {{}}, resource_api_version: V3 }}
  lds_config: {{ ads: {{}}, resource_api_version: V3 }}
static_resources:
  clusters:""" + cfg.cluster("xds_cluster", [xds_port], proto="h2", extra=xds_extra) + "\n"


def start_remora(ctx, api, xds_port):
    px = ctx.remora(bootstrap(api, xds_port), wait=False)
    harness.wait_port(px.admin, proc=px.p)
    return px


def base(up_port, port):
    """The first configuration: listener "ingress" on <port> -> RDS RC -> EDS cluster
    "backend" -> <up_port>."""
    return {"cds": {"backend": eds_cluster("backend")},
            "eds": {"backend": cla("backend", [up_port])},
            "lds": {"ingress": listener("ingress", port, RC)},
            "rds": {RC: route_config(RC, [("/", "backend")])}}


def stat(ctx, px, name):
    for line in admin_get(ctx, px, "/stats").body.decode().splitlines():
        k, _, v = line.partition(": ")
        if k == name:
            return int(v)
    raise harness.TestFailure(f"/stats has no {name}")


def wait_stat(ctx, px, name, want, timeout=10):
    deadline = time.monotonic() + timeout
    while (got := stat(ctx, px, name)) != want:
        if time.monotonic() > deadline:
            raise harness.TestFailure(f"{name} is {got}, not {want}, after {timeout}s")
        time.sleep(0.05)


def get(ctx, port, path="/"):
    r = ctx.curl(f"http://127.0.0.1:{port}{path}", timeout=10)
    return r.status, r.headers.get("x-upstream-name"), r


def names_seen(ctx, port, n, path="/"):
    seen = {}
    for _ in range(n):
        status, name, r = get(ctx, port, path)
        assert status == 200, (f"127.0.0.1:{port}{path}", r)
        seen[name] = seen.get(name, 0) + 1
    return seen


def wait_name(ctx, port, name, path="/", timeout=10):
    """Wait until 3 requests in a row to <path> are answered by upstream <name>."""
    deadline = time.monotonic() + timeout
    while True:
        got = [get(ctx, port, path)[:2] for _ in range(3)]
        if got == [(200, name)] * 3:
            return
        if time.monotonic() > deadline:
            raise harness.TestFailure(f"127.0.0.1:{port}{path} never moved to {name}: {got}")
        time.sleep(0.05)


def wait_status(ctx, port, path, status, timeout=10):
    deadline = time.monotonic() + timeout
    while (r := ctx.curl(f"http://127.0.0.1:{port}{path}", timeout=10)).status != status:
        if time.monotonic() > deadline:
            raise harness.TestFailure(f"127.0.0.1:{port}{path}: still {r} after {timeout}s")
        time.sleep(0.05)
    return r


def wait_refused(port, timeout=10):
    """Wait until a connection to 127.0.0.1:<port> is refused."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except ConnectionRefusedError:
            return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise harness.TestFailure(f"127.0.0.1:{port} still accepts after {timeout}s")
        time.sleep(0.05)


def upstream_requests(up):
    """Requests remora-upstream <up> has served (its SIGUSR1 line)."""
    n = up.output().count(" http1_requests=")
    up.p.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 5
    while up.output().count(" http1_requests=") <= n:
        if time.monotonic() > deadline:
            raise harness.TestFailure("remora-upstream did not answer SIGUSR1")
        time.sleep(0.02)
    m = re.findall(r"http1_requests=(\d+) http2_requests=(\d+)", up.output())[-1]
    return int(m[0]) + int(m[1])


def h2load(port, seconds, clients=4, streams=10, rps=100):
    return subprocess.Popen(["h2load", f"-c{clients}", f"-m{streams}", "-D", str(seconds),
                             "--rps", str(rps), f"http://127.0.0.1:{port}/"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def h2load_clean(load, running, what="the change", clients=4, streams=10):
    out = load.communicate(timeout=60)[0].decode()
    assert running, f"h2load finished before {what}:\n" + out
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    assert m, out
    total, started, done, ok, failed, errored, timeouts = map(int, m.groups())
    # with -D, requests still in flight when the duration ends are started but not done (at
    # most one per stream slot): only they may be missing
    assert ok > 0 and ok == done and failed == errored == timeouts == 0, out
    assert started - done <= clients * streams, out
    assert re.search(r"status codes: \d+ 2xx, 0 3xx, 0 4xx, 0 5xx", out), out


# ---- /config_dump --------------------------------------------------------------------------

def config_dump(ctx, px):
    r = admin_get(ctx, px, "/config_dump")
    assert r.status == 200, r
    return json.loads(r.body)


def section(dump, kind):
    for c in dump.get("configs", []):
        if c.get("@type", "").endswith("envoy.admin.v3." + kind):
            return c
    raise harness.TestFailure(f"/config_dump has no {kind}: {list(dump)}")


def check_dump(ctx, px, cp, clusters, listeners, routes):
    """Every dynamic resource in /config_dump, with the version the control plane says the
    client holds it at (cp.expected_version)."""
    d = config_dump(ctx, px)
    cl = section(d, "ClustersConfigDump")
    assert [c["cluster"]["name"] for c in cl.get("static_clusters", [])] == ["xds_cluster"], cl
    assert not cl.get("dynamic_warming_clusters"), cl
    dyn = {c["cluster"]["name"]: c for c in cl.get("dynamic_active_clusters", [])}
    assert set(dyn) == set(clusters), ("dynamic_active_clusters", sorted(dyn), clusters)
    for n, c in dyn.items():
        assert c["cluster"].get("@type") == T_CLUSTER and c.get("last_updated"), c
        want = cp.expected_version("cds", n)
        assert c.get("version_info") == want, f"cluster {n}: version_info " \
            f"{c.get('version_info')!r}, want {want!r}"
    li = section(d, "ListenersConfigDump")
    assert not li.get("static_listeners"), li
    dyn = {x["name"]: x for x in li.get("dynamic_listeners", []) if "active_state" in x}
    assert set(dyn) == set(listeners), ("active dynamic_listeners", sorted(dyn), listeners)
    for n, x in dyn.items():
        st = x["active_state"]
        assert "warming_state" not in x and st["listener"]["name"] == n and \
            st["listener"].get("@type") == T_LISTENER and st.get("last_updated"), x
        want = cp.expected_version("lds", n)
        assert st.get("version_info") == want, f"listener {n}: version_info " \
            f"{st.get('version_info')!r}, want {want!r}"
    ro = section(d, "RoutesConfigDump")
    dyn = {x["route_config"]["name"]: x for x in ro.get("dynamic_route_configs", [])}
    assert set(dyn) == set(routes), ("dynamic_route_configs", sorted(dyn), routes)
    for n, x in dyn.items():
        assert x["route_config"].get("@type") == T_ROUTE and x.get("last_updated"), x
        want = cp.expected_version("rds", n)
        assert x.get("version_info") == want, f"route configuration {n}: version_info " \
            f"{x.get('version_info')!r}, want {want!r}"


def check_update_stats(ctx, px, cp):
    """Envoy counts one update_success per accepted (ACKed) response, one update_rejected per
    NACK."""
    for t, prefix in (("cds", "cluster_manager.cds."), ("lds", "listener_manager.lds.")):
        ok, bad = stat(ctx, px, prefix + "update_success"), stat(ctx, px, prefix +
                                                                 "update_rejected")
        assert (ok, bad) == (cp.ack_count(t), cp.nack_count(t)), \
            f"{prefix}update_success/update_rejected = {ok}/{bad}, but the control plane " \
            f"saw {cp.ack_count(t)} ACKs and {cp.nack_count(t)} NACKs"


# ---- control-plane adapters ----------------------------------------------------------------

class Nack:
    """A NACK as the control plane saw it (version: SotW version_info, None for Delta)."""

    def __init__(self, version, nonce, code, message):
        self.version, self.nonce, self.code, self.message = version, nonce, code, message

    def __repr__(self):
        return f"Nack(version={self.version!r} nonce={self.nonce!r} code={self.code} " \
               f"message={self.message!r})"


def messages(t, resources):
    return {n: message(t, v) for n, v in resources.items()}


class PyAdapter:
    """pycp.PyCP.  raw: it can send responses no resource file can express."""
    raw = True

    def __init__(self, ctx, api, initial):
        self.api = api
        self.cp = PyCP()
        self.port = self.cp.port
        self.old = []           # stopped instances (their requests still count)
        self.last_set = {}      # type -> version of the last set()
        self.acked = {}         # type -> version of the last wait_ack()
        self.bad_nonce = None
        for t, res in initial.items():
            self.set(t, res)

    def close(self):
        self.cp.stop()

    def set(self, t, resources):
        self.last_set[t] = self.cp.set(t, resources)
        return self.last_set[t]

    def wait_ack(self, t, timeout=10):
        self.cp.wait_ack(t, self.last_set[t], timeout)
        self.acked[t] = self.last_set[t]
        return self.acked[t]

    def push_bad(self, t, items):
        """items: [(name, message or google.protobuf.Any)], sent as one response as is."""
        from google.protobuf import any_pb2
        anys = [(n, m if isinstance(m, any_pb2.Any) else any_of(t, m)) for n, m in items]
        nonces = self.cp.send_raw(t, anys)
        assert len(nonces) == 1, f"{len(nonces)} streams subscribed to {t}"
        self.bad_nonce = nonces[0]

    def wait_nack(self, t, timeout=10):
        r = self.cp.wait_nack(t, self.bad_nonce, timeout)
        return Nack(r.version_info if self.api == "sotw" else None, r.response_nonce,
                    r.error_detail.code, r.error_detail.message)

    def restore(self, t):
        pass        # send_raw did not change the state: the client keeps the last good one

    def ack_count(self, t):
        return sum(len(cp.acks(t)) for cp in self.old + [self.cp])

    def nack_count(self, t):
        return sum(len(cp.nacks(t)) for cp in self.old + [self.cp])

    def wait_subscribed(self, t, names, timeout=10):
        self.cp.wait_subscribed(t, names, timeout)

    def expected_version(self, t, name):
        if self.api == "sotw":
            return self.cp.changed_version(t, name)
        return self.cp.resource_version(t, name)

    def stop(self):
        self.cp.stop()
        self.old.append(self.cp)

    def restart(self):
        self.cp = PyCP(port=self.port, like=self.cp)

    def check_resumed(self, holds, timeout=15):
        """The first stream after restart(): node on its first request; per type, the last
        accepted version and an empty nonce (SotW) or initial_resource_versions = what the
        client holds, <holds> {type: names} (Delta), and then nothing resent (Delta)."""
        cp = self.cp
        want = {type_url(t) for t in holds}

        def stream():
            for sid in sorted({sid for _, sid, _ in cp.requests}):
                if want <= set(cp.first_requests(sid)):
                    return sid
        sid = cp.wait_for(stream, f"new stream asking for {sorted(SHORT[t] for t in want)}",
                          timeout)
        first = cp.first_requests(sid)
        assert first[None].HasField("node") and first[None].node.id == NODE, \
            cp.describe_requests()
        for t, names in holds.items():
            r = first[type_url(t)]
            if self.api == "sotw":
                assert r.version_info == self.acked[t] and r.response_nonce == "", \
                    f"{t}: first request on the new stream {r}, want version_info " \
                    f"{self.acked[t]!r}"
            else:
                have = {n: cp.resource_version(t, n) for n in names}
                assert dict(r.initial_resource_versions) == have and not r.response_nonce, \
                    f"{t}: initial_resource_versions {dict(r.initial_resource_versions)}, " \
                    f"want {have}"
        if self.api == "delta":
            with cp.lock:
                resent = [(SHORT[r.type_url], [x.name for x in r.resources])
                          for kind, s, r in cp.responses if s == sid and r.resources]
            assert not resent, f"resent on the new stream although unchanged: {resent}"


class XdsAdapter:
    """build/remora-xds serving a directory: one file per type (<type>.json, the proto3 JSON
    of {resources: [...]}); every set() waits for the reload and takes its version.  ACKs and
    NACKs come from its log (it logs each with the node id).  Versions are prefixed with a
    letter per process ("a3", then "b1" after a restart), so they never repeat."""
    raw = False

    def __init__(self, ctx, api, initial):
        self.ctx, self.api = ctx, api
        self.dir = tempfile.mkdtemp(prefix="xds-", dir=ctx.tmp)
        self.content = {}       # type -> {name: bytes}
        self.changed = {}       # (type, name) -> version of its last change (SotW)
        self.type_version = {}  # type -> version of its last change: SotW version_info
        self.last_set = {}      # type -> version of the last set()
        self.acked = {}
        self.good = {}          # type -> messages before push_bad()
        self.good_changed = {}  # type -> {(type, name): version} before push_bad()
        self.procs = []
        self.port = harness.free_port()
        for t, res in initial.items():
            self._write(t, messages(t, res))
        self._spawn()
        for t in initial:
            self.last_set[t] = self.type_version[t] = self.version
            for n in self.content[t]:
                self.changed[(t, n)] = self.version

    def close(self):
        pass        # a process: the harness kills it

    # -- files and process --------------------------------------------------------------------
    def _write(self, t, msgs):
        self.content[t] = {n: to_bytes(m) for n, m in msgs.items()}
        path = os.path.join(self.dir, f"{t}.json")
        if msgs:
            write(path, json.dumps({"resources": [to_dict(m) for m in msgs.values()]},
                                   indent=1))
        elif os.path.exists(path):
            os.unlink(path)

    def _spawn(self):
        self.prefix = "abcdefghij"[len(self.procs)]
        self.proc = self.ctx.spawn([self.ctx.bin("remora-xds"), "--dir", self.dir, "--listen",
                                    f"127.0.0.1:{self.port}", "-l", "debug", "--version-prefix",
                                    self.prefix], "xds")
        self.procs.append(self.proc)
        harness.wait_port(self.port, proc=self.proc.p)
        self.version = self._wait_log(r"reload \(start\): version (\S+),", "the first load")[1]

    def log(self):
        """The current process's log, complete lines only."""
        out = self.proc.output()
        return out[:out.rfind("\n") + 1]

    def _wait_log(self, pattern, what, timeout=10, start=0, pred=None):
        """The first match of <pattern> in the current process's log (from offset <start>)
        for which pred(match) holds."""
        deadline = time.monotonic() + timeout
        while True:
            for m in re.finditer(pattern, self.log()[start:], re.M):
                if pred is None or pred(m):
                    return m
            if time.monotonic() > deadline:
                raise harness.TestFailure(f"remora-xds: no {what} within {timeout}s "
                                          f"(/{pattern}/); log:\n{self.log()[-4000:]}")
            time.sleep(0.02)

    def _num(self, v):
        return int(v[len(self.prefix):]) if v.startswith(self.prefix) else -1

    # -- the interface ------------------------------------------------------------------------
    def set(self, t, resources):
        msgs = messages(t, resources)
        for n, m in msgs.items():
            assert name_of(t, m) == n, (t, n, name_of(t, m))
        old = self.content.get(t, {})
        start = len(self.log())
        self._write(t, msgs)
        m = self._wait_log(r"reload \(files changed\)(?:: version (\S+),|: no change \(version "
                           r"(\S+),| failed, keeping version \S+: (.*)$)", "reload",
                           start=start)
        if m[3]:
            raise harness.TestFailure(f"remora-xds refused the files: {m[3]}")
        v = self.version = m[1] or m[2]
        for n, b in self.content[t].items():
            if old.get(n) != b:
                self.changed[(t, n)] = v
        if self.content[t] != old:
            self.type_version[t] = v
        self.last_set[t] = v
        return v

    def _pushes(self, t, since):
        """Nonces of the pushes of type <t> to our node, of version >= <since> (SotW: ==)."""
        kind = "push" if self.api == "sotw" else "delta push"
        out = []
        for m in re.finditer(rf": {kind} node={NODE} type={LOG_TYPE[t]} version=(\S+) "
                             r"nonce=(\S+)", self.log()):
            if (m[1] == since) if self.api == "sotw" else (self._num(m[1]) >= self._num(since)):
                out.append(m[2])
        return out

    def wait_ack(self, t, timeout=10):
        v = self.type_version[t] if self.api == "sotw" else self.last_set[t]
        ver = f" version={v}" if self.api == "sotw" else ""
        self._wait_log(rf": ACK node={NODE} type={LOG_TYPE[t]}{ver} nonce=(\S+)$",
                       f"ACK of {t} {v}", timeout, pred=lambda m: m[1] in self._pushes(t, v))
        self.acked[t] = self.type_version[t]
        return v

    def push_bad(self, t, items):
        """items: [(name, message)]: written as the type's whole state (only what a file can
        hold: valid messages, unique names)."""
        self.good[t] = {n: classes()[type_url(t)].FromString(b)
                        for n, b in self.content[t].items()}
        self.good_changed[t] = {k: v for k, v in self.changed.items() if k[0] == t}
        self.set(t, dict(items))

    def wait_nack(self, t, timeout=10):
        v = self.last_set[t]
        ver = r" version=(\S*)" if self.api == "sotw" else "()"
        m = self._wait_log(rf": NACK node={NODE} type={LOG_TYPE[t]}{ver} nonce=(\S+) "
                           r'code=(-?\d+) message="(.*)"$', f"NACK of {t} {v}", timeout,
                           pred=lambda m: m[2] in self._pushes(t, v))
        return Nack(m[1] if self.api == "sotw" else None, m[2], int(m[3]), m[4])

    def restore(self, t):
        self.set(t, self.good.pop(t))
        # remora never accepted the bad bytes: a resource back to the bytes it holds did not
        # change for it (Envoy compares hashes too), so its version stays the one it had
        self.changed.update(self.good_changed.pop(t))
        self.wait_ack(t)

    def _count(self, what, t):
        pat = rf": {what} node={NODE} type={LOG_TYPE[t]} "
        return sum(len(re.findall(pat, p.output())) for p in self.procs)

    def ack_count(self, t):
        return self._count("ACK", t)

    def nack_count(self, t):
        return self._count("NACK", t)

    def subscription(self, t):
        subs = re.findall(rf": (?:subscribe|subscription) node={NODE} type={LOG_TYPE[t]}"
                          r"(?: version=\S*)? subscribe=\[([^\]]*)\]", self.log())
        return set(subs[-1].split(", ")) - {""} if subs else None

    def wait_subscribed(self, t, names, timeout=10):
        deadline = time.monotonic() + timeout
        while (got := self.subscription(t)) != set(names):
            if time.monotonic() > deadline:
                raise harness.TestFailure(f"remora-xds: subscription to {t} is {got}, not "
                                          f"{set(names)}; log:\n{self.log()[-3000:]}")
            time.sleep(0.02)

    def expected_version(self, t, name):
        if self.api == "sotw":
            return self.changed[(t, name)]
        # Delta: remora-xds's per-resource version, asked on a stream of our own
        s = Stream(self.port, "DeltaAggregatedResources", delta=True)
        try:
            s.send(node=node("version-probe"), type_url=type_url(t),
                   resource_names_subscribe=[name])
            r = s.recv()
            got = {x.name: x.version for x in r.resources}
            assert name in got, (t, name, r)
            return got[name]
        finally:
            s.close()

    def stop(self):
        rc = self.ctx.stop(self.proc)
        assert rc == 0, f"remora-xds exited {rc}"

    def restart(self):
        self._spawn()
        for t in self.content:
            self.type_version[t] = self.last_set[t] = self.version

    def check_resumed(self, holds, timeout=15):
        """As PyAdapter.check_resumed, from remora-xds's log: the node, per type the first
        request's version_info (SotW) or the number of initial_resource_versions (Delta), and
        (Delta) no push carrying a resource."""
        self._wait_log(rf'node id="{NODE}"', "node on the new stream", timeout)
        for t, names in holds.items():
            m = self._wait_log(rf": subscribe node={NODE} type={LOG_TYPE[t]}(?: version=(\S*))?"
                               r" subscribe=\[[^\]]*\](?: initial_resource_versions=\[(\d+))?",
                               f"first {t} request on the new stream", timeout)
            if self.api == "sotw":
                assert m[1] == self.acked[t], f"{t}: first request version_info {m[1]!r}, " \
                                              f"want {self.acked[t]!r}: {m[0]}"
            else:
                assert int(m[2] or 0) == len(names), \
                    f"{t}: {m[2] or 0} initial_resource_versions, want {len(names)}: {m[0]}"
        if self.api == "delta":
            time.sleep(0.3)
            resent = re.findall(rf": delta push node={NODE} .* resources=\[[^\]]+\]", self.log())
            assert not resent, f"resent on the new stream although unchanged: {resent}"


CPS = {"pycp": PyAdapter, "remora_xds": XdsAdapter}


# ---- the tests ---------------------------------------------------------------------------------

def lifecycle(ctx, make, api):
    a, b, c = (ctx.upstream(name=n) for n in "abc")
    l1, l2 = harness.free_port(), harness.free_port()
    res = base(a.port, l1)
    cp = make(ctx, api, {t: res[t] for t in ("cds", "eds", "lds")})     # RDS not yet
    px = start_remora(ctx, api, cp.port)

    # (a) the listener warms until its RouteConfiguration arrives: not ready before
    for t in ("cds", "eds", "lds"):
        cp.wait_ack(t)
    cp.wait_subscribed("cds", {"*"})
    cp.wait_subscribed("lds", {"*"})
    cp.wait_subscribed("eds", {"backend"})
    cp.wait_subscribed("rds", {RC})
    time.sleep(0.3)
    r = admin_get(ctx, px, "/ready")
    assert r.status == 503 and b"LIVE" not in r.body, ("ready without the route configuration", r)
    cp.set("rds", res["rds"])
    cp.wait_ack("rds")
    wait_ready(ctx, px)
    assert admin_get(ctx, px, "/ready").body.strip() == b"LIVE"
    assert names_seen(ctx, l1, 4) == {"a": 4}
    check_dump(ctx, px, cp, {"backend"}, {"ingress"}, {RC})
    check_update_stats(ctx, px, cp)
    assert stat(ctx, px, "control_plane.connected_state") == 1

    # (b) the endpoint moves to b under h2load: no request lost
    load = h2load(l1, 3)
    time.sleep(0.8)
    cp.set("eds", {"backend": cla("backend", [b.port])})
    cp.wait_ack("eds")
    wait_name(ctx, l1, "b", timeout=5)
    h2load_clean(load, load.poll() is None)

    # (c) a second cluster (assignment first: make before break) and a route to it
    cp.set("eds", {"backend": cla("backend", [b.port]), "second": cla("second", [c.port])})
    cp.set("cds", {"backend": eds_cluster("backend"), "second": eds_cluster("second")})
    cp.wait_ack("cds")
    cp.wait_subscribed("eds", {"backend", "second"})
    cp.wait_ack("eds")
    routes2 = {RC: route_config(RC, [("/second/", "second"), ("/", "backend")])}
    cp.set("rds", routes2)
    cp.wait_ack("rds")
    wait_name(ctx, l1, "c", path="/second/x")
    assert names_seen(ctx, l1, 3) == {"b": 3}

    # a second listener on another port starts accepting, same routes
    two = {"ingress": res["lds"]["ingress"],
           "ingress2": listener("ingress2", l2, RC, stat_prefix="ingress2_http")}
    cp.set("lds", two)
    cp.wait_ack("lds")
    harness.wait_port(l2, timeout=10, proc=px.p)
    assert names_seen(ctx, l2, 2, "/second/x") == {"c": 2}
    assert names_seen(ctx, l2, 2) == {"b": 2}
    check_dump(ctx, px, cp, {"backend", "second"}, {"ingress", "ingress2"}, {RC})

    # removed: its port refuses connections, the first listener keeps serving
    cp.set("lds", {"ingress": res["lds"]["ingress"]})
    cp.wait_ack("lds")
    wait_refused(l2)
    assert names_seen(ctx, l1, 3) == {"b": 3}

    # a removed cluster: its route answers 503 without contacting the old upstream, its EDS
    # subscription ends, the rest keeps serving
    cp.set("cds", {"backend": eds_cluster("backend")})
    cp.wait_ack("cds")
    cp.wait_subscribed("eds", {"backend"})
    wait_status(ctx, l1, "/second/x", 503)
    before = upstream_requests(c)
    for _ in range(3):
        r = ctx.curl(f"http://127.0.0.1:{l1}/second/x")
        assert r.status == 503 and r.headers.get("x-upstream-name") is None, r
    assert upstream_requests(c) == before, "a request to a removed cluster reached its upstream"
    assert names_seen(ctx, l1, 3) == {"b": 3}
    check_dump(ctx, px, cp, {"backend"}, {"ingress"}, {RC})
    check_update_stats(ctx, px, cp)


class Bad:
    """A bad response: <label>, its type, [(name, message or Any)], substrings the NACK
    message must have; raw: only pycp can send it."""

    def __init__(self, label, t, items, want, raw):
        self.label, self.t, self.items, self.want, self.raw = label, t, items, want, raw


def bad_inputs(res, port):
    m = {t: messages(t, res[t]) for t in ALL}
    backend, ingress = m["cds"]["backend"], m["lds"]["ingress"]
    slow = message("cds", eds_cluster("backend", {"connect_timeout": "2s"}))
    odd_lb = message("cds", eds_cluster("odd_lb"))
    odd_lb.lb_policy = 99          # not a LbPolicy value (Envoy: defined_only)
    custom = message("cds", eds_cluster("custom_type"))
    custom.ClearField("type")
    custom.ClearField("eds_cluster_config")
    custom.cluster_type.name = "envoy.clusters.bogus"
    custom.cluster_type.typed_config.Pack(message_struct())
    filtered = message("lds", listener("filtered", port, RC, extra={"listener_filters": [{
        "name": "envoy.filters.listener.bogus",
        "typed_config": {"@type": "type.googleapis.com/google.protobuf.Struct", "value": {}}}]}))
    ghost = message("rds", route_config(RC, [("/", "ghost_cluster")],
                                        extra={"validate_clusters": True}))
    return [
        Bad("undecodable Any", "cds",
            [("backend", backend), ("broken", any_of(T_CLUSTER, b"\x0a\x10abc"))],
            ["resources[1]"], raw=True),
        Bad("a Cluster in a Listener response", "lds",
            [("ingress", ingress), ("backend", any_of(T_CLUSTER, backend))],
            ["resources[1]", "envoy.config.cluster.v3.Cluster"], raw=True),
        Bad("duplicate names", "cds", [("backend", backend), ("backend", slow)],
            ["backend", "duplicate"], raw=True),
        Bad("undefined lb_policy", "cds", [("backend", backend), ("odd_lb", odd_lb)],
            ["odd_lb", "lb_policy"], raw=True),
        Bad("unknown cluster extension", "cds", [("backend", backend), ("custom_type", custom)],
            ["custom_type", "cluster_type"], raw=False),
        Bad("unknown listener filter", "lds", [("ingress", ingress), ("filtered", filtered)],
            ["filtered", "listener_filters"], raw=False),
        Bad("route to an unknown cluster", "rds", [(RC, ghost)],
            [RC, "ghost_cluster", "virtual_hosts[0].routes[0].route.cluster"], raw=False),
    ]


def message_struct():
    from google.protobuf import struct_pb2
    return struct_pb2.Struct()


def serving(ctx, make, api):
    """Upstreams a and b, the base resources on <make>'s control plane, remora serving them on
    l1 (to a); returns (a, b, l1, res, cp, px)."""
    a, b = ctx.upstream(name="a"), ctx.upstream(name="b")
    l1 = harness.free_port()
    res = base(a.port, l1)
    cp = make(ctx, api, res)
    px = start_remora(ctx, api, cp.port)
    for t in ALL:
        cp.wait_ack(t)
    wait_ready(ctx, px)
    assert names_seen(ctx, l1, 2) == {"a": 2}
    return a, b, l1, res, cp, px


def nack(ctx, make, api):
    a, b, l1, res, cp, px = serving(ctx, make, api)
    cases = [x for x in bad_inputs(res, harness.free_port()) if cp.raw or not x.raw]
    assert len(cases) == (7 if cp.raw else 3), [x.label for x in cases]
    for x in cases:
        before = stat(ctx, px, REJECTED[x.t])
        cp.push_bad(x.t, x.items)
        n = cp.wait_nack(x.t)
        assert n.code == 13, (x.label, n)               # INTERNAL, as Envoy
        for w in x.want:
            assert w.lower() in n.message.lower(), \
                f"{x.label}: the NACK message does not name {w!r}: {n}"
        if api == "sotw":
            assert n.version == cp.acked[x.t], \
                f"{x.label}: NACK version_info {n.version!r}, want the last accepted " \
                f"{cp.acked[x.t]!r}"
        assert stat(ctx, px, REJECTED[x.t]) == before + 1, (x.label, REJECTED[x.t])
        assert names_seen(ctx, l1, 2) == {"a": 2}, x.label
        cp.restore(x.t)
    # still taking good updates
    cp.set("eds", {"backend": cla("backend", [b.port])})
    cp.wait_ack("eds")
    wait_name(ctx, l1, "b")
    check_update_stats(ctx, px, cp)
    check_dump(ctx, px, cp, {"backend"}, {"ingress"}, {RC})


def cp_restart(ctx, make, api):
    a, b, l1, res, cp, px = serving(ctx, make, api)
    assert stat(ctx, px, "control_plane.connected_state") == 1

    # 12 s: the load must outlast the stop, the reconnect back-off (jittered, up to ~2 s by
    # then) and the resumption under a loaded CI machine (6 s fell short once in a full run)
    load = h2load(l1, 12, clients=2, streams=5, rps=50)
    time.sleep(0.5)
    cp.stop()
    wait_stat(ctx, px, "control_plane.connected_state", 0, timeout=5)
    assert names_seen(ctx, l1, 3) == {"a": 3}
    time.sleep(0.5)
    assert admin_get(ctx, px, "/ready").status == 200, "no longer ready without control plane"
    cp.restart()
    # back within 5 s: the retry backoff starts at 500 ms (jittered, doubling)
    cp.check_resumed({"cds": {"backend"}, "eds": {"backend"}, "lds": {"ingress"}, "rds": {RC}},
                     timeout=5)
    running = load.poll() is None
    wait_stat(ctx, px, "control_plane.connected_state", 1, timeout=5)
    check_dump(ctx, px, cp, {"backend"}, {"ingress"}, {RC})
    cp.set("eds", {"backend": cla("backend", [b.port])})
    cp.wait_ack("eds")
    wait_name(ctx, l1, "b")
    h2load_clean(load, running, "the control plane was back", clients=2, streams=5)


# ---- the adapters on their own: a scripted client ----------------------------------------------

class FakeEnvoy:
    """A scripted xDS client standing in for remora in test_adapters_*: subscribes once per
    type, ACKs every response unless reject[type](names) returns a message (then NACKs it, SotW
    with the last accepted version), keeps what it accepted (SotW: a resource keeps the version
    it last changed in, as Envoy does), resumes on connect() with versions /
    initial_resource_versions.  Responses are handled on a thread, as they come."""

    def __init__(self, port, api):
        self.port, self.api = port, api
        self.lock = threading.Lock()
        self.have = {}          # type URL -> {name: (version, bytes)}
        self.acked = {}         # type URL -> SotW version_info accepted last
        self.subs = {}          # type URL -> [names] or None (wildcard)
        self.reject = {}
        self.acks = {}
        self.nonce = {}         # type URL -> latest response nonce
        self.s = None
        self.connect()

    def connect(self):
        method = "StreamAggregatedResources" if self.api == "sotw" else \
            "DeltaAggregatedResources"
        self.s = Stream(self.port, method, delta=self.api == "delta")
        self.first = True
        self.thread = threading.Thread(target=self._run, args=(self.s,), daemon=True)
        self.thread.start()
        for t, names in list(self.subs.items()):
            self._request(t, names, resume=True)

    def subscribe(self, t, names=None):
        t = type_url(t)
        self.subs[t] = names
        self._request(t, names)

    def resubscribe(self, t, names):
        """Change a by-name subscription: SotW the whole list with the latest nonce, Delta the
        difference (unsubscribed names are forgotten)."""
        t = type_url(t)
        with self.lock:
            old, self.subs[t] = set(self.subs[t]), list(names)
            if self.api == "sotw":
                self.s.send(type_url=t, resource_names=list(names), response_nonce=self.nonce[t],
                            version_info=self.acked.get(t, ""))
            else:
                for n in old - set(names):
                    self.have[t].pop(n, None)
                self.s.send(type_url=t, resource_names_subscribe=sorted(set(names) - old),
                            resource_names_unsubscribe=sorted(old - set(names)))

    def _request(self, t, names, resume=False):
        kw = {"type_url": t}
        if self.first:
            kw["node"], self.first = node(NODE), False
        with self.lock:
            if self.api == "sotw":
                kw.update(resource_names=names or [], version_info=self.acked.get(t, ""))
            else:
                kw.update(resource_names_subscribe=names or [])
                if resume:
                    kw["initial_resource_versions"] = {n: v for n, (v, _) in
                                                       self.have.get(t, {}).items()}
        self.s.send(**kw)

    def _run(self, s):
        while True:
            r = s.resps.get()
            if isinstance(r, tuple):
                return      # the stream ended
            with self.lock:
                self._handle(s, r)

    def _handle(self, s, r):
        t = r.type_url
        self.nonce[t] = r.nonce
        if self.api == "sotw":
            got = {_name(a): (r.version_info, a.value) for a in r.resources}
            removed = []
        else:
            got = {x.name: (x.version, x.resource.value) for x in r.resources}
            removed = list(r.removed_resources)
        why = self.reject.get(t, lambda names: None)(set(got))
        if why:
            kw = {"version_info": self.acked.get(t, ""), "resource_names": self.subs[t] or []} \
                if self.api == "sotw" else {}
            s.send(type_url=t, response_nonce=r.nonce, error_detail={"code": 13, "message": why},
                   **kw)
            return
        old = self.have.get(t, {})
        if self.api == "sotw":
            self.have[t] = {n: old[n] if n in old and old[n][1] == b else (v, b)
                            for n, (v, b) in got.items()}
            self.acked[t] = r.version_info
            s.send(type_url=t, version_info=r.version_info, response_nonce=r.nonce,
                   resource_names=self.subs[t] or [])
        else:
            new = dict(old)
            new.update(got)
            for n in removed:
                new.pop(n, None)
            self.have[t] = new
            s.send(type_url=t, response_nonce=r.nonce)
        self.acks[t] = self.acks.get(t, 0) + 1

    def close(self):
        self.s.close()


def adapters(ctx, make, api):
    res = base(18081, 10000)
    cp = make(ctx, api, {t: res[t] for t in ("cds", "eds", "lds")})
    fe = FakeEnvoy(cp.port, api)
    try:
        fe.subscribe("cds")
        fe.subscribe("eds", ["backend"])
        fe.subscribe("lds")
        fe.subscribe("rds", [RC])
        for t in ("cds", "eds", "lds"):
            cp.wait_ack(t)
        cp.wait_subscribed("cds", {"*"})
        cp.wait_subscribed("eds", {"backend"})
        cp.wait_subscribed("rds", {RC})
        time.sleep(0.2)
        assert not fe.have.get(T_ROUTE), "a route configuration before there is one"
        cp.set("rds", res["rds"])
        cp.wait_ack("rds")
        with fe.lock:
            for t in ALL:
                have = fe.have[type_url(t)]
                assert set(have) == set(res[t]), (t, have)
                for n, (v, b) in have.items():
                    assert b == to_bytes(message(t, res[t][n])), (t, n)
                    assert cp.expected_version(t, n) == v, (t, n, v)
        first_cds = fe.have[T_CLUSTER]["backend"][0]

        # an update keeps unchanged resources at their version
        two = {"backend": eds_cluster("backend"), "other": eds_cluster("other")}
        cp.set("cds", two)
        cp.wait_ack("cds")
        with fe.lock:
            assert fe.have[T_CLUSTER]["backend"][0] == first_cds
            assert cp.expected_version("cds", "backend") == first_cds
            assert cp.expected_version("cds", "other") == fe.have[T_CLUSTER]["other"][0]
        if api == "sotw":
            assert cp.acked["cds"] == fe.acked[T_CLUSTER], (cp.acked, fe.acked)

        # an assignment for a cluster not subscribed yet, then the subscription (lifecycle's
        # second cluster): ACKed at the assignment's version; unsubscribed again
        cp.set("eds", {"backend": cla("backend", [18081]), "other": cla("other", [18083])})
        fe.resubscribe("eds", ["backend", "other"])
        cp.wait_subscribed("eds", {"backend", "other"})
        cp.wait_ack("eds")
        with fe.lock:
            assert set(fe.have[T_CLA]) == {"backend", "other"}, fe.have[T_CLA]
        fe.resubscribe("eds", ["backend"])
        cp.wait_subscribed("eds", {"backend"})

        # a NACK: code, message and (SotW) version as the client sent them
        fe.reject[T_CLUSTER] = lambda names: "custom_type: cluster_type: nope" \
            if "custom_type" in names else None
        custom = message("cds", eds_cluster("custom_type"))
        cp.push_bad("cds", [("backend", message("cds", two["backend"])),
                            ("other", message("cds", two["other"])), ("custom_type", custom)])
        n = cp.wait_nack("cds")
        assert n.code == 13 and n.message == "custom_type: cluster_type: nope", n
        if api == "sotw":
            assert n.version == cp.acked["cds"] == fe.acked[T_CLUSTER], (n, cp.acked)
        cp.restore("cds")
        assert cp.nack_count("cds") == 1
        assert cp.ack_count("cds") == fe.acks[T_CLUSTER], (cp.ack_count("cds"), fe.acks)

        # a restart: the client resumes, nothing is lost, later changes arrive
        holds = {t: set(fe.have[type_url(t)]) for t in ALL}
        cp.stop()
        fe.thread.join(10)
        assert not fe.thread.is_alive(), "the stream did not end with the control plane"
        cp.restart()
        fe.connect()
        cp.check_resumed(holds)
        cp.set("eds", {"backend": cla("backend", [18082])})
        cp.wait_ack("eds")
        with fe.lock:
            b = fe.have[T_CLA]["backend"][1]
        assert b == to_bytes(message("eds", cla("backend", [18082])))
        assert cp.ack_count("eds") == fe.acks[T_CLA]
    finally:
        fe.close()


# ---- instantiation: every body x both control planes x both protocols -------------------------

def _instantiate(body, timeout=120):
    for cp_name, adapter in CPS.items():
        for api in ("sotw", "delta"):
            def test(ctx, body=body, adapter=adapter, api=api):
                made = []

                def make(*args):
                    made.append(adapter(*args))
                    return made[-1]
                try:
                    body(ctx, make, api)
                finally:
                    for cp in made:
                        cp.close()
            test.__name__ = f"test_{body.__name__}_{cp_name}_{api}"
            test.timeout = timeout
            globals()[test.__name__] = test


for _body in (lifecycle, nack, cp_restart, adapters):
    _instantiate(_body)


# ---- a hostile control plane -------------------------------------------------------------------

def hostile(ctx, api):
    """A control plane that floods updates and then sends a response over the client's
    max_receive_message_length: the data plane never stops (h2load sees no failure), the
    flood's last version wins, the oversized response closes the stream (RESOURCE_EXHAUSTED)
    without changing the config, and the client reconnects and takes the next good one."""
    a, b = ctx.upstream(name="a"), ctx.upstream(name="b")
    l1 = harness.free_port()
    cp = PyAdapter(ctx, api, base(a.port, l1))
    try:
        y = bootstrap(api, cp.port).replace(
            "envoy_grpc: { cluster_name: xds_cluster }",
            "envoy_grpc: { cluster_name: xds_cluster, max_receive_message_length: 16384 }")
        px = ctx.remora(y, wait=False)
        harness.wait_port(px.admin, proc=px.p)
        for t in ALL:
            cp.wait_ack(t)
        wait_ready(ctx, px)
        load = h2load(l1, 4)
        time.sleep(0.5)
        for i in range(300):  # as fast as the control plane can push
            cp.set("eds", {"backend": cla("backend", [(a, b)[i % 2].port])})
        cp.wait_ack("eds", timeout=30)
        wait_name(ctx, l1, "b")
        # 400 clusters are ~20 KiB on the wire: over the limit
        big = {f"c{i:03d}": eds_cluster(f"c{i:03d}") for i in range(400)}
        big["backend"] = eds_cluster("backend")
        opened = cp.cp.streams_opened
        cp.set("cds", big)
        deadline = time.monotonic() + 10
        while "RESOURCE_EXHAUSTED" not in px.output():
            assert time.monotonic() < deadline, "the oversized response did not end the stream"
            time.sleep(0.05)
        assert names_seen(ctx, l1, 3) == {"b": 3}
        h2load_clean(load, load.poll() is None, "the flood and the oversized response")
        assert stat(ctx, px, "cluster_manager.active_clusters") == 2  # xds_cluster, backend
        cp.set("eds", {"backend": cla("backend", [b.port]), "c000": cla("c000", [a.port])})
        cp.set("cds", {"backend": eds_cluster("backend"), "c000": eds_cluster("c000")})
        cp.wait_ack("cds", timeout=15)  # on a new stream, after the backoff
        assert cp.cp.streams_opened > opened
        wait_stat(ctx, px, "cluster_manager.active_clusters", 3, timeout=20)
        assert names_seen(ctx, l1, 3) == {"b": 3}
    finally:
        cp.close()


def test_hostile_control_plane_sotw(ctx):
    hostile(ctx, "sotw")


def test_hostile_control_plane_delta(ctx):
    hostile(ctx, "delta")
