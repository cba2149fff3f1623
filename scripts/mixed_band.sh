#!/usr/bin/env bash
# usage: scripts/mixed_band.sh [STEPS] [PRECISION...]      (1000; bf16 fp16 tf32)
# Measure the free-running loss band of the mixed-precision recipes
# (docs/mixed_precision.md): the CPU engine's emulation trains on its own
# against the fp64 scalar oracle for STEPS steps, over several shapes and
# seeds; prints, per precision and run, the largest |loss - loss_fp64| and
# its step, and per precision the largest of all (the band is set from it).
set -eu
case "${1:-}" in -h|--help) awk 'NR>1 && !/^#/{exit} NR>1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
cd "$(dirname "$0")/.."
steps="${1:-1000}"
case "$steps" in ''|*[!0-9]*|0) echo "mixed_band: STEPS must be a whole number >= 1, not '$steps' (see --help)" >&2; exit 2 ;; esac
shift || true
precs=("$@")
[ ${#precs[@]} -gt 0 ] || precs=(bf16 fp16 tf32)
make -j2 build/compare >/dev/null
w=build/mixed-band
mkdir -p "$w"
cfgs=("base|" "b8|--batch 8" "h5|--n-embd 15 --n-head 3 --batch 4" "l2gqa|--n-layer 2 --n-kv-head 2 --batch 4")
for p in "${precs[@]}"; do
  worst=0 where=""
  for c in "${cfgs[@]}"; do
    n="${c%%|*}" f="${c#*|}"
    for seed in 42 1 7; do
      # shellcheck disable=SC2086
      out=$(build/compare --engines scalar,cpu --precision "$p" --mode free --steps "$steps" --seed "$seed" $f \
              --drift-tol 1e9 --quiet)
      line=$(printf '%s\n' "$out" | sed -n 's/^  largest loss difference \([^ ]*\) at step \([0-9]*\).*/\1 \2/p')
      d="${line% *}" s="${line#* }"
      printf '%s %-6s seed %-3s largest |loss - fp64| %s at step %s\n' "$p" "$n" "$seed" "$d" "$s"
      if awk -v a="$d" -v b="$worst" 'BEGIN { exit !(a > b) }'; then worst="$d" where="$n seed $seed step $s"; fi
    done
  done
  echo "$p: largest $worst ($where)"
done
