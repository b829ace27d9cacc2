"""The live figures `cluster status` computes from two scrapes: quantiles as Prometheus estimates
them, rates, counter resets; over text written by prometheus_client itself."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from cluster.commands.live_metrics import (Scrape, bucket_increase, counter_rate, histogram_quantile, node_figures,
                                            parse_scrape)
from node.worker_metrics import COMPUTE_BUCKETS


def test_quantile_interpolates_inside_the_bucket_like_prometheus() -> None:
    # 10 observations <= 1, 10 more in (1, 2]: the median sits at the top of the first bucket,
    # the 75th percentile half way through the second.
    cumulative = {1.0: 10, 2.0: 20, float("inf"): 20}
    assert histogram_quantile(0.5, cumulative) == pytest.approx(1.0)
    assert histogram_quantile(0.75, cumulative) == pytest.approx(1.5)
    assert histogram_quantile(0.25, cumulative) == pytest.approx(0.5)  # the lowest bucket starts at 0


def test_quantile_in_the_overflow_bucket_is_the_largest_finite_bound() -> None:
    assert histogram_quantile(0.99, {1.0: 1, 2.0: 1, float("inf"): 10}) == 2.0


def test_quantile_of_nothing_is_none() -> None:
    assert histogram_quantile(0.5, {}) is None
    assert histogram_quantile(0.5, {1.0: 0, float("inf"): 0}) is None


def _registry_text(observations: list[float], tokens: int) -> str:
    registry = CollectorRegistry()
    compute = Histogram("boltpipe_worker_compute_seconds", "", ["node", "stage", "phase"], buckets=COMPUTE_BUCKETS,
                        registry=registry)
    counter = Counter("boltpipe_worker_tokens", "", ["node", "stage", "phase"], registry=registry)
    for value in observations:
        compute.labels("w1", "0", "decode").observe(value)
    compute.labels("w1", "0", "prefill").observe(3.0)  # a prefill chunk must not count as decode
    counter.labels("w1", "0", "decode").inc(tokens)
    return generate_latest(registry).decode()


def test_figures_between_two_scrapes_count_only_the_window() -> None:
    before = parse_scrape(_registry_text([0.5] * 100, 100), at_s=10.0)  # old, slow steps
    # 100 more steps in the window, all between 10 and 15 ms; 40 tokens in 2 s.
    after = parse_scrape(_registry_text([0.5] * 100 + [0.012] * 100, 140), at_s=12.0)
    figures = node_figures(before, after)
    assert figures.steps == 100
    assert 10.0 <= figures.decode_p50_ms <= 15.0 and 10.0 <= figures.decode_p95_ms <= 15.0
    assert figures.tokens_per_s == pytest.approx(20.0)
    assert figures.hop_p50_ms is None  # no hop series in this scrape


def test_a_restart_between_scrapes_reads_the_new_counters() -> None:
    before = parse_scrape(_registry_text([0.012] * 50, 50), at_s=0.0)
    after = parse_scrape(_registry_text([0.002] * 5, 5), at_s=1.0)
    increase = bucket_increase(before, after, "boltpipe_worker_compute_seconds", phase="decode")
    assert max(increase.values()) == 5
    assert 1.0 <= histogram_quantile(0.5, increase) * 1000 <= 2.0


def test_rate_needs_time_between_scrapes() -> None:
    scrape = Scrape({}, at_s=5.0)
    assert counter_rate(scrape, scrape, "boltpipe_worker_tokens_total") is None


def test_colon_names_of_the_coordinator_parse() -> None:
    registry = CollectorRegistry()
    Counter("boltpipe:generation_tokens", "", ["model_name"], registry=registry).labels("m").inc(7)
    scrape = parse_scrape(generate_latest(registry).decode(), at_s=0.0)
    assert scrape.total("boltpipe:generation_tokens_total") == 7
