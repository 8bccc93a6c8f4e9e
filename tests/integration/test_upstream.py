"""Integration tests of build/remora-upstream, the bundled test upstream (bench/upstream/).

Every behaviour header is exercised over HTTP/1.1 (curl, raw sockets) and h2c (curl
--http2-prior-knowledge, nghttp, python-h2), plus gRPC (grpcio), TLS, load (h2load) and bounded
memory with a slow reader.  Each test stops its upstream with SIGTERM and requires exit code 0, so
the sanitizer build also reports leaks.
"""
import json
import os
import queue
import re
import signal
import socket
import subprocess
import threading
import time

import harness

ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def pattern(n):
    return (ALPHABET * (n // len(ALPHABET) + 1))[:n]


def start(ctx, *args, name="up"):
    return ctx.upstream(*args, name=name)


def stop(ctx, up):
    rc = ctx.stop(up)
    assert rc == 0, f"upstream exited with {rc}:\n{up.output()[-3000:]}"


def url(up, path="/"):
    return f"http://127.0.0.1:{up.port}{path}"


def both(ctx, up, path="/", **kw):
    """The same request with curl over HTTP/1.1 and h2c: [(label, Response)]."""
    return [("h1", ctx.curl(url(up, path), "--http1.1", **kw)),
            ("h2c", ctx.curl(url(up, path), http2=True, **kw))]


def nghttp(ctx, up, path="/", headers=None, data=None, verbose=True, timeout=20):
    """nghttp (h2c); returns its stdout as text (frames with -v, then the body)."""
    cmd = ["nghttp", "-t", str(timeout)]
    if verbose:
        cmd.append("-v")
    for k, v in (headers or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    if data is not None:
        path_ = os.path.join(ctx.tmp, f"nghttp-body-{time.monotonic_ns()}")
        with open(path_, "wb") as f:
            f.write(data)
        cmd += ["-d", path_]
    cmd.append(url(up, path))
    r = ctx.run(cmd, timeout=timeout + 5)
    return r.stdout.decode("latin-1"), r.returncode


def nghttp_status(out):
    m = re.search(r"recv \(stream_id=\d+\) :status: (\d+)", out)
    return int(m.group(1)) if m else 0


# ---- raw HTTP/1 ---------------------------------------------------------------------------------

class H1:
    """A raw HTTP/1.x client connection that parses responses itself."""

    def __init__(self, port, timeout=10):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def _fill(self):
        d = self.s.recv(65536)
        if not d:
            raise EOFError("connection closed")
        self.buf += d

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _take(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def head(self):
        """Status line and headers: (status, version, {name: value}, [(name, value)])."""
        line = self._line()
        version, status = line.split(b" ", 2)[:2]
        hdrs = []
        while True:
            ln = self._line()
            if not ln:
                break
            k, v = ln.split(b":", 1)
            hdrs.append((k.strip().lower().decode(), v.strip().decode()))
        return int(status), version.decode(), dict(hdrs), hdrs

    def response(self, head_request=False):
        """One final response: (status, headers, body, trailers)."""
        while True:
            status, version, h, _ = self.head()
            if status >= 200:
                break
        trailers = {}
        if head_request or status in (204, 304):
            body = b""
        elif h.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    break
                body += self._take(size)
                assert self._take(2) == b"\r\n"
            while True:
                ln = self._line()
                if not ln:
                    break
                k, v = ln.split(b":", 1)
                trailers[k.strip().lower().decode()] = v.strip().decode()
        elif "content-length" in h:
            body = self._take(int(h["content-length"]))
        else:
            body = self.read_to_eof()
        return status, h, body, trailers

    def read_to_eof(self):
        out = self.buf
        self.buf = b""
        while True:
            d = self.s.recv(65536)
            if not d:
                return out
            out += d

    def closed(self, timeout=3):
        """True when the server closed the connection (EOF) within timeout."""
        self.s.settimeout(timeout)
        try:
            return self.s.recv(1) == b""
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True

    def close(self):
        self.s.close()


def req(path="/", headers=None, method="GET", body=None, version="HTTP/1.1"):
    lines = [f"{method} {path} {version}", "Host: upstream.test"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


# ---- python-h2 -------------------------------------------------------------------------------------

class H2:
    """A small blocking HTTP/2 client over python-h2 (h2c prior knowledge)."""

    def __init__(self, port, timeout=10):
        import h2.config
        import h2.connection
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.c = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8"))
        self.c.initiate_connection()
        self.c.increment_flow_control_window(16 * 1024 * 1024)
        self.flush()
        self.streams = {}
        self.goaway = None
        self.closed = False

    def flush(self):
        d = self.c.data_to_send()
        if d:
            self.s.sendall(d)

    def request(self, path="/", headers=None, body=None, end=True):
        sid = self.c.get_next_available_stream_id()
        hs = [(":method", "POST" if body is not None or not end else "GET"), (":path", path),
              (":scheme", "http"), (":authority", "upstream.test")]
        hs += list((headers or {}).items())
        self.c.send_headers(sid, hs, end_stream=end and body is None)
        self.streams[sid] = {"headers": None, "data": b"", "trailers": None, "reset": None,
                             "ended": False, "t_end": None, "t_first_data": None}
        if body is not None:
            self.c.send_data(sid, body, end_stream=end)
        self.flush()
        return sid

    def send(self, sid, data, end=False):
        self.c.send_data(sid, data, end_stream=end)
        self.flush()

    def pump(self):
        """Read once and process events."""
        import h2.events as ev
        d = self.s.recv(65536)
        if not d:
            self.closed = True
            return
        for e in self.c.receive_data(d):
            st = self.streams.get(getattr(e, "stream_id", None))
            if isinstance(e, ev.ResponseReceived):
                st["headers"] = dict(e.headers)
            elif isinstance(e, ev.TrailersReceived):
                st["trailers"] = dict(e.headers)
            elif isinstance(e, ev.DataReceived):
                if st["t_first_data"] is None:
                    st["t_first_data"] = time.monotonic()
                st["data"] += e.data
                self.c.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            elif isinstance(e, ev.StreamEnded):
                st["ended"] = True
                st["t_end"] = time.monotonic()
            elif isinstance(e, ev.StreamReset):
                st["reset"] = int(e.error_code)
                st["t_end"] = time.monotonic()
            elif isinstance(e, ev.ConnectionTerminated):
                self.goaway = (int(e.error_code), e.last_stream_id)
        self.flush()

    def done(self, sid):
        st = self.streams[sid]
        return st["ended"] or st["reset"] is not None

    def wait(self, pred, timeout=10):
        deadline = time.monotonic() + timeout
        while not pred():
            if self.closed:
                raise harness.TestFailure("h2 connection closed while waiting")
            if time.monotonic() > deadline:
                raise harness.TestFailure(f"h2: timed out; streams={self.streams}")
            self.pump()

    def wait_streams(self, *sids, timeout=10):
        self.wait(lambda: all(self.done(s) for s in sids), timeout)
        return [self.streams[s] for s in sids]

    def close(self):
        self.s.close()


def vmrss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])
    return 0


# ---- tests ---------------------------------------------------------------------------------------

def test_upstream_basics(ctx):
    up = start(ctx, "--body-size", "10", name="alpha")
    for label, r in both(ctx, up, "/hello"):
        assert r.rc == 0 and r.status == 200, (label, r)
        assert r.headers["x-upstream-name"] == "alpha", (label, r)
        assert r.body == pattern(10), (label, r)
        assert r.headers.get("content-length") == "10", (label, r)
    out, rc = nghttp(ctx, up, "/hello")
    assert rc == 0 and nghttp_status(out) == 200 and "x-upstream-name: alpha" in out, out
    # HEAD: headers only
    r = ctx.curl(url(up), "--http1.1", "-I")
    assert r.status == 200 and r.body == b"" and r.headers.get("content-length") == "10", r
    # HTTP/1.0 without keep-alive: answered, then closed
    c = H1(up.port)
    c.send(req("/", version="HTTP/1.0"))
    st, h, body, _ = c.response()
    assert st == 200 and body == pattern(10) and h.get("connection") == "close", (st, h)
    assert c.closed(), "HTTP/1.0 connection should close"
    # HTTP/1.0 keep-alive: two requests on one connection
    c = H1(up.port)
    for _ in range(2):
        c.send(req("/", {"Connection": "keep-alive"}, version="HTTP/1.0"))
        st, h, body, _ = c.response()
        assert st == 200 and h.get("connection") == "keep-alive" and body == pattern(10), h
    r = ctx.curl(url(up), "--http1.0")
    assert r.status == 200 and r.body == pattern(10), r
    # the help text names every behaviour header
    r = ctx.run([ctx.bin("remora-upstream"), "--help"], timeout=5)
    text = r.stdout.decode()
    assert r.returncode == 0
    for hdr in ["status", "body-size", "delay-ms", "echo", "echo-headers", "echo-request", "reset",
                "close", "fail-first", "key", "fail-status", "grpc-status", "grpc-message",
                "response-headers", "trailers"]:
        assert f"x-upstream-{hdr}:" in text, hdr
    # bad option: exit 2
    r = ctx.run([ctx.bin("remora-upstream"), "--threads", "0"], timeout=5)
    assert r.returncode == 2 and b"--threads" in r.stderr, r
    stop(ctx, up)


def test_upstream_status(ctx):
    up = start(ctx)
    for code in (201, 404, 503):
        for label, r in both(ctx, up, headers={"x-upstream-status": str(code)}):
            assert r.status == code, (label, r)
        out, _ = nghttp(ctx, up, headers={"x-upstream-status": str(code)})
        assert nghttp_status(out) == code, out
    r = ctx.curl(url(up), "--http1.1", headers={"x-upstream-status": "204"})
    assert r.status == 204 and r.body == b"", r
    # malformed and unknown behaviour headers: 400 naming the header
    for label, r in both(ctx, up, headers={"x-upstream-status": "abc"}):
        assert r.status == 400 and b"x-upstream-status" in r.body, (label, r)
    for label, r in both(ctx, up, headers={"x-upstream-delay": "5"}):
        assert r.status == 400 and b"x-upstream-delay" in r.body, (label, r)
    stop(ctx, up)


def test_upstream_body_size(ctx):
    up = start(ctx)
    for n in (0, 1, 65, 100000, 3 * 1024 * 1024 + 7):
        for label, r in both(ctx, up, headers={"x-upstream-body-size": str(n)}):
            assert r.status == 200 and len(r.body) == n, (label, n, r.status, len(r.body))
            assert r.body == pattern(n), (label, n)
    out, _ = nghttp(ctx, up, headers={"x-upstream-body-size": "70000"}, verbose=False)
    assert out.encode("latin-1") == pattern(70000)
    stop(ctx, up)


def test_upstream_delay(ctx):
    up = start(ctx)
    for label in ("h1", "h2c"):
        t0 = time.monotonic()
        r = ctx.curl(url(up), "--http1.1" if label == "h1" else "--http2-prior-knowledge",
                     headers={"x-upstream-delay-ms": "300"})
        dt = time.monotonic() - t0
        assert r.status == 200 and dt >= 0.3, (label, dt, r)
    t0 = time.monotonic()
    out, _ = nghttp(ctx, up, headers={"x-upstream-delay-ms": "250"})
    assert nghttp_status(out) == 200 and time.monotonic() - t0 >= 0.25
    # h2: a delayed stream does not hold back another stream on the same connection
    c = H2(up.port)
    t0 = time.monotonic()
    slow = c.request("/slow", {"x-upstream-delay-ms": "2000"})
    fast = c.request("/fast")
    c.wait_streams(fast)  # (bounds: wide enough for a loaded CI machine)
    assert time.monotonic() - t0 < 1.5 and not c.done(slow), c.streams
    c.wait_streams(slow)
    assert c.streams[slow]["t_end"] - t0 >= 2.0, c.streams
    c.close()
    # h1: other connections keep flowing while a delayed response is pending
    slow1 = H1(up.port)
    slow1.send(req("/", {"x-upstream-delay-ms": "2000"}))
    t0 = time.monotonic()
    r = ctx.curl(url(up), "--http1.1")
    assert r.status == 200 and time.monotonic() - t0 < 1.5
    st, _, _, _ = slow1.response()
    assert st == 200 and time.monotonic() - t0 >= 1.9
    # many concurrent delayed requests are served by timers, not one after another
    c = H2(up.port)
    t0 = time.monotonic()
    sids = [c.request("/", {"x-upstream-delay-ms": "300"}) for _ in range(50)]
    c.wait_streams(*sids)
    assert time.monotonic() - t0 < 2.0
    stop(ctx, up)


def test_upstream_echo(ctx):
    up = start(ctx)
    data = os.urandom(1024 * 1024 + 3)
    for label, r in both(ctx, up, headers={"x-upstream-echo": "1"}, data=data):
        assert r.status == 200 and r.body == data, (label, r.status, len(r.body))
    out, _ = nghttp(ctx, up, headers={"x-upstream-echo": "1"}, data=b"via nghttp", verbose=False)
    assert out == "via nghttp", out
    # chunked request body, echoed chunked
    r = ctx.curl(url(up), "--http1.1", headers={"x-upstream-echo": "1",
                                                 "Transfer-Encoding": "chunked"}, data=data)
    assert r.status == 200 and r.body == data and \
        r.headers.get("transfer-encoding") == "chunked", (r.status, r.headers)
    # h2 bidi: each piece comes back before the next is sent
    c = H2(up.port)
    sid = c.request("/", {"x-upstream-echo": "1"}, end=False)
    c.wait(lambda: c.streams[sid]["headers"] is not None)
    assert c.streams[sid]["headers"][":status"] == "200"
    expect = b""
    for i in range(5):
        piece = f"ping-{i};".encode()
        expect += piece
        c.send(sid, piece)
        c.wait(lambda: c.streams[sid]["data"] == expect)
    c.send(sid, b"", end=True)
    st, = c.wait_streams(sid)
    assert st["ended"] and st["data"] == expect
    c.close()
    # h1 streams too: the echo of the first part arrives while the request is still open
    c = H1(up.port)
    c.send(b"POST / HTTP/1.1\r\nHost: x\r\nx-upstream-echo: 1\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
    st, _, h, _ = c.head()
    assert st == 200 and h.get("transfer-encoding") == "chunked"
    assert c._line() == b"5" and c._take(7) == b"hello\r\n"
    c.send(b"6\r\n world\r\n0\r\n\r\n")
    assert c._line() == b"6" and c._take(8) == b" world\r\n" and c._line() == b"0"
    c.close()
    # echo-headers: what the client sent comes back as x-echo-*
    for label, r in both(ctx, up, "/p?q=1", headers={"x-upstream-echo-headers": "1",
                                                      "x-forwarded-for": "10.1.2.3"}):
        h = r.headers
        assert h["x-echo-x-forwarded-for"] == "10.1.2.3", (label, h)
        assert h["x-echo-path"] == "/p?q=1" and h["x-echo-method"] == "GET", (label, h)
        assert h["x-echo-authority"] == f"127.0.0.1:{up.port}", (label, h)
    assert both(ctx, up, headers={"x-upstream-echo-headers": "1"})[0][1] \
        .headers["x-echo-host"] == f"127.0.0.1:{up.port}"
    stop(ctx, up)


def test_upstream_echo_request(ctx):
    up = start(ctx, name="jsonup")
    for label, r in both(ctx, up, "/echo-request/x?y=1", data=b"12345",
                         headers={"x-forwarded-for": "1.2.3.4"}):
        assert r.status == 200 and r.headers["content-type"] == "application/json", (label, r)
        j = json.loads(r.body)
        assert j["method"] == "POST" and j["path"] == "/echo-request/x?y=1", j
        assert j["authority"] == f"127.0.0.1:{up.port}" and j["scheme"] == "http", j
        assert j["protocol"] == ("HTTP/1.1" if label == "h1" else "HTTP/2"), j
        assert j["headers"]["x-forwarded-for"] == "1.2.3.4" and j["body_len"] == 5, j
        assert j["upstream"] == "jsonup", j
        assert not any(k.startswith(":") for k in j["headers"]), j
    # by header, with a repeated header (a list) and an odd value (escaped)
    r = ctx.curl(url(up, "/any"), "--http1.1", "-H", "x-multi: a", "-H", "x-multi: b",
                 "-H", 'x-quote: say "hi"\\', headers={"x-upstream-echo-request": "1"})
    j = json.loads(r.body)
    assert j["headers"]["x-multi"] == ["a", "b"] and j["headers"]["x-quote"] == 'say "hi"\\', j
    out, _ = nghttp(ctx, up, "/echo-request", verbose=False)
    assert json.loads(out)["protocol"] == "HTTP/2"
    stop(ctx, up)


def test_upstream_reset(ctx):
    up = start(ctx)
    big = {"x-upstream-body-size": "100000"}
    for mode, nbytes in (("before-headers", None), ("after-headers", 0),
                         ("after-body-bytes=1000", 1000)):
        hs = dict(big, **{"x-upstream-reset": mode})
        r1 = ctx.curl(url(up), "--http1.1", headers=hs)
        assert r1.rc in (18, 52, 56), (mode, r1)   # reset/closed early: a curl error
        if nbytes is None:
            assert r1.status == 0, (mode, r1)
        else:
            assert r1.status == 200 and len(r1.body) == nbytes, (mode, r1.status, len(r1.body))
        r2 = ctx.curl(url(up), http2=True, headers=hs)
        assert r2.rc == 92 and "INTERNAL_ERROR" in r2.stderr, (mode, r2)
        out, _ = nghttp(ctx, up, headers=hs)
        assert "recv RST_STREAM" in out and "error_code=INTERNAL_ERROR" in out, out
        assert (":status: 200" in out) == (nbytes is not None), out
        c = H2(up.port)
        sid = c.request("/", hs)
        st, = c.wait_streams(sid)
        assert st["reset"] == 2 and not st["ended"], st   # INTERNAL_ERROR
        assert (st["headers"] is None) == (nbytes is None), st
        assert len(st["data"]) == (nbytes or 0), st
        # the connection survives a stream reset
        ok = c.request("/")
        assert c.wait_streams(ok)[0]["headers"][":status"] == "200"
        c.close()
    # h1: a reset also happens when the body is shorter than the reset point
    r = ctx.curl(url(up), "--http1.1", headers={"x-upstream-reset": "after-body-bytes=50",
                                                 "x-upstream-body-size": "10"})
    assert r.rc in (18, 52, 56) or r.status == 0, r
    stop(ctx, up)


def test_upstream_close(ctx):
    up = start(ctx)
    c = H1(up.port)
    c.send(req("/a"))
    st, h, _, _ = c.response()
    assert st == 200 and "connection" not in h
    c.send(req("/b", {"x-upstream-close": "1"}))
    st, h, _, _ = c.response()
    assert st == 200 and h.get("connection") == "close", h
    assert c.closed(), "the upstream should close after x-upstream-close"
    r = ctx.curl(url(up), "--http1.1", "-v", headers={"x-upstream-close": "1"})
    assert r.status == 200 and r.headers.get("connection") == "close", r
    # h2: GOAWAY(NO_ERROR) after the response
    c = H2(up.port)
    sid = c.request("/", {"x-upstream-close": "1"})
    st, = c.wait_streams(sid)
    assert st["ended"] and st["headers"][":status"] == "200"
    c.wait(lambda: c.goaway is not None, timeout=5)
    assert c.goaway == (0, sid), c.goaway
    deadline = time.monotonic() + 5
    while not c.closed and time.monotonic() < deadline:
        c.pump()
    assert c.closed, "the upstream should close the h2 connection after GOAWAY"
    out, _ = nghttp(ctx, up, headers={"x-upstream-close": "1"})
    assert nghttp_status(out) == 200, out
    stop(ctx, up)


def test_upstream_fail_first(ctx):
    up = start(ctx, "-t", "2")
    hs = {"x-upstream-fail-first": "3", "x-upstream-key": "k-mixed"}
    got = []
    for i in range(6):   # mixes protocols and connections: the count is per process
        if i % 3 == 0:
            got.append(ctx.curl(url(up), "--http1.1", headers=hs).status)
        elif i % 3 == 1:
            got.append(ctx.curl(url(up), http2=True, headers=hs).status)
        else:
            got.append(nghttp_status(nghttp(ctx, up, headers=hs)[0]))
    assert got == [503, 503, 503, 200, 200, 200], got
    # another key counts separately; custom failure status
    hs2 = {"x-upstream-fail-first": "1", "x-upstream-key": "k-other",
           "x-upstream-fail-status": "429"}
    assert [ctx.curl(url(up), http2=True, headers=hs2).status for _ in range(3)] == [429, 200, 200]
    # concurrent requests on both threads: exactly N failures
    c = H2(up.port)
    hs3 = {"x-upstream-fail-first": "7", "x-upstream-key": "k-burst"}
    sids = [c.request("/", hs3) for _ in range(20)]
    codes = [st["headers"][":status"] for st in c.wait_streams(*sids)]
    assert codes.count("503") == 7 and codes.count("200") == 13, codes
    stop(ctx, up)


def _grpc(ctx, up):
    import grpc
    ch = grpc.insecure_channel(f"127.0.0.1:{up.port}")
    grpc.channel_ready_future(ch).result(timeout=10)
    return grpc, ch


def test_upstream_grpc(ctx):
    up = start(ctx)
    grpc, ch = _grpc(ctx, up)
    try:
        unary = ch.unary_unary("/test.Echo/Unary")   # no serializers: raw bytes
        assert unary(b"hello grpc", timeout=10) == b"hello grpc"
        assert unary(b"", timeout=10) == b""
        resp, call = unary.with_call(b"x" * 100000, timeout=10)
        assert resp == b"x" * 100000 and call.code() == grpc.StatusCode.OK
        # bidi: each reply arrives before the next message is sent
        bidi = ch.stream_stream("/test.Echo/Bidi")
        q = queue.Queue()

        def reqs():
            while True:
                m = q.get()
                if m is None:
                    return
                yield m

        it = bidi(reqs(), timeout=10)
        for i in range(5):
            msg = f"msg-{i}".encode()
            q.put(msg)
            assert next(it) == msg
        q.put(None)
        assert list(it) == []
        # x-upstream-grpc-status: the call fails with that code and message
        try:
            unary(b"z", timeout=10, metadata=(("x-upstream-grpc-status", "7"),
                                              ("x-upstream-grpc-message", "denied")))
            raise AssertionError("expected an RpcError")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.PERMISSION_DENIED and e.details() == "denied", e
        # fail-first as a gRPC status: first UNAVAILABLE, then OK
        md = (("x-upstream-fail-first", "1"), ("x-upstream-key", "grpc-ff"),
              ("x-upstream-fail-grpc-status", "14"))
        try:
            unary(b"a", timeout=10, metadata=md)
            raise AssertionError("expected UNAVAILABLE")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE, e
        assert unary(b"b", timeout=10, metadata=md) == b"b"
    finally:
        ch.close()
    # trailers seen on the wire: nghttp -v and python-h2
    msg = b"\x00\x00\x00\x00\x03abc"
    out, _ = nghttp(ctx, up, headers={"content-type": "application/grpc", "te": "trailers",
                                      "x-upstream-grpc-status": "5",
                                      "x-upstream-grpc-message": "gone"}, data=msg)
    assert "content-type: application/grpc" in out and "grpc-status: 5" in out and \
        "grpc-message: gone" in out, out
    c = H2(up.port)
    sid = c.request("/svc/M", {"content-type": "application/grpc", "te": "trailers"}, body=msg)
    st, = c.wait_streams(sid)
    assert st["data"] == msg and st["trailers"] == {"grpc-status": "0"}, st
    c.close()
    # HTTP/1.1: chunked trailers
    for hs in ({"content-type": "application/grpc"}, {"x-upstream-grpc-status": "3"}):
        c = H1(up.port)
        c.send(req("/svc/M", hs, method="POST", body=msg))
        status, h, body, trailers = c.response()
        assert status == 200 and h["content-type"] == "application/grpc" and body == msg, h
        assert trailers.get("grpc-status") == ("0" if "content-type" in hs else "3"), trailers
        c.close()
    stop(ctx, up)


def test_upstream_headers_and_trailers(ctx):
    up = start(ctx)
    hs = {"x-upstream-response-headers": "X-One=1, x-two = a b", "x-upstream-trailers":
          "x-t1=v1,X-T2=v2", "x-upstream-body-size": "5"}
    for label, r in both(ctx, up, headers=hs):
        assert r.headers["x-one"] == "1" and r.headers["x-two"] == "a b", (label, r)
        assert r.body.startswith(pattern(5)), (label, r)   # curl -i prints h1 trailers too
    out, _ = nghttp(ctx, up, headers=hs)
    assert "recv (stream_id=13) x-one: 1" in out and "x-t1: v1" in out and "x-t2: v2" in out, out
    c = H1(up.port)
    c.send(req("/", hs))
    status, h, body, trailers = c.response()
    assert h.get("transfer-encoding") == "chunked" and body == pattern(5), h
    assert trailers == {"x-t1": "v1", "x-t2": "v2"}, trailers
    c2 = H2(up.port)
    sid = c2.request("/", hs)
    st, = c2.wait_streams(sid)
    assert st["trailers"] == {"x-t1": "v1", "x-t2": "v2"} and st["data"] == pattern(5), st
    for label, r in both(ctx, up, headers={"x-upstream-trailers": "novalue"}):
        assert r.status == 400, (label, r)
    stop(ctx, up)


def test_upstream_h1_protocol(ctx):
    up = start(ctx)
    # pipelining: answered in order even when the first is the slowest
    c = H1(up.port)
    c.send(req("/1", {"x-upstream-delay-ms": "300", "x-upstream-body-size": "1"}) +
           req("/2", {"x-upstream-body-size": "2"}) +
           req("/3", {"x-upstream-echo": "1"}, method="POST", body=b"three"))
    bodies = [c.response()[2] for _ in range(3)]
    assert bodies == [b"A", b"AB", b"three"], bodies
    c.close()
    # a burst of 200 pipelined requests in one write
    c = H1(up.port)
    c.send(b"".join(req(f"/{i}", {"x-upstream-body-size": str(i % 7)}) for i in range(200)))
    for i in range(200):
        assert c.response()[2] == pattern(i % 7), i
    c.close()
    # chunked request with trailers (ignored), then another request on the connection
    c = H1(up.port)
    c.send(b"POST /echo-request HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nx-trailer: t\r\n\r\n" + req("/echo-request"))
    j1, j2 = json.loads(c.response()[2]), json.loads(c.response()[2])
    assert j1["body_len"] == 19 and "x-trailer" not in j1["headers"], j1
    assert j2["method"] == "GET" and j2["body_len"] == 0, j2
    c.close()
    # Expect: 100-continue: the interim response comes before the body is sent
    c = H1(up.port)
    c.send(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n"
           b"x-upstream-echo: 1\r\n\r\n")
    st, _, _, _ = c.head()
    assert st == 100
    c.send(b"body")
    st, h, body, _ = c.response()
    assert st == 200 and body == b"body"
    c.close()
    r = ctx.curl(url(up), "--http1.1", "-H", "Expect: 100-continue", data=b"x" * 2000000,
                 headers={"x-upstream-echo": "1"})
    assert r.status == 200 and len(r.body) == 2000000, r.status
    # garbage: 400 and close
    c = H1(up.port)
    c.send(b"NOT HTTP AT ALL\r\n\r\n")
    st, h, body, _ = c.response()
    assert st == 400 and h.get("connection") == "close"
    assert c.closed()
    # oversized headers: 431
    c = H1(up.port)
    c.send(req("/", {"x-big": "a" * 70000}))
    assert c.response()[0] == 431
    # the peer half-closes after a request: still answered
    c = H1(up.port)
    c.send(req("/", {"x-upstream-delay-ms": "100", "x-upstream-body-size": "3"}))
    c.s.shutdown(socket.SHUT_WR)
    assert c.response()[2] == b"ABC" and c.closed()
    stop(ctx, up)


def _slow_reader(ctx, up, h2):
    size = 50 * 1024 * 1024
    base = vmrss_kb(up.p.pid)
    cmd = ["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}", "--max-time", "60",
           "--limit-rate", "25M", "-H", f"x-upstream-body-size: {size}",
           "--http2-prior-knowledge" if h2 else "--http1.1", url(up)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = base
    try:
        while p.poll() is None:
            peak = max(peak, vmrss_kb(up.p.pid))
            time.sleep(0.05)
        out, err = p.communicate(timeout=5)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0 and int(out) == size, (out, err)
    return peak - base


def test_upstream_slow_reader_bounded_memory(ctx):
    up = start(ctx)
    ctx.curl(url(up), headers={"x-upstream-body-size": "1000000"})   # warm up allocations
    ctx.curl(url(up), http2=True, headers={"x-upstream-body-size": "1000000"})
    for h2 in (False, True):
        grew = _slow_reader(ctx, up, h2)
        assert grew < 16 * 1024, f"RSS grew by {grew} kB for a 50 MB body (h2={h2})"
    # a client that stops reading entirely: the upstream still serves others
    s = socket.create_connection(("127.0.0.1", up.port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(req("/", {"x-upstream-body-size": str(50 * 1024 * 1024)}))
    before = vmrss_kb(up.p.pid)
    time.sleep(0.5)
    r = ctx.curl(url(up))
    assert r.status == 200
    assert vmrss_kb(up.p.pid) - before < 8 * 1024
    s.close()
    stop(ctx, up)


test_upstream_slow_reader_bounded_memory.timeout = 120


def test_upstream_h2load(ctx):
    up = start(ctx)
    for extra in ([], ["--h1"]):
        r = ctx.run(["h2load", "-n", "10000", "-c", "10", "-m", "10"] + extra + [url(up)],
                    timeout=60)
        out = r.stdout.decode()
        assert r.returncode == 0, out
        m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, "
                      r"(\d+) failed, (\d+) errored", out)
        assert m and m.group(3) == "10000" and m.group(4) == "0" and m.group(5) == "0", out
        assert "status codes: 10000 2xx" in out, out
    # with bodies and delays mixed in
    r = ctx.run(["h2load", "-n", "2000", "-c", "4", "-m", "8", "-H", "x-upstream-body-size: 20000",
                 "-H", "x-upstream-delay-ms: 1", url(up)], timeout=60)
    assert "2000 succeeded, 0 failed" in r.stdout.decode(), r.stdout.decode()
    stop(ctx, up)


def test_upstream_tls(ctx):
    cert, key = os.path.join(ctx.tmp, "cert.pem"), os.path.join(ctx.tmp, "key.pem")
    ctx.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
             "-out", cert, "-days", "2", "-subj", "/CN=localhost"], timeout=30, check=True)
    up = start(ctx, "--tls-cert", cert, "--tls-key", key, name="tlsup")
    base = f"https://127.0.0.1:{up.port}"
    r = ctx.curl(base + "/echo-request", "-k", "--http2")
    assert r.status == 200 and json.loads(r.body)["protocol"] == "HTTP/2", r
    assert json.loads(r.body)["scheme"] == "https"
    r = ctx.curl(base + "/echo-request", "-k", "--http1.1", "-v")
    assert r.status == 200 and json.loads(r.body)["protocol"] == "HTTP/1.1", r
    assert "ALPN: server accepted http/1.1" in r.stderr or "http/1.1" in r.stderr, r.stderr
    data = os.urandom(300000)
    for v in ("--http2", "--http1.1"):
        r = ctx.curl(base + "/", "-k", v, headers={"x-upstream-echo": "1"}, data=data)
        assert r.status == 200 and r.body == data, (v, r.status)
        r = ctx.curl(base + "/", "-k", v, headers={"x-upstream-body-size": "2000000"})
        assert r.status == 200 and r.body == pattern(2000000), (v, r.status)
        assert r.headers["x-upstream-name"] == "tlsup"
    # TLS without ALPN: the protocol is sniffed (h1 here)
    r = ctx.curl(base + "/", "-k", "--http1.1", "--no-alpn")
    assert r.status == 200, r
    # cleartext still works on the same port
    for label, r in both(ctx, up):
        assert r.status == 200, (label, r)
    r = ctx.run(["h2load", "-n", "2000", "-c", "4", "-m", "10", base + "/"], timeout=60)
    assert "2000 succeeded, 0 failed" in r.stdout.decode(), r.stdout.decode()
    # a broken handshake only drops that connection
    s = socket.create_connection(("127.0.0.1", up.port), timeout=5)
    s.sendall(b"\x16\x03\x01\x00\x10" + os.urandom(400))
    try:
        while s.recv(65536):
            pass
    except (ConnectionResetError, socket.timeout):
        pass
    s.close()
    assert ctx.curl(base + "/", "-k").status == 200
    # a bad key file is reported
    r = ctx.run([ctx.bin("remora-upstream"), "--listen", f"127.0.0.1:{harness.free_port()}",
                 "--tls-cert", cert, "--tls-key", cert], timeout=10)
    assert r.returncode != 0 and b"remora-upstream" in r.stderr, r
    stop(ctx, up)


def test_upstream_listeners_threads_signals(ctx):
    p1, p2 = harness.free_port(), harness.free_port()
    args = ["--listen", f"127.0.0.1:{p2}", "-t", "2"]
    v6 = socket.has_ipv6
    if v6:
        try:
            with socket.socket(socket.AF_INET6) as s:
                s.bind(("::1", 0))
            args += ["--listen", f"[::1]:{p2}"]
        except OSError:
            v6 = False
    up = ctx.upstream(*args, port=p1, name="multi")
    harness.wait_port(p2)
    for p in (p1, p2):
        r = ctx.curl(f"http://127.0.0.1:{p}/", http2=True)
        assert r.status == 200 and r.headers["x-upstream-name"] == "multi", r
    if v6:
        r = ctx.curl(f"http://[::1]:{p2}/echo-request", "--http1.1")
        assert r.status == 200 and json.loads(r.body)["authority"] == f"[::1]:{p2}", r
    # two threads: many connections all served
    r = ctx.run(["h2load", "-n", "4000", "-c", "20", "--h1", f"http://127.0.0.1:{p1}/"],
                timeout=60)
    assert "4000 succeeded, 0 failed" in r.stdout.decode(), r.stdout.decode()
    # SIGUSR1: a counters line on stderr
    up.p.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 5
    while "http1_requests=" not in up.output() and time.monotonic() < deadline:
        time.sleep(0.05)
    m = re.search(r"http1_requests=(\d+) http2_requests=(\d+)", up.output())
    assert m and int(m.group(1)) >= 4000 and int(m.group(2)) >= 2, up.output()
    # SIGTERM with connections open (h1 idle, h2 with a pending delayed stream): exit 0
    idle = H1(p1)
    c = H2(p1)
    c.request("/", {"x-upstream-delay-ms": "60000"})
    time.sleep(0.1)
    stop(ctx, up)
    assert not harness_port_open(p1)
    idle.close()
    c.close()
    # SIGINT too
    up = ctx.upstream("--quiet", name="int")
    ctx.curl(url(up))
    rc = ctx.stop(up, sig=signal.SIGINT)
    assert rc == 0 and up.output() == "", (rc, up.output())
    # a port in use is an error naming the address
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    r = ctx.run([ctx.bin("remora-upstream"), "--listen", f"127.0.0.1:{port}"], timeout=10)
    blocker.close()
    assert r.returncode != 0 and f"127.0.0.1:{port}".encode() in r.stderr, r


def harness_port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_upstream_client_aborts(ctx):
    """Clients that vanish or misbehave at every stage: the upstream keeps serving and exits
    cleanly (no sanitizer report, no leak)."""
    up = start(ctx)
    big = str(50 * 1024 * 1024)
    # h2: cancel a delayed stream, an echo stream mid-body, a big response mid-body
    c = H2(up.port)
    s1 = c.request("/", {"x-upstream-delay-ms": "300"})
    s2 = c.request("/", {"x-upstream-echo": "1"}, body=b"partial", end=False)
    s3 = c.request("/", {"x-upstream-body-size": big})
    c.wait(lambda: len(c.streams[s3]["data"]) > 100000)
    for sid in (s1, s2, s3):
        c.c.reset_stream(sid)
    c.flush()
    ok = c.request("/", {"x-upstream-body-size": "3"})
    assert c.wait_streams(ok)[0]["data"] == b"ABC"
    # then vanish with streams open
    c.request("/", {"x-upstream-delay-ms": "5000"})
    c.request("/", {"x-upstream-body-size": big})
    c.request("/", {"x-upstream-echo": "1"}, body=b"x", end=False)
    time.sleep(0.1)
    c.close()
    # h1: vanish while delayed, mid-response, mid-echo
    for hs, body in (({"x-upstream-delay-ms": "5000"}, None),
                     ({"x-upstream-body-size": big}, None)):
        h = H1(up.port)
        h.send(req("/", hs, body=body))
        time.sleep(0.1)
        h.close()
    h = H1(up.port)
    h.send(b"POST / HTTP/1.1\r\nHost: x\r\nx-upstream-echo: 1\r\nContent-Length: 100\r\n\r\nabc")
    assert h.head()[0] == 200
    h.close()
    # pipelined requests after a Connection: close one are not answered
    h = H1(up.port)
    h.send(req("/1") + req("/2", {"Connection": "close"}) + req("/3"))
    assert h.response()[0] == 200 and h.response()[0] == 200 and h.closed()
    # garbage: after the h2 preface, as a TLS record without TLS configured, random bytes
    for junk in (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + os.urandom(200), b"\x16\x03\x01" +
                 os.urandom(300), os.urandom(3000)):
        s = socket.create_connection(("127.0.0.1", up.port), timeout=5)
        s.sendall(junk)
        try:
            while s.recv(65536):
                pass
        except (ConnectionResetError, socket.timeout):
            pass
        s.close()
    # connect and leave without a byte, or with only blank lines (allowed before a request)
    socket.create_connection(("127.0.0.1", up.port)).close()
    s = socket.create_connection(("127.0.0.1", up.port))
    s.sendall(b"\r\n" * 10)
    s.close()
    for label, r in both(ctx, up, headers={"x-upstream-body-size": "10"}):
        assert r.status == 200 and len(r.body) == 10, (label, r)
    stop(ctx, up)
