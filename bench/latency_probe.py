"""Where a single query's time goes: p50 latency and CPU per request (node processes and this client) for
one-query searches or counts against a local cluster. Used to choose the query path's threading (issue 4).

Usage: .venv/bin/python bench/latency_probe.py [--nodes 3] [--op search|count] [--async-threads N]
                                                [--seconds 5] [--n 30000]
Prints one line; run alternating configurations several times and compare within one sitting.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import os

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
import shoal  # noqa: E402


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (Linux /proc)."""
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                kids.setdefault(int(_stat(int(d))[1]), []).append(int(d))
            except OSError:
                pass
    out, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` so far."""
    f = _stat(pid)
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--op", choices=("search", "count"), default="search")
    ap.add_argument("--async-threads", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--n", type=int, default=30_000)
    a = ap.parse_args()
    X = np.random.default_rng(1).standard_normal((a.n, 128)).astype(np.float32)
    args = [] if a.async_threads is None else ["--async-threads", str(a.async_threads)]
    with shoal.Cluster.local(nodes=a.nodes, node_args=args) as c:
        coll = c.create_collection("q", dim=128, metric="cosine", shards=a.nodes, replication_factor=1)
        coll.upsert(np.arange(len(X)), X, batch_size=10_000)
        coll.wait_indexed(timeout=600)
        run = (lambda i: coll.count()) if a.op == "count" else (lambda i: coll.search(X[i % 1000], k=10, ef=24))
        nodes = descendants(os.getpid())

        def cpu() -> tuple[float, float]:
            return sum(cpu_seconds(p) for p in nodes), cpu_seconds(os.getpid())

        for i in range(300):  # warm-up
            run(i)
        (n0, c0), t0, lat = cpu(), time.perf_counter(), []
        while time.perf_counter() - t0 < a.seconds:
            t = time.perf_counter()
            run(len(lat))
            lat.append(time.perf_counter() - t)
        n1, c1 = cpu()
        k = len(lat)
        print(f"nodes={a.nodes} op={a.op} async_threads={a.async_threads or 'default'}: "
              f"p50 {1000 * np.percentile(lat, 50):.3f} ms, p99 {1000 * np.percentile(lat, 99):.3f} ms, "
              f"node CPU {1e6 * (n1 - n0) / k:.0f} us/request, client CPU {1e6 * (c1 - c0) / k:.0f} us/request")


if __name__ == "__main__":
    main()
