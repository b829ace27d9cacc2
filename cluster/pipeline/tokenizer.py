"""The coordinator's tokenizer: prompts to ids the way mlx-lm's own CLI makes them,
ids back to text."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from mlx_lm.tokenizer_utils import load as load_mlx_tokenizer


class PromptTokenizer:
    def __init__(self, model_dir: str | Path):
        self._wrapper = load_mlx_tokenizer(Path(model_dir))
        self._hf = self._wrapper._tokenizer

    @property
    def has_chat_template(self) -> bool:
        return bool(self._wrapper.has_chat_template)

    @property
    def eos_token_ids(self) -> set[int]:
        return set(self._wrapper.eos_token_ids)

    @property
    def chat_template(self) -> str | None:
        template = getattr(self._hf, "chat_template", None)
        return template if isinstance(template, str) else None

    def encode_chat(self, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
        """Chat messages (and tools, for a template that renders them) through the model's template,
        as `mlx_lm generate` does."""
        extra = {"tools": tools} if tools else {}
        text = self._wrapper.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **extra)
        return list(self._hf.encode(text, add_special_tokens=False))

    def encode_text(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        """Raw text, with the model's own special tokens (e.g. BOS) added unless told not to."""
        return list(self._hf.encode(text, add_special_tokens=add_special_tokens))

    def encode_user_prompt(self, prompt: str, *, raw: bool = False) -> list[int]:
        if raw or not self.has_chat_template:
            return self.encode_text(prompt)
        return self.encode_chat([{"role": "user", "content": prompt}])

    def vocabulary(self) -> dict[str, int]:
        """Every token's text and id (two models can share drafts only if theirs are equal)."""
        return dict(self._hf.get_vocab())

    def decode(self, ids: Sequence[int]) -> str:
        return self._hf.decode(list(ids))
