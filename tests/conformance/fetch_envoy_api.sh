#!/usr/bin/env bash
# Fetches the reference Envoy v3 API .proto files for the conformance test (compare.py) into a
# cache under build/ (default build/conformance), once.  Quiet and instant when cached.
#
#   tests/conformance/fetch_envoy_api.sh [CACHE_DIR]      prints nothing when already cached
#
# Source: the npm package @grpc/grpc-js-xds (pinned version and sha512 below), which ships the
# Envoy API under deps/envoy-api, with deps/xds, deps/googleapis and deps/protoc-gen-validate.
# Result: CACHE_DIR/grpc-js-xds-$VERSION/deps/{envoy-api,xds,googleapis,protoc-gen-validate}.
#
# One change is made to the reference tree, to options only: the package's
# protoc-gen-validate/validate/validate.proto predates the envoy-api it ships (it lacks
# StringRules.ignore_empty, which two (validate.rules) options in core/v3/protocol.proto use),
# so protoc rejects those files; the missing option field is added as upstream PGV has it
# (`optional bool ignore_empty = 26;`).  Validation rules are not compared, so this changes
# nothing the test checks.
#
# Exits non-zero (with the reason) when npm is missing or the fetch fails: the conformance test
# must then fail, not skip.
set -eu
VERSION=1.14.1
INTEGRITY='sha512-F2mVXwEeMWw1znPUrp+8ykjsIOVnf7Rv+EyIvXOfz73w5tNolCnzokpLkE/d2Ehx30PJmZXqCQdMpx8DcBJohA=='
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CACHE="${1:-$ROOT/build/conformance}"
DEST="$CACHE/grpc-js-xds-$VERSION"
STAMP="$DEST/.complete"

[ -f "$STAMP" ] && exit 0

command -v npm >/dev/null || { echo "fetch_envoy_api: npm not found (needed to fetch @grpc/grpc-js-xds@$VERSION)" >&2; exit 1; }
command -v node >/dev/null || { echo "fetch_envoy_api: node not found" >&2; exit 1; }
mkdir -p "$CACHE"
TMP="$(mktemp -d "$CACHE/.fetch.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

echo "fetch_envoy_api: npm pack @grpc/grpc-js-xds@$VERSION -> $DEST"
if ! (cd "$TMP" && npm pack --loglevel=error --prefer-offline --fetch-retries=2 \
        --fetch-retry-mintimeout=2000 --fetch-retry-maxtimeout=10000 --fetch-timeout=60000 \
        "@grpc/grpc-js-xds@$VERSION" >npm.out 2>npm.err); then
    echo "fetch_envoy_api: npm pack failed:" >&2
    tail -20 "$TMP/npm.err" >&2
    exit 1
fi
TGZ="$TMP/grpc-grpc-js-xds-$VERSION.tgz"
[ -f "$TGZ" ] || { echo "fetch_envoy_api: npm pack produced no $TGZ" >&2; exit 1; }
GOT="sha512-$(node -e 'const c=require("crypto");process.stdout.write(c.createHash("sha512").update(require("fs").readFileSync(process.argv[1])).digest("base64"))' "$TGZ")"
if [ "$GOT" != "$INTEGRITY" ]; then
    echo "fetch_envoy_api: integrity mismatch for $TGZ: got $GOT, want $INTEGRITY" >&2
    exit 1
fi

mkdir -p "$TMP/x"
tar -xzf "$TGZ" -C "$TMP/x" package/package.json package/deps
for d in envoy-api xds googleapis protoc-gen-validate; do
    [ -d "$TMP/x/package/deps/$d" ] || { echo "fetch_envoy_api: tarball has no deps/$d" >&2; exit 1; }
done
V="$TMP/x/package/deps/protoc-gen-validate/validate/validate.proto"
if ! grep -q 'ignore_empty' "$V"; then
    # Insert the field at the end of message StringRules (after its `strict = 25` field).
    # (the file has CRLF line ends: keep them)
    sed -i 's/^\(  optional bool strict = 25 \[default = true\];\)\(\r\?\)$/\1\2\n  optional bool ignore_empty = 26;  \/\/ added by fetch_envoy_api.sh\2/' "$V"
    grep -q 'ignore_empty = 26' "$V" || { echo "fetch_envoy_api: could not patch $V" >&2; exit 1; }
fi
echo "@grpc/grpc-js-xds@$VERSION $INTEGRITY" >"$TMP/x/package/.complete"

# Publish atomically; a concurrent fetch that won the race is as good as ours.
rm -rf "$DEST.old"
[ -d "$DEST" ] && mv "$DEST" "$DEST.old"
mv -T "$TMP/x/package" "$DEST" 2>/dev/null || [ -f "$STAMP" ]
rm -rf "$DEST.old"
[ -f "$STAMP" ]
