"""Shoal's exceptions (DESIGN §7). The native module raises exactly these classes, by name.

    ShoalError
    ├── InvalidArgument      (also ValueError)      wrong dim, NaN/Inf, bad id, bad filter, bad parameter
    ├── CollectionNotFound   (also KeyError)
    ├── CollectionExists
    ├── ConsistencyError                            a consistency level could not be met in time
    ├── Timeout              (also TimeoutError)    the deadline passed
    ├── Cancelled                                   the request was cancelled
    ├── ShardUnavailable                            no eligible replica of a shard answered
    └── NodeUnavailable      (also ConnectionError) no node could be reached (or a local node failed to start)
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
]


class ShoalError(Exception):
    """Base class of every error raised by Shoal."""


class InvalidArgument(ShoalError, ValueError):
    """Bad input: the message names the offending item. Nothing was written."""


class CollectionNotFound(ShoalError, KeyError):
    """The named collection does not exist."""

    def __str__(self) -> str:
        # KeyError.__str__ would repr() the message and wrap it in quotes.
        return str(self.args[0]) if len(self.args) == 1 else Exception.__str__(self)


class CollectionExists(ShoalError):
    """A collection of that name already exists."""


class ConsistencyError(ShoalError):
    """The requested consistency level could not be met within the timeout."""


class Timeout(ShoalError, TimeoutError):
    """The request's deadline passed."""


class Cancelled(ShoalError):
    """The request was cancelled."""


class ShardUnavailable(ShoalError):
    """No eligible replica of a shard could serve the request."""


class NodeUnavailable(ShoalError, ConnectionError):
    """No node could be reached, or a local node process failed to start."""
