"""A cluster's health as its nodes assess it (``Health``, ``Node``) and how a cluster is shown in Jupyter."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .display import grid_cell, html_grid, html_table
from .errors import ShoalError
from .results import Shard

if TYPE_CHECKING:  # pragma: no cover
    from .cluster import Cluster

__all__ = ["Health", "Node", "LAG_WARN_ENTRIES"]


@dataclass
class Node:
    """A node as the cluster reports it (``Cluster.nodes()``)."""

    id: int
    address: str
    status: str = "up"
    role: str = ""
    zone: str = ""
    version: str = ""
    resources: dict | None = None
    stats: dict | None = None
    replicas: list | None = None
    # "host:port" where the node serves Prometheus metrics (/metrics) and the probes /healthz and /readyz
    # over plain HTTP; None when it runs without --metrics-listen or is down.
    metrics_address: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Node:
        return cls(
            id=int(d.get("id", 0)),
            address=str(d.get("address", "")),
            status=str(d.get("status", "")),
            role=str(d.get("role", "")),
            zone=str(d.get("zone", "") or ""),
            version=str(d.get("version", "")),
            resources=d.get("resources"),
            stats=d.get("stats"),
            replicas=d.get("replicas"),
            metrics_address=d.get("metrics_address") or None,
        )


@dataclass
class Health:
    """The cluster's health (``Cluster.health()``).

    ``status``: "green" (every node up, every shard fully replicated, in sync and settled), "yellow" (the
    cluster serves every shard, but something is degraded: a node down, an under-replicated shard, a lagging
    replica, a replica transfer in flight), "red" (no majority of nodes up, a shard without a leader, or the
    cluster unreachable). ``reasons``: one line per finding; ``nodes``: each node as the cluster reports it;
    ``detail``: the reasons as one string.
    """

    status: str
    nodes: list[Node] = field(default_factory=list)
    detail: str = ""
    reasons: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        up = sum(1 for n in self.nodes if n.status == "up")
        extra = f", detail={self.detail!r}" if self.detail else ""
        return f"Health({self.status!r}, nodes_up={up}/{len(self.nodes)}{extra})"


#: A replica this many log entries behind its leader counts as lagging in ``Cluster.health()`` (the nodes
#: assess health: shoal-cluster's cluster_view.rs holds the rule; this mirrors its constant for readers).
LAG_WARN_ENTRIES = 100


def cluster_html(cluster: Cluster) -> str:
    """Jupyter's view of a cluster: the health line, a nodes x shards grid (leader / follower / learner / down /
    quarantined, colour-coded; one row per shard of each collection) and, for a local cluster, its processes."""
    if cluster.closed:
        return "<pre>" + repr(cluster) + "</pre>"
    parts = []
    try:
        h = cluster.health(timeout=5)
        parts.append(f"<div><b>{html.escape(h.status)}</b> {html.escape('; '.join(h.reasons[:5]))}</div>")
        node_ids = sorted(n.id for n in h.nodes)
        grid = []
        client = cluster._c
        for info in client.list_collections(5.0):
            name = str(info["name"])
            for s in sorted((Shard.from_dict(d) for d in client.shards(name, 5.0)), key=lambda s: s.id):
                grid.append((f"{name} / {s.id}", {r.node: grid_cell(r.role, r.state) for r in s.replicas}))
        if grid:
            parts.append(html_grid(node_ids, grid, caption="replicas (rows: collection / shard)"))
    except ShoalError as e:
        parts.append(f"<pre>{html.escape(str(e))}</pre>")
    local = cluster._local
    if local is not None:
        rows: list[list[Any]] = []
        for p in local.procs.values():
            state = "paused" if p.paused else ("running" if p.running else "stopped")
            rows.append([p.node_id, p.address or "", p.metrics_address or "", state, str(p.log_path)])
        parts.append(html_table(["node", "address", "metrics", "process", "log"], rows, caption=repr(cluster)))
    return "".join(parts)
