"""SentencePiece-style vocabularies (`tokenizer.ggml.model == "llama"`: Llama 2, Mistral v0.1, Gemma,
Phi-3) rebuilt as a Hugging Face BPE tokenizer that gives llama.cpp's ids.

The vocabulary, merges and special tokens come from transformers' own GGUF tokenizer builders (its
`integrations.gguf` module: merges recovered from the scores, Gemma's respelled space tokens and
position-ordered merges). What this module fixes on top is where the word-boundary mark goes, the
way llama.cpp's SPM tokenizer puts it: spaces become "▁", and with `tokenizer.ggml.add_space_prefix`
(the default) one "▁" opens the text and every piece of text that follows a special token, even when
the text already starts with a space (SentencePiece's own dummy prefix does the same).
"""

from __future__ import annotations

from typing import Any

from tokenizers import Tokenizer, decoders, normalizers

from .errors import GGUFImportError

WORD_MARK = "\u2581"  # "▁"


def _tokenizer_dict(meta: dict[str, Any], renames: dict[str, str]) -> dict[str, Any]:
    """The GGUF's tokenizer keys under transformers' names (its GGUF_TOKENIZER_MAPPING["tokenizer"])."""
    return {name: meta[f"tokenizer.{key}"] for key, name in renames.items() if f"tokenizer.{key}" in meta}


def space_prefix(meta: dict[str, Any]) -> bool:
    return bool(meta.get("tokenizer.ggml.add_space_prefix", True))


def build_spm_tokenizer(meta: dict[str, Any], architecture: str) -> Tokenizer:
    try:
        from transformers.integrations.gguf import gguf_tokenizer_mapping as hf_gguf
    except ImportError as exc:  # the module moved or went away in another transformers release
        raise GGUFImportError(f"rebuilding a SentencePiece vocabulary needs transformers' GGUF tokenizer "
                              f"builders (transformers.integrations.gguf), which this install lacks: {exc}") from exc
    tokens = meta.get("tokenizer.ggml.tokens") or []
    if not tokens or (not meta.get("tokenizer.ggml.scores") and not meta.get("tokenizer.ggml.merges")):
        raise GGUFImportError("the GGUF's SentencePiece vocabulary has no tokenizer.ggml.tokens with scores or "
                              "merges; it cannot be served")
    info = _tokenizer_dict(meta, hf_gguf.GGUF_TOKENIZER_MAPPING["tokenizer"])
    builder = hf_gguf.GGUF_SENTENCEPIECE_BUILDERS.get(architecture, hf_gguf.sentencepiece_tokenizer)
    tok = hf_gguf.add_gguf_special_tokens(builder(info), info).backend_tokenizer
    prefix = space_prefix(meta)
    # As a normalizer, not a pre-tokenizer: it runs on each stretch of text between special tokens.
    tok.normalizer = normalizers.Sequence(([normalizers.Prepend(WORD_MARK)] if prefix else [])
                                          + [normalizers.Replace(" ", WORD_MARK)])
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence([decoders.Replace(WORD_MARK, " "), decoders.ByteFallback(), decoders.Fuse()]
                                    + ([decoders.Strip(" ", 1, 0)] if prefix else []))
    return tok
