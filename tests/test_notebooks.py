"""The notebooks in notebooks/ are committed without outputs (`make fix` strips them). `make test` executes
each of them top to bottom in a fresh kernel (pytest --nbmake notebooks/)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_notebooks_are_committed_without_outputs() -> None:
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks, "notebooks/ holds no notebook"
    run = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "strip_notebooks.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
