#!/usr/bin/env bash
# Measure the ratio rule's k and floor on the CPU: a second sound fp32
# engine (the CPU engine with the harmless mutants harmless-cpu-matmul-
# reversed and harmless-cpu-attn-softmax-nomax applied: other summation
# orders, no max shift) against the CPU engine, on the same lockstep states,
# over the shapes of the parity matrix. Needs python3.
#   scripts/ratio_measure.sh [STEPS] [PRECISION]      (300, fp32)
# PRECISION bf16, fp16 or tf32: the same for the mixed-precision recipe's
# emulation (docs/mixed_precision.md); the table's "cpu err max" column is
# then the emulation's own largest error against the fp64 oracle (the cap).
set -eu
cd "$(dirname "$0")/.."
steps="${1:-300}"
prec="${2:-fp32}"
case "$prec" in fp32|bf16|fp16|tf32) ;; *) echo "ratio_measure: precision '$prec' is not fp32, bf16, fp16 or tf32" >&2; exit 2 ;; esac
w=build/ratio-measure-$prec
rm -rf "$w" && mkdir -p "$w/src/data"
git ls-files -co --exclude-standard -z | while IFS= read -r -d '' f; do
  [ -f "$f" ] && { mkdir -p "$w/src/$(dirname "$f")"; cp -p "$f" "$w/src/$f"; }
done
cp data/names.txt "$w/src/data/"
(cd "$w/src" && git apply "$OLDPWD/mutants/harmless-cpu-matmul-reversed.patch" \
                          "$OLDPWD/mutants/harmless-cpu-attn-softmax-nomax.patch")
make -C "$w/src" -j2 CUDA=0 build/compare >"$w/build.log" 2>&1
make -j2 build/compare >/dev/null
bash scripts/long_data.sh data/names.txt "$w/long.txt"
cfgs=("base|" "b8|--batch 8" "h5|--n-embd 15 --n-head 3 --batch 4" "l4mqa|--n-layer 4 --n-kv-head 1 --batch 4"
      "gqa6|--n-embd 24 --n-head 4 --n-kv-head 2 --batch 4" "blk4|--block-size 4 --batch 8"
      "wide|--data $w/long.txt --block-size 40 --n-embd 72 --n-head 2 --batch 4")
pairs=()
for c in "${cfgs[@]}"; do
  n="${c%%|*}" f="${c#*|}" s=$steps
  [ "$n" = wide ] && s=$((steps / 5 > 0 ? steps / 5 : 1))
  for which in clean cand; do
    bin=build/compare; [ $which = cand ] && bin="$w/src/build/compare"
    # shellcheck disable=SC2086
    "$bin" --engines scalar,cpu --precision "$prec" --steps "$s" $f --quiet --keep-going --max-excused 1000000 \
      --trace "$w/$n-$which.json" >"$w/$n-$which.log"
  done
  pairs+=("$w/$n-cand.json" "$w/$n-clean.json")
done
python3 scripts/ratio_stats.py --pair "${pairs[@]}"
