"""What mlx-lm gives in one process: the reference every distributed result must equal. It runs on
the BLAS the workers use (tests/worker_blas.py, loaded by conftest.py before MLX).

Greedy generation is computed once per prompt in a test run: a shorter request for the same
prompt is a prefix of a longer one (each token depends only on those before it), so the longest
run so far answers every request it covers."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import mlx.core as mx
from mlx_lm.generate import generate_step
from mlx_lm.utils import load_model

from cluster.pipeline.tokenizer import PromptTokenizer

# (model directory, prompt ids) -> the greedy tokens generated so far, in order
_greedy_runs: dict[tuple[Path, tuple[int, ...]], list[int]] = {}


@lru_cache(maxsize=2)
def _model(model_dir: Path):
    return load_model(model_dir)[0]


@lru_cache(maxsize=2)
def tokenizer_for(model_dir: Path) -> PromptTokenizer:
    return PromptTokenizer(model_dir)


def _generate(model_dir: Path, prompt_ids: list[int], max_tokens: int, *, stop_at_eos: bool) -> list[int]:
    key = (Path(model_dir), tuple(prompt_ids))
    known = _greedy_runs.get(key, [])
    eos = tokenizer_for(key[0]).eos_token_ids
    if len(known) >= max_tokens or (stop_at_eos and any(t in eos for t in known)):
        return known
    known = []
    for token, _ in generate_step(mx.array(prompt_ids), _model(key[0]), max_tokens=max_tokens):
        known.append(int(token))
        if stop_at_eos and known[-1] in eos:
            break
    _greedy_runs[key] = known
    return known


def greedy_tokens(model_dir: Path, prompt_ids: list[int], max_tokens: int) -> list[int]:
    """mlx-lm's own generation loop, greedy, `max_tokens` tokens whatever they are (eos too)."""
    return _generate(model_dir, prompt_ids, max_tokens, stop_at_eos=False)[:max_tokens]


def reference_ids(model_dir: Path, prompt_ids: list[int], max_tokens: int) -> list[int]:
    """mlx-lm greedy in one process, cut before eos."""
    eos = tokenizer_for(model_dir).eos_token_ids
    out = []
    for token in _generate(model_dir, prompt_ids, max_tokens, stop_at_eos=True)[:max_tokens]:
        if token in eos:
            break
        out.append(token)
    return out


def reference_text(model_dir: Path, prompt_ids: list[int], max_tokens: int) -> str:
    return tokenizer_for(model_dir).decode(reference_ids(model_dir, prompt_ids, max_tokens))


def greedy_steps(model_dir: Path, prompt_ids: list[int], max_tokens: int) -> list[tuple[int, float]]:
    """mlx-lm greedy, each token with its logprob as mlx-lm computes it (not cached)."""
    steps = []
    for token, logprobs in generate_step(mx.array(prompt_ids), _model(Path(model_dir)), max_tokens=max_tokens):
        steps.append((int(token), logprobs[int(token)].item()))
    return steps


def processed_greedy_text(model_dir: Path, prompt_ids: list[int], max_tokens: int, processors: list) -> str:
    """mlx-lm greedy with its logits processors (bias, penalties), cut before eos, as text."""
    eos = tokenizer_for(model_dir).eos_token_ids
    out = []
    for token, _ in generate_step(mx.array(prompt_ids), _model(Path(model_dir)), max_tokens=max_tokens,
                                  logits_processors=processors):
        if int(token) in eos:
            break
        out.append(int(token))
    return tokenizer_for(model_dir).decode(out)
