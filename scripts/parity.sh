#!/usr/bin/env bash
# The parity suite: the scalar reference against a tensor engine, step by step.
#   scripts/parity.sh [--backend cuda|cpu] [--steps N] [--out DIR] [--build DIR]
# Every run writes a compare trace to DIR (build/parity); the suite exits
# non-zero if any run fails or cannot run (e.g. no GPU for cuda).
set -u
backend=cuda steps=1000 out="" build=build
while [ $# -gt 0 ]; do
  case "$1" in
    --backend) backend="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --build) build="$2"; shift 2 ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "parity: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$backend" in cpu|cuda) ;; *) echo "parity: --backend must be cpu or cuda" >&2; exit 2 ;; esac
out="${out:-$build/parity}"
mkdir -p "$out"
compare="$build/compare"
[ -x "$compare" ] || { echo "parity: $compare is missing: run make first" >&2; exit 2; }

# name | flags
runs=(
  "lockstep-fp64|--precision fp64"
  "lockstep-fp32|--precision fp32"
  "free-fp64|--precision fp64 --mode free"
  "free-fp32|--precision fp32 --mode free"
  "batch8-fp64|--precision fp64 --batch 8"
  "batch8-fp32|--precision fp32 --batch 8"
  "gqa-fp64|--precision fp64 --n-kv-head 2"
  "gqa1-fp32|--precision fp32 --n-kv-head 1"
  "layers2-fp64|--precision fp64 --n-layer 2"
  "layers2-gqa-batch4-fp32|--precision fp32 --n-layer 2 --n-kv-head 2 --batch 4"
)
failed=0
summary=()
for r in "${runs[@]}"; do
  name="${r%%|*}" flags="${r#*|}"
  log="$out/$name.log"
  # shellcheck disable=SC2086
  "$compare" --engines "scalar,$backend" --steps "$steps" $flags --quiet --trace "$out/$name.json" >"$log" 2>&1
  rc=$?
  verdict=$(grep -m1 -E '^(PASS|FAIL)' "$log" | cut -d: -f1)
  [ $rc -eq 0 ] || { failed=1; verdict="${verdict:-ERROR}"; }
  grads=$(awk '/^  grads /{print $2" (rel "$4")"}' "$log")
  drift=$(awk '/largest loss difference/{print $4}' "$log")
  summary+=("$(printf '%-26s %-6s %s' "$name" "${verdict:-ERROR}" "${grads:+max grad err $grads}${drift:+max loss drift $drift}")")
  if [ $rc -ne 0 ]; then echo "--- $name (exit $rc):"; tail -n 12 "$log"; fi
done
echo
echo "parity suite: scalar vs $backend, $steps steps (traces and logs in $out)"
printf '  %s\n' "${summary[@]}"
if [ $failed -ne 0 ]; then echo "parity: FAILED"; exit 1; fi
echo "parity: all passed"
