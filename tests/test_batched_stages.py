"""Batched decode on the stages (node/stage_runner.py run_group, node/session_batches.py): the
one-token steps of several sessions computed as one forward pass through 3 stages give every
session exactly the tokens mlx-lm gives its prompt alone, for every supported family (full,
sliding-window, linear-attention and latent caches; sessions at different positions, so rows are
left-padded), while sessions join, leave, step alone or come in another order."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import pytest

from node.stage_runner import StepRefused
from tests.stage_chain import CHUNK, StageChain, mlx_lm_greedy
from tests.tiny_models import ALL_TYPES, write_tiny_model
from proto import boltpipe_pb2 as pb

BOUNDS = [0, 2, 4, 6]
NEW_TOKENS = 10
PROMPT_LENGTHS = (14, 5, 9, 11)  # the longest passes gemma3's 8-token window: its cache rotates


def prompt(length: int) -> list[int]:
    return [int(t) for t in mx.random.randint(0, 128, (length,), key=mx.random.key(length))]


class Decoder:
    """Sessions through a StageChain: the prompt alone (chunks, then the first token), decode in groups."""

    def __init__(self, chain: StageChain):
        self.chain = chain
        self.position: dict[str, int] = {}
        self.next: dict[str, int] = {}
        self.tokens: dict[str, list[int]] = {}
        self.logprobs: dict[str, list[float]] = {}  # of the decoded tokens (not the first)

    def start(self, session: str, ids: list[int]) -> None:
        body, position = ids[:-1], 0
        for i in range(0, len(body), CHUNK):
            self.chain._step(session, position, body[i:i + CHUNK], want_token=False)
            position += len(body[i:i + CHUNK])
        token = self.chain._step(session, position, [ids[-1]], want_token=True)
        self.position[session], self.next[session], self.tokens[session] = position + 1, token, [token]

    def group(self, sessions: list[str]) -> None:
        steps = [pb.Step(session_id=s, position=self.position[s], token_ids=[self.next[s]], want_token=True)
                 for s in sessions]
        for runner in self.chain.runners:
            outcomes = runner.run_group(steps)
            assert not [o for o in outcomes if isinstance(o, Exception)]
            if not runner.stage.is_last:
                steps = [pb.Step(session_id=s.session_id, position=s.position, hidden=o.hidden, want_token=True)
                         for s, o in zip(steps, outcomes)]
        for step, out in zip(steps, outcomes):
            self._took(step.session_id, out.token.token_id, out.token.logprob)

    def alone(self, session: str) -> None:
        step = pb.Step(session_id=session, position=self.position[session], token_ids=[self.next[session]],
                       want_token=True)
        for runner in self.chain.runners:
            out = runner.run(step)
            if out.hidden is not None:
                step = pb.Step(session_id=session, position=step.position, hidden=out.hidden, want_token=True)
        self._took(session, out.token.token_id, out.token.logprob)

    def _took(self, session: str, token: int, logprob: float | None = None) -> None:
        self.position[session] += 1
        self.next[session] = token
        self.tokens[session].append(token)
        self.logprobs.setdefault(session, []).append(logprob)


@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_a_group_decodes_each_session_as_mlx_lm_does_alone(model_type: str, tmp_path: Path) -> None:
    model_dir = write_tiny_model(tmp_path / model_type, model_type)
    prompts = {f"s{n}": prompt(n) for n in PROMPT_LENGTHS[:3]}
    chain = StageChain([model_dir] * 3, BOUNDS)
    decoder = Decoder(chain)
    for session, ids in prompts.items():
        decoder.start(session, ids)
    for _ in range(NEW_TOKENS - 1):
        decoder.group(list(prompts))
    alone = Decoder(StageChain([model_dir] * 3, BOUNDS))
    for session, ids in prompts.items():
        assert decoder.tokens[session] == mlx_lm_greedy(model_dir, ids, NEW_TOKENS), session
        alone.start(session, ids)
        for _ in range(NEW_TOKENS - 1):
            alone.alone(session)
        # Tokens are exact; the numbers agree to the rounding where a BLAS computes a product of one
        # row with another kernel than one of several (OpenBLAS on Linux: at most about 1e-6 here).
        assert alone.tokens[session] == decoder.tokens[session]
        assert max(abs(a - b) for a, b in zip(alone.logprobs[session], decoder.logprobs[session])) < 1e-4
    batched = all(r.can_batch for r in chain.runners)
    assert batched == (model_type != "gemma2"), chain.runners[0].stage.batch_problem


def test_gemma2_still_cannot_batch_in_mlx_lm(tmp_path: Path) -> None:
    """Why gemma2 steps row by row (node/architectures.py): mlx-lm's gemma2 attention cannot apply a
    batched mask to its grouped queries. When this starts passing a batch, gemma2 can batch too."""
    model_dir = write_tiny_model(tmp_path / "gemma2", "gemma2")
    chain = StageChain([model_dir], [0, 6])
    decoder = Decoder(chain)
    names = [f"s{n}" for n in PROMPT_LENGTHS[:3]]  # three rows: two would broadcast by accident
    for name, n in zip(names, PROMPT_LENGTHS):
        decoder.start(name, prompt(n))
    runner = chain.runners[0]
    batch = runner.sessions.batch_for([runner.sessions._sessions[s] for s in names])
    with pytest.raises(ValueError, match="broadcast"):
        mx.eval(runner.stage.run_layers_batched(mx.zeros((3, 1, 64)), batch.caches))


@pytest.mark.parametrize("model_type", ["llama", "gemma3_text", "qwen3_next", "deepseek_v3"])
def test_sessions_join_leave_and_step_alone_between_groups(model_type: str, tmp_path: Path) -> None:
    model_dir = write_tiny_model(tmp_path / model_type, model_type)
    prompts = {f"s{n}": prompt(n) for n in PROMPT_LENGTHS}
    chain = StageChain([model_dir] * 3, BOUNDS)
    d = Decoder(chain)
    d.start("s14", prompts["s14"]), d.start("s5", prompts["s5"])
    d.group(["s14", "s5"])
    d.group(["s5", "s14"])            # the same batch, rows in another order
    d.start("s9", prompts["s9"])
    d.group(["s14", "s5", "s9"])      # one joins: merged anew
    d.alone("s5")                     # one steps alone: its batch is taken apart
    d.group(["s9", "s14"])
    d.start("s11", prompts["s11"])
    d.group(["s11", "s9", "s14", "s5"])
    for runner in chain.runners:      # one ends while in a batch; the others go on
        runner.sessions.end(["s9"])
        runner.sessions.settle()
    for _ in range(3):
        d.group(["s14", "s5", "s11"])
    d.alone("s11")
    for session in ("s14", "s5", "s11"):
        assert d.tokens[session] == mlx_lm_greedy(model_dir, prompts[session], len(d.tokens[session])), session


def two_sessions_on_one_stage(tmp_path: Path) -> tuple[Path, StageChain, Decoder]:
    """A tiny llama on one stage, with sessions s14 and s5 past their prompts."""
    model_dir = write_tiny_model(tmp_path / "llama", "llama")
    chain = StageChain([model_dir], [0, 6])
    d = Decoder(chain)
    for n in (14, 5):
        d.start(f"s{n}", prompt(n))
    return model_dir, chain, d


def test_a_refused_row_leaves_the_rest_of_its_group_to_run(tmp_path: Path) -> None:
    model_dir, chain, d = two_sessions_on_one_stage(tmp_path)
    runner = chain.runners[0]
    steps = [pb.Step(session_id="s14", position=d.position["s14"], token_ids=[d.next["s14"]], want_token=True),
             pb.Step(session_id="s5", position=d.position["s5"] + 3, token_ids=[d.next["s5"]], want_token=True),
             pb.Step(session_id="s14", position=d.position["s14"], token_ids=[1], want_token=True),
             pb.Step(session_id="new", position=0, token_ids=[1, 2], want_token=True)]
    outcomes = runner.run_group(steps)
    assert [type(o).__name__ for o in outcomes] == ["StepOutput", "StepRefused", "StepRefused", "StepRefused"]
    assert "position" in str(outcomes[1]) and "twice" in str(outcomes[2]) and "one token" in str(outcomes[3])
    d._took("s14", outcomes[0].token.token_id)
    d.group(["s14", "s5"])  # s5's cache was not touched by its refused step
    for n in (14, 5):
        assert d.tokens[f"s{n}"] == mlx_lm_greedy(model_dir, prompt(n), len(d.tokens[f"s{n}"]))


def test_kv_bytes_count_a_batch_once_and_ending_its_sessions_frees_it(tmp_path: Path) -> None:
    model_dir, chain, d = two_sessions_on_one_stage(tmp_path)
    sessions = chain.runners[0].sessions
    alone = sessions.kv_bytes()
    d.group(["s14", "s5"])
    assert sessions.kv_bytes() >= alone > 0  # merged rows are padded to the longest
    sessions.end(["s14", "s5"])
    sessions.settle()
    assert sessions.kv_bytes() == 0 and not sessions._batches
    with pytest.raises(StepRefused):
        chain.runners[0].run(pb.Step(session_id="s5", position=d.position["s5"], token_ids=[1]))
