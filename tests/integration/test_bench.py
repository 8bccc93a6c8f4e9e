"""Smoke test for bench/compare.sh: `--quick` on the build under test (the ASan build in
`make test`).  The point is only that every peer (HAProxy, nghttpx, nginx), the byte relay and
remora start, serve every run (TLS handshakes included), and that remora gets measured; no
figure is checked against a threshold.  The peers come from `make deps` (scripts/deps.sh): when one is missing the test
fails (compare.sh --no-install names the package), it is never skipped.
"""
import json
import os
import re
import subprocess

from harness import ROOT, TestFailure

NUM = re.compile(r"^[+-]?[\d,]+(\.\d+)?%?$")


def table_rows(md, heading):
    """{first cell: [other cells]} of the table under `## heading...`."""
    part = md.split("## " + heading, 1)
    if len(part) < 2:
        raise TestFailure(f"no section {heading!r} in RESULTS:\n{md[:3000]}")
    rows = {}
    for line in part[1].split("\n## ", 1)[0].splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def row(rows, prefix):
    for k, v in rows.items():
        if k.lower().lstrip("*").startswith(prefix):
            return v
    raise TestFailure(f"no row {prefix!r} in {list(rows)}")


def test_bench_compare_quick(ctx):
    out = os.path.join(ctx.tmp, "RESULTS.md")
    cmd = ["bash", os.path.join(ROOT, "bench/compare.sh"), "--quick", "--no-install",
           "--build", ctx.build, "--out", out]
    r = subprocess.run(cmd, capture_output=True, timeout=160, cwd=ROOT)
    so, se = r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")
    if r.returncode != 0:
        raise TestFailure(f"{cmd} exited {r.returncode}\nstdout:\n{so[-3000:]}\n"
                          f"stderr:\n{se[-5000:]}")
    with open(out, encoding="utf-8") as f:
        md = f.read()

    sat = table_rows(md, "Saturation")
    remora = row(sat, "remora")
    assert len(remora) == 12 and all(NUM.match(c) for c in remora), remora
    for name in ("relay", "haproxy", "nghttpx", "nginx"):
        cells = row(sat, name)
        assert "failed" not in cells and any(NUM.match(c) for c in cells), (name, cells)
    assert row(sat, "nginx")[0] == "n/a" and row(sat, "relay")[8] == "n/a"

    fixed = table_rows(md, "Fixed rate")
    assert all(NUM.match(c) for c in row(fixed, "remora")), row(fixed, "remora")
    for name in ("relay", "haproxy", "nghttpx", "nginx"):
        assert "failed" not in row(fixed, name), (name, row(fixed, name))

    mem = table_rows(md, "Memory")
    # idle without TLS, idle with the TLS listener, 1,000 h2c, per conn, + TLS, per TLS, after
    assert len(row(mem, "remora")) == 7, row(mem, "remora")
    for name in ("remora", "haproxy", "nghttpx", "nginx"):
        assert all(NUM.match(c) for c in row(mem, name)), (name, row(mem, name))
    relay = row(mem, "relay")   # no TLS: its three TLS columns are n/a
    assert relay[1] == "n/a" and relay[4:6] == ["n/a", "n/a"], relay
    assert all(NUM.match(c) for c in relay[:1] + relay[2:4] + relay[6:]), relay

    tls = table_rows(md, "TLS")
    remora = row(tls, "remora")   # h2 and HTTP/1.1 over TLS: hs/s, µs, CPU %, tool µs each
    assert len(remora) == 8 and all(NUM.match(c) for c in remora), remora
    for name in ("haproxy", "nghttpx", "nginx"):
        assert all(NUM.match(c) for c in row(tls, name)), (name, row(tls, name))
    assert set(row(tls, "relay")) == {"n/a"}, row(tls, "relay")

    tools = table_rows(md, "Load tools")
    assert len(tools) == 3, tools          # header + h2c + HTTP/1.1
    assert "failed" not in "".join(" ".join(v) for v in tools.values()), tools
    assert "remora has no TLS yet" not in md
    # the ratio lines on stdout
    assert re.search(r"CPU µs/req at saturation, h2c → h2c: remora [\d.,]+; best peer", so), so
    assert re.search(r"CPU µs per TLS handshake \(\+ 1 request\), h2 over TLS \(ALPN h2\): "
                     r"remora [\d.,]+; best peer", so), so


test_bench_compare_quick.timeout = 175


def test_bench_xds_scale_small(ctx):
    """bench/xds_scale.py on a 20-cluster mesh: the three shapes run, every figure is measured (the
    point is that the benchmark keeps working; nothing is compared with a target)."""
    cmd = ["/usr/bin/python3", os.path.join(ROOT, "bench/xds_scale.py"), "--build", ctx.build,
           "--clusters", "20", "--endpoints", "2", "--settle", "0.2"]
    r = subprocess.run(cmd, capture_output=True, timeout=120, cwd=ROOT)
    so, se = r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")
    if r.returncode != 0:
        raise TestFailure(f"{cmd} exited {r.returncode}\nstdout:\n{so[-3000:]}\n"
                          f"stderr:\n{se[-5000:]}")
    rows = table_rows(so, "xDS scale")
    static, eds, cds = row(rows, "static"), row(rows, "eds"), row(rows, "cds")
    assert len(static) == 12 and len(eds) == 12 and len(cds) == 12, (static, eds, cds)
    for cells in (static, eds, cds):
        assert all(NUM.match(c) for c in cells[:4]), cells  # RSS figures
        assert cells[6].endswith(" ms"), cells  # start -> /ready
    for cells in (eds, cds):  # one change applied; SotW: all 20 assignments in that response
        assert cells[8].endswith(" ms") and cells[9] == "20", cells
        assert cells[10].endswith(" ms") and NUM.match(cells[11]), cells


def test_bench_idle_tls_memory(ctx):
    """bench/idle_tls.py with 200 idle h2c, then 200 idle TLS (h2) connections: every
    connection held, no sanitizer report.  On an optimised build (not ASan's allocator, and
    nghttp2 sessions in their own mappings, which the ASan build leaves to malloc) the RSS per
    connection is bounded too: 5.3 KiB h2c / 21.2 KiB TLS measured at 200 connections when the
    bound was set, 15.7 / 36.0 before the session regions (proxy/http/h2_mem.c).  The bounds
    (10 / 28 KiB) leave room for allocator and library changes; RSS is read from /proc at the
    same points of a fixed sequence, page-exact (4 KiB / 200 connections = 0.02 KiB), so the
    figures do not move between runs.  Under ASan only the run is checked (~400 KiB/TLS conn)."""
    cmd = ["/usr/bin/python3", os.path.join(ROOT, "bench/idle_tls.py"), "--build", ctx.build,
           "-n", "200", "--runs", "1", "--json"]
    r = subprocess.run(cmd, capture_output=True, timeout=120, cwd=ROOT)
    so, se = r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")
    if r.returncode != 0:
        raise TestFailure(f"{cmd} exited {r.returncode}\nstdout:\n{so[-3000:]}\n"
                          f"stderr:\n{se[-3000:]}")
    runs = json.loads(so[so.index("["):])
    assert len(runs) == 1 and runs[0]["tls_alive"] == 200 and runs[0]["h2c_alive"] == 200, runs
    ldd = subprocess.run(["ldd", os.path.join(ctx.build, "remora")], capture_output=True,
                         timeout=30).stdout.decode()
    if "libasan" in ldd:
        return
    assert runs[0]["h2c_per_conn"] < 10, f"KiB per idle h2c connection: {runs[0]}"
    assert runs[0]["tls_per_conn"] < 28, f"KiB per idle TLS (h2) connection: {runs[0]}"


test_bench_idle_tls_memory.timeout = 150


def test_pgo_training_run(ctx):
    """scripts/pgo-train.sh — the training run of the release build (`make`, PGO=1) — on the
    build under test: its config loads, every load it sends succeeds, remora exits cleanly on
    SIGTERM.  `make test` never builds the release flavour, so this is what keeps `make run`'s
    training from breaking unnoticed (the profile itself is only written by an instrumented
    remora, which is not checked here)."""
    cmd = ["bash", os.path.join(ROOT, "scripts/pgo-train.sh"), os.path.join(ctx.build, "remora"),
           ctx.build]
    r = subprocess.run(cmd, capture_output=True, timeout=150, cwd=ROOT)
    out = (r.stdout + r.stderr).decode("utf-8", "replace")
    if r.returncode != 0 or "pgo-train: profile written" not in out:
        raise TestFailure(f"{cmd} exited {r.returncode}:\n{out[-4000:]}")


test_pgo_training_run.timeout = 180
