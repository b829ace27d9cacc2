"""Runs Steps through this worker's slice: one at a time, or the one-token steps of several
sessions as one batched forward pass. The worker's compute loop calls it for one step or group
at a time, so two never run at once, on the event loop's thread or the compute thread; whatever a
step leaves in a session (caches, sampling key) is evaluated before it returns, because MLX's lazy
arrays cannot be evaluated on another thread than the one that made them."""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from node.grammar import GrammarError, GrammarState, TokenizerLoader
from node.logits_processing import processed
from node.rollback import rollback_horizon
from node.sampling import SampledToken, new_key, sample
from node.session_batches import evaluate
from node.sessions import PrefixMissing, SessionError, SessionLost, SessionStore
from node.speculative import verify
from node.stage_model import StageModel
from node.wire import from_wire, to_wire
from proto import boltpipe_pb2 as pb


class StepError(Exception):
    """A step this stage refuses; the message goes back to the coordinator."""


class StepRefused(StepError):
    """A step refused before it touched its session (its input, or a session it does not fit):
    the session's cache is as it was, so the session goes on."""


class PrefixRefused(StepRefused):
    """A new session's step names a kept prefix this stage does not hold: the coordinator should
    forget the prefix and run the request again from its start."""


@dataclass
class StepOutput:
    hidden: pb.Tensor | None = None      # for the next stage
    token: SampledToken | None = None    # last stage, when asked for a token
    num_tokens: int = 0
    more: list[SampledToken] | None = None  # a speculative step's tokens after `token`


class StageRunner:
    def __init__(self, stage: StageModel, sessions: SessionStore, *, hidden_size: int, vocab_size: int, max_step_tokens: int,
                 grammars: TokenizerLoader | None = None):
        self.stage = stage
        self.grammars = grammars  # the last stage's tokenizer for constrained sessions
        self.sessions = sessions
        self.hidden_size = hidden_size
        self.vocab_size = vocab_size
        self.max_step_tokens = max_step_tokens
        # Whether speculative steps can be undone here (node/rollback.py).
        self.rollback_horizon, self.rollback_problem = (
            rollback_horizon(stage.make_cache()) if isinstance(stage, StageModel)
            else (-1, "the Core ML backend does not roll its state buffers back"))

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

    def constraint_problem(self) -> str:
        if not self.stage.is_last:
            return "only the last stage constrains tokens"
        return self.grammars.problem() if self.grammars is not None else "this stage has no grammar tokenizer"

    def _session(self, step: pb.Step):
        try:
            session = self.sessions.for_step(step.session_id, step.position, step.prefix_id)
        except PrefixMissing as exc:
            raise PrefixRefused(str(exc)) from exc
        except SessionLost as exc:
            raise StepError(str(exc)) from exc
        except SessionError as exc:
            raise StepRefused(str(exc)) from exc
        if step.HasField("constraint") and session.grammar is None and self.stage.is_last:
            # Before the step computes anything: a grammar that cannot be used refuses the step alone.
            try:
                if self.grammars is None:
                    raise GrammarError("this stage has no grammar tokenizer")
                session.grammar = GrammarState(self.grammars.get(), step.constraint.grammar,
                                               list(step.constraint.consumed_ids))
            except GrammarError as exc:
                raise StepRefused(f"constraint: {exc}") from exc
        return session

    @staticmethod
    def _shaped(logits: mx.array, step: pb.Step, session, drafts: list[int] = ()) -> mx.array:
        """Logits (rows, vocab) after the request's processors and its grammar's mask."""
        logits = processed(logits, step.sampling, step.context_ids)
        if session.grammar is None:
            return logits
        try:
            masks = session.grammar.masks_along(drafts) if drafts else [session.grammar.mask()]
        except GrammarError as exc:
            raise StepError(f"constraint: {exc}") from exc
        return mx.where(mx.array(np.stack(masks)), logits, -mx.inf)

    @staticmethod
    def _follow(session, tokens: list[int]) -> None:
        if session.grammar is not None:
            try:
                session.grammar.consume(tokens)
            except GrammarError as exc:
                raise StepError(f"constraint: {exc}") from exc

    def run(self, step: pb.Step) -> StepOutput:
        h = self._input(step)
        if step.draft_ids:
            self._check_speculative(step, h.shape[1])
        return self._run_one(step, h, self._session(step))

    def _check_speculative(self, step: pb.Step, n: int) -> None:
        if self.rollback_horizon < 0:
            raise StepRefused(f"this stage cannot take speculative steps: {self.rollback_problem}")
        if not step.want_token or len(step.draft_ids) >= n:
            raise StepRefused(f"a speculative step carries its {len(step.draft_ids)} drafts after at least one "
                              f"accepted token and asks for a token; this one has {n} inputs")
        if self.rollback_horizon and step.position + n > self.rollback_horizon:
            raise StepRefused(f"a speculative step may end at position {self.rollback_horizon} at most on this "
                              f"stage (its sliding window), this one ends at {step.position + n}")
        if self.stage.is_first and list(step.token_ids[n - len(step.draft_ids):]) != list(step.draft_ids):
            raise StepRefused("draft_ids must be the last token_ids of a speculative step")

    def _run_one(self, step: pb.Step, h: mx.array, session) -> StepOutput:
        n = h.shape[1]
        cache = self.sessions.own_cache(session)
        h = self.stage.run_layers(h, cache, session.position)
        out = StepOutput(num_tokens=n)
        if not self.stage.is_last:
            mx.eval(h)
            out.hidden = to_wire(h)
        elif step.want_token and step.draft_ids:
            drafts = list(step.draft_ids)
            logits = self._shaped(self.stage.head(h[:, -(len(drafts) + 1):, :])[0], step, session, drafts)
            if session.key is None and step.sampling.temperature > 0:
                session.key = new_key(step.sampling)
            tokens, session.key = verify(logits, drafts, step.sampling, session.key)
            self._follow(session, [t.token_id for t in tokens])
            out.token, out.more = tokens[0], tokens[1:]
        elif step.want_token:
            out.token = self._sample(self.stage.head(h[:, -1:, :])[:, -1, :], step, session)
        # Prefill chunks need only this (as mlx-lm's prefill); after other steps it computes what the
        # output did not depend on (a recurrent layer's next state), so nothing is left lazy.
        evaluate(cache)
        session.position += n
        session.steps += 1
        session.droppable = len(step.draft_ids)
        return out

    def _sample(self, logits: mx.array, step: pb.Step, session) -> SampledToken:
        if session.key is None and step.sampling.temperature > 0:
            session.key = new_key(step.sampling)
        token, session.key = sample(self._shaped(logits, step, session), step.sampling, session.key)
        self._follow(session, [token.token_id])
        return token

    @property
    def can_batch(self) -> bool:
        return getattr(self.stage, "batch_problem", "this backend computes one session at a time") is None

    def run_group(self, steps: list[pb.Step]) -> list[StepOutput | StepRefused]:
        """The one-token steps of different sessions, as one forward pass: an outcome per step, in
        order. A step refused on its own (its input, its session's position) leaves the others to
        run; an exception from the forward pass itself concerns them all and is raised."""
        outcomes: list[StepOutput | StepRefused | None] = [None] * len(steps)
        rows = []
        seen: set[str] = set()
        for i, step in enumerate(steps):
            try:
                if step.session_id in seen:
                    raise StepRefused(f"session {step.session_id!r} appears twice in one group")
                h = self._input(step)
                if h.shape[1] != 1:
                    raise StepRefused(f"a step of a group carries one token, not {h.shape[1]}")
                rows.append((i, step, h, self._session(step)))
                seen.add(step.session_id)
            except StepRefused as exc:
                outcomes[i] = exc
        if len(rows) == 1 or (rows and not self.can_batch):
            for i, step, h, session in rows:
                outcomes[i] = self._run_one(step, h, session)
        elif rows:
            for i, out in self._run_batched(rows):
                outcomes[i] = out
        return outcomes

    def _run_batched(self, rows: list) -> list[tuple[int, StepOutput]]:
        batch = self.sessions.batch_for([session for *_, session in rows])
        order = {id(session): row for row, session in enumerate(batch.sessions)}
        rows = sorted(rows, key=lambda r: order[id(r[3])])
        h = self.stage.run_layers_batched(mx.concatenate([r[2] for r in rows], axis=0), batch.caches)
        outs = [StepOutput(num_tokens=1) for _ in rows]
        if not self.stage.is_last:
            mx.eval(h)
            for row, out in enumerate(outs):
                out.hidden = to_wire(h[row:row + 1])
        elif wanted := [row for row, r in enumerate(rows) if r[1].want_token]:
            logits = self.stage.head(h[mx.array(wanted)])[:, -1, :]
            mx.eval(logits)
            for k, row in enumerate(wanted):
                _, step, _, session = rows[row]
                outs[row].token = self._sample(logits[k:k + 1], step, session)
        evaluate(batch.caches)  # offsets and the like, which the outputs do not depend on
        for _, _, _, session in rows:
            session.position += 1
            session.steps += 1
        return [(r[0], out) for r, out in zip(rows, outs)]
