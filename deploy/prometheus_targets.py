"""The Prometheus file_sd targets that `cluster up` writes: one entry per node's metrics endpoint
(the coordinator's too), labelled with the cluster and node names (dashboards' variables select
on them).

Two copies: one in the cluster's run directory, and one under BOLTPIPE_HOME/prometheus/targets/,
beside a ready Prometheus configuration (dashboards/prometheus.yml) that reads every file there:
`prometheus --config.file ~/.boltpipe/prometheus/prometheus.yml` watches every cluster that is up.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

TARGETS_FILE = "prometheus-targets.json"   # in the cluster's run directory
CONFIG_FILE = "prometheus.yml"


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


def shared_targets_path(prometheus_dir: Path, cluster_key: str) -> Path:
    return prometheus_dir / "targets" / f"{cluster_key}.json"


def install_config(prometheus_dir: Path) -> Path:
    """Puts boltpipe's Prometheus configuration beside the targets directory, once: a
    configuration the user edited there is left as it is."""
    path = prometheus_dir / CONFIG_FILE
    if not path.exists():
        prometheus_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(resources.files("dashboards").joinpath(CONFIG_FILE).read_text())
    return path
