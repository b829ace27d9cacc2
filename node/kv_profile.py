"""How much cache each layer of a model keeps per session, read off the family's own caches.

A full-attention layer keeps keys and values for every token; a sliding-window layer at most its
window; DeepSeek's latent attention only the compressed latent and the rotary key; a linear-
attention layer (Qwen3-Next) a fixed state whatever the length. Rather than a formula per family,
the model is built lazily from its config (no weights are read or evaluated: MLX arrays know their
shapes before they are computed) and fed one token through mlx-lm's own `make_cache()` caches:
what a layer hands its cache per token (update_and_fetch) is its per-token cost, capped by the
cache's window; a cache that takes nothing that way (a linear-attention state) is measured whole.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

import mlx.core as mx
from mlx_lm.models.cache import make_prompt_cache
from mlx_lm.utils import _get_classes


@dataclass(frozen=True)
class LayerKV:
    per_token: int            # cache elements added by each token held
    fixed: int                # elements kept whatever the length (a linear-attention state)
    max_tokens: int | None    # a sliding window keeps at most this many tokens

    def elements(self, tokens: int) -> int:
        held = tokens if self.max_tokens is None else min(tokens, self.max_tokens)
        return self.fixed + self.per_token * held

    def bytes(self, tokens: int, dtype_bytes: int) -> int:
        return self.elements(tokens) * dtype_bytes

    @property
    def kind(self) -> str:
        if self.per_token == 0:
            return "fixed state"
        if self.max_tokens is not None:
            return f"window {self.max_tokens}"
        return "full"


def _elements(state) -> int:
    if isinstance(state, mx.array):
        return state.size
    if isinstance(state, (list, tuple)):
        return sum(_elements(s) for s in state)
    return 0


def _leaves(cache) -> list:
    inner = getattr(cache, "caches", None)  # CacheList: a layer with several caches
    return [leaf for c in inner for leaf in _leaves(c)] if inner is not None else [cache]


class _Measured:
    """Wraps one cache's update_and_fetch, noting the elements one token adds."""

    def __init__(self, cache):
        self.cache, self.per_token = cache, None
        if hasattr(cache, "update_and_fetch"):
            real = cache.update_and_fetch

            def update_and_fetch(keys, values, *args, **kwargs):
                self.per_token = (keys.size + values.size) // keys.shape[-2]
                return real(keys, values, *args, **kwargs)
            cache.update_and_fetch = update_and_fetch

    def layer(self) -> LayerKV:
        if self.per_token is None:
            return LayerKV(per_token=0, fixed=_elements(self.cache.state), max_tokens=None)
        return LayerKV(per_token=self.per_token, fixed=0, max_tokens=getattr(self.cache, "max_size", None))


def _combine(parts: list[LayerKV]) -> LayerKV:
    windows = [p.max_tokens for p in parts if p.per_token]
    return LayerKV(per_token=sum(p.per_token for p in parts), fixed=sum(p.fixed for p in parts),
                   max_tokens=max(windows) if windows and all(w is not None for w in windows) else None)


@lru_cache(maxsize=16)
def _profile(config_json: str) -> tuple[LayerKV, ...]:
    config = json.loads(config_json)
    model_class, args_class = _get_classes(config)
    model = model_class(args_class.from_dict(config))   # lazily initialised: nothing is allocated
    caches = make_prompt_cache(model)
    measured = [[_Measured(leaf) for leaf in _leaves(c)] for c in caches]
    model(mx.zeros((1, 1), dtype=mx.int32), cache=caches)  # builds the graph; nothing is evaluated
    return tuple(_combine([m.layer() for m in layer]) for layer in measured)


def kv_profile(config: dict) -> tuple[LayerKV, ...]:
    """One entry per layer, in order, for the model `config` (a config.json) describes."""
    return _profile(json.dumps(config, sort_keys=True))


def session_kv_bytes(profile, start: int, end: int, tokens: int, dtype_bytes: int) -> int:
    """Cache bytes of one session of `tokens` tokens on a stage holding layers [start, end)."""
    return sum(layer.bytes(tokens, dtype_bytes) for layer in profile[start:end])
