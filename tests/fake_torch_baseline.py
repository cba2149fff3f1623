#!/usr/bin/env python3
"""A stand-in for scripts/torch_baseline.py in tests/test_bench.c: no torch,
no GPU. compare --bench --baseline torch runs it when
MICROGPT_TORCH_BASELINE names it. It takes the real script's command line
and writes a result of the same form, with the timings the test chose:

  FAKE_TORCH_LOSSES  a JSON file: the list of losses every row reports (the
                     test takes them from a bench trace of the cpu engine, so
                     the rows pass the bench's check)
  FAKE_TORCH_MS      ms/step of each row, e.g. "graph=2,compile=1,eager=5"
  FAKE_TORCH_COMPILE_S  the compile row's compile time in seconds (23.4)
  FAKE_TORCH_FAIL    "compile": that row failed to compile (a note, no timings)
  FAKE_TORCH_WRONG   a row (graph, compile, eager) whose losses are 1% off

The row order, the keys and the exit codes are the real script's.
"""
import argparse
import json
import os
import struct
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--compile-mode", choices=("default", "max-autotune", "off"), default="default")
    a = ap.parse_args()
    with open(a.work, "rb") as f:   # the work file compare wrote: its settings say how many steps
        (hl,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(hl))
    steps = json.loads(header["__metadata__"]["settings"])["steps"]
    with open(os.environ["FAKE_TORCH_LOSSES"]) as f:
        losses = json.load(f)
    if len(losses) != steps:
        sys.exit(f"fake_torch_baseline: {len(losses)} losses for {steps} steps")
    ms = dict(kv.split("=") for kv in os.environ.get("FAKE_TORCH_MS", "graph=2,compile=1,eager=5").split(","))
    names = ["graph"] + (["compile"] if a.compile_mode != "off" else []) + ["eager"]
    rows = []
    for name in names:
        row = {"engine": "torch-" + name, "warmup": a.warmup, "timed_steps": steps - a.warmup,
               "ms_per_step": [float(ms[name]) * (1 + 0.01 * i) for i in range(a.repeats)],
               "losses": [x * 1.01 for x in losses] if os.environ.get("FAKE_TORCH_WRONG") == name else losses,
               "peak_device_bytes": 1 << 20, "peak_host_bytes": 1 << 21}
        if name == "compile":
            row["compile_mode"] = a.compile_mode
            row["compile_s"] = float(os.environ.get("FAKE_TORCH_COMPILE_S", "23.4"))
            if os.environ.get("FAKE_TORCH_FAIL") == "compile":
                row.update(ms_per_step=[], losses=[], note="torch.compile failed after 1.5 s: Unsupported: fake")
                del row["compile_s"]
        rows.append(row)
    with open(a.out, "w") as f:
        json.dump({"status": "ok", "device": "Fake GPU", "torch": "0.fake", "rows": rows}, f)


if __name__ == "__main__":
    main()
