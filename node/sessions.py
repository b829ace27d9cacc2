"""Per-session KV caches on one worker: created at a session's first step, freed on
EndSession or after sitting idle, bounded in count and bytes. Sessions computed together hold
their caches in a SessionBatch (node/session_batches.py) between steps."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import mlx.core as mx

from node.prefix_snapshots import Snapshot, SnapshotError, start_from, take
from node.rollback import drop_positions
from node.session_batches import SessionBatch

if TYPE_CHECKING:
    from node.grammar import GrammarState

ENDED_MEMORY = 4096  # ended session ids remembered


class SessionError(Exception):
    """A step that names a session in a way this worker cannot honour."""


class SessionLost(SessionError):
    """The session's cache could not be brought to the step's position: it is no longer usable."""


class PrefixMissing(SessionError):
    """A step names a kept prefix this worker does not hold (dropped, never kept, or the worker
    restarted): nothing was touched, and the coordinator's index is out of date."""


@dataclass
class Session:
    session_id: str
    cache: list | None              # None while the session's rows live in `batch`
    position: int = 0               # the position the next step must start at
    key: mx.array | None = None     # sampling key chain (last stage only)
    last_used: float = field(default_factory=time.monotonic)
    steps: int = 0
    batch: SessionBatch | None = None
    droppable: int = 0              # positions the last step guessed (speculation), which the next may drop
    grammar: GrammarState | None = None  # a constrained session's grammar (last stage only)

    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.cache) if self.cache is not None else 0


class SessionStore:
    def __init__(
        self,
        make_cache: Callable[[], list],
        *,
        max_sessions: int = 64,
        kv_budget_bytes: int = 0,
        idle_timeout_s: float = 300.0,
    ):
        self._make_cache = make_cache
        self.max_sessions = max_sessions
        self.kv_budget_bytes = kv_budget_bytes
        self.idle_timeout_s = idle_timeout_s
        self._sessions: dict[str, Session] = {}
        # Sessions ended here recently: a step still travelling the ring for one of them must not
        # open it again (it would hold a cache nobody will ever end).
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._batches: list[SessionBatch] = []
        self.prefixes: dict[str, Snapshot] = {}
        # Ended sessions to keep as prefixes, taken between steps (settle): (session, prefix id, tokens)
        self._keeping: dict[str, tuple[Session, str, int]] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def for_step(self, session_id: str, position: int, prefix_id: str = "") -> Session:
        """The session a step at `position` belongs to, created when position is 0, or at a kept
        prefix's position when the step names one."""
        session = self._sessions.get(session_id)
        if session is None:
            if session_id in self._ended:
                raise SessionError(f"session {session_id!r} has ended")
            if prefix_id and position > 0:
                snapshot = self.prefixes.get(prefix_id)
                if snapshot is None:
                    raise PrefixMissing(f"prefix {prefix_id!r} is not kept here")
                try:
                    cache = start_from(snapshot, position)
                except SnapshotError as exc:
                    raise SessionError(f"prefix {prefix_id!r}: {exc}") from None
                session = self.open_from(session_id, cache, position)
                session.last_used = time.monotonic()
                return session
            if position != 0:
                raise SessionError(f"unknown session {session_id!r} (a new session starts at position 0, got {position})")
            if len(self._sessions) >= self.max_sessions:
                raise SessionError(f"worker is full: {self.max_sessions} sessions open")
            if self.kv_budget_bytes and self.kv_bytes() >= self.kv_budget_bytes:
                raise SessionError(f"KV cache budget of {self.kv_budget_bytes} bytes is used up")
            session = Session(session_id, self._make_cache())
            self._sessions[session_id] = session
        elif position != session.position:
            back = session.position - position
            if not 0 < back <= session.droppable:
                raise SessionError(
                    f"session {session_id!r}: step starts at position {position} but the cache holds {session.position} tokens"
                )
            # The last step's guesses from `position` on were rejected: forget them.
            if not drop_positions(self.own_cache(session), back):
                raise SessionLost(f"session {session_id!r}: its cache could not drop {back} rejected positions")
            session.position = position
        session.droppable = 0
        session.last_used = time.monotonic()
        return session

    def open_from(self, session_id: str, cache: list, position: int) -> Session:
        """A new session whose cache already holds `position` positions (a cached prefix's)."""
        if session_id in self._sessions or session_id in self._ended:
            raise SessionError(f"session {session_id!r} exists or has ended")
        if len(self._sessions) >= self.max_sessions:
            raise SessionError(f"worker is full: {self.max_sessions} sessions open")
        session = Session(session_id, cache, position=position)
        self._sessions[session_id] = session
        return session

    def end(self, session_ids: list[str], keep: dict[str, tuple[str, int]] | None = None) -> int:
        """Ends the sessions; those in `keep` (session -> prefix id, positions) are kept as prefixes
        at the next settle (between steps: their caches may be in a batch being computed)."""
        for sid, (prefix_id, tokens) in (keep or {}).items():
            session = self._sessions.get(sid)
            if session is not None:
                self._keeping[sid] = (session, prefix_id, tokens)
        session_ids = list(session_ids) + [sid for sid in keep or {} if sid not in session_ids]
        for sid in session_ids:
            self._ended[sid] = None
            self._ended.move_to_end(sid)
        while len(self._ended) > ENDED_MEMORY:
            self._ended.popitem(last=False)
        ended = [s for sid in session_ids if (s := self._sessions.pop(sid, None)) is not None]
        for session in ended:
            # Only marked here (EndSession runs beside the compute thread): settle() takes it apart.
            if session.batch is not None:
                session.batch.stale = True
        return len(ended)

    # -- batches: called between steps, never while one computes -----------------------------------

    def settle(self) -> None:
        """Takes apart batches that lost a member, giving the others their own caches back, and
        keeps the prefixes asked for."""
        for batch in [b for b in self._batches if b.stale]:
            self._release(batch)
        keeping, self._keeping = self._keeping, {}
        for session, prefix_id, tokens in keeping.values():
            try:
                self.prefixes[prefix_id] = take(session.cache, session.position, min(tokens, session.position))
            except SnapshotError:
                pass  # not kept: a later step naming it is refused as missing, and the coordinator forgets it

    def drop_prefixes(self, prefix_ids) -> int:
        return sum(self.prefixes.pop(p, None) is not None for p in prefix_ids)

    def own_cache(self, session: Session) -> list:
        """The session's own cache (its batch, if any, is taken apart first)."""
        if session.batch is not None:
            self._release(session.batch)
        return session.cache

    def batch_for(self, sessions: list[Session]) -> SessionBatch:
        """The batch of exactly these sessions: the one they already form, else a new merge (the
        batches any of them was in are taken apart first). Its rows may come in another order."""
        current = sessions[0].batch
        if current is not None and current.same_members(sessions):
            return current
        for session in sessions:
            if session.batch is not None:
                self._release(session.batch)
        batch = SessionBatch(sessions)
        self._batches.append(batch)
        return batch

    def _release(self, batch: SessionBatch) -> None:
        batch.release(keep=lambda s: self._sessions.get(s.session_id) is s or
                      self._keeping.get(s.session_id, (None,))[0] is s)
        self._batches.remove(batch)

    def end_idle(self, now: float | None = None) -> list[str]:
        now = time.monotonic() if now is None else now
        idle = [sid for sid, s in self._sessions.items() if now - s.last_used > self.idle_timeout_s]
        self.end(idle)
        return idle

    def kv_bytes(self) -> int:
        return (sum(s.nbytes() for s in self._sessions.values()) + sum(b.nbytes for b in self._batches)
                + self.prefix_bytes())

    def prefix_bytes(self) -> int:
        return sum(p.nbytes for p in self.prefixes.values())
