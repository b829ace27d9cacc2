"""Distinct prompts of one exact length for load runs: stream i starts i sentences into the
benchmark text, so no two streams share a prompt."""

from __future__ import annotations

from cluster.bench.prompt import TEXT


def load_prompts(tokenizer, count: int, n_tokens: int) -> list[list[int]]:
    base = tokenizer.encode_text(TEXT, add_special_tokens=False)
    prompts = []
    for i in range(count):
        flat = tokenizer.encode_text(f"Reader {i + 1}:", add_special_tokens=False)
        while len(flat) < n_tokens:
            flat.extend(base)
        prompts.append(flat[:n_tokens])
    return prompts
