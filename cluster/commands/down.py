"""`cluster down INVENTORY`: stop the cluster that `cluster up` started."""

from __future__ import annotations

import argparse

from cluster.inventory import load_inventory
from cluster.state import clear_state, read_state, run_dir_for
from deploy.local import pid_alive, stop_pids


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("down", help="stop the cluster of an inventory")
    p.add_argument("inventory", help="inventory.yaml")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    inventory = load_inventory(args.inventory)
    run_dir = run_dir_for(inventory)
    state = read_state(run_dir)
    if state is None:
        print(f"no cluster of {args.inventory} is running")
        return 0
    # The coordinator stops its own workers; any it left behind are stopped here.
    stop_pids([state.coordinator_pid], timeout_s=20.0)
    leftovers = [w.pid for w in state.workers if pid_alive(w.pid)]
    stop_pids(leftovers)
    clear_state(run_dir)
    print(f"stopped the cluster of {args.inventory} (coordinator and {len(state.workers)} workers)")
    return 0
