"""Prompt-lookup drafting (for speculative decoding, issue 18): guesses the next tokens of a stream by
finding the text so far's last few tokens earlier in the prompt or the output and proposing what
followed them there. No model: summaries, rewrites and code edits copy long runs of their input, and
those runs are what this finds.

An index from every n-gram (n = min_ngram..max_ngram) to where it last ended is kept up to date as
tokens arrive, so a proposal costs a few dictionary lookups, however long the history.
"""

from __future__ import annotations


class PromptLookup:
    def __init__(self, tokens: list[int] = (), *, max_ngram: int = 3, min_ngram: int = 1):
        if not 1 <= min_ngram <= max_ngram:
            raise ValueError("need 1 <= min_ngram <= max_ngram")
        self.max_ngram, self.min_ngram = max_ngram, min_ngram
        self.tokens: list[int] = []
        # n-gram -> the index just past its latest occurrence that something follows
        self._ends: dict[tuple[int, ...], int] = {}
        self.extend(tokens)

    def extend(self, tokens) -> None:
        for token in tokens:
            # The n-grams ending at the current last token are now followed by `token`.
            end = len(self.tokens)
            for n in range(self.min_ngram, min(self.max_ngram, end) + 1):
                self._ends[tuple(self.tokens[end - n:end])] = end
            self.tokens.append(token)

    def propose(self, k: int) -> list[int]:
        """Up to k tokens that followed the longest recent match of the history's tail; [] if none."""
        if k < 1:
            return []
        end = len(self.tokens)
        for n in range(min(self.max_ngram, end), self.min_ngram - 1, -1):
            start = self._ends.get(tuple(self.tokens[end - n:end]))
            if start is not None:
                return self.tokens[start:start + k]
        return []
