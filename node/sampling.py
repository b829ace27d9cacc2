"""Token choice on the last stage: greedy, or temperature with top-k / top-p / min-p, seeded.

Greedy is mlx-lm's rule (argmax of the log-probabilities), so a pipeline's greedy
output equals one mlx-lm process's. Sampling draws from a per-session key chain, so
a seed gives the same tokens however the layers are split.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import mlx.core as mx

from proto import boltpipe_pb2 as pb


@dataclass
class SampledToken:
    token_id: int
    logprob: float
    top: list[tuple[int, float]]


def new_key(params: pb.SamplingParams) -> mx.array:
    seed = params.seed if params.has_seed else int.from_bytes(os.urandom(8), "little")
    key = mx.random.key(seed % (1 << 64))
    mx.eval(key)  # a worker computes on two threads: nothing it keeps may stay lazy (node/session_batches.py)
    return key


def _filtered_logits(logprobs: mx.array, params: pb.SamplingParams) -> mx.array:
    """Log-probabilities with the tokens outside top-k / top-p / min-p set to -inf."""
    vocab = logprobs.shape[-1]
    if 0 < params.top_k < vocab:
        kth = mx.sort(logprobs, axis=-1)[..., vocab - params.top_k]
        logprobs = mx.where(logprobs >= kth[..., None], logprobs, -mx.inf)
    if 0.0 < params.top_p < 1.0:
        order = mx.argsort(-logprobs, axis=-1)
        sorted_lp = mx.take_along_axis(logprobs, order, axis=-1)
        probs = mx.softmax(sorted_lp, axis=-1)
        # Keep a token while the mass before it is below top_p (the top token always stays).
        mass_before = mx.cumsum(probs, axis=-1) - probs
        keep_sorted = mass_before < params.top_p
        keep = mx.zeros_like(keep_sorted)
        keep = mx.put_along_axis(keep, order, keep_sorted, axis=-1)
        logprobs = mx.where(keep, logprobs, -mx.inf)
    if 0.0 < params.min_p < 1.0:
        # Keep a token whose probability is at least min_p times the top token's (mlx-lm's min_p).
        top = mx.max(logprobs, axis=-1, keepdims=True)
        logprobs = mx.where(logprobs >= top + math.log(params.min_p), logprobs, -mx.inf)
    return logprobs


def sample(logits: mx.array, params: pb.SamplingParams, key: mx.array | None) -> tuple[SampledToken, mx.array | None]:
    """logits: (1, vocab) for the last position. Returns the token and the next key."""
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    if params.temperature <= 0.0:
        token = mx.argmax(logprobs, axis=-1)
        next_key = key
    else:
        assert key is not None, "a sampling session always has a key"
        next_key, draw_key = mx.random.split(key)
        filtered = _filtered_logits(logprobs, params)
        token = mx.random.categorical(filtered * (1.0 / params.temperature), key=draw_key)
    chosen = mx.take_along_axis(logprobs, token[:, None], axis=-1)
    top_ids = top_vals = None
    if params.top_logprobs > 0:
        n = min(params.top_logprobs, logprobs.shape[-1])
        top_ids = mx.argsort(-logprobs, axis=-1)[:, :n]
        top_vals = mx.take_along_axis(logprobs, top_ids, axis=-1)
        mx.eval(token, chosen, top_ids, top_vals, *([next_key] if next_key is not None else []))
    else:
        mx.eval(token, chosen, *([next_key] if next_key is not None else []))
    top = list(zip(top_ids[0].tolist(), top_vals[0].tolist())) if top_ids is not None else []
    return SampledToken(int(token.item()), float(chosen.item()), top), next_key
