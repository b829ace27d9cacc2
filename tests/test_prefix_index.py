"""The coordinator's prefix index (cluster/pipeline/prefix_index.py): the match
is the longest common prefix with any cached entry (checked against a brute-force search over random
histories, entries added and removed), at least one prompt token is left to compute, an entry longer
than the prompt serves it cut back, exact-only models match whole entries only, and the byte budget
evicts the least recently used entry first, shared ones last."""

from __future__ import annotations

import random

import pytest

from cluster.pipeline.prefix_index import PrefixIndex


def common(a, b) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def test_longest_common_prefix_agrees_with_a_brute_force_search() -> None:
    rng = random.Random(3)
    index = PrefixIndex(budget_bytes=10**9, bytes_per_token=1)
    live: dict[str, list[int]] = {}
    base = [rng.randrange(5) for _ in range(30)]
    for step in range(400):
        history = base[:rng.randrange(31)] + [rng.randrange(5) for _ in range(rng.randrange(12))]
        if rng.random() < 0.4 and history:
            entry_id = f"e{step}"
            live[entry_id] = history
            for evicted in index.add(entry_id, history):  # the entries this one continues
                assert history[:len(live[evicted])] == live[evicted]
                del live[evicted]
        elif rng.random() < 0.3 and live:
            victim = rng.choice(sorted(live))
            index.remove(victim)
            del live[victim]
        found = index.match(history)
        best = max((min(common(t, history), len(history) - 1) for t in live.values()), default=0)
        if best <= 0:
            assert found is None
        else:
            assert found is not None and found.length == best, (history, found, best)
            assert common(live[found.entry_id], history) >= found.length
    for entry_id in list(live):
        index.remove(entry_id)
    assert index._root.children == {} and len(index) == 0


def test_an_entry_longer_than_the_prompt_serves_it_cut_back_and_one_token_is_left() -> None:
    index = PrefixIndex(budget_bytes=1000, bytes_per_token=1)
    index.add("turn1", [1, 2, 3, 4, 5, 6])
    assert index.match([1, 2, 3, 9]).length == 3
    assert index.match([1, 2, 3]).length == 2          # the last prompt token is computed
    assert index.match([1, 2, 3, 4, 5, 6, 7]).length == 6
    assert index.match([2, 3]) is None


def test_exact_only_models_match_whole_entries() -> None:
    index = PrefixIndex(budget_bytes=1000, bytes_per_token=1, exact_only=True)
    index.add("system", [1, 2, 3])
    index.add("turn1", [1, 2, 3, 4, 5])
    assert index.match([1, 2, 3, 4, 9]).entry_id == "system"
    assert index.match([1, 2, 3, 4, 5, 6]).entry_id == "turn1"
    assert index.match([1, 2]) is None


def test_a_continued_entry_is_dropped_and_the_budget_keeps_shared_prefixes_longest() -> None:
    index = PrefixIndex(budget_bytes=12, bytes_per_token=1)
    assert index.add("system", [1, 2, 3]) == []
    assert index.add("chat-a1", [1, 2, 3, 4]) == ["system"]  # the next turn continues it
    assert index.match([1, 2, 3, 8, 8]) .entry_id == "chat-a1"  # chat b branches off inside it: shared
    assert index.add("chat-b1", [1, 2, 3, 8, 8, 9]) == []
    assert index.add("other", [7, 7]) == []
    assert index.match([7, 7, 1]).entry_id == "other"  # used after chat-b1, never shared
    # Over the budget: chat-b1 (least recently used, never shared) goes before chat-a1 (shared).
    assert index.add("chat-c1", [6, 6]) == ["chat-b1"]
    assert sorted(index._entries) == ["chat-a1", "chat-c1", "other"] and index.nbytes <= 12


def test_exact_only_models_keep_the_entries_a_newer_one_continues() -> None:
    index = PrefixIndex(budget_bytes=100, bytes_per_token=1, exact_only=True)
    index.add("system", [1, 2, 3])
    assert index.add("turn1", [1, 2, 3, 4, 5]) == []


def test_an_entry_too_big_for_the_budget_is_evicted_at_once_and_clear_forgets_everything() -> None:
    index = PrefixIndex(budget_bytes=5, bytes_per_token=1)
    index.add("small", [1, 2])
    assert index.add("huge", list(range(20))) == ["huge"]
    assert index.match(list(range(20))) is None and index.nbytes <= 5
    assert sorted(index.clear()) == ["small"] and index.match([1, 2, 3]) is None
    with pytest.raises(ValueError):
        PrefixIndex(budget_bytes=10, bytes_per_token=0)
