"""Point reads and writes: upsert/get/delete/count, payload updates, str ids, batching, progress."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

import shoal
from testlib import clustered

DIM = 16


@pytest.fixture
def coll(module_cluster: shoal.Cluster, unique_name: str) -> Iterator[shoal.Collection]:
    c = module_cluster.create_collection(unique_name, dim=DIM, metric="l2")
    yield c
    module_cluster.drop_collection(unique_name)


def test_upsert_get_count(coll: shoal.Collection) -> None:
    v = clustered(300, DIM, seed=1)
    payloads = [{"i": i, "even": i % 2 == 0} for i in range(300)]
    assert coll.upsert(np.arange(300), v, payloads=payloads) == 300
    assert coll.count() == 300
    got = coll.get([299, 5, 1000, 0])
    assert got.ids.tolist() == [299, 5, 0], "found points, in request order"
    assert got.missing == [1000]
    np.testing.assert_array_equal(got.vectors, v[[299, 5, 0]])
    assert got.payloads == [payloads[299], payloads[5], payloads[0]]
    bare = coll.get([1, 2], with_vectors=False)
    assert bare.vectors is None and bare.payloads == [payloads[1], payloads[2]]
    for level in ("eventual", "session", "strong"):
        assert coll.count(consistency=level) == 300
        assert len(coll.get([3], consistency=level)) == 1
    df = got.to_pandas()
    assert df["id"].tolist() == [299, 5, 0] and "vector" in df.columns
    assert "Points(n=3" in repr(got)


def test_upsert_replaces(coll: shoal.Collection) -> None:
    coll.upsert([1, 2], np.zeros((2, DIM)), payloads=[{"v": 1}, {"v": 1}])
    coll.upsert([2], np.ones(DIM), payloads=[{"v": 2}])
    assert coll.count() == 2
    got = coll.get([1, 2])
    np.testing.assert_array_equal(got.vectors[1], np.ones(DIM))
    assert got.payloads == [{"v": 1}, {"v": 2}]
    res = coll.search(np.ones(DIM), k=1)
    assert res.ids[0, 0] == 2 and res.distances[0, 0] == pytest.approx(0.0)


def test_write_consistency_levels(coll: shoal.Collection) -> None:
    for i, level in enumerate(("eventual", "quorum", "strong")):
        assert coll.upsert([i], np.full(DIM, i), consistency=level) == 1
    assert coll.count(consistency="strong") == 3


def test_delete(coll: shoal.Collection) -> None:
    v = clustered(200, DIM, seed=2)
    coll.upsert(np.arange(200), v)
    coll.delete(np.arange(0, 200, 2))
    assert coll.count() == 100
    assert coll.get([0, 1, 2]).ids.tolist() == [1]
    res = coll.search(v[:10], k=200)
    hits = res.ids[res.ids >= 0]
    assert len(hits) == 10 * 100 and (hits % 2 == 1).all(), "deleted points are never returned"
    coll.delete([0, 1, 9999])  # missing ids are fine
    assert coll.count() == 99
    coll.upsert([0], v[0])  # a deleted id can come back
    assert coll.count() == 100 and coll.get(0).ids.tolist() == [0]


def test_update_payload_merges(coll: shoal.Collection) -> None:
    coll.upsert([1, 2, 3], np.zeros((3, DIM)), payloads=[{"a": 1, "b": {"x": 1}}, {"a": 2}, None])
    coll.update_payload([1, 3], {"b": 2, "c": "new"})
    got = coll.get([1, 2, 3], with_vectors=False)
    assert got.payloads == [{"a": 1, "b": 2, "c": "new"}, {"a": 2}, {"b": 2, "c": "new"}]
    coll.update_payload(2, {"a": None})
    assert coll.get(2).payloads == [{"a": None}]
    res = coll.search(np.zeros(DIM), k=3, filter={"c": "new"})
    assert sorted(res.ids[0][res.ids[0] >= 0].tolist()) == [1, 3]
    np.testing.assert_array_equal(coll.get([1]).vectors, np.zeros((1, DIM)), "vectors untouched")


def test_str_ids(module_cluster: shoal.Cluster, unique_name: str) -> None:
    coll = module_cluster.create_collection(unique_name, dim=DIM, metric="cosine", id_type="str")
    v = clustered(100, DIM, seed=3)
    ids = [f"doc-{i}" for i in range(99)] + ["ünïcødé/🐟"]
    assert coll.upsert(ids, v, payloads=[{"n": i} for i in range(100)]) == 100
    assert coll.count() == 100
    got = coll.get(["doc-5", "missing", "ünïcødé/🐟"])
    assert got.ids.tolist() == ["doc-5", "ünïcødé/🐟"] and got.missing == ["missing"]
    assert got.payloads == [{"n": 5}, {"n": 99}]
    norm = v / np.linalg.norm(v, axis=1, keepdims=True)
    np.testing.assert_allclose(got.vectors, norm[[5, 99]], rtol=1e-5, atol=1e-6)
    res = coll.search(v[[5, 99]], k=3, with_payload=True)
    assert res.ids[:, 0].tolist() == ["doc-5", "ünïcødé/🐟"]
    assert res.payloads is not None and res.payloads[1][0] == {"n": 99}
    coll.delete(["doc-5"])
    assert coll.count() == 99 and coll.get("doc-5").missing == ["doc-5"]


def test_input_forms(coll: shoal.Collection) -> None:
    v = clustered(40, DIM, seed=4).astype(np.float64)
    coll.upsert(list(range(10)), v[:10].tolist())  # lists of lists
    coll.upsert(range(10, 20), np.asfortranarray(v[10:20]))  # Fortran float64
    coll.upsert(np.arange(20, 30, dtype=np.uint32), v[20:30, ::1].T.copy().T)  # uint ids, odd strides
    coll.upsert(30, v[30])  # one point: scalar id, 1-D vector
    coll.upsert([31], v[31], payloads={"one": True})  # a single dict for a single point
    assert coll.count() == 32
    np.testing.assert_allclose(coll.get(np.arange(32)).vectors, v[:32].astype(np.float32))
    assert coll.get(31).payloads == [{"one": True}]


def test_payload_values(coll: shoal.Collection) -> None:
    payloads = [
        {"np_int": np.int64(7), "np_float": np.float32(0.5), "np_bool": np.bool_(True), "arr": np.arange(3)},
        {"nested": {"deep": {"list": [1, "two", None, {"three": 3.0}]}}, "unicode": "ünï"},
    ]
    coll.upsert([1, 2], np.zeros((2, DIM)), payloads=payloads)
    got = coll.get([1, 2], with_vectors=False).payloads
    assert got[0] == {"np_int": 7, "np_float": 0.5, "np_bool": True, "arr": [0, 1, 2]}
    assert got[1] == payloads[1]


def test_payloads_from_dataframe(coll: shoal.Collection) -> None:
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"lang": ["en", "de", "fr"], "year": [2020, 2021, 2022]})
    coll.upsert([1, 2, 3], np.zeros((3, DIM)), payloads=df)
    assert coll.get([2], with_vectors=False).payloads == [{"lang": "de", "year": 2021}]


def test_batches_and_progress(coll: shoal.Collection, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tqdm")
    v = clustered(2500, DIM, seed=6)
    assert coll.upsert(np.arange(2500), v, batch_size=1000, progress=True) == 2500
    err = capsys.readouterr().err
    assert "upsert" in err and "2.50k/2.50k" in err, err
    assert coll.count() == 2500
    assert coll.upsert(np.arange(2500, 2600), v[:100], batch_size=7, progress=False) == 100
    assert coll.count() == 2600
    with pytest.raises(shoal.InvalidArgument, match="batch_size"):
        coll.upsert([1], v[0], batch_size=0)


class _Bar:
    """A progress bar that records its updates and fails on the update numbered `fail_at` (1-based)."""

    def __init__(self, fail_at: int = 0) -> None:
        self.updates: list[int] = []
        self.fail_at = fail_at

    def update(self, n: int) -> None:
        self.updates.append(n)
        if len(self.updates) == self.fail_at:
            raise RuntimeError("the bar broke")

    def close(self) -> None:
        pass


def test_progress_follows_the_clients_requests(coll: shoal.Collection, monkeypatch: pytest.MonkeyPatch) -> None:
    """The native client splits the batch (batch_size points per request) and reports each request; an
    exception raised while reporting stops the upsert after the requests already acknowledged."""
    import shoal.collection as collection_mod

    v = clustered(2500, DIM, seed=8)
    bar = _Bar()
    monkeypatch.setattr(collection_mod, "_progress_bar", lambda *a, **k: bar)
    assert coll.upsert(np.arange(2500), v, batch_size=1000, progress=True) == 2500
    assert bar.updates == [1000, 1000, 500]

    bar = _Bar(fail_at=2)
    with pytest.raises(RuntimeError, match="the bar broke") as info:
        coll.upsert(np.arange(10_000, 12_500), v, batch_size=1000, progress=True)
    assert info.value.written == 2000  # type: ignore[attr-defined]
    assert bar.updates == [1000, 1000]
    assert coll.count(consistency="strong") == 4500


def test_wait_indexed(module_cluster: shoal.Cluster, unique_name: str) -> None:
    coll = module_cluster.create_collection(unique_name, dim=DIM, index=shoal.HNSW(m=8, ef_construction=50))
    coll.upsert(np.arange(3000), clustered(3000, DIM, seed=7))
    assert coll.wait_indexed(timeout=120) == 3000
    assert coll.index_status() == (3000, 0)
    with pytest.raises(shoal.InvalidArgument, match="timeout"):
        coll.wait_indexed(timeout=0)


def test_wait_indexed_times_out(module_cluster: shoal.Cluster, unique_name: str) -> None:
    coll = module_cluster.create_collection(unique_name, dim=64, index=shoal.HNSW(m=16, ef_construction=200))
    coll.upsert(np.arange(8000), clustered(8000, 64, seed=8))
    # Indexing 8000 points with efC=200 takes far longer than 1 ms, so the wait must time out.
    with pytest.raises(shoal.Timeout, match="not indexed") as e:
        coll.wait_indexed(timeout=0.001)
    assert isinstance(e.value, TimeoutError)
