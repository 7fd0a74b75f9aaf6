"""``python -m shoal.certs``: makes a cluster's TLS certificates and API keys (the same command as
``shoal-node certs``).

    python -m shoal.certs --nodes 3 --out certs/                      # CA, node-1..3 certs, admin key, key file
    python -m shoal.certs --nodes 3 --hosts db1.example,10.0.0.5 --out certs/
    python -m shoal.certs --node-ids 4 --ca-dir certs/ --out certs/   # a certificate for a node joining later

Then start each node with ``--tls-cert certs/node-<id>.pem --tls-key certs/node-<id>.key --tls-ca certs/ca.pem
--api-keys certs/api-keys`` and connect with ``shoal.connect(addresses, api_key=<certs/admin.key>,
tls_ca="certs/ca.pem")``. Private keys and the admin key are written with mode 0600.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from ._loader import native

    args = list(sys.argv[1:] if argv is None else argv)
    return int(native().run_node(["certs", *args]))


if __name__ == "__main__":
    sys.exit(main())
