#!/usr/bin/python3
"""How remora's memory and update latency grow with the size of the mesh (issue #6 "Scale").

    /usr/bin/python3 bench/xds_scale.py [--build build] [--clusters 10000] [--endpoints 10]
                                        [--shape static|eds|cds|all] [--delta]
                                        [--concurrency 2] [--rounds N] [--write]

Two shapes, each against a baseline of the same shape with one cluster:
  static  N STATIC clusters in the bootstrap, E endpoints each inline (load_assignment): the
          cost of the cluster objects alone;
  eds     N clusters of type EDS in the bootstrap whose ClusterLoadAssignments (one file per
          cluster) are served over ADS by the bundled control plane (build/remora-xds);
  cds     the same N EDS clusters delivered over CDS too (one file of Cluster resources):
          the whole mesh from the control plane, as a sidecar in a mesh gets it.
--delta uses Delta ADS (DELTA_GRPC) instead of state of the world: a change sends only the
changed resource.
Reported per run: remora's idle VmRSS after /ready (/proc/PID/status), the time from process
start to the first 200 of admin /ready and, for eds, the time one endpoint change takes: one
CLA file is rewritten (endpoint 0 of the middle cluster moves to a new address) and admin
/clusters is polled until it lists the new address; remora's own figure is its log line
"ads: ClusterLoadAssignment version V applied in N us: C changed, R removed, U unchanged"
(from the response's
arrival to the hand-over to the workers).  A /clusters fetch of the whole mesh is itself slow,
so the poll's granularity (one fetch) is reported too.

No figure is asserted: this is a benchmark.  --write puts the table in bench/RESULTS.md under
"## xDS scale" (replacing that section if present).  Every process listens on 127.0.0.1 with
a free port; endpoints are 127.x.y.z addresses nobody connects to.  Processes are stopped by
PID.
"""
import argparse
import datetime
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T_CLA = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
NEW_ADDR, NEW_PORT = "127.254.254.254", 20001  # the address one endpoint moves to
TRIM_DELAY_S = 1.0  # remora returns free heap pages this long after a membership update


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=30):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"process {proc.pid} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.01)
    raise SystemExit(f"nothing listening on {port}")


def get(port, path, timeout=30):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit(f"no VmRSS for {pid}")


def addr(i):
    """The address of cluster <i>'s endpoints (loopback, never connected to)."""
    return f"127.{1 + (i >> 16) % 250}.{(i >> 8) & 255}.{i & 255}"


def name(i):
    return f"c{i:05d}"


def lb_endpoints(i, e, indent, moved=False):
    out = []
    for j in range(e):
        a, p = (NEW_ADDR, NEW_PORT) if moved and j == 0 else (addr(i), 10000 + j)
        out.append(f"{indent}- endpoint: {{ address: {{ socket_address: "
                   f"{{ address: {a}, port_value: {p} }} }} }}")
    return "\n".join(out)


def cla_file(i, e, moved=False):
    return (f"\"@type\": {T_CLA}\ncluster_name: {name(i)}\nendpoints:\n- lb_endpoints:\n"
            + lb_endpoints(i, e, "  ", moved) + "\n")


HEAD = """admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
node: {{ id: xds-scale, cluster: bench }}
static_resources:
  listeners:
  - name: ingress
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listen} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: {first} }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
"""

ADS = """dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    grpc_services:
    - envoy_grpc: { cluster_name: xds }
"""


def bootstrap(shape, n, e, admin, listen, xds_port=None, delta=False):
    parts = [HEAD.format(admin=admin, listen=listen, first=name(0))]
    for i in range(n):
        if shape == "static":
            parts.append(f"  - name: {name(i)}\n    type: STATIC\n    connect_timeout: 1s\n"
                         f"    load_assignment:\n      cluster_name: {name(i)}\n"
                         f"      endpoints:\n      - lb_endpoints:\n"
                         + lb_endpoints(i, e, "        ") + "\n")
        elif shape == "eds":
            parts.append(eds_cluster(i, "  "))
    if shape in ("eds", "cds"):
        parts.append(
            "  - name: xds\n    type: STATIC\n    connect_timeout: 1s\n"
            "    typed_extension_protocol_options:\n"
            "      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n"
            "        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3."
            "HttpProtocolOptions\n"
            "        explicit_http_config: { http2_protocol_options: {} }\n"
            "    load_assignment:\n      cluster_name: xds\n      endpoints:\n"
            "      - lb_endpoints:\n"
            f"        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, "
            f"port_value: {xds_port} }} }} }}\n")
        parts.append(ADS.replace("GRPC", "DELTA_GRPC") if delta else ADS)
        if shape == "cds":
            parts.append("  cds_config: { ads: {}, resource_api_version: V3 }\n")
    return "".join(parts)


def eds_cluster(i, indent):
    return (f"{indent}- name: {name(i)}\n{indent}  type: EDS\n{indent}  connect_timeout: 1s\n"
            f"{indent}  eds_cluster_config: {{ eds_config: {{ ads: {{}}, "
            f"resource_api_version: V3 }} }}\n")


def cds_file(n):
    return "resources:\n" + "".join(
        eds_cluster(i, "").replace("- name:", "- \"@type\": type.googleapis.com/"
                                   "envoy.config.cluster.v3.Cluster\n  name:")
        for i in range(n))


class Run:
    """One remora (and, for eds, one remora-xds) on a generated mesh."""

    def __init__(self, args, shape, n, tmp, rnd=0):
        self.args, self.shape, self.n, self.e = args, shape, n, args.endpoints
        self.dir = os.path.join(tmp, f"{shape}-{n}" + (f"-{rnd}" if rnd else ""))
        os.makedirs(self.dir)
        self.procs = []
        self.cla_dir = None
        self.xds_port = None

    def spawn(self, argv, log):
        f = open(os.path.join(self.dir, log), "w")
        p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        f.close()
        self.procs.append(p)
        return p

    def log(self, log):
        with open(os.path.join(self.dir, log), errors="replace") as f:
            return f.read()

    def start_cp(self):
        self.cla_dir = os.path.join(self.dir, "cla")
        os.makedirs(self.cla_dir)
        for i in range(self.n):
            with open(os.path.join(self.cla_dir, name(i) + ".yaml"), "w") as f:
                f.write(cla_file(i, self.e))
        if self.shape == "cds":
            with open(os.path.join(self.cla_dir, "clusters.yaml"), "w") as f:
                f.write(cds_file(self.n))
        self.xds_port = free_port()
        t = time.monotonic()
        p = self.spawn([os.path.join(self.args.build, "remora-xds"), "--dir", self.cla_dir,
                        "--listen", f"127.0.0.1:{self.xds_port}", "-l", "info"], "xds.log")
        wait_port(self.xds_port, p, timeout=300)
        self.cp_start_s = time.monotonic() - t

    def start_remora(self):
        self.admin, listen = free_port(), free_port()
        y = bootstrap(self.shape, self.n, self.e, self.admin, listen, self.xds_port,
                      self.args.delta)
        path = os.path.join(self.dir, "remora.yaml")
        with open(path, "w") as f:
            f.write(y)
        self.cmd = [os.path.join(self.args.build, "remora"), "-c", path, "--concurrency",
                    str(self.args.concurrency), "-l", "info"]
        t = time.monotonic()
        self.px = self.spawn(self.cmd, "remora.log")
        end = t + 300
        while True:
            if self.px.poll() is not None:
                raise SystemExit(f"remora exited {self.px.returncode}:\n"
                                 + self.log("remora.log")[-3000:])
            try:
                if get(self.admin, "/ready", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > end:
                raise SystemExit("remora never became ready")
            time.sleep(0.005)
        self.ready_s = time.monotonic() - t
        time.sleep(self.args.settle)
        self.rss = rss_kib(self.px.pid)
        self.heap = self.heap_bytes()

    def heap_bytes(self):
        """server.memory_allocated: the allocator's bytes in use (mallinfo2), None if absent."""
        st, body = get(self.admin, "/stats?filter=%5Eserver%5C.memory_allocated%24", timeout=120)
        m = re.search(rb"server\.memory_allocated: (\d+)", body)
        return int(m.group(1)) if st == 200 and m and int(m.group(1)) else None

    def change_one(self):
        """Move endpoint 0 of the middle cluster; returns (seconds until /clusters shows it,
        seconds of one /clusters fetch, remora's applied-in us, resources in that response)."""
        i = self.n // 2
        want = f"{name(i)}::{NEW_ADDR}:{NEW_PORT}::".encode()
        t0 = time.monotonic()
        st, body = get(self.admin, "/clusters", timeout=120)
        fetch_s = time.monotonic() - t0
        assert st == 200 and want not in body
        log_before = len(self.log("remora.log"))
        tmp = os.path.join(self.cla_dir, ".tmp")
        with open(tmp, "w") as f:
            f.write(cla_file(i, self.e, moved=True))
        t = time.monotonic()
        os.rename(tmp, os.path.join(self.cla_dir, name(i) + ".yaml"))
        while True:
            st, body = get(self.admin, "/clusters", timeout=120)
            if want in body:
                break
            if time.monotonic() - t > 120:
                raise SystemExit("the change never showed in /clusters")
        e2e_s = time.monotonic() - t
        applied = None
        for _ in range(100):  # the log line may trail the answer by a moment
            m = re.findall(r"ClusterLoadAssignment version \S+ applied in (\d+) us",
                           self.log("remora.log")[log_before:])
            if m:
                applied = int(m[-1])
                break
            time.sleep(0.01)
        m = re.findall(r"ClusterLoadAssignment version \S+ applied in \d+ us: (\d+) changed, "
                       r"\d+ removed, (\d+) unchanged", self.log("remora.log")[log_before:])
        time.sleep(TRIM_DELAY_S + self.args.settle)
        self.rss_after = rss_kib(self.px.pid)
        return e2e_s, fetch_s, applied, sum(map(int, m[-1])) if m else None

    def first_apply_us(self):
        """The sum over the first response of each type (CDS, then EDS)."""
        total = 0
        for t in ("Cluster", "ClusterLoadAssignment"):
            m = re.search(rf"ads: {t} version \S+ applied in (\d+) us: [1-9]", self.log("remora.log"))
            total += int(m.group(1)) if m else 0
        return total or None

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


TIMES = ("ready_s", "first_apply_us", "e2e_s", "applied_us")  # best of the rounds


def measure_one(args, shape, n, tmp, rnd):
    r = Run(args, shape, n, tmp, rnd)
    try:
        if shape != "static":
            r.start_cp()
        r.start_remora()
        d = {"rss": r.rss, "heap": r.heap, "ready_s": r.ready_s, "cmd": r.cmd}
        if shape != "static":
            d["first_apply_us"] = r.first_apply_us()
            d["cp_start_s"] = r.cp_start_s
            if n > 1:
                d["e2e_s"], d["fetch_s"], d["applied_us"], d["resources"] = r.change_one()
                d["rss_after"] = r.rss_after
        print(f"{shape} n={n} round {rnd}: {d}", file=sys.stderr)
        return d
    finally:
        r.stop()


def measure(args, shape, tmp):
    res = {}
    for n in (1, args.clusters):
        runs = [measure_one(args, shape, n, tmp, rnd) for rnd in range(args.rounds)]
        d = dict(runs[-1])
        for k in TIMES:
            v = [x[k] for x in runs if x.get(k) is not None]
            if v:
                d[k] = min(v)
        res[n] = d
    return res


def report(args, results, when):
    n, e = args.clusters, args.endpoints
    L = ["## xDS scale\n",
         f"Generated by `bench/xds_scale.py{(' ' + ' '.join(sys.argv[1:])) if sys.argv[1:] else ''}` "
         f"on {when}, remora {rev()}.  {n:,} clusters × {e} endpoints against a 1-cluster baseline "
         f"of the same shape; `--concurrency {args.concurrency}`; VmRSS {args.settle} s after "
         f"/ready 200 (idle).  Times are the best of {args.rounds} run(s) on a shared 2-core VM "
         "(other work slows single runs down); memory figures are those of the last run.\n",
         "| shape | RSS 1 cluster KiB | RSS mesh KiB | growth MiB | per cluster KiB | "
         "heap per cluster KiB | start → /ready, 1 cluster | start → /ready, mesh | "
         "first response applied in | one endpoint changed: applied in | resources in that "
         "response | file → /clusters | RSS after the change KiB |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def ms(v, scale=1000.0):
        return "–" if v is None else f"{v * scale:,.1f} ms"
    for shape, r in results.items():
        b, m = r[1], r[n]
        growth = m["rss"] - b["rss"]
        heap = ("–" if not (b.get("heap") and m.get("heap")) else
                f"{(m['heap'] - b['heap']) / 1024 / max(n - 1, 1):,.2f}")
        eds = shape != "static"
        cells = [shape, f"{b['rss']:,}", f"{m['rss']:,}", f"{growth / 1024:,.1f}",
                 f"{growth / max(n - 1, 1):,.2f}", heap, ms(b["ready_s"]), ms(m["ready_s"]),
                 ms(m.get("first_apply_us"), 0.001) if eds else "n/a",
                 ms(m.get("applied_us"), 0.001) if eds else "n/a",
                 str(m.get("resources", "n/a")) if eds else "n/a",
                 ms(m["e2e_s"]) if "e2e_s" in m else "n/a",
                 f"{m['rss_after']:,}" if "rss_after" in m else "n/a"]
        L.append("| " + " | ".join(cells) + " |")
    L.append("")
    L.append("\"heap\" is `server.memory_allocated` (the allocator's bytes in use, mallinfo2) of "
             "the mesh minus the baseline's, per cluster; RSS also holds the allocator's free "
             "lists and page rounding.")
    for shape in [x for x in ("eds", "cds") if x in results][:1]:
        m = results[shape][n]
        L.append(f"\"applied in\" is remora's own log line (from the DiscoveryResponse's arrival to "
                 f"the hand-over to the workers).  \"file → /clusters\" includes the control "
                 f"plane's reaction (inotify, 50 ms gathering, re-reading its {n:,} files, a "
                 f"SotW response with every subscribed assignment) and the poll: one /clusters "
                 f"fetch of the mesh took {m['fetch_s'] * 1000:,.0f} ms.  remora-xds itself "
                 f"took {m['cp_start_s']:.1f} s to load the {n:,} files before remora started.  "
                 f"\"RSS after the change\": {TRIM_DELAY_S + args.settle:.1f} s after it was "
                 "applied.\n")
    L.append("```")
    L.append(f"/usr/bin/python3 bench/xds_scale.py {' '.join(sys.argv[1:])}".rstrip())
    for shape, r in results.items():
        L.append(f"# {shape}: " + " ".join(os.path.relpath(c, ROOT) if c.startswith(ROOT) else c
                                          for c in r[n]["cmd"]))
    L.append("```\n")
    return "\n".join(L)


def rev():
    try:
        return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True).stdout.strip() or "?"
    except OSError:
        return "?"


KEEP = "<!-- xds_scale.py writes the part above; what follows (### history) is kept -->"


def write_results(section):
    """Replace the generated part of "## xDS scale" in bench/RESULTS.md (or append the
    section); hand-written ### subsections after the KEEP marker stay (bench/compare.sh carries
    the whole section over when it rewrites the file)."""
    path = os.path.join(ROOT, "bench", "RESULTS.md")
    text = open(path).read() if os.path.exists(path) else ""
    new = section.rstrip("\n") + "\n\n" + KEEP + "\n"
    start = text.find("## xDS scale\n")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        end = len(text) if end < 0 else end + 1
        old = text[start:end]
        k = old.find(KEEP)
        if k >= 0:
            new += old[k + len(KEEP) + 1:]
        text = text[:start] + new.rstrip("\n") + "\n" + ("\n" + text[end:] if end < len(text) else "")
    else:
        text = text.rstrip("\n") + "\n\n" + new
    with open(path, "w") as f:
        f.write(text if text.endswith("\n") else text + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--clusters", type=int, default=10000)
    ap.add_argument("--endpoints", type=int, default=10)
    ap.add_argument("--shape", choices=("static", "eds", "cds", "all"), default="all")
    ap.add_argument("--delta", action="store_true", help="Delta ADS instead of SotW")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--settle", type=float, default=1.0, help="seconds after /ready before RSS")
    ap.add_argument("--rounds", type=int, default=1,
                    help="runs per shape and size: times are the best of them (a shared VM)")
    ap.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args()
    args.build = os.path.abspath(args.build)
    for b in ("remora", "remora-xds"):
        if not os.access(os.path.join(args.build, b), os.X_OK):
            raise SystemExit(f"{args.build}/{b} missing: make BUILD={args.build}")
    tmp = tempfile.mkdtemp(prefix="xds-scale-")
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    try:
        shapes = ("static", "eds", "cds") if args.shape == "all" else (args.shape,)
        results = {s: measure(args, s, tmp) for s in shapes}
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    section = report(args, results, when)
    print(section)
    if args.write:
        write_results(section)


if __name__ == "__main__":
    main()
