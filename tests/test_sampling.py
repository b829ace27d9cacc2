"""Token choice on the last stage: greedy, temperature with top-k / top-p, seeded key chains."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from node.sampling import SampledToken, new_key, sample
from proto import boltpipe_pb2 as pb


def logits_of(seed: int, vocab: int = 64, scale: float = 3.0) -> mx.array:
    rng = np.random.default_rng(seed)
    return mx.array((rng.standard_normal((1, vocab)) * scale).astype(np.float32))


def log_softmax(logits: mx.array) -> np.ndarray:
    x = np.array(logits, dtype=np.float64)[0]
    x = x - x.max()
    return x - np.log(np.exp(x).sum())


def params(**kw) -> pb.SamplingParams:
    return pb.SamplingParams(**kw)


def draw_sequence(logits: mx.array, p: pb.SamplingParams, n: int) -> list[int]:
    key = new_key(p)
    out = []
    for _ in range(n):
        tok, key = sample(logits, p, key)
        out.append(tok.token_id)
    return out


# --- greedy -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
def test_greedy_is_argmax(seed: int) -> None:
    logits = logits_of(seed, vocab=1000)
    tok, key = sample(logits, params(temperature=0.0), None)
    assert isinstance(tok, SampledToken)
    assert tok.token_id == int(np.argmax(np.array(logits)[0]))
    assert key is None  # greedy needs no key and does not invent one


def test_greedy_leaves_an_existing_key_untouched() -> None:
    key = mx.random.key(3)
    _, next_key = sample(logits_of(0), params(temperature=0.0, top_k=5, top_p=0.5), key)
    assert next_key is key


def test_greedy_ignores_top_k_and_top_p() -> None:
    logits = logits_of(11, vocab=200)
    plain, _ = sample(logits, params(), None)
    filtered, _ = sample(logits, params(top_k=3, top_p=0.2), None)
    assert plain.token_id == filtered.token_id == int(np.argmax(np.array(logits)[0]))


# --- log-probabilities -------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.5])
def test_logprob_is_log_softmax_at_the_chosen_id(temperature: float) -> None:
    logits = logits_of(4, vocab=300)
    ref = log_softmax(logits)
    key = mx.random.key(1)
    for _ in range(10):
        tok, key = sample(logits, params(temperature=temperature, top_k=20), key)
        assert tok.logprob == pytest.approx(ref[tok.token_id], abs=1e-4)
        assert tok.logprob <= 0.0


def test_logprob_is_of_the_unscaled_distribution() -> None:
    # Temperature reshapes the draw, not the reported probability.
    logits = mx.array([[2.0, 1.0, 0.0]])
    tok, _ = sample(logits, params(temperature=0.01, top_k=1), mx.random.key(0))
    assert tok.token_id == 0
    assert tok.logprob == pytest.approx(log_softmax(logits)[0], abs=1e-5)
    assert tok.logprob < -0.3  # log(0.665); a temperature-scaled value would be ~0


@pytest.mark.parametrize("n", [1, 5, 20])
def test_top_logprobs_sorted_descending_with_requested_length(n: int) -> None:
    logits = logits_of(9, vocab=500)
    ref = log_softmax(logits)
    tok, _ = sample(logits, params(temperature=0.0, top_logprobs=n), None)
    assert len(tok.top) == n
    ids = [i for i, _ in tok.top]
    vals = [v for _, v in tok.top]
    assert vals == sorted(vals, reverse=True)
    assert ids == list(np.argsort(-ref)[:n])
    for i, v in tok.top:
        assert v == pytest.approx(ref[i], abs=1e-4)
    assert tok.top[0][0] == tok.token_id  # greedy: the chosen token is the best alternative


def test_top_logprobs_off_and_clipped_to_vocab() -> None:
    logits = logits_of(2, vocab=6)
    assert sample(logits, params(), None)[0].top == []
    tok, _ = sample(logits, params(top_logprobs=50), None)
    assert len(tok.top) == 6
    assert sorted(i for i, _ in tok.top) == list(range(6))


def test_top_logprobs_with_sampling_include_the_unfiltered_distribution() -> None:
    logits = logits_of(3, vocab=100)
    tok, _ = sample(logits, params(temperature=1.0, top_k=1, top_logprobs=4), mx.random.key(0))
    assert len(tok.top) == 4  # top_k filters the draw, not the reported alternatives
    assert tok.token_id == tok.top[0][0]


# --- filters -------------------------------------------------------------------------------------------


def test_top_k_1_always_returns_argmax() -> None:
    logits = logits_of(21, vocab=50, scale=0.3)  # flat: without the filter many ids would come up
    best = int(np.argmax(np.array(logits)[0]))
    p = params(temperature=2.0, top_k=1, has_seed=True, seed=5)
    assert set(draw_sequence(logits, p, 40)) == {best}


@pytest.mark.parametrize("top_p", [1e-6, 0.01])
def test_tiny_top_p_returns_argmax(top_p: float) -> None:
    logits = logits_of(22, vocab=50, scale=0.3)
    best = int(np.argmax(np.array(logits)[0]))
    p = params(temperature=1.5, top_p=top_p, has_seed=True, seed=9)
    assert set(draw_sequence(logits, p, 40)) == {best}


def test_samples_stay_inside_the_top_k_set() -> None:
    logits = logits_of(23, vocab=80, scale=0.5)
    top5 = set(np.argsort(-np.array(logits)[0])[:5].tolist())
    p = params(temperature=3.0, top_k=5, has_seed=True, seed=1)
    drawn = draw_sequence(logits, p, 150)
    assert set(drawn) <= top5
    assert len(set(drawn)) >= 3, "the draw really samples among the k"


def test_samples_stay_inside_the_nucleus() -> None:
    logits = logits_of(24, vocab=80, scale=1.0)
    probs = np.exp(log_softmax(logits))
    order = np.argsort(-probs)
    mass_before = np.cumsum(probs[order]) - probs[order]
    nucleus = set(order[mass_before < 0.5].tolist())
    assert 2 <= len(nucleus) < 40
    drawn = draw_sequence(logits, params(temperature=1.0, top_p=0.5, has_seed=True, seed=2), 150)
    assert set(drawn) <= nucleus
    assert len(set(drawn)) >= 2


def test_top_k_and_top_p_together_keep_the_intersection() -> None:
    logits = mx.array([[5.0, 4.9, 4.8, 4.7, -10.0, -10.0]])
    drawn = draw_sequence(logits, params(temperature=1.0, top_k=2, top_p=0.99, has_seed=True, seed=3), 100)
    assert set(drawn) == {0, 1}


def test_unfiltered_sampling_follows_the_probabilities() -> None:
    logits = mx.array([[np.log(0.8), np.log(0.2)]], dtype=mx.float32)
    drawn = draw_sequence(logits, params(temperature=1.0, has_seed=True, seed=123), 600)
    share = drawn.count(0) / len(drawn)
    assert 0.72 < share < 0.88


# --- seeds and key chains ------------------------------------------------------------------------------


def test_same_seed_same_sequence_and_different_seed_different_sequence() -> None:
    logits = logits_of(30, vocab=40, scale=0.2)  # flat-ish
    a = draw_sequence(logits, params(temperature=1.0, has_seed=True, seed=42), 30)
    b = draw_sequence(logits, params(temperature=1.0, has_seed=True, seed=42), 30)
    c = draw_sequence(logits, params(temperature=1.0, has_seed=True, seed=43), 30)
    assert a == b
    assert a != c
    assert len(set(a)) > 5, "a flat distribution gives varied tokens"


def test_the_key_advances_each_draw() -> None:
    logits = logits_of(31, vocab=40, scale=0.2)
    p = params(temperature=1.0)
    key = mx.random.key(7)
    tok1, key2 = sample(logits, p, key)
    again, key2_again = sample(logits, p, key)
    assert again.token_id == tok1.token_id, "one key, one draw"
    assert np.array_equal(np.array(key2), np.array(key2_again))
    assert not np.array_equal(np.array(key2), np.array(key))


def test_new_key_from_seed() -> None:
    k = new_key(params(has_seed=True, seed=42))
    assert np.array_equal(np.array(k), np.array(mx.random.key(42)))
    big = new_key(params(has_seed=True, seed=(1 << 64) - 1))
    assert np.array_equal(np.array(big), np.array(mx.random.key((1 << 64) - 1)))


def test_new_key_without_seed_is_random() -> None:
    keys = {tuple(np.array(new_key(params())).tolist()) for _ in range(5)}
    assert len(keys) == 5
    # A seed field without has_seed is not a seed: two such keys still differ.
    unseeded = [np.array(new_key(params(seed=0))) for _ in range(2)]
    assert not np.array_equal(unseeded[0], unseeded[1])


def test_temperature_sharpens_and_flattens_the_draw() -> None:
    logits = mx.array([[np.log(0.8), np.log(0.2)]], dtype=mx.float32)
    cold = draw_sequence(logits, params(temperature=0.05, has_seed=True, seed=8), 200)
    assert cold.count(0) == 200  # 0.8^20 : 0.2^20, the second id is practically never drawn
    hot = draw_sequence(logits, params(temperature=4.0, has_seed=True, seed=8), 600)
    share = hot.count(0) / len(hot)
    assert 0.5 < share < 0.67  # 0.8^0.25 / (0.8^0.25 + 0.2^0.25) = 0.586
