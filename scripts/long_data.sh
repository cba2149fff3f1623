#!/usr/bin/env bash
# Documents longer than every block the suites use: lines of six names of
# IN, each capitalised (52 letters + space: a vocabulary of 54, wider than a
# CUDA warp), 1000 lines (about 40 characters each), written to OUT.
#   scripts/long_data.sh IN OUT
set -eu
[ $# -eq 2 ] || { echo "usage: long_data.sh IN OUT" >&2; exit 2; }
awk 'NF { n++; w = toupper(substr($1,1,1)) substr($1,2); line = line (line == "" ? "" : " ") w;
          if (n % 6 == 0) { print line; line = ""; if (n == 6000) exit } }' "$1" >"$2.tmp"
mv "$2.tmp" "$2"
