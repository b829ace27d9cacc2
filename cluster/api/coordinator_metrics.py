"""The coordinator's Prometheus metrics, served at /metrics on the API's port.

Where vLLM has a metric that means the same thing, the name is vLLM's with `boltpipe:` in place
of `vllm:` (and the same `model_name` label), so dashboards and alerts written for vLLM carry over.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from cluster.api.admission import Admission
from node.worker_metrics import HOP_BUCKETS

# vLLM's buckets for the same histograms (seconds).
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
               40.0, 80.0)
REQUEST_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
                   240.0, 480.0, 960.0, 1920.0, 7680.0)
FINISH_REASONS = ("stop", "length", "abort")
FAILURE_REASONS = ("invalid_request", "rejected", "queue_timeout", "deadline", "pipeline_error", "internal")


class _AdmissionGauges:
    """Running and waiting requests, read from admission control at scrape time."""

    def __init__(self, model_name: str, admission: Admission):
        self.model_name = model_name
        self.admission = admission

    def collect(self):
        stats = self.admission.stats()
        for name, help_text, value in (("boltpipe:num_requests_running", "requests generating now", stats.running),
                                       ("boltpipe:num_requests_waiting", "requests waiting for a slot", stats.waiting)):
            gauge = GaugeMetricFamily(name, help_text, labels=["model_name"])
            gauge.add_metric([self.model_name], value)
            yield gauge


class _PrefixCacheFigures:
    """The prefix cache's hits, misses, positions reused and what it holds, read at scrape time."""

    def __init__(self, model_name: str, prefix_cache):
        self.model_name = model_name
        self.prefix_cache = prefix_cache

    def collect(self):
        figures = self.prefix_cache.figures
        for name, help_text, value in (
                ("boltpipe_coordinator_prefix_hits", "requests that started from a kept prefix", figures.hits),
                ("boltpipe_coordinator_prefix_misses", "requests that found no kept prefix", figures.misses),
                ("boltpipe_coordinator_prefix_tokens_reused", "prompt positions not computed again",
                 figures.tokens_reused)):
            counter = CounterMetricFamily(name, help_text, labels=["model_name"])
            counter.add_metric([self.model_name], value)
            yield counter
        for name, help_text, value in (
                ("boltpipe_coordinator_prefix_entries", "prefixes the stages keep", len(self.prefix_cache)),
                ("boltpipe_coordinator_prefix_bytes", "their planned bytes on the stage keeping the most per position",
                 self.prefix_cache.nbytes)):
            gauge = GaugeMetricFamily(name, help_text, labels=["model_name"])
            gauge.add_metric([self.model_name], value)
            yield gauge


class CoordinatorMetrics:
    def __init__(self, model_name: str, admission: Admission, registry: CollectorRegistry | None = None):
        self.model_name = model_name
        self.registry = r = registry or CollectorRegistry()
        m = ("model_name",)
        self.ttft = Histogram("boltpipe:time_to_first_token_seconds", "time from a request's arrival to its first token",
                              m, buckets=TTFT_BUCKETS, registry=r)
        self.itl = Histogram("boltpipe:inter_token_latency_seconds", "time between a request's successive tokens",
                             m, buckets=ITL_BUCKETS, registry=r)
        self.e2e = Histogram("boltpipe:e2e_request_latency_seconds", "time from a request's arrival to its end",
                             m, buckets=REQUEST_BUCKETS, registry=r)
        self.queue_time = Histogram("boltpipe:request_queue_time_seconds", "time a request waited for a slot",
                                    m, buckets=REQUEST_BUCKETS, registry=r)
        self.prompt_tokens = Counter("boltpipe:prompt_tokens", "prompt tokens of requests served", m, registry=r)
        self.generation_tokens = Counter("boltpipe:generation_tokens", "tokens generated", m, registry=r)
        self.success = Counter("boltpipe:request_success", "requests that ended, by finish reason",
                               m + ("finished_reason",), registry=r)
        self.failures = Counter("boltpipe_coordinator_request_failures", "requests that ended with an error, by reason",
                                m + ("reason",), registry=r)
        self.return_hop = Histogram("boltpipe_coordinator_hop_seconds",
                                    "time from the last stage's send of a result to its receipt here",
                                    m + ("phase",), buckets=HOP_BUCKETS, registry=r)
        self.replays = Counter("boltpipe_coordinator_replays", "requests continued after a stage failure",
                               m, registry=r)
        self.stage_failures = Counter("boltpipe_coordinator_stage_failures", "times a stage was marked down",
                                      m + ("stage",), registry=r)
        d = m + ("drafter",)
        self.spec_trips = Counter("boltpipe_coordinator_speculative_trips",
                                  "trips around the ring that carried drafted tokens", d, registry=r)
        self.drafted = Counter("boltpipe_coordinator_drafted_tokens", "tokens drafted for speculative trips",
                               d, registry=r)
        self.accepted = Counter("boltpipe_coordinator_accepted_tokens", "drafted tokens the last stage kept",
                                d, registry=r)
        self.replays.labels(model_name)
        for drafter in ("prompt_lookup", "draft_model"):  # series from the start, so rates have a base
            for family in (self.spec_trips, self.drafted, self.accepted):
                family.labels(model_name, drafter)
        for reason in FINISH_REASONS:
            self.success.labels(model_name, reason)
        for reason in FAILURE_REASONS:
            self.failures.labels(model_name, reason)
        for phase in ("prefill", "decode"):
            self.return_hop.labels(model_name, phase)
        for family in (self.ttft, self.itl, self.e2e, self.queue_time, self.prompt_tokens, self.generation_tokens):
            family.labels(model_name)
        r.register(_AdmissionGauges(model_name, admission))

    def request(self, arrived: float, prompt_tokens: int) -> "RequestTimer":
        """arrived: time.monotonic() when the request came in (before parsing and queueing)."""
        return RequestTimer(self, arrived, prompt_tokens)

    def failed(self, reason: str) -> None:
        self.failures.labels(self.model_name, reason).inc()

    def replayed(self) -> None:
        self.replays.labels(self.model_name).inc()

    def watch_prefix_cache(self, prefix_cache) -> None:
        self.registry.register(_PrefixCacheFigures(self.model_name, prefix_cache))

    def speculated(self, drafter: str, drafted: int, kept: int) -> None:
        """One speculative trip: it gave kept + 1 tokens."""
        self.spec_trips.labels(self.model_name, drafter).inc()
        self.drafted.labels(self.model_name, drafter).inc(drafted)
        self.accepted.labels(self.model_name, drafter).inc(kept)

    def stage_changed(self, stage: int, up: bool, why: str) -> None:
        if not up:
            self.stage_failures.labels(self.model_name, str(stage)).inc()

    def observe_return_hop(self, phase: str, hop_ns: int) -> None:
        self.return_hop.labels(self.model_name, phase).observe(hop_ns / 1e9)


class RequestTimer:
    """One request's clock: arrival, admission, each token's arrival, the end. Token counters
    move as tokens arrive (prompt tokens once the prompt has gone through, with the first new
    token), so rates are live and count what was served, however the request ends."""

    def __init__(self, metrics: CoordinatorMetrics, arrived: float, prompt_tokens: int):
        self.metrics = metrics
        self.model = metrics.model_name
        self.arrived = arrived
        self.prompt_tokens = prompt_tokens
        self.generated = 0
        self.last_token: float | None = None
        self.ended = False

    def admitted(self) -> None:
        self.metrics.queue_time.labels(self.model).observe(time.monotonic() - self.arrived)

    def token(self) -> None:
        m, now = self.metrics, time.monotonic()
        if self.last_token is None:
            m.ttft.labels(self.model).observe(now - self.arrived)
            m.prompt_tokens.labels(self.model).inc(self.prompt_tokens)
        else:
            m.itl.labels(self.model).observe(now - self.last_token)
        m.generation_tokens.labels(self.model).inc()
        self.generated += 1
        self.last_token = now

    def finished(self, reason: str) -> None:
        """A request that ran to its end ("stop" / "length") or whose client left ("abort")."""
        if not self.ended:
            self.ended = True
            self.metrics.success.labels(self.model, reason).inc()
            self.metrics.e2e.labels(self.model).observe(time.monotonic() - self.arrived)

    def failed(self, reason: str) -> None:
        if not self.ended:
            self.ended = True
            self.metrics.failed(reason)
