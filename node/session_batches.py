"""Sessions a worker computes together keep one set of batched caches between steps.

mlx-lm merges per-session caches into batched ones (BatchKVCache and friends: per-row offsets and
left padding) and extracts a session back out. Merging copies every row's cache, so a batch is
kept as long as the same sessions keep stepping together (the coordinator keeps its groups
stable) and is only taken apart when one of them steps alone, in another company, or ends.
"""

from __future__ import annotations

import mlx.core as mx
from mlx.utils import tree_flatten


def evaluate(caches: list) -> None:
    """Computes every array of `caches` now. Lazy arrays must not outlive the thread that made them:
    MLX's streams belong to a thread, and a worker runs steps on two (node/server.py)."""
    states = [getattr(c, "state", None) for c in caches]
    mx.eval([leaf for _, leaf in tree_flatten(states) if isinstance(leaf, mx.array)])


class SessionBatch:
    """The merged caches of `sessions` (in row order); while it exists their own `cache` is None."""

    def __init__(self, sessions: list):
        self.sessions = list(sessions)
        self.caches = [layer[0].merge(list(layer)) for layer in zip(*(s.cache for s in self.sessions))]
        self.stale = False  # a member ended: take the batch apart before the next step
        evaluate(self.caches)
        for session in self.sessions:
            session.cache, session.batch = None, self

    def same_members(self, sessions: list) -> bool:
        return not self.stale and len(sessions) == len(self.sessions) and \
            {id(s) for s in sessions} == {id(s) for s in self.sessions}

    def release(self, keep=lambda session: True) -> None:
        """Gives every member (that `keep` accepts) its own cache back."""
        for row, session in enumerate(self.sessions):
            session.batch = None
            if keep(session):
                session.cache = [c.extract(row) for c in self.caches]
                evaluate(session.cache)
        self.caches = []

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.caches)
