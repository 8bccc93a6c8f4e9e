"""HTTP/2 messaging checks end to end (proxy/http/h2_validate.c): malformed HTTP/2 requests are
reset (RST_STREAM PROTOCOL_ERROR) and never reach the HTTP/1.1 upstream; malformed HTTP/2
responses from an upstream become 502/503 for the client.  The codec-level tables are in
tests/unit/http/test_h2_validate.c; this checks the proxy as a whole."""
import socket
import time

import remora_cfg as cfg
from harness import free_port, wait_port


def stat(ctx, px, name):
    r = ctx.curl(f"http://127.0.0.1:{px.admin}/stats")
    for line in r.body.decode().splitlines():
        k, _, v = line.partition(": ")
        if k == name:
            return int(v)
    return 0


def _client(port):
    import h2.config
    import h2.connection
    s = socket.create_connection(("127.0.0.1", port), timeout=5.0)
    c = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False,
        validate_inbound_headers=False))
    c.initiate_connection()
    s.sendall(c.data_to_send())
    return s, c


def _exchange(s, c, headers, data=(), end_on_headers=True, timeout=5.0):
    """Send one request; returns ("reset", error_code) or ("response", status)."""
    import h2.events
    sid = c.get_next_available_stream_id()
    c.send_headers(sid, headers, end_stream=end_on_headers and not data)
    for i, d in enumerate(data):
        c.send_data(sid, d, end_stream=i == len(data) - 1)
    s.sendall(c.data_to_send())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        buf = s.recv(65536)
        if not buf:
            break
        for ev in c.receive_data(buf):
            if isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                return ("reset", ev.error_code)
            if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                return ("response", int(dict(ev.headers)[b":status"]))
        out = c.data_to_send()
        if out:
            s.sendall(out)
    raise AssertionError(f"no answer on stream {sid}")


REQ = [(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", "/")]

# (name, header list): each is malformed (RFC 9113 8.2-8.3) and nghttp2 1.52 reset it too
BAD_HEADERS = [
    ("upper_case_name", REQ + [("X-Up", "1")]),
    ("name_with_space", REQ + [("x y", "1")]),
    ("value_cr", REQ + [("x-a", "a\rb")]),
    ("value_lf_smuggle", REQ + [("x-a", "a\r\ntransfer-encoding: chunked")]),
    ("value_nul", REQ + [("x-a", "a\0b")]),
    ("value_leading_space", REQ + [("x-a", " a")]),
    ("unknown_pseudo", REQ + [(":foo", "1")]),
    ("duplicate_path", REQ + [(":path", "/b")]),
    ("pseudo_after_regular", REQ[:2] + [("x-a", "1")] + REQ[2:]),
    ("missing_method", REQ[1:]),
    ("missing_scheme", REQ[:1] + REQ[2:]),
    ("missing_path", REQ[:3]),
    ("empty_path", REQ[:3] + [(":path", "")]),
    ("path_no_slash", REQ[:3] + [(":path", "x")]),
    ("path_with_space", REQ[:3] + [(":path", "/a HTTP/1.1\r\nx: y")]),
    ("connection", REQ + [("connection", "close")]),
    ("keep_alive", REQ + [("keep-alive", "1")]),
    ("proxy_connection", REQ + [("proxy-connection", "x")]),
    ("transfer_encoding", REQ + [("transfer-encoding", "chunked")]),
    ("upgrade", REQ + [("upgrade", "websocket")]),
    ("te_gzip", REQ + [("te", "gzip")]),
    ("content_length_invalid", REQ + [("content-length", "1x")]),
    ("content_length_twice", REQ + [("content-length", "0"), ("content-length", "0")]),
    ("content_length_without_body", REQ + [("content-length", "5")]),
]

POST = [(":method", "POST"), (":scheme", "http"), (":authority", "x"), (":path", "/")]

# (name, headers, DATA frames): the body contradicts content-length
BAD_BODIES = [
    ("body_longer", POST + [("content-length", "3")], [b"abcd"]),
    ("body_longer_in_two_frames", POST + [("content-length", "3")], [b"ab", b"cd"]),
    ("body_shorter", POST + [("content-length", "5")], [b"abc"]),
]


def test_h2_malformed_requests_are_reset_before_the_upstream(ctx):
    up = ctx.upstream(name="b1")
    px = ctx.remora(cfg.simple(up.port))
    s, c = _client(px.port)
    try:
        assert _exchange(s, c, REQ) == ("response", 200)
        for name, hdrs in BAD_HEADERS:
            got = _exchange(s, c, hdrs)
            assert got == ("reset", 1), (name, got)  # PROTOCOL_ERROR
        assert stat(ctx, px, "cluster.backend.upstream_rq_total") == 1, "one reached upstream"
        for name, hdrs, body in BAD_BODIES:
            got = _exchange(s, c, hdrs, body)
            assert got == ("reset", 1), (name, got)
        assert _exchange(s, c, REQ) == ("response", 200), "the connection still serves"
        # Envoy's codec counters: every malformed request counted and answered with RST_STREAM
        bad = len(BAD_HEADERS) + len(BAD_BODIES)
        pre = "http.ingress_http.http2."
        got = {k: stat(ctx, px, pre + k) for k in ("rx_messaging_error", "tx_reset", "rx_reset")}
        assert got == {"rx_messaging_error": bad, "tx_reset": bad, "rx_reset": 0}, got
        # the client cancels a request: http2.rx_reset (and no RST_STREAM back)
        sid = c.get_next_available_stream_id()
        c.send_headers(sid, POST, end_stream=False)
        c.reset_stream(sid)
        s.sendall(c.data_to_send())
        deadline = time.monotonic() + 5
        while stat(ctx, px, pre + "rx_reset") != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stat(ctx, px, pre + "rx_reset") == 1
        assert stat(ctx, px, pre + "tx_reset") == bad
        # a request with trailers: http2.trailers
        assert stat(ctx, px, pre + "trailers") == 0
        sid = c.get_next_available_stream_id()
        c.send_headers(sid, POST, end_stream=False)
        c.send_data(sid, b"abc")
        c.send_headers(sid, [("x-trailer", "1")], end_stream=True)
        s.sendall(c.data_to_send())
        deadline = time.monotonic() + 5
        while stat(ctx, px, pre + "trailers") != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stat(ctx, px, pre + "trailers") == 1
    finally:
        s.close()
    assert ctx.stop(px) == 0


UPSTREAM = r'''
import socket, sys
import h2.config, h2.connection, h2.events
BAD = {
    "/ok": [(":status", "200"), ("content-length", "2")],
    "/no-status": [("x-a", "1")],
    "/status-101": [(":status", "101")],
    "/status-short": [(":status", "20")],
    "/connection": [(":status", "200"), ("connection", "close")],
    "/transfer-encoding": [(":status", "200"), ("transfer-encoding", "chunked")],
    "/te": [(":status", "200"), ("te", "gzip")],
    "/upper": [(":status", "200"), ("X-A", "1")],
    "/value-crlf": [(":status", "200"), ("x-a", "a\r\nset-cookie: x=1")],
    "/request-pseudo": [(":status", "200"), (":path", "/")],
    "/length-invalid": [(":status", "200"), ("content-length", "x")],
}
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1]))); srv.listen(8)
cfg = h2.config.H2Configuration(client_side=False, validate_outbound_headers=False,
                                normalize_outbound_headers=False)
while True:
    c, _ = srv.accept()
    conn = h2.connection.H2Connection(cfg)
    try:
        conn.initiate_connection(); c.sendall(conn.data_to_send())
        while True:
            data = c.recv(65536)
            if not data:
                break
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.RequestReceived):
                    path = dict(ev.headers)[b":path"].decode()
                    ok = path == "/ok"
                    conn.send_headers(ev.stream_id, BAD[path], end_stream=not ok)
                    if ok:
                        conn.send_data(ev.stream_id, b"ok", end_stream=True)
            c.sendall(conn.data_to_send())
    except Exception:
        pass
    c.close()
'''


def test_h2_malformed_upstream_responses_are_errors(ctx):
    port = free_port()
    up = ctx.spawn(["/usr/bin/python3", "-c", UPSTREAM, str(port)], "bad-h2-upstream")
    wait_port(port, proc=up.p)
    px = ctx.remora(cfg.simple(port, "h2"))
    base = f"http://127.0.0.1:{px.port}"
    r = ctx.curl(base + "/ok")
    assert r.status == 200 and r.body == b"ok", r
    for path in ["/no-status", "/status-101", "/status-short", "/connection",
                 "/transfer-encoding", "/te", "/upper", "/value-crlf", "/request-pseudo",
                 "/length-invalid"]:
        r = ctx.curl(base + path)
        assert r.status in (502, 503), (path, r)
        assert "set-cookie" not in r.headers and "x-a" not in r.headers, (path, r)
    r = ctx.curl(base + "/ok", http2=True)
    assert r.status == 200 and r.body == b"ok", r
    # Envoy's cluster.<name>.http2.* counters: each malformed response counted and reset —
    # 9 of the 10: after /status-101 this upstream closes its connection (503 UC)
    got = {k: stat(ctx, px, "cluster.backend.http2." + k)
           for k in ("rx_messaging_error", "tx_reset", "rx_reset")}
    assert got == {"rx_messaging_error": 9, "tx_reset": 9, "rx_reset": 0}, got
    assert ctx.stop(px) == 0
