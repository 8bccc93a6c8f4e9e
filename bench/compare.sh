#!/usr/bin/env bash
# bench/compare.sh: remora against HAProxy, nghttpx, nginx and a byte relay, in one run.
#
#   bench/compare.sh                  full run (about 8 minutes), writes bench/RESULTS.md
#   bench/compare.sh --quick          smoke run (well under a minute), writes a temp file
#   bench/compare.sh --quick --write  ... and writes bench/RESULTS.md anyway
#
# Options:
#   --build DIR     binaries from DIR (default build/, made here with `make -j2`; another DIR
#                   must already hold remora, remora-upstream, remora-load, remora-relay,
#                   e.g. the ASan build/san that `make test` makes)
#   --out FILE      write the results there
#   --no-install    do not apt-get missing peers (missing ones then fail the run)
#   --no-build      do not run make for build/
#   --head          measure HEAD as committed: export it (git archive) to a temp dir and build
#                   there, so that unfinished edits in a shared work tree are not measured
#   --keep          keep the temp dir (configs, process logs, JSON reports)
#
# What it does (bench/README.md explains the method): installs the peers from Debian when they
# are missing (haproxy, nghttp2-proxy, nginx, nghttp2-client for h2load, openssl), builds remora and the
# bench tools, starts one upstream (build/remora-upstream, 1 KiB bodies) and every proxy with
# one worker pinned to CPU 1 (load tool and upstream on CPU 0), loads them one at a time in
# interleaved rounds (each figure is the median of 3; 1 with --quick), and measures:
# max req/s and proxy CPU us/request at saturation (h2c->h2c, HTTP/1.1->HTTP/1.1,
# HTTP/1.1->h2c), CPU us/request and added p50/p99/p99.9 latency at a fixed 2,000 req/s
# (against a direct run at that rate), RSS idle (without and with a TLS listener configured)
# and with 1,000 idle h2c connections (then
# 1,000 idle TLS connections on top), full TLS 1.3 handshakes/s and proxy CPU us/handshake
# (h2 and HTTP/1.1 via ALPN; a new connection per request, remora-load --new-conn; EC P-256
# certificate from a throwaway CA made with the openssl CLI in the temp dir); then
# remora-load against h2load on one core.  Proxy CPU time is read from /proc (all threads).
# Exit status: 0 when every proxy started and served every run; 1 otherwise (the failures are
# listed at the end); 2 for a usage error.
set -eu
cd "$(dirname "$0")/.."

RMB_ARGS="$*"
BUILD=build
QUICK=0
WRITE=0
OUT=
INSTALL=1
MAKE=1
KEEP=0
HEAD_ONLY=0
usage() { sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
    --build) BUILD=${2:?--build needs a directory}; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --write) WRITE=1; shift ;;
    --out) OUT=${2:?--out needs a file}; shift 2 ;;
    --no-install) INSTALL=0; shift ;;
    --no-build) MAKE=0; shift ;;
    --keep) KEEP=1; shift ;;
    --head) HEAD_ONLY=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "compare.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

# ---- peers from Debian -------------------------------------------------------------------
need_pkgs=""
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need_pkgs="$need_pkgs haproxy"
command -v nghttpx >/dev/null 2>&1 || [ -x /usr/sbin/nghttpx ] || need_pkgs="$need_pkgs nghttp2-proxy"
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_pkgs="$need_pkgs nginx"
command -v h2load >/dev/null 2>&1 || need_pkgs="$need_pkgs nghttp2-client"
command -v taskset >/dev/null 2>&1 || need_pkgs="$need_pkgs util-linux"
command -v openssl >/dev/null 2>&1 || need_pkgs="$need_pkgs openssl"
if [ -n "$need_pkgs" ]; then
    if [ "$INSTALL" = 0 ]; then
        echo "compare.sh: missing packages:$need_pkgs (and --no-install given)" >&2
        exit 1
    fi
    echo "compare.sh: installing$need_pkgs" >&2
    if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get update -qq || true
    if ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        $need_pkgs >&2; then
        echo "compare.sh: could not install$need_pkgs" >&2
        exit 1
    fi
fi
export PATH="$PATH:/usr/sbin:/sbin"

# ---- build -------------------------------------------------------------------------------
# The revision measured: the work tree as make sees it now.
RMB_REV="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git status --porcelain --untracked-files=no proxy filters 2>/dev/null)" ]; then
    RMB_REV="$RMB_REV (+ local changes in proxy/ or filters/)"
fi
RMB_SRC=
if [ "$HEAD_ONLY" = 1 ]; then
    RMB_SRC="$(mktemp -d /tmp/remora-head-XXXXXX)"
    git archive HEAD | tar -x -C "$RMB_SRC"
    make -C "$RMB_SRC" -j2 --no-print-directory all >&2
    BUILD="$RMB_SRC/build"
    RMB_REV="$(git rev-parse --short HEAD) (HEAD exported and built clean)"
elif [ "$MAKE" = 1 ] && [ "$BUILD" = build ]; then
    make -j2 --no-print-directory all >&2
fi
for b in remora remora-upstream remora-load remora-relay; do
    if [ ! -x "$BUILD/$b" ]; then
        echo "compare.sh: $BUILD/$b is missing: make BUILD=$BUILD (SAN=1 for build/san)" >&2
        exit 1
    fi
done

# ---- measure (the rest is Python: JSON reports, /proc sampling, idle sockets) ------------
export RMB_ARGS RMB_REV RMB_SRC RMB_BUILD="$BUILD" RMB_QUICK="$QUICK" RMB_WRITE="$WRITE" RMB_OUT="$OUT" RMB_KEEP="$KEEP"
exec /usr/bin/python3 - <<'PY'
import datetime
import json
import os
import platform
import re
import resource
import select
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

ROOT = os.getcwd()
BUILD = os.path.abspath(os.environ["RMB_BUILD"])
QUICK = os.environ["RMB_QUICK"] == "1"
KEEP = os.environ["RMB_KEEP"] == "1"
OUT = os.environ["RMB_OUT"] or (
    os.path.join(ROOT, "bench/RESULTS.md") if (not QUICK or os.environ["RMB_WRITE"] == "1")
    else None)
TMP = tempfile.mkdtemp(prefix="remora-compare-")
if OUT is None:
    OUT = os.path.join(TMP, "RESULTS.md")

# Run lengths.  Full: 3 interleaved rounds (every figure is the median), 4 s saturation runs,
# 5 s at the fixed rate, each after a 0.5 s warm-up run; 1,000 idle connections.
ROUNDS = 1 if QUICK else 3
SAT_S = 0.5 if QUICK else 4
FIX_S = 0.5 if QUICK else 5
WARM_S = 0.2 if QUICK else 0.5
TOOL_S = 0.5 if QUICK else 4
IDLE_N = 100 if QUICK else 1000
TLS_S = 0.5 if QUICK else 3
RATE = 2000
BODY = 1024
LOAD_CPU, PROXY_CPU = "0", "1"

MODES = [("h2h2", "h2c → h2c"), ("h1h1", "HTTP/1.1 → HTTP/1.1"), ("h1h2", "HTTP/1.1 → h2c")]
PATH = {"h2h2": "/up-h2/", "h1h1": "/up-h1/", "h1h2": "/up-h2/"}  # same bytes for every proxy
SAT_ARGS = {"h2h2": ["-c", "10", "-m", "20"],
            "h1h1": ["--h1", "-c", "50"],
            "h1h2": ["--h1", "-c", "50"]}
FIX_MODES = ["h1h1", "h2h2"]
FIX_ARGS = {"h1h1": ["--h1", "-c", "16"], "h2h2": ["-c", "4", "-m", "16"]}
# TLS: new connections, one request each (remora-load --new-conn), to /up-h1/ (HTTP/1.1
# towards the upstream, the one upstream protocol every proxy speaks), ALPN h2 or http/1.1
TLS_MODES = [("h2", "h2 over TLS (ALPN h2)"), ("h1", "HTTP/1.1 over TLS (ALPN http/1.1)")]
TLS_ARGS = {"h2": ["--new-conn", "-c", "32"], "h1": ["--new-conn", "--h1", "-c", "32"]}
TLS_PATH = "/up-h1/"
RELAY_TLS_NA = "a byte relay has no TLS"
NGINX_NA = "nginx cannot proxy to an HTTP/2 upstream (proxy_pass speaks HTTP/1.x; grpc_pass is gRPC-only)"
RELAY_NA = "a byte relay cannot translate HTTP/1.1 to HTTP/2"

failures = []
commands = []          # (what, command line) for RESULTS.md
procs = []


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def fail(msg):
    failures.append(msg)
    log("FAILED: " + msg)


def binp(name):
    return os.path.join(BUILD, name)


_ports_given = set()


def free_port():
    """A port nothing listens on, never one this run handed out before (the kernel may offer
    the same ephemeral port to two binds in a row once the first socket is closed)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _ports_given:
            _ports_given.add(port)
            return port


def cmdline(args):
    text = " ".join(shlex.quote(a) for a in args).replace(TMP, "$TMP")
    if os.environ.get("RMB_SRC"):
        text = text.replace(os.environ["RMB_SRC"] + "/", "")
    return text.replace(ROOT + "/", "")


# ---- processes -----------------------------------------------------------------------------
class Proc:
    def __init__(self, name, args, cpu, ours):
        self.name, self.args, self.ours = name, args, ours
        self.log = os.path.join(TMP, f"{name}.log")
        full = ["taskset", "-c", cpu] + args if cpu is not None else args
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        with open(self.log, "wb") as f:
            self.p = subprocess.Popen(full, stdout=f, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        self.pid = self.p.pid          # taskset execs the program: same PID
        procs.append(self)

    def output(self):
        try:
            with open(self.log, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def alive(self):
        return self.p.poll() is None

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait(5)
                fail(f"{self.name} did not exit within 15 s of SIGTERM")
        out = self.output()
        if self.ours and ("ERROR: AddressSanitizer" in out or "runtime error:" in out or
                          "ERROR: LeakSanitizer" in out):
            fail(f"{self.name}: sanitizer report (log {self.log}):\n{out[-3000:]}")


def wait_port(port, proc, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.02)
    return False


def cpu_ns(pid):
    """CPU time of every thread of pid, in ns (schedstat: ns resolution; stat: ticks)."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    try:
        for t in tids:
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                total += int(f.read().split()[0])
        return total
    except (OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * 10**9 // os.sysconf("SC_CLK_TCK")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


# ---- load runs -----------------------------------------------------------------------------
def remora_load(url, extra, seconds, pid=None, record=None, up_pid=None):
    """One remora-load run (closed loop unless extra has --rate), pinned to CPU 0.  Returns
    (report, CPU us of pid, wall s, CPU us of up_pid) or Nones when the run failed."""
    args = [binp("remora-load"), "--json", "--no-progress", "-d", f"{int(seconds * 1000)}ms"] + \
        extra + [url]
    full = ["taskset", "-c", LOAD_CPU] + args
    if record:
        commands.append((record, cmdline(full)))
    c0 = cpu_ns(pid) if pid else None
    u0 = cpu_ns(up_pid) if up_pid else None
    t0 = time.monotonic()
    try:
        r = subprocess.run(full, capture_output=True, timeout=seconds + 40)
    except subprocess.TimeoutExpired:
        fail(f"remora-load {url} {extra} did not finish")
        return None, None, None, None
    wall = time.monotonic() - t0
    c1 = cpu_ns(pid) if pid else None
    u1 = cpu_ns(up_pid) if up_pid else None
    err = r.stderr.decode("utf-8", "replace")
    if "ERROR: AddressSanitizer" in err or "runtime error:" in err:
        fail(f"remora-load: sanitizer report:\n{err[-3000:]}")
    try:
        rep = json.loads(r.stdout)
    except ValueError:
        fail(f"remora-load {' '.join(extra)} {url}: exit {r.returncode}, no report: {err[-500:]}")
        return None, None, None, None
    q = rep["requests"]
    if q["succeeded"] == 0 or q["failed"] > 0.01 * max(q["sent"], 1):
        fail(f"remora-load {' '.join(extra)} {url}: {q} errors={rep['errors']} "
             f"status={rep['status']['codes']}")
        return None, None, None, None
    cpu_us = (c1 - c0) / 1000.0 if c0 is not None and c1 is not None else None
    up_us = (u1 - u0) / 1000.0 if u0 is not None and u1 is not None else None
    return rep, cpu_us, wall, up_us


def saturate(url, mode, pid, record=None, up_pid=None):
    remora_load(url, SAT_ARGS[mode], WARM_S)                     # warm-up, not counted
    rep, cpu_us, wall, up_us = remora_load(url, SAT_ARGS[mode], SAT_S, pid, record, up_pid)
    if rep is None:
        return None
    ok = rep["requests"]["succeeded"]
    res = {"rps": ok / rep["duration_s"], "n": ok}
    if up_us is not None:
        res["up_us"] = up_us / ok
    if cpu_us is not None:
        res["us"] = cpu_us / ok
        res["util"] = cpu_us / 1e6 / wall
    return res


def tls_handshakes(url, mode, pid, record=None):
    """New TLS connections, one request each, closed loop (remora-load --new-conn): full
    handshakes/s, the proxy's CPU per connection, and the load tool's own CPU per connection
    (one core of client cannot outrun the proxy: see bench/README.md)."""
    remora_load(url, TLS_ARGS[mode], WARM_S)                     # warm-up, not counted
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    rep, cpu_us, wall, _ = remora_load(url, TLS_ARGS[mode], TLS_S, pid, record)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if rep is None:
        return None
    ok = rep["requests"]["succeeded"]
    res = {"hps": ok / rep["duration_s"], "n": ok}
    if cpu_us is not None:
        res["us"] = cpu_us / ok
        res["util"] = cpu_us / 1e6 / wall
    client_s = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    res["client_us"] = client_s * 1e6 / ok
    res["client_util"] = client_s / wall
    return res


def fixed(url, mode, pid, record=None):
    extra = FIX_ARGS[mode] + ["--rate", str(RATE)]
    remora_load(url, extra, WARM_S)
    rep, cpu_us, wall, _ = remora_load(url, extra, FIX_S, pid, record)
    if rep is None:
        return None
    lat = rep["latency_us"]
    res = {"rps": rep["rate"]["achieved"], "p50": lat["p50"], "p99": lat["p99"],
           "p999": lat["p99.9"], "unsent": rep["requests"]["unsent"],
           "lag99": rep["sched_lag_us"]["p99"]}
    if cpu_us is not None:
        res["us"] = cpu_us / rep["requests"]["succeeded"]
    return res


# ---- idle connections ----------------------------------------------------------------------
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
SETTINGS_ACK = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"


def server_settings_seen(buf):
    """Has <buf> (HTTP/2 frames from the server) a SETTINGS frame that is not an ACK?"""
    off = 0
    while len(buf) - off >= 9:
        ln = int.from_bytes(buf[off:off + 3], "big")
        if buf[off + 3] == 4 and not buf[off + 4] & 1:
            return True
        off += 9 + ln
    return False


def hold_idle(port, n, timeout=20.0):
    """n h2c connections that sent the preface and an empty SETTINGS and acked the server's
    SETTINGS, then stay silent.  Returns the sockets once every one got the server's SETTINGS
    (or the time ran out)."""
    socks, pending = [], {}
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        socks.append(s)
    poller = select.epoll()
    for s in socks:
        poller.register(s.fileno(), select.EPOLLOUT)
        pending[s.fileno()] = [s, b"", False]   # socket, bytes read, preface sent
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for fd, ev in poller.poll(0.2):
            st = pending.get(fd)
            if st is None:
                continue
            s = st[0]
            if ev & (select.EPOLLERR | select.EPOLLHUP) and not ev & select.EPOLLIN:
                poller.unregister(fd)
                del pending[fd]
                continue
            if not st[2] and ev & select.EPOLLOUT:
                s.send(PREFACE)
                st[2] = True
                poller.modify(fd, select.EPOLLIN)
                continue
            if ev & select.EPOLLIN:
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    poller.unregister(fd)
                    del pending[fd]
                    continue
                st[1] += data
                if server_settings_seen(st[1]):
                    s.send(SETTINGS_ACK)
                    poller.unregister(fd)
                    del pending[fd]
    poller.close()
    return socks


def count_alive(socks):
    alive = 0
    for s in socks:
        try:
            d = s.recv(65536)
            if d:
                alive += 1      # e.g. a SETTINGS ACK: still open
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    return alive


def close_all(socks):
    for s in socks:
        s.close()


def memory(name, port, pid, tls_port):
    """RSS idle, with IDLE_N idle h2c connections, then with IDLE_N idle TLS (h2) connections
    on top of those (so that the TLS connections' memory is new memory, not what closed h2c
    connections left in the allocator)."""
    time.sleep(0.3 if QUICK else 0.5)
    idle = rss_kib(pid)
    socks = hold_idle(port, IDLE_N)
    time.sleep(0.5 if QUICK else 1.0)
    alive = count_alive(socks)
    held = rss_kib(pid)
    res = {"idle": idle, "held": held, "alive": alive}
    if alive < 0.95 * IDLE_N:
        fail(f"{name}: only {alive} of {IDLE_N} idle h2c connections stayed open")
    elif held is not None and idle is not None:
        res["per_conn"] = (held - idle) / alive
    if isinstance(tls_port, int):
        info = {}
        tsocks = hold_idle_tls(tls_port, IDLE_N, info)
        time.sleep(0.5 if QUICK else 1.0)
        talive = count_alive_tls(tsocks)
        theld = rss_kib(pid)
        close_all(tsocks)
        res.update(tls_held=theld, tls_alive=talive,
                   tls_info=f"{info.get('version')} {info.get('cipher')} ALPN {info.get('alpn')}")
        if talive < 0.95 * IDLE_N:
            fail(f"{name}: only {talive} of {IDLE_N} idle TLS connections stayed open"
                 + (f" ({info['error']})" if info.get("error") else ""))
        elif theld is not None and held is not None:
            res["tls_per_conn"] = (theld - held) / talive
    close_all(socks)
    return res


# ---- TLS -----------------------------------------------------------------------------------
TLS = {}    # paths of the run's throwaway PKI (make_certs)


def openssl(*args):
    full = ["openssl"] + list(args)
    commands.append(("certificates", cmdline(full)))
    r = subprocess.run(full, capture_output=True, timeout=60)
    if r.returncode != 0:
        raise OSError(f"{cmdline(full)}: exit {r.returncode}: "
                      f"{r.stderr.decode('utf-8', 'replace')[-500:]}")


def make_certs():
    """A throwaway CA and a server certificate signed by it, both EC P-256 (prime256v1, the
    curve of a mesh's workload certificates: SPIRE's and Linkerd's default, Istio's with ECC
    enabled; ECDSA-SHA256), in
    $TMP/pki with the openssl CLI.  Sets TLS: cert, key, pem (HAProxy: cert + key), ca."""
    d = os.path.join(TMP, "pki")
    os.makedirs(d, exist_ok=True)
    ca_key, ca_crt = os.path.join(d, "ca.key"), os.path.join(d, "ca.crt")
    key, csr, crt = (os.path.join(d, "server" + x) for x in (".key", ".csr", ".crt"))
    ext = os.path.join(d, "server.ext")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", ca_key, "-out", ca_crt, "-days", "2",
            "-subj", "/CN=remora-compare-ca", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
    openssl("req", "-new", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=localhost")
    openssl("x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-set_serial",
            str(int.from_bytes(os.urandom(8), "big")), "-days", "2", "-sha256", "-out", crt,
            "-extfile", ext)
    pem = os.path.join(d, "server.pem")
    with open(pem, "w") as f:
        for p in (crt, key):
            with open(p) as g:
                f.write(g.read())
    TLS.update(cert=crt, key=key, pem=pem, ca=ca_crt)


def tls_client_ctx():
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=TLS["ca"])
    ctx.set_alpn_protocols(["h2"])
    return ctx


def hold_idle_tls(port, n, info, timeout=5.0):
    """n TLS connections (ALPN h2, certificate verified against the run's CA) that each sent
    the HTTP/2 preface and an empty SETTINGS, got the proxy's SETTINGS and acknowledged it,
    then stay silent: made one after the other (a handshake takes well under a millisecond
    each side).  info gets the first connection's TLS version, cipher and ALPN."""
    ctx = tls_client_ctx()
    socks = []
    for _ in range(n):
        try:
            raw_s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
            s = ctx.wrap_socket(raw_s, server_hostname="localhost")
        except OSError as e:
            info.setdefault("error", str(e))
            continue
        socks.append(s)
        if not info.get("version"):
            info.update(version=s.version(), cipher=s.cipher()[0],
                        alpn=s.selected_alpn_protocol())
        if s.selected_alpn_protocol() != "h2":
            info.setdefault("error", f"ALPN {s.selected_alpn_protocol()!r}, not h2")
            continue
        try:
            s.sendall(PREFACE)
            buf, got = b"", False
            while not got:
                data = s.recv(65536)
                if not data:
                    break
                buf += data
                got = server_settings_seen(buf)
            if got:
                s.sendall(SETTINGS_ACK)
            s.setblocking(False)
        except OSError as e:
            info.setdefault("error", str(e))
    return socks


def count_alive_tls(socks):
    alive = 0
    for s in socks:
        try:
            if s.recv(65536):
                alive += 1      # e.g. a SETTINGS ACK: still open
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            alive += 1
        except (OSError, ValueError):
            pass
    return alive


# ---- proxies -------------------------------------------------------------------------------
def render(template, ports, insert=None, plain=False):
    """bench/peers/template with the {NAME}s of ports filled in, written to $TMP; insert:
    (line, other template) puts the other template's text (comment lines dropped) before
    that line; plain: the lines from a "{TLS-BEGIN}" marker line to a "{TLS-END}" one are
    dropped (the config without its TLS listener)."""
    with open(os.path.join(ROOT, "bench/peers", template)) as f:
        text = f.read()
    if plain:
        text, n = re.subn(r"(?ms)^[^\n]*\{TLS-BEGIN\}.*?\{TLS-END\}[^\n]*\n", "", text)
        assert n >= 1, f"bench/peers/{template}: no {{TLS-BEGIN}} ... {{TLS-END}} block"
        template = "plain-" + template
    if insert:
        line, other = insert
        with open(os.path.join(ROOT, "bench/peers", other)) as f:
            add = "".join(x for x in f.readlines() if not x.startswith("#"))
        assert text.count(line) == 1, f"bench/peers/{template}: no single {line!r}"
        text = text.replace(line, add + line)
    for k, v in ports.items():
        text = text.replace("{" + k + "}", str(v))
    path = os.path.join(TMP, template)
    with open(path, "w") as f:
        f.write(text)
    return path


def proxy_spec(name, up, plain=False):
    """(start args, ports to wait for, {mode: port or n/a reason}, idle h2c port, TLS port or
    n/a reason).  Needs the certificates (make_certs).  plain: the same config without its
    TLS listener (the idle-RSS-without-TLS measurement)."""
    ports = {"UPSTREAM": up, "TMP": TMP, "H2H2": free_port(), "H1H1": free_port(),
             "H1H2": free_port(), "ADMIN": free_port(), "TLS": free_port(),
             "TLS_CERT": TLS["cert"], "TLS_KEY": TLS["key"], "TLS_PEM": TLS["pem"]}
    p2, p1, p12, pt = ports["H2H2"], ports["H1H1"], ports["H1H2"], ports["TLS"]
    tls_wait = [] if plain else [pt]
    if plain:
        pt = "no TLS listener in this config"
    if name == "relay":
        args = [binp("remora-relay"), "--listen", f"127.0.0.1:{p2}", "--upstream", f"127.0.0.1:{up}"]
        return args, [p2], {"h2h2": p2, "h1h1": p2, "h1h2": RELAY_NA}, p2, RELAY_TLS_NA
    if name == "remora":
        cfg = render("remora.yaml", ports,
                     insert=None if plain else ("  clusters:\n", "remora-tls.yaml"))
        args = [binp("remora"), "-c", cfg, "--concurrency", "1", "-l", "warning"]
        return args, [p2, p1, p12, ports["ADMIN"]] + tls_wait, \
            {"h2h2": p2, "h1h1": p1, "h1h2": p12}, p2, pt
    if name == "haproxy":
        cfg = render("haproxy.cfg", ports, plain=plain)
        return ["haproxy", "-db", "-f", cfg], [p2, p1, p12] + tls_wait, \
            {"h2h2": p2, "h1h1": p1, "h1h2": p12}, p2, pt
    if name == "nghttpx":
        cfg = render("nghttpx.conf", ports, plain=plain)
        return ["nghttpx", f"--conf={cfg}"], [p2] + tls_wait, \
            {"h2h2": p2, "h1h1": p2, "h1h2": p2}, p2, pt
    if name == "nginx":
        for d in ("nginx-body", "nginx-proxy", "nginx-fastcgi", "nginx-uwsgi", "nginx-scgi"):
            os.makedirs(os.path.join(TMP, d), exist_ok=True)
        cfg = render("nginx.conf", ports, plain=plain)
        return ["nginx", "-c", cfg, "-p", TMP, "-e", os.path.join(TMP, "nginx-error.log")], \
            [p2, p1] + tls_wait, {"h2h2": NGINX_NA, "h1h1": p1, "h1h2": NGINX_NA}, p2, pt
    raise ValueError(name)


def version(name):
    try:
        if name == "haproxy":
            out = subprocess.run(["haproxy", "-v"], capture_output=True, timeout=10).stdout
            return "HAProxy " + out.decode().split()[2]
        if name == "nghttpx":
            return subprocess.run(["nghttpx", "--version"], capture_output=True,
                                  timeout=10).stdout.decode().strip()
        if name == "nginx":
            r = subprocess.run(["nginx", "-v"], capture_output=True, timeout=10)
            return (r.stderr or r.stdout).decode().strip().replace("nginx version: ", "")
        if name == "h2load":
            r = subprocess.run(["h2load", "--version"], capture_output=True, timeout=10)
            return r.stdout.decode().strip()
        if name == "remora":
            return f"remora {os.environ.get('RMB_REV', 'unknown')}"
    except (OSError, subprocess.SubprocessError, IndexError):
        pass
    return name


# ---- one run -------------------------------------------------------------------------------
def main():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    want = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):
        pass
    ncpu = os.cpu_count() or 1
    if ncpu < 2:
        fail("needs 2 CPUs (load tool and upstream on CPU 0, proxy on CPU 1)")
        return
    os.sched_setaffinity(0, {0})        # this script's own work stays on CPU 0 too
    log(f"compare: temp dir {TMP}; {'quick' if QUICK else 'full'} run; results -> {OUT}")

    R = {"sat": {}, "fix": {}, "mem": {}, "tools": {}, "tls": {}, "load_before": loadavg(),
         "rounds": {}}
    raw = {"sat": {}, "fix": {}, "tools": {}, "tls": {}}  # table -> name -> mode -> [rounds]
    try:
        make_certs()
    except (OSError, subprocess.SubprocessError) as e:
        fail(f"could not make the TLS certificates (every proxy's config needs them): {e}")
        return R
    up_port = free_port()
    up = Proc("upstream", [binp("remora-upstream"), "--listen", f"127.0.0.1:{up_port}",
                           "--body-size", str(BODY), "--quiet"], LOAD_CPU, True)
    commands.append(("upstream", cmdline(["taskset", "-c", LOAD_CPU] + up.args)))
    if not wait_port(up_port, up):
        fail(f"remora-upstream did not start: {up.output()[-500:]}")
        return R

    # Every proxy is started up front (an idle proxy costs nothing) so that the measurements
    # can be interleaved: round after round, each proxy in turn, the order rotated per round.
    # Background load on a shared machine then hits every proxy alike; the tables give each
    # figure's median over the rounds.
    # Idle RSS without TLS: each proxy started alone with its config minus the TLS listener,
    # measured 0.5 s after start and stopped (the TLS library then stays unloaded where the
    # proxy loads it on demand; the peers link it and load it at start either way).
    plain_idle = {}
    for name in ("relay", "remora", "haproxy", "nghttpx", "nginx"):
        args, wait, _, _, _ = proxy_spec(name, up_port, plain=True)
        px = Proc(f"{name}-plain", args, PROXY_CPU, name in ("relay", "remora"))
        commands.append((f"start {name} without TLS",
                         cmdline(["taskset", "-c", PROXY_CPU] + args)))
        if all(wait_port(p, px) for p in wait):
            time.sleep(0.3 if QUICK else 0.5)
            plain_idle[name] = rss_kib(px.pid)
        else:
            fail(f"{name} without TLS did not start (log {px.log}):\n{px.output()[-1500:]}")
        px.stop()

    started = {}
    for name in ("relay", "remora", "haproxy", "nghttpx", "nginx"):
        args, wait, modes, idle_port, tls_port = proxy_spec(name, up_port)
        px = Proc(name, args, PROXY_CPU, name in ("relay", "remora"))
        commands.append((f"start {name}", cmdline(["taskset", "-c", PROXY_CPU] + args)))
        if not all(wait_port(p, px) for p in wait):
            fail(f"{name} did not start (log {px.log}):\n{px.output()[-1500:]}")
            px.stop()
            continue
        started[name] = (px, modes, idle_port, tls_port)
    for name, (px, modes, idle_port, tls_port) in started.items():
        log(f"compare: {name}: memory")
        R["mem"][name] = memory(name, idle_port, px.pid, tls_port)
        R["mem"][name]["idle_plain"] = plain_idle.get(name)

    def targets(mode_list):
        """[(name, pid, url or n/a reason)] for the direct run and every started proxy."""
        out = []
        for name, (px, modes, _, _) in started.items():
            for mode in mode_list:
                port = modes[mode]
                out.append((name, mode, px.pid, port if isinstance(port, str) else
                            f"http://127.0.0.1:{port}{PATH[mode]}"))
        return out

    def collect(table, name, mode, res, what):
        raw[table].setdefault(name, {}).setdefault(mode, []).append(res)
        if res is None:
            fail(f"{name}: {mode} {what} run failed")

    for r in range(ROUNDS):
        log(f"compare: saturation round {r + 1}/{ROUNDS}")
        for mode, _ in MODES:
            if mode != "h1h2":   # the direct row: load tool straight at the upstream
                collect("sat", "direct", mode, saturate(f"http://127.0.0.1:{up_port}{PATH[mode]}",
                                                        mode, None, up_pid=up.pid), "saturation")
            tl = [t for t in targets([mode])]
            tl = tl[r % len(tl):] + tl[:r % len(tl)] if tl else tl
            for name, _, pid, url in tl:
                if not url.startswith("http"):
                    raw["sat"].setdefault(name, {})[mode] = [{"na": url}]
                    continue
                rec = f"saturation {mode}" if name == "remora" and r == 0 else None
                collect("sat", name, mode, saturate(url, mode, pid, record=rec, up_pid=up.pid),
                        "saturation")
    for r in range(ROUNDS):
        log(f"compare: fixed-rate round {r + 1}/{ROUNDS}")
        for mode in FIX_MODES:
            rec = f"fixed rate {mode}, direct" if r == 0 else None
            collect("fix", "direct", mode, fixed(f"http://127.0.0.1:{up_port}{PATH[mode]}", mode,
                                                 None, record=rec), "fixed-rate")
            tl = targets([mode])
            tl = tl[r % len(tl):] + tl[:r % len(tl)] if tl else tl
            for name, _, pid, url in tl:
                if not url.startswith("http"):
                    raw["fix"].setdefault(name, {})[mode] = [{"na": url}]
                    continue
                rec = f"fixed rate {mode}" if name == "remora" and r == 0 else None
                collect("fix", name, mode, fixed(url, mode, pid, record=rec), "fixed-rate")
    raw["sat"]["direct"]["h1h2"] = [{"na": "no proxy"}]

    # TLS: full handshakes per second, one new connection per request
    for r in range(ROUNDS):
        log(f"compare: TLS handshake round {r + 1}/{ROUNDS}")
        for mode, _ in TLS_MODES:
            tl = [(n, v[0].pid, v[3]) for n, v in started.items()]
            tl = tl[r % len(tl):] + tl[:r % len(tl)] if tl else tl
            for name, pid, port in tl:
                if not isinstance(port, int):
                    raw["tls"].setdefault(name, {})[mode] = [{"na": port}]
                    continue
                rec = f"TLS handshakes {mode}" if name == "remora" and r == 0 else None
                collect("tls", name, mode,
                        tls_handshakes(f"https://127.0.0.1:{port}{TLS_PATH}", mode, pid, rec),
                        "TLS handshake")

    for name, (px, _, _, _) in started.items():
        if not px.alive():
            fail(f"{name} exited during the run (log {px.log}):\n{px.output()[-1500:]}")
            continue
        R["mem"][name]["after"] = rss_kib(px.pid)
        px.stop()
    up.stop()

    # Part 4: load tools against one upstream pinned to CPU 1, each tool on CPU 0 alone.
    up2_port = free_port()
    up2 = Proc("upstream-tools", [binp("remora-upstream"), "--listen", f"127.0.0.1:{up2_port}",
                                  "--body-size", str(BODY), "--quiet"], PROXY_CPU, True)
    if not wait_port(up2_port, up2):
        fail("remora-upstream (tools) did not start")
    else:
        for r in range(ROUNDS):
            log(f"compare: remora-load vs h2load, round {r + 1}/{ROUNDS}")
            for mode, largs in (("h2c", ["-c", "10", "-m", "20"]), ("h1", ["--h1", "-c", "50"])):
                url = f"http://127.0.0.1:{up2_port}/"
                # h2c: remora-load busy-polls (--spin); once more without it for the record
                extra = ("remora-load-nospin",) if mode == "h2c" else ()
                for tool in ("remora-load", "h2load") + extra:
                    raw["tools"].setdefault(tool, {}).setdefault(mode, []).append(
                        tool_run(tool, url, largs, up2.pid, mode, r == 0))
        up2.stop()

    # medians over the rounds
    for table in ("sat", "fix", "tls"):
        for name, per in raw[table].items():
            R[table][name] = {m: median_of(v) for m, v in per.items()}
            R["rounds"].setdefault(table, {})[name] = per
    for tool, per in raw["tools"].items():
        for mode, v in per.items():
            R["tools"].setdefault(mode, {})[tool] = median_of(v)
    R["load_after"] = loadavg()
    return R


def median_of(results):
    """Per key, the median over the rounds that succeeded; None when none did."""
    ok = [x for x in results if x is not None]
    if not ok:
        return None
    if "na" in ok[0]:
        return ok[0]
    out = {}
    for k in ok[0]:
        vals = sorted(x[k] for x in ok if x.get(k) is not None)
        if vals:
            n = len(vals)
            out[k] = vals[n // 2] if n % 2 else (vals[n // 2 - 1] + vals[n // 2]) / 2
    out["rounds"] = len(ok)
    return out


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def tool_run(tool, url, largs, up_pid, mode, record):
    if tool.startswith("remora-load"):
        # h2c: --spin polls instead of sleeping while responses are due, so that the upstream
        # never pays for waking the tool (see bench/load/README.md, "Against h2load")
        spin = ["--spin", "100us"] if tool == "remora-load" and mode == "h2c" else []
        args = [binp("remora-load"), "--no-progress", "--json", "-t", "1",
                "-d", f"{int(TOOL_S * 1000)}ms", "--warmup", f"{int(WARM_S * 1000)}ms"] + spin + \
            largs + [url]
    else:
        args = ["h2load", "-t", "1", "-D", f"{int(TOOL_S * 1000)}ms",
                f"--warm-up-time={int(WARM_S * 1000)}ms"] + largs + [url]
    full = ["taskset", "-c", LOAD_CPU] + args
    if record:
        commands.append((f"{tool} {mode}", cmdline(full)))
    u0 = cpu_ns(up_pid)
    t0 = time.monotonic()
    p = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL)
    try:
        out, err = p.communicate(timeout=TOOL_S + WARM_S + 40)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        fail(f"{tool} {mode} did not finish")
        return None
    wall = time.monotonic() - t0
    u1 = cpu_ns(up_pid)
    text = out.decode("utf-8", "replace")
    try:
        if tool.startswith("remora-load"):
            rep = json.loads(text)
            ok, dur = rep["requests"]["succeeded"], rep["duration_s"]
        else:
            # "finished in" includes the warm-up; req/s is over the measured period
            rps = float(re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", text).group(1))
            ok = int(re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded",
                               text).group(1))
            dur = ok / rps if rps > 0 else 1.0
    except (ValueError, AttributeError, KeyError):
        fail(f"{tool} {mode}: exit {p.returncode}, unreadable output: {text[-400:]} "
             f"{err.decode('utf-8', 'replace')[-400:]}")
        return None
    if ok == 0:
        fail(f"{tool} {mode}: no request succeeded")
        return None
    return {"rps": ok / dur, "up_util": (u1 - u0) / 1e9 / wall}


# ---- report --------------------------------------------------------------------------------
PEERS = ("haproxy", "nghttpx", "nginx")


def get(R, table, name, mode, key):
    v = R[table].get(name, {})
    v = v.get(mode) if mode else v
    return v.get(key) if isinstance(v, dict) else None


def cell(R, table, name, mode, key, fmt):
    v = R[table].get(name, {})
    v = v.get(mode) if mode else v
    if v is None:
        return "failed" if name in R[table] else "–"
    if "na" in v:
        return "n/a"
    x = v.get(key)
    return "–" if x is None else fmt.format(x)


def added(R, name, mode, key):
    v, d = get(R, "fix", name, mode, key), get(R, "fix", "direct", mode, key)
    return None if v is None or d is None else v - d


def ratios(R):
    """Lines 'metric: remora X, best peer Y (name) -> ratio; relay Z -> ratio'."""
    metrics = []
    for mode, label in MODES:
        metrics.append((f"max req/s, {label}", lambda n, m=mode: get(R, "sat", n, m, "rps"), max))
        metrics.append((f"CPU µs/req at saturation, {label}",
                        lambda n, m=mode: get(R, "sat", n, m, "us"), min))
    for mode in FIX_MODES:
        label = dict(MODES)[mode]
        metrics.append((f"CPU µs/req at {RATE} req/s, {label}",
                        lambda n, m=mode: get(R, "fix", n, m, "us"), min))
        for k, kl in (("p50", "p50"), ("p99", "p99"), ("p999", "p99.9")):
            metrics.append((f"added {kl} µs at {RATE} req/s, {label}",
                            lambda n, m=mode, kk=k: added(R, n, m, kk), min))
    metrics.append(("RSS idle KiB, no TLS configured",
                    lambda n: get(R, "mem", n, None, "idle_plain"), min))
    metrics.append(("RSS idle KiB, TLS listener configured",
                    lambda n: get(R, "mem", n, None, "idle"), min))
    metrics.append(("RSS KiB per idle h2c connection",
                    lambda n: get(R, "mem", n, None, "per_conn"), min))
    metrics.append(("RSS KiB per idle TLS (h2) connection",
                    lambda n: get(R, "mem", n, None, "tls_per_conn"), min))
    for mode, label in TLS_MODES:
        metrics.append((f"TLS handshakes/s, {label}",
                        lambda n, m=mode: get(R, "tls", n, m, "hps"), max))
        metrics.append((f"CPU µs per TLS handshake (+ 1 request), {label}",
                        lambda n, m=mode: get(R, "tls", n, m, "us"), min))
    lines = []
    for label, f, best in metrics:
        r = f("remora")
        if r is None:
            lines.append(f"{label}: remora not measured")
            continue
        peers = [(f(p), p) for p in PEERS if f(p) is not None]
        s = f"{label}: remora {r:,.2f}"
        if peers:
            bv, bn = best(peers)
            s += f"; best peer {bn} {bv:,.2f} → remora/{bn} = " + \
                (f"{r / bv:.2f}" if bv > 0 else "– (peer's figure ≤ 0: within this run's noise)")
            others = [f"remora/{n} = {r / v:.2f}" for v, n in peers if n != bn and v > 0]
            if others:
                s += " (" + ", ".join(others) + ")"
        rl = f("relay")
        if rl is not None:
            s += f"; relay {rl:,.2f} → remora/relay = " + (f"{r / rl:.2f}" if rl > 0 else "–")
        lines.append(s)
    return lines


def machine():
    model = "?"
    fam = mod = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            k, _, v = line.partition(":")
            k, v = k.strip(), v.strip()
            if k == "model name" and model == "?":
                model = v
            elif k == "cpu family" and not fam:
                fam = v
            elif k == "model" and not mod:
                mod = v
    mem = ""
    with open("/proc/meminfo") as f:
        mem = f"{int(f.readline().split()[1]) // 1024 // 1024} GiB"
    virt = ""
    try:
        virt = subprocess.run(["systemd-detect-virt"], capture_output=True,
                              timeout=5).stdout.decode().strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return (f"{os.cpu_count()} CPUs, {model} (family {fam} model {mod}), {mem} RAM, "
            f"kernel {platform.release()}" + (f", {virt} guest" if virt and virt != "none" else ""))


def write(R):
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rows = ["relay", "remora"] + list(PEERS)
    names = {"relay": "relay (floor)", "remora": "**remora**", "haproxy": version("haproxy"),
             "nghttpx": version("nghttpx"), "nginx": f"nginx {version('nginx')}"}
    L = []
    L.append("# Benchmark results: remora vs HAProxy, nghttpx, nginx and a byte relay\n")
    argv = os.environ.get("RMB_ARGS", "")
    L.append(f"Generated by `bench/compare.sh{' ' + argv if argv else ''}` on {now}, "
             f"{version('remora')}.  Method and caveats: [bench/README.md](README.md).\n")
    L.append(f"Machine: {machine()}.  **One run on a shared 2-core VM** (other work may have run "
             "at the same time: load average "
             f"{R.get('load_before', '?')} before the run, {R.get('load_after', '?')} after it): "
             "read the ratios, which were all measured in this same run, rather than the "
             "absolute figures.\n")
    L.append(f"Setup: upstream `remora-upstream` ({BODY}-byte bodies) and the load tool "
             f"`remora-load` on CPU 0; every proxy with one worker pinned to CPU 1 "
             f"(`taskset -c 1`), all started up front and loaded one at a time.  Proxy CPU time "
             f"= all its threads' run time from `/proc/PID/task/*/schedstat`, sampled before and "
             f"after each run, divided by the requests that succeeded.  Saturation runs: "
             f"{SAT_S} s closed loop after a {WARM_S} s warm-up run; fixed rate: {FIX_S} s open "
             f"loop at {RATE} req/s after a {WARM_S} s warm-up run.  **Each figure is the median "
             f"of {ROUNDS} round{'s' if ROUNDS > 1 else ''}**, the rounds interleaved (every "
             f"proxy in turn, the order rotated each round) so that background load hits all "
             f"alike; the per-round figures are at the end.\n")

    L.append("## Saturation (closed loop): max req/s and proxy CPU µs per request\n")
    L.append("| proxy | " + " | ".join(
        f"{lab}: req/s | µs/req | CPU % | upstream µs/req" for _, lab in MODES) + " |")
    L.append("|---|" + "---:|" * (4 * len(MODES)))
    for n in ["direct"] + rows:
        cells = []
        for mode, _ in MODES:
            cells.append(cell(R, "sat", n, mode, "rps", "{:,.0f}"))
            cells.append(cell(R, "sat", n, mode, "us", "{:.2f}"))
            cells.append(cell(R, "sat", n, mode, "util", "{:.0%}"))
            cells.append(cell(R, "sat", n, mode, "up_us", "{:.2f}"))
        label = "direct (no proxy)" if n == "direct" else names[n]
        L.append(f"| {label} | " + " | ".join(cells) + " |")
    L.append("")
    L.append(f"Load: h2c `-c 10 -m 20` (10 connections × 20 streams), HTTP/1.1 `--h1 -c 50` "
             f"(50 connections, one request at a time).  \"CPU %\" is the proxy's CPU use during the "
             f"run: below ~95 % the proxy was not the bottleneck (CPU 0, shared by the load tool "
             f"and the upstream, was), so its req/s is a floor and its µs/req the figure to "
             f"compare.  \"upstream µs/req\" is remora-upstream's CPU per request behind that "
             f"proxy: how much work the proxy's write batching leaves to CPU 0.  The direct row is the load tool straight at the upstream, both on CPU 0.\n")

    L.append(f"## Fixed rate: {RATE} req/s (open loop)\n")
    L.append("| proxy | " + " | ".join(
        f"{dict(MODES)[m]}: µs/req | +p50 µs | +p99 µs | +p99.9 µs" for m in FIX_MODES) + " |")
    L.append("|---|" + "---:|" * (4 * len(FIX_MODES)))
    for n in ["direct"] + rows:
        cells = []
        for mode in FIX_MODES:
            if n == "direct":
                cells.append("–")
                for k in ("p50", "p99", "p999"):
                    cells.append(cell(R, "fix", n, mode, k, "{:.0f} (abs.)"))
                continue
            cells.append(cell(R, "fix", n, mode, "us", "{:.2f}"))
            for k in ("p50", "p99", "p999"):
                v = R["fix"].get(n, {}).get(mode)
                if v is None or "na" in v:
                    cells.append(cell(R, "fix", n, mode, k, ""))
                else:
                    a = added(R, n, mode, k)
                    cells.append("–" if a is None else f"{a:+.0f}")
        label = "direct (no proxy)" if n == "direct" else names[n]
        L.append(f"| {label} | " + " | ".join(cells) + " |")
    L.append("")
    L.append(f"Load: HTTP/1.1 `--h1 -c 16 --rate {RATE}`, h2c `-c 4 -m 16 --rate {RATE}`.  "
             "Latency is counted from each request's scheduled send time (no coordinated "
             "omission); \"+\" columns are the proxied percentile minus the direct run's.  At "
             "this rate CPU 1 idles between requests, so each added figure includes two "
             "cross-CPU wake-ups (client → proxy and upstream → proxy; ≈25 µs each on this VM, "
             "see shared/reference/perf-anchors.md §7) that the direct run does not pay.\n")

    L.append(f"## Memory: RSS idle and with {IDLE_N:,} idle h2c (and TLS) connections\n")
    L.append(f"| proxy | RSS idle KiB, no TLS configured | RSS idle KiB, TLS listener "
             f"configured | RSS with {IDLE_N:,} idle h2c conns KiB | KiB per "
             f"connection | + {IDLE_N:,} idle TLS (h2) conns KiB | KiB per TLS connection | "
             "RSS after the load runs KiB |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for n in rows:
        tls_na = n == "relay"
        L.append(f"| {names[n]} | {cell(R, 'mem', n, None, 'idle_plain', '{:,}')} | "
                 + ("n/a | " if tls_na else f"{cell(R, 'mem', n, None, 'idle', '{:,}')} | ") +
                 f"{cell(R, 'mem', n, None, 'held', '{:,}')} | "
                 f"{cell(R, 'mem', n, None, 'per_conn', '{:.1f}')} | "
                 + ("n/a | n/a | " if tls_na else
                    f"{cell(R, 'mem', n, None, 'tls_held', '{:,}')} | "
                    f"{cell(R, 'mem', n, None, 'tls_per_conn', '{:.1f}')} | ")
                 + f"{cell(R, 'mem', n, None, 'after', '{:,}')} |")
    L.append("")
    tls_infos = sorted({f"{names[n]}: {R['mem'][n]['tls_info']}" for n in rows
                        if (R["mem"].get(n) or {}).get("tls_info")})
    L.append(f"VmRSS of the proxy process (/proc/PID/status).  \"No TLS configured\": each "
             f"proxy started on its own with its config minus the TLS listener, 0.5 s after "
             f"start.  Then, with the TLS listener configured: 0.5 s after start, then with "
             f"{IDLE_N:,} connections that each sent the HTTP/2 preface and an empty SETTINGS "
             f"frame and acknowledged the proxy's SETTINGS (nginx: its h2c listener; the relay "
             f"also opens one upstream connection per client connection), then with {IDLE_N:,} "
             f"TLS connections more (ALPN h2, certificate verified, the same preface and "
             f"SETTINGS exchange) while the h2c ones stay open: \"KiB per TLS connection\" is "
             f"that second growth over the TLS connections, new memory rather than what the "
             f"closed h2c connections would have left in the allocator.  Negotiated: "
             + ("; ".join(tls_infos) if tls_infos else "–") + ".  In the second column and after, every proxy but the "
             "relay has its TLS listener configured (TLS library loaded, certificate and key "
             "in a context).  RSS after the load "
             f"runs is reported for information.\n")

    L.append("## TLS: full handshakes/s and proxy CPU µs per handshake\n")
    L.append("| proxy | " + " | ".join(
        f"{lab}: handshakes/s | µs/handshake | CPU % | load tool µs/handshake"
        for _, lab in TLS_MODES) + " |")
    L.append("|---|" + "---:|" * (4 * len(TLS_MODES)))
    for n in rows:
        cells = []
        for mode, _ in TLS_MODES:
            cells.append(cell(R, "tls", n, mode, "hps", "{:,.0f}"))
            cells.append(cell(R, "tls", n, mode, "us", "{:.1f}"))
            cells.append(cell(R, "tls", n, mode, "util", "{:.0%}"))
            cells.append(cell(R, "tls", n, mode, "client_us", "{:.1f}"))
        L.append(f"| {names[n]} | " + " | ".join(cells) + " |")
    L.append("")
    L.append(f"Load: `remora-load --new-conn -c 32` (`--h1` for HTTP/1.1), closed loop, "
             f"{TLS_S} s after a {WARM_S} s warm-up run: 32 connections at a time, each a new "
             f"TCP connection and a full TLS handshake (TLS 1.3 with each proxy's defaults; the "
             f"client offers X25519 first, OpenSSL's default, and no session: no ticket, no PSK, "
             f"so no resumption), one GET `{TLS_PATH}` (1 KiB response; HTTP/1.1 keep-alive "
             f"towards the upstream, as every proxy speaks it), then close_notify and FIN; a new "
             f"connection replaces it at once.  Certificate: EC P-256 (prime256v1, ECDSA-SHA256, "
             f"what a mesh's workload certificates use) signed by a CA made for the run with the "
             f"openssl CLI; the client does not verify the chain (it still verifies the "
             f"handshake signature, as TLS 1.3 requires).  \"µs/handshake\" is the proxy's CPU "
             f"time per connection served: accept, handshake (ECDHE, the ECDSA signature, the "
             f"session tickets every proxy issues by default), one proxied request and the "
             f"close.  \"CPU %\" is the proxy's CPU use over the run, \"load tool "
             f"µs/handshake\" remora-load's own (user + sys): a TLS 1.3 client pays the same "
             f"key exchange as the server plus an ECDSA P-256 verification (about 3× a "
             f"signature), so one core of client cannot keep one core of proxy busy — the "
             f"handshakes/s column is the rate CPU 0 reaches through each proxy, the µs/handshake "
             f"column the figure to compare.  The relay has no TLS (n/a).\n")

    L.append("## Load tools: remora-load vs h2load on one core\n")
    L.append("| load | remora-load req/s | h2load req/s | remora-load / h2load | upstream CPU % "
             "(remora-load, h2load) |")
    L.append("|---|---:|---:|---:|---:|")
    for mode, desc in (("h2c", "h2c `-c 10 -m 20`"), ("h1", "HTTP/1.1 `--h1 -c 50`")):
        t = R["tools"].get(mode, {})
        a, b = t.get("remora-load"), t.get("h2load")
        ra = f"{a['rps']:,.0f}" if a else "failed"
        rb = f"{b['rps']:,.0f}" if b else "failed"
        rr = f"{a['rps'] / b['rps']:.2f}" if a and b else "–"
        uu = ", ".join(f"{x['up_util']:.0%}" if x else "–" for x in (a, b))
        L.append(f"| {desc} | {ra} | {rb} | {rr} | {uu} |")
    L.append("")
    ns = R["tools"].get("h2c", {}).get("remora-load-nospin")
    h2 = R["tools"].get("h2c", {}).get("h2load")
    nospin = ""
    if ns:
        nospin = (f"  Without `--spin`, remora-load's h2c figure was {ns['rps']:,.0f} req/s"
                  + (f" ({ns['rps'] / h2['rps']:.2f}× h2load)" if h2 else "")
                  + f", upstream CPU {ns['up_util']:.0%}.")
    L.append(f"Each tool alone on CPU 0 (`-t 1`, {TOOL_S} s after a {WARM_S} s warm-up, "
             f"median of {ROUNDS}), "
             f"against one `remora-upstream` pinned to CPU 1 ({version('h2load')}).  When the "
             "upstream's CPU is near 100 % the upstream, not the tool, set the rate.  "
             "h2c: remora-load runs with `--spin 100us` (it polls instead of sleeping while "
             "responses are due, so the upstream never has to wake it: a cross-CPU wake-up in "
             "the upstream's send() costs it 5-10 % of its time on a VM; h2load, slower per "
             f"request, sleeps less often and has no such option).{nospin}\n")

    L.append("## Ratios (remora / peer; < 1 is better for CPU, latency and memory, > 1 for req/s)\n")
    L.append("```")
    L.extend(ratios(R))
    L.append("```\n")

    fc = os.path.join(ROOT, "bench", "RESULTS-filters.md")
    if os.path.exists(fc):  # written by bench/filter_cost.py --write (its own, separate run)
        with open(fc) as f_:
            body = f_.read().split("\n", 1)[1].strip()
        L.append("## The resilience filter chain's cost (from bench/RESULTS-filters.md)\n")
        L.append(body + "\n")

    pf = os.path.join(ROOT, "bench", "RESULTS-profile.md")
    if os.path.exists(pf):  # instruction counts from bench/profile.sh (callgrind), kept by hand
        with open(pf) as f_:
            body = f_.read().split("\n", 1)[1].strip()
        L.append("## Profile: user-space instructions per request (from bench/RESULTS-profile.md)\n")
        L.append(body + "\n")

    xs = os.path.join(ROOT, "bench", "RESULTS.md")
    if os.path.exists(xs):  # written by bench/xds_scale.py --write (its own run): carried over
        with open(xs) as f_:
            old = f_.read()
        i = old.find("\n## xDS scale\n")
        if i >= 0:
            j = old.find("\n## ", i + 1)
            L.append(old[i + 1:j if j >= 0 else len(old)].strip() + "\n")

    L.append("## Not measured, and why\n")
    L.append(f"- nginx, h2c → h2c and HTTP/1.1 → h2c: {NGINX_NA}.")
    L.append(f"- relay, HTTP/1.1 → h2c: {RELAY_NA}.")
    L.append(f"- relay, TLS: {RELAY_TLS_NA}.")
    if failures:
        L.append("- Failures in this run:")
        for f_ in failures:
            L.append("  - " + f_.splitlines()[0])
    L.append("")

    L.append("## Per-round figures\n")
    L.append("req/s and proxy CPU µs/req of each saturation round; CPU µs/req and p99 latency "
             "(absolute) of each fixed-rate round; TLS handshakes/s and proxy CPU µs per "
             "handshake of each TLS round.\n")
    L.append("```")
    for table in ("sat", "fix", "tls"):
        for name, per in R.get("rounds", {}).get(table, {}).items():
            for mode, runs in per.items():
                if runs and runs[0] is not None and "na" in runs[0]:
                    continue
                if table == "sat":
                    fmt = [("—" if x is None else f"{x['rps']:,.0f} req/s " +
                            (f"{x['us']:.2f} µs" if 'us' in x else "")) for x in runs]
                    L.append(f"saturation {mode} {name:8}: " + " | ".join(fmt))
                elif table == "tls":
                    fmt = [("—" if x is None else f"{x['hps']:,.0f} hs/s " +
                            (f"{x['us']:.1f} µs" if 'us' in x else "")) for x in runs]
                    L.append(f"TLS {mode} {name:8}: " + " | ".join(fmt))
                else:
                    fmt = [("—" if x is None else (f"{x['us']:.2f} µs " if 'us' in x else "") +
                            f"p99 {x['p99']:,.0f} µs") for x in runs]
                    L.append(f"fixed {mode} {name:8}: " + " | ".join(fmt))
    L.append("```\n")

    L.append("## Commands\n")
    L.append("Ports are picked free at run time; `$TMP` is the run's temp dir, where the peer "
             "configs are rendered from `bench/peers/*`.  The load commands shown are remora's; "
             "every proxy gets the same ones with its own port (nghttpx routes by path: "
             "`/up-h2/` goes to the h2c upstream, `/up-h1/` to HTTP/1.1, which is why every "
             "proxy is sent those paths).\n")
    L.append("```")
    L.append(f"bench/compare.sh{' ' + argv if argv else ''}")
    for what, c in commands:
        L.append(f"# {what}\n{c}")
    L.append("```")
    text = "\n".join(L) + "\n"
    with open(OUT, "w") as f:
        f.write(text)
    return text


def cleanup():
    for p in procs:
        if p.alive():
            try:
                os.killpg(p.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


try:
    R = main() or {"sat": {}, "fix": {}, "mem": {}, "tools": {}, "tls": {}}
    for k in ("sat", "fix", "mem", "tools", "tls"):
        R.setdefault(k, {})
    with open(os.path.join(TMP, "results.json"), "w") as f:
        json.dump(R, f, indent=1)
    write(R)
    print("\n".join(ratios(R)))
    print(f"results: {OUT}")
finally:
    cleanup()
if failures:
    print(f"compare: {len(failures)} failure(s):", file=sys.stderr)
    for f_ in failures:
        print("  " + f_.splitlines()[0], file=sys.stderr)
    print(f"logs kept in {TMP}", file=sys.stderr)
    sys.exit(1)
if not KEEP:
    import shutil
    if os.environ.get("RMB_SRC"):
        shutil.rmtree(os.environ["RMB_SRC"], ignore_errors=True)
    if not OUT.startswith(TMP):
        shutil.rmtree(TMP, ignore_errors=True)
PY
