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
from typing import Callable

import grpc
from tqdm import tqdm

from cluster import paths
from cluster.api.admission import Admission
from cluster.api.cluster_view import ClusterView, RingNode
from cluster.api.openai_shapes import ModelDefaults
from cluster.api.coordinator_metrics import CoordinatorMetrics
from cluster.credentials import coordinator_auth, worker_settings
from cluster.inventory import METRICS_PORT_OFFSET, Inventory
from cluster.launch.local_supervisor import keep_running
from cluster.launch.model_source import model_defaults, resolve_model, served_model_name
from cluster.launch.ssh_deploy import push_weights
from cluster.pipeline.decode_batcher import DecodeBatcher
from cluster.pipeline.engine import Engine
from cluster.pipeline.pipeline_client import PipelineClient, StageEndpoint
from cluster.pipeline.stage_watch import WatchSettings
from cluster.pipeline.prefix_cache import PrefixCache
from cluster.pipeline.speculation import plan_speculation
from cluster.pipeline.tokenizer import PromptTokenizer
from cluster.planning.cluster_plan import ClusterPlan, PlannedStage, kv_dtype_bytes, make_plan
from cluster.planning.discovery import Browser, DiscoveryTimeout
from cluster.planning.node_facts import NodeFactsError, check_version, gather_facts
from deploy.local import LocalWorker, LocalWorkerSpec, start_local_workers, stop_pids
from deploy.ssh import SshError
from node import sysinfo
from node.cluster_auth import ClusterAuth
from node.model_config import ModelInfo
from node.kv_profile import kv_profile
from node.model_sizes import read_model_sizes
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
    cluster_plan: ClusterPlan
    local_workers: list[LocalWorker]
    client: PipelineClient
    engine: Engine
    admission: Admission
    metrics: CoordinatorMetrics
    infos: list[pb.NodeInfo] = field(default_factory=list)
    browser: Browser | None = None                         # open while Bonjour nodes are watched
    vanished: set[str] = field(default_factory=set)         # serving nodes no longer advertised
    supervisor: asyncio.Task | None = None                  # restarts local workers that exit
    on_worker_restart: Callable[[LocalWorker], None] | None = None
    defaults: ModelDefaults = field(default_factory=ModelDefaults)  # what requests get when they do not say

    def worker_restarted(self, worker: LocalWorker) -> None:
        if self.on_worker_restart is not None:
            self.on_worker_restart(worker)

    @property
    def plan(self) -> list[PlannedStage]:
        return self.cluster_plan.stages

    def view(self, api_key_required: bool) -> ClusterView:
        """What the web page shows of this cluster."""
        nodes = [RingNode(s.node, s.facts.address.rsplit(":", 1)[0].strip("[]"), s.facts.machine, s.backend,
                          (s.layer_start, s.layer_end), s.placement.budget_bytes, s.next_link) for s in self.plan]
        return ClusterView(self.engine, self.admission, self.metrics, self.model_name, self.context_length, nodes,
                           api_key_required)

    @property
    def context_length(self) -> int:
        return self.cluster_plan.context_length

    async def close(self) -> None:
        if self.supervisor is not None:
            self.supervisor.cancel()
            await asyncio.gather(self.supervisor, return_exceptions=True)
        if self.browser is not None:
            await self.browser.close()
        await self.client.close()
        if self.engine.speculation.draft_model is not None:
            self.engine.speculation.draft_model.close()
        stop_pids([w.pid for w in self.local_workers])


def _on_stage_change(metrics: CoordinatorMetrics, engine: Engine):
    def changed(stage: int, up: bool, why: str) -> None:
        metrics.stage_changed(stage, up, why)
        if not up and engine.prefix_cache is not None:
            engine.prefix_cache.forget_all()  # a stage that went down lost what it kept
    return changed


def prefix_cache_for(inventory: Inventory, model: ModelInfo, plan: ClusterPlan) -> PrefixCache | None:
    """The coordinator's index of kept prefixes, sized from the plan: a share of the smallest KV
    budget, in bytes of the stage that keeps the most per position (windows counted whole)."""
    if not inventory.prefix_cache:
        return None
    profile = kv_profile(model.config)
    dtype = kv_dtype_bytes(model)
    per_token = max(sum(layer.per_token for layer in profile[s.layer_start:s.layer_end]) * dtype for s in plan.stages)
    budget = int(inventory.prefix_cache_share * min(s.placement.kv_bytes for s in plan.stages))
    # Recurrent states and windows describe exactly the positions they saw: no cutting back.
    exact = any(layer.fixed or layer.max_tokens for layer in profile)
    return PrefixCache(budget, max(1, per_token), exact_only=exact)


async def _draft_model(inventory: Inventory, tokenizer: PromptTokenizer):
    """The draft model the inventory names, loaded on this machine, when the cluster drafts with one."""
    if inventory.speculation != "draft_model" or inventory.model.draft is None:
        return None
    from cluster.pipeline.draft_model import DraftModel, DraftModelError

    try:
        info = await asyncio.to_thread(resolve_model, inventory.model.draft)
        draft_tokenizer = await asyncio.to_thread(PromptTokenizer, info.path)
        return await asyncio.to_thread(DraftModel, info.path, tokenizer.vocabulary(), draft_tokenizer.vocabulary())
    except (DraftModelError, OSError, ValueError) as exc:  # ModelDirError is a ValueError
        raise BringUpError(f"model.draft: {exc}") from None


async def _check_reachable(stages: list[PlannedStage], timeout_s: float, auth: ClusterAuth) -> list[pb.NodeInfo]:
    async def one(stage: PlannedStage) -> pb.NodeInfo:
        address = stage.facts.address
        async with auth.channel(address) as channel:
            try:
                info = await pb_grpc.WorkerStub(channel).GetInfo(pb.InfoRequest(), timeout=timeout_s, wait_for_ready=True)
            except grpc.aio.AioRpcError as exc:
                raise BringUpError(f"node {stage.node} at {address} is not reachable: {exc.code().name} {exc.details()}")
        try:
            check_version(stage.node, info.protocol_version, info.boltpipe_version)
        except NodeFactsError as exc:
            raise BringUpError(str(exc)) from None
        return info

    return list(await asyncio.gather(*(one(s) for s in stages)))


def slice_specs(model: ModelInfo, model_name: str, plan: ClusterPlan, model_paths: dict[str, str]) -> list[pb.SliceSpec]:
    """What each stage is asked to load (and asked again, should its worker come back empty)."""
    return [
        pb.SliceSpec(
            model_path=model_paths.get(stage.node, str(model.path)),
            layer_start=stage.layer_start,
            layer_end=stage.layer_end,
            num_layers=model.num_layers,
            stage_index=i,
            num_stages=len(plan.stages),
            next_address=stage.next_address,
            backend=stage.backend,
            model_id=model_name,
            # Room beyond the coordinator's own limit for sessions still being ended.
            max_sessions=2 * plan.max_sessions,
            kv_budget_bytes=plan.kv_budget_bytes(stage),
            memory_limit_bytes=stage.placement.budget_bytes,
        )
        for i, stage in enumerate(plan.stages)
    ]


async def _load_slices(plan: ClusterPlan, specs: list[pb.SliceSpec], show_progress: bool,
                       auth: ClusterAuth) -> list[pb.NodeInfo]:
    stages = plan.stages
    bars = [
        tqdm(total=1, desc=f"load {s.node} [{s.layer_start},{s.layer_end})", unit="B", unit_scale=True,
             position=i, leave=True, disable=not show_progress, file=sys.stderr)
        for i, s in enumerate(stages)
    ]

    async def one(i: int) -> pb.NodeInfo:
        stage, spec = stages[i], specs[i]
        async with auth.channel(stage.facts.address) as channel:
            try:
                async for event in pb_grpc.WorkerStub(channel).LoadSlice(spec):
                    if event.total:
                        bars[i].total = event.total
                        bars[i].n = event.done
                        bars[i].refresh()
                    if event.phase == "ready":
                        return event.info
            except grpc.aio.AioRpcError as exc:
                raise BringUpError(f"node {stage.node} could not load layers {stage.layer_start}-{stage.layer_end - 1}: {exc.details()}")
        raise BringUpError(f"node {stage.node} stopped loading without saying it was ready")

    try:
        return list(await asyncio.gather(*(one(i) for i in range(len(stages)))))
    finally:
        for bar in bars:
            bar.close()


async def plan_cluster(
    inventory: Inventory, *, show_progress: bool = True, connect_timeout_s: float = 10.0,
    discovery_timeout_s: float | None = None, browser: Browser | None = None,
) -> tuple[ModelInfo, str, ClusterPlan]:
    """Everything `cluster up` decides before starting or loading anything."""
    model = await asyncio.to_thread(resolve_model, inventory.model, progress=show_progress)
    sizes = await asyncio.to_thread(read_model_sizes, model.path, model.num_layers)
    try:
        facts = await gather_facts(inventory, connect_timeout_s=connect_timeout_s,
                                   discovery_timeout_s=discovery_timeout_s, browser=browser)
    except (NodeFactsError, DiscoveryTimeout) as exc:
        raise BringUpError(str(exc)) from None
    reserved = await _draft_model_memory(inventory)
    return model, served_model_name(inventory.model, model), make_plan(inventory, model, sizes, facts, reserved)


async def _draft_model_memory(inventory: Inventory) -> dict[str, tuple[int, str]]:
    """The draft model's weights (and a tenth more for its caches and temporaries), held on the
    coordinator's machine, where workers of this cluster may run too."""
    if inventory.speculation != "draft_model" or inventory.model.draft is None:
        return {}
    try:
        draft = await asyncio.to_thread(resolve_model, inventory.model.draft)
        sizes = await asyncio.to_thread(read_model_sizes, draft.path, draft.num_layers)
    except (OSError, ValueError) as exc:
        raise BringUpError(f"model.draft: {exc}") from None
    weights = sizes.stage_bytes(0, sizes.num_layers, first=True, last=True)
    return {sysinfo.machine_id(): (weights + weights // 10, "draft model")}


async def bring_up(
    inventory: Inventory,
    *,
    show_progress: bool = True,
    log_dir: Path | None = None,
    worker_start_timeout_s: float = 60.0,
    connect_timeout_s: float = 10.0,
    discovery_timeout_s: float | None = None,
) -> RunningCluster:
    vanished: set[str] = set()
    browser = None
    if any(n.discovered for n in inventory.nodes):
        browser = Browser(on_removed=lambda advert: vanished.add(advert.name))
        await browser.__aenter__()
    workers: list[LocalWorker] = []
    client = None
    try:
        model, model_name, plan = await plan_cluster(inventory, show_progress=show_progress,
                                                     connect_timeout_s=connect_timeout_s,
                                                     discovery_timeout_s=discovery_timeout_s, browser=browser)
        log_dir = log_dir or paths.run_dir(inventory.source, inventory.name) / "logs"
        local = [LocalWorkerSpec(s.node, s.spec.host, s.spec.port, s.spec.metrics_port or s.spec.port + METRICS_PORT_OFFSET,
                                 settings=worker_settings(inventory, s.spec))
                 for s in plan.stages if s.spec.is_local]
        workers = await asyncio.to_thread(
            start_local_workers, local, log_dir, parent_pid=os.getpid(), timeout_s=worker_start_timeout_s
        )
        auth = coordinator_auth(inventory)
        await _check_reachable(plan.stages, connect_timeout_s, auth)
        try:
            model_paths = await push_weights(inventory, model, plan, paths.run_dir(inventory.source, inventory.name),
                                             show_progress=show_progress)
        except SshError as exc:
            raise BringUpError(str(exc)) from None
        specs = slice_specs(model, model_name, plan, model_paths)
        infos = await _load_slices(plan, specs, show_progress, auth)
        client = PipelineClient([StageEndpoint(s.node, s.facts.address) for s in plan.stages], auth, specs=specs,
                                watch=WatchSettings(interval_s=inventory.health_interval_s,
                                                    timeout_s=inventory.health_timeout_s))
        await client.start()
        tokenizer = await asyncio.to_thread(PromptTokenizer, model.path)
        batcher = (DecodeBatcher(client, max_lanes=inventory.batches_in_flight or len(plan.stages),
                                 max_batch=inventory.max_batch) if inventory.max_batch > 1 else None)
        engine = Engine(client, tokenizer, prefill_chunk=inventory.prefill_chunk, vocab_size=model.vocab_size,
                        replay=inventory.replay, replay_timeout_s=inventory.replay_timeout_s, batcher=batcher,
                        speculation=plan_speculation(inventory.speculation, inventory.max_draft_tokens, infos,
                                                     await _draft_model(inventory, tokenizer)))
        engine.prefix_cache = prefix_cache_for(inventory, model, plan)
        if engine.speculation.problem:
            log.warning("speculative decoding is off: %s", engine.speculation.problem)
        admission = Admission(plan.max_sessions, inventory.max_queue, inventory.queue_timeout_s)
        metrics = CoordinatorMetrics(model_name, admission)
        client.on_return_hop = metrics.observe_return_hop
        client.watch.on_change = _on_stage_change(metrics, engine)
        engine.on_replay = metrics.replayed
        engine.constraint_problem = infos[-1].constraint_problem if infos else ""
        engine.on_speculated = metrics.speculated
        if engine.prefix_cache is not None:
            metrics.watch_prefix_cache(engine.prefix_cache)
        cluster = RunningCluster(inventory, model, model_name, plan, workers, client, engine, admission, metrics,
                                 infos, browser, vanished, defaults=model_defaults(inventory.model))
        cluster.supervisor = asyncio.create_task(keep_running(cluster.local_workers, cluster.worker_restarted))
        return cluster
    except BaseException:
        if client is not None:
            await client.close()
        stop_pids([w.pid for w in workers])
        if browser is not None:
            await browser.close()
        raise
