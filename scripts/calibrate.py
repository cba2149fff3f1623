#!/usr/bin/env python3
"""The calibration of compare's rules (docs/compare.md, "How the constants
were measured"). Every constant of a verdict lives in one table
(compare/tolerance.c, printed by `build/compare --rules`); this script
measures the statistics those constants bound, on a family of correct
implementations that legitimately differ from the reference, derives each
constant from the measurement by a fixed procedure, and checks the table.

  calibrate.py measure [--family cpu|gpu|against] [--precisions LIST] [--seeds N]
                       [--steps N] [--shapes LIST] [--impls LIST] [--jobs N]
                       [--raw DIR] [--python PY] [--deadline SECONDS]
      run `build/compare` lockstep for every implementation x shape x seed
      (--keep-going: a provisional constant never stops a run) and keep each
      run's per-step errors in DIR (build/calibration/raw, or raw-gpu);
      --family against: record runs of independent implementations in fp64
      and fp32 (examples/record_trace.py: numpy, and torch on the CPU where
      --python has it) and check each with `compare --against` against every
      CPU engine order (and the scalar oracle at the small shapes): the
      statistics --against's bounds limit, and fp32's loss band (raw-against)
  calibrate.py reduce [--family cpu|gpu|against] [--raw DIR] [--out FILE]
      the raw runs -> the summary the constants are derived from
      (docs/calibration/measured-cpu.json or measured-gpu.json): per
      precision, quantity and implementation the tail of each statistic
  calibrate.py derive [--summary FILE...] [--check | --write]
      the distributions, the constants the procedure gives, the estimated
      false-alarm rate per implementation, and the table beside them;
      --check: exit 1 if a constant of the table differs from its derivation;
      --write: put the derived constants into compare/tolerance.c's table
      (then rebuild)
  calibrate.py check [--quick-steps N]
      CI: derive --check on the committed summaries, then a short fresh
      measurement on the CPU must reproduce the summary's fingerprint (the
      CPU engines are deterministic to the bit) and raise no false alarm
  calibrate.py plot [--summary FILE...] [--out DIR]
      SVG plots of the distributions against the chosen constants

The procedure (the same code derives and checks):
  * e(x) = max|x - expected| / rms(expected), per tensor and step; the
    noise reference's e_noise is the largest of its members'. The statistic
    a bound limits is each step's largest over the quantity's tensors: e
    (fp64), (e - floor) / e_noise (the ratio rule), e_noise (ref_cap), e (cap).
  * Its tail is fitted per implementation and shape (where a shape has
    MIN_GROUP comparisons) and per implementation over all its shapes: an
    exponential above the 99th percentile (the generalized Pareto tail of
    shape 0: rounding errors are bounded, so their maxima have a light tail,
    and the exponential is the heaviest of those) gives p_step(x); a run of
    1000 steps false-alarms with 1 - (1 - p_step)^1000. The budget is 1e-3
    per run for all of a precision's bounds together (the union bound: each
    bound gets 1e-3 / their number).
  * fp64 (fixed rule): scaled_q = the smallest value of the 1-2-5 grid within
    its share of the budget for every group.
  * --against's bounds (family "against", summarised as the precisions
    "against" and "against-fp32"): the same fixed rule, e of a record's
    logits, gradients and parameters on its own trajectory against the
    reference engine's own (fp32: from step 2 on); each comparison counts as
    a step (a record with tensors at every one of 1000 steps). fp32's loss
    statistic, each step's |a-b|, gives fp32's drift_tol (free mode's band).
  * fp32 and the mixed precisions (ratio rule e <= min(k e_noise + floor, cap)):
    floor_q = the median of e_noise over every comparison of the CPU family,
    up to the 1-2-5 grid; k_q = the smallest value of the fine grid (at least
    2) within its share for every group; cap_q (mixed) and ref_cap_q on the
    1-2-5 grid likewise for e and e_noise.
  * The noise reference's members are CPU engines run on the reference's
    state whatever the candidate is: a GPU summary keeps the ratio's tail for
    each floor of the grid within a decade of its median noise, and derive
    takes the CPU family's floor.
"""
import argparse
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUANTITIES = ["loss", "logits", "grads", "params", "m", "v", "probs", "acts", "dacts"]
RUN_STEPS = 1000          # the run length the false-alarm rate is stated for
# Every flipped ReLU gate is matched while measuring (so that each step's
# errors are those of the arithmetic), and the largest flipped input is
# measured: the margin is derived from it like any other bound.
MEASURE_MARGIN = "1"
ALL_SHAPES = "all"   # an implementation's shapes pooled (its only tail where one shape has few comparisons)
# the unit roundoff of each precision's products (the least ReLU margin)
UNIT = {"fp64": 2.0 ** -53, "fp32": 2.0 ** -24, "tf32": 2.0 ** -11, "fp16": 2.0 ** -11, "bf16": 2.0 ** -8}
MIN_GROUP = 1000          # comparisons a shape needs for a tail of its own
BUDGET = 1e-3             # per run, all of a precision's checks together
TAIL_FRACTION = 0.01      # the GPD is fitted above the 99th percentile
MIN_TAIL = 50             # ... with at least this many exceedances
COARSE = [1, 2, 5]        # the 1-2-5 grid (scaled, floor, caps)
FINE = [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8]   # k

# The calibration shapes: batch > 1, 2 layers with GQA, a 64-position block
# (lines of 12 names, about 85 characters: every block full),
# width 128; widths 256 and 512 for fp64 (and fp32, shorter). Wide models
# train as the bench's e128 and e512 do (the original's init 0.08 and lr
# 0.01 make a width-512 model diverge: its loss climbs to ~300 and whole
# gradient tensors cancel to rounding noise).
WIDE = " --init-std 0.02 --lr 0.001"
LONG = "build/calibration/long.txt"
SHAPES = {
    "b4": "--batch 4",
    "l2gqa-b8": "--n-layer 2 --n-kv-head 2 --batch 8",
    "blk64": "--data %s --block-size 64 --n-embd 32 --n-head 4 --batch 2" % LONG,
    "w128": "--n-embd 128 --n-head 4 --batch 2" + WIDE,
    "w256": "--n-embd 256 --n-head 4 --batch 2" + WIDE,
    "w512": "--n-embd 512 --n-head 8 --batch 1" + WIDE,
}
# steps and seeds per shape: 10 x 1000 for the three main shapes; the wide
# ones are slow on the CPU (their fits extrapolate to 1000 steps)
SHAPE_STEPS = {"w128": 300, "w256": 200, "w512": 100}
SHAPE_SEEDS = {"w128": 3, "w256": 3, "w512": 2}
PRECISION_SHAPES = {
    "fp64": ["b4", "l2gqa-b8", "blk64", "w128", "w256", "w512"],
    "fp32": ["b4", "l2gqa-b8", "blk64", "w128", "w512"],
    "bf16": ["b4", "l2gqa-b8", "blk64"],
    "fp16": ["b4", "l2gqa-b8", "blk64"],
    "tf32": ["b4", "l2gqa-b8", "blk64"],
}
# relative cost of a step (to start the longest runs first)
SHAPE_COST = {"b4": 1, "l2gqa-b8": 3, "blk64": 4, "w128": 12, "w256": 40, "w512": 150}
# the scalar oracle is a family member (fp64) where it is fast enough
SCALAR_SHAPES = ("b4", "l2gqa-b8")
# The family: implementations that differ legitimately from the reference
# (none is a member of the noise reference, cpu:pairwise, cpu:acc4, cpu:fma).
CPU_IMPLS = {
    "fp64": ["scalar", "cpu:rev", "cpu:pairwise", "cpu:acc8", "cpu:fma", "numpy"],
    "fp32": ["cpu", "cpu:rev", "cpu:acc8", "numpy"],
    "bf16": ["cpu", "cpu:acc8"],
    "fp16": ["cpu", "cpu:acc8"],
    "tf32": ["cpu", "cpu:acc8"],
}
GPU_IMPLS = {
    "fp64": ["cuda:fused", "cuda:layered", "torch"],
    "fp32": ["cuda:fused", "cuda:layered", "torch", "triton"],
    "bf16": ["cuda:layered"],     # the Triton engine refuses bf16; the fused step the mixed recipes
    "fp16": ["cuda:layered"],
    "tf32": ["cuda:layered"],
}
# the fused one-kernel step keeps a model in shared memory (227 KB on an H100):
# block 64 and width 128 do not fit
FUSED_SHAPES = ("b4", "l2gqa-b8")
# The GPU family's shapes: its engines are fast, but each run's reference and
# noise reference are CPU engines (w256 and w512 only where the CPU engines
# are: the fp64 rule's widths, on the layered path's cuBLAS products)
GPU_SHAPES = {
    "fp64": ["b4", "l2gqa-b8", "blk64", "w128", "w512"],
    "fp32": ["b4", "l2gqa-b8", "blk64", "w128"],
    "bf16": ["b4", "l2gqa-b8", "blk64"],
    "fp16": ["b4", "l2gqa-b8", "blk64"],
    "tf32": ["b4", "l2gqa-b8", "blk64"],
}
# --against (family "against"): independent fp64 implementations record their
# own runs (examples/record_trace.py), each checked against every reference:
# the CPU engine in each order of its sums, and the oracle where it is fast
AGAINST_RECORDERS = ["numpy", "torch"]
AGAINST_REFS = ["cpu", "cpu:rev", "cpu:pairwise", "cpu:acc8", "cpu:fma", "scalar"]
# (the wide shapes, slow on the CPU: two orders)
AGAINST_WIDE_REFS = ["cpu", "cpu:pairwise"]
AGAINST_QUANTITIES = ["logits", "grads", "params"]
AGAINST_EVERY = 10          # a record's tensors every 10 steps (and at step 1)
AGAINST = "against"         # the summary's pseudo-precision (fp64 records)
AGAINST32 = "against-fp32"  # fp32 records, from step 2 on (step 1: lockstep's fixed fp32 table)
AGAINST_PREC = {"fp64": AGAINST, "fp32": AGAINST32}
FIXED_RULE = ("fp64", AGAINST, AGAINST32)   # the precisions judged by e alone (no noise reference)
# the run whose first steps CI measures again (calibrate.py check)
FINGERPRINT = {"fp32": ("cpu", "b4", 1), "bf16": ("cpu", "b4", 1)}


def die(msg):
    print("calibrate: " + msg, file=sys.stderr)
    sys.exit(2)


def engine_spec(impl, py):
    if impl == "numpy":
        return "exec:%s examples/numpy_engine.py" % py
    if impl == "torch":
        return "exec:%s examples/torch_engine.py --device cuda" % py
    if impl == "triton":
        return "exec:%s examples/triton_engine.py" % py
    return impl


def reference_for(impl):
    # the fp64 reference: the CPU engine held to fp64 (the scalar engine
    # gives the same expectations to ~1e-15 and is 10-100x slower at these
    # shapes); for fp64 candidates that are CPU engines, the scalar oracle
    return "cpu@fp64"


def grid_up(x, grid):
    """The smallest grid value (grid x 10^n) >= x."""
    if not x > 0 or math.isinf(x):
        return x
    e = math.floor(math.log10(x))
    for _ in range(3):
        for g in grid:
            v = float("%.6g" % (g * 10.0 ** e))
            if v >= x * (1 - 1e-12):
                return v
        e += 1
    return x


# ---------------------------------------------------------------------------
# measure


def run_key(prec, impl, shape, seed):
    return "%s__%s__%s__%d" % (prec, impl.replace(":", "-"), shape, seed)


def reduce_trace(path):
    """A lockstep trace -> {quantity: {"e": [[...]], "n": [[...]]}} per step
    (and per sample for probs): the tensors' e and e_noise in layout order."""
    with open(path) as f:
        t = json.load(f)
    out = {q: {"e": [], "n": []} for q in QUANTITIES}
    for s in t.get("steps", []):
        row = {q: ([], []) for q in QUANTITIES}
        for e in s.get("errors", []):
            q = e["quantity"]
            row[q][0].append(e.get("err_rms"))
            row[q][1].append(e.get("ref_err_rms"))
        for q in QUANTITIES:
            if row[q][0]:
                out[q]["e"].append(row[q][0])
                out[q]["n"].append(row[q][1])
    sc = t.get("sample_check") or {}
    for e in sc.get("errors", []):
        out["probs"]["e"].append([e.get("err_rms")])
        out["probs"]["n"].append([e.get("ref_err_rms")])
    # the ReLU margin's statistic: per step, the largest |input| of a gate
    # that flipped against the reference (0: none flipped)
    relu = [float(((s.get("gate_flips") or {}).get("largest_input")) or 0.0) for s in t.get("steps", [])]
    gf = t.get("gate_flips") or {}
    return {"quantities": {q: v for q, v in out.items() if v["e"]}, "relu": relu, "verdict": t.get("verdict"),
            "steps_run": t.get("steps_run"), "gate_flip_steps": gf.get("steps", 0),
            "first_failure": t.get("first_failure")}


def measure_one(args, prec, impl, shape, seed, steps, raw):
    out = os.path.join(raw, run_key(prec, impl, shape, seed) + ".json")
    if os.path.exists(out) and not args.force:
        return out, "kept"
    limit = None
    if getattr(args, "deadline_at", None):
        limit = args.deadline_at - time.time()
        if limit < 5:
            return None, "past the deadline"
    with tempfile.TemporaryDirectory() as tmp:
        trace = os.path.join(tmp, "t.json")
        cmd = [os.path.join(args.build, "compare"), "--engines", "%s,%s" % (reference_for(impl),
               engine_spec(impl, args.python)), "--precision", prec, "--steps", str(steps), "--seed", str(seed),
               "--keep-going", "--quiet", "--samples", "20", "--relu-margin", MEASURE_MARGIN, "--trace",
               trace] + SHAPES[shape].split()
        try:
            r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=limit)
        except subprocess.TimeoutExpired:
            return None, "past the deadline"
        if r.returncode not in (0, 1) or not os.path.exists(trace):
            return None, "failed (exit %d): %s\n%s" % (r.returncode, " ".join(cmd), (r.stderr or r.stdout)[-2000:])
        red = reduce_trace(trace)
    red.update(precision=prec, impl=impl, shape=shape, seed=seed, steps=steps)
    tmpout = out + ".tmp"
    with open(tmpout, "w") as f:
        json.dump(red, f, separators=(",", ":"))
    os.replace(tmpout, out)
    return out, red["verdict"]


def has_torch(py):
    r = subprocess.run([py, "-c", "import torch; assert int(torch.__version__.split('.')[0]) >= 2"],
                       capture_output=True)
    return r.returncode == 0


AGAINST_LINE = re.compile(r"^step +(\d+) \|.*\| diff ([0-9.e+-]+)(.*)\| (ok|FAIL)$")
AGAINST_Q = re.compile(r"\| (logits|grads|params) [0-9.e+-]+ \(([0-9.e+-]+) x RMS\)")


def parse_against(text, first_step):
    """compare --against's step lines -> ({quantity: [[e], ...]} from
    first_step on, [each step's |loss difference|, from the two printed
    losses (12 decimals)])."""
    qs, loss = {q: [] for q in AGAINST_QUANTITIES}, []
    for line in text.splitlines():
        m = AGAINST_LINE.match(line.strip())
        if not m:
            continue
        parts = line.strip().split(" | ")
        loss.append(abs(float(parts[1].split()[-1]) - float(parts[2].split()[-1])))
        if int(m.group(1)) < first_step:
            continue
        for q, e in AGAINST_Q.findall(m.group(3)):
            qs[q].append([float(e)])
    return qs, loss


def measure_against_one(args, prec, rec, shape, seed, steps, raw):
    """Record one run of `rec` in `prec` and check it against every
    reference: one raw file per (recorder, reference)."""
    pp = AGAINST_PREC[prec]
    refs = [x for x in AGAINST_REFS if (x != "scalar" or shape in SCALAR_SHAPES) and
            (x in AGAINST_WIDE_REFS or shape not in SHAPE_STEPS)]
    outs = {ref: os.path.join(raw, run_key(pp, "%s~%s" % (rec, ref), shape, seed) + ".json") for ref in refs}
    if all(os.path.exists(o) for o in outs.values()) and not args.force:
        return "kept"
    flags = SHAPES[shape].split()
    with tempfile.TemporaryDirectory() as tmp:
        exe = os.path.join(args.build, "compare")
        r = subprocess.run([exe, "--export-init", tmp, "--steps", str(steps), "--seed", str(seed)] + flags, cwd=ROOT,
                           capture_output=True, text=True)
        if r.returncode:
            return "failed: --export-init: " + r.stderr[-1000:]
        trace = os.path.join(tmp, "trace.json")
        r = subprocess.run([args.python, "examples/record_trace.py", tmp, trace, "--tensors-every",
                            str(AGAINST_EVERY), "--engine", rec, "--precision", prec], cwd=ROOT,
                           capture_output=True, text=True)
        if r.returncode:
            return "failed: record_trace.py --engine %s: %s" % (rec, r.stderr[-1000:])
        verdicts = []
        for ref, out in outs.items():
            # the dataset: the trace names it by its digest alone
            data = flags[flags.index("--data") + 1] if "--data" in flags else "data/names.txt"
            cmd = [exe, "--against", trace, "--engines", ref, "--data", data]
            r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            if r.returncode not in (0, 1):
                return "failed (exit %d): %s\n%s" % (r.returncode, " ".join(cmd), r.stderr[-1000:])
            qs, loss = parse_against(r.stdout, 2 if prec == "fp32" else 1)
            if len(loss) != steps or not qs["grads"]:
                return "failed: %s printed %d step lines, %d with tensors" % (" ".join(cmd), len(loss), len(qs["grads"]))
            if prec == "fp32":   # the loss's band (free mode's --drift-tol): each step's |a-b|
                qs["loss"] = [[x] for x in loss]
            red = {"quantities": {q: {"e": v, "n": [[None]] * len(v)} for q, v in qs.items() if v},
                   "loss_diff_max": max(loss), "verdict": "pass" if r.returncode == 0 else "fail",
                   "steps_run": steps, "gate_flip_steps": 0, "precision": pp, "impl": "%s~%s" % (rec, ref),
                   "shape": shape, "seed": seed, "steps": steps}
            with open(out + ".tmp", "w") as f:
                json.dump(red, f, separators=(",", ":"))
            os.replace(out + ".tmp", out)
            verdicts.append(red["verdict"])
    return ", ".join("%s %s" % (ref, v) for ref, v in zip(outs, verdicts))


def cmd_measure_against(args, raw):
    recs = [x for x in AGAINST_RECORDERS if not args.impls or x in args.impls.split(",")]
    if "torch" in recs and not has_torch(args.python):
        print("calibrate: %s has no torch >= 2: the torch recorder is left out (make deps TORCH=1, or --python)" %
              args.python)
        recs.remove("torch")
    jobs = []
    for prec in [p for p in args.precisions.split(",") if p in AGAINST_PREC]:
        for rec in recs:
            for shape in PRECISION_SHAPES[prec]:
                if args.shapes and shape not in args.shapes.split(","):
                    continue
                steps = args.steps or SHAPE_STEPS.get(shape, RUN_STEPS)
                for seed in range(1, (args.seeds or SHAPE_SEEDS.get(shape, 10)) + 1):
                    jobs.append((prec, rec, shape, seed, steps))
    jobs.sort(key=lambda j: -SHAPE_COST.get(j[2], 1) * j[4])
    print("calibrate: %d records into %s, %d at a time" % (len(jobs), raw, args.jobs), flush=True)
    bad = 0
    with ThreadPoolExecutor(args.jobs) as ex:
        futs = [ex.submit(measure_against_one, args, *j, raw) for j in jobs]
        for j, fu in zip(jobs, futs):
            what = fu.result()
            bad += what.startswith("failed")
            print("  %-5s %-6s %-9s seed %2d  %s" % (j[0], j[1], j[2], j[3], what), flush=True)
    if bad:
        die("%d record(s) could not be measured" % bad)


def raw_dir(args):
    return args.raw or os.path.join(ROOT, "build/calibration", {"cpu": "raw", "gpu": "raw-gpu",
                                                                  "against": "raw-against"}[args.family])


def cmd_measure(args):
    if args.family == AGAINST:
        raw = raw_dir(args)
        os.makedirs(raw, exist_ok=True)
        subprocess.run(["bash", "scripts/long_data.sh", "data/names.txt", LONG, "12"], cwd=ROOT, check=True)
        return cmd_measure_against(args, raw)
    fam = CPU_IMPLS if args.family == "cpu" else GPU_IMPLS
    raw = raw_dir(args)
    os.makedirs(raw, exist_ok=True)
    # always written again: an older one (other lines) would measure other runs
    subprocess.run(["bash", "scripts/long_data.sh", "data/names.txt", LONG, "12"], cwd=ROOT, check=True)
    jobs = []
    for prec in args.precisions.split(","):
        if prec not in PRECISION_SHAPES:
            die("unknown precision '%s' (fp64, fp32, bf16, fp16, tf32)" % prec)
        shapes = PRECISION_SHAPES if args.family == "cpu" else GPU_SHAPES
        for impl in fam[prec]:
            if args.impls and impl not in args.impls.split(","):
                continue
            for shape in shapes[prec]:
                if args.shapes and shape not in args.shapes.split(","):
                    continue
                if impl == "scalar" and shape not in SCALAR_SHAPES:
                    continue
                if args.family == "gpu" and shape == "w512" and impl != "cuda:layered":
                    continue   # the layered path's cuBLAS products are the ones width changes
                if impl == "cuda:fused" and shape not in FUSED_SHAPES:
                    continue   # the one-kernel step refuses them (shared memory)
                steps = args.steps or SHAPE_STEPS.get(shape, RUN_STEPS)
                seeds = args.seeds or SHAPE_SEEDS.get(shape, 10)
                for seed in range(1, seeds + 1):
                    jobs.append((prec, impl, shape, seed, steps))
    print("calibrate: %d runs into %s, %d at a time" % (len(jobs), raw, args.jobs), flush=True)
    if args.deadline:
        # a time-boxed session (a lent GPU): every implementation and shape at
        # seed 1 first, then seed 2, ...; what the deadline leaves is reported
        jobs.sort(key=lambda j: (j[3], -SHAPE_COST.get(j[2], 1) * j[4]))
    else:
        jobs.sort(key=lambda j: -SHAPE_COST.get(j[2], 1) * j[4])   # the longest first
    args.deadline_at = time.time() + args.deadline if args.deadline else None
    bad = late = 0
    with ThreadPoolExecutor(args.jobs) as ex:
        futs = [ex.submit(measure_one, args, *j, raw) for j in jobs]
        for j, fu in zip(jobs, futs):
            path, what = fu.result()
            if path is None and what == "past the deadline":
                late += 1
                continue
            if path is None:
                bad += 1
            print("  %-5s %-13s %-9s seed %2d  %s" % (j[0], j[1], j[2], j[3], what), flush=True)
    if late:
        print("calibrate: %d run(s) not measured: past the --deadline" % late)
    if bad:
        die("%d run(s) could not be measured" % bad)


# ---------------------------------------------------------------------------
# reduce and derive


def load_raw(raw):
    runs = []
    for name in sorted(os.listdir(raw)):
        if name.endswith(".json"):
            with open(os.path.join(raw, name)) as f:
                runs.append(json.load(f))
    return runs


def median(v):
    v = sorted(v)
    return v[len(v) // 2] if v else float("nan")


def step_max_ratio(es, ns, floor):
    """Per step: max over tensors of (e - floor) / e_noise, at least 0 (inf
    where e_noise is 0 and e > floor)."""
    out = []
    for e_row, n_row in zip(es, ns):
        m = -math.inf
        for e, n in zip(e_row, n_row):
            if e is None or n is None:
                m = math.inf
                break
            x = (e - floor) / n if n > 0 else (math.inf if e > floor else 0.0)
            m = max(m, x, 0.0)   # e <= floor passes at every k
        out.append(m)
    return out


def step_max(rows):
    return [max((x if x is not None else math.inf) for x in r) for r in rows]


def tail(values, runs):
    """The sample a tail fit needs: the count, the largest values (those
    above the 99th percentile, at least MIN_TAIL) and each run's maximum."""
    v = sorted(values)
    m = max(MIN_TAIL, int(math.ceil(TAIL_FRACTION * len(v))))
    top = v[-m:] if len(v) > m else v
    return {"n": len(v), "top": [float("%.6g" % x) if math.isfinite(x) else None for x in top],
            "runs": len(runs), "run_max": [float("%.6g" % x) if math.isfinite(x) else None for x in runs]}


def cmd_reduce(args):
    raw = raw_dir(args)
    runs = load_raw(raw)
    if not runs:
        die("no measured runs in %s (calibrate.py measure first)" % raw)
    # the floors: from the CPU family's noise reference (the same engines,
    # shapes and seeds on any machine: deterministic). The noise reference's
    # members are CPU engines run on the reference's state, whatever the
    # candidate: the GPU family's runs see the same noise, so their summary
    # keeps the ratio's tail for each floor of the 1-2-5 grid within a decade
    # of their own median noise, and derive takes the CPU family's.
    floors = noise_floors(runs)
    k_floors = {}
    for prec, qs in floors.items():
        for q, f in qs.items():
            if args.family == "cpu":
                k_floors.setdefault(prec, {})[q] = [f["floor"]]
            else:
                grid, x = [], grid_up(f["floor"] / 10.5, COARSE)
                while x <= f["floor"] * 10.5:
                    grid.append(x)
                    x = grid_up(x * 1.0000001, COARSE)
                k_floors.setdefault(prec, {})[q] = grid
    summary = {"family": args.family, "run_steps": RUN_STEPS, "floors" if args.family == "cpu" else "own_floors": floors,
               "stats": {}, "runs": []}
    groups = {}
    for r in runs:
        groups.setdefault((r["precision"], r["impl"], r["shape"]), []).append(r)
        groups.setdefault((r["precision"], r["impl"], ALL_SHAPES), []).append(r)
        summary["runs"].append({k: r[k] for k in ("precision", "impl", "shape", "seed", "steps", "verdict",
                                                  "gate_flip_steps", "loss_diff_max") if k in r})
    for (prec, impl, shape), rs in sorted(groups.items()):
        st = summary["stats"].setdefault(prec, {}).setdefault("%s/%s" % (impl, shape), {})
        for q in QUANTITIES:
            have = [r for r in rs if q in r["quantities"]]
            if not have:
                continue
            d = {}
            e_steps, e_runs, n_steps, n_runs = [], [], [], []
            fl = k_floors.get(prec, {}).get(q, [])
            k_steps, k_runs = {f: [] for f in fl}, {f: [] for f in fl}
            for r in have:
                Q = r["quantities"][q]
                es = step_max(Q["e"])
                e_steps += es
                e_runs.append(max(es))
                if prec not in FIXED_RULE:
                    ns = step_max(Q["n"])
                    n_steps += ns
                    n_runs.append(max(ns))
                    for f in fl:
                        ks = step_max_ratio(Q["e"], Q["n"], f)
                        k_steps[f] += ks
                        k_runs[f].append(max(ks))
            d["e"] = tail(e_steps, e_runs)
            if prec not in FIXED_RULE:
                d["noise"] = tail(n_steps, n_runs)
                d["k_by_floor"] = {"%g" % f: tail(k_steps[f], k_runs[f]) for f in fl}
            # a record may hold tensors at every step: its comparisons count as steps
            d["per_run"] = RUN_STEPS if prec in AGAINST_PREC.values() else len(e_steps) / len(have)
            st[q] = d
        rl = [r["relu"] for r in rs if "relu" in r]
        if rl:
            st["relu"] = {"e": tail([x for v in rl for x in v], [max(v) if v else 0.0 for v in rl]),
                          "per_run": sum(len(v) for v in rl) / len(rl)}
    # the fingerprint CI measures again: the first 200 steps of one run
    fp = {}
    for prec, (impl, shape, seed) in FINGERPRINT.items():
        for r in runs:
            if (r["precision"], r["impl"], r["shape"], r["seed"]) == (prec, impl, shape, seed):
                fp[prec] = fingerprint(r, 200)
    if fp:
        summary["fingerprint"] = fp
    out = args.out or os.path.join(ROOT, "docs/calibration", "measured-%s.json" % args.family)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out + ".tmp", "w") as f:
        json.dump(summary, f, separators=(",", ":"))
        f.write("\n")
    os.replace(out + ".tmp", out)
    print("calibrate: %d runs -> %s" % (len(runs), out))


def noise_floors(runs):
    """Per mixed or fp32 precision and quantity: the median of the noise
    reference's e over every comparison, and the floor (that, up to the 1-2-5
    grid)."""
    floors = {}
    for prec in PRECISION_SHAPES:
        if prec == "fp64":
            continue
        for q in QUANTITIES:
            pooled = [n for r in runs if r["precision"] == prec and q in r["quantities"]
                      for row in r["quantities"][q]["n"] for n in row if n is not None]
            if pooled:
                floors.setdefault(prec, {})[q] = {"median_noise": median(pooled), "count": len(pooled),
                                                  "floor": grid_up(median(pooled), COARSE)}
    return floors


def k_tail(d, floor, where):
    """The tail of the ratio statistic at this floor (a summary keeps it for
    the floors it was reduced with)."""
    t = d.get("k_by_floor", {}).get("%g" % floor)
    if t is None:
        die("%s: the summary has the ratio's tail for the floors %s, not %g: reduce it again" %
            (where, ", ".join(sorted(d.get("k_by_floor", {}))), floor))
    clip = [None if x is None else max(x, 0.0) for x in t["top"]]
    return dict(t, top=sorted(clip, key=lambda x: math.inf if x is None else x),
                run_max=[None if x is None else max(x, 0.0) for x in t["run_max"]])


def fingerprint(run, steps):
    """A digest of a run's first `steps` steps of errors (6 significant digits)."""
    h = hashlib.sha256()
    for q in QUANTITIES:
        if q == "probs" or q not in run["quantities"]:
            continue
        for row in run["quantities"][q]["e"][:steps] + run["quantities"][q]["n"][:steps]:
            h.update((",".join("%.6g" % x if x is not None else "null" for x in row) + ";").encode())
    return h.hexdigest()[:16]


def exp_tail(t):
    """(u, p_u, sigma): the exponential tail fitted to the step maxima above
    u, the smallest kept top value (sigma: their mean excess); None if too
    few values are finite. Rounding errors are bounded, so their maxima have
    a light tail: the exponential (a generalized Pareto tail with shape 0) is
    the heaviest light tail, the conservative choice. A shape fitted freely
    to 10^4 steps extrapolates three decades on noise (docs/compare.md)."""
    top = [x for x in t["top"] if x is not None]
    if len(top) < 10 or len(top) != len(t["top"]):
        return None
    u = top[0]
    # values tied at u (a ratio clipped at 0) are not above it
    y = [x - u for x in top[1:] if x > u]
    return (u, len(y) / t["n"], sum(y) / len(y)) if y else (u, 0.0, 0.0)


def p_exceed(t, x):
    """The estimated probability that one step's statistic exceeds x."""
    if any(v is None for v in t["top"]) and (x is None or math.isfinite(x)):
        return 1.0      # infinite values (NaN errors, an exact noise reference): no finite bound holds
    f = exp_tail(t)
    if f is None or x <= f[0]:
        return sum(1 for v in t["top"] if v > x) / max(1, t["n"])
    u, pu, s = f
    return pu * math.exp(-(x - u) / s) if s > 0 else 0.0


def p_run(t, x, per_run):
    """The estimated probability that a run of RUN_STEPS steps (or, for the
    probabilities, of `per_run` comparisons) has a statistic above x."""
    n = per_run if per_run < 100 else RUN_STEPS
    p = p_exceed(t, x)
    return 1 - (1 - min(p, 1.0)) ** n


def smallest(t, per_run, alpha, grid, lo=0.0):
    """The smallest grid value >= lo whose estimated run false-alarm rate is
    <= alpha and that no measured run exceeds: a bound that a correct run of
    the family went past is refuted by the measurement, whatever the fitted
    tail says (the ratio's steps with a tiny e_noise lie beyond the
    exponential: fp32 params, one step in 6000 at 2.14 where the fit gives
    4e-10)."""
    finite = [v for v in t["top"] if v is not None]
    if len(finite) < len(t["top"]) or any(v is None for v in t["run_max"]):
        return math.inf
    pos = [v for v in finite if v > 0]
    start = max(lo, min(pos) if pos else 0.0, 1e-18)
    lo = max([lo] + [v * (1 + 1e-9) for v in t["run_max"]])
    x = grid_up(start, grid)
    for _ in range(400):
        if p_run(t, x, per_run) <= alpha and x >= lo:
            return x
        x = grid_up(x * 1.0000001, grid)
    return math.inf


def load_summaries(given):
    """The summaries given (else the committed ones), merged: (files, stats,
    floors, runs)."""
    files = given or default_summaries()
    if not files:
        die("no summaries (docs/calibration/measured-*.json): calibrate.py measure and reduce first")
    summaries = []
    for p in files:
        with open(p) as f:
            summaries.append(json.load(f))
    return (files,) + merge_stats(summaries)


def merge_stats(summaries):
    stats, floors, runs = {}, {}, []
    for s in summaries:
        if s.get("family") == "cpu":
            floors = s["floors"]
        runs += s.get("runs", [])
        for prec, impls in s["stats"].items():
            for impl, d in impls.items():
                stats.setdefault(prec, {})[impl] = d
    return stats, floors, runs


def failing_runs(x, consts, prec):
    """How many of a group's runs have a statistic past its derived bound
    (each run's maxima are in the summary)."""
    n = max(d["e"]["runs"] for d in x.values())
    bad = [False] * n
    for q, d in x.items():
        if q == "relu":
            if "relu_margin" in consts:
                for i, v in enumerate(d["e"]["run_max"]):
                    bad[i] = bad[i] or v is None or v > consts["relu_margin"]
            continue
        c = consts[q]
        tests = [(d["e"]["run_max"], c["scaled"])] if prec in FIXED_RULE else \
            [(k_tail(d, c["floor"], q)["run_max"], c["k"]), (d["noise"]["run_max"], c["ref_cap"])]
        if "cap" in c:
            tests.append((d["e"]["run_max"], c["cap"]))
        for vals, bound in tests:
            for i, v in enumerate(vals):
                bad[i] = bad[i] or v is None or v > bound
    return sum(bad)


def enough(key, d):
    """A group's tail is used where it has MIN_GROUP comparisons; an
    implementation's pooled shapes always count."""
    return key.endswith("/" + ALL_SHAPES) or d["e"]["n"] >= MIN_GROUP


def derive(stats, floors):
    """The constants of every precision and quantity, and per implementation
    the estimated false-alarm rate of each bound."""
    out = {}
    for prec, impls in stats.items():
        qs = sorted({q for d in impls.values() for q in d if q != "relu"}, key=QUANTITIES.index)
        relu = any("relu" in d for d in impls.values())
        checks = len(qs) * (1 if prec in FIXED_RULE else (3 if prec in ("bf16", "fp16", "tf32") else 2)) + relu
        alpha = BUDGET / checks
        c = {}
        if relu:
            # a gate flipped by rounding alone has both inputs within the
            # margin; never below the unit roundoff of the precision's sums
            c["relu_margin"] = max(smallest(d["relu"]["e"], d["relu"]["per_run"], alpha, COARSE, lo=UNIT[prec])
                                   for i, d in impls.items() if "relu" in d and
                                   (i.endswith("/" + ALL_SHAPES) or d["relu"]["e"]["n"] >= MIN_GROUP))
        for q in qs:
            have = {i: d[q] for i, d in impls.items() if q in d and enough(i, d[q])}
            if prec in FIXED_RULE:
                scaled = max(smallest(d["e"], d["per_run"], alpha, COARSE) for d in have.values())
                c[q] = {"scaled": scaled}
                continue
            fl = floors[prec][q]["floor"]
            k = max(smallest(k_tail(d, fl, "%s %s %s" % (prec, i, q)), d["per_run"], alpha, FINE, lo=2.0)
                    for i, d in have.items())
            ref_cap = max(smallest(d["noise"], d["per_run"], alpha, COARSE) for d in have.values())
            c[q] = {"k": k, "floor": floors[prec][q]["floor"], "ref_cap": ref_cap}
            if prec in ("bf16", "fp16", "tf32"):
                c[q]["cap"] = max(smallest(d["e"], d["per_run"], alpha, COARSE) for d in have.values())
        rates = {}
        for impl, d in impls.items():
            total = 0.0
            for q in qs:
                if q not in d or not enough(impl, d[q]):
                    continue
                x = d[q]
                if prec in FIXED_RULE:
                    total += p_run(x["e"], c[q]["scaled"], x["per_run"])
                else:
                    total += (p_run(k_tail(x, c[q]["floor"], impl), c[q]["k"], x["per_run"]) +
                              p_run(x["noise"], c[q]["ref_cap"], x["per_run"]))
                    if "cap" in c[q]:
                        total += p_run(x["e"], c[q]["cap"], x["per_run"])
            if "relu" in d and "relu_margin" in c:
                total += p_run(d["relu"]["e"], c["relu_margin"], d["relu"]["per_run"])
            rates[impl] = total
        out[prec] = {"constants": c, "false_alarm": rates, "alpha": alpha}
    # A precision whose family flipped no gate (fp64: its rounding is 2^-29
    # of fp32's) has no tail to fit: it gets the widest margin measured
    # elsewhere, in units of each precision's unit roundoff
    flipped = {p: max(max_of(d["relu"]["e"]) for d in impls.values() if "relu" in d)
               for p, impls in stats.items() if any("relu" in d for d in impls.values())}
    units = [out[p]["constants"]["relu_margin"] / UNIT[p] for p, w in flipped.items() if w > 0]
    for p, w in flipped.items():
        if w == 0 and units:
            out[p]["constants"]["relu_margin"] = grid_up(max(units) * UNIT[p], COARSE)
    return out


def table():
    exe = os.path.join(ROOT, "build/compare")
    if not os.path.exists(exe):
        die("build/compare is missing: run make first")
    r = subprocess.run([exe, "--rules"], capture_output=True, text=True)
    if r.returncode:
        die("build/compare --rules failed: " + r.stderr)
    return json.loads(r.stdout)


def default_summaries():
    d = os.path.join(ROOT, "docs/calibration")
    return [os.path.join(d, f) for f in ("measured-cpu.json", "measured-gpu.json", "measured-against.json")
            if os.path.exists(os.path.join(d, f))]


TABLE_FILE = os.path.join(ROOT, "compare/tolerance.c")
ENUM = {"fp64": "PREC_FP64", "fp32": "PREC_FP32", "bf16": "PREC_BF16", "fp16": "PREC_FP16", "tf32": "PREC_TF32"}


def c_number(x):
    """A constant as the table writes it: %g without the exponent's zeros (1e-5, 2.5, 12)."""
    return re.sub(r"e([+-])0*(\d)", r"e\1\2", "%g" % x).replace("e+", "e")


def write_table(d, path=TABLE_FILE):
    """Rewrite the derived constants of each precision's block of the table
    (fp64: .fixed's scaled; the others: .ratio's {k, floor, cap, ref_cap};
    relu_margin); every other line of the file stays as it is. A constant
    with no measurement keeps its value."""
    with open(path) as f:
        src = f.read()
    for prec, enum in ENUM.items():
        if prec not in d:
            continue
        c = d[prec]["constants"]
        m = re.search(r"\[%s\] =\s*\{(.*?)\n        \},\n" % enum, src, re.S)
        if not m:
            die("%s: no [%s] block in the table" % (path, enum))
        block = m.group(1)
        field = "fixed" if prec == "fp64" else "ratio"
        fm = re.search(r"\.%s = \{((?:\s*\[Q_\w+\] = (?:FIXED64\([^)]*\)|\{[^}]*\}),?)+)\s*\},\n" % field, block)
        if not fm:
            die("%s: the [%s] block has no .%s" % (path, enum, field))
        entries = dict(re.findall(r"\[Q_(\w+)\] = (FIXED64\([^)]*\)|\{[^}]*\})", fm.group(1)))
        for q in QUANTITIES:
            key = q.upper()
            if key not in entries:
                die("%s: the [%s] block has no [Q_%s]" % (path, enum, key))
            if q not in c:
                continue
            if prec == "fp64":
                entries[key] = "FIXED64(%s)" % c_number(c[q]["scaled"])
            else:
                entries[key] = "{%s}" % ", ".join(c_number(c[q].get(n, 0)) for n in ("k", "floor", "cap", "ref_cap"))
        items = ["[Q_%s] = %s" % (q.upper(), entries[q.upper()]) for q in QUANTITIES]
        lines = [", ".join(items[i:i + 3]) for i in range(0, len(items), 3)]
        text = ".%s = {%s}" % (field, (",\n" + " " * (len(field) + 17)).join(lines))
        block = block[:fm.start()] + text + ",\n" + block[fm.end():]
        if "relu_margin" in c:
            block, n = re.subn(r"\.relu_margin = [^,]+,", ".relu_margin = %s," % c_number(c["relu_margin"]), block)
            if n != 1:
                die("%s: the [%s] block has no .relu_margin" % (path, enum))
        src = src[:m.start(1)] + block + src[m.end(1):]
    for prec, pp in AGAINST_PREC.items():
        if pp not in d:
            continue
        c = d[pp]["constants"]
        name = "AGAINST_%s_SCALED" % prec.upper()
        m = re.search(r"const double %s\[Q_NUM\] = \{([^}]*)\};" % name, src)
        if not m:
            die("%s: no %s line" % (path, name))
        entries = dict(re.findall(r"\[Q_(\w+)\] = ([^,]+)", m.group(1)))
        for q in AGAINST_QUANTITIES:
            if q in c:
                entries[q.upper()] = c_number(c[q]["scaled"])
        text = ", ".join("[Q_%s] = %s" % (q.upper(), entries[q.upper()]) for q in AGAINST_QUANTITIES)
        src = src[:m.start(1)] + text + src[m.end(1):]
        if "loss" in c:   # the records' loss band is free mode's --drift-tol of the precision
            m = re.search(r"\[%s\] =\s*\{(.*?)\n        \},\n" % ENUM[prec], src, re.S)
            block, n = re.subn(r"\.drift_tol = [^,]+,", ".drift_tol = %s," % c_number(c["loss"]["scaled"]), m.group(1))
            if n != 1:
                die("%s: the [%s] block has no .drift_tol" % (path, ENUM[prec]))
            src = src[:m.start(1)] + block + src[m.end(1):]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(src)
    os.replace(tmp, path)
    print("calibrate: wrote the derived constants into %s: rebuild (make) and run calibrate.py derive --check" %
          os.path.relpath(path, ROOT))


def cmd_derive(args):
    _, stats, floors, runs = load_summaries(args.summary)
    d = derive(stats, floors)
    if getattr(args, "write", False):
        write_table(d)
        return 0
    whole = table()
    tab = dict(whole["precisions"])
    for prec, pp in AGAINST_PREC.items():
        tab[pp] = {"quantities": {q: {"scaled": v} for q, v in whole["against_%s_scaled" % prec].items()}}
        tab[pp]["quantities"]["loss"] = {"scaled": whole["precisions"][prec]["drift_tol"]}
    mismatch = []
    for prec in ("fp64", "fp32", "bf16", "fp16", "tf32", AGAINST, AGAINST32):
        if prec not in d:
            continue
        print("\n== %s: %d implementation(s): %s" % (prec, len(stats[prec]), ", ".join(sorted(stats[prec]))))
        print("   budget %.0e per run; %.1e per bound" % (BUDGET, d[prec]["alpha"]))
        for q, c in d[prec]["constants"].items():
            if q == "relu_margin":
                t = tab[prec]["relu_margin"]
                ok = abs(c - t) <= 1e-9 * c
                w = max(max_of(x["relu"]["e"]) for x in stats[prec].values() if "relu" in x)
                print("   %-7s %.3g%s; largest flipped input %.3g" % ("relu", c, "" if ok else " (table %.3g)" % t, w))
                if not ok:
                    mismatch.append("%s relu_margin: derived %.6g, table %.6g" % (prec, c, t))
                continue
            t = tab[prec]["quantities"][q]
            if prec in FIXED_RULE:
                names = [("scaled", "scaled")]
            else:
                names = [("k", "k"), ("floor", "floor"), ("ref_cap", "ref_cap")] + ([("cap", "cap")] if "cap" in c else [])
            parts = []
            for key, tkey in names:
                ok = abs(c[key] - t[tkey]) <= 1e-9 * max(abs(c[key]), 1e-300) if math.isfinite(c[key]) else False
                parts.append("%s %.3g%s" % (key, c[key], "" if ok else " (table %.3g)" % t[tkey]))
                if not ok:
                    mismatch.append("%s %s %s: derived %.6g, table %.6g" % (prec, q, key, c[key], t[tkey]))
            # the distribution behind it
            worst = {}
            for impl, x in stats[prec].items():   # impl/shape
                if q not in x:
                    continue
                s = x[q]["e"] if prec in FIXED_RULE else k_tail(x[q], c["floor"], impl)
                fin = [v for v in s["run_max"] if v is not None]
                worst[impl] = max(fin) if len(fin) == len(s["run_max"]) else math.inf
            w = max(worst.values())
            print("   %-7s %s; largest run maximum %.3g (%s)" % (q, ", ".join(parts), w,
                                                                  max(worst, key=worst.get)))
        per_impl = {}
        for key, rate in d[prec]["false_alarm"].items():
            impl, shape = key.split("/")
            if rate >= per_impl.get(impl, (-1, ""))[0]:
                per_impl[impl] = (rate, shape)
        for impl, (rate, shape) in sorted(per_impl.items()):
            rs = [r for r in runs if r["precision"] == prec and r["impl"] == impl]
            steps = sum(r["steps"] for r in rs)
            nfail = sum(failing_runs(x, d[prec]["constants"], prec) for key, x in stats[prec].items()
                        if key.split("/")[0] == impl and key.split("/")[1] != ALL_SHAPES)
            print("   %-14s estimated false alarms %.1e per %d-step run (worst shape %s); %d runs, %d steps "
                  "measured, %d of them fail under these constants" % (impl, rate, RUN_STEPS, shape, len(rs), steps,
                                                                        nfail))
    if args.check:
        if mismatch:
            print("\ncalibrate: the table does not match its measurement:\n  " + "\n  ".join(mismatch))
            return 1
        print("\ncalibrate: every constant of the table matches its derivation")
    return 0


def cmd_report(args):
    """docs/calibration/report.md: the derivation as tables (docs/compare.md
    quotes it)."""
    files, stats, floors, runs = load_summaries(args.summary)
    d = derive(stats, floors)
    out = ["# The calibration of compare's rules", "",
           "Written by `scripts/calibrate.py report` from %s (docs/compare.md, \"How the constants were measured\", "
           "says what each column is). The table of `compare/tolerance.c` holds these constants; "
           "`make calibrate-check` fails when it does not." % ", ".join("`%s`" % os.path.relpath(p, ROOT)
                                                                       for p in files), ""]
    for prec in ("fp64", "fp32", "bf16", "fp16", "tf32", AGAINST, AGAINST32):
        if prec not in d:
            continue
        impls = sorted({k.split("/")[0] for k in stats[prec]})
        rs = [r for r in runs if r["precision"] == prec]
        if prec in (AGAINST, AGAINST32):
            p = "fp64" if prec == AGAINST else "fp32"
            out += ["## --against: %s records" % p, "",
                    "A record of an independent implementation (examples/record_trace.py: numpy, torch on the CPU; "
                    "in %s; tensors every %d steps) on its own trajectory, checked by `compare --against` against "
                    "each reference engine on its own (implementation `RECORDER~REFERENCE`)%s; each comparison "
                    "counts as a step, so the rate is for a record with tensors at every one of 1000 steps. Largest "
                    "loss difference over every record: %.3g (the loss's bound is free mode's %s --drift-tol)." %
                    (p, AGAINST_EVERY, "" if p == "fp64" else ", from step 2 on (step 1 is held to fp32's fixed "
                     "table)", max(r.get("loss_diff_max", 0) for r in rs), p), ""]
        out += ([] if prec in (AGAINST, AGAINST32) else ["## %s" % prec, ""]) + [
                "%d runs (%d steps) of %s; each of its %d bounds gets %.1e of the budget of 1e-3 false alarms per "
                "1000-step run." % (len(rs), sum(r["steps"] for r in rs), ", ".join(impls),
                                     round(BUDGET / d[prec]["alpha"]), d[prec]["alpha"]), ""]
        if "relu_margin" in d[prec]["constants"]:
            rg = {k: max_of(x["relu"]["e"]) for k, x in stats[prec].items()
                  if "relu" in x and not k.endswith("/" + ALL_SHAPES)}
            w = max(rg, key=rg.get)
            mg = d[prec]["constants"]["relu_margin"]
            if rg[w] > 0:
                out += ["ReLU margin %g: the largest input of a gate flipped against the reference, %.3g (%s)." %
                        (mg, rg[w], w), ""]
            else:
                out += ["ReLU margin %g (%.3g units of %.3g, %s's unit roundoff): no gate flipped in its family, "
                        "so it is the widest margin of the other precisions in units of their unit roundoff, "
                        "rounded up on the 1-2-5 grid." % (mg, mg / UNIT[prec], UNIT[prec], prec), ""]
        stat = "e = max\\|a-b\\| / rms(b)" if prec in FIXED_RULE else "(e - floor) / e_noise"
        cols = ["quantity", "constants", "largest run maximum of %s" % stat, "where"]
        if prec not in FIXED_RULE:
            cols += ["median e_noise", "largest e_noise"] + (["largest e"] if prec != "fp32" else [])
        out += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for q, c in d[prec]["constants"].items():
            if q == "relu_margin":
                continue
            groups = {k: x[q] for k, x in stats[prec].items() if q in x and not k.endswith("/" + ALL_SHAPES)}
            if prec == AGAINST32 and q == "loss":
                cons = "drift_tol %g (each step's \\|a-b\\|, not scaled)" % c["scaled"]
                vals = {k: max_of(x["e"]) for k, x in groups.items()}
            elif prec in FIXED_RULE:
                cons = "scaled %g" % c["scaled"]
                vals = {k: max_of(x["e"]) for k, x in groups.items()}
            else:
                cons = "k %g, floor %g, ref_cap %g%s" % (c["k"], c["floor"], c["ref_cap"],
                                                          ", cap %g" % c["cap"] if "cap" in c else "")
                vals = {k: max_of(k_tail(x, c["floor"], k)) for k, x in groups.items()}
            w = max(vals, key=vals.get)
            row = "| %s | %s | %.3g | %s |" % (q, cons, vals[w], w)
            if prec not in FIXED_RULE:
                nz = {k: max_of(x["noise"]) for k, x in groups.items()}
                row += " %.3g | %.3g |" % (floors[prec][q]["median_noise"], max(nz.values()))
                if prec != "fp32":
                    row += " %.3g |" % max(max_of(x["e"]) for x in groups.values())
            out.append(row)
        out += ["", "| implementation | runs | steps | estimated false alarms per 1000-step run (worst shape) | "
                "runs past a bound |", "|---|---|---|---|---|"]
        for impl in impls:
            mine = {k: v for k, v in d[prec]["false_alarm"].items() if k.split("/")[0] == impl}
            wk = max(mine, key=mine.get)
            ir = [r for r in rs if r["impl"] == impl]
            nfail = sum(failing_runs(x, d[prec]["constants"], prec) for k, x in stats[prec].items()
                        if k.split("/")[0] == impl and k.split("/")[1] != ALL_SHAPES)
            out.append("| %s | %d | %d | %.1e (%s) | %d |" % (impl, len(ir), sum(r["steps"] for r in ir), mine[wk],
                                                            wk.split("/")[1], nfail))
        out.append("")
    path = args.out
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(out))
    os.replace(path + ".tmp", path)
    print("calibrate: %s" % path)
    return 0


def max_of(t):
    v = t["run_max"]
    return math.inf if any(x is None for x in v) else max(v)


def cmd_check(args):
    args.summary = None
    args.check = True
    rc = cmd_derive(args)
    if rc:
        return rc
    # a short fresh measurement: the CPU engines are deterministic, so the
    # first steps of the fingerprint runs must give the committed errors
    with open(os.path.join(ROOT, "docs/calibration/measured-cpu.json")) as f:
        summary = json.load(f)
    tmp = tempfile.mkdtemp(prefix="calibrate-check-")
    try:
        args.force = True
        for prec, (impl, shape, seed) in FINGERPRINT.items():
            path, what = measure_one(args, prec, impl, shape, seed, RUN_STEPS, tmp)
            if path is None:
                die(what)
            with open(path) as f:
                run = json.load(f)
            got, want = fingerprint(run, 200), summary.get("fingerprint", {}).get(prec)
            print("calibrate: %s %s %s seed %d: fingerprint %s (%s)" % (prec, impl, shape, seed, got,
                  "matches the measurement" if got == want else "the measurement has %s" % want))
            if got != want:
                print("calibrate: the engines' errors changed since the constants were measured: measure again "
                      "(make calibrate) and update the table")
                return 1
            # and under the table as it is (its own ReLU margins), the run passes
            cmd = [os.path.join(args.build, "compare"), "--engines", "%s,%s" % (reference_for(impl), impl),
                   "--precision", prec, "--steps", str(RUN_STEPS), "--seed", str(seed), "--quiet",
                   "--samples", "20"] + SHAPES[shape].split()
            r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            print("calibrate: %s under the table: %s" % (" ".join(cmd[1:]), (r.stdout.strip().splitlines() or ["?"])[0]))
            if r.returncode != 0:
                print("calibrate: the run false-alarmed (exit %d):\n%s%s" % (r.returncode, r.stdout[-3000:], r.stderr))
                return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


# ---------------------------------------------------------------------------
# plot


def cmd_plot(args):
    _, stats, floors, _ = load_summaries(args.summary)
    d = derive(stats, floors)
    os.makedirs(args.out, exist_ok=True)
    for prec in stats:
        svg = plot_precision(prec, stats[prec], d[prec]["constants"])
        path = os.path.join(args.out, "%s.svg" % prec)
        with open(path + ".tmp", "w") as f:
            f.write(svg)
        os.replace(path + ".tmp", path)
        print("calibrate: %s" % path)
    return 0


def plot_precision(prec, impls, consts):
    """Per quantity, each implementation's per-run maxima of the judged
    statistic (k needed, or e for fp64) as dots on a log axis, and the chosen
    constant as a line."""
    qs = [q for q in QUANTITIES if q in consts]
    # one row per implementation, its shapes together
    merged = {}
    for key, d in impls.items():
        impl, shape = key.split("/")
        if shape == ALL_SHAPES:
            continue
        for q, x in d.items():
            m = merged.setdefault(impl, {}).setdefault(q, {"e": {"run_max": []}, "k": {"run_max": []}})
            m["e"]["run_max"] += x["e"]["run_max"]
            if "k_by_floor" in x:
                m["k"]["run_max"] += k_tail(x, consts[q]["floor"], key)["run_max"]
    impls = merged
    names = sorted(impls)
    W, rowh, left, top = 760, 26, 150, 40
    H = top + len(qs) * (len(names) + 1) * rowh + 40
    key = "e" if prec in FIXED_RULE else "k"
    lim = "scaled" if prec in FIXED_RULE else "k"
    vals = [v for i in names for q in qs if q in impls[i] for v in impls[i][q][key]["run_max"] if v and v > 0]
    vals += [consts[q][lim] for q in qs]
    lo, hi = math.floor(math.log10(min(vals))), math.ceil(math.log10(max(vals))) + 0.3
    X = lambda v: left + (W - left - 20) * (math.log10(v) - lo) / (hi - lo)  # noqa: E731
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" '
           'font-size="11">' % (W, H), '<rect width="100%" height="100%" fill="white"/>',
           '<text x="10" y="18" font-size="13">%s: each run\'s largest %s (dots, one per run of the family) '
           'and the table\'s bound (red line)%s</text>' % (prec, "e = max|a-b|/rms" if prec in FIXED_RULE else
                                                             "(e - floor)/e_noise",
                                                             "" if prec in FIXED_RULE else "; no dot: every step below the floor")]
    y = top
    for q in qs:
        out.append('<text x="10" y="%d" font-weight="bold">%s</text>' % (y + 14, q))
        y0 = y
        y += rowh
        for i in names:
            if q not in impls[i]:
                continue
            out.append('<text x="20" y="%d">%s</text>' % (y + 4, i))
            for v in impls[i][q][key]["run_max"]:
                if v and v > 0:
                    out.append('<circle cx="%.1f" cy="%d" r="3" fill="#2a6fb0" fill-opacity="0.5"/>' % (X(v), y))
            y += rowh
        xl = X(consts[q][lim])
        out.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#c0392b" stroke-width="2"/>' % (xl, y0 + 4, xl,
                                                                                                         y - 8))
        out.append('<text x="%.1f" y="%d" fill="#c0392b">%s %.3g</text>' % (xl + 3, y0 + 14, lim, consts[q][lim]))
    for e in range(int(lo), int(math.ceil(hi))):
        x = X(10.0 ** e)
        out.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ccc"/>' % (x, top, x, H - 30))
        out.append('<text x="%.1f" y="%d" text-anchor="middle">1e%d</text>' % (x, H - 14, e))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv):
    ap = argparse.ArgumentParser(prog="calibrate.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--family", choices=["cpu", "gpu", AGAINST], default="cpu",
                   help="against: the records --against checks, in the --precisions among fp64 and fp32")
    m.add_argument("--precisions", default="fp64,fp32,bf16,fp16,tf32")
    m.add_argument("--seeds", type=int, default=0, help="seeds per shape (default 10; 3 for w256, w512)")
    m.add_argument("--steps", type=int, default=0, help="steps per run (default 1000; fewer for w256, w512)")
    m.add_argument("--shapes", default="")
    m.add_argument("--impls", default="")
    m.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    m.add_argument("--raw", default="")
    m.add_argument("--python", default=default_python())
    m.add_argument("--build", default=os.path.join(ROOT, "build"))
    m.add_argument("--force", action="store_true", help="measure runs already measured again")
    m.add_argument("--deadline", type=float, default=0,
                   help="seconds: no run past this (seed by seed, so that every implementation gets its share)")
    r = sub.add_parser("reduce")
    r.add_argument("--family", choices=["cpu", "gpu", AGAINST], default="cpu")
    r.add_argument("--raw", default="")
    r.add_argument("--out", default="")
    d = sub.add_parser("derive")
    d.add_argument("--summary", action="append")
    g = d.add_mutually_exclusive_group()
    g.add_argument("--check", action="store_true")
    g.add_argument("--write", action="store_true")
    c = sub.add_parser("check")
    c.add_argument("--python", default=default_python())
    c.add_argument("--build", default=os.path.join(ROOT, "build"))
    rp = sub.add_parser("report")
    rp.add_argument("--summary", action="append")
    rp.add_argument("--out", default=os.path.join(ROOT, "docs/calibration/report.md"))
    p = sub.add_parser("plot")
    p.add_argument("--summary", action="append")
    p.add_argument("--out", default=os.path.join(ROOT, "docs/calibration"))
    a = ap.parse_args(argv)
    return {"measure": cmd_measure, "reduce": cmd_reduce, "derive": cmd_derive, "check": cmd_check,
            "plot": cmd_plot, "report": cmd_report}[a.cmd](a) or 0


def default_python():
    venv = os.path.join(ROOT, ".venv/bin/python")
    return venv if os.path.exists(venv) else sys.executable


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
