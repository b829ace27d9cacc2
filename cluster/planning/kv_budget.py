"""How many sessions every stage can hold at full context within a fixed KV budget. Pure, tested
without sockets; what one session costs comes from each layer's own cache (node/kv_profile.py)."""

from __future__ import annotations

import math


def session_limit(stage_session_bytes: list[int], *, kv_budget_bytes: int, configured_max: int) -> int:
    """Sessions every stage can hold within its KV budget, at most `configured_max`, given what one
    session at full context costs on each stage (node/kv_profile.py: by each layer's own cache)."""
    per_session = max(max(stage_session_bytes), 1)
    return max(0, min(configured_max, math.floor(kv_budget_bytes / per_session)))
