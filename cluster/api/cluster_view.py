"""What the web page shows, as one JSON snapshot: the ring (nodes in order, what each holds, whether it
is up) and its links, from the coordinator's own state (the plan, the stage watch, the live figures of
cluster/pipeline/stage_figures.py) and the nodes' GetInfo (memory, sessions, batch), refreshed at most
once a second whoever asks."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from cluster.api.admission import Admission
from cluster.api.coordinator_metrics import CoordinatorMetrics
from cluster.pipeline.engine import Engine
from proto import boltpipe_pb2 as pb

INFO_EVERY_S = 1.0
LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}


@dataclass(frozen=True)
class RingNode:
    """What the plan says of one stage."""

    name: str
    host: str
    machine: str
    backend: str
    layers: tuple[int, int]
    memory_limit_bytes: int
    next_link: str          # the kind of link to the next stage ("" on the last)


class ClusterView:
    def __init__(self, engine: Engine, admission: Admission, metrics: CoordinatorMetrics, model_name: str,
                 context_length: int, nodes: list[RingNode], api_key_required: bool):
        self.engine = engine
        self.admission = admission
        self.metrics = metrics
        self.model_name = model_name
        self.context_length = context_length
        self.nodes = nodes
        self.api_key_required = api_key_required
        self._infos: list[pb.NodeInfo | None] = [None] * len(nodes)
        self._read_at = 0.0
        self._lock = asyncio.Lock()

    async def _refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._read_at < INFO_EVERY_S:
                return
            stubs = self.engine.client.stubs
            replies = await asyncio.gather(*(stub.GetInfo(pb.InfoRequest(), timeout=1.0) for stub in stubs),
                                           return_exceptions=True)
            # A node that does not answer keeps what it said last (the watch says whether it is down).
            self._infos = [r if isinstance(r, pb.NodeInfo) else old for r, old in zip(replies, self._infos)]
            self._read_at = time.monotonic()

    async def snapshot(self) -> dict:
        await self._refresh()
        figures, down = self.engine.client.figures, self.engine.client.watch.down
        nodes = []
        for i, (node, info) in enumerate(zip(self.nodes, self._infos)):
            latency = figures.compute_ms(i)
            nodes.append({
                "name": node.name, "host": node.host, "machine": node.machine, "backend": node.backend,
                "layers": list(node.layers), "up": i not in down, "why_down": down.get(i, ""),
                "memory_used_bytes": info.rss_bytes if info else None, "memory_limit_bytes": node.memory_limit_bytes,
                "sessions": info.active_sessions if info else None, "kv_bytes": info.kv_cache_bytes if info else None,
                "prefix_bytes": info.prefix_bytes if info else None,
                "batch": round(info.recent_batch_size, 2) if info and info.recent_batch_size else None,
                "decode_p50_ms": round(latency[0], 2) if latency else None,
                "decode_p95_ms": round(latency[1], 2) if latency else None,
                "tokens_per_s": round(figures.tokens_per_s(), 2),
            })
        stats = self.admission.stats()
        return {"model": self.model_name, "api_key_required": self.api_key_required,
                "context_length": self.context_length, "nodes": nodes, "links": self._links(),
                "requests": {"running": stats.running, "waiting": stats.waiting, "max_running": stats.max_running},
                "prefix_cache": self._prefix_cache(), "speculation": self._speculation(), "time": time.time()}

    def _links(self) -> list[dict]:
        figures, names = self.engine.client.figures, [n.name for n in self.nodes]
        ends = ["coordinator", *names, "coordinator"]
        kinds = [_coordinator_link(self.nodes[0].host), *(n.next_link or "other" for n in self.nodes[:-1]),
                 _coordinator_link(self.nodes[-1].host)]
        out = []
        for i, kind in enumerate(kinds):
            hop = figures.hop_ms(i)
            out.append({"from": ends[i], "to": ends[i + 1], "kind": kind,
                        "hop_ms": round(hop, 3) if hop is not None else None})
        return out

    def _prefix_cache(self) -> dict | None:
        cache = self.engine.prefix_cache
        if cache is None:
            return None
        f = cache.figures
        return {"hits": f.hits, "misses": f.misses, "tokens_reused": f.tokens_reused, "entries": len(cache.index),
                "bytes": cache.index.nbytes}

    def _speculation(self) -> dict | None:
        plan = self.engine.speculation
        if not plan.on:
            return None
        value = self.metrics.registry.get_sample_value
        labels = {"model_name": self.model_name, "drafter": plan.drafter}
        return {"drafter": plan.drafter,
                "drafted": int(value("boltpipe_coordinator_drafted_tokens_total", labels) or 0),
                "accepted": int(value("boltpipe_coordinator_accepted_tokens_total", labels) or 0)}


def _coordinator_link(host: str) -> str:
    return "loopback" if host in LOOPBACK_HOSTS else "other"
