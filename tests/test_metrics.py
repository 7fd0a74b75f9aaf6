"""Prometheus metrics and HTTP probes served by each node (issue 13 item 4): `Cluster.local` turns them on, every
`Node` of `cluster.nodes()` names its `metrics_address`, and the text parses with `prometheus_client`'s
OpenMetrics parser into the families the README documents, with values that follow what the cluster did."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

import shoal

DIM = 8


def _get(addr: str, path: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(f"http://{addr}{path}", timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


def _families(addr: str) -> dict:
    status, ctype, text = _get(addr, "/metrics")
    assert status == 200 and ctype.startswith("application/openmetrics-text"), (status, ctype)
    return {f.name: f for f in text_string_to_metric_families(text)}


def _value(fams: dict, family: str, sample: str, **labels: str) -> float:
    return sum(
        s.value
        for s in fams[family].samples
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    )


@pytest.mark.shoal(nodes=3)
def test_each_node_serves_metrics_that_parse_and_follow_the_work(shoal_cluster: shoal.Cluster) -> None:
    coll = shoal_cluster.create_collection("m", dim=DIM, metric="l2", shards=2, replication_factor=2)
    x = np.random.default_rng(0).standard_normal((400, DIM)).astype(np.float32)
    coll.upsert(np.arange(400), x)
    coll.search(x[:3], k=5)
    nodes = shoal_cluster.nodes()
    assert all(n.metrics_address for n in nodes), nodes
    fams = {n.id: _families(n.metrics_address) for n in nodes}

    documented = {
        "shoal_requests",
        "shoal_request_duration_seconds",
        "shoal_admission_rejections",
        "shoal_raft_term",
        "shoal_raft_commit_index",
        "shoal_raft_applied_index",
        "shoal_raft_last_log_index",
        "shoal_raft_leader",
        "shoal_raft_is_leader",
        "shoal_raft_leader_changes",
        "shoal_shard_points",
        "shoal_shard_unindexed_points",
        "shoal_snapshot_received_bytes",
        "shoal_searches",
        "shoal_reads",
        "shoal_writes",
        "shoal_hedged_requests",
        "shoal_cancelled_searches",
        "shoal_in_flight_requests",
        "shoal_quarantined_replicas",
        "shoal_data_dir_bytes",
        "shoal_fsync_duration_seconds",
        "shoal_snapshot_sent_bytes",
    }
    for nid, f in fams.items():
        assert documented <= set(f), f"node {nid} lacks {sorted(documented - set(f))}"
        # one group-0 entry per node, in the same term as the others see
        assert _value(f, "shoal_raft_is_leader", "shoal_raft_is_leader", group="meta") in (0, 1)
        assert _value(f, "shoal_data_dir_bytes", "shoal_data_dir_bytes") > 0
        # every node appended to its logs (group 0 at least), so it fsynced
        assert _value(f, "shoal_fsync_duration_seconds", "shoal_fsync_duration_seconds_count") > 0
        assert _value(f, "shoal_fsync_duration_seconds", "shoal_fsync_duration_seconds_sum") > 0
    # replication lag is reported by the leaders of groups (the group-0 leader at least)
    assert any("shoal_raft_replication_lag_entries" in f for f in fams.values())
    # exactly one node leads group 0; every replica of the 400 points is counted once per copy (RF 2)
    assert sum(_value(f, "shoal_raft_is_leader", "shoal_raft_is_leader", group="meta") for f in fams.values()) == 1
    assert sum(_value(f, "shoal_shard_points", "shoal_shard_points", collection="m") for f in fams.values()) == 800
    # the upsert and the search were counted by the node that coordinated them, with their latency
    ok = lambda method: sum(  # noqa: E731
        _value(f, "shoal_requests", "shoal_requests_total", method=method, status="OK") for f in fams.values()
    )
    assert ok("/shoal.v1.Points/Upsert") >= 1 and ok("/shoal.v1.Points/Search") >= 1
    assert (
        sum(
            _value(
                f,
                "shoal_request_duration_seconds",
                "shoal_request_duration_seconds_count",
                method="/shoal.v1.Points/Search",
            )
            for f in fams.values()
        )
        >= 1
    )
    assert sum(_value(f, "shoal_searches", "shoal_searches_total") for f in fams.values()) >= 1

    # a client with a wrong key is refused and counted as such
    addr = nodes[0].address
    creds = shoal_cluster.credentials
    assert creds is not None
    with pytest.raises(shoal.Unauthenticated):
        shoal.connect([addr], api_key="shoal_" + "0" * 64, tls_ca=creds.ca_cert).collection("m").count()
    f0 = _families(nodes[0].metrics_address)
    assert _value(f0, "shoal_admission_rejections", "shoal_admission_rejections_total", reason="unauthenticated") >= 1

    # probes, and what the responder refuses
    m0 = nodes[0].metrics_address
    assert _get(m0, "/healthz")[0] == 200 and _get(m0, "/readyz")[0] == 200
    assert _get(m0, "/nope")[0] == 404
    host, port = m0.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"BREW /metrics HTCPCP/1.0\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /metrics HTTP/1.1\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 405")


@pytest.mark.shoal(nodes=3)
def test_readyz_says_a_node_cut_off_from_the_majority_is_not_ready(shoal_cluster: shoal.Cluster) -> None:
    n3 = next(n for n in shoal_cluster.nodes() if n.id == 3)
    assert n3.metrics_address and _get(n3.metrics_address, "/readyz")[0] == 200
    shoal_cluster.partition([3])
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status, _, body = _get(n3.metrics_address, "/readyz")
            if status == 503:
                assert "cut off" in body, body
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"/readyz of node 3 stayed {status} while it was partitioned away")
        assert _get(n3.metrics_address, "/healthz")[0] == 200  # alive, just not ready
    finally:
        shoal_cluster.heal()
