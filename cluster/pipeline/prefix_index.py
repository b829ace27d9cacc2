"""Which token prefixes the pipeline holds, and which one a new prompt should start from (issue 19,
prefix caching): a pure index the coordinator keeps for every stage at once, so the stages never
search (cluster/pipeline/prefix_cache.py puts it to work).

A trie over token ids: each node is one position of one or more cached entries, and remembers the
entry that passed through it most recently. A prompt walks down as far as it matches, so the match
is the longest common prefix with any entry, an entry longer than the prompt included (the stages
then keep only its first positions). At least one prompt token is always left to compute, since the
first new token is sampled from its logits. Entries live within a byte budget; the least recently
used is evicted first, except that an entry other conversations branched off from (a system prompt
they share) outlives those that only ever served their own continuation; an entry that a newer one
continues (the previous turn of the same chat) is dropped at once, since the newer one serves it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence


@dataclass
class _Node:
    children: dict[int, "_Node"] = field(default_factory=dict)
    entry: str | None = None   # the entry through this position used last (None: none left)
    ends: set[str] = field(default_factory=set)  # entries whose last position this is


@dataclass
class Entry:
    entry_id: str
    tokens: tuple[int, ...]
    nbytes: int
    last_used: int
    shared: int = 0            # times a match used only its first positions (another conversation branched off)


@dataclass(frozen=True)
class Match:
    entry_id: str
    length: int                # positions of the entry to keep


class PrefixIndex:
    def __init__(self, budget_bytes: int, bytes_per_token: int, *, exact_only: bool = False):
        """`bytes_per_token`: what one cached position costs on the stage that holds the most;
        `exact_only`: the model's caches cannot be cut back (recurrent states), so an entry serves
        only a prompt that continues all of it."""
        if budget_bytes < 0 or bytes_per_token < 1:
            raise ValueError("need budget_bytes >= 0 and bytes_per_token >= 1")
        self.budget_bytes = budget_bytes
        self.bytes_per_token = bytes_per_token
        self.exact_only = exact_only
        self._root = _Node()
        self._entries: dict[str, Entry] = {}
        self._clock = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self._entries.values())

    def _tick(self) -> int:
        self._clock += 1
        return self._clock

    def match(self, prompt: Sequence[int]) -> Match | None:
        """The cached prefix a session for `prompt` should start from, or None (a miss)."""
        node, depth, best = self._root, 0, None
        for token in prompt[:-1]:  # the last prompt token is always computed
            node = node.children.get(token)
            if node is None or node.entry is None:
                break
            depth += 1
            if not self.exact_only:
                best = Match(node.entry, depth)
            elif ending := self._most_recent(node.ends):
                best = Match(ending, depth)
        if best is None:
            return None
        entry = self._entries[best.entry_id]
        entry.last_used = self._tick()
        if best.length < len(entry.tokens):
            entry.shared += 1  # cut back: another conversation branches off inside it
        return best

    def add(self, entry_id: str, tokens: Sequence[int]) -> list[str]:
        """Records that every stage now holds `tokens` as `entry_id`; returns the entries evicted
        to stay within the budget or made redundant by this one (the stages must be told to drop
        them); [entry_id] when this one alone does not fit (nothing else is touched)."""
        if entry_id in self._entries:
            raise ValueError(f"entry {entry_id!r} is already indexed")
        entry = Entry(entry_id, tuple(tokens), len(tokens) * self.bytes_per_token, self._tick())
        if entry.nbytes > self.budget_bytes:
            return [entry_id]  # it alone would not fit: the others stay
        self._entries[entry_id] = entry
        node = self._root
        for token in entry.tokens:
            node = node.children.setdefault(token, _Node())
            node.entry = entry_id
        node.ends.add(entry_id)
        # An entry this one continues serves nothing this one cannot (cut back), unless entries
        # cannot be cut back: the older one goes.
        evicted = [] if self.exact_only else [e.entry_id for e in list(self._entries.values())
                                               if e.entry_id != entry_id and len(e.tokens) <= len(entry.tokens)
                                               and entry.tokens[:len(e.tokens)] == e.tokens]
        for redundant in evicted:
            self.remove(redundant)
        while self.nbytes > self.budget_bytes and self._entries:
            victim = min(self._entries.values(), key=lambda e: (e.shared > 0, e.last_used))
            self.remove(victim.entry_id)
            evicted.append(victim.entry_id)
        return evicted

    def remove(self, entry_id: str) -> None:
        entry = self._entries.pop(entry_id, None)
        if entry is None:
            return
        # Positions that pointed at it point at another entry through them, or at none.
        path, node = [], self._root
        for token in entry.tokens:
            node = node.children[token]
            path.append(node)
        if path:
            path[-1].ends.discard(entry_id)
        # Deepest first: a position's entry is then one ending there or its children's.
        for node in reversed(path):
            if node.entry == entry_id:
                node.entry = self._most_recent(node.ends | {c.entry for c in node.children.values() if c.entry})
        for depth in range(len(path), 0, -1):  # prune positions no entry passes any more
            node, parent = path[depth - 1], path[depth - 2] if depth > 1 else self._root
            if node.entry is None and not node.children and not node.ends:
                del parent.children[entry.tokens[depth - 1]]

    def _most_recent(self, candidates: set[str]) -> str | None:
        live = [self._entries[c] for c in candidates if c in self._entries]
        return max(live, key=lambda e: e.last_used).entry_id if live else None

    def clear(self) -> list[str]:
        """Forgets every entry (a stage restarted and lost them); returns their ids."""
        ids = list(self._entries)
        self._entries.clear()
        self._root = _Node()
        return ids
