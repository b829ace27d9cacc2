"""Load-run figures from token timestamps (pure)."""

from __future__ import annotations

import math

import pytest

from cluster.bench.load_stats import StreamTimes, percentile, summarize


def test_percentile_interpolates_like_numpy() -> None:
    import numpy as np

    values = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0]
    for q in (0, 25, 50, 90, 95, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert math.isnan(percentile([], 50))


def test_summary_of_two_streams() -> None:
    a = StreamTimes(0.0, [1.0, 1.5, 2.0])
    b = StreamTimes(0.5, [2.5, 3.5])
    figures = summarize([a, b])
    assert figures["generated_tokens"] == 5
    assert figures["wall_s"] == 3.5
    assert figures["tokens_per_s"] == pytest.approx(5 / 3.5)
    assert figures["ttft_ms_p50"] == pytest.approx(1500.0)  # 1.0 and 2.0 s
    assert figures["itl_ms_p50"] == pytest.approx(500.0)    # 0.5, 0.5, 1.0 s
    assert figures["itl_ms_p95"] == pytest.approx(950.0)


def test_streams_without_tokens() -> None:
    figures = summarize([StreamTimes(0.0, [])])
    assert figures["generated_tokens"] == 0 and figures["tokens_per_s"] == 0.0
