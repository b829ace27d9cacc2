"""Rebuild a Hugging Face tokenizer (tokenizer.json + tokenizer_config.json) from GGUF metadata.

Byte-level BPE vocabularies (`tokenizer.ggml.model == "gpt2"`) here; SentencePiece-style ones
(`"llama"`) in spm_tokenizer.py. GGUF keeps a byte-level vocabulary already in GPT-2's byte-to-unicode
alphabet, so tokens and merges go into a BPE model unchanged; what must be chosen carefully is the
pre-tokenizer, because it decides where merges may happen. `tokenizer.ggml.pre` names llama.cpp's
pre-tokenizer; each name below maps to the HF pre-tokenizer that splits text the same way (the
regexes of the families not written out here come from transformers' GGUF tables: Qwen2, Tekken,
GPT-4o, ...).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from .errors import GGUFImportError
from .spm_tokenizer import build_spm_tokenizer

# GGUF token types (tokenizer.ggml.token_type).
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6

# GPT-2's split: contractions, letters, numbers, other symbols, trailing whitespace.
_GPT2_FAMILY = ("gpt-2", "gpt2", "phi-2", "mpt", "olmo", "jais")
# Same split after cutting every digit into its own piece (llama.cpp runs "\p{N}" first).
_DIGITS_FAMILY = ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b")
# Llama 3's regex (numbers in runs of up to three, newlines kept apart); whole words that are in the
# vocabulary are taken as one token before any merge ("ignore_merges"), as llama.cpp does for it.
_LLAMA3_FAMILY = ("llama-bpe", "llama3", "llama-v3", "falcon3")
_LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@lru_cache(maxsize=1)
def _transformers_splits() -> dict[str, str]:
    """Pre-tokenizer name -> split regex, as transformers' GGUF loader has them (empty if it lacks them).
    Loaded on first use: importing that module costs most of a second, which start-up need not pay."""
    try:
        from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS
    except ImportError:
        return {}
    return dict(GGUF_PRE_TOKENIZER_SPLITS)


def supported_pre_tokenizers() -> tuple[str, ...]:
    return tuple(dict.fromkeys(_DIGITS_FAMILY + _GPT2_FAMILY + _LLAMA3_FAMILY + tuple(_transformers_splits())))


@dataclass(frozen=True)
class _PreTokenizerChoice:
    pre_tokenizer: Any
    ignore_merges: bool
    add_bos_default: bool


def _choose_pre_tokenizer(pre: str) -> _PreTokenizerChoice:
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    if pre in _GPT2_FAMILY:
        return _PreTokenizerChoice(byte_level, False, False)
    if pre in _DIGITS_FAMILY:
        digits = pre_tokenizers.Digits(individual_digits=True)
        return _PreTokenizerChoice(pre_tokenizers.Sequence([digits, byte_level]), False, False)
    if pre in _LLAMA3_FAMILY:
        split = pre_tokenizers.Split(Regex(_LLAMA3_REGEX), behavior="isolated", invert=False)
        no_regex = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)
        return _PreTokenizerChoice(pre_tokenizers.Sequence([split, no_regex]), True, True)
    if (regex := _transformers_splits().get(pre)) is not None:
        split = pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False)
        no_regex = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)
        return _PreTokenizerChoice(pre_tokenizers.Sequence([split, no_regex]), False, False)
    raise GGUFImportError(
        f"the GGUF's pre-tokenizer (tokenizer.ggml.pre) is {pre!r}, which this importer cannot reproduce; "
        f"supported: {', '.join(supported_pre_tokenizers())}. Without the right pre-tokenizer the model "
        "would see different token ids than it was trained on, so the import stops here."
    )


_ID_KEYS = {"bos": "bos", "eos": "eos", "unk": "unknown", "pad": "padding"}  # HF name -> GGUF key stem


def _meta_token(meta: dict[str, Any], key: str, tokens: list[str]) -> str | None:
    idx = meta.get(f"tokenizer.ggml.{_ID_KEYS[key]}_token_id")
    if idx is None or not 0 <= int(idx) < len(tokens):
        return None
    return tokens[int(idx)]


def _post_processor(bos: str | None, eos: str | None, ids: dict[str, int], add_bos: bool, add_eos: bool,
                    byte_level: bool) -> Any:
    if not (add_bos and bos) and not (add_eos and eos):
        if byte_level:
            return processors.ByteLevel(trim_offsets=False)
        return processors.TemplateProcessing(single="$A:0", pair="$A:0 $B:1")
    head = f"{bos}:0 " if add_bos and bos else ""
    tail = f" {eos}:0" if add_eos and eos else ""
    tail_b = f" {eos}:1" if add_eos and eos else ""
    head_b = f"{bos}:1 " if add_bos and bos else ""
    used = [t for t, on in ((bos, add_bos), (eos, add_eos)) if on and t]
    return processors.TemplateProcessing(
        single=f"{head}$A:0{tail}",
        pair=f"{head}$A:0{tail} {head_b}$B:1{tail_b}",
        special_tokens=[(t, ids[t]) for t in dict.fromkeys(used)],
    )


def _add_bos_default(meta: dict[str, Any]) -> bool:
    """llama.cpp's default when the file does not say: SentencePiece and Llama 3 vocabularies add BOS."""
    if meta.get("tokenizer.ggml.model") == "llama":
        return True
    return str(meta.get("tokenizer.ggml.pre", "gpt-2") or "gpt-2") in _LLAMA3_FAMILY


def _byte_level_tokenizer(meta: dict[str, Any]) -> Tokenizer:
    tokens: list[str] = meta.get("tokenizer.ggml.tokens") or []
    merges: list[str] = meta.get("tokenizer.ggml.merges") or []
    if not tokens or not merges:
        raise GGUFImportError("the GGUF has no tokenizer.ggml.tokens / tokenizer.ggml.merges; it cannot be served.")
    types: list[int] = meta.get("tokenizer.ggml.token_type") or [_NORMAL] * len(tokens)
    choice = _choose_pre_tokenizer(str(meta.get("tokenizer.ggml.pre", "gpt-2") or "gpt-2"))

    vocab = {tok: i for i, tok in enumerate(tokens)}
    # A merge line is "left right"; byte-level symbols never contain a literal space.
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    bpe = models.BPE(vocab=vocab, merges=pairs, fuse_unk=False, byte_fallback=False,
                     ignore_merges=choice.ignore_merges)
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = choice.pre_tokenizer
    tok.decoder = decoders.ByteLevel()

    # Control tokens are special (matched in text, skippable on decode); user-defined ones are
    # matched in text too (llama.cpp does both) but decode as text.
    added = [
        AddedToken(tokens[i], special=(t == _CONTROL), normalized=False, lstrip=False, rstrip=False,
                   single_word=False)
        for i, t in enumerate(types) if t in (_CONTROL, _USER_DEFINED)
    ]
    tok.add_special_tokens([a for a in added if a.special])
    tok.add_tokens([a for a in added if not a.special])
    return tok


def build_tokenizer(meta: dict[str, Any]) -> Tokenizer:
    """The HF `tokenizers` object equivalent to llama.cpp's tokenizer for this GGUF."""
    model = meta.get("tokenizer.ggml.model")
    if model == "gpt2":
        tok = _byte_level_tokenizer(meta)
    elif model == "llama":
        tok = build_spm_tokenizer(meta, str(meta.get("general.architecture") or "llama"))
    else:
        raise GGUFImportError(
            f"the GGUF's tokenizer model (tokenizer.ggml.model) is {model!r}; this importer rebuilds byte-level "
            "BPE ('gpt2': Llama 3, SmolLM, Qwen, Mistral Nemo, gpt-oss) and SentencePiece ('llama': Llama 2, "
            "Mistral v0.1, Gemma, Phi-3) vocabularies. Import the original Hugging Face checkpoint instead."
        )
    tokens: list[str] = meta.get("tokenizer.ggml.tokens") or []
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", _add_bos_default(meta)))
    add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False))
    tok.post_processor = _post_processor(
        _meta_token(meta, "bos", tokens), _meta_token(meta, "eos", tokens), tok.get_vocab(), add_bos, add_eos,
        byte_level=model == "gpt2",
    )
    return tok


def tokenizer_config(meta: dict[str, Any], context_length: int | None) -> dict[str, Any]:
    tokens: list[str] = meta.get("tokenizer.ggml.tokens") or []
    cfg: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", _add_bos_default(meta))),
        "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        # Decoding must give back the exact text (round trip), so no space "clean-up".
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(context_length) if context_length else 1_000_000_000,
    }
    for key in ("bos", "eos", "unk", "pad"):
        if (value := _meta_token(meta, key, tokens)) is not None:
            cfg[f"{key}_token"] = value
    if template := meta.get("tokenizer.chat_template"):
        cfg["chat_template"] = template
    return cfg


def write_tokenizer(meta: dict[str, Any], dst: Path, context_length: int | None) -> None:
    build_tokenizer(meta).save(str(dst / "tokenizer.json"))
    cfg = tokenizer_config(meta, context_length)
    (dst / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
