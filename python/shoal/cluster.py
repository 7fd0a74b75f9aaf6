"""Clusters: ``Cluster.local(...)`` starts and manages real node processes; ``connect(...)`` attaches to
an existing cluster (DESIGN §8). The Cluster API is here; the processes (``_node_proc``), the local-cluster
builder (``_local_state``), partitions (``_partitions``), health and its rendering (``health``) and node handles
(``node_handle``) each have their module."""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _convert as cv
from ._local_state import LocalState, start_local, wait_members
from ._node_proc import STARTUP_TIMEOUT
from .collection import Collection
from .credentials import ApiKey, Credentials, NewApiKey, native_client
from .errors import CollectionNotFound, InvalidArgument, ShoalError
from .health import LAG_WARN_ENTRIES, Health, Node, cluster_html
from .index import HNSW, Flat, parse_index
from .node_handle import NodeHandle

if TYPE_CHECKING:  # pragma: no cover
    from . import _native

__all__ = ["Cluster", "connect", "ApiKey", "Credentials", "Node", "NodeHandle", "Health", "LAG_WARN_ENTRIES"]


class Cluster:
    """A Shoal cluster: ``Cluster.local(...)`` for local node processes, ``shoal.connect(...)`` for an
    existing one. Use as a context manager, or call ``close()``."""

    def __init__(
        self,
        client: _native.Client,
        addresses: Sequence[str],
        _local: LocalState | None = None,
        _creds: Credentials | None = None,
    ) -> None:
        self._client: _native.Client | None = client
        self._addresses = list(addresses)
        self._creds = _creds
        self._local = _local
        self._finalizer = weakref.finalize(self, _local.shutdown) if _local is not None else None

    # construction

    @classmethod
    def local(
        cls,
        nodes: int = 1,
        data_dir: str | os.PathLike | None = None,
        zones: Sequence[str] | None = None,
        *,
        log_level: str | None = None,
        startup_timeout: float = STARTUP_TIMEOUT,
        node_args: Iterable[str] = (),
        load_balancing: str | None = None,
        secure: bool = True,
        fault_injection: bool = True,
        hosts: Sequence[str] | None = None,
    ) -> Cluster:
        """Starts ``nodes`` real node processes on loopback ports and waits until the cluster has formed.

        Node 1 starts first (it initialises the cluster); nodes 2..N start with ``--join`` node 1's
        address. The call returns once every node serves and ``cluster_info()`` reports all of them "up"
        (within ``startup_timeout`` seconds, else ``shoal.Timeout`` with the tail of each node's log).

        ``data_dir``: where node data and logs go (``DATA_DIR/node-<id>/``, log ``node.log``); None = a
        temp dir removed on ``close()``. A ``data_dir`` that holds a previous local cluster restarts it from
        disk on the same ports (all nodes are launched together, since they may only become ready as a
        group). ``zones``: one zone name per node. ``node_args``: extra flags for every node. Node ids are
        1..=nodes. ``load_balancing``: how reads pick among replicas when a call does not say
        (``"least_loaded"`` (the nodes' default), ``"round_robin"`` or ``"locality"``).

        ``secure`` (default True): the nodes run as a production cluster would, with TLS on every
        connection (mutual TLS between nodes) and API keys: a CA, one certificate per node and an admin key
        are made in ``DATA_DIR/certs`` (kept across restarts from the same data dir); this object
        authenticates with them, and ``cluster.credentials`` hands them to other clients.
        ``secure=False`` starts the nodes with ``--insecure`` (plaintext, no authentication).
        ``fault_injection`` (default True): the nodes expose the test-only fault-injection methods that
        ``partition()``, ``NodeHandle.skew_clock()`` and ``NodeHandle.diverge_replica()`` use. ``hosts``: one
        listen address per node (e.g. ``["127.0.0.2", "127.0.0.3", "127.0.0.4"]``, so that nodes differ by
        address and not only by port); default 127.0.0.1 for every node.
        """
        client, addresses, state, creds = start_local(
            nodes,
            data_dir,
            zones,
            log_level,
            startup_timeout,
            node_args,
            load_balancing,
            secure,
            fault_injection,
            hosts,
        )
        return cls(client, addresses, _local=state, _creds=creds)

    # lifecycle

    def close(self) -> None:
        """Stops local nodes gracefully (SIGTERM, then SIGKILL after 10 s) and removes a temp data dir."""
        if self._finalizer is not None:
            self._finalizer()
        self._client = None

    @property
    def closed(self) -> bool:
        return self._client is None

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._client is None:
            raise ShoalError("this cluster is closed")

    @property
    def _c(self) -> _native.Client:
        c = self._client
        if c is None:
            raise ShoalError("this cluster is closed")
        return c

    # information

    def addresses(self) -> list[str]:
        """The node addresses this cluster object talks to."""
        return list(self._addresses)

    @property
    def credentials(self) -> Credentials | None:
        """The CA certificate and API key this object connects with (None: an insecure cluster). A local
        secure cluster's key is its admin key; hand out narrower ones with ``create_api_key``."""
        return self._creds

    @property
    def is_local(self) -> bool:
        return self._local is not None

    @property
    def data_dir(self) -> Path | None:
        """Root data dir of a local cluster (None for a connected one)."""
        return self._local.root if self._local is not None else None

    def nodes(self) -> list[Node]:
        """The nodes of the cluster, as reported by the cluster."""
        info = self._c.cluster_info()
        return [Node.from_dict(d) for d in info.get("nodes", [])]

    def health(self, timeout: float | None = 5.0) -> Health:
        """green / yellow / red with reasons: nodes down, no majority, shards without a leader, quarantined or
        under-replicated shards, lagging replicas (more than ``LAG_WARN_ENTRIES`` entries behind), replica
        transfers in flight. The node the client reaches computes it (the ``Cluster.Health`` RPC, the same
        verdict for every client); "red" with the error as reason when no node answers. See :class:`Health`."""
        timeout = cv.check_timeout(timeout)
        try:
            h = self._c.health(timeout=timeout)
        except ShoalError as e:
            return Health("red", [], detail=str(e), reasons=[f"cluster unreachable: {e}"])
        reasons = [str(r) for r in h.get("reasons", [])]
        nodes = [Node.from_dict(d) for d in h.get("nodes", [])]
        return Health(str(h.get("status", "red")), nodes, detail="; ".join(reasons), reasons=reasons)

    def add_node(self, zone: str | None = None, timeout: float = STARTUP_TIMEOUT) -> NodeHandle:
        """Local clusters: starts one more node process (next free id) that joins the cluster, waits until
        the cluster reports it up, and returns its handle. Unless the nodes run with
        ``--auto-rebalance false``, the cluster then moves replicas onto it in the background (watch
        ``Collection.shards()``)."""
        local = self._local_state("add_node() is")
        timeout = cv.check_timeout(timeout, "timeout") or STARTUP_TIMEOUT
        deadline = time.monotonic() + timeout
        proc = local.add_node(zone, timeout)
        assert proc.address is not None
        self._addresses.append(proc.address)
        self._client = native_client(
            self._addresses, self._creds, connect_timeout=max(0.5, deadline - time.monotonic())
        )
        running = {i: p for i, p in local.procs.items() if p.running}
        wait_members(self._client, running, deadline, timeout)
        return NodeHandle(self, proc)

    def remove_node(self, node_id: int, drain: bool = True, timeout: float | None = 300.0) -> int:
        """Removes node ``node_id`` from the cluster and returns the number of replica moves its drain started.

        With ``drain=True`` every replica on the node is first moved to another node (learner, catch-up,
        promote, then the node's copy leaves), so no shard ever has fewer replicas than its replication
        factor; the call returns once the node holds none (``shoal.Timeout`` after ``timeout`` seconds: the
        drain goes on in the background, call again). ``InvalidArgument`` when a replica has nowhere to go
        (e.g. 3 nodes with replication_factor 3). Then the node leaves the registry and group 0. On a local
        cluster its process is stopped and forgotten. ``drain=False`` removes it at once; the cluster then
        re-places the replicas it held from the remaining copies."""
        node_id = cv.check_int("node_id", node_id, 1)
        timeout = cv.check_timeout(timeout)
        local = self._local
        if local is not None:
            proc = local.procs.get(node_id)
            if proc is None:
                raise InvalidArgument(f"no local node with id {node_id} (ids: {sorted(local.procs)})")
            others = [p.address for i, p in local.procs.items() if i != node_id and p.running and p.address]
            if not others:
                raise InvalidArgument(f"node {node_id} is the last running node of this cluster")
            client = native_client(others, self._creds)
        else:
            client = self._c
        moves = int(client.remove_node(node_id, drain, timeout))
        if local is not None:
            proc = local.procs.pop(node_id)
            proc.stop()
            if proc.address in self._addresses:
                self._addresses.remove(proc.address)
            self._client = client
        return moves

    def _local_state(self, what: str) -> LocalState:
        self._check_open()
        if self._local is None:
            raise ShoalError(
                f"{what} only available on clusters started with shoal.Cluster.local(); "
                "this one was attached with shoal.connect()"
            )
        return self._local

    def node(self, node_id: int) -> NodeHandle:
        """Process control of a node of a local cluster."""
        local = self._local_state("node handles are")
        node_id = cv.check_int("node_id", node_id, 0)
        proc = local.procs.get(node_id)
        if proc is None:
            raise InvalidArgument(f"no local node with id {node_id} (ids: {sorted(local.procs)})")
        return NodeHandle(self, proc)

    # API keys

    def create_api_key(self, role: str, name: str | None = None, timeout: float | None = 10.0) -> str:
        """Creates an API key with ``role``: ``"read"`` (search, get, count, scroll, info), ``"write"`` (also
        upsert, delete, update_payload) or ``"admin"`` (also collections, nodes and keys). ``name`` (letters,
        digits, ``_-.``; default a generated one) is how the key is listed and revoked. The key is returned
        once: store it. The returned ``str`` also has ``.name`` and ``.role``. Needs an admin key."""
        timeout = cv.check_timeout(timeout)
        name_, key = self._c.create_api_key(str(role), "" if name is None else str(name), timeout=timeout)
        return NewApiKey(str(key), str(name_), str(role))

    def revoke_api_key(self, name: str, timeout: float | None = 10.0) -> bool:
        """Revokes the key named ``name`` (``InvalidArgument`` when no key has that name). Every node refuses
        it once the revocation has replicated, normally well within a second. Needs an admin key."""
        timeout = cv.check_timeout(timeout)
        return bool(self._c.revoke_api_key(str(name), timeout=timeout))

    def api_keys(self, timeout: float | None = 10.0) -> list[ApiKey]:
        """The cluster's API keys (names and roles, never the keys), sorted by name. Needs an admin key."""
        timeout = cv.check_timeout(timeout)
        return [ApiKey(str(n), str(r)) for n, r in self._c.list_api_keys(timeout=timeout)]

    # fault injection (local clusters)

    def partition(self, *groups: Iterable[int]) -> None:
        """Splits the local nodes into groups that cannot reach each other (fault injection for tests).

        Each group is an iterable of node ids; the nodes named in no group form one more group together.
        Every node is told to block all traffic (both Raft planes and node-to-node requests) with the nodes
        outside its group. Client traffic is not blocked: a client connected to one node reaches that node.
        A node that is stopped or paused gets its blocklist when it starts or resumes. ``heal()`` undoes it.
        """
        self._local_state("partition() is").partitions.split(groups)

    def heal(self) -> None:
        """Ends a ``partition()``: every node's blocklist is cleared (stopped or paused nodes when they start
        or resume)."""
        self._local_state("heal() is").partitions.heal()

    def _apply_pending_faults(self, node_id: int, restarted: bool = False) -> None:
        """Tells a node that just resumed (or started: a new process has an empty blocklist) its blocklist."""
        if self._local is not None:
            self._local.partitions.apply_pending(node_id, restarted)

    # collections

    def create_collection(
        self,
        name: str,
        dim: int,
        metric: str = "cosine",
        shards: int | None = None,
        replication_factor: int | None = None,
        id_type: str = "int",
        index: HNSW | Flat | str = HNSW(m=16, ef_construction=200),
        timeout: float | None = None,
        on_disk: bool = False,
    ) -> Collection:
        """Creates a collection. ``metric``: "cosine" | "l2" | "dot"; ``id_type``: "int" | "str";
        ``index``: ``shoal.HNSW(m, ef_construction, quantization)`` or "flat"; ``shards`` /
        ``replication_factor``: None = the server's defaults. ``on_disk=True`` keeps the full-precision
        vectors in memory-mapped scratch files in each replica's directory instead of on the heap (with
        ``HNSW(quantization="int8")`` resident memory is then mostly codes and graph); results are the same."""
        if not isinstance(name, str) or not name:
            raise InvalidArgument(f"collection name must be a non-empty str, got {name!r}")
        dim = cv.check_int("dim", dim, 1, cv.MAX_DIM)
        metric = cv.check_metric(metric)
        id_type = cv.check_id_type(id_type)
        n_shards = 0 if shards is None else cv.check_int("shards", shards, 1)
        rf = 0 if replication_factor is None else cv.check_int("replication_factor", replication_factor, 1)
        idx = parse_index(index)
        timeout = cv.check_timeout(timeout)
        if not isinstance(on_disk, bool):
            raise InvalidArgument(f"on_disk must be a bool, got {on_disk!r}")
        if isinstance(idx, HNSW):
            kind, m, efc, quant = "hnsw", idx.m, idx.ef_construction, idx.quantization
        else:
            kind, m, efc, quant = "flat", 0, 0, ""
        info = self._c.create_collection(
            name, dim, metric, id_type, n_shards, rf, kind, m, efc, timeout, quant, on_disk
        )
        return Collection(self, info)

    def collection(self, name: str, timeout: float | None = None) -> Collection:
        """The existing collection ``name`` (``shoal.CollectionNotFound``, a KeyError, if there is none)."""
        if not isinstance(name, str):
            raise InvalidArgument(f"collection name must be a str, got {name!r}")
        return Collection(self, self._c.get_collection(name, cv.check_timeout(timeout)))

    def __getitem__(self, name: str) -> Collection:
        return self.collection(name)

    def list_collections(self, timeout: float | None = None) -> list[str]:
        """Names of the collections, sorted."""
        infos = self._c.list_collections(cv.check_timeout(timeout))
        return sorted(str(i["name"]) for i in infos)

    def drop_collection(self, name: str, timeout: float | None = None) -> None:
        """Drops a collection and its data (``shoal.CollectionNotFound`` if there is none)."""
        if not isinstance(name, str):
            raise InvalidArgument(f"collection name must be a str, got {name!r}")
        dropped = self._c.drop_collection(name, cv.check_timeout(timeout))
        if dropped is False:
            raise CollectionNotFound(f'collection "{name}" not found')

    # display

    def __repr__(self) -> str:
        if self._client is None:
            return "Cluster(closed)"
        kind = f"local, nodes={len(self._local.procs)}" if self._local is not None else "connected"
        return f"Cluster({kind}, addresses={self._addresses})"

    def _repr_html_(self) -> str:
        """Jupyter: the health line, a nodes x shards grid and, for a local cluster, its processes."""
        return cluster_html(self)


def connect(
    addresses: str | Sequence[str],
    connect_timeout: float = 10.0,
    *,
    api_key: str | None = None,
    tls_ca: str | os.PathLike | None = None,
    credentials: Credentials | None = None,
) -> Cluster:
    """Attaches to an existing cluster through one or more "host:port" addresses (comma-separated in a
    string, or a list); requests fail over between them. No process management (``node()`` raises).

    A secure cluster (the default for nodes) needs ``api_key`` (sent with every call) and ``tls_ca``, the
    cluster CA certificate (PEM file) the nodes' certificates are checked against; both default to the
    environment variables ``SHOAL_API_KEY`` and ``SHOAL_TLS_CA``. Without a CA the connection is plaintext
    (for nodes started with ``--insecure``). ``credentials`` (e.g. a local cluster's ``cluster.credentials``)
    gives both at once."""
    if isinstance(addresses, str):
        addrs = [a.strip() for a in addresses.split(",") if a.strip()]
    else:
        addrs = [str(a).strip() for a in addresses]
    if not addrs or any(not a for a in addrs):
        raise InvalidArgument(f"connect() needs at least one 'host:port' address, got {addresses!r}")
    t = cv.check_timeout(connect_timeout, "connect_timeout") or 10.0
    if credentials is not None:
        if not isinstance(credentials, Credentials):
            raise InvalidArgument(f"credentials must be a shoal.Credentials, got {type(credentials).__name__}")
        if api_key is not None or tls_ca is not None:
            raise InvalidArgument("give either credentials or api_key/tls_ca, not both")
        api_key, tls_ca = credentials.api_key, credentials.ca_cert
    if api_key is None:
        api_key = os.environ.get("SHOAL_API_KEY") or None
    if tls_ca is None:
        tls_ca = os.environ.get("SHOAL_TLS_CA") or None
    if api_key is not None and not isinstance(api_key, str):
        raise InvalidArgument(f"api_key must be a str, got {type(api_key).__name__}")
    creds = None
    if api_key is not None or tls_ca is not None:
        creds = Credentials(Path(tls_ca).expanduser() if tls_ca is not None else None, api_key)
    client = native_client(addrs, creds, connect_timeout=t)
    client.cluster_info(timeout=t)
    return Cluster(client, addrs, _creds=creds)
