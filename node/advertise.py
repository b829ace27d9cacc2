"""Bonjour (multicast DNS) advertisement of a worker as `_boltpipe._tcp.local.`.

The TXT record carries what the coordinator needs to place layers and pick data-plane
addresses before it has said a word to the worker: node id, versions, machine, memory,
backends and the worker's addresses with the kind of link behind each.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from typing import Sequence

import node
from node import sysinfo
from node.interfaces import Interface, encode_interfaces, local_interfaces
from proto import PROTOCOL_VERSION

SERVICE_TYPE = "_boltpipe._tcp.local."

log = logging.getLogger(__name__)


def instance_name(node_name: str) -> str:
    """A DNS-SD instance label: printable, at most 63 bytes."""
    label = re.sub(r"[^A-Za-z0-9 _.-]", "-", node_name)[:63] or "worker"
    return f"{label}.{SERVICE_TYPE}"


def listening_interfaces(listen_host: str, interfaces: Sequence[Interface]) -> list[Interface]:
    """The interfaces a worker is reachable on: all of them for a wildcard listen address,
    else the one holding that address."""
    listen_host = "127.0.0.1" if listen_host == "localhost" else listen_host
    if listen_host in ("0.0.0.0", "::", ""):
        return list(interfaces)
    return [i for i in interfaces if i.address == listen_host]


def advert_properties(node_name: str, interfaces: Sequence[Interface], backends: Sequence[str]) -> dict[str, str]:
    return {
        "id": node_name,
        "bp": node.__version__,
        "proto": str(PROTOCOL_VERSION),
        "machine": sysinfo.machine_model()[:120],
        "mid": sysinfo.machine_id(),
        "mem": str(sysinfo.total_memory_bytes()),
        "usable": str(sysinfo.usable_memory_bytes()),
        "backends": ",".join(backends),
        "addrs": encode_interfaces(interfaces),
    }


def _packed(addresses: Sequence[str]) -> list[bytes]:
    packed = []
    for address in addresses:
        ip = ipaddress.ip_address(address)
        packed.append(socket.inet_pton(socket.AF_INET6 if ip.version == 6 else socket.AF_INET, address))
    return packed


class Advertiser:
    """Registers the worker on start and says goodbye on stop, so coordinators notice a
    worker that stops at once rather than when its record expires."""

    def __init__(self, node_name: str, listen_host: str, port: int, backends: Sequence[str]):
        self.node_name = node_name
        self.listen_host = listen_host
        self.port = port
        self.backends = list(backends)
        self._zeroconf = None
        self._info = None

    async def start(self) -> bool:
        from zeroconf import ServiceInfo
        from zeroconf.asyncio import AsyncZeroconf

        interfaces = [i for i in listening_interfaces(self.listen_host, local_interfaces()) if i.kind != "loopback"]
        if not interfaces:
            log.info("not advertising by Bonjour: listening on %s only", self.listen_host)
            return False
        self._info = ServiceInfo(
            SERVICE_TYPE,
            instance_name(self.node_name),
            port=self.port,
            properties=advert_properties(self.node_name, interfaces, self.backends),
            addresses=_packed([i.address for i in interfaces]),
            server=f"{socket.gethostname().split('.')[0] or 'boltpipe'}.local.",
        )
        try:
            self._zeroconf = AsyncZeroconf()
            # Two workers may share a name on one network; the TXT id is what counts.
            # The call returns a task that finishes once the announcements are out.
            await (await self._zeroconf.async_register_service(self._info, allow_name_change=True))
        except Exception as exc:  # multicast may be blocked; the static inventory still works
            log.warning("Bonjour advertisement failed (%s); coordinators must name this worker's address", exc)
            await self.stop()
            return False
        log.info("advertised %s on %s", self._info.name, ", ".join(i.address for i in interfaces))
        return True

    async def stop(self) -> None:
        if self._zeroconf is None:
            return
        try:
            if self._info is not None:
                # Await the goodbye broadcast itself, or closing would cancel it.
                await (await self._zeroconf.async_unregister_service(self._info))
        except Exception as exc:
            log.debug("Bonjour goodbye failed: %s", exc)
        finally:
            await self._zeroconf.async_close()
            self._zeroconf = None
