"""How a client authenticates to a cluster: ``Credentials`` (the cluster CA and an API key), API keys as the
cluster lists them and as ``Cluster.create_api_key`` returns them, and the native client made with them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._loader import native
from .errors import InvalidArgument

if TYPE_CHECKING:  # pragma: no cover
    from . import _native

__all__ = ["Credentials", "ApiKey", "NewApiKey"]


@dataclass(frozen=True)
class Credentials:
    """How a client reaches a secure cluster: the cluster CA certificate (a PEM file: the nodes' TLS
    certificates are checked against it) and an API key (sent as ``authorization: Bearer <key>``).

    A local cluster's are in ``cluster.credentials``; pass them on with
    ``shoal.connect(addresses, api_key=creds.api_key, tls_ca=creds.ca_cert)``. The key is not shown by
    ``repr``."""

    ca_cert: Path | None
    api_key: str | None = field(default=None, repr=False)

    def _native_kwargs(self) -> dict[str, Any]:
        pem = None
        if self.ca_cert is not None:
            try:
                pem = Path(self.ca_cert).read_bytes()
            except OSError as e:
                raise InvalidArgument(f"tls_ca: cannot read the CA certificate {str(self.ca_cert)!r}: {e}") from e
        return {"api_key": self.api_key, "tls_ca_pem": pem}


@dataclass(frozen=True)
class ApiKey:
    """An API key as the cluster lists it: its name and role (``"read"`` < ``"write"`` < ``"admin"``),
    never the key itself (the cluster keeps only its SHA-256 hash)."""

    name: str
    role: str


class NewApiKey(str):
    """The key ``Cluster.create_api_key`` returns: a ``str`` (the secret, shown only this once) that also
    carries the key's ``name`` (to revoke it) and ``role``."""

    name: str
    role: str

    def __new__(cls, key: str, name: str, role: str) -> NewApiKey:
        obj = super().__new__(cls, key)
        obj.name = name
        obj.role = role
        return obj


def native_client(addresses: Sequence[str], creds: Credentials | None, connect_timeout: float = 10.0) -> _native.Client:
    """A native client for ``addresses`` with ``creds`` (None: an --insecure cluster)."""
    kw = creds._native_kwargs() if creds is not None else {}
    client: _native.Client = native().Client(list(addresses), connect_timeout=connect_timeout, **kw)
    return client
