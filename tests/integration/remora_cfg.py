"""Bootstrap builders for integration tests: Envoy v3 YAML with placeholders filled by
harness.Ctx.remora ({port0}… for listeners, {admin} for the admin port)."""

ROUTER = """
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"""

H2_OPTS = """
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {}"""

DOWNSTREAM_OPTS = """
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        use_downstream_protocol_config:
          http2_protocol_options: {}"""


def endpoint(port, weight=None):
    w = "" if weight is None else "\n          load_balancing_weight: %d" % weight
    return """
        - endpoint:
            address:
              socket_address: { address: 127.0.0.1, port_value: %d }%s""" % (port, w)


def cluster(name, ports, proto="h1", lb="ROUND_ROBIN", extra="", weights=None):
    eps = "".join(endpoint(p, weights[i] if weights else None) for i, p in enumerate(ports))
    opts = {"h1": "", "h2": H2_OPTS, "downstream": DOWNSTREAM_OPTS}[proto]
    return """
  - name: %s
    type: STATIC
    connect_timeout: 1s
    lb_policy: %s%s%s
    load_assignment:
      cluster_name: %s
      endpoints:
      - lb_endpoints:%s""" % (name, lb, opts, extra, name, eps if ports else " []")


def bootstrap(routes, clusters, hcm_extra="", vhost_extra=""):
    """routes: YAML list items (indented 14 spaces) under the single '*' virtual host."""
    return """
admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: {admin} }
static_resources:
  listeners:
  - name: ingress
    address:
      socket_address: { address: 127.0.0.1, port_value: {port0} }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          http_protocol_options: { accept_http_10: true }""" + hcm_extra + """
          route_config:
            name: local_route
            virtual_hosts:
            - name: all
              domains: ["*"]""" + vhost_extra + """
              routes:""" + routes + ROUTER + """
  clusters:""" + "".join(clusters) + "\n"


def simple(port, proto="h1"):
    return bootstrap("""
              - match: { prefix: "/" }
                route: { cluster: backend }""", [cluster("backend", [port], proto)])


def with_http_filter(y, name, type_url, body=""):
    """<y> with the HTTP filter <name> (typed_config of <type_url>, plus <body>: its fields, YAML
    indented 14) first in every http_filters list."""
    old = "          http_filters:\n"
    assert old in y
    return y.replace(old, old + """          - name: %s
            typed_config:
              "@type": type.googleapis.com/%s""" % (name, type_url) + body + "\n")
