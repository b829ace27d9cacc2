"""Where boltpipe keeps things on the coordinator's machine (BOLTPIPE_HOME, default ~/.boltpipe)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cluster.inventory import Inventory


def home() -> Path:
    return Path(os.environ.get("BOLTPIPE_HOME", Path.home() / ".boltpipe")).expanduser()


def model_cache() -> Path:
    return home() / "models"


def run_dir(inventory_path: Path, cluster_name: str) -> Path:
    """One directory per inventory file: state, pids and logs of its running cluster."""
    digest = hashlib.sha256(str(inventory_path.resolve()).encode()).hexdigest()[:10]
    return home() / "run" / f"{cluster_name}-{digest}"


def secrets_dir(inventory: Inventory) -> Path:
    """A cluster's secrets (cluster secret, CA, API key): one directory per inventory, like run_dir."""
    return home() / "secrets" / run_dir(inventory.source, inventory.name).name


def write_private(path: Path, text: str) -> None:
    """A file only its user can read, created so (never readable by others, not even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
