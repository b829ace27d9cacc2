"""Speculative steps on the stages (node/speculative.py, node/rollback.py, SessionStore.for_step):
a step of the last accepted token and k drafts through 3 stages keeps exactly the drafts greedy
decoding would have chosen, returns the token after them, and every stage drops the rejected
positions when the next step starts earlier, so the session goes on with mlx-lm's own tokens.
Drafts here are made from mlx-lm's answer (right ones, then a wrong one where the pattern says),
which covers fully accepted, partly accepted and fully rejected steps in every family; a family
whose caches cannot roll back refuses speculative steps with the reason and is left untouched."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import pytest

from node.stage_runner import StepRefused
from tests.stage_chain import CHUNK, StageChain, mlx_lm_greedy
from tests.tiny_models import ALL_TYPES, write_tiny_model
from proto import boltpipe_pb2 as pb

BOUNDS = [0, 2, 4, 6]
NEW_TOKENS = 16
# (right drafts, then whether a wrong one follows): whole acceptance, a miss after some, at once.
PATTERNS = [(3, False), (1, True), (0, True), (2, True), (4, False)]


def prompt(length: int) -> list[int]:
    return [int(t) for t in mx.random.randint(0, 128, (length,), key=mx.random.key(length))]


class SpeculativeDecoder:
    """One session through a StageChain as the engine drives it: the prompt, then speculative steps
    with drafts from `reference` (mlx-lm's tokens), plain steps where a stage cannot roll back."""

    def __init__(self, chain: StageChain, reference: list[int]):
        self.chain, self.reference = chain, reference
        self.horizon = min((r.rollback_horizon for r in chain.runners), key=lambda h: (h != -1, h or 1 << 30))
        self.trips = 0

    def run(self, session: str, ids: list[int], new_tokens: int) -> list[int]:
        body, position = ids[:-1], 0
        for i in range(0, len(body), CHUNK):
            self.chain._step(session, position, body[i:i + CHUNK], want_token=False)
            position += len(body[i:i + CHUNK])
        out, token, turn = [], ids[-1], 0
        while len(out) < new_tokens:
            right, wrong = PATTERNS[turn % len(PATTERNS)]
            turn += 1
            drafts = self.reference[len(out):len(out) + right]
            if wrong and len(out) + right < len(self.reference):
                drafts = drafts + [(self.reference[len(out) + right] + 1) % 128]
            drafts = drafts[:new_tokens - len(out) - 1]
            if self.horizon < 0 or (self.horizon and position + 1 + len(drafts) > self.horizon):
                drafts = []
            emitted = self.step(session, position, [token] + drafts, drafts)
            self.trips += 1
            out += emitted
            position += len(emitted)
            token = emitted[-1]
        return out

    def step(self, session: str, position: int, tokens: list[int], drafts: list[int]) -> list[int]:
        step = pb.Step(session_id=session, position=position, token_ids=tokens, want_token=True, draft_ids=drafts)
        for runner in self.chain.runners:
            out = runner.run(step)
            if out.hidden is not None:
                step = pb.Step(session_id=session, position=position, hidden=out.hidden, want_token=True,
                               draft_ids=drafts)
        return [out.token.token_id] + [t.token_id for t in out.more or ()]


@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_speculative_steps_give_mlx_lm_greedy_tokens_and_roll_back_every_cache(model_type: str,
                                                                                tmp_path: Path) -> None:
    model_dir = write_tiny_model(tmp_path / model_type, model_type)
    ids = prompt(3)  # short: gemma3's 8-token window leaves room for drafts before it fills
    reference = mlx_lm_greedy(model_dir, ids, NEW_TOKENS + 4)
    chain = StageChain([model_dir] * 3, BOUNDS)
    decoder = SpeculativeDecoder(chain, reference)
    assert decoder.run("s", ids, NEW_TOKENS)[:NEW_TOKENS] == reference[:NEW_TOKENS]
    if decoder.horizon == -1:
        problems = [r.rollback_problem for r in chain.runners if r.rollback_horizon == -1]
        assert problems and all(problems)
        assert decoder.trips >= NEW_TOKENS  # no step carried drafts
        return
    assert decoder.trips < NEW_TOKENS  # accepted drafts saved trips
    # Each stage holds exactly the accepted positions: the session goes on from there, plainly.
    position = len(ids) - 1 + NEW_TOKENS
    for runner in chain.runners:
        assert runner.sessions._sessions["s"].position == position
    follow = decoder.step("s", position, [reference[NEW_TOKENS - 1]], [])
    assert follow == [reference[NEW_TOKENS]]


def test_a_family_that_cannot_roll_back_refuses_drafts_and_keeps_its_session(tmp_path: Path) -> None:
    model_dir = write_tiny_model(tmp_path / "qwen3_next", "qwen3_next")
    chain = StageChain([model_dir], [0, 6])
    runner = chain.runners[0]
    assert runner.rollback_horizon == -1 and "cannot be rolled back" in runner.rollback_problem
    ids = prompt(6)
    decoder = SpeculativeDecoder(chain, mlx_lm_greedy(model_dir, ids, 4))
    decoder.run("s", ids, 1)
    with pytest.raises(StepRefused, match="cannot take speculative steps"):
        decoder.step("s", len(ids), [decoder.reference[0], 5], [5])
    assert decoder.step("s", len(ids), [decoder.reference[0]], []) == [decoder.reference[1]]


def test_a_sliding_window_refuses_drafts_past_its_horizon(tmp_path: Path) -> None:
    model_dir = write_tiny_model(tmp_path / "gemma3_text", "gemma3_text")
    chain = StageChain([model_dir], [0, 6])
    runner = chain.runners[0]
    assert runner.rollback_horizon > 0
    ids = prompt(runner.rollback_horizon - 1)
    decoder = SpeculativeDecoder(chain, mlx_lm_greedy(model_dir, ids, 4))
    decoder.run("s", ids, 1)
    with pytest.raises(StepRefused, match="sliding window"):
        decoder.step("s", len(ids), [decoder.reference[0], 5, 6], [5, 6])


def test_a_step_cannot_go_back_further_than_the_last_steps_drafts(tmp_path: Path) -> None:
    model_dir = write_tiny_model(tmp_path / "llama", "llama")
    chain = StageChain([model_dir], [0, 6])
    ids = prompt(8)
    reference = mlx_lm_greedy(model_dir, ids, 6)
    decoder = SpeculativeDecoder(chain, reference)
    decoder.run("s", ids, 1)
    position = len(ids)
    emitted = decoder.step("s", position, [reference[0], reference[1], 7], [reference[1], 7])
    assert emitted[:1] == [reference[1]]
    # Two positions were guesses: going back three would reach into the accepted history.
    with pytest.raises(StepRefused, match="holds"):
        decoder.step("s", position - 1, [reference[0]], [])
    assert decoder.step("s", position + len(emitted), [emitted[-1]], []) == [reference[len(emitted) + 1]]
