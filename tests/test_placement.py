"""plan_placement: memory-aware contiguous layer ranges (a pure function), checked by properties
over random clusters and models and against a brute force over every split on small cases."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.planning.placement import (NodeBudget, Placement, PlacementError, PlanError, activation_headroom_bytes,
                                         format_bytes, plan_placement)
from node.model_sizes import ModelSizes

SMOLLM2_CONFIG = {"hidden_size": 576, "intermediate_size": 1536, "num_attention_heads": 9,
                  "num_key_value_heads": 3, "num_hidden_layers": 30}


def model(layers: list[int] | tuple[int, ...], *, embedding: int = 0, norm: int = 0, head: int = 0) -> ModelSizes:
    return ModelSizes(layer_bytes=tuple(layers), embedding_bytes=embedding, norm_bytes=norm, head_bytes=head,
                      other_bytes=0, tied=head == 0)


def counts(plan: list[Placement]) -> list[int]:
    return [p.num_layers for p in plan]


def stage_need(sizes: ModelSizes, i: int, n: int, start: int, end: int, kv: int, headroom: int) -> int:
    """A node's need, written out from the definition (independently of the planner)."""
    weights = sum(sizes.layer_bytes[start:end])
    if i == 0 or (i == n - 1 and sizes.tied):
        weights += sizes.embedding_bytes
    if i == n - 1:
        weights += sizes.norm_bytes + sizes.head_bytes
    return weights + (end - start) * kv + headroom


def check_valid(plan: list[Placement], nodes: list[NodeBudget], sizes: ModelSizes, kv: int, headroom: list[int]) -> None:
    n = len(nodes)
    assert [p.node for p in plan] == [node.name for node in nodes], "one stage per node, in ring order"
    assert [layer for p in plan for layer in range(p.layer_start, p.layer_end)] == list(range(sizes.num_layers)), \
        "every layer exactly once, contiguous, in node order"
    for i, (p, node) in enumerate(zip(plan, nodes)):
        assert p.num_layers >= 1
        assert p.budget_bytes == node.usable_bytes and p.headroom_bytes == headroom[i]
        assert p.kv_bytes == p.num_layers * kv
        assert p.need_bytes == stage_need(sizes, i, n, p.layer_start, p.layer_end, kv, headroom[i])
        assert p.need_bytes <= node.usable_bytes, f"{node.name} over budget"


def brute_force_feasible(nodes: list[NodeBudget], sizes: ModelSizes, kv: int, headroom: list[int]) -> bool:
    n, num_layers = len(nodes), sizes.num_layers
    for cuts in itertools.combinations(range(1, num_layers), n - 1):
        bounds = (0, *cuts, num_layers)
        if all(stage_need(sizes, i, n, bounds[i], bounds[i + 1], kv, headroom[i]) <= nodes[i].usable_bytes
               for i in range(n)):
            return True
    return False


def constrained_shares(num_layers: int, shares: list[float]) -> list[float]:
    """max(1, lam * share_i) summing to num_layers, lam found by bisection."""
    lo, hi = 0.0, num_layers / min(shares) + 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if sum(max(1.0, mid * s) for s in shares) < num_layers:
            lo = mid
        else:
            hi = mid
    return [max(1.0, (lo + hi) / 2 * s) for s in shares]


# --- strategies --------------------------------------------------------------------------------

@st.composite
def models(draw: st.DrawFn, max_layers: int = 80, max_layer_bytes: int = 1000) -> ModelSizes:
    # Sizes far apart (a few tiny layers among big ones) make the cases where taking as many layers
    # as fit leaves a later, small node only big layers.
    size = st.one_of(st.integers(0, max_layer_bytes), st.sampled_from([1, max_layer_bytes // 10, max_layer_bytes]))
    layers = draw(st.lists(size, min_size=1, max_size=max_layers))
    tied = draw(st.booleans())
    return model(layers, embedding=draw(st.integers(0, 5 * max_layer_bytes)), norm=draw(st.integers(0, 50)),
                 head=0 if tied else draw(st.integers(1, 5 * max_layer_bytes)))


@st.composite
def scenarios(draw: st.DrawFn, max_layers: int = 80, max_nodes: int = 8,
              max_layer_bytes: int = 1000) -> tuple[ModelSizes, list[NodeBudget], int, list[int]]:
    """A model, a cluster of at most as many nodes as layers, KV bytes per layer and per-node
    headroom. Node memory is either loose (5-300 % of an even share of the whole) or tight: the
    need of one random split, give or take a little, so that which split fits hinges on details."""
    sizes = draw(models(max_layers, max_layer_bytes))
    n = draw(st.integers(1, min(max_nodes, sizes.num_layers)))
    kv = draw(st.integers(0, max_layer_bytes // 3))
    headroom = draw(st.lists(st.integers(0, 2 * max_layer_bytes), min_size=n, max_size=n))
    if draw(st.booleans()):
        cuts = sorted(draw(st.sets(st.integers(1, max(1, sizes.num_layers - 1)), min_size=n - 1, max_size=n - 1)))
        bounds = [0, *cuts, sizes.num_layers]
        slack = st.integers(-max_layer_bytes // 5, max_layer_bytes // 5)
        usable = [stage_need(sizes, i, n, bounds[i], bounds[i + 1], kv, headroom[i]) + draw(slack) for i in range(n)]
    else:
        even = (sizes.total_bytes + sizes.embedding_bytes + kv * sizes.num_layers) // n + max(headroom)
        usable = [even * draw(st.integers(5, 300)) // 100 for _ in range(n)]
    weights = st.sampled_from([0.5, 1.0, 1.0, 1.5, 3.0])
    return sizes, [NodeBudget(f"w{i}", u, draw(weights)) for i, u in enumerate(usable)], kv, headroom


# --- properties --------------------------------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(scenario=scenarios())
def test_any_plan_is_valid_and_any_refusal_explains(scenario: tuple[ModelSizes, list[NodeBudget], int, list[int]]) -> None:
    sizes, nodes, kv, headroom = scenario
    try:
        plan = plan_placement(nodes, sizes, kv_bytes_per_layer=kv, headroom_bytes=headroom)
    except PlacementError as exc:
        message = str(exc)
        for node in nodes:
            assert f"{node.name} {format_bytes(node.usable_bytes)}" in message
        weights = sizes.stage_bytes(0, sizes.num_layers, first=True, last=True)
        weights += sizes.embedding_bytes if sizes.tied and len(nodes) > 1 else 0
        total = weights + kv * sizes.num_layers + sum(headroom)
        assert f"= {format_bytes(total)}" in message
        assert "Add nodes" in message
        return
    check_valid(plan, nodes, sizes, kv, headroom)


@settings(max_examples=300, deadline=None)
@given(scenario=scenarios(max_layers=9, max_nodes=4, max_layer_bytes=100))
def test_finds_a_plan_exactly_when_one_exists(scenario: tuple[ModelSizes, list[NodeBudget], int, list[int]]) -> None:
    sizes, nodes, kv, headroom = scenario
    exists = brute_force_feasible(nodes, sizes, kv, headroom)
    try:
        plan = plan_placement(nodes, sizes, kv_bytes_per_layer=kv, headroom_bytes=headroom)
    except PlacementError:
        assert not exists, "a valid split exists but the planner refused"
        return
    assert exists
    check_valid(plan, nodes, sizes, kv, headroom)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), sizes=models(max_layers=30, max_layer_bytes=100))
def test_never_refuses_a_cluster_sized_for_some_split(data: st.DataObject, sizes: ModelSizes) -> None:
    """Budgets = the needs of one random split plus spare memory: a plan must come back. Taking as
    many layers as fit on each node in turn fails this (spare memory lets a node take the small
    layer a later node needed)."""
    n = data.draw(st.integers(1, min(8, sizes.num_layers)))
    kv = data.draw(st.integers(0, 30))
    headroom = data.draw(st.lists(st.integers(0, 200), min_size=n, max_size=n))
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, sizes.num_layers - 1)), min_size=n - 1, max_size=n - 1)))
    bounds = [0, *cuts, sizes.num_layers]
    nodes = [NodeBudget(f"w{i}", stage_need(sizes, i, n, bounds[i], bounds[i + 1], kv, headroom[i])
                        + data.draw(st.integers(0, 100)), data.draw(st.sampled_from([0.5, 1.0, 3.0])))
             for i in range(n)]
    check_valid(plan_placement(nodes, sizes, kv_bytes_per_layer=kv, headroom_bytes=headroom), nodes, sizes, kv, headroom)


@settings(max_examples=150, deadline=None)
@given(num_layers=st.integers(1, 80), layer=st.integers(1, 1000),
       nodes=st.lists(st.tuples(st.integers(10**9, 4 * 10**9), st.sampled_from([0.5, 1.0, 2.0, 3.0])),
                      min_size=1, max_size=8),
       embedding=st.integers(0, 10**8), headroom=st.integers(0, 10**8), tied=st.booleans())
def test_ample_memory_gives_proportional_shares(num_layers: int, layer: int, nodes: list[tuple[int, float]],
                                                embedding: int, headroom: int, tied: bool) -> None:
    """When no budget binds, each node's count is within one layer of its ideal share:
    weight * (usable - fixed costs), every node at least one layer."""
    if len(nodes) > num_layers:
        return
    sizes = model([layer] * num_layers, embedding=embedding, norm=64, head=0 if tied else embedding)
    budgets = [NodeBudget(f"n{i}", usable, weight) for i, (usable, weight) in enumerate(nodes)]
    plan = plan_placement(budgets, sizes, kv_bytes_per_layer=1000, headroom_bytes=headroom)
    n = len(nodes)
    fixed = [stage_need(sizes, i, n, 0, 0, 0, headroom) for i in range(n)]
    ideal = constrained_shares(num_layers, [b.weight * (b.usable_bytes - f) for b, f in zip(budgets, fixed)])
    for p, share in zip(plan, ideal):
        assert abs(p.num_layers - share) < 1, (counts(plan), ideal)


@settings(max_examples=100, deadline=None)
@given(num_layers=st.integers(1, 80), weights=st.lists(st.floats(0.1, 10.0), min_size=1, max_size=8))
def test_weights_alone_decide_when_memory_is_equal_and_there_are_no_fixed_costs(num_layers: int,
                                                                              weights: list[float]) -> None:
    if len(weights) > num_layers:
        return
    nodes = [NodeBudget(f"n{i}", 10**6, w) for i, w in enumerate(weights)]
    plan = plan_placement(nodes, model([10] * num_layers), kv_bytes_per_layer=0, headroom_bytes=0)
    for p, share in zip(plan, constrained_shares(num_layers, weights)):
        assert abs(p.num_layers - share) < 1


# --- examples ----------------------------------------------------------------------------------

def test_three_equal_nodes_split_thirty_layers_evenly() -> None:
    sizes = model([4_500_000] * 30, embedding=28_000_000, norm=1152)
    nodes = [NodeBudget(f"w{i}", 8 * 10**9) for i in range(3)]
    plan = plan_placement(nodes, sizes, kv_bytes_per_layer=2_000_000, headroom_bytes=300_000_000)
    assert [(p.layer_start, p.layer_end) for p in plan] == [(0, 10), (10, 20), (20, 30)]
    assert plan[0].weight_bytes == 10 * 4_500_000 + 28_000_000
    assert plan[2].weight_bytes == 10 * 4_500_000 + 28_000_000 + 1152, "tied: the last stage keeps the embedding"
    assert plan[1].need_bytes == 10 * 4_500_000 + 10 * 2_000_000 + 300_000_000


def test_node_with_half_the_memory_gets_fewer_layers() -> None:
    sizes = model([100] * 30)
    nodes = [NodeBudget("big1", 10_000), NodeBudget("small", 5_000), NodeBudget("big2", 10_000)]
    assert counts(plan_placement(nodes, sizes, kv_bytes_per_layer=0, headroom_bytes=0)) == [12, 6, 12]


def test_a_binding_budget_spreads_the_excess_over_the_others() -> None:
    """tight's weight asks for 12 of 30 layers but its memory holds 5; the other seven are spread."""
    sizes = model([100] * 30)
    nodes = [NodeBudget("tight", 500, weight=4.0), *(NodeBudget(f"w{i}", 1000) for i in range(3))]
    plan = plan_placement(nodes, sizes, kv_bytes_per_layer=0, headroom_bytes=0)
    assert counts(plan)[0] == 5 and sorted(counts(plan)[1:]) == [8, 8, 9]


def test_weight_override_doubles_a_share() -> None:
    nodes = [NodeBudget("a", 10**6, weight=2.0), NodeBudget("b", 10**6)]
    assert counts(plan_placement(nodes, model([1] * 30), kv_bytes_per_layer=0, headroom_bytes=0)) == [20, 10]


def test_small_node_in_the_middle_gets_the_small_layer() -> None:
    """Filling each node greedily would give w0 layers 0-1 and leave w1 only big layers."""
    sizes = model([500, 100, 500, 500])
    nodes = [NodeBudget("w0", 5_000), NodeBudget("w1", 100), NodeBudget("w2", 5_000)]
    assert [(p.layer_start, p.layer_end) for p in plan_placement(nodes, sizes, kv_bytes_per_layer=0,
                                                                  headroom_bytes=0)] == [(0, 1), (1, 2), (2, 4)]


def test_per_node_headroom() -> None:
    nodes = [NodeBudget("a", 1000), NodeBudget("b", 1000)]
    plan = plan_placement(nodes, model([100] * 10), kv_bytes_per_layer=0, headroom_bytes=[600, 0])
    assert counts(plan) == [3, 7]
    assert [p.headroom_bytes for p in plan] == [600, 0]


def test_one_node_too_small_explains_with_numbers() -> None:
    sizes = model([40_000_000] * 30, embedding=300_000_000, norm=1000, head=300_000_000)
    with pytest.raises(PlacementError) as err:
        plan_placement([NodeBudget("w1", 1_200_000_000)], sizes, kv_bytes_per_layer=3_200_000, headroom_bytes=500_000_000)
    message = str(err.value)
    assert "needs 1.80 GB for weights + 96.0 MB KV cache" in message
    assert "= 2.40 GB" in message
    assert "w1 1.20 GB (fixed: 500 MB working memory + 600 MB embedding/norm/head)" in message
    assert re.search(r"Add nodes, raise memory_limit, lower serve.context_length / serve.max_concurrent, "
                     r"or use a smaller quantization", message)
    assert isinstance(err.value, PlanError) and isinstance(err.value, ValueError)


def test_enough_in_total_but_not_in_this_order() -> None:
    sizes = model([100, 1000, 100])
    nodes = [NodeBudget("w0", 1000), NodeBudget("w1", 150), NodeBudget("w2", 1000)]
    with pytest.raises(PlacementError, match="enough in total, but no split"):
        plan_placement(nodes, sizes, kv_bytes_per_layer=0, headroom_bytes=0)


def test_more_nodes_than_layers() -> None:
    with pytest.raises(PlacementError, match="use at most 2 nodes"):
        plan_placement([NodeBudget(f"w{i}", 10**9) for i in range(3)], model([1, 1]), kv_bytes_per_layer=0,
                       headroom_bytes=0)


def test_bad_arguments() -> None:
    two = [NodeBudget("a", 10**6), NodeBudget("b", 10**6)]
    with pytest.raises(PlacementError, match="one headroom figure per node"):
        plan_placement(two, model([1, 1]), kv_bytes_per_layer=0, headroom_bytes=[0])
    with pytest.raises(PlacementError, match="must not be negative"):
        plan_placement(two, model([1, 1]), kv_bytes_per_layer=-1, headroom_bytes=0)
    with pytest.raises(PlacementError, match="positive"):
        plan_placement([NodeBudget("a", 10**6, weight=0.0)], model([1]), kv_bytes_per_layer=0, headroom_bytes=0)
    with pytest.raises(PlacementError, match="no nodes"):
        plan_placement([], model([1]), kv_bytes_per_layer=0, headroom_bytes=0)


def test_activation_headroom_bytes() -> None:
    got = activation_headroom_bytes(SMOLLM2_CONFIG, prefill_chunk=512, context_length=2048, runtime_bytes=400_000_000)
    assert got == 400_000_000 + 512 * (576 * 6 + 1536 * 3) * 4 + 512 * 2048 * 9 * 4
    # a chunk never exceeds the context it is part of
    short = activation_headroom_bytes(SMOLLM2_CONFIG, prefill_chunk=512, context_length=100, runtime_bytes=0)
    assert short == 100 * (576 * 6 + 1536 * 3) * 4 + 100 * 100 * 9 * 4


@pytest.mark.parametrize("n, text", [(0, "0 B"), (999, "999 B"), (1000, "1.00 kB"), (12_345, "12.3 kB"),
                                     (512_000_000, "512 MB"), (1_520_000_000, "1.52 GB"), (999_999_999, "1.00 GB"),
                                     (-2_000_000, "-2.00 MB")])
def test_format_bytes(n: int, text: str) -> None:
    assert format_bytes(n) == text
