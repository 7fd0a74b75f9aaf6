"""``python -m shoal.demo [--n N] [--nodes 3]``: the main job end to end on a local cluster.

Starts a local cluster (3 node processes by default, one shard per node, 3 replicas each), ingests N
(default 100,000) clustered 128-d vectors with payloads and a progress bar, waits until every replica is
indexed, runs batch, single and filtered searches, checks recall against exact brute force, kills the node
that leads the most shards while writing and reading through the others, restarts it, and prints a summary
with timings and the state of every replica.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .cluster import Cluster
    from .collection import Collection
    from .results import ShardList

LANGS = np.array(["en", "de", "fr", "es"])
LANG_P = [0.5, 0.2, 0.2, 0.1]


def make_data(n: int, dim: int, seed: int = 7) -> tuple[np.ndarray, list[dict]]:
    """n clustered vectors (like real embeddings: 100 topics plus noise) and their payloads."""
    rng = np.random.default_rng(seed)
    n_topics = 100
    centers = rng.normal(size=(n_topics, dim)).astype(np.float32)
    topic = rng.integers(0, n_topics, size=n)
    vectors = centers[topic] + rng.normal(scale=0.6, size=(n, dim)).astype(np.float32)
    langs = rng.choice(LANGS, size=n, p=LANG_P)
    years = rng.integers(2010, 2025, size=n)
    payloads = [
        {"lang": str(lang), "year": int(year), "topic": int(t)}
        for lang, year, t in zip(langs.tolist(), years.tolist(), topic.tolist())
    ]
    return vectors, payloads


def exact_cosine_topk(data: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row indices of the exact top-k by cosine similarity."""
    dn = data / np.linalg.norm(data, axis=1, keepdims=True)
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    sims = qn @ dn.T
    top = np.argpartition(-sims, kth=min(k, sims.shape[1] - 1), axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth))
    return hits / truth.size


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m shoal.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="number of vectors (default 100000)")
    ap.add_argument("--dim", type=int, default=128, help="dimension (default 128)")
    ap.add_argument("--queries", type=int, default=1000, help="batch queries (default 1000)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--ef", type=int, default=None, help="HNSW ef per query (default: server's)")
    ap.add_argument("--data-dir", default=None, help="keep node data here (default: temp dir, removed)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--nodes", type=int, default=3, help="local node processes (default 3)")
    ap.add_argument("--rf", type=int, default=None, help="replication factor (default min(3, nodes))")
    args = ap.parse_args(argv)

    import shoal

    print(
        f"Shoal {shoal.__version__} demo: {args.n:,} vectors, dim {args.dim}, cosine, "
        f"{args.nodes} local node{'s' if args.nodes > 1 else ''}"
    )
    t0 = time.perf_counter()
    vectors, payloads = make_data(args.n, args.dim, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    qidx = rng.integers(0, args.n, size=args.queries)
    queries = vectors[qidx] + rng.normal(scale=0.3, size=(args.queries, args.dim)).astype(np.float32)
    print(f"  data        generated in {time.perf_counter() - t0:.1f} s")

    t0 = time.perf_counter()
    with shoal.Cluster.local(nodes=args.nodes, data_dir=args.data_dir) as cluster:
        t_start = time.perf_counter() - t0
        addrs = ", ".join(n.address for n in cluster.nodes())
        print(f"  cluster     {args.nodes} node(s) at {addrs} ready in {t_start:.2f} s")
        docs = cluster.create_collection(
            "demo",
            dim=args.dim,
            metric="cosine",
            shards=args.nodes,
            replication_factor=args.rf,
            index=shoal.HNSW(m=16, ef_construction=200),
        )
        ids = np.arange(args.n, dtype=np.int64)

        t0 = time.perf_counter()
        written = docs.upsert(ids, vectors, payloads=payloads, progress=True)
        t_ingest = time.perf_counter() - t0
        docs.wait_indexed()
        t_indexed = time.perf_counter() - t0

        # batch search + recall
        t0 = time.perf_counter()
        res = docs.search(queries, k=args.k, ef=args.ef)
        t_batch = time.perf_counter() - t0
        truth = exact_cosine_topk(vectors, queries, args.k)
        r_batch = recall(res.ids, truth)

        # single queries
        lat = []
        for q in queries[:200]:
            t0 = time.perf_counter()
            docs.search(q, k=args.k, ef=args.ef)
            lat.append(time.perf_counter() - t0)
        lat_a = np.array(lat)

        # filtered
        flt = {"lang": "en", "year": {"$gte": 2020}}
        match = np.array([p["lang"] == "en" and p["year"] >= 2020 for p in payloads])
        sub_rows = np.nonzero(match)[0]
        fq = queries[:200]
        t0 = time.perf_counter()
        fres = docs.search(fq, k=args.k, filter=flt, ef=args.ef, with_payload=True)
        t_filtered = time.perf_counter() - t0
        ftruth = sub_rows[exact_cosine_topk(vectors[sub_rows], fq, args.k)]
        r_filtered = recall(fres.ids, ftruth)
        ok = all(p is None or (p["lang"] == "en" and p["year"] >= 2020) for row in (fres.payloads or []) for p in row)
        count = docs.count()
        shards = docs.shards()
        fault = _fault_step(cluster, docs, shards, vectors) if args.nodes >= 3 else None

        print()
        print("Summary")
        print(f"  ingest        {written:,} points in {t_ingest:.2f} s ({written / t_ingest:,.0f} points/s)")
        print(
            f"  indexed       after {t_indexed:.2f} s in all "
            f"({written / t_indexed:,.0f} points/s ingest-until-indexed); count() = {count:,}"
        )
        print(
            f"  batch search  {len(queries):,} queries, k={args.k}: {t_batch:.3f} s "
            f"({len(queries) / t_batch:,.0f} QPS), recall@{args.k} = {r_batch:.3f}"
        )
        print(
            f"  single query  p50 {_ms(float(np.percentile(lat_a, 50)))}, "
            f"p99 {_ms(float(np.percentile(lat_a, 99)))} over {len(lat_a)} queries"
        )
        print(
            f"  filtered      {flt} matches {len(sub_rows):,} points; {len(fq)} queries in "
            f"{t_filtered:.3f} s, recall@{args.k} = {r_filtered:.3f}, every hit matches: {ok}"
        )
        rf = len(shards[0].replicas) if shards else 0
        print(f"  shards        {len(shards)} x {rf} replicas:")
        for sh in shards:
            reps = ", ".join(f"node {r.node} {r.role} applied={r.applied_index} lag={r.lag}" for r in sh.replicas)
            print(f"                shard {sh.id}: {sh.count:,} points; {reps}")
        if fault is not None:
            print(f"  fault         {fault}")
        print()
        print("First filtered query, top hits:")
        df = None
        try:
            df = fres.to_pandas()
        except ImportError:
            pass
        if df is not None:
            print(df[df["query"] == 0].head(5).to_string(index=False))
        else:
            for i, d in fres.hits(0)[:5]:
                print(f"  id {i}  distance {d:.4f}")
    return 0 if (r_batch >= 0.9 and ok) else 1


def _fault_step(cluster: Cluster, docs: Collection, shards: ShardList, vectors: np.ndarray) -> str:
    """Kills the node leading the most shards (SIGKILL), writes and reads through the others, restarts it
    and waits until its replicas caught up. Returns a one-line account."""
    import collections

    leaders = collections.Counter(s.leader for s in shards if s.leader is not None)
    if not leaders or len(shards[0].replicas) < 3:
        return "skipped (needs replication_factor >= 3)"
    victim = leaders.most_common(1)[0][0]
    n = len(vectors)
    extra = np.arange(n, n + 1000, dtype=np.int64)
    t0 = time.perf_counter()
    cluster.node(victim).kill()
    docs.upsert(extra, vectors[:1000], consistency="quorum", timeout=30)
    seen = docs.count(consistency="strong", timeout=30)
    t_failover = time.perf_counter() - t0
    cluster.node(victim).start()
    t0 = time.perf_counter()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ss = docs.shards()
        if all(len({(r.applied_index, r.digest) for r in s.replicas}) == 1 and s.leader for s in ss):
            break
        time.sleep(0.2)
    t_catchup = time.perf_counter() - t0
    return (
        f"killed node {victim} (leader of {leaders[victim]} shard(s)): 1,000 quorum writes + strong count "
        f"({seen:,}) went through in {t_failover:.2f} s; restarted, all replicas identical after {t_catchup:.2f} s"
    )


if __name__ == "__main__":
    sys.exit(main())
