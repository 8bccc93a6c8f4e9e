"""build/remora-xds (the reference control plane) against an independent xDS client: Debian's
python3-grpcio with message classes generated from proto/ by protoc --python_out at test time
(no service stubs: the methods are called generically by path).

Covered: SotW CDS wildcard + EDS by name, ACK (quiet), NACK (logged with node id and message),
stale nonces, file edits pushing only the changed type (full state of it), new and deleted
files, Delta (only changed resources, removed_resources on delete and for unknown names),
Delta reconnect with initial_resource_versions, SIGHUP, a broken file keeping the last good
set, the per-type services, unknown methods, start-up errors, SIGTERM.
"""
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/"
T_CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
T_CLA = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
T_LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"

_PB = {}


def pb():
    """The generated message modules (protoc once per process)."""
    if _PB:
        return _PB
    out = tempfile.mkdtemp(prefix="remora-xds-pb-")
    proto_dir = os.path.join(harness.ROOT, "proto")
    files = []
    for d, _, fs in os.walk(proto_dir):
        files += [os.path.relpath(os.path.join(d, f), proto_dir) for f in fs if f.endswith(".proto")]
    subprocess.run(["protoc", f"--python_out={out}", f"-I{proto_dir}", "-I/usr/include"]
                   + sorted(files), check=True)
    sys.path.insert(0, out)
    from envoy.service.discovery.v3 import discovery_pb2
    from envoy.config.cluster.v3 import cluster_pb2
    from envoy.config.endpoint.v3 import endpoint_pb2
    from envoy.config.listener.v3 import listener_pb2
    from envoy.config.route.v3 import route_pb2
    from envoy.config.core.v3 import base_pb2
    _PB.update(d=discovery_pb2, cluster=cluster_pb2, endpoint=endpoint_pb2,
               listener=listener_pb2, route=route_pb2, base=base_pb2)
    return _PB


# ---- resource files ----------------------------------------------------------------------------

def cluster_yaml(name, lb="ROUND_ROBIN", timeout="1s"):
    return f"""# cluster {name}
"@type": {T_CLUSTER}
name: {name}
type: EDS
connect_timeout: {timeout}
lb_policy: {lb}
eds_cluster_config:
  eds_config: {{ ads: {{}}, resource_api_version: V3 }}
"""


def cla_yaml(name, port):
    return f"""resources:
- "@type": {T_CLA}
  cluster_name: {name}
  endpoints:
  - lb_endpoints:
    - endpoint:
        address:
          socket_address: {{ address: 127.0.0.1, port_value: {port} }}
"""


def write(path, text):
    """Write atomically (rename), as editors and config tools do."""
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def make_dir(ctx, files):
    d = tempfile.mkdtemp(prefix="xds-", dir=ctx.tmp)
    for name, text in files.items():
        write(os.path.join(d, name), text)
    return d


def basic_dir(ctx):
    return make_dir(ctx, {"backend.yaml": cluster_yaml("backend"),
                          "other.yaml": cluster_yaml("other", lb="RANDOM"),
                          "endpoints.yaml": cla_yaml("backend", 18081)})


# ---- the server --------------------------------------------------------------------------------

class Xds:
    def __init__(self, ctx, d, *extra):
        self.ctx = ctx
        self.dir = d
        self.port = harness.free_port()
        self.proc = ctx.spawn([ctx.bin("remora-xds"), "--dir", d, "--listen",
                               f"127.0.0.1:{self.port}", "-l", "debug"] + list(extra), "xds")
        harness.wait_port(self.port, proc=self.proc.p)

    def log(self):
        return self.proc.output()

    def wait_log(self, text, timeout=10.0, count=1):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log().count(text) >= count:
                return
            time.sleep(0.02)
        raise harness.TestFailure(f"remora-xds never logged {text!r} ({count}x); log:\n"
                                  f"{self.log()[-3000:]}")

    def stop(self):
        rc = self.ctx.stop(self.proc)
        assert rc == 0, f"remora-xds exited {rc}"


class Stream:
    """One bidi call; requests go in through a queue, responses come out of another."""

    def __init__(self, port, method, delta=False, path=None):
        import grpc
        d = pb()["d"]
        self.grpc = grpc
        self.chan = grpc.insecure_channel(f"127.0.0.1:{port}")
        req_t = d.DeltaDiscoveryRequest if delta else d.DiscoveryRequest
        resp_t = d.DeltaDiscoveryResponse if delta else d.DiscoveryResponse
        self.req_t = req_t
        self.reqs = queue.Queue()
        self.resps = queue.Queue()
        fn = self.chan.stream_stream(path or ADS + method,
                                     request_serializer=lambda m: m.SerializeToString(),
                                     response_deserializer=resp_t.FromString)
        self.call = fn(self._requests())
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _requests(self):
        while True:
            r = self.reqs.get()
            if r is None:
                return
            yield r

    def _read(self):
        try:
            for r in self.call:
                self.resps.put(r)
            self.resps.put(("end", self.call.code(), self.call.details()))
        except self.grpc.RpcError as e:
            self.resps.put(("end", e.code(), e.details()))

    def send(self, **kw):
        self.reqs.put(self.req_t(**kw))

    def recv(self, timeout=10.0):
        try:
            r = self.resps.get(timeout=timeout)
        except queue.Empty:
            raise harness.TestFailure(f"no response within {timeout}s")
        if isinstance(r, tuple):
            raise harness.TestFailure(f"stream ended: {r[1]} {r[2]!r}")
        return r

    def expect_none(self, wait=0.6):
        try:
            r = self.resps.get(timeout=wait)
        except queue.Empty:
            return
        raise harness.TestFailure(f"unexpected response: {r}")

    def end(self, timeout=10.0):
        """Wait for the call's end; returns (code, details)."""
        r = self.resps.get(timeout=timeout)
        assert isinstance(r, tuple), f"expected the end of the stream, got {r}"
        return r[1], r[2]

    def close(self):
        self.reqs.put(None)
        self.chan.close()


def node(nid="node-A"):
    return pb()["base"].Node(id=nid, cluster="test", user_agent_name="python-test")


def names(resp):
    return sorted(_name(a) for a in resp.resources)


def _name(any_msg):
    m = pb()
    if any_msg.type_url == T_CLUSTER:
        return m["cluster"].Cluster.FromString(any_msg.value).name
    if any_msg.type_url == T_CLA:
        return m["endpoint"].ClusterLoadAssignment.FromString(any_msg.value).cluster_name
    if any_msg.type_url == T_LISTENER:
        return m["listener"].Listener.FromString(any_msg.value).name
    return m["route"].RouteConfiguration.FromString(any_msg.value).name


def cla_port(any_msg):
    cla = pb()["endpoint"].ClusterLoadAssignment.FromString(any_msg.value)
    return cla.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value


def ack(s, resp, names_=()):
    s.send(type_url=resp.type_url, version_info=resp.version_info, response_nonce=resp.nonce,
           resource_names=list(names_))


def sotw_cds_eds(xs, nid="node-A"):
    """Open SotW ADS, get and ACK CDS (wildcard) and EDS ["backend"]; returns the stream."""
    s = Stream(xs.port, "StreamAggregatedResources")
    s.send(node=node(nid), type_url=T_CLUSTER)
    cds = s.recv()
    assert cds.type_url == T_CLUSTER and names(cds) == ["backend", "other"], cds
    ack(s, cds)
    s.send(type_url=T_CLA, resource_names=["backend"])
    eds = s.recv()
    assert eds.type_url == T_CLA and names(eds) == ["backend"], eds
    assert cla_port(eds.resources[0]) == 18081
    return s, cds, eds


# ---- tests -------------------------------------------------------------------------------------

def test_sotw_initial_ack_nack(ctx):
    xs = Xds(ctx, basic_dir(ctx))
    s = Stream(xs.port, "StreamAggregatedResources")
    s.send(node=node("node-A"), type_url=T_CLUSTER)
    cds = s.recv()
    assert cds.version_info == "1" and cds.nonce and cds.control_plane.identifier == "remora-xds"
    assert names(cds) == ["backend", "other"]
    c = {(_name(a)): pb()["cluster"].Cluster.FromString(a.value) for a in cds.resources}
    assert c["other"].lb_policy == pb()["cluster"].Cluster.RANDOM
    assert c["backend"].type == pb()["cluster"].Cluster.EDS
    assert c["backend"].connect_timeout.seconds == 1
    ack(s, cds)
    xs.wait_log(f"ACK node=node-A type=Cluster version=1 nonce={cds.nonce}")
    s.send(type_url=T_CLA, resource_names=["backend"])
    eds = s.recv()
    assert names(eds) == ["backend"] and cla_port(eds.resources[0]) == 18081
    assert eds.nonce != cds.nonce
    # a NACK is logged with the node id and the message, and nothing is resent
    s.send(type_url=T_CLA, version_info="", response_nonce=eds.nonce, resource_names=["backend"],
           error_detail={"code": 13, "message": "endpoint rejected: port out of range"})
    xs.wait_log(f"NACK node=node-A type=ClusterLoadAssignment version= nonce={eds.nonce} "
                f"code=13 message=\"endpoint rejected: port out of range\"")
    s.expect_none()
    # a stale nonce is ignored even if it names other resources
    s.send(type_url=T_CLA, version_info="", response_nonce="12345",
           resource_names=["backend", "other"])
    s.expect_none()
    xs.wait_log("stale request node=node-A type=ClusterLoadAssignment nonce=12345 ignored")
    # a grown subscription gets the new set at once
    s.send(type_url=T_CLA, response_nonce=eds.nonce, resource_names=["backend", "ghost"])
    s.expect_none()  # ghost does not exist: nothing new to send
    assert "node id=\"node-A\" cluster=\"test\"" in xs.log()
    s.close()
    xs.wait_log("closed")
    xs.stop()


def test_sotw_file_edits_push_changes(ctx):
    d = basic_dir(ctx)
    xs = Xds(ctx, d)
    s, cds, eds = sotw_cds_eds(xs)
    ack(s, eds, ["backend"])
    s.expect_none()
    # an endpoint edit pushes EDS only, with a new version
    write(os.path.join(d, "endpoints.yaml"), cla_yaml("backend", 18082))
    eds2 = s.recv()
    assert eds2.type_url == T_CLA and eds2.version_info == "2", eds2
    assert cla_port(eds2.resources[0]) == 18082
    ack(s, eds2, ["backend"])
    s.expect_none()
    xs.wait_log("reload (files changed): version 2")
    # a new cluster file: CDS with the full state of the type
    write(os.path.join(d, "third.yaml"), cluster_yaml("third"))
    cds2 = s.recv()
    assert cds2.type_url == T_CLUSTER and cds2.version_info == "3"
    assert names(cds2) == ["backend", "other", "third"]
    ack(s, cds2)
    xs.wait_log("push node=node-A type=Cluster version=3")
    # deleting a file deletes its resource: CDS without it
    os.unlink(os.path.join(d, "other.yaml"))
    cds3 = s.recv()
    assert names(cds3) == ["backend", "third"] and cds3.version_info == "4"
    ack(s, cds3)
    # rewriting a file with the same bytes changes nothing
    write(os.path.join(d, "third.yaml"), cluster_yaml("third"))
    s.expect_none(1.0)
    xs.wait_log("no change (version 4")
    s.close()
    xs.stop()


def test_sotw_broken_file_keeps_last_good(ctx):
    d = basic_dir(ctx)
    xs = Xds(ctx, d)
    s, cds, eds = sotw_cds_eds(xs)
    ack(s, eds, ["backend"])
    bad = cluster_yaml("other", lb="FASTEST")
    write(os.path.join(d, "other.yaml"), bad)
    xs.wait_log("reload (files changed) failed, keeping version 1")
    assert f"{d}/other.yaml:6: lb_policy: unknown enum value \"FASTEST\"" in xs.log(), xs.log()
    s.expect_none(1.0)
    # a duplicate name is an error too, naming both files
    write(os.path.join(d, "other.yaml"), cluster_yaml("other"))
    write(os.path.join(d, "dup.yaml"), cluster_yaml("backend"))
    xs.wait_log("is defined twice")
    assert f"Cluster \"backend\" is defined twice (also in {d}/backend.yaml)" in xs.log()
    s.expect_none(0.5)
    # fixed: the new state goes out
    os.unlink(os.path.join(d, "dup.yaml"))
    cds2 = s.recv()
    assert cds2.version_info == "2" and names(cds2) == ["backend", "other"]
    c = {(_name(a)): pb()["cluster"].Cluster.FromString(a.value) for a in cds2.resources}
    assert c["other"].lb_policy == pb()["cluster"].Cluster.ROUND_ROBIN
    s.close()
    xs.stop()


def test_sighup_reloads(ctx):
    # the file is a symlink to a file outside the directory: inotify on the directory does not
    # see the target change, SIGHUP does
    d = basic_dir(ctx)
    outside = os.path.join(ctx.tmp, "outside-endpoints.yaml")
    write(outside, cla_yaml("backend", 18081))
    os.unlink(os.path.join(d, "endpoints.yaml"))
    os.symlink(outside, os.path.join(d, "endpoints.yaml"))
    xs = Xds(ctx, d)
    s, cds, eds = sotw_cds_eds(xs)
    ack(s, eds, ["backend"])
    with open(outside, "w") as f:
        f.write(cla_yaml("backend", 19000))
    s.expect_none(0.5)
    xs.proc.p.send_signal(signal.SIGHUP)
    eds2 = s.recv()
    assert cla_port(eds2.resources[0]) == 19000 and eds2.version_info == "2"
    xs.wait_log("reload (SIGHUP): version 2")
    s.close()
    xs.stop()


def test_delta_changes_and_removals(ctx):
    d = basic_dir(ctx)
    xs = Xds(ctx, d)
    s = Stream(xs.port, "DeltaAggregatedResources", delta=True)
    s.send(node=node("delta-node"), type_url=T_CLUSTER, resource_names_subscribe=["*"])
    r = s.recv()
    assert r.type_url == T_CLUSTER and sorted(x.name for x in r.resources) == ["backend", "other"]
    assert all(len(x.version) == 16 and x.resource.type_url == T_CLUSTER for x in r.resources)
    assert not r.removed_resources and r.system_version_info == "1"
    versions = {x.name: x.version for x in r.resources}
    s.send(type_url=T_CLUSTER, response_nonce=r.nonce)
    xs.wait_log(f"ACK node=delta-node type=Cluster nonce={r.nonce}")
    s.send(type_url=T_CLA, resource_names_subscribe=["backend", "ghost"])
    e = s.recv()
    assert [x.name for x in e.resources] == ["backend"] and cla_port(e.resources[0].resource) == \
        18081
    assert list(e.removed_resources) == ["ghost"]  # does not exist: said at once
    s.send(type_url=T_CLA, response_nonce=e.nonce)
    s.expect_none()
    # one cluster edited: only it is sent
    write(os.path.join(d, "other.yaml"), cluster_yaml("other", timeout="2s"))
    r2 = s.recv()
    assert [x.name for x in r2.resources] == ["other"] and not r2.removed_resources
    assert r2.resources[0].version != versions["other"]
    s.send(type_url=T_CLUSTER, response_nonce=r2.nonce)
    # deleted: removed_resources only
    os.unlink(os.path.join(d, "other.yaml"))
    r3 = s.recv()
    assert not r3.resources and list(r3.removed_resources) == ["other"]
    # a NACK
    s.send(type_url=T_CLUSTER, response_nonce=r3.nonce,
           error_detail={"code": 13, "message": "cannot remove other"})
    xs.wait_log("NACK node=delta-node type=Cluster nonce=%s code=13 "
                "message=\"cannot remove other\"" % r3.nonce)
    # unsubscribe, then subscribe again: sent again although unchanged
    s.send(type_url=T_CLA, resource_names_unsubscribe=["backend"])
    s.expect_none()
    s.send(type_url=T_CLA, resource_names_subscribe=["backend"])
    e2 = s.recv()
    assert [x.name for x in e2.resources] == ["backend"]
    assert e2.resources[0].version == e.resources[0].version
    s.close()
    xs.stop()


def test_delta_reconnect_initial_versions(ctx):
    d = make_dir(ctx, {"a.yaml": cluster_yaml("a"), "b.yaml": cluster_yaml("b"),
                       "c.yaml": cluster_yaml("c")})
    xs = Xds(ctx, d)
    s = Stream(xs.port, "DeltaAggregatedResources", delta=True)
    s.send(node=node("n1"), type_url=T_CLUSTER, resource_names_subscribe=["*"])
    r = s.recv()
    have = {x.name: x.version for x in r.resources}
    assert sorted(have) == ["a", "b", "c"]
    s.send(type_url=T_CLUSTER, response_nonce=r.nonce)
    s.close()
    # while away: b changes, c goes
    write(os.path.join(d, "b.yaml"), cluster_yaml("b", lb="RANDOM"))
    os.unlink(os.path.join(d, "c.yaml"))
    xs.wait_log(" -c")  # one reload or two, depending on timing
    assert " ~b" in xs.log()
    s2 = Stream(xs.port, "DeltaAggregatedResources", delta=True)
    s2.send(node=node("n1"), type_url=T_CLUSTER, resource_names_subscribe=["*"],
            initial_resource_versions=have)
    r2 = s2.recv()
    assert [x.name for x in r2.resources] == ["b"], r2
    assert list(r2.removed_resources) == ["c"]
    s2.send(type_url=T_CLUSTER, response_nonce=r2.nonce)
    s2.expect_none()
    s2.close()
    # nothing changed since: an empty (but present) answer to the wildcard
    s3 = Stream(xs.port, "DeltaAggregatedResources", delta=True)
    s3.send(node=node("n1"), type_url=T_CLUSTER, resource_names_subscribe=["*"],
            initial_resource_versions={"a": have["a"], "b": r2.resources[0].version})
    r3 = s3.recv()
    assert not r3.resources and not r3.removed_resources
    s3.close()
    xs.stop()


def test_per_type_services_and_unknown_method(ctx):
    import grpc
    xs = Xds(ctx, basic_dir(ctx))
    s = Stream(xs.port, None, path="/envoy.service.cluster.v3.ClusterDiscoveryService/"
                                   "StreamClusters")
    s.send(node=node("lds"))  # no type_url: the service's
    r = s.recv()
    assert r.type_url == T_CLUSTER and names(r) == ["backend", "other"]
    s.send(type_url=T_LISTENER, response_nonce=r.nonce)
    code, details = s.end()
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "serves" in details, (code, details)
    s.close()
    e = Stream(xs.port, None, path="/envoy.service.endpoint.v3.EndpointDiscoveryService/"
                                   "DeltaEndpoints", delta=True)
    e.send(node=node("eds"), resource_names_subscribe=["backend"])
    r = e.recv()
    assert [x.name for x in r.resources] == ["backend"]
    e.close()
    u = Stream(xs.port, None, path="/envoy.service.discovery.v3.Nope/Stream")
    code, details = u.end()
    assert code == grpc.StatusCode.UNIMPLEMENTED and "unknown method" in details
    u.close()
    # an aggregated stream needs type_url
    a = Stream(xs.port, "StreamAggregatedResources")
    a.send(node=node("x"))
    code, details = a.end()
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "type_url" in details
    a.close()
    xs.stop()


def test_listener_route_and_example_dir(ctx):
    """The shipped examples/xds set serves and decodes: LDS, RDS by name, CDS, EDS."""
    xs = Xds(ctx, os.path.join(harness.ROOT, "examples", "xds"))
    s = Stream(xs.port, "StreamAggregatedResources")
    s.send(node=node("example"), type_url=T_LISTENER)
    lds = s.recv()
    lis = pb()["listener"].Listener.FromString(lds.resources[0].value)
    assert lis.name == "ingress" and lis.address.socket_address.port_value == 10000
    s.send(type_url="type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
           resource_names=["local_route"])
    rds = s.recv()
    rc = pb()["route"].RouteConfiguration.FromString(rds.resources[0].value)
    assert rc.virtual_hosts[0].routes[0].route.cluster == "backend"
    s.send(type_url=T_CLA, resource_names=["backend"])
    assert cla_port(s.recv().resources[0]) == 18081
    s.close()
    xs.stop()


def test_shutdown_and_startup_errors(ctx):
    import grpc
    xs = Xds(ctx, basic_dir(ctx))
    s = Stream(xs.port, "StreamAggregatedResources")
    s.send(node=node("bye"), type_url=T_CLUSTER)
    s.recv()
    xs.stop()
    code, details = s.end()
    assert code == grpc.StatusCode.UNAVAILABLE, (code, details)
    s.close()
    bad = make_dir(ctx, {"x.yaml": "\"@type\": " + T_CLUSTER + "\nname: x\nbogus: 1\n"})
    r = ctx.run([ctx.bin("remora-xds"), "--dir", bad, "--listen", "127.0.0.1:0"], timeout=20)
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert f"{bad}/x.yaml:3: unknown field \"bogus\"" in err, err
    r = ctx.run([ctx.bin("remora-xds"), "--dir", "/nonexistent-dir"], timeout=20)
    assert r.returncode == 1 and "cannot open the directory" in r.stderr.decode()
