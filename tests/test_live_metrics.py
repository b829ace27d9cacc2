"""The live figures `cluster status` computes from two scrapes: quantiles as Prometheus estimates
them, rates, counter resets; over text written by prometheus_client itself."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from cluster.commands.live_metrics import (Scrape, bucket_increase, counter_rate, histogram_mean, histogram_quantile,
                                            node_figures, parse_scrape)
from node.worker_metrics import COMPUTE_BUCKETS, WorkerMetrics
from proto import boltpipe_pb2 as pb


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
    steps = Counter("boltpipe_worker_steps", "", ["node", "stage", "phase"], registry=registry)
    for value in observations:
        compute.labels("w1", "0", "decode").observe(value)
    compute.labels("w1", "0", "prefill").observe(3.0)  # a prefill chunk must not count as decode
    counter.labels("w1", "0", "decode").inc(tokens)
    steps.labels("w1", "0", "decode").inc(len(observations))
    return generate_latest(registry).decode()


def test_figures_between_two_scrapes_count_only_the_window() -> None:
    before = parse_scrape(_registry_text([0.5] * 100, 100), at_s=10.0)  # old, slow steps
    # 100 more steps in the window, all between 10 and 15 ms; 40 tokens in 2 s.
    after = parse_scrape(_registry_text([0.5] * 100 + [0.012] * 100, 140), at_s=12.0)
    figures = node_figures(before, after)
    assert figures.steps == figures.passes == 100
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


MS = 1_000_000


def _decode_passes(metrics: WorkerMetrics, batches: list[int], pass_s: float) -> None:
    """Forward passes of `batches` sessions each, as a worker's server reports them."""
    for rows in batches:
        for index in range(rows):
            step = pb.Step(session_id=f"s{index}", token_ids=[7], decode=True)
            metrics.computed(step, pb.StageTiming(recv_ns=0, compute_start_ns=MS, compute_end_ns=MS), sampled=False)
        metrics.forward_pass(rows, "decode", pass_s)


def _worker_scrape(metrics: WorkerMetrics, at_s: float) -> Scrape:
    return parse_scrape(generate_latest(metrics.registry).decode(), at_s)


def test_mean_decode_batch_counts_only_the_window() -> None:
    metrics = WorkerMetrics("w1")
    metrics.set_stage(0)
    _decode_passes(metrics, [1] * 20, 0.5)           # long ago: one session at a time, slow
    metrics.forward_pass(1, "prefill", 2.0)          # a prompt chunk: not a decode pass
    before = _worker_scrape(metrics, at_s=100.0)
    _decode_passes(metrics, [4, 4, 4, 2], 0.012)     # in the window: 14 steps in 4 passes
    metrics.forward_pass(1, "prefill", 2.0)
    after = _worker_scrape(metrics, at_s=102.0)
    figures = node_figures(before, after)
    assert figures.batch_mean == pytest.approx(3.5)
    assert figures.steps == 14 and figures.passes == 4
    # Per-token latency is a pass's time, not a row's: 4 observations, all 12 ms.
    assert 10.0 <= figures.decode_p50_ms <= 15.0 and 10.0 <= figures.decode_p95_ms <= 15.0
    assert figures.tokens_per_s == pytest.approx(7.0)  # 14 one-token steps in 2 s


def test_mean_decode_batch_of_an_idle_window_is_none() -> None:
    metrics = WorkerMetrics("w1")
    metrics.set_stage(0)
    _decode_passes(metrics, [4, 4], 0.01)
    scrape = _worker_scrape(metrics, at_s=1.0)
    figures = node_figures(scrape, Scrape(scrape.samples, at_s=3.0))
    assert figures.batch_mean is None and figures.steps == 0 and figures.passes == 0


def test_mean_after_a_restart_reads_the_new_process() -> None:
    old, new = WorkerMetrics("w1"), WorkerMetrics("w1")
    old.set_stage(0)
    new.set_stage(0)
    _decode_passes(old, [8] * 10, 0.01)
    _decode_passes(new, [2, 4], 0.01)
    before, after = _worker_scrape(old, at_s=0.0), _worker_scrape(new, at_s=1.0)
    assert histogram_mean(before, after, "boltpipe_worker_batch_size", phase="decode") == pytest.approx(3.0)
    assert node_figures(before, after).steps == 6
