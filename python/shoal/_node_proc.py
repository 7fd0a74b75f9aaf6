"""Process supervision of local nodes: starting a node process (``python -m shoal.node``), waiting until it
serves, signalling, stopping and killing it, and reading its log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .credentials import Credentials, native_client
from .errors import NodeUnavailable, ShoalError, Timeout

if TYPE_CHECKING:  # pragma: no cover
    from . import _native

STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
LOG_TAIL_LINES = 40


class NodeProc:
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

    def log_tail(self, lines: int = LOG_TAIL_LINES, current_run: bool = False) -> str:
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


def node_client(address: str, creds: Credentials | None, timeout: float = 5.0) -> _native.Client:
    """A native client bound to one node only (no failover): for requests that target that node."""
    return native_client([address], creds, connect_timeout=timeout)


def check_ready(address: str, deadline: float, proc: NodeProc, timeout: float) -> _native.Client:
    """Connects a client to ``address`` and waits until ``cluster_info`` answers."""
    last: BaseException | None = None
    client = None
    while True:
        remaining = deadline - time.monotonic()
        try:
            if client is None:
                client = native_client([address], proc.creds, connect_timeout=max(0.5, min(5.0, remaining)))
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


def port_in_use(proc: NodeProc) -> bool:
    tail = proc.log_tail(current_run=True).lower()
    return "in use" in tail or "addrinuse" in tail


def start(proc: NodeProc, port: int, timeout: float) -> _native.Client:
    """Launches ``proc`` and waits until it serves; retries while a fixed port is still in use."""
    deadline = time.monotonic() + timeout
    while True:
        proc.launch(port)
        try:
            address = proc.wait_ready(deadline, timeout)
            return check_ready(address, deadline, proc, timeout)
        except NodeUnavailable:
            if port and port_in_use(proc) and time.monotonic() + 0.5 < deadline:
                time.sleep(0.25)
                continue
            raise


def start_group(procs: Sequence[tuple[NodeProc, int]], deadline: float, timeout: float) -> None:
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
                if port and port_in_use(proc) and time.monotonic() + 0.5 < deadline:
                    time.sleep(0.25)
                    proc.launch(port)
                    continue
                raise


def child_env() -> dict[str, str]:
    """The node's environment: ours, with this shoal package importable first."""
    env = dict(os.environ)
    pkg_parent = str(Path(__file__).resolve().parent.parent)
    pp = env.get("PYTHONPATH", "")
    parts = [p for p in pp.split(os.pathsep) if p]
    if pkg_parent not in parts:
        env["PYTHONPATH"] = os.pathsep.join([pkg_parent] + parts)
    return env
