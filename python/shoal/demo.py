"""``python -m shoal.demo [--n N]``: the main job end to end on one local node.

Starts a local cluster, ingests N (default 100,000) clustered 128-d vectors with payloads and a progress bar,
waits until they are indexed, runs batch, single and filtered searches, checks recall against exact brute
force and prints a summary with timings.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Optional, Sequence

import numpy as np

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


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m shoal.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="number of vectors (default 100000)")
    ap.add_argument("--dim", type=int, default=128, help="dimension (default 128)")
    ap.add_argument("--queries", type=int, default=1000, help="batch queries (default 1000)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--ef", type=int, default=None, help="HNSW ef per query (default: server's)")
    ap.add_argument("--data-dir", default=None, help="keep node data here (default: temp dir, removed)")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)

    import shoal

    print(f"Shoal {shoal.__version__} demo: {args.n:,} vectors, dim {args.dim}, cosine, 1 local node")
    t0 = time.perf_counter()
    vectors, payloads = make_data(args.n, args.dim, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    qidx = rng.integers(0, args.n, size=args.queries)
    queries = vectors[qidx] + rng.normal(scale=0.3, size=(args.queries, args.dim)).astype(np.float32)
    print(f"  data        generated in {time.perf_counter() - t0:.1f} s")

    t0 = time.perf_counter()
    with shoal.Cluster.local(nodes=1, data_dir=args.data_dir) as cluster:
        t_start = time.perf_counter() - t0
        print(f"  cluster     {cluster.nodes()[0].address} ready in {t_start:.2f} s")
        docs = cluster.create_collection(
            "demo", dim=args.dim, metric="cosine", index=shoal.HNSW(m=16, ef_construction=200)
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
        ok = all(
            p is None or (p["lang"] == "en" and p["year"] >= 2020) for row in (fres.payloads or []) for p in row
        )
        count = docs.count()

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


if __name__ == "__main__":
    sys.exit(main())
