"""Every rule of node/step_validation on its own: what passes, what is refused, and that the
message names the field, what was expected and what was found."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from node.model_config import ModelInfo
from node.step_validation import (MAX_BIAS, MAX_CARRIED_BYTES, MAX_CONSUMED_IDS, MAX_CONTEXT_IDS, MAX_END_SESSION_IDS,
                                  MAX_GRAMMAR_BYTES, MAX_ID_CHARS, MAX_LOGIT_BIAS, MAX_PENALTY, MAX_REPETITION_PENALTY,
                                  MAX_TOP_LOGPROBS, TIMINGS_SLACK, reportable, shard_problem, slice_fits_model,
                                  step_limits, validate_end_session, validate_results_request, validate_slice_spec,
                                  validate_step)
from proto import MAX_HIDDEN_SIZE, MAX_MESSAGE_BYTES, MAX_STEP_TOKENS, MESSAGE_ENVELOPE_BYTES
from proto import boltpipe_pb2 as pb
from tests.fuzz_messages import _varint

HIDDEN, VOCAB, CONTEXT, CHUNK = 8, 100, 64, 16


def limits(stage: int = 0, *, context: int | None = CONTEXT):
    return step_limits(is_first=stage == 0, stage_index=stage, hidden_size=HIDDEN, vocab_size=VOCAB,
                       max_step_tokens=CHUNK, context_lengths=[context])


def hidden(tokens: int = 1, *, dtype: str = "float32", shape: list[int] | None = None, nbytes: int | None = None):
    item = {"float32": 4, "float16": 2, "bfloat16": 2}.get(dtype, 4)
    shape = [1, tokens, HIDDEN] if shape is None else shape
    size = tokens * HIDDEN * item if nbytes is None else nbytes
    return pb.Tensor(data=b"\0" * size, dtype=dtype, shape=shape)


def step0(**fields) -> pb.Step:
    return pb.Step(**({"session_id": "s", "position": 0, "token_ids": [1, 2]} | fields))


def step1(**fields) -> pb.Step:
    return pb.Step(**({"session_id": "s", "position": 0, "hidden": hidden(2)} | fields))


def refused(step: pb.Step, lim=None) -> str:
    problem = validate_step(step, lim or (limits(0) if not step.HasField("hidden") else limits(1)))
    assert problem, "expected a refusal"
    return problem


def test_valid_steps_pass() -> None:
    assert validate_step(step0(), limits(0)) is None
    assert validate_step(step1(), limits(1)) is None
    assert validate_step(step1(hidden=hidden(3, dtype="bfloat16"), want_token=True), limits(1)) is None
    decode = step0(position=40, token_ids=[VOCAB - 1], want_token=True, reply_to="coord-1",
                   sampling=pb.SamplingParams(temperature=0.7, top_p=0.9, top_k=40, top_logprobs=5),
                   timings=[pb.StageTiming(stage=-1, send_ns=5)])
    assert validate_step(decode, limits(0)) is None


# ---- names -----------------------------------------------------------------------------------


def test_session_id_is_required() -> None:
    assert refused(step0(session_id="")) == "session_id: expected a non-empty name, got an empty one"


@pytest.mark.parametrize("value", ["x" * (MAX_ID_CHARS + 1), "a\nb", "tab\there", "\x00"])
def test_session_id_is_bounded_and_printable(value: str) -> None:
    assert refused(step0(session_id=value)).startswith(f"session_id: expected at most {MAX_ID_CHARS} printable")
    assert validate_step(step0(session_id="x" * MAX_ID_CHARS), limits(0)) is None


def test_long_names_are_not_echoed_whole() -> None:
    problem = refused(step0(session_id="y" * 100_000))
    assert len(problem) < 200 and "(100000 characters)" in problem


def test_reply_to_may_be_empty_but_is_bounded() -> None:
    assert validate_step(step0(reply_to=""), limits(0)) is None
    assert refused(step0(reply_to="r" * 500)).startswith("reply_to: expected at most 128 printable characters")


def test_only_well_named_steps_are_reported() -> None:
    assert reportable(step0(reply_to="coord-1"))
    assert not reportable(step0(reply_to=""))
    assert not reportable(step0(reply_to="c" * 500))
    assert not reportable(step0(reply_to="coord-1", session_id="s" * 500))


# ---- stage 0: token ids ----------------------------------------------------------------------


def test_stage0_needs_token_ids() -> None:
    assert refused(step0(token_ids=[])) == f"token_ids: expected 1 to {CHUNK} ids, got 0"


def test_stage0_bounds_the_number_of_ids() -> None:
    assert validate_step(step0(token_ids=[1] * CHUNK), limits(0)) is None
    assert refused(step0(token_ids=[1] * (CHUNK + 1))) == f"token_ids: expected 1 to {CHUNK} ids, got {CHUNK + 1}"
    assert refused(step0(token_ids=[1] * 1_000_000)).endswith("got 1000000")


@pytest.mark.parametrize("ids, bad", [([VOCAB], VOCAB), ([-1], -1), ([5, 2**31 - 1], 2**31 - 1), ([3, -7, 4], -7)])
def test_token_ids_lie_in_the_vocabulary(ids: list[int], bad: int) -> None:
    assert refused(step0(token_ids=ids)) == f"token_ids: expected ids in [0, {VOCAB}), got {bad}"


def test_stage0_takes_no_hidden_state() -> None:
    assert refused(step0(hidden=hidden(2)), limits(0)) == "hidden: stage 0 takes token ids, not a hidden state"


def test_drafts_follow_an_accepted_token_ask_for_one_and_end_the_ids() -> None:
    assert validate_step(step0(token_ids=[4, 5, 6], draft_ids=[5, 6], want_token=True), limits(0)) is None
    assert validate_step(step1(hidden=hidden(3), draft_ids=[5, 6], want_token=True), limits(1)) is None
    assert refused(step0(token_ids=[5, 6], draft_ids=[5, 6], want_token=True)) == \
        "draft_ids: expected fewer drafts than the step's 2 inputs, got 2"
    assert refused(step0(token_ids=[4, 5], draft_ids=[5])) == \
        "draft_ids: a speculative step must ask for a token (want_token)"
    assert refused(step0(token_ids=[4, 5, 6], draft_ids=[6, 5], want_token=True)) == \
        "draft_ids: expected the last token_ids of the step (the drafts it carries)"
    assert refused(step1(hidden=hidden(3), draft_ids=[5, VOCAB], want_token=True), limits(1)) == \
        f"draft_ids: expected ids in [0, {VOCAB}), got {VOCAB}"


# ---- later stages: hidden states -------------------------------------------------------------


def test_later_stage_takes_no_token_ids() -> None:
    problem = refused(pb.Step(session_id="s", token_ids=[1]), limits(1))
    assert problem.startswith("token_ids: only stage 0 takes token ids; this is stage 1")


def test_later_stage_needs_a_hidden_state() -> None:
    assert refused(pb.Step(session_id="s"), limits(2)) == \
        f"hidden: expected a hidden state (1, n, {HIDDEN}) on stage 2, got none"


@pytest.mark.parametrize("dtype", ["int32", "float64", "", "FLOAT32", "x" * 1000])
def test_hidden_dtype_is_known(dtype: str) -> None:
    problem = refused(step1(hidden=hidden(2, dtype=dtype)))
    assert problem.startswith("hidden.dtype: expected one of float32, float16, bfloat16, got") and len(problem) < 200


@pytest.mark.parametrize("shape", [[], [2], [1, 2], [2, 2, HIDDEN], [1, 2, HIDDEN + 1], [1, 0, HIDDEN],
                                   [1, -2, HIDDEN], [1, CHUNK + 1, HIDDEN], [1, 2**62, HIDDEN], [-1, -2, HIDDEN],
                                   [1, 2, HIDDEN, 1], [1] * 100_000])
def test_hidden_shape_fits_the_model(shape: list[int]) -> None:
    problem = refused(step1(hidden=hidden(2, shape=shape)))
    assert problem.startswith(f"hidden.shape: expected (1, 1..{CHUNK}, {HIDDEN}), got (") and len(problem) < 200


@pytest.mark.parametrize("dtype, nbytes", [("float32", 2 * HIDDEN * 4 - 1), ("float32", 2 * HIDDEN * 4 + 4),
                                           ("float16", 2 * HIDDEN * 4), ("bfloat16", 0)])
def test_hidden_data_length_matches_its_shape(dtype: str, nbytes: int) -> None:
    problem = refused(step1(hidden=hidden(2, dtype=dtype, nbytes=nbytes)))
    item = 4 if dtype == "float32" else 2
    assert problem == (f"hidden.data: expected {2 * HIDDEN * item} bytes for shape (1, 2, {HIDDEN}) of {dtype}, "
                       f"got {nbytes}")


def test_non_finite_hidden_values_pass() -> None:
    # By design (the module's docstring): they can only harm the session carrying them.
    nan = np.full((1, 2, HIDDEN), np.nan, dtype="<f4").tobytes()
    assert validate_step(step1(hidden=pb.Tensor(data=nan, dtype="float32", shape=[1, 2, HIDDEN])), limits(1)) is None


# ---- positions -------------------------------------------------------------------------------


def test_position_is_not_negative() -> None:
    assert refused(step0(position=-1)) == "position: expected >= 0, got -1"


def test_position_and_tokens_stay_inside_the_context() -> None:
    assert validate_step(step0(position=CONTEXT - 2, token_ids=[1, 2]), limits(0)) is None
    assert refused(step0(position=CONTEXT - 1, token_ids=[1, 2])) == \
        f"position: a step of 2 tokens at position {CONTEXT - 1} passes the model's context of {CONTEXT} positions"
    assert refused(step1(position=2**31 - 1)).startswith("position: a step of 2 tokens")


def test_no_context_limit_when_the_model_gives_none() -> None:
    assert validate_step(step0(position=10**9), limits(0, context=None)) is None


def test_the_smallest_context_of_the_slice_wins() -> None:
    lim = step_limits(is_first=True, stage_index=0, hidden_size=HIDDEN, vocab_size=VOCAB, max_step_tokens=CHUNK,
                      context_lengths=[8192, None, 2048])
    assert lim.context_length == 2048


# ---- sampling --------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [-0.1, math.nan, math.inf, 101.0])
def test_temperature_is_finite_non_negative_and_bounded(value: float) -> None:
    problem = refused(step0(sampling=pb.SamplingParams(temperature=value)))
    assert problem.startswith("sampling.temperature: expected 0 to 100, got")


@pytest.mark.parametrize("value", [-0.5, 1.01, math.nan, -math.inf])
def test_top_p_lies_in_0_1(value: float) -> None:
    assert refused(step0(sampling=pb.SamplingParams(top_p=value))).startswith("sampling.top_p: expected 0 to 1, got")


def test_top_k_is_not_negative_and_may_exceed_the_vocabulary() -> None:
    assert refused(step0(sampling=pb.SamplingParams(top_k=-1))) == "sampling.top_k: expected >= 0, got -1"
    # At or beyond the vocabulary it keeps every token, as sampling does and the API allows.
    assert validate_step(step0(sampling=pb.SamplingParams(top_k=VOCAB * 10)), limits(0)) is None


@pytest.mark.parametrize("value", [-1, MAX_TOP_LOGPROBS + 1, 2**31 - 1])
def test_top_logprobs_is_bounded(value: int) -> None:
    assert refused(step0(sampling=pb.SamplingParams(top_logprobs=value))) == \
        f"sampling.top_logprobs: expected 0 to {MAX_TOP_LOGPROBS}, got {value}"


def test_sampling_is_checked_on_every_stage() -> None:
    # It travels with the step to the last stage: garbage is refused where it enters.
    assert refused(step1(sampling=pb.SamplingParams(top_p=2.0)), limits(1)).startswith("sampling.top_p")


# ---- penalties' context, grammar and logits processors ---------------------------------------


GRAMMAR = 'start: "yes" | "no"'


def test_context_ids_are_bounded_and_lie_in_the_vocabulary() -> None:
    assert validate_step(step0(context_ids=[VOCAB - 1] * MAX_CONTEXT_IDS), limits(0)) is None
    assert validate_step(step0(context_ids=[0]), limits(0)) is None
    assert refused(step0(context_ids=[1] * (MAX_CONTEXT_IDS + 1))) == \
        f"context_ids: expected at most {MAX_CONTEXT_IDS} ids, got {MAX_CONTEXT_IDS + 1}"
    assert refused(step0(context_ids=[3, VOCAB, 4])) == f"context_ids: expected ids in [0, {VOCAB}), got {VOCAB}"
    assert refused(step0(context_ids=[3, -1, VOCAB])) == f"context_ids: expected ids in [0, {VOCAB}), got -1"
    assert refused(step0(context_ids=[2**31 - 1])) == f"context_ids: expected ids in [0, {VOCAB}), got {2**31 - 1}"


def test_a_constraint_needs_a_step_that_asks_for_a_token() -> None:
    assert validate_step(step0(want_token=True, constraint=pb.Constraint(grammar=GRAMMAR)), limits(0)) is None
    assert refused(step0(constraint=pb.Constraint(grammar=GRAMMAR))) == \
        "constraint: only a step that asks for a token (want_token) carries a grammar"


def test_the_grammar_is_not_empty_and_bounded_in_bytes() -> None:
    at_limit = pb.Constraint(grammar="x" * MAX_GRAMMAR_BYTES)
    assert validate_step(step0(want_token=True, constraint=at_limit), limits(0)) is None
    assert refused(step0(want_token=True, constraint=pb.Constraint())) == \
        f"constraint.grammar: expected 1 to {MAX_GRAMMAR_BYTES} bytes, got 0"
    assert refused(step0(want_token=True, constraint=pb.Constraint(grammar="x" * (MAX_GRAMMAR_BYTES + 1)))) == \
        f"constraint.grammar: expected 1 to {MAX_GRAMMAR_BYTES} bytes, got {MAX_GRAMMAR_BYTES + 1}"
    # Bytes, not characters: fewer characters than the limit, one byte over it.
    wide = pb.Constraint(grammar="\u00e9" * (MAX_GRAMMAR_BYTES // 2) + "x")
    assert refused(step0(want_token=True, constraint=wide)) == \
        f"constraint.grammar: expected 1 to {MAX_GRAMMAR_BYTES} bytes, got {MAX_GRAMMAR_BYTES + 1}"


def test_consumed_ids_are_bounded_and_lie_in_the_vocabulary() -> None:
    def constrained(consumed: list[int]) -> pb.Step:
        return step0(want_token=True, constraint=pb.Constraint(grammar=GRAMMAR, consumed_ids=consumed))

    assert validate_step(constrained([0, VOCAB - 1]), limits(0)) is None
    assert validate_step(constrained([VOCAB - 1] * MAX_CONSUMED_IDS), limits(0)) is None
    assert refused(constrained([1] * (MAX_CONSUMED_IDS + 1))) == \
        f"constraint.consumed_ids: expected at most {MAX_CONSUMED_IDS} ids, got {MAX_CONSUMED_IDS + 1}"
    assert refused(constrained([5, VOCAB])) == f"constraint.consumed_ids: expected ids in [0, {VOCAB}), got {VOCAB}"
    assert refused(constrained([-1, 5])) == f"constraint.consumed_ids: expected ids in [0, {VOCAB}), got -1"


def test_logit_bias_has_bounded_entries_in_the_vocabulary() -> None:
    wide = step_limits(is_first=True, stage_index=0, hidden_size=HIDDEN, vocab_size=MAX_LOGIT_BIAS + 1,
                       max_step_tokens=CHUNK, context_lengths=[CONTEXT])
    at_limit = {i: 1.0 for i in range(MAX_LOGIT_BIAS)}
    assert validate_step(step0(sampling=pb.SamplingParams(logit_bias=at_limit)), wide) is None
    over = at_limit | {MAX_LOGIT_BIAS: 1.0}
    assert refused(step0(sampling=pb.SamplingParams(logit_bias=over)), wide) == \
        f"sampling.logit_bias: expected at most {MAX_LOGIT_BIAS} entries, got {MAX_LOGIT_BIAS + 1}"
    assert validate_step(step0(sampling=pb.SamplingParams(logit_bias={0: 1.0, VOCAB - 1: -1.0})), limits(0)) is None
    for bad in (VOCAB, -1, 2**31 - 1):
        assert refused(step0(sampling=pb.SamplingParams(logit_bias={3: 1.0, bad: 1.0}))) == \
            f"sampling.logit_bias: expected token ids in [0, {VOCAB}), got {bad}"


@pytest.mark.parametrize("value", [MAX_BIAS + 0.5, -MAX_BIAS - 1.0, math.nan, math.inf, -math.inf])
def test_logit_bias_values_are_finite_and_bounded(value: float) -> None:
    assert refused(step0(sampling=pb.SamplingParams(logit_bias={5: value}))) == \
        f"sampling.logit_bias[5]: expected -{MAX_BIAS:g} to {MAX_BIAS:g}, got {value}"
    assert validate_step(step0(sampling=pb.SamplingParams(logit_bias={5: MAX_BIAS, 6: -MAX_BIAS})), limits(0)) is None


@pytest.mark.parametrize("value", [-0.5, 1.5, math.nan, math.inf, -math.inf])
def test_min_p_lies_in_0_1(value: float) -> None:
    assert refused(step0(sampling=pb.SamplingParams(min_p=value))) == f"sampling.min_p: expected 0 to 1, got {value}"
    for fine in (0.0, 0.05, 1.0):
        assert validate_step(step0(sampling=pb.SamplingParams(min_p=fine)), limits(0)) is None


@pytest.mark.parametrize("name", ["presence_penalty", "frequency_penalty"])
@pytest.mark.parametrize("value", [MAX_PENALTY + 0.5, -MAX_PENALTY - 0.5, math.nan, math.inf, -math.inf])
def test_presence_and_frequency_penalties_are_finite_and_bounded(name: str, value: float) -> None:
    assert refused(step0(sampling=pb.SamplingParams(**{name: value}))) == \
        f"sampling.{name}: expected -{MAX_PENALTY:g} to {MAX_PENALTY:g}, got {value}"
    for fine in (-MAX_PENALTY, -2.0, 0.0, 2.0, MAX_PENALTY):
        assert validate_step(step0(sampling=pb.SamplingParams(**{name: fine})), limits(0)) is None


@pytest.mark.parametrize("value", [-0.5, -math.inf, MAX_REPETITION_PENALTY + 0.5, math.nan, math.inf])
def test_repetition_penalty_is_not_negative_and_bounded(value: float) -> None:
    assert refused(step0(sampling=pb.SamplingParams(repetition_penalty=value))) == \
        f"sampling.repetition_penalty: expected 0 (off) to {MAX_REPETITION_PENALTY:g}, got {value}"
    for fine in (0.0, 1.0, 1.3, MAX_REPETITION_PENALTY):
        assert validate_step(step0(sampling=pb.SamplingParams(repetition_penalty=fine)), limits(0)) is None


def test_a_step_with_every_processor_and_a_grammar_passes_on_every_stage() -> None:
    # context_ids and the constraint travel with the step to the last stage: every stage accepts them.
    sampling = pb.SamplingParams(temperature=0.7, top_p=0.9, top_k=40, min_p=0.05, presence_penalty=0.5,
                                 frequency_penalty=-0.5, repetition_penalty=1.1, logit_bias={0: -MAX_BIAS, 7: 2.5})
    extras = dict(want_token=True, sampling=sampling, context_ids=[1, 2, VOCAB - 1],
                  constraint=pb.Constraint(grammar=GRAMMAR, consumed_ids=[4, 5]))
    assert validate_step(step0(**extras), limits(0)) is None
    assert validate_step(step1(**extras), limits(1)) is None
    assert validate_step(step1(hidden=hidden(1), **extras), limits(2)) is None


def test_the_largest_grammar_and_id_lists_travel_within_the_envelope() -> None:
    # On a later stage the step is its hidden state plus what it carries on; ids of a vocabulary
    # below 2**28 take at most 4 bytes each.
    ids = MAX_CONSUMED_IDS + MAX_CONTEXT_IDS + MAX_STEP_TOKENS  # drafts are fewer than the step's inputs
    assert MAX_CARRIED_BYTES + MAX_GRAMMAR_BYTES + 4 * ids + 5 * 256 < MESSAGE_ENVELOPE_BYTES


def test_context_grammar_and_bias_are_checked_on_every_stage() -> None:
    assert refused(step1(context_ids=[VOCAB]), limits(1)) == f"context_ids: expected ids in [0, {VOCAB}), got {VOCAB}"
    assert refused(step1(constraint=pb.Constraint(grammar=GRAMMAR)), limits(1)) == \
        "constraint: only a step that asks for a token (want_token) carries a grammar"
    assert refused(step1(sampling=pb.SamplingParams(logit_bias={VOCAB: 1.0})), limits(1)) == \
        f"sampling.logit_bias: expected token ids in [0, {VOCAB}), got {VOCAB}"
    assert refused(step1(sampling=pb.SamplingParams(min_p=2.0)), limits(1)) == "sampling.min_p: expected 0 to 1, got 2.0"


# ---- timings and what travels on -------------------------------------------------------------


def test_timings_are_bounded_by_the_stage() -> None:
    at_limit = [pb.StageTiming(stage=i) for i in range(TIMINGS_SLACK)]
    assert validate_step(step0(timings=at_limit), limits(0)) is None
    assert refused(step0(timings=at_limit + [pb.StageTiming()])) == \
        f"timings: expected at most {TIMINGS_SLACK} on stage 0, got {TIMINGS_SLACK + 1}"
    # Stage 0 appends one: stage 1 accepts what stage 0 forwards.
    assert validate_step(step1(timings=at_limit + [pb.StageTiming()]), limits(1)) is None


def test_padding_that_would_travel_on_is_refused() -> None:
    # Unknown fields inside sampling are forwarded to every later stage; they are bounded here.
    padded = pb.SamplingParams.FromString(b"\xfa\x3f" + _varint(MAX_CARRIED_BYTES) + b"p" * MAX_CARRIED_BYTES)
    problem = refused(step0(sampling=padded))
    assert problem.startswith(f"sampling, timings: expected at most {MAX_CARRIED_BYTES} bytes together, got")



def test_the_message_limit_holds_the_largest_legitimate_step() -> None:
    widest = MAX_STEP_TOKENS * MAX_HIDDEN_SIZE * 4
    assert MAX_MESSAGE_BYTES == widest + MESSAGE_ENVELOPE_BYTES
    assert MAX_CARRIED_BYTES + 5 * 256 < MESSAGE_ENVELOPE_BYTES  # sampling, timings, ids and names fit


# ---- cost --------------------------------------------------------------------------------------


# ---- control plane -----------------------------------------------------------------------------


def test_end_session_ids_are_bounded() -> None:
    assert validate_end_session(pb.EndSessionRequest(session_ids=["a", "b"])) is None
    assert validate_end_session(pb.EndSessionRequest()) is None
    too_many = pb.EndSessionRequest(session_ids=["a"] * (MAX_END_SESSION_IDS + 1))
    assert validate_end_session(too_many) == f"session_ids: expected at most {MAX_END_SESSION_IDS} per call, got 1025"
    assert validate_end_session(pb.EndSessionRequest(session_ids=["a", ""])) == \
        "session_ids[1]: expected a non-empty name, got an empty one"
    assert validate_end_session(pb.EndSessionRequest(session_ids=["z" * 129])).startswith("session_ids[0]: expected at most")


def test_kept_and_dropped_prefixes_are_named_and_bounded() -> None:
    keep = pb.KeepPrefix(session_id="a", prefix_id="p1", tokens=12)
    assert validate_end_session(pb.EndSessionRequest(keep=[keep], drop_prefixes=["p0"])) is None
    assert validate_end_session(pb.EndSessionRequest(keep=[pb.KeepPrefix(session_id="a", prefix_id="p1")])) == \
        "keep[0].tokens: expected at least 1, got 0"
    assert validate_end_session(pb.EndSessionRequest(keep=[pb.KeepPrefix(session_id="a", tokens=3)])) == \
        "keep[0].prefix_id: expected a non-empty name, got an empty one"
    assert validate_end_session(pb.EndSessionRequest(drop_prefixes=["\x00"])).startswith("drop_prefixes[0]:")
    many = pb.EndSessionRequest(drop_prefixes=["p"] * (MAX_END_SESSION_IDS + 1))
    assert validate_end_session(many).startswith("keep, drop_prefixes: expected at most")


def test_a_step_starts_from_a_kept_prefix_inside_it() -> None:
    assert validate_step(step0(position=5, prefix_id="p1"), limits(0)) is None
    assert refused(step0(position=0, prefix_id="p1")) == \
        "prefix_id: a session starts from a kept prefix at a position inside it (> 0), not at 0"
    assert refused(step0(position=5, prefix_id="x" * 200)).startswith("prefix_id: expected at most")


def test_results_need_a_bounded_reply_to() -> None:
    assert validate_results_request(pb.ResultsRequest(reply_to="coord-1")) is None
    assert validate_results_request(pb.ResultsRequest()) == "reply_to: expected a non-empty name, got an empty one"
    assert validate_results_request(pb.ResultsRequest(reply_to="r" * 129)).startswith("reply_to: expected at most")


def spec(**fields) -> pb.SliceSpec:
    return pb.SliceSpec(**({"model_path": "/models/m", "layer_start": 0, "layer_end": 4, "num_layers": 8,
                            "stage_index": 0, "num_stages": 2, "next_address": "10.0.0.2:50062"} | fields))


def test_a_good_slice_spec_passes() -> None:
    assert validate_slice_spec(spec()) is None
    assert validate_slice_spec(spec(layer_start=4, layer_end=8, stage_index=1, next_address="")) is None
    assert validate_slice_spec(spec(next_address="[fe80::1%en0]:50061", backend="coreml-ane:context=2048,chunk=64")) is None


@pytest.mark.parametrize("fields, start", [
    ({"model_path": ""}, "model_path: expected a directory path"),
    ({"model_path": "a\0b"}, "model_path: expected a directory path"),
    ({"model_path": "/" * 5000}, "model_path: expected a directory path"),
    ({"layer_start": -1}, "layer_start, layer_end: expected 0 <= start < end, got [-1, 4)"),
    ({"layer_start": 4, "layer_end": 4}, "layer_start, layer_end: expected 0 <= start < end, got [4, 4)"),
    ({"num_layers": -3}, "num_layers: expected >= 0"),
    ({"num_stages": 0}, "num_stages: expected 1 to 256, got 0"),
    ({"stage_index": 2}, "stage_index: expected 0 to 1 (num_stages is 2), got 2"),
    ({"stage_index": -1}, "stage_index: expected 0 to 1"),
    ({"next_address": ""}, "next_address: expected host:port of the next stage (stage 0 of 2), got ''"),
    ({"stage_index": 1, "layer_start": 4, "layer_end": 8}, "next_address: expected none on the last stage"),
    ({"next_address": "nohost"}, "next_address: expected host:port (port 1-65535), got 'nohost'"),
    ({"next_address": "h:0"}, "next_address: expected host:port"),
    ({"next_address": "h:99999"}, "next_address: expected host:port"),
    ({"next_address": ":50061"}, "next_address: expected host:port"),
    ({"next_address": "h:\u0663"}, "next_address: expected host:port"),  # an Arabic-Indic digit
    ({"max_sessions": -1}, "max_sessions: expected 0 (default) to 65536, got -1"),
    ({"kv_budget_bytes": -5}, "kv_budget_bytes: expected >= 0 (0: none), got -5"),
    ({"memory_limit_bytes": -5}, "memory_limit_bytes: expected >= 0"),
    ({"backend": "cuda"}, "backend: expected 'mlx' or 'coreml-ane:context=N,chunk=M', got 'cuda'"),
    ({"backend": "coreml-ane:chunk=9"}, "backend: backend 'coreml-ane:chunk=9' does not say the context length"),
])
def test_malformed_slice_specs(fields: dict, start: str) -> None:
    problem = validate_slice_spec(spec(**fields))
    assert problem and problem.startswith(start), problem


def info(num_layers: int = 8, shard: tuple[int, int] | None = None) -> ModelInfo:
    return ModelInfo(path=Path("/models/m"), model_type="llama", num_layers=num_layers, hidden_size=HIDDEN,
                     vocab_size=VOCAB, tie_word_embeddings=True, max_position_embeddings=CONTEXT, config={},
                     shard_layers=shard)


def test_slice_against_the_model() -> None:
    assert slice_fits_model(spec(), info()) is None
    assert slice_fits_model(spec(num_layers=0), info()) is None  # not given
    assert slice_fits_model(spec(num_layers=9), info()) == \
        "num_layers: the model at /models/m has 8 layers, the spec says 9"
    assert slice_fits_model(spec(layer_end=12, num_layers=0), info()) == \
        "layer_end: expected at most the model's 8 layers, got 12"
    assert slice_fits_model(spec(layer_end=8), info()) == \
        "next_address: only the stage holding the model's last layer may have no next stage"


def test_a_shard_must_hold_the_layers() -> None:
    assert shard_problem(spec(), info()) is None
    assert shard_problem(spec(), info(shard=(0, 4))) is None
    assert shard_problem(spec(layer_start=2, layer_end=6), info(shard=(0, 4))) == \
        "/models/m is a shard of layers [0, 4) and cannot serve [2, 6)"
