"""Figures of a load run from per-stream token timestamps: aggregate tokens/s, time to first
token and inter-token latency percentiles. Pure, so the cluster and the baseline are summed
up by the same code."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class StreamTimes:
    started: float           # seconds, when the request was issued
    tokens: list[float]      # seconds, when each generated token arrived


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(streams: list[StreamTimes]) -> dict:
    ttft = [s.tokens[0] - s.started for s in streams if s.tokens]
    itl = [b - a for s in streams for a, b in zip(s.tokens, s.tokens[1:])]
    generated = sum(len(s.tokens) for s in streams)
    wall = max(t for s in streams for t in s.tokens) - min(s.started for s in streams) if generated else math.nan
    return {
        "streams": len(streams),
        "generated_tokens": generated,
        "wall_s": wall,
        "tokens_per_s": generated / wall if generated else 0.0,
        "ttft_ms_p50": percentile(ttft, 50) * 1e3,
        "ttft_ms_p95": percentile(ttft, 95) * 1e3,
        "itl_ms_p50": percentile(itl, 50) * 1e3,
        "itl_ms_p95": percentile(itl, 95) * 1e3,
    }
