"""Neither launchd nor a systemd user manager: the worker under `python -m deploy.supervise`."""

from __future__ import annotations

import json
import posixpath
from shlex import join, quote

from deploy.service_types import ServicePlan, ServiceStatus


def venv_python(install_dir: str) -> str:
    return posixpath.join(install_dir, "venv/bin/python")


def pidfile_path(name: str, install_dir: str) -> str:
    return posixpath.join(install_dir, "run", name + ".pid")


def default_log_path(name: str, install_dir: str) -> str:
    return posixpath.join(install_dir, "logs", name + ".log")


def plan(name: str, argv: list[str], install_dir: str, home: str, log_path: str) -> ServicePlan:
    pidfile = pidfile_path(name, install_dir)
    supervise = [venv_python(install_dir), "-m", "deploy.supervise"]
    # From the install dir: a `deploy/` or `node/` folder in the login directory must not shadow the packages.
    cd = f"cd {quote(install_dir)}"
    stop = f"{cd} && {join(supervise + ['--stop', '--pidfile', pidfile])}"
    start = (
        f"mkdir -p {quote(posixpath.dirname(pidfile))} {quote(posixpath.dirname(log_path))} && "
        f"{stop} >/dev/null && "
        f"{join(supervise + ['--name', name, '--pidfile', pidfile, '--log', log_path, '--', *argv])}"
    )
    lock = pidfile + ".lock"
    return ServicePlan(
        manager="pidfile",
        files={},
        start_cmd=start,
        stop_cmd=stop,
        status_cmd=f"{cd} && {join(supervise + ['--status', '--pidfile', pidfile])} 2>&1 || true",
        remove_paths=[lock],
        log_path=log_path,
        remove_cmd=f"{stop} && rm -f {quote(lock)}",
        notes=["nothing restarts the supervisor after a reboot; run start_cmd again"],
    )


def parse_status(output: str) -> ServiceStatus:
    """Reads the JSON line `deploy.supervise --status` prints; anything else means not running."""
    lines = [ln for ln in output.splitlines() if ln.lstrip().startswith("{")]
    try:
        data = json.loads(lines[-1]) if lines else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        text = output.strip().splitlines()
        return ServiceStatus(False, None, text[-1] if text else "no output from deploy.supervise --status")
    if not data.get("running"):
        return ServiceStatus(False, None, "not running")
    supervisor, worker = data.get("supervisor_pid"), data.get("worker_pid")
    if worker is None:
        return ServiceStatus(False, None, f"supervisor pid {supervisor} is waiting to restart the worker")
    return ServiceStatus(True, int(worker), f"supervisor pid {supervisor}, worker pid {worker}")
