#!/usr/bin/python3
"""Self cost per request of each function in two callgrind dumps (bench/profile.sh --keep), and
the difference, largest first:  callgrind_diff.py OLD_DUMP NEW_DUMP N [TOP]"""
import re
import sys


def self_costs(path):
    names, cost, fn, pending = {}, {}, None, False
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            if line[0].isdigit() or line[0] in "+-*":
                parts = line.split()
                if len(parts) >= 2:
                    if pending:
                        pending = False
                    else:
                        cost[fn] = cost.get(fn, 0) + int(parts[1])
                continue
            key, _, val = line.partition("=")
            if key in ("fn", "cfn"):
                m = re.match(r"\((\d+)\)(?: (.*))?", val)
                name = val
                if m:
                    if m.group(2) is not None:
                        names[m.group(1)] = m.group(2)
                    name = names.get(m.group(1), val)
                if key == "fn":
                    fn = name
            elif key == "calls":
                pending = True
    return cost


def main():
    a, b = self_costs(sys.argv[1]), self_costs(sys.argv[2])
    n = int(sys.argv[3])
    top = int(sys.argv[4]) if len(sys.argv) > 4 else 30
    ta, tb = sum(a.values()) / n, sum(b.values()) / n
    print(f"total Ir/request: {ta:,.0f} -> {tb:,.0f} ({tb - ta:+,.0f})")
    keys = set(a) | set(b)
    rows = sorted(keys, key=lambda k: -abs(b.get(k, 0) - a.get(k, 0)))[:top]
    for k in rows:
        va, vb = a.get(k, 0) / n, b.get(k, 0) / n
        print(f"  {va:8,.0f} {vb:8,.0f} {vb - va:+8,.0f}  {k}")


main()
