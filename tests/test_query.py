"""Distributed query execution (DESIGN §4) on real node processes: exact merged answers over many shards,
batches, large k, deadlines, cancellation (Query.cancel, asyncio, the nodes go idle), partial results,
replica choice per load-balancing strategy, and hedging around a paused replica."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

import shoal
from testlib import clustered, exact_topk

DIM = 16
N = 3000


def _stats(cluster: shoal.Cluster) -> dict[int, dict]:
    return {n.id: dict(n.stats or {}) for n in cluster.nodes() if n.status == "up"}


def _wait_idle(cluster: shoal.Cluster, within: float = 30.0) -> float:
    """Seconds until no node has a request or shard search in flight. `within` is a liveness bound (a node that
    never goes idle fails the test instead of hanging it), far above any expected time: not a speed check; the
    `cancelled` counters are what show that the work was stopped."""
    t0 = time.monotonic()
    while True:
        busy = {nid: s.get("in_flight") for nid, s in _stats(cluster).items() if s.get("in_flight")}
        # the probe itself is not counted: Info is not a search or a write
        if not busy:
            return time.monotonic() - t0
        assert time.monotonic() - t0 < within, f"nodes still busy after {within} s: {busy}"
        time.sleep(0.01)


def _cpu(cluster: shoal.Cluster) -> float:
    return sum((n.resources or {}).get("cpu_seconds", 0.0) for n in cluster.nodes())


@pytest.fixture(scope="module")
def six_shards():
    """3 nodes, a flat (exact) collection of 6 shards x 2 replicas with N points."""
    with shoal.Cluster.local(nodes=3) as cluster:
        coll = cluster.create_collection("six", dim=DIM, metric="l2", shards=6, replication_factor=2, index="flat")
        data = clustered(N, DIM, seed=11)
        coll.upsert(np.arange(N), data, payloads=[{"even": i % 2 == 0} for i in range(N)])
        yield cluster, coll, data


def test_exact_search_over_six_shards_equals_brute_force(six_shards) -> None:
    _, coll, data = six_shards
    queries = clustered(25, DIM, seed=12)
    res = coll.search(queries, k=10)
    idx, dist = exact_topk(data, queries, 10, "l2")
    assert res.ids.tolist() == idx.tolist()
    np.testing.assert_allclose(res.distances, dist, rtol=1e-4, atol=1e-3)
    assert not res.partial and res.coverage == 1.0 and res.failed_shards == []
    # filtered: the same, restricted to even ids
    res = coll.search(queries, k=10, filter={"even": True})
    even = np.arange(0, N, 2)
    idx, _ = exact_topk(data[even], queries, 10, "l2")
    assert res.ids.tolist() == even[idx].tolist()


def test_batch_equals_single(six_shards) -> None:
    _, coll, _ = six_shards
    queries = clustered(20, DIM, seed=13)
    batch = coll.search(queries, k=7, consistency="eventual")
    for i, q in enumerate(queries):
        one = coll.search(q, k=7, consistency="eventual")
        assert one.ids[0].tolist() == batch.ids[i].tolist()
        np.testing.assert_array_equal(one.distances[0], batch.distances[i])


def test_large_k(six_shards) -> None:
    _, coll, data = six_shards
    queries = clustered(3, DIM, seed=14)
    res = coll.search(queries, k=2000)
    idx, dist = exact_topk(data, queries, 2000, "l2")
    assert res.ids.shape == (3, 2000)
    assert res.ids.tolist() == idx.tolist()
    np.testing.assert_allclose(res.distances, dist, rtol=1e-4, atol=1e-3)
    # k above the number of points: every point once, then padding
    res = coll.search(queries[:1], k=16384)
    got = res.ids[0][res.ids[0] >= 0]
    assert len(got) == N and len(set(got.tolist())) == N
    assert np.all(res.ids[0][N:] == -1) and np.all(np.isinf(res.distances[0][N:]))


def test_search_async_and_query_match_search(six_shards) -> None:
    _, coll, _ = six_shards
    queries = clustered(30, DIM, seed=15)
    want = coll.search(queries, k=5).ids

    async def many() -> list[shoal.SearchResult]:
        return await asyncio.gather(*[coll.search_async(q, k=5) for q in queries])

    got = asyncio.run(many())
    assert [r.ids[0].tolist() for r in got] == want.tolist()
    q = coll.query(queries, k=5)
    assert q.result(timeout=10).ids.tolist() == want.tolist()
    assert q.done() and not q.cancel()
    assert "six" in repr(q)
    with pytest.raises(shoal.InvalidArgument, match="k"):
        coll.query(queries, k=0)
    with pytest.raises(shoal.InvalidArgument, match="load_balancing"):
        coll.search(queries, k=1, load_balancing="random")


@pytest.fixture(scope="module")
def heavy():
    """3 nodes, a flat collection big enough that a batch of queries takes seconds of exact scanning."""
    with shoal.Cluster.local(nodes=3) as cluster:
        coll = cluster.create_collection("heavy", dim=64, metric="l2", shards=3, replication_factor=1, index="flat")
        n = 120_000
        data = clustered(n, 64, seed=21)
        coll.upsert(np.arange(n), data)
        yield cluster, coll, clustered(6000, 64, seed=22)


def test_tiny_timeout_on_a_heavy_search_raises_timeout(heavy) -> None:
    cluster, coll, queries = heavy
    cancelled_before = sum(s["cancelled"] for s in _stats(cluster).values())
    t0 = time.monotonic()
    with pytest.raises(shoal.Timeout):
        coll.search(queries, k=10, timeout=0.2)
    late = time.monotonic() - t0 - 0.2
    print(f"Timeout raised {late * 1000:.0f} ms after the deadline")
    idle = _wait_idle(cluster)
    print(f"nodes idle {idle * 1000:.0f} ms after the Timeout")
    assert sum(s["cancelled"] for s in _stats(cluster).values()) > cancelled_before


def test_cancel_stops_the_work_on_every_node(heavy) -> None:
    cluster, coll, queries = heavy
    cancelled_before = sum(s["cancelled"] for s in _stats(cluster).values())
    q = coll.query(queries, k=10, timeout=60)
    time.sleep(0.3)
    assert not q.done(), "the heavy search finished before it could be cancelled"
    assert q.cancel()
    idle = _wait_idle(cluster)
    print(f"nodes idle {idle * 1000:.0f} ms after cancel()")
    with pytest.raises(shoal.Cancelled):
        q.result(timeout=5)
    assert q.done()
    assert sum(s["cancelled"] for s in _stats(cluster).values()) > cancelled_before
    # no CPU burnt afterwards
    c0 = _cpu(cluster)
    time.sleep(0.5)
    assert _cpu(cluster) - c0 < 0.3, "nodes kept computing after the cancel"


def test_cancelling_an_asyncio_task_cancels_the_search(heavy) -> None:
    cluster, coll, queries = heavy

    async def run() -> None:
        task = asyncio.ensure_future(coll.search_async(queries, k=10, timeout=60))
        await asyncio.sleep(0.3)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    _wait_idle(cluster)


def test_query_result_timeout_leaves_it_running(heavy) -> None:
    cluster, coll, queries = heavy
    q = coll.query(queries[:1500], k=10, timeout=60)
    with pytest.raises(shoal.Timeout, match="keeps running"):
        q.result(timeout=0.05)
    assert not q.done()
    q.cancel()
    _wait_idle(cluster)


@pytest.mark.shoal(nodes=3)
def test_partial_results_with_an_rf1_node_down(shoal_cluster: shoal.Cluster) -> None:
    coll = shoal_cluster.create_collection("p", dim=DIM, metric="l2", shards=3, replication_factor=1, index="flat")
    data = clustered(N, DIM, seed=31)
    coll.upsert(np.arange(N), data)
    queries = clustered(5, DIM, seed=32)
    full = coll.search(queries, k=60)
    on3 = sorted(s.id for s in coll.shards() if s.replicas[0].node == 3)
    assert len(on3) == 1
    shoal_cluster.node(3).kill()

    res = coll.search(queries, k=10, allow_partial=True, timeout=10)
    assert res.partial and res.failed_shards == on3
    assert res.coverage == pytest.approx(2 / 3)

    # which of the full answer's ids live on the shards still up
    def alive(i: int) -> bool:
        try:
            coll.get([i], consistency="eventual", timeout=5)
            return True
        except shoal.ShardUnavailable:
            return False

    for row_full, row_part in zip(full.ids, res.ids):
        expect = [int(i) for i in row_full if alive(int(i))][:10]
        assert row_part.tolist() == expect

    t0 = time.monotonic()
    with pytest.raises(shoal.ShardUnavailable, match=f"shard {on3[0]}"):
        coll.search(queries, k=10, timeout=10)
    fail = time.monotonic() - t0
    # ShardUnavailable, not Timeout: the search failed on the unreachable shard instead of waiting out its 10 s
    print(f"without allow_partial: ShardUnavailable after {fail * 1000:.0f} ms")


def _spread(cluster: shoal.Cluster, run: Callable[[], None]) -> dict[int, int]:
    before = _stats(cluster)
    run()
    after = _stats(cluster)
    return {nid: after[nid]["searches"] - before[nid]["searches"] for nid in after}


@pytest.mark.shoal(nodes=3)
def test_eventual_reads_spread_by_strategy(shoal_cluster: shoal.Cluster) -> None:
    coll = shoal_cluster.create_collection("lb", dim=DIM, shards=1, replication_factor=3, index="flat")
    data = clustered(2000, DIM, seed=41)
    coll.upsert(np.arange(2000), data)
    via1 = shoal.connect(shoal_cluster.node(1).address, credentials=shoal_cluster.credentials)
    try:
        c1 = via1.collection("lb")
        queries = clustered(30, DIM, seed=42)

        def sequential(lb: str) -> Callable[[], None]:
            return lambda: [c1.search(q, k=5, consistency="eventual", load_balancing=lb) for q in queries]

        rr = _spread(shoal_cluster, sequential("round_robin"))
        print("round_robin", rr)
        # (30 or a few more: a search slower than its replica's p95, e.g. on a busy machine, gets a hedged twin)
        assert 30 <= sum(rr.values()) <= 36 and all(v >= 8 for v in rr.values()), rr
        loc = _spread(shoal_cluster, sequential("locality"))
        print("locality", loc)
        assert loc == {1: 30, 2: 0, 3: 0}

        # least_loaded: a busy replica is avoided, so concurrent searches spread over the replicas
        big = clustered(200, DIM, seed=43)

        def concurrent() -> None:
            def worker() -> None:
                for _ in range(8):
                    c1.search(big, k=5, consistency="eventual", load_balancing="least_loaded")

            threads = [threading.Thread(target=worker) for _ in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        ll = _spread(shoal_cluster, concurrent)
        print("least_loaded (6 concurrent clients)", ll)
        # (more than 48: a search slower than its replica's p95 is hedged to another replica)
        assert sum(ll.values()) >= 48 and sum(1 for v in ll.values() if v > 0) >= 2, ll
        # session reads without a token of this client are balanced too; strong reads go to the leader
        leader = coll.shards()[0].leader
        st = _spread(shoal_cluster, lambda: [c1.search(q, k=5, consistency="strong") for q in queries[:10]])
        assert st[leader] == 10, st
    finally:
        via1.close()


@pytest.mark.shoal(nodes=3, load_balancing="round_robin")
def test_hedging_answers_around_a_paused_replica(shoal_cluster: shoal.Cluster) -> None:
    coll = shoal_cluster.create_collection("h", dim=DIM, shards=2, replication_factor=3, index="flat")
    data = clustered(4000, DIM, seed=51)
    coll.upsert(np.arange(4000), data)
    via1 = shoal.connect(shoal_cluster.node(1).address, credentials=shoal_cluster.credentials)
    try:
        c1 = via1.collection("h")
        queries = clustered(40, DIM, seed=52)
        want = coll.search(queries, k=5).ids
        for q in queries:  # latency samples for every replica's p95
            c1.search(q, k=5, consistency="eventual")
        hedged0 = _stats(shoal_cluster)[1]["hedged"]
        shoal_cluster.node(3).pause()
        try:
            worst = 0.0
            for i, q in enumerate(queries):
                t0 = time.monotonic()
                r = c1.search(q, k=5, consistency="eventual", timeout=2)
                worst = max(worst, time.monotonic() - t0)
                assert not r.partial
                assert r.ids[0].tolist() == want[i].tolist()
            hedged = _stats(shoal_cluster)[1]["hedged"] - hedged0
            print(f"40 searches with node 3 paused: {hedged} hedged requests, slowest {worst * 1000:.0f} ms")
            assert hedged > 0
        finally:
            shoal_cluster.node(3).resume()
    finally:
        via1.close()
