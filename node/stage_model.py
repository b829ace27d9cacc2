"""One pipeline stage of a decoder-only model: a contiguous slice of its layers, for any family.

The blocks, caches and mask rules are mlx-lm's own, and so is everything around the layers: each
step first runs the model's own forward with every layer replaced by a stand-in that records how
the forward calls it (the mask, the cache, any other argument, chosen by the family's own code,
which may index caches by global layer number or pick masks by layer type) and hands its input on
unchanged. The stage then calls its real layers with those arguments. The first stage takes its
input from the stand-in of layer 0 (the family's own embedding, scaling included); the last stage
gets its logits from the model's own forward with the layers replaced by one that returns the
stage's hidden state (the family's own final norm, head, soft-capping or logit scale). Nothing
here is written per architecture; node/architectures.py lists the families the tests check.

Caches of the layers outside the stage are stand-ins that know the session's position, so masks
the forward builds from another layer's cache are right here too.

Batched decode (one token for each of several sessions) runs the same way with mlx-lm's batched
caches (BatchKVCache and friends, merged by node/session_batches.py): a layer outside the stage
stands in with the stage's own batched cache of the same kind, whose per-row offsets and left
padding give the mask the family's forward builds from it; a kind the stage holds none of gets an
empty batched cache (its mask only serves layers elsewhere).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten
from mlx_lm.models.cache import make_prompt_cache
from mlx_lm.utils import _get_classes, load_model

from node.architectures import batch_problem as family_batch_problem
from node.model_config import ModelDirError, read_model_info
from node.tensor_names import EMBEDDING, HEAD, LAYER, tensor_role

ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class LayerRange:
    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ValueError(f"invalid layer range [{self.start}, {self.end})")


class _Stopped(Exception):
    """Raised by the last stand-in the stage needs: the rest of the model's forward is not run."""


class _StandIn:
    """Layer `index` during a recording pass. Attributes the model's loop reads (use_sliding,
    is_linear, ...) come from the real layer; calling it records the call and returns its input."""

    def __init__(self, real: nn.Module, index: int, book: dict, stop_at: int):
        self._real, self._index, self._book, self._stop_at = real, index, book, stop_at

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def __call__(self, x, *args, **kwargs):
        self._book[self._index] = (x, args, kwargs)
        if self._index == self._stop_at:
            raise _Stopped
        return x


class _Returns(_StandIn):
    """The one layer of the head pass: whatever it is given, it returns the stage's hidden state."""

    def __init__(self, real: nn.Module, h: mx.array):
        super().__init__(real, -1, {}, -2)
        self._h = h

    def __call__(self, x, *args, **kwargs):
        return self._h


class _NoEmbedding(nn.Module):
    """Stands in for the embedding on stages that hold none: the recording pass needs an input of
    the right shape and dtype, never its values (they are not evaluated)."""

    def __init__(self, dims: int):
        super().__init__()
        self._dims = dims
        self.dtype = mx.float32

    def __call__(self, ids: mx.array) -> mx.array:
        return mx.zeros((*ids.shape, self._dims), dtype=self.dtype)


def _inner_model(full_model: nn.Module) -> nn.Module:
    """The module that owns the decoder's layer list (model.model, or language_model.model)."""
    first = full_model.layers[0]
    for _, module in full_model.named_modules():
        layers = dict.get(module, "layers")  # stored on the module itself, not a property that forwards
        if isinstance(layers, list) and layers and layers[0] is first:
            return module
    raise ModelDirError(f"{type(full_model).__module__}: no module holds the model's layers")


class StageModel:
    """Layers [start, end) of `full_model`, plus the embedding on the first stage and the final norm
    and head on the last (a tied head reuses the embedding, so the last stage keeps it too).

    `full_model` is built lazily: only the parameters this stage keeps are ever evaluated."""

    def __init__(self, full_model: nn.Module, layers: LayerRange, num_layers: int, *, keep_layers: bool = True):
        self.layer_range = layers
        self.is_first = layers.start == 0
        self.is_last = layers.end == num_layers
        self._full = full_model
        self._inner = _inner_model(full_model)
        self._all_layers = list(self._inner.layers)
        if len(self._all_layers) != num_layers:
            raise ModelDirError(f"the model has {len(self._all_layers)} layers, its config says {num_layers}")
        # Without keep_layers another backend (Core ML) runs the layers; only the ends stay in MLX.
        self.layers = self._all_layers[layers.start:layers.end] if keep_layers else []
        named = tree_flatten(full_model.parameters())
        self.tied = not any(tensor_role(name).part == HEAD for name, _ in named)
        holds_embedding = self.is_first or (self.is_last and self.tied)
        self.params = [(name, value) for name, value in named
                       if self._keeps(tensor_role(name), holds_embedding, keep_layers)]
        if not holds_embedding and isinstance(getattr(self._inner, "embed_tokens", None), nn.Module):
            self._inner.embed_tokens = _NoEmbedding(int(self._hidden_size()))
        self._outside = make_prompt_cache(full_model)  # stand-in caches of the other layers
        kinds = [_cache_kind(c) for c in self._outside]
        # For batched steps: a stage layer whose cache can stand in for layer i's (same kind).
        self._twin = {i: i if layers.start <= i < layers.end else
                      next((j for j in range(layers.start, layers.end) if kinds[j] == kind), None)
                      for i, kind in enumerate(kinds)}
        self.batch_problem = _batch_problem(self._outside)

    def _hidden_size(self) -> int:
        args = getattr(self._inner, "args", None) or getattr(self._full, "args", None)
        size = getattr(args, "hidden_size", None)
        if size is None:
            size = self._inner.embed_tokens.weight.shape[-1]
        return size

    def _keeps(self, role, holds_embedding: bool, keep_layers: bool) -> bool:
        if role.part == LAYER:
            return keep_layers and self.layer_range.start <= role.layer < self.layer_range.end
        if role.part == EMBEDDING:
            return holds_embedding
        return self.is_last  # final norm, head and anything else around the layers

    def parameters(self) -> dict:
        """What the stage holds, as mlx-lm names it (the model's own parameter tree, pruned)."""
        return tree_unflatten(self.params)

    def make_cache(self) -> list:
        return make_prompt_cache(self._full)[self.layer_range.start:self.layer_range.end]

    # -- the model's own forward, recorded ------------------------------------------------------

    def _caches(self, cache: list | None, position: int) -> list:
        start, end = self.layer_range.start, self.layer_range.end
        out = []
        for i, stand_in in enumerate(self._outside):
            if cache is not None and start <= i < end:
                out.append(cache[i - start])
                continue
            if hasattr(stand_in, "offset"):
                try:
                    stand_in.offset = position
                except AttributeError:
                    pass
            out.append(stand_in)
        return out

    def _forward(self, ids: mx.array, layers: list, caches: list) -> None:
        real = self._inner.layers
        self._inner.layers = layers
        try:
            self._full(ids, cache=caches)
        except _Stopped:
            pass
        finally:
            self._inner.layers = real

    def _batch_caches(self, cache: list, rows: int) -> list:
        start, fresh = self.layer_range.start, None
        out = []
        for i, twin in self._twin.items():  # a stage layer is its own twin
            if twin is not None:
                out.append(cache[twin - start])
                continue
            # An empty batched cache of the kind: its mask serves no layer of this stage.
            fresh = fresh or make_prompt_cache(self._full)
            out.append(fresh[i].merge([fresh[i]] * rows))
        return out

    def _record(self, ids: mx.array, cache: list | None, position: int, stop_at: int, *,
                batched: bool = False) -> dict:
        book: dict = {}
        caches = self._batch_caches(cache, ids.shape[0]) if batched else self._caches(cache, position)
        self._forward(ids, [_StandIn(layer, i, book, stop_at) for i, layer in enumerate(self._all_layers)], caches)
        return book

    def _set_input_dtype(self, dtype) -> None:
        if isinstance(self._inner.embed_tokens, _NoEmbedding):
            self._inner.embed_tokens.dtype = dtype

    # -- the interface the StageRunner drives -------------------------------------------------------

    def embed(self, token_ids: mx.array, position: int = 0) -> mx.array:
        """The family's own input to layer 0 (embedding, and any scaling it applies)."""
        x, _, _ = self._record(token_ids, None, position, stop_at=0)[0]
        return x

    def run_layers(self, h: mx.array, cache: list, position: int) -> mx.array:
        """This stage's layers over `h`, for a session whose next position is `position`."""
        start, end = self.layer_range.start, self.layer_range.end
        self._set_input_dtype(h.dtype)
        book = self._record(mx.zeros(h.shape[:2], dtype=mx.int32), cache, position, stop_at=end - 1)
        return self._run_recorded(h, book)

    def run_layers_batched(self, h: mx.array, cache: list) -> mx.array:
        """This stage's layers over `h` (rows, 1, hidden): one token of each session of a batch, whose
        merged caches (one per stage layer) know every row's position."""
        self._set_input_dtype(h.dtype)
        book = self._record(mx.zeros(h.shape[:2], dtype=mx.int32), cache, 0, stop_at=self.layer_range.end - 1,
                            batched=True)
        return self._run_recorded(h, book)

    def _run_recorded(self, h: mx.array, book: dict) -> mx.array:
        for i, layer in enumerate(self.layers, self.layer_range.start):
            _, args, kwargs = book[i]
            h = layer(h, *args, **kwargs)
        return h

    def head(self, h: mx.array) -> mx.array:
        """Logits of `h` (the last layer's output) through the family's own norm and head."""
        self._set_input_dtype(h.dtype)
        caches = self._caches(None, 0)
        real = self._inner.layers
        self._inner.layers = [_Returns(self._all_layers[-1], h)]
        try:
            return self._full(mx.zeros(h.shape[:2], dtype=mx.int32), cache=caches)
        finally:
            self._inner.layers = real


def _cache_kind(cache) -> tuple:
    """What makes two layers' caches interchangeable for building a mask: their type and window."""
    inner = getattr(cache, "caches", None)
    nested = tuple(_cache_kind(c) for c in inner) if isinstance(inner, (list, tuple)) else ()
    return (type(cache).__name__, getattr(cache, "max_size", None), getattr(cache, "keep", None), nested)


def _batch_problem(caches: list) -> str | None:
    """Why this model's sessions cannot share one batch (None: they can): mlx-lm must merge each
    kind of cache into a batched one and extract a session back out of it."""
    for cache in caches:
        name = type(cache).__name__
        if getattr(cache, "keep", 0):
            return f"its {name} keeps the first {cache.keep} tokens, which mlx-lm's batched cache does not"
        try:
            merged = cache.merge([cache, cache])
        except Exception as exc:  # mlx-lm raises several kinds for caches it cannot batch
            return f"mlx-lm cannot batch its {name} ({exc or type(exc).__name__})"
        if not hasattr(merged, "extract"):
            return f"mlx-lm cannot take a session back out of a batched {name}"
    return None


def slice_weight_bytes(stage: StageModel) -> int:
    return sum(v.nbytes for _, v in stage.params)


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
    loaded: set[str] = set()
    full_model, _config = load_model(info.path, lazy=True, strict=not partial,
                                     get_model_classes=_recording_classes(loaded))
    stage = StageModel(full_model, layers, info.num_layers, keep_layers=keep_layers)
    stage.batch_problem = stage.batch_problem or family_batch_problem(info.model_type)
    if partial:
        _check_has_weights(info.path, stage, loaded, shard=info.is_shard)
    total = sum(v.nbytes for _, v in stage.params)
    done = 0
    progress("weights", 0, total)
    # Evaluate tensor by tensor so the progress is real and peak memory stays at the slice.
    for _name, value in stage.params:
        mx.eval(value)
        done += value.nbytes
        progress("weights", done, total)
    return stage


def _recording_classes(loaded: set[str]):
    """mlx-lm's own model classes, with load_weights noting the names it was given: after mlx-lm's
    own sanitize (stacked experts, renamed parts), so they are the model's parameter names."""
    def classes(config: dict):
        model_class, args_class = _get_classes(config)

        class Recording(model_class):
            def load_weights(self, weights, strict: bool = True):
                weights = list(weights)
                loaded.update(name for name, _ in weights)
                return super().load_weights(weights, strict=strict)

        Recording.__name__ = Recording.__qualname__ = model_class.__name__
        return Recording, args_class
    return classes


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


def _check_has_weights(path: Path, stage: StageModel, loaded: set[str], *, shard: bool) -> None:
    """mlx-lm's non-strict load keeps random initial values for whatever the files lack;
    refuse that rather than serve noise."""
    missing = [name for name, _ in stage.params if name not in loaded]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        what, fix = (("shard", "the shard is damaged or was cut from another model: cut it again") if shard else
                     ("partial model directory", "download the weight files its index names for these layers"))
        raise ModelDirError(
            f"{what} {path} lacks {len(missing)} tensor(s) that layers [{stage.layer_range.start}, "
            f"{stage.layer_range.end}) need: {shown}; {fix}"
        )
