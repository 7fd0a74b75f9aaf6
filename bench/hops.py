"""Where single-request latency goes on local clusters (issue 4's single-query p50): the cost of one
node-to-node hop and of the 3-node read path when every shard is served by the coordinator itself.

Usage: .venv/bin/python bench/hops.py
1. 3 nodes, 3 shards x RF 1 (flat, 300 points), a client of node 1 only: p50 of `get` of one id whose shard
   is on node 1 vs one hop away, and of `count` / a one-query `search` (3 shards: 1 local, 2 remote).
2. 30k x 128-d (the harness's synthetic set), 3 shards, HNSW, default ef, one-query searches: 1 node holding
   all 3 shards vs 3 nodes x RF 3 read through node 1 with `eventual` + `locality` (every shard local to
   node 1), also with nodes 2 and 3 paused, and through the 3-address cluster client at `session`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(ROOT.parent / "shared" / "bench"))
import shoal  # noqa: E402
from peers import make_dataset, normalize  # noqa: E402


def p50(fn, n: int = 300) -> float:
    for _ in range(30):
        fn()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.percentile(ts, 50) * 1000)


def hops() -> None:
    with shoal.Cluster.local(nodes=3) as c:
        col = c.create_collection("x", dim=8, shards=3, replication_factor=1, index="flat")
        col.upsert(np.arange(300), np.random.default_rng(0).random((300, 8)))
        with shoal.connect(c.node(1).address, credentials=c.credentials) as via1:
            c1 = via1.collection("x")
            local, remote = [], []
            for i in range(12):
                t = p50(lambda: c1.get([i], consistency="eventual"), 100)
                # which node holds id i's shard: the one whose `reads` counter moved
                before = {n.id: n.stats["reads"] for n in c.nodes()}
                c1.get([i], consistency="eventual")
                after = {n.id: n.stats["reads"] for n in c.nodes()}
                (local if after[1] > before[1] else remote).append(t)
            print(f"get 1 id, shard on node 1: p50 {np.median(local):.3f} ms ({len(local)} ids); "
                  f"one hop away: {np.median(remote):.3f} ms ({len(remote)} ids)")
            print(f"count (1 local + 2 remote shards): p50 {p50(lambda: c1.count(consistency='eventual')):.3f} ms")
            q = np.ones(8)
            print(f"search 1 query (1 local + 2 remote shards): p50 "
                  f"{p50(lambda: c1.search(q, k=1, consistency='eventual')):.3f} ms")


def local_path() -> None:
    X, Q = make_dataset(30000, 128, 300, seed=42)
    X, Q = normalize(X), normalize(Q)

    def lat(coll, **kw) -> float:
        it = iter(range(10**9))
        return p50(lambda: coll.search(Q[next(it) % len(Q)], k=10, **kw))

    with shoal.Cluster.local(nodes=1) as c:
        col = c.create_collection("x", dim=128, shards=3, replication_factor=1)
        col.upsert(np.arange(len(X)), X)
        col.wait_indexed()
        print(f"1 node, 3 shards, session: p50 {lat(col):.3f} ms")
    with shoal.Cluster.local(nodes=3) as c:
        col = c.create_collection("x", dim=128, shards=3, replication_factor=3)
        col.upsert(np.arange(len(X)), X)
        col.wait_indexed()
        print(f"3 nodes x RF 3, cluster client (3 addresses), session: p50 {lat(col):.3f} ms")
        with shoal.connect(c.node(1).address, credentials=c.credentials) as via1:
            c1 = via1.collection("x")
            print(f"3 nodes x RF 3, client of node 1, eventual+locality: p50 "
                  f"{lat(c1, consistency='eventual', load_balancing='locality'):.3f} ms")
            c.node(2).pause()
            c.node(3).pause()
            try:
                print(f"  same with nodes 2 and 3 paused: p50 "
                      f"{lat(c1, consistency='eventual', load_balancing='locality'):.3f} ms")
            finally:
                c.node(2).resume()
                c.node(3).resume()


if __name__ == "__main__":
    print(time.strftime("%Y-%m-%d %H:%M"))
    hops()
    local_path()
