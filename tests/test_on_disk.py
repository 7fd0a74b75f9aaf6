"""Vectors off the heap (issue 14 item 3): a collection created with ``on_disk=True`` keeps its full-precision
vectors in memory-mapped scratch files in each replica's shard directory. Across real node processes: the
files are really mapped by the nodes holding replicas (and unlinked, so nothing is left in the data dir), the
answers equal those of the same data held in memory, a restarted replica maps its vectors again, and the
setting is part of the collection's definition."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import shoal
from testlib import recall as _recall

DIM = 32
N = 9_000


def _data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(21)
    centers = rng.standard_normal((40, DIM)).astype(np.float32) * 3
    x = (centers[rng.integers(0, 40, N)] + rng.standard_normal((N, DIM))).astype(np.float32)
    q = (centers[rng.integers(0, 40, 50)] + rng.standard_normal((50, DIM))).astype(np.float32)
    return np.arange(N), x, q


def _mapped_vector_files(node: shoal.NodeHandle) -> list[str]:
    """The vector scratch files the node's process maps (from /proc/<pid>/maps), each listed once."""
    assert node.pid is not None
    seen = []
    for line in Path(f"/proc/{node.pid}/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and "/vectors-" in parts[5] and parts[5] not in seen:
            seen.append(parts[5])
    return seen


def _left_in_data_dir(node: shoal.NodeHandle) -> list[Path]:
    return [p for p in node.data_dir.rglob("vectors-*") if p.is_file()]


@pytest.mark.shoal(nodes=3)
def test_on_disk_vectors_are_mapped_answer_like_memory_and_survive_a_restart(shoal_cluster: shoal.Cluster) -> None:
    ids, x, q = _data()
    k = 10
    disk = shoal_cluster.create_collection(
        "disk",
        dim=DIM,
        metric="l2",
        shards=2,
        replication_factor=2,
        index=shoal.HNSW(quantization="int8"),
        on_disk=True,
    )
    mem = shoal_cluster.create_collection(
        "mem", dim=DIM, metric="l2", shards=2, replication_factor=2, index=shoal.HNSW(quantization="int8")
    )
    assert disk.on_disk and not mem.on_disk
    assert shoal_cluster.collection("disk").on_disk, "the setting is part of the stored definition"
    assert "on_disk=True" in repr(disk)
    for c in (disk, mem):
        c.upsert(ids, x)
        c.wait_indexed(timeout=120)

    # the same vectors: exact answers are identical, graph answers as good
    exact = mem.search(q, k, exact=True)
    exact_disk = disk.search(q, k, exact=True)
    assert exact_disk.ids.tolist() == exact.ids.tolist()
    np.testing.assert_allclose(exact_disk.distances, exact.distances, rtol=1e-6)
    got = disk.search(q, k, ef=128)
    assert _recall(got.ids, exact.ids) >= 0.95
    np.testing.assert_array_equal(disk.get(ids[:50]).vectors, x[:50])

    # every node holding a replica of "disk" maps its vector files; nothing is left as a file in the data dir
    holders = {n for s in disk.shards() for n in s.nodes}
    nodes = {n.id: shoal_cluster.node(n.id) for n in shoal_cluster.nodes()}
    for nid in holders:
        files = _mapped_vector_files(nodes[nid])
        assert files, f"node {nid} holds a replica of an on_disk collection but maps no vector file"
        assert all(f.endswith("(deleted)") for f in files), files
        assert str(nodes[nid].data_dir) in files[0], files
        assert _left_in_data_dir(nodes[nid]) == []

    # a restarted holder rebuilds its replica onto disk again and answers the same
    handle = nodes[sorted(holders)[0]]
    handle.stop()
    handle.start(timeout=60)
    disk.wait_indexed(timeout=120)
    assert _mapped_vector_files(handle), "mapped again after the restart"
    with shoal.connect([handle.address], credentials=shoal_cluster.credentials) as c:
        local = c.collection("disk")
        assert local.on_disk
        r = local.search(q, k, exact=True, consistency="eventual", load_balancing="locality")
    assert r.ids.tolist() == exact.ids.tolist()
    assert _recall(disk.search(q, k, ef=128, consistency="strong").ids, exact.ids) >= 0.95


@pytest.mark.shoal(nodes=1)
def test_bad_on_disk_values_are_refused(shoal_cluster: shoal.Cluster) -> None:
    with pytest.raises(shoal.InvalidArgument, match="on_disk"):
        shoal_cluster.create_collection("bad", dim=4, on_disk="yes")  # type: ignore[arg-type]
    assert "bad" not in shoal_cluster.list_collections()
