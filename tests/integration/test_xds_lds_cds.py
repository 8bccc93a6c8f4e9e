"""LDS, RDS, CDS and EDS over one ADS stream (xds/xds_manager.c) from build/remora-xds, in both
protocol variants (state of the world and Delta).

Shown here: a bootstrap with nothing but the ADS cluster serves a listener, route configuration,
cluster and assignment that all arrive over xDS, and /ready waits for them; a route change
applies to the next request of an existing keep-alive connection (as Envoy: routes are looked
up per request) while the connection stays open; /config_dump shows every dynamic resource
with the version remora-xds gave it; a listener whose RouteConfiguration is missing warms (not
bound, counted in total_listeners_warming) and starts serving when it arrives; a cluster whose
definition changes under an h2load run (a new object, a new load-balancing policy) and whose
endpoints move loses no request."""
import http.client
import json
import os
import re
import time

import harness
from test_dns_cluster import stats
from test_xds_server import Xds

T = "type.googleapis.com/"
HCM = T + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = T + "envoy.extensions.filters.http.router.v3.Router"
H2_OPTS = """
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }"""


def bootstrap(xds_port, api="GRPC"):
    return f"""
admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{admin}} }} }} }}
node: {{ id: sidecar-lds-1, cluster: test }}
static_resources:
  clusters:
  - name: xds
    type: STATIC
    connect_timeout: 1s{H2_OPTS}
    load_assignment:
      cluster_name: xds
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {xds_port} }} }} }}
dynamic_resources:
  ads_config:
    api_type: {api}
    transport_api_version: V3
    grpc_services: [ {{ envoy_grpc: {{ cluster_name: xds }} }} ]
  cds_config: {{ ads: {{}}, resource_api_version: V3 }}
  lds_config: {{ ads: {{}}, resource_api_version: V3 }}
"""


def source(api):
    """A ConfigSource: the ADS stream, or api_config_source (api: GRPC / DELTA_GRPC)."""
    if api is None:
        return "{ ads: {}, resource_api_version: V3 }"
    return ("{ resource_api_version: V3, api_config_source: { api_type: %s, "
            "transport_api_version: V3, grpc_services: [ { envoy_grpc: { cluster_name: xds } } ] "
            "} }" % api)


def listener(name, port, rds, rds_api=None):
    return f"""
- "@type": {T}envoy.config.listener.v3.Listener
  name: {name}
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": {HCM}
        stat_prefix: {name}
        rds: {{ route_config_name: {rds}, config_source: {source(rds_api)} }}
        http_filters:
        - name: envoy.filters.http.router
          typed_config: {{ "@type": {ROUTER} }}"""


def route(name, cluster):
    return f"""
- "@type": {T}envoy.config.route.v3.RouteConfiguration
  name: {name}
  virtual_hosts:
  - name: all
    domains: ["*"]
    routes:
    - match: {{ prefix: / }}
      route: {{ cluster: {cluster} }}"""


def cluster(name, lb="ROUND_ROBIN", eds_api=None):
    return f"""
- "@type": {T}envoy.config.cluster.v3.Cluster
  name: {name}
  type: EDS
  connect_timeout: 1s
  lb_policy: {lb}
  eds_cluster_config: {{ eds_config: {source(eds_api)} }}"""


def cla(name, *ports):
    eps = "".join(f"""
    - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {p} }} }} }}"""
                  for p in ports)
    return f"""
- "@type": {T}envoy.config.endpoint.v3.ClusterLoadAssignment
  cluster_name: {name}
  endpoints:
  - lb_endpoints:{eps}"""


def put(d, fname, *resources):
    tmp = os.path.join(d, "." + fname)
    with open(tmp, "w") as f:
        f.write("resources:" + "".join(resources) + "\n")
    os.rename(tmp, os.path.join(d, fname))


def all_stats(ctx, px):
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
            raise harness.TestFailure(f"timed out waiting for {what}")
        time.sleep(0.05)


def upstream_name(ctx, port):
    r = ctx.curl(f"http://127.0.0.1:{port}/", timeout=5)
    return r.headers.get("x-upstream-name") if r.status == 200 else None


def start(ctx, api):
    d = os.path.join(ctx.tmp, f"xds-{api}")
    os.makedirs(d)
    return d


def check_full_config(ctx, api):
    a = ctx.upstream(name="a")
    b = ctx.upstream(name="b")
    d = start(ctx, api)
    lport = harness.free_port()
    put(d, "l.yaml", listener("l1", lport, "r1"))
    put(d, "r.yaml", route("r1", "c1"))
    put(d, "c.yaml", cluster("c1"), cla("c1", a.port))
    xds = Xds(ctx, d)
    px = ctx.remora(bootstrap(xds.port, api), wait=False)
    harness.wait_port(px.admin, proc=px.p)
    wait_for("/ready", lambda: ctx.curl(f"http://127.0.0.1:{px.admin}/ready").status == 200)
    assert upstream_name(ctx, lport) == "a"

    # a keep-alive connection follows the route change on its next request
    conn = http.client.HTTPConnection("127.0.0.1", lport, timeout=5)
    conn.request("GET", "/")
    r1 = conn.getresponse()
    r1.read()
    assert r1.status == 200 and r1.getheader("x-upstream-name") == "a"
    sock = conn.sock
    put(d, "c2.yaml", cluster("c2"), cla("c2", b.port))
    put(d, "r.yaml", route("r1", "c2"))
    wait_for("the route to c2", lambda: upstream_name(ctx, lport) == "b")
    conn.request("GET", "/")
    r2 = conn.getresponse()
    r2.read()
    assert conn.sock is sock, "the keep-alive connection was replaced"
    assert r2.status == 200 and r2.getheader("x-upstream-name") == "b", \
        "an existing connection kept the old routes"
    conn.close()

    # /config_dump: every dynamic resource with its version
    dump = json.loads(ctx.curl(f"http://127.0.0.1:{px.admin}/config_dump").body)
    by_type = {c["@type"].rsplit(".", 1)[1]: c for c in dump["configs"]}
    clusters = {c["cluster"]["name"]: c for c in by_type["ClustersConfigDump"]
                ["dynamic_active_clusters"]}
    assert set(clusters) == {"c1", "c2"}, clusters
    listeners = by_type["ListenersConfigDump"]["dynamic_listeners"]
    assert [lst["name"] for lst in listeners] == ["l1"]
    routes = by_type["RoutesConfigDump"]["dynamic_route_configs"]
    assert [r["route_config"]["name"] for r in routes] == ["r1"]
    assert routes[0]["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["cluster"] == "c2"
    versions = [clusters["c1"]["version_info"], clusters["c2"]["version_info"],
                listeners[0]["active_state"]["version_info"], routes[0]["version_info"]]
    for v, r in zip(versions, [clusters["c1"], clusters["c2"], listeners[0]["active_state"],
                               routes[0]]):
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", r["last_updated"]), r
    if api == "GRPC":  # SotW: the version_info of the response that last changed each one
        assert versions[0] == versions[2] != versions[1] == versions[3], versions
    else:  # Delta: per-resource versions, all different
        assert len(set(versions)) == 4, versions
    st = all_stats(ctx, px)
    assert st["cluster_manager.cds.update_success"] >= 2, st
    assert st["listener_manager.lds.update_success"] >= 1, st
    assert st["cluster_manager.cds.update_rejected"] == 0, st
    assert st["control_plane.connected_state"] == 1, st
    assert st["cluster_manager.active_clusters"] == 3, st  # xds, c1, c2
    assert st["listener_manager.total_listeners_active"] == 1, st


def test_full_config_sotw(ctx):
    check_full_config(ctx, "GRPC")


def test_full_config_delta(ctx):
    check_full_config(ctx, "DELTA_GRPC")


def test_listener_warms_until_its_routes(ctx):
    a = ctx.upstream(name="a")
    d = start(ctx, "warm")
    put(d, "c.yaml", cluster("c1"), cla("c1", a.port))
    l1, l2 = harness.free_port(), harness.free_port()
    put(d, "l.yaml", listener("l1", l1, "r1"), listener("l2", l2, "r2"))
    put(d, "r.yaml", route("r1", "c1"))
    xds = Xds(ctx, d)
    px = ctx.remora(bootstrap(xds.port, "DELTA_GRPC"), wait=False)
    harness.wait_port(px.admin, proc=px.p)
    wait_for("l1", lambda: upstream_name(ctx, l1) == "a")
    st = all_stats(ctx, px)
    assert st["listener_manager.total_listeners_warming"] == 1, st
    assert st["listener_manager.total_listeners_active"] == 1, st
    assert ctx.curl(f"http://127.0.0.1:{l2}/", timeout=2).status == 0, "l2 serves before r2"
    assert ctx.curl(f"http://127.0.0.1:{px.admin}/ready").status == 503, "ready while warming"
    # /config_dump shows what warms: l2's warming_state, a cluster without its assignment
    put(d, "c9.yaml", cluster("c9"))
    wait_for("c9 warming", lambda: all_stats(ctx, px)["cluster_manager.warming_clusters"] == 1)
    dump = json.loads(ctx.curl(f"http://127.0.0.1:{px.admin}/config_dump").body)
    by_type = {c["@type"].rsplit(".", 1)[1]: c for c in dump["configs"]}
    ls = {x["name"]: x for x in by_type["ListenersConfigDump"]["dynamic_listeners"]}
    assert "active_state" in ls["l1"] and "warming_state" not in ls["l1"], ls["l1"]
    assert "active_state" not in ls["l2"], ls["l2"]
    assert ls["l2"]["warming_state"]["listener"]["name"] == "l2", ls["l2"]
    cd = by_type["ClustersConfigDump"]
    assert [c["cluster"]["name"] for c in cd["dynamic_warming_clusters"]] == ["c9"], cd
    assert "c9" not in {c["cluster"]["name"] for c in cd["dynamic_active_clusters"]}, cd
    put(d, "r.yaml", route("r1", "c1"), route("r2", "c1"))
    put(d, "c9.yaml", cluster("c9"), cla("c9", a.port))
    wait_for("l2", lambda: upstream_name(ctx, l2) == "a")
    wait_for("/ready", lambda: ctx.curl(f"http://127.0.0.1:{px.admin}/ready").status == 200)
    st = all_stats(ctx, px)
    assert st["listener_manager.total_listeners_warming"] == 0, st
    assert st["listener_manager.total_listeners_active"] == 2, st


def one_route(ctx, name, api="GRPC"):
    """Upstreams a and b; remora-xds serving listener l1 -> r1 -> EDS cluster c1 -> a; remora on
    it, ready.  Returns (a, b, d, lport, xds, px)."""
    a, b = ctx.upstream(name="a"), ctx.upstream(name="b")
    d = start(ctx, name)
    lport = harness.free_port()
    put(d, "l.yaml", listener("l1", lport, "r1"), route("r1", "c1"))
    put(d, "c.yaml", cluster("c1"), cla("c1", a.port))
    xds = Xds(ctx, d)
    px = ctx.remora(bootstrap(xds.port, api), wait=False)
    harness.wait_port(px.admin, proc=px.p)
    wait_for("/ready", lambda: ctx.curl(f"http://127.0.0.1:{px.admin}/ready").status == 200)
    return a, b, d, lport, xds, px


def test_cluster_changes_under_load(ctx):
    a, b, d, lport, xds, px = one_route(ctx, "load")
    assert upstream_name(ctx, lport) == "a"
    load = ctx.spawn(["h2load", "-c", "4", "-m", "8", "-D", "4", "--h1",
                      f"http://127.0.0.1:{lport}/"], "h2load")
    steps = [(cluster("c1", "RANDOM"), cla("c1", a.port, b.port)),
             (cluster("c1", "LEAST_REQUEST"), cla("c1", b.port)),
             (cluster("c1", "ROUND_ROBIN"), cla("c1", a.port))]
    for i in range(6):
        time.sleep(0.4)
        put(d, "c.yaml", *steps[i % 3])
    load.p.wait(30)
    out = load.output()
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored", out)
    assert m, out
    assert int(m.group(4)) > 1000 and int(m.group(5)) == 0 and int(m.group(6)) == 0, out
    assert "status codes: " in out and re.search(r"status codes: \d+ 2xx, 0 3xx, 0 4xx, 0 5xx",
                                                 out), out
    st = all_stats(ctx, px)
    assert st["cluster_manager.cluster_modified"] >= 6, st
    assert stats(ctx, px, "c1")["upstream_rq_5xx"] == 0


def test_run_xds_example(ctx):
    """make run-xds's files (examples/remora-xds.yaml + examples/xds/) serve end to end, with
    their fixed ports replaced by free ones."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    up = ctx.upstream(name="example")
    lport = harness.free_port()
    d = os.path.join(ctx.tmp, "example-xds")
    os.makedirs(d)
    for f in os.listdir(os.path.join(root, "examples", "xds")):
        with open(os.path.join(root, "examples", "xds", f)) as src:
            text = src.read().replace("18081", str(up.port)).replace("10000", str(lport))
        with open(os.path.join(d, f), "w") as dst:
            dst.write(text)
    xds = Xds(ctx, d)
    with open(os.path.join(root, "examples", "remora-xds.yaml")) as f:
        boot = f.read().replace("9901", "{admin}").replace("18000", str(xds.port))
    px = ctx.remora(boot, wait=False)
    harness.wait_port(px.admin, proc=px.p)
    wait_for("/ready", lambda: ctx.curl(f"http://127.0.0.1:{px.admin}/ready").status == 200)
    assert upstream_name(ctx, lport) == "example"


def test_per_type_streams(ctx):
    """No ADS: api_config_source gives each type a stream of its own (CDS and EDS state of the
    world, LDS and RDS Delta), each on its own discovery service."""
    a = ctx.upstream(name="a")
    d = start(ctx, "per-type")
    lport = harness.free_port()
    put(d, "l.yaml", listener("l1", lport, "r1", rds_api="DELTA_GRPC"), route("r1", "c1"))
    put(d, "c.yaml", cluster("c1", eds_api="GRPC"), cla("c1", a.port))
    xds = Xds(ctx, d)
    boot = bootstrap(xds.port)
    boot = boot[:boot.index("  ads_config:")] + f"""  cds_config: {source("GRPC")}
  lds_config: {source("DELTA_GRPC")}
"""
    px = ctx.remora(boot, wait=False)
    harness.wait_port(px.admin, proc=px.p)
    wait_for("/ready", lambda: ctx.curl(f"http://127.0.0.1:{px.admin}/ready").status == 200)
    assert upstream_name(ctx, lport) == "a"
    log = xds.log()
    for method in ("StreamClusters", "StreamEndpoints", "DeltaListeners", "DeltaRoutes"):
        assert f": {method}" in log, f"no {method} stream:\n{log[-3000:]}"
    assert "AggregatedResources" not in log, log[-3000:]
    # a cluster over CDS whose endpoints would come from another source is NACKed
    put(d, "c2.yaml", cluster("c2", eds_api=None), cla("c2", a.port))
    xds.wait_log("NACK node=sidecar-lds-1 type=Cluster")
    assert "remora takes every ClusterLoadAssignment from one source" in xds.log()
    assert upstream_name(ctx, lport) == "a"


def test_removed_cluster_and_listener_finish_in_flight(ctx):
    """Requests in flight when their cluster and listener leave the config finish on the config
    they started on (HTTP/1.1 and h2c); new requests then get 503 (cluster gone, NC) or a closed
    port (listener gone)."""
    import threading
    a = ctx.upstream(name="a")
    d = start(ctx, "inflight")
    l1, l2 = harness.free_port(), harness.free_port()
    put(d, "keep.yaml", listener("l1", l1, "r1"), route("r1", "c1"), cluster("c1"),
        cla("c1", a.port))
    put(d, "gone.yaml", listener("l2", l2, "r2"), route("r2", "c2"), cluster("c2"),
        cla("c2", a.port))
    xds = Xds(ctx, d)
    px = ctx.remora(bootstrap(xds.port, "DELTA_GRPC"), wait=False)
    harness.wait_port(px.admin, proc=px.p)
    wait_for("/ready", lambda: ctx.curl(f"http://127.0.0.1:{px.admin}/ready").status == 200)
    # l1 -> c2 too, so a connection on the surviving listener can ask for the removed cluster
    put(d, "keep.yaml", listener("l1", l1, "r1"), route("r1", "c1"), cluster("c1"),
        cla("c1", a.port), route("r3", "c2"))
    results = {}

    def slow(key, port, http2):
        results[key] = ctx.curl(f"http://127.0.0.1:{port}/", timeout=10, http2=http2,
                                headers={"x-upstream-delay-ms": "1500"})

    threads = [threading.Thread(target=slow, args=(k, l2, h2))
               for k, h2 in (("h1", False), ("h2", True))]
    for t in threads:
        t.start()
    time.sleep(0.5)  # both requests are at the upstream now
    os.unlink(os.path.join(d, "gone.yaml"))
    wait_for("l2 closed", lambda: ctx.curl(f"http://127.0.0.1:{l2}/", timeout=2).status == 0)
    for t in threads:
        t.join(15)
    for k in ("h1", "h2"):
        r = results[k]
        assert r.status == 200 and r.headers.get("x-upstream-name") == "a", (k, r.status, r.body)
    st = all_stats(ctx, px)
    assert st["listener_manager.listener_removed"] == 1, st
    assert st["cluster_manager.cluster_removed"] == 1, st
    assert upstream_name(ctx, l1) == "a"


def test_listener_rds_fetch_timeout(ctx):
    """A listener whose RouteConfiguration never comes goes active after its rds
    config_source's initial_fetch_timeout, with no route (404, as Envoy), and /ready with it."""
    d = start(ctx, "rds-timeout")
    lport = harness.free_port()
    put(d, "l.yaml", listener("l1", lport, "never").replace(
        "config_source: { ads: {}, resource_api_version: V3 }",
        "config_source: { ads: {}, resource_api_version: V3, initial_fetch_timeout: 0.5s }"))
    xds = Xds(ctx, d)
    px = ctx.remora(bootstrap(xds.port, "GRPC"), wait=False)
    harness.wait_port(px.admin, proc=px.p)
    t0 = time.monotonic()
    assert ctx.curl(f"http://127.0.0.1:{lport}/", timeout=1).status == 0, "active at once"
    wait_for("/ready", lambda: ctx.curl(f"http://127.0.0.1:{px.admin}/ready").status == 200)
    assert time.monotonic() - t0 < 5, "the 0.5 s fetch timeout was not applied"
    r = ctx.curl(f"http://127.0.0.1:{lport}/")
    assert r.status == 404, (r.status, r.body)
    st = all_stats(ctx, px)
    assert st["listener_manager.total_listeners_active"] == 1, st
    assert st["listener_manager.total_listeners_warming"] == 0, st


def test_unchanged_cluster_keeps_pools_and_stats(ctx):
    """A CDS update that adds a cluster, and one that re-sends c1 unchanged, keep c1 the same
    object: its pooled upstream connection is reused (upstream_cx_total does not move) and its
    counters go on counting."""
    a, b, d, lport, xds, px = one_route(ctx, "keep")
    for _ in range(3):
        assert upstream_name(ctx, lport) == "a"
    before = stats(ctx, px, "c1")
    assert before["upstream_cx_total"] == 1 and before["upstream_rq_total"] == 3, before
    put(d, "c2.yaml", cluster("c2"), cla("c2", b.port))           # CDS: c1 re-sent as is
    wait_for("c2", lambda: all_stats(ctx, px).get("cluster.c2.membership_total") == 1)
    put(d, "c.yaml", cluster("c1"), cla("c1", a.port), "\n# touched")  # same resources
    time.sleep(0.3)
    for _ in range(3):
        assert upstream_name(ctx, lport) == "a"
    after = stats(ctx, px, "c1")
    assert after["upstream_cx_total"] == 1, ("c1's pool was rebuilt", before, after)
    assert after["upstream_rq_total"] == 6, after
    st = all_stats(ctx, px)
    assert st["cluster_manager.cluster_modified"] == 0, st
    assert st["cluster_manager.cluster_added"] == 2, st


def test_dns_cluster_over_cds(ctx):
    """A STRICT_DNS cluster delivered over CDS resolves with the bootstrap's resolver (dnsmasq
    here), warms until its first answer, serves, follows a record change, and is dropped with
    its resolutions and its stats when CDS removes it."""
    from dns_util import start_dnsmasq
    from test_dns_cluster import backend, resolver
    port = harness.free_port()
    a = backend(ctx, "127.0.0.1", port, "a")
    b = backend(ctx, "127.0.0.2", port, "b")
    dns_port, set_hosts = start_dnsmasq(ctx, {"svc.test": ["127.0.0.1"]})
    d = start(ctx, "dns")
    lport = harness.free_port()
    put(d, "l.yaml", listener("l1", lport, "r1"), route("r1", "dnsc"))
    put(d, "c.yaml", f"""
- "@type": {T}envoy.config.cluster.v3.Cluster
  name: dnsc
  type: STRICT_DNS
  connect_timeout: 1s
  dns_refresh_rate: 0.2s
  respect_dns_ttl: false
  load_assignment:
    cluster_name: dnsc
    endpoints:
    - lb_endpoints:
      - endpoint: {{ address: {{ socket_address: {{ address: svc.test, port_value: {port} }} }} }}""")
    xds = Xds(ctx, d)
    px = ctx.remora(bootstrap(xds.port, "DELTA_GRPC") + resolver(dns_port, 0), wait=False)
    harness.wait_port(px.admin, proc=px.p)
    wait_for("/ready", lambda: ctx.curl(f"http://127.0.0.1:{px.admin}/ready").status == 200)
    assert upstream_name(ctx, lport) == "a", "the first request after /ready"
    set_hosts({"svc.test": ["127.0.0.2"]})
    wait_for("the new record", lambda: upstream_name(ctx, lport) == "b")
    st = stats(ctx, px, "dnsc")
    assert st["update_success"] >= 2 and st["membership_total"] == 1, st
    os.unlink(os.path.join(d, "c.yaml"))
    wait_for("dnsc removed",
             lambda: ctx.curl(f"http://127.0.0.1:{lport}/", timeout=2).status == 503)
    # nothing holds the cluster any more (its resolver included): its stats are gone, for good
    wait_for("dnsc's stats gone", lambda: not stats(ctx, px, "dnsc"))
    time.sleep(0.6)
    assert not stats(ctx, px, "dnsc"), "still resolving a removed cluster"
    assert a.p.poll() is None and b.p.poll() is None
