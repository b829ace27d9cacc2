"""The coordinator's choice of which decode steps travel together (cluster/pipeline/decode_lanes.py),
as a pure state machine: no sockets, the time passed in."""

from __future__ import annotations

import pytest

from cluster.pipeline.decode_lanes import DecodeLanes


def round_trip(lanes: DecodeLanes, group: list[str], now: float) -> list[list[str]]:
    """The group's results come back and every member asks again at once."""
    for s in group:
        lanes.returned(s)
    for s in group:
        lanes.ready(s, now)
    return lanes.dispatch(now)


def test_a_lone_session_is_sent_at_once_every_time() -> None:
    lanes = DecodeLanes(max_lanes=3, max_batch=16)
    lanes.ready("a", 0.0)
    assert lanes.dispatch(0.0) == [["a"]]
    for t in range(1, 5):
        assert round_trip(lanes, ["a"], float(t)) == [["a"]]
    assert lanes.deadline() is None


def test_sessions_arriving_together_are_spread_over_one_lane_per_stage() -> None:
    lanes = DecodeLanes(max_lanes=2, max_batch=16)
    for i, s in enumerate("abcdefgh"):
        lanes.ready(s, i * 1e-6)
    assert lanes.dispatch(1.0) == [list("abcd"), list("efgh")]
    assert lanes.dispatch(1.0) == []  # both in flight: nothing more to send


def test_newcomers_open_free_lanes_then_join_a_lane_as_it_comes_back() -> None:
    lanes = DecodeLanes(max_lanes=2, max_batch=16)
    lanes.ready("a", 0.0)
    assert lanes.dispatch(0.0) == [["a"]]
    lanes.ready("b", 0.1)
    assert lanes.dispatch(0.1) == [["b"]]
    for s in "cd":
        lanes.ready(s, 0.2)
    assert lanes.dispatch(0.2) == []       # every lane is in flight: c and d wait one trip at most
    assert lanes.waiting() == ["c", "d"]
    assert round_trip(lanes, ["a"], 0.3) == [["a", "c"]]  # 4 sessions over 2 lanes: 2 each
    assert round_trip(lanes, ["b"], 0.4) == [["b", "d"]]
    assert lanes.lanes() == [["a", "c"], ["b", "d"]]


def test_a_lane_is_never_larger_than_max_batch() -> None:
    lanes = DecodeLanes(max_lanes=1, max_batch=3)
    for s in "abcde":
        lanes.ready(s, 0.0)
    assert lanes.dispatch(0.0) == [["a", "b", "c"]]
    assert round_trip(lanes, ["a", "b", "c"], 1.0) == [["a", "b", "c"]]
    assert lanes.waiting() == ["d", "e"]
    lanes.leave("b")
    lanes.returned("a"), lanes.returned("c")
    lanes.ready("a", 2.0), lanes.ready("c", 2.0)
    assert lanes.dispatch(2.0) == [["a", "c", "d"]]


def test_a_lane_waits_for_a_late_member_only_for_the_grace() -> None:
    lanes = DecodeLanes(max_lanes=1, max_batch=8, grace_s=0.01)
    for s in "abc":
        lanes.ready(s, 0.0)
    assert lanes.dispatch(0.0) == [["a", "b", "c"]]
    for s in "abc":
        lanes.returned(s)
    lanes.ready("a", 1.0), lanes.ready("b", 1.0)
    assert lanes.dispatch(1.0) == []              # c has not asked yet
    assert lanes.deadline() == pytest.approx(1.01)
    assert lanes.dispatch(1.011) == [["a", "b"]]  # the grace is over: sent without c
    lanes.ready("c", 1.02)                         # c comes late: a newcomer again, the lane is away
    assert lanes.dispatch(1.02) == []
    assert round_trip(lanes, ["a", "b"], 2.0) == [["a", "b", "c"]]


def test_a_late_member_that_asks_within_the_grace_goes_with_its_lane() -> None:
    lanes = DecodeLanes(max_lanes=1, max_batch=8, grace_s=0.01)
    for s in "ab":
        lanes.ready(s, 0.0)
    lanes.dispatch(0.0)
    lanes.returned("a"), lanes.returned("b")
    lanes.ready("a", 1.0)
    assert lanes.dispatch(1.0) == []
    lanes.ready("b", 1.005)
    assert lanes.dispatch(1.005) == [["a", "b"]]


def test_a_session_that_leaves_frees_its_place_and_an_empty_lane_its_slot() -> None:
    lanes = DecodeLanes(max_lanes=1, max_batch=8)
    lanes.ready("a", 0.0)
    assert lanes.dispatch(0.0) == [["a"]]
    lanes.ready("b", 0.1)
    assert lanes.dispatch(0.1) == []  # the one lane is in flight
    lanes.leave("a")                  # a finished (or failed) while in flight
    assert lanes.lanes() == []
    assert lanes.dispatch(0.2) == [["b"]]


def test_a_waiting_session_that_leaves_is_never_sent() -> None:
    lanes = DecodeLanes(max_lanes=1, max_batch=8)
    lanes.ready("a", 0.0)
    lanes.dispatch(0.0)
    lanes.ready("b", 0.0)
    lanes.leave("b")
    assert round_trip(lanes, ["a"], 1.0) == [["a"]]


def test_a_lane_keeps_its_row_order_so_workers_keep_their_merged_caches() -> None:
    lanes = DecodeLanes(max_lanes=2, max_batch=8)
    for s in "abcd":
        lanes.ready(s, 0.0)
    first = lanes.dispatch(0.0)
    for s in reversed("abcd"):  # results come back in any order
        lanes.returned(s)
    for s in "dcba":
        lanes.ready(s, 1.0)
    assert lanes.dispatch(1.0) == first


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        DecodeLanes(max_lanes=0, max_batch=4)
    with pytest.raises(ValueError):
        DecodeLanes(max_lanes=2, max_batch=0)
