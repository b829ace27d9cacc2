"""A worker's step metrics: phases, every series present from the start, bytes and errors counted."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from cluster.commands.live_metrics import parse_scrape
from node.worker_metrics import ERROR_KINDS, WorkerMetrics, step_phase
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


def test_a_step_is_counted_in_every_family() -> None:
    metrics = WorkerMetrics("w2")
    metrics.set_stage(1)
    hidden = pb.Tensor(data=b"\0" * 576 * 4, dtype="float32", shape=[1, 1, 576])
    step = pb.Step(session_id="s", hidden=hidden, decode=True)
    metrics.received_step(step, 10 * MS, hop_ns=MS // 2)
    timing = pb.StageTiming(recv_ns=10 * MS, compute_start_ns=12 * MS, compute_end_ns=20 * MS)
    metrics.computed(step, timing, sampled=True)
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
