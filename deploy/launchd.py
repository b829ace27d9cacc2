"""macOS: the worker as a launchd user agent in the logged-in user's GUI domain."""

from __future__ import annotations

import plistlib
import posixpath
import re
from shlex import quote

from deploy.service_types import ServicePlan, ServiceStatus

LABEL_PREFIX = "io.boltpipe.worker."
# `$(id -u)` must stay unquoted for the shell; labels are checked names, so nothing else needs quoting.
DOMAIN = '"gui/$(id -u)"'


def label(name: str) -> str:
    return LABEL_PREFIX + name


def plist_path(name: str, home: str) -> str:
    return posixpath.join(home, "Library/LaunchAgents", label(name) + ".plist")


def default_log_path(name: str, home: str) -> str:
    return posixpath.join(home, "Library/Logs/boltpipe", name + ".log")


def plist_text(name: str, argv: list[str], install_dir: str, log_path: str) -> str:
    agent = {
        "Label": label(name),
        "ProgramArguments": list(argv),
        "WorkingDirectory": install_dir,
        "RunAtLoad": True,
        "KeepAlive": True,
        # Interactive: launchd would otherwise throttle a background agent's CPU and I/O.
        "ProcessType": "Interactive",
        "StandardOutPath": log_path,
        "StandardErrorPath": log_path,
        "EnvironmentVariables": {"PYTHONUNBUFFERED": "1"},
    }
    return plistlib.dumps(agent, fmt=plistlib.FMT_XML).decode("utf-8")


def plan(name: str, argv: list[str], install_dir: str, home: str, log_path: str) -> ServicePlan:
    target = f'"gui/$(id -u)/{label(name)}"'
    path = plist_path(name, home)
    loaded = f"launchctl print {target} >/dev/null 2>&1"
    stop = f"if {loaded}; then launchctl bootout {target}; fi"
    # bootout returns before the old job is gone; bootstrapping too early fails with "5: Input/output error".
    wait_gone = f"i=0; while {loaded} && [ $i -lt 50 ]; do sleep 0.2; i=$((i+1)); done"
    start = (
        f"mkdir -p {quote(posixpath.dirname(log_path))} && "
        f"{{ {stop}; {wait_gone}; launchctl bootstrap {DOMAIN} {quote(path)}; }}"
    )
    return ServicePlan(
        manager="launchd",
        files={path: plist_text(name, argv, install_dir, log_path)},
        start_cmd=start,
        stop_cmd=stop,
        status_cmd=f"launchctl print {target} 2>&1 || true",
        remove_paths=[path],
        log_path=log_path,
        remove_cmd=f"{{ {stop}; }} && rm -f {quote(path)}",
        notes=["the gui/<uid> domain exists only while the user is logged in at the console "
               "(turn on automatic login on a headless Mac mini)"],
    )


def _top_level_fields(output: str) -> dict[str, str]:
    """`key = value` lines directly inside the service's block; nested blocks have their own `state`s."""
    fields: dict[str, str] = {}
    depth = 0
    for raw in output.splitlines():
        line = raw.strip()
        if line == "}":
            depth -= 1
            continue
        if depth == 1 and " = " in line and not line.endswith("{"):
            key, value = line.split(" = ", 1)
            fields.setdefault(key.strip(), value.strip())
        if line.endswith("{"):
            depth += 1
    return fields


def parse_status(output: str) -> ServiceStatus:
    if "Could not find service" in output:
        return ServiceStatus(False, None, "not loaded")
    fields = _top_level_fields(output)
    state = fields.get("state")
    if state is None:
        text = output.strip().splitlines()
        return ServiceStatus(False, None, text[0] if text else "no output from launchctl print")
    pid_text = fields.get("pid", "")
    pid = int(pid_text) if re.fullmatch(r"\d+", pid_text) else None
    detail = f"state = {state}"
    if "last exit code" in fields:
        detail += f", last exit code = {fields['last exit code']}"
    return ServiceStatus(state == "running" and pid is not None, pid, detail)
