#!/usr/bin/env bash
# usage: scripts/parity.sh [--backend cuda|cpu] [--steps N] [--out DIR] [--build DIR]
#                          [--path auto|fused|layered] [--jobs N] [--only NAME[,NAME...]]
# The parity suite: the scalar reference against a tensor engine over the
# coverage matrix of docs/parity.md (head sizes, layers, full blocks, batches,
# grouped-query attention, fp64 and fp32, lockstep and free-running; bf16,
# fp16 and tf32, on cuda on the layered path).
# Each run writes a compare trace and a log to DIR (build/parity/BACKEND; its
# old traces and logs are removed first) and prints its line as it finishes
# ([done/total] name, verdict, steps, largest errors); the table of all of
# them follows at the end. Exit 0 all passed, 1 a run failed, 2 bad arguments
# or the engine cannot run here (e.g. no GPU for cuda: no further run starts).
# --path (cuda): MICROGPT_CUDA_PATH for every run: layered forces the layered
# path, auto (the engine's choice: the fused step wherever it fits) and
# fused; the summary names the path each run took. --jobs N: N runs at a time.
# --only: just the runs named (the names of the summary), e.g. to repeat one.
set -u
usage() { awk 'NR>1 && !/^#/{exit} NR>1' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "parity: $*" >&2; exit 2; }
backend=cuda steps=1000 out="" build=build path="" jobs=1 only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --backend|--steps|--out|--build|--path|--jobs|--only)
      [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value (see --help)"
      case "$1" in
        --backend) backend="$2" ;; --steps) steps="$2" ;; --out) out="$2" ;; --build) build="$2" ;;
        --path) path="$2" ;; --jobs) jobs="$2" ;; --only) only="$2" ;;
      esac
      shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
case "$backend" in cpu|cuda) ;; *) die "--backend must be cpu or cuda, not '$backend'" ;; esac
case "$steps" in ''|*[!0-9]*|0) die "--steps must be a whole number >= 1, not '$steps'" ;; esac
case "$jobs" in ''|*[!0-9]*|0) die "--jobs must be a whole number >= 1, not '$jobs'" ;; esac
case "$path" in
  "") ;;
  auto|fused|layered) [ "$backend" = cuda ] || die "--path is for --backend cuda"; export MICROGPT_CUDA_PATH="$path" ;;
  *) die "--path must be auto, fused or layered, not '$path'" ;;
esac
out="${out:-$build/parity/$backend${path:+-$path}}"
compare="$build/compare"
[ -x "$compare" ] || die "$compare is missing: run make first"
data=data/names.txt
[ -s "$data" ] || die "$data is missing: run make data (or copy names.txt there)"
mkdir -p "$out" || die "cannot create $out"
rm -f "$out"/*.json "$out"/*.log "$out"/*.txt "$out"/*.rc

# Documents longer than every block (and a vocabulary wider than a warp);
# lines of 24 names (about 165 characters) fill blocks of 128.
long="$out/long.txt" long128="$out/long128.txt"
bash "$(dirname "$0")/long_data.sh" "$data" "$long" || die "cannot write $long"
bash "$(dirname "$0")/long_data.sh" "$data" "$long128" 24 || die "cannot write $long128"
# wide models train as the bench's e128 and e512 (docs/compare.md)
wide="--init-std 0.02 --lr 0.001"

# name | most steps (0: --steps) | flags. Why each run is here: docs/parity.md.
runs=(
  "base-fp64|0|--precision fp64 --samples 20"
  "base-fp32|0|--precision fp32 --samples 20"
  "base-fp32-fixed|0|--precision fp32 --tolerance fixed"
  "free-fp64|0|--precision fp64 --mode free"
  "free-fp32|0|--precision fp32 --mode free"
  "batch8-fp64|0|--precision fp64 --batch 8"
  "batch8-fp32|0|--precision fp32 --batch 8 --samples 10"
  "token-mean-fp64|0|--precision fp64 --batch 4 --loss token-mean"
  "token-mean-fp32|0|--precision fp32 --batch 4 --loss token-mean"
  "head6-layers2-fp64|0|--precision fp64 --n-embd 12 --n-head 2 --n-layer 2 --batch 3"
  "head5-fp32|0|--precision fp32 --n-embd 15 --n-head 3 --batch 4"
  "head1-gqa-fp64|0|--precision fp64 --n-embd 8 --n-head 8 --n-kv-head 4 --batch 2"
  "layers3-head8-fp64|0|--precision fp64 --n-layer 3 --n-head 2 --samples 10"
  "layers4-mqa-fp32|0|--precision fp32 --n-layer 4 --n-kv-head 1 --batch 4"
  "gqa-fp64|0|--precision fp64 --n-kv-head 2 --batch 2"
  "gqa-head6-fp32|0|--precision fp32 --n-embd 24 --n-head 4 --n-kv-head 2 --batch 4"
  "block4-fp64|0|--precision fp64 --block-size 4 --batch 4"
  "block4-fp32|0|--precision fp32 --block-size 4 --batch 8"
  "long-fp64|300|--precision fp64 --data $long --block-size 40 --batch 4 --samples 5"
  "long-wide-fp32|300|--precision fp32 --data $long --block-size 40 --n-embd 72 --n-head 2 --batch 4"
  "long-wide-mqa-fp64|200|--precision fp64 --data $long --block-size 36 --n-embd 72 --n-head 2 --n-kv-head 1 --batch 2"
  # blocks of 96 and 128 (head size 64, 32 with GQA): the CUDA attention's
  # tiled kernels in their non-compact layouts (fp32) and its rows kernels
  # (fp64 at T 128 HS 64 exceeds a block's shared memory)
  "block128-fp32|5|--precision fp32 --data $long128 --block-size 128 --n-embd 64 --n-head 1 --batch 2 $wide"
  "block128-fp64|5|--precision fp64 --data $long128 --block-size 128 --n-embd 64 --n-head 1 --batch 2 $wide"
  "block96-gqa-fp32|5|--precision fp32 --data $long128 --block-size 96 --n-embd 128 --n-head 4 --n-kv-head 2 --batch 2 $wide"
)
# widths 256 and 512 (head size 64): the scalar reference needs about 4 GB
# and 10 s a step there, so they run for CUDA, whose wide kernels they are for
# (the CPU engine's wide arithmetic is measured by scripts/calibrate.py)
[ "$backend" = cuda ] && runs+=(
  "wide512-fp32|2|--precision fp32 --n-embd 512 --n-head 8 --block-size 16 --batch 1 $wide --samples 2"
  "wide256-fp64|2|--precision fp64 --n-embd 256 --n-head 4 --block-size 32 --batch 1 $wide"
)
# The mixed-precision recipes (docs/mixed_precision.md), on both backends (on
# cuda the layered path: the fused step refuses them, so with --path fused
# they are left out).
[ "$path" = fused ] || runs+=(
  "bf16|0|--precision bf16 --batch 4 --samples 5"
  "bf16-layers2-gqa|0|--precision bf16 --n-layer 2 --n-kv-head 2 --batch 3"
  "tf32|0|--precision tf32 --batch 4"
  "free-bf16|0|--precision bf16 --mode free"
  "free-tf32|0|--precision tf32 --mode free"
)
[ "$path" = fused ] || runs+=("fp16|0|--precision fp16 --batch 4" "free-fp16|0|--precision fp16 --mode free"
  "block128-bf16|5|--precision bf16 --data $long128 --block-size 128 --n-embd 64 --n-head 1 --batch 2 $wide")
[ "$path" != fused ] && [ "$backend" = cuda ] && runs+=(
  "wide512-bf16|2|--precision bf16 --n-embd 512 --n-head 8 --block-size 16 --batch 1 $wide")
# --only: keep the runs named, in the suite's order
if [ -n "$only" ]; then
  kept=()
  for want in ${only//,/ }; do
    found=0
    for r in "${runs[@]}"; do [ "${r%%|*}" = "$want" ] && found=1; done
    [ $found = 1 ] || die "--only: no run named '$want' here (runs: $(for r in "${runs[@]}"; do printf '%s ' "${r%%|*}"; done))"
  done
  for r in "${runs[@]}"; do
    case ",$only," in *",${r%%|*},"*) kept+=("$r") ;; esac
  done
  runs=("${kept[@]}")
fi
# steps_of RUN: the steps it runs (its cap, else --steps)
steps_of() {
  local rest="${1#*|}" cap n=$steps
  cap="${rest%%|*}"
  [ "$cap" -gt 0 ] && [ "$n" -gt "$cap" ] && n=$cap
  echo "$n"
}
# summary_line RUN: its line of the summary, from its log and exit status
summary_line() {
  local r="$1" name n log rc verdict ran excused grads ratio drift detail took
  name="${r%%|*}"
  n=$(steps_of "$r")
  log="$out/$name.log"
  rc=$(cat "$out/$name.rc" 2>/dev/null || echo 1)
  verdict=$(grep -m1 -E '^(PASS|FAIL)' "$log" | cut -d: -f1)
  [ "$rc" -eq 0 ] || verdict="${verdict:-ERROR}"
  ran=$(sed -n 's/.*, \([0-9]*\) of \([0-9]*\) steps run.*/\1\/\2/p' "$log")
  excused=$(sed -n 's/^ReLU gates: \([0-9]*\) unit(s) at \([0-9]*\) step(s).*; \([0-9]*\) of those steps passed only so.*/\2 steps with gates matched (\3 excused)/p' "$log")
  grads=$(awk '$1=="grads" && !g {g=1; sub(/^ *grads +/,""); print}' "$log")
  ratio=$(sed -n '/^  grads/{n;s/.*largest err\/err_noise \([0-9.]*\).*/, grads err\/err_noise <= \1/p}' "$log")
  drift=$(awk '/largest loss difference/{print $4" at step "$7}' "$log")
  detail="${grads:+max grad err $grads}${drift:+max loss drift $drift}"
  [ "$rc" -eq 0 ] || [ -n "$detail" ] || detail="exit $rc: $(grep -m1 . "$log" | cut -c1-120)"
  took=""
  [ "$backend" = cuda ] && took=$(python3 -c 'import json,sys
try:
    e=json.load(open(sys.argv[1]))["engines"][1]["device"]
    print("path "+e.split("; path ")[1].split()[0] if "; path " in e else "")
except Exception: print("")' "$out/$name.json" 2>/dev/null)
  printf '%-20s %-5s %-9s %s' "$name" "${verdict:-ERROR}" "${ran:-$n}" "${took:+$took; }${excused:+$excused; }$detail$ratio"
}
# --jobs runs at a time; each writes NAME.log, NAME.json and its exit status
# NAME.rc, and prints its summary line as soon as it is done (one write, so
# lines of parallel runs do not mix). A run that exits 2 (the engine cannot
# run here) stops the suite: no further run starts.
total=${#runs[@]}
echo "parity: ${total} runs, scalar vs $backend${path:+ (MICROGPT_CUDA_PATH=$path)}, $steps steps, $jobs at a time (logs in $out)"
running=0 started=0
for r in "${runs[@]}"; do
  name="${r%%|*}" rest="${r#*|}"
  flags="${rest#*|}"
  started=$((started + 1))
  (
    t0=$SECONDS
    # shellcheck disable=SC2086
    "$compare" --engines "scalar,$backend" --steps "$(steps_of "$r")" $flags --quiet --trace "$out/$name.json" \
      >"$out/$name.log" 2>&1
    echo $? >"$out/$name.rc"
    done_n=$(find "$out" -maxdepth 1 -name '*.rc' | wc -l)
    line=$(summary_line "$r")
    printf '[%2d/%d] %s (%d s)\n' "$done_n" "$total" "$line" "$((SECONDS - t0))"
  ) &
  running=$((running + 1))
  if [ $running -ge "$jobs" ]; then wait -n; running=$((running - 1)); fi
  if grep -qx 2 "$out"/*.rc 2>/dev/null; then
    [ $started -lt "$total" ] && echo "parity: a run exited 2 (the engine cannot run here): no further run starts"
    break
  fi
done
wait
failed=0
summary=()
for r in "${runs[@]}"; do
  name="${r%%|*}"
  log="$out/$name.log"
  [ -f "$out/$name.rc" ] || continue   # not started: the suite stopped early
  rc=$(cat "$out/$name.rc" 2>/dev/null || echo 1)
  if [ "$rc" -eq 2 ]; then
    # the engine cannot run here (or bad flags): one message, stop
    echo "parity: $name: $(grep -m1 . "$log")" >&2
    exit 2
  fi
  [ "$rc" -eq 0 ] || failed=1
  summary+=("$(summary_line "$r")")
  if [ "$rc" -ne 0 ]; then echo "--- $name (exit $rc):"; grep -v '^ *tolerance' "$log" | tail -n 14; fi
done
echo
echo "parity suite: scalar vs $backend${path:+ (MICROGPT_CUDA_PATH=$path)}, $steps steps (traces and logs in $out)"
printf '  %s\n' "${summary[@]}"
if [ $failed -ne 0 ]; then echo "parity: FAILED"; exit 1; fi
echo "parity: all passed"
