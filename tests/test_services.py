"""Service plans for launchd, systemd and the pidfile supervisor: file contents, command quoting,
choosing a manager, and reading status output as launchctl and systemctl print it."""

from __future__ import annotations

import configparser
import plistlib
import shlex
import subprocess

import pytest

from deploy.services import (
    MANAGERS,
    choose_manager,
    parse_status,
    preflight_hint,
    service_plan,
)
from deploy.systemd_user import exec_quote

HOME = "/Users/jane doe"
INSTALL = "~/.boltpipe"
ARGV = [f"{HOME}/.boltpipe/venv/bin/python", "-m", "node", "--config", f"{HOME}/.boltpipe/worker-mini1.yaml"]


def _unit(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # keys are case-sensitive in unit files
    parser.read_string(text)
    return parser


# launchd


def test_launchd_plist_round_trips_with_the_keys_launchd_needs():
    plan = service_plan("launchd", "mini1", ARGV, INSTALL, HOME)
    path = f"{HOME}/Library/LaunchAgents/io.boltpipe.worker.mini1.plist"
    assert list(plan.files) == [path]
    agent = plistlib.loads(plan.files[path].encode())
    log = f"{HOME}/Library/Logs/boltpipe/mini1.log"
    assert agent == {
        "Label": "io.boltpipe.worker.mini1",
        "ProgramArguments": ARGV,
        "WorkingDirectory": f"{HOME}/.boltpipe",
        "RunAtLoad": True,
        "KeepAlive": True,
        "ProcessType": "Interactive",
        "StandardOutPath": log,
        "StandardErrorPath": log,
        "EnvironmentVariables": {"PYTHONUNBUFFERED": "1"},
    }
    assert plan.log_path == log
    assert plan.remove_paths == [path]


def test_launchd_commands_quote_paths_and_boot_out_before_bootstrapping():
    plan = service_plan("launchd", "mini1", ARGV, INSTALL, HOME)
    path = shlex.quote(f"{HOME}/Library/LaunchAgents/io.boltpipe.worker.mini1.plist")
    target = '"gui/$(id -u)/io.boltpipe.worker.mini1"'
    assert f'launchctl bootstrap "gui/$(id -u)" {path}' in plan.start_cmd
    assert plan.start_cmd.index(f"launchctl bootout {target}") < plan.start_cmd.index("launchctl bootstrap")
    assert shlex.quote(f"{HOME}/Library/Logs/boltpipe") in plan.start_cmd
    assert f"launchctl bootout {target}" in plan.stop_cmd
    assert f"launchctl print {target}" in plan.status_cmd
    assert plan.remove_cmd.endswith(f"rm -f {path}")


LAUNCHCTL_RUNNING = """\
gui/501/io.boltpipe.worker.mini1 = {
	active count = 1
	path = /Users/jane/Library/LaunchAgents/io.boltpipe.worker.mini1.plist
	type = LaunchAgent
	state = running

	program = /Users/jane/.boltpipe/venv/bin/python
	arguments = {
		/Users/jane/.boltpipe/venv/bin/python
		-m
		node
		--config
		/Users/jane/.boltpipe/worker-mini1.yaml
	}

	working directory = /Users/jane/.boltpipe

	stdout path = /Users/jane/Library/Logs/boltpipe/mini1.log
	stderr path = /Users/jane/Library/Logs/boltpipe/mini1.log
	default environment = {
		PATH => /usr/bin:/bin:/usr/sbin:/sbin
	}

	environment = {
		PYTHONUNBUFFERED => 1
		XPC_SERVICE_NAME => io.boltpipe.worker.mini1
	}

	domain = gui/501 [100005]
	asid = 100005
	minimum runtime = 10
	exit timeout = 5
	runs = 1
	pid = 4711
	immediate reason = speculative
	forks = 0
	execs = 1
	initialized = 1
	trampolined = 1
	started suspended = 0
	proxy started suspended = 0
	last exit code = (never exited)

	spawn type = interactive (4)
	jetsam priority = 40
	properties = keepalive | runatload | inferred program
}
"""

LAUNCHCTL_EXITED = """\
gui/501/io.boltpipe.worker.mini1 = {
	active count = 0
	path = /Users/jane/Library/LaunchAgents/io.boltpipe.worker.mini1.plist
	type = LaunchAgent
	event triggers = {
		worker-ready = {
			state = 1
			pid = 99
		}
	}
	state = not running

	program = /Users/jane/.boltpipe/venv/bin/python
	runs = 4
	last exit code = 1

	spawn type = interactive (4)
}
"""

LAUNCHCTL_NOT_LOADED = 'Bad request.\nCould not find service "io.boltpipe.worker.mini1" in domain for port\n'


def test_launchd_status_running():
    status = parse_status("launchd", LAUNCHCTL_RUNNING)
    assert status.running and status.pid == 4711
    assert "running" in status.detail


def test_launchd_status_not_running_ignores_nested_blocks():
    status = parse_status("launchd", LAUNCHCTL_EXITED)
    assert not status.running and status.pid is None
    assert status.detail == "state = not running, last exit code = 1"


def test_launchd_status_not_loaded():
    status = parse_status("launchd", LAUNCHCTL_NOT_LOADED)
    assert (status.running, status.pid, status.detail) == (False, None, "not loaded")


# systemd


def test_systemd_unit_text_parses_and_keeps_the_worker_up():
    home = "/home/jane doe"
    argv = [f"{home}/.boltpipe/venv/bin/python", "-m", "node", "--config", f"{home}/.boltpipe/w 1.yaml"]
    plan = service_plan("systemd", "mini1", argv, INSTALL, home)
    path = f"{home}/.config/systemd/user/boltpipe-worker-mini1.service"
    assert list(plan.files) == [path]
    unit = _unit(plan.files[path])
    service = unit["Service"]
    assert shlex.split(service["ExecStart"]) == argv
    assert service["ExecStart"].startswith(f'"{home}/.boltpipe/venv/bin/python" -m node --config ')
    assert service["Restart"] == "always"
    assert service["RestartSec"] == "2"
    assert service["WorkingDirectory"] == f"{home}/.boltpipe"
    assert service["Environment"] == "PYTHONUNBUFFERED=1"
    assert service["StandardOutput"] == service["StandardError"] == f"append:{home}/.boltpipe/logs/mini1.log"
    assert unit["Install"]["WantedBy"] == "default.target"
    assert plan.log_path == f"{home}/.boltpipe/logs/mini1.log"


def test_exec_quote_escapes_what_systemd_would_expand():
    assert exec_quote("/opt/venv/bin/python") == "/opt/venv/bin/python"
    assert exec_quote("a b") == '"a b"'
    assert exec_quote("50%") == '"50%%"'
    assert exec_quote("$HOME") == '"$$HOME"'
    assert exec_quote('say "hi"\\') == '"say \\"hi\\"\\\\"'
    assert exec_quote("two\nlines") == '"two\\nlines"'
    assert exec_quote("") == '""'


def test_systemd_commands():
    plan = service_plan("systemd", "mini1", ARGV, INSTALL, "/home/jane doe")
    unit = "boltpipe-worker-mini1.service"
    path = shlex.quote("/home/jane doe/.config/systemd/user/" + unit)
    assert "systemctl --user daemon-reload" in plan.start_cmd
    assert f"systemctl --user enable {unit}" in plan.start_cmd
    assert f"systemctl --user disable --now {unit}" in plan.stop_cmd
    assert f"rm -f {path}" in plan.remove_cmd and plan.remove_cmd.endswith("daemon-reload")
    assert "show -p MainPID -p ActiveState" in plan.status_cmd and plan.status_cmd.find(unit) > 0
    assert "loginctl show-user" in plan.preflight_cmd and "-p Linger" in plan.preflight_cmd


@pytest.mark.parametrize("output, running, pid, detail", [
    ("MainPID=4242\nActiveState=active\nSubState=running\nLoadState=loaded\n", True, 4242, "active (running)"),
    ("MainPID=0\nActiveState=activating\nSubState=auto-restart\nLoadState=loaded\n", False, None,
     "activating (auto-restart)"),
    ("MainPID=0\nActiveState=failed\nSubState=failed\nLoadState=loaded\n", False, None, "failed (failed)"),
    ("MainPID=0\nActiveState=inactive\nSubState=dead\nLoadState=not-found\n", False, None, "not installed"),
    ("Failed to connect to bus: No medium found\n", False, None, "Failed to connect to bus: No medium found"),
])
def test_systemd_status(output, running, pid, detail):
    status = parse_status("systemd", output)
    assert (status.running, status.pid, status.detail) == (running, pid, detail)


def test_linger_hint():
    assert preflight_hint("systemd", "Linger=yes\n") is None
    assert "loginctl enable-linger" in preflight_hint("systemd", "Linger=no\n")
    assert "loginctl enable-linger" in preflight_hint(
        "systemd", "Failed to get user: User ID 1000 is not logged in or lingering\n")
    assert preflight_hint("launchd", "") is None


# pidfile


def test_pidfile_commands_use_the_venv_supervisor():
    plan = service_plan("pidfile", "mini1", ARGV, INSTALL, "/home/jane doe")
    venv_py = shlex.quote("/home/jane doe/.boltpipe/venv/bin/python")
    pidfile = shlex.quote("/home/jane doe/.boltpipe/run/mini1.pid")
    assert plan.files == {}
    assert f"{venv_py} -m deploy.supervise --name mini1 --pidfile {pidfile} --log " in plan.start_cmd
    assert plan.start_cmd.endswith("-- " + shlex.join(ARGV))
    assert f"{venv_py} -m deploy.supervise --stop --pidfile {pidfile}" in plan.stop_cmd
    assert f"{venv_py} -m deploy.supervise --status --pidfile {pidfile}" in plan.status_cmd


@pytest.mark.parametrize("output, running, pid", [
    ('{"running": true, "supervisor_pid": 10, "worker_pid": 11, "name": "mini1"}\n', True, 11),
    ('{"running": true, "supervisor_pid": 10, "worker_pid": null}\n', False, None),
    ('{"running": false, "supervisor_pid": null, "worker_pid": null}\n', False, None),
    ("sh: 1: cd: can't cd to /home/x/.boltpipe\n", False, None),
])
def test_pidfile_status(output, running, pid):
    status = parse_status("pidfile", output)
    assert (status.running, status.pid) == (running, pid)


# choosing and checking


@pytest.mark.parametrize("os_name, systemd_ok, manager", [
    ("Darwin", False, "launchd"),
    ("darwin", True, "launchd"),
    ("Linux", True, "systemd"),
    ("linux", False, "pidfile"),
    ("FreeBSD", False, "pidfile"),
])
def test_choose_manager(os_name, systemd_ok, manager):
    assert choose_manager(os_name, systemd_ok) == manager


@pytest.mark.parametrize("manager", MANAGERS)
def test_every_command_is_valid_sh(manager):
    plan = service_plan(manager, "mini1", ARGV, INSTALL, "/home/jane doe")
    for cmd in (plan.start_cmd, plan.stop_cmd, plan.status_cmd, plan.remove_cmd, plan.preflight_cmd):
        if cmd:
            check = subprocess.run(["sh", "-n", "-c", cmd], capture_output=True, text=True, timeout=30)
            assert check.returncode == 0, f"{cmd}\n{check.stderr}"


def test_paths_come_from_home_and_bad_input_is_refused():
    plan = service_plan("pidfile", "mini1", ARGV, ".boltpipe", "/home/jane", log_path="~/logs/w.log")
    assert plan.log_path == "/home/jane/logs/w.log"
    assert "/home/jane/.boltpipe/run/mini1.pid" in plan.stop_cmd
    with pytest.raises(ValueError, match="worker name"):
        service_plan("systemd", "mini 1", ARGV, INSTALL, "/home/jane")
    with pytest.raises(ValueError, match="unknown service manager"):
        service_plan("upstart", "mini1", ARGV, INSTALL, "/home/jane")
    with pytest.raises(ValueError, match="absolute"):
        service_plan("launchd", "mini1", ARGV, INSTALL, "~")
    with pytest.raises(ValueError, match="empty"):
        service_plan("launchd", "mini1", [], INSTALL, "/Users/jane")
