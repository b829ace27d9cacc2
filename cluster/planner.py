"""Placement: which contiguous layers each node holds. A pure function, tested
without sockets; memory-aware placement grows from here."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence


class PlanError(ValueError):
    pass


@dataclass(frozen=True)
class StagePlan:
    node: str
    layer_start: int
    layer_end: int

    @property
    def num_layers(self) -> int:
        return self.layer_end - self.layer_start


def split_layers(num_layers: int, nodes: Sequence[str], weights: Sequence[float] | None = None) -> list[StagePlan]:
    """Contiguous ranges in node order, sized in proportion to the weights (even by
    default), every node at least one layer, every layer exactly once. Rounding uses
    largest remainders so the result is as close to proportional as integers allow."""
    if not nodes:
        raise PlanError("no nodes to place layers on")
    weights = list(weights) if weights is not None else [1.0] * len(nodes)
    if len(weights) != len(nodes):
        raise PlanError("one weight per node is needed")
    if any(not (math.isfinite(w) and w > 0) for w in weights):
        raise PlanError("node weights must be positive (finite) numbers")
    if num_layers < len(nodes):
        raise PlanError(f"the model has {num_layers} layers, fewer than the {len(nodes)} nodes; use at most {num_layers} nodes")
    # Shares in proportion to the weights; a node whose share is under one layer is
    # raised to one, and the others share what is left (repeated until none is under one).
    counts = [0] * len(nodes)
    active, left = list(range(len(nodes))), num_layers
    while True:
        total = sum(weights[i] for i in active)
        small = [i for i in active if left * weights[i] / total < 1]
        if not small:
            break
        for i in small:
            counts[i] = 1
        active = [i for i in active if i not in small]
        left -= len(small)
    exact = {i: left * weights[i] / total for i in active}
    for i in active:
        counts[i] = int(exact[i])
    by_remainder = sorted(active, key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: num_layers - sum(counts)]:
        counts[i] += 1
    plan, start = [], 0
    for node, count in zip(nodes, counts):
        plan.append(StagePlan(node, start, start + count))
        start += count
    return plan
