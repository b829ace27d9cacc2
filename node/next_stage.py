"""The long-lived Steps stream from this stage to the next one (StepGroups: a batch computed here
goes on as one group, a lone step as a group of one)."""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator, Callable

import grpc

from node.clock_sync import ClockOffset, sync_clock
from node.cluster_auth import ClusterAuth
from proto import boltpipe_pb2 as pb
from proto import boltpipe_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)


class NextStageLink:
    """Opens one stream to the next stage and reuses it for every step. When the
    stream breaks, steps that could not be handed over are reported through
    `on_lost` and the next send opens a new stream. While open, it keeps an estimate
    of the next stage's clock (`clock`), which every step sent carries for hop timing."""

    def __init__(self, address: str, on_lost: Callable[[pb.Step, str], None], *, machine_id: str = "",
                 on_refused: Callable[[str], None] | None = None, auth: ClusterAuth | None = None):
        self.address = address
        self._auth = auth or ClusterAuth()
        self._on_lost = on_lost
        self._on_refused = on_refused
        self._machine_id = machine_id
        self.clock = ClockOffset()
        self._channel: grpc.aio.Channel | None = None
        self._queue: asyncio.Queue[pb.StepGroup | None] | None = None
        self._reader: asyncio.Task | None = None
        self._clock_sync: asyncio.Task | None = None

    def _open(self) -> None:
        self._channel = self._auth.channel(self.address)
        stub = pb_grpc.WorkerStub(self._channel)
        queue: asyncio.Queue[pb.StepGroup | None] = asyncio.Queue()
        self._queue = queue
        call = stub.Steps(self._drain(queue))
        self._reader = asyncio.create_task(self._read_acks(call, queue))
        if self._clock_sync is not None:
            self._clock_sync.cancel()
        self._clock_sync = asyncio.create_task(sync_clock(stub, self.clock, self._machine_id))

    async def _drain(self, queue: asyncio.Queue) -> AsyncIterator[pb.StepGroup]:
        while (group := await queue.get()) is not None:
            yield group

    async def _read_acks(self, call, queue: asyncio.Queue) -> None:
        try:
            async for ack in call:
                if ack.error:
                    log.warning("next stage %s refused a step: %s", self.address, ack.error)
                    if self._on_refused is not None:
                        self._on_refused(ack.error)
            reason = "stream closed"
        except grpc.aio.AioRpcError as exc:
            reason = f"{exc.code().name}: {exc.details()}"
        except asyncio.CancelledError:
            return
        log.warning("stream to next stage %s ended (%s)", self.address, reason)
        if self._queue is queue:
            self._queue = None
        while not queue.empty():
            group = queue.get_nowait()
            for step in group.steps if group is not None else ():
                self._on_lost(step, f"next stage {self.address} unreachable ({reason})")

    def send(self, step: pb.Step) -> None:
        self.send_group([step])

    def send_group(self, steps: list[pb.Step]) -> None:
        if self._queue is None:
            self._open()
        assert self._queue is not None
        self._queue.put_nowait(pb.StepGroup(steps=steps))

    async def close(self) -> None:
        if self._queue is not None:
            self._queue.put_nowait(None)
            self._queue = None
        for task in (self._reader, self._clock_sync):
            if task is not None:
                task.cancel()
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
