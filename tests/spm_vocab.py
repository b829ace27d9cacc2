"""A real SentencePiece BPE vocabulary for tests, trained here by the `sentencepiece` library (as Llama 2,
Mistral v0.1 and Gemma were: byte fallback, digits split), and written into GGUF metadata the way
llama.cpp's converter writes one (pieces, scores, token types). The library's own encode is the reference
the rebuilt tokenizer must equal."""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

import sentencepiece as spm

CORPUS = [Path(__file__).resolve().parent.parent / name for name in ("README.md", "docs/architecture.md")]
VOCAB_SIZE = 600
# GGUF token types (llama.cpp's converter: SentencePiece's piece kinds)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


@lru_cache(maxsize=4)
def trained(space_prefix: bool) -> spm.SentencePieceProcessor:
    """`space_prefix`: SentencePiece's add_dummy_prefix (Llama 2: yes; Gemma: no)."""
    lines = [line for path in CORPUS for line in path.read_text().splitlines() if line.strip()]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, vocab_size=VOCAB_SIZE, model_type="bpe",
        byte_fallback=True, split_digits=True, add_dummy_prefix=space_prefix, remove_extra_whitespaces=False,
        normalization_rule_name="identity", character_coverage=0.995, unk_id=0, bos_id=1, eos_id=2,
        num_threads=1, minloglevel=3,
    )
    return spm.SentencePieceProcessor(model_proto=model.getvalue())


def _token_type(sp: spm.SentencePieceProcessor, i: int) -> int:
    if sp.is_unknown(i):
        return UNKNOWN
    if sp.is_control(i):
        return CONTROL
    if sp.is_unused(i):
        return UNUSED
    if sp.is_byte(i):
        return BYTE
    return NORMAL


def spm_metadata(sp: spm.SentencePieceProcessor, *, space_prefix: bool, chat_template: str | None = None) -> dict:
    """The tokenizer keys of a GGUF holding this vocabulary (tokenizer.ggml.model = "llama")."""
    n = sp.get_piece_size()
    meta = {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": [sp.id_to_piece(i) for i in range(n)],
        "tokenizer.ggml.scores": [float(sp.get_score(i)) for i in range(n)],
        "tokenizer.ggml.token_type": [_token_type(sp, i) for i in range(n)],
        "tokenizer.ggml.unknown_token_id": sp.unk_id(),
        "tokenizer.ggml.bos_token_id": sp.bos_id(),
        "tokenizer.ggml.eos_token_id": sp.eos_id(),
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.ggml.add_eos_token": False,
    }
    if not space_prefix:
        meta["tokenizer.ggml.add_space_prefix"] = False  # llama.cpp writes the key only for vocabularies without it
    if chat_template:
        meta["tokenizer.chat_template"] = chat_template
    return meta
