"""Tests that call a cluster's workers directly carry its secret, as the coordinator does."""

from __future__ import annotations

from pathlib import Path

from cluster import paths
from cluster.inventory import Inventory
from node.cluster_auth import SECRET_METADATA


def secret_metadata(inventory: Inventory, home: Path) -> list[tuple[str, str]]:
    """The gRPC metadata of a cluster whose `cluster up` ran with BOLTPIPE_HOME=home."""
    key = paths.run_dir(inventory.source, inventory.name).name
    return [(SECRET_METADATA, (home / "secrets" / key / "cluster-secret").read_text().strip())]
