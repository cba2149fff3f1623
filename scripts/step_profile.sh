#!/usr/bin/env bash
# Where one training step of the CUDA engine goes, kernel by kernel (ncu):
#   scripts/step_profile.sh [--size e512] [--precision bf16] [--top N]
# Runs compare --bench on the cuda engine for 10 steps (5 warm-up) under
# `ncu --clock-control none` and prints each kernel's summed
# gpu__time_duration over the second step (the launches after the first
# Adam up to the second), largest first, with the total (both streams
# summed, each kernel run alone: the step's wall time differs).
# Needs ncu and a built build/compare (DEPS_PREFIX set as for make).
set -u -o pipefail
size=e512 prec=bf16 top=40
while [ $# -gt 0 ]; do
  case "$1" in
    --size) size="$2"; shift 2 ;;
    --precision) prec="$2"; shift 2 ;;
    --top) top="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "step_profile: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
ncu_bin=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -n 1)
[ -n "$ncu_bin" ] || { echo "step_profile: ncu not found" >&2; exit 2; }
[ -x build/compare ] || { echo "step_profile: build/compare is missing (make build/compare)" >&2; exit 2; }
csv=$(mktemp)
"$ncu_bin" --clock-control none --metrics gpu__time_duration.sum --csv --print-units base --print-kernel-base function --launch-count 700 \
  build/compare --bench --engines cuda --sizes "$size" --precision "$prec" --repeats 1 --steps 10 --quiet \
  >"$csv" 2>/dev/null
rc=$?
[ $rc -eq 0 ] || { echo "step_profile: ncu exited $rc" >&2; tail -n 5 "$csv" >&2; exit 1; }
python3 - "$csv" "$top" <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
hdr = rows[0]; rows = rows[1:]
iname, ival, iid = hdr.index("Kernel Name"), hdr.index("Metric Value"), hdr.index("ID")
# the second step: the launches after the first Adam up to the second one
names = [r[iname] for r in rows]
adam = [i for i, x in enumerate(names) if "adam" in x]
if len(adam) < 2: sys.exit("step_profile: fewer than two steps profiled")
tot = {}; cnt = collections.Counter(); n = 0
for r in rows[adam[0] + 1: adam[1] + 1]:
    name = r[iname].strip()
    n += 1
    ns = float(r[ival].replace(",", ""))
    tot[name] = tot.get(name, 0) + ns; cnt[name] += 1
s = sum(tot.values())
print(f"one step: {n} kernels, {s/1e3:.1f} us summed")
for name, ns in sorted(tot.items(), key=lambda x: -x[1])[: int(sys.argv[2])]:
    print(f"  {ns/1e3:9.1f} us {cnt[name]:4d}x  {name[:110]}")
PY
