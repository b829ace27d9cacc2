"""A small network made of Linux network namespaces: a "switch" namespace holding a bridge,
and host namespaces each joined to it by a veth pair. Nothing touches the root namespace.

Used by the lab tests: real workers in separate namespaces find each other by Bonjour
(multicast DNS crosses the bridge) exactly as machines on one Ethernet segment would.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from dataclasses import dataclass, field

SUBNET = "10.77.0"


class LabUnavailable(RuntimeError):
    pass


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if done.returncode != 0:
        raise LabUnavailable(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")


@dataclass
class Lab:
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    hosts: dict[str, str] = field(default_factory=dict)   # host name -> its address
    namespaces: list[str] = field(default_factory=list)

    @property
    def switch(self) -> str:
        return f"bpsw-{self.tag}"

    def netns(self, host: str) -> str:
        return f"bp{host}-{self.tag}"

    def build(self, host_names: list[str]) -> "Lab":
        if os.geteuid() != 0:
            raise LabUnavailable("network namespaces need root (CAP_NET_ADMIN)")
        try:
            subprocess.run(["ip", "-V"], capture_output=True, timeout=10)
        except FileNotFoundError:
            raise LabUnavailable("the `ip` command (iproute2) is not installed") from None
        self._add_ns(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for i, host in enumerate(host_names, start=1):
            ns, port = self.netns(host), f"p{i}"
            self._add_ns(ns)
            _ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
            address = f"{SUBNET}.{i + 1}"
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            # Multicast (mDNS) leaves by eth0: there is no default route in the lab.
            _ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0")
            self.hosts[host] = address
        return self

    def _add_ns(self, name: str) -> None:
        _ip("netns", "add", name)
        self.namespaces.append(name)

    def command(self, host: str, argv: list[str]) -> list[str]:
        """argv run inside the host's namespace (`ip netns exec` execs it: same pid)."""
        return ["ip", "netns", "exec", self.netns(host), *argv]

    def teardown(self) -> None:
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
        self.namespaces.clear()
