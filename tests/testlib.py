"""Helpers shared by the end-to-end tests: data, exact brute force, recall, a Python filter evaluator."""

from __future__ import annotations

from typing import Any

import numpy as np

_MISSING = object()


def clustered(n: int, dim: int, seed: int = 0, topics: int = 40, noise: float = 0.5) -> np.ndarray:
    """n float32 vectors around `topics` random centres (shaped like real embeddings)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(topics, dim))
    which = rng.integers(0, topics, size=n)
    return (centers[which] + rng.normal(scale=noise, size=(n, dim))).astype(np.float32)


def distances(data: np.ndarray, queries: np.ndarray, metric: str) -> np.ndarray:
    """(nq, n) float64 distances, smaller is better: l2 squared, cosine 1 - cos, dot -dot."""
    d = data.astype(np.float64)
    q = queries.astype(np.float64)
    if metric == "l2":
        return (q * q).sum(1)[:, None] - 2 * q @ d.T + (d * d).sum(1)[None, :]
    if metric == "cosine":
        dn = d / np.linalg.norm(d, axis=1, keepdims=True)
        qn = q / np.linalg.norm(q, axis=1, keepdims=True)
        return 1.0 - qn @ dn.T
    if metric == "dot":
        return -(q @ d.T)
    raise ValueError(metric)


def exact_topk(data: np.ndarray, queries: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(row indices, distances) of the exact top-k, best first."""
    dist = distances(data, queries, metric)
    k = min(k, data.shape[0])
    part = np.argpartition(dist, kth=k - 1, axis=1)[:, :k]
    order = np.argsort(np.take_along_axis(dist, part, axis=1), axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1)
    return idx, np.take_along_axis(dist, idx, axis=1)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth))
    return hits / truth.size


def random_payloads(n: int, seed: int = 0) -> list[dict]:
    """Payloads with strings, ints, floats, bools, nested objects, arrays and an optional field."""
    rng = np.random.default_rng(seed)
    langs = ["en", "de", "fr", "es"]
    tags = ["ml", "db", "rust", "py", "ops"]
    out = []
    for _ in range(n):
        p: dict[str, Any] = {
            "lang": langs[int(rng.integers(0, 4))],
            "year": int(rng.integers(2010, 2025)),
            "score": round(float(rng.random()), 4),
            "flag": bool(rng.random() < 0.3),
            "meta": {"source": "web" if rng.random() < 0.6 else "book", "rank": int(rng.integers(0, 10))},
            "tags": sorted({tags[int(j)] for j in rng.integers(0, 5, size=int(rng.integers(0, 3)))}),
        }
        if rng.random() < 0.5:
            p["opt"] = int(rng.integers(0, 3))
        out.append(p)
    return out


# --- a reference evaluator of the filter language (DESIGN §8, shoal-core filter.rs semantics) -----------


def _get_path(payload: Any, path: str) -> Any:
    cur = payload
    for part in path.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return _MISSING
    return cur


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _eq(a: Any, b: Any) -> bool:
    if _is_num(a) and _is_num(b):
        return float(a) == float(b)
    if type(a) is not type(b):
        return False
    return a == b


def _eq_field(value: Any, operand: Any) -> bool:
    if value is _MISSING:
        return operand is None
    if _eq(value, operand):
        return True
    return isinstance(value, list) and any(_eq(x, operand) for x in value)


def _cmp_one(v: Any, op: str, operand: Any) -> bool:
    if _is_num(v) and _is_num(operand):
        a, b = float(v), float(operand)
    elif isinstance(v, str) and isinstance(operand, str):
        a, b = v.encode(), operand.encode()  # byte-wise
    else:
        return False
    return {"$gt": a > b, "$gte": a >= b, "$lt": a < b, "$lte": a <= b}[op]


def _cmp(value: Any, op: str, operand: Any) -> bool:
    if value is _MISSING:
        return False
    if isinstance(value, list):
        return any(_cmp_one(x, op, operand) for x in value)
    return _cmp_one(value, op, operand)


def _ops(value: Any, cond: dict) -> bool:
    for op, operand in cond.items():
        if op == "$eq":
            ok = _eq_field(value, operand)
        elif op == "$ne":
            ok = not _eq_field(value, operand)
        elif op in ("$gt", "$gte", "$lt", "$lte"):
            ok = _cmp(value, op, operand)
        elif op == "$in":
            ok = any(_eq_field(value, x) for x in operand)
        elif op == "$nin":
            ok = not any(_eq_field(value, x) for x in operand)
        elif op == "$exists":
            ok = (value is not _MISSING) == bool(operand)
        elif op == "$not":
            ok = not _ops(value, operand)
        else:
            raise ValueError(op)
        if not ok:
            return False
    return True


def matches(payload: dict, flt: dict | None) -> bool:
    """Python evaluation of a filter on one payload."""
    if not flt:
        return True
    for key, cond in flt.items():
        if key == "$and":
            ok = all(matches(payload, c) for c in cond)
        elif key == "$or":
            ok = any(matches(payload, c) for c in cond)
        elif key == "$not":
            ok = not matches(payload, cond)
        else:
            value = _get_path(payload, key)
            if isinstance(cond, dict) and cond and all(str(k).startswith("$") for k in cond):
                ok = _ops(value, cond)
            else:
                ok = _eq_field(value, cond)
        if not ok:
            return False
    return True
