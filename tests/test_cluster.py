"""Local clusters: real node processes, their lifecycle, logs, connect()."""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path

import numpy as np
import pytest

import shoal


def _gone(pid: int, within: float = 20.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # a zombie still answers kill(0): look at its state
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split()[2]
            if state == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


def test_local_cluster_lifecycle() -> None:
    cluster = shoal.Cluster.local(nodes=1)
    root = cluster.data_dir
    assert root is not None and root.is_dir()
    handle = cluster.node(1)
    pid = handle.pid
    assert pid is not None and handle.running
    assert handle.log_path.is_file() and handle.log_path.parent == root / "node-1"
    assert (root / "node-1" / "node.json").is_file()

    nodes = cluster.nodes()
    assert len(nodes) == 1
    assert nodes[0].id == 1 and nodes[0].status == "up"
    assert nodes[0].address.endswith(f":{handle.port}")
    assert cluster.health().status == "green"
    assert "local, nodes=1" in repr(cluster) and "<table" in cluster._repr_html_()

    cluster.close()
    assert _gone(pid)
    assert not root.exists(), "a temp data dir is removed on close"
    cluster.close()  # idempotent
    with pytest.raises(shoal.ShoalError, match="closed"):
        cluster.list_collections()


def test_context_manager_and_kept_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(50, 8)).astype(np.float32)
    with shoal.Cluster.local(nodes=1, data_dir=data) as cluster:
        docs = cluster.create_collection("docs", dim=8, metric="l2")
        assert docs.upsert(np.arange(50), vecs, payloads=[{"i": i} for i in range(50)]) == 50
        pid = cluster.node(1).pid
    assert pid is not None and _gone(pid)
    assert (data / "node-1" / "node.log").is_file(), "a given data dir is kept"

    # A new local cluster on the same data dir finds everything again.
    with shoal.Cluster.local(nodes=1, data_dir=data) as cluster:
        assert cluster.list_collections() == ["docs"]
        docs = cluster.collection("docs")
        assert docs.count() == 50
        got = docs.get([0, 49])
        np.testing.assert_allclose(got.vectors, vecs[[0, 49]], rtol=1e-6)
        assert got.payloads == [{"i": 0}, {"i": 49}]


def test_garbage_collected_cluster_stops_its_nodes() -> None:
    cluster = shoal.Cluster.local(nodes=1)
    pid = cluster.node(1).pid
    root = cluster.data_dir
    assert pid is not None and root is not None
    del cluster
    gc.collect()
    assert _gone(pid)
    assert not root.exists()


def test_connect_to_a_running_node(shoal_cluster: shoal.Cluster) -> None:
    shoal_cluster.create_collection("shared", dim=4)
    addr = shoal_cluster.node(1).address
    assert addr is not None
    for target in (addr, [addr], f"{addr},{addr}"):
        other = shoal.connect(target, credentials=shoal_cluster.credentials)
        assert other.list_collections() == ["shared"]
        assert not other.is_local and "connected" in repr(other)
        with pytest.raises(shoal.ShoalError, match="Cluster.local"):
            other.node(1)
        other.close()
    # closing a connected cluster does not stop the node
    assert shoal_cluster.node(1).running
    assert shoal_cluster.collection("shared").count() == 0


def test_connect_to_nothing_fails_cleanly() -> None:
    with pytest.raises(shoal.NodeUnavailable) as e:
        shoal.connect("127.0.0.1:1", connect_timeout=3)
    assert isinstance(e.value, ConnectionError)
    with pytest.raises(shoal.InvalidArgument):
        shoal.connect([])


def test_node_count_must_be_positive() -> None:
    with pytest.raises(shoal.InvalidArgument, match="nodes"):
        shoal.Cluster.local(nodes=0)


def test_a_node_that_cannot_start_reports_its_log(tmp_path: Path) -> None:
    with pytest.raises(shoal.NodeUnavailable) as e:
        shoal.Cluster.local(nodes=1, data_dir=tmp_path, node_args=["--no-such-flag"], startup_timeout=20)
    msg = str(e.value)
    assert "exited with code" in msg
    assert "no-such-flag" in msg, "the message carries the tail of the node's log"
    assert str(tmp_path / "node-1" / "node.log") in msg


def test_unknown_node_id(shoal_cluster: shoal.Cluster) -> None:
    with pytest.raises(shoal.InvalidArgument, match="7"):
        shoal_cluster.node(7)


def test_zone_and_log_level_reach_the_node(tmp_path: Path) -> None:
    with shoal.Cluster.local(nodes=1, data_dir=tmp_path, zones=["zone-a"], log_level="debug") as cluster:
        assert cluster.nodes()[0].zone == "zone-a"
        assert cluster.node(1).log_tail(1000), "the node logs to node.log"
    with pytest.raises(shoal.InvalidArgument, match="zones"):
        shoal.Cluster.local(nodes=1, zones=["a", "b"])
