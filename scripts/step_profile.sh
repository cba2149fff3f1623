#!/usr/bin/env bash
# usage: scripts/step_profile.sh [--size e512] [--precision bf16] [--top N] [--each]
# Where one training step of the CUDA engine goes, kernel by kernel (ncu):
# Runs compare --bench on the cuda engine for 10 steps (5 warm-up) under
# `ncu --clock-control none` and prints each kernel's summed
# gpu__time_duration over the second step (the launches after the first
# Adam up to the second), largest first, with the total (both streams
# summed, each kernel run alone: the step's wall time differs). --each also
# lists every launch of that step in order with its time, grid and block
# (which product is which: one cuBLAS kernel name serves several shapes).
# Needs ncu and a built build/compare (DEPS_PREFIX set as for make).
set -u -o pipefail
usage() { awk 'NR>1 && !/^#/{exit} NR>1' "$0" | sed 's/^# \{0,1\}//'; }
size=e512 prec=bf16 top=40 each=0
while [ $# -gt 0 ]; do
  case "$1" in
    --size|--precision|--top)
      [ $# -ge 2 ] && [ -n "$2" ] || { echo "step_profile: $1 needs a value (see --help)" >&2; exit 2; }
      case "$1" in --size) size="$2" ;; --precision) prec="$2" ;; --top) top="$2" ;; esac
      shift 2 ;;
    --each) each=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "step_profile: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
ncu_bin=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -n 1)
[ -n "$ncu_bin" ] || { echo "step_profile: ncu not found" >&2; exit 2; }
[ -x build/compare ] || { echo "step_profile: build/compare is missing (make build/compare)" >&2; exit 2; }
csv=$(mktemp)
"$ncu_bin" --clock-control none --metrics gpu__time_duration.sum,launch__grid_size,launch__block_size --csv --print-units base --print-kernel-base function --launch-count 700 \
  build/compare --bench --engines cuda --sizes "$size" --precision "$prec" --repeats 1 --steps 10 --quiet \
  >"$csv" 2>/dev/null
rc=$?
[ $rc -eq 0 ] || { echo "step_profile: ncu exited $rc" >&2; tail -n 5 "$csv" >&2; exit 1; }
python3 - "$csv" "$top" "$each" <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
hdr = rows[0]; rows = rows[1:]
iname, ival, iid = hdr.index("Kernel Name"), hdr.index("Metric Value"), hdr.index("ID")
imet = hdr.index("Metric Name")
# one row per (launch, metric): gather each launch's metrics
launches = {}
for r in rows:
    launches.setdefault(r[iid], {"name": r[iname].strip()})[r[imet]] = float(r[ival].replace(",", ""))
rows = [[v["name"], v.get("gpu__time_duration.sum", 0.0), int(v.get("launch__grid_size", 0)),
         int(v.get("launch__block_size", 0))] for k, v in sorted(launches.items(), key=lambda x: int(x[0]))]
iname, ival = 0, 1
# the second step: the launches after the first Adam up to the second one
names = [r[iname] for r in rows]
adam = [i for i, x in enumerate(names) if "adam" in x]
if len(adam) < 2: sys.exit("step_profile: fewer than two steps profiled")
tot = {}; cnt = collections.Counter(); n = 0
for r in rows[adam[0] + 1: adam[1] + 1]:
    name = r[iname].strip()
    n += 1
    ns = r[ival]
    tot[name] = tot.get(name, 0) + ns; cnt[name] += 1
s = sum(tot.values())
print(f"one step: {n} kernels, {s/1e3:.1f} us summed")
for name, ns in sorted(tot.items(), key=lambda x: -x[1])[: int(sys.argv[2])]:
    print(f"  {ns/1e3:9.1f} us {cnt[name]:4d}x  {name[:110]}")
if sys.argv[3] == "1":
    print("every launch of the step, in order (us, grid x block):")
    for r in rows[adam[0] + 1: adam[1] + 1]:
        print(f"  {r[1]/1e3:8.1f} {r[2]:6d} x {r[3]:4d}  {r[0][:100]}")
PY
