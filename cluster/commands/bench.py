"""`cluster bench INVENTORY`: cluster vs one mlx-lm process, measured in the same run."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from cluster.bench import format_table, measure_baseline, measure_cluster, report
from cluster.bringup import bring_up
from cluster.inventory import load_inventory


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure the cluster against one mlx-lm process")
    p.add_argument("inventory", help="inventory.yaml")
    p.add_argument("--prompt-tokens", type=int, default=512, help="prompt length for the prefill figure (default 512)")
    p.add_argument("--gen-tokens", type=int, default=64, help="tokens generated for the decode figure (default 64)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")
    p.set_defaults(run=run)


async def _bench(args: argparse.Namespace) -> dict:
    inventory = load_inventory(args.inventory)
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


def run(args: argparse.Namespace) -> int:
    if args.prompt_tokens < 2 or args.gen_tokens < 2:
        raise SystemExit("error: --prompt-tokens and --gen-tokens must be at least 2")
    result = asyncio.run(_bench(args))
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0
