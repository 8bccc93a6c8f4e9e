#!/usr/bin/python3
"""Integration test runner: runs tests/integration/test_*.py, prints 'N passed, N failed'.

    /usr/bin/python3 tests/integration/run.py --build build/san [-k SUBSTRING] [-v]

Each test gets a fresh Ctx (temp dir, process list) and a time bound; processes are killed by
PID afterwards, and a sanitizer report in any process log fails the test.
"""
import argparse
import importlib.util
import os
import signal
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

TEST_TIMEOUT = 180


class Timeout(Exception):
    pass


def on_alarm(signum, frame):
    raise Timeout(f"test exceeded {TEST_TIMEOUT}s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("-k", default="", help="run only tests whose name contains this")
    ap.add_argument("-v", action="store_true", help="print process logs of failed tests")
    a = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    mods = sorted(f for f in os.listdir(here) if f.startswith("test_") and f.endswith(".py"))
    passed, failed, names = 0, 0, []
    signal.signal(signal.SIGALRM, on_alarm)
    for m in mods:
        spec = importlib.util.spec_from_file_location(m[:-3], os.path.join(here, m))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        for name in sorted(n for n in dir(mod) if n.startswith("test_")):
            full = f"{m[:-3]}.{name}"
            if a.k and a.k not in full:
                continue
            ctx = harness.Ctx(a.build, full)
            t0 = time.monotonic()
            err = None
            signal.alarm(getattr(getattr(mod, name), "timeout", TEST_TIMEOUT))
            try:
                getattr(mod, name)(ctx)
            except BaseException as e:  # noqa: BLE001 - report every failure
                if isinstance(e, KeyboardInterrupt):
                    raise
                err = traceback.format_exc()
            finally:
                signal.alarm(0)
                ctx.cleanup()
            if err is None:
                bad = ctx.sanitizer_reports()
                if bad:
                    err = "sanitizer report:\n" + "\n".join(f"{p}:\n{o}" for p, o in bad)
            dt = time.monotonic() - t0
            if err is None:
                passed += 1
                print(f"PASS {full} ({dt:.1f}s)", flush=True)
            else:
                failed += 1
                names.append(full)
                print(f"FAIL {full} ({dt:.1f}s)\n{err}", flush=True)
                for pr in ctx.procs:
                    out = pr.output()
                    print(f"--- {os.path.basename(pr.p.args[0])} log (last 3000 chars) ---\n"
                          f"{out[-3000:]}", flush=True)
    if names:
        print("failed: " + " ".join(names))
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
