"""The KV cache in bytes: what one token costs over a stage's layers, and how many sessions every
stage can hold at full context within its budget. Pure functions, tested without sockets."""

from __future__ import annotations

import math


def kv_bytes_per_token(config: dict, num_layers: int, dtype_bytes: int) -> int:
    """Keys and values of one token over `num_layers` layers."""
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or config["hidden_size"] // heads)
    return num_layers * 2 * kv_heads * head_dim * dtype_bytes


def session_limit(stage_layers: list[int], config: dict, *, context_length: int, kv_budget_bytes: int,
                  dtype_bytes: int, configured_max: int) -> int:
    """Sessions every stage can hold at full context within its KV budget, at most `configured_max`."""
    per_session = max(kv_bytes_per_token(config, max(stage_layers), dtype_bytes) * context_length, 1)
    return max(0, min(configured_max, math.floor(kv_budget_bytes / per_session)))
