"""Live figures of each stage and link, from the timings every result carries back (no Prometheus):
a decode step's compute time on each stage (p50 / p95 of the latest), each hop's time, and the tokens
per second that went through. For the web page (cluster/api/cluster_view.py). Pure: fed results
and the time, asked for figures."""

from __future__ import annotations

import statistics
import time
from collections import deque
from dataclasses import dataclass, field

from proto import boltpipe_pb2 as pb

KEEP = 256          # latest samples per stage or link
WINDOW_S = 30.0     # samples older than this are forgotten
RATE_WINDOW_S = 10.0


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


@dataclass
class StageFigures:
    stages: int
    _compute: dict[int, deque] = field(default_factory=dict)   # stage -> (time, ms)
    _hops: dict[int, deque] = field(default_factory=dict)      # hop into stage i (stages: back to us) -> (time, ms)
    _tokens: deque = field(default_factory=deque)              # (time, tokens)

    def observe(self, result: pb.StepResult, now: float | None = None, returned_ns: int | None = None) -> None:
        """A last-stage result: its decode compute times, hops, and the tokens it gave."""
        now = time.monotonic() if now is None else now
        timings = sorted(result.timings, key=lambda t: t.stage)
        if result.decode:
            for t in timings:
                if t.stage >= 0 and t.compute_end_ns > t.compute_start_ns:
                    self._add(self._compute, t.stage, now, (t.compute_end_ns - t.compute_start_ns) / 1e6)
        for sender, receiver in zip(timings, timings[1:]):
            if sender.next_clock_known and sender.send_ns and receiver.recv_ns:
                hop = receiver.recv_ns - (sender.send_ns + sender.next_clock_offset_ns)
                self._add(self._hops, receiver.stage, now, max(0, hop) / 1e6)
        if returned_ns is not None:
            self._add(self._hops, self.stages, now, returned_ns / 1e6)
        if result.token_id >= 0:
            self._tokens.append((now, 1 + len(result.more_tokens)))

    @staticmethod
    def _add(table: dict[int, deque], key: int, now: float, value: float) -> None:
        table.setdefault(key, deque(maxlen=KEEP)).append((now, value))

    @staticmethod
    def _recent(samples: deque | None, now: float) -> list[float]:
        return [v for t, v in samples or () if now - t <= WINDOW_S]

    def compute_ms(self, stage: int, now: float | None = None) -> tuple[float, float] | None:
        """(p50, p95) of the stage's recent decode steps, or None when it has none."""
        values = self._recent(self._compute.get(stage), time.monotonic() if now is None else now)
        return (statistics.median(values), _percentile(values, 0.95)) if values else None

    def hop_ms(self, into: int, now: float | None = None) -> float | None:
        """Median hop into stage `into` (0: from the coordinator; `stages`: back to it)."""
        values = self._recent(self._hops.get(into), time.monotonic() if now is None else now)
        return statistics.median(values) if values else None

    def tokens_per_s(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        while self._tokens and now - self._tokens[0][0] > RATE_WINDOW_S:
            self._tokens.popleft()
        return sum(n for _, n in self._tokens) / RATE_WINDOW_S
