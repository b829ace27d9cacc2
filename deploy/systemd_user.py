"""Linux with systemd: the worker as a systemd user unit."""

from __future__ import annotations

import posixpath
import re
from shlex import quote

from deploy.service_types import ServicePlan, ServiceStatus

SYSTEMCTL = "systemctl --user"
LINGER_CHECK_CMD = 'loginctl show-user "$(id -un)" -p Linger 2>&1 || true'
# Words systemd reads back unchanged without quotes.
_PLAIN_WORD = re.compile(r"[A-Za-z0-9_./:=,+@-]+")


def unit_name(name: str) -> str:
    return f"boltpipe-worker-{name}.service"


def unit_path(name: str, home: str) -> str:
    return posixpath.join(home, ".config/systemd/user", unit_name(name))


def _no_specifiers(value: str) -> str:
    # systemd expands %x specifiers in most settings.
    return value.replace("%", "%%")


def exec_quote(arg: str) -> str:
    """One word of ExecStart= as systemd splits it: "double quotes" with C escapes (\\n for a newline), %% and $$."""
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if _PLAIN_WORD.fullmatch(arg):
        return escaped
    inner = escaped.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{inner}"'


def unit_text(name: str, argv: list[str], install_dir: str, log_path: str) -> str:
    log = _no_specifiers(log_path)
    return "\n".join([
        "[Unit]",
        f"Description=boltpipe worker {name}",
        "",
        "[Service]",
        "Type=simple",
        "ExecStart=" + " ".join(exec_quote(a) for a in argv),
        f"WorkingDirectory={_no_specifiers(install_dir)}",
        "Environment=PYTHONUNBUFFERED=1",
        "Restart=always",
        "RestartSec=2",
        f"StandardOutput=append:{log}",
        f"StandardError=append:{log}",
        "",
        "[Install]",
        "WantedBy=default.target",
        "",
    ])


def plan(name: str, argv: list[str], install_dir: str, home: str, log_path: str) -> ServicePlan:
    unit = unit_name(name)
    path = unit_path(name, home)
    # disable fails for a unit file that is not there; stopping what was never installed is not an error.
    stop = f"if [ -e {quote(path)} ]; then {SYSTEMCTL} disable --now {unit}; fi"
    start = (
        f"mkdir -p {quote(posixpath.dirname(log_path))} && {SYSTEMCTL} daemon-reload && "
        # enable + restart rather than enable --now: a worker already running picks up a new unit or wheel.
        f"{SYSTEMCTL} enable {unit} && {SYSTEMCTL} restart {unit}"
    )
    return ServicePlan(
        manager="systemd",
        files={path: unit_text(name, argv, install_dir, log_path)},
        start_cmd=start,
        stop_cmd=stop,
        status_cmd=f"{SYSTEMCTL} show -p MainPID -p ActiveState -p SubState -p LoadState {unit} 2>&1 || true",
        remove_paths=[path],
        log_path=log_path,
        remove_cmd=f"{{ {stop}; }} && rm -f {quote(path)} && {SYSTEMCTL} daemon-reload",
        preflight_cmd=LINGER_CHECK_CMD,
    )


def linger_hint(output: str) -> str | None:
    """None when the user lingers; otherwise what to do so the worker outlives SSH sessions."""
    if re.search(r"^Linger=yes\s*$", output, re.MULTILINE):
        return None
    return (
        "lingering is off for this user, so systemd stops the worker when the last login session ends and "
        "does not start it at boot; run once on the node: sudo loginctl enable-linger \"$(id -un)\""
    )


def _properties(output: str) -> dict[str, str]:
    props: dict[str, str] = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if sep and re.fullmatch(r"[A-Za-z]+", key):
            props[key] = value.strip()
    return props


def parse_status(output: str) -> ServiceStatus:
    props = _properties(output)
    active = props.get("ActiveState")
    if active is None:
        text = output.strip().splitlines()
        return ServiceStatus(False, None, text[0] if text else "no output from systemctl show")
    if props.get("LoadState") == "not-found":
        return ServiceStatus(False, None, "not installed")
    main_pid = props.get("MainPID", "0")
    pid = int(main_pid) if main_pid.isdigit() and int(main_pid) > 0 else None
    sub = props.get("SubState")
    detail = f"{active} ({sub})" if sub else active
    return ServiceStatus(active in ("active", "reloading") and pid is not None, pid, detail)
