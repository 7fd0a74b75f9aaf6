"""Shoal: a distributed vector database with a Rust core and a NumPy-first Python API.

    import numpy as np, shoal

    with shoal.Cluster.local(nodes=1) as cluster:
        docs = cluster.create_collection("docs", dim=384, metric="cosine")
        docs.upsert(ids, vectors, payloads=[{"lang": "en"}, ...], progress=True)
        res = docs.search(queries, k=10, filter={"lang": "en"})
        res.ids, res.distances, res.to_pandas()

See DESIGN.md §8 for the full contract.
"""

from __future__ import annotations

from . import errors as _errors
from .cluster import Cluster, connect
from .collection import Collection, Query
from .credentials import ApiKey, Credentials
from .errors import *  # noqa: F403 - the exception classes, listed once in errors.__all__
from .health import Health, Node
from .index import HNSW, Flat
from .node_handle import NodeHandle
from .results import Points, Replica, SearchResult, Shard, ShardList


def _version() -> str:
    try:
        from . import _native

        return str(_native.__version__)
    except Exception:
        pass
    try:
        from importlib.metadata import version

        return version("shoal")
    except Exception:
        return "0.0.0+unknown"


__version__ = _version()

__all__ = [
    "Cluster",
    "connect",
    "Credentials",
    "ApiKey",
    "Collection",
    "Query",
    "SearchResult",
    "Points",
    "Shard",
    "ShardList",
    "Replica",
    "Node",
    "NodeHandle",
    "Health",
    "HNSW",
    "Flat",
    "__version__",
    *_errors.__all__,
]
