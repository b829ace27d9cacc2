"""`cluster plan INVENTORY`: the placement `cluster up` would use, without loading anything."""

from __future__ import annotations

import argparse
import asyncio
import json

from cluster.inventory import load_inventory
from cluster.launch.bring_up import plan_cluster
from cluster.planning.cluster_plan import plan_table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="print which layers each node would hold, and the memory it needs")
    p.add_argument("inventory", help="inventory.yaml")
    p.add_argument("--discovery-timeout", type=float, default=None,
                   help="seconds to wait for nodes found by Bonjour (default: the inventory's discovery.timeout_s)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (when a GGUF is imported first)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    inventory = load_inventory(args.inventory)
    _, model_name, plan = asyncio.run(plan_cluster(inventory, show_progress=not args.no_progress,
                                                   discovery_timeout_s=args.discovery_timeout))
    if args.json:
        print(json.dumps({
            "model": model_name, "context_length": plan.context_length, "max_sessions": plan.max_sessions,
            "context_note": plan.context_note,
            "stages": [{"node": s.node, "address": s.facts.address, "source": s.facts.source,
                        "layer_start": s.layer_start, "layer_end": s.layer_end,
                        "weight_bytes": s.placement.weight_bytes, "kv_bytes": s.placement.kv_bytes,
                        "headroom_bytes": s.placement.headroom_bytes, "need_bytes": s.placement.need_bytes,
                        "budget_bytes": s.placement.budget_bytes, "next_address": s.next_address,
                        "next_link": s.next_link, "backend": s.backend} for s in plan.stages],
        }, indent=2))
    else:
        print(plan_table(plan, model_name))
    return 0
