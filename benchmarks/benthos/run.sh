#!/usr/bin/env bash
# Runs the one-core throughput comparison described in README.md: Benthos
# (config.yaml beside this script) and the floor (benchmarks/floor), each
# pinned to CPU 0 with GOMAXPROCS=1, 3 runs under hyperfine, and prints the
# median records/s of each. Run from the repository root.
#
# env: BENTHOS (default /tmp/benthos-peer/benthos, see build.sh),
#      IN (default /tmp/bench.jsonl), RECORDS (default 1000000),
#      RUNS (default 3), CPU (default 0), DEIDENT_BENCH_KEY (default below),
#      DEIDENT (optional: a deident binary; runs the bench route too, with
#      configs/bench.yaml).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
BENTHOS=${BENTHOS:-/tmp/benthos-peer/benthos}
IN=${IN:-/tmp/bench.jsonl}
RECORDS=${RECORDS:-1000000}
RUNS=${RUNS:-3}
CPU=${CPU:-0}
export DEIDENT_BENCH_KEY=${DEIDENT_BENCH_KEY:-000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f}
results=${RESULTS:-/tmp/bench-results}
mkdir -p "$results"
rm -f "$results"/*.json

if [ ! -s "$IN" ]; then
  DEIDENT_BENCH_GEN_OUT="$IN" DEIDENT_BENCH_GEN_COUNT="$RECORDS" \
    go test ./benchmarks/floor -run TestWriteBenchInput -count=1
fi
n=$(wc -l < "$IN")
go build -o "$results/floor" ./benchmarks/floor
cat "$IN" > /dev/null # into the page cache

pin="taskset -c $CPU env GOMAXPROCS=1"

hyperfine --runs "$RUNS" --export-json "$results/floor.json" \
  "$pin $results/floor -in $IN -key $DEIDENT_BENCH_KEY"

hyperfine --runs "$RUNS" --export-json "$results/benthos.json" \
  --prepare "rm -f /tmp/out-benthos.jsonl" \
  "$pin IN=$IN OUT=/tmp/out-benthos.jsonl $BENTHOS -c $here/config.yaml"
python3 "$here/verify.py" "$IN" /tmp/out-benthos.jsonl 10000

if [ -n "${DEIDENT:-}" ]; then
  # deident's pseudonyms differ from the plain HMAC(key, value) of the other
  # two by design (a subkey derived per purpose, the namespace framed into the
  # message), so verify.py cannot compare them; the work per field is the same
  # (one HMAC-SHA256 of a short value). The output is checked for count and shape.
  hyperfine --runs "$RUNS" --export-json "$results/deident.json" \
    --prepare "rm -f /tmp/out-deident.jsonl" \
    "$pin $DEIDENT apply --config configs/bench.yaml --route bench --in $IN --out /tmp/out-deident.jsonl"
  hyperfine --runs "$RUNS" --export-json "$results/deident-nocache.json" \
    --prepare "rm -f /tmp/out-deident.jsonl" \
    "$pin DEIDENT_VENDORS_BENCH_CACHE_ENTRIES=-1 $DEIDENT apply --config configs/bench.yaml --route bench --in $IN --out /tmp/out-deident.jsonl"
  test "$(wc -l < /tmp/out-deident.jsonl)" -eq "$n"
fi

for f in "$results"/*.json; do
  python3 - "$f" "$n" <<'PY'
import json, os, sys
r = json.load(open(sys.argv[1]))["results"][0]
n = int(sys.argv[2])
name = os.path.basename(sys.argv[1])[:-5]
cpu = r["user"] + r["system"]  # means over the runs
print(f"{name:8s} median {r['median']:7.2f}s  {n / r['median']:>10,.0f} records/s"
      f"  | cpu {cpu:7.2f}s  {n / cpu:>10,.0f} records/cpu-s"
      f"  (runs: {', '.join(f'{t:.2f}s' for t in r['times'])})")
PY
done
