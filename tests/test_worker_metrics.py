"""A worker's step metrics: phases, every series present from the start, bytes and errors counted, and
per forward pass (batched decode) its compute time and batch size observed once."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from cluster.commands.live_metrics import parse_scrape
from node.worker_metrics import BATCH_BUCKETS, ERROR_KINDS, PHASES, WorkerMetrics, step_phase
from proto import boltpipe_pb2 as pb

MS = 1_000_000


def _scrape(metrics: WorkerMetrics):
    return parse_scrape(generate_latest(metrics.registry).decode(), at_s=0.0)


def test_phase_is_what_the_coordinator_marked() -> None:
    assert step_phase(pb.Step(token_ids=[5], decode=True)) == "decode"
    # The prompt's last token samples the first new token: still the prompt.
    assert step_phase(pb.Step(token_ids=[5], want_token=True)) == "prefill"
    assert step_phase(pb.Step(token_ids=list(range(64)))) == "prefill"


def test_series_exist_at_zero_once_a_stage_is_served() -> None:
    metrics = WorkerMetrics("w2")
    assert _scrape(metrics).samples == {}  # nothing before a slice is loaded
    metrics.set_stage(1)
    scrape = _scrape(metrics)
    for kind in ERROR_KINDS:
        assert scrape.samples[("boltpipe_worker_errors_total",
                               frozenset({"node": "w2", "stage": "1", "kind": kind}.items()))] == 0
    assert scrape.total("boltpipe_worker_steps_total", phase="decode") == 0
    for phase in PHASES:  # the batch histogram by phase, so the decode mean reads from the start
        labels = frozenset({"node": "w2", "stage": "1", "phase": phase}.items())
        assert scrape.samples[("boltpipe_worker_batch_size_count", labels)] == 0
        assert scrape.samples[("boltpipe_worker_compute_seconds_count", labels)] == 0


def test_a_step_is_counted_in_every_family() -> None:
    metrics = WorkerMetrics("w2")
    metrics.set_stage(1)
    hidden = pb.Tensor(data=b"\0" * 576 * 4, dtype="float32", shape=[1, 1, 576])
    step = pb.Step(session_id="s", hidden=hidden, decode=True)
    metrics.received_step(step, 10 * MS, hop_ns=MS // 2)
    timing = pb.StageTiming(recv_ns=10 * MS, compute_start_ns=12 * MS, compute_end_ns=20 * MS)
    metrics.computed(step, timing, sampled=True)
    metrics.forward_pass(1, "decode", 0.008)
    metrics.sent_message(pb.StepResult(session_id="s", token_id=3))
    metrics.error("invalid_step")
    scrape = _scrape(metrics)
    assert scrape.total("boltpipe_worker_compute_seconds_sum", phase="decode") == pytest.approx(0.008)
    assert scrape.total("boltpipe_worker_queue_seconds_sum", phase="decode") == pytest.approx(0.002)
    assert scrape.total("boltpipe_worker_hop_seconds_sum", phase="decode") == pytest.approx(0.0005)
    assert scrape.total("boltpipe_worker_tokens_total", phase="decode") == 1
    assert scrape.total("boltpipe_worker_sampled_tokens_total") == 1
    assert scrape.total("boltpipe_worker_received_bytes_total") == step.ByteSize() > 576 * 4
    assert scrape.total("boltpipe_worker_sent_bytes_total") == pb.StepResult(session_id="s", token_id=3).ByteSize()
    assert scrape.total("boltpipe_worker_errors_total", kind="invalid_step") == 1
    assert scrape.total("boltpipe_worker_steps_total", phase="prefill") == 0


def test_a_prefill_chunk_counts_its_tokens() -> None:
    metrics = WorkerMetrics("w1")
    metrics.set_stage(0)
    step = pb.Step(token_ids=list(range(37)))
    metrics.computed(step, pb.StageTiming(recv_ns=0, compute_start_ns=0, compute_end_ns=MS), sampled=False)
    scrape = _scrape(metrics)
    assert scrape.total("boltpipe_worker_tokens_total", phase="prefill") == 37
    assert scrape.total("boltpipe_worker_sampled_tokens_total") == 0


def test_batch_size_and_compute_time_are_per_forward_pass() -> None:
    metrics = WorkerMetrics("w2")
    metrics.set_stage(1)
    hidden = pb.Tensor(data=b"\0" * 8 * 4, dtype="float32", shape=[1, 1, 8])
    # A batched pass of 4 sessions (10 ms), then one session alone (2 ms): every row is a step.
    for rows, seconds, start in ((4, 0.010, 10), (1, 0.002, 30)):
        for index in range(rows):
            step = pb.Step(session_id=f"s{index}", hidden=hidden, decode=True)
            timing = pb.StageTiming(recv_ns=(start - index) * MS, compute_start_ns=start * MS,
                                    compute_end_ns=start * MS + int(seconds * 1e9))
            metrics.computed(step, timing, sampled=False)
        metrics.forward_pass(rows, "decode", seconds)
    scrape = _scrape(metrics)
    assert scrape.total("boltpipe_worker_batch_size_count", phase="decode") == 2
    assert scrape.total("boltpipe_worker_batch_size_sum", phase="decode") == 5
    assert scrape.total("boltpipe_worker_batch_size_count", phase="prefill") == 0
    batch = scrape.buckets("boltpipe_worker_batch_size", phase="decode")
    assert sorted(b for b in batch if b != float("inf")) == [float(b) for b in BATCH_BUCKETS]
    assert batch[1.0] == 1 and batch[3.0] == 1 and batch[4.0] == 2  # 4 is not rounded up to 8
    # Compute time once per pass: a 10 ms pass of 4 rows is 10 ms of latency, not 40.
    assert scrape.total("boltpipe_worker_compute_seconds_count", phase="decode") == 2
    assert scrape.total("boltpipe_worker_compute_seconds_sum", phase="decode") == pytest.approx(0.012)
    # Steps, tokens and queue times per row.
    assert scrape.total("boltpipe_worker_steps_total", phase="decode") == 5
    assert scrape.total("boltpipe_worker_tokens_total", phase="decode") == 5
    assert scrape.total("boltpipe_worker_queue_seconds_count", phase="decode") == 5
    assert scrape.total("boltpipe_worker_queue_seconds_sum", phase="decode") == pytest.approx(0.006)


def test_computed_alone_observes_neither_batch_nor_compute_time() -> None:
    metrics = WorkerMetrics("w1")
    metrics.set_stage(0)
    step = pb.Step(token_ids=[5], decode=True)
    metrics.computed(step, pb.StageTiming(recv_ns=0, compute_start_ns=MS, compute_end_ns=5 * MS), sampled=False)
    scrape = _scrape(metrics)
    assert scrape.total("boltpipe_worker_steps_total", phase="decode") == 1
    assert scrape.total("boltpipe_worker_batch_size_count") == 0
    assert scrape.total("boltpipe_worker_compute_seconds_count") == 0


def test_a_prefill_pass_is_its_own_phase() -> None:
    metrics = WorkerMetrics("w1")
    metrics.set_stage(0)
    metrics.forward_pass(1, "prefill", 0.5)
    metrics.forward_pass(3, "decode", 0.004)
    scrape = _scrape(metrics)
    assert scrape.total("boltpipe_worker_batch_size_sum", phase="prefill") == 1
    assert scrape.total("boltpipe_worker_batch_size_sum", phase="decode") == 3
    assert scrape.total("boltpipe_worker_compute_seconds_sum", phase="prefill") == pytest.approx(0.5)
    assert scrape.total("boltpipe_worker_compute_seconds_sum", phase="decode") == pytest.approx(0.004)
