#!/usr/bin/env bash
# usage: scripts/localize_check.sh [--engine cpu|cuda:layered|cuda:fused] [--precision fp64|fp32] [--build DIR]
# Localization of a fault planted in each op (compare --inject-fault
# op-fwd:OP / op-bwd:OP; docs/compare.md "Where it broke"): for each op of a
# 2-layer GQA model, forward and backward, run compare and check that the
# trace's first divergence names that op. The CPU engine's cases are also
# tests/test_localize.c (CI); this script runs them on any engine that plants
# the faults: cpu, cuda:layered, cuda:fused (a GPU machine).
# The fused CUDA step fuses some ops into one phase (wo's product with the
# residual add, relu with fc2 and its residual): a fault planted in one of
# them is named as the op whose output it first reaches (the table below).
# Prints one line per case and exits 1 if any is named wrongly.
set -u
usage() { awk 'NR>1 && !/^#/{exit} NR>1' "$0" | sed 's/^# \{0,1\}//'; }
engine=cpu prec=fp32 build=build
while [ $# -gt 0 ]; do
  case "$1" in
    --engine|--precision|--build)
      [ $# -ge 2 ] || { echo "localize_check: $1 needs a value" >&2; exit 2; }
      case "$1" in --engine) engine="$2" ;; --precision) prec="$2" ;; --build) build="$2" ;; esac
      shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "localize_check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$engine" in cpu|cuda:layered|cuda:fused) ;; *) echo "localize_check: --engine cpu, cuda:layered or cuda:fused" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.." || exit 2
[ -x "$build/compare" ] || { echo "localize_check: $build/compare is missing: run make" >&2; exit 2; }
tmp=$(mktemp -d) || exit 2
trap 'rm -rf "$tmp"' EXIT
fused=0; [ "$engine" = cuda:fused ] && fused=1
# direction op expected-op (expected "-": as the op itself; fused deviations in the third column after "|")
cases=(
  "fwd embed -" "fwd embed_norm -" "fwd layer1.norm1 -" "fwd layer1.q -" "fwd layer1.k -" "fwd layer1.v -"
  "fwd layer1.scores -" "fwd layer1.softmax -" "fwd layer1.attn -" "fwd layer1.attn_proj -|layer1.res1"
  "fwd layer1.res1 -" "fwd layer1.norm2 -" "fwd layer1.fc1 -" "fwd layer1.fc2 -|layer1.res2" "fwd layer1.res2 -"
  "fwd logits -" "fwd layer0.q -"
  "bwd loss -" "bwd logits -" "bwd layer1.res2 layer1.norm2" "bwd layer1.fc2 -|layer1.relu" "bwd layer1.relu -"
  "bwd layer1.fc1 -" "bwd layer1.norm2 -" "bwd layer1.attn_proj -" "bwd layer1.attn -" "bwd layer1.softmax -"
  "bwd layer1.scores -" "bwd layer1.q -" "bwd layer1.k layer1.q" "bwd layer1.v layer1.q" "bwd layer1.norm1 -"
  "bwd layer0.fc1 -" "bwd embed_norm -" "bwd embed -"
)
# the fused step never reports relu's forward: no fault planted there; on the layered path likewise
[ $fused -eq 1 ] || cases+=("fwd layer1.relu -")
bad=0 n=0
for c in "${cases[@]}"; do
  dir="${c%% *}" rest="${c#* }" op="${rest%% *}" want="${rest#* }"
  fusedwant=""
  case "$want" in *"|"*) fusedwant="${want#*|}"; want="${want%%|*}" ;; esac
  [ "$want" = - ] && want="$op"
  [ $fused -eq 1 ] && [ -n "$fusedwant" ] && want="$fusedwant"
  tr="$tmp/$n.json"
  "$build/compare" --engines "scalar,$engine" --precision "$prec" --steps 2 --batch 2 --n-layer 2 --n-kv-head 2 \
    --quiet --inject-fault "op-$dir:$op" --trace "$tr" >"$tmp/$n.log" 2>&1
  rc=$?
  got=$(python3 -c 'import json,sys
t=json.load(open(sys.argv[1])); fd=(t["steps"][0].get("first_divergence") or {})
print("%s %s" % (fd.get("op","(none)"), fd.get("direction","-")))' "$tr" 2>/dev/null || echo "(no-trace) -")
  gop="${got%% *}" gdir="${got#* }"
  want_dir=forward; [ "$dir" = bwd ] && want_dir=backward
  if [ $rc -eq 1 ] && [ "$gop" = "$want" ] && [ "$gdir" = "$want_dir" ]; then verdict=ok; else verdict=WRONG; bad=$((bad + 1)); fi
  printf '  %-5s %-4s %-18s named %-18s %-9s %s\n' "$verdict" "$dir" "$op" "$gop" "$gdir" "$( [ $rc -eq 1 ] || echo "(exit $rc)")"
  [ "$verdict" = ok ] || sed -n '/first divergence/p;/rror/p' "$tmp/$n.log" | head -3 | sed 's/^/        /'
  n=$((n + 1))
done
echo "localize_check: $engine $prec: $((n - bad)) of $n faults named as their op"
[ $bad -eq 0 ]
