"""Bring a cluster from an inventory to serving: model, plan, workers, slices, engine.

Used by `cluster up`, `cluster bench` and the tests, so they all run the same path.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from tqdm import tqdm

import node
from cluster import paths
from cluster.admission import Admission, session_limit
from cluster.engine import Engine
from cluster.inventory import Inventory, NodeSpec
from cluster.model_source import resolve_model, served_model_name
from cluster.pipeline_client import PipelineClient, StageEndpoint
from cluster.planner import StagePlan, split_layers
from cluster.tokenizer import PromptTokenizer
from deploy.local import LocalWorker, LocalWorkerSpec, start_local_workers, stop_pids
from node.model_config import ModelInfo
from proto import PROTOCOL_VERSION, grpc_options
from proto import boltpipe_pb2 as pb
from proto import boltpipe_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)


class BringUpError(RuntimeError):
    pass


@dataclass
class RunningCluster:
    inventory: Inventory
    model: ModelInfo
    model_name: str
    plan: list[StagePlan]
    local_workers: list[LocalWorker]
    client: PipelineClient
    engine: Engine
    admission: Admission
    context_length: int
    infos: list[pb.NodeInfo] = field(default_factory=list)

    async def close(self) -> None:
        await self.client.close()
        stop_pids([w.pid for w in self.local_workers])


def _stage_endpoints(nodes: list[NodeSpec]) -> list[StageEndpoint]:
    return [StageEndpoint(n.name, n.address) for n in nodes]


async def _check_reachable(nodes: list[NodeSpec], timeout_s: float) -> list[pb.NodeInfo]:
    async def one(spec: NodeSpec) -> pb.NodeInfo:
        async with grpc.aio.insecure_channel(spec.address, options=grpc_options()) as channel:
            try:
                info = await pb_grpc.WorkerStub(channel).GetInfo(pb.InfoRequest(), timeout=timeout_s, wait_for_ready=True)
            except grpc.aio.AioRpcError as exc:
                raise BringUpError(f"node {spec.name} at {spec.address} is not reachable: {exc.code().name} {exc.details()}")
        if info.protocol_version != PROTOCOL_VERSION:
            raise BringUpError(
                f"node {spec.name} speaks protocol {info.protocol_version}, this coordinator {PROTOCOL_VERSION}: "
                f"install boltpipe {node.__version__} there"
            )
        return info

    return list(await asyncio.gather(*(one(n) for n in nodes)))


DEFAULT_CONTEXT = 4096  # when the model's config does not say


def context_length(inventory: Inventory, model: ModelInfo) -> int:
    own = model.max_position_embeddings or DEFAULT_CONTEXT
    return min(inventory.context_length, own) if inventory.context_length else own


def admission_for(inventory: Inventory, model: ModelInfo, plan: list[StagePlan]) -> Admission:
    """Concurrency limits from the workers' KV budget at the served context length."""
    context = context_length(inventory, model)
    dtype_bytes = 2 if model.config.get("torch_dtype") in ("float16", "bfloat16") else 4
    limit = session_limit([p.layer_end - p.layer_start for p in plan], model.config, context_length=context,
                          kv_budget_bytes=inventory.kv_budget_mb << 20, dtype_bytes=dtype_bytes,
                          configured_max=inventory.max_concurrent)
    if limit < 1:
        raise BringUpError(
            f"pipeline.kv_budget_mb ({inventory.kv_budget_mb} MB per worker) cannot hold one session of "
            f"{context} tokens; raise pipeline.kv_budget_mb, lower serve.context_length, or add nodes"
        )
    return Admission(limit, inventory.max_queue, inventory.queue_timeout_s)


async def _load_slices(
    inventory: Inventory, model: ModelInfo, model_name: str, plan: list[StagePlan], show_progress: bool,
    max_sessions: int,
) -> list[pb.NodeInfo]:
    nodes = inventory.nodes
    bars = [
        tqdm(total=1, desc=f"load {n.name} [{p.layer_start},{p.layer_end})", unit="B", unit_scale=True,
             position=i, leave=True, disable=not show_progress, file=sys.stderr)
        for i, (n, p) in enumerate(zip(nodes, plan))
    ]

    async def one(i: int) -> pb.NodeInfo:
        spec = pb.SliceSpec(
            model_path=str(model.path),
            layer_start=plan[i].layer_start,
            layer_end=plan[i].layer_end,
            num_layers=model.num_layers,
            stage_index=i,
            num_stages=len(nodes),
            next_address=nodes[i + 1].address if i + 1 < len(nodes) else "",
            backend="mlx",
            model_id=model_name,
            # Room beyond the coordinator's own limit for sessions still being ended.
            max_sessions=2 * max_sessions,
            kv_budget_bytes=inventory.kv_budget_mb << 20,
        )
        async with grpc.aio.insecure_channel(nodes[i].address, options=grpc_options()) as channel:
            try:
                async for event in pb_grpc.WorkerStub(channel).LoadSlice(spec):
                    if event.total:
                        bars[i].total = event.total
                        bars[i].n = event.done
                        bars[i].refresh()
                    if event.phase == "ready":
                        return event.info
            except grpc.aio.AioRpcError as exc:
                raise BringUpError(f"node {nodes[i].name} could not load layers {plan[i].layer_start}-{plan[i].layer_end - 1}: {exc.details()}")
        raise BringUpError(f"node {nodes[i].name} stopped loading without saying it was ready")

    try:
        return list(await asyncio.gather(*(one(i) for i in range(len(nodes)))))
    finally:
        for bar in bars:
            bar.close()


async def bring_up(
    inventory: Inventory,
    *,
    show_progress: bool = True,
    log_dir: Path | None = None,
    worker_start_timeout_s: float = 60.0,
    connect_timeout_s: float = 10.0,
) -> RunningCluster:
    model = await asyncio.to_thread(resolve_model, inventory.model, progress=show_progress)
    model_name = served_model_name(inventory.model, model)
    plan = split_layers(model.num_layers, [n.name for n in inventory.nodes], [n.weight for n in inventory.nodes])
    admission = admission_for(inventory, model, plan)
    log_dir = log_dir or paths.run_dir(inventory.source, inventory.name) / "logs"
    local = [LocalWorkerSpec(n.name, n.host, n.port) for n in inventory.nodes if n.is_local]
    workers = await asyncio.to_thread(
        start_local_workers, local, log_dir, parent_pid=os.getpid(), timeout_s=worker_start_timeout_s
    )
    client = None
    try:
        await _check_reachable(inventory.nodes, connect_timeout_s)
        infos = await _load_slices(inventory, model, model_name, plan, show_progress, admission.max_running)
        client = PipelineClient(_stage_endpoints(inventory.nodes))
        await client.start()
        tokenizer = await asyncio.to_thread(PromptTokenizer, model.path)
        engine = Engine(client, tokenizer, prefill_chunk=inventory.prefill_chunk, vocab_size=model.vocab_size)
        return RunningCluster(inventory, model, model_name, plan, workers, client, engine, admission,
                              context_length(inventory, model), infos)
    except BaseException:
        if client is not None:
            await client.close()
        stop_pids([w.pid for w in workers])
        raise
