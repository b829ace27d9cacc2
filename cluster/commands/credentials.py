"""`cluster credentials INVENTORY DIR`: what a worker started by hand needs to join the cluster —
the cluster secret and the cluster CA's worker certificate — written to DIR for copying to it."""

from __future__ import annotations

import argparse
from pathlib import Path

from cluster.credentials import worker_files
from cluster.inventory import load_inventory
from cluster.paths import write_private


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("credentials", help="write the secret and TLS files a hand-started worker needs")
    p.add_argument("inventory", help="inventory.yaml")
    p.add_argument("directory", help="where to write cluster-secret, ca.pem, worker.pem and worker.key")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    inventory = load_inventory(args.inventory)
    out = Path(args.directory).expanduser()
    for name, text in worker_files(inventory).items():
        write_private(out / name, text)
    print(f"wrote the credentials of cluster {inventory.name} to {out} (readable only by you); copy the directory "
          f"to the worker's machine and start it with:\n  cluster worker --host ADDRESS --port PORT --name NAME "
          f"--secret-file {out}/cluster-secret --tls-dir {out}")
    return 0
