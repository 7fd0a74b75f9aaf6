"""pytest plugin (registered through the ``pytest11`` entry point as ``shoal``).

Fixture ``shoal_cluster``: a local cluster of real node processes for one test, configured with the marker

    @pytest.mark.shoal(nodes=1)          # any keyword of shoal.Cluster.local(...)
    def test_search(shoal_cluster):
        docs = shoal_cluster.create_collection("docs", dim=8)

Nodes are stopped at teardown. When the test fails, the data dir (with every node's ``node.log``) is kept
and the report shows where it is and the tail of each node's log.

Fault injection: ``shoal_cluster.nemesis`` is a ``shoal.nemesis.Nemesis`` over the fixture's cluster (kill, pause,
partition, restart_all, clock skew, damage_file, each with its undo; ``heal_all()``):

    @pytest.mark.shoal(nodes=3)
    def test_failover(shoal_cluster):
        docs = shoal_cluster.create_collection("docs", dim=8, shards=2, replication_factor=3)
        shoal_cluster.nemesis.kill_leader(docs, shard=0)
        ...
        shoal_cluster.nemesis.heal_all()

If the nemesis did anything, teardown calls ``heal_all()`` before stopping the nodes (errors are only logged on its
timeline), and a failed test's report shows the nemesis timeline.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

_CLUSTERS = "_shoal_clusters"
_TAIL_LINES = 60


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "shoal(nodes=1, zones=None, **kwargs): options of the shoal_cluster fixture (keywords of shoal.Cluster.local)",
    )


def _failed(item: pytest.Item) -> bool:
    for when in ("setup", "call", "teardown"):
        rep = getattr(item, f"_shoal_rep_{when}", None)
        if rep is not None and rep.failed:
            return True
    return False


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Generator[None, Any, None]:
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"_shoal_rep_{rep.when}", rep)
    if not rep.failed:
        return
    for entry in getattr(item, _CLUSTERS, []):
        cluster, data_dir = entry
        local = getattr(cluster, "_local", None)
        if local is None:
            continue
        rep.sections.append(("shoal data dir (kept)", str(data_dir)))
        for proc in list(local.procs.values()):
            tail = proc.log_tail(_TAIL_LINES)
            rep.sections.append((f"shoal node {proc.node_id} log tail ({proc.log_path})", tail or "(empty)"))
        nemesis = getattr(cluster, "nemesis", None)
        if nemesis is not None and nemesis.events:
            rep.sections.append(("shoal nemesis timeline", nemesis.timeline()))


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60]


@pytest.fixture
def shoal_cluster(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A local Shoal cluster for this test (``@pytest.mark.shoal(nodes=..., ...)``), closed at teardown."""
    from shoal import Cluster

    marker = request.node.get_closest_marker("shoal")
    kwargs: dict[str, Any] = dict(marker.kwargs) if marker is not None else {}
    if marker is not None and marker.args:
        kwargs.setdefault("nodes", marker.args[0])
    kwargs.setdefault("nodes", 1)
    kwargs.pop("data_dir", None)
    data_dir = Path(tempfile.mkdtemp(prefix=f"shoal-{_safe_name(request.node.name)}-"))
    item = request.node
    # If the nodes fail to start, the error carries their log tail and the data dir stays for inspection.
    cluster = Cluster.local(data_dir=data_dir, **kwargs)
    from shoal.nemesis import Nemesis

    cluster.nemesis = Nemesis(cluster)  # type: ignore[attr-defined]  # cheap: no request until a fault is injected
    entries = item.__dict__.setdefault(_CLUSTERS, [])
    entries.append((cluster, data_dir))
    try:
        yield cluster
    finally:
        if cluster.nemesis.events and not cluster.closed:  # type: ignore[attr-defined]
            cluster.nemesis.heal_all(timeout=30.0, raise_errors=False)  # type: ignore[attr-defined]
        cluster.close()
        if not _failed(item):
            shutil.rmtree(data_dir, ignore_errors=True)
