"""Running the real `cluster` command in a subprocess, with its own BOLTPIPE_HOME."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil

from cluster.inventory import load_inventory
from cluster.state import read_state, run_dir_for
from tests.cluster_harness import worker_processes


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, BOLTPIPE_HOME=str(home), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.update(extra)
    return env


def run_cli(args: list[str], home: Path, *, timeout: float = 300, input: str | None = None, **extra_env: str):
    """Runs from BOLTPIPE_HOME's parent, not the repository, as a user would."""
    home.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "cluster", *args], env=cli_env(home, **extra_env), capture_output=True, text=True,
        timeout=timeout, input=input, cwd=home.parent,
    )


def leftovers(inventory_path: Path, home: Path) -> list[psutil.Process]:
    """Worker processes of this inventory and its coordinator, if any still run."""
    old = os.environ.get("BOLTPIPE_HOME")
    os.environ["BOLTPIPE_HOME"] = str(home)
    try:
        inventory = load_inventory(inventory_path)
        state = read_state(run_dir_for(inventory))
    finally:
        if old is None:
            os.environ.pop("BOLTPIPE_HOME")
        else:
            os.environ["BOLTPIPE_HOME"] = old
    procs = worker_processes([n.port for n in inventory.nodes])
    if state is not None and psutil.pid_exists(state.coordinator_pid):
        procs.append(psutil.Process(state.coordinator_pid))
    return procs


def kill_all(procs: list[psutil.Process]) -> None:
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
