"""From an inventory, a model and the nodes' facts to a full plan: ring order, layer ranges
by memory, the data-plane address of every hop, KV budgets and the session limit.

Pure: no sockets, no loading; `cluster plan` prints it and `cluster up` carries it out.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from cluster.inventory import Inventory, NodeSpec, format_address
from cluster.planning.addresses import choose_link, ring_order
from cluster.planning.backend_plan import BackendPlan, check_backends, plan_backends
from cluster.planning.kv_budget import session_limit
from cluster.planning.node_facts import NodeFacts
from cluster.planning.placement import (NodeBudget, Placement, PlacementError, activation_headroom_bytes, format_bytes,
                                        plan_placement)
from deploy.text_table import format_rows
from node.kv_profile import kv_profile, session_kv_bytes
from node.model_config import ModelInfo
from node.model_sizes import ModelSizes

DEFAULT_CONTEXT = 4096  # when the model's config does not say


@dataclass(frozen=True)
class PlannedStage:
    spec: NodeSpec
    facts: NodeFacts
    placement: Placement
    budget_note: str        # where the budget came from, for the plan table
    next_address: str       # host:port of the next stage ("" on the last)
    next_link: str          # the kind of link to the next stage
    backend: str = "mlx"    # SliceSpec.backend: "mlx", or Core ML's "coreml-ane:context=N,chunk=M"

    @property
    def node(self) -> str:
        return self.spec.name

    @property
    def layer_start(self) -> int:
        return self.placement.layer_start

    @property
    def layer_end(self) -> int:
        return self.placement.layer_end

    @property
    def num_layers(self) -> int:
        return self.placement.num_layers


@dataclass(frozen=True)
class ClusterPlan:
    stages: list[PlannedStage]
    context_length: int
    max_sessions: int
    context_note: str = ""  # set when a Core ML node capped the context
    kv_note: str = ""       # what the layers' caches keep per session (full, windowed, fixed state)

    def kv_budget_bytes(self, stage: PlannedStage) -> int:
        return stage.placement.kv_bytes


def context_length(inventory: Inventory, model: ModelInfo) -> int:
    own = model.max_position_embeddings or DEFAULT_CONTEXT
    return min(inventory.context_length, own) if inventory.context_length else own


def kv_dtype_bytes(model: ModelInfo) -> int:
    text = model.text_config
    return 2 if (text.get("torch_dtype") or text.get("dtype")) in ("float16", "bfloat16") else 4


def budgets(nodes: list[NodeSpec], facts: dict[str, NodeFacts],
            reserved: dict[str, tuple[int, str]] | None = None) -> list[tuple[NodeBudget, str]]:
    """Usable memory per node: workers on one machine share it evenly, after what `reserved` holds
    there (machine id -> bytes and what for: the coordinator's draft model); memory_limit caps it."""
    per_machine = Counter(facts[n.name].machine_id for n in nodes)
    reserved = reserved or {}
    out = []
    for n in nodes:
        f = facts[n.name]
        held, what = reserved.get(f.machine_id, (0, ""))
        share = max(0, f.usable_memory_bytes - held) // per_machine[f.machine_id]
        note = f"{format_bytes(f.usable_memory_bytes)} usable" + (
            f" - {format_bytes(held)} {what}" if held else "") + (
            f" / {per_machine[f.machine_id]} workers on one machine" if per_machine[f.machine_id] > 1 else "")
        if n.memory_limit is not None and n.memory_limit < share:
            share, note = n.memory_limit, f"memory_limit {format_bytes(n.memory_limit)}"
        out.append((NodeBudget(n.name, share, n.weight), note))
    return out


def _next_hop(sender: NodeFacts, receiver: NodeFacts, receiver_spec: NodeSpec) -> tuple[str, str]:
    link = choose_link(sender.interfaces, receiver.interfaces, pinned_interface=receiver_spec.interface,
                       same_machine=sender.machine_id == receiver.machine_id)
    if link is None:
        if receiver_spec.interface:
            raise PlacementError(f"node {receiver_spec.name} has no address on interface {receiver_spec.interface!r} "
                                 f"(it has: {', '.join(sorted({i.name for i in receiver.interfaces})) or 'none'})")
        # Nothing better is known: the address the coordinator itself uses.
        return receiver.address, "unknown"
    return format_address(link.interface.address, receiver.port), link.kind


def make_plan(inventory: Inventory, model: ModelInfo, sizes: ModelSizes, facts: list[NodeFacts],
              reserved: dict[str, tuple[int, str]] | None = None) -> ClusterPlan:
    """`reserved`: memory of a machine that its workers cannot use (see budgets)."""
    by_name = {f.name: f for f in facts}
    specs = {n.name: n for n in inventory.nodes}
    order = ring_order([(n.name, by_name[n.name].interfaces) for n in inventory.nodes])
    nodes = [specs[name] for name in order]

    check_backends(nodes, by_name, model.text_config)
    backends = plan_backends(nodes, context_length(inventory, model))
    context = backends.context_length
    dtype = kv_dtype_bytes(model)
    headroom = [_headroom(inventory, model, context, backends, spec) for spec in nodes]
    profile = kv_profile(model.config)
    if inventory.kv_budget_mb is None:
        # Reserve what max_concurrent sessions need at the full context, layer by layer, as each
        # layer's own cache keeps it (Core ML caches are fp16 and always hold the full context).
        per_layer = [[layer.bytes(context, 2 if backends.is_ane(spec) else dtype) * inventory.max_concurrent
                      for layer in profile] for spec in nodes]
        fixed_kv = 0
    else:
        per_layer, fixed_kv = [0] * len(nodes), inventory.kv_budget_mb << 20
    node_budgets = budgets(nodes, by_name, reserved)
    placements = plan_placement([b for b, _ in node_budgets], sizes, kv_bytes_per_layer=per_layer,
                                headroom_bytes=[h + fixed_kv for h in headroom])
    if fixed_kv:
        # The fixed KV budget was planned as headroom; show it as KV.
        placements = [Placement(p.node, p.layer_start, p.layer_end, p.weight_bytes, fixed_kv,
                                p.headroom_bytes - fixed_kv, p.budget_bytes) for p in placements]
        sessions = session_limit([session_kv_bytes(profile, p.layer_start, p.layer_end, context, dtype)
                                  for p in placements], kv_budget_bytes=fixed_kv,
                                 configured_max=inventory.max_concurrent)
        if sessions < 1:
            raise PlacementError(
                f"pipeline.kv_budget_mb ({inventory.kv_budget_mb} MB per worker) cannot hold one session of "
                f"{context} tokens; raise pipeline.kv_budget_mb, lower serve.context_length, or add nodes")
    else:
        sessions = inventory.max_concurrent

    stages = []
    for i, (spec, placement) in enumerate(zip(nodes, placements)):
        if i + 1 < len(nodes):
            next_address, next_link = _next_hop(by_name[spec.name], by_name[nodes[i + 1].name], nodes[i + 1])
        else:
            next_address, next_link = "", ""
        stages.append(PlannedStage(spec, by_name[spec.name], placement, node_budgets[i][1], next_address, next_link,
                                   backends.stage_backend(spec)))
    return ClusterPlan(stages, context, sessions, backends.context_note, kv_note(profile, context, dtype))


def kv_note(profile, context: int, dtype_bytes: int) -> str:
    """One session's cache at full context, and the kinds of layer cache behind it."""
    kinds = Counter(layer.kind for layer in profile)
    total = sum(layer.bytes(context, dtype_bytes) for layer in profile)
    return (f"KV cache per session at {context} tokens: {format_bytes(total)} "
            f"({', '.join(f'{n} layer(s) {kind}' for kind, n in kinds.items())})")


def _headroom(inventory: Inventory, model: ModelInfo, context: int, backends: BackendPlan, spec: NodeSpec) -> int:
    """Working memory of one node. A Core ML node runs prompts in its own fixed chunks, but still
    receives and sends pipeline-sized ones (float32 in, float32 out)."""
    runtime = inventory.runtime_overhead_mb << 20
    if not backends.is_ane(spec):
        return activation_headroom_bytes(model.text_config, prefill_chunk=inventory.prefill_chunk, context_length=context,
                                         runtime_bytes=runtime)
    io = 2 * inventory.prefill_chunk * model.hidden_size * 4
    return io + activation_headroom_bytes(model.text_config, prefill_chunk=backends.ane.prefill_chunk,
                                          context_length=context, runtime_bytes=runtime)


def plan_table(plan: ClusterPlan, model_name: str) -> str:
    rows = [("stage", "node", "address", "layers", "weights", "KV cache", "headroom", "need", "budget", "next hop")]
    for i, s in enumerate(plan.stages):
        p = s.placement
        rows.append((str(i), s.node, s.facts.address, f"{p.layer_start}-{p.layer_end - 1} ({p.num_layers})",
                     format_bytes(p.weight_bytes), format_bytes(p.kv_bytes), format_bytes(p.headroom_bytes),
                     format_bytes(p.need_bytes), f"{format_bytes(p.budget_bytes)} ({s.budget_note})",
                     f"{s.next_address} ({s.next_link})" if s.next_address else "coordinator"))
    head = (f"{model_name}: {sum(s.num_layers for s in plan.stages)} layers over {len(plan.stages)} nodes; "
            f"context {plan.context_length} tokens, up to {plan.max_sessions} sessions at once")
    if plan.context_note:
        head += f" (context {plan.context_note})"
    if plan.kv_note:
        head += f"\n{plan.kv_note}"
    ane = [s.node for s in plan.stages if s.backend != "mlx"]
    if ane:
        head += f"; Core ML on the Neural Engine: {', '.join(ane)}"
    return head + "\n" + format_rows(rows)
