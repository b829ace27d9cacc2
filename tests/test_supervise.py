"""deploy.supervise with real processes: detaching, the pidfile, refusing duplicates, restarts,
giving up, --stop and --status; and the pidfile service plan's commands run by sh."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from deploy.local import stop_pids
from deploy.pidfile import process_running
from deploy.services import parse_status, service_plan

REPO_ROOT = Path(__file__).resolve().parent.parent
SLEEPER = "import os, time\nprint('worker up', os.getpid(), flush=True)\ntime.sleep(300)"
WORKER = [sys.executable, "-c", SLEEPER]


def wait_for(predicate: Callable[[], Any], timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    return predicate()


class Supervised:
    """One supervised worker in tmp_path; remembers every pid it saw so the test can end them all."""

    def __init__(self, tmp_path: Path) -> None:
        self.pidfile = tmp_path / "run" / "w1.pid"
        self.log = tmp_path / "logs" / "w1.log"
        self.pids: set[int] = set()

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "deploy.supervise", *args], capture_output=True, text=True,
                              timeout=timeout, cwd=REPO_ROOT)

    def start(self, cmd: list[str] = WORKER, *options: str) -> subprocess.CompletedProcess:
        result = self.cli("--name", "w1", "--pidfile", str(self.pidfile), "--log", str(self.log), *options, "--", *cmd)
        self.state()
        return result

    def state(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.pidfile.read_text())
        except (OSError, ValueError):
            return None
        self.pids.update(p for p in (data.get("supervisor_pid"), data.get("worker_pid")) if p)
        return data

    def status(self) -> dict[str, Any]:
        result = self.cli("--status", "--pidfile", str(self.pidfile))
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture
def supervised(tmp_path: Path):
    run = Supervised(tmp_path)
    try:
        yield run
    finally:
        run.state()
        stop_pids([p for p in run.pids if process_running(p)])


def test_start_detaches_and_writes_the_pidfile_before_returning(supervised: Supervised):
    began = time.monotonic()
    result = supervised.start()
    elapsed = time.monotonic() - began
    assert result.returncode == 0, result.stderr
    assert elapsed < 10, "the foreground must not wait for the worker"
    state = supervised.state()
    assert state is not None, "the pidfile exists as soon as start returns"
    assert set(state) >= {"supervisor_pid", "worker_pid", "started_at", "cmd"}
    assert state["cmd"] == WORKER
    supervisor, worker = state["supervisor_pid"], state["worker_pid"]
    assert process_running(supervisor) and process_running(worker)
    # Detached: its own session, so the SSH session that started it may end.
    assert os.getsid(supervisor) != os.getsid(0)
    if Path("/proc").is_dir():
        assert os.readlink(f"/proc/{supervisor}/fd/0") == "/dev/null"
        assert os.readlink(f"/proc/{supervisor}/fd/2") == str(supervised.log)
    assert wait_for(lambda: f"worker up {worker}" in supervised.log_text())
    assert f"worker pid {worker} started" in supervised.log_text()


def test_second_start_is_refused_while_a_supervisor_lives(supervised: Supervised):
    assert supervised.start().returncode == 0
    before = supervised.state()
    again = supervised.start()
    assert again.returncode == 3
    assert "already supervised" in again.stderr and str(before["supervisor_pid"]) in again.stderr
    assert supervised.state() == before


def test_killed_worker_is_restarted_with_a_new_pid(supervised: Supervised):
    assert supervised.start().returncode == 0
    first = supervised.state()
    os.kill(first["worker_pid"], signal.SIGKILL)

    def restarted() -> dict | None:
        state = supervised.state()
        if state and state["worker_pid"] not in (None, first["worker_pid"]):
            return state
        return None

    second = wait_for(restarted, timeout_s=10)
    assert second, "a new worker within 10 s: " + supervised.log_text()
    assert second["supervisor_pid"] == first["supervisor_pid"]
    assert second["restarts"] == 1
    assert process_running(second["worker_pid"])
    assert "was killed by SIGKILL" in supervised.log_text()


def test_stop_ends_supervisor_and_worker_and_removes_the_pidfile(supervised: Supervised):
    assert supervised.start().returncode == 0
    state = supervised.state()
    assert supervised.status() == {
        "running": True, "supervisor_pid": state["supervisor_pid"], "worker_pid": state["worker_pid"],
        "name": "w1", "started_at": state["started_at"], "restarts": 0,
    }
    stopped = supervised.cli("--stop", "--pidfile", str(supervised.pidfile))
    assert stopped.returncode == 0, stopped.stderr
    assert not supervised.pidfile.exists()
    assert wait_for(lambda: not process_running(state["supervisor_pid"]), 5)
    assert not process_running(state["worker_pid"])
    assert supervised.status() == {"running": False, "supervisor_pid": None, "worker_pid": None}
    assert "stopped" in supervised.log_text()
    # Stopping what is not running is fine, and so is starting again afterwards.
    assert supervised.cli("--stop", "--pidfile", str(supervised.pidfile)).returncode == 0
    assert supervised.start().returncode == 0


def test_status_of_a_pidfile_never_written(supervised: Supervised):
    assert supervised.status() == {"running": False, "supervisor_pid": None, "worker_pid": None}


def test_worker_ignoring_sigterm_is_killed_after_the_grace_period(supervised: Supervised):
    stubborn = [sys.executable, "-c", "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                "print('stubborn up', flush=True)\ntime.sleep(300)"]
    assert supervised.start(stubborn).returncode == 0
    state = supervised.state()
    assert wait_for(lambda: "stubborn up" in supervised.log_text())
    began = time.monotonic()
    assert supervised.cli("--stop", "--pidfile", str(supervised.pidfile)).returncode == 0
    assert 9 < time.monotonic() - began < 20
    assert not process_running(state["worker_pid"])
    assert "killing it" in supervised.log_text()


def test_gives_up_after_max_restarts_quick_failures(supervised: Supervised):
    failing = [sys.executable, "-c", "import sys; print('failing'); sys.exit(7)"]
    assert supervised.start(failing, "--max-restarts", "1").returncode == 0
    supervisor = supervised.state()["supervisor_pid"]
    # Fails at once, restarts after 1 s, fails again: 2 quick failures > 1 restart allowed.
    assert wait_for(lambda: not process_running(supervisor), timeout_s=15), supervised.log_text()
    log = supervised.log_text()
    assert log.count("exited with code 7") == 2
    assert "giving up" in log
    assert not supervised.pidfile.exists()
    assert supervised.status()["running"] is False


def test_a_command_that_cannot_run_fails_the_start(supervised: Supervised, tmp_path: Path):
    result = supervised.start([str(tmp_path / "no-such-program")])
    assert result.returncode == 1
    assert "cannot run" in result.stderr
    assert not supervised.pidfile.exists()
    assert supervised.status()["running"] is False


def test_start_ends_a_worker_left_behind_by_a_killed_supervisor(supervised: Supervised):
    assert supervised.start().returncode == 0
    old = supervised.state()
    os.kill(old["supervisor_pid"], signal.SIGKILL)
    assert wait_for(lambda: not process_running(old["supervisor_pid"]), 5)
    assert process_running(old["worker_pid"]), "the orphan keeps running until someone ends it"
    assert supervised.start().returncode == 0
    assert not process_running(old["worker_pid"])
    assert supervised.state()["worker_pid"] != old["worker_pid"]


def test_pidfile_plan_commands_run_in_sh(tmp_path: Path):
    """The plan's own shell commands, in an install dir with a space, against a stand-in venv python."""
    install = tmp_path / "boltpipe home"
    venv_bin = install / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
    (venv_bin / "python").chmod(0o755)
    plan = service_plan("pidfile", "w1", WORKER, str(install), str(tmp_path))
    pids: list[int] = []

    def sh(cmd: str) -> str:
        result = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        return result.stdout

    try:
        sh(plan.start_cmd)
        status = parse_status("pidfile", sh(plan.status_cmd))
        assert status.running and status.pid
        pids.append(status.pid)
        state = json.loads((install / "run" / "w1.pid").read_text())
        pids.append(state["supervisor_pid"])
        assert Path(plan.log_path) == install / "logs" / "w1.log"
        # start again = restart: a new worker under a new supervisor.
        sh(plan.start_cmd)
        again = parse_status("pidfile", sh(plan.status_cmd))
        pids.append(again.pid)
        assert again.running and again.pid != status.pid
        assert not process_running(status.pid)
        sh(plan.stop_cmd)
        assert parse_status("pidfile", sh(plan.status_cmd)).running is False
        assert not process_running(again.pid)
    finally:
        try:
            pids.append(json.loads((install / "run" / "w1.pid").read_text())["supervisor_pid"])
        except (OSError, ValueError):
            pass
        stop_pids([p for p in pids if p and process_running(p)])
