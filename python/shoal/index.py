"""Index configurations of a collection: ``HNSW(m, ef_construction, quantization)`` or flat (exact) search."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import InvalidArgument

__all__ = ["HNSW", "Flat", "IndexSpec", "parse_index"]


def _is_int(x: Any) -> bool:
    import numpy as np

    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


@dataclass(frozen=True)
class HNSW:
    """An HNSW graph index: ``m`` links per node (``2*m`` on layer 0), ``ef_construction`` beam width.

    ``quantization="int8"`` traverses the graph on one-byte codes (per-dimension ranges trained on each
    shard's first 4,096 vectors; smaller shards search floats) and rescores the best candidates with the
    float vectors, so results carry exact distances; ``search(..., rescore=False)`` skips the rescoring and
    ``oversampling=`` makes the beam at least ``ceil(k * oversampling)`` wide (default 2.0; every candidate
    of the beam is rescored). The server checks the name ("none" or "int8").
    """

    m: int = 16
    ef_construction: int = 200
    quantization: str = "none"

    def __post_init__(self) -> None:
        if not _is_int(self.m) or self.m < 2:
            raise InvalidArgument(f"HNSW m must be an int >= 2, got {self.m!r}")
        if not _is_int(self.ef_construction) or self.ef_construction < 1:
            raise InvalidArgument(f"HNSW ef_construction must be an int >= 1, got {self.ef_construction!r}")
        if not isinstance(self.quantization, str):
            raise InvalidArgument(f"HNSW quantization must be a str, got {self.quantization!r}")
        object.__setattr__(self, "m", int(self.m))
        object.__setattr__(self, "ef_construction", int(self.ef_construction))

    @property
    def kind(self) -> str:
        return "hnsw"


@dataclass(frozen=True)
class Flat:
    """Exact search only (no graph). Same as passing ``index="flat"``."""

    @property
    def kind(self) -> str:
        return "flat"


IndexSpec = HNSW | Flat | str


def parse_index(index: Any) -> HNSW | Flat:
    """Accepts ``HNSW(...)``, ``Flat()``, ``"flat"`` or ``"hnsw"`` (default HNSW parameters)."""
    if isinstance(index, (HNSW, Flat)):
        return index
    if index is None:
        return HNSW()
    if isinstance(index, str):
        if index.lower() == "flat":
            return Flat()
        if index.lower() == "hnsw":
            return HNSW()
    raise InvalidArgument(f'index must be shoal.HNSW(m=..., ef_construction=...) or "flat", got {index!r}')


def index_from_info(info: dict[str, Any]) -> HNSW | Flat:
    """The index of a collection info dict from the native client."""
    if str(info.get("index", "hnsw")).lower() == "flat":
        return Flat()
    return HNSW(
        m=int(info.get("m", 16)),
        ef_construction=int(info.get("ef_construction", 200)),
        quantization=str(info.get("quantization", "none")),
    )
