"""The worker's Prometheus endpoint: step histograms and counters (node.worker_metrics) plus
what the worker reports about itself, read at scrape time.

Gauges are collected from the service's own NodeInfo on every scrape, so they can never
drift from what GetInfo says.
"""

from __future__ import annotations

from prometheus_client import ProcessCollector, start_http_server
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily


def memory_limit_bytes(info) -> int:
    """What a worker may use: the plan's budget for it, else what its machine can give."""
    if info.loaded and info.slice.memory_limit_bytes:
        return info.slice.memory_limit_bytes
    return info.usable_memory_bytes


class WorkerCollector:
    def __init__(self, name: str, service):
        self.name = name
        self.service = service

    def collect(self):
        info = self.service.info()
        stage = self.service.metrics.stage
        labels = {"node": self.name, "stage": stage}
        layers = info.slice.layer_end - info.slice.layer_start if info.loaded else 0
        yield InfoMetricFamily("boltpipe_worker", "boltpipe worker build, machine and slice",
                               value={**labels, "version": info.boltpipe_version, "machine": info.machine,
                                      "backend": (info.slice.backend or "mlx") if info.loaded else "",
                                      "layer_start": str(info.slice.layer_start) if info.loaded else "",
                                      "layer_end": str(info.slice.layer_end) if info.loaded else ""})
        limit = memory_limit_bytes(info)
        for metric, help_text, value in (
            ("boltpipe_worker_loaded", "1 when a layer slice is loaded", int(info.loaded)),
            ("boltpipe_worker_layers", "layers held by this worker", layers),
            ("boltpipe_worker_active_sessions", "sessions with KV caches on this worker", info.active_sessions),
            ("boltpipe_worker_kv_cache_bytes", "bytes held by KV caches", info.kv_cache_bytes),
            ("boltpipe_worker_prefix_bytes", "bytes of KV caches kept as prefixes for later sessions (in kv_cache_bytes)",
             info.prefix_bytes),
            ("boltpipe_worker_prefixes", "prefixes kept for later sessions", info.prefixes),
            ("boltpipe_worker_resident_memory_bytes", "resident memory of the worker process", info.rss_bytes),
            ("boltpipe_worker_usable_memory_bytes", "memory this machine can give the model", info.usable_memory_bytes),
            ("boltpipe_worker_memory_limit_bytes",
             "memory the plan gives this node (what the machine can give when no plan says)", limit),
        ):
            gauge = GaugeMetricFamily(metric, help_text, labels=["node", "stage"])
            gauge.add_metric([self.name, stage], value)
            yield gauge


def start_metrics_server(port: int, host: str, name: str, service) -> None:
    registry = service.metrics.registry
    registry.register(WorkerCollector(name, service))
    ProcessCollector(registry=registry)
    start_http_server(port, addr=host, registry=registry)
