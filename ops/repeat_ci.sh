#!/bin/bash
# Run .ci/run N times in a row on clean clones of this repository at HEAD,
# then the README's test command as on a fresh machine (no ../shared, no
# redis-server on PATH, none of BITCOIND / BITCOIN_CLI / MINERD /
# HASHCOOP_TEST_DATABASE_URL). Results: OUT/summary.txt, one log per run.
#   ops/repeat_ci.sh [N=5] [OUT=/tmp/repeat-ci-REV]
set -u
repo=$(cd "$(dirname "$0")/.." && pwd)
rev=$(git -C "$repo" rev-parse --short HEAD)
n=${1:-5}
out=${2:-/tmp/repeat-ci-$rev}
mkdir -p "$out"
parent=$(dirname "$repo")  # .ci/run finds ../shared next to the clone: clone beside the repository
for i in $(seq 1 "$n"); do
  dir="$parent/ci-repeat-$i"
  rm -rf "$dir"; git clone -q "$repo" "$dir"; git -C "$dir" checkout -q "$rev"
  s=$(date +%s); (cd "$dir" && ./.ci/run) > "$out/run$i.log" 2>&1; rc=$?
  echo "run $i: rc=$rc $(( $(date +%s) - s ))s $(grep -E '[0-9]+ passed' "$out/run$i.log" | tail -1)" >> "$out/summary.txt"
  rm -rf "$dir"
done
# a fresh machine: PATH without redis-*, a clone with no ../shared beside it
bin=$(mktemp -d); for f in /usr/bin/*; do case $(basename "$f") in redis-*) ;; *) ln -sf "$f" "$bin/";; esac; done
fresh=$(mktemp -d); git clone -q "$repo" "$fresh/hashcoop"; git -C "$fresh/hashcoop" checkout -q "$rev"
s=$(date +%s)
(cd "$fresh/hashcoop" && env -i HOME="$HOME" PATH="$(dirname "$(command -v python3)"):$bin" sh -c './dev test -q') > "$out/fresh.log" 2>&1; rc=$?
echo "fresh: rc=$rc $(( $(date +%s) - s ))s $(grep -E '[0-9]+ (passed|skipped)' "$out/fresh.log" | tail -1)" >> "$out/summary.txt"
rm -rf "$fresh" "$bin"
cat "$out/summary.txt"
