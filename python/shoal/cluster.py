"""Clusters: ``Cluster.local(...)`` starts and manages real node processes; ``connect(...)`` attaches to
an existing cluster (DESIGN §8)."""

from __future__ import annotations

import html
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _convert as cv
from ._loader import native
from .collection import Collection
from .display import grid_cell, html_grid, html_table
from .errors import CollectionNotFound, InvalidArgument, NodeUnavailable, ShoalError, Timeout
from .index import HNSW, Flat, parse_index
from .results import Shard

__all__ = ["Cluster", "connect", "ApiKey", "Credentials", "Node", "NodeHandle", "Health"]

STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
_LOG_TAIL_LINES = 40


# --- public value objects -------------------------------------------------------------------------


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


def _client(addresses: Sequence[str], creds: Credentials | None, connect_timeout: float = 10.0) -> Any:
    """A native client for ``addresses`` with ``creds`` (None: an --insecure cluster)."""
    kw = creds._native_kwargs() if creds is not None else {}
    return native().Client(list(addresses), connect_timeout=connect_timeout, **kw)


@dataclass
class Node:
    """A node as the cluster reports it (``Cluster.nodes()``)."""

    id: int
    address: str
    status: str = "up"
    role: str = ""
    zone: str = ""
    version: str = ""
    resources: dict | None = None
    stats: dict | None = None
    replicas: list | None = None
    # "host:port" where the node serves Prometheus metrics (/metrics) and the probes /healthz and /readyz
    # over plain HTTP; None when it runs without --metrics-listen or is down.
    metrics_address: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Node:
        return cls(
            id=int(d.get("id", 0)),
            address=str(d.get("address", "")),
            status=str(d.get("status", "")),
            role=str(d.get("role", "")),
            zone=str(d.get("zone", "") or ""),
            version=str(d.get("version", "")),
            resources=d.get("resources"),
            stats=d.get("stats"),
            replicas=d.get("replicas"),
            metrics_address=d.get("metrics_address") or None,
        )


@dataclass
class Health:
    """The cluster's health (``Cluster.health()``).

    ``status``: "green" (every node up, every shard fully replicated, in sync and settled), "yellow" (the
    cluster serves every shard, but something is degraded: a node down, an under-replicated shard, a lagging
    replica, a replica transfer in flight), "red" (no majority of nodes up, a shard without a leader, or the
    cluster unreachable). ``reasons``: one line per finding; ``nodes``: each node as the cluster reports it;
    ``detail``: the reasons as one string.
    """

    status: str
    nodes: list[Node] = field(default_factory=list)
    detail: str = ""
    reasons: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        up = sum(1 for n in self.nodes if n.status == "up")
        extra = f", detail={self.detail!r}" if self.detail else ""
        return f"Health({self.status!r}, nodes_up={up}/{len(self.nodes)}{extra})"


#: A replica this many log entries behind its leader counts as lagging in ``Cluster.health()`` (the nodes
#: assess health: shoal-cluster's cluster_view.rs holds the rule; this mirrors its constant for readers).
LAG_WARN_ENTRIES = 100


# --- local node processes -------------------------------------------------------------------------


class _NodeProc:
    """One local node process: its data dir, log file, port and Popen. Holds no reference to the Cluster."""

    def __init__(
        self,
        node_id: int,
        data_dir: Path,
        zone: str | None,
        log_level: str | None,
        extra_args: Sequence[str],
        env: dict[str, str],
        join: str | None = None,
        certs_dir: Path | None = None,
        creds: Credentials | None = None,
        fault_injection: bool = True,
        host: str = "127.0.0.1",
    ) -> None:
        self.node_id = node_id
        # The loopback address the node listens on.
        self.host = host
        # Secure nodes: the directory of ``shoal-node certs`` (CA, node-<id>.pem/.key, api-keys); None: --insecure.
        self.certs_dir = certs_dir
        # What this harness authenticates with (the admin key and the CA); None for an insecure cluster.
        self.creds = creds
        self.fault_injection = fault_injection
        self.join = join
        self.data_dir = data_dir
        self.zone = zone
        self.log_level = log_level
        self.extra_args = list(extra_args)
        self.env = env
        self.log_path = data_dir / "node.log"
        self.proc: subprocess.Popen | None = None
        self.address: str | None = None
        # Where the node serves /metrics, /healthz, /readyz (from node.json; None until ready).
        self.metrics_address: str | None = None
        self.port: int = 0
        self.paused = False
        self._log_offset = 0
        self._terminated_pid: int | None = None
        self._lock = threading.RLock()

    # process state

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self, port: int) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "shoal.node",
            "--data-dir",
            str(self.data_dir),
            "--listen",
            f"{self.host}:{port}",
            "--node-id",
            str(self.node_id),
        ]
        if self.zone:
            cmd += ["--zone", self.zone]
        if self.log_level:
            cmd += ["--log-level", self.log_level]
        if self.join:
            cmd += ["--join", self.join]
        if self.certs_dir is not None:
            d = self.certs_dir
            cmd += [
                "--tls-cert", str(d / f"node-{self.node_id}.pem"),
                "--tls-key", str(d / f"node-{self.node_id}.key"),
                "--tls-ca", str(d / "ca.pem"),
                "--api-keys", str(d / "api-keys"),
            ]  # fmt: skip
        else:
            cmd += ["--insecure"]
        if self.fault_injection:
            cmd += ["--enable-fault-injection"]
        # Metrics on a free port of the node's own loopback address (plain HTTP, read-only).
        cmd += ["--metrics-listen", f"{self.host}:0"]
        return cmd + self.extra_args

    def launch(self, port: int) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            (self.data_dir / "node.json").unlink()
        except FileNotFoundError:
            pass
        cmd = self.command(port)
        with open(self.log_path, "ab") as log:
            self._log_offset = log.tell()
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"=== shoal: starting node {self.node_id} at {stamp}: {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=str(self.data_dir),
                start_new_session=True,  # Ctrl-C in the terminal / notebook does not reach the node
                close_fds=True,
            )
        self.paused = False
        self.address = None

    def log_tail(self, lines: int = _LOG_TAIL_LINES, current_run: bool = False) -> str:
        try:
            with open(self.log_path, "rb") as f:
                if current_run:
                    f.seek(self._log_offset)
                else:
                    f.seek(0, os.SEEK_END)
                    size = f.tell()
                    f.seek(max(0, size - 256 * 1024))
                data = f.read()
        except OSError:
            return ""
        text = data.decode("utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, deadline: float, timeout: float) -> str:
        """Waits for DATA_DIR/node.json of this run; returns the node's address."""
        assert self.proc is not None
        path = self.data_dir / "node.json"
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise NodeUnavailable(
                    f"shoal node {self.node_id} exited with code {rc} before it was ready "
                    f"(log: {self.log_path}):\n{self.log_tail(current_run=True)}"
                )
            if path.exists():
                try:
                    info = json.loads(path.read_text())
                except (OSError, ValueError):
                    info = None
                if isinstance(info, dict) and info.get("address"):
                    pid = info.get("pid")
                    if pid is None or int(pid) == self.proc.pid:
                        addr = str(info["address"])
                        for prefix in ("http://", "https://"):
                            if addr.startswith(prefix):
                                addr = addr[len(prefix) :]
                        self.address = addr
                        self.port = int(addr.rsplit(":", 1)[1])
                        m = info.get("metrics_address")
                        self.metrics_address = str(m) if m else None
                        return addr
            if time.monotonic() >= deadline:
                self.kill()
                raise Timeout(
                    f"shoal node {self.node_id} was not ready within {timeout:g} s "
                    f"(no {path}; log: {self.log_path}):\n{self.log_tail(current_run=True)}"
                )
            time.sleep(0.02)

    def signal(self, sig: int) -> None:
        if self.running:
            assert self.proc is not None
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:  # pragma: no cover - raced with exit
                pass

    def wait_stopped_state(self, stopped: bool, timeout: float = 2.0) -> None:
        """Waits until every thread of the process is (``stopped=True``) or is no longer (``False``) in the
        job-control stop state: SIGSTOP/SIGCONT are delivered asynchronously, so a request sent right after
        ``kill()`` returns could still be answered. Linux only; elsewhere this returns at once."""
        if self.proc is None:
            return
        task_dir = Path(f"/proc/{self.proc.pid}/task")
        if not task_dir.is_dir():
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = []
            for t in task_dir.iterdir():
                try:
                    stat = (t / "stat").read_text()
                except OSError:
                    continue
                states.append(stat[stat.rindex(")") + 2])
            if states and all((st == "T") == stopped for st in states):
                return
            time.sleep(0.002)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL. Returns the exit code."""
        with self._lock:
            if self.proc is None:
                return None
            self.terminate()
            return self.wait_or_kill(timeout)

    def terminate(self) -> None:
        """Sends SIGTERM once (and SIGCONT to a paused node so that it can act on it)."""
        if self.proc is None or self.proc.poll() is not None or self._terminated_pid == self.proc.pid:
            return
        self.signal(signal.SIGTERM)
        self._terminated_pid = self.proc.pid
        if self.paused:
            self.signal(signal.SIGCONT)

    def wait_or_kill(self, timeout: float) -> int | None:
        if self.proc is None:
            return None
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.paused = False
        return self.proc.returncode

    def kill(self) -> int | None:
        with self._lock:
            if self.proc is None:
                return None
            if self.proc.poll() is None:
                try:
                    self.proc.kill()
                except ProcessLookupError:  # pragma: no cover
                    pass
                self.proc.wait()
            self.paused = False
            return self.proc.returncode


def _node_client(address: str, creds: Credentials | None, timeout: float = 5.0) -> Any:
    """A native client bound to one node only (no failover): for requests that target that node."""
    return _client([address], creds, connect_timeout=timeout)


def _check_ready(address: str, deadline: float, proc: _NodeProc, timeout: float) -> Any:
    """Connects a client to ``address`` and waits until ``cluster_info`` answers."""
    last: BaseException | None = None
    client = None
    while True:
        remaining = deadline - time.monotonic()
        try:
            if client is None:
                client = _client([address], proc.creds, connect_timeout=max(0.5, min(5.0, remaining)))
            client.cluster_info(timeout=max(0.5, min(5.0, remaining)))
            return client
        except ShoalError as e:
            last = e
        if proc.proc is not None and proc.proc.poll() is not None:
            raise NodeUnavailable(
                f"shoal node {proc.node_id} exited with code {proc.proc.returncode} "
                f"(log: {proc.log_path}):\n{proc.log_tail(current_run=True)}"
            )
        if time.monotonic() >= deadline:
            proc.kill()
            raise Timeout(
                f"shoal node {proc.node_id} at {address} did not answer within {timeout:g} s ({last}); "
                f"log: {proc.log_path}:\n{proc.log_tail(current_run=True)}"
            )
        time.sleep(0.05)


def _port_in_use(proc: _NodeProc) -> bool:
    tail = proc.log_tail(current_run=True).lower()
    return "in use" in tail or "addrinuse" in tail


def _start(proc: _NodeProc, port: int, timeout: float) -> Any:
    """Launches ``proc`` and waits until it serves; retries while a fixed port is still in use."""
    deadline = time.monotonic() + timeout
    while True:
        proc.launch(port)
        try:
            address = proc.wait_ready(deadline, timeout)
            return _check_ready(address, deadline, proc, timeout)
        except NodeUnavailable:
            if port and _port_in_use(proc) and time.monotonic() + 0.5 < deadline:
                time.sleep(0.25)
                continue
            raise


def _start_group(procs: Sequence[tuple[_NodeProc, int]], deadline: float, timeout: float) -> None:
    """Launches every ``(proc, port)`` at once, then waits for each one's node.json (nodes that restart from
    disk may only become ready together, once they reach each other). Relaunches a node whose fixed port is
    still in use."""
    for proc, port in procs:
        proc.launch(port)
    for proc, port in procs:
        while True:
            try:
                proc.wait_ready(deadline, timeout)
                break
            except NodeUnavailable:
                if port and _port_in_use(proc) and time.monotonic() + 0.5 < deadline:
                    time.sleep(0.25)
                    proc.launch(port)
                    continue
                raise


def _wait_members(client: Any, procs: dict[int, _NodeProc], deadline: float, timeout: float) -> None:
    """Waits until ``cluster_info`` lists every node of ``procs`` with status "up"."""
    want = set(procs)
    seen = "no answer yet"
    while True:
        remaining = deadline - time.monotonic()
        try:
            info = client.cluster_info(timeout=max(0.2, min(5.0, remaining)))
            status = {int(n["id"]): str(n.get("status", "")) for n in info.get("nodes", [])}
            if want <= set(status) and all(status[i] == "up" for i in want):
                return
            seen = ", ".join(f"{i}: {status.get(i, 'missing')}" for i in sorted(want | set(status)))
        except ShoalError as e:
            seen = str(e)
        for p in procs.values():
            if p.proc is not None and p.proc.poll() is not None:
                raise NodeUnavailable(
                    f"shoal node {p.node_id} exited with code {p.proc.returncode} while the cluster formed "
                    f"(log: {p.log_path}):\n{p.log_tail(current_run=True)}"
                )
        if time.monotonic() >= deadline:
            tails = "\n".join(
                f"--- node {p.node_id} ({p.log_path}):\n{p.log_tail(10, current_run=True)}" for p in procs.values()
            )
            raise Timeout(
                f'the {len(want)} local nodes did not all report "up" within {timeout:g} s (last seen: {seen})\n{tails}'
            )
        time.sleep(0.1)


_PORTS_FILE = "shoal-local.json"


def _saved_ports(root: Path) -> dict[int, int]:
    """Ports of a previous local cluster in ``root`` (its nodes registered those addresses in the cluster,
    so a restart from disk must reuse them)."""
    try:
        data = json.loads((root / _PORTS_FILE).read_text())
        return {int(k): int(v) for k, v in data.get("ports", {}).items()}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def _save_ports(root: Path, procs: dict[int, _NodeProc]) -> None:
    ports = _saved_ports(root)
    ports.update({i: p.port for i, p in procs.items() if p.port})
    tmp = root / (_PORTS_FILE + ".tmp")
    tmp.write_text(json.dumps({"ports": {str(i): port for i, port in sorted(ports.items())}}))
    os.replace(tmp, root / _PORTS_FILE)


def _child_env() -> dict[str, str]:
    """The node's environment: ours, with this shoal package importable first."""
    env = dict(os.environ)
    pkg_parent = str(Path(__file__).resolve().parent.parent)
    pp = env.get("PYTHONPATH", "")
    parts = [p for p in pp.split(os.pathsep) if p]
    if pkg_parent not in parts:
        env["PYTHONPATH"] = os.pathsep.join([pkg_parent] + parts)
    return env


def _ensure_certs(certs_dir: Path, node_ids: Iterable[int], env: dict[str, str]) -> Credentials:
    """Makes (once) the CA, the admin key and the key file of a local secure cluster in ``certs_dir``, and a
    certificate for each of ``node_ids`` that has none yet (``shoal-node certs``); returns the credentials."""
    ids = list(node_ids)
    have_ca = (certs_dir / "ca.pem").exists() and (certs_dir / "ca.key").exists()
    missing = [i for i in ids if not (certs_dir / f"node-{i}.pem").exists()]
    if not have_ca or missing:
        certs_dir.mkdir(parents=True, exist_ok=True)
        targets = ids if not have_ca else missing
        cmd = [sys.executable, "-m", "shoal.node", "certs", "--out", str(certs_dir)]
        cmd += ["--node-ids", ",".join(str(i) for i in targets)]
        if have_ca:
            cmd += ["--ca-dir", str(certs_dir)]
        r = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise ShoalError(f"making the local cluster's certificates failed ({' '.join(cmd)}):\n{r.stderr.strip()}")
    try:
        key = (certs_dir / "admin.key").read_text().strip()
    except OSError as e:
        raise ShoalError(f"the local cluster's admin key {certs_dir / 'admin.key'} is unreadable: {e}") from e
    return Credentials(certs_dir / "ca.pem", key)


class _LocalState:
    """What a local cluster must clean up: node processes and (maybe) its temp dir. Referenced by a
    ``weakref.finalize``, so it must never point back at the Cluster."""

    def __init__(self, root: Path, remove_root: bool) -> None:
        self.root = root
        self.remove_root = remove_root
        self.procs: dict[int, _NodeProc] = {}
        # Fault injection: the blocklist each node should have, and the nodes not told yet (stopped or
        # paused when it was set; told when they start or resume).
        self.blocked: dict[int, list[int]] = {}
        self.faults_pending: set[int] = set()
        self.closed = False

    def shutdown(self) -> None:
        if self.closed:
            return
        self.closed = True
        procs = list(self.procs.values())
        for p in procs:  # signal all first, then wait: nodes stop in parallel
            p.terminate()
        for p in procs:
            try:
                p.wait_or_kill(STOP_TIMEOUT)
            except Exception:  # pragma: no cover - best effort at exit
                p.kill()
        if self.remove_root:
            shutil.rmtree(self.root, ignore_errors=True)


class NodeHandle:
    """Process control of one node of a local cluster (``cluster.node(node_id)``)."""

    def __init__(self, cluster: Cluster, proc: _NodeProc) -> None:
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

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
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
        _start(self._proc, self._proc.port, timeout)
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
            _node_client(self._live_address(), self._proc.creds).diverge_replica(
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
        _node_client(self._live_address(), self._proc.creds).skew_clock(offset_ms, timeout=5.0)

    def _live_address(self) -> str:
        """The address of the running node; NodeUnavailable when it is not serving."""
        address = self._proc.address
        if address is None:
            raise NodeUnavailable(f"node {self.id} is not running")
        return address

    def __repr__(self) -> str:
        state = "paused" if self.paused else ("running" if self.running else "stopped")
        return f"NodeHandle(id={self.id}, address={self.address!r}, {state}, pid={self.pid})"


# --- the cluster ----------------------------------------------------------------------------------


class Cluster:
    """A Shoal cluster: ``Cluster.local(...)`` for local node processes, ``shoal.connect(...)`` for an
    existing one. Use as a context manager, or call ``close()``."""

    def __init__(
        self,
        client: Any,
        addresses: Sequence[str],
        _local: _LocalState | None = None,
        _creds: Credentials | None = None,
    ) -> None:
        self._client = client
        self._addresses = list(addresses)
        self._creds = _creds
        self._local = _local
        self._finalizer = weakref.finalize(self, _local.shutdown) if _local is not None else None

    # construction

    @classmethod
    def local(
        cls,
        nodes: int = 1,
        data_dir: str | os.PathLike | None = None,
        zones: Sequence[str] | None = None,
        *,
        log_level: str | None = None,
        startup_timeout: float = STARTUP_TIMEOUT,
        node_args: Iterable[str] = (),
        load_balancing: str | None = None,
        secure: bool = True,
        fault_injection: bool = True,
        hosts: Sequence[str] | None = None,
    ) -> Cluster:
        """Starts ``nodes`` real node processes on loopback ports and waits until the cluster has formed.

        Node 1 starts first (it initialises the cluster); nodes 2..N start with ``--join`` node 1's
        address. The call returns once every node serves and ``cluster_info()`` reports all of them "up"
        (within ``startup_timeout`` seconds, else ``shoal.Timeout`` with the tail of each node's log).

        ``data_dir``: where node data and logs go (``DATA_DIR/node-<id>/``, log ``node.log``); None = a
        temp dir removed on ``close()``. A ``data_dir`` that holds a previous local cluster restarts it from
        disk on the same ports (all nodes are launched together, since they may only become ready as a
        group). ``zones``: one zone name per node. ``node_args``: extra flags for every node. Node ids are
        1..=nodes. ``load_balancing``: how reads pick among replicas when a call does not say
        (``"least_loaded"`` (the nodes' default), ``"round_robin"`` or ``"locality"``).

        ``secure`` (default True): the nodes run as a production cluster would, with TLS on every
        connection (mutual TLS between nodes) and API keys: a CA, one certificate per node and an admin key
        are made in ``DATA_DIR/certs`` (kept across restarts from the same data dir); this object
        authenticates with them, and ``cluster.credentials`` hands them to other clients.
        ``secure=False`` starts the nodes with ``--insecure`` (plaintext, no authentication).
        ``fault_injection`` (default True): the nodes expose the test-only fault-injection methods that
        ``partition()``, ``NodeHandle.skew_clock()`` and ``NodeHandle.diverge_replica()`` use. ``hosts``: one
        listen address per node (e.g. ``["127.0.0.2", "127.0.0.3", "127.0.0.4"]``, so that nodes differ by
        address and not only by port); default 127.0.0.1 for every node.
        """
        nodes = cv.check_int("nodes", nodes, 1)
        if zones is not None:
            if isinstance(zones, str) or len(zones) != nodes:
                raise InvalidArgument(f"zones must be a list of {nodes} zone names, one per node, got {zones!r}")
            zones = [str(z) for z in zones]
        if hosts is not None:
            if isinstance(hosts, str) or len(hosts) != nodes:
                raise InvalidArgument(f"hosts must be a list of {nodes} addresses, one per node, got {hosts!r}")
            hosts = [str(h) for h in hosts]
        startup_timeout = cv.check_timeout(startup_timeout, "startup_timeout") or STARTUP_TIMEOUT
        node_args = list(node_args)
        if load_balancing is not None:
            cv.check_choice("load_balancing", load_balancing, cv.LOAD_BALANCING)
            node_args += ["--load-balancing", load_balancing]
        native()  # fail early with a clear message if the extension is missing

        if data_dir is None:
            root = Path(tempfile.mkdtemp(prefix="shoal-"))
            remove = True
        else:
            root = Path(data_dir).expanduser().resolve()
            root.mkdir(parents=True, exist_ok=True)
            remove = False
        state = _LocalState(root, remove)
        env = _child_env()
        saved = _saved_ports(root)
        deadline = time.monotonic() + startup_timeout
        certs_dir: Path | None = None
        creds: Credentials | None = None
        if secure:
            certs_dir = root / "certs"
            try:
                creds = _ensure_certs(certs_dir, range(1, nodes + 1), env)
            except BaseException:
                state.shutdown()
                raise

        def make(i: int, join: str | None) -> _NodeProc:
            proc = _NodeProc(
                node_id=i,
                data_dir=root / f"node-{i}",
                zone=zones[i - 1] if zones else None,
                log_level=log_level,
                extra_args=list(node_args),
                env=env,
                join=join,
                certs_dir=certs_dir,
                creds=creds,
                fault_injection=fault_injection,
                host=hosts[i - 1] if hosts else "127.0.0.1",
            )
            state.procs[i] = proc
            return proc

        try:
            first = make(1, None)
            if 1 in saved:
                # Restart from disk: every address is known; launch all nodes, then wait for each.
                join = f"{first.host}:{saved[1]}"
                group = [(first, saved[1])] + [(make(i, join), saved.get(i, 0)) for i in range(2, nodes + 1)]
                _start_group(group, deadline, startup_timeout)
            else:
                left = max(0.1, deadline - time.monotonic())
                _start(first, 0, left)  # node 1 initialises the cluster: it must serve before others join
                assert first.address is not None
                group = [(make(i, first.address), saved.get(i, 0)) for i in range(2, nodes + 1)]
                _start_group(group, deadline, startup_timeout)
            _save_ports(root, state.procs)
            addresses = [p.address for p in state.procs.values() if p.address]
            left = max(0.5, min(10.0, deadline - time.monotonic()))
            client = _client(addresses, creds, connect_timeout=left)
            _wait_members(client, state.procs, deadline, startup_timeout)
        except BaseException:
            state.shutdown()
            raise
        return cls(client, addresses, _local=state, _creds=creds)

    # lifecycle

    def close(self) -> None:
        """Stops local nodes gracefully (SIGTERM, then SIGKILL after 10 s) and removes a temp data dir."""
        if self._finalizer is not None:
            self._finalizer()
        self._client = None

    @property
    def closed(self) -> bool:
        return self._client is None

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._client is None:
            raise ShoalError("this cluster is closed")

    @property
    def _c(self) -> Any:
        c = self._client
        if c is None:
            raise ShoalError("this cluster is closed")
        return c

    # information

    def addresses(self) -> list[str]:
        """The node addresses this cluster object talks to."""
        return list(self._addresses)

    @property
    def credentials(self) -> Credentials | None:
        """The CA certificate and API key this object connects with (None: an insecure cluster). A local
        secure cluster's key is its admin key; hand out narrower ones with ``create_api_key``."""
        return self._creds

    @property
    def is_local(self) -> bool:
        return self._local is not None

    @property
    def data_dir(self) -> Path | None:
        """Root data dir of a local cluster (None for a connected one)."""
        return self._local.root if self._local is not None else None

    def nodes(self) -> list[Node]:
        """The nodes of the cluster, as reported by the cluster."""
        info = self._c.cluster_info()
        return [Node.from_dict(d) for d in info.get("nodes", [])]

    def health(self, timeout: float | None = 5.0) -> Health:
        """green / yellow / red with reasons: nodes down, no majority, shards without a leader, quarantined or
        under-replicated shards, lagging replicas (more than ``LAG_WARN_ENTRIES`` entries behind), replica
        transfers in flight. The node the client reaches computes it (the ``Cluster.Health`` RPC, the same
        verdict for every client); "red" with the error as reason when no node answers. See :class:`Health`."""
        timeout = cv.check_timeout(timeout)
        try:
            h = self._c.health(timeout=timeout)
        except ShoalError as e:
            return Health("red", [], detail=str(e), reasons=[f"cluster unreachable: {e}"])
        reasons = [str(r) for r in h.get("reasons", [])]
        nodes = [Node.from_dict(d) for d in h.get("nodes", [])]
        return Health(str(h.get("status", "red")), nodes, detail="; ".join(reasons), reasons=reasons)

    def add_node(self, zone: str | None = None, timeout: float = STARTUP_TIMEOUT) -> NodeHandle:
        """Local clusters: starts one more node process (next free id) that joins the cluster, waits until
        the cluster reports it up, and returns its handle. Unless the nodes run with
        ``--auto-rebalance false``, the cluster then moves replicas onto it in the background (watch
        ``Collection.shards()``)."""
        local = self._local_state("add_node() is")
        timeout = cv.check_timeout(timeout, "timeout") or STARTUP_TIMEOUT
        seed = next((p for p in local.procs.values() if p.running and not p.paused and p.address), None)
        if seed is None:
            raise NodeUnavailable("add_node(): no running node to join through")
        nid = max(local.procs) + 1
        proc = _NodeProc(
            node_id=nid,
            data_dir=local.root / f"node-{nid}",
            zone=None if zone is None else str(zone),
            log_level=seed.log_level,
            extra_args=list(seed.extra_args),
            env=seed.env,
            join=seed.address,
            certs_dir=seed.certs_dir,
            creds=seed.creds,
            fault_injection=seed.fault_injection,
            host=seed.host,
        )
        if seed.certs_dir is not None:
            _ensure_certs(seed.certs_dir, [nid], seed.env)
        local.procs[nid] = proc
        deadline = time.monotonic() + timeout
        _start(proc, 0, timeout)
        _save_ports(local.root, local.procs)
        assert proc.address is not None
        self._addresses.append(proc.address)
        self._client = _client(self._addresses, self._creds, connect_timeout=max(0.5, deadline - time.monotonic()))
        running = {i: p for i, p in local.procs.items() if p.running}
        _wait_members(self._client, running, deadline, timeout)
        return NodeHandle(self, proc)

    def remove_node(self, node_id: int, drain: bool = True, timeout: float | None = 300.0) -> int:
        """Removes node ``node_id`` from the cluster and returns the number of replica moves its drain started.

        With ``drain=True`` every replica on the node is first moved to another node (learner, catch-up,
        promote, then the node's copy leaves), so no shard ever has fewer replicas than its replication
        factor; the call returns once the node holds none (``shoal.Timeout`` after ``timeout`` seconds: the
        drain goes on in the background, call again). ``InvalidArgument`` when a replica has nowhere to go
        (e.g. 3 nodes with replication_factor 3). Then the node leaves the registry and group 0. On a local
        cluster its process is stopped and forgotten. ``drain=False`` removes it at once; the cluster then
        re-places the replicas it held from the remaining copies."""
        node_id = cv.check_int("node_id", node_id, 1)
        timeout = cv.check_timeout(timeout)
        local = self._local
        if local is not None:
            proc = local.procs.get(node_id)
            if proc is None:
                raise InvalidArgument(f"no local node with id {node_id} (ids: {sorted(local.procs)})")
            others = [p.address for i, p in local.procs.items() if i != node_id and p.running and p.address]
            if not others:
                raise InvalidArgument(f"node {node_id} is the last running node of this cluster")
            client = _client(others, self._creds)
        else:
            client = self._c
        moves = int(client.remove_node(node_id, drain, timeout))
        if local is not None:
            proc = local.procs.pop(node_id)
            proc.stop()
            if proc.address in self._addresses:
                self._addresses.remove(proc.address)
            self._client = client
        return moves

    def _local_state(self, what: str) -> _LocalState:
        self._check_open()
        if self._local is None:
            raise ShoalError(
                f"{what} only available on clusters started with shoal.Cluster.local(); "
                "this one was attached with shoal.connect()"
            )
        return self._local

    def node(self, node_id: int) -> NodeHandle:
        """Process control of a node of a local cluster."""
        local = self._local_state("node handles are")
        node_id = cv.check_int("node_id", node_id, 0)
        proc = local.procs.get(node_id)
        if proc is None:
            raise InvalidArgument(f"no local node with id {node_id} (ids: {sorted(local.procs)})")
        return NodeHandle(self, proc)

    # API keys

    def create_api_key(self, role: str, name: str | None = None, timeout: float | None = 10.0) -> str:
        """Creates an API key with ``role``: ``"read"`` (search, get, count, scroll, info), ``"write"`` (also
        upsert, delete, update_payload) or ``"admin"`` (also collections, nodes and keys). ``name`` (letters,
        digits, ``_-.``; default a generated one) is how the key is listed and revoked. The key is returned
        once: store it. The returned ``str`` also has ``.name`` and ``.role``. Needs an admin key."""
        timeout = cv.check_timeout(timeout)
        name_, key = self._c.create_api_key(str(role), "" if name is None else str(name), timeout=timeout)
        return NewApiKey(str(key), str(name_), str(role))

    def revoke_api_key(self, name: str, timeout: float | None = 10.0) -> bool:
        """Revokes the key named ``name`` (``InvalidArgument`` when no key has that name). Every node refuses
        it once the revocation has replicated, normally well within a second. Needs an admin key."""
        timeout = cv.check_timeout(timeout)
        return bool(self._c.revoke_api_key(str(name), timeout=timeout))

    def api_keys(self, timeout: float | None = 10.0) -> list[ApiKey]:
        """The cluster's API keys (names and roles, never the keys), sorted by name. Needs an admin key."""
        timeout = cv.check_timeout(timeout)
        return [ApiKey(str(n), str(r)) for n, r in self._c.list_api_keys(timeout=timeout)]

    # fault injection (local clusters)

    def partition(self, *groups: Iterable[int]) -> None:
        """Splits the local nodes into groups that cannot reach each other (fault injection for tests).

        Each group is an iterable of node ids; the nodes named in no group form one more group together.
        Every node is told to block all traffic (both Raft planes and node-to-node requests) with the nodes
        outside its group. Client traffic is not blocked: a client connected to one node reaches that node.
        A node that is stopped or paused gets its blocklist when it starts or resumes. ``heal()`` undoes it.
        """
        local = self._local_state("partition() is")
        ids = set(local.procs)
        owner: dict[int, int] = {}
        parts: list[set[int]] = []
        for gi, group in enumerate(groups):
            if isinstance(group, (str, bytes)) or not isinstance(group, Iterable):
                raise InvalidArgument(
                    f"partition: groups[{gi}] must be an iterable of node ids, got {group!r} "
                    f"(e.g. partition([1], [2, 3]))"
                )
            members: set[int] = set()
            for x in group:
                nid = cv.check_int(f"partition: node id in groups[{gi}]", x, 0)
                if nid not in ids:
                    raise InvalidArgument(f"partition: no local node with id {nid} (ids: {sorted(ids)})")
                if owner.get(nid, gi) != gi:
                    raise InvalidArgument(f"partition: node {nid} is in groups[{owner[nid]}] and groups[{gi}]")
                owner[nid] = gi
                members.add(nid)
            if members:
                parts.append(members)
        rest = ids - set(owner)
        if rest:
            parts.append(rest)
        for members in parts:
            for nid in members:
                local.blocked[nid] = sorted(ids - members)
        self._apply_faults(sorted(ids))

    def heal(self) -> None:
        """Ends a ``partition()``: every node's blocklist is cleared (stopped or paused nodes when they start
        or resume)."""
        local = self._local_state("heal() is")
        for nid in local.procs:
            local.blocked[nid] = []
        self._apply_faults(sorted(local.procs))

    def _apply_faults(self, node_ids: Sequence[int]) -> None:
        """Sends each node its blocklist; nodes not running (or paused) are remembered for later."""
        local = self._local_state("fault injection is")
        failures = []
        for nid in node_ids:
            proc = local.procs[nid]
            if not proc.running or proc.paused or not proc.address:
                local.faults_pending.add(nid)
                continue
            try:
                _node_client(proc.address, proc.creds).set_faults(local.blocked.get(nid, []), timeout=5.0)
                local.faults_pending.discard(nid)
            except ShoalError as e:
                local.faults_pending.add(nid)
                failures.append((nid, proc.address, e))
        if failures:
            nid, addr, err = failures[0]
            others = f" (and nodes {[f[0] for f in failures[1:]]})" if len(failures) > 1 else ""
            raise type(err)(f"could not set the faults of node {nid} at {addr}{others}: {err}") from err

    def _apply_pending_faults(self, node_id: int, restarted: bool = False) -> None:
        """Tells a node that just resumed (or started: a new process has an empty blocklist) its blocklist."""
        local = self._local
        if local is None:
            return
        if node_id in local.faults_pending or (restarted and local.blocked.get(node_id)):
            self._apply_faults([node_id])

    # collections

    def create_collection(
        self,
        name: str,
        dim: int,
        metric: str = "cosine",
        shards: int | None = None,
        replication_factor: int | None = None,
        id_type: str = "int",
        index: HNSW | Flat | str = HNSW(m=16, ef_construction=200),
        timeout: float | None = None,
        on_disk: bool = False,
    ) -> Collection:
        """Creates a collection. ``metric``: "cosine" | "l2" | "dot"; ``id_type``: "int" | "str";
        ``index``: ``shoal.HNSW(m, ef_construction, quantization)`` or "flat"; ``shards`` /
        ``replication_factor``: None = the server's defaults. ``on_disk=True`` keeps the full-precision
        vectors in memory-mapped scratch files in each replica's directory instead of on the heap (with
        ``HNSW(quantization="int8")`` resident memory is then mostly codes and graph); results are the same."""
        if not isinstance(name, str) or not name:
            raise InvalidArgument(f"collection name must be a non-empty str, got {name!r}")
        dim = cv.check_int("dim", dim, 1, cv.MAX_DIM)
        metric = cv.check_metric(metric)
        id_type = cv.check_id_type(id_type)
        n_shards = 0 if shards is None else cv.check_int("shards", shards, 1)
        rf = 0 if replication_factor is None else cv.check_int("replication_factor", replication_factor, 1)
        idx = parse_index(index)
        timeout = cv.check_timeout(timeout)
        if not isinstance(on_disk, bool):
            raise InvalidArgument(f"on_disk must be a bool, got {on_disk!r}")
        if isinstance(idx, HNSW):
            kind, m, efc, quant = "hnsw", idx.m, idx.ef_construction, idx.quantization
        else:
            kind, m, efc, quant = "flat", 0, 0, ""
        info = self._c.create_collection(
            name, dim, metric, id_type, n_shards, rf, kind, m, efc, timeout, quant, on_disk
        )
        return Collection(self, info)

    def collection(self, name: str, timeout: float | None = None) -> Collection:
        """The existing collection ``name`` (``shoal.CollectionNotFound``, a KeyError, if there is none)."""
        if not isinstance(name, str):
            raise InvalidArgument(f"collection name must be a str, got {name!r}")
        return Collection(self, self._c.get_collection(name, cv.check_timeout(timeout)))

    def __getitem__(self, name: str) -> Collection:
        return self.collection(name)

    def list_collections(self, timeout: float | None = None) -> list[str]:
        """Names of the collections, sorted."""
        infos = self._c.list_collections(cv.check_timeout(timeout))
        return sorted(str(i["name"]) for i in infos)

    def drop_collection(self, name: str, timeout: float | None = None) -> None:
        """Drops a collection and its data (``shoal.CollectionNotFound`` if there is none)."""
        if not isinstance(name, str):
            raise InvalidArgument(f"collection name must be a str, got {name!r}")
        dropped = self._c.drop_collection(name, cv.check_timeout(timeout))
        if dropped is False:
            raise CollectionNotFound(f'collection "{name}" not found')

    # display

    def __repr__(self) -> str:
        if self._client is None:
            return "Cluster(closed)"
        kind = f"local, nodes={len(self._local.procs)}" if self._local is not None else "connected"
        return f"Cluster({kind}, addresses={self._addresses})"

    def _repr_html_(self) -> str:
        """Jupyter: the health line, a nodes x shards grid (leader / follower / learner / down / quarantined,
        colour-coded; one row per shard of each collection) and, for a local cluster, its processes."""
        if self._client is None:
            return "<pre>" + repr(self) + "</pre>"
        parts = []
        try:
            h = self.health(timeout=5)
            parts.append(f"<div><b>{html.escape(h.status)}</b> {html.escape('; '.join(h.reasons[:5]))}</div>")
            node_ids = sorted(n.id for n in h.nodes)
            grid = []
            for info in self._c.list_collections(5.0):
                name = str(info["name"])
                for s in sorted((Shard.from_dict(d) for d in self._c.shards(name, 5.0)), key=lambda s: s.id):
                    grid.append((f"{name} / {s.id}", {r.node: grid_cell(r.role, r.state) for r in s.replicas}))
            if grid:
                parts.append(html_grid(node_ids, grid, caption="replicas (rows: collection / shard)"))
        except ShoalError as e:
            parts.append(f"<pre>{html.escape(str(e))}</pre>")
        if self._local is not None:
            rows = []
            for p in self._local.procs.values():
                state = "paused" if p.paused else ("running" if p.running else "stopped")
                rows.append([p.node_id, p.address or "", p.metrics_address or "", state, str(p.log_path)])
            parts.append(html_table(["node", "address", "metrics", "process", "log"], rows, caption=repr(self)))
        return "".join(parts)


def connect(
    addresses: str | Sequence[str],
    connect_timeout: float = 10.0,
    *,
    api_key: str | None = None,
    tls_ca: str | os.PathLike | None = None,
    credentials: Credentials | None = None,
) -> Cluster:
    """Attaches to an existing cluster through one or more "host:port" addresses (comma-separated in a
    string, or a list); requests fail over between them. No process management (``node()`` raises).

    A secure cluster (the default for nodes) needs ``api_key`` (sent with every call) and ``tls_ca``, the
    cluster CA certificate (PEM file) the nodes' certificates are checked against; both default to the
    environment variables ``SHOAL_API_KEY`` and ``SHOAL_TLS_CA``. Without a CA the connection is plaintext
    (for nodes started with ``--insecure``). ``credentials`` (e.g. a local cluster's ``cluster.credentials``)
    gives both at once."""
    if isinstance(addresses, str):
        addrs = [a.strip() for a in addresses.split(",") if a.strip()]
    else:
        addrs = [str(a).strip() for a in addresses]
    if not addrs or any(not a for a in addrs):
        raise InvalidArgument(f"connect() needs at least one 'host:port' address, got {addresses!r}")
    t = cv.check_timeout(connect_timeout, "connect_timeout") or 10.0
    if credentials is not None:
        if not isinstance(credentials, Credentials):
            raise InvalidArgument(f"credentials must be a shoal.Credentials, got {type(credentials).__name__}")
        if api_key is not None or tls_ca is not None:
            raise InvalidArgument("give either credentials or api_key/tls_ca, not both")
        api_key, tls_ca = credentials.api_key, credentials.ca_cert
    if api_key is None:
        api_key = os.environ.get("SHOAL_API_KEY") or None
    if tls_ca is None:
        tls_ca = os.environ.get("SHOAL_TLS_CA") or None
    if api_key is not None and not isinstance(api_key, str):
        raise InvalidArgument(f"api_key must be a str, got {type(api_key).__name__}")
    creds = None
    if api_key is not None or tls_ca is not None:
        creds = Credentials(Path(tls_ca).expanduser() if tls_ca is not None else None, api_key)
    client = _client(addrs, creds, connect_timeout=t)
    client.cluster_info(timeout=t)
    return Cluster(client, addrs, _creds=creds)
