"""Logit bias, penalties and min-p on the last stage (node/logits_processing.py, node/sampling.py):
equal to mlx-lm's own processors given the same tokens, each row of a speculative step counting
the tokens before its own input, and each parameter doing what its definition says."""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
from mlx_lm.sample_utils import make_logits_processors

from node.logits_processing import has_processors, processed
from node.sampling import _filtered_logits, sample
from proto import boltpipe_pb2 as pb

VOCAB = 64


def logits(rows: int = 1, seed: int = 0) -> mx.array:
    return mx.array(np.random.default_rng(seed).normal(size=(rows, VOCAB)).astype(np.float32))


def test_off_by_default_and_identity() -> None:
    params = pb.SamplingParams(temperature=0.7, repetition_penalty=1.0)
    assert not has_processors(params)
    x = logits()
    assert processed(x, params, [1, 2, 3]) is x


def test_equals_mlx_lm_processors_on_the_same_tokens() -> None:
    context = [3, 5, 5, 9, 3, 3, 12]
    params = pb.SamplingParams(presence_penalty=0.5, frequency_penalty=0.3, repetition_penalty=1.3,
                               logit_bias={7: -100.0, 8: 4.5})
    x = logits()
    ours = processed(x, params, context)
    theirs = x
    for processor in make_logits_processors({7: -100.0, 8: 4.5}, 1.3, len(context), 0.5, len(context), 0.3,
                                            len(context)):
        theirs = processor(mx.array(context), theirs)
    assert np.allclose(np.array(ours), np.array(theirs))


def test_each_speculative_row_counts_the_tokens_before_its_input() -> None:
    context = [4, 4, 6, 10, 11]  # the last two are drafts: row 0 counts [4, 4, 6], row 1 one more
    params = pb.SamplingParams(frequency_penalty=1.0)
    x = logits(3)
    rows = processed(x, params, context)
    for i in range(3):
        alone = processed(x[i:i + 1], params, context[:len(context) - 2 + i])
        assert np.allclose(np.array(rows[i]), np.array(alone[0])), i


def test_each_parameter_does_what_its_definition_says() -> None:
    x = logits()
    top = int(mx.argmax(x).item())
    biased = processed(x, pb.SamplingParams(logit_bias={top: -100.0}), [])
    assert int(mx.argmax(biased).item()) != top  # a bias of -100 removes the greedy token
    repeated = processed(x, pb.SamplingParams(frequency_penalty=2.0), [top] * 3)
    assert math.isclose(float(repeated[0, top]), float(x[0, top]) - 6.0, rel_tol=1e-6)  # 2.0 per occurrence
    present = processed(x, pb.SamplingParams(presence_penalty=2.0), [top] * 3)
    assert math.isclose(float(present[0, top]), float(x[0, top]) - 2.0, rel_tol=1e-6)  # once, however often


def test_min_p_keeps_tokens_near_the_top_only() -> None:
    probs = np.full(VOCAB, 1e-4, dtype=np.float32)
    probs[:3] = [0.5, 0.3, 0.04]
    logprobs = mx.log(mx.array(probs / probs.sum()))[None]
    kept = np.isfinite(np.array(_filtered_logits(logprobs, pb.SamplingParams(min_p=0.1))))[0]
    assert list(np.flatnonzero(kept)) == [0, 1]  # 0.04 < 0.1 x 0.5
    key = mx.random.key(1)
    for _ in range(50):
        token, key = sample(logprobs, pb.SamplingParams(temperature=1.5, min_p=0.1), key)
        assert token.token_id in (0, 1)
