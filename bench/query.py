"""Query-path benchmark (issue 4): 1 node vs 3 nodes (3 shards, RF 1) on the shared harness's default
synthetic set (N=100k, D=128, cosine, 1000 queries, k=10): batch QPS per ef with recall@10, the smallest ef
reaching recall >= 0.95, single-query p50/p99 at that ef. Three layouts: 1 node holding 1 shard, 1 node
holding the same 3 shards as the 3-node cluster (what distribution itself costs), 3 nodes x 1 shard; then the tail latency of single queries with one
replica paused (SIGSTOP), hedging on vs off (3 nodes, 3 shards, RF 3, round robin, eventual reads).

Usage: .venv/bin/python bench/query.py [--n 100000] [--hedge-n 20000]
Prints Markdown tables; copy them into bench/RESULTS.md with the command.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(ROOT.parent / "shared" / "bench"))
import shoal  # noqa: E402
from peers import exact_knn, make_dataset, normalize  # noqa: E402

EFS = (16, 18, 20, 24, 28, 32, 36, 40, 48, 64, 100)
K = 10


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth)) / truth.size


def single_latencies(coll: shoal.Collection, Q: np.ndarray, ef: int, **kw) -> np.ndarray:
    for q in Q[:50]:  # warm-up
        coll.search(q, k=K, ef=ef, **kw)
    lat = np.empty(len(Q))
    for i, q in enumerate(Q):
        t = time.perf_counter()
        coll.search(q, k=K, ef=ef, **kw)
        lat[i] = time.perf_counter() - t
    return lat * 1000


def scaling(X: np.ndarray, Q: np.ndarray, gt: np.ndarray, nodes: int, shards: int) -> dict:
    with shoal.Cluster.local(nodes=nodes) as cluster:
        coll = cluster.create_collection(
            "q", dim=X.shape[1], metric="cosine", shards=shards, replication_factor=1,
            index=shoal.HNSW(m=16, ef_construction=200),
        )
        t0 = time.perf_counter()
        coll.upsert(np.arange(len(X)), X, batch_size=10_000)
        coll.wait_indexed(timeout=3600)
        build = time.perf_counter() - t0
        sweep = []
        for ef in EFS:
            coll.search(Q[:100], k=K, ef=ef)  # warm-up
            best = 0.0
            for _ in range(3):
                t = time.perf_counter()
                res = coll.search(Q, k=K, ef=ef, timeout=600)
                best = max(best, len(Q) / (time.perf_counter() - t))
            sweep.append((ef, recall(res.ids, gt), best))
        ok = [s for s in sweep if s[1] >= 0.95]
        ef, rec, qps = ok[0] if ok else sweep[-1]
        lat = single_latencies(coll, Q, ef)
        return {
            "nodes": nodes,
            "shards": shards,
            "build_s": build,
            "ef": ef,
            "recall": rec,
            "qps": qps,
            "p50": float(np.percentile(lat, 50)),
            "p99": float(np.percentile(lat, 99)),
            "sweep": sweep,
        }


def hedging(X: np.ndarray, Q: np.ndarray, on: bool) -> dict:
    args = [] if on else ["--hedging", "false"]
    with shoal.Cluster.local(nodes=3, node_args=args, load_balancing="round_robin") as cluster:
        cluster.create_collection(
            "h", dim=X.shape[1], metric="cosine", shards=3, replication_factor=3,
            index=shoal.HNSW(m=16, ef_construction=200),
        ).upsert(np.arange(len(X)), X, batch_size=10_000)
        cluster.collection("h").wait_indexed(timeout=3600)
        with shoal.connect(cluster.node(1).address, credentials=cluster.credentials) as via1:
            coll = via1.collection("h")
            base = single_latencies(coll, Q, 64, consistency="eventual")
            cluster.node(3).pause()
            try:
                lat, failed = [], 0
                for q in Q:
                    t = time.perf_counter()
                    try:
                        coll.search(q, k=K, ef=64, consistency="eventual", timeout=1.0)
                    except shoal.ShoalError:
                        failed += 1
                    lat.append((time.perf_counter() - t) * 1000)
            finally:
                cluster.node(3).resume()
            stats = {n.id: n.stats for n in cluster.nodes()}
        lat = np.array(lat)
        return {
            "hedging": "on" if on else "off",
            "base_p50": float(np.percentile(base, 50)),
            "base_p99": float(np.percentile(base, 99)),
            "p50": float(np.percentile(lat, 50)),
            "p99": float(np.percentile(lat, 99)),
            "max": float(lat.max()),
            "failed": failed,
            "n": len(lat),
            "hedged": stats[1]["hedged"],
        }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--hedge-n", type=int, default=20_000)
    ap.add_argument("--hedge-queries", type=int, default=300)
    a = ap.parse_args()
    X, Q = make_dataset(a.n, 128, 1000, seed=42)
    X, Q = normalize(X), normalize(Q)
    gt, _ = exact_knn(X, Q, K, "cosine")
    rows = [scaling(X, Q, gt, n, s) for n, s in ((1, 1), (1, 3), (3, 3))]
    hedge = [hedging(X[: a.hedge_n], Q[: a.hedge_queries], on) for on in (True, False)]

    print(f"\nN={a.n}, D=128, cosine, 1000 queries, k={K}, {os.cpu_count()} cores, "
          f"{time.strftime('%Y-%m-%d %H:%M')}\n")
    print("| nodes | shards (RF 1) | ingest+index s | ef | recall@10 | batch QPS | single p50 ms | single p99 ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['nodes']} | {r['shards']} | {r['build_s']:.1f} | {r['ef']} | {r['recall']:.4f} | {r['qps']:,.0f} | "
              f"{r['p50']:.3f} | {r['p99']:.3f} |")
    one, one3, three = rows
    print(f"\n3 nodes / 1 node, same 3 shards: batch QPS {three['qps'] / one3['qps']:.2f}x")
    print(f"3 nodes x 3 shards / 1 node x 1 shard: batch QPS {three['qps'] / one['qps']:.2f}x\n")
    for r in rows:
        print(f"{r['nodes']} node(s) x {r['shards']} shard(s) sweep: "
              + "  ".join(f"ef {e}: {rc:.3f}/{q:,.0f}" for e, rc, q in r["sweep"]))
    print(f"\nHedging: 3 nodes, 3 shards x RF 3, N={a.hedge_n}, {a.hedge_queries} single queries through node 1, "
          "round robin, eventual, ef 64, timeout 1 s, node 3 paused\n")
    print("| hedging | before pause p50 / p99 ms | paused p50 ms | paused p99 ms | paused max ms | failed | hedged |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for h in hedge:
        print(f"| {h['hedging']} | {h['base_p50']:.3f} / {h['base_p99']:.3f} | {h['p50']:.3f} | {h['p99']:.1f} | "
              f"{h['max']:.1f} | {h['failed']}/{h['n']} | {h['hedged']} |")


if __name__ == "__main__":
    main()
