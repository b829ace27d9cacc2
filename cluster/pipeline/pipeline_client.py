"""The coordinator's end of the data plane: one Steps stream into stage 0 and a
Results subscription on every stage (tokens come from the last stage, errors from
whichever stage failed). It keeps an estimate of every stage's clock, so the hop into stage 0
and the hop back from the last stage can be timed (node.clock_sync).

It also watches the stages (cluster.pipeline.stage_watch): a stage whose stream breaks or that stops
answering health checks is marked down and every request in flight is failed at once (with
`stage_lost`, so the engine may replay it); the streams reconnect by themselves, and a stage that
comes back without its slice is loaded again before it is marked up."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import AsyncIterator, Callable, Sequence

import grpc

from cluster.pipeline.stage_figures import StageFigures
from cluster.pipeline.stage_watch import StageWatch, WatchSettings
from node import sysinfo
from node.clock_sync import ClockOffset, sync_clock
from node.cluster_auth import ClusterAuth
from proto import boltpipe_pb2 as pb
from proto import boltpipe_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

RECONNECT_S = 0.2
ENDED_REMEMBERED = 4096  # ended sessions told again to a stage that comes back


class PipelineError(RuntimeError):
    """A step failed somewhere in the pipeline; the message names the stage."""


class StageFailure(PipelineError):
    """A stage went down under a request: nothing was wrong with the request itself."""


@dataclass
class StageEndpoint:
    name: str
    address: str  # host:port


class PipelineClient:
    def __init__(self, stages: list[StageEndpoint], auth: ClusterAuth, *, specs: list[pb.SliceSpec] | None = None,
                 watch: WatchSettings | None = None):
        if not stages:
            raise ValueError("a pipeline needs at least one stage")
        self.stages = stages
        self.reply_to = f"coord-{uuid.uuid4().hex[:12]}"
        self.channels = [auth.channel(s.address) for s in stages]
        self.stubs = [pb_grpc.WorkerStub(c) for c in self.channels]
        self._sessions: dict[str, asyncio.Queue[pb.StepResult]] = {}
        self._ended: deque[str] = deque(maxlen=ENDED_REMEMBERED)
        self._outbox: asyncio.Queue[list[pb.Step] | None] = asyncio.Queue()
        self._tasks: list[asyncio.Task] = []
        self._subscribed = [asyncio.Event() for _ in stages]
        self._closed = False
        self.clocks = [ClockOffset() for _ in stages]
        # Called with (phase, nanoseconds) for every result whose hop back could be timed.
        self.on_return_hop: Callable[[str, int], None] | None = None
        self.figures = StageFigures(len(stages))  # live per-stage figures (the web page)
        self.watch = StageWatch(self, specs, watch or WatchSettings())

    async def start(self, timeout: float = 10.0) -> None:
        for index in range(len(self.stubs)):
            self._tasks.append(asyncio.create_task(self._read_results(index)))
        self._tasks.append(asyncio.create_task(self._send_steps()))
        machine_id = sysinfo.machine_id()
        self._tasks.extend(asyncio.create_task(sync_clock(stub, clock, machine_id))
                           for stub, clock in zip(self.stubs, self.clocks))
        # Results must be subscribed before the first step can produce one.
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in self._subscribed)), timeout)
        self._tasks.extend(self.watch.start())

    async def _drain(self, outbox: asyncio.Queue[list[pb.Step] | None]) -> AsyncIterator[pb.StepGroup]:
        while (steps := await outbox.get()) is not None:
            # Steps of sessions failed while the stream was down would open sessions nobody ends.
            live = [step for step in steps if step.session_id in self._sessions]
            if live:
                yield pb.StepGroup(steps=live)

    async def _send_steps(self) -> None:
        while not self._closed:
            call = self.stubs[0].Steps(self._drain(self._outbox), wait_for_ready=True)
            try:
                async for ack in call:
                    if ack.error:
                        log.warning("stage 0 refused a step: %s", ack.error)
            except grpc.aio.AioRpcError as exc:
                if not self._closed:
                    self.watch.stage_failed(0, f"the stream into it broke ({exc.code().name})")
            except asyncio.CancelledError:
                return
            # A queue per stream, replaced at once: steps the broken stream still held belong to
            # requests just failed; steps of requests that come next wait for the new stream. The
            # sentinel ends the old stream's request iterator (else it lingers, pending, until GC).
            self._outbox.put_nowait(None)
            self._outbox = asyncio.Queue()
            await asyncio.sleep(RECONNECT_S)

    async def _read_results(self, index: int) -> None:
        last = index == len(self.stubs) - 1
        while not self._closed:
            call = self.stubs[index].Results(pb.ResultsRequest(reply_to=self.reply_to), wait_for_ready=True)
            try:
                # The initial metadata arrives once the worker has registered us.
                await call.initial_metadata()
                self._subscribed[index].set()
                async for result in call:
                    if last and result.timings:
                        self._time_return_hop(result, time.time_ns())
                    queue = self._sessions.get(result.session_id)
                    if queue is not None:
                        queue.put_nowait(result)
            except grpc.aio.AioRpcError as exc:
                self._subscribed[index].clear()
                if not self._closed:
                    self.watch.stage_failed(index, f"its results stream broke ({exc.code().name})")
            except asyncio.CancelledError:
                return
            await asyncio.sleep(RECONNECT_S)

    async def subscribed(self, index: int, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self._subscribed[index].wait(), timeout_s)
            return True
        except asyncio.TimeoutError:
            return False

    def _time_return_hop(self, result: pb.StepResult, recv_ns: int) -> None:
        clock, sent = self.clocks[-1], result.timings[-1]
        hop = None
        if clock.known and sent.send_ns:
            # The last stage's clock reads offset_ns ahead of ours.
            hop = max(0, recv_ns - (sent.send_ns - clock.offset_ns))
            if self.on_return_hop is not None:
                self.on_return_hop("decode" if result.decode else "prefill", hop)
        self.figures.observe(result, returned_ns=hop)

    def fail_all(self, message: str, *, stage_lost: bool = True) -> None:
        """Ends every request in flight with `message`, at once."""
        log.error(message)
        for session_id, queue in self._sessions.items():
            queue.put_nowait(pb.StepResult(session_id=session_id, error=message, token_id=-1, failed_stage=-1,
                                           stage_lost=stage_lost))

    def open_session(self, session_id: str) -> asyncio.Queue[pb.StepResult]:
        queue: asyncio.Queue[pb.StepResult] = asyncio.Queue()
        self._sessions[session_id] = queue
        return queue

    def send(self, step: pb.Step) -> None:
        self.send_group([step])

    def send_group(self, steps: list[pb.Step]) -> None:
        """Steps of different sessions that stage 0 may compute as one batch (cluster.pipeline.decode_lanes)."""
        for step in steps:
            step.reply_to = self.reply_to
            # Stage -1 is the coordinator: stage 0 times the hop from this send.
            timing = step.timings.add(stage=-1)
            self.clocks[0].stamp(timing)
            timing.send_ns = time.time_ns()
        self._outbox.put_nowait(list(steps))

    @property
    def ready(self) -> bool:
        return self.watch.all_up

    async def wait_ready(self, timeout_s: float) -> None:
        """Returns once every stage serves again; PipelineError naming the stages still down otherwise."""
        if not await self.watch.wait_all_up(timeout_s):
            raise PipelineError(f"{self.watch.describe_down()}; still down after waiting {timeout_s:g} s")

    async def end_session(self, session_id: str, timeout: float = 5.0, *, keep: pb.KeepPrefix | None = None,
                          drop_prefixes: Sequence[str] = ()) -> None:
        """Ends the session on every stage; `keep`: its first positions stay there as a prefix;
        `drop_prefixes`: kept prefixes every stage forgets."""
        self._sessions.pop(session_id, None)
        self._ended.append(session_id)
        request = pb.EndSessionRequest(session_ids=[session_id], keep=[keep] if keep else [],
                                       drop_prefixes=list(drop_prefixes))
        results = await asyncio.gather(
            *(stub.EndSession(request, timeout=timeout) for i, stub in enumerate(self.stubs) if self.watch.is_up(i)),
            return_exceptions=True)
        for outcome in results:
            if isinstance(outcome, Exception):
                log.warning("could not end session %s everywhere: %s", session_id, outcome)

    def recently_ended(self) -> list[str]:
        return list(self._ended)

    async def infos(self, timeout: float = 5.0) -> list[pb.NodeInfo]:
        return list(await asyncio.gather(*(stub.GetInfo(pb.InfoRequest(), timeout=timeout) for stub in self.stubs)))

    async def close(self) -> None:
        self._closed = True
        self._outbox.put_nowait(None)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in self.channels), return_exceptions=True)
