"""Restarts (graceful and kill -9), frozen nodes and a node that is down: every acknowledged write is kept,
no call hangs."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import shoal
from testlib import clustered, exact_topk, recall

DIM = 24


def _fill(coll: shoal.Collection, n: int, batches: int, seed: int) -> tuple[np.ndarray, list[dict]]:
    v = clustered(n, DIM, seed=seed)
    payloads = [{"i": i, "tag": f"t{i % 7}"} for i in range(n)]
    step = n // batches
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        assert coll.upsert(np.arange(lo, hi), v[lo:hi], payloads=payloads[lo:hi]) == hi - lo
    return v, payloads


def _check_all_present(coll: shoal.Collection, v: np.ndarray, payloads: list[dict], ids: np.ndarray) -> None:
    assert coll.count() == len(ids)
    got = coll.get(ids)
    assert got.missing == []
    np.testing.assert_array_equal(got.ids, ids)
    np.testing.assert_array_equal(got.vectors, v[ids])
    assert got.payloads == [payloads[i] for i in ids.tolist()]


@pytest.mark.shoal(nodes=1)
def test_graceful_restart_keeps_everything(shoal_cluster: shoal.Cluster) -> None:
    coll = shoal_cluster.create_collection("docs", dim=DIM, metric="l2")
    v, payloads = _fill(coll, 3000, 3, seed=1)
    coll.wait_indexed(timeout=120)
    node = shoal_cluster.node(1)
    port = node.port
    node.stop()
    assert not node.running
    node.start()
    assert node.running and node.port == port, "restarted on the same port"

    assert shoal_cluster.list_collections() == ["docs"]
    coll = shoal_cluster.collection("docs")
    _check_all_present(coll, v, payloads, np.arange(3000))
    coll.wait_indexed(timeout=120)
    queries = v[:100] + 0.05
    res = coll.search(queries, k=10, ef=128)
    truth, _ = exact_topk(v, queries, 10, "l2")
    assert recall(res.ids, truth) >= 0.95
    # and it keeps taking writes
    coll.upsert([5000], np.ones(DIM))
    assert coll.count() == 3001
    node.restart()
    assert coll.count() == 3001


@pytest.mark.shoal(nodes=1)
def test_kill_9_keeps_every_acknowledged_write(shoal_cluster: shoal.Cluster) -> None:
    coll = shoal_cluster.create_collection("docs", dim=DIM, metric="cosine")
    v, payloads = _fill(coll, 2000, 4, seed=2)
    coll.delete(np.arange(0, 100))
    coll.update_payload(np.arange(100, 150), {"tag": "patched"})
    for i in range(100, 150):
        payloads[i] = {**payloads[i], "tag": "patched"}
    node = shoal_cluster.node(1)
    node.kill()
    assert not node.running
    with pytest.raises(shoal.NodeUnavailable):
        coll.count(timeout=3)  # a down node fails fast and clearly, it does not hang
    assert shoal_cluster.health(timeout=3).status == "red"
    node.start()
    assert shoal_cluster.health().status == "green"

    ids = np.arange(100, 2000)
    assert coll.count() == len(ids)
    got = coll.get(np.arange(0, 2000))
    assert got.missing == list(range(100)), "deletes survive"
    np.testing.assert_array_equal(got.ids, ids)
    norm = v / np.linalg.norm(v, axis=1, keepdims=True)
    np.testing.assert_allclose(got.vectors, norm[ids], rtol=1e-5, atol=1e-6)
    assert got.payloads == [payloads[i] for i in ids.tolist()]
    res = coll.search(v[[150, 1999]], k=1)
    assert res.ids[:, 0].tolist() == [150, 1999]


@pytest.mark.shoal(nodes=1)
def test_kill_9_during_writes_loses_no_acknowledged_write(shoal_cluster: shoal.Cluster) -> None:
    """A writer streams batches; the node is SIGKILLed mid-stream. Every batch whose upsert returned is
    there after the restart (the acknowledged-write ledger)."""
    coll = shoal_cluster.create_collection("ledger", dim=DIM, metric="l2")
    v = clustered(20000, DIM, seed=3)
    acked: list[tuple[int, int]] = []
    attempted = [0]
    failure: list[BaseException] = []
    stop = threading.Event()

    def writer() -> None:
        lo = 0
        while lo < len(v) and not stop.is_set():
            hi = lo + 200
            attempted[0] = hi
            try:
                coll.upsert(np.arange(lo, hi), v[lo:hi], consistency="quorum", timeout=5)
            except shoal.ShoalError as e:
                failure.append(e)
                return
            acked.append((lo, hi))
            lo = hi

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while len(acked) < 10 and time.monotonic() < deadline and t.is_alive():
        time.sleep(0.01)
    node = shoal_cluster.node(1)
    node.kill()
    t.join(timeout=30)
    stop.set()
    assert not t.is_alive()
    assert len(acked) >= 10
    node.start()

    acked_ids = np.concatenate([np.arange(lo, hi) for lo, hi in acked])
    got = coll.get(acked_ids)
    assert got.missing == [], f"{len(got.missing)} acknowledged points lost"
    np.testing.assert_array_equal(got.vectors, v[acked_ids])
    n = coll.count()
    assert len(acked_ids) <= n <= attempted[0]


@pytest.mark.shoal(nodes=1)
def test_paused_node_times_out_instead_of_hanging(shoal_cluster: shoal.Cluster) -> None:
    coll = shoal_cluster.create_collection("docs", dim=4)
    coll.upsert([1, 2], np.eye(2, 4))
    node = shoal_cluster.node(1)
    node.pause()
    try:
        assert node.paused
        with pytest.raises(shoal.Timeout) as e:
            coll.search(np.ones(4), k=1, timeout=1.0)
        assert isinstance(e.value, TimeoutError)
        with pytest.raises(shoal.Timeout):
            coll.count(timeout=0.5)
    finally:
        node.resume()
    assert not node.paused
    assert coll.search(np.ones(4), k=1, timeout=10).ids.shape == (1, 1)
    assert coll.count() == 2


@pytest.mark.shoal(nodes=1)
def test_stop_while_paused_still_stops(shoal_cluster: shoal.Cluster) -> None:
    node = shoal_cluster.node(1)
    node.pause()
    node.stop(timeout=10)
    assert not node.running
    node.start()
    assert shoal_cluster.health().status == "green"
