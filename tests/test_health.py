"""Health is computed by the nodes (issue 13 item 5): the `shoal.v1.Cluster/Health` RPC gives any gRPC client
the verdict `Cluster.health()` shows, and it follows what happens to the cluster."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

import shoal


def _strings(buf: bytes) -> dict[int, list[str]]:
    """Top-level length-delimited fields of a protobuf message, as text, by field number."""
    out: dict[int, list[str]] = {}
    i = 0

    def varint() -> int:
        nonlocal i
        shift = v = 0
        while True:
            b = buf[i]
            i += 1
            v |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return v

    while i < len(buf):
        tag = varint()
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            varint()
        elif wire == 2:
            n = varint()
            out.setdefault(field, []).append(buf[i : i + n].decode("utf-8", errors="replace"))
            i += n
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise AssertionError(f"unexpected wire type {wire}")
    return out


def _raw_health(cluster: shoal.Cluster, address: str) -> tuple[str, list[str]]:
    creds = cluster.credentials
    assert creds is not None and creds.ca_cert is not None
    ca = Path(creds.ca_cert).read_bytes()
    ch = grpc.secure_channel(
        address,
        grpc.ssl_channel_credentials(root_certificates=ca),
        options=[("grpc.ssl_target_name_override", "shoal-node")],
    )
    try:
        fn: Any = ch.unary_unary(
            "/shoal.v1.Cluster/Health", request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        body = fn(b"", metadata=[("authorization", f"Bearer {creds.api_key}")], timeout=10)
    finally:
        ch.close()
    f = _strings(body)
    return f[1][0], f.get(2, [])


def _settled(cluster: shoal.Cluster, address: str, want: str) -> tuple[str, list[str]]:
    deadline = time.monotonic() + 30
    while True:
        raw = _raw_health(cluster, address)
        py = cluster.health()
        if raw[0] == py.status == want and raw[1] == py.reasons:
            return raw
        if time.monotonic() > deadline:
            raise AssertionError(f"raw gRPC {raw} vs Python {py.status} {py.reasons}, wanted {want}")
        time.sleep(0.2)


@pytest.mark.shoal(nodes=3)
def test_health_over_grpc_equals_what_python_shows(shoal_cluster: shoal.Cluster) -> None:
    coll = shoal_cluster.create_collection("h", dim=4, metric="l2", shards=2, replication_factor=3)
    coll.upsert(np.arange(20), np.ones((20, 4), np.float32))
    addr = shoal_cluster.node(1).address
    assert addr is not None
    assert _settled(shoal_cluster, addr, "green") == ("green", [])
    shoal_cluster.node(3).stop()
    status, reasons = _settled(shoal_cluster, addr, "yellow")
    assert "node 3 is down" in reasons
    assert any("under-replicated: 2 of 3 replicas active (down: [3])" in r for r in reasons), reasons
    shoal_cluster.node(3).start()
    _settled(shoal_cluster, addr, "green")
