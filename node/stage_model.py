"""One pipeline stage of a decoder-only model: a contiguous slice of its layers.

The blocks, caches and masks are mlx-lm's own; this module only decides which of
them a stage holds and runs them in the same order as mlx-lm's forward pass, so a
stage chain computes exactly what one process computes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten
from mlx_lm.models.base import create_attention_mask
from mlx_lm.models.cache import KVCache, RotatingKVCache
from mlx_lm.utils import load_model

from node.model_config import ModelDirError, read_model_info

ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class LayerRange:
    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ValueError(f"invalid layer range [{self.start}, {self.end})")


class StageModel(nn.Module):
    """Layers [start, end) plus the embedding on the first stage and the final norm
    and head on the last (a tied head reuses the embedding, so the last stage keeps
    it too)."""

    def __init__(self, full_model: nn.Module, layers: LayerRange, num_layers: int):
        super().__init__()
        inner = full_model.model
        self.is_first = layers.start == 0
        self.is_last = layers.end == num_layers
        self.layer_range = layers
        self.tied = bool(getattr(full_model.args, "tie_word_embeddings", False))
        self.sliding_window = getattr(inner, "sliding_window", None)
        if self.is_first or (self.is_last and self.tied):
            self.embed_tokens = inner.embed_tokens
        self.layers = inner.layers[layers.start : layers.end]
        if self.is_last:
            self.norm = inner.norm
            if not self.tied:
                self.lm_head = full_model.lm_head

    def make_cache(self) -> list:
        return [
            RotatingKVCache(max_size=self.sliding_window) if getattr(layer, "use_sliding", False) else KVCache()
            for layer in self.layers
        ]

    def embed(self, token_ids: mx.array) -> mx.array:
        return self.embed_tokens(token_ids)

    def run_layers(self, h: mx.array, cache: list) -> mx.array:
        """The model's own mask rules: one full-attention mask, and a windowed one
        for layers that use sliding attention."""
        full_mask = create_attention_mask(h, cache[0])
        window_mask = None
        for layer, layer_cache in zip(self.layers, cache):
            if getattr(layer, "use_sliding", False):
                if window_mask is None:
                    window_mask = create_attention_mask(h, layer_cache, window_size=self.sliding_window)
                h = layer(h, window_mask, cache=layer_cache)
            else:
                h = layer(h, full_mask, cache=layer_cache)
        return h

    def head(self, h: mx.array) -> mx.array:
        h = self.norm(h)
        if self.tied:
            return self.embed_tokens.as_linear(h)
        return self.lm_head(h)


def slice_weight_bytes(stage: StageModel) -> int:
    return sum(v.nbytes for _, v in tree_flatten(stage.parameters()))


def load_stage(model_path: str | Path, layers: LayerRange, progress: ProgressFn | None = None) -> StageModel:
    """Build the model lazily with mlx-lm, keep only this stage's modules and read
    only their weights: weights of other layers are never evaluated, so they never
    reach memory."""
    info = read_model_info(model_path)
    if layers.end > info.num_layers:
        raise ModelDirError(
            f"layer range [{layers.start}, {layers.end}) is outside the model's {info.num_layers} layers"
        )
    progress = progress or (lambda *_: None)
    progress("config", 0, 1)
    full_model, _config = load_model(info.path, lazy=True)
    stage = StageModel(full_model, layers, info.num_layers)
    del full_model
    params = tree_flatten(stage.parameters())
    total = sum(v.nbytes for _, v in params)
    done = 0
    progress("weights", 0, total)
    # Evaluate layer by layer so the progress is real and peak memory stays at the slice.
    for _name, value in params:
        mx.eval(value)
        done += value.nbytes
        progress("weights", done, total)
    stage.eval()
    return stage
