#!/usr/bin/env bash
# usage: scripts/mutants.sh [--part cpu|compare|gpu|all] [--jobs N] [--make-jobs N] [--keep] [--build-only]
#                           [NAME...]
# The mutation kit (`make mutants`, docs/parity.md): apply each planted bug of
# mutants/*.patch, one at a time, to a scratch copy of the tree under
# build/mutants/ (the real tree is never modified), rebuild what the checks
# need, run the checks, fast ones first, and stop at the first that fails.
# Prints a table: mutant, caught by which check, where (step or test).
# --part cpu (default): mutants of the CPU engine, the scalar engine and
# common/, checked against the CPU tensor engine, and of the comparator's own
# rules (compare/), checked by its test suites and calibrate.py check (no GPU
# needed); compare: those of the comparator alone; gpu: the CUDA kernels,
# checked with --engines scalar,cuda and build/test_gpu (needs a GPU and
# nvcc); all: every one. A GPU mutant whose header has "# emu:" (one in the
# code the fused step runs) is in the CPU part too, checked there by
# build/test_fused_emu (fused.cu's kernel run on the CPU,
# tests/test_fused_emu.cc; a C++20 compiler, no nvcc). A mutant that survives every check fails the
# kit (exit 1). "harmless-*" mutants change the arithmetic but not the math
# (a reordered sum, a softmax without the max subtracted): they must pass
# every check, or the checks are too strict; they are reported apart.
# --build-only: apply and build each mutant, run no check (e.g. the GPU
# part on a machine with nvcc but no GPU). --keep: keep each mutant's copy.
# --jobs N: N mutants at a time, each in its own copy (default 1);
# --make-jobs N: make -jN for each build (default 2). MUTANTS_GATE=FILE:
# each mutant's checks wait while FILE exists (its build does not).
set -u
usage() { awk 'NR>1 && !/^#/{exit} NR>1' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "mutants: $*" >&2; exit 2; }
part=cpu keep=0 build_only=0 only=() jobs=1 make_jobs=2
while [ $# -gt 0 ]; do
  case "$1" in
    --part) [ $# -ge 2 ] || die "--part needs a value (cpu, compare, gpu or all)"; part="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    --jobs)
      case "${2:-}" in ''|*[!0-9]*|0) die "--jobs needs a whole number >= 1" ;; esac
      jobs="$2"; shift 2 ;;
    --make-jobs)
      case "${2:-}" in ''|*[!0-9]*|0) die "--make-jobs needs a whole number >= 1" ;; esac
      make_jobs="$2"; shift 2 ;;
    --build-only) build_only=1; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) die "unknown argument '$1' (see --help)" ;;
    *) only+=("$1"); shift ;;
  esac
done
case "$part" in cpu|compare|gpu|all) ;; *) die "--part must be cpu, compare, gpu or all, not '$part'" ;; esac
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root" || exit 2
[ -s data/names.txt ] || die "data/names.txt is missing: run make data (or copy names.txt there)"
command -v git >/dev/null || die "git is not installed (apt-get install git): it applies the patches"

# the mutants of the part(s) asked for
patches=()
for p in mutants/*.patch; do
  n=$(basename "$p" .patch)
  pp=$(sed -n 's/^# part: //p' "$p")
  [ "$part" = all ] || [ "$pp" = "$part" ] || { [ "$part" = cpu ] && [ "$pp" = compare ]; } ||
    { [ "$part" = cpu ] && grep -q '^# emu: ' "$p"; } || continue
  if [ ${#only[@]} -gt 0 ]; then
    hit=0; for o in "${only[@]}"; do [ "$o" = "$n" ] && hit=1; done
    [ $hit -eq 1 ] || continue
  fi
  patches+=("$p")
done
[ ${#patches[@]} -gt 0 ] || die "no mutants match (part $part${only:+, names ${only[*]}})"
# every mutant of every part must still apply to the tree as it is (so that a
# CPU-only run, as in CI, notices a GPU mutant left stale by an edit)
stale=()
for p in mutants/*.patch; do git apply --check "$p" 2>/dev/null || stale+=("$(basename "$p" .patch)"); done
[ ${#stale[@]} -eq 0 ] || die "these mutants no longer apply to the tree (regenerate them): ${stale[*]}"

# the copy's own (mutated) CUDA plugin, next to its build/compare
unset MICROGPT_CUDA_ENGINE
cuda=0
if [ "$part" = gpu ] || [ "$part" = all ]; then
  cuda=1
  [ $build_only -eq 1 ] || { command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; } ||
    die "--part $part needs a GPU (nvidia-smi finds none); run --part cpu here"
fi
work="build/mutants"
base="$work/base"
# The Criterion tests (test_shared, test_golden) check common/ and the scalar
# engine; --part gpu (CUDA kernels only) needs neither, nor Criterion, which
# the GPU machine lacks.
targets="build/compare build/microgpt build/trace"
[ "$part" = gpu ] || targets="$targets build/tests/test_shared build/tests/test_golden build/tests/test_lowp build/tests/test_cpu_engine build/tests/test_cpu_layers build/test_fused_emu"
# the comparator's mutants are checked by the suites that test its rules
compare_tests="test_tolerance test_bounds test_lockstep test_compare test_mixed test_bench test_against test_record"
[ "$part" = gpu ] || for t in $compare_tests; do targets="$targets build/tests/$t"; done
[ $cuda -eq 1 ] && targets="$targets build/test_gpu build/libmicrogpt_cuda_engine.so"

# A clean copy of the tree (tracked and untracked, not ignored files) with
# its own build; each mutant starts from a copy of it and rebuilds only what
# its patch touches.
rm -rf "$work"
mkdir -p "$base/data" || die "cannot create $base"
git ls-files -co --exclude-standard -z | while IFS= read -r -d '' f; do
  [ -f "$f" ] && { mkdir -p "$base/$(dirname "$f")"; cp -p "$f" "$base/$f"; }
done
cp -p data/names.txt "$base/data/"
echo "mutants: building the unmutated copy in $base (CUDA=$cuda)"
# shellcheck disable=SC2086
make -C "$base" -j"$make_jobs" CUDA=$cuda BUILD=build $targets >"$work/base.log" 2>&1 ||
  { tail -n 20 "$work/base.log"; die "the unmutated tree does not build (see $work/base.log)"; }
bash scripts/long_data.sh data/names.txt "$base/data/long.txt"

# name | command (run in the copy; $B is the backend). Fast and broad first;
# then the shapes each kernel's parameters need; then the shared-code tests.
C="build/compare --engines scalar,\$B --quiet"
checks=(
  "lockstep-fp64|$C --steps 4 --batch 3 --samples 5"
  "lockstep-b1|$C --steps 4 --batch 1"
  "lockstep-fp32|$C --steps 4 --batch 3 --samples 5 --precision fp32 --tolerance fixed"
  "lockstep-fp32-ratio|$C --steps 4 --batch 3 --samples 5 --precision fp32"
  "head6-layers3|$C --steps 3 --batch 3 --n-embd 12 --n-head 2 --n-layer 3"
  "gqa|$C --steps 3 --batch 2 --n-kv-head 2"
  "long-blocks|$C --steps 2 --batch 2 --data data/long.txt --block-size 40"
  "long-wide-fp32|$C --steps 2 --batch 2 --data data/long.txt --block-size 40 --n-embd 72 --n-head 2 --precision fp32"
  # --loss token-mean (every path has it; an unmutated engine failing it shows
  # as a harmless mutant that fails, harmless-*-cuda and harmless-fused-*)
  "token-mean|$C --steps 3 --batch 3 --loss token-mean"
)
# The mixed-precision recipes (docs/mixed_precision.md): lockstep in bf16 and
# tf32 on every engine but the fused CUDA step, which refuses them (a refusal
# would count as a catch; the fused step's mutants skip these three); fp16
# past an overflow (steps 1-4 and 7 skipped at 2^24); on the CPU part only,
# the rounding's unit tests and the recipe's engine tests.
checks+=(
  "lockstep-bf16|[ \"\$B\" = cuda:fused ] || $C --steps 4 --batch 3 --samples 5 --precision bf16"
  "lockstep-tf32|[ \"\$B\" = cuda:fused ] || $C --steps 4 --batch 3 --precision tf32"
  "fp16-overflow|[ \"\$B\" = cuda:fused ] || $C --steps 8 --batch 3 --precision fp16 --loss-scale 16777216 --max-excused 5")
[ "$part" = gpu ] || checks+=(
  "test_lowp|build/tests/test_lowp --jobs 2"
  "test_cpu_mixed|build/tests/test_cpu_engine --jobs 2 --filter 'cpu_engine/mixed*' && build/tests/test_cpu_layers --jobs 2 --filter 'cpu_layers/mixed*'")
[ "$part" = gpu ] || checks+=("test_shared|build/tests/test_shared --jobs 2" "test_golden|build/tests/test_golden --jobs 2")
[ $cuda -eq 1 ] && checks+=("test_gpu|build/test_gpu")

# The comparator's mutants: its test suites, then calibrate.py check (the
# table against its measurement, and a fresh measurement's fingerprint).
py="$root/.venv/bin/python"
[ -x "$py" ] || py=python3
# the tests' Python in each mutant's copy (which has no .venv): the tree's
export MICROGPT_PYTHON="${MICROGPT_PYTHON:-$(command -v "$py")}"
compare_checks=()
for t in $compare_tests; do compare_checks+=("$t|build/tests/$t --jobs 2"); done
compare_checks+=("calibrate|$py scripts/calibrate.py check")

# one_mutant PATCH: apply, build and check one mutant in its own copy; its
# verdict goes to $work/NAME.result as "KIND|LINE" (KIND: caught, survived,
# error, harmless, harmless-wrong, built).
one_mutant() {
  local p="$1" name expect run_dir by="" where="" fd c cname cmd out rc res
  name=$(basename "$p" .patch)
  expect=$(sed -n 's/^# expect: //p' "$p")
  run_dir="$work/run-$name"
  result() { printf '%s|%s\n' "$1" "$2" >"$work/$name.result"; [ $keep -eq 1 ] || rm -rf "$run_dir"; }
  rm -rf "$run_dir"
  cp -a "$base" "$run_dir"
  # as a plain patch tool: inside the repository's work tree (build/ is in
  # it) git apply would take the paths as the repository's and silently skip
  # a "diff --git" patch's files outside the copy
  if ! (cd "$run_dir" && GIT_CEILING_DIRECTORIES="$(dirname "$run_dir")" git apply -v "$root/$p") >"$work/$name.log" 2>&1 ||
     grep -q '^Skipped patch' "$work/$name.log"; then
    result error "$(printf '%-34s %-20s %s' "$name" "ERROR" "the patch does not apply (see $work/$name.log)")"; return
  fi
  # shellcheck disable=SC2086
  if ! make -C "$run_dir" -j"$make_jobs" CUDA=$cuda BUILD=build $targets >>"$work/$name.log" 2>&1; then
    result error "$(printf '%-34s %-20s %s' "$name" "ERROR" "does not build (see $work/$name.log)")"; return
  fi
  if [ $build_only -eq 1 ]; then
    result built "$(printf '%-34s %-20s %s' "$name" "(built)" "applies and builds; no check run")"; return
  fi
  # the engine the compare checks run: cpu for the CPU part's mutants; for
  # the GPU part's, the CUDA path the mutated code is on: every kernel but
  # the fused step's on cuda:layered; the fused step's on cuda, whose own
  # choice takes it wherever the check's model fits (a check whose model does
  # not fit runs the layered path, which the mutant leaves alone)
  local be=cpu
  if [ "$(sed -n 's/^# part: //p' "$p")" = gpu ]; then
    be=cuda:layered
    grep -q '^+++ b/tensor_gpu/cuda/fused.cu' "$p" && be=cuda
  fi
  # MUTANTS_GATE=FILE: build now, check only once FILE is gone (so that a
  # benchmark on the same GPU runs alone while the mutants build)
  while [ -n "${MUTANTS_GATE:-}" ] && [ -e "$MUTANTS_GATE" ]; do sleep 2; done
  local -a use=("${checks[@]}")
  [ "$(sed -n 's/^# part: //p' "$p")" = compare ] && use=("${compare_checks[@]}")
  # a GPU mutant in the CPU part: the fused step on the emulator
  [ $cuda -eq 0 ] && [ "$(sed -n 's/^# part: //p' "$p")" = gpu ] && use=("test_fused_emu|build/test_fused_emu")
  for c in "${use[@]}"; do
    cname="${c%%|*}" cmd="${c#*|}"
    out=$(cd "$run_dir" && B=$be eval "$cmd" 2>&1)
    rc=$?
    [ $rc -eq 0 ] && continue
    by="$cname"
    where=$(printf '%s\n' "$out" | sed -n 's/^FAIL at step \([0-9]*\): \(.*\)/step \1: \2/p; s/^FAIL after training: \(.*\)/samples: \1/p; s/^samples: \(.*\): FAIL$/samples: \1/p' | head -n 1)
    # Criterion (--jobs 2 interleaves the tests' output): every failed test
    [ -n "$where" ] || where=$(printf '%s\n' "$out" | sed -n 's/^\[FAIL\] \([^:]*::[^:]*\):.*/\1/p' | paste -sd, - | sed 's/,/, /g; s/^./test &/')
    [ -n "$where" ] || where="exit $rc: $(printf '%s\n' "$out" | grep -m1 -E 'FAIL|rror|differ|Assert' | cut -c1-90)"
    # the op the failure is localized to (compare's "first divergence" line)
    fd=$(printf '%s\n' "$out" | sed -n 's/^ *first divergence: //p' | head -n 1 | cut -c1-110)
    [ -n "$fd" ] && where="$where; first divergence: $fd"
    printf '%s\n' "$out" >>"$work/$name.log"
    break
  done
  if [ "$expect" = pass ]; then
    if [ -z "$by" ]; then res="passes every check"; kind=harmless; else res="FAILS $by: $where (too strict?)"; kind=harmless-wrong; fi
    result "$kind" "$(printf '%-34s %s -- %s' "$name" "$res" "$(sed -n 's/^# what: //p' "$p")")"; return
  fi
  if [ -z "$by" ]; then
    result survived "$(printf '%-34s %-20s %s' "$name" "SURVIVED" "no check fails: $(sed -n 's/^# what: //p' "$p")")"
  else
    result caught "$(printf '%-34s %-20s %s' "$name" "$by" "$where")"
  fi
}

# --jobs N mutants at a time, each in its own copy; results printed in order.
rows=() harmless=() survived=0 wrong=0
printf '\n%-34s %-20s %s\n' "mutant" "caught by" "where"
running=0
for p in "${patches[@]}"; do
  rm -f "$work/$(basename "$p" .patch).result"
  one_mutant "$p" &
  running=$((running + 1))
  if [ $running -ge "$jobs" ]; then wait -n; running=$((running - 1)); fi
done
wait
for p in "${patches[@]}"; do
  name=$(basename "$p" .patch)
  r=$(cat "$work/$name.result" 2>/dev/null) || r="error|$(printf '%-34s %-20s %s' "$name" "ERROR" "no result (see $work/$name.log)")"
  kind="${r%%|*}" line="${r#*|}"
  case "$kind" in
    harmless) harmless+=("$line"); echo "$(printf '%-34s %-20s' "$name" "(harmless)") passes every check" ;;
    harmless-wrong) harmless+=("$line"); wrong=1; echo "$line" ;;
    built) echo "$line" ;;
    survived) survived=$((survived + 1)); rows+=("$line"); echo "$line" ;;
    error) wrong=1; rows+=("$line"); echo "$line" ;;
    *) rows+=("$line"); echo "$line" ;;
  esac
done
if [ $build_only -eq 1 ]; then
  [ $wrong -eq 0 ] || { echo "mutants: FAILED (logs in $work)"; exit 1; }
  echo "mutants: every mutant applies and builds (--build-only: nothing checked)"; exit 0
fi

n_caught=0
for r in "${rows[@]}"; do case "$r" in *SURVIVED*|*ERROR*) ;; *) n_caught=$((n_caught + 1)) ;; esac; done
echo
echo "mutation kit ($part): ${#rows[@]} mutants, $n_caught caught, $survived survived; ${#harmless[@]} harmless"
if [ ${#harmless[@]} -gt 0 ]; then
  echo "harmless mutants (must pass every check):"
  printf '  %s\n' "${harmless[@]}"
fi
if [ $survived -ne 0 ] || [ $wrong -ne 0 ]; then echo "mutants: FAILED (logs in $work)"; exit 1; fi
echo "mutants: every mutant caught"
