"""Helpers for tests that run real worker processes on loopback."""

from __future__ import annotations

import asyncio
import socket
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

import psutil
import yaml

from cluster.inventory import Inventory, load_inventory
from cluster.launch.bring_up import RunningCluster, bring_up


def free_ports(n: int) -> list[int]:
    """Ports the kernel just handed out as free (held together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


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
