#!/usr/bin/env bash
# The training run of the profile-guided build (Makefile, PGO=1): REMORA is remora built with
# -fprofile-generate; this script runs it on loopback in front of TOOLS/remora-upstream, loaded
# by TOOLS/remora-load (uninstrumented builds), so that remora writes its profile (*.gcda next to
# its objects) when it exits.
#
#   scripts/pgo-train.sh REMORA TOOLS
#
# The workload is generic proxy traffic, not a benchmark's: remora with default connection
# manager settings (request ids generated, a retry policy and timeouts on the routes) proxies
# HTTP/1.1 -> HTTP/1.1, h2c -> h2c, HTTP/1.1 -> h2c and gRPC unary (h2c) requests with 1 KiB
# responses, closed loop and at a fixed rate, plus a few 404s and 503s (local replies), ~12 s in
# all.  Paths it does not run (TLS, xDS, DNS, errors) are compiled as without a profile
# (-fprofile-partial-training).  Every wait is bounded; exits non-zero if a process fails.
set -eu
REMORA=${1:?usage: pgo-train.sh REMORA TOOLS}
TOOLS=${2:?usage: pgo-train.sh REMORA TOOLS}
for b in "$REMORA" "$TOOLS/remora-upstream" "$TOOLS/remora-load"; do
    [ -x "$b" ] || { echo "pgo-train: $b missing" >&2; exit 1; }
done
TMP=$(mktemp -d /tmp/remora-pgo-XXXXXX)
PIDS=()
cleanup() {
    local rc=$?
    [ "$rc" = 0 ] ||
        echo "pgo-train: failed (make PGO=0 builds remora without profile-guided optimisation)" >&2
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

read -r UP P11 P22 P12 ADMIN < <(/usr/bin/python3 -c 'import socket
ss = [socket.socket() for _ in range(5)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')

listener() { # name port cluster
    cat <<EOF
  - name: $1
    address:
      socket_address: { address: 127.0.0.1, port_value: $2 }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: $1
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/missing/" }
                direct_response: { status: 404 }
              - match: { prefix: "/" }
                route:
                  cluster: $3
                  timeout: 10s
                  retry_policy: { retry_on: "5xx,reset,connect-failure", num_retries: 1 }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
EOF
}
cluster() { # name h2?
    echo "  - name: $1"
    echo "    type: STATIC"
    echo "    connect_timeout: 1s"
    if [ "$2" = h2 ]; then
        cat <<'EOF'
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {}
EOF
    fi
    cat <<EOF
    load_assignment:
      cluster_name: $1
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: 127.0.0.1, port_value: $UP }
EOF
}
{
    echo "admin:"
    echo "  address:"
    echo "    socket_address: { address: 127.0.0.1, port_value: $ADMIN }"
    echo "static_resources:"
    echo "  listeners:"
    listener h1h1 "$P11" up_h1
    listener h2h2 "$P22" up_h2
    listener h1h2 "$P12" up_h2
    echo "  clusters:"
    cluster up_h1 h1
    cluster up_h2 h2
} >"$TMP/remora.yaml"

"$TOOLS/remora-upstream" --quiet --listen "127.0.0.1:$UP" --body-size 1024 &
PIDS+=($!)
"$REMORA" -c "$TMP/remora.yaml" --concurrency 1 >"$TMP/remora.log" 2>&1 &
RPID=$!
PIDS+=($RPID)

wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        kill -0 "$RPID" 2>/dev/null || break
        sleep 0.1
    done
    echo "pgo-train: nothing listens on port $1; remora's log:" >&2
    cat "$TMP/remora.log" >&2
    exit 1
}
for p in "$UP" "$P11" "$P22" "$P12"; do wait_port "$p"; done

load() { # remora-load arguments...
    "$TOOLS/remora-load" --no-progress --timeout 5s "$@" >"$TMP/load.out" 2>&1 || {
        echo "pgo-train: remora-load $* failed:" >&2
        cat "$TMP/load.out" >&2
        exit 1
    }
}
load --h1 -c 8 -d 2s "http://127.0.0.1:$P11/a"
load --h1 -c 4 -d 1s --rate 2000 "http://127.0.0.1:$P11/b"
load -c 4 -m 10 -d 2s "http://127.0.0.1:$P22/a"
load -c 2 -m 4 -d 1s --rate 2000 "http://127.0.0.1:$P22/b"
load --h1 -c 8 -d 2s "http://127.0.0.1:$P12/a"
load -c 2 -m 10 -d 1s --grpc "http://127.0.0.1:$P22/pkg.Service/Method"
# local replies and upstream errors: counted as failures by remora-load, so not checked
"$TOOLS/remora-load" --no-progress --h1 -c 2 -n 500 "http://127.0.0.1:$P11/missing/" >/dev/null 2>&1 || true
"$TOOLS/remora-load" --no-progress -c 1 -m 4 -n 500 -H "x-upstream-status: 503" \
    "http://127.0.0.1:$P22/err" >/dev/null 2>&1 || true

# remora writes its profile when it exits (SIGTERM: a clean shutdown)
kill -TERM "$RPID"
for _ in $(seq 100); do kill -0 "$RPID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$RPID" 2>/dev/null; then
    echo "pgo-train: remora did not exit within 10 s of SIGTERM" >&2
    exit 1
fi
wait "$RPID" || { echo "pgo-train: remora exited with status $?" >&2; cat "$TMP/remora.log" >&2; exit 1; }
echo "pgo-train: profile written ($(find "$(dirname "$REMORA")" -name '*.gcda' | wc -l) files)"
