"""A session's cache kept as a prefix that later sessions start from (prefix caching), for the
cache types mlx-lm's models use.

A snapshot holds the first `tokens` positions of every layer's cache and is never stepped itself;
a session started from it gets caches of its own (new array objects: MLX's in-place cache updates
rebind the array a cache object holds, so nothing a session does reaches the snapshot). Full
attention (KVCache) and sliding windows that have not wrapped can be cut to any shorter prefix; a
wrapped window and recurrent states (ArraysCache: Mamba, linear attention) describe exactly the
positions seen, so their snapshot serves exactly its own length (`cut_back` False).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import mlx.core as mx

CUTTABLE = ("KVCache", "ConcatenateKVCache")


class SnapshotError(ValueError):
    """A cache that cannot be kept, or a prefix it cannot give."""


@dataclass
class Snapshot:
    caches: list
    tokens: int
    cut_back: bool           # may give any prefix of it, not only all of it

    @property
    def nbytes(self) -> int:
        return sum(_nbytes(c) for c in self.caches)


def take(cache: list, held: int, tokens: int) -> Snapshot:
    """The first `tokens` of the `held` positions a session's `cache` holds, as a snapshot."""
    if not 0 < tokens <= held:
        raise SnapshotError(f"a snapshot keeps 1 to {held} positions, not {tokens}")
    layers, cuts = zip(*(_copy(c, held, tokens) for c in cache)) if cache else ((), ())
    snapshot = Snapshot(list(layers), tokens, all(cuts))
    _evaluate(snapshot.caches)
    return snapshot


def start_from(snapshot: Snapshot, tokens: int) -> list:
    """Caches of a new session holding the snapshot's first `tokens` positions."""
    if tokens != snapshot.tokens and not snapshot.cut_back:
        raise SnapshotError(f"this snapshot gives exactly its {snapshot.tokens} positions (its model keeps "
                            f"recurrent or wrapped-window state), not {tokens}")
    caches = [_copy(c, snapshot.tokens, tokens)[0] for c in snapshot.caches]
    _evaluate(caches)
    return caches


def _copy(cache, held: int, tokens: int):
    """(a new cache object holding the first `tokens` positions, whether it could be cut back)."""
    name = type(cache).__name__
    new = copy.copy(cache)
    if name == "CacheList":
        parts = [_copy(c, held, tokens) for c in cache.caches]
        new.caches = tuple(p[0] for p in parts)
        return new, all(p[1] for p in parts)
    if name in CUTTABLE or (name == "RotatingKVCache" and cache.offset <= cache.max_size):
        if cache.keys is not None:
            new.keys, new.values = cache.keys[..., :tokens, :], cache.values[..., :tokens, :]
        new.offset = tokens
        if name == "RotatingKVCache":
            new._idx = tokens
        return new, True
    if tokens != held:
        raise SnapshotError(f"its {name} gives exactly the {held} positions it saw, not the first {tokens}")
    if name == "RotatingKVCache":  # wrapped: the buffer as it is, in new array objects
        new.keys, new.values = cache.keys[...], cache.values[...]
        return new, False
    if name == "ArraysCache" or hasattr(cache, "cache") and isinstance(cache.cache, list):
        new.cache = list(cache.cache)  # recurrent layers replace their state arrays, never write into them
        return new, False
    raise SnapshotError(f"its {name} is not known to be kept safely")


def _nbytes(cache) -> int:
    try:
        return int(cache.nbytes)
    except (AttributeError, NotImplementedError, TypeError):
        return 0


def _evaluate(caches: list) -> None:
    arrays = []
    for c in caches:
        nested = getattr(c, "caches", None)
        for part in (nested if isinstance(nested, (list, tuple)) else (c,)):
            state = part.state
            arrays += [a for a in (state if isinstance(state, (list, tuple)) else [state])
                       if isinstance(a, mx.array)]
            arrays += [a for a in getattr(part, "cache", []) or [] if isinstance(a, mx.array)]
    mx.eval(arrays)
