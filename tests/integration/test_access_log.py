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
