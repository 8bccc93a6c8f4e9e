"""The health check HTTP filter (envoy.filters.http.health_check) end to end: answered by remora
or passed through (with cache_time), /healthcheck/fail and /ok from the admin, cluster minimum
healthy percentages, and access logs' not_health_check filter."""
import os
import time

import remora_cfg as cfg
from harness import admin_stats, free_port

HC_TYPE = "envoy.extensions.filters.http.health_check.v3.HealthCheck"

ALOG = """
          access_log:
          - name: envoy.access_loggers.file
            filter: { not_health_check_filter: {} }
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: "%s"
              log_format:
                text_format_source:
                  inline_string: "%%REQ(:PATH)%% %%RESPONSE_CODE%%\\n\""""


def bootstrap(up, body, hcm_extra="", extra_clusters=()):
    y = cfg.bootstrap("""
              - match: { prefix: "/" }
                route: { cluster: backend }""", [cfg.cluster("backend", [up.port])] +
                      list(extra_clusters), hcm_extra=hcm_extra)
    return cfg.with_http_filter(y, "envoy.filters.http.health_check", HC_TYPE, body)


def admin_post(ctx, px, path):
    r = ctx.curl(f"http://127.0.0.1:{px.admin}{path}", method="POST")
    assert r.status == 200, r


def test_health_check_filter_answers_and_follows_admin(ctx):
    up = ctx.upstream(name="app")
    log = os.path.join(ctx.tmp, "access.log")
    px = ctx.remora(bootstrap(up, """
              pass_through_mode: false
              headers: [{ name: ":path", string_match: { exact: /healthz } }]
              cluster_min_healthy_percentages:
                backend: { value: 100 }""", hcm_extra=ALOG % log), "--service-cluster", "mesh-a")
    base = f"http://127.0.0.1:{px.port}"
    r = ctx.curl(base + "/healthz")
    assert r.status == 200 and "x-upstream-name" not in r.headers, r  # answered by remora
    assert r.headers.get("x-envoy-upstream-healthchecked-cluster") == "mesh-a", r.headers
    r = ctx.curl(base + "/app")
    assert r.status == 200 and r.headers.get("x-upstream-name") == "app", r
    assert "x-envoy-immediate-health-check-fail" not in r.headers, r.headers
    # /healthcheck/fail: checks get 503 (flag LH), other responses say so
    admin_post(ctx, px, "/healthcheck/fail")
    r = ctx.curl(base + "/healthz")
    assert r.status == 503, r
    r = ctx.curl(base + "/app")
    assert r.status == 200 and r.headers.get("x-envoy-immediate-health-check-fail") == "true", r
    admin_post(ctx, px, "/healthcheck/ok")
    assert ctx.curl(base + "/healthz").status == 200
    ctx.stop(px)
    lines = open(log).read().split()
    # not_health_check: the /healthz requests are not logged, the others are
    assert "/healthz" not in lines and lines.count("/app") >= 2, lines


def test_health_check_filter_min_healthy_and_pass_through_cache(ctx):
    up = ctx.upstream(name="app")
    checked = """
    health_checks:
    - { timeout: 0.2s, interval: 0.1s, unhealthy_threshold: 1, healthy_threshold: 1,
        tcp_health_check: {} }"""
    clusters = [cfg.cluster("empty", []),
                cfg.cluster("half", [up.port, free_port()], extra=checked)]  # one host refuses
    for mins, want in (("backend: { value: 100 }\n                half: { value: 50 }", 200),
                       ("half: { value: 51 }", 503),
                       ("empty: { value: 0 }", 200),
                       ("empty: { value: 10 }", 503),  # no host, a non-zero minimum
                       ("nosuch: { value: 0 }", 503)):  # an unknown cluster
        px = ctx.remora(bootstrap(up, """
              pass_through_mode: false
              headers: [{ name: ":path", string_match: { exact: /ready } }]
              cluster_min_healthy_percentages:
                %s""" % mins, extra_clusters=clusters), name="remora-min")
        deadline = time.monotonic() + 5
        while True:  # until the refusing host's first check has failed it
            r = ctx.curl(f"http://127.0.0.1:{px.port}/ready")
            s = admin_stats(ctx, px)
            if s.get("cluster.half.health_check.attempt", 0) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        r = ctx.curl(f"http://127.0.0.1:{px.port}/ready")
        assert r.status == want, (mins, r.status, r)
        ctx.stop(px)
    px = ctx.remora(bootstrap(up, """
              pass_through_mode: true
              cache_time: 0.5s
              headers: [{ name: ":path", string_match: { exact: /status } }]"""), name="remora2")
    base = f"http://127.0.0.1:{px.port}"
    # pass through: the upstream answers (its 503 here), and that answer is cached 0.5 s
    r = ctx.curl(base + "/status", headers={"x-upstream-status": "503"})
    assert r.status == 503 and r.headers.get("x-upstream-name") == "app", r
    r = ctx.curl(base + "/status")
    assert r.status == 503 and "x-upstream-name" not in r.headers, r  # cached, not forwarded
    time.sleep(0.7)
    r = ctx.curl(base + "/status")
    assert r.status == 200 and r.headers.get("x-upstream-name") == "app", r
    # not a health check: always forwarded
    r = ctx.curl(base + "/other", headers={"x-upstream-status": "201"})
    assert r.status == 201, r


def test_health_check_filter_config_errors(ctx):
    up = ctx.upstream()
    for body, want in (
            ("\n              headers: []", "pass_through_mode: required"),
            ("\n              pass_through_mode: false\n              cache_time: 1s",
             "cache_time: only with pass_through_mode"),
            ("\n              pass_through_mode: false\n              cluster_min_healthy_percentages:"
             "\n                backend: { value: 120 }", "must be within 0 and 100")):
        path = os.path.join(ctx.tmp, "bad.yaml")
        with open(path, "w") as f:
            f.write(bootstrap(up, body).replace("{admin}", "0").replace("{port0}", "0"))
        r = ctx.run([ctx.bin("remora"), "-c", path, "--mode", "validate"], timeout=30)
        err = r.stderr.decode() + r.stdout.decode()
        assert r.returncode == 1 and want in err, (want, r.returncode, err[-600:])
