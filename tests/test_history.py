"""Unit tests of shoal.history (operation histories, register linearizability and add-only set checkers).

Pure Python, no node process. ``shoal/__init__.py`` imports the compiled extension, so when the package cannot be
imported the module is loaded from its file (it imports nothing from the package).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import random
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


def _load_history() -> ModuleType:
    try:
        import shoal.history as mod

        return mod
    except ImportError:
        path = Path(__file__).resolve().parents[1] / "python" / "shoal" / "history.py"
        spec = importlib.util.spec_from_file_location("_shoal_history_under_test", path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod  # dataclasses look their module up in sys.modules
        spec.loader.exec_module(mod)
        return mod


hist = _load_history()
History, Op, check_register, check_set = hist.History, hist.Op, hist.check_register, hist.check_set


def w(process: Any, value: Any, t0: float, t1: float | None, status: str = "ok", key: Any = None) -> Any:
    """A write; ``t1=None`` makes it indeterminate (info)."""
    return Op(process, "write", key, value, t0, t1, "info" if t1 is None else status)


def r(process: Any, value: Any, t0: float, t1: float, key: Any = None) -> Any:
    """An ok read of ``value``."""
    return Op(process, "read", key, value, t0, t1, "ok")


# ---------------------------------------------------------------------------------------------------------------------
# History


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


def test_history_records_ops_statuses_and_summary() -> None:
    h = History(clock=FakeClock())
    a = h.invoke(0, "write", key="k", value="v1")  # t=1
    b = h.invoke(1, "read", key="k")  # t=2
    c = h.invoke("c", "write", key="k", value="v2")  # t=3
    d = h.invoke(2, "write", key="k", value="v3")  # t=4
    e = h.invoke(3, "read", key="k")  # t=5, never completed
    h.ok(a)  # t=6, keeps the written value
    h.ok(b, "v1")  # t=7
    h.fail(c, ValueError("bad"))  # t=8
    h.info(d, "timed out")
    ops = h.ops()
    assert [o.status for o in ops] == ["ok", "ok", "fail", "info", "info"]
    assert (ops[0].value, ops[0].invoke_t, ops[0].complete_t) == ("v1", 1.0, 6.0)
    assert (ops[1].kind, ops[1].value, ops[1].complete_t) == ("read", "v1", 7.0)
    assert (ops[2].error, ops[2].complete_t) == ("ValueError: bad", 8.0)
    assert (ops[3].error, ops[3].complete_t, ops[3].value) == ("timed out", None, "v3")
    assert (ops[4].complete_t, ops[4].error) == (None, "not completed")
    assert h.summary() == {"write": {"ok": 1, "fail": 1, "info": 1}, "read": {"ok": 1, "fail": 0, "info": 1}}
    assert len(h) == 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        ops[0].value = "x"  # frozen
    with pytest.raises(ValueError, match="already completed"):
        h.ok(a)
    with pytest.raises(ValueError, match="not a handle"):
        History().ok(e)
    h.ok(e, None)  # a read of an absent value
    assert h.ops()[4].status == "ok" and h.ops()[4].value is None


def test_op_invariants_are_enforced() -> None:
    with pytest.raises(ValueError):
        Op(0, "write", None, 1, 0.0, None, "ok")  # ok needs a completion
    with pytest.raises(ValueError):
        Op(0, "write", None, 1, 1.0, 0.5, "fail")  # completion before invocation
    with pytest.raises(ValueError):
        Op(0, "write", None, 1, 0.0, 1.0, "info")  # info stays open forever
    with pytest.raises(ValueError):
        Op(0, "write", None, 1, 0.0, 1.0, "maybe")


def test_history_from_threads_on_a_locked_register_is_linearizable() -> None:
    h = History()
    lock = threading.Lock()
    register: dict[str, int] = {}

    def client(p: int) -> None:
        rng = random.Random(p)
        for i in range(100):
            key = f"k{rng.randrange(3)}"
            if rng.random() < 0.5:
                op = h.invoke(p, "write", key, p * 1000 + i)
                with lock:
                    register[key] = p * 1000 + i
                h.ok(op)
            else:
                op = h.invoke(p, "read", key)
                with lock:
                    value = register.get(key)
                h.ok(op, value)

    threads = [threading.Thread(target=client, args=(p,)) for p in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ops = h.ops()
    assert len(ops) == 600 and all(o.status == "ok" for o in ops)
    assert all(a.invoke_t <= b.invoke_t for a, b in zip(ops, ops[1:]))
    res = check_register(ops)
    assert res.valid is True, res.explanation


# ---------------------------------------------------------------------------------------------------------------------
# Register: small histories


def test_stale_read_after_acknowledged_write_is_invalid() -> None:
    ops = [w("A", "v1", 0.0, 1.0), w("B", "v2", 2.0, 3.0), r("R", "v1", 4.0, 5.0)]
    res = check_register(ops)
    assert res.valid is False
    assert res.key is None
    assert res.op == ops[2]
    assert [o.value for o in res.prefix] == ["v1", "v2"]
    assert "process 'R' read 'v1' [4.000000, 5.000000] ok" in res.explanation
    assert "register holds 'v2'" in res.explanation
    # The same read while the second write is in flight is fine.
    assert check_register([ops[0], ops[1], r("R", "v1", 2.5, 5.0)]).valid is True


def test_concurrent_writes_read_in_either_order_are_valid() -> None:
    writes = [w("A", "v1", 0.0, 10.0), w("B", "v2", 0.0, 10.0)]
    assert check_register(writes + [r("R", "v1", 1.0, 2.0), r("R", "v2", 3.0, 4.0)]).valid is True
    assert check_register(writes + [r("R", "v2", 1.0, 2.0), r("R", "v1", 3.0, 4.0)]).valid is True
    for last in ("v1", "v2"):
        assert check_register(writes + [r("R", last, 11.0, 12.0), r("S", last, 13.0, 14.0)]).valid is True
    # Once both have completed the value is settled: later reads cannot see v2 and then v1.
    assert check_register(writes + [r("R", "v2", 11.0, 12.0), r("R", "v1", 13.0, 14.0)]).valid is False


def test_indeterminate_write_that_shows_up_later_is_valid() -> None:
    ops = [w("A", "v1", 0.0, None), r("R", None, 1.0, 2.0), r("R", None, 3.0, 4.0), r("R", "v1", 50.0, 51.0)]
    assert check_register(ops).valid is True
    # An indeterminate write nobody reads never has to happen, even amid acknowledged writes.
    assert check_register([w("A", "lost", 0.0, None), w("B", "v2", 1.0, 2.0), r("R", "v2", 3.0, 4.0)]).valid is True


def test_indeterminate_write_that_disappears_and_reappears_is_invalid() -> None:
    ops = [w("A", "v1", 0.0, None), r("R", "v1", 1.0, 2.0), r("R", None, 3.0, 4.0), r("R", "v1", 5.0, 6.0)]
    res = check_register(ops)
    assert res.valid is False
    assert res.op is not None and res.op.kind == "read"
    assert "not linearizable" in res.explanation


def test_failed_ops_never_happened() -> None:
    # A failed write that is read: invalid, and the message says the only writer failed.
    res = check_register([w("A", "v1", 0.0, 1.0, status="fail"), r("R", "v1", 2.0, 3.0)])
    assert res.valid is False and "failed" in res.explanation
    # Failed writes and non-ok reads are ignored otherwise.
    ops = [
        w("A", "v1", 0.0, 1.0),
        w("B", "v2", 2.0, 3.0, status="fail"),
        Op("R", "read", None, "garbage", 4.0, 5.0, "fail"),
        Op("S", "read", None, None, 4.0, None, "info"),
        r("R", "v1", 6.0, 7.0),
    ]
    assert check_register(ops).valid is True


def test_read_of_a_value_never_written_is_invalid() -> None:
    res = check_register([w("A", 1, 0.0, 1.0), r("R", 1, 2.0, 3.0), r("R", 99, 4.0, 5.0)])
    assert res.valid is False
    assert res.op is not None and res.op.value == 99
    assert "99" in res.explanation and "no write" in res.explanation
    # The initial value counts as written.
    assert check_register([r("R", 0, 0.0, 1.0), w("A", 1, 2.0, 3.0)], initial=0).valid is True
    assert check_register([r("R", None, 0.0, 1.0)], initial=0).valid is False


def test_read_of_a_value_before_it_was_written_is_invalid() -> None:
    res = check_register([r("R", "v1", 0.0, 1.0), w("A", "v1", 2.0, 3.0)])
    assert res.valid is False and res.prefix == ()
    assert "none" in res.explanation


def test_staged_history_from_the_bug_report() -> None:
    # A's write of v1 is indeterminate; R reads v1, B then writes v2 (ok); R still reads v1 much later.
    staged = [
        w("A", "v1", 0.0086, None),
        r("R", "v1", 0.031, 0.0315),
        w("B", "v2", 0.032, 0.035),
    ]
    last = r("R", "v1", 0.755, 0.7555)
    res = check_register(staged + [last])
    assert res.valid is False, res.explanation
    assert res.op == last
    assert [o.process for o in res.prefix] == ["A", "R", "B"]
    assert "0.755000" in res.explanation and "register holds 'v2'" in res.explanation
    assert check_register(staged).valid is True


def test_keys_are_checked_separately_and_the_bad_key_is_reported() -> None:
    ops = [
        w("A", "a1", 0.0, 1.0, key="a"),
        w("B", "b1", 0.0, 1.0, key="b"),
        w("A", "a2", 2.0, 3.0, key="a"),
        w("B", "b2", 2.0, 3.0, key="b"),
        r("C", "a2", 4.0, 5.0, key="a"),
        r("C", "b1", 4.0, 5.0, key="b"),  # stale
        r("D", None, 0.0, 0.5, key="c"),
        # the same value on another key does not make key "b" valid
        w("E", "b1", 6.0, 7.0, key="a"),
    ]
    res = check_register(ops)
    assert res.valid is False
    assert res.key == "b"
    assert "key 'b'" in res.explanation
    assert check_register([o for o in ops if o.key != "b"]).valid is True


def test_unknown_kinds_are_rejected() -> None:
    with pytest.raises(ValueError, match="cas"):
        check_register([Op(0, "cas", None, (1, 2), 0.0, 1.0, "ok")])


# ---------------------------------------------------------------------------------------------------------------------
# Register: randomized histories


def simulate_register(
    seed: int, processes: int = 8, ops_per_process: int = 250, info_rate: float = 0.02, fail_rate: float = 0.02
) -> list[Any]:
    """A history of a real linearizable register: each process runs ops back to back over random, overlapping
    intervals; each op that takes effect does so at a random instant inside its interval, and reads return the
    register's value at that instant. Info writes take effect at a random later instant (half of them never);
    failed writes never take effect."""
    rng = random.Random(seed)
    ops: list[dict[str, Any]] = []
    for p in range(processes):
        t = rng.random() * 0.01
        for _ in range(ops_per_process):
            t0 = t
            t1 = t0 + rng.expovariate(1 / 0.004)
            t = t1 + rng.expovariate(1 / 0.001)
            kind = "read" if rng.random() < 0.5 else "write"
            status = "ok"
            if kind == "write":
                u = rng.random()
                status = "info" if u < info_rate else "fail" if u < info_rate + fail_rate else "ok"
            if status == "ok":
                effect = rng.uniform(t0, t1)
            elif status == "info":
                effect = rng.uniform(t0, t1 + 0.05) if rng.random() < 0.5 else float("inf")
            else:
                effect = float("inf")
            ops.append(
                {
                    "p": p,
                    "kind": kind,
                    "t0": t0,
                    "t1": t1,
                    "status": status,
                    "effect": effect,
                    "value": f"{p}-{len(ops)}" if kind == "write" else None,
                }
            )
    value = None
    for op in sorted(ops, key=lambda o: o["effect"]):
        if op["effect"] == float("inf"):
            break
        if op["kind"] == "write":
            value = op["value"]
        else:
            op["value"] = value
    return [
        Op(o["p"], o["kind"], None, o["value"], o["t0"], None if o["status"] == "info" else o["t1"], o["status"])
        for o in ops
    ]


def test_randomized_linearizable_history_checks_valid_quickly() -> None:
    ops = simulate_register(seed=7)
    assert len(ops) == 2000
    assert sum(o.status == "info" for o in ops) > 5
    t = time.perf_counter()
    res = check_register(ops)
    elapsed = time.perf_counter() - t
    assert res.valid is True, res.explanation
    assert elapsed < 2.0, f"2,000 ops took {elapsed:.2f} s"


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_randomized_history_with_one_stale_read_is_invalid(seed: int) -> None:
    ops = simulate_register(seed=seed, processes=8, ops_per_process=250)
    # Make a read late in the history return the value of a write that completed long before it started.
    reads = sorted((o for o in ops if o.kind == "read" and o.status == "ok"), key=lambda o: o.invoke_t)
    victim = reads[len(reads) * 3 // 4]
    old = next(o for o in ops if o.kind == "write" and o.status == "ok" and o.complete_t < victim.invoke_t - 0.1)
    stale = Op(victim.process, "read", None, old.value, victim.invoke_t, victim.complete_t, "ok")
    bad = [stale if o is victim else o for o in ops]
    t = time.perf_counter()
    res = check_register(bad)
    elapsed = time.perf_counter() - t
    assert res.valid is False
    # The evidence names the stale read: as the op that cannot be linearized, or as a read of the write that cannot.
    assert stale.describe() in res.explanation, res.explanation
    assert elapsed < 2.0, f"took {elapsed:.2f} s"


def brute_force_linearizable(ops: list[Any], initial: Any = None) -> bool:
    """Every order of the ops that respects real time, each info write taken or left out: for tiny histories."""
    ops = [o for o in ops if o.status != "fail" and (o.kind == "write" or o.status == "ok")]
    end = [float("inf") if o.complete_t is None else o.complete_t for o in ops]

    def search(remaining: frozenset[int], value: Any) -> bool:
        if all(ops[i].status == "info" for i in remaining):
            return True
        for x in remaining:
            if any(end[y] < ops[x].invoke_t for y in remaining):
                continue  # some op that returned before x was invoked must come first
            if ops[x].kind == "write":
                if search(remaining - {x}, ops[x].value):
                    return True
            elif ops[x].value == value and search(remaining - {x}, value):
                return True
        return False

    return search(frozenset(range(len(ops))), initial)


def test_agrees_with_brute_force_on_small_random_histories() -> None:
    rng = random.Random(2024)
    verdicts = {True: 0, False: 0}
    for _ in range(1500):
        unique = rng.random() < 0.5  # values written once (and read back), or a few values written many times
        values = list(range(rng.randint(1, 5)))
        read_share = rng.random()
        ops = []
        written: list[int] = []
        for i in range(rng.randint(1, 7)):
            t0 = float(rng.randint(0, 12))
            t1 = t0 + rng.randint(0, 6)  # integer times: many ties
            status = rng.choices(["ok", "info", "fail"], [6, 2, 1])[0]
            if rng.random() < read_share:
                value = rng.choice((written if unique else values) + [None, 0])
                ops.append(Op(i, "read", None, value, t0, t1, "ok"))
            else:
                value = 100 + i if unique else rng.choice(values)
                written.append(value)
                ops.append(Op(i, "write", None, value, t0, None if status == "info" else t1, status))
        initial = rng.choice([None, 0])
        expected = brute_force_linearizable(ops, initial)
        verdicts[expected] += 1
        assert check_register(ops, initial=initial).valid is expected, ops
    assert min(verdicts.values()) > 300


def test_state_bound_gives_unknown() -> None:
    ops = simulate_register(seed=3, processes=4, ops_per_process=50)
    res = check_register(ops, max_states=20)
    assert res.valid is None
    assert "max_states" in res.explanation
    assert check_register(ops).valid is True


# ---------------------------------------------------------------------------------------------------------------------
# Add-only set


def add(process: Any, value: Any, t0: float, t1: float | None, status: str = "ok") -> Any:
    return Op(process, "add", None, value, t0, t1, "info" if t1 is None else status)


def read_set(process: Any, value: Any, t0: float, t1: float) -> Any:
    return Op(process, "read", None, value, t0, t1, "ok")


def test_set_valid_and_recovered() -> None:
    ops = [
        add(0, 1, 0.0, 1.0),
        add(1, [2, 3], 0.0, 1.0),
        add(2, 4, 0.0, None),  # indeterminate, shows up
        add(3, 5, 0.0, None),  # indeterminate, does not
        add(4, 6, 0.0, 1.0, status="fail"),
        add(5, "abc", 0.0, 1.0),  # a str is one element
        read_set(9, {1, 2}, 0.5, 2.0),  # not the final read
        read_set(9, [1, 2, 3, 4, "abc"], 3.0, 4.0),
    ]
    res = check_set(ops)
    assert res.valid is True, res.explanation
    assert res.acknowledged == {1, 2, 3, "abc"}
    assert res.recovered == {4}
    assert not res.lost and not res.unexpected and not res.failed_present
    assert res.final_read == {1, 2, 3, 4, "abc"}


def test_set_lost_and_unexpected() -> None:
    ops = [
        add(0, [1, 2, 3], 0.0, 1.0),
        add(1, 4, 0.0, 1.0, status="fail"),
        read_set(9, [1, 2, 3], 2.0, 3.0),
        Op(8, "read", None, [1, 2, 3], 2.0, 10.0, "fail"),  # ignored
        read_set(9, [1, 3, 7], 4.0, 5.0),  # the final read: 2 lost, 7 never added
    ]
    res = check_set(ops)
    assert res.valid is False
    assert res.lost == {2}
    assert res.unexpected == {7}
    assert "lost (1)" in res.explanation and "unexpected (1)" in res.explanation


def test_set_failed_add_present_is_invalid_and_no_read_is_unknown() -> None:
    res = check_set([add(0, 1, 0.0, 1.0, status="fail"), read_set(9, [1], 2.0, 3.0)])
    assert res.valid is False and res.failed_present == {1} and not res.unexpected
    res = check_set([add(0, 1, 0.0, 1.0)])
    assert res.valid is None and res.acknowledged == {1}


def test_set_add_acknowledged_during_the_final_read_is_not_lost() -> None:
    ops = [add(0, 1, 0.0, 1.0), add(1, 2, 1.5, 2.5), add(2, 3, 3.0, 4.0), read_set(9, [1], 2.0, 3.5)]
    res = check_set(ops)
    assert res.valid is True and not res.lost, res.explanation
    assert res.acknowledged == {1, 2, 3}
    assert "not judged (2)" in res.explanation
