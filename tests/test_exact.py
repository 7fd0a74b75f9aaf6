"""Exact search and the tuning helper (issue 13 item 2): `search(exact=True)` is brute force on one replica per
shard, merged, and equals a NumPy brute force over the same points on a sharded, replicated collection;
`Collection.tune` measures recall against it per ef and names the smallest ef that reaches the target."""

from __future__ import annotations

import numpy as np
import pytest

import shoal

DIM = 16
N = 3000


def _data() -> tuple[np.ndarray, np.ndarray, list[dict]]:
    rng = np.random.default_rng(11)
    x = rng.standard_normal((N, DIM)).astype(np.float32)
    payloads = [{"even": i % 2 == 0} for i in range(N)]
    return np.arange(N), x, payloads


@pytest.mark.shoal(nodes=3)
def test_exact_search_equals_brute_force_on_a_sharded_replicated_collection(shoal_cluster: shoal.Cluster) -> None:
    ids, x, payloads = _data()
    coll = shoal_cluster.create_collection("exact", dim=DIM, metric="l2", shards=3, replication_factor=2)
    coll.upsert(ids, x, payloads=payloads)
    q = np.random.default_rng(12).standard_normal((20, DIM)).astype(np.float32)
    k = 15
    d2 = ((q[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    want = np.argsort(d2, axis=1, kind="stable")[:, :k]
    got = coll.search(q, k, exact=True, consistency="strong")
    assert got.ids.shape == (20, k)
    for i in range(20):
        assert set(got.ids[i]) == set(want[i]), i
        # l2 distances are squared: compare with NumPy's
        np.testing.assert_allclose(np.sort(got.distances[i]), np.sort(d2[i, want[i]]), rtol=1e-4)
    # with a filter: the brute force over the matching points only
    even = np.arange(N) % 2 == 0
    got_f = coll.search(q, k, filter={"even": True}, exact=True)
    d2f = np.where(even[None, :], d2, np.inf)
    want_f = np.argsort(d2f, axis=1, kind="stable")[:, :k]
    for i in range(20):
        assert set(got_f.ids[i]) == set(want_f[i]), i
    with pytest.raises(shoal.InvalidArgument, match="exact"):
        coll.search(q, k, exact="yes")  # type: ignore[arg-type]


@pytest.mark.shoal(nodes=1)
def test_tune_reports_recall_latency_and_the_smallest_ef_that_meets_the_target(shoal_cluster: shoal.Cluster) -> None:
    ids, x, _ = _data()
    coll = shoal_cluster.create_collection(
        "tune", dim=DIM, metric="l2", shards=2, index=shoal.HNSW(m=8, ef_construction=40)
    )
    coll.upsert(ids, x)
    coll.wait_indexed(timeout=60)
    q = np.random.default_rng(13).standard_normal((30, DIM)).astype(np.float32)
    df = coll.tune(q, k=10, target_recall=0.9, efs=[10, 40, 200], latency_queries=5)
    assert list(df.columns) == ["ef", "recall", "p50_ms", "qps", "meets_target"]
    assert list(df["ef"]) == [10, 40, 200]
    assert df["recall"].between(0, 1).all() and (df["p50_ms"] > 0).all() and (df["qps"] > 0).all()
    assert df["recall"].iloc[-1] >= df["recall"].iloc[0]
    best = df.attrs["best_ef"]
    meets = df[df["recall"] >= 0.9]
    assert best == (int(meets["ef"].iloc[0]) if len(meets) else None)
    with pytest.raises(shoal.InvalidArgument, match="target_recall"):
        coll.tune(q, target_recall=1.5)
    with pytest.raises(shoal.InvalidArgument, match="efs"):
        coll.tune(q, efs=[])
