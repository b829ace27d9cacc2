"""A draft model on the coordinator (`model.draft`): a smaller model with the target's tokenizer guesses
the next tokens greedily, with its own KV cache per session, rolled back to what the pipeline kept
after each trip (mlx-lm's caches and trim). Its work runs on one thread of its own: MLX's lazy arrays
belong to the thread that made them, and the event loop must stay free for the other streams.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import mlx.core as mx
from mlx_lm.models.cache import can_trim_prompt_cache, make_prompt_cache, trim_prompt_cache
from mlx_lm.utils import load_model

PREFILL_STEP = 512  # prompt tokens per forward pass when the draft model catches up


class DraftModelError(ValueError):
    """A draft model this target cannot use; the message says why."""


class DraftModel:
    def __init__(self, model_dir: Path, target_vocab: dict[str, int], draft_vocab: dict[str, int]):
        if draft_vocab != target_vocab:
            missing = len(set(target_vocab.items()) ^ set(draft_vocab.items()))
            raise DraftModelError(f"the draft model {model_dir} has another tokenizer than the served model "
                                  f"({missing} vocabulary entries differ): drafts must be the target's token ids")
        self.path = Path(model_dir)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="draft-model")
        self.model = self._thread.submit(lambda: load_model(self.path)[0]).result()
        cache = make_prompt_cache(self.model)
        if not can_trim_prompt_cache(cache):
            kinds = sorted({type(c).__name__ for c in cache})
            raise DraftModelError(f"the draft model's caches ({', '.join(kinds)}) cannot be rolled back")

    def session(self) -> "DraftSession":
        return DraftSession(self)

    async def run(self, work, *args):
        return await asyncio.get_running_loop().run_in_executor(self._thread, work, *args)

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)


class DraftSession:
    """One stream's draft cache: `fed` is what the cache holds, always a prefix of the true history."""

    def __init__(self, draft: DraftModel):
        self.draft = draft
        self.cache = None
        self.fed: list[int] = []

    async def propose(self, history: Sequence[int], k: int) -> tuple[list[int], float]:
        """k greedy guesses to follow the history, and the seconds each took (catching up on the
        prompt not counted: that is paid once)."""
        return await self.draft.run(self._propose, list(history), k)

    def _propose(self, history: list[int], k: int) -> tuple[list[int], float]:
        if self.cache is None:
            self.cache = make_prompt_cache(self.draft.model)
        self._roll_back_to(history)
        new = history[len(self.fed):] or history[-1:]
        if not history[len(self.fed):]:  # nothing new (cannot happen after a trip): recompute the last
            trim_prompt_cache(self.cache, 1)
            self.fed.pop()
        for start in range(0, len(new) - 1, PREFILL_STEP):
            chunk = new[start:min(start + PREFILL_STEP, len(new) - 1)]
            self.draft.model(mx.array([chunk]), cache=self.cache)
            mx.eval([c.state for c in self.cache])
        token = new[-1]
        drafts: list[int] = []
        self.fed += new[:-1]
        started = time.perf_counter()
        for _ in range(k):
            logits = self.draft.model(mx.array([[token]]), cache=self.cache)
            self.fed.append(token)
            token = int(mx.argmax(logits[0, -1]).item())
            drafts.append(token)
        return drafts, (time.perf_counter() - started) / max(1, k)

    def _roll_back_to(self, history: list[int]) -> None:
        """Drops what the cache holds beyond its common prefix with the history (rejected drafts)."""
        keep = 0
        for mine, true in zip(self.fed, history):
            if mine != true:
                break
            keep += 1
        if keep < len(self.fed):
            trim_prompt_cache(self.cache, len(self.fed) - keep)
            del self.fed[keep:]
