"""The price of security (issue 11): batch QPS and single-query p50 of a local node with TLS and API keys
(`secure=True`, the default) against the same node with `--insecure`, measured in one run and interleaved
(A B A B ...) so machine noise hits both; and how long a revoked key keeps working on a 3-node cluster.

Usage: .venv/bin/python bench/security.py [--n 30000] [--rounds 3]
Data: the harness's synthetic set (shared/bench/peers.py make_dataset), 128-d cosine, HNSW m=16 ef_c=200,
default ef, 1 node, 1 shard. Batch: 1000 queries per search call, k=10. Single: one query per call, k=10.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(ROOT.parent / "shared" / "bench"))
import shoal  # noqa: E402
from peers import make_dataset  # noqa: E402


def p50_ms(fn, n: int = 400) -> float:
    for _ in range(40):
        fn()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.percentile(ts, 50) * 1000)


def batch_qps(col: shoal.Collection, q: np.ndarray, reps: int = 5) -> float:
    col.search(q, k=10)
    t = time.perf_counter()
    for _ in range(reps):
        col.search(q, k=10)
    return reps * len(q) / (time.perf_counter() - t)


def revocation(rounds: int) -> list[float]:
    """Seconds from revoke_api_key returning until the key fails on all 3 nodes."""
    out = []
    with shoal.Cluster.local(nodes=3) as c:
        creds = c.credentials
        assert creds is not None
        c.create_collection("r", dim=4).upsert(np.arange(3), np.ones((3, 4)))
        for i in range(rounds):
            key = c.create_api_key("read", name=f"k{i}")
            per = [shoal.connect([a], api_key=key, tls_ca=creds.ca_cert) for a in c.addresses()]
            for p in per:
                p["r"].count()
            c.revoke_api_key(f"k{i}")
            t0 = time.perf_counter()
            pending = set(range(len(per)))
            while pending and time.perf_counter() - t0 < 30:
                for j in list(pending):
                    try:
                        per[j]["r"].count()
                    except shoal.Unauthenticated:
                        pending.discard(j)
            out.append(time.perf_counter() - t0)
            for p in per:
                p.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=30_000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    X, Q = make_dataset(a.n, 128, 1000, seed=0)
    clusters = {}
    try:
        for secure in (True, False):
            c = shoal.Cluster.local(nodes=1, secure=secure)
            col = c.create_collection("b", dim=128, metric="cosine", shards=1, index=shoal.HNSW(m=16, ef_construction=200))
            col.upsert(np.arange(len(X)), X, batch_size=10_000)
            col.wait_indexed(timeout=3600)
            clusters[secure] = (c, col)
        res: dict[bool, dict[str, list[float]]] = {s: {"qps": [], "p50": []} for s in clusters}
        for _ in range(a.rounds):
            for secure, (_, col) in clusters.items():
                res[secure]["qps"].append(batch_qps(col, Q))
                res[secure]["p50"].append(p50_ms(lambda: col.search(Q[:1], k=10)))
    finally:
        for c, _ in clusters.values():
            c.close()
    med = {s: {k: statistics.median(v) for k, v in r.items()} for s, r in res.items()}
    print(f"{a.n} x 128-d cosine, HNSW, 1 node, {a.rounds} interleaved rounds (median)")
    print("| mode | batch QPS (1000 q/call) | single-query p50 ms |")
    print("|---|---|---|")
    for s, name in ((True, "secure (TLS + API key)"), (False, "--insecure")):
        print(f"| {name} | {med[s]['qps']:.0f} | {med[s]['p50']:.3f} |")
    print(
        f"secure/insecure: batch QPS x{med[True]['qps'] / med[False]['qps']:.3f}, "
        f"p50 +{med[True]['p50'] - med[False]['p50']:.3f} ms"
    )
    rev = revocation(5)
    print("revoked key refused on all 3 nodes after: " + ", ".join(f"{t * 1000:.0f} ms" for t in rev))


if __name__ == "__main__":
    main()
