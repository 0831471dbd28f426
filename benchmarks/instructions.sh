#!/usr/bin/env bash
# Instructions per record of a Go benchmark, counted by valgrind's callgrind:
# repeatable on a shared, noisy machine where wall time is not. Runs the
# benchmark at two iteration counts and divides the difference, so set-up
# cost cancels out. (Async preemption is off: callgrind cannot follow its signals.)
#   usage: benchmarks/instructions.sh BenchmarkRouteCacheWarm [N]
#          PKG=./transforms/gate benchmarks/instructions.sh BenchmarkApplyGate/gate=observer 20000
#          PKG=./transforms/kanon benchmarks/instructions.sh BenchmarkAggregate 65536
# (GOGC=off, so a collection of the set-up's garbage cannot land in one run only.)
set -euo pipefail
cd "$(dirname "$0")/.."
bench=${1:?benchmark name}
n=${2:-20000}
bin=$(mktemp -d)/bench.test
pkg=${PKG:-./benchmarks}
go test -c -o "$bin" "$pkg"
count() {
  # In the package directory, as go test runs it (benchmarks read testdata and configs by relative path).
  (cd "$pkg" && GOGC=off GODEBUG=asyncpreemptoff=1 GOMAXPROCS=1 valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" -test.run '^$' -test.bench "^$bench\$" -test.benchtime "${1}x" -test.count 1 2>&1) |
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
a=$(count "$n")
b=$(count $((2 * n)))
echo "$bench: $(( (b - a) / n )) instructions per op (callgrind, N=$n and $((2 * n)))"
