"""Memory-aware placement: contiguous layer ranges in ring order that fit every node's memory.

A pure function of the nodes' budgets and the model's sizes, so it is tested without sockets.
Each node's ideal share of the layers is proportional to weight * (memory left after its fixed
costs); among all splits that fit every budget, the planner picks the one closest to those shares
(dynamic programming over boundaries), so it finds a split whenever one exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from node.model_sizes import ModelSizes


class PlanError(ValueError):
    """A cluster that cannot be planned; the message says why and what to do."""


class PlacementError(PlanError):
    """No valid placement; the message gives the numbers and what to change."""


@dataclass(frozen=True)
class NodeBudget:
    name: str
    usable_bytes: int  # memory this node can give to the model (already min'd with its memory_limit)
    weight: float = 1.0  # inventory override: relative share multiplier


@dataclass(frozen=True)
class Placement:
    node: str
    layer_start: int
    layer_end: int
    weight_bytes: int
    kv_bytes: int
    headroom_bytes: int
    budget_bytes: int  # the node's usable_bytes

    @property
    def num_layers(self) -> int:
        return self.layer_end - self.layer_start

    @property
    def need_bytes(self) -> int:
        return self.weight_bytes + self.kv_bytes + self.headroom_bytes


def format_bytes(n: float) -> str:
    """Decimal units with three significant figures: 512 B, 12.3 kB, 512 MB, 1.52 GB."""
    sign, n = ("-" if n < 0 else ""), abs(n)
    if n < 1000:
        return f"{sign}{n:.0f} B"
    for unit in ("kB", "MB", "GB", "TB", "PB"):
        n /= 1000
        if n < 999.5 or unit == "PB":
            digits = 0 if n >= 99.95 else 1 if n >= 9.995 else 2
            return f"{sign}{n:.{digits}f} {unit}"
    raise AssertionError("unreachable")


def activation_headroom_bytes(config: dict, *, prefill_chunk: int, context_length: int, runtime_bytes: int) -> int:
    """A worker's working memory beyond weights and KV cache: the runtime (python, mlx, grpc;
    measured by the caller) plus the float32 temporaries of one prefill chunk through one layer.
    Per token: ~6 hidden-sized vectors (residual, norm output, q/k/v/o projections) and ~3
    intermediate-sized ones (gate, up, their product; in a MoE layer, those of every expert the token
    is routed to); plus one chunk x context attention score matrix per head. Layers run one after
    another, so one layer's temporaries bound the peak."""
    hidden = int(config["hidden_size"])
    intermediate = int(config.get("intermediate_size") or 4 * hidden)
    routed = int(config.get("num_experts_per_tok") or 0) * int(config.get("moe_intermediate_size") or 0)
    intermediate = max(intermediate, routed)
    heads = int(config["num_attention_heads"])
    chunk = max(0, min(prefill_chunk, context_length))
    per_token = (hidden * 6 + intermediate * 3) * 4
    scores = chunk * context_length * heads * 4
    return runtime_bytes + chunk * per_token + scores


KvPerLayer = int | Sequence[int]  # one figure for every layer, or one per layer (windows, linear attention)


def plan_placement(nodes: Sequence[NodeBudget], sizes: ModelSizes, *,
                   kv_bytes_per_layer: KvPerLayer | Sequence[KvPerLayer],
                   headroom_bytes: int | Sequence[int]) -> list[Placement]:
    """Contiguous layer ranges in node (ring) order, every layer once, every node at least one,
    nobody over budget; shares as close to proportional as the budgets allow. KV bytes per layer
    and headroom may be given per node (a Core ML node keeps fp16 caches at a fixed context), and
    each node's KV per layer as one figure or a list with one per layer (a sliding-window layer
    keeps less than a full one, a linear-attention layer a fixed state)."""
    n, num_layers = len(nodes), sizes.num_layers
    if n == 0:
        raise PlacementError("no nodes to place layers on")
    if num_layers < n:
        raise PlacementError(f"the model has {num_layers} layers, fewer than the {n} nodes; use at most {num_layers} nodes")
    if any(not (math.isfinite(node.weight) and node.weight > 0) for node in nodes):
        raise PlacementError("node weights must be positive (finite) numbers")
    kv_nodes = [kv_bytes_per_layer] * n if isinstance(kv_bytes_per_layer, int) else list(kv_bytes_per_layer)
    if len(kv_nodes) != n:
        raise PlacementError(f"one KV figure per node is needed ({len(kv_nodes)} for {n} nodes)")
    kv = [[k] * num_layers if isinstance(k, int) else list(k) for k in kv_nodes]  # node -> bytes of each layer
    if any(len(k) != num_layers for k in kv):
        raise PlacementError(f"a per-layer KV list must have one figure for each of the {num_layers} layers")
    if any(b < 0 for k in kv for b in k):
        raise PlacementError("kv_bytes_per_layer must not be negative")
    kv_prefix = [[0] for _ in range(n)]
    for i in range(n):
        for b in kv[i]:
            kv_prefix[i].append(kv_prefix[i][-1] + b)
    headroom = [headroom_bytes] * n if isinstance(headroom_bytes, int) else list(headroom_bytes)
    if len(headroom) != n:
        raise PlacementError(f"one headroom figure per node is needed ({len(headroom)} for {n} nodes)")

    prefix = [0]
    for b in sizes.layer_bytes:
        prefix.append(prefix[-1] + b)
    fixed = [sizes.stage_bytes(0, 0, first=i == 0, last=i == n - 1) + headroom[i] for i in range(n)]

    def kv_bytes(i: int, start: int, end: int) -> int:
        return kv_prefix[i][end] - kv_prefix[i][start]

    def need(i: int, start: int, end: int) -> int:
        return fixed[i] + prefix[end] - prefix[start] + kv_bytes(i, start, end)

    ideal = _ideal_counts(num_layers, [node.weight * max(0, node.usable_bytes - f) for node, f in zip(nodes, fixed)],
                          [node.weight for node in nodes])
    # best[i][b]: least squared deviation from the ideal counts with nodes 0..i-1 holding [0, b);
    # back[i][b]: where node i-1's range then starts. Need grows with the range, so each scan stops
    # at the first end that no longer fits.
    inf = math.inf
    best = [[inf] * (num_layers + 1) for _ in range(n + 1)]
    back = [[-1] * (num_layers + 1) for _ in range(n + 1)]
    best[0][0] = 0.0
    for i, node in enumerate(nodes):
        last_end = num_layers - (n - 1 - i)  # leave one layer for each later node
        for start in range(num_layers + 1):
            if best[i][start] == inf:
                continue
            for end in range(start + 1, last_end + 1):
                if need(i, start, end) > node.usable_bytes:
                    break
                cost = best[i][start] + (end - start - ideal[i]) ** 2
                if cost < best[i + 1][end]:
                    best[i + 1][end], back[i + 1][end] = cost, start
    if best[n][num_layers] == inf:
        raise PlacementError(_no_fit_message(nodes, sizes, fixed, headroom, kv))

    bounds = [num_layers]
    for i in range(n, 0, -1):
        bounds.append(back[i][bounds[-1]])
    bounds.reverse()
    return [
        Placement(node.name, s, e,
                  weight_bytes=sizes.stage_bytes(s, e, first=i == 0, last=i == n - 1),
                  kv_bytes=kv_bytes(i, s, e), headroom_bytes=headroom[i], budget_bytes=node.usable_bytes)
        for i, (node, s, e) in enumerate(zip(nodes, bounds, bounds[1:]))
    ]


def _ideal_counts(num_layers: int, shares: list[float], fallback: list[float]) -> list[float]:
    """Real-valued layer counts proportional to the shares, each at least one: nodes whose share
    is under one layer get one and the rest share what is left (repeated until none is under)."""
    if sum(shares) <= 0:  # nobody has memory to spare: nothing will fit, but stay well-defined
        shares = fallback
    counts = [1.0] * len(shares)  # a node with no share (no spare memory) is still owed one layer
    active = [i for i, s in enumerate(shares) if s > 0]
    left = float(num_layers - (len(shares) - len(active)))
    while active:
        total = sum(shares[i] for i in active)
        small = [i for i in active if left * shares[i] / total < 1]
        if not small:
            for i in active:
                counts[i] = left * shares[i] / total
            break
        active = [i for i in active if i not in small]
        left -= len(small)
    return counts


def _no_fit_message(nodes: Sequence[NodeBudget], sizes: ModelSizes, fixed: list[int], headroom: list[int],
                    kv_per_node: list[list[int]]) -> str:
    n, num_layers = len(nodes), sizes.num_layers
    weights = sizes.stage_bytes(0, num_layers, first=True, last=True)
    if sizes.tied and n > 1:
        weights += sizes.embedding_bytes  # the last stage keeps its own copy to project with
    # Nodes differ only with Core ML ones; the largest bounds the need.
    kv = max(sum(layers) for layers in kv_per_node)
    per_layer_figures = {b for layers in kv_per_node for b in layers}
    per_layer = (format_bytes(kv // num_layers) if len(per_layer_figures) == 1
                 else f"{format_bytes(min(per_layer_figures))} to {format_bytes(max(per_layer_figures))}")
    total = weights + kv + sum(headroom)
    available = sum(max(0, node.usable_bytes) for node in nodes)
    described = []
    for i, node in enumerate(nodes):
        held = fixed[i] - headroom[i]
        what = f"{format_bytes(headroom[i])} working memory"
        if held:
            what += f" + {format_bytes(held)} {_held_parts(i == 0, i == n - 1, sizes.tied)}"
        described.append(f"{node.name} {format_bytes(node.usable_bytes)} (fixed: {what})")
    fits_in_total = total <= available
    return (
        f"the model does not fit: it needs {format_bytes(weights)} for weights + {format_bytes(kv)} KV cache "
        f"({per_layer} per layer x {num_layers} layers) + {format_bytes(sum(headroom))} "
        f"working memory = {format_bytes(total)}, but the nodes can give: {', '.join(described)}; "
        f"{format_bytes(available)} in all"
        + (" (enough in total, but no split into contiguous ranges in this node order fits every node)"
           if fits_in_total else "")
        + ". Add nodes, raise memory_limit, lower serve.context_length / serve.max_concurrent, "
        "or use a smaller quantization."
    )


def _held_parts(first: bool, last: bool, tied: bool) -> str:
    parts = (["embedding"] if first or (last and tied) else []) + (["norm", "head"] if last and not tied else
                                                                  ["norm"] if last else [])
    return "/".join(parts) + (" (tied head)" if last and tied else "")
