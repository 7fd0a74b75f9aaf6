"""Ctrl-C (SIGINT) interrupts a blocking call: KeyboardInterrupt is raised and the node keeps serving."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import shoal
from testlib import clustered


def _interrupt_during(fn: Callable[[], Any], after: float = 0.3) -> float:
    """Runs fn() with a SIGINT sent to this process `after` seconds in; returns when KeyboardInterrupt was
    raised, with the seconds from the signal to the exception. Fails if fn() returns normally.

    A handler that raises only while fn() runs keeps a late signal from hitting pytest itself."""
    inside = threading.Event()
    sent = [0.0]

    def handler(signum: int, frame: Any) -> None:
        if inside.is_set():
            raise KeyboardInterrupt

    def fire() -> None:
        sent[0] = time.monotonic()
        os.kill(os.getpid(), signal.SIGINT)

    old = signal.signal(signal.SIGINT, handler)
    timer = threading.Timer(after, fire)
    try:
        inside.set()
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            fn()
        return time.monotonic() - sent[0]
    finally:
        inside.clear()
        timer.cancel()
        timer.join()
        signal.signal(signal.SIGINT, old)


@pytest.mark.shoal(nodes=1)
def test_ctrl_c_interrupts_a_heavy_search(shoal_cluster: shoal.Cluster) -> None:
    coll = shoal_cluster.create_collection("big", dim=128, metric="l2", index="flat")
    base = clustered(20000, 128, seed=1)
    coll.upsert(np.arange(20000), base)
    queries = clustered(4000, 128, seed=2)

    def heavy() -> None:
        for _ in range(20):  # bounded: ~20 exact scans of 4000 x 20000 x 128
            coll.search(queries, k=10, timeout=60)

    delay = _interrupt_during(heavy)
    print(f"KeyboardInterrupt {delay * 1000:.0f} ms after SIGINT")
    # the dropped call stopped the scan on the node: nothing left in flight
    t0 = time.monotonic()
    while (shoal_cluster.nodes()[0].stats or {}).get("in_flight"):
        # a liveness bound (20 scans would take far longer), not a speed check: `cancelled` below is the proof
        assert time.monotonic() - t0 < 30, "the node kept working after Ctrl-C"
        time.sleep(0.01)
    print(f"node idle {(time.monotonic() - t0) * 1000:.0f} ms after the interrupt")
    assert shoal_cluster.nodes()[0].stats["cancelled"] >= 1
    # the node is fine and serves the next request
    assert coll.count() == 20000
    assert coll.search(base[:2], k=1).ids[:, 0].tolist() == [0, 1]


@pytest.mark.shoal(nodes=1)
def test_ctrl_c_interrupts_wait_indexed(shoal_cluster: shoal.Cluster) -> None:
    coll = shoal_cluster.create_collection("idx", dim=64, index=shoal.HNSW(m=16, ef_construction=200))
    coll.upsert(np.arange(8000), clustered(8000, 64, seed=3))

    def wait_forever() -> None:
        # index_status polling; if indexing finishes first, keep polling a never-ready condition
        coll.wait_indexed(timeout=60)
        end = time.monotonic() + 30
        while time.monotonic() < end:
            coll.index_status()
            time.sleep(0.01)

    _interrupt_during(wait_forever, after=0.2)
    assert coll.count() == 8000
