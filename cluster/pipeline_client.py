"""The coordinator's end of the data plane: one Steps stream into stage 0 and a
Results subscription on every stage (tokens come from the last stage, errors from
whichever stage failed). It keeps an estimate of every stage's clock, so the hop into stage 0
and the hop back from the last stage can be timed (node.clock_sync)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import AsyncIterator, Callable

import grpc

from node import sysinfo
from node.clock_sync import ClockOffset, sync_clock
from proto import boltpipe_pb2 as pb
from proto import boltpipe_pb2_grpc as pb_grpc
from proto import grpc_options

log = logging.getLogger(__name__)


class PipelineError(RuntimeError):
    """A step failed somewhere in the pipeline; the message names the stage."""


@dataclass
class StageEndpoint:
    name: str
    address: str  # host:port


class PipelineClient:
    def __init__(self, stages: list[StageEndpoint]):
        if not stages:
            raise ValueError("a pipeline needs at least one stage")
        self.stages = stages
        self.reply_to = f"coord-{uuid.uuid4().hex[:12]}"
        self.channels = [grpc.aio.insecure_channel(s.address, options=grpc_options()) for s in stages]
        self.stubs = [pb_grpc.WorkerStub(c) for c in self.channels]
        self._sessions: dict[str, asyncio.Queue[pb.StepResult]] = {}
        self._outbox: asyncio.Queue[pb.Step | None] = asyncio.Queue()
        self._tasks: list[asyncio.Task] = []
        self._subscribed: list[asyncio.Event] = []
        self._closed = False
        self.clocks = [ClockOffset() for _ in stages]
        # Called with (phase, nanoseconds) for every result whose hop back could be timed.
        self.on_return_hop: Callable[[str, int], None] | None = None

    async def start(self, timeout: float = 10.0) -> None:
        for index, stub in enumerate(self.stubs):
            ready = asyncio.Event()
            self._subscribed.append(ready)
            self._tasks.append(asyncio.create_task(self._read_results(index, stub, ready)))
        self._tasks.append(asyncio.create_task(self._send_steps()))
        machine_id = sysinfo.machine_id()
        self._tasks.extend(asyncio.create_task(sync_clock(stub, clock, machine_id))
                           for stub, clock in zip(self.stubs, self.clocks))
        # Results must be subscribed before the first step can produce one.
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in self._subscribed)), timeout)

    async def _drain(self) -> AsyncIterator[pb.Step]:
        while (step := await self._outbox.get()) is not None:
            yield step

    async def _send_steps(self) -> None:
        call = self.stubs[0].Steps(self._drain())
        try:
            async for ack in call:
                if ack.error:
                    log.warning("stage 0 refused a step: %s", ack.error)
        except grpc.aio.AioRpcError as exc:
            if not self._closed:
                self._fail_all(f"stream to stage 0 ({self.stages[0].name}) broke: {exc.code().name} {exc.details()}")
        except asyncio.CancelledError:
            pass

    async def _read_results(self, index: int, stub: pb_grpc.WorkerStub, ready: asyncio.Event) -> None:
        call = stub.Results(pb.ResultsRequest(reply_to=self.reply_to), wait_for_ready=True)
        try:
            # The initial metadata arrives once the worker has registered us.
            await call.initial_metadata()
            ready.set()
            last = index == len(self.stubs) - 1
            async for result in call:
                if last and result.timings:
                    self._time_return_hop(result, time.time_ns())
                queue = self._sessions.get(result.session_id)
                if queue is not None:
                    queue.put_nowait(result)
        except grpc.aio.AioRpcError as exc:
            if not self._closed:
                self._fail_all(f"results stream from stage {index} ({self.stages[index].name}) broke: {exc.code().name}")
        except asyncio.CancelledError:
            pass

    def _time_return_hop(self, result: pb.StepResult, recv_ns: int) -> None:
        clock, sent = self.clocks[-1], result.timings[-1]
        if self.on_return_hop is None or not clock.known or not sent.send_ns:
            return
        # The last stage's clock reads offset_ns ahead of ours.
        hop = max(0, recv_ns - (sent.send_ns - clock.offset_ns))
        self.on_return_hop("decode" if result.decode else "prefill", hop)

    def _fail_all(self, message: str) -> None:
        log.error(message)
        for session_id, queue in self._sessions.items():
            queue.put_nowait(pb.StepResult(session_id=session_id, error=message, token_id=-1))

    def open_session(self, session_id: str) -> asyncio.Queue[pb.StepResult]:
        queue: asyncio.Queue[pb.StepResult] = asyncio.Queue()
        self._sessions[session_id] = queue
        return queue

    def send(self, step: pb.Step) -> None:
        step.reply_to = self.reply_to
        # Stage -1 is the coordinator: stage 0 times the hop from this send.
        timing = step.timings.add(stage=-1)
        self.clocks[0].stamp(timing)
        timing.send_ns = time.time_ns()
        self._outbox.put_nowait(step)

    async def end_session(self, session_id: str, timeout: float = 5.0) -> None:
        self._sessions.pop(session_id, None)
        request = pb.EndSessionRequest(session_ids=[session_id])
        results = await asyncio.gather(
            *(stub.EndSession(request, timeout=timeout) for stub in self.stubs), return_exceptions=True
        )
        for stage, outcome in zip(self.stages, results):
            if isinstance(outcome, Exception):
                log.warning("could not end session %s on %s: %s", session_id, stage.name, outcome)

    async def infos(self, timeout: float = 5.0) -> list[pb.NodeInfo]:
        return list(await asyncio.gather(*(stub.GetInfo(pb.InfoRequest(), timeout=timeout) for stub in self.stubs)))

    async def close(self) -> None:
        self._closed = True
        self._outbox.put_nowait(None)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in self.channels), return_exceptions=True)
