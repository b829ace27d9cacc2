"""node.interfaces: link-kind classification tables, the TXT encoding, and this machine's interfaces."""

from __future__ import annotations

import ipaddress
import os
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.interfaces import (
    LINK_KINDS,
    TXT_MAX_BYTES,
    Interface,
    classify,
    decode_interfaces,
    encode_interfaces,
    local_interfaces,
    parse_hardware_ports,
    read_sysfs,
)

# `networksetup -listallhardwareports` on a Mac mini (M2 Pro) with four Thunderbolt ports.
MAC_MINI_PORTS = """
Hardware Port: Ethernet
Device: en0
Ethernet Address: 3c:a6:f6:12:34:56

Hardware Port: Thunderbolt Bridge
Device: bridge0
Ethernet Address: 36:0f:a3:11:22:00

Hardware Port: Wi-Fi
Device: en1
Ethernet Address: 3c:a6:f6:12:34:57

Hardware Port: Thunderbolt 1
Device: en2
Ethernet Address: 36:0f:a3:11:22:01

Hardware Port: Thunderbolt 2
Device: en3
Ethernet Address: 36:0f:a3:11:22:02

Hardware Port: Thunderbolt 3
Device: en4
Ethernet Address: 36:0f:a3:11:22:03

Hardware Port: Thunderbolt 4
Device: en5
Ethernet Address: 36:0f:a3:11:22:04

Hardware Port: iPhone USB
Device: en8
Ethernet Address: 5a:11:22:33:44:55

VLAN Configurations
===================
"""


def test_parse_hardware_ports_mac_mini():
    assert parse_hardware_ports(MAC_MINI_PORTS) == {
        "en0": "Ethernet",
        "bridge0": "Thunderbolt Bridge",
        "en1": "Wi-Fi",
        "en2": "Thunderbolt 1",
        "en3": "Thunderbolt 2",
        "en4": "Thunderbolt 3",
        "en5": "Thunderbolt 4",
        "en8": "iPhone USB",
    }


def test_parse_hardware_ports_tolerates_crlf_and_garbage():
    text = "junk\r\nDevice: en9\r\nHardware Port: USB 10/100/1000 LAN\r\nDevice: en7\r\nDevice: en6\r\n"
    # en9 has no port before it and en6 follows a block that already had its device.
    assert parse_hardware_ports(text) == {"en7": "USB 10/100/1000 LAN"}
    assert parse_hardware_ports("") == {}


MAC_PORTS = parse_hardware_ports(MAC_MINI_PORTS) | {
    "en6": "USB 10/100/1000 LAN",
    "en7": "Thunderbolt Ethernet Slot 1",  # Apple's Thunderbolt-to-Gigabit adapter
    "en10": "AirPort",
    "en11": "Bluetooth PAN",
}


@pytest.mark.parametrize(
    ("name", "ports", "kind"),
    [
        ("en0", MAC_PORTS, "ethernet"),
        ("en1", MAC_PORTS, "wifi"),
        ("bridge0", MAC_PORTS, "thunderbolt"),
        ("en2", MAC_PORTS, "thunderbolt"),
        ("en5", MAC_PORTS, "thunderbolt"),
        ("en6", MAC_PORTS, "ethernet"),
        ("en7", MAC_PORTS, "ethernet"),
        ("en8", MAC_PORTS, "other"),
        ("en10", MAC_PORTS, "wifi"),
        ("en11", MAC_PORTS, "other"),
        ("lo0", MAC_PORTS, "loopback"),
        ("bridge0", None, "thunderbolt"),  # the Thunderbolt Bridge by default
        ("bridge100", None, "other"),  # Internet Sharing / VM bridge
        ("utun3", MAC_PORTS, "other"),
        ("awdl0", MAC_PORTS, "other"),
        ("llw0", MAC_PORTS, "other"),
        ("anpi0", MAC_PORTS, "other"),
        ("ap1", MAC_PORTS, "other"),
        ("en0", None, "ethernet"),  # no networksetup: best guess
    ],
)
def test_classify_macos(name, ports, kind):
    assert classify(name, platform="darwin", hardware_ports=ports) == kind


ETHER = {"wireless": False, "driver": None, "type": 1, "loopback": False}


@pytest.mark.parametrize(
    ("name", "sysfs", "is_loopback", "kind"),
    [
        ("veth-h1", ETHER, False, "ethernet"),
        ("br0", ETHER, False, "ethernet"),
        ("eth0", ETHER | {"driver": "virtio_net"}, False, "ethernet"),
        ("enp3s0", ETHER | {"driver": "igc"}, False, "ethernet"),
        ("lab-a", ETHER, False, "ethernet"),  # any ARPHRD_ETHER link, whatever its name
        ("wlan0", ETHER | {"wireless": True}, False, "wifi"),
        ("wlp2s0", None, False, "wifi"),
        ("thunderbolt0", ETHER | {"driver": "thunderbolt-net"}, False, "thunderbolt"),
        ("tbt-link", ETHER | {"driver": "thunderbolt_net"}, False, "thunderbolt"),
        ("thunderbolt1", None, False, "thunderbolt"),
        ("lo", {"wireless": False, "driver": None, "type": 772, "loopback": True}, False, "loopback"),
        ("lo", None, True, "loopback"),
        ("docker0", ETHER, False, "other"),
        ("tun0", {"wireless": False, "driver": None, "type": 65534, "loopback": False}, False, "other"),
        ("wg0", {"type": 65534}, False, "other"),
        ("sit0", {"type": 776}, False, "other"),
    ],
)
def test_classify_linux(name, sysfs, is_loopback, kind):
    assert classify(name, platform="linux", sysfs=sysfs, is_loopback=is_loopback) == kind


def test_classify_unknown_platform():
    assert classify("Ethernet 2", platform="win32") == "other"
    assert classify("Loopback", platform="win32", is_loopback=True) == "loopback"


def test_read_sysfs_fake_tree(tmp_path):
    drivers = tmp_path / "drivers"
    (drivers / "thunderbolt-net").mkdir(parents=True)
    tb = tmp_path / "net" / "thunderbolt0"
    (tb / "device").mkdir(parents=True)
    os.symlink(drivers / "thunderbolt-net", tb / "device" / "driver")
    (tb / "type").write_text("1\n")
    (tb / "flags").write_text("0x1003\n")
    wl = tmp_path / "net" / "wlan0"
    (wl / "wireless").mkdir(parents=True)
    (wl / "type").write_text("garbage\n")
    root = str(tmp_path / "net")
    assert read_sysfs("thunderbolt0", root) == {"wireless": False, "driver": "thunderbolt-net", "type": 1, "loopback": False}
    assert read_sysfs("wlan0", root) == {"wireless": True, "driver": None, "type": None, "loopback": False}
    assert read_sysfs("missing", root) == {"wireless": False, "driver": None, "type": None, "loopback": False}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /sys/class/net")
def test_read_sysfs_real_loopback():
    facts = read_sysfs("lo")
    assert facts["loopback"] is True and facts["type"] == 772
    assert classify("lo", platform="linux", sysfs=facts) == "loopback"


def test_local_interfaces_has_loopback():
    ifaces = local_interfaces()
    assert any(i.kind == "loopback" and i.address == "127.0.0.1" and i.prefix_len == 8 for i in ifaces)
    for i in ifaces:
        assert i.kind in LINK_KINDS
        ip = ipaddress.ip_address(i.address)  # no "%scope" suffix
        assert not (ip.version == 6 and ip.is_link_local)
        assert 0 <= i.prefix_len <= ip.max_prefixlen


# --- TXT encoding --------------------------------------------------------------

TB = Interface("bridge0", "169.254.3.2", 16, "thunderbolt")
ETH = Interface("en0", "192.168.1.20", 24, "ethernet")
WIFI = Interface("en1", "192.168.50.7", 24, "wifi")
V6 = Interface("en0", "fd00::2", 64, "ethernet")
LO = Interface("lo0", "127.0.0.1", 8, "loopback")


def test_encode_format_and_order():
    text = encode_interfaces([WIFI, LO, V6, ETH, TB])
    assert text == (
        "169.254.3.2/16/thunderbolt/bridge0,192.168.1.20/24/ethernet/en0,"
        "fd00::2/64/ethernet/en0,192.168.50.7/24/wifi/en1"
    )
    assert decode_interfaces(text) == [TB, ETH, V6, WIFI]


def test_encode_keeps_loopback_only_when_alone():
    assert encode_interfaces([LO]) == "127.0.0.1/8/loopback/lo0"
    assert decode_interfaces(encode_interfaces([LO, ETH])) == [ETH]
    assert encode_interfaces([]) == ""


def test_encode_canonicalises_and_skips_unsendable():
    bad = [
        Interface("en0", "FD00:0:0::2", 64, "ethernet"),  # canonicalised, not dropped
        Interface("en0", "fe80::1", 64, "ethernet"),  # needs a scope id
        Interface("en0", "fe80::1%en0", 64, "ethernet"),
        Interface("en,0", "10.0.0.1", 8, "ethernet"),
        Interface("en0", "10.0.0.1", 33, "ethernet"),
        Interface("en0", "10.0.0.1", 8, "fibre"),
        Interface("en0", "not-an-ip", 8, "ethernet"),
    ]
    assert encode_interfaces(bad) == "fd00::2/64/ethernet/en0"


def test_encode_drops_lowest_ranked_first_when_too_long():
    many = [Interface(f"en{i}", f"fd00:1234:5678:9abc:def0:1234:5678:{i:x}", 64, "wifi") for i in range(10)]
    text = encode_interfaces([*many, TB, ETH])
    assert len(text.encode()) <= TXT_MAX_BYTES
    decoded = decode_interfaces(text)
    assert decoded[:2] == [TB, ETH]
    assert decoded[2:] == many[: len(decoded) - 2]
    assert len(decoded) < 12


@pytest.mark.parametrize(
    "text",
    [
        "",
        ",,,",
        "garbage",
        "1.2.3.4/24/ethernet",  # three fields
        "1.2.3.4/24/ethernet/en0/extra",
        "1.2.3.4/-1/ethernet/en0",
        "1.2.3.4/+8/ethernet/en0",
        "1.2.3.4/ 8/ethernet/en0",
        "1.2.3.4/٣/ethernet/en0",  # a non-ASCII digit
        "1.2.3.4/99/ethernet/en0",
        "1.2.3.4/24/fibre/en0",
        "1.2.3.4/24/ethernet/",
        "1.2.3.4/24/ethernet/e n0",
        "1.2.3.400/24/ethernet/en0",
        "01.2.3.4/24/ethernet/en0",
        "fe80::1%en0/64/ethernet/en0",
    ],
)
def test_decode_skips_malformed(text):
    assert decode_interfaces(text) == []


def test_decode_keeps_valid_among_garbage():
    text = "junk,192.168.1.20/24/ethernet/en0,,1.2.3.4/24/fibre/en9,fd00::2/64/ethernet/en0"
    assert decode_interfaces(text) == [ETH, V6]
    assert decode_interfaces(text.encode()) == [ETH, V6]
    assert decode_interfaces(b"\xff\xfe") == []
    assert decode_interfaces(None) == []


# Interface names as the kernel allows them here: no '/', ',' or whitespace.
names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), blacklist_characters="/,"),
    min_size=1,
    max_size=15,
).filter(lambda s: s.isprintable() and not any(c.isspace() for c in s))


@st.composite
def interfaces(draw) -> Interface:
    ip = draw(st.ip_addresses())
    prefix = draw(st.integers(0, ip.max_prefixlen))
    return Interface(draw(names), str(ip), prefix, draw(st.sampled_from(LINK_KINDS)))


def _sendable(i: Interface) -> bool:
    ip = ipaddress.ip_address(i.address)
    return not (ip.version == 6 and ip.is_link_local)


RANK = {"thunderbolt": 0, "ethernet": 1, "wifi": 2, "other": 3, "loopback": 4}


@settings(max_examples=300, deadline=None)
@given(st.lists(interfaces(), max_size=12))
def test_encode_decode_round_trip(ifaces):
    text = encode_interfaces(ifaces)
    assert len(text.encode()) <= TXT_MAX_BYTES
    decoded = decode_interfaces(text)
    assert encode_interfaces(decoded) == text  # decoding loses nothing that was sent
    sendable = [i for i in ifaces if _sendable(i)]
    if any(i.kind != "loopback" for i in sendable):
        sendable = [i for i in sendable if i.kind != "loopback"]
    assert set(decoded) <= set(sendable)
    assert len(decoded) == len(set(decoded))
    dropped = set(sendable) - set(decoded)
    if dropped:  # never a better-ranked entry than one that was kept
        assert max(RANK[i.kind] for i in decoded) <= min(RANK[i.kind] for i in dropped)
    entry_bytes = [len(f"{i.address}/{i.prefix_len}/{i.kind}/{i.name}".encode()) for i in set(sendable)]
    if sum(entry_bytes) + len(entry_bytes) - 1 <= TXT_MAX_BYTES:  # everything fits: nothing dropped
        assert not dropped


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300), st.lists(st.sampled_from(
    ["1.2.3.4", "/", ",", "24", "ethernet", "en0", "fd00::1", "%", "::", "300", "thunderbolt"]
)).map("".join)))
def test_decode_never_raises(text):
    for iface in decode_interfaces(text):
        assert iface.kind in LINK_KINDS
        assert decode_interfaces(encode_interfaces([iface])) == [iface]
