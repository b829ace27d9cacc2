"""Tests that call a cluster's workers directly carry its secret, as the coordinator does."""

from __future__ import annotations

from pathlib import Path

from cluster import paths
from cluster.inventory import Inventory
from node.cluster_auth import SECRET_METADATA


def secrets_dir(inventory: Inventory, home: Path) -> Path:
    """Where `cluster up` with BOLTPIPE_HOME=home keeps this cluster's credentials."""
    return home / "secrets" / paths.run_dir(inventory.source, inventory.name).name


def secret_metadata(inventory: Inventory, home: Path) -> list[tuple[str, str]]:
    """The gRPC metadata of a cluster whose `cluster up` ran with BOLTPIPE_HOME=home."""
    return [(SECRET_METADATA, (secrets_dir(inventory, home) / "cluster-secret").read_text().strip())]
