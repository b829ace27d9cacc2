"""The last stage's half of speculative decoding: which drafted tokens to keep.

A speculative step runs the last accepted token and k drafted ones; its logits at position i say
what follows input i. Greedy: a draft is kept while it is the argmax, so the tokens are those of
one-token-at-a-time greedy decoding. Sampling: the drafters here propose one token, not a
distribution (prompt lookup, or a draft model's greedy choice), so q is one-hot and the standard
rule (keep with probability min(1, p/q), else draw from the residual max(0, p - q)) becomes: keep
draft d with probability p(d), else draw from p without d. Either way the output has the target's
distribution. After the last kept draft one more token is chosen from its logits, so every step
gives at least one token.
"""

from __future__ import annotations

import mlx.core as mx

from node.sampling import SampledToken, _filtered_logits
from proto import boltpipe_pb2 as pb


def verify(logits: mx.array, drafts: list[int], params: pb.SamplingParams,
           key: mx.array | None) -> tuple[list[SampledToken], mx.array | None]:
    """logits: (k + 1, vocab), row i for what follows the step's input i (the last accepted token,
    then the k drafts). Returns the kept drafts and the token after them, and the next key."""
    k = len(drafts)
    if logits.shape[0] != k + 1:
        raise ValueError(f"{k} drafts need {k + 1} rows of logits, got {logits.shape[0]}")
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    if params.temperature <= 0.0:
        choices = mx.argmax(logprobs, axis=-1).tolist()
        kept = 0
        while kept < k and choices[kept] == drafts[kept]:
            kept += 1
        chosen = choices[:kept + 1]
    else:
        chosen, key = _sampled(logprobs, drafts, params, key)
    return _described(logprobs, chosen, params.top_logprobs), key


def _sampled(logprobs: mx.array, drafts: list[int], params: pb.SamplingParams,
             key: mx.array) -> tuple[list[int], mx.array]:
    assert key is not None, "a sampling session always has a key"
    probs = mx.softmax(_filtered_logits(logprobs, params) * (1.0 / params.temperature), axis=-1)
    key, accept_key = mx.random.split(key)
    draws = mx.random.uniform(shape=(len(drafts),), key=accept_key)
    p_draft = probs[mx.arange(len(drafts)), mx.array(drafts, dtype=mx.int32)] if drafts else mx.zeros((0,))
    mx.eval(draws, p_draft)
    chosen: list[int] = []
    for i, (u, p) in enumerate(zip(draws.tolist(), p_draft.tolist())):
        if u < p:
            chosen.append(drafts[i])
            continue
        residual = probs[i] * (mx.arange(probs.shape[-1]) != drafts[i])  # (p - one-hot)+, unnormalised
        key, draw_key = mx.random.split(key)
        chosen.append(int(mx.random.categorical(mx.log(residual), key=draw_key).item()))
        break
    else:
        key, draw_key = mx.random.split(key)
        chosen.append(int(mx.random.categorical(mx.log(probs[len(drafts)]), key=draw_key).item()))
    mx.eval(key)  # kept by the session across threads (node/session_batches.py)
    return chosen, key


def _described(logprobs: mx.array, chosen: list[int], top_logprobs: int) -> list[SampledToken]:
    rows = mx.arange(len(chosen))
    picked = logprobs[rows, mx.array(chosen, dtype=mx.int32)].tolist()
    tops: list[list[tuple[int, float]]] = [[] for _ in chosen]
    if top_logprobs > 0:
        n = min(top_logprobs, logprobs.shape[-1])
        ids = mx.argsort(-logprobs[:len(chosen)], axis=-1)[:, :n]
        vals = mx.take_along_axis(logprobs[:len(chosen)], ids, axis=-1)
        tops = [list(zip(i, v)) for i, v in zip(ids.tolist(), vals.tolist())]
    return [SampledToken(t, lp, top) for t, lp, top in zip(chosen, picked, tops)]
