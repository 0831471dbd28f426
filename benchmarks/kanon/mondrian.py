#!/usr/bin/env python3
"""Batch baseline for the k-anonymity stage: Mondrian on UCI Adult.

Strict multidimensional partitioning as published by LeFevre, DeWitt and
Ramakrishnan, "Mondrian Multidimensional K-Anonymity", ICDE 2006: split a
partition at the median of the quasi-identifier with the widest normalized
range, all records sharing a value on one side, while both halves keep at
least k records (here: k distinct entities, each Adult row being its own
entity); a partition no quasi-identifier can split is an equivalence class.

Quasi-identifiers as in transforms/kanon's TestAdultQuality: age (numeric),
sex, race, marital-status, education, native-country, workclass, the
categoricals ordered by their ARX generalization hierarchy (leaves sorted by
their path from the root, so that every hierarchy node is a contiguous
range). Mondrian suppresses nothing.

Information loss is the normalized certainty penalty (Xu, Wang, Pei, Wang,
Shi and Fu, "Utility-based anonymization using local recoding", KDD 2006),
averaged over records and quasi-identifiers:
  - categorical: the class's values generalize to their lowest common
    ancestor in the ARX hierarchy; NCP = (leaves under it - 1) / (leaves - 1),
    as transforms/kanon computes it;
  - age: NCP = (max - min) / (domain width). Two domains are printed:
    "NCP" uses the ARX age hierarchy's leaves (1..99, width 98), the way
    transforms/kanon counts age; "NCP-data" uses the data's range (17..90),
    Xu et al.'s definition.

Standard library only. Usage:
  python3 benchmarks/kanon/mondrian.py [--data DIR] [--k 2,5,10,50]
"""

import argparse
import csv
import os
import sys
import time

QIS = ["age", "sex", "race", "marital-status", "education", "native-country", "workclass"]


def load_hierarchy(path):
    """Returns (rows, order): rows maps a leaf to its columns (leaf first);
    order maps a leaf to its position when leaves are sorted root-first."""
    rows = {}
    with open(path, newline="") as f:
        for r in csv.reader(f, delimiter=";"):
            if r:
                rows[r[0]] = r
    leaves = sorted(rows, key=lambda v: (list(reversed(rows[v])), v))
    return rows, {v: i for i, v in enumerate(leaves)}


def lca_leaves(rows, values):
    """Leaves under the lowest common ancestor of values in the hierarchy."""
    cols = len(next(iter(rows.values())))
    vs = list(values)
    for c in range(cols):
        node = rows[vs[0]][c]
        if all(rows[v][c] == node for v in vs):
            return sum(1 for r in rows.values() if r[c] == node)
    return len(rows)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.path.join(here, "..", "..", "transforms", "kanon", "testdata", "adult"))
    ap.add_argument("--k", default="2,5,10,50")
    args = ap.parse_args()

    hier = {q: load_hierarchy(os.path.join(args.data, f"adult_hierarchy_{q}.csv")) for q in QIS}
    with open(os.path.join(args.data, "adult.csv"), newline="") as f:
        rd = csv.reader(f, delimiter=";")
        header = next(rd)
        col = {h: i for i, h in enumerate(header)}
        data = [[r[col[q]] for q in QIS] for r in rd if r]
    n = len(data)
    # Numeric codes: age as itself, categoricals by hierarchy order.
    codes = []
    for r in data:
        codes.append([int(r[0])] + [hier[q][1][r[i]] for i, q in enumerate(QIS) if i > 0])
    nq = len(QIS)
    lo_all = [min(c[i] for c in codes) for i in range(nq)]
    hi_all = [max(c[i] for c in codes) for i in range(nq)]
    width_all = [max(1, hi_all[i] - lo_all[i]) for i in range(nq)]
    age_leaves = [int(v) for v in hier["age"][0]]
    age_domain = max(age_leaves) - min(age_leaves)

    print(f"Mondrian (strict multidimensional, LeFevre et al. ICDE 2006) on UCI Adult: {n} records, QIs {', '.join(QIS)}")
    print(f"{'k':>4} {'suppressed':>11} {'NCP':>7} {'NCP-data':>9} {'classes':>8} {'min size':>9} {'seconds':>8}")
    for k in [int(x) for x in args.k.split(",")]:
        t0 = time.time()
        classes = []
        stack = [list(range(n))]
        while stack:
            part = stack.pop()
            lo = [min(codes[r][i] for r in part) for i in range(nq)]
            hi = [max(codes[r][i] for r in part) for i in range(nq)]
            dims = sorted(range(nq), key=lambda i: (-(hi[i] - lo[i]) / width_all[i], i))
            for d in dims:
                if hi[d] == lo[d]:
                    break
                vals = sorted(codes[r][d] for r in part)
                median = vals[(len(vals) - 1) // 2]
                left = [r for r in part if codes[r][d] <= median]
                if len(left) == len(part):  # the median is the maximum: split below it
                    left = [r for r in part if codes[r][d] < median]
                right_n = len(part) - len(left)
                if len(left) >= k and right_n >= k:
                    lset = set(left)
                    stack.append(left)
                    stack.append([r for r in part if r not in lset])
                    break
            else:
                classes.append(part)
                continue
            if hi[d] == lo[d] or not (len(left) >= k and right_n >= k):
                classes.append(part)
        ncp = ncp_data = 0.0
        for part in classes:
            ages = [codes[r][0] for r in part]
            span = max(ages) - min(ages)
            cat = 0.0
            for i, q in enumerate(QIS):
                if i == 0:
                    continue
                rows = hier[q][0]
                cat += (lca_leaves(rows, {data[r][i] for r in part}) - 1) / (len(rows) - 1)
            ncp += len(part) * (span / age_domain + cat)
            ncp_data += len(part) * (span / width_all[0] + cat)
        ncp /= n * nq
        ncp_data /= n * nq
        print(f"{k:>4} {0:>10.2f}% {ncp:>7.3f} {ncp_data:>9.3f} {len(classes):>8} {min(len(p) for p in classes):>9} {time.time() - t0:>8.1f}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
