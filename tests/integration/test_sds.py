"""Dynamic SDS (Envoy's Secret Discovery Service, as Istio delivers every certificate): TLS
certificates and CAs referenced with an sds_config arrive as Secret resources from a python3-grpcio
control plane (pycp), over the ADS stream (SotW and Delta) or over a SecretDiscoveryService stream
of their own (api_config_source to an "sds-grpc" cluster, Istio's shape, here over TCP).

Shown, as Envoy behaves:
- a bootstrap listener whose certificate comes over SDS: /ready stays 503 and handshakes fail
  (server_ssl_socket_factory.downstream_context_secrets_not_ready) until the Secret; then it
  serves with that certificate; a new version of the Secret: new connections see the new
  certificate, an open connection keeps working; a bad Secret (key not matching its
  certificate) is NACKed with the resource name and field path and the old one stays in use.
- an LDS listener warms (not bound) until its Secret arrives; removed, its Secret is
  unsubscribed.
- a cluster whose CA comes over SDS (sds-grpc): 503 UF "Secret is not supplied by SDS" before,
  upstream TLS after; rotated to a wrong CA, new connections fail verification (503 UF).
- initial_fetch_timeout: a listener whose Secret never comes becomes active without it
  (handshakes fail), sds.<name>.init_fetch_timeout counts it; the Secret arriving later fixes
  it.
Certificates are made with the openssl CLI in the test's temp dir (test_tls.certs)."""
import json
import os
import socket
import ssl
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import remora_cfg as cfg  # noqa: E402
from pycp import (T_SECRET, PyCP, any_of, cla, eds_cluster, listener, message,  # noqa: E402
                  route_config)
from test_dns_cluster import admin_get, wait_ready  # noqa: E402
from test_tls import (SERVER_SPIFFE, _leaf, _validate, certs, tls_bootstrap,  # noqa: E402
                      tls_upstream)
from test_xds_dynamic import RC, stat, wait_refused, wait_stat  # noqa: E402

DTLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
UTLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
ADS = "{ ads: {}, resource_api_version: V3%s }"


def _read(path):
    with open(path) as f:
        return f.read()


def cert_secret(name, crt, key):
    return {"name": name, "tls_certificate": {"certificate_chain": {"inline_string": _read(crt)},
                                              "private_key": {"inline_string": _read(key)}}}


def ca_secret(name, ca):
    return {"name": name, "validation_context": {"trusted_ca": {"inline_string": _read(ca)}}}


def second_server_cert(ctx):
    """Another server certificate from the same CA (another subject and serial)."""
    d = os.path.join(ctx.tmp, "pki")
    ca = (os.path.join(d, "ca.key"), os.path.join(d, "ca.crt"))
    return _leaf(ctx, d, "server2", ca, f"DNS:localhost,URI:{SERVER_SPIFFE},IP:127.0.0.1",
                 "serverAuth")


def listener_tls(sds_config):
    """filter_chains[0] of a bootstrap listener whose certificate "server_cert" comes over SDS."""
    return f"""
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": {DTLS}
          common_tls_context:
            tls_certificate_sds_secret_configs:
            - name: server_cert
              sds_config: {sds_config}
      filters:"""


def ads_head(api, xds_port):
    api_type = {"sotw": "GRPC", "delta": "DELTA_GRPC"}[api]
    return f"""
node: {{ id: sds-1, cluster: test }}
dynamic_resources:
  ads_config:
    api_type: {api_type}
    transport_api_version: V3
    grpc_services:
    - envoy_grpc: {{ cluster_name: xds_cluster }}
""", cfg.cluster("xds_cluster", [xds_port], proto="h2")


# ---- TLS clients ---------------------------------------------------------------------------

def connect(ctx, port, timeout=5):
    """A TLS connection to 127.0.0.1:<port> verified against the test CA (HTTP/1.1, no ALPN)."""
    c = ssl.create_default_context(cafile=certs(ctx)["ca"])
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        return c.wrap_socket(s, server_hostname="localhost")
    except BaseException:
        s.close()
        raise


def handshake_fails(ctx, port):
    try:
        connect(ctx, port).close()
    except (ssl.SSLError, OSError):
        return True
    return False


def request(conn):
    """GET / on <conn> (keep-alive); the status."""
    conn.sendall(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        assert chunk, f"closed after {buf!r}"
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    n = 0
    for h in lines[1:]:
        k, _, v = h.partition(":")
        if k.strip().lower() == "content-length":
            n = int(v)
    while len(body) < n:
        chunk = conn.recv(65536)
        assert chunk, "closed in the body"
        body += chunk
    return int(lines[0].split()[1])


def der(crt):
    return ssl.PEM_cert_to_DER_cert(_read(crt))


def wait_peer(ctx, port, crt, timeout=10):
    """Wait until a new connection to <port> is served with certificate <crt>; serve a request."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with connect(ctx, port) as conn:
                if conn.getpeercert(binary_form=True) == der(crt):
                    assert request(conn) == 200
                    return
        except (ssl.SSLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise harness.TestFailure(f"127.0.0.1:{port} never served {crt}")
        time.sleep(0.1)


def sds_stat(ctx, px, name, s):
    return stat(ctx, px, f"sds.{name}.{s}")


# ---- a bootstrap listener ------------------------------------------------------------------

def _bootstrap_listener(ctx, api):
    c = certs(ctx)
    crt2, key2 = second_server_cert(ctx)[::-1]
    up = ctx.upstream(name="plain")
    cp = PyCP()
    try:
        head, xds = ads_head(api, cp.port)
        px = ctx.remora(head + tls_bootstrap([cfg.cluster("backend", [up.port]), xds],
                                             listener_tls(ADS % "")), wait=False)
        harness.wait_port(px.admin, proc=px.p)
        harness.wait_port(px.port, proc=px.p)  # a bootstrap listener is bound at once
        cp.wait_subscribed("sds", {"server_cert"})
        # no secret: not ready, handshakes fail (Envoy's NotReadySslSocket)
        assert admin_get(ctx, px, "/ready").status == 503
        assert handshake_fails(ctx, px.port)
        nr = f"listener.127.0.0.1_{px.port}.server_ssl_socket_factory." \
             "downstream_context_secrets_not_ready"
        assert stat(ctx, px, nr) >= 1
        v1 = cp.set("sds", {"server_cert": cert_secret("server_cert", c["server_crt"],
                                                       c["server_key"])})
        cp.wait_ack("sds", v1)
        wait_ready(ctx, px)
        wait_peer(ctx, px.port, c["server_crt"])
        # /config_dump: the secret with its version, its private key redacted
        text = admin_get(ctx, px, "/config_dump").body.decode()
        dyn = [s for d in json.loads(text)["configs"] for s in d.get("dynamic_active_secrets", [])]
        want = v1 if api == "sotw" else cp.resource_version("sds", "server_cert")  # Delta's own
        assert [(s["name"], s["version_info"]) for s in dyn] == [("server_cert", want)], dyn
        assert "[redacted]" in text and "PRIVATE KEY" not in text
        # rotation: new connections get the new certificate, an open one keeps working
        held = connect(ctx, px.port)
        assert held.getpeercert(binary_form=True) == der(c["server_crt"])
        assert request(held) == 200
        v2 = cp.set("sds", {"server_cert": cert_secret("server_cert", crt2, key2)})
        cp.wait_ack("sds", v2)
        wait_peer(ctx, px.port, crt2)
        assert request(held) == 200, "the open connection keeps its session"
        assert sds_stat(ctx, px, "server_cert", "update_success") == 2
        # the same bytes again: nothing changes (no new version seen by the TLS code)
        # a bad secret: the key does not match the certificate -> NACK, the old one serves
        bad = cert_secret("server_cert", c["server_crt"], key2)
        cp.set("sds", {"server_cert": bad})
        nack = cp.wait_nack("sds")
        msg = nack.error_detail.message
        assert "Secret server_cert" in msg and \
            "tls_certificate.private_key.inline_string: the key does not match the certificate" \
            in msg, msg
        assert sds_stat(ctx, px, "server_cert", "update_rejected") == 1
        # unparseable PEM, an unsupported kind, a kind the listener cannot use
        for i, (bad, want) in enumerate((
                ({"name": "server_cert", "tls_certificate": {
                    "certificate_chain": {"inline_string": "garbage"},
                    "private_key": {"inline_string": _read(key2)}}},
                 "Secret server_cert: resources[0].tls_certificate.certificate_chain."
                 "inline_string: no PEM certificate"),
                ({"name": "server_cert", "generic_secret": {"secret": {"inline_string": "x"}}},
                 "Secret server_cert: resources[0].generic_secret: not supported by remora"),
                (ca_secret("server_cert", c["ca"]),
                 "tls_certificate_sds_secret_configs[0].name: secret \"server_cert\" "
                 "(Secret server_cert) is not a tls_certificate secret"))):
            cp.set("sds", {"server_cert": bad})
            msg = cp.wait_nack("sds").error_detail.message
            assert want in msg, (want, msg)
            assert sds_stat(ctx, px, "server_cert", "update_rejected") == 2 + i
        assert sds_stat(ctx, px, "server_cert", "update_success") == 2
        with connect(ctx, px.port) as conn:
            assert conn.getpeercert(binary_form=True) == der(crt2)
            assert request(conn) == 200
        assert request(held) == 200
        held.close()
        assert ctx.stop(px) == 0
    finally:
        cp.stop()


def test_sds_bootstrap_listener_sotw(ctx):
    _bootstrap_listener(ctx, "sotw")


def test_sds_bootstrap_listener_delta(ctx):
    _bootstrap_listener(ctx, "delta")


# ---- an LDS listener -----------------------------------------------------------------------

def lds_tls_listener(name, port, timeout=None):
    d = listener(name, port, RC)
    src = {"ads": {}, "resource_api_version": "V3"}
    if timeout:
        src["initial_fetch_timeout"] = timeout
    d["filter_chains"][0]["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {"@type": DTLS, "common_tls_context": {
            "tls_certificate_sds_secret_configs": [{"name": "server_cert", "sds_config": src}]}}}
    return d


def lds_bootstrap(api, xds_port):
    head, xds = ads_head(api, xds_port)
    return head + """  cds_config: { ads: {}, resource_api_version: V3 }
  lds_config: { ads: {}, resource_api_version: V3 }
admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: {admin} }
static_resources:
  clusters:""" + xds + "\n"


def _lds_start(ctx, api, cp, timeout=None):
    up = ctx.upstream(name="plain")
    port = harness.free_port()
    cp.set("cds", {"backend": eds_cluster("backend")})
    cp.set("eds", {"backend": cla("backend", [up.port])})
    cp.set("rds", {RC: route_config(RC, [("/", "backend")])})
    cp.set("lds", {"ingress": lds_tls_listener("ingress", port, timeout)})
    px = ctx.remora(lds_bootstrap(api, cp.port), wait=False)
    harness.wait_port(px.admin, proc=px.p)
    cp.wait_ack("lds")
    return px, port


def test_sds_lds_listener_warms_until_its_secret(ctx):
    c = certs(ctx)
    cp = PyCP()
    try:
        px, port = _lds_start(ctx, "delta", cp)
        cp.wait_subscribed("sds", {"server_cert"})
        cp.wait_ack("rds")
        time.sleep(0.3)
        assert stat(ctx, px, "listener_manager.total_listeners_warming") == 1
        assert stat(ctx, px, "listener_manager.total_listeners_active") == 0
        assert admin_get(ctx, px, "/ready").status == 503
        wait_refused(port)  # warming: not bound
        v = cp.set("sds", {"server_cert": cert_secret("server_cert", c["server_crt"],
                                                      c["server_key"])})
        cp.wait_ack("sds", v)
        wait_ready(ctx, px)
        wait_peer(ctx, port, c["server_crt"])
        wait_stat(ctx, px, "listener_manager.total_listeners_warming", 0)
        # the listener goes: its secret is no longer subscribed
        cp.set("lds", {})
        wait_refused(port)
        cp.wait_subscribed("sds", set())
        assert ctx.stop(px) == 0
    finally:
        cp.stop()


def test_sds_initial_fetch_timeout_activates_the_listener(ctx):
    c = certs(ctx)
    cp = PyCP()
    try:
        px, port = _lds_start(ctx, "sotw", cp, timeout="1s")
        cp.wait_subscribed("sds", {"server_cert"})
        wait_refused(port, timeout=0.5)
        # no Secret: after initial_fetch_timeout the listener is active without it
        harness.wait_port(port, timeout=10, proc=px.p)
        wait_ready(ctx, px)
        assert sds_stat(ctx, px, "server_cert", "init_fetch_timeout") == 1
        assert handshake_fails(ctx, port)
        # the Secret, late: the listener serves with it
        v = cp.set("sds", {"server_cert": cert_secret("server_cert", c["server_crt"],
                                                      c["server_key"])})
        cp.wait_ack("sds", v)
        wait_peer(ctx, port, c["server_crt"])
        assert ctx.stop(px) == 0
    finally:
        cp.stop()


# ---- a cluster's CA over a SecretDiscoveryService stream (Istio's sds-grpc) -----------------

SDS_GRPC = """{ api_config_source: { api_type: %s, transport_api_version: V3, grpc_services: [
                  { envoy_grpc: { cluster_name: sds-grpc } } ] }, resource_api_version: V3 }"""


def cluster_tls(api_type="GRPC"):
    return f"""
    max_requests_per_connection: 1
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": {UTLS}
        sni: backend.test
        common_tls_context:
          validation_context_sds_secret_config:
            name: ROOTCA
            sds_config: {SDS_GRPC % api_type}"""


def test_sds_cluster_ca_over_sds_grpc(ctx):
    _cluster_ca(ctx, "GRPC")


def test_sds_cluster_ca_over_sds_grpc_delta(ctx):
    _cluster_ca(ctx, "DELTA_GRPC")


def _cluster_ca(ctx, api_type):
    c = certs(ctx)
    up = tls_upstream(ctx)
    cp = PyCP()
    try:
        px = ctx.remora(tls_bootstrap([cfg.cluster("backend", [up.port],
                                                   extra=cluster_tls(api_type)),
                                       cfg.cluster("sds-grpc", [cp.port], proto="h2")]),
                        wait=False)
        harness.wait_port(px.admin, proc=px.p)
        harness.wait_port(px.port, proc=px.p)
        cp.wait_subscribed("sds", {"ROOTCA"})
        kind = {"GRPC": "sotw", "DELTA_GRPC": "delta"}[api_type]
        assert {k for k, _, _ in cp.requests} == {kind}, "SecretDiscoveryService, not ADS"
        assert admin_get(ctx, px, "/ready").status == 503
        r = ctx.curl(f"http://127.0.0.1:{px.port}/")
        assert r.status == 503 and b"TLS error: Secret is not supplied by SDS" in r.body, r
        assert stat(ctx, px, "cluster.backend.client_ssl_socket_factory."
                             "upstream_context_secrets_not_ready") >= 1
        v = cp.set("sds", {"ROOTCA": ca_secret("ROOTCA", c["ca"])})
        cp.wait_ack("sds", v)
        wait_ready(ctx, px)
        r = ctx.curl(f"http://127.0.0.1:{px.port}/")
        assert r.status == 200 and r.headers.get("x-upstream-name") == "tls-up", r
        assert stat(ctx, px, "cluster.backend.ssl.handshake") >= 1
        # rotated to a CA that did not sign the upstream's certificate: new connections fail
        v = cp.set("sds", {"ROOTCA": ca_secret("ROOTCA", c["other_ca"])})
        cp.wait_ack("sds", v)
        deadline = time.monotonic() + 10
        while True:
            r = ctx.curl(f"http://127.0.0.1:{px.port}/")
            if r.status == 503 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert r.status == 503 and b"TLS error: certificate verify failed" in r.body, r
        assert stat(ctx, px, "cluster.backend.ssl.fail_verify_error") >= 1
        assert stat(ctx, px, "cluster.backend.client_ssl_socket_factory."
                             "ssl_context_update_by_sds") == 2
        assert sds_stat(ctx, px, "ROOTCA", "update_success") == 2
        # the same bytes again (a new response version): nothing is rebuilt
        nonce = cp.send_raw("sds", [("ROOTCA", any_of(T_SECRET, message(
            T_SECRET, ca_secret("ROOTCA", c["other_ca"]))))])[0]
        cp.wait_request(lambda kind, sid, req: req.type_url == T_SECRET and
                        req.response_nonce == nonce and not req.HasField("error_detail"),
                        "the ACK of the same secret again")
        assert stat(ctx, px, "cluster.backend.client_ssl_socket_factory."
                             "ssl_context_update_by_sds") == 2
        assert sds_stat(ctx, px, "ROOTCA", "update_success") == 2
        # and back
        v = cp.set("sds", {"ROOTCA": ca_secret("ROOTCA", c["ca"])})
        cp.wait_ack("sds", v)
        r = ctx.curl(f"http://127.0.0.1:{px.port}/")
        assert r.status == 200, r
        assert ctx.stop(px) == 0
    finally:
        cp.stop()


# ---- a CDS cluster -------------------------------------------------------------------------

def test_sds_cds_cluster_warms_until_its_secret(ctx):
    c = certs(ctx)
    up = tls_upstream(ctx)
    port = harness.free_port()
    cp = PyCP()
    try:
        tls = {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": UTLS, "sni": "backend.test", "common_tls_context": {
                "combined_validation_context": {
                    "default_validation_context": {"match_typed_subject_alt_names": [
                        {"san_type": "URI", "matcher": {"exact": SERVER_SPIFFE}}]},
                    "validation_context_sds_secret_config": {
                        "name": "ROOTCA",
                        "sds_config": {"ads": {}, "resource_api_version": "V3"}}}}}}
        cp.set("cds", {"backend": eds_cluster("backend", {"transport_socket": tls})})
        cp.set("eds", {"backend": cla("backend", [up.port])})
        cp.set("rds", {RC: route_config(RC, [("/", "backend")])})
        cp.set("lds", {"ingress": listener("ingress", port, RC)})
        px = ctx.remora(lds_bootstrap("sotw", cp.port), wait=False)
        harness.wait_port(px.admin, proc=px.p)
        cp.wait_subscribed("sds", {"ROOTCA"})
        cp.wait_ack("eds")
        time.sleep(0.3)
        assert stat(ctx, px, "cluster_manager.warming_clusters") == 1
        assert admin_get(ctx, px, "/ready").status == 503
        v = cp.set("sds", {"ROOTCA": ca_secret("ROOTCA", c["ca"])})
        cp.wait_ack("sds", v)
        wait_ready(ctx, px)
        wait_stat(ctx, px, "cluster_manager.warming_clusters", 0)
        r = ctx.curl(f"http://127.0.0.1:{port}/")
        assert r.status == 200 and r.headers.get("x-upstream-name") == "tls-up", r
        assert stat(ctx, px, "cluster.backend.ssl.handshake") >= 1
        assert ctx.stop(px) == 0
    finally:
        cp.stop()


def test_sds_source_errors_name_the_field(ctx):
    """--mode validate: an SDS source the bootstrap cannot provide is an error naming it."""
    up = 1
    y = tls_bootstrap([cfg.cluster("backend", [up])], listener_tls(ADS % ""))
    r = _validate(ctx, y, "v1")
    err = r.stderr.decode() + r.stdout.decode()
    assert r.returncode == 1 and "static_resources.listeners[0] (ingress): secret server_cert: " \
        "sds_config: ads: {} needs dynamic_resources.ads_config" in err, err
    y = tls_bootstrap([cfg.cluster("backend", [up], extra=cluster_tls())])
    r = _validate(ctx, y, "v2")
    err = r.stderr.decode() + r.stdout.decode()
    assert r.returncode == 1 and "cluster backend: secret ROOTCA: sds_config.api_config_source." \
        "grpc_services[0].envoy_grpc.cluster_name: \"sds-grpc\" is not a STATIC cluster" in err, err


# ---- Istio's shape: the SDS server on a unix socket ------------------------------------------

def test_sds_listener_certificate_from_sds_grpc_on_a_unix_socket(ctx):
    """As istio-agent serves certificates: a static sds-grpc cluster whose endpoint is a pipe
    (workload-spiffe-uds/socket), the listener's certificate named "default" from it."""
    c = certs(ctx)
    up = ctx.upstream(name="plain")
    sock = os.path.join(ctx.tmp, "workload-spiffe-uds", "socket")
    os.makedirs(os.path.dirname(sock))
    cp = PyCP(unix=sock)
    try:
        sds_grpc = cfg.cluster("sds-grpc", [], proto="h2").replace(
            "      - lb_endpoints: []", """      - lb_endpoints:
        - endpoint:
            address:
              pipe: { path: "%s" }""" % sock)
        tls = listener_tls(SDS_GRPC % "GRPC").replace("name: server_cert", "name: default")
        px = ctx.remora(tls_bootstrap([cfg.cluster("backend", [up.port]), sds_grpc], tls),
                        wait=False)
        harness.wait_port(px.admin, proc=px.p)
        cp.wait_subscribed("sds", {"default"})
        assert {k for k, _, _ in cp.requests} == {"sotw"}, "SecretDiscoveryService, not ADS"
        v = cp.set("sds", {"default": cert_secret("default", c["server_crt"], c["server_key"])})
        cp.wait_ack("sds", v)
        wait_ready(ctx, px)
        wait_peer(ctx, px.port, c["server_crt"])
        assert sds_stat(ctx, px, "default", "update_success") == 1
        assert ctx.stop(px) == 0
    finally:
        cp.stop()
