"""remora's gRPC client (xds/grpc.h) against an independent gRPC stack: Debian's python3-grpcio.

The server is grpcio with generic handlers and raw-bytes (de)serializers, in this process (or,
to be killed like a crashed control plane, in a child process: this file run as a script).  The
client is build/tests/grpc_probe, driven line by line on stdin (see tests/tools/grpc_probe.c).

Methods (/test.Test/<Name>):
  Unary        echo                      Who          the server's name
  Metadata     "x-probe|user-agent|deadline-seconds"
  ServerStream N -> N messages "item-<i>" Bidi        echo each message
  Unavailable  abort(UNAVAILABLE, …) before any message (a trailers-only response)
  Slow         records its deadline, waits until cancelled (10 s at most)
  AbortMid     3 messages, then abort(ABORTED, …)
  Cancellable  bidi echo that records cancellation
"""
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

SVC = "/test.Test/"


# ---- the server --------------------------------------------------------------------------------

class Server:
    """A grpcio server on 127.0.0.1:port with the test methods; .events records what it saw."""

    def __init__(self, port, name="A", options=()):
        import grpc
        from concurrent import futures
        self.grpc = grpc
        self.name = name
        self.port = port
        self.events = {}
        self.lock = threading.Lock()
        self.srv = grpc.server(futures.ThreadPoolExecutor(max_workers=16),
                               options=list(options) + [("grpc.so_reuseport", 1)])
        self.srv.add_generic_rpc_handlers((self._handler(),))
        got = self.srv.add_insecure_port(f"127.0.0.1:{port}")
        if got != port:
            raise harness.TestFailure(f"grpc server could not bind 127.0.0.1:{port}")
        self.srv.start()

    def event(self, key, value=True):
        with self.lock:
            self.events[key] = value

    def wait_event(self, key, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if key in self.events:
                    return self.events[key]
            time.sleep(0.01)
        raise harness.TestFailure(f"server never saw {key!r}; saw {sorted(self.events)}")

    def stop(self, grace=None):
        return self.srv.stop(grace)

    # handlers take and return bytes (no serializers)
    def _handler(self):
        grpc = self.grpc
        srv = self

        def unary(req, ctx):
            return req

        def who(req, ctx):
            return srv.name.encode()

        def metadata(req, ctx):
            md = dict(ctx.invocation_metadata())
            left = ctx.time_remaining()
            return ("%s|%s|%s" % (md.get("x-probe", "-"), md.get("user-agent", "-"),
                                  "none" if left is None else "%.3f" % left)).encode()

        def server_stream(req, ctx):
            for i in range(int(req.decode() or "0")):
                yield b"item-%d" % i

        def bidi(reqs, ctx):
            for r in reqs:
                yield r

        def unavailable(req, ctx):
            ctx.abort(grpc.StatusCode.UNAVAILABLE, "backend down: 100% \u00fcnic\u00f6de")

        def slow(req, ctx):
            srv.event("slow_deadline", ctx.time_remaining())
            end = time.monotonic() + 10
            while ctx.is_active() and time.monotonic() < end:
                time.sleep(0.01)
            srv.event("slow_done", ctx.is_active())
            return b"late"

        def abort_mid(req, ctx):
            for i in range(3):
                yield b"part-%d" % i
            ctx.abort(grpc.StatusCode.ABORTED, "boom mid-stream")

        def cancellable(reqs, ctx):
            ctx.add_callback(lambda: srv.event("cancelled"))
            for r in reqs:
                srv.event("cancellable_got", r)
                yield r

        table = {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Who": grpc.unary_unary_rpc_method_handler(who),
            "Metadata": grpc.unary_unary_rpc_method_handler(metadata),
            "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
            "Unavailable": grpc.unary_unary_rpc_method_handler(unavailable),
            "Slow": grpc.unary_unary_rpc_method_handler(slow),
            "AbortMid": grpc.unary_stream_rpc_method_handler(abort_mid),
            "Cancellable": grpc.stream_stream_rpc_method_handler(cancellable),
        }

        class Handler(grpc.GenericRpcHandler):
            def service(self, details):
                if not details.method.startswith(SVC):
                    return None
                return table.get(details.method[len(SVC):])

        return Handler()


def child_server(ctx, port, name):
    """The server in a child process (so that it can be killed); returns the Proc."""
    pr = ctx.spawn([sys.executable, os.path.abspath(__file__), "--serve", str(port), name],
                   f"grpc-server-{name}")
    harness.wait_port(port, proc=pr.p)
    return pr


# ---- the probe ---------------------------------------------------------------------------------

class Probe:
    def __init__(self, ctx, port, *opts):
        exe = ctx.bin("tests/grpc_probe")
        if not os.path.exists(exe):
            raise harness.TestFailure(f"{exe} missing: build with `make all`")
        self.ctx = ctx
        self.pr = ctx.spawn([exe, *opts, f"127.0.0.1:{port}"], "grpc_probe",
                            stdin=subprocess.PIPE)
        self.expect(lambda ln: ln.startswith("ready "), "ready")

    def cmd(self, *lines):
        for ln in lines:
            self.pr.p.stdin.write((ln + "\n").encode())
        self.pr.p.stdin.flush()

    def lines(self):
        return self.pr.output().splitlines()

    def expect(self, pred, what, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ln in self.lines():
                if pred(ln):
                    return ln
            if not self.pr.alive():
                break
            time.sleep(0.01)
        raise harness.TestFailure(f"probe: no line for {what} within {timeout}s; output:\n"
                                  + "\n".join(self.lines()[-40:]))

    def close_of(self, tag, timeout=15.0):
        """(code, message) of `tag`'s close line."""
        ln = self.expect(lambda s: s.startswith(f"{tag} close "), f"{tag} close", timeout)
        parts = ln.split(" ", 3)
        return int(parts[2]), (parts[3] if len(parts) > 3 else "")

    def msgs_of(self, tag):
        out = []
        for ln in self.lines():
            if ln.startswith(f"{tag} msg "):
                parts = ln.split(" ", 3)
                out.append(parts[3] if len(parts) > 3 else "")
        return out

    def stats(self):
        n = sum(1 for ln in self.lines() if ln.startswith("stats "))
        self.cmd("stats")
        self.expect(lambda s: sum(1 for ln in self.lines() if ln.startswith("stats ")) > n
                    and s.startswith("stats "), "stats")
        ln = [ln for ln in self.lines() if ln.startswith("stats ")][-1]
        return {k: int(v) for k, v in (kv.split("=") for kv in ln.split()[1:])}

    def quit(self):
        self.cmd("quit")
        try:
            self.pr.p.wait(15)
        except subprocess.TimeoutExpired:
            raise harness.TestFailure("grpc_probe did not exit after quit")
        if self.pr.p.returncode != 0:
            raise harness.TestFailure(f"grpc_probe exited {self.pr.p.returncode}:\n"
                                      + self.pr.output()[-3000:])


def unary(probe, tag, method, text, deadline=None, md=()):
    extra = "" if deadline is None and not md else f" {deadline or 0}"
    extra += "".join(f" {k}={v}" for k, v in md)
    probe.cmd(f"start {tag} {SVC}{method}{extra}", f"send {tag} {text}", f"half {tag}")


# ---- tests -------------------------------------------------------------------------------------

def test_grpc_client_unary_streaming_and_errors(ctx):
    port = harness.free_port()
    srv = Server(port)
    try:
        pb = Probe(ctx, port)
        unary(pb, "u1", "Unary", "hello grpc")
        assert pb.close_of("u1") == (0, ""), pb.lines()
        assert pb.msgs_of("u1") == ["hello grpc"]

        unary(pb, "md", "Metadata", "x", deadline=5000, md=[("x-probe", "42")])
        assert pb.close_of("md")[0] == 0
        probe_v, ua, left = pb.msgs_of("md")[0].split("|")
        assert probe_v == "42"
        assert ua.startswith("remora/") and "grpc-c" in ua, ua
        assert 3.0 < float(left) <= 5.0, left  # grpc-timeout reached the server

        unary(pb, "ss", "ServerStream", "5")
        assert pb.close_of("ss")[0] == 0
        assert pb.msgs_of("ss") == [f"item-{i}" for i in range(5)]

        # trailers-only error: status and percent-decoded (UTF-8) message
        unary(pb, "un", "Unavailable", "x")
        code, msg = pb.close_of("un")
        assert code == 14, (code, msg)
        assert msg == "backend down: 100% \u00fcnic\u00f6de", repr(msg)
        assert pb.msgs_of("un") == []

        # status after messages
        unary(pb, "ab", "AbortMid", "x")
        assert pb.close_of("ab") == (10, "boom mid-stream")
        assert pb.msgs_of("ab") == ["part-0", "part-1", "part-2"]

        # unknown method: UNIMPLEMENTED from the server
        unary(pb, "nf", "NoSuchMethod", "x")
        assert pb.close_of("nf")[0] == 12

        st = pb.stats()
        assert st["connects"] == 1, st
        pb.quit()
    finally:
        srv.stop(None)


def test_grpc_client_bidi_1000_messages_with_backpressure(ctx):
    port = harness.free_port()
    srv = Server(port)
    try:
        pb = Probe(ctx, port, "--call-buffer", "262144")
        # every 10th message is 1 MiB: about 100 MiB each way, in order, checked byte for byte
        pb.cmd(f"start b1 {SVC}Bidi", "bulk b1 1000 1048576,100,7,65536,5,300,16384,1,2048,40")
        sent = pb.expect(lambda s: s.startswith("b1 sent "), "b1 sent", timeout=120)
        blocked = int(sent.split("blocked=")[1])
        assert blocked > 0, f"backpressure never engaged: {sent}"
        assert pb.close_of("b1", timeout=120) == (0, "")
        bulk = pb.expect(lambda s: s.startswith("b1 bulk "), "b1 bulk")
        assert "recv=1000 bad=0" in bulk, bulk
        pb.quit()
    finally:
        srv.stop(None)
test_grpc_client_bidi_1000_messages_with_backpressure.timeout = 240


def test_grpc_client_deadline_and_cancel(ctx):
    port = harness.free_port()
    srv = Server(port)
    try:
        pb = Probe(ctx, port)
        t0 = time.monotonic()
        unary(pb, "d1", "Slow", "x", deadline=300)
        code, msg = pb.close_of("d1")
        dt = time.monotonic() - t0
        assert code == 4, (code, msg)
        assert 0.25 < dt < 5, dt
        left = srv.wait_event("slow_deadline")
        assert left is not None and 0 < left <= 0.3, left
        assert srv.wait_event("slow_done") is False  # the server saw the call end

        # cancel mid-stream: the server sees the cancellation, the probe no more events
        pb.cmd(f"start c1 {SVC}Cancellable", "send c1 first")
        pb.expect(lambda s: s == "c1 msg 5 first", "c1 echo")
        pb.cmd("cancel c1")
        srv.wait_event("cancelled")
        time.sleep(0.2)
        assert not any(ln.startswith("c1 close") for ln in pb.lines()), pb.lines()

        # the channel is still good
        unary(pb, "u2", "Unary", "after")
        assert pb.close_of("u2") == (0, "")
        pb.quit()
    finally:
        srv.stop(None)


def test_grpc_client_connect_refused_names_the_address(ctx):
    port = harness.free_port()  # nothing listens there
    pb = Probe(ctx, port)
    unary(pb, "r1", "Unary", "x")
    code, msg = pb.close_of("r1")
    assert code == 14, (code, msg)
    assert msg == f"failed to connect to 127.0.0.1:{port}: Connection refused", msg
    st = pb.stats()
    assert st["connect_failures"] == 1, st
    pb.quit()


def test_grpc_client_server_restart(ctx):
    port = harness.free_port()
    a = child_server(ctx, port, "A")
    pb = Probe(ctx, port)
    pb.cmd(f"start s1 {SVC}Bidi", "send s1 ping")
    pb.expect(lambda s: s == "s1 msg 4 ping", "s1 echo")
    unary(pb, "w1", "Who", "x")
    assert pb.close_of("w1") == (0, "") and pb.msgs_of("w1") == ["A"]
    ctx.stop(a, sig=9)  # the control plane crashes
    code, msg = pb.close_of("s1")
    assert code == 14, (code, msg)
    assert f"127.0.0.1:{port}" in msg, msg
    child_server(ctx, port, "B")
    unary(pb, "w2", "Who", "x")
    assert pb.close_of("w2") == (0, ""), pb.lines()
    assert pb.msgs_of("w2") == ["B"]
    st = pb.stats()
    assert st["connects"] == 2 and st["disconnects"] == 1, st
    pb.quit()


def test_grpc_client_goaway_and_keepalive(ctx):
    port = harness.free_port()
    # the server sends GOAWAY after 1 s of connection age (in-flight calls get 30 s more) and
    # accepts PINGs every 50 ms without data
    srv = Server(port, options=[("grpc.max_connection_age_ms", 1000),
                                ("grpc.max_connection_age_grace_ms", 30000),
                                ("grpc.http2.min_ping_interval_without_data_ms", 50),
                                ("grpc.http2.max_ping_strikes", 0),
                                ("grpc.keepalive_permit_without_calls", 1)])
    try:
        pb = Probe(ctx, port, "--keepalive", "100", "--keepalive-timeout", "2000")
        pb.cmd(f"start g1 {SVC}Bidi", "send g1 one")
        pb.expect(lambda s: s == "g1 msg 3 one", "g1 first echo")
        deadline = time.monotonic() + 10
        while pb.stats()["goaways"] < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        st = pb.stats()
        assert st["goaways"] == 1, st
        assert st["pings_acked"] >= 3, st
        assert st["keepalive_timeouts"] == 0, st
        unary(pb, "g2", "Unary", "new")  # goes to a new connection
        assert pb.close_of("g2") == (0, ""), pb.lines()
        pb.cmd("send g1 two", "half g1")  # the old call finishes on the old connection
        assert pb.close_of("g1") == (0, ""), pb.lines()
        assert pb.msgs_of("g1") == ["one", "two"]
        st = pb.stats()
        assert st["connects"] == 2, st
        pb.quit()
    finally:
        srv.stop(None)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        s = Server(int(sys.argv[2]), sys.argv[3])
        s.srv.wait_for_termination()
    else:
        sys.exit("usage: test_grpc_client.py --serve PORT NAME")
