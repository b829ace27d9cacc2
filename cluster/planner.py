"""Placement: which contiguous layers each node holds. A pure function, tested
without sockets; memory-aware placement grows from here."""

from __future__ import annotations

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
    if any(w <= 0 for w in weights):
        raise PlanError("node weights must be positive")
    if num_layers < len(nodes):
        raise PlanError(f"the model has {num_layers} layers, fewer than the {len(nodes)} nodes; use at most {num_layers} nodes")
    # Each node gets one layer first; the rest is shared in proportion.
    spare = num_layers - len(nodes)
    total = sum(weights)
    exact = [spare * w / total for w in weights]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(nodes)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: spare - sum(counts)]:
        counts[i] += 1
    plan, start = [], 0
    for node, count in zip(nodes, counts):
        plan.append(StagePlan(node, start, start + count + 1))
        start += count + 1
    return plan
