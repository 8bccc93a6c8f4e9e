"""Integration tests for build/remora-load against the bundled upstream (build/remora-upstream).

Exact counts in closed loop (h2c, HTTP/1.1, pipelined HTTP/1.1, TLS), --new-conn (one request
per connection, TLS included), the JSON report schema,
open-loop rate accuracy, --spin in closed loop (polling bounded after the last event),
coordinated omission (latency counted from the scheduled send time against a slow upstream),
gRPC status counting, per-request timeouts, status-code counts, and start-up errors (one line,
exit status 2).
"""
import json
import os
import resource
import subprocess

from harness import TestFailure, free_port

LATENCY_KEYS = ["count", "min", "mean", "stdev", "p50", "p90", "p99", "p99.9", "p99.99", "max"]


def load(ctx, *args, timeout=90, expect_rc=0):
    """Run remora-load with --json; returns the parsed report."""
    cmd = [ctx.bin("remora-load"), "--json", "--no-progress"] + [str(a) for a in args]
    r = ctx.run(cmd, timeout=timeout)
    err = r.stderr.decode("utf-8", "replace")
    if "ERROR: AddressSanitizer" in err or "runtime error:" in err or "LeakSanitizer" in err:
        raise TestFailure(f"sanitizer report from {cmd}:\n{err[-4000:]}")
    if r.returncode != expect_rc:
        raise TestFailure(f"{cmd} exited {r.returncode}, want {expect_rc}:\n{err[-2000:]}\n"
                          f"{r.stdout.decode()[-2000:]}")
    try:
        return json.loads(r.stdout)
    except ValueError:
        raise TestFailure(f"{cmd}: stdout is not JSON:\n{r.stdout[:2000]!r}")


def no_sanitizer_report(err):
    text = err.decode("utf-8", "replace")
    for mark in ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer"):
        assert mark not in text, text[-4000:]


def url(up, path="/"):
    return f"http://127.0.0.1:{up.port}{path}"


def assert_all_ok(rep, n):
    req = rep["requests"]
    assert req["sent"] == n, rep
    assert req["completed"] == n, rep
    assert req["succeeded"] == n, rep
    assert req["failed"] == 0, rep
    assert all(v == 0 for v in rep["errors"].values()), rep
    assert rep["status"]["2xx"] == n and rep["status"]["codes"] == {"200": n}, rep
    assert rep["latency_us"]["count"] == n, rep


def test_load_closed_loop_h2c_exact(ctx):
    up = ctx.upstream()
    rep = load(ctx, "-n", 5000, "-c", 4, "-m", 10, "-t", 2, url(up))
    assert_all_ok(rep, 5000)
    assert rep["config"]["protocol"] == "h2c"
    assert rep["connections"]["opened"] == 4, rep
    assert rep["throughput"]["bytes_rx"] > 0 and rep["throughput"]["bytes_tx"] > 0


def test_load_closed_loop_h1_exact(ctx):
    up = ctx.upstream()
    rep = load(ctx, "--h1", "-n", 3000, "-c", 3, url(up))
    assert_all_ok(rep, 3000)
    assert rep["config"]["protocol"] == "http/1.1"
    # -m > 1 pipelines on HTTP/1.1; several URLs are requested round-robin
    rep = load(ctx, "--h1", "-n", 3001, "-c", 2, "-m", 8, url(up, "/a"), url(up, "/b?x=1"))
    assert_all_ok(rep, 3001)
    assert rep["config"]["paths"] == ["/a", "/b?x=1"], rep


def test_load_tls_h2_and_h1(ctx):
    cert, key = os.path.join(ctx.tmp, "cert.pem"), os.path.join(ctx.tmp, "key.pem")
    ctx.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
             "-out", cert, "-days", "2", "-subj", "/CN=localhost"], check=True)
    up = ctx.upstream("--tls-cert", cert, "--tls-key", key)
    rep = load(ctx, "-n", 500, "-c", 2, "-m", 4, f"https://localhost:{up.port}/")
    assert_all_ok(rep, 500)
    assert rep["config"]["protocol"] == "h2"
    rep = load(ctx, "--h1", "-n", 300, "-c", 2, f"https://127.0.0.1:{up.port}/")
    assert_all_ok(rep, 300)
    # --verify rejects the self-signed certificate at start-up
    r = ctx.run([ctx.bin("remora-load"), "--verify", "-n", "1", f"https://localhost:{up.port}/"])
    assert r.returncode == 2, r
    assert b"certificate" in r.stderr, r.stderr


def test_load_new_conn(ctx):
    """--new-conn: one request per connection (h2c, HTTP/1.1, h2 and HTTP/1.1 over TLS), each
    connection closed by the client after its response and replaced by a new one; -m > 1 is
    a usage error."""
    up = ctx.upstream()
    rep = load(ctx, "--new-conn", "-n", 200, "-c", 4, url(up))
    assert_all_ok(rep, 200)
    assert rep["config"]["new_conn"] is True, rep["config"]
    # every request on its own connection (the connect phase opens -c before the clock)
    assert rep["connections"]["opened"] >= 200, rep["connections"]
    rep = load(ctx, "--new-conn", "--h1", "-d", "500ms", "--warmup", "100ms", "-c", 3, url(up))
    n = rep["requests"]["succeeded"]
    assert n > 0 and rep["requests"]["failed"] == 0, rep
    assert rep["connections"]["opened"] >= n, rep
    # TLS: a full handshake per request, closed with close_notify
    cert, key = os.path.join(ctx.tmp, "nc-cert.pem"), os.path.join(ctx.tmp, "nc-key.pem")
    ctx.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert, "-days",
             "2", "-subj", "/CN=localhost"], check=True)
    tup = ctx.upstream("--tls-cert", cert, "--tls-key", key)
    for extra, proto in (([], "h2"), (["--h1"], "http/1.1+tls")):
        rep = load(ctx, "--new-conn", *extra, "-n", 100, "-c", 4,
                   f"https://127.0.0.1:{tup.port}/")
        assert_all_ok(rep, 100)
        assert rep["config"]["protocol"] == proto, rep["config"]
        assert rep["connections"]["opened"] >= 100, rep["connections"]
        assert rep["connect_us"]["count"] >= 100, rep["connect_us"]
    # the text report says so; -m > 1 contradicts it
    r = ctx.run([ctx.bin("remora-load"), "--no-progress", "--new-conn", "-n", "5", url(up)])
    assert r.returncode == 0 and b"a new connection per request" in r.stdout, r
    r = ctx.run([ctx.bin("remora-load"), "--new-conn", "-m", "2", "-n", "5", url(up)])
    assert r.returncode == 2 and b"-m must be 1" in r.stderr, r


def test_load_json_schema(ctx):
    up = ctx.upstream()
    rep = load(ctx, "-d", "1s", "-c", 2, "-m", 2, "--warmup", "200ms", "--timeout", "5s",
               url(up))
    for k in ["tool", "config", "interrupted", "duration_s", "requests", "errors", "status",
              "grpc_status", "rate", "throughput", "connections", "latency_us", "connect_us",
              "sched_lag_us"]:
        assert k in rep, (k, rep)
    assert rep["tool"] == "remora-load"
    cfg = rep["config"]
    for k in ["url", "paths", "protocol", "connections", "streams", "threads", "mode",
              "requests", "duration_s", "rate", "warmup_s", "timeout_s", "method", "grpc"]:
        assert k in cfg, (k, cfg)
    assert cfg["mode"] == "closed" and cfg["requests"] is None and cfg["rate"] is None
    assert cfg["duration_s"] == 1 and cfg["warmup_s"] == 0.2 and cfg["timeout_s"] == 5
    assert set(rep["requests"]) == {"sent", "completed", "succeeded", "failed", "unsent"}
    assert set(rep["errors"]) == {"connect", "reset", "timeout", "protocol"}
    assert {"2xx", "3xx", "4xx", "5xx", "invalid", "codes"} <= set(rep["status"])
    assert set(rep["rate"]) == {"target", "sent", "achieved"} and rep["rate"]["target"] is None
    assert set(rep["throughput"]) == {"bytes_rx", "bytes_tx", "rx_bytes_per_s",
                                      "tx_bytes_per_s"}
    assert set(rep["connections"]) == {"opened", "connect_errors"}
    for h in ["latency_us", "connect_us", "sched_lag_us"]:
        assert list(rep[h]) == LATENCY_KEYS, rep[h]
        assert all(isinstance(v, (int, float)) for v in rep[h].values()), rep[h]
    lat = rep["latency_us"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"] \
        <= lat["p99.99"] <= lat["max"], lat
    assert rep["requests"]["succeeded"] > 0 and rep["requests"]["failed"] == 0
    assert abs(rep["duration_s"] - 1.0) < 0.01, rep["duration_s"]
    assert rep["rate"]["achieved"] > 0
    assert rep["interrupted"] is False


def test_load_text_report_and_help(ctx):
    up = ctx.upstream()
    r = ctx.run([ctx.bin("remora-load"), "-n", "100", "-c", "2", url(up)], check=True)
    out, err = r.stdout.decode(), r.stderr.decode()
    for word in ["100 sent", "100 succeeded", "p50", "p99.99", "latency (us)", "200: 100"]:
        assert word in out, (word, out)
    r = ctx.run([ctx.bin("remora-load"), "--help"], check=True)
    text = r.stdout.decode()
    for opt in ["-n", "-d", "-c", "-m", "-t", "--h1", "--rate", "--warmup", "-H", "--method",
                "--data", "--grpc", "--timeout", "--connect-timeout", "--json", "--progress",
                "--no-progress", "--insecure"]:
        assert opt in text, opt
    # progress: one line per second on stderr
    r = ctx.run([ctx.bin("remora-load"), "-d", "2500ms", "--rate", "200", url(up)], check=True)
    lines = [ln for ln in r.stderr.decode().splitlines() if ln.strip()]
    assert len(lines) == 2 and all("req/s" in ln for ln in lines), lines


def check_rate(ctx, up, rate, secs, conns, streams):
    rep = load(ctx, "--rate", rate, "-d", f"{secs}s", "-c", conns, "-m", streams, url(up))
    req = rep["requests"]
    want = rate * secs
    assert rep["config"]["mode"] == "open" and rep["rate"]["target"] == rate
    assert abs(req["sent"] - want) <= want * 0.01, rep
    assert req["unsent"] <= want * 0.01, rep
    assert req["failed"] == 0, rep
    assert abs(rep["rate"]["achieved"] - rate) <= rate * 0.01, rep["rate"]
    assert abs(rep["rate"]["sent"] - rate) <= rate * 0.01, rep["rate"]
    # sends really are paced: a typical send is within a millisecond of its slot
    assert rep["sched_lag_us"]["count"] == req["sent"]
    assert rep["sched_lag_us"]["p50"] < 1000, rep["sched_lag_us"]
    return rep


def test_load_open_loop_rate_accuracy(ctx):
    up = ctx.upstream()
    check_rate(ctx, up, 1000, 3, 4, 4)
    check_rate(ctx, up, 2000, 2, 4, 8)
    check_rate(ctx, up, 20000, 2, 8, 32)
    check_rate(ctx, up, 50000, 2, 8, 64)
    # -n with --rate: exactly n requests, paced
    rep = load(ctx, "--rate", 2000, "-n", 1000, "-c", 2, "-m", 8, "-t", 2, url(up))
    assert_all_ok(rep, 1000)
    assert 0.49 < rep["duration_s"] < 0.6, rep["duration_s"]  # paced; the last reply may lag


def test_load_spin_closed_loop(ctx):
    """--spin in closed loop: polls instead of sleeping while responses are expected (every
    request still completes), and stops polling T after the last event, so a slow target
    leaves the thread asleep most of the time."""
    up = ctx.upstream()
    rep = load(ctx, "--spin", "200us", "-n", 4000, "-c", 2, "-m", 8, url(up))
    assert_all_ok(rep, 4000)
    rep = load(ctx, "--spin", "200us", "--h1", "-n", 1000, "-c", 2, url(up))
    assert_all_ok(rep, 1000)
    # 40 sequential 20 ms responses: 0.8 s; polling for 0.2 ms after each is ~1 % of that
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    rep = load(ctx, "--spin", "200us", "-n", 40, "-c", 1, "-m", 1,
               "-H", "x-upstream-delay-ms: 20", url(up))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert_all_ok(rep, 40)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu < 0.5 * rep["duration_s"], (cpu, rep["duration_s"])


def test_load_coordinated_omission(ctx):
    """One connection, one stream, 50 ms responses: at most 20 req/s can be served.  Asked
    for 100 req/s, the requests queue behind each other and their latency, counted from the
    scheduled time, grows to seconds: p99 must be far above the 50 ms service time."""
    up = ctx.upstream()
    slow = ["-H", "x-upstream-delay-ms: 50", "-c", 1, "-m", 1]
    rep = load(ctx, "--rate", 100, "-d", "3s", *slow, url(up))
    req, lat = rep["requests"], rep["latency_us"]
    assert 40 <= req["completed"] <= 62, rep
    assert req["unsent"] >= 200, rep  # scheduled, never sent: the backlog
    assert req["failed"] == 0, rep
    assert lat["min"] >= 45000, lat  # the service time (upstream timers may be ~0.1 ms early)
    assert lat["p50"] > 500000, lat  # half a second of queueing
    assert lat["p99"] > 1500000, lat  # 30x the service time
    assert rep["sched_lag_us"]["max"] > 1500000, rep["sched_lag_us"]
    # the same upstream in closed loop shows only the service time (what CO would report)
    rep = load(ctx, "-d", "1s", *slow, url(up))
    assert rep["latency_us"]["p99"] < 200000, rep["latency_us"]


def test_load_grpc_status_counts(ctx):
    up = ctx.upstream()
    body = os.path.join(ctx.tmp, "msg.bin")
    with open(body, "wb") as f:
        f.write(b"\x0a\x05hello")
    rep = load(ctx, "--grpc", "--data", body, "-n", 300, "-c", 2, "-m", 8,
               url(up, "/test.Echo/Unary"))
    assert rep["config"]["grpc"] is True and rep["config"]["method"] == "POST"
    assert_all_ok(rep, 300)
    assert rep["grpc_status"] == {"0": 300, "other": 0, "missing": 0}, rep["grpc_status"]
    # a non-zero grpc-status is a failure, counted by code; exit 1 when nothing succeeded
    rep = load(ctx, "--grpc", "-n", 50, "-H", "x-upstream-grpc-status: 14",
               url(up, "/test.Echo/Unary"), expect_rc=1)
    assert rep["grpc_status"]["14"] == 50, rep["grpc_status"]
    assert rep["requests"]["failed"] == 50 and rep["requests"]["completed"] == 50, rep


def test_load_status_codes_and_errors(ctx):
    up = ctx.upstream()
    rep = load(ctx, "-n", 40, "-H", "x-upstream-status: 503", url(up), expect_rc=1)
    assert rep["status"]["5xx"] == 40 and rep["status"]["codes"] == {"503": 40}, rep
    assert rep["requests"]["failed"] == 40 and rep["requests"]["succeeded"] == 0
    rep = load(ctx, "-n", 30, "-c", 2, "-H", "x-upstream-reset: before-headers", url(up),
               expect_rc=1)
    assert rep["errors"]["reset"] == 30, rep
    for proto in ([], ["--h1"]):
        rep = load(ctx, *proto, "-d", "1s", "-c", 2, "--timeout", "100ms",
                   "-H", "x-upstream-delay-ms: 400", url(up), expect_rc=1)
        assert rep["errors"]["timeout"] >= 10, rep
        assert rep["requests"]["completed"] == 0, rep
    # HTTP/1.1 Connection: close and HTTP/2 GOAWAY after each response: reconnects, no error
    for proto in ([], ["--h1"]):
        rep = load(ctx, *proto, "-n", 100, "-c", 2, "-H", "x-upstream-close: 1", url(up))
        assert_all_ok(rep, 100)
        assert rep["connections"]["opened"] >= 50, rep


def one_line_exit2(ctx, args):
    r = ctx.run([ctx.bin("remora-load")] + args, timeout=30)
    err = r.stderr.decode()
    assert r.returncode == 2, (args, r.returncode, err)
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("remora-load: "), (args, err)
    assert r.stdout == b"", (args, r.stdout)
    return lines[0]


def test_load_startup_errors_exit_2(ctx):
    port = free_port()  # nothing listens there
    msg = one_line_exit2(ctx, ["-n", "10", f"http://127.0.0.1:{port}/"])
    assert "cannot connect" in msg and "refused" in msg, msg
    for bad in ["htp://127.0.0.1/", "http://", "http://127.0.0.1:99999/", "http://[::1/",
                "127.0.0.1:80", "http://127.0.0.1:0/", "http://a b/"]:
        msg = one_line_exit2(ctx, ["-n", "1", bad])
    msg = one_line_exit2(ctx, ["-n", "1", "http://no-such-host.invalid/"])
    assert "resolve" in msg, msg
    up = ctx.upstream()
    for args in [["--bogus"], ["-n", "0"], ["-d", "ten"], ["-c", "1", "-t", "2"],
                 ["--rate", "-5"], ["--grpc", "--h1"], ["-H", "novalue"], ["-n", "5", "-d", "1s"],
                 ["--data", os.path.join(ctx.tmp, "missing")], []]:
        one_line_exit2(ctx, args + [url(up)] if args != [] else [])
    # TLS to a cleartext port fails at start-up too
    msg = one_line_exit2(ctx, ["-n", "1", f"https://127.0.0.1:{up.port}/"])
    assert "TLS" in msg, msg


def test_load_interrupt_reports(ctx):
    up = ctx.upstream()
    p = subprocess.Popen([ctx.bin("remora-load"), "--json", "--no-progress", "-d", "30s",
                          "-c", "2", "-m", "2", url(up)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        import time
        time.sleep(1.0)
        p.send_signal(2)
        out, err = p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    no_sanitizer_report(err)
    assert p.returncode == 0, err
    rep = json.loads(out)
    assert rep["interrupted"] is True and rep["duration_s"] < 5, rep
    assert rep["requests"]["succeeded"] > 0 and rep["requests"]["failed"] == 0, rep


def test_load_gives_up_when_target_goes_away(ctx):
    import time
    up = ctx.upstream()
    p = subprocess.Popen([ctx.bin("remora-load"), "--json", "--no-progress", "-n", "1000000000",
                          "-c", "2", "-m", "2", "--connect-timeout", "500ms", url(up)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(1.0)
        ctx.stop(up)
        t0 = time.monotonic()
        out, err = p.communicate(timeout=15)
        took = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    no_sanitizer_report(err)
    assert p.returncode == 1, err
    assert b"gave up" in err, err
    assert took < 6, took
    rep = json.loads(out)
    assert rep["gave_up"] is True and rep["interrupted"] is False, rep
    assert rep["requests"]["succeeded"] > 0 and rep["errors"]["connect"] > 0, rep
    req = rep["requests"]
    assert req["succeeded"] + req["failed"] == req["sent"], req


def test_load_ipv6_and_warmup(ctx):
    import socket
    p6 = None
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
            p6 = s.getsockname()[1]
    except OSError:
        pass
    up = ctx.upstream(*(["--listen", f"[::1]:{p6}"] if p6 else []))
    if p6:
        rep = load(ctx, "-n", 300, "-c", 2, "-m", 4, f"http://[::1]:{p6}/v6")
        assert_all_ok(rep, 300)
        rep = load(ctx, "--h1", "-n", 300, "-c", 2, f"http://[::1]:{p6}/v6")
        assert_all_ok(rep, 300)
    # warm-up traffic is not counted: -n stays exact, closed and open loop
    rep = load(ctx, "-n", 500, "-c", 2, "-m", 4, "--warmup", "300ms", url(up))
    assert_all_ok(rep, 500)
    rep = load(ctx, "-n", 500, "--rate", 1000, "-c", 2, "-m", 4, "--warmup", "300ms", url(up))
    assert_all_ok(rep, 500)
    assert abs(rep["duration_s"] - 0.5) < 0.05, rep["duration_s"]
