"""`cluster up INVENTORY`: start local workers, load the slices, serve the API."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time

from aiohttp import web

from cluster import paths
from cluster.api.api_keys import server_keys
from cluster.api.http_api import OpenAIServer, ServeLimits
from cluster.inventory import Inventory, format_address, load_inventory
from cluster.launch.bring_up import BringUpError, RunningCluster, bring_up
from cluster.launch.node_health import serving_problems
from cluster.launch.ssh_deploy import DeployReport, deploy_workers, deployed_nodes
from cluster.planning.placement import format_bytes
from cluster.state import ClusterState, StateError, WorkerRecord, clear_state, live_state, read_state, run_dir_for
from deploy.local import log_tail, pid_alive, port_in_use, stop_pids
from deploy.prometheus_targets import TARGETS_FILE, install_config, shared_targets_path, targets, write_targets

DETACH_TIMEOUT_S = 900.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="start the cluster described by an inventory and serve it")
    p.add_argument("inventory", help="inventory.yaml")
    p.add_argument("--detach", action="store_true", help="return once the cluster serves; stop it with `cluster down`")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    # The detached coordinator: the SSH deployment was done by the `cluster up` that started it.
    p.add_argument("--coordinator-only", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    inventory = load_inventory(args.inventory)
    run_dir = run_dir_for(inventory)
    if deployed_nodes(inventory) and not args.coordinator_only:
        report = asyncio.run(deploy_workers(inventory, run_dir, show_progress=not args.no_progress))
        print_deploy_summary(report)
    if (state := live_state(run_dir)) is not None:
        problems = asyncio.run(serving_problems(inventory))
        if not problems:
            print(f"boltpipe: the cluster of {args.inventory} is already up at {state.url}/v1 and every node serves "
                  f"its slice; nothing to do (coordinator pid {state.coordinator_pid})")
            return 0
        print("boltpipe: " + "; ".join(problems) + ". Restarting the coordinator to load the slices again.", flush=True)
        stop_pids([state.coordinator_pid], timeout_s=20.0)
        clear_state(run_dir)
    if port_in_use(inventory.serve_host, inventory.serve_port):
        raise StateError(
            f"port {inventory.serve_port} on {inventory.serve_host} (serve.port) is already in use; "
            "stop what listens there or change serve.port in the inventory"
        )
    if args.detach:
        return _detach(args, inventory)
    return asyncio.run(serve(inventory, show_progress=not args.no_progress))


def print_deploy_summary(report: DeployReport) -> None:
    for name, node in report.nodes.items():
        installed = "installed boltpipe" if node.installed else "boltpipe unchanged"
        print(f"boltpipe: {name}: {installed}, worker {node.worker} ({node.manager}), "
              f"sent {format_bytes(node.bytes_sent)} in {node.files_sent} file(s), {node.files_skipped} unchanged", flush=True)


def _detach(args: argparse.Namespace, inventory: Inventory) -> int:
    """Run the foreground command in a new session with its output in a log file,
    and return once its state says it serves (or report why it did not)."""
    run_dir = run_dir_for(inventory)
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "coordinator.log"
    # On a terminal the coordinator's progress bars (loading, pushing weights) are shown here as they
    # are written to its log.
    forward = sys.stderr.isatty() and not args.no_progress
    command = [sys.executable, "-m", "cluster", "up", str(inventory.source), "--coordinator-only"]
    with open(log_path, "wb") as log:
        child = subprocess.Popen(
            command + ([] if forward else ["--no-progress"]),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    deadline = time.monotonic() + DETACH_TIMEOUT_S
    shown = 0
    while time.monotonic() < deadline:
        if forward:
            shown = _forward_log(log_path, shown)
        state = read_state(run_dir)
        if state is not None and state.coordinator_pid == child.pid and state.status == "ready":
            print(f"boltpipe: serving {state.model} at {state.url}/v1 (coordinator pid {child.pid}, log {log_path})")
            print(f"stop it with: cluster down {args.inventory}")
            return 0
        if child.poll() is not None:
            raise BringUpError(f"the cluster did not come up; its log ({log_path}):\n{log_tail(log_path, 25)}")
        time.sleep(0.2)
    os.killpg(child.pid, signal.SIGTERM)
    raise BringUpError(f"the cluster was not serving after {DETACH_TIMEOUT_S:.0f} s; see {log_path}")


def _forward_log(path, offset: int) -> int:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return offset
    if data:
        sys.stderr.buffer.write(data)
        sys.stderr.flush()
    return offset + len(data)


async def serve(inventory: Inventory, *, show_progress: bool = True) -> int:
    run_dir = run_dir_for(inventory)
    state = ClusterState(os.getpid(), inventory.url, "", "starting")
    state.save(run_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    cluster: RunningCluster | None = None
    runner: web.AppRunner | None = None
    try:
        bring = asyncio.create_task(bring_up(inventory, show_progress=show_progress, log_dir=run_dir / "logs"))
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({bring, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not bring.done():
            bring.cancel()
            await asyncio.gather(bring, return_exceptions=True)
            return 130
        stopper.cancel()
        cluster = bring.result()

        def worker_restarted(worker) -> None:
            # `cluster down` stops workers by the pids in the state file.
            state.workers = [WorkerRecord(w.name, w.pid, w.port) for w in cluster.local_workers]
            state.save(run_dir)

        cluster.on_worker_restart = worker_restarted
        keys, note = server_keys(inventory)
        if note:
            print(f"boltpipe: {note}", flush=True)
        api = OpenAIServer(cluster.engine, cluster.model_name, cluster.admission, cluster.metrics,
                           ServeLimits(cluster.context_length, inventory.request_timeout_s, cluster.vanished, keys),
                           cluster.defaults, cluster.view(bool(keys)))
        runner = api.runner(api.app())
        await runner.setup()
        try:
            await web.TCPSite(runner, inventory.serve_host, inventory.serve_port).start()
        except OSError as exc:
            raise BringUpError(f"cannot serve on {inventory.serve_host}:{inventory.serve_port}: {exc.strerror}") from None
        publish_targets(inventory, run_dir)
        state.model = cluster.model_name
        state.status = "ready"
        state.workers = [WorkerRecord(w.name, w.pid, w.port) for w in cluster.local_workers]
        state.save(run_dir)
        layers = ", ".join(f"{p.node} [{p.layer_start},{p.layer_end})" for p in cluster.plan)
        print(f"boltpipe: {cluster.model_name} over {len(cluster.plan)} stages: {layers}", flush=True)
        print(f"boltpipe: serving at {inventory.url}/v1 (OpenAI API; context {cluster.context_length} tokens, "
              f"{cluster.admission.max_running} requests at once); Ctrl-C stops", flush=True)
        print(f"boltpipe: the cluster's page: {inventory.url}/ (chat, ring, live latency)", flush=True)
        await stop.wait()
        print("boltpipe: stopping", flush=True)
        return 0
    finally:
        if runner is not None:
            await runner.cleanup()
        if cluster is not None:
            await cluster.close()
        shared_targets_path(paths.home() / "prometheus", run_dir.name).unlink(missing_ok=True)
        clear_state(run_dir)


def publish_targets(inventory: Inventory, run_dir) -> None:
    """The metrics endpoints of every node and of this coordinator (its API port serves /metrics)."""
    entries = targets(inventory.name, {n.name: n.metrics_address for n in inventory.nodes
                                       if n.metrics_address is not None})
    entries += targets(inventory.name, {"coordinator": format_address(inventory.serve_host, inventory.serve_port)},
                       role="coordinator")
    write_targets(run_dir / TARGETS_FILE, entries)
    prometheus_dir = paths.home() / "prometheus"
    install_config(prometheus_dir)
    write_targets(shared_targets_path(prometheus_dir, run_dir.name), entries)


def is_serving(inventory: Inventory) -> ClusterState | None:
    state = live_state(run_dir_for(inventory))
    return state if state is not None and state.status == "ready" and pid_alive(state.coordinator_pid) else None
