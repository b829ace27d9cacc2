"""What every service manager backend (launchd, systemd, pidfile) produces and reads back."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from typing import Sequence

# Worker names become launchd labels, systemd unit names and file names.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class ServicePlan:
    """Everything needed to keep one worker running on a node, as files and shell commands.

    Write `files` (remote absolute path -> text), then run `start_cmd`. Every command is
    meant for `sh -c` on the node and quotes its paths."""

    manager: str                # "launchd" | "systemd" | "pidfile"
    files: dict[str, str]
    start_cmd: str              # install (files already written) and start, or restart if it runs
    stop_cmd: str               # stop; it stays stopped (also across reboots) until start_cmd
    status_cmd: str             # its output goes to parse_status(manager, output)
    remove_paths: list[str]     # what remove_cmd deletes
    log_path: str               # where the worker's stdout and stderr go
    remove_cmd: str = ""        # stop_cmd, then delete remove_paths and tell the manager
    preflight_cmd: str | None = None  # its output goes to preflight_hint(manager, output)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ServiceStatus:
    running: bool               # a worker process runs now
    pid: int | None             # the worker's pid
    detail: str                 # for people: the manager's own words for the state


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"worker name {name!r} cannot name a service: use letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit)"
        )
    return name


def check_argv(argv: Sequence[str]) -> list[str]:
    if not argv:
        raise ValueError("the worker command (argv) is empty")
    bad = [a for a in argv if "\0" in a]
    if bad:
        raise ValueError(f"worker command arguments may not contain NUL bytes: {bad!r}")
    return list(argv)


def under_home(path: str, home: str) -> str:
    """A remote absolute path: `~` and relative paths are taken from the node user's home."""
    if "\n" in path or "\0" in path:
        raise ValueError(f"path {path!r} contains a newline or NUL byte")
    if path == "~" or path.startswith("~/"):
        path = home + path[1:]
    elif not path.startswith("/"):
        path = posixpath.join(home, path)
    return posixpath.normpath(path)
