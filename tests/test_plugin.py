"""The pytest plugin: the shoal marker and fixture, node logs in failure reports, cleanup."""

from __future__ import annotations

import os
import re
import shutil

import pytest

INNER = """
import numpy as np
import pytest

@pytest.mark.shoal(nodes=1)
def test_passes(shoal_cluster):
    coll = shoal_cluster.create_collection("c", dim=4)
    coll.upsert([1], np.ones(4))
    assert coll.count() == 1
    with open("passed_data_dir.txt", "w") as f:
        f.write(str(shoal_cluster.data_dir))

def test_default_marker(shoal_cluster):
    assert len(shoal_cluster.nodes()) == 1

@pytest.mark.shoal(nodes=1)
def test_fails(shoal_cluster):
    shoal_cluster.create_collection("c", dim=4)
    assert False, "deliberate failure"
"""


def test_plugin_fixture_marker_and_failure_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=2, failed=1)
    out = result.stdout.str()
    # the failure report carries each node's log tail and where the data dir was kept
    assert "shoal node 1 log tail" in out
    assert "shoal data dir (kept)" in out
    kept = re.search(r"shoal data dir \(kept\)\s*-+\s*\n(\S+)", out)
    assert kept, out
    assert os.path.isdir(kept.group(1)), "a failed test's data dir is kept"
    assert os.path.isfile(os.path.join(kept.group(1), "node-1", "node.log"))
    shutil.rmtree(kept.group(1), ignore_errors=True)
    passed_dir = (pytester.path / "passed_data_dir.txt").read_text()
    assert passed_dir and not os.path.exists(passed_dir), "a passed test's data dir is removed"


def test_marker_is_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--markers")
    assert "@pytest.mark.shoal(nodes=1" in result.stdout.str()
