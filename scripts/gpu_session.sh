#!/usr/bin/env bash
# Every GPU check and measurement of the CUDA engine in one call, ordered so
# that the timings run alone on the GPU (docs/cuda_backend.md):
#   scripts/gpu_session.sh [--out DIR] [--parity-steps N] [--repeats N] [--steps N] [--no-mutants]
# 1. unpacks .debs/*.deb into /tmp/deps, builds build/ (and build-prof/, the
#    fused step with per-phase cycle counts); the GPU mutants start building
#    in their own copies meanwhile (scripts/mutants.sh), their checks held
#    back until the timings are done (MUTANTS_GATE);
# 2. make test-gpu (test_gpu: kernels, both attention implementations, the
#    engine on each path; test_attn_emu), then test_gpu --bench and
#    --attn-bench (old against new kernels, us per call);
# 3. compare --bench against PyTorch in the same run, fp32 and fp64: b1, b32,
#    b256 with cuda (its own path choice) and cuda:layered; e64, e128, e512
#    with cuda; bf16 and tf32 at b1, b256, e128, e512 against PyTorch
#    autocast bf16 / TF32; the SM clock sampled meanwhile;
# 4. then side by side: the GPU mutants' checks, make parity BACKEND=cuda
#    (both paths), scripts/outside_gpu_check.sh, compute-sanitizer over the
#    fused and the layered step, and the fused step's phase profile at b1
#    and b256.
# Logs, bench traces and tables go to DIR (default $OUT, else
# /tmp/gpu_session) as session.tar.gz; a summary is printed. Exit 1 if a
# check failed. Needs data/names.txt (carry data/ and .debs/ along).
set -u -o pipefail
out="${OUT:-/tmp/gpu_session}" psteps=1000 repeats=3 steps=60 mutants=1
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --parity-steps) psteps="$2"; shift 2 ;;
    --repeats) repeats="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --no-mutants) mutants=0; shift ;;
    -h|--help) awk 'NR>1 && !/^#/{exit} NR>1' "$0"; exit 0 ;;
    *) echo "gpu_session: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ -s data/names.txt ] || { echo "gpu_session: data/names.txt is missing (carry data/ along)" >&2; exit 2; }
mkdir -p "$out" /tmp/deps
logs=$(mktemp -d)
for f in .debs/*.deb; do [ -f "$f" ] && dpkg -x "$f" /tmp/deps; done
export DEPS_PREFIX=/tmp/deps
results=()
step() {   # step NAME LIMIT CMD...: run, keep the log, record the exit status
  local name="$1" limit="$2" t0=$SECONDS
  shift 2
  timeout "$limit" "$@" >"$logs/$name.log" 2>&1
  local rc=$?
  results+=("$name|$rc|$((SECONDS - t0))")
  echo "=== $name: exit $rc ($((SECONDS - t0)) s)"
  return $rc
}

gate="$logs/timings-running"
touch "$gate"
if [ $mutants -eq 1 ]; then
  (MUTANTS_GATE="$gate" timeout 540 bash scripts/mutants.sh --part gpu --jobs 12 --make-jobs 2 \
    >"$logs/mutants.log" 2>&1; echo "mutants: exit $?" >>"$logs/mutants.log") &
  mpid=$!
fi
step build 240 make -j16 all build/test_gpu build/test_attn_emu || { tail -n 30 "$logs/build.log"; exit 1; }
(make -j8 BUILD=build-prof FUSED_PROFILE=1 build-prof/compare build-prof/libmicrogpt_cuda_engine.so \
  >"$logs/build-prof.log" 2>&1) &
ppid=$!
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$logs/gpu.txt"
step test-gpu 240 make test-gpu
step kernel-bench 60 build/test_gpu --bench
step attn-bench 60 build/test_gpu --attn-bench 20

nvidia-smi --query-gpu=timestamp,clocks.sm,utilization.gpu --format=csv,noheader -lms 200 >"$logs/clocks.csv" 2>&1 &
smi=$!
B=(build/compare --bench --baseline torch --precision both --repeats "$repeats" --steps "$steps" --quiet)
step bench-small 200 "${B[@]}" --engines cuda,cuda:layered --sizes b1,b32,b256 \
  --trace "$logs/bench-small.json" --markdown "$logs/bench-small.md"
step bench-large 300 "${B[@]}" --engines cuda --sizes e64,e128,e512 \
  --trace "$logs/bench-large.json" --markdown "$logs/bench-large.md"
for p in bf16 tf32; do   # against torch autocast bf16 / TF32 on
  step bench-$p 200 build/compare --bench --baseline torch --precision $p --repeats "$repeats" --steps "$steps" \
    --quiet --engines cuda --sizes b1,b256,e128,e512 --trace "$logs/bench-$p.json" --markdown "$logs/bench-$p.md"
done
python3 scripts/bench_early_steps.py "$logs"/bench-*.json --steps 2 >"$logs/early-steps.txt" 2>&1
kill $smi 2>/dev/null
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
profile() {
  wait "$ppid" || { tail -n 20 "$logs/build-prof.log"; return 1; }
  local z
  for z in b1 b256; do
    echo "--- fused step profile, fp32 $z"
    build-prof/compare --bench --engines cuda --sizes "$z" --precision fp32 --repeats 1 --steps 40 --quiet 2>&1 |
      grep -E '^fused profile|^  [a-z_]+ +[0-9]|^\| '"$z"
  done
}
export -f sanitize profile
export logs ppid
bg() {   # bg NAME LIMIT CMD...: step in the background; its status goes to NAME.rc
  local name="$1"
  (step "$@"; echo $? >"$logs/$name.rc") &
}
bg parity-layered 300 bash scripts/parity.sh --backend cuda --path layered --steps "$psteps" --jobs 6
p1=$!
bg parity-auto 300 bash scripts/parity.sh --backend cuda --path auto --steps "$psteps" --jobs 6
p2=$!
bg outside 200 bash scripts/outside_gpu_check.sh --python python3 --steps 50
p3=$!
step sanitizer 200 bash -c sanitize
profile >"$logs/profile.log" 2>&1
wait $p1 $p2 $p3
[ $mutants -eq 1 ] && wait "$mpid"
for n in parity-layered parity-auto outside; do results+=("$n|$(cat "$logs/$n.rc" 2>/dev/null || echo 1)|-"); done
if [ $mutants -eq 1 ]; then
  rc=1; grep -q '^mutants: every mutant caught' "$logs/mutants.log" && rc=0
  results+=("mutants|$rc|-")
fi

echo
echo "=== summary"
cat "$logs/gpu.txt"
grep -h -E '^test_gpu: |^test_attn_emu|PASS$|FAIL' "$logs/test-gpu.log" | grep -v ' PASS$' | tail -n 12
tail -n 30 "$logs/kernel-bench.log" "$logs/attn-bench.log" | cut -c1-170
for f in bench-small bench-large bench-bf16 bench-tf32; do grep -E '^(\| |Machine)' "$logs/$f.log" | cut -c1-190; done
grep '^largest' "$logs/early-steps.txt"
echo "SM clock during the benches (MHz, samples): $(awk -F', ' '{print $2}' "$logs/clocks.csv" | sort | uniq -c |
  sort -rn | head -n 5 | tr -s ' ' | tr '\n' ';')"
cat "$logs/profile.log"
for n in parity-layered parity-auto; do grep -A 40 '^parity suite' "$logs/$n.log" | cut -c1-170; done
grep -E '^>>>|^(PASS|FAIL)|ratio rule: exec|SKIP|Elapsed|Maximum' "$logs/outside.log" | cut -c1-170
grep -E 'caught by|^mutation kit|SURVIVED|ERROR|FAILS|^mutants:' "$logs/mutants.log" 2>/dev/null | cut -c1-170
tail -n 5 "$logs/sanitizer.log"
failed=0
printf '%-18s %-8s %s\n' step result seconds
for r in "${results[@]}"; do
  IFS='|' read -r name rc secs <<<"$r"
  v=PASS; [ "$rc" -ne 0 ] && { v="FAIL($rc)"; case $name in kernel-bench|attn-bench) ;; *) failed=1 ;; esac; }
  printf '%-18s %-8s %s\n' "$name" "$v" "$secs"
done
rm -f "$logs"/*.json.tmp* 2>/dev/null
tar czf "$out/session.tar.gz" -C "$logs" --exclude='parity' . && echo "logs: $out/session.tar.gz"
[ $failed -eq 0 ] && echo "gpu_session: all passed" || echo "gpu_session: FAILED"
exit $failed
