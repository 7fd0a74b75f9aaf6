"""Operation histories and their checkers: a thread-safe recorder of client operations for fault-injection
(Jepsen-style) tests, a linearizability checker for read/write registers and a checker for add-only sets.

    h = History()
    op = h.invoke(process=3, kind="write", key="p7", value="v1")
    try:
        docs.upsert(...)
    except Timeout as e:
        h.info(op, e)          # indeterminate: it may or may not have happened
    else:
        h.ok(op)
    ...
    res = check_register(h.ops())
    assert res.valid, res.explanation

Statuses: ``ok`` (completed), ``fail`` (definitely did not happen), ``info`` (indeterminate: may have happened at
any point after its invocation, or never; it stays open forever). Callers decide which status an exception means
(see ``shoal.errors``).

This module uses only the standard library and imports nothing from the rest of the package.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

__all__ = ["History", "Invocation", "Op", "Result", "SetResult", "check_register", "check_set"]

_STATUSES = ("ok", "fail", "info")
_KEEP: Any = object()  # sentinel: ``History.ok(op)`` without a value keeps the invoked value


def _fmt_t(t: float | None) -> str:
    return "inf" if t is None or math.isinf(t) else f"{t:.6f}"


@dataclass(frozen=True)
class Op:
    """One recorded operation: its invocation and, unless indeterminate, its completion. Immutable."""

    process: int | str
    """The client that ran it (a thread, a connection); one process runs one operation at a time."""
    kind: str
    """What it did: ``"write"``/``"read"`` for registers, ``"add"``/``"read"`` for sets."""
    key: Any
    """The object it touched (hashable). Ops on different keys are independent; ``None`` for a single object."""
    value: Any
    """Writes and adds: the value written/added. Ok reads: the value read, ``None`` meaning absent. Other reads: the
    invoked value (normally ``None``)."""
    invoke_t: float
    """``time.monotonic()`` at invocation (any clock shared by all processes of the history)."""
    complete_t: float | None
    """Completion time, ``>= invoke_t``; ``None`` if and only if ``status == "info"`` (open forever)."""
    status: str
    """One of ``"ok"``, ``"fail"``, ``"info"``."""
    error: str | None = None
    """Why it failed or is indeterminate (``"Timeout: ..."``); ``None`` for ok ops and when no reason was given."""

    def __post_init__(self) -> None:
        if self.status not in _STATUSES:
            raise ValueError(f"status must be one of {_STATUSES}, not {self.status!r}")
        if self.status == "info":
            if self.complete_t is not None:
                raise ValueError("an indeterminate (info) op has no completion time: complete_t must be None")
        elif self.complete_t is None or self.complete_t < self.invoke_t:
            raise ValueError(
                f"a {self.status} op needs complete_t >= invoke_t, got [{self.invoke_t}, {self.complete_t}]"
            )

    def describe(self) -> str:
        """One line for messages: ``process 'R' read 'v1' [0.031000, 0.031500] ok``."""
        s = f"process {self.process!r} {self.kind} {self.value!r}"
        if self.key is not None:
            s += f" on key {self.key!r}"
        s += f" [{_fmt_t(self.invoke_t)}, {_fmt_t(self.complete_t)}] {self.status}"
        return s + (f" ({self.error})" if self.error else "")


@dataclass(frozen=True, eq=False)
class Invocation:
    """Handle of an invoked, not yet completed operation; returned by ``History.invoke``. Complete it once."""

    index: int
    """Position in the history's invocation order: unique within its History, increasing with ``invoke_t``."""
    process: int | str
    """As given to ``invoke``."""
    kind: str
    """As given to ``invoke``."""
    key: Any
    """As given to ``invoke``."""
    value: Any
    """As given to ``invoke``."""
    invoke_t: float
    """Clock reading when ``invoke`` was called."""
    history: History = field(repr=False)
    """The History that issued the handle; only it accepts the handle."""


def _error_text(error: BaseException | str | None) -> str | None:
    if error is None or isinstance(error, str):
        return error
    return f"{type(error).__name__}: {error}"


class History:
    """Thread-safe recorder of the operations of concurrent client threads.

    ``invoke`` before sending a request, then exactly one of ``ok``, ``fail`` or ``info`` with its handle. An op
    never completed counts as ``info`` (indeterminate) in ``ops()``: a client that died mid-request.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._invocations: list[Invocation] = []
        # index -> (status, value, complete_t, error); absent while pending.
        self._completions: dict[int, tuple[str, Any, float | None, str | None]] = {}

    def invoke(self, process: int | str, kind: str, key: Any = None, value: Any = None) -> Invocation:
        """Record an invocation now; returns the handle to complete it with."""
        with self._lock:  # the clock is read under the lock: index order is invoke_t order
            inv = Invocation(len(self._invocations), process, kind, key, value, self._clock(), self)
            self._invocations.append(inv)
        return inv

    def ok(self, op: Invocation, value: Any = _KEEP) -> None:
        """The op completed. For reads pass the value read (``None``: absent); without a value the invoked one stays."""
        self._complete(op, "ok", value, self._clock(), None)

    def fail(self, op: Invocation, error: BaseException | str | None = None) -> None:
        """The op definitely did not happen."""
        self._complete(op, "fail", _KEEP, self._clock(), _error_text(error))

    def info(self, op: Invocation, error: BaseException | str | None = None) -> None:
        """The outcome is unknown: the op may have happened at any time after its invocation, or never."""
        self._complete(op, "info", _KEEP, None, _error_text(error))

    def _complete(self, op: Invocation, status: str, value: Any, t: float | None, error: str | None) -> None:
        if not isinstance(op, Invocation) or op.history is not self:
            raise ValueError(f"{op!r} is not a handle issued by this History")
        with self._lock:
            if op.index in self._completions:
                raise ValueError(f"operation {op.index} ({op.kind} by {op.process!r}) was already completed")
            self._completions[op.index] = (status, op.value if value is _KEEP else value, t, error)

    def ops(self) -> list[Op]:
        """A snapshot of every op in invocation order; ops still pending are reported as ``info``."""
        with self._lock:
            invocations = list(self._invocations)
            completions = dict(self._completions)
        out = []
        for inv in invocations:
            status, value, t, error = completions.get(inv.index, ("info", inv.value, None, "not completed"))
            out.append(Op(inv.process, inv.kind, inv.key, value, inv.invoke_t, t, status, error))
        return out

    def summary(self) -> dict[str, dict[str, int]]:
        """Counts per kind and status: ``{"write": {"ok": 10, "fail": 1, "info": 2}, ...}`` (pending ops as info)."""
        counts: dict[str, dict[str, int]] = {}
        for op in self.ops():
            counts.setdefault(op.kind, dict.fromkeys(_STATUSES, 0))[op.status] += 1
        return counts

    def __len__(self) -> int:
        with self._lock:
            return len(self._invocations)


# ---------------------------------------------------------------------------------------------------------------------
# Register linearizability


@dataclass(frozen=True)
class Result:
    """Outcome of ``check_register``."""

    valid: bool | None
    """True: every key is linearizable. False: some key is not. None: unknown, a key exceeded ``max_states`` (and no
    key was found invalid)."""
    key: Any = None
    """The first key (in order of first appearance) found invalid, or else the first given up on; None when valid."""
    explanation: str = ""
    """Human-readable: for an invalid key the longest linearizable prefix found and the op that could not follow it."""
    prefix: tuple[Op, ...] = ()
    """Invalid/unknown: the longest linearizable prefix found for ``key``, in linearization order; () when valid."""
    op: Op | None = None
    """Invalid: the op that could not be linearized after ``prefix`` (its completion passed); None otherwise."""
    states: int = 0
    """(linearized set, register value) configurations explored, summed over keys; >= 0."""


def _freeze(v: Any) -> Hashable:
    """A hashable stand-in for a value, equal for equal values (lists become tuples, dicts frozensets...)."""
    try:
        hash(v)
        return cast(Hashable, v)
    except TypeError:
        pass
    if isinstance(v, Mapping):
        return ("<map>", frozenset((_freeze(k), _freeze(x)) for k, x in v.items()))
    if isinstance(v, (set, frozenset)):
        return frozenset(_freeze(x) for x in v)
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x) for x in v)
    tolist = getattr(v, "tolist", None)  # numpy arrays and scalars
    if callable(tolist):
        return ("<array>", _freeze(tolist()))
    return ("<repr>", repr(v))


@dataclass
class _KeyOutcome:
    valid: bool | None
    explanation: str
    prefix: tuple[Op, ...]
    op: Op | None
    states: int


def check_register(ops: Iterable[Op], initial: Any = None, *, max_states: int = 2_000_000) -> Result:
    """Is the history linearizable as one read/write register per key?

    Kinds: ``"write"`` (value: the value written) and ``"read"`` (value: the value read; ``None`` = absent). Failed
    ops never happened and are dropped, as are reads that did not complete ok. An indeterminate (info) write may take
    effect at any point after its invocation, or never. Every register starts at ``initial``.

    Each key is checked on its own (P-compositionality) with the Wing & Gong / Lowe search as in Porcupine: call and
    return entries sorted by time in a doubly-linked list, ops lifted out of the list as they are linearized, and a
    cache of visited (linearized set, register value) configurations. The set is hashed incrementally with 128-bit
    Zobrist keys (a collision, which could only hide a linearization, has probability ~1e-26 at 2M states). On top,
    register-specific prunings that keep the search complete (see ``_check_key``): reads are linearized as soon as
    they can be, writes nobody reads only just before another write or their own completion, and a write of a value
    no other write writes only right before one of its reads. ``max_states`` bounds the configurations explored per
    key; past it the key is unknown (``valid=None``).
    """
    per_key: dict[Hashable, tuple[Any, list[Op]]] = {}
    for op in ops:
        if op.kind not in ("read", "write"):
            raise ValueError(f"check_register handles 'read' and 'write' ops, not {op.kind!r}: {op.describe()}")
        per_key.setdefault(_freeze(op.key), (op.key, []))[1].append(op)
    total_states = 0
    unknown: tuple[Any, _KeyOutcome] | None = None
    n_ops = 0
    for key, key_ops in per_key.values():
        n_ops += len(key_ops)
        out = _check_key(key, key_ops, initial, max_states)
        total_states += out.states
        if out.valid is False:
            return Result(False, key, out.explanation, out.prefix, out.op, total_states)
        if out.valid is None and unknown is None:
            unknown = (key, out)
    if unknown is not None:
        key, out = unknown
        return Result(None, key, out.explanation, out.prefix, None, total_states)
    return Result(
        True,
        None,
        f"linearizable: {n_ops} ops on {len(per_key)} key(s), {total_states} states explored",
        (),
        None,
        total_states,
    )


def _check_key(key: Any, key_ops: list[Op], initial: Any, max_states: int) -> _KeyOutcome:
    where = "" if key is None else f"key {key!r}: "
    # Ops that matter: ok and info writes, ok reads.
    cand = [op for op in key_ops if op.status != "fail" and (op.kind == "write" or op.status == "ok")]
    read_values = {_freeze(op.value) for op in cand if op.kind == "read"}
    # An info write whose value no read returned can always be left out: in any linearization that contains it, the
    # register is overwritten (or the history ends) before any read, so removing it keeps every read's value.
    live = [o for o in cand if not (o.kind == "write" and o.status == "info" and _freeze(o.value) not in read_values)]

    # A read of a value nobody wrote needs no search, and deserves a plainer message.
    written = {_freeze(op.value) for op in live if op.kind == "write"}
    written.add(_freeze(initial))
    for op in sorted((o for o in live if o.kind == "read"), key=lambda o: o.invoke_t):
        fv = _freeze(op.value)
        if fv not in written:
            failed = [o for o in key_ops if o.kind == "write" and o.status == "fail" and _freeze(o.value) == fv]
            why = (
                f"only failed writes wrote {op.value!r}, e.g. {failed[0].describe()}"
                if failed
                else f"no write on this key wrote {op.value!r}, and it is not the initial value {initial!r}"
            )
            return _KeyOutcome(
                False,
                f"{where}not linearizable: {op.describe()}: {why}.",
                (),
                op,
                0,
            )

    n = len(live)
    if n == 0:
        return _KeyOutcome(True, "", (), None, 0)

    # State ids: 0 is the initial value, ``dead_state`` stands for every value no read returned.
    state_ids: dict[Hashable, int] = {_freeze(initial): 0}
    is_write = [False] * n
    dead = [False] * n  # ok writes of a value no read returned (info ones were dropped above)
    arg = [0] * n
    for i, op in enumerate(live):
        fv = _freeze(op.value)
        is_write[i] = op.kind == "write"
        dead[i] = is_write[i] and fv not in read_values
        if not dead[i]:
            arg[i] = state_ids.setdefault(fv, len(state_ids))
    dead_state = len(state_ids)
    writers: dict[int, int] = {}
    for i in range(n):
        if dead[i]:
            arg[i] = dead_state
        elif is_write[i]:
            writers[arg[i]] = writers.get(arg[i], 0) + 1
    has_dead = any(dead)
    # Live writes of a value only they write (and not the initial one) are always followed directly by a read of it.
    sole = [is_write[i] and not dead[i] and arg[i] != 0 and writers[arg[i]] == 1 for i in range(n)]

    # Entries sorted by time, calls before returns at equal times (touching intervals count as concurrent).
    raw: list[tuple[float, int, int]] = []
    for i, op in enumerate(live):
        raw.append((op.invoke_t, 0, i))
        if op.complete_t is not None:  # info writes never return
            raw.append((op.complete_t, 1, i))
    raw.sort()
    m = len(raw)
    head, tail = m, m + 1
    entry_op = [i for _, _, i in raw]
    entry_is_call = [kind == 0 for _, kind, _ in raw]
    ret_of = [-1] * m  # call entry -> its return entry, or -1
    call_of = [-1] * n  # op -> its call entry
    for e, (_, kind, i) in enumerate(raw):
        if kind == 0:
            call_of[i] = e
        else:
            ret_of[call_of[i]] = e
    nxt = [e + 1 for e in range(m)] + [0, tail]  # entries, then head (-> first entry), tail
    nxt[m - 1] = tail
    prv = [e - 1 for e in range(m)] + [head, m - 1]  # entries, then head, tail (<- last entry)
    prv[0] = head

    rng = random.Random(0x5EED_0F_5A0A1)
    zop = [rng.getrandbits(128) for _ in range(n)]
    zst = [rng.getrandbits(128) for _ in range(dead_state + 1)]

    # The search is WGL as in Porcupine, with register-specific prunings that keep it complete (any valid
    # linearization can be rearranged into one the search still tries):
    # - a read that can be linearized now is linearized now, and if that fails so does the configuration: it leaves
    #   the value alone, and every op that must precede it (returned before its call) is already linearized;
    # - a dead write (ok, value never read) is always followed by a write or nothing, so it can be moved later: to just
    #   before the next write, or to just before its own return. So dead writes are never tried on their own: every
    #   write takes along all the dead writes that could be linearized with it (a batch), and a dead write whose
    #   return is reached is linearized there (then nothing else could be, so if that fails so does the configuration);
    # - a live write of a value that no other write writes and that is not the initial value is directly followed by
    #   a read of it: its readers (one at least) all come after it and before the next write. So it is tried only
    #   when one of its readers could be linearized right after it;
    # - configurations already explored, (linearized set, value), are skipped.
    # A node of the search: (op, call entry, value after it, parent, ops linearized, call entries of its batch). The
    # stack is persistent, so the deepest node found can be kept at no cost.
    root: tuple = (-1, -1, 0, None, 0, ())
    node = root
    state = 0
    z = 0
    depth = 0
    best = root
    best_depth = 0
    blocking = -1  # the op that could not be linearized after ``best``
    cache: set[int] = set()
    no_batch: tuple[int, ...] = ()
    entry = nxt[head]
    while True:
        if entry == tail:  # only calls of info writes remain: they never take effect
            return _KeyOutcome(True, "", (), None, len(cache))
        if entry_is_call[entry]:
            i = entry_op[entry]
            batch = no_batch
            if is_write[i]:
                if dead[i]:
                    entry = nxt[entry]
                    continue
                new_state = arg[i]
                if sole[i]:
                    # Try it only if a read of its value could be linearized right after it: before the first
                    # return (of a live op other than i) in the list.
                    e = nxt[head]
                    while e != tail:
                        j = entry_op[e]
                        if entry_is_call[e]:
                            if arg[j] == new_state and not is_write[j]:
                                break
                        elif j != i and not dead[j]:
                            e = tail
                            break
                        e = nxt[e]
                    if e == tail:
                        entry = nxt[entry]
                        continue
                zz = z ^ zop[i]
                if has_dead:
                    b = []
                    e = nxt[head]
                    while e != tail and entry_is_call[e]:
                        if dead[entry_op[e]]:
                            b.append(e)
                            zz ^= zop[entry_op[e]]
                        e = nxt[e]
                    if b:
                        batch = tuple(b)
            elif arg[i] == state:
                new_state = state
                zz = z ^ zop[i]
            else:
                entry = nxt[entry]
                continue
            forced = not is_write[i]
        elif dead[entry_op[entry]]:
            i = entry_op[entry]
            entry = call_of[i]
            batch = no_batch
            new_state = dead_state
            zz = z ^ zop[i]
            forced = True
        else:
            forced = None  # the return of a live op not yet linearized
        if forced is not None:
            ck = zz ^ zst[new_state]
            if ck not in cache:
                cache.add(ck)
                if len(cache) > max_states:
                    prefix = _prefix(best, live, entry_op)
                    return _KeyOutcome(
                        None,
                        f"{where}unknown: gave up after {max_states} states (max_states); the longest linearizable "
                        f"prefix found has {len(prefix)} of {n} ops.",
                        prefix,
                        None,
                        len(cache),
                    )
                # Linearize the batch and op i here: lift their call and return entries out of the list.
                for e in batch + (entry,):
                    p, q = prv[e], nxt[e]
                    nxt[p] = q
                    prv[q] = p
                    r = ret_of[e]
                    if r >= 0:
                        p, q = prv[r], nxt[r]
                        nxt[p] = q
                        prv[q] = p
                depth += 1 + len(batch)
                node = (i, entry, new_state, node, depth, batch)
                state = new_state
                z = zz
                if depth > best_depth:
                    best, best_depth, blocking = node, depth, -1
                entry = nxt[head]
                continue
            if not forced:  # explored before: try the next candidate
                entry = nxt[entry]
                continue
        # The configuration on top of the stack fails. Pop it; if it was forced, its parent fails too.
        while True:
            if node is best and blocking < 0:  # the first return in the list: the op that could not be linearized
                e = nxt[head]
                while e != tail and entry_is_call[e]:
                    e = nxt[e]
                blocking = entry_op[e] if e != tail else -1
            if node is root:
                return _explain_invalid(where, live, _prefix(best, live, entry_op), blocking, initial, len(cache))
            i, e, _, node, _, batch = node
            depth = node[4]
            state = node[2]
            z ^= zop[i]
            r = ret_of[e]
            if r >= 0:
                nxt[prv[r]] = r
                prv[nxt[r]] = r
            nxt[prv[e]] = e
            prv[nxt[e]] = e
            for b in reversed(batch):
                z ^= zop[entry_op[b]]
                r = ret_of[b]
                nxt[prv[r]] = r
                prv[nxt[r]] = r
                nxt[prv[b]] = b
                prv[nxt[b]] = b
            if is_write[i] and not dead[i]:
                break
        entry = nxt[e]


def _prefix(node: tuple, live: list[Op], entry_op: list[int]) -> tuple[Op, ...]:
    out: list[Op] = []
    while node[3] is not None:
        out.append(live[node[0]])
        out.extend(live[entry_op[b]] for b in reversed(node[5]))
        node = node[3]
    return tuple(reversed(out))


def _explain_invalid(
    where: str, live: list[Op], prefix: tuple[Op, ...], blocking: int, initial: Any, states: int
) -> _KeyOutcome:
    def listing(ops: list[Op], limit: int = 6) -> list[str]:
        out = [f"  {o.describe()}" for o in ops[:limit]]
        return out + ([f"  ... {len(ops) - limit} more"] if len(ops) > limit else [])

    last_write = next((o for o in reversed(prefix) if o.kind == "write"), None)
    holds = f"{initial!r} (initial)" if last_write is None else f"{last_write.value!r}"
    lines = [f"{where}not linearizable ({len(live)} ops checked, {states} states explored)."]
    if prefix:
        lines.append(f"Longest linearizable prefix found: {len(prefix)} ops, ending with:")
        shown = prefix[-8:]
        if len(prefix) > len(shown):
            lines.append(f"  ... {len(prefix) - len(shown)} earlier ops")
        lines.extend(f"  {o.describe()}" for o in shown)
    else:
        lines.append("Longest linearizable prefix found: none.")
    if blocking < 0:  # not expected: a failed search always stops at the return of an op
        return _KeyOutcome(False, "\n".join(lines), prefix, None, states)
    op = live[blocking]
    lines.append(
        f"After it the register holds {holds}, and this op, which completed at {_fmt_t(op.complete_t)}, cannot be "
        "linearized next:"
        if prefix
        else f"The register holds {holds}, and this op, which completed at {_fmt_t(op.complete_t)}, cannot be "
        "linearized first:"
    )
    lines.append(f"  {op.describe()}")
    fv = _freeze(op.value)
    same = [o for o in live if o is not op and _freeze(o.value) == fv]
    if op.kind == "read":
        writers = [o for o in same if o.kind == "write"]
        lines.append(
            f"It read {op.value!r}, "
            + ("the initial value; " if fv == _freeze(initial) else "")
            + ("written by:" if writers else "written by no other op.")
        )
        lines.extend(listing(writers))
    else:
        readers = [o for o in same if o.kind == "read"]
        if readers:
            lines.append(
                f"It wrote {op.value!r}; each read of that value must come after a write of it and before the "
                "next write. The reads of it:"
            )
            lines.extend(listing(readers))
        else:
            lines.append(f"It wrote {op.value!r}, which no read returned.")
    assert op.complete_t is not None
    in_prefix = {id(o) for o in prefix}
    pending = [
        o for o in live if id(o) not in in_prefix and o not in same and o is not op and o.invoke_t <= op.complete_t
    ]
    if pending:
        lines.append("No order of the other ops invoked by then lets it follow the prefix:")
        lines.extend(listing(pending))
    return _KeyOutcome(False, "\n".join(lines), prefix, op, states)


# ---------------------------------------------------------------------------------------------------------------------
# Add-only set


@dataclass(frozen=True)
class SetResult:
    """Outcome of ``check_set``. Element sets are frozensets of the elements as given (hashable)."""

    valid: bool | None
    """True iff lost, unexpected and failed_present are all empty; None when there is no ok read to judge by."""
    acknowledged: frozenset
    """Elements of ok adds."""
    lost: frozenset
    """Acknowledged by an add that completed before the final read began, yet absent from it (subset of
    acknowledged). An add acknowledged later is concurrent with the final read and is not judged."""
    unexpected: frozenset
    """In the final read but never attempted by any add (disjoint from every add's elements)."""
    recovered: frozenset
    """In the final read, added by an info add and by no ok add."""
    failed_present: frozenset
    """In the final read although every add of it failed (fail = definitely did not happen), so also invalid."""
    final_read: frozenset
    """The final read: the last ok read by completion time; empty when there is none."""
    explanation: str = ""
    """One line per finding, naming a few elements of each non-empty set."""


def _elements(value: Any) -> list[Hashable]:
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        return [value]
    return list(value)


def _some(xs: frozenset, n: int = 10) -> str:
    try:
        items = sorted(xs)
    except TypeError:
        items = sorted(xs, key=repr)
    s = ", ".join(repr(x) for x in items[:n])
    return s + (f", ... ({len(items)} in all)" if len(items) > n else "")


def _completed(op: Op) -> float:
    return math.inf if op.complete_t is None else op.complete_t


def check_set(ops: Iterable[Op]) -> SetResult:
    """Check an add-only set: kinds ``"add"`` (value: an element or an iterable of elements; a str is one element)
    and ``"read"`` (value: the elements present). The last ok read by completion time is the final read; reads that
    did not complete ok are ignored. Make the final read after the adds: an ok add that completed after the final
    read began may be missing from it without being lost. Keys are not looked at: pass the ops of one set.
    """
    ok_adds: set[Hashable] = set()
    ok_add_ops: list[Op] = []
    info_adds: set[Hashable] = set()
    attempted: set[Hashable] = set()
    final: Op | None = None
    for op in ops:
        if op.kind == "add":
            elems = _elements(op.value)
            attempted.update(elems)
            if op.status == "ok":
                ok_adds.update(elems)
                ok_add_ops.append(op)
            elif op.status == "info":
                info_adds.update(elems)
        elif op.kind == "read":
            if op.status == "ok" and (final is None or _completed(op) >= _completed(final)):
                final = op
        else:
            raise ValueError(f"check_set handles 'add' and 'read' ops, not {op.kind!r}: {op.describe()}")
    acknowledged = frozenset(ok_adds)
    if final is None:
        return SetResult(
            None,
            acknowledged,
            frozenset(),
            frozenset(),
            frozenset(),
            frozenset(),
            frozenset(),
            "unknown: no read completed ok, so there is no final read to check the adds against",
        )
    present = frozenset(_elements(final.value))
    settled = {x for op in ok_add_ops if _completed(op) < final.invoke_t for x in _elements(op.value)}
    lost = frozenset(settled) - present
    concurrent = acknowledged - settled - present
    unexpected = present - attempted
    recovered = (present & info_adds) - acknowledged
    failed_present = (present & attempted) - acknowledged - info_adds
    valid = not lost and not unexpected and not failed_present
    lines = [
        f"{'valid' if valid else 'invalid'}: the final read (process {final.process!r}, "
        f"[{_fmt_t(final.invoke_t)}, {_fmt_t(final.complete_t)}]) has {len(present)} elements; "
        f"{len(acknowledged)} acknowledged, {len(attempted)} attempted"
    ]
    if lost:
        lines.append(f"lost ({len(lost)}): acknowledged before the final read began, but absent: {_some(lost)}")
    if concurrent:
        lines.append(
            f"not judged ({len(concurrent)}): acknowledged after the final read began, and absent: {_some(concurrent)}"
        )
    if unexpected:
        lines.append(f"unexpected ({len(unexpected)}): present but never added: {_some(unexpected)}")
    if failed_present:
        lines.append(f"failed but present ({len(failed_present)}): every add of them failed: {_some(failed_present)}")
    if recovered:
        lines.append(f"recovered ({len(recovered)}): indeterminate adds that took effect: {_some(recovered)}")
    return SetResult(valid, acknowledged, lost, unexpected, recovered, failed_present, present, "\n".join(lines))
