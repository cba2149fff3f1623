#!/usr/bin/env bash
# The CUDA engine's speed measurements in one go, on a GPU machine
# (docs/BENCHMARKS.md, docs/cuda_backend.md):
#   scripts/gpu_speed.sh [--out DIR] [--precision fp32|fp64|both] [--repeats N] [--steps N] [--no-profile]
# 1. builds build/ (and build-prof/, the fused step with per-phase cycle
#    counts) with DEPS_PREFIX=/tmp/deps after unpacking .debs/*.deb;
# 2. compare --bench --sizes sweep --baseline torch (cuda picks its path;
#    cuda:layered beside it at the sizes the fused step takes), as Markdown
#    and a trace, with the SM clock sampled by nvidia-smi during the run;
#    e128 and e512 again with MICROGPT_CUBLAS_MATH=default;
# 3. unless --no-profile: the fused step's per-phase cycles at b1 and b256
#    (build-prof), and ncu's per-kernel times of the layered path at e128
#    and e512 (fp32, 3 timed steps).
# Everything goes to DIR (default $OUT, else /tmp/gpu_speed) as speed.tar.gz;
# the tables are printed. Needs data/names.txt.
set -u -o pipefail
out="${OUT:-/tmp/gpu_speed}" prec=both repeats=5 steps=100 profile=1
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --precision) prec="$2"; shift 2 ;;
    --repeats) repeats="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --no-profile) profile=0; shift ;;
    -h|--help) awk 'NR>1 && !/^#/{exit} NR>1' "$0"; exit 0 ;;
    *) echo "gpu_speed: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$prec" in fp32|fp64|both) ;; *) echo "gpu_speed: --precision must be fp32, fp64 or both" >&2; exit 2 ;; esac
[ -s data/names.txt ] || { echo "gpu_speed: data/names.txt is missing (carry data/ along)" >&2; exit 2; }
mkdir -p "$out" /tmp/deps
logs=$(mktemp -d)
for f in .debs/*.deb; do [ -f "$f" ] && dpkg -x "$f" /tmp/deps; done
mk=(make -j16 DEPS_PREFIX=/tmp/deps)
"${mk[@]}" build/compare build/libmicrogpt_cuda_engine.so >"$logs/build.log" 2>&1 ||
  { tail -n 30 "$logs/build.log"; exit 1; }
[ $profile -eq 1 ] && { "${mk[@]}" BUILD=build-prof FUSED_PROFILE=1 build-prof/compare \
  build-prof/libmicrogpt_cuda_engine.so >"$logs/build-prof.log" 2>&1 & }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$logs/gpu.txt"

# the sweep; the SM clock every 200 ms meanwhile
nvidia-smi --query-gpu=timestamp,clocks.sm,utilization.gpu --format=csv,noheader -lms 200 >"$logs/clocks.csv" 2>&1 &
smi=$!
build/compare --bench --engines cuda,cuda:layered --sizes b1,b32,b256 --precision "$prec" --baseline torch \
  --repeats "$repeats" --steps "$steps" --quiet --trace "$logs/bench-small.json" --markdown "$logs/bench-small.md" \
  >"$logs/bench-small.log" 2>&1
rc1=$?
build/compare --bench --engines cuda --sizes e64,e128,e512 --precision "$prec" --baseline torch \
  --repeats "$repeats" --steps "$steps" --quiet --trace "$logs/bench-large.json" --markdown "$logs/bench-large.md" \
  >"$logs/bench-large.log" 2>&1
rc2=$?
# cuBLAS's math mode: pedantic (the engine's default) against default (more kernels, fp64 tensor cores)
MICROGPT_CUBLAS_MATH=default build/compare --bench --engines cuda --sizes e128,e512 --precision "$prec" \
  --repeats "$repeats" --steps "$steps" --quiet --trace "$logs/bench-mathdefault.json" >"$logs/bench-mathdefault.log" 2>&1
kill $smi 2>/dev/null
echo "--- the same with MICROGPT_CUBLAS_MATH=default:"
grep -E '^\| e' "$logs/bench-mathdefault.log"
for f in "$logs"/bench-small.log "$logs"/bench-large.log; do
  grep -E '^(\||Machine|- \*\*)' "$f"
  grep -E 'FAIL|rror' "$f" | head -n 5
done
echo "SM clock during the benches (MHz): $(awk -F', ' '{print $2}' "$logs/clocks.csv" | sort | uniq -c | sort -rn | head -n 6 | tr '\n' ';')"

if [ $profile -eq 1 ]; then
  wait
  for z in b1 b256; do
    echo "--- fused step profile, fp32 $z"
    build-prof/compare --bench --engines cuda --sizes "$z" --precision fp32 --repeats 1 --steps 40 --quiet \
      >"$logs/prof-$z.log" 2>&1
    grep -E '^fused profile|^  [a-z_]+ ' "$logs/prof-$z.log"
    grep -E '^\| '"$z" "$logs/prof-$z.log"
  done
  ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -n 1)
  if [ -n "$ncu" ]; then
    for z in e128 e512; do
      echo "--- ncu, layered fp32 $z (per kernel: calls, mean us)"
      "$ncu" --clock-control none --metrics gpu__time_duration.sum --print-summary per-kernel \
        build/compare --bench --engines cuda --sizes "$z" --precision fp32 --steps 4 --repeats 1 --warmup 1 \
        >"$logs/ncu-$z.txt" 2>&1
      python3 - "$logs/ncu-$z.txt" <<'EOF'
import re, sys
rows, name = [], None
for line in open(sys.argv[1]):
    m = re.match(r"\s+(\S.*?) \(\d+, \d+, \d+\)x\(\d+, \d+, \d+\).*Invocations (\d+)", line)
    if m:
        name, calls = m.group(1), int(m.group(2))
        continue
    m = re.match(r"\s+gpu__time_duration.sum\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", line)
    if m and name:
        scale = {"ns": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}.get(m.group(1), 1.0)
        rows.append((calls * float(m.group(4)) * scale, calls, float(m.group(4)) * scale, name[:110]))
        name = None
tot = sum(r[0] for r in rows)
for r in sorted(rows, reverse=True)[:14]:
    print("  %8.1f us %5.1f%%  %4d x %8.2f us  %s" % (r[0], 100 * r[0] / tot, r[1], r[2], r[3]))
print("  total %.1f us over the profiled calls" % tot)
EOF
    done
  fi
fi
tar czf "$out/speed.tar.gz" -C "$logs" . && echo "logs and traces: $out/speed.tar.gz"
[ $rc1 -eq 0 ] && [ $rc2 -eq 0 ]
