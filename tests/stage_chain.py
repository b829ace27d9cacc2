"""A pipeline of stages in this process: each stage loaded from its own directory with the worker's
own code (load_stage, StageRunner, sessions) and fed pb.Step messages, hidden states passed on in
their wire form, in the engine's order (the prompt but its last token in chunks, then one step per
token). What a chain of worker processes computes, without the processes: fast enough to check
every family at every cut."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
from mlx_lm.generate import generate_step
from mlx_lm.utils import load_model

from node.model_config import read_model_info
from node.sessions import SessionStore
from node.stage_model import LayerRange, load_stage
from node.stage_runner import StageRunner
from proto import boltpipe_pb2 as pb

CHUNK = 5  # prompt tokens per step: prompts here are longer, so prefill runs in several chunks


def mlx_lm_greedy(model_dir: Path, prompt: list[int], max_tokens: int) -> list[int]:
    """mlx-lm's own generation loop in one process, with the same prefill chunks as the chain."""
    model = load_model(Path(model_dir))[0]
    return [int(t) for t, _ in generate_step(mx.array(prompt), model, max_tokens=max_tokens, prefill_step_size=CHUNK)]


class StageChain:
    def __init__(self, stage_dirs: list[Path], bounds: list[int]):
        info = read_model_info(stage_dirs[0])
        self.runners = []
        for directory, start, end in zip(stage_dirs, bounds, bounds[1:]):
            stage = load_stage(directory, LayerRange(start, end))
            sessions = SessionStore(stage.make_cache)
            self.runners.append(StageRunner(stage, sessions, hidden_size=info.hidden_size,
                                            vocab_size=info.vocab_size, max_step_tokens=64))

    def _step(self, session: str, position: int, tokens: list[int], want_token: bool) -> int | None:
        step = pb.Step(session_id=session, position=position, token_ids=tokens, want_token=want_token)
        for runner in self.runners:
            out = runner.run(step)
            if out.hidden is not None:
                step = pb.Step(session_id=session, position=position, hidden=out.hidden, want_token=want_token)
        return out.token.token_id if out.token is not None else None

    def greedy(self, prompt: list[int], max_tokens: int, session: str = "s") -> list[int]:
        position, body, out = 0, prompt[:-1], []
        for i in range(0, len(body), CHUNK):
            self._step(session, position, body[i:i + CHUNK], want_token=False)
            position += len(body[i:i + CHUNK])
        token = prompt[-1]
        for _ in range(max_tokens):
            token = self._step(session, position, [token], want_token=True)
            position += 1
            out.append(token)
        return out
