"""HTTP access logs (HttpConnectionManager.access_log): file loggers in Envoy's default text
format and in a JSON format, and the stdout logger, checked line by line; a stdout that stops
draining (a pipe nobody reads) neither blocks requests nor grows memory, and flushing resumes
when it drains again."""
import json
import os
import re
import subprocess
import threading
import time

import remora_cfg as cfg
from harness import Proc, TestFailure, free_port, wait_port

DEFAULT_RE = re.compile(
    r'^\[(\S+)\] "(\S+) (\S+) (\S+)" (\d+) (\S+) (\d+) (\d+) (\d+) (\S+) '
    r'"([^"]*)" "([^"]*)" "([^"]*)" "([^"]*)" "([^"]*)"$')


def access_logs(text_path, json_path):
    return """
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: %s
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: %s
              log_format:
                json_format:
                  method: "%%REQ(:METHOD)%%"
                  path: "%%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%%"
                  protocol: "%%PROTOCOL%%"
                  code: "%%RESPONSE_CODE%%"
                  flags: "%%RESPONSE_FLAGS%%"
                  rx: "%%BYTES_RECEIVED%%"
                  tx: "%%BYTES_SENT%%"
                  upstream: "%%UPSTREAM_HOST%%"
                  cluster: "%%UPSTREAM_CLUSTER%%"
                  id: "%%REQ(X-REQUEST-ID)%%"
                  ua: "%%REQ(USER-AGENT):4%%"
                  peer: "%%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%%"
                  local: "%%DOWNSTREAM_LOCAL_ADDRESS%%"
                  route: "%%ROUTE_NAME%%"
                  mixed: "code=%%RESPONSE_CODE%% t=%%RESP(X-NOPE)%%"
          - name: envoy.access_loggers.stdout
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
              log_format:
                text_format_source:
                  inline_string: "ALOG %%REQ(:PATH)%% %%RESPONSE_CODE%% %%RESPONSE_FLAGS%%\\n"
""".rstrip("\n") % (text_path, json_path)


def wait_lines(path, n, timeout=10):
    deadline = time.time() + timeout
    lines = []
    while time.time() < deadline:
        if os.path.exists(path):
            with open(path) as f:
                lines = f.read().splitlines()
            if len(lines) >= n:
                return lines
        time.sleep(0.1)
    raise TestFailure(f"{path}: {len(lines)} lines, {n} expected: {lines}")


def test_access_log_file_json_stdout(ctx):
    up = ctx.upstream(name="b1")
    dead = free_port()
    text_path = os.path.join(ctx.tmp, "access.log")
    json_path = os.path.join(ctx.tmp, "access.json")
    routes = """
              - match: { prefix: "/ok" }
                name: ok_route
                route: { cluster: backend }
              - match: { prefix: "/dead" }
                route: { cluster: dead }"""
    px = ctx.remora(cfg.bootstrap(routes, [cfg.cluster("backend", [up.port]),
                                           cfg.cluster("dead", [dead])],
                                  hcm_extra=access_logs(text_path, json_path)))
    base = f"http://127.0.0.1:{px.port}"
    r = ctx.curl(base + "/ok/1", data=b"hello", headers={"x-upstream-body-size": "1234",
                                                      "x-request-id": "rid-1"})
    assert r.status == 200 and len(r.body) == 1234, r
    r = ctx.curl(base + "/dead", headers={"x-request-id": "rid-2"})
    assert r.status == 503, r
    r = ctx.curl(base + "/missing", headers={"x-request-id": "rid-3"}, http2=True)
    assert r.status == 404, r

    lines = wait_lines(text_path, 3)
    assert len(lines) == 3, lines
    m = [DEFAULT_RE.match(l) for l in lines]
    assert all(m), lines
    ok, dd, nr = (x.groups() for x in m)
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", ok[0]), ok
    assert ok[1:9] == ("POST", "/ok/1", "HTTP/1.1", "200", "-", "5", "1234", ok[8]), ok
    assert ok[9] != "-" and ok[12] == "rid-1" and ok[14] == f"127.0.0.1:{up.port}", ok
    assert ok[10] == "-" and ok[11].startswith("curl/"), ok
    assert ok[13] == f"127.0.0.1:{px.port}", ok
    assert dd[1:8] == ("GET", "/dead", "HTTP/1.1", "503", "UF", "0", dd[7]), dd
    assert int(dd[7]) > 0 and dd[12] == "rid-2" and dd[14] == f"127.0.0.1:{dead}", dd
    assert nr[1:8] == ("GET", "/missing", "HTTP/2", "404", "NR", "0", "0"), nr
    assert nr[9] == "-" and nr[14] == "-" and nr[12] == "rid-3", nr

    js = [json.loads(l) for l in wait_lines(json_path, 3)]
    j = js[0]
    assert j["method"] == "POST" and j["path"] == "/ok/1" and j["protocol"] == "HTTP/1.1", j
    assert j["code"] == 200 and j["flags"] is None and j["rx"] == 5 and j["tx"] == 1234, j
    assert j["upstream"] == f"127.0.0.1:{up.port}" and j["cluster"] == "backend", j
    assert j["id"] == "rid-1" and j["ua"] == "curl" and j["peer"] == "127.0.0.1", j
    assert j["local"] == f"127.0.0.1:{px.port}" and j["route"] == "ok_route", j
    assert j["mixed"] == "code=200 t=-", j
    assert js[1]["code"] == 503 and js[1]["flags"] == "UF" and js[1]["cluster"] == "dead", js[1]
    assert js[2]["code"] == 404 and js[2]["flags"] == "NR" and js[2]["upstream"] is None, js[2]
    assert js[2]["protocol"] == "HTTP/2", js[2]

    deadline = time.time() + 10
    while time.time() < deadline and px.output().count("ALOG ") < 3:
        time.sleep(0.1)
    out = px.output()
    for want in ("ALOG /ok/1 200 -", "ALOG /dead 503 UF", "ALOG /missing 404 NR"):
        assert want in out, out[-3000:]
    assert ctx.stop(px) == 0


def test_access_log_config_errors(ctx):
    up = ctx.upstream()
    for fmt, want in (('text_format: "%BOGUS%"', 'unknown command operator "%BOGUS%"'),
                      ('text_format: "%REQ(:PATH%"', "missing ')'"),
                      ('text_format: "%REQ()%"', "needs a header name")):
        extra = """
          access_log:
          - name: envoy.access_loggers.stdout
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
              log_format: { %s }""" % fmt
        px = ctx.remora(cfg.bootstrap("""
              - match: { prefix: "/" }
                route: { cluster: backend }""", [cfg.cluster("backend", [up.port])],
                                      hcm_extra=extra), wait=False)
        px.p.wait(30)
        out = px.output()
        assert px.p.returncode == 1, out
        assert "access_log[0].typed_config.log_format.text_format" in out and want in out, out
    extra = """
          access_log:
          - name: envoy.access_loggers.file
            filter: {}
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: /dev/null"""
    px = ctx.remora(cfg.bootstrap("""
              - match: { prefix: "/" }
                route: { cluster: backend }""", [cfg.cluster("backend", [up.port])],
                              hcm_extra=extra), wait=False)
    px.p.wait(30)
    out = px.output()
    assert px.p.returncode == 1, out
    assert "access_log[0].filter: one of status_code_filter, duration_filter" in out, out


def test_access_log_reopened_on_sigusr1(ctx):
    """Log rotation as with Envoy: the file is renamed, SIGUSR1 makes remora open the path
    again; lines before go to the renamed file, lines after to the new one."""
    import signal
    up = ctx.upstream(name="b1")
    path = os.path.join(ctx.tmp, "rotate.log")
    y = cfg.bootstrap("""
              - match: { prefix: "/" }
                route: { cluster: backend }""", [cfg.cluster("backend", [up.port])],
                      hcm_extra="""
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: %s""" % path)
    px = ctx.remora(y)
    assert ctx.curl(f"http://127.0.0.1:{px.port}/before").status == 200
    assert "/before" in wait_lines(path, 1)[0]
    os.rename(path, path + ".1")
    px.p.send_signal(signal.SIGUSR1)
    deadline = time.time() + 10
    while not os.path.exists(path):
        if time.time() > deadline:
            raise TestFailure("SIGUSR1 did not reopen the access log path")
        time.sleep(0.05)
    assert ctx.curl(f"http://127.0.0.1:{px.port}/after").status == 200
    after = wait_lines(path, 1)
    assert len(after) == 1 and "/after" in after[0], after
    with open(path + ".1") as f:
        old = f.read().splitlines()
    assert len(old) == 1 and "/before" in old[0], old
    assert ctx.stop(px) == 0


def filtered_log(path, filt):
    """A file logger writing "PATH CODE FLAGS" lines, with `filt` (YAML at 12 spaces) as its
    filter."""
    return """
          - name: envoy.access_loggers.file
            filter:
%s
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: %s
              log_format:
                text_format_source:
                  inline_string: "%%REQ(:PATH)%% %%RESPONSE_CODE%% %%RESPONSE_FLAGS%%\\n"
""".rstrip("\n") % (filt, path)


def test_access_log_filters(ctx):
    """AccessLog.filter with real requests: each logger writes exactly the streams its filter
    accepts (the files are read after remora exited, so every buffered line is out)."""
    up = ctx.upstream(name="b1")
    dead = free_port()
    paths = {k: os.path.join(ctx.tmp, k + ".log")
             for k in ("errors", "nr", "grpc", "slow", "sampled", "all")}
    loggers = {
        # status >= 500, or (x-debug present and not a health check)
        "errors": """
              or_filter:
                filters:
                - status_code_filter: { comparison: { op: GE, value: { default_value: 500 } } }
                - and_filter:
                    filters:
                    - header_filter: { header: { name: x-debug, present_match: true } }
                    - not_health_check_filter: {}""",
        "nr": """
              response_flag_filter: { flags: [ NR, UH ] }""",
        # no grpc-status anywhere: derived from the HTTP status (503 -> UNAVAILABLE)
        "grpc": """
              grpc_status_filter: { statuses: [ UNAVAILABLE, DEADLINE_EXCEEDED ] }""",
        "slow": """
              and_filter:
                filters:
                - duration_filter: { comparison: { op: GE, value: { default_value: 300 } } }
                - log_type_filter: { types: [ DownstreamEnd ] }""",
        # 50 %, decided by the first 8 hex digits of x-request-id (as Envoy's UUIDs)
        "sampled": """
              runtime_filter:
                runtime_key: access_log.sampled
                percent_sampled: { numerator: 50, denominator: HUNDRED }""",
        "all": """
              traceable_filter: {}""",
    }
    extra = "\n          access_log:" + "".join(
        filtered_log(paths[k], loggers[k]) for k in paths if k != "all")
    # "all" is the unfiltered reference logger
    extra += """
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: %s
              log_format:
                text_format_source:
                  inline_string: "%%REQ(:PATH)%% %%RESPONSE_CODE%% %%RESPONSE_FLAGS%%\\n"
""".rstrip("\n") % paths["all"]
    routes = """
              - match: { prefix: "/ok" }
                route: { cluster: backend }
              - match: { prefix: "/dead" }
                route: { cluster: dead }"""
    px = ctx.remora(cfg.bootstrap(routes, [cfg.cluster("backend", [up.port]),
                                           cfg.cluster("dead", [dead])], hcm_extra=extra))
    base = f"http://127.0.0.1:{px.port}"
    reqs = [
        ("/ok/plain", {"x-request-id": "00000060-0000-4000-8000-000000000001"}, 200),
        ("/ok/500", {"x-upstream-status": "500",
                     "x-request-id": "00000010-0000-4000-8000-000000000002"}, 500),
        ("/ok/debug", {"x-debug": "1",
                       "x-request-id": "00000031-0000-4000-8000-000000000003"}, 200),
        ("/dead", {"x-request-id": "00000032-0000-4000-8000-000000000004"}, 503),
        ("/missing", {"x-request-id": "00000000-0000-4000-8000-000000000005"}, 404),
        ("/ok/slow", {"x-upstream-delay-ms": "600",
                      "x-request-id": "00000063-0000-4000-8000-000000000006"}, 200),
    ]
    for path, hdrs, want in reqs:
        r = ctx.curl(base + path, headers=hdrs)
        assert r.status == want, (path, r)
    assert ctx.stop(px) == 0

    def lines(k):
        if not os.path.exists(paths[k]):
            return []
        with open(paths[k]) as f:
            return f.read().splitlines()

    assert lines("all") == ["/ok/plain 200 -", "/ok/500 500 -", "/ok/debug 200 -",
                            "/dead 503 UF", "/missing 404 NR", "/ok/slow 200 -"], lines("all")
    assert lines("errors") == ["/ok/500 500 -", "/ok/debug 200 -", "/dead 503 UF"], \
        lines("errors")
    assert lines("nr") == ["/missing 404 NR"], lines("nr")
    assert lines("grpc") == ["/dead 503 UF"], lines("grpc")
    assert lines("slow") == ["/ok/slow 200 -"], lines("slow")
    # 0x10 = 16, 0x31 = 49, 0x00 = 0 sampled; 0x60 = 96, 0x32 = 50, 0x63 = 99 not
    assert lines("sampled") == ["/ok/500 500 -", "/ok/debug 200 -", "/missing 404 NR"], \
        lines("sampled")


def test_access_log_filter_config_errors(ctx):
    """A filter remora cannot honour stops the bootstrap (exit 1) with the field path."""
    up = ctx.upstream()
    cases = (
        ("""
              and_filter:
                filters:
                - not_health_check_filter: {}
                - response_flag_filter: { flags: [ UF, BOGUS ] }""",
         "access_log[0].filter.and_filter.filters[1].response_flag_filter.flags[1]: "
         "unknown response flag \"BOGUS\""),
        ("""
              or_filter:
                filters:
                - status_code_filter: { comparison: { op: GE } }
                - traceable_filter: {}""",
         "access_log[0].filter.or_filter.filters[0].status_code_filter.comparison.value: "
         "required"),
        ("""
              metadata_filter:
                matcher:
                  filter: envoy.common
                  path: [ { key: access_log_hint } ]
                  value: { bool_match: true }""",
         "access_log[0].filter.metadata_filter: metadata filters are not supported by remora"),
    )
    for filt, want in cases:
        extra = "\n          access_log:" + filtered_log("/dev/null", filt)
        px = ctx.remora(cfg.bootstrap("""
              - match: { prefix: "/" }
                route: { cluster: backend }""", [cfg.cluster("backend", [up.port])],
                                      hcm_extra=extra), wait=False)
        px.p.wait(30)
        out = px.output()
        assert px.p.returncode == 1, out
        assert want in out, out


def test_access_log_filter_over_xds(ctx):
    """The same filters from a control plane (build/remora-xds, binary xDS): a listener whose
    access log has a header_filter is ACKed and logs only the marked requests; an update with a
    metadata_filter is NACKed with the field path, and the listener keeps its old config."""
    import harness
    from test_xds_lds_cds import (HCM, ROUTER, T, bootstrap, cla, cluster, put, route, start,
                                  wait_for)
    from test_xds_server import Xds

    def lst(port, path, filt):
        return f"""
- "@type": {T}envoy.config.listener.v3.Listener
  name: l1
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": {HCM}
        stat_prefix: l1
        access_log:
        - name: envoy.access_loggers.file
          filter: {filt}
          typed_config:
            "@type": {T}envoy.extensions.access_loggers.file.v3.FileAccessLog
            path: {path}
            log_format: {{ text_format_source: {{ inline_string: "%REQ(:PATH)% %RESPONSE_CODE%\\n" }} }}
        rds: {{ route_config_name: r1, config_source: {{ ads: {{}}, resource_api_version: V3 }} }}
        http_filters:
        - name: envoy.filters.http.router
          typed_config: {{ "@type": {ROUTER} }}"""

    a = ctx.upstream(name="a")
    d = start(ctx, "alog")
    lport = harness.free_port()
    path = os.path.join(ctx.tmp, "xds-access.log")
    marked = ("{ or_filter: { filters: [ { header_filter: { header: { name: x-log, "
              "present_match: true } } }, { response_flag_filter: { flags: [ NR ] } } ] } }")
    put(d, "l.yaml", lst(lport, path, marked))
    put(d, "r.yaml", route("r1", "c1"))
    put(d, "c.yaml", cluster("c1"), cla("c1", a.port))
    xds = Xds(ctx, d)
    px = ctx.remora(bootstrap(xds.port), wait=False)
    harness.wait_port(px.admin, proc=px.p)
    wait_for("/ready", lambda: ctx.curl(f"http://127.0.0.1:{px.admin}/ready").status == 200)
    base = f"http://127.0.0.1:{lport}"
    assert ctx.curl(base + "/quiet").status == 200
    assert ctx.curl(base + "/loud", headers={"x-log": "1"}).status == 200

    bad = ("{ and_filter: { filters: [ { not_health_check_filter: {} }, { metadata_filter: "
           "{ matcher: { filter: envoy.common, path: [ { key: hint } ], value: { bool_match: "
           "true } } } } ] } }")
    put(d, "l.yaml", lst(lport, path, bad))
    xds.wait_log("NACK node=sidecar-lds-1 type=Listener")
    log = xds.log()
    assert "access_log[0].filter.and_filter.filters[1].metadata_filter: metadata filters are " \
           "not supported by remora" in log, log[-3000:]
    # still the first config: /quiet2 is not logged, /loud2 is
    assert ctx.curl(base + "/quiet2").status == 200
    assert ctx.curl(base + "/loud2", headers={"x-log": "yes"}).status == 200
    assert ctx.stop(px) == 0
    with open(path) as f:
        got = f.read().splitlines()
    assert got == ["/loud 200", "/loud2 200"], got


PAD = "x" * 1000  # ~1 KiB lines: a few thousand requests pass the 1 MiB cap


def spawn_remora_stdout_pipe(ctx, yaml_text):
    """remora with stdout on a pipe (its read end returned, nothing reads it yet) and stderr on
    the usual log file; killed by PID with the test's other processes."""
    port, admin = free_port(), free_port()
    path = os.path.join(ctx.tmp, "stall.yaml")
    with open(path, "w") as f:
        f.write(yaml_text.replace("{admin}", str(admin)).replace("{port0}", str(port)))
    r, w = os.pipe()
    log = os.path.join(ctx.tmp, "remora-stall.log")
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:quarantine_size_mb=4")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    with open(log, "wb") as f:
        p = subprocess.Popen([ctx.bin("remora"), "-c", path, "--concurrency", "1"], stdout=w,
                             stderr=f, stdin=subprocess.DEVNULL, env=env,
                             start_new_session=True)
    os.close(w)
    px = Proc(p, log, port)
    px.admin = admin
    ctx.procs.append(px)
    wait_port(admin, proc=p)
    wait_port(port, proc=p)
    return px, r


def alog_stats(ctx, px):
    r = ctx.curl(f"http://127.0.0.1:{px.admin}/stats?filter=access_log")
    assert r.status == 200, r
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"^access_log\.(\w+): (\d+)$", r.body.decode(), re.M)}


def h2load(url, n, timeout):
    """n HTTP/1.1 requests on 4 connections; fails unless all succeed within `timeout` s."""
    t0 = time.monotonic()
    try:
        out = subprocess.run(["h2load", "--h1", "-n", str(n), "-c", "4", url],
                             capture_output=True, timeout=timeout).stdout.decode()
    except subprocess.TimeoutExpired:
        raise TestFailure(f"{n} requests to {url} not answered within {timeout}s")
    assert f"{n} succeeded, 0 failed" in out, out
    return time.monotonic() - t0


def stalled_remora(ctx):
    """remora logging ~1 KiB lines to a stdout pipe nobody reads yet: (Proc, read end)."""
    up = ctx.upstream(name="b1")
    extra = """
          access_log:
          - name: envoy.access_loggers.stdout
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
              log_format:
                text_format_source:
                  inline_string: "ALOG %%REQ(:PATH)%% %s\\n"
""".rstrip("\n") % PAD
    return spawn_remora_stdout_pipe(ctx, cfg.bootstrap("""
              - match: { prefix: "/" }
                route: { cluster: backend }""", [cfg.cluster("backend", [up.port])],
                                                    hcm_extra=extra))


def test_access_log_stdout_stalled(ctx):
    """stdout is a pipe the test does not read: the pipe fills at 64 KiB, the flush thread
    blocks in write(2), yet 3,000 requests are all answered promptly (a worker never writes),
    lines past the 1 MiB cap are dropped and counted, and what was accepted stays under it.
    Then the test reads the pipe: every accepted line arrives whole, and later lines too."""
    px, rfd = stalled_remora(ctx)
    n = 3000
    took = h2load(f"http://127.0.0.1:{px.port}/blk", n, timeout=30)
    deadline = time.time() + 10
    st = alog_stats(ctx, px)
    while st.get("written", 0) + st.get("dropped", 0) < n and time.time() < deadline:
        time.sleep(0.1)
        st = alog_stats(ctx, px)
    assert st["written"] + st["dropped"] == n, st
    assert st["dropped"] > 0, st
    line_len = len("ALOG /blk ") + len(PAD) + 1
    assert st["written"] * line_len <= 1024 * 1024 + line_len, st  # the cap held
    print(f"    {n} requests in {took:.2f}s with stdout stalled; access_log: {st}")

    got = bytearray()

    def reader():
        while True:
            b = os.read(rfd, 65536)
            if not b:
                return
            got.extend(b)

    threading.Thread(target=reader, daemon=True).start()

    def lines_with(prefix, want, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline:
            text = bytes(got).decode()
            k = sum(1 for l in text.splitlines() if l.startswith(prefix))
            if k >= want:
                return text
            time.sleep(0.1)
        raise TestFailure(f"{k} lines {prefix!r}, {want} expected")

    lines_with("ALOG /blk ", st["written"])
    for i in range(20):
        assert ctx.curl(f"http://127.0.0.1:{px.port}/after/{i}").status == 200
    text = lines_with("ALOG /after/", 20)
    lines = text.splitlines()
    bad = [l for l in lines if not re.fullmatch(r"ALOG /(blk|after/\d+) " + PAD, l)]
    assert not bad, bad[:3]
    assert [l.split()[1] for l in lines[-20:]] == [f"/after/{i}" for i in range(20)], lines[-20:]
    st2 = alog_stats(ctx, px)
    assert st2["dropped"] == st["dropped"] and st2["written"] == st["written"] + 20, (st, st2)
    assert ctx.stop(px) == 0, px.output()[-3000:]


def test_access_log_stdout_stalled_exit(ctx):
    """SIGTERM while the flush thread is blocked on a full stdout pipe: remora still exits,
    cleanly (exit 0, no sanitizer report), a few seconds after the drain (the flush thread's
    write is given 5 s, then cancelled and its lines counted as dropped)."""
    px, rfd = stalled_remora(ctx)
    h2load(f"http://127.0.0.1:{px.port}/blk", 500, timeout=30)
    deadline = time.time() + 10
    while alog_stats(ctx, px).get("written", 0) < 500 and time.time() < deadline:
        time.sleep(0.1)
    t0 = time.monotonic()
    rc = ctx.stop(px, timeout=20)
    took = time.monotonic() - t0
    os.close(rfd)
    assert rc == 0, px.output()[-3000:]
    assert took >= 4, f"exited in {took:.1f}s: the blocked write was not waited for"
    print(f"    exited {took:.1f}s after SIGTERM with stdout stalled")


# ---- Istio's default format ----------------------------------------------------------------

import test_tls as tls_helpers  # noqa: E402  (certificates, TLS listener and cluster YAML)

# meshConfig.accessLogFile with the default TEXT format (Istio 1.8 onwards)
ISTIO_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" '
    '%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% '
    '"%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% '
    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" '
    '"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER% '
    '%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% '
    '%REQUESTED_SERVER_NAME% %ROUTE_NAME%\n')
ISTIO_FIELDS = ("start", "method", "path", "protocol", "code", "flags", "details", "ctd",
                "transport", "rx", "tx", "duration", "ust", "xff", "ua", "rid", "authority",
                "upstream", "cluster", "up_local", "down_local", "down_remote", "sni", "route")
ISTIO_RE = re.compile(
    r'^\[(\S+)\] "(\S+) (\S+) (\S+)" (\d+) (\S+) (\S+) (\S+) "([^"]*)" (\d+) (\d+) (\d+) (\S+) '
    r'"([^"]*)" "([^"]*)" "([^"]*)" "([^"]*)" "([^"]*)" (\S+) (\S+) (\S+) (\S+) (\S+) (\S+)$')
# the other operators control planes use, one line each
MORE_FORMAT = (
    "%REQ(X-REQUEST-ID)% %UPSTREAM_REMOTE_ADDRESS% %UPSTREAM_REQUEST_ATTEMPT_COUNT% "
    "%CONNECTION_ID% %REQ_WITHOUT_QUERY(X-ENVOY-ORIGINAL-PATH?:PATH)% %DOWNSTREAM_TLS_VERSION% "
    "%DOWNSTREAM_TLS_CIPHER% %DOWNSTREAM_PEER_URI_SAN% %DOWNSTREAM_LOCAL_URI_SAN% "
    "%UPSTREAM_PEER_URI_SAN% %DYNAMIC_METADATA(istio.mixer:status)% "
    "%FILTER_STATE(wasm.upstream_peer:PLAIN)% %START_TIME(%s.%3f)%\n")
MORE_FIELDS = ("rid", "upstream", "attempts", "conn_id", "path", "tls_version", "tls_cipher",
               "peer_san", "local_san", "up_peer_san", "metadata", "filter_state", "start")


def istio_logs(istio_path, more_path):
    out = ""
    for path, fmt in ((istio_path, ISTIO_FORMAT), (more_path, MORE_FORMAT)):
        out += """
          access_log:""" if not out else ""
        out += """
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: %s
              log_format:
                text_format: %s""" % (path, json.dumps(fmt))
    return out


def istio_lines(path, n):
    out = {}
    for line in wait_lines(path, n):
        m = ISTIO_RE.match(line)
        assert m, line
        f = dict(zip(ISTIO_FIELDS, m.groups()))
        out[f["rid"]] = f
    assert len(out) == n, out
    return out


def more_lines(path, n):
    out = {}
    for line in wait_lines(path, n):
        parts = line.split(" ")
        assert len(parts) == len(MORE_FIELDS), line
        f = dict(zip(MORE_FIELDS, parts))
        out[f["rid"]] = f
    return out


def local_tcp_ports(remote_port):
    """Local ports of the established loopback TCP connections to <remote_port>
    (/proc/net/tcp: every socket of the network namespace)."""
    ports = set()
    with open("/proc/net/tcp") as f:
        for line in f.read().splitlines()[1:]:
            cols = line.split()
            local, remote, state = cols[1], cols[2], cols[3]
            if state == "01" and int(remote.split(":")[1], 16) == remote_port:
                if local.split(":")[0] == "0100007F":
                    ports.add(int(local.split(":")[1], 16))
    return ports


def test_access_log_istio_default_format(ctx):
    """Istio's exact default format through real requests: a proxied 200 (its upstream local
    address is a socket remora really has open to the upstream), a rewritten path logged by its
    original, a 404 without a route, a 503 to a port nobody listens on (the connect error as
    transport failure reason, inside the details too)."""
    up = ctx.upstream(name="b1")
    dead = free_port()
    istio_path = os.path.join(ctx.tmp, "istio.log")
    more_path = os.path.join(ctx.tmp, "more.log")
    routes = """
              - match: { prefix: "/rw/" }
                name: rewrite_route
                route: { cluster: backend, prefix_rewrite: "/ok/" }
              - match: { prefix: "/ok" }
                name: ok_route
                route: { cluster: backend }
              - match: { prefix: "/dead" }
                name: dead_route
                route: { cluster: dead }"""
    px = ctx.remora(cfg.bootstrap(routes, [cfg.cluster("backend", [up.port]),
                                           cfg.cluster("dead", [dead])],
                                  hcm_extra=istio_logs(istio_path, more_path)))
    base = f"http://127.0.0.1:{px.port}"
    r = ctx.curl(base + "/ok/1?a=b", headers={"x-request-id": "r-ok", "user-agent": "ua one"})
    assert r.status == 200, r
    r = ctx.curl(base + "/rw/2?q=1", headers={"x-request-id": "r-rw"})
    assert r.status == 200, r
    r = ctx.curl(base + "/missing", headers={"x-request-id": "r-nr"}, http2=True)
    assert r.status == 404, r
    r = ctx.curl(base + "/dead", headers={"x-request-id": "r-uf"})
    assert r.status == 503, r

    lines = istio_lines(istio_path, 4)
    ok, rw, nr, uf = lines["r-ok"], lines["r-rw"], lines["r-nr"], lines["r-uf"]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", ok["start"]), ok
    assert (ok["method"], ok["path"], ok["protocol"], ok["code"], ok["flags"]) == \
        ("GET", "/ok/1?a=b", "HTTP/1.1", "200", "-"), ok
    assert (ok["details"], ok["ctd"], ok["transport"]) == ("via_upstream", "-", "-"), ok
    assert ok["ust"].isdigit() and ok["ua"] == "ua one" and ok["xff"] == "-", ok
    assert ok["authority"] == f"127.0.0.1:{px.port}", ok
    assert (ok["upstream"], ok["cluster"], ok["route"]) == \
        (f"127.0.0.1:{up.port}", "backend", "ok_route"), ok
    host, _, port = ok["up_local"].rpartition(":")
    assert host == "127.0.0.1" and int(port) in local_tcp_ports(up.port), \
        (ok, local_tcp_ports(up.port))  # the pooled connection is still open
    assert ok["down_local"] == f"127.0.0.1:{px.port}", ok
    assert re.match(r"^127\.0\.0\.1:\d+$", ok["down_remote"]) and ok["sni"] == "-", ok
    assert (rw["path"], rw["details"], rw["route"]) == \
        ("/rw/2?q=1", "via_upstream", "rewrite_route"), rw
    assert rw["up_local"] == ok["up_local"], (rw, ok)  # the same keep-alive connection

    assert (nr["protocol"], nr["code"], nr["flags"], nr["details"]) == \
        ("HTTP/2", "404", "NR", "route_not_found"), nr
    assert (nr["upstream"], nr["cluster"], nr["up_local"], nr["route"]) == \
        ("-", "-", "-", "-"), nr

    assert (uf["code"], uf["flags"]) == ("503", "UF"), uf
    assert uf["details"] == ("upstream_reset_before_response_started"
                             "{connection_failure,delayed_connect_error:_111}"), uf
    assert uf["transport"] == "delayed connect error: 111", uf
    assert (uf["upstream"], uf["cluster"], uf["up_local"], uf["route"]) == \
        (f"127.0.0.1:{dead}", "dead", "-", "dead_route"), uf
    assert uf["ust"] == "-" and int(uf["tx"]) > 0, uf

    more = more_lines(more_path, 4)
    m_ok, m_rw, m_nr, m_uf = more["r-ok"], more["r-rw"], more["r-nr"], more["r-uf"]
    assert (m_ok["upstream"], m_ok["attempts"], m_ok["path"]) == \
        (f"127.0.0.1:{up.port}", "1", "/ok/1"), m_ok
    assert m_rw["path"] == "/rw/2" and m_nr["attempts"] == "0" and m_uf["attempts"] == "1", more
    ids = {f["conn_id"] for f in more.values()}
    assert all(i.isdigit() and int(i) > 0 for i in ids) and len(ids) == 4, more  # one per curl
    for f in more.values():
        assert [f[k] for k in ("tls_version", "tls_cipher", "peer_san", "local_san",
                               "up_peer_san", "metadata", "filter_state")] == ["-"] * 7, f
        assert re.match(r"^\d{10}\.\d{3}$", f["start"]), f
    assert ctx.stop(px) == 0


def test_access_log_istio_default_format_tls(ctx):
    """A TLS listener (mutual TLS): the SNI the client sent, the TLS version and cipher, both
    URI SANs; a TLS cluster: its certificate's URI SAN; a cluster whose certificate fails
    verification: the TLS failure as transport failure reason."""
    c = tls_helpers.certs(ctx)
    up = ctx.upstream(name="b1")
    tls_up = tls_helpers.tls_upstream(ctx)
    istio_path = os.path.join(ctx.tmp, "istio.log")
    more_path = os.path.join(ctx.tmp, "more.log")
    y = cfg.bootstrap("""
              - match: { prefix: "/bad" }
                route: { cluster: bad }
              - match: { prefix: "/tls" }
                route: { cluster: good }
              - match: { prefix: "/" }
                name: all_route
                route: { cluster: backend }""",
                      [cfg.cluster("backend", [up.port]),
                       cfg.cluster("good", [tls_up.port], extra=tls_helpers.upstream_tls(c)),
                       cfg.cluster("bad", [tls_up.port],
                                   extra=tls_helpers.upstream_tls(c, ca_key="other_ca"))],
                      hcm_extra=istio_logs(istio_path, more_path))
    old = "    filter_chains:\n    - filters:"
    assert old in y
    y = y.replace(old, "    filter_chains:" + tls_helpers.downstream_tls(c, mtls=True))
    px = ctx.remora(y)
    r = tls_helpers.https(ctx, px.port, "/x", client="client", headers={"x-request-id": "t-1"})
    assert r.status == 200, r
    r = tls_helpers.https(ctx, px.port, "/y", client="client", http2=True,
                          headers={"x-request-id": "t-2"})
    assert r.status == 200, r
    r = tls_helpers.https(ctx, px.port, "/bad", client="client",
                          headers={"x-request-id": "t-3"})
    assert r.status == 503, r
    r = tls_helpers.https(ctx, px.port, "/tls", client="client",
                          headers={"x-request-id": "t-4"})
    assert r.status == 200, r

    lines = istio_lines(istio_path, 4)
    t1, t2, t3 = lines["t-1"], lines["t-2"], lines["t-3"]
    assert (t1["protocol"], t1["code"], t1["details"], t1["sni"], t1["route"]) == \
        ("HTTP/1.1", "200", "via_upstream", "localhost", "all_route"), t1
    assert t1["authority"] == f"localhost:{px.port}", t1
    assert (t2["protocol"], t2["sni"]) == ("HTTP/2", "localhost"), t2
    assert (t3["code"], t3["flags"], t3["sni"]) == ("503", "UF", "localhost"), t3
    assert t3["transport"] == "TLS error: certificate verify failed", t3
    assert t3["details"] == ("upstream_reset_before_response_started{connection_failure,"
                             "TLS_error:_certificate_verify_failed}"), t3

    t4 = lines["t-4"]
    assert (t4["code"], t4["details"], t4["cluster"], t4["transport"]) == \
        ("200", "via_upstream", "good", "-"), t4
    host, _, port = t4["up_local"].rpartition(":")
    assert host == "127.0.0.1" and int(port) in local_tcp_ports(tls_up.port), t4

    more = more_lines(more_path, 4)
    for f in more.values():
        assert f["tls_version"] in ("TLSv1.2", "TLSv1.3"), f
        assert f["tls_cipher"] != "-" and f["tls_cipher"] != "(NONE)", f
        assert f["peer_san"] == tls_helpers.CLIENT_SPIFFE, f
        assert f["local_san"] == tls_helpers.SERVER_SPIFFE, f
    assert more["t-4"]["up_peer_san"] == tls_helpers.SERVER_SPIFFE, more
    assert more["t-1"]["up_peer_san"] == "-" and more["t-3"]["up_peer_san"] == "-", more
    assert more["t-1"]["conn_id"] != more["t-2"]["conn_id"], more
    assert ctx.stop(px) == 0


def test_access_log_response_code_details(ctx):
    """RESPONSE_CODE_DETAILS for each way remora answers: Envoy's strings."""
    import test_filters as filters_helpers  # local: its names must not become tests here
    up = ctx.upstream(name="b1")
    path = os.path.join(ctx.tmp, "details.log")
    lrl = filters_helpers.LRL_TYPE
    routes = """
              - match: { prefix: "/limited" }
                route: { cluster: backend }
                typed_per_filter_config:
                  envoy.filters.http.local_ratelimit:
                    "@type": %s
                    stat_prefix: rt
                    token_bucket: { max_tokens: 1, fill_interval: 3600s }
%s
              - match: { prefix: "/direct" }
                direct_response: { status: 202 }
              - match: { prefix: "/redirect" }
                redirect: { host_redirect: "example.com" }
              - match: { prefix: "/timeout" }
                route: { cluster: backend, timeout: 0.2s }
              - match: { prefix: "/pertry" }
                route:
                  cluster: backend
                  timeout: 5s
                  retry_policy: { retry_on: "5xx", num_retries: 0, per_try_timeout: 0.2s }
              - match: { prefix: "/nohosts" }
                route: { cluster: empty }
              - match: { prefix: "/" }
                route: { cluster: backend }""" % (lrl, filters_helpers.indent(
        filters_helpers.ALWAYS, 20))
    extra = """
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: %s
              log_format:
                text_format: "%%REQ(X-REQUEST-ID)%% %%RESPONSE_CODE%% %%RESPONSE_FLAGS%% %%RESPONSE_CODE_DETAILS%% %%UPSTREAM_REQUEST_ATTEMPT_COUNT%%\\n"
""".rstrip("\n") % path
    y = cfg.bootstrap(routes, [cfg.cluster("backend", [up.port]), cfg.cluster("empty", [])],
                      hcm_extra=extra)
    y = filters_helpers.with_filters(
        y, filters_helpers.lrl_filter("stat_prefix: listener"),
        filters_helpers.fault_filter(
            "abort: { header_abort: {}, percentage: { numerator: 100 } }"))
    px = ctx.remora(y)
    base = f"http://127.0.0.1:{px.port}"
    slow = {"x-upstream-delay-ms": "3000"}
    want = [
        ("/limited", {}, 200, "- via_upstream 1"),
        ("/limited", {}, 429, "RL local_rate_limited 0"),
        ("/direct", {}, 202, "- direct_response 0"),
        ("/redirect", {}, 301, "- direct_response 0"),
        ("/timeout", slow, 504, "UT response_timeout 1"),
        ("/pertry", slow, 504, "UT,URX upstream_per_try_timeout 1"),
        ("/nohosts", {}, 503, "UH no_healthy_upstream 1"),
        ("/fault", {"x-envoy-fault-abort-request": "418"}, 418, "FI fault_filter_abort 0"),
        ("/reset", {"x-upstream-reset": "before-headers"}, 503,
         "UC upstream_reset_before_response_started{connection_termination} 1"),
    ]
    for i, (p, h, code, _) in enumerate(want):
        r = ctx.curl(base + p, headers=dict(h, **{"x-request-id": f"d{i}"}))
        assert r.status == code, (p, r)
    r = ctx.curl(base + "/gone", timeout=0.5, http2=True,
                 headers=dict(slow, **{"x-request-id": "dc"}))
    assert r.status == 0, r  # the client gave up: its connection closed under the stream
    # the same over HTTP/1.1: remora reads nothing while the request is in flight, yet sees the
    # client's FIN (EPOLLRDHUP + MSG_PEEK) and ends the stream instead of waiting 3 s for a 200
    r = ctx.curl(base + "/gone", timeout=0.5, headers=dict(slow, **{"x-request-id": "dc1"}))
    assert r.status == 0, r
    # an HTTP/2 client cancels its stream (RST_STREAM) while the upstream is still thinking
    import h2.config
    import h2.connection
    import socket
    sock = socket.create_connection(("127.0.0.1", px.port), timeout=5.0)
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    c.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":authority", "x"),
                       (":path", "/cancel"), ("x-request-id", "rst"),
                       ("x-upstream-delay-ms", "3000")], end_stream=True)
    sock.sendall(c.data_to_send())
    time.sleep(0.3)
    c.reset_stream(1)
    sock.sendall(c.data_to_send())
    lines = {l.split(" ", 1)[0]: l.split(" ", 1)[1] for l in wait_lines(path, len(want) + 3)}
    sock.close()
    assert lines.get("rst") == "0 DC http2.remote_reset 1", lines
    for i, (p, _, code, tail) in enumerate(want):
        assert lines.get(f"d{i}") == f"{code} {tail}", (p, lines.get(f"d{i}"), lines)
    assert lines.get("dc") == "0 DC downstream_remote_disconnect 1", lines
    assert lines.get("dc1") == "0 DC downstream_remote_disconnect 1", lines
    assert ctx.stop(px) == 0
