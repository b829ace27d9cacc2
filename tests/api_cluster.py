"""A 3-worker cluster started with the real `cluster up --detach`, for the HTTP API tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from cluster.inventory import Inventory, load_inventory
from proto import boltpipe_pb2 as pb
from proto import boltpipe_pb2_grpc as pb_grpc
from tests.cli_runner import kill_all, leftovers, run_cli
from tests.cluster_harness import write_inventory
from tests.cluster_secret import secret_metadata


@dataclass
class ApiCluster:
    inventory_path: Path
    inventory: Inventory
    home: Path

    @property
    def base_url(self) -> str:
        return f"{self.inventory.url}/v1"

    def worker_infos(self) -> list[pb.NodeInfo]:
        """Each worker's NodeInfo, straight from the workers."""
        infos = []
        for node in self.inventory.nodes:
            with grpc.insecure_channel(node.address) as channel:
                infos.append(pb_grpc.WorkerStub(channel).GetInfo(pb.InfoRequest(), timeout=5,
                                                                 metadata=secret_metadata(self.inventory, self.home)))
        return infos

    def worker_sessions(self) -> list[int]:
        """Open sessions on each worker."""
        return [info.active_sessions for info in self.worker_infos()]

    def worker_prefixes(self) -> list[int]:
        """Prefixes each worker keeps for later sessions."""
        return [info.prefixes for info in self.worker_infos()]


def start_api_cluster(directory: Path, model_dir: Path, *, serve: dict, extra: dict | None = None) -> ApiCluster:
    inventory_path = write_inventory(directory, nodes=3, model_path=model_dir, name="api", serve=serve,
                                     model_name="smollm2-135m-instruct", extra=extra)
    home = directory / "home"
    up = run_cli(["up", str(inventory_path), "--detach", "--no-progress"], home, timeout=300)
    if up.returncode != 0:
        kill_all(leftovers(inventory_path, home))
        raise RuntimeError(f"cluster up failed:\n{up.stdout}\n{up.stderr}")
    return ApiCluster(inventory_path, load_inventory(inventory_path), home)


def stop_api_cluster(cluster: ApiCluster) -> None:
    try:
        run_cli(["down", str(cluster.inventory_path)], cluster.home, timeout=60)
    finally:
        kill_all(leftovers(cluster.inventory_path, cluster.home))
