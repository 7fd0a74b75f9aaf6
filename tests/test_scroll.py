"""Scroll: every live point exactly once in batches over a server stream, filters, batch sizes, resume
tokens, str ids, validation before any batch, writes during a scroll, and a replica or the serving node
killed mid-scroll (1 node and 3 nodes, 3+ shards)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

import shoal
from testlib import clustered

DIM = 8
N = 1000


def _payload(i: int) -> dict:
    return {"i": i, "lang": ["en", "de", "fr"][i % 3], "year": 2000 + i % 25}


def _fill(coll: shoal.Collection, n: int = N) -> np.ndarray:
    v = clustered(n, DIM, seed=3)
    coll.upsert(np.arange(n), v, payloads=[_payload(i) for i in range(n)])
    return v


def _all(batches: Iterator[shoal.Points]) -> tuple[list, list[shoal.Points]]:
    got = list(batches)
    ids = [x for b in got for x in b.ids.tolist()]
    return ids, got


@pytest.fixture
def coll(module_cluster: shoal.Cluster, unique_name: str) -> Iterator[shoal.Collection]:
    c = module_cluster.create_collection(unique_name, dim=DIM, metric="l2", shards=4, index="flat")
    yield c
    module_cluster.drop_collection(unique_name)


def test_every_point_once_with_vectors_and_payloads(coll: shoal.Collection) -> None:
    v = _fill(coll)
    ids, batches = _all(coll.scroll(with_vectors=True))
    assert len(ids) == N and sorted(ids) == list(range(N)), "each point exactly once"
    assert len(batches) == 1 and len(batches[0]) == N, "default batch_size is 1000"
    for b in batches:
        assert b.vectors is not None and b.vectors.dtype == np.float32
        np.testing.assert_array_equal(b.vectors, v[b.ids])
        assert b.payloads == [_payload(int(i)) for i in b.ids]
        assert isinstance(b.resume_token, bytes) and b.resume_token
    bare = next(iter(coll.scroll(batch_size=10)))
    assert bare.vectors is None and bare.payloads == [_payload(int(i)) for i in bare.ids]


@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_batch_sizes(coll: shoal.Collection, batch_size: int) -> None:
    n = 60 if batch_size == 1 else 300
    _fill(coll, n)
    ids, batches = _all(coll.scroll(batch_size=batch_size))
    assert sorted(ids) == list(range(n)) and len(ids) == n
    sizes = [len(b) for b in batches]
    assert all(s == batch_size for s in sizes[:-1]), f"only the last batch may be short: {sizes}"
    assert 0 < sizes[-1] <= batch_size


def test_filter_returns_exactly_the_matching_points(coll: shoal.Collection) -> None:
    _fill(coll)
    flt = {"lang": "de", "year": {"$gte": 2010}}
    want = sorted(i for i in range(N) if i % 3 == 1 and 2000 + i % 25 >= 2010)
    ids, batches = _all(coll.scroll(batch_size=13, filter=flt))
    assert sorted(ids) == want and len(ids) == len(want)
    assert all(p["lang"] == "de" for b in batches for p in b.payloads)
    assert list(coll.scroll(filter={"lang": "xx"})) == []


def test_resume_from_a_mid_scroll_token(coll: shoal.Collection) -> None:
    _fill(coll)
    it = coll.scroll(batch_size=37)
    first = [next(it) for _ in range(9)]
    it.close()
    seen = [x for b in first for x in b.ids.tolist()]
    rest, _ = _all(coll.scroll(batch_size=37, resume_token=first[-1].resume_token))
    assert not set(seen) & set(rest), "a resumed scroll repeats nothing"
    assert sorted(seen + rest) == list(range(N))
    # The token of the last batch resumes to nothing.
    ids, batches = _all(coll.scroll(batch_size=500))
    assert list(coll.scroll(resume_token=batches[-1].resume_token)) == []


def test_str_ids(module_cluster: shoal.Cluster, unique_name: str) -> None:
    c = module_cluster.create_collection(unique_name, dim=DIM, metric="l2", id_type="str", shards=3)
    try:
        names = [f"doc-{i}" for i in range(250)] + ["é", "a/b"]
        c.upsert(names, clustered(len(names), DIM), payloads=[{"n": n} for n in names])
        ids, batches = _all(c.scroll(batch_size=17))
        assert sorted(ids) == sorted(names) and len(ids) == len(names)
        assert batches[0].ids.dtype == object
        assert all(p == {"n": i} for b in batches for i, p in zip(b.ids.tolist(), b.payloads))
        rest, _ = _all(c.scroll(batch_size=17, resume_token=batches[3].resume_token))
        assert sorted(ids[4 * 17 :]) == sorted(rest)
    finally:
        module_cluster.drop_collection(unique_name)


def test_empty_collection_yields_nothing(coll: shoal.Collection) -> None:
    assert list(coll.scroll()) == []
    assert list(coll.scroll(batch_size=1, filter={"a": 1}, with_vectors=True)) == []


def test_bad_arguments_raise_before_any_batch(coll: shoal.Collection, module_cluster: shoal.Cluster) -> None:
    _fill(coll, 10)
    for bad in (0, -1, 100_001, 2.5, "7"):
        with pytest.raises(shoal.InvalidArgument, match="batch_size"):
            coll.scroll(batch_size=bad)
    with pytest.raises(shoal.InvalidArgument, match="filter"):
        coll.scroll(filter={"year": {"$between": [1, 2]}})
    with pytest.raises(shoal.InvalidArgument, match="filter"):
        coll.scroll(filter="{not json")
    with pytest.raises(shoal.InvalidArgument, match="resume_token"):
        coll.scroll(resume_token=b"\x01garbage")
    with pytest.raises(shoal.InvalidArgument, match="resume_token"):
        coll.scroll(resume_token="abc")  # type: ignore[arg-type]
    with pytest.raises(shoal.InvalidArgument, match="consistency"):
        coll.scroll(consistency="quorum")
    with pytest.raises(shoal.CollectionNotFound):
        module_cluster._c.scroll("no_such_collection", "int", 10, None, False, "session")


def test_token_of_another_incarnation_is_rejected(module_cluster: shoal.Cluster, unique_name: str) -> None:
    c = module_cluster.create_collection(unique_name, dim=DIM, metric="l2", shards=2)
    _fill(c, 50)
    token = next(iter(c.scroll(batch_size=10))).resume_token
    module_cluster.drop_collection(unique_name)
    c = module_cluster.create_collection(unique_name, dim=DIM, metric="l2", shards=2)
    try:
        with pytest.raises(shoal.InvalidArgument, match="resume_token.*incarnation"):
            c.scroll(resume_token=token)
    finally:
        module_cluster.drop_collection(unique_name)


def test_upserts_during_a_scroll_never_duplicate(coll: shoal.Collection) -> None:
    _fill(coll)
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        rng = np.random.default_rng(5)
        k = 0
        try:
            while not stop.is_set():
                # Re-upserts of existing points and new points (ids above N), interleaved with the scroll.
                ids = np.concatenate([rng.integers(0, N, 20), np.arange(N + k, N + k + 5)])
                ids = np.unique(ids)
                coll.upsert(ids, clustered(len(ids), DIM, seed=k), payloads=[_payload(int(i)) for i in ids])
                k += 5
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    try:
        seen: list = []
        for b in coll.scroll(batch_size=25):
            seen.extend(b.ids.tolist())
            time.sleep(0.002)
    finally:
        stop.set()
        t.join(10)
    assert not errors, errors
    assert len(seen) == len(set(seen)), "no point is returned twice"
    assert set(range(N)) <= set(seen), "points present for the whole scroll are all returned"


@pytest.mark.shoal(nodes=3)
def test_three_nodes_and_a_killed_replica(shoal_cluster: shoal.Cluster) -> None:
    coll = shoal_cluster.create_collection("scroll3", dim=DIM, metric="l2", shards=3, replication_factor=3)
    n = 2000
    v = clustered(n, DIM, seed=9)
    coll.upsert(np.arange(n), v, payloads=[_payload(i) for i in range(n)])

    # An `eventual` read may hit a replica that has not applied every quorum write yet: wait until all have.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        shards = coll.shards()
        if all(len(s.replicas) == 3 for s in shards) and sum(min(r.count for r in s.replicas) for s in shards) == n:
            break
        time.sleep(0.1)

    # Every level, with vectors, from a 3-node cluster.
    for level in ("eventual", "session", "strong"):
        ids, batches = _all(coll.scroll(batch_size=300, with_vectors=True, consistency=level))
        assert len(ids) == n and sorted(ids) == list(range(n)), level
        for b in batches:
            np.testing.assert_array_equal(b.vectors, v[b.ids])

    # strong reads go to shard leaders: kill a leader that is not the serving node mid-scroll; its shard's
    # pages are retried on the new leader.
    coordinator = int(shoal_cluster._c.cluster_info()["node_id"])
    deadline = time.monotonic() + 20
    victim = None
    while victim is None and time.monotonic() < deadline:
        leaders = [s.leader for s in coll.shards() if s.leader not in (None, coordinator)]
        victim = leaders[-1] if leaders else None
        if victim is None:
            time.sleep(0.2)
    assert victim is not None, "some shard should be led by another node than the serving one"
    it = coll.scroll(batch_size=50, consistency="strong")
    seen = [x for _ in range(3) for x in next(it).ids.tolist()]
    shoal_cluster.node(victim).kill()
    seen += [x for b in it for x in b.ids.tolist()]
    assert len(seen) == n and sorted(seen) == list(range(n)), "completed after the replica was killed"
    shoal_cluster.node(victim).start()

    # The serving node itself killed mid-scroll: the client resumes from the last batch on another node.
    it = coll.scroll(batch_size=50, consistency="eventual")
    seen = [x for _ in range(3) for x in next(it).ids.tolist()]
    shoal_cluster.node(coordinator).kill()
    seen += [x for b in it for x in b.ids.tolist()]
    assert len(seen) == len(set(seen)), "no duplicate across the reopened stream"
    assert sorted(seen) == list(range(n))
