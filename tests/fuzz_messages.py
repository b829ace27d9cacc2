"""Hypothesis strategies of messages for a worker's gRPC surface (tests/test_worker_fuzz.py).

Every field is drawn from a mix of valid values, edge values and garbage, so most messages are wrong
somewhere and a few are valid (those run through the real pipeline). Names that only exist at send
time are placeholders, filled in by the sender:

  LIVE       the id of the valid session running alongside (its steps then always name a position
             that session never reaches, and never its coordinator's reply_to: the pair of session
             id and reply_to is what a coordinator holds, and a caller holding both is, until callers
             are authenticated, indistinguishable from it)
  POOL + k   one of a few ids reused within a batch of cases (they get real sessions, then steps
             that conflict with them)
  COORD      the reply_to of the valid session's coordinator (with other sessions' ids only)
  SINK       the reply_to the fuzzer itself subscribed on every stage
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

from node.step_validation import (MAX_BIAS, MAX_CARRIED_BYTES, MAX_CONSUMED_IDS, MAX_CONTEXT_IDS, MAX_END_SESSION_IDS,
                                  MAX_GRAMMAR_BYTES, MAX_ID_CHARS, MAX_LOGIT_BIAS, MAX_PENALTY, MAX_REPETITION_PENALTY,
                                  TIMINGS_SLACK)
from proto import MAX_STEP_TOKENS
from proto import boltpipe_pb2 as pb

VOCAB, HIDDEN, CONTEXT, LAYERS = 49152, 576, 8192, 30
LIVE, POOL, COORD, SINK = "\ue000live", "\ue000pool", "\ue000coord", "\ue000sink"
POOL_SIZE = 4
LIVE_POSITIONS = 256  # the valid session never gets this far (the test checks)
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)


@dataclass
class StepsCase:
    stage: int
    steps: list[pb.Step]


@dataclass
class RawCase:
    method: str
    kind: str              # "unary", "server_stream" or "bidi"
    payloads: list[bytes]


@dataclass
class EndCase:
    request: pb.EndSessionRequest


@dataclass
class ResultsCase:
    request: pb.ResultsRequest


@dataclass
class LoadCase:
    stage: int
    spec: pb.SliceSpec


@dataclass
class InfoCase:
    stage: int
    method: str            # GetInfo, Health or Clock


# Strategies are built once, here: hypothesis validates a strategy object the first time it is drawn
# from, and building them inside the composites below made generation ten times slower.
edge_names = st.sampled_from(["", " ", "x" * MAX_ID_CHARS, "x" * (MAX_ID_CHARS + 1), "a\nb", "\t", "\x00",
                              "é" * MAX_ID_CHARS, "x" * 100_000])
names = st.one_of(st.text(max_size=12), edge_names)
pool_ids = st.builds(lambda k: f"{POOL}{k}", st.integers(0, POOL_SIZE - 1))
session_ids = st.one_of(pool_ids, pool_ids, st.just(LIVE), st.text(min_size=1, max_size=12), edge_names)
live_positions = st.one_of(st.integers(INT32[0], -1), st.integers(LIVE_POSITIONS, CONTEXT - 1),
                           st.integers(LIVE_POSITIONS, INT32[1]))
other_positions = st.one_of(st.just(0), st.integers(-3, 24), st.sampled_from([CONTEXT - 2, CONTEXT - 1, CONTEXT, *INT32]),
                            st.integers(*INT32))
token_id = st.one_of(st.integers(0, VOCAB - 1), st.sampled_from([-1, VOCAB, VOCAB + 1, *INT32]))
few_ids = st.lists(token_id, max_size=6)
# Large payloads are built, not drawn: one value repeated (hypothesis would take ages on a million).
many_ids = st.builds(lambda value, count: [value] * count, token_id,
                     st.sampled_from([MAX_STEP_TOKENS + 1] * 4 + [10_000] * 3 + [1_000_000]))
ids = st.one_of(*[few_ids] * 19, many_ids)
# Penalties' context and a grammar's consumed tokens: few, or built either side of their bounds.
many_context_ids = st.builds(lambda value, count: [value] * count, token_id,
                             st.sampled_from([MAX_CONTEXT_IDS, MAX_CONTEXT_IDS + 1, 100_000]))
context_id_lists = st.one_of(*[few_ids] * 9, many_context_ids)
many_consumed_ids = st.builds(lambda value, count: [value] * count, token_id,
                              st.sampled_from([MAX_CONSUMED_IDS, MAX_CONSUMED_IDS + 1]))
consumed_id_lists = st.one_of(*[few_ids] * 9, many_consumed_ids)
A_TOKEN = 81  # "a" in the demo model's vocabulary: `start: /a*/` follows any number of them
# Grammars as llguidance takes them (Lark, or its JSON form), broken ones, and ones at and over the size
# bound (built: long text is not drawn).
known_grammars = st.sampled_from([
    'start: "yes" | "no"', "start: /[a-z]+/", "start: /a*/", 'start: ""',
    '{"grammars": [{"json_schema": {"type": "object"}}]}', 'start: %json {"type": "integer"}',
    "start: nothing_defined", "}{)(*&^", "start: /(/", 'start: %json {"type": "bogus"}', '{"grammars": 7}',
    "%import common.WS", "start: " + "(" * 1000 + '"a"' + ")" * 1000, "\x00", "é",
])
long_grammars = st.builds(lambda piece, size: (piece * size)[:size], st.sampled_from(["x", "start: ", "é"]),
                          st.sampled_from([MAX_GRAMMAR_BYTES // 2, MAX_GRAMMAR_BYTES, MAX_GRAMMAR_BYTES + 1]))
grammars = st.one_of(*[known_grammars] * 6, *[st.text(max_size=40)] * 3, long_grammars)


floats32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
temperatures = st.one_of(st.sampled_from([0.0, 0.7, 1.0, 100.0, 101.0, -0.0, 1e-45, 1e-30]), floats32)
top_ps = st.one_of(st.sampled_from([0.0, 0.5, 0.9, 1.0, 1.5, -0.1]), floats32)
top_ks = st.one_of(st.sampled_from([0, 1, 40, VOCAB - 1, VOCAB, VOCAB + 1]), st.integers(*INT32))
top_logprobs = st.one_of(st.integers(-2, 22), st.integers(*INT32))
# Unknown fields travel on with sampling: sized either side of the bound (mostly none).
paddings = st.sampled_from([0] * 17 + [16, MAX_CARRIED_BYTES // 2, MAX_CARRIED_BYTES + 1])
seeds = st.integers(0, 2**64 - 1)
# The logits processors' fields: mostly off, else edges either side of their bounds, or any float32.
min_ps = st.one_of(st.sampled_from([0.0] * 6 + [0.05, 1.0, 1e-45, -0.0, -0.1, 1.5]), floats32)
penalties = st.one_of(st.sampled_from([0.0] * 6 + [0.5, -2.0, MAX_PENALTY, -MAX_PENALTY, MAX_PENALTY + 1, 1e-45]),
                      floats32)
repetition_penalties = st.one_of(st.sampled_from([0.0] * 6 + [1.0, 1.3, 1e-45, MAX_REPETITION_PENALTY,
                                                              MAX_REPETITION_PENALTY + 1, -1.0]), floats32)
bias_values = st.one_of(st.sampled_from([0.0, 1.0, -MAX_BIAS, MAX_BIAS, MAX_BIAS + 1]), floats32)
few_biases = st.dictionaries(token_id, bias_values, max_size=4)
many_biases = st.builds(lambda value, count: {i: value for i in range(count)}, bias_values,
                        st.sampled_from([MAX_LOGIT_BIAS, MAX_LOGIT_BIAS + 1]))
logit_biases = st.one_of(*[st.just({})] * 10, *[few_biases] * 5, many_biases)


@st.composite
def sampling(draw) -> pb.SamplingParams:
    params = pb.SamplingParams(temperature=draw(temperatures), top_p=draw(top_ps), top_k=draw(top_ks),
                               has_seed=draw(st.booleans()), seed=draw(seeds), top_logprobs=draw(top_logprobs),
                               min_p=draw(min_ps), presence_penalty=draw(penalties),
                               frequency_penalty=draw(penalties), repetition_penalty=draw(repetition_penalties),
                               logit_bias=draw(logit_biases))
    if size := draw(paddings):
        params.MergeFromString(b"\xfa\x3f" + _varint(size) + b"p" * size)
    return params


samplings = sampling()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


timing = st.builds(pb.StageTiming, stage=st.integers(*INT32), recv_ns=st.integers(*INT64),
                   compute_start_ns=st.integers(*INT64), compute_end_ns=st.integers(*INT64),
                   send_ns=st.integers(*INT64), next_clock_offset_ns=st.integers(*INT64),
                   next_clock_known=st.booleans())


many_timings = st.builds(lambda t, n: [t] * n, timing, st.sampled_from([TIMINGS_SLACK, TIMINGS_SLACK + 1, 1000]))
timings = st.one_of(*[st.lists(timing, max_size=3)] * 9, many_timings)
dtypes = st.one_of(st.sampled_from(["float32", "float16", "bfloat16"] * 3 + ["", "int8", "float64"]), st.text(max_size=8))
rows_counts = st.one_of(st.integers(1, 6), st.sampled_from([0, -1, MAX_STEP_TOKENS, MAX_STEP_TOKENS + 1, 2**62]))
shape_kinds = st.sampled_from(["model", "model", "model", "random", "wide", "batch", "flat", "deep"])
random_shapes = st.lists(st.integers(*INT64), max_size=5)
data_kinds = st.sampled_from(["exact", "exact", "exact", "special", "random", "short"])
specials = st.sampled_from([np.nan, np.inf, -np.inf, 3e38, 0.0])
short_by = st.integers(1, 8)
small_binary = st.binary(max_size=64)
rng_seeds = st.integers(0, 2**32 - 1)


@st.composite
def hidden_tensors(draw) -> pb.Tensor:
    dtype, rows = draw(dtypes), draw(rows_counts)
    shape = {"model": [1, rows, HIDDEN], "wide": [1, rows, HIDDEN + 1], "batch": [2, rows, HIDDEN],
             "flat": [1, HIDDEN], "deep": [1] * 10_000}.get(draw(shape_kinds)) or draw(random_shapes)
    item = {"float32": 4, "float16": 2, "bfloat16": 2}.get(dtype, 4)
    np_dtype = {2: "<f2", 4: "<f4"}[item]
    count = rows * HIDDEN if 0 < rows <= 6 else 0
    kind = draw(data_kinds)
    if kind == "exact":
        data = np.random.default_rng(draw(rng_seeds)).standard_normal(count).astype(np_dtype).tobytes()
    elif kind == "special":
        with np.errstate(over="ignore"):  # 3e38 is inf in float16, as meant
            data = np.full(count, draw(specials), dtype=np_dtype).tobytes()
    elif kind == "random":
        data = draw(small_binary)
    else:
        data = b"\0" * max(0, count * item - draw(short_by))
    return pb.Tensor(data=data, dtype=dtype, shape=shape)


hiddens = hidden_tensors()
step_ids = st.integers(0, 2**64 - 1)
replies_live = st.one_of(st.sampled_from([SINK, SINK, ""]), names)
replies_other = st.one_of(st.sampled_from([SINK, SINK, "", COORD]), names)
input_kinds = st.sampled_from(["own"] * 6 + ["other", "both", "none"])


@st.composite
def steps(draw, stage: int) -> pb.Step:
    session = draw(session_ids)
    live = session == LIVE
    step = pb.Step(
        session_id=session,
        step_id=draw(step_ids),
        position=draw(live_positions if live else other_positions),
        want_token=draw(st.booleans()),
        reply_to=draw(replies_live if live else replies_other),
        decode=draw(st.booleans()),
    )
    step.timings.extend(draw(timings))
    if draw(st.booleans()):
        step.sampling.CopyFrom(draw(samplings))
    # Each stage mostly gets its own kind of input, sometimes the other kind, both or neither.
    own, other = (ids, hiddens) if stage == 0 else (hiddens, ids)
    kind = draw(input_kinds)
    for strategy, wanted in ((own, kind in ("own", "both")), (other, kind in ("other", "both"))):
        if wanted:
            value = draw(strategy)
            if isinstance(value, pb.Tensor):
                step.hidden.CopyFrom(value)
            else:
                step.token_ids.extend(value)
    if draw(st.integers(0, 3)) == 0:  # speculation's guesses, as garbage as the rest
        step.draft_ids.extend(draw(st.lists(st.integers(-2**31, 2**31 - 1), max_size=6)))
    if draw(st.integers(0, 3)) == 0:  # the penalties' context
        step.context_ids.extend(draw(context_id_lists))
    if draw(st.integers(0, 3)) == 0:  # a grammar, with or without want_token
        step.constraint.SetInParent()  # present even when the grammar drawn is empty
        step.constraint.grammar = draw(grammars)
        step.constraint.consumed_ids.extend(draw(consumed_id_lists))
    return step


plausible_sessions = st.one_of(pool_ids, pool_ids, st.just(LIVE))
plausible_live_positions = st.integers(LIVE_POSITIONS, CONTEXT - 8)
plausible_positions = st.sampled_from([0, 0, 1, 2, 3, 4, 8])
plausible_rows = st.integers(1, 4)
plausible_ids = st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=4)
plausible_biases = st.dictionaries(st.integers(0, VOCAB - 1), st.floats(-MAX_BIAS, MAX_BIAS, width=32), max_size=4)
# Within every bound, edges included: what reaches the last stage's logits processors.
plausible_sampling = st.builds(
    pb.SamplingParams, temperature=st.sampled_from([0.0, 0.7]), top_p=st.sampled_from([0.0, 0.9, 1.0]),
    top_k=st.sampled_from([0, 40]), top_logprobs=st.integers(0, 3),
    min_p=st.sampled_from([0.0, 0.0, 0.05, 1.0, 1e-45]),
    presence_penalty=st.sampled_from([0.0, 0.0, 1.5, -MAX_PENALTY, MAX_PENALTY]),
    frequency_penalty=st.sampled_from([0.0, 0.0, -1.5, MAX_PENALTY, 1e-45]),
    repetition_penalty=st.sampled_from([0.0, 0.0, 1.0, 1.3, 1e-45, MAX_REPETITION_PENALTY]),
    logit_bias=st.one_of(st.just({}), plausible_biases))
plausible_context = st.lists(st.integers(0, VOCAB - 1), max_size=8)
# Grammars that pass every check on receipt: the last stage compiles them (or refuses them alone).
plausible_grammars = st.one_of(*[known_grammars] * 4, *[st.text(min_size=1, max_size=40)] * 2, st.builds(
    lambda piece, size: (piece * size)[:size], st.sampled_from(["x", "start: "]), st.just(MAX_GRAMMAR_BYTES)))
plausible_consumed = st.one_of(st.just([]), st.just([]), st.lists(st.just(A_TOKEN), max_size=8),
                               st.lists(st.integers(0, VOCAB - 1), max_size=4))


@st.composite
def plausible_steps(draw, stage: int) -> pb.Step:
    """Steps that pass every check on receipt, so the compute loop judges them against its sessions:
    fuzz sessions are opened and then met with conflicting positions; the live session only with
    positions it never reaches (it must go on untouched)."""
    session = draw(plausible_sessions)
    step = pb.Step(session_id=session, step_id=draw(step_ids), want_token=draw(st.booleans()),
                   reply_to=draw(st.sampled_from([SINK, SINK, ""])),
                   position=draw(plausible_live_positions if session == LIVE else plausible_positions))
    if draw(st.booleans()):
        step.sampling.CopyFrom(draw(plausible_sampling))
    if stage == 0:
        step.token_ids.extend(draw(plausible_ids))
    else:
        rows = draw(plausible_rows)
        data = np.random.default_rng(draw(rng_seeds)).standard_normal(rows * HIDDEN).astype("<f4").tobytes()
        step.hidden.CopyFrom(pb.Tensor(data=data, dtype="float32", shape=[1, rows, HIDDEN]))
    inputs = len(step.token_ids) or step.hidden.shape[1]
    if inputs > 1 and draw(st.integers(0, 3)) == 0:  # a speculative step: its last inputs are guesses
        drafts = draw(st.integers(1, inputs - 1))
        step.want_token = True
        step.draft_ids.extend(list(step.token_ids)[-drafts:] if stage == 0 else draw(
            st.lists(st.integers(0, VOCAB - 1), min_size=drafts, max_size=drafts)))
    if draw(st.integers(0, 2)) == 0:
        step.context_ids.extend(draw(plausible_context))
    if step.want_token and draw(st.integers(0, 2)) == 0:
        step.constraint.grammar = draw(plausible_grammars)
        step.constraint.consumed_ids.extend(draw(plausible_consumed))
    return step


stage_steps = [st.lists(st.one_of(steps(stage), steps(stage), steps(stage), plausible_steps(stage)),
                        min_size=1, max_size=3) for stage in (0, 1)]
stages = st.integers(0, 1)


@st.composite
def steps_cases(draw) -> StepsCase:
    stage = draw(stages)
    return StepsCase(stage, draw(stage_steps[stage]))


# ---- control plane -----------------------------------------------------------------------------

end_cases = st.builds(
    EndCase,
    st.builds(pb.EndSessionRequest, session_ids=st.one_of(
        st.lists(st.one_of(st.text(max_size=12), edge_names, pool_ids), max_size=5),
        st.builds(lambda n: [f"fz-many-{i}" for i in range(n)],
                  st.sampled_from([MAX_END_SESSION_IDS, MAX_END_SESSION_IDS + 1, 100_000])))),
)

results_cases = st.builds(ResultsCase, st.builds(pb.ResultsRequest, reply_to=names))

info_cases = st.builds(InfoCase, st.integers(0, 1), st.sampled_from(["GetInfo", "Health", "Clock"]))


def load_cases(model_dir: str, live_specs: list[pb.SliceSpec]) -> st.SearchStrategy[LoadCase]:
    """SliceSpecs that must never replace the slice being served: malformed, naming no model, or
    exactly the spec already loaded."""
    paths = st.sampled_from(["", "/nonexistent/model", "\x00", "/" * 5000, "/", "/proc/self", f"{model_dir}/config.json",
                             model_dir, model_dir])
    fields = dict(
        layer_start=st.one_of(st.integers(-2, 31), st.integers(*INT32)),
        layer_end=st.one_of(st.integers(-2, 32), st.integers(*INT32)),
        num_layers=st.sampled_from([0, LAYERS, LAYERS - 1, -1, INT32[1]]),
        stage_index=st.integers(-1, 3),
        num_stages=st.integers(-1, 3),
        next_address=st.one_of(st.sampled_from(["", "127.0.0.1:1", "[::1]:50061", "nohost", "h:0", "h:99999"]),
                               st.text(max_size=10)),
        backend=st.one_of(st.sampled_from(["", "mlx", "cuda", "coreml-ane", "coreml-ane:context=x"]), st.text(max_size=8)),
        max_sessions=st.integers(*INT32),
        kv_budget_bytes=st.integers(*INT64),
        memory_limit_bytes=st.integers(*INT64),
        model_id=names,
    )
    # For the real model: one field that is always refused, so the live slice is never replaced.
    spoilers = st.sampled_from([("num_stages", 0), ("layer_start", -1), ("layer_end", LAYERS + 1),
                                ("num_layers", LAYERS - 1), ("backend", "cuda"), ("max_sessions", -1)])
    kinds = st.sampled_from(["already"] + ["plausible"] * 4 + ["random"] * 5)
    other_paths = st.sampled_from(["", "/nonexistent/model", "\x00", "/" * 5000, "/", "/proc/self",
                                   f"{model_dir}/config.json"])

    @st.composite
    def one(draw) -> LoadCase:
        stage, kind = draw(stages), draw(kinds)
        if kind == "already":
            return LoadCase(stage, live_specs[stage])
        if kind == "plausible":
            # Well-formed but naming no model directory: refused before the live slice is let go.
            spec = pb.SliceSpec()
            spec.CopyFrom(live_specs[draw(stages)])
            spec.model_path = draw(other_paths)
            return LoadCase(stage, spec)
        spec = pb.SliceSpec(model_path=draw(paths), **{name: draw(strategy) for name, strategy in fields.items()})
        if spec.model_path == model_dir:
            name, value = draw(spoilers)
            setattr(spec, name, value)
        return LoadCase(stage, spec)

    return one()


METHODS = {"GetInfo": "unary", "Health": "unary", "Clock": "unary", "EndSession": "unary",
           "LoadSlice": "server_stream", "Results": "server_stream", "Steps": "bidi"}


def cases(model_dir: str, live_specs: list[pb.SliceSpec]) -> st.SearchStrategy:
    """One case of any kind, steps most often (they are the data plane). Weighted by a drawn kind:
    hypothesis' one_of does not keep branches' shares."""
    by_kind = {"steps": steps_cases(), "end": end_cases, "results": results_cases, "info": info_cases,
               "raw": raw_cases, "load": load_cases(model_dir, live_specs)}
    weights = st.sampled_from(["steps"] * 30 + ["end"] * 4 + ["results"] * 3 + ["info"] + ["raw"] * 6 + ["load"] * 6)

    @st.composite
    def one(draw):
        return draw(by_kind[draw(weights)])

    return one()


raw_payloads = st.one_of(st.binary(max_size=64),
                         st.sampled_from([b"\xff" * 10, b"\x0a\xff\xff\xff\xff\x0f", b"\x80" * 11]))
raw_cases = st.builds(lambda method, payloads: RawCase(method, METHODS[method], payloads),
                      st.sampled_from(sorted(METHODS)), st.lists(raw_payloads, min_size=1, max_size=3))
