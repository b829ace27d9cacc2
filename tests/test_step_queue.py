"""The worker's step order: per-session FIFO, decode steps before prompt chunks, no starvation."""

from __future__ import annotations

import asyncio

import pytest

from node.step_queue import StepQueue


def drain(q: StepQueue) -> list:
    out = []
    while items := q.take_nowait():
        out.append(items[0] if len(items) == 1 else items)
    return out


def test_one_session_keeps_its_order() -> None:
    q = StepQueue()
    for i, small in enumerate([False, False, True, True]):
        q.put("a", i, small=small)
    assert drain(q) == [0, 1, 2, 3]


def test_decode_steps_overtake_another_sessions_prompt_chunks() -> None:
    q = StepQueue(decode_burst=4)
    for i in range(3):
        q.put("long", f"chunk{i}", small=False)
    q.put("b", "b-decode", small=True)
    q.put("c", "c-decode", small=True)
    assert drain(q) == ["b-decode", "c-decode", "chunk0", "chunk1", "chunk2"]


def test_a_waiting_chunk_runs_after_at_most_decode_burst_decodes() -> None:
    q = StepQueue(decode_burst=2)
    q.put("long", "chunk0", small=False)
    q.put("long", "chunk1", small=False)
    for i in range(6):
        q.put(f"s{i}", f"d{i}", small=True)
    assert drain(q) == ["d0", "d1", "chunk0", "d2", "d3", "chunk1", "d4", "d5"]


def test_a_sessions_decode_never_overtakes_its_own_chunks() -> None:
    q = StepQueue()
    q.put("a", "a-chunk", small=False)
    q.put("a", "a-last", small=True)
    q.put("b", "b-decode", small=True)
    assert drain(q) == ["b-decode", "a-chunk", "a-last"]


def test_drop_removes_only_that_session() -> None:
    q = StepQueue()
    q.put("a", 1, small=False)
    q.put("b", 2, small=True)
    q.put("a", 3, small=True)
    assert q.drop("a") == [1, 3]
    assert q.drop("a") == []
    assert len(q) == 1
    assert drain(q) == [2]


@pytest.mark.parametrize("burst", [1, 3])
def test_equal_arrivals_are_served_oldest_first(burst: int) -> None:
    q = StepQueue(decode_burst=burst)
    for i in range(5):
        q.put(f"s{i}", i, small=True)
    assert drain(q) == [0, 1, 2, 3, 4]


def test_take_waits_for_a_put() -> None:
    async def scenario() -> object:
        q: StepQueue = StepQueue()
        waiter = asyncio.create_task(q.take())
        await asyncio.sleep(0.01)
        assert not waiter.done()
        q.put("a", "x", small=True)
        return await asyncio.wait_for(waiter, 1.0)

    assert asyncio.run(scenario()) == ["x"]


def test_a_group_comes_out_together_in_arrival_order() -> None:
    q = StepQueue()
    q.put("x", "x-alone", small=True)
    for name in "abc":
        q.put(name, f"{name}1", small=True, group=7)
    q.put("d", "d-other-group", small=True, group=8)
    assert drain(q) == ["x-alone", ["a1", "b1", "c1"], "d-other-group"]


def test_a_group_member_behind_its_own_earlier_step_waits_for_it() -> None:
    q = StepQueue()
    q.put("b", "b0", small=True)
    q.put("a", "a1", small=True, group=1)
    q.put("b", "b1", small=True, group=1)
    # b's earlier step goes first; a's group step then runs without b (b1 heads b's queue only later).
    assert drain(q) == ["b0", ["a1", "b1"]]
    q.put("b", "b2", small=True)
    q.put("a", "a2", small=True, group=2)
    q.put("b", "b3", small=True, group=2)
    q.put("c", "c2", small=True, group=2)
    assert drain(q) == ["b2", ["a2", "b3", "c2"]]


def test_dropping_a_group_member_leaves_the_rest_of_the_group() -> None:
    q = StepQueue()
    for name in "abc":
        q.put(name, name, small=True, group=3)
    q.drop("b")
    assert drain(q) == [["a", "c"]]
