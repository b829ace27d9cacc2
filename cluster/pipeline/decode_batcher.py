"""Sends the sessions' decode steps as the lanes of cluster.pipeline.decode_lanes decide: the
engine hands each decode step here instead of to the PipelineClient, and says when its result is
back and when the session is over."""

from __future__ import annotations

import asyncio
import time

from cluster.pipeline.decode_lanes import DecodeLanes
from cluster.pipeline.pipeline_client import PipelineClient
from proto import boltpipe_pb2 as pb


class DecodeBatcher:
    def __init__(self, client: PipelineClient, *, max_lanes: int, max_batch: int, grace_s: float = 0.002):
        self.client = client
        self.lanes = DecodeLanes(max_lanes=max_lanes, max_batch=max_batch, grace_s=grace_s)
        self._steps: dict[str, pb.Step] = {}
        self._timer: asyncio.TimerHandle | None = None

    def send(self, step: pb.Step) -> None:
        """A decode step (one token, a session that has a cache on every stage)."""
        self._steps[step.session_id] = step
        self.lanes.ready(step.session_id, time.monotonic())
        self._pump()

    def returned(self, session_id: str) -> None:
        self.lanes.returned(session_id)
        self._pump()

    def leave(self, session_id: str) -> None:
        self._steps.pop(session_id, None)
        self.lanes.leave(session_id)
        self._pump()

    def _pump(self) -> None:
        for group in self.lanes.dispatch(time.monotonic()):
            self.client.send_group([self._steps.pop(session) for session in group])
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if (deadline := self.lanes.deadline()) is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(max(0.0, deadline - time.monotonic()), self._pump)
