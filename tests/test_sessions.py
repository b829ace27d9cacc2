"""Per-session KV caches on a worker: creation, position checks, limits, ending, idle expiry,
with real mlx-lm caches."""

from __future__ import annotations

import time

import mlx.core as mx
import pytest
from mlx_lm.models.cache import KVCache

from node.sessions import Session, SessionError, SessionStore

HEADS, DIM = 2, 8


def kv(tokens: int, value: float = 1.0) -> mx.array:
    return mx.full((1, HEADS, tokens, DIM), value, dtype=mx.float32)


def fill(session: Session, tokens: int) -> None:
    """What a stage does for one step: append to every layer's cache, then advance."""
    for layer in session.cache:
        layer.update_and_fetch(kv(tokens), kv(tokens, 2.0))
    session.position += tokens
    session.steps += 1


def store(**kw) -> SessionStore:
    return SessionStore(lambda: [KVCache(), KVCache()], **kw)


def test_new_session_is_created_at_position_zero() -> None:
    s = store()
    session = s.for_step("a", 0)
    assert session.session_id == "a" and session.position == 0 and session.steps == 0
    assert len(session.cache) == 2 and all(isinstance(c, KVCache) for c in session.cache)
    assert session.key is None
    assert len(s) == 1


def test_same_session_is_returned_on_later_steps() -> None:
    s = store()
    first = s.for_step("a", 0)
    fill(first, 5)
    again = s.for_step("a", 5)
    assert again is first
    assert again.cache[0].offset == 5
    assert len(s) == 1


def test_each_session_gets_its_own_caches() -> None:
    made: list[list] = []

    def make() -> list:
        made.append([KVCache()])
        return made[-1]

    s = SessionStore(make)
    a, b = s.for_step("a", 0), s.for_step("b", 0)
    assert len(made) == 2
    assert a.cache is made[0] and b.cache is made[1] and a.cache[0] is not b.cache[0]


@pytest.mark.parametrize("position", [1, 7, 512])
def test_unknown_session_after_position_zero_is_refused(position: int) -> None:
    s = store()
    with pytest.raises(SessionError, match=rf"unknown session 'ghost' \(a new session starts at position 0, got {position}\)"):
        s.for_step("ghost", position)
    assert len(s) == 0, "a refused step creates nothing"


@pytest.mark.parametrize("position", [0, 3, 5])
def test_position_mismatch_is_refused(position: int) -> None:
    s = store()
    fill(s.for_step("a", 0), 4)
    with pytest.raises(SessionError, match=rf"session 'a': step starts at position {position} but the cache holds 4 tokens"):
        s.for_step("a", position)
    assert s.for_step("a", 4).position == 4, "the session is unharmed by a refused step"


def test_max_sessions() -> None:
    s = store(max_sessions=2)
    s.for_step("a", 0)
    s.for_step("b", 0)
    with pytest.raises(SessionError, match="worker is full: 2 sessions open"):
        s.for_step("c", 0)
    assert len(s) == 2
    # Existing sessions still step while the worker is full.
    assert s.for_step("a", 0).session_id == "a"
    s.end(["a"])
    assert s.for_step("c", 0).session_id == "c"


def test_end_counts_only_sessions_that_existed() -> None:
    s = store()
    for sid in "abc":
        s.for_step(sid, 0)
    assert s.end(["a", "zzz", "c"]) == 2
    assert len(s) == 1
    assert s.end(["a"]) == 0
    assert s.end([]) == 0
    # An ended session stays ended: a step still on its way through the ring must not open it
    # again, at position 0 or later.
    with pytest.raises(SessionError, match="session 'a' has ended"):
        s.for_step("a", 3)
    with pytest.raises(SessionError, match="session 'a' has ended"):
        s.for_step("a", 0)
    assert len(s) == 1


def test_ended_ids_are_remembered_up_to_a_bound() -> None:
    from node.sessions import ENDED_MEMORY

    s = store()
    s.end([f"old{i}" for i in range(ENDED_MEMORY + 10)])
    assert s.for_step("old0", 0).position == 0, "the oldest ended ids are forgotten"
    with pytest.raises(SessionError, match="has ended"):
        s.for_step(f"old{ENDED_MEMORY + 9}", 0)


def test_end_idle_with_an_explicit_now() -> None:
    s = store(idle_timeout_s=10.0)
    old, fresh = s.for_step("old", 0), s.for_step("fresh", 0)
    old.last_used, fresh.last_used = 100.0, 105.0
    assert s.end_idle(now=110.0) == []  # exactly the timeout is not yet idle
    assert s.end_idle(now=110.5) == ["old"]
    assert len(s) == 1
    assert s.end_idle(now=115.0) == []
    assert s.end_idle(now=1000.0) == ["fresh"]
    assert len(s) == 0


def test_a_step_refreshes_last_used() -> None:
    s = store(idle_timeout_s=10.0)
    session = s.for_step("a", 0)
    session.last_used = 0.0
    before = time.monotonic()
    s.for_step("a", 0)
    assert session.last_used >= before
    assert s.end_idle(now=session.last_used + 5.0) == []
    assert s.end_idle(now=session.last_used + 10.5) == ["a"]


def test_end_idle_without_now_uses_the_clock() -> None:
    s = store(idle_timeout_s=0.0)
    s.for_step("a", 0).last_used = time.monotonic() - 1.0
    assert s.end_idle() == ["a"]


def test_kv_bytes_grow_as_real_caches_fill() -> None:
    s = store()
    assert s.kv_bytes() == 0
    a = s.for_step("a", 0)
    assert s.kv_bytes() == 0 == a.nbytes()
    fill(a, 3)
    one = s.kv_bytes()
    expected = sum(c.keys.nbytes + c.values.nbytes for c in a.cache)
    assert one == expected == a.nbytes() > 0
    assert one >= 2 * 2 * HEADS * 3 * DIM * 4  # at least keys + values of 3 tokens, 2 layers
    fill(s.for_step("a", 3), 300)  # past mlx-lm's first 256-slot allocation
    assert s.kv_bytes() > one
    assert s.kv_bytes() >= 2 * 2 * HEADS * 303 * DIM * 4
    b = s.for_step("b", 0)
    fill(b, 1)
    assert s.kv_bytes() == a.nbytes() + b.nbytes()
    s.end(["a"])
    assert s.kv_bytes() == b.nbytes()


def test_kv_budget_refuses_new_sessions_once_used_up() -> None:
    s = store(kv_budget_bytes=1)
    s.for_step("a", 0)
    s.for_step("b", 0)  # empty caches use nothing yet
    fill(s.for_step("a", 0), 2)
    with pytest.raises(SessionError, match="KV cache budget of 1 bytes is used up"):
        s.for_step("c", 0)
    assert s.for_step("a", 2).position == 2, "open sessions go on"
    s.end(["a"])
    assert s.for_step("c", 0).session_id == "c"


def test_zero_budget_means_unlimited() -> None:
    s = store(kv_budget_bytes=0)
    fill(s.for_step("a", 0), 50)
    assert s.for_step("b", 0).session_id == "b"
