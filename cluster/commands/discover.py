"""`cluster discover`: the boltpipe workers that Bonjour finds on the network."""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import asdict

from cluster.planning.discovery import NodeAdvert, discover
from cluster.planning.placement import format_bytes
from deploy.text_table import format_rows


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("discover", help="list the workers found on the network by Bonjour")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds to listen (default 3)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def advert_rows(nodes: list[NodeAdvert]) -> list[tuple[str, ...]]:
    rows = [("node", "addresses", "machine", "memory", "usable", "backends", "version")]
    for n in nodes:
        links = ", ".join(f"{i.address}:{n.port} ({i.kind}, {i.name})" for i in n.interfaces) or \
            ", ".join(f"{a}:{n.port}" for a in n.addresses)
        rows.append((n.name, links, n.machine, format_bytes(n.total_memory_bytes), format_bytes(n.usable_memory_bytes),
                     ",".join(n.backends), f"{n.boltpipe_version} (protocol {n.protocol_version})"))
    return rows


def run(args: argparse.Namespace) -> int:
    nodes = asyncio.run(discover(args.timeout))
    if args.json:
        print(json.dumps([{"name": n.name, "port": n.port, "addresses": list(n.addresses),
                           "interfaces": [asdict(i) for i in n.interfaces],
                           "machine": n.machine, "machine_id": n.machine_id, "total_memory_bytes": n.total_memory_bytes,
                           "usable_memory_bytes": n.usable_memory_bytes, "backends": list(n.backends),
                           "boltpipe_version": n.boltpipe_version, "protocol_version": n.protocol_version}
                          for n in nodes], indent=2))
        return 0
    if not nodes:
        print(f"no boltpipe workers answered within {args.timeout:g} s (is multicast DNS blocked here? "
              "workers announce themselves when they listen beyond loopback: cluster worker --host 0.0.0.0)")
        return 1
    print(format_rows(advert_rows(nodes)))
    return 0
