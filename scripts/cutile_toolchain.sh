#!/usr/bin/env bash
# usage: scripts/cutile_toolchain.sh fetch DIR     (a machine with pip and a network)
#        scripts/cutile_toolchain.sh install DIR PREFIX   (the GPU machine; prints the exports)
# cuTile (examples/cutile_engine.py) needs the cuda-tile package and, to
# compile its kernels, NVIDIA's tileiras with the ptxas and libNVVM of the same
# CUDA minor (cuda-tile >= 1.4 and CUDA >= 13.3 for Hopper). The pip wheels
# of the three tools are about 160 MB, more than the device tool carries, and
# cuda.tile uses only three files of them: tileiras, ptxas and libnvvm.so.4.
# fetch: downloads cuda-tile (CPython 3.12, manylinux x86-64) and the
# tileiras, nvcc and nvvm wheels of CUDA $CUTILE_CUDA (13.4.92; cuda-tile
# 1.7 takes 13.2 to 13.4), and keeps the wheel and the three files, each
# compressed with xz's x86 filter (about 57 MB in all), in DIR.
# install: unpacks DIR's files into PREFIX/nvidia/cu13/{bin,lib}, cuda-tile
# into PREFIX/site, checks that tileiras runs, and prints the lines to eval:
# PATH (tileiras and its ptxas first), PYTHONPATH, and CUDA_HOME unset (with
# CUDA_HOME set, tileiras looks for libNVVM there: an older system CUDA's
# would not do). $PYTHON (python3) is the interpreter cuda-tile is installed for.
# Exit 1 with the reason if anything is missing, 2 on bad arguments.
set -u -o pipefail
cuda="${CUTILE_CUDA:-13.4.92}" tile="${CUTILE_VERSION:-1.7.0}" py="${PYTHON:-python3}"
die() { echo "cutile_toolchain: $*" >&2; exit 1; }
usage_error() { echo "cutile_toolchain: $* (see --help)" >&2; exit 2; }
case "${1:-}" in
  -h|--help) awk 'NR>1 && !/^#/{exit} NR>1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  fetch)
    [ $# -eq 2 ] || usage_error "fetch takes one folder"
    dir="$2" tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    mkdir -p "$dir" || die "cannot create $dir"
    plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
          --platform manylinux2010_x86_64 --platform manylinux_2_12_x86_64)
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${plat[@]}" \
      -d "$tmp" "cuda-tile==$tile" "nvidia-cuda-tileiras==$cuda" "nvidia-cuda-nvcc==$cuda" "nvidia-nvvm==$cuda" ||
      die "pip could not download cuda-tile $tile and the CUDA $cuda tools"
    rm -f "$dir"/*.whl "$dir"/*.xz
    cp "$tmp"/cuda_tile-*.whl "$dir/" || die "no cuda-tile wheel"
    for pair in tileiras:nvidia_cuda_tileiras ptxas:nvidia_cuda_nvcc libnvvm.so.4:nvidia_nvvm; do
      file="${pair%%:*}" whl=$(ls "$tmp/${pair#*:}"-*.whl)
      unzip -q -o "$whl" "nvidia/cu13/*/$file" -d "$tmp/x" || die "$file not in $whl"
      xz --x86 --lzma2=preset=9e,dict=192MiB -T1 -c "$tmp"/x/nvidia/cu13/*/"$file" >"$dir/$file.xz" ||
        die "xz failed on $file"
    done
    echo "cuda-tile $tile and CUDA $cuda's tileiras, ptxas, libnvvm.so.4 in $dir:"
    du -ch "$dir"/* | tail -n 1 ;;
  install)
    [ $# -eq 3 ] || usage_error "install takes a folder and a prefix"
    dir="$2" prefix="$3"
    for f in tileiras.xz ptxas.xz libnvvm.so.4.xz; do
      [ -s "$dir/$f" ] || die "$dir/$f is missing (make it with: scripts/cutile_toolchain.sh fetch $dir)"
    done
    ls "$dir"/cuda_tile-*.whl >/dev/null 2>&1 || die "no cuda-tile wheel in $dir"
    mkdir -p "$prefix/nvidia/cu13/bin" "$prefix/nvidia/cu13/lib" "$prefix/site" || die "cannot write $prefix"
    xz -dc "$dir/tileiras.xz" >"$prefix/nvidia/cu13/bin/tileiras" &&
      xz -dc "$dir/ptxas.xz" >"$prefix/nvidia/cu13/bin/ptxas" &&
      xz -dc "$dir/libnvvm.so.4.xz" >"$prefix/nvidia/cu13/lib/libnvvm.so.4" || die "could not unpack $dir"
    chmod +x "$prefix/nvidia/cu13/bin/tileiras" "$prefix/nvidia/cu13/bin/ptxas"
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$prefix/site" \
      "$dir"/cuda_tile-*.whl >&2 || die "pip could not install the cuda-tile wheel"
    "$prefix/nvidia/cu13/bin/tileiras" --version >/dev/null 2>&1 || die "tileiras does not run here"
    echo "export PATH=\"$prefix/nvidia/cu13/bin:\$PATH\" PYTHONPATH=\"$prefix/site\${PYTHONPATH:+:\$PYTHONPATH}\"; unset CUDA_HOME CUDA_PATH" ;;
  *) usage_error "unknown command '${1:-}': fetch DIR or install DIR PREFIX" ;;
esac
