set -u -o pipefail
mkdir -p /tmp/deps && for f in .debs/*.deb; do dpkg -x "$f" /tmp/deps; done
make -j16 DEPS_PREFIX=/tmp/deps build/compare > $OUT/build.log 2>&1 || { tail -30 $OUT/build.log; exit 1; }
timeout 500 build/compare --bench --engines cuda --sizes sweep --precision both --baseline torch --steps 40 --repeats 3 --trace $OUT/sweep.json --markdown $OUT/sweep.md 2>&1 | tee $OUT/sweep.log | grep -v '^bench:'
