"""Int8 quantization with rescoring (issue 14 item 2): a collection created with
``HNSW(quantization="int8")`` walks its graph on one-byte codes and rescores the best candidates with the float
vectors. Across real node processes: recall after rescoring against ``exact=True``, exact distances, the
``rescore=False`` and ``oversampling=`` switches, a restarted replica and a replica moved to a new node (both
rebuild the codes from the vectors) answering the same, and bad settings refused."""

from __future__ import annotations

import numpy as np
import pytest

import shoal

DIM = 32
N = 10_000  # every shard must hold >= 4096 points before its quantizer trains


def _data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(8)
    centers = rng.standard_normal((50, DIM)).astype(np.float32) * 3
    x = (centers[rng.integers(0, 50, N)] + rng.standard_normal((N, DIM))).astype(np.float32)
    q = (centers[rng.integers(0, 50, 60)] + rng.standard_normal((60, DIM))).astype(np.float32)
    return np.arange(N), x, q


def _recall(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.mean([len(set(g.tolist()) & set(w.tolist())) / len(w) for g, w in zip(got, want)]))


def _local(cluster: shoal.Cluster, node: shoal.NodeHandle) -> shoal.Client:
    return shoal.connect([node.address], credentials=cluster.credentials)


@pytest.mark.shoal(nodes=4)
def test_int8_search_rescored_on_every_replica_restart_and_transfer(shoal_cluster: shoal.Cluster) -> None:
    ids, x, q = _data()
    k = 10
    coll = shoal_cluster.create_collection(
        "q8", dim=DIM, metric="l2", shards=1, replication_factor=3, index=shoal.HNSW(quantization="int8")
    )
    assert coll.index == shoal.HNSW(m=16, ef_construction=200, quantization="int8")
    coll.upsert(ids, x)
    coll.wait_indexed(timeout=120)
    exact = coll.search(q, k, exact=True)
    got = coll.search(q, k, ef=128)
    assert _recall(got.ids, exact.ids) >= 0.95
    # rescored distances are the float distances (the exact search computes the same ones)
    for g_ids, g_d, e_ids, e_d in zip(got.ids, got.distances, exact.ids, exact.distances):
        same = dict(zip(e_ids.tolist(), e_d.tolist()))
        for i, d in zip(g_ids.tolist(), g_d.tolist()):
            if i in same:
                assert d == pytest.approx(same[i], rel=1e-4, abs=1e-4)
    # without rescoring: k results with approximate distances; more oversampling never hurts much
    raw = coll.search(q, k, ef=128, rescore=False)
    assert raw.ids.shape == (len(q), k) and (raw.ids >= 0).all()
    assert not np.allclose(raw.distances, got.distances)
    assert _recall(coll.search(q, k, ef=128, oversampling=4).ids, exact.ids) >= 0.95

    # every replica answers from its own codes: each node's local replica (eventual + locality)
    holders = sorted(coll.shards()[0].nodes)
    assert len(holders) == 3

    def per_node() -> dict[int, np.ndarray]:
        out = {}
        for node in shoal_cluster.nodes():
            if node.id not in holders:
                continue
            with _local(shoal_cluster, node) as c:
                r = c.collection("q8").search(q, k, ef=128, consistency="eventual", load_balancing="locality")
                out[node.id] = r.ids
        return out

    before = per_node()
    for nid, r in before.items():
        assert _recall(r, exact.ids) >= 0.95, f"node {nid}"

    # a restarted node rebuilds its codes from the same rows: the same quantizer, recall as before
    handle = shoal_cluster.node(holders[1])
    handle.stop()
    handle.start(timeout=60)
    coll.wait_indexed(timeout=120)
    with _local(shoal_cluster, handle) as c:
        r = c.collection("q8").search(q, k, ef=128, consistency="eventual", load_balancing="locality")
    assert _recall(r.ids, exact.ids) >= 0.95

    # a replica moved by snapshot transfer onto the fourth node (a holder drained away) answers as well
    free = next(n for n in shoal_cluster.nodes() if n.id not in holders)
    shoal_cluster.remove_node(holders[0], drain=True, timeout=180)
    coll.wait_indexed(timeout=120)
    assert free.id in coll.shards()[0].nodes
    with _local(shoal_cluster, free) as c:
        moved = c.collection("q8")
        assert moved.index.quantization == "int8"
        r = moved.search(q, k, ef=128, consistency="eventual", load_balancing="locality")
    assert _recall(r.ids, exact.ids) >= 0.95
    assert _recall(coll.search(q, k, ef=128, consistency="strong").ids, exact.ids) >= 0.95


@pytest.mark.shoal(nodes=1)
def test_bad_quantization_settings_are_refused_and_change_nothing(shoal_cluster: shoal.Cluster) -> None:
    with pytest.raises(shoal.InvalidArgument, match="quantization"):
        shoal_cluster.create_collection("bad", dim=4, index=shoal.HNSW(quantization="int4"))
    with pytest.raises(shoal.InvalidArgument, match="quantization"):
        shoal.HNSW(quantization=8)  # type: ignore[arg-type]
    assert "bad" not in shoal_cluster.list_collections()
    coll = shoal_cluster.create_collection("ok", dim=4, index=shoal.HNSW(quantization="int8"))
    coll.upsert([1, 2], np.eye(2, 4, dtype=np.float32))
    for bad in (0, 0.5, 17, float("nan"), float("inf")):
        with pytest.raises(shoal.InvalidArgument, match="oversampling"):
            coll.search(np.ones(4, np.float32), 1, oversampling=bad)
    with pytest.raises(shoal.InvalidArgument, match="rescore"):
        coll.search(np.ones(4, np.float32), 1, rescore="yes")  # type: ignore[arg-type]
    # a small quantized collection (under 4096 points per shard) searches floats: exact distances either way
    a = coll.search(np.ones(4, np.float32), 2, rescore=False)
    b = coll.search(np.ones(4, np.float32), 2, exact=True)
    assert a.ids.tolist() == b.ids.tolist()
    np.testing.assert_allclose(a.distances, b.distances, rtol=1e-6)
