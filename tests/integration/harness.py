"""Integration-test harness: real processes on loopback, bounded waits, cleanup by PID.

A test module is tests/integration/test_*.py; every function named test_* in it is a test and
receives a `Ctx`.  A test fails by raising (assert).  Processes started through ctx.spawn() are
killed (by PID, never by name) when the test ends, pass or fail.

    def test_something(ctx):
        up = ctx.upstream()                      # build/remora-upstream on a free port
        px = ctx.remora(yaml_text)               # build/remora with that bootstrap
        r = ctx.curl(f"http://127.0.0.1:{px.port}/x")
        assert r.status == 200, r
"""
import os
import signal
import socket
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class TestFailure(AssertionError):
    pass


def free_port():
    """A TCP port free on 127.0.0.1 right now (bound then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0, host="127.0.0.1", proc=None):
    """Wait until something accepts on host:port; raise after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise TestFailure(f"process {proc.args} exited with {proc.returncode} before "
                              f"listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise TestFailure(f"nothing listening on {host}:{port} after {timeout}s")


class Proc:
    """A started process: .p (Popen), .port (main port if any), .log (path of its output)."""

    def __init__(self, popen, log, port=None, extra=None):
        self.p = popen
        self.log = log
        self.port = port
        self.extra = extra or {}

    def output(self):
        with open(self.log, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def alive(self):
        return self.p.poll() is None


class Response:
    def __init__(self, status, headers, body, rc, stderr):
        self.status = status
        self.headers = headers      # dict: lower-case name -> last value
        self.body = body            # bytes
        self.rc = rc
        self.stderr = stderr

    def __repr__(self):
        return (f"Response(status={self.status}, rc={self.rc}, headers={self.headers}, "
                f"body={self.body[:200]!r}, stderr={self.stderr[-300:]!r})")


class Ctx:
    def __init__(self, build, name):
        self.build = os.path.abspath(build)
        self.name = name
        self.tmp = tempfile.mkdtemp(prefix="remora-it-")
        self.procs = []

    # -- processes ---------------------------------------------------------------------------
    def spawn(self, args, name, env=None, stdin=None):
        log = os.path.join(self.tmp, f"{name}.{len(self.procs)}.log")
        f = open(log, "wb")
        e = dict(os.environ)
        e.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:quarantine_size_mb=4")
        e.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        if env:
            e.update(env)
        p = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, env=e,
                             stdin=stdin if stdin is not None else subprocess.DEVNULL,
                             start_new_session=True)
        f.close()
        proc = Proc(p, log)
        self.procs.append(proc)
        return proc

    def bin(self, name):
        return os.path.join(self.build, name)

    def upstream(self, *extra_args, name="up", port=None, h2=False):
        """Start build/remora-upstream on a free loopback port; returns Proc with .port."""
        port = port or free_port()
        args = [self.bin("remora-upstream"), "--listen", f"127.0.0.1:{port}", "--name", name]
        args += list(extra_args)
        pr = self.spawn(args, f"upstream-{name}")
        pr.port = port
        wait_port(port, proc=pr.p)
        return pr

    def remora(self, yaml_text, *extra_args, ports=None, wait=True, name="remora"):
        """Start build/remora with `yaml_text` as bootstrap.  `yaml_text` may contain
        {port0}, {port1}, … and {admin} placeholders (plain text replacement, so other braces
        are left alone), filled with free ports; the Proc gets
        .port (= port0), .admin and .ports."""
        ports = ports if ports is not None else [free_port() for _ in range(4)]
        admin = free_port()
        text = yaml_text.replace("{admin}", str(admin))
        for i, p in enumerate(ports):
            text = text.replace("{port%d}" % i, str(p))
        path = os.path.join(self.tmp, f"{name}.yaml")
        with open(path, "w") as f:
            f.write(text)
        args = [self.bin("remora"), "-c", path, "--concurrency", "1"] + list(extra_args)
        pr = self.spawn(args, name)
        pr.port, pr.admin, pr.ports, pr.config = ports[0], admin, ports, path
        if wait:
            wait_port(admin, proc=pr.p)
            wait_port(ports[0], proc=pr.p)
        return pr

    def run(self, args, timeout=60, input=None, check=False):
        """Run a command to completion (bounded); returns CompletedProcess with text output."""
        r = subprocess.run(args, capture_output=True, timeout=timeout, input=input)
        if check and r.returncode != 0:
            raise TestFailure(f"{args} exited {r.returncode}: {r.stderr.decode()[-2000:]}")
        return r

    def curl(self, url, *args, timeout=20, data=None, headers=None, method=None, http2=False):
        """curl with -i; returns Response (status 0 when curl failed)."""
        cmd = ["curl", "-sS", "-i", "--max-time", str(timeout)]
        if http2:
            cmd.append("--http2-prior-knowledge")
        if method:
            cmd += ["-X", method]
        for k, v in (headers or {}).items():
            cmd += ["-H", f"{k}: {v}"]
        if data is not None:
            cmd += ["--data-binary", "@-"]
        cmd += list(args) + [url]
        r = subprocess.run(cmd, capture_output=True, timeout=timeout + 5,
                           input=data if isinstance(data, (bytes, type(None))) else data.encode())
        return parse_curl_i(r.stdout, r.returncode, r.stderr.decode("utf-8", "replace"))

    # -- teardown ----------------------------------------------------------------------------
    def stop(self, proc, sig=signal.SIGTERM, timeout=10):
        """Signal one process and wait for it; returns its exit code (kills after timeout)."""
        if proc.p.poll() is None:
            proc.p.send_signal(sig)
            try:
                proc.p.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.p.kill()
                proc.p.wait(5)
                raise TestFailure(f"{proc.p.args[0]} did not exit within {timeout}s of {sig}")
        return proc.p.returncode

    def cleanup(self):
        for pr in self.procs:
            if pr.p.poll() is None:
                try:
                    os.killpg(pr.p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                try:
                    pr.p.wait(5)
                except subprocess.TimeoutExpired:
                    pass

    def sanitizer_reports(self):
        """Logs of processes that printed an ASan/UBSan/LSan report."""
        bad = []
        for pr in self.procs:
            out = pr.output()
            if "ERROR: AddressSanitizer" in out or "runtime error:" in out or \
               "ERROR: LeakSanitizer" in out:
                bad.append((pr.p.args[0], out[-4000:]))
        return bad


def admin_stats(ctx, px):
    """Every numeric stat of remora <px>'s /stats as a dict name -> int."""
    r = ctx.curl(f"http://127.0.0.1:{px.admin}/stats")
    if r.status != 200:
        raise TestFailure(f"/stats: {r.status}")
    out = {}
    for line in r.body.decode().splitlines():
        k, _, v = line.partition(": ")
        if v.lstrip("-").isdigit():
            out[k] = int(v)
    return out


def parse_curl_i(raw, rc, stderr):
    """Split curl -i output into the last response's status, headers and body."""
    status, headers, body = 0, {}, raw
    rest = raw
    while rest.startswith(b"HTTP/"):
        sep = rest.find(b"\r\n\r\n")
        if sep < 0:
            break
        head, rest = rest[:sep].decode("latin-1"), rest[sep + 4:]
        lines = head.split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for ln in lines[1:]:
            if ":" in ln:
                k, v = ln.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        body = rest
        if status >= 200 or status == 101:
            break
    return Response(status, headers, body, rc, stderr)
