"""pycp.PyCP on its own, driven by a python3-grpcio client (test_xds_server.Stream): the xDS
behaviour the dynamic tests (test_xds_dynamic.py) rely on from it.

SotW: a withheld type gets no answer until set(); the legacy wildcard (empty first request for
Cluster/Listener) gets the full state, by-name types only the subscribed names; ACKs, NACKs
and stale nonces get nothing back; set() pushes only to streams whose resources changed; a
grown subscription is answered at once; versions count per type, nonces never repeat; a
hand-made response (send_raw) is sent as is and the next set() is sent again.
Delta: only what the client lacks (initial_resource_versions honoured), removed_resources for
deletions of held resources, unsubscribe forgets (a re-subscription resends), "*" handling,
the first wildcard request is answered even when nothing is due; the records
(wait_ack / wait_nack / wait_subscribed / first_requests) say what the client sent.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pycp import (T_CLA, T_CLUSTER, T_LISTENER, PyCP, any_of, cla, eds_cluster,  # noqa: E402
                  listener, resource_version)
from test_xds_server import Stream, _name, names, node  # noqa: E402


def ack(s, r, names_=()):
    s.send(type_url=r.type_url, version_info=r.version_info, response_nonce=r.nonce,
           resource_names=list(names_))


def test_pycp_sotw(ctx):
    cp = PyCP()
    s = None
    try:
        v1 = cp.set("cds", {"a": eds_cluster("a"), "b": eds_cluster("b")})
        assert v1 == "cds-1"
        s = Stream(cp.port, "StreamAggregatedResources")
        s.send(node=node("n1"), type_url=T_LISTENER)           # withheld: never set
        s.expect_none(0.3)
        s.send(type_url=T_CLUSTER)                             # legacy wildcard
        r = s.recv()
        assert r.type_url == T_CLUSTER and r.version_info == v1 and names(r) == ["a", "b"], r
        ack(s, r)
        assert cp.wait_ack("cds", v1).response_nonce == r.nonce
        cp.wait_subscribed("cds", {"*"})
        s.expect_none(0.3)                                     # an ACK gets nothing back

        # by name: only the subscribed ones; nothing before one of them exists
        cp.set("eds", {"c": cla("c", [1])})
        s.send(type_url=T_CLA, resource_names=["a"])
        s.expect_none(0.3)
        v2 = cp.update("eds", {"a": cla("a", [2])})
        e = s.recv()
        assert e.type_url == T_CLA and e.version_info == v2 == "eds-2" and names(e) == ["a"], e
        assert e.nonce != r.nonce
        ack(s, e, ["a"])
        cp.update("eds", {"c": cla("c", [3])})                # not subscribed: nothing
        s.expect_none(0.3)
        s.send(type_url=T_CLA, response_nonce="stale", resource_names=["a", "c"])
        s.expect_none(0.3)                                     # stale nonce: ignored
        s.send(type_url=T_CLA, version_info=e.version_info, response_nonce=e.nonce,
               resource_names=["a", "c"])
        e2 = s.recv()                                          # grown: answered at once
        assert names(e2) == ["a", "c"] and e2.version_info == "eds-3", e2
        cp.wait_subscribed("eds", {"a", "c"})

        # a NACK gets nothing back; the next change is sent
        s.send(type_url=T_CLA, version_info=e.version_info, response_nonce=e2.nonce,
               resource_names=["a", "c"], error_detail={"code": 13, "message": "no"})
        assert cp.wait_nack("eds").error_detail.message == "no"
        s.expect_none(0.3)
        assert len(cp.nacks("eds")) == 1 and len(cp.acks("eds")) == 1

        # a hand-made response, then the good state again
        bad = cp.send_raw("cds", [("x", any_of(T_CLUSTER, b"\x0a\x10abc"))])
        raw = s.recv()
        assert [raw.nonce] == bad and raw.version_info == "cds-2" and \
            raw.resources[0].value == b"\x0a\x10abc", raw
        s.send(type_url=T_CLUSTER, version_info=v1, response_nonce=raw.nonce,
               error_detail={"code": 13, "message": "resources[0]: undecodable"})
        assert cp.wait_nack("cds", bad[0]).version_info == v1
        v3 = cp.set("cds", {"a": eds_cluster("a"), "b": eds_cluster("b")})
        r3 = s.recv()
        assert r3.version_info == v3 == "cds-3" and names(r3) == ["a", "b"], r3
        assert cp.changed_version("cds", "a") == v1       # same bytes since version 1
        assert cp.streams_opened == 1
        first = cp.first_requests(1)
        assert first[None].node.id == "n1" and first[T_CLA].resource_names == ["a"]
    finally:
        if s:
            s.close()
        cp.stop()


def test_pycp_delta(ctx):
    cp = PyCP()
    s = s2 = None
    try:
        cp.set("cds", {"a": eds_cluster("a"), "b": eds_cluster("b")})
        cp.set("lds", {})
        s = Stream(cp.port, "DeltaAggregatedResources", delta=True)
        s.send(node=node("n1"), type_url=T_CLUSTER)             # legacy wildcard
        r = s.recv()
        assert sorted(x.name for x in r.resources) == ["a", "b"] and not r.removed_resources
        have = {x.name: x.version for x in r.resources}
        assert have["a"] == resource_version(r.resources[0].resource.value) == \
            cp.resource_version("cds", "a")
        s.send(type_url=T_CLUSTER, response_nonce=r.nonce)
        cp.wait_ack("cds")
        s.send(type_url=T_LISTENER, resource_names_subscribe=["*"])
        e = s.recv()                   # nothing there, but the wildcard gets its answer
        assert e.type_url == T_LISTENER and not e.resources and not e.removed_resources, e
        cp.wait_subscribed("lds", {"*"})

        # only the changed resource; a deletion is removed_resources
        cp.update("cds", {"b": eds_cluster("b", {"connect_timeout": "2s"})})
        r2 = s.recv()
        assert [x.name for x in r2.resources] == ["b"] and r2.resources[0].version != have["b"]
        s.send(type_url=T_CLUSTER, response_nonce=r2.nonce)
        cp.update("cds", {"a": None})
        r3 = s.recv()
        assert not r3.resources and list(r3.removed_resources) == ["a"], r3
        s.send(type_url=T_CLUSTER, response_nonce=r3.nonce,
               error_detail={"code": 13, "message": "no"})
        assert cp.wait_nack("cds", r3.nonce).error_detail.code == 13
        s.expect_none(0.3)

        # by name; unsubscribe forgets, subscribing again resends
        cp.set("eds", {"x": cla("x", [1]), "y": cla("y", [2])})
        s.send(type_url=T_CLA, resource_names_subscribe=["x"])
        x = s.recv()
        assert [i.name for i in x.resources] == ["x"], x
        s.send(type_url=T_CLA, response_nonce=x.nonce, resource_names_unsubscribe=["x"])
        s.expect_none(0.3)
        cp.wait_subscribed("eds", set())
        s.send(type_url=T_CLA, resource_names_subscribe=["x", "y"])
        xy = s.recv()
        assert sorted(i.name for i in xy.resources) == ["x", "y"], xy
        s.close()

        # a new stream with initial_resource_versions: only what is missing or changed
        s2 = Stream(cp.port, "DeltaAggregatedResources", delta=True)
        s2.send(node=node("n1"), type_url=T_CLUSTER, resource_names_subscribe=["*"],
                initial_resource_versions={"a": have["a"], "b": r2.resources[0].version})
        r4 = s2.recv()
        assert not r4.resources and list(r4.removed_resources) == ["a"], r4
        s2.send(type_url=T_CLA, resource_names_subscribe=["x"],
                initial_resource_versions={"x": "stale"})
        x2 = s2.recv()
        assert [i.name for i in x2.resources] == ["x"], x2
        first = cp.first_requests(2)
        assert dict(first[T_CLUSTER].initial_resource_versions)["a"] == have["a"]
        assert cp.streams_opened == 2 and _name(x2.resources[0].resource) == "x"
        s2.send(type_url=T_LISTENER)                            # legacy wildcard, empty
        assert not s2.recv().resources
        cp.set("lds", {"l": listener("l", 1, "r")})
        lr = s2.recv()
        assert lr.type_url == T_LISTENER and [i.name for i in lr.resources] == ["l"], lr
    finally:
        for st in (s, s2):
            if st:
                st.close()
        cp.stop()
