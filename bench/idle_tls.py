#!/usr/bin/python3
"""bench/idle_tls.py: RSS per idle TLS 1.3 + h2 connection, remora (and nginx), rerunnable.

Each run starts a fresh proxy (remora: bench/peers/remora.yaml with the TLS listener of
bench/peers/remora-tls.yaml, one worker; nginx: bench/peers/nginx.conf), with an EC P-256
certificate from a throwaway CA made with the openssl CLI, as bench/compare.sh does.  Then, as
compare.sh's memory() does: RSS (VmRSS of /proc/PID/status) idle, then with N idle h2c
connections (preface + SETTINGS, the server's SETTINGS acked), then with N idle TLS
connections (ALPN h2, certificate verified, same h2 exchange) on top of those, so that the TLS
connections' memory is new memory and not what closed h2c connections left in the allocator.
Reported per connection: (RSS after - RSS before) / connections still open.  --no-h2c skips
the h2c step (TLS connections then land on the process right after start).

    bench/idle_tls.py                       # remora from build/, 1,000 connections, 3 runs
    bench/idle_tls.py --nginx               # ... and nginx in the same runs (interleaved)
    bench/idle_tls.py --build build/san -n 200 --runs 1
    bench/idle_tls.py --env MALLOC_ARENA_MAX=1 --runs 1 --heap   # --heap: gdb, malloc_stats
    bench/idle_tls.py --runs 1 --wrap 'valgrind --tool=massif --massif-out-file=/tmp/m.out' \\
        --hold 5     # remora under a wrapper; --hold: seconds to keep the connections open
    bench/idle_tls.py --handshakes 3        # instead: remora's CPU us per full TLS handshake
    bench/idle_tls.py --handshakes 3 --plain   # ... per new h2c connection (one request each)

Exit status 0 when every run held at least 95 % of its connections (and a sanitizer build
printed no report), 1 otherwise.  --json
prints every run's figures as JSON on stdout as well.
"""
import argparse
import json
import os
import re
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
SETTINGS_ACK = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def heap_in_use(pid, log_path):
    """glibc's bytes in use (every arena and mmap'd chunk) of <pid>, through gdb calling
    malloc_stats() in the process (which prints to its stderr: the log).  None without gdb."""
    try:
        subprocess.run(["gdb", "-p", str(pid), "-batch", "-ex", "call (void)malloc_stats()"],
                       capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    with open(log_path, "rb") as f:
        text = f.read().decode("utf-8", "replace")
    m = re.findall(r"Total \(incl. mmap\):\s*system bytes\s*=\s*(\d+)\s*in use bytes\s*=\s*(\d+)",
                   text)
    return int(m[-1][1]) if m else None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def settings_seen(buf):
    """Has <buf> (HTTP/2 frames from the server) a SETTINGS frame that is not an ACK?"""
    off = 0
    while len(buf) - off >= 9:
        ln = int.from_bytes(buf[off:off + 3], "big")
        if buf[off + 3] == 4 and not buf[off + 4] & 1:
            return True
        off += 9 + ln
    return False


# GET / on stream 1 (HPACK: :method GET, :scheme https, :path /, :authority localhost),
# END_STREAM | END_HEADERS
GET_HEADERS = bytes([0x82, 0x87, 0x84, 0x41, 9]) + b"localhost"
GET_FRAME = len(GET_HEADERS).to_bytes(3, "big") + b"\x01\x05\x00\x00\x00\x01" + GET_HEADERS


def stream1_ended(buf):
    """Has <buf> a frame on stream 1 with END_STREAM (the response is complete)?"""
    off = 0
    while len(buf) - off >= 9:
        ln = int.from_bytes(buf[off:off + 3], "big")
        sid = int.from_bytes(buf[off + 5:off + 9], "big") & 0x7fffffff
        if sid == 1 and buf[off + 3] in (0, 1) and buf[off + 4] & 1:
            return True
        if sid == 1 and buf[off + 3] == 3:     # RST_STREAM
            return True
        off += 9 + ln
    return False


def h2_exchange(s, request=False):
    """Preface + empty SETTINGS, read until the server's SETTINGS, ack it; with <request>, then
    GET / on stream 1 and read until its response ends.  True when done."""
    s.sendall(PREFACE)
    buf = b""
    while not settings_seen(buf):
        data = s.recv(65536)
        if not data:
            return False
        buf += data
    s.sendall(SETTINGS_ACK)
    if not request:
        return True
    s.sendall(GET_FRAME)
    while not stream1_ended(buf):
        data = s.recv(65536)
        if not data:
            return False
        buf += data
    return True


def hold(port, n, ctx, timeout, request=False):
    """n connections (TLS when ctx is set) through the h2 exchange, one after the other (as
    bench/compare.sh's hold_idle_tls), left open and non-blocking.  Returns (sockets, error)."""
    socks, err = [], None
    for _ in range(n):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
            if ctx:
                s = ctx.wrap_socket(s, server_hostname="localhost")
                if s.selected_alpn_protocol() != "h2":
                    err = err or f"ALPN {s.selected_alpn_protocol()!r}, not h2"
            socks.append(s)
            if not h2_exchange(s, request):
                err = err or "closed before its SETTINGS"
            s.setblocking(False)
        except OSError as e:
            err = err or str(e)
    return socks, err


def count_alive(socks):
    alive = 0
    for s in socks:
        try:
            if s.recv(65536):
                alive += 1
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            alive += 1
        except (OSError, ValueError):
            pass
    return alive


def openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, capture_output=True, timeout=60)


def make_certs(tmp):
    """CA + server certificate (EC P-256, SAN localhost / 127.0.0.1), as compare.sh."""
    d = os.path.join(tmp, "pki")
    os.makedirs(d)
    p = {k: os.path.join(d, k) for k in ("ca.key", "ca.crt", "s.key", "s.csr", "s.crt", "ext")}
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", p["ca.key"], "-out", p["ca.crt"], "-days", "2",
            "-subj", "/CN=idle-tls-ca", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    with open(p["ext"], "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
    openssl("req", "-new", *ec, "-keyout", p["s.key"], "-out", p["s.csr"], "-subj", "/CN=localhost")
    openssl("x509", "-req", "-in", p["s.csr"], "-CA", p["ca.crt"], "-CAkey", p["ca.key"],
            "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", "2", "-sha256",
            "-out", p["s.crt"], "-extfile", p["ext"])
    return {"cert": p["s.crt"], "key": p["s.key"], "ca": p["ca.crt"]}


def render(tmp, template, ports, insert=None):
    """bench/peers/<template> with its {NAME}s filled in (insert: (line, template) puts the
    other template before that line, as compare.sh does with remora-tls.yaml)."""
    with open(os.path.join(ROOT, "bench/peers", template)) as f:
        text = f.read()
    if insert:
        line, other = insert
        with open(os.path.join(ROOT, "bench/peers", other)) as f:
            add = "".join(x for x in f.readlines() if not x.startswith("#"))
        text = text.replace(line, add + line)
    for k, v in ports.items():
        text = text.replace("{" + k + "}", str(v))
    path = os.path.join(tmp, template)
    with open(path, "w") as f:
        f.write(text)
    return path


def spec(name, tmp, certs, build):
    """(argv, h2c port, TLS port, ports to wait for, upstream port)."""
    ports = {"UPSTREAM": free_port(), "TMP": tmp, "H2H2": free_port(), "H1H1": free_port(),
             "H1H2": free_port(), "ADMIN": free_port(), "TLS": free_port(),
             "TLS_CERT": certs["cert"], "TLS_KEY": certs["key"], "TLS_PEM": ""}
    if name == "remora":
        cfg = render(tmp, "remora.yaml", ports, ("  clusters:\n", "remora-tls.yaml"))
        argv = [os.path.join(build, "remora"), "-c", cfg, "--concurrency", "1", "-l", "warning"]
        return argv, ports["H2H2"], ports["TLS"], [ports["H2H2"], ports["TLS"], ports["ADMIN"]], \
            ports["UPSTREAM"]
    for d in ("nginx-body", "nginx-proxy", "nginx-fastcgi", "nginx-uwsgi", "nginx-scgi"):
        os.makedirs(os.path.join(tmp, d), exist_ok=True)
    cfg = render(tmp, "nginx.conf", ports)
    argv = ["nginx", "-c", cfg, "-p", tmp, "-e", os.path.join(tmp, "nginx-error.log")]
    return argv, ports["H2H2"], ports["TLS"], [ports["H2H2"], ports["TLS"]], ports["UPSTREAM"]


def one_run(name, a, tmp, certs, ctx):
    argv, h2c_port, tls_port, wait, _ = spec(name, tmp, certs, a.build)
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=0")
    wrap = shlex.split(a.wrap) if a.wrap and name == "remora" else []
    if name == "remora":
        for kv in a.env:
            k, _, v = kv.partition("=")
            env[k] = v
    log = open(os.path.join(tmp, f"{name}.log"), "wb")
    p = subprocess.Popen(wrap + argv, stdout=log, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    res = {"proxy": name}
    socks, tsocks = [], []
    try:
        for port in wait:
            if not wait_port(port, p, 120 if wrap else 15):
                res["error"] = f"{name} did not start (see {tmp}/{name}.log)"
                return res
        time.sleep(a.settle * (10 if wrap else 1))
        pid = p.pid
        res["idle"] = rss_kib(pid)
        base = res["idle"]
        if a.heap and name == "remora":
            res["idle_heap"] = heap_in_use(pid, log.name)
        if not a.no_h2c:
            socks, err = hold(h2c_port, a.n, None, 5.0 * (20 if wrap else 1))
            time.sleep(a.settle)
            alive = count_alive(socks)
            res["h2c_held"] = rss_kib(pid)
            res["h2c_alive"] = alive
            res["h2c_per_conn"] = (res["h2c_held"] - base) / max(alive, 1)
            if a.heap and name == "remora":
                res["h2c_heap"] = heap_in_use(pid, log.name)
            if err:
                res["h2c_error"] = err
            base = res["h2c_held"]
        tsocks, err = hold(tls_port, a.n, ctx, 5.0 * (20 if wrap else 1), a.request)
        time.sleep(a.settle)
        alive = count_alive(tsocks)
        res["tls_held"] = rss_kib(pid)
        res["tls_alive"] = alive
        res["tls_per_conn"] = (res["tls_held"] - base) / max(alive, 1)
        if a.heap and name == "remora":
            res["tls_heap"] = heap_in_use(pid, log.name)
            before = res.get("h2c_heap") if not a.no_h2c else res.get("idle_heap")
            if res["tls_heap"] is not None and before is not None:
                res["tls_heap_per_conn"] = (res["tls_heap"] - before) / 1024 / max(alive, 1)
        if err:
            res["tls_error"] = err
        if a.hold:
            print(f"{name} pid {pid}: holding {alive} TLS connections for {a.hold} s",
                  file=sys.stderr)
            time.sleep(a.hold)
        return res
    finally:
        for s in socks + tsocks:
            s.close()
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=60 if wrap else 10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        log.close()
        with open(log.name, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        m = re.search(r"ERROR: AddressSanitizer|runtime error:", text)
        if m:
            res["error"] = f"sanitizer report from {name}:\n{text[m.start():][:3000]}"


def cpu_ns(pid):
    """CPU time of every thread of pid, in ns (schedstat)."""
    total = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{t}/schedstat") as f:
            total += int(f.read().split()[0])
    return total


def minflt(pid):
    """Minor page faults of pid so far (/proc/PID/stat field 10)."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])


def handshakes(a, tmp, certs, seconds):
    """Full TLS handshakes against remora as bench/compare.sh measures them: remora-upstream
    and remora-load --new-conn -c 32 (ALPN h2, one request per connection) on CPU 0, remora on
    CPU 1.  Returns (handshakes/s, remora's CPU us and minor page faults per handshake)."""
    argv, h2c_port, tls_port, wait, up_port = spec("remora", tmp, certs, a.build)
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")
    up = subprocess.Popen(["taskset", "-c", "0", os.path.join(a.build, "remora-upstream"),
                           "--listen", f"127.0.0.1:{up_port}", "--body-size", "1024", "--quiet"],
                          stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    px = subprocess.Popen(["taskset", "-c", "1"] + argv, stdin=subprocess.DEVNULL, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True)
    try:
        for port in wait + [up_port]:
            if not wait_port(port, px, 15):
                raise OSError("remora did not start")
        load = ["taskset", "-c", "0", os.path.join(a.build, "remora-load"), "--json",
                "--no-progress", "--new-conn", "-c", "32"]
        url = (f"http://127.0.0.1:{h2c_port}/up-h1/" if a.plain
               else f"https://127.0.0.1:{tls_port}/up-h1/")
        subprocess.run(load + ["-d", "500ms", url], capture_output=True, timeout=60)
        c0, f0 = cpu_ns(px.pid), minflt(px.pid)
        r = subprocess.run(load + ["-d", f"{int(seconds * 1000)}ms", url], capture_output=True,
                           timeout=seconds + 60)
        c1, f1 = cpu_ns(px.pid), minflt(px.pid)
        rep = json.loads(r.stdout)
        ok = max(rep["requests"]["succeeded"], 1)
        return ok / rep["duration_s"], (c1 - c0) / 1000.0 / ok, (f1 - f0) / ok
    finally:
        for p in (px, up):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def run_all(a, names, tmp, runs):
    """Every run of main() (appended to <runs>; a failed one gets "ok": False)."""
    certs = make_certs(tmp)
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=certs["ca"])
    ctx.set_alpn_protocols(["h2"])
    if a.handshakes:
        v = []
        for r in range(a.runs):
            hps, us, flt = handshakes(a, tmp, certs, a.handshakes)
            v.append(us)
            what = "connection" if a.plain else "handshake"
            print(f"run {r + 1} remora: {hps:,.0f} {what}s/s, {us:.1f} CPU us/{what}, "
                  f"{flt:.2f} minor page faults/{what}")
        v.sort()
        what = "new h2c connection" if a.plain else "full TLS handshake (h2)"
        print(f"remora: CPU us per {what}: median {v[len(v) // 2]:.1f} "
              f"(min {v[0]:.1f}, max {v[-1]:.1f}, {len(v)} runs)")
        a.runs = 0
    for r in range(a.runs):
        for name in (names if r % 2 == 0 else names[::-1]):
            res = one_run(name, a, tmp, certs, ctx)
            runs.append(res)
            if "error" in res or res.get("tls_alive", 0) < 0.95 * a.n or \
                    (not a.no_h2c and res.get("h2c_alive", 0) < 0.95 * a.n):
                res["ok"] = False
            h2c = (f"h2c {res['h2c_per_conn']:.1f} KiB/conn ({res['h2c_alive']} open), "
                   if "h2c_per_conn" in res else "")
            tls = (f"TLS {res['tls_per_conn']:.1f} KiB/conn ({res['tls_alive']} open)"
                   if "tls_per_conn" in res else res.get("error", "?"))
            if "tls_heap_per_conn" in res:
                tls += f", heap in use {res['tls_heap_per_conn']:.1f} KiB/conn"
            extra = "".join(f" [{k}: {res[k]}]" for k in ("h2c_error", "tls_error", "error") if k in res)
            print(f"run {r + 1} {name:6s}: idle {res.get('idle')} KiB, {h2c}{tls}{extra}")
    for name in names:
        v = sorted(x["tls_per_conn"] for x in runs if x["proxy"] == name and "tls_per_conn" in x)
        if v:
            print(f"{name}: KiB per idle TLS (h2) connection, n={a.n}: median {v[len(v) // 2]:.1f}"
                  f" (min {v[0]:.1f}, max {v[-1]:.1f}, {len(v)} runs)")
    if a.json:
        print(json.dumps(runs, indent=1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n", 1)[1])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"),
                    help="directory with remora (default: build/)")
    ap.add_argument("-n", type=int, default=1000, help="idle connections (default 1000)")
    ap.add_argument("--runs", type=int, default=3, help="fresh processes per proxy (default 3)")
    ap.add_argument("--nginx", action="store_true", help="measure nginx too (interleaved)")
    ap.add_argument("--no-remora", action="store_true", help="nginx only")
    ap.add_argument("--no-h2c", action="store_true", help="skip the h2c connections")
    ap.add_argument("--request", action="store_true",
                    help="each TLS connection sends one GET / (answered 503: no upstream runs) "
                    "before it goes idle")
    ap.add_argument("--env", action="append", default=[], metavar="K=V",
                    help="environment for remora (e.g. MALLOC_ARENA_MAX=1); repeatable")
    ap.add_argument("--wrap", help="command line to run remora under (valgrind, heaptrack)")
    ap.add_argument("--hold", type=float, default=0, help="seconds to hold the connections")
    ap.add_argument("--settle", type=float, default=1.0,
                    help="seconds between opening connections and reading RSS (default 1)")
    ap.add_argument("--heap", action="store_true",
                    help="remora: also malloc's bytes in use per TLS connection (gdb attaches "
                    "and calls malloc_stats(); compare with RSS for fragmentation)")
    ap.add_argument("--handshakes", type=float, default=0, metavar="S",
                    help="instead: S seconds of full TLS handshakes per run (remora-load "
                    "--new-conn -c 32, as compare.sh), remora's CPU us per handshake")
    ap.add_argument("--plain", action="store_true",
                    help="with --handshakes: new h2c connections instead (no TLS)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    ap.add_argument("--json", action="store_true", help="print the runs as JSON on stdout")
    a = ap.parse_args()
    a.build = os.path.abspath(a.build)
    import resource
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    want = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    names = ([] if a.no_remora else ["remora"]) + (["nginx"] if a.nginx or a.no_remora else [])
    tmp = tempfile.mkdtemp(prefix="remora-idle-tls-")
    runs = []
    try:   # the temp dir goes even when stdout closes early (| head) or a run fails
        run_all(a, names, tmp, runs)
    finally:
        if a.keep:
            print(f"temp dir: {tmp}", file=sys.stderr)
        else:
            subprocess.run(["rm", "-rf", tmp])
    return 0 if all(x.get("ok", True) for x in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
