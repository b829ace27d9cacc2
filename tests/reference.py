"""What mlx-lm gives in one process: the reference every distributed result must equal."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import mlx.core as mx
from mlx_lm.generate import generate_step
from mlx_lm.utils import load_model

from cluster.pipeline.tokenizer import PromptTokenizer


@lru_cache(maxsize=2)
def _model(model_dir: Path):
    return load_model(model_dir)[0]


@lru_cache(maxsize=2)
def tokenizer_for(model_dir: Path) -> PromptTokenizer:
    return PromptTokenizer(model_dir)


def reference_ids(model_dir: Path, prompt_ids: list[int], max_tokens: int) -> list[int]:
    """mlx-lm greedy in one process, cut before eos."""
    eos = tokenizer_for(model_dir).eos_token_ids
    out = []
    for token, _ in generate_step(mx.array(prompt_ids), _model(model_dir), max_tokens=max_tokens):
        if token in eos:
            break
        out.append(int(token))
    return out


def reference_text(model_dir: Path, prompt_ids: list[int], max_tokens: int) -> str:
    return tokenizer_for(model_dir).decode(reference_ids(model_dir, prompt_ids, max_tokens))
