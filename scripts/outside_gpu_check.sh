#!/usr/bin/env bash
# usage: scripts/outside_gpu_check.sh [--python PY] [--steps N] [--build DIR] [--only LIST]
# The outside-engine checks that need a GPU and PyTorch (docs/outside_engines.md):
# the CUDA plugin in lockstep, the torch engine on CUDA in fp64 and fp32, its
# --broken-rmsnorm switch (must FAIL at step 1 naming the tensors), the
# tile-language engines, Triton and cuTile, each where its package imports
# (tests/NAME_engine_check.py; lockstep in fp32 and fp64 on several shapes,
# free-running in fp32 on three; each --plant-bug must FAIL, its first
# divergence printed), and the start-up cost of a usage error (no CUDA
# library is loaded for it). cuTile's compiler: scripts/cutile_toolchain.sh.
# --python PY: the interpreter with numpy, torch and triton (python3);
# --steps N: steps of the longer lockstep runs (50); --build DIR: where
# compare and the CUDA plugin are (build), and the logs go; --only LIST: the
# parts named, comma-separated, of cuda (the plugin and the usage error),
# torch, triton, cutile (all; a part named there that cannot run here, e.g.
# no cuda.tile, fails the check instead of being skipped).
# Exits non-zero if a check that should pass fails, or the broken one passes;
# 2 on bad arguments.
set -u
usage() { awk 'NR>1 && !/^#/{exit} NR>1' "$0" | sed 's/^# \{0,1\}//'; }
py=python3 steps=50 build=build only=cuda,torch,triton,cutile explicit=0
while [ $# -gt 0 ]; do
  case "$1" in
    --python|--steps|--build|--only)
      [ $# -ge 2 ] && [ -n "$2" ] || { echo "outside_gpu_check: $1 needs a value (see --help)" >&2; exit 2; }
      case "$1" in --python) py="$2" ;; --steps) steps="$2" ;; --build) build="$2" ;; --only) only="$2" explicit=1 ;; esac
      shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "outside_gpu_check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$steps" in ''|*[!0-9]*|0) echo "outside_gpu_check: --steps must be a whole number >= 1, not '$steps'" >&2; exit 2 ;; esac
for part in ${only//,/ }; do
  case "$part" in cuda|torch|triton|cutile) ;;
    *) echo "outside_gpu_check: --only takes cuda, torch, triton, cutile, not '$part'" >&2; exit 2 ;; esac
done
wants() { case ",$only," in *",$1,"*) return 0 ;; esac; return 1; }
CB="$build/compare"
C="$CB --data data/names.txt"
status=0
run() {  # run NAME WANT_EXIT CMD...
  local name="$1" want="$2"; shift 2
  echo "=== $name: $*"
  "$@" > "$build/gpu-$name.log" 2>&1
  local rc=$?
  grep -m 3 -E '^(FAIL|PASS)|excused' "$build/gpu-$name.log"
  tail -n 12 "$build/gpu-$name.log"
  if [ "$rc" -ne "$want" ]; then echo ">>> $name: exit $rc, expected $want"; status=1; else echo ">>> $name: exit $rc as expected"; fi
}
if wants cuda; then
  echo "=== usage error: time and peak memory"
  for bin in "$build/compare_before" "$build/compare"; do
    [ -x "$bin" ] || continue
    /usr/bin/time -v "$bin" --engines bogus 2>&1 | grep -E "Elapsed|Maximum resident" | sed "s|^|  $bin: |"
  done
  run cuda-fp64 0 $C --engines scalar,cuda --steps "$steps" --quiet
  run cuda-fp32 0 $C --engines scalar,cuda --steps "$steps" --precision fp32 --quiet
fi
if ! wants torch; then
  :
elif "$py" -c 'import numpy, torch, torch.nn.functional as F; F.scaled_dot_product_attention' 2>/dev/null; then
  "$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
  T="$py examples/torch_engine.py"
  run torch-cuda-fp64 0 $C --engines "scalar,exec:$T --device cuda" --steps "$steps" --quiet
  run torch-cuda-fp64-gqa-batch 0 $C --engines "scalar,exec:$T --device cuda" --steps 10 --batch 4 --n-kv-head 2 --n-layer 2 --quiet
  run torch-cuda-fp32 0 $C --engines "scalar,exec:$T --device cuda" --steps "$steps" --precision fp32 --quiet
  run torch-cpu-fp64 0 $C --engines "scalar,exec:$T --device cpu" --steps 10 --quiet
  # informational: PyTorch's own SDPA choice (memory-efficient in fp32) under
  # the ratio rule, and under the fixed tolerances (docs/outside_engines.md)
  for tol in ratio fixed; do
    echo "=== torch-cuda-fp32-sdpa-auto ($tol): informational"
    $C --engines "scalar,exec:$T --device cuda --attention auto" --steps "$steps" --precision fp32 --tolerance $tol \
      --quiet 2>&1 | grep -m 3 -E '^(PASS|FAIL)|ratio rule: exec'
  done
  run torch-cuda-broken 1 $C --engines "scalar,exec:$T --device cuda --broken-rmsnorm" --steps "$steps"
  grep -q "FAIL at step 1" "$build/gpu-torch-cuda-broken.log" || { echo ">>> broken: not FAIL at step 1"; status=1; }
  grep -q "not in the reference: wte wpe" "$build/gpu-torch-cuda-broken.log" || { echo ">>> broken: wte, wpe not named"; status=1; }
else
  echo "SKIP torch: $py has no numpy and PyTorch >= 2 (give --python)"
  [ $explicit -eq 0 ] || { echo ">>> torch: asked for with --only, and it cannot run here"; status=1; }
fi
# tile_engine NAME MODULE: a tile-language engine (examples/NAME_engine.py,
# its kernels in MODULE): its kernel checks, lockstep and free-running runs
# against the oracle at three shapes, and each planted bug (must FAIL)
tile_engine() {
  local name="$1" module="$2" X="exec:$py examples/$1_engine.py" bug loss rc
  wants "$name" || return
  if ! "$py" -c "import numpy, torch, $module; assert torch.cuda.is_available()" 2>/dev/null; then
    echo "SKIP $name: $py has no torch with CUDA and $module"
    [ $explicit -eq 0 ] || { echo ">>> $name: asked for with --only, and it cannot run here"; status=1; }
    return
  fi
  "$py" -c "import $module as m; print('$name', m.__version__)"
  echo "=== ${name}_engine_check"
  "$py" tests/${name}_engine_check.py > "$build/gpu-$name-check.log" 2>&1
  rc=$?
  tail -n 8 "$build/gpu-$name-check.log"
  [ $rc -eq 0 ] || { echo ">>> ${name}_engine_check: exit $rc"; status=1; }
  run $name-fp32 0 $C --engines "scalar,$X" --steps 1000 --precision fp32 --quiet
  run $name-fp64 0 $C --engines "scalar,$X" --steps "$steps" --quiet
  run $name-fp32-gqa-batch 0 $C --engines "cpu@fp64,$X" --steps 300 --batch 8 --n-layer 2 --n-kv-head 2 \
    --precision fp32 --quiet
  run $name-fp32-block64 0 $CB --engines "cpu@fp64,$X" --steps 100 --data "$build/long12.txt" --block-size 64 \
    --n-embd 32 --n-head 4 --batch 2 --precision fp32 --quiet
  # free-running (each engine trains on its own; the losses judged over the window) at the same three shapes
  run $name-fp32-free 0 $C --engines "scalar,$X" --mode free --steps 1000 --precision fp32 --quiet
  run $name-fp32-gqa-batch-free 0 $C --engines "cpu@fp64,$X" --mode free --steps 300 --batch 8 --n-layer 2 \
    --n-kv-head 2 --precision fp32 --quiet
  run $name-fp32-block64-free 0 $CB --engines "cpu@fp64,$X" --mode free --steps 100 --data "$build/long12.txt" \
    --block-size 64 --n-embd 32 --n-head 4 --batch 2 --precision fp32 --quiet
  for bug in $("$py" -c 'import sys; sys.path.insert(0, "examples"); import tile_engine as t; print(" ".join(t.PLANTED_BUGS))'); do
    echo "=== $name planted bug $bug"
    loss=doc-mean   # a wrong token-mean gradient shows under the token mean alone
    [ "$bug" = token-mean-doc-grad ] && loss=token-mean
    $C --engines "cpu@fp64,$X --plant-bug $bug" --steps 3 --batch 2 --n-layer 2 --n-head 4 --n-kv-head 2 \
      --precision fp32 --loss $loss > "$build/gpu-$name-$bug.log" 2>&1
    rc=$?
    grep -m 1 -E '^FAIL at' "$build/gpu-$name-$bug.log" | sed "s/^/$name $bug: /"
    grep -m 1 'first divergence' "$build/gpu-$name-$bug.log" | cut -c1-220
    [ $rc -eq 1 ] || { echo ">>> $name $bug: exit $rc, expected 1 (the planted bug passed?)"; status=1; }
  done
}
bash scripts/long_data.sh data/names.txt "$build/long12.txt" 12 >/dev/null
tile_engine triton triton
tile_engine cutile cuda.tile
exit $status
