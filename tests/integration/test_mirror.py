"""Request mirroring (RequestMirrorPolicy) end to end: remora in front of the bundled upstream
(the primary cluster) and a recording HTTP/1.1 server in this process (the mirror cluster)."""
import http.server
import queue
import threading
import time

import remora_cfg as cfg
from harness import TestFailure, free_port, admin_stats as stats


class Recorder:
    """An HTTP/1.1 server on a free loopback port that records every request (method, path,
    headers, body) and answers 200 after `delay` seconds."""

    def __init__(self, delay=0.0):
        self.q = queue.Queue()
        self.delay = delay
        rec = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle_one(self):
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n) if n else b""
                rec.q.put({"method": self.command, "path": self.path, "body": body,
                           "headers": {k.lower(): v for k, v in self.headers.items()}})
                if rec.delay:
                    time.sleep(rec.delay)
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_GET = do_POST = do_PUT = handle_one

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        self.port = self.srv.server_address[1]
        self.t = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.t.start()

    def get(self, timeout=5.0):
        try:
            return self.q.get(timeout=timeout)
        except queue.Empty:
            raise TestFailure("the mirror received nothing") from None

    def none_within(self, seconds):
        try:
            got = self.q.get(timeout=seconds)
        except queue.Empty:
            return
        raise TestFailure(f"the mirror received an unexpected request: {got['method']} {got['path']}")

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def route(prefix, extra="", cluster="primary"):
    return """
              - match: { prefix: "%s" }
                route:
                  cluster: %s%s""" % (prefix, cluster, extra)


def stop_clean(ctx, px):
    rc = ctx.stop(px)
    assert rc == 0, f"remora exited {rc}:\n{px.output()[-3000:]}"


def test_mirror_sends_a_copy_and_never_delays_the_response(ctx):
    up = ctx.upstream(name="primary")
    mir = Recorder()
    try:
        y = cfg.bootstrap(
            route("/m", """
                  timeout: 5s
                  request_mirror_policies: [{ cluster: mirror }]""") + route("/"),
            [cfg.cluster("primary", [up.port]), cfg.cluster("mirror", [mir.port])])
        px = ctx.remora(y)
        base = f"http://127.0.0.1:{px.port}"
        # a GET: the copy goes out at once, to host-shadow (before the port, as Envoy)
        r = ctx.curl(base + "/m/get?q=1", headers={"host": "app.local:8080", "x-trace": "t1"})
        assert r.status == 200 and r.headers.get("x-upstream-name") == "primary", r
        got = mir.get()
        assert got["method"] == "GET" and got["path"] == "/m/get?q=1", got
        assert got["headers"]["host"] == "app.local-shadow:8080", got
        assert got["headers"]["x-trace"] == "t1", got
        # a POST with a body: the copy carries the whole body once the request is complete
        body = bytes(range(256)) * 400  # 100 KiB
        r = ctx.curl(base + "/m/post", data=body, method="POST",
                     headers={"x-upstream-echo": "1", "content-type": "application/octet-stream"})
        assert r.status == 200 and r.body == body, (r.status, len(r.body))
        got = mir.get()
        assert got["method"] == "POST" and got["body"] == body, (got["method"], len(got["body"]))
        assert got["headers"]["host"] == f"127.0.0.1:{px.port}".replace(":", "-shadow:", 1), got
        # a route without a policy mirrors nothing
        r = ctx.curl(base + "/other")
        assert r.status == 200, r
        mir.none_within(0.5)
        # fire and forget: a mirror that takes 3 s does not hold the client's response
        mir.delay = 3.0
        t0 = time.monotonic()
        r = ctx.curl(base + "/m/slow")
        took = time.monotonic() - t0
        assert r.status == 200 and took < 1.5, (r.status, took)
        assert mir.get()["path"] == "/m/slow"
        s = stats(ctx, px)
        assert s["cluster.mirror.upstream_rq_total"] == 3, s
        assert s["cluster.primary.upstream_rq_total"] == 4, s
        # the slow mirror's response is still out: it counts once it completes
        deadline = time.monotonic() + 6
        while stats(ctx, px)["cluster.mirror.upstream_rq_2xx"] < 3:
            if time.monotonic() > deadline:
                raise TestFailure(f"mirror responses not counted: {stats(ctx, px)}")
            time.sleep(0.1)
        stop_clean(ctx, px)
    finally:
        mir.close()


def test_mirror_policy_choices_and_limits(ctx):
    up = ctx.upstream(name="primary")
    mir = Recorder()
    dead = free_port()  # nothing listens there
    try:
        y = cfg.bootstrap(
            route("/hdr", """
                  request_mirror_policies: [{ cluster_header: x-mirror-cluster }]""") +
            route("/never", """
                  request_mirror_policies:
                  - cluster: mirror
                    runtime_fraction: { default_value: { numerator: 0 } }""") +
            route("/nosuffix", """
                  request_mirror_policies:
                  - { cluster: mirror, disable_shadow_host_suffix_append: true }""") +
            route("/dead", """
                  request_mirror_policies: [{ cluster: dead }]""") +
            route("/big", """
                  request_mirror_policies: [{ cluster: mirror }]""") +
            route("/"),
            [cfg.cluster("primary", [up.port]), cfg.cluster("mirror", [mir.port]),
             cfg.cluster("dead", [dead])],
            vhost_extra="""
              per_request_buffer_limit_bytes: 65536
              request_mirror_policies: [{ cluster: mirror }]""")
        px = ctx.remora(y)
        base = f"http://127.0.0.1:{px.port}"
        # cluster_header: the header names the cluster; absent or unknown: no copy
        r = ctx.curl(base + "/hdr/1", headers={"x-mirror-cluster": "mirror"})
        assert r.status == 200, r
        assert mir.get()["path"] == "/hdr/1"
        for h in ({}, {"x-mirror-cluster": "no-such-cluster"}):
            r = ctx.curl(base + "/hdr/2", headers=h)
            assert r.status == 200, r
        mir.none_within(0.5)
        # runtime_fraction 0 %: never
        for _ in range(10):
            assert ctx.curl(base + "/never").status == 200
        mir.none_within(0.5)
        # disable_shadow_host_suffix_append
        r = ctx.curl(base + "/nosuffix", headers={"host": "app.local"})
        assert r.status == 200, r
        assert mir.get()["headers"]["host"] == "app.local"
        # a route without its own policies takes its virtual host's
        r = ctx.curl(base + "/inherited", headers={"host": "svc"})
        assert r.status == 200, r
        got = mir.get()
        assert got["path"] == "/inherited" and got["headers"]["host"] == "svc-shadow", got
        # a mirror cluster that refuses connections changes nothing for the client
        r = ctx.curl(base + "/dead")
        assert r.status == 200 and r.headers.get("x-upstream-name") == "primary", r
        deadline = time.monotonic() + 5
        while stats(ctx, px).get("cluster.dead.upstream_cx_connect_fail", 0) < 1:
            if time.monotonic() > deadline:
                raise TestFailure(f"no connect failure counted: {stats(ctx, px)}")
            time.sleep(0.1)
        # a body over per_request_buffer_limit_bytes: the primary gets it all, no copy is sent
        body = b"x" * 200000
        r = ctx.curl(base + "/big", data=body, method="POST", headers={"x-upstream-echo": "1"})
        assert r.status == 200 and r.body == body, (r.status, len(r.body))
        mir.none_within(0.5)
        s = stats(ctx, px)
        assert s["cluster.primary.retry_or_shadow_abandoned"] == 1, s
        # a body within the limit is mirrored
        r = ctx.curl(base + "/big", data=b"y" * 1000, method="POST")
        assert r.status == 200, r
        assert mir.get()["body"] == b"y" * 1000
        stop_clean(ctx, px)
    finally:
        mir.close()


def test_mirror_in_flight_at_shutdown(ctx):
    """Shadows still waiting for their response when remora stops are reset and freed (ASan
    would report a leak or a use after free), and the exit is clean."""
    up = ctx.upstream(name="primary")
    mir = Recorder(delay=8.0)
    try:
        y = cfg.bootstrap(route("/", """
                  request_mirror_policies: [{ cluster: mirror }]"""),
                          [cfg.cluster("primary", [up.port]), cfg.cluster("mirror", [mir.port])])
        px = ctx.remora(y)
        base = f"http://127.0.0.1:{px.port}"
        for i in range(5):
            r = ctx.curl(base + f"/x{i}", data=b"z" * 5000, method="POST")
            assert r.status == 200, r
        for _ in range(5):
            mir.get()
        s = stats(ctx, px)
        assert s["cluster.mirror.upstream_rq_active"] == 5, s
        t0 = time.monotonic()
        stop_clean(ctx, px)
        assert time.monotonic() - t0 < 5, "shadows held the exit"
    finally:
        mir.close()
