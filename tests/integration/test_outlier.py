"""Outlier detection (Cluster.outlier_detection) end to end: a cluster of two remora-upstream
processes behind remora; one host is made to fail (HTTP 503s, or stopped: connect failures) and
the test watches it get ejected (no traffic, /clusters, stats), then come back after
base_ejection_time; panic mode when every host is ejected; config errors.

Making one *host* fail with a header that goes to both: x-upstream-fail-first counts per process,
so the test first spends host A's failures by calling A directly; through remora, host B then
fails its first N requests while A succeeds."""
import http.client
import json
import os
import time
import uuid

import remora_cfg
from harness import TestFailure

ROUTE = """
              - match: { prefix: "/" }
                route: { cluster: backend }"""


def od_cluster(ports, od_yaml, extra=""):
    """Cluster 'backend' over <ports> with outlier_detection given as YAML lines (6 spaces)."""
    return remora_cfg.cluster("backend", ports, extra="\n    outlier_detection:" + od_yaml + extra)


class Client:
    """Keep-alive HTTP/1.1 client to remora; returns (status, x-upstream-name or None)."""

    def __init__(self, port):
        self.port = port
        self.conn = None

    def get(self, headers=None):
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                self.conn.request("GET", "/", headers=headers or {})
                r = self.conn.getresponse()
                r.read()
                if r.getheader("connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return r.status, r.getheader("x-upstream-name")
            except (ConnectionError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise TestFailure("unreachable")

    def close(self):
        if self.conn:
            self.conn.close()


def stats(ctx, px, prefix="cluster.backend."):
    r = ctx.curl(f"http://127.0.0.1:{px.admin}/stats")
    out = {}
    for line in r.body.decode().splitlines():
        k, _, v = line.partition(": ")
        if k.startswith(prefix) and v.lstrip("-").isdigit():
            out[k[len(prefix):]] = int(v)
    return out


def clusters(ctx, px):
    return ctx.curl(f"http://127.0.0.1:{px.admin}/clusters").body.decode()


def host_line(text, port, key):
    """The value of backend::127.0.0.1:<port>::<key>."""
    prefix = f"backend::127.0.0.1:{port}::{key}::"
    for line in text.splitlines():
        if line.startswith(prefix):
            return line[len(prefix):]
    raise TestFailure(f"no {prefix} in /clusters:\n{text}")


def wait_until(what, fn, timeout=8.0, step=0.0):
    """Call fn() until it returns a true value; raise after <timeout> seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        if step:
            time.sleep(step)
    raise TestFailure(f"timed out after {timeout}s waiting for {what}")


def spend_failures(ctx, up, n, key):
    """Use up host <up>'s first <n> failures for <key> by calling it directly."""
    cl = Client(up.port)
    for _ in range(n):
        cl.get({"x-upstream-fail-first": str(n), "x-upstream-key": key})
    assert cl.get({"x-upstream-fail-first": str(n), "x-upstream-key": key})[0] == 200
    cl.close()


def drive_until(ctx, px, cl, what, headers=None, timeout=8.0):
    """Send requests until one host is ejected; returns the (status, name) pairs seen."""
    seen = []

    def step():
        seen.append(cl.get(headers))
        return stats(ctx, px).get("outlier_detection.ejections_active") == 1
    wait_until(what, step, timeout=timeout)
    return seen


def stop_remora(ctx, px):
    assert ctx.stop(px) == 0, px.output()[-3000:]


FAST = """
      interval: 0.5s
      base_ejection_time: 1s"""


def test_outlier_consecutive_5xx_ejects_and_returns(ctx):
    a, b = ctx.upstream(name="a"), ctx.upstream(name="b")
    od = FAST + """
      consecutive_5xx: 3
      max_ejection_percent: 50"""
    px = ctx.remora(remora_cfg.bootstrap(ROUTE, [od_cluster([a.port, b.port], od)]))
    key = "od5xx-" + uuid.uuid4().hex
    fail = {"x-upstream-fail-first": "5", "x-upstream-key": key}
    spend_failures(ctx, a, 5, key)
    cl = Client(px.port)
    seen = []
    while len([s for s, n in seen if n == "b" and s == 503]) < 3:
        seen.append(cl.get(fail))
        assert len(seen) < 20, seen
    t_eject = time.monotonic()
    assert all(s == 200 for s, n in seen if n == "a"), seen
    # ejected: every request goes to a
    after = [cl.get(fail) for _ in range(20)]
    assert after == [(200, "a")] * 20, after
    st = stats(ctx, px)
    assert st["outlier_detection.ejections_enforced_total"] == 1, st
    assert st["outlier_detection.ejections_enforced_consecutive_5xx"] == 1, st
    assert st["outlier_detection.ejections_detected_consecutive_5xx"] == 1, st
    assert st["outlier_detection.ejections_active"] == 1, st
    assert st["membership_healthy"] == 1 and st["membership_total"] == 2, st
    text = clusters(ctx, px)
    assert host_line(text, b.port, "health_flags") == "/failed_outlier_check", text
    assert host_line(text, a.port, "health_flags") == "healthy", text
    assert "backend::outlier::success_rate_average::-1" in text, text
    js = json.loads(ctx.curl(f"http://127.0.0.1:{px.admin}/clusters?format=json").body)
    hs = {h["address"]["socket_address"]["port_value"]: h["health_status"]
          for h in js["cluster_statuses"][0]["host_statuses"]}
    assert hs[b.port].get("failed_outlier_check") is True, hs
    assert "failed_outlier_check" not in hs[a.port], hs
    # back after base_ejection_time (checked on the 0.5 s interval); its 2 remaining failures
    # (counters reset on un-ejection) stay under consecutive_5xx
    wait_until("host b to get traffic again", lambda: cl.get(fail)[1] == "b", timeout=6)
    assert time.monotonic() - t_eject >= 0.9, "un-ejected before base_ejection_time"
    got = [cl.get(fail) for _ in range(20)]
    assert {n for _, n in got} == {"a", "b"}, got
    st = stats(ctx, px)
    assert st["outlier_detection.ejections_active"] == 0, st
    assert st["outlier_detection.ejections_enforced_total"] == 1, st
    assert st["membership_healthy"] == 2, st
    assert host_line(clusters(ctx, px), b.port, "health_flags") == "healthy"
    cl.close()
    stop_remora(ctx, px)


def test_outlier_connect_failure_host_stopped_then_restarted(ctx):
    a, b = ctx.upstream(name="a"), ctx.upstream(name="b")
    od = FAST + """
      consecutive_5xx: 3
      max_ejection_percent: 50"""
    px = ctx.remora(remora_cfg.bootstrap(ROUTE, [od_cluster([a.port, b.port], od)]))
    cl = Client(px.port)
    assert {cl.get()[1] for _ in range(4)} == {"a", "b"}
    ctx.stop(b)
    # connect failures are local-origin; not split, they count as 503s (5xx and gateway)
    codes = drive_until(ctx, px, cl, "host b ejected")
    assert all(s == 503 for s, n in codes if n is None), codes
    assert [cl.get() for _ in range(10)] == [(200, "a")] * 10
    st = stats(ctx, px)
    assert st["outlier_detection.ejections_enforced_consecutive_5xx"] == 1, st
    assert st["upstream_cx_connect_fail"] >= 1, st
    assert host_line(clusters(ctx, px), b.port, "health_flags") == "/failed_outlier_check"
    ctx.upstream(name="b", port=b.port)  # the same host comes back
    wait_until("restarted host b to get traffic", lambda: cl.get()[1] == "b", timeout=6)
    assert stats(ctx, px)["outlier_detection.ejections_active"] == 0
    cl.close()
    stop_remora(ctx, px)


def test_outlier_split_local_origin(ctx):
    a, b = ctx.upstream(name="a"), ctx.upstream(name="b")
    od = FAST + """
      split_external_local_origin_errors: true
      consecutive_local_origin_failure: 2
      consecutive_5xx: 100
      max_ejection_percent: 50"""
    px = ctx.remora(remora_cfg.bootstrap(ROUTE, [od_cluster([a.port, b.port], od)]))
    cl = Client(px.port)
    # HTTP 503s are external: with the split they never reach the local-origin detector
    for _ in range(10):
        assert cl.get({"x-upstream-status": "503"})[0] == 503
    st = stats(ctx, px)
    assert st["outlier_detection.ejections_active"] == 0, st
    ctx.stop(b)
    drive_until(ctx, px, cl, "host b ejected for local-origin failures")
    st = stats(ctx, px)
    assert st["outlier_detection.ejections_enforced_consecutive_local_origin_failure"] == 1, st
    assert st["outlier_detection.ejections_detected_consecutive_5xx"] == 0, st
    assert [cl.get() for _ in range(6)] == [(200, "a")] * 6
    cl.close()
    stop_remora(ctx, px)


def test_outlier_panic_when_all_hosts_ejected(ctx):
    a, b = ctx.upstream(name="a"), ctx.upstream(name="b")
    od = """
      interval: 0.5s
      base_ejection_time: 30s
      consecutive_5xx: 2
      max_ejection_percent: 100"""
    px = ctx.remora(remora_cfg.bootstrap(ROUTE, [od_cluster([a.port, b.port], od)]))
    cl = Client(px.port)
    for _ in range(4):
        assert cl.get({"x-upstream-status": "503"})[0] == 503
    st = stats(ctx, px)
    assert st["outlier_detection.ejections_active"] == 2, st
    assert st["membership_healthy"] == 0, st
    text = clusters(ctx, px)
    for up in (a, b):
        assert host_line(text, up.port, "health_flags") == "/failed_outlier_check", text
    # no healthy host (0% < healthy_panic_threshold 50%): the load balancer uses all of them
    got = [cl.get() for _ in range(10)]
    assert {n for _, n in got} == {"a", "b"} and {s for s, _ in got} == {200}, got
    assert stats(ctx, px)["lb_healthy_panic"] >= 10
    cl.close()
    stop_remora(ctx, px)


def test_outlier_max_ejection_percent_and_always_eject_one_host(ctx):
    a, b = ctx.upstream(name="a"), ctx.upstream(name="b")
    # default max_ejection_percent (10%): ejecting 1 of 2 hosts (50%) overflows
    od = FAST + """
      consecutive_5xx: 2"""
    px = ctx.remora(remora_cfg.bootstrap(ROUTE, [od_cluster([a.port, b.port], od)]))
    cl = Client(px.port)
    for _ in range(8):
        cl.get({"x-upstream-status": "503"})
    st = stats(ctx, px)
    assert st["outlier_detection.ejections_active"] == 0, st
    assert st["outlier_detection.ejections_detected_consecutive_5xx"] >= 2, st
    assert st["outlier_detection.ejections_overflow"] >= 2, st
    cl.close()
    stop_remora(ctx, px)
    # always_eject_one_host: one host goes, the second is still over the limit
    px = ctx.remora(remora_cfg.bootstrap(ROUTE, [od_cluster([a.port, b.port], od + """
      always_eject_one_host: true""")]), name="remora2")
    cl = Client(px.port)
    for _ in range(8):
        cl.get({"x-upstream-status": "503"})
    st = stats(ctx, px)
    assert st["outlier_detection.ejections_active"] == 1, st
    assert st["outlier_detection.ejections_enforced_total"] == 1, st
    assert st["outlier_detection.ejections_overflow"] >= 1, st
    cl.close()
    stop_remora(ctx, px)


FP = FAST.replace("1s", "30s") + """
      consecutive_5xx: 1000000
      consecutive_gateway_failure: 1000000
      max_ejection_percent: 50"""


def run_interval(ctx, od_extra, stat):
    a, b = ctx.upstream(name="a"), ctx.upstream(name="b")
    px = ctx.remora(remora_cfg.bootstrap(ROUTE, [od_cluster([a.port, b.port], FP + od_extra)]))
    key = "odint-" + uuid.uuid4().hex
    # host a: spend its failures first (it answers 200 afterwards); host b fails throughout
    n = 2000
    spend_failures(ctx, a, n, key)
    hdr = {"x-upstream-fail-first": str(n), "x-upstream-key": key}
    cl = Client(px.port)
    sent = [0]

    def ejected():
        for _ in range(10):
            cl.get(hdr)
        sent[0] += 10
        time.sleep(0.05)  # spread requests over intervals
        if sent[0] >= n:
            raise TestFailure("host b ran out of failures before the interval detector fired")
        return stats(ctx, px).get("outlier_detection.ejections_active") == 1
    wait_until("interval detector ejection", ejected, timeout=8)
    st = stats(ctx, px)
    assert st["outlier_detection." + stat] == 1, st
    assert host_line(clusters(ctx, px), b.port, "health_flags") == "/failed_outlier_check"
    # a keeps a measured success rate (interval by interval); b, ejected, has none
    def rates():
        for _ in range(10):
            cl.get(hdr)
        text = clusters(ctx, px)
        return host_line(text, a.port, "success_rate") == "100" and \
            host_line(text, b.port, "success_rate") == "-1"
    wait_until("success rates in /clusters", rates, timeout=5)
    cl.close()
    stop_remora(ctx, px)
    return st


def test_outlier_failure_percentage(ctx):
    st = run_interval(ctx, """
      enforcing_failure_percentage: 100
      failure_percentage_threshold: 50
      failure_percentage_minimum_hosts: 2
      failure_percentage_request_volume: 5
      enforcing_success_rate: 0""", "ejections_enforced_failure_percentage")
    assert st["outlier_detection.ejections_detected_failure_percentage"] >= 1, st


def test_outlier_success_rate(ctx):
    # two hosts at 100% and 0%: mean 50, stdev 50; factor 0.5 puts the threshold at 25
    st = run_interval(ctx, """
      success_rate_minimum_hosts: 2
      success_rate_request_volume: 5
      success_rate_stdev_factor: 500""", "ejections_enforced_success_rate")
    assert st["outlier_detection.ejections_detected_success_rate"] >= 1, st


def validate(ctx, od_yaml):
    path = os.path.join(ctx.tmp, "od.yaml")
    text = remora_cfg.bootstrap(ROUTE, [od_cluster([1], od_yaml)])
    with open(path, "w") as f:
        f.write(text.replace("{admin}", "1").replace("{port0}", "2"))
    r = ctx.run([ctx.bin("remora"), "--mode", "validate", "-c", path], timeout=20)
    return r.returncode, (r.stdout + r.stderr).decode()


def test_outlier_config_errors(ctx):
    rc, out = validate(ctx, FAST)
    assert rc == 0, out
    rc, out = validate(ctx, FAST + """
      monitors:
      - name: m
        typed_config:
          "@type": type.googleapis.com/google.protobuf.Empty""")
    assert rc == 1 and "static_resources.clusters[0].outlier_detection.monitors: not supported " \
        "by remora" in out, out
    rc, out = validate(ctx, """
      base_ejection_time: 10s
      max_ejection_time: 5s""")
    assert rc == 1 and "static_resources.clusters[0].outlier_detection.max_ejection_time" in out, out
    rc, out = validate(ctx, """
      max_ejection_percent: 101""")
    assert rc == 1 and "outlier_detection.max_ejection_percent: must be at most 100" in out, out
    rc, out = validate(ctx, """
      interval: 0s""")
    assert rc == 1 and "outlier_detection.interval: must be greater than 0" in out, out
