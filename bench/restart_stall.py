"""Strong reads right after a full-cluster restart (issue 12): each run creates a 3-node local cluster, a
3-shard RF-3 collection, ingests 3000 points, kills every node, starts them together, waits for green and for
every shard to have a leader, then times strong gets of 200 ids (10 s deadline) until one succeeds. A run
"stalls" when the first strong get fails. Prints one line per run and the count of stalls.

    .venv/bin/python bench/restart_stall.py [runs]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import shoal

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_replication import _have_leaders, _start_all, _vecs, _wait_health, _wait_shards  # noqa: E402


def one(run: int) -> bool:
    d = tempfile.mkdtemp(prefix=f"shoal-restart-{run}-")
    with shoal.Cluster.local(nodes=3, data_dir=d) as cl:
        coll = cl.create_collection("all", dim=8, metric="l2", shards=3, replication_factor=3)
        _wait_shards(coll, _have_leaders(3), "leaders")
        for lo in range(0, 3000, 500):
            part = np.arange(lo, lo + 500)
            coll.upsert(part, _vecs(part), consistency="quorum")
        for i in (1, 2, 3):
            cl.node(i).kill()
        _start_all(cl, (1, 2, 3))
        _wait_health(cl, "green", within=30)
        _wait_shards(coll, _have_leaders(3), "leaders after the restart", within=30)
        t0 = time.monotonic()
        fails = []
        while time.monotonic() - t0 < 40:
            t = time.monotonic()
            try:
                coll.get(np.arange(0, 200), with_vectors=False, consistency="strong", timeout=10)
                break
            except shoal.ShoalError as e:
                fails.append(f"failed after {time.monotonic() - t:.2f} s: {e!r:.150}")
        print(f"run {run}: first success after {time.monotonic() - t0:.2f} s; {fails or 'no failure'}", flush=True)
    if not fails:
        shutil.rmtree(d, ignore_errors=True)
    else:
        print(f"  node logs kept in {d}")
    return bool(fails)


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    stalls = sum(one(r) for r in range(runs))
    print(f"{stalls} stall(s) in {runs} runs")


if __name__ == "__main__":
    main()
