"""Strips outputs and execution counts from notebooks/*.ipynb (run by `make fix`; tests/test_notebooks.py
checks that the committed notebooks are stripped). Usage: python tools/strip_notebooks.py [--check] [FILES]"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def stripped(nb: dict) -> dict:
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        cell.get("metadata", {}).pop("execution", None)
    return nb


def main(argv: list[str]) -> int:
    check = "--check" in argv
    files = [Path(a) for a in argv if a != "--check"] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    dirty = []
    for f in files:
        text = f.read_text()
        want = json.dumps(stripped(json.loads(text)), indent=1, ensure_ascii=False) + "\n"
        if text != want:
            dirty.append(f)
            if not check:
                f.write_text(want)
    if check and dirty:
        print("notebooks with outputs (run: make fix):", *map(str, dirty), sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
