"""The local-cluster builder: what ``Cluster.local`` starts (certificates, node processes, saved ports) and
what a local cluster must clean up (``LocalState``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _convert as cv
from ._loader import native
from ._node_proc import STARTUP_TIMEOUT, STOP_TIMEOUT, NodeProc, child_env, start, start_group
from ._partitions import Partitions
from .credentials import Credentials, native_client
from .errors import InvalidArgument, NodeUnavailable, ShoalError, Timeout

if TYPE_CHECKING:  # pragma: no cover
    from . import _native


def wait_members(client: Any, procs: dict[int, NodeProc], deadline: float, timeout: float) -> None:
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


PORTS_FILE = "shoal-local.json"


def saved_ports(root: Path) -> dict[int, int]:
    """Ports of a previous local cluster in ``root`` (its nodes registered those addresses in the cluster,
    so a restart from disk must reuse them)."""
    try:
        data = json.loads((root / PORTS_FILE).read_text())
        return {int(k): int(v) for k, v in data.get("ports", {}).items()}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def save_ports(root: Path, procs: dict[int, NodeProc]) -> None:
    ports = saved_ports(root)
    ports.update({i: p.port for i, p in procs.items() if p.port})
    tmp = root / (PORTS_FILE + ".tmp")
    tmp.write_text(json.dumps({"ports": {str(i): port for i, port in sorted(ports.items())}}))
    os.replace(tmp, root / PORTS_FILE)


def ensure_certs(certs_dir: Path, node_ids: Iterable[int], env: dict[str, str]) -> Credentials:
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


class LocalState:
    """A local cluster's node processes (with their partitions) and what must be cleaned up: the processes and
    (maybe) its temp dir. Referenced by a ``weakref.finalize``, so it must never point back at the Cluster."""

    def __init__(self, root: Path, remove_root: bool) -> None:
        self.root = root
        self.remove_root = remove_root
        self.procs: dict[int, NodeProc] = {}
        # Fault injection: each node's blocklist (shares `procs`).
        self.partitions = Partitions(self.procs)
        self.closed = False

    def add_node(self, zone: str | None, timeout: float) -> NodeProc:
        """Starts one more node process (next free id) that joins through a running node, like it (flags,
        certificates); returns it once it serves."""
        seed = next((p for p in self.procs.values() if p.running and not p.paused and p.address), None)
        if seed is None:
            raise NodeUnavailable("add_node(): no running node to join through")
        nid = max(self.procs) + 1
        proc = NodeProc(
            node_id=nid,
            data_dir=self.root / f"node-{nid}",
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
            ensure_certs(seed.certs_dir, [nid], seed.env)
        self.procs[nid] = proc
        start(proc, 0, timeout)
        save_ports(self.root, self.procs)
        return proc

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


def start_local(
    nodes: int,
    data_dir: str | os.PathLike | None,
    zones: Sequence[str] | None,
    log_level: str | None,
    startup_timeout: float,
    node_args: Iterable[str],
    load_balancing: str | None,
    secure: bool,
    fault_injection: bool,
    hosts: Sequence[str] | None,
) -> tuple[_native.Client, list[str], LocalState, Credentials | None]:
    """``Cluster.local``'s work (its docstring says what the arguments mean): checks them, starts the nodes and
    waits until the cluster has formed. Returns a client of every node, their addresses, the state to clean up
    and the credentials (None: insecure). Stops whatever it started when it fails."""
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
    state = LocalState(root, remove)
    env = child_env()
    saved = saved_ports(root)
    deadline = time.monotonic() + startup_timeout
    certs_dir: Path | None = None
    creds: Credentials | None = None
    if secure:
        certs_dir = root / "certs"
        try:
            creds = ensure_certs(certs_dir, range(1, nodes + 1), env)
        except BaseException:
            state.shutdown()
            raise

    def make(i: int, join: str | None) -> NodeProc:
        proc = NodeProc(
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
            start_group(group, deadline, startup_timeout)
        else:
            left = max(0.1, deadline - time.monotonic())
            start(first, 0, left)  # node 1 initialises the cluster: it must serve before others join
            assert first.address is not None
            group = [(make(i, first.address), saved.get(i, 0)) for i in range(2, nodes + 1)]
            start_group(group, deadline, startup_timeout)
        save_ports(root, state.procs)
        addresses = [p.address for p in state.procs.values() if p.address]
        left = max(0.5, min(10.0, deadline - time.monotonic()))
        client = native_client(addresses, creds, connect_timeout=left)
        wait_members(client, state.procs, deadline, startup_timeout)
    except BaseException:
        state.shutdown()
        raise
    return client, addresses, state, creds
