"""Conversion and validation of user input into what ``shoal._native`` takes.

Every check raises :class:`shoal.InvalidArgument` naming the offending item, before anything is sent.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._native import LIMITS as _LIMITS
from .errors import InvalidArgument

# Limits and names live in Rust (the core, the client); Python pre-checks with the same values.
MAX_DIM: int = _LIMITS["MAX_DIM"]
MAX_K: int = _LIMITS["MAX_K"]
MAX_INT_ID: int = _LIMITS["MAX_INT_ID"]
METRICS: tuple[str, ...] = _LIMITS["METRICS"]
ID_TYPES: tuple[str, ...] = _LIMITS["ID_TYPES"]
WRITE_LEVELS: tuple[str, ...] = _LIMITS["WRITE_LEVELS"]
READ_LEVELS: tuple[str, ...] = _LIMITS["READ_LEVELS"]
LOAD_BALANCING: tuple[str, ...] = _LIMITS["LOAD_BALANCING"]

IdsOut = np.ndarray | list


def is_int(x: Any) -> bool:
    """True for Python and NumPy integers, False for bools."""
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def is_real(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def check_int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    """An int in lo..=hi (hi None: unbounded)."""
    if not is_int(value):
        raise InvalidArgument(f"{name} must be an int, got {type(value).__name__} {value!r}")
    v = int(value)
    if v < lo or (hi is not None and v > hi):
        rng = f"{lo}..={hi}" if hi is not None else f">= {lo}"
        raise InvalidArgument(f"{name} must be in {rng}, got {v}")
    return v


def check_timeout(timeout: Any, name: str = "timeout") -> float | None:
    """None, or a finite number of seconds > 0."""
    if timeout is None:
        return None
    if not is_real(timeout):
        raise InvalidArgument(f"{name} must be a number of seconds or None, got {type(timeout).__name__} {timeout!r}")
    t = float(timeout)
    if not (t > 0) or math.isinf(t):
        raise InvalidArgument(f"{name} must be > 0 seconds (and finite), got {timeout!r}")
    return t


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        opts = ", ".join(f'"{c}"' for c in choices)
        raise InvalidArgument(f"unknown {name} {value!r}: expected one of {opts}")
    return value


def check_metric(metric: Any) -> str:
    return check_choice("metric", metric, METRICS)


def check_id_type(id_type: Any) -> str:
    return check_choice("id_type", id_type, ID_TYPES)


def check_write_consistency(level: Any) -> str:
    return check_choice("write consistency", level, WRITE_LEVELS)


def check_read_consistency(level: Any) -> str:
    return check_choice("read consistency", level, READ_LEVELS)


# --- ids ------------------------------------------------------------------------------------------


def _wrap_scalar(ids: Any) -> Any:
    if isinstance(ids, np.ndarray) and ids.ndim == 0:
        return [ids.item()]
    if isinstance(ids, (str, bytes, int, float, np.generic)):
        return [ids]
    return ids


def as_ids(ids: Any, id_type: str) -> IdsOut:
    """ids for ``id_type`` "int" (C-contiguous int64 array) or "str" (list[str]). A scalar is one id."""
    if ids is None:
        raise InvalidArgument("ids must not be None")
    ids = _wrap_scalar(ids)
    if id_type == "str":
        return _str_ids(ids)
    return _int_ids(ids)


def _bad_int_id(i: int, x: Any) -> InvalidArgument:
    if isinstance(x, (bool, np.bool_)):
        return InvalidArgument(f"ids[{i}] is a bool ({x!r}): this collection has int ids (non-negative integers)")
    if is_int(x):
        v = int(x)
        if v < 0:
            return InvalidArgument(f"ids[{i}] is negative ({v}): int ids must be in 0..={MAX_INT_ID}")
        return InvalidArgument(f"ids[{i}] is too large ({v}): int ids must be in 0..={MAX_INT_ID}")
    return InvalidArgument(
        f"ids[{i}] has type {type(x).__name__} ({x!r}): this collection has int ids (non-negative integers)"
    )


def _int_ids(ids: Any) -> np.ndarray:
    if isinstance(ids, np.ndarray) or (hasattr(ids, "__array__") and not isinstance(ids, (list, tuple))):
        arr = np.asarray(ids)
        if arr.ndim != 1:
            raise InvalidArgument(f"ids must be 1-D, got an array of shape {arr.shape}")
        if arr.size == 0:
            return np.empty(0, dtype=np.int64)
        kind = arr.dtype.kind
        if kind == "i":
            neg = arr < 0
            if neg.any():
                i = int(np.argmax(neg))
                raise _bad_int_id(i, arr[i])
            return np.ascontiguousarray(arr, dtype=np.int64)
        if kind == "u":
            big = arr > MAX_INT_ID
            if big.any():
                i = int(np.argmax(big))
                raise _bad_int_id(i, int(arr[i]))
            return np.ascontiguousarray(arr.astype(np.int64))
        if kind == "O":
            return _int_ids(arr.tolist())
        if kind == "b":
            raise _bad_int_id(0, bool(arr[0]))
        raise InvalidArgument(
            f"ids[0] has dtype {arr.dtype} ({arr[0].item()!r}): this collection has int ids (non-negative integers)"
        )
    try:
        lst = list(ids)
    except TypeError:
        raise InvalidArgument(f"ids must be a sequence of ids, got {type(ids).__name__}") from None
    if all(type(x) is int for x in lst):
        try:
            arr = np.array(lst, dtype=np.int64)
        except OverflowError:
            for i, x in enumerate(lst):
                if x < 0 or x > MAX_INT_ID:
                    raise _bad_int_id(i, x) from None
            raise
        if arr.size and (arr < 0).any():
            i = int(np.argmax(arr < 0))
            raise _bad_int_id(i, lst[i])
        return arr
    out = np.empty(len(lst), dtype=np.int64)
    for i, x in enumerate(lst):
        if not is_int(x):
            raise _bad_int_id(i, x)
        v = int(x)
        if v < 0 or v > MAX_INT_ID:
            raise _bad_int_id(i, v)
        out[i] = v
    return out


def _str_ids(ids: Any) -> list:
    if isinstance(ids, np.ndarray):
        if ids.ndim != 1:
            raise InvalidArgument(f"ids must be 1-D, got an array of shape {ids.shape}")
        if ids.size and ids.dtype.kind not in "UO":
            raise InvalidArgument(f"ids[0] has dtype {ids.dtype} ({ids[0].item()!r}): this collection has str ids")
        ids = ids.tolist()
    try:
        lst = list(ids)
    except TypeError:
        raise InvalidArgument(f"ids must be a sequence of ids, got {type(ids).__name__}") from None
    if all(type(x) is str for x in lst):
        return lst
    out = []
    for i, x in enumerate(lst):
        if not isinstance(x, str):
            raise InvalidArgument(f"ids[{i}] has type {type(x).__name__} ({x!r}): this collection has str ids")
        out.append(str(x))
    return out


def ids_len(ids: IdsOut) -> int:
    return int(ids.shape[0]) if isinstance(ids, np.ndarray) else len(ids)


def slice_ids(ids: IdsOut, lo: int, hi: int) -> IdsOut:
    return ids[lo:hi]


# --- vectors --------------------------------------------------------------------------------------


def as_matrix(x: Any, dim: int, what: str = "vectors", collection: str = "") -> tuple[np.ndarray, bool]:
    """(C-contiguous float32 (n, dim) array, whether the input was a single 1-D vector).

    No copy when ``x`` already is C-contiguous float32. NaN/Inf are *not* checked here.
    """
    if x is None:
        raise InvalidArgument(f"{what} must not be None")
    if isinstance(x, np.ndarray) and x.dtype.kind == "c":
        raise InvalidArgument(f"{what} must be real numbers, got complex dtype {x.dtype}")
    if not isinstance(x, np.ndarray) and not hasattr(x, "__array__"):
        try:
            x = np.asarray(x)  # lists: see what they hold before casting (a str would be parsed as a number)
        except (ValueError, TypeError) as e:
            raise InvalidArgument(f"{what} must be an array-like of real numbers: {e}") from None
    if isinstance(x, np.ndarray) and x.dtype.kind in "USb":
        kind = {"U": "strings", "S": "bytes", "b": "booleans"}[x.dtype.kind]
        raise InvalidArgument(f"{what} must be real numbers, got {kind} (dtype {x.dtype}); nothing is converted")
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            arr = np.asarray(x, dtype=np.float32)
    except (ValueError, TypeError) as e:
        raise InvalidArgument(f"{what} must be an array-like of real numbers: {e}") from None
    of = f" of collection {collection!r}" if collection else ""
    single = False
    if arr.ndim == 1:
        if arr.shape[0] == 0:
            arr = arr.reshape(0, dim)
        elif arr.shape[0] == dim:
            arr = arr.reshape(1, dim)
            single = True
        else:
            raise InvalidArgument(f"{what} has dim {arr.shape[0]} (shape {arr.shape}) but the dim{of} is {dim}")
    elif arr.ndim == 2:
        if arr.shape[1] != dim:
            if arr.shape[0] == 0:
                arr = arr.reshape(0, dim)
            else:
                raise InvalidArgument(f"{what} have dim {arr.shape[1]} (shape {arr.shape}) but the dim{of} is {dim}")
    else:
        raise InvalidArgument(f"{what} must have shape (n, {dim}) or ({dim},), got {arr.shape}")
    return np.ascontiguousarray(arr), single


def check_finite(arr: np.ndarray, what: str) -> None:
    """Raises InvalidArgument naming the first row containing NaN or Inf."""
    finite = np.isfinite(arr)
    if finite.all():
        return
    row = int(np.argmin(finite.all(axis=1)))
    bad = arr[row][~finite[row]][0]
    kind = "NaN" if np.isnan(bad) else ("inf" if bad > 0 else "-inf")
    raise InvalidArgument(f"{what}[{row}] contains {kind}")


# --- payloads and JSON ----------------------------------------------------------------------------


def _json_default(o: Any) -> Any:
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    raise TypeError(f"value of type {type(o).__name__} is not JSON serializable")


def to_json(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_json_default)


def payload_text(p: Any, what: str) -> str:
    if p is None:
        return "{}"
    if not isinstance(p, Mapping):
        raise InvalidArgument(f"{what} is not a JSON object (got {type(p).__name__})")
    try:
        return to_json(dict(p))
    except RecursionError:
        raise InvalidArgument(f"{what} nests deeper than 32 levels") from None
    except (TypeError, ValueError) as e:
        raise InvalidArgument(f"{what} is not valid JSON: {e}") from None


def payload_texts(payloads: Any, n: int) -> list[str] | None:
    """JSON texts, one per point, or None. Accepts a list of dicts (None = empty payload) or a DataFrame."""
    if payloads is None:
        return None
    if hasattr(payloads, "to_dict") and hasattr(payloads, "columns"):  # pandas DataFrame
        payloads = payloads.to_dict("records")
    if isinstance(payloads, Mapping):
        if n == 1:
            payloads = [payloads]
        else:
            raise InvalidArgument("payloads must be a sequence of dicts, one per id (got a single dict)")
    if isinstance(payloads, (str, bytes)):
        raise InvalidArgument("payloads must be a sequence of dicts, one per id (got a string)")
    try:
        lst = list(payloads)
    except TypeError:
        raise InvalidArgument(f"payloads must be a sequence of dicts, got {type(payloads).__name__}") from None
    if len(lst) != n:
        raise InvalidArgument(f"payloads has {len(lst)} items but ids has {n}")
    return [payload_text(p, f"payloads[{i}]") for i, p in enumerate(lst)]


def filter_text(flt: Any) -> str | None:
    if flt is None:
        return None
    if isinstance(flt, str):
        return flt
    if not isinstance(flt, Mapping):
        raise InvalidArgument(f"filter must be a dict (Mongo-style), got {type(flt).__name__}")
    if len(flt) == 0:
        return None
    try:
        return to_json(dict(flt))
    except RecursionError:
        raise InvalidArgument("filter nests too deeply") from None
    except (TypeError, ValueError) as e:
        raise InvalidArgument(f"filter is not valid JSON: {e}") from None


def parse_payload(text: str | None) -> dict | None:
    if text is None:
        return None
    if text == "":
        return {}
    payload: dict = json.loads(text)
    return payload
