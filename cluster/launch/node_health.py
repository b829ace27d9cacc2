"""Is every node of a running cluster serving its slice? Asked of the workers themselves (GetInfo),
so `cluster up` on a cluster that is up can tell "nothing to do" from "a worker came back empty"."""

from __future__ import annotations

import asyncio

import grpc

from cluster.credentials import coordinator_auth
from cluster.inventory import Inventory, NodeSpec
from proto import boltpipe_pb2 as pb
from proto import boltpipe_pb2_grpc as pb_grpc


async def node_info(inventory: Inventory, spec: NodeSpec, timeout_s: float = 3.0) -> pb.NodeInfo | str:
    """The worker's NodeInfo, or why it could not be had."""
    if spec.host is None or spec.port is None:
        return "found by Bonjour: no static address to ask"
    async with coordinator_auth(inventory).channel(spec.address) as channel:
        try:
            return await pb_grpc.WorkerStub(channel).GetInfo(pb.InfoRequest(), timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            return f"no answer at {spec.address} ({exc.code().name})"


async def all_node_info(inventory: Inventory, timeout_s: float = 3.0) -> dict[str, pb.NodeInfo | str]:
    results = await asyncio.gather(*(node_info(inventory, n, timeout_s) for n in inventory.nodes))
    return {n.name: r for n, r in zip(inventory.nodes, results)}


async def serving_problems(inventory: Inventory) -> list[str]:
    """Empty when every node answers with a loaded slice; otherwise one line per node that does not."""
    problems = []
    for name, info in (await all_node_info(inventory)).items():
        if isinstance(info, str):
            problems.append(f"node {name}: {info}")
        elif not info.loaded:
            problems.append(f"node {name}: running without its slice (restarted?)")
    return problems
