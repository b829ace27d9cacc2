"""split_layers: contiguous, complete, proportional layer placement (a pure function)."""

from __future__ import annotations

import math
import random

import pytest

from cluster.planner import PlanError, StagePlan, split_layers


def counts(plan: list[StagePlan]) -> list[int]:
    return [p.num_layers for p in plan]


def constrained_shares(num_layers: int, weights: list[float]) -> list[float]:
    """The exact (real-valued) proportional shares once every node is given at least
    one layer: share_i = max(1, lam * w_i) with lam chosen so the shares sum to
    num_layers. Found by bisection, independently of the planner's own method."""
    lo, hi = 0.0, num_layers / min(weights) + 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if sum(max(1.0, mid * w) for w in weights) < num_layers:
            lo = mid
        else:
            hi = mid
    lam = (lo + hi) / 2
    return [max(1.0, lam * w) for w in weights]


def check_invariants(num_layers: int, nodes: list[str], weights: list[float] | None, plan: list[StagePlan]) -> None:
    assert [p.node for p in plan] == nodes, "one stage per node, in node order"
    assert plan[0].layer_start == 0
    assert plan[-1].layer_end == num_layers
    for a, b in zip(plan, plan[1:]):
        assert a.layer_end == b.layer_start, "ranges are contiguous, without gaps or overlap"
    assert all(p.num_layers >= 1 for p in plan)
    covered = [layer for p in plan for layer in range(p.layer_start, p.layer_end)]
    assert covered == list(range(num_layers)), "every layer exactly once, in order"
    w = weights if weights is not None else [1.0] * len(nodes)
    for got, share in zip(counts(plan), constrained_shares(num_layers, w)):
        assert abs(got - share) < 1 + 1e-9, (num_layers, w, counts(plan))


# --- hand-checked examples -------------------------------------------------------------


def test_30_layers_on_3_nodes_is_10_each() -> None:
    plan = split_layers(30, ["a", "b", "c"])
    assert plan == [StagePlan("a", 0, 10), StagePlan("b", 10, 20), StagePlan("c", 20, 30)]


def test_30_layers_on_4_nodes_gives_the_two_extra_layers_to_the_first_nodes() -> None:
    plan = split_layers(30, ["a", "b", "c", "d"])
    assert [(p.layer_start, p.layer_end) for p in plan] == [(0, 8), (8, 16), (16, 23), (23, 30)]
    assert counts(plan) == [8, 8, 7, 7]


def test_weights_2_1_1_split_40_layers_exactly() -> None:
    plan = split_layers(40, ["big", "s1", "s2"], [2, 1, 1])
    assert [(p.node, p.layer_start, p.layer_end) for p in plan] == [("big", 0, 20), ("s1", 20, 30), ("s2", 30, 40)]


def test_weights_2_1_1_on_30_layers_give_the_big_node_its_15() -> None:
    # Exact shares 15 / 7.5 / 7.5: the odd layer goes to the first of the tied nodes.
    plan = split_layers(30, ["big", "s1", "s2"], [2.0, 1.0, 1.0])
    assert counts(plan) == [15, 8, 7]
    assert [(p.layer_start, p.layer_end) for p in plan] == [(0, 15), (15, 23), (23, 30)]


def test_heavy_node_gets_its_exact_share_when_it_is_an_integer() -> None:
    # 9:1 of 10 layers is exactly 9 / 1; a plan of 8 / 2 would not be proportional.
    assert counts(split_layers(10, ["a", "b"], [9, 1])) == [9, 1]
    assert counts(split_layers(100, ["a", "b", "c", "d"], [97, 1, 1, 1])) == [97, 1, 1, 1]


def test_tiny_weight_still_gets_one_layer() -> None:
    plan = split_layers(30, ["a", "b", "c"], [1000.0, 1e-6, 1.0])
    assert counts(plan) == [28, 1, 1]


def test_as_many_nodes_as_layers_gives_one_layer_each() -> None:
    plan = split_layers(5, list("abcde"), [100, 1, 1, 1, 50])
    assert counts(plan) == [1, 1, 1, 1, 1]
    assert [p.layer_start for p in plan] == [0, 1, 2, 3, 4]


def test_single_node_takes_everything() -> None:
    assert split_layers(30, ["only"]) == [StagePlan("only", 0, 30)]
    assert split_layers(30, ["only"], [0.25]) == [StagePlan("only", 0, 30)]


def test_weights_are_scale_free() -> None:
    # Scaled by powers of two, so the floating-point shares are bit-identical.
    for layers in (7, 30, 31, 64):
        base = split_layers(layers, ["a", "b", "c"], [3, 2, 1])
        assert split_layers(layers, ["a", "b", "c"], [6, 4, 2]) == base
        assert split_layers(layers, ["a", "b", "c"], [0.75, 0.5, 0.25]) == base


def test_stage_plan_num_layers() -> None:
    assert StagePlan("x", 4, 11).num_layers == 7


# --- properties over many seeded random cases -----------------------------------------------


def random_cases(seed: int, n: int):
    rng = random.Random(seed)
    for _ in range(n):
        num_nodes = rng.randint(1, 12)
        num_layers = rng.randint(num_nodes, 130)
        names = [f"n{i}" for i in range(num_nodes)]
        kind = rng.random()
        if kind < 0.25:
            weights = None
        elif kind < 0.5:
            weights = [float(rng.randint(1, 8)) for _ in names]
        elif kind < 0.8:
            weights = [rng.uniform(0.05, 10.0) for _ in names]
        else:  # very uneven: one dominant node, or tiny ones
            weights = [10 ** rng.uniform(-3, 3) for _ in names]
        yield num_layers, names, weights


def test_random_plans_keep_every_invariant() -> None:
    for num_layers, names, weights in random_cases(seed=1234, n=3000):
        plan = split_layers(num_layers, names, weights)
        check_invariants(num_layers, names, weights, plan)


def test_random_plans_are_within_one_layer_of_the_plain_proportional_share() -> None:
    """When every node's plain share num_layers * w / sum(w) is at least one layer, the
    minimum-one rule never binds and each node is within one layer of that share."""
    checked = 0
    for num_layers, names, weights in random_cases(seed=99, n=3000):
        w = weights if weights is not None else [1.0] * len(names)
        shares = [num_layers * x / sum(w) for x in w]
        if min(shares) < 1:
            continue
        got = counts(split_layers(num_layers, names, weights))
        for g, s in zip(got, shares):
            assert math.floor(s) <= g <= math.ceil(s), (num_layers, w, got)
        checked += 1
    assert checked > 1000


def test_even_split_differs_by_at_most_one_and_front_loads_extras() -> None:
    rng = random.Random(7)
    for _ in range(1000):
        n = rng.randint(1, 16)
        layers = rng.randint(n, 200)
        got = counts(split_layers(layers, [str(i) for i in range(n)]))
        assert max(got) - min(got) <= 1
        assert got == sorted(got, reverse=True), "the extra layers go to the first nodes"


def test_heavier_node_never_gets_fewer_layers() -> None:
    rng = random.Random(42)
    for _ in range(1500):
        n = rng.randint(2, 8)
        layers = rng.randint(n, 100)
        weights = [rng.uniform(0.1, 5.0) for _ in range(n)]
        got = counts(split_layers(layers, [str(i) for i in range(n)], weights))
        for i in range(n):
            for j in range(n):
                if weights[i] > weights[j]:
                    assert got[i] >= got[j], (layers, weights, got)


def test_deterministic_and_does_not_mutate_inputs() -> None:
    for num_layers, names, weights in random_cases(seed=5, n=300):
        names_copy, weights_copy = list(names), None if weights is None else list(weights)
        first = split_layers(num_layers, names, weights)
        second = split_layers(num_layers, list(names), None if weights is None else list(weights))
        assert first == second
        assert names == names_copy and weights == weights_copy


def test_accepts_tuples_and_generators() -> None:
    assert split_layers(12, ("a", "b"), (1, 3)) == split_layers(12, ["a", "b"], iter([1, 3]))
    assert counts(split_layers(12, ("a", "b"), (1, 3))) == [3, 9]


# --- errors ---------------------------------------------------------------------------------


def test_no_nodes() -> None:
    with pytest.raises(PlanError, match="no nodes"):
        split_layers(30, [])


def test_more_nodes_than_layers() -> None:
    with pytest.raises(PlanError, match=r"3 layers, fewer than the 4 nodes; use at most 3 nodes"):
        split_layers(3, ["a", "b", "c", "d"])


@pytest.mark.parametrize("bad", [0, -1, -0.5, float("nan"), float("inf")])
def test_non_positive_or_non_finite_weight(bad: float) -> None:
    with pytest.raises(PlanError, match="weights must be positive"):
        split_layers(30, ["a", "b"], [1.0, bad])


@pytest.mark.parametrize("weights", [[1.0], [1.0, 1.0, 1.0], []])
def test_one_weight_per_node(weights: list[float]) -> None:
    with pytest.raises(PlanError, match="one weight per node"):
        split_layers(30, ["a", "b"], weights)


def test_plan_error_is_a_value_error() -> None:
    assert issubclass(PlanError, ValueError)
