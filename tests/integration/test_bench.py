"""Smoke test for bench/compare.sh: `--quick` on the build under test (the ASan build in
`make test`).  The point is only that every peer (HAProxy, nghttpx, nginx), the byte relay and
remora start, serve every run (TLS handshakes included), and that remora gets measured; no
figure is checked against a threshold.  The peers come from `make deps` (scripts/deps.sh): when one is missing the test
fails (compare.sh --no-install names the package), it is never skipped.
"""
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
