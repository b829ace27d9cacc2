"""`cluster status INVENTORY`: one row per node — reachable, worker state, layers, backend, memory,
sessions — from the workers themselves (over SSH for a node whose worker does not answer), and live
figures read from the same Prometheus metrics the dashboards use: decode latency p50/p95, hop and
queue times, the mean decode batch and tokens/s over the last interval. `--watch` redraws the table
in place."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict

import aiohttp

from cluster.commands.live_metrics import Scrape, coordinator_figures, node_figures, parse_scrape
from cluster.inventory import Inventory, NodeSpec, format_address, load_inventory
from cluster.launch.node_health import node_info
from cluster.planning.placement import format_bytes
from cluster.state import live_state, run_dir_for
from deploy import remote_worker
from deploy.ssh import SshError, connect
from deploy.text_table import format_rows
from node.metrics_endpoint import memory_limit_bytes
from proto import boltpipe_pb2 as pb

CLEAR_SCREEN = "\x1b[H\x1b[2J"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="a per-node table of the cluster's state and live latency")
    p.add_argument("inventory", help="inventory.yaml")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--watch", action="store_true", help="refresh the table in place until Ctrl-C")
    p.add_argument("--interval", type=float, default=2.0,
                   help="seconds between the two readings of the metrics the live figures come from (default 2)")
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


def metrics_url(spec: NodeSpec, info: pb.NodeInfo | str) -> str | None:
    """The worker's metrics endpoint: the port it says it serves on, else the inventory's."""
    if isinstance(info, pb.NodeInfo) and info.metrics_port and spec.host:
        return f"http://{format_address(spec.host, info.metrics_port)}/metrics"
    return f"http://{spec.metrics_address}/metrics" if spec.metrics_address else None


async def node_row(inventory: Inventory, spec: NodeSpec) -> dict:
    info = await node_info(inventory, spec)
    row = {"node": spec.name, "address": spec.address if spec.host else "bonjour", "reachable": True, "state": "",
           "layers": "", "backend": "", "memory": "", "sessions": None, "step_ms": None, "recent_batch": None,
           "batch": None, "prefix_bytes": None, "metrics": metrics_url(spec, info)}
    if isinstance(info, pb.NodeInfo):
        row["state"] = "serving" if info.loaded else "idle (no slice)"
        if info.loaded:
            row["layers"] = f"[{info.slice.layer_start},{info.slice.layer_end})"
            row["backend"] = info.slice.backend
        row["memory"] = f"{format_bytes(info.rss_bytes)} / {format_bytes(memory_limit_bytes(info))}"
        row["sessions"] = info.active_sessions
        row["step_ms"] = round(info.recent_step_ms, 2) if info.recent_step_ms else None
        # Sessions per recent decode-sized forward pass, as the worker itself remembers them.
        row["recent_batch"] = round(info.recent_batch_size, 2) if info.recent_batch_size else None
        row["batch"] = row["recent_batch"]
        row["prefix_bytes"] = info.prefix_bytes  # KV kept as prefixes for later requests
        return row
    if spec.deployed:
        row["reachable"], row["state"] = await _service_state(spec)
    else:
        row["reachable"], row["state"] = False, f"down: {info}"
    return row


async def status_rows(inventory: Inventory) -> list[dict]:
    return list(await asyncio.gather(*(node_row(inventory, n) for n in inventory.nodes)))


async def _scrape(session: aiohttp.ClientSession, url: str | None) -> Scrape | None:
    if url is None:
        return None
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=3)) as response:
            if response.status != 200:
                return None
            return parse_scrape(await response.text(), time.monotonic())
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
        return None


async def scrape_all(session: aiohttp.ClientSession, urls: dict[str, str | None]) -> dict[str, Scrape | None]:
    results = await asyncio.gather(*(_scrape(session, u) for u in urls.values()))
    return dict(zip(urls, results))


def _coordinator_url(inventory: Inventory) -> str | None:
    state = live_state(run_dir_for(inventory))
    return f"{state.url}/metrics" if state and state.status == "ready" else None


def with_figures(rows: list[dict], before: dict[str, Scrape | None], after: dict[str, Scrape | None]) -> list[dict]:
    """Each row's live figures between the two readings; its `batch` is the window's mean decode
    batch, else (no decode pass in the window, or no metrics) what the worker last reported."""
    for row in rows:
        then, now = before.get(row["node"]), after.get(row["node"])
        row["live"] = asdict(node_figures(then, now)) if then and now else None
        live_batch = row["live"]["batch_mean"] if row["live"] else None
        row["batch"] = live_batch if live_batch is not None else row.get("recent_batch")
    return rows


def _cell(value, unit: str = "") -> str:
    return "-" if value is None else f"{value:.1f}{unit}" if isinstance(value, float) else f"{value}{unit}"


def render(rows: list[dict], coordinator: dict | None, api_line: str, interval_s: float) -> str:
    head = ["node", "address", "reachable", "worker", "layers", "backend", "memory (rss / limit)", "sessions",
            "batch", "decode p50", "decode p95", "hop p50", "queue p95", "tokens/s"]
    table = [head]
    for r in rows:
        live = r.get("live") or {}
        idle = live and not live["steps"]
        table.append([r["node"], r["address"], "yes" if r["reachable"] else "no", r["state"], r["layers"] or "-",
                      r["backend"] or "-", r["memory"] or "-", _cell(r["sessions"]), _cell(r.get("batch")),
                      "idle" if idle else _cell(live.get("decode_p50_ms"), " ms"),
                      "idle" if idle else _cell(live.get("decode_p95_ms"), " ms"),
                      _cell(live.get("hop_p50_ms"), " ms"), _cell(live.get("queue_p95_ms"), " ms"),
                      _cell(live.get("tokens_per_s"))])
    lines = [format_rows(table), api_line]
    if any(r.get("prefix_bytes") for r in rows):
        lines.append("kept prefixes: " + ", ".join(f"{r['node']} {format_bytes(r['prefix_bytes'] or 0)}" for r in rows))
    if coordinator:
        lines.append(f"requests: {coordinator['running']} running, {coordinator['waiting']} waiting; "
                     f"generated {_cell(coordinator['generated_per_s'])} tokens/s; TTFT p50 "
                     f"{_cell(coordinator['ttft_p50_ms'], ' ms')}; inter-token p50 {_cell(coordinator['itl_p50_ms'], ' ms')}"
                     f", p95 {_cell(coordinator['itl_p95_ms'], ' ms')}")
        if coordinator.get("prefix_hits") or coordinator.get("prefix_misses"):
            lines.append(f"prefix cache: {coordinator['prefix_hits']} hits, {coordinator['prefix_misses']} misses, "
                         f"{coordinator['prefix_tokens_reused']} prompt positions reused, "
                         f"{coordinator['prefix_entries']} prefixes kept")
        if coordinator.get("speculative_trips"):
            lines.append(f"speculation: {coordinator['speculative_trips']} trips with drafts, "
                         f"{coordinator['acceptance']:.0%} of drafts kept, "
                         f"{coordinator['tokens_per_trip']:.2f} tokens per such trip")
    lines.append(f"(live figures over the last {interval_s:g} s, from each node's /metrics; batch: sessions per "
                 "decode forward pass)")
    return "\n".join(lines)


async def _report(inventory: Inventory, interval_s: float, watch: bool, as_json: bool) -> int:
    async with aiohttp.ClientSession() as session:
        rows = await status_rows(inventory)
        urls = {r["node"]: r["metrics"] for r in rows} | {"": _coordinator_url(inventory)}
        before = await scrape_all(session, urls)
        while True:
            await asyncio.sleep(interval_s)
            rows = await status_rows(inventory)
            urls = {r["node"]: r["metrics"] for r in rows} | {"": _coordinator_url(inventory)}
            after = await scrape_all(session, urls)
            with_figures(rows, before, after)
            coordinator = (asdict(coordinator_figures(before[""], after[""]))
                           if before.get("") and after.get("") else None)
            state = live_state(run_dir_for(inventory))
            if as_json:
                print(json.dumps({"serving": state.url if state and state.status == "ready" else None,
                                  "coordinator": coordinator, "interval_s": interval_s, "nodes": rows}, indent=2),
                      flush=True)
            else:
                api_line = f"API: {state.url}/v1 ({state.status})" if state else "API: not running"
                text = render(rows, coordinator, api_line, interval_s)
                print((CLEAR_SCREEN if watch and sys.stdout.isatty() else "") + text, flush=True)
            if not watch:
                return 0 if all(r["state"] == "serving" for r in rows) else 1
            if not sys.stdout.isatty():
                print(flush=True)  # readings apart when the output is a file or a pipe
            before = after


def run(args: argparse.Namespace) -> int:
    if args.interval <= 0:
        raise SystemExit("error: --interval must be a positive number of seconds")
    inventory = load_inventory(args.inventory)
    try:
        return asyncio.run(_report(inventory, args.interval, args.watch, args.json))
    except KeyboardInterrupt:
        return 0
