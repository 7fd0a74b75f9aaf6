"""``NodeHandle``: process control of one node of a local cluster (stop, kill, pause, restart, fault
injection on that node)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import TYPE_CHECKING

from ._node_proc import LOG_TAIL_LINES, STARTUP_TIMEOUT, STOP_TIMEOUT, NodeProc, node_client, start
from .errors import InvalidArgument, NodeUnavailable

if TYPE_CHECKING:  # pragma: no cover
    from .cluster import Cluster

__all__ = ["NodeHandle"]


class NodeHandle:
    """Process control of one node of a local cluster (``cluster.node(node_id)``)."""

    def __init__(self, cluster: Cluster, proc: NodeProc) -> None:
        self._cluster = cluster
        self._proc = proc

    @property
    def id(self) -> int:
        return self._proc.node_id

    @property
    def address(self) -> str | None:
        return self._proc.address

    @property
    def port(self) -> int:
        return self._proc.port

    @property
    def pid(self) -> int | None:
        return self._proc.proc.pid if self._proc.proc is not None else None

    @property
    def data_dir(self) -> Path:
        return self._proc.data_dir

    @property
    def log_path(self) -> Path:
        return self._proc.log_path

    @property
    def running(self) -> bool:
        return self._proc.running

    @property
    def paused(self) -> bool:
        return self._proc.paused

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of this node's log file."""
        return self._proc.log_tail(lines)

    def kill(self) -> None:
        """SIGKILL: the process dies at once (what a crash looks like)."""
        self._proc.kill()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Graceful stop: SIGTERM, wait up to ``timeout`` s, then SIGKILL."""
        self._proc.stop(timeout)

    def start(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Starts the node again with the same arguments (port, data dir, ``--join``) and waits until it
        serves. No-op if running. A partition set with ``Cluster.partition`` is re-applied to it."""
        self._cluster._check_open()
        if self._proc.running:
            return
        start(self._proc, self._proc.port, timeout)
        self._cluster._apply_pending_faults(self.id, restarted=True)

    def restart(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """``stop()`` then ``start()``."""
        self.stop()
        self.start(timeout)

    def pause(self) -> None:
        """SIGSTOP: the process freezes (a hung node: connections open, no answers)."""
        if self._proc.running:
            self._proc.signal(signal.SIGSTOP)
            self._proc.paused = True
            self._proc.wait_stopped_state(True)

    def resume(self) -> None:
        """SIGCONT after ``pause()``."""
        if self._proc.running:
            self._proc.signal(signal.SIGCONT)
            self._proc.wait_stopped_state(False)
        self._proc.paused = False
        self._cluster._apply_pending_faults(self.id)

    def diverge_replica(self, collection: str, shard: int = 0) -> str:
        """Fault injection: changes one point of this node's replica of ``shard`` of ``collection`` behind Raft's
        back, so that the replica silently diverges from its peers (what a memory or disk error would do).
        Anti-entropy notices within seconds and rebuilds it. Returns the changed point's id."""
        self._cluster._check_open()
        return str(
            node_client(self._live_address(), self._proc.creds).diverge_replica(
                str(collection), int(shard), timeout=5.0
            )
        )

    def skew_clock(self, offset_ms: int) -> None:
        """Runs this node's clock ``offset_ms`` milliseconds ahead of (negative: behind) the machine's clock
        (fault injection; the node's versions then come from a skewed clock). ``0`` undoes it. Lasts until
        the process restarts."""
        self._cluster._check_open()
        if not isinstance(offset_ms, int) or isinstance(offset_ms, bool):
            raise InvalidArgument(f"offset_ms must be an int, got {offset_ms!r}")
        node_client(self._live_address(), self._proc.creds).skew_clock(offset_ms, timeout=5.0)

    def _live_address(self) -> str:
        """The address of the running node; NodeUnavailable when it is not serving."""
        address = self._proc.address
        if address is None:
            raise NodeUnavailable(f"node {self.id} is not running")
        return address

    def __repr__(self) -> str:
        state = "paused" if self.paused else ("running" if self.running else "stopped")
        return f"NodeHandle(id={self.id}, address={self.address!r}, {state}, pid={self.pid})"
