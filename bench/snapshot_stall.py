"""Write latency while shard snapshots are built (issue "Integrity", item 5): one local node, one shard holding N
points (128-d, HNSW), `--raft-snapshot-every EVERY`; one writer upserts BATCH-point batches at quorum for SECONDS
and records each call's latency. A snapshot that holds the apply lock while it serialises the store shows up as
the slowest writes; one built from a point-in-time capture outside the lock does not.

Usage: .venv/bin/python bench/snapshot_stall.py [--n 100000] [--every 200] [--batch 10] [--seconds 30]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
import shoal  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--every", type=int, default=200)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=30.0)
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="shoal-snapstall-"))
    with shoal.Cluster.local(nodes=1, data_dir=root, node_args=["--raft-snapshot-every", str(a.every)]) as c:
        coll = c.create_collection("s", dim=a.dim, metric="cosine", shards=1)
        rng = np.random.default_rng(0)
        for s in range(0, a.n, 5000):
            m = min(5000, a.n - s)
            coll.upsert(np.arange(s, s + m), rng.normal(size=(m, a.dim)).astype(np.float32))
        coll.wait_indexed(timeout=600)
        lat = []
        next_id = a.n
        vecs = rng.normal(size=(a.batch, a.dim)).astype(np.float32)
        end = time.monotonic() + a.seconds
        while time.monotonic() < end:
            ids = np.arange(next_id, next_id + a.batch)
            t = time.perf_counter()
            coll.upsert(ids, vecs, consistency="quorum")
            lat.append(time.perf_counter() - t)
            next_id += a.batch
        log = (root / "node-1" / "node.log").read_text(errors="replace")
        snaps = log.count("built snapshot")
    ms = np.asarray(lat) * 1000
    print(
        f"n={a.n} every={a.every} batch={a.batch}: {len(ms)} writes in {a.seconds:g} s, {snaps} snapshots built; "
        f"latency ms p50 {np.percentile(ms, 50):.2f} p99 {np.percentile(ms, 99):.2f} p99.9 {np.percentile(ms, 99.9):.2f} "
        f"max {ms.max():.1f}; writes over 100 ms: {(ms > 100).sum()}"
    )


if __name__ == "__main__":
    main()
