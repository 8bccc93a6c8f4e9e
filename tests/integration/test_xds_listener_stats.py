"""Stats of listeners that LDS removes, driven over ADS by pycp.PyCP (SotW).

A listener's blocks (listener.<addr>., http.<stat_prefix>., http.<stat_prefix>.rds.<name>., its
HTTP filters' blocks) belong to the config snapshots that hold the listener, and to the
connections counted in them: once the last of those is gone, /stats lists none of them (as
Envoy drops a removed listener's stats once nothing uses them).
- churn: 50 listeners with distinct names, addresses and stat_prefixes (each with a fault and a
  local rate limit filter, one request each) added and removed leave /stats as long as it was.
- a removed listener's keep-alive connection with a request in flight finishes it during the
  drain and closes; the blocks it holds then go (ASan sees any later write), and a block that
  another listener still uses (a shared stat_prefix) ends with its gauges at 0.
- a listener that stays but changes stat_prefix: its open connection follows the new config
  and still closes on the block it was counted in (its own reference), which then goes.
"""
import importlib
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import pycp  # noqa: E402
from pycp import PyCP, listener, route_config  # noqa: E402
from test_xds_drain import closed_at, h1_request, h1_response, keepalive, start, \
    static_cluster, stop_clean  # noqa: E402
from test_xds_lds_cds import all_stats, wait_for as wait_until  # noqa: E402

LRL = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
FAULT = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"


def load_filter_types():
    pycp.classes()
    for mod in ("envoy.extensions.filters.http.local_ratelimit.v3.local_rate_limit_pb2",
                "envoy.extensions.filters.http.fault.v3.fault_pb2"):
        importlib.import_module(mod)


def with_filters(d, rl_prefix):
    """<d> (a pycp listener) with a fault filter and a local rate limit before the router."""
    hcm = d["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"][:0] = [
        {"name": "envoy.filters.http.fault", "typed_config": {"@type": FAULT}},
        {"name": "envoy.filters.http.local_ratelimit", "typed_config": {
            "@type": LRL, "stat_prefix": rl_prefix,
            "token_bucket": {"max_tokens": 1000, "fill_interval": "1s"},
            "filter_enabled": {"default_value": {"numerator": 100}}}}]
    return d


def stat_lines(ctx, px):
    return ctx.curl(f"http://127.0.0.1:{px.admin}/stats").body.decode().splitlines()


def lines_with(ctx, px, prefixes):
    return [ln for ln in stat_lines(ctx, px) if ln.startswith(tuple(prefixes))]


def listener_prefix(port):
    return f"listener.127.0.0.1_{port}."


def setup(cp, up):
    cp.set("cds", {"c1": static_cluster("c1", up.port)})
    cp.set("rds", {"r1": route_config("r1", [("/", "c1")])})


def test_xds_removed_listener_stats_are_freed(ctx):
    load_filter_types()
    up = ctx.upstream(name="a")
    p0 = harness.free_port()
    cp = PyCP()
    try:
        setup(cp, up)
        l0 = listener("l0", p0, "r1", stat_prefix="l0")
        cp.set("lds", {"l0": l0})
        px = start(ctx, cp)
        harness.wait_port(p0)
        assert ctx.curl(f"http://127.0.0.1:{p0}/", timeout=10).status == 200
        wait_until("l0's connections closed", lambda: all_stats(ctx, px).get(
            "http.l0.downstream_cx_active") == 0)
        l0_cx = all_stats(ctx, px)[listener_prefix(p0) + "downstream_cx_total"]

        gone = []

        def churn(first, n):
            for i in range(first, first + n):
                port = harness.free_port()
                d = with_filters(listener(f"x{i}", port, "r1", stat_prefix=f"x{i}"), f"rl{i}")
                v = cp.set("lds", {"l0": l0, f"x{i}": d})
                cp.wait_ack("lds", v)
                harness.wait_port(port)
                r = ctx.curl(f"http://127.0.0.1:{port}/", timeout=10)
                assert r.status == 200, r
                gone.extend([listener_prefix(port), f"http.x{i}.", f"rl{i}."])
                if i == first:   # the blocks are there while the listener is
                    st = all_stats(ctx, px)
                    assert st[listener_prefix(port) + "downstream_cx_total"] >= 1, st
                    assert st[f"http.x{i}.downstream_rq_2xx"] == 1, st
                    assert st[f"http.x{i}.rds.r1.update_attempt"] >= 0, st
                    assert st[f"http.x{i}.fault.aborts_injected"] == 0, st
                    assert st[f"rl{i}.http_local_rate_limit.ok"] == 1, st
            v = cp.set("lds", {"l0": l0})
            cp.wait_ack("lds", v)

        churn(0, 3)   # warm-up: interned suffixes, allocator pools
        wait_until("the warm-up listeners' stats gone",
                   lambda: not lines_with(ctx, px, gone), timeout=10)
        base = len(stat_lines(ctx, px))
        churn(3, 50)
        wait_until("the churned listeners' stats gone",
                   lambda: not lines_with(ctx, px, gone), timeout=10)
        after = len(stat_lines(ctx, px))
        assert after == base, f"/stats had {base} lines, {after} after 50 listeners came and went"
        st = all_stats(ctx, px)
        assert st["listener_manager.listener_removed"] >= 53, st
        assert st[listener_prefix(p0) + "downstream_cx_total"] == l0_cx, "l0 kept its count"
        assert st["http.l0.downstream_cx_active"] == 0, st
        assert ctx.curl(f"http://127.0.0.1:{p0}/", timeout=10).status == 200
        print(f"churn: /stats {base} -> {after} lines")
        stop_clean(ctx, px)
    finally:
        cp.stop()


def test_xds_removed_listener_connection_finishes_then_its_stats_go(ctx):
    up = ctx.upstream(name="a")
    pa, pb, pc = harness.free_port(), harness.free_port(), harness.free_port()
    cp = PyCP()
    busy = idle = None
    try:
        setup(cp, up)
        la = listener("la", pa, "r1", stat_prefix="shared")
        cp.set("lds", {"la": la, "lb": listener("lb", pb, "r1", stat_prefix="shared"),
                       "lc": listener("lc", pc, "r1", stat_prefix="gone")})
        px = start(ctx, cp, "--drain-time-s", "10")
        for p in (pa, pb, pc):
            harness.wait_port(p)
        busy = keepalive(pc)                      # one request done, then one in flight
        h1_request(busy, pc, "x-upstream-delay-ms: 1500\r\n")
        idle = keepalive(pb)                      # idle, on a block listener la keeps
        wait_until("the delayed request in flight",
                   lambda: all_stats(ctx, px).get("http.gone.downstream_rq_active") == 1)

        v = cp.set("lds", {"la": la})
        cp.wait_ack("lds", v)
        # the connection still counts where it was accepted: its blocks are listed meanwhile
        st = all_stats(ctx, px)
        assert st.get(listener_prefix(pc) + "downstream_cx_active") == 1, st
        assert st.get("http.gone.downstream_cx_active") == 1, st

        busy.settimeout(10)
        status, hdrs = h1_response(busy)           # served on the removed listener's config
        assert status == 200, (status, hdrs)
        assert hdrs.get("connection") == "close", hdrs
        assert closed_at(busy, time.monotonic() + 5) is not None, "still open"
        assert closed_at(idle, time.monotonic() + 5) is not None, "idle: closed at once"

        wait_until("the removed listeners' stats gone", lambda: not lines_with(
            ctx, px, [listener_prefix(pc), listener_prefix(pb), "http.gone."]), timeout=10)
        st = all_stats(ctx, px)
        # la still uses http.shared.: lb's connections were counted there and closed
        assert st["http.shared.downstream_cx_total"] >= 1, st
        assert st["http.shared.downstream_cx_active"] == 0, st
        assert st["http.shared.downstream_cx_http1_active"] == 0, st
        assert st[listener_prefix(pa) + "downstream_cx_active"] == 0, st
        assert ctx.curl(f"http://127.0.0.1:{pa}/", timeout=10).status == 200
        stop_clean(ctx, px)
    finally:
        for s in (busy, idle):
            if s:
                s.close()
        cp.stop()


def test_xds_listener_stat_prefix_change_keeps_connection_counted_where_it_was(ctx):
    up = ctx.upstream(name="a")
    port = harness.free_port()
    cp = PyCP()
    s = None
    try:
        setup(cp, up)
        cp.set("lds", {"l1": listener("l1", port, "r1", stat_prefix="p1")})
        px = start(ctx, cp)
        harness.wait_port(port)
        s = keepalive(port)
        v = cp.set("lds", {"l1": listener("l1", port, "r1", stat_prefix="p2")})
        cp.wait_ack("lds", v)
        st = all_stats(ctx, px)
        assert st.get("http.p1.downstream_cx_active") == 1, "its connection still holds it"
        assert st.get("http.p2.downstream_cx_active") == 0, st

        h1_request(s, port)                       # the same connection, the new config
        assert h1_response(s)[0] == 200
        st = all_stats(ctx, px)
        assert st["http.p2.downstream_rq_2xx"] == 1, st
        assert st["http.p1.downstream_rq_2xx"] == 1, st
        assert st[listener_prefix(port) + "downstream_cx_active"] == 1, st

        s.close()
        s = None
        wait_until("http.p1. gone with its last connection",
                   lambda: not lines_with(ctx, px, ["http.p1."]), timeout=10)
        st = all_stats(ctx, px)
        assert st[listener_prefix(port) + "downstream_cx_active"] == 0, st
        assert st["http.p2.downstream_cx_active"] == 0, st
        stop_clean(ctx, px)
    finally:
        if s:
            s.close()
        cp.stop()
