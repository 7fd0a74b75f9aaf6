"""Search: recall against exact brute force (HNSW), exactness (flat), distance conventions, padding,
result shapes and input forms."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

import shoal
from testlib import clustered, distances, exact_topk, recall

METRICS = ["cosine", "l2", "dot"]
N, DIM, NQ, K = 4000, 32, 200, 10


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    base = clustered(N, DIM, seed=11)
    rng = np.random.default_rng(12)
    queries = base[rng.integers(0, N, NQ)] + rng.normal(scale=0.3, size=(NQ, DIM)).astype(np.float32)
    return base, queries.astype(np.float32)


@pytest.fixture(scope="module")
def filled(module_cluster: shoal.Cluster, data: tuple[np.ndarray, np.ndarray]) -> Iterator[dict]:
    """One HNSW and one flat collection per metric, filled with the same data and fully indexed."""
    base, _ = data
    out = {}
    for metric in METRICS:
        for index in ("hnsw", "flat"):
            name = f"{metric}_{index}"
            idx = shoal.HNSW(m=16, ef_construction=200) if index == "hnsw" else "flat"
            coll = module_cluster.create_collection(name, dim=DIM, metric=metric, index=idx)
            assert coll.upsert(np.arange(N), base, payloads=[{"row": i} for i in range(N)]) == N
            out[(metric, index)] = coll
    for coll in out.values():
        coll.wait_indexed(timeout=120)
    yield out


@pytest.mark.parametrize("metric", METRICS)
def test_hnsw_recall_against_exact(filled: dict, data: tuple, metric: str) -> None:
    base, queries = data
    coll = filled[(metric, "hnsw")]
    assert coll.index_status() == (N, 0), "fully indexed: the graph, not an exact scan, answers"
    res = coll.search(queries, k=K, ef=128)
    truth, _ = exact_topk(base, queries, K, metric)
    r = recall(res.ids, truth)
    assert r >= 0.95, f"recall@{K} {r:.3f} for {metric}"
    # every returned distance is the true distance of that point under the metric's convention
    true_d = np.take_along_axis(distances(base, queries, metric), res.ids, axis=1)
    np.testing.assert_allclose(res.distances, true_d, rtol=1e-3, atol=1e-3)
    assert (np.diff(res.distances, axis=1) >= -1e-6).all(), "hits are sorted best first"


@pytest.mark.parametrize("metric", METRICS)
def test_flat_is_exact(filled: dict, data: tuple, metric: str) -> None:
    base, queries = data
    res = filled[(metric, "flat")].search(queries, k=K)
    truth, truth_d = exact_topk(base, queries, K + 1, metric)
    np.testing.assert_allclose(res.distances, truth_d[:, :K], rtol=1e-4, atol=1e-4)
    for i in range(NQ):
        # the same ids; ranks may swap only between (float-)tied distances
        if truth_d[i, K] - truth_d[i, K - 1] > 1e-4:
            assert set(res.ids[i].tolist()) == set(truth[i, :K].tolist()), f"query {i}"
        same = res.ids[i] == truth[i, :K]
        assert same.all() or np.allclose(res.distances[i][~same], truth_d[i, :K][~same], atol=1e-4)
    assert res.ids.dtype == np.int64 and res.distances.dtype == np.float32


def test_distance_conventions(module_cluster: shoal.Cluster) -> None:
    a, b = np.array([1.0, 0.0, 0.0, 0.0]), np.array([3.0, 4.0, 0.0, 0.0])
    expect = {"l2": 4.0 + 16.0, "cosine": 1.0 - 3.0 / 5.0, "dot": -3.0}
    for metric, d in expect.items():
        coll = module_cluster.create_collection(f"conv_{metric}", dim=4, metric=metric, index="flat")
        coll.upsert([7], b)
        res = coll.search(a, k=1)
        assert res.ids.tolist() == [[7]]
        assert res.distances[0, 0] == pytest.approx(d, abs=1e-5), metric


def test_searchable_before_indexed(module_cluster: shoal.Cluster) -> None:
    """Acknowledged points are found at once: unindexed ones are scanned exactly."""
    base = clustered(3000, DIM, seed=5)
    coll = module_cluster.create_collection("fresh", dim=DIM, metric="l2")
    coll.upsert(np.arange(3000), base)
    probe = [0, 1499, 2999]
    res = coll.search(base[probe], k=1)
    assert res.ids[:, 0].tolist() == probe
    np.testing.assert_allclose(res.distances[:, 0], 0.0, atol=1e-3)


def test_padding_when_k_exceeds_count(module_cluster: shoal.Cluster) -> None:
    coll = module_cluster.create_collection("small", dim=4, metric="l2")
    coll.upsert([10, 11, 12], np.eye(3, 4))
    res = coll.search([[1, 0, 0, 0], [0, 0, 0, 1]], k=8)
    assert res.ids.shape == (2, 8) and res.distances.shape == (2, 8)
    assert (res.ids[:, 3:] == -1).all() and np.isinf(res.distances[:, 3:]).all()
    assert sorted(res.ids[0, :3].tolist()) == [10, 11, 12]
    assert res.ids[0, 0] == 10
    assert len(res.to_pandas()) == 6

    scoll = module_cluster.create_collection("small_str", dim=4, id_type="str")
    scoll.upsert(["a", "b"], np.eye(2, 4))
    sres = scoll.search([1, 0, 0, 0], k=4)
    assert sres.ids.dtype == object and sres.ids.shape == (1, 4)
    assert sres.ids[0].tolist() == ["a", "b", None, None]
    assert np.isinf(sres.distances[0, 2:]).all()


def test_empty_collection_and_no_match(module_cluster: shoal.Cluster) -> None:
    coll = module_cluster.create_collection("empty", dim=4)
    res = coll.search(np.ones((3, 4)), k=5)
    assert (res.ids == -1).all() and np.isinf(res.distances).all()
    coll.upsert([1], np.ones(4), payloads=[{"lang": "en"}])
    res = coll.search(np.ones(4), k=5, filter={"lang": "xx"})
    assert (res.ids == -1).all()


def test_query_forms(filled: dict, data: tuple) -> None:
    base, queries = data
    coll = filled[("l2", "flat")]
    ref = coll.search(queries[:5], k=K)
    single = coll.search(queries[0], k=K)
    assert single.ids.shape == (1, K) and len(single) == 1, "one row even for a 1-D query"
    np.testing.assert_array_equal(single.ids[0], ref.ids[0])
    as_list = coll.search(queries[0].tolist(), k=K)
    np.testing.assert_array_equal(as_list.ids[0], ref.ids[0])
    f64_fortran = np.asfortranarray(queries[:5].astype(np.float64))
    np.testing.assert_array_equal(coll.search(f64_fortran, k=K).ids, ref.ids)
    strided = np.repeat(queries[:5], 2, axis=1)[:, ::2]  # non-contiguous view
    np.testing.assert_array_equal(coll.search(strided, k=K).ids, ref.ids)
    empty = coll.search(np.empty((0, DIM)), k=K)
    assert empty.ids.shape == (0, K) and len(empty.to_pandas()) == 0


def test_float64_and_fortran_vectors_ingest(module_cluster: shoal.Cluster) -> None:
    base = clustered(500, DIM, seed=9)
    a = module_cluster.create_collection("in_f32", dim=DIM, metric="l2", index="flat")
    b = module_cluster.create_collection("in_f64", dim=DIM, metric="l2", index="flat")
    a.upsert(np.arange(500), base)
    b.upsert(np.arange(500), np.asfortranarray(base.astype(np.float64)))
    q = base[:20]
    np.testing.assert_array_equal(a.search(q, k=5).ids, b.search(q, k=5).ids)
    np.testing.assert_array_equal(b.get(np.arange(500)).vectors, base)


def test_parameters(filled: dict, data: tuple) -> None:
    _, queries = data
    coll = filled[("cosine", "hnsw")]
    for ef in (1, 16, 512):
        assert coll.search(queries[:3], k=K, ef=ef).ids.shape == (3, K)
    res = coll.search(
        queries[:3], k=K, consistency="strong", timeout=30, allow_partial=True, load_balancing="least_loaded"
    )
    assert res.partial is False and res.coverage == 1.0 and res.failed_shards == []
    for level in ("eventual", "session", "strong"):
        assert coll.search(queries[:1], k=3, consistency=level).ids.shape == (1, 3)


def test_with_payload_and_vectors(filled: dict, data: tuple) -> None:
    base, queries = data
    coll = filled[("l2", "flat")]
    res = coll.search(queries[:4], k=6, with_payload=True, with_vectors=True)
    assert res.payloads is not None and res.vectors is not None
    assert res.vectors.shape == (4, 6, DIM)
    for i in range(4):
        for j in range(6):
            row = int(res.ids[i, j])
            assert res.payloads[i][j] == {"row": row}
            np.testing.assert_array_equal(res.vectors[i, j], base[row])
    df = res.to_pandas()
    assert list(df.columns) == ["query", "rank", "id", "distance", "payload", "vector"]
    assert len(df) == 24 and df["payload"].iloc[0] == {"row": int(res.ids[0, 0])}
    assert "SearchResult(queries=4, k=6" in repr(res)
