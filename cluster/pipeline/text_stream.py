"""Turning a stream of token ids into a stream of text: incremental decoding that
never splits a multi-byte character, and stop strings that never leak out."""

from __future__ import annotations

from typing import Protocol, Sequence

REPLACEMENT_CHAR = "\ufffd"


class Decoder(Protocol):
    def decode(self, ids: Sequence[int]) -> str: ...


class IncrementalDecoder:
    """Decodes the whole generated sequence each time and hands out the new suffix,
    holding it back while it ends in an incomplete UTF-8 sequence."""

    def __init__(self, decoder: Decoder):
        self._decoder = decoder
        self._ids: list[int] = []
        self._emitted = ""

    def add(self, token_id: int) -> str:
        self._ids.append(token_id)
        text = self._decoder.decode(self._ids)
        if text.endswith(REPLACEMENT_CHAR):
            return ""
        return self._take(text)

    def flush(self) -> str:
        return self._take(self._decoder.decode(self._ids))

    def _take(self, text: str) -> str:
        # Byte-level BPE decoding only ever appends; if a tokenizer's clean-up rule
        # rewrote earlier text, what was sent stays sent and only the tail is new.
        delta = text[len(self._emitted) :]
        self._emitted = text
        return delta


class StopMatcher:
    """Feeds text through, holding back any tail that could still become a stop
    string; reports the stop and cuts the text before it."""

    def __init__(self, stops: Sequence[str]):
        self.stops = [s for s in stops if s]
        self._pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Returns (text safe to emit, whether a stop string was found)."""
        self._pending += text
        first = -1
        for stop in self.stops:
            at = self._pending.find(stop)
            if at != -1 and (first == -1 or at < first):
                first = at
        if first != -1:
            out, self._pending = self._pending[:first], ""
            return out, True
        hold = self._longest_stop_prefix_suffix()
        cut = len(self._pending) - hold
        out, self._pending = self._pending[:cut], self._pending[cut:]
        return out, False

    def flush(self) -> str:
        out, self._pending = self._pending, ""
        return out

    def _longest_stop_prefix_suffix(self) -> int:
        best = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(self._pending)), best, -1):
                if self._pending.endswith(stop[:n]):
                    best = n
                    break
        return best
