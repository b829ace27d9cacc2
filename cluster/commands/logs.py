"""`cluster logs INVENTORY NODE [-f]`: a worker's log, from this machine or over SSH."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from cluster.inventory import load_inventory
from cluster.state import StateError, run_dir_for
from deploy import remote_worker
from deploy.ssh import connect, quote


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("logs", help="show a worker's log")
    p.add_argument("inventory", help="inventory.yaml")
    p.add_argument("node", help="the node's name in the inventory")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines (Ctrl-C stops)")
    p.add_argument("-n", "--lines", type=int, default=100, help="how many last lines (default 100)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    inventory = load_inventory(args.inventory)
    spec = next((n for n in inventory.nodes if n.name == args.node), None)
    if spec is None:
        raise StateError(f"{args.inventory} has no node {args.node!r} (nodes: {', '.join(n.name for n in inventory.nodes)})")
    if spec.deployed:
        return asyncio.run(_remote(spec, args.lines, args.follow))
    if spec.is_local:
        return _local(run_dir_for(inventory) / "logs" / f"worker-{spec.name}.log", args.lines, args.follow)
    raise StateError(f"node {spec.name} is not started by boltpipe (no ssh: settings, not local): its log is on "
                     "that machine, where its worker was started")


async def _remote(spec, lines: int, follow: bool) -> int:
    node = await connect(spec.ssh)
    try:
        path = await remote_worker.log_path(node, spec.name)
        if path is None:
            raise StateError(f"node {spec.name} has no boltpipe worker installed (run `cluster up` first)")
        command = f"tail -n {int(lines)} {'-F ' if follow else ''}{quote(path)}"
        process = await node.conn.create_process(command)
        async for line in process.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
        await process.wait()
        return 0
    finally:
        await node.close()


def _local(path, lines: int, follow: bool) -> int:
    if not path.is_file():
        raise StateError(f"no log at {path}: the cluster has not been started on this machine")
    with open(path, errors="replace") as f:
        sys.stdout.writelines(f.readlines()[-lines:])
        sys.stdout.flush()
        while follow:
            line = f.readline()
            if line:
                sys.stdout.write(line)
                sys.stdout.flush()
            else:
                time.sleep(0.2)
    return 0
