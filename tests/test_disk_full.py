"""A full disk (issue "Integrity", item 7): a node whose data dir is on a small tmpfs refuses writes with a
StorageError once free space falls below its reserve (`--min-free-disk`), keeps serving reads, and takes writes
again when space is freed; nothing acknowledged is lost. Needs to mount a tmpfs (root, as on the CI machines);
every wait is bounded and no duration is asserted."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import shoal

DIM = 8


@pytest.fixture
def small_disk() -> Iterator[Path]:
    mnt = Path(tempfile.mkdtemp(prefix="shoal-tmpfs-"))
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        os.rmdir(mnt)


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _until(what: str, fn, within: float = 20.0):
    deadline = time.monotonic() + within
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except shoal.ShoalError as e:
            last = e
        time.sleep(0.1)
    raise AssertionError(f"{what} within {within:g} s; last: {last!r}")


def test_writes_are_refused_on_a_full_disk_and_resume_when_space_returns(small_disk: Path) -> None:
    with shoal.Cluster.local(nodes=1, data_dir=small_disk / "data", node_args=["--min-free-disk", "8M"]) as cluster:
        coll = cluster.create_collection("full", dim=DIM, metric="l2", shards=1)
        rng = np.random.default_rng(0)
        first = np.arange(1000)
        assert coll.upsert(first, rng.normal(size=(1000, DIM))) == 1000

        junk = small_disk / "junk"
        with open(junk, "wb") as f:  # leave ~4 MB: below the 8 MB reserve
            f.write(b"\0" * max(0, _free(small_disk) - (4 << 20)))

        # The node samples its free space a few times a second: a probe written before it noticed counts.
        probes: list[int] = []

        def refused() -> bool:
            pid = 5000 + len(probes)
            try:
                coll.upsert([pid], rng.normal(size=(1, DIM)))
            except shoal.StorageError as e:
                assert "disk full" in str(e) and "node 1" in str(e), e
                assert coll.get([pid]).missing == [pid], "a refused write wrote nothing"
                return True
            probes.append(pid)
            return False

        _until("writes are refused with StorageError", refused)
        # reads go on
        assert coll.count() == 1000 + len(probes)
        assert coll.search(rng.normal(size=(1, DIM)), k=3).ids.shape == (1, 3)

        junk.unlink()
        more = np.arange(2000, 2500)
        _until("writes resume once space is freed", lambda: coll.upsert(more, rng.normal(size=(500, DIM))) == 500)
        assert coll.count(consistency="strong") == 1500 + len(probes)
        assert coll.get(first).missing == []
