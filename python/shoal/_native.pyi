"""Type stubs for shoal._native, the pyo3 extension. Translation only: the public API is in shoal/*.py.

Every blocking call releases the GIL and stays interruptible (Ctrl-C raises KeyboardInterrupt and cancels
the request). Errors are raised as the classes of shoal.errors. `timeout` is in seconds (None = default 10 s).
`id_type` is "int" (ids: 1-D numpy int64 array, non-negative) or "str" (ids: list[str]).
"""

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypedDict, final

import numpy as np
import numpy.typing as npt

Ids = npt.NDArray[np.int64] | Sequence[str]

__all__ = [
    "__version__",
    "LIMITS",
    "Client",
    "SearchReply",
    "PendingSearch",
    "ScrollIter",
    "validate_upsert",
    "run_node",
]

__version__: str
# Limits and names defined in Rust: MAX_DIM, MAX_K, MAX_INT_ID (int); METRICS, ID_TYPES, WRITE_LEVELS,
# READ_LEVELS, LOAD_BALANCING (tuple[str, ...]).
LIMITS: dict[str, Any]

@final
class Client:
    """A connection to a Shoal cluster through one or more node addresses ("host:port"). It keeps the session
    tokens of its own acknowledged writes, per collection, and sends them with every get/count/search, so that
    `session` reads see this client's writes."""

    def __new__(
        cls,
        addresses: Sequence[str],
        connect_timeout: float = 10.0,
        api_key: str | None = None,
        tls_ca_pem: bytes | None = None,
    ) -> Client:
        """api_key is sent as a bearer token with every call; tls_ca_pem (the cluster CA, PEM) switches to TLS
        and verifies the nodes against it. Both None: an --insecure cluster."""
    def create_api_key(self, role: str, name: str = "", timeout: float | None = None) -> tuple[str, str]:
        """(name, key) of a new key with role "read", "write" or "admin"; the key is returned only here."""
    def revoke_api_key(self, name: str, timeout: float | None = None) -> bool: ...
    def list_api_keys(self, timeout: float | None = None) -> list[tuple[str, str]]:
        """(name, role) of every key, sorted by name."""
    def addresses(self) -> list[str]: ...
    def cluster_info(self, timeout: float | None = None) -> dict[str, Any]:
        """{"node_id": int, "meta_leader": int | None, "nodes": [{"id", "address", "status", "role", "zone",
        "version"}]}: status "up" | "down" | "joining" | "leaving"; role (group 0) "leader" | "follower" |
        "learner" ("" when down); meta_leader None when the answering node knows no group-0 leader."""
    def health(self, timeout: float | None = None) -> dict[str, Any]:
        """{"status": "green"|"yellow"|"red", "reasons": [str], "nodes": [node dicts as cluster_info]}"""
    def shards(self, collection: str, timeout: float | None = None) -> list[dict[str, Any]]:
        """One dict per shard: {"id", "leader" (node id, None when none is known), "count", "replicas": [{"node",
        "role", "state", "applied_index", "lag", "count", "unindexed", "digest"}]}."""
    def set_faults(self, blocked: Sequence[int], timeout: float | None = None) -> list[int]:
        """Fault injection (tests): the node that answers blocks all traffic with the listed node ids (an empty
        list heals); returns its blocklist. Use a client with a single address to target one node."""
    def diverge_replica(self, collection: str, shard: int, timeout: float | None = None) -> str:
        """Fault injection (tests): the node that answers changes one point of its replica behind Raft's back."""
    def skew_clock(self, offset_ms: int, timeout: float | None = None) -> int:
        """Fault injection (tests): the node that answers runs its clock offset_ms off its system clock."""
    def create_collection(
        self,
        name: str,
        dim: int,
        metric: str,
        id_type: str,
        shards: int,
        replication_factor: int,
        index: str,
        m: int,
        ef_construction: int,
        timeout: float | None = None,
        quantization: str = "",
        on_disk: bool = False,
    ) -> dict[str, Any]:
        """Returns the collection info dict: name, dim, metric, id_type, shards, replication_factor, on_disk,
        index ("flat" | "hnsw"), m, ef_construction, quantization ("none" | "int8").
        shards/replication_factor 0 = server default."""
    def get_collection(self, name: str, timeout: float | None = None) -> dict[str, Any]: ...
    def list_collections(self, timeout: float | None = None) -> list[dict[str, Any]]: ...
    def drop_collection(self, name: str, timeout: float | None = None) -> bool: ...
    def set_payload_index(
        self, collection: str, field: str, kind: str | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Adds or replaces (kind given) or drops the payload index of a field; returns the collection info."""
        ...
    def remove_node(self, node_id: int, drain: bool = True, timeout: float | None = None) -> int:
        """Removes a node (draining its replicas first when `drain`); returns the moves started."""
        ...
    def rebalance(self, collection: str, timeout: float | None = None) -> list[dict[str, Any]]:
        """Starts replica moves that balance the cluster ("" = every collection); returns the moves
        started as dicts {collection, shard, from (None: a replica added), to}."""
        ...
    def upsert(
        self,
        collection: str,
        id_type: str,
        ids: Ids,
        vectors: npt.NDArray[np.float32],
        payloads: Sequence[str] | None,
        consistency: str,
        timeout: float | None = None,
        batch_size: int | None = None,
        on_request: Callable[[int, int], object] | None = None,
    ) -> int:
        """vectors: C-contiguous float32 (n, dim). payloads: JSON object texts, one per id, or None.
        Splits the batch into requests of at most batch_size points (None: no count limit), always below the
        gRPC message limit, each bounded by timeout; on_request(points, written) is called after each
        acknowledged request (an exception it raises stops the upsert and is re-raised). Returns the number
        of points written."""
    def delete(
        self, collection: str, id_type: str, ids: Ids, consistency: str, timeout: float | None = None
    ) -> int: ...
    def update_payload(
        self, collection: str, id_type: str, ids: Ids, patch: str, consistency: str, timeout: float | None = None
    ) -> int: ...
    def get(
        self,
        collection: str,
        id_type: str,
        ids: Ids,
        with_vectors: bool,
        consistency: str,
        timeout: float | None = None,
    ) -> tuple[list[bool], npt.NDArray[np.float32] | None, list[str]]:
        """(found flag per id, vectors of the found rows (m, dim) or None, payload JSON of the found rows
        ("" = none))"""
    def count(self, collection: str, consistency: str, timeout: float | None = None) -> int: ...
    def search(self, request: SearchArgs) -> SearchArrays:
        """Returns (ids, distances, payloads, failed_shards, shards): ids (nq, k) int64 padded with -1 (int
        collections) or an (nq, k) object array of str/None (str collections); distances (nq, k) float32
        padded with inf; payloads per row per hit ("" = none) or None; the shards that did not answer
        (allow_partial only) and the shards searched."""
    def search_start(self, request: SearchArgs) -> PendingSearch:
        """As search, but returns at once with a handle on the running search."""
    def search_async(self, request: SearchArgs) -> Awaitable[SearchReply]:
        """As search, as an asyncio awaitable; cancelling it cancels the search."""
    def scroll(
        self,
        collection: str,
        id_type: str,
        batch_size: int,
        filter: str | None,
        with_vectors: bool,
        consistency: str,
        resume_token: bytes | None = None,
        timeout: float | None = None,
    ) -> ScrollIter:
        """Opens a scroll (batch_size 1..=100000, 0 = 1000; filter: JSON text; resume_token: a batch's token).
        Bad arguments and an unknown collection raise here, before any batch. `timeout` bounds opening the
        stream and then each batch. A stream lost with its node is reopened elsewhere from the last token."""
    def index_status(self, collection: str, timeout: float | None = None) -> tuple[int, int]:
        """(live points, live points not yet in the index) summed over shards."""

class _SearchRequired(TypedDict):
    collection: str
    id_type: str
    queries: npt.NDArray[np.float32]  # C-contiguous float32 (nq, dim)
    k: int
    consistency: str

class SearchArgs(_SearchRequired, total=False):
    """A search's arguments, one dict for search, search_start and search_async (a missing optional key
    takes the value shown)."""

    filter: str | None  # JSON text; None
    ef: int | None  # None = the server's choice
    with_payload: bool  # False
    timeout: float | None  # None
    allow_partial: bool  # False
    load_balancing: str | None  # "round_robin", "least_loaded", "locality"; None = the node's default
    exact: bool  # False
    rescore: bool | None  # None
    oversampling: float | None  # None

#: (ids, distances, payload texts or None, failed shards, shards searched)
SearchArrays = tuple[Any, npt.NDArray[np.float32], list[list[str]] | None, list[int], int]

@final
class SearchReply:
    """A finished search (what search_async resolves to)."""
    def arrays(self) -> SearchArrays: ...

@final
class PendingSearch:
    """A search running in the background."""
    def result(self, timeout: float | None = None) -> SearchArrays:
        """Waits (GIL released; Ctrl-C cancels the search) at most `timeout` seconds (None = until done);
        raises Timeout when it passes first (the search keeps running) and Cancelled after cancel()."""
    def cancel(self) -> bool:
        """Drops the gRPC call, which stops the search's work on the nodes. True when it was running."""
    def done(self) -> bool: ...

@final
class ScrollIter:
    """The batches of a scroll (from `Client.scroll`), in order."""

    def next_batch(
        self,
    ) -> tuple[Any, npt.NDArray[np.float32] | None, list[str], bytes] | None:
        """The next batch as (ids: int64 array (int collections) or list[str], vectors (n, dim) float32 or
        None, payload JSON texts ("" = none), resume token), or None at the end. After an error or Ctrl-C the
        scroll is stopped: further calls raise Cancelled (resume with the last token)."""

def validate_upsert(
    ids: Ids, vectors: npt.NDArray[np.float32], payloads: Sequence[str] | None, dim: int, id_type: str
) -> None:
    """Validates a whole batch (dim, NaN/Inf, duplicate ids, payload objects and depth, lengths) and raises
    InvalidArgument naming the first offending item."""

def run_node(args: Sequence[str]) -> int:
    """Runs a node in this process until SIGTERM/SIGINT (the entry point of `python -m shoal.node`).
    Flags: --data-dir DIR --listen HOST:PORT (port 0 = pick one) --node-id N --zone Z --join HOST:PORT
    --load-balancing S --config FILE.json --log-level LEVEL. Env: SHOAL_DATA_DIR, SHOAL_LISTEN, SHOAL_NODE_ID,
    SHOAL_LOG. When ready it writes
    DATA_DIR/node.json ({"address", "pid", "node_id"}) atomically and logs `shoal-node ready on ADDR`."""
