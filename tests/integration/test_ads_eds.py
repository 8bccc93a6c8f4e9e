"""EDS over ADS: remora's ADS client (xds/ads_client.c) against build/remora-xds serving a
directory with one ClusterLoadAssignment.

Shown here: the EDS cluster serves once its first assignment arrives (/ready waits for it); an
edited assignment moves the traffic under a running h2load with zero failed requests; a bad
assignment (a hostname instead of an IP) is NACKed (remora-xds logs the NACK with remora's node
id) while the previous hosts keep serving; a stopped control plane leaves traffic flowing and a
restarted one is reconnected to and its changes applied; update_* and control_plane stats;
config errors in dynamic_resources name their field."""
import os
import re
import subprocess
import time

import harness
import remora_cfg as cfg
from test_dns_cluster import names_seen, routes, stats, wait_ready
from test_xds_server import Xds

T_CLA = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"


def cla(name, address, port):
    return f"""resources:
- "@type": {T_CLA}
  cluster_name: {name}
  endpoints:
  - lb_endpoints:
    - endpoint:
        address:
          socket_address: {{ address: {address}, port_value: {port} }}
"""


def write(d, text):
    tmp = os.path.join(d, ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, os.path.join(d, "backend.yaml"))


def ads_bootstrap(xds_port, ads_cluster_extra="", dynamic_extra=""):
    eds = """
  - name: backend
    type: EDS
    connect_timeout: 1s
    lb_policy: ROUND_ROBIN
    eds_cluster_config:
      eds_config: { ads: {}, resource_api_version: V3 }"""
    xds = cfg.cluster("xds", [xds_port], extra=ads_cluster_extra)
    return cfg.bootstrap(routes("backend"), eds + xds) + f"""
node: {{ id: sidecar-ads-1, cluster: test }}
dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    grpc_services:
    - envoy_grpc: {{ cluster_name: xds }}{dynamic_extra}
"""


def wait_name(ctx, px, name, timeout=10):
    deadline = time.monotonic() + timeout
    while names_seen(ctx, px.port, 3) != {name: 3}:
        if time.monotonic() > deadline:
            raise harness.TestFailure(f"traffic never moved to {name}")
        time.sleep(0.05)


def test_eds_over_ads(ctx):
    a = ctx.upstream(name="a")
    b = ctx.upstream(name="b")
    c = ctx.upstream(name="c")
    d = os.path.join(ctx.tmp, "xds-dir")
    os.makedirs(d)
    write(d, cla("backend", "127.0.0.1", a.port))
    xds = Xds(ctx, d)
    px = ctx.remora(ads_bootstrap(xds.port))
    wait_ready(ctx, px)
    assert names_seen(ctx, px.port, 4) == {"a": 4}
    xds.wait_log("ACK node=sidecar-ads-1 type=ClusterLoadAssignment")
    xds.wait_log('user_agent="remora"')
    st = stats(ctx, px, "backend")
    assert st["update_success"] >= 1 and st["update_rejected"] == 0, st
    assert st["membership_total"] == 1, st

    # moves to b under load with no failed request
    n = 4000
    load = subprocess.Popen(["h2load", "-n", str(n), "-c", "4", "-m", "4", "--rps", "250",
                             f"http://127.0.0.1:{px.port}/"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(1.0)
    write(d, cla("backend", "127.0.0.1", b.port))
    wait_name(ctx, px, "b", timeout=3)
    running = load.poll() is None
    out = load.communicate(timeout=120)[0].decode()
    assert running, "h2load finished before the change:\n" + out
    assert re.search(rf"requests: {n} total, {n} started, {n} done, {n} succeeded, 0 failed, "
                     r"0 errored, 0 timeout", out), out

    # a hostname: NACKed, previous hosts kept
    write(d, cla("backend", "backend.example", c.port))
    xds.wait_log("NACK node=sidecar-ads-1 type=ClusterLoadAssignment")
    log = xds.log()
    assert "ClusterLoadAssignment backend: resources[0].endpoints[0].lb_endpoints[0]" in log, log
    assert names_seen(ctx, px.port, 3) == {"b": 3}
    assert stats(ctx, px, "backend")["update_rejected"] >= 1

    # the control plane goes away: traffic keeps flowing; it comes back with a change
    xds.stop()
    assert names_seen(ctx, px.port, 3) == {"b": 3}
    write(d, cla("backend", "127.0.0.1", c.port))
    time.sleep(0.5)
    assert names_seen(ctx, px.port, 3) == {"b": 3}  # nothing new without a control plane
    # back on the port remora knows
    xds3_proc = ctx.spawn([ctx.bin("remora-xds"), "--dir", d, "--listen",
                           f"127.0.0.1:{xds.port}", "-l", "debug"], "xds-again")
    harness.wait_port(xds.port, proc=xds3_proc.p)
    wait_name(ctx, px, "c", timeout=15)
    body = ctx.curl(f"http://127.0.0.1:{px.admin}/stats").body.decode()
    assert "control_plane.connected_state: 1" in body, body
    assert "ads: stream to" in px.output()


def test_ready_waits_for_first_assignment(ctx):
    """No control plane: /ready is INITIALIZING and the cluster 503s until
    initial_fetch_timeout."""
    port = harness.free_port()
    y = ads_bootstrap(port).replace("resource_api_version: V3 }",
                                    "resource_api_version: V3, initial_fetch_timeout: 1s }")
    px = ctx.remora(y)
    assert ctx.curl(f"http://127.0.0.1:{px.admin}/ready").status == 503
    assert ctx.curl(f"http://127.0.0.1:{px.port}/").status == 503
    wait_ready(ctx, px, timeout=10)
    assert "backend" in px.output()


def test_config_errors(ctx):
    def check(y, want):
        path = os.path.join(ctx.tmp, "bad.yaml")
        with open(path, "w") as f:
            f.write(y.replace("{admin}", "1").replace("{port0}", "2"))
        r = ctx.run([ctx.bin("remora"), "-c", path, "--mode", "validate"])
        assert r.returncode == 1 and want in r.stderr.decode(), r.stderr.decode()

    good = ads_bootstrap(1)
    check(good + "  lds_config: { self: {} }\n",
          "dynamic_resources.lds_config: only ads: {}")
    check(good + "  cds_config: { ads: {}, resource_api_version: V2 }\n",
          "dynamic_resources.cds_config.resource_api_version: only V3")
    check(good.replace("api_type: GRPC", "api_type: REST"),
          "dynamic_resources.ads_config.api_type: only GRPC and DELTA_GRPC")
    no_ads = good[:good.index("dynamic_resources:")]
    check(no_ads + "dynamic_resources:\n  lds_config: { ads: {} }\n",
          "dynamic_resources.lds_config: ads: {} needs dynamic_resources.ads_config")
    check(good.replace("cluster_name: xds }", "cluster_name: nope }"),
          "dynamic_resources.ads_config.grpc_services[0].envoy_grpc.cluster_name")
    check(ads_bootstrap(1, ads_cluster_extra=cfg.DOWNSTREAM_OPTS.replace(
        "use_downstream_protocol_config:\n          http2_protocol_options: {}",
        "explicit_http_config:\n          http_protocol_options: {}")),
        "the ADS cluster must use HTTP/2")
    no_ads = good[:good.index("dynamic_resources:")]
    check(no_ads, "cluster backend: eds_cluster_config.eds_config: ads: {} needs "
          "dynamic_resources.ads_config")
