"""Network partitions of a local cluster (fault injection for tests): the blocklist each node should have, and
telling the nodes (now, or when a stopped or paused node comes back)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from . import _convert as cv
from ._node_proc import NodeProc, node_client
from .errors import InvalidArgument, ShoalError


class Partitions:
    """The blocklists of a local cluster's nodes. Holds the cluster's (shared, live) dict of node processes,
    never the Cluster."""

    def __init__(self, procs: dict[int, NodeProc]) -> None:
        self.procs = procs
        # The node ids each node should block all traffic with (empty: none).
        self.blocked: dict[int, list[int]] = {}
        # Nodes not told their blocklist yet (stopped or paused when it was set; told when they start or resume).
        self.pending: set[int] = set()

    def split(self, groups: Sequence[Iterable[int]]) -> None:
        """Blocks traffic between ``groups`` of node ids (the nodes named in no group form one more group)."""
        ids = set(self.procs)
        owner: dict[int, int] = {}
        parts: list[set[int]] = []
        for gi, group in enumerate(groups):
            if isinstance(group, (str, bytes)) or not isinstance(group, Iterable):
                raise InvalidArgument(
                    f"partition: groups[{gi}] must be an iterable of node ids, got {group!r} "
                    f"(e.g. partition([1], [2, 3]))"
                )
            members: set[int] = set()
            for x in group:
                nid = cv.check_int(f"partition: node id in groups[{gi}]", x, 0)
                if nid not in ids:
                    raise InvalidArgument(f"partition: no local node with id {nid} (ids: {sorted(ids)})")
                if owner.get(nid, gi) != gi:
                    raise InvalidArgument(f"partition: node {nid} is in groups[{owner[nid]}] and groups[{gi}]")
                owner[nid] = gi
                members.add(nid)
            if members:
                parts.append(members)
        rest = ids - set(owner)
        if rest:
            parts.append(rest)
        for members in parts:
            for nid in members:
                self.blocked[nid] = sorted(ids - members)
        self.apply(sorted(ids))

    def heal(self) -> None:
        """Clears every node's blocklist."""
        for nid in self.procs:
            self.blocked[nid] = []
        self.apply(sorted(self.procs))

    def apply(self, node_ids: Sequence[int]) -> None:
        """Sends each node its blocklist; nodes not running (or paused) are remembered for later."""
        failures = []
        for nid in node_ids:
            proc = self.procs[nid]
            if not proc.running or proc.paused or not proc.address:
                self.pending.add(nid)
                continue
            try:
                node_client(proc.address, proc.creds).set_faults(self.blocked.get(nid, []), timeout=5.0)
                self.pending.discard(nid)
            except ShoalError as e:
                self.pending.add(nid)
                failures.append((nid, proc.address, e))
        if failures:
            nid, addr, err = failures[0]
            others = f" (and nodes {[f[0] for f in failures[1:]]})" if len(failures) > 1 else ""
            raise type(err)(f"could not set the faults of node {nid} at {addr}{others}: {err}") from err

    def apply_pending(self, node_id: int, restarted: bool = False) -> None:
        """Tells a node that just resumed (or started: a new process has an empty blocklist) its blocklist."""
        if node_id in self.pending or (restarted and self.blocked.get(node_id)):
            self.apply([node_id])
