"""Data-plane addresses: which of a receiver's addresses its upstream neighbour
dials, and the pipeline order that puts Thunderbolt-linked machines side by side.
Pure functions over node.interfaces.Interface lists (as advertised in TXT records)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

from node.interfaces import Interface

_IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_KIND_RANK = {"thunderbolt": 0, "ethernet": 1, "wifi": 2, "other": 3}
_UNKNOWN_RANK = len(_KIND_RANK)

# Exact search (DP over subsets, O(2^n n^2)) up to this many nodes; greedy beyond.
EXACT_ORDER_LIMIT = 10


@dataclass(frozen=True)
class LinkChoice:
    interface: Interface  # the receiver's interface to dial
    kind: str  # kind of the link used: the worse end of a shared subnet, else the receiver's kind
    shared_subnet: bool  # False: no common subnet, so traffic goes through a router


def kind_rank(kind: str | None) -> int:
    """Lower is better: thunderbolt < ethernet < wifi < other < unknown."""
    return _KIND_RANK.get(kind or "", _UNKNOWN_RANK)


@lru_cache(maxsize=4096)  # ring_order compares every pair of nodes
def _ip(iface: Interface) -> _IPAddress | None:
    try:
        return ipaddress.ip_address(iface.address)
    except ValueError:
        return None


@lru_cache(maxsize=4096)
def _network(iface: Interface) -> _IPNetwork | None:
    try:
        return ipaddress.ip_network(f"{iface.address}/{iface.prefix_len}", strict=False)
    except (ValueError, TypeError):
        return None


def _is_loopback(iface: Interface) -> bool:
    ip = _ip(iface)
    return iface.kind == "loopback" or (ip is not None and ip.is_loopback)


def _dialable(iface: Interface) -> bool:
    # IPv6 link-local needs a scope id the sender cannot know; the rest cannot be dialled at all.
    ip = _ip(iface)
    if ip is None or ip.is_unspecified or ip.is_multicast:
        return False
    return not (ip.version == 6 and ip.is_link_local)


def shares_subnet(a: Interface, b: Interface) -> bool:
    """Same family and one network contains the other's address (networks overlap)."""
    na, nb = _network(a), _network(b)
    return na is not None and nb is not None and na.version == nb.version and na.overlaps(nb)


def _pair_kind(a: Interface, b: Interface) -> str:
    # A link is only as good as its worse end.
    return a.kind if kind_rank(a.kind) >= kind_rank(b.kind) else b.kind


def _best_pair_kind(a_ifaces: Sequence[Interface], b: Interface) -> str | None:
    best: str | None = None
    for a in a_ifaces:
        if _is_loopback(a) or not _dialable(a) or not shares_subnet(a, b):
            continue
        kind = _pair_kind(a, b)
        if best is None or kind_rank(kind) < kind_rank(best):
            best = kind
    return best


def link_kind_between(a_ifaces: Sequence[Interface], b_ifaces: Sequence[Interface]) -> str | None:
    """The best kind of direct link between two machines (a shared subnet, loopback
    excluded), or None when they share no subnet."""
    best: str | None = None
    for b in b_ifaces:
        if _is_loopback(b) or not _dialable(b):
            continue
        kind = _best_pair_kind(a_ifaces, b)
        if kind is not None and (best is None or kind_rank(kind) < kind_rank(best)):
            best = kind
    return best


def _family_then_address(iface: Interface) -> tuple[int, str]:
    return (0 if ":" not in iface.address else 1, iface.address)  # IPv4 first


def choose_link(
    sender: Sequence[Interface],
    receiver: Sequence[Interface],
    *,
    pinned_interface: str | None = None,
    same_machine: bool = False,
) -> LinkChoice | None:
    """The receiver interface the sender should connect to, and why; see choose_address."""
    candidates = [
        r for r in receiver if _dialable(r) and (pinned_interface is None or r.name == pinned_interface)
    ]
    loopbacks = [r for r in candidates if _is_loopback(r)]
    if same_machine and loopbacks:  # fastest path on one machine
        return LinkChoice(min(loopbacks, key=_family_then_address), "loopback", True)
    candidates = [r for r in candidates if not _is_loopback(r)]

    shared: list[tuple[tuple[int, int, int, str], Interface, str]] = []
    for r in candidates:
        kind = _best_pair_kind(sender, r)
        if kind is not None:
            shared.append(((kind_rank(kind), kind_rank(r.kind), *_family_then_address(r)), r, kind))
    if shared:
        _, iface, kind = min(shared, key=lambda t: t[0])
        return LinkChoice(iface, kind, True)

    # No common subnet: only a routable address can work (169.254/16 stays on its own link).
    routable = [r for r in candidates if not _ip(r).is_link_local]  # type: ignore[union-attr]
    if not routable:
        return None
    best = min(routable, key=lambda r: (kind_rank(r.kind), *_family_then_address(r)))
    return LinkChoice(best, best.kind, False)


def choose_address(
    sender: Sequence[Interface],
    receiver: Sequence[Interface],
    *,
    pinned_interface: str | None = None,
    same_machine: bool = False,
) -> Interface | None:
    """The receiver's interface the sender should connect to, or None (nothing usable,
    or no receiver interface named `pinned_interface`: the caller reports it).

    Order: loopback first when both ends are one machine (never otherwise); then
    addresses sharing a subnet with the sender, best link kind first (the worse end of
    the link, then the receiver's kind); then routable non-link-local addresses by kind.
    Ties: IPv4 before IPv6, then the address string."""
    choice = choose_link(sender, receiver, pinned_interface=pinned_interface, same_machine=same_machine)
    return None if choice is None else choice.interface


# --- pipeline order ----------------------------------------------------------


def _thunderbolt_matrix(nodes: Sequence[tuple[str, Sequence[Interface]]]) -> list[list[bool]]:
    n = len(nodes)
    tb = [[False] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            linked = link_kind_between(nodes[i][1], nodes[j][1]) == "thunderbolt"
            tb[i][j] = tb[j][i] = linked
    return tb


def _count(order: Sequence[int], tb: list[list[bool]]) -> int:
    return sum(tb[a][b] for a, b in zip(order, order[1:]))


def count_thunderbolt_hops(nodes: Sequence[tuple[str, Sequence[Interface]]]) -> int:
    """How many neighbouring pairs in this order are joined by Thunderbolt."""
    return _count(range(len(nodes)), _thunderbolt_matrix(nodes))


def _exact_order(tb: list[list[bool]]) -> list[int]:
    """Lexicographically smallest index order among those with the most Thunderbolt hops."""
    n = len(tb)
    full = (1 << n) - 1
    # g[mask][v]: most hops on a path that starts at v and then visits exactly the nodes in mask.
    g = [[0] * n for _ in range(1 << n)]
    for mask in range(1, 1 << n):
        members = [u for u in range(n) if mask >> u & 1]
        row = g[mask]
        for v in range(n):
            if not mask >> v & 1:
                row[v] = max(tb[v][u] + g[mask ^ (1 << u)][u] for u in members)
    best = max(g[full ^ (1 << v)][v] for v in range(n))
    v = next(v for v in range(n) if g[full ^ (1 << v)][v] == best)
    order, rest = [v], full ^ (1 << v)
    while rest:
        v = next(u for u in range(n) if rest >> u & 1 and tb[v][u] + g[rest ^ (1 << u)][u] == g[rest][v])
        order.append(v)
        rest ^= 1 << v
    return order


def _greedy_order(tb: list[list[bool]]) -> list[int]:
    """Paths built from Thunderbolt edges, the given order's own edges first (so the
    result never has fewer hops than the given order), then concatenated."""
    n = len(tb)
    parent = list(range(n))
    nbrs: list[list[int]] = [[] for _ in range(n)]

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    edges = [(i, i + 1) for i in range(n - 1)] + [(i, j) for i in range(n) for j in range(i + 2, n)]
    for i, j in edges:
        if tb[i][j] and len(nbrs[i]) < 2 and len(nbrs[j]) < 2 and find(i) != find(j):
            parent[find(i)] = find(j)
            nbrs[i].append(j)
            nbrs[j].append(i)

    order: list[int] = []
    seen = [False] * n
    for i in range(n):  # each path once, in order of its smallest member, from its smaller end
        if seen[i]:
            continue
        ends = [v for v in range(n) if find(v) == find(i) and len(nbrs[v]) < 2]
        prev, cur = -1, min(ends)
        while cur != -1:
            seen[cur] = True
            order.append(cur)
            prev, cur = cur, next((w for w in nbrs[cur] if w != prev), -1)
    return order


def ring_order(nodes: Sequence[tuple[str, Sequence[Interface]]]) -> list[str]:
    """Node names in pipeline order (stage 0 first), putting Thunderbolt-linked
    machines next to each other as often as possible. Among equally good orders the
    given (inventory) order is kept as far as possible, so a good order is unchanged."""
    n = len(nodes)
    tb = _thunderbolt_matrix(nodes)
    if not any(any(row) for row in tb):
        order = list(range(n))
    elif n <= EXACT_ORDER_LIMIT:
        order = _exact_order(tb)
    else:
        order = _greedy_order(tb)
        if _count(order, tb) <= _count(range(n), tb):
            order = list(range(n))
    return [nodes[i][0] for i in order]
