"""Resident memory per vector of one local node: RSS growth of the node process across create + ingest +
wait_indexed, divided by the number of vectors, against the raw float32 size.

    .venv/bin/python bench/memory.py [--n 100000] [--dim 128] [--quantization int8]

The node is a separate process (python -m shoal.node), so its baseline (interpreter, numpy, the extension)
is measured after the cluster starts and subtracted.
"""

import argparse
import tempfile
import time

import numpy as np
import psutil

import shoal


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--quantization", default=None)
    a = ap.parse_args()
    X = np.random.default_rng(1).standard_normal((a.n, a.dim)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        cluster = shoal.Cluster.local(nodes=1, data_dir=tmp)
        try:
            procs = psutil.Process().children(recursive=True)

            def rss():
                return sum(p.memory_info().rss for p in procs)

            kw = {}
            if a.quantization:
                kw["quantization"] = a.quantization
            r0 = rss()
            col = cluster.create_collection(
                "mem", dim=a.dim, metric="cosine", shards=1, index=shoal.HNSW(m=16, ef_construction=200, **kw)
            )
            col.upsert(np.arange(a.n, dtype=np.int64), X, batch_size=10_000)
            col.wait_indexed(timeout=3600)
            time.sleep(1)
            r1 = rss()
        finally:
            cluster.close()
    raw = a.n * a.dim * 4
    grow = r1 - r0
    print(
        f"n={a.n} dim={a.dim} quantization={a.quantization}: node RSS growth "
        f"{grow / 2**20:.1f} MiB for {raw / 2**20:.1f} MiB of float32 = {grow / raw:.2f}x raw, "
        f"{grow / a.n:.0f} B/vector"
    )


if __name__ == "__main__":
    main()
