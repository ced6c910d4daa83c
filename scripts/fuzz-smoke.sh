#!/usr/bin/env bash
# Runs every Go fuzz target of the module for a short while (FUZZTIME, 10s by
# default). The seed corpora already run as ordinary tests; this adds a
# little coverage-guided exploration on every CI run.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-10s}
count=0
for pkg in $(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do
	for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
		echo "fuzz: $pkg $target ($fuzztime)"
		go test -run "^$" -fuzz "^${target}\$" -fuzztime "$fuzztime" -fuzzminimizetime 2s "$pkg" >/tmp/fuzz.$$.log 2>&1 || {
			cat /tmp/fuzz.$$.log; rm -f /tmp/fuzz.$$.log; exit 1; }
		count=$((count + 1))
	done
done
rm -f /tmp/fuzz.$$.log
echo "fuzz: $count targets ran clean"
