#!/usr/bin/env bash
# usage: scripts/gpu_bench.sh [--full] [--repro N] [--out DIR]
# The benchmark on a GPU machine (docs/BENCHMARKS.md), in one go:
# 1. builds build/compare, with the system's libcjson (libcjson-dev) or,
#    where its headers are missing (a bare GPU machine), the .deb files in
#    .debs/ unpacked into /tmp/deps (DEPS_PREFIX=/tmp/deps);
# 2. --full: the whole table: scalar, cpu and cuda in both precisions with the
#    PyTorch baseline over the sweep (the scalar and cpu engines with a 10 s
#    time budget per size);
# 3. --repro N: N identical runs of cuda fp32 against PyTorch over the sweep,
#    and the spread of each size's speedup over torch-graph across them.
# Tables, traces and logs go to DIR ($OUT, else /tmp/gpu_bench). Needs
# data/names.txt (carry it along: data/ is git-ignored).
set -u -o pipefail
usage() { awk 'NR>1 && !/^#/{exit} NR>1' "$0" | sed 's/^# \{0,1\}//'; }
out="${OUT:-/tmp/gpu_bench}" full=0 repro=0
while [ $# -gt 0 ]; do
  case "$1" in
    --full) full=1; shift ;;
    --repro) [ $# -ge 2 ] || { echo "gpu_bench: --repro needs a count" >&2; exit 2; }; repro="$2"; shift 2 ;;
    --out) [ $# -ge 2 ] || { echo "gpu_bench: --out needs a folder" >&2; exit 2; }; out="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_bench: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$repro" in ''|*[!0-9]*) echo "gpu_bench: --repro needs a whole number, not '$repro'" >&2; exit 2 ;; esac
mkdir -p "$out" || exit 2
# libcjson: the system's headers, else the .deb files of .debs/
deps=$(bash scripts/cjson_deps.sh gpu_bench) || exit 2
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
make -j16 ${deps:+DEPS_PREFIX=$deps} build/compare >"$out/build.log" 2>&1 || { tail -30 "$out/build.log"; exit 1; }
rc=0
if [ "$full" = 1 ]; then
  build/compare --bench --engines scalar,cpu,cuda --sizes sweep --precision both --baseline torch --time-budget 10 \
    --trace "$out/bench-full.json" --markdown "$out/bench-full.md" >"$out/bench-full.log" 2>"$out/bench-full.err"
  r=$?; echo "full sweep: exit $r"; [ $r -eq 0 ] || rc=1
  grep -E '^\| ' "$out/bench-full.md" | cut -c1-230
fi
for i in $(seq 1 "$repro"); do
  build/compare --bench --engines cuda --sizes sweep --precision fp32 --baseline torch --quiet \
    --trace "$out/bench-repro-$i.json" --markdown "$out/bench-repro-$i.md" >"$out/bench-repro-$i.log" 2>&1
  r=$?; echo "repro run $i: exit $r"; [ $r -eq 0 ] || rc=1
done
if [ "$repro" -gt 0 ]; then
  python3 - "$out" "$repro" <<'PY'
import json, sys
out, n = sys.argv[1], int(sys.argv[2])
runs = [json.load(open(f"{out}/bench-repro-{i}.json")) for i in range(1, n + 1)]
print(f"speedup of cuda fp32 over torch-graph fp32 in {n} identical runs (median ms/step ratios):")
for size in [s["name"] for s in runs[0]["sizes"]]:
    sp = []
    for t in runs:
        rows = {r["engine"]: r for r in t["bench"] if r["size"] == size and r["precision"] == "fp32"}
        c, g = rows.get("cuda"), rows.get("torch-graph")
        if c and g and c["ms_per_step_median"] and g["ms_per_step_median"]:
            sp.append(g["ms_per_step_median"] / c["ms_per_step_median"])
    if sp:
        spread = (max(sp) - min(sp)) / min(sp)
        print(f"  {size:6s} " + " ".join(f"{x:.3f}x" for x in sp) + f"   spread {100 * spread:.1f}%")
PY
fi
echo "outputs in $out"
exit $rc
