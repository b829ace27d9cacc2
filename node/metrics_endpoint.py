"""The worker's Prometheus endpoint: what the worker reports about itself, read at scrape time.

Gauges are collected from the service's own NodeInfo on every scrape, so they can never
drift from what GetInfo says.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily


class WorkerCollector:
    def __init__(self, name: str, service):
        self.name = name
        self.service = service

    def collect(self):
        info = self.service.info()
        labels = {"node": self.name}
        yield InfoMetricFamily("boltpipe_worker", "boltpipe worker build and machine",
                               value={**labels, "version": info.boltpipe_version, "machine": info.machine,
                                      "backend": info.slice.backend if info.loaded else ""})
        for metric, help_text, value in (
            ("boltpipe_worker_loaded", "1 when a layer slice is loaded", int(info.loaded)),
            ("boltpipe_worker_layers", "layers held by this worker",
             info.slice.layer_end - info.slice.layer_start if info.loaded else 0),
            ("boltpipe_worker_active_sessions", "sessions with KV caches on this worker", info.active_sessions),
            ("boltpipe_worker_kv_cache_bytes", "bytes held by KV caches", info.kv_cache_bytes),
            ("boltpipe_worker_resident_memory_bytes", "resident memory of the worker process", info.rss_bytes),
            ("boltpipe_worker_usable_memory_bytes", "memory this machine can give the model", info.usable_memory_bytes),
        ):
            gauge = GaugeMetricFamily(metric, help_text, labels=["node"])
            gauge.add_metric([self.name], value)
            yield gauge


def start_metrics_server(port: int, host: str, name: str, service) -> None:
    registry = CollectorRegistry()
    registry.register(WorkerCollector(name, service))
    ProcessCollector(registry=registry)
    start_http_server(port, addr=host, registry=registry)
