"""Security end to end (issue 11, DESIGN §11): a secure local cluster (the default) refuses plaintext clients,
missing and unknown keys, keys below the role a call needs and client keys on the internal planes; a revoked
key stops working on every node; a peer with a certificate from another CA cannot reach the internal planes;
a member's certificate cannot speak as another member; out-of-range Raft terms from a real member are refused
and the cluster keeps serving. Raw gRPC calls use grpcio with hand-encoded protobuf (no generated stubs)."""

from __future__ import annotations

import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

import shoal

# --- raw gRPC helpers -------------------------------------------------------------------------------------


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(num: int, value: Any) -> bytes:
    """One protobuf field: ints as varints, str/bytes as length-delimited."""
    if isinstance(value, int):
        return _varint(num << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint((num << 3) | 2) + _varint(len(data)) + data


def _msg(*fields: tuple[int, Any]) -> bytes:
    return b"".join(_field(n, v) for n, v in fields)


def _raft_request(group: str, sender: int, to: int, body: bytes) -> bytes:
    """shoal.internal.RaftRequest {format = 1, group, from, to, body}."""
    return _msg((1, 1), (2, group), (3, sender), (4, to), (5, body))


def _vote_body(term: int, node: int) -> bytes:
    """A VoteRequest in shoal-raft's wire codec: vote (term u64, node u64, committed u8), no last log id,
    leadership_transfer false."""
    return struct.pack("<QQB", term, node, 0) + b"\x00" + b"\x00"


INTERNAL_METHODS = [
    "/shoal.internal.RaftTransport/AppendEntries",
    "/shoal.internal.RaftTransport/Vote",
    "/shoal.internal.RaftTransport/PreVote",
    "/shoal.internal.RaftTransport/TransferLeader",
    "/shoal.internal.NodeInternal/MetaPropose",
    "/shoal.internal.NodeInternal/Join",
    "/shoal.internal.NodeInternal/ShardWrite",
    "/shoal.internal.NodeInternal/ShardRead",
    "/shoal.internal.NodeInternal/NodeState",
    "/shoal.internal.NodeInternal/HealReplica",
]


def _channel(address: str, ca: bytes | None, cert: bytes | None = None, key: bytes | None = None) -> Any:
    if ca is None:
        return grpc.insecure_channel(address)
    creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    return grpc.secure_channel(address, creds, options=[("grpc.ssl_target_name_override", "shoal-node")])


def _call(ch: Any, method: str, body: bytes = b"", api_key: str | None = None, meta: tuple = ()) -> grpc.StatusCode:
    md = list(meta)
    if api_key is not None:
        md.append(("authorization", f"Bearer {api_key}"))
    fn = ch.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    try:
        fn(body, metadata=md, timeout=5)
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


def _certs(cluster: shoal.Cluster) -> Path:
    creds = cluster.credentials
    assert creds is not None and creds.ca_cert is not None
    return Path(creds.ca_cert).parent


def _vec(n: int, dim: int = 4) -> np.ndarray:
    return np.random.default_rng(n).random((n, dim), dtype=np.float32)


# --- tests --------------------------------------------------------------------------------------------------


def _settles_green(c: shoal.Cluster, within: float = 30.0) -> None:
    """Health turns (or stays) green. A busy machine can show a transient yellow right after writes (a replica
    catching up, a node-state probe answered late): that is reported, not failed; a cluster that does not
    settle within `within` seconds (a liveness bound, not a speed check) fails with its reasons."""
    deadline = time.monotonic() + within
    h = c.health()
    while h.status != "green":
        print(f"health {h.status}: {h.reasons}")
        assert time.monotonic() < deadline, f"health still {h.status} after {within} s: {h.reasons}"
        time.sleep(0.2)
        h = c.health()


@pytest.mark.shoal(nodes=3)
def test_callers_are_refused_with_the_right_error(shoal_cluster: shoal.Cluster) -> None:
    c = shoal_cluster
    creds = c.credentials
    assert creds is not None and creds.api_key and "api_key" not in repr(creds)
    certs = _certs(c)
    for f in ("ca.key", "admin.key", "node-1.key"):
        assert (certs / f).stat().st_mode & 0o777 == 0o600, f
    docs = c.create_collection("docs", dim=4, shards=2)
    docs.upsert(np.arange(20), _vec(20))
    addrs = c.addresses()

    # plaintext client: refused with a message that says what to do
    with pytest.raises(shoal.ShoalError) as e:
        shoal.connect(addrs, connect_timeout=3)
    assert isinstance(e.value, (shoal.Unauthenticated, shoal.NodeUnavailable)), repr(e.value)
    assert "TLS" in str(e.value) or "tls" in str(e.value), str(e.value)
    # TLS but no key
    with pytest.raises(shoal.Unauthenticated, match="API key"):
        shoal.connect(addrs, tls_ca=creds.ca_cert)
    # an unknown key
    with pytest.raises(shoal.Unauthenticated, match="unknown or revoked"):
        shoal.connect(addrs, tls_ca=creds.ca_cert, api_key="shoal_" + "0" * 64)

    reader = c.create_api_key("read", name="reader")
    writer = c.create_api_key("write")
    assert reader.name == "reader" and reader.role == "read" and isinstance(reader, str)
    assert reader.startswith("shoal_") and writer.name != reader.name
    listed = {k.name: k.role for k in c.api_keys()}
    assert listed["reader"] == "read" and listed[writer.name] == "write" and listed["admin"] == "admin"
    assert reader not in repr(c.api_keys())

    with shoal.connect(addrs, api_key=reader, tls_ca=creds.ca_cert) as r:
        assert r["docs"].count() == 20
        assert r["docs"].search(_vec(1), k=3).ids.shape == (1, 3)
        with pytest.raises(shoal.PermissionDenied, match="write role") as denied:
            r["docs"].upsert(np.arange(2), _vec(2))
        assert reader not in str(denied.value), "the message never shows the key"
        with pytest.raises(shoal.PermissionDenied, match="admin role"):
            r.create_api_key("admin")
    assert docs.count() == 20, "the refused write changed nothing"

    with shoal.connect(addrs, api_key=writer, tls_ca=creds.ca_cert) as w:
        assert w["docs"].upsert(np.arange(20, 25), _vec(5)) == 5
        with pytest.raises(shoal.PermissionDenied, match="admin role"):
            w.create_collection("other", dim=4)
        with pytest.raises(shoal.PermissionDenied):
            w.drop_collection("docs")
    assert c.list_collections() == ["docs"]

    # a client key (even admin) on every internal method: PERMISSION_DENIED; no key: UNAUTHENTICATED
    ca = Path(creds.ca_cert).read_bytes()
    ch = _channel(addrs[0], ca)
    for m in INTERNAL_METHODS:
        assert _call(ch, m, api_key=creds.api_key) == grpc.StatusCode.PERMISSION_DENIED, m
        assert _call(ch, m) == grpc.StatusCode.UNAUTHENTICATED, m
    ch.close()
    _settles_green(c)


@pytest.mark.shoal(nodes=3)
def test_a_revoked_key_fails_on_every_node(shoal_cluster: shoal.Cluster) -> None:
    c = shoal_cluster
    creds = c.credentials
    assert creds is not None
    c.create_collection("docs", dim=4).upsert(np.arange(5), _vec(5))
    key = c.create_api_key("read", name="temp")
    per_node = [shoal.connect([a], api_key=key, tls_ca=creds.ca_cert) for a in c.addresses()]
    assert [p["docs"].count() for p in per_node] == [5, 5, 5]
    assert c.revoke_api_key("temp") is True
    with pytest.raises(shoal.InvalidArgument, match="temp"):
        c.revoke_api_key("temp")
    t0 = time.monotonic()
    pending = set(range(len(per_node)))
    while pending and time.monotonic() - t0 < 10:
        for i in list(pending):
            try:
                per_node[i]["docs"].count()
            except shoal.Unauthenticated:
                pending.discard(i)
        time.sleep(0.05)
    assert not pending, f"the revoked key still works on nodes {sorted(pending)} after 10 s"
    assert "temp" not in {k.name for k in c.api_keys()}
    for p in per_node:
        p.close()


@pytest.mark.shoal(nodes=3)
def test_forged_and_impersonating_peers_are_refused(shoal_cluster: shoal.Cluster, tmp_path: Path) -> None:
    c = shoal_cluster
    creds = c.credentials
    assert creds is not None
    coll = c.create_collection("docs", dim=4, shards=1, replication_factor=3)
    coll.upsert(np.arange(10), _vec(10))
    certs = _certs(c)
    ca = (certs / "ca.pem").read_bytes()
    addr1 = c.node(1).address
    assert addr1 is not None

    # a forged peer: a certificate for "node 2" from its own CA
    forged = tmp_path / "forged"
    subprocess.run(
        [sys.executable, "-m", "shoal.certs", "--nodes", "3", "--out", str(forged)], check=True, capture_output=True
    )
    ch = _channel(addr1, ca, (forged / "node-2.pem").read_bytes(), (forged / "node-2.key").read_bytes())
    for m, body in [
        ("/shoal.internal.RaftTransport/Vote", _raft_request("meta", 2, 1, _vote_body(1000, 2))),
        ("/shoal.internal.RaftTransport/AppendEntries", _raft_request("meta", 2, 1, b"")),
        ("/shoal.internal.NodeInternal/Join", _msg((1, 9), (2, "127.0.0.1:2"))),
        ("/shoal.internal.NodeInternal/MetaPropose", b""),
    ]:
        code = _call(ch, m, body)
        assert code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED), (m, code)
    ch.close()

    # node 2's real certificate speaking as node 3
    real2 = _channel(addr1, ca, (certs / "node-2.pem").read_bytes(), (certs / "node-2.key").read_bytes())
    assert (
        _call(real2, "/shoal.internal.RaftTransport/Vote", _raft_request("meta", 3, 1, _vote_body(1000, 3)))
        == grpc.StatusCode.PERMISSION_DENIED
    )
    # ... or claiming in the message that node 3 wrote it
    assert (
        _call(real2, "/shoal.internal.RaftTransport/Vote", _raft_request("meta", 2, 1, _vote_body(1000, 3)))
        == grpc.StatusCode.PERMISSION_DENIED
    )
    # a certificate of the cluster's CA for a node that is not a member yet (node 4) joins only as node 4; a
    # registered member may forward another node's join to the group-0 leader (members are trusted with group 0)
    later = tmp_path / "later"
    subprocess.run(
        [sys.executable, "-m", "shoal.certs", "--node-ids", "4", "--ca-dir", str(certs), "--out", str(later)],
        check=True,
        capture_output=True,
    )
    real4 = _channel(addr1, ca, (later / "node-4.pem").read_bytes(), (later / "node-4.key").read_bytes())
    assert _call(real4, "/shoal.internal.NodeInternal/Join", _msg((1, 5), (2, "127.0.0.1:2"))) in (
        grpc.StatusCode.PERMISSION_DENIED,
    )
    real4.close()
    # a real member sending a term near u64::MAX: refused at decode, nothing reaches openraft
    for term in (2**64 - 2, 2**63, 2**49):
        code = _call(real2, "/shoal.internal.RaftTransport/Vote", _raft_request("meta", 2, 1, _vote_body(term, 2)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (term, code)
    real2.close()

    # the cluster keeps serving: writes, reads, health, one leader per group
    coll.upsert(np.arange(10, 20), _vec(10), consistency="strong")
    assert coll.count(consistency="strong") == 20
    _settles_green(c)


def test_nodes_on_distinct_loopback_addresses(tmp_path: Path) -> None:
    hosts = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    with shoal.Cluster.local(nodes=3, data_dir=tmp_path, hosts=hosts) as c:
        assert sorted(a.rsplit(":", 1)[0] for a in c.addresses()) == hosts
        assert {n.address.rsplit(":", 1)[0] for n in c.nodes()} == set(hosts)
        coll = c.create_collection("docs", dim=4, shards=2, replication_factor=3)
        coll.upsert(np.arange(30), _vec(30), consistency="strong")
        c.node(1).kill()
        assert coll.count(consistency="strong") == 30
        c.node(1).start()
        assert coll.search(_vec(1), k=5).ids.shape == (1, 5)


def test_insecure_cluster_and_node_refusing_to_start_without_security(tmp_path: Path) -> None:
    with shoal.Cluster.local(nodes=1, secure=False) as c:
        assert c.credentials is None
        c.create_collection("x", dim=2)
        with shoal.connect(c.addresses()) as plain:
            assert plain.list_collections() == ["x"]
    # a node started without TLS flags and without --insecure refuses with one clear line
    r = subprocess.run(
        [sys.executable, "-m", "shoal.node", "--data-dir", str(tmp_path / "n"), "--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0
    assert "--insecure" in (r.stderr + r.stdout) and "certs" in (r.stderr + r.stdout), r.stderr


@pytest.mark.shoal(nodes=1)
def test_no_silent_coercion_and_no_panic_on_extreme_values(shoal_cluster: shoal.Cluster) -> None:
    coll = shoal_cluster.create_collection("v", dim=4)
    coll.upsert(np.arange(3), _vec(3))
    with pytest.raises(shoal.InvalidArgument, match="timeout"):
        coll.count(timeout=1e300)
    with pytest.raises(shoal.InvalidArgument, match="ef must be between 1 and 100000"):
        coll.search(_vec(1), k=3, ef=2**32 + 1)
    with pytest.raises(shoal.InvalidArgument, match="strings"):
        coll.upsert([5], [["1", "2", "3", "4"]])
    with pytest.raises(shoal.InvalidArgument, match="at most 33554432 bytes"):
        coll.upsert([6], _vec(1), payloads=[{"blob": "x" * (40 << 20)}])
    with pytest.raises(shoal.InvalidArgument, match="patch is empty"):
        coll.update_payload([1], {})
    strs = shoal_cluster.create_collection("s", dim=4, id_type="str")
    with pytest.raises(shoal.InvalidArgument, match="at most 1024 bytes"):
        strs.upsert(["x" * 1025], _vec(1))
    # an unknown consistency enum value is refused, never silently downgraded to the default
    creds = shoal_cluster.credentials
    assert creds is not None and creds.ca_cert is not None
    ch = _channel(shoal_cluster.addresses()[0], Path(creds.ca_cert).read_bytes())
    count = "/shoal.v1.Points/Count"
    assert _call(ch, count, _msg((1, "v"), (2, 1)), api_key=creds.api_key) == grpc.StatusCode.OK
    assert _call(ch, count, _msg((1, "v"), (2, 99)), api_key=creds.api_key) == grpc.StatusCode.INVALID_ARGUMENT
    # a body that is not protobuf: INVALID_ARGUMENT, not INTERNAL
    assert _call(ch, count, b"\xff\xff\xff\xff", api_key=creds.api_key) == grpc.StatusCode.INVALID_ARGUMENT
    ch.close()
    assert coll.count() == 3


@pytest.mark.shoal(nodes=1)
def test_open_scroll_streams_are_bounded_per_connection(shoal_cluster: shoal.Cluster) -> None:
    import gc

    # 12k x 256-d: each stream carries more vectors than HTTP/2 lets a server send unread (8 MiB per
    # stream), so an unread stream stays open on the node
    n, dim = 12_000, 256
    coll = shoal_cluster.create_collection("s", dim=dim)
    coll.upsert(np.arange(n), np.random.default_rng(0).random((n, dim), dtype=np.float32))
    open_ = [coll.scroll(batch_size=500, with_vectors=True, timeout=5) for _ in range(16)]  # unread
    with pytest.raises(shoal.ShoalError, match="16 scroll streams are open on this connection"):
        coll.scroll(batch_size=500, timeout=2)  # a scroll opens its stream at once
    # closed streams give their slots back (unread streams also hold the connection's HTTP/2 window, so a
    # client that keeps many of them open stalls its own connection: close what you do not read)
    for it in open_:
        it.close()
    del open_, it
    gc.collect()
    deadline = time.monotonic() + 10
    while True:
        try:
            coll.scroll(batch_size=500, timeout=2).close()  # opens: a slot is free again
            break
        except shoal.NodeUnavailable:
            assert time.monotonic() < deadline, "closed scroll streams did not give their slots back"
    with shoal.connect(shoal_cluster.addresses(), credentials=shoal_cluster.credentials) as fresh:
        assert fresh["s"].count() == n
