"""The state file of a running cluster (coordinator pid, workers, URL) in its run directory."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cluster import paths
from cluster.inventory import Inventory
from deploy.local import pid_alive

STATE_FILE = "state.json"


class StateError(RuntimeError):
    pass


@dataclass
class WorkerRecord:
    name: str
    pid: int
    port: int


@dataclass
class ClusterState:
    coordinator_pid: int
    url: str
    model: str
    status: str                      # "starting", "ready"
    workers: list[WorkerRecord] = field(default_factory=list)

    def save(self, run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = run_dir / f".{STATE_FILE}.{os.getpid()}"
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(run_dir / STATE_FILE)


def run_dir_for(inventory: Inventory) -> Path:
    return paths.run_dir(inventory.source, inventory.name)


def read_state(run_dir: Path) -> ClusterState | None:
    path = run_dir / STATE_FILE
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    workers = [WorkerRecord(**w) for w in raw.pop("workers", [])]
    return ClusterState(workers=workers, **raw)


def live_state(run_dir: Path) -> ClusterState | None:
    """The state of a cluster whose coordinator is still running; stale files are removed."""
    state = read_state(run_dir)
    if state is None:
        return None
    if not pid_alive(state.coordinator_pid):
        clear_state(run_dir)
        return None
    return state


def clear_state(run_dir: Path) -> None:
    (run_dir / STATE_FILE).unlink(missing_ok=True)
