"""Shared fixtures of the end-to-end tests. Node processes come from the shoal pytest plugin
(``shoal_cluster``, function scope) or, for tests that do not touch the node itself, from one cluster
per module (``module_cluster``)."""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import shoal

pytest_plugins = ["pytester"]


def pytest_configure(config: pytest.Config) -> None:
    # The plugin normally comes in through the pytest11 entry point of the installed package; register it
    # here when the package is used from the source tree without being installed.
    if not config.pluginmanager.has_plugin("shoal") and not config.pluginmanager.has_plugin("shoal.pytest_plugin"):
        from shoal import pytest_plugin

        config.pluginmanager.register(pytest_plugin, "shoal")


@pytest.fixture(scope="module")
def module_cluster(request: pytest.FixtureRequest) -> Iterator[shoal.Cluster]:
    """One single-node local cluster shared by the tests of a module (logs kept if any test failed)."""
    data_dir = Path(tempfile.mkdtemp(prefix=f"shoal-{request.module.__name__}-"))
    cluster = shoal.Cluster.local(nodes=1, data_dir=data_dir)
    failed_before = request.session.testsfailed
    try:
        yield cluster
    finally:
        cluster.close()
        if request.session.testsfailed == failed_before:
            shutil.rmtree(data_dir, ignore_errors=True)
        else:
            print(f"\nshoal: kept {data_dir} (node logs) of module {request.module.__name__}")


_names = itertools.count()


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A collection name unique within the session."""
    base = "".join(c if c.isalnum() else "_" for c in request.node.name)[:40]
    return f"{base}_{next(_names)}"
