"""The SSH side of `cluster up` and `cluster down` for an inventory's nodes that have `ssh:`.

`deploy_workers` (before planning): connect to all, preflight all, install the wheel, keep a
worker running on each. `push_weights` (after planning): each node gets its own layers.
`remove_workers`: stop and remove the workers (and, with purge, everything boltpipe put there).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from cluster import credentials, paths
from cluster.inventory import METRICS_PORT_OFFSET, Inventory, NodeSpec
from cluster.planning.cluster_plan import ClusterPlan
from deploy import remote_worker
from deploy.install import Wheel, build_wheel, install, venv_python
from deploy.probe import NodeProbe, PreflightError, node_findings, preflight_table
from deploy.ssh import NodeConnection, SshError, close_all, connect, connect_all
from deploy.weights import check_remote_model, fetch_from_hub, local_shard, push_shard
from node.model_config import ModelInfo

DEPLOY_REPORT = "deploy-report.json"


@dataclass
class NodeReport:
    """What one `cluster up` did on one node (written to the run directory, read by tests and people)."""
    manager: str = ""
    installed: bool = False
    worker: str = ""                 # started, restarted, running
    bytes_sent: int = 0              # wheel and weights together
    files_sent: int = 0
    files_skipped: int = 0
    weights_dir: str = ""
    weight_bytes_sent: int = 0
    shard_bytes: int = 0


@dataclass
class DeployReport:
    nodes: dict[str, NodeReport] = field(default_factory=dict)

    def save(self, run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / DEPLOY_REPORT).write_text(json.dumps({n: asdict(r) for n, r in self.nodes.items()}, indent=2))

    @staticmethod
    def load(run_dir: Path) -> "DeployReport":
        try:
            raw = json.loads((run_dir / DEPLOY_REPORT).read_text())
        except (OSError, json.JSONDecodeError):
            return DeployReport()
        return DeployReport({n: NodeReport(**r) for n, r in raw.items()})


def deployed_nodes(inventory: Inventory) -> list[NodeSpec]:
    return [n for n in inventory.nodes if n.deployed]


def listen_host(spec: NodeSpec) -> str:
    """The worker listens on the node's data address when it is an IP, else on every address."""
    try:
        ipaddress.ip_address(spec.host)
        return spec.host
    except ValueError:
        return "0.0.0.0"


def worker_settings(inventory: Inventory, spec: NodeSpec) -> remote_worker.WorkerSettings:
    return remote_worker.WorkerSettings(spec.name, listen_host(spec), spec.port,
                                        spec.metrics_port or spec.port + METRICS_PORT_OFFSET,
                                        **credentials.worker_settings(inventory, spec))


def _count(report: NodeReport, node: NodeConnection) -> None:
    report.bytes_sent = node.counters.bytes_sent
    report.files_sent = node.counters.files_sent
    report.files_skipped = node.counters.files_skipped


async def _preflight(specs: dict[str, NodeSpec], connections: dict[str, NodeConnection]) -> dict[str, NodeProbe]:
    names = list(connections)
    found = await asyncio.gather(*(remote_worker.probe(connections[n]) for n in names))
    probes = dict(zip(names, found))
    fatal = {}
    for name, probe in probes.items():
        bad = [f for f in node_findings(probe, want_backend=specs[name].backend) if f.fatal]
        if bad:
            fatal[name] = bad
    if fatal:
        raise PreflightError(fatal, table=preflight_table(probes))
    return probes


def _bar(desc: str, position: int, show: bool) -> tqdm:
    return tqdm(total=0, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, position=position,
                leave=True, disable=not show, file=sys.stderr)


async def deploy_workers(inventory: Inventory, run_dir: Path, *, show_progress: bool = True) -> DeployReport:
    """Connect, preflight, install and start every SSH node's worker. Nothing is started unless every
    node passed preflight; a worker that fails to start stops the ones this call started."""
    specs = {n.name: n for n in deployed_nodes(inventory)}
    report = DeployReport({name: NodeReport() for name in specs})
    connections = await connect_all([s.ssh for s in specs.values()])
    try:
        probes = await _preflight(specs, connections)
        wheel: Wheel = await asyncio.to_thread(build_wheel, paths.home() / "wheels")

        async def install_one(i: int, name: str) -> None:
            bar = _bar(f"install {name}", i, show_progress)
            bar.total = wheel.path.stat().st_size
            try:
                report.nodes[name].installed = await install(connections[name], wheel, cuda=bool(probes[name].nvidia_gpus),
                                                             progress=bar.update)
            finally:
                bar.close()

        await asyncio.gather(*(install_one(i, n) for i, n in enumerate(specs)))
        started: list[str] = []

        async def start_one(name: str) -> None:
            manager = remote_worker.manager_for(probes[name])
            report.nodes[name].manager = manager
            action = await remote_worker.ensure_worker(connections[name], worker_settings(inventory, specs[name]), manager)
            report.nodes[name].worker = action
            if action != "running":
                started.append(name)

        results = await asyncio.gather(*(start_one(n) for n in specs), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await asyncio.gather(*(remote_worker.remove(connections[n]) for n in started), return_exceptions=True)
            raise failures[0]
    finally:
        for name, node in connections.items():
            _count(report.nodes[name], node)
        await close_all(connections)
    report.save(run_dir)
    return report


async def push_weights(inventory: Inventory, model: ModelInfo, plan: ClusterPlan, run_dir: Path, *,
                       show_progress: bool = True) -> dict[str, str]:
    """After planning: the directory each SSH node's worker loads its slice from."""
    stages = [s for s in plan.stages if s.spec.deployed]
    if not stages:
        return {}
    report = DeployReport.load(run_dir)
    connections = await connect_all([s.spec.ssh for s in stages])
    try:
        async def one(i: int, stage) -> tuple[str, str]:
            node = connections[stage.node]
            entry = report.nodes.setdefault(stage.node, NodeReport())
            entry.weight_bytes_sent = 0  # nothing is pushed for a model on the node or one it fetches
            if stage.spec.model_path:
                entry.weights_dir = await check_remote_model(node, stage.spec.model_path)
            elif inventory.model.hf:
                entry.weights_dir = await fetch_from_hub(node, venv_python(node), inventory.model.hf, stage.layer_start,
                                                         stage.layer_end, model.num_layers, inventory.model.revision)
            else:
                shard, manifest = await asyncio.to_thread(local_shard, model.path, stage.layer_start, stage.layer_end)
                bar = _bar(f"weights {stage.node} [{stage.layer_start},{stage.layer_end})", i, show_progress)
                bar.total = manifest.total_bytes
                try:
                    pushed = await push_shard(node, shard, manifest, python=venv_python(node), progress=bar.update)
                finally:
                    bar.close()
                entry.weights_dir, entry.shard_bytes = pushed.remote_dir, pushed.total_bytes
                entry.weight_bytes_sent = pushed.pushed_bytes
            entry.bytes_sent += entry.weight_bytes_sent
            entry.files_sent += node.counters.files_sent
            entry.files_skipped += node.counters.files_skipped
            return stage.node, entry.weights_dir

        pairs = await asyncio.gather(*(one(i, s) for i, s in enumerate(stages)))
    finally:
        await close_all(connections)
    report.save(run_dir)
    return dict(pairs)


async def remove_workers(inventory: Inventory, *, purge: bool = False) -> dict[str, str]:
    """Best effort on every SSH node: node name -> what happened (an unreachable node is reported, the
    others are still cleaned)."""
    async def one(spec: NodeSpec) -> str:
        try:
            node = await connect(spec.ssh)
        except SshError as exc:
            return f"not reached: {exc}"
        try:
            had = await remote_worker.remove(node, spec.name, purge=purge)
            return ("worker stopped and removed" if had else "no worker installed") + (", install directory removed" if purge else "")
        finally:
            await node.close()

    specs = deployed_nodes(inventory)
    results = await asyncio.gather(*(one(s) for s in specs), return_exceptions=True)
    return {s.name: (r if isinstance(r, str) else f"failed: {r}") for s, r in zip(specs, results)}
