"""Helpers for tests that run real worker processes on loopback."""

from __future__ import annotations

import asyncio
import random
import socket
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import AsyncIterator, Callable, Iterator

import psutil
import yaml

from cluster.inventory import METRICS_PORT_OFFSET, Inventory, load_inventory
from cluster.launch.bring_up import RunningCluster, bring_up


# Test clusters listen below the kernel's ephemeral range (32768-60999 by default): a port handed out
# by bind(0) can meanwhile become the local end of some outgoing connection, or be handed to a
# test in the other xdist process; and a worker's metrics endpoint listens METRICS_PORT_OFFSET
# above its port, which must be free too.
PORT_RANGE = (20000, 32768 - METRICS_PORT_OFFSET)
_handed_out: set[int] = set()
_pick = random.SystemRandom()  # not the test-seeded `random`: both xdist processes would draw alike


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(n: int) -> list[int]:
    """Distinct ports, each free now with its metrics port, none handed out before in this process."""
    ports: list[int] = []
    while len(ports) < n:
        port = _pick.randrange(*PORT_RANGE)
        if port in _handed_out or not (_bindable(port) and _bindable(port + METRICS_PORT_OFFSET)):
            continue
        _handed_out.add(port)
        ports.append(port)
    return ports


def write_inventory(
    directory: Path,
    *,
    nodes: int,
    model_path: Path | None = None,
    gguf: str | None = None,
    prefill_chunk: int | None = None,
    name: str = "test",
    serve: dict | None = None,
    model_name: str | None = None,
    extra: dict | None = None,
) -> Path:
    ports = free_ports(nodes + 1)
    data: dict = {
        "cluster": name,
        "model": ({"path": str(model_path)} if model_path else {"gguf": gguf}) | ({"name": model_name} if model_name else {}),
        "serve": {"host": "127.0.0.1", "port": ports[-1], **(serve or {})},
        "nodes": [{"name": f"w{i + 1}", "host": "127.0.0.1", "port": ports[i]} for i in range(nodes)],
    }
    if prefill_chunk:
        data["pipeline"] = {"prefill_chunk": prefill_chunk}
    data |= extra or {}
    path = directory / f"{name}-{nodes}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@asynccontextmanager
async def running_cluster(inventory: Inventory, log_dir: Path) -> AsyncIterator[RunningCluster]:
    cluster = await bring_up(inventory, show_progress=False, log_dir=log_dir)
    try:
        yield cluster
    finally:
        await cluster.close()


class LoopCluster:
    """A cluster kept up across several tests, with its own event loop."""

    def __init__(self, inventory_path: Path, log_dir: Path):
        self.loop = asyncio.new_event_loop()
        self.inventory = load_inventory(inventory_path)
        self.cluster = self.loop.run_until_complete(bring_up(self.inventory, show_progress=False, log_dir=log_dir))

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.cluster.close())
        finally:
            self.loop.close()


def worker_processes(ports: list[int]) -> list[psutil.Process]:
    """Live worker processes (python -m node) on any of these ports: named on the command line, or
    (started with --config) found listening there."""
    found = []
    wanted = {str(p) for p in ports}
    listening = {c.pid for c in psutil.net_connections("tcp")
                 if c.status == psutil.CONN_LISTEN and c.laddr and str(c.laddr.port) in wanted}
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmd = proc.info["cmdline"] or []
        if proc.info["status"] == psutil.STATUS_ZOMBIE or "node" not in cmd:
            continue
        if ("--port" in cmd and cmd[cmd.index("--port") + 1] in wanted) or ("--config" in cmd and proc.pid in listening):
            found.append(proc)
    return found


def inventory_ports(inventory: Inventory) -> list[int]:
    return [n.port for n in inventory.nodes]


@contextmanager
def clusters_by_stage_count(model_dir: Path, tmp_path_factory, prefix: str) -> Iterator[Callable[[int], LoopCluster]]:
    """get(N): a cluster of N stages serving model_dir, brought up on first use and kept until the end;
    then every worker process of every one of them must be gone."""
    clusters: dict[int, LoopCluster] = {}

    def get(stages: int) -> LoopCluster:
        if stages not in clusters:
            directory = tmp_path_factory.mktemp(f"{prefix}{stages}")
            clusters[stages] = LoopCluster(write_inventory(directory, nodes=stages, model_path=model_dir),
                                           directory / "logs")
        return clusters[stages]

    try:
        yield get
    finally:
        for harness in clusters.values():
            harness.close()
    left = [p.pid for h in clusters.values() for p in worker_processes(inventory_ports(h.inventory))]
    assert left == [], f"worker processes outlived their cluster: {left}"
