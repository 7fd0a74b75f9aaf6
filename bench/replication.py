"""Replication benchmark (issue 3): acknowledged ingest rate on 3 local node processes at `quorum` with
RF=3 vs RF=1, in batches of 10k 128-d vectors, and the time until every replica is indexed.

Usage: .venv/bin/python bench/replication.py [--n 100000] [--dim 128] [--batch 10000] [--shards 3]
Prints a Markdown table; copy it into bench/RESULTS.md with the command.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
import shoal  # noqa: E402


def start_nodes(root: Path, n: int) -> tuple[list[subprocess.Popen], list[str]]:
    procs, addrs = [], []
    for i in range(1, n + 1):
        d = root / f"node-{i}"
        d.mkdir(parents=True)
        cmd = [sys.executable, "-m", "shoal.node", "--data-dir", str(d), "--listen", "127.0.0.1:0", "--node-id", str(i), "--insecure"]
        if addrs:
            cmd += ["--join", addrs[0]]
        p = subprocess.Popen(cmd, stdout=open(d / "node.log", "w"), stderr=subprocess.STDOUT)
        procs.append(p)
        for _ in range(1200):
            f = d / "node.json"
            if f.exists():
                import json

                addrs.append(json.loads(f.read_text())["address"])
                break
            if p.poll() is not None:
                raise SystemExit(f"node {i} exited; see {d / 'node.log'}")
            time.sleep(0.05)
        else:
            raise SystemExit(f"node {i} not ready")
    return procs, addrs


def run(cluster: shoal.Cluster, name: str, rf: int, shards: int, data: np.ndarray, batch: int) -> dict:
    coll = cluster.create_collection(name, dim=data.shape[1], metric="cosine", shards=shards, replication_factor=rf)
    n = data.shape[0]
    lat = []
    t0 = time.perf_counter()
    for s in range(0, n, batch):
        t = time.perf_counter()
        coll.upsert(np.arange(s, min(s + batch, n)), data[s : s + batch], consistency="quorum")
        lat.append(time.perf_counter() - t)
    ack = time.perf_counter() - t0
    coll.wait_indexed(timeout=1800)
    indexed = time.perf_counter() - t0
    assert coll.count(consistency="strong") == n
    return {
        "rf": rf,
        "ack_rate": n / ack,
        "ack_s": ack,
        "indexed_s": indexed,
        "batch_p50_ms": 1000 * float(np.median(lat)),
        "batch_max_ms": 1000 * max(lat),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--shards", type=int, default=3)
    ap.add_argument("--nodes", type=int, default=3)
    a = ap.parse_args()
    data = np.random.default_rng(42).standard_normal((a.n, a.dim)).astype(np.float32)
    rows = []
    for rf in (3, 1):
        with tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp:
            procs, addrs = start_nodes(Path(tmp), a.nodes)
            try:
                with shoal.connect(addrs) as cluster:
                    rows.append(run(cluster, f"bench_rf{rf}", rf, a.shards, data, a.batch))
            finally:
                for p in procs:
                    p.terminate()
                for p in procs:
                    p.wait(30)
    print(f"\n{a.nodes} local nodes, N={a.n}, D={a.dim}, shards={a.shards}, batches of {a.batch}, quorum, "
          f"{os.cpu_count()} cores\n")
    print("| RF | acknowledged vec/s | ack time s | until all replicas indexed s | batch p50 ms | batch max ms |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['rf']} | {r['ack_rate']:,.0f} | {r['ack_s']:.2f} | {r['indexed_s']:.1f} | "
              f"{r['batch_p50_ms']:.0f} | {r['batch_max_ms']:.0f} |")


if __name__ == "__main__":
    main()
