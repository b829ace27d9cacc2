"""Which backend each stage runs, decided at plan time from the inventory and the nodes' facts.

`backend: ane` runs a node's layers through Core ML on the Neural Engine. That needs the node to
report the "coreml-ane" backend (macOS 15+ on Apple silicon with coremltools), and it fixes shapes
at conversion: a maximum context, KV caches always that long and always fp16, prompts in chunks of
a fixed size. The planner refuses a node that cannot run it, caps the context where a Core ML node
needs it, and plans those nodes' KV and working memory with the Core ML figures.
"""

from __future__ import annotations

from dataclasses import dataclass

from cluster.inventory import NodeSpec
from cluster.planning.node_facts import NodeFacts
from cluster.planning.placement import PlacementError
from node.coreml.arch import ArchError, read_arch
from node.coreml.settings import BACKEND_PREFIX, DEFAULT_PREFILL_CHUNK, INVENTORY_NAME, MAX_CONTEXT, AneSettings

MLX_BACKEND = "mlx"


@dataclass(frozen=True)
class BackendPlan:
    context_length: int
    context_note: str                 # why the context is what it is, when a Core ML node capped it
    ane: AneSettings | None           # the conversion settings of every Core ML node (None: no such node)

    def stage_backend(self, spec: NodeSpec) -> str:
        """SliceSpec.backend for the node."""
        return self.ane.to_backend() if self.is_ane(spec) else MLX_BACKEND

    @staticmethod
    def is_ane(spec: NodeSpec) -> bool:
        return spec.backend == INVENTORY_NAME


def check_backends(nodes: list[NodeSpec], facts: dict[str, NodeFacts], model_config: dict | None = None) -> None:
    """Every node that asks for the Neural Engine but does not offer it, in one error; and the model
    itself when a node asks for it and Core ML has no builder for the model's family."""
    refused = []
    if model_config is not None and any(BackendPlan.is_ane(spec) for spec in nodes):
        try:
            read_arch(model_config)
        except ArchError as exc:
            names = ", ".join(spec.name for spec in nodes if BackendPlan.is_ane(spec))
            refused.append(f"backend: ane (on {names}) cannot run this model through Core ML: {exc}. "
                           "Give those nodes backend: auto, gpu or cpu")
    for spec in nodes:
        offered = facts[spec.name].backends
        if BackendPlan.is_ane(spec) and BACKEND_PREFIX not in offered:
            refused.append(f"node {spec.name} has backend: ane, but it reports no Neural Engine that Core ML can use "
                           f"(its backends: {', '.join(offered) or 'none reported'}); the Neural Engine needs macOS 15 "
                           "or newer on Apple silicon with coremltools installed. Give it backend: auto, gpu or cpu")
    if refused:
        raise PlacementError("; ".join(refused))


def plan_backends(nodes: list[NodeSpec], context_length: int) -> BackendPlan:
    if not any(BackendPlan.is_ane(n) for n in nodes):
        return BackendPlan(context_length, "", None)
    note = ""
    if context_length > MAX_CONTEXT:
        names = ", ".join(n.name for n in nodes if BackendPlan.is_ane(n))
        note = (f"capped from {context_length} to {MAX_CONTEXT}: Core ML fixes the context at conversion, "
                f"and {names} run(s) on the Neural Engine")
        context_length = MAX_CONTEXT
    settings = AneSettings(context_length=context_length, prefill_chunk=min(DEFAULT_PREFILL_CHUNK, context_length))
    return BackendPlan(context_length, note, settings)
