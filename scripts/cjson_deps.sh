#!/usr/bin/env bash
# usage: DEPS=$(bash scripts/cjson_deps.sh NAME) || exit 2
# Where the build finds libcjson, for the GPU scripts: prints nothing when the system has its headers (libcjson-dev), else unpacks
# the .deb files of .debs/ into /tmp/deps and prints /tmp/deps (make
# DEPS_PREFIX=...); with neither, says what to install (as NAME) and exits 2.
case "${1:-}" in -h|--help) awk 'NR>1 && !/^#/{exit} NR>1{sub(/^# ?/,""); print}' "$0"; exit 0 ;; esac
name="${1:-cjson_deps}"
cd "$(dirname "$0")/.." || exit 2
echo '#include <cjson/cJSON.h>' | gcc -E -x c - >/dev/null 2>&1 && exit 0
ls .debs/*.deb >/dev/null 2>&1 ||
  { echo "$name: libcjson's headers are missing: apt-get install libcjson-dev (or put its .deb files in .debs/)" >&2; exit 2; }
mkdir -p /tmp/deps || exit 2
for f in .debs/*.deb; do dpkg -x "$f" /tmp/deps || exit 2; done
echo /tmp/deps
