"""Storage integrity end to end (DESIGN §6, issue "Integrity" items 1-3): a node is stopped, one of its files is
damaged the way a failing disk or a careless operator would, and it is started again. A replica of a replicated
shard is quarantined and rebuilt from its peers (nothing acknowledged lost, digests agree, the damaged files kept
aside); the only replica of a shard refuses to serve with a StorageError naming the file, and the cluster's
health says so. Every wait is bounded; no duration is asserted."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import shoal

DIM = 4
N = 500


def _vecs(ids: np.ndarray) -> np.ndarray:
    x = np.asarray(ids, dtype=np.float64)[:, None]
    return (np.cos(x * 0.1 + np.arange(DIM)[None, :]) + 2).astype(np.float32)


def _load(coll: shoal.Collection) -> None:
    ids = np.arange(N)
    for s in range(0, N, 50):  # 10 log entries
        assert (
            coll.upsert(ids[s : s + 50], _vecs(ids[s : s + 50]), payloads=[{"i": int(i)} for i in ids[s : s + 50]])
            == 50
        )


def _shard_dir(node: shoal.NodeHandle, coll: str) -> Path:
    dirs = list((node.data_dir / "shards").glob(f"{coll}@*/0"))
    assert len(dirs) == 1, dirs
    return dirs[0]


def _segments(d: Path) -> list[Path]:
    return sorted((d / "log").glob("*.seg"))


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


def _record_offsets(seg: Path) -> list[int]:
    """Byte offsets of the records of a log segment (16-byte header, then len u32 | crc u32 | body)."""
    data = seg.read_bytes()
    pos, out = 16, []
    while pos + 8 <= len(data):
        out.append(pos)
        pos += 8 + int.from_bytes(data[pos : pos + 4], "little")
    return out


# Each damage takes the shard directory of a stopped node and breaks one thing in it.
def _truncate_tail(d: Path) -> None:
    seg = _segments(d)[-1]
    with open(seg, "r+b") as f:
        f.truncate(seg.stat().st_size - 5)


def _flip_last_record(d: Path) -> None:
    seg = _segments(d)[-1]
    _flip(seg, _record_offsets(seg)[-1] + 20)


def _flip_middle_record(d: Path) -> None:
    seg = _segments(d)[-1]
    offs = _record_offsets(seg)
    _flip(seg, offs[len(offs) // 2] + 12)


def _length_of_middle_record(d: Path) -> None:
    seg = _segments(d)[-1]
    offs = _record_offsets(seg)
    _flip(seg, offs[len(offs) // 2] + 1)


def _segment_header(d: Path) -> None:
    _flip(_segments(d)[0], 3)


def _vote_file(d: Path) -> None:
    _flip(d / "log" / "vote", 12)


def _delete_log_dir(d: Path) -> None:
    shutil.rmtree(d / "log")


def _delete_shard_dir(d: Path) -> None:
    shutil.rmtree(d)


def _delete_snapshot(d: Path) -> None:
    snaps = list((d / "snapshots").glob("*.snap"))
    assert snaps, "the shard has a snapshot (--raft-snapshot-every 4)"
    snaps[0].unlink()


def _flip_snapshot(d: Path) -> None:
    snaps = list((d / "snapshots").glob("*.snap"))
    assert snaps, "the shard has a snapshot (--raft-snapshot-every 4)"
    _flip(snaps[0], snaps[0].stat().st_size // 2)


DAMAGE: dict[str, Callable[[Path], None]] = {
    "truncate_tail": _truncate_tail,
    "flip_last_record": _flip_last_record,
    "flip_middle_record": _flip_middle_record,
    "length_of_middle_record": _length_of_middle_record,
    "segment_header": _segment_header,
    "vote_file": _vote_file,
    "delete_log_dir": _delete_log_dir,
    "delete_shard_dir": _delete_shard_dir,
}
SNAPSHOT_DAMAGE: dict[str, Callable[[Path], None]] = {
    "delete_snapshot": _delete_snapshot,
    "flip_snapshot": _flip_snapshot,
}


def _wait(what: str, fn: Callable[[], object], within: float = 60.0) -> object:
    deadline = time.monotonic() + within
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except shoal.ShoalError as e:
            last = e
        time.sleep(0.2)
    raise AssertionError(f"{what} within {within:g} s; last: {last!r}")


def _healed(coll: shoal.Collection) -> bool:
    sh = coll.shards(timeout=5)[0]
    return (
        len(sh.replicas) == 3
        and all(r.state == "active" and r.count == N for r in sh.replicas)
        and len({(r.applied_index, r.digest) for r in sh.replicas}) == 1
    )


def _damage_and_heal(cluster: shoal.Cluster, coll: shoal.Collection, kind: str, damage: Callable[[Path], None]) -> None:
    node = cluster.node(2)
    kept_before = set((node.data_dir / "damaged").glob("*")) if (node.data_dir / "damaged").exists() else set()
    node.stop()
    damage(_shard_dir(node, coll.name))
    node.start(timeout=60)
    _wait(f"{kind}: the damaged replica is rebuilt from its peers", lambda: _healed(coll))
    got = coll.get(np.arange(N), consistency="strong", timeout=10)
    assert got.missing == [], f"{kind}: acknowledged points lost: {got.missing[:10]}"
    np.testing.assert_allclose(got.vectors, _vecs(np.arange(N)), rtol=1e-6)
    kept = set((node.data_dir / "damaged").glob("*")) - kept_before
    if kind != "delete_shard_dir":
        assert len(kept) == 1, f"{kind}: the damaged files are kept aside: {kept}"
    log = node.log_path.read_text(errors="replace")
    assert "replica quarantined" in log and "rebuilt from its peers" in log, f"{kind}: {node.log_tail(20)}"
    assert cluster.health(timeout=5).status == "green"


@pytest.mark.shoal(nodes=3, node_args=["--raft-snapshot-every", "4"])
def test_every_damage_of_a_replicated_shard_is_quarantined_and_rebuilt(shoal_cluster: shoal.Cluster) -> None:
    coll = shoal_cluster.create_collection("heal", dim=DIM, metric="l2", shards=1, replication_factor=3)
    _load(coll)
    _wait("replicas converge", lambda: _healed(coll))
    for kind, damage in {**DAMAGE, **SNAPSHOT_DAMAGE}.items():
        if kind in SNAPSHOT_DAMAGE or kind in ("truncate_tail", "flip_last_record", "length_of_middle_record"):
            # a few more entries so that the damaged node holds a snapshot and a log after it
            more = np.arange(N - 50, N)
            coll.upsert(more, _vecs(more), payloads=[{"i": int(i)} for i in more])
            _wait("replicas converge", lambda: _healed(coll))
        _damage_and_heal(shoal_cluster, coll, kind, damage)


@pytest.mark.shoal(nodes=3)
def test_health_names_a_quarantined_replica(shoal_cluster: shoal.Cluster) -> None:
    """While a replica is quarantined, health is yellow and names node, shard and file."""
    coll = shoal_cluster.create_collection("named", dim=DIM, metric="l2", shards=1, replication_factor=3)
    _load(coll)
    _wait("replicas converge", lambda: _healed(coll))
    # The only other replicas are stopped, so the damaged one cannot be dropped from its group: it stays
    # quarantined and health shows it.
    n2, n3 = shoal_cluster.node(2), shoal_cluster.node(3)
    n2.stop()
    n3.stop()
    _flip_middle_record(_shard_dir(n2, "named"))
    n3.start(timeout=60)
    n2.start(timeout=60)

    def named() -> bool:
        h = shoal_cluster.health(timeout=5)
        return any("quarantined" in r and "node 2" in r and ".seg" in r for r in h.reasons)

    _wait("health names the quarantined replica", named)
    _wait("the damaged replica is rebuilt once its peers are up", lambda: _healed(coll))


@pytest.mark.shoal(nodes=1)
def test_the_only_replica_damaged_refuses_with_a_storage_error(shoal_cluster: shoal.Cluster) -> None:
    coll = shoal_cluster.create_collection("single", dim=DIM, metric="l2", shards=1, replication_factor=1)
    other = shoal_cluster.create_collection("other", dim=DIM, metric="l2", shards=1)
    _load(coll)
    other.upsert([1], _vecs(np.array([1])))
    node = shoal_cluster.node(1)
    node.stop()
    seg = _segments(_shard_dir(node, "single"))[-1]
    size = seg.stat().st_size
    _truncate_tail(_shard_dir(node, "single"))
    node.start(timeout=60)
    for call in (lambda: coll.get([1]), lambda: coll.count(), lambda: coll.upsert([1], _vecs(np.array([1])))):
        with pytest.raises(shoal.StorageError, match=r"node 1.*\.seg.*offset"):
            call()
    h = shoal_cluster.health(timeout=5)
    assert h.status == "red" and any("quarantined" in r and "single" in r for r in h.reasons), h.reasons
    # the other collection is served; the damaged file is left exactly as found
    assert other.count() == 1
    assert seg.stat().st_size == size - 5
    replica = coll.shards()[0].replicas[0]
    assert replica.state == "quarantined" and "offset" in replica.damage and "repair" in replica.repair

    # Salvage: refused while the node runs; stopped, it keeps what verifies and reports what was lost.
    repair = [
        sys.executable,
        "-m",
        "shoal.node",
        "repair",
        "--data-dir",
        str(node.data_dir),
        "--collection",
        "single",
        "--shard",
        "0",
    ]
    running = subprocess.run(repair, capture_output=True, text=True, timeout=60)
    assert running.returncode != 0 and "running" in running.stderr, running
    node.stop()
    done = subprocess.run(repair, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "LOST: log entries" in done.stdout and "backup" in done.stdout, done.stdout
    assert list((node.data_dir / "damaged").glob("single@*-before-repair")), "the damaged replica was backed up"
    node.start(timeout=60)
    # The truncation hit the last write batch (50 points): exactly those are gone, the rest serves again. (A new
    # client: this one's session token points at the lost write, which a session read would wait for.)
    with shoal.connect(shoal_cluster.addresses(), credentials=shoal_cluster.credentials) as fresh:
        c2 = fresh.collection("single")
        assert _wait("the salvaged shard serves", lambda: c2.count(timeout=5) == N - 50)
        got = c2.get(np.arange(N - 50), timeout=10)
        assert got.missing == []
    assert shoal_cluster.health(timeout=5).status == "green"


@pytest.mark.shoal(nodes=3)
def test_anti_entropy_rebuilds_a_replica_that_diverged_silently(shoal_cluster: shoal.Cluster) -> None:
    """A replica changed behind Raft's back (what a memory or disk error would do) is noticed by comparing
    content digests at equal applied indexes, quarantined and rebuilt from its peers."""
    coll = shoal_cluster.create_collection("drift", dim=DIM, metric="l2", shards=1, replication_factor=3)
    _load(coll)
    _wait("replicas converge", lambda: _healed(coll))
    node = shoal_cluster.node(3)
    changed = int(node.diverge_replica("drift", 0))
    log_has = lambda text: text in node.log_path.read_text(errors="replace")  # noqa: E731
    _wait("anti-entropy notices the divergence", lambda: log_has("anti-entropy"), within=30)
    _wait("the diverged replica is rebuilt from its peers", lambda: log_has("rebuilt from its peers") and _healed(coll))
    with shoal.connect(node.address, credentials=shoal_cluster.credentials) as c:
        got = c.collection("drift").get([changed], consistency="eventual", timeout=10)
        assert "_diverged" not in got.payloads[0], "node 3 serves the peers' content again"


def _meta_segments(node: shoal.NodeHandle) -> list[Path]:
    return sorted((node.data_dir / "meta" / "log").glob("*.seg"))


@pytest.mark.parametrize("victim", [1, 2], ids=["first-node-no-join-flag", "joined-node"])
@pytest.mark.shoal(nodes=3)
def test_a_damaged_group_zero_is_rebuilt_from_the_other_members(shoal_cluster: shoal.Cluster, victim: int) -> None:
    """Group 0 (the catalog) of one node damaged in the middle of its log, then deleted outright: the node sets
    the files aside, has itself removed from group 0 (it must not vote with a log it forgot), joins again as a
    learner, is promoted, and serves its replicas and the catalog's later changes. Node 1 started the cluster
    (no --join: it finds the others in DATA_DIR/peers) and led group 0."""
    coll = shoal_cluster.create_collection("meta_heal", dim=DIM, metric="l2", shards=2, replication_factor=3)
    _load(coll)
    node = shoal_cluster.node(victim)
    _wait(f"node {victim} recorded its peers", lambda: len((node.data_dir / "peers").read_text().split("\n")) >= 3)

    def voter(n: int) -> bool:
        return any(x.id == n and x.role in ("leader", "follower") for x in shoal_cluster.nodes())

    for round_, damage in enumerate(("flip_middle_record", "delete_meta_dir")):
        node.stop()
        if damage == "flip_middle_record":
            seg = _meta_segments(node)[-1]
            offs = _record_offsets(seg)
            assert len(offs) >= 3, f"group 0's log holds too few records to damage the middle one: {offs}"
            _flip(seg, offs[len(offs) // 2] + 12)
        else:
            shutil.rmtree(node.data_dir / "meta")
        node.start(timeout=60)
        _wait(f"{damage}: node {victim} is a voter of group 0 again", lambda: voter(victim))
        log = node.log_path.read_text(errors="replace")
        assert log.count("group 0 rebuilt from the other members") == round_ + 1, node.log_tail(30)
        kept = list((node.data_dir / "damaged").glob("meta-*"))
        assert len(kept) == 1, (
            f"{damage}: the damaged group 0 is kept aside (a deleted one has nothing to keep): {kept}"
        )
        # the catalog is back on the node: a collection created now is served through it alone
        later = shoal_cluster.create_collection(f"later{round_}", dim=DIM, metric="l2", shards=1)
        later.upsert([7], _vecs(np.array([7])))
        with shoal.connect([node.address], credentials=shoal_cluster.credentials) as direct:
            assert direct.collection(f"later{round_}").get([7], consistency="strong", timeout=10).missing == []
            got = direct.collection("meta_heal").get(np.arange(N), consistency="strong", timeout=10)
            assert got.missing == [], f"{damage}: points lost: {got.missing[:10]}"
        _wait(f"{damage}: health green", lambda: shoal_cluster.health(timeout=5).status == "green")


@pytest.mark.shoal(nodes=1)
def test_a_damaged_group_zero_without_peers_refuses_to_start(shoal_cluster: shoal.Cluster) -> None:
    """A single node has nobody to rebuild group 0 from: it refuses to start, naming the damage and the way out."""
    shoal_cluster.create_collection("alone", dim=DIM, metric="l2", shards=1)
    node = shoal_cluster.node(1)
    node.stop()
    seg = _meta_segments(node)[-1]
    offs = _record_offsets(seg)
    _flip(seg, offs[len(offs) // 2] + 12)
    with pytest.raises(shoal.ShoalError):
        node.start(timeout=30)
    log = node.log_path.read_text(errors="replace")
    assert "group 0" in log and "--join" in log and str(seg.name) in log, node.log_tail(20)
    _flip(seg, offs[len(offs) // 2] + 12)  # undo, so that the fixture's teardown finds a node that starts
