"""Prefix caching on the coordinator's side (issue 19): which kept prefix a new request starts from,
what a finished request leaves behind, and forgetting everything when a stage may have lost its
prefixes. The stages never search: the step says which prefix and how much of it
(cluster/pipeline/prefix_index.py decides; node/prefix_snapshots.py keeps).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Sequence

from cluster.pipeline.prefix_index import PrefixIndex
from proto import boltpipe_pb2 as pb


@dataclass
class PrefixStart:
    position: int = 0       # positions the new session starts with (0: a miss)
    prefix_id: str = ""


@dataclass
class PrefixFigures:
    hits: int = 0
    misses: int = 0
    tokens_reused: int = 0


class PrefixCache:
    def __init__(self, budget_bytes: int, bytes_per_token: int, *, exact_only: bool):
        self.index = PrefixIndex(budget_bytes, bytes_per_token, exact_only=exact_only)
        self.figures = PrefixFigures()
        self._to_drop: list[str] = []  # evicted, not yet told to the stages

    def start(self, prompt_ids: Sequence[int]) -> PrefixStart:
        match = self.index.match(prompt_ids)
        if match is None:
            self.figures.misses += 1
            return PrefixStart()
        self.figures.hits += 1
        self.figures.tokens_reused += match.length
        return PrefixStart(match.length, match.entry_id)

    def keep(self, session_id: str, history: Sequence[int]) -> tuple[pb.KeepPrefix | None, list[str]]:
        """What the stages should keep of a finished session whose caches hold `history`, and the
        prefixes they should drop (evicted to make room, or made redundant by this one)."""
        if len(history) < 2:
            return None, self.take_drops()
        prefix_id = uuid.uuid4().hex
        evicted = self.index.add(prefix_id, history)
        if prefix_id in evicted:  # too big for the whole budget: not kept
            evicted.remove(prefix_id)
            self._to_drop += evicted
            return None, self.take_drops()
        self._to_drop += evicted
        return pb.KeepPrefix(session_id=session_id, prefix_id=prefix_id, tokens=len(history)), self.take_drops()

    def take_drops(self) -> list[str]:
        """Prefixes evicted or forgotten since last asked: the stages are to drop them."""
        drops, self._to_drop = self._to_drop, []
        return drops

    def forget(self, prefix_id: str) -> None:
        self.index.remove(prefix_id)
        self._to_drop.append(prefix_id)

    def forget_all(self) -> None:
        """A stage went down (its prefixes are gone) or refused one: the index starts over, and the
        stages that still hold prefixes are told to drop them with the next session's end."""
        self._to_drop += self.index.clear()

    @property
    def nbytes(self) -> int:
        return self.index.nbytes

    def __len__(self) -> int:
        return len(self.index)
