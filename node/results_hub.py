"""Routes step results to the coordinator that asked for them (by reply_to)."""

from __future__ import annotations

import asyncio
import logging

from proto import boltpipe_pb2 as pb

log = logging.getLogger(__name__)


class ResultsHub:
    def __init__(self) -> None:
        self._subscribers: dict[str, asyncio.Queue[pb.StepResult]] = {}

    def subscribe(self, reply_to: str) -> asyncio.Queue[pb.StepResult]:
        # A coordinator that reconnects replaces its old stream.
        queue: asyncio.Queue[pb.StepResult] = asyncio.Queue()
        self._subscribers[reply_to] = queue
        return queue

    def unsubscribe(self, reply_to: str, queue: asyncio.Queue) -> None:
        if self._subscribers.get(reply_to) is queue:
            del self._subscribers[reply_to]

    def publish(self, reply_to: str, result: pb.StepResult) -> bool:
        queue = self._subscribers.get(reply_to)
        if queue is None:
            log.debug("no subscriber %r for result of session %s", reply_to, result.session_id)
            return False
        queue.put_nowait(result)
        return True
