"""Which stages of the pipeline are up, from the coordinator's side.

A stage is marked down when one of the coordinator's streams with it breaks (a dead process is
seen at once) or when it misses `misses` health checks in a row (a stalled one, within
misses x (interval + timeout) seconds). Marking a stage down fails every request in flight. A down
stage keeps being probed; when it answers again it is loaded again if it came back without its
slice, its results stream must be subscribed again, it is told which sessions ended meanwhile
(so late steps of those cannot open caches nobody would end), and then it is marked up.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import grpc

from proto import boltpipe_pb2 as pb
from proto import boltpipe_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

END_BATCH = 256  # session ids per EndSession call


@dataclass(frozen=True)
class WatchSettings:
    interval_s: float = 1.0        # between health checks of one stage
    timeout_s: float = 2.0         # a health check's deadline
    misses: int = 2                # checks missed in a row before a stage is down
    reload_timeout_s: float = 900.0


class NamedStage(Protocol):
    name: str


class WatchedPipeline(Protocol):
    """What the watch needs of the pipeline it watches (cluster.pipeline.pipeline_client implements it)."""

    stages: Sequence[NamedStage]
    stubs: Sequence[pb_grpc.WorkerStub]

    def fail_all(self, message: str) -> None:
        """End every request in flight with this error."""

    async def subscribed(self, index: int, timeout_s: float) -> bool:
        """Whether the results stream of stage `index` is (again) subscribed within the timeout."""

    def recently_ended(self) -> list[str]:
        """Sessions ended lately, to be told to a stage that comes back."""


class StageWatch:
    def __init__(self, client: WatchedPipeline, specs: list[pb.SliceSpec] | None, settings: WatchSettings):
        self.client = client
        self.specs = specs
        self.settings = settings
        self.down: dict[int, str] = {}
        self._all_up = asyncio.Event()
        self._all_up.set()
        # Called with (stage index, up?, why) on every change, for metrics and logs.
        self.on_change: Callable[[int, bool, str], None] | None = None

    def start(self) -> list[asyncio.Task]:
        return [asyncio.create_task(self._watch(i)) for i in range(len(self.client.stubs))]

    @property
    def all_up(self) -> bool:
        return not self.down

    def is_up(self, index: int) -> bool:
        return index not in self.down

    def name(self, index: int) -> str:
        return f"stage {index} ({self.client.stages[index].name})"

    def describe_down(self) -> str:
        return "; ".join(f"{self.name(i)} is down: {why}" for i, why in sorted(self.down.items())) or "all stages up"

    async def wait_all_up(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self._all_up.wait(), timeout_s)
            return True
        except asyncio.TimeoutError:
            return False

    def stage_failed(self, index: int, why: str) -> None:
        if index in self.down:
            return
        self.down[index] = why
        self._all_up.clear()
        if self.on_change is not None:
            self.on_change(index, False, why)
        self.client.fail_all(f"{self.name(index)} is down: {why}")

    def _stage_back(self, index: int) -> None:
        why = self.down.pop(index)
        log.info("%s serves again (it was down: %s)", self.name(index), why)
        if self.on_change is not None:
            self.on_change(index, True, why)
        if not self.down:
            self._all_up.set()

    async def _watch(self, index: int) -> None:
        stub, misses = self.client.stubs[index], 0
        while True:
            await asyncio.sleep(self.settings.interval_s)
            try:
                reply = await stub.Health(pb.HealthRequest(), timeout=self.settings.timeout_s)
            except grpc.aio.AioRpcError as exc:
                misses += 1
                if misses >= self.settings.misses:
                    self.stage_failed(index, f"no answer to {misses} health checks in a row ({exc.code().name})")
                continue
            misses = 0
            if reply.status == "empty" and index not in self.down:
                self.stage_failed(index, "it restarted without its slice")
            if index in self.down:
                await self._recover(index, reply.status)

    async def _recover(self, index: int, status: str) -> None:
        if status == "loading":
            return
        if status == "empty":
            if not self.specs:
                return  # nothing to load it with: it stays down
            log.info("%s came back without its slice; loading it again", self.name(index))
            try:
                async for event in self.client.stubs[index].LoadSlice(self.specs[index],
                                                                       timeout=self.settings.reload_timeout_s):
                    if event.phase == "ready":
                        break
            except grpc.aio.AioRpcError as exc:
                log.warning("%s could not load its slice again: %s", self.name(index), exc.details())
                return
        if not await self.client.subscribed(index, timeout_s=5.0):
            return
        ended = self.client.recently_ended()
        try:
            for start in range(0, len(ended), END_BATCH):
                await self.client.stubs[index].EndSession(
                    pb.EndSessionRequest(session_ids=ended[start:start + END_BATCH]), timeout=self.settings.timeout_s)
        except grpc.aio.AioRpcError:
            return
        self._stage_back(index)
