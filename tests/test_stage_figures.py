"""The web page's live figures from result timings (cluster/pipeline/stage_figures.py): decode compute
p50 / p95 per stage, hops across clocks that differ, tokens per second, old samples forgotten."""

from __future__ import annotations

from cluster.pipeline.stage_figures import RATE_WINDOW_S, WINDOW_S, StageFigures
from proto import boltpipe_pb2 as pb

MS = 1_000_000


def result(compute_ms: list[float], *, decode: bool = True, hop_ms: float = 2.0, offset_ms: float = 50.0,
           more: int = 0) -> pb.StepResult:
    """A result through len(compute_ms) stages; each stage's clock runs `offset_ms` ahead of the one before."""
    timings = [pb.StageTiming(stage=-1, send_ns=1000 * MS, next_clock_offset_ns=int(offset_ms * MS), next_clock_known=True)]
    clock_now = 1000 * MS  # on the coordinator's clock
    for i, ms in enumerate(compute_ms):
        clock_now += hop_ms * MS
        local = clock_now + (i + 1) * offset_ms * MS  # this stage's own clock
        timings.append(pb.StageTiming(stage=i, recv_ns=int(local), compute_start_ns=int(local),
                                      compute_end_ns=int(local + ms * MS), send_ns=int(local + ms * MS),
                                      next_clock_offset_ns=int(offset_ms * MS), next_clock_known=True))
        clock_now += ms * MS
    return pb.StepResult(token_id=5, decode=decode, timings=timings,
                         more_tokens=[pb.ChosenToken(token_id=6)] * more)


def test_compute_latency_per_stage_and_hops_across_clocks() -> None:
    figures = StageFigures(stages=2)
    for i in range(100):
        figures.observe(result([10.0 + (i % 10), 20.0]), now=1.0, returned_ns=3 * MS)
    p50, p95 = figures.compute_ms(0, now=1.0)
    assert 14.0 <= p50 <= 15.0 and p95 == 19.0
    assert figures.compute_ms(1, now=1.0) == (20.0, 20.0)
    assert abs(figures.hop_ms(0, now=1.0) - 2.0) < 1e-6 and abs(figures.hop_ms(1, now=1.0) - 2.0) < 1e-6
    assert figures.hop_ms(2, now=1.0) == 3.0  # back to the coordinator


def test_prefill_steps_are_not_decode_latency_and_old_samples_go() -> None:
    figures = StageFigures(stages=1)
    figures.observe(result([300.0], decode=False), now=0.0)
    assert figures.compute_ms(0, now=0.0) is None
    figures.observe(result([12.0]), now=0.0)
    assert figures.compute_ms(0, now=WINDOW_S + 1) is None


def test_tokens_per_second_counts_speculated_tokens() -> None:
    figures = StageFigures(stages=1)
    for t in range(10):
        figures.observe(result([5.0], more=2), now=float(t))
    assert figures.tokens_per_s(now=9.0) == 30 / RATE_WINDOW_S
    assert figures.tokens_per_s(now=9.0 + RATE_WINDOW_S + 1) == 0.0
