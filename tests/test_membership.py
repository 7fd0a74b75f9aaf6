"""Membership and shard movement end to end with real node processes (DESIGN §5): a node added to a running
cluster receives replicas through openraft (learner: snapshot + log, then voter, then the source leaves)
while every point stays readable and exact top-k answers stay identical."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from test_replication import _check_present, _retry, _vecs, _wait_shards

import shoal

DIM = 8


def _settled(rf: int, must_hold: int):
    """Every shard has exactly `rf` active replicas that agree (applied index, digest), a leader, and node
    `must_hold` holds at least one replica."""

    def ok(shards: list[shoal.Shard]) -> bool:
        return (
            bool(shards)
            and any(must_hold in s.nodes for s in shards)
            and all(
                s.leader is not None
                and len(s.replicas) == rf
                and all(r.state == "active" for r in s.replicas)
                and len({(r.applied_index, r.digest) for r in s.replicas}) == 1
                for s in shards
            )
        )

    return ok


class _Reader(threading.Thread):
    """Reads every id at `strong` in a loop; records any acknowledged point it does not find."""

    def __init__(self, coll: shoal.Collection, ids: np.ndarray) -> None:
        super().__init__(daemon=True)
        self.coll, self.ids = coll, ids
        self.stop_event = threading.Event()
        self.reads = 0
        self.errors = 0
        self.missing: list[int] = []

    def run(self) -> None:
        deadline = time.monotonic() + 300
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            try:
                got = self.coll.get(self.ids, with_vectors=False, consistency="strong", timeout=5)
            except shoal.ShoalError:
                self.errors += 1  # a leader change mid-read: retried by the next round
                time.sleep(0.05)
                continue
            self.reads += 1
            if got.missing:
                self.missing.extend(int(i) for i in got.missing)


@pytest.mark.shoal(nodes=3)
def test_add_node_moves_replicas_onto_it_and_every_point_stays_readable(shoal_cluster: shoal.Cluster) -> None:
    coll = shoal_cluster.create_collection("grow", dim=DIM, metric="l2", shards=4, replication_factor=2, index="flat")
    _wait_shards(coll, lambda ss: all(s.leader is not None for s in ss), "every shard should get a leader")
    ids = np.arange(3000)
    for s in range(0, len(ids), 500):
        assert coll.upsert(ids[s : s + 500], _vecs(ids[s : s + 500])) == 500
    queries = _vecs(np.arange(10_000, 10_020), gen=5)
    before = coll.search(queries, k=10, consistency="strong")
    held_before = Counter(n for s in coll.shards() for n in s.nodes)
    assert 4 not in held_before

    reader = _Reader(coll, ids)
    reader.start()
    try:
        node4 = shoal_cluster.add_node()
        assert node4.id == 4
        assert {n.id for n in shoal_cluster.nodes() if n.status == "up"} == {1, 2, 3, 4}
        shards = _wait_shards(coll, _settled(2, 4), "replicas should move onto node 4 and settle", within=120)
    finally:
        reader.stop_event.set()
        reader.join(timeout=30)
    assert not reader.is_alive()
    assert reader.reads > 0, f"the reader never completed a read ({reader.errors} errors)"
    assert reader.missing == [], f"points went missing during the move: {sorted(set(reader.missing))[:10]}"

    held = Counter(n for s in shards for n in s.nodes)
    assert held[4] >= 1 and max(held.values()) - min(held.values()) <= 1, f"unbalanced after the move: {held}"
    # transfer progress is reported (a short log is replayed rather than snapshotted: then both are 0)
    moved = [r for s in shards for r in s.replicas if r.node == 4]
    assert moved and all(r.transfer_bytes == r.transfer_total_bytes for r in moved), moved
    # the moved replicas are real copies: exact answers are identical, every point is there
    after = coll.search(queries, k=10, consistency="strong")
    np.testing.assert_array_equal(after.ids, before.ids)
    np.testing.assert_allclose(after.distances, before.distances, rtol=1e-6)
    _check_present(coll, ids)
    # and node 4 serves them itself
    with shoal.connect(node4.address, credentials=shoal_cluster.credentials) as c:
        got = c.collection("grow").get(ids, consistency="eventual", timeout=10)
        on4 = [s.id for s in shards if 4 in s.nodes]
        assert on4
    assert got.missing == []


@pytest.mark.shoal(nodes=3)
def test_rebalance_is_a_no_op_on_a_balanced_cluster(shoal_cluster: shoal.Cluster) -> None:
    coll = shoal_cluster.create_collection("even", dim=DIM, shards=3, replication_factor=3)
    assert coll.rebalance() == []
    shoal_cluster.drop_collection("even")
    with pytest.raises(shoal.CollectionNotFound):
        coll.rebalance()


# Transfer knobs of the tests that interrupt a shard transfer mid-stream (flags of every node, documented in
# `shoal-node --help`): each shard's log is compacted every 20 entries, so a new replica catches up from a
# snapshot rather than by log replay; snapshots stream in 16 KiB chunks at 400 kB/s, so the ~1 MB snapshot of a
# 10k-point shard takes a few seconds to arrive and the test can see it half-way.
_SLOW_SNAPSHOTS = ["--raft-snapshot-every", "20", "--snapshot-chunk-bytes", "16384", "--snapshot-rate", "400000"]


def _fill(coll: shoal.Collection, n: int, batch: int = 500) -> np.ndarray:
    """Upserts ids 0..n in batches (one log entry per shard each: enough entries that logs get compacted)."""
    ids = np.arange(n)
    for s in range(0, n, batch):
        assert coll.upsert(ids[s : s + batch], _vecs(ids[s : s + batch])) == len(ids[s : s + batch])
    return ids


def _mid_stream(node: int):
    """Node `node` is receiving a snapshot: some bytes arrived, not all."""

    def ok(shards: list[shoal.Shard]) -> bool:
        return any(r.node == node and 0 < r.transfer_bytes < r.transfer_total_bytes for s in shards for r in s.replicas)

    return ok


def _moves_done(rf: int, must_hold: int):
    """Like `_settled` without the digest check (a writer may still be running): no replica joining or leaving."""

    def ok(shards: list[shoal.Shard]) -> bool:
        return any(must_hold in s.nodes for s in shards) and all(
            s.leader is not None and len(s.replicas) == rf and all(r.state == "active" for r in s.replicas)
            for s in shards
        )

    return ok


@pytest.mark.shoal(nodes=3, node_args=_SLOW_SNAPSHOTS)
def test_a_move_interrupted_by_killing_its_target_mid_stream_completes_after_restart(
    shoal_cluster: shoal.Cluster,
) -> None:
    coll = shoal_cluster.create_collection("kill", dim=DIM, metric="l2", shards=2, replication_factor=2, index="flat")
    _wait_shards(coll, lambda ss: all(s.leader is not None for s in ss), "every shard should get a leader")
    ids = _fill(coll, 20_000)
    node4 = shoal_cluster.add_node()
    # kill the target while its snapshot is half-way, then bring it back
    shards = _wait_shards(coll, _mid_stream(4), "node 4 should be receiving a snapshot", within=60)
    (part,) = [r for s in shards for r in s.replicas if r.node == 4 and r.transfer_bytes < r.transfer_total_bytes]
    assert part.state == "joining", part
    node4.kill()
    time.sleep(1.0)
    node4.start()
    shards = _wait_shards(coll, _settled(2, 4), "the interrupted move should complete", within=120)
    # the restarted target received a whole snapshot again (the first stream was dropped with the process)
    moved = [r for s in shards for r in s.replicas if r.node == 4]
    assert moved and all(0 < r.transfer_bytes == r.transfer_total_bytes for r in moved), moved
    _check_present(coll, ids)
    _retry("a quorum write after the move", lambda: coll.upsert([99_999], _vecs([99_999]), timeout=5))


@pytest.mark.shoal(nodes=3, node_args=_SLOW_SNAPSHOTS)
def test_a_move_whose_source_restarts_mid_transfer_completes_and_loses_nothing(shoal_cluster: shoal.Cluster) -> None:
    from test_replication import _Writer

    coll = shoal_cluster.create_collection("src", dim=DIM, metric="l2", shards=2, replication_factor=2, index="flat")
    _wait_shards(coll, lambda ss: all(s.leader is not None for s in ss), "every shard should get a leader")
    ids = _fill(coll, 20_000)
    # Paced (~4 batches a second, one log entry per shard each): with logs compacted every 20 entries, a faster
    # writer outruns the throttled snapshot (the log after it is purged before it arrives, so the learner needs
    # another), and the learner never gets within a few entries of its leader to be promoted.
    writer = _Writer(coll, batch=100, max_seconds=240, pause=0.25)
    writer.start()
    try:
        writer.wait_for(300)
        shoal_cluster.add_node()
        # the move's source is the replica marked leaving; act while node 4 is half-way through the snapshot
        shards = _wait_shards(
            coll,
            lambda ss: _mid_stream(4)(ss) and any(r.state == "leaving" for s in ss for r in s.replicas),
            "a move onto node 4 should be streaming",
            within=60,
        )
        shard, source = min((s.id, r.node) for s in shards for r in s.replicas if r.state == "leaving")
        shoal_cluster.node(source).kill()
        time.sleep(1.0)
        shoal_cluster.node(source).start()
        _wait_shards(coll, _moves_done(2, 4), f"the move off node {source} should complete", within=120)
        writer.wait_for(300)  # the cluster takes writes again
    finally:
        writer.stop_event.set()
        writer.join(timeout=30)
    assert not writer.is_alive() and writer.unexpected is None, writer.unexpected
    # replicas converge (same applied index and content digest), nothing is left joining or leaving
    shards = _wait_shards(coll, _settled(2, 4), "replicas should converge", within=60)
    moved = next(s for s in shards if s.id == shard)
    assert 4 in moved.nodes and source not in moved.nodes, moved
    every = sorted(set(ids.tolist()) | set(writer.acked))
    assert coll.count(consistency="strong") == len(every)
    _check_present(coll, every)


@pytest.mark.shoal(nodes=4)
def test_remove_node_with_drain_moves_every_replica_off_it_first(shoal_cluster: shoal.Cluster) -> None:
    coll = shoal_cluster.create_collection("shrink", dim=DIM, metric="l2", shards=4, replication_factor=2, index="flat")
    _wait_shards(coll, lambda ss: all(s.leader is not None for s in ss), "every shard should get a leader")
    ids = np.arange(4000)
    for s in range(0, len(ids), 1000):
        coll.upsert(ids[s : s + 1000], _vecs(ids[s : s + 1000]))
    queries = _vecs(np.arange(10_000, 10_020), gen=5)
    before = coll.search(queries, k=10, consistency="strong")
    held = Counter(n for s in coll.shards() for n in s.nodes)
    victim = held.most_common(1)[0][0]

    reader = _Reader(coll, ids)
    reader.start()
    try:
        moves = shoal_cluster.remove_node(victim, drain=True, timeout=120)
    finally:
        reader.stop_event.set()
        reader.join(timeout=30)
    assert moves == held[victim], f"one move per replica node {victim} held ({held[victim]}), got {moves}"
    assert reader.missing == [], f"points went missing during the drain: {sorted(set(reader.missing))[:10]}"

    shards = _wait_shards(
        coll,
        lambda ss: (
            all(victim not in s.nodes and len(s.replicas) == 2 and s.leader is not None for s in ss)
            and all(len({(r.applied_index, r.digest) for r in s.replicas}) == 1 for s in ss)
        ),
        f"no replica should be left on node {victim}",
        within=60,
    )
    assert all(victim not in s.nodes for s in shards)
    nodes = _retry("nodes()", lambda: shoal_cluster.nodes())
    assert victim not in {n.id for n in nodes}, f"node {victim} should have left the registry: {nodes}"
    after = coll.search(queries, k=10, consistency="strong")
    np.testing.assert_array_equal(after.ids, before.ids)
    _check_present(coll, ids)
    assert coll.upsert([50_000], _vecs([50_000])) == 1


# The CA of the cluster under test (health checks need TLS, not a key); set by the test.
_CA: list[bytes] = []


def _grpc_health(address: str) -> str:
    """`grpc.health.v1.Health/Check` of the whole server (service "") at `address`, through grpcio over TLS
    (no API key: health is open): the request is an empty message; the reply holds one enum field (1 =
    SERVING, 2 = NOT_SERVING)."""
    import grpc

    opts = [("grpc.enable_http_proxy", 0), ("grpc.ssl_target_name_override", "shoal-node")]
    creds = grpc.ssl_channel_credentials(root_certificates=_CA[0])
    with grpc.secure_channel(address, creds, options=opts) as ch:
        check = ch.unary_unary("/grpc.health.v1.Health/Check")  # raw bytes in and out
        reply = check(b"", timeout=5)
    status = reply[1] if len(reply) >= 2 and reply[0] == 0x08 else 0
    return {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}.get(status, str(status))


def _wait_health(address: str, want: str, within: float = 20.0) -> str:
    deadline = time.monotonic() + within
    got = ""
    for _ in range(int(within / 0.1) + 1):
        got = _grpc_health(address)
        if got == want or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    return got


@pytest.mark.shoal(nodes=4, node_args=_SLOW_SNAPSHOTS)
def test_grpc_health_is_not_serving_while_a_node_drains_and_after_it_left(shoal_cluster: shoal.Cluster) -> None:
    creds = shoal_cluster.credentials
    assert creds is not None and creds.ca_cert is not None
    _CA[:] = [Path(creds.ca_cert).read_bytes()]
    coll = shoal_cluster.create_collection("hc", dim=DIM, metric="l2", shards=4, replication_factor=2, index="flat")
    _wait_shards(coll, lambda ss: all(s.leader is not None for s in ss), "every shard should get a leader")
    ids = _fill(coll, 20_000)
    addr = {n.id: shoal_cluster.node(n.id).address for n in shoal_cluster.nodes()}
    assert {i: _grpc_health(a) for i, a in addr.items()} == {i: "SERVING" for i in addr}
    held = Counter(n for s in coll.shards() for n in s.nodes)
    victim = held.most_common(1)[0][0]
    other = next(i for i in addr if i != victim)

    # Remove it through a client of another node (Cluster.remove_node would also stop the local process;
    # here the process keeps running and must report that it no longer serves).
    result: dict[str, object] = {}

    def remove() -> None:
        try:
            with shoal.connect(addr[other], credentials=shoal_cluster.credentials) as c:
                result["moves"] = c.remove_node(victim, drain=True, timeout=120)
        except BaseException as e:  # reported below
            result["error"] = e

    t = threading.Thread(target=remove, daemon=True)
    t.start()
    try:
        assert _wait_health(addr[victim], "NOT_SERVING") == "NOT_SERVING", "a draining node must not serve"
    finally:
        t.join(timeout=150)
    assert not t.is_alive() and "error" not in result, result
    assert result["moves"] == held[victim], result
    # it left the cluster and still does not serve; the others do
    assert victim not in {n.id for n in _retry("nodes()", lambda: shoal_cluster.nodes())}
    assert _grpc_health(addr[victim]) == "NOT_SERVING"
    for i in addr:
        if i != victim:
            assert _grpc_health(addr[i]) == "SERVING", f"node {i}"
    # a node is SERVING again once ready after a restart
    node = shoal_cluster.node(other)
    node.stop()
    node.start()
    assert _wait_health(node.address, "SERVING") == "SERVING"
    _check_present(coll, ids)


@pytest.mark.shoal(nodes=3)
def test_drain_refuses_when_a_replica_has_nowhere_to_go(shoal_cluster: shoal.Cluster) -> None:
    shoal_cluster.create_collection("full", dim=DIM, shards=2, replication_factor=3)
    with pytest.raises(shoal.InvalidArgument, match="cannot drain node 3"):
        shoal_cluster.remove_node(3, drain=True, timeout=10)
    assert {n.id for n in shoal_cluster.nodes()} == {1, 2, 3}, "a refused removal changes nothing"


@pytest.mark.shoal(nodes=3)
def test_rolling_restart_under_a_quorum_writer_fails_and_loses_nothing(shoal_cluster: shoal.Cluster) -> None:
    from test_replication import _Writer

    coll = shoal_cluster.create_collection("roll", dim=DIM, metric="l2", shards=3, replication_factor=3, index="flat")
    _wait_shards(coll, lambda ss: all(s.leader is not None for s in ss), "every shard should get a leader")
    writer = _Writer(coll)
    writer.start()
    try:
        writer.wait_for(600)
        for i in (1, 2, 3):
            shoal_cluster.node(i).restart()  # graceful: hands leadership off, drains, flushes; then starts
            writer.wait_for(600)
            _wait_shards(
                coll,
                lambda ss: all(s.leader is not None and all(r.state == "active" for r in s.replicas) for s in ss),
                f"all replicas active again after restarting node {i}",
                within=60,
            )
    finally:
        writer.stop_event.set()
        writer.join(timeout=30)
    assert not writer.is_alive() and writer.unexpected is None, writer.unexpected
    assert writer.failures == 0, f"writes failed during the rolling restart: {dict(writer.errors)}"
    _check_present(coll, writer.acked)


@pytest.mark.shoal(nodes=4)
def test_rolling_restart_with_rf2_after_a_drain_fails_no_write_and_strong_reads_follow(
    shoal_cluster: shoal.Cluster,
) -> None:
    """The issue's scenario: 4 nodes, RF 2, one node drained out first, then every remaining node restarted
    in turn while one thread writes 50-point batches at quorum. No write may fail, and a strong read right
    after the restarts must follow the shards' new leaders within its timeout."""
    from test_replication import _Writer

    coll = shoal_cluster.create_collection("roll2", dim=DIM, metric="l2", shards=4, replication_factor=2, index="flat")
    _wait_shards(coll, lambda ss: all(s.leader is not None for s in ss), "every shard should get a leader")
    assert shoal_cluster.remove_node(4, drain=True, timeout=60) >= 0
    _wait_shards(
        coll,
        lambda ss: all(s.leader is not None and 4 not in s.nodes and len(s.replicas) == 2 for s in ss),
        "node 4 drained",
        within=90,
    )
    writer = _Writer(coll, batch=50)
    writer.start()
    try:
        writer.wait_for(300)
        for i in (1, 2, 3):
            shoal_cluster.node(i).restart()
            writer.wait_for(300)
            _wait_shards(
                coll,
                lambda ss: all(s.leader is not None and all(r.state == "active" for r in s.replicas) for s in ss),
                f"all replicas active again after restarting node {i}",
                within=60,
            )
        ids = np.asarray(writer.acked[-200:])
        got = coll.get(ids, with_vectors=False, consistency="strong", timeout=10)
        assert got.missing == []
    finally:
        writer.stop_event.set()
        writer.join(timeout=30)
    assert not writer.is_alive() and writer.unexpected is None, writer.unexpected
    assert writer.failures == 0, f"writes failed during the rolling restart: {dict(writer.errors)} {writer.messages}"
    _check_present(coll, writer.acked)


@pytest.mark.shoal(nodes=3)
def test_health_names_what_is_degraded(shoal_cluster: shoal.Cluster) -> None:
    coll = shoal_cluster.create_collection("hl", dim=DIM, shards=3, replication_factor=3)
    _wait_shards(coll, lambda ss: all(s.leader is not None for s in ss), "every shard should get a leader")
    deadline = time.monotonic() + 20
    while (h := shoal_cluster.health()).status != "green" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert h.status == "green" and h.reasons == [], h.reasons
    shoal_cluster.node(3).kill()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        h = shoal_cluster.health()
        if h.status == "yellow" and any("under-replicated" in r for r in h.reasons):
            break
        time.sleep(0.2)
    assert h.status == "yellow", h
    assert "node 3 is down" in h.reasons, h.reasons
    assert any("under-replicated: 2 of 3 replicas active (down: [3])" in r for r in h.reasons), h.reasons
    shoal_cluster.node(2).kill()
    h = shoal_cluster.health()
    assert h.status == "red" and any("no majority" in r for r in h.reasons), h.reasons


@pytest.mark.shoal(nodes=1)
def test_nodes_report_version_and_resources(shoal_cluster: shoal.Cluster) -> None:
    shoal_cluster.create_collection("res", dim=DIM).upsert(np.arange(100), _vecs(np.arange(100)))
    (node,) = shoal_cluster.nodes()
    assert node.version == shoal.__version__, (node.version, shoal.__version__)
    r = node.resources
    assert r is not None and set(r) == {"cpu_seconds", "cpu_cores", "memory_bytes", "disk_bytes", "disk_free_bytes"}
    assert r["cpu_cores"] >= 1 and r["memory_bytes"] > 1_000_000 and r["disk_bytes"] > 0 and r["disk_free_bytes"] > 0
    assert r["cpu_seconds"] >= 0.0


@pytest.mark.shoal(nodes=3)
def test_leadership_returns_to_the_balanced_preferred_leaders_after_a_restart(shoal_cluster: shoal.Cluster) -> None:
    coll = shoal_cluster.create_collection("lead", dim=DIM, shards=6, replication_factor=3)

    def spread(ss: list[shoal.Shard]) -> bool:
        leaders = Counter(s.leader for s in ss)
        return None not in leaders and sorted(leaders.values()) == [2, 2, 2]

    shards = _wait_shards(coll, spread, "each node should lead 2 of the 6 shards", within=30)
    victim = shards[0].leader
    assert victim is not None
    shoal_cluster.node(victim).kill()
    _wait_shards(coll, lambda ss: all(s.leader not in (None, victim) for s in ss), "survivors should take over", 30)
    shoal_cluster.node(victim).start()
    # the restarted node catches up, then its preferred shards are handed back to it
    _wait_shards(coll, spread, f"node {victim} should lead its 2 shards again", within=60)


@pytest.mark.shoal(nodes=4)
def test_drain_onto_the_only_free_node_completes(shoal_cluster: shoal.Cluster) -> None:
    # rf 3 on 4 nodes: the drained replica has exactly one place to go. Once its move had started, the
    # shard listed 4 replicas and re-planning the drain found "no other Up node" and failed the call.
    coll = shoal_cluster.create_collection("one-way", dim=DIM, metric="l2", shards=1, replication_factor=3)
    coll.upsert(np.arange(100), _vecs(np.arange(100)))
    holders = sorted(coll.shards()[0].nodes)
    free = ({n.id for n in shoal_cluster.nodes()} - set(holders)).pop()
    assert shoal_cluster.remove_node(holders[0], drain=True, timeout=120) == 1
    assert sorted(coll.shards()[0].nodes) == sorted([free, *holders[1:]])
    _check_present(coll, np.arange(100))
