"""Live figures from two scrapes of a Prometheus endpoint, for `cluster status`: the same series
the dashboards read, differenced over the interval between the scrapes (as `rate()` and
`histogram_quantile()` do in Prometheus), so no Prometheus server is needed.

Pure functions over scraped text: tested without sockets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

Labels = frozenset[tuple[str, str]]


@dataclass(frozen=True)
class Scrape:
    """One reading of an endpoint: every sample by (name, labels), and when it was taken."""

    samples: dict[tuple[str, Labels], float]
    at_s: float

    def total(self, name: str, **match: str) -> float:
        """The sum over every series of `name` whose labels include `match`."""
        want = set(match.items())
        return sum(v for (n, labels), v in self.samples.items() if n == name and want <= labels)

    def buckets(self, histogram: str, **match: str) -> dict[float, float]:
        """Cumulative counts by upper bound, summed over the matching series."""
        want = set(match.items())
        out: dict[float, float] = {}
        for (n, labels), v in self.samples.items():
            if n == f"{histogram}_bucket" and want <= labels:
                le = float(dict(labels)["le"])
                out[le] = out.get(le, 0.0) + v
        return out


def parse_scrape(text: str, at_s: float) -> Scrape:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return Scrape(samples, at_s)


def histogram_quantile(q: float, cumulative: dict[float, float]) -> float | None:
    """Prometheus's estimate: find the bucket holding the q-th observation and interpolate
    linearly inside it (the lowest bucket starts at 0). None with no observations."""
    bounds = sorted(cumulative)
    if not bounds or cumulative[bounds[-1]] <= 0:
        return None
    rank = q * cumulative[bounds[-1]]
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = cumulative[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # beyond the largest finite bucket: its bound, as Prometheus says
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return bounds[-1]


def bucket_increase(before: Scrape | None, after: Scrape, histogram: str, **match: str) -> dict[float, float]:
    now = after.buckets(histogram, **match)
    if before is None:
        return now
    then = before.buckets(histogram, **match)
    if any(now.get(le, 0.0) < count for le, count in then.items()):
        return now  # the process restarted between the scrapes: its counters began again
    return {le: count - then.get(le, 0.0) for le, count in now.items()}


def counter_increase(before: Scrape | None, after: Scrape, name: str, **match: str) -> float:
    """How much the matching series grew between the scrapes (what they read after a restart)."""
    now = after.total(name, **match)
    if before is None:
        return now
    then = before.total(name, **match)
    return now if now < then else now - then


def counter_rate(before: Scrape, after: Scrape, name: str, **match: str) -> float | None:
    seconds = after.at_s - before.at_s
    if seconds <= 0:
        return None
    return counter_increase(before, after, name, **match) / seconds


def histogram_mean(before: Scrape | None, after: Scrape, histogram: str, **match: str) -> float | None:
    """The mean observation between the scrapes (rate of _sum over rate of _count, as PromQL
    divides them); None when nothing was observed."""
    count_now, sum_now = after.total(f"{histogram}_count", **match), after.total(f"{histogram}_sum", **match)
    count_then = before.total(f"{histogram}_count", **match) if before else 0.0
    sum_then = before.total(f"{histogram}_sum", **match) if before else 0.0
    if count_now < count_then:
        count_then = sum_then = 0.0  # the process restarted between the scrapes
    count = count_now - count_then
    return (sum_now - sum_then) / count if count > 0 else None


@dataclass(frozen=True)
class NodeFigures:
    decode_p50_ms: float | None
    decode_p95_ms: float | None
    hop_p50_ms: float | None
    queue_p95_ms: float | None
    tokens_per_s: float | None
    batch_mean: float | None  # sessions per decode forward pass, on average over the window
    steps: int               # decode steps in the window (one per session per pass)
    passes: int              # decode forward passes in the window


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def node_figures(before: Scrape, after: Scrape) -> NodeFigures:
    """A worker's decode latency (the time of a decode forward pass: what each session in it waits
    for its token at this node), hop and queue times (per step), mean decode batch and tokens/s
    between two scrapes."""
    compute = bucket_increase(before, after, "boltpipe_worker_compute_seconds", phase="decode")
    hop = bucket_increase(before, after, "boltpipe_worker_hop_seconds", phase="decode")
    queue = bucket_increase(before, after, "boltpipe_worker_queue_seconds", phase="decode")
    return NodeFigures(
        decode_p50_ms=_ms(histogram_quantile(0.5, compute)),
        decode_p95_ms=_ms(histogram_quantile(0.95, compute)),
        hop_p50_ms=_ms(histogram_quantile(0.5, hop)),
        queue_p95_ms=_ms(histogram_quantile(0.95, queue)),
        tokens_per_s=counter_rate(before, after, "boltpipe_worker_tokens_total"),
        batch_mean=_round(histogram_mean(before, after, "boltpipe_worker_batch_size", phase="decode")),
        steps=int(counter_increase(before, after, "boltpipe_worker_steps_total", phase="decode")),
        passes=int(max(compute.values(), default=0.0)),
    )


@dataclass(frozen=True)
class CoordinatorFigures:
    running: int
    waiting: int
    generated_per_s: float | None
    ttft_p50_ms: float | None
    itl_p50_ms: float | None
    itl_p95_ms: float | None
    # Speculative decoding since the coordinator started (totals: a window often has no trip).
    speculative_trips: int = 0
    acceptance: float | None = None       # drafted tokens the last stage kept
    tokens_per_trip: float | None = None  # of the speculative trips
    # Prefix caching since the coordinator started.
    prefix_hits: int = 0
    prefix_misses: int = 0
    prefix_tokens_reused: int = 0
    prefix_entries: int = 0


def coordinator_figures(before: Scrape, after: Scrape) -> CoordinatorFigures:
    itl = bucket_increase(before, after, "boltpipe:inter_token_latency_seconds")
    trips = after.total("boltpipe_coordinator_speculative_trips_total")
    drafted = after.total("boltpipe_coordinator_drafted_tokens_total")
    kept = after.total("boltpipe_coordinator_accepted_tokens_total")
    return CoordinatorFigures(
        prefix_hits=int(after.total("boltpipe_coordinator_prefix_hits_total")),
        prefix_misses=int(after.total("boltpipe_coordinator_prefix_misses_total")),
        prefix_tokens_reused=int(after.total("boltpipe_coordinator_prefix_tokens_reused_total")),
        prefix_entries=int(after.total("boltpipe_coordinator_prefix_entries")),
        speculative_trips=int(trips),
        acceptance=_round(kept / drafted) if drafted else None,
        tokens_per_trip=_round(1 + kept / trips) if trips else None,
        running=int(after.total("boltpipe:num_requests_running")),
        waiting=int(after.total("boltpipe:num_requests_waiting")),
        generated_per_s=counter_rate(before, after, "boltpipe:generation_tokens_total"),
        ttft_p50_ms=_ms(histogram_quantile(0.5, bucket_increase(before, after, "boltpipe:time_to_first_token_seconds"))),
        itl_p50_ms=_ms(histogram_quantile(0.5, itl)),
        itl_p95_ms=_ms(histogram_quantile(0.95, itl)),
    )
