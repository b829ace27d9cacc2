"""Which sessions' decode steps travel the ring together, and when: a pure state machine.

With S stages, one batch at a time leaves S-1 stages idle. The coordinator keeps up to
`max_lanes` (S by default) *lanes* in flight: a lane is a group of sessions whose decode steps
are sent as one StepGroup, so every stage computes them as one batch, while the other lanes are
at other stages. A lane is stable: when its results are back, the same sessions are sent together
again (the workers keep their merged caches between steps), topped up with sessions waiting to
join. Nothing ever waits for company: a session alone is sent at once, and a lane whose members
are back waits at most `grace_s` for one that has not asked again yet (it is then sent without it,
and the late one joins a lane like a newcomer).

No sockets and no clock here: callers pass the time, and `dispatch` says what to send now.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class _Lane:
    members: list[str]                              # sessions, in the order sent last time
    outstanding: set[str] = field(default_factory=set)  # sent, result not back yet

    @property
    def in_flight(self) -> bool:
        return bool(self.outstanding)


@dataclass
class DecodeLanes:
    max_lanes: int
    max_batch: int
    grace_s: float = 0.002
    _lanes: list[_Lane] = field(default_factory=list)
    _lane_of: dict[str, _Lane] = field(default_factory=dict)
    _waiting: dict[str, float] = field(default_factory=dict)  # session -> when its step became ready

    def __post_init__(self) -> None:
        if self.max_lanes < 1 or self.max_batch < 1:
            raise ValueError("max_lanes and max_batch must be at least 1")

    # -- events ------------------------------------------------------------------------------------

    def ready(self, session: str, now: float) -> None:
        """The session has its next decode step to send."""
        self._waiting.setdefault(session, now)

    def returned(self, session: str) -> None:
        """The session's step sent last has its result (or failed)."""
        lane = self._lane_of.get(session)
        if lane is not None:
            lane.outstanding.discard(session)

    def leave(self, session: str) -> None:
        """The session sends no more steps (finished, failed or cancelled)."""
        self._waiting.pop(session, None)
        lane = self._lane_of.pop(session, None)
        if lane is not None:
            lane.outstanding.discard(session)
            lane.members.remove(session)
            if not lane.members:
                self._lanes.remove(lane)

    # -- the decision ------------------------------------------------------------------------------

    def dispatch(self, now: float) -> list[list[str]]:
        """The groups to send now, each in row order; marks them in flight."""
        groups = []
        newcomers = [s for s in sorted(self._waiting, key=self._waiting.get) if s not in self._lane_of]
        # A lane back from its trip goes again, once its members asked or the grace is over.
        for lane in [lane for lane in self._lanes if not lane.in_flight]:
            ready = [s for s in lane.members if s in self._waiting]
            if not ready:
                continue
            late = [s for s in lane.members if s not in self._waiting]
            if late and now - min(self._waiting[s] for s in ready) < self.grace_s:
                continue
            for session in late:  # it joins again as a newcomer when it asks
                self._lane_of.pop(session)
            lane.members = ready
            self._top_up(lane, newcomers)
            groups.append(self._send(lane))
        # Newcomers open lanes while there are free ones, then wait for a lane to come back.
        while newcomers and len(self._lanes) < self.max_lanes:
            lane = _Lane([])
            self._lanes.append(lane)
            self._top_up(lane, newcomers, target=self._target(len(newcomers)))
            groups.append(self._send(lane))
        return groups

    def deadline(self) -> float | None:
        """When `dispatch` must be called again if no event comes first (a lane's grace ends)."""
        ends = []
        for lane in self._lanes:
            if lane.in_flight:
                continue
            asked = [self._waiting[s] for s in lane.members if s in self._waiting]
            if asked and len(asked) < len(lane.members):
                ends.append(min(asked) + self.grace_s)
        return min(ends) if ends else None

    # -- helpers -----------------------------------------------------------------------------------

    def _target(self, extra: int) -> int:
        """How many sessions a lane should carry: the sessions in lanes and waiting, spread evenly
        over max_lanes lanes, at most max_batch."""
        total = len(self._lane_of) + extra
        return max(1, min(self.max_batch, math.ceil(total / self.max_lanes)))

    def _top_up(self, lane: _Lane, newcomers: list[str], target: int | None = None) -> None:
        target = self._target(len(newcomers)) if target is None else target
        while newcomers and len(lane.members) < target:
            session = newcomers.pop(0)
            lane.members.append(session)
            self._lane_of[session] = lane

    def _send(self, lane: _Lane) -> list[str]:
        for session in lane.members:
            del self._waiting[session]
        lane.outstanding = set(lane.members)
        return list(lane.members)

    # -- for status and tests ----------------------------------------------------------------------

    def lanes(self) -> list[list[str]]:
        return [list(lane.members) for lane in self._lanes]

    def waiting(self) -> list[str]:
        return sorted(self._waiting, key=self._waiting.get)
