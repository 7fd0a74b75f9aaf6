"""Payload indexes (issue 14 item 1): created through the collection's config and built on every replica,
filtered search through them returns what a NumPy brute force over the matching points returns (recall at
selectivity 1/3, 1/10 and 1/100 on a keyword and an integer range), writes after the index keep it exact, and
a restarted node rebuilds it. Bad requests change nothing."""

from __future__ import annotations

import numpy as np
import pytest

import shoal

DIM = 16
N = 6000


def _data() -> tuple[np.ndarray, np.ndarray, list[dict]]:
    rng = np.random.default_rng(21)
    x = rng.standard_normal((N, DIM)).astype(np.float32)
    # cat: a third "a", a tenth "b", a hundredth "c" (disjoint), the rest "z"; n: uniform 0..999
    cats = np.full(N, "z", dtype=object)
    order = rng.permutation(N)
    cats[order[: N // 3]] = "a"
    cats[order[N // 3 : N // 3 + N // 10]] = "b"
    cats[order[N // 3 + N // 10 : N // 3 + N // 10 + N // 100]] = "c"
    n = rng.integers(0, 1000, N)
    payloads = [{"cat": str(cats[i]), "n": int(n[i]), "tags": ["t", str(cats[i])]} for i in range(N)]
    return np.arange(N), x, payloads


def _brute(x: np.ndarray, keep: np.ndarray, q: np.ndarray, k: int) -> list[set]:
    idx = np.flatnonzero(keep)
    d2 = ((q[:, None, :] - x[None, idx, :]) ** 2).sum(-1)
    return [set(idx[np.argsort(row, kind="stable")[:k]].tolist()) for row in d2]


def _recall(got: np.ndarray, want: list[set]) -> float:
    hit = sum(len(set(g.tolist()) & w) for g, w in zip(got, want))
    return hit / max(1, sum(len(w) for w in want))


@pytest.mark.shoal(nodes=3)
def test_filters_through_payload_indexes_match_brute_force_and_survive_writes_and_restarts(
    shoal_cluster: shoal.Cluster,
) -> None:
    ids, x, payloads = _data()
    coll = shoal_cluster.create_collection("pix", dim=DIM, metric="l2", shards=3, replication_factor=2)
    coll.upsert(ids, x, payloads=payloads)
    coll.wait_indexed(timeout=60)
    cats = np.array([p["cat"] for p in payloads])
    nums = np.array([p["n"] for p in payloads])
    filters = {
        "cat a (1/3)": ({"cat": "a"}, cats == "a"),
        "cat b (1/10)": ({"cat": "b"}, cats == "b"),
        "cat c (1/100)": ({"cat": "c"}, cats == "c"),
        "n < 333": ({"n": {"$lt": 333}}, nums < 333),
        "n in [100, 200)": ({"n": {"$gte": 100, "$lt": 200}}, (nums >= 100) & (nums < 200)),
        "n < 10": ({"n": {"$lt": 10}}, nums < 10),
        "cat != a and n >= 500": ({"cat": {"$ne": "a"}, "n": {"$gte": 500}}, (cats != "a") & (nums >= 500)),
        "tags has c or b": ({"tags": {"$in": ["b", "c"]}}, np.isin(cats, ["b", "c"])),
    }
    q = np.random.default_rng(22).standard_normal((30, DIM)).astype(np.float32)
    k = 10
    exact_before = {name: coll.search(q, k, filter=f, exact=True).ids for name, (f, _) in filters.items()}

    assert coll.create_payload_index("cat", "keyword") == {"cat": "keyword"}
    assert coll.create_payload_index("n", "integer", progress=False) == {"cat": "keyword", "n": "integer"}
    coll.create_payload_index("tags", "keyword")
    assert coll.payload_indexes() == {"cat": "keyword", "n": "integer", "tags": "keyword"}
    assert shoal_cluster.collection("pix").payload_indexes() == coll.payload_indexes()
    assert coll.create_payload_index("n", "integer") == coll.payload_indexes(), "the same again is a no-op"

    for name, (f, keep) in filters.items():
        want = _brute(x, keep, q, k)
        exact = coll.search(q, k, filter=f, exact=True).ids
        np.testing.assert_array_equal(np.sort(exact, axis=1), np.sort(exact_before[name], axis=1), err_msg=name)
        assert _recall(exact, want) == 1.0, name
        got = coll.search(q, k, filter=f, consistency="strong").ids
        r = _recall(got, want)
        assert r >= 0.95, f"{name}: recall {r:.3f}"
        for row in got:
            assert all(keep[i] for i in row if i >= 0), f"{name}: a hit that does not match the filter"

    # writes after the index: moved points, deleted points and patched payloads are seen at once
    moved = np.arange(0, 60)
    coll.update_payload(moved, {"cat": "new"}, consistency="strong")
    coll.delete(np.arange(60, 70), consistency="strong")
    coll.upsert(
        np.array([N + 1, N + 2]), x[:2] + 0.01, payloads=[{"cat": "new", "n": 5}, {"cat": "new"}], consistency="strong"
    )
    got = coll.search(q[:3], 100, filter={"cat": "new"}, consistency="strong")
    assert sorted(set(got.ids[0].tolist()) - {-1}) == sorted(moved.tolist() + [N + 1, N + 2])
    got = coll.search(q[:3], 100, filter={"cat": "new", "n": {"$lt": 10}}, consistency="strong")
    assert {int(i) for i in got.ids[0] if i >= 0} == {int(i) for i in moved if nums[i] < 10} | {N + 1}

    # a restarted node rebuilds its indexes from its log and snapshot; searches through it stay exact
    node = shoal_cluster.node(2)
    node.stop()
    node.start(timeout=60)
    coll.wait_indexed(timeout=60)
    with shoal.connect([node.address], credentials=shoal_cluster.credentials) as c2:
        via = c2.collection("pix")
        assert via.payload_indexes() == {"cat": "keyword", "n": "integer", "tags": "keyword"}
        keep = (cats == "b") & ~np.isin(np.arange(N), np.arange(0, 70))
        want = _brute(x, keep, q, k)
        got = via.search(q, k, filter={"cat": "b"}, consistency="strong").ids
        assert _recall(got, want) >= 0.95

    # dropping an index changes no result
    assert coll.drop_payload_index("cat") == {"n": "integer", "tags": "keyword"}
    assert coll.drop_payload_index("cat") == {"n": "integer", "tags": "keyword"}, "dropping again is a no-op"
    got = coll.search(q, k, filter={"cat": "c"}, exact=True).ids
    keep = (cats == "c") & ~np.isin(np.arange(N), np.arange(0, 70))
    assert _recall(got, _brute(x, keep, q, k)) == 1.0


@pytest.mark.shoal(nodes=1)
def test_bad_payload_index_requests_are_refused_and_change_nothing(shoal_cluster: shoal.Cluster) -> None:
    coll = shoal_cluster.create_collection("bad", dim=4, metric="l2")
    with pytest.raises(shoal.InvalidArgument, match='unknown payload index kind "text"'):
        coll.create_payload_index("f", "text")
    with pytest.raises(shoal.InvalidArgument, match="empty path segment"):
        coll.create_payload_index("a..b", "keyword")
    with pytest.raises(shoal.InvalidArgument, match="1..=256 bytes"):
        coll.create_payload_index("x" * 300, "keyword")
    assert coll.payload_indexes() == {}, "nothing was created"
    assert coll.drop_payload_index("f") == {}, "dropping a missing index is a no-op"
    shoal_cluster.drop_collection("bad")
    with pytest.raises(shoal.CollectionNotFound):
        coll.create_payload_index("f", "keyword")
