"""The order in which a worker computes the steps waiting for it.

Steps of one session run in arrival order (positions must follow each other). Across
sessions, decode-sized steps go before prompt chunks, so one long prompt does not
freeze every other stream; a waiting prompt chunk still runs after at most
`decode_burst` decode steps, so prompts are never starved either.

Steps that arrived in one StepGroup carry its group number: when the step chosen next heads a
group, the heads of the other sessions' queues from the same group come with it, to be computed
as one batch (a session's step never overtakes its own earlier steps, so a member stuck behind
one is left for later).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")


@dataclass
class _Pending(Generic[Item]):
    item: Item
    small: bool
    arrival: int
    group: int | None


@dataclass
class StepQueue(Generic[Item]):
    decode_burst: int = 4
    _by_session: "OrderedDict[str, deque[_Pending[Item]]]" = field(default_factory=OrderedDict)
    _arrivals: int = 0
    _decodes_since_chunk: int = 0
    _ready: asyncio.Event = field(default_factory=asyncio.Event)

    def __len__(self) -> int:
        return sum(len(q) for q in self._by_session.values())

    def put(self, session_id: str, item: Item, *, small: bool, group: int | None = None) -> None:
        """`group`: the number of the StepGroup the step came in, when it may be batched with the
        group's other steps (None: it runs alone)."""
        self._arrivals += 1
        self._by_session.setdefault(session_id, deque()).append(_Pending(item, small, self._arrivals, group))
        self._ready.set()

    def drop(self, session_id: str) -> list[Item]:
        """Removes a session's waiting steps (it ended or failed); returns them."""
        pending = self._by_session.pop(session_id, None)
        return [p.item for p in pending] if pending else []

    def _pop(self, session_id: str) -> _Pending[Item]:
        queue = self._by_session[session_id]
        pending = queue.popleft()
        if not queue:
            del self._by_session[session_id]
        return pending

    def take_nowait(self) -> list[Item]:
        """The next step to compute, with the steps of its group that can join it; [] when empty."""
        heads = [(sid, q[0]) for sid, q in self._by_session.items()]
        if not heads:
            return []
        decodes = [h for h in heads if h[1].small]
        chunks = [h for h in heads if not h[1].small]
        if decodes and (not chunks or self._decodes_since_chunk < self.decode_burst):
            session_id, _ = min(decodes, key=lambda h: h[1].arrival)
            self._decodes_since_chunk = self._decodes_since_chunk + 1 if chunks else 0
        else:
            session_id, _ = min(chunks, key=lambda h: h[1].arrival)
            self._decodes_since_chunk = 0
        first = self._pop(session_id)
        if first.group is None:
            return [first.item]
        mates = sorted((h for h in heads if h[0] != session_id and h[1].group == first.group),
                       key=lambda h: h[1].arrival)
        return [first.item] + [self._pop(sid).item for sid, _ in mates]

    async def take(self) -> list[Item]:
        while True:
            items = self.take_nowait()
            if items:
                return items
            self._ready.clear()
            await self._ready.wait()
