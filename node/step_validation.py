"""Checks of every incoming message against what this worker serves, before anything acts on it.

Pure functions, no sockets: each returns None for a message it accepts, or a message for people
naming the field, what was expected and what was found. They run on receipt, on the event loop, so
they are cheap (a decode step is checked in a few microseconds) and never read tensor values:

- Non-finite hidden values (NaN, inf) are not refused. They can only poison the session that carries
  them (its own cache and tokens), never the worker or another session, and finding them costs a pass
  over every byte of every step (a prefill chunk is megabytes).
- Whether a step's session exists and sits at the step's position is not checked here: steps of one
  session may still be queued ahead of it. The compute loop checks that (SessionStore.for_step) and
  refuses a conflicting step without touching the session.
- want_token and sampling are checked on every stage, not only the last: they travel with the step to
  the last stage, and garbage is best refused where it enters the pipeline.
- What a step carries on to later stages besides its tensor (sampling, timings, with any unknown
  fields in them) is bounded, so that a step this stage accepts can never make the step it forwards
  too large for the next stage's message limit (which would break the link every session shares).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from node.coreml.settings import SettingsError, is_coreml_backend, parse_backend
from node.model_config import ModelInfo
from node.wire import DTYPES
from proto import boltpipe_pb2 as pb

MAX_ID_CHARS = 128            # session ids and reply_to names (the coordinator's are 32 and 18)
MAX_TEMPERATURE = 100.0       # the OpenAI API allows 2; far beyond that sampling is plain noise
MAX_TOP_LOGPROBS = 20         # the OpenAI API's limit
TIMINGS_SLACK = 8             # timings a step may carry beyond one per stage before this one
MAX_END_SESSION_IDS = 1024    # ids in one EndSession call (the coordinator sends one)
MAX_PATH_CHARS = 4096         # PATH_MAX on Linux and macOS
MAX_ADDRESS_CHARS = 261       # "[" + 253-char host name + "]:" + port
MAX_STAGES = 256
MAX_SESSIONS_LIMIT = 1 << 16
WIRE_ITEM_BYTES = {name: np_dtype.itemsize for name, (_, np_dtype) in DTYPES.items()}
MAX_CARRIED_BYTES = 64 * 1024  # sampling + timings of one step (a coordinator's are ~20 + ~60 per stage)
MAX_CONTEXT_IDS = 4096         # tokens a step's penalties count (the coordinator sends 20 by default)
MAX_LOGIT_BIAS = 1024          # entries of sampling.logit_bias
MAX_BIAS = 100.0               # the OpenAI API's range, either side
MAX_PENALTY = 100.0            # presence and frequency (the OpenAI API allows 2 either side)
MAX_REPETITION_PENALTY = 100.0
MAX_CONSUMED_IDS = 1 << 17     # tokens a constraint follows already (a replay's earlier output)
MAX_GRAMMAR_BYTES = 256 * 1024  # with the rest, a forwarded step stays within the message envelope


@dataclass(frozen=True)
class StepLimits:
    """What one loaded slice accepts."""

    is_first: bool                # takes token ids (stage 0)
    stage_index: int
    hidden_size: int
    vocab_size: int
    max_step_tokens: int
    context_length: int | None    # positions a session may use; None: the model does not say

    @property
    def max_timings(self) -> int:
        return self.stage_index + TIMINGS_SLACK


def _show(value: str, keep: int = 40) -> str:
    """A string as found, cut short: an error must not echo a megabyte back."""
    return repr(value) if len(value) <= keep else f"{value[:keep]!r}... ({len(value)} characters)"


def check_name(field: str, value: str, *, required: bool) -> str | None:
    """A session id or subscriber name: printable, at most MAX_ID_CHARS."""
    if not value:
        return f"{field}: expected a non-empty name, got an empty one" if required else None
    if len(value) > MAX_ID_CHARS or not value.isprintable():
        return f"{field}: expected at most {MAX_ID_CHARS} printable characters, got {_show(value)}"
    return None


def reportable(step: pb.Step) -> bool:
    """Whether a refused step can be reported to its reply_to: it names one, and both names are
    well-formed (a coordinator's session never has a malformed id, and a result must not echo one)."""
    return bool(step.reply_to) and check_name("", step.reply_to, required=True) is None and check_name(
        "", step.session_id, required=True) is None


def validate_step(step: pb.Step, limits: StepLimits) -> str | None:
    """Everything about a Step that can be judged on receipt (see the module's docstring)."""
    problem = check_name("session_id", step.session_id, required=True) or check_name(
        "reply_to", step.reply_to, required=False)
    if problem:
        return problem
    # Sampling and timings travel on to the next stages (unknown fields and all): bounded here, the
    # steps this stage forwards always fit the next one's message limit. (Not step.ByteSize(): upb
    # serializes to size a message, 0.1 ms for a prefill chunk of hidden states.)
    timings = step.timings
    if len(timings) > limits.max_timings:
        return f"timings: expected at most {limits.max_timings} on stage {limits.stage_index}, got {len(timings)}"
    carried = step.sampling.ByteSize() + sum(t.ByteSize() for t in timings)
    if carried > MAX_CARRIED_BYTES:
        return f"sampling, timings: expected at most {MAX_CARRIED_BYTES} bytes together, got {carried}"
    if problem := _check_extras(step, limits):
        return problem
    if limits.is_first:
        tokens, problem = _token_input(step, limits)
    else:
        tokens, problem = _hidden_input(step, limits)
    if problem:
        return problem
    if step.draft_ids and (problem := _check_drafts(step, tokens, limits)):
        return problem
    if step.prefix_id:
        if problem := check_name("prefix_id", step.prefix_id, required=False):
            return problem
        if step.position <= 0:
            return "prefix_id: a session starts from a kept prefix at a position inside it (> 0), not at 0"
    position = step.position
    if position < 0:
        return f"position: expected >= 0, got {position}"
    if limits.context_length is not None and position + tokens > limits.context_length:
        return (f"position: a step of {tokens} tokens at position {position} passes the model's context of "
                f"{limits.context_length} positions")
    return check_sampling(step.sampling) if step.HasField("sampling") else None


def _ids_problem(field: str, ids, limits: StepLimits, most: int) -> str | None:
    if len(ids) > most:
        return f"{field}: expected at most {most} ids, got {len(ids)}"
    if ids:
        low, high = min(ids), max(ids)
        if low < 0 or high >= limits.vocab_size:
            return f"{field}: expected ids in [0, {limits.vocab_size}), got {low if low < 0 else high}"
    return None


def _check_extras(step: pb.Step, limits: StepLimits) -> str | None:
    """Penalties' context and the grammar, which also travel on to later stages."""
    if problem := _ids_problem("context_ids", step.context_ids, limits, MAX_CONTEXT_IDS):
        return problem
    if step.HasField("constraint"):
        if not step.want_token:
            return "constraint: only a step that asks for a token (want_token) carries a grammar"
        size = len(step.constraint.grammar.encode())
        if not 0 < size <= MAX_GRAMMAR_BYTES:
            return f"constraint.grammar: expected 1 to {MAX_GRAMMAR_BYTES} bytes, got {size}"
        if problem := _ids_problem("constraint.consumed_ids", step.constraint.consumed_ids, limits, MAX_CONSUMED_IDS):
            return problem
    bias = step.sampling.logit_bias
    if len(bias) > MAX_LOGIT_BIAS:
        return f"sampling.logit_bias: expected at most {MAX_LOGIT_BIAS} entries, got {len(bias)}"
    for token_id, value in bias.items():
        if not 0 <= token_id < limits.vocab_size:
            return f"sampling.logit_bias: expected token ids in [0, {limits.vocab_size}), got {token_id}"
        if not -MAX_BIAS <= value <= MAX_BIAS:
            return f"sampling.logit_bias[{token_id}]: expected -{MAX_BIAS:g} to {MAX_BIAS:g}, got {value}"
    return None


def _token_input(step: pb.Step, limits: StepLimits) -> tuple[int, str | None]:
    if step.HasField("hidden"):
        return 0, "hidden: stage 0 takes token ids, not a hidden state"
    ids = step.token_ids
    count = len(ids)
    if not 1 <= count <= limits.max_step_tokens:
        return 0, f"token_ids: expected 1 to {limits.max_step_tokens} ids, got {count}"
    if count == 1:  # a decode step: min() over the container alone costs microseconds
        low = high = ids[0]
    else:
        values = list(ids)
        low, high = min(values), max(values)
    if low < 0 or high >= limits.vocab_size:
        bad = low if low < 0 else high
        return 0, f"token_ids: expected ids in [0, {limits.vocab_size}), got {bad}"
    return count, None


def _hidden_input(step: pb.Step, limits: StepLimits) -> tuple[int, str | None]:
    if step.token_ids:
        return 0, f"token_ids: only stage 0 takes token ids; this is stage {limits.stage_index}, which takes a hidden state"
    if not step.HasField("hidden"):
        return 0, f"hidden: expected a hidden state (1, n, {limits.hidden_size}) on stage {limits.stage_index}, got none"
    tensor = step.hidden
    item = WIRE_ITEM_BYTES.get(tensor.dtype)
    if item is None:
        return 0, f"hidden.dtype: expected one of {', '.join(DTYPES)}, got {_show(tensor.dtype)}"
    shape = tensor.shape
    if len(shape) != 3 or shape[0] != 1 or shape[2] != limits.hidden_size or not 1 <= shape[1] <= limits.max_step_tokens:
        found = list(shape[:4]) + (["..."] if len(shape) > 4 else [])
        return 0, (f"hidden.shape: expected (1, 1..{limits.max_step_tokens}, {limits.hidden_size}), "
                   f"got ({', '.join(map(str, found))})")
    tokens = shape[1]
    need = tokens * limits.hidden_size * item
    if len(tensor.data) != need:
        return 0, f"hidden.data: expected {need} bytes for shape (1, {tokens}, {limits.hidden_size}) of {tensor.dtype}, got {len(tensor.data)}"
    return tokens, None


def _check_drafts(step: pb.Step, tokens: int, limits: StepLimits) -> str | None:
    drafts = step.draft_ids
    if len(drafts) >= tokens:
        return f"draft_ids: expected fewer drafts than the step's {tokens} inputs, got {len(drafts)}"
    if not step.want_token:
        return "draft_ids: a speculative step must ask for a token (want_token)"
    values = list(drafts)
    if min(values) < 0 or max(values) >= limits.vocab_size:
        return f"draft_ids: expected ids in [0, {limits.vocab_size}), got {min(values) if min(values) < 0 else max(values)}"
    if limits.is_first and list(step.token_ids[tokens - len(values):]) != values:
        return "draft_ids: expected the last token_ids of the step (the drafts it carries)"
    return None


def check_sampling(params: pb.SamplingParams) -> str | None:
    # Written so that NaN fails every range test.
    if not 0.0 <= params.temperature <= MAX_TEMPERATURE:
        return f"sampling.temperature: expected 0 to {MAX_TEMPERATURE:g}, got {params.temperature}"
    if not 0.0 <= params.top_p <= 1.0:
        return f"sampling.top_p: expected 0 to 1, got {params.top_p}"
    # A top_k at or beyond the vocabulary keeps every token (sampling treats it as off), as the API allows.
    if params.top_k < 0:
        return f"sampling.top_k: expected >= 0, got {params.top_k}"
    if not 0 <= params.top_logprobs <= MAX_TOP_LOGPROBS:
        return f"sampling.top_logprobs: expected 0 to {MAX_TOP_LOGPROBS}, got {params.top_logprobs}"
    if not 0.0 <= params.min_p <= 1.0:
        return f"sampling.min_p: expected 0 to 1, got {params.min_p}"
    for name in ("presence_penalty", "frequency_penalty"):
        if not -MAX_PENALTY <= getattr(params, name) <= MAX_PENALTY:
            return f"sampling.{name}: expected -{MAX_PENALTY:g} to {MAX_PENALTY:g}, got {getattr(params, name)}"
    if not 0.0 <= params.repetition_penalty <= MAX_REPETITION_PENALTY:
        return f"sampling.repetition_penalty: expected 0 (off) to {MAX_REPETITION_PENALTY:g}, got {params.repetition_penalty}"
    return None


# ---- control plane ---------------------------------------------------------------------------


def validate_end_session(request: pb.EndSessionRequest) -> str | None:
    ids = request.session_ids
    if len(ids) > MAX_END_SESSION_IDS:
        return f"session_ids: expected at most {MAX_END_SESSION_IDS} per call, got {len(ids)}"
    for index, session_id in enumerate(ids):
        problem = check_name(f"session_ids[{index}]", session_id, required=True)
        if problem:
            return problem
    if len(request.keep) + len(request.drop_prefixes) > MAX_END_SESSION_IDS:
        return f"keep, drop_prefixes: expected at most {MAX_END_SESSION_IDS} together, got {len(request.keep) + len(request.drop_prefixes)}"
    for index, keep in enumerate(request.keep):
        problem = (check_name(f"keep[{index}].session_id", keep.session_id, required=True)
                   or check_name(f"keep[{index}].prefix_id", keep.prefix_id, required=True))
        if problem:
            return problem
        if keep.tokens < 1:
            return f"keep[{index}].tokens: expected at least 1, got {keep.tokens}"
    for index, prefix_id in enumerate(request.drop_prefixes):
        if problem := check_name(f"drop_prefixes[{index}]", prefix_id, required=True):
            return problem
    return None


def validate_results_request(request: pb.ResultsRequest) -> str | None:
    return check_name("reply_to", request.reply_to, required=True)


def validate_slice_spec(spec: pb.SliceSpec) -> str | None:
    """The fields of a SliceSpec on their own, before the model directory is read."""
    path = spec.model_path
    if not path or len(path) > MAX_PATH_CHARS or "\0" in path:
        return f"model_path: expected a directory path of 1 to {MAX_PATH_CHARS} characters without NUL, got {_show(path)}"
    if not 0 <= spec.layer_start < spec.layer_end:
        return f"layer_start, layer_end: expected 0 <= start < end, got [{spec.layer_start}, {spec.layer_end})"
    if spec.num_layers < 0:
        return f"num_layers: expected >= 0 (0: not given), got {spec.num_layers}"
    if not 1 <= spec.num_stages <= MAX_STAGES:
        return f"num_stages: expected 1 to {MAX_STAGES}, got {spec.num_stages}"
    if not 0 <= spec.stage_index < spec.num_stages:
        return f"stage_index: expected 0 to {spec.num_stages - 1} (num_stages is {spec.num_stages}), got {spec.stage_index}"
    last = spec.stage_index == spec.num_stages - 1
    if last != (not spec.next_address):
        return (f"next_address: expected {'none on the last stage' if last else 'host:port of the next stage'} "
                f"(stage {spec.stage_index} of {spec.num_stages}), got {_show(spec.next_address)}")
    if spec.next_address and (problem := _check_address(spec.next_address)):
        return problem
    if not 0 <= spec.max_sessions <= MAX_SESSIONS_LIMIT:
        return f"max_sessions: expected 0 (default) to {MAX_SESSIONS_LIMIT}, got {spec.max_sessions}"
    for field in ("kv_budget_bytes", "memory_limit_bytes"):
        if getattr(spec, field) < 0:
            return f"{field}: expected >= 0 (0: none), got {getattr(spec, field)}"
    if len(spec.model_id) > MAX_PATH_CHARS:
        return f"model_id: expected at most {MAX_PATH_CHARS} characters, got {len(spec.model_id)}"
    return _check_backend(spec.backend)


def _check_address(address: str) -> str | None:
    host, sep, port = address.rpartition(":")
    if len(address) > MAX_ADDRESS_CHARS or not sep or not host or not (port.isascii() and port.isdigit()) \
            or not 1 <= int(port) <= 65535 or not address.isprintable():
        return f"next_address: expected host:port (port 1-65535), got {_show(address)}"
    return None


def _check_backend(backend: str) -> str | None:
    if backend in ("", "mlx"):
        return None
    if is_coreml_backend(backend):
        try:
            parse_backend(backend)
        except SettingsError as exc:
            return f"backend: {exc}"
        return None
    return f"backend: expected 'mlx' or 'coreml-ane:context=N,chunk=M', got {_show(backend)}"


def slice_fits_model(spec: pb.SliceSpec, info: ModelInfo) -> str | None:
    """A SliceSpec (already valid on its own) against the model directory it names."""
    if spec.num_layers and spec.num_layers != info.num_layers:
        return f"num_layers: the model at {spec.model_path} has {info.num_layers} layers, the spec says {spec.num_layers}"
    if spec.layer_end > info.num_layers:
        return f"layer_end: expected at most the model's {info.num_layers} layers, got {spec.layer_end}"
    if (spec.layer_end == info.num_layers) != (not spec.next_address):
        return "next_address: only the stage holding the model's last layer may have no next stage"
    return None


def shard_problem(spec: pb.SliceSpec, info: ModelInfo) -> str | None:
    """A shard directory that does not hold the layers asked for (the directory's fault, not the spec's)."""
    if info.shard_layers is None:
        return None
    start, end = info.shard_layers
    if spec.layer_start < start or spec.layer_end > end:
        return (f"{Path(spec.model_path)} is a shard of layers [{start}, {end}) and cannot serve "
                f"[{spec.layer_start}, {spec.layer_end})")
    return None


def step_limits(*, is_first: bool, stage_index: int, hidden_size: int, vocab_size: int, max_step_tokens: int,
                context_lengths: list[int | None]) -> StepLimits:
    """Limits of a loaded slice; the context is the smallest any part of it holds (a Core ML stage
    fixes its own at conversion)."""
    known = [c for c in context_lengths if c]
    return StepLimits(is_first, stage_index, hidden_size, vocab_size, max_step_tokens, min(known) if known else None)
