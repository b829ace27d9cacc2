"""What the coordinator knows of each inventory node before loading anything: where to
reach it, how much memory it can give, which machine it is on, its links.

Three sources: a local node (started by `cluster up` on this machine) is described by
this machine; a node with a static address answers GetInfo; a node named without an
address is found by Bonjour.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc

import node
from cluster.credentials import coordinator_auth
from cluster.inventory import Inventory, NodeSpec, format_address
from cluster.planning.addresses import choose_address
from cluster.planning.discovery import Browser, NodeAdvert
from node import sysinfo
from node.cluster_auth import ClusterAuth
from node.interfaces import Interface, local_interfaces
from proto import PROTOCOL_VERSION
from proto import boltpipe_pb2 as pb
from proto import boltpipe_pb2_grpc as pb_grpc


class NodeFactsError(RuntimeError):
    pass


@dataclass(frozen=True)
class NodeFacts:
    name: str
    source: str                          # "local", "static" or "bonjour"
    address: str                         # host:port the coordinator connects to
    port: int
    usable_memory_bytes: int
    machine_id: str
    machine: str
    interfaces: tuple[Interface, ...]    # the addresses the worker listens on, with link kinds
    backends: tuple[str, ...] = ()


LOOPBACK = {"127.0.0.1": Interface("lo", "127.0.0.1", 8, "loopback"), "::1": Interface("lo", "::1", 128, "loopback")}


def local_facts(spec: NodeSpec) -> NodeFacts:
    host = "127.0.0.1" if spec.host == "localhost" else spec.host
    return NodeFacts(
        name=spec.name, source="local", address=spec.address, port=spec.port,
        usable_memory_bytes=sysinfo.usable_memory_bytes(), machine_id=sysinfo.machine_id(),
        machine=sysinfo.machine_model(), interfaces=(LOOPBACK[host],), backends=tuple(sysinfo.mlx_backends()),
    )


def check_version(name: str, protocol: int, version: str) -> None:
    if protocol != PROTOCOL_VERSION:
        raise NodeFactsError(
            f"node {name} speaks protocol {protocol}, this coordinator {PROTOCOL_VERSION}: "
            f"install boltpipe {node.__version__} there (it runs {version or 'an unknown version'})"
        )


async def static_facts(spec: NodeSpec, timeout_s: float, auth: ClusterAuth) -> NodeFacts:
    async with auth.channel(spec.address) as channel:
        try:
            info = await pb_grpc.WorkerStub(channel).GetInfo(pb.InfoRequest(), timeout=timeout_s, wait_for_ready=True)
        except grpc.aio.AioRpcError as exc:
            raise NodeFactsError(f"node {spec.name} at {spec.address} is not reachable: {exc.code().name} {exc.details()}")
    check_version(spec.name, info.protocol_version, info.boltpipe_version)
    interfaces = tuple(Interface(i.name, i.address, i.prefix_len, i.kind) for i in info.interfaces)
    return NodeFacts(
        name=spec.name, source="static", address=spec.address, port=spec.port,
        usable_memory_bytes=info.usable_memory_bytes or info.total_memory_bytes, machine_id=info.machine_id,
        machine=info.machine, interfaces=interfaces, backends=tuple(info.backends),
    )


def bonjour_facts(spec: NodeSpec, advert: NodeAdvert) -> NodeFacts:
    check_version(spec.name, advert.protocol_version, advert.boltpipe_version)
    same_machine = advert.machine_id == sysinfo.machine_id()
    chosen = choose_address(local_interfaces(), advert.interfaces, same_machine=same_machine)
    host = chosen.address if chosen else (advert.addresses[0] if advert.addresses else None)
    if host is None:
        raise NodeFactsError(f"node {spec.name} was found by Bonjour but advertises no address this machine can reach")
    return NodeFacts(
        name=spec.name, source="bonjour", address=format_address(host, advert.port), port=advert.port,
        usable_memory_bytes=advert.usable_memory_bytes or advert.total_memory_bytes, machine_id=advert.machine_id,
        machine=advert.machine, interfaces=advert.interfaces, backends=advert.backends,
    )


async def gather_facts(inventory: Inventory, *, connect_timeout_s: float = 10.0,
                       discovery_timeout_s: float | None = None,
                       browser: Browser | None = None) -> list[NodeFacts]:
    """Facts for every node, in inventory order. Unreachable static nodes and nodes that never
    appear by Bonjour are all reported in one error."""
    wanted = [n.name for n in inventory.nodes if n.discovered]
    adverts: dict[str, NodeAdvert] = {}
    if wanted:
        timeout = inventory.discovery_timeout_s if discovery_timeout_s is None else discovery_timeout_s
        if browser is None:
            async with Browser() as own:
                adverts = await own.wait_for(wanted, timeout)
        else:
            adverts = await browser.wait_for(wanted, timeout)

    async def one(spec: NodeSpec) -> NodeFacts:
        if spec.discovered:
            return bonjour_facts(spec, adverts[spec.name])
        if spec.is_local:
            return local_facts(spec)
        return await static_facts(spec, connect_timeout_s, coordinator_auth(inventory))

    results = await asyncio.gather(*(one(n) for n in inventory.nodes), return_exceptions=True)
    errors = [str(r) for r in results if isinstance(r, Exception)]
    if errors:
        raise NodeFactsError("; ".join(errors))
    return list(results)
