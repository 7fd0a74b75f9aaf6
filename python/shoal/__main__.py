"""usage:
python -m shoal                 version, where the extension is, this help
python -m shoal node ARGS...    run a node (same as python -m shoal.node; --help lists the flags)
python -m shoal demo [--n N]    the demo (same as python -m shoal.demo)
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "node":
        from .node import main as node_main

        return node_main(args[1:])
    if args and args[0] == "demo":
        from .demo import main as demo_main

        return demo_main(args[1:])
    import shoal

    print(f"shoal {shoal.__version__}")
    try:
        from ._loader import native

        print(f"native extension: {native().__file__}")
    except ImportError as e:
        print(f"native extension: not available ({e})")
    print(__doc__.rstrip())
    return 0 if not args or args[0] in ("-h", "--help", "--version", "version") else 2


if __name__ == "__main__":
    sys.exit(main())
