"""The draft-length controller (cluster/pipeline/draft_length.py), a pure function of what it has seen:
it drafts the most while drafts are kept and trips of several inputs cost about one, falls to one
token per trip when drafts miss or cost too much, probes now and then, and never probes when even
drafts that were all kept could not pay."""

from __future__ import annotations

import pytest

from cluster.pipeline.draft_length import DraftLength, TripCosts, expected_tokens


def flat_costs(per_extra_input: float, one: float = 0.1, drafting_s: float = 0.0) -> TripCosts:
    costs = TripCosts(drafting_s=drafting_s)
    for inputs in range(1, 6):
        costs.observe(inputs, one * (1 + per_extra_input * (inputs - 1)))
    return costs


def test_expected_tokens_of_a_geometric_run() -> None:
    assert expected_tokens(0.0, 4) == 1
    assert expected_tokens(1.0, 4) == 5
    assert expected_tokens(0.5, 2) == pytest.approx(1.75)


def test_kept_drafts_on_a_memory_bound_pipeline_draft_the_most() -> None:
    length = DraftLength(4, flat_costs(0.02))
    for _ in range(5):
        length.observe(4, 4)
    assert length.acceptance > 0.9 and length.choose() == 4


def test_missed_drafts_fall_to_one_token_per_trip_and_probe_now_and_then() -> None:
    length = DraftLength(4, flat_costs(0.1), probe_every=5)
    for _ in range(8):
        length.observe(2, 0)
    choices = [length.choose() for _ in range(10)]
    assert choices == [0, 0, 0, 0, 1] * 2


def test_acceptance_counts_the_drafts_judged() -> None:
    length = DraftLength(4, flat_costs(0.1), acceptance=0.5, smoothing=1.0)
    length.observe(4, 2)  # two kept, the third missed, the fourth never judged
    assert length.acceptance == pytest.approx(2 / 3)
    length.observe(3, 3)
    assert length.acceptance == 1.0
    length.observe(0, 0)  # a plain trip teaches nothing
    assert length.acceptance == 1.0


def test_a_draft_model_slower_than_the_pipeline_is_never_tried() -> None:
    # Each draft costs twice a whole trip (a 4-bit draft model on a CPU drafting for float32).
    length = DraftLength(4, flat_costs(0.05, one=0.1, drafting_s=0.2), acceptance=1.0, probe_every=2)
    assert [length.choose() for _ in range(6)] == [0] * 6


def test_the_first_trip_is_plain_so_that_drafting_is_judged_against_it() -> None:
    costs = TripCosts()
    length = DraftLength(4, costs, acceptance=1.0)
    assert length.choose() == 0
    costs.observe(1, 0.1)
    assert length.choose() == 4  # nothing else measured yet: drafting is tried, then judged


def test_unmeasured_costs_are_optimistic_and_interpolated() -> None:
    costs = TripCosts()
    assert costs.relative(5) == pytest.approx(1.4)  # nothing measured yet: try drafting
    costs.observe(1, 0.1)
    costs.observe(3, 0.14)
    assert costs.relative(2) == pytest.approx(1.2)
    assert costs.relative(5) == pytest.approx(1.8)  # beyond: the slope so far
