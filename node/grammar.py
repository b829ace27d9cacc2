"""Constrained decoding with llguidance: which tokens a grammar allows next.

llguidance (Microsoft's Rust engine behind Guidance, also used by llama.cpp and vLLM) was chosen
over xgrammar and outlines-core: its wheels need no PyTorch and install on macOS and Linux alike,
it computes a mask for a 150k vocabulary in well under a millisecond without precompiling per
schema, it covers JSON Schema widely (and says which keywords it does not), and its Lark grammars
with embedded JSON schemas express "text or a tool call" directly (cluster/api/tool_grammar.py).

The tokenizer is built once per worker from the model's own tokenizer files (about a second, in
the background from the moment the slice is loaded); a session's grammar is a matcher that
follows the tokens the session chooses. After each token the next mask is computed on a thread
of its own while the next step travels the ring, so it is ready when the logits are.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

import llguidance
import llguidance.hf
from mlx_lm.tokenizer_utils import load as load_mlx_tokenizer

from node.step_validation import MAX_GRAMMAR_BYTES



class GrammarError(ValueError):
    """A grammar that cannot be used (its text, or the tokens it was asked to follow)."""


def build_tokenizer(model_dir: Path, vocab_size: int) -> llguidance.LLTokenizer:
    """llguidance's view of the model's tokenizer, with the end-of-sequence ids the coordinator
    stops on (mlx-lm's: the tokenizer's and generation_config.json's)."""
    wrapper = load_mlx_tokenizer(Path(model_dir))
    eos = sorted(wrapper.eos_token_ids)
    return llguidance.hf.from_tokenizer(wrapper._tokenizer, n_vocab=vocab_size, eos_token=eos or None)


def grammar_problem(tokenizer: llguidance.LLTokenizer, grammar: str) -> str | None:
    """None for a grammar llguidance accepts, else its error."""
    if len(grammar.encode()) > MAX_GRAMMAR_BYTES:
        return f"the grammar is {len(grammar.encode())} bytes, more than {MAX_GRAMMAR_BYTES}"
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, tokenizer)
    return "; ".join(messages) if is_error else None


class TokenizerLoader:
    """The worker's grammar tokenizer, built on a thread after the slice loads; `get` waits for it."""

    def __init__(self, model_dir: Path, vocab_size: int):
        self._future: Future = Future()
        self._thread = threading.Thread(target=self._build, args=(model_dir, vocab_size),
                                        name="grammar-tokenizer", daemon=True)
        self._thread.start()

    def _build(self, model_dir: Path, vocab_size: int) -> None:
        try:
            self._future.set_result(build_tokenizer(model_dir, vocab_size))
        except Exception as exc:  # no tokenizer files (a shard without them), or an unusual tokenizer
            self._future.set_exception(exc)

    def get(self) -> llguidance.LLTokenizer:
        try:
            return self._future.result()
        except Exception as exc:
            raise GrammarError(f"this stage has no usable tokenizer for grammars: {exc}") from exc

    def problem(self) -> str:
        """Why grammars cannot be followed here ("" while the tokenizer loads: steps wait for it)."""
        if not self._future.done():
            return ""
        exc = self._future.exception()
        return "" if exc is None else f"no usable tokenizer for grammars: {exc}"


_masks = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grammar-mask")


class GrammarState:
    """One session's grammar: the matcher, and the mask of what it allows next."""

    def __init__(self, tokenizer: llguidance.LLTokenizer, grammar: str, consumed: Sequence[int] = ()):
        self.vocab_size = tokenizer.vocab_size
        self._matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
        self._check()
        if consumed and not self._matcher.consume_tokens(list(consumed)):
            self._check("the grammar does not allow the tokens it was asked to follow: ")
            raise GrammarError("the grammar does not allow the tokens it was asked to follow")
        self._next: Future | None = _masks.submit(self._compute)

    def _check(self, doing: str = "") -> None:
        if self._matcher.is_error():
            # llguidance's first line says what went wrong; the rest is a dump of its parser state.
            first = self._matcher.get_error().strip().splitlines()[0]
            raise GrammarError(f"{doing}{first}")

    def _compute(self, matcher: llguidance.LLMatcher | None = None) -> np.ndarray:
        bits = np.frombuffer((matcher or self._matcher).compute_bitmask(), dtype=np.uint8)
        return np.unpackbits(bits, bitorder="little")[: self.vocab_size].astype(bool)

    def _settle(self) -> np.ndarray | None:
        pending, self._next = self._next, None
        return pending.result() if pending is not None else None

    def mask(self) -> np.ndarray:
        """What the grammar allows next: a bool per token id."""
        mask = self._settle()
        if mask is None:
            mask = self._compute()
        self._check()
        if not mask.any():
            raise GrammarError("the grammar allows no token here")
        self._next = _done(mask)
        return mask

    def masks_along(self, drafts: Sequence[int]) -> list[np.ndarray]:
        """Masks for a speculative step's rows: row 0 from here, row i + 1 after drafts[:i + 1],
        as far as the drafts are allowed (a row after a forbidden draft repeats the last mask: the
        draft there is rejected, so that row's choice is never used). The drafts are followed on a
        copy of the matcher, so the state is left as it was (llguidance cannot roll back past the
        end of a grammar, which an end-of-sequence draft reaches)."""
        masks = [self.mask()]
        walker = self._matcher.deep_copy()
        for draft in drafts:
            if not masks[-1][draft] or not walker.consume_token(draft) or walker.is_stopped():
                break
            masks.append(self._compute(walker))
        masks += [masks[-1]] * (len(drafts) + 1 - len(masks))
        return masks

    def consume(self, tokens: Sequence[int]) -> None:
        """The tokens chosen; the next mask starts computing at once."""
        self._settle()
        for token in tokens:
            if self._matcher.is_stopped():
                break  # past the end of the sequence: what follows is never used
            if not self._matcher.consume_token(token):
                self._check(f"the grammar does not allow token {token} here: ")
                raise GrammarError(f"the grammar does not allow token {token} here")
        self._next = None if self._matcher.is_stopped() else _masks.submit(self._compute)

    def done(self) -> bool:
        return self._matcher.is_stopped()


def _done(value) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future
