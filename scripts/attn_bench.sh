#!/usr/bin/env bash
# usage: scripts/attn_bench.sh [--calls N] [--test] [--ncu]
# The attention kernels timed on a GPU machine, old (rows: one warp per row)
# against new (tiled: shared memory), in one go:
# 1. builds build/test_gpu, with the system's libcjson (libcjson-dev) or,
#    where its headers are missing (a bare GPU machine), the .deb files in
#    .debs/ unpacked into /tmp/deps (DEPS_PREFIX=/tmp/deps);
# 2. --test: runs build/test_gpu first (every kernel against the CPU
#    reference, both attention implementations included);
# 3. build/test_gpu --attn-bench N: us per call of attention_forward and
#    attention_backward (its two kernels together) with CUDA events, at
#    e512 (B 64, T 64, 8 heads of 64), e128 (B 256, T 16, 4 heads of 32),
#    e16 (B 256, T 16, 4 heads of 4) and e512 with 2 kv heads, fp32 then
#    fp64; the tiled results are checked against the rows ones;
# 4. --ncu: the same under ncu (if present), one call each, for the time
#    of each kernel apart (forward, dq, dkv).
# Exits 1 if a check fails, 2 if the build fails or there is no GPU.
set -u -o pipefail
usage() { awk 'NR>1 && !/^#/{exit} NR>1' "$0" | sed 's/^# \{0,1\}//'; }
calls=20 test=0 ncu=0
while [ $# -gt 0 ]; do
  case "$1" in
    --calls) [ $# -ge 2 ] || { echo "attn_bench: --calls needs a number" >&2; exit 2; }; calls="$2"; shift 2 ;;
    --test) test=1; shift ;;
    --ncu) ncu=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "attn_bench: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.." || exit 2
# libcjson: the system's headers, else the .deb files of .debs/
deps=$(bash scripts/cjson_deps.sh attn_bench) || exit 2
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader || { echo "attn_bench: no GPU (nvidia-smi failed)" >&2; exit 2; }
make -j16 ${deps:+DEPS_PREFIX=$deps} build/test_gpu >/tmp/attn_bench_build.log 2>&1 ||
  { tail -30 /tmp/attn_bench_build.log; echo "attn_bench: the build failed (/tmp/attn_bench_build.log)" >&2; exit 2; }
rc=0
if [ $test = 1 ]; then
  build/test_gpu || rc=1
fi
build/test_gpu --attn-bench "$calls" || rc=1
if [ $ncu = 1 ]; then
  ncu_bin=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  if [ -n "$ncu_bin" ]; then
    # per size, each attention kernel's time (ncu's per-kernel summary over
    # its launches: 3 warm-up calls and one timed, per path and precision)
    for z in e512 e128 e16 gqa; do
      echo "--- ncu, $z"
      "$ncu_bin" --clock-control none --kernel-name regex:attention --metrics gpu__time_duration.sum \
        --print-summary per-kernel build/test_gpu --attn-bench 1 --attn-size "$z" >"/tmp/attn_bench_ncu_$z.txt" 2>&1 ||
        { rc=1; tail -5 "/tmp/attn_bench_ncu_$z.txt"; continue; }
      grep -E 'attention_|gpu__time_duration' "/tmp/attn_bench_ncu_$z.txt" | cut -c1-160
    done
  else
    echo "attn_bench: ncu not found; per-kernel times skipped"
  fi
fi
exit $rc
