"""The CORS HTTP filter (envoy.filters.http.cors) end to end: preflights answered by remora,
simple requests' responses given the Access-Control-* headers, policies merged per field from
the route up to the route configuration, as Envoy does."""

import remora_cfg as cfg
from harness import admin_stats as stats

POLICY = '"@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy'


def with_cors(y):
    return cfg.with_http_filter(y, "envoy.filters.http.cors",
                                "envoy.extensions.filters.http.cors.v3.Cors")


def bootstrap(up):
    routes = """
              - match: { prefix: "/api" }
                route: { cluster: backend }
                typed_per_filter_config:
                  envoy.filters.http.cors:
                    %s
                    allow_methods: "GET, PUT"
                    expose_headers: x-upstream-name
              - match: { prefix: "/star" }
                route: { cluster: backend }
                typed_per_filter_config:
                  envoy.filters.http.cors:
                    %s
                    allow_origin_string_match: [{ exact: "*" }]
                    allow_methods: "*"
                    allow_headers: "*"
                    forward_not_matching_preflights: false
              - match: { prefix: "/shadow" }
                route: { cluster: backend }
                typed_per_filter_config:
                  envoy.filters.http.cors:
                    %s
                    filter_enabled: { default_value: { numerator: 0 } }
                    shadow_enabled: { default_value: { numerator: 100 } }
              - match: { prefix: "/" }
                route: { cluster: backend }""" % (POLICY, POLICY, POLICY)
    vhost = """
              typed_per_filter_config:
                envoy.filters.http.cors:
                  %s
                  allow_origin_string_match: [{ suffix: ".example.com" }]
                  allow_headers: "content-type, x-token"
                  max_age: "600"
                  allow_credentials: true""" % POLICY
    return with_cors(cfg.bootstrap(routes, [cfg.cluster("backend", [up.port])],
                                   vhost_extra=vhost))


def test_cors_preflight_and_simple_requests(ctx):
    up = ctx.upstream(name="up1")
    px = ctx.remora(bootstrap(up))
    base = f"http://127.0.0.1:{px.port}"
    pre = {"origin": "https://app.example.com", "access-control-request-method": "PUT"}
    # preflight: answered by remora; route settings merged with the virtual host's
    r = ctx.curl(base + "/api/x", method="OPTIONS", headers=pre)
    assert r.status == 200 and "x-upstream-name" not in r.headers, r
    assert r.headers["access-control-allow-origin"] == "https://app.example.com", r.headers
    assert r.headers["access-control-allow-methods"] == "GET, PUT", r.headers
    assert r.headers["access-control-allow-headers"] == "content-type, x-token", r.headers
    assert r.headers["access-control-max-age"] == "600", r.headers
    assert r.headers["access-control-allow-credentials"] == "true", r.headers
    # a simple request: forwarded; the response carries the CORS headers
    r = ctx.curl(base + "/api/x", headers={"origin": "https://app.example.com"})
    assert r.status == 200 and r.headers.get("x-upstream-name") == "up1", r
    assert r.headers["access-control-allow-origin"] == "https://app.example.com", r.headers
    assert r.headers["access-control-expose-headers"] == "x-upstream-name", r.headers
    # an origin not allowed: no CORS headers; its preflight goes to the upstream (default)
    bad = dict(pre, origin="https://evil.test")
    r = ctx.curl(base + "/api/x", headers={"origin": "https://evil.test"})
    assert r.status == 200 and "access-control-allow-origin" not in r.headers, r.headers
    r = ctx.curl(base + "/api/x", method="OPTIONS", headers=bad)
    assert r.headers.get("x-upstream-name") == "up1", r
    # "*": any origin, methods and headers echoed from the preflight; not forwarded
    star = dict(pre, origin="https://any.test")
    star["access-control-request-headers"] = "x-a, x-b"
    r = ctx.curl(base + "/star", method="OPTIONS", headers=star)
    assert r.status == 200 and "x-upstream-name" not in r.headers, r
    assert r.headers["access-control-allow-methods"] == "PUT", r.headers
    assert r.headers["access-control-allow-headers"] == "x-a, x-b", r.headers
    assert r.headers["access-control-allow-origin"] == "https://any.test", r.headers
    # no Origin: not a CORS request, not counted
    r = ctx.curl(base + "/api/x", method="OPTIONS", headers={"access-control-request-method": "GET"})
    assert r.headers.get("x-upstream-name") == "up1", r
    # shadow mode: counted, never enforced
    r = ctx.curl(base + "/shadow", method="OPTIONS", headers=pre)
    assert r.headers.get("x-upstream-name") == "up1", r
    assert "access-control-allow-origin" not in r.headers, r.headers
    s = stats(ctx, px)
    assert s["http.ingress_http.cors.origin_valid"] == 4, s
    assert s["http.ingress_http.cors.origin_invalid"] == 2, s
    rc = ctx.stop(px)
    assert rc == 0, px.output()[-2000:]
