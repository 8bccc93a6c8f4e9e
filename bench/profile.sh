#!/usr/bin/env bash
# bench/profile.sh: user-space instructions (and mallocs) per proxied request, under callgrind.
#
#   bench/profile.sh [--build DIR] [--config FILE] [--n N] [--runs R] [--keep] [MODE...]
#
# MODE is h1h1 (HTTP/1.1 -> HTTP/1.1), h2h2 (h2c -> h2c) or h1h2 (HTTP/1.1 -> h2c); default all
# three.  For each mode: remora (DIR/remora, default build/perf: an optimised build without
# sanitizers) runs under `valgrind --tool=callgrind` with bench/peers/remora.yaml, in front of
# DIR/remora-upstream (1 KiB bodies, not under valgrind); h2load warms up with 2,000 requests,
# the counters are zeroed (callgrind_control -z), h2load sends N requests (default 20,000),
# the counters are dumped (callgrind_control -d) and remora is stopped.  Prints, per mode, the
# instructions per request (Ir / N), the malloc/calloc/realloc/free calls per request, and the
# top functions (self cost, per request).  Counts are deterministic up to event batching, so
# they compare across runs on a noisy machine where timings do not.
#
# Loads: h1h1 and h1h2 `h2load --h1 -c 4`, h2h2 `h2load -c 2 -m 10`.  h2c figures move by a
# few hundred instructions between runs (how many requests share a read or a write depends on
# timing): --runs R profiles each mode R times and reports the median run (its top functions).
# --keep keeps the callgrind dumps (their paths are printed) for callgrind_annotate and
# bench/callgrind_diff.py (self cost per function, before/after).
# --config FILE runs remora with FILE instead of bench/peers/remora.yaml: the same listeners and
# placeholders ({UPSTREAM}, {H2H2}, {H1H1}, {H1H2}, {ADMIN}), plus {TMP}, this run's temporary
# directory (for access-log files: bench/peers/remora-alog.yaml, remora-alog-json.yaml,
# remora-alog-istio.yaml).
set -eu
cd "$(dirname "$0")/.."

BUILD=build/perf
CONFIG=bench/peers/remora.yaml
N=20000
RUNS=1
KEEP=0
MODES=()
while [ $# -gt 0 ]; do
    case "$1" in
    --build) BUILD=${2:?}; shift 2 ;;
    --config) CONFIG=${2:?}; shift 2 ;;
    --n) N=${2:?}; shift 2 ;;
    --runs) RUNS=${2:?}; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h | --help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    h1h1 | h2h2 | h1h2) MODES+=("$1"); shift ;;
    *) echo "profile.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ ${#MODES[@]} -gt 0 ] || MODES=(h1h1 h2h2 h1h2)
[ -r "$CONFIG" ] || { echo "profile.sh: cannot read $CONFIG" >&2; exit 2; }
for b in remora remora-upstream; do
    [ -x "$BUILD/$b" ] || { echo "profile.sh: $BUILD/$b missing (make BUILD=$BUILD)" >&2; exit 1; }
done

TMP="$(mktemp -d /tmp/remora-profile-XXXXXX)"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    [ "$KEEP" = 1 ] || rm -rf "$TMP"
}
trap cleanup EXIT

# <n> distinct free ports (all bound at once, so none is handed out twice)
free_ports() {
    /usr/bin/python3 -c 'import socket,sys
ss=[socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1",0))
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"
}
wait_port() {
    for _ in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "profile.sh: nothing listens on port $1" >&2
    return 1
}

read -r UP P22 P11 P12 ADMIN <<< "$(free_ports 5)"
"$BUILD/remora-upstream" --listen "127.0.0.1:$UP" --body-size 1024 --quiet &
PIDS+=($!)
wait_port "$UP"

declare -A PORT
PORT[h2h2]=$P22; PORT[h1h1]=$P11; PORT[h1h2]=$P12
sed -e "s/{UPSTREAM}/$UP/g" -e "s/{H2H2}/${PORT[h2h2]}/g" -e "s/{H1H1}/${PORT[h1h1]}/g" \
    -e "s/{H1H2}/${PORT[h1h2]}/g" -e "s/{ADMIN}/$ADMIN/g" -e "s|{TMP}|$TMP|g" "$CONFIG" \
    > "$TMP/remora.yaml"

load() { # mode n
    case "$1" in
    h2h2) h2load -c 2 -m 10 -n "$2" "http://127.0.0.1:${PORT[$1]}/up-h2/" ;;
    h1h1) h2load --h1 -c 4 -n "$2" "http://127.0.0.1:${PORT[$1]}/up-h1/" ;;
    h1h2) h2load --h1 -c 4 -n "$2" "http://127.0.0.1:${PORT[$1]}/up-h2/" ;;
    esac
}

profile_once() { # mode run -> prints the dump path
    local mode=$1 run=$2 out="$TMP/callgrind.$1.$2" vpid
    valgrind --tool=callgrind --dump-instr=no --callgrind-out-file="$out.%p" \
        "$BUILD/remora" -c "$TMP/remora.yaml" --concurrency 1 -l warning 2> "$TMP/valgrind.$mode.$run.log" &
    vpid=$!
    PIDS+=($vpid)
    wait_port "${PORT[$mode]}"
    load "$mode" 2000 > "$TMP/warm.$mode.$run.log"
    callgrind_control -z "$vpid" > /dev/null 2>&1
    load "$mode" "$N" > "$TMP/load.$mode.$run.log"
    grep -q "succeeded, 0 failed, 0 errored" "$TMP/load.$mode.$run.log" || {
        grep "requests:" "$TMP/load.$mode.$run.log" >&2
        echo "profile.sh: $mode: some requests failed" >&2
    }
    callgrind_control -d "$vpid" > /dev/null 2>&1
    kill "$vpid"
    wait "$vpid" 2>/dev/null || true
    ls "$out.$vpid".* | sort -t. -k4 -n | head -1
}

for mode in "${MODES[@]}"; do
    dumps=()
    for run in $(seq 1 "$RUNS"); do
        dumps+=("$(profile_once "$mode" "$run")")
    done
    # the median run by total Ir
    dump=$(for d in "${dumps[@]}"; do
        echo "$(/usr/bin/python3 bench/callgrind_per_req.py "$d" "$N" 0 | sed -n 's/^Ir\/request: \([0-9,]*\).*/\1/p' | tr -d ,) $d"
    done | sort -n | awk '{ a[NR] = $0 } END { print a[int((NR + 1) / 2)] }' | cut -d' ' -f2)
    echo "== $mode: $N requests ($(grep 'requests:' "$TMP/load.$mode.1.log" | sed 's/^ *//'))"
    if [ "$RUNS" -gt 1 ]; then
        echo -n "   Ir/request of each run:"
        for d in "${dumps[@]}"; do
            echo -n " $(/usr/bin/python3 bench/callgrind_per_req.py "$d" "$N" 0 | sed -n 's/^Ir\/request: \([0-9,]*\).*/\1/p')"
        done
        echo "  (median below)"
    fi
    /usr/bin/python3 bench/callgrind_per_req.py "$dump" "$N" ${TOP:-25}
    [ "$KEEP" = 1 ] && echo "   dump: $dump"
done
