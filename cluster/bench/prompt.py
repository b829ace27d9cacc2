"""A benchmark prompt of an exact token count, the same for the cluster and the baseline."""

from __future__ import annotations

TEXT = (
    "The history of computing is a story of machines that grew smaller while the problems they solved grew "
    "larger. Early engineers wired programs by hand; later ones wrote compilers, operating systems and networks. "
    "Today a few small computers linked by fast cables can share a model too large for any one of them. "
)


def bench_prompt_ids(tokenizer, n: int) -> list[int]:
    """Exactly n token ids of ordinary English text (no special tokens)."""
    ids: list[int] = []
    while len(ids) < n:
        ids.extend(tokenizer.encode_text(TEXT, add_special_tokens=False))
    return ids[:n]
