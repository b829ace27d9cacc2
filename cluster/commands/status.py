"""`cluster status INVENTORY`: one row per node — reachable, worker state, layers, backend, memory,
sessions, recent step latency — from the workers themselves, and over SSH for a node whose worker
does not answer."""

from __future__ import annotations

import argparse
import asyncio
import json

from cluster.inventory import Inventory, NodeSpec, load_inventory
from cluster.node_health import node_info
from cluster.placement import format_bytes
from cluster.state import live_state, run_dir_for
from deploy import remote_worker
from deploy.ssh import SshError, connect
from deploy.text_table import format_rows
from proto import boltpipe_pb2 as pb


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="a per-node table of the cluster's state")
    p.add_argument("inventory", help="inventory.yaml")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(run=run)


async def _service_state(spec: NodeSpec) -> tuple[bool, str]:
    """(SSH reachable, what the node's service manager says) for a worker that did not answer."""
    try:
        node = await connect(spec.ssh, timeout_s=10)
    except SshError as exc:
        return False, f"unreachable: {exc}"
    try:
        status = await remote_worker.status(node, spec.name)
    finally:
        await node.close()
    return True, ("starting" if status.running else "down") + f" ({status.detail})"


async def node_row(spec: NodeSpec) -> dict:
    info = await node_info(spec)
    row = {"node": spec.name, "address": spec.address if spec.host else "bonjour", "reachable": True, "state": "",
           "layers": "", "backend": "", "memory": "", "sessions": None, "step_ms": None}
    if isinstance(info, pb.NodeInfo):
        row["state"] = "serving" if info.loaded else "idle (no slice)"
        if info.loaded:
            row["layers"] = f"[{info.slice.layer_start},{info.slice.layer_end})"
            row["backend"] = info.slice.backend
        row["memory"] = f"{format_bytes(info.rss_bytes)} / {format_bytes(info.usable_memory_bytes)}"
        row["sessions"] = info.active_sessions
        row["step_ms"] = round(info.recent_step_ms, 2) if info.recent_step_ms else None
        return row
    if spec.deployed:
        row["reachable"], row["state"] = await _service_state(spec)
    else:
        row["reachable"], row["state"] = False, f"down: {info}"
    return row


async def status_rows(inventory: Inventory) -> list[dict]:
    return list(await asyncio.gather(*(node_row(n) for n in inventory.nodes)))


def run(args: argparse.Namespace) -> int:
    inventory = load_inventory(args.inventory)
    rows = asyncio.run(status_rows(inventory))
    state = live_state(run_dir_for(inventory))
    if args.json:
        print(json.dumps({"serving": state.url if state and state.status == "ready" else None, "nodes": rows}, indent=2))
    else:
        head = ["node", "address", "reachable", "worker", "layers", "backend", "memory (rss / usable)", "sessions", "step p50"]
        table = [head] + [[r["node"], r["address"], "yes" if r["reachable"] else "no", r["state"], r["layers"] or "-",
                           r["backend"] or "-", r["memory"] or "-", "-" if r["sessions"] is None else str(r["sessions"]),
                           f"{r['step_ms']:.1f} ms" if r["step_ms"] else "-"] for r in rows]
        print(format_rows(table))
        print(f"API: {state.url}/v1 ({state.status})" if state else "API: not running")
    return 0 if all(r["state"] == "serving" for r in rows) else 1
