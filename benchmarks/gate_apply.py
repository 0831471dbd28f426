#!/usr/bin/env python3
"""The gate's cost end to end (issue 5): `deident apply` on the benchmark
route over a generated file, with the gate off and on, interleaved.

Each round runs every binary given, gate off and on, alternating which
goes first from round to round, on one pinned CPU with GOMAXPROCS=1, and
records the CPU time (user+sys) per record of each run. It prints each
round, then per binary the medians of the off and on times and of the
per-round on/off ratios: single runs on the shared machine drift by tens
of percent, so only medians of many rounds are worth quoting.

    go build -o /tmp/deident ./cmd/deident
    python3 benchmarks/gate_apply.py --rounds 20 /tmp/deident [/tmp/deident-other ...]

The input (default /tmp/gate-apply.jsonl, 1,000,000 records of `deident
gen`, seed 1, about 550 MB) is written by the first binary when missing.
--user counts user time only (the kernel's copy of the input, the same in
both runs, varies the most).
"""
import argparse
import os
import resource
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = os.path.join(HERE, "..", "configs", "bench.yaml")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("binaries", nargs="+")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--cpu", default="1", help="CPU to pin the runs to (taskset -c)")
    ap.add_argument("--records", type=int, default=1000000)
    ap.add_argument("--input", default="/tmp/gate-apply.jsonl")
    ap.add_argument("--user", action="store_true", help="user time only")
    args = ap.parse_args()

    if not os.path.exists(args.input):
        with open(args.input, "wb") as f:
            subprocess.run([args.binaries[0], "gen", "--count", str(args.records)], stdout=f, check=True)
    with open(args.input, "rb") as f:
        records = sum(1 for _ in f)

    def run(binary, gate):
        env = dict(os.environ, GOMAXPROCS="1", DEIDENT_VENDORS_BENCH_GATE_ENABLED="true" if gate else "false")
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(["taskset", "-c", args.cpu, binary, "apply", "--config", CONFIG, "--route", "bench",
                        "--in", args.input, "--out", os.devnull], env=env, stderr=subprocess.DEVNULL, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime - before.ru_utime
        if not args.user:
            cpu += after.ru_stime - before.ru_stime
        return cpu / records * 1e9

    res = {b: ([], [], []) for b in args.binaries}
    for r in range(args.rounds):
        flip = r % 2 == 1
        for b in (reversed(args.binaries) if flip else args.binaries):
            t = {}
            for gate in ((True, False) if flip else (False, True)):
                t[gate] = run(b, gate)
            off, on, ratio = res[b]
            off.append(t[False])
            on.append(t[True])
            ratio.append(t[True] / t[False])
            print(f"round {r}: {b}: off {t[False]:.0f} ns, on {t[True]:.0f} ns, on/off {t[True] / t[False]:.3f}", flush=True)
    for b, (off, on, ratio) in res.items():
        print(f"{b}: median off {statistics.median(off):.0f} ns/record, on {statistics.median(on):.0f}, "
              f"on/off {statistics.median(ratio):.3f} ({len(ratio)} rounds)")


if __name__ == "__main__":
    sys.exit(main())
