"""Dropping a session's last positions again (speculative steps whose drafts were rejected), for
the cache types mlx-lm's models use.

Only caches known to drop positions exactly qualify: full-attention ones (KVCache, its quantized
and concatenating kinds) always; a sliding-window RotatingKVCache only while it has not wrapped
(once full, a dropped position's slot already overwrote an older token); recurrent states
(ArraysCache: Mamba, linear attention) and chunked attention never, so a model with them does not
speculate, and says why.
"""

from __future__ import annotations

ALWAYS = ("KVCache", "QuantizedKVCache", "ConcatenateKVCache")


def rollback_horizon(caches: list) -> tuple[int, str]:
    """(horizon, problem) for a stage's caches: horizon -1 never (problem says why), 0 at any
    position, N > 0 while a step ends at or before position N."""
    horizon = 0
    for cache in caches:
        name = type(cache).__name__
        nested = getattr(cache, "caches", None)
        if name == "CacheList" and isinstance(nested, (list, tuple)):
            h, problem = rollback_horizon(list(nested))
        elif name in ALWAYS:
            h, problem = 0, ""
        elif name == "RotatingKVCache":
            h, problem = cache.max_size - 1, ""
        elif name == "ArraysCache" or name.endswith("ArraysCache"):
            h, problem = -1, f"a recurrent layer's state ({name}) cannot be rolled back to an earlier position"
        else:
            h, problem = -1, f"its {name} is not known to drop positions exactly"
        if h < 0:
            return h, problem
        if h > 0:
            horizon = h if horizon == 0 else min(horizon, h)
    return horizon, ""


def drop_positions(cache: list, n: int) -> bool:
    """Drops the last n positions of every layer's cache; False if some layer could not."""
    return all(c.trim(n) == n for c in cache) if n else True
