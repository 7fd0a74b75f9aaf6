"""Shard transfer benchmark (issue 5): a 100k-point shard (128-d, HNSW) moves onto a node that joins, through
openraft (learner: snapshot streamed in chunks + log catch-up, promote, source leaves), while a writer keeps
upserting; prints transfer throughput and the writer's latency before and during the transfer.

Usage: .venv/bin/python bench/transfer.py [--n 100000] [--dim 128] [--warm 45]

Then prints a timeline of the transfer: the nodes' log events of the move (steps, snapshots, leader changes)
and the writes slower than 5x the median before it, in seconds from the add_node call, to tell which phase a
latency spike belongs to.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
import shoal  # noqa: E402


class Writer(threading.Thread):
    def __init__(self, coll: shoal.Collection, dim: int, start_id: int) -> None:
        super().__init__(daemon=True)
        self.coll, self.dim, self.next = coll, dim, start_id
        self.samples: list[tuple[float, float]] = []  # (start time, latency)
        self.wall: list[float] = []  # wall-clock start of each sample (to line up with node logs)
        self.stop = threading.Event()
        self.failures = 0

    def run(self) -> None:
        rng = np.random.default_rng(1)
        while not self.stop.is_set():
            ids = np.arange(self.next, self.next + 100)
            v = rng.standard_normal((100, self.dim)).astype(np.float32)
            t = time.perf_counter()
            w = time.time()
            try:
                self.coll.upsert(ids, v, consistency="quorum", timeout=10)
            except shoal.ShoalError:
                self.failures += 1
                continue
            self.samples.append((t, time.perf_counter() - t))
            self.wall.append(w)
            self.next += 100
            time.sleep(0.01)


def pct(xs: list[float], p: float) -> float:
    return 1000 * float(np.percentile(xs, p)) if xs else float("nan")


def dir_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


# Node log lines worth a place on the timeline (the tracing format: "<RFC 3339 UTC> LEVEL target: message").
_EVENTS = re.compile(
    r"shard move step|built snapshot|installed snapshot|replica move started|shard replica open|node joined"
    r"|joined the cluster|handing leadership|preferred leader|leader|election|shard replica removed|slow"
)
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z\s+(\w+)\s+(.*)$")


def log_events(path: Path, since: float, until: float) -> list[tuple[float, str]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        m = _STAMP.match(line)
        if not m or not _EVENTS.search(m.group(3)):
            continue
        t = dt.datetime.fromisoformat(m.group(1)).replace(tzinfo=dt.timezone.utc).timestamp()
        if since <= t <= until:
            out.append((t, m.group(3)[:160]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000, help="points in the moved shard")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument(
        "--warm",
        type=float,
        default=45.0,
        help="seconds of writes before the transfer (enough entries that the shard's log is compacted into a "
        "snapshot, so the new replica receives a snapshot rather than a log replay)",
    )
    ap.add_argument("--data-dir", default=None, help="keep the nodes' data and logs there (default: a temp dir)")
    a = ap.parse_args()
    data = np.random.default_rng(7).standard_normal((2 * a.n, a.dim)).astype(np.float32)
    with shoal.Cluster.local(nodes=1, data_dir=a.data_dir) as cluster:
        coll = cluster.create_collection("t", dim=a.dim, metric="cosine", shards=2, replication_factor=1)
        for s in range(0, len(data), 10_000):
            coll.upsert(np.arange(s, s + 10_000), data[s : s + 10_000])
        coll.wait_indexed(timeout=1800)
        sizes = {s.id: s.count for s in coll.shards()}
        writer = Writer(coll, a.dim, start_id=10_000_000)
        writer.start()
        time.sleep(a.warm)
        t_add = time.perf_counter()
        w_add = time.time()
        node2 = cluster.add_node()
        w_joined = time.time()
        moved = None
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            shards = coll.shards()
            on2 = [s for s in shards if 2 in s.nodes]
            if on2 and all(
                len(s.replicas) == 1 and s.replicas[0].state == "active" and s.leader is not None for s in shards
            ):
                moved = on2[0]
                break
            time.sleep(0.05)
        t_done = time.perf_counter()
        w_done = time.time()
        time.sleep(1.0)
        writer.stop.set()
        writer.join(30)
        assert moved is not None, "the shard did not move within 900 s"
        snap_dir = cluster.data_dir / f"node-{node2.id}" / "shards"
        moved_bytes = dir_bytes(snap_dir)
        rep = next(r for r in moved.replicas if r.node == node2.id)
        how = (
            f"snapshot of {rep.transfer_total_bytes / 1e6:.1f} MB streamed in chunks, then the log"
            if rep.transfer_total_bytes
            else "log replay (the shard's log was not compacted yet)"
        )
        secs = t_done - t_add
        pts = sizes[moved.id]
        before = [lat for t, lat in writer.samples if t < t_add]
        during = [lat for t, lat in writer.samples if t_add <= t <= t_done]
        assert coll.count(consistency="strong") == 2 * a.n + (writer.next - 10_000_000)
        med = float(np.median([lat for _, lat in writer.samples[: max(1, len(before))]] or [0.0]))
        timeline = [(w_add, "bench: add_node called"), (w_joined, "bench: add_node returned (node 2 up)")]
        timeline.append((w_done, "bench: moved shard seen active on node 2"))
        for nid in (1, node2.id):
            log = cluster.data_dir / f"node-{nid}" / "node.log"
            timeline += [(t, f"node {nid}: {e}") for t, e in log_events(log, w_add - 0.5, w_done + 1.0)]
        for w, (_, lat) in zip(writer.wall, writer.samples):
            if w_add - 0.5 <= w <= w_done + 1.0 and lat > 5 * med:
                timeline.append((w, f"write {1000 * lat:.0f} ms (ends at +{w + lat - w_add:.2f} s)"))
    print(f"\nshard of {pts:,} points x {a.dim}-d (HNSW, cosine) moved from node 1 to a joining node 2, "
          f"{os.cpu_count()} cores\n")
    print(f"the new replica caught up by {how}\n")
    print("| moved shard points | data on target MB | add_node -> settled s | MB/s | points/s |")
    print("|---|---|---|---|---|")
    print(f"| {pts:,} | {moved_bytes / 1e6:.1f} | {secs:.2f} | {moved_bytes / 1e6 / secs:.1f} | {pts / secs:,.0f} |")
    print()
    print("| writer (100-point quorum upserts) | samples | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|")
    for name, xs in (("before the transfer", before), ("during the transfer", during)):
        print(f"| {name} | {len(xs)} | {pct(xs, 50):.1f} | {pct(xs, 99):.1f} | {1000 * max(xs) if xs else 0:.1f} |")
    print(f"\nwriter failures: {writer.failures}")
    print(f"\ntimeline (s from add_node; writes slower than 5x the median before, {1000 * med:.0f} ms):")
    for t, what in sorted(timeline):
        print(f"  {t - w_add:+7.2f}  {what}")


if __name__ == "__main__":
    main()
