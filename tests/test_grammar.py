"""The last stage's grammar state (node/grammar.py) with the demo model's real tokenizer: masks
allow exactly what the grammar allows, a finished grammar allows only end-of-sequence, speculative
rows get the masks their drafts lead to and leave the state as it was, and bad grammars or tokens
are GrammarErrors (the step is refused, the worker goes on)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cluster.api.structured_output import response_format_grammar
from node.grammar import GrammarError, GrammarState, TokenizerLoader, build_tokenizer

SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]},
                                           "days": {"type": "integer", "minimum": 1, "maximum": 9}},
          "required": ["city", "days"], "additionalProperties": False}


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir: Path):
    return build_tokenizer(smollm2_dir, 49152)


@pytest.fixture(scope="module")
def grammar() -> str:
    return response_format_grammar({"type": "json_schema", "json_schema": {"name": "trip", "schema": SCHEMA,
                                                                            "strict": True}})


def test_masks_follow_the_schema_to_the_end(tokenizer, grammar) -> None:
    state = GrammarState(tokenizer, grammar)
    text = json.dumps({"city": "Rome", "days": 3})
    ids = tokenizer.tokenize_str(text)
    for token in ids:
        mask = state.mask()
        assert mask[token], tokenizer.decode_str([token])
        assert mask.sum() < len(mask) // 2  # constrained, not open
        state.consume([token])
    assert state.done()
    mask = state.mask()
    assert list(np.flatnonzero(mask)) == [tokenizer.eos_token]


def test_a_token_the_grammar_forbids_is_an_error(tokenizer, grammar) -> None:
    state = GrammarState(tokenizer, grammar)
    (letter,) = tokenizer.tokenize_str("x")
    assert not state.mask()[letter]
    with pytest.raises(GrammarError):
        state.consume([letter])


def test_a_replay_follows_the_earlier_tokens_first(tokenizer, grammar) -> None:
    earlier = tokenizer.tokenize_str('{"city": "Pa')
    resumed = GrammarState(tokenizer, grammar, earlier)
    fresh = GrammarState(tokenizer, grammar)
    fresh.consume(earlier)
    assert np.array_equal(resumed.mask(), fresh.mask())
    with pytest.raises(GrammarError, match="does not allow"):
        GrammarState(tokenizer, grammar, tokenizer.tokenize_str("nonsense"))


def test_speculative_rows_get_the_masks_their_drafts_lead_to(tokenizer, grammar) -> None:
    ids = tokenizer.tokenize_str('{"city": "Paris", "days": 2}')
    state = GrammarState(tokenizer, grammar, ids[:2])
    before = state.mask().copy()
    drafts = ids[2:5]
    masks = state.masks_along(drafts)
    assert len(masks) == len(drafts) + 1 and np.array_equal(masks[0], before)
    for i in range(1, len(masks)):
        walker = GrammarState(tokenizer, grammar, ids[:2 + i])
        assert np.array_equal(masks[i], walker.mask()), i
    assert np.array_equal(state.mask(), before)  # the state is as it was
    (letter,) = tokenizer.tokenize_str("x")
    cut = state.masks_along([drafts[0], letter, drafts[2]])
    assert np.array_equal(cut[1], masks[1]) and np.array_equal(cut[2], cut[1]) and np.array_equal(cut[3], cut[1])
    state.consume(drafts)
    assert np.array_equal(state.mask(), masks[-1])


def test_bad_grammars_are_errors_and_the_loader_says_why(tokenizer, tmp_path: Path) -> None:
    with pytest.raises(GrammarError, match="unknown name"):
        GrammarState(tokenizer, "start: nothing_defined")
    loader = TokenizerLoader(tmp_path, 100)  # no tokenizer files there
    with pytest.raises(GrammarError, match="no usable tokenizer"):
        loader.get()
    assert "no usable tokenizer" in loader.problem()


def test_drafts_that_reach_the_end_leave_the_state_as_it_was(tokenizer) -> None:
    """A draft run may end the grammar (its end-of-sequence drafted too); the real state must still
    take any shorter choice after it (llguidance cannot roll back past an end: a copy is walked)."""
    from cluster.api.tools import call_grammar, parse_tools
    from tests.structured_cases import TOOLS

    single = parse_tools({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "add"}}})
    grammar = call_grammar(single, "generic")
    ids = tokenizer.tokenize_str('<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>')
    ids.append(tokenizer.eos_token)
    for split in range(len(ids) - 4, len(ids)):
        drafts = ids[split:]
        for keep in range(len(drafts)):
            state = GrammarState(tokenizer, grammar, ids[:split])
            state.masks_along(drafts)
            state.consume(ids[split:split + keep + 1])  # kept drafts and the token after them
    state = GrammarState(tokenizer, grammar, ids)
    state.consume([tokenizer.eos_token])  # past the end: ignored, never used
    assert state.done()
