"""remora's ADS client (xds/ads_client.c) against an independent control plane: an ADS server
written here with Debian's python3-grpcio and message classes generated from proto/ by
protoc --python_out (test_xds_server.pb()), so a framing or encoding bug that remora shares
with build/remora-xds (same C protobuf and gRPC code) cannot hide.

The server runs in-process (grpc.server on a thread pool, stopped in a finally), records every
DiscoveryRequest and answers with ClusterLoadAssignments built with the Python classes and
packed into google.protobuf.Any; the test pushes new versions on demand.

Shown here: the first request (node id, user_agent_name, type_url, resource_names, empty
version and nonce); traffic reaches the assigned upstream; the ACK (version and nonce echoed,
no error_detail, node only on the first request); a new version moves the traffic and is
ACKed; a hostname address is NACKed (last accepted version, the new nonce, code 13, a message
naming the resource and the field path) while traffic stays on the last good upstream; a good
version after the NACK is accepted again.  A restarted control plane (a new server on the same
port) gets a new stream whose first request carries the node again and the last accepted
version with an empty nonce, and its assignment is applied.
"""
import os
import queue
import sys
import threading
import time
from concurrent import futures

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from test_ads_eds import ads_bootstrap, wait_name  # noqa: E402
from test_dns_cluster import names_seen, stats, wait_ready  # noqa: E402
from test_xds_server import pb  # noqa: E402

SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
T_CLA = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
NODE_ID = "sidecar-ads-1"  # test_ads_eds.ads_bootstrap's node


def cla(name, address, port):
    """A ClusterLoadAssignment built with the generated Python classes (not from YAML)."""
    from google.protobuf import json_format
    return json_format.ParseDict(
        {"clusterName": name,
         "endpoints": [{"lbEndpoints": [{"endpoint": {"address": {"socketAddress": {
             "address": address, "portValue": port}}}}]}]},
        pb()["endpoint"].ClusterLoadAssignment())


class PyAds:
    """A SotW ADS server for ClusterLoadAssignments on a free loopback port.

    .requests: every DiscoveryRequest received, in order (all streams).
    .sent: (version, nonce) of every response sent.
    push(version, assignments): new state of the type, sent to every open stream (and to
    streams opened later, on their first request)."""

    def __init__(self, port=0):
        import grpc
        d = pb()["d"]
        self.d = d
        self.lock = threading.Condition()
        self.requests = []
        self.sent = []
        self.streams = []          # outbound queues of the open streams
        self.state = None          # (version, [ClusterLoadAssignment])
        self.nonce = 0
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
            "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self._stream, request_deserializer=d.DiscoveryRequest.FromString,
                response_serializer=d.DiscoveryResponse.SerializeToString)}),))
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        assert self.port, f"could not bind 127.0.0.1:{port}"
        self.server.start()

    # -- server side ---------------------------------------------------------------------------
    def _response(self):
        """The current state as a DiscoveryResponse with a fresh nonce (lock held)."""
        from google.protobuf import any_pb2
        version, assignments = self.state
        self.nonce += 1
        resources = []
        for a in assignments:
            anyv = any_pb2.Any()
            anyv.Pack(a)   # type URL: type.googleapis.com/<full name>
            resources.append(anyv)
        r = self.d.DiscoveryResponse(version_info=version, resources=resources, type_url=T_CLA,
                                     nonce=str(self.nonce))
        self.sent.append((version, r.nonce))
        return r

    def _stream(self, request_iterator, context):
        out = queue.Queue()

        def read():
            first = True
            try:
                for req in request_iterator:
                    with self.lock:
                        self.requests.append(req)
                        if first and req.type_url == T_CLA and self.state is not None:
                            out.put(self._response())
                        first = False
                        self.lock.notify_all()
            except Exception:  # noqa: BLE001 - the stream ended (cancelled or reset)
                pass
            out.put(None)

        with self.lock:
            self.streams.append(out)
        threading.Thread(target=read, daemon=True).start()
        try:
            while context.is_active():
                try:
                    r = out.get(timeout=0.1)
                except queue.Empty:
                    continue
                if r is None:
                    return
                yield r
        finally:
            with self.lock:
                self.streams.remove(out)

    # -- test side -----------------------------------------------------------------------------
    def push(self, version, assignments):
        """Set the state; returns the nonce sent on the (single) open stream, if any."""
        with self.lock:
            self.state = (version, list(assignments))
            nonce = None
            for q in self.streams:
                r = self._response()
                nonce = r.nonce
                q.put(r)
            return nonce

    def wait_request(self, pred, what, timeout=10.0):
        """The first recorded request for which pred(req) holds; waits (bounded)."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                for r in self.requests:
                    if pred(r):
                        return r
                left = deadline - time.monotonic()
                if left <= 0:
                    raise harness.TestFailure(
                        f"no request {what} within {timeout}s; got:\n" +
                        "\n".join(describe(r) for r in self.requests))
                self.lock.wait(min(left, 0.1))

    def wait_nonce(self, nonce, timeout=10.0):
        return self.wait_request(lambda r: r.response_nonce == nonce,
                                 f"answering nonce {nonce}", timeout)

    def stop(self):
        self.server.stop(grace=0).wait(5)


def describe(r):
    err = (f" error_detail={{code={r.error_detail.code} message={r.error_detail.message!r}}}"
           if r.HasField("error_detail") else "")
    node = f" node.id={r.node.id!r}" if r.HasField("node") else ""
    return (f"DiscoveryRequest(type_url={r.type_url} names={list(r.resource_names)} "
            f"version={r.version_info!r} nonce={r.response_nonce!r}{node}{err})")


def assert_ack(req, version):
    assert req.version_info == version, describe(req)
    assert not req.HasField("error_detail"), describe(req)
    assert req.type_url == T_CLA and list(req.resource_names) == ["backend"], describe(req)
    assert not req.HasField("node"), "node is sent on the first request only: " + describe(req)


def test_interop_py_eds_over_ads(ctx):
    a = ctx.upstream(name="a")
    b = ctx.upstream(name="b")
    c = ctx.upstream(name="c")
    srv = PyAds()
    try:
        srv.push("1", [cla("backend", "127.0.0.1", a.port)])
        px = ctx.remora(ads_bootstrap(srv.port))

        # (1) the first request, then version 1 is served and ACKed
        first = srv.wait_request(lambda r: True, "at all")
        assert first.HasField("node"), describe(first)
        assert first.node.id == NODE_ID and first.node.cluster == "test", first.node
        assert first.node.user_agent_name == "remora", first.node
        assert first.node.user_agent_version, first.node
        assert first.type_url == T_CLA, describe(first)
        assert list(first.resource_names) == ["backend"], describe(first)
        assert first.version_info == "" and first.response_nonce == "", describe(first)
        assert not first.HasField("error_detail"), describe(first)
        wait_ready(ctx, px)
        assert names_seen(ctx, px.port, 4) == {"a": 4}
        n1 = srv.sent[0][1]
        assert_ack(srv.wait_nonce(n1), "1")
        st = stats(ctx, px, "backend")
        assert st["update_success"] >= 1 and st["update_rejected"] == 0, st

        # (2) version 2 moves the traffic to b, ACKed
        n2 = srv.push("2", [cla("backend", "127.0.0.1", b.port)])
        assert n2 is not None, "remora's stream is gone"
        assert_ack(srv.wait_nonce(n2), "2")
        wait_name(ctx, px, "b", timeout=5)

        # (3) a hostname instead of an IP: NACKed, version 2 kept, traffic stays on b
        n3 = srv.push("3", [cla("backend", "backend.example", c.port)])
        nack = srv.wait_nonce(n3)
        assert nack.version_info == "2", describe(nack)
        assert nack.HasField("error_detail"), describe(nack)
        assert nack.error_detail.code == 13, describe(nack)   # INTERNAL, as Envoy
        msg = nack.error_detail.message
        assert "backend" in msg and \
            "resources[0].endpoints[0].lb_endpoints[0].endpoint.address" in msg, msg
        assert not nack.HasField("node"), describe(nack)
        assert names_seen(ctx, px.port, 4) == {"b": 4}
        assert stats(ctx, px, "backend")["update_rejected"] >= 1

        # (4) a good version after the NACK is accepted: traffic moves to c
        n4 = srv.push("4", [cla("backend", "127.0.0.1", c.port)])
        assert_ack(srv.wait_nonce(n4), "4")
        wait_name(ctx, px, "c", timeout=5)

        # one stream throughout; exactly one request per response plus the initial one
        with srv.lock:
            reqs = list(srv.requests)
        assert sum(r.HasField("node") for r in reqs) == 1, "\n".join(map(describe, reqs))
        assert len(reqs) == 1 + len(srv.sent), "\n".join(map(describe, reqs))
    finally:
        srv.stop()


def test_interop_py_reconnect(ctx):
    a = ctx.upstream(name="a")
    b = ctx.upstream(name="b")
    srv = PyAds()
    srv2 = None
    try:
        srv.push("v1", [cla("backend", "127.0.0.1", a.port)])
        px = ctx.remora(ads_bootstrap(srv.port))
        wait_ready(ctx, px)
        assert_ack(srv.wait_nonce(srv.sent[0][1]), "v1")
        assert names_seen(ctx, px.port, 3) == {"a": 3}

        # the control plane goes away: traffic keeps flowing to the last assignment
        srv.stop()
        assert names_seen(ctx, px.port, 3) == {"a": 3}

        # it comes back (same port) with a new version
        srv2 = PyAds(port=srv.port)
        srv2.push("v2", [cla("backend", "127.0.0.1", b.port)])
        first = srv2.wait_request(lambda r: True, "on the new stream", timeout=15)
        assert first.HasField("node") and first.node.id == NODE_ID, describe(first)
        assert first.node.user_agent_name == "remora", first.node
        assert first.version_info == "v1" and first.response_nonce == "", describe(first)
        assert not first.HasField("error_detail"), describe(first)
        assert list(first.resource_names) == ["backend"], describe(first)
        assert_ack(srv2.wait_nonce(srv2.sent[0][1]), "v2")
        wait_name(ctx, px, "b", timeout=5)
        assert "ads: stream to" in px.output()
    finally:
        srv.stop()
        if srv2 is not None:
            srv2.stop()
