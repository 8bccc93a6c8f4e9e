#!/usr/bin/python3
"""Per-request figures from a callgrind dump (bench/profile.sh).

    callgrind_per_req.py DUMP N [TOP]

Prints Ir / N, the malloc-family and free calls per request, the TOP functions by self cost and
by inclusive cost (per request), and the calls per request of every function called at least
once per request from outside its own object (library API calls: nghttp2_*, llhttp_*,
syscalls wrappers).  Functions without a symbol (static functions of stripped libraries) are
shown as object:address."""
import re
import sys


def main():
    path, n = sys.argv[1], int(sys.argv[2])
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 25
    names, objs = {}, {}

    def intern(table, tok):
        m = re.match(r"\((\d+)\)(?: (.*))?", tok)
        if not m:
            return tok
        if m.group(2) is not None:
            table[m.group(1)] = m.group(2)
        return table.get(m.group(1), tok)

    total = 0
    self_cost, incl, calls, fobj = {}, {}, {}, {}
    fn = cfn = ob = cob = None
    pending_call = None
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                parts = line.split()
                if len(parts) < 2:
                    continue
                v = int(parts[1])
                if pending_call is not None:
                    incl[fn] = incl.get(fn, 0) + v if pending_call != fn else incl.get(fn, 0)
                    pending_call = None
                else:
                    self_cost[fn] = self_cost.get(fn, 0) + v
                    incl[fn] = incl.get(fn, 0) + v
                    total += v
                continue
            key, _, val = line.partition("=")
            if key == "ob":
                ob = intern(objs, val)
            elif key == "cob":
                cob = intern(objs, val)
            elif key == "fn":
                fn = label(intern(names, val), ob)
                fobj[fn] = ob
                cob = ob
            elif key == "cfn":
                cfn = label(intern(names, val), cob)
                fobj.setdefault(cfn, cob)
            elif key == "calls":
                k = int(val.split()[0])
                calls.setdefault(cfn, {})
                calls[cfn][fn] = calls[cfn].get(fn, 0) + k
                pending_call = cfn
            elif key in ("fl", "fi", "fe", "cfi", "cfl"):
                pass

    def ncalls(f):
        return sum(calls.get(f, {}).values())

    alloc = sum(ncalls(f) for f in ("malloc", "calloc", "realloc"))
    print(f"Ir/request: {total / n:,.0f}   malloc+calloc+realloc/request: {alloc / n:.3f}   "
          f"free/request: {ncalls('free') / n:.3f}")
    print("  self Ir/req:")
    for f, v in sorted(self_cost.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {v / n:8,.0f}  {100.0 * v / total:5.1f}%  {f}")
    print("  inclusive Ir/req (remora's own functions):")
    own = [(f, v) for f, v in incl.items() if fobj.get(f, "").endswith("remora")]
    for f, v in sorted(own, key=lambda kv: -kv[1])[:top]:
        print(f"  {v / n:8,.0f}  {100.0 * v / total:5.1f}%  {f}")
    print("  library calls/req from remora (>= 0.5/req):")
    for f, by in sorted(calls.items(), key=lambda kv: -sum(kv[1].values())):
        k = sum(v for caller, v in by.items() if fobj.get(caller, "").endswith("remora"))
        if k / n >= 0.5 and not fobj.get(f, "").endswith("remora"):
            print(f"  {k / n:6.2f}  {f}")


def label(name, ob):
    if name.startswith("0x") and ob:
        return ob.rsplit("/", 1)[-1] + ":" + name
    return name


main()
