"""Keeping a worker running on a node: pick a service manager, plan its files and commands, read its status.

Pure functions; the SSH side writes `plan.files` and runs the commands on the node.
"""

from __future__ import annotations

from types import ModuleType
from typing import Sequence

from deploy import launchd, pidfile_service, systemd_user
from deploy.service_types import ServicePlan, ServiceStatus, check_argv, check_name, under_home

__all__ = [
    "MANAGERS", "ServicePlan", "ServiceStatus", "choose_manager", "parse_status", "preflight_hint", "service_plan",
]

MANAGERS = ("launchd", "systemd", "pidfile")
_BACKENDS = {"launchd": launchd, "systemd": systemd_user, "pidfile": pidfile_service}


def choose_manager(os_name: str, systemd_user_available: bool) -> str:
    """os_name as `uname -s` or sys.platform gives it ("Darwin", "darwin", "Linux", ...);
    deploy.probe's NodeProbe knows both facts."""
    if os_name.strip().lower() in ("darwin", "macos"):
        return "launchd"
    return "systemd" if systemd_user_available else "pidfile"


def service_plan(
    manager: str, name: str, argv: Sequence[str], install_dir: str, home: str, log_path: str | None = None,
) -> ServicePlan:
    """The files and commands that keep `argv` running as worker `name` on a node.

    home: the node user's home directory (absolute); install_dir and log_path may start with `~`.
    log_path defaults to ~/Library/Logs/boltpipe/<name>.log for launchd, <install_dir>/logs/<name>.log otherwise."""
    backend = _backend(manager)
    if not home.startswith("/"):
        raise ValueError(f"home must be an absolute path on the node, got {home!r}")
    check_name(name)
    argv = check_argv(argv)
    install_dir = under_home(install_dir, home)
    if log_path is not None:
        log = under_home(log_path, home)
    elif manager == "launchd":
        log = launchd.default_log_path(name, home)
    else:
        log = pidfile_service.default_log_path(name, install_dir)
    return backend.plan(name, argv, install_dir, home, log)


def parse_status(manager: str, output: str) -> ServiceStatus:
    """Reads the output of plan.status_cmd."""
    return _backend(manager).parse_status(output)


def preflight_hint(manager: str, output: str) -> str | None:
    """Reads the output of plan.preflight_cmd: a hint for the person, or None when all is well."""
    if manager == "systemd":
        return systemd_user.linger_hint(output)
    return None


def _backend(manager: str) -> ModuleType:
    try:
        return _BACKENDS[manager]
    except KeyError:
        raise ValueError(f"unknown service manager {manager!r}; expected one of {', '.join(MANAGERS)}") from None
