"""Where boltpipe keeps things on the coordinator's machine (BOLTPIPE_HOME, default ~/.boltpipe)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("BOLTPIPE_HOME", Path.home() / ".boltpipe")).expanduser()


def model_cache() -> Path:
    return home() / "models"


def run_dir(inventory_path: Path, cluster_name: str) -> Path:
    """One directory per inventory file: state, pids and logs of its running cluster."""
    digest = hashlib.sha256(str(inventory_path.resolve()).encode()).hexdigest()[:10]
    return home() / "run" / f"{cluster_name}-{digest}"
