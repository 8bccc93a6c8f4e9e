#!/usr/bin/env bash
# Installs the Debian packages remora's build, tests and benchmarks need (only what is missing),
# then fetches the reference Envoy API the proto conformance test compares against.
set -eu
PKGS="build-essential pkg-config libnghttp2-dev libssl-dev libc-ares-dev libprotobuf-c-dev
protobuf-c-compiler protobuf-compiler libprotobuf-dev libcriterion-dev libyaml-dev node-llhttp libpcre2-dev
nghttp2-client curl openssl python3 python3-grpcio python3-protobuf python3-h2 dnsmasq-base procps
haproxy nghttp2-proxy nginx clang-format git iptables"
missing=""
# npm: use any npm already on PATH (machines may carry their own Node.js), else Debian's.
command -v npm >/dev/null 2>&1 || missing="$missing npm"
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -z "$missing" ]; then
    echo "deps: all packages present"
else
    echo "deps: installing$missing"
    if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
    # The peers (nginx, haproxy, nghttpx) are benchmark binaries, not services: keep their
    # packages from starting daemons on public ports while installing.
    NOSTART=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
        $SUDO chmod +x /usr/sbin/policy-rc.d
        NOSTART=1
    fi
    $SUDO apt-get update -qq
    rc=0
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing || rc=$?
    if [ -n "$NOSTART" ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
    [ "$rc" = 0 ] || exit "$rc"
fi
# The reference Envoy API for tests/conformance (npm; silent once cached).  A failure only warns
# here: the conformance test then fails on its own, and the other tests still run.
"$(dirname "$0")/../tests/conformance/fetch_envoy_api.sh" ||
    echo "deps: warning: could not fetch the reference Envoy API (the proto conformance test will fail)"
