"""Worker processes on this machine: start them, wait until they listen, stop them by pid."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from node.blas_preload import worker_thread_env
from proto import WORKER_READY_MARKER as READY_MARKER


class WorkerStartError(RuntimeError):
    pass


@dataclass(frozen=True)
class LocalWorkerSpec:
    name: str
    host: str
    port: int
    metrics_port: int = 0
    settings: dict = field(default_factory=dict, hash=False)  # --config: the cluster secret, TLS


@dataclass
class LocalWorker:
    name: str
    host: str
    port: int
    pid: int
    log_path: Path
    process: subprocess.Popen | None = None
    spec: LocalWorkerSpec | None = None
    parent_pid: int | None = None
    env: dict[str, str] = field(default_factory=dict)  # what its environment adds to ours (again on a restart)


def port_in_use(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # Like the servers themselves: connections of a previous run in TIME_WAIT do not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def start_local_workers(
    specs: Sequence[LocalWorkerSpec],
    log_dir: Path,
    *,
    parent_pid: int | None = None,
    timeout_s: float = 60.0,
    extra_env: dict[str, str] | None = None,
) -> list[LocalWorker]:
    """Start every worker, then wait for all of them. If any cannot start, the ones
    already started are stopped and the error names the worker and why. Several workers on this
    machine get one OpenBLAS thread each (node/blas_preload.py), unless OPENBLAS_NUM_THREADS is set."""
    busy = [f"{s.name} ({s.host}:{s.port})" for s in specs if port_in_use(s.host, s.port)]
    if busy:
        raise WorkerStartError(
            "port already in use for " + ", ".join(busy) + "; stop what is listening there "
            "(maybe `cluster down` for a cluster already up) or change the port in the inventory"
        )
    log_dir.mkdir(parents=True, exist_ok=True)
    env = worker_thread_env(len(specs), os.environ) | (extra_env or {})
    workers: list[LocalWorker] = []
    try:
        for spec in specs:
            workers.append(_spawn(spec, log_dir, parent_pid, env, append=False))
        _wait_ready(workers, timeout_s)
    except BaseException:
        stop_pids([w.pid for w in workers])
        raise
    return workers


def restart_local_worker(worker: LocalWorker, timeout_s: float = 60.0) -> LocalWorker:
    """The same worker again (same command, same log, appended), once it is ready."""
    assert worker.spec is not None, "only workers started by start_local_workers can be restarted"
    fresh = _spawn(worker.spec, worker.log_path.parent, worker.parent_pid, worker.env, append=True)
    try:
        _wait_ready([fresh], timeout_s)
    except BaseException:
        stop_pids([fresh.pid])
        raise
    return fresh


def _spawn(spec: LocalWorkerSpec, log_dir: Path, parent_pid: int | None, extra_env: dict[str, str] | None,
           *, append: bool) -> LocalWorker:
    env = dict(os.environ, **(extra_env or {}))
    env.setdefault("PYTHONUNBUFFERED", "1")
    log_path = log_dir / f"worker-{spec.name}.log"
    cmd = [sys.executable, "-m", "node", "--host", spec.host, "--port", str(spec.port), "--name", spec.name]
    if parent_pid:
        cmd += ["--parent-pid", str(parent_pid)]
    if spec.metrics_port:
        cmd += ["--metrics-port", str(spec.metrics_port)]
    if spec.settings:
        # Secrets travel in a file only this user can read, never on a command line.
        config = log_dir / f"worker-{spec.name}.json"
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(spec.settings, f)
        cmd += ["--config", str(config)]
    with open(log_path, "ab" if append else "wb") as log:
        # cwd: the log directory, so no `node/` folder of the caller's shadows the worker package.
        process = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True, cwd=log_dir,
        )
    return LocalWorker(spec.name, spec.host, spec.port, process.pid, log_path, process, spec, parent_pid,
                       dict(extra_env or {}))


def _said_ready(worker: LocalWorker) -> bool:
    """This process (by pid: a restarted worker appends to the log of the one before) is ready."""
    tail = f"pid={worker.pid}"
    return any(line.startswith(READY_MARKER) and line.rstrip().endswith(tail)
               for line in worker.log_path.read_text(errors="replace").splitlines())


def _wait_ready(workers: list[LocalWorker], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    pending = list(workers)
    while pending:
        for worker in list(pending):
            if _said_ready(worker):
                pending.remove(worker)
                continue
            code = worker.process.poll() if worker.process else None
            if code is not None:
                raise WorkerStartError(
                    f"worker {worker.name} exited with code {code} before it was ready; its log ({worker.log_path}):\n"
                    + log_tail(worker.log_path)
                )
        if pending and time.monotonic() > deadline:
            names = ", ".join(w.name for w in pending)
            raise WorkerStartError(f"worker(s) {names} did not start within {timeout_s:.0f} s; see {pending[0].log_path}")
        if pending:
            time.sleep(0.05)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child counts as gone.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def stop_pids(pids: Sequence[int], timeout_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL whatever is still there after the timeout."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout_s
    remaining = [p for p in pids if pid_alive(p)]
    while remaining and time.monotonic() < deadline:
        time.sleep(0.05)
        remaining = [p for p in remaining if pid_alive(p)]
    for pid in remaining:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in remaining:
        while pid_alive(pid) and time.monotonic() < deadline + 5:
            time.sleep(0.05)
