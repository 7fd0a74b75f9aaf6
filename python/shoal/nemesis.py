"""Fault injection for local clusters (the nemesis of the fault matrix): ``Nemesis`` kills, stops, pauses,
partitions, restarts, clock-skews and damages the files of the nodes of a ``shoal.Cluster.local(...)``, undoes
each fault, and logs every step on a ``time.monotonic()`` timeline.

    nem = Nemesis(cluster, seed=7)            # or shoal_cluster.nemesis in a pytest test
    docs = cluster.create_collection("docs", dim=4, shards=2, replication_factor=3)
    victim = nem.kill_leader(docs, shard=0)   # SIGKILL the node leading shard 0
    ...                                       # clients keep working meanwhile
    nem.start(victim)                         # the matching undo (or nem.heal_all())
    nem.inject("partition_leader", docs)      # named faults, for data-driven matrices (FAULTS)
    nem.heal_all()                            # resume paused, heal partitions, start stopped nodes, skew 0
    print(nem.timeline())                     # "+3.201s  kill  node 2 (pid 4711, leader of docs/0)" ...

Faults and their undo:

| fault | undo |
|---|---|
| ``kill(node)`` (SIGKILL), ``stop(node)`` (SIGTERM, graceful) | ``start(node)`` (None: all it took down) |
| ``pause(node)`` (SIGSTOP) | ``resume(node)`` |
| ``partition(minority)``, ``partition_leader(coll, shard)`` | ``heal()`` |
| ``restart_all()``: SIGKILL every node, then start them all concurrently | itself (it ends with every node up) |
| ``skew_clock(node, offset_ms)``, abs(offset_ms) <= ``MAX_SKEW_MS`` | ``unskew(node)`` |
| ``damage_file(node, kind)`` on a stopped node, kinds ``DAMAGE_KINDS`` | ``restore(damage)`` (the node stopped) |

Only the cluster's public process-control API is used (``cluster.node(i).kill/stop/start/restart/pause/resume/
skew_clock``, ``cluster.partition/heal``, ``Collection.shards``, ``NodeHandle.data_dir``), so only processes the
cluster started are ever signalled. Every call is bounded in time: node starts by ``start_timeout``, leader lookups
by ``leader_timeout``, stops by the handle's own timeout. Each step is appended to ``events`` as
``(time.monotonic(), name, detail)``; ``windows`` holds one ``FaultWindow`` per fault (start, end) for availability
accounting. The methods are meant to be called from one controlling thread while client threads run.

Files on a node (``damage_file``): ``DATA_DIR/shards/<collection>@<uid>/<shard>/log/*.seg`` and
``.../snapshots/*.snap`` for each shard replica, ``DATA_DIR/meta/log`` and ``DATA_DIR/meta/snapshots`` for group 0.
What a damage replaced is kept under ``backup_dir`` (default ``CLUSTER_DATA_DIR/nemesis-backups``), so the data dir
of a failed test still holds the originals.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from .errors import InvalidArgument, ShoalError

if TYPE_CHECKING:  # pragma: no cover
    from .cluster import Cluster
    from .collection import Collection
    from .node_handle import NodeHandle

__all__ = ["DAMAGE_KINDS", "FAULTS", "MAX_SKEW_MS", "Damage", "FaultWindow", "Nemesis", "NemesisError"]

#: Named faults of ``Nemesis.inject`` (each undone by ``heal_all``).
FAULTS = (
    "kill",
    "kill_leader",
    "pause",
    "pause_leader",
    "partition",
    "partition_leader",
    "skew",
    "restart_all",
    "damage",
)
#: Kinds of ``Nemesis.damage_file``.
DAMAGE_KINDS = ("truncate_tail", "flip_byte", "delete_snapshot", "delete_dir")
#: The largest clock offset ``skew_clock`` accepts, in milliseconds.
MAX_SKEW_MS = 30_000

_PROBE_GAP = 8  # node ids are probed up to this many past the largest known one
_JOIN_MARGIN = 15.0  # seconds a start thread may outlive its own timeout before it is reported hung

CollectionRef = Union["Collection", str]


class NemesisError(RuntimeError):
    """A fault could not be injected or undone (the message says which and why)."""


@dataclass
class FaultWindow:
    """One fault's time span on the ``time.monotonic()`` clock: ``end`` is None while it is active."""

    name: str
    detail: str
    start: float
    end: float | None = None

    def covers(self, t: float) -> bool:
        """Whether ``t`` falls within the window (an open window extends to now and beyond)."""
        return self.start <= t and (self.end is None or t <= self.end)


@dataclass
class Damage:
    """What ``damage_file`` did: ``path`` changed (or deleted) on node ``node``; the original is at ``backup``."""

    node: int
    kind: str
    path: Path
    backup: Path
    detail: str
    size_before: int = 0
    size_after: int = 0
    offset: int | None = None
    """flip_byte: the byte flipped; truncate_tail: the new length."""
    before: bytes = b""
    """flip_byte: the original byte; truncate_tail: the bytes cut off."""
    after: bytes = b""
    """flip_byte: the byte written."""
    restored: bool = False


@dataclass
class _Skew:
    offset_ms: int
    pid: int | None


@dataclass
class _State:
    down: set[int] = field(default_factory=set)  # killed or stopped by us, not started since
    paused: set[int] = field(default_factory=set)
    skewed: dict[int, _Skew] = field(default_factory=dict)
    partition: tuple[list[int], ...] | None = None
    open: dict[str, FaultWindow] = field(default_factory=dict)  # "kill:2", "pause:1", "partition", "skew:3"


def _coll_name(collection: CollectionRef) -> str:
    name = collection if isinstance(collection, str) else getattr(collection, "name", None)
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"collection must be a Collection or a collection name, got {collection!r}")
    return name


class Nemesis:
    """Fault injection over a local cluster (``shoal.Cluster.local``): see the module docstring.

    ``seed``: seeds ``rng``, which picks random nodes, minorities and offsets. ``start_timeout``: seconds a node
    start may take (per node; concurrent starts share it). ``leader_timeout``: seconds to wait for a shard to report
    a leader. ``backup_dir``: where ``damage_file`` keeps originals (default ``cluster.data_dir/nemesis-backups``).
    """

    def __init__(
        self,
        cluster: Cluster,
        *,
        seed: int | None = None,
        start_timeout: float = 60.0,
        leader_timeout: float = 15.0,
        backup_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if not getattr(cluster, "is_local", False):
            raise InvalidArgument("Nemesis needs a local cluster (shoal.Cluster.local), not an attached one")
        self.cluster = cluster
        self.rng = random.Random(seed)
        self.start_timeout = float(start_timeout)
        self.leader_timeout = float(leader_timeout)
        self._backup_dir = Path(backup_dir) if backup_dir is not None else None
        self.events: list[tuple[float, str, str]] = []
        """Every step as ``(time.monotonic(), name, detail)``, in order."""
        self.windows: list[FaultWindow] = []
        """One window per fault injected, in order of injection."""
        self.damages: list[Damage] = []
        """Every ``damage_file`` done, in order."""
        self._s = _State()
        self._known: set[int] = set()
        self._lock = threading.RLock()

    # --- bookkeeping ---------------------------------------------------------------------------------------------

    def log(self, name: str, detail: str = "") -> None:
        """Appends ``(now, name, detail)`` to ``events`` (also for the caller's own milestones)."""
        with self._lock:
            self.events.append((time.monotonic(), name, detail))

    def _open(self, key: str, name: str, detail: str) -> None:
        with self._lock:
            if key in self._s.open:
                return
            w = FaultWindow(name, detail, time.monotonic())
            self._s.open[key] = w
            self.windows.append(w)

    def _close(self, key: str) -> None:
        with self._lock:
            w = self._s.open.pop(key, None)
            if w is not None:
                w.end = time.monotonic()

    def active(self) -> list[str]:
        """The faults in effect, e.g. ``["kill:2", "partition"]`` (in order of injection)."""
        with self._lock:
            return list(self._s.open)

    def in_fault(self, t: float) -> bool:
        """Whether a fault was in effect at time ``t`` (``time.monotonic()``)."""
        with self._lock:
            return any(w.covers(t) for w in self.windows)

    def timeline(self, since: float | None = None) -> str:
        """``events`` as text, one line each, times relative to ``since`` (default: the first event)."""
        with self._lock:
            events = list(self.events)
        if not events:
            return "(no nemesis events)"
        t0 = events[0][0] if since is None else since
        width = max(len(name) for _, name, _ in events)
        return "\n".join(f"{t - t0:+9.3f}s  {name:<{width}}  {detail}".rstrip() for t, name, detail in events)

    # --- nodes ---------------------------------------------------------------------------------------------------

    def node_ids(self) -> list[int]:
        """Ids of the cluster's local nodes, sorted (probed through ``cluster.node(i)``, no request sent)."""
        found: set[int] = set()
        misses = 0
        i = 1
        top = max(self._known, default=0)
        while misses < _PROBE_GAP or i <= top:
            try:
                self.cluster.node(i)
            except InvalidArgument:
                misses += 1
            else:
                found.add(i)
                misses = 0
            i += 1
        self._known = found
        return sorted(found)

    def _handle(self, node: int) -> NodeHandle:
        return self.cluster.node(node)

    def running(self) -> list[int]:
        """Nodes whose process runs and is not paused."""
        return [i for i in self.node_ids() if self._handle(i).running and not self._handle(i).paused]

    def _pick(self, node: int | None, among: Iterable[int], what: str) -> int:
        if node is not None:
            self._handle(node)  # InvalidArgument for an unknown id
            return int(node)
        pool = sorted(among)
        if not pool:
            raise NemesisError(f"{what}: no eligible node (nodes: {self.node_ids()}, active faults: {self.active()})")
        return self.rng.choice(pool)

    def leader_of(self, collection: CollectionRef, shard: int = 0, within: float | None = None) -> int:
        """The node leading ``shard`` of ``collection`` as the cluster reports it, polled for at most ``within``
        seconds (default ``leader_timeout``) until some leader is known."""
        name = _coll_name(collection)
        within = self.leader_timeout if within is None else within
        deadline = time.monotonic() + within
        last: Any = None
        while True:
            remaining = deadline - time.monotonic()
            try:
                coll = collection if not isinstance(collection, str) else self.cluster.collection(name, timeout=3)
                shards = coll.shards(timeout=max(0.5, min(3.0, remaining)))
                match = [s for s in shards if s.id == shard]
                if not match:
                    ids = [s.id for s in shards]
                    raise InvalidArgument(f"collection {name!r} has no shard {shard} (shards: {ids})")
                last = match[0]
                if match[0].leader is not None:
                    return int(match[0].leader)
            except InvalidArgument:
                raise
            except ShoalError as e:
                last = e
            if time.monotonic() >= deadline:
                raise NemesisError(f"no leader of {name}/{shard} reported within {within:g} s (last: {last!r})")
            time.sleep(0.1)

    # --- kill / stop / start ---------------------------------------------------------------------------------------

    def kill(self, node: int | None = None, why: str = "") -> int:
        """SIGKILL ``node`` (a random running one when None); returns its id. Undo: ``start``."""
        nid = self._pick(node, [i for i in self.node_ids() if self._handle(i).running], "kill")
        h = self._handle(nid)
        pid = h.pid
        h.kill()
        self._down_now(nid)
        self.log("kill", f"node {nid} (pid {pid}{', ' + why if why else ''})")
        self._open(f"kill:{nid}", "kill", f"node {nid}")
        return nid

    def stop(self, node: int | None = None, timeout: float = 10.0) -> int:
        """Graceful stop of ``node`` (SIGTERM, SIGKILL after ``timeout`` s); returns its id. Undo: ``start``."""
        nid = self._pick(node, [i for i in self.node_ids() if self._handle(i).running], "stop")
        h = self._handle(nid)
        pid = h.pid
        h.stop(timeout=timeout)
        self._down_now(nid)
        self.log("stop", f"node {nid} (pid {pid})")
        self._open(f"kill:{nid}", "stop", f"node {nid}")
        return nid

    def _down_now(self, nid: int) -> None:
        with self._lock:
            self._s.down.add(nid)
            self._s.paused.discard(nid)
            self._s.skewed.pop(nid, None)
            self._close(f"pause:{nid}")
            self._close(f"skew:{nid}")

    def start(self, node: int | None = None, timeout: float | None = None) -> list[int]:
        """Starts ``node``, or when None every node this nemesis took down, concurrently (nodes restarted from
        disk may only become ready together); waits until each serves, at most ``timeout`` seconds (default
        ``start_timeout``). Returns the ids started. Raises ``NemesisError`` naming the nodes that did not start."""
        if node is not None:
            ids = [int(node)]
        else:
            with self._lock:
                ids = sorted(self._s.down)
        return self._start_many(ids, "start", timeout)

    def _start_many(self, ids: list[int], name: str, timeout: float | None) -> list[int]:
        timeout = self.start_timeout if timeout is None else float(timeout)
        with self._lock:
            for i in [i for i in ids if self._handle(i).running]:  # started by someone else meanwhile
                self._s.down.discard(i)
                self._close(f"kill:{i}")
        ids = [i for i in ids if not self._handle(i).running]
        if not ids:
            return []
        errors: dict[int, BaseException] = {}
        done: set[int] = set()
        t0 = time.monotonic()

        def run(i: int) -> None:
            try:
                self._handle(i).start(timeout=timeout)
                done.add(i)
            except BaseException as e:  # reported below
                errors[i] = e

        threads = [threading.Thread(target=run, args=(i,), name=f"nemesis-start-{i}", daemon=True) for i in ids]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.0, t0 + timeout + _JOIN_MARGIN - time.monotonic()))
        started = sorted(done)
        with self._lock:
            for i in started:
                self._s.down.discard(i)
                self._close(f"kill:{i}")
        self.log(name, f"nodes {started} up after {time.monotonic() - t0:.2f} s")
        failed = [i for i in ids if i not in done]
        if failed:
            why = "; ".join(f"node {i}: {errors.get(i, 'still starting (hung)')!r}" for i in failed)
            self.log(f"{name} failed", why)
            raise NemesisError(f"{name}: nodes {failed} did not start within {timeout:g} s: {why}")
        return started

    def restart_all(self, timeout: float | None = None) -> list[int]:
        """SIGKILL every node, then starts them all concurrently (restarted from disk, they only become ready
        together); returns the ids. Undo: none needed, it ends with every node up (else ``NemesisError``, and the
        nodes that did not start stay down for ``start``/``heal_all``)."""
        ids = self.node_ids()
        self._open("restart_all", "restart_all", f"nodes {ids}")
        try:
            for i in ids:
                h = self._handle(i)
                if h.running:
                    h.kill()
                self._down_now(i)
            self.log("restart_all: killed", f"nodes {ids}")
            return self._start_many(ids, "restart_all: started", timeout)
        finally:
            self._close("restart_all")

    # --- pause / resume ----------------------------------------------------------------------------------------------

    def pause(self, node: int | None = None, why: str = "") -> int:
        """SIGSTOP ``node`` (a random running, unpaused one when None); returns its id. Undo: ``resume``."""
        nid = self._pick(node, self.running(), "pause")
        self._handle(nid).pause()
        with self._lock:
            self._s.paused.add(nid)
        self.log("pause", f"node {nid}{' (' + why + ')' if why else ''}")
        self._open(f"pause:{nid}", "pause", f"node {nid}")
        return nid

    def resume(self, node: int | None = None) -> list[int]:
        """SIGCONT ``node``, or every paused node when None; returns the ids resumed."""
        if node is not None:
            ids = [int(node)]
        else:
            with self._lock:
                ids = sorted(self._s.paused | {i for i in self.node_ids() if self._handle(i).paused})
        for i in ids:
            self._handle(i).resume()
            with self._lock:
                self._s.paused.discard(i)
            self._close(f"pause:{i}")
        if ids:
            self.log("resume", f"nodes {ids}")
        return ids

    # --- partitions -----------------------------------------------------------------------------------------------

    def partition(self, minority: Iterable[int] | None = None) -> tuple[list[int], list[int]]:
        """Cuts ``minority`` off from the other nodes (``cluster.partition``); None picks a random minority
        (1..(n-1)//2 nodes). Returns (minority, majority). Undo: ``heal``."""
        ids = self.node_ids()
        if minority is None:
            size = self.rng.randint(1, max(1, (len(ids) - 1) // 2))
            small = sorted(self.rng.sample(ids, size))
        else:
            small = sorted({int(i) for i in minority})
        rest = [i for i in ids if i not in small]
        if not small or not rest:
            raise NemesisError(f"partition: {small} vs {rest} is not a split of nodes {ids}")
        self.cluster.partition(small, rest)
        with self._lock:
            self._s.partition = (small, rest)
            self._close("partition")  # a partition replacing another one gets its own window
        self.log("partition", f"{small} | {rest}")
        self._open("partition", "partition", f"{small} | {rest}")
        return small, rest

    def partition_leader(self, collection: CollectionRef, shard: int = 0) -> tuple[list[int], list[int]]:
        """A partition whose minority holds the current leader of ``shard`` of ``collection`` (plus random other
        nodes up to a random minority size). Returns (minority, majority). Undo: ``heal``."""
        leader = self.leader_of(collection, shard)
        ids = self.node_ids()
        size = self.rng.randint(1, max(1, (len(ids) - 1) // 2))
        others = [i for i in ids if i != leader]
        small = sorted([leader] + self.rng.sample(others, size - 1))
        self.log("leader", f"of {_coll_name(collection)}/{shard} is node {leader}")
        return self.partition(small)

    def heal(self) -> None:
        """Ends the partition (``cluster.heal``)."""
        self.cluster.heal()
        with self._lock:
            was = self._s.partition
            self._s.partition = None
        self.log("heal", f"partition {was[0]} | {was[1]} ended" if was else "no partition was active")
        self._close("partition")

    # --- leaders --------------------------------------------------------------------------------------------------

    def kill_leader(self, collection: CollectionRef, shard: int = 0) -> int:
        """SIGKILL the node leading ``shard`` of ``collection``; returns its id. Undo: ``start``."""
        leader = self.leader_of(collection, shard)
        return self.kill(leader, why=f"leader of {_coll_name(collection)}/{shard}")

    def pause_leader(self, collection: CollectionRef, shard: int = 0) -> int:
        """SIGSTOP the node leading ``shard`` of ``collection``; returns its id. Undo: ``resume``."""
        leader = self.leader_of(collection, shard)
        return self.pause(leader, why=f"leader of {_coll_name(collection)}/{shard}")

    # --- clocks ---------------------------------------------------------------------------------------------------

    def skew_clock(self, node: int, offset_ms: int) -> None:
        """Runs ``node``'s clock ``offset_ms`` ms ahead (negative: behind), abs(offset_ms) <= ``MAX_SKEW_MS``.
        The node must run unpaused. Undo: ``unskew`` (a restart also ends it)."""
        if not isinstance(offset_ms, int) or isinstance(offset_ms, bool) or abs(offset_ms) > MAX_SKEW_MS:
            raise InvalidArgument(f"offset_ms must be an int with abs(offset_ms) <= {MAX_SKEW_MS}, got {offset_ms!r}")
        h = self._handle(node)
        if not h.running or h.paused:
            raise NemesisError(f"skew_clock: node {node} is {'paused' if h.paused else 'not running'}")
        h.skew_clock(offset_ms)
        with self._lock:
            if offset_ms:
                self._s.skewed[node] = _Skew(offset_ms, h.pid)
            else:
                self._s.skewed.pop(node, None)
        self.log("skew_clock", f"node {node} {offset_ms:+d} ms")
        if offset_ms:
            self._open(f"skew:{node}", "skew", f"node {node} {offset_ms:+d} ms")
        else:
            self._close(f"skew:{node}")

    def unskew(self, node: int | None = None) -> list[int]:
        """Sets the clock offset of ``node`` (every skewed node when None) back to 0; returns the ids. A node
        restarted since its skew already runs on the machine's clock and is only forgotten."""
        with self._lock:
            ids = [int(node)] if node is not None else sorted(self._s.skewed)
            skews = {i: self._s.skewed.get(i) for i in ids}
        done = []
        for i in ids:
            h = self._handle(i)
            sk = skews[i]
            if sk is not None and (not h.running or h.pid != sk.pid):  # restarted (or down): the skew is gone
                with self._lock:
                    self._s.skewed.pop(i, None)
                self._close(f"skew:{i}")
                self.log("unskew", f"node {i}: restarted since its skew, nothing to undo")
                continue
            self.skew_clock(i, 0)
            done.append(i)
        return done

    # --- named faults ---------------------------------------------------------------------------------------------

    def inject(
        self, fault: str, collection: CollectionRef | None = None, shard: int | None = None, skew_ms: int = 20_000
    ) -> str:
        """Injects the named fault (one of ``FAULTS``) and returns a description; ``heal_all`` undoes it.

        ``kill``/``pause``/``partition``: a random node/minority. ``*_leader``: the leader of ``shard`` (random when
        None) of ``collection``. ``skew``: one random node ``+skew_ms``, another ``-skew_ms``. ``restart_all``:
        kill every node and start them all (done when this returns). ``damage``: kill a random node, damage one
        file of a random shard of ``collection`` (a flipped byte, a truncated tail or the whole replica directory
        gone) and start it again (done when this returns: the node quarantines and rebuilds the replica).
        """
        if fault not in FAULTS:
            raise InvalidArgument(f"fault must be one of {FAULTS}, got {fault!r}")
        if fault.endswith("_leader"):
            if collection is None:
                raise InvalidArgument(f"fault {fault!r} needs a collection")
            if shard is None:
                coll = collection if not isinstance(collection, str) else self.cluster.collection(collection, timeout=5)
                shard = self.rng.randrange(max(1, int(getattr(coll, "shard_count", 1))))
        if fault == "kill":
            return f"kill node {self.kill()}"
        if fault == "kill_leader":
            assert collection is not None and shard is not None
            return f"kill node {self.kill_leader(collection, shard)} (leader of shard {shard})"
        if fault == "pause":
            return f"pause node {self.pause()}"
        if fault == "pause_leader":
            assert collection is not None and shard is not None
            return f"pause node {self.pause_leader(collection, shard)} (leader of shard {shard})"
        if fault == "partition":
            small, rest = self.partition()
            return f"partition {small} | {rest}"
        if fault == "partition_leader":
            assert collection is not None and shard is not None
            small, rest = self.partition_leader(collection, shard)
            return f"partition {small} | {rest} (leader of shard {shard} in the minority)"
        if fault == "skew":
            a, b = self.rng.sample(self.running(), 2)
            self.skew_clock(a, abs(skew_ms))
            self.skew_clock(b, -abs(skew_ms))
            return f"skew node {a} {abs(skew_ms):+d} ms, node {b} {-abs(skew_ms):+d} ms"
        if fault == "damage":
            if collection is None:
                raise InvalidArgument("fault 'damage' needs a collection")
            node = self.kill()
            kind = self.rng.choice(("flip_byte", "truncate_tail", "delete_dir"))
            d = self.damage_file(node, kind, collection=collection, shard=shard)
            self.start(node)
            return f"damage node {node}: {d.detail}"
        ids = self.restart_all()
        return f"restart_all {ids}"

    def heal_all(self, timeout: float | None = None, raise_errors: bool = True) -> list[str]:
        """Undoes every fault in effect: resumes paused nodes, heals the partition, starts every node that is
        not running (concurrently, at most ``timeout`` s, default ``start_timeout``) and sets skewed clocks back
        to 0. Damaged files are not restored (see ``restore``). Each step is tried even if an earlier one failed;
        returns the errors, and raises ``NemesisError`` with all of them when ``raise_errors`` and any."""
        errors: list[str] = []

        def attempt(what: str, fn: Callable[[], Any]) -> None:
            try:
                fn()
            except Exception as e:  # collected, reported together
                errors.append(f"{what}: {type(e).__name__}: {e}")

        self.log("heal_all", f"active: {self.active()}")
        attempt("resume", self.resume)
        with self._lock:
            partitioned = self._s.partition is not None
        if partitioned:
            attempt("heal", self.heal)
        attempt(
            "start",
            lambda: self._start_many([i for i in self.node_ids() if not self._handle(i).running], "start", timeout),
        )
        attempt("unskew", self.unskew)
        if errors:
            self.log("heal_all failed", "; ".join(errors))
            if raise_errors:
                raise NemesisError("heal_all: " + "; ".join(errors))
        else:
            self.log("heal_all done", "")
        return errors

    # --- files ----------------------------------------------------------------------------------------------------

    def backup_dir(self) -> Path:
        """Where ``damage_file`` keeps the originals (created on first use)."""
        if self._backup_dir is None:
            root = self.cluster.data_dir
            self._backup_dir = (
                Path(root) / "nemesis-backups" if root is not None else Path(tempfile.mkdtemp(prefix="shoal-nemesis-"))
            )
        self._backup_dir.mkdir(parents=True, exist_ok=True)
        return self._backup_dir

    @staticmethod
    def shard_dir(data_dir: Path, collection: CollectionRef, shard: int) -> Path:
        """``data_dir/shards/<collection>@<uid>/<shard>`` (the newest uid when the name was reused)."""
        name = _coll_name(collection)
        root = data_dir / "shards"
        dirs = [d for d in root.glob("*") if d.is_dir() and (d.name == name or d.name.rsplit("@", 1)[0] == name)]
        if not dirs:
            raise FileNotFoundError(f"no directory of collection {name!r} under {root}")

        def uid(d: Path) -> int:
            tail = d.name.rsplit("@", 1)[-1]
            return int(tail) if tail.isdigit() else -1

        d = max(dirs, key=uid) / str(int(shard))
        if not d.is_dir():
            raise FileNotFoundError(f"no shard {shard} of collection {name!r} on this node: {d}")
        return d

    def _group_dir(self, data_dir: Path, collection: CollectionRef | None, shard: int | None, meta: bool) -> Path:
        """The directory of one Raft group on a node: group 0 (``meta``), or a shard (random when not given)."""
        if meta:
            d = data_dir / "meta"
            if not d.is_dir():
                raise FileNotFoundError(f"no group 0 directory {d}")
            return d
        if collection is None:
            colls = sorted(d.name for d in (data_dir / "shards").glob("*") if d.is_dir())
            if not colls:
                raise FileNotFoundError(f"no shard directories under {data_dir / 'shards'}")
            cdir = data_dir / "shards" / self.rng.choice(colls)
        else:
            cdir = self.shard_dir(data_dir, collection, 0).parent
        if shard is None:
            shards = sorted(int(d.name) for d in cdir.glob("*") if d.is_dir() and d.name.isdigit())
            if not shards:
                raise FileNotFoundError(f"no shard directories under {cdir}")
            shard = self.rng.choice(shards)
        d = cdir / str(int(shard))
        if not d.is_dir():
            raise FileNotFoundError(f"no shard directory {d}")
        return d

    @staticmethod
    def _inside(data_dir: Path, path: str | os.PathLike[str]) -> Path:
        p = Path(path)
        p = (p if p.is_absolute() else data_dir / p).resolve()
        if not p.is_relative_to(data_dir.resolve()):
            raise InvalidArgument(f"{p} is not inside the node's data dir {data_dir}")
        return p

    def damage_file(
        self,
        node: int,
        kind: str,
        *,
        collection: CollectionRef | None = None,
        shard: int | None = None,
        meta: bool = False,
        path: str | os.PathLike[str] | None = None,
        offset: int | None = None,
        nbytes: int | None = None,
    ) -> Damage:
        """Damages one file (or directory) of ``node``, which must be stopped (``stop``/``kill`` it first).

        The target is in the log/snapshots of ``shard`` of ``collection`` (random ones when None) or, with
        ``meta=True``, of group 0; ``path`` (absolute or relative to the node's data dir) overrides it. Kinds:

        - ``"truncate_tail"``: cuts ``nbytes`` (default random 1..32) off the end of the last ``*.seg`` of the log;
        - ``"flip_byte"``: inverts the byte at ``offset`` (default random) of ``path`` (default a random ``*.seg``);
        - ``"delete_snapshot"``: deletes the newest ``*.snap`` (``FileNotFoundError`` when there is none);
        - ``"delete_dir"``: deletes the whole group directory (log, vote, snapshots).

        The original is kept under ``backup_dir()``; ``restore(damage)`` puts it back. Returns a ``Damage``.
        """
        if kind not in DAMAGE_KINDS:
            raise InvalidArgument(f"kind must be one of {DAMAGE_KINDS}, got {kind!r}")
        h = self._handle(node)
        if h.running:
            raise NemesisError(f"damage_file: node {node} is running; stop() or kill() it first")
        data_dir = Path(h.data_dir)
        target = self._inside(data_dir, path) if path is not None else None
        group = None if target is not None else self._group_dir(data_dir, collection, shard, meta)
        with self._lock:
            seq = len(self.damages) + 1
        backup = self.backup_dir() / f"{seq:03d}-node{node}-{kind}"

        if kind == "delete_dir":
            victim = target if target is not None else group
            assert victim is not None
            if not victim.is_dir():
                raise FileNotFoundError(f"delete_dir: {victim} is not a directory")
            size = sum(f.stat().st_size for f in victim.rglob("*") if f.is_file())
            shutil.move(str(victim), str(backup))
            d = Damage(node, kind, victim, backup, f"deleted {victim} ({size} bytes)", size_before=size)
            return self._record(d)

        if target is None:
            assert group is not None
            if kind == "delete_snapshot":
                snaps = sorted((group / "snapshots").glob("*.snap"))
                if not snaps:
                    raise FileNotFoundError(f"delete_snapshot: no *.snap in {group / 'snapshots'}")
                target = snaps[-1]
            else:
                segs = sorted((group / "log").glob("*.seg"))
                if not segs:
                    raise FileNotFoundError(f"{kind}: no *.seg in {group / 'log'}")
                target = segs[-1] if kind == "truncate_tail" else self.rng.choice(segs)
        if not target.is_file():
            raise FileNotFoundError(f"{kind}: {target} is not a file")
        size = target.stat().st_size

        if kind == "delete_snapshot":
            shutil.move(str(target), str(backup))
            d = Damage(node, kind, target, backup, f"deleted {target} ({size} bytes)", size_before=size)
            return self._record(d)

        shutil.copy2(target, backup)
        if kind == "truncate_tail":
            if size == 0:
                raise NemesisError(f"truncate_tail: {target} is empty")
            n = self.rng.randint(1, min(32, size)) if nbytes is None else int(nbytes)
            if not 1 <= n <= size:
                raise InvalidArgument(f"nbytes must be in 1..{size} (the file size), got {nbytes!r}")
            with open(target, "r+b") as f:
                f.seek(size - n)
                cut = f.read(n)
                f.truncate(size - n)
                f.flush()
                os.fsync(f.fileno())
            d = Damage(
                node, kind, target, backup, f"cut {n} of {size} bytes off {target}", size, size - n, size - n, cut
            )
            return self._record(d)

        # flip_byte
        if size == 0:
            raise NemesisError(f"flip_byte: {target} is empty")
        off = self.rng.randrange(size) if offset is None else int(offset)
        if not 0 <= off < size:
            raise InvalidArgument(f"offset must be in 0..{size - 1} (the file size - 1), got {offset!r}")
        with open(target, "r+b") as f:
            f.seek(off)
            old = f.read(1)
            new = bytes([old[0] ^ 0xFF])
            f.seek(off)
            f.write(new)
            f.flush()
            os.fsync(f.fileno())
        d = Damage(
            node,
            kind,
            target,
            backup,
            f"flipped byte {off} of {target} ({old.hex()} -> {new.hex()})",
            size,
            size,
            off,
            old,
            new,
        )
        return self._record(d)

    def _record(self, d: Damage) -> Damage:
        with self._lock:
            self.damages.append(d)
        self.log(f"damage_file {d.kind}", f"node {d.node}: {d.detail} (original in {d.backup})")
        return d

    def restore(self, damage: Damage) -> None:
        """Puts back what ``damage`` changed or deleted; the node must be stopped. Whatever the node wrote there
        since is replaced."""
        h = self._handle(damage.node)
        if h.running:
            raise NemesisError(f"restore: node {damage.node} is running; stop() or kill() it first")
        if damage.restored:
            return
        p = damage.path
        if damage.kind in ("delete_dir", "delete_snapshot"):
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
            p.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(damage.backup), str(p))
        else:
            shutil.copy2(damage.backup, p)
        damage.restored = True
        self.log("restore", f"node {damage.node}: {p} ({damage.kind} undone)")
