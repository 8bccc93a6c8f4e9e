"""The RBAC HTTP filter (envoy.filters.http.rbac) end to end: remora in front of the bundled
upstream, curl from several loopback addresses, mTLS client certificates from test_tls."""
import os

import remora_cfg as cfg
from harness import admin_stats as stats
import test_tls as tt

ALOG = """
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: "%s"
              log_format:
                text_format_source:
                  inline_string: "%%REQ(:PATH)%% %%RESPONSE_CODE%% %%RESPONSE_FLAGS%% %%RESPONSE_CODE_DETAILS%%\\n\""""


def with_rbac(y, rbac):
    """Put an RBAC filter (<rbac>: the typed_config body, indented 14) before the router."""
    return cfg.with_http_filter(y, "envoy.filters.http.rbac",
                                "envoy.extensions.filters.http.rbac.v3.RBAC", rbac)


def route(prefix, extra=""):
    return """
              - match: { prefix: "%s" }
                route: { cluster: backend }%s""" % (prefix, extra)


def test_rbac_allow_and_deny_policies(ctx):
    up = ctx.upstream()
    log = os.path.join(ctx.tmp, "access.log")
    y = cfg.bootstrap(route("/"), [cfg.cluster("backend", [up.port])], hcm_extra=ALOG % log)
    y = with_rbac(y, """
              rules:
                action: ALLOW
                policies:
                  read-public:
                    permissions:
                    - and_rules:
                        rules:
                        - header: { name: ":method", string_match: { exact: GET } }
                        - url_path: { path: { prefix: /public } }
                    principals: [{ any: true }]
                  from-two:
                    permissions: [{ any: true }]
                    principals:
                    - and_ids:
                        ids:
                        - direct_remote_ip: { address_prefix: 127.0.0.2, prefix_len: 32 }
                        - not_id: { header: { name: x-block, present_match: true } }
              shadow_rules:
                action: DENY
                policies:
                  shadow-post:
                    permissions: [{ header: { name: ":method", string_match: { exact: POST } } }]
                    principals: [{ any: true }]""")
    px = ctx.remora(y)
    base = f"http://127.0.0.1:{px.port}"
    assert ctx.curl(base + "/public/a").status == 200
    # the query string is not part of url_path's path
    assert ctx.curl(base + "/public?x=/private").status == 200
    r = ctx.curl(base + "/public/a", data=b"x", method="POST")
    assert r.status == 403 and r.body == b"RBAC: access denied", r
    assert ctx.curl(base + "/private").status == 403
    # from 127.0.0.2 anything goes, unless x-block is present
    assert ctx.curl(base + "/private", "--interface", "127.0.0.2").status == 200
    r = ctx.curl(base + "/private", "--interface", "127.0.0.2", headers={"x-block": "1"})
    assert r.status == 403, r
    s = stats(ctx, px)
    assert s["http.ingress_http.rbac.allowed"] == 3, s
    assert s["http.ingress_http.rbac.denied"] == 3, s
    # shadow rules only count: one POST seen
    assert s["http.ingress_http.rbac.shadow_denied"] == 1, s
    assert s["http.ingress_http.rbac.shadow_allowed"] == 5, s
    ctx.stop(px)
    lines = open(log).read().splitlines()
    assert "/private 403 RBAC rbac_access_denied_matched_policy[none]" in lines, lines
    assert "/public/a 200 - via_upstream" in lines, lines


def test_rbac_deny_by_destination_port_and_per_route(ctx):
    up = ctx.upstream()
    y = cfg.bootstrap(
        route("/admin", """
                typed_per_filter_config:
                  envoy.filters.http.rbac:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute
                    rbac:
                      rules:
                        action: ALLOW
                        policies:
                          admins:
                            permissions: [{ any: true }]
                            principals: [{ header: { name: x-role, string_match: { exact: admin } } }]""") +
        route("/open", """
                typed_per_filter_config:
                  envoy.filters.http.rbac:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute""") +
        route("/"),
        [cfg.cluster("backend", [up.port])])
    y = with_rbac(y, """
              rules_stat_prefix: "svc."
              rules:
                action: DENY
                policies:
                  no-listener-port:
                    permissions:
                    - or_rules:
                        rules:
                        - destination_port: {port0}
                        - destination_port_range: { start: 1, end: 2 }
                    principals: [{ remote_ip: { address_prefix: 127.0.0.0, prefix_len: 8 } }]""")
    px = ctx.remora(y)
    base = f"http://127.0.0.1:{px.port}"
    r = ctx.curl(base + "/x")
    assert r.status == 403, r  # the listener's own port is denied to 127/8
    assert ctx.curl(base + "/open/x").status == 200  # RBACPerRoute without rbac: off
    assert ctx.curl(base + "/admin").status == 403  # the route's own rules replace the filter's
    assert ctx.curl(base + "/admin", headers={"x-role": "admin"}).status == 200
    s = stats(ctx, px)
    assert s["http.ingress_http.rbac.svc.denied"] == 2, s
    assert s["http.ingress_http.rbac.svc.allowed"] == 1, s


def test_rbac_authenticated_principal_over_mtls(ctx):
    c = tt.certs(ctx)
    up = ctx.upstream()
    tls = tt.downstream_tls(c, mtls=True).replace("require_client_certificate: true",
                                                  "require_client_certificate: false")
    y = tt.tls_bootstrap([cfg.cluster("backend", [up.port])], tls)
    y = with_rbac(y, """
              rules:
                action: ALLOW
                policies:
                  client-sa:
                    permissions: [{ url_path: { path: { prefix: /sa } } }]
                    principals:
                    - authenticated:
                        principal_name: { exact: "%s" }
                  any-cert:
                    permissions: [{ url_path: { path: { prefix: /any } } }]
                    principals: [{ authenticated: {} }]
                  sni:
                    permissions: [{ requested_server_name: { exact: localhost } }]
                    principals: [{ url_path: { path: { exact: /sni } } }]""" % tt.CLIENT_SPIFFE)
    px = ctx.remora(y)
    assert tt.https(ctx, px.port, "/sa", client="client").status == 200
    assert tt.https(ctx, px.port, "/sa").status == 403  # no certificate
    assert tt.https(ctx, px.port, "/any", client="client", http2=True).status == 200
    assert tt.https(ctx, px.port, "/any").status == 403
    assert tt.https(ctx, px.port, "/sni").status == 200  # SNI localhost (curl --resolve)
    assert tt.https(ctx, px.port, "/other", client="client").status == 403


def test_rbac_config_errors(ctx):
    up = ctx.upstream()
    cases = [
        ("""
              rules:
                policies:
                  p:
                    permissions: [{ any: true }]
                    principals: [{ metadata: { filter: f, path: [{ key: k }], value: { present_match: true } } }]""",
         "rules.policies[\"p\"].principals[0].metadata: not supported by remora"),
        ("""
              rules:
                policies:
                  p:
                    permissions: [{ any: true }]""",
         "rules.policies[\"p\"].principals: at least one is required"),
        ("""
              rules:
                policies:
                  p:
                    permissions: [{ destination_ip: { address_prefix: nope } }]
                    principals: [{ any: true }]""",
         "rules.policies[\"p\"].permissions[0].destination_ip.address_prefix: not an IP address"),
        ("""
              track_per_rule_stats: true""", "track_per_rule_stats: not supported by remora"),
    ]
    for body, want in cases:
        y = with_rbac(cfg.simple(up.port), body)
        path = os.path.join(ctx.tmp, "bad.yaml")
        with open(path, "w") as f:
            f.write(y.replace("{admin}", "0").replace("{port0}", "0"))
        r = ctx.run([ctx.bin("remora"), "-c", path, "--mode", "validate"], timeout=30)
        err = r.stderr.decode() + r.stdout.decode()
        assert r.returncode == 1 and want in err, (want, r.returncode, err[-800:])
