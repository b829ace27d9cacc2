"""Finding workers by Bonjour: browse `_boltpipe._tcp.local.`, keep a live table of the
nodes seen, wait for named ones, notice the ones that go away."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

from node.advertise import SERVICE_TYPE
from node.interfaces import Interface, decode_interfaces

log = logging.getLogger(__name__)


class DiscoveryTimeout(RuntimeError):
    def __init__(self, missing: list[str], seen: list[str], timeout_s: float):
        self.missing = missing
        found = ", ".join(seen) if seen else "none"
        super().__init__(
            f"after {timeout_s:g} s these nodes had not appeared by Bonjour: {', '.join(missing)} "
            f"(nodes seen: {found}). Check that `cluster worker --host 0.0.0.0 --name NAME` runs there and that "
            f"multicast DNS reaches this machine; or give the node's host and port in the inventory."
        )


@dataclass(frozen=True)
class NodeAdvert:
    name: str
    port: int
    addresses: tuple[str, ...]           # from the A/AAAA records
    interfaces: tuple[Interface, ...]    # from the TXT record, with link kinds
    boltpipe_version: str = ""
    protocol_version: int = 0
    machine: str = ""
    machine_id: str = ""
    total_memory_bytes: int = 0
    usable_memory_bytes: int = 0
    backends: tuple[str, ...] = ()
    seen_at: float = field(default=0.0, compare=False)


def _text(props: Mapping[bytes, bytes | None], key: str) -> str:
    value = props.get(key.encode())
    if not isinstance(value, bytes):
        return ""
    return value.decode("utf-8", errors="replace")


def _int(props: Mapping[bytes, bytes | None], key: str) -> int:
    try:
        return max(0, int(_text(props, key)))
    except ValueError:
        return 0


def parse_advert(port: int, addresses: list[str], props: Mapping[bytes, bytes | None]) -> NodeAdvert | None:
    """A node from a resolved service record; None when it is not a boltpipe worker's
    (no id). Other fields that are missing or garbled read as empty: never raises."""
    name = _text(props, "id").strip()
    if not name or not 0 < port < 65536:
        return None
    interfaces = tuple(decode_interfaces(_text(props, "addrs")))
    return NodeAdvert(
        name=name,
        port=port,
        addresses=tuple(addresses),
        interfaces=interfaces,
        boltpipe_version=_text(props, "bp"),
        protocol_version=_int(props, "proto"),
        machine=_text(props, "machine"),
        machine_id=_text(props, "mid"),
        total_memory_bytes=_int(props, "mem"),
        usable_memory_bytes=_int(props, "usable"),
        backends=tuple(b for b in _text(props, "backends").split(",") if b),
        seen_at=time.monotonic(),
    )


class Browser:
    """Keeps `nodes` (name -> NodeAdvert) current while open. Use as `async with Browser() as b`."""

    def __init__(self, on_removed: Callable[[NodeAdvert], None] | None = None):
        self.nodes: dict[str, NodeAdvert] = {}
        self.on_removed = on_removed
        self._by_service: dict[str, str] = {}   # service instance name -> node name
        self._changed = asyncio.Event()
        self._zeroconf = None
        self._browser = None
        self._tasks: set[asyncio.Task] = set()

    async def __aenter__(self) -> "Browser":
        from zeroconf.asyncio import AsyncServiceBrowser, AsyncZeroconf

        self._zeroconf = AsyncZeroconf()
        self._browser = AsyncServiceBrowser(self._zeroconf.zeroconf, SERVICE_TYPE, handlers=[self._on_change])
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._browser is not None:
            await self._browser.async_cancel()
            self._browser = None
        if self._zeroconf is not None:
            await self._zeroconf.async_close()
            self._zeroconf = None

    def _on_change(self, zeroconf, service_type: str, name: str, state_change) -> None:
        from zeroconf import ServiceStateChange

        if state_change is ServiceStateChange.Removed:
            node_name = self._by_service.pop(name, None)
            advert = self.nodes.pop(node_name, None) if node_name else None
            if advert is not None:
                log.warning("node %s is no longer advertised by Bonjour", advert.name)
                if self.on_removed:
                    self.on_removed(advert)
            self._changed.set()
            return
        task = asyncio.ensure_future(self._resolve(service_type, name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, service_type: str, name: str) -> None:
        from zeroconf.asyncio import AsyncServiceInfo

        info = AsyncServiceInfo(service_type, name)
        if not await info.async_request(self._zeroconf.zeroconf, 3000):
            return
        advert = parse_advert(info.port or 0, info.parsed_scoped_addresses(), info.properties or {})
        if advert is None:
            return
        self._by_service[name] = advert.name
        self.nodes[advert.name] = advert
        self._changed.set()

    async def wait_for(self, names: list[str], timeout_s: float) -> dict[str, NodeAdvert]:
        """The named nodes, as soon as all are seen; DiscoveryTimeout naming the missing ones."""
        deadline = time.monotonic() + timeout_s
        while True:
            missing = [n for n in names if n not in self.nodes]
            if not missing:
                return {n: self.nodes[n] for n in names}
            left = deadline - time.monotonic()
            if left <= 0:
                raise DiscoveryTimeout(missing, sorted(self.nodes), timeout_s)
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def settle(self, quiet_s: float, timeout_s: float) -> dict[str, NodeAdvert]:
        """Everything seen until nothing new arrived for quiet_s (or timeout_s passed)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(quiet_s, max(0.0, deadline - time.monotonic())))
            except asyncio.TimeoutError:
                break
        return dict(self.nodes)


async def discover(timeout_s: float = 3.0) -> list[NodeAdvert]:
    """The workers on the network now, by name."""
    async with Browser() as browser:
        await asyncio.sleep(min(timeout_s, 1.0))
        nodes = await browser.settle(quiet_s=1.0, timeout_s=max(0.0, timeout_s - 1.0))
    return sorted(nodes.values(), key=lambda n: n.name)
