#!/usr/bin/env python3
"""The relative loss difference of every bench row from its size's first row
at the first steps, from compare --bench --trace files: the measurements
behind the bench's step-1 and step-2 bounds (compare/bench.c loss_rtol,
docs/BENCHMARKS.md).

    bench_early_steps.py TRACE.json [TRACE.json ...] [--steps K]

Prints one line per row: size, engine, precision, the differences at steps
1..K, and at the end the largest at each step per precision pair.
"""
import argparse
import json
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("traces", nargs="+", help="compare --bench --trace files")
    ap.add_argument("--steps", type=int, default=2, help="steps to show (2)")
    a = ap.parse_args()
    worst = {}
    for path in a.traces:
        try:
            with open(path) as f:
                t = json.load(f)
            rows = t["bench"]
        except (OSError, ValueError, KeyError) as e:
            sys.exit(f"bench_early_steps: {path}: not a compare --bench trace ({e})")
        first = {}
        for r in rows:
            if r.get("status") != "ok" or not r.get("losses"):
                continue
            z = r["size"]
            if z not in first:
                first[z] = r
                continue
            ref = first[z]
            d = [abs(x - y) / abs(y) for x, y in zip(r["losses"][: a.steps], ref["losses"][: a.steps])]
            print(f"{path}: {z} {r['engine']} {r['precision']} vs {ref['engine']} {ref['precision']}: "
                  + " ".join(f"{x:.2e}" for x in d))
            key = (r["precision"], ref["precision"])
            w = worst.setdefault(key, [0.0] * a.steps)
            for i, x in enumerate(d):
                w[i] = max(w[i], x)
    for (p, q), w in sorted(worst.items()):
        print(f"largest, {p} against {q}: " + " ".join(f"step {i + 1} {x:.2e}" for i, x in enumerate(w)))


if __name__ == "__main__":
    main()
