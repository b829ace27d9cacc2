"""`cluster bench INVENTORY`: cluster vs one mlx-lm process, measured in the same run.

Without --concurrency: one stream, decode and prefill tokens/s and the per-hop overhead.
With --concurrency 1,2,4,8: several streams at once at each level (aggregate tokens/s, TTFT,
inter-token latency), optionally also with every process pinned to its own core; writes
JSON and a PNG chart.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
from pathlib import Path

from cluster.bench.chart import write_chart
from cluster.bench.load import format_load_table, load_report, measure_baseline_load, measure_cluster_load, pin_cluster
from cluster.bench.versus_mlx_lm import format_table, measure_baseline, measure_cluster, report
from cluster.inventory import Inventory, load_inventory
from cluster.launch.bring_up import bring_up


def _levels(text: str) -> list[int]:
    try:
        levels = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,2,4,8, got {text!r}") from None
    if not levels or levels[0] < 1 or levels[-1] > 256:
        raise argparse.ArgumentTypeError(f"concurrency levels must lie in 1-256, got {text!r}")
    return levels


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure the cluster against one mlx-lm process")
    p.add_argument("inventory", help="inventory.yaml")
    p.add_argument("--prompt-tokens", type=int, default=None,
                   help="prompt length (default 512 for the single-stream prefill figure, 64 with --concurrency)")
    p.add_argument("--gen-tokens", type=int, default=None, help="tokens generated per stream (default 64, 32 with --concurrency)")
    p.add_argument("--concurrency", type=_levels, default=None, metavar="1,2,4,8",
                   help="measure several streams at once at each of these levels")
    p.add_argument("--pinned", action="store_true",
                   help="with --concurrency: also measure with stage i pinned to core i and the baseline on one core")
    p.add_argument("--stages", type=int, default=None, help="use only the first N nodes of the inventory")
    p.add_argument("--out", type=Path, default=Path("bench-results"),
                   help="with --concurrency: directory for bench.json and bench.png (default ./bench-results)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")
    p.set_defaults(run=run)


def _inventory(args: argparse.Namespace) -> Inventory:
    inventory = load_inventory(args.inventory)
    if args.stages is not None:
        if not 1 <= args.stages <= len(inventory.nodes):
            raise SystemExit(f"error: --stages must lie in 1-{len(inventory.nodes)} (the inventory's nodes)")
        inventory = dataclasses.replace(inventory, nodes=inventory.nodes[: args.stages])
    return inventory


async def _bench_single(args: argparse.Namespace) -> dict:
    inventory = _inventory(args)
    print("bringing the cluster up...", file=sys.stderr)
    cluster = await bring_up(inventory, show_progress=False)
    try:
        print(f"measuring the cluster ({len(cluster.plan)} stages)...", file=sys.stderr)
        figures = await measure_cluster(cluster, args.prompt_tokens, args.gen_tokens)
    finally:
        await cluster.close()
    print("measuring mlx-lm in one process...", file=sys.stderr)
    baseline = await asyncio.to_thread(
        measure_baseline, cluster.model.path, args.prompt_tokens, args.gen_tokens, inventory.prefill_chunk
    )
    return report(figures, baseline)


async def _bench_load(args: argparse.Namespace) -> dict:
    inventory = _inventory(args)
    levels = args.concurrency
    print("bringing the cluster up...", file=sys.stderr)
    cluster = await bring_up(inventory, show_progress=False)
    pinned = None
    try:
        print(f"measuring the cluster ({len(cluster.plan)} stages) at concurrency {levels}...", file=sys.stderr)
        figures = await measure_cluster_load(cluster, levels, args.prompt_tokens, args.gen_tokens)
        if args.pinned:
            placement = pin_cluster(cluster)
            print(f"measuring the pinned cluster ({placement})...", file=sys.stderr)
            pinned = {"placement": placement,
                      "cluster": await measure_cluster_load(cluster, levels, args.prompt_tokens, args.gen_tokens)}
    finally:
        await cluster.close()
    model_dir, chunk = cluster.model.path, inventory.prefill_chunk
    print("measuring mlx-lm in one process...", file=sys.stderr)
    single = await asyncio.to_thread(measure_baseline_load, model_dir, levels, args.prompt_tokens, args.gen_tokens, chunk)
    if pinned is not None:
        core = min(os.sched_getaffinity(0))
        print(f"measuring mlx-lm in one process pinned to cpu{core}...", file=sys.stderr)
        pinned["baseline_cpu"] = core
        pinned["single_process"] = await asyncio.to_thread(
            measure_baseline_load, model_dir, levels, args.prompt_tokens, args.gen_tokens, chunk, [core])
    return load_report(levels, figures, single, len(cluster.plan), pinned)


def run(args: argparse.Namespace) -> int:
    load = args.concurrency is not None
    if args.pinned and not load:
        raise SystemExit("error: --pinned goes with --concurrency")
    args.prompt_tokens = args.prompt_tokens or (64 if load else 512)
    args.gen_tokens = args.gen_tokens or (32 if load else 64)
    if args.prompt_tokens < 2 or args.gen_tokens < 2:
        raise SystemExit("error: --prompt-tokens and --gen-tokens must be at least 2")
    if not load:
        result = asyncio.run(_bench_single(args))
        print(json.dumps(result, indent=2) if args.json else format_table(result))
        return 0
    result = asyncio.run(_bench_load(args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(result, indent=2))
    write_chart(result, args.out / "bench.png")
    print(json.dumps(result, indent=2) if args.json else format_load_table(result))
    print(f"wrote {args.out / 'bench.json'} and {args.out / 'bench.png'}", file=sys.stderr)
    return 0
