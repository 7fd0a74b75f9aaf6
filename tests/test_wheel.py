"""The wheel (issue 13 item 3): installed into a fresh venv on a PATH without cargo, it runs a 3-node cluster
(the node is the wheel's own extension: `python -m shoal.node`). `make test` builds the wheel from the same
compiled extension the other tests use (SHOAL_WHEEL_DIR); run alone, this test builds one with maturin."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SMOKE = textwrap.dedent(
    """
    import shutil, sys
    import numpy as np
    import shoal
    assert shutil.which("cargo") is None and shutil.which("rustc") is None, "a Rust toolchain is on PATH"
    assert "site-packages" in shoal.__file__, shoal.__file__
    with shoal.Cluster.local(nodes=3) as cluster:
        coll = cluster.create_collection("smoke", dim=8, shards=3, replication_factor=2)
        x = np.random.default_rng(0).standard_normal((1000, 8)).astype(np.float32)
        assert coll.upsert(np.arange(1000), x) == 1000
        res = coll.search(x[:5], k=3, consistency="strong")
        assert list(res.ids[:, 0]) == [0, 1, 2, 3, 4], res.ids
        exact = coll.search(x[:5], k=3, exact=True)
        assert list(exact.ids[:, 0]) == [0, 1, 2, 3, 4], exact.ids
        health = cluster.health()
        assert health.status in ("green", "yellow"), health
        print("SMOKE OK", len(cluster.nodes()), "nodes", health.status)
    """
)


def _wheel(tmp: Path) -> Path:
    d = os.environ.get("SHOAL_WHEEL_DIR")
    if d:
        wheels = sorted(Path(d).glob("shoal-*.whl"), key=lambda p: p.stat().st_mtime)
        assert wheels, f"SHOAL_WHEEL_DIR={d} holds no shoal wheel (make wheel-test builds it)"
        return wheels[-1]
    out = tmp / "dist"
    env = dict(os.environ, CARGO_TARGET_DIR=str(ROOT / "target"))
    maturin = Path(sys.executable).parent / "maturin"
    subprocess.run(
        [str(maturin), "build", "--profile", "ci", "--quiet", "--out", str(out)],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=3600,
    )
    return next(out.glob("shoal-*.whl"))


def test_the_wheel_runs_a_cluster_without_a_rust_toolchain(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path)
    assert "abi3" in wheel.name, f"not an abi3 wheel: {wheel.name}"
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    # Only the venv and the system's own directories: no ~/.cargo/bin, no repository on sys.path.
    path = os.pathsep.join([str(venv / "bin"), "/usr/local/bin", "/usr/bin", "/bin"])
    env = {"PATH": path, "HOME": os.environ.get("HOME", str(tmp_path)), "LANG": "C.UTF-8"}
    if shutil.which("cargo", path=path) is not None:
        path = os.pathsep.join([str(venv / "bin"), "/usr/bin", "/bin"])
        env["PATH"] = path
    assert shutil.which("cargo", path=path) is None, f"cargo is on {path}"
    pip = subprocess.run(
        [str(py), "-m", "pip", "install", "--quiet", str(wheel)], env=env, capture_output=True, text=True, timeout=600
    )
    assert pip.returncode == 0, pip.stderr
    run = subprocess.run([str(py), "-c", SMOKE], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "SMOKE OK 3 nodes" in run.stdout, f"{run.stdout}\n{run.stderr}"
