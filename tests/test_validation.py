"""Bad input (issue 2, item 6): each case raises the right class, names the offending item, and writes
nothing (a batch is validated whole before any of it is sent)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import shoal

DIM = 8
N = 20


@pytest.fixture
def coll(module_cluster: shoal.Cluster, unique_name: str) -> Iterator[shoal.Collection]:
    c = module_cluster.create_collection(unique_name, dim=DIM, metric="l2")
    yield c
    module_cluster.drop_collection(unique_name)


@pytest.fixture
def str_coll(module_cluster: shoal.Cluster, unique_name: str) -> Iterator[shoal.Collection]:
    c = module_cluster.create_collection(unique_name, dim=DIM, id_type="str")
    yield c
    module_cluster.drop_collection(unique_name)


def vectors(n: int = N) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, DIM)).astype(np.float32)


def rejects(
    coll: shoal.Collection, fn: Callable[[], Any], *fragments: str, exc: type = shoal.InvalidArgument
) -> BaseException:
    """fn() raises exc whose message contains every fragment, and the collection stays as it was."""
    before = coll.count()
    with pytest.raises(exc) as e:
        fn()
    msg = str(e.value)
    for f in fragments:
        assert f.lower() in msg.lower(), f"{f!r} not in {msg!r}"
    assert coll.count() == before, "nothing was written"
    return e.value


# --- vectors ----------------------------------------------------------------------------------------


def test_nan_is_rejected_and_named(coll: shoal.Collection) -> None:
    v = vectors()
    v[17, 3] = np.nan
    err = rejects(coll, lambda: coll.upsert(np.arange(N), v), "vectors[17]", "NaN")
    assert isinstance(err, ValueError)
    assert coll.get([0]).missing == [0]


@pytest.mark.parametrize("value, word", [(np.inf, "inf"), (-np.inf, "inf")])
def test_inf_is_rejected_and_named(coll: shoal.Collection, value: float, word: str) -> None:
    v = vectors()
    v[3, 0] = value
    rejects(coll, lambda: coll.upsert(np.arange(N), v), "vectors[3]", word)


def test_float64_overflowing_float32_is_rejected(coll: shoal.Collection) -> None:
    v = vectors().astype(np.float64)
    v[5, 1] = 1e39  # finite as float64, inf after the float32 cast
    rejects(coll, lambda: coll.upsert(np.arange(N), v), "vectors[5]", "inf")


def test_whole_batch_checked_before_any_chunk_is_sent(coll: shoal.Collection) -> None:
    v = vectors()
    v[17, 0] = np.nan
    rejects(coll, lambda: coll.upsert(np.arange(N), v, batch_size=5), "vectors[17]")
    ids = np.arange(N)
    ids[19] = 4
    rejects(coll, lambda: coll.upsert(ids, vectors(), batch_size=5), "ids[19]")
    assert coll.count() == 0


def test_wrong_dim(coll: shoal.Collection) -> None:
    rejects(coll, lambda: coll.upsert(np.arange(N), np.ones((N, DIM + 1))), "dim", str(DIM + 1))
    rejects(coll, lambda: coll.upsert([1], np.ones(DIM - 1)), "dim", str(DIM - 1))
    rejects(coll, lambda: coll.upsert([1], np.ones((1, 2, DIM))), "shape")
    rejects(coll, lambda: coll.search(np.ones((2, DIM + 2))), "queries", str(DIM + 2))


def test_nan_query(coll: shoal.Collection) -> None:
    q = np.ones((3, DIM))
    q[1, 2] = np.nan
    rejects(coll, lambda: coll.search(q), "queries[1]", "NaN")


def test_empty_batch_is_a_noop(coll: shoal.Collection) -> None:
    assert coll.upsert([], np.empty((0, DIM))) == 0
    assert coll.upsert(np.array([], dtype=np.int64), []) == 0
    assert coll.upsert([], [], payloads=[]) == 0
    assert coll.delete([]) == 0
    assert coll.count() == 0


def test_length_mismatch(coll: shoal.Collection) -> None:
    rejects(coll, lambda: coll.upsert(np.arange(5), vectors(4)), "5", "4")
    rejects(coll, lambda: coll.upsert(np.arange(4), vectors(4), payloads=[{}] * 3), "3", "4")
    rejects(coll, lambda: coll.upsert([], vectors(2)), "0", "2")


# --- ids --------------------------------------------------------------------------------------------


def test_duplicate_ids(coll: shoal.Collection) -> None:
    ids = np.arange(N)
    ids[12] = 7
    rejects(coll, lambda: coll.upsert(ids, vectors()), "ids[12]", "7")


def test_duplicate_str_ids(str_coll: shoal.Collection) -> None:
    ids = [f"p{i}" for i in range(N)]
    ids[9] = "p2"
    rejects(str_coll, lambda: str_coll.upsert(ids, vectors()), "ids[9]", "p2")


def test_negative_ids(coll: shoal.Collection) -> None:
    rejects(coll, lambda: coll.upsert([0, 1, 2, -1], vectors(4)), "ids[3] is negative (-1)")
    ids = np.arange(N)
    ids[11] = -5
    rejects(coll, lambda: coll.upsert(ids, vectors()), "ids[11]", "negative")


@pytest.mark.parametrize(
    "ids, fragment",
    [
        (["a", "b", "c", "d"], "ids[0]"),
        ([0, 1, 2.5, 3], "ids[2]"),
        ([0, 1, 2, True], "ids[3]"),
        (np.array([0.0, 1.0, 2.0, 3.0]), "ids[0]"),
    ],
)
def test_wrong_id_type_for_int_collection(coll: shoal.Collection, ids: Any, fragment: str) -> None:
    rejects(coll, lambda: coll.upsert(ids, vectors(4)), fragment)


def test_wrong_id_type_for_str_collection(str_coll: shoal.Collection) -> None:
    rejects(str_coll, lambda: str_coll.upsert(["a", 1, "c"], vectors(3)), "ids[1]")
    rejects(str_coll, lambda: str_coll.upsert(np.arange(3), vectors(3)), "ids[0]")
    rejects(str_coll, lambda: str_coll.get([1]), "ids[0]")


# --- payloads ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [[1, 2], "text", 5, (1, 2)])
def test_payload_not_an_object(coll: shoal.Collection, bad: Any) -> None:
    payloads: list[Any] = [{"ok": i} for i in range(4)]
    payloads[2] = bad
    rejects(coll, lambda: coll.upsert(np.arange(4), vectors(4), payloads=payloads), "payloads[2]")


def nested(depth: int) -> dict:
    p: dict = {"leaf": 1}
    for _ in range(depth - 1):
        p = {"x": p}
    return p


def test_payload_depth_limit(coll: shoal.Collection) -> None:
    payloads = [{}, nested(33), {}]
    rejects(coll, lambda: coll.upsert([1, 2, 3], vectors(3), payloads=payloads), "payloads[1]", "32")
    # 32 levels are fine
    assert coll.upsert([1, 2, 3], vectors(3), payloads=[{}, nested(32), {}]) == 3
    assert coll.get([2]).payloads == [nested(32)]


def test_bad_patch(coll: shoal.Collection) -> None:
    coll.upsert([1], vectors(1))
    rejects(coll, lambda: coll.update_payload([1], [1, 2]), "patch")  # type: ignore[arg-type]
    rejects(coll, lambda: coll.update_payload([1], None), "patch")  # type: ignore[arg-type]


# --- search parameters ------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [0, -1, 16385, 2.0])
def test_bad_k(coll: shoal.Collection, k: Any) -> None:
    rejects(coll, lambda: coll.search(np.ones(DIM), k=k), "k ")


def test_largest_k_is_accepted(coll: shoal.Collection) -> None:
    coll.upsert(np.arange(N), vectors())
    res = coll.search(np.ones(DIM), k=16384)
    assert res.ids.shape == (1, 16384)
    assert (res.ids[0, :N] >= 0).all() and (res.ids[0, N:] == -1).all()


@pytest.mark.parametrize("ef", [0, -5, 1.5])
def test_bad_ef(coll: shoal.Collection, ef: Any) -> None:
    rejects(coll, lambda: coll.search(np.ones(DIM), ef=ef), "ef")


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf")])
def test_bad_timeout(coll: shoal.Collection, timeout: float) -> None:
    rejects(coll, lambda: coll.search(np.ones(DIM), timeout=timeout), "timeout")
    rejects(coll, lambda: coll.upsert([1], vectors(1), timeout=timeout), "timeout")
    rejects(coll, lambda: coll.count(timeout=timeout), "timeout")


def test_bad_consistency_and_load_balancing(coll: shoal.Collection) -> None:
    rejects(coll, lambda: coll.upsert([1], vectors(1), consistency="session"), "session")
    rejects(coll, lambda: coll.search(np.ones(DIM), consistency="linearizable"), "linearizable")
    rejects(coll, lambda: coll.search(np.ones(DIM), load_balancing="random"), "random")


@pytest.mark.parametrize(
    "flt, fragment",
    [
        ({"year": {"$foo": 1}}, "$foo"),
        ({"$and": 5}, "$and"),
        ({"$or": []}, "$or"),
        ({"lang": {"$in": "en"}}, "$in"),
        ({"year": {"$gt": [1, 2]}}, "$gt"),
        ({"$nope": [{"a": 1}]}, "$nope"),
    ],
)
def test_malformed_filter(coll: shoal.Collection, flt: dict, fragment: str) -> None:
    coll.upsert([1], vectors(1), payloads=[{"year": 2020}])
    rejects(coll, lambda: coll.search(np.ones(DIM), filter=flt), fragment)


def test_filter_must_be_a_dict(coll: shoal.Collection) -> None:
    rejects(coll, lambda: coll.search(np.ones(DIM), filter=[("a", 1)]), "filter")  # type: ignore[arg-type]


# --- collections ------------------------------------------------------------------------------------


def test_unknown_collection(module_cluster: shoal.Cluster) -> None:
    with pytest.raises(shoal.CollectionNotFound) as e:
        module_cluster.collection("does_not_exist")
    assert isinstance(e.value, KeyError) and "does_not_exist" in str(e.value)


def test_bad_collection_parameters(module_cluster: shoal.Cluster, unique_name: str) -> None:
    before = module_cluster.list_collections()
    for kwargs, fragment in [
        ({"dim": 0}, "dim"),
        ({"dim": 65537}, "65537"),
        ({"dim": 4, "metric": "hamming"}, "hamming"),
    ]:
        with pytest.raises(shoal.InvalidArgument) as e:
            module_cluster.create_collection(unique_name, **kwargs)
        assert fragment in str(e.value)
    assert module_cluster.list_collections() == before
    module_cluster.create_collection(unique_name, dim=4)
    with pytest.raises(shoal.CollectionExists):
        module_cluster.create_collection(unique_name, dim=4)
    module_cluster.drop_collection(unique_name)


def test_server_side_error_has_the_status_as_cause(module_cluster: shoal.Cluster) -> None:
    with pytest.raises(shoal.CollectionNotFound) as info:
        module_cluster.collection("no_such_collection_here")
    cause = info.value.__cause__
    assert isinstance(cause, shoal.ShoalError), cause
    assert "not found" in str(cause).lower() and "no_such_collection_here" in str(cause), str(cause)
