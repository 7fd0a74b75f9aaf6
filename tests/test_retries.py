"""Idempotent retries (DESIGN §3, issue "Integrity" item 6): a write keeps one identity across every retry,
whichever node coordinates it, so a client's re-send can never overwrite a newer acknowledged write.

The staged history reproduced here lost an acknowledged write 3 times out of 3 before write ids existed:
a follower P is paused; client A writes v1 at `strong` through follower X (it commits and becomes visible,
but A's call waits for P); client B writes v2 at `quorum` (acknowledged); X is killed, and A's client
re-sends v1 through the leader. Every wait is bounded; nothing here asserts a duration."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import shoal

DIM = 4
KEY = 7


def _vec(gen: int) -> np.ndarray:
    return np.full((1, DIM), float(gen + 1), dtype=np.float32)


def _until(what: str, fn: Callable[[], Any], ok: Callable[[Any], bool], within: float = 20.0) -> Any:
    """Calls `fn` until `ok(result)` (ShoalErrors count as not yet), at most `within` seconds."""
    deadline = time.monotonic() + within
    last: Any = None
    while True:
        try:
            last = fn()
            if ok(last):
                return last
        except shoal.ShoalError as e:
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} within {within:g} s; last: {last!r}")
        time.sleep(0.05)


def _value(coll: shoal.Collection) -> int | None:
    got = coll.get([KEY], consistency="strong", timeout=5)
    return None if got.missing else got.payloads[0]["v"]


@pytest.mark.shoal(nodes=3)
def test_a_retry_through_another_node_never_overwrites_a_newer_write(shoal_cluster: shoal.Cluster) -> None:
    coll = shoal_cluster.create_collection("register", dim=DIM, metric="l2", shards=1, replication_factor=3)
    coll.upsert([KEY], _vec(0), payloads=[{"v": 0}], consistency="strong")
    shard = _until(
        "shard 0 has a leader and 3 caught-up replicas",
        lambda: coll.shards(timeout=5)[0],
        lambda s: s.leader is not None and len(s.replicas) == 3 and len({r.applied_index for r in s.replicas}) == 1,
    )
    leader = shard.leader
    x, p = [n for n in shard.nodes if n != leader]
    addr = {n.id: n.address for n in shoal_cluster.nodes()}

    shoal_cluster.node(p).pause()
    outcome: dict[str, Any] = {}

    def client_a() -> None:
        # A knows X first, then the leader: when X dies its client fails over and re-sends v1.
        with shoal.connect([addr[x], addr[leader]], credentials=shoal_cluster.credentials) as a:
            try:
                outcome["result"] = a.collection("register").upsert(
                    [KEY], _vec(1), payloads=[{"v": 1}], consistency="strong", timeout=12
                )
            except shoal.ShoalError as e:
                outcome["error"] = e

    with shoal.connect([addr[leader]], credentials=shoal_cluster.credentials) as other:
        reader = other.collection("register")
        a_thread = threading.Thread(target=client_a, daemon=True)
        a_thread.start()
        try:
            _until(
                "a strong reader sees A's v1 (committed on the leader and X)", lambda: _value(reader), lambda v: v == 1
            )
            assert "result" not in outcome, "A's strong write cannot be acknowledged while P is paused"
            # B's write, acknowledged at quorum, then seen by the reader
            assert reader.upsert([KEY], _vec(2), payloads=[{"v": 2}], consistency="quorum", timeout=10) == 1
            assert _value(reader) == 2
            # X dies under A's call: A's client re-sends v1 through the leader (it cannot commit there while
            # P is paused and X is dead: a majority of 3 needs P back)
            shoal_cluster.node(x).kill()
            a_thread.join(timeout=30)
            assert not a_thread.is_alive(), "A's call must end within its timeout"
        finally:
            shoal_cluster.node(p).resume()
        # With P back the leader commits whatever A's retry left in its log: it must not win over v2.
        v = _until("a strong read through the leader", lambda: _value(reader), lambda v: v is not None, within=30)
        assert v == 2, f"A's retry overwrote B's acknowledged write (A's outcome: {outcome})"
        time.sleep(0.5)  # anything still in flight from A's retry lands by now; it must not win either
        assert _value(reader) == 2, f"A's retry overwrote B's acknowledged write (A's outcome: {outcome})"
        # A's write was never acknowledged: its error says so, and is one of the indeterminate kinds
        assert "error" in outcome, outcome
        assert isinstance(outcome["error"], (shoal.ConsistencyError, shoal.Timeout, shoal.NodeUnavailable))
        shoal_cluster.node(x).start(timeout=60)
        shard = _until(
            "replicas converge after the heal",
            lambda: coll.shards(timeout=5)[0],
            lambda s: (
                len(s.replicas) == 3
                and len({r.applied_index for r in s.replicas}) == 1
                and len({r.digest for r in s.replicas}) == 1
            ),
            within=60,
        )
        assert _value(reader) == 2, "v2 is the final value on the healed cluster"
        for r in shard.replicas:  # every replica holds the same single point
            assert r.count == 1


@pytest.mark.shoal(nodes=3)
def test_a_paused_coordinator_fails_over_and_the_retry_applies_once(shoal_cluster: shoal.Cluster) -> None:
    """A coordinator that stops answering (SIGSTOP) is given up after a few seconds of unanswered pings, the
    write goes through another node with the same write id, and when the paused node resumes its copy of the
    write (if it had forwarded it) is not applied a second time."""
    coll = shoal_cluster.create_collection("counter", dim=DIM, metric="l2", shards=1, replication_factor=3)
    coll.upsert([KEY], _vec(0), payloads=[{"v": 0}])
    shard = _until("shard 0 has a leader", lambda: coll.shards(timeout=5)[0], lambda s: s.leader is not None)
    addr = {n.id: n.address for n in shoal_cluster.nodes()}
    x = next(n for n in shard.nodes if n != shard.leader)
    shoal_cluster.node(x).pause()
    try:
        with shoal.connect(
            [addr[x], addr[shard.leader]], connect_timeout=5, credentials=shoal_cluster.credentials
        ) as a:
            # The call must not sit on the paused node until its deadline: it fails over and succeeds.
            assert a.collection("counter").upsert([KEY], _vec(1), payloads=[{"v": 1}], timeout=15) == 1
            got = a.collection("counter").get([KEY], consistency="strong", timeout=10)
            assert got.payloads[0]["v"] == 1
    finally:
        shoal_cluster.node(x).resume()
    with shoal.connect([addr[shard.leader]], credentials=shoal_cluster.credentials) as b:
        c = b.collection("counter")
        assert c.upsert([KEY], _vec(2), payloads=[{"v": 2}]) == 1
        time.sleep(1.0)  # give a late copy from the resumed node time to arrive (it must not win)
        assert _value(c) == 2


@pytest.mark.shoal(nodes=3)
def test_a_client_whose_first_node_is_cut_off_fails_over(shoal_cluster: shoal.Cluster) -> None:
    """Node 3 is partitioned from the other two, but still answers its clients. A client that lists it first
    does not wait for its requests' deadlines there: node 3 knows it hears from no group-0 leader, answers
    NodeUnavailable, and the client moves on to a node of the majority (the write with its write id, so it
    applies once). Reads at `eventual` that node 3 can serve from its own replica still work there."""
    coll = shoal_cluster.create_collection("cut", dim=DIM, metric="l2", shards=1, replication_factor=3)
    coll.upsert([KEY], _vec(0), consistency="strong")
    n3 = shoal_cluster.node(3).address
    others = [a for a in shoal_cluster.addresses() if a != n3]
    shoal_cluster.partition([3])
    try:
        with shoal.connect([n3, *others], credentials=shoal_cluster.credentials) as c:
            w = c.collection("cut")
            for gen in range(1, 4):
                # 30 s deadlines: before, each call waited them out on node 3 and failed.
                assert w.upsert([KEY], _vec(gen), consistency="quorum", timeout=30) == 1
                got = w.get([KEY], consistency="strong", timeout=30)
                assert got.vectors[0][0] == gen + 1, got
        with shoal.connect([n3], credentials=shoal_cluster.credentials) as only3:
            with pytest.raises(shoal.NodeUnavailable, match="cut off"):
                only3.collection("cut").upsert([KEY + 1], _vec(9), consistency="quorum", timeout=30)
            assert only3.collection("cut").get([KEY], consistency="eventual", timeout=10).missing == []
    finally:
        shoal_cluster.heal()
    _until(
        "node 3 catches up after the heal",
        lambda: coll.shards(timeout=5)[0].replicas,
        lambda reps: len({(r.applied_index, r.digest) for r in reps}) == 1,
    )
