#!/usr/bin/env bash
# make run: remora on examples/remora.yaml in front of the bundled upstream, in the foreground.
# Ctrl-C stops both.
set -u
BUILD=${1:-build}
"$BUILD/remora-upstream" --listen 127.0.0.1:18081 --name example-upstream &
UP=$!
trap 'kill $UP 2>/dev/null; wait $UP 2>/dev/null' EXIT
echo "upstream: 127.0.0.1:18081 (pid $UP); remora: http://127.0.0.1:10000/, admin http://127.0.0.1:9901/"
"$BUILD/remora" -c examples/remora.yaml --concurrency 2
