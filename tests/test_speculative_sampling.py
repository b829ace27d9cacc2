"""The acceptance rule of node/speculative.py on a five-token vocabulary: whatever the drafts, the
tokens a speculative step emits have the target's distribution (temperature, top-k and top-p
applied), position by position: the first token is distributed as p0, and, given that the first
draft was kept, the second as p1. Checked over many seeded draws against the exact
probabilities (bounds at about five standard errors)."""

from __future__ import annotations

from collections import Counter

import mlx.core as mx
import numpy as np
import pytest

from node.sampling import _filtered_logits
from node.speculative import verify
from proto import boltpipe_pb2 as pb

TRIALS = 2000
LOGITS = mx.array([[2.0, 1.0, 0.5, 0.0, -1.0],
                   [0.0, 1.5, 0.2, 1.0, 0.3],
                   [1.0, 1.0, 1.0, 1.0, 1.0]])


def target(row: int, params: pb.SamplingParams) -> np.ndarray:
    logprobs = LOGITS[row:row + 1] - mx.logsumexp(LOGITS[row:row + 1], axis=-1, keepdims=True)
    return np.array(mx.softmax(_filtered_logits(logprobs, params) / params.temperature, axis=-1))[0]


def draws(drafts: list[int], params: pb.SamplingParams) -> list[list[int]]:
    out = []
    for seed in range(TRIALS):
        tokens, _ = verify(LOGITS, drafts, params, mx.random.key(seed))
        out.append([t.token_id for t in tokens])
    return out


def assert_distributed_as(samples: list[int], p: np.ndarray) -> None:
    n = len(samples)
    counts = Counter(samples)
    for token, probability in enumerate(p):
        bound = 5 * np.sqrt(max(probability * (1 - probability), 1e-4) / n) + 1e-9
        assert abs(counts[token] / n - probability) <= bound, (token, counts[token] / n, probability)


@pytest.mark.parametrize("drafts", [[0, 1], [3, 4], [4, 3]])  # a likely draft, unlikely ones
@pytest.mark.parametrize("params", [pb.SamplingParams(temperature=1.0),
                                    pb.SamplingParams(temperature=0.7, top_k=3),
                                    pb.SamplingParams(temperature=1.3, top_p=0.8)], ids=["t1", "topk", "topp"])
def test_emitted_tokens_have_the_targets_distribution(drafts: list[int], params: pb.SamplingParams) -> None:
    runs = draws(drafts, params)
    assert all(1 <= len(r) <= len(drafts) + 1 for r in runs)
    assert all(r[:-1] == drafts[:len(r) - 1] for r in runs)  # emitted = kept drafts, then one token
    assert_distributed_as([r[0] for r in runs], target(0, params))
    after_kept_first = [r[1] for r in runs if len(r) > 1]
    p0 = target(0, params)
    if p0[drafts[0]] > 0.2:  # enough runs keep the first draft to judge the second position
        assert_distributed_as(after_kept_first, target(1, params))
    # A draft the target never picks (outside top-k / top-p) is never kept.
    if p0[drafts[0]] == 0:
        assert all(r[0] != drafts[0] for r in runs)


def test_greedy_keeps_drafts_while_they_are_the_argmax() -> None:
    greedy = pb.SamplingParams(temperature=0.0)
    assert [t.token_id for t in verify(LOGITS, [0, 1], greedy, None)[0]] == [0, 1, 0]
    assert [t.token_id for t in verify(LOGITS, [0, 3], greedy, None)[0]] == [0, 1]
    assert [t.token_id for t in verify(LOGITS, [2, 1], greedy, None)[0]] == [0]
    tokens = verify(LOGITS[:2], [0], pb.SamplingParams(temperature=0.0, top_logprobs=2), None)[0]
    expected = LOGITS[0] - mx.logsumexp(LOGITS[0])
    assert tokens[0].logprob == pytest.approx(float(expected[0]), abs=1e-6)
    assert [t for t, _ in tokens[1].top] == [1, 3]
