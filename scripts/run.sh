#!/usr/bin/env bash
# make run: remora on examples/remora.yaml in front of the bundled upstream, in the foreground.
# make run-xds (second argument "xds"): the same, but remora's listeners, routes, clusters and
# endpoints come from build/remora-xds serving examples/xds/ (bootstrap examples/remora-xds.yaml).
# Ctrl-C stops everything.
set -u
BUILD=${1:-build}
MODE=${2:-static}
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null; wait "${PIDS[@]}" 2>/dev/null' EXIT
"$BUILD/remora-upstream" --listen 127.0.0.1:18081 --name example-upstream &
PIDS+=($!)
CONFIG=examples/remora.yaml
if [ "$MODE" = xds ]; then
    "$BUILD/remora-xds" --dir examples/xds --listen 127.0.0.1:18000 &
    PIDS+=($!)
    CONFIG=examples/remora-xds.yaml
    echo "control plane: remora-xds on 127.0.0.1:18000 serving examples/xds/ (edit it live)"
fi
echo "upstream: 127.0.0.1:18081; remora: http://127.0.0.1:10000/, admin http://127.0.0.1:9901/"
"$BUILD/remora" -c "$CONFIG" --concurrency 2
