"""This machine's network interfaces, the kind of link behind each, and their
encoding in a Bonjour TXT value.

Classification is pure (`classify`, `parse_hardware_ports`) so it is tested on
tables; only `local_interfaces`, `read_sysfs` and `darwin_hardware_ports` look
at the machine.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import Iterable, Mapping

import psutil

# Best first; the data plane ranks links by this order ("loopback" and "other" are special).
LINK_KINDS = ("thunderbolt", "ethernet", "wifi", "loopback", "other")

# Ranking for the TXT value: what a peer would pick first is kept longest.
_ENCODE_RANK = {"thunderbolt": 0, "ethernet": 1, "wifi": 2, "other": 3, "loopback": 4}

# A DNS TXT string is at most 255 bytes. zeroconf stores "key=value" in one string,
# so a caller whose key shares the string should pass max_bytes=255 - len(key) - 1.
TXT_MAX_BYTES = 255

_ARPHRD_ETHER = 1
_ARPHRD_LOOPBACK = 772
_IFF_LOOPBACK = 0x8

# Names of virtual links that carry no useful data-plane traffic (VPNs, AirDrop, containers).
_DARWIN_OTHER_PREFIXES = ("utun", "awdl", "llw", "anpi", "ap", "gif", "stf", "ipsec", "vmenet", "bridge")
_LINUX_OTHER_PREFIXES = (
    "docker", "tun", "tap", "wg", "tailscale", "zt", "virbr", "vxlan", "flannel",
    "cni", "cali", "ppp", "ifb", "dummy", "sit", "gre", "ip6tnl",
)
_LINUX_ETHERNET_PREFIXES = ("veth", "br", "eth", "en")


@dataclass(frozen=True)
class Interface:
    name: str  # "en0", "bridge0", "veth-h1", "lo"
    address: str  # "169.254.10.2" or "fd00::2"
    prefix_len: int  # 16, 24, 64
    kind: str  # one of LINK_KINDS


# --- classification (pure) -------------------------------------------------


def parse_hardware_ports(text: str) -> dict[str, str]:
    """`networksetup -listallhardwareports` output -> {device: hardware port name}."""
    ports: dict[str, str] = {}
    port: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("Hardware Port:"):
            port = line.partition(":")[2].strip() or None
        elif line.startswith("Device:") and port is not None:
            device = line.partition(":")[2].strip()
            if device:
                ports[device] = port
            port = None  # one device per block; never pair a later device with a stale port
        elif not line:
            port = None
    return ports


def _kind_from_port(port: str) -> str | None:
    p = port.lower()
    if "thunderbolt" in p:
        # Apple's Thunderbolt-to-Gigabit adapter is an Ethernet NIC, not Thunderbolt networking.
        return "ethernet" if "ethernet" in p else "thunderbolt"
    if "wi-fi" in p or "wifi" in p or "airport" in p or "wlan" in p:
        return "wifi"
    if "bluetooth" in p or "iphone" in p or "ipad" in p or "vpn" in p:
        return "other"
    if "ethernet" in p or "lan" in p:
        return "ethernet"
    return None


def _classify_darwin(name: str, hardware_ports: Mapping[str, str] | None, is_loopback: bool) -> str:
    if is_loopback or name.startswith("lo"):
        return "loopback"
    port = (hardware_ports or {}).get(name)
    if port is not None:
        kind = _kind_from_port(port)
        if kind is not None:
            return kind
    if name == "bridge0":  # the Thunderbolt Bridge unless networksetup says otherwise
        return "thunderbolt"
    if name.startswith(_DARWIN_OTHER_PREFIXES):
        return "other"
    if name.startswith("en"):
        return "ethernet"  # best guess when networksetup gave no port name
    return "other"


def _classify_linux(name: str, sysfs: Mapping[str, object] | None, is_loopback: bool) -> str:
    facts = sysfs or {}
    if is_loopback or facts.get("loopback") or facts.get("type") == _ARPHRD_LOOPBACK or name == "lo":
        return "loopback"
    if facts.get("wireless") or name.startswith("wl"):
        return "wifi"
    if facts.get("driver") in ("thunderbolt-net", "thunderbolt_net") or name.startswith("thunderbolt"):
        return "thunderbolt"
    if name.startswith(_LINUX_OTHER_PREFIXES):
        return "other"
    if name.startswith(_LINUX_ETHERNET_PREFIXES) or facts.get("type") == _ARPHRD_ETHER:
        return "ethernet"  # veth pairs and bridges in the namespace lab count as Ethernet
    return "other"


def classify(
    name: str,
    *,
    platform: str,
    hardware_ports: Mapping[str, str] | None = None,
    sysfs: Mapping[str, object] | None = None,
    is_loopback: bool = False,
) -> str:
    """The LINK_KINDS entry for interface `name` on `platform` (a sys.platform value).
    macOS uses `hardware_ports` (parse_hardware_ports), Linux the facts of read_sysfs."""
    if platform in ("darwin", "macos"):
        return _classify_darwin(name, hardware_ports, is_loopback)
    if platform.startswith("linux"):
        return _classify_linux(name, sysfs, is_loopback)
    return "loopback" if is_loopback else "other"


# --- facts from the machine (impure) ----------------------------------------


def read_sysfs(name: str, root: str = "/sys/class/net") -> dict[str, object]:
    """Facts about a Linux interface that `classify` uses; missing files mean unknown."""
    base = os.path.join(root, name)
    facts: dict[str, object] = {
        "wireless": os.path.isdir(os.path.join(base, "wireless")) or os.path.isdir(os.path.join(base, "phy80211")),
        "driver": None,
        "type": None,
        "loopback": False,
    }
    driver = os.path.join(base, "device", "driver")
    if os.path.islink(driver) or os.path.exists(driver):
        facts["driver"] = os.path.basename(os.path.realpath(driver))
    for key, fname, base_n in (("type", "type", 10), ("flags", "flags", 16)):
        try:
            with open(os.path.join(base, fname)) as f:
                value = int(f.read().strip(), base_n)
        except (OSError, ValueError):
            continue
        if key == "flags":
            facts["loopback"] = bool(value & _IFF_LOOPBACK)
        else:
            facts[key] = value
    return facts


def darwin_hardware_ports() -> dict[str, str]:
    """Device -> hardware port name on macOS; empty when networksetup is unavailable."""
    try:
        out = subprocess.run(
            ["networksetup", "-listallhardwareports"], capture_output=True, text=True, timeout=5, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return parse_hardware_ports(out)


def _prefix_len(netmask: str | None, max_len: int) -> int | None:
    if not netmask:
        return max_len
    try:
        bits = int(ipaddress.ip_address(netmask))
    except ValueError:
        return None
    ones = bin(bits).count("1")
    # A netmask must be contiguous ones followed by zeros.
    return ones if bits == ((1 << max_len) - 1) ^ ((1 << (max_len - ones)) - 1) else None


def local_interfaces() -> list[Interface]:
    """This machine's up interfaces with an IPv4 or non-link-local IPv6 address
    (fe80::/10 is skipped: it needs a scope id to be usable)."""
    stats = psutil.net_if_stats()
    platform = sys.platform
    ports = darwin_hardware_ports() if platform == "darwin" else None
    found: list[Interface] = []
    for name, addrs in psutil.net_if_addrs().items():
        st = stats.get(name)
        if st is None or not st.isup:
            continue
        kind: str | None = None
        for a in addrs:
            if a.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            try:
                ip = ipaddress.ip_address(a.address.split("%", 1)[0])
            except ValueError:
                continue
            if ip.version == 6 and ip.is_link_local:
                continue
            prefix = _prefix_len(a.netmask, ip.max_prefixlen)
            if prefix is None:
                continue
            if kind is None:
                is_lo = "loopback" in (getattr(st, "flags", "") or "").split(",") or ip.is_loopback
                sysfs = read_sysfs(name) if platform.startswith("linux") else None
                kind = classify(name, platform=platform, hardware_ports=ports, sysfs=sysfs, is_loopback=is_lo)
            found.append(Interface(name, str(ip), prefix, kind))
    return found


# --- TXT value: "address/prefix/kind/name,..." -------------------------------


def _valid_name(name: str) -> bool:
    return (
        0 < len(name) <= 64
        and name.isprintable()
        and not any(c.isspace() or c in "/," for c in name)
    )


def _canonical(iface: Interface) -> Interface | None:
    """The interface with its address in canonical form, or None if it cannot be sent."""
    if not isinstance(iface.address, str) or "%" in iface.address:
        return None
    try:
        ip = ipaddress.ip_address(iface.address)
    except ValueError:
        return None
    if ip.version == 6 and ip.is_link_local:
        return None
    if not isinstance(iface.prefix_len, int) or isinstance(iface.prefix_len, bool):
        return None
    if not 0 <= iface.prefix_len <= ip.max_prefixlen or iface.kind not in LINK_KINDS:
        return None
    if not isinstance(iface.name, str) or not _valid_name(iface.name):
        return None
    return Interface(iface.name, str(ip), iface.prefix_len, iface.kind)


def _entry(iface: Interface) -> str:
    return f"{iface.address}/{iface.prefix_len}/{iface.kind}/{iface.name}"


def encode_interfaces(ifaces: Iterable[Interface], *, max_bytes: int = TXT_MAX_BYTES) -> str:
    """Comma-separated "address/prefix_len/kind/name" entries, best-ranked first,
    at most max_bytes of UTF-8. Loopback is left out when anything else exists;
    when space runs out the lowest-ranked entries are dropped."""
    usable: list[Interface] = []
    for iface in ifaces:
        c = _canonical(iface)
        if c is not None and c not in usable:
            usable.append(c)
    if any(i.kind != "loopback" for i in usable):
        usable = [i for i in usable if i.kind != "loopback"]
    usable.sort(key=lambda i: (_ENCODE_RANK[i.kind], ":" in i.address))  # stable: keeps given order on ties
    out: list[str] = []
    size = 0
    for iface in usable:
        entry = _entry(iface)
        add = len(entry.encode()) + (1 if out else 0)
        if size + add > max_bytes:
            break
        out.append(entry)
        size += add
    return ",".join(out)


_PREFIX_RE = re.compile(r"[0-9]{1,3}")


def _parse_entry(entry: str) -> Interface | None:
    parts = entry.split("/")
    if len(parts) != 4:
        return None
    address, prefix, kind, name = parts
    if not _PREFIX_RE.fullmatch(prefix):
        return None
    return _canonical(Interface(name, address, int(prefix), kind))


def decode_interfaces(text: str | bytes | None) -> list[Interface]:
    """Interfaces from a TXT value written by encode_interfaces. Data from the network:
    malformed entries are skipped, never raised on."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            return []
    if not isinstance(text, str) or not text:
        return []
    return [i for i in map(_parse_entry, text.split(",")) if i is not None]
