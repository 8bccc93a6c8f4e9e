"""xDS over TLS and mTLS (as istiod serves it): remora's ADS client reaches a python3-grpcio
control plane (pycp) through the xds cluster's transport_socket (UpstreamTlsContext: CA, SAN,
client certificate); the configuration it receives serves traffic.  A control plane whose
certificate does not verify (wrong CA, SAN mismatch) is never connected to: nothing is
applied, /ready stays 503, control_plane.connected_state stays 0."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from pycp import PyCP  # noqa: E402
from test_dns_cluster import admin_get, wait_ready  # noqa: E402
from pycp import cla, eds_cluster, listener, route_config  # noqa: E402
from test_tls import (SERVER_SPIFFE, certs, https, secrets_yaml, tls_upstream,  # noqa: E402
                      upstream_tls)
from test_xds_dynamic import RC, base, bootstrap, names_seen, stat  # noqa: E402


def serve(ctx, api, cp, tls_extra):
    up = ctx.upstream(name="a")
    port = harness.free_port()
    for t, v in base(up.port, port).items():
        cp.set(t, v)
    px = ctx.remora(bootstrap(api, cp.port, tls_extra), wait=False)
    harness.wait_port(px.admin, proc=px.p)
    return px, port


def check_serves(ctx, px, cp, port):
    for t in ("cds", "eds", "lds", "rds"):
        cp.wait_ack(t)
    wait_ready(ctx, px)
    assert names_seen(ctx, port, 3) == {"a": 3}
    assert stat(ctx, px, "control_plane.connected_state") == 1
    assert stat(ctx, px, "cluster.xds_cluster.ssl.handshake") >= 1


def test_xds_over_tls_sotw(ctx):
    c = certs(ctx)
    cp = PyCP(tls=(c["server_crt"], c["server_key"], None))
    try:
        px, port = serve(ctx, "sotw", cp, upstream_tls(c))  # CA + URI SAN (spiffe)
        check_serves(ctx, px, cp, port)
        assert ctx.stop(px) == 0
    finally:
        cp.stop()


def test_xds_over_mtls_delta(ctx):
    """mTLS: the control plane requires remora's client certificate (istiod's port 15012)."""
    c = certs(ctx)
    cp = PyCP(tls=(c["server_crt"], c["server_key"], c["ca"]))
    try:
        px, port = serve(ctx, "delta", cp,
                         upstream_tls(c, san="backend.test", san_type="DNS", client_cert=True))
        check_serves(ctx, px, cp, port)
        assert ctx.stop(px) == 0
        # the same control plane refuses remora without a client certificate
        seen = len(cp.requests)
        px, port = serve(ctx, "delta", cp, upstream_tls(c))
        time.sleep(1.5)
        assert admin_get(ctx, px, "/ready").status == 503
        assert stat(ctx, px, "control_plane.connected_state") == 0
        assert len(cp.requests) == seen, "a request got through without a client certificate"
        assert ctx.stop(px) == 0
    finally:
        cp.stop()


def test_xds_tls_verification_failures_never_connect(ctx):
    c = certs(ctx)
    cp = PyCP(tls=(c["server_crt"], c["server_key"], None))
    try:
        for name, extra, fail_stat in (
                ("wrong-ca", upstream_tls(c, ca_key="other_ca"), "ssl.fail_verify_error"),
                ("wrong-san", upstream_tls(c, san=SERVER_SPIFFE + "-not"), "ssl.fail_verify_san")):
            px, port = serve(ctx, "sotw", cp, extra)
            deadline = time.monotonic() + 10
            while stat(ctx, px, "cluster.xds_cluster." + fail_stat) < 1:
                if time.monotonic() > deadline:
                    raise harness.TestFailure(f"{name}: no {fail_stat} within 10 s")
                time.sleep(0.1)
            assert admin_get(ctx, px, "/ready").status == 503, name
            assert stat(ctx, px, "control_plane.connected_state") == 0, name
            assert ctx.stop(px) == 0, name
        assert not cp.requests, "a request got through a failed verification"
    finally:
        cp.stop()


TLS_ANY = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."


def test_xds_resources_use_bootstrap_secrets(ctx):
    """A listener over LDS and a cluster over CDS reference static_resources.secrets by name
    (as in Envoy): the listener's certificate, the cluster's client certificate and CA."""
    c = certs(ctx)
    up = tls_upstream(ctx, name="a")
    port = harness.free_port()
    cp = PyCP()
    try:
        lst = listener("ingress", port, RC)
        lst["filter_chains"][0]["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {"@type": TLS_ANY + "DownstreamTlsContext", "common_tls_context": {
                "tls_certificate_sds_secret_configs": [{"name": "server_cert"}]}}}
        cl = eds_cluster("backend", {"transport_socket": {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {"@type": TLS_ANY + "UpstreamTlsContext", "sni": "backend.test",
                             "common_tls_context": {
                                 "tls_certificate_sds_secret_configs": [{"name": "client_cert"}],
                                 "validation_context_sds_secret_config": {"name": "ca"}}}}})
        cp.set("cds", {"backend": cl})
        cp.set("eds", {"backend": cla("backend", [up.port])})
        cp.set("lds", {"ingress": lst})
        cp.set("rds", {RC: route_config(RC, [("/", "backend")])})
        px = ctx.remora(bootstrap("sotw", cp.port) + secrets_yaml(c), wait=False)
        harness.wait_port(px.admin, proc=px.p)
        for t in ("cds", "eds", "lds", "rds"):
            cp.wait_ack(t)
        wait_ready(ctx, px)
        r = https(ctx, port, "/echo-request")  # the listener's certificate, verified
        assert r.status == 200 and r.headers.get("x-upstream-name") == "a", r
        assert stat(ctx, px, "cluster.backend.ssl.handshake") >= 1
        assert ctx.stop(px) == 0
    finally:
        cp.stop()
