#!/usr/bin/python3
"""What the resilience filter chain costs per request: remora with the router only vs remora with
every filter and policy configured (fault at 0 %, local rate limit that never limits, retry
policy, route timeout, circuit breakers, outlier detection), measured in the same run.

    /usr/bin/python3 bench/filter_cost.py [--build build] [--seconds 5] [--rounds 3] [--write]

Same method as bench/compare.sh: upstream and load tool on CPU 0, each remora alone on CPU 1 with
one worker, interleaved rounds, medians; proxy CPU from /proc/PID/task/*/schedstat.  --write
stores the table in bench/RESULTS-filters.md.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise SystemExit(f"nothing listening on {port}")


def cpu_ns(pid):
    total = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{t}/schedstat") as f:
            total += int(f.read().split()[0])
    return total


ROUTER_ONLY = """
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}"""

FULL_CHAIN = """
          http_filters:
          - name: envoy.filters.http.fault
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
              abort: { http_status: 503, percentage: { numerator: 0 } }
              delay: { fixed_delay: 0.1s, percentage: { numerator: 0 } }
          - name: envoy.filters.http.local_ratelimit
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
              stat_prefix: bench
              token_bucket: { max_tokens: 1000000000, tokens_per_fill: 1000000000, fill_interval: 1s }
              filter_enabled: { default_value: { numerator: 100 } }
              filter_enforced: { default_value: { numerator: 100 } }
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}"""

RETRY = """
                  retry_policy: { retry_on: "5xx,reset,connect-failure", num_retries: 2, per_try_timeout: 5s }"""

CLUSTER_EXTRA = """
    circuit_breakers:
      thresholds:
      - { priority: DEFAULT, max_connections: 100000, max_pending_requests: 100000, max_requests: 100000, max_retries: 100 }
    outlier_detection: { consecutive_5xx: 5, interval: 1s, base_ejection_time: 30s }"""


def bootstrap(port, admin, upstream, h2_upstream, full):
    proto = """
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }""" if h2_upstream else ""
    return f"""
admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }} }}
static_resources:
  listeners:
  - name: l
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          generate_request_id: false
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route:
                  cluster: up
                  timeout: 15s{RETRY if full else ""}{FULL_CHAIN if full else ROUTER_ONLY}
  clusters:
  - name: up
    connect_timeout: 1s{proto}{CLUSTER_EXTRA if full else ""}
    load_assignment:
      cluster_name: up
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {upstream} }} }} }}
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args()
    b = lambda n: os.path.join(a.build, n)  # noqa: E731
    tmp = tempfile.mkdtemp(prefix="remora-filter-cost-")
    procs = []
    try:
        up = free_port()
        procs.append(subprocess.Popen(["taskset", "-c", "0", b("remora-upstream"), "--listen",
                                       f"127.0.0.1:{up}", "--quiet", "--body-size", "1024"]))
        wait_port(up)
        proxies = {}
        for mode in ("h1", "h2"):
            for full in (False, True):
                port, admin = free_port(), free_port()
                path = os.path.join(tmp, f"{mode}-{full}.yaml")
                with open(path, "w") as f:
                    f.write(bootstrap(port, admin, up, mode == "h2", full))
                p = subprocess.Popen(["taskset", "-c", "1", b("remora"), "-c", path,
                                      "--concurrency", "1", "-l", "error"])
                procs.append(p)
                wait_port(port)
                proxies[(mode, full)] = (p, port)
        results = {k: [] for k in proxies}
        for rnd in range(a.rounds):
            order = list(proxies)
            order = order[rnd % len(order):] + order[:rnd % len(order)]
            for key in order:
                p, port = proxies[key]
                mode = key[0]
                load = ["-c", "10", "-m", "20"] if mode == "h2" else ["--h1", "-c", "50"]
                c0 = cpu_ns(p.pid)
                r = subprocess.run(["taskset", "-c", "0", b("remora-load"), "--json", "--no-progress",
                                    "-d", f"{int(a.seconds * 1000)}ms"] + load +
                                   [f"http://127.0.0.1:{port}/"], capture_output=True, timeout=120)
                c1 = cpu_ns(p.pid)
                j = json.loads(r.stdout)
                ok = j["requests"]["succeeded"]
                results[key].append((c1 - c0) / 1000 / max(ok, 1))
        lines = ["| downstream → upstream | router only: µs/req | full chain: µs/req | added µs/req | full / router |",
                 "|---|---:|---:|---:|---:|"]
        for mode, label in (("h2", "h2c → h2c"), ("h1", "HTTP/1.1 → HTTP/1.1")):
            r0 = statistics.median(results[(mode, False)])
            r1 = statistics.median(results[(mode, True)])
            lines.append(f"| {label} | {r0:.2f} | {r1:.2f} | {r1 - r0:+.2f} | {r1 / r0:.2f} |")
        table = "\n".join(lines)
        print(table)
        if a.write:
            rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                 capture_output=True, text=True).stdout.strip()
            with open(os.path.join(ROOT, "bench", "RESULTS-filters.md"), "w") as f:
                f.write(f"""# The resilience filter chain's cost per request

Generated by `/usr/bin/python3 bench/filter_cost.py --write` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, remora {rev}, {os.cpu_count()} CPUs (shared VM: compare ratios, not absolutes).

Router only vs the full chain: fault filter (abort and delay configured at 0 %), local rate limit
(enforced, never limiting), route retry policy (5xx, reset, connect-failure; 2 retries; per-try
timeout) and timeout, cluster circuit breakers and outlier detection.  One remora per
configuration on CPU 1 (one worker), upstream (1 KiB bodies) and remora-load on CPU 0; {a.rounds}
interleaved rounds of {a.seconds:g} s, medians; load h2c `-c 10 -m 20`, HTTP/1.1 `--h1 -c 50`.

{table}

Rounds (µs/req): {json.dumps({f"{k[0]}-{'full' if k[1] else 'router'}": [round(x, 2) for x in v] for k, v in results.items()})}
""")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    sys.exit(main())
