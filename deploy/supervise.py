"""`python -m deploy.supervise`: keep one worker running on a machine without systemd or launchd.

    python -m deploy.supervise --name NAME --pidfile P --log L [--max-restarts N] -- CMD...
    python -m deploy.supervise --stop --pidfile P
    python -m deploy.supervise --status --pidfile P

Starting detaches from the terminal (the SSH session that ran it may close) and returns
only once P is written, so the caller can read it at once. The supervisor restarts CMD
whenever it exits, waiting 1 s, 2 s, 4 s ... up to 30 s between quick failures, and gives
up after --max-restarts restarts in a row that each died within 60 s of starting.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shlex
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from deploy.local import stop_pids
from deploy.pidfile import (
    is_same_command,
    process_running,
    read_pidfile,
    remove_pidfile,
    supervisor_running,
    try_lock,
    write_pidfile,
)

EXIT_ALREADY_RUNNING = 3
FIRST_DELAY_S = 1.0
MAX_DELAY_S = 30.0
STABLE_AFTER_S = 60.0     # a worker up this long is healthy: backoff and failure count start over
STOP_GRACE_S = 10.0       # SIGTERM to SIGKILL
POLL_S = 0.2
READY_TIMEOUT_S = 30.0


class Supervisor:
    def __init__(self, name: str, pidfile: Path, cmd: list[str], max_restarts: int) -> None:
        self.name = name
        self.pidfile = pidfile
        self.cmd = cmd
        self.max_restarts = max_restarts
        self.stopping = False
        self.worker: subprocess.Popen | None = None
        self.worker_started = 0.0      # monotonic, for uptime
        self.worker_started_at = ""    # wall clock, for people
        self.restarts = 0
        self.start_error = ""

    def log(self, message: str) -> None:
        stamp = datetime.now().astimezone().isoformat(timespec="seconds")
        print(f"{stamp} supervise[{self.name}] {message}", file=sys.stderr, flush=True)

    def run(self, ready_fd: int) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_stop_signal)
        self.log(f"supervisor pid {os.getpid()} starting: {shlex.join(self.cmd)}")
        if not self._start_worker():
            os.write(ready_fd, f"error: cannot run {self.cmd[0]!r}: {self.start_error}\n".encode())
            return 1
        os.write(ready_fd, b"ok\n")
        os.close(ready_fd)
        delay, quick_failures = FIRST_DELAY_S, 0
        while True:
            code = self._wait_for_exit()
            if self.stopping:
                return self._shutdown()
            uptime = time.monotonic() - self.worker_started
            if self.worker is not None:
                self.log(f"worker pid {self.worker.pid} {_describe_exit(code)} after {uptime:.1f} s")
            if uptime >= STABLE_AFTER_S:
                delay, quick_failures = FIRST_DELAY_S, 0
            else:
                quick_failures += 1
            if quick_failures > self.max_restarts:
                self.log(
                    f"giving up: the worker died {quick_failures} times in a row within {STABLE_AFTER_S:.0f} s "
                    "of starting; fix what the lines above say, then start it again"
                )
                remove_pidfile(self.pidfile)
                return 1
            self.worker = None
            self._write_state()
            self.log(f"restarting in {delay:g} s")
            if self._sleep_unless_stopping(delay):
                return self._shutdown()
            delay = min(delay * 2, MAX_DELAY_S)
            self.restarts += 1
            self._start_worker()

    def _on_stop_signal(self, signum: int, _frame: Any) -> None:
        self.stopping = True

    def _start_worker(self) -> bool:
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.worker_started = time.monotonic()
        self.worker_started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        try:
            # stdout/stderr: inherited, i.e. the log file.
            self.worker = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, env=env)
        except OSError as exc:
            self.start_error = str(exc)
            self.log(f"cannot run {self.cmd[0]!r}: {exc}")
            self.worker = None
            return False
        self._write_state()
        self.log(f"worker pid {self.worker.pid} started")
        return True

    def _write_state(self) -> None:
        write_pidfile(self.pidfile, {
            "name": self.name,
            "supervisor_pid": os.getpid(),
            "worker_pid": self.worker.pid if self.worker else None,
            "started_at": self.worker_started_at,
            "cmd": self.cmd,
            "restarts": self.restarts,
        })

    def _wait_for_exit(self) -> int | None:
        """The worker's exit code; None when a stop was asked for (or no worker could start)."""
        while not self.stopping and self.worker is not None:
            code = self.worker.poll()
            if code is not None:
                return code
            time.sleep(POLL_S)
        return None

    def _sleep_unless_stopping(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
        return self.stopping

    def _shutdown(self) -> int:
        worker = self.worker
        if worker is not None and worker.poll() is None:
            self.log(f"stopping worker pid {worker.pid}")
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.log(f"worker pid {worker.pid} still runs after {STOP_GRACE_S:.0f} s; killing it")
                worker.kill()
                worker.wait()
        remove_pidfile(self.pidfile)
        self.log("stopped")
        return 0


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _end_orphaned_worker(pidfile: Path) -> int | None:
    """A supervisor that was SIGKILLed leaves its worker running; end it so a new one can have its port."""
    data = read_pidfile(pidfile) or {}
    pid = data.get("worker_pid")
    if is_same_command(pid, data.get("cmd")):
        stop_pids([pid], timeout_s=STOP_GRACE_S)
        return pid
    return None


def start(name: str, pidfile: Path, log_path: Path, cmd: list[str], max_restarts: int) -> int:
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    lock_fd = try_lock(pidfile)
    if lock_fd is None:
        pid = (read_pidfile(pidfile) or {}).get("supervisor_pid", "?")
        print(
            f"error: worker {name} is already supervised (supervisor pid {pid}, pidfile {pidfile}); "
            f"stop it first: python -m deploy.supervise --stop --pidfile {pidfile}",
            file=sys.stderr,
        )
        return EXIT_ALREADY_RUNNING
    orphan = _end_orphaned_worker(pidfile)
    if orphan:
        print(f"ended worker pid {orphan} left behind by a supervisor that is gone", file=sys.stderr)
    remove_pidfile(pidfile)
    sys.stdout.flush()
    sys.stderr.flush()
    read_fd, ready_fd = os.pipe()
    child = os.fork()
    if child:
        # Foreground: our copy of the lock fd closes on exit; the supervisor's copy keeps the lock.
        os.close(ready_fd)
        return _await_ready(read_fd, child, name, pidfile, log_path)
    os.close(read_fd)
    os.setsid()          # no controlling terminal: closing the SSH session sends us no SIGHUP
    if os.fork():
        os._exit(0)      # the grandchild, not a session leader, can never get a terminal again
    _redirect_stdio(log_path)
    return Supervisor(name, pidfile, cmd, max_restarts).run(ready_fd)


def _redirect_stdio(log_path: Path) -> None:
    devnull = os.open(os.devnull, os.O_RDONLY)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(devnull, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(devnull)
    os.close(log_fd)


def _await_ready(read_fd: int, child: int, name: str, pidfile: Path, log_path: Path) -> int:
    os.waitpid(child, 0)  # the intermediate process exits at once
    message = b""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while b"\n" not in message and time.monotonic() < deadline:
        ready, _, _ = select.select([read_fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(read_fd, 4096)
        if not chunk:
            break
        message += chunk
    os.close(read_fd)
    if message.startswith(b"ok"):
        data = read_pidfile(pidfile) or {}
        print(f"supervising {name}: supervisor pid {data.get('supervisor_pid')}, "
              f"worker pid {data.get('worker_pid')}, log {log_path}")
        return 0
    text = message.decode(errors="replace").strip() or "error: the supervisor ended before it started the worker"
    print(f"{text}; see {log_path}", file=sys.stderr)
    return 1


def stop(pidfile: Path, timeout_s: float) -> int:
    data = read_pidfile(pidfile) or {}
    name = data.get("name", pidfile.stem)
    if not supervisor_running(pidfile):
        orphan = _end_orphaned_worker(pidfile)
        remove_pidfile(pidfile)
        print(f"{name}: not running" + (f" (ended leftover worker pid {orphan})" if orphan else ""))
        return 0
    supervisor_pid = data.get("supervisor_pid")
    if not supervisor_pid:
        print(f"error: a supervisor holds {pidfile}.lock but {pidfile} names none; try again in a moment",
              file=sys.stderr)
        return 1
    _signal(supervisor_pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while supervisor_running(pidfile) and time.monotonic() < deadline:
        time.sleep(0.1)
    if supervisor_running(pidfile):
        # It did not finish in time: end both here.
        worker_pid = data.get("worker_pid")
        if is_same_command(worker_pid, data.get("cmd")):
            _signal(worker_pid, signal.SIGKILL)
        _signal(supervisor_pid, signal.SIGKILL)
        remove_pidfile(pidfile)
    # The lock goes with the process's files; wait for the process itself too, briefly.
    gone_by = time.monotonic() + 2.0
    while process_running(supervisor_pid) and time.monotonic() < gone_by:
        time.sleep(0.05)
    print(f"{name}: stopped (supervisor pid {supervisor_pid})")
    return 0


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def status(pidfile: Path) -> dict[str, Any]:
    """running: a supervisor is alive; worker_pid: None while it waits to restart the worker."""
    if not supervisor_running(pidfile):
        return {"running": False, "supervisor_pid": None, "worker_pid": None}
    data = read_pidfile(pidfile) or {}
    worker_pid = data.get("worker_pid")
    return {
        "running": True,
        "supervisor_pid": data.get("supervisor_pid"),
        "worker_pid": worker_pid if process_running(worker_pid) else None,
        "name": data.get("name"),
        "started_at": data.get("started_at"),
        "restarts": data.get("restarts", 0),
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.supervise",
        usage="%(prog)s --name NAME --pidfile P --log L [--max-restarts N] -- CMD...\n"
              "       %(prog)s --stop --pidfile P\n       %(prog)s --status --pidfile P",
        description="Keep one boltpipe worker running, restarting it when it exits.",
    )
    parser.add_argument("--pidfile", required=True, help="JSON state file; <pidfile>.lock is held while supervising")
    parser.add_argument("--name", help="worker name, for the log")
    parser.add_argument("--log", help="file the supervisor and the worker append to")
    parser.add_argument("--max-restarts", type=int, default=10,
                        help="restarts in a row of a worker that dies within 60 s before giving up (default 10)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--stop", action="store_true", help="stop the supervisor and its worker")
    mode.add_argument("--status", action="store_true", help="print JSON {running, supervisor_pid, worker_pid}")
    parser.add_argument("--timeout", type=float, default=STOP_GRACE_S + 5,
                        help="--stop: seconds to wait before killing both (default 15)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after `--` is the worker's command, whatever it looks like.
    cmd = argv[argv.index("--") + 1:] if "--" in argv else []
    options = argv[:argv.index("--")] if "--" in argv else argv
    parser = _parser()
    args = parser.parse_args(options)
    pidfile = Path(args.pidfile).expanduser().absolute()
    if args.stop:
        return stop(pidfile, args.timeout)
    if args.status:
        print(json.dumps(status(pidfile)))
        return 0
    if not args.name or not args.log or not cmd:
        parser.error("starting needs --name, --log and the worker command after `--`")
    if args.max_restarts < 0:
        parser.error("--max-restarts must be 0 or more")
    return start(args.name, pidfile, Path(args.log).expanduser().absolute(), cmd, args.max_restarts)


if __name__ == "__main__":
    sys.exit(main())
