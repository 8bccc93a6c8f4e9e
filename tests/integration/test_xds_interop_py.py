"""remora's ADS client (xds/ads_client.c) against an independent control plane: pycp.PyCP, an
ADS server written with Debian's python3-grpcio and message classes generated from proto/ by
protoc --python_out (test_xds_server.pb()), so a framing or encoding bug that remora shares
with build/remora-xds (same C protobuf and gRPC code) cannot hide.

The server runs in-process (stopped in a finally), records every DiscoveryRequest and answers
with ClusterLoadAssignments built with the Python classes and packed into google.protobuf.Any;
the test pushes new versions on demand.

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
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pycp import T_CLA, PyCP, cla  # noqa: E402
from test_ads_eds import ads_bootstrap, wait_name  # noqa: E402
from test_dns_cluster import names_seen, stats, wait_ready  # noqa: E402

NODE_ID = "sidecar-ads-1"  # test_ads_eds.ads_bootstrap's node


def backend(port, address="127.0.0.1"):
    return {"backend": cla("backend", [port], address)}


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


def last_nonce(srv):
    with srv.lock:
        return srv.responses[-1][2].nonce


def test_interop_py_eds_over_ads(ctx):
    a = ctx.upstream(name="a")
    b = ctx.upstream(name="b")
    c = ctx.upstream(name="c")
    srv = PyCP()
    try:
        v1 = srv.set("eds", backend(a.port))
        px = ctx.remora(ads_bootstrap(srv.port))

        # (1) the first request, then version 1 is served and ACKed
        first = srv.wait_request(lambda kind, sid, r: True, "at all")[2]
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
        assert_ack(srv.wait_ack("eds", v1), v1)
        st = stats(ctx, px, "backend")
        assert st["update_success"] >= 1 and st["update_rejected"] == 0, st

        # (2) version 2 moves the traffic to b, ACKed
        v2 = srv.set("eds", backend(b.port))
        assert srv.streams, "remora's stream is gone"
        assert_ack(srv.wait_ack("eds", v2), v2)
        wait_name(ctx, px, "b", timeout=5)

        # (3) a hostname instead of an IP: NACKed, version 2 kept, traffic stays on b
        srv.set("eds", backend(c.port, "backend.example"))
        n3 = last_nonce(srv)
        nack = srv.wait_nack("eds", n3)
        assert nack.version_info == v2, describe(nack)
        assert nack.error_detail.code == 13, describe(nack)   # INTERNAL, as Envoy
        msg = nack.error_detail.message
        assert "backend" in msg and \
            "resources[0].endpoints[0].lb_endpoints[0].endpoint.address" in msg, msg
        assert not nack.HasField("node"), describe(nack)
        assert names_seen(ctx, px.port, 4) == {"b": 4}
        assert stats(ctx, px, "backend")["update_rejected"] >= 1

        # (4) a good version after the NACK is accepted: traffic moves to c
        v4 = srv.set("eds", backend(c.port))
        assert_ack(srv.wait_ack("eds", v4), v4)
        wait_name(ctx, px, "c", timeout=5)

        # one stream throughout; exactly one request per response plus the initial one
        with srv.lock:
            reqs = [r for _, _, r in srv.requests]
            sent = len(srv.responses)
        assert srv.streams_opened == 1, srv.describe_requests()
        assert sum(r.HasField("node") for r in reqs) == 1, "\n".join(map(describe, reqs))
        assert sent == 4 and len(reqs) == 1 + sent, "\n".join(map(describe, reqs))
    finally:
        srv.stop()


def test_interop_py_reconnect(ctx):
    a = ctx.upstream(name="a")
    b = ctx.upstream(name="b")
    srv = PyCP()
    srv2 = None
    try:
        v1 = srv.set("eds", backend(a.port))
        px = ctx.remora(ads_bootstrap(srv.port))
        wait_ready(ctx, px)
        assert_ack(srv.wait_ack("eds", v1), v1)
        assert names_seen(ctx, px.port, 3) == {"a": 3}

        # the control plane goes away: traffic keeps flowing to the last assignment
        srv.stop()
        assert names_seen(ctx, px.port, 3) == {"a": 3}

        # it comes back (same port, same state) with a new version
        srv2 = PyCP(port=srv.port, like=srv)
        v2 = srv2.set("eds", backend(b.port))
        assert v2 != v1
        first = srv2.wait_request(lambda kind, sid, r: True, "on the new stream",
                                  timeout=15)[2]
        assert first.HasField("node") and first.node.id == NODE_ID, describe(first)
        assert first.node.user_agent_name == "remora", first.node
        assert first.version_info == v1 and first.response_nonce == "", describe(first)
        assert not first.HasField("error_detail"), describe(first)
        assert list(first.resource_names) == ["backend"], describe(first)
        assert_ack(srv2.wait_ack("eds", v2), v2)
        wait_name(ctx, px, "b", timeout=5)
        assert "ads: stream to" in px.output()
    finally:
        srv.stop()
        if srv2 is not None:
            srv2.stop()
