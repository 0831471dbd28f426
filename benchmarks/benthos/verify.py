#!/usr/bin/env python3
"""Checks an output of the "bench" route against a reference written here.

usage: verify.py IN OUT [N]

IN is the generated input (JSON lines), OUT the route's output (Benthos's or
deident's); the first N records (default: all) are compared as parsed JSON,
so key order does not matter. The key comes from $DEIDENT_BENCH_KEY (hex).

Route: actor.user.{name,email_addr,uid} and device.hostname -> HMAC-SHA256
with the 32-byte key, hex, first 32 hex chars; src_endpoint.ip -> its /24
("10.0.1.11" -> "10.0.1.0"); time, class_uid, category_uid, activity_id,
severity_id, type_uid, metadata.product.name, actor.process.name,
dst_endpoint.port, disposition kept; everything else dropped.
"""
import hashlib
import hmac
import itertools
import json
import os
import sys

KEPT = [
    "time", "class_uid", "category_uid", "activity_id", "severity_id",
    "type_uid", "metadata.product.name", "actor.process.name",
    "dst_endpoint.port", "disposition",
]
PSEUDO = ["actor.user.name", "actor.user.email_addr", "actor.user.uid", "device.hostname"]


def get(rec, path):
    for p in path.split("."):
        rec = rec[p]
    return rec


def put(rec, path, v):
    *parents, last = path.split(".")
    for p in parents:
        rec = rec.setdefault(p, {})
    rec[last] = v


def expected(rec, key):
    out = {}
    for f in KEPT:
        put(out, f, get(rec, f))
    for f in PSEUDO:
        v = get(rec, f).encode()
        put(out, f, hmac.new(key, v, hashlib.sha256).hexdigest()[:32])
    ip = get(rec, "src_endpoint.ip").split(".")
    put(out, "src_endpoint.ip", ".".join(ip[:3] + ["0"]))
    return out


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    key = bytes.fromhex(os.environ["DEIDENT_BENCH_KEY"])
    limit = int(sys.argv[3]) if len(sys.argv) == 4 else None
    n = 0
    with open(sys.argv[1]) as fin, open(sys.argv[2]) as fout:
        pairs = itertools.zip_longest(fin, fout)
        for a, b in itertools.islice(pairs, limit):
            n += 1
            if a is None or b is None:
                sys.exit(f"record {n}: line counts differ (input has {'no' if a is None else 'a'} line, output {'no' if b is None else 'a'} line)")
            want, got = expected(json.loads(a), key), json.loads(b)
            if want != got:
                sys.exit(f"record {n} differs:\n want {json.dumps(want, sort_keys=True)}\n  got {json.dumps(got, sort_keys=True)}")
    print(f"ok: {n} records match")


if __name__ == "__main__":
    main()
