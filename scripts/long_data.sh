#!/usr/bin/env bash
# usage: scripts/long_data.sh IN OUT [NAMES_PER_LINE]
# Long documents for the suites' long blocks: lines of N names of IN (6 by
# default), each capitalised (52 letters + space: a vocabulary of 54, wider
# than a CUDA warp), 1000 lines (about 7 characters a name: 6 names make
# about 40 characters, 24 about 165), written to OUT.
set -eu
case "${1:-}" in -h|--help) awk 'NR>1 && !/^#/{exit} NR>1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
[ $# -eq 2 ] || [ $# -eq 3 ] || { echo "usage: long_data.sh IN OUT [NAMES_PER_LINE]" >&2; exit 2; }
per="${3:-6}"
case "$per" in ''|*[!0-9]*|0) echo "long_data.sh: NAMES_PER_LINE must be a whole number >= 1" >&2; exit 2 ;; esac
awk -v per="$per" 'NF { n++; w = toupper(substr($1,1,1)) substr($1,2); line = line (line == "" ? "" : " ") w;
          if (n % per == 0) { print line; line = ""; if (n == 1000 * per) exit } }' "$1" >"$2.tmp"
mv "$2.tmp" "$2"
