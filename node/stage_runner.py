"""Runs one Step through this worker's slice. Called on the worker's single compute
thread: every MLX call of a worker happens there."""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx

from node.sampling import SampledToken, new_key, sample
from node.sessions import SessionError, SessionStore
from node.stage_model import StageModel
from node.wire import from_wire, to_wire
from proto import boltpipe_pb2 as pb


class StepError(Exception):
    """A step this stage refuses; the message goes back to the coordinator."""


class StepRefused(StepError):
    """A step refused before it touched its session (its input, or a session it does not fit):
    the session's cache is as it was, so the session goes on."""


@dataclass
class StepOutput:
    hidden: pb.Tensor | None = None      # for the next stage
    token: SampledToken | None = None    # last stage, when asked for a token
    num_tokens: int = 0


class StageRunner:
    def __init__(self, stage: StageModel, sessions: SessionStore, *, hidden_size: int, vocab_size: int, max_step_tokens: int):
        self.stage = stage
        self.sessions = sessions
        self.hidden_size = hidden_size
        self.vocab_size = vocab_size
        self.max_step_tokens = max_step_tokens

    def _input(self, step: pb.Step) -> mx.array:
        if self.stage.is_first:
            ids = list(step.token_ids)
            if not ids:
                raise StepRefused("first-stage step carries no token ids")
            if len(ids) > self.max_step_tokens:
                raise StepRefused(f"step has {len(ids)} tokens, more than the chunk limit {self.max_step_tokens}")
            if min(ids) < 0 or max(ids) >= self.vocab_size:
                raise StepRefused(f"token id out of range [0, {self.vocab_size})")
            return self.stage.embed(mx.array(ids, dtype=mx.int32)[None], step.position)
        if not step.HasField("hidden"):
            raise StepRefused(f"stage {self.stage.layer_range.start}..: step carries no hidden state")
        shape = tuple(step.hidden.shape)
        if len(shape) != 3 or shape[0] != 1 or shape[2] != self.hidden_size or not 0 < shape[1] <= self.max_step_tokens:
            raise StepRefused(
                f"hidden state shape {shape} does not fit this model: expected (1, 1..{self.max_step_tokens}, {self.hidden_size})"
            )
        try:
            return from_wire(step.hidden)
        except ValueError as exc:
            raise StepRefused(str(exc)) from exc

    def run(self, step: pb.Step) -> StepOutput:
        h = self._input(step)
        n = h.shape[1]
        try:
            session = self.sessions.for_step(step.session_id, step.position)
        except SessionError as exc:
            raise StepRefused(str(exc)) from exc
        h = self.stage.run_layers(h, session.cache, session.position)
        out = StepOutput(num_tokens=n)
        if not self.stage.is_last:
            mx.eval(h)
            out.hidden = to_wire(h)
        elif step.want_token:
            if session.key is None and step.sampling.temperature > 0:
                session.key = new_key(step.sampling)
            logits = self.stage.head(h[:, -1:, :])[:, -1, :]
            out.token, session.key = sample(logits, step.sampling, session.key)
        else:
            # A prefill chunk: only the caches need computing (as mlx-lm's prefill does).
            mx.eval([c.state for c in session.cache])
        session.position += n
        session.steps += 1
        return out
