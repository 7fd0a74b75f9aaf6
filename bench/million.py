"""One node, a million vectors (issue 14): ingest until indexed, resident memory, batch QPS and single-query
p50 at the ef reaching recall@10 >= 0.95 (against a NumPy brute force), and restart time (process start to
the first answered search, graph loaded from disk), for float32 or int8.

    .venv/bin/python bench/million.py [--n 1000000] [--dim 128] [--quantization int8]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import psutil

import shoal


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--quantization", default="none")
    a = ap.parse_args()
    rng = np.random.default_rng(42)
    centres = rng.standard_normal((1000, a.dim)).astype(np.float32) * 3
    x = (centres[rng.integers(0, 1000, a.n)] + rng.standard_normal((a.n, a.dim))).astype(np.float32)
    q = (centres[rng.integers(0, 1000, a.queries)] + rng.standard_normal((a.queries, a.dim))).astype(np.float32)
    # cosine ground truth by brute force
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    truth = np.stack([np.argpartition(-(xn @ row), 10)[:10] for row in qn])
    del xn
    with tempfile.TemporaryDirectory() as tmp:
        cluster = shoal.Cluster.local(nodes=1, data_dir=tmp)
        node = psutil.Process().children(recursive=True)[0]
        r0 = node.memory_info().rss
        col = cluster.create_collection(
            "m", dim=a.dim, metric="cosine", shards=1, index=shoal.HNSW(quantization=a.quantization)
        )
        t = time.perf_counter()
        for lo in range(0, a.n, 100_000):
            col.upsert(np.arange(lo, min(lo + 100_000, a.n)), x[lo : lo + 100_000], batch_size=10_000)
        t_ingest = time.perf_counter() - t
        col.wait_indexed(timeout=7200)
        t_index = time.perf_counter() - t
        time.sleep(1)
        rss = node.memory_info().rss - r0
        print(f"n={a.n} dim={a.dim} quantization={a.quantization}")
        print(f"ingest acknowledged {t_ingest:.1f} s, until indexed {t_index:.1f} s ({a.n / t_index:,.0f} vectors/s)")
        print(f"node RSS growth {rss / 2**20:.0f} MiB = {rss / a.n:.0f} B/vector ({rss / (a.n * a.dim * 4):.2f}x raw)")

        def recall(ids):
            return float(np.mean([len(set(g.tolist()) & set(w.tolist())) / 10 for g, w in zip(ids, truth)]))

        chosen = None
        for ef in (32, 48, 64, 96, 128, 192, 256):
            col.search(q[:50], 10, ef=ef)
            t = time.perf_counter()
            r = col.search(q, 10, ef=ef, timeout=600)
            qps = len(q) / (time.perf_counter() - t)
            rec = recall(r.ids)
            print(f"  ef {ef:>3}: recall@10 {rec:.3f}, batch {qps:,.0f} QPS")
            if rec >= 0.95:
                chosen = ef
                break
        if chosen is not None:
            lat = []
            for row in q[:300]:
                t = time.perf_counter()
                col.search(row, 10, ef=chosen)
                lat.append(time.perf_counter() - t)
            print(f"  single-query p50 at ef {chosen}: {np.median(lat) * 1e3:.3f} ms")
        cluster.close()
        t = time.perf_counter()
        cluster = shoal.Cluster.local(nodes=1, data_dir=tmp)
        col = cluster.collection("m")
        col.search(q[0], 10)
        print(f"restart: process start to first answered search {time.perf_counter() - t:.1f} s")
        cluster.close()


if __name__ == "__main__":
    main()
