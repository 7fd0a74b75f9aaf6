"""What a notebook user sees (issue 13 item 6): the cluster as a colour-coded nodes x shards grid, shards as one
table (and a DataFrame), progress bars on wait_indexed and rebalance."""

from __future__ import annotations

import numpy as np
import pytest

import shoal


@pytest.mark.shoal(nodes=3)
def test_the_cluster_grid_the_shards_table_and_progress_bars(
    shoal_cluster: shoal.Cluster, capsys: pytest.CaptureFixture
) -> None:
    coll = shoal_cluster.create_collection("g", dim=4, metric="l2", shards=2, replication_factor=2)
    coll.upsert(np.arange(300), np.random.default_rng(0).standard_normal((300, 4)).astype(np.float32))
    assert coll.wait_indexed(timeout=60, progress=True) == 300
    assert "index g" in capsys.readouterr().err

    shards = coll.shards()
    assert isinstance(shards, shoal.ShardList) and [s.id for s in shards] == [0, 1]
    table = shards._repr_html_()
    assert table.count("<tr>") == 1 + sum(len(s.replicas) for s in shards)  # header + one row per replica
    df = shards.to_pandas()
    assert len(df) == 4 and set(df["state"]) == {"active"} and set(df["shard"]) == {0, 1}

    grid = shoal_cluster._repr_html_()
    assert "green" in grid and "node 1" in grid and "node 3" in grid
    assert "g / 0" in grid and "g / 1" in grid
    assert grid.count(">leader</td>") == 2  # one leader cell per shard
    assert "metrics" in grid  # the local processes with their metrics address

    shoal_cluster.node(3).stop()
    try:
        down = shoal_cluster._repr_html_()
        assert "yellow" in down and ("#ef9a9a" in down or "node 3 is down" in down)
    finally:
        shoal_cluster.node(3).start()

    moves = coll.rebalance(progress=True, wait=120)  # waits for whatever it started
    assert isinstance(moves, list)
    with pytest.raises(shoal.InvalidArgument):
        coll.wait_indexed(progress="yes")  # type: ignore[arg-type]
