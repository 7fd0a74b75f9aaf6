"""Shoal's exceptions (DESIGN §7). The native module raises exactly these classes, by name.

    ShoalError
    ├── InvalidArgument      (also ValueError)      wrong dim, NaN/Inf, bad id, bad filter, bad parameter
    ├── CollectionNotFound   (also KeyError)
    ├── CollectionExists
    ├── ConsistencyError                            a consistency level could not be met in time
    ├── Timeout              (also TimeoutError)    the deadline passed
    ├── Cancelled                                   the request was cancelled
    ├── ShardUnavailable                            no eligible replica of a shard answered
    ├── NodeUnavailable      (also ConnectionError) no node could be reached (or a local node failed to start)
    ├── StorageError                                a node's disk failed: a damaged replica, a failed fsync, a full disk
    ├── Unauthenticated      (also PermissionError) no API key, an unknown or revoked key, or plaintext to a TLS node
    └── PermissionDenied     (also PermissionError) the key's role does not allow the call

Did a failed write happen? (DESIGN §7; each class's docstring says the same.)

- Definite, nothing was written: ``InvalidArgument``, ``CollectionNotFound``, ``CollectionExists``,
  ``Unauthenticated``, ``PermissionDenied``.
- Indeterminate, the write may or may not have been applied: ``Timeout``, ``ConsistencyError``,
  ``Cancelled``, ``ShardUnavailable``, ``NodeUnavailable`` and ``StorageError`` raised by ``upsert``,
  ``delete`` or ``update_payload``. A batch that spans several shards may be applied on some shards and not on others
  (each shard's part is all or nothing). Read the points back (``consistency="strong"``) to find out.

Retries are safe: every write call carries one write id that the client keeps when it re-sends the call
to another node (a node that refuses connections, drops them or stops answering), and each shard applies
a write id at most once, so a re-sent write never applies twice and never overwrites a newer write.
Calling ``upsert`` again yourself is a new write: it is applied again, after anything acknowledged since.
"""

from __future__ import annotations

__all__ = [
    "ShoalError",
    "InvalidArgument",
    "CollectionNotFound",
    "CollectionExists",
    "ConsistencyError",
    "Timeout",
    "Cancelled",
    "ShardUnavailable",
    "NodeUnavailable",
    "StorageError",
    "Unauthenticated",
    "PermissionDenied",
]


class ShoalError(Exception):
    """Base class of every error raised by Shoal."""


class InvalidArgument(ShoalError, ValueError):
    """Bad input: the message names the offending item. Definite: nothing was written."""


class CollectionNotFound(ShoalError, KeyError):
    """The named collection does not exist. Definite: nothing was written."""

    def __str__(self) -> str:
        # KeyError.__str__ would repr() the message and wrap it in quotes.
        return str(self.args[0]) if len(self.args) == 1 else Exception.__str__(self)


class CollectionExists(ShoalError):
    """A collection of that name already exists. Definite: nothing was created."""


class ConsistencyError(ShoalError):
    """The requested consistency level could not be met within the timeout: no leader with a majority
    reachable, a voter that did not replicate a ``strong`` write, no leader to confirm a ``strong`` read.

    Indeterminate for a write: it may have been applied (a ``strong`` write is often committed on a
    majority and only missing a voter), on some of its shards or all of them."""


class Timeout(ShoalError, TimeoutError):
    """The request's deadline passed.

    Indeterminate for a write: it may have been applied, on some of its shards or all of them."""


class Cancelled(ShoalError):
    """The request was cancelled (``Query.cancel()``, Ctrl-C).

    Indeterminate for a write: it may have been applied if it had been sent."""


class ShardUnavailable(ShoalError):
    """No eligible replica of a shard could serve the request.

    Indeterminate for a write: other shards of the batch may have been written."""


class NodeUnavailable(ShoalError, ConnectionError):
    """No node could be reached or kept answering, or a local node process failed to start.

    Indeterminate for a write: a node may have received it before its connection was lost (the client
    then re-sent it, with the same write id, to every other address it knows)."""


class StorageError(ShoalError):
    """A node's disk failed the request: a replica found damaged (the message names the node, the shard, the
    file and the byte offset), a failed fsync or a full disk. Not retried: retrying does not help until the
    replica is rebuilt (automatic when the shard has other replicas) or salvaged, or the disk has room.

    Indeterminate for a write: other shards of the batch, or this one before its disk failed, may have
    applied it."""


class Unauthenticated(ShoalError, PermissionError):
    """The node could not tell who is calling: no API key was given, the key is unknown or revoked, or a
    plaintext client reached a node that serves TLS. Definite: nothing was changed. Not retried.

    Pass the key and the cluster's CA certificate: ``shoal.connect(addresses, api_key=..., tls_ca=...)``
    (a local cluster's are in ``cluster.credentials``)."""


class PermissionDenied(ShoalError, PermissionError):
    """The caller is known but its role does not allow the call: a ``read`` key writing, a ``write`` key
    creating a collection or managing keys, a client key calling a node-to-node service. Definite: nothing
    was changed. Not retried."""
