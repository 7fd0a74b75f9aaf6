"""The fault matrix (issue "Integrity", item 8): owns the bounded Jepsen-style scenarios that run client workloads
on a 3-node local cluster while ``shoal.nemesis`` injects faults, then check the recorded histories with
``shoal.history`` (linearizable registers, add-only set with no acknowledged insert lost), and the smoke test of
``Nemesis.damage_file``.

Each scenario: a collection with shards=2, replication_factor=3, dim 4; ``REGISTER_CLIENTS`` threads read (strong)
and write (payload {"v": unique int}; half the threads at quorum, half at strong or quorum) a handful of register
keys, ``SET_CLIENTS`` threads upsert fresh ids at quorum; every thread has its own ``shoal.connect`` client over all
addresses (rotated, so different nodes coordinate). The nemesis injects its faults in rounds (fault, hold,
heal_all, settle) for the scenario's duration; then the clients stop, everything is healed, the cluster must become
green, the registers and the set are read at strong, and the histories are checked. Each scenario prints a
markdown table row (ops ok / failed / indeterminate, availability during fault windows, anomalies, acknowledged
inserts lost), also appended to the file named by ``SHOAL_FAULTS_TABLE`` when set. The histories, the checkers'
explanations and the nemesis timeline of each scenario are saved in the cluster's data dir (``history-*``), which
the ``shoal_cluster`` fixture keeps when the test fails.

    .venv/bin/python -m pytest tests/test_faults.py -s                          # bounded: ~10 s per scenario
    SHOAL_FAULTS_LONG=1 .venv/bin/python -m pytest tests/test_faults.py -s      # 90 s per scenario, 2 runs each

Environment: ``SHOAL_FAULTS_LONG=1`` (long matrix), ``SHOAL_FAULTS_SECONDS`` (workload seconds per scenario),
``SHOAL_FAULTS_ROUNDS`` (runs of each scenario), ``SHOAL_FAULTS_SEED`` (base seed; printed with every row),
``SHOAL_FAULTS_TABLE`` (file the table rows are appended to). Nothing here asserts a duration; every wait is bounded.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import shoal
from shoal.history import History, Op, check_register, check_set
from shoal.nemesis import DAMAGE_KINDS, FAULTS, Nemesis, NemesisError

LONG = os.environ.get("SHOAL_FAULTS_LONG", "") not in ("", "0")
DURATION = float(os.environ.get("SHOAL_FAULTS_SECONDS") or (90.0 if LONG else 10.0))
ROUNDS = int(os.environ.get("SHOAL_FAULTS_ROUNDS") or (2 if LONG else 1))
BASE_SEED = int(os.environ.get("SHOAL_FAULTS_SEED") or random.SystemRandom().randrange(1 << 30))
TABLE_FILE = os.environ.get("SHOAL_FAULTS_TABLE")

DIM = 4
SHARDS = 2
RF = 3
KEYS = tuple(range(6))  # register ids: both shards hold some
SET_BASE = 1_000_000  # set ids: SET_BASE + n, fresh for every add
SET_BATCH = 4  # ids per set add
REGISTER_CLIENTS = 4  # even ones write at quorum only, odd ones at strong or quorum
SET_CLIENTS = 1
OP_TIMEOUT = 3.0  # seconds per client call
STRONG_TIMEOUT = 1.5  # seconds per strong write: with a voter unreachable it fails only at its deadline
PACE = 0.004  # seconds between a client's calls: keeps histories checkable
ERROR_BACKOFF = 0.05  # seconds a client waits after an error (a node down fails calls at once)
GREEN_WITHIN = 90.0  # seconds for the cluster to become green after the last heal
FINAL_WITHIN = 60.0  # seconds for the final strong reads to succeed
MAX_STATES = 1_000_000  # per key, for check_register
SMALL_HISTORY = 4000  # register ops: an unknown verdict on a history this small counts as a failure
DEFINITE = (shoal.InvalidArgument, shoal.CollectionNotFound, shoal.CollectionExists)


@dataclass(frozen=True)
class Scenario:
    name: str
    faults: tuple[str, ...]  # FAULTS names; one is drawn per round
    hold: float  # seconds a fault stays in effect before heal_all
    settle: float  # seconds without fault after each heal
    warmup: float = 2.0  # seconds of workload before the first fault


SCENARIOS = (
    Scenario("kill_random", ("kill",), hold=4.0, settle=2.0),
    Scenario("kill_leader", ("kill_leader",), hold=4.0, settle=2.0),
    Scenario("pause_leader", ("pause_leader",), hold=4.0, settle=2.0),
    Scenario("partition_minority", ("partition",), hold=5.0, settle=2.0),
    Scenario("partition_leader", ("partition_leader",), hold=5.0, settle=2.0),
    Scenario("restart_all", ("restart_all",), hold=0.0, settle=4.0),
    Scenario("clock_skew", ("skew",), hold=6.0, settle=2.0),
    Scenario("damage", ("damage",), hold=2.0, settle=3.0),
    Scenario("mixed", FAULTS, hold=3.0, settle=1.5),
)


# --- workload ------------------------------------------------------------------------------------------------------


def _vec(i: int) -> np.ndarray:
    return np.array([[1.0 + (i % 7), 0.5, 0.25, 0.125]], dtype=np.float32)


class Workload:
    """Client threads recording a register history (``reg``) and an add-only set history (``set``)."""

    def __init__(self, addresses: list[str], coll_name: str, seed: int, credentials: shoal.Credentials | None) -> None:
        self.addresses = addresses
        self.credentials = credentials
        self.coll_name = coll_name
        self.seed = seed
        self.reg = History()
        self.set = History()
        self.stop_event = threading.Event()
        self.values = itertools.count(1)
        self.set_ids = itertools.count(SET_BASE)
        self.unexpected: list[str] = []
        self.threads: list[threading.Thread] = []
        self.clients: list[shoal.Cluster] = []

    def _client(self, p: int) -> shoal.Collection:
        k = p % len(self.addresses)
        c = shoal.connect(self.addresses[k:] + self.addresses[:k], credentials=self.credentials)
        self.clients.append(c)
        return c.collection(self.coll_name, timeout=10)

    def start(self) -> None:
        targets = [(self._register_loop, p) for p in range(REGISTER_CLIENTS)]
        targets += [(self._set_loop, REGISTER_CLIENTS + p) for p in range(SET_CLIENTS)]
        for fn, p in targets:
            coll = self._client(p)  # connect before any fault
            t = threading.Thread(target=self._guard, args=(fn, p, coll), name=f"client-{p}", daemon=True)
            self.threads.append(t)
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=4 * OP_TIMEOUT + 30)
        hung = [t.name for t in self.threads if t.is_alive()]
        for c in self.clients:
            c.close()
        assert not hung, f"client threads did not end: {hung}"

    def _guard(self, fn: Any, p: int, coll: shoal.Collection) -> None:
        try:
            fn(p, coll)
        except BaseException as e:  # reported by the test
            self.unexpected.append(f"client {p}: {type(e).__name__}: {e}")

    def _register_loop(self, p: int, coll: shoal.Collection) -> None:
        rng = random.Random(self.seed * 1000 + p)
        levels = ("quorum",) if p % 2 == 0 else ("strong", "quorum")
        while not self.stop_event.is_set():
            key = rng.choice(KEYS)
            if rng.random() < 0.5:
                v = next(self.values)
                level = rng.choice(levels)
                timeout = STRONG_TIMEOUT if level == "strong" else OP_TIMEOUT
                op = self.reg.invoke(p, "write", key, v)
                try:
                    coll.upsert([key], _vec(v), payloads=[{"v": v}], consistency=level, timeout=timeout)
                except DEFINITE as e:
                    self.reg.fail(op, e)
                    time.sleep(ERROR_BACKOFF)
                except shoal.ShoalError as e:
                    self.reg.info(op, e)
                    time.sleep(ERROR_BACKOFF)
                except BaseException as e:
                    self.reg.info(op, e)
                    raise
                else:
                    self.reg.ok(op)
            elif not read_register(self.reg, coll, p, key):
                time.sleep(ERROR_BACKOFF)
            time.sleep(PACE)

    def _set_loop(self, p: int, coll: shoal.Collection) -> None:
        while not self.stop_event.is_set():
            ids = [next(self.set_ids) for _ in range(SET_BATCH)]
            op = self.set.invoke(p, "add", None, ids)
            try:
                coll.upsert(ids, np.repeat(_vec(ids[0]), len(ids), axis=0), consistency="quorum", timeout=OP_TIMEOUT)
            except DEFINITE as e:
                self.set.fail(op, e)
                time.sleep(ERROR_BACKOFF)
            except shoal.ShoalError as e:
                self.set.info(op, e)
                time.sleep(ERROR_BACKOFF)
            except BaseException as e:
                self.set.info(op, e)
                raise
            else:
                self.set.ok(op)
            time.sleep(PACE)


def read_register(h: History, coll: shoal.Collection, process: int | str, key: int) -> bool:
    """One strong read of register ``key``, recorded in ``h`` (a read that raises is recorded as failed)."""
    op = h.invoke(process, "read", key)
    try:
        pts = coll.get([key], with_vectors=False, consistency="strong", timeout=OP_TIMEOUT)
    except shoal.ShoalError as e:
        h.fail(op, e)
        return False
    h.ok(op, pts.payloads[0].get("v") if len(pts) else None)
    return True


# --- checks and reporting ------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    scenario: str
    seed: int
    seconds: float
    faults: list[str] = field(default_factory=list)  # FAULTS names, one per round
    details: list[str] = field(default_factory=list)  # what each round did
    ok: int = 0
    failed: int = 0
    indeterminate: int = 0
    in_fault_ok: int = 0
    in_fault: int = 0
    register: str = ""
    set: str = ""
    lost: int = 0
    anomalies: list[str] = field(default_factory=list)

    HEADER = (
        "| scenario | seed | s | faults | ops ok | failed | indeterminate | avail. in faults | register | set "
        "| acked lost | anomalies |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    )

    def fault_counts(self) -> str:
        counts = Counter(self.faults)
        return ", ".join(f"{k} x{n}" for k, n in sorted(counts.items())) or "none"

    def row(self) -> str:
        avail = (
            f"{self.in_fault_ok}/{self.in_fault} ({100 * self.in_fault_ok / self.in_fault:.0f}%)"
            if self.in_fault
            else "n/a"
        )
        return (
            f"| {self.scenario} | {self.seed} | {self.seconds:.0f} | {self.fault_counts()} | {self.ok} | {self.failed} "
            f"| {self.indeterminate} | {avail} | {self.register} | {self.set} | {self.lost} "
            f"| {'; '.join(self.anomalies) or 'none'} |"
        )


_printed_header = False


def report(out: Outcome) -> None:
    global _printed_header
    if not _printed_header:
        print("\n" + Outcome.HEADER)
        _printed_header = True
    print(out.row())
    if TABLE_FILE:
        path = Path(TABLE_FILE)
        new = not path.exists() or path.stat().st_size == 0
        with open(path, "a") as f:
            f.write((Outcome.HEADER + "\n" if new else "") + out.row() + "\n")


def _jsonable(v: Any) -> Any:
    if isinstance(v, (set, frozenset)):
        return sorted(v)
    return v


def save_history(path: Path, ops: list[Op]) -> None:
    with open(path, "w") as f:
        for o in ops:
            f.write(
                json.dumps(
                    {
                        "process": o.process,
                        "kind": o.kind,
                        "key": o.key,
                        "value": _jsonable(o.value),
                        "invoke_t": o.invoke_t,
                        "complete_t": o.complete_t,
                        "status": o.status,
                        "error": o.error,
                    }
                )
                + "\n"
            )


def wait_green(cluster: shoal.Cluster, within: float) -> shoal.Health | None:
    """Polls health until green, at most ``within`` seconds; returns the last health if it never was."""
    deadline = time.monotonic() + within
    h: shoal.Health | None = None
    while True:
        h = cluster.health(timeout=3)
        if h.status == "green":
            return None
        if time.monotonic() >= deadline:
            return h
        time.sleep(0.25)


def final_reads(w: Workload, nem: Nemesis) -> None:
    """After healing: a strong read of every register key and of every set id ever attempted (bounded retries)."""
    with shoal.connect(w.addresses, credentials=w.credentials) as c:
        coll = c.collection(w.coll_name, timeout=10)
        deadline = time.monotonic() + FINAL_WITHIN
        for key in KEYS:
            while not read_register(w.reg, coll, "final", key) and time.monotonic() < deadline:
                time.sleep(0.25)
        attempted = sorted({x for o in w.set.ops() if o.kind == "add" for x in o.value})
        while True:
            op = w.set.invoke("final", "read")
            try:
                pts = coll.get(attempted, with_vectors=False, consistency="strong", timeout=10)
            except shoal.ShoalError as e:
                w.set.fail(op, e)
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.5)
                continue
            w.set.ok(op, frozenset(int(i) for i in pts.ids.tolist()))
            break
    nem.log("final reads", f"{len(KEYS)} keys, {len(attempted)} set ids")


def drive(nem: Nemesis, coll: shoal.Collection, sc: Scenario, rng: random.Random, out: Outcome, end: float) -> None:
    """The nemesis schedule: rounds of fault, hold, heal_all, settle until ``end``."""
    time.sleep(sc.warmup)
    while time.monotonic() + max(sc.hold, 1.0) < end:
        fault = rng.choice(sc.faults)
        out.faults.append(fault)
        out.details.append(nem.inject(fault, coll))
        time.sleep(max(0.0, min(sc.hold, end - time.monotonic())))
        nem.heal_all()
        time.sleep(max(0.0, min(sc.settle, end - time.monotonic())))


# --- the matrix ----------------------------------------------------------------------------------------------------


@pytest.mark.shoal(nodes=3)
@pytest.mark.parametrize("round_", range(ROUNDS), ids=lambda r: f"r{r}")
@pytest.mark.parametrize("sc", SCENARIOS, ids=lambda s: s.name)
def test_fault_matrix(shoal_cluster: shoal.Cluster, sc: Scenario, round_: int) -> None:
    seed = BASE_SEED + 7919 * round_ + sum(map(ord, sc.name))
    nem: Nemesis = shoal_cluster.nemesis  # type: ignore[attr-defined]
    nem.rng.seed(seed)
    rng = random.Random(seed)
    coll = shoal_cluster.create_collection("faults", dim=DIM, shards=SHARDS, replication_factor=RF, index="flat")
    for s in range(SHARDS):
        nem.leader_of(coll, s)  # every shard has a leader before the clients start
    data_dir = shoal_cluster.data_dir
    assert data_dir is not None

    w = Workload(shoal_cluster.addresses(), coll.name, seed, shoal_cluster.credentials)
    out = Outcome(sc.name, seed, DURATION)
    nem.log("scenario", f"{sc.name} seed {seed} for {DURATION:g} s")
    t0 = time.monotonic()
    w.start()
    try:
        drive(nem, coll, sc, rng, out, t0 + DURATION)
        time.sleep(max(0.0, t0 + DURATION - time.monotonic()))
    finally:
        w.stop()
        nem.log("clients stopped", "")
        nem.heal_all()
    out.seconds = time.monotonic() - t0
    not_green = wait_green(shoal_cluster, GREEN_WITHIN)
    nem.log("health", "green" if not_green is None else f"not green: {not_green!r}")
    final_reads(w, nem)

    reg_ops, set_ops = w.reg.ops(), w.set.ops()
    save_history(data_dir / f"history-{sc.name}-register.jsonl", reg_ops)
    save_history(data_dir / f"history-{sc.name}-set.jsonl", set_ops)
    workload = [o for o in reg_ops + set_ops if o.process != "final"]
    out.ok = sum(o.status == "ok" for o in workload)
    out.failed = sum(o.status == "fail" for o in workload)
    out.indeterminate = sum(o.status == "info" for o in workload)
    during = [o for o in workload if nem.in_fault(o.invoke_t)]
    out.in_fault, out.in_fault_ok = len(during), sum(o.status == "ok" for o in during)

    reg = check_register(reg_ops, max_states=MAX_STATES)
    st = check_set(set_ops)
    out.register = {True: "valid", False: "INVALID", None: "unknown"}[reg.valid]
    out.set = {True: "valid", False: "INVALID", None: "unknown"}[st.valid]
    out.lost = len(st.lost)
    if reg.valid is False:
        out.anomalies.append(f"non-linearizable register {reg.key}")
    if reg.valid is None and len(reg_ops) <= SMALL_HISTORY:
        out.anomalies.append(f"register check gave up on key {reg.key} ({len(reg_ops)} ops)")
    if st.lost:
        out.anomalies.append(f"{len(st.lost)} acknowledged inserts lost")
    if st.unexpected or st.failed_present:
        out.anomalies.append(f"set: {len(st.unexpected)} unexpected, {len(st.failed_present)} failed-but-present")
    if st.valid is None:
        out.anomalies.append("no final set read")
    if not_green is not None:
        out.anomalies.append("not green after heal")
    if w.unexpected:
        out.anomalies.append(f"{len(w.unexpected)} client errors")
    report(out)

    explanation = "\n\n".join(
        [
            f"scenario {sc.name}, seed {seed}, data dir {data_dir}",
            f"register: {reg.valid} ({reg.states} states)\n{reg.explanation}",
            f"set:\n{st.explanation}",
            f"health after heal: {'green' if not_green is None else repr(not_green)}",
            "faults: " + "; ".join(out.details),
            "nemesis timeline:\n" + nem.timeline(since=t0),
        ]
    )
    (data_dir / f"history-{sc.name}-explanation.txt").write_text(explanation + "\n")
    if reg.valid is None:
        print(f"\n{sc.name}: register check unknown: {reg.explanation}")
    assert not w.unexpected, w.unexpected
    assert not st.lost, f"acknowledged inserts lost:\n{explanation}"
    assert st.valid is True, explanation
    assert reg.valid is not False, explanation
    assert reg.valid is True or len(reg_ops) > SMALL_HISTORY, explanation
    assert not_green is None, f"the cluster did not become green within {GREEN_WITHIN:g} s after healing: {not_green!r}"
    assert out.faults, f"{sc.name}: no fault was injected in {DURATION:g} s"
    assert out.ok > 0, "no operation succeeded at all"


# --- damage_file (no cluster behaviour asserted: corruption handling is being built) ---------------------------------


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _tree(d: Path) -> dict[str, str]:
    return {str(f.relative_to(d)): _digest(f) for f in sorted(d.rglob("*")) if f.is_file()}


@pytest.mark.shoal(nodes=3, node_args=["--raft-snapshot-every", "10"])
def test_damage_file_changes_the_right_file_on_a_stopped_node(shoal_cluster: shoal.Cluster) -> None:
    nem: Nemesis = shoal_cluster.nemesis  # type: ignore[attr-defined]
    nem.rng.seed(BASE_SEED)
    coll = shoal_cluster.create_collection("dmg", dim=DIM, shards=SHARDS, replication_factor=RF, index="flat")
    for i in range(40):  # one log entry each: enough for snapshots every 10 entries on both shards
        coll.upsert([i], _vec(i), payloads=[{"v": i}], consistency="strong", timeout=10)
    with pytest.raises(NemesisError, match="running"):
        nem.damage_file(2, "flip_byte", collection=coll, shard=0)
    with pytest.raises(shoal.InvalidArgument):
        nem.skew_clock(2, 40_000)
    with pytest.raises(shoal.InvalidArgument):
        nem.damage_file(2, "melt")
    node = nem.stop(2)
    data = shoal_cluster.node(node).data_dir
    shard0 = Nemesis.shard_dir(data, coll, 0)
    assert shard0.parent.parent == data / "shards" and shard0.parent.name.startswith("dmg@"), shard0
    before = _tree(data)

    segs = sorted((shard0 / "log").glob("*.seg"))
    assert segs, f"no log segments in {shard0 / 'log'}: {sorted(p.name for p in shard0.rglob('*'))}"
    d = nem.damage_file(node, "truncate_tail", collection=coll, shard=0, nbytes=5)
    assert d.path == segs[-1] and d.size_after == d.size_before - 5 == d.path.stat().st_size
    assert d.backup.read_bytes()[-5:] == d.before and len(d.before) == 5
    nem.restore(d)
    assert _digest(d.path) == before[str(d.path.relative_to(data))]

    d = nem.damage_file(node, "flip_byte", path=segs[0].relative_to(data), offset=3)
    assert d.path == segs[0] and d.offset == 3 and d.after == bytes([d.before[0] ^ 0xFF])
    assert d.path.read_bytes()[3:4] == d.after and d.path.stat().st_size == d.size_before
    nem.restore(d)
    assert _digest(d.path) == before[str(d.path.relative_to(data))]

    d = nem.damage_file(node, "truncate_tail", meta=True, nbytes=1)
    assert d.path.parent == data / "meta" / "log" and d.path.suffix == ".seg" and d.size_after == d.size_before - 1
    nem.restore(d)

    snaps = sorted((shard0 / "snapshots").glob("*.snap"))
    assert snaps, f"no snapshot in {shard0 / 'snapshots'} after 40 writes with --raft-snapshot-every 10"
    d = nem.damage_file(node, "delete_snapshot", collection=coll, shard=0)
    assert d.path == snaps[-1] and not d.path.exists() and d.backup.is_file()
    nem.restore(d)

    d = nem.damage_file(node, "delete_dir", collection=coll, shard=1)
    assert d.path == shard0.parent / "1"
    assert not d.path.exists() and (d.backup / "log").is_dir()
    nem.restore(d)

    assert _tree(data) == before, "every damage was undone byte for byte"
    assert {k for _, k, _ in nem.events if k.startswith("damage_file")} == {f"damage_file {k}" for k in DAMAGE_KINDS}
    # The node stays stopped: the fixture's teardown (heal_all) starts it without asserting anything about it.
