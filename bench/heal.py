"""Heal time of a damaged replica (issue "Integrity"): 3 local nodes, one shard with 3 replicas holding N points
(128-d, HNSW); node 2 is stopped, a byte in the middle of its shard's log (or its snapshot) is flipped, and node 2
is started again. Measures, from the start call: the replica quarantined (reported by shards()), then healed
(every replica active with equal applied index and digest, N points each).

Usage: .venv/bin/python bench/heal.py [--n 100000] [--dim 128] [--damage log|snapshot] [--runs 1]
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


def damage(shard_dir: Path, what: str) -> str:
    if what == "snapshot":
        files = sorted((shard_dir / "snapshots").glob("*.snap"))
    else:
        files = sorted((shard_dir / "log").glob("*.seg"))
    assert files, f"nothing to damage in {shard_dir} ({what})"
    f = files[len(files) // 2]
    data = bytearray(f.read_bytes())
    off = len(data) // 2
    data[off] ^= 0x5A
    f.write_bytes(bytes(data))
    return f"{f.name} at offset {off} ({len(data)} bytes)"


def run(n: int, dim: int, what: str) -> None:
    root = Path(tempfile.mkdtemp(prefix="shoal-heal-"))
    with shoal.Cluster.local(nodes=3, data_dir=root, node_args=["--raft-snapshot-every", "50"]) as c:
        coll = c.create_collection("heal", dim=dim, metric="cosine", shards=1, replication_factor=3)
        rng = np.random.default_rng(0)
        t0 = time.monotonic()
        for s in range(0, n, 2000):
            m = min(2000, n - s)
            coll.upsert(np.arange(s, s + m), rng.normal(size=(m, dim)).astype(np.float32))
        coll.wait_indexed(timeout=600)
        print(f"loaded {n} x {dim} in {time.monotonic() - t0:.1f} s")

        def healed() -> bool:
            sh = coll.shards(timeout=10)[0]
            return (
                len(sh.replicas) == 3
                and all(r.state == "active" and r.count == n for r in sh.replicas)
                and len({(r.applied_index, r.digest) for r in sh.replicas}) == 1
            )

        while not healed():
            time.sleep(0.2)
        node = c.node(2)
        node.stop()
        shard_dir = next((node.data_dir / "shards").glob("heal@*/0"))
        size = sum(f.stat().st_size for f in shard_dir.rglob("*") if f.is_file())
        where = damage(shard_dir, what)
        t = time.monotonic()
        node.start(timeout=120)
        started = time.monotonic() - t
        seen_quarantine = None
        while True:
            sh = coll.shards(timeout=10)[0]
            if seen_quarantine is None and any(r.state == "quarantined" for r in sh.replicas):
                seen_quarantine = time.monotonic() - t
            if healed():
                break
            if time.monotonic() - t > 600:
                raise SystemExit("not healed within 600 s")
            time.sleep(0.1)
        total = time.monotonic() - t
        print(
            f"damage: {what} ({where}); replica {size / 1e6:.1f} MB on disk; node ready {started:.2f} s, "
            f"quarantine seen {seen_quarantine if seen_quarantine is None else round(seen_quarantine, 2)} s, "
            f"healed (active, equal digests, {n} points) {total:.2f} s after the start call"
        )
        print(f"health: {c.health().status}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--damage", choices=["log", "snapshot"], default="log")
    ap.add_argument("--runs", type=int, default=1)
    a = ap.parse_args()
    for _ in range(a.runs):
        run(a.n, a.dim, a.damage)


if __name__ == "__main__":
    main()
