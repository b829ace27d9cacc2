"""`cluster down INVENTORY`: stop the cluster that `cluster up` started, on this machine and on
every SSH node (their workers' services are removed; caches stay unless --purge)."""

from __future__ import annotations

import argparse
import asyncio

from cluster.inventory import load_inventory
from cluster.launch.ssh_deploy import deployed_nodes, remove_workers
from cluster.state import clear_state, read_state, run_dir_for
from deploy.local import pid_alive, stop_pids


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("down", help="stop the cluster of an inventory")
    p.add_argument("inventory", help="inventory.yaml")
    p.add_argument("--purge", action="store_true",
                   help="also remove everything boltpipe installed on SSH nodes (venv, wheels, weight shards)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    inventory = load_inventory(args.inventory)
    run_dir = run_dir_for(inventory)
    state = read_state(run_dir)
    if state is not None:
        # The coordinator stops its own local workers; any it left behind are stopped here.
        stop_pids([state.coordinator_pid], timeout_s=20.0)
        stop_pids([w.pid for w in state.workers if pid_alive(w.pid)])
        clear_state(run_dir)
        print(f"stopped the coordinator of {args.inventory} and its {len(state.workers)} local worker(s)")
    elif not deployed_nodes(inventory):
        print(f"no cluster of {args.inventory} is running")
        return 0
    failed = False
    if deployed_nodes(inventory):
        for name, outcome in asyncio.run(remove_workers(inventory, purge=args.purge)).items():
            failed |= outcome.startswith(("not reached", "failed"))
            print(f"{name}: {outcome}")
    return 1 if failed else 0
