"""One pipeline stage of a decoder-only model: a contiguous slice of its layers.

The blocks, caches and masks are mlx-lm's own; this module only decides which of
them a stage holds and runs them in the same order as mlx-lm's forward pass, so a
stage chain computes exactly what one process computes.
"""

from __future__ import annotations

import json
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
from node.model_sizes import ModelSizeError, read_safetensors_header

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

    def __init__(self, full_model: nn.Module, layers: LayerRange, num_layers: int, *, keep_layers: bool = True):
        super().__init__()
        inner = full_model.model
        self.is_first = layers.start == 0
        self.is_last = layers.end == num_layers
        self.layer_range = layers
        self.tied = bool(getattr(full_model.args, "tie_word_embeddings", False))
        self.sliding_window = getattr(inner, "sliding_window", None)
        if self.is_first or (self.is_last and self.tied):
            self.embed_tokens = inner.embed_tokens
        # Without keep_layers another backend (Core ML) runs the layers; only the ends stay in MLX.
        self.layers = inner.layers[layers.start : layers.end] if keep_layers else []
        if self.is_last:
            self.norm = inner.norm
            if not self.tied:
                self.lm_head = full_model.lm_head

    def checkpoint_name(self, param: str) -> str:
        """The name a weight file gives this stage's parameter `param`: local layer k is the
        model's layer start + k, and the embedding and norm sit under the inner `model.`."""
        part, _, rest = param.partition(".")
        if part == "layers":
            index, _, tail = rest.partition(".")
            return f"model.layers.{self.layer_range.start + int(index)}.{tail}"
        if part in ("embed_tokens", "norm"):
            return f"model.{param}"
        return param

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


def load_stage(model_path: str | Path, layers: LayerRange, progress: ProgressFn | None = None, *,
               keep_layers: bool = True) -> StageModel:
    """Build the model lazily with mlx-lm, keep only this stage's modules and read
    only their weights: weights of other layers are never evaluated, so they never
    reach memory.

    `model_path` is a full model directory, a shard (deploy/shards.py) whose layers
    include `layers`, or a partial download (deploy/hf_fetch.py: the index names files
    that are absent). Those lack other layers' tensors, so mlx-lm loads them
    non-strictly; the stage then checks itself that every weight it keeps came from
    the files (the rest stay lazily random-initialised and are dropped unevaluated)."""
    info = read_model_info(model_path)
    if layers.end > info.num_layers:
        raise ModelDirError(
            f"layer range [{layers.start}, {layers.end}) is outside the model's {info.num_layers} layers"
        )
    if info.shard_layers is not None:
        start, end = info.shard_layers
        if not start <= layers.start < layers.end <= end:
            raise ModelDirError(
                f"{info.path} is a shard holding layers [{start}, {end}) of {info.num_layers}, which does not "
                f"cover the requested layers [{layers.start}, {layers.end}); cut a shard for that range or "
                "point the worker at the full model directory"
            )
    progress = progress or (lambda *_: None)
    progress("config", 0, 1)
    partial = info.is_shard or _is_partial_download(info.path)
    full_model, _config = load_model(info.path, lazy=True, strict=not partial)
    stage = StageModel(full_model, layers, info.num_layers, keep_layers=keep_layers)
    del full_model
    params = tree_flatten(stage.parameters())
    if partial:
        _check_has_weights(info.path, stage, [name for name, _ in params], shard=info.is_shard)
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


def _is_partial_download(path: Path) -> bool:
    """A directory whose weight index names files it does not hold: some weights were
    deliberately not downloaded. (A damaged index is left to mlx-lm's strict load to report.)"""
    index = path / "model.safetensors.index.json"
    if not index.is_file():
        return False
    try:
        names = set(json.loads(index.read_text())["weight_map"].values())
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
        return False
    return any(not (path / name).is_file() for name in names)


def _check_has_weights(path: Path, stage: StageModel, params: list[str], *, shard: bool) -> None:
    """mlx-lm's non-strict load keeps random initial values for whatever the files lack;
    refuse that rather than serve noise. Reads only the weight files' headers."""
    present: set[str] = set()
    for weights in sorted(path.glob("model*.safetensors")):
        try:
            present.update(read_safetensors_header(weights).tensors)
        except ModelSizeError as exc:
            raise ModelDirError(f"{path}: {exc}") from exc
    missing = [stage.checkpoint_name(p) for p in params if stage.checkpoint_name(p) not in present]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        what, fix = (("shard", "the shard is damaged or was cut from another model: cut it again") if shard else
                     ("partial model directory", "download the weight files its index names for these layers"))
        raise ModelDirError(
            f"{what} {path} lacks {len(missing)} tensor(s) that layers [{stage.layer_range.start}, "
            f"{stage.layer_range.end}) need: {shown}; {fix}"
        )
