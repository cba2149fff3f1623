#!/usr/bin/env bash
# Install the Debian packages the build and the tests need, if they are
# missing: libcjson-dev (traces), libcriterion-dev (tests), curl (fetching
# names.txt), clang with libFuzzer and the sanitizer runtimes (make fuzz,
# make test SANITIZE=1), librsvg2-bin (rsvg-convert, to look at plots). As root it installs them; otherwise through sudo when that works
# without a password; otherwise it names the packages and exits 1.
set -eu
need=()
have_header() { echo "#include <$1>" | gcc -E -x c - >/dev/null 2>&1; }
have_header cjson/cJSON.h || need+=(libcjson-dev)
have_header criterion/criterion.h || need+=(libcriterion-dev)
command -v curl >/dev/null 2>&1 || need+=(curl)
[ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import numpy' >/dev/null 2>&1 || need+=(python3-numpy)
[ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import jsonschema' >/dev/null 2>&1 || need+=(python3-jsonschema)
command -v gcc >/dev/null 2>&1 || need+=(gcc)
echo 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { (void)d; (void)n; return 0; }' |
  clang -fsanitize=fuzzer,address,undefined -x c - -o /dev/null >/dev/null 2>&1 || need+=(clang libclang-rt-dev)
command -v rsvg-convert >/dev/null 2>&1 || need+=(librsvg2-bin)
command -v make >/dev/null 2>&1 || need+=(make)
if [ ${#need[@]} -eq 0 ]; then
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
