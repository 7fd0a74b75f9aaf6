"""Full export through Collection.scroll: 1 local node, N random 32-d points (L2), pages of 1000.

Usage: .venv/bin/python bench/scroll_export.py [N]   (default 1,000,000)
"""

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
import shoal  # noqa: E402

n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
X = np.random.default_rng(1).standard_normal((n, 32)).astype(np.float32)
with shoal.Cluster.local(nodes=1) as c:
    coll = c.create_collection("q", dim=32, metric="l2", shards=1, replication_factor=1)
    coll.upsert(np.arange(n), X, batch_size=20_000)
    t = time.perf_counter(); k = 0
    for b in coll.scroll(batch_size=1000):
        k += len(b.ids)
    el = time.perf_counter() - t
    print(f"scroll of {k} points, batch 1000: {el:.2f} s, {k/el:,.0f} points/s")
