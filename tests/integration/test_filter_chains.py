"""Several filter chains per listener, chosen per connection by filter_chain_match with Envoy's
rules: by source address (curl --interface 127.0.0.2 / .3), by destination port and IP inside a
network namespace (original_dst restores the redirected destination; a listener on 0.0.0.0
reached through 127.0.0.1 and 127.0.0.3), the default_filter_chain, no match (closed, counted in
listener.<addr>.no_filter_chain_match), a tcp_proxy chain next to HCM chains; on the first bytes
(peeked, not consumed): SNI choosing between two TLS chains with different certificates,
transport_protocol tls vs raw_buffer (HTTPS and plaintext HTTP on one port), application
protocols h2c vs http/1.1 (the HTTP inspector), listener_filters_timeout
(downstream_pre_cx_timeout); and an LDS update that changes the chains of a bound listener."""
import http.client
import os
import socket
import ssl
import time

import harness
from harness import TestFailure
from test_sidecar import CLIENT_IP, in_netns
from test_tls import _ca, _leaf
from test_xds_lds_cds import T, put
from test_xds_server import Xds

HCM = T + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = T + "envoy.extensions.filters.http.router.v3.Router"
TCP = T + "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
TLS_CTX = T + "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
TLS_INSPECTOR = """
    - name: envoy.filters.listener.tls_inspector
      typed_config: { "@type": %senvoy.extensions.filters.listener.tls_inspector.v3.TlsInspector }""" % T
HTTP_INSPECTOR = """
    - name: envoy.filters.listener.http_inspector
      typed_config: { "@type": %senvoy.extensions.filters.listener.http_inspector.v3.HttpInspector }""" % T
ORIGINAL_DST = """
    - name: envoy.filters.listener.original_dst
      typed_config: { "@type": %senvoy.extensions.filters.listener.original_dst.v3.OriginalDst }""" % T


def src(ip):
    return "source_prefix_ranges: [{ address_prefix: %s, prefix_len: 32 }]" % ip


def hcm_filters(body, indent="      "):
    """An HCM answering every request with 200 and <body> (its stat_prefix too)."""
    return f"""
{indent}filters:
{indent}- name: envoy.filters.network.http_connection_manager
{indent}  typed_config:
{indent}    "@type": {HCM}
{indent}    stat_prefix: {body}
{indent}    route_config:
{indent}      virtual_hosts:
{indent}      - name: all
{indent}        domains: ["*"]
{indent}        routes:
{indent}        - match: {{ prefix: / }}
{indent}          direct_response: {{ status: 200, body: {{ inline_string: {body} }} }}
{indent}    http_filters:
{indent}    - name: envoy.filters.http.router
{indent}      typed_config: {{ "@type": {ROUTER} }}"""


def tls_socket(crt, key, indent="      "):
    return f"""
{indent}transport_socket:
{indent}  name: envoy.transport_sockets.tls
{indent}  typed_config:
{indent}    "@type": {TLS_CTX}
{indent}    common_tls_context:
{indent}      tls_certificates:
{indent}      - certificate_chain: {{ filename: "{crt}" }}
{indent}        private_key: {{ filename: "{key}" }}"""


def chain(match, body, name=None, tls=None):
    """A filter chain (YAML list item under filter_chains) with filter_chain_match <match>
    (flow-map items, "" for none) answering <body>."""
    out = "\n    - name: %s" % (name or body)
    if match:
        out += "\n      filter_chain_match: { %s }" % match
    if tls:
        out += tls_socket(*tls)
    return out + hcm_filters(body)


def default_chain(body):
    return "\n    default_filter_chain:" + hcm_filters(body)


def bootstrap(chains, listener_filters="", address="127.0.0.1", extra="", clusters=""):
    lf = "\n    listener_filters:" + listener_filters if listener_filters else ""
    return f"""
admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: {{admin}} }}
static_resources:
  listeners:
  - name: multi
    address:
      socket_address: {{ address: {address}, port_value: {{port0}} }}{lf}{extra}
    filter_chains:{chains}
  clusters:{clusters or " []"}
"""


def stats(ctx, px):
    out = {}
    for line in ctx.curl(f"http://127.0.0.1:{px.admin}/stats").body.decode().splitlines():
        k, _, v = line.partition(": ")
        if v.lstrip("-").isdigit():
            out[k] = int(v)
    return out


def wait_for(what, fn, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TestFailure(f"timed out waiting for {what}")
        time.sleep(0.05)


def body_via(ctx, url, *args, **kw):
    r = ctx.curl(url, *args, timeout=5, **kw)
    return r.body.decode() if r.status == 200 else f"<status {r.status} rc {r.rc}>"


# ---- by the connection's addresses ---------------------------------------------------------

def test_chains_by_source_default_and_tcp_proxy(ctx):
    up = ctx.upstream(name="tcp-up")
    tcp_chain = f"""
    - name: tcp
      filter_chain_match: {{ {src("127.0.0.3")} }}
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {{ "@type": {TCP}, stat_prefix: tp, cluster: backend }}"""
    clusters = f"""
  - name: backend
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {up.port} }} }} }}"""
    px = ctx.remora(bootstrap(chain(src("127.0.0.2"), "from2") + tcp_chain +
                              default_chain("fallback"), clusters=clusters))
    url = f"http://127.0.0.1:{px.port}/"
    assert body_via(ctx, url, "--interface", "127.0.0.2") == "from2"
    assert body_via(ctx, url) == "fallback"
    # the tcp_proxy chain: remora-upstream answers itself (its name header), bytes relayed
    r = ctx.curl(url, "--interface", "127.0.0.3", timeout=5)
    assert r.status == 200 and r.headers.get("x-upstream-name") == "tcp-up", r
    s = stats(ctx, px)
    assert s.get("tcp.tp.downstream_cx_total", 0) == 1, s
    assert s.get("http.from2.downstream_rq_total", 0) == 1, s
    assert s.get(f"listener.127.0.0.1_{px.port}.no_filter_chain_match", 0) == 0, s


def test_no_matching_chain_closes_and_counts(ctx):
    px = ctx.remora(bootstrap(chain(src("127.0.0.2"), "from2") +
                              chain("destination_port: 1", "port1")))
    key = f"listener.127.0.0.1_{px.port}.no_filter_chain_match"
    # the harness's port probe (from 127.0.0.1) is one already: counted once it was handled
    before = wait_for("the probe counted", lambda: stats(ctx, px).get(key, 0))
    r = ctx.curl(f"http://127.0.0.1:{px.port}/", timeout=5)
    assert r.status == 0, r
    assert stats(ctx, px).get(key, 0) == before + 1
    assert body_via(ctx, f"http://127.0.0.1:{px.port}/", "--interface", "127.0.0.2") == "from2"


def test_chains_by_destination_port_and_ip_in_netns(ctx):
    port = harness.free_port()

    def body(ctx):
        # 0.0.0.0 inside the namespace only; connections from CLIENT_IP are redirected to it
        # and original_dst restores where they were going
        chains = (chain("destination_port: 8001", "port8001") +
                  chain("destination_port: 8002", "port8002") +
                  chain("prefix_ranges: [{ address_prefix: 127.0.0.3, prefix_len: 32 }]", "ip3") +
                  default_chain("fallback"))
        px = ctx.remora(bootstrap(chains, ORIGINAL_DST, address="0.0.0.0"), ports=[port])
        assert body_via(ctx, "http://127.0.0.9:8001/", "--interface", CLIENT_IP) == "port8001"
        assert body_via(ctx, "http://127.0.0.9:8002/", "--interface", CLIENT_IP) == "port8002"
        # redirected to an unmatched port: no port chain; the destination IP 127.0.0.3 then
        assert body_via(ctx, "http://127.0.0.3:8003/", "--interface", CLIENT_IP) == "ip3"
        assert body_via(ctx, f"http://127.0.0.3:{port}/") == "ip3"
        assert body_via(ctx, f"http://127.0.0.1:{port}/") == "fallback"
        assert body_via(ctx, "http://127.0.0.9:8003/", "--interface", CLIENT_IP) == "fallback"
        s = stats(ctx, px)
        assert s.get("http.port8001.downstream_rq_total") == 1, s
    in_netns(ctx, body, port)


# ---- by the first bytes ----------------------------------------------------------------------

def two_certs(ctx):
    d = os.path.join(ctx.tmp, "pki")
    os.makedirs(d, exist_ok=True)
    ca = _ca(ctx, d, "ca")
    a = _leaf(ctx, d, "a", ca, "DNS:a.test", "serverAuth")
    b = _leaf(ctx, d, "b", ca, "DNS:b.test", "serverAuth")
    return a, b  # (key, crt) each


def served_cert(port, sni, alpn=None):
    """The DER certificate the listener serves for <sni>, and the body of GET /."""
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    if alpn:
        c.set_alpn_protocols(alpn)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        with c.wrap_socket(s, server_hostname=sni) as t:
            der = t.getpeercert(binary_form=True)
            t.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                b = t.recv(65536)
                if not b:
                    break
                data += b
    return der, data.split(b"\r\n\r\n", 1)[-1].decode()


def der_of(crt):
    with open(crt) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def test_sni_chooses_the_tls_chain(ctx):
    (ak, ac), (bk, bc) = two_certs(ctx)
    chains = (chain("server_names: [a.test]", "chain-a", tls=(ac, ak)) +
              chain('server_names: ["*.b.test", b.test]', "chain-b", tls=(bc, bk)))
    px = ctx.remora(bootstrap(chains, TLS_INSPECTOR))
    der, body = served_cert(px.port, "a.test")
    assert der == der_of(ac) and body == "chain-a", body
    der, body = served_cert(px.port, "www.b.test")
    assert der == der_of(bc) and body == "chain-b", body
    der, body = served_cert(px.port, "b.test")
    assert der == der_of(bc) and body == "chain-b", body
    key = f"listener.127.0.0.1_{px.port}.no_filter_chain_match"
    before = stats(ctx, px).get(key, 0)
    try:
        served_cert(px.port, "c.test")
        raise TestFailure("an unknown SNI was served")
    except (ssl.SSLError, ConnectionError, OSError):
        pass
    assert stats(ctx, px).get(key, 0) == before + 1


def test_tls_and_plaintext_on_one_port(ctx):
    (ak, ac), _ = two_certs(ctx)
    chains = (chain("transport_protocol: tls", "over-tls", tls=(ac, ak)) +
              chain("transport_protocol: raw_buffer", "plaintext"))
    px = ctx.remora(bootstrap(chains, TLS_INSPECTOR))
    assert body_via(ctx, f"http://127.0.0.1:{px.port}/") == "plaintext"
    assert body_via(ctx, f"https://127.0.0.1:{px.port}/", "-k") == "over-tls"
    assert body_via(ctx, f"https://127.0.0.1:{px.port}/", "-k", "--http2") == "over-tls"
    assert body_via(ctx, f"http://127.0.0.1:{px.port}/", http2=True) == "plaintext"
    s = stats(ctx, px)
    assert s.get("http.over-tls.downstream_rq_total") == 2, s
    assert s.get("http.plaintext.downstream_rq_total") == 2, s
    assert s.get(f"listener.127.0.0.1_{px.port}.downstream_pre_cx_active") == 0, s


def test_application_protocols_h2c_and_http11(ctx):
    # (a transport_protocol here would win its step over the chains without one: Envoy's rule)
    chains = (chain('application_protocols: ["h2c"]', "h2c") +
              chain('application_protocols: ["http/1.1", "http/1.0"]', "h1") +
              chain("", "other"))
    px = ctx.remora(bootstrap(chains, HTTP_INSPECTOR))
    url = f"http://127.0.0.1:{px.port}/"
    assert body_via(ctx, url, http2=True) == "h2c"
    assert body_via(ctx, url) == "h1"
    ctx.curl(url, "--http1.0", timeout=5)  # the h1 chain's HCM refuses HTTP/1.0 (426): counted
    # something that is not HTTP: the chain without a match (a raw TCP client, bounded)
    with socket.create_connection(("127.0.0.1", px.port), timeout=5) as s:
        s.sendall(b"\x00\x01hello\r\n\r\n")
        s.settimeout(5)
        s.recv(100)  # the HCM of "other" answers 400 or closes: either way not hanging
    s = stats(ctx, px)
    assert s.get("http.h2c.downstream_rq_total") == 1, s
    assert s.get("http.h1.downstream_cx_total") == 2, s
    assert s.get("http.h1.downstream_rq_total") == 1, s
    assert s.get("http.other.downstream_cx_total") == 1, s


def test_listener_filters_timeout(ctx):
    (ak, ac), _ = two_certs(ctx)
    chains = (chain("transport_protocol: tls", "over-tls", tls=(ac, ak)) +
              chain("", "plaintext"))
    px = ctx.remora(bootstrap(chains, TLS_INSPECTOR, extra="\n    listener_filters_timeout: 0.3s"))
    key = f"listener.127.0.0.1_{px.port}."

    def probe_counted():  # the harness's port probe closed without a byte
        st = stats(ctx, px)
        done = st.get(key + "downstream_listener_filter_remote_close") and \
            not st.get(key + "downstream_pre_cx_active")
        return st if done else None
    before = wait_for("the probe counted", probe_counted)
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", px.port), timeout=5) as s:
        s.sendall(b"\x16\x03")  # a TLS record header that never completes
        try:
            assert s.recv(100) == b""  # closed by remora (a reset: the bytes were unread)
        except ConnectionResetError:
            pass
    took = time.monotonic() - t0
    assert 0.2 < took < 3, took
    after = stats(ctx, px)
    assert after[key + "downstream_pre_cx_timeout"] == \
        before.get(key + "downstream_pre_cx_timeout", 0) + 1, after
    # a client that leaves before sending anything; a ClientHello announced over 16 KiB
    with socket.create_connection(("127.0.0.1", px.port), timeout=5):
        pass
    with socket.create_connection(("127.0.0.1", px.port), timeout=5) as s:
        s.sendall(bytes([0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x01, 0x00, 0x00]))
        try:
            assert s.recv(100) == b""
        except ConnectionResetError:
            pass

    def counted():
        a = stats(ctx, px)
        return (a.get(key + "downstream_listener_filter_remote_close", 0) ==
                before.get(key + "downstream_listener_filter_remote_close", 0) + 1 and
                a.get(key + "downstream_listener_filter_error", 0) ==
                before.get(key + "downstream_listener_filter_error", 0) + 1 and
                a.get(key + "downstream_pre_cx_active") == 0)
    wait_for("remote close and error counted", counted)
    # continue_on_listener_filters_timeout: a silent client gets the chain chosen without bytes
    px2 = ctx.remora(bootstrap(chains, TLS_INSPECTOR,
                               extra="\n    listener_filters_timeout: 0.3s"
                                     "\n    continue_on_listener_filters_timeout: true"),
                     name="remora2")
    with socket.create_connection(("127.0.0.1", px2.port), timeout=5) as s:
        time.sleep(0.6)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
    assert data.endswith(b"plaintext"), data


# ---- LDS ---------------------------------------------------------------------------------------

def lds_listener(port, chains, default=""):
    return f"""
- "@type": {T}envoy.config.listener.v3.Listener
  name: multi
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
  filter_chains:{chains.replace(chr(10) + "    ", chr(10) + "  ")}{default}"""


def test_lds_update_changes_chains(ctx):
    from test_xds_lds_cds import bootstrap as xds_bootstrap
    d = os.path.join(ctx.tmp, "xds")
    os.makedirs(d)
    port = harness.free_port()
    put(d, "l.yaml", lds_listener(port, chain(src("127.0.0.2"), "v1-two") +
                                  chain(src("127.0.0.1"), "v1-one")))
    xds = Xds(ctx, d)
    px = ctx.remora(xds_bootstrap(xds.port, "GRPC"), wait=False)
    harness.wait_port(px.admin, proc=px.p)
    url = f"http://127.0.0.1:{port}/"
    wait_for("the listener", lambda: body_via(ctx, url) == "v1-one")
    assert body_via(ctx, url, "--interface", "127.0.0.2") == "v1-two"
    assert body_via(ctx, url, "--interface", "127.0.0.3").startswith("<status 0")
    # a keep-alive connection on chain "v1-two": that chain is gone from the new config, so the
    # connection keeps the chain config it started with (the listener's socket stays)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5,
                                      source_address=("127.0.0.2", 0))
    conn.request("GET", "/")
    r = conn.getresponse()
    assert r.read() == b"v1-two"
    put(d, "l.yaml", lds_listener(port, chain(src("127.0.0.2"), "v2-two") +
                                  chain(src("127.0.0.3"), "v2-three"),
                                  "\n  default_filter_chain:" + hcm_filters("v2-default", "    ")))
    wait_for("the new chains", lambda: body_via(ctx, url) == "v2-default")
    assert body_via(ctx, url, "--interface", "127.0.0.2") == "v2-two"
    assert body_via(ctx, url, "--interface", "127.0.0.3") == "v2-three"
    conn.request("GET", "/")
    r = conn.getresponse()
    assert r.read() == b"v1-two", "a connection changed filter chain"
    conn.close()
    s = stats(ctx, px)
    assert s.get("listener_manager.lds.update_rejected", 0) == 0, s
    assert s.get("listener_manager.total_listeners_active") == 1, s
