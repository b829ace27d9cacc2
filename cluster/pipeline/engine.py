"""Drives one generation through the pipeline: chunked prefill, then one decode
step per token; detokenizes incrementally and stops on eos, length or stop strings. Decode steps
go through a DecodeBatcher when there is one, so that sessions decoding at once travel the ring
as batches (cluster.pipeline.decode_lanes)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable, Sequence

from cluster.pipeline.decode_batcher import DecodeBatcher
from cluster.pipeline.pipeline_client import PipelineClient, PipelineError, StageFailure
from cluster.pipeline.prefix_cache import PrefixCache, PrefixStart
from cluster.pipeline.speculation import SessionDrafter, SpeculationPlan
from cluster.pipeline.text_stream import IncrementalDecoder, StopMatcher
from cluster.pipeline.tokenizer import PromptTokenizer
from proto import boltpipe_pb2 as pb

DEFAULT_PREFILL_CHUNK = 512
DEFAULT_PENALTY_CONTEXT = 20  # mlx-lm's repetition_context_size
log = logging.getLogger(__name__)


@dataclass
class GenerationParams:
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: Sequence[str] = ()
    top_logprobs: int = 0
    ignore_eos: bool = False  # benchmarks: always generate max_tokens
    speculate: bool = True    # may draft tokens when the pipeline speculates (a request may opt out)
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 0.0  # 0 or 1: off
    penalty_context: int = DEFAULT_PENALTY_CONTEXT  # the latest tokens the penalties count
    logit_bias: dict[int, float] = field(default_factory=dict)
    grammar: str | None = None  # an llguidance grammar the tokens must follow (node/grammar.py)

    @property
    def penalized(self) -> bool:
        return bool(self.presence_penalty or self.frequency_penalty) or self.repetition_penalty not in (0.0, 1.0)

    def to_wire(self) -> pb.SamplingParams:
        return pb.SamplingParams(
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            has_seed=self.seed is not None,
            seed=(self.seed or 0) % (1 << 64),
            top_logprobs=self.top_logprobs,
            min_p=self.min_p,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            repetition_penalty=self.repetition_penalty,
            logit_bias=self.logit_bias,
        )


@dataclass
class TokenStep:
    """One sampled token and how long its step took, end to end and per stage."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]]
    sent_ns: int
    received_ns: int
    timings: list[pb.StageTiming]

    @property
    def compute_ns(self) -> int:
        return sum(t.compute_end_ns - t.compute_start_ns for t in self.timings)


@dataclass
class TextDelta:
    text: str
    tokens: list[TokenStep] = field(default_factory=list)  # the tokens this text came from


@dataclass
class Finish:
    reason: str                 # "stop" (eos or stop string) or "length"
    prompt_tokens: int
    completion_tokens: int
    prefill_s: float = 0.0
    tokens: list[int] = field(default_factory=list)


class Engine:
    def __init__(
        self,
        client: PipelineClient,
        tokenizer: PromptTokenizer,
        *,
        prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
        step_timeout_s: float = 120.0,
        vocab_size: int = 0,
        replay: bool = True,
        replay_timeout_s: float = 120.0,
        max_replays: int = 3,
        batcher: DecodeBatcher | None = None,
        speculation: SpeculationPlan | None = None,
        prefix_cache: PrefixCache | None = None,
    ):
        if prefill_chunk < 1:
            raise ValueError("prefill_chunk must be at least 1")
        self.client = client
        self.tokenizer = tokenizer
        self.prefill_chunk = prefill_chunk
        self.step_timeout_s = step_timeout_s
        self.vocab_size = vocab_size
        self.replay = replay
        self.replay_timeout_s = replay_timeout_s
        self.max_replays = max_replays
        self.batcher = batcher
        self.speculation = speculation or SpeculationPlan("off")
        self.prefix_cache = prefix_cache
        self.on_replay: Callable[[], None] | None = None  # metrics
        # metrics: (drafter, drafted, kept) for each speculative trip
        self.on_speculated: Callable[[str, int, int], None] | None = None
        self._decoding: set[str] = set()  # sessions in their decode loop (speculation: only alone)
        self.constraint_problem = ""  # why the last stage cannot follow grammars ("": it can)

    async def tokens(self, prompt_ids: Sequence[int], params: GenerationParams,
                     on_token: Callable[[], None] | None = None) -> AsyncIterator[TokenStep]:
        """Sampled tokens, eos included, until eos or max_tokens. The prompt, all but
        its last token, goes through in chunks; the last token's step samples the
        first new token (mlx-lm's order, so the numbers match one process).
        `on_token` is called as each token arrives (metrics), before it is passed on.

        When a stage fails under the request and replay is on, the request waits for the
        pipeline to serve again and continues in a new session: the same steps rebuild the
        KV caches (the prompt in the same chunks, then each token generated so far), so
        greedy decoding goes on with exactly the tokens an uninterrupted run gives."""
        if not prompt_ids:
            raise ValueError("the prompt is empty")
        generated: list[int] = []
        replays = 0
        while True:
            try:
                if not self.client.ready:
                    if not self.replay:
                        raise StageFailure(self.client.watch.describe_down())
                    await self.client.wait_ready(self.replay_timeout_s)
                # Closed before this returns: the session's end (and what it leaves as a prefix)
                # reaches every stage before the caller can send its next request.
                async with contextlib.aclosing(self._session_tokens(prompt_ids, generated, params)) as stream:
                    async for token in stream:
                        generated.append(token.token_id)
                        if on_token is not None:
                            on_token()
                        yield token
                        if token.token_id in self.tokenizer.eos_token_ids and not params.ignore_eos:
                            return
                return
            except StageFailure as exc:
                if self.prefix_cache is not None:
                    self.prefix_cache.forget_all()  # the failed stage's prefixes are gone
                if not self.replay or replays >= self.max_replays:
                    raise
                replays += 1
                log.warning("replaying a request after %d tokens (%s)", len(generated), exc)
                if self.on_replay is not None:
                    self.on_replay()

    async def _session_tokens(self, prompt_ids: Sequence[int], generated: list[int],
                              params: GenerationParams) -> AsyncIterator[TokenStep]:
        """One session: the prompt and `generated` (tokens an earlier session of this request
        produced) fill the caches, then tokens are sampled until max_tokens in all."""
        session_id = uuid.uuid4().hex
        results = self.client.open_session(session_id)
        sampling = params.to_wire()
        step_id = 0
        # A kept prefix of this prompt, if the stages hold one (not for a replay: it rebuilds its
        # caches step by step, as the first time).
        start = self.prefix_cache.start(prompt_ids) if self.prefix_cache is not None and not generated else PrefixStart()
        position = held = start.position
        prefix_id = start.prefix_id  # named by the session's first step only
        settled = False  # nothing in flight: the caches hold exactly `held` positions
        try:
            body = list(prompt_ids[:-1])
            for chunk_start in range(position, len(body), self.prefill_chunk):
                chunk = body[chunk_start : chunk_start + self.prefill_chunk]
                self.client.send(pb.Step(session_id=session_id, step_id=step_id, position=position, token_ids=chunk,
                                         prefix_id=prefix_id))
                step_id, prefix_id = step_id + 1, ""
                position += len(chunk)
            # A replay: every token that went through before goes through again, one step each,
            # as it did the first time (the numbers of the caches stay the same).
            inputs = [prompt_ids[-1], *generated]
            for token_id in inputs[:-1]:
                self.client.send(pb.Step(session_id=session_id, step_id=step_id, position=position,
                                         token_ids=[token_id]))
                step_id += 1
                position += 1
            next_input = inputs[-1]
            first_token_step = step_id
            sequence = [*prompt_ids, *generated]  # every token so far (penalties count the latest)
            # The grammar goes with the session's first sampling step; a replay's grammar follows
            # the tokens generated before it first.
            constraint = pb.Constraint(grammar=params.grammar, consumed_ids=generated) if params.grammar else None
            # A seeded sampled request does not speculate: how many drafts a trip carries follows
            # measured times, and the draws with it, so its tokens would change from run to run.
            speculate = self.speculation.on and params.speculate and (params.temperature <= 0 or params.seed is None)
            drafter = SessionDrafter(self.speculation, [*prompt_ids, *generated]) if speculate else None
            self._decoding.add(session_id)
            remaining = params.max_tokens - len(generated)
            while remaining > 0:
                decode = step_id > first_token_step or bool(generated)
                alone = len(self._decoding) == 1
                drafts = await drafter.propose(position, remaining) if drafter and alone else []
                sent_ns = time.time_ns()
                step = pb.Step(
                    session_id=session_id,
                    step_id=step_id,
                    position=position,
                    token_ids=[next_input, *drafts],
                    want_token=True,
                    sampling=sampling,
                    decode=decode,
                    draft_ids=drafts,
                    prefix_id=prefix_id,
                    context_ids=(sequence + drafts)[-(params.penalty_context + len(drafts)):] if params.penalized else (),
                    constraint=constraint,
                )
                prefix_id, constraint = "", None
                batched = decode and not drafts and self.batcher is not None
                if batched:
                    self.batcher.send(step)
                else:
                    self.client.send(step)
                wanted = step_id
                step_id += 1
                settled = False
                try:
                    result = await self._result_for(results, wanted)
                finally:
                    if batched:
                        self.batcher.returned(session_id)
                settled, held = True, position + 1 + len(drafts)
                received_ns = time.time_ns()
                chosen = [(result.token_id, result.logprob, result.top_logprobs), *(
                    (t.token_id, t.logprob, t.top_logprobs) for t in result.more_tokens)][:remaining]
                if drafter is not None:
                    kept = len(chosen) - 1
                    # Trip times teach the costs only when nothing else shared the trip (the first
                    # step waits behind the prompt's chunks; others may decode beside this one).
                    clean = decode and alone and len(self._decoding) == 1
                    drafter.trip(1 + len(drafts), len(drafts), kept, (received_ns - sent_ns) / 1e9 if clean else None)
                    drafter.add([token_id for token_id, _, _ in chosen])
                    if drafts and self.on_speculated is not None:
                        self.on_speculated(self.speculation.drafter, len(drafts), kept)
                for token_id, logprob, top in chosen:
                    yield TokenStep(
                        token_id=token_id,
                        logprob=logprob,
                        top=[(t.token_id, t.logprob) for t in top],
                        sent_ns=sent_ns,
                        received_ns=received_ns,
                        timings=list(result.timings),
                    )
                sequence.extend(token_id for token_id, _, _ in chosen)
                position += len(chosen)
                remaining -= len(chosen)
                next_input = chosen[-1][0]
        finally:
            self._decoding.discard(session_id)
            if self.batcher is not None:
                self.batcher.leave(session_id)
            keep, drops = None, []
            if self.prefix_cache is not None:
                # What the caches hold is kept for the next request (a chat's next turn) unless a
                # step is still in flight or the stages hold rejected guesses a model without
                # cut-back cannot drop.
                exact = self.prefix_cache.index.exact_only
                if settled and (held == position or not exact):
                    keep, drops = self.prefix_cache.keep(session_id, [*prompt_ids, *generated][:position])
                else:
                    drops = self.prefix_cache.take_drops()
            # Shielded: a request cancelled (its client left) still ends its session everywhere.
            await asyncio.shield(self.client.end_session(session_id, keep=keep, drop_prefixes=drops))

    async def _result_for(self, results: asyncio.Queue, step_id: int) -> pb.StepResult:
        """Waits for `step_id`'s result; earlier prefill acknowledgements are passed over."""
        while True:
            try:
                async with asyncio.timeout(self.step_timeout_s):
                    result = await results.get()
            except TimeoutError as exc:
                raise PipelineError(f"no result from the pipeline within {self.step_timeout_s:.0f} s") from exc
            if result.error:
                if result.stage_lost:
                    raise StageFailure(result.error)
                stage = f"stage {result.failed_stage}" if result.failed_stage >= 0 else "the pipeline"
                raise PipelineError(f"{stage} failed: {result.error}")
            if result.step_id == step_id:
                return result

    async def text(self, prompt_ids: Sequence[int], params: GenerationParams,
                   on_token: Callable[[], None] | None = None) -> AsyncIterator[TextDelta | Finish]:
        """Text deltas (eos and stop strings never appear), then one Finish."""
        decoder = IncrementalDecoder(self.tokenizer)
        stops = StopMatcher(params.stop)
        eos = self.tokenizer.eos_token_ids
        generated: list[int] = []
        reason = "length"
        hit_stop_string = False
        started = time.monotonic()
        prefill_s = 0.0
        steps = self.tokens(prompt_ids, params, on_token)
        unsent: list[TokenStep] = []
        try:
            async for token in steps:
                if not generated:
                    prefill_s = time.monotonic() - started
                generated.append(token.token_id)
                if token.token_id in eos:
                    reason = "stop"
                    break
                unsent.append(token)
                out, hit_stop_string = stops.feed(decoder.add(token.token_id))
                if out:
                    yield TextDelta(out, unsent)
                    unsent = []
                if hit_stop_string:
                    reason = "stop"
                    break
        finally:
            # Ends the session on every stage, also when the consumer stops early.
            await steps.aclose()
        if not hit_stop_string:
            out, hit_stop_string = stops.feed(decoder.flush())
            tail = out if hit_stop_string else out + stops.flush()
            if hit_stop_string:
                reason = "stop"
            if tail:
                yield TextDelta(tail, unsent)
        yield Finish(reason, len(prompt_ids), len(generated), prefill_s, generated)
