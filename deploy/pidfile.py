"""The supervisor's pidfile and the lock that proves a supervisor is alive.

A pid alone cannot prove that: after a reboot or a crash the number may belong to
another program. So the supervisor also holds an flock on `<pidfile>.lock` for its
whole life; the kernel drops the lock when the process ends, however it ends.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

import psutil


def lock_path(pidfile: Path) -> Path:
    return pidfile.with_name(pidfile.name + ".lock")


def try_lock(pidfile: Path) -> int | None:
    """The fd holding the lock, or None when another process holds it.
    The fd is not inherited by exec'd children, so only the supervisor keeps it."""
    fd = os.open(lock_path(pidfile), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def supervisor_running(pidfile: Path) -> bool:
    """True while some process holds the pidfile's lock."""
    try:
        fd = os.open(lock_path(pidfile), os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing also releases the lock if we just took it
    return False


def write_pidfile(pidfile: Path, data: dict[str, Any]) -> None:
    """Atomic: a reader sees the old content or the new, never half a file."""
    tmp = pidfile.with_name(f".{pidfile.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data) + "\n")
    os.replace(tmp, pidfile)


def read_pidfile(pidfile: Path) -> dict[str, Any] | None:
    """None when the file is missing or is not the JSON the supervisor writes."""
    try:
        data = json.loads(pidfile.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remove_pidfile(pidfile: Path) -> None:
    try:
        pidfile.unlink()
    except FileNotFoundError:
        pass


def process_running(pid: int | None) -> bool:
    """Exists and is not a zombie (an orphan's zombie lingers where init is slow to reap)."""
    if not pid:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def is_same_command(pid: int | None, cmd: list[str] | None) -> bool:
    """True when pid runs exactly cmd: a recorded worker pid is only trusted this way."""
    if not pid or not cmd or not process_running(pid):
        return False
    try:
        return psutil.Process(pid).cmdline() == list(cmd)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
