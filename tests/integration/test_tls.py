"""TLS: termination on listeners (ALPN h2 / http/1.1, mTLS), origination to clusters (h1, h2,
SAN matching, CA verification), with certificates made by the openssl CLI in the test's temp
dir: a CA, a server certificate (DNS backend.test, localhost; URI
spiffe://cluster.local/ns/default/sa/x; IP 127.0.0.1), a client certificate (URI
spiffe://cluster.local/ns/default/sa/client) and another CA that trusts nobody here."""
import json
import os
import re
import socket
import time

import harness
import remora_cfg as cfg
from harness import TestFailure

SERVER_SPIFFE = "spiffe://cluster.local/ns/default/sa/x"
CLIENT_SPIFFE = "spiffe://cluster.local/ns/default/sa/client"


def _openssl(ctx, *args):
    ctx.run(["openssl"] + list(args), timeout=30, check=True)


def _ca(ctx, d, name):
    key, crt = os.path.join(d, name + ".key"), os.path.join(d, name + ".crt")
    _openssl(ctx, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", key, "-out", crt, "-days", "2", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return key, crt


def _leaf(ctx, d, name, ca, sans, usage):
    key, csr, crt = (os.path.join(d, name + s) for s in (".key", ".csr", ".crt"))
    ext = os.path.join(d, name + ".ext")
    with open(ext, "w") as f:
        f.write(f"subjectAltName={sans}\nbasicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n")
    _openssl(ctx, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={name}")
    _openssl(ctx, "x509", "-req", "-in", csr, "-CA", ca[1], "-CAkey", ca[0], "-set_serial",
             str(int.from_bytes(os.urandom(8), "big")), "-days", "2", "-out", crt,
             "-extfile", ext)
    return key, crt


def certs(ctx):
    """Make (once per test) the CA, server, client and other-CA files; a dict of paths."""
    if getattr(ctx, "_tls_certs", None):
        return ctx._tls_certs
    d = os.path.join(ctx.tmp, "pki")
    os.makedirs(d, exist_ok=True)
    ca = _ca(ctx, d, "ca")
    other = _ca(ctx, d, "other-ca")
    srv = _leaf(ctx, d, "server", ca,
                f"DNS:backend.test,DNS:localhost,URI:{SERVER_SPIFFE},IP:127.0.0.1",
                "serverAuth")
    cli = _leaf(ctx, d, "client", ca, f"URI:{CLIENT_SPIFFE}", "clientAuth")
    stranger = _leaf(ctx, d, "stranger", other, f"URI:{CLIENT_SPIFFE}", "clientAuth")
    ctx._tls_certs = {"ca": ca[1], "other_ca": other[1], "server_key": srv[0],
                      "server_crt": srv[1], "client_key": cli[0], "client_crt": cli[1],
                      "stranger_key": stranger[0], "stranger_crt": stranger[1]}
    return ctx._tls_certs


def downstream_tls(c, mtls=False, client_san=None, alpn=None, timeout=None):
    """A listener's transport_socket (YAML, indented for filter_chains[0])."""
    v = ""
    if mtls:
        san = ""
        if client_san:
            san = """
              match_typed_subject_alt_names:
              - san_type: URI
                matcher: { exact: "%s" }""" % client_san
        v = """
            validation_context:
              trusted_ca: { filename: "%s" }%s
          require_client_certificate: true""" % (c["ca"], san)
    a = "\n            alpn_protocols: [%s]" % ", ".join(alpn) if alpn else ""
    return """
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificates:
            - certificate_chain: { filename: "%s" }
              private_key: { filename: "%s" }%s%s%s
      filters:""" % (c["server_crt"], c["server_key"], a, v,
                     "\n      transport_socket_connect_timeout: %s" % timeout if timeout else "")


def upstream_tls(c, ca_key="ca", san=SERVER_SPIFFE, san_type="URI", sni="backend.test",
                 client_cert=False):
    cc = ""
    if client_cert:
        cc = """
          tls_certificates:
          - certificate_chain: { filename: "%s" }
            private_key: { filename: "%s" }""" % (c["client_crt"], c["client_key"])
    m = ""
    if san:
        m = """
            match_typed_subject_alt_names:
            - san_type: %s
              matcher: { exact: "%s" }""" % (san_type, san)
    return """
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: %s
        common_tls_context:%s
          validation_context:
            trusted_ca: { filename: "%s" }%s""" % (sni, cc, c[ca_key], m)


ROUTE = """
              - match: { prefix: "/" }
                route: { cluster: backend }"""


def tls_bootstrap(clusters, listener_tls=None, hcm_extra=""):
    y = cfg.bootstrap(ROUTE, clusters, hcm_extra=hcm_extra)
    if listener_tls:
        old = "    filter_chains:\n    - filters:"
        assert old in y
        y = y.replace(old, "    filter_chains:" + listener_tls)
    return y


def stats(ctx, px):
    r = ctx.curl(f"http://127.0.0.1:{px.admin}/stats")
    out = {}
    for line in r.body.decode().splitlines():
        k, _, v = line.partition(": ")
        if v.lstrip("-").isdigit():
            out[k] = int(v)
    return out


def https(ctx, port, path="/", *args, http2=False, headers=None, client=None):
    """curl https://localhost:<port> (resolved to 127.0.0.1) trusting our CA."""
    c = certs(ctx)
    a = ["--cacert", c["ca"], "--resolve", f"localhost:{port}:127.0.0.1"]
    a += ["--http2"] if http2 else ["--http1.1"]
    if client:
        a += ["--cert", c[client + "_crt"], "--key", c[client + "_key"]]
    return ctx.curl(f"https://localhost:{port}{path}", *a, *args, headers=headers)


def h2load(ctx, url, n, c, m, h1=False):
    args = ["h2load", "-n", str(n), "-c", str(c), "-m", str(m)] + (["--h1"] if h1 else [])
    r = ctx.run(args + [url], timeout=120)
    out = r.stdout.decode()
    mreq = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                     r"(\d+) failed, (\d+) errored", out)
    assert mreq, out + r.stderr.decode()
    return [int(x) for x in mreq.groups()], out


def lstat(px, name):
    return f"listener.127.0.0.1_{px.port}.ssl.{name}"


# ---- termination ---------------------------------------------------------------------------

def test_tls_termination_alpn_h1_and_h2(ctx):
    c = certs(ctx)
    up = ctx.upstream(name="plain")
    px = ctx.remora(tls_bootstrap([cfg.cluster("backend", [up.port])], downstream_tls(c)))
    r = https(ctx, px.port, "/echo-request", "-w", "\n%{http_version}")
    assert r.status == 200, r
    body, _, ver = r.body.rpartition(b"\n")
    assert ver == b"1.1", r
    j = json.loads(body)
    assert j["headers"].get("x-forwarded-proto") == "https", j
    assert j["upstream"] == "plain", j
    r = https(ctx, px.port, "/echo-request", "-w", "\n%{http_version}", http2=True,
              headers={"x-upstream-body-size": "0"})
    assert r.status == 200, r
    body, _, ver = r.body.rpartition(b"\n")
    assert ver == b"2", r  # ALPN chose h2
    assert json.loads(body)["headers"].get("x-forwarded-proto") == "https", body
    # a large body both ways crosses many TLS records
    data = os.urandom(200000)
    for h2 in (False, True):
        r = https(ctx, px.port, "/up", "--data-binary", "@-", http2=h2,
                  headers={"x-upstream-echo": "1", "content-type": "application/octet-stream"})
        assert r.status == 200, r
    big = https(ctx, px.port, "/big", headers={"x-upstream-body-size": "3000000"})
    assert big.status == 200 and len(big.body) == 3000000, (big.status, len(big.body))
    s = stats(ctx, px)
    assert s.get(lstat(px, "handshake"), 0) >= 5, s
    assert s.get(lstat(px, "connection_error"), 0) == 0, s
    # plaintext to a TLS listener: the handshake fails, the connection closes
    r = ctx.curl(f"http://127.0.0.1:{px.port}/", timeout=5)
    assert r.status == 0, r
    assert stats(ctx, px).get(lstat(px, "connection_error"), 0) >= 1
    assert ctx.stop(px) == 0


def test_tls_termination_echo_body(ctx):
    c = certs(ctx)
    up = ctx.upstream()
    px = ctx.remora(tls_bootstrap([cfg.cluster("backend", [up.port])], downstream_tls(c)))
    data = os.urandom(300000)
    for h2 in (False, True):
        r = ctx.curl(f"https://localhost:{px.port}/up", "--cacert", c["ca"], "--resolve",
                     f"localhost:{px.port}:127.0.0.1", "--http2" if h2 else "--http1.1",
                     data=data, headers={"x-upstream-echo": "1",
                                         "content-type": "application/octet-stream"})
        assert r.status == 200 and r.body == data, (h2, r.status, len(r.body))


def test_tls_termination_h2load_and_nghttp(ctx):
    c = certs(ctx)
    up = ctx.upstream()
    px = ctx.remora(tls_bootstrap([cfg.cluster("backend", [up.port], "h2")], downstream_tls(c)))
    url = f"https://127.0.0.1:{px.port}/"
    (total, started, done, ok, failed, errored), out = h2load(ctx, url, 3000, 20, 10)
    assert ok == 3000 and failed == 0 and errored == 0, out
    assert "h2" in out, out  # "Application protocol: h2"
    (total, started, done, ok, failed, errored), out = h2load(ctx, url, 1000, 10, 1, h1=True)
    assert ok == 1000 and failed == 0 and errored == 0, out
    r = ctx.run(["nghttp", "-v", "-H", "x-upstream-body-size: 5000", url], timeout=30)
    out = r.stdout.decode()
    assert r.returncode == 0 and ":status: 200" in out and "negotiated protocol: h2" in out, out
    s = stats(ctx, px)
    assert s.get(lstat(px, "handshake"), 0) >= 31, s


def test_tls_mtls_listener(ctx):
    c = certs(ctx)
    up = ctx.upstream()
    px = ctx.remora(tls_bootstrap([cfg.cluster("backend", [up.port])],
                                  downstream_tls(c, mtls=True, client_san=CLIENT_SPIFFE)))
    r = https(ctx, px.port, "/")
    assert r.status == 0, r  # no client certificate: refused
    r = https(ctx, px.port, "/", client="stranger")
    assert r.status == 0, r  # signed by a CA the listener does not trust
    r = https(ctx, px.port, "/", client="client")
    assert r.status == 200, r
    r = https(ctx, px.port, "/", client="client", http2=True)
    assert r.status == 200, r
    s = stats(ctx, px)
    assert s.get(lstat(px, "handshake"), 0) == 2, s
    assert s.get(lstat(px, "fail_verify_no_cert"), 0) == 1, s
    assert s.get(lstat(px, "fail_verify_error"), 0) == 1, s
    assert s.get(lstat(px, "connection_error"), 0) == 2, s


def test_tls_mtls_listener_san_mismatch(ctx):
    c = certs(ctx)
    up = ctx.upstream()
    px = ctx.remora(tls_bootstrap([cfg.cluster("backend", [up.port])],
                                  downstream_tls(c, mtls=True, client_san=SERVER_SPIFFE)))
    r = https(ctx, px.port, "/", client="client")
    assert r.status == 0, r
    assert stats(ctx, px).get(lstat(px, "fail_verify_san"), 0) == 1


def test_tls_handshake_timeouts(ctx):
    """A client that never speaks TLS is closed after transport_socket_connect_timeout; an
    upstream that accepts TCP but never answers the ClientHello costs connect_timeout (503)."""
    c = certs(ctx)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # the kernel completes TCP handshakes; nobody reads
    try:
        port = silent.getsockname()[1]
        px = ctx.remora(tls_bootstrap([cfg.cluster("backend", [port], extra=upstream_tls(c))],
                                      downstream_tls(c, timeout="0.5s")))
        s = socket.create_connection(("127.0.0.1", px.port), timeout=5)
        s.sendall(b"\x16")  # the start of a record, never finished
        t0 = time.monotonic()
        assert s.recv(100) == b"", "expected the proxy to close"
        took = time.monotonic() - t0
        s.close()
        assert 0.3 < took < 3, took
        r = https(ctx, px.port, "/")
        assert r.status == 503 and b"connection timeout" in r.body, r
        st = stats(ctx, px)
        assert st.get("cluster.backend.upstream_cx_connect_timeout", 0) == 1, st
        assert st.get(lstat(px, "handshake"), 0) == 1, st
    finally:
        silent.close()


# ---- origination ---------------------------------------------------------------------------

def tls_upstream(ctx, name="tls-up"):
    c = certs(ctx)
    return ctx.upstream("--tls-cert", c["server_crt"], "--tls-key", c["server_key"], name=name)


def _origination(ctx, proto):
    c = certs(ctx)
    up = tls_upstream(ctx)
    px = ctx.remora(tls_bootstrap([cfg.cluster("backend", [up.port], proto,
                                               extra=upstream_tls(c))]))
    want = {"h1": "HTTP/1.1", "h2": "HTTP/2"}[proto]
    for h2 in (False, True):
        r = ctx.curl(f"http://127.0.0.1:{px.port}/echo-request", http2=h2)
        assert r.status == 200, r
        j = json.loads(r.body)
        assert j["protocol"] == want and j["upstream"] == "tls-up", j
    data = os.urandom(250000)
    r = ctx.curl(f"http://127.0.0.1:{px.port}/up", data=data,
                 headers={"x-upstream-echo": "1", "content-type": "application/octet-stream"})
    assert r.status == 200 and r.body == data, (r.status, len(r.body))
    (total, started, done, ok, failed, errored), out = h2load(
        ctx, f"http://127.0.0.1:{px.port}/", 2000, 10, 10)
    assert ok == 2000 and failed == 0 and errored == 0, out
    s = stats(ctx, px)
    assert s.get("cluster.backend.ssl.handshake", 0) >= 1, s
    assert s.get("cluster.backend.ssl.connection_error", 0) == 0, s
    assert s.get("cluster.backend.upstream_rq_total", 0) >= 2003, s
    assert ctx.stop(px) == 0


def test_tls_origination_h1(ctx):
    _origination(ctx, "h1")


def test_tls_origination_h2(ctx):
    _origination(ctx, "h2")


def test_tls_origination_dns_san_and_client_cert(ctx):
    c = certs(ctx)
    up = tls_upstream(ctx)
    px = ctx.remora(tls_bootstrap([cfg.cluster(
        "backend", [up.port], "h2",
        extra=upstream_tls(c, san="backend.test", san_type="DNS", client_cert=True))]))
    r = ctx.curl(f"http://127.0.0.1:{px.port}/echo-request")
    assert r.status == 200 and json.loads(r.body)["protocol"] == "HTTP/2", r


def _fails_uf(ctx, px, stat):
    r = ctx.curl(f"http://127.0.0.1:{px.port}/x")
    assert r.status == 503, r
    assert b"TLS error" in r.body and b"certificate verify failed" in r.body, r
    s = stats(ctx, px)
    assert s.get(f"cluster.backend.ssl.{stat}", 0) >= 1, s
    assert s.get("cluster.backend.ssl.handshake", 0) == 0, s
    assert s.get("cluster.backend.upstream_cx_connect_fail", 0) >= 1, s


def test_tls_origination_san_mismatch_503_uf(ctx):
    c = certs(ctx)
    up = tls_upstream(ctx)
    px = ctx.remora(tls_bootstrap(
        [cfg.cluster("backend", [up.port],
                     extra=upstream_tls(c, san="spiffe://cluster.local/ns/default/sa/other"))]))
    _fails_uf(ctx, px, "fail_verify_san")


def test_tls_origination_shared_ssl_ctx_keeps_each_clusters_san(ctx):
    """Two clusters to one TLS upstream with the same certificates (so one shared SSL_CTX),
    one matching the server's SAN and one not: each connection is verified against its own
    cluster's matchers, whichever cluster connected first."""
    c = certs(ctx)
    up = tls_upstream(ctx)
    routes = """
              - match: { prefix: "/good" }
                route: { cluster: good }
              - match: { prefix: "/bad" }
                route: { cluster: bad }"""
    px = ctx.remora(cfg.bootstrap(routes, [
        cfg.cluster("good", [up.port], extra=upstream_tls(c, client_cert=True)),
        cfg.cluster("bad", [up.port], extra=upstream_tls(
            c, san="spiffe://cluster.local/ns/default/sa/other", sni="localhost",
            client_cert=True))]))
    for path, want in (("/bad", 503), ("/good", 200), ("/bad", 503), ("/good", 200)):
        r = ctx.curl(f"http://127.0.0.1:{px.port}{path}")
        assert r.status == want, (path, r)
        if want == 503:
            assert b"TLS error" in r.body and b"certificate verify failed" in r.body, r
    s = stats(ctx, px)
    assert s.get("cluster.good.ssl.handshake", 0) >= 1, s
    assert s.get("cluster.good.ssl.fail_verify_san", 0) == 0, s
    assert s.get("cluster.bad.ssl.fail_verify_san", 0) >= 2, s
    assert s.get("cluster.bad.ssl.handshake", 0) == 0, s
    assert s.get("cluster.bad.upstream_cx_connect_fail", 0) >= 2, s
    assert ctx.stop(px) == 0


def test_tls_origination_wrong_ca_503(ctx):
    c = certs(ctx)
    up = tls_upstream(ctx)
    px = ctx.remora(tls_bootstrap(
        [cfg.cluster("backend", [up.port], "h2", extra=upstream_tls(c, ca_key="other_ca"))]))
    _fails_uf(ctx, px, "fail_verify_error")


def test_tls_both_ways_h2load(ctx):
    c = certs(ctx)
    up = tls_upstream(ctx)
    px = ctx.remora(tls_bootstrap([cfg.cluster("backend", [up.port], "h1",
                                               extra=upstream_tls(c))], downstream_tls(c)))
    (total, started, done, ok, failed, errored), out = h2load(
        ctx, f"https://127.0.0.1:{px.port}/", 2000, 10, 10)
    assert ok == 2000 and failed == 0 and errored == 0, out


# ---- config errors -------------------------------------------------------------------------

def _validate(ctx, y, name):
    path = os.path.join(ctx.tmp, name + ".yaml")
    with open(path, "w") as f:
        f.write(y.replace("{admin}", "1").replace("{port0}", "2"))
    return ctx.run([ctx.bin("remora"), "-c", path, "--mode", "validate"])


def test_tls_config_errors_name_the_field(ctx):
    c = certs(ctx)
    bad = dict(c, server_crt=os.path.join(ctx.tmp, "missing.crt"))
    r = _validate(ctx, tls_bootstrap([cfg.cluster("backend", [1])], downstream_tls(bad)), "a")
    err = r.stderr.decode() + r.stdout.decode()
    assert r.returncode == 1, err
    assert ("static_resources.listeners[0].filter_chains[0].transport_socket.typed_config."
            "common_tls_context.tls_certificates[0].certificate_chain.filename: cannot read "
            ) in err, err
    # a key that does not belong to the certificate
    bad = dict(c, server_key=c["client_key"])
    r = _validate(ctx, tls_bootstrap([cfg.cluster("backend", [1])], downstream_tls(bad)), "b")
    err = r.stderr.decode() + r.stdout.decode()
    assert r.returncode == 1 and "tls_certificates[0].private_key.filename" in err, err
    # cluster side: a CA file that is not PEM
    notpem = os.path.join(ctx.tmp, "notpem.crt")
    with open(notpem, "w") as f:
        f.write("hello\n")
    bad = dict(c, ca=notpem)
    r = _validate(ctx, tls_bootstrap([cfg.cluster("backend", [1], extra=upstream_tls(bad))]), "c")
    err = r.stderr.decode() + r.stdout.decode()
    assert r.returncode == 1, err
    assert ("static_resources.clusters[0].transport_socket.typed_config.common_tls_context."
            "validation_context.trusted_ca.filename") in err, err
    # a secret nobody defined: said so, with the reference's field
    y = tls_bootstrap([cfg.cluster("backend", [1], extra="""
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        common_tls_context:
          tls_certificate_sds_secret_configs:
          - name: default""")])
    r = _validate(ctx, y, "d")
    err = r.stderr.decode() + r.stdout.decode()
    assert r.returncode == 1 and (
        "static_resources.clusters[0].transport_socket.typed_config.common_tls_context."
        'tls_certificate_sds_secret_configs[0].name: no secret "default"') in err, err
    # a good one validates
    r = _validate(ctx, tls_bootstrap([cfg.cluster("backend", [1], extra=upstream_tls(c))],
                                     downstream_tls(c, mtls=True)), "e")
    assert r.returncode == 0, r.stderr.decode()


# ---- secrets by name (static_resources.secrets: Envoy's static SDS) -------------------------

def secrets_yaml(c):
    """static_resources.secrets (appended to a bootstrap, after its clusters): the server and
    client certificates and the CA by name."""
    return """
  secrets:
  - name: server_cert
    tls_certificate:
      certificate_chain: { filename: "%s" }
      private_key: { filename: "%s" }
  - name: client_cert
    tls_certificate:
      certificate_chain: { filename: "%s" }
      private_key: { filename: "%s" }
  - name: ca
    validation_context:
      trusted_ca: { filename: "%s" }
""" % (c["server_crt"], c["server_key"], c["client_crt"], c["client_key"], c["ca"])


SECRET_LISTENER_TLS = """
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificate_sds_secret_configs: [{ name: server_cert }]
      filters:"""


def secret_upstream_tls(san):
    """An mTLS UpstreamTlsContext: the client certificate and the CA from secrets, the SAN
    matcher in combined_validation_context's default context."""
    return """
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: backend.test
        common_tls_context:
          tls_certificate_sds_secret_configs: [{ name: client_cert }]
          combined_validation_context:
            default_validation_context:
              match_typed_subject_alt_names:
              - san_type: URI
                matcher: { exact: "%s" }
            validation_context_sds_secret_config: { name: ca }""" % san


def test_tls_listener_certificate_from_a_static_secret(ctx):
    c = certs(ctx)
    up = ctx.upstream(name="plain")
    px = ctx.remora(tls_bootstrap([cfg.cluster("backend", [up.port])], SECRET_LISTENER_TLS)
                    + secrets_yaml(c))
    r = https(ctx, px.port, "/echo-request")  # verified against the CA (--cacert)
    assert r.status == 200 and json.loads(r.body)["upstream"] == "plain", r
    assert stats(ctx, px).get(lstat(px, "handshake"), 0) >= 1
    # /config_dump shows the secrets, their private keys redacted
    d = ctx.curl(f"http://127.0.0.1:{px.admin}/config_dump")
    assert d.status == 200, d
    text = d.body.decode()
    names = [s["name"] for cfgd in json.loads(text)["configs"]
             for s in cfgd.get("static_secrets", [])]
    assert names == ["server_cert", "client_cert", "ca"], names
    assert "[redacted]" in text and "PRIVATE KEY" not in text and c["server_key"] not in text


def test_tls_mtls_cluster_with_secrets_and_combined_validation(ctx):
    """remora A's cluster talks mTLS to remora B's listener (client certificate required,
    verified against the CA, the client's SAN matched): A's client certificate and CA come from
    secrets, the SAN matcher from the default validation context merged with the CA secret."""
    c = certs(ctx)
    up = ctx.upstream(name="plain")
    b = ctx.remora(tls_bootstrap([cfg.cluster("backend", [up.port])],
                                 downstream_tls(c, mtls=True, client_san=CLIENT_SPIFFE)), name="b")
    a = ctx.remora(tls_bootstrap([cfg.cluster("backend", [b.port], "h2",
                                              extra=secret_upstream_tls(SERVER_SPIFFE))])
                   + secrets_yaml(c), name="a")
    r = ctx.curl(f"http://127.0.0.1:{a.port}/echo-request")
    assert r.status == 200 and json.loads(r.body)["upstream"] == "plain", r
    s = stats(ctx, a)
    assert s.get("cluster.backend.ssl.handshake", 0) >= 1, s
    assert stats(ctx, b).get(lstat(b, "handshake"), 0) >= 1
    # the default context's SAN matcher is in force: another SAN fails verification
    a2 = ctx.remora(tls_bootstrap([cfg.cluster("backend", [b.port], "h2", extra=secret_upstream_tls(
        "spiffe://cluster.local/ns/default/sa/other"))]) + secrets_yaml(c), name="a2")
    _fails_uf(ctx, a2, "fail_verify_san")


def test_tls_secret_config_errors_name_the_field(ctx):
    c = certs(ctx)
    # a reference with an sds_config (dynamic SDS: tests/integration/test_sds.py) from a source
    # remora does not speak
    y = tls_bootstrap([cfg.cluster("backend", [1])], SECRET_LISTENER_TLS.replace(
        "[{ name: server_cert }]", "[{ name: server_cert, sds_config: {} }]"))
    r = _validate(ctx, y + secrets_yaml(c), "s1")
    err = r.stderr.decode() + r.stdout.decode()
    assert r.returncode == 1 and (
        "static_resources.listeners[0].filter_chains[0].transport_socket.typed_config."
        "common_tls_context.tls_certificate_sds_secret_configs[0].sds_config: only ads: {} or "
        "api_config_source") in err, err
    # a duplicate secret
    y = tls_bootstrap([cfg.cluster("backend", [1])], SECRET_LISTENER_TLS) + secrets_yaml(c) + """
  - name: ca
    validation_context: { trusted_ca: { filename: "%s" } }
""" % c["ca"]
    r = _validate(ctx, y, "s2")
    err = r.stderr.decode() + r.stdout.decode()
    assert r.returncode == 1 and 'static_resources.secrets[3].name: duplicate "ca"' in err, err
    # the wrong kind of secret
    y = tls_bootstrap([cfg.cluster("backend", [1])], SECRET_LISTENER_TLS.replace(
        "server_cert", "ca")) + secrets_yaml(c)
    r = _validate(ctx, y, "s3")
    err = r.stderr.decode() + r.stdout.decode()
    assert r.returncode == 1 and 'secret "ca" (static_resources.secrets[2]) is not a ' \
        "tls_certificate secret" in err, err


# ---- OpenSSL is loaded only when TLS is configured -----------------------------------------

def _ssl_libs_mapped(pid):
    """The OpenSSL libraries (libssl, libcrypto) mapped into process <pid>."""
    with open(f"/proc/{pid}/maps") as f:
        return sorted({os.path.basename(line.split()[-1]) for line in f
                       if re.search(r"/lib(ssl|crypto)\.so", line)})


def test_tls_openssl_loaded_only_with_tls_config(ctx):
    """remora and remora-xds do not link OpenSSL (proxy/net/ssl_api.h dlopen()s it when the
    first TLS context is built): no DT_NEEDED on libssl/libcrypto, none of them mapped by a
    plaintext remora even after it proxied a request; a TLS listener maps them and works.
    Fails if someone links OpenSSL into remora again (the idle RSS cost: ~1.7 MiB)."""
    for b in ("remora", "remora-xds"):
        if not os.path.exists(ctx.bin(b)):
            continue
        r = ctx.run(["readelf", "-d", ctx.bin(b)], check=True)
        needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^]]+)\]", r.stdout.decode())
        assert needed, r.stdout.decode()
        bad = [n for n in needed if re.match(r"lib(ssl|crypto)\.so", n)]
        assert not bad, f"{b} links {bad}: OpenSSL must be dlopen()ed, not linked"
    up = ctx.upstream(name="plain")
    px = ctx.remora(cfg.simple(up.port))
    r = ctx.curl(f"http://127.0.0.1:{px.port}/")
    assert r.status == 200, r
    assert _ssl_libs_mapped(px.p.pid) == [], _ssl_libs_mapped(px.p.pid)
    assert ctx.stop(px) == 0
    c = certs(ctx)
    px = ctx.remora(tls_bootstrap([cfg.cluster("backend", [up.port])], downstream_tls(c)),
                    name="remora-tls")
    maps = _ssl_libs_mapped(px.p.pid)
    assert any(m.startswith("libssl.so") for m in maps), maps
    assert any(m.startswith("libcrypto.so") for m in maps), maps
    r = https(ctx, px.port, "/")
    assert r.status == 200, r
    assert stats(ctx, px).get(lstat(px, "handshake"), 0) == 1
    assert ctx.stop(px) == 0


# ---- session resumption across config updates ----------------------------------------------

def _tls_listener(c, name, port, limit):
    """An LDS Listener <name> on <port> terminating TLS with the server certificate, routes from
    RDS r1; <limit> (per_connection_buffer_limit_bytes) is what an update changes."""
    import test_xds_lds_cds as lds
    return f"""
- "@type": {lds.T}envoy.config.listener.v3.Listener
  name: {name}
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
  per_connection_buffer_limit_bytes: {limit}
  filter_chains:
  - transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": {lds.T}envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
        common_tls_context:
          tls_certificates:
          - certificate_chain: {{ filename: "{c['server_crt']}" }}
            private_key: {{ filename: "{c['server_key']}" }}
    filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": {lds.HCM}
        stat_prefix: {name}
        rds: {{ route_config_name: r1, config_source: {lds.source(None)} }}
        http_filters:
        - name: envoy.filters.http.router
          typed_config: {{ "@type": {lds.ROUTER} }}"""


def _tls13_client(c):
    """A Python ssl client context, TLS 1.3 only, trusting our CA (sessions belong to it)."""
    import ssl
    sc = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    sc.load_verify_locations(c["ca"])
    sc.minimum_version = ssl.TLSVersion.TLSv1_3
    return sc


def _tls13_get(sc, port, session=None):
    """GET / over a new TLS 1.3 connection of <sc>, offering <session>; returns (the
    x-upstream-name, session_reused, the new session, the server's certificate in DER)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with sc.wrap_socket(raw, server_hostname="localhost", session=session) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                b = s.recv(65536)  # the tickets come with the response
                if not b:
                    break
                data += b
            head = data.split(b"\r\n\r\n", 1)[0].decode()
            assert head.startswith("HTTP/1.1 200"), head
            m = re.search(r"(?im)^x-upstream-name:\s*(\S+)", head)
            return (m.group(1) if m else None, s.session_reused, s.session,
                    s.getpeercert(binary_form=True))


def test_tls_session_resumes_across_config_updates(ctx):
    """A listener rebuilt with the same TLS configuration keeps its SSL_CTX (proxy/net/tls.c):
    a TLS 1.3 client resumes its session after an RDS change and after an LDS push that changes
    another field of the listener; with the certificate file replaced on disk, the next rebuild
    makes a new one: a full handshake, the new certificate served."""
    import test_xds_lds_cds as lds
    from test_xds_server import Xds
    c = certs(ctx)
    sc = _tls13_client(c)
    a, b = ctx.upstream(name="a"), ctx.upstream(name="b")
    d = lds.start(ctx, "resume")
    port = harness.free_port()
    lds.put(d, "l.yaml", _tls_listener(c, "l1", port, 1048576))
    lds.put(d, "r.yaml", lds.route("r1", "c1"))
    lds.put(d, "c.yaml", lds.cluster("c1"), lds.cla("c1", a.port), lds.cluster("c2"),
            lds.cla("c2", b.port))
    xds = Xds(ctx, d)
    px = ctx.remora(lds.bootstrap(xds.port, "GRPC"), wait=False)
    lds.wait_for("/ready", lambda: ctx.curl(f"http://127.0.0.1:{px.admin}/ready").status == 200)
    up, reused, sess, cert0 = _tls13_get(sc, port)
    assert up == "a" and not reused and sess is not None and sess.has_ticket, (up, reused)
    up, reused, _, _ = _tls13_get(sc, port, sess)
    assert up == "a" and reused, "no resumption without any update"

    # RDS: the route moves to c2; the listener's TLS config is the same
    lds.put(d, "r.yaml", lds.route("r1", "c2"))
    lds.wait_for("the route to c2", lambda: _tls13_get(sc, port)[0] == "b")
    up, reused, sess2, _ = _tls13_get(sc, port, sess)
    assert up == "b" and reused, "the session did not survive a route change"

    # LDS: another buffer limit, the same TLS config
    lds.put(d, "l.yaml", _tls_listener(c, "l1", port, 65536))
    lds.wait_for("the LDS update", lambda: stats(ctx, px).get(
        "listener_manager.lds.update_success", 0) >= 2)
    time.sleep(0.3)
    up, reused, _, cert1 = _tls13_get(sc, port, sess2)
    assert up == "b" and reused, "the session did not survive an LDS update of the listener"
    assert cert1 == cert0

    # a new certificate (and key) renamed over the old files, then any update: a full handshake
    pki = os.path.dirname(c["server_crt"])
    new_key, new_crt = _leaf(ctx, pki, "server2", (os.path.join(pki, "ca.key"), c["ca"]),
                             "DNS:localhost,IP:127.0.0.1", "serverAuth")
    os.rename(new_key, c["server_key"])
    os.rename(new_crt, c["server_crt"])
    lds.put(d, "r.yaml", lds.route("r1", "c1"))
    lds.wait_for("the route back to c1", lambda: _tls13_get(sc, port)[0] == "a")
    up, reused, sess3, cert2 = _tls13_get(sc, port, sess2)
    assert up == "a" and not reused, "a session resumed on a replaced certificate"
    assert cert2 != cert0, "the old certificate is still served"
    up, reused, _, _ = _tls13_get(sc, port, sess3)
    assert reused, "no resumption on the new SSL_CTX"
    s = stats(ctx, px)
    assert s.get("listener.127.0.0.1_%d.ssl.connection_error" % port, 0) == 0, s
    assert ctx.stop(px) == 0
    xds.stop()



# ---- client session resumption ----------------------------------------------------------------

def _resumption(ctx, max_keys):
    """4 requests, each on a new upstream TLS connection (max_requests_per_connection: 1);
    returns the cluster's ssl.* counters."""
    c = certs(ctx)
    up = tls_upstream(ctx)
    tls = upstream_tls(c)
    if max_keys is not None:
        tls = tls.replace("        sni: backend.test",
                          "        sni: backend.test\n        max_session_keys: %d" % max_keys)
    extra = "\n    max_requests_per_connection: 1" + tls
    px = ctx.remora(tls_bootstrap([cfg.cluster("backend", [up.port], "h1", extra=extra)]))
    for i in range(4):
        r = ctx.curl(f"http://127.0.0.1:{px.port}/r{i}")
        assert r.status == 200, r
    s = stats(ctx, px)
    assert ctx.stop(px) == 0
    return {k.rsplit(".", 1)[1]: v for k, v in s.items() if k.startswith("cluster.backend.ssl.")}


def test_tls_upstream_session_resumption(ctx):
    """Envoy's default (max_session_keys unset = 1): the first connection does a full
    handshake, the next ones resume with the ticket the previous one got (TLS 1.3: each ticket
    offered once)."""
    s = _resumption(ctx, None)
    assert s["handshake"] == 4 and s["connection_error"] == 0, s
    assert s["session_reused"] == 3, s
    s = _resumption(ctx, 0)  # resumption off
    assert s["handshake"] == 4 and s["session_reused"] == 0, s
