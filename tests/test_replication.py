"""Multi-node replication (DESIGN §2, §3): 3-node local clusters, one Raft group per shard, faults injected
with kill -9, SIGSTOP and partitions. Every acknowledged write is checked afterwards; replicas must converge
(same applied index and digest). Every wait is bounded in count and time; no timing is asserted except
"raised within its timeout plus a margin"."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import pytest

import shoal

DIM = 8
T = TypeVar("T")


def _vecs(ids, gen: int = 0) -> np.ndarray:
    """Deterministic vectors: one per id, different for each generation `gen` (to tell old from new)."""
    x = np.asarray(ids, dtype=np.float64)[:, None]
    j = np.arange(DIM, dtype=np.float64)[None, :]
    return (np.sin(x * 0.37 + j * 1.3 + gen * 0.71) + 2.0 + gen).astype(np.float32)


def _retry(what: str, fn: Callable[[], T], attempts: int = 60, within: float = 30.0, pause: float = 0.25) -> T:
    """Calls `fn` until it returns without a ShoalError: at most `attempts` times and `within` seconds."""
    deadline = time.monotonic() + within
    last: BaseException | None = None
    for _ in range(attempts):
        try:
            return fn()
        except shoal.ShoalError as e:
            last = e
        if time.monotonic() >= deadline:
            break
        time.sleep(pause)
    raise AssertionError(f"{what}: still failing after {attempts} attempts / {within:g} s: {last!r}")


def _shards(coll: shoal.Collection) -> list[shoal.Shard]:
    return _retry(f"{coll.name}.shards()", lambda: coll.shards(timeout=5), attempts=20, within=20)


def _wait_shards(
    coll: shoal.Collection, ok: Callable[[list[shoal.Shard]], bool], what: str, within: float = 10.0
) -> list[shoal.Shard]:
    """Polls `coll.shards()` until `ok(shards)` holds (at most `within` seconds)."""
    deadline = time.monotonic() + within
    shards: list[shoal.Shard] = []
    err: BaseException | None = None
    for _ in range(int(within / 0.1) + 1):
        try:
            shards = coll.shards(timeout=5)
            err = None
            if ok(shards):
                return shards
        except shoal.ShoalError as e:
            err = e
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    raise AssertionError(f"{what} within {within:g} s; last shards: {shards!r}; last error: {err!r}")


def _have_leaders(rf: int) -> Callable[[list[shoal.Shard]], bool]:
    def ok(shards: list[shoal.Shard]) -> bool:
        return bool(shards) and all(
            s.leader is not None and s.leader in s.nodes and len(s.replicas) == rf for s in shards
        )

    return ok


def _converged(rf: int) -> Callable[[list[shoal.Shard]], bool]:
    def ok(shards: list[shoal.Shard]) -> bool:
        return bool(shards) and all(
            len(s.replicas) == rf
            and len({r.applied_index for r in s.replicas}) == 1
            and len({r.digest for r in s.replicas}) == 1
            for s in shards
        )

    return ok


def _wait_converged(coll: shoal.Collection, rf: int = 3, within: float = 60.0) -> list[shoal.Shard]:
    return _wait_shards(coll, _converged(rf), "replicas did not converge (same applied_index and digest)", within)


def _wait_health(cluster: shoal.Cluster, status: str, within: float = 20.0) -> shoal.Health:
    deadline = time.monotonic() + within
    h = None
    for _ in range(int(within / 0.2) + 1):
        h = cluster.health(timeout=3)
        if h.status == status:
            return h
        if time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    raise AssertionError(f"health did not become {status!r} within {within:g} s: {h!r}")


def _start_all(cluster: shoal.Cluster, ids) -> None:
    """Starts stopped nodes concurrently: restarted from disk they may only become ready together (each
    needs a quorum of its peers)."""
    errors: list[BaseException] = []

    def start(i: int) -> None:
        try:
            cluster.node(i).start(timeout=60)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=start, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert not any(t.is_alive() for t in threads) and not errors, errors


def _check_present(coll: shoal.Collection, ids, gen: int = 0, chunk: int = 2000) -> None:
    """Every id in `ids` is there (strong read) with the vector of generation `gen`."""
    ids = np.asarray(sorted(set(int(i) for i in ids)), dtype=np.int64)
    for lo in range(0, len(ids), chunk):
        part = ids[lo : lo + chunk]
        got = _retry(
            "strong get", lambda part=part: coll.get(part, consistency="strong", timeout=10), attempts=20, within=60
        )
        assert got.missing == [], f"{len(got.missing)} acknowledged ids are missing, e.g. {got.missing[:10]}"
        np.testing.assert_allclose(got.vectors, _vecs(part, gen), rtol=1e-6)


# --- value objects ------------------------------------------------------------------------------------------


def test_shard_and_replica_from_the_native_dicts() -> None:
    d = {
        "id": 4,
        "leader": None,
        "count": 7,
        "replicas": [
            {
                "node": 2,
                "role": "follower",
                "state": "active",
                "applied_index": 9,
                "lag": 1,
                "count": 7,
                "unindexed": 0,
                "digest": 2**64 - 1,
            },
            {
                "node": 3,
                "role": "learner",
                "state": "joining",
                "applied_index": 3,
                "lag": 7,
                "count": 2,
                "unindexed": 2,
                "digest": 5,
            },
        ],
    }
    s = shoal.Shard.from_dict(d)
    assert (s.id, s.leader, s.count, s.nodes) == (4, None, 7, [2, 3])
    assert s.replicas[0] == shoal.Replica(2, "follower", "active", 9, 1, 7, 0, 2**64 - 1)
    assert repr(s) == "Shard(4, leader=None, nodes=[2, 3], count=7)"
    assert repr(s.replicas[1]) == "Replica(node=3, learner, joining, applied=3, lag=7, count=2)"
    assert "<table" in s._repr_html_() and "ffffffffffffffff" in s._repr_html_()
    assert shoal.Shard.from_dict({"id": 0, "leader": 3}).leader == 3


# --- the cluster forms and places replicas --------------------------------------------------------------


@pytest.mark.shoal(nodes=3)
def test_cluster_forms_and_places_replicas(shoal_cluster: shoal.Cluster) -> None:
    nodes = shoal_cluster.nodes()
    assert sorted(n.id for n in nodes) == [1, 2, 3]
    assert all(n.status == "up" for n in nodes), nodes
    assert len({n.address for n in nodes}) == 3
    roles = Counter(n.role for n in nodes)
    assert roles["leader"] == 1, f"exactly one metadata leader: {nodes}"
    meta_leader = next(n.id for n in nodes if n.role == "leader")
    assert shoal_cluster._c.cluster_info()["meta_leader"] == meta_leader
    assert set(roles) <= {"leader", "follower", "learner"}, nodes
    assert shoal_cluster.health().status == "green"

    coll = shoal_cluster.create_collection("docs", dim=DIM, metric="l2", shards=6, replication_factor=3)
    assert coll.shard_count == 6 and coll.replication_factor == 3

    def spread(shards: list[shoal.Shard]) -> bool:
        return _have_leaders(3)(shards) and set(Counter(s.leader for s in shards)) == {1, 2, 3}

    shards = _wait_shards(coll, spread, "every shard should get a leader, spread over the 3 nodes")
    assert [s.id for s in shards] == list(range(6))
    for s in shards:
        assert sorted(s.nodes) == [1, 2, 3], f"3 replicas on distinct nodes: {s!r}"
        leaders = [r.node for r in s.replicas if r.role == "leader"]
        assert leaders == [s.leader], f"one replica reports the leader role: {s.replicas!r}"
        assert all(r.role in ("leader", "follower", "learner") for r in s.replicas)
    # and the collection works across shards
    ids = np.arange(600)
    assert coll.upsert(ids, _vecs(ids)) == 600
    assert coll.count(consistency="strong") == 600
    _check_present(coll, ids)
    shards = _wait_converged(coll)
    assert sum(s.count for s in shards) == 600
    assert all(s.count > 0 for s in shards), "ids are hashed over every shard"


def test_partition_validates_its_groups(shoal_cluster: shoal.Cluster) -> None:
    with pytest.raises(shoal.InvalidArgument, match="7"):
        shoal_cluster.partition([1], [7])
    with pytest.raises(shoal.InvalidArgument, match="node 1 is in groups"):
        shoal_cluster.partition([1], [1])
    with pytest.raises(shoal.InvalidArgument, match="groups\\[0\\]"):
        shoal_cluster.partition(1)  # type: ignore[arg-type]
    with shoal.connect(shoal_cluster.addresses(), credentials=shoal_cluster.credentials) as other:
        with pytest.raises(shoal.ShoalError, match="Cluster.local"):
            other.partition([1])


# --- acknowledged writes survive crashes ------------------------------------------------------------------


class _Writer(threading.Thread):
    """Writes batches of fresh ids at `quorum` until stopped; a failed batch is retried (the same ids) and
    counted in `acked` only once acknowledged; `pause` seconds between two batches."""

    def __init__(
        self,
        coll: shoal.Collection,
        batch: int = 200,
        max_batches: int = 5000,
        max_seconds: float = 300,
        pause: float = 0.0,
    ):
        super().__init__(daemon=True)
        self.coll = coll
        self.batch = batch
        self.pause = pause
        self.max_batches = max_batches
        self.max_seconds = max_seconds
        self.acked: list[int] = []
        self.failures = 0
        self.errors: Counter[str] = Counter()
        self.messages: list[str] = []  # the first few error messages, for failure reports
        self.stop_event = threading.Event()
        self.unexpected: BaseException | None = None

    def run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        next_id = 0
        try:
            for _ in range(self.max_batches):
                ids = np.arange(next_id, next_id + self.batch)
                while not self.stop_event.is_set() and time.monotonic() < deadline:
                    try:
                        self.coll.upsert(ids, _vecs(ids), consistency="quorum", timeout=5)
                    except shoal.ShoalError as e:
                        self.failures += 1
                        self.errors[type(e).__name__] += 1
                        if len(self.messages) < 5:
                            self.messages.append(f"{time.monotonic():.3f} {type(e).__name__}: {e}")
                        time.sleep(0.1)
                        continue
                    self.acked.extend(ids.tolist())
                    if self.pause:
                        time.sleep(self.pause)
                    break
                else:
                    return
                next_id += self.batch
        except BaseException as e:  # pragma: no cover - reported by the test
            self.unexpected = e

    def wait_for(self, n_more: int, within: float = 40.0) -> None:
        """Waits until `n_more` more ids are acknowledged (the cluster keeps taking writes)."""
        target = len(self.acked) + n_more
        deadline = time.monotonic() + within
        while len(self.acked) < target:
            assert self.is_alive(), f"the writer stopped: {self.unexpected!r}"
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"writes stalled: {len(self.acked)} acknowledged, wanted {target} within {within:g} s "
                    f"(failures so far: {dict(self.errors)})"
                )
            time.sleep(0.05)


@pytest.mark.shoal(nodes=3)
def test_writes_survive_killing_a_follower_then_a_leader(shoal_cluster: shoal.Cluster) -> None:
    coll = shoal_cluster.create_collection("ledger", dim=DIM, metric="l2", shards=3, replication_factor=3, index="flat")
    shards = _wait_shards(coll, _have_leaders(3), "every shard should get a leader")

    writer = _Writer(coll)
    writer.start()
    try:
        writer.wait_for(1000)

        # a follower of shard 0 dies and comes back
        follower = next(n for n in shards[0].nodes if n != shards[0].leader)
        shoal_cluster.node(follower).kill()
        writer.wait_for(2000)
        _wait_health(shoal_cluster, "yellow")  # one of three down: a majority is up
        writer.wait_for(1000)
        shoal_cluster.node(follower).start()
        writer.wait_for(1000)
        _wait_health(shoal_cluster, "green")

        # then the current leader of shard 0
        leader = _wait_shards(coll, _have_leaders(3), "shard 0 should have a leader")[0].leader
        assert leader is not None
        shoal_cluster.node(leader).kill()
        writer.wait_for(2000)
        after = _wait_shards(
            coll,
            lambda ss: ss[0].leader is not None and ss[0].leader != leader,
            f"shard 0 should elect a new leader after node {leader} was killed",
        )
        assert after[0].leader != leader
        shoal_cluster.node(leader).start()
        writer.wait_for(1000)
    finally:
        writer.stop_event.set()
        writer.join(timeout=30)
    assert not writer.is_alive(), "the writer thread ends within 30 s"
    assert writer.unexpected is None, writer.unexpected

    acked = writer.acked
    assert len(acked) >= 9000
    _check_present(coll, acked)
    # at most the batch in flight when the writer stopped is there without its acknowledgement
    n = coll.count(consistency="strong", timeout=10)
    assert len(acked) <= n <= len(acked) + writer.batch
    shards = _wait_converged(coll)
    assert all(len(s.replicas) == 3 for s in shards)


@pytest.mark.shoal(nodes=3)
def test_strong_write_with_a_voter_down_fails_within_its_timeout(shoal_cluster: shoal.Cluster) -> None:
    coll = shoal_cluster.create_collection("strong", dim=DIM, metric="l2", shards=1, replication_factor=3)
    shard = _wait_shards(coll, _have_leaders(3), "the shard should get a leader")[0]
    ids = np.arange(100)
    assert coll.upsert(ids, _vecs(ids), consistency="strong") == 100

    follower = next(n for n in shard.nodes if n != shard.leader)
    shoal_cluster.node(follower).kill()
    more = np.arange(100, 150)
    t0 = time.monotonic()
    with pytest.raises(shoal.ConsistencyError):
        coll.upsert(more, _vecs(more), consistency="strong", timeout=2)
    print(f"strong write with a voter down: ConsistencyError after {time.monotonic() - t0:.2f} s (timeout 2 s)")

    # quorum still works with 2 of 3, and strong again once the voter is back
    _retry("quorum write with one voter down", lambda: coll.upsert(more, _vecs(more), consistency="quorum", timeout=5))
    shoal_cluster.node(follower).start()
    last = np.arange(150, 160)
    _retry(
        "strong write once every voter is back",
        lambda: coll.upsert(last, _vecs(last), consistency="strong", timeout=5),
        within=40,
    )
    _check_present(coll, np.arange(160))


@pytest.mark.shoal(nodes=3)
def test_session_read_sees_own_eventual_write(shoal_cluster: shoal.Cluster) -> None:
    shoal_cluster.create_collection("sess", dim=DIM, metric="l2", shards=1, replication_factor=3)
    shard = _wait_shards(shoal_cluster.collection("sess"), _have_leaders(3), "the shard should get a leader")[0]
    # talk to a node that does not lead the shard: the read may be served by a follower
    node = next(n for n in shard.nodes if n != shard.leader)
    with shoal.connect(shoal_cluster.node(node).address, credentials=shoal_cluster.credentials) as c:
        coll = c.collection("sess")
        fixed = np.array([10_000])
        for i in range(30):
            ids = np.array([i])
            assert coll.upsert(ids, _vecs(ids), consistency="eventual", timeout=5) == 1
            got = coll.get(ids, consistency="session", timeout=5)
            assert got.missing == [], f"round {i}: own write of id {i} not visible to a session read"
            np.testing.assert_allclose(got.vectors, _vecs(ids), rtol=1e-6)
            # an overwrite: the session read must see the newest value, not an older one
            coll.upsert(fixed, _vecs(fixed, gen=i), consistency="eventual", timeout=5)
            got = coll.get(fixed, consistency="session", timeout=5)
            np.testing.assert_allclose(got.vectors, _vecs(fixed, gen=i), rtol=1e-6, err_msg=f"round {i}: stale read")
            coll.update_payload(ids, {"round": i}, consistency="eventual", timeout=5)
            assert coll.get(ids, with_vectors=False, timeout=5).payloads == [{"round": i}]
        assert coll.count(consistency="session", timeout=5) == 31


@pytest.mark.shoal(nodes=3)
def test_killing_every_node_loses_nothing_acknowledged_at_quorum(shoal_cluster: shoal.Cluster) -> None:
    coll = shoal_cluster.create_collection("all", dim=DIM, metric="l2", shards=3, replication_factor=3)
    _wait_shards(coll, _have_leaders(3), "every shard should get a leader")
    ids = np.arange(3000)
    for lo in range(0, 3000, 500):
        part = ids[lo : lo + 500]
        assert coll.upsert(part, _vecs(part), payloads=[{"i": int(i)} for i in part], consistency="quorum") == 500
    coll.delete(np.arange(0, 100), consistency="quorum")
    coll.update_payload(np.arange(100, 200), {"patched": True}, consistency="quorum")

    def check(c: shoal.Collection) -> None:
        assert _retry("count", lambda: c.count(consistency="strong", timeout=10)) == 2900
        _check_present(c, np.arange(100, 3000))
        # Not retried: the leaders are known (checked above), so a strong read succeeds on its first attempt.
        got = c.get(np.arange(0, 200), with_vectors=False, consistency="strong", timeout=10)
        assert got.missing == list(range(100)), "deletes survive"
        assert got.payloads == [{"i": i, "patched": True} for i in range(100, 200)], "payload patches survive"

    shoal_cluster.node(1).kill()
    _wait_health(shoal_cluster, "yellow")
    shoal_cluster.node(2).kill()
    _wait_health(shoal_cluster, "red")  # one of three up: no majority
    shoal_cluster.node(3).kill()
    assert shoal_cluster.health(timeout=2).status == "red"
    _start_all(shoal_cluster, (1, 2, 3))
    _wait_health(shoal_cluster, "green", within=30)
    _wait_shards(coll, _have_leaders(3), "every shard should get a leader after the restart", within=30)
    check(coll)
    _wait_converged(coll)

    # the same data dir opened again by a new local cluster (restart from disk, all nodes at once)
    data_dir = shoal_cluster.data_dir
    for i in (1, 2, 3):
        shoal_cluster.node(i).kill()
    shoal_cluster.close()
    with shoal.Cluster.local(nodes=3, data_dir=data_dir, startup_timeout=60) as again:
        assert [n.status for n in again.nodes()] == ["up"] * 3
        coll2 = again.collection("all")
        _wait_shards(coll2, _have_leaders(3), "every shard should get a leader after reopening", within=30)
        check(coll2)


@pytest.mark.shoal(nodes=3)
def test_a_paused_node_never_serves_stale_strong_reads(shoal_cluster: shoal.Cluster) -> None:
    coll = shoal_cluster.create_collection("pause", dim=DIM, metric="l2", shards=3, replication_factor=3)
    shards = _wait_shards(coll, _have_leaders(3), "every shard should get a leader")
    ids = np.arange(300)
    assert coll.upsert(ids, _vecs(ids, gen=0)) == 300

    # pause the node that leads the most shards: its leaderships must move while it sleeps
    paused = Counter(s.leader for s in shards).most_common(1)[0][0]
    assert paused is not None
    others = [i for i in (1, 2, 3) if i != paused]
    handle = shoal_cluster.node(paused)
    handle.pause()
    try:
        time.sleep(2.0)  # far beyond the election timeout (150-300 ms)
        with shoal.connect(
            [shoal_cluster.node(i).address for i in others], credentials=shoal_cluster.credentials
        ) as rest:
            rc = rest.collection("pause")
            _retry("write new values while a node is paused", lambda: rc.upsert(ids, _vecs(ids, gen=1), timeout=5))
    finally:
        handle.resume()

    with shoal.connect(handle.address, credentials=shoal_cluster.credentials) as c:
        pc = c.collection("pause")
        # the first strong read through the resumed node must already see the new values
        for _attempt in range(40):
            try:
                got = pc.get(ids, consistency="strong", timeout=5)
            except shoal.ShoalError:
                time.sleep(0.25)
                continue
            assert got.missing == []
            stale = ~np.all(np.isclose(got.vectors, _vecs(ids, gen=1)), axis=1)
            assert not stale.any(), f"strong read returned {int(stale.sum())} stale points, e.g. id {ids[stale][0]}"
            break
        else:
            raise AssertionError("no strong read through the resumed node succeeded in 40 attempts")

        # writes through the resumed node go to the current leaders and are visible everywhere
        new = np.arange(1000, 1100)
        _retry("write through the resumed node", lambda: pc.upsert(new, _vecs(new, gen=2), timeout=5))
    for i in others:
        with shoal.connect(shoal_cluster.node(i).address, credentials=shoal_cluster.credentials) as c:
            got = c.collection("pause").get(new, consistency="strong", timeout=10)
            assert got.missing == [], f"node {i} does not see writes made through node {paused}"
            np.testing.assert_allclose(got.vectors, _vecs(new, gen=2), rtol=1e-6)
    _wait_converged(coll)


@pytest.mark.shoal(nodes=3)
def test_partition_minority_refuses_quorum_writes_then_heals(shoal_cluster: shoal.Cluster) -> None:
    coll = shoal_cluster.create_collection("part", dim=DIM, metric="l2", shards=3, replication_factor=3)
    _wait_shards(coll, _have_leaders(3), "every shard should get a leader")
    ids = np.arange(300)
    assert coll.upsert(ids, _vecs(ids)) == 300

    c1 = shoal.connect(shoal_cluster.node(1).address, credentials=shoal_cluster.credentials)
    c2 = shoal.connect(shoal_cluster.node(2).address, credentials=shoal_cluster.credentials)
    try:
        minority, majority = c1.collection("part"), c2.collection("part")
        shoal_cluster.partition([1], [2, 3])
        new = np.arange(1000, 1300)
        for round_ in range(3):  # the minority never accepts a quorum write, however often it is asked
            t0 = time.monotonic()
            # NodeUnavailable once node 1 knows it is cut off (a client with more addresses would fail over)
            with pytest.raises((shoal.ConsistencyError, shoal.Timeout, shoal.NodeUnavailable)):
                minority.upsert(new, _vecs(new), consistency="quorum", timeout=2)
            print(f"round {round_}: the minority refused after {time.monotonic() - t0:.2f} s (timeout 2 s)")
        _retry("quorum write through the majority side", lambda: majority.upsert(new, _vecs(new), timeout=5))
        _check_present(majority, new)

        # restarted nodes (new processes, empty blocklists) are put back into their side of the partition
        for i in (1, 2, 3):
            shoal_cluster.node(i).kill()
        _start_all(shoal_cluster, (1, 2, 3))
        more = np.arange(2000, 2100)
        with pytest.raises((shoal.ConsistencyError, shoal.Timeout, shoal.NodeUnavailable)):
            minority.upsert(more, _vecs(more), consistency="quorum", timeout=2)
        _retry("quorum write through the majority side", lambda: majority.upsert(more, _vecs(more), timeout=5))

        shoal_cluster.heal()
        _wait_converged(coll)
        # node 1 caught up: a strong read through it sees what the majority wrote
        got = _retry("strong read through node 1 after heal", lambda: minority.get(new, consistency="strong"))
        assert got.missing == []
        np.testing.assert_allclose(got.vectors, _vecs(new), rtol=1e-6)
        assert _retry("count", lambda: minority.count(consistency="strong")) == 700
    finally:
        c1.close()
        c2.close()
