#!/usr/bin/env bash
# usage: scripts/gpu_session.sh [--out DIR] [--parity-steps N] [--repeats N] [--steps N] [--no-mutants]
#                               [--no-bench] [--bench-only] [--calibrate SECONDS] [--calibrate-only SECONDS]
#                               [--end SECONDS] [--quick]
# Every GPU check and measurement of the CUDA engine in one call, ordered so
# that the timings run alone on the GPU (docs/cuda_backend.md):
# 1. unpacks .debs/*.deb into /tmp/deps, builds build/ (and build-prof/, the
#    fused step with per-phase cycle counts); the GPU mutants start building
#    in their own copies meanwhile (scripts/mutants.sh), their checks held
#    back until the timings are done (MUTANTS_GATE);
# 2. make test-gpu (test_gpu: kernels, both attention implementations, the
#    engine on each path; test_attn_emu), then test_gpu --bench and
#    --attn-bench (old against new kernels, us per call);
# 3. compare --bench against PyTorch (its CUDA graph, torch.compile and eager
#    rows) in the same run at b1, b256, e128 and e512: fp32 with cuda (its own
#    path choice), cuda:layered and the tile-language engines that import here
#    (examples/triton_engine.py, examples/cutile_engine.py); then fp64, bf16
#    (against autocast bf16) and tf32 (TF32 on) with cuda; the SM clock
#    sampled meanwhile; before tf32, where the time goes: the fused step's
#    phase profile at b1 and b256 (build-prof/) and the layered step's
#    kernels at e128 and e512 in fp32 (scripts/step_profile.sh; ncu)
#    (--no-bench: none of the timings of 2 and 3 nor the profiles;
#    --bench-only: the build and 3 alone);
# 4. then side by side: the GPU mutants' checks, make parity BACKEND=cuda
#    (both paths), scripts/outside_gpu_check.sh, scripts/localize_check.sh
#    on both CUDA paths (fp32 and fp64), the Triton engine
#    (tests/triton_engine_check.py, then compare lockstep runs and its
#    planted bugs), compute-sanitizer over the fused and the layered step;
# 5. --calibrate SECONDS: from the build on, beside the checks at a lower
#    priority (nice), the GPU family's calibration runs (scripts/calibrate.py
#    measure --family gpu) until 90 s before SECONDS after the start, then
#    their summary (calibrate.py reduce) to DIR/measured-gpu.json (runs already in
#    build/calibration/raw-gpu are kept: a second call on the same machine
#    continues); --calibrate-only SECONDS: the build and that alone.
# cuTile: where .cutile/ holds its wheel and compiler (scripts/cutile_toolchain.sh
# fetch .cutile; carry .cutile too, about 57 MB), they are installed after the
# build, so that the cuTile engine's checks and bench rows run.
# --quick: for a short lease, the engine and its kernel tests alone: test_gpu,
# localize_check.sh on both paths, a few lockstep runs of each path (the
# token-mean loss in fp64 and fp32 among them; widths 512, blocks 128), the
# Triton engine's check and a lockstep run of it, and the same for the cuTile
# engine where .cutile/ was carried.
# --end SECONDS (570): every check is stopped by then (seconds after the
# start), so that the call ends inside the device's limit.
# Logs, bench traces and tables go to DIR (default $OUT, else
# /tmp/gpu_session) as session.tar.gz (rewritten every minute, so that a call
# cut off early still brings some back); a summary is printed. Exit 1 if a
# check failed. Needs data/names.txt (carry data/ and .debs/ along).
set -u -o pipefail
out="${OUT:-/tmp/gpu_session}" psteps=1000 repeats=3 steps=60 mutants=1 bench=1 calib=0 checks=1 end=570
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --parity-steps) psteps="$2"; shift 2 ;;
    --repeats) repeats="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --no-mutants) mutants=0; shift ;;
    --no-bench) bench=0; shift ;;
    --bench-only) checks=0 mutants=0 bench=1; shift ;;
    --end) end="$2"; shift 2 ;;
    --calibrate) calib="$2"; shift 2 ;;
    --calibrate-only) calib="$2" checks=0 bench=0 mutants=0; shift 2 ;;
    --quick) checks=2 bench=0 mutants=0; shift ;;
    -h|--help) awk 'NR>1 && !/^#/{exit} NR>1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_session: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ -s data/names.txt ] || { echo "gpu_session: data/names.txt is missing (carry data/ along)" >&2; exit 2; }
mkdir -p "$out" /tmp/deps
logs=$(mktemp -d)
# the logs so far, every minute: a call cut off at the device's limit still
# brings back what ran (the final archive replaces it)
( while sleep 60; do
    tar czf "$out/session.tar.gz.part" -C "$logs" --exclude='parity' . 2>/dev/null &&
      mv -f "$out/session.tar.gz.part" "$out/session.tar.gz"
  done ) &
snapshots=$!
trap 'kill $snapshots 2>/dev/null' EXIT
for f in .debs/*.deb; do [ -f "$f" ] && dpkg -x "$f" /tmp/deps; done
export DEPS_PREFIX=/tmp/deps
results=()
step() {   # step NAME LIMIT CMD...: run, keep the log, record the exit status (never past --end)
  local name="$1" limit="$2" t0=$SECONDS
  shift 2
  [ $((end - SECONDS)) -lt "$limit" ] && limit=$((end - SECONDS))
  [ "$limit" -gt 5 ] || limit=5
  timeout "$limit" "$@" >"$logs/$name.log" 2>&1
  local rc=$?
  results+=("$name|$rc|$((SECONDS - t0))")
  echo "=== $name: exit $rc ($((SECONDS - t0)) s)"
  return $rc
}

gate="$logs/timings-running"
touch "$gate"
[ $bench -eq 1 ] || rm -f "$gate"
if [ $mutants -eq 1 ]; then
  (MUTANTS_GATE="$gate" timeout $((end - 25)) nice -n 10 bash scripts/mutants.sh --part gpu --jobs 12 --make-jobs 2 \
    >"$logs/mutants.log" 2>&1; echo "mutants: exit $?" >>"$logs/mutants.log") &
  mpid=$!
fi
targets="all build/test_gpu build/test_attn_emu"
[ $checks -eq 2 ] && targets="build/compare build/libmicrogpt_cuda_engine.so build/test_gpu"
# shellcheck disable=SC2086
step build 240 make -j16 $targets || { tail -n 30 "$logs/build.log"; exit 1; }
if [ -d .cutile ]; then   # cuTile's wheel and compiler (after the build: it unsets CUDA_HOME)
  if cutile_env=$(bash scripts/cutile_toolchain.sh install .cutile /tmp/cutile 2>"$logs/cutile-install.log"); then
    eval "$cutile_env"
    echo "=== cutile: $(python3 -c 'import cuda.tile as ct; print("cuda-tile", ct.__version__)' 2>&1 | tail -n 1)"
  else
    echo "=== cutile: not installed: $(tail -n 1 "$logs/cutile-install.log")"
  fi
fi
if [ "$calib" != 0 ]; then   # until $calib seconds after this script started; below the checks' priority
  # the summary (calibrate.py reduce, below) takes about a second per 5 runs
  # (297 runs: 65 s): the runs stop 90 s before --calibrate's time
  left=$((calib - SECONDS - 90))
  mkdir -p build/calibration/raw-gpu
  ( if [ $left -gt 30 ]; then
      step calibrate $((left + 15)) nice -n 19 python3 scripts/calibrate.py measure --family gpu --jobs 15 \
        --deadline "$left" --python python3
      echo $? >"$logs/calibrate.rc"
    else
      echo "=== calibrate: no time left (--calibrate $calib, $SECONDS s gone)"; echo 1 >"$logs/calibrate.rc"
    fi ) &
  cpid=$!
fi
profile() {
  wait "$ppid" || { tail -n 20 "$logs/build-prof.log"; return 1; }
  local z
  for z in b1 b256; do
    echo "--- fused step profile, fp32 $z"
    build-prof/compare --bench --engines cuda --sizes "$z" --precision fp32 --repeats 1 --steps 40 --quiet 2>&1 |
      grep -E '^fused profile|^  [a-z_]+ +[0-9]|^\| '"$z"
  done
}
if [ $bench -eq 1 ]; then
  (make -j8 BUILD=build-prof FUSED_PROFILE=1 build-prof/compare build-prof/libmicrogpt_cuda_engine.so \
    >"$logs/build-prof.log" 2>&1) &
  ppid=$!
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$logs/gpu.txt"
[ $checks -eq 1 ] && [ $bench -eq 1 ] && step test-gpu 240 make test-gpu   # alone before the timings

if [ $bench -eq 1 ]; then
  if [ $checks -eq 1 ]; then
    step kernel-bench 60 build/test_gpu --bench
    step attn-bench 60 build/test_gpu --attn-bench 20
  fi
  nvidia-smi --query-gpu=timestamp,clocks.sm,utilization.gpu --format=csv,noheader -lms 200 >"$logs/clocks.csv" 2>&1 &
  smi=$!
  tiles=""   # the tile-language engines that can run here, timed beside ours in fp32
  for t in triton:triton cutile:cuda.tile; do
    python3 -c "import torch, ${t#*:}; assert torch.cuda.is_available()" 2>/dev/null &&
      tiles="$tiles,exec:python3 examples/${t%%:*}_engine.py"
  done
  sizes=b1,b256,e128,e512
  B=(build/compare --bench --baseline torch --repeats "$repeats" --steps "$steps" --quiet --sizes "$sizes")
  step bench-fp32 260 "${B[@]}" --precision fp32 --engines "cuda,cuda:layered$tiles" \
    --trace "$logs/bench-fp32.json" --markdown "$logs/bench-fp32.md"
  bench_cuda() {   # bf16 against torch autocast bf16, tf32 against TF32 on
    step bench-$1 150 "${B[@]}" --precision $1 --engines cuda --trace "$logs/bench-$1.json" \
      --markdown "$logs/bench-$1.md"
  }
  bench_cuda bf16
  bench_cuda fp64
  # where the time goes: the fused step's phases (b1, b256), the layered step's kernels (e128, e512)
  profile >"$logs/profile.log" 2>&1
  for z in e128 e512; do
    step kernels-$z 60 bash scripts/step_profile.sh --size $z --precision fp32 --top 15
  done
  bench_cuda tf32   # last: the first to be cut by --end
  python3 scripts/bench_early_steps.py "$logs"/bench-*.json --steps 2 >"$logs/early-steps.txt" 2>&1
  kill $smi 2>/dev/null
fi
rm -f "$gate"   # the mutants' checks may start

sanitize() {
  local cs rc=0
  cs=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null | head -n 1)
  [ -n "$cs" ] || { echo "compute-sanitizer not found: skipped"; return 0; }
  for tool in memcheck initcheck; do
    for e in cuda:fused cuda:layered; do
      "$cs" --tool $tool --error-exitcode 9 build/compare --engines "scalar,$e" --steps 3 --batch 4 --n-kv-head 2 \
        --quiet || rc=1
      "$cs" --tool $tool --error-exitcode 9 build/compare --engines "scalar,$e" --steps 2 --batch 1 --precision fp32 \
        --quiet || rc=1
    done
  done
  return $rc
}
localize() {   # a fault planted in each op, named as that op, on both CUDA paths (four at a time)
  local rc=0 e p pids=()
  for e in cuda:layered cuda:fused; do
    for p in fp32 fp64; do
      bash scripts/localize_check.sh --engine $e --precision $p >"$logs/localize-${e#cuda:}-$p.log" 2>&1 &
      pids+=($!)
    done
  done
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  cat "$logs"/localize-*.log
  return $rc
}
quick_lockstep() {   # a few short lockstep runs of each path against the oracle
  local rc=0 e long128=/tmp/long128.txt
  bash scripts/long_data.sh data/names.txt $long128 12 >/dev/null
  local w="--init-std 0.02 --lr 0.001"
  for e in cuda:fused cuda:layered; do
    build/compare --engines scalar,$e --steps 100 --batch 4 --n-layer 2 --n-kv-head 2 --quiet || rc=1
    build/compare --engines scalar,$e --steps 100 --batch 4 --n-layer 2 --n-kv-head 2 --precision fp32 --quiet || rc=1
    for p in fp64 fp32; do   # the token-mean loss (F.cross_entropy's) on each path
      build/compare --engines scalar,$e --steps 100 --batch 4 --loss token-mean --precision $p --quiet || rc=1
    done
  done
  # block 128 at head size 64: the layered path only (the fused step's shared memory holds no such model)
  build/compare --engines scalar,cuda:layered --steps 5 --precision fp32 --data $long128 --block-size 128 --n-embd 64 \
    --n-head 1 --batch 2 $w --quiet || rc=1
  build/compare --engines scalar,cuda:layered --steps 2 --precision fp32 --n-embd 512 --n-head 8 --batch 1 $w --quiet || rc=1
  build/compare --engines scalar,cuda:layered --steps 50 --precision bf16 --batch 4 --quiet || rc=1
  return $rc
}
quick_tile() {   # quick_tile triton|cutile: a tile-language engine's check and a lockstep run of it
  local rc=0
  python3 "tests/$1_engine_check.py" || rc=1
  build/compare --engines "scalar,exec:python3 examples/$1_engine.py" --steps 100 --precision fp32 --batch 2 \
    --n-layer 2 --n-head 4 --n-kv-head 2 --quiet --exec-timeout 120 || rc=1
  return $rc
}
export -f sanitize localize quick_lockstep quick_tile
export logs
bg() {   # bg NAME LIMIT CMD...: step in the background; its status goes to NAME.rc
  local name="$1"
  (step "$@"; echo $? >"$logs/$name.rc") &
}
bgs=()
if [ $checks -eq 2 ]; then
  bg test-gpu 240 build/test_gpu
  bgs+=($!)
  bg localize 240 bash -c localize
  bgs+=($!)
  bg lockstep 240 bash -c quick_lockstep
  bgs+=($!)
  bg triton 240 bash -c 'quick_tile triton'
  bgs+=($!)
  quick="test-gpu localize lockstep triton"
  if [ -d .cutile ]; then
    bg cutile 240 bash -c 'quick_tile cutile'
    bgs+=($!)
    quick="$quick cutile"
  fi
  wait "${bgs[@]}"
  for n in $quick; do results+=("$n|$(cat "$logs/$n.rc" 2>/dev/null || echo 1)|-"); done
fi
if [ $checks -eq 1 ]; then
  if [ $bench -eq 0 ]; then bg test-gpu 240 make test-gpu; bgs+=($!); fi
  bg parity-layered 360 bash scripts/parity.sh --backend cuda --path layered --steps "$psteps" --jobs 6
  bgs+=($!)
  bg parity-auto 360 bash scripts/parity.sh --backend cuda --path auto --steps "$psteps" --jobs 6
  bgs+=($!)
  parts=cuda,torch,triton; [ -d .cutile ] && parts=$parts,cutile   # cuTile carried: it must run
  bg outside 450 bash scripts/outside_gpu_check.sh --python python3 --steps 50 --only $parts
  bgs+=($!)
  bg localize 240 bash -c localize
  bgs+=($!)
  step sanitizer 200 bash -c sanitize
  wait "${bgs[@]}"
  names="parity-layered parity-auto outside localize"
  [ $bench -eq 0 ] && names="test-gpu $names"
  for n in $names; do results+=("$n|$(cat "$logs/$n.rc" 2>/dev/null || echo 1)|-"); done
fi
if [ $mutants -eq 1 ]; then
  wait "$mpid"
  if ! grep -q '^mutation kit' "$logs/mutants.log"; then   # stopped at --end: the verdicts it reached
    echo "mutants stopped at --end; the verdicts reached:" >>"$logs/mutants.log"
    cat build/mutants/*.result 2>/dev/null | cut -d'|' -f2- >>"$logs/mutants.log"
  fi
  rc=1; grep -q '^mutants: every mutant caught' "$logs/mutants.log" && rc=0
  results+=("mutants|$rc|-")
fi
if [ "$calib" != 0 ]; then
  wait "$cpid"
  results+=("calibrate|$(cat "$logs/calibrate.rc" 2>/dev/null || echo 1)|-")
  # the runs are too large to bring back (~2 MB each): their summary is not
  timeout $((end + 25 - SECONDS > 10 ? end + 25 - SECONDS : 10)) \
    python3 scripts/calibrate.py reduce --family gpu --out "$out/measured-gpu.json" &&
    echo "calibration summary: $out/measured-gpu.json"
fi

echo
echo "=== summary"
cat "$logs/gpu.txt"
if [ $checks -ge 1 ]; then
  grep -h -E '^test_gpu: |^test_attn_emu|PASS$|FAIL' "$logs/test-gpu.log" | grep -v ' PASS$' | tail -n 12
fi
if [ $checks -eq 2 ]; then
  grep -E 'WRONG|^localize_check' "$logs/localize.log" | cut -c1-170
  grep -E '^(PASS|FAIL)' "$logs/lockstep.log" | cut -c1-200
  tail -n 12 "$logs/triton.log" | cut -c1-200
  [ -f "$logs/cutile.log" ] && tail -n 12 "$logs/cutile.log" | cut -c1-200
fi
if [ $bench -eq 1 ]; then
  [ $checks -eq 1 ] && tail -n 30 "$logs/kernel-bench.log" "$logs/attn-bench.log" | cut -c1-170
  for f in bench-fp32 bench-bf16 bench-fp64 bench-tf32; do
    grep -E '^(\| |Machine)|compiled in' "$logs/$f.log" | cut -c1-230
  done
  grep '^largest' "$logs/early-steps.txt"
  echo "SM clock during the benches (MHz, samples): $(awk -F', ' '{print $2}' "$logs/clocks.csv" | sort | uniq -c |
    sort -rn | head -n 5 | tr -s ' ' | tr '\n' ';')"
  [ -f "$logs/profile.log" ] && cat "$logs/profile.log"
  for z in e128 e512; do [ -f "$logs/kernels-$z.log" ] && { echo "--- kernels of one fp32 step, $z"; head -n 20 "$logs/kernels-$z.log"; }; done
fi
if [ $checks -eq 1 ]; then
  for n in parity-layered parity-auto; do grep -A 40 '^parity suite' "$logs/$n.log" | cut -c1-170; done
  grep -E '^>>>|^(PASS|FAIL)|ratio rule: exec|SKIP|Elapsed|Maximum|^triton|first divergence' "$logs/outside.log" |
    cut -c1-200
  grep -E 'WRONG|^localize_check' "$logs/localize.log" | cut -c1-170
  tail -n 5 "$logs/sanitizer.log"
fi
[ -f "$logs/mutants.log" ] && sed -n '/caught by/,$p;/stopped at --end/,$p' "$logs/mutants.log" | cut -c1-260
[ -f "$logs/calibrate.log" ] && grep -E -v ' pass$' "$logs/calibrate.log" | tail -n 40
failed=0
printf '%-18s %-8s %s\n' step result seconds
for r in "${results[@]}"; do
  IFS='|' read -r name rc secs <<<"$r"
  v=PASS; [ "$rc" -ne 0 ] && { v="FAIL($rc)"; case $name in kernel-bench|attn-bench|kernels-*) ;; *) failed=1 ;; esac; }
  printf '%-18s %-8s %s\n' "$name" "$v" "$secs"
done
rm -f "$logs"/*.json.tmp* 2>/dev/null
kill $snapshots 2>/dev/null; wait $snapshots 2>/dev/null; rm -f "$out/session.tar.gz.part"
tar czf "$out/session.tar.gz" -C "$logs" --exclude='parity' . && echo "logs: $out/session.tar.gz"
[ $failed -eq 0 ] && echo "gpu_session: all passed" || echo "gpu_session: FAILED"
exit $failed
