#!/usr/bin/env bash
# Run every test binary given; print one line per binary and a summary.
# Exits non-zero if any binary fails (Criterion exits non-zero on a failed test).
set -u
failed=()
for t in "$@"; do
  echo "=== $t"
  if ! "$t" --jobs 2; then failed+=("$t"); fi
done
echo
if [ ${#failed[@]} -eq 0 ]; then
  echo "all ${#} test binaries passed"
else
  echo "FAILED: ${failed[*]}"
  exit 1
fi
