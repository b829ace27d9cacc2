"""The Prometheus file_sd targets file that `cluster up` writes: one entry per node's metrics
endpoint, labelled with the cluster and node names (dashboards' variables select on them)."""

from __future__ import annotations

import json
import os
from pathlib import Path

TARGETS_FILE = "prometheus-targets.json"   # in the cluster's run directory


def targets(cluster: str, endpoints: dict[str, str], role: str = "worker") -> list[dict]:
    """endpoints: node name -> host:port of its metrics endpoint."""
    return [{"targets": [address], "labels": {"cluster": cluster, "node": name, "role": role}}
            for name, address in endpoints.items()]


def write_targets(path: Path, entries: list[dict]) -> Path:
    """Atomically, so Prometheus (which watches the file) never reads half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(entries, indent=2) + "\n")
    tmp.replace(path)
    return path
