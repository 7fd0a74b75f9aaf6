"""Filtered search with and without payload indexes (issue 14): one node, N points, single-query p50 and
recall@10 (against `exact=True`) per filter at selectivity 1/3, 1/10 and 1/100 on a keyword field and on an
integer range, next to the unfiltered p50 at the same ef, all in one run.

    .venv/bin/python bench/filtered.py [--n 100000] [--dim 64] [--queries 300] [--ef 64]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import shoal


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--ef", type=int, default=64)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    rng = np.random.default_rng(5)
    # 100 Gaussian clusters (as the shared harness's dataset), queries drawn the same way
    centres = rng.standard_normal((100, a.dim)).astype(np.float32) * 3
    x = (centres[rng.integers(0, 100, a.n)] + rng.standard_normal((a.n, a.dim))).astype(np.float32)
    u = rng.random(a.n)
    cat = np.where(u < 1 / 100, "c", np.where(u < 1 / 100 + 1 / 10, "b", np.where(u < 0.11 + 1 / 3, "a", "z")))
    num = rng.integers(0, 1000, a.n)
    payloads = [{"cat": str(c), "n": int(v), "lang": "en" if i % 2 else "de", "year": 1990 + int(v) % 35}
                for i, (c, v) in enumerate(zip(cat, num))]
    q = (centres[rng.integers(0, 100, a.queries)] + rng.standard_normal((a.queries, a.dim))).astype(np.float32)
    filters = {
        "keyword 1/3": {"cat": "a"},
        "keyword 1/10": {"cat": "b"},
        "keyword 1/100": {"cat": "c"},
        "int range 1/3": {"n": {"$lt": 333}},
        "int range 1/10": {"n": {"$gte": 500, "$lt": 600}},
        "int range 1/100": {"n": {"$lt": 10}},
        "lang=en & year>=2010": {"lang": "en", "year": {"$gte": 2010}},
    }
    rows = []
    with shoal.Cluster.local(nodes=1) as cl:
        coll = cl.create_collection("f", dim=a.dim, metric="l2", shards=1, index=shoal.HNSW(m=16, ef_construction=100))
        t = time.perf_counter()
        for lo in range(0, a.n, 10_000):
            coll.upsert(np.arange(lo, min(lo + 10_000, a.n)), x[lo : lo + 10_000], payloads=payloads[lo : lo + 10_000])
        coll.wait_indexed()
        print(f"ingest+index {a.n} x {a.dim}: {time.perf_counter() - t:.1f} s", flush=True)

        def p50(f) -> float:
            for i in range(20):
                coll.search(q[i : i + 1], 10, filter=f, ef=a.ef)
            lat = []
            for i in range(a.queries):
                t0 = time.perf_counter()
                coll.search(q[i : i + 1], 10, filter=f, ef=a.ef)
                lat.append(time.perf_counter() - t0)
            return float(np.median(lat)) * 1e3

        def recall(f) -> float:
            want = coll.search(q, 10, filter=f, exact=True).ids
            got = coll.search(q, 10, filter=f, ef=a.ef).ids
            hit = sum(len(set(g) & set(w) - {-1}) for g, w in zip(got, want))
            return hit / max(1, sum(len(set(w) - {-1}) for w in want))

        base = p50(None)
        print(f"unfiltered p50 {base:.3f} ms, recall {recall(None):.3f}", flush=True)
        for phase in ("no index", "indexed"):
            if phase == "indexed":
                t = time.perf_counter()
                for field, kind in (("cat", "keyword"), ("n", "integer"), ("lang", "keyword"), ("year", "integer")):
                    coll.create_payload_index(field, kind)
                print(f"4 payload indexes built in {time.perf_counter() - t:.2f} s", flush=True)
            for name, f in filters.items():
                r = {"phase": phase, "filter": name, "p50_ms": p50(f), "recall": recall(f), "unfiltered_p50_ms": base}
                r["vs_unfiltered"] = r["p50_ms"] / base
                rows.append(r)
                print(f"{phase:9s} {name:22s} p50 {r['p50_ms']:.3f} ms ({r['vs_unfiltered']:.2f}x unfiltered)"
                      f"  recall {r['recall']:.3f}", flush=True)
    if a.out:
        with open(a.out, "w") as fh:
            json.dump({"args": vars(a), "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
