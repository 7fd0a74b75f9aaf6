"""``python -m shoal.node``: runs one Shoal node in this process until SIGTERM/SIGINT.

Flags: --data-dir DIR --listen HOST:PORT (port 0 = pick one) --node-id N --zone Z --config FILE.json
--log-level LEVEL. Env: SHOAL_DATA_DIR, SHOAL_LISTEN, SHOAL_NODE_ID, SHOAL_LOG. When ready the node writes
DATA_DIR/node.json ({"address", "pid", "node_id"}) and logs ``shoal-node ready on ADDR``.
Same entry point as the ``shoal-node`` binary.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from ._loader import native

    args = list(sys.argv[1:] if argv is None else argv)
    return int(native().run_node(args))


if __name__ == "__main__":
    sys.exit(main())
