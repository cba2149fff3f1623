#!/usr/bin/env bash
# usage: scripts/install-deps.sh [--torch] [--cutile]   (make deps, make deps TORCH=1, make tile-compile)
# Install the Debian packages the build and the tests need, if they are
# missing: libcjson-dev (traces), libcriterion-dev (tests), curl (fetching
# names.txt), clang with libFuzzer and the sanitizer runtimes (make fuzz,
# make test SANITIZE=1), librsvg2-bin (rsvg-convert, to look at plots),
# python3 with venv. As root it installs them; otherwise through sudo when
# that works without a password; otherwise it names the packages and exits
# 1. Then the Python packages (numpy, jsonschema, pandas) into .venv, from
# PyPI.
# --torch (make deps TORCH=1) adds PyTorch to .venv, for the tests and
# examples that use it (tests/test_torch_module.c, the torch engine of
# tests/test_outside.c; docs/outside_engines.md, "Check my PyTorch model in
# 10 minutes"), from PyPI or from $TORCH_INDEX_URL when set (e.g.
# https://download.pytorch.org/whl/cpu, PyTorch's CPU-only builds). CI does
# not use it.
# --cutile (make tile-compile) makes .venv-cutile, a virtual environment
# with numpy and cuda-tile[tileiras] $CUTILE_VERSION (1.7.0: cuda.tile and
# its compiler, tileiras with the ptxas and libNVVM of CUDA 13.2-13.4, about
# 160 MB from PyPI), where tests/cutile_engine_check.py --compile-for 90
# compiles the cuTile engine's kernels for an H100 without a GPU.
set -eu
torch=0 cutile=0
for a in "$@"; do
  case "$a" in
    --torch) torch=1 ;;
    --cutile) cutile=1 ;;
    -h|--help) awk 'NR>1 && !/^#/{exit} NR>1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: install-deps.sh [--torch] [--cutile] (see --help)" >&2; exit 2 ;;
  esac
done
need=()
have_header() { echo "#include <$1>" | gcc -E -x c - >/dev/null 2>&1; }
have_header cjson/cJSON.h || need+=(libcjson-dev)
have_header criterion/criterion.h || need+=(libcriterion-dev)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
command -v gcc >/dev/null 2>&1 || need+=(gcc)
echo 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { (void)d; (void)n; return 0; }' |
  clang -fsanitize=fuzzer,address,undefined -x c - -o /dev/null >/dev/null 2>&1 || need+=(clang libclang-rt-dev)
command -v rsvg-convert >/dev/null 2>&1 || need+=(librsvg2-bin)
command -v make >/dev/null 2>&1 || need+=(make)
# The Python packages the tests and scripts use (numpy: the numpy engine,
# recorded runs; jsonschema: the schema checks; pandas: reading what trace
# export writes, tests/test_trace_schema.c) go into the project's own
# virtual environment, .venv (git-ignored), whatever python3 is on PATH. An
# existing .venv that lacks one of them gets it added (torch stays).
venv() {
  if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import numpy, jsonschema' >/dev/null 2>&1; then
    echo "install-deps: making .venv (numpy, jsonschema, pandas)"
    rm -rf .venv
    python3 -m venv .venv || python3 -m venv --copies .venv || { echo "install-deps: python3 -m venv failed" >&2; exit 1; }
    .venv/bin/python -m pip install -q --disable-pip-version-check numpy jsonschema pandas ||
      { echo "install-deps: pip could not install numpy, jsonschema and pandas into .venv" >&2; exit 1; }
  elif ! .venv/bin/python -c 'import pandas' >/dev/null 2>&1; then
    echo "install-deps: adding pandas to .venv"
    .venv/bin/python -m pip install -q --disable-pip-version-check pandas ||
      { echo "install-deps: pip could not install pandas into .venv" >&2; exit 1; }
  fi
}
torch_venv() {
  [ "$torch" = 1 ] || return 0
  if ! .venv/bin/python -c 'import torch' >/dev/null 2>&1; then
    echo "install-deps: installing torch into .venv${TORCH_INDEX_URL:+ from $TORCH_INDEX_URL}"
    .venv/bin/python -m pip install -q --disable-pip-version-check ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torch ||
      { echo "install-deps: pip could not install torch into .venv" >&2; exit 1; }
  fi
}
cutile_venv() {
  [ "$cutile" = 1 ] || return 0
  local v="${CUTILE_VERSION:-1.7.0}"
  if ! .venv-cutile/bin/python -c "import numpy, cuda.tile as ct; assert ct.__version__ == '$v'" >/dev/null 2>&1; then
    echo "install-deps: making .venv-cutile (numpy, cuda-tile[tileiras] $v)"
    rm -rf .venv-cutile
    python3 -m venv .venv-cutile || { echo "install-deps: python3 -m venv failed" >&2; exit 1; }
    .venv-cutile/bin/python -m pip install -q --disable-pip-version-check numpy "cuda-tile[tileiras]==$v" ||
      { echo "install-deps: pip could not install numpy and cuda-tile[tileiras]==$v into .venv-cutile" >&2; exit 1; }
  fi
}
cd "$(dirname "$0")/.."
if [ ${#need[@]} -eq 0 ]; then
  venv
  torch_venv
  cutile_venv
  echo "install-deps: everything needed is installed"
  exit 0
fi
echo "install-deps: installing ${need[*]}"
if [ "$(id -u)" -eq 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo apt-get update -qq
  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
else
  echo "install-deps: missing Debian packages: ${need[*]}" >&2
  echo "install-deps: run as root, or: sudo apt-get install ${need[*]}" >&2
  exit 1
fi
venv
torch_venv
cutile_venv
