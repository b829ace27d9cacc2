"""One worker on one SSH node: probe the machine, write the worker's settings, keep it running
under the node's service manager, report its state, remove it.

The node remembers which manager runs its worker (<install_dir>/workers/<name>.service.json),
so `cluster down` and `cluster status` find it without probing again.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from deploy.install import venv_python
from deploy.probe import PROBE_SCRIPT, NodeProbe, parse_probe
from deploy.services import ServicePlan, ServiceStatus, parse_status, service_plan
from deploy.ssh import NodeConnection, quote

SYSTEMD_USABLE = ("running", "degraded")


@dataclass(frozen=True)
class WorkerSettings:
    """What the worker's --config file holds (readable only by the node's user)."""
    name: str
    host: str
    port: int
    metrics_port: int
    # The cluster's secret and, for links beyond loopback, its TLS material (cluster.credentials).
    secret: str = ""
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_on_loopback: bool = False


async def probe(node: NodeConnection) -> NodeProbe:
    env = f"BOLTPIPE_PYTHON={quote(node.target.python)} BOLTPIPE_INSTALL_DIR={quote(node.install_dir)}"
    result = await node.run(f"{env} sh -s", input=PROBE_SCRIPT, check=False, timeout_s=120)
    return parse_probe(str(result.stdout or ""))


def manager_for(found: NodeProbe) -> str:
    if found.os == "Darwin" and found.launchd == "gui":
        return "launchd"
    if found.os == "Linux" and (found.systemd_user or "") in SYSTEMD_USABLE:
        return "systemd"
    return "pidfile"


def _paths(node: NodeConnection, name: str) -> tuple[str, str]:
    base = f"{node.install_dir}/workers/{name}"
    return base + ".json", base + ".service.json"


def _plan(node: NodeConnection, manager: str, name: str) -> ServicePlan:
    config, _ = _paths(node, name)
    argv = [venv_python(node), "-m", "node", "--config", config]
    return service_plan(manager, name, argv, node.install_dir, node.home)


async def _write_private(node: NodeConnection, path: str, text: str) -> None:
    """umask 077 before the file exists: it is never readable by others, not even for a moment."""
    parent = path.rsplit("/", 1)[0]
    await node.run(f"umask 077 && mkdir -p {quote(parent)} && cat > {quote(path)}.tmp && mv {quote(path)}.tmp {quote(path)}",
                   input=text)


async def _read(node: NodeConnection, path: str) -> str | None:
    result = await node.run(f"cat {quote(path)} 2>/dev/null", check=False)
    return str(result.stdout) if result.exit_status == 0 else None


async def ensure_worker(node: NodeConnection, settings: WorkerSettings, manager: str) -> str:
    """Running with these settings: "started", "restarted" (settings or manager changed) or "running"."""
    config_path, service_path = _paths(node, settings.name)
    config = json.dumps(asdict(settings), indent=2, sort_keys=True) + "\n"
    record = json.dumps({"manager": manager}) + "\n"
    old = await _read(node, service_path)
    changed = await _read(node, config_path) != config or old != record
    plan = _plan(node, manager, settings.name)
    if not changed and (await _manager_status(node, manager, settings.name)).running:
        return "running"
    if old and old != record:  # another manager ran it before: remove that one first
        await remove(node, settings.name)
    await _write_private(node, config_path, config)
    for path, text in plan.files.items():
        await _write_private(node, path, text)
    await node.run(plan.start_cmd, timeout_s=120)
    await _write_private(node, service_path, record)
    return "restarted" if changed and old else "started"


async def recorded_manager(node: NodeConnection, name: str) -> str | None:
    text = await _read(node, _paths(node, name)[1])
    try:
        return json.loads(text)["manager"] if text else None
    except (json.JSONDecodeError, KeyError, TypeError):
        return None


async def status(node: NodeConnection, name: str) -> ServiceStatus:
    manager = await recorded_manager(node, name)
    if manager is None:
        return ServiceStatus(False, None, "not installed")
    return await _manager_status(node, manager, name)


async def _manager_status(node: NodeConnection, manager: str, name: str) -> ServiceStatus:
    result = await node.run(_plan(node, manager, name).status_cmd, check=False)
    return parse_status(manager, str(result.stdout or ""))


async def log_path(node: NodeConnection, name: str) -> str | None:
    manager = await recorded_manager(node, name)
    return _plan(node, manager, name).log_path if manager else None


async def remove(node: NodeConnection, name: str, *, purge: bool = False) -> bool:
    """Stop the worker and remove its service and settings. Returns False when none was installed."""
    manager = await recorded_manager(node, name)
    if manager is not None:
        plan = _plan(node, manager, name)
        await node.run(plan.remove_cmd or plan.stop_cmd, timeout_s=60)
    config_path, service_path = _paths(node, name)
    await node.run(f"rm -f {quote(config_path)} {quote(service_path)}")
    if purge:
        await node.run(f"rm -rf {quote(node.install_dir)}", timeout_s=300)
    return manager is not None
