"""Result objects: :class:`SearchResult` (search hits as (nq, k) arrays), :class:`Points` (point reads) and
:class:`Shard` / :class:`Replica` (``Collection.shards()``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .display import fmt_distance, html_table, short

__all__ = ["SearchResult", "Points", "Shard", "Replica"]

_HTML_ROWS = 20


def _pandas() -> Any:
    try:
        import pandas as pd
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("to_pandas() needs pandas: pip install pandas (or shoal[pandas])") from e
    return pd


def _hit_mask(ids: np.ndarray) -> np.ndarray:
    """True where a result slot holds a hit (not -1 / None padding)."""
    if ids.dtype == object:
        return np.vectorize(lambda x: x is not None, otypes=[bool])(ids) if ids.size else np.zeros(ids.shape, bool)
    return ids >= 0


@dataclass(repr=False)
class SearchResult:
    """Hits of a search, one row per query (also for a single 1-D query).

    ``ids``: (nq, k) int64, padded with -1 (an object array of str / None for str-id collections).
    ``distances``: (nq, k) float32, smaller is better, padded with inf.
    ``payloads``: per query, per slot, the hit's payload dict (None in padded slots); None unless
    ``with_payload=True``. ``vectors``: (nq, k, dim) float32 (NaN in padded slots) with ``with_vectors=True``.
    ``partial`` / ``coverage`` / ``failed_shards``: whether some shards did not answer (``allow_partial=True``).
    """

    ids: np.ndarray
    distances: np.ndarray
    payloads: list[list[dict | None]] | None = None
    vectors: np.ndarray | None = None
    partial: bool = False
    coverage: float = 1.0
    failed_shards: list[int] = field(default_factory=list)

    @property
    def k(self) -> int:
        return int(self.ids.shape[1]) if self.ids.ndim == 2 else 0

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def hits(self, i: int) -> list[tuple[Any, float]]:
        """(id, distance) pairs of query ``i``, padding left out."""
        row_ids, row_d = self.ids[i], self.distances[i]
        mask = _hit_mask(row_ids[None, :])[0]
        return [(_plain(x), float(d)) for x, d in zip(row_ids[mask], row_d[mask])]

    def to_pandas(self) -> Any:
        """Long format, one row per hit: query, rank, id, distance (+ payload, + vector when present)."""
        pd = _pandas()
        mask = _hit_mask(self.ids)
        q, r = np.nonzero(mask)
        data: dict[str, Any] = {
            "query": q.astype(np.int64),
            "rank": r.astype(np.int64),
            "id": self.ids[mask],
            "distance": self.distances[mask],
        }
        if self.payloads is not None:
            data["payload"] = [self.payloads[i][j] for i, j in zip(q.tolist(), r.tolist())]
        if self.vectors is not None:
            data["vector"] = list(self.vectors[mask])
        return pd.DataFrame(data)

    def _summary(self) -> str:
        nq = len(self)
        parts = [f"queries={nq}", f"k={self.k}"]
        if nq:
            parts.append(f"hits={int(_hit_mask(self.ids).sum())}")
        if self.partial:
            parts.append(f"partial=True, coverage={self.coverage:.2f}, failed_shards={self.failed_shards}")
        return ", ".join(parts)

    def __repr__(self) -> str:
        text = f"SearchResult({self._summary()})"
        if len(self) and self.k:
            top = self.hits(0)[:3]
            if top:
                shown = ", ".join(f"{_plain(i)!r}: {fmt_distance(d)}" for i, d in top)
                text += f"\n  query 0: {{{shown}{', ...' if len(self.hits(0)) > 3 else ''}}}"
        return text

    def _repr_html_(self) -> str:
        mask = _hit_mask(self.ids)
        q, r = np.nonzero(mask)
        rows = []
        for i, j in list(zip(q.tolist(), r.tolist()))[:_HTML_ROWS]:
            row = [i, j, _plain(self.ids[i, j]), fmt_distance(float(self.distances[i, j]))]
            if self.payloads is not None:
                row.append(short(self.payloads[i][j]))
            rows.append(row)
        cols = ["query", "rank", "id", "distance"] + (["payload"] if self.payloads is not None else [])
        return html_table(cols, rows, caption=f"SearchResult({self._summary()})", more=len(q) - len(rows))


@dataclass(repr=False)
class Points:
    """Points read by ``Collection.get`` (the found ones, in request order) or one batch of
    ``Collection.scroll``.

    ``ids``: int64 array (object array of str for str-id collections); ``vectors``: (n, dim) float32 or None
    (``with_vectors=False``); ``payloads``: list of dicts ({} for a point without payload);
    ``missing``: the requested ids that were not found; ``resume_token``: for a scroll batch, where the
    scroll stands after it (``coll.scroll(resume_token=...)`` continues from there), else None.
    """

    ids: np.ndarray
    vectors: np.ndarray | None
    payloads: list[dict]
    missing: list = field(default_factory=list)
    resume_token: bytes | None = None

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def to_pandas(self) -> Any:
        """One row per point: id, payload (+ vector)."""
        pd = _pandas()
        data: dict[str, Any] = {"id": self.ids, "payload": list(self.payloads)}
        if self.vectors is not None:
            data["vector"] = list(self.vectors)
        return pd.DataFrame(data)

    def __repr__(self) -> str:
        dim = f", dim={self.vectors.shape[1]}" if self.vectors is not None and self.vectors.ndim == 2 else ""
        miss = f", missing={len(self.missing)}" if self.missing else ""
        head = ", ".join(repr(_plain(x)) for x in self.ids[:5].tolist())
        more = ", ..." if len(self) > 5 else ""
        return f"Points(n={len(self)}{dim}{miss}, ids=[{head}{more}])"

    def _repr_html_(self) -> str:
        rows = []
        for i in range(min(len(self), _HTML_ROWS)):
            row = [_plain(self.ids[i]), short(self.payloads[i])]
            if self.vectors is not None:
                row.append(short(np.round(self.vectors[i][:4], 4).tolist(), 40))
            rows.append(row)
        cols = ["id", "payload"] + (["vector"] if self.vectors is not None else [])
        return html_table(cols, rows, caption=repr(self).split("\n")[0], more=len(self) - len(rows))


def _plain(x: Any) -> Any:
    return x.item() if isinstance(x, np.generic) else x


@dataclass(repr=False)
class Replica:
    """One copy of a shard on one node (``Shard.replicas``).

    ``node``: node id; ``role``: "leader" | "follower" | "learner"; ``state``: "active" | "joining" |
    "leaving" | "down" | "quarantined" (damaged on disk: ``damage`` names the file and byte offset,
    ``repair`` where its rebuild stands); ``applied_index``: last log index applied; ``lag``: log entries behind
    the leader;
    ``count``: live points; ``unindexed``: live points not yet in the index; ``digest``: a hash of the
    replica's content (equal digests at equal ``applied_index`` mean identical replicas);
    ``transfer_bytes`` / ``transfer_total_bytes``: progress of the last (or current) snapshot this replica
    received from its leader (0 / 0 when it never needed one), e.g. while it joins through a move.
    """

    node: int
    role: str
    state: str
    applied_index: int = 0
    lag: int = 0
    count: int = 0
    unindexed: int = 0
    digest: int = 0
    transfer_bytes: int = 0
    transfer_total_bytes: int = 0
    damage: str = ""
    repair: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Replica:
        return cls(
            node=int(d["node"]),
            role=str(d.get("role", "")),
            state=str(d.get("state", "")),
            applied_index=int(d.get("applied_index", 0)),
            lag=int(d.get("lag", 0)),
            count=int(d.get("count", 0)),
            unindexed=int(d.get("unindexed", 0)),
            digest=int(d.get("digest", 0)),
            transfer_bytes=int(d.get("transfer_bytes", 0)),
            transfer_total_bytes=int(d.get("transfer_total_bytes", 0)),
            damage=str(d.get("damage", "") or ""),
            repair=str(d.get("repair", "") or ""),
        )

    def __repr__(self) -> str:
        return (
            f"Replica(node={self.node}, {self.role or '?'}, {self.state or '?'}, "
            f"applied={self.applied_index}, lag={self.lag}, count={self.count})"
        )


@dataclass(repr=False)
class Shard:
    """A shard of a collection (``Collection.shards()``): ``id``, ``leader`` (node id, None when no
    leader is known), ``replicas`` (list of :class:`Replica`) and ``count`` (live points on the leader)."""

    id: int
    leader: int | None
    replicas: list[Replica] = field(default_factory=list)
    count: int = 0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Shard:
        leader = d.get("leader")
        return cls(
            id=int(d["id"]),
            leader=None if leader in (None, 0) else int(leader),
            replicas=[Replica.from_dict(r) for r in d.get("replicas", [])],
            count=int(d.get("count", 0)),
        )

    @property
    def nodes(self) -> list[int]:
        """Node ids holding a replica, in the order reported."""
        return [r.node for r in self.replicas]

    def __repr__(self) -> str:
        return f"Shard({self.id}, leader={self.leader}, nodes={self.nodes}, count={self.count})"

    def _repr_html_(self) -> str:
        rows = [
            [r.node, r.role, r.state, r.applied_index, r.lag, r.count, r.unindexed, f"{r.digest:016x}"]
            for r in self.replicas
        ]
        cols = ["node", "role", "state", "applied_index", "lag", "count", "unindexed", "digest"]
        return html_table(cols, rows, caption=repr(self))


class ShardList(list):
    """``Collection.shards()``: a list of :class:`Shard` that Jupyter shows as one table (a row per replica)
    and ``to_pandas()`` turns into a DataFrame."""

    _COLS = ["shard", "leader", "node", "role", "state", "applied_index", "lag", "count", "unindexed", "digest"]

    def _rows(self) -> list[list]:
        return [
            [s.id, s.leader, r.node, r.role, r.state, r.applied_index, r.lag, r.count, r.unindexed, f"{r.digest:016x}"]
            for s in self
            for r in s.replicas
        ]

    def _repr_html_(self) -> str:
        return html_table(self._COLS, self._rows(), caption=f"{len(self)} shards")

    def to_pandas(self) -> Any:
        """One row per replica: shard, leader, node, role, state, applied_index, lag, count, unindexed, digest."""
        return _pandas().DataFrame(self._rows(), columns=self._COLS)
