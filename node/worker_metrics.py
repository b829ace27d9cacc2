"""What a worker measures about its steps, for its Prometheus endpoint.

Every series carries the node's name and the stage it serves. A step's phase is "decode" when its
input is a generated token (the coordinator marks it) and "prefill" otherwise: prompt chunks, and the
step of the prompt's last token that samples the first new token.

Two kinds of event are measured. A step (one session's row) is received, waits, is computed and sent:
hop and queue times, step, token and byte counters are per step (`received_step`, `computed`,
`sent_message`). A forward pass computes one or more sessions' steps together (batched decode):
its compute time and its batch size are per pass (`forward_pass`), so a pass of 8 rows is one
observation of its time, which is the per-token latency each of those sessions sees at this node.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from proto import boltpipe_pb2 as pb

# Seconds: a decode step on a small slice takes well under a millisecond on a GPU, a prefill chunk
# of a large one seconds; hops on a Thunderbolt link tens of microseconds.
COMPUTE_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05,
                   0.065, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0)
HOP_BUCKETS = (0.00005, 0.0001, 0.0002, 0.0003, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075,
               0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
# Sessions in one forward pass: each size up to 4, then steps of 1.5x and 2x (6, 8, 12, ...).
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
ERROR_KINDS = ("invalid_step", "internal", "no_slice", "next_stage_unreachable", "refused_by_next_stage")
PHASES = ("prefill", "decode")


def step_tokens(step: pb.Step) -> int:
    """Token positions a step carries: ids on stage 0, rows of hidden state after it."""
    return len(step.token_ids) or (step.hidden.shape[1] if len(step.hidden.shape) == 3 else 0)


def step_phase(step: pb.Step) -> str:
    return "decode" if step.decode else "prefill"


class WorkerMetrics:
    """The worker's histograms and counters. Gauges (sessions, memory, ...) are read at scrape
    time by node.metrics_endpoint, so they never drift from what GetInfo says."""

    def __init__(self, node: str, registry: CollectorRegistry | None = None):
        self.node = node
        self.registry = registry or CollectorRegistry()
        r, labels = self.registry, ("node", "stage")
        self.compute = Histogram("boltpipe_worker_compute_seconds",
                                 "time of one forward pass through the slice, however many sessions it computes",
                                 labels + ("phase",), buckets=COMPUTE_BUCKETS, registry=r)
        self.queue = Histogram("boltpipe_worker_queue_seconds", "time a step waited on this worker before compute",
                               labels + ("phase",), buckets=COMPUTE_BUCKETS, registry=r)
        self.hop = Histogram("boltpipe_worker_hop_seconds",
                             "time from the previous stage's send (the coordinator's, on stage 0) to receipt here",
                             labels + ("phase",), buckets=HOP_BUCKETS, registry=r)
        self.batch = Histogram("boltpipe_worker_batch_size", "sessions computed together in one forward pass",
                               labels + ("phase",), buckets=BATCH_BUCKETS, registry=r)
        self.steps = Counter("boltpipe_worker_steps", "steps computed", labels + ("phase",), registry=r)
        self.tokens = Counter("boltpipe_worker_tokens", "token positions computed through the slice",
                              labels + ("phase",), registry=r)
        self.sampled = Counter("boltpipe_worker_sampled_tokens", "tokens sampled (last stage)", labels, registry=r)
        self.received = Counter("boltpipe_worker_received_bytes", "bytes of steps received", labels, registry=r)
        self.sent = Counter("boltpipe_worker_sent_bytes", "bytes of steps and results sent", labels, registry=r)
        self.errors = Counter("boltpipe_worker_errors", "steps refused or failed, by kind", labels + ("kind",),
                              registry=r)
        self.stage = "none"  # series appear once a slice is loaded (set_stage)

    def set_stage(self, stage: int) -> None:
        """Binds the series to the stage now served; every one exists from the start (at zero),
        so dashboards and rate() see them before the first error or step."""
        self.stage = str(stage) if stage >= 0 else "none"
        for kind in ERROR_KINDS:
            self.errors.labels(self.node, self.stage, kind)
        for phase in PHASES:
            for family in (self.compute, self.queue, self.hop, self.batch, self.steps, self.tokens):
                family.labels(self.node, self.stage, phase)
        for family in (self.sampled, self.received, self.sent):
            family.labels(self.node, self.stage)

    def received_step(self, step: pb.Step, recv_ns: int, hop_ns: int | None) -> None:
        self.received.labels(self.node, self.stage).inc(step.ByteSize())
        if hop_ns is not None:
            self.hop.labels(self.node, self.stage, step_phase(step)).observe(hop_ns / 1e9)

    def computed(self, step: pb.Step, timing: pb.StageTiming, *, sampled: int) -> None:
        """`sampled`: tokens the step chose (0; 1; a speculative step's kept drafts and the one after)."""
        """One session's step is computed (once per row of a batched pass): its queue time, the
        step and its tokens. Its compute time is the pass's, observed once by forward_pass."""
        phase = step_phase(step)
        labels = (self.node, self.stage, phase)
        self.queue.labels(*labels).observe(max(0, timing.compute_start_ns - timing.recv_ns) / 1e9)
        self.steps.labels(*labels).inc()
        self.tokens.labels(*labels).inc(step_tokens(step))
        if sampled:
            self.sampled.labels(self.node, self.stage).inc(int(sampled))

    def forward_pass(self, batch_size: int, phase: str, compute_s: float) -> None:
        """One forward pass computed `batch_size` sessions' steps together in `compute_s` seconds."""
        labels = (self.node, self.stage, phase)
        self.batch.labels(*labels).observe(batch_size)
        self.compute.labels(*labels).observe(max(0.0, compute_s))

    def sent_message(self, message) -> None:
        self.sent.labels(self.node, self.stage).inc(message.ByteSize())

    def error(self, kind: str) -> None:
        self.errors.labels(self.node, self.stage, kind).inc()
