"""Prompt-lookup drafting (cluster/pipeline/prompt_lookup.py): what followed the history's tail before."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.pipeline.prompt_lookup import PromptLookup

THE_CAT = [1, 2, 3, 4, 1, 5, 9, 1, 2]  # "the cat sat on the mat . the cat"


def test_what_followed_the_tail_before_is_proposed() -> None:
    assert PromptLookup(THE_CAT).propose(3) == [3, 4, 1]


def test_the_longest_match_wins_over_a_more_recent_shorter_one() -> None:
    # ... 7 8 9 | 5 9 ... then tail 7 8 9: the 3-gram's follower (4), not the later 1-gram "9" (-> 1).
    history = [7, 8, 9, 4, 4, 5, 9, 1, 7, 8, 9]
    assert PromptLookup(history).propose(2) == [4, 4]


def test_the_most_recent_occurrence_of_a_match_wins() -> None:
    assert PromptLookup([1, 2, 3, 1, 2, 4, 1, 2]).propose(1) == [4]


def test_nothing_to_copy_proposes_nothing() -> None:
    assert PromptLookup([1, 2, 3]).propose(4) == []
    assert PromptLookup([]).propose(4) == []
    assert PromptLookup(THE_CAT).propose(0) == []


def test_a_proposal_stops_at_the_end_of_the_history() -> None:
    assert PromptLookup([5, 6, 5]).propose(8) == [6, 5]


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        PromptLookup(min_ngram=0)
    with pytest.raises(ValueError):
        PromptLookup(max_ngram=2, min_ngram=3)


def _brute_force(tokens: list[int], k: int, max_ngram: int, min_ngram: int) -> list[int]:
    end = len(tokens)
    for n in range(min(max_ngram, end), min_ngram - 1, -1):
        tail = tokens[end - n:]
        for start in range(end - n - 1, -1, -1):  # latest earlier occurrence first
            if tokens[start:start + n] == tail:
                return tokens[start + n:start + n + k]
    return []


@settings(max_examples=300, deadline=None)
@given(tokens=st.lists(st.integers(0, 4), max_size=40), k=st.integers(1, 6), max_ngram=st.integers(1, 4),
       cut=st.integers(0, 40))
def test_the_index_grown_token_by_token_proposes_what_a_full_search_finds(tokens, k, max_ngram, cut) -> None:
    lookup = PromptLookup(tokens[:cut], max_ngram=max_ngram)
    lookup.extend(tokens[cut:])
    assert lookup.propose(k) == _brute_force(tokens, k, max_ngram, 1)
