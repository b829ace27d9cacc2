"""What happens to the last stage's logits before a token is chosen: logit bias and the three
penalties (mlx-lm's own logits processors, so the numbers equal one mlx-lm process given the same
tokens), then the grammar's mask (node/grammar.py) when the session is constrained.

The penalties count the tokens a step carries in `context_ids` (the coordinator sends the latest
ones, prompt included, as mlx-lm counts them), so nothing about them lives on the worker and a
replayed or speculative step needs no state: row i of a step with k drafts counts the context
without the last k - i ids.
"""

from __future__ import annotations

from typing import Sequence

import mlx.core as mx
from mlx_lm.sample_utils import make_logits_processors

from proto import boltpipe_pb2 as pb

# The coordinator decides how many tokens are counted; here every id sent counts.
_ALL = 1 << 30


def has_processors(params: pb.SamplingParams) -> bool:
    return bool(params.logit_bias) or bool(params.presence_penalty) or bool(params.frequency_penalty) or (
        params.repetition_penalty not in (0.0, 1.0))


def processors(params: pb.SamplingParams) -> list:
    return make_logits_processors(
        logit_bias=dict(params.logit_bias) or None,
        repetition_penalty=params.repetition_penalty if params.repetition_penalty not in (0.0, 1.0) else None,
        repetition_context_size=_ALL,
        presence_penalty=params.presence_penalty or None,
        presence_context_size=_ALL,
        frequency_penalty=params.frequency_penalty or None,
        frequency_context_size=_ALL,
    )


def processed(logits: mx.array, params: pb.SamplingParams, context_ids: Sequence[int]) -> mx.array:
    """logits: (rows, vocab), row i for what follows the step's input i; the context of the last row
    is all of `context_ids`, each earlier row's one id shorter."""
    if not has_processors(params):
        return logits
    chain = processors(params)
    rows = logits.shape[0]
    out = []
    for i in range(rows):
        row = logits[i:i + 1]
        end = len(context_ids) - (rows - 1 - i)
        tokens = mx.array(list(context_ids[:max(0, end)]), dtype=mx.int32)
        for processor in chain:
            row = processor(tokens, row)
        out.append(row)
    return out[0] if rows == 1 else mx.concatenate(out, axis=0)
