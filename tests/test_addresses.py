"""cluster.planning.addresses: which receiver address a sender dials, and the Thunderbolt-aware pipeline order."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.planning.addresses import (EXACT_ORDER_LIMIT, LinkChoice, choose_address, choose_link,
                                         count_thunderbolt_hops, link_kind_between, ring_order, shares_subnet)
from node.interfaces import Interface


def tb(addr: str, name: str = "bridge0", prefix: int = 16) -> Interface:
    return Interface(name, addr, prefix, "thunderbolt")


def eth(addr: str, name: str = "en0", prefix: int = 24) -> Interface:
    return Interface(name, addr, prefix, "ethernet")


def wifi(addr: str, name: str = "en1", prefix: int = 24) -> Interface:
    return Interface(name, addr, prefix, "wifi")


LO = Interface("lo0", "127.0.0.1", 8, "loopback")
LO6 = Interface("lo0", "::1", 128, "loopback")

# Two Mac minis: Thunderbolt Bridge (self-assigned), Ethernet on the LAN, Wi-Fi on a guest network.
A = [LO, tb("169.254.10.1"), eth("192.168.1.10"), wifi("192.168.50.10")]
B = [LO, tb("169.254.20.2"), eth("192.168.1.20"), wifi("192.168.50.20")]


def test_thunderbolt_over_ethernet_when_both_shared():
    assert choose_address(A, B) == tb("169.254.20.2")
    assert choose_link(A, B) == LinkChoice(tb("169.254.20.2"), "thunderbolt", True)


def test_shared_subnet_beats_better_kind_elsewhere():
    sender = [eth("192.168.1.10")]
    receiver = [tb("10.9.0.2", prefix=24), wifi("192.168.1.30")]
    assert choose_link(sender, receiver) == LinkChoice(wifi("192.168.1.30"), "wifi", True)


def test_ethernet_over_wifi_on_the_same_lan():
    sender = [eth("192.168.1.10"), wifi("192.168.1.11")]
    receiver = [wifi("192.168.1.31"), eth("192.168.1.30")]
    assert choose_address(sender, receiver) == eth("192.168.1.30")


def test_link_is_as_good_as_its_worse_end():
    # The receiver's Thunderbolt address is only reachable from the sender's Wi-Fi;
    # its Ethernet address is reachable over the sender's Ethernet.
    sender = [wifi("10.0.0.5"), eth("192.168.1.10")]
    receiver = [tb("10.0.0.6"), eth("192.168.1.20")]
    assert choose_link(sender, receiver) == LinkChoice(eth("192.168.1.20"), "ethernet", True)


def test_pin_respected():
    assert choose_address(A, B, pinned_interface="en0") == eth("192.168.1.20")
    assert choose_address(A, B, pinned_interface="en1") == wifi("192.168.50.20")


def test_pin_to_missing_interface_is_none():
    assert choose_address(A, B, pinned_interface="en7") is None
    assert choose_link(A, B, pinned_interface="en7") is None


def test_loopback_only_on_the_same_machine():
    assert choose_link(A, A, same_machine=True) == LinkChoice(LO, "loopback", True)
    assert choose_address(A, [LO6, LO], same_machine=True) == LO  # IPv4 first
    assert choose_address(A, [LO]) is None
    assert choose_address([LO], [LO]) is None
    assert choose_address(A, B, pinned_interface="lo0") is None
    assert choose_address(A, B, pinned_interface="lo0", same_machine=True) == LO


def test_same_machine_without_advertised_loopback_uses_a_shared_address():
    ifaces = [tb("169.254.10.1"), eth("192.168.1.10")]
    assert choose_address(ifaces, ifaces, same_machine=True) == tb("169.254.10.1")


def test_fallback_to_routable_address():
    sender = [eth("10.1.0.5")]
    receiver = [LO, tb("169.254.20.2"), wifi("192.168.50.20"), eth("192.168.1.20")]
    assert choose_link(sender, receiver) == LinkChoice(eth("192.168.1.20"), "ethernet", False)


def test_link_local_only_works_on_a_shared_link():
    assert choose_address([eth("10.1.0.5")], [tb("169.254.20.2")]) is None
    assert choose_address([tb("169.254.1.1")], [tb("169.254.20.2")]) == tb("169.254.20.2")


def test_ipv6():
    sender = [eth("fd00::1", prefix=64)]
    receiver = [eth("192.168.1.20"), eth("fd00::2", prefix=64), eth("fd01::2", prefix=64)]
    assert choose_link(sender, receiver) == LinkChoice(eth("fd00::2", prefix=64), "ethernet", True)
    # No shared subnet: IPv4 before IPv6 at equal kind.
    assert choose_link([eth("10.0.0.1")], receiver) == LinkChoice(eth("192.168.1.20"), "ethernet", False)
    # IPv4 before IPv6 when both are shared.
    both = [eth("192.168.1.10"), eth("fd00::1", prefix=64)]
    assert choose_address(both, receiver) == eth("192.168.1.20")
    # Link-local IPv6 is never dialled: it needs a scope id.
    assert choose_address(sender, [eth("fe80::2", prefix=64)]) is None


def test_deterministic_tie_break_by_address():
    receiver = [eth("192.168.1.30", name="en3"), eth("192.168.1.21", name="en2")]
    assert choose_address([eth("192.168.1.10")], receiver) == eth("192.168.1.21", name="en2")
    assert choose_address([eth("192.168.1.10")], receiver[::-1]) == eth("192.168.1.21", name="en2")


def test_nothing_usable():
    assert choose_address(A, []) is None
    assert choose_address([], [Interface("x", "not-an-ip", 8, "ethernet"), eth("0.0.0.0")]) is None
    assert choose_address([], [eth("192.168.1.20")]) == eth("192.168.1.20")  # routable fallback


def test_shares_subnet():
    assert shares_subnet(eth("192.168.1.5", prefix=16), eth("192.168.7.9"))  # overlapping networks
    assert not shares_subnet(eth("192.168.1.5"), eth("192.168.2.5"))
    assert not shares_subnet(eth("192.168.1.5", prefix=0), eth("::1", prefix=0))  # families differ


def test_link_kind_between():
    assert link_kind_between(A, B) == "thunderbolt"
    assert link_kind_between([eth("192.168.1.10")], B) == "ethernet"
    assert link_kind_between([LO, wifi("10.0.0.1")], [LO, eth("192.168.1.20")]) is None  # loopback is no link
    assert link_kind_between([tb("10.0.0.1")], [eth("10.0.0.2")]) == "ethernet"


# --- ring order ------------------------------------------------------------


def node(name: str, *tb_addrs: str) -> tuple[str, list[Interface]]:
    """A machine on the shared LAN plus one /30 Thunderbolt link per address."""
    lan = eth(f"192.168.1.{ord(name[0]) % 200 + 10}")
    return name, [LO, lan] + [tb(a, name=f"en{k + 2}", prefix=30) for k, a in enumerate(tb_addrs)]


def test_ring_order_joins_thunderbolt_neighbours():
    # Cables: a-c (10.0.0.0/30) and c-b (10.0.0.4/30); d only on the LAN.
    nodes = [node("a", "10.0.0.1"), node("b", "10.0.0.6"), node("c", "10.0.0.2", "10.0.0.5"), node("d")]
    assert count_thunderbolt_hops(nodes) == 1
    assert ring_order(nodes) == ["a", "c", "b", "d"]


def test_ring_order_keeps_a_good_order():
    nodes = [node("a", "10.0.0.1"), node("c", "10.0.0.2", "10.0.0.5"), node("b", "10.0.0.6"), node("d")]
    assert ring_order(nodes) == ["a", "c", "b", "d"]
    plain = [node("x"), node("y"), node("z")]
    assert ring_order(plain) == ["x", "y", "z"]
    assert ring_order([]) == []
    assert ring_order([node("solo")]) == ["solo"]


def test_ring_order_with_bridged_macs():
    # Self-assigned Thunderbolt Bridge addresses all share 169.254/16: any order is all-Thunderbolt.
    nodes = [(n, [tb(f"169.254.{i}.1"), eth(f"192.168.1.{i + 10}")]) for i, n in enumerate("pqrs")]
    assert ring_order(nodes) == ["p", "q", "r", "s"]


def _tb_matrix_nodes(n: int, edges: set[tuple[int, int]]) -> list[tuple[str, list[Interface]]]:
    """n nodes; each edge (i, j) gets its own /30 Thunderbolt subnet."""
    ifaces: list[list[Interface]] = [[eth(f"192.168.1.{i + 10}")] for i in range(n)]
    for k, (i, j) in enumerate(sorted(edges)):
        base = 4 * k
        ifaces[i].append(tb(f"10.{base // 256}.{base % 256}.1", name=f"tb{k}", prefix=30))
        ifaces[j].append(tb(f"10.{base // 256}.{base % 256}.2", name=f"tb{k}", prefix=30))
    return [(f"n{i}", ifaces[i]) for i in range(n)]


@st.composite
def tb_graphs(draw, max_nodes: int):
    n = draw(st.integers(0, max_nodes))
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    edges = draw(st.sets(st.sampled_from(pairs), max_size=len(pairs))) if pairs else set()
    return n, edges


def _hops(order: list[str], nodes) -> int:
    by_name = dict(nodes)
    return count_thunderbolt_hops([(n, by_name[n]) for n in order])


@settings(max_examples=150, deadline=None)
@given(tb_graphs(max_nodes=6))
def test_ring_order_exact_matches_brute_force(graph):
    n, edges = graph
    nodes = _tb_matrix_nodes(n, edges)
    order = [int(name[1:]) for name in ring_order(nodes)]

    def hops(p: tuple[int, ...]) -> int:  # straight from the cable list, independent of link detection
        return sum(tuple(sorted(pair)) in edges for pair in zip(p, p[1:]))

    perms = list(itertools.permutations(range(n)))
    best = max(map(hops, perms))
    # Lexicographically smallest best permutation: the given order kept as far as possible.
    assert order == list(next(p for p in perms if hops(p) == best))


@settings(max_examples=60, deadline=None)
@given(tb_graphs(max_nodes=EXACT_ORDER_LIMIT + 4))
def test_ring_order_is_a_permutation_never_worse(graph):
    n, edges = graph
    nodes = _tb_matrix_nodes(n, edges)
    order = ring_order(nodes)
    assert sorted(order) == sorted(name for name, _ in nodes)
    assert _hops(order, nodes) >= count_thunderbolt_hops(nodes)


@pytest.mark.parametrize("n", [EXACT_ORDER_LIMIT, 40])
def test_ring_order_is_quick_on_a_chain(n):
    import time

    # A daisy chain given in shuffled order: the best order follows the cables.
    chain = [7 * i % n for i in range(n)]  # 7 is coprime with both sizes
    edges = {tuple(sorted((chain[i], chain[i + 1]))) for i in range(n - 1)}
    nodes = _tb_matrix_nodes(n, edges)
    start = time.perf_counter()
    order = ring_order(nodes)
    assert time.perf_counter() - start < 2.0
    assert _hops(order, nodes) == n - 1
